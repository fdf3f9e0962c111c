//! What the orchestrator reads and writes: the live sessions and the
//! accounts its conditions look at, and the pending actions table that
//! makes every rule action happen at most once per (rule, session, state).

use sqlx::{any::AnyRow, Row as _};
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{lifecycle_event::Payload, ActionOutcome, ProgressionRule, RuleMatched},
};

use super::error::{StoreError, StoreResult};
use super::{
    now_ms,
    rows::{count, flag, list, placeholders, state, u64_bits},
    rules::definition_json,
    ActionStatus, NewEvent, Store,
};

/// A live (not consumed) session, as conditions see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSession {
    /// Address.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Member accounts in session order.
    pub accounts: Vec<String>,
    /// Namespace.
    pub namespace: String,
    /// Nonce.
    pub nonce: u64,
    /// On-chain creation time, Unix ms.
    pub created_at_ms: i64,
    /// Last activity (creation or last transition) seen, Unix ms.
    pub last_activity_ms: i64,
    /// Metadata bytes.
    pub metadata: Vec<u8>,
}

/// What conditions need to know about an account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountFacts {
    /// Address.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// State hash, 64 hex characters.
    pub state_hash: String,
    /// Active flag.
    pub is_active: bool,
}

/// A rule match about to be recorded.
#[derive(Debug, Clone)]
pub struct NewMatch<'a> {
    /// Action id (derived from rule, session and state).
    pub id: &'a str,
    /// The rule as it is now (its definition is kept with the action).
    pub rule: &'a ProgressionRule,
    /// The session.
    pub session_id: &'a str,
    /// Its namespace (for the event).
    pub namespace: &'a str,
    /// The session state the match is for.
    pub state_key: &'a str,
    /// consume_and_create, execute_bundle or notify_webhook.
    pub action_kind: &'a str,
    /// What happens, in words.
    pub description: &'a str,
    /// Whether the action will run (AUTO_PROGRESS) or is only reported.
    pub execute: bool,
    /// When an unfinished action expires, Unix ms.
    pub expires_at_ms: i64,
}

/// A recorded action that is not finished.
#[derive(Debug, Clone)]
pub struct PendingAction {
    /// Action id.
    pub id: String,
    /// The rule as it was when it matched.
    pub rule: ProgressionRule,
    /// The session.
    pub session_id: String,
    /// The session state it matched in.
    pub state_key: String,
    /// Action kind.
    pub action_kind: String,
    /// Pending or Sent.
    pub status: ActionStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Signature of the last transaction sent, if any.
    pub signature: String,
    /// Blockhash of that transaction (base58), if any.
    pub blockhash: String,
    /// When it was recorded, Unix ms.
    pub created_at_ms: i64,
    /// When it expires, Unix ms.
    pub expires_at_ms: i64,
}

/// How an action ended.
#[derive(Debug, Clone)]
pub struct ActionEnd<'a> {
    /// Action id.
    pub id: &'a str,
    /// Executed, Failed or Expired.
    pub status: ActionStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Signature or HTTP status.
    pub detail: &'a str,
    /// Error message; empty on success.
    pub error: &'a str,
}

const LIVE_COLUMNS: &str =
    "id, owner, accounts, namespace, nonce, created_at, last_activity_at, metadata";

/// Rows of the session factory's sessions that have no Session record yet
/// (reserved, queued, reset): nothing a rule can act on.
const CREATED: &str = "state NOT IN ('reserved_session', 'queued_session', 'reset_session')";
const FACT_COLUMNS: &str =
    "id, owner, capabilities, state_hash, CAST(is_active AS INTEGER) AS is_active";
const ACTION_COLUMNS: &str = "id, definition, session_id, state_key, action_kind, status, attempts, signature, blockhash, created_at, expires_at";

