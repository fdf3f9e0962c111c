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
pub(crate) mod paging;
pub(crate) mod rules;
pub(crate) mod sessions;
pub(crate) mod stats;

pub(crate) use paging::{Page, PageParams};

/// `value` unless empty: both faces send "" for "not given".
pub(crate) fn given(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}
