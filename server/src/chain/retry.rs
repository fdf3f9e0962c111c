//! Retries with exponential backoff and jitter (seed 001: 5 attempts,
//! 100 ms first delay, ×2, at most 30 s). Jitter comes from a real random
//! source, so replicas that failed together do not retry together.

use std::{future::Future, time::Duration};

use rand::Rng as _;

use crate::config::RetryConfig;

/// How to retry an operation.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        RetryPolicy {
            max_attempts: c.max_retries.max(1),
            initial: Duration::from_millis(c.initial_delay_ms),
            max: Duration::from_millis(c.max_delay_ms),
            multiplier: c.multiplier,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 1):
    /// `initial × multiplier^(attempt-1)`, capped, then ±10% jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base =
            self.initial.as_secs_f64() * self.multiplier.powi(attempt.saturating_sub(1) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = rand::rng().random_range(0.9..=1.1);
        Duration::from_secs_f64((capped * jitter).min(self.max.as_secs_f64()))
    }

    /// Runs `op` until it succeeds, `retryable` says an error is final, or
    /// attempts run out; returns the last error then.
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        mut op: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= self.max_attempts || !retryable(&e) => return Err(e),
                Err(e) => {
                    let delay = self.delay(attempt);
                    tracing::debug!(what, attempt, error = %e, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::from(&RetryConfig::default())
    }

    #[test]
    fn delays_grow_by_the_multiplier_within_jitter_and_cap() {
        let p = policy();
        for (attempt, base_ms) in [(1, 100.0), (2, 200.0), (3, 400.0), (10, 30_000.0)] {
            let d = p.delay(attempt).as_secs_f64() * 1000.0;
            assert!(
                d >= base_ms * 0.9 - 1e-6 && d <= (base_ms * 1.1).min(30_000.0) + 1e-6,
                "{attempt}: {d}"
            );
        }
        let samples: std::collections::HashSet<u128> =
            (0..20).map(|_| p.delay(3).as_micros()).collect();
        assert!(samples.len() > 1, "jitter varies");
    }

    #[tokio::test]
    async fn stops_after_max_attempts_or_a_final_error() {
        let fast = RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            ..policy()
        };
        let calls = AtomicU32::new(0);
        let r: Result<(), String> = fast
            .run(
                "op",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("boom".to_string())
                },
                |_| true,
            )
            .await;
        assert_eq!(r.unwrap_err(), "boom");
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        calls.store(0, Ordering::SeqCst);
        let _ = fast
            .run(
                "op",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>("final".to_string())
                },
                |_| false,
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
