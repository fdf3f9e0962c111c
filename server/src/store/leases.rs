//! Shard leases (issue 19): which replica runs each shard program's chain
//! work, until when, and under which fencing epoch; and the replicas'
//! heartbeats, which say how many share the shards.
//!
//! Times are Unix milliseconds on the database's clock, so replicas whose
//! clocks disagree still agree on who holds what. The epoch grows on every
//! change of owner (Temporal's shard RangeID): a chain-work store made by
//! [`Store::for_shard`] checks it in every write transaction and refuses
//! the write once it has moved on: on SQLite when the transaction begins
//! (its writers take turns), on PostgreSQL just before the commit, with a
//! shared lock on the lease row. A takeover (which updates the row) waits
//! for writes already past that check to commit, so every write either
//! commits under its epoch or is refused. One check per transaction, and
//! holding the lock only from the check to the commit means a writer
//! frozen mid-transaction (SIGSTOP, a stalled VM) does not hold the
//! takeover up.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use sqlx::Row as _;

use super::error::{StoreError, StoreResult};
use super::{rows::unsigned, Backend, Store, WriteTx};

/// What a chain-work store carries: its shard and the epoch it was granted.
pub struct ShardFence {
    /// The shard's program id (base58): the `shard` of every row written.
    shard: String,
    /// The lease epoch granted to this writer.
    epoch: i64,
    /// Called once per refused write (the `valence_fenced_writes_total`
    /// counter); the store itself knows no metrics.
    on_refused: Arc<dyn Fn() + Send + Sync>,
    /// The epoch it found once it was refused: epochs only grow, so every
    /// later write is refused without asking the database.
    moved_to: AtomicI64,
}

impl ShardFence {
    /// A fence for writes of `shard`'s chain work under `epoch`.
    pub fn new(shard: &str, epoch: i64, on_refused: Arc<dyn Fn() + Send + Sync>) -> ShardFence {
        ShardFence {
            shard: shard.to_string(),
            epoch,
            on_refused,
            moved_to: AtomicI64::new(0),
        }
    }

    fn refuse(&self, current: i64) -> StoreError {
        self.moved_to.store(current, Ordering::Relaxed);
        (self.on_refused)();
        StoreError::Fenced {
            shard: self.shard.clone(),
            held: self.epoch,
            current,
        }
    }
}

/// One shard's lease as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRow {
    /// Program id.
    pub shard: String,
    /// Holder; empty when released or never taken.
    pub owner: String,
    /// Fencing epoch.
    pub epoch: i64,
    /// When the lease runs out unless renewed (database clock, Unix ms).
    pub expires_at: i64,
    /// Highest slot the owner's monitor applied, as last reported.
    pub last_slot: u64,
    /// The chain's slot when the owner last reported.
    pub head_slot: u64,
    /// The database's clock when this was read.
    pub now: i64,
}

impl LeaseRow {
    /// Held by someone and not run out.
    pub fn is_live(&self) -> bool {
        !self.owner.is_empty() && self.expires_at > self.now
    }
}

/// How long a takeover waits for writes under the old epoch to commit
/// (PostgreSQL). A replica frozen between its last check and its commit
/// holds the lease row; then the takeover gives up for this round and tries
/// again, and `idle_in_transaction_session_timeout` ends the frozen
/// transaction.
const TAKEOVER_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";

impl Store {
    /// A handle for one shard's chain work: every row it writes carries
    /// the shard, and every write transaction is refused once the shard's
    /// lease epoch is no longer `fence.epoch`.
    pub fn for_shard(&self, fence: ShardFence) -> Store {
        Store {
            fence: Some(Arc::new(fence)),
            ..self.clone()
        }
    }

    /// The shard rows written through this handle belong to ('' for none).
    pub(crate) fn shard_tag(&self) -> &str {
        self.fence.as_ref().map_or("", |f| f.shard.as_str())
    }

    /// The database clock in Unix ms, as an SQL expression.
    fn now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// Refuses `tx` when the shard's epoch is not the fence's: at once when
    /// an earlier write was refused, otherwise by reading the lease row at
    /// the backend's one check point (see the module documentation).
    pub(super) async fn check_fence(
        &self,
        tx: &mut WriteTx<'_>,
        fence: &ShardFence,
        at_commit: bool,
    ) -> StoreResult<()> {
        let moved_to = fence.moved_to.load(Ordering::Relaxed);
        if moved_to != 0 {
            return Err(fence.refuse(moved_to));
        }
        let sql = match (self.backend, at_commit) {
            (Backend::Sqlite, false) => "SELECT epoch FROM shard_leases WHERE shard = $1",
            (Backend::Postgres, true) => {
                "SELECT epoch FROM shard_leases WHERE shard = $1 FOR SHARE"
            }
            _ => return Ok(()),
        };
        let current: Option<i64> = sqlx::query_scalar(sql)
            .bind(&fence.shard)
            .fetch_optional(tx.conn())
            .await?;
        match current {
            Some(current) if current == fence.epoch => Ok(()),
            // No lease row (it cannot go away): refused, at "epoch -1".
            current => Err(fence.refuse(current.unwrap_or(-1))),
        }
    }

