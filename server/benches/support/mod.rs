//! What the benchmarks share: a real server started in this process on
//! loopback ports, the way `main` and the tests start it. Each benchmark
//! compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use anyhow::{anyhow, Context as _};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_server::config::Config;

/// Runs `run` on a two-worker runtime (as the server runs on this 2-core
/// machine), told whether this is `cargo bench` (which passes `--bench`:
/// the full form) or `cargo test --benches` (the short form).
pub(crate) fn main<F, Fut>(run: F) -> anyhow::Result<()>
where
    F: FnOnce(bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(full))
}

/// The number in environment variable `name`, or `default`.
pub(crate) fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A server started by [`start_server`].
pub(crate) struct Started {
    /// Its gRPC address.
    pub(crate) grpc: SocketAddr,
    /// Its REST address.
    pub(crate) api: SocketAddr,
    /// Its task; ends after `shutdown` fires.
    pub(crate) handle: JoinHandle<anyhow::Result<bool>>,
}

/// Validates `config`, serves it on loopback ports and waits (up to
/// `within`) until `/health` answers 200.
pub(crate) async fn start_server(
    config: Config,
    shutdown: CancellationToken,
    within: Duration,
) -> anyhow::Result<Started> {
    config.validate()?;
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await?;
    let api_listener = TcpListener::bind("127.0.0.1:0").await?;
    let (grpc, api) = (grpc_listener.local_addr()?, api_listener.local_addr()?);
    let handle = tokio::spawn(valence_lifecycle_server::serve_with_listeners(
        config,
        grpc_listener,
        api_listener,
        shutdown,
    ));
    let health = format!("http://{api}/health");
    let healthy = async {
        loop {
            if let Ok(r) = reqwest::get(&health).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    tokio::time::timeout(within, healthy)
        .await
        .map_err(|_| anyhow!("the server did not become healthy at {health}"))
        .context("starting the server")?;
    Ok(Started { grpc, api, handle })
}

/// A new database on the PostgreSQL server of `server_url`; its URL.
pub(crate) async fn fresh_postgres(server_url: &str) -> anyhow::Result<String> {
    use sqlx::{Connection as _, Executor as _};
    let name = format!("valence_bench_{}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(server_url).await?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let base = server_url.rsplit_once('/').map_or(server_url, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// The server binary started as its own process (a replica, or a server
/// measured from outside), on free loopback ports, killed when dropped.
pub(crate) struct ServerProcess {
    /// The process.
    pub(crate) child: tokio::process::Child,
    /// Its gRPC port.
    pub(crate) grpc: u16,
    /// Its REST port.
    pub(crate) api: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl ServerProcess {
    /// Starts the binary with only `env` (plus its ports and `RUST_LOG`)
    /// set, its standard output to `stdout`, and waits (up to 60 s) until
    /// its /health answers.
    pub(crate) async fn start(
        env: &[(&str, String)],
        log_level: &str,
        stdout: std::process::Stdio,
    ) -> anyhow::Result<ServerProcess> {
        let (grpc, api) = (free_port(), free_port());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_valence-lifecycle"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("GRPC_PORT", grpc.to_string())
            .env("API_PORT", api.to_string())
            .env("RUST_LOG", log_level)
            .stdout(stdout)
            .kill_on_drop(true)
            .spawn()
            .context("starting valence-lifecycle")?;
        let server = ServerProcess { child, grpc, api };
        let health = format!("http://127.0.0.1:{api}/health");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while reqwest::get(&health).await.is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the server did not answer at {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// User + system CPU seconds of the process so far (Linux /proc).
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("the server exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("odd /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf reads a constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / per_second)
    }

    /// Kills the process and waits until it is gone, so the next round
    /// has the machine to itself.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}
