//! Fan-out benchmark of `EventStreamService.Subscribe` (issue 3): a program
//! that prints figures, not a timed test.
//!
//! For 1, 64 and 1,000 subscribers it measures, on loopback and in one
//! process, the real server (SQLite store, event tailer, per-subscriber
//! tasks, gRPC middleware) beside a bare tonic server-streaming service that
//! forwards a `tokio::sync::broadcast` channel (no store, no log):
//!
//! * saturated: the writer appends as fast as it can (for the server, one
//!   CreateRule call per event); fan-out throughput is events delivered to
//!   all subscribers over the time from the first append to the last
//!   delivery, and latency is append to delivery, p50 and p99 over every
//!   (event, subscriber) pair;
//! * burst: a whole batch becomes visible at once (the baseline's saturated
//!   run already is one; the server gets a batch committed in one
//!   transaction), which shows the fan-out's own capacity when the server's
//!   write path is not the limit;
//! * paced: both systems get the same modest append rate, which shows the
//!   pipeline's own delay rather than queueing.
//!
//! Every subscriber also checks what it received: each bench event exactly
//! once, sequences strictly increasing, no gaps.
//!
//! Run with
//! `cargo bench -p valence-lifecycle-server --bench fanout`.

mod support;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use tokio::{
    net::TcpListener,
    sync::{broadcast, Semaphore},
    task::JoinHandle,
    time::{timeout, MissedTickBehavior},
};
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};
use tokio_util::sync::CancellationToken;
use tonic::{
    transport::{server::TcpIncoming, Channel, Endpoint},
    Request, Response, Status,
};
use valence_lifecycle_api::v1::{
    event_stream_service_client::EventStreamServiceClient,
    event_stream_service_server::{EventStreamService, EventStreamServiceServer},
    lifecycle_event::Payload,
    rule_action, rule_condition,
    rule_service_client::RuleServiceClient,
    subscribe_response, CreateRuleRequest, EventType, LifecycleEvent, NotifyWebhookAction,
    ProgressionRule, RuleAction, RuleChanged, RuleCondition, StartPosition, SubscribeRequest,
    SubscribeResponse,
};
use valence_lifecycle_server::{
    config::Config,
    store::{NewEvent, Store},
};

/// One run per row of the table.
struct Scenario {
    subscribers: usize,
    /// Events appended as fast as the writer can (throughput, loaded latency).
    events: usize,
    /// Events appended at a fixed rate (unloaded latency).
    paced_events: usize,
}

/// Fewer events at 1,000 subscribers keeps the whole run near a minute on
/// two cores while still giving 500,000 deliveries per system.
const SCENARIOS: [Scenario; 3] = [
    Scenario {
        subscribers: 1,
        events: 2_000,
        paced_events: 500,
    },
    Scenario {
        subscribers: 64,
        events: 2_000,
        paced_events: 300,
    },
    Scenario {
        subscribers: 1_000,
        events: 500,
        paced_events: 100,
    },
];

/// Each scenario is measured this many times per system; the machine is
/// shared, so one round alone can be skewed by unrelated work.
const ROUNDS: usize = 3;

/// `cargo bench` passes `--bench`; `cargo test --benches` (CI) does not and
/// gets the short form: the first scenario, one round, only to show the
/// benchmark still runs.
fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn scenarios() -> &'static [Scenario] {
    if full() {
        &SCENARIOS
    } else {
        &SCENARIOS[..1]
    }
}

fn rounds() -> usize {
    if full() {
        ROUNDS
    } else {
        1
    }
}

/// HTTP/2 multiplexes; a handful of connections is what a real client
/// fleet behind a few processes would open, and it keeps one connection's
/// flow-control window from being the only limit.
const SUBSCRIBERS_PER_CHANNEL: usize = 100;

/// CreateRule calls in flight at once. The server serialises SQLite writes
/// anyway; a few in flight hide the request round trip so the writer runs at
/// the store's pace rather than the network's.
const VALENCE_WRITERS: usize = 4;

/// The paced run offers this share of the server's measured fan-out
/// capacity, low enough that latency is not dominated by queueing.
const PACED_SHARE: f64 = 0.25;
const PACED_MAX_RATE: f64 = 1_000.0;
const PACED_MIN_RATE: f64 = 5.0;

/// The server's default, large enough for a whole burst: the measurement
/// is of the live path, not of catch-up reads from the store.
const LIVE_BUFFER: usize = 4_096;

/// Generous limits: they exist so a bug fails loudly instead of hanging.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// After the last expected delivery, wait this long for stray duplicates.
const SETTLE: Duration = Duration::from_millis(300);

/// Marks the bench's own events; the server also logs component changes.
const MARKER: &str = "fanout-bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WarmUp = 0,
    Saturated = 1,
    Paced = 2,
    /// Valence only: events written straight into the log, then released.
    Prewritten = 3,
    /// Valence only: the CreateRule that wakes the tailer after them.
    Release = 4,
}

const PHASES: usize = 5;

impl Phase {
    fn from_index(i: u64) -> Option<Phase> {
        match i {
            0 => Some(Phase::WarmUp),
            1 => Some(Phase::Saturated),
            2 => Some(Phase::Paced),
            3 => Some(Phase::Prewritten),
            4 => Some(Phase::Release),
            _ => None,
        }
    }
}