impl Store {
    /// Every live session.
    pub async fn live_sessions(&self) -> StoreResult<Vec<LiveSession>> {
        sqlx::query(&format!(
            "SELECT {LIVE_COLUMNS} FROM sessions WHERE is_consumed = $1 AND {CREATED}"
        ))
        .bind(false)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_live)
        .collect()
    }

    /// Up to `limit` live sessions with ids after `after`, by id (a
    /// keyset page: stable while sessions come and go).
    pub async fn live_sessions_after(
        &self,
        after: &str,
        limit: u32,
    ) -> StoreResult<Vec<LiveSession>> {
        sqlx::query(&format!(
            "SELECT {LIVE_COLUMNS} FROM sessions WHERE is_consumed = $1 AND {CREATED} AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(false)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_live)
        .collect()
    }

    /// The facts of the stored accounts among `ids`.
    pub async fn account_facts_of(&self, ids: &[String]) -> StoreResult<Vec<AccountFacts>> {
        // Well within every backend's limit on bound parameters.
        const CHUNK: usize = 500;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT {FACT_COLUMNS} FROM accounts WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(decode_facts(&row)?);
            }
        }
        Ok(out)
    }

    /// One session if it is live.
    pub async fn live_session(&self, id: &str) -> StoreResult<Option<LiveSession>> {
        sqlx::query(&format!(
            "SELECT {LIVE_COLUMNS} FROM sessions WHERE id = $1 AND is_consumed = $2 AND {CREATED}"
        ))
        .bind(id)
        .bind(false)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(decode_live)
        .transpose()
    }

    /// Every stored account's facts.
    pub async fn account_facts_all(&self) -> StoreResult<Vec<AccountFacts>> {
        sqlx::query(&format!("SELECT {FACT_COLUMNS} FROM accounts"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode_facts)
            .collect()
    }

    /// One account's facts, when stored.
    pub async fn account_facts(&self, id: &str) -> StoreResult<Option<AccountFacts>> {
        sqlx::query(&format!(
            "SELECT {FACT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(decode_facts)
        .transpose()
    }

    /// Records a match and appends RuleMatched, unless this (rule, session,
    /// state) was recorded before. Returns whether it was new.
    pub async fn record_match(&self, m: &NewMatch<'_>) -> StoreResult<bool> {
        let definition = definition_json(m.rule)?;
        let now = now_ms();
        let status = if m.execute {
            ActionStatus::Pending
        } else {
            ActionStatus::Reported
        };
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO pending_actions (id, rule_id, session_id, state_key, action_kind, definition, status, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) ON CONFLICT (rule_id, session_id, state_key) DO NOTHING",
        )
        .bind(m.id)
        .bind(&m.rule.id)
        .bind(m.session_id)
        .bind(m.state_key)
        .bind(m.action_kind)
        .bind(definition)
        .bind(status.as_str())
        .bind(now)
        .bind(m.expires_at_ms)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        let payload = Payload::RuleMatched(RuleMatched {
            rule_id: m.rule.id.clone(),
            session_id: m.session_id.to_string(),
            action_kind: m.action_kind.to_string(),
            dry_run: !m.execute,
            description: m.description.to_string(),
            action_id: if m.execute {
                m.id.to_string()
            } else {
                String::new()
            },
        });
        let event = NewEvent::new(m.session_id, payload).in_namespace(m.namespace);
        self.append_event(&mut tx, event).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// (rule, session) of every recorded match of a live session.
    pub async fn matched_pairs(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT p.rule_id, p.session_id FROM pending_actions p JOIN sessions s ON s.id = p.session_id WHERE s.is_consumed = $1",
        )
        .bind(false)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("rule_id")?, r.try_get("session_id")?)))
            .collect()
    }

    /// Actions recorded to run and not finished (pending or sent), oldest first.
    pub async fn open_actions(&self) -> StoreResult<Vec<PendingAction>> {
        sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM pending_actions WHERE status = $1 OR status = $2 ORDER BY created_at, id"
        ))
        .bind(ActionStatus::Pending.as_str())
        .bind(ActionStatus::Sent.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode_action)
        .collect()
    }

    /// Notes an attempt about to be sent: after a crash the next run knows
    /// which transaction (or request) may have gone out.
    pub async fn note_action_attempt(
        &self,
        id: &str,
        attempts: u32,
        signature: &str,
        blockhash: &str,
    ) -> StoreResult<()> {
        let changed = sqlx::query(
            "UPDATE pending_actions SET status = $1, attempts = $2, signature = $3, blockhash = $4, updated_at = $5 \
             WHERE id = $6 AND (status = $7 OR status = $1)",
        )
        .bind(ActionStatus::Sent.as_str())
        .bind(attempts as i64)
        .bind(signature)
        .bind(blockhash)
        .bind(now_ms())
        .bind(id)
        .bind(ActionStatus::Pending.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::Conflict(format!(
                "action {id} is no longer open"
            )));
        }
        Ok(())
    }

    /// Ends an open action and appends ActionExecuted or ActionFailed.
    /// Returns false (and appends nothing) when it had already ended.
    pub async fn finish_action(&self, end: &ActionEnd<'_>) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE pending_actions SET status = $1, attempts = $2, detail = $3, error = $4, updated_at = $5 \
             WHERE id = $6 AND (status = $7 OR status = $8) RETURNING rule_id, session_id, action_kind, signature",
        )
        .bind(end.status.as_str())
        .bind(end.attempts as i64)
        .bind(end.detail)
        .bind(end.error)
        .bind(now_ms())
        .bind(end.id)
        .bind(ActionStatus::Pending.as_str())
        .bind(ActionStatus::Sent.as_str())
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let session_id: String = row.try_get("session_id")?;
        let signature: String = row.try_get("signature")?;
        let outcome = ActionOutcome {
            rule_id: row.try_get("rule_id")?,
            session_id: session_id.clone(),
            action_kind: row.try_get("action_kind")?,
            detail: end.detail.to_string(),
            error: end.error.to_string(),
            attempt: end.attempts,
        };
        let payload = if end.status == ActionStatus::Executed {
            Payload::ActionExecuted(outcome)
        } else {
            Payload::ActionFailed(outcome)
        };
        let signature = if end.status == ActionStatus::Executed {
            signature
        } else {
            String::new()
        };
        let event = NewEvent::new(&session_id, payload).on_chain(None, signature);
        self.append_event(&mut tx, event).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// The status of an action (tests, operators).
    pub async fn action_status(&self, id: &str) -> StoreResult<ActionStatus> {
        let row = sqlx::query("SELECT status FROM pending_actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found("action", id))?;
        Ok(row.try_get::<String, _>("status")?.parse()?)
    }
}

