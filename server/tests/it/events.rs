//! The event log and EventStream.Subscribe: ordering, resume, slow
//! subscribers, retention, heartbeats and several server processes.

use std::time::Duration;

use futures::StreamExt as _;
use tonic::{transport::Channel, Code, Streaming};
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{
        event_stream_service_client::EventStreamServiceClient,
        rule_service_client::RuleServiceClient, subscribe_response::Message, CreateRuleRequest,
        DeleteRuleRequest, EventType, Heartbeat, LifecycleEvent, ListEventsRequest, StartPosition,
        SubscribeRequest, SubscribeResponse,
    },
};
use valence_lifecycle_client::{Backoff, ClientConfig, LifecycleClient, SubscriptionItem};

use crate::{
    common::{backend_tests, eventually, test_config, Db, TestDb, TestServer, SEED_RULE},
    process::ServerProcess,
    proxy::Proxy,
};

const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn rule(id: &str) -> CreateRuleRequest {
    let mut seed: SeedRule = serde_json::from_str(SEED_RULE).unwrap();
    seed.id = id.to_string();
    CreateRuleRequest {
        rule: Some(seed.into()),
    }
}

pub(crate) async fn create_rules(rules: RuleServiceClient<Channel>, prefix: &str, n: usize) {
    create_big_rules(rules, prefix, n, 0).await
}

/// Rules whose events carry `metadata` bytes each, to fill transport buffers.
pub(crate) async fn create_big_rules(
    mut rules: RuleServiceClient<Channel>,
    prefix: &str,
    n: usize,
    metadata: usize,
) {
    for i in 0..n {
        let mut request = rule(&format!("{prefix}-{i}"));
        if let Some(valence_lifecycle_api::v1::rule_action::Kind::ConsumeAndCreate(c)) = request
            .rule
            .as_mut()
            .and_then(|r| r.action.as_mut())
            .and_then(|a| a.kind.as_mut())
        {
            c.templates[0].metadata = vec![7; metadata];
        }
        rules.create_rule(request).await.unwrap();
    }
}

pub(crate) fn only_rules_created() -> SubscribeRequest {
    SubscribeRequest {
        event_types: vec![EventType::RuleCreated as i32],
        ..Default::default()
    }
}

async fn subscribe(
    client: &mut EventStreamServiceClient<Channel>,
    request: SubscribeRequest,
) -> Streaming<SubscribeResponse> {
    client.subscribe(request).await.unwrap().into_inner()
}

/// Reads until `n` events arrived (heartbeats are skipped).
async fn collect(stream: &mut Streaming<SubscribeResponse>, n: usize) -> Vec<LifecycleEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived in time", events.len()))
            .unwrap()
            .expect("stream ended early");
        if let Some(Message::Event(e)) = message.message {
            events.push(e);
        }
    }
    events
}

async fn first_heartbeat(stream: &mut Streaming<SubscribeResponse>) -> Heartbeat {
    loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Message::Heartbeat(h)) = message.message {
            return h;
        }
    }
}

