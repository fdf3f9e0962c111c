//! Accounts, account requests, sessions, consumptions and their linear
//! progressions.
//!
//! One writer per record kind: these records come from the chain, and only
//! the chain work of the replica that leads writes them: the monitor
//! (requests, accounts, sessions, consumptions it sees on chain) and the
//! builder (the account it initialized, with its transaction). API calls
//! on any replica never write them: `RequestAccount` places the request on
//! chain and the monitor records it (see `service::accounts`).
//!
//! Every `upsert_*`/`record_*` is idempotent: seeing the same state twice
//! changes nothing and appends nothing, and returns `false`.

use sqlx::{any::AnyRow, Row as _};
use valence_lifecycle_api::v1::{
    self as proto, lifecycle_event::Payload, AccountInitialized, AccountRequested, EventType,
    ProgressionChanged, SessionConsumed, SessionCreated, StateTransition,
};

use super::error::{StoreError, StoreResult};
use super::{
    now_ms,
    rows::{
        count, flag, list, optional_list, optional_unsigned, placeholders, state, u64_bits,
        value_rows,
    },
    CreatedKey, EntityKind, LinearState, NewEvent, RequestStatus, Store, StoredAccount,
    StoredProgression, StoredRequest, StoredSession, StoredTransition, WriteTx,
};

/// An account request as observed or placed.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRequestRecord {
    /// Address of the request record.
    pub id: String,
    /// Future owner.
    pub owner: String,
    /// Requested capabilities.
    pub capabilities: Vec<String>,
    /// Expected initial state hash, hex.
    pub init_state_hash: String,
    /// On-chain creation time, Unix ms.
    pub created_at_ms: i64,
    /// Slot of the transaction that placed it (of the observation when
    /// that is unknown).
    pub slot: Option<u64>,
    /// Signature of the transaction that placed it ("" when unknown).
    pub signature: String,
    /// The Account the on-chain record says this request initialized
    /// (None: not yet, or not known from this observation).
    pub account_id: Option<String>,
}

/// An initialized account as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
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
    /// The request it came from, when known.
    pub request_id: String,
    /// Slot of the observation.
    pub slot: Option<u64>,
    /// Signature of the initializing transaction, when known.
    pub signature: String,
}

/// A session as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
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
    /// Slot of the transaction that created it (of the observation when
    /// that is unknown).
    pub slot: Option<u64>,
    /// Signature of the transaction that created it ("" when unknown).
    pub signature: String,
}

/// A session consumption record as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionRecord {
    /// The consumed session.
    pub consumed_session: String,
    /// Sessions created from it.
    pub created_sessions: Vec<String>,
    /// Signature of the consuming transaction (base58; empty when unknown).
    pub transaction_signature: String,
    /// Consumption time, Unix ms.
    pub consumed_at_ms: i64,
    /// Slot of the observation.
    pub slot: Option<u64>,
}

/// Session list filters.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Include consumed sessions.
    pub include_consumed: bool,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this shard (program id).
    pub shard: Option<String>,
}

/// Counts for GetStats and /stats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Accounts stored.
    pub accounts: u64,
    /// Requests initialized.
    pub accounts_created: u64,
    /// Requests failed.
    pub accounts_failed: u64,
    /// Requests pending or processing.
    pub pending_requests: u64,
    /// Sessions stored.
    pub sessions: u64,
    /// Live sessions.
    pub active_sessions: u64,
    /// Rules stored.
    pub rules: u64,
    /// Events retained.
    pub events: u64,
    /// Highest sequence.
    pub head_sequence: u64,
}

/// What `progression_transitions.from_state` holds for an entity's first
/// step (it came from no state).
const NO_STATE: &str = "unspecified";

/// The stored text of an optional state.
fn state_text(state: Option<LinearState>) -> &'static str {
    state.map_or(NO_STATE, LinearState::as_str)
}

/// Reads an optional state (`unspecified` = none).
fn optional_state(row: &AnyRow, column: &str) -> StoreResult<Option<LinearState>> {
    let text: String = row.try_get(column)?;
    if text == NO_STATE {
        return Ok(None);
    }
    Ok(Some(text.parse::<LinearState>()?))
}

/// A proto state number.
fn proto_state(state: LinearState) -> i32 {
    proto::LinearState::from(state) as i32
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Where a transition comes from.
/// Rows per multi-row INSERT of records (11 parameters at most each).
const ROWS_PER_STATEMENT: usize = 500;

/// What moved an entity: the chain's transaction and why.
pub(super) struct Cause<'a> {
    pub(super) slot: Option<u64>,
    pub(super) signature: &'a str,
    pub(super) reason: &'a str,
    pub(super) namespace: &'a str,
}

/// One row of `progression_transitions`.
struct TransitionRow<'a> {
    entity_id: &'a str,
    from: Option<LinearState>,
    to: LinearState,
    cause: &'a Cause<'a>,
}

/// The first step of a new record's progression.
pub(super) struct FirstStep<'a> {
    entity_id: &'a str,
    kind: EntityKind,
    to: LinearState,
    pub(super) cause: Cause<'a>,
}

impl<'a> FirstStep<'a> {
    /// A request is placed: → ACCOUNT_REQUEST.
    pub(super) fn of_request(r: &'a AccountRequestRecord) -> Self {
        FirstStep {
            entity_id: &r.id,
            kind: EntityKind::Account,
            to: LinearState::AccountRequest,
            cause: Cause {
                slot: r.slot,
                signature: &r.signature,
                reason: "requested",
                namespace: "",
            },
        }
    }

