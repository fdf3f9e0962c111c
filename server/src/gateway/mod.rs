//! The REST gateway (seed 000 and 001 endpoints) for operators, scripts and
//! Prometheus. Bodies are the protobuf messages in the canonical proto3
//! JSON mapping (lowerCamelCase, enums by value name, 64-bit integers as
//! strings, RFC 3339 times), except the shapes the seeds fix: rules in seed
//! 000's notation (`POST /rules`, `GET /rules[/{id}]`), `/health` and
//! seed 001's `/stats` (see `seed_shapes`).

mod errors;
mod handlers;
mod seed_shapes;

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::{
    auth::http_role,
    connections::{serve_http1, Face, Gate, Handshake, Limits},
    telemetry::metrics::{HttpLabels, MethodLabels},
    AppState,
};

/// The gateway's routes with their middleware.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limits = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout(),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.config.server.max_concurrent_requests,
        ));
    Router::new()
        .route("/health", get(handlers::health))
        .route("/stats", get(handlers::stats))
        .route("/metrics", get(handlers::metrics))
        .route("/accounts", get(handlers::list_accounts))
        .route("/accounts/{id}", get(handlers::get_account))
        .route(
            "/account-requests",
            get(handlers::list_account_requests).post(handlers::create_account_request),
        )
        .route(
            "/account-requests/{id}/retry",
            post(handlers::retry_account_request),
        )
        .route("/sessions", get(handlers::list_sessions))
        .route("/sessions/{id}", get(handlers::get_session))
        .route("/progressions/{id}", get(handlers::get_progression))
        .route("/events", get(handlers::list_events))
        .route(
            "/rules",
            post(handlers::create_rule).get(handlers::list_rules),
        )
        .route("/rules/{id}", get(handlers::get_rule))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_message_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(limits)
        // Outermost, so the timeout layer's 408 is covered too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            errors::json_errors,
        ))
        .with_state(state)
}

/// Access control, metrics and a request span for every REST call.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        route = %route,
        caller = tracing::field::Empty
    );
    crate::telemetry::continue_trace(&span, request.headers());
    let response = match http_role(request.method(), request.uri().path()) {
        Some(role) => {
            let header = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match state.auth.check(header, role) {
                Ok(caller) => {
                    // Who did it, on every log line of the request.
                    span.record("caller", caller.name.as_str());
                    tracing::Instrument::instrument(next.run(request), span).await
                }
                Err(denied) => denied.into_response(),
            }
        }
        None => tracing::Instrument::instrument(next.run(request), span).await,
    };
    let m = &state.metrics;
    m.http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    m.http_request_duration
        .get_or_create(&MethodLabels { method: route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Serves the gateway on `listener` (and /metrics alone on
/// `monitoring.metrics_port`, when set) until `cancel` fires; each
/// listener has its own connection limits.
pub(crate) async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, tls = state.tls.is_some(), "REST gateway listening");
    let limits = Limits::from(&state.config.server);
    if let Some(port) = state.config.monitoring.metrics_port {
        let metrics_listener = TcpListener::bind((state.config.server.bind_address, port)).await?;
        let metrics_only = Router::new()
            .route("/metrics", get(handlers::metrics))
            .with_state(state.clone());
        let gate = Gate::new("metrics", limits, 0, &state.metrics);
        tokio::spawn(serve_http1(
            gate,
            metrics_listener,
            metrics_only,
            Handshake::none(),
            cancel.clone(),
        ));
    }
    let gate = Gate::new("rest", limits, 0, &state.metrics);
    let handshake = Handshake::new(state.tls.as_ref(), Face::Rest);
    serve_http1(gate, listener, router(state), handshake, cancel).await;
    Ok(())
}
