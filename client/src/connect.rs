//! The connection: one tonic channel shared by every stub, with the token and
//! the per-call deadline added by an interceptor.

use std::time::Duration;

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Request, Status,
};
use tonic_health::pb::health_client::HealthClient;
use valence_lifecycle_api::v1::{
    event_stream_service_client::EventStreamServiceClient,
    lifecycle_service_client::LifecycleServiceClient, rule_service_client::RuleServiceClient,
    singleton_admin_service_client::SingletonAdminServiceClient,
};

use crate::{error::error_chain, ClientConfig, ClientError};

pub use valence_lifecycle_api::SERVICE_NAMES;

/// The channel every stub runs on: the shared connection plus
/// [`CallInterceptor`].
pub type AuthedChannel = InterceptedService<Channel, CallInterceptor>;

/// Adds the bearer token and, for unary stubs, the call deadline to every
/// request.
#[derive(Clone)]
pub struct CallInterceptor {
    authorization: Option<MetadataValue<Ascii>>,
    deadline: Option<Duration>,
}

impl CallInterceptor {
    /// An interceptor sending `authorization: Bearer <token>` when a token is
    /// given and a `grpc-timeout` of `deadline` when one is given.
    pub fn new(token: Option<&str>, deadline: Option<Duration>) -> Result<Self, ClientError> {
        let authorization = token.map(bearer).transpose()?;
        Ok(Self {
            authorization,
            deadline,
        })
    }
}

impl Interceptor for CallInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        // A deadline the caller set on the request itself wins. The header
        // both informs the server and is enforced by tonic's channel, so one
        // connection can serve deadline-bound unary calls and the unbounded
        // subscription.
        let has_deadline = request.metadata().contains_key("grpc-timeout");
        if let (Some(deadline), false) = (self.deadline, has_deadline) {
            request.set_timeout(deadline);
        }
        Ok(request)
    }
}

// Hand-written so the token is never printed.
impl std::fmt::Debug for CallInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallInterceptor")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The `Bearer <token>` header value, marked sensitive so HTTP/2 never puts
/// it in its header compression table and debug output hides it.
fn bearer(token: &str) -> Result<MetadataValue<Ascii>, ClientError> {
    let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| ClientError::InvalidToken("tokens must be visible ASCII".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A connected client of the Valence Lifecycle Manager. Cheap to clone: all
/// clones and all stubs share one HTTP/2 connection, which tonic re-dials
/// after it breaks.
#[derive(Debug, Clone)]
pub struct LifecycleClient {
    channel: Channel,
    unary: CallInterceptor,
    streaming: CallInterceptor,
}

impl LifecycleClient {
    /// Connects now, failing with [`ClientError::Connect`] when the server
    /// cannot be reached within `config.connect_timeout`.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let endpoint = endpoint(&config)?;
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            endpoint: endpoint.uri().to_string(),
            message: error_chain(&e),
        })?;
        Self::with_channel(channel, &config)
    }

    /// Builds a client without connecting; the connection is made on the
    /// first call, and connection failures surface as UNAVAILABLE then.
    pub fn connect_lazy(config: ClientConfig) -> Result<Self, ClientError> {
        let channel = endpoint(&config)?.connect_lazy();
        Self::with_channel(channel, &config)
    }

    /// Wraps an existing channel (for example one with TLS or a custom
    /// connector); `config.endpoint` and `connect_timeout` are not used.
    pub fn with_channel(channel: Channel, config: &ClientConfig) -> Result<Self, ClientError> {
        let token = config.token.as_deref();
        Ok(Self {
            channel,
            unary: CallInterceptor::new(token, Some(config.request_timeout))?,
            // The subscription lives for hours; a deadline would cut it.
            streaming: CallInterceptor::new(token, None)?,
        })
    }

    /// Accounts, account requests, sessions, progressions, events, stats.
    pub fn lifecycle(&self) -> LifecycleServiceClient<AuthedChannel> {
        LifecycleServiceClient::new(self.unary_channel())
    }

    /// Progression rules.
    pub fn rules(&self) -> RuleServiceClient<AuthedChannel> {
        RuleServiceClient::new(self.unary_channel())
    }

    /// Singleton program administration.
    pub fn singletons(&self) -> SingletonAdminServiceClient<AuthedChannel> {
        SingletonAdminServiceClient::new(self.unary_channel())
    }

    /// The event stream, without a call deadline. Prefer
    /// [`LifecycleClient::subscribe_resilient`], which also reconnects.
    pub fn events(&self) -> EventStreamServiceClient<AuthedChannel> {
        EventStreamServiceClient::new(self.streaming_channel())
    }

    /// Standard gRPC health (`grpc.health.v1.Health`); the empty service name
    /// is the server as a whole, [`SERVICE_NAMES`] the individual services.
    pub fn health(&self) -> HealthClient<AuthedChannel> {
        HealthClient::new(self.unary_channel())
    }

    /// The underlying channel, without token or deadline.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    fn unary_channel(&self) -> AuthedChannel {
        InterceptedService::new(self.channel.clone(), self.unary.clone())
    }

    fn streaming_channel(&self) -> AuthedChannel {
        InterceptedService::new(self.channel.clone(), self.streaming.clone())
    }
}