    /// An account is initialized: → ACCOUNT.
    pub(super) fn of_account(a: &'a AccountRecord) -> Self {
        FirstStep {
            entity_id: &a.id,
            kind: EntityKind::Account,
            to: LinearState::Account,
            cause: Cause {
                slot: a.slot,
                signature: &a.signature,
                reason: "initialized",
                namespace: "",
            },
        }
    }

    /// A session is created: → SESSION.
    pub(super) fn of_session(s: &'a SessionRecord) -> Self {
        FirstStep {
            entity_id: &s.id,
            kind: EntityKind::Session,
            to: LinearState::Session,
            cause: Cause {
                slot: s.slot,
                signature: &s.signature,
                reason: "session created",
                namespace: &s.namespace,
            },
        }
    }

    /// Its StateTransition event (from nothing).
    pub(super) fn event(&self) -> NewEvent {
        transition_event(self.entity_id, self.kind, None, self.to, &self.cause)
    }
}

/// StateTransition of `entity_id` from `from` to `to`.
fn transition_event(
    entity_id: &str,
    kind: EntityKind,
    from: Option<LinearState>,
    to: LinearState,
    cause: &Cause<'_>,
) -> NewEvent {
    let payload = Payload::StateTransition(StateTransition {
        entity_id: entity_id.to_string(),
        kind: proto::EntityKind::from(kind) as i32,
        from_state: from.map_or(0, proto_state),
        to_state: proto_state(to),
    });
    NewEvent::new(entity_id, payload)
        .in_namespace(cause.namespace)
        .on_chain(cause.slot, cause.signature)
}

/// AccountRequested of a new request.
pub(super) fn requested_event(r: &AccountRequestRecord) -> NewEvent {
    let payload = Payload::AccountRequested(AccountRequested {
        request_id: r.id.clone(),
        owner: r.owner.clone(),
        capabilities: r.capabilities.clone(),
        init_state_hash: r.init_state_hash.clone(),
    });
    NewEvent::new(&r.id, payload).on_chain(r.slot, &r.signature)
}

/// AccountInitialized of a new account.
pub(super) fn initialized_event(a: &AccountRecord) -> NewEvent {
    let payload = Payload::AccountInitialized(AccountInitialized {
        account_id: a.id.clone(),
        request_id: a.request_id.clone(),
        owner: a.owner.clone(),
        state_hash: a.state_hash.clone(),
    });
    NewEvent::new(&a.id, payload).on_chain(a.slot, a.signature.clone())
}

/// SessionCreated of a new session.
pub(super) fn created_event(s: &SessionRecord) -> NewEvent {
    let payload = Payload::SessionCreated(SessionCreated {
        session_id: s.id.clone(),
        owner: s.owner.clone(),
        accounts: s.accounts.clone(),
        namespace: s.namespace.clone(),
        nonce: s.nonce,
    });
    NewEvent::new(&s.id, payload)
        .in_namespace(&s.namespace)
        .on_chain(s.slot, &s.signature)
}

