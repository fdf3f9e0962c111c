//! The gRPC server: the four Valence services, grpc.health.v1 and
//! reflection (v1 and v1alpha, so both current and older grpcurl builds can
//! list and describe everything with no proto files), behind request
//! limits, access control and metrics.

pub(crate) mod events;
pub(crate) mod lifecycle;
pub(crate) mod middleware;
pub(crate) mod rules;
pub(crate) mod singletons;

use std::{convert::Infallible, sync::Arc};

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use valence_lifecycle_api::{
    v1::{
        event_stream_service_server::EventStreamServiceServer,
        lifecycle_service_server::LifecycleServiceServer, rule_service_server::RuleServiceServer,
        singleton_admin_service_server::SingletonAdminServiceServer,
    },
    FILE_DESCRIPTOR_SET, SERVICE_NAMES,
};

use crate::{
    connections::{Face, Gate, Handshake, Limits, TrackBusyLayer, HTTP2_PREFACE_LEN},
    AppState,
};

/// Serves gRPC on `listener` until `cancel` fires, then ends open event
/// streams and waits for in-flight calls to finish. Connections are
/// limited like REST's (see [`crate::connections`]).
pub(crate) async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let limit = state.config.server.max_message_bytes;
    // Each builder describes only its own reflection version; both list
    // both, so a client on either version sees every service we serve.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building reflection v1")?;
    let reflection_v1alpha = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building reflection v1alpha")?;
    let streams = state.streams.clone();
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = state.tls.is_some(),
        client_certificates = state.tls.as_ref().is_some_and(|t| t.requires_client_certificates()),
        "gRPC listening"
    );
    let limits = Limits::from(&state.config.server);
    let gate = Gate::new("grpc", limits, HTTP2_PREFACE_LEN, &state.metrics);
    let incoming = gate
        .incoming(listener, Handshake::new(state.tls.as_ref(), Face::Grpc))
        .map(Ok::<_, Infallible>);
    tonic::transport::Server::builder()
        .timeout(state.config.request_timeout())
        .concurrency_limit_per_connection(state.config.server.max_concurrent_requests)
        // Pings find peers gone with a call open (a subscriber whose host
        // vanished): such a connection is busy, so neither the idle timeout
        // nor eviction would close it. Unanswered for 20 s, it closes.
        .http2_keepalive_interval(Some(limits.idle_timeout))
        // Outermost: a call waiting for a concurrency permit is in flight.
        .layer(TrackBusyLayer)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.config.server.max_concurrent_requests,
        ))
        .layer(middleware::GrpcLayer::new(state.clone()))
        .add_service(state.health_service.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            LifecycleServiceServer::new(lifecycle::LifecycleApi::new(state.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            RuleServiceServer::new(rules::RuleApi::new(state.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            SingletonAdminServiceServer::new(singletons::SingletonApi::new(state.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            EventStreamServiceServer::new(events::EventStreamApi::new(state.clone()))
                .max_decoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            cancel.cancelled().await;
            // Streams never end on their own; end them so the drain can finish.
            streams.cancel();
            // Connections with no call in flight go now (a half-sent preface
            // would hold the drain); the others finish their calls.
            gate.close_idle();
        })
        .await
        .context("gRPC server failed")
}

/// Sets the overall and per-service health.
pub(crate) async fn set_health(state: &AppState, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    state.health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        state.health.set_service_status(name, status).await;
    }
}

#[cfg(test)]
mod tests {
    use tonic::server::NamedService;
    use valence_lifecycle_api::v1::{
        event_stream_service_server::EventStreamServiceServer,
        lifecycle_service_server::LifecycleServiceServer, rule_service_server::RuleServiceServer,
        singleton_admin_service_server::SingletonAdminServiceServer,
    };

    use super::*;

    /// The shared list (used by clients for health checks) names exactly
    /// the services this server registers.
    #[test]
    fn service_names_are_the_generated_ones() {
        assert_eq!(
            SERVICE_NAMES,
            [
                <LifecycleServiceServer<lifecycle::LifecycleApi> as NamedService>::NAME,
                <RuleServiceServer<rules::RuleApi> as NamedService>::NAME,
                <SingletonAdminServiceServer<singletons::SingletonApi> as NamedService>::NAME,
                <EventStreamServiceServer<events::EventStreamApi> as NamedService>::NAME,
            ]
        );
    }
}
