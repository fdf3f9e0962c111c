//! The store: every piece of state (accounts, sessions, progressions, rules,
//! singletons and the event log) in SQLite (default, embedded) or
//! PostgreSQL (production, several replicas).
//!
//! Both backends run the same SQL through sqlx's `Any` driver (numbered
//! `$N` parameters, times as Unix milliseconds, lists as JSON text); what
//! differs between them lives in [`sqlite`] and [`postgres`] behind the
//! [`Backend`] enum. Every mutation appends its lifecycle events in the same
//! transaction, so the log never disagrees with the tables.

pub mod actions;
mod appends;
mod batch;
mod chain;
mod entities;
mod error;
mod event_types;
mod events;
mod factory;
mod leader_lock;
mod leadership;
mod leases;
pub mod postgres;
mod records;
mod requests;
mod rows;
mod rules;
mod singletons;
pub mod sqlite;
mod states;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{any::AnyPoolOptions, AnyPool, Executor};
use tokio::sync::{Mutex, MutexGuard, Notify};

pub use actions::{AccountFacts, ActionEnd, LiveSession, NewMatch, PendingAction};
pub use appends::AppendWatch;
pub use batch::ChainWrite;
pub use entities::{
    AccountRecord, AccountRequestRecord, ConsumptionRecord, SessionFilter, SessionRecord,
    StoreStats,
};
pub use error::{StoreError, StoreResult};
pub use events::{EventQuery, NewEvent};
pub use factory::{FactoryStep, ReservationRecord, StepOutcome};
pub use leader_lock::{LockConnection, LockFuture};
pub use leases::{LeaseRow, ShardFence};
pub use records::{
    CreatedKey, StoredAccount, StoredProgression, StoredRequest, StoredSession, StoredTransition,
};
pub use requests::{AttemptFailure, ClaimedRequest};
pub use rules::StoredRule;
pub use singletons::{ConfigVersionRow, SingletonRow, SingletonSuccess};
pub use sqlite::ProcessLock;
pub use states::{
    ActionStatus, EntityKind, LinearState, RequestStatus, SingletonState, UnknownState,
};

use crate::config::DatabaseConfig;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (one server process).
    Sqlite,
    /// A PostgreSQL server (any number of replicas).
    Postgres,
}

impl Backend {
    /// The backend a database URL names (`sqlite:` or anything PostgreSQL takes).
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// Short name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// SQLite has one writer at a time and upgrades read transactions to
    /// write lazily, which fails instead of waiting when two race. Writers
    /// in this process take turns here instead.
    write_lock: Option<Arc<Mutex<()>>>,
    /// Woken after every commit that appended events.
    appended: Arc<Notify>,
    /// The last counts and the log bounds they were taken at (see
    /// [`Store::stats`]).
    stats_cache: Arc<tokio::sync::Mutex<Option<(LogBounds, StoreStats)>>>,
    /// For a shard's chain work: the shard its rows are tagged with and the
    /// lease epoch every write transaction must still hold (see
    /// [`Store::for_shard`]). None: writes of no shard, unfenced.
    fence: Option<Arc<ShardFence>>,
}

/// Newest and oldest sequence of the event log: every change to what
/// [`StoreStats`] counts appends an event (and pruning moves the oldest),
/// so equal bounds mean equal counts.
type LogBounds = (u64, u64);

/// A write transaction (and, on SQLite, the writer's turn).
pub struct WriteTx<'a> {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<MutexGuard<'a, ()>>,
    appended_events: bool,
}

