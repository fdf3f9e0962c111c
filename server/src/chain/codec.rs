//! The shard program's wire formats, Anchor conventions:
//!
//! * records: `sha256("account:<Name>")[..8]` then borsh fields, possibly
//!   followed by zero padding (accounts are sized by their creator);
//! * instructions: `sha256("global:<name>")[..8]` then borsh arguments;
//! * events: one `Program data: <base64>` log line holding
//!   `sha256("event:<Name>")[..8]` then borsh fields.
//!
//! Borsh: a public key is 32 bytes; `String` and `Vec<T>` are a u32
//! little-endian count then the items; integers are little-endian; `bool`
//! is one byte. The layouts are those of `server/shard-program/README.md`
//! and seed 000's types; golden vectors below pin every one.

use std::{collections::HashMap, sync::LazyLock};

use borsh::{BorshDeserialize, BorshSerialize};
use sha2::{Digest, Sha256};

/// A 32-byte public key as it travels in borsh.
pub type Key = [u8; 32];

/// `sha256("<namespace>:<name>")[..8]`.
pub fn discriminator(namespace: &str, name: &str) -> [u8; 8] {
    let digest = Sha256::digest(format!("{namespace}:{name}").as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Base58 text of a key.
pub fn base58(key: &Key) -> String {
    bs58::encode(key).into_string()
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than 8 bytes.
    #[error("too short for a discriminator ({0} bytes)")]
    TooShort(usize),
    /// A discriminator this codec does not know.
    #[error("unknown discriminator {}", hex::encode(.0))]
    UnknownDiscriminator([u8; 8]),
    /// Known discriminator, but the fields do not decode.
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// Record or event name.
        kind: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl DecodeError {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) => "too_short",
            DecodeError::UnknownDiscriminator(_) => "unknown_discriminator",
            DecodeError::Malformed { .. } => "malformed",
        }
    }
}

/// Decodes `T` from `body`, allowing only zero bytes after it.
fn decode_body<T: BorshDeserialize>(
    kind: &'static str,
    body: &[u8],
    allow_padding: bool,
) -> Result<T, DecodeError> {
    let mut rest = body;
    let value = T::deserialize(&mut rest).map_err(|e| DecodeError::Malformed {
        kind,
        reason: e.to_string(),
    })?;
    let trailing_ok = if allow_padding {
        rest.iter().all(|b| *b == 0)
    } else {
        rest.is_empty()
    };
    if !trailing_ok {
        return Err(DecodeError::Malformed {
            kind,
            reason: format!("{} unexpected trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

fn split(data: &[u8]) -> Result<([u8; 8], &[u8]), DecodeError> {
    if data.len() < 8 {
        return Err(DecodeError::TooShort(data.len()));
    }
    let mut disc = [0u8; 8];
    disc.copy_from_slice(&data[..8]);
    Ok((disc, &data[8..]))
}

// ---------------------------------------------------------------- records

/// `AccountRequest` record (seed 000).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AccountRequestRecord {
    /// The record's own address.
    pub id: Key,
    /// Future owner.
    pub owner: Key,
    /// Requested capabilities.
    pub capabilities: Vec<String>,
    /// Expected sha256 of the initial state (all zero: no expectation).
    pub init_state_hash: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
    /// The request's Account once `initialize_account` wrote it, all zero
    /// before: the chain's own answer to "is this request done?".
    pub account: Key,
}

impl AccountRequestRecord {
    /// The Account the chain says this request initialized, if any.
    pub fn initialized_account(&self) -> Option<Key> {
        (self.account != [0; 32]).then_some(self.account)
    }
}

/// `Account` record (seed 000).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AccountRecord {
    /// The account's address.
    pub id: Key,
    /// Owner.
    pub owner: Key,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// sha256 of the current state.
    pub state_hash: [u8; 32],
    /// Active flag.
    pub is_active: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// `Session` record (seed 000).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionRecord {
    /// The session's address.
    pub id: Key,
    /// Owner.
    pub owner: Key,
    /// Member accounts, in order.
    pub accounts: Vec<Key>,
    /// Namespace.
    pub namespace: String,
    /// Consumed flag.
    pub is_consumed: bool,
    /// Nonce.
    pub nonce: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Opaque metadata.
    pub metadata: Vec<u8>,
}

/// `SessionConsumption` record (seed 000).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionConsumptionRecord {
    /// The consumed session.
    pub consumed_session: Key,
    /// Sessions created from it.
    pub created_sessions: Vec<Key>,
    /// Signature of the consuming transaction (zeros when written on chain:
    /// a program cannot see its own transaction's signature).
    pub transaction_signature: [u8; 64],
    /// Unix seconds.
    pub consumed_at: i64,
}

/// `SingletonState` record of the singleton programs.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SingletonStateRecord {
    /// 1 processor, 2 scheduler, 3 diff.
    pub kind: u8,
    /// 1 active, 2 paused.
    pub status: u8,
    /// Config version, from 1.
    pub version: u32,
    /// Who may pause, resume and update.
    pub authority: Key,
    /// Opaque config bytes.
    pub config: Vec<u8>,
}

/// `SessionQueue` record (seed 001's session factory): the chain's queue.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionQueueRecord {
    /// Who may initialize manually and reset.
    pub authority: Key,
    /// The position the next queued session gets.
    pub next_position: u64,
    /// Sessions queued and not yet initialized or reset: the queue's size.
    pub pending: u64,
    /// Sessions initialized from the queue.
    pub processed: u64,
}

