//! The API from a second language: client/python/example.py (stubs
//! generated from proto/ with grpcio-tools at run time) against a real
//! server, and the helpers that run Python's reference proto3 JSON parser
//! on what the server prints (see rest.rs and cli.rs).

use std::{path::PathBuf, time::Duration};

use valence_lifecycle_api::v1::ListRulesRequest;

use crate::{
    cli::run,
    common::{backend_tests, test_config, with_tokens, Db, TestDb, TestServer, OPERATOR},
};

/// A file of the repository, from its root.
pub(crate) fn repo_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(path).display().to_string()
}

/// Whether python3 with grpcio-tools, grpcio-status and
/// grpcio-health-checking is installed. Under .ci/test (which installs them)
/// it must be; elsewhere the test is skipped loudly.
pub(crate) async fn python_grpc_available() -> bool {
    // Not `run`: a missing python3 is a skip, not a panic.
    let ok = tokio::process::Command::new("python3")
        .args(["-c", "import grpc_tools, grpc_status, grpc_health"])
        .output()
        .await
        .is_ok_and(|out| out.status.success());
    if !ok {
        assert!(
            std::env::var("VALENCE_REQUIRE_POSTGRES").is_err(),
            "python3 with grpcio-tools, grpcio-status and grpcio-health-checking must be installed under .ci/test"
        );
        eprintln!("SKIPPED: python3 grpcio-tools not installed");
    }
    ok
}

/// One body for [`parse_with_python`]: the full proto message name, the
/// JSON text, and the same message as gRPC returned it (encoded), when the
/// test has it.
pub(crate) struct Proto3Case {
    pub message: &'static str,
    pub json: String,
    pub grpc: Option<Vec<u8>>,
}

/// Parses every case with `google.protobuf.json_format.Parse` (strict)
/// into messages generated from proto/, and checks each equals its gRPC
/// twin; panics with Python's report otherwise.
pub(crate) async fn parse_with_python(cases: &[Proto3Case]) {
    use base64::Engine as _;
    let list: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "type": c.message,
                "json": c.json,
                "binary": c.grpc.as_ref().map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let script = repo_file("server/tests/it/proto3_json.py");
    let (code, stdout, stderr) = run("python3", &[&script, &file.display().to_string()], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("parsed ")).count(),
        cases.len(),
        "{stdout}"
    );
}

/// Runs the example against `server`; its stdout.
async fn run_example(server: &TestServer, token: Option<&str>) -> String {
    let example = repo_file("client/python/example.py");
    let target = server.grpc.to_string();
    let mut args = vec![example.as_str(), "--target", target.as_str()];
    if let Some(token) = token {
        args.extend(["--token", token]);
    }
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = run("python3", &args, &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the example takes seconds"
    );
    for line in [
        "health: SERVING (4 services)",
        "rule round trip: created, read, updated",
        "paging: 5 rules in 3 pages of 2",
        "subscribe: resumed from sequence",
        "5 events, none missed",
        "error details: INVALID_ARGUMENT field=rule.condition.session_idle_for_seconds reason=INVALID_FIELD domain=lifecycle.valence",
        "deleted 5 rules; GetRule after delete: reason=NOT_FOUND",
    ] {
        assert!(stdout.contains(line), "the example printed no {line:?}:\n{stdout}");
    }
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
    stdout
}

backend_tests!(
    // Health, a rule round trip, paging, Subscribe with resume and error
    // details, from Python stubs generated from proto/ at run time.
    async fn the_python_example_runs_against_a_server(db: Db) {
        if !python_grpc_available().await {
            return;
        }
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        server.wait_healthy(Duration::from_secs(10)).await;
        run_example(&server, None).await;
        let left = server
            .rules()
            .await
            .list_rules(ListRulesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(left.rules.is_empty(), "{db:?}: the example cleans up");
        assert!(server.stop().await);
    }
);

/// The same with tokens required: the example sends its bearer token.
#[tokio::test]
async fn the_python_example_sends_its_token() {
    if !python_grpc_available().await {
        return;
    }
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = with_tokens(test_config(&db.url));
    let server = TestServer::start_with(db, config).await;
    server.wait_healthy(Duration::from_secs(10)).await;
    run_example(&server, Some(OPERATOR)).await;
    assert!(server.stop().await);
}
