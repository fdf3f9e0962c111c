//! The monitor: turns the shard program's on-chain state into stored
//! records, linear progressions and lifecycle events.
//!
//! It reconciles at start and every POLL_INTERVAL (getProgramAccounts
//! filtered by record discriminator), and in between applies live updates
//! from programSubscribe and logsSubscribe. Everything it applies is
//! idempotent (the store's upserts and the log-event dedupe table), so the
//! same state seen twice, or again after a restart, changes nothing.
//!
//! It is the writer of the chain-derived records (with the builder, for
//! the accounts it initializes), and runs only on the leader: a record the
//! API placed on chain reaches the store through here, once.

mod apply;

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::{mpsc, Mutex};

use crate::{
    chain::{
        codec::{record_discriminator, RECORD_NAMES},
        pubsub::{self, Feed, Update},
        Chain,
    },
    store::Store,
    supervisor::{Ctx, StatusBoard},
    telemetry::Metrics,
};

/// Live updates buffered between the websockets and the monitor; when full,
/// the websocket tasks wait (and the reconciliation catches up).
const UPDATE_BUFFER: usize = 1024;

/// Signatures read per getSignaturesForAddress page, and pages per pass.
const BACKFILL_PAGE: usize = 200;
const BACKFILL_PAGES: usize = 10;

/// Distinct undecodable (account, data) pairs remembered, so each is counted
/// and logged once rather than at every reconciliation.
const MAX_REMEMBERED_FAILURES: usize = 10_000;

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

/// The monitor component.
pub(crate) struct Monitor {
    chain: Chain,
    store: Store,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    poll: Duration,
    /// Wallet balance below which health is degraded.
    /// Newest transaction the backfill has read.
    backfill_cursor: Mutex<Option<String>>,
    failures_seen: Mutex<HashSet<(solana_sdk::pubkey::Pubkey, u64)>>,
}

impl Monitor {
    /// A monitor of `chain` writing to `store`.
    pub(crate) fn new(
        chain: Chain,
        store: Store,
        metrics: Arc<Metrics>,
        board: Arc<StatusBoard>,
        poll: Duration,
    ) -> Arc<Self> {
        Arc::new(Monitor {
            chain,
            store,
            metrics,
            board,
            poll,
            backfill_cursor: Mutex::new(None),
            failures_seen: Mutex::new(HashSet::new()),
        })
    }

    /// Runs until cancelled, beating between steps (a reconciliation that
    /// hangs past the heartbeat timeout gets the monitor restarted).
    pub(crate) async fn run(self: Arc<Self>, ctx: Ctx) -> anyhow::Result<()> {
        let cancel = ctx.cancel.clone();
        let mut beat = ctx.heartbeat.ticker();
        let (tx, mut rx) = mpsc::channel(UPDATE_BUFFER);
        let feeds = cancel.child_token();
        for feed in Feed::ALL {
            tokio::spawn(pubsub::run(
                self.chain.clone(),
                feed,
                tx.clone(),
                self.board.clone(),
                feeds.clone(),
            ));
        }
        drop(tx);
        tracing::info!(program = %self.chain.program_id, rpc = %self.chain.rpc_url, "monitor started");
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = beat.tick() => {}
                _ = tick.tick() => self.reconcile().await,
                Some(update) = rx.recv() => self.apply_update(update).await,
            }
            ctx.heartbeat.beat();
        }
        feeds.cancel();
        Ok(())
    }

    /// Reads every record of the program and applies it.
    async fn reconcile(&self) {
        let discriminators: Vec<[u8; 8]> = RECORD_NAMES[..4]
            .iter()
            .map(|n| record_discriminator(n))
            .collect();
        match self.chain.program_accounts(&discriminators).await {
            Ok((slot, accounts)) => {
                let mut unstored = Vec::new();
                for (key, data) in accounts {
                    if let Err(why) = self
                        .apply_account(key, &data, slot, Source::Reconciliation)
                        .await
                    {
                        unstored.push((key, why));
                    }
                }
                self.report_unstored(&unstored).await;
                self.backfill().await;
            }
            Err(e) => {
                // The chain-rpc check reports the endpoint's health.
                tracing::warn!(error = format!("{e:#}"), "reconciliation failed");
            }
        }
    }

    /// Health shows a monitor that cannot store what the chain holds: it is
    /// Degraded, naming a record and the cause, while a pass leaves records
    /// unstored, and Running again after a pass that stores everything.
    async fn report_unstored(&self, unstored: &[(solana_sdk::pubkey::Pubkey, String)]) {
        use valence_lifecycle_api::v1::ComponentState;
        let name = crate::components::names::MONITOR;
        match (unstored.first(), self.board.state(name)) {
            (Some((key, why)), ComponentState::Running) => {
                let message = format!(
                    "{} chain record(s) could not be stored, e.g. {key}: {why}",
                    unstored.len()
                );
                self.board
                    .set(name, ComponentState::Degraded, message)
                    .await;
            }
            (None, ComponentState::Degraded) => {
                self.board
                    .set(
                        name,
                        ComponentState::Running,
                        "every chain record stored again",
                    )
                    .await;
            }
            _ => {}
        }
    }

    async fn apply_update(&self, update: Update) {
        match update {
            Update::Account { key, data, slot } => {
                // A failure is retried (and reported) by the next pass.
                let _ = self
                    .apply_account(key, &data, slot, Source::Websocket)
                    .await;
            }
            Update::Logs {
                signature,
                slot,
                logs,
                failed,
            } => self.apply_logs(&signature, slot, &logs, failed).await,
        }
    }

    /// Reads the logs of every program transaction since the last pass
    /// (getSignaturesForAddress + getTransaction), so events a dropped
    /// logsSubscribe missed are still recorded. Applying twice is harmless
    /// (events are deduplicated by signature and position).
    async fn backfill(&self) {
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
                match self.chain.transaction_logs(&tx.signature).await {
                    Ok(logs) => self.apply_logs(&tx.signature, tx.slot, &logs, false).await,
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