/// `SessionReservation` record (seed 001): a session reserved (and perhaps
/// queued) but not created; its Session record is later written over it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionReservationRecord {
    /// The session's address (the record's own).
    pub session: Key,
    /// Owner.
    pub owner: Key,
    /// The queue it belongs to.
    pub queue: Key,
    /// Namespace.
    pub namespace: String,
    /// 1 reserved, 2 queued, 3 reset.
    pub status: u8,
    /// Unix seconds after which it can no longer be queued.
    pub expires_at: i64,
    /// Position in the queue (0 until queued).
    pub queue_position: u64,
    /// Unix seconds by which it should be initialized (0 until queued).
    pub deadline: i64,
}

/// Any record of the shard program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An account request.
    AccountRequest(AccountRequestRecord),
    /// An initialized account.
    Account(AccountRecord),
    /// A session.
    Session(SessionRecord),
    /// A consumption.
    SessionConsumption(SessionConsumptionRecord),
    /// A singleton's state.
    SingletonState(SingletonStateRecord),
    /// The session factory's queue.
    SessionQueue(SessionQueueRecord),
    /// A session reservation.
    SessionReservation(SessionReservationRecord),
}

/// Record names, in the order of [`Record`]'s variants.
pub const RECORD_NAMES: [&str; 7] = [
    "AccountRequest",
    "Account",
    "Session",
    "SessionConsumption",
    "SingletonState",
    "SessionQueue",
    "SessionReservation",
];

/// Discriminator of a record name.
pub fn record_discriminator(name: &str) -> [u8; 8] {
    discriminator("account", name)
}

static RECORD_BY_DISC: LazyLock<HashMap<[u8; 8], &'static str>> = LazyLock::new(|| {
    RECORD_NAMES
        .iter()
        .map(|n| (record_discriminator(n), *n))
        .collect()
});

impl Record {
    /// The record's name.
    pub fn name(&self) -> &'static str {
        match self {
            Record::AccountRequest(_) => "AccountRequest",
            Record::Account(_) => "Account",
            Record::Session(_) => "Session",
            Record::SessionConsumption(_) => "SessionConsumption",
            Record::SingletonState(_) => "SingletonState",
            Record::SessionQueue(_) => "SessionQueue",
            Record::SessionReservation(_) => "SessionReservation",
        }
    }

    /// Decodes account data (discriminator, fields, zero padding).
    pub fn decode(data: &[u8]) -> Result<Record, DecodeError> {
        let (disc, body) = split(data)?;
        let name = RECORD_BY_DISC
            .get(&disc)
            .ok_or(DecodeError::UnknownDiscriminator(disc))?;
        Ok(match *name {
            "AccountRequest" => Record::AccountRequest(decode_body(name, body, true)?),
            "Account" => Record::Account(decode_body(name, body, true)?),
            "Session" => Record::Session(decode_body(name, body, true)?),
            "SessionConsumption" => Record::SessionConsumption(decode_body(name, body, true)?),
            "SessionQueue" => Record::SessionQueue(decode_body(name, body, true)?),
            "SessionReservation" => Record::SessionReservation(decode_body(name, body, true)?),
            _ => Record::SingletonState(decode_body(name, body, true)?),
        })
    }

    /// Encodes the record as account data (no padding).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = record_discriminator(self.name()).to_vec();
        let written = match self {
            Record::AccountRequest(r) => r.serialize(&mut out),
            Record::Account(r) => r.serialize(&mut out),
            Record::Session(r) => r.serialize(&mut out),
            Record::SessionConsumption(r) => r.serialize(&mut out),
            Record::SingletonState(r) => r.serialize(&mut out),
            Record::SessionQueue(r) => r.serialize(&mut out),
            Record::SessionReservation(r) => r.serialize(&mut out),
        };
        written.expect("writing to a Vec cannot fail");
        out
    }
}

