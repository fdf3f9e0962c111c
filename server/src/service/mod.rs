//! The domain layer under both faces. The gRPC services (`grpc/`) and the
//! REST gateway (`gateway/`) decode their request, make one call here and
//! encode the answer; validation, paging, store and chain calls live here
//! only, so the two faces cannot drift apart.
//!
//! Each call takes plain values (the faces turn their wire form into
//! these: a gRPC enum number and a REST query string both become
//! [`RequestStatus`](crate::store::RequestStatus)) and returns records and
//! an [`ApiError`](crate::error::ApiError) that both faces map the same way.

pub(crate) mod accounts;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod rules;
pub(crate) mod sessions;
pub(crate) mod stats;

use crate::{error::ApiResult, validate};

/// A page of a list and the token of the next one (empty on the last page).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page<T> {
    /// The records of this page.
    pub items: Vec<T>,
    /// Where the next page starts; empty when this page is the last.
    pub next_page_token: String,
}

/// A checked page request: how many and from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRequest {
    pub(crate) limit: u32,
    pub(crate) offset: u64,
}

impl PageRequest {
    /// Checks `page_size` (0 means the default) and `page_token`.
    pub(crate) fn parse(page_size: i32, page_token: &str) -> ApiResult<Self> {
        Ok(PageRequest {
            limit: validate::page_size("page_size", page_size)?,
            offset: validate::page_token(page_token)?,
        })
    }

    /// The page of `items` fetched for this request.
    pub(crate) fn page<T>(self, items: Vec<T>) -> Page<T> {
        let next_page_token = validate::next_page_token(self.offset, self.limit, items.len());
        Page {
            items,
            next_page_token,
        }
    }
}

/// What the caller asked for in a list call: a page size (0 = default) and
/// the token of the previous answer (empty = first page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PageParams {
    /// Records per page; 0 means the default, larger than the maximum is capped.
    pub page_size: i32,
    /// `next_page_token` of the previous page, or empty.
    pub page_token: String,
}

/// `value` unless empty: both faces send "" for "not given".
pub(crate) fn given(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}
