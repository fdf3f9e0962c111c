//! The REST gateway (seed 000 and 001 endpoints) for operators, scripts and
//! Prometheus. Bodies are the protobuf messages in the canonical proto3
//! JSON mapping (lowerCamelCase, enums by value name, 64-bit integers as
//! strings, RFC 3339 times), except the shapes the seeds fix: rules in seed
//! 000's notation (`POST /rules`, `GET /rules[/{id}]`), `/health` and
//! seed 001's `/stats` (see `seed_shapes`).

mod console;
mod errors;
mod handlers;
mod seed_shapes;
mod sse;
mod streams;
mod tickets;
mod ws;

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{DefaultBodyLimit, Extension, MatchedPath, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use self::tickets::Tickets;
use crate::{
    auth::{http_role, Caller},
    config::Role,
    connections::{serve_http1, Face, Gate, Handshake, Limits},
    telemetry::metrics::{HttpLabels, MethodLabels},
    AppState,
};

/// The gateway's routes with their middleware (and a new ticket key).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let ttl = std::time::Duration::from_secs(state.config.auth.stream_ticket_secs);
    let tickets = Arc::new(Tickets::new(ttl));
    let limits = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout(),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.config.server.max_concurrent_requests,
        ));
    let console = if state.config.monitoring.console {
        console::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(console)
        .route("/health", get(handlers::health))
        .route("/stats", get(handlers::stats))
        .route("/metrics", get(handlers::metrics))
        .route("/accounts", get(handlers::list_accounts))
        .route("/accounts/{id}", get(handlers::get_account))
        .route(
            "/account-requests",
            get(handlers::list_account_requests).post(handlers::create_account_request),
        )
        .route("/account-requests/{id}", get(handlers::get_account_request))
        .route(
            "/account-requests/{id}/retry",
            post(handlers::retry_account_request),
        )
        .route("/sessions", get(handlers::list_sessions))
        .route("/sessions/{id}", get(handlers::get_session))
        .route("/progressions/{id}", get(handlers::get_progression))
        .route("/entities/{id}", get(handlers::get_entity))
        .route("/events", get(handlers::list_events))
        .route("/events/stream", get(sse::stream))
        .route("/events/ws", get(ws::upgrade))
        .route("/events/tickets", post(issue_ticket))
        .route(
            "/rules",
            post(handlers::create_rule).get(handlers::list_rules),
        )
        .route("/rules/{id}", get(handlers::get_rule))
        .route("/rules/{id}/enable", post(handlers::enable_rule))
        .route("/rules/{id}/disable", post(handlers::disable_rule))
        .route("/rules/{id}/evaluate", get(handlers::evaluate_rule))
        .route("/singletons", get(handlers::get_singletons))
        .route("/singletons/{kind}/pause", post(handlers::pause_singleton))
        .route(
            "/singletons/{kind}/resume",
            post(handlers::resume_singleton),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_message_bytes))
        .layer(middleware::from_fn_with_state(
            (state.clone(), tickets.clone()),
            guard,
        ))
        .layer(Extension(tickets))
        .layer(limits)
        // Outermost, so the timeout layer's 408 is covered too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            errors::json_errors,
        ))
        .with_state(state)
}

/// Routes that take a stream ticket (`?ticket=`) instead of a bearer token.
fn takes_ticket(path: &str) -> bool {
    matches!(path, "/events/stream" | "/events/ws")
}

/// Who the caller of `request` is, if it may ask for `role`: the bearer
/// token, or on the stream routes (without a header) a stream ticket.
fn authenticate(
    state: &AppState,
    tickets: &Tickets,
    request: &Request,
    role: Role,
) -> Result<Caller, crate::error::ApiError> {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if header.is_none() && takes_ticket(request.uri().path()) && !state.auth.is_open() {
        if let Some(ticket) = tickets::from_query(request.uri().query()) {
            let checked = tickets.check(&ticket, role);
            let outcome = match &checked {
                Ok(_) => "accepted",
                Err(e) if e.to_string().contains("expired") => "expired",
                Err(_) => "refused",
            };
            tickets::count(&state.metrics, outcome);
            return checked;
        }
    }
    state.auth.check(header, role)
}

/// Access control, metrics and a request span for every REST call. The
/// authenticated caller goes into the request's extensions.
async fn guard(
    State((state, tickets)): State<(Arc<AppState>, Arc<Tickets>)>,
    mut request: Request,
    next: Next,
) -> Response {
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
        Some(role) => match authenticate(&state, &tickets, &request, role) {
            Ok(caller) => {
                // Who did it, on every log line of the request.
                span.record("caller", caller.name.as_str());
                request.extensions_mut().insert(caller);
                tracing::Instrument::instrument(next.run(request), span).await
            }
            Err(denied) => denied.into_response(),
        },
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

/// `POST /events/tickets` (reader role): a ticket that opens
/// `/events/stream` and `/events/ws` for `auth.stream_ticket_secs` with the
/// caller's role, for clients that cannot send a header (`EventSource`).
async fn issue_ticket(
    State(state): State<Arc<AppState>>,
    Extension(tickets): Extension<Arc<Tickets>>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let caller = caller.map(|Extension(c)| c).unwrap_or(Caller {
        name: "open".into(),
        role: Role::Admin,
    });
    let issued = tickets.issue(&caller);
    let ttl_secs = state.config.auth.stream_ticket_secs;
    tickets::count(&state.metrics, "issued");
    let body = serde_json::json!({
        "ticket": issued.ticket,
        "role": crate::auth::role_name(caller.role),
        "expiresAt": crate::store::timestamp(issued.expires_at_ms as i64),
        "expiresInSeconds": ttl_secs,
    });
    (axum::http::StatusCode::CREATED, axum::Json(body)).into_response()
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
    // Open event streams never end on their own; end them (the gRPC
    // server does too) so the drain can finish.
    let streams = state.streams.clone();
    let stopping = cancel.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        streams.cancel();
    });
    let gate = Gate::new("rest", limits, 0, &state.metrics);
    let handshake = Handshake::new(state.tls.as_ref(), Face::Rest);
    serve_http1(gate, listener, router(state), handshake, cancel).await;
    Ok(())
}
