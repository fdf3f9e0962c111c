//! Sessions and linear progressions: reads.

use super::{
    given,
    paging::{Listing, PageRequest},
    Page, PageParams,
};
use crate::{
    error::ApiResult,
    store::{SessionFilter, StoreError, StoredProgression, StoredSession},
    validate, AppState,
};

/// A session with its linear progression (None when none is recorded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionView {
    /// The session.
    pub session: StoredSession,
    /// Its progression.
    pub progression: Option<StoredProgression>,
}

/// Which sessions a list call wants ("" = any owner or namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionQuery {
    /// Only sessions of this owner.
    pub owner: String,
    /// Only sessions in this namespace.
    pub namespace: String,
    /// Consumed sessions too.
    pub include_consumed: bool,
    /// Only sessions of this shard (program id or name; "" = any).
    pub shard: String,
}

/// One session.
pub(crate) async fn get(state: &AppState, id: &str) -> ApiResult<StoredSession> {
    validate::pubkey("id", id)?;
    Ok(state.store.get_session(id).await?)
}

/// One session and its progression.
pub(crate) async fn get_with_progression(state: &AppState, id: &str) -> ApiResult<SessionView> {
    let session = get(state, id).await?;
    let progression = progression_if_any(state, id).await?;
    Ok(SessionView {
        session,
        progression,
    })
}

/// Sessions, newest first.
pub(crate) async fn list(
    state: &AppState,
    query: &SessionQuery,
    page: &PageParams,
) -> ApiResult<Page<StoredSession>> {
    if let Some(owner) = given(&query.owner) {
        validate::pubkey("owner", owner)?;
    }
    validate::text("namespace", &query.namespace)?;
    let shard = state.shards.filter("shard", &query.shard)?;
    let listing = Listing::new(
        "ListSessions",
        &[
            if query.include_consumed {
                "all"
            } else {
                "live"
            },
            &query.owner,
            &query.namespace,
            shard.as_deref().unwrap_or_default(),
        ],
    );
    let request = PageRequest::parse(page, listing)?;
    let filter = SessionFilter {
        include_consumed: query.include_consumed,
        owner: given(&query.owner).map(str::to_string),
        namespace: given(&query.namespace).map(str::to_string),
        shard,
    };
    let sessions = state
        .store
        .list_sessions(&filter, request.after.as_ref(), request.fetch())
        .await?;
    Ok(request.page(sessions, StoredSession::key))
}

/// An entity's (account's or session's) linear progression.
pub(crate) async fn progression(state: &AppState, entity_id: &str) -> ApiResult<StoredProgression> {
    validate::pubkey("entity_id", entity_id)?;
    Ok(state.store.get_progression(entity_id).await?)
}

/// The progression of an entity known to exist: None when none is
/// recorded; any other failure is reported, not dropped.
pub(super) async fn progression_if_any(
    state: &AppState,
    entity_id: &str,
) -> ApiResult<Option<StoredProgression>> {
    match state.store.get_progression(entity_id).await {
        Ok(p) => Ok(Some(p)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
