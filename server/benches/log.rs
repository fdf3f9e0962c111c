//! Event log benchmark (issue 14): reading the log back and appending to
//! it with one writer, a program that prints figures beside baselines
//! measured in the same run on the same database, not a timed test.
//!
//! * replay: `Subscribe` from the oldest event to the head, events/s,
//!   against reading the same log with `ListEvents` pages of 1,000 by
//!   `after_sequence`, both over loopback gRPC to the real server (no
//!   chain). The log holds `BENCH_EVENTS` events (default 50,000).
//! * append by one writer: appends/s of one event per transaction, through
//!   the store (`Store::append_events`, what every component's change
//!   costs) and through `RuleService.CreateRule` (a whole call: a rule row
//!   and its event), against raw single-row transactions into a scratch
//!   table of the same backend through sqlx.
//!
//! `cargo bench -p valence-lifecycle-server --no-default-features --bench
//! log` (release; with `TEST_DATABASE_URL=postgres://…` PostgreSQL rows
//! too). `cargo test --benches` runs a short form (2,000 events, 100
//! appends, SQLite) only to show it still runs.

mod support;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use sqlx::{Connection as _, Executor as _};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use valence_lifecycle_api::v1::{
    event_stream_service_client::EventStreamServiceClient, lifecycle_event::Payload,
    lifecycle_service_client::LifecycleServiceClient, rule_action, rule_condition,
    rule_service_client::RuleServiceClient, subscribe_response, CreateRuleRequest,
    ListEventsRequest, NotifyWebhookAction, ProgressionRule, RuleAction, RuleCondition,
    StartPosition, StateTransition, SubscribeRequest,
};
use valence_lifecycle_server::{
    config::Config,
    store::{NewEvent, Store},
};

/// Events per ListEvents page of the replay baseline.
const PAGE: i32 = 1_000;
/// Events per transaction while seeding the log.
const SEED_BATCH: usize = 500;

fn main() -> anyhow::Result<()> {
    support::main(run)
}

async fn run(full: bool) -> anyhow::Result<()> {
    let (events, appends) = if full {
        let events = support::env_number("BENCH_EVENTS", 50_000);
        (events, 2_000)
    } else {
        (2_000, 100)
    };
    let dir = tempfile::tempdir()?;
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("log.db").display()),
        format!("sqlite://{}?mode=rwc", dir.path().join("raw.db").display()),
    )];
    if full {
        if let Ok(server) = std::env::var("TEST_DATABASE_URL") {
            backends.push((
                "postgres",
                support::fresh_postgres(&server).await?,
                support::fresh_postgres(&server).await?,
            ));
        }
    }
    println!("event log benchmark: {events} events replayed, {appends} appends by one writer");
    println!(
        "{:<9} {:<44} {:>12} {:>12} {:>7}",
        "backend", "what", "measured", "baseline", "ratio"
    );
    for (backend, url, raw_url) in backends {
        measure(backend, &url, &raw_url, events, appends)
            .await
            .with_context(|| format!("on {backend}"))?;
    }
    Ok(())
}

async fn measure(
    backend: &str,
    url: &str,
    raw_url: &str,
    events: usize,
    appends: usize,
) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.database.url = url.to_string();
    config.rpc.embedded = false;
    let store = Store::connect(&config.database).await?;
    seed(&store, events).await?;

    let raw = raw_single_row_rate(raw_url, appends).await?;
    let stored = store_append_rate(&store, appends).await?;
    row(
        backend,
        "append, store, events/s",
        stored,
        raw,
        "raw 1-row tx/s",
    );
    store.close().await;

    let stop = CancellationToken::new();
    let server = support::start_server(config, stop.clone(), Duration::from_secs(60)).await?;
    let channel = connect(server.grpc).await?;
    let created = create_rule_rate(&channel, appends).await?;
    row(
        backend,
        "append, CreateRule, calls/s",
        created,
        raw,
        "raw 1-row tx/s",
    );

    // Best of two alternating rounds each (the machine is shared).
    let (mut subscribe, mut list) = (0.0f64, 0.0f64);
    for _ in 0..2 {
        subscribe = subscribe.max(subscribe_rate(&channel).await?);
        list = list.max(list_rate(&channel).await?);
    }
    row(
        backend,
        "replay, Subscribe from oldest, events/s",
        subscribe,
        list,
        "ListEvents/s",
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), server.handle).await;
    Ok(())
}

fn row(backend: &str, what: &str, measured: f64, baseline: f64, unit: &str) {
    println!(
        "{backend:<9} {what:<44} {measured:>12.0} {baseline:>12.0} {:>6.2}×  ({unit})",
        measured / baseline.max(f64::MIN_POSITIVE)
    );
}