/// One clock for writer and subscribers (same process), so a timestamp
/// embedded in an event can be compared with the time it is received.
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn clock_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The rule both systems carry: the server stores it and logs RuleCreated
/// with it as payload; the baseline sends the same payload, so both encode
/// messages of the same shape and size. The append time travels in the
/// name, which spares a shared map on the delivery path.
fn bench_rule(id: String, phase: Phase, stamp_ns: u64) -> ProgressionRule {
    ProgressionRule {
        id,
        name: format!("{MARKER} {} {stamp_ns}", phase as u8),
        condition: Some(RuleCondition {
            kind: Some(rule_condition::Kind::SessionIdleForSeconds(300)),
        }),
        action: Some(RuleAction {
            kind: Some(rule_action::Kind::NotifyWebhook(NotifyWebhookAction {
                url: "http://127.0.0.1:9/fanout-bench".into(),
            })),
        }),
        // Disabled: nothing in the server should act on bench rules.
        enabled: false,
        created_at: None,
        updated_at: None,
    }
}

/// The phase and append time of a bench event; None for other events.
fn parse_marker(event: &LifecycleEvent) -> Option<(Phase, u64)> {
    let Some(Payload::RuleCreated(RuleChanged { rule: Some(rule) })) = &event.payload else {
        return None;
    };
    let mut parts = rule.name.strip_prefix(MARKER)?.split_whitespace();
    let phase = Phase::from_index(parts.next()?.parse().ok()?)?;
    let stamp = parts.next()?.parse().ok()?;
    Some((phase, stamp))
}

fn timestamp_now() -> valence_lifecycle_api::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    valence_lifecycle_api::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    }
}

// ---------------------------------------------------------------- baseline

