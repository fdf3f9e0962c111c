//! The supervisor (seeds 003 and 004): starts components in dependency
//! order, tracks their state on the [`StatusBoard`], and stops them in
//! reverse order with a bounded drain.
//!
//! A component is an async task that runs until its cancellation token
//! fires. If one ends by itself (an error or a panic) the supervisor marks
//! it Error and records why; the process keeps serving what still works.

pub mod status;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::ComponentState;

pub use status::StatusBoard;

struct Running {
    name: String,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// Starts, watches and stops components.
pub struct Supervisor {
    board: Arc<StatusBoard>,
    running: Vec<Running>,
}

impl Supervisor {
    /// A supervisor reporting to `board`.
    pub fn new(board: Arc<StatusBoard>) -> Self {
        Supervisor {
            board,
            running: Vec::new(),
        }
    }

    /// The board components report to.
    pub fn board(&self) -> Arc<StatusBoard> {
        self.board.clone()
    }

    /// Starts `name`: `run` receives a token that fires at shutdown and
    /// should return when it does. `ready` resolves once the component has
    /// started (for listeners: bound), so the next one can rely on it.
    pub async fn start<F, Fut>(&mut self, name: &str, run: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.board.register(name);
        self.board.set(name, ComponentState::Starting, "").await;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(cancel.clone()));
        self.board.set(name, ComponentState::Running, "").await;
        let board = self.board.clone();
        let watched = name.to_string();
        let stop = cancel.clone();
        let handle = tokio::spawn(async move {
            let outcome = match task.await {
                Ok(Ok(())) if stop.is_cancelled() => return,
                Ok(Ok(())) => "ended unexpectedly".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(join) if join.is_panic() => format!("panicked: {}", panic_message(join)),
                Err(_) => "was aborted".to_string(),
            };
            tracing::error!(component = %watched, error = %outcome, "component failed");
            board.set(&watched, ComponentState::Error, outcome).await;
        });
        self.running.push(Running {
            name: name.to_string(),
            cancel,
            handle,
        });
    }

    /// Stops every component in reverse start order, giving each up to
    /// `grace` to finish. Returns true when all stopped in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let mut clean = true;
        for component in self.running.into_iter().rev() {
            self.board
                .set(&component.name, ComponentState::Stopping, "")
                .await;
            component.cancel.cancel();
            match tokio::time::timeout(grace, component.handle).await {
                Ok(_) if self.board.state(&component.name) == ComponentState::Error => {
                    clean = false
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

fn panic_message(err: tokio::task::JoinError) -> String {
    let payload = err.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
