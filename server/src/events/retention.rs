//! Background pruning of the event log by age and count.

use std::{sync::Arc, time::Duration};

use crate::{config::EventsConfig, store::Store, supervisor::Ctx, telemetry::Metrics};

/// Prunes every `prune_interval_secs` until cancelled.
pub(crate) async fn run(
    store: Store,
    config: EventsConfig,
    metrics: Arc<Metrics>,
    ctx: Ctx,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(config.prune_interval_secs));
    let mut beat = ctx.heartbeat.ticker();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            _ = beat.tick() => { ctx.heartbeat.beat(); continue; }
            _ = tick.tick() => {}
        }
        match store
            .prune_events(
                config.retention_max_age_secs * 1000,
                config.retention_max_count,
            )
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                metrics.events_pruned.inc_by(n);
                tracing::info!(deleted = n, "pruned lifecycle events");
            }
            Err(e) => tracing::warn!(error = %e, "pruning lifecycle events failed"),
        }
        ctx.heartbeat.beat();
    }
}
