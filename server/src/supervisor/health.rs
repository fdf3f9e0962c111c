//! Health checks (seed 004's `add_health_check`): each resource check runs
//! in the background on its own schedule, bounded by a timeout, and writes
//! its result to the status board. `/health`, GetStats and gRPC health only
//! read the board, so they answer at once even while a check hangs.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use valence_lifecycle_api::v1::ComponentState;

use super::{Ctx, StatusBoard};

/// A probe: resolves Ok when the resource is healthy.
pub type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// Called with the new health after each change (for example to flip
/// gRPC health).
pub type OnChange = Arc<dyn Fn(bool) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One registered check.
#[derive(Clone)]
pub struct Check {
    /// Board entry it writes (a resource: "store", "chain-rpc", …).
    pub name: String,
    /// Time between runs.
    pub every: Duration,
    /// Longest a run may take; longer counts as failed.
    pub timeout: Duration,
    /// The probe.
    pub probe: Probe,
    /// Reaction to a change, if any.
    pub on_change: Option<OnChange>,
}

/// Runs `check` until cancelled: Running while it passes, Degraded (with
/// the error, or "timed out") while it fails.
pub async fn run(check: Check, board: Arc<StatusBoard>, ctx: Ctx) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(check.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = ctx.heartbeat.ticker();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            _ = beat.tick() => { ctx.heartbeat.beat(); continue; }
            _ = tick.tick() => {}
        }
        // The probe runs beside the heartbeat: a hung probe is the
        // resource's problem (reported as degraded), not the checker's.
        let outcome = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            o = tokio::time::timeout(check.timeout, (check.probe)()) => o,
        };
        ctx.heartbeat.beat();
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some(format!("check timed out after {:?}", check.timeout)),
        };
        apply(&check, &board, failure).await;
    }
}

async fn apply(check: &Check, board: &StatusBoard, failure: Option<String>) {
    let now = board.state(&check.name);
    let changed = match (&failure, now) {
        (None, ComponentState::Degraded) => {
            board
                .set(&check.name, ComponentState::Running, "healthy again")
                .await;
            true
        }
        (Some(why), ComponentState::Running) => {
            tracing::warn!(check = %check.name, error = %why, "health check failed");
            board
                .set(&check.name, ComponentState::Degraded, why.clone())
                .await;
            true
        }
        _ => false,
    };
    if changed {
        if let Some(on_change) = &check.on_change {
            on_change(failure.is_none()).await;
        }
    }
}