/// A StateTransition about a fresh entity: the size and shape of most of
/// the log.
fn event(n: usize) -> NewEvent {
    let entity = format!("{n:0>44}");
    NewEvent::new(
        entity.clone(),
        Payload::StateTransition(StateTransition {
            entity_id: entity,
            kind: 2,
            from_state: 3,
            to_state: 4,
        }),
    )
    .on_chain(Some(n as u64), "5".repeat(88))
}

async fn seed(store: &Store, events: usize) -> anyhow::Result<()> {
    let all: Vec<usize> = (0..events).collect();
    for chunk in all.chunks(SEED_BATCH) {
        store
            .append_events(chunk.iter().map(|n| event(*n)).collect())
            .await?;
    }
    Ok(())
}

/// One event per transaction through the store, one after another.
async fn store_append_rate(store: &Store, appends: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for n in 0..appends {
        store.append_events(vec![event(1_000_000 + n)]).await?;
    }
    Ok(appends as f64 / started.elapsed().as_secs_f64())
}

/// One CreateRule call at a time (a disabled rule, so nothing acts on it).
async fn create_rule_rate(channel: &Channel, appends: usize) -> anyhow::Result<f64> {
    let mut client = RuleServiceClient::new(channel.clone());
    let started = Instant::now();
    for n in 0..appends {
        let rule = ProgressionRule {
            id: format!("log-bench-{n}"),
            name: format!("log bench {n}"),
            condition: Some(RuleCondition {
                kind: Some(rule_condition::Kind::SessionIdleForSeconds(300)),
            }),
            action: Some(RuleAction {
                kind: Some(rule_action::Kind::NotifyWebhook(NotifyWebhookAction {
                    url: "http://127.0.0.1:9/log-bench".into(),
                })),
            }),
            enabled: false,
            created_at: None,
            updated_at: None,
        };
        client
            .create_rule(CreateRuleRequest { rule: Some(rule) })
            .await?;
    }
    Ok(appends as f64 / started.elapsed().as_secs_f64())
}

/// Raw single-row transactions into a scratch table shaped like the log.
async fn raw_single_row_rate(url: &str, rows: usize) -> anyhow::Result<f64> {
    let mut conn = sqlx::AnyConnection::connect_with(&url.parse()?).await?;
    if url.starts_with("sqlite:") {
        // As the store opens its file.
        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
            .await?;
    }
    let blob = if url.starts_with("sqlite:") {
        "BLOB"
    } else {
        "BYTEA"
    };
    conn.execute(
        format!("CREATE TABLE raw (id BIGINT PRIMARY KEY, entity TEXT NOT NULL, body {blob} NOT NULL, at BIGINT NOT NULL)")
            .as_str(),
    )
    .await?;
    let started = Instant::now();
    for n in 0..rows {
        let mut tx = conn.begin().await?;
        sqlx::query("INSERT INTO raw (id, entity, body, at) VALUES ($1, $2, $3, $4)")
            .bind(n as i64)
            .bind(format!("{n:0>44}"))
            .bind(vec![7u8; 160])
            .bind(n as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// Events/s of one subscription from the oldest event until the head a
/// heartbeat reports is reached.
async fn subscribe_rate(channel: &Channel) -> anyhow::Result<f64> {
    let head = head(channel).await?;
    let mut client = EventStreamServiceClient::new(channel.clone());
    let started = Instant::now();
    let mut stream = client
        .subscribe(SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut received = 0usize;
    while let Some(message) = stream.next().await {
        if let Some(subscribe_response::Message::Event(e)) = message?.message {
            received += 1;
            if e.sequence >= head {
                return Ok(received as f64 / started.elapsed().as_secs_f64());
            }
        }
    }
    anyhow::bail!("the subscription ended after {received} events, before the head {head}")
}

/// Events/s of ListEvents pages by `after_sequence` from the start to the head.
async fn list_rate(channel: &Channel) -> anyhow::Result<f64> {
    let head = head(channel).await?;
    let mut client = LifecycleServiceClient::new(channel.clone());
    let started = Instant::now();
    let (mut after, mut received) = (0u64, 0usize);
    while after < head {
        let page = client
            .list_events(ListEventsRequest {
                limit: PAGE,
                after_sequence: Some(after),
                ..Default::default()
            })
            .await?
            .into_inner();
        let Some(last) = page.events.last() else {
            anyhow::bail!("an empty page after {after}, before the head {head}");
        };
        after = last.sequence;
        received += page.events.len();
    }
    Ok(received as f64 / started.elapsed().as_secs_f64())
}

/// The log's head as the server sees it.
async fn head(channel: &Channel) -> anyhow::Result<u64> {
    let mut client = LifecycleServiceClient::new(channel.clone());
    let page = client
        .list_events(ListEventsRequest {
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(page.events.first().map_or(0, |e| e.sequence))
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?)
}
