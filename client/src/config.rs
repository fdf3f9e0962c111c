//! Connection settings of [`crate::LifecycleClient`].

use std::{path::PathBuf, time::Duration};

/// Where and how to reach the server.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Server URL, e.g. `http://127.0.0.1:50051`; `http://` is assumed when
    /// no scheme is given (`https://` when [`ClientConfig::ca_file`] is set).
    pub endpoint: String,
    /// PEM CA certificates the server's certificate must chain to; set, the
    /// client speaks TLS. An `https://` endpoint needs it.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for a server that asks for one
    /// (`tls.client_ca_path`).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Bearer token sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// Maximum time to establish the TCP/HTTP2 connection.
    pub connect_timeout: Duration,
    /// Deadline of each unary call (sent to the server as `grpc-timeout`);
    /// never applied to the event subscription, which is long-lived.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Default server address: the daemon's default gRPC port on loopback.
    pub const DEFAULT_ENDPOINT: &'static str = "http://127.0.0.1:50051";

    /// The defaults with another endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            ..Self::default()
        }
    }

    /// Speaks TLS, trusting the CA certificates in `ca_file` (PEM).
    pub fn with_ca_file(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(ca_file.into());
        self
    }

    /// Presents the client certificate `cert` with its key `key` (PEM).
    pub fn with_client_identity(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.client_identity = Some((cert.into(), key.into()));
        self
    }

    /// Sets the bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoint: Self::DEFAULT_ENDPOINT.to_string(),
            token: None,
            ca_file: None,
            client_identity: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

// Hand-written so the token never ends up in logs or panic messages.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("client_identity", &self.client_identity)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let config = ClientConfig::default().with_token("s3cret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
