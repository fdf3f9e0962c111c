//! REST handlers: each decodes its path, query or body, makes one call
//! into [`crate::service`] (the same one its gRPC twin makes) and encodes
//! the answer as JSON: a proto message in the canonical proto3 JSON
//! mapping (pbjson's impls, the shape any proto3 JSON parser reads), except
//! the shapes seed 000 and 001 fix ([`super::seed_shapes`]).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{
        self as proto, evaluate_rule_request::Target, EvaluateRuleResponse, GetSingletonsResponse,
        ListAccountRequestsResponse, ListAccountsResponse, ListEventsResponse,
        ListSessionsResponse, PauseSingletonResponse, ProgressionRule, RequestAccountRequest,
        RequestAccountResponse, ResumeSingletonResponse, RetryAccountRequestResponse,
    },
};

use super::seed_shapes;
use crate::{
    error::{ApiError, ApiResult},
    service::{
        accounts, events,
        events::EventListQuery,
        health::{self, Overall},
        rules,
        sessions::{self, SessionQuery},
        stats, PageParams,
    },
    wire, AppState,
};

type AppStateRef = State<Arc<AppState>>;

/// `GET /health`: per-component status (never blocks on a dependency for
/// long); 200 when healthy or degraded, 503 when unhealthy.
pub(super) async fn health(State(state): AppStateRef) -> Response {
    let health = health::check(&state).await;
    let body = seed_shapes::health(&health);
    let code = match health.status {
        Overall::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        Overall::Healthy | Overall::Degraded => StatusCode::OK,
    };
    (code, Json(body)).into_response()
}

/// `GET /stats`: seed 001's fields plus counts and component states.
pub(super) async fn stats(State(state): AppStateRef) -> ApiResult<Json<Value>> {
    Ok(Json(seed_shapes::stats(&stats::get(&state).await?)))
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): AppStateRef) -> Response {
    if !state.config.monitoring.enable_prometheus {
        return ApiError::not_found("route", "/metrics").into_response();
    }
    let text = stats::prometheus_text(&state).await;
    (
        // prometheus-client writes OpenMetrics (counter families named
        // without `_total`, a closing `# EOF`); say so, so scrapers parse it as such.
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Query parameters of the list endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    page_size: i32,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    include_consumed: bool,
    #[serde(default)]
    status: String,
    #[serde(default)]
    shard: String,
}

impl ListQuery {
    fn page(&self) -> PageParams {
        PageParams {
            page_size: self.page_size,
            page_token: self.page_token.clone(),
        }
    }
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::invalid("query", e.body_text()))
}

/// `GET /accounts/{id}`: the account with its progression (null when none
/// is recorded), each in proto3 JSON.
#[derive(Serialize)]
pub(super) struct AccountView {
    account: proto::Account,
    progression: Option<proto::Progression>,
}

/// `GET /sessions/{id}`: the session with its progression.
#[derive(Serialize)]
pub(super) struct SessionView {
    session: proto::Session,
    progression: Option<proto::Progression>,
}

/// `GET /accounts/{id}`: the account and its linear progression.
pub(super) async fn get_account(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    let view = accounts::get_with_progression(&state, &id).await?;
    Ok(Json(AccountView {
        account: view.account.into(),
        progression: view.progression.map(Into::into),
    }))
}

/// `GET /accounts`: accounts, newest first.
pub(super) async fn list_accounts(
    State(state): AppStateRef,
    q: QueryResult<ListQuery>,
) -> ApiResult<Json<ListAccountsResponse>> {
    let q = query(q)?;
    let page = accounts::list(&state, &q.owner, &q.shard, &q.page()).await?;
    Ok(Json(ListAccountsResponse {
        accounts: wire::all(page.items),
        next_page_token: page.next_page_token,
    }))
}

/// `GET /account-requests?status=`: account requests, newest first.
pub(super) async fn list_account_requests(
    State(state): AppStateRef,
    q: QueryResult<ListQuery>,
) -> ApiResult<Json<ListAccountRequestsResponse>> {
    let q = query(q)?;
    let status = accounts::status_from_name(&q.status)?;
    let page = accounts::list_requests(&state, status, &q.shard, &q.page()).await?;
    Ok(Json(ListAccountRequestsResponse {
        requests: wire::all(page.items),
        next_page_token: page.next_page_token,
    }))
}

/// `GET /sessions/{id}`: the session and its linear progression.
pub(super) async fn get_session(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let view = sessions::get_with_progression(&state, &id).await?;
    Ok(Json(SessionView {
        session: view.session.into(),
        progression: view.progression.map(Into::into),
    }))
}

