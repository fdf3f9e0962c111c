//! REST handlers. Each validates like its gRPC twin (same functions), so
//! both faces give the same answers.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use valence_lifecycle_api::{
    json::parse_name,
    rule_json::SeedRule,
    v1::{AccountRequestStatus, EventType, ListEventsRequest, ProgressionRule},
};

use crate::{
    error::{ApiError, ApiResult},
    grpc::{
        lifecycle::{
            list_events as list_events_shared, request_account as request_account_shared,
            retry_account_request as retry_account_request_shared,
        },
        rules::create_rule as create_rule_shared,
    },
    store::SessionFilter,
    validate, AppState,
};

type AppStateRef = State<Arc<AppState>>;

/// `GET /health`: per-component status from the status board (never
/// blocks on a dependency for long); 200 when healthy or degraded, 503 when
/// unhealthy.
pub async fn health(State(state): AppStateRef) -> Response {
    let components = state.board.snapshot();
    let status = overall_status(&components);
    // Singleton health and the leader's name come from the store; a store
    // that does not answer quickly leaves them out rather than slowing the
    // probe. Both reads share one bound.
    let bound = std::time::Duration::from_millis(300);
    let (singletons, leader) = tokio::join!(
        tokio::time::timeout(bound, state.singletons.health_json()),
        tokio::time::timeout(bound, state.leadership.info(&state.store)),
    );
    let singletons = singletons.ok().and_then(Result::ok);
    let leader = leader.unwrap_or_else(|_| valence_lifecycle_api::v1::LeaderInfo {
        replica_id: state.leadership.replica_id().to_string(),
        is_leader: state.leadership.is_leader(),
        ..Default::default()
    });
    let body = json!({
        "status": status,
        "leader": leader,
        "timestamp": crate::store::timestamp(crate::store::now_ms()).to_string(),
        "components": components,
        "singletons": singletons,
    });
    let code = if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

/// healthy: everything running; degraded: still serving (200) but a
/// resource is impaired or a component is starting or stopping (a replica
/// taking or giving up the lead); unhealthy: a component is down (503).
fn overall_status(components: &[valence_lifecycle_api::v1::ComponentStatus]) -> &'static str {
    use valence_lifecycle_api::v1::ComponentState;
    let states: Vec<ComponentState> = components
        .iter()
        .map(|c| ComponentState::try_from(c.state).unwrap_or(ComponentState::Unspecified))
        .collect();
    if states.iter().all(|s| *s == ComponentState::Running) {
        "healthy"
    } else if states.iter().all(|s| {
        matches!(
            s,
            ComponentState::Running
                | ComponentState::Degraded
                | ComponentState::Starting
                | ComponentState::Stopping
        )
    }) {
        "degraded"
    } else {
        "unhealthy"
    }
}

/// `GET /stats`: seed 001's fields plus counts and component states.
pub async fn stats(State(state): AppStateRef) -> ApiResult<Json<Value>> {
    Ok(Json(to_json(&state.stats().await?)))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): AppStateRef) -> Response {
    if !state.config.monitoring.enable_prometheus {
        return ApiError::not_found("route", "/metrics").into_response();
    }
    state.refresh_gauges().await;
    (
        // prometheus-client writes OpenMetrics (counter families named
        // without `_total`, a closing `# EOF`); say so, so scrapers parse it as such.
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Paging query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    page_size: Option<i32>,
    page_token: Option<String>,
    owner: Option<String>,
    namespace: Option<String>,
    include_consumed: Option<bool>,
    status: Option<String>,
}

fn page(q: &PageQuery) -> ApiResult<(u32, u64)> {
    let limit = validate::page_size("page_size", q.page_size.unwrap_or(0))?;
    let offset = validate::page_token(q.page_token.as_deref().unwrap_or(""))?;
    Ok((limit, offset))
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::invalid("query", e.body_text()))
}

/// `GET /accounts/{id}`: the account and its linear progression.
pub async fn get_account(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    validate::pubkey("id", &id)?;
    let account = state.store.get_account(&id).await?;
    with_progression(&state, "account", &account, &id).await
}

/// `{"<kind>": entity, "progression": …}`; the progression is null when none is recorded.
async fn with_progression<T: serde::Serialize>(
    state: &AppState,
    kind: &str,
    entity: &T,
    id: &str,
) -> ApiResult<Json<Value>> {
    let progression = state.store.get_progression(id).await.ok();
    Ok(Json(
        json!({ kind: to_json(entity), "progression": progression.as_ref().map(to_json) }),
    ))
}

/// `GET /accounts`: accounts, newest first.
pub async fn list_accounts(
    State(state): AppStateRef,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let (limit, offset) = page(&q)?;
    if let Some(owner) = &q.owner {
        validate::pubkey("owner", owner)?;
    }
    let accounts = state
        .store
        .list_accounts(q.owner.as_deref(), limit, offset)
        .await?;
    let next = validate::next_page_token(offset, limit, accounts.len());
    Ok(Json(
        json!({ "accounts": to_json(&accounts), "next_page_token": next }),
    ))
}

/// `GET /account-requests?status=`: account requests, newest first.
pub async fn list_account_requests(
    State(state): AppStateRef,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let (limit, offset) = page(&q)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            parse_name::<AccountRequestStatus>(s)
                .and_then(|v| AccountRequestStatus::try_from(v).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "status",
                        format!("{s:?} is not pending, processing, initialized or failed"),
                    )
                })?,
        ),
    };
    let requests = state
        .store
        .list_account_requests(status, limit, offset)
        .await?;
    let next = validate::next_page_token(offset, limit, requests.len());
    Ok(Json(
        json!({ "requests": to_json(&requests), "next_page_token": next }),
    ))
}

