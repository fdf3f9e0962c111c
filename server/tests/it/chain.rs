//! The chain adapter and the monitor against a real in-process Surfnet with
//! the stand-in shard program deployed: records placed on chain (cheatcode)
//! and written by real transactions reach the store, the progressions and
//! the event stream; faults injected by TCP proxies are survived.

use std::time::Duration;

use solana_sdk::{
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
    signature::{Keypair, Signer},
    transaction::Transaction,
};
use surfpool_sdk::{cheatcodes::builders::DeployProgram, Surfnet};
use tonic::Code;
use valence_lifecycle_api::v1::{
    subscribe_response::Message, EventType, GetProgressionRequest, GetSessionRequest, LinearState,
    ListEventsRequest, ListSessionsRequest, SubscribeRequest,
};
use valence_lifecycle_server::{
    chain::{
        codec::{self, AccountRequestRecord, Record, SessionConsumptionRecord, SessionRecord},
        dev as records,
    },
    config::Config,
};

use crate::{
    common::{
        backend_tests, eventually, health, metric, raw_sql, test_config, Db, TestDb, TestServer,
    },
    proxy::Proxy,
};

pub(crate) const STAND_IN: &[u8] = include_bytes!("../../shard-program/shard_program.so");

/// A Surfnet with the stand-in deployed.
pub(crate) struct Net {
    pub(crate) surfnet: Surfnet,
    pub(crate) program: Pubkey,
    /// Every deployed copy of the stand-in (one per shard); `programs[0]`
    /// is `program`.
    pub(crate) programs: Vec<Pubkey>,
}

impl Net {
    pub(crate) async fn start() -> Net {
        Self::start_with_programs(1).await
    }

    /// A Surfnet with the stand-in deployed `n` times, at `n` program ids:
    /// the shard programs of a multi-shard deployment.
    pub(crate) async fn start_with_programs(n: usize) -> Net {
        assert!(n >= 1, "at least one program");
        let surfnet = Surfnet::start().await.unwrap();
        let programs: Vec<Pubkey> = (0..n).map(|_| Pubkey::new_unique()).collect();
        tokio::task::block_in_place(|| {
            for program in &programs {
                surfnet
                    .cheatcodes()
                    .deploy(DeployProgram::new(*program).so_bytes(STAND_IN.to_vec()))
                    .unwrap();
            }
        });
        Net {
            surfnet,
            program: programs[0],
            programs,
        }
    }

    /// Places `data` at `key`, owned by the program (the cheatcode).
    pub(crate) fn place(&self, key: &Pubkey, data: &[u8]) {
        self.place_on(&self.program, key, data);
    }

    /// Places `data` at `key`, owned by `program` (one of `programs`).
    pub(crate) fn place_on(&self, program: &Pubkey, key: &Pubkey, data: &[u8]) {
        tokio::task::block_in_place(|| {
            self.surfnet
                .cheatcodes()
                .set_account(key, 10_000_000, data, program)
                .unwrap();
        });
    }

    /// Surfnet's JSON-RPC address (for a proxy in front of it).
    pub(crate) fn rpc_addr(&self) -> std::net::SocketAddr {
        self.surfnet
            .rpc_url()
            .trim_start_matches("http://")
            .parse()
            .unwrap()
    }

    /// Surfnet's websocket address.
    fn ws_addr(&self) -> std::net::SocketAddr {
        self.surfnet
            .ws_url()
            .trim_start_matches("ws://")
            .parse()
            .unwrap()
    }

    pub(crate) fn config(&self, db: &TestDb) -> Config {
        let mut c = test_config(&db.url);
        c.rpc.url = self.surfnet.rpc_url().to_string();
        c.rpc.ws_url = self.surfnet.ws_url().to_string();
        c.lifecycle.shard_program_id = self.program.to_string();
        c.lifecycle.poll_interval_secs = 1;
        // Tests that count passes want them every second even while the
        // websockets are healthy (the default waits a minute then).
        c.lifecycle.live_poll_interval_secs = 1;
        c.retry.max_retries = 2;
        c
    }
}

fn key_bytes(k: &Pubkey) -> [u8; 32] {
    k.to_bytes()
}

fn request(id: &Pubkey) -> Vec<u8> {
    Record::AccountRequest(AccountRequestRecord {
        id: key_bytes(id),
        owner: [7; 32],
        capabilities: vec!["transfer".into()],
        init_state_hash: [1; 32],
        created_at: 1_700_000_000,
        account: [0; 32],
    })
    .encode()
}

