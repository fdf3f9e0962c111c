//! `GET /events/stream`: the event log live as Server-Sent Events, with
//! `EventStreamService.Subscribe`'s semantics (see [`super::streams`]).
//!
//! * Each event is `id: <sequence>` and `data: <LifecycleEvent in proto3
//!   JSON>` (the default `message` event), so a browser's automatic
//!   reconnect sends `Last-Event-ID` and resumes right after it.
//! * A heartbeat is a comment `: heartbeat head=<head> next=<next>` with
//!   `id: <next - 1>`: the position moves on even while the filter matches
//!   nothing, so a resume never re-reads what was already passed.
//! * OUT_OF_RANGE (a cursor older than the retained log, at the start or
//!   mid-stream) and any other failure end the stream with an `error` event
//!   whose data is the REST error JSON (`oldest_sequence` on OUT_OF_RANGE).
//!
//! The body is fed from the subscription's bounded channel; a client that
//! reads slowly holds back only its own subscription, which catches up from
//! the store like a gRPC subscriber's.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Extension, State},
    http::{header, HeaderMap, Uri},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use valence_lifecycle_api::v1::{subscribe_response::Message, Heartbeat, LifecycleEvent};

use super::streams::{self, End, Open};
use crate::{auth::Caller, error::ApiResult, events::subscription::StreamItem, AppState};

/// Reconnect delay a browser is told to use, in milliseconds.
const RETRY_MS: u64 = 2000;

/// `GET /events/stream`.
pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let request = streams::subscribe_request(uri.query(), last_event_id)?;
    let rx = streams::open(&state, &request).await?;
    let caller = caller.map(|Extension(c)| c.name).unwrap_or_default();
    let open = Open::new(state.clone(), "sse", caller);
    let prelude = Bytes::from(format!(": valence lifecycle events\nretry: {RETRY_MS}\n\n"));
    let body = futures::stream::once(async move { Ok(prelude) }).chain(frames(rx, open));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Proxies that buffer (nginx) would hold the events back.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

type Frame = Result<Bytes, std::convert::Infallible>;

/// The SSE frames of the subscription's items, ending after a failure.
fn frames(
    rx: mpsc::Receiver<StreamItem>,
    open: Open,
) -> impl futures::Stream<Item = Frame> + Send + 'static {
    futures::stream::unfold(Some((rx, open)), |state| async move {
        let (mut rx, mut open) = state?;
        match rx.recv().await {
            None => {
                open.closed();
                let bye = if open.is_shutdown() {
                    ": the server is shutting down\n\n"
                } else {
                    ""
                };
                // `open` drops here, counting the end.
                drop(open);
                (!bye.is_empty()).then(|| (Ok(Bytes::from_static(bye.as_bytes())), None))
            }
            Some(Ok(message)) => {
                let frame = match message.message {
                    Some(Message::Event(event)) => {
                        open.delivered();
                        event_frame(&event)
                    }
                    Some(Message::Heartbeat(h)) => heartbeat_frame(&h),
                    None => String::new(),
                };
                Some((Ok(Bytes::from(frame)), Some((rx, open))))
            }
            Some(Err(status)) => {
                open.ending(End::of(&status));
                let frame = format!("event: error\ndata: {}\n\n", streams::error_json(&status));
                Some((Ok(Bytes::from(frame)), None))
            }
        }
    })
}

fn event_frame(event: &LifecycleEvent) -> String {
    // pbjson's canonical proto3 JSON; serde_json writes no newlines.
    let json = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    format!("id: {}\ndata: {json}\n\n", event.sequence)
}

fn heartbeat_frame(h: &Heartbeat) -> String {
    let mut frame = format!(
        ": heartbeat head={} next={}\n",
        h.head_sequence, h.next_sequence
    );
    if h.next_sequence > 1 {
        frame.push_str(&format!("id: {}\n", h.next_sequence - 1));
    }
    frame.push('\n');
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_sequence_as_their_id() {
        let event = LifecycleEvent {
            sequence: 9,
            entity_id: "e".into(),
            ..Default::default()
        };
        let frame = event_frame(&event);
        assert!(frame.starts_with("id: 9\ndata: {"), "{frame}");
        assert!(frame.ends_with("}\n\n"));
        assert!(frame.contains(r#""sequence":"9""#), "proto3 JSON: {frame}");
        let beat = heartbeat_frame(&Heartbeat {
            head_sequence: 12,
            next_sequence: 13,
            time: None,
        });
        assert_eq!(beat, ": heartbeat head=12 next=13\nid: 12\n\n");
        let empty = heartbeat_frame(&Heartbeat {
            head_sequence: 0,
            next_sequence: 1,
            time: None,
        });
        assert_eq!(empty, ": heartbeat head=0 next=1\n\n");
    }
}