/// The tonic endpoint of a config: scheme defaulted, TLS set up, connect
/// timeout set.
fn endpoint(config: &ClientConfig) -> Result<Endpoint, ClientError> {
    let url = with_scheme(&config.endpoint, config.ca_file.is_some());
    let invalid = |message: String| ClientError::InvalidEndpoint {
        endpoint: config.endpoint.clone(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(url).map_err(|e| invalid(error_chain(&e)))?;
    if endpoint.uri().host().is_none() {
        return Err(invalid("no host".into()));
    }
    let https = endpoint.uri().scheme_str() == Some("https");
    match (&config.ca_file, https) {
        (Some(ca_file), true) => {
            endpoint = endpoint
                .tls_config(tls_config(ca_file, config.client_identity.as_ref())?)
                .map_err(|e| invalid(error_chain(&e)))?;
        }
        (Some(_), false) => {
            return Err(invalid(
                "a CA file is given (--ca-file / VALENCE_CA_FILE) but the endpoint is not https://"
                    .into(),
            ))
        }
        (None, true) => return Err(invalid(
            "https:// needs the CA file of the server's certificate (--ca-file / VALENCE_CA_FILE)"
                .into(),
        )),
        (None, false) => {}
    }
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // Pings find a dead peer on an idle subscription sooner than TCP does.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// TLS trusting `ca_file`, presenting `identity` (certificate, key) if given.
fn tls_config(
    ca_file: &std::path::Path,
    identity: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<ClientTlsConfig, ClientError> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            ClientError::InvalidArgument(format!("reading the {what} {}: {e}", path.display()))
        })
    };
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca_file, "CA file")?));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            read(cert, "client certificate")?,
            read(key, "client key")?,
        ));
    }
    Ok(tls)
}

/// `127.0.0.1:50051` means `http://127.0.0.1:50051` (`https://` with a CA
/// file): plain gRPC on loopback is the common case and typing the scheme
/// is noise.
fn with_scheme(endpoint: &str, tls: bool) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_defaults_to_http() {
        assert_eq!(
            with_scheme("127.0.0.1:50051", false),
            "http://127.0.0.1:50051"
        );
        assert_eq!(with_scheme("x:1", true), "https://x:1");
        assert_eq!(with_scheme("https://x:1", false), "https://x:1");
    }

    #[test]
    fn bad_endpoints_are_rejected_before_any_io() {
        let error = LifecycleClient::connect_lazy(ClientConfig::new("http://")).unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidEndpoint { .. }),
            "{error:?}"
        );
        let error = LifecycleClient::connect_lazy(ClientConfig::new("ht tp://x")).unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidEndpoint { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn https_and_a_ca_file_go_together() {
        let error = LifecycleClient::connect_lazy(ClientConfig::new("https://x:1")).unwrap_err();
        assert!(error.to_string().contains("--ca-file"), "{error}");
        let config = ClientConfig::new("http://x:1").with_ca_file("/nonexistent/ca.pem");
        let error = LifecycleClient::connect_lazy(config).unwrap_err();
        assert!(error.to_string().contains("not https"), "{error}");
        let config = ClientConfig::new("x:1").with_ca_file("/nonexistent/ca.pem");
        let error = LifecycleClient::connect_lazy(config).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn tokens_that_are_not_header_values_are_rejected() {
        let config = ClientConfig::default().with_token("line\nbreak");
        let error = CallInterceptor::new(config.token.as_deref(), None).unwrap_err();
        assert!(matches!(error, ClientError::InvalidToken(_)));
    }

    #[test]
    fn interceptor_adds_token_and_deadline() {
        let mut interceptor =
            CallInterceptor::new(Some("abc"), Some(Duration::from_secs(3))).unwrap();
        let request = interceptor.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer abc"
        );
        assert_eq!(request.metadata().get("grpc-timeout").unwrap(), "3000000u");
        assert!(!format!("{interceptor:?}").contains("abc"));
    }

    #[test]
    fn interceptor_keeps_a_deadline_set_by_the_caller() {
        let mut interceptor = CallInterceptor::new(None, Some(Duration::from_secs(3))).unwrap();
        let mut request = Request::new(());
        request.set_timeout(Duration::from_millis(5));
        let request = interceptor.call(request).unwrap();
        assert_eq!(request.metadata().get("grpc-timeout").unwrap(), "5000000n");
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn streaming_stub_carries_no_deadline() {
        let mut interceptor = CallInterceptor::new(Some("abc"), None).unwrap();
        let request = interceptor.call(Request::new(())).unwrap();
        assert!(request.metadata().get("grpc-timeout").is_none());
    }

    #[tokio::test]
    async fn connect_to_a_closed_port_is_a_connect_error() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = ClientConfig::new(format!("127.0.0.1:{port}"));
        let error = LifecycleClient::connect(config).await.unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
        assert_eq!(error.code_name(), "unavailable");
    }
}