/// The bare baseline: Subscribe hands out a broadcast receiver as the
/// response stream. No store, no log, no per-subscriber task, no middleware.
struct BroadcastService {
    tx: broadcast::Sender<Arc<SubscribeResponse>>,
    lagged: Arc<AtomicU64>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventStreamService for BroadcastService {
    type SubscribeStream = ResponseStream;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let lagged = self.lagged.clone();
        let stream = BroadcastStream::new(self.tx.subscribe()).filter_map(move |item| {
            let item = match item {
                Ok(message) => Some(Ok(SubscribeResponse::clone(&message))),
                // A bare broadcast drops what a lagging receiver missed;
                // counted so the report can say whether that happened.
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    lagged.fetch_add(n, Ordering::Relaxed);
                    None
                }
            };
            std::future::ready(item)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn baseline_event(sequence: u64, rule: ProgressionRule) -> SubscribeResponse {
    let now = timestamp_now();
    let rule = ProgressionRule {
        created_at: Some(now),
        updated_at: Some(now),
        ..rule
    };
    SubscribeResponse {
        message: Some(subscribe_response::Message::Event(LifecycleEvent {
            sequence,
            time: Some(now),
            slot: None,
            signature: String::new(),
            entity_id: rule.id.clone(),
            // As the server lists them: the rule is the one entity.
            entity_ids: vec![rule.id.clone()],
            namespace: String::new(),
            event_type: EventType::RuleCreated as i32,
            // Rules belong to no shard.
            shard: String::new(),
            payload: Some(Payload::RuleCreated(RuleChanged { rule: Some(rule) })),
        })),
    }
}

// ------------------------------------------------------------ the systems

enum Writer {
    /// RuleService.CreateRule: one stored rule and one RuleCreated event,
    /// committed by the server's own store, which wakes its event tailer.
    Valence(RuleServiceClient<Channel>),
    Baseline {
        tx: broadcast::Sender<Arc<SubscribeResponse>>,
        next_sequence: AtomicU64,
    },
}

struct System {
    name: &'static str,
    grpc: SocketAddr,
    writer: Writer,
    /// Where the server's Prometheus metrics are (Valence only).
    metrics_url: Option<String>,
    /// A second handle on the server's SQLite file (Valence only).
    store: Option<Store>,
    lagged: Option<Arc<AtomicU64>>,
}

impl System {
    async fn append(&self, id: String, phase: Phase) -> anyhow::Result<()> {
        let stamp = clock_ns();
        let rule = bench_rule(id, phase, stamp);
        match &self.writer {
            Writer::Valence(client) => {
                let mut client = client.clone();
                timeout(
                    APPEND_TIMEOUT,
                    client.create_rule(CreateRuleRequest { rule: Some(rule) }),
                )
                .await
                .map_err(|_| anyhow!("CreateRule took longer than {APPEND_TIMEOUT:?}"))?
                .context("CreateRule failed")?;
            }
            Writer::Baseline { tx, next_sequence } => {
                let sequence = next_sequence.fetch_add(1, Ordering::Relaxed) + 1;
                tx.send(Arc::new(baseline_event(sequence, rule)))
                    .map_err(|_| anyhow!("the baseline has no subscribers"))?;
            }
        }
        Ok(())
    }

    fn writers(&self) -> usize {
        match self.writer {
            Writer::Valence(_) => VALENCE_WRITERS,
            Writer::Baseline { .. } => 1,
        }
    }

    async fn append_burst(&self, tag: &str, phase: Phase, count: usize) -> anyhow::Result<()> {
        futures::stream::iter(0..count)
            .map(|i| self.append(format!("{tag}-p{}-{i}", phase as u8), phase))
            .buffer_unordered(self.writers())
            .try_for_each(|()| std::future::ready(Ok(())))
            .await
    }

    /// Valence only: writes `count` events into the log in one transaction
    /// through the second store handle, then one CreateRule, whose commit
    /// wakes the tailer (the other handle's commit cannot). The batch
    /// becomes visible at once, at commit, like the baseline's burst, so the
    /// delivery rate is the fan-out's own, not the write path's. Every event
    /// carries the same stamp; returns it and the commit time.
    async fn append_prewritten(&self, tag: &str, count: usize) -> anyhow::Result<(u64, u64)> {
        let Some(store) = &self.store else {
            bail!("only the valence server has a store");
        };
        let phase = Phase::Prewritten;
        let stamp = clock_ns();
        let events = (0..count)
            .map(|i| {
                let id = format!("{tag}-p{}-{i}", phase as u8);
                let rule = bench_rule(id.clone(), phase, stamp);
                NewEvent::new(id, Payload::RuleCreated(RuleChanged { rule: Some(rule) }))
            })
            .collect();
        timeout(APPEND_TIMEOUT, store.append_events(events))
            .await
            .map_err(|_| anyhow!("writing {count} events took longer than {APPEND_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("writing {count} events failed: {e}"))?;
        let committed = clock_ns();
        let release = Phase::Release;
        self.append(format!("{tag}-p{}", release as u8), release)
            .await?;
        Ok((stamp, committed))
    }

    /// Returns each append's duration: for Valence the CreateRule round
    /// trip, which tells the write's share of the end-to-end latency.
    async fn append_paced(&self, tag: &str, count: usize, rate: f64) -> anyhow::Result<Vec<u64>> {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        // Delay, not Burst: a late tick must not turn into a catch-up burst
        // that would measure queueing again.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut durations = Vec::with_capacity(count);
        for i in 0..count {
            tick.tick().await;
            let started = clock_ns();
            self.append(format!("{tag}-p{}-{i}", Phase::Paced as u8), Phase::Paced)
                .await?;
            durations.push(clock_ns() - started);
        }
        Ok(durations)
    }
}

async fn start_valence(
    db_dir: &std::path::Path,
    shutdown: CancellationToken,
) -> anyhow::Result<(System, JoinHandle<anyhow::Result<bool>>)> {
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", db_dir.join("bench.db").display());
    // No chain: an embedded network and its monitor would add load and
    // events that have nothing to do with fan-out.
    config.rpc.embedded = false;
    config.events.live_buffer = LIVE_BUFFER;
    config.events.max_subscribers = 10_000;
    config.server.max_concurrent_requests = 4_096;
    let mut database = config.database.clone();
    database.max_connections = 2;
    let support::Started {
        grpc: grpc_addr,
        api: api_addr,
        handle,
    } = support::start_server(config, shutdown, SETUP_TIMEOUT).await?;
    let writer = RuleServiceClient::new(connect(grpc_addr).await?);
    let store = Store::connect(&database)
        .await
        .context("opening a second store handle")?;
    let system = System {
        name: "valence",
        grpc: grpc_addr,
        writer: Writer::Valence(writer),
        metrics_url: Some(format!("http://{api_addr}/metrics")),
        store: Some(store),
        lagged: None,
    };
    Ok((system, handle))
}

async fn start_baseline(
    capacity: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<(System, JoinHandle<anyhow::Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, _) = broadcast::channel(capacity);
    let lagged = Arc::new(AtomicU64::new(0));
    let service = BroadcastService {
        tx: tx.clone(),
        lagged: lagged.clone(),
    };
    let handle = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(EventStreamServiceServer::new(service))
            // As the server does (and tonic's own `serve` would): without
            // TCP_NODELAY small frames wait for Nagle and delayed ACKs, and
            // the baseline would measure the kernel rather than tonic.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.cancelled_owned(),
            )
            .await
            .context("baseline server failed")
    });
    let system = System {
        name: "baseline",
        grpc: addr,
        writer: Writer::Baseline {
            tx,
            next_sequence: AtomicU64::new(0),
        },
        metrics_url: None,
        store: None,
        lagged: Some(lagged),
    };
    Ok((system, handle))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

// ------------------------------------------------------------ subscribers

/// What subscribers tell the driver, without a message per event: a permit
/// per subscriber when it is subscribed and when it has seen a whole phase.
struct Progress {
    ready: Semaphore,
    done: [Semaphore; PHASES],
    failures: AtomicUsize,
    first_failure: Mutex<Option<String>>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            ready: Semaphore::new(0),
            done: std::array::from_fn(|_| Semaphore::new(0)),
            failures: AtomicUsize::new(0),
            first_failure: Mutex::new(None),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        let failures = self.failures.load(Ordering::SeqCst);
        if failures > 0 {
            let first = self
                .first_failure
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_default();
            bail!("{failures} subscriber(s) failed; first: {first}");
        }
        Ok(())
    }

    async fn wait(&self, semaphore: &Semaphore, n: usize, what: &str) -> anyhow::Result<()> {
        match timeout(PHASE_TIMEOUT, semaphore.acquire_many(n as u32)).await {
            Ok(permits) => permits?.forget(),
            Err(_) => bail!(
                "after {PHASE_TIMEOUT:?} only {} of {n} subscribers had {what}",
                semaphore.available_permits()
            ),
        }
        self.check()
    }
}

#[derive(Default)]
struct PhaseLog {
    received: usize,
    latencies_ns: Vec<u64>,
    last_delivery_ns: u64,
}

#[derive(Default)]
struct SubscriberLog {
    phases: [PhaseLog; PHASES],
    /// Bench events beyond the number appended.
    extra: u64,
    /// A sequence not above the previous one.
    out_of_order: u64,
    /// A sequence more than one above the previous one (unfiltered stream).
    gaps: u64,
    /// Events the server logged itself (component status and the like).
    other_events: u64,
    heartbeats: u64,
}

async fn run_subscriber(
    mut client: EventStreamServiceClient<Channel>,
    expected: [usize; PHASES],
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> SubscriberLog {
    let mut log = SubscriberLog::default();
    for (phase, n) in log.phases.iter_mut().zip(expected) {
        // Sized up front so the delivery path does not reallocate.
        phase.latencies_ns.reserve_exact(n);
    }
    let mut signalled = [false; PHASES];
    let mut ready = false;
    let result = async {
        let request = SubscribeRequest {
            start: StartPosition::Now as i32,
            // The baseline sends no heartbeats; keep them out of the way.
            heartbeat_interval_seconds: 3_600,
            ..Default::default()
        };
        let mut stream = timeout(SETUP_TIMEOUT, client.subscribe(request))
            .await
            .map_err(|_| anyhow!("Subscribe did not answer within {SETUP_TIMEOUT:?}"))?
            .context("Subscribe failed")?
            .into_inner();
        progress.ready.add_permits(1);
        ready = true;
        let mut last_sequence = 0u64;
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                message = stream.message() => message,
            };
            let now = clock_ns();
            let Some(message) = message.context("the stream failed")? else {
                bail!("the server ended the stream");
            };
            let event = match message.message {
                Some(subscribe_response::Message::Event(event)) => event,
                Some(subscribe_response::Message::Heartbeat(_)) => {
                    log.heartbeats += 1;
                    continue;
                }
                None => continue,
            };
            if last_sequence != 0 {
                if event.sequence <= last_sequence {
                    log.out_of_order += 1;
                } else if event.sequence > last_sequence + 1 {
                    log.gaps += 1;
                }
            }
            last_sequence = last_sequence.max(event.sequence);
            let Some((phase, stamp)) = parse_marker(&event) else {
                log.other_events += 1;
                continue;
            };
            let i = phase as usize;
            let record = &mut log.phases[i];
            if record.received == expected[i] {
                log.extra += 1;
                continue;
            }
            record.received += 1;
            record.latencies_ns.push(now.saturating_sub(stamp));
            record.last_delivery_ns = now;
            if record.received == expected[i] {
                progress.done[i].add_permits(1);
                signalled[i] = true;
            }
        }
    }
    .await;
    if let Err(e) = result {
        if progress.failures.fetch_add(1, Ordering::SeqCst) == 0 {
            *progress.first_failure.lock().unwrap() = Some(format!("{e:#}"));
        }
        // Release the driver's waits at once; it checks failures next.
        if !ready {
            progress.ready.add_permits(1);
        }
        for (i, done) in signalled.iter().enumerate() {
            if !done {
                progress.done[i].add_permits(1);
            }
        }
    }
    log
}

// ------------------------------------------------------------ measurement

#[derive(Clone, Copy, Default)]
struct Latency {
    p50_ns: u64,
    p99_ns: u64,
    samples: usize,
}

/// Nearest-rank percentiles of all samples, pooled over subscribers.
fn latency(mut samples: Vec<u64>) -> Latency {
    samples.sort_unstable();
    let rank = |p: f64| {
        let r = ((p * samples.len() as f64).ceil() as usize).max(1) - 1;
        samples.get(r).copied().unwrap_or(0)
    };
    Latency {
        p50_ns: rank(0.50),
        p99_ns: rank(0.99),
        samples: samples.len(),
    }
}

#[derive(Default)]
struct Integrity {
    missing: u64,
    extra: u64,
    out_of_order: u64,
    gaps: u64,
    other_events: u64,
    heartbeats: u64,
    /// Event messages the clients received (bench and other).
    client_events: u64,
    /// Server side (Valence): switches to catch-up during the scenario.
    catch_ups: Option<u64>,
    /// Server side (Valence): deliveries counted by the server.
    server_delivered: Option<u64>,
    /// Server side (Valence): open subscriptions after all clients left.
    leftover_subscriptions: Option<u64>,
    /// Baseline: events its broadcast dropped for lagging receivers.
    lagged: Option<u64>,
}

impl Integrity {
    /// Sums the counts of several rounds.
    fn add(&mut self, other: &Integrity) {
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.missing += other.missing;
        self.extra += other.extra;
        self.out_of_order += other.out_of_order;
        self.gaps += other.gaps;
        self.other_events += other.other_events;
        self.heartbeats += other.heartbeats;
        self.catch_ups = sum(self.catch_ups, other.catch_ups);
        self.server_delivered = sum(self.server_delivered, other.server_delivered);
        self.leftover_subscriptions =
            sum(self.leftover_subscriptions, other.leftover_subscriptions);
        self.lagged = sum(self.lagged, other.lagged);
        self.client_events += other.client_events;
    }
}

struct Measurement {
    /// Deliveries per second in the saturated phase.
    throughput: f64,
    /// Appends per second the writer achieved in the saturated phase.
    append_rate: f64,
    /// From the burst's last append to its last delivery: near zero when
    /// delivery keeps pace with the writer, most of the burst when not.
    drain_ns: u64,
    saturated: Latency,
    paced: Latency,
    paced_rate: f64,
    /// Duration of one append in the paced phase.
    append: Latency,
    prewritten: Option<Prewritten>,
    integrity: Integrity,
}

/// Valence's fan-out of a batch that appears in the log at once.
#[derive(Clone, Copy)]
struct Prewritten {
    throughput: f64,
    latency: Latency,
}

/// The server's own counters, read from /metrics.
#[derive(Default, Clone, Copy)]
struct ServerCounters {
    delivered: u64,
    catch_ups: u64,
    subscribers: u64,
}

async fn server_counters(url: &str) -> anyhow::Result<ServerCounters> {
    let text = timeout(Duration::from_secs(10), async {
        reqwest::get(url).await?.text().await
    })
    .await
    .map_err(|_| anyhow!("{url} did not answer"))??;
    let mut counters = ServerCounters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        match name {
            "lifecycle_events_delivered_total" => counters.delivered = value,
            "lifecycle_subscriber_catch_ups_total" => counters.catch_ups = value,
            "lifecycle_event_subscribers" => counters.subscribers = value,
            _ => {}
        }
    }
    Ok(counters)
}

