//! Rule evaluation throughput at 100,000 live sessions × 100 rules: the
//! indexed engine (each trigger evaluates only the pairs it can affect)
//! next to the naive baseline (every trigger rescans every pair).
//!
//! Run: `cargo bench -p valence-lifecycle-server --no-default-features --bench rules`
//! (SESSIONS and RULES override the sizes).

use std::time::Instant;

use valence_lifecycle_api::rule_json::SeedRule;
use valence_lifecycle_server::{
    orchestrator::engine::{CompiledRule, Engine},
    store::{AccountFacts, LiveSession},
};

const CAPS: [&str; 6] = ["transfer", "vote", "stake", "mint", "burn", "admin"];
const NOW: i64 = 1_800_000_000_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 100 rules: a quarter of each condition kind.
fn rules(n: usize) -> Vec<CompiledRule> {
    (0..n)
        .map(|i| {
            let condition = match i % 4 {
                0 => format!(r#"{{"AllAccountsHaveCapability":"{}"}}"#, CAPS[i % CAPS.len()]),
                // Long enough that the bench's sessions do not cross it.
                1 => format!(r#"{{"SessionIdleFor":{}}}"#, 1_000_000 + i),
                2 => format!(r#"{{"StateHashMatches":"{:064x}"}}"#, i + 1),
                _ => format!(
                    r#"{{"CustomPredicate":"session.namespace == 'ns-{i}' && accounts.all(a, 'admin' in a.capabilities)"}}"#
                ),
            };
            compiled(&format!("rule-{i}"), &condition)
        })
        .collect()
}

fn compiled(id: &str, condition: &str) -> CompiledRule {
    let json = format!(
        r#"{{"id":"{id}","name":"r","condition":{condition},"action":{{"NotifyWebhook":"http://127.0.0.1/x"}},"enabled":true}}"#
    );
    let rule = serde_json::from_str::<SeedRule>(&json).unwrap().into();
    CompiledRule::new(rule).map_err(|e| e.1).unwrap()
}

fn account(i: usize, salt: usize) -> AccountFacts {
    AccountFacts {
        id: format!("acct-{i}"),
        owner: "owner".into(),
        capabilities: vec![
            CAPS[(i + salt) % 5].to_string(),
            CAPS[(i + salt + 1) % 5].to_string(),
        ],
        state_hash: format!("{:064x}", i * 7 + salt),
        is_active: true,
    }
}

fn session(i: usize) -> LiveSession {
    LiveSession {
        id: format!("session-{i}"),
        owner: "owner".into(),
        accounts: vec![format!("acct-{}", 2 * i), format!("acct-{}", 2 * i + 1)],
        namespace: format!("ns-{}", i % 1000),
        nonce: 1,
        created_at_ms: NOW - 60_000,
        last_activity_ms: NOW - 60_000,
        metadata: vec![],
    }
}

fn engine(sessions: usize, rule_count: usize) -> Engine {
    let mut e = Engine::new();
    for i in 0..2 * sessions {
        e.upsert_account(account(i, 0));
    }
    for i in 0..sessions {
        e.upsert_session(session(i));
    }
    e.set_rules(rules(rule_count));
    e
}

fn main() {
    // `cargo test --benches` (CI, no `--bench` argument): a short form that
    // only shows the benchmark still runs.
    let full = std::env::args().any(|a| a == "--bench");
    let sessions = env("SESSIONS", if full { 100_000 } else { 2_000 });
    let rule_count = env("RULES", 100);
    let pairs = (sessions * rule_count) as f64;
    println!("rule evaluation: {sessions} live sessions × {rule_count} rules ({pairs:.0} pairs)");

    let rss_before = rss_bytes();
    let built = Instant::now();
    let mut naive = engine(sessions, rule_count);
    println!("  index built in {:.2} s", built.elapsed().as_secs_f64());
    // What the orchestrator holds per live session (with its two accounts):
    // the process's growth, so allocator overhead is included.
    let held = rss_bytes().saturating_sub(rss_before);
    println!(
        "  memory: {:.1} MB for {sessions} sessions and {} accounts = {:.0} bytes per session",
        held as f64 / 1e6,
        2 * sessions,
        held as f64 / sessions as f64
    );
    let started = Instant::now();
    let matched = naive.rescan_all(NOW).len();
    let rescan = started.elapsed().as_secs_f64();
    // The rescan evaluated the CEL rules on every session: each now holds
    // its CEL values too (the most a session costs).
    let held = rss_bytes().saturating_sub(rss_before);
    println!(
        "  memory once CEL rules have read every session: {:.1} MB = {:.0} bytes per session",
        held as f64 / 1e6,
        held as f64 / sessions as f64
    );
    let evaluated = naive.take_evaluated() as f64;
    println!(
        "  naive rescan: one pass evaluated {evaluated:.0} pairs in {rescan:.3} s = {:.0} sessions×rules/s ({matched} matches)",
        evaluated / rescan
    );
    drop(naive);

    // A trigger mix like a busy cluster's: accounts changing, sessions
    // arriving, and time passing.
    let mut indexed = engine(sessions, rule_count);
    // Bring it to the steady state the server runs in (every rule
    // evaluated once when it appeared).
    for i in 0..rule_count {
        let _ = indexed.evaluate_rule(&format!("rule-{i}"), NOW);
    }
    indexed.take_evaluated();
    let triggers = 3_000;
    let started = Instant::now();
    let mut matches = 0;
    for t in 0..triggers {
        let now = NOW + t as i64 * 10;
        match t % 3 {
            0 => {
                let touched = indexed.upsert_account(account((t * 7919) % (2 * sessions), t));
                matches += indexed.evaluate_account_change(&touched, now).len();
            }
            1 => {
                let id = sessions + t;
                indexed.upsert_account(account(2 * id, 1));
                indexed.upsert_account(account(2 * id + 1, 2));
                let mut s = session(id);
                s.created_at_ms = now;
                s.last_activity_ms = now;
                indexed.upsert_session(s);
                matches += indexed
                    .evaluate_session(&format!("session-{id}"), now)
                    .len();
            }
            _ => matches += indexed.tick(now).len(),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let evaluated = indexed.take_evaluated();
    let per_trigger_naive = rescan;
    let effective = triggers as f64 * pairs / elapsed;
    println!(
        "  indexed: {triggers} triggers (account changes, new sessions, ticks) in {elapsed:.3} s, {evaluated} pairs evaluated, {matches} matches"
    );
    println!(
        "  indexed: {:.0} triggers/s, each covering all {pairs:.0} pairs = {effective:.0} sessions×rules/s effective",
        triggers as f64 / elapsed
    );
    println!(
        "  naive: {:.2} triggers/s (one full rescan per trigger)",
        1.0 / per_trigger_naive
    );
    println!(
        "  ratio indexed / naive: {:.0}×",
        (triggers as f64 / elapsed) * per_trigger_naive
    );

    drop(indexed);

    // The one kind a tick evaluates for every live session.
    let mut timed = engine(sessions, 0);
    timed.set_rules(vec![compiled(
        "timed",
        r#"{"CustomPredicate":"idle_seconds > 86400 && session.namespace == 'ns-1'"}"#,
    )]);
    let _ = timed.evaluate_rule("timed", NOW);
    timed.take_evaluated();
    let started = Instant::now();
    let _ = timed.tick(NOW + 1_000);
    let tick = started.elapsed().as_secs_f64();
    println!(
        "  a CEL rule using idle_seconds or now: one tick evaluates all {} sessions in {tick:.3} s",
        timed.take_evaluated()
    );
}

/// Resident set size of this process (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
