//! The JSON shapes the seeds fix, kept exactly: rules in seed 000's
//! notation (`POST /rules`, `GET /rules`, `GET /rules/{id}`), and the status
//! reads `GET /health` (seed 000) and `GET /stats` (seed 001) with their
//! snake_case keys, plain numbers and short state names, which scripts and
//! probes read. Every other body the gateway writes is a proto message in
//! the canonical proto3 JSON mapping (the pbjson-generated impls).

use serde_json::{json, Value};
use valence_lifecycle_api::{
    json::{rfc3339, short_name},
    rule_json::SeedRule,
    v1::{
        ChainInfo, ComponentState, ComponentStatus, GetStatsResponse, LeaderInfo, ProgressionRule,
        ShardStatus,
    },
    Timestamp,
};

use crate::{
    error::{ApiError, ApiResult},
    service::health::Health,
};

/// A stored rule in seed 000's shape.
pub(super) fn rule(rule: &ProgressionRule) -> ApiResult<Value> {
    let seed =
        SeedRule::try_from(rule).map_err(|m| anyhow::anyhow!("stored rule lacks {}", m.0))?;
    serde_json::to_value(seed).map_err(|e| ApiError::Internal(e.into()))
}

/// The body of `GET /health`.
pub(super) fn health(health: &Health) -> Value {
    json!({
        "status": health.status.as_str(),
        "leader": leader(&health.leader),
        "timestamp": rfc3339(&health.checked_at),
        "components": components(&health.components),
        "singletons": health.singletons,
    })
}

/// The body of `GET /stats`: seed 001's four fields first, then the rest
/// of GetStatsResponse under the same field names.
pub(super) fn stats(s: &GetStatsResponse) -> Value {
    json!({
        "accounts_created": s.accounts_created,
        "accounts_failed": s.accounts_failed,
        "is_running": s.is_running,
        "uptime_seconds": s.uptime_seconds,
        "accounts": s.accounts,
        "pending_account_requests": s.pending_account_requests,
        "sessions": s.sessions,
        "active_sessions": s.active_sessions,
        "rules": s.rules,
        "events": s.events,
        "head_sequence": s.head_sequence,
        "components": components(&s.components),
        "started_at": time(s.started_at.as_ref()),
        "store_backend": s.store_backend,
        "chain": s.chain.as_ref().map(chain),
        "leader": s.leader.as_ref().map(leader),
        "shards": s.shards.iter().map(shard).collect::<Vec<_>>(),
    })
}

fn shard(s: &ShardStatus) -> Value {
    json!({
        "shard": s.shard,
        "name": s.name,
        "owner_replica_id": s.owner_replica_id,
        "epoch": s.epoch,
        "lease_expires_at": time(s.lease_expires_at.as_ref()),
        "last_processed_slot": s.last_processed_slot,
        "lag_slots": s.lag_slots,
        "owned_here": s.owned_here,
    })
}

fn components(components: &[ComponentStatus]) -> Vec<Value> {
    components
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "state": short_name::<ComponentState>(c.state),
                "message": c.message,
                "since": time(c.since.as_ref()),
                "restarts": c.restarts,
                "last_heartbeat": time(c.last_heartbeat.as_ref()),
            })
        })
        .collect()
}

fn leader(l: &LeaderInfo) -> Value {
    json!({
        "replica_id": l.replica_id,
        "is_leader": l.is_leader,
        "leader_replica_id": l.leader_replica_id,
        "leader_since": time(l.leader_since.as_ref()),
    })
}

fn chain(c: &ChainInfo) -> Value {
    json!({
        "rpc_url": c.rpc_url,
        "ws_url": c.ws_url,
        "shard_program_id": c.shard_program_id,
        "embedded": c.embedded,
        "commitment": c.commitment,
        "last_processed_slot": c.last_processed_slot,
        "wallet": c.wallet,
    })
}

fn time(ts: Option<&Timestamp>) -> Option<String> {
    ts.map(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snake_case keys of a message's proto3 JSON (defaults emitted).
    fn proto_keys<T: serde::Serialize>(message: &T) -> Vec<String> {
        let Value::Object(map) = serde_json::to_value(message).unwrap() else {
            panic!("a message is an object");
        };
        let mut keys: Vec<String> = map
            .keys()
            .map(|k| {
                k.chars().fold(String::new(), |mut out, c| {
                    if c.is_ascii_uppercase() {
                        out.push('_');
                    }
                    out.push(c.to_ascii_lowercase());
                    out
                })
            })
            .collect();
        keys.sort();
        keys
    }

    fn keys(value: &Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// A field added to one of these messages must be added here too.
    #[test]
    fn status_shapes_carry_every_field_of_their_messages() {
        // Every message field set: proto3 JSON leaves unset ones out.
        let at = Some(Timestamp::default());
        let leader = LeaderInfo {
            leader_since: at,
            ..Default::default()
        };
        let component = ComponentStatus {
            since: at,
            last_heartbeat: at,
            ..Default::default()
        };
        let shard = ShardStatus {
            lease_expires_at: at,
            ..Default::default()
        };
        let stats = GetStatsResponse {
            chain: Some(ChainInfo::default()),
            leader: Some(leader.clone()),
            components: vec![component.clone()],
            shards: vec![shard.clone()],
            started_at: at,
            ..Default::default()
        };
        let shown = super::stats(&stats);
        assert_eq!(keys(&shown), proto_keys(&stats));
        assert_eq!(keys(&shown["chain"]), proto_keys(&ChainInfo::default()));
        assert_eq!(keys(&shown["leader"]), proto_keys(&leader));
        assert_eq!(keys(&shown["components"][0]), proto_keys(&component));
        assert_eq!(keys(&shown["shards"][0]), proto_keys(&shard));
        assert_eq!(shown["started_at"], "1970-01-01T00:00:00Z");
        assert_eq!(shown["components"][0]["state"], "unspecified");
        assert_eq!(shown["rules"], 0, "numbers, as seed 001 shows");
    }
}
