//! The wire form of the store's records: the protobuf messages both faces
//! send (gRPC as is, REST as their JSON mapping). One conversion per record,
//! so the two faces cannot disagree on a field.

use valence_lifecycle_api::v1 as proto;

use crate::store::{
    timestamp, LinearState, StoredAccount, StoredProgression, StoredRequest, StoredSession,
    StoredTransition,
};

fn state(s: LinearState) -> i32 {
    proto::LinearState::from(s) as i32
}

impl From<StoredRequest> for proto::AccountRequest {
    fn from(r: StoredRequest) -> Self {
        proto::AccountRequest {
            id: r.id,
            owner: r.owner,
            capabilities: r.capabilities,
            init_state_hash: r.init_state_hash,
            status: proto::AccountRequestStatus::from(r.status) as i32,
            failure_reason: r.failure_reason,
            attempts: r.attempts,
            created_at: Some(timestamp(r.created_at_ms)),
            updated_at: Some(timestamp(r.updated_at_ms)),
            signature: r.signature,
            account_id: r.account_id,
            shard: r.shard,
        }
    }
}

impl From<StoredAccount> for proto::Account {
    fn from(a: StoredAccount) -> Self {
        proto::Account {
            id: a.id,
            owner: a.owner,
            capabilities: a.capabilities,
            state_hash: a.state_hash,
            is_active: a.is_active,
            created_at: Some(timestamp(a.created_at_ms)),
            state: state(a.state),
            request_id: a.request_id,
            shard: a.shard,
        }
    }
}

impl From<StoredSession> for proto::Session {
    fn from(s: StoredSession) -> Self {
        proto::Session {
            id: s.id,
            owner: s.owner,
            accounts: s.accounts,
            namespace: s.namespace,
            is_consumed: s.is_consumed,
            nonce: s.nonce,
            created_at: Some(timestamp(s.created_at_ms)),
            metadata: s.metadata,
            state: state(s.state),
            last_activity_at: Some(timestamp(s.last_activity_at_ms)),
            consumed_at: s.consumed_at_ms.map(timestamp),
            created_sessions: s.created_sessions,
            shard: s.shard,
        }
    }
}

impl From<StoredTransition> for proto::Transition {
    fn from(t: StoredTransition) -> Self {
        proto::Transition {
            from_state: t.from.map_or(proto::LinearState::Unspecified as i32, state),
            to_state: state(t.to),
            at: Some(timestamp(t.at_ms)),
            slot: t.slot,
            signature: t.signature,
            reason: t.reason,
        }
    }
}

impl From<StoredProgression> for proto::Progression {
    fn from(p: StoredProgression) -> Self {
        proto::Progression {
            entity_id: p.entity_id,
            kind: proto::EntityKind::from(p.kind) as i32,
            current_state: state(p.current_state),
            history: p.history.into_iter().map(Into::into).collect(),
        }
    }
}

/// Every record of a page in its wire form.
pub(crate) fn all<S, W: From<S>>(items: Vec<S>) -> Vec<W> {
    items.into_iter().map(W::from).collect()
}
