//! The monitor: turns the shard program's on-chain state into stored
//! records, linear progressions and lifecycle events.
//!
//! It reconciles at start and every POLL_INTERVAL (getProgramAccounts
//! filtered by record discriminator), and in between applies live updates
//! from programSubscribe and logsSubscribe. Everything it applies is
//! idempotent (the store's upserts and the log-event dedupe table), so the
//! same state seen twice, or again after a restart, changes nothing.
//!
//! Cost follows change, not size: it remembers a fingerprint of every
//! account's data as last applied, so an unchanged account costs a hash
//! and a map lookup, not a decode and a database round trip.
//!
//! It is the writer of the chain-derived records (with the builder, for
//! the accounts it initializes), and runs only on the leader: a record the
//! API placed on chain reaches the store through here, once.

mod apply;
mod events;
mod pass;

pub(crate) use events::{observe_between, CHAIN_LOGS};

use std::{collections::HashMap, sync::Arc, time::Duration};

use solana_sdk::pubkey::Pubkey;
use tokio::sync::{mpsc, Mutex};
use valence_lifecycle_api::v1::ComponentState;

use crate::{
    builder::PdaClock,
    chain::{
        pubsub::{self, Feed, Update},
        Chain,
    },
    shards::ComponentNames,
    store::Store,
    supervisor::{Ctx, StatusBoard},
    telemetry::Metrics,
};

/// Live updates buffered between the websockets and the monitor; when full,
/// the websocket tasks wait (and the reconciliation catches up).
const UPDATE_BUFFER: usize = 1024;

/// How long the monitor waits for its websocket feeds to end when it stops.
const FEED_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Signatures read per getSignaturesForAddress page, and pages per pass.
const BACKFILL_PAGE: usize = 200;
const BACKFILL_PAGES: usize = 10;

/// Where an update came from (a metric label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// A getProgramAccounts pass.
    Reconciliation,
    /// A websocket notification.
    Websocket,
    /// An account fetched because a transaction's events named it.
    Logs,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Reconciliation => "reconciliation",
            Source::Websocket => "websocket",
            Source::Logs => "logs",
        }
    }
}

/// How often the monitor reconciles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Polling {
    /// Between passes (POLL_INTERVAL).
    pub(crate) every: Duration,
    /// Between passes while the websocket feeds are healthy and have not
    /// reconnected since the last pass (LIVE_POLL_INTERVAL).
    pub(crate) when_live: Duration,
}

/// The websocket feeds' (state, since) when a pass began: while they stay
/// the same and Running, nothing was missed.
type FeedMarks = Vec<Option<(i32, i64)>>;

/// What one shard's monitor reports beyond the store: its board names
/// and the highest slot it applied (read by the lease runner).
#[derive(Clone)]
pub(crate) struct ShardView {
    /// Its components' names on the status board.
    pub(crate) names: ComponentNames,
    /// Highest slot applied.
    pub(crate) applied_slot: Arc<std::sync::atomic::AtomicU64>,
}

/// The monitor component.
pub(crate) struct Monitor {
    chain: Chain,
    view: ShardView,
    store: Store,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    polling: Polling,
    /// When the last pass began and the feeds' marks then.
    last_pass: std::sync::Mutex<Option<(std::time::Instant, FeedMarks)>>,
    /// Wallet balance below which health is degraded.
    /// Newest transaction the backfill has read.
    backfill_cursor: Mutex<Option<String>>,
    /// A hash of each account's data as last applied (stored, or found
    /// undecodable and counted once): what lets a pass skip the unchanged.
    /// About 70 bytes an account; bounded by the program's account count.
    fingerprints: std::sync::Mutex<HashMap<Pubkey, u64>>,
    fingerprint_keys: std::hash::RandomState,
    /// Passes that stored everything they found, since this process began.
    passes_done: std::sync::atomic::AtomicU64,
    /// PDAComputed's deadline clock, which the builder stops.
    clock: Arc<PdaClock>,
    /// Size of each SessionQueue of the program, as last seen.
    queues: std::sync::Mutex<HashMap<Pubkey, u64>>,
    /// When events were last lost to log truncation.
    last_gap: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Monitor {
    /// A monitor of `chain` writing to `store`.
    pub(crate) fn new(
        chain: Chain,
        store: Store,
        metrics: Arc<Metrics>,
        board: Arc<StatusBoard>,
        polling: Polling,
        clock: Arc<PdaClock>,
        view: ShardView,
    ) -> Arc<Self> {
        Arc::new(Monitor {
            chain,
            view,
            store,
            metrics,
            board,
            polling,
            last_pass: std::sync::Mutex::new(None),
            backfill_cursor: Mutex::new(None),
            fingerprints: std::sync::Mutex::new(HashMap::new()),
            fingerprint_keys: std::hash::RandomState::new(),
            passes_done: std::sync::atomic::AtomicU64::new(0),
            clock,
            queues: std::sync::Mutex::new(HashMap::new()),
            last_gap: std::sync::Mutex::new(None),
        })
    }

    /// Runs until cancelled, beating between steps (a reconciliation that
    /// hangs past the heartbeat timeout gets the monitor restarted).
    pub(crate) async fn run(self: Arc<Self>, ctx: Ctx) -> anyhow::Result<()> {
        let cancel = ctx.cancel.clone();
        let mut beat = ctx.heartbeat.ticker();
        let (tx, mut rx) = mpsc::channel(UPDATE_BUFFER);
        let feeds = cancel.child_token();
        let mut feed_tasks = Vec::with_capacity(Feed::ALL.len());
        for feed in Feed::ALL {
            feed_tasks.push(tokio::spawn(pubsub::run(
                self.chain.clone(),
                feed,
                self.view.names.feed(feed),
                tx.clone(),
                self.board.clone(),
                feeds.clone(),
            )));
        }
        drop(tx);
        self.board.register(&self.view.names.chain_logs());
        self.clear_gap_health().await;
        tracing::info!(program = %self.chain.program_id, rpc = %self.chain.rpc_url, "monitor started");
        let mut tick = tokio::time::interval(self.polling.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = beat.tick() => {}
                _ = tick.tick() => {
                    if self.pass_due() {
                        self.drain(&mut rx).await;
                        self.reconcile(&ctx).await;
                        self.clear_gap_health().await;
                    }
                }
                Some(update) = rx.recv() => self.apply_update(update).await,
            }
            ctx.heartbeat.beat();
        }
        feeds.cancel();
        // The feeds report Stopped as they end; they end before the monitor
        // does, so a shard handed over leaves nothing behind on the board.
        for task in feed_tasks {
            let _ = tokio::time::timeout(FEED_STOP_TIMEOUT, task).await;
        }
        Ok(())
    }

