//! The chaos suite: the server SIGKILLed again and again during ingest on
//! SQLite, the leader SIGKILLed on PostgreSQL with a follower taking over,
//! a resilient subscriber whose connection is cut again and again, and both
//! listeners flooded with slow connections. Each prints what it measured
//! (placed, lost, duplicated, stuck; handover times; /health latency and
//! memory under the flood) and fails on any loss, duplicate or stuck
//! request, or a /health slower than a second.
//!
//! CI (`.ci/test`) runs the short form: 3 kills, 10 cuts, 400 slow
//! connections. The full form, whose figures the README quotes:
//!
//! ```text
//! CHAOS_KILLS=10 CHAOS_CUTS=100 CHAOS_FLOOD=4000 cargo test -p valence-lifecycle-server --test it chaos:: -- --nocapture --test-threads 1
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use solana_sdk::pubkey::Pubkey;
use tokio::{io::AsyncWriteExt as _, net::TcpStream};
use tonic::transport::Channel;
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, AccountRequestStatus, EventType,
    GetStatsRequest, LifecycleEvent, ListAccountRequestsRequest, ListEventsRequest,
    ListSessionsRequest, SubscribeRequest,
};
use valence_lifecycle_client::{Backoff, ClientConfig, LifecycleClient, SubscriptionItem};
use valence_lifecycle_server::chain::dev;

use crate::{
    builder::{accounts_on_chain, expected_hash, place_request, Wallet},
    chain::Net,
    common::{caps, eventually, Db, TestDb},
    process::ServerProcess,
    proxy::Proxy,
};

/// Requests and sessions placed on chain before each kill.
const BURST: usize = 16;
/// Requests placed before each cut of the subscriber: few, so the builder
/// (bound by the chain's confirmations) keeps up with 100 cuts.
const REQUESTS_PER_CUT: usize = 2;
/// Namespace of the sessions the suite places.
const NAMESPACE: &str = "chaos";

fn from_env(name: &str, short: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}

/// SIGKILLs per run: `CHAOS_KILLS`, 3 in the short form.
fn kills() -> usize {
    from_env("CHAOS_KILLS", 3)
}

