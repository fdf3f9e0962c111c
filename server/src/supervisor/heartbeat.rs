//! Heartbeats (seed 003): a component proves it is alive by beating at
//! least every interval; the supervisor restarts one that stays silent
//! longer than the timeout.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::store::now_ms;

/// A component's heartbeat: cheap to clone and to beat.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    last_ms: Arc<AtomicI64>,
    interval: Duration,
}

impl Heartbeat {
    /// A heartbeat expected every `interval`, beaten once now.
    pub fn new(interval: Duration) -> Heartbeat {
        Heartbeat {
            last_ms: Arc::new(AtomicI64::new(now_ms())),
            interval,
        }
    }

    /// Reports "alive".
    pub fn beat(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When the last beat was, Unix ms.
    pub fn last_ms(&self) -> i64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// How often beats are expected.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A ticker at the heartbeat interval, for a component's select loop:
    /// `_ = beat.tick() => heartbeat.beat()` keeps an idle loop beating,
    /// while a loop stuck inside one of its steps does not.
    pub fn ticker(&self) -> tokio::time::Interval {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// Runs `work` (a server whose loop is not ours, such as tonic or
    /// axum) and beats while it is being driven.
    pub async fn beat_while<F: Future>(&self, work: F) -> F::Output {
        let mut tick = self.ticker();
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => self.beat(),
            }
        }
    }

    /// Resolves once no beat has come for `timeout`.
    pub(super) async fn missed(&self, timeout: Duration) {
        let check = (timeout / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(check).await;
            if now_ms() - self.last_ms() > timeout.as_millis() as i64 {
                return;
            }
        }
    }
}

/// What a component receives each time it is (re)started.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Fires at shutdown, on step-down, or when the supervisor gives up on
    /// this run (missed heartbeat); the component should return then.
    pub cancel: CancellationToken,
    /// Beat at least every `heartbeat.interval()`.
    pub heartbeat: Heartbeat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silence_is_noticed_and_beats_keep_it_away() {
        let hb = Heartbeat::new(Duration::from_millis(10));
        let started = std::time::Instant::now();
        hb.missed(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));

        // Beats every 10 ms against a 500 ms timeout: wide enough that a
        // loaded machine's scheduling delays are not mistaken for silence.
        let beating = hb.clone();
        let keep = tokio::spawn(async move {
            beating
                .beat_while(tokio::time::sleep(Duration::from_millis(1_000)))
                .await
        });
        let quiet = tokio::time::timeout(
            Duration::from_millis(700),
            hb.missed(Duration::from_millis(500)),
        )
        .await;
        assert!(quiet.is_err(), "a beating component is not reported silent");
        keep.await.unwrap();
    }
}