    /// Applies the live updates already waiting (at most a buffer's worth)
    /// before a pass: they are in chain order, and a pass that read newer
    /// state first would make a session skip the steps in between (reserved
    /// straight to created, its queueing recorded late).
    async fn drain(&self, rx: &mut mpsc::Receiver<Update>) {
        for _ in 0..UPDATE_BUFFER {
            match rx.try_recv() {
                Ok(update) => self.apply_update(update).await,
                Err(_) => break,
            }
        }
    }

    /// The feeds' marks now.
    fn feed_marks(&self) -> FeedMarks {
        Feed::ALL
            .iter()
            .map(|f| self.board.state_since(&self.view.names.feed(*f)))
            .collect()
    }

    /// A pass is due every POLL_INTERVAL, except while both feeds have been
    /// Running, without a reconnect, since the last pass began: then every
    /// LIVE_POLL_INTERVAL.
    fn pass_due(&self) -> bool {
        let last = self.last_pass.lock().expect("last pass lock");
        let Some((began, marks)) = last.as_ref() else {
            return true;
        };
        let running = ComponentState::Running as i32;
        let live = marks
            .iter()
            .all(|m| m.is_some_and(|(state, _)| state == running));
        let unchanged = *marks == self.feed_marks();
        let wait = if live && unchanged {
            self.polling.when_live
        } else {
            self.polling.every
        };
        began.elapsed() >= wait.saturating_sub(Duration::from_millis(50))
    }

    /// Makes the next tick run a pass (a live update could not be stored:
    /// the pass retries it and reports it in health).
    pub(super) fn pass_soon(&self) {
        *self.last_pass.lock().expect("last pass lock") = None;
    }

    /// Notes that a pass began now.
    pub(super) fn pass_began(&self) {
        let marks = self.feed_marks();
        *self.last_pass.lock().expect("last pass lock") = Some((std::time::Instant::now(), marks));
    }

    async fn apply_update(&self, update: Update) {
        match update {
            Update::Account { key, data, slot } => {
                // A failure is retried (and reported) by the next pass.
                if self
                    .apply_account(key, &data, slot, Source::Websocket)
                    .await
                    .is_err()
                {
                    self.pass_soon();
                }
            }
            Update::Logs {
                signature,
                slot,
                logs,
                failed,
                received_at_ms,
            } => {
                self.apply_logs(&signature, slot, &logs, failed, received_at_ms)
                    .await
            }
        }
    }

    /// Reads the logs of every program transaction since the last pass
    /// (getSignaturesForAddress + getTransaction), so events a dropped
    /// logsSubscribe missed are still recorded. Applying twice is harmless
    /// (events are deduplicated by signature and position).
    pub(super) async fn backfill(&self) {
        let mut cursor = self.backfill_cursor.lock().await;
        let transactions = match self
            .chain
            .transactions_since(cursor.as_deref(), BACKFILL_PAGE, BACKFILL_PAGES)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "listing program transactions failed"
                );
                return;
            }
        };
        for tx in transactions {
            if !tx.failed {
                match self.chain.transaction(&tx.signature).await {
                    Ok(fetched) => self.apply_fetched(&tx.signature, tx.slot, &fetched).await,
                    Err(e) => {
                        // Keep the cursor here: the next pass retries from this one.
                        tracing::warn!(signature = %tx.signature, error = format!("{e:#}"), "reading transaction logs failed");
                        return;
                    }
                }
            }
            *cursor = Some(tx.signature);
        }
    }
}

/// The websocket feeds report on the status board, as components of their own.
impl pubsub::FeedStatus for StatusBoard {
    fn register(&self, feed: &str) {
        StatusBoard::register(self, feed);
    }

    async fn report(
        &self,
        feed: &str,
        state: valence_lifecycle_api::v1::ComponentState,
        message: String,
    ) {
        self.set(feed, state, message).await;
    }

    async fn reconnecting(&self, feed: &str, failures: u32, delay: Duration, why: &str) {
        self.restarting(feed, failures, delay, why).await;
    }

    async fn reconnected(&self, feed: &str, message: &str) {
        StatusBoard::reconnected(self, feed, message).await;
    }
}
