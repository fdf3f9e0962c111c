//! The supervisor (seeds 003 and 004): starts components in dependency
//! order, keeps them alive, and stops them in reverse order with a bounded
//! drain.
//!
//! A component is an async function run on its own task with a [`Ctx`]:
//! a cancellation token and a [`Heartbeat`]. When a run ends by itself (an
//! error, a panic) or stops beating for `heartbeat_timeout`, the supervisor
//! records why, waits (growing delays with random jitter) and starts it
//! again, up to `max_restarts` times; after that the component stays in
//! Error and health says so. Every step is a lifecycle event.

pub mod health;
pub mod heartbeat;
pub mod status;

use std::{future::Future, sync::Arc, time::Duration};

use rand::Rng as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::ComponentState;

pub use heartbeat::{Ctx, Heartbeat};
pub use status::StatusBoard;

use crate::config::SupervisionConfig;

/// How long a hung run gets to notice its cancellation before it is
/// aborted.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// Restart and heartbeat settings.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Expected beat interval.
    pub heartbeat_interval: Duration,
    /// Silence that counts as hung.
    pub heartbeat_timeout: Duration,
    /// Restarts before giving up.
    pub max_restarts: u32,
    /// First delay.
    pub initial_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Growth per restart.
    pub multiplier: f64,
    /// ± fraction of random spread.
    pub jitter: f64,
}

impl From<&SupervisionConfig> for Policy {
    fn from(c: &SupervisionConfig) -> Self {
        Policy {
            heartbeat_interval: Duration::from_millis(c.heartbeat_interval_ms),
            heartbeat_timeout: Duration::from_millis(c.heartbeat_timeout_ms),
            max_restarts: c.max_restarts,
            initial_delay: Duration::from_millis(c.restart_initial_delay_ms),
            max_delay: Duration::from_millis(c.restart_max_delay_ms),
            multiplier: c.restart_multiplier,
            jitter: c.restart_jitter,
        }
    }
}

impl Policy {
    /// Delay before restart number `restart` (from 1): initial ×
    /// multiplier^(restart-1), capped, then spread by ±jitter from a real
    /// random source, so replicas that failed together do not retry together
    /// (seed 003's time-based "jitter" was not random).
    pub fn delay(&self, restart: u32) -> Duration {
        let base = self.initial_delay.as_secs_f64()
            * self.multiplier.powi(restart.saturating_sub(1) as i32);
        let capped = base.min(self.max_delay.as_secs_f64());
        let spread = if self.jitter > 0.0 {
            rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter)
        } else {
            1.0
        };
        Duration::from_secs_f64(capped * spread)
    }
}

struct Running {
    name: String,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// Starts, watches, restarts and stops components.
pub struct Supervisor {
    board: Arc<StatusBoard>,
    policy: Policy,
    running: Vec<Running>,
}

impl Supervisor {
    /// A supervisor reporting to `board`.
    pub fn new(board: Arc<StatusBoard>, policy: Policy) -> Self {
        Supervisor {
            board,
            policy,
            running: Vec::new(),
        }
    }

    /// Names of the components started, in start order.
    pub fn names(&self) -> Vec<String> {
        self.running.iter().map(|r| r.name.clone()).collect()
    }

    /// The board components report to.
    pub fn board(&self) -> Arc<StatusBoard> {
        self.board.clone()
    }

    /// Starts `name` and keeps it alive: `run` is called for the first run
    /// and for every restart, and should return when its token fires.
    pub async fn start<F, Fut>(&mut self, name: &str, run: F)
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.board.register(name);
        self.board.set(name, ComponentState::Starting, "").await;
        let stop = CancellationToken::new();
        let first = self.launch(&run, &stop);
        self.board.attach_heartbeat(name, first.heartbeat.clone());
        self.board.set(name, ComponentState::Running, "").await;
        let keeper = Keeper {
            name: name.to_string(),
            board: self.board.clone(),
            policy: self.policy.clone(),
            stop: stop.clone(),
        };
        let handle = tokio::spawn(keeper.keep(run, first));
        self.running.push(Running {
            name: name.to_string(),
            stop,
            handle,
        });
    }

