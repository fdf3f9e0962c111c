//! One reconciliation pass: every record of the program, read with
//! getProgramAccounts and applied; what did not change since the last
//! pass is skipped by its fingerprint. Reported per pass as metrics and a
//! log line; stops at a record boundary when the monitor is asked to.

use std::time::Instant;

use solana_sdk::pubkey::Pubkey;
use valence_lifecycle_api::v1::ComponentState;

use super::{
    apply::{Pending, Prepared},
    Monitor, Source,
};
use crate::{
    chain::codec::{record_discriminator, RECORD_NAMES},
    supervisor::Ctx,
    telemetry::cpu_seconds,
};

/// Records applied between heartbeats (a pass over 10^5 changed records
/// must not look like a hung monitor).
const BEAT_EVERY: usize = 1024;

/// Changed records stored per transaction. Large enough that commits and
/// the per-batch existence query stop dominating ingest (256 made a
/// 20,000-record catch-up a quarter slower), small enough that other
/// writers (API, builder) wait at most one batch, about 0.1 s, for
/// SQLite's single writer.
const BATCH: usize = 1024;

/// Creating transactions looked up per pass at most (see
/// `Monitor::name_creator`): a pass that finds thousands of new records is
/// a catch-up, and ingest speed matters more there.
const LOOKUPS_PER_PASS: usize = 256;

/// What one pass found.
#[derive(Debug, Default)]
struct Tally {
    seen: u64,
    changed: u64,
    unstored: Vec<(Pubkey, String)>,
}

impl Monitor {
    /// Reads every record of the program and applies what changed.
    pub(super) async fn reconcile(&self, ctx: &Ctx) {
        let started = Instant::now();
        let cpu_before = cpu_seconds();
        // Every record the monitor stores or reads (singleton state is
        // singleton administration's).
        let discriminators: Vec<[u8; 8]> = RECORD_NAMES
            .iter()
            .filter(|n| **n != "SingletonState")
            .map(|n| record_discriminator(n))
            .collect();
        let (slot, accounts) = match self.chain.program_accounts(&discriminators).await {
            Ok(answer) => answer,
            Err(e) => {
                // The chain-rpc check reports the endpoint's health.
                tracing::warn!(error = format!("{e:#}"), "reconciliation failed");
                return;
            }
        };
        self.pass_began();
        let fetched = started.elapsed();
        self.metrics
            .reconciliation_fetch_cpu
            .inc_by((cpu_seconds() - cpu_before).max(0.0));
        let mut tally = Tally::default();
        let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
        let mut lookups = 0;
        for (i, (key, data)) in accounts.into_iter().enumerate() {
            if ctx.cancel.is_cancelled() {
                tracing::info!(applied = i, "reconciliation stopped at a record boundary");
                return;
            }
            if i % BEAT_EVERY == BEAT_EVERY - 1 {
                ctx.heartbeat.beat();
            }
            tally.seen += 1;
            match self.prepare(key, &data, slot, Source::Reconciliation) {
                Prepared::Unchanged => {}
                Prepared::Counted => tally.changed += 1,
                Prepared::Write(mut pending) => {
                    tally.changed += 1;
                    // After catch-up a new record is a change of the
                    // moment: name its transaction (bounded per pass; a
                    // fresh server's catch-up keeps observation slots).
                    if self.caught_up() && lookups < LOOKUPS_PER_PASS {
                        lookups += 1;
                        self.name_creator(&mut pending).await;
                    }
                    batch.push(*pending);
                    if batch.len() == BATCH {
                        tally.unstored.extend(self.write_batch(&batch).await);
                        batch.clear();
                    }
                }
            }
        }
        if !batch.is_empty() {
            tally.unstored.extend(self.write_batch(&batch).await);
        }
        self.report_unstored(&tally.unstored).await;
        if tally.unstored.is_empty() {
            self.passes_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Everything the program held at `slot` is stored: the shard
            // has caught up to it, whether or not anything changed.
            self.view
                .applied_slot
                .fetch_max(slot, std::sync::atomic::Ordering::Relaxed);
        }
        self.record_pass(&tally, started, fetched, cpu_before);
        crate::telemetry::release_freed_memory();
        self.backfill().await;
    }

    fn record_pass(
        &self,
        tally: &Tally,
        started: Instant,
        fetched: std::time::Duration,
        cpu_before: f64,
    ) {
        let elapsed = started.elapsed();
        let cpu = (cpu_seconds() - cpu_before).max(0.0);
        let m = &self.metrics;
        m.reconciliation_duration.observe(elapsed.as_secs_f64());
        m.reconciliation_cpu.inc_by(cpu);
        m.reconciliation_accounts.set(tally.seen);
        m.reconciliation_changed.set(tally.changed);
        let quiet = tally.changed == 0 && tally.unstored.is_empty();
        // A line per pass; at debug when nothing changed, so a quiet
        // program does not fill the log every POLL_INTERVAL.
        macro_rules! pass_line {
            ($level:ident) => {
                tracing::$level!(
                    accounts = tally.seen,
                    changed = tally.changed,
                    unstored = tally.unstored.len(),
                    fetch_ms = fetched.as_millis() as u64,
                    total_ms = elapsed.as_millis() as u64,
                    cpu_ms = (cpu * 1000.0) as u64,
                    "reconciliation pass"
                )
            };
        }
        if quiet {
            pass_line!(debug);
        } else {
            pass_line!(info);
        }
    }

    /// Health shows a monitor that cannot store what the chain holds: it is
    /// Degraded, naming a record and the cause, while a pass leaves records
    /// unstored, and Running again after a pass that stores everything.
    async fn report_unstored(&self, unstored: &[(Pubkey, String)]) {
        let name = &self.view.names.monitor();
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
}

impl Monitor {
    /// Whether a pass of this process has stored everything once: records
    /// it finds new after that appeared while it was watching.
    fn caught_up(&self) -> bool {
        self.passes_done.load(std::sync::atomic::Ordering::Relaxed) > 0
    }
}
