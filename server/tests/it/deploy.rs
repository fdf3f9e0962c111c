//! The operations kit in server/deploy/, each piece checked by the tool
//! that consumes it: promtool for the alert rules (and their unit tests), a
//! real Prometheus scraping a real server for every PromQL expression of
//! the dashboard and the rules, the dashboard model's shape,
//! `systemd-analyze verify` for the unit, the systemd notifications of the
//! real binary, and config.example.toml against `--print-example-config`.

use std::{
    collections::{BTreeSet, HashSet},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::Value;
use tokio::{net::UnixDatagram, process::Command};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::GetStatsRequest;
use valence_lifecycle_server::{
    notify,
    supervisor::{Policy, StatusBoard, Supervisor},
    telemetry::Metrics,
};

use crate::{
    common::{
        eventually, metrics_text, open_store, output_text, test_config, tool, Db, TestDb,
        TestServer,
    },
    process::free_port,
};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `program args` in `dir`; panics with its output unless it succeeds.
async fn run_ok(program: &Path, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "{} {args:?}:\n{text}",
        program.display()
    );
    text
}

/// One alert rule of alerts.yml, read line by line (each rule has a
/// one-line `expr`).
struct Alert {
    name: String,
    expr: String,
    severity: Option<String>,
    summary: bool,
    description: bool,
}

fn alerts() -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    for line in read("prometheus/alerts.yml").lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert: ") {
            alerts.push(Alert {
                name: name.to_string(),
                expr: String::new(),
                severity: None,
                summary: false,
                description: false,
            });
            continue;
        }
        let Some(alert) = alerts.last_mut() else {
            continue;
        };
        if let Some(expr) = line.strip_prefix("expr: ") {
            alert.expr = expr.to_string();
        } else if let Some(s) = line.strip_prefix("severity: ") {
            alert.severity = Some(s.to_string());
        } else if line.starts_with("summary: ") {
            alert.summary = true;
        } else if line.starts_with("description: ") {
            alert.description = true;
        }
    }
    alerts
}

/// Every `expr:` of a rule file (alerts and recording rules).
fn rule_exprs(path: &str) -> Vec<String> {
    read(path)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_string)
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/valence-lifecycle.json")).expect("dashboard JSON parses")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel.clone());
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested.iter().cloned());
        }
    }
    all
}

/// The dashboard's expressions with Grafana's variables replaced as Grafana
/// would (every job and replica, a one-minute rate window).
fn dashboard_exprs() -> Vec<String> {
    panels(&dashboard())
        .iter()
        .filter_map(|p| p["targets"].as_array().cloned())
        .flatten()
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", ".+")
                .replace("$instance", ".+")
        })
        .collect()
}

/// Metric names a PromQL expression reads: identifiers that are not
/// functions, keywords, label names (inside `{}` or a `by (…)`-like list)
/// or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ];
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut braces, mut in_string) = (0, 0, false);
    let mut label_list_depth: Option<usize> = None;
    let mut parens = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            if c == '\\' {
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => {
                // A range or subquery: skip to its end.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() => {
                // A number (1e9, 0.99) or a duration.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                continue;
            }
            '(' => parens += 1,
            ')' => {
                if label_list_depth == Some(parens) {
                    label_list_depth = None;
                }
                parens = parens.saturating_sub(1);
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let is_keyword = KEYWORDS.contains(&word.to_lowercase().as_str());
                if is_keyword && next == Some(&'(') {
                    // by (…), on (…), group_left (…): a list of labels.
                    label_list_depth = Some(parens + 1);
                } else if braces == 0
                    && label_list_depth.is_none()
                    && !is_keyword
                    && !AGGREGATIONS.contains(&word.as_str())
                    && next != Some(&'(')
                {
                    names.insert(word);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

#[test]
fn metric_names_skip_functions_labels_and_keywords() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{code=~"x|y",job=~".+"}[5m]))) / ignoring(code) group_left sum(b_total) > 0 and on (instance) c"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b_total", "c"]
    );
}

/// Whether /metrics (`text`) exports `name`: as a sample, or as a family
/// its TYPE line declares (a family with no labelled child yet has no
/// samples), with the suffixes Prometheus adds per type.
fn exported(text: &str, name: &str) -> bool {
    let declared = |family: &str, kind: &str| text.contains(&format!("# TYPE {family} {kind}\n"));
    if text
        .lines()
        .any(|l| l.split(['{', ' ']).next() == Some(name))
    {
        return true;
    }
    let with_suffix = |suffix: &str, kinds: &[&str]| {
        name.strip_suffix(suffix)
            .is_some_and(|family| kinds.iter().any(|k| declared(family, k)))
    };
    declared(name, "gauge")
        || with_suffix("_total", &["counter"])
        || with_suffix("_bucket", &["histogram"])
        || with_suffix("_sum", &["histogram"])
        || with_suffix("_count", &["histogram"])
}

