//! OpenTelemetry: a client's W3C trace context continues into the server's
//! spans, which reach an OTLP collector (a real OTLP/gRPC endpoint served
//! by this test).

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, GetStatsRequest,
};

use crate::{
    common::{Db, TestDb},
    process::ServerProcess,
};

/// What the test keeps of an exported span: trace id, parent span id, name.
type SpanSummary = (Vec<u8>, Vec<u8>, String);

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanSummary>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((span.trace_id, span.parent_span_id, span.name));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn a_client_trace_continues_into_exported_server_spans() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let server = ServerProcess::start(&db.url, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = Request::new(GetStatsRequest {});
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN}-01").parse().unwrap(),
    );
    LifecycleServiceClient::new(channel)
        .get_stats(request)
        .await
        .unwrap();
    assert_eq!(
        server.terminate().await,
        Some(0),
        "spans are flushed at exit"
    );

    let spans = collector.spans.lock().unwrap().clone();
    let ours: Vec<&SpanSummary> = spans
        .iter()
        .filter(|(trace, _, _)| hex(trace) == TRACE_ID)
        .collect();
    assert!(
        !ours.is_empty(),
        "no exported span continues the client's trace; got {} spans",
        spans.len()
    );
    assert!(
        ours.iter()
            .any(|(_, parent, name)| hex(parent) == PARENT_SPAN && name == "grpc"),
        "the gRPC request span is a child of the client's span: {ours:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
