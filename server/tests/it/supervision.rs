//! Supervision: components made to fail, panic or fall silent are
//! restarted with growing, jittered delays and the matching events, and
//! given up on after the configured attempts; /health answers at once while
//! a check hangs; two server processes on one PostgreSQL hand over
//! leadership when the leader is killed.

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use valence_lifecycle_api::v1::{lifecycle_event::Payload, ComponentState, LifecycleEvent};
use valence_lifecycle_server::{
    store::Store,
    supervisor::{Policy, StatusBoard, Supervisor},
    telemetry::Metrics,
};

use crate::{
    common::{eventually, open_store, test_config, Db, TestDb, TestServer},
    proxy::Proxy,
};

fn policy(max_restarts: u32) -> Policy {
    Policy {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(400),
        max_restarts,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        multiplier: 2.0,
        jitter: 0.1,
    }
}

/// Every event about `component`, oldest first.
async fn component_events(store: &Store, component: &str) -> Vec<LifecycleEvent> {
    store
        .events_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entity_id == component)
        .collect()
}

fn kind(e: &LifecycleEvent) -> &'static str {
    match &e.payload {
        Some(Payload::ComponentStarted(_)) => "started",
        Some(Payload::ComponentError(_)) => "error",
        Some(Payload::ComponentReconnecting(_)) => "restarting",
        Some(Payload::ComponentReconnected(_)) => "restarted",
        Some(Payload::ComponentReconnectFailed(_)) => "gave_up",
        Some(Payload::ComponentHeartbeatTimeout(_)) => "heartbeat_timeout",
        Some(Payload::ComponentStatusChanged(_)) => "status",
        Some(Payload::ComponentStopped(_)) => "stopped",
        _ => "other",
    }
}

#[tokio::test]
async fn a_failing_component_is_restarted_with_growing_jittered_delays_then_given_up() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let store = open_store(&db.url).await;
    let board = StatusBoard::new(store.clone(), Arc::new(Metrics::new()));
    let mut supervisor = Supervisor::new(board.clone(), policy(3));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let runs = starts.clone();
    supervisor
        .start("flaky", move |_ctx| {
            let runs = runs.clone();
            async move {
                let n = {
                    let mut runs = runs.lock().unwrap();
                    runs.push(Instant::now());
                    runs.len()
                };
                anyhow::bail!("boom {n}")
            }
        })
        .await;
    eventually(Duration::from_secs(10), "giving up", || async {
        board
            .snapshot()
            .iter()
            .any(|c| c.name == "flaky" && c.message.starts_with("gave up after 3 restarts"))
    })
    .await;
    // Observation window: no run starts after giving up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        starts.lock().unwrap().len(),
        4,
        "the first run and 3 restarts"
    );
    assert_eq!(board.state("flaky"), ComponentState::Error);

    let events = component_events(&store, "flaky").await;
    let kinds: Vec<&str> = events.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "status",
            "started",
            "error",
            "restarting",
            "restarted",
            "error",
            "restarting",
            "restarted",
            "error",
            "restarting",
            "restarted",
            "error",
            "gave_up"
        ]
    );
    let delays: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::ComponentReconnecting(c)) => Some(c.delay_ms),
            _ => None,
        })
        .collect();
    for (i, delay) in delays.iter().enumerate() {
        let base = 100 << i;
        assert!(
            (base * 9 / 10..=base * 11 / 10).contains(delay),
            "restart {}: {delay} ms, base {base} ms",
            i + 1
        );
    }
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "growing: {delays:?}"
    );
    // The runs really were that far apart.
    let starts = starts.lock().unwrap().clone();
    for (i, pair) in starts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(delays[i]),
            "gap {i}: {gap:?} < {} ms",
            delays[i]
        );
    }
    let Some(Payload::ComponentReconnectFailed(last)) = &events.last().unwrap().payload else {
        panic!("last event")
    };
    assert_eq!(last.attempt, 3);
    assert!(last.message.contains("boom 4"), "{}", last.message);
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_panic_is_contained_and_the_component_restarted() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let store = open_store(&db.url).await;
    let board = StatusBoard::new(store.clone(), Arc::new(Metrics::new()));
    let mut supervisor = Supervisor::new(board.clone(), policy(5));
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    supervisor
        .start("fragile", move |ctx| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first run falls over");
                }
                ctx.heartbeat.beat_while(ctx.cancel.cancelled()).await;
                Ok(())
            }
        })
        .await;
    eventually(Duration::from_secs(5), "restart", || async {
        runs.load(Ordering::SeqCst) == 2 && board.state("fragile") == ComponentState::Running
    })
    .await;
    let events = component_events(&store, "fragile").await;
    let error = events
        .iter()
        .find(|e| kind(e) == "error")
        .expect("an error event");
    let Some(Payload::ComponentError(body)) = &error.payload else {
        panic!()
    };
    assert!(
        body.message.contains("panicked: first run falls over"),
        "{}",
        body.message
    );
    assert!(events.iter().any(|e| kind(e) == "restarted"));
    let status = board
        .snapshot()
        .into_iter()
        .find(|c| c.name == "fragile")
        .unwrap();
    assert_eq!(status.restarts, 1);
    assert!(
        supervisor.shutdown(Duration::from_secs(2)).await,
        "clean stop of the healthy run"
    );
}

