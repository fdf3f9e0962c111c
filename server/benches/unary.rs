//! Unary read benchmark (issue 14): the server's fixed cost per call, a
//! program that prints figures beside a baseline measured in the same run,
//! not a timed test.
//!
//! The store is seeded with `BENCH_SESSIONS` sessions (default 10,000; each
//! with its events), then the real server (SQLite, or PostgreSQL as well
//! when `TEST_DATABASE_URL` names one; no chain) and a bare tonic server of
//! the same generated `LifecycleService`, which answers each call with the
//! response the real server gave for it (same bytes on the wire, no store,
//! no middleware), serve on loopback in this process. For `GetSession`
//! (random stored ids), `GetStats` and `ListEvents` (100 events after a
//! random sequence), at 1, 64 and 256 calls in flight over 1 and 4
//! connections, it prints calls/s of each, the ratio, and the process CPU
//! per call (client and server share the process, so the difference of the
//! two columns is what the server adds).
//!
//! `cargo bench -p valence-lifecycle-server --bench unary` (release).
//! `cargo test --benches` runs a short form (one backend, one concurrency,
//! a fraction of a second each) only to show it still runs.

mod support;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rand::Rng as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    transport::{server::TcpIncoming, Channel, Endpoint},
    Request, Response, Status,
};
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient,
    lifecycle_service_server::{LifecycleService, LifecycleServiceServer},
    *,
};
use valence_lifecycle_server::{
    config::Config,
    store::{SessionRecord, Store},
    telemetry::cpu_seconds,
};

/// Events per ListEvents page, as the figures use.
const PAGE: i32 = 100;

fn main() -> anyhow::Result<()> {
    support::main(run)
}

/// How long each cell of the table runs, and how many cells.
struct Plan {
    sessions: usize,
    window: Duration,
    rounds: usize,
    concurrency: &'static [usize],
    connections: &'static [usize],
}

impl Plan {
    fn new(full: bool) -> Plan {
        if full {
            Plan {
                sessions: support::env_number("BENCH_SESSIONS", 10_000),
                window: Duration::from_secs(2),
                rounds: 3,
                concurrency: &[1, 64, 256],
                connections: &[1, 4],
            }
        } else {
            Plan {
                sessions: 200,
                window: Duration::from_millis(200),
                rounds: 1,
                concurrency: &[64],
                connections: &[1],
            }
        }
    }
}

async fn run(full: bool) -> anyhow::Result<()> {
    let plan = Plan::new(full);
    println!(
        "unary reads: {} sessions, {:?} per measurement, best of {} rounds, alternating order",
        plan.sessions, plan.window, plan.rounds
    );
    println!("machine: {} cores", num_cpus());
    println!();
    println!(
        "{:<9} {:<11} {:>5} {:>5} {:>12} {:>12} {:>7} {:>13} {:>13}",
        "backend",
        "call",
        "inflt",
        "conns",
        "valence/s",
        "bare/s",
        "ratio",
        "valence µs/c",
        "bare µs/c"
    );
    let dir = tempfile::tempdir()?;
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("unary.db").display()),
    )];
    if full {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            backends.push(("postgres", support::fresh_postgres(&url).await?));
        }
    }
    for (backend, url) in backends {
        bench_backend(&plan, backend, &url)
            .await
            .with_context(|| format!("on {backend}"))?;
    }
    Ok(())
}

async fn bench_backend(plan: &Plan, backend: &str, url: &str) -> anyhow::Result<()> {
    let ids = seed(url, plan.sessions).await?;
    let stop = CancellationToken::new();
    let mut config = Config::default();
    config.database.url = url.to_string();
    config.rpc.embedded = false;
    config.server.max_concurrent_requests = 4_096;
    let valence = support::start_server(config, stop.clone(), Duration::from_secs(60)).await?;
    let responses = Recorded::take(valence.grpc, &ids).await?;
    let bare = start_bare(responses.clone(), stop.clone()).await?;
    let head = responses.events.head_sequence;
    let calls: [(&str, Call); 3] = [
        ("GetSession", Call::Session(ids.clone())),
        ("GetStats", Call::Stats),
        ("ListEvents", Call::Events(head)),
    ];
    for (name, call) in &calls {
        for &conns in plan.connections {
            for &inflight in plan.concurrency {
                let mut best = [Cell::default(), Cell::default()];
                for round in 0..plan.rounds {
                    let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                    for which in order {
                        let addr = if which == 0 { valence.grpc } else { bare };
                        let cell = measure(addr, call, inflight, conns, plan.window).await?;
                        if cell.rate > best[which].rate {
                            best[which] = cell;
                        }
                    }
                }
                let [v, b] = best;
                println!(
                    "{:<9} {:<11} {:>5} {:>5} {:>12.0} {:>12.0} {:>6.2}× {:>13.1} {:>13.1}",
                    backend,
                    name,
                    inflight,
                    conns,
                    v.rate,
                    b.rate,
                    v.rate / b.rate.max(1.0),
                    v.cpu_us,
                    b.cpu_us
                );
            }
        }
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), valence.handle).await;
    Ok(())
}

