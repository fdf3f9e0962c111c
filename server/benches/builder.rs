//! Builder benchmark (issue 14): how fast pending account requests become
//! initialized accounts, against how fast the same chain confirms
//! transactions at all. A program that prints figures beside a baseline
//! measured in the same run, not a timed test.
//!
//! `BENCH_REQUESTS` AccountRequest records (default 1,000) are placed on an
//! in-process Surfnet with the stand-in program, then the real server (in
//! this process, SQLite, a funded wallet, the default 10 creations in
//! flight) starts on them:
//!
//! * builder: initialized accounts/s, from start until GetStats counts
//!   them all (the monitor records the requests, the builder creates,
//!   initializes and verifies each account, and the monitor records it);
//! * baseline: the same number of transactions, one system transfer each
//!   from the same kind of wallet, sent and confirmed with the same
//!   commitment, 10 in flight: what Surfnet accepts.
//!
//! `cargo bench -p valence-lifecycle-server --bench builder` (release).
//! `cargo test --benches` runs a short form (50 requests) only to show it
//! still runs.

#[path = "support/chain.rs"]
mod chain;
mod support;

use std::time::{Duration, Instant};

use chain::Net;
use futures::StreamExt as _;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;
use solana_sdk::{
    pubkey::Pubkey, signature::Keypair, signer::Signer as _, transaction::Transaction,
};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, GetStatsRequest,
};
use valence_lifecycle_server::config::Config;

/// Creations (and baseline transactions) in flight, the server's default.
const IN_FLIGHT: usize = 10;

fn main() -> anyhow::Result<()> {
    support::main(run)
}

async fn run(full: bool) -> anyhow::Result<()> {
    let requests = if full {
        support::env_number("BENCH_REQUESTS", 1_000)
    } else {
        50
    };
    let dir = tempfile::tempdir()?;
    let net = Net::start().await?;
    let rpc = RpcClient::new_with_commitment(net.rpc_url.clone(), CommitmentConfig::confirmed());
    let (payer, _) = net.wallet(dir.path())?;
    let baseline = transfers_rate(&rpc, &payer, requests).await?;

    let (_, wallet_path) = net.wallet(dir.path())?;
    net.place_requests(requests)?;
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("builder.db").display());
    config.rpc.url = net.rpc_url.clone();
    config.rpc.ws_url = net.ws_url.clone();
    config.lifecycle.shard_program_id = net.program.to_string();
    config.service.keypair_path = wallet_path.display().to_string();
    config.service.max_concurrent_creations = IN_FLIGHT;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let server = support::start_server(config, stop.clone(), Duration::from_secs(60)).await?;
    wait_initialized(server.grpc, requests, Duration::from_secs(1_800)).await?;
    let built = requests as f64 / started.elapsed().as_secs_f64();
    println!("builder benchmark: {requests} requests, {IN_FLIGHT} in flight");
    println!(
        "{:<44} {:>10} {:>10} {:>7}",
        "what", "measured", "baseline", "ratio"
    );
    println!(
        "{:<44} {built:>10.1} {baseline:>10.1} {:>6.2}×  (confirmed transfers/s)",
        "initialized accounts/s",
        built / baseline
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), server.handle).await;
    Ok(())
}

/// Confirmed system transfers/s, `IN_FLIGHT` at a time, each with a fresh
/// blockhash as the builder's are.
async fn transfers_rate(rpc: &RpcClient, payer: &Keypair, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|_| async {
            let to = Pubkey::new_unique();
            let transfer =
                solana_system_interface::instruction::transfer(&payer.pubkey(), &to, 1_000_000);
            let blockhash = rpc.get_latest_blockhash().await?;
            let tx = Transaction::new_signed_with_payer(
                &[transfer],
                Some(&payer.pubkey()),
                &[payer],
                blockhash,
            );
            rpc.send_and_confirm_transaction(&tx).await?;
            Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn wait_initialized(
    grpc: std::net::SocketAddr,
    n: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let mut client = LifecycleServiceClient::connect(format!("http://{grpc}")).await?;
    let deadline = Instant::now() + within;
    loop {
        let stats = client.get_stats(GetStatsRequest {}).await?.into_inner();
        if stats.accounts_created as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} accounts initialized (failed: {})",
            stats.accounts_created,
            stats.accounts_failed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
