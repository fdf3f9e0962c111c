//! The builder against a real in-process Surfnet with the stand-in shard
//! program: requests become accounts on chain exactly once, hash mismatches
//! send nothing, failing transactions are retried then parked and re-queued,
//! a crash between sending and confirming creates nothing twice, the chain
//! (not a wallet or a database) decides whether a request is done, and the
//! concurrency limit holds.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use solana_sdk::{
    pubkey::Pubkey,
    signature::{Keypair, Signer},
};
use surfpool_sdk::cheatcodes::builders::DeployProgram;
use tonic::{transport::Channel, Code};
use valence_lifecycle_api::{
    initial_state::InitialState,
    v1::{
        lifecycle_event::Payload, lifecycle_service_client::LifecycleServiceClient, AccountRequest,
        AccountRequestStatus, EventType, GetAccountRequest, GetProgressionRequest, GetStatsRequest,
        LinearState, ListAccountRequestsRequest, ListEventsRequest, RequestAccountRequest,
        RetryAccountRequestRequest,
    },
};
use valence_lifecycle_server::{
    builder::plan::{account_space, Plan},
    chain::{
        codec::{AccountRecord as ChainAccount, Record},
        dev,
    },
    config::Config,
};

use crate::{
    chain::{Net, STAND_IN},
    cli,
    common::{backend_tests, caps, eventually, metric, Db, TestDb, TestServer},
    process::ServerProcess,
};

