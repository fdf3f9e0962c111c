//! Connection limits shared by the listeners: a cap on open connections, a
//! header-read timeout and an idle timeout, so a flood of slow or idle
//! connections can exhaust neither file descriptors nor memory, and cannot
//! starve other clients.
//!
//! [`Gate`] admits accepted connections and hands each out as a
//! [`Guarded`] socket it can close from outside: tonic owns the gRPC
//! connections, so closing at the I/O level is what works for both
//! listeners. A request in flight ([`Busy`]) keeps its connection from
//! counting as idle; at the cap the connection that has waited longest for
//! a request makes room for the new one, so slow clients cannot lock out
//! fast ones, and only when every connection is busy is the new one refused.

mod body;
mod fd_limit;
mod http1;
mod io;
mod memory;
mod tls;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt as _};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

pub(crate) use self::{
    body::{Busy, TrackBusyLayer},
    fd_limit::raise_open_files_limit,
    http1::{serve_http1, ConnSlot},
    io::Guarded,
    tls::{Conn, Face, Handshake, Tls},
};
use crate::{
    config::ServerConfig,
    telemetry::metrics::{ConnectionCloseLabels, ListenerLabels, Metrics},
};

/// Bytes an HTTP/2 client sends first (`PRI * HTTP/2.0…`): a gRPC
/// connection has started once they are in.
pub(crate) const HTTP2_PREFACE_LEN: usize = 24;

/// TCP keepalive on accepted sockets, so the kernel notices dead peers.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Pause after a failed accept: out of file descriptors, accept fails at
/// once again, and retrying in a loop would only burn a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits of a listener (`server.max_connections`,
/// `header_read_timeout_secs`, `idle_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Time to send the request head or the HTTP/2 preface.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(s: &ServerConfig) -> Self {
        Limits {
            max_connections: s.max_connections,
            header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
        }
    }
}

/// Why the gate closed a connection on a timer.
#[derive(Debug, Clone, Copy)]
enum Timeout {
    Header,
    Idle,
}

/// A listener's metrics, resolved once so accepting looks up no labels.
struct Counters {
    open: Gauge<u64, AtomicU64>,
    full: Counter,
    evicted: Counter,
    header: Counter,
    idle: Counter,
}

impl Counters {
    fn new(metrics: &Metrics, listener: &str) -> Self {
        let refused = |reason: &str| close_counter(&metrics.connections_refused, listener, reason);
        let timed_out =
            |reason: &str| close_counter(&metrics.connections_timed_out, listener, reason);
        Counters {
            open: metrics
                .connections_open
                .get_or_create(&ListenerLabels {
                    listener: listener.into(),
                })
                .clone(),
            full: refused("full"),
            evicted: refused("evicted"),
            header: timed_out("header"),
            idle: timed_out("idle"),
        }
    }

    fn timed_out(&self, reason: Timeout) {
        match reason {
            Timeout::Header => self.header.inc(),
            Timeout::Idle => self.idle.inc(),
        };
    }
}

fn close_counter(
    family: &prometheus_client::metrics::family::Family<ConnectionCloseLabels, Counter>,
    listener: &str,
    reason: &str,
) -> Counter {
    family
        .get_or_create(&ConnectionCloseLabels {
            listener: listener.into(),
            reason: reason.into(),
        })
        .clone()
}

/// One admitted connection, as the gate sees it.
pub(crate) struct Slot {
    id: u64,
    epoch: Instant,
    accepted_ms: u64,
    in_flight: AtomicUsize,
    /// When the last request finished (at first: when the connection was
    /// accepted), in milliseconds since the gate's epoch.
    idle_since_ms: AtomicU64,
    /// The client sent its greeting (the HTTP/2 preface) in time.
    greeted: AtomicBool,
    /// At least one request was served (a later wait is idleness, not a
    /// slow header).
    served: AtomicBool,
    close: CancellationToken,
}

impl Slot {
    fn new(id: u64, epoch: Instant) -> Self {
        let now = ms_since(epoch);
        Slot {
            id,
            epoch,
            accepted_ms: now,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now),
            greeted: AtomicBool::new(false),
            served: AtomicBool::new(false),
            close: CancellationToken::new(),
        }
    }

    /// Marks a request in flight until the returned guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        Busy::new(self.clone())
    }

    /// Since when the connection has waited for a request; `None` while one
    /// is in flight.
    fn waiting_since(&self) -> Option<u64> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.idle_since_ms.load(Ordering::Acquire))
    }

    /// Which timeout, if any, this connection has run out of at `now`.
    fn expired(&self, now: u64, limits: &Limits, needs_greeting: bool) -> Option<Timeout> {
        let waiting_since = self.waiting_since()?;
        let header_ms = limits.header_read_timeout.as_millis() as u64;
        if needs_greeting
            && !self.greeted.load(Ordering::Acquire)
            && now.saturating_sub(self.accepted_ms) >= header_ms
        {
            return Some(Timeout::Header);
        }
        let idle_ms = limits.idle_timeout.as_millis() as u64;
        (now.saturating_sub(waiting_since) >= idle_ms).then_some(Timeout::Idle)
    }
}

fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Admission and timeouts of one listener's connections.
pub(crate) struct Gate {
    listener: &'static str,
    limits: Limits,
    /// Bytes a client must send within the header-read timeout (the
    /// HTTP/2 preface on gRPC; 0 on REST, where hyper times the request
    /// head itself).
    greeting: usize,
    epoch: Instant,
    next_id: AtomicU64,
    /// Connections that count against the cap (closed ones leave at once,
    /// even if their socket takes a moment to go).
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Sockets not yet dropped.
    live: AtomicUsize,
    /// Most sockets open at once since memory was last handed back.
    high_water: AtomicUsize,
    emptied: Notify,
    counters: Counters,
}

impl Gate {
    /// A gate for `listener` (its name in metrics and logs); starts the
    /// sweeper that closes slow and idle connections, which ends with the gate.
    pub(crate) fn new(
        listener: &'static str,
        limits: Limits,
        greeting: usize,
        metrics: &Metrics,
    ) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            listener,
            limits,
            greeting,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            live: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            emptied: Notify::new(),
            counters: Counters::new(metrics, listener),
        });
        tokio::spawn(sweep(Arc::downgrade(&gate), sweep_interval(&limits)));
        gate
    }

    /// The limits this gate enforces.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The admitted connections of `listener`, after `handshake` (TLS, when
    /// configured: run for many connections at once, each within the
    /// header-read timeout, so a slow client holds up no other). Accept
    /// errors are logged and retried. Dropping the stream closes the
    /// listening socket.
    pub(crate) fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
        handshake: Handshake,
    ) -> impl Stream<Item = Conn> + Send + 'static {
        let admitted = self.admitted(listener);
        if handshake.is_none() {
            return futures::future::Either::Left(admitted.map(Conn::Plain));
        }
        let (timeout, name) = (self.limits.header_read_timeout, self.listener);
        futures::future::Either::Right(
            admitted
                .map(move |io| {
                    let handshake = handshake.clone();
                    async move { handshake.accept(io, timeout, name).await }
                })
                .buffer_unordered(self.limits.max_connections.max(1))
                .filter_map(std::future::ready),
        )
    }

    /// The admitted TCP connections of `listener`.
    fn admitted(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = Guarded<TcpStream>> + Send + 'static {
        let tcp = TcpIncoming::from(listener)
            // Small frames and JSON answers must not wait for Nagle's
            // algorithm and delayed ACKs (~40 ms per call otherwise).
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE));
        futures::stream::unfold((self.clone(), tcp), |(gate, mut tcp)| async move {
            loop {
                match tcp.next().await? {
                    Ok(stream) => {
                        if let Some(io) = gate.admit(stream) {
                            return Some((io, (gate, tcp)));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(listener = gate.listener, error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        })
    }

    /// Admits `tcp`, making room at the cap; `None` (and `tcp` closed at
    /// once, so the kernel's backlog keeps moving) when every connection is busy.
    fn admit(self: &Arc<Self>, tcp: TcpStream) -> Option<Guarded<TcpStream>> {
        let mut slots = self.slots.lock().expect("connection slots");
        if slots.len() >= self.limits.max_connections && !self.evict_one(&mut slots) {
            self.counters.full.inc();
            tracing::debug!(
                listener = self.listener,
                "connection refused: every connection is busy"
            );
            return None;
        }
        let slot = Arc::new(Slot::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            self.epoch,
        ));
        slots.insert(slot.id, slot.clone());
        drop(slots);
        let live = self.live.fetch_add(1, Ordering::AcqRel) + 1;
        self.high_water.fetch_max(live, Ordering::AcqRel);
        self.counters.open.inc();
        Some(Guarded::new(tcp, slot, self.clone(), self.greeting))
    }

    /// Closes the connection that has waited longest for a request; false
    /// when all have one in flight. (A request may arrive on the chosen one
    /// in the same instant; its client sees the connection close.)
    fn evict_one(&self, slots: &mut HashMap<u64, Arc<Slot>>) -> bool {
        let oldest = slots
            .values()
            .filter_map(|slot| Some((slot.waiting_since()?, slot.id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(slot) = slots.remove(&id) {
            slot.close.cancel();
        }
        self.counters.evicted.inc();
        true
    }

    /// A socket of this gate was dropped.
    fn release(&self, id: u64) {
        self.slots.lock().expect("connection slots").remove(&id);
        self.counters.open.dec();
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
    }

    /// Closes connections past their header-read or idle timeout.
    fn close_expired(&self) {
        let now = ms_since(self.epoch);
        let needs_greeting = self.greeting > 0;
        let mut slots = self.slots.lock().expect("connection slots");
        slots.retain(|_, slot| {
            let Some(reason) = slot.expired(now, &self.limits, needs_greeting) else {
                return true;
            };
            slot.close.cancel();
            self.counters.timed_out(reason);
            false
        });
    }

    /// Hands freed memory back once many connections have gone since the
    /// high-water mark (a flood is over).
    fn release_memory_after_flood(&self) {
        let live = self.live.load(Ordering::Acquire);
        if self.high_water.load(Ordering::Acquire) < live + memory::TRIM_AFTER {
            return;
        }
        self.high_water.store(live, Ordering::Release);
        crate::telemetry::release_freed_memory();
        tracing::debug!(
            listener = self.listener,
            open = live,
            "returned freed memory after a flood of connections"
        );
    }

    /// Counts a connection hyper closed for its header-read timeout: a
    /// slow header on a new connection, idleness after a request.
    pub(crate) fn header_timed_out(&self, slot: &Slot) {
        let reason = if slot.served.load(Ordering::Acquire) {
            Timeout::Idle
        } else {
            Timeout::Header
        };
        self.counters.timed_out(reason);
    }

    /// At shutdown: closes every connection with no request in flight
    /// (hyper would wait for a half-sent header); busy ones finish theirs.
    pub(crate) fn close_idle(&self) {
        let mut slots = self.slots.lock().expect("connection slots");
        slots.retain(|_, slot| {
            if slot.waiting_since().is_none() {
                return true;
            }
            slot.close.cancel();
            false
        });
    }

    /// Waits until every socket of this gate is dropped.
    pub(crate) async fn drained(&self) {
        loop {
            // Registered before the check, so a release in between is seen.
            let emptied = self.emptied.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    }
}

/// A quarter of the shorter timeout (so a timeout is overrun by at most a
/// quarter), between 100 ms and 1 s.
fn sweep_interval(limits: &Limits) -> Duration {
    (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Closes expired connections until the gate is gone.
async fn sweep(gate: Weak<Gate>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(gate) = gate.upgrade() else {
            return;
        };
        gate.close_expired();
        gate.release_memory_after_flood();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        }
    }

    fn slot(id: u64, idle_since_ms: u64) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(id, Instant::now()));
        slot.idle_since_ms.store(idle_since_ms, Ordering::Release);
        slot
    }

    #[test]
    fn busy_connections_never_expire() {
        let slot = slot(1, 0);
        let _busy = slot.busy();
        assert!(slot.expired(60_000, &limits(), true).is_none());
    }

    #[test]
    fn timeouts_follow_greeting_and_idleness() {
        let quiet = slot(1, 0);
        assert!(matches!(
            quiet.expired(1_000, &limits(), true),
            Some(Timeout::Header)
        ));
        // Without a greeting to wait for (REST), only idleness counts.
        assert!(quiet.expired(1_000, &limits(), false).is_none());
        assert!(matches!(
            quiet.expired(5_000, &limits(), false),
            Some(Timeout::Idle)
        ));
        quiet.greeted.store(true, Ordering::Release);
        assert!(quiet.expired(4_999, &limits(), true).is_none());
    }

    #[tokio::test]
    async fn eviction_takes_the_longest_waiting_and_spares_busy_ones() {
        let gate = Gate::new("test", limits(), 0, &Metrics::new());
        let (oldest_busy, older, newer) = (slot(1, 10), slot(2, 20), slot(3, 30));
        let _busy = oldest_busy.busy();
        let mut slots: HashMap<u64, Arc<Slot>> = [&oldest_busy, &older, &newer]
            .into_iter()
            .map(|s| (s.id, s.clone()))
            .collect();
        assert!(gate.evict_one(&mut slots));
        assert!(older.close.is_cancelled());
        assert!(!slots.contains_key(&2));
        assert!(gate.evict_one(&mut slots));
        assert!(newer.close.is_cancelled());
        assert!(!gate.evict_one(&mut slots), "only a busy one is left");
        assert!(!oldest_busy.close.is_cancelled());
    }
}