impl Store {
    /// Records an account request; new ones start their progression and
    /// append AccountRequested.
    pub async fn upsert_account_request(&self, r: &AccountRequestRecord) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = self.upsert_account_request_in(&mut tx, r).await;
        self.finish(tx, changed).await
    }

    /// [`Self::upsert_account_request`] inside `tx` (nothing written when it returns false).
    pub(crate) async fn upsert_account_request_in(
        &self,
        tx: &mut WriteTx<'_>,
        r: &AccountRequestRecord,
    ) -> StoreResult<bool> {
        self.lock_entity(tx, &r.id).await?;
        let exists = sqlx::query("SELECT 1 FROM account_requests WHERE id = $1")
            .bind(&r.id)
            .fetch_optional(tx.conn())
            .await?
            .is_some();
        let mut changed = false;
        if !exists {
            self.insert_request(tx, r).await?;
            changed = true;
        }
        if let Some(account) = &r.account_id {
            changed |= self.adopt_chain_link(tx, r, account).await?;
        }
        Ok(changed)
    }

    /// A request seen for the first time: PENDING, AccountRequested and
    /// its first transition.
    async fn insert_request(
        &self,
        tx: &mut WriteTx<'_>,
        r: &AccountRequestRecord,
    ) -> StoreResult<()> {
        self.insert_request_rows(tx, &[r]).await?;
        self.append_event(tx, requested_event(r)).await?;
        let step = FirstStep::of_request(r);
        self.transition(tx, &r.id, step.kind, step.to, &step.cause)
            .await
    }

    /// New requests' rows, PENDING, in one statement.
    pub(super) async fn insert_request_rows(
        &self,
        tx: &mut WriteTx<'_>,
        requests: &[&AccountRequestRecord],
    ) -> StoreResult<()> {
        let now = now_ms();
        for chunk in requests.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO account_requests (id, owner, capabilities, init_state_hash, status, created_at, updated_at, slot, shard) VALUES {}",
                value_rows(self.backend, chunk.len(), 9)
            );
            let mut insert = sqlx::query(&sql);
            for r in chunk {
                insert = insert
                    .bind(r.id.clone())
                    .bind(r.owner.clone())
                    .bind(json_list(&r.capabilities))
                    .bind(r.init_state_hash.clone())
                    .bind(RequestStatus::Pending.as_str())
                    .bind(r.created_at_ms)
                    .bind(now)
                    .bind(r.slot.map(|s| s as i64))
                    .bind(self.shard_tag().to_string());
            }
            insert.execute(tx.conn()).await?;
        }
        Ok(())
    }

    /// The chain says request `r` initialized `account`: the request is
    /// INITIALIZED whatever this store believed (another wallet, or an
    /// earlier deployment, may have done it; a crash may have hidden it),
    /// and a stored account without a request learns it. Guarded, so
    /// seeing it again changes nothing. Returns whether anything changed.
    async fn adopt_chain_link(
        &self,
        tx: &mut WriteTx<'_>,
        r: &AccountRequestRecord,
        account: &str,
    ) -> StoreResult<bool> {
        let changed = sqlx::query(
            "UPDATE account_requests SET status = $1, account_id = $2, failure_reason = '', updated_at = $3 \
             WHERE id = $4 AND status <> $1",
        )
        .bind(RequestStatus::Initialized.as_str())
        .bind(account)
        .bind(now_ms())
        .bind(&r.id)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        let linked = sqlx::query("UPDATE accounts SET request_id = $1, updated_at = $2 WHERE id = $3 AND request_id = ''")
            .bind(&r.id)
            .bind(now_ms())
            .bind(account)
            .execute(tx.conn())
            .await?
            .rows_affected();
        if linked > 0 {
            self.continue_from_request(tx, account).await?;
        }
        let cause = Cause {
            slot: r.slot,
            signature: "",
            reason: "initialized",
            namespace: "",
        };
        self.transition(tx, &r.id, EntityKind::Account, LinearState::Account, &cause)
            .await?;
        Ok(true)
    }

    /// Records an initialized account; new ones mark their request
    /// initialized and append AccountInitialized.
    pub async fn upsert_account(&self, a: &AccountRecord) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = self.upsert_account_in(&mut tx, a).await;
        self.finish(tx, changed).await
    }

    /// [`Self::upsert_account`] inside `tx` (nothing written when it returns false).
    pub(crate) async fn upsert_account_in(
        &self,
        tx: &mut WriteTx<'_>,
        a: &AccountRecord,
    ) -> StoreResult<bool> {
        self.lock_entity(tx, &a.id).await?;
        // The record alone does not name its request; the builder noted
        // the address it initializes, so whoever records it first links it.
        let resolved;
        let a = if a.request_id.is_empty() {
            match self.request_for_account(tx, &a.id).await? {
                Some((request_id, signature)) => {
                    let signature = if a.signature.is_empty() {
                        signature
                    } else {
                        a.signature.clone()
                    };
                    resolved = AccountRecord {
                        request_id,
                        signature,
                        ..a.clone()
                    };
                    &resolved
                }
                None => a,
            }
        } else {
            a
        };
        let stored = sqlx::query("SELECT state_hash, CAST(is_active AS INTEGER) AS is_active, request_id FROM accounts WHERE id = $1")
            .bind(&a.id)
            .fetch_optional(tx.conn())
            .await?;
        if let Some(row) = stored {
            let hash: String = row.try_get("state_hash")?;
            let active = flag(&row, "is_active")?;
            let linked: String = row.try_get("request_id")?;
            if linked.is_empty() && !a.request_id.is_empty() {
                // The record alone does not name its request; the
                // AccountInitialized event does, and may arrive later.
                self.link_request(tx, a).await?;
                return Ok(true);
            }
            // Linked, but its request may not say so (a failure recorded
            // by a run that crashed, an older version): repair it here,
            // guarded, so a restart that finds the account ends the request.
            let mut repaired = !linked.is_empty() && self.repair_request(tx, &linked, a).await?;
            if !a.signature.is_empty() {
                // Linked from the request's on-chain record, which names no
                // transaction; the event or the builder does.
                repaired |= self.name_transaction(tx, a).await?;
            }
            if hash == a.state_hash && active == a.is_active {
                return Ok(repaired);
            }
            sqlx::query("UPDATE accounts SET state_hash = $1, is_active = $2, updated_at = $3, slot = $4 WHERE id = $5")
                .bind(&a.state_hash)
                .bind(a.is_active)
                .bind(now_ms())
                .bind(a.slot.map(|s| s as i64))
                .bind(&a.id)
                .execute(tx.conn())
                .await?;
            return Ok(true);
        }
        self.insert_account(tx, a).await?;
        Ok(true)
    }

    async fn insert_account(&self, tx: &mut WriteTx<'_>, a: &AccountRecord) -> StoreResult<()> {
        self.insert_account_rows(tx, &[a]).await?;
        let step = FirstStep::of_account(a);
        if !a.request_id.is_empty() {
            self.mark_request_initialized(tx, a, &step.cause).await?;
        }
        self.append_event(tx, initialized_event(a)).await?;
        let continues = (!a.request_id.is_empty()).then_some(LinearState::AccountRequest);
        self.transition_continuing(tx, &a.id, step.kind, continues, step.to, &step.cause)
            .await
    }

    /// New accounts' rows, in state ACCOUNT, in one statement.
    pub(super) async fn insert_account_rows(
        &self,
        tx: &mut WriteTx<'_>,
        accounts: &[&AccountRecord],
    ) -> StoreResult<()> {
        let now = now_ms();
        for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO accounts (id, owner, capabilities, state_hash, is_active, created_at, updated_at, state, request_id, slot, shard) VALUES {}",
                value_rows(self.backend, chunk.len(), 11)
            );
            let mut insert = sqlx::query(&sql);
            for a in chunk {
                insert = insert
                    .bind(a.id.clone())
                    .bind(a.owner.clone())
                    .bind(json_list(&a.capabilities))
                    .bind(a.state_hash.clone())
                    .bind(a.is_active)
                    .bind(a.created_at_ms)
                    .bind(now)
                    .bind(LinearState::Account.as_str())
                    .bind(a.request_id.clone())
                    .bind(a.slot.map(|s| s as i64))
                    .bind(self.shard_tag().to_string());
            }
            insert.execute(tx.conn()).await?;
        }
        Ok(())
    }

    /// Marks `a`'s request INITIALIZED (guarded: a request already
    /// initialized keeps its record and gets no second transition).
    async fn mark_request_initialized(
        &self,
        tx: &mut WriteTx<'_>,
        a: &AccountRecord,
        cause: &Cause<'_>,
    ) -> StoreResult<bool> {
        let changed = sqlx::query(
            "UPDATE account_requests SET status = $1, account_id = $2, signature = $3, updated_at = $4, failure_reason = '' \
             WHERE id = $5 AND status <> $1",
        )
        .bind(RequestStatus::Initialized.as_str())
        .bind(&a.id)
        .bind(&a.signature)
        .bind(now_ms())
        .bind(&a.request_id)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        self.transition(
            tx,
            &a.request_id,
            EntityKind::Account,
            LinearState::Account,
            cause,
        )
        .await?;
        Ok(true)
    }

    /// Ends request `request_id`, whose account `a` is stored and linked
    /// to it, if the request does not say INITIALIZED yet.
    async fn repair_request(
        &self,
        tx: &mut WriteTx<'_>,
        request_id: &str,
        a: &AccountRecord,
    ) -> StoreResult<bool> {
        let linked = AccountRecord {
            request_id: request_id.to_string(),
            ..a.clone()
        };
        let cause = Cause {
            slot: a.slot,
            signature: &a.signature,
            reason: "initialized",
            namespace: "",
        };
        let repaired = self.mark_request_initialized(tx, &linked, &cause).await?;
        if repaired {
            tracing::info!(request = %request_id, account = %a.id, "request repaired: its account was already recorded");
        }
        Ok(repaired)
    }

    /// Names the initializing transaction in the ACCOUNT transitions of
    /// account `a` and of its request, when they were recorded without one,
    /// with the slot it landed in (an observation's slot can be older: a
    /// pass reads the slot before the accounts).
    /// Returns whether it did.
    async fn name_transaction(&self, tx: &mut WriteTx<'_>, a: &AccountRecord) -> StoreResult<bool> {
        let changed = sqlx::query(
            "UPDATE progression_transitions SET signature = $1, slot = COALESCE($2, slot) \
             WHERE entity_id IN ($3, $5) AND to_state = $4 AND signature = ''",
        )
        .bind(&a.signature)
        .bind(a.slot.map(|s| s as i64))
        .bind(&a.id)
        .bind(LinearState::Account.as_str())
        .bind(&a.request_id)
        .execute(tx.conn())
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Links a stored account to its request, learned after the account,
    /// and names the initializing transaction in its first transition.
    async fn link_request(&self, tx: &mut WriteTx<'_>, a: &AccountRecord) -> StoreResult<()> {
        sqlx::query("UPDATE accounts SET request_id = $1, updated_at = $2 WHERE id = $3")
            .bind(&a.request_id)
            .bind(now_ms())
            .bind(&a.id)
            .execute(tx.conn())
            .await?;
        self.name_transaction(tx, a).await?;
        self.continue_from_request(tx, &a.id).await?;
        let cause = Cause {
            slot: a.slot,
            signature: &a.signature,
            reason: "initialized",
            namespace: "",
        };
        self.mark_request_initialized(tx, a, &cause).await?;
        self.relate_initialization(tx, a).await
    }

    /// The AccountInitialized appended when the account was recorded
    /// without its request is about that request too: the log is never
    /// rewritten, so the relation is added for the entity filters
    /// (`ListEvents(entity_id = request)` must show the initialization).
    async fn relate_initialization(
        &self,
        tx: &mut WriteTx<'_>,
        a: &AccountRecord,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO event_entities (entity_id, sequence) \
             SELECT $1, sequence FROM lifecycle_events WHERE entity_id = $2 AND event_type = $3 \
             ON CONFLICT DO NOTHING",
        )
        .bind(&a.request_id)
        .bind(&a.id)
        .bind(valence_lifecycle_api::json::short_name::<EventType>(
            EventType::AccountInitialized as i32,
        ))
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// An account recorded before its request was known started its
    /// progression from nothing; now that it has a request, its first step
    /// continues the request's (ACCOUNT_REQUEST → ACCOUNT).
    async fn continue_from_request(&self, tx: &mut WriteTx<'_>, account: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE progression_transitions SET from_state = $1 \
             WHERE entity_id = $2 AND to_state = $3 AND from_state = $4",
        )
        .bind(LinearState::AccountRequest.as_str())
        .bind(account)
        .bind(LinearState::Account.as_str())
        .bind(NO_STATE)
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// Fills in the consuming transaction's signature, which the on-chain
    /// record cannot hold; no-op when already known. Returns whether it changed.
    pub async fn set_consumption_signature(
        &self,
        session: &str,
        signature: &str,
    ) -> StoreResult<bool> {
        // A transaction of its own, so a stale chain-work writer is fenced.
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE session_consumptions SET transaction_signature = $1 WHERE consumed_session = $2 AND transaction_signature = ''",
        )
        .bind(signature)
        .bind(session)
        .execute(tx.conn())
        .await
        .map(|done| done.rows_affected() > 0)
        .map_err(Into::into);
        self.finish(tx, changed).await
    }

    /// Records a session; new ones move their accounts InSession and append
    /// SessionCreated; a stored session seen consumed is marked consumed.
    pub async fn upsert_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = self.upsert_session_in(&mut tx, s).await;
        self.finish(tx, changed).await
    }

    /// [`Self::upsert_session`] inside `tx` (nothing written when it returns false).
    pub(crate) async fn upsert_session_in(
        &self,
        tx: &mut WriteTx<'_>,
        s: &SessionRecord,
    ) -> StoreResult<bool> {
        self.lock_entity(tx, &s.id).await?;
        let stored = sqlx::query(
            "SELECT CAST(is_consumed AS INTEGER) AS is_consumed, state FROM sessions WHERE id = $1",
        )
        .bind(&s.id)
        .fetch_optional(tx.conn())
        .await?;
        let changed = match stored {
            Some(row) => {
                let reserved: LinearState = state(&row, "state")?;
                if matches!(
                    reserved,
                    LinearState::ReservedSession | LinearState::QueuedSession
                ) {
                    self.promote_reservation(tx, s).await?;
                    return Ok(true);
                }
                let consumed = flag(&row, "is_consumed")?;
                if consumed || !s.is_consumed {
                    return Ok(false);
                }
                self.mark_consumed(tx, &s.id, &[], "", s.slot).await?;
                true
            }
            None => {
                self.insert_session(tx, s).await?;
                true
            }
        };
        Ok(changed)
    }

    async fn insert_session(&self, tx: &mut WriteTx<'_>, s: &SessionRecord) -> StoreResult<()> {
        self.insert_session_rows(tx, &[s]).await?;
        self.append_event(tx, created_event(s)).await?;
        let step = FirstStep::of_session(s);
        self.transition(tx, &s.id, step.kind, step.to, &step.cause)
            .await?;
        self.take_into_session(tx, s).await?;
        if s.is_consumed {
            self.mark_consumed(tx, &s.id, &[], "", s.slot).await?;
        }
        Ok(())
    }

    /// New sessions' rows, live, in one statement.
    pub(super) async fn insert_session_rows(
        &self,
        tx: &mut WriteTx<'_>,
        sessions: &[&SessionRecord],
    ) -> StoreResult<()> {
        let now = now_ms();
        for chunk in sessions.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO sessions (id, owner, accounts, namespace, is_consumed, nonce, created_at, metadata, state, last_activity_at, slot, shard) VALUES {}",
                value_rows(self.backend, chunk.len(), 12)
            );
            let mut insert = sqlx::query(&sql);
            for s in chunk {
                insert = insert
                    .bind(s.id.clone())
                    .bind(s.owner.clone())
                    .bind(json_list(&s.accounts))
                    .bind(s.namespace.clone())
                    .bind(false)
                    .bind(s.nonce as i64) // by its bits: see rows::u64_bits
                    .bind(s.created_at_ms)
                    .bind(s.metadata.clone())
                    .bind(LinearState::Session.as_str())
                    .bind(now)
                    .bind(s.slot.map(|v| v as i64))
                    .bind(self.shard_tag().to_string());
            }
            insert.execute(tx.conn()).await?;
        }
        Ok(())
    }

    /// A new session's accounts move into it (those stored, in ACCOUNT).
    pub(super) async fn take_into_session(
        &self,
        tx: &mut WriteTx<'_>,
        s: &SessionRecord,
    ) -> StoreResult<()> {
        let cause = FirstStep::of_session(s).cause;
        for account in &s.accounts {
            self.move_account(
                tx,
                account,
                LinearState::Account,
                LinearState::InSession,
                &cause,
            )
            .await?;
        }
        Ok(())
    }

    /// Progressions that start here (none stored for these entities yet):
    /// their rows and first transitions, two statements for all of them.
    /// The StateTransition events are the caller's ([`FirstStep::event`]),
    /// so that they interleave with the records' own.
    pub(super) async fn insert_first_steps(
        &self,
        tx: &mut WriteTx<'_>,
        steps: &[FirstStep<'_>],
    ) -> StoreResult<()> {
        let now = now_ms();
        for chunk in steps.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO linear_progressions (current_state, updated_at, entity_id, kind, shard) VALUES {}",
                value_rows(self.backend, chunk.len(), 5)
            );
            let mut insert = sqlx::query(&sql);
            for step in chunk {
                insert = insert
                    .bind(step.to.as_str())
                    .bind(now)
                    .bind(step.entity_id.to_string())
                    .bind(step.kind.as_str())
                    .bind(self.shard_tag().to_string());
            }
            insert.execute(tx.conn()).await?;
            let rows: Vec<TransitionRow> = chunk
                .iter()
                .map(|step| TransitionRow {
                    entity_id: step.entity_id,
                    from: None,
                    to: step.to,
                    cause: &step.cause,
                })
                .collect();
            self.insert_transition_rows(tx, &rows, now).await?;
        }
        Ok(())
    }

    /// Rows of `progression_transitions`, in one statement.
    async fn insert_transition_rows(
        &self,
        tx: &mut WriteTx<'_>,
        rows: &[TransitionRow<'_>],
        at: i64,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO progression_transitions (entity_id, from_state, to_state, at, slot, signature, reason) VALUES {}",
            value_rows(self.backend, rows.len(), 7)
        );
        let mut insert = sqlx::query(&sql);
        for row in rows {
            insert = insert
                .bind(row.entity_id.to_string())
                .bind(state_text(row.from))
                .bind(row.to.as_str())
                .bind(at)
                .bind(row.cause.slot.map(|s| s as i64))
                .bind(row.cause.signature.to_string())
                .bind(row.cause.reason);
        }
        insert.execute(tx.conn()).await?;
        Ok(())
    }

    /// Records a consumption; consumes the session if not yet and links it
    /// to the sessions it created.
    pub async fn record_consumption(&self, c: &ConsumptionRecord) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let changed = self.record_consumption_in(&mut tx, c).await;
        self.finish(tx, changed).await
    }

    /// [`Self::record_consumption`] inside `tx` (nothing written when it returns false).
    pub(crate) async fn record_consumption_in(
        &self,
        tx: &mut WriteTx<'_>,
        c: &ConsumptionRecord,
    ) -> StoreResult<bool> {
        self.lock_entity(tx, &c.consumed_session).await?;
        let exists = sqlx::query("SELECT 1 FROM session_consumptions WHERE consumed_session = $1")
            .bind(&c.consumed_session)
            .fetch_optional(tx.conn())
            .await?
            .is_some();
        if exists {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO session_consumptions (consumed_session, created_sessions, transaction_signature, consumed_at, slot) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.consumed_session)
        .bind(json_list(&c.created_sessions))
        .bind(&c.transaction_signature)
        .bind(c.consumed_at_ms)
        .bind(c.slot.map(|s| s as i64))
        .execute(tx.conn())
        .await?;
        let live = sqlx::query(
            "SELECT CAST(is_consumed AS INTEGER) AS is_consumed FROM sessions WHERE id = $1",
        )
        .bind(&c.consumed_session)
        .fetch_optional(tx.conn())
        .await?
        .map(|row| flag(&row, "is_consumed"))
        .transpose()?
            == Some(false);
        if live {
            self.mark_consumed(
                tx,
                &c.consumed_session,
                &c.created_sessions,
                &c.transaction_signature,
                c.slot,
            )
            .await?;
        }
        let payload = Payload::ProgressionChanged(ProgressionChanged {
            entity_id: c.consumed_session.clone(),
            successors: c.created_sessions.clone(),
        });
        let event = NewEvent::new(&c.consumed_session, payload)
            .on_chain(c.slot, c.transaction_signature.clone());
        self.append_event(tx, event).await?;
        Ok(true)
    }

    pub(super) async fn mark_consumed(
        &self,
        tx: &mut WriteTx<'_>,
        session_id: &str,
        created: &[String],
        signature: &str,
        slot: Option<u64>,
    ) -> StoreResult<()> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE sessions SET is_consumed = $1, state = $2, consumed_at = $3, last_activity_at = $3 WHERE id = $4 \
             RETURNING accounts, namespace",
        )
        .bind(true)
        .bind(LinearState::ConsumedSession.as_str())
        .bind(now)
        .bind(session_id)
        .fetch_one(tx.conn())
        .await?;
        let accounts = list(&row, "accounts")?;
        let namespace: String = row.try_get("namespace")?;
        let payload = Payload::SessionConsumed(SessionConsumed {
            session_id: session_id.to_string(),
            created_sessions: created.to_vec(),
            transaction_signature: signature.to_string(),
        });
        let event = NewEvent::new(session_id, payload)
            .in_namespace(&namespace)
            .on_chain(slot, signature);
        self.append_event(tx, event).await?;
        let cause = Cause {
            slot,
            signature,
            reason: "session consumed",
            namespace: &namespace,
        };
        self.transition(
            tx,
            session_id,
            EntityKind::Session,
            LinearState::ConsumedSession,
            &cause,
        )
        .await?;
        for account in accounts {
            self.move_account(
                tx,
                &account,
                LinearState::InSession,
                LinearState::ConsumedSession,
                &cause,
            )
            .await?;
        }
        Ok(())
    }

    /// Moves a stored account from `from` to `to`; accounts not stored or in
    /// another state are left alone.
    async fn move_account(
        &self,
        tx: &mut WriteTx<'_>,
        account: &str,
        from: LinearState,
        to: LinearState,
        cause: &Cause<'_>,
    ) -> StoreResult<()> {
        let moved = sqlx::query(
            "UPDATE accounts SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(now_ms())
        .bind(account)
        .bind(from.as_str())
        .execute(tx.conn())
        .await?
        .rows_affected();
        if moved > 0 {
            self.transition(tx, account, EntityKind::Account, to, cause)
                .await?;
        }
        Ok(())
    }

    /// Moves an entity's progression to `to` (no-op when already there),
    /// recording the transition and appending StateTransition.
    pub(super) async fn transition(
        &self,
        tx: &mut WriteTx<'_>,
        entity_id: &str,
        kind: EntityKind,
        to: LinearState,
        cause: &Cause<'_>,
    ) -> StoreResult<()> {
        self.transition_continuing(tx, entity_id, kind, None, to, cause)
            .await
    }

    /// [`Self::transition`] for an entity that continues another's
    /// progression: with no progression of its own yet, its first step
    /// starts from `continues` (an account continues its request's, so its
    /// history reads ACCOUNT_REQUEST → ACCOUNT, not UNSPECIFIED → ACCOUNT).
    async fn transition_continuing(
        &self,
        tx: &mut WriteTx<'_>,
        entity_id: &str,
        kind: EntityKind,
        continues: Option<LinearState>,
        to: LinearState,
        cause: &Cause<'_>,
    ) -> StoreResult<()> {
        let current =
            sqlx::query("SELECT current_state FROM linear_progressions WHERE entity_id = $1")
                .bind(entity_id)
                .fetch_optional(tx.conn())
                .await?
                .map(|row| state::<LinearState>(&row, "current_state"))
                .transpose()?;
        let from = current.or(continues);
        if from == Some(to) {
            return Ok(());
        }
        let now = now_ms();
        let upsert = if current.is_some() {
            "UPDATE linear_progressions SET current_state = $1, updated_at = $2 WHERE entity_id = $3 AND kind = $4"
        } else {
            "INSERT INTO linear_progressions (current_state, updated_at, entity_id, kind, shard) VALUES ($1, $2, $3, $4, $5)"
        };
        let mut query = sqlx::query(upsert)
            .bind(to.as_str())
            .bind(now)
            .bind(entity_id)
            .bind(kind.as_str());
        if current.is_none() {
            query = query.bind(self.shard_tag());
        }
        query.execute(tx.conn()).await?;
        let row = TransitionRow {
            entity_id,
            from,
            to,
            cause,
        };
        self.insert_transition_rows(tx, &[row], now).await?;
        self.append_event(tx, transition_event(entity_id, kind, from, to, cause))
            .await?;
        Ok(())
    }
}

