//! Deadline benchmark (issue 17): seed 001's maximum processing delays
//! (PDAComputed 5 s, SessionReserved 2 s, SessionQueued 1 s,
//! QueueProcessed 500 ms) against what the server takes, on a steady
//! stream of real transactions. A program that prints figures beside the
//! deadlines as ratios, not a timed test.
//!
//! An in-process Surfnet with the stand-in program, and the real server in
//! this process (SQLite, a funded wallet). Each round sends, one after the
//! other, request_account (AccountRequested + PDAComputed),
//! reserve_session, queue_session and process_queue (its QueueProcessed
//! through a self-CPI), `BENCH_ROUNDS` rounds (default 100).
//!
//! The clock starts when this program's own logsSubscribe notification of
//! the transaction arrives (the same notification the server gets: the
//! moment the transaction is confirmed, as far as anyone off chain can
//! know) and stops when the server's Subscribe stream delivers the
//! recorded event; for PDAComputed, when it delivers the AccountInitialized
//! of the account the builder created, initialized and verified. So each
//! figure includes the stream's own delivery.
//!
//! `cargo bench -p valence-lifecycle-server --bench deadlines` (release).
//! `cargo test --benches` runs a short form (5 rounds) only to show it
//! still runs.

#[path = "support/chain.rs"]
mod chain;
mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chain::Net;
use futures::StreamExt as _;
use solana_client::{
    nonblocking::{pubsub_client::PubsubClient, rpc_client::RpcClient},
    rpc_config::{RpcTransactionLogsConfig, RpcTransactionLogsFilter},
};
use solana_commitment_config::CommitmentConfig;
use solana_sdk::{
    instruction::Instruction, pubkey::Pubkey, signature::Keypair, signer::Signer as _,
};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::{
    event_stream_service_client::EventStreamServiceClient, subscribe_response::Message, EventType,
    StartPosition, SubscribeRequest,
};
use valence_lifecycle_server::{
    chain::{codec, factory as fx},
    config::Config,
};

/// Seed 001's deadlines, by event type as the API names it.
const DEADLINES: [(&str, EventType, u64); 4] = [
    ("PDAComputed", EventType::PdaComputed, 5_000),
    ("SessionReserved", EventType::SessionReserved, 2_000),
    ("SessionQueued", EventType::SessionQueued, 1_000),
    ("QueueProcessed", EventType::QueueProcessed, 500),
];

/// When things were seen, by key.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn main() -> anyhow::Result<()> {
    support::main(run)
}

async fn run(full: bool) -> anyhow::Result<()> {
    let rounds = if full {
        support::env_number("BENCH_ROUNDS", 100)
    } else {
        5
    };
    let dir = tempfile::tempdir()?;
    let net = Net::start().await?;
    let (_, wallet_path) = net.wallet(dir.path())?;
    let (payer, _) = net.wallet(dir.path())?;
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("deadlines.db").display());
    config.rpc.url = net.rpc_url.clone();
    config.rpc.ws_url = net.ws_url.clone();
    config.lifecycle.shard_program_id = net.program.to_string();
    config.service.keypair_path = wallet_path.display().to_string();
    let stop = CancellationToken::new();
    let server = support::start_server(config, stop.clone(), Duration::from_secs(60)).await?;

    let confirmed = watch_logs(&net).await?;
    let recorded = watch_events(server.grpc).await?;
    // The server's own websocket subscriptions come up with /health; give
    // ours the same head start before the first transaction.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let rpc = RpcClient::new_with_commitment(net.rpc_url.clone(), CommitmentConfig::confirmed());
    let sender = Sender {
        rpc,
        payer,
        program: net.program,
    };
    let queue = sender.queue().await?;
    let mut sent: Vec<(usize, String, String)> = Vec::new(); // (type, tx signature, recorded key)
    for _ in 0..rounds {
        let (request, signature) = sender.request_account().await?;
        sent.push((0, signature, format!("AccountInitialized:{request}")));
        let (session, signature) = sender.reserve(&queue).await?;
        sent.push((1, signature.clone(), format!("SessionReserved:{signature}")));
        let signature = sender
            .send(
                &[fx::queue_session(&net.program, &session, &queue, 60)],
                &[],
            )
            .await?;
        sent.push((2, signature.clone(), format!("SessionQueued:{signature}")));
        let signature = sender
            .send(&[fx::process_queue(&net.program, &queue, &[session])], &[])
            .await?;
        sent.push((3, signature.clone(), format!("QueueProcessed:{signature}")));
    }
    let expected: Vec<String> = sent.iter().map(|(_, _, key)| key.clone()).collect();
    wait_all(&recorded, &expected, Duration::from_secs(120)).await?;

    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); DEADLINES.len()];
    for (kind, signature, key) in &sent {
        let start = confirmed.lock().unwrap().get(signature).copied();
        let end = recorded.lock().unwrap().get(key).copied();
        if let (Some(start), Some(end)) = (start, end) {
            latencies[*kind].push(end.saturating_duration_since(start).as_secs_f64() * 1_000.0);
        }
    }
    println!("deadline benchmark: {rounds} rounds of each event type, one transaction at a time");
    println!(
        "{:<18} {:>5} {:>9} {:>9} {:>9} {:>11} {:>6}",
        "event", "n", "p50 ms", "p99 ms", "max ms", "p99/limit", "met"
    );
    let mut all_met = true;
    for ((name, _, limit), mut values) in DEADLINES.iter().zip(latencies) {
        values.sort_by(f64::total_cmp);
        let (p50, p99) = (quantile(&values, 0.50), quantile(&values, 0.99));
        let max = values.last().copied().unwrap_or(f64::NAN);
        let met = !values.is_empty() && p99 < *limit as f64;
        all_met &= met;
        println!(
            "{name:<18} {:>5} {p50:>9.1} {p99:>9.1} {max:>9.1} {:>10.3}× {:>6}  (limit {limit} ms)",
            values.len(),
            p99 / *limit as f64,
            if met { "yes" } else { "NO" },
        );
    }
    println!(
        "all four deadlines met: {}",
        if all_met { "yes" } else { "no" }
    );
    stop.cancel();
    let _ = server.handle.await;
    Ok(())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Our own logsSubscribe: when each program transaction's notification arrived.
