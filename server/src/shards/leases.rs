//! The lease runner: one component per replica that keeps its shard leases
//! (issue 19). Every `leases.renew_interval_ms` it
//!
//! 1. beats its replica heartbeat and counts the live replicas;
//! 2. renews the leases it holds, reporting each shard's progress; a lease
//!    it can no longer renew at its epoch was taken, so that shard's work
//!    stops at once (its writes were already refused by the fence);
//! 3. hands over shards above its quota (work stopped first, then the
//!    lease released) and takes free or expired leases up to its quota,
//!    each with a new epoch, starting the shard's monitor and builder on
//!    a store fenced by that epoch.
//!
//! The database arbitrates every change (a guarded UPDATE per lease), so
//! two replicas can disagree about quotas for a round without ever both
//! running one shard's work with a valid epoch.

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use crate::{
    builder, chain::Chain, config::LeasesConfig, monitor, store::LeaseRow, store::ShardFence,
    supervisor::Ctx, supervisor::Policy, supervisor::Supervisor, telemetry::metrics, AppState,
};

use super::{balance, Shard};

/// Longest wait for one lease statement or the chain's slot.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A shard this replica holds, and its running work.
struct Held {
    epoch: i64,
    /// When the lease was last renewed (or taken).
    renewed: Instant,
    work: Supervisor,
    applied_slot: Arc<AtomicU64>,
}

/// The lease runner's state between rounds.
struct Runner {
    state: Arc<AppState>,
    chain: Chain,
    replica: String,
    config: LeasesConfig,
    held: BTreeMap<String, Held>,
}

/// Runs until cancelled; then stops every shard's work and releases its
/// leases, so the other replicas take them over at once.
pub(crate) async fn run(state: Arc<AppState>, ctx: Ctx) -> anyhow::Result<()> {
    let Some(chain) = state.chain.clone() else {
        return Ok(());
    };
    let ids: Vec<String> = state.shards.all().iter().map(|s| s.id.clone()).collect();
    let mut runner = Runner {
        replica: state.leadership.replica_id().to_string(),
        config: state.config.leases.clone(),
        chain,
        state,
        held: BTreeMap::new(),
    };
    runner.state.store.ensure_leases(&ids).await?;
    let every = Duration::from_millis(runner.config.renew_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        runner.round().await;
        ctx.heartbeat.beat();
    }
    runner.stop_all().await;
    Ok(())
}

impl Runner {
    async fn round(&mut self) {
        let Some(live) = self.heartbeat().await else {
            // The database does not answer: keep working while the
            // leases may still be ours, stop what has surely run out.
            self.drop_expired().await;
            return;
        };
        let head = self.head_slot().await;
        self.renew(head).await;
        let Some(rows) = self.read_leases().await else {
            return;
        };
        let shards = self.state.shards.all().len();
        let target = if self.config.rebalance {
            balance::quota(shards, &live, &self.replica)
        } else {
            balance::ceiling(shards, live.len())
        };
        if self.config.rebalance {
            self.hand_over(target).await;
        }
        self.take(target, &rows).await;
        self.export(&rows);
    }

    /// Beats this replica's heartbeat; the live replicas, sorted.
    async fn heartbeat(&self) -> Option<Vec<String>> {
        let store = &self.state.store;
        match timed(store.replica_heartbeat(&self.replica, self.config.ttl_ms)).await {
            Ok(live) => {
                self.state.metrics.live_replicas.set(live.len() as u64);
                Some(live)
            }
            Err(e) => {
                tracing::warn!(error = %e, "replica heartbeat failed");
                None
            }
        }
    }

    /// The chain's slot now, for the shards' lag (0 when it does not answer).
    async fn head_slot(&self) -> u64 {
        if self.held.is_empty() {
            return 0;
        }
        match tokio::time::timeout(CALL_TIMEOUT, self.chain.slot()).await {
            Ok(Ok(slot)) => slot,
            _ => 0,
        }
    }