/// `(created_at, id) < ($n, $n+1)` over the columns of `table.`: the rows
/// after a key in newest-first order (a row value, so both backends scan
/// the `created_at, id` index from the key on).
fn after_key(table: &str, n: usize) -> String {
    format!("({table}created_at, {table}id) < (${n}, ${})", n + 1)
}

/// `WHERE a AND b ...`, or nothing.
fn where_all(clauses: &[String]) -> String {
    if clauses.is_empty() {
        return String::new();
    }
    format!("WHERE {}", clauses.join(" AND "))
}

const REQUEST_COLUMNS: &str = "id, owner, capabilities, init_state_hash, status, failure_reason, attempts, created_at, updated_at, signature, account_id, shard";
const ACCOUNT_COLUMNS: &str =
    "id, owner, capabilities, state_hash, CAST(is_active AS INTEGER) AS is_active, created_at, state, request_id, shard";
const SESSION_COLUMNS: &str =
    "s.id, s.owner, s.accounts, s.namespace, CAST(s.is_consumed AS INTEGER) AS is_consumed, s.nonce, s.created_at, s.metadata, s.state, s.last_activity_at, s.consumed_at, c.created_sessions, s.shard";

impl Store {
    /// How many requests are in one of `statuses`.
    async fn requests_in(&self, statuses: &[RequestStatus]) -> StoreResult<u64> {
        let sql = format!(
            "SELECT COUNT(*) FROM account_requests WHERE status IN ({})",
            placeholders(statuses.len())
        );
        let mut query = sqlx::query(&sql);
        for status in statuses {
            query = query.bind(status.as_str());
        }
        let row = query.fetch_one(&self.pool).await?;
        let n: i64 = row.try_get(0)?;
        Ok(n.max(0) as u64)
    }

