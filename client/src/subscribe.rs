//! A subscription to the event log that survives disconnects.
//!
//! [`LifecycleClient::subscribe_resilient`] wraps `EventStreamService.Subscribe`
//! and hides broken connections from the caller:
//!
//! * It remembers where to resume: after the last event it handed out, or at
//!   the `next_sequence` of the latest heartbeat when that is further (the
//!   server sends one as soon as a subscription starts, so even a
//!   subscription that has seen no matching event yet has a position).
//! * When the stream fails with a retryable error (UNAVAILABLE, UNKNOWN,
//!   INTERNAL, CANCELLED, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED; a
//!   broken connection surfaces as one of these), ends although a
//!   subscription never ends on its own, or stays silent for three heartbeat
//!   intervals, it waits according to [`Backoff`] and subscribes again with
//!   [`resume_request`]: `START_POSITION_FROM_SEQUENCE` from that position,
//!   which the server answers with exactly the events that were missed.
//! * Any other error (OUT_OF_RANGE when the cursor has been pruned from the
//!   log, INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, ...) is
//!   yielded once and ends the stream: retrying cannot fix it, and the
//!   caller must know that events may have been lost.
//! * Events whose sequence is not above the last delivered one are dropped,
//!   so the caller never sees a duplicate even if a server replays one.
//!
//! Only when the very first connection fails before its first heartbeat is
//! there no position; then the original request is sent again.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use rand::Rng;
use tonic::{Code, Streaming};
use tracing::{debug, warn};
use valence_lifecycle_api::v1::{
    self, event_stream_service_client::EventStreamServiceClient, subscribe_response::Message,
    StartPosition,
};

use crate::{AuthedChannel, ClientError, LifecycleClient};

/// Heartbeat interval the server uses when the request leaves it at 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Heartbeat intervals of silence after which a connection is presumed dead.
const MISSED_HEARTBEATS: u32 = 3;

/// Exponential backoff with jitter between reconnection attempts.
///
/// The n-th consecutive failure (from 0) waits a random time between half
/// and all of `min(initial * multiplier^n, max)`. The randomness keeps many
/// subscribers of a restarting server from reconnecting in lockstep; the
/// lower bound keeps the growth. The count resets once a reconnected stream
/// delivers a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Base delay before the first retry.
    pub initial: Duration,
    /// Upper bound of the base delay.
    pub max: Duration,
    /// Growth factor per consecutive failure.
    pub multiplier: f64,
    /// Consecutive failed attempts after which the stream ends with the last
    /// error; `None` retries forever.
    pub max_retries: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            max_retries: None,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (from 0), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        // Clamp the exponent: beyond a few dozen doublings every delay is `max`.
        let factor = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before retry number `attempt`, with jitter: uniformly
    /// between half and all of [`Backoff::base_delay`].
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        base.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// One message of a subscription.
// Nearly every item is an event, so boxing it to shrink the rare heartbeat
// would cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionItem {
    /// The next matching event, in sequence order.
    Event(v1::LifecycleEvent),
    /// The server is alive; carries the log's head sequence.
    Heartbeat(v1::Heartbeat),
}

/// The request that continues `original` after `last_delivered`: from the
/// next sequence when an event was delivered, otherwise `original` itself.
/// Filters and heartbeat interval are kept.
pub fn resume_request(
    original: &v1::SubscribeRequest,
    last_delivered: Option<u64>,
) -> v1::SubscribeRequest {
    let mut request = original.clone();
    if let Some(last) = last_delivered {
        request.start = StartPosition::FromSequence as i32;
        request.from_sequence = last.saturating_add(1);
    }
    request
}

/// A resilient event subscription: a [`Stream`] of [`SubscriptionItem`]s
/// that reconnects and resumes on its own (see the module documentation).
/// It ends only after yielding an error that retrying cannot fix.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<SubscriptionItem, ClientError>> + Send>>,
    last: Arc<AtomicU64>,
}

