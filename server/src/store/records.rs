//! The records the store answers with: plain Rust values with typed
//! states and times in Unix milliseconds. The faces turn them into their
//! wire form (see `crate::wire`); the store knows nothing of protobuf
//! messages except the event payloads it keeps in the log.

use super::{EntityKind, LinearState, RequestStatus};

/// A stored account request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// Address of the on-chain AccountRequest record.
    pub id: String,
    /// Future owner.
    pub owner: String,
    /// Requested capabilities.
    pub capabilities: Vec<String>,
    /// Expected initial state hash, hex.
    pub init_state_hash: String,
    /// Where it stands.
    pub status: RequestStatus,
    /// Why the last attempt failed; empty when none did.
    pub failure_reason: String,
    /// Initialization attempts so far.
    pub attempts: u32,
    /// On-chain creation time, Unix ms.
    pub created_at_ms: i64,
    /// Last change, Unix ms.
    pub updated_at_ms: i64,
    /// Signature of the initializing transaction, when known.
    pub signature: String,
    /// The account initialized for it, when known.
    pub account_id: String,
    /// Program id of its shard ('' for rows stored before shards existed).
    pub shard: String,
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    /// Address.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// State hash, hex.
    pub state_hash: String,
    /// Active flag.
    pub is_active: bool,
    /// On-chain creation time, Unix ms.
    pub created_at_ms: i64,
    /// Its place in the linear progression.
    pub state: LinearState,
    /// The request it came from; empty when not known.
    pub request_id: String,
    /// Program id of its shard.
    pub shard: String,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Address.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Member accounts in order.
    pub accounts: Vec<String>,
    /// Namespace.
    pub namespace: String,
    /// Consumed flag.
    pub is_consumed: bool,
    /// Nonce.
    pub nonce: u64,
    /// On-chain creation time, Unix ms.
    pub created_at_ms: i64,
    /// Metadata bytes.
    pub metadata: Vec<u8>,
    /// Its place in the linear progression.
    pub state: LinearState,
    /// Last activity seen, Unix ms.
    pub last_activity_at_ms: i64,
    /// When it was consumed, Unix ms.
    pub consumed_at_ms: Option<i64>,
    /// Sessions its consumption created.
    pub created_sessions: Vec<String>,
    /// Program id of its shard.
    pub shard: String,
}

/// One step of a linear progression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransition {
    /// The state left; None for the first step.
    pub from: Option<LinearState>,
    /// The state reached.
    pub to: LinearState,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Slot of the observation, when it came from the chain.
    pub slot: Option<u64>,
    /// Signature of the transaction behind it, when known.
    pub signature: String,
    /// Why, in words.
    pub reason: String,
}

/// An entity's linear progression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProgression {
    /// The account or session.
    pub entity_id: String,
    /// Which it is.
    pub kind: EntityKind,
    /// Where it stands.
    pub current_state: LinearState,
    /// Every step, oldest first (for an account, its request's steps first).
    pub history: Vec<StoredTransition>,
}

/// A row's place in a newest-first list (`ORDER BY created_at DESC, id
/// DESC`, total because ids are unique): a page starts after the last key
/// of the one before, so rows written meanwhile shift nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CreatedKey {
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// The row's id.
    pub id: String,
}

impl StoredRequest {
    /// Its place in the newest-first list of requests.
    pub fn key(&self) -> CreatedKey {
        CreatedKey {
            created_at_ms: self.created_at_ms,
            id: self.id.clone(),
        }
    }
}

impl StoredAccount {
    /// Its place in the newest-first list of accounts.
    pub fn key(&self) -> CreatedKey {
        CreatedKey {
            created_at_ms: self.created_at_ms,
            id: self.id.clone(),
        }
    }
}

impl StoredSession {
    /// Its place in the newest-first list of sessions.
    pub fn key(&self) -> CreatedKey {
        CreatedKey {
            created_at_ms: self.created_at_ms,
            id: self.id.clone(),
        }
    }
}