/// Subscribes the scenario's clients, warms up, then runs the saturated, the
/// paced and (Valence only) the burst phase. `paced_rate` None derives it
/// from this system's own saturated result.
async fn measure(
    system: &System,
    s: &Scenario,
    paced_rate: Option<f64>,
) -> anyhow::Result<Measurement> {
    let n = s.subscribers;
    // Rule ids must be unique in the server's store across rounds.
    static MEASUREMENTS: AtomicUsize = AtomicUsize::new(0);
    let tag = format!(
        "{}-n{n}-m{}",
        system.name,
        MEASUREMENTS.fetch_add(1, Ordering::Relaxed)
    );
    let prewritten = if system.store.is_some() { s.events } else { 0 };
    let expected = [
        1,
        s.events,
        s.paced_events,
        prewritten,
        usize::from(prewritten > 0),
    ];
    let before = match &system.metrics_url {
        Some(url) => Some(server_counters(url).await?),
        None => None,
    };
    let lagged_before = system.lagged.as_ref().map(|l| l.load(Ordering::Relaxed));

    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(SUBSCRIBERS_PER_CHANNEL) {
        channels.push(connect(system.grpc).await?);
    }
    let progress = Arc::new(Progress::new());
    let stop = CancellationToken::new();
    // Dropping the guard on any early return ends every subscriber.
    let _stop_guard = stop.clone().drop_guard();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let client =
                EventStreamServiceClient::new(channels[i / SUBSCRIBERS_PER_CHANNEL].clone());
            tokio::spawn(run_subscriber(
                client,
                expected,
                progress.clone(),
                stop.clone(),
            ))
        })
        .collect();
    progress.wait(&progress.ready, n, "subscribed").await?;

    // A subscription is registered before its response headers are sent,
    // but only an event seen by everyone proves every stream is flowing.
    system
        .append(format!("{tag}-warmup"), Phase::WarmUp)
        .await?;
    progress
        .wait(
            &progress.done[Phase::WarmUp as usize],
            n,
            "received the warm-up event",
        )
        .await?;

    let first_append = clock_ns();
    system
        .append_burst(&tag, Phase::Saturated, s.events)
        .await?;
    let appended = clock_ns();
    progress
        .wait(
            &progress.done[Phase::Saturated as usize],
            n,
            "received every event of the burst",
        )
        .await?;

    // The throughput needs the burst's last delivery, which only the
    // subscribers know; they report it at the end. The paced rate needs it
    // now, so the driver's own observation (an upper bound) stands in.
    let burst_secs = (clock_ns() - first_append) as f64 / 1e9;
    let rate = paced_rate.unwrap_or_else(|| {
        let capacity = (s.events * n) as f64 / burst_secs / n as f64;
        let appends = s.events as f64 / ((appended - first_append) as f64 / 1e9);
        (PACED_SHARE * capacity.min(appends)).clamp(PACED_MIN_RATE, PACED_MAX_RATE)
    });
    let append_durations = system.append_paced(&tag, s.paced_events, rate).await?;
    progress
        .wait(
            &progress.done[Phase::Paced as usize],
            n,
            "received every paced event",
        )
        .await?;

    let (mut prewrite_stamp, mut committed) = (0, 0);
    if prewritten > 0 {
        (prewrite_stamp, committed) = system.append_prewritten(&tag, prewritten).await?;
        for (phase, what) in [
            (Phase::Prewritten, "received every pre-written event"),
            (Phase::Release, "received the release event"),
        ] {
            progress
                .wait(&progress.done[phase as usize], n, what)
                .await?;
        }
    }

    tokio::time::sleep(SETTLE).await;
    stop.cancel();
    let logs = timeout(SHUTDOWN_TIMEOUT, futures::future::join_all(handles))
        .await
        .map_err(|_| anyhow!("subscribers did not stop within {SHUTDOWN_TIMEOUT:?}"))?;
    progress.check()?;
    drop(channels);

    let mut integrity = Integrity::default();
    let mut last_delivery = 0;
    let mut last_prewritten = 0;
    let (mut saturated, mut paced, mut prewritten_latencies) = (Vec::new(), Vec::new(), Vec::new());
    for log in logs {
        let mut log = log.context("a subscriber task panicked")?;
        for (i, phase) in log.phases.iter().enumerate() {
            integrity.missing += expected[i].saturating_sub(phase.received) as u64;
            integrity.client_events += phase.received as u64;
        }
        integrity.client_events += log.extra + log.other_events;
        integrity.extra += log.extra;
        integrity.out_of_order += log.out_of_order;
        integrity.gaps += log.gaps;
        integrity.other_events += log.other_events;
        integrity.heartbeats += log.heartbeats;
        last_delivery = last_delivery.max(log.phases[Phase::Saturated as usize].last_delivery_ns);
        saturated.append(&mut log.phases[Phase::Saturated as usize].latencies_ns);
        paced.append(&mut log.phases[Phase::Paced as usize].latencies_ns);
        let p = &mut log.phases[Phase::Prewritten as usize];
        last_prewritten = last_prewritten.max(p.last_delivery_ns);
        // From commit, when the whole batch became visible at once.
        let offset = committed.saturating_sub(prewrite_stamp);
        prewritten_latencies.extend(p.latencies_ns.iter().map(|l| l.saturating_sub(offset)));
    }
    if let (Some(url), Some(before)) = (&system.metrics_url, before) {
        // Subscriptions end when the server notices the client left; give
        // it a moment before calling one a leak.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut after = server_counters(url).await?;
        while after.subscribers > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            after = server_counters(url).await?;
        }
        integrity.catch_ups = Some(after.catch_ups - before.catch_ups);
        integrity.server_delivered = Some(after.delivered - before.delivered);
        integrity.leftover_subscriptions = Some(after.subscribers);
    }
    if let (Some(lagged), Some(before)) = (&system.lagged, lagged_before) {
        integrity.lagged = Some(lagged.load(Ordering::Relaxed) - before);
    }
    let wall = (last_delivery - first_append) as f64 / 1e9;
    Ok(Measurement {
        throughput: (s.events * n) as f64 / wall,
        append_rate: s.events as f64 / ((appended - first_append) as f64 / 1e9),
        drain_ns: last_delivery.saturating_sub(appended),
        saturated: latency(saturated),
        paced: latency(paced),
        paced_rate: rate,
        append: latency(append_durations),
        prewritten: (prewritten > 0).then(|| Prewritten {
            throughput: (prewritten * n) as f64 / ((last_prewritten - committed) as f64 / 1e9),
            latency: latency(prewritten_latencies),
        }),
        integrity,
    })
}

