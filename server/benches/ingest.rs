//! Ingest and reconciliation benchmark (issue 14): what the monitor costs
//! as the program grows, a program that prints figures beside baselines
//! measured in the same run, not a timed test.
//!
//! N records (a third each AccountRequest, Account and Session) are placed
//! on an in-process Surfnet with the stand-in program; then a fresh server
//! (the release binary, as its own process, no wallet) starts on them:
//!
//! * ingest: records/s from start until GetStats shows all N stored.
//!   Baseline: the same number of rows inserted raw, 500 to a transaction,
//!   into a scratch table of the same backend, once before the server
//!   starts and once after its steady state; the faster counts.
//! * steady state: the server's CPU while nothing changes (from two passes
//!   after ingest, once what it set off has settled), as a share of one
//!   core over three passes at the default 5 s POLL_INTERVAL (the worst
//!   case: LIVE_POLL_INTERVAL is set to it too, as when the websockets are
//!   down; with healthy feeds passes are 12 times rarer), and per pass
//!   against the CPU of receiving the pass's getProgramAccounts answer
//!   (`reconciliation_fetch_cpu_seconds`, measured inside the same pass).
//! * memory: the server's RSS with N records, less an idle server's, per
//!   record.
//!
//! `cargo bench -p valence-lifecycle-server --bench ingest` (release; set
//! `BENCH_RECORDS`, default 20,000; with `TEST_DATABASE_URL=postgres://…`
//! PostgreSQL rows too). `cargo test --benches` runs a short form (1,000
//! records, one pass) only to show it still runs.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use solana_sdk::pubkey::Pubkey;
use sqlx::{Connection as _, Executor as _};
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, GetStatsRequest,
};

#[path = "support/chain.rs"]
mod chain;
mod support;

use chain::Net;

/// Rows per transaction of the raw baseline.
const RAW_BATCH: usize = 500;

fn main() -> anyhow::Result<()> {
    support::main(run)
}

async fn run(full: bool) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let records = if full {
        support::env_number("BENCH_RECORDS", 20_000)
    } else {
        1_000
    };
    let passes = if full { 3 } else { 1 };
    let dir = tempfile::tempdir()?;
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("ingest.db").display()),
        format!("sqlite://{}?mode=rwc", dir.path().join("raw.db").display()),
        format!("sqlite://{}", dir.path().join("idle.db").display()),
    )];
    if let Ok(server) = std::env::var("TEST_DATABASE_URL") {
        backends.push((
            "postgres",
            support::fresh_postgres(&server).await?,
            support::fresh_postgres(&server).await?,
            support::fresh_postgres(&server).await?,
        ));
    }
    let net = Net::start().await?;
    let placed = Instant::now();
    net.place_records(records)?;
    println!(
        "ingest benchmark: {records} records placed on Surfnet in {:.1} s; {passes} steady-state pass(es)",
        placed.elapsed().as_secs_f64()
    );
    println!(
        "{:<9} {:<40} {:>14} {:>14} {:>7}",
        "backend", "what", "measured", "baseline", "ratio"
    );
    for (backend, url, raw_url, idle_url) in backends {
        measure(backend, &net, records, passes, &url, &raw_url, &idle_url).await?;
    }
    Ok(())
}