// ----------------------------------------------------------------- events

/// `AccountRequested`: a request record was written.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AccountRequestedEvent {
    /// The request record.
    pub request_id: Key,
    /// Future owner.
    pub owner: Key,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Expected state hash.
    pub init_state_hash: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
}

/// `PDAComputed` (seed 001): an account the off-chain builder must create.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PdaComputedEvent {
    /// The request behind it.
    pub request_id: Key,
    /// Future owner.
    pub owner: Key,
    /// Bytes the new account needs.
    pub account_space: u64,
    /// Expected state hash.
    pub init_state_hash: [u8; 32],
}

/// `AccountInitialized`: an Account record was written for a request.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AccountInitializedEvent {
    /// The new account.
    pub account_id: Key,
    /// Its request.
    pub request_id: Key,
    /// Owner.
    pub owner: Key,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Initial state hash.
    pub state_hash: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
}

/// `SessionCreated` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionCreatedEvent {
    /// The session.
    pub session_id: Key,
    /// Owner.
    pub owner: Key,
    /// Member accounts.
    pub accounts: Vec<Key>,
    /// Namespace.
    pub namespace: String,
    /// Nonce.
    pub nonce: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// `SessionActivated` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionActivatedEvent {
    /// The session.
    pub session_id: Key,
    /// Owner.
    pub owner: Key,
    /// Unix seconds.
    pub activated_at: i64,
}

/// `SessionConsumed`: a session was consumed into new ones.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionConsumedEvent {
    /// The consumed session.
    pub consumed_session: Key,
    /// The SessionConsumption record.
    pub consumption_record: Key,
    /// New sessions.
    pub created_sessions: Vec<Key>,
    /// Unix seconds.
    pub consumed_at: i64,
}

/// `SessionQueued` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionQueuedEvent {
    /// The session.
    pub session_id: Key,
    /// Position in the queue.
    pub queue_position: u64,
    /// Unix seconds.
    pub deadline: i64,
}

/// `QueueProcessed` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct QueueProcessedEvent {
    /// Items processed.
    pub processed: u32,
    /// Items that succeeded.
    pub succeeded: u32,
    /// Items that failed.
    pub failed: u32,
    /// Items left.
    pub remaining: u64,
}

/// `SessionReserved` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionReservedEvent {
    /// The session.
    pub session_id: Key,
    /// Who reserved it.
    pub owner: Key,
    /// Unix seconds.
    pub expires_at: i64,
}

/// `SessionInitializedFromQueue` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionInitializedFromQueueEvent {
    /// The session.
    pub session_id: Key,
    /// Former queue position.
    pub queue_position: u64,
}

/// `ManualSessionInitialized` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ManualSessionInitializedEvent {
    /// The session.
    pub session_id: Key,
    /// Who initialized it.
    pub initializer: Key,
}

/// `EmergencySessionReset` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct EmergencySessionResetEvent {
    /// The session.
    pub session_id: Key,
    /// Who reset it.
    pub authority: Key,
    /// Reason text.
    pub reason: String,
}

