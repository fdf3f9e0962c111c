//! The gateway's live streams, `GET /events/stream` (Server-Sent Events)
//! and `GET /events/ws` (WebSocket), held to `EventStream.Subscribe`'s
//! contract: the ordering, resume, OUT_OF_RANGE and slow-reader cases run
//! over all three faces through one [`Tail`]; then what only the gateway
//! has: bearer tokens and stream tickets, WebSocket pings, curl.

use std::{collections::VecDeque, time::Duration};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest as _, Message as WsMessage},
    MaybeTlsStream, WebSocketStream,
};
use tonic::Streaming;
use valence_lifecycle_api::v1::{
    subscribe_response::Message, EventType, LifecycleEvent, ListEventsRequest, StartPosition,
    SubscribeRequest, SubscribeResponse,
};

use crate::{
    common::{
        authed, backend_tests, eventually, metric, test_config, tool, with_tokens, TestDb,
        TestServer, READER,
    },
    events::{create_big_rules, create_rules, only_rules_created},
};

const WAIT: Duration = Duration::from_secs(20);

/// The three ways to follow the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Face {
    Grpc,
    Sse,
    Ws,
}

const FACES: [Face; 3] = [Face::Grpc, Face::Sse, Face::Ws];

/// What a stream gave next, whichever face it came over.
#[derive(Debug)]
enum Got {
    Event(Box<LifecycleEvent>),
    Heartbeat {
        head: u64,
        next: u64,
    },
    /// The final error (REST error JSON: `code`, `oldest_sequence`, ...).
    Error(Value),
    End,
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

enum Inner {
    Grpc(Streaming<SubscribeResponse>),
    Sse(reqwest::Response, String),
    Ws(Box<Ws>),
    Done,
}

/// One open stream over any face.
struct Tail {
    face: Face,
    inner: Inner,
    pending: VecDeque<Got>,
    /// WebSocket pings seen.
    pings: usize,
}

/// `request` as the gateway's query string.
fn query(request: &SubscribeRequest) -> String {
    let mut q = Vec::new();
    let types: Vec<&str> = request
        .event_types
        .iter()
        .map(|t| EventType::try_from(*t).unwrap().as_str_name())
        .collect();
    if !types.is_empty() {
        q.push(format!("event_types={}", types.join(",")));
    }
    for id in &request.entity_ids {
        q.push(format!("entity_ids={id}"));
    }
    for ns in &request.namespaces {
        q.push(format!("namespaces={ns}"));
    }
    match StartPosition::try_from(request.start).unwrap() {
        StartPosition::Oldest => q.push("start=oldest".into()),
        StartPosition::Now => q.push("start=now".into()),
        StartPosition::FromSequence => q.push("start=from_sequence".into()),
        StartPosition::Unspecified => {}
    }
    if request.from_sequence > 0 {
        q.push(format!("from_sequence={}", request.from_sequence));
    }
    if request.heartbeat_interval_seconds > 0 {
        q.push(format!(
            "heartbeat_interval_seconds={}",
            request.heartbeat_interval_seconds
        ));
    }
    q.join("&")
}

fn sse_url(server: &TestServer, q: &str) -> String {
    format!("{}/events/stream?{q}", server.http())
}

fn ws_url(server: &TestServer, q: &str) -> String {
    format!("ws://{}/events/ws?{q}", server.api)
}

/// The JSON error a failed gRPC status stands for, as the gateway writes it.
fn status_json(status: &tonic::Status) -> Value {
    use tonic_types::StatusExt as _;
    let mut body = json!({ "code": format!("{:?}", status.code()), "error": status.message() });
    if let Some(oldest) = status
        .get_details_error_info()
        .and_then(|i| i.metadata.get("oldest_sequence").cloned())
    {
        body["oldest_sequence"] = json!(oldest.parse::<u64>().unwrap());
    }
    body
}

impl Tail {
    /// Opens `request` over `face` with `token` (as a bearer header) if given.
    async fn open(
        server: &TestServer,
        face: Face,
        request: SubscribeRequest,
        token: Option<&str>,
    ) -> Tail {
        let mut tail = Tail {
            face,
            inner: Inner::Done,
            pending: VecDeque::new(),
            pings: 0,
        };
        match face {
            Face::Grpc => {
                let mut client = server.events().await;
                let call = match token {
                    Some(t) => client.subscribe(authed(request, t)).await,
                    None => client.subscribe(request).await,
                };
                match call {
                    Ok(stream) => tail.inner = Inner::Grpc(stream.into_inner()),
                    // A start cursor refused: the same final error.
                    Err(status) => tail.pending.push_back(Got::Error(status_json(&status))),
                }
            }
            Face::Sse => {
                let response = sse_get(&sse_url(server, &query(&request)), token, None).await;
                assert_eq!(response.status(), 200, "SSE open");
                assert_eq!(
                    response.headers()["content-type"],
                    "text/event-stream",
                    "SSE content type"
                );
                tail.inner = Inner::Sse(response, String::new());
            }
            Face::Ws => {
                let ws = ws_connect(&ws_url(server, &query(&request)), token)
                    .await
                    .expect("websocket open");
                tail.inner = Inner::Ws(Box::new(ws));
            }
        }
        tail
    }