// ------------------------------------------------------------------ report

fn median_f64(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Medians over rounds: robust to a round disturbed by other work on the
/// machine, which a pooled p99 would not be.
struct Summary {
    throughput: f64,
    append_rate: f64,
    drain_ns: u64,
    saturated: Latency,
    paced: Latency,
    append: Latency,
    prewritten: Option<Prewritten>,
    integrity: Integrity,
}

fn summarize(rounds: &[Measurement]) -> Summary {
    let lat = |f: fn(&Measurement) -> Latency| Latency {
        p50_ns: median_u64(rounds.iter().map(|m| f(m).p50_ns)),
        p99_ns: median_u64(rounds.iter().map(|m| f(m).p99_ns)),
        samples: rounds.iter().map(|m| f(m).samples).sum(),
    };
    let mut integrity = Integrity::default();
    for m in rounds {
        integrity.add(&m.integrity);
    }
    Summary {
        throughput: median_f64(rounds.iter().map(|m| m.throughput)),
        append_rate: median_f64(rounds.iter().map(|m| m.append_rate)),
        drain_ns: median_u64(rounds.iter().map(|m| m.drain_ns)),
        saturated: lat(|m| m.saturated),
        paced: lat(|m| m.paced),
        append: lat(|m| m.append),
        prewritten: rounds[0].prewritten.map(|_| Prewritten {
            throughput: median_f64(
                rounds
                    .iter()
                    .filter_map(|m| m.prewritten)
                    .map(|p| p.throughput),
            ),
            latency: lat(|m| m.prewritten.map(|p| p.latency).unwrap_or_default()),
        }),
        integrity,
    }
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.0} µs", ns as f64 / 1e3),
        1_000_000..=9_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.0}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}×", a as f64 / b as f64)
    }
}

