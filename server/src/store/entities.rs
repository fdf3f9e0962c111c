//! Accounts, account requests, sessions, consumptions and their linear
//! progressions. Writers (the monitor, the builder) hand in what they saw on
//! chain; every `upsert_*`/`record_*` is idempotent: seeing the same state
//! twice changes nothing and appends nothing, and returns `false`.

use sqlx::{any::AnyRow, Row as _};
use valence_lifecycle_api::{
    json::short_name,
    v1::{
        lifecycle_event::Payload, Account, AccountInitialized, AccountRequest,
        AccountRequestStatus, AccountRequested, EntityKind, LinearState, Progression,
        ProgressionChanged, Session, SessionConsumed, SessionCreated, StateTransition, Transition,
    },
};

use super::{now_ms, timestamp, NewEvent, Store, WriteTx};
use crate::error::{ApiError, ApiResult};

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
    /// Slot of the observation.
    pub slot: Option<u64>,
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
    /// Slot of the observation.
    pub slot: Option<u64>,
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

fn state_name(state: LinearState) -> String {
    short_name::<LinearState>(state as i32)
}

fn parse_state(name: &str) -> LinearState {
    valence_lifecycle_api::json::parse_name::<LinearState>(name)
        .and_then(|v| LinearState::try_from(v).ok())
        .unwrap_or(LinearState::Unspecified)
}

pub(super) fn status_name(status: AccountRequestStatus) -> String {
    short_name::<AccountRequestStatus>(status as i32)
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

pub(super) fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Where a transition comes from.
struct Cause<'a> {
    slot: Option<u64>,
    signature: &'a str,
    reason: &'a str,
    namespace: &'a str,
}