    /// Opens an SSE tail resuming as a browser does, with `Last-Event-ID`.
    async fn sse_resume(server: &TestServer, q: &str, last_event_id: u64) -> Tail {
        let response = sse_get(&sse_url(server, q), None, Some(last_event_id)).await;
        assert_eq!(response.status(), 200);
        Tail {
            face: Face::Sse,
            inner: Inner::Sse(response, String::new()),
            pending: VecDeque::new(),
            pings: 0,
        }
    }

    async fn next(&mut self) -> Got {
        if let Some(got) = self.pending.pop_front() {
            return got;
        }
        let got = tokio::time::timeout(WAIT, self.read())
            .await
            .unwrap_or_else(|_| panic!("{:?}: nothing within {WAIT:?}", self.face));
        if matches!(got, Got::End | Got::Error(_)) {
            if let Got::Error(_) = got {
                self.pending.push_back(Got::End);
            }
            if !matches!(self.inner, Inner::Ws(_)) {
                self.inner = Inner::Done;
            }
        }
        got
    }

    async fn read(&mut self) -> Got {
        match &mut self.inner {
            Inner::Done => Got::End,
            Inner::Grpc(stream) => match stream.message().await {
                Ok(Some(m)) => match m.message {
                    Some(Message::Event(e)) => Got::Event(Box::new(e)),
                    Some(Message::Heartbeat(h)) => Got::Heartbeat {
                        head: h.head_sequence,
                        next: h.next_sequence,
                    },
                    None => panic!("empty message"),
                },
                Ok(None) => Got::End,
                Err(status) => Got::Error(status_json(&status)),
            },
            Inner::Sse(response, buf) => loop {
                if let Some(i) = buf.find("\n\n") {
                    let block: String = buf.drain(..i + 2).collect();
                    if let Some(got) = sse_block(&block) {
                        return got;
                    }
                    continue;
                }
                match response.chunk().await {
                    Ok(Some(bytes)) => buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                    Ok(None) | Err(_) => return Got::End,
                }
            },
            Inner::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return Got::End,
                    Some(Ok(WsMessage::Ping(_))) => self.pings += 1,
                    Some(Ok(WsMessage::Text(text))) => {
                        let v: Value = serde_json::from_str(text.as_str()).unwrap();
                        match v["type"].as_str().unwrap() {
                            "event" => {
                                return Got::Event(
                                    serde_json::from_value(v["event"].clone()).unwrap(),
                                )
                            }
                            "heartbeat" => {
                                let h = &v["heartbeat"];
                                let n = |k: &str| h[k].as_str().unwrap_or("0").parse().unwrap();
                                return Got::Heartbeat {
                                    head: n("headSequence"),
                                    next: n("nextSequence"),
                                };
                            }
                            "error" => return Got::Error(v["error"].clone()),
                            other => panic!("unknown message type {other}"),
                        }
                    }
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// Sends a WebSocket text message.
    async fn ws_send(&mut self, message: Value) {
        let Inner::Ws(ws) = &mut self.inner else {
            panic!("not a websocket");
        };
        ws.send(WsMessage::text(message.to_string())).await.unwrap();
    }

    /// Reads until `n` events arrived (heartbeats skipped).
    async fn collect(&mut self, n: usize) -> Vec<LifecycleEvent> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            match self.next().await {
                Got::Event(e) => events.push(*e),
                Got::Heartbeat { .. } => {}
                other => panic!(
                    "{:?}: {other:?} after {} of {n} events",
                    self.face,
                    events.len()
                ),
            }
        }
        events
    }

