//! The event log: pages of stored events (seed 000's limit/offset) and
//! resumable subscriptions.

use std::sync::Arc;

use tokio::sync::mpsc;
use valence_lifecycle_api::v1::{EventType, LifecycleEvent, SubscribeRequest};

use super::given;
use crate::{
    error::{ApiError, ApiResult},
    events::subscription::StreamItem,
    store::EventQuery,
    validate, AppState,
};

/// Which events a `list` call wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventListQuery {
    /// Most events returned (0 = the default page size).
    pub limit: i32,
    /// Events skipped after the filter (seed 000's paging).
    pub offset: i64,
    /// Only events of this type.
    pub event_type: Option<EventType>,
    /// Only events after this sequence.
    pub after_sequence: Option<u64>,
    /// Only events of this entity ("" = any).
    pub entity_id: String,
    /// Only events of this shard, by program id or name ("" = any).
    pub shard: String,
}

/// A page of events with the log's bounds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventPage {
    /// The events, oldest first.
    pub events: Vec<LifecycleEvent>,
    /// Highest sequence stored.
    pub head_sequence: u64,
    /// Lowest sequence still retained.
    pub oldest_sequence: u64,
}

/// Stored events, oldest first.
pub(crate) async fn list(state: &AppState, q: &EventListQuery) -> ApiResult<EventPage> {
    let limit = validate::page_size("limit", q.limit)?;
    let offset = u64::try_from(q.offset)
        .map_err(|_| ApiError::invalid("offset", format!("{} is negative", q.offset)))?;
    validate::text("entity_id", &q.entity_id)?;
    if let Some(after) = q.after_sequence {
        validate::sequence("after_sequence", after)?;
    }
    let query = EventQuery {
        event_type: q.event_type,
        entity_id: given(&q.entity_id).map(str::to_string),
        shard: state.shards.filter("shard", &q.shard)?,
    };
    let events = state
        .store
        .list_events(&query, q.after_sequence, limit, offset)
        .await?;
    let (head_sequence, oldest_sequence) = state.store.log_bounds().await?;
    Ok(EventPage {
        events,
        head_sequence,
        oldest_sequence,
    })
}

/// Opens a subscription and starts serving it into a bounded channel;
/// the stream ends at shutdown or when the receiver is dropped.
pub(crate) async fn subscribe(
    state: &Arc<AppState>,
    request: &SubscribeRequest,
) -> ApiResult<mpsc::Receiver<StreamItem>> {
    // A shard named by its name filters by its program id, as events carry it.
    let mut request = request.clone();
    request.shard = state
        .shards
        .filter("shard", &request.shard)?
        .unwrap_or_default();
    let subscription = state.hub.subscribe(&request).await?;
    let (tx, rx) = mpsc::channel(state.config.events.subscriber_buffer);
    tokio::spawn(subscription.run(tx, state.streams.clone()));
    Ok(rx)
}

/// An event type filter given as a number (gRPC): 0 means all.
pub(crate) fn event_type_from_number(field: &str, value: i32) -> ApiResult<Option<EventType>> {
    match EventType::try_from(value) {
        Ok(EventType::Unspecified) => Ok(None),
        Ok(t) => Ok(Some(t)),
        Err(_) => Err(ApiError::invalid(
            field,
            format!("{value} is not an event type"),
        )),
    }
}

/// An event type filter given by name (REST: `session_created` or
/// `EVENT_TYPE_SESSION_CREATED`): empty means all.
pub(crate) fn event_type_from_name(field: &str, name: &str) -> ApiResult<Option<EventType>> {
    if name.is_empty() {
        return Ok(None);
    }
    let number = valence_lifecycle_api::json::parse_name::<EventType>(name)
        .ok_or_else(|| ApiError::invalid(field, format!("{name:?} is not an event type")))?;
    event_type_from_number(field, number)
}
