//! The binaries as users run them: `valence-lifecycle` (configuration
//! errors, --dump-config, migrate, SIGTERM under load), `lifecyclectl`,
//! and grpcurl against the server with no proto files.

use std::{process::Stdio, time::Duration};

use tokio::process::Command;
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, GetStatsRequest,
};

use crate::{
    common::{eventually, metric, Db, TestDb, TestServer, SEED_RULE},
    process::ServerProcess,
};

pub(crate) const SERVER: &str = env!("CARGO_BIN_EXE_valence-lifecycle");

pub(crate) async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The lifecyclectl binary, built next to the server's (`cargo build
/// --workspace --bins`, which `.ci/test` runs first).
pub(crate) fn lifecyclectl() -> String {
    let dir = std::path::Path::new(SERVER).parent().unwrap();
    let path = dir.join("lifecyclectl");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path.display().to_string()
}

#[tokio::test]
async fn invalid_configuration_stops_start_up_naming_key_and_value() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("API_PORT", "eighty")], "API_PORT"),
        (&[("POLL_INTERVAL", "0")], "POLL_INTERVAL"),
        (&[("DATABASE_URL", "mysql://x")], "mysql://x"),
        (&[("SHARD_PROGRAM_ID", "not-base58!")], "SHARD_PROGRAM_ID"),
    ];
    for (env, needle) in cases {
        let (code, _, stderr) = run(SERVER, &["--dump-config"], env).await;
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{env:?}: {stderr:?} should name {needle}"
        );
    }
}

#[tokio::test]
async fn layers_merge_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[server]\napi_port = 9001\ngrpc_port = 9002\n[rpc]\ncommitment = \"finalized\"\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let (code, stdout, stderr) = run(
        SERVER,
        &["--config", &path, "--dump-config", "--grpc-port", "9100"],
        &[("API_PORT", "9200")],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("api_port = 9200"),
        "environment beats the file:\n{stdout}"
    );
    assert!(
        stdout.contains("grpc_port = 9100"),
        "flags beat everything:\n{stdout}"
    );
    assert!(
        stdout.contains("commitment = \"finalized\""),
        "the file beats defaults:\n{stdout}"
    );

    let (code, _, stderr) = run(
        SERVER,
        &["--config", "/nonexistent.toml", "--dump-config"],
        &[],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

/// A `config.toml` above the working directory is another deployment's
/// (tokens included): only `./config.toml` or `--config` is read.
#[tokio::test]
async fn a_config_file_in_a_parent_directory_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[rpc]\ncommitment = \"finalized\"\n",
    )
    .unwrap();
    let nested = dir.path().join("a").join("b");
    std::fs::create_dir_all(&nested).unwrap();
    let dump = |cwd: std::path::PathBuf| async move {
        let out = tokio::process::Command::new(SERVER)
            .arg("--dump-config")
            .current_dir(cwd)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let nested_dump = dump(nested.clone()).await;
    assert!(
        !nested_dump.contains("finalized"),
        "the parent's file was read:\n{nested_dump}"
    );
    let here = dump(dir.path().to_path_buf()).await;
    assert!(
        here.contains("commitment = \"finalized\""),
        "./config.toml is read:\n{here}"
    );
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let (code, _, stderr) = run(SERVER, &["migrate"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let path = db.url.trim_start_matches("sqlite://");
    assert!(
        std::path::Path::new(path).exists(),
        "the SQLite file was created"
    );
}

#[tokio::test]
async fn an_open_server_refuses_to_listen_beyond_loopback() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let (code, _, stderr) = run(
        SERVER,
        &[],
        &[
            ("DATABASE_URL", &db.url),
            ("BIND_ADDRESS", "0.0.0.0"),
            ("GRPC_PORT", "0"),
            ("API_PORT", "0"),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no auth tokens"), "{stderr}");
}

/// A call the server never started because it was shutting down. Besides
/// UNAVAILABLE and CANCELLED, tonic's client reports a call that raced the
/// server's GOAWAY or the connection's close as INTERNAL or UNKNOWN with a
/// transport message (the mapping grpc-java fixed in grpc-java#1355); a
/// started call the server failed carries the server's own message instead.
fn refused_by_shutdown(status: &tonic::Status) -> bool {
    // The client library's own words, never a server's (a store error that
    // mentions a connection is a started call failed, and fails the test).
    let prefixes = [
        "h2 protocol error",
        "transport error",
        "error trying to connect",
    ];
    let phrases = ["connection closed", "connection reset", "broken pipe"];
    let message = status.message().to_lowercase();
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        tonic::Code::Internal | tonic::Code::Unknown => {
            prefixes.iter().any(|p| message.starts_with(p))
                || phrases.iter().any(|p| message.contains(p))
        }
        _ => false,
    }
}

#[tokio::test]
async fn sigterm_during_load_answers_every_started_rpc_and_exits_cleanly() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let server = ServerProcess::start(&db.url, &[]).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Load: 8 callers issuing GetStats back to back until the server goes away.
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let mut client = LifecycleServiceClient::new(channel.clone());
        let served = served.clone();
        callers.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            loop {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    client.get_stats(GetStatsRequest {}),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        ok += 1;
                        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Refused after shutdown began (GOAWAY, connection closed):
                    // the server never started it, and the caller is told so.
                    Ok(Err(status)) if refused_by_shutdown(&status) => {
                        refused += 1;
                        break;
                    }
                    Ok(Err(status)) => panic!("unexpected answer during shutdown: {status:?}"),
                    Err(_) => panic!("a started call was never answered"),
                }
            }
            (ok, refused)
        }));
    }
    // Under load: every caller got answers (more than 8 in all).
    eventually(
        Duration::from_secs(10),
        "calls served under load",
        || async { served.load(std::sync::atomic::Ordering::SeqCst) > 16 },
    )
    .await;
    let code = server.terminate().await;
    let mut total = 0;
    for caller in callers {
        let (ok, _) = caller.await.unwrap();
        total += ok;
    }
    assert!(total > 8, "calls were served under load ({total})");
    assert_eq!(code, Some(0), "clean shutdown exit code");
}

