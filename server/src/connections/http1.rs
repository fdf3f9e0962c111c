//! Serving an axum router over HTTP/1.1 on a [`Gate`]'s connections, with
//! hyper's header-read timeout. (`axum::serve` sets no timer, so hyper
//! would wait for a half-sent header forever, and takes no gate.)

use std::{convert::Infallible, sync::Arc};

use axum::Router;
use futures::StreamExt as _;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::{
    body::{Busy, Tracked},
    Conn, Gate, Handshake, Slot,
};

/// The connection a request came on (in its extensions): a handler that
/// takes the connection over (a WebSocket upgrade) holds it busy with
/// [`ConnSlot::hold`] for as long as it uses it, since its response, the
/// 101, is done at once.
#[derive(Clone)]
pub(crate) struct ConnSlot(Arc<Slot>);

impl ConnSlot {
    /// Marks the connection in use until the guard drops.
    pub(crate) fn hold(&self) -> Busy {
        self.0.busy()
    }
}

/// Serves `router` on `listener` (after `handshake`: TLS when configured)
/// until `cancel` fires, then stops
/// accepting, lets requests in flight finish and returns once every
/// connection is closed.
pub(crate) async fn serve_http1(
    gate: Arc<Gate>,
    listener: TcpListener,
    router: Router,
    handshake: Handshake,
    cancel: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(gate.limits().header_read_timeout);
    {
        // Dropped at the end of this block: the listening socket closes, so
        // new clients are refused rather than left waiting during the drain.
        let incoming = gate.incoming(listener, handshake);
        tokio::pin!(incoming);
        loop {
            let io = tokio::select! {
                _ = cancel.cancelled() => break,
                io = incoming.next() => match io {
                    Some(io) => io,
                    None => break,
                },
            };
            let connection = serve_connection(
                builder.clone(),
                io,
                router.clone(),
                cancel.clone(),
                gate.clone(),
            );
            tokio::spawn(connection);
        }
    }
    gate.close_idle();
    gate.drained().await;
}

/// One connection, each request marked busy until its response is written.
async fn serve_connection(
    builder: http1::Builder,
    io: Conn,
    router: Router,
    cancel: CancellationToken,
    gate: Arc<Gate>,
) {
    let slot = io.slot().clone();
    let requests = slot.clone();
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        let busy = requests.busy();
        request.extensions_mut().insert(ConnSlot(requests.clone()));
        let call = router.clone().oneshot(request);
        async move {
            let response = call.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, Some(busy))))
        }
    });
    // With upgrades: WebSocket streams (the gateway's /events/ws).
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match served {
        Err(e) if e.is_timeout() => gate.header_timed_out(&slot),
        Err(e) => {
            tracing::debug!(listener = gate.listener, error = %e, "connection ended with an error")
        }
        Ok(()) => {}
    }
}
