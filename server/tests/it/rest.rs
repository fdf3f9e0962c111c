//! The REST gateway on a real server, with a real HTTP client and
//! Prometheus' own promtool.

use std::time::{Duration, Instant};

use prost::Message as _;
use reqwest::StatusCode;
use serde_json::Value;
use valence_lifecycle_api::{
    rule_json::SeedRule,
    v1::{
        GetAccountRequest, GetProgressionRequest, GetSessionRequest, ListAccountRequestsRequest,
        ListAccountsRequest, ListEventsRequest, ListRulesRequest, ListSessionsRequest,
    },
};

use crate::{
    common::{
        backend_tests, cel_bombs, eventually, initialized_account_record, metrics_text, open_store,
        pubkey, request_record, session_record, test_config, with_tokens, Db, TestDb, TestServer,
        ADMIN, OPERATOR, READER, SEED_RULE,
    },
    python::{parse_with_python, python_grpc_available, Proto3Case},
};

async fn post_rule(server: &TestServer, body: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/rules", server.http()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

backend_tests!(
    async fn seed_rule_posted_over_rest_is_listed_over_grpc(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let (status, body) = post_rule(&server, SEED_RULE, None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let sent: Value = serde_json::from_str(SEED_RULE).unwrap();
        assert_eq!(body, sent, "POST /rules answers with the seed shape");

        let listed = server
            .rules()
            .await
            .list_rules(ListRulesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.rules.len(), 1, "{db:?}");
        let as_seed = serde_json::to_value(SeedRule::try_from(&listed.rules[0]).unwrap()).unwrap();
        assert_eq!(as_seed, sent, "{db:?}: the same rule over gRPC");

        let (status, body) = post_rule(&server, SEED_RULE, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(server.stop().await);
    }
);

#[tokio::test]
async fn bad_bodies_are_400_naming_the_problem() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let cases = [
        ("{not json", "body"),
        (
            &SEED_RULE.replace("SessionIdleFor", "SessionSleepy") as &str,
            "condition",
        ),
        (&SEED_RULE.replace("300", "-5"), "condition.SessionIdleFor"),
        (
            &SEED_RULE.replace("\"recycled\"", "\"\""),
            "rule.action.consume_and_create.templates[0].namespace",
        ),
        (&SEED_RULE.replace("[0, 1]", "[0, 99]"), "account_indices"),
    ];
    for (body, field) in cases {
        let (status, json) = post_rule(&server, body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        let message = json["error"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{message:?} should name {field:?}");
    }
    let stats: Value = reqwest::get(format!("{}/stats", server.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["rules"], 0, "nothing stored");
    assert!(server.stop().await);
}

#[tokio::test]
async fn reads_health_stats_and_errors() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    // Answering (200, maybe "degraded" while components start) comes
    // first; "healthy" once every component runs.
    server.wait_healthy(Duration::from_secs(10)).await;
    let started = Instant::now();
    let health = reqwest::get(format!("{}/health", server.http()))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(health.status(), StatusCode::OK);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    let names: Vec<&str> = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // The leader's duties (here only the orchestrator: no chain) start once
    // the election is won, so they may come in anywhere after it, or later.
    let names: Vec<&str> = names.into_iter().filter(|n| *n != "orchestrator").collect();
    assert_eq!(
        names,
        [
            "store",
            "events",
            "retention",
            "leader-election",
            "leader-duties",
            "grpc",
            "gateway"
        ]
    );

    eventually(Duration::from_secs(5), "the orchestrator runs", || async {
        crate::common::health(&server.http()).await["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "orchestrator" && c["state"] == "running")
    })
    .await;

    let stats: Value = reqwest::get(format!("{}/stats", server.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in [
        "accounts_created",
        "accounts_failed",
        "is_running",
        "uptime_seconds",
        "sessions",
        "rules",
        "events",
    ] {
        assert!(stats.get(field).is_some(), "/stats lacks {field}: {stats}");
    }
    assert_eq!(stats["is_running"], true);

    let unknown = reqwest::get(format!(
        "{}/accounts/{}",
        server.http(),
        crate::common::pubkey(3)
    ))
    .await
    .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad = reqwest::get(format!("{}/sessions/nope", server.http()))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("id"));
    let bad_type = reqwest::get(format!("{}/events?event_type=nonsense", server.http()))
        .await
        .unwrap();
    assert_eq!(bad_type.status(), StatusCode::BAD_REQUEST);

    post_rule(&server, SEED_RULE, None).await;
    let events: Value = reqwest::get(format!(
        "{}/events?limit=1&offset=0&event_type=rule_created",
        server.http()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let list = events["events"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["eventType"], "EVENT_TYPE_RULE_CREATED");
    assert_eq!(list[0]["entityId"], "rule-1");
    assert!(server.stop().await);
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_with_seed_names() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    post_rule(&server, SEED_RULE, None).await;
    let mut rules = server.rules().await;
    rules.list_rules(ListRulesRequest::default()).await.unwrap();
    let text = metrics_text(&server).await;
    for name in [
        "valence_account_requests_total",
        "valence_accounts_initialized_total",
        "valence_sessions_created_total",
        "valence_sessions_consumed_total",
        "valence_active_sessions",
        "valence_active_accounts",
        "valence_progression_rules_evaluated_total",
        "valence_progression_rules_matched_total",
        "valence_account_initialization_duration_seconds",
        "valence_session_lifetime_seconds",
        "accounts_created_total",
        "accounts_failed_total",
        "event_processing_duration",
        "rpc_connection_status",
        "service_uptime_seconds",
        "queue_size",
        "wallet_balance_lamports",
        "http_requests_total",
        "last_processed_slot",
        "component_last_heartbeat_seconds{component=\"events\"}",
        "valence_is_leader",
        "valence_builder_in_flight",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(
        text.contains("route=\"/rules\""),
        "REST metrics carry the route pattern"
    );
    assert!(
        text.lines().any(|l| l.starts_with("grpc_requests_total")
            && l.contains("method=\"/valence.lifecycle.v1.RuleService/ListRules\"")
            && l.contains("code=\"Ok\"")),
        "per-RPC counts by method and code"
    );
    assert!(
        text.contains("grpc_request_duration_seconds_bucket"),
        "per-RPC latency"
    );
    promtool_check(&text).await;
    assert!(server.stop().await);
}

/// Runs `promtool check metrics` on the exposition, when promtool is installed
/// (`.ci/test` installs it; elsewhere the check is skipped loudly).
async fn promtool_check(text: &str) {
    let Ok(mut child) = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var("VALENCE_REQUIRE_POSTGRES").is_err(),
            "promtool must be installed under .ci/test"
        );
        eprintln!("SKIPPED: promtool not installed");
        return;
    };
    use tokio::io::AsyncWriteExt as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // promtool reads the classic text format, in which an OpenMetrics
    // counter's HELP (named without `_total`) does not attach to its sample,
    // so it lints "no help text" and exits 3; only parse errors (exit 1)
    // matter here. The real Prometheus scrape test below is the final word.
    assert!(
        !report.contains("parsing error"),
        "promtool could not parse /metrics: {report}"
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "promtool: {report}"
    );
}

#[tokio::test]
async fn rest_enforces_tokens_but_leaves_health_and_metrics_open() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = with_tokens(test_config(&db.url));
    let server = TestServer::start_with(db, config).await;
    let client = reqwest::Client::new();
    let stats = client
        .get(format!("{}/stats", server.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::UNAUTHORIZED);
    let stats = client
        .get(format!("{}/stats", server.http()))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::OK);
    let (status, body) = post_rule(&server, SEED_RULE, Some(READER)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = post_rule(&server, SEED_RULE, Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::CREATED);
    for open in ["/health", "/metrics"] {
        let r = client
            .get(format!("{}{open}", server.http()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{open}");
    }
    assert!(server.stop().await);
}

/// A real Prometheus server scrapes /metrics and answers queries about it.
#[tokio::test]
async fn prometheus_scrapes_the_gateway() {
    if which("prometheus").is_none() {
        assert!(
            std::env::var("VALENCE_REQUIRE_POSTGRES").is_err(),
            "prometheus must be installed under .ci/test"
        );
        eprintln!("SKIPPED: prometheus not installed");
        return;
    }
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: valence\n    static_configs:\n      - targets: ['{}']\n",
        server.api
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let query = |q: &str| format!("http://127.0.0.1:{port}/api/v1/query?query={q}");
    eventually(
        Duration::from_secs(30),
        "Prometheus ingesting valence_active_sessions",
        || async {
            let Ok(r) = reqwest::get(query("valence_active_sessions")).await else {
                return false;
            };
            let Ok(body) = r.json::<Value>().await else {
                return false;
            };
            body["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    )
    .await;
    let body: Value = reqwest::get(query("up"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["data"]["result"][0]["value"][1], "1",
        "scrape target is up: {body}"
    );
    let body: Value = reqwest::get(query("accounts_created_total"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["data"]["result"].as_array().map(Vec::len),
        Some(1),
        "counter ingested: {body}"
    );
    prometheus.kill().await.unwrap();
    assert!(server.stop().await);
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}

backend_tests!(
    // Bodies must be JSON (a browser posts text/plain cross-origin with no
    // preflight), and out-of-range page tokens are 400, not 500.
    async fn non_json_bodies_are_415_and_huge_page_tokens_400(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let http = reqwest::Client::new();
        for (path, body) in [
            ("/rules", SEED_RULE),
            (
                "/account-requests",
                r#"{"owner":"11111111111111111111111111111111"}"#,
            ),
        ] {
            for content_type in [
                Some("text/plain"),
                Some("application/x-www-form-urlencoded"),
                None,
            ] {
                let mut request = http.post(format!("{}{path}", server.http())).body(body);
                if let Some(t) = content_type {
                    request = request.header("content-type", t);
                }
                let response = request.send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "{db:?} {path} {content_type:?}"
                );
                let body: Value = response.json().await.unwrap();
                assert!(
                    body["error"].as_str().unwrap().contains("application/json"),
                    "{body}"
                );
            }
        }
        let mut rules = server.rules().await;
        let listed = rules
            .list_rules(ListRulesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.rules.is_empty(), "nothing was stored");
        let (status, _) = post_rule(&server, SEED_RULE, None).await;
        assert_eq!(status, StatusCode::CREATED, "application/json still works");

        let response = reqwest::get(format!(
            "{}/accounts?page_token=18446744073709551615",
            server.http()
        ))
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{db:?}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("page_token"),
            "{body}"
        );
    }
);

backend_tests!(
    // POST /rules refuses a CEL condition that would overflow a stack with
    // 400 naming the field and the limit, stores nothing and keeps serving.
    async fn cel_bombs_are_400_naming_the_limit_and_the_server_survives(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        for (expr, limit) in cel_bombs() {
            let mut body: Value = serde_json::from_str(SEED_RULE).unwrap();
            body["condition"] = serde_json::json!({ "CustomPredicate": expr });
            let (status, json) = post_rule(&server, &body.to_string(), None).await;
            let what = format!("{db:?} {} bytes", expr.len());
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {json}");
            let message = json["error"].as_str().unwrap_or_default();
            assert!(
                message.contains("rule.condition.custom_predicate") && message.contains(limit),
                "{what}: {message:?} should name the field and {limit:?}"
            );
        }
        let health = reqwest::get(format!("{}/health", server.http()))
            .await
            .unwrap();
        assert!(health.status().is_success(), "{}", health.status());
        let stats: Value = reqwest::get(format!("{}/stats", server.http()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["rules"], 0, "{db:?}: nothing stored");
        assert!(server.stop().await);
    }
);

/// HEAD is a read like GET (a reader token may ask), and every error the
/// gateway gives, its own or axum's (405, 413, a path that is not UTF-8,
/// 404), has the same JSON shape with the right status.
#[tokio::test]
async fn head_is_a_read_and_every_error_is_json() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let config = with_tokens(test_config(&db.url));
    let server = TestServer::start_with(db, config).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.http());

    let head = client.head(url("/stats")).bearer_auth(READER).send().await;
    assert_eq!(head.unwrap().status(), StatusCode::OK);

    let refused = client.delete(url("/stats")).bearer_auth(OPERATOR).send();
    let refused = refused.await.unwrap();
    assert_eq!(refused.headers()["allow"], "GET,HEAD");
    let body = json_error(refused, StatusCode::METHOD_NOT_ALLOWED, "Unimplemented").await;
    assert!(body.contains("DELETE is not allowed on /stats"), "{body}");

    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    let too_large = client
        .post(url("/rules"))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    let body = json_error(
        too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "ResourceExhausted",
    )
    .await;
    let expected = format!(
        "request body is {} bytes; the limit is 4194304 bytes (server.max_message_bytes)",
        huge.len()
    );
    assert_eq!(body, expected);

    let not_utf8 = client.get(url("/accounts/%ff%fe")).bearer_auth(READER);
    let not_utf8 = not_utf8.send().await.unwrap();
    let body = json_error(not_utf8, StatusCode::BAD_REQUEST, "InvalidArgument").await;
    assert!(body.contains("UTF-8"), "{body}");

    let unknown = client.get(url("/no-such-route")).bearer_auth(READER);
    let unknown = unknown.send().await.unwrap();
    json_error(unknown, StatusCode::NOT_FOUND, "NotFound").await;
    assert!(server.stop().await);
}

/// Checks `response` is a JSON error of `status` and `code`; its message.
async fn json_error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "application/json", "{status}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    body["error"].as_str().unwrap().to_string()
}

backend_tests!(
    // REST errors carry what gRPC's details carry: the stable reason, the
    // domain and, for invalid input, the field.
    async fn errors_carry_the_reason_and_the_field(db: Db) {
        let Some(server) = TestServer::start(db).await else {
            return;
        };
        let bad: Value = reqwest::get(format!("{}/accounts/not-a-pubkey!", server.http()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(bad["reason"], "INVALID_FIELD", "{bad}");
        assert_eq!(bad["field"], "id", "{bad}");
        assert_eq!(bad["domain"], "lifecycle.valence", "{bad}");
        let missing: Value = reqwest::get(format!(
            "{}/accounts/{}",
            server.http(),
            crate::common::pubkey(99)
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(missing["reason"], "NOT_FOUND", "{missing}");
        assert!(missing.get("field").is_none(), "{missing}");
        assert!(server.stop().await);
    }
);

/// GET `<http><path>`: the body, after checking the status is 200.
async fn get_ok(server: &TestServer, path: &str) -> Value {
    let response = reqwest::get(format!("{}{path}", server.http()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// A case for the reference parser: `json` as `message`, equal to `grpc`.
fn case(message: &'static str, json: &Value, grpc: Option<Vec<u8>>) -> Proto3Case {
    Proto3Case {
        message,
        json: json.to_string(),
        grpc,
    }
}

backend_tests!(
    // Issue 15 item 6. Every REST body that is a proto message is read by
    // the reference proto3 JSON parser (Python's json_format, strict) as
    // the very message gRPC returns; rules keep seed 000's shape on POST
    // and GET /rules; and a rule inside an event is proto3 JSON (the oneof
    // inlined, 64-bit integers as strings), not a third shape.
    async fn rest_bodies_are_the_proto3_json_of_the_grpc_messages(db: Db) {
        if !python_grpc_available().await {
            return;
        }
        let Some(test_db) = TestDb::new(db).await else {
            return;
        };
        let store = open_store(&test_db.url).await;
        store
            .upsert_account_request(&request_record(1))
            .await
            .unwrap();
        store
            .upsert_account(&initialized_account_record(2, 1))
            .await
            .unwrap();
        store
            .upsert_session(&session_record(3, &[2], "ns"))
            .await
            .unwrap();
        let config = test_config(&test_db.url);
        let server = TestServer::start_with(test_db, config).await;

        // Seed 000's shapes, unchanged.
        let seed: Value = serde_json::from_str(SEED_RULE).unwrap();
        let (status, posted) = post_rule(&server, SEED_RULE, None).await;
        assert_eq!(status, StatusCode::CREATED, "{posted}");
        assert_eq!(
            posted, seed,
            "{db:?}: POST /rules answers in seed 000's shape"
        );
        assert_eq!(get_ok(&server, "/rules/rule-1").await, seed, "{db:?}");
        assert_eq!(get_ok(&server, "/rules").await["rules"][0], seed, "{db:?}");

        let mut lifecycle = server.lifecycle().await;
        let (request, account, session) = (pubkey(1), pubkey(2), pubkey(3));
        let mut cases = Vec::new();

        let body = get_ok(&server, "/accounts").await;
        let grpc = lifecycle
            .list_accounts(ListAccountsRequest::default())
            .await;
        let grpc = grpc.unwrap().into_inner();
        assert_eq!(grpc.accounts.len(), 1, "{db:?}");
        cases.push(case(
            "valence.lifecycle.v1.ListAccountsResponse",
            &body,
            Some(grpc.encode_to_vec()),
        ));

        let body = get_ok(&server, "/account-requests").await;
        let grpc = lifecycle
            .list_account_requests(ListAccountRequestsRequest::default())
            .await;
        let grpc = grpc.unwrap().into_inner().encode_to_vec();
        cases.push(case(
            "valence.lifecycle.v1.ListAccountRequestsResponse",
            &body,
            Some(grpc),
        ));

        let body = get_ok(&server, "/sessions").await;
        let grpc = lifecycle
            .list_sessions(ListSessionsRequest::default())
            .await;
        let grpc = grpc.unwrap().into_inner().encode_to_vec();
        cases.push(case(
            "valence.lifecycle.v1.ListSessionsResponse",
            &body,
            Some(grpc),
        ));
        assert_eq!(
            body["sessions"][0]["nonce"], "3",
            "{db:?}: uint64 as a string"
        );
        assert_eq!(
            body["sessions"][0]["metadata"], "AQID",
            "{db:?}: bytes as base64"
        );
        let state = body["sessions"][0]["state"].as_str().unwrap_or_default();
        assert!(
            state.starts_with("LINEAR_STATE_"),
            "{db:?}: enums by value name: {body}"
        );

        let body = get_ok(&server, &format!("/accounts/{account}")).await;
        let grpc = lifecycle
            .get_account(GetAccountRequest {
                id: account.clone(),
            })
            .await;
        let grpc = grpc.unwrap().into_inner().account.unwrap().encode_to_vec();
        cases.push(case(
            "valence.lifecycle.v1.Account",
            &body["account"],
            Some(grpc),
        ));
        let grpc = lifecycle
            .get_progression(GetProgressionRequest {
                entity_id: account.clone(),
            })
            .await;
        let grpc = grpc
            .unwrap()
            .into_inner()
            .progression
            .unwrap()
            .encode_to_vec();
        cases.push(case(
            "valence.lifecycle.v1.Progression",
            &body["progression"],
            Some(grpc.clone()),
        ));
        let body = get_ok(&server, &format!("/progressions/{account}")).await;
        cases.push(case("valence.lifecycle.v1.Progression", &body, Some(grpc)));

        let body = get_ok(&server, &format!("/sessions/{session}")).await;
        let grpc = lifecycle
            .get_session(GetSessionRequest {
                id: session.clone(),
            })
            .await;
        let grpc = grpc.unwrap().into_inner().session.unwrap().encode_to_vec();
        cases.push(case(
            "valence.lifecycle.v1.Session",
            &body["session"],
            Some(grpc),
        ));
        cases.push(case(
            "valence.lifecycle.v1.Progression",
            &body["progression"],
            None,
        ));
        let body = get_ok(&server, &format!("/progressions/{request}")).await;
        cases.push(case("valence.lifecycle.v1.Progression", &body, None));

        // Events oldest first, so the gRPC twin lists the same ones even if
        // more are appended in between.
        let body = get_ok(&server, "/events?after_sequence=0&limit=1000").await;
        cases.push(case("valence.lifecycle.v1.ListEventsResponse", &body, None));
        let events = body["events"].as_array().unwrap();
        let grpc = lifecycle
            .list_events(ListEventsRequest {
                after_sequence: Some(0),
                limit: events.len() as i32,
                ..Default::default()
            })
            .await;
        let grpc = grpc.unwrap().into_inner().events;
        assert_eq!(grpc.len(), events.len(), "{db:?}");
        for (json, grpc) in events.iter().zip(&grpc) {
            cases.push(case(
                "valence.lifecycle.v1.LifecycleEvent",
                json,
                Some(grpc.encode_to_vec()),
            ));
        }
        let created = events
            .iter()
            .find(|e| e["eventType"] == "EVENT_TYPE_RULE_CREATED")
            .expect("the rule's creation is listed");
        assert_eq!(
            created["ruleCreated"]["rule"]["condition"],
            serde_json::json!({ "sessionIdleForSeconds": "300" }),
            "{db:?}: {created}"
        );

        parse_with_python(&cases).await;
        assert!(server.stop().await);
    }
);

backend_tests!(
    // What the console calls besides the seed routes, each with its role.
    async fn the_console_and_its_routes(db: Db) {
        let Some(test_db) = TestDb::new(db).await else {
            return;
        };
        let store = open_store(&test_db.url).await;
        store
            .upsert_account_request(&request_record(1))
            .await
            .unwrap();
        store
            .upsert_account(&initialized_account_record(2, 1))
            .await
            .unwrap();
        drop(store);
        let config = with_tokens(test_config(&test_db.url));
        let server = TestServer::start_with(test_db, config).await;
        let http = server.http();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
            let mut request = client.request(method, format!("{http}{path}"));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            request.send()
        };
        use reqwest::Method;

        // The page and its files need no token; the page has a strict CSP.
        let root = call(Method::GET, "/", None).await.unwrap();
        assert_eq!(root.status(), StatusCode::SEE_OTHER);
        assert_eq!(root.headers()["location"], "/console");
        let page = call(Method::GET, "/console", None).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let js = call(Method::GET, "/console/app.js", None).await.unwrap();
        assert!(js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        let missing = call(Method::GET, "/console/nope.js", None).await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let config: Value = call(Method::GET, "/console/config.json", None)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(config["authRequired"], true);

        // An entity by id, whatever it is.
        for (id, kind) in [(pubkey(2), "account"), (pubkey(1), "account request")] {
            let found: Value = call(Method::GET, &format!("/entities/{id}"), Some(READER))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(found["kind"], kind, "{db:?}: {found}");
            assert_eq!(found["record"]["id"], id);
        }
        let unknown = call(
            Method::GET,
            &format!("/entities/{}", pubkey(9)),
            Some(READER),
        )
        .await
        .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let request = call(
            Method::GET,
            &format!("/account-requests/{}", pubkey(1)),
            Some(READER),
        )
        .await
        .unwrap();
        assert_eq!(request.status(), StatusCode::OK);

        // Rules: enable and disable need the operator, a dry run a reader.
        let (status, _) = post_rule(&server, SEED_RULE, Some(OPERATOR)).await;
        assert_eq!(status, StatusCode::CREATED);
        let denied = call(Method::POST, "/rules/rule-1/disable", Some(READER))
            .await
            .unwrap();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        let disabled: Value = call(Method::POST, "/rules/rule-1/disable", Some(OPERATOR))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(disabled["enabled"], false, "{db:?}: {disabled}");
        let enabled: Value = call(Method::POST, "/rules/rule-1/enable", Some(OPERATOR))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(enabled["enabled"], true);
        let dry = call(Method::GET, "/rules/rule-1/evaluate?limit=10", Some(READER))
            .await
            .unwrap();
        assert_eq!(dry.status(), StatusCode::OK, "{db:?}");
        let dry: Value = dry.json().await.unwrap();
        assert!(
            dry.get("matches").is_none() || dry["matches"].is_array(),
            "{dry}"
        );

        // Singletons: admin, as over gRPC (it::singletons runs the
        // operations themselves against a chain).
        let singletons = call(Method::GET, "/singletons", Some(OPERATOR))
            .await
            .unwrap();
        assert_eq!(singletons.status(), StatusCode::FORBIDDEN);
        for path in ["/singletons/processor/pause", "/singletons/all/resume"] {
            let denied = call(Method::POST, path, Some(OPERATOR)).await.unwrap();
            assert_eq!(denied.status(), StatusCode::FORBIDDEN, "{db:?} {path}");
        }
        let bad = call(Method::POST, "/singletons/nope/pause", Some(ADMIN))
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let body: Value = bad.json().await.unwrap();
        assert_eq!(body["field"], "singleton", "{body}");
        let listed = call(Method::GET, "/singletons", Some(ADMIN)).await.unwrap();
        assert_eq!(listed.status(), StatusCode::OK, "{db:?}");
        assert!(server.stop().await);
    }
);

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    config.monitoring.console = false;
    let server = TestServer::start_with(db, config).await;
    let page = reqwest::get(format!("{}/console", server.http()))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert!(server.stop().await);
}