/// An event of the shard program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    /// See [`AccountRequestedEvent`].
    AccountRequested(AccountRequestedEvent),
    /// See [`PdaComputedEvent`].
    PdaComputed(PdaComputedEvent),
    /// See [`AccountInitializedEvent`].
    AccountInitialized(AccountInitializedEvent),
    /// See [`SessionCreatedEvent`].
    SessionCreated(SessionCreatedEvent),
    /// See [`SessionActivatedEvent`].
    SessionActivated(SessionActivatedEvent),
    /// See [`SessionConsumedEvent`].
    SessionConsumed(SessionConsumedEvent),
    /// See [`SessionQueuedEvent`].
    SessionQueued(SessionQueuedEvent),
    /// See [`QueueProcessedEvent`].
    QueueProcessed(QueueProcessedEvent),
    /// See [`SessionReservedEvent`].
    SessionReserved(SessionReservedEvent),
    /// See [`SessionInitializedFromQueueEvent`].
    SessionInitializedFromQueue(SessionInitializedFromQueueEvent),
    /// See [`ManualSessionInitializedEvent`].
    ManualSessionInitialized(ManualSessionInitializedEvent),
    /// See [`EmergencySessionResetEvent`].
    EmergencySessionReset(EmergencySessionResetEvent),
    /// An event this monitor records nothing for (bundle and singleton
    /// events are handled by their own components).
    Other(&'static str),
}

/// Seed 001's maximum processing delay (milliseconds) of each event type
/// that has one.
pub const EVENT_DEADLINES_MS: [(&str, u64); 4] = [
    ("PDAComputed", 5_000),
    ("SessionReserved", 2_000),
    ("SessionQueued", 1_000),
    ("QueueProcessed", 500),
];

/// Event names, with PDAComputed spelled as the program spells it.
pub(crate) const EVENT_NAMES: [&str; 18] = [
    "AccountRequested",
    "PDAComputed",
    "AccountInitialized",
    "SessionCreated",
    "SessionActivated",
    "SessionConsumed",
    "SessionQueued",
    "QueueProcessed",
    "SessionReserved",
    "SessionInitializedFromQueue",
    "ManualSessionInitialized",
    "EmergencySessionReset",
    "BundleOperationExecuted",
    "SyncBundleExecuted",
    "SingletonInitialized",
    "SingletonPaused",
    "SingletonResumed",
    "SingletonConfigUpdated",
];

static EVENT_BY_DISC: LazyLock<HashMap<[u8; 8], &'static str>> = LazyLock::new(|| {
    EVENT_NAMES
        .iter()
        .map(|n| (discriminator("event", n), *n))
        .collect()
});

impl ChainEvent {
    /// Decodes one event (discriminator + fields, nothing after).
    pub fn decode(data: &[u8]) -> Result<ChainEvent, DecodeError> {
        let (disc, body) = split(data)?;
        let name = *EVENT_BY_DISC
            .get(&disc)
            .ok_or(DecodeError::UnknownDiscriminator(disc))?;
        Ok(match name {
            "AccountRequested" => ChainEvent::AccountRequested(decode_body(name, body, false)?),
            "PDAComputed" => ChainEvent::PdaComputed(decode_body(name, body, false)?),
            "AccountInitialized" => ChainEvent::AccountInitialized(decode_body(name, body, false)?),
            "SessionCreated" => ChainEvent::SessionCreated(decode_body(name, body, false)?),
            "SessionActivated" => ChainEvent::SessionActivated(decode_body(name, body, false)?),
            "SessionConsumed" => ChainEvent::SessionConsumed(decode_body(name, body, false)?),
            "SessionQueued" => ChainEvent::SessionQueued(decode_body(name, body, false)?),
            "QueueProcessed" => ChainEvent::QueueProcessed(decode_body(name, body, false)?),
            "SessionReserved" => ChainEvent::SessionReserved(decode_body(name, body, false)?),
            "SessionInitializedFromQueue" => {
                ChainEvent::SessionInitializedFromQueue(decode_body(name, body, false)?)
            }
            "ManualSessionInitialized" => {
                ChainEvent::ManualSessionInitialized(decode_body(name, body, false)?)
            }
            "EmergencySessionReset" => {
                ChainEvent::EmergencySessionReset(decode_body(name, body, false)?)
            }
            other => ChainEvent::Other(other),
        })
    }

