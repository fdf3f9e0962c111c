//! PDAComputed's deadline clock: when each request's event was confirmed,
//! from the monitor that saw it to the builder that verifies its account.
//! Either may come first (a busy monitor can record the event after the
//! builder, woken by the request record, has verified the account), so
//! each side keeps what the other has not matched yet.
//!
//! In memory: after a restart the clock of a request in flight is gone and
//! its time is not measured (its account is still created, once).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{monitor::observe_between, store::now_ms, telemetry::Metrics};

/// Entries kept on either side at most; past it the oldest half is
/// dropped (a flood of requests must not grow memory without bound).
const CAPACITY: usize = 100_000;

/// A verification older than this waits for its event no longer (requests
/// placed without a PDAComputed, by cheatcode or an older program).
const UNMATCHED: Duration = Duration::from_secs(600);

/// Confirmation and verification times not yet matched, Unix ms.
#[derive(Default)]
pub struct PdaClock {
    sides: Mutex<Sides>,
}

#[derive(Default)]
struct Sides {
    confirmed: HashMap<String, i64>,
    verified: HashMap<String, (i64, Instant)>,
}

impl PdaClock {
    /// `request`'s PDAComputed was confirmed at `confirmed_at_ms` (the first
    /// sighting counts); whether this call started its clock.
    pub fn started(&self, request: &str, confirmed_at_ms: i64, metrics: &Metrics) -> bool {
        let mut sides = self.sides.lock().expect("pda clock lock");
        if let Some((verified_at, _)) = sides.verified.remove(request) {
            drop(sides);
            observe_between(
                metrics,
                "PDAComputed",
                confirmed_at_ms,
                verified_at,
                request,
            );
            return false;
        }
        if sides.confirmed.contains_key(request) {
            return false;
        }
        if sides.confirmed.len() >= CAPACITY {
            sides.confirmed.clear();
        }
        sides.confirmed.insert(request.to_string(), confirmed_at_ms);
        true
    }

    /// `request`'s account is verified on chain: observes the time since
    /// its event's confirmation (PDAComputed's deadline is 5 s), now or
    /// when the event is recorded.
    pub fn verified(&self, request: &str, metrics: &Metrics) {
        let now = now_ms();
        let mut sides = self.sides.lock().expect("pda clock lock");
        if let Some(confirmed_at) = sides.confirmed.remove(request) {
            drop(sides);
            observe_between(metrics, "PDAComputed", confirmed_at, now, request);
            return;
        }
        if sides.verified.len() >= CAPACITY {
            sides.verified.retain(|_, (_, at)| at.elapsed() < UNMATCHED);
        }
        if sides.verified.len() < CAPACITY {
            sides
                .verified
                .insert(request.to_string(), (now, Instant::now()));
        }
    }

    /// `request` ended without an account (parked as failed), or its event
    /// was not recorded after all.
    pub fn forget(&self, request: &str) {
        self.sides
            .lock()
            .expect("pda clock lock")
            .confirmed
            .remove(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(metrics: &Metrics) -> u64 {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("event_processing_duration_count{event_type=\"PDAComputed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The event first or the verification first, each request is timed
    /// once; a repeated sighting is not timed again.
    #[test]
    fn either_side_may_come_first() {
        let metrics = Metrics::default();
        let clock = PdaClock::default();
        assert!(clock.started("a", now_ms() - 100, &metrics));
        clock.verified("a", &metrics);
        assert_eq!(timed(&metrics), 1);
        clock.verified("b", &metrics);
        assert!(!clock.started("b", now_ms() - 100, &metrics));
        assert_eq!(timed(&metrics), 2);
    }
}
