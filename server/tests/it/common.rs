//! Shared test helpers: a real server on loopback ports against a real
//! SQLite file or a fresh PostgreSQL database, and clients for it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sqlx::{Connection, Executor};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use valence_lifecycle_api::v1::{
    event_stream_service_client::EventStreamServiceClient,
    lifecycle_service_client::LifecycleServiceClient, rule_service_client::RuleServiceClient,
};
use valence_lifecycle_server::config::{Config, Role, TokenConfig};

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

/// The two backends, for tests that must pass on both.
pub(crate) const BOTH: [Db; 2] = [Db::Sqlite, Db::Postgres];

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
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
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
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let url = format!("{}/health", self.http());
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not become healthy at {url}");
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

/// A valid base58 public key made from `n`.
pub(crate) fn pubkey(n: u8) -> String {
    let mut bytes = [0u8; 32];
    bytes[0] = n;
    bytes[31] = 7;
    bs58::encode(bytes).into_string()
}

/// Polls `check` until it holds or `within` passes; returns the time taken.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {within:?}");
}