    /// The event's name as the program spells it (PDAComputed so).
    pub fn name(&self) -> &'static str {
        match self {
            ChainEvent::AccountRequested(_) => "AccountRequested",
            ChainEvent::PdaComputed(_) => "PDAComputed",
            ChainEvent::AccountInitialized(_) => "AccountInitialized",
            ChainEvent::SessionCreated(_) => "SessionCreated",
            ChainEvent::SessionActivated(_) => "SessionActivated",
            ChainEvent::SessionConsumed(_) => "SessionConsumed",
            ChainEvent::SessionQueued(_) => "SessionQueued",
            ChainEvent::QueueProcessed(_) => "QueueProcessed",
            ChainEvent::SessionReserved(_) => "SessionReserved",
            ChainEvent::SessionInitializedFromQueue(_) => "SessionInitializedFromQueue",
            ChainEvent::ManualSessionInitialized(_) => "ManualSessionInitialized",
            ChainEvent::EmergencySessionReset(_) => "EmergencySessionReset",
            ChainEvent::Other(name) => name,
        }
    }

    /// Encodes the event as its `sol_log_data` slice (tests and dev tools).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = discriminator("event", self.name()).to_vec();
        let written = match self {
            ChainEvent::AccountRequested(e) => e.serialize(&mut out),
            ChainEvent::PdaComputed(e) => e.serialize(&mut out),
            ChainEvent::AccountInitialized(e) => e.serialize(&mut out),
            ChainEvent::SessionCreated(e) => e.serialize(&mut out),
            ChainEvent::SessionActivated(e) => e.serialize(&mut out),
            ChainEvent::SessionConsumed(e) => e.serialize(&mut out),
            ChainEvent::SessionQueued(e) => e.serialize(&mut out),
            ChainEvent::QueueProcessed(e) => e.serialize(&mut out),
            ChainEvent::SessionReserved(e) => e.serialize(&mut out),
            ChainEvent::SessionInitializedFromQueue(e) => e.serialize(&mut out),
            ChainEvent::ManualSessionInitialized(e) => e.serialize(&mut out),
            ChainEvent::EmergencySessionReset(e) => e.serialize(&mut out),
            ChainEvent::Other(_) => Ok(()),
        };
        written.expect("writing to a Vec cannot fail");
        out
    }
}

/// The `Program data:` payloads that `program_id` itself emitted in a
/// transaction's logs, in order. Lines printed while another program runs
/// (a CPI callee or caller) are not ours and are left out; the invoke/
/// success/failed lines tell who is running.
pub fn program_data(logs: &[String], program_id: &str) -> Vec<Vec<u8>> {
    super::logs::summarize(logs, program_id).events
}

// ----------------------------------------------------------- instructions

/// Instruction data: `sha256("global:<name>")[..8]` then the borsh args.
pub fn instruction_data<T: BorshSerialize>(name: &str, args: &T) -> Vec<u8> {
    let mut out = discriminator("global", name).to_vec();
    args.serialize(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// One new session of `consume_session(new_sessions: Vec<SessionTemplate>)`:
/// indices into the consumed session's accounts, namespace, metadata.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SessionTemplateArg {
    /// Indices into the consumed session's `accounts`.
    pub account_indices: Vec<u8>,
    /// Namespace of the new session.
    pub namespace: String,
    /// Metadata of the new session.
    pub metadata: Vec<u8>,
}

/// One operation of `execute_sync_bundle(operations: Vec<Operation>)`.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BundleOperationArg {
    /// sha256 of the function to call.
    pub function_hash: [u8; 32],
    /// Arguments (the orchestrator sends the UTF-8 bytes of the
    /// substituted args template).
    pub args: Vec<u8>,
}

/// Size of a Session record with `accounts` members, `namespace` and
/// `metadata` (the account a new session is written into).
pub fn session_space(accounts: usize, namespace: &str, metadata: usize) -> usize {
    8 + 32 + 32 + (4 + 32 * accounts) + (4 + namespace.len()) + 1 + 8 + 8 + (4 + metadata)
}

