//! Store benchmark (issue 12): what the store costs on the monitor's write
//! path and on unary reads, a program that prints figures, not a timed test.
//!
//! Each figure stands beside a baseline measured in the same run on the same
//! database, and the ratio is what to compare between runs and commits (the
//! machine is shared and noisy):
//!
//! * monitor-path writes: per chain record the store calls the monitor
//!   makes (`upsert_account_request`, `upsert_account` linked to it, and a
//!   session per two accounts), then the same records again (the
//!   reconciliation path, where nothing changed). Baseline: one bare
//!   transaction inserting one row into a scratch table through sqlx.
//! * unary reads: `GetAccount` and `ListAccounts` (100 per page) on a real
//!   server on loopback. Baseline: `grpc.health.v1.Health/Check` on the same
//!   server and connection (the transport and middleware, no store).
//!
//! Run with
//! `cargo bench -p valence-lifecycle-server --bench store` (a release
//! build); with `TEST_DATABASE_URL=postgres://…` the PostgreSQL rows are
//! measured too, in a database of their own.

mod support;

use std::time::{Duration, Instant};

use sqlx::{Connection as _, Executor as _};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, GetAccountRequest, ListAccountsRequest,
};
use valence_lifecycle_server::{
    config::{Config, DatabaseConfig},
    store::{AccountRecord, AccountRequestRecord, SessionRecord, Store},
};

/// Chain records written per backend.
const RECORDS: usize = 1_000;
/// Unary calls per kind.
const CALLS: usize = 2_000;
/// How long the server may take to become healthy.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir()?;
    let mut urls = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )];
    if let Ok(server) = std::env::var("TEST_DATABASE_URL") {
        urls.push(("postgres", support::fresh_postgres(&server).await?));
    }
    println!("store benchmark: {RECORDS} chain records, {CALLS} calls per read kind");
    println!(
        "{:<9} {:<34} {:>10} {:>12} {:>7}",
        "backend", "what", "µs/op", "baseline µs", "ratio"
    );
    for (backend, url) in urls {
        let writes = monitor_writes(&url).await?;
        for (what, micros, baseline) in writes {
            row(backend, what, micros, baseline);
        }
        for (what, micros, baseline) in unary_reads(&url).await? {
            row(backend, what, micros, baseline);
        }
    }
    Ok(())
}

fn row(backend: &str, what: &str, micros: f64, baseline: f64) {
    println!(
        "{backend:<9} {what:<34} {micros:>10.1} {baseline:>12.1} {:>6.2}×",
        micros / baseline
    );
}

fn database(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: url.to_string(),
        ..DatabaseConfig::default()
    }
}

fn key(kind: u8, n: usize) -> String {
    let mut bytes = [kind; 32];
    bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
    bs58::encode(bytes).into_string()
}

fn request(n: usize) -> AccountRequestRecord {
    AccountRequestRecord {
        id: key(1, n),
        owner: key(9, n % 7),
        capabilities: vec!["transfer".into(), "mint".into()],
        init_state_hash: "ab".repeat(32),
        created_at_ms: 1_700_000_000_000 + n as i64,
        slot: Some(n as u64),
        signature: String::new(),
        account_id: None,
    }
}

fn account(n: usize) -> AccountRecord {
    AccountRecord {
        id: key(2, n),
        owner: key(9, n % 7),
        capabilities: vec!["transfer".into(), "mint".into()],
        state_hash: "ab".repeat(32),
        is_active: true,
        created_at_ms: 1_700_000_000_000 + n as i64,
        request_id: key(1, n),
        slot: Some(n as u64),
        signature: String::new(),
    }
}

fn session(n: usize) -> SessionRecord {
    SessionRecord {
        id: key(3, n),
        owner: key(9, n % 7),
        accounts: vec![key(2, 2 * n), key(2, 2 * n + 1)],
        namespace: "bench".into(),
        is_consumed: false,
        nonce: n as u64,
        created_at_ms: 1_700_000_000_000 + n as i64,
        metadata: vec![],
        slot: Some(n as u64),
        signature: String::new(),
    }
}

/// Writes every record once; returns the number of store calls made.
async fn write_all(store: &Store) -> anyhow::Result<usize> {
    let mut calls = 0;
    for n in 0..RECORDS {
        store.upsert_account_request(&request(n)).await?;
        store.upsert_account(&account(n)).await?;
        calls += 2;
        if n % 2 == 1 {
            store.upsert_session(&session(n / 2)).await?;
            calls += 1;
        }
    }
    Ok(calls)
}

/// Monitor-path writes (new, then unchanged) beside bare inserts.
async fn monitor_writes(url: &str) -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let store = Store::connect(&database(url)).await?;
    let baseline = bare_inserts(url).await?;
    let started = Instant::now();
    let calls = write_all(&store).await?;
    let new = per_op(started.elapsed(), calls);
    let started = Instant::now();
    let calls = write_all(&store).await?;
    let unchanged = per_op(started.elapsed(), calls);
    store.close().await;
    Ok(vec![
        ("monitor write, new record", new, baseline),
        ("monitor write, unchanged record", unchanged, baseline),
    ])
}

/// µs per one-row insert transaction on a scratch table, through the same
/// driver and connection settings as the store.
async fn bare_inserts(url: &str) -> anyhow::Result<f64> {
    let mut conn = sqlx::AnyConnection::connect(&connect_url(url)).await?;
    if url.starts_with("sqlite:") {
        conn.execute(valence_lifecycle_server::store::sqlite::CONNECTION_PRAGMAS)
            .await?;
    }
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_scratch (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    )
    .await?;
    let started = Instant::now();
    for n in 0..RECORDS {
        let mut tx = conn.begin().await?;
        sqlx::query("INSERT INTO bench_scratch (id, body) VALUES ($1, $2)")
            .bind(key(4, n))
            .bind("x".repeat(64))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(per_op(started.elapsed(), RECORDS))
}

fn connect_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        valence_lifecycle_server::store::sqlite::connect_url(url)
    } else {
        url.to_string()
    }
}

fn per_op(elapsed: Duration, ops: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / ops as f64
}

/// GetAccount and ListAccounts on a real server beside health checks.
async fn unary_reads(url: &str) -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let shutdown = CancellationToken::new();
    let mut config = Config::default();
    config.database.url = url.to_string();
    // No chain: the monitor's own work would be measured too.
    config.rpc.embedded = false;
    let support::Started {
        grpc,
        handle: server,
        ..
    } = support::start_server(config, shutdown.clone(), SETUP_TIMEOUT).await?;
    let channel = Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel.clone());
    let mut lifecycle = LifecycleServiceClient::new(channel);
    // Warm the connection and the pool.
    for _ in 0..50 {
        health.check(HealthCheckRequest::default()).await?;
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        health.check(HealthCheckRequest::default()).await?;
    }
    let baseline = per_op(started.elapsed(), CALLS);
    let started = Instant::now();
    for n in 0..CALLS {
        let id = key(2, (n * 7919) % RECORDS);
        lifecycle.get_account(GetAccountRequest { id }).await?;
    }
    let get = per_op(started.elapsed(), CALLS);
    let started = Instant::now();
    for _ in 0..CALLS / 10 {
        let page = lifecycle
            .list_accounts(ListAccountsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(page.accounts.len() == 100, "a full page");
    }
    let list = per_op(started.elapsed(), CALLS / 10);
    shutdown.cancel();
    server.await??;
    Ok(vec![
        ("GetAccount", get, baseline),
        ("ListAccounts (100 per page)", list, baseline),
    ])
}
