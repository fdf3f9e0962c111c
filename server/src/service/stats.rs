//! Statistics for GetStats and `/stats`: store counts, component states,
//! the leader and the chain watched.

use valence_lifecycle_api::v1::{ChainInfo, GetStatsResponse, ShardStatus};

use crate::{error::ApiResult, store::timestamp, AppState};

/// The replica's statistics now.
pub(crate) async fn get(state: &AppState) -> ApiResult<GetStatsResponse> {
    let s = state.store.stats().await?;
    Ok(GetStatsResponse {
        accounts_created: s.accounts_created,
        accounts_failed: s.accounts_failed,
        is_running: state.board.all_running(),
        uptime_seconds: state.started.elapsed().as_secs(),
        accounts: s.accounts,
        pending_account_requests: s.pending_requests,
        sessions: s.sessions,
        active_sessions: s.active_sessions,
        rules: s.rules,
        events: s.events,
        head_sequence: s.head_sequence,
        components: state.board.snapshot(),
        leader: Some(state.leadership.info(&state.store).await),
        started_at: Some(timestamp(state.started_at_ms)),
        store_backend: state.store.backend().name().to_string(),
        chain: chain_info(state),
        shards: shards(state).await?,
    })
}

/// Every configured shard with its lease as stored (any replica answers
/// for all: the lease table is shared).
pub(crate) async fn shards(state: &AppState) -> ApiResult<Vec<ShardStatus>> {
    let rows = state.store.leases().await?;
    let me = state.leadership.replica_id();
    Ok(state
        .shards
        .all()
        .iter()
        .map(|shard| {
            let row = rows.iter().find(|r| r.shard == shard.id);
            let live = row.filter(|r| r.is_live());
            ShardStatus {
                shard: shard.id.clone(),
                name: shard.name.clone(),
                owner_replica_id: live.map(|r| r.owner.clone()).unwrap_or_default(),
                epoch: row.map_or(0, |r| r.epoch.max(0) as u64),
                lease_expires_at: live.map(|r| timestamp(r.expires_at)),
                last_processed_slot: row.map_or(0, |r| r.last_slot),
                lag_slots: row.map_or(0, |r| r.head_slot.saturating_sub(r.last_slot)),
                owned_here: live.is_some_and(|r| r.owner == me),
            }
        })
        .collect())
}

fn chain_info(state: &AppState) -> Option<ChainInfo> {
    let chain = state.chain.as_ref()?;
    Some(ChainInfo {
        rpc_url: chain.rpc_url.clone(),
        ws_url: chain.ws_url.clone(),
        shard_program_id: chain.program_id.to_string(),
        embedded: chain.embedded,
        wallet: chain
            .wallet
            .as_ref()
            .map(|w| solana_sdk::signature::Signer::pubkey(w.as_ref()).to_string())
            .unwrap_or_default(),
        commitment: state.config.rpc.commitment.clone(),
        last_processed_slot: state.metrics.last_processed_slot.get(),
    })
}

/// The Prometheus exposition (OpenMetrics text), with the gauges that
/// mirror stored state refreshed first.
pub(crate) async fn prometheus_text(state: &AppState) -> String {
    state.refresh_gauges().await;
    state.metrics.encode()
}