fn sequences(events: &[LifecycleEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

backend_tests!(
    async fn concurrent_writers_reach_three_subscribers_in_the_same_order(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let mut streams = Vec::new();
        for _ in 0..3 {
            let mut client = server.events().await;
            let mut stream = subscribe(&mut client, only_rules_created()).await;
            first_heartbeat(&mut stream).await;
            streams.push(stream);
        }
        let a = tokio::spawn(create_rules(server.rules().await, "a", 40));
        let b = tokio::spawn(create_rules(server.rules().await, "b", 40));
        a.await.unwrap();
        b.await.unwrap();
        let mut seen = Vec::new();
        for stream in &mut streams {
            seen.push(collect(stream, 80).await);
        }
        let first = sequences(&seen[0]);
        assert!(
            first.windows(2).all(|w| w[0] < w[1]),
            "{db:?}: strictly increasing {first:?}"
        );
        for other in &seen[1..] {
            assert_eq!(sequences(other), first, "{db:?}: same events, same order");
        }
        let ids: std::collections::HashSet<&str> =
            seen[0].iter().map(|e| e.entity_id.as_str()).collect();
        assert_eq!(ids.len(), 80, "{db:?}: no duplicates, both writers");
        assert!(server.stop().await);
    }
);

backend_tests!(
    async fn a_resumed_subscriber_receives_exactly_the_missing_range(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        create_rules(server.rules().await, "before", 10).await;
        let mut client = server.events().await;
        let request = SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        };
        let mut stream = subscribe(&mut client, request).await;
        let got = collect(&mut stream, 5).await;
        drop(stream); // the connection is cut mid-stream
        let last = got.last().unwrap().sequence;

        create_rules(server.rules().await, "during", 10).await;
        let head = server
            .lifecycle()
            .await
            .list_events(ListEventsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .head_sequence;
        let resume = SubscribeRequest {
            start: StartPosition::FromSequence as i32,
            from_sequence: last + 1,
            ..Default::default()
        };
        let mut stream = subscribe(&mut client, resume).await;
        let rest = collect(&mut stream, (head - last) as usize).await;
        let expected: Vec<u64> = (last + 1..=head).collect();
        assert_eq!(
            sequences(&rest),
            expected,
            "{db:?}: exactly the missing range"
        );
        assert!(server.stop().await);
    }
);

#[tokio::test]
async fn a_stalled_subscriber_catches_up_while_a_fast_one_keeps_going() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    config.events.live_buffer = 16;
    config.events.subscriber_buffer = 4;
    config.events.catch_up_page = 32;
    let server = TestServer::start_with(db, config).await;
    // A reader with HTTP/2 windows of 64 KiB (hyper's default is 2 MiB),
    // as a constrained client would have.
    let narrow = Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow_client = EventStreamServiceClient::new(narrow);
    let mut slow = subscribe(&mut slow_client, only_rules_created()).await;
    first_heartbeat(&mut slow).await;
    let mut fast_client = server.events().await;
    let mut fast = subscribe(&mut fast_client, only_rules_created()).await;
    first_heartbeat(&mut fast).await;

    // The slow one reads nothing while 300 events of 4 KiB go by: more than
    // its HTTP/2 windows, its own buffer and the live buffer hold together.
    let writer = tokio::spawn(create_big_rules(server.rules().await, "r", 300, 4096));
    let fast_events = collect(&mut fast, 300).await;
    writer.await.unwrap();
    assert_eq!(fast_events.len(), 300);

    let slow_events = collect(&mut slow, 300).await;
    assert_eq!(
        sequences(&slow_events),
        sequences(&fast_events),
        "everything, in order, no gaps"
    );

    let metrics = reqwest::get(format!("{}/metrics", server.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let catch_ups = metrics
        .lines()
        .find(|l| l.starts_with("lifecycle_subscriber_catch_ups_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(
        catch_ups >= 1,
        "the slow subscriber was served from the store: {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("lifecycle"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(server.stop().await);
}

#[tokio::test]
async fn pruned_cursors_are_out_of_range_and_future_ones_invalid() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    config.events.retention_max_count = 5;
    config.events.prune_interval_secs = 1;
    let server = TestServer::start_with(db, config).await;
    create_rules(server.rules().await, "r", 20).await;
    let mut lifecycle = server.lifecycle().await;
    let oldest = std::sync::atomic::AtomicU64::new(0);
    eventually(Duration::from_secs(10), "retention pruned the log", || {
        let (mut lifecycle, oldest) = (lifecycle.clone(), &oldest);
        async move {
            let page = lifecycle
                .list_events(ListEventsRequest::default())
                .await
                .unwrap()
                .into_inner();
            oldest.store(page.oldest_sequence, std::sync::atomic::Ordering::SeqCst);
            page.oldest_sequence > 1 && page.head_sequence - page.oldest_sequence < 5
        }
    })
    .await;
    let oldest = oldest.into_inner();

    let mut client = server.events().await;
    let request = SubscribeRequest {
        start: StartPosition::FromSequence as i32,
        from_sequence: 1,
        ..Default::default()
    };
    let err = client.subscribe(request).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message()
            .contains(&format!("oldest available sequence is {oldest}")),
        "{}",
        err.message()
    );
    // And as a google.rpc.ErrorInfo detail: resumable without parsing text.
    use tonic_types::StatusExt as _;
    let info = err.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("CURSOR_PRUNED", "lifecycle.valence")
    );
    assert_eq!(info.metadata["oldest_sequence"], oldest.to_string());

    let head = lifecycle
        .list_events(ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .head_sequence;
    let request = SubscribeRequest {
        from_sequence: head + 2,
        ..Default::default()
    };
    let err = client.subscribe(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("from_sequence"), "{}", err.message());

    // Resuming from the oldest retained one still works.
    let request = SubscribeRequest {
        from_sequence: oldest,
        ..Default::default()
    };
    let mut stream = subscribe(&mut client, request).await;
    assert_eq!(collect(&mut stream, 1).await[0].sequence, oldest);
    assert!(server.stop().await);
}

#[tokio::test]
async fn heartbeats_carry_the_head_and_filters_apply() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    create_rules(server.rules().await, "r", 3).await;
    let mut client = server.events().await;
    let request = SubscribeRequest {
        event_types: vec![EventType::RuleDeleted as i32],
        entity_ids: vec!["r-1".into()],
        heartbeat_interval_seconds: 1,
        ..Default::default()
    };
    let mut stream = subscribe(&mut client, request).await;
    let start = first_heartbeat(&mut stream).await;
    let mut rules = server.rules().await;
    for id in ["r-0", "r-1", "r-2"] {
        rules
            .delete_rule(DeleteRuleRequest { id: id.into() })
            .await
            .unwrap();
    }
    let events = collect(&mut stream, 1).await;
    assert_eq!(events[0].entity_id, "r-1");
    assert_eq!(events[0].event_type, EventType::RuleDeleted as i32);
    let later = first_heartbeat(&mut stream).await;
    let head = server
        .lifecycle()
        .await
        .list_events(ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .head_sequence;
    assert_eq!(
        later.head_sequence, head,
        "an idle stream still learns the head"
    );
    assert!(later.next_sequence > start.next_sequence);
    assert!(server.stop().await);
}

#[tokio::test]
async fn the_client_rides_through_cut_connections_without_gaps_or_duplicates() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let proxy = Proxy::start(server.grpc).await;
    let config = ClientConfig::new(format!("http://{}", proxy.addr));
    let client = LifecycleClient::connect(config).await.unwrap();
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Backoff::default()
    };
    let mut subscription = client.subscribe_resilient(only_rules_created(), backoff);
    // Wait for the first heartbeat: the subscription is open and positioned.
    loop {
        let item = tokio::time::timeout(WAIT, subscription.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(item, SubscriptionItem::Heartbeat(_)) {
            break;
        }
    }
    let mut received = Vec::new();
    for round in 0..3 {
        create_rules(server.rules().await, &format!("round{round}"), 10).await;
        // Cut every connection while events may still be in flight, and
        // refuse reconnects for a moment.
        proxy.refuse(true);
        proxy.cut();
        // The refusal lasting a while is the fault under test.
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.refuse(false);
    }
    while received.len() < 30 {
        let item = tokio::time::timeout(WAIT, subscription.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let SubscriptionItem::Event(e) = item {
            received.push(e);
        }
    }
    let ids: Vec<String> = received.iter().map(|e| e.entity_id.clone()).collect();
    let expected: Vec<String> = (0..3)
        .flat_map(|r| (0..10).map(move |i| format!("round{r}-{i}")))
        .collect();
    assert_eq!(ids, expected, "every event once, in order");
    assert!(server.stop().await);
}

#[tokio::test]
async fn a_second_server_process_on_postgres_delivers_events_written_by_the_first() {
    let Some(db) = TestDb::new(Db::Postgres).await else {
        return;
    };
    let url = db.url.clone();
    let config = test_config(&db.url);
    let first = TestServer::start_with(db, config).await;
    let second = ServerProcess::start(&url, &[]).await;
    let channel = Channel::from_shared(format!("http://{}", second.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = EventStreamServiceClient::new(channel);
    let mut stream = subscribe(&mut client, only_rules_created()).await;
    first_heartbeat(&mut stream).await;
    let started = std::time::Instant::now();
    create_rules(first.rules().await, "from-first", 5).await;
    let events = collect(&mut stream, 5).await;
    let ids: Vec<&str> = events.iter().map(|e| e.entity_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "from-first-0",
            "from-first-1",
            "from-first-2",
            "from-first-3",
            "from-first-4"
        ]
    );
    // LISTEN/NOTIFY wakes the other process; its fallback poll would take 500 ms.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(second.terminate().await, Some(0), "clean exit");
    assert!(first.stop().await);
}

#[tokio::test]
async fn the_stream_ends_cleanly_at_shutdown() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let mut client = server.events().await;
    let mut stream = subscribe(&mut client, SubscribeRequest::default()).await;
    first_heartbeat(&mut stream).await;
    let stop = tokio::spawn(server.stop());
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "stream ended");
    assert!(
        stop.await.unwrap(),
        "shutdown was clean with a subscriber open"
    );
}
