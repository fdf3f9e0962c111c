//! Shared test helpers: a real server on loopback ports against a real
//! SQLite file or a fresh PostgreSQL database, and clients for it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use valence_lifecycle_api::v1::{
    event_stream_service_client::EventStreamServiceClient,
    lifecycle_service_client::LifecycleServiceClient, rule_service_client::RuleServiceClient,
};
use valence_lifecycle_server::{
    config::{Config, DatabaseConfig, Role, TokenConfig},
    store::{AccountRecord, AccountRequestRecord, SessionRecord, Store},
};

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Sqlite,
    Postgres,
}

/// A fresh, empty database: a SQLite file in a temp dir, or a new
/// PostgreSQL database on TEST_DATABASE_URL's server.
pub(crate) struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL server for tests. Without TEST_DATABASE_URL the
/// PostgreSQL variant of a test is skipped (loudly), unless
/// VALENCE_REQUIRE_POSTGRES=1 (set by `.ci/test`), where it fails.
pub(crate) fn postgres_server() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("VALENCE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("VALENCE_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        }
        _ => {
            eprintln!("SKIPPED: PostgreSQL variant (set TEST_DATABASE_URL or run .ci/test)");
            None
        }
    }
}

impl TestDb {
    /// A new database of the given kind; None when PostgreSQL is not available.
    pub(crate) async fn new(db: Db) -> Option<TestDb> {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Some(TestDb {
                    url,
                    _dir: Some(dir),
                })
            }
            Db::Postgres => {
                let server = postgres_server()?;
                let name = format!("valence_test_{}", rand::random::<u64>());
                let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                })
            }
        }
    }
}