    /// Renews every held lease; stops the work of those no longer ours.
    async fn renew(&mut self, head: u64) {
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for id in ids {
            let held = &self.held[&id];
            let applied = held.applied_slot.load(Ordering::Relaxed);
            let renewal = self.state.store.renew_lease(
                &id,
                &self.replica,
                held.epoch,
                self.config.ttl_ms,
                (applied, head.max(applied)),
            );
            match timed(renewal).await {
                Ok(true) => {
                    if let Some(held) = self.held.get_mut(&id) {
                        held.renewed = Instant::now();
                    }
                }
                Ok(false) => self.stop(&id, "lost").await,
                Err(e) => tracing::warn!(shard = %id, error = %e, "renewing a shard lease failed"),
            }
        }
        self.drop_expired().await;
    }

    /// Stops the work of leases not renewed for a whole TTL: another
    /// replica may hold them now.
    async fn drop_expired(&mut self) {
        let ttl = Duration::from_millis(self.config.ttl_ms);
        let expired: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.stop(&id, "lost").await;
        }
    }

    async fn read_leases(&self) -> Option<Vec<LeaseRow>> {
        match timed(self.state.store.leases()).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                tracing::warn!(error = %e, "reading the shard leases failed");
                None
            }
        }
    }

    /// Releases shards above `target`, the last in id order first.
    async fn hand_over(&mut self, target: usize) {
        while self.held.len() > target {
            let Some(id) = self.held.keys().next_back().cloned() else {
                return;
            };
            self.release(&id).await;
        }
    }

    /// Stops `id`'s work, then gives its lease up at once, so another
    /// replica need not wait for it to run out.
    async fn release(&mut self, id: &str) {
        let Some(epoch) = self.held.get(id).map(|h| h.epoch) else {
            return;
        };
        self.stop(id, "released").await;
        let release = self.state.store.release_lease(id, &self.replica, epoch);
        if let Err(e) = timed(release).await {
            tracing::warn!(shard = %id, error = %e, "releasing a shard lease failed; it runs out instead");
        }
    }

    /// Takes free or expired leases while under `target`.
    async fn take(&mut self, target: usize, rows: &[LeaseRow]) {
        // Start at a different shard on each replica, so replicas taking
        // at once do not all race for the same first row.
        let offset = self
            .replica
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        let free: Vec<&LeaseRow> = rows.iter().filter(|r| !r.is_live()).collect();
        for i in 0..free.len() {
            if self.held.len() >= target {
                return;
            }
            let row = free[(i + offset) % free.len()];
            let Some(shard) = self.state.shards.by_id(&row.shard).cloned() else {
                continue; // a shard configured once, not now
            };
            if self.held.contains_key(&shard.id) {
                continue;
            }
            let acquire =
                self.state
                    .store
                    .acquire_lease(&shard.id, &self.replica, self.config.ttl_ms);
            match timed(acquire).await {
                Ok(Some(epoch)) => self.start(shard, epoch).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(shard = %shard.id, error = %e, "taking a shard lease failed")
                }
            }
        }
    }

    /// Starts `shard`'s monitor and builder on a store fenced at `epoch`.
    async fn start(&mut self, shard: Shard, epoch: i64) {
        let state = &self.state;
        let label = state.metrics.shard_label(&shard.id);
        state
            .metrics
            .lease_changes
            .get_or_create(&change(&label, "acquired"))
            .inc();
        tracing::info!(shard = %shard.name, program = %shard.id, epoch, replica = %self.replica, "shard lease acquired: starting its monitor and builder");
        let refused = state.metrics.fenced_writes.get_or_create(&label).clone();
        let on_refused = Arc::new(move || {
            refused.inc();
        });
        let store = state
            .store
            .for_shard(ShardFence::new(&shard.id, epoch, on_refused));
        let chain = self.chain.for_program(shard.program);
        let view = monitor::ShardView {
            names: state.shards.component_names(&shard),
            applied_slot: Arc::default(),
        };
        let applied_slot = view.applied_slot.clone();
        let mut work =
            Supervisor::new(state.board.clone(), Policy::from(&state.config.supervision));
        start_work(&mut work, state, chain, store, view).await;
        self.held.insert(
            shard.id.clone(),
            Held {
                epoch,
                renewed: Instant::now(),
                work,
                applied_slot,
            },
        );
    }

    /// Stops `id`'s work and takes its components off the board.
    async fn stop(&mut self, id: &str, why: &str) {
        let Some(held) = self.held.remove(id) else {
            return;
        };
        let state = &self.state;
        let label = state.metrics.shard_label(id);
        state
            .metrics
            .lease_changes
            .get_or_create(&change(&label, why))
            .inc();
        state.metrics.shard_owned.get_or_create(&label).set(0);
        tracing::warn!(shard = %label.shard, epoch = held.epoch, why, "shard lease ended: stopping its monitor and builder");
        let names = state
            .shards
            .by_id(id)
            .map(|shard| state.shards.component_names(shard).all())
            .unwrap_or_default();
        if !crate::components::stop_group(held.work, names, state).await {
            tracing::warn!(shard = %label.shard, "a shard's work did not stop cleanly");
        }
    }

    /// On shutdown: stop every shard's work, then release its lease.
    async fn stop_all(&mut self) {
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for id in ids {
            self.release(&id).await;
        }
        if let Err(e) = timed(self.state.store.forget_replica(&self.replica)).await {
            tracing::debug!(error = %e, "removing this replica's heartbeat failed");
        }
    }

    /// The shards' gauges, from the lease rows just read.
    fn export(&self, rows: &[LeaseRow]) {
        let m = &self.state.metrics;
        for row in rows {
            let label = m.shard_label(&row.shard);
            let owned = row.owner == self.replica && row.is_live();
            m.shard_owned.get_or_create(&label).set(u64::from(owned));
            m.shard_epoch
                .get_or_create(&label)
                .set(row.epoch.max(0) as u64);
            m.shard_last_slot.get_or_create(&label).set(row.last_slot);
            m.shard_lag
                .get_or_create(&label)
                .set(row.head_slot.saturating_sub(row.last_slot));
        }
    }
}