#[tokio::test]
async fn lifecyclectl_manages_rules_and_reads_state() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let endpoint = format!("http://{}", server.grpc);
    let dir = tempfile::tempdir().unwrap();
    let rule_file = dir.path().join("rule.json");
    std::fs::write(&rule_file, SEED_RULE).unwrap();
    let ctl = lifecyclectl();
    let env = [("VALENCE_ENDPOINT", endpoint.as_str())];

    let (code, stdout, stderr) = run(
        &ctl,
        &["rules", "create", &rule_file.display().to_string()],
        &env,
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, stdout, _) = run(&ctl, &["rules", "list"], &env).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("rule-1") && stdout.contains("Auto-consume idle sessions"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&ctl, &["--json", "rules", "get", "rule-1"], &env).await;
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["id"], "rule-1", "{stdout}");
    // --json prints proto3 JSON, as the reference parser reads it.
    assert_eq!(
        json["condition"],
        serde_json::json!({ "sessionIdleForSeconds": "300" }),
        "{stdout}"
    );
    let mut proto3 = vec![crate::python::Proto3Case {
        message: "valence.lifecycle.v1.ProgressionRule",
        json: stdout.clone(),
        grpc: None,
    }];
    let (code, _, _) = run(&ctl, &["rules", "disable", "rule-1"], &env).await;
    assert_eq!(code, Some(0));
    let (code, stdout, _) = run(&ctl, &["--json", "stats"], &env).await;
    assert_eq!(code, Some(0));
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["rules"], "1", "uint64 as a string: {stdout}");
    proto3.push(crate::python::Proto3Case {
        message: "valence.lifecycle.v1.GetStatsResponse",
        json: stdout.clone(),
        grpc: None,
    });
    if crate::python::python_grpc_available().await {
        crate::python::parse_with_python(&proto3).await;
    }
    let (code, stdout, _) = run(&ctl, &["events", "list", "--type", "rule_disabled"], &env).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("rule_disabled"), "{stdout}");
    let (code, _, stderr) = run(&ctl, &["accounts", "get", "nope"], &env).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("invalid_argument") || stderr.contains("invalid"),
        "{stderr}"
    );
    let (code, stdout, _) = run(&ctl, &["health"], &env).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(server.stop().await);
}

