//! What the gateway's live streams (`GET /events/stream`, Server-Sent
//! Events, and `GET /events/ws`, WebSocket) share: their query string read
//! into the `SubscribeRequest` gRPC's `EventStreamService.Subscribe` takes,
//! the subscription itself ([`crate::service::events::subscribe`], the one
//! gRPC uses: same fan-out, same catch-up from the store for a slow reader),
//! the JSON of what they carry and their metrics.
//!
//! Query parameters (lists comma-separated or repeated):
//! `event_types` (`rule_created` or `EVENT_TYPE_RULE_CREATED`),
//! `entity_ids`, `namespaces`, `start` (`now`, the default, `oldest` or
//! `from_sequence`), `from_sequence`, `heartbeat_interval_seconds`, and
//! `ticket` (see [`super::tickets`]).

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use valence_lifecycle_api::v1::{StartPosition, SubscribeRequest};

use crate::{
    error::{ApiError, ApiResult, ERROR_DOMAIN},
    events::subscription::StreamItem,
    service::events,
    telemetry::metrics::{StreamEndLabels, StreamKindLabels},
    AppState,
};

/// The `SubscribeRequest` a stream's query string (and, for SSE, a
/// reconnecting browser's `Last-Event-ID`) asks for.
pub(super) fn subscribe_request(
    query: Option<&str>,
    last_event_id: Option<&str>,
) -> ApiResult<SubscribeRequest> {
    let mut request = SubscribeRequest::default();
    let mut start = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let items = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
        match key.as_ref() {
            "event_types" | "event_type" => {
                for name in items() {
                    let t = events::event_type_from_name("event_types", name)?;
                    request.event_types.extend(t.map(|t| t as i32));
                }
            }
            "entity_ids" | "entity_id" => request.entity_ids.extend(items().map(String::from)),
            "namespaces" | "namespace" => request.namespaces.extend(items().map(String::from)),
            "shard" => request.shard = value.trim().to_string(),
            "start" => start = Some(start_from_name(&value)?),
            "from_sequence" => request.from_sequence = number("from_sequence", &value)?,
            "heartbeat_interval_seconds" => {
                request.heartbeat_interval_seconds =
                    number("heartbeat_interval_seconds", &value)? as u32
            }
            super::tickets::TICKET_PARAM => {}
            other => {
                return Err(ApiError::invalid(
                    "query",
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    request.start = start.unwrap_or(StartPosition::Unspecified) as i32;
    // A browser reconnecting says the last id it saw; go on right after it.
    if let Some(id) = last_event_id.map(str::trim).filter(|v| !v.is_empty()) {
        let last = number("Last-Event-ID", id)?;
        request.start = StartPosition::FromSequence as i32;
        request.from_sequence = last + 1;
    }
    Ok(request)
}

fn number(field: &str, value: &str) -> ApiResult<u64> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| ApiError::invalid(field, format!("{value:?} is not a whole number")))
        .and_then(|n| crate::validate::sequence(field, n))
}

fn start_from_name(name: &str) -> ApiResult<StartPosition> {
    match name.trim().to_ascii_lowercase().as_str() {
        "now" | "start_position_now" => Ok(StartPosition::Now),
        "oldest" | "start_position_oldest" => Ok(StartPosition::Oldest),
        "from_sequence" | "start_position_from_sequence" => Ok(StartPosition::FromSequence),
        _ => Err(ApiError::invalid(
            "start",
            format!("{name:?} is not now, oldest or from_sequence"),
        )),
    }
}

/// Opens the subscription. A start cursor older than the retained log is
/// not an HTTP error here (a browser's `EventSource` cannot read one): the
/// stream opens and its one item is the OUT_OF_RANGE error naming the
/// oldest sequence, as a subscription pruned mid-stream ends.
pub(super) async fn open(
    state: &Arc<AppState>,
    request: &SubscribeRequest,
) -> ApiResult<mpsc::Receiver<StreamItem>> {
    match events::subscribe(state, request).await {
        Err(pruned @ ApiError::Pruned { .. }) => {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Err(pruned.into()));
            Ok(rx)
        }
        other => other,
    }
}

/// The JSON of a stream's final error: the REST error shape
/// (`error`, `code`, `reason`, `domain`), with `oldest_sequence` on
/// OUT_OF_RANGE.
pub(super) fn error_json(status: &tonic::Status) -> Value {
    use tonic_types::StatusExt as _;
    let mut body = json!({
        "error": status.message(),
        "code": format!("{:?}", status.code()),
        "domain": ERROR_DOMAIN,
    });
    if let Some(info) = status.get_error_details().error_info() {
        body["reason"] = json!(info.reason);
        if let Some(oldest) = info
            .metadata
            .get("oldest_sequence")
            .and_then(|o| o.parse::<u64>().ok())
        {
            body["oldest_sequence"] = json!(oldest);
        }
    }
    body
}

/// Why a gateway stream ended (its metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    ClientGone,
    Shutdown,
    OutOfRange,
    Failed,
    PingTimeout,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::Shutdown => "shutdown",
            End::OutOfRange => "out_of_range",
            End::Failed => "failed",
            End::PingTimeout => "ping_timeout",
        }
    }

    /// The end a failed subscription's status means.
    pub(super) fn of(status: &tonic::Status) -> End {
        if status.code() == tonic::Code::OutOfRange {
            End::OutOfRange
        } else {
            End::Failed
        }
    }
}