fn pair(l: Latency) -> String {
    format!("{} / {}", fmt_ns(l.p50_ns), fmt_ns(l.p99_ns))
}

fn machine_facts() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("nproc {cpus}, {model}, load average {}", load_average())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn print_header() {
    println!(
        "fan-out benchmark: EventStreamService.Subscribe, valence server vs bare tonic broadcast"
    );
    println!("machine: {}", machine_facts());
    println!(
        "build: release (cargo bench profile); one tokio multi-thread runtime ({} workers) \
         for both servers, the writer and all clients",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "scenarios (subscribers/burst events/paced events): {}; {} round(s) each, \
         valence and baseline alternating which goes first; figures are medians over rounds",
        scenarios()
            .iter()
            .map(|s| format!("{}/{}/{}", s.subscribers, s.events, s.paced_events))
            .collect::<Vec<_>>()
            .join(", "),
        rounds()
    );
    println!(
        "subscribers: start NOW, no filters, {SUBSCRIBERS_PER_CHANNEL} per HTTP/2 connection \
         (tonic client defaults), heartbeat interval 3600 s"
    );
    println!(
        "valence: SQLite in a temp dir, no chain (rpc.embedded false), events.live_buffer \
         {LIVE_BUFFER}, other settings default. Appends are RuleService.CreateRule calls ({VALENCE_WRITERS} in flight in the burst, 1 when \
         paced), each storing a rule and its RuleCreated event in one transaction through the \
         server's own store, which wakes its event tailer at commit. A second Store handle on the \
         file would not wake it (the wake-up is per Store instance), so such events would wait for \
         the tailer's 1 s poll. Latency starts before the CreateRule request is sent, so it includes \
         the gRPC write and the commit."
    );
    println!(
        "baseline: tonic Server (TCP_NODELAY, as the server) with only EventStreamService; \
         Subscribe = BroadcastStream of a tokio::sync::broadcast; an append is one broadcast \
         send of the same RuleCreated message"
    );
    println!(
        "throughput: deliveries (events × subscribers) / (first append → last delivery), writer \
         as fast as it can. Paced: both systems get the same rate, {:.0}% of valence's \
         per-subscriber capacity in round 1 (at most {PACED_MAX_RATE:.0}/s)",
        PACED_SHARE * 100.0
    );
    println!();
}

