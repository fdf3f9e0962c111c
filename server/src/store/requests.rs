//! The builder's queue: account requests move PENDING → PROCESSING →
//! INITIALIZED, or → FAILED (parked) after a permanent failure or the last
//! attempt. Claiming is a conditional update, so two workers (or replicas)
//! never take the same request.

use sqlx::Row as _;
use valence_lifecycle_api::v1::{
    lifecycle_event::Payload, AccountInitializationFailed, AccountRequestRequeued,
};

use super::error::{StoreError, StoreResult};
use super::{
    now_ms,
    rows::{count, list},
    NewEvent, RequestStatus, Store, StoredRequest,
};

/// A request the builder took from the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRequest {
    /// Request id (address of the on-chain AccountRequest record).
    pub id: String,
    /// Future owner.
    pub owner: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Expected initial state hash, hex.
    pub init_state_hash: String,
    /// Attempts made before this claim.
    pub attempts: u32,
    /// Signature of the last transaction sent for it (empty if none).
    pub signature: String,
}

/// How an attempt ended, for [`Store::record_attempt_failure`].
#[derive(Debug, Clone)]
pub struct AttemptFailure<'a> {
    /// The request.
    pub id: &'a str,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// Why it failed.
    pub reason: &'a str,
    /// No more automatic attempts: the request becomes FAILED.
    pub parked: bool,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl Store {
    /// ` AND shard = $n` for a shard's chain work: its builder takes only
    /// its own shard's requests (each is initialized by its own program).
    fn shard_clause(&self, n: usize) -> String {
        if self.shard_tag().is_empty() {
            String::new()
        } else {
            format!(" AND shard = ${n}")
        }
    }

    /// Binds the shard of [`Self::shard_clause`], when there is one.
    fn bind_shard<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        if self.shard_tag().is_empty() {
            query
        } else {
            query.bind(self.shard_tag())
        }
    }

    /// Requests left PROCESSING by a run that stopped (or crashed) go back
    /// to PENDING. The builder re-checks the chain before sending anything,
    /// so an attempt that was in flight is never repeated blindly.
    pub async fn requeue_interrupted(&self) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "UPDATE account_requests SET status = $1, updated_at = $2 WHERE status = $3{}",
            self.shard_clause(4)
        );
        let done = self
            .bind_shard(
                sqlx::query(&sql)
                    .bind(RequestStatus::Pending.as_str())
                    .bind(now_ms())
                    .bind(RequestStatus::Processing.as_str()),
            )
            .execute(tx.conn())
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(done)
    }

    /// Takes up to `limit` pending requests, oldest first, marking them
    /// PROCESSING.
    pub async fn claim_pending(&self, limit: usize) -> StoreResult<Vec<ClaimedRequest>> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT id, owner, capabilities, init_state_hash, attempts, signature FROM account_requests \
             WHERE status = $1{} ORDER BY created_at, id LIMIT $2",
            self.shard_clause(3)
        );
        let rows = self
            .bind_shard(
                sqlx::query(&sql)
                    .bind(RequestStatus::Pending.as_str())
                    .bind(limit as i64),
            )
            .fetch_all(tx.conn())
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let taken = sqlx::query(
                "UPDATE account_requests SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
            )
            .bind(RequestStatus::Processing.as_str())
            .bind(now_ms())
            .bind(&id)
            .bind(RequestStatus::Pending.as_str())
            .execute(tx.conn())
            .await?
            .rows_affected();
            if taken == 1 {
                claimed.push(ClaimedRequest {
                    id,
                    owner: row.try_get("owner")?,
                    capabilities: list(&row, "capabilities")?,
                    init_state_hash: row.try_get("init_state_hash")?,
                    attempts: count(&row, "attempts")?,
                    signature: row.try_get("signature")?,
                });
            }
        }
        self.commit(tx).await?;
        Ok(claimed)
    }

    /// Notes an attempt before its transaction is sent: the count, the
    /// account's address (so whoever records the account links it to this
    /// request) and the transaction's signature (so a restart can name it).
    pub async fn note_attempt(
        &self,
        id: &str,
        attempts: u32,
        account_id: &str,
        signature: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE account_requests SET attempts = $1, account_id = $2, signature = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(attempts as i64)
        .bind(account_id)
        .bind(signature)
        .bind(now_ms())
        .bind(id)
        .execute(tx.conn())
        .await?;
        self.commit(tx).await
    }

    /// Records a failed attempt and appends AccountInitializationFailed; a
    /// parked request becomes FAILED.
    pub async fn record_attempt_failure(&self, f: &AttemptFailure<'_>) -> StoreResult<()> {
        let status = if f.parked {
            RequestStatus::Failed
        } else {
            RequestStatus::Processing
        };
        let mut tx = self.begin().await?;
        // Guarded: only a request the builder is working on can fail. One
        // whose account was recorded meanwhile (INITIALIZED) stays so.
        let changed = sqlx::query(
            "UPDATE account_requests SET status = $1, failure_reason = $2, attempts = $3, updated_at = $4 WHERE id = $5 AND status = $6",
        )
        .bind(status.as_str())
        .bind(f.reason)
        .bind(f.attempts as i64)
        .bind(now_ms())
        .bind(f.id)
        .bind(RequestStatus::Processing.as_str())
        .execute(tx.conn())
        .await?
        .rows_affected();
        if changed == 0 {
            tracing::info!(request = %f.id, "attempt failure not recorded: the request is no longer processing");
            return Ok(());
        }
        let payload = Payload::AccountInitializationFailed(AccountInitializationFailed {
            request_id: f.id.to_string(),
            reason: f.reason.to_string(),
            attempts: f.attempts,
            parked: f.parked,
        });
        self.append_event(&mut tx, NewEvent::new(f.id, payload))
            .await?;
        self.commit(tx).await
    }

    /// Puts a FAILED request back in the queue with its attempts reset and
    /// appends AccountRequestRequeued.
    pub async fn requeue_failed(&self, id: &str) -> StoreResult<StoredRequest> {
        let request = self.get_account_request(id).await?;
        let current = request.status;
        if current != RequestStatus::Failed {
            return Err(StoreError::Conflict(format!(
                "account request {id} is {current}, not FAILED: only parked requests can be retried"
            )));
        }
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE account_requests SET status = $1, attempts = 0, failure_reason = '', updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(RequestStatus::Pending.as_str())
        .bind(now_ms())
        .bind(id)
        .bind(RequestStatus::Failed.as_str())
        .execute(tx.conn())
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::Conflict(format!(
                "account request {id} changed while being retried; look again"
            )));
        }
        let payload = Payload::AccountRequestRequeued(AccountRequestRequeued {
            request_id: id.to_string(),
            previous_reason: request.failure_reason.clone(),
            previous_attempts: request.attempts,
        });
        self.append_event(&mut tx, NewEvent::new(id, payload))
            .await?;
        self.commit(tx).await?;
        self.get_account_request(id).await
    }

    /// The request whose account lives at `account_id`, if the builder
    /// noted it, with the signature of the transaction it sent.
    pub(crate) async fn request_for_account(
        &self,
        tx: &mut super::WriteTx<'_>,
        account_id: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let row = sqlx::query("SELECT id, signature FROM account_requests WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(tx.conn())
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("id")?, r.try_get("signature")?)),
            None => None,
        })
    }
}