/// grpcurl: list, describe and call with no proto files (reflection), and
/// subscribe to the stream. Skipped (loudly) where grpcurl is not installed.
#[tokio::test]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    if Command::new("grpcurl")
        .arg("-version")
        .output()
        .await
        .is_err()
    {
        assert!(
            std::env::var("VALENCE_REQUIRE_POSTGRES").is_err(),
            "grpcurl must be installed under .ci/test"
        );
        eprintln!("SKIPPED: grpcurl not installed");
        return;
    }
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let addr = server.grpc.to_string();
    let (code, stdout, stderr) = run("grpcurl", &["-plaintext", &addr, "list"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    for service in [
        "valence.lifecycle.v1.LifecycleService",
        "valence.lifecycle.v1.RuleService",
        "valence.lifecycle.v1.SingletonAdminService",
        "valence.lifecycle.v1.EventStreamService",
        "grpc.health.v1.Health",
        // Both reflection versions, listed and resolvable whichever one
        // the client speaks (grpcurl 1.8 speaks v1alpha).
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            stdout.lines().any(|l| l == service),
            "{service} missing from:\n{stdout}"
        );
    }
    let (code, described, stderr) = run(
        "grpcurl",
        &[
            "-plaintext",
            &addr,
            "describe",
            "grpc.reflection.v1.ServerReflection",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(described.contains("ServerReflectionInfo"), "{described}");

    let (code, stdout, _) = run(
        "grpcurl",
        &[
            "-plaintext",
            &addr,
            "describe",
            "valence.lifecycle.v1.RuleService.CreateRule",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("CreateRuleRequest"), "{stdout}");

    let (code, stdout, _) = run(
        "grpcurl",
        &["-plaintext", &addr, "grpc.health.v1.Health/Check"],
        &[],
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("SERVING"), "{stdout}");

    let body = r#"{"rule":{"id":"g1","name":"from grpcurl","condition":{"session_idle_for_seconds":"60"},"action":{"notify_webhook":{"url":"http://127.0.0.1:9/hook"}},"enabled":true}}"#;
    let (code, stdout, stderr) = run(
        "grpcurl",
        &[
            "-plaintext",
            "-d",
            body,
            &addr,
            "valence.lifecycle.v1.RuleService/CreateRule",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("\"g1\""), "{stdout}");

    let (code, _, stderr) = run(
        "grpcurl",
        &[
            "-plaintext",
            "-d",
            r#"{"id":"bad"}"#,
            &addr,
            "valence.lifecycle.v1.LifecycleService/GetAccount",
        ],
        &[],
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("InvalidArgument"), "{stderr}");

    // Subscribe from the oldest event; grpcurl prints events until -max-time.
    let (_, stdout, _) = run(
        "grpcurl",
        &[
            "-plaintext",
            "-max-time",
            "2",
            "-d",
            r#"{"start":"START_POSITION_OLDEST"}"#,
            &addr,
            "valence.lifecycle.v1.EventStreamService/Subscribe",
        ],
        &[],
    )
    .await;
    assert!(
        stdout.contains("\"ruleCreated\"") && stdout.contains("\"g1\""),
        "{stdout}"
    );
    assert!(server.stop().await);
}

#[tokio::test]
async fn lifecyclectl_events_watch_prints_events_as_they_arrive() {
    let server = TestServer::start(Db::Sqlite).await.unwrap();
    let endpoint = format!("http://{}", server.grpc);
    let mut watch = Command::new(lifecyclectl())
        .args(["--json", "events", "watch", "--type", "rule_created"])
        .env("VALENCE_ENDPOINT", &endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Once the watch subscribed, create two rules.
    eventually(Duration::from_secs(10), "the watch subscribed", || async {
        metric(&server, "lifecycle_event_subscribers").await >= 1.0
    })
    .await;
    let mut rules = server.rules().await;
    for id in ["w-1", "w-2"] {
        let mut seed: valence_lifecycle_api::rule_json::SeedRule =
            serde_json::from_str(SEED_RULE).unwrap();
        seed.id = id.into();
        rules
            .create_rule(valence_lifecycle_api::v1::CreateRuleRequest {
                rule: Some(seed.into()),
            })
            .await
            .unwrap();
    }
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("watch printed nothing")
            .unwrap()
            .expect("watch ended");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(event["entityId"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["w-1", "w-2"]);
    watch.kill().await.unwrap();
    assert!(server.stop().await);
}

#[tokio::test]
async fn a_second_server_on_the_same_sqlite_file_is_refused() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let first = ServerProcess::start(&db.url, &[]).await;
    let grpc = crate::process::free_port().to_string();
    let api = crate::process::free_port().to_string();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("GRPC_PORT", grpc.as_str()),
        ("API_PORT", api.as_str()),
        ("VALENCE_LIFECYCLE_RPC__EMBEDDED", "false"),
    ];
    let (code, _, stderr) = run(SERVER, &[], &env).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("another valence-lifecycle server") && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    assert_eq!(
        first.terminate().await,
        Some(0),
        "the first one was not disturbed"
    );
}

/// `dev` finds the chain by asking the server; the server's own options
/// would be ignored, so they are refused, and its help says so.
#[tokio::test]
async fn dev_refuses_the_options_it_would_ignore_and_says_so() {
    let (code, _, stderr) = run(
        SERVER,
        &["dev", "--rpc-url", "http://127.0.0.1:1", "request-account"],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--rpc-url") && stderr.contains("GRPC_PORT"),
        "{stderr}"
    );
    let (code, stdout, _) = run(SERVER, &["dev", "--help"], &[]).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("asking the server on its gRPC port"),
        "{stdout}"
    );
}