/// One open gateway stream in the metrics (and a log line when it ends);
/// counts its end when dropped (`client_gone` unless told otherwise).
pub(super) struct Open {
    state: Arc<AppState>,
    kind: &'static str,
    caller: String,
    end: End,
    delivered: u64,
}

impl Open {
    pub(super) fn new(state: Arc<AppState>, kind: &'static str, caller: String) -> Self {
        state
            .metrics
            .gateway_streams
            .get_or_create(&StreamKindLabels { kind: kind.into() })
            .inc();
        tracing::info!(kind, caller = %caller, "gateway event stream opened");
        Open {
            state,
            kind,
            caller,
            end: End::ClientGone,
            delivered: 0,
        }
    }

    /// Records why the stream is ending.
    pub(super) fn ending(&mut self, end: End) {
        self.end = end;
    }

    /// The end when the subscription's channel closed: shutdown, or the
    /// client went away.
    pub(super) fn closed(&mut self) {
        if self.state.streams.is_cancelled() {
            self.end = End::Shutdown;
        }
    }

    /// Whether it ends because the server is shutting down.
    pub(super) fn is_shutdown(&self) -> bool {
        self.end == End::Shutdown
    }

    /// Counts one event sent.
    pub(super) fn delivered(&mut self) {
        self.delivered += 1;
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let m = &self.state.metrics;
        m.gateway_streams
            .get_or_create(&StreamKindLabels {
                kind: self.kind.into(),
            })
            .dec();
        m.gateway_streams_ended
            .get_or_create(&StreamEndLabels {
                kind: self.kind.into(),
                reason: self.end.label().into(),
            })
            .inc();
        tracing::info!(
            kind = self.kind,
            caller = %self.caller,
            reason = self.end.label(),
            delivered = self.delivered,
            "gateway event stream ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use valence_lifecycle_api::v1::EventType;

    #[test]
    fn the_query_reads_as_a_subscribe_request() {
        let r = subscribe_request(
            Some("event_types=rule_created,EVENT_TYPE_SESSION_CREATED&entity_ids=a&entity_ids=b&namespaces=ns&start=from_sequence&from_sequence=7&heartbeat_interval_seconds=2&ticket=x"),
            None,
        )
        .unwrap();
        assert_eq!(
            r.event_types,
            vec![
                EventType::RuleCreated as i32,
                EventType::SessionCreated as i32
            ]
        );
        assert_eq!(r.entity_ids, vec!["a", "b"]);
        assert_eq!(r.namespaces, vec!["ns"]);
        assert_eq!(r.start, StartPosition::FromSequence as i32);
        assert_eq!((r.from_sequence, r.heartbeat_interval_seconds), (7, 2));
        let empty = subscribe_request(None, None).unwrap();
        assert_eq!(empty, SubscribeRequest::default());
    }

    #[test]
    fn last_event_id_resumes_right_after_it() {
        let r = subscribe_request(Some("start=oldest"), Some("41")).unwrap();
        assert_eq!(r.start, StartPosition::FromSequence as i32);
        assert_eq!(r.from_sequence, 42);
        assert!(subscribe_request(None, Some("x")).is_err());
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (q, field) in [
            ("start=later", "start"),
            ("from_sequence=-1", "from_sequence"),
            ("event_types=nope", "event_types"),
            ("limit=3", "query"),
        ] {
            let e = subscribe_request(Some(q), None).unwrap_err();
            assert_eq!(e.field(), Some(field), "{q}");
        }
    }

    #[test]
    fn a_pruned_cursor_says_the_oldest_sequence() {
        let status: tonic::Status = ApiError::Pruned {
            message: "gone".into(),
            oldest: 12,
        }
        .into();
        let body = error_json(&status);
        assert_eq!(body["code"], "OutOfRange");
        assert_eq!(body["reason"], "CURSOR_PRUNED");
        assert_eq!(body["oldest_sequence"], 12);
    }
}