#[tokio::test]
async fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let alerts = alerts();
    assert!(alerts.len() >= 13, "{} alerts", alerts.len());
    let names: HashSet<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    for seed in ["HighAccountBacklog", "StaleSessions"] {
        assert!(names.contains(seed), "seed 000's {seed}");
    }
    for a in &alerts {
        assert!(!a.expr.is_empty(), "{}: a one-line expr", a.name);
        assert!(
            matches!(a.severity.as_deref(), Some("critical" | "warning")),
            "{}: severity",
            a.name
        );
        assert!(
            a.summary && a.description,
            "{}: summary and description",
            a.name
        );
    }
    // One firing and one quiet case per alert in the unit tests.
    let tests = read("prometheus/alerts.test.yml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for a in &alerts {
        let mut cases = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == format!("alertname: {}", a.name))
            .map(|(i, _)| lines.get(i + 1).copied().unwrap_or(""));
        let (mut firing, mut quiet) = (false, false);
        for next in cases.by_ref() {
            firing |= next == "exp_alerts:";
            quiet |= next == "exp_alerts: []";
        }
        assert!(
            firing && quiet,
            "{}: firing {firing}, quiet {quiet}",
            a.name
        );
    }
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = deploy("prometheus");
    run_ok(
        &promtool,
        &["check", "rules", "alerts.yml", "recording.yml"],
        &dir,
    )
    .await;
    run_ok(&promtool, &["check", "config", "prometheus.yml"], &dir).await;
    let out = run_ok(&promtool, &["test", "rules", "alerts.test.yml"], &dir).await;
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_dashboard_is_an_importable_model_with_a_datasource_variable() {
    let dashboard = dashboard();
    let uid = dashboard["uid"].as_str().expect("uid");
    assert!(
        !uid.is_empty() && uid.len() <= 40,
        "Grafana uids are 1 to 40 characters: {uid:?}"
    );
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    let var_ref = format!("${{{}}}", datasource["name"].as_str().unwrap());
    let all = panels(&dashboard);
    let mut ids = HashSet::new();
    let mut rows = 0;
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: id repeated"
        );
        if panel["type"] == "row" {
            rows += 1;
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], var_ref, "{title}: datasource");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title}: no target");
        let mut refs = HashSet::new();
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: {t}"
            );
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId repeated"
            );
            assert_eq!(
                t["datasource"]["uid"], var_ref,
                "{title}: target datasource"
            );
        }
    }
    // The seed's four rows and what an operator of this server watches.
    let row_titles: Vec<&str> = all
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for needed in [
        "Account creation",
        "Session lifecycle",
        "Rule evaluation",
        "Requests: rates, errors, latency",
        "Components and supervision",
        "Chain",
        "Event stream",
    ] {
        assert!(
            row_titles.iter().any(|t| t.starts_with(needed)),
            "row {needed:?} in {row_titles:?}"
        );
    }
    assert!(rows >= 8);
}