/// `GET /sessions`: live sessions (all with `include_consumed=true`), newest first.
pub(super) async fn list_sessions(
    State(state): AppStateRef,
    q: QueryResult<ListQuery>,
) -> ApiResult<Json<ListSessionsResponse>> {
    let q = query(q)?;
    let filter = SessionQuery {
        owner: q.owner.clone(),
        namespace: q.namespace.clone(),
        include_consumed: q.include_consumed,
        shard: q.shard.clone(),
    };
    let page = sessions::list(&state, &filter, &q.page()).await?;
    Ok(Json(ListSessionsResponse {
        sessions: wire::all(page.items),
        next_page_token: page.next_page_token,
    }))
}

/// `GET /progressions/{id}`: an entity's linear progression.
pub(super) async fn get_progression(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<proto::Progression>> {
    Ok(Json(sessions::progression(&state, &id).await?.into()))
}

/// `/events` query parameters (seed 000: limit, offset, event_type).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    limit: Option<i32>,
    offset: Option<i64>,
    event_type: Option<String>,
    after_sequence: Option<u64>,
    entity_id: Option<String>,
    shard: Option<String>,
}

/// `GET /events?limit=100&offset=0&event_type=session_created`: a
/// ListEventsResponse.
pub(super) async fn list_events(
    State(state): AppStateRef,
    q: QueryResult<EventsQuery>,
) -> ApiResult<Json<ListEventsResponse>> {
    let q = query(q)?;
    let event_type = q.event_type.as_deref().unwrap_or_default();
    let request = EventListQuery {
        limit: q.limit.unwrap_or(100),
        offset: q.offset.unwrap_or(0),
        event_type: events::event_type_from_name("event_type", event_type)?,
        after_sequence: q.after_sequence,
        entity_id: q.entity_id.unwrap_or_default(),
        shard: q.shard.unwrap_or_default(),
    };
    let page = events::list(&state, &request).await?;
    Ok(Json(ListEventsResponse {
        events: page.events,
        head_sequence: page.head_sequence,
        oldest_sequence: page.oldest_sequence,
    }))
}

/// `POST /rules` with seed 000's rule JSON; answers 201 with the stored rule
/// in the same shape.
pub(super) async fn create_rule(
    State(state): AppStateRef,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    require_json(&headers)?;
    let seed = parse_seed_rule(&body)?;
    let stored = rules::create(&state, Some(ProgressionRule::from(seed))).await?;
    Ok((StatusCode::CREATED, Json(seed_shapes::rule(&stored)?)).into_response())
}

