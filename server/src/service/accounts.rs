//! Accounts and account requests: reads, and requests placed on chain or
//! retried for clients.
//!
//! `request_account` writes no record: it places the request on chain and
//! answers with what it placed. The leader's monitor records the request
//! when it sees it on chain, and the builder initializes it (one writer per
//! record kind; see `store::entities`). So a call taken by any replica ends
//! up recorded once, by the replica that does the chain work.

use valence_lifecycle_api::v1::RequestAccountRequest;

use super::{
    given,
    paging::{Listing, PageRequest},
    Page, PageParams,
};
use crate::{
    builder::placing,
    error::{ApiError, ApiResult},
    store::{RequestStatus, StoreError, StoredAccount, StoredProgression, StoredRequest},
    validate, AppState,
};

/// An account with its linear progression (None when none is recorded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AccountView {
    /// The account.
    pub account: StoredAccount,
    /// Its progression, from the request on.
    pub progression: Option<StoredProgression>,
}

/// A request placed by `request_account`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlacedRequest {
    /// The request as placed (or as recorded, for an idempotent repeat).
    pub request: StoredRequest,
    /// Signature of the placing transaction; empty for a repeat.
    pub signature: String,
}

/// One account.
pub(crate) async fn get(state: &AppState, id: &str) -> ApiResult<StoredAccount> {
    validate::pubkey("id", id)?;
    Ok(state.store.get_account(id).await?)
}

/// One account request.
pub(crate) async fn get_request(state: &AppState, id: &str) -> ApiResult<StoredRequest> {
    validate::pubkey("id", id)?;
    Ok(state.store.get_account_request(id).await?)
}

/// One account and its progression.
pub(crate) async fn get_with_progression(state: &AppState, id: &str) -> ApiResult<AccountView> {
    let account = get(state, id).await?;
    let progression = super::sessions::progression_if_any(state, id).await?;
    Ok(AccountView {
        account,
        progression,
    })
}

/// Accounts, newest first, optionally of one owner and one shard ("" = any).
pub(crate) async fn list(
    state: &AppState,
    owner: &str,
    shard: &str,
    page: &PageParams,
) -> ApiResult<Page<StoredAccount>> {
    let owner = given(owner);
    if let Some(owner) = owner {
        validate::pubkey("owner", owner)?;
    }
    let shard = state.shards.filter("shard", shard)?;
    let listing = Listing::new(
        "ListAccounts",
        &[
            owner.unwrap_or_default(),
            shard.as_deref().unwrap_or_default(),
        ],
    );
    let request = PageRequest::parse(page, listing)?;
    let accounts = state
        .store
        .list_accounts(
            owner,
            shard.as_deref(),
            request.after.as_ref(),
            request.fetch(),
        )
        .await?;
    Ok(request.page(accounts, StoredAccount::key))
}

/// Account requests, newest first, optionally in one status and of one
/// shard ("" = any).
pub(crate) async fn list_requests(
    state: &AppState,
    status: Option<RequestStatus>,
    shard: &str,
    page: &PageParams,
) -> ApiResult<Page<StoredRequest>> {
    let shard = state.shards.filter("shard", shard)?;
    let listing = Listing::new(
        "ListAccountRequests",
        &[
            status.map(RequestStatus::as_str).unwrap_or_default(),
            shard.as_deref().unwrap_or_default(),
        ],
    );
    let request = PageRequest::parse(page, listing)?;
    let requests = state
        .store
        .list_account_requests(
            status,
            shard.as_deref(),
            request.after.as_ref(),
            request.fetch(),
        )
        .await?;
    Ok(request.page(requests, StoredRequest::key))
}

/// Places an account request on chain for a client (paid by the service
/// wallet); idempotent per `idempotency_key`.
pub(crate) async fn request_account(
    state: &AppState,
    r: &RequestAccountRequest,
) -> ApiResult<PlacedRequest> {
    let new = placing::validate(r)?;
    let chain = state.chain.as_ref().ok_or_else(|| {
        ApiError::FailedPrecondition(
            "this server watches no chain (rpc.url empty and rpc.embedded false)".into(),
        )
    })?;
    // On the named shard's program, or the first shard's.
    let chain = match state.shards.resolve("shard", &r.shard)? {
        Some(shard) => chain.for_program(shard.program),
        None => chain.clone(),
    };
    let placed = placing::place(&chain, new).await?;
    // A repeat of a request the leader already recorded answers with the
    // record (its status may have moved on); reading is not writing.
    let request = match state.store.get_account_request(&placed.request.id).await {
        Ok(recorded) => recorded,
        Err(StoreError::NotFound { .. }) => placed.request,
        Err(e) => return Err(e.into()),
    };
    Ok(PlacedRequest {
        request,
        signature: placed.signature,
    })
}

/// Puts a failed request back in the builder's queue.
pub(crate) async fn retry_request(state: &AppState, id: &str) -> ApiResult<StoredRequest> {
    validate::pubkey("id", id)?;
    let request = state.store.requeue_failed(id).await?;
    tracing::info!(request = %id, "account request put back in the queue");
    Ok(request)
}

/// A status filter given as a number (gRPC): 0 means any.
pub(crate) fn status_from_number(value: i32) -> ApiResult<Option<RequestStatus>> {
    use valence_lifecycle_api::v1::AccountRequestStatus;
    let status = AccountRequestStatus::try_from(value)
        .map_err(|_| ApiError::invalid("status", format!("{value} is not a status")))?;
    Ok(RequestStatus::try_from(status).ok())
}

/// A status filter given by name (REST: `pending` or
/// `ACCOUNT_REQUEST_STATUS_PENDING`): empty means any.
pub(crate) fn status_from_name(name: &str) -> ApiResult<Option<RequestStatus>> {
    use valence_lifecycle_api::v1::AccountRequestStatus;
    if name.is_empty() {
        return Ok(None);
    }
    let unknown = || {
        ApiError::invalid(
            "status",
            format!("{name:?} is not pending, processing, initialized or failed"),
        )
    };
    let number = valence_lifecycle_api::json::parse_name::<AccountRequestStatus>(name)
        .ok_or_else(unknown)?;
    status_from_number(number)?.map(Some).ok_or_else(unknown)
}