#[tokio::test]
async fn prometheus_runs_every_dashboard_and_rule_expression_against_a_real_server() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    // A shard configured (no chain needed), so the per-shard families have
    // their series.
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let mut config = test_config(&db.url);
    config.lifecycle.shard_program_id = "11111111111111111111111111111112".into();
    let server = TestServer::start_with(db, config).await;
    let http = reqwest::Client::new();
    // Some traffic, so per-route and per-method families have children.
    for path in ["/health", "/accounts", "/no-such-route"] {
        http.get(format!("{}{path}", server.http()))
            .send()
            .await
            .unwrap();
    }
    let mut grpc = server.lifecycle().await;
    grpc.get_stats(GetStatsRequest {}).await.unwrap();
    // A stream ticket, and an SSE stream that its client leaves (the next
    // heartbeat, within a second, finds it gone and ends it).
    http.post(format!("{}/events/tickets", server.http()))
        .send()
        .await
        .unwrap();
    let stream = http
        .get(format!(
            "{}/events/stream?start=now&heartbeat_interval_seconds=1",
            server.http()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    eventually(Duration::from_secs(15), "the left stream ended", || async {
        metrics_text(&server)
            .await
            .contains("lifecycle_gateway_streams_ended_total{")
    })
    .await;
    let metrics = http
        .get(format!("{}/metrics", server.http()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let dashboard = dashboard_exprs();
    let rules: Vec<String> = [
        rule_exprs("prometheus/alerts.yml"),
        rule_exprs("prometheus/recording.yml"),
    ]
    .concat();
    // Names Prometheus makes itself, and the recording rules' outputs.
    let synthetic = ["up"];
    let mut missing = Vec::new();
    for expr in dashboard.iter().chain(&rules) {
        for name in metric_names(expr) {
            if !synthetic.contains(&name.as_str()) && !exported(&metrics, &name) {
                missing.push(format!("{name} (in {expr})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in /metrics:\n{}",
        missing.join("\n")
    );

    // The shipped rule files, loaded by a real Prometheus scraping the server.
    let dir = tempfile::tempdir().unwrap();
    for file in ["alerts.yml", "recording.yml"] {
        std::fs::copy(deploy(&format!("prometheus/{file}")), dir.path().join(file)).unwrap();
    }
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml, recording.yml]\n\
         scrape_configs:\n  - job_name: valence-lifecycle\n    static_configs:\n      - targets: ['{}']\n",
        server.api
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut child = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |q: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            http.get(format!("{api}/query"))
                .query(&[("query", q.as_str())])
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
    };
    // Two scrapes at least, so rate() over the window has points.
    eventually(
        Duration::from_secs(30),
        "Prometheus scraping twice",
        || async move {
            query("count_over_time(up[1m])".into())
                .await
                .and_then(|b| {
                    b["data"]["result"][0]["value"][1]
                        .as_str()
                        .map(str::to_string)
                })
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|n| n >= 2)
        },
    )
    .await;
    let mut failed = Vec::new();
    for expr in dashboard.iter().chain(&rules) {
        let body = query(expr.clone()).await.expect("Prometheus answers");
        if body["status"] != "success" {
            failed.push(format!("{expr}: {body}"));
        }
    }
    assert!(
        failed.is_empty(),
        "expressions failed:\n{}",
        failed.join("\n")
    );
    // Prometheus loaded every shipped rule, and evaluates them without error.
    let body: Value = http
        .get(format!("{api}/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded: Vec<&Value> = body["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), rules.len(), "{body}");
    let broken: Vec<&&Value> = loaded.iter().filter(|r| r["health"] == "err").collect();
    assert!(broken.is_empty(), "{broken:?}");
    child.kill().await.unwrap();
    assert!(server.stop().await);
}

#[tokio::test]
async fn systemd_analyze_verifies_the_unit() {
    let unit = read("systemd/valence-lifecycle.service");
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "StateDirectory=",
        "EnvironmentFile=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "User=valence-lifecycle",
    ] {
        assert!(unit.contains(needed), "{needed}");
    }
    // TimeoutStopSec above the default shutdown grace.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    let grace = valence_lifecycle_server::config::Config::default()
        .server
        .shutdown_grace_secs;
    assert!(stop > grace, "TimeoutStopSec={stop} vs grace {grace}");
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valence-lifecycle.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/valence-lifecycle",
            env!("CARGO_BIN_EXE_valence-lifecycle"),
        ),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // An unknown key or a bad value is only a warning naming the file.
    assert!(!stderr.contains("valence-lifecycle.service"), "{stderr}");
}

/// The messages the server sent to NOTIFY_SOCKET, one datagram each.
async fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buf))
        .await
        .expect("a notification within 60 s")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[tokio::test]
