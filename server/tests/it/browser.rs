//! The console in a real browser: headless Chromium (Debian's `chromium`)
//! driven over WebDriver (`chromedriver`, from `chromium-driver`) by a small
//! client on reqwest (the W3C protocol is JSON over HTTP: no WebDriver crate
//! and its dependency tree). `.ci/test` installs both; elsewhere the tests
//! skip when they are missing (`common::tool`). Screenshots of each page go
//! to `<target>/tmp/console/<test>/`.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::{net::TcpListener, process::Child};
use valence_lifecycle_server::{
    config::Config,
    store::{AttemptFailure, RequestStatus},
};

use crate::{
    common::{
        authed, backend_tests, eventually, open_store, request_record, test_config, tool,
        with_tokens, Db, TestDb, TestServer, ADMIN, OPERATOR, READER,
    },
    events::rule,
};

const WAIT: Duration = Duration::from_secs(15);

/// The W3C name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session on it.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Child,
    shots: PathBuf,
}

impl Browser {
    /// None when chromium or chromedriver is missing (outside .ci/test).
    async fn start(test: &str) -> Option<Browser> {
        let chromium = tool("chromium")?;
        let driver = tool("chromedriver")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually(WAIT, "chromedriver ready", || async {
            match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("console")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: child,
            shots,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if answer["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    async fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {found}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// Waits until `script` returns true (a script that throws, on an
    /// element not there yet, is not true yet).
    async fn until(&self, what: &str, script: &str) -> Duration {
        let guarded = format!("try {{ {script} }} catch (e) {{ return false; }}");
        eventually(WAIT, what, || async { self.js(&guarded).await == true }).await
    }

    /// The text of the first element matching `css` ("" when none).
    async fn text(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : '';",
            json!(css)
        );
        self.js(&script).await.as_str().unwrap_or("").to_string()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }

    /// The browser's console messages at level SEVERE (errors, failed
    /// loads) since the last call.
    async fn console_errors(&self) -> Vec<String> {
        let logs = self.post("/se/log", json!({ "type": "browser" })).await;
        logs.as_array()
            .unwrap()
            .iter()
            .filter(|l| l["level"] == "SEVERE")
            .map(|l| l["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Opens the console at `http` and signs in with `token`.
    async fn sign_in(&self, http: &str, token: &str, role: &str) {
        self.goto(&format!("{http}/console")).await;
        self.until(
            "the console started",
            "return document.body.dataset.ready === 'true'",
        )
        .await;
        self.type_into("#token", token).await;
        self.click("#use-token").await;
        let expected =
            format!("return document.getElementById('whoami').textContent === 'role: {role}'");
        self.until("signed in", &expected).await;
    }

    /// Opens a page (`#/name`) and waits for it.
    async fn page(&self, name: &str) {
        self.js(&format!("location.hash = '#/{name}'; return true"))
            .await;
        let script = format!("return document.getElementById('page').dataset.page === '{name}'");
        self.until(&format!("page {name}"), &script).await;
    }

    /// The sequences in the live tail, oldest first.
    async fn tail_sequences(&self) -> Vec<u64> {
        let v = self
            .js("return [...document.querySelectorAll('#tail tr.event-row')].map(r => r.dataset.seq)")
            .await;
        let mut seqs: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().parse().unwrap())
            .collect();
        seqs.sort();
        seqs
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// A fresh SQLite database holding one parked (failed) account request.
async fn with_parked_request() -> (TestDb, String) {
    let db = TestDb::new(Db::Sqlite).await.unwrap();
    let store = open_store(&db.url).await;
    let request = request_record(1);
    store.upsert_account_request(&request).await.unwrap();
    assert_eq!(store.claim_pending(10).await.unwrap().len(), 1);
    store
        .record_attempt_failure(&AttemptFailure {
            id: &request.id,
            attempts: 5,
            reason: "the chain refused it",
            parked: true,
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_account_request(&request.id).await.unwrap().status,
        RequestStatus::Failed
    );
    (db, request.id)
}

fn operator_config(db: &TestDb) -> Config {
    let mut config = with_tokens(test_config(&db.url));
    config.monitoring.health_check_interval_secs = 1;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_without_errors_and_the_tail_is_live() {
    let Some(browser) = Browser::start("pages").await else {
        return;
    };
    let (db, request_id) = with_parked_request().await;
    let config = operator_config(&db);
    let server = TestServer::start_with(db, config).await;
    browser.sign_in(&server.http(), OPERATOR, "operator").await;

    browser.page("overview").await;
    browser
        .until(
            "health shown",
            "return !!document.getElementById('health-status')",
        )
        .await;
    browser.screenshot("overview").await;

    browser.page("events").await;
    browser
        .until(
            "the tail is live",
            "return document.getElementById('tail-status').textContent === 'live'",
        )
        .await;
    // A rule created over gRPC shows in the tail within a second.
    let created = Instant::now();
    server
        .rules()
        .await
        .create_rule(authed(rule("from-grpc"), OPERATOR))
        .await
        .unwrap();
    let shown = browser
        .until(
            "the rule in the tail",
            "return !!document.querySelector('#tail tr[data-type=\"rule_created\"][data-entity=\"from-grpc\"]')",
        )
        .await;
    let latency = created.elapsed();
    eprintln!("rule created over gRPC shown in the tail after {latency:?} (polled: {shown:?})");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    browser.screenshot("events").await;

    browser.page("entities").await;
    browser.type_into("#entity-id", &request_id).await;
    browser.click("#entity-search").await;
    browser
        .until(
            "the request found",
            "return !!document.getElementById('record')",
        )
        .await;
    assert!(browser.text("#entity h3").await.contains("account request"));
    browser.screenshot("entities").await;

    browser.page("requests").await;
    browser
        .until(
            "the requests listed",
            "return !!document.querySelector('#requests tr[data-id]')",
        )
        .await;
    browser.screenshot("requests").await;

    browser.page("rules").await;
    browser
        .until(
            "the rule listed",
            "return !!document.querySelector('#rules tr[data-id=\"from-grpc\"]')",
        )
        .await;
    // Disable it from the page, then a dry run.
    browser
        .click("#rules tr[data-id=\"from-grpc\"] button.toggle")
        .await;
    browser
        .until(
            "the rule disabled",
            "const r = document.querySelector('#rules tr[data-id=\"from-grpc\"]'); return !!r && r.children[2].textContent === 'no'",
        )
        .await;
    browser
        .click("#rules tr[data-id=\"from-grpc\"] button.dry")
        .await;
    browser
        .until("the dry run shown", "return document.getElementById('dry-run').textContent.includes('Dry run of from-grpc')")
        .await;
    browser.screenshot("rules").await;

    browser.page("singletons").await;
    browser
        .until("singletons shown", "return document.getElementById('singletons').textContent.includes('needs the admin role')")
        .await;
    browser.screenshot("singletons").await;
    // An admin sees them, with their controls.
    browser.type_into("#token", ADMIN).await;
    browser.click("#use-token").await;
    browser
        .until(
            "the admin's singletons",
            "return !!document.querySelector('#singletons button.pause[data-kind=\"all\"]:not([disabled])')",
        )
        .await;
    browser.screenshot("singletons-admin").await;

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.quit().await;
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_request_retried_from_the_page_is_pending_and_a_reader_cannot() {
    let Some(browser) = Browser::start("retry").await else {
        return;
    };
    let (db, request_id) = with_parked_request().await;
    let config = operator_config(&db);
    let server = TestServer::start_with(db, config).await;
    let row = format!("#requests tr[data-id=\"{request_id}\"]");

    // A reader sees the button, disabled, with the reason.
    browser.sign_in(&server.http(), READER, "reader").await;
    browser.page("requests").await;
    let button = format!("{row} button.retry");
    browser
        .until(
            "the parked request listed",
            &format!("return !!document.querySelector({})", json!(button)),
        )
        .await;
    let state = browser
        .js(&format!(
            "const b = document.querySelector({}); return [b.disabled, b.title]",
            json!(button)
        ))
        .await;
    assert_eq!(state[0], true, "disabled for a reader");
    assert!(
        state[1]
            .as_str()
            .unwrap()
            .contains("needs the operator role"),
        "{state}"
    );
    assert!(browser.text(&row).await.contains("needs the operator role"));
    browser.screenshot("requests-reader").await;

    // An operator retries it: pending again, on the page and in the store.
    browser.type_into("#token", OPERATOR).await;
    browser.click("#use-token").await;
    browser
        .until(
            "signed in as operator",
            "return document.getElementById('whoami').textContent === 'role: operator'",
        )
        .await;
    browser
        .until(
            "the button enabled",
            &format!(
                "const b = document.querySelector({}); return !!b && !b.disabled",
                json!(button)
            ),
        )
        .await;
    browser.click(&button).await;
    browser
        .until(
            "the request listed as pending",
            &format!(
                "return document.querySelector({}).dataset.status === 'pending'",
                json!(row)
            ),
        )
        .await;
    browser.screenshot("requests-retried").await;
    let http = reqwest::Client::new();
    let answer: Value = http
        .get(format!("{}/account-requests/{request_id}", server.http()))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["status"], "ACCOUNT_REQUEST_STATUS_PENDING",
        "{answer}"
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.quit().await;
    assert!(server.stop().await);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tail_resumes_with_no_gap_after_the_server_restarts(db: Db) {
        let Some(db) = TestDb::new(db).await else {
            return;
        };
        let Some(browser) =
            Browser::start(&format!("restart-{}", db.url.split(':').next().unwrap())).await
        else {
            return;
        };
        // Open (no tokens), as on a developer's loopback.
        let mut config = test_config(&db.url);
        config.monitoring.health_check_interval_secs = 1;
        let server = TestServer::start_with(db, config).await;
        let port = server.api.port();
        browser
            .goto(&format!("{}/console#/events", server.http()))
            .await;
        browser
            .until(
                "the tail is live",
                "return document.getElementById('tail-status').textContent === 'live'",
            )
            .await;
        server
            .rules()
            .await
            .create_rule(rule("before"))
            .await
            .unwrap();
        browser
            .until(
                "the first rule shown",
                "return !!document.querySelector('#tail tr[data-entity=\"before\"]')",
            )
            .await;

        let (clean, db) = server.stop_and_keep().await;
        assert!(clean);
        browser
            .until(
                "the tail noticed",
                "return document.getElementById('tail-status').textContent !== 'live'",
            )
            .await;
        browser.screenshot("events-server-down").await;
        let mut config = test_config(&db.url);
        config.monitoring.health_check_interval_secs = 1;
        let server = TestServer::start_on(db, config, port).await;
        server
            .rules()
            .await
            .create_rule(rule("after"))
            .await
            .unwrap();
        browser
            .until(
                "the second rule shown",
                "return !!document.querySelector('#tail tr[data-entity=\"after\"]')",
            )
            .await;
        browser.screenshot("events-resumed").await;

        // Everything from the first event shown on: what the server logged while
        // stopping and starting included, each once.
        let shown = browser.tail_sequences().await;
        let (first, last) = (shown[0], *shown.last().unwrap());
        assert_eq!(
            shown,
            (first..=last).collect::<Vec<_>>(),
            "no gap, no repeat"
        );
        let stored = server
            .lifecycle()
            .await
            .list_events(valence_lifecycle_api::v1::ListEventsRequest {
                after_sequence: Some(first - 1),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let head_shown = stored.events.iter().filter(|e| e.sequence <= last).count();
        assert_eq!(head_shown, shown.len(), "as the log has them");
        let errors = browser.console_errors().await;
        // The reconnect attempts while the server was down are the only errors.
        assert!(
            errors
                .iter()
                .all(|e| e.contains("/events/") || e.contains("net::ERR_CONNECTION_REFUSED")),
            "console errors: {errors:#?}"
        );
        browser.quit().await;
        assert!(server.stop().await);
    }
);
