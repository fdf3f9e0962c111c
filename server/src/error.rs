//! One error vocabulary for both faces of the server: every handler returns
//! [`ApiError`], which maps to a `tonic::Status` and to an HTTP response in
//! one place. Internal causes are logged where they are converted and never
//! sent to clients.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::store::StoreError;

/// A domain error with the gRPC/HTTP meaning decided up front.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is malformed; the message names it.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The offending field (`rule.condition`, `page_size`, ...).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The entity does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Entity kind (`account`, `rule`, ...).
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The entity exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// Entity kind.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// The system is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A cursor or position outside the valid range.
    #[error("{0}")]
    OutOfRange(String),
    /// A resume cursor older than the retained log.
    #[error("{message}")]
    Pruned {
        /// What happened, naming the oldest sequence.
        message: String,
        /// The oldest sequence still available (also a detail, so a
        /// client resumes without parsing the message).
        oldest: u64,
    },
    /// No or unknown credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the needed role.
    #[error("{0}")]
    PermissionDenied(String),
    /// A REST body of a media type the endpoint does not take (HTTP 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A limit was hit; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A request message or body over `server.max_message_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// A REST route asked with a method it does not take (HTTP 405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request did not finish within its time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A dependency (store, chain) is unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The operation arrives with a later release.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else; details are logged, not returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// An InvalidArgument error naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A NotFound error.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// A request message (gRPC) or body (REST) of `size` bytes, when
    /// known, over `limit`; the message names the setting.
    pub fn too_large(what: &str, size: Option<u64>, limit: usize) -> Self {
        ApiError::TooLarge(match size {
            Some(size) => format!(
                "request {what} is {size} bytes; the limit is {limit} bytes (server.max_message_bytes)"
            ),
            None => format!(
                "request {what} is over the limit of {limit} bytes (server.max_message_bytes)"
            ),
        })
    }

    /// The gRPC code of this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::InvalidArgument { .. } => tonic::Code::InvalidArgument,
            ApiError::NotFound { .. } => tonic::Code::NotFound,
            ApiError::AlreadyExists { .. } => tonic::Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            ApiError::OutOfRange(_) | ApiError::Pruned { .. } => tonic::Code::OutOfRange,
            ApiError::UnsupportedMediaType(_) => tonic::Code::InvalidArgument,
            ApiError::Unauthenticated(_) => tonic::Code::Unauthenticated,
            ApiError::PermissionDenied(_) => tonic::Code::PermissionDenied,
            ApiError::ResourceExhausted(_) => tonic::Code::ResourceExhausted,
            // What gRPC itself answers for an oversized message (grpc-go,
            // grpc-java); tonic's OUT_OF_RANGE is its own choice.
            ApiError::TooLarge(_) => tonic::Code::ResourceExhausted,
            ApiError::MethodNotAllowed(_) => tonic::Code::Unimplemented,
            ApiError::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            ApiError::Unavailable(_) => tonic::Code::Unavailable,
            ApiError::Unimplemented(_) => tonic::Code::Unimplemented,
            ApiError::Internal(_) => tonic::Code::Internal,
        }
    }

    /// The HTTP status of this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } => StatusCode::CONFLICT,
            ApiError::FailedPrecondition(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::OutOfRange(_) | ApiError::Pruned { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::DeadlineExceeded(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable reason (google.rpc.ErrorInfo.reason,
    /// UPPER_SNAKE_CASE as AIP-193 asks): what a client branches on.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument { .. } => "INVALID_FIELD",
            ApiError::NotFound { .. } => "NOT_FOUND",
            ApiError::AlreadyExists { .. } => "ALREADY_EXISTS",
            ApiError::FailedPrecondition(_) => "FAILED_PRECONDITION",
            ApiError::OutOfRange(_) => "OUT_OF_RANGE",
            ApiError::Pruned { .. } => "CURSOR_PRUNED",
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::PermissionDenied(_) => "PERMISSION_DENIED",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            ApiError::TooLarge(_) => "MESSAGE_TOO_LARGE",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Unimplemented(_) => "UNIMPLEMENTED",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// The field at fault, for invalid input.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }

    /// ErrorInfo metadata: what the reason concerns.
    fn metadata(&self) -> std::collections::HashMap<String, String> {
        let mut m = std::collections::HashMap::new();
        match self {
            ApiError::InvalidArgument { field, .. } => {
                m.insert("field".into(), field.clone());
            }
            ApiError::NotFound { kind, id } | ApiError::AlreadyExists { kind, id } => {
                m.insert("kind".into(), (*kind).to_string());
                m.insert("id".into(), id.clone());
            }
            ApiError::Pruned { oldest, .. } => {
                m.insert("oldest_sequence".into(), oldest.to_string());
            }
            _ => {}
        }
        m
    }

    /// The google.rpc details of this error: ErrorInfo always, BadRequest
    /// for invalid input.
    fn details(&self) -> tonic_types::ErrorDetails {
        let mut details = tonic_types::ErrorDetails::with_error_info(
            self.reason(),
            ERROR_DOMAIN,
            self.metadata(),
        );
        if let ApiError::InvalidArgument { field, message } = self {
            details.add_bad_request_violation(field.clone(), message.clone());
        }
        details
    }

    fn log_internal(&self) {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
    }
}

/// ErrorInfo.domain of every error this server returns.
pub const ERROR_DOMAIN: &str = "lifecycle.valence";

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        use tonic_types::StatusExt as _;
        err.log_internal();
        tonic::Status::with_error_details(err.grpc_code(), err.to_string(), err.details())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_internal();
        let mut body = json!({
            "error": self.to_string(),
            "code": format!("{:?}", self.grpc_code()),
            "reason": self.reason(),
            "domain": ERROR_DOMAIN,
        });
        if let Some(field) = self.field() {
            body["field"] = json!(field);
        }
        if let ApiError::Pruned { oldest, .. } = &self {
            body["oldest_sequence"] = json!(oldest);
        }
        (self.http_status(), Json(body)).into_response()
    }
}

/// The body of a REST error produced outside [`ApiError`] (the edge's own
/// answers): `{"error": message, "code": <gRPC code name>}`.
pub(crate) fn rest_error(status: StatusCode, code: tonic::Code, message: &str) -> Response {
    let body = json!({ "error": message, "code": format!("{code:?}") });
    (status, Json(body)).into_response()
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { kind, id } => ApiError::NotFound { kind, id },
            StoreError::AlreadyExists { kind, id } => ApiError::AlreadyExists { kind, id },
            StoreError::Conflict(message) => ApiError::FailedPrecondition(message),
            fenced @ StoreError::Fenced { .. } => ApiError::FailedPrecondition(fenced.to_string()),
            StoreError::Invalid { field, message } => ApiError::InvalidArgument { field, message },
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                ApiError::Unavailable("the store is unavailable; retry later".into())
            }
            StoreError::Other(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::Internal(err)
    }
}

/// Result alias for handlers and store calls.
pub type ApiResult<T> = Result<T, ApiError>;

/// Longest failure reason stored or put in an event (RPC errors can carry
/// whole transaction logs).
pub const MAX_REASON: usize = 500;

/// `reason` as text, cut at [`MAX_REASON`] bytes (on a character boundary,
/// marked with `…`).
pub fn brief(reason: impl std::fmt::Display) -> String {
    let mut text = reason.to_string();
    if text.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