/// Size of a SessionConsumption record listing `created` sessions.
pub fn consumption_space(created: usize) -> usize {
    8 + 32 + (4 + 32 * created) + 64 + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn consume_session_golden_vector() {
        let templates = vec![SessionTemplateArg {
            account_indices: vec![0, 1],
            namespace: "recycled".into(),
            metadata: vec![9],
        }];
        let data = instruction_data("consume_session", &templates);
        let expected = concat!(
            "1c683105ba0d4a8d", // sha256("global:consume_session")[..8]
            "01000000",         // one template
            "02000000",
            "0001", // account_indices
            "08000000",
            "72656379636c6564", // "recycled"
            "01000000",
            "09", // metadata
        );
        assert_eq!(hex::encode(data), expected);
        assert_eq!(
            session_space(2, "recycled", 1),
            8 + 32 + 32 + 68 + 12 + 1 + 8 + 8 + 5
        );
        assert_eq!(consumption_space(1), 8 + 32 + 36 + 64 + 8);
    }

    #[test]
    fn execute_sync_bundle_golden_vector() {
        let ops = vec![BundleOperationArg {
            function_hash: [0xab; 32],
            args: b"s:3".to_vec(),
        }];
        let data = instruction_data("execute_sync_bundle", &ops);
        let expected = format!(
            "{}{}{}{}{}",
            "023a73e21d1cca36", // sha256("global:execute_sync_bundle")[..8]
            "01000000",
            "ab".repeat(32),
            "03000000",
            "733a33"
        );
        assert_eq!(hex::encode(data), expected);
    }

    fn key(n: u8) -> Key {
        [n; 32]
    }

    /// Hand-assembled bytes, field by field, so a change of layout fails here.
    fn le32(n: u32) -> Vec<u8> {
        n.to_le_bytes().to_vec()
    }

    #[test]
    fn discriminators_match_the_program() {
        // Values from server/shard-program/README.md (computed by its generator).
        assert_eq!(
            hex::encode(record_discriminator("AccountRequest")),
            "b9cd73819048a293"
        );
        assert_eq!(
            hex::encode(record_discriminator("Account")),
            "7142e036bc77f065"
        );
        assert_eq!(
            hex::encode(record_discriminator("Session")),
            "f3514873d6bc4890"
        );
        assert_eq!(
            hex::encode(record_discriminator("SessionConsumption")),
            "35f3fc97a15a7b6d"
        );
        assert_eq!(
            hex::encode(discriminator("event", "PDAComputed")),
            "2ccb61b2195f91da"
        );
        assert_eq!(
            hex::encode(discriminator("event", "SessionConsumed")),
            "89ad94756c49a6e2"
        );
        assert_eq!(
            hex::encode(discriminator("global", "initialize_account")),
            "4a73635dc5456707"
        );
        assert_eq!(
            hex::encode(discriminator("global", "consume_session")),
            "1c683105ba0d4a8d"
        );
    }

    #[test]
    fn account_request_golden_vector() {
        let record = Record::AccountRequest(AccountRequestRecord {
            id: key(1),
            owner: key(2),
            capabilities: vec!["transfer".into(), "mint".into()],
            init_state_hash: [9; 32],
            created_at: 1_700_000_000,
            account: key(7),
        });
        let mut expected = hex::decode("b9cd73819048a293").unwrap();
        expected.extend(key(1));
        expected.extend(key(2));
        expected.extend(le32(2));
        expected.extend(le32(8));
        expected.extend(b"transfer");
        expected.extend(le32(4));
        expected.extend(b"mint");
        expected.extend([9; 32]);
        expected.extend(1_700_000_000i64.to_le_bytes());
        expected.extend(key(7));
        assert_eq!(record.encode(), expected);
        let mut padded = expected.clone();
        padded.extend([0; 40]);
        assert_eq!(Record::decode(&padded).unwrap(), record);
    }

    #[test]
    fn account_and_session_golden_vectors() {
        let account = Record::Account(AccountRecord {
            id: key(3),
            owner: key(4),
            capabilities: vec!["admin".into()],
            state_hash: [5; 32],
            is_active: true,
            created_at: -1,
        });
        let mut expected = hex::decode("7142e036bc77f065").unwrap();
        expected.extend(key(3));
        expected.extend(key(4));
        expected.extend(le32(1));
        expected.extend(le32(5));
        expected.extend(b"admin");
        expected.extend([5; 32]);
        expected.push(1);
        expected.extend((-1i64).to_le_bytes());
        assert_eq!(account.encode(), expected);
        assert_eq!(Record::decode(&expected).unwrap(), account);

        let session = Record::Session(SessionRecord {
            id: key(6),
            owner: key(7),
            accounts: vec![key(8), key(9)],
            namespace: "ns".into(),
            is_consumed: false,
            nonce: 3,
            created_at: 10,
            metadata: vec![0xaa, 0xbb],
        });
        let mut expected = hex::decode("f3514873d6bc4890").unwrap();
        expected.extend(key(6));
        expected.extend(key(7));
        expected.extend(le32(2));
        expected.extend(key(8));
        expected.extend(key(9));
        expected.extend(le32(2));
        expected.extend(b"ns");
        expected.push(0);
        expected.extend(3u64.to_le_bytes());
        expected.extend(10i64.to_le_bytes());
        expected.extend(le32(2));
        expected.extend([0xaa, 0xbb]);
        assert_eq!(session.encode(), expected);
        assert_eq!(Record::decode(&expected).unwrap(), session);
    }

    #[test]
    fn consumption_golden_vector() {
        let record = Record::SessionConsumption(SessionConsumptionRecord {
            consumed_session: key(1),
            created_sessions: vec![key(2)],
            transaction_signature: [0; 64],
            consumed_at: 99,
        });
        let mut expected = hex::decode("35f3fc97a15a7b6d").unwrap();
        expected.extend(key(1));
        expected.extend(le32(1));
        expected.extend(key(2));
        expected.extend([0; 64]);
        expected.extend(99i64.to_le_bytes());
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected).unwrap(), record);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(Record::decode(&[1, 2]), Err(DecodeError::TooShort(2)));
        assert!(matches!(
            Record::decode(&[0xff; 64]),
            Err(DecodeError::UnknownDiscriminator(_))
        ));
        let mut truncated = record_discriminator("Session").to_vec();
        truncated.extend([1; 20]);
        assert!(matches!(
            Record::decode(&truncated),
            Err(DecodeError::Malformed {
                kind: "Session",
                ..
            })
        ));
        let mut huge_len = record_discriminator("AccountRequest").to_vec();
        huge_len.extend([0; 64]);
        huge_len.extend(u32::MAX.to_le_bytes());
        assert!(Record::decode(&huge_len).is_err());
        let mut trailing = Record::Account(AccountRecord {
            id: key(1),
            owner: key(1),
            capabilities: vec![],
            state_hash: [0; 32],
            is_active: false,
            created_at: 0,
        })
        .encode();
        trailing.push(7);
        assert!(matches!(
            Record::decode(&trailing),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn events_golden_vectors_and_log_attribution() {
        let event = ChainEvent::PdaComputed(PdaComputedEvent {
            request_id: key(1),
            owner: key(2),
            account_space: 150,
            init_state_hash: [3; 32],
        });
        let mut expected = hex::decode("2ccb61b2195f91da").unwrap();
        expected.extend(key(1));
        expected.extend(key(2));
        expected.extend(150u64.to_le_bytes());
        expected.extend([3; 32]);
        assert_eq!(event.encode(), expected);
        assert_eq!(ChainEvent::decode(&expected).unwrap(), event);

        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let logs = vec![
            "Program Shard111 invoke [1]".to_string(),
            format!("Program data: {}", b64(&expected)),
            "Program Other222 invoke [2]".to_string(),
            format!("Program data: {}", b64(b"not ours")),
            "Program Other222 success".to_string(),
            format!("Program data: {}", b64(&[1, 2, 3])),
            "Program Shard111 success".to_string(),
        ];
        assert_eq!(
            program_data(&logs, "Shard111"),
            vec![expected, vec![1, 2, 3]]
        );
    }

    #[test]
    fn instruction_encoding() {
        #[derive(BorshSerialize)]
        struct Args {
            request_id: Key,
            init_state_data: Vec<u8>,
        }
        let data = instruction_data(
            "initialize_account",
            &Args {
                request_id: key(4),
                init_state_data: vec![1, 2],
            },
        );
        let mut expected = hex::decode("4a73635dc5456707").unwrap();
        expected.extend(key(4));
        expected.extend(le32(2));
        expected.extend([1, 2]);
        assert_eq!(data, expected);
    }
}
