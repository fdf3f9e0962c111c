//! `LifecycleService`: read access to accounts, requests, sessions,
//! progressions, the event log and statistics; account requests placed
//! and retried for clients (operator role).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    lifecycle_service_server::LifecycleService, AccountRequestStatus, EventType, GetAccountRequest,
    GetAccountResponse, GetProgressionRequest, GetProgressionResponse, GetSessionRequest,
    GetSessionResponse, GetStatsRequest, GetStatsResponse, ListAccountRequestsRequest,
    ListAccountRequestsResponse, ListAccountsRequest, ListAccountsResponse, ListEventsRequest,
    ListEventsResponse, ListSessionsRequest, ListSessionsResponse, RequestAccountRequest,
    RequestAccountResponse, RetryAccountRequestRequest, RetryAccountRequestResponse,
};

use crate::{
    builder::placing,
    error::{ApiError, ApiResult},
    store::{EventQuery, SessionFilter},
    validate, AppState,
};

/// The LifecycleService implementation.
pub struct LifecycleApi {
    state: Arc<AppState>,
}

impl LifecycleApi {
    /// Serves from `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        LifecycleApi { state }
    }
}

fn optional(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// Parses an EventType filter where 0 means "all".
pub(crate) fn event_type_filter(field: &str, value: i32) -> ApiResult<Option<EventType>> {
    match EventType::try_from(value) {
        Ok(EventType::Unspecified) => Ok(None),
        Ok(t) => Ok(Some(t)),
        Err(_) => Err(ApiError::invalid(
            field,
            format!("{value} is not an event type"),
        )),
    }
}

/// RequestAccount, shared with the REST gateway.
pub(crate) async fn request_account(
    state: &AppState,
    r: &RequestAccountRequest,
) -> ApiResult<RequestAccountResponse> {
    let new = placing::validate(r)?;
    let chain = state.chain.as_ref().ok_or_else(|| {
        ApiError::FailedPrecondition(
            "this server watches no chain (rpc.url empty and rpc.embedded false)".into(),
        )
    })?;
    let (request, signature) = placing::place(chain, &state.store, new).await?;
    Ok(RequestAccountResponse {
        request: Some(request),
        signature,
    })
}

/// RetryAccountRequest, shared with the REST gateway.
pub(crate) async fn retry_account_request(
    state: &AppState,
    id: &str,
) -> ApiResult<RetryAccountRequestResponse> {
    validate::pubkey("id", id)?;
    let request = state.store.requeue_failed(id).await?;
    tracing::info!(request = %id, "account request put back in the queue");
    Ok(RetryAccountRequestResponse {
        request: Some(request),
    })
}

/// ListEvents, shared with the REST gateway.
pub(crate) async fn list_events(
    state: &AppState,
    r: &ListEventsRequest,
) -> ApiResult<ListEventsResponse> {
    let limit = validate::page_size("limit", r.limit)?;
    if r.offset < 0 {
        return Err(ApiError::invalid(
            "offset",
            format!("{} is negative", r.offset),
        ));
    }
    let query = EventQuery {
        event_type: event_type_filter("event_type", r.event_type)?,
        entity_id: optional(&r.entity_id).map(str::to_string),
    };
    let events = state
        .store
        .list_events(&query, r.after_sequence, limit, r.offset as u64)
        .await?;
    Ok(ListEventsResponse {
        events,
        head_sequence: state.store.head_sequence().await?,
        oldest_sequence: state.store.oldest_sequence().await?,
    })
}

#[tonic::async_trait]
impl LifecycleService for LifecycleApi {
    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        let id = &request.get_ref().id;
        validate::pubkey("id", id)?;
        let account = self.state.store.get_account(id).await?;
        Ok(Response::new(GetAccountResponse {
            account: Some(account),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        let r = request.get_ref();
        let limit = validate::page_size("page_size", r.page_size)?;
        let offset = validate::page_token(&r.page_token)?;
        if let Some(owner) = optional(&r.owner) {
            validate::pubkey("owner", owner)?;
        }
        let accounts = self
            .state
            .store
            .list_accounts(optional(&r.owner), limit, offset)
            .await?;
        let next_page_token = validate::next_page_token(offset, limit, accounts.len());
        Ok(Response::new(ListAccountsResponse {
            accounts,
            next_page_token,
        }))
    }

    async fn list_account_requests(
        &self,
        request: Request<ListAccountRequestsRequest>,
    ) -> Result<Response<ListAccountRequestsResponse>, Status> {
        let r = request.get_ref();
        let limit = validate::page_size("page_size", r.page_size)?;
        let offset = validate::page_token(&r.page_token)?;
        let status = match AccountRequestStatus::try_from(r.status) {
            Ok(AccountRequestStatus::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => {
                return Err(
                    ApiError::invalid("status", format!("{} is not a status", r.status)).into(),
                )
            }
        };
        let requests = self
            .state
            .store
            .list_account_requests(status, limit, offset)
            .await?;
        let next_page_token = validate::next_page_token(offset, limit, requests.len());
        Ok(Response::new(ListAccountRequestsResponse {
            requests,
            next_page_token,
        }))
    }

    async fn request_account(
        &self,
        request: Request<RequestAccountRequest>,
    ) -> Result<Response<RequestAccountResponse>, Status> {
        Ok(Response::new(
            request_account(&self.state, request.get_ref()).await?,
        ))
    }

    async fn retry_account_request(
        &self,
        request: Request<RetryAccountRequestRequest>,
    ) -> Result<Response<RetryAccountRequestResponse>, Status> {
        Ok(Response::new(
            retry_account_request(&self.state, &request.get_ref().id).await?,
        ))
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<GetSessionResponse>, Status> {
        let id = &request.get_ref().id;
        validate::pubkey("id", id)?;
        let session = self.state.store.get_session(id).await?;
        Ok(Response::new(GetSessionResponse {
            session: Some(session),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let r = request.get_ref();
        let limit = validate::page_size("page_size", r.page_size)?;
        let offset = validate::page_token(&r.page_token)?;
        if let Some(owner) = optional(&r.owner) {
            validate::pubkey("owner", owner)?;
        }
        let filter = SessionFilter {
            include_consumed: r.include_consumed,
            owner: optional(&r.owner).map(str::to_string),
            namespace: optional(&r.namespace).map(str::to_string),
        };
        let sessions = self
            .state
            .store
            .list_sessions(&filter, limit, offset)
            .await?;
        let next_page_token = validate::next_page_token(offset, limit, sessions.len());
        Ok(Response::new(ListSessionsResponse {
            sessions,
            next_page_token,
        }))
    }

    async fn get_progression(
        &self,
        request: Request<GetProgressionRequest>,
    ) -> Result<Response<GetProgressionResponse>, Status> {
        let id = &request.get_ref().entity_id;
        validate::pubkey("entity_id", id)?;
        let progression = self.state.store.get_progression(id).await?;
        Ok(Response::new(GetProgressionResponse {
            progression: Some(progression),
        }))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        Ok(Response::new(
            list_events(&self.state, request.get_ref()).await?,
        ))
    }

    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        Ok(Response::new(self.state.stats().await?))
    }
}
