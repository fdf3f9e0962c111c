//! Every statement of the ingest path reads by an index (issue 14): the
//! store writes what a reconciliation pass and the chain's notifications
//! bring, every statement it sends is captured from sqlx's own statement
//! log, and each is explained by its backend. A full scan of a table there
//! costs once per record, so it fails the test, naming the statement.
//!
//! Its own test binary: the capture is a process-wide tracing subscriber,
//! which the `it` suite's concurrent tests would fill with their own
//! statements.

#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;

use std::sync::{Mutex, OnceLock};

use sqlx::{Executor as _, Row as _};
use tracing::field::{Field, Visit};
use tracing_subscriber::{layer::SubscriberExt as _, Layer};
use valence_lifecycle_server::store::{
    AccountRecord, ChainWrite, ConsumptionRecord, SessionRecord, Store,
};

use common::{
    account_record, backend_tests, fresh_store, initialized_account_record, pubkey, request_record,
    session_record, Db,
};

/// Statements sqlx ran since the last [`take_statements`].
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// One backend's case at a time: they share the capture.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Capture;

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut sql = Sql::default();
        event.record(&mut sql);
        // A short statement is its own summary; a long one is in db.statement.
        let text = if sql.statement.trim().is_empty() {
            sql.summary
        } else {
            sql.statement
        };
        STATEMENTS.lock().unwrap().push(text.trim().to_string());
    }
}

#[derive(Default)]
struct Sql {
    summary: String,
    statement: String,
}

impl Visit for Sql {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.statement = value.to_string(),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry()
            .with(Capture.with_filter(tracing_subscriber::filter::LevelFilter::DEBUG));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
}

fn take_statements() -> Vec<String> {
    let mut all = std::mem::take(&mut *STATEMENTS.lock().unwrap());
    all.sort();
    all.dedup();
    all
}

/// What the monitor and the builder write, first seen and seen again: new
/// records in a batch, records that follow a link, changed and consumed
/// records, chain events, one by one.
async fn ingest(store: &Store) {
    let writes = vec![
        ChainWrite::Request(request_record(1)),
        ChainWrite::Request(request_record(2)),
        ChainWrite::Account(account_record(10)),
        ChainWrite::Account(initialized_account_record(11, 1)),
        ChainWrite::Session(session_record(20, &[10, 11], "ns")),
        ChainWrite::Session(SessionRecord {
            is_consumed: true,
            ..session_record(21, &[], "ns")
        }),
        ChainWrite::Consumption(ConsumptionRecord {
            consumed_session: pubkey(20),
            created_sessions: vec![pubkey(22)],
            transaction_signature: "sig-consume".into(),
            consumed_at_ms: 1_700_000_001_000,
            slot: Some(13),
        }),
    ];
    store.write_chain_batch(&writes).await.unwrap();
    // Seen again (a pass after a restart): nothing changes.
    store.write_chain_batch(&writes).await.unwrap();
    // One by one, as notifications bring them.
    let changed = AccountRecord {
        state_hash: "cd".repeat(32),
        ..account_record(10)
    };
    store
        .write_chain(&ChainWrite::Account(changed))
        .await
        .unwrap();
    let mut linked = request_record(2);
    linked.account_id = Some(pubkey(12));
    store
        .write_chain(&ChainWrite::Account(account_record(12)))
        .await
        .unwrap();
    store
        .write_chain(&ChainWrite::Request(linked))
        .await
        .unwrap();
    let named = AccountRecord {
        signature: "sig-named".into(),
        ..initialized_account_record(11, 1)
    };
    store
        .write_chain(&ChainWrite::Account(named))
        .await
        .unwrap();
    store
        .set_consumption_signature(&pubkey(20), "sig-consume")
        .await
        .unwrap();
}

/// The highest `$n` in `sql`.
fn parameters(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Statements that can read a table (inserts without a query read none).
fn reads_tables(sql: &str) -> bool {
    let upper = sql.to_ascii_uppercase();
    let verb = upper
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    match verb.as_str() {
        "SELECT" => upper.contains(" FROM "),
        "UPDATE" | "DELETE" => true,
        "INSERT" => upper.contains(" SELECT "),
        _ => false,
    }
}

/// The plan's lines of `sql`, with every parameter unbound (SQLite) or a
/// literal the planner cannot fold away (PostgreSQL, seq scans disabled,
/// so that a usable index is chosen even on tiny tables).
async fn plan(store_url: &str, db: Db, sql: &str) -> Vec<String> {
    use sqlx::Connection as _;
    match db {
        Db::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(store_url).await.unwrap();
            let rows = conn
                .fetch_all(format!("EXPLAIN QUERY PLAN {sql}").as_str())
                .await
                .unwrap_or_else(|e| panic!("explaining {sql}: {e}"));
            rows.iter().map(|r| r.get::<String, _>("detail")).collect()
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(store_url).await.unwrap();
            conn.execute("SET enable_seqscan = off").await.unwrap();
            conn.execute(format!("PREPARE planned AS {sql}").as_str())
                .await
                .unwrap_or_else(|e| panic!("preparing {sql}: {e}"));
            let values = vec!["'1'"; parameters(sql)].join(", ");
            let execute = if values.is_empty() {
                "EXPLAIN EXECUTE planned".to_string()
            } else {
                format!("EXPLAIN EXECUTE planned({values})")
            };
            let rows = conn.fetch_all(execute.as_str()).await.unwrap();
            rows.iter().map(|r| r.get::<String, _>(0)).collect()
        }
    }
}

/// A plan line that reads a whole table.
fn full_scan(db: Db, line: &str) -> bool {
    match db {
        // "SCAN t" reads t whole; "SEARCH t USING … INDEX" does not.
        Db::Sqlite => line.trim_start().starts_with("SCAN ") && !line.contains("CONSTANT ROW"),
        Db::Postgres => line.contains("Seq Scan"),
    }
}

backend_tests!(
    async fn every_ingest_statement_reads_by_an_index(db: Db) {
        let _turn = ONE_AT_A_TIME.lock().await;
        let Some((store, test_db)) = fresh_store(db).await else {
            return;
        };
        capture();
        take_statements();
        ingest(&store).await;
        let statements: Vec<String> = take_statements()
            .into_iter()
            .filter(|s| reads_tables(s))
            .collect();
        assert!(
            statements.len() >= 10,
            "{db:?}: only {} statements captured: {statements:#?}",
            statements.len()
        );
        // The detector sees a scan where there is one (no index on state_hash).
        let unindexed = plan(
            &test_db.url,
            db,
            "SELECT id FROM accounts WHERE state_hash = $1",
        )
        .await;
        assert!(
            unindexed.iter().any(|l| full_scan(db, l)),
            "{db:?}: a scan not recognised in {unindexed:?}"
        );
        let mut scans = Vec::new();
        for sql in &statements {
            let lines = plan(&test_db.url, db, sql).await;
            if lines.iter().any(|l| full_scan(db, l)) {
                scans.push(format!("{sql}\n  {}", lines.join("\n  ")));
            }
        }
        assert!(
            scans.is_empty(),
            "{db:?}: statements of the ingest path that scan a table:\n{}",
            scans.join("\n\n")
        );
    }
);