impl Subscription {
    /// Sequence of the last event handed to the caller; a cursor to persist
    /// and resume from (+ 1) in a later process. Sequences start at 1.
    pub fn last_delivered(&self) -> Option<u64> {
        match self.last.load(Ordering::Acquire) {
            0 => None,
            sequence => Some(sequence),
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("last_delivered", &self.last_delivered())
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionItem, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl LifecycleClient {
    /// Subscribes to the event log and keeps the subscription going across
    /// disconnects, resuming from the last delivered sequence so the caller
    /// sees every matching event once, in order. See the [module
    /// documentation](crate::subscribe) for what is retried and what ends it.
    pub fn subscribe_resilient(
        &self,
        request: v1::SubscribeRequest,
        backoff: Backoff,
    ) -> Subscription {
        let last = Arc::new(AtomicU64::new(0));
        let resumer = Resumer::new(self.events(), request, backoff, last.clone());
        let inner = futures::stream::unfold(resumer, |mut resumer| async move {
            let item = resumer.next().await?;
            Some((item, resumer))
        });
        Subscription {
            inner: Box::pin(inner),
            last,
        }
    }
}

/// The state behind a [`Subscription`].
struct Resumer {
    stub: EventStreamServiceClient<AuthedChannel>,
    original: v1::SubscribeRequest,
    backoff: Backoff,
    /// Last sequence handed out; drops replays.
    last: Option<u64>,
    /// Next sequence to resume from: after the last delivered event, or a
    /// heartbeat's `next_sequence` when it is further (events skipped by
    /// the filters, or none delivered yet).
    resume_from: Option<u64>,
    /// `last`, readable from [`Subscription::last_delivered`].
    shared_last: Arc<AtomicU64>,
    /// The open stream; `None` between a failure and the next attempt.
    stream: Option<Streaming<v1::SubscribeResponse>>,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    /// Silence after which the connection is presumed dead.
    idle_timeout: Duration,
    finished: bool,
}

impl Resumer {
    fn new(
        stub: EventStreamServiceClient<AuthedChannel>,
        original: v1::SubscribeRequest,
        backoff: Backoff,
        shared_last: Arc<AtomicU64>,
    ) -> Self {
        let heartbeat = match original.heartbeat_interval_seconds {
            0 => DEFAULT_HEARTBEAT,
            secs => Duration::from_secs(secs.into()),
        };
        Self {
            stub,
            original,
            backoff,
            last: None,
            resume_from: None,
            shared_last,
            stream: None,
            failures: 0,
            idle_timeout: heartbeat * MISSED_HEARTBEATS,
            finished: false,
        }
    }

    /// The next item for the caller; `None` once a fatal error was yielded.
    async fn next(&mut self) -> Option<Result<SubscriptionItem, ClientError>> {
        while !self.finished {
            let error = match self.step().await {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => continue,
                Err(error) => error,
            };
            if let Err(fatal) = self.recover(error).await {
                self.finished = true;
                return Some(Err(fatal));
            }
        }
        None
    }

    /// Opens the stream when there is none, otherwise reads one message.
    /// `Ok(None)` means there is nothing for the caller yet.
    async fn step(&mut self) -> Result<Option<SubscriptionItem>, ClientError> {
        // Both the call and each read are bounded: a server that accepts the
        // connection but never answers is as dead as one that refuses it.
        let idle = self.idle_timeout;
        let Some(stream) = self.stream.as_mut() else {
            let request = resume_request(&self.original, self.resume_from.map(|next| next - 1));
            debug!(
                start = request.start,
                from_sequence = request.from_sequence,
                "subscribing"
            );
            let call = tokio::time::timeout(idle, self.stub.subscribe(request)).await;
            let response = call.map_err(|_| silence_error(idle))??;
            self.stream = Some(response.into_inner());
            return Ok(None);
        };
        let received = tokio::time::timeout(idle, stream.message()).await;
        let Some(message) = received.map_err(|_| silence_error(idle))?? else {
            return Err(ClientError::Unavailable(
                "the server ended the subscription".into(),
            ));
        };
        // A message came through, so the connection works again.
        self.failures = 0;
        Ok(self.accept(message))
    }

    /// Turns a message into an item, dropping replayed events.
    fn accept(&mut self, message: v1::SubscribeResponse) -> Option<SubscriptionItem> {
        match message.message? {
            Message::Heartbeat(heartbeat) => {
                if heartbeat.next_sequence > self.resume_from.unwrap_or(0) {
                    self.resume_from = Some(heartbeat.next_sequence);
                }
                Some(SubscriptionItem::Heartbeat(heartbeat))
            }
            Message::Event(event) => {
                if self.last.is_some_and(|last| event.sequence <= last) {
                    debug!(sequence = event.sequence, "dropping duplicate event");
                    return None;
                }
                self.last = Some(event.sequence);
                self.resume_from = Some(event.sequence + 1);
                self.shared_last.store(event.sequence, Ordering::Release);
                Some(SubscriptionItem::Event(event))
            }
        }
    }

    /// Drops the broken stream and waits before the next attempt. Returns
    /// the error back when it is not retryable or retries are used up.
    async fn recover(&mut self, error: ClientError) -> Result<(), ClientError> {
        self.stream = None;
        if !error.is_retryable() {
            return Err(error);
        }
        if self
            .backoff
            .max_retries
            .is_some_and(|max| self.failures >= max)
        {
            return Err(error);
        }
        let delay = self.backoff.delay(self.failures);
        self.failures += 1;
        warn!(
            code = error.code_name(),
            error = %error,
            attempt = self.failures,
            delay_ms = delay.as_millis() as u64,
            resume_from = self.resume_from,
            "subscription interrupted, reconnecting"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// The error standing for a connection that went silent.
fn silence_error(idle: Duration) -> ClientError {
    ClientError::Other {
        code: Code::DeadlineExceeded,
        message: format!("no event or heartbeat for {} s", idle.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Mutex};

    use futures::StreamExt;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{transport::Server, Request, Response, Status};
    use valence_lifecycle_api::v1::event_stream_service_server::{
        EventStreamService, EventStreamServiceServer,
    };

    use super::*;
    use crate::ClientConfig;

    #[test]
    fn backoff_doubles_from_initial_and_caps_at_max() {
        let backoff = Backoff::default();
        let delays: Vec<_> = (0..8).map(|n| backoff.base_delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff.base_delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let backoff = Backoff::default();
        for attempt in 0..10 {
            let base = backoff.base_delay(attempt);
            for _ in 0..50 {
                let delay = backoff.delay(attempt);
                assert!(delay >= base / 2 && delay <= base, "{delay:?} vs {base:?}");
            }
        }
    }

    #[test]
    fn resume_continues_after_the_last_delivered_event() {
        let original = v1::SubscribeRequest {
            event_types: vec![v1::EventType::SessionCreated as i32],
            entity_ids: vec!["s1".into()],
            namespaces: vec!["ns".into()],
            start: StartPosition::Now as i32,
            from_sequence: 0,
            heartbeat_interval_seconds: 7,
            shard: "alpha".into(),
        };
        let resumed = resume_request(&original, Some(41));
        assert_eq!(resumed.shard, "alpha");
        assert_eq!(resumed.start, StartPosition::FromSequence as i32);
        assert_eq!(resumed.from_sequence, 42);
        assert_eq!(resumed.event_types, original.event_types);
        assert_eq!(resumed.entity_ids, original.entity_ids);
        assert_eq!(resumed.namespaces, original.namespaces);
        assert_eq!(resumed.heartbeat_interval_seconds, 7);
    }

    #[test]
    fn resume_without_delivered_event_resends_the_original() {
        let original = v1::SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        };
        assert_eq!(resume_request(&original, None), original);
    }

    /// What the fake server does with one Subscribe call.
    enum Script {
        /// Answer the call itself with this error.
        Refuse(Status),
        /// Send these, then end the stream (or hang when `hang`).
        Send(Vec<Result<v1::SubscribeResponse, Status>>, bool),
        /// Send these with a pause before each, then hang.
        Slow(Duration, Vec<Result<v1::SubscribeResponse, Status>>),
    }

    /// An EventStreamService that plays one script per call and records
    /// the requests.
    #[derive(Default)]
    struct FakeStream {
        scripts: Mutex<VecDeque<Script>>,
        requests: Arc<Mutex<Vec<v1::SubscribeRequest>>>,
    }

    type ResponseStream = Pin<Box<dyn Stream<Item = Result<v1::SubscribeResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl EventStreamService for FakeStream {
        type SubscribeStream = ResponseStream;

        async fn subscribe(
            &self,
            request: Request<v1::SubscribeRequest>,
        ) -> Result<Response<ResponseStream>, Status> {
            self.requests.lock().unwrap().push(request.into_inner());
            let script = self.scripts.lock().unwrap().pop_front();
            let (items, hang) = match script {
                Some(Script::Refuse(status)) => return Err(status),
                Some(Script::Send(items, hang)) => (items, hang),
                Some(Script::Slow(pause, items)) => {
                    let slow = futures::stream::iter(items).then(move |item| async move {
                        tokio::time::sleep(pause).await;
                        item
                    });
                    let stream: ResponseStream = Box::pin(slow.chain(futures::stream::pending()));
                    return Ok(Response::new(stream));
                }
                None => return Err(Status::unavailable("script exhausted")),
            };
            let stream = futures::stream::iter(items);
            let stream: ResponseStream = if hang {
                Box::pin(stream.chain(futures::stream::pending()))
            } else {
                Box::pin(stream)
            };
            Ok(Response::new(stream))
        }
    }

    fn event(sequence: u64) -> Result<v1::SubscribeResponse, Status> {
        Ok(v1::SubscribeResponse {
            message: Some(Message::Event(v1::LifecycleEvent {
                sequence,
                ..Default::default()
            })),
        })
    }

    fn heartbeat(head_sequence: u64) -> Result<v1::SubscribeResponse, Status> {
        Ok(v1::SubscribeResponse {
            message: Some(Message::Heartbeat(v1::Heartbeat {
                head_sequence,
                next_sequence: 0,
                time: None,
            })),
        })
    }

    fn fast_backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            ..Backoff::default()
        }
    }

    /// Starts the fake on a loopback port; returns a client and the request log.
    async fn serve(
        scripts: Vec<Script>,
    ) -> (LifecycleClient, Arc<Mutex<Vec<v1::SubscribeRequest>>>) {
        serve_with(scripts, ClientConfig::default()).await
    }

    /// [`serve`] with a client built from `config` (its endpoint is replaced).
    async fn serve_with(
        scripts: Vec<Script>,
        config: ClientConfig,
    ) -> (LifecycleClient, Arc<Mutex<Vec<v1::SubscribeRequest>>>) {
        let fake = FakeStream {
            scripts: Mutex::new(scripts.into()),
            ..FakeStream::default()
        };
        let requests = fake.requests.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(EventStreamServiceServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let config = ClientConfig {
            endpoint: address.to_string(),
            ..config
        };
        let client = LifecycleClient::connect(config).await.unwrap();
        (client, requests)
    }

    fn sequence_of(item: Result<SubscriptionItem, ClientError>) -> u64 {
        match item.unwrap() {
            SubscriptionItem::Event(event) => event.sequence,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reconnects_and_resumes_without_gaps_or_duplicates() {
        let scripts = vec![
            Script::Send(
                vec![
                    event(1),
                    event(2),
                    event(3),
                    Err(Status::unavailable("cut")),
                ],
                false,
            ),
            // A server replaying 3 must not produce a duplicate; a clean end
            // is a disconnect too.
            Script::Send(vec![event(3), event(4)], false),
            Script::Refuse(Status::internal("restarting")),
            Script::Send(vec![event(5)], true),
        ];
        let (client, requests) = serve(scripts).await;
        let original = v1::SubscribeRequest {
            start: StartPosition::Oldest as i32,
            ..Default::default()
        };
        let mut subscription = client.subscribe_resilient(original.clone(), fast_backoff());
        let mut sequences = Vec::new();
        for _ in 0..5 {
            sequences.push(sequence_of(subscription.next().await.unwrap()));
        }
        assert_eq!(sequences, [1, 2, 3, 4, 5]);
        assert_eq!(subscription.last_delivered(), Some(5));

        let requests = requests.lock().unwrap().clone();
        let starts: Vec<_> = requests
            .iter()
            .map(|r| (r.start, r.from_sequence))
            .collect();
        let from = StartPosition::FromSequence as i32;
        let oldest = StartPosition::Oldest as i32;
        assert_eq!(starts, [(oldest, 0), (from, 4), (from, 5), (from, 5)]);
    }

    #[tokio::test]
    async fn heartbeats_pass_through_and_reconnect_before_any_event_resends_original() {
        let scripts = vec![
            Script::Send(vec![heartbeat(9), Err(Status::unknown("reset"))], false),
            Script::Send(vec![event(10)], true),
        ];
        let (client, requests) = serve(scripts).await;
        let original = v1::SubscribeRequest {
            start: StartPosition::Now as i32,
            entity_ids: vec!["e".into()],
            ..Default::default()
        };
        let mut subscription = client.subscribe_resilient(original.clone(), fast_backoff());
        let first = subscription.next().await.unwrap().unwrap();
        assert!(matches!(first, SubscriptionItem::Heartbeat(h) if h.head_sequence == 9));
        assert_eq!(sequence_of(subscription.next().await.unwrap()), 10);
        assert_eq!(*requests.lock().unwrap(), [original.clone(), original]);
    }

    #[tokio::test]
    async fn non_retryable_error_ends_the_stream_with_it() {
        let scripts = vec![
            Script::Send(vec![event(7), Err(Status::unavailable("cut"))], false),
            Script::Refuse(Status::out_of_range("oldest available sequence is 20")),
        ];
        let (client, requests) = serve(scripts).await;
        let request = v1::SubscribeRequest {
            start: StartPosition::FromSequence as i32,
            from_sequence: 7,
            ..Default::default()
        };
        let mut subscription = client.subscribe_resilient(request, fast_backoff());
        assert_eq!(sequence_of(subscription.next().await.unwrap()), 7);
        let error = subscription.next().await.unwrap().unwrap_err();
        assert!(
            matches!(error, ClientError::OutOfRange(ref m) if m.contains("20")),
            "{error:?}"
        );
        assert!(subscription.next().await.is_none());
        assert_eq!(requests.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let refusals = (0..3)
            .map(|_| Script::Refuse(Status::unavailable("down")))
            .collect();
        let (client, requests) = serve(refusals).await;
        let backoff = Backoff {
            max_retries: Some(2),
            ..fast_backoff()
        };
        let mut subscription = client.subscribe_resilient(v1::SubscribeRequest::default(), backoff);
        let error = subscription.next().await.unwrap().unwrap_err();
        assert_eq!(error.code(), Code::Unavailable);
        assert!(subscription.next().await.is_none());
        assert_eq!(requests.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn the_request_timeout_does_not_cut_the_stream() {
        let pause = Duration::from_millis(300);
        let scripts = vec![Script::Slow(pause, vec![event(1), event(2)])];
        let config = ClientConfig {
            request_timeout: Duration::from_millis(100),
            ..ClientConfig::default()
        };
        let (client, requests) = serve_with(scripts, config).await;
        let mut subscription = client.subscribe_resilient(Default::default(), fast_backoff());
        assert_eq!(sequence_of(subscription.next().await.unwrap()), 1);
        assert_eq!(sequence_of(subscription.next().await.unwrap()), 2);
        // Still the first call: nothing timed out and reconnected.
        assert_eq!(requests.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_silent_connection_is_replaced() {
        let scripts = vec![
            Script::Send(vec![event(1)], true),
            Script::Send(vec![event(2)], true),
        ];
        let (client, requests) = serve(scripts).await;
        let request = v1::SubscribeRequest {
            heartbeat_interval_seconds: 1,
            ..Default::default()
        };
        let mut subscription = client.subscribe_resilient(request, fast_backoff());
        assert_eq!(sequence_of(subscription.next().await.unwrap()), 1);
        // Three silent heartbeat intervals later the first stream is dropped.
        assert_eq!(sequence_of(subscription.next().await.unwrap()), 2);
        assert_eq!(requests.lock().unwrap()[1].from_sequence, 2);
    }
}
