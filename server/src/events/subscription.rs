//! One subscription: validates the start position, then delivers matching
//! events in sequence order with no gaps or duplicates.
//!
//! Delivery runs in two modes. Live: events come from the shared broadcast
//! buffer. Catch-up: events come from the store, a page at a time. A
//! subscriber whose client reads slowly blocks only its own task (its
//! outgoing channel is bounded); meanwhile the broadcast buffer moves on,
//! the receiver reports `Lagged`, and the subscriber switches to catch-up
//! until it reaches the end of the log. The writer and other subscribers
//! never wait for it, and memory per subscriber stays at one page.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::{
    subscribe_response, Heartbeat, LifecycleEvent, StartPosition, SubscribeRequest,
    SubscribeResponse,
};

use super::EventHub;
use crate::{
    error::{ApiError, ApiResult},
    store::{now_ms, timestamp},
};

/// Heartbeat interval when the request gives none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// What a subscriber wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    event_types: HashSet<i32>,
    entity_ids: HashSet<String>,
    namespaces: HashSet<String>,
    /// The program id of the one shard wanted (resolved from a name by the
    /// service layer); None: every shard, and events of none.
    shard: Option<String>,
}

impl Filter {
    /// Whether the event passes every filter given.
    pub(crate) fn matches(&self, event: &LifecycleEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && (self.entity_ids.is_empty()
                || self.entity_ids.contains(&event.entity_id)
                || event
                    .entity_ids
                    .iter()
                    .any(|id| self.entity_ids.contains(id)))
            && (self.namespaces.is_empty() || self.namespaces.contains(&event.namespace))
            && self.shard.as_ref().is_none_or(|s| *s == event.shard)
    }
}

/// A validated subscription, ready to run.
pub(crate) struct Subscription {
    hub: Arc<EventHub>,
    filter: Filter,
    /// Next sequence to deliver (every sequence below it has been seen).
    next: u64,
    heartbeat: Duration,
    live: broadcast::Receiver<Arc<LifecycleEvent>>,
    _slot: OwnedSemaphorePermit,
}

/// Item sent to the gRPC stream.
pub(crate) type StreamItem = Result<SubscribeResponse, tonic::Status>;

impl EventHub {
    /// Validates `request` and opens a subscription positioned at its start.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        request: &SubscribeRequest,
    ) -> ApiResult<Subscription> {
        let slot = self
            .subscriber_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::ResourceExhausted(format!(
                    "the server has {} subscriptions open, its limit; retry later",
                    self.config.max_subscribers
                ))
            })?;
        let filter = parse_filter(request)?;
        let heartbeat = match request.heartbeat_interval_seconds {
            0 => DEFAULT_HEARTBEAT,
            s if s > 3600 => {
                return Err(ApiError::invalid(
                    "heartbeat_interval_seconds",
                    format!("{s} is above 3600"),
                ))
            }
            s => Duration::from_secs(s as u64),
        };
        // Subscribe to the live buffer before reading positions, so nothing
        // published in between can be missed (duplicates are skipped).
        let live = self.live.subscribe();
        let next = self.start_sequence(request).await?;
        Ok(Subscription {
            hub: self.clone(),
            filter,
            next,
            heartbeat,
            live,
            _slot: slot,
        })
    }

    async fn start_sequence(&self, request: &SubscribeRequest) -> ApiResult<u64> {
        let start = StartPosition::try_from(request.start).map_err(|_| {
            ApiError::invalid("start", format!("{} is not a StartPosition", request.start))
        })?;
        let start = match start {
            StartPosition::Unspecified if request.from_sequence > 0 => StartPosition::FromSequence,
            StartPosition::Unspecified => StartPosition::Now,
            other => other,
        };
        let head = self.store.head_sequence().await?;
        match start {
            StartPosition::Now | StartPosition::Unspecified => Ok(head + 1),
            StartPosition::Oldest => Ok(self.store.oldest_sequence().await?.max(1)),
            StartPosition::FromSequence => self.check_cursor(request.from_sequence, head).await,
        }
    }

    async fn check_cursor(&self, from: u64, head: u64) -> ApiResult<u64> {
        if from == 0 {
            return Err(ApiError::invalid(
                "from_sequence",
                "must be at least 1 (sequences start at 1)",
            ));
        }
        if from > head + 1 {
            return Err(ApiError::invalid(
                "from_sequence",
                format!(
                    "{from} is beyond the head of the log ({head}); the next event will be {}",
                    head + 1
                ),
            ));
        }
        let oldest = self.store.oldest_sequence().await?;
        if oldest > 0 && from < oldest {
            return Err(ApiError::Pruned {
                message: format!(
                    "from_sequence {from} is older than the retained log; the oldest available sequence is {oldest}"
                ),
                oldest,
            });
        }
        Ok(from)
    }
}

fn parse_filter(request: &SubscribeRequest) -> ApiResult<Filter> {
    use valence_lifecycle_api::v1::EventType;
    for (i, t) in request.event_types.iter().enumerate() {
        if EventType::try_from(*t).is_err() || *t == 0 {
            return Err(ApiError::invalid(
                format!("event_types[{i}]"),
                format!("{t} is not an event type"),
            ));
        }
    }
    for (i, id) in request.entity_ids.iter().enumerate() {
        crate::validate::text(&format!("entity_ids[{i}]"), id)?;
    }
    for (i, namespace) in request.namespaces.iter().enumerate() {
        crate::validate::text(&format!("namespaces[{i}]"), namespace)?;
    }
    crate::validate::text("shard", &request.shard)?;
    Ok(Filter {
        event_types: request.event_types.iter().copied().collect(),
        entity_ids: request.entity_ids.iter().cloned().collect(),
        namespaces: request.namespaces.iter().cloned().collect(),
        shard: (!request.shard.is_empty()).then(|| request.shard.clone()),
    })
}