/// `POST /account-requests` with a RequestAccountRequest in proto3 JSON
/// (`{"owner", "capabilities", "initStateHash"?, "idempotencyKey"?}`; the
/// proto field names are accepted too); answers 201 with a
/// RequestAccountResponse.
pub(super) async fn create_account_request(
    State(state): AppStateRef,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    require_json(&headers)?;
    let request: RequestAccountRequest = parse_body(&body)?;
    let placed = accounts::request_account(&state, &request).await?;
    let body = RequestAccountResponse {
        request: Some(placed.request.into()),
        signature: placed.signature,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /entities/{id}`: whatever `id` names, an account, a session or an
/// account request, as `{"kind", "record", "progression"}` (the console's
/// search; the record and progression in proto3 JSON).
pub(super) async fn get_entity(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    match accounts::get_with_progression(&state, &id).await {
        Ok(view) => {
            let account: proto::Account = view.account.into();
            let progression = view.progression.map(proto::Progression::from);
            return Ok(Json(entity("account", json(&account), json(&progression))));
        }
        Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    match sessions::get_with_progression(&state, &id).await {
        Ok(view) => {
            let session: proto::Session = view.session.into();
            let progression = view.progression.map(proto::Progression::from);
            return Ok(Json(entity("session", json(&session), json(&progression))));
        }
        Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let request: proto::AccountRequest = accounts::get_request(&state, &id)
        .await
        .map_err(|e| match e {
            ApiError::NotFound { .. } => ApiError::not_found("entity", &id),
            other => other,
        })?
        .into();
    let progression = sessions::progression(&state, &id)
        .await
        .ok()
        .map(proto::Progression::from);
    Ok(Json(entity(
        "account request",
        json(&request),
        json(&progression),
    )))
}

fn entity(kind: &str, record: Value, progression: Value) -> Value {
    json!({ "kind": kind, "record": record, "progression": progression })
}

/// A message as a JSON value (proto3 JSON, through pbjson's impls).
fn json<T: Serialize>(message: &T) -> Value {
    serde_json::to_value(message).unwrap_or_default()
}

/// `GET /account-requests/{id}`: one account request.
pub(super) async fn get_account_request(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<proto::AccountRequest>> {
    Ok(Json(accounts::get_request(&state, &id).await?.into()))
}

/// `POST /account-requests/{id}/retry` (RetryAccountRequest).
pub(super) async fn retry_account_request(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<RetryAccountRequestResponse>> {
    let request = accounts::retry_request(&state, &id).await?;
    Ok(Json(RetryAccountRequestResponse {
        request: Some(request.into()),
    }))
}

/// Bodies must say they are JSON. Browsers send `text/plain` (and form
/// types) cross-origin without a preflight, so accepting them would let any
/// web page post to a server on loopback.
fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "the body must be application/json, not {:?}",
        if given.is_empty() { "(none)" } else { given }
    )))
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
pub(super) async fn list_rules(
    State(state): AppStateRef,
    q: QueryResult<ListQuery>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let page = rules::list(&state, false, &q.page()).await?;
    let list: Vec<Value> = page
        .items
        .iter()
        .map(seed_shapes::rule)
        .collect::<ApiResult<_>>()?;
    Ok(Json(
        json!({ "rules": list, "next_page_token": page.next_page_token }),
    ))
}

/// `GET /rules/{id}`: one rule in seed 000's JSON shape.
pub(super) async fn get_rule(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(seed_shapes::rule(&rules::get(&state, &id).await?)?))
}

/// `POST /rules/{id}/enable` (SetRuleEnabled): the rule, seed 000's shape.
pub(super) async fn enable_rule(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(seed_shapes::rule(
        &rules::set_enabled(&state, &id, true).await?,
    )?))
}

/// `POST /rules/{id}/disable` (SetRuleEnabled): the rule, seed 000's shape.
pub(super) async fn disable_rule(
    State(state): AppStateRef,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(seed_shapes::rule(
        &rules::set_enabled(&state, &id, false).await?,
    )?))
}

/// `/rules/{id}/evaluate` query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EvaluateQuery {
    limit: Option<i32>,
}

/// `GET /rules/{id}/evaluate?limit=`: EvaluateRule's dry run of a stored
/// rule (the live sessions it matches now); an EvaluateRuleResponse.
pub(super) async fn evaluate_rule(
    State(state): AppStateRef,
    Path(id): Path<String>,
    q: QueryResult<EvaluateQuery>,
) -> ApiResult<Json<EvaluateRuleResponse>> {
    let q = query(q)?;
    let found = rules::evaluate(&state, Some(Target::Id(id)), q.limit.unwrap_or(0)).await?;
    Ok(Json(EvaluateRuleResponse {
        matches: found.matches,
        sessions_evaluated: found.sessions_evaluated,
    }))
}

/// `GET /singletons` (GetSingletons; admin, as over gRPC): each
/// singleton's status and history.
pub(super) async fn get_singletons(
    State(state): AppStateRef,
) -> ApiResult<Json<GetSingletonsResponse>> {
    let singletons = state.singletons.get().await?;
    Ok(Json(GetSingletonsResponse { singletons }))
}

/// A singleton named in a path: processor, scheduler or diff; `all`: None.
fn singleton_target(name: &str) -> ApiResult<Option<crate::singletons::Kind>> {
    if name == "all" {
        return Ok(None);
    }
    crate::singletons::Kind::from_name(name)
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                "singleton",
                format!("{name:?} is not processor, scheduler, diff or all"),
            )
        })
}

/// `POST /singletons/{kind}/pause` (PauseSingleton; admin; `all` pauses
/// every one).
pub(super) async fn pause_singleton(
    State(state): AppStateRef,
    Path(kind): Path<String>,
) -> ApiResult<Json<PauseSingletonResponse>> {
    let (singletons, message) = state.singletons.pause(singleton_target(&kind)?).await?;
    Ok(Json(PauseSingletonResponse {
        singletons,
        message,
    }))
}

/// `POST /singletons/{kind}/resume` (ResumeSingleton; admin).
pub(super) async fn resume_singleton(
    State(state): AppStateRef,
    Path(kind): Path<String>,
) -> ApiResult<Json<ResumeSingletonResponse>> {
    let (singletons, message) = state.singletons.resume(singleton_target(&kind)?).await?;
    Ok(Json(ResumeSingletonResponse {
        singletons,
        message,
    }))
}

/// Unknown routes: JSON 404.
pub(super) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("route", uri.path())
}

/// Known routes asked with another method: JSON 405 (axum adds `allow`).
pub(super) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