impl Store {
    /// Connects, creating the SQLite file when missing, and applies migrations.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(&config.url);
        let url = match backend {
            Backend::Sqlite => sqlite::connect_url(&config.url),
            Backend::Postgres => config.url.clone(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(sqlite::CONNECTION_PRAGMAS).await?;
                    } else {
                        conn.execute(postgres::CONNECTION_SETTINGS).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the {} store", backend.name()))?;
        let store = Store {
            pool,
            backend,
            url,
            write_lock: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            appended: Arc::new(Notify::new()),
            stats_cache: Arc::default(),
            fence: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Sqlite => sqlite::migrate(&self.pool).await,
            Backend::Postgres => postgres::migrate(&self.pool).await,
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connection URL (PostgreSQL listeners open their own connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Woken after each commit that appended events in this process.
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Starts a write transaction.
    pub(crate) async fn begin(&self) -> StoreResult<WriteTx<'_>> {
        let turn = match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let tx = self.pool.begin().await?;
        let tx = WriteTx {
            tx,
            _turn: turn,
            appended_events: false,
        };
        self.fence_point(tx, false).await
    }

    /// A shard's chain work checks its fence at the start (`at_commit`
    /// false) and the end of every write transaction (see `leases`); a
    /// refused one is rolled back here.
    async fn fence_point<'a>(
        &self,
        mut tx: WriteTx<'a>,
        at_commit: bool,
    ) -> StoreResult<WriteTx<'a>> {
        let Some(fence) = &self.fence else {
            return Ok(tx);
        };
        if let Err(e) = self.check_fence(&mut tx, fence, at_commit).await {
            if let Err(rollback) = tx.tx.rollback().await {
                tracing::debug!(error = %rollback, "rolling back a fenced write failed");
            }
            return Err(e);
        }
        Ok(tx)
    }

    /// Makes writers of entity `id` take turns until `tx` ends (PostgreSQL;
    /// SQLite writers already take turns for the whole transaction).
    pub(crate) async fn lock_entity(&self, tx: &mut WriteTx<'_>, id: &str) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query(postgres::ENTITY_LOCK)
                .bind(id)
                .execute(tx.conn())
                .await?;
        }
        Ok(())
    }

    /// [`Self::lock_entity`] (the same key space as `postgres::ENTITY_LOCK`)
    /// for many ids in one statement; callers pass
    /// them sorted, so two writers of overlapping sets cannot deadlock.
    pub(crate) async fn lock_entities(
        &self,
        tx: &mut WriteTx<'_>,
        ids: &[&str],
    ) -> StoreResult<()> {
        if self.backend != Backend::Postgres || ids.is_empty() {
            return Ok(());
        }
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT pg_advisory_xact_lock(7746002, hashtext(id)) FROM (VALUES {}) AS locked (id)",
                rows::value_rows(self.backend, chunk.len(), 1)
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            query.execute(tx.conn()).await?;
        }
        Ok(())
    }

    /// Ends a write: commits when it changed something, otherwise (or on
    /// an error) rolls back, awaited. A dropped transaction's rollback would
    /// run only when its connection is next used, and until then SQLite's
    /// write lock stays held against the next writer ("database is locked").
    pub(crate) async fn finish<T: Changes>(
        &self,
        tx: WriteTx<'_>,
        result: StoreResult<T>,
    ) -> StoreResult<T> {
        match result {
            Ok(changes) if changes.any() => {
                self.commit(tx).await?;
                Ok(changes)
            }
            Ok(nothing) => {
                tx.tx.rollback().await?;
                Ok(nothing)
            }
            Err(e) => {
                if let Err(rollback) = tx.tx.rollback().await {
                    tracing::debug!(error = %rollback, "rolling back a failed write failed");
                }
                Err(e)
            }
        }
    }

    /// Commits, then wakes the event tailer if events were appended. A
    /// shard's chain work checks its fence first (see `leases`).
    pub(crate) async fn commit(&self, tx: WriteTx<'_>) -> StoreResult<()> {
        let tx = self.fence_point(tx, true).await?;
        let appended = tx.appended_events;
        tx.tx.commit().await?;
        if appended {
            self.appended.notify_one();
        }
        Ok(())
    }
}

/// What a write reports: whether it changed anything (then it commits).
pub(crate) trait Changes {
    fn any(&self) -> bool;
}

impl Changes for bool {
    fn any(&self) -> bool {
        *self
    }
}

impl Changes for usize {
    fn any(&self) -> bool {
        *self > 0
    }
}

impl WriteTx<'_> {
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds to a protobuf timestamp.
pub fn timestamp(ms: i64) -> valence_lifecycle_api::Timestamp {
    valence_lifecycle_api::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}