/// Stores `n` sessions (each with its events) before the server starts,
/// as the monitor would have; their ids.
async fn seed(url: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut config = Config::default();
    config.database.url = url.to_string();
    let store = Store::connect(&config.database).await?;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = solana_sdk::pubkey::Pubkey::new_unique().to_string();
        let session = SessionRecord {
            id: id.clone(),
            owner: solana_sdk::pubkey::Pubkey::new_unique().to_string(),
            accounts: vec![solana_sdk::pubkey::Pubkey::new_unique().to_string()],
            namespace: format!("bench-{}", i % 16),
            is_consumed: false,
            nonce: i as u64,
            created_at_ms: 1_700_000_000_000 + i as i64,
            metadata: vec![0; 32],
            slot: Some(i as u64 + 1),
            signature: String::new(),
        };
        store.upsert_session(&session).await?;
        ids.push(id);
    }
    store.close().await;
    Ok(ids)
}

/// What the real server answered, replayed by the bare one.
#[derive(Clone)]
struct Recorded {
    session: GetSessionResponse,
    stats: GetStatsResponse,
    events: ListEventsResponse,
}

impl Recorded {
    async fn take(addr: std::net::SocketAddr, ids: &[String]) -> anyhow::Result<Recorded> {
        let mut client = LifecycleServiceClient::new(connect(addr).await?);
        let session = client
            .get_session(GetSessionRequest { id: ids[0].clone() })
            .await?
            .into_inner();
        let stats = client.get_stats(GetStatsRequest {}).await?.into_inner();
        let events = client
            .list_events(ListEventsRequest {
                limit: PAGE,
                after_sequence: Some(0),
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            events.events.len() == PAGE as usize || ids.len() < PAGE as usize,
            "the seeded log has fewer than {PAGE} events"
        );
        Ok(Recorded {
            session,
            stats,
            events,
        })
    }
}

/// One kind of call, with what varies between calls.
enum Call {
    Session(Vec<String>),
    Stats,
    Events(u64),
}

impl Call {
    async fn once(&self, client: &mut LifecycleServiceClient<Channel>) -> Result<(), Status> {
        match self {
            Call::Session(ids) => {
                let id = ids[rand::rng().random_range(0..ids.len())].clone();
                client.get_session(GetSessionRequest { id }).await?;
            }
            Call::Stats => {
                client.get_stats(GetStatsRequest {}).await?;
            }
            Call::Events(head) => {
                let after = rand::rng().random_range(0..head.saturating_sub(PAGE as u64).max(1));
                client
                    .list_events(ListEventsRequest {
                        limit: PAGE,
                        after_sequence: Some(after),
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

#[derive(Default, Clone, Copy)]
struct Cell {
    rate: f64,
    cpu_us: f64,
}

/// `inflight` callers over `conns` connections for `window`: calls/s and
/// process CPU per call.
async fn measure(
    addr: std::net::SocketAddr,
    call: &Call,
    inflight: usize,
    conns: usize,
    window: Duration,
) -> anyhow::Result<Cell> {
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns {
        channels.push(connect(addr).await?);
    }
    // Warm the connections (and the server's caches) before timing.
    for channel in &channels {
        call.once(&mut LifecycleServiceClient::new(channel.clone()))
            .await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let cpu = cpu_seconds();
    let started = Instant::now();
    let callers = (0..inflight).map(|i| {
        let mut client = LifecycleServiceClient::new(channels[i % conns].clone());
        let done = done.clone();
        async move {
            while Instant::now() < deadline {
                call.once(&mut client).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Status>(())
        }
    });
    futures::future::try_join_all(callers).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let n = done.load(Ordering::Relaxed).max(1) as f64;
    Ok(Cell {
        rate: n / elapsed,
        cpu_us: cpu * 1e6 / n,
    })
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// The baseline: the same generated service, answering from memory.
struct Bare(Recorded);

#[tonic::async_trait]
impl LifecycleService for Bare {
    async fn get_session(
        &self,
        _: Request<GetSessionRequest>,
    ) -> Result<Response<GetSessionResponse>, Status> {
        Ok(Response::new(self.0.session.clone()))
    }
    async fn get_stats(
        &self,
        _: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        Ok(Response::new(self.0.stats.clone()))
    }
    async fn list_events(
        &self,
        _: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        Ok(Response::new(self.0.events.clone()))
    }
    async fn get_account(
        &self,
        _: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_accounts(
        &self,
        _: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_account_requests(
        &self,
        _: Request<ListAccountRequestsRequest>,
    ) -> Result<Response<ListAccountRequestsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn request_account(
        &self,
        _: Request<RequestAccountRequest>,
    ) -> Result<Response<RequestAccountResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn retry_account_request(
        &self,
        _: Request<RetryAccountRequestRequest>,
    ) -> Result<Response<RetryAccountRequestResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_progression(
        &self,
        _: Request<GetProgressionRequest>,
    ) -> Result<Response<GetProgressionResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

async fn start_bare(
    responses: Recorded,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LifecycleServiceServer::new(Bare(responses)))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            ),
    );
    Ok(addr)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
