//! Scaling benchmark (issue 19): how the ingest rate grows with the
//! replicas sharing six shard programs; a program that prints figures
//! beside the one-replica figure of the same run, not a timed test.
//!
//! Each round starts from nothing: a fresh PostgreSQL database, an
//! in-process Surfnet with the stand-in deployed six times, and N replicas
//! (the server binary, each its own process, no wallet: the builder idles,
//! so this is the monitor's ingest) on them. Once the six shards are split
//! fairly among the replicas, R AccountRequest records are placed at once,
//! round-robin over the shards, and the round is timed from the first
//! placement until the database holds all R. Printed per round:
//! records/s, the ratio to one replica, and the CPU the replicas spent per
//! record (user + system of every replica process, from /proc): on this
//! 2-core machine the machine, not the design, is the ceiling, so CPU per
//! record shows what scaling out costs.
//!
//! `cargo bench -p valence-lifecycle-server --bench scaling` (release; 1,
//! 2 and 3 replicas; `BENCH_RECORDS`, default 6,000). `cargo test
//! --benches` runs a short form (1 and 2 replicas, 120 records) only to
//! show it still runs. Needs PostgreSQL (`TEST_DATABASE_URL=postgres://…`):
//! without it the benchmark says it was skipped.

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use solana_client::{nonblocking::rpc_client::RpcClient, rpc_request::RpcRequest};
use solana_sdk::pubkey::Pubkey;
use sqlx::Connection as _;
use surfpool_sdk::cheatcodes::builders::DeployProgram;
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, GetStatsRequest,
};
use valence_lifecycle_server::chain::{dev, embedded::SHARD_PROGRAM};

#[path = "support/chain.rs"]
mod chain;
mod support;

use chain::Net;

/// Shard programs of every round.
const SHARDS: usize = 6;
/// Cheatcode calls in flight while placing: one at a time, the placing,
/// not the replicas, would set the pace.
const PLACING_IN_FLIGHT: usize = 16;
/// The bound on the shards being split after the replicas start.
const BALANCE_WITHIN: Duration = Duration::from_secs(60);
/// The bound on every record being stored.
const STORE_WITHIN: Duration = Duration::from_secs(600);

fn main() -> anyhow::Result<()> {
    support::main(run)
}

/// What one round measured.
struct Round {
    replicas: usize,
    records_per_second: f64,
    cpu_ms_per_record: f64,
    placed_in: Duration,
    stored_in: Duration,
}

async fn run(full: bool) -> anyhow::Result<()> {
    let Some(server) = postgres_server()? else {
        println!(
            "scaling benchmark: SKIPPED (needs PostgreSQL: set TEST_DATABASE_URL=postgres://…)"
        );
        return Ok(());
    };
    let (replica_counts, records) = if full {
        (vec![1, 2, 3], support::env_number("BENCH_RECORDS", 6_000))
    } else {
        (vec![1, 2], 120)
    };
    println!("scaling benchmark: {SHARDS} shards, {records} request records a round");
    let mut rounds = Vec::new();
    for replicas in replica_counts {
        rounds.push(round(&server, replicas, records).await?);
    }
    print_table(&rounds);
    Ok(())
}

/// TEST_DATABASE_URL, or None (skipped), unless VALENCE_REQUIRE_POSTGRES=1
/// (`.ci/test`) says PostgreSQL must be there.
fn postgres_server() -> anyhow::Result<Option<String>> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(Some(url)),
        _ if std::env::var("VALENCE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            anyhow::bail!("VALENCE_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        }
        _ => Ok(None),
    }
}

fn print_table(rounds: &[Round]) {
    let one = rounds.first().map_or(1.0, |r| r.records_per_second);
    println!(
        "{:>8} {:>12} {:>12} {:>15} {:>10} {:>10}",
        "replicas", "records/s", "ratio to 1", "CPU ms/record", "placed s", "stored s"
    );
    for r in rounds {
        println!(
            "{:>8} {:>12.1} {:>11.2}× {:>15.3} {:>10.2} {:>10.2}",
            r.replicas,
            r.records_per_second,
            r.records_per_second / one,
            r.cpu_ms_per_record,
            r.placed_in.as_secs_f64(),
            r.stored_in.as_secs_f64()
        );
    }
}

/// One round: `replicas` replicas on a fresh database and chain ingest
/// `records` records.
async fn round(server: &str, replicas: usize, records: usize) -> anyhow::Result<Round> {
    let url = support::fresh_postgres(server).await?;
    let net = Net::start().await?;
    let programs = deploy_shards(&net)?;
    let ids: Vec<String> = (1..=replicas).map(|i| format!("bench-{i}")).collect();
    let mut started = Vec::new();
    for id in &ids {
        started.push(start_replica(&url, &net, &programs, id).await?);
    }
    wait_balanced(&started[0], &ids).await?;
    for replica in &started {
        replica.wait_healthy().await;
    }
    let mut db = sqlx::PgConnection::connect(&url).await?;
    let cpu_before = cpu_seconds(&started)?;
    let began = Instant::now();
    place_requests(&net.rpc_url, &programs, records).await?;
    let placed_in = began.elapsed();
    wait_stored(&mut db, records).await?;
    let stored_in = began.elapsed();
    let cpu = cpu_seconds(&started)? - cpu_before;
    for replica in started {
        replica.stop().await?;
    }
    let round = Round {
        replicas,
        records_per_second: records as f64 / stored_in.as_secs_f64(),
        cpu_ms_per_record: cpu * 1e3 / records as f64,
        placed_in,
        stored_in,
    };
    println!(
        "round: {replicas} replica(s), {records} records placed in {:.2} s, all stored after {:.2} s",
        placed_in.as_secs_f64(),
        stored_in.as_secs_f64()
    );
    Ok(round)
}