    fn launch<F, Fut>(&self, run: &F, stop: &CancellationToken) -> Launched
    where
        F: Fn(Ctx) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        launch(run, stop, &self.policy)
    }

    /// Stops every component in reverse start order, giving each up to
    /// `grace` to finish. Returns true when all stopped in time and none
    /// was in error.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let mut clean = true;
        for component in self.running.into_iter().rev() {
            let failed = self.board.state(&component.name) == ComponentState::Error;
            self.board
                .set(&component.name, ComponentState::Stopping, "")
                .await;
            component.stop.cancel();
            match tokio::time::timeout(grace, component.handle).await {
                Ok(_) if failed => {
                    clean = false;
                    self.board
                        .set(
                            &component.name,
                            ComponentState::Stopped,
                            "stopped after failing",
                        )
                        .await;
                }
                Ok(_) => {
                    self.board
                        .set(&component.name, ComponentState::Stopped, "")
                        .await;
                }
                Err(_) => {
                    tracing::warn!(component = %component.name, ?grace, "component did not stop in time");
                    self.board
                        .set(
                            &component.name,
                            ComponentState::Error,
                            "did not stop within the grace period",
                        )
                        .await;
                    clean = false;
                }
            }
        }
        clean
    }
}

/// One run of a component.
struct Launched {
    cancel: CancellationToken,
    heartbeat: Heartbeat,
    task: JoinHandle<anyhow::Result<()>>,
}

fn launch<F, Fut>(run: &F, stop: &CancellationToken, policy: &Policy) -> Launched
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let ctx = Ctx {
        cancel: stop.child_token(),
        heartbeat: Heartbeat::new(policy.heartbeat_interval),
    };
    Launched {
        cancel: ctx.cancel.clone(),
        heartbeat: ctx.heartbeat.clone(),
        task: tokio::spawn(run(ctx)),
    }
}

/// Watches one component's runs and restarts them.
struct Keeper {
    name: String,
    board: Arc<StatusBoard>,
    policy: Policy,
    stop: CancellationToken,
}

impl Keeper {
    async fn keep<F, Fut>(self, run: F, first: Launched)
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut current = first;
        let mut restarts = 0;
        loop {
            let Some(failure) = self.watch(&mut current).await else {
                return;
            };
            tracing::error!(component = %self.name, error = %failure, restarts, "component failed");
            self.board
                .set(&self.name, ComponentState::Error, failure.clone())
                .await;
            if restarts >= self.policy.max_restarts {
                self.board.gave_up(&self.name, restarts, &failure).await;
                return;
            }
            restarts += 1;
            let delay = self.policy.delay(restarts);
            self.board
                .restarting(&self.name, restarts, delay, &failure)
                .await;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            current = launch(&run, &self.stop, &self.policy);
            self.board
                .attach_heartbeat(&self.name, current.heartbeat.clone());
            self.board.restarted(&self.name, restarts).await;
        }
    }

    /// Waits for the run to end or go silent; None when it stopped because
    /// it was asked to.
    async fn watch(&self, run: &mut Launched) -> Option<String> {
        let heartbeat = run.heartbeat.clone();
        tokio::select! {
            ended = &mut run.task => {
                match ended {
                    Ok(Ok(())) if self.stop.is_cancelled() => None,
                    Ok(Ok(())) => Some("ended unexpectedly".to_string()),
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Err(join) if join.is_panic() => Some(format!("panicked: {}", panic_message(join))),
                    Err(_) => Some("was aborted".to_string()),
                }
            }
            _ = heartbeat.missed(self.policy.heartbeat_timeout) => {
                let timeout = self.policy.heartbeat_timeout;
                self.board.heartbeat_timeout(&self.name, timeout).await;
                run.cancel.cancel();
                if tokio::time::timeout(ABORT_GRACE, &mut run.task).await.is_err() {
                    run.task.abort();
                }
                Some(format!("no heartbeat for {timeout:?}"))
            }
            _ = self.stop.cancelled() => {
                // Shutdown: the run got the same signal; shutdown() bounds the wait.
                let _ = (&mut run.task).await;
                None
            }
        }
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    let payload = err.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_real_jitter() {
        let policy = Policy::from(&SupervisionConfig::default());
        let delays: Vec<f64> = (1..=7).map(|n| policy.delay(n).as_secs_f64()).collect();
        for (n, d) in delays.iter().enumerate() {
            let base = (1.0 * 2f64.powi(n as i32)).min(30.0);
            assert!(
                (base * 0.9..=base * 1.1).contains(d),
                "restart {}: {d} vs {base}",
                n + 1
            );
        }
        // Real randomness: a hundred draws are not all the same.
        let draws: std::collections::HashSet<u64> = (0..100)
            .map(|_| policy.delay(3).as_micros() as u64)
            .collect();
        assert!(draws.len() > 50);
    }
}