fn session(id: &Pubkey, accounts: &[Pubkey], consumed: bool) -> Vec<u8> {
    Record::Session(SessionRecord {
        id: key_bytes(id),
        owner: [7; 32],
        accounts: accounts.iter().map(key_bytes).collect(),
        namespace: "ns".into(),
        is_consumed: consumed,
        nonce: 1,
        created_at: 1_700_000_000,
        metadata: vec![1, 2],
    })
    .encode()
}

/// Account updates the monitor's reconciliation passes read.
const RECONCILED: &str = "chain_updates_received_total{source=\"reconciliation\"}";

async fn has_progression(server: &TestServer, id: &Pubkey) -> bool {
    let mut client = server.lifecycle().await;
    client
        .get_progression(GetProgressionRequest {
            entity_id: id.to_string(),
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placed_records_reach_store_progression_and_stream_within_two_seconds() {
    let net = Net::start().await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = net.config(&db);
    let server = TestServer::start_with(db, config).await;
    let mut events = server.events().await;
    let mut stream = events
        .subscribe(SubscribeRequest {
            event_types: vec![EventType::SessionCreated as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Let the websocket subscriptions come up, then place records.
    server.wait_healthy(Duration::from_secs(10)).await;
    let (req, sess, member) = (
        Pubkey::new_unique(),
        Pubkey::new_unique(),
        Pubkey::new_unique(),
    );
    net.place(&req, &request(&req));
    net.place(&sess, &session(&sess, &[member], false));
    let took = eventually(Duration::from_secs(2), "the request progression", || {
        has_progression(&server, &req)
    })
    .await;
    eprintln!("request seen after {took:?}");
    let event = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(Message::Event(e)) = stream.message().await.unwrap().unwrap().message {
                return e;
            }
        }
    })
    .await
    .expect("SessionCreated on the stream within 2 s");
    assert_eq!(event.entity_id, sess.to_string());
    assert!(event.slot.is_some(), "chain events carry the slot");
    let p = server
        .lifecycle()
        .await
        .get_progression(GetProgressionRequest {
            entity_id: req.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .progression
        .unwrap();
    assert_eq!(p.current_state, LinearState::AccountRequest as i32);
    assert!(p.history[0].slot.is_some());
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumption_moves_the_session_to_consumed_linked_to_its_successors() {
    let net = Net::start().await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = net.config(&db);
    let server = TestServer::start_with(db, config).await;
    let (s1, s2, record) = (
        Pubkey::new_unique(),
        Pubkey::new_unique(),
        Pubkey::new_unique(),
    );
    net.place(&s1, &session(&s1, &[], false));
    eventually(Duration::from_secs(3), "session 1", || {
        has_progression(&server, &s1)
    })
    .await;
    net.place(&s2, &session(&s2, &[], false));
    net.place(&s1, &session(&s1, &[], true));
    let consumption = Record::SessionConsumption(SessionConsumptionRecord {
        consumed_session: key_bytes(&s1),
        created_sessions: vec![key_bytes(&s2)],
        transaction_signature: [0; 64],
        consumed_at: 1_700_000_100,
    });
    net.place(&record, &consumption.encode());
    let mut lifecycle = server.lifecycle().await;
    eventually(Duration::from_secs(3), "consumption", || {
        let mut lifecycle = lifecycle.clone();
        async move {
            let s = lifecycle
                .get_session(GetSessionRequest { id: s1.to_string() })
                .await;
            s.is_ok_and(|s| {
                s.into_inner()
                    .session
                    .is_some_and(|s| !s.created_sessions.is_empty())
            })
        }
    })
    .await;
    let s = lifecycle
        .get_session(GetSessionRequest { id: s1.to_string() })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert!(s.is_consumed);
    assert_eq!(s.state, LinearState::ConsumedSession as i32);
    assert_eq!(s.created_sessions, vec![s2.to_string()]);
    assert!(
        lifecycle
            .get_session(GetSessionRequest { id: s2.to_string() })
            .await
            .is_ok(),
        "the new session exists"
    );
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_re_emits_nothing_and_garbage_is_skipped_and_counted() {
    let net = Net::start().await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = net.config(&db);
    let server = TestServer::start_with(db, config.clone()).await;
    let (req, garbage, broken) = (
        Pubkey::new_unique(),
        Pubkey::new_unique(),
        Pubkey::new_unique(),
    );
    net.place(&req, &request(&req));
    net.place(&garbage, &[0xee; 48]);
    let mut truncated = codec::record_discriminator("Session").to_vec();
    truncated.extend([3; 10]);
    net.place(&broken, &truncated);
    eventually(Duration::from_secs(3), "the request", || {
        has_progression(&server, &req)
    })
    .await;
    eventually(
        Duration::from_secs(3),
        "decode failures counted",
        || async { metric(&server, "chain_decode_failures_total").await >= 1.0 },
    )
    .await;
    let chain_events = |server: &TestServer| {
        let server_grpc = server.grpc;
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{server_grpc}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client =
                valence_lifecycle_api::v1::lifecycle_service_client::LifecycleServiceClient::new(
                    channel,
                );
            let events = client
                .list_events(ListEventsRequest {
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .events;
            events.into_iter().filter(|e| e.slot.is_some()).count()
        }
    };
    let before = chain_events(&server).await;
    assert!(before >= 2, "request events recorded");
    let (clean, db) = server.stop_and_keep().await;
    assert!(clean);

    // Same database, same chain: a new server reconciles and finds nothing new.
    let server = TestServer::start_with(db, config).await;
    // Two whole reconciliation passes (with their history backfill) over
    // the two records: a third has begun once 6 updates were counted.
    eventually(
        Duration::from_secs(10),
        "two reconciliation passes",
        || async { metric(&server, RECONCILED).await >= 6.0 },
    )
    .await;
    assert_eq!(
        chain_events(&server).await,
        before,
        "restart re-emitted chain events"
    );
    let ok = reqwest::get(format!("{}/health", server.http()))
        .await
        .unwrap();
    assert_eq!(
        ok.status(),
        reqwest::StatusCode::OK,
        "garbage does not make the server unhealthy"
    );
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_between_server_and_chain_degrade_health_then_heal_and_lose_nothing() {
    let net = Net::start().await;
    let rpc_addr = net.rpc_addr();
    let ws_addr = net.ws_addr();
    let (rpc_proxy, ws_proxy) = (Proxy::start(rpc_addr).await, Proxy::start(ws_addr).await);
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = net.config(&db);
    config.rpc.url = format!("http://{}", rpc_proxy.addr);
    config.rpc.ws_url = format!("ws://{}", ws_proxy.addr);
    config.rpc.timeout_secs = 2;
    let server = TestServer::start_with(db, config).await;
    let health = |server: &TestServer| {
        let http = server.http();
        async move { health(&http).await }
    };
    // Healthy with both websockets up.
    server.wait_healthy(Duration::from_secs(5)).await;

    // Websockets cut and refused: live updates stop; reconciliation still
    // finds what was placed, within one POLL_INTERVAL (1 s) plus margin.
    ws_proxy.refuse(true);
    ws_proxy.cut();
    eventually(Duration::from_secs(5), "degraded", || async {
        health(&server).await["status"] == "degraded"
    })
    .await;
    let during_ws_outage = Pubkey::new_unique();
    net.place(&during_ws_outage, &request(&during_ws_outage));
    eventually(
        Duration::from_millis(2500),
        "reconciliation without websockets",
        || has_progression(&server, &during_ws_outage),
    )
    .await;

    // RPC refused as well: nothing can be read; the server keeps serving.
    rpc_proxy.refuse(true);
    rpc_proxy.cut();
    let during_rpc_outage = Pubkey::new_unique();
    net.place(&during_rpc_outage, &request(&during_rpc_outage));
    eventually(Duration::from_secs(10), "chain-rpc degraded", || async {
        let body = health(&server).await;
        let rpc = body["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "chain-rpc")
            .unwrap()
            .clone();
        rpc["state"] == "degraded"
    })
    .await;
    assert!(!has_progression(&server, &during_rpc_outage).await);

    // Everything back: health recovers and what was placed meanwhile arrives.
    rpc_proxy.refuse(false);
    ws_proxy.refuse(false);
    eventually(
        Duration::from_secs(10),
        "the record placed during the outage",
        || has_progression(&server, &during_rpc_outage),
    )
    .await;
    server.wait_healthy(Duration::from_secs(15)).await;

    // A stalled RPC (connections open, nothing answers): calls time out
    // (rpc.timeout_secs = 2), health degrades; once it flows again, healed.
    rpc_proxy.stall(true);
    let during_stall = Pubkey::new_unique();
    net.place(&during_stall, &request(&during_stall));
    eventually(
        Duration::from_secs(20),
        "degraded by a stalled RPC",
        || async {
            let body = health(&server).await;
            body["components"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "chain-rpc" && c["state"] == "degraded")
        },
    )
    .await;
    rpc_proxy.stall(false);
    eventually(
        Duration::from_secs(20),
        "the record placed during the stall",
        || has_progression(&server, &during_stall),
    )
    .await;
    server.wait_healthy(Duration::from_secs(20)).await;
    // The websockets' reconnects are in the log, as the supervisor's are.
    let mut client = server.lifecycle().await;
    for (event_type, what) in [
        (EventType::ComponentReconnecting, "reconnecting"),
        (EventType::ComponentReconnected, "reconnected"),
    ] {
        let events = client
            .list_events(ListEventsRequest {
                limit: 1000,
                event_type: event_type as i32,
                entity_id: "chain-accounts-ws".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        assert!(!events.is_empty(), "chain-accounts-ws {what} events");
    }
    assert!(server.stop().await);
}

/// A record-target account created by a real system-program transaction.
pub(crate) fn create_owned(net: &Net, space: u64) -> (Keypair, Instruction) {
    let account = Keypair::new();
    let rpc = net.surfnet.rpc_client();
    let lamports = rpc
        .get_minimum_balance_for_rent_exemption(space as usize)
        .unwrap();
    let ix = solana_system_interface::instruction::create_account(
        &net.surfnet.payer().pubkey(),
        &account.pubkey(),
        lamports,
        space,
        &net.program,
    );
    (account, ix)
}

pub(crate) fn send(net: &Net, instructions: &[Instruction], signers: &[&Keypair]) -> String {
    try_send(net, instructions, signers).unwrap()
}

/// Sends a transaction; the error (with the program's logs) as text.
pub(crate) fn try_send(
    net: &Net,
    instructions: &[Instruction],
    signers: &[&Keypair],
) -> Result<String, String> {
    let rpc = net.surfnet.rpc_client();
    let payer = net.surfnet.payer();
    let mut all = vec![payer];
    all.extend_from_slice(signers);
    let tx = Transaction::new_signed_with_payer(
        instructions,
        Some(&payer.pubkey()),
        &all,
        rpc.get_latest_blockhash().unwrap(),
    );
    rpc.send_and_confirm_transaction(&tx)
        .map(|signature| signature.to_string())
        .map_err(|e| format!("{e:?}"))
}

/// `initialize_account` of `request` into the fresh `account`.
fn initialize_account(net: &Net, request: &Pubkey, account: &Pubkey) -> Instruction {
    #[derive(borsh::BorshSerialize)]
    struct InitArgs {
        request_id: [u8; 32],
        init_state_data: Vec<u8>,
    }
    let args = InitArgs {
        request_id: request.to_bytes(),
        init_state_data: b"state".to_vec(),
    };
    Instruction {
        program_id: net.program,
        accounts: vec![
            AccountMeta::new(*account, false),
            AccountMeta::new(*request, false),
        ],
        data: codec::instruction_data("initialize_account", &args),
    }
}

/// The program, not a server's wallet or database, decides that a request
/// is done: a second initialize_account of one request fails with
/// RequestAlreadyInitialized, creates nothing, and the request record
/// names the first account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_initializes_a_request_once_and_the_request_names_its_account() {
    let net = Net::start().await;
    let (request_kp, _) = request_account(&net, vec!["transfer".into()]);
    let request = request_kp.pubkey();
    let (first, create_first) = create_owned(&net, 256);
    let init_first = initialize_account(&net, &request, &first.pubkey());
    tokio::task::block_in_place(|| send(&net, &[create_first, init_first], &[&first]));

    let (second, create_second) = create_owned(&net, 256);
    let init_second = initialize_account(&net, &request, &second.pubkey());
    let refused =
        tokio::task::block_in_place(|| try_send(&net, &[create_second, init_second], &[&second]))
            .expect_err("a second initialization is refused");
    assert!(
        refused.contains("RequestAlreadyInitialized (6020)"),
        "{refused}"
    );
    let rpc = net.surfnet.rpc_client();
    assert!(
        tokio::task::block_in_place(|| rpc.get_account(&second.pubkey())).is_err(),
        "the refused transaction created nothing"
    );
    let data = tokio::task::block_in_place(|| rpc.get_account(&request))
        .unwrap()
        .data;
    let Ok(Record::AccountRequest(record)) = Record::decode(&data) else {
        panic!("the request record still decodes")
    };
    assert_eq!(
        record.initialized_account(),
        Some(first.pubkey().to_bytes())
    );
}

/// Sends a real request_account transaction; returns the request record's
/// keypair and the transaction's signature.
pub(crate) fn request_account(net: &Net, capabilities: Vec<String>) -> (Keypair, String) {
    #[derive(borsh::BorshSerialize)]
    struct RequestArgs {
        owner: [u8; 32],
        capabilities: Vec<String>,
        init_state_hash: [u8; 32],
    }
    let (request_kp, create_request) = create_owned(net, 256);
    let args = RequestArgs {
        owner: [7; 32],
        capabilities,
        init_state_hash: [0; 32],
    };
    let ix = Instruction {
        program_id: net.program,
        accounts: vec![AccountMeta::new(request_kp.pubkey(), false)],
        data: codec::instruction_data("request_account", &args),
    };
    let signature =
        tokio::task::block_in_place(|| send(net, &[create_request, ix], &[&request_kp]));
    (request_kp, signature)
}

/// How many PDAComputed events the server recorded for `signature`.
async fn pda_computed_count(server: &TestServer, signature: &str) -> usize {
    let request = ListEventsRequest {
        event_type: EventType::PdaComputed as i32,
        ..Default::default()
    };
    let events = server
        .lifecycle()
        .await
        .list_events(request)
        .await
        .unwrap()
        .into_inner()
        .events;
    events.iter().filter(|e| e.signature == signature).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_transactions_emit_events_the_monitor_records_with_signatures() {
    let net = Net::start().await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = net.config(&db);
    let server = TestServer::start_with(db, config).await;
    server.wait_healthy(Duration::from_secs(10)).await;

    let (request_kp, request_signature) = request_account(&net, vec!["transfer".into()]);

    let (account_kp, create_account) = create_owned(&net, 256);
    let ix = initialize_account(&net, &request_kp.pubkey(), &account_kp.pubkey());
    let init_signature =
        tokio::task::block_in_place(|| send(&net, &[create_account, ix], &[&account_kp]));

    let mut lifecycle = server.lifecycle().await;
    eventually(
        Duration::from_secs(5),
        "PDAComputed from the logs",
        || async { pda_computed_count(&server, &request_signature).await == 1 },
    )
    .await;
    let account = account_kp.pubkey().to_string();
    eventually(
        Duration::from_secs(5),
        "the account linked to its request",
        || {
            let mut lifecycle = lifecycle.clone();
            let account = account.clone();
            async move {
                let p = lifecycle
                    .get_progression(GetProgressionRequest { entity_id: account })
                    .await;
                p.is_ok_and(|p| {
                    p.into_inner()
                        .progression
                        .is_some_and(|p| p.history.len() >= 2)
                })
            }
        },
    )
    .await;
    let p = lifecycle
        .get_progression(GetProgressionRequest {
            entity_id: account.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .progression
        .unwrap();
    let states: Vec<i32> = p.history.iter().map(|t| t.to_state).collect();
    assert_eq!(
        states,
        vec![
            LinearState::AccountRequest as i32,
            LinearState::Account as i32
        ]
    );
    assert_eq!(
        p.history[1].signature, init_signature,
        "the transition names its transaction"
    );
    let err = lifecycle
        .get_progression(GetProgressionRequest {
            entity_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_rpc_configured_the_server_runs_an_embedded_chain_that_dev_commands_feed() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let server = crate::process::ServerProcess::start(
        &db.url,
        &[
            ("VALENCE_LIFECYCLE_RPC__EMBEDDED", "true"),
            ("POLL_INTERVAL", "1"),
        ],
    )
    .await;
    let api = format!("http://{}", server.api);
    let stats: serde_json::Value = reqwest::get(format!("{api}/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["chain"]["embedded"], true, "{stats}");
    assert!(
        stats["chain"]["rpc_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1"),
        "{stats}"
    );
    assert!(!stats["chain"]["shard_program_id"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(
        !stats["chain"]["wallet"].as_str().unwrap().is_empty(),
        "a funded wallet is generated"
    );

    let dev = |args: &'static [&'static str], extra: Option<String>| {
        let port = server.grpc.port().to_string();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_valence-lifecycle"));
            command
                .args(args)
                .env("GRPC_PORT", port)
                .env("RUST_LOG", "warn");
            if let Some(extra) = extra {
                command.arg(extra);
            }
            let out = command.output().await.unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
    };
    let key = dev(&["dev", "request-account", "--capability", "mint"], None).await;
    let other = dev(&["dev", "request-account"], None).await;
    assert_ne!(key, other, "each dev command places a new address");
    let session = dev(
        &["dev", "create-session", "--namespace", "demo", "--account"],
        Some(key.clone()),
    )
    .await;
    for id in [&key, &session] {
        eventually(
            Duration::from_secs(5),
            "the placed record in the store",
            || {
                let url = format!("{api}/progressions/{id}");
                async move { reqwest::get(url).await.unwrap().status().is_success() }
            },
        )
        .await;
    }
    let body: serde_json::Value = reqwest::get(format!("{api}/sessions/{session}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["session"]["accounts"][0], key.as_str(), "{body}");
    assert_eq!(body["session"]["namespace"], "demo");

    // The embedded network's Clock follows wall time (clock-driven slots):
    // an account initialized later says so in created_at.
    let client =
        valence_lifecycle_api::v1::lifecycle_service_client::LifecycleServiceClient::connect(
            format!("http://{}", server.grpc),
        )
        .await
        .unwrap();
    let initialized = |request: String| {
        let client = client.clone();
        async move {
            let id: Pubkey = request.parse().unwrap();
            let r = crate::builder::wait_status(
                &client,
                &id,
                valence_lifecycle_api::v1::AccountRequestStatus::Initialized,
                Duration::from_secs(30),
            )
            .await;
            let account = client
                .clone()
                .get_account(valence_lifecycle_api::v1::GetAccountRequest {
                    id: r.account_id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .account
                .unwrap();
            account.created_at.unwrap().seconds
        }
    };
    let first_at = initialized(key.clone()).await;
    let rpc = solana_client::nonblocking::rpc_client::RpcClient::new(
        stats["chain"]["rpc_url"].as_str().unwrap().to_string(),
    );
    eventually(
        Duration::from_secs(10),
        "the chain's Clock past the first account's second",
        || async {
            // Clock sysvar: slot, epoch_start_timestamp, epoch, leader_schedule_epoch, unix_timestamp.
            let clock = rpc
                .get_account(&solana_sdk::sysvar::clock::id())
                .await
                .unwrap();
            i64::from_le_bytes(clock.data[32..40].try_into().unwrap()) > first_at
        },
    )
    .await;
    let later = dev(&["dev", "request-account"], None).await;
    let later_at = initialized(later).await;
    assert!(
        later_at > first_at,
        "created_at {later_at} after {first_at}"
    );
    // Seed 001's session factory, played with real transactions.
    let played = dev(&["dev", "session-factory"], None).await;
    let lines: Vec<(&str, &str)> = played.lines().filter_map(|l| l.split_once("  ")).collect();
    assert_eq!(lines.len(), 5, "{played}");
    let reset = lines
        .iter()
        .find(|(_, what)| *what == "reset while queued")
        .unwrap()
        .0;
    let by_hand = lines
        .iter()
        .find(|(_, what)| *what == "initialized by hand")
        .unwrap()
        .0;
    for (id, state) in [(reset, "RESET_SESSION"), (by_hand, "LINEAR_STATE_SESSION")] {
        eventually(
            Duration::from_secs(10),
            &format!("{id} {state} over REST"),
            || {
                let url = format!("{api}/progressions/{id}");
                async move {
                    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
                    body.to_uppercase().contains(state)
                }
            },
        )
        .await;
    }
    // lifecyclectl shows where the embedded network is.
    let ctl = std::path::Path::new(env!("CARGO_BIN_EXE_valence-lifecycle"))
        .with_file_name("lifecyclectl");
    let out = tokio::process::Command::new(&ctl)
        .args(["progression", reset])
        .env("VALENCE_ENDPOINT", format!("http://{}", server.grpc))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("reset"),
        "lifecyclectl progression shows the reset: {text}"
    );
    let out = tokio::process::Command::new(ctl)
        .arg("stats")
        .env("VALENCE_ENDPOINT", format!("http://{}", server.grpc))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("embedded Surfnet"), "{text}");
    assert!(
        text.contains(stats["chain"]["rpc_url"].as_str().unwrap()),
        "{text}"
    );
    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wallet_balance_is_watched_and_a_low_one_degrades_health() {
    let net = Net::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = Keypair::new();
    let path = dir.path().join("service-keypair.json");
    std::fs::write(
        &path,
        serde_json::to_string(&wallet.to_bytes().to_vec()).unwrap(),
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        net.surfnet
            .cheatcodes()
            .fund_sol(&wallet.pubkey(), 5_000_000)
            .unwrap()
    });
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = net.config(&db);
    config.service.keypair_path = path.display().to_string();
    config.service.min_wallet_balance_lamports = 1_000_000_000;
    let server = TestServer::start_with(db, config).await;
    eventually(
        Duration::from_secs(5),
        "the balance as a metric",
        || async { metric(&server, "wallet_balance_lamports").await == 5_000_000.0 },
    )
    .await;
    let health = health(&server.http()).await;
    let wallet_status = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "chain-wallet")
        .unwrap()
        .clone();
    assert_eq!(wallet_status["state"], "degraded", "{health}");
    assert!(
        wallet_status["message"].as_str().unwrap().contains("below"),
        "{health}"
    );
    assert_eq!(health["status"], "degraded");
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", server.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["chain"]["wallet"], wallet.pubkey().to_string());
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_a_dropped_websocket_missed_are_backfilled_from_transaction_history() {
    let net = Net::start().await;
    let ws_addr = net.ws_addr();
    let ws_proxy = Proxy::start(ws_addr).await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = net.config(&db);
    config.rpc.ws_url = format!("ws://{}", ws_proxy.addr);
    let server = TestServer::start_with(db, config).await;
    ws_proxy.refuse(true);
    ws_proxy.cut();

    let (_, signature) = request_account(&net, vec![]);
    eventually(
        Duration::from_secs(5),
        "PDAComputed recorded without websockets",
        || async { pda_computed_count(&server, &signature).await == 1 },
    )
    .await;
    // Later passes and the websocket coming back add nothing twice: the
    // websocket is back (healthy) and two more whole reconciliation passes
    // (one record each, with their backfill) ran.
    let passes = metric(&server, RECONCILED).await;
    ws_proxy.refuse(false);
    server.wait_healthy(Duration::from_secs(15)).await;
    eventually(
        Duration::from_secs(10),
        "two more reconciliation passes",
        || async { metric(&server, RECONCILED).await >= passes + 3.0 },
    )
    .await;
    assert_eq!(pda_computed_count(&server, &signature).await, 1);
    assert!(server.stop().await);
}

/// The monitor's entry in /health: (state, message).
async fn monitor_health(server: &TestServer) -> (String, String) {
    let body = health(&server.http()).await;
    let monitor = body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "monitor")
        .unwrap()
        .clone();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (text(&monitor["state"]), text(&monitor["message"]))
}

/// SQL that makes the database refuse sessions in namespace "poison" (as
/// a constraint or a full disk would refuse one record), and undoes it.
fn poison_sql(db: Db) -> (Vec<&'static str>, &'static str) {
    match db {
        Db::Sqlite => (
            vec!["CREATE TRIGGER refuse_poison BEFORE INSERT ON sessions WHEN NEW.namespace = 'poison' \
                  BEGIN SELECT RAISE(ABORT, 'poison refused'); END"],
            "DROP TRIGGER refuse_poison",
        ),
        Db::Postgres => (
            vec![
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.namespace = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$",
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            ],
            "DROP TRIGGER refuse_poison ON sessions",
        ),
    }
}

backend_tests! {
    // What the program accepts is stored: a NUL in a namespace becomes
    // U+FFFD (PostgreSQL text cannot hold NUL; both backends alike) and a
    // nonce from 2^63 up reads back whole. A record the database refuses
    // leaves the monitor Degraded in /health, naming the record and the
    // cause, until a pass stores it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hostile_chain_data_is_stored_and_a_refused_record_shows_in_health(db: Db) {
        let net = Net::start().await;
        let Some(test_db) = TestDb::new(db).await else { return };
        let url = test_db.url.clone();
        let config = net.config(&test_db);
        let server = TestServer::start_with(test_db, config).await;
        server.wait_healthy(Duration::from_secs(10)).await;
        let owner = Pubkey::new_unique();
        let odd = Pubkey::new_unique();
        net.place(&odd, &records::session(odd, owner, &[], "a\0b".into(), u64::MAX).encode());
        eventually(Duration::from_secs(10), "the session with a NUL", || has_progression(&server, &odd)).await;
        let mut lifecycle = server.lifecycle().await;
        let stored = lifecycle
            .get_session(GetSessionRequest { id: odd.to_string() })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        assert_eq!((stored.namespace.as_str(), stored.nonce), ("a\u{FFFD}b", u64::MAX), "{db:?}");
        let listed = lifecycle
            .list_sessions(ListSessionsRequest {
                namespace: "a\u{FFFD}b".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.sessions.len(), 1, "{db:?}");
        assert!(metric(&server, "chain_strings_replaced_total").await >= 1.0);
        assert_eq!(monitor_health(&server).await.0, "running", "{db:?}");

        let (refuse, allow) = poison_sql(db);
        for sql in refuse {
            raw_sql(&url, sql).await;
        }
        let poison = Pubkey::new_unique();
        net.place(&poison, &records::session(poison, owner, &[], "poison".into(), 1).encode());
        eventually(Duration::from_secs(10), "the monitor degraded", || async {
            monitor_health(&server).await.0 == "degraded"
        })
        .await;
        let (_, message) = monitor_health(&server).await;
        assert!(
            message.contains(&poison.to_string()) && message.contains("poison refused"),
            "{db:?}: the message names the record and the cause: {message}"
        );
        assert!(metric(&server, "chain_store_failures_total").await >= 1.0);
        raw_sql(&url, allow).await;
        eventually(Duration::from_secs(10), "the monitor running again", || async {
            monitor_health(&server).await.0 == "running"
        })
        .await;
        assert!(has_progression(&server, &poison).await, "{db:?}: stored once allowed");
        assert!(server.stop().await);
    }
}

/// Reconciliation passes skipped as unchanged (by fingerprint).
const UNCHANGED: &str = "chain_updates_unchanged_total{source=\"reconciliation\"}";

backend_tests! {
    // Cost follows change: once applied, an unchanged account is skipped
    // by its fingerprint at every pass (no decode, no database round trip,
    // no event), and a changed one is applied at the next pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_skip_unchanged_accounts_and_apply_changed_ones(db: Db) {
        let net = Net::start().await;
        let Some(test_db) = TestDb::new(db).await else { return };
        let config = net.config(&test_db);
        let server = TestServer::start_with(test_db, config).await;
        let sessions: Vec<Pubkey> = (0..20).map(|_| Pubkey::new_unique()).collect();
        for id in &sessions {
            net.place(id, &session(id, &[], false));
        }
        for id in &sessions {
            eventually(Duration::from_secs(10), "the session stored", || has_progression(&server, id)).await;
        }
        // A whole pass found all 20 unchanged.
        let skipped = metric(&server, UNCHANGED).await;
        eventually(Duration::from_secs(10), "a pass of unchanged accounts", || async {
            metric(&server, UNCHANGED).await >= skipped + 20.0
                && metric(&server, "reconciliation_changed").await == 0.0
        })
        .await;
        let mut lifecycle = server.lifecycle().await;
        let head = |lifecycle: &mut valence_lifecycle_api::v1::lifecycle_service_client::LifecycleServiceClient<tonic::transport::Channel>| {
            let mut lifecycle = lifecycle.clone();
            async move {
                lifecycle
                    .list_events(ListEventsRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .head_sequence
            }
        };
        let quiet = head(&mut lifecycle).await;
        let skipped = metric(&server, UNCHANGED).await;
        eventually(Duration::from_secs(10), "another quiet pass", || async {
            metric(&server, UNCHANGED).await >= skipped + 20.0
        })
        .await;
        assert_eq!(head(&mut lifecycle).await, quiet, "{db:?}: quiet passes append nothing");
        assert!(metric(&server, "monitor_fingerprints").await >= 20.0);
        assert!(metric(&server, "reconciliation_duration_seconds_count").await >= 2.0);

        // One account changes: the next pass applies it.
        net.place(&sessions[0], &session(&sessions[0], &[], true));
        eventually(Duration::from_secs(10), "the change applied", || async {
            let s = lifecycle
                .clone()
                .get_session(GetSessionRequest { id: sessions[0].to_string() })
                .await
                .unwrap()
                .into_inner()
                .session
                .unwrap();
            s.is_consumed
        })
        .await;
        assert!(server.stop().await);
    }
}

/// Reconciliation passes run so far.
const PASSES: &str = "reconciliation_duration_seconds_count";

// While both websocket feeds are healthy they deliver every change, so full
// passes wait LIVE_POLL_INTERVAL; once a feed drops, passes come every
// POLL_INTERVAL again and find what the feed would have delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_are_rare_while_the_websockets_are_healthy_and_frequent_when_one_drops_sqlite() {
    let net = Net::start().await;
    let ws_proxy = Proxy::start(net.ws_addr()).await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = net.config(&db);
    config.rpc.ws_url = format!("ws://{}", ws_proxy.addr);
    config.lifecycle.live_poll_interval_secs = 3600;
    let server = TestServer::start_with(db, config).await;
    server.wait_healthy(Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "the first pass", || async {
        metric(&server, PASSES).await >= 1.0
    })
    .await;
    let live = Pubkey::new_unique();
    net.place(&live, &session(&live, &[], false));
    eventually(Duration::from_secs(5), "the live update", || {
        has_progression(&server, &live)
    })
    .await;
    // At most one more pass (if the last began before both feeds ran);
    // once a pass has seen them running, the next waits an hour.
    let settled = metric(&server, PASSES).await;
    // The span (five POLL_INTERVALs) in which no pass may run.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        metric(&server, PASSES).await <= settled + 1.0,
        "passes kept coming every POLL_INTERVAL while the feeds were live"
    );

    ws_proxy.refuse(true);
    ws_proxy.cut();
    let dropped = metric(&server, PASSES).await;
    let missed = Pubkey::new_unique();
    net.place(&missed, &session(&missed, &[], false));
    eventually(
        Duration::from_secs(10),
        "passes every second again",
        || async { metric(&server, PASSES).await >= dropped + 2.0 },
    )
    .await;
    eventually(Duration::from_secs(5), "the pass finds the record", || {
        has_progression(&server, &missed)
    })
    .await;
    assert!(server.stop().await);
}