type Row<'a> = (&'a Scenario, Vec<Measurement>, Vec<Measurement>);

fn print_tables(rows: &[Row]) {
    let summaries: Vec<_> = rows
        .iter()
        .map(|(s, v, b)| (*s, summarize(v), summarize(b), v[0].paced_rate))
        .collect();
    println!(
        "saturated: the writer appends the burst as fast as it can \
         (latency includes queueing behind the burst)"
    );
    println!(
        "{:>11} | {:>16} | {:>17} | {:>16} | {:>19} | {:>19} | {:>15}",
        "subscribers",
        "valence events/s",
        "baseline events/s",
        "throughput ratio",
        "valence p50 / p99",
        "baseline p50 / p99",
        "latency ratio"
    );
    println!("{}", "-".repeat(11 + 16 + 17 + 16 + 19 + 19 + 15 + 6 * 3));
    for (s, v, b, _) in &summaries {
        println!(
            "{:>11} | {:>16} | {:>17} | {:>16} | {:>19} | {:>19} | {:>15}",
            s.subscribers,
            fmt_rate(v.throughput),
            fmt_rate(b.throughput),
            format!("{:.3}", v.throughput / b.throughput),
            pair(v.saturated),
            pair(b.saturated),
            format!(
                "{} / {}",
                ratio(v.saturated.p50_ns, b.saturated.p50_ns),
                ratio(v.saturated.p99_ns, b.saturated.p99_ns)
            ),
        );
    }
    println!();
    println!(
        "burst: a whole batch appears at once. Valence: the burst's event count written in one \
         transaction through a second store handle, then one CreateRule to wake the tailer; \
         throughput and latency count from that transaction's commit. Baseline: its saturated \
         run above, which is the same thing"
    );
    println!(
        "{:>11} | {:>16} | {:>17} | {:>16} | {:>19} | {:>19} | {:>15}",
        "subscribers",
        "valence events/s",
        "baseline events/s",
        "throughput ratio",
        "valence p50 / p99",
        "baseline p50 / p99",
        "latency ratio"
    );
    println!("{}", "-".repeat(11 + 16 + 17 + 16 + 19 + 19 + 15 + 6 * 3));
    for (s, v, b, _) in &summaries {
        let Some(p) = v.prewritten else { continue };
        println!(
            "{:>11} | {:>16} | {:>17} | {:>16} | {:>19} | {:>19} | {:>15}",
            s.subscribers,
            fmt_rate(p.throughput),
            fmt_rate(b.throughput),
            format!("{:.3}", p.throughput / b.throughput),
            pair(p.latency),
            pair(b.saturated),
            format!(
                "{} / {}",
                ratio(p.latency.p50_ns, b.saturated.p50_ns),
                ratio(p.latency.p99_ns, b.saturated.p99_ns)
            ),
        );
    }
    println!();
    println!("paced: both systems get the same fixed append rate (the pipeline's own delay)");
    println!(
        "{:>11} | {:>13} | {:>9} | {:>19} | {:>19} | {:>15}",
        "subscribers",
        "rate events/s",
        "samples",
        "valence p50 / p99",
        "baseline p50 / p99",
        "latency ratio"
    );
    println!("{}", "-".repeat(11 + 13 + 9 + 19 + 19 + 15 + 5 * 3));
    for (s, v, b, rate) in &summaries {
        println!(
            "{:>11} | {:>13} | {:>9} | {:>19} | {:>19} | {:>15}",
            s.subscribers,
            format!("{rate:.0}"),
            v.paced.samples,
            pair(v.paced),
            pair(b.paced),
            format!(
                "{} / {}",
                ratio(v.paced.p50_ns, b.paced.p50_ns),
                ratio(v.paced.p99_ns, b.paced.p99_ns)
            ),
        );
    }
    println!();
    println!(
        "writer (medians): appends/s in the burst; time from the burst's last append to its \
         last delivery (small: delivery kept pace with the writer); one paced append, p50 / p99"
    );
    for (s, v, b, _) in &summaries {
        for (name, m, append) in [
            ("valence", v, "CreateRule round trip"),
            ("baseline", b, "broadcast send"),
        ] {
            println!(
                "  {:>5} {name:>8}: {:>5} appends/s, drained {:>8} after the last append, {append} {}",
                s.subscribers,
                fmt_rate(m.append_rate),
                fmt_ns(m.drain_ns),
                pair(m.append),
            );
        }
    }
    println!();
    println!("per round (saturated events/s, p50 / p99; paced p50 / p99; valence burst events/s):");
    for (s, v, b) in rows {
        for (name, rounds) in [("valence", v), ("baseline", b)] {
            let cells: Vec<String> = rounds
                .iter()
                .map(|m| {
                    let burst = m
                        .prewritten
                        .map(|p| format!("; {}", fmt_rate(p.throughput)))
                        .unwrap_or_default();
                    format!(
                        "{}, {}; {}{burst}",
                        fmt_rate(m.throughput),
                        pair(m.saturated),
                        pair(m.paced)
                    )
                })
                .collect();
            println!("  {:>5} {name:>8}: {}", s.subscribers, cells.join(" | "));
        }
    }
    println!();
    println!(
        "integrity over all rounds (every subscriber must get every bench event once, \
         in sequence order):"
    );
    for (s, v, b, _) in &summaries {
        for (name, m) in [("valence", v), ("baseline", b)] {
            let i = &m.integrity;
            let mut line = format!(
                "  {:>5} {name:>8}: missing {}, extra {}, out of order {}, sequence gaps {}, \
                 other events {}, heartbeats {}",
                s.subscribers,
                i.missing,
                i.extra,
                i.out_of_order,
                i.gaps,
                i.other_events,
                i.heartbeats
            );
            if let (Some(c), Some(d), Some(l)) =
                (i.catch_ups, i.server_delivered, i.leftover_subscriptions)
            {
                line += &format!(
                    "; server: catch-ups {c}, events delivered {d} (clients received {}), \
                     subscriptions left open {l}",
                    i.client_events
                );
            }
            if let Some(l) = i.lagged {
                line += &format!("; broadcast drops for lag {l}");
            }
            println!("{line}");
        }
    }
}

