//! The store's own error vocabulary. Backend error codes (unique
//! violations, closed pools, timeouts) become one of these here, once;
//! [`crate::error::ApiError`] maps them to gRPC and HTTP codes in one
//! place (`From<StoreError>`), so no caller inspects a database error.

use super::UnknownState;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No record with that id.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Record kind (`account`, `rule`, ...).
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A record with that id exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// Record kind.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A guarded transition found the record in another state than the
    /// one it requires; the message says which.
    #[error("{0}")]
    Conflict(String),
    /// The record cannot be stored as given (a field the caller should
    /// have checked).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A write of a shard's chain work made under a lease epoch that has
    /// moved on: another replica owns the shard now, and nothing was written.
    #[error("shard {shard}: lease epoch {held} is stale (the shard is at epoch {current}); nothing was written")]
    Fenced {
        /// The shard's program id.
        shard: String,
        /// The epoch this writer was granted.
        held: i64,
        /// The shard's epoch in the store (0: no lease row).
        current: i64,
    },
    /// The database does not answer (pool timed out or closed, I/O).
    #[error("the store is unavailable; retry later")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a failed query, a damaged row.
    #[error("store error: {0:#}")]
    Other(anyhow::Error),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A NotFound error.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// A damaged or unreadable row.
    pub(super) fn damaged(message: String) -> Self {
        StoreError::Other(anyhow::anyhow!(message))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err)
            }
            sqlx::Error::RowNotFound => StoreError::Other(anyhow::anyhow!("row not found")),
            other => StoreError::Other(other.into()),
        }
    }
}

impl From<UnknownState> for StoreError {
    fn from(e: UnknownState) -> Self {
        StoreError::Other(anyhow::Error::new(e).context("decoding a stored row"))
    }
}

impl From<anyhow::Error> for StoreError {
    fn from(err: anyhow::Error) -> Self {
        StoreError::Other(err)
    }
}