async fn the_server_notifies_systemd_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let api = free_port();
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the
    // shell's, so $$ is the server's.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" serve")
        .arg(env!("CARGO_BIN_EXE_valence-lifecycle"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env("DATABASE_URL", &db.url)
        .env("GRPC_PORT", free_port().to_string())
        .env("API_PORT", api.to_string())
        .env("RUST_LOG", "warn")
        .env("VALENCE_LIFECYCLE_RPC__EMBEDDED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = next_message(&socket).await;
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains("STATUS=serving (healthy)"), "{ready:?}");
    // Ready means serving: /health answers healthy at once.
    let health = crate::common::health(&format!("http://127.0.0.1:{api}")).await;
    assert_eq!(health["status"], "healthy", "{health}");
    // Fed at half of WATCHDOG_USEC (200 ms): three pets take about 600 ms.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(next_message(&socket).await, "WATCHDOG=1\n");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());
    loop {
        let message = next_message(&socket).await;
        if message == "WATCHDOG=1\n" {
            continue;
        }
        assert_eq!(message, "STOPPING=1\nSTATUS=stopping\n");
        break;
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exit after SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn the_watchdog_is_fed_only_while_every_component_is_alive() {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let store = open_store(&db.url).await;
    let board = StatusBoard::new(store.clone(), Arc::new(Metrics::new()));
    let policy = Policy {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_secs(60),
        max_restarts: 1,
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
        multiplier: 2.0,
        jitter: 0.0,
    };
    let mut supervisor = Supervisor::new(board.clone(), policy.clone());
    supervisor
        .start("steady", |ctx| async move {
            let mut tick = ctx.heartbeat.ticker();
            loop {
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => ctx.heartbeat.beat(),
                }
            }
        })
        .await;
    let pets = Arc::new(AtomicU32::new(0));
    let stop = CancellationToken::new();
    let counted = pets.clone();
    let feeding = tokio::spawn(notify::feed(
        Duration::from_millis(20),
        board.clone(),
        Duration::from_secs(120),
        stop.clone(),
        move || {
            counted.fetch_add(1, Ordering::Relaxed);
        },
    ));
    eventually(Duration::from_secs(10), "the watchdog fed", || async {
        pets.load(Ordering::Relaxed) >= 3
    })
    .await;

    // A component that always fails: restarted once, then given up on.
    // While it is being restarted the watchdog is still fed.
    supervisor
        .start("doomed", |_ctx| async { anyhow::bail!("always fails") })
        .await;
    eventually(Duration::from_secs(10), "doomed given up on", || async {
        board.alive(Duration::from_secs(120)).is_err()
    })
    .await;
    let at_death = pets.load(Ordering::Relaxed);
    // A control loop on a board that stays alive: five of its pets (at the
    // same period) without one more for the dead board.
    let control_board = StatusBoard::new(store.clone(), Arc::new(Metrics::new()));
    let control = Arc::new(AtomicU32::new(0));
    let control_count = control.clone();
    let control_loop = tokio::spawn(notify::feed(
        Duration::from_millis(20),
        control_board,
        Duration::from_secs(120),
        stop.clone(),
        move || {
            control_count.fetch_add(1, Ordering::Relaxed);
        },
    ));
    eventually(
        Duration::from_secs(10),
        "the control fed 5 times",
        || async { control.load(Ordering::Relaxed) >= 5 },
    )
    .await;
    assert!(
        pets.load(Ordering::Relaxed) <= at_death + 1,
        "fed after a component was given up on: {} vs {at_death}",
        pets.load(Ordering::Relaxed)
    );

    // A running component that stops beating is dead too.
    let mut silent = Supervisor::new(
        StatusBoard::new(store.clone(), Arc::new(Metrics::new())),
        policy,
    );
    silent
        .start("silent", |ctx| async move {
            ctx.cancel.cancelled().await;
            Ok(())
        })
        .await;
    let silent_board = silent.board();
    assert!(silent_board.alive(Duration::from_secs(60)).is_ok());
    eventually(
        Duration::from_secs(5),
        "a silent component dead",
        || async {
            silent_board
                .alive(Duration::from_millis(200))
                .is_err_and(|why| why.contains("silent: no heartbeat"))
        },
    )
    .await;

    stop.cancel();
    feeding.await.unwrap();
    control_loop.await.unwrap();
    silent.shutdown(Duration::from_secs(5)).await;
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn print_example_config_is_the_committed_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_valence-lifecycle"))
        .arg("--print-example-config")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        read("config.example.toml"),
        "regenerate: cargo run -q -- --print-example-config > server/deploy/config.example.toml"
    );
}

#[tokio::test]
async fn tokens_from_a_file_and_a_digest_rotate_on_sighup() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reader.token");
    std::fs::write(&file, "first-reader-secret-0123\n").unwrap();
    let digest = hex::encode(sha2::Sha256::digest(b"admin-secret-token-0123"));
    let tokens = format!(
        r#"[{{token = "file:{}", role = "reader", name = "dashboards"}}, {{token = "sha256:{digest}", role = "admin"}}]"#,
        file.display()
    );
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let server = crate::process::ServerProcess::start(
        &db.url,
        &[("VALENCE_LIFECYCLE_AUTH__TOKENS", tokens.as_str())],
    )
    .await;
    let http = reqwest::Client::new();
    let stats = |token: &'static str| {
        let (http, url) = (http.clone(), format!("http://{}/stats", server.api));
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(stats("first-reader-secret-0123").await, 200);
    assert_eq!(stats("admin-secret-token-0123").await, 200);
    assert_eq!(stats("second-reader-secret-0123").await, 401);

    std::fs::write(&file, "second-reader-secret-0123\n").unwrap();
    let pid = server.child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap()
        .success());
    eventually(
        Duration::from_secs(10),
        "the new token accepted",
        || async { stats("second-reader-secret-0123").await == 200 },
    )
    .await;
    assert_eq!(stats("first-reader-secret-0123").await, 401);
    assert_eq!(stats("admin-secret-token-0123").await, 200);
    // A reload that fails (the file is gone) keeps the tokens in force.
    std::fs::remove_file(&file).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap()
        .success());
    assert_eq!(stats("second-reader-secret-0123").await, 200);
    assert_eq!(server.terminate().await, Some(0));
}