    /// Makes sure every shard in `shards` has a lease row (unowned at
    /// epoch 0 when new).
    pub async fn ensure_leases(&self, shards: &[String]) -> StoreResult<()> {
        for shard in shards {
            sqlx::query(
                "INSERT INTO shard_leases (shard) VALUES ($1) ON CONFLICT (shard) DO NOTHING",
            )
            .bind(shard)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Every lease, by shard.
    pub async fn leases(&self) -> StoreResult<Vec<LeaseRow>> {
        let sql = format!(
            "SELECT shard, owner, epoch, expires_at, last_slot, head_slot, {} AS now \
             FROM shard_leases ORDER BY shard",
            self.now_sql()
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRow {
                    shard: r.try_get("shard")?,
                    owner: r.try_get("owner")?,
                    epoch: r.try_get("epoch")?,
                    expires_at: r.try_get("expires_at")?,
                    last_slot: unsigned(r, "last_slot")?,
                    head_slot: unsigned(r, "head_slot")?,
                    now: r.try_get("now")?,
                })
            })
            .collect()
    }

    /// Notes that `replica` is alive, and returns the replicas seen within
    /// `ttl_ms` (itself included), sorted by id.
    pub async fn replica_heartbeat(&self, replica: &str, ttl_ms: u64) -> StoreResult<Vec<String>> {
        let now = self.now_sql();
        let beat = format!(
            "INSERT INTO replicas (replica_id, last_seen) VALUES ($1, {now}) \
             ON CONFLICT (replica_id) DO UPDATE SET last_seen = excluded.last_seen"
        );
        sqlx::query(&beat).bind(replica).execute(&self.pool).await?;
        // Rows silent for a hundred lease lengths are of replicas long gone.
        let forget = format!("DELETE FROM replicas WHERE last_seen < {now} - $1");
        sqlx::query(&forget)
            .bind(100 * ttl_ms as i64)
            .execute(&self.pool)
            .await?;
        let live = format!(
            "SELECT replica_id FROM replicas WHERE last_seen > {now} - $1 ORDER BY replica_id"
        );
        Ok(sqlx::query_scalar(&live)
            .bind(ttl_ms as i64)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Takes `shard`'s lease for `replica` when it is free or has run out
    /// (on SQLite always: one process owns the file, so a lease left by a
    /// process that died is surely nobody's); the new epoch when taken.
    pub async fn acquire_lease(
        &self,
        shard: &str,
        replica: &str,
        ttl_ms: u64,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query(TAKEOVER_LOCK_TIMEOUT).execute(&mut *tx).await?;
        }
        let now = self.now_sql();
        let free = match self.backend {
            Backend::Postgres => format!(" AND (owner = '' OR expires_at <= {now})"),
            Backend::Sqlite => String::new(),
        };
        let sql = format!(
            "UPDATE shard_leases SET owner = $1, epoch = epoch + 1, expires_at = {now} + $2 \
             WHERE shard = $3{free} RETURNING epoch"
        );
        let epoch: Option<i64> = match sqlx::query_scalar(&sql)
            .bind(replica)
            .bind(ttl_ms as i64)
            .bind(shard)
            .fetch_optional(&mut *tx)
            .await
        {
            Ok(epoch) => epoch,
            // A lock timeout (old-epoch writes in flight): try next round.
            Err(e) if is_lock_timeout(&e) => {
                tracing::info!(shard, "lease takeover waits for writes under the old epoch");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        Ok(epoch)
    }

    /// Extends the lease `replica` holds at `epoch` and reports the shard's
    /// progress; false when the lease is no longer its own at that epoch.
    pub async fn renew_lease(
        &self,
        shard: &str,
        replica: &str,
        epoch: i64,
        ttl_ms: u64,
        slots: (u64, u64),
    ) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE shard_leases SET expires_at = {} + $1, last_slot = $2, head_slot = $3 \
             WHERE shard = $4 AND owner = $5 AND epoch = $6",
            self.now_sql()
        );
        let renewed = sqlx::query(&sql)
            .bind(ttl_ms as i64)
            .bind(slots.0 as i64)
            .bind(slots.1 as i64)
            .bind(shard)
            .bind(replica)
            .bind(epoch)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(renewed == 1)
    }

    /// Gives the lease up at once (its work has stopped), so another
    /// replica need not wait for it to run out.
    pub async fn release_lease(&self, shard: &str, replica: &str, epoch: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE shard_leases SET owner = '', expires_at = 0 \
             WHERE shard = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(shard)
        .bind(replica)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A replica that stops takes its heartbeat row with it, so the others
    /// rebalance at once rather than after the TTL.
    pub async fn forget_replica(&self, replica: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM replicas WHERE replica_id = $1")
            .bind(replica)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rows stored before shards existed (shard '') belong to the only
    /// configured shard; run at start when there is exactly one.
    pub async fn assign_unsharded_rows(&self, shard: &str) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let mut moved = 0;
        for table in ["account_requests", "accounts", "sessions"] {
            let sql = format!("UPDATE {table} SET shard = $1 WHERE shard = ''");
            moved += sqlx::query(&sql)
                .bind(shard)
                .execute(tx.conn())
                .await?
                .rows_affected();
        }
        let progressions = "UPDATE linear_progressions SET shard = $1 WHERE shard = '' AND entity_id IN \
             (SELECT id FROM account_requests WHERE shard = $2 UNION ALL SELECT id FROM accounts WHERE shard = $3 \
              UNION ALL SELECT id FROM sessions WHERE shard = $4)";
        let mut query = sqlx::query(progressions);
        for _ in 0..4 {
            query = query.bind(shard);
        }
        query.execute(tx.conn()).await?;
        self.commit(tx).await?;
        Ok(moved)
    }
}

/// PostgreSQL's lock_not_available (55P03), which `lock_timeout` raises.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "55P03")
}