async fn measure(
    backend: &str,
    net: &Net,
    records: usize,
    passes: u32,
    url: &str,
    raw_url: &str,
    idle_url: &str,
) -> anyhow::Result<()> {
    let raw = raw_insert_rate(raw_url, records, "raw").await?;
    let idle = start_server(idle_url, &net.rpc_url, &net.ws_url, &Pubkey::new_unique()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = idle.rss_kb()?;
    drop(idle);

    let server = start_server(url, &net.rpc_url, &net.ws_url, &net.program).await?;
    let started = Instant::now();
    server
        .wait_stored(records, Duration::from_secs(600))
        .await?;
    let rate = records as f64 / started.elapsed().as_secs_f64();

    // Steady state begins once what the catch-up set off (the
    // orchestrator's and the event tailer's share of the new events) has
    // settled: after a whole pass that began with everything stored.
    server.wait_passes(2, Duration::from_secs(120)).await?;
    let (cpu_before, wall) = (server.cpu_seconds()?, Instant::now());
    let (pass_cpu_before, fetch_cpu_before) = (
        server.metric("reconciliation_cpu_seconds_total").await?,
        server
            .metric("reconciliation_fetch_cpu_seconds_total")
            .await?,
    );
    server.wait_passes(passes, Duration::from_secs(600)).await?;
    let share = (server.cpu_seconds()? - cpu_before) / wall.elapsed().as_secs_f64();
    let pass_cpu = server.metric("reconciliation_cpu_seconds_total").await? - pass_cpu_before;
    let fetch_cpu = server
        .metric("reconciliation_fetch_cpu_seconds_total")
        .await?
        - fetch_cpu_before;
    let n = f64::from(passes);
    row(
        backend,
        "steady state, % of a core",
        share * 100.0,
        10.0,
        "% goal",
    );
    row(
        backend,
        "pass CPU, ms (vs receiving its answer)",
        pass_cpu / n * 1e3,
        fetch_cpu / n * 1e3,
        "ms fetch",
    );
    // The raw rate again, now that the server idles: the faster of the two
    // is the baseline (the machine is shared; a slow moment must not flatter
    // the ratio).
    let raw = raw.max(raw_insert_rate(raw_url, records, "raw_again").await?);
    row(
        backend,
        "ingest, records/s",
        rate,
        raw,
        "rows/s raw, best of 2",
    );
    let rss = server.rss_kb()?;
    row(
        backend,
        "memory, bytes per record",
        (rss.saturating_sub(idle_rss)) as f64 * 1024.0 / records as f64,
        2048.0,
        "bytes goal",
    );
    println!(
        "{backend:<9} RSS idle {} MB, with {records} records {} MB",
        idle_rss / 1024,
        rss / 1024
    );
    Ok(())
}

fn row(backend: &str, what: &str, measured: f64, baseline: f64, unit: &str) {
    println!(
        "{backend:<9} {what:<40} {measured:>14.1} {baseline:>14.1} {:>6.2}×  ({unit})",
        measured / baseline
    );
}

/// Rows/s of raw inserts of `rows` rows shaped like a session, in
/// transactions of [`RAW_BATCH`], into a scratch table.
async fn raw_insert_rate(url: &str, rows: usize, table: &str) -> anyhow::Result<f64> {
    let mut conn = sqlx::AnyConnection::connect_with(&url.parse()?).await?;
    if url.starts_with("sqlite:") {
        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
            .await?;
    }
    conn.execute(
        format!("CREATE TABLE {table} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, body TEXT NOT NULL, at BIGINT NOT NULL)")
            .as_str(),
    )
    .await?;
    let started = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(RAW_BATCH) {
        let mut tx = conn.begin().await?;
        for n in chunk {
            sqlx::query(&format!(
                "INSERT INTO {table} (id, owner, body, at) VALUES ($1, $2, $3, $4)"
            ))
            .bind(format!("{n:044}"))
            .bind("owner")
            .bind("[\"transfer\",\"mint\"]")
            .bind(*n as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// The server measured: the binary as its own process.
type Server = support::ServerProcess;

/// Starts the server on `url`, watching `program` at `rpc`/`ws`.
async fn start_server(url: &str, rpc: &str, ws: &str, program: &Pubkey) -> anyhow::Result<Server> {
    // BENCH_SERVER_LOG=<file>: the server's info log (its pass lines say
    // where a pass's time goes) is appended there.
    let log = match std::env::var_os("BENCH_SERVER_LOG") {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => None,
    };
    let env = [
        ("DATABASE_URL", url.to_string()),
        ("RPC_URL", rpc.to_string()),
        ("WS_URL", ws.to_string()),
        ("SHARD_PROGRAM_ID", program.to_string()),
        ("LIVE_POLL_INTERVAL", "5".to_string()),
    ];
    let level = if log.is_some() { "info" } else { "warn" };
    Server::start(&env, level, log.map_or_else(Stdio::null, Stdio::from)).await
}

impl Server {
    async fn wait_stored(&self, records: usize, within: Duration) -> anyhow::Result<()> {
        let mut client =
            LifecycleServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc)).await?;
        let deadline = Instant::now() + within;
        loop {
            let s = client.get_stats(GetStatsRequest {}).await?.into_inner();
            let stored = s.accounts + s.sessions + s.pending_account_requests + s.accounts_failed;
            if stored as usize >= records {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {stored} of {records} stored"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` more reconciliation passes have finished.
    async fn wait_passes(&self, n: u32, within: Duration) -> anyhow::Result<()> {
        let name = "reconciliation_duration_seconds_count";
        let target = self.metric(name).await? + f64::from(n);
        let deadline = Instant::now() + within;
        while self.metric(name).await? < target {
            anyhow::ensure!(Instant::now() < deadline, "{n} passes took over {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.api))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server exited")
    }

    /// Resident set size in KiB (Linux /proc).
    fn rss_kb(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("odd VmRSS")?
            .parse()?)
    }
}