/// `GET /sessions/{id}`: the session and its linear progression.
pub async fn get_session(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    validate::pubkey("id", &id)?;
    let session = state.store.get_session(&id).await?;
    with_progression(&state, "session", &session, &id).await
}

/// `GET /sessions`: live sessions (all with `include_consumed=true`), newest first.
pub async fn list_sessions(
    State(state): AppStateRef,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let (limit, offset) = page(&q)?;
    if let Some(owner) = &q.owner {
        validate::pubkey("owner", owner)?;
    }
    let filter = SessionFilter {
        include_consumed: q.include_consumed.unwrap_or(false),
        owner: q.owner.clone(),
        namespace: q.namespace.clone(),
    };
    let sessions = state.store.list_sessions(&filter, limit, offset).await?;
    let next = validate::next_page_token(offset, limit, sessions.len());
    Ok(Json(
        json!({ "sessions": to_json(&sessions), "next_page_token": next }),
    ))
}

/// `GET /progressions/{id}`: an entity's linear progression.
pub async fn get_progression(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    validate::pubkey("id", &id)?;
    Ok(Json(to_json(&state.store.get_progression(&id).await?)))
}

/// `/events` query parameters (seed 000: limit, offset, event_type).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    limit: Option<i32>,
    offset: Option<i64>,
    event_type: Option<String>,
    after_sequence: Option<u64>,
    entity_id: Option<String>,
}

/// `GET /events?limit=100&offset=0&event_type=session_created`.
pub async fn list_events(
    State(state): AppStateRef,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let event_type = match q.event_type.as_deref() {
        None | Some("") => EventType::Unspecified as i32,
        Some(name) => parse_name::<EventType>(name).ok_or_else(|| {
            ApiError::invalid("event_type", format!("{name:?} is not an event type"))
        })?,
    };
    let request = ListEventsRequest {
        limit: q.limit.unwrap_or(100),
        offset: q.offset.unwrap_or(0),
        event_type,
        after_sequence: q.after_sequence,
        entity_id: q.entity_id.unwrap_or_default(),
    };
    Ok(Json(to_json(&list_events_shared(&state, &request).await?)))
}

/// `POST /rules` with seed 000's rule JSON; answers 201 with the stored rule
/// in the same shape.
pub async fn create_rule(State(state): AppStateRef, body: Bytes) -> ApiResult<Response> {
    let seed = parse_seed_rule(&body)?;
    let stored = create_rule_shared(&state, Some(ProgressionRule::from(seed))).await?;
    Ok((StatusCode::CREATED, Json(seed_json(&stored)?)).into_response())
}

/// `POST /account-requests` with `{"owner", "capabilities", "init_state_hash"?,
/// "idempotency_key"?}` (RequestAccount); answers 201 with `{"request", "signature"}`.
pub async fn create_account_request(State(state): AppStateRef, body: Bytes) -> ApiResult<Response> {
    let r: NewAccountRequest = parse_body(&body)?;
    let request = valence_lifecycle_api::v1::RequestAccountRequest {
        owner: r.owner,
        capabilities: r.capabilities,
        init_state_hash: r.init_state_hash,
        idempotency_key: r.idempotency_key,
    };
    let placed = request_account_shared(&state, &request).await?;
    Ok((StatusCode::CREATED, Json(to_json(&placed))).into_response())
}

/// `POST /account-requests/{id}/retry` (RetryAccountRequest).
pub async fn retry_account_request(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(to_json(
        &retry_account_request_shared(&state, &id).await?,
    )))
}

/// Body of `POST /account-requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccountRequest {
    owner: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    init_state_hash: String,
    #[serde(default)]
    idempotency_key: String,
}

/// Parses seed 000's rule JSON; errors name the path of the bad field.
fn parse_seed_rule(body: &[u8]) -> ApiResult<SeedRule> {
    parse_body(body)
}

/// Parses a JSON body; errors name the path of the bad field.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // The path is "." or "?" when the error precedes any field.
        let field = if path == "." || path.starts_with('?') {
            "body".to_string()
        } else {
            path
        };
        ApiError::invalid(field, e.into_inner().to_string())
    })
}

/// `GET /rules`: rules in seed 000's JSON shape.
pub async fn list_rules(
    State(state): AppStateRef,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let (limit, offset) = page(&q)?;
    let rules = state.store.list_rules(false, limit, offset).await?;
    let list: Vec<Value> = rules.iter().map(seed_json).collect::<ApiResult<_>>()?;
    let next = validate::next_page_token(offset, limit, rules.len());
    Ok(Json(json!({ "rules": list, "next_page_token": next })))
}

/// `GET /rules/{id}`: one rule in seed 000's JSON shape.
pub async fn get_rule(State(state): AppStateRef, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    validate::identifier("id", &id, 128)?;
    Ok(Json(seed_json(&state.store.get_rule(&id).await?)?))
}

/// Unknown routes: JSON 404.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("route", uri.path())
}

fn seed_json(rule: &ProgressionRule) -> ApiResult<Value> {
    let seed =
        SeedRule::try_from(rule).map_err(|m| anyhow::anyhow!("stored rule lacks {}", m.0))?;
    serde_json::to_value(seed).map_err(|e| ApiError::Internal(e.into()))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
