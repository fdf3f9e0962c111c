//! Connection limits on both listeners (issue 13 item 6): a cap that makes
//! room by closing the connection waiting longest, header-read and idle
//! timeouts, and a shutdown that slow clients cannot hold up.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use futures::future::join_all;
use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, GetStatsRequest,
};

use crate::{
    common::{eventually, metric, metric_at, test_config, Db, TestDb, TestServer},
    process::{free_port, ServerProcess},
};

/// Half a request head: a slowloris client.
const HALF_HEADER: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
/// Half the HTTP/2 preface: the same on the gRPC listener.
const HALF_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// The whole preface and an empty SETTINGS frame: an HTTP/2 client that
/// then sends no call.
const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A connection to `addr` that has sent `bytes`.
async fn connect_and_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the server closes `stream` (end of file, or a reset when it
/// closed with bytes unread); what was read, or `None` if it is still open
/// after `within`.
async fn read_until_closed(mut stream: TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    let reading = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, reading).await.ok()?;
    Some(read)
}

fn sample(name: &str, listener: &str, reason: &str) -> String {
    format!("{name}{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

/// More half-sent headers than the cap, on both listeners, against the
/// real binary configured through the environment: /health answers within
/// a second and a gRPC call succeeds while they are held, the cap makes
/// room by closing the oldest, the rest are closed when their header-read
/// timeout runs out, and nothing is left open afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_starve_neither_listener_and_are_closed() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let server = ServerProcess::start(
        &db.url,
        &[
            ("VALENCE_LIFECYCLE_SERVER__MAX_CONNECTIONS", "50"),
            ("VALENCE_LIFECYCLE_SERVER__HEADER_READ_TIMEOUT_SECS", "3"),
        ],
    )
    .await;
    let http = format!("http://{}", server.api);
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..80 {
        slow.push(connect_and_send(server.api, HALF_HEADER).await);
        slow.push(connect_and_send(server.grpc, HALF_PREFACE).await);
    }

    let asked = Instant::now();
    let health = reqwest::get(format!("{http}/health")).await.unwrap();
    let took = asked.elapsed();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(took < Duration::from_secs(1), "/health took {took:?}");
    let mut lifecycle = LifecycleServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    lifecycle.get_stats(GetStatsRequest {}).await.unwrap();
    drop(lifecycle);
    assert!(
        opened.elapsed() < HEADER_TIMEOUT,
        "the slow connections were not all held while /health and gRPC answered"
    );
    for listener in ["rest", "grpc"] {
        let evicted = metric_at(
            &http,
            &sample("valence_connections_refused_total", listener, "evicted"),
        )
        .await;
        assert!(evicted >= 30.0, "{listener}: {evicted} evicted");
    }

    let closed = join_all(
        slow.into_iter()
            .map(|s| read_until_closed(s, HEADER_TIMEOUT * 3)),
    )
    .await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} slow connections still open");
    for listener in ["rest", "grpc"] {
        let timed_out = metric_at(
            &http,
            &sample("valence_connections_timed_out_total", listener, "header"),
        )
        .await;
        assert!(timed_out >= 1.0, "{listener}: no header timeout counted");
    }
    eventually(
        Duration::from_secs(5),
        "no connection left open",
        || async {
            // One is the scrape's own.
            metric_at(&http, "valence_connections_open{listener=\"rest\"}").await <= 1.0
                && metric_at(&http, "valence_connections_open{listener=\"grpc\"}").await == 0.0
        },
    )
    .await;
    assert_eq!(server.terminate().await, Some(0));
}

/// With every connection busy (a request waiting for its body), a new one
/// is refused at once and counted, and the busy ones are not evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_full_of_busy_connections_refuses_newcomers() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    config.server.max_connections = 4;
    // Scraped on a listener of its own: the API listener is full.
    let metrics_port = free_port();
    config.monitoring.metrics_port = Some(metrics_port);
    let server = TestServer::start_with(db, config).await;
    let metrics = format!("http://127.0.0.1:{metrics_port}");

    // `100 Continue` comes once the handler reads the body: in flight.
    let head = b"POST /account-requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\nExpect: 100-continue\r\n\r\n";
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_and_send(server.api, head).await;
        let mut answer = [0u8; 64];
        let n = stream.read(&mut answer).await.unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 100"),
            "{:?}",
            String::from_utf8_lossy(&answer[..n])
        );
        busy.push(stream);
    }

    let newcomer = connect_and_send(server.api, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let read = read_until_closed(newcomer, Duration::from_secs(5))
        .await
        .expect("the new connection was served or left open");
    assert!(read.is_empty(), "{:?}", String::from_utf8_lossy(&read));
    let refused = sample("valence_connections_refused_total", "rest", "full");
    assert_eq!(metric_at(&metrics, &refused).await, 1.0);
    let evicted = sample("valence_connections_refused_total", "rest", "evicted");
    assert_eq!(metric_at(&metrics, &evicted).await, 0.0);

    // The busy ones finish; the listener serves again.
    drop(busy);
    eventually(Duration::from_secs(5), "/health answers again", || async {
        reqwest::get(format!("{}/health", server.http()))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(server.stop().await);
}

/// Connections with no request in flight are closed after the idle
/// timeout: a REST keep-alive connection after its answer, an HTTP/2
/// connection that never makes a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    config.server.idle_timeout_secs = 1;
    config.server.header_read_timeout_secs = 30;
    let server = TestServer::start_with(db, config).await;

    let rest = connect_and_send(server.api, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let grpc = connect_and_send(server.grpc, PREFACE_AND_SETTINGS).await;
    let rest = read_until_closed(rest, Duration::from_secs(10))
        .await
        .expect("the idle REST connection is still open");
    assert!(
        rest.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    read_until_closed(grpc, Duration::from_secs(10))
        .await
        .expect("the idle gRPC connection is still open");
    for listener in ["rest", "grpc"] {
        let idle = metric(
            &server,
            &sample("valence_connections_timed_out_total", listener, "idle"),
        )
        .await;
        assert_eq!(idle, 1.0, "{listener}");
    }
    assert!(server.stop().await);
}

/// Half-sent headers do not hold up shutdown: connections with no request
/// in flight are closed at once, long before their header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_do_not_hold_shutdown() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    config.server.header_read_timeout_secs = 60;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let server = TestServer::start_with(db, config).await;
    let rest = connect_and_send(server.api, HALF_HEADER).await;
    let grpc = connect_and_send(server.grpc, HALF_PREFACE).await;

    let stopping = Instant::now();
    assert!(server.stop().await, "shutdown was not clean");
    assert!(
        stopping.elapsed() < grace,
        "shutdown took {:?}",
        stopping.elapsed()
    );
    for slow in [rest, grpc] {
        read_until_closed(slow, Duration::from_secs(1))
            .await
            .expect("a slow connection outlived the server");
    }
}