impl Store {
    /// Records an account request; new ones start their progression and
    /// append AccountRequested.
    pub async fn upsert_account_request(&self, r: &AccountRequestRecord) -> ApiResult<bool> {
        let mut tx = self.begin().await?;
        self.lock_entity(&mut tx, &r.id).await?;
        let exists = sqlx::query("SELECT 1 FROM account_requests WHERE id = $1")
            .bind(&r.id)
            .fetch_optional(tx.conn())
            .await?
            .is_some();
        if exists {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO account_requests (id, owner, capabilities, init_state_hash, status, created_at, updated_at, slot) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&r.id)
        .bind(&r.owner)
        .bind(json_list(&r.capabilities))
        .bind(&r.init_state_hash)
        .bind(status_name(AccountRequestStatus::Pending))
        .bind(r.created_at_ms)
        .bind(now_ms())
        .bind(r.slot.map(|s| s as i64))
        .execute(tx.conn())
        .await?;
        let payload = Payload::AccountRequested(AccountRequested {
            request_id: r.id.clone(),
            owner: r.owner.clone(),
            capabilities: r.capabilities.clone(),
            init_state_hash: r.init_state_hash.clone(),
        });
        self.append_event(&mut tx, NewEvent::new(&r.id, payload).on_chain(r.slot, ""))
            .await?;
        let cause = Cause {
            slot: r.slot,
            signature: "",
            reason: "requested",
            namespace: "",
        };
        self.transition(
            &mut tx,
            &r.id,
            EntityKind::Account,
            LinearState::AccountRequest,
            &cause,
        )
        .await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Records an initialized account; new ones mark their request
    /// initialized and append AccountInitialized.
    pub async fn upsert_account(&self, a: &AccountRecord) -> ApiResult<bool> {
        let mut tx = self.begin().await?;
        self.lock_entity(&mut tx, &a.id).await?;
        // The record alone does not name its request; the builder noted
        // the address it initializes, so whoever records it first links it.
        let resolved;
        let a = if a.request_id.is_empty() {
            match self.request_for_account(&mut tx, &a.id).await? {
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
        let stored = sqlx::query("SELECT state_hash, CAST(CASE WHEN is_active THEN 1 ELSE 0 END AS BIGINT), request_id FROM accounts WHERE id = $1")
            .bind(&a.id)
            .fetch_optional(tx.conn())
            .await?;
        if let Some(row) = stored {
            let (hash, active): (String, bool) = (row.try_get(0)?, flag(&row, 1)?);
            let linked: String = row.try_get(2)?;
            if linked.is_empty() && !a.request_id.is_empty() {
                // The record alone does not name its request; the
                // AccountInitialized event does, and may arrive later.
                self.link_request(&mut tx, a).await?;
                self.commit(tx).await?;
                return Ok(true);
            }
            if hash == a.state_hash && active == a.is_active {
                return Ok(false);
            }
            sqlx::query("UPDATE accounts SET state_hash = $1, is_active = $2, updated_at = $3, slot = $4 WHERE id = $5")
                .bind(&a.state_hash)
                .bind(a.is_active)
                .bind(now_ms())
                .bind(a.slot.map(|s| s as i64))
                .bind(&a.id)
                .execute(tx.conn())
                .await?;
            self.commit(tx).await?;
            return Ok(true);
        }
        self.insert_account(&mut tx, a).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn insert_account(&self, tx: &mut WriteTx<'_>, a: &AccountRecord) -> ApiResult<()> {
        sqlx::query(
            "INSERT INTO accounts (id, owner, capabilities, state_hash, is_active, created_at, updated_at, state, request_id, slot) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&a.id)
        .bind(&a.owner)
        .bind(json_list(&a.capabilities))
        .bind(&a.state_hash)
        .bind(a.is_active)
        .bind(a.created_at_ms)
        .bind(now_ms())
        .bind(state_name(LinearState::Account))
        .bind(&a.request_id)
        .bind(a.slot.map(|s| s as i64))
        .execute(tx.conn())
        .await?;
        let cause = Cause {
            slot: a.slot,
            signature: &a.signature,
            reason: "initialized",
            namespace: "",
        };
        if !a.request_id.is_empty() {
            self.mark_request_initialized(tx, a, &cause).await?;
        }
        let payload = Payload::AccountInitialized(AccountInitialized {
            account_id: a.id.clone(),
            request_id: a.request_id.clone(),
            owner: a.owner.clone(),
            state_hash: a.state_hash.clone(),
        });
        self.append_event(
            tx,
            NewEvent::new(&a.id, payload).on_chain(a.slot, a.signature.clone()),
        )
        .await?;
        self.transition(tx, &a.id, EntityKind::Account, LinearState::Account, &cause)
            .await
    }

    async fn mark_request_initialized(
        &self,
        tx: &mut WriteTx<'_>,
        a: &AccountRecord,
        cause: &Cause<'_>,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE account_requests SET status = $1, account_id = $2, signature = $3, updated_at = $4, failure_reason = '' WHERE id = $5",
        )
        .bind(status_name(AccountRequestStatus::Initialized))
        .bind(&a.id)
        .bind(&a.signature)
        .bind(now_ms())
        .bind(&a.request_id)
        .execute(tx.conn())
        .await?;
        self.transition(
            tx,
            &a.request_id,
            EntityKind::Account,
            LinearState::Account,
            cause,
        )
        .await
    }

    /// Links a stored account to its request, learned after the account,
    /// and names the initializing transaction in its first transition.
    async fn link_request(&self, tx: &mut WriteTx<'_>, a: &AccountRecord) -> ApiResult<()> {
        sqlx::query("UPDATE accounts SET request_id = $1, updated_at = $2 WHERE id = $3")
            .bind(&a.request_id)
            .bind(now_ms())
            .bind(&a.id)
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "UPDATE progression_transitions SET signature = $1, slot = COALESCE(slot, $2) \
             WHERE entity_id = $3 AND to_state = $4 AND signature = ''",
        )
        .bind(&a.signature)
        .bind(a.slot.map(|s| s as i64))
        .bind(&a.id)
        .bind(state_name(LinearState::Account))
        .execute(tx.conn())
        .await?;
        let cause = Cause {
            slot: a.slot,
            signature: &a.signature,
            reason: "initialized",
            namespace: "",
        };
        self.mark_request_initialized(tx, a, &cause).await
    }

    /// Fills in the consuming transaction's signature, which the on-chain
    /// record cannot hold; no-op when already known. Returns whether it changed.
    pub async fn set_consumption_signature(
        &self,
        session: &str,
        signature: &str,
    ) -> ApiResult<bool> {
        let changed = sqlx::query(
            "UPDATE session_consumptions SET transaction_signature = $1 WHERE consumed_session = $2 AND transaction_signature = ''",
        )
        .bind(signature)
        .bind(session)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// Records a session; new ones move their accounts InSession and append
    /// SessionCreated; a stored session seen consumed is marked consumed.
    pub async fn upsert_session(&self, s: &SessionRecord) -> ApiResult<bool> {
        let mut tx = self.begin().await?;
        self.lock_entity(&mut tx, &s.id).await?;
        let stored = sqlx::query("SELECT CAST(CASE WHEN is_consumed THEN 1 ELSE 0 END AS BIGINT) FROM sessions WHERE id = $1")
            .bind(&s.id)
            .fetch_optional(tx.conn())
            .await?;
        let changed = match stored {
            Some(row) => {
                let consumed = flag(&row, 0)?;
                if consumed || !s.is_consumed {
                    return Ok(false);
                }
                self.mark_consumed(&mut tx, &s.id, &[], "", s.slot).await?;
                true
            }
            None => {
                self.insert_session(&mut tx, s).await?;
                true
            }
        };
        self.commit(tx).await?;
        Ok(changed)
    }

    async fn insert_session(&self, tx: &mut WriteTx<'_>, s: &SessionRecord) -> ApiResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO sessions (id, owner, accounts, namespace, is_consumed, nonce, created_at, metadata, state, last_activity_at, slot) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&s.id)
        .bind(&s.owner)
        .bind(json_list(&s.accounts))
        .bind(&s.namespace)
        .bind(false)
        .bind(s.nonce as i64)
        .bind(s.created_at_ms)
        .bind(s.metadata.clone())
        .bind(state_name(LinearState::Session))
        .bind(now)
        .bind(s.slot.map(|v| v as i64))
        .execute(tx.conn())
        .await?;
        let payload = Payload::SessionCreated(SessionCreated {
            session_id: s.id.clone(),
            owner: s.owner.clone(),
            accounts: s.accounts.clone(),
            namespace: s.namespace.clone(),
            nonce: s.nonce,
        });
        let event = NewEvent::new(&s.id, payload)
            .in_namespace(&s.namespace)
            .on_chain(s.slot, "");
        self.append_event(tx, event).await?;
        let cause = Cause {
            slot: s.slot,
            signature: "",
            reason: "session created",
            namespace: &s.namespace,
        };
        self.transition(tx, &s.id, EntityKind::Session, LinearState::Session, &cause)
            .await?;
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
        if s.is_consumed {
            self.mark_consumed(tx, &s.id, &[], "", s.slot).await?;
        }
        Ok(())
    }

    /// Records a consumption; consumes the session if not yet and links it
    /// to the sessions it created.
    pub async fn record_consumption(&self, c: &ConsumptionRecord) -> ApiResult<bool> {
        let mut tx = self.begin().await?;
        self.lock_entity(&mut tx, &c.consumed_session).await?;
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
        let live = sqlx::query("SELECT CAST(CASE WHEN is_consumed THEN 1 ELSE 0 END AS BIGINT) FROM sessions WHERE id = $1")
            .bind(&c.consumed_session)
            .fetch_optional(tx.conn())
            .await?
            .map(|row| flag(&row, 0))
            .transpose()?
            == Some(false);
        if live {
            self.mark_consumed(
                &mut tx,
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
        self.append_event(&mut tx, event).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn mark_consumed(
        &self,
        tx: &mut WriteTx<'_>,
        session_id: &str,
        created: &[String],
        signature: &str,
        slot: Option<u64>,
    ) -> ApiResult<()> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE sessions SET is_consumed = $1, state = $2, consumed_at = $3, last_activity_at = $3 WHERE id = $4 \
             RETURNING accounts, namespace",
        )
        .bind(true)
        .bind(state_name(LinearState::ConsumedSession))
        .bind(now)
        .bind(session_id)
        .fetch_one(tx.conn())
        .await?;
        let (accounts, namespace): (String, String) = (row.try_get(0)?, row.try_get(1)?);
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
        for account in parse_list(&accounts) {
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
    ) -> ApiResult<()> {
        let moved = sqlx::query(
            "UPDATE accounts SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(state_name(to))
        .bind(now_ms())
        .bind(account)
        .bind(state_name(from))
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
    async fn transition(
        &self,
        tx: &mut WriteTx<'_>,
        entity_id: &str,
        kind: EntityKind,
        to: LinearState,
        cause: &Cause<'_>,
    ) -> ApiResult<()> {
        let current =
            sqlx::query("SELECT current_state FROM linear_progressions WHERE entity_id = $1")
                .bind(entity_id)
                .fetch_optional(tx.conn())
                .await?
                .map(|row| row.try_get::<String, _>(0))
                .transpose()?;
        let from = current
            .as_deref()
            .map(parse_state)
            .unwrap_or(LinearState::Unspecified);
        if from == to {
            return Ok(());
        }
        let now = now_ms();
        let upsert = if current.is_some() {
            "UPDATE linear_progressions SET current_state = $1, updated_at = $2 WHERE entity_id = $3 AND kind = $4"
        } else {
            "INSERT INTO linear_progressions (current_state, updated_at, entity_id, kind) VALUES ($1, $2, $3, $4)"
        };
        sqlx::query(upsert)
            .bind(state_name(to))
            .bind(now)
            .bind(entity_id)
            .bind(short_name::<EntityKind>(kind as i32))
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "INSERT INTO progression_transitions (entity_id, from_state, to_state, at, slot, signature, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entity_id)
        .bind(state_name(from))
        .bind(state_name(to))
        .bind(now)
        .bind(cause.slot.map(|s| s as i64))
        .bind(cause.signature)
        .bind(cause.reason)
        .execute(tx.conn())
        .await?;
        let payload = Payload::StateTransition(StateTransition {
            entity_id: entity_id.to_string(),
            kind: kind as i32,
            from_state: from as i32,
            to_state: to as i32,
        });
        let event = NewEvent::new(entity_id, payload)
            .in_namespace(cause.namespace)
            .on_chain(cause.slot, cause.signature);
        self.append_event(tx, event).await?;
        Ok(())
    }
}

const REQUEST_COLUMNS: &str = "id, owner, capabilities, init_state_hash, status, failure_reason, attempts, created_at, updated_at, signature, account_id";
const ACCOUNT_COLUMNS: &str = "id, owner, capabilities, state_hash, CAST(CASE WHEN is_active THEN 1 ELSE 0 END AS BIGINT), created_at, state, request_id";
const SESSION_COLUMNS: &str =
    "s.id, s.owner, s.accounts, s.namespace, CAST(CASE WHEN s.is_consumed THEN 1 ELSE 0 END AS BIGINT), s.nonce, s.created_at, s.metadata, s.state, s.last_activity_at, s.consumed_at, c.created_sessions";

impl Store {
    /// One account.
    pub async fn get_account(&self, id: &str) -> ApiResult<Account> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("account", id))?;
        decode_account(&row)
    }

    /// Accounts, newest first.
    pub async fn list_accounts(
        &self,
        owner: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> ApiResult<Vec<Account>> {
        let filter = owner.map(|o| ("owner", o.to_string()));
        self.newest_first(
            ACCOUNT_COLUMNS,
            "accounts",
            filter,
            limit,
            offset,
            decode_account,
        )
        .await
    }

    /// One account request.
    pub async fn get_account_request(&self, id: &str) -> ApiResult<AccountRequest> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM account_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("account request", id))?;
        decode_request(&row)
    }

    /// Account requests, newest first.
    pub async fn list_account_requests(
        &self,
        status: Option<AccountRequestStatus>,
        limit: u32,
        offset: u64,
    ) -> ApiResult<Vec<AccountRequest>> {
        let filter = status.map(|st| ("status", status_name(st)));
        self.newest_first(
            REQUEST_COLUMNS,
            "account_requests",
            filter,
            limit,
            offset,
            decode_request,
        )
        .await
    }

    /// A page of `table`, newest first, optionally where `column = value`.
    async fn newest_first<T>(
        &self,
        columns: &str,
        table: &str,
        filter: Option<(&str, String)>,
        limit: u32,
        offset: u64,
        decode: fn(&AnyRow) -> ApiResult<T>,
    ) -> ApiResult<Vec<T>> {
        let condition = filter
            .as_ref()
            .map(|(column, _)| format!("WHERE {column} = $3"))
            .unwrap_or_default();
        let sql = format!(
            "SELECT {columns} FROM {table} {condition} ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
        );
        let mut query = sqlx::query(&sql).bind(limit as i64).bind(offset as i64);
        if let Some((_, value)) = filter {
            query = query.bind(value);
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// One session.
    pub async fn get_session(&self, id: &str) -> ApiResult<Session> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s LEFT JOIN session_consumptions c ON c.consumed_session = s.id WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("session", id))?;
        decode_session(&row)
    }

    /// Sessions, newest first.
    pub async fn list_sessions(
        &self,
        filter: &SessionFilter,
        limit: u32,
        offset: u64,
    ) -> ApiResult<Vec<Session>> {
        let mut clauses = Vec::new();
        let mut n = 2;
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
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s LEFT JOIN session_consumptions c ON c.consumed_session = s.id \
             {filter_sql} ORDER BY s.created_at DESC, s.id DESC LIMIT $1 OFFSET $2"
        );
        let mut query = sqlx::query(&sql).bind(limit as i64).bind(offset as i64);
        if !filter.include_consumed {
            query = query.bind(false);
        }
        if let Some(owner) = &filter.owner {
            query = query.bind(owner.clone());
        }
        if let Some(namespace) = &filter.namespace {
            query = query.bind(namespace.clone());
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
    pub async fn get_progression(&self, entity_id: &str) -> ApiResult<Progression> {
        let row =
            sqlx::query("SELECT kind, current_state FROM linear_progressions WHERE entity_id = $1")
                .bind(entity_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| ApiError::not_found("progression", entity_id))?;
        let (kind, current): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let request_id: Option<String> =
            sqlx::query("SELECT request_id FROM accounts WHERE id = $1")
                .bind(entity_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
                .filter(|id: &String| !id.is_empty());
        let mut history = Vec::new();
        if let Some(request) = &request_id {
            // The request's own last step (to Account) duplicates the account's first.
            let mut steps = self.transitions(request).await?;
            steps.retain(|t| t.to_state != LinearState::Account as i32);
            history.extend(steps);
        }
        history.extend(self.transitions(entity_id).await?);
        Ok(Progression {
            entity_id: entity_id.to_string(),
            kind: valence_lifecycle_api::json::parse_name::<EntityKind>(&kind).unwrap_or(0),
            current_state: parse_state(&current) as i32,
            history,
        })
    }

    async fn transitions(&self, entity_id: &str) -> ApiResult<Vec<Transition>> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, at, slot, signature, reason FROM progression_transitions WHERE entity_id = $1 ORDER BY id",
        )
        .bind(entity_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Transition {
                    from_state: parse_state(&row.try_get::<String, _>(0)?) as i32,
                    to_state: parse_state(&row.try_get::<String, _>(1)?) as i32,
                    at: Some(timestamp(row.try_get(2)?)),
                    slot: row.try_get::<Option<i64>, _>(3)?.map(|s| s as u64),
                    signature: row.try_get(4)?,
                    reason: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Counts for statistics.
    pub async fn stats(&self) -> ApiResult<StoreStats> {
        let count = |sql: &'static str| self.scalar_u64(sql);
        Ok(StoreStats {
            accounts: count("SELECT COUNT(*) FROM accounts").await?,
            accounts_created: count(
                "SELECT COUNT(*) FROM account_requests WHERE status = 'initialized'",
            )
            .await?,
            accounts_failed: count("SELECT COUNT(*) FROM account_requests WHERE status = 'failed'")
                .await?,
            pending_requests: count(
                "SELECT COUNT(*) FROM account_requests WHERE status IN ('pending', 'processing')",
            )
            .await?,
            sessions: count("SELECT COUNT(*) FROM sessions").await?,
            active_sessions: count("SELECT COUNT(*) FROM sessions WHERE is_consumed = FALSE")
                .await?,
            rules: count("SELECT COUNT(*) FROM progression_rules").await?,
            events: count("SELECT COUNT(*) FROM lifecycle_events").await?,
            head_sequence: self.head_sequence().await?,
        })
    }
}

/// Reads a boolean column selected as `CAST(CASE WHEN col THEN 1 ELSE 0 END AS BIGINT)`: sqlx's Any
/// driver maps PostgreSQL booleans but not SQLite's, and an integer reads
/// the same from both.
pub(super) fn flag(row: &AnyRow, index: usize) -> ApiResult<bool> {
    Ok(row.try_get::<i64, _>(index)? != 0)
}

fn decode_account(row: &AnyRow) -> ApiResult<Account> {
    Ok(Account {
        id: row.try_get(0)?,
        owner: row.try_get(1)?,
        capabilities: parse_list(&row.try_get::<String, _>(2)?),
        state_hash: row.try_get(3)?,
        is_active: flag(row, 4)?,
        created_at: Some(timestamp(row.try_get(5)?)),
        state: parse_state(&row.try_get::<String, _>(6)?) as i32,
        request_id: row.try_get(7)?,
    })
}

fn decode_request(row: &AnyRow) -> ApiResult<AccountRequest> {
    let status: String = row.try_get(4)?;
    Ok(AccountRequest {
        id: row.try_get(0)?,
        owner: row.try_get(1)?,
        capabilities: parse_list(&row.try_get::<String, _>(2)?),
        init_state_hash: row.try_get(3)?,
        status: valence_lifecycle_api::json::parse_name::<AccountRequestStatus>(&status)
            .unwrap_or(0),
        failure_reason: row.try_get(5)?,
        attempts: row.try_get::<i64, _>(6)? as u32,
        created_at: Some(timestamp(row.try_get(7)?)),
        updated_at: Some(timestamp(row.try_get(8)?)),
        signature: row.try_get(9)?,
        account_id: row.try_get(10)?,
    })
}

fn decode_session(row: &AnyRow) -> ApiResult<Session> {
    Ok(Session {
        id: row.try_get(0)?,
        owner: row.try_get(1)?,
        accounts: parse_list(&row.try_get::<String, _>(2)?),
        namespace: row.try_get(3)?,
        is_consumed: flag(row, 4)?,
        nonce: row.try_get::<i64, _>(5)? as u64,
        created_at: Some(timestamp(row.try_get(6)?)),
        metadata: row.try_get(7)?,
        state: parse_state(&row.try_get::<String, _>(8)?) as i32,
        last_activity_at: Some(timestamp(row.try_get(9)?)),
        consumed_at: row.try_get::<Option<i64>, _>(10)?.map(timestamp),
        created_sessions: row
            .try_get::<Option<String>, _>(11)?
            .map(|t| parse_list(&t))
            .unwrap_or_default(),
    })
}