async fn watch_logs(net: &Net) -> anyhow::Result<Seen> {
    let seen: Seen = Arc::default();
    let (ws, program, out) = (net.ws_url.clone(), net.program.to_string(), seen.clone());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let client = PubsubClient::new(&ws).await.expect("bench websocket");
        let filter = RpcTransactionLogsFilter::Mentions(vec![program]);
        let config = RpcTransactionLogsConfig {
            commitment: Some(CommitmentConfig::confirmed()),
        };
        let (mut stream, _unsubscribe) = client
            .logs_subscribe(filter, config)
            .await
            .expect("logsSubscribe");
        let _ = ready_tx.send(());
        while let Some(n) = stream.next().await {
            out.lock()
                .unwrap()
                .entry(n.value.signature)
                .or_insert_with(Instant::now);
        }
    });
    ready_rx.await?;
    Ok(seen)
}

/// The server's Subscribe stream: when each recorded event arrived, keyed
/// as `sent` keys them.
async fn watch_events(grpc: std::net::SocketAddr) -> anyhow::Result<Seen> {
    let seen: Seen = Arc::default();
    let mut client = EventStreamServiceClient::connect(format!("http://{grpc}")).await?;
    let types = [
        EventType::AccountInitialized,
        EventType::SessionReserved,
        EventType::SessionQueued,
        EventType::QueueProcessed,
    ];
    let mut stream = client
        .subscribe(SubscribeRequest {
            event_types: types.iter().map(|t| *t as i32).collect(),
            start: StartPosition::Now as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            let Some(Message::Event(e)) = message.message else {
                continue;
            };
            let at = Instant::now();
            let key = if e.event_type == EventType::AccountInitialized as i32 {
                // Its request is the second entity it names.
                match e.entity_ids.get(1) {
                    Some(request) => format!("AccountInitialized:{request}"),
                    None => continue,
                }
            } else {
                let name = EventType::try_from(e.event_type)
                    .map(|t| {
                        t.as_str_name()
                            .trim_start_matches("EVENT_TYPE_")
                            .to_string()
                    })
                    .unwrap_or_default();
                let name = match name.as_str() {
                    "SESSION_RESERVED" => "SessionReserved",
                    "SESSION_QUEUED" => "SessionQueued",
                    _ => "QueueProcessed",
                };
                format!("{name}:{}", e.signature)
            };
            out.lock().unwrap().entry(key).or_insert(at);
        }
    });
    Ok(seen)
}

async fn wait_all(seen: &Seen, keys: &[String], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            keys.iter().filter(|k| !seen.contains_key(*k)).count()
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{missing} of {} events never reached the stream",
                keys.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends the rounds' transactions, one at a time.
struct Sender {
    rpc: RpcClient,
    payer: Keypair,
    program: Pubkey,
}

impl Sender {
    fn payer(&self) -> fx::Payer<'_> {
        fx::Payer {
            rpc: &self.rpc,
            payer: &self.payer,
            program: self.program,
        }
    }

    async fn send(&self, ixs: &[Instruction], signers: &[&Keypair]) -> anyhow::Result<String> {
        self.payer().send(ixs.to_vec(), signers).await
    }

    async fn queue(&self) -> anyhow::Result<Pubkey> {
        let queue = self.payer().fresh(fx::QUEUE_SPACE).await?;
        let init = fx::init_queue(&self.program, &queue.pubkey(), &self.payer.pubkey());
        self.send(&[init], &[]).await?;
        Ok(queue.pubkey())
    }

    async fn request_account(&self) -> anyhow::Result<(Pubkey, String)> {
        #[derive(borsh::BorshSerialize)]
        struct Args {
            owner: [u8; 32],
            capabilities: Vec<String>,
            init_state_hash: [u8; 32],
        }
        let request = self.payer().fresh(256).await?;
        let args = Args {
            owner: [7; 32],
            capabilities: vec!["transfer".into()],
            init_state_hash: [0; 32],
        };
        let ix = Instruction {
            program_id: self.program,
            accounts: vec![solana_sdk::instruction::AccountMeta::new(
                request.pubkey(),
                false,
            )],
            data: codec::instruction_data("request_account", &args),
        };
        let signature = self.send(&[ix], &[]).await?;
        Ok((request.pubkey(), signature))
    }

    async fn reserve(&self, queue: &Pubkey) -> anyhow::Result<(Pubkey, String)> {
        let session = self.payer().fresh(fx::reservation_space("bench")).await?;
        let ix = fx::reserve_session(
            &self.program,
            &session.pubkey(),
            queue,
            &self.payer.pubkey(),
            "bench",
            600,
        );
        let signature = self.send(&[ix], &[]).await?;
        Ok((session.pubkey(), signature))
    }
}