/// The stand-in at `net.program` and at `SHARDS - 1` more program ids.
fn deploy_shards(net: &Net) -> anyhow::Result<Vec<Pubkey>> {
    let mut programs = vec![net.program];
    for _ in 1..SHARDS {
        let program = Pubkey::new_unique();
        tokio::task::block_in_place(|| {
            net.surfnet
                .cheatcodes()
                .deploy(DeployProgram::new(program).so_bytes(SHARD_PROGRAM.to_vec()))
        })
        .map_err(|e| anyhow::anyhow!("deploying the stand-in at {program}: {e}"))?;
        programs.push(program);
    }
    Ok(programs)
}

/// Places `n` AccountRequest records, round-robin over `programs`, with
/// the cheatcode Surfnet answers (`surfnet_setAccount`), several in flight.
async fn place_requests(rpc_url: &str, programs: &[Pubkey], n: usize) -> anyhow::Result<()> {
    let client = RpcClient::new(rpc_url.to_string());
    let rpc = &client;
    let owner = Pubkey::new_unique();
    let calls = (0..n).map(move |i| {
        let key = dev::random_key();
        let record = dev::account_request(key, owner, vec!["transfer".into()], [0; 32]);
        let params = serde_json::json!([
            key.to_string(),
            {
                "lamports": 10_000_000,
                "data": hex::encode(record.encode()),
                "owner": programs[i % programs.len()].to_string()
            }
        ]);
        async move {
            rpc.send::<serde_json::Value>(
                RpcRequest::Custom {
                    method: "surfnet_setAccount",
                },
                params,
            )
            .await
            .map_err(|e| anyhow::anyhow!("placing request {i}: {e}"))
        }
    });
    let results: Vec<anyhow::Result<serde_json::Value>> = futures::stream::iter(calls)
        .buffer_unordered(PLACING_IN_FLIGHT)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(())
}

/// Shards per replica by the balancing rule: replica ids in sort order,
/// `shards / n` each and one more for the first `shards % n`.
fn fair_shares(ids: &[String], shards: usize) -> BTreeMap<String, usize> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let (each, extra) = (shards / sorted.len(), shards % sorted.len());
    sorted
        .into_iter()
        .enumerate()
        .map(|(rank, id)| (id, each + usize::from(rank < extra)))
        .collect()
}

/// Waits until every shard has an owner and each replica holds its fair
/// share (GetStats of `replica`; any replica answers for all shards).
async fn wait_balanced(replica: &Replica, ids: &[String]) -> anyhow::Result<()> {
    let expected = fair_shares(ids, SHARDS);
    let mut client =
        LifecycleServiceClient::connect(format!("http://127.0.0.1:{}", replica.grpc)).await?;
    let deadline = Instant::now() + BALANCE_WITHIN;
    loop {
        let shards = client
            .get_stats(GetStatsRequest {})
            .await?
            .into_inner()
            .shards;
        let mut owners: BTreeMap<String, usize> = BTreeMap::new();
        for shard in &shards {
            *owners.entry(shard.owner_replica_id.clone()).or_default() += 1;
        }
        if shards.len() == SHARDS && owners == expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the shards were not split {expected:?} within {BALANCE_WITHIN:?}: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the database holds `records` account requests, and no more.
async fn wait_stored(db: &mut sqlx::PgConnection, records: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + STORE_WITHIN;
    loop {
        let stored = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM account_requests")
            .fetch_one(&mut *db)
            .await?;
        let stored = usize::try_from(stored)?;
        if stored >= records {
            anyhow::ensure!(
                stored == records,
                "{stored} requests stored, {records} placed"
            );
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {stored} of {records} requests stored within {STORE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// User + system CPU seconds of all `replicas` so far.
fn cpu_seconds(replicas: &[Replica]) -> anyhow::Result<f64> {
    replicas.iter().map(Replica::cpu_seconds).sum()
}

/// A replica: the server binary as its own process.
type Replica = support::ServerProcess;

/// Starts replica `id` of every program in `programs` on `url` and waits
/// until its /health answers.
async fn start_replica(
    url: &str,
    net: &Net,
    programs: &[Pubkey],
    id: &str,
) -> anyhow::Result<Replica> {
    let ids: Vec<String> = programs.iter().map(ToString::to_string).collect();
    let env = [
        ("DATABASE_URL", url.to_string()),
        ("RPC_URL", net.rpc_url.clone()),
        ("WS_URL", net.ws_url.clone()),
        ("SHARD_PROGRAM_ID", ids[0].clone()),
        ("SHARD_PROGRAM_IDS", ids.join(",")),
        ("REPLICA_ID", id.to_string()),
        // Passes every second until the websocket feeds are up, so a
        // record placed before they subscribed is not left for a minute.
        ("POLL_INTERVAL", "1".to_string()),
    ];
    Replica::start(&env, "warn", Stdio::null()).await
}

impl Replica {
    /// Waits (up to 20 s) until /health says healthy: the shards' websocket
    /// feeds are up, so placed records arrive live. Goes on regardless
    /// after that, saying so (the figures are then less certain, not wrong).
    async fn wait_healthy(&self) {
        let health = format!("http://127.0.0.1:{}/health", self.api);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(answer) = reqwest::get(&health).await {
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                if body["status"] == "healthy" {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("note: the replica at {health} was not healthy after 20 s; measuring anyway");
    }
}