fn decode_live(row: &AnyRow) -> StoreResult<LiveSession> {
    Ok(LiveSession {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        accounts: list(row, "accounts")?,
        namespace: row.try_get("namespace")?,
        nonce: u64_bits(row, "nonce")?,
        created_at_ms: row.try_get("created_at")?,
        last_activity_ms: row.try_get("last_activity_at")?,
        metadata: row.try_get("metadata")?,
    })
}

fn decode_facts(row: &AnyRow) -> StoreResult<AccountFacts> {
    Ok(AccountFacts {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        capabilities: list(row, "capabilities")?,
        state_hash: row.try_get("state_hash")?,
        is_active: flag(row, "is_active")?,
    })
}

fn decode_action(row: &AnyRow) -> StoreResult<PendingAction> {
    let id: String = row.try_get("id")?;
    let definition: String = row.try_get("definition")?;
    let seed: SeedRule = serde_json::from_str(&definition)
        .map_err(|e| anyhow::anyhow!("stored action {id} does not parse: {e}"))?;
    Ok(PendingAction {
        id,
        rule: ProgressionRule::from(seed),
        session_id: row.try_get("session_id")?,
        state_key: row.try_get("state_key")?,
        action_kind: row.try_get("action_kind")?,
        status: state(row, "status")?,
        attempts: count(row, "attempts")?,
        signature: row.try_get("signature")?,
        blockhash: row.try_get("blockhash")?,
        created_at_ms: row.try_get("created_at")?,
        expires_at_ms: row.try_get("expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use crate::store::LinearState;

    /// The states rules never see are spelled as the store spells them.
    #[test]
    fn sessions_without_a_record_are_named_by_their_stored_states() {
        for state in [
            LinearState::ReservedSession,
            LinearState::QueuedSession,
            LinearState::ResetSession,
        ] {
            assert!(super::CREATED.contains(&format!("'{}'", state.as_str())));
        }
    }
}
