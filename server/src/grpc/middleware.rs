//! One tower layer in front of every gRPC service: a request span that
//! continues the caller's W3C trace, access control by method, per-RPC
//! request counts and latency, and an oversized request's refusal that
//! names the limit.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::{
    auth::grpc_role,
    error::ApiError,
    telemetry::metrics::{MethodLabels, RpcLabels},
    AppState,
};

/// How tonic's decoder starts refusing a message over
/// `max_decoding_message_size` (OUT_OF_RANGE, then the size and the limit).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// Adds [`GrpcMiddleware`] to the tonic router.
#[derive(Clone)]
pub(crate) struct GrpcLayer {
    state: Arc<AppState>,
}

impl GrpcLayer {
    /// A layer using the server's auth and metrics.
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        GrpcLayer { state }
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMiddleware {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct GrpcMiddleware<S> {
    inner: S,
    state: Arc<AppState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> Service<http::Request<B>> for GrpcMiddleware<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_string();
        let span = tracing::info_span!(
            "grpc",
            method = %method,
            caller = tracing::field::Empty,
            otel.kind = "server"
        );
        crate::telemetry::continue_trace(&span, request.headers());
        let state = self.state.clone();
        if let Some(role) = grpc_role(&method) {
            let header = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let checked = state.auth.check(header, role);
            if let Ok(caller) = &checked {
                // Who did it, on every log line of the call.
                span.record("caller", caller.name.as_str());
            }
            if let Err(denied) = checked {
                let _guard = span.enter();
                tracing::info!(error = %denied, "request refused");
                record(&state, &method, denied.grpc_code(), Instant::now());
                let status: tonic::Status = denied.into();
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        // The service that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = state.config.server.max_message_bytes;
        Box::pin(
            async move {
                let started = Instant::now();
                let response = name_the_limit(inner.call(request).await?, limit);
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(tonic::Code::from)
                    .unwrap_or(tonic::Code::Ok);
                record(&state, &method, code, started);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// tonic refuses an oversized request with OUT_OF_RANGE and its own text;
/// answer RESOURCE_EXHAUSTED (what gRPC itself uses for it) naming the
/// setting. Requests are unary, so the refusal is a trailers-only answer
/// whose status is in the headers.
fn name_the_limit(
    response: http::Response<tonic::body::Body>,
    limit: usize,
) -> http::Response<tonic::body::Body> {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::OutOfRange {
        return response;
    }
    let Some(found) = status.message().strip_prefix(TONIC_TOO_LARGE) else {
        return response;
    };
    let digits: String = found.chars().take_while(char::is_ascii_digit).collect();
    let error = ApiError::too_large("message", digits.parse().ok(), limit);
    tonic::Status::from(error).into_http()
}

fn record(state: &AppState, method: &str, code: tonic::Code, started: Instant) {
    let m = &state.metrics;
    m.grpc_requests
        .get_or_create(&RpcLabels {
            method: method.to_string(),
            code: format!("{code:?}"),
        })
        .inc();
    m.grpc_request_duration
        .get_or_create(&MethodLabels {
            method: method.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
}
