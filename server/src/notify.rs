//! systemd notifications (`Type=notify`, server/deploy/valence-lifecycle.service):
//! `READY=1` once every component serves, `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` while the supervisor's components are alive, and
//! `STOPPING=1` when shutdown begins. Nothing is sent unless systemd (or
//! a test) set `NOTIFY_SOCKET`.

use std::{sync::Arc, time::Duration};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::supervisor::StatusBoard;

/// How often readiness is re-checked while components start.
const READY_POLL: Duration = Duration::from_millis(50);

/// Sends notifications to the service manager, when there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET`, and
    /// `WATCHDOG_USEC` with `WATCHDOG_PID` naming this process.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        // Not unset (the variables stay for `systemctl show`, and unsetting
        // the environment of a threaded process is unsound).
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
            .then(|| Duration::from_micros(usec));
        Notifier { enabled, watchdog }
    }

    /// One that sends nothing (tests, and servers not under systemd).
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// The watchdog timeout systemd expects a `WATCHDOG=1` within, if any.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "could not notify systemd (NOTIFY_SOCKET)");
        }
    }

    /// Waits until every component serves (Running or Degraded), then sends
    /// `READY=1` with a status line. Returns at once when disabled.
    pub async fn ready_when_serving(&self, board: &StatusBoard, stop: &CancellationToken) {
        if !self.enabled {
            return;
        }
        loop {
            if board.serving() {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(READY_POLL) => {}
            }
        }
        let status = if board.all_running() {
            "serving (healthy)"
        } else {
            "serving (degraded: see /health)"
        };
        tracing::info!(status, "notifying systemd: ready");
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STOPPING=1`: shutdown has begun (systemd waits up to `TimeoutStopSec`).
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Feeds the watchdog at half its timeout until `stop`, only while
    /// `board` reports every component alive (see [`StatusBoard::alive`];
    /// a running component silent for more than `stale` counts as dead).
    /// When one is dead the feeding stops, so systemd restarts the process
    /// (`Restart=on-failure`). Returns at once when there is no watchdog.
    pub async fn feed_watchdog(
        &self,
        board: Arc<StatusBoard>,
        stale: Duration,
        stop: CancellationToken,
    ) {
        let Some(timeout) = self.watchdog.filter(|_| self.enabled) else {
            return;
        };
        let notifier = self.clone();
        feed(timeout / 2, board, stale, stop, move || {
            notifier.send(&[NotifyState::Watchdog]);
        })
        .await;
    }
}

/// The watchdog loop: calls `pet` every `every` while `board` is alive.
/// Public for the tests, which count the calls.
pub async fn feed(
    every: Duration,
    board: Arc<StatusBoard>,
    stale: Duration,
    stop: CancellationToken,
    pet: impl Fn() + Send,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dead = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match board.alive(stale) {
            Ok(()) => {
                if dead {
                    tracing::info!("every component alive again: feeding the systemd watchdog");
                    dead = false;
                }
                pet();
            }
            Err(why) if !dead => {
                tracing::error!(
                    why,
                    "a component is dead: no longer feeding the systemd watchdog"
                );
                dead = true;
            }
            Err(_) => {}
        }
    }
}
