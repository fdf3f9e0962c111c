//! Leadership among replicas. Every replica serves reads and event
//! streams; exactly one, the leader, runs the work of no shard (the
//! orchestrator and its actions), so no action is executed twice. Each
//! shard's chain work (monitor, builder) follows its own lease instead
//! (see `shards::leases`).
//!
//! - SQLite: one process per file (see `store::sqlite::ProcessLock`), so the
//!   only server leads for its whole run.
//! - PostgreSQL: the leader holds a session advisory lock on a dedicated
//!   connection. If the leader dies its connection closes and PostgreSQL
//!   releases the lock; a follower, trying every `leader.retry_interval_ms`,
//!   takes it. TCP keepalives on that connection bound how long a vanished
//!   (not closed) connection keeps the lock. The leader checks its connection
//!   every `leader.check_interval_ms` and steps down at once when it fails.
//!
//! The newcomer resumes from stored state: the builder re-checks the chain
//! before sending anything, and stored writes are idempotent.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::watch;
use valence_lifecycle_api::v1::LeaderInfo;

use crate::{
    config::LeaderConfig,
    store::{now_ms, timestamp, LockConnection, Store},
    supervisor::Ctx,
    telemetry::Metrics,
};

/// Longest wait for the lock connection to open or answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// This replica's view of leadership.
pub(crate) struct Leadership {
    replica_id: String,
    leading: watch::Sender<bool>,
    since_ms: AtomicI64,
    metrics: Arc<Metrics>,
}

/// `<hostname>-<pid>`, the default replica id.
pub(crate) fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    format!("{host}-{}", std::process::id())
}

impl Leadership {
    /// Not leading yet.
    pub(crate) fn new(config: &LeaderConfig, metrics: Arc<Metrics>) -> Arc<Leadership> {
        let replica_id = if config.replica_id.is_empty() {
            default_replica_id()
        } else {
            config.replica_id.clone()
        };
        Arc::new(Leadership {
            replica_id,
            leading: watch::channel(false).0,
            since_ms: AtomicI64::new(0),
            metrics,
        })
    }

    /// This replica's id.
    pub(crate) fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Whether this replica leads now.
    pub(crate) fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows changes of [`Leadership::is_leader`].
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// For GetStats and /health.
    pub(crate) async fn info(&self, store: &Store) -> LeaderInfo {
        let current = store.current_leader().await.ok().flatten();
        LeaderInfo {
            replica_id: self.replica_id.clone(),
            is_leader: self.is_leader(),
            leader_replica_id: current.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
            leader_since: current.map(|c| timestamp(c.1)),
        }
    }

    // Owned futures: these run inside the election loop, whose future must
    // be provably Send for the supervisor (borrowed `&self`/`&Store` across
    // awaits trip rustc's higher-ranked Send check there).
    fn gain(
        self: &Arc<Self>,
        store: &Store,
        reason: &'static str,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (me, store) = (self.clone(), store.clone());
        async move {
            let since = now_ms();
            me.since_ms.store(since, Ordering::Relaxed);
            if let Err(e) = store.record_leader(&me.replica_id, since, reason).await {
                tracing::warn!(error = %e, "could not record leadership");
            }
            me.metrics.is_leader.set(1);
            me.metrics.leader_since_seconds.set((since / 1000) as u64);
            tracing::info!(replica = %me.replica_id, reason, "this replica now leads");
            me.leading.send_replace(true);
        }
    }

    fn lose(
        self: &Arc<Self>,
        store: &Store,
        reason: &'static str,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (me, store) = (self.clone(), store.clone());
        async move {
            if !me.is_leader() {
                return;
            }
            me.leading.send_replace(false);
            me.metrics.is_leader.set(0);
            me.metrics.leader_since_seconds.set(0);
            tracing::warn!(replica = %me.replica_id, reason, "this replica stopped leading");
            if let Err(e) = store.record_step_down(&me.replica_id, reason).await {
                tracing::warn!(error = %e, "could not record the step-down");
            }
        }
    }
}

/// The election component: runs until cancelled, keeping
/// [`Leadership::is_leader`] current.
pub(crate) async fn run_election(
    leadership: Arc<Leadership>,
    store: Store,
    config: LeaderConfig,
    ctx: Ctx,
) -> anyhow::Result<()> {
    if !store.needs_leader_lock() {
        leadership
            .gain(&store, "the only server of its SQLite file")
            .await;
        idle(ctx.clone(), None).await;
        leadership.lose(&store, "shutting down").await;
        return Ok(());
    }
    let retry = Duration::from_millis(config.retry_interval_ms);
    let check = Duration::from_millis(config.check_interval_ms);
    while !ctx.cancel.is_cancelled() {
        let Some(mut conn) = lock_connection(&store, &ctx, retry).await else {
            break;
        };
        if !wait_for_lock(&mut conn, &ctx, retry).await {
            break;
        }
        leadership.gain(&store, "acquired the leader lock").await;
        let reason = hold(&mut conn, &ctx, check).await;
        leadership.lose(&store, reason).await;
        if ctx.cancel.is_cancelled() {
            // Release at once, so a follower need not wait for the socket to close.
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.unlock()).await;
        }
    }
    Ok(())
}

/// Opens the dedicated lock connection, retrying until it opens or the
/// component is cancelled (None).
async fn lock_connection(store: &Store, ctx: &Ctx, retry: Duration) -> Option<LockConnection> {
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, store.open_lock_connection()).await {
            Ok(Ok(conn)) => return Some(conn),
            Ok(Err(e)) => tracing::warn!(error = %e, "leader lock connection failed; retrying"),
            Err(_) => tracing::warn!("leader lock connection timed out; retrying"),
        }
        if !idle(ctx.clone(), Some(retry)).await {
            return None;
        }
    }
}

/// Tries the lock every `retry` until it is ours (true) or the component
/// is cancelled or the connection fails (false: reconnect or stop).
async fn wait_for_lock(conn: &mut LockConnection, ctx: &Ctx, retry: Duration) -> bool {
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, conn.try_lock()).await {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "trying the leader lock failed");
                return false;
            }
            Err(_) => {
                tracing::warn!("trying the leader lock timed out");
                return false;
            }
        }
        ctx.heartbeat.beat();
        if !idle(ctx.clone(), Some(retry)).await {
            return false;
        }
    }
}

/// Holds the lock, checking the connection every `check`; returns why
/// leadership ends.
async fn hold(conn: &mut LockConnection, ctx: &Ctx, check: Duration) -> &'static str {
    loop {
        if !idle(ctx.clone(), Some(check)).await {
            return "shutting down";
        }
        match tokio::time::timeout(check.max(Duration::from_secs(1)), conn.ping()).await {
            Ok(Ok(_)) => ctx.heartbeat.beat(),
            _ => return "lost the leader lock connection",
        }
    }
}

/// Beats while waiting `for_` (or until cancelled when None); false when
/// cancelled.
async fn idle(ctx: Ctx, for_: Option<Duration>) -> bool {
    let mut beat = ctx.heartbeat.ticker();
    let deadline = for_.map(|d| tokio::time::Instant::now() + d);
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctx.cancel.cancelled() => return false,
            _ = beat.tick() => ctx.heartbeat.beat(),
            _ = sleep => return true,
        }
    }
}
