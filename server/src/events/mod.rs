//! The event log's live side. The store is the source of truth; one tailer
//! per process follows it in sequence order and publishes each event once
//! into a bounded broadcast buffer that every subscriber of this process
//! reads. Subscribers that fall behind that buffer are served from the
//! store until they catch up (see [`subscription`]).
//!
//! The tailer wakes on local commits, on PostgreSQL NOTIFY (events written
//! by other replicas) and on a short poll as a safety net.

pub(crate) mod retention;
pub(crate) mod subscription;

use std::sync::Arc;

use tokio::sync::{broadcast, watch, Semaphore};
use valence_lifecycle_api::v1::LifecycleEvent;

use crate::{config::EventsConfig, store::Store, supervisor::Ctx, telemetry::Metrics};

/// Events published per store read by the tailer.
const TAIL_BATCH: u32 = 512;

/// Shared state of the live event side.
pub(crate) struct EventHub {
    store: Store,
    config: EventsConfig,
    metrics: Arc<Metrics>,
    live: broadcast::Sender<Arc<LifecycleEvent>>,
    head: watch::Sender<u64>,
    subscriber_slots: Arc<Semaphore>,
}

impl EventHub {
    /// Creates the hub; call [`EventHub::run_tailer`] to start publishing.
    pub(crate) fn new(store: Store, config: EventsConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let (live, _) = broadcast::channel(config.live_buffer);
        let (head, _) = watch::channel(0);
        Arc::new(EventHub {
            subscriber_slots: Arc::new(Semaphore::new(config.max_subscribers)),
            store,
            config,
            metrics,
            live,
            head,
        })
    }

    /// Highest sequence published by the tailer.
    pub(crate) fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Follows the published head: wakes whoever waits on it after each
    /// batch of new events (the builder uses it to notice new requests).
    pub(crate) fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Follows the log until cancelled, publishing every new event in order.
    pub(crate) async fn run_tailer(self: Arc<Self>, ctx: Ctx) -> anyhow::Result<()> {
        let cancel = ctx.cancel.clone();
        let mut beat = ctx.heartbeat.ticker();
        // After a restart, go on from what was published (events appended
        // meanwhile are published now); the first run starts at the head.
        let mut cursor = match self.head() {
            0 => self.store.head_sequence().await?,
            published => published,
        };
        self.head.send_replace(cursor);
        let mut appends = self.store.watch_appends().await;
        tracing::info!(head = cursor, "event tailer started");
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = beat.tick() => {}
                _ = appends.wait() => {}
            }
            match self.publish_new(cursor).await {
                Ok(c) => cursor = c,
                Err(e) => tracing::warn!(error = %e, "reading the event log failed; retrying"),
            }
            ctx.heartbeat.beat();
        }
        tracing::info!(head = cursor, "event tailer stopped");
        Ok(())
    }

    /// Publishes every event after `cursor`; returns the new cursor.
    async fn publish_new(&self, mut cursor: u64) -> anyhow::Result<u64> {
        loop {
            let batch = self.store.events_after(cursor, TAIL_BATCH).await?;
            let full = batch.len() == TAIL_BATCH as usize;
            for event in batch {
                cursor = event.sequence;
                self.metrics.observe_event(&event);
                // No receivers is fine: nobody is subscribed right now.
                let _ = self.live.send(Arc::new(event));
            }
            self.head.send_replace(cursor);
            if !full {
                return Ok(cursor);
            }
        }
    }
}
