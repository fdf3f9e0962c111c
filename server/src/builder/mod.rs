//! The builder: turns pending account requests into initialized accounts
//! on chain, exactly once, with every failure visible and recoverable.
//!
//! - Requests come from the store's queue (the monitor records those placed
//!   on chain; RequestAccount places and records them itself). Claiming is a
//!   conditional update, so a request has one worker.
//! - Each account lives at an address derived from its request
//!   ([`plan`]), so the chain itself says whether an earlier attempt, a
//!   crashed run or another replica already created it; nothing is created
//!   twice.
//! - At most `service.max_concurrent_creations` attempts talk to the chain
//!   at once; a request waiting for its next retry holds no slot.
//! - Failures are retried with backoff (`[retry]`, seed 001) and then parked
//!   as FAILED until RetryAccountRequest puts them back.

mod attempt;
mod clock;
pub mod placing;
pub mod plan;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

pub use clock::PdaClock;

use crate::{
    chain::{Chain, RetryPolicy},
    config::Config,
    store::Store,
    supervisor::Ctx,
    telemetry::Metrics,
};

/// How often the queue is checked when no event woke the builder.
const POLL: Duration = Duration::from_secs(1);

/// Requests taken from the queue per allowed creation: enough to keep the
/// chain slots busy while others wait for a retry, bounded so one replica
/// does not hoard the queue.
const CLAIMS_PER_SLOT: usize = 4;

/// The builder component.
pub struct Builder {
    chain: Chain,
    store: Store,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
    initialize: bool,
    slots: Semaphore,
    max_claimed: usize,
    in_flight: AtomicU64,
    /// PDAComputed's deadline clock, started by the monitor.
    clock: Arc<PdaClock>,
}

impl Builder {
    /// A builder for `chain` with the `[service]` and `[retry]` settings.
    pub fn new(
        chain: Chain,
        store: Store,
        metrics: Arc<Metrics>,
        config: &Config,
        clock: Arc<PdaClock>,
    ) -> Arc<Builder> {
        let limit = config.service.max_concurrent_creations;
        Arc::new(Builder {
            chain,
            store,
            metrics,
            retry: RetryPolicy::from(&config.retry),
            initialize: config.service.initialize_accounts,
            slots: Semaphore::new(limit),
            max_claimed: limit * CLAIMS_PER_SLOT,
            in_flight: AtomicU64::new(0),
            clock,
        })
    }

    /// Works the queue until cancelled. `head` changes whenever events are
    /// appended (a new request is one), so new work is noticed at once.
    pub async fn run(
        self: Arc<Self>,
        mut head: watch::Receiver<u64>,
        ctx: Ctx,
    ) -> anyhow::Result<()> {
        let cancel = ctx.cancel.clone();
        let mut beat = ctx.heartbeat.ticker();
        if self.chain.wallet.is_none() {
            tracing::warn!(
                "no service wallet (service.keypair_path / WALLET_PATH): the builder is idle"
            );
            ctx.heartbeat.beat_while(cancel.cancelled()).await;
            return Ok(());
        }
        let resumed = self.store.requeue_interrupted().await?;
        if resumed > 0 {
            tracing::info!(resumed, "resuming requests an earlier run left in progress");
        }
        let mut workers = JoinSet::new();
        loop {
            self.claim(&mut workers, &cancel).await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = beat.tick() => {}
                _ = head.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                Some(done) = workers.join_next(), if !workers.is_empty() => log_worker_end(done),
            }
            ctx.heartbeat.beat();
        }
        // Workers stop at their next safe point; a request they leave
        // PROCESSING is resumed (after a chain check) at the next start.
        while let Some(done) = workers.join_next().await {
            log_worker_end(done);
        }
        Ok(())
    }

    /// Takes as many pending requests as there is room for.
    async fn claim(self: &Arc<Self>, workers: &mut JoinSet<()>, cancel: &CancellationToken) {
        while let Some(done) = workers.try_join_next() {
            log_worker_end(done);
        }
        let room = self.max_claimed.saturating_sub(workers.len());
        if room == 0 || cancel.is_cancelled() {
            return;
        }
        match self.store.claim_pending(room).await {
            Ok(claimed) => {
                for request in claimed {
                    workers.spawn(self.clone().process(request, cancel.clone()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the request queue failed; trying again"),
        }
    }

    /// Holds one of the limited chain slots for the duration of `work`.
    async fn in_slot<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let _permit = self.slots.acquire().await;
        let _counted = InFlight::enter(self);
        work.await
    }
}

/// Counts an attempt in flight for as long as it lives (also when the
/// attempt is cancelled or panics).
struct InFlight<'a>(&'a Builder);

impl<'a> InFlight<'a> {
    fn enter(builder: &'a Builder) -> Self {
        let now = builder.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let metrics = &builder.metrics;
        metrics.builder_in_flight.set(now);
        if now > metrics.builder_in_flight_peak.get() {
            metrics.builder_in_flight_peak.set(now);
        }
        InFlight(builder)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = self.0.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.metrics.builder_in_flight.set(now);
    }
}

fn log_worker_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "a builder worker panicked; its request is resumed at the next start");
        }
    }
}

/// Failure reason of a request whose expected hash differs from the state
/// the builder would write (documented in the proto and README).
pub const HASH_MISMATCH: &str = "hash_mismatch";