// -------------------------------------------------------------------- main

fn main() -> anyhow::Result<()> {
    // Server warnings (failed log reads and the like) belong in the report.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    clock_ns();
    print_header();
    let db_dir = tempfile::tempdir()?;
    let valence_stop = CancellationToken::new();
    let baseline_stop = CancellationToken::new();
    let (valence, valence_handle) = start_valence(db_dir.path(), valence_stop.clone()).await?;
    let capacity = SCENARIOS
        .iter()
        .map(|s| s.events.max(s.paced_events))
        .max()
        .unwrap_or(0)
        + 16;
    let (baseline, baseline_handle) = start_baseline(capacity, baseline_stop.clone()).await?;

    let started = Instant::now();
    let outcome = async {
        let mut rows = Vec::new();
        for s in scenarios() {
            let (mut v, mut b) = (Vec::new(), Vec::new());
            // Round 1 runs valence first: its result fixes the paced rate
            // that every later measurement of this scenario uses.
            let mut rate = None;
            for round in 0..rounds() {
                let order = if round % 2 == 0 {
                    [&valence, &baseline]
                } else {
                    [&baseline, &valence]
                };
                for system in order {
                    eprintln!(
                        "{} subscribers, round {}: {} (load average {})",
                        s.subscribers,
                        round + 1,
                        system.name,
                        load_average()
                    );
                    let m = measure(system, s, rate).await.with_context(|| {
                        format!(
                            "{}, {} subscribers, round {}",
                            system.name,
                            s.subscribers,
                            round + 1
                        )
                    })?;
                    rate = Some(m.paced_rate);
                    match system.writer {
                        Writer::Valence(_) => v.push(m),
                        Writer::Baseline { .. } => b.push(m),
                    }
                }
            }
            rows.push((s, v, b));
        }
        Ok::<_, anyhow::Error>(rows)
    }
    .await;

    if let Some(store) = &valence.store {
        store.close().await;
    }
    valence_stop.cancel();
    baseline_stop.cancel();
    let valence_clean = timeout(SHUTDOWN_TIMEOUT, valence_handle).await;
    let baseline_done = timeout(SHUTDOWN_TIMEOUT, baseline_handle).await;
    let rows = outcome?;
    print_tables(&rows);
    println!();
    match valence_clean {
        Ok(Ok(Ok(true))) => println!("shutdown: valence server stopped cleanly"),
        Ok(Ok(Ok(false))) => println!("shutdown: valence server reported an unclean stop"),
        Ok(Ok(Err(e))) => println!("shutdown: valence server failed: {e:#}"),
        Ok(Err(e)) => println!("shutdown: valence server task panicked: {e}"),
        Err(_) => println!("shutdown: valence server did not stop within {SHUTDOWN_TIMEOUT:?}"),
    }
    if !matches!(baseline_done, Ok(Ok(Ok(())))) {
        println!("shutdown: the baseline server did not stop cleanly");
    }
    println!(
        "measured for {:.0} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}