/// A funded service wallet in a Solana CLI keypair file.
pub(crate) struct Wallet {
    pub(crate) keypair: Keypair,
    pub(crate) path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Wallet {
    pub(crate) fn funded(net: &Net) -> Wallet {
        let keypair = Keypair::new();
        tokio::task::block_in_place(|| {
            net.surfnet
                .cheatcodes()
                .fund_sol(&keypair.pubkey(), 50_000_000_000)
                .unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        std::fs::write(
            &path,
            serde_json::to_string(&keypair.to_bytes().to_vec()).unwrap(),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Wallet {
            keypair,
            path,
            _dir: dir,
        }
    }

    pub(crate) fn pubkey(&self) -> Pubkey {
        self.keypair.pubkey()
    }
}

fn builder_config(net: &Net, db: &TestDb, wallet: &Wallet) -> Config {
    let mut c = net.config(db);
    c.service.keypair_path = wallet.path.display().to_string();
    c.retry.max_retries = 5;
    c.retry.initial_delay_ms = 200;
    c.retry.multiplier = 2.0;
    c.retry.max_delay_ms = 5_000;
    c
}

/// Places an AccountRequest record (cheatcode) owned by `program`.
pub(crate) fn place_request(
    net: &Net,
    program: &Pubkey,
    capabilities: &[String],
    hash: [u8; 32],
) -> Pubkey {
    let key = dev::random_key();
    let data = dev::account_request(
        key,
        Pubkey::new_from_array([7; 32]),
        capabilities.to_vec(),
        hash,
    )
    .encode();
    tokio::task::block_in_place(|| {
        net.surfnet
            .cheatcodes()
            .set_account(&key, 10_000_000, &data, program)
            .unwrap()
    });
    key
}

pub(crate) fn expected_hash(capabilities: &[String]) -> [u8; 32] {
    InitialState::for_capabilities(capabilities).hash()
}

pub(crate) fn chain_account(net: &Net, key: &Pubkey) -> Option<solana_sdk::account::Account> {
    tokio::task::block_in_place(|| net.surfnet.rpc_client().get_account(key).ok())
}

fn balance(net: &Net, key: &Pubkey) -> u64 {
    tokio::task::block_in_place(|| net.surfnet.rpc_client().get_balance(key).unwrap())
}

async fn request(client: &mut LifecycleServiceClient<Channel>, id: &Pubkey) -> AccountRequest {
    client
        .list_account_requests(ListAccountRequestsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests
        .into_iter()
        .find(|r| r.id == id.to_string())
        .unwrap_or_else(|| panic!("request {id} is not stored"))
}

pub(crate) async fn wait_status(
    client: &LifecycleServiceClient<Channel>,
    id: &Pubkey,
    status: AccountRequestStatus,
    within: Duration,
) -> AccountRequest {
    eventually(within, &format!("request {id} {status:?}"), || {
        let mut client = client.clone();
        async move {
            let r = client
                .list_account_requests(ListAccountRequestsRequest {
                    page_size: 1000,
                    status: status as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            r.requests.iter().any(|r| r.id == id.to_string())
        }
    })
    .await;
    let mut client = client.clone();
    request(&mut client, id).await
}

pub(crate) async fn events_of(
    client: &mut LifecycleServiceClient<Channel>,
    entity: &str,
    event_type: EventType,
) -> Vec<valence_lifecycle_api::v1::LifecycleEvent> {
    client
        .list_events(ListEventsRequest {
            limit: 1000,
            event_type: event_type as i32,
            entity_id: entity.to_string(),
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// Checks the account the builder made for `request` on chain and in the store.
async fn assert_initialized(
    net: &Net,
    client: &mut LifecycleServiceClient<Channel>,
    request_id: &Pubkey,
    capabilities: &[String],
    wallet: &Pubkey,
) -> Pubkey {
    let plan = Plan::new(*request_id, capabilities, net.program, *wallet);
    let account = chain_account(net, &plan.address).expect("the account exists on chain");
    assert_eq!(account.owner, net.program);
    assert_eq!(account.data.len(), account_space(capabilities));
    let rent = tokio::task::block_in_place(|| {
        net.surfnet
            .rpc_client()
            .get_minimum_balance_for_rent_exemption(account.data.len())
            .unwrap()
    });
    assert!(account.lamports >= rent, "rent-exempt");
    let Ok(Record::Account(ChainAccount {
        id,
        state_hash,
        capabilities: on_chain_caps,
        is_active,
        ..
    })) = Record::decode(&account.data)
    else {
        panic!("the Account record is written")
    };
    assert_eq!(id, plan.address.to_bytes());
    assert_eq!(state_hash, expected_hash(capabilities));
    assert_eq!(on_chain_caps, capabilities);
    assert!(is_active);

    let stored = client
        .get_account(GetAccountRequest {
            id: plan.address.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(stored.request_id, request_id.to_string());
    assert_eq!(stored.state_hash, hex::encode(expected_hash(capabilities)));
    let progression = client
        .get_progression(GetProgressionRequest {
            entity_id: plan.address.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .progression
        .unwrap();
    assert_eq!(progression.current_state, LinearState::Account as i32);
    let initialized = events_of(
        client,
        &plan.address.to_string(),
        EventType::AccountInitialized,
    )
    .await;
    assert_eq!(initialized.len(), 1, "AccountInitialized exactly once");
    plan.address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valid_requests_become_initialized_accounts_on_chain_and_in_the_store() {
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = builder_config(&net, &db, &wallet);
    let server = TestServer::start_with(db, config).await;
    let mut client = server.lifecycle().await;

    // A request placed on chain by someone else, with the hash stated.
    let on_chain_caps = caps(&["transfer", "mint"]);
    let placed = place_request(
        &net,
        &net.program,
        &on_chain_caps,
        expected_hash(&on_chain_caps),
    );
    let r = wait_status(
        &client,
        &placed,
        AccountRequestStatus::Initialized,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.attempts, 1);
    assert!(!r.signature.is_empty());
    let account =
        assert_initialized(&net, &mut client, &placed, &on_chain_caps, &wallet.pubkey()).await;
    assert_eq!(r.account_id, account.to_string());

    // A request the server places itself (RequestAccount), idempotent per key.
    let rpc_caps = caps(&["admin"]);
    let ask = RequestAccountRequest {
        shard: Default::default(),
        owner: Pubkey::new_from_array([9; 32]).to_string(),
        capabilities: rpc_caps.clone(),
        init_state_hash: String::new(),
        idempotency_key: "order-42".into(),
    };
    let first = client
        .request_account(ask.clone())
        .await
        .unwrap()
        .into_inner();
    let placed_by_rpc: Pubkey = first.request.as_ref().unwrap().id.parse().unwrap();
    assert!(!first.signature.is_empty());
    assert_eq!(
        first.request.unwrap().init_state_hash,
        hex::encode(expected_hash(&rpc_caps)),
        "the server states the hash it computed"
    );
    wait_status(
        &client,
        &placed_by_rpc,
        AccountRequestStatus::Initialized,
        Duration::from_secs(30),
    )
    .await;
    assert_initialized(
        &net,
        &mut client,
        &placed_by_rpc,
        &rpc_caps,
        &wallet.pubkey(),
    )
    .await;
    let again = client
        .request_account(ask.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.request.unwrap().id, placed_by_rpc.to_string());
    assert!(again.signature.is_empty(), "a repeat sends nothing");
    let mut other = ask.clone();
    other.capabilities = caps(&["mint"]);
    let err = client.request_account(other).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("idempotency_key"),
        "{}",
        err.message()
    );

    // Bad input names the field and stores nothing.
    for (bad, field) in [
        (
            RequestAccountRequest {
                owner: "not-a-key".into(),
                ..ask.clone()
            },
            "owner",
        ),
        (
            RequestAccountRequest {
                capabilities: caps(&["ok", "bad cap"]),
                ..ask.clone()
            },
            "capabilities[1]",
        ),
        (
            RequestAccountRequest {
                init_state_hash: "abc".into(),
                ..ask.clone()
            },
            "init_state_hash",
        ),
    ] {
        let err = client.request_account(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    // REST: the same call as JSON, bad bodies named, retry refused for a
    // request that did not fail.
    let http = reqwest::Client::new();
    let url = format!("{}/account-requests", server.http());
    let bad = http
        .post(&url)
        .json(&serde_json::json!({"owner": Pubkey::new_from_array([4; 32]).to_string(), "capabilities": "transfer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("capabilities"),
        "{body}"
    );
    let made = http
        .post(&url)
        .json(&serde_json::json!({
            "owner": Pubkey::new_from_array([4; 32]).to_string(),
            "capabilities": ["transfer"],
            "idempotency_key": "over-rest",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: serde_json::Value = made.json().await.unwrap();
    let rest_id: Pubkey = made["request"]["id"].as_str().unwrap().parse().unwrap();
    assert!(!made["signature"].as_str().unwrap().is_empty());
    wait_status(
        &client,
        &rest_id,
        AccountRequestStatus::Initialized,
        Duration::from_secs(30),
    )
    .await;
    let refused = http
        .post(format!("{url}/{rest_id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 412);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not FAILED"),
        "{body}"
    );

    // lifecyclectl places one too, and lists it initialized.
    let ctl = cli::lifecyclectl();
    let endpoint = format!("http://{}", server.grpc);
    let env = [("VALENCE_ENDPOINT", endpoint.as_str())];
    let owner = Pubkey::new_from_array([5; 32]).to_string();
    let args = [
        "account-requests",
        "create",
        "--owner",
        &owner,
        "--capability",
        "transfer",
        "--idempotency-key",
        "from-the-cli",
    ];
    let (code, stdout, stderr) = cli::run(&ctl, &args, &env).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("placed by transaction"), "{stdout}");
    eventually(
        Duration::from_secs(30),
        "the CLI's request initialized",
        || async {
            let (_, stdout, _) = cli::run(
                &ctl,
                &[
                    "--json",
                    "account-requests",
                    "list",
                    "--status",
                    "initialized",
                ],
                &env,
            )
            .await;
            let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            listed["requests"].as_array().unwrap().len() == 4
        },
    )
    .await;
    let (code, _, stderr) = cli::run(
        &ctl,
        &["account-requests", "retry", &placed.to_string()],
        &env,
    )
    .await;
    assert_eq!(code, Some(1), "an initialized request is not retried");
    assert!(stderr.contains("not FAILED"), "{stderr}");

    let stats = client
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.accounts_created, 4);
    assert_eq!(stats.accounts, 4);
    assert!(metric(&server, "valence_accounts_initialized_total").await >= 4.0);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hash_mismatch_is_parked_without_any_transaction() {
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let before = balance(&net, &wallet.pubkey());
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = builder_config(&net, &db, &wallet);
    let server = TestServer::start_with(db, config).await;
    let mut client = server.lifecycle().await;

    let capabilities = caps(&["transfer"]);
    let id = place_request(&net, &net.program, &capabilities, [0xab; 32]);
    let r = wait_status(
        &client,
        &id,
        AccountRequestStatus::Failed,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.failure_reason, "hash_mismatch");
    assert_eq!(r.attempts, 0);
    let failed = events_of(
        &mut client,
        &id.to_string(),
        EventType::AccountInitializationFailed,
    )
    .await;
    assert_eq!(failed.len(), 1);
    let Some(Payload::AccountInitializationFailed(f)) = &failed[0].payload else {
        panic!("payload")
    };
    assert!(f.parked);
    assert_eq!(f.reason, "hash_mismatch");

    let plan = Plan::new(id, &capabilities, net.program, wallet.pubkey());
    assert!(
        chain_account(&net, &plan.address).is_none(),
        "no account created"
    );
    assert_eq!(
        balance(&net, &wallet.pubkey()),
        before,
        "no fee paid: nothing was sent"
    );
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_transactions_are_retried_with_growing_delays_parked_and_requeued() {
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = builder_config(&net, &db, &wallet);
    // A shard program id with nothing deployed: every transaction fails.
    let missing = dev::random_key();
    config.lifecycle.shard_program_id = missing.to_string();
    let server = TestServer::start_with(db, config).await;
    let mut client = server.lifecycle().await;

    let capabilities = caps(&["transfer"]);
    let id = place_request(&net, &missing, &capabilities, expected_hash(&capabilities));
    let r = wait_status(
        &client,
        &id,
        AccountRequestStatus::Failed,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(r.attempts, 5);
    assert!(!r.failure_reason.is_empty());
    let failed = events_of(
        &mut client,
        &id.to_string(),
        EventType::AccountInitializationFailed,
    )
    .await;
    let parked: Vec<bool> = failed
        .iter()
        .map(|e| match &e.payload {
            Some(Payload::AccountInitializationFailed(f)) => f.parked,
            _ => panic!("payload"),
        })
        .collect();
    assert_eq!(parked, [false, false, false, false, true]);
    // Delays 200, 400, 800, 1600 ms (±10%): each gap longer than the last.
    let times: Vec<i64> = failed
        .iter()
        .map(|e| {
            let t = e.time.unwrap();
            t.seconds * 1000 + t.nanos as i64 / 1_000_000
        })
        .collect();
    let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let delay = 200 * (1 << i);
        assert!(
            *gap >= delay * 85 / 100,
            "gap {i} = {gap} ms, delay {delay} ms: {gaps:?}"
        );
    }
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "growing: {gaps:?}");
    let plan = Plan::new(id, &capabilities, missing, wallet.pubkey());
    assert!(chain_account(&net, &plan.address).is_none());

    // RetryAccountRequest: field errors, not found, wrong state.
    let err = client
        .retry_account_request(RetryAccountRequestRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("id"));
    let err = client
        .retry_account_request(RetryAccountRequestRequest {
            id: dev::random_key().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Deploy the program where it was missing, then re-queue.
    tokio::task::block_in_place(|| {
        net.surfnet
            .cheatcodes()
            .deploy(DeployProgram::new(missing).so_bytes(STAND_IN.to_vec()))
            .unwrap();
    });
    let requeued = client
        .retry_account_request(RetryAccountRequestRequest { id: id.to_string() })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(requeued.attempts, 0);
    let r = wait_status(
        &client,
        &id,
        AccountRequestStatus::Initialized,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.attempts, 1);
    assert!(chain_account(&net, &plan.address).is_some());
    assert_eq!(
        events_of(
            &mut client,
            &id.to_string(),
            EventType::AccountRequestRequeued
        )
        .await
        .len(),
        1
    );
    let err = client
        .retry_account_request(RetryAccountRequestRequest { id: id.to_string() })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "only FAILED requests are retried"
    );
    assert!(server.stop().await);
}

/// A JSON-RPC proxy in front of Surfnet that counts sendTransaction calls
/// and, while armed, SIGKILLs the server right after Surfnet accepted one:
/// the transaction is on its way, the server never learns the answer.
pub(crate) struct KillingProxy {
    pub(crate) url: String,
    pub(crate) sends: Arc<AtomicUsize>,
    pub(crate) victim: Arc<Mutex<Option<u32>>>,
    pub(crate) signatures: Arc<Mutex<Vec<String>>>,
}

impl KillingProxy {
    pub(crate) async fn start(upstream: String) -> KillingProxy {
        let sends = Arc::new(AtomicUsize::new(0));
        let victim: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
        let signatures = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::new();
        let (s, v, sig) = (sends.clone(), victim.clone(), signatures.clone());
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (http, upstream, s, v, sig) = (
                    http.clone(),
                    upstream.clone(),
                    s.clone(),
                    v.clone(),
                    sig.clone(),
                );
                async move {
                    let response = http
                        .post(&upstream)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    if body.windows(15).any(|w| w == b"sendTransaction") {
                        s.fetch_add(1, Ordering::SeqCst);
                        let answer: serde_json::Value = serde_json::from_slice(&response).unwrap();
                        if let Some(signature) = answer["result"].as_str() {
                            sig.lock().unwrap().push(signature.to_string());
                        }
                        if let Some(pid) = v.lock().unwrap().take() {
                            let _ = std::process::Command::new("kill")
                                .args(["-KILL", &pid.to_string()])
                                .status();
                        }
                    }
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        response,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        KillingProxy {
            url,
            sends,
            victim,
            signatures,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_sending_and_confirming_creates_one_account_counted_once() {
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    let proxy = KillingProxy::start(net.surfnet.rpc_url().to_string()).await;
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let program = net.program.to_string();
    let wallet_path = wallet.path.display().to_string();
    let env = [
        ("RPC_URL", proxy.url.as_str()),
        ("WS_URL", net.surfnet.ws_url()),
        ("SHARD_PROGRAM_ID", program.as_str()),
        ("WALLET_PATH", wallet_path.as_str()),
        ("POLL_INTERVAL", "1"),
    ];
    let first = ServerProcess::start(&db.url, &env).await;
    *proxy.victim.lock().unwrap() = first.child.id();
    let mut first = first;

    let capabilities = caps(&["transfer"]);
    let id = place_request(
        &net,
        &net.program,
        &capabilities,
        expected_hash(&capabilities),
    );
    let plan = Plan::new(id, &capabilities, net.program, wallet.pubkey());
    let exit = tokio::time::timeout(Duration::from_secs(60), first.child.wait())
        .await
        .expect("the server was killed after sending")
        .unwrap();
    assert!(!exit.success());
    eventually(
        Duration::from_secs(30),
        "the sent transaction landed",
        || async { chain_account(&net, &plan.address).is_some() },
    )
    .await;
    assert_eq!(proxy.sends.load(Ordering::SeqCst), 1);

    let second = ServerProcess::start(&db.url, &env).await;
    let client = LifecycleServiceClient::connect(format!("http://{}", second.grpc))
        .await
        .unwrap();
    let r = wait_status(
        &client,
        &id,
        AccountRequestStatus::Initialized,
        Duration::from_secs(30),
    )
    .await;
    let mut client = client;
    assert_eq!(proxy.sends.load(Ordering::SeqCst), 1, "nothing sent again");
    assert_eq!(r.attempts, 1);
    assert_eq!(r.signature, proxy.signatures.lock().unwrap()[0]);
    assert_initialized(&net, &mut client, &id, &capabilities, &wallet.pubkey()).await;
    let stats = client
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.accounts_created, 1);
    assert_eq!(second.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_requests_at_once_never_exceed_the_concurrency_limit() {
    let net = Net::start().await;
    let wallet = Wallet::funded(&net);
    // PostgreSQL here (SQLite in the tests above): the queue works on both.
    let Some(db) = TestDb::new(Db::Postgres).await else {
        return;
    };
    let mut config = builder_config(&net, &db, &wallet);
    config.service.max_concurrent_creations = 3;
    let server = TestServer::start_with(db, config).await;
    let client = server.lifecycle().await;

    let asks = (0..50).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .request_account(RequestAccountRequest {
                    shard: Default::default(),
                    owner: Pubkey::new_from_array([i as u8 + 1; 32]).to_string(),
                    capabilities: caps(&["transfer"]),
                    init_state_hash: String::new(),
                    idempotency_key: format!("burst-{i}"),
                })
                .await
                .unwrap()
        }
    });
    futures::future::join_all(asks).await;
    eventually(Duration::from_secs(180), "50 accounts initialized", || {
        let mut client = client.clone();
        async move {
            let stats = client
                .get_stats(GetStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            stats.accounts_created == 50
        }
    })
    .await;
    let peak = metric(&server, "valence_builder_in_flight_peak").await;
    assert!(peak <= 3.0, "at most 3 in flight, saw {peak}");
    assert!(peak >= 2.0, "creations did overlap (peak {peak})");
    let mut client = client;
    let stats = client
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.accounts, 50);
    assert_eq!(stats.pending_account_requests, 0);
    // The monitor may record an account before the builder's attempt has
    // returned from confirmation; the gauge drops once every attempt has.
    eventually(Duration::from_secs(30), "no creation in flight", || async {
        metric(&server, "valence_builder_in_flight ").await == 0.0
    })
    .await;
    assert!(server.stop().await);
}

/// The Account records on chain, by the request each initialized (read
/// from the request records, which name their account).
pub(crate) fn accounts_on_chain(net: &Net) -> (usize, std::collections::BTreeMap<String, String>) {
    let all = tokio::task::block_in_place(|| {
        net.surfnet
            .rpc_client()
            .get_program_accounts(&net.program)
            .unwrap()
    });
    let mut accounts = 0;
    let mut links = std::collections::BTreeMap::new();
    for (key, account) in all {
        match Record::decode(&account.data) {
            Ok(Record::Account(_)) => accounts += 1,
            Ok(Record::AccountRequest(r)) => {
                if let Some(linked) = r.initialized_account() {
                    links.insert(key.to_string(), Pubkey::new_from_array(linked).to_string());
                }
            }
            _ => {}
        }
    }
    (accounts, links)
}

/// Waits until `server` has every request of `ids` INITIALIZED; returns
/// request → account as that server recorded them.
async fn all_initialized(
    server: &TestServer,
    ids: &[Pubkey],
) -> std::collections::BTreeMap<String, String> {
    let client = server.lifecycle().await;
    for id in ids {
        wait_status(
            &client,
            id,
            AccountRequestStatus::Initialized,
            Duration::from_secs(60),
        )
        .await;
    }
    let mut client = client;
    let mut links = std::collections::BTreeMap::new();
    for id in ids {
        links.insert(id.to_string(), request(&mut client, id).await.account_id);
    }
    links
}

backend_tests! {
    // Two deployments (own wallet, own database) on one chain, then a third
    // with a new wallet and an empty database on the used chain: each
    // request gets exactly one Account, and every deployment records the
    // one the chain names.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_request_gets_one_account_whichever_wallet_or_database_asks(db: Db) {
        let net = Net::start().await;
        let Some(db_a) = TestDb::new(db).await else { return };
        let db_b = TestDb::new(db).await.unwrap();
        let (wallet_a, wallet_b) = (Wallet::funded(&net), Wallet::funded(&net));
        let config_a = builder_config(&net, &db_a, &wallet_a);
        let config_b = builder_config(&net, &db_b, &wallet_b);
        let a = TestServer::start_with(db_a, config_a).await;
        let b = TestServer::start_with(db_b, config_b).await;
        let capabilities = caps(&["transfer"]);
        let ids: Vec<Pubkey> = (0..10)
            .map(|_| place_request(&net, &net.program, &capabilities, expected_hash(&capabilities)))
            .collect();

        let seen_by_a = all_initialized(&a, &ids).await;
        let seen_by_b = all_initialized(&b, &ids).await;
        let (accounts, on_chain) = accounts_on_chain(&net);
        assert_eq!(accounts, 10, "one Account per request on chain, not one per wallet");
        assert_eq!(seen_by_a, on_chain, "deployment A records the chain's accounts");
        assert_eq!(seen_by_b, on_chain, "deployment B records the chain's accounts");
        // A request shows INITIALIZED as soon as either monitor sees the
        // chain, maybe while its sender is still recording it: wait for the
        // count to reach ten, then check it is not more.
        let sent = || async {
            metric(&a, "valence_builder_attempts_total{outcome=\"initialized\"}").await
                + metric(&b, "valence_builder_attempts_total{outcome=\"initialized\"}").await
        };
        eventually(Duration::from_secs(60), "ten initializations counted", || async {
            sent().await >= 10.0
        })
        .await;
        let sent = sent().await;
        assert_eq!(sent, 10.0, "ten initializations sent in all");
        assert!(a.stop().await && b.stop().await);

        // A fresh deployment on the used chain sends nothing.
        let Some(db_c) = TestDb::new(db).await else { return };
        let wallet_c = Wallet::funded(&net);
        let config_c = builder_config(&net, &db_c, &wallet_c);
        let c = TestServer::start_with(db_c, config_c).await;
        let seen_by_c = all_initialized(&c, &ids).await;
        assert_eq!(seen_by_c, on_chain, "the fresh deployment adopts the chain's accounts");
        assert_eq!(accounts_on_chain(&net).0, 10, "no account created again");
        assert_eq!(
            metric(&c, "valence_builder_attempts_total{outcome=\"initialized\"}").await,
            0.0
        );
        let mut client = c.lifecycle().await;
        for id in &ids {
            let initialized = events_of(&mut client, &on_chain[&id.to_string()], EventType::AccountInitialized).await;
            assert_eq!(initialized.len(), 1, "AccountInitialized once for {id}");
        }
        assert!(c.stop().await);
    }
}

backend_tests! {
    // An AccountInitialized concerns the request as much as the account:
    // asked for by the request id, ListEvents and Subscribe both find it,
    // and every event lists the entities it concerns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_requests_events_include_its_initialization(db: Db) {
        use futures::StreamExt as _;
        use valence_lifecycle_api::v1::{subscribe_response, StartPosition, SubscribeRequest};

        let net = Net::start().await;
        let Some(test_db) = TestDb::new(db).await else { return };
        let wallet = Wallet::funded(&net);
        let config = builder_config(&net, &test_db, &wallet);
        let server = TestServer::start_with(test_db, config).await;
        let capabilities = caps(&["transfer"]);
        let id = place_request(&net, &net.program, &capabilities, expected_hash(&capabilities));
        let mut client = server.lifecycle().await;
        wait_status(&client, &id, AccountRequestStatus::Initialized, Duration::from_secs(60)).await;
        let account = request(&mut client, &id).await.account_id;

        let listed = events_of(&mut client, &id.to_string(), EventType::Unspecified).await;
        let kinds: Vec<i32> = listed.iter().map(|e| e.event_type).collect();
        assert!(kinds.contains(&(EventType::AccountRequested as i32)), "{kinds:?}");
        let initialized = listed
            .iter()
            .find(|e| e.event_type == EventType::AccountInitialized as i32)
            .unwrap_or_else(|| {
                panic!("ListEvents(entity_id = request) includes the initialization: {kinds:?}")
            });
        assert_eq!(initialized.entity_id, account);
        assert_eq!(initialized.entity_ids, [account.clone(), id.to_string()]);
        assert!(listed.iter().all(|e| e.entity_ids.contains(&id.to_string())));
        // The account's own events are still found by its id.
        assert_eq!(events_of(&mut client, &account, EventType::AccountInitialized).await.len(), 1);

        let mut stream = server
            .events()
            .await
            .subscribe(SubscribeRequest {
                start: StartPosition::Oldest as i32,
                entity_ids: vec![id.to_string()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        while !seen.contains(&(EventType::AccountInitialized as i32)) {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("the initialization reaches a subscriber of the request")
                .unwrap()
                .unwrap();
            if let Some(subscribe_response::Message::Event(e)) = message.message {
                assert!(e.entity_ids.contains(&id.to_string()), "{e:?}");
                seen.push(e.event_type);
            }
        }
        let until = kinds.iter().position(|k| *k == EventType::AccountInitialized as i32).unwrap();
        assert_eq!(seen, kinds[..=until], "the stream and the list agree");
        assert!(server.stop().await);
    }
}

backend_tests! {
    // Requests the server places (RequestAccount; placing writes nothing,
    // the monitor records them): their AccountRequested events and first
    // steps carry the placing transaction's signature and slot, and two
    // placed apart have increasing slots. (Chain time following the wall
    // clock is checked on the server's own embedded network, in
    // chain::with_no_rpc_configured_…: this harness's Surfnet keeps its
    // Clock still.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn placed_requests_carry_their_transactions_slot_and_signature(db: Db) {
        let net = Net::start().await;
        let Some(test_db) = TestDb::new(db).await else { return };
        let wallet = Wallet::funded(&net);
        let config = builder_config(&net, &test_db, &wallet);
        let server = TestServer::start_with(test_db, config).await;
        let mut client = server.lifecycle().await;
        // Placed while the server runs: after its first pass, whose catch-up
        // keeps observation slots (a request placed while it starts is
        // recorded without its transaction when that pass finds it first).
        eventually(Duration::from_secs(30), "a first reconciliation pass", || async {
            metric(&server, "reconciliation_duration_seconds_count").await >= 1.0
        })
        .await;
        let mut placed = Vec::new();
        for key in ["first", "second"] {
            if let Some((_, _, slot)) = placed.last() {
                let after = *slot + 5;
                eventually(Duration::from_secs(30), "the chain moves on", || async {
                    let now = tokio::task::block_in_place(|| net.surfnet.rpc_client().get_slot().unwrap());
                    now > after
                })
                .await;
            }
            let answer = client
                .request_account(RequestAccountRequest {
                    shard: Default::default(),
                    owner: Pubkey::new_unique().to_string(),
                    capabilities: caps(&["transfer"]),
                    init_state_hash: String::new(),
                    idempotency_key: key.into(),
                })
                .await
                .unwrap()
                .into_inner();
            let id: Pubkey = answer.request.unwrap().id.parse().unwrap();
            let signature: solana_sdk::signature::Signature = answer.signature.parse().unwrap();
            let slot = tokio::task::block_in_place(|| {
                net.surfnet
                    .rpc_client()
                    .get_signature_statuses_with_history(&[signature])
                    .unwrap()
                    .value[0]
                    .as_ref()
                    .expect("the placing transaction is known")
                    .slot
            });
            placed.push((id, answer.signature, slot));
        }
        for (id, signature, slot) in &placed {
            wait_status(&client, id, AccountRequestStatus::Initialized, Duration::from_secs(60)).await;
            let requested = events_of(&mut client, &id.to_string(), EventType::AccountRequested).await;
            assert_eq!(requested.len(), 1);
            assert_eq!(&requested[0].signature, signature, "AccountRequested names its transaction");
            assert_eq!(requested[0].slot, Some(*slot), "and the slot it landed in");
            let history = client
                .get_progression(GetProgressionRequest { entity_id: id.to_string() })
                .await
                .unwrap()
                .into_inner()
                .progression
                .unwrap()
                .history;
            assert_eq!(history[0].to_state, LinearState::AccountRequest as i32);
            assert_eq!(&history[0].signature, signature, "the ACCOUNT_REQUEST step too");
            assert_eq!(history[0].slot, Some(*slot));
            let later = &history[1];
            assert!(!later.signature.is_empty() && later.slot >= Some(*slot), "{later:?}");
        }
        assert!(placed[1].2 > placed[0].2, "slots increase");
        assert!(server.stop().await);
    }
}

backend_tests! {
    /// Seed 001's critical path under a crash: a real request_account
    /// transaction emits PDAComputed; the server acting on it is SIGKILLed
    /// right after it sent the account's creation; a second server with
    /// another wallet (same database) finishes the request without sending
    /// anything. One account, the one the request record on chain names,
    /// verified and recorded once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_pda_computed_event_yields_one_verified_account_across_a_sigkill_and_a_second_wallet(db: Db) {
        let net = Net::start().await;
        let (first_wallet, second_wallet) = (Wallet::funded(&net), Wallet::funded(&net));
        let proxy = KillingProxy::start(net.surfnet.rpc_url().to_string()).await;
        let Some(test_db) = TestDb::new(db).await else { return };
        let program = net.program.to_string();
        let (first_path, second_path) = (
            first_wallet.path.display().to_string(),
            second_wallet.path.display().to_string(),
        );
        let ws = net.surfnet.ws_url().to_string();
        let env = |path: &str| {
            vec![
                ("RPC_URL", proxy.url.clone()),
                ("WS_URL", ws.clone()),
                ("SHARD_PROGRAM_ID", program.clone()),
                ("WALLET_PATH", path.to_string()),
                ("POLL_INTERVAL", "1".to_string()),
            ]
        };
        let first_env = env(&first_path);
        let first_env: Vec<(&str, &str)> = first_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let first = ServerProcess::start(&test_db.url, &first_env).await;
        *proxy.victim.lock().unwrap() = first.child.id();
        let mut first = first;

        let (request, placed) = crate::chain::request_account(&net, caps(&["transfer"]));
        let request = request.pubkey();
        let exit = tokio::time::timeout(Duration::from_secs(60), first.child.wait())
            .await
            .expect("the server was killed after sending")
            .unwrap();
        assert!(!exit.success());
        let named = || {
            let data = chain_account(&net, &request)?.data;
            match Record::decode(&data) {
                Ok(Record::AccountRequest(r)) => r.initialized_account().map(Pubkey::new_from_array),
                _ => None,
            }
        };
        eventually(Duration::from_secs(30), "the sent initialization landed", || async { named().is_some() }).await;
        let account = named().unwrap();
        assert_eq!(proxy.sends.load(Ordering::SeqCst), 1);

        let second_env = env(&second_path);
        let second_env: Vec<(&str, &str)> = second_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let second = ServerProcess::start(&test_db.url, &second_env).await;
        let client = LifecycleServiceClient::connect(format!("http://{}", second.grpc)).await.unwrap();
        wait_status(&client, &request, AccountRequestStatus::Initialized, Duration::from_secs(30)).await;
        let mut client = client;
        assert_eq!(proxy.sends.load(Ordering::SeqCst), 1, "{db:?}: nothing sent again");
        let stored = client
            .get_account(valence_lifecycle_api::v1::GetAccountRequest { id: account.to_string() })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        assert_eq!(stored.request_id, request.to_string(), "{db:?}: the account the chain names is the one stored");
        let elsewhere = Plan::new(request, &caps(&["transfer"]), net.program, second_wallet.pubkey());
        assert!(chain_account(&net, &elsewhere.address).is_none(), "{db:?}: the second wallet created nothing");
        let pda = client
            .list_events(ListEventsRequest { event_type: EventType::PdaComputed as i32, limit: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .events;
        assert_eq!(pda.iter().filter(|e| e.signature == placed).count(), 1, "{db:?}: PDAComputed recorded once");
        assert_eq!(second.terminate().await, Some(0));
    }
}
