//! Typed errors: the gRPC codes a caller is expected to act on get their own
//! variant, everything else lands in [`ClientError::Other`].

use tonic::{Code, Status};

/// Why a call failed. Every server-side variant keeps the server's message,
/// which names the problem (the field, the unknown id, the oldest retained
/// sequence, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URL.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        message: String,
    },
    /// The token cannot be sent as an HTTP header value.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The connection could not be established.
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// The transport's explanation, causes included.
        message: String,
    },
    /// INVALID_ARGUMENT: the request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// NOT_FOUND: the entity does not exist.
    #[error("{0}")]
    NotFound(String),
    /// ALREADY_EXISTS: the id is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// FAILED_PRECONDITION: the system is not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// OUT_OF_RANGE: for example a cursor older than the retained event log.
    #[error("{0}")]
    OutOfRange(String),
    /// UNAUTHENTICATED: missing or unknown token.
    #[error("{0}")]
    Unauthenticated(String),
    /// PERMISSION_DENIED: the token's role does not allow the call.
    #[error("{0}")]
    PermissionDenied(String),
    /// RESOURCE_EXHAUSTED: a limit was hit (message size, quota).
    #[error("{0}")]
    ResourceExhausted(String),
    /// UNAVAILABLE: the server is down, shutting down or unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// UNIMPLEMENTED: the server does not offer this call (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// Any other gRPC code (UNKNOWN, INTERNAL, DEADLINE_EXCEEDED, ...).
    #[error("{message}")]
    Other {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
}

impl ClientError {
    /// The gRPC code of the error. Local failures map to the code a server
    /// would have used: a bad endpoint or token is INVALID_ARGUMENT, a failed
    /// connection UNAVAILABLE.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidEndpoint { .. } | Self::InvalidToken(_) | Self::InvalidArgument(_) => {
                Code::InvalidArgument
            }
            Self::Connect { .. } | Self::Unavailable(_) => Code::Unavailable,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::Other { code, .. } => *code,
        }
    }

    /// The code's canonical name in lower case (`not_found`, `unavailable`),
    /// as the CLI prints it.
    pub fn code_name(&self) -> &'static str {
        code_name(self.code())
    }

    /// Whether retrying the same call later can succeed: the server or the
    /// network failed, not the request. The resilient subscription
    /// reconnects on exactly these.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Internal
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::ResourceExhausted
        )
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        // An empty message would print as "error: not_found: "; the code's
        // description is better than nothing.
        let mut message = if status.message().is_empty() {
            status.code().description().to_string()
        } else {
            status.message().to_string()
        };
        // Client-side failures ("tcp connect error") keep what actually went
        // wrong ("Connection refused") at the bottom of their source chain;
        // the layers in between only repeat the message.
        if let Some(cause) = root_cause(&status) {
            let cause = cause.to_string();
            if !message.contains(&cause) {
                message = format!("{message}: {cause}");
            }
        }
        match status.code() {
            Code::InvalidArgument => Self::InvalidArgument(message),
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            Code::FailedPrecondition => Self::FailedPrecondition(message),
            Code::OutOfRange => Self::OutOfRange(message),
            Code::Unauthenticated => Self::Unauthenticated(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::ResourceExhausted => Self::ResourceExhausted(message),
            Code::Unavailable => Self::Unavailable(message),
            Code::Unimplemented => Self::Unimplemented(message),
            code => Self::Other { code, message },
        }
    }
}

/// Lower-case canonical name of a gRPC code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The innermost source of an error, if it has any.
fn root_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let mut cause = error.source()?;
    while let Some(deeper) = cause.source() {
        cause = deeper;
    }
    Some(cause)
}

/// The error and its causes joined by ": ", because tonic's transport error
/// alone only says "transport error".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper repeats its cause in its own message; don't print it twice.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_code_keeps_its_code_and_message() {
        let codes = [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::Unimplemented,
            Code::Internal,
            Code::DeadlineExceeded,
        ];
        for code in codes {
            let error = ClientError::from(Status::new(code, "the server said so"));
            assert_eq!(error.code(), code);
            assert_eq!(error.to_string(), "the server said so");
        }
    }

    #[test]
    fn status_codes_map_to_their_variants() {
        let error = ClientError::from(Status::not_found("session abc not found"));
        assert_eq!(error, ClientError::NotFound("session abc not found".into()));
        let error = ClientError::from(Status::out_of_range("oldest available sequence is 42"));
        assert!(matches!(error, ClientError::OutOfRange(ref m) if m.contains("42")));
        let error = ClientError::from(Status::internal("boom"));
        assert!(matches!(
            error,
            ClientError::Other {
                code: Code::Internal,
                ..
            }
        ));
    }

    #[test]
    fn empty_message_falls_back_to_the_code_description() {
        let error = ClientError::from(Status::new(Code::NotFound, ""));
        assert_eq!(error.to_string(), Code::NotFound.description());
    }

    #[test]
    fn client_side_causes_are_kept_in_the_message() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let mut status = Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(std::io::Error::other(Wrapper(refused))));
        let error = ClientError::from(status);
        assert_eq!(error.to_string(), "tcp connect error: refused");
    }

    #[test]
    fn code_names_are_lower_snake_case() {
        assert_eq!(
            ClientError::NotFound(String::new()).code_name(),
            "not_found"
        );
        let connect = ClientError::Connect {
            endpoint: "http://x".into(),
            message: "refused".into(),
        };
        assert_eq!(connect.code_name(), "unavailable");
        assert!(connect.is_retryable());
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        let retryable = |code| ClientError::from(Status::new(code, "x")).is_retryable();
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
        ] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::OutOfRange,
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::Unimplemented,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }

    #[test]
    fn error_chain_joins_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(Wrapper(io));
        assert_eq!(error_chain(&outer), "wrapped: refused");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