/// Why delivery stopped.
enum Stop {
    /// The client went away or the server is shutting down.
    Closed,
    /// The subscription cannot continue; tell the client.
    Failed(tonic::Status),
}

impl Subscription {
    /// Delivers into `out` until the client disconnects or `cancel` fires.
    pub(crate) async fn run(mut self, out: mpsc::Sender<StreamItem>, cancel: CancellationToken) {
        let metrics = self.hub.metrics.clone();
        metrics.event_subscribers.inc();
        if let Stop::Failed(status) = self.deliver(&out, &cancel).await {
            let _ = out.send(Err(status)).await;
        }
        metrics.event_subscribers.dec();
    }

    async fn deliver(
        &mut self,
        out: &mpsc::Sender<StreamItem>,
        cancel: &CancellationToken,
    ) -> Stop {
        // The first heartbeat tells the client its position before any event
        // matches, so even a subscription that saw nothing can resume exactly.
        if out.send(Ok(self.heartbeat_message())).await.is_err() {
            return Stop::Closed;
        }
        if let Err(stop) = self.catch_up(out).await {
            return stop;
        }
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        loop {
            let step = tokio::select! {
                _ = cancel.cancelled() => Err(Stop::Closed),
                _ = out.closed() => Err(Stop::Closed),
                _ = heartbeat.tick() => self.send_heartbeat(out).await,
                received = self.live.recv() => self.on_live(received, out).await,
            };
            if let Err(stop) = step {
                return stop;
            }
        }
    }

    async fn on_live(
        &mut self,
        received: Result<Arc<LifecycleEvent>, broadcast::error::RecvError>,
        out: &mpsc::Sender<StreamItem>,
    ) -> Result<(), Stop> {
        match received {
            Ok(event) if event.sequence < self.next => Ok(()),
            // A hole before this event: a rolled-back append, or events this
            // receiver never saw. The store knows which; let it fill the gap.
            Ok(event) if event.sequence > self.next => self.catch_up(out).await,
            Ok(event) => self.send_event(&event, out).await,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    next = self.next,
                    "subscriber fell behind; serving from the store"
                );
                self.hub.metrics.subscriber_catch_ups.inc();
                self.live = self.live.resubscribe();
                self.catch_up(out).await
            }
            Err(broadcast::error::RecvError::Closed) => Err(Stop::Closed),
        }
    }

    /// Reads from the store until the end of the log.
    async fn catch_up(&mut self, out: &mpsc::Sender<StreamItem>) -> Result<(), Stop> {
        let page = self.hub.config.catch_up_page;
        loop {
            let events = self
                .hub
                .store
                .events_after(self.next.saturating_sub(1), page)
                .await
                .map_err(|e| Stop::Failed(ApiError::from(e).into()))?;
            if let Some(first) = events.first() {
                self.check_not_pruned(first.sequence).await?;
            }
            for event in &events {
                self.send_event(event, out).await?;
            }
            if events.len() < page as usize {
                return Ok(());
            }
        }
    }

    /// A jump in sequence is a hole unless retention removed what the
    /// subscriber still needed; then it must hear so rather than skip.
    async fn check_not_pruned(&self, first: u64) -> Result<(), Stop> {
        if first <= self.next {
            return Ok(());
        }
        let oldest = self
            .hub
            .store
            .oldest_sequence()
            .await
            .map_err(|e| Stop::Failed(ApiError::from(e).into()))?;
        if oldest > self.next {
            let status = ApiError::Pruned {
                message: format!(
                    "events from sequence {} were pruned before delivery; the oldest available sequence is {oldest}",
                    self.next
                ),
                oldest,
            };
            return Err(Stop::Failed(status.into()));
        }
        Ok(())
    }

    async fn send_event(
        &mut self,
        event: &LifecycleEvent,
        out: &mpsc::Sender<StreamItem>,
    ) -> Result<(), Stop> {
        self.next = event.sequence + 1;
        if !self.filter.matches(event) {
            return Ok(());
        }
        let lag = self.hub.head().saturating_sub(event.sequence);
        let message = SubscribeResponse {
            message: Some(subscribe_response::Message::Event(event.clone())),
        };
        out.send(Ok(message)).await.map_err(|_| Stop::Closed)?;
        self.hub.metrics.events_delivered.inc();
        self.hub.metrics.subscriber_lag.observe(lag as f64);
        Ok(())
    }

    fn heartbeat_message(&self) -> SubscribeResponse {
        SubscribeResponse {
            message: Some(subscribe_response::Message::Heartbeat(Heartbeat {
                head_sequence: self.hub.head().max(self.next.saturating_sub(1)),
                time: Some(timestamp(now_ms())),
                next_sequence: self.next,
            })),
        }
    }

    async fn send_heartbeat(&self, out: &mpsc::Sender<StreamItem>) -> Result<(), Stop> {
        // A client too slow to take a heartbeat already knows the stream is alive.
        match out.try_send(Ok(self.heartbeat_message())) {
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Closed),
            _ => Ok(()),
        }
    }
}