    /// One account.
    pub async fn get_account(&self, id: &str) -> StoreResult<StoredAccount> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("account", id))?;
        decode_account(&row)
    }

    /// Accounts, newest first: at most `limit`, those after `after` when given.
    pub async fn list_accounts(
        &self,
        owner: Option<&str>,
        shard: Option<&str>,
        after: Option<&CreatedKey>,
        limit: u32,
    ) -> StoreResult<Vec<StoredAccount>> {
        let filter = [("shard", shard), ("owner", owner)];
        self.newest_first(
            ACCOUNT_COLUMNS,
            "accounts",
            filter,
            after,
            limit,
            decode_account,
        )
        .await
    }

    /// One account request.
    pub async fn get_account_request(&self, id: &str) -> StoreResult<StoredRequest> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM account_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("account request", id))?;
        decode_request(&row)
    }

    /// Account requests, newest first: at most `limit`, those after
    /// `after` when given.
    pub async fn list_account_requests(
        &self,
        status: Option<RequestStatus>,
        shard: Option<&str>,
        after: Option<&CreatedKey>,
        limit: u32,
    ) -> StoreResult<Vec<StoredRequest>> {
        let filter = [("shard", shard), ("status", status.map(|st| st.as_str()))];
        self.newest_first(
            REQUEST_COLUMNS,
            "account_requests",
            filter,
            after,
            limit,
            decode_request,
        )
        .await
    }

    /// A page of `table`, newest first, where each `column = value` of the
    /// filter that has a value, starting after `after`. The `(shard,)
    /// (column,) created_at, id` indexes (migrations 0006, 0008) make it a
    /// range scan.
    async fn newest_first<T>(
        &self,
        columns: &str,
        table: &str,
        filter: [(&str, Option<&str>); 2],
        after: Option<&CreatedKey>,
        limit: u32,
        decode: fn(&AnyRow) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let set: Vec<(&str, &str)> = filter
            .iter()
            .filter_map(|(column, value)| value.map(|v| (*column, v)))
            .collect();
        let mut clauses: Vec<String> = set
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{column} = ${}", i + 2))
            .collect();
        if after.is_some() {
            clauses.push(after_key("", 2 + set.len()));
        }
        let sql = format!(
            "SELECT {columns} FROM {table} {} ORDER BY created_at DESC, id DESC LIMIT $1",
            where_all(&clauses)
        );
        let mut query = sqlx::query(&sql).bind(i64::from(limit));
        for (_, value) in set {
            query = query.bind(value.to_string());
        }
        if let Some(key) = after {
            query = query.bind(key.created_at_ms).bind(key.id.clone());
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// One session.
    pub async fn get_session(&self, id: &str) -> StoreResult<StoredSession> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s LEFT JOIN session_consumptions c ON c.consumed_session = s.id WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("session", id))?;
        decode_session(&row)
    }

    /// Sessions, newest first: at most `limit`, those after `after` when given.
    pub async fn list_sessions(
        &self,
        filter: &SessionFilter,
        after: Option<&CreatedKey>,
        limit: u32,
    ) -> StoreResult<Vec<StoredSession>> {
        let mut clauses = Vec::new();
        let mut n = 1;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if !filter.include_consumed {
            clauses.push(format!("s.is_consumed = {}", param()));
        }
        if filter.owner.is_some() {
            clauses.push(format!("s.owner = {}", param()));
        }
        if filter.namespace.is_some() {
            clauses.push(format!("s.namespace = {}", param()));
        }
        if filter.shard.is_some() {
            clauses.push(format!("s.shard = {}", param()));
        }
        if after.is_some() {
            clauses.push(after_key("s.", n + 1));
        }
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s LEFT JOIN session_consumptions c ON c.consumed_session = s.id \
             {} ORDER BY s.created_at DESC, s.id DESC LIMIT $1",
            where_all(&clauses)
        );
        let mut query = sqlx::query(&sql).bind(i64::from(limit));
        if !filter.include_consumed {
            query = query.bind(false);
        }
        if let Some(owner) = &filter.owner {
            query = query.bind(owner.clone());
        }
        if let Some(namespace) = &filter.namespace {
            query = query.bind(namespace.clone());
        }
        if let Some(shard) = &filter.shard {
            query = query.bind(shard.clone());
        }
        if let Some(key) = after {
            query = query.bind(key.created_at_ms).bind(key.id.clone());
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode_session)
            .collect()
    }

    /// An entity's progression. For an account created from a request, the
    /// request's steps come first, so the history starts at AccountRequest.
    pub async fn get_progression(&self, entity_id: &str) -> StoreResult<StoredProgression> {
        let row =
            sqlx::query("SELECT kind, current_state FROM linear_progressions WHERE entity_id = $1")
                .bind(entity_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::not_found("progression", entity_id))?;
        let kind: EntityKind = state(&row, "kind")?;
        let current: LinearState = state(&row, "current_state")?;
        let request_id: Option<String> =
            sqlx::query("SELECT request_id FROM accounts WHERE id = $1")
                .bind(entity_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("request_id"))
                .transpose()?
                .filter(|id: &String| !id.is_empty());
        let mut history = Vec::new();
        if let Some(request) = &request_id {
            // The request's own last step (to Account) duplicates the account's first.
            let mut steps = self.transitions(request).await?;
            steps.retain(|t| t.to != LinearState::Account);
            history.extend(steps);
        }
        history.extend(self.transitions(entity_id).await?);
        // One timeline: every step after the first starts where the one
        // before it ended (the request's steps, then the account's).
        for i in 1..history.len() {
            history[i].from = Some(history[i - 1].to);
        }
        Ok(StoredProgression {
            entity_id: entity_id.to_string(),
            kind,
            current_state: current,
            history,
        })
    }

    async fn transitions(&self, entity_id: &str) -> StoreResult<Vec<StoredTransition>> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, at, slot, signature, reason FROM progression_transitions WHERE entity_id = $1 ORDER BY id",
        )
        .bind(entity_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredTransition {
                    from: optional_state(row, "from_state")?,
                    to: state(row, "to_state")?,
                    at_ms: row.try_get("at")?,
                    slot: optional_unsigned(row, "slot")?,
                    signature: row.try_get("signature")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Counts for statistics.
    ///
    /// Counting is done again only when the event log moved since the last
    /// call (two index lookups tell): on an idle or read-mostly server
    /// GetStats, `/stats` and `/metrics` cost no table scans, and the
    /// answer is still exact.
    pub async fn stats(&self) -> StoreResult<StoreStats> {
        let bounds = self.log_bounds().await?;
        // One caller counts while the others wait for its answer.
        let mut cache = self.stats_cache.lock().await;
        if let Some((at, stats)) = cache.as_ref() {
            if *at == bounds {
                return Ok(stats.clone());
            }
        }
        let fresh = self.count_stats(bounds.0).await?;
        *cache = Some((bounds, fresh.clone()));
        Ok(fresh)
    }

    async fn count_stats(&self, head_sequence: u64) -> StoreResult<StoreStats> {
        let total = |sql: &'static str| self.scalar_u64(sql);
        Ok(StoreStats {
            accounts: total("SELECT COUNT(*) FROM accounts").await?,
            accounts_created: self.requests_in(&[RequestStatus::Initialized]).await?,
            accounts_failed: self.requests_in(&[RequestStatus::Failed]).await?,
            pending_requests: self
                .requests_in(&[RequestStatus::Pending, RequestStatus::Processing])
                .await?,
            sessions: total("SELECT COUNT(*) FROM sessions").await?,
            active_sessions: total("SELECT COUNT(*) FROM sessions WHERE is_consumed = FALSE AND state IN ('session', 'active_session')")
                .await?,
            rules: total("SELECT COUNT(*) FROM progression_rules").await?,
            events: total("SELECT COUNT(*) FROM lifecycle_events").await?,
            head_sequence,
        })
    }
}

fn decode_account(row: &AnyRow) -> StoreResult<StoredAccount> {
    Ok(StoredAccount {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        capabilities: list(row, "capabilities")?,
        state_hash: row.try_get("state_hash")?,
        is_active: flag(row, "is_active")?,
        created_at_ms: row.try_get("created_at")?,
        state: state(row, "state")?,
        request_id: row.try_get("request_id")?,
        shard: row.try_get("shard")?,
    })
}

fn decode_request(row: &AnyRow) -> StoreResult<StoredRequest> {
    Ok(StoredRequest {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        capabilities: list(row, "capabilities")?,
        init_state_hash: row.try_get("init_state_hash")?,
        status: state(row, "status")?,
        failure_reason: row.try_get("failure_reason")?,
        attempts: count(row, "attempts")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        signature: row.try_get("signature")?,
        account_id: row.try_get("account_id")?,
        shard: row.try_get("shard")?,
    })
}

fn decode_session(row: &AnyRow) -> StoreResult<StoredSession> {
    Ok(StoredSession {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        accounts: list(row, "accounts")?,
        namespace: row.try_get("namespace")?,
        is_consumed: flag(row, "is_consumed")?,
        nonce: u64_bits(row, "nonce")?,
        created_at_ms: row.try_get("created_at")?,
        metadata: row.try_get("metadata")?,
        state: state(row, "state")?,
        last_activity_at_ms: row.try_get("last_activity_at")?,
        consumed_at_ms: row.try_get("consumed_at")?,
        created_sessions: optional_list(row, "created_sessions")?,
        shard: row.try_get("shard")?,
    })
}