/// Environment of a server process on `net` paying with `wallet`.
pub(crate) fn server_env(net: &Net, wallet: &Wallet, replica: &str) -> Vec<(String, String)> {
    [
        ("RPC_URL", net.surfnet.rpc_url().to_string()),
        ("WS_URL", net.surfnet.ws_url().to_string()),
        ("SHARD_PROGRAM_ID", net.program.to_string()),
        ("WALLET_PATH", wallet.path.display().to_string()),
        ("POLL_INTERVAL", "1".to_string()),
        ("REPLICA_ID", replica.to_string()),
        ("LEASE_TTL_MS", "3000".to_string()),
        ("LEASE_RENEW_INTERVAL_MS", "500".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn start(url: &str, env: &[(String, String)]) -> ServerProcess {
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ServerProcess::start(url, &vars).await
}

async fn kill(mut server: ServerProcess) {
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
}

async fn client(server: &ServerProcess) -> LifecycleServiceClient<Channel> {
    LifecycleServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
}

/// What the suite placed on chain.
#[derive(Default)]
struct Placed {
    requests: Vec<Pubkey>,
    sessions: Vec<Pubkey>,
}

impl Placed {
    /// A burst of `requests` requests (as a third party would place them)
    /// and `sessions` sessions, straight onto the chain.
    fn burst(&mut self, net: &Net, requests: usize, sessions: usize) {
        let capabilities = caps(&["transfer"]);
        for _ in 0..requests {
            let hash = expected_hash(&capabilities);
            self.requests
                .push(place_request(net, &net.program, &capabilities, hash));
        }
        for _ in 0..sessions {
            let session = dev::random_key();
            let record = dev::session(
                session,
                Pubkey::new_unique(),
                &[],
                NAMESPACE.into(),
                self.sessions.len() as u64,
            );
            net.place(&session, &record.encode());
            self.sessions.push(session);
        }
    }
}

/// Accounts the server reports created so far (0 while it cannot answer).
async fn accounts_created(server: &ServerProcess) -> u64 {
    let Ok(mut client) = LifecycleServiceClient::connect(format!("http://{}", server.grpc)).await
    else {
        return 0;
    };
    client
        .get_stats(GetStatsRequest {})
        .await
        .map(|r| r.into_inner().accounts_created)
        .unwrap_or(0)
}

/// Waits until the server has made some progress on the latest burst, so
/// the kill lands in the middle of the work, not before or after it.
async fn wait_for_progress(server: &ServerProcess, beyond: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && accounts_created(server).await <= beyond {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_requests(
    client: &mut LifecycleServiceClient<Channel>,
) -> Vec<valence_lifecycle_api::v1::AccountRequest> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_account_requests(ListAccountRequestsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.requests);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn all_sessions(client: &mut LifecycleServiceClient<Channel>) -> Vec<String> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_sessions(ListSessionsRequest {
                page_size: 1000,
                page_token,
                namespace: NAMESPACE.into(),
                include_consumed: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.sessions.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Every stored event, oldest first.
async fn all_events(client: &mut LifecycleServiceClient<Channel>) -> Vec<LifecycleEvent> {
    let mut all: Vec<LifecycleEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.sequence);
        let page = client
            .list_events(ListEventsRequest {
                limit: 1000,
                after_sequence: Some(after),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// How many ids in `expected` are missing from `found`, and how many of
/// `found` appear more than once.
fn lost_and_duplicated(expected: &[String], found: &[String]) -> (usize, usize) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in found {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let lost = expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    (lost, duplicated)
}

/// The entities of the events of `kind`.
fn entities_of(events: &[LifecycleEvent], kind: EventType) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type == kind as i32)
        .map(|e| e.entity_id.clone())
        .collect()
}

/// After the kills: waits for a surviving server to finish the work, then
/// counts what was lost, duplicated or left stuck, prints it and fails on
/// any of them.
async fn audit(label: &str, net: &Net, server: &ServerProcess, placed: &Placed) {
    let mut client = client(server).await;
    let requests: Vec<String> = placed.requests.iter().map(|k| k.to_string()).collect();
    let sessions: Vec<String> = placed.sessions.iter().map(|k| k.to_string()).collect();
    let waited = Instant::now();
    let settled = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let stored = all_requests(&mut client.clone()).await;
            let done = stored
                .iter()
                .filter(|r| r.status == AccountRequestStatus::Initialized as i32)
                .count();
            let stats = client.clone().get_stats(GetStatsRequest {}).await.unwrap();
            // Sessions arrive on their own (websocket or pass), not with
            // the requests: settled means both are in.
            let sessions_in = all_sessions(&mut client.clone()).await.len();
            if done >= requests.len()
                && stats.into_inner().pending_account_requests == 0
                && sessions_in >= sessions.len()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .is_ok();

    let stored = all_requests(&mut client).await;
    let stored_ids: Vec<String> = stored.iter().map(|r| r.id.clone()).collect();
    let stuck: Vec<&str> = stored
        .iter()
        .filter(|r| r.status != AccountRequestStatus::Initialized as i32)
        .map(|r| r.id.as_str())
        .collect();
    let (lost_requests, duplicated_requests) = lost_and_duplicated(&requests, &stored_ids);
    let (lost_sessions, duplicated_sessions) =
        lost_and_duplicated(&sessions, &all_sessions(&mut client).await);
    let events = all_events(&mut client).await;
    let (lost_requested, duplicated_requested) = lost_and_duplicated(
        &requests,
        &entities_of(&events, EventType::AccountRequested),
    );
    let accounts: Vec<String> = stored.iter().map(|r| r.account_id.clone()).collect();
    let (lost_initialized, duplicated_initialized) = lost_and_duplicated(
        &accounts,
        &entities_of(&events, EventType::AccountInitialized),
    );
    let (lost_created, duplicated_created) =
        lost_and_duplicated(&sessions, &entities_of(&events, EventType::SessionCreated));
    let sequences: BTreeSet<u64> = events.iter().map(|e| e.sequence).collect();
    let (on_chain, _) = accounts_on_chain(net);
    let lost = lost_requests + lost_sessions + lost_requested + lost_initialized + lost_created;
    let duplicated = duplicated_requests
        + duplicated_sessions
        + duplicated_requested
        + duplicated_initialized
        + duplicated_created
        + (events.len() - sequences.len());
    println!(
        "chaos {label}: placed {} requests + {} sessions; {} events; lost {lost}, duplicated {duplicated}, \
         stuck {} (settled in {:.1} s); accounts on chain {on_chain}",
        requests.len(),
        sessions.len(),
        events.len(),
        stuck.len(),
        waited.elapsed().as_secs_f64()
    );
    assert!(settled, "{label}: the work did not settle within 120 s");
    assert_eq!(lost, 0, "{label}: lost records or events");
    assert_eq!(duplicated, 0, "{label}: duplicated records or events");
    assert!(stuck.is_empty(), "{label}: stuck requests {stuck:?}");
    assert_eq!(
        on_chain,
        requests.len(),
        "{label}: one account per request on chain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_during_ingest_lose_duplicate_and_strand_nothing_sqlite() {
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let env = server_env(&net, &wallet, "chaos");
    let mut placed = Placed::default();
    for _ in 0..kills() {
        let server = start(&db.url, &env).await;
        let before = accounts_created(&server).await;
        placed.burst(&net, BURST, BURST);
        wait_for_progress(&server, before).await;
        kill(server).await;
    }
    let survivor = start(&db.url, &env).await;
    audit(
        &format!("sqlite, {} kills", kills()),
        &net,
        &survivor,
        &placed,
    )
    .await;
    assert_eq!(survivor.terminate().await, Some(0));
}

/// Which of `replicas` leads now, if one does.
async fn leader_of(replicas: &[Option<ServerProcess>; 2]) -> Option<usize> {
    for (i, replica) in replicas.iter().enumerate() {
        if let Some(r) = replica {
            let url = format!("http://{}", r.api);
            let answer = reqwest::Client::new()
                .get(format!("{url}/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if let Ok(answer) = answer {
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                if body["leader"]["is_leader"] == true {
                    return Some(i);
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_of_the_leader_hand_over_and_lose_nothing_postgres() {
    let Some(db) = TestDb::new(Db::Postgres).await else {
        return;
    };
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let names = ["chaos-a", "chaos-b"];
    let env = |i: usize| server_env(&net, &wallet, names[i]);
    let mut replicas = [
        Some(start(&db.url, &env(0)).await),
        Some(start(&db.url, &env(1)).await),
    ];
    let mut placed = Placed::default();
    let mut handovers = Vec::new();
    for _ in 0..kills() {
        eventually(Duration::from_secs(20), "a leader", || async {
            leader_of(&replicas).await.is_some()
        })
        .await;
        let leader = leader_of(&replicas).await.expect("still leading");
        let server = replicas[leader].as_ref().unwrap();
        let before = accounts_created(server).await;
        placed.burst(&net, BURST, BURST);
        wait_for_progress(server, before).await;
        kill(replicas[leader].take().unwrap()).await;
        let killed = Instant::now();
        eventually(
            Duration::from_secs(30),
            "the follower takes over",
            || async { leader_of(&replicas).await.is_some() },
        )
        .await;
        handovers.push(killed.elapsed().as_secs_f64());
        replicas[leader] = Some(start(&db.url, &env(leader)).await);
    }
    let survivor = replicas[0].take().unwrap();
    handovers.sort_by(f64::total_cmp);
    println!(
        "chaos postgres: leader handover after SIGKILL min {:.2} s, median {:.2} s, max {:.2} s",
        handovers[0],
        handovers[handovers.len() / 2],
        handovers[handovers.len() - 1]
    );
    audit(
        &format!("postgres, {} leader kills", kills()),
        &net,
        &survivor,
        &placed,
    )
    .await;
    let other = replicas[1].take().unwrap();
    assert_eq!(other.terminate().await, Some(0));
    assert_eq!(survivor.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resilient_subscriber_cut_again_and_again_misses_and_repeats_nothing_sqlite() {
    let cuts = from_env("CHAOS_CUTS", 10);
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let server = start(&db.url, &server_env(&net, &wallet, "chaos")).await;
    let proxy = Proxy::start(server.grpc).await;
    let subscriber = LifecycleClient::connect(ClientConfig::new(format!("http://{}", proxy.addr)))
        .await
        .unwrap();
    let backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        ..Backoff::default()
    };
    let request = SubscribeRequest {
        from_sequence: 1,
        heartbeat_interval_seconds: 1,
        ..Default::default()
    };
    let mut subscription = subscriber.subscribe_resilient(request, backoff);
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let sink = received.clone();
    let reader = tokio::spawn(async move {
        while let Some(item) = subscription.next().await {
            if let SubscriptionItem::Event(e) = item.expect("the subscription retries by itself") {
                sink.lock().unwrap().push(e.sequence);
            }
        }
    });
    let count = || received.lock().unwrap().len();
    let mut placed = Placed::default();
    for _ in 0..cuts {
        // Cut while events are arriving: after this burst's first ones.
        let before = count();
        placed.burst(&net, REQUESTS_PER_CUT, BURST);
        eventually(Duration::from_secs(20), "events arriving", || async {
            count() > before
        })
        .await;
        proxy.cut();
    }
    audit(&format!("subscriber, {cuts} cuts"), &net, &server, &placed).await;
    let stored: Vec<u64> = all_events(&mut client(&server).await)
        .await
        .iter()
        .map(|e| e.sequence)
        .collect();
    let last = *stored.last().unwrap();
    eventually(
        Duration::from_secs(30),
        "the subscriber caught up",
        || async { received.lock().unwrap().last() >= Some(&last) },
    )
    .await;
    reader.abort();
    let received = received.lock().unwrap().clone();
    let delivered: BTreeSet<u64> = received.iter().copied().collect();
    let missed = stored.iter().filter(|s| !delivered.contains(s)).count();
    let repeated = received.len() - delivered.len();
    println!(
        "chaos subscriber: {cuts} cuts, {} events stored, {} delivered, missed {missed}, repeated {repeated}",
        stored.len(),
        received.len()
    );
    assert_eq!(
        received,
        stored[..received.len()],
        "every event once, in order"
    );
    assert_eq!((missed, repeated), (0, 0));
    assert_eq!(server.terminate().await, Some(0));
}

/// Resident set size of process `pid` in MiB (Linux /proc).
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024
}

/// Lets this process hold the flood's sockets (the soft open-files limit,
/// often 1024, up to the hard one).
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Twenty GET /health calls in a row, each answered 200 within 5 s; their times.
async fn health_latencies(rest: &reqwest::Client, http: &str) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let asked = Instant::now();
        let answer = rest.get(http).timeout(Duration::from_secs(5)).send().await;
        latencies.push(asked.elapsed());
        assert!(
            answer.is_ok_and(|a| a.status().is_success()),
            "/health answered"
        );
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_slow_connections_starves_neither_listener_sqlite() {
    let flood = from_env("CHAOS_FLOOD", 400);
    raise_open_files_limit();
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    // Default limits (1,024 connections a listener, 10 s header timeout).
    let server = ServerProcess::start(&db.url, &[]).await;
    let pid = server.child.id().unwrap();
    let http = format!("http://{}/health", server.api);
    let before = rss_mib(pid);
    let rest = reqwest::Client::new();
    // The same calls before the flood: the machine is shared, so the flood's
    // effect is judged against this run's own unloaded latency.
    let mut unloaded = health_latencies(&rest, &http).await;
    unloaded.sort();
    let mut slow = Vec::with_capacity(flood);
    for i in 0..flood {
        // Half a request head, or half the HTTP/2 preface.
        let (addr, bytes): (_, &[u8]) = if i % 2 == 0 {
            (server.api, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        } else {
            (server.grpc, b"PRI * HTTP/2.0\r\n")
        };
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            let _ = stream.write_all(bytes).await;
            slow.push(stream);
        }
    }
    let mut latencies = health_latencies(&rest, &http).await;
    let mut grpc = client(&server).await;
    let asked = Instant::now();
    grpc.get_stats(GetStatsRequest {}).await.unwrap();
    let grpc_took = asked.elapsed();
    drop(grpc);
    let during = rss_mib(pid);
    let held = slow.len();
    drop(slow);
    let metrics = format!("http://{}/metrics", server.api);
    eventually(
        Duration::from_secs(15),
        "the flood's connections closed",
        || async {
            let Ok(answer) = rest
                .get(&metrics)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            else {
                return false;
            };
            let text = answer.text().await.unwrap_or_default();
            let open: f64 = text
                .lines()
                .filter(|l| l.starts_with("valence_connections_open{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            // The scrape's own connection stays open.
            open <= 1.0
        },
    )
    .await;
    let after = rss_mib(pid);
    latencies.sort();
    let (median, worst) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    println!(
        "chaos flood: {} slow connections held ({flood} attempted); /health median {:.1} ms, max {:.1} ms; \
         gRPC GetStats {:.1} ms; server RSS {before} MB before, {during} MB during, {after} MB after",
        held,
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        grpc_took.as_secs_f64() * 1e3,
    );
    // Every call was answered (within the client's 5 s); typical calls
    // stay near their unloaded latency.
    let unloaded_median = unloaded[unloaded.len() / 2];
    let bound = (unloaded_median * 10).max(Duration::from_millis(100));
    assert!(
        median <= bound,
        "/health median {median:?} under the flood, {unloaded_median:?} before (bound {bound:?}); max {worst:?}"
    );
    assert!(
        grpc_took < Duration::from_secs(5),
        "gRPC took {grpc_took:?} under the flood"
    );
    assert_eq!(server.terminate().await, Some(0));
}