    /// Reads until a heartbeat; returns (head, next).
    async fn heartbeat(&mut self) -> (u64, u64) {
        loop {
            match self.next().await {
                Got::Heartbeat { head, next } => return (head, next),
                Got::Event(_) => {}
                other => panic!("{:?}: {other:?} before a heartbeat", self.face),
            }
        }
    }
}

/// One SSE block as what it means; None for one that carries nothing
/// (the opening comment and `retry`).
fn sse_block(block: &str) -> Option<Got> {
    let (mut id, mut event, mut data, mut beat) = (None, None, String::new(), None);
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix(": heartbeat ") {
            let field = |k: &str| -> u64 {
                rest.split(' ')
                    .find_map(|kv| kv.strip_prefix(k))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            beat = Some(Got::Heartbeat {
                head: field("head="),
                next: field("next="),
            });
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse::<u64>().unwrap());
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    if let Some(Got::Heartbeat { next, .. }) = &beat {
        // The position moves on with every heartbeat.
        assert_eq!(id, (*next > 1).then(|| next - 1), "heartbeat id: {block}");
        return beat;
    }
    if data.is_empty() {
        return None;
    }
    match event.as_deref() {
        Some("error") => Some(Got::Error(serde_json::from_str(&data).unwrap())),
        None => {
            let e: LifecycleEvent = serde_json::from_str(&data).unwrap();
            assert_eq!(id, Some(e.sequence), "an event's id is its sequence");
            Some(Got::Event(Box::new(e)))
        }
        Some(other) => panic!("unexpected SSE event {other}"),
    }
}

async fn sse_get(url: &str, token: Option<&str>, last_event_id: Option<u64>) -> reqwest::Response {
    let mut get = reqwest::Client::new().get(url);
    if let Some(t) = token {
        get = get.bearer_auth(t);
    }
    if let Some(id) = last_event_id {
        get = get.header("last-event-id", id.to_string());
    }
    get.send().await.unwrap()
}

async fn ws_connect(url: &str, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    if let Some(t) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

fn sequences(events: &[LifecycleEvent]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

async fn head(server: &TestServer) -> u64 {
    server
        .lifecycle()
        .await
        .list_events(ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .head_sequence
}

backend_tests!(
    async fn every_face_delivers_the_same_events_in_the_same_order(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let mut tails = Vec::new();
        for face in FACES {
            let mut tail = Tail::open(&server, face, only_rules_created(), None).await;
            tail.heartbeat().await;
            tails.push(tail);
        }
        let a = tokio::spawn(create_rules(server.rules().await, "a", 25));
        let b = tokio::spawn(create_rules(server.rules().await, "b", 25));
        a.await.unwrap();
        b.await.unwrap();
        let mut seen = Vec::new();
        for tail in &mut tails {
            seen.push(sequences(&tail.collect(50).await));
        }
        assert!(
            seen[0].windows(2).all(|w| w[0] < w[1]),
            "{db:?}: strictly increasing {:?}",
            seen[0]
        );
        assert_eq!(seen[1], seen[0], "{db:?}: SSE as gRPC");
        assert_eq!(seen[2], seen[0], "{db:?}: WebSocket as gRPC");
        assert_eq!(
            metric(&server, "lifecycle_gateway_streams{").await,
            2.0,
            "{db:?}: the SSE and the WebSocket stream are open"
        );
        assert!(metric(&server, "lifecycle_event_subscribers").await >= 3.0);
        assert!(server.stop().await);
    }
);

backend_tests!(
    async fn every_face_resumes_exactly_the_missing_range(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        create_rules(server.rules().await, "before", 10).await;
        for face in FACES {
            let oldest = SubscribeRequest {
                start: StartPosition::Oldest as i32,
                ..Default::default()
            };
            let mut tail = Tail::open(&server, face, oldest.clone(), None).await;
            let got = tail.collect(5).await;
            drop(tail); // cut mid-stream
            let last = got.last().unwrap().sequence;
            create_rules(server.rules().await, &format!("during-{face:?}"), 5).await;
            let head = head(&server).await;
            let mut resumed = match face {
                Face::Grpc => {
                    let from = SubscribeRequest {
                        start: StartPosition::FromSequence as i32,
                        from_sequence: last + 1,
                        ..Default::default()
                    };
                    Tail::open(&server, face, from, None).await
                }
                // As a browser reconnects: the same URL and Last-Event-ID,
                // which wins over the URL's start.
                Face::Sse => Tail::sse_resume(&server, &query(&oldest), last).await,
                // A resume message on a stream opened at "now".
                Face::Ws => {
                    let mut tail =
                        Tail::open(&server, face, SubscribeRequest::default(), None).await;
                    tail.ws_send(json!({ "type": "resume", "fromSequence": last + 1 }))
                        .await;
                    tail
                }
            };
            let rest = resumed.collect((head - last) as usize).await;
            let expected: Vec<u64> = (last + 1..=head).collect();
            assert_eq!(
                sequences(&rest),
                expected,
                "{db:?} {face:?}: exactly the missing range"
            );
        }
        assert!(server.stop().await);
    }
);

backend_tests!(
    async fn a_filtered_sse_stream_resumes_from_its_last_heartbeat(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        // Matches nothing: only heartbeats move the position (their id).
        let q = "event_types=rule_deleted&heartbeat_interval_seconds=1";
        let mut tail = Tail::sse_resume(&server, q, 0).await;
        create_rules(server.rules().await, "r", 3).await;
        let head = head(&server).await;
        let next = loop {
            let (_, next) = tail.heartbeat().await;
            if next > head {
                break next;
            }
        };
        drop(tail);
        // Resumed after the heartbeat's id: nothing already passed is read again.
        let mut resumed = Tail::sse_resume(&server, q, next - 1).await;
        assert_eq!(resumed.heartbeat().await.1, next, "{db:?}");
        assert!(server.stop().await);
    }
);

backend_tests!(
    async fn a_pruned_cursor_ends_every_face_with_out_of_range(db: Db) {
        let Some(test_db) = TestDb::new(db).await else {
            return;
        };
        let mut config = test_config(&test_db.url);
        config.events.retention_max_count = 5;
        config.events.prune_interval_secs = 1;
        let server = TestServer::start_with(test_db, config).await;
        create_rules(server.rules().await, "r", 20).await;
        let oldest = std::sync::atomic::AtomicU64::new(0);
        eventually(Duration::from_secs(10), "retention pruned the log", || {
            let (server, oldest) = (&server, &oldest);
            async move {
                let page = server
                    .lifecycle()
                    .await
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
        for face in FACES {
            let from_one = SubscribeRequest {
                start: StartPosition::FromSequence as i32,
                from_sequence: 1,
                ..Default::default()
            };
            let mut tail = Tail::open(&server, face, from_one, None).await;
            let error = loop {
                match tail.next().await {
                    Got::Error(e) => break e,
                    Got::Heartbeat { .. } => {}
                    other => panic!("{face:?}: {other:?} before the error"),
                }
            };
            assert_eq!(error["code"], "OutOfRange", "{db:?} {face:?}: {error}");
            assert_eq!(error["oldest_sequence"], oldest, "{db:?} {face:?}: {error}");
            assert!(
                error["error"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("oldest available sequence is {oldest}")),
                "{error}"
            );
            assert!(
                matches!(tail.next().await, Got::End),
                "{face:?}: the error is final"
            );
        }
        assert!(
            metric(
                &server,
                "lifecycle_gateway_streams_ended_total{kind=\"sse\",reason=\"out_of_range\"}"
            )
            .await
                >= 1.0
        );
        assert!(server.stop().await);
    }
);

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_gateway_readers_catch_up_from_the_store(db: Db) {
        let Some(test_db) = TestDb::new(db).await else {
            return;
        };
        let mut config = test_config(&test_db.url);
        config.events.live_buffer = 16;
        config.events.subscriber_buffer = 4;
        config.events.catch_up_page = 32;
        let server = TestServer::start_with(test_db, config).await;
        let mut slow_sse = Tail::open(&server, Face::Sse, only_rules_created(), None).await;
        slow_sse.heartbeat().await;
        let mut slow_ws = Tail::open(&server, Face::Ws, only_rules_created(), None).await;
        slow_ws.heartbeat().await;
        let mut fast = Tail::open(&server, Face::Grpc, only_rules_created(), None).await;
        fast.heartbeat().await;
        // The slow ones read nothing while 300 events of 16 KiB go by: more
        // than the sockets, their own buffers and the live buffer hold.
        let writer = tokio::spawn(create_big_rules(server.rules().await, "r", 300, 16 * 1024));
        let fast_events = sequences(&fast.collect(300).await);
        writer.await.unwrap();
        assert_eq!(
            sequences(&slow_sse.collect(300).await),
            fast_events,
            "{db:?}: SSE got everything in order"
        );
        assert_eq!(
            sequences(&slow_ws.collect(300).await),
            fast_events,
            "{db:?}: WebSocket got everything in order"
        );
        let catch_ups = metric(&server, "lifecycle_subscriber_catch_ups_total").await;
        assert!(
            catch_ups >= 2.0,
            "{db:?}: both were served from the store ({catch_ups})"
        );
        assert_eq!(
            metric(&server, "lifecycle_gateway_streams_ended_total").await,
            0.0,
            "{db:?}: neither was dropped"
        );
        assert!(server.stop().await);
    }
);

/// The HTTP status of a refused WebSocket handshake.
fn handshake_status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed otherwise: {other}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

async fn ticket(server: &TestServer, token: Option<&str>) -> reqwest::Response {
    let mut post = reqwest::Client::new().post(format!("{}/events/tickets", server.http()));
    if let Some(t) = token {
        post = post.bearer_auth(t);
    }
    post.send().await.unwrap()
}

backend_tests!(
    async fn streams_need_a_reader_token_or_a_ticket(db: Db) {
        let Some(test_db) = TestDb::new(db).await else {
            return;
        };
        let mut config = with_tokens(test_config(&test_db.url));
        config.auth.stream_ticket_secs = 1;
        let server = TestServer::start_with(test_db, config).await;
        let q = "start=now";

        // No credentials, or the token in the URL: refused.
        for url in [
            sse_url(&server, q),
            sse_url(&server, &format!("token={READER}")),
        ] {
            let response = sse_get(&url, None, None).await;
            assert_eq!(response.status(), 401, "{db:?} {url}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "Unauthenticated");
        }
        assert_eq!(
            handshake_status(ws_connect(&ws_url(&server, q), None).await),
            401
        );
        assert_eq!(ticket(&server, None).await.status(), 401);

        // A reader token as a header.
        for face in FACES {
            let mut tail =
                Tail::open(&server, face, SubscribeRequest::default(), Some(READER)).await;
            tail.heartbeat().await;
        }
        // The WebSocket route asked without a handshake: 400 naming the
        // header, and where a plain HTTP client gets the same stream.
        let plain = sse_get(
            &format!("{}/events/ws?{q}", server.http()),
            Some(READER),
            None,
        )
        .await;
        assert_eq!(plain.status(), 400, "{db:?}");
        let body: Value = plain.json().await.unwrap();
        assert_eq!(body["field"], "connection", "{db:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("/events/stream"),
            "{body}"
        );

        // A ticket got with the token, in the URL.
        let response = ticket(&server, Some(READER)).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["role"], "reader");
        assert_eq!(body["expiresInSeconds"], 1);
        let t = body["ticket"].as_str().unwrap().to_string();
        assert!(!t.contains(READER), "the ticket is not the token");
        let with_ticket = format!("{q}&ticket={t}");
        let response = sse_get(&sse_url(&server, &with_ticket), None, None).await;
        assert_eq!(response.status(), 200, "{db:?}: SSE with a ticket");
        let mut sse = Tail {
            face: Face::Sse,
            inner: Inner::Sse(response, String::new()),
            pending: VecDeque::new(),
            pings: 0,
        };
        sse.heartbeat().await;
        ws_connect(&ws_url(&server, &with_ticket), None)
            .await
            .expect("WebSocket with a ticket");
        // A ticket opens streams only.
        let stats = reqwest::get(format!("{}/stats?ticket={t}", server.http()))
            .await
            .unwrap();
        assert_eq!(stats.status(), 401, "{db:?}: a ticket is no token");

        // Forged: a raised role, a changed signature, junk.
        let (_, rest) = t.split_once('.').unwrap();
        let mut flipped = t.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        for forged in [format!("admin.{rest}"), flipped, "reader.1.x.y".into()] {
            let url = sse_url(&server, &format!("ticket={forged}"));
            assert_eq!(
                sse_get(&url, None, None).await.status(),
                401,
                "{db:?}: {forged}"
            );
        }

        // Expired (auth.stream_ticket_secs = 1).
        let url = sse_url(&server, &with_ticket);
        eventually(Duration::from_secs(5), "the ticket expired", || async {
            let response = sse_get(&url, None, None).await;
            response.status() == 401 && response.text().await.unwrap().contains("expired")
        })
        .await;
        assert_eq!(
            handshake_status(ws_connect(&ws_url(&server, &with_ticket), None).await),
            401
        );
        for (outcome, at_least) in [
            ("issued", 1.0),
            ("accepted", 2.0),
            ("refused", 3.0),
            ("expired", 1.0),
        ] {
            let m = metric(
                &server,
                &format!("lifecycle_stream_tickets_total{{outcome=\"{outcome}\"}}"),
            )
            .await;
            assert!(m >= at_least, "{db:?}: {outcome} {m}");
        }
        assert!(server.stop().await);
    }
);

backend_tests!(
    async fn websocket_pings_find_a_dead_peer(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let beat = SubscribeRequest {
            heartbeat_interval_seconds: 1,
            ..Default::default()
        };
        // A live peer sees pings (and answers them while it reads).
        let mut live = Tail::open(&server, Face::Ws, beat.clone(), None).await;
        while live.pings < 2 {
            live.heartbeat().await;
        }
        // One that never reads answers no ping: closed after 3 intervals.
        let dead = Tail::open(&server, Face::Ws, beat, None).await;
        let timed_out = || async {
            metric(
                &server,
                "lifecycle_gateway_streams_ended_total{kind=\"websocket\",reason=\"ping_timeout\"}",
            )
            .await
                >= 1.0
        };
        // The live one keeps reading (so answering) meanwhile.
        let reading = async {
            loop {
                live.heartbeat().await;
            }
        };
        let closed = tokio::select! {
            closed = eventually(Duration::from_secs(10), "the dead peer closed", timed_out) => closed,
            _ = reading => unreachable!(),
        };
        assert!(
            closed >= Duration::from_secs(2),
            "{db:?}: not before its time ({closed:?})"
        );
        assert_eq!(metric(&server, "lifecycle_gateway_streams{").await, 1.0);
        drop(dead);
        // The live one goes on.
        live.heartbeat().await;
        assert!(server.stop().await);
    }
);

backend_tests!(
    async fn streams_end_cleanly_at_shutdown(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let mut sse = Tail::open(&server, Face::Sse, SubscribeRequest::default(), None).await;
        sse.heartbeat().await;
        let mut ws = Tail::open(&server, Face::Ws, SubscribeRequest::default(), None).await;
        ws.heartbeat().await;
        assert!(
            server.stop().await,
            "{db:?}: a clean shutdown with streams open"
        );
        // What shutdown itself logged (components stopping) may come first.
        for mut tail in [sse, ws] {
            loop {
                match tail.next().await {
                    Got::End => break,
                    Got::Event(_) | Got::Heartbeat { .. } => {}
                    Got::Error(e) => panic!("{db:?} {:?}: {e}", tail.face),
                }
            }
        }
    }
);

backend_tests!(
    async fn curl_follows_the_stream(db: Db) {
        let Some(curl) = tool("curl") else {
            return;
        };
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        create_rules(server.rules().await, "r", 2).await;
        let url = sse_url(&server, "start=oldest&event_types=rule_created");
        let out = tokio::process::Command::new(curl)
            .args(["-sN", "--max-time", "2", &url])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let events: Vec<&str> = text.lines().filter(|l| l.starts_with("data: ")).collect();
        assert_eq!(events.len(), 2, "{db:?}: {text}");
        assert!(
            events[0].contains(r#""eventType":"EVENT_TYPE_RULE_CREATED""#),
            "{text}"
        );
        assert!(text.contains("\n: heartbeat head="), "{text}");
        assert!(server.stop().await);
    }
);

/// The first `n` SSE `data:` payloads of `url`, as sent.
async fn sse_payloads(url: &str, n: usize) -> Vec<String> {
    let mut response = sse_get(url, None, None).await;
    let mut text = String::new();
    loop {
        let payloads: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect();
        if payloads.len() >= n && text.ends_with("\n\n") {
            return payloads.into_iter().take(n).collect();
        }
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("the stream ended early");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

backend_tests!(
    // Python's reference parser reads each SSE and WebSocket payload as the
    // LifecycleEvent gRPC delivered.
    async fn stream_payloads_are_the_proto3_json_of_the_grpc_events(db: Db) {
        use prost::Message as _;

        use crate::python::{parse_with_python, python_grpc_available, Proto3Case};
        if !python_grpc_available().await {
            return;
        }
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        create_rules(server.rules().await, "r", 3).await;
        let oldest_rules = SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..only_rules_created()
        };
        let mut grpc = Tail::open(&server, Face::Grpc, oldest_rules.clone(), None).await;
        let events = grpc.collect(3).await;
        let q = query(&oldest_rules);
        let sse = sse_payloads(&sse_url(&server, &q), 3).await;
        let mut ws = ws_connect(&ws_url(&server, &q), None).await.unwrap();
        let mut from_ws = Vec::new();
        while from_ws.len() < 3 {
            let message = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
            if let Some(Ok(WsMessage::Text(text))) = message {
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["type"] == "event" {
                    from_ws.push(v["event"].to_string());
                }
            }
        }
        let mut cases = Vec::new();
        for (i, event) in events.iter().enumerate() {
            for json in [&sse[i], &from_ws[i]] {
                cases.push(Proto3Case {
                    message: "valence.lifecycle.v1.LifecycleEvent",
                    json: json.clone(),
                    grpc: Some(event.encode_to_vec()),
                });
            }
        }
        parse_with_python(&cases).await;
        assert!(server.stop().await, "{db:?}");
    }
);