/// A shard's monitor and builder, as the leader's used to be.
async fn start_work(
    work: &mut Supervisor,
    state: &Arc<AppState>,
    chain: Chain,
    store: crate::store::Store,
    view: monitor::ShardView,
) {
    let lifecycle = &state.config.lifecycle;
    let polling = monitor::Polling {
        every: Duration::from_secs(lifecycle.poll_interval_secs),
        when_live: Duration::from_secs(lifecycle.live_poll_interval_secs),
    };
    let clock = Arc::new(builder::PdaClock::default());
    let names = view.names.clone();
    let monitor = monitor::Monitor::new(
        chain.clone(),
        store.clone(),
        state.metrics.clone(),
        state.board.clone(),
        polling,
        clock.clone(),
        view,
    );
    work.start(&names.monitor(), move |ctx| monitor.clone().run(ctx))
        .await;
    let builder = builder::Builder::new(chain, store, state.metrics.clone(), &state.config, clock);
    let hub = state.hub.clone();
    work.start(&names.builder(), move |ctx| {
        builder.clone().run(hub.watch_head(), ctx)
    })
    .await;
}

fn change(label: &metrics::ShardLabels, change: &str) -> metrics::LeaseChangeLabels {
    metrics::LeaseChangeLabels {
        shard: label.shard.clone(),
        change: change.to_string(),
    }
}

/// A store call with [`CALL_TIMEOUT`].
async fn timed<T>(
    call: impl std::future::Future<Output = crate::store::StoreResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!("timed out after {CALL_TIMEOUT:?}"),
    }
}