/// One test case per backend: `backend_tests!(async fn name(db: Db) { .. })`
/// defines the body `name` and a module `name` with the tests `sqlite` and
/// `postgres` (run as `area::name::sqlite`, `area::name::postgres`), so a
/// failure names its backend. Attributes given (e.g. a multi-threaded
/// `#[tokio::test(..)]`) replace the default `#[tokio::test]`. The body
/// returns early when PostgreSQL is not available (TestDb::new is None).
macro_rules! backend_tests {
    ($(#[$attr:meta])+ async fn $name:ident($db:ident: Db) $body:block) => {
        async fn $name($db: $crate::common::Db) $body

        mod $name {
            $(#[$attr])+
            async fn sqlite() {
                super::$name($crate::common::Db::Sqlite).await
            }

            $(#[$attr])+
            async fn postgres() {
                super::$name($crate::common::Db::Postgres).await
            }
        }
    };
    (async fn $name:ident($db:ident: Db) $body:block) => {
        $crate::common::backend_tests!(#[tokio::test] async fn $name($db: Db) $body);
    };
}
pub(crate) use backend_tests;

/// Test tokens (at least 16 characters, as config requires).
pub(crate) const READER: &str = "reader-token-for-tests";
pub(crate) const OPERATOR: &str = "operator-token-for-tests";
pub(crate) const ADMIN: &str = "admin-token-for-tests";

/// A config for tests: loopback, the given database, fast timers.
pub(crate) fn test_config(db_url: &str) -> Config {
    let mut c = Config::default();
    c.database.url = db_url.to_string();
    c.server.shutdown_grace_secs = 5;
    c.monitoring.health_check_interval_secs = 1;
    // No chain unless a test brings one (each Surfnet costs time and memory).
    c.rpc.embedded = false;
    // Shard leases that move within seconds when a test kills a replica.
    c.leases.ttl_ms = 3_000;
    c.leases.renew_interval_ms = 500;
    c
}

/// Adds reader, operator and admin tokens.
pub(crate) fn with_tokens(mut c: Config) -> Config {
    c.auth.tokens = vec![
        TokenConfig {
            token: READER.into(),
            role: Role::Reader,
            name: "reader".into(),
        },
        TokenConfig {
            token: OPERATOR.into(),
            role: Role::Operator,
            name: "operator".into(),
        },
        TokenConfig {
            token: ADMIN.into(),
            role: Role::Admin,
            name: "admin".into(),
        },
    ];
    c
}

/// A running in-process server.
pub(crate) struct TestServer {
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<bool>>,
    /// Kept so the database (a temp dir for SQLite) lives as long as the server.
    pub _db: TestDb,
}

impl TestServer {
    /// Starts a server with default test config on `db`.
    pub(crate) async fn start(db: Db) -> Option<TestServer> {
        let test_db = TestDb::new(db).await?;
        let config = test_config(&test_db.url);
        Some(Self::start_with(test_db, config).await)
    }

    /// Starts a server with `config` (its database.url must be `db`'s).
    /// Set TEST_LOG (a RUST_LOG filter) to see the server's logs.
    pub(crate) async fn start_with(db: TestDb, config: Config) -> TestServer {
        Self::start_on(db, config, 0).await
    }

    /// [`TestServer::start_with`] with the REST gateway on `api_port` (0:
    /// any), so a restarted server takes its predecessor's port and a
    /// client (a browser) reconnects to it.
    pub(crate) async fn start_on(db: TestDb, config: Config, api_port: u16) -> TestServer {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = TcpListener::bind(("127.0.0.1", api_port)).await.unwrap();
        let (grpc_addr, api_addr) = (grpc.local_addr().unwrap(), api.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(valence_lifecycle_server::serve_with_listeners(
            config,
            grpc,
            api,
            shutdown.clone(),
        ));
        let server = TestServer {
            grpc: grpc_addr,
            api: api_addr,
            shutdown,
            handle,
            _db: db,
        };
        wait_answering(&server.http()).await;
        server
    }

    /// Waits until /health says "healthy" (every component running).
    pub(crate) async fn wait_healthy(&self, within: Duration) -> Duration {
        wait_healthy(&self.http(), within).await
    }

    /// `http://127.0.0.1:<api port>`.
    pub(crate) fn http(&self) -> String {
        format!("http://{}", self.api)
    }

    /// A gRPC channel to the server.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    }

    pub(crate) async fn lifecycle(&self) -> LifecycleServiceClient<Channel> {
        LifecycleServiceClient::new(self.channel().await)
    }

    pub(crate) async fn rules(&self) -> RuleServiceClient<Channel> {
        RuleServiceClient::new(self.channel().await)
    }

    pub(crate) async fn events(&self) -> EventStreamServiceClient<Channel> {
        EventStreamServiceClient::new(self.channel().await)
    }

    /// Stops the server and returns whether shutdown was clean.
    pub(crate) async fn stop(self) -> bool {
        self.stop_and_keep().await.0
    }

    /// Stops the server, keeping its database for another one.
    pub(crate) async fn stop_and_keep(self) -> (bool, TestDb) {
        self.shutdown.cancel();
        let clean = tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server did not stop within 30 s")
            .unwrap()
            .unwrap();
        (clean, self._db)
    }
}

/// Adds `authorization: Bearer <token>` to a request.
pub(crate) fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Seed 000's example rule body, verbatim.
pub(crate) const SEED_RULE: &str = r#"{
  "id": "rule-1",
  "name": "Auto-consume idle sessions",
  "condition": {
    "SessionIdleFor": 300
  },
  "action": {
    "ConsumeAndCreate": [{
      "account_indices": [0, 1],
      "namespace": "recycled",
      "metadata": []
    }]
  },
  "enabled": true
}"#;

/// CEL conditions that overflowed a worker's stack and aborted the server
/// (issue 13), each with what the refusal must say: over the length limit
/// (the issue's own shapes), and within it but too deep a tree.
pub(crate) fn cel_bombs() -> Vec<(String, &'static str)> {
    vec![
        (
            format!("{} > 0", vec!["1"; 1500].join(" + ")),
            "limit of 4096 bytes",
        ),
        (
            format!("session{} == 1", ".a".repeat(10_000)),
            "limit of 4096 bytes",
        ),
        (format!("{} > 0", vec!["1"; 2000].join("+")), "limit of 24"),
        (format!("session{} == 1", ".a".repeat(2000)), "limit of 24"),
    ]
}

/// A valid base58 public key made from `n`.
pub(crate) fn pubkey(n: u8) -> String {
    let mut bytes = [0u8; 32];
    bytes[0] = n;
    bytes[31] = 7;
    bs58::encode(bytes).into_string()
}

/// Polls `check` until it holds or `within` passes (then panics naming
/// `what`); returns the time taken. The one way tests wait for something.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `<http>/health` as JSON (`http` is `http://host:port`).
pub(crate) async fn health(http: &str) -> Value {
    reqwest::get(format!("{http}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until /health answers 200 at all (the server is up; components
/// may still be starting, so it may say "degraded").
pub(crate) async fn wait_answering(http: &str) {
    let url = format!("{http}/health");
    eventually(
        Duration::from_secs(10),
        &format!("{url} answering"),
        || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
}

/// Waits until /health says `"status": "healthy"`; returns the time taken.
pub(crate) async fn wait_healthy(http: &str, within: Duration) -> Duration {
    eventually(within, &format!("{http} healthy"), || async {
        health(http).await["status"] == "healthy"
    })
    .await
}

/// The server's /metrics exposition.
pub(crate) async fn metrics_text(server: &TestServer) -> String {
    metrics_text_at(&server.http()).await
}

/// `<http>/metrics` (`http` is `http://host:port`).
pub(crate) async fn metrics_text_at(http: &str) -> String {
    reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of every /metrics sample whose line starts with `prefix` (a
/// name, or a name with labels: `name{kind="x",outcome="y"}`).
pub(crate) async fn metric(server: &TestServer, prefix: &str) -> f64 {
    metric_at(&server.http(), prefix).await
}

/// [`metric`] of the server whose /metrics is at `<http>/metrics`.
pub(crate) async fn metric_at(http: &str, prefix: &str) -> f64 {
    let text = metrics_text_at(http).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `sql` on the database at `url` behind the store's back: only to
/// put a database in a state an older version could have left.
pub(crate) async fn raw_sql(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    conn.execute(sql).await.unwrap();
}

/// A store on `url`: for a test's own use, or to seed a database before a
/// server starts on it (never to write behind a running server's back).
pub(crate) async fn open_store(url: &str) -> Store {
    Store::connect(&DatabaseConfig {
        url: url.to_string(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap()
}

/// A fresh database of kind `db` and a store on it; None without PostgreSQL.
pub(crate) async fn fresh_store(db: Db) -> Option<(Store, TestDb)> {
    let test_db = TestDb::new(db).await?;
    Some((open_store(&test_db.url).await, test_db))
}

/// Capabilities as records hold them.
pub(crate) fn caps(items: &[&str]) -> Vec<String> {
    items.iter().map(|c| c.to_string()).collect()
}

/// Account request `pubkey(n)` of owner `pubkey(200)`, at slot 10.
pub(crate) fn request_record(n: u8) -> AccountRequestRecord {
    AccountRequestRecord {
        id: pubkey(n),
        owner: pubkey(200),
        capabilities: caps(&["transfer"]),
        init_state_hash: "ab".repeat(32),
        created_at_ms: 1_700_000_000_000 + n as i64,
        slot: Some(10),
        signature: String::new(),
        account_id: None,
    }
}

/// Account `pubkey(n)` of owner `pubkey(200)` with no request behind it.
pub(crate) fn account_record(n: u8) -> AccountRecord {
    AccountRecord {
        id: pubkey(n),
        owner: pubkey(200),
        capabilities: caps(&["transfer"]),
        state_hash: "ab".repeat(32),
        is_active: true,
        created_at_ms: 1_700_000_000_100 + n as i64,
        request_id: String::new(),
        slot: None,
        signature: String::new(),
    }
}

/// Account `pubkey(n)` initialized from request `pubkey(request)` by the
/// transaction "sig-init" at slot 11.
pub(crate) fn initialized_account_record(n: u8, request: u8) -> AccountRecord {
    AccountRecord {
        request_id: pubkey(request),
        slot: Some(11),
        signature: "sig-init".into(),
        ..account_record(n)
    }
}

/// Live session `pubkey(n)` over the accounts `pubkey(a)`, nonce `n`, at slot 12.
pub(crate) fn session_record(n: u8, accounts: &[u8], namespace: &str) -> SessionRecord {
    SessionRecord {
        id: pubkey(n),
        owner: pubkey(200),
        accounts: accounts.iter().map(|a| pubkey(*a)).collect(),
        namespace: namespace.into(),
        is_consumed: false,
        nonce: n as u64,
        created_at_ms: 1_700_000_000_200 + n as i64,
        metadata: vec![1, 2, 3],
        slot: Some(12),
        signature: String::new(),
    }
}

/// A request a [`TestReceiver`] got: headers and body.
pub(crate) type Received = (http::HeaderMap, Vec<u8>);

/// A local HTTP receiver (webhooks) on a loopback port: POST `<url>`
/// answers `answer(n)` to the n-th request (1-based) and keeps every
/// request's headers and body.
pub(crate) struct TestReceiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl TestReceiver {
    pub(crate) async fn start(
        answer: impl Fn(usize) -> http::StatusCode + Clone + Send + Sync + 'static,
    ) -> TestReceiver {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let s = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let (s, answer) = (s.clone(), answer.clone());
                async move {
                    let mut seen = s.lock().unwrap();
                    seen.push((headers, body.to_vec()));
                    answer(seen.len())
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestReceiver { url, seen }
    }

    /// Every request so far, in arrival order.
    pub(crate) fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub(crate) fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// The path of `program` on PATH, or None when it is missing outside
/// .ci/test (which installs the tools and sets VALENCE_REQUIRE_POSTGRES:
/// there a missing tool fails the test instead of skipping it).
pub(crate) fn tool(program: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("VALENCE_REQUIRE_POSTGRES").is_err(),
            "{program} must be installed under .ci/test"
        );
        eprintln!("SKIPPED: {program} not installed");
    }
    found
}

/// A finished command's stdout then stderr, as text.
pub(crate) fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
