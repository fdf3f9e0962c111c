//! `GET /events/ws`: the event log live over a WebSocket, with
//! `EventStreamService.Subscribe`'s semantics (see [`super::streams`]; the
//! query string is the same as `/events/stream`'s).
//!
//! Server to client, one JSON text message each:
//! * `{"type":"event","event":<LifecycleEvent in proto3 JSON>}`
//! * `{"type":"heartbeat","heartbeat":<Heartbeat in proto3 JSON>}`
//! * `{"type":"error","error":<REST error JSON>}`, then a close: the
//!   subscription cannot go on (OUT_OF_RANGE names `oldest_sequence`).
//!
//! Client to server: `{"type":"resume","fromSequence":N}` (a number or a
//! string; or `"start":"oldest"`/`"now"`) replaces the subscription with
//! one from there, same filters; nothing of the old one follows its first
//! heartbeat. Anything else is refused with an `error` message (the stream
//! goes on).
//!
//! Liveness: a ping goes out every heartbeat interval; a peer from which
//! nothing (a pong or any frame) arrived for [`DEAD_AFTER`] intervals is
//! closed, so a vanished host does not hold a subscription. At shutdown the
//! socket closes with 1001 (going away).

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        ws::{
            rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket, WebSocketUpgrade,
        },
        Extension, State,
    },
    http::Uri,
    response::Response,
};
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::{
    subscribe_response::Message as Item, StartPosition, SubscribeRequest,
};

use super::streams::{self, End, Open};
use crate::{
    auth::Caller, connections::ConnSlot, error::ApiError, error::ApiResult,
    events::subscription::StreamItem, AppState,
};

/// Ping intervals without a word from the peer after which it is gone.
pub(super) const DEAD_AFTER: u32 = 3;

/// Heartbeat (and ping) interval when the query gives none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Largest message a client may send (resume messages are tiny).
const MAX_CLIENT_MESSAGE: usize = 4096;

/// A request to `/events/ws` that is no WebSocket handshake: 400 naming
/// the header at fault, and where a plain HTTP client gets the stream.
fn not_an_upgrade(rejection: WebSocketUpgradeRejection) -> ApiError {
    let header = match &rejection {
        WebSocketUpgradeRejection::InvalidConnectionHeader(_) => "connection",
        WebSocketUpgradeRejection::InvalidUpgradeHeader(_) => "upgrade",
        WebSocketUpgradeRejection::InvalidWebSocketVersionHeader(_) => "sec-websocket-version",
        WebSocketUpgradeRejection::WebSocketKeyHeaderMissing(_) => "sec-websocket-key",
        _ => "headers",
    };
    ApiError::invalid(
        header,
        format!(
            "{rejection}: GET /events/ws is a WebSocket endpoint (Connection: upgrade, Upgrade: websocket); \
             GET /events/stream serves the same events as Server-Sent Events"
        ),
    )
}

/// Client messages waiting for the writer.
const CONTROL_QUEUE: usize = 8;

/// `GET /events/ws`.
pub(super) async fn upgrade(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    slot: Option<Extension<ConnSlot>>,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let ws = ws.map_err(not_an_upgrade)?;
    let request = streams::subscribe_request(uri.query(), None)?;
    // Validated (and a slot taken) before the upgrade, so a bad query is a
    // plain 400 and a full server a 429.
    let rx = streams::open(&state, &request).await?;
    let caller = caller.map(|Extension(c)| c.name).unwrap_or_default();
    let interval = match request.heartbeat_interval_seconds {
        0 => DEFAULT_INTERVAL,
        s => Duration::from_secs(s.into()),
    };
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            // The connection carries a request as long as the socket lives,
            // so neither the idle sweep nor a drain takes it for idle.
            let _busy = slot.map(|Extension(s)| s.hold());
            let open = Open::new(state.clone(), "websocket", caller);
            serve(state, socket, request, rx, interval, open).await;
        }))
}

/// A client message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resume {
        #[serde(default, rename = "fromSequence", alias = "from_sequence")]
        from_sequence: Option<Value>,
        #[serde(default)]
        start: Option<String>,
    },
}