#[tokio::test]
async fn a_component_that_stops_beating_is_detected_within_the_timeout_and_restarted() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let store = open_store(&db.url).await;
    let board = StatusBoard::new(store.clone(), Arc::new(Metrics::new()));
    let mut supervisor = Supervisor::new(board.clone(), policy(5));
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let started = Instant::now();
    supervisor
        .start("sleepy", move |ctx| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // Hung: neither beats nor listens to its token.
                    std::future::pending::<()>().await;
                }
                ctx.heartbeat.beat_while(ctx.cancel.cancelled()).await;
                Ok(())
            }
        })
        .await;
    eventually(Duration::from_secs(10), "a second run", || async {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    let detected = started.elapsed();
    // Timeout 400 ms, + checks every 100 ms, + ABORT_GRACE (2 s) for the
    // hung run, + the first restart delay (~100 ms).
    assert!(detected < Duration::from_secs(4), "{detected:?}");
    // The supervisor records "restarted" right after the new run starts,
    // so wait for it rather than read the log once.
    let expected = [
        "status",
        "started",
        "heartbeat_timeout",
        "error",
        "restarting",
        "restarted",
    ];
    eventually(Duration::from_secs(5), "the restart in the log", || async {
        let events = component_events(&store, "sleepy").await;
        events.len() >= expected.len()
    })
    .await;
    let events = component_events(&store, "sleepy").await;
    let kinds: Vec<&str> = events.iter().map(kind).collect();
    assert!(kinds.starts_with(&expected), "{kinds:?}");
    // The restarted run beats, so it stays up well past the timeout (the
    // sleep is the thing under test: time passing without a restart).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(board.state("sleepy"), ComponentState::Running);
    let status = board
        .snapshot()
        .into_iter()
        .find(|c| c.name == "sleepy")
        .unwrap();
    let beat = status.last_heartbeat.expect("last heartbeat shown");
    let age_ms = valence_lifecycle_server::store::now_ms()
        - (beat.seconds * 1000 + beat.nanos as i64 / 1_000_000);
    assert!(age_ms < 400, "recent heartbeat ({age_ms} ms ago)");
    supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_answers_within_a_second_while_the_store_check_hangs() {
    let Some(db) = TestDb::new(Db::Postgres).await else {
        return;
    };
    // The server reaches PostgreSQL through a proxy the test can stall.
    let (head, tail) = db.url.split_once('@').unwrap();
    let (host_port, name) = tail.split_once('/').unwrap();
    let target = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(target).await;
    let url = format!("{head}@{}/{name}", proxy.addr);
    let mut config = test_config(&url);
    config.database.acquire_timeout_secs = 30;
    let server = TestServer::start_with(db, config).await;
    let health = format!("{}/health", server.http());
    // Answering (200) comes first; "healthy" once every component runs.
    server.wait_healthy(Duration::from_secs(10)).await;

    proxy.stall(true);
    eventually(
        Duration::from_secs(9),
        "the hung check reported",
        || async {
            let asked = Instant::now();
            let response = reqwest::Client::new()
                .get(&health)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .expect("/health answers while the store hangs");
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            let body: serde_json::Value = response.json().await.unwrap();
            let store = body["components"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "store")
                .unwrap()
                .clone();
            if store["state"] == "degraded" {
                assert!(
                    store["message"].as_str().unwrap().contains("timed out"),
                    "{store}"
                );
                assert_eq!(body["status"], "degraded", "{body}");
                return true;
            }
            false
        },
    )
    .await;
    proxy.stall(false);
    server.wait_healthy(Duration::from_secs(15)).await;
    assert!(server.stop().await);
}

/// GET /health of a server process as JSON.
#[cfg(feature = "embedded-chain")]
async fn health(api: std::net::SocketAddr) -> serde_json::Value {
    crate::common::health(&format!("http://{api}")).await
}

#[cfg(feature = "embedded-chain")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_hand_over_leadership_when_the_leader_is_killed() {
    use solana_sdk::pubkey::Pubkey;
    use tokio_stream::StreamExt as _;
    use valence_lifecycle_api::v1::{
        event_stream_service_client::EventStreamServiceClient,
        lifecycle_service_client::LifecycleServiceClient, subscribe_response::Message,
        AccountRequestStatus, EventType, GetStatsRequest, StartPosition, SubscribeRequest,
    };
    use valence_lifecycle_server::builder::plan::Plan;

    use crate::{
        builder::{chain_account, events_of, expected_hash, place_request, wait_status, Wallet},
        chain::Net,
        common::caps,
        process::ServerProcess,
    };

    let Some(db) = TestDb::new(Db::Postgres).await else {
        return;
    };
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let program = net.program.to_string();
    let wallet_path = wallet.path.display().to_string();
    let env = |replica: &'static str| {
        vec![
            ("RPC_URL", net.surfnet.rpc_url().to_string()),
            ("WS_URL", net.surfnet.ws_url().to_string()),
            ("SHARD_PROGRAM_ID", program.clone()),
            ("WALLET_PATH", wallet_path.clone()),
            ("POLL_INTERVAL", "1".to_string()),
            ("REPLICA_ID", replica.to_string()),
            (
                "VALENCE_LIFECYCLE_LEADER__RETRY_INTERVAL_MS",
                "500".to_string(),
            ),
        ]
    };
    let start = |replica: &'static str| {
        let vars = env(replica);
        let url = db.url.clone();
        async move {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ServerProcess::start(&url, &vars).await
        }
    };

    let mut a = start("replica-a").await;
    eventually(Duration::from_secs(10), "replica-a leads", || async {
        health(a.api).await["leader"]["is_leader"] == true
    })
    .await;
    let b = start("replica-b").await;
    let b_health = health(b.api).await;
    assert_eq!(b_health["leader"]["is_leader"], false);
    assert_eq!(b_health["leader"]["leader_replica_id"], "replica-a");
    let names: Vec<String> = b_health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !names.contains(&"builder".to_string()),
        "a follower runs no builder: {names:?}"
    );

    // A subscriber on the replica that survives, from the start of the log.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stream = EventStreamServiceClient::new(channel.clone())
        .subscribe(SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let received = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Some(Message::Event(e)) = message.message {
                sink.lock().unwrap().push(e.sequence);
            }
        }
    });

    let capabilities = caps(&["transfer"]);
    let hash = expected_hash(&capabilities);
    let mut requests: Vec<Pubkey> = (0..3)
        .map(|_| place_request(&net, &net.program, &capabilities, hash))
        .collect();
    let client = LifecycleServiceClient::new(channel);
    for id in &requests {
        wait_status(
            &client,
            id,
            AccountRequestStatus::Initialized,
            Duration::from_secs(30),
        )
        .await;
    }

    // Kill the leader, and place more requests during the handover.
    a.child.start_kill().unwrap();
    let killed = Instant::now();
    a.child.wait().await.unwrap();
    requests.extend((0..3).map(|_| place_request(&net, &net.program, &capabilities, hash)));
    eventually(Duration::from_secs(15), "replica-b leads", || async {
        health(b.api).await["leader"]["is_leader"] == true
    })
    .await;
    let handover = killed.elapsed();
    assert!(
        handover < Duration::from_secs(15),
        "handover took {handover:?}"
    );
    eprintln!("leadership moved to replica-b {handover:?} after the leader was killed");

    let mut client = client;
    for id in &requests {
        wait_status(
            &client,
            id,
            AccountRequestStatus::Initialized,
            Duration::from_secs(60),
        )
        .await;
    }
    for id in &requests {
        let plan = Plan::new(*id, &capabilities, net.program, wallet.pubkey());
        assert!(chain_account(&net, &plan.address).is_some());
        let initialized = events_of(
            &mut client,
            &plan.address.to_string(),
            EventType::AccountInitialized,
        )
        .await;
        assert_eq!(
            initialized.len(),
            1,
            "account {} initialized once",
            plan.address
        );
    }
    let stats = client
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.accounts, 6);
    assert_eq!(stats.accounts_created, 6);
    let leader = stats.leader.unwrap();
    assert!(leader.is_leader);
    assert_eq!(leader.leader_replica_id, "replica-b");
    let changes = events_of(&mut client, "replica-b", EventType::LeadershipChanged).await;
    assert!(!changes.is_empty(), "the handover is in the log");

    // The subscriber on replica-b saw every event, in order, without a gap.
    let head = stats.head_sequence;
    eventually(
        Duration::from_secs(15),
        "the subscriber reached the head",
        || {
            let received = received.clone();
            async move { received.lock().unwrap().last().copied() >= Some(head) }
        },
    )
    .await;
    let seen = received.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap or duplicate in {} events",
        seen.len()
    );
    assert_eq!(b.terminate().await, Some(0));
}

#[tokio::test]
async fn start_up_fails_fast_naming_an_unreachable_store() {
    let port = crate::process::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    let started = Instant::now();
    let (code, _, stderr) = crate::cli::run(
        crate::cli::SERVER,
        &[],
        &[
            ("DATABASE_URL", url.as_str()),
            ("GRPC_PORT", "0"),
            ("API_PORT", "0"),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the store is required at start"),
        "{stderr}"
    );
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
