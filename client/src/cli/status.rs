//! `health` and `stats`.

use std::process::ExitCode;

use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use valence_lifecycle_api::v1;
use valence_lifecycle_client::{ClientError, SERVICE_NAMES};

use super::{
    output::{self, Fields, Table},
    Context,
};

/// Checks the server as a whole (the empty service name) and each API
/// service. Exits 0 only when the server answers SERVING, so scripts can
/// wait on it.
pub(crate) async fn health(ctx: &Context) -> Result<ExitCode, ClientError> {
    let overall = check(ctx, "").await?;
    let mut services = Vec::new();
    for name in SERVICE_NAMES {
        // A service missing from the health registry is reported, not fatal.
        let status = match check(ctx, name).await {
            Ok(status) => status_name(status),
            Err(error) => error.code_name().to_string(),
        };
        services.push((name, status));
    }
    if ctx.json {
        let services: serde_json::Map<_, _> = services
            .iter()
            .map(|(name, status)| (name.to_string(), status.clone().into()))
            .collect();
        output::print_json(&serde_json::json!({
            "status": status_name(overall),
            "services": services,
        }));
    } else {
        let mut table = Table::new(&["SERVICE", "STATUS"]);
        table.row(vec!["(server)".into(), status_name(overall)]);
        for (name, status) in services {
            table.row(vec![name.into(), status]);
        }
        table.print("services");
    }
    Ok(if overall == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn check(ctx: &Context, service: &str) -> Result<ServingStatus, ClientError> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let response = ctx
        .client()
        .await?
        .health()
        .check(request)
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
}

/// `SERVING` -> `serving`, like the API's own enums.
fn status_name(status: ServingStatus) -> String {
    status.as_str_name().to_ascii_lowercase()
}

/// Prints GetStats: counters, then one row per internal component.
pub(crate) async fn stats(ctx: &Context) -> Result<(), ClientError> {
    let stats = ctx
        .client()
        .await?
        .lifecycle()
        .get_stats(v1::GetStatsRequest {})
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&stats);
        return Ok(());
    }
    Fields::default()
        .add("running", stats.is_running.to_string())
        .add("started", output::time(stats.started_at.as_ref()))
        .add("uptime", format!("{} s", stats.uptime_seconds))
        .add("store", output::or_dash(&stats.store_backend))
        .add("accounts", stats.accounts.to_string())
        .add("accounts created", stats.accounts_created.to_string())
        .add("accounts failed", stats.accounts_failed.to_string())
        .add(
            "pending requests",
            stats.pending_account_requests.to_string(),
        )
        .add("sessions", stats.sessions.to_string())
        .add("active sessions", stats.active_sessions.to_string())
        .add("rules", stats.rules.to_string())
        .add("events", stats.events.to_string())
        .add("head sequence", stats.head_sequence.to_string())
        .add("replica", leader_line(stats.leader.as_ref()))
        .print();
    println!();
    print_chain(stats.chain.as_ref());
    let mut table = Table::new(&["COMPONENT", "STATE", "SINCE", "RESTARTS", "MESSAGE"]);
    for component in &stats.components {
        table.row(vec![
            component.name.clone(),
            output::name::<v1::ComponentState>(component.state),
            output::time(component.since.as_ref()),
            component.restarts.to_string(),
            output::or_dash(&component.message),
        ]);
    }
    table.print("components");
    print_shards(&stats.shards);
    Ok(())
}

/// The shard programs: who holds each lease and how far each got.
fn print_shards(shards: &[v1::ShardStatus]) {
    let mut table = Table::new(&[
        "SHARD",
        "PROGRAM",
        "OWNER",
        "EPOCH",
        "LAST SLOT",
        "LAG",
        "EXPIRES",
    ]);
    for s in shards {
        let owner = match (s.owner_replica_id.as_str(), s.owned_here) {
            ("", _) => "-".to_string(),
            (owner, true) => format!("{owner} (here)"),
            (owner, false) => owner.to_string(),
        };
        table.row(vec![
            s.name.clone(),
            s.shard.clone(),
            owner,
            s.epoch.to_string(),
            s.last_processed_slot.to_string(),
            s.lag_slots.to_string(),
            output::time(s.lease_expires_at.as_ref()),
        ]);
    }
    println!();
    table.print("shards");
}

/// "replica-b (leader since …)" or "replica-a (follower; replica-b leads since …)".
fn leader_line(leader: Option<&v1::LeaderInfo>) -> String {
    let Some(l) = leader else {
        return "-".into();
    };
    let since = output::time(l.leader_since.as_ref());
    if l.is_leader {
        format!("{} (leader since {since})", l.replica_id)
    } else {
        format!(
            "{} (follower; {} leads since {since})",
            l.replica_id,
            output::or_dash(&l.leader_replica_id)
        )
    }
}

/// The watched chain, or a line saying there is none.
fn print_chain(chain: Option<&v1::ChainInfo>) {
    let Some(chain) = chain else {
        println!("chain: none (the server runs without a Solana network)");
        println!();
        return;
    };
    let kind = if chain.embedded {
        "embedded Surfnet"
    } else {
        "cluster"
    };
    Fields::default()
        .add("chain", kind.to_string())
        .add("rpc url", chain.rpc_url.clone())
        .add("ws url", chain.ws_url.clone())
        .add("shard program", chain.shard_program_id.clone())
        .add("wallet", output::or_dash(&chain.wallet))
        .add("commitment", chain.commitment.clone())
        .add("last slot", chain.last_processed_slot.to_string())
        .print();
    println!();
}