/// The subscription `control` asks for, from `base`'s filters.
fn resumed(base: &SubscribeRequest, control: Control) -> ApiResult<SubscribeRequest> {
    let Control::Resume {
        from_sequence,
        start,
    } = control;
    let mut request = base.clone();
    match (from_sequence, start.as_deref()) {
        (Some(from), _) => {
            let from = match &from {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| {
                ApiError::invalid("fromSequence", format!("{from} is not a sequence"))
            })?;
            request.start = StartPosition::FromSequence as i32;
            request.from_sequence = from;
        }
        (None, Some("oldest")) => {
            request.start = StartPosition::Oldest as i32;
            request.from_sequence = 0;
        }
        (None, Some("now")) => {
            request.start = StartPosition::Now as i32;
            request.from_sequence = 0;
        }
        _ => {
            return Err(ApiError::invalid(
                "resume",
                "give fromSequence, or start \"oldest\" or \"now\"",
            ))
        }
    }
    Ok(request)
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

fn error_message(status: &tonic::Status) -> Message {
    text(json!({ "type": "error", "error": streams::error_json(status) }))
}

/// What the writer does next.
enum Step {
    // Boxed: a subscription item is ten times the size of the others.
    Item(Box<Option<StreamItem>>),
    Control(Option<Control>),
    Refused(tonic::Status),
    Ping,
    Dead,
    Shutdown,
}

async fn serve(
    state: Arc<AppState>,
    socket: WebSocket,
    base: SubscribeRequest,
    mut rx: mpsc::Receiver<StreamItem>,
    interval: Duration,
    mut open: Open,
) {
    let (mut sink, mut incoming) = socket.split();
    let dead = CancellationToken::new();
    let (control_tx, mut control_rx) =
        mpsc::channel::<Result<Control, tonic::Status>>(CONTROL_QUEUE);
    // The reader: pongs and anything else prove the peer is there; resume
    // messages go to the writer; silence for DEAD_AFTER intervals ends it.
    let reader = {
        let dead = dead.clone();
        tokio::spawn(async move {
            let silence = interval * DEAD_AFTER;
            loop {
                let frame = match tokio::time::timeout(silence, incoming.next()).await {
                    Err(_) => {
                        dead.cancel();
                        return;
                    }
                    Ok(None | Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
                    Ok(Some(Ok(frame))) => frame,
                };
                if let Message::Text(t) = frame {
                    let parsed = serde_json::from_str::<Control>(t.as_str()).map_err(|e| {
                        tonic::Status::from(ApiError::invalid("message", e.to_string()))
                    });
                    if control_tx.send(parsed).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let shutdown = state.streams.clone();
    let end = loop {
        let step = tokio::select! {
            _ = shutdown.cancelled() => Step::Shutdown,
            _ = dead.cancelled() => Step::Dead,
            item = rx.recv() => Step::Item(Box::new(item)),
            control = control_rx.recv() => match control {
                Some(Ok(c)) => Step::Control(Some(c)),
                Some(Err(refused)) => Step::Refused(refused),
                None => Step::Control(None),
            },
            _ = ping.tick() => Step::Ping,
        };
        let message = match step {
            Step::Item(item) => match *item {
                None => {
                    open.closed();
                    break if open.is_shutdown() {
                        End::Shutdown
                    } else {
                        End::ClientGone
                    };
                }
                Some(Ok(response)) => match response.message {
                    Some(Item::Event(event)) => {
                        open.delivered();
                        text(json!({ "type": "event", "event": event }))
                    }
                    Some(Item::Heartbeat(h)) => {
                        text(json!({ "type": "heartbeat", "heartbeat": h }))
                    }
                    None => continue,
                },
                Some(Err(status)) => {
                    let end = End::of(&status);
                    let _ = send(&mut sink, error_message(&status), &dead).await;
                    let _ = send(&mut sink, close(1000, "subscription ended"), &dead).await;
                    break end;
                }
            },
            Step::Shutdown => break End::Shutdown,
            Step::Dead => break End::PingTimeout,
            // The reader ended: it found the peer silent, or the peer
            // closed or the connection broke.
            Step::Control(None) if dead.is_cancelled() => break End::PingTimeout,
            Step::Control(None) => break End::ClientGone,
            Step::Refused(status) => error_message(&status),
            Step::Control(Some(control)) => {
                match resumed(&base, control) {
                    Ok(request) => match streams::open(&state, &request).await {
                        Ok(new) => {
                            // The old subscription's task ends with its receiver.
                            rx = new;
                            tracing::debug!(
                                from = request.from_sequence,
                                "websocket stream resumed"
                            );
                            continue;
                        }
                        Err(e) => error_message(&e.into()),
                    },
                    Err(e) => error_message(&e.into()),
                }
            }
            Step::Ping => Message::Ping(axum::body::Bytes::new()),
        };
        if !send(&mut sink, message, &dead).await {
            break if dead.is_cancelled() {
                End::PingTimeout
            } else {
                End::ClientGone
            };
        }
    };
    if end == End::Shutdown {
        let _ = send(&mut sink, close(1001, "the server is shutting down"), &dead).await;
    }
    open.ending(end);
    reader.abort();
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Sends `message` unless the peer is declared dead first; false when it
/// could not be sent.
async fn send(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: Message,
    dead: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = sink.send(message) => sent.is_ok(),
        _ = dead.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(json: &str) -> Control {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn resume_messages_move_the_start_and_keep_the_filters() {
        let base = SubscribeRequest {
            namespaces: vec!["ns".into()],
            ..Default::default()
        };
        for json in [
            r#"{"type":"resume","fromSequence":7}"#,
            r#"{"type":"resume","fromSequence":"7"}"#,
            r#"{"type":"resume","from_sequence":7}"#,
        ] {
            let r = resumed(&base, control(json)).unwrap();
            assert_eq!(r.start, StartPosition::FromSequence as i32, "{json}");
            assert_eq!(r.from_sequence, 7, "{json}");
            assert_eq!(r.namespaces, vec!["ns"]);
        }
        let r = resumed(&base, control(r#"{"type":"resume","start":"oldest"}"#)).unwrap();
        assert_eq!(r.start, StartPosition::Oldest as i32);
        assert!(resumed(&base, control(r#"{"type":"resume"}"#)).is_err());
        assert!(resumed(&base, control(r#"{"type":"resume","fromSequence":true}"#)).is_err());
        assert!(serde_json::from_str::<Control>(r#"{"type":"jump"}"#).is_err());
    }
}
