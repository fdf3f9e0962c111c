//! `LifecycleService`: decodes each call, makes one call into
//! [`crate::service`] and encodes the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    lifecycle_service_server::LifecycleService, GetAccountRequest, GetAccountResponse,
    GetProgressionRequest, GetProgressionResponse, GetSessionRequest, GetSessionResponse,
    GetStatsRequest, GetStatsResponse, ListAccountRequestsRequest, ListAccountRequestsResponse,
    ListAccountsRequest, ListAccountsResponse, ListEventsRequest, ListEventsResponse,
    ListSessionsRequest, ListSessionsResponse, RequestAccountRequest, RequestAccountResponse,
    RetryAccountRequestRequest, RetryAccountRequestResponse,
};

use crate::{
    service::{
        accounts, events,
        events::EventListQuery,
        sessions::{self, SessionQuery},
        stats, PageParams,
    },
    wire, AppState,
};

/// The LifecycleService implementation.
pub(crate) struct LifecycleApi {
    state: Arc<AppState>,
}

impl LifecycleApi {
    /// Serves from `state`.
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        LifecycleApi { state }
    }
}

fn page(page_size: i32, page_token: String) -> PageParams {
    PageParams {
        page_size,
        page_token,
    }
}

#[tonic::async_trait]
impl LifecycleService for LifecycleApi {
    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<GetAccountResponse>, Status> {
        let account = accounts::get(&self.state, &request.get_ref().id).await?;
        Ok(Response::new(GetAccountResponse {
            account: Some(account.into()),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        let r = request.into_inner();
        let page = page(r.page_size, r.page_token);
        let found = accounts::list(&self.state, &r.owner, &r.shard, &page).await?;
        Ok(Response::new(ListAccountsResponse {
            accounts: wire::all(found.items),
            next_page_token: found.next_page_token,
        }))
    }

    async fn list_account_requests(
        &self,
        request: Request<ListAccountRequestsRequest>,
    ) -> Result<Response<ListAccountRequestsResponse>, Status> {
        let r = request.into_inner();
        let status = accounts::status_from_number(r.status)?;
        let page = page(r.page_size, r.page_token);
        let found = accounts::list_requests(&self.state, status, &r.shard, &page).await?;
        Ok(Response::new(ListAccountRequestsResponse {
            requests: wire::all(found.items),
            next_page_token: found.next_page_token,
        }))
    }

    async fn request_account(
        &self,
        request: Request<RequestAccountRequest>,
    ) -> Result<Response<RequestAccountResponse>, Status> {
        let placed = accounts::request_account(&self.state, request.get_ref()).await?;
        Ok(Response::new(RequestAccountResponse {
            request: Some(placed.request.into()),
            signature: placed.signature,
        }))
    }

    async fn retry_account_request(
        &self,
        request: Request<RetryAccountRequestRequest>,
    ) -> Result<Response<RetryAccountRequestResponse>, Status> {
        let request = accounts::retry_request(&self.state, &request.get_ref().id).await?;
        Ok(Response::new(RetryAccountRequestResponse {
            request: Some(request.into()),
        }))
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<GetSessionResponse>, Status> {
        let session = sessions::get(&self.state, &request.get_ref().id).await?;
        Ok(Response::new(GetSessionResponse {
            session: Some(session.into()),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let r = request.into_inner();
        let query = SessionQuery {
            owner: r.owner,
            namespace: r.namespace,
            include_consumed: r.include_consumed,
            shard: r.shard,
        };
        let found = sessions::list(&self.state, &query, &page(r.page_size, r.page_token)).await?;
        Ok(Response::new(ListSessionsResponse {
            sessions: wire::all(found.items),
            next_page_token: found.next_page_token,
        }))
    }

    async fn get_progression(
        &self,
        request: Request<GetProgressionRequest>,
    ) -> Result<Response<GetProgressionResponse>, Status> {
        let progression = sessions::progression(&self.state, &request.get_ref().entity_id).await?;
        Ok(Response::new(GetProgressionResponse {
            progression: Some(progression.into()),
        }))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let r = request.into_inner();
        let query = EventListQuery {
            limit: r.limit,
            offset: r.offset,
            event_type: events::event_type_from_number("event_type", r.event_type)?,
            after_sequence: r.after_sequence,
            entity_id: r.entity_id,
            shard: r.shard,
        };
        let found = events::list(&self.state, &query).await?;
        Ok(Response::new(ListEventsResponse {
            events: found.events,
            head_sequence: found.head_sequence,
            oldest_sequence: found.oldest_sequence,
        }))
    }

    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        Ok(Response::new(stats::get(&self.state).await?))
    }
}
