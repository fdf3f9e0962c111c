//! The orchestrator: evaluates progression rules against live sessions and
//! runs their actions, each at most once per (rule, session, session
//! state).
//!
//! It follows the event log (new sessions, account changes, consumptions,
//! rule changes) and a timer (time-based conditions), and feeds the
//! [`engine::Engine`], which evaluates only the (session, rule) pairs a
//! trigger can affect. A match is recorded with RuleMatched in one store
//! transaction before anything is sent; with AUTO_PROGRESS off that record
//! is all that happens. Actions that were open when the server stopped are
//! resumed at start ([`actions`] looks at the chain before sending again).

pub mod actions;
pub mod conditions;
pub mod engine;
pub mod rules;

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::{
    lifecycle_event::Payload, EntityKind, LifecycleEvent, ProgressionRule,
};

use self::{
    actions::Executor,
    conditions::describe,
    engine::{CompiledRule, Engine, Match},
};
use crate::{
    chain::{Chain, RetryPolicy},
    config::Config,
    error::ApiResult,
    store::{now_ms, ActionStatus, LiveSession, NewMatch, PendingAction, Store},
    telemetry::Metrics,
};

/// Events read from the log per batch.
const BATCH: u32 = 512;
/// Actions talking to the chain or a webhook at once.
const MAX_CONCURRENT_ACTIONS: usize = 8;

/// The id of the action of `rule_id` for `session_id` in `state_key`: the
/// first 32 hex characters of sha256 over the three, NUL-separated.
pub fn action_id(rule_id: &str, session_id: &str, state_key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"valence-action:")
        .chain_update(rule_id.as_bytes())
        .chain_update([0])
        .chain_update(session_id.as_bytes())
        .chain_update([0])
        .chain_update(state_key.as_bytes())
        .finalize();
    hex::encode(digest)[..32].to_string()
}

/// The session state an action is tied to: its nonce (a live session's
/// on-chain record never changes until it is consumed).
pub fn state_key(nonce: u64) -> String {
    format!("nonce:{nonce}")
}

/// Compiles the enabled stored rules; a stored rule that no longer
/// compiles is skipped with a warning.
pub async fn load_rules(store: &Store) -> ApiResult<Vec<CompiledRule>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_rules(true, after.as_deref(), 1000).await?;
        let full = page.len() == 1000;
        after = page.last().map(|rule| rule.id.clone());
        out.extend(page.into_iter().filter_map(compile_stored));
        if !full {
            return Ok(out);
        }
    }
}

/// Compiles a stored rule; one that no longer compiles (stored before a
/// limit it breaks) is skipped with a warning.
fn compile_stored(rule: ProgressionRule) -> Option<CompiledRule> {
    let id = rule.id.clone();
    CompiledRule::new(rule)
        .map_err(|(field, e)| tracing::warn!(rule = %id, field, error = %e, "stored rule skipped"))
        .ok()
}

/// An engine holding every live session and stored account.
pub async fn load_engine(store: &Store) -> ApiResult<Engine> {
    let mut engine = Engine::new();
    for facts in store.account_facts_all().await? {
        engine.upsert_account(facts);
    }
    for session in store.live_sessions().await? {
        engine.upsert_session(session);
    }
    Ok(engine)
}

/// Live sessions read per step of a dry run.
const DRY_RUN_PAGE: u32 = 500;

/// Dry run: the live sessions `rule` matches now (at most `limit`, by
/// session id) and how many were examined. Reads the store a page at a
/// time and stops at `limit` matches, so it costs one page of memory and
/// builds no engine for the whole store; each page is evaluated off the
/// async workers.
pub async fn dry_run(
    store: &Store,
    rule: Arc<CompiledRule>,
    now_ms: i64,
    limit: usize,
) -> ApiResult<(Vec<LiveSession>, u64)> {
    let mut found = Vec::new();
    let mut examined = 0;
    let mut after = String::new();
    while found.len() < limit {
        let page = store.live_sessions_after(&after, DRY_RUN_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        let full = page.len() == DRY_RUN_PAGE as usize;
        let members: BTreeSet<String> = page.iter().flat_map(|s| s.accounts.clone()).collect();
        let members: Vec<String> = members.into_iter().collect();
        let mut engine = Engine::new();
        for facts in store.account_facts_of(&members).await? {
            engine.upsert_account(facts);
        }
        for session in page {
            engine.upsert_session(session);
        }
        let (rule, want) = (rule.clone(), limit - found.len());
        let (matched, n) = tokio::task::spawn_blocking(move || engine.dry_run(&rule, now_ms, want))
            .await
            .map_err(|e| anyhow::anyhow!("dry run evaluation failed: {e}"))?;
        examined += n;
        found.extend(matched);
        if !full {
            break;
        }
    }
    Ok((found, examined))
}

/// Runs `work` on the engine on a blocking thread: a tick or a new rule
/// can evaluate every live session, which must not hold up the async
/// workers that serve requests.
async fn off_runtime<T, F>(engine: &mut Engine, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&mut Engine) -> T + Send + 'static,
{
    let mut taken = std::mem::take(engine);
    let (back, out) = tokio::task::spawn_blocking(move || {
        let out = work(&mut taken);
        (taken, out)
    })
    .await
    .expect("rule evaluation panicked");
    *engine = back;
    out
}

/// The orchestrator component.
pub struct Orchestrator {
    store: Store,
    metrics: Arc<Metrics>,
    executor: Arc<Executor>,
    auto_progress: bool,
    tick: Duration,
    timeout_ms: i64,
    slots: Arc<Semaphore>,
}

impl Orchestrator {
    /// An orchestrator; `chain` is None when no chain is configured (rules
    /// are still evaluated; chain actions fail with a clear reason).
    pub fn new(
        chain: Option<Chain>,
        store: Store,
        metrics: Arc<Metrics>,
        config: &Config,
    ) -> anyhow::Result<Orchestrator> {
        let l = &config.lifecycle;
        if l.auto_progress && l.webhook_secret.is_empty() {
            tracing::warn!("lifecycle.webhook_secret (WEBHOOK_SECRET) is empty: webhook notifications are sent unsigned");
        }
        let executor = Executor::new(
            chain,
            store.clone(),
            metrics.clone(),
            RetryPolicy::from(&config.retry),
            Duration::from_secs(l.webhook_timeout_secs),
            &l.webhook_secret,
        )?;
        Ok(Orchestrator {
            store,
            metrics,
            executor: Arc::new(executor),
            auto_progress: l.auto_progress,
            tick: Duration::from_secs(l.rule_tick_secs),
            timeout_ms: (l.consumption_timeout_secs as i64).saturating_mul(1000),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_ACTIONS)),
        })
    }

    /// Evaluates and acts until cancelled. `head` changes whenever events
    /// are appended. Safe to run again after it ended (a supervisor
    /// restart): it reloads its state and resumes the actions left open.
    pub async fn run(
        self: Arc<Self>,
        mut head: watch::Receiver<u64>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        // The cursor is read before the snapshot: events after it are
        // applied again on top, which is harmless (every apply is a reload).
        let mut cursor = self.store.head_sequence().await?;
        let mut engine = load_engine(&self.store).await?;
        let rules = load_rules(&self.store).await?;
        let ids: Vec<String> = rules.iter().map(|r| r.rule.id.clone()).collect();
        engine.set_rules(rules);
        for (rule_id, session_id) in self.store.matched_pairs().await? {
            engine.mark_fired(&rule_id, &session_id);
        }
        let actions = cancel.child_token();
        let mut workers = JoinSet::new();
        for action in self.store.open_actions().await? {
            tracing::info!(action = %action.id, rule = %action.rule.id, session = %action.session_id, status = %action.status, "resuming a rule action an earlier run left open");
            self.spawn(&mut workers, action, &actions);
        }
        tracing::info!(
            sessions = engine.session_count(),
            rules = engine.rule_count(),
            auto_progress = self.auto_progress,
            "orchestrator started"
        );
        let started = Instant::now();
        let now = now_ms();
        let matches = off_runtime(&mut engine, move |e| {
            ids.iter()
                .flat_map(|id| e.evaluate_rule(id, now))
                .collect::<Vec<_>>()
        })
        .await;
        self.after_evaluation(&mut engine, matches, started, &mut workers, &actions)
            .await;
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timed = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = head.changed() => false,
                _ = tick.tick() => true,
                Some(done) = workers.join_next(), if !workers.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a rule action task ended abnormally; it resumes at the next start");
                    }
                    continue;
                }
            };
            let started = Instant::now();
            let mut matches = Vec::new();
            match self.follow_log(&mut engine, &mut cursor).await {
                Ok(m) => matches.extend(m),
                Err(e) => tracing::warn!(error = %e, "reading the event log failed; trying again"),
            }
            if timed {
                let now = now_ms();
                matches.extend(off_runtime(&mut engine, move |e| e.tick(now)).await);
            }
            self.after_evaluation(&mut engine, matches, started, &mut workers, &actions)
                .await;
        }
        actions.cancel();
        while workers.join_next().await.is_some() {}
        tracing::info!("orchestrator stopped");
        Ok(())
    }

    /// Records matches, starts their actions and updates metrics.
    async fn after_evaluation(
        &self,
        engine: &mut Engine,
        matches: Vec<Match>,
        started: Instant,
        workers: &mut JoinSet<()>,
        actions: &CancellationToken,
    ) {
        let evaluated = engine.take_evaluated();
        if evaluated > 0 {
            self.metrics.rules_evaluated.inc_by(evaluated);
            self.metrics
                .rule_evaluation_duration
                .observe(started.elapsed().as_secs_f64());
        }
        self.metrics
            .active_sessions
            .set(engine.session_count() as u64);
        for m in matches {
            match self.record(engine, &m).await {
                Ok(Some(action)) => self.spawn(workers, action, actions),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(rule = %m.rule_id, session = %m.session_id, error = %e, "recording a rule match failed; it is evaluated again");
                    engine.unmark_fired(&m.rule_id, &m.session_id);
                }
            }
        }
    }

    /// Records one match; returns the action to run, if any.
    async fn record(&self, engine: &Engine, m: &Match) -> ApiResult<Option<PendingAction>> {
        let (Some(rule), Some(session)) = (engine.rule(&m.rule_id), engine.session(&m.session_id))
        else {
            return Ok(None);
        };
        let state = state_key(session.nonce);
        let id = action_id(&rule.rule.id, &session.id, &state);
        let description = describe(&rule.rule, session);
        let expires_at_ms = now_ms().saturating_add(self.timeout_ms);
        let new = NewMatch {
            id: &id,
            rule: &rule.rule,
            session_id: &session.id,
            namespace: &session.namespace,
            state_key: &state,
            action_kind: rule.kind,
            description: &description,
            execute: self.auto_progress,
            expires_at_ms,
        };
        if !self.store.record_match(&new).await? {
            return Ok(None);
        }
        // valence_progression_rules_matched_total counts the RuleMatched
        // events as the event hub publishes them.
        tracing::info!(rule = %rule.rule.id, session = %session.id, dry_run = !self.auto_progress, %description, "rule matched");
        if !self.auto_progress {
            self.executor_count(rule.kind, "reported");
            return Ok(None);
        }
        Ok(Some(PendingAction {
            id,
            rule: rule.rule.clone(),
            session_id: session.id.clone(),
            state_key: state,
            action_kind: rule.kind.to_string(),
            status: ActionStatus::Pending,
            attempts: 0,
            signature: String::new(),
            blockhash: String::new(),
            created_at_ms: now_ms(),
            expires_at_ms,
        }))
    }

    fn executor_count(&self, kind: &str, outcome: &str) {
        self.metrics
            .rule_actions
            .get_or_create(&crate::telemetry::metrics::ActionLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn spawn(&self, workers: &mut JoinSet<()>, action: PendingAction, cancel: &CancellationToken) {
        let (executor, slots, cancel) = (self.executor.clone(), self.slots.clone(), cancel.clone());
        workers.spawn(async move {
            let _slot = tokio::select! {
                _ = cancel.cancelled() => return,
                permit = slots.acquire_owned() => permit,
            };
            executor.run(action, cancel).await;
        });
    }

    /// Applies the events after `cursor`; returns the matches they caused.
    async fn follow_log(&self, engine: &mut Engine, cursor: &mut u64) -> ApiResult<Vec<Match>> {
        let mut matches = Vec::new();
        loop {
            let batch = self.store.events_after(*cursor, BATCH).await?;
            let full = batch.len() == BATCH as usize;
            for event in batch {
                matches.extend(self.apply(engine, &event).await?);
                *cursor = event.sequence;
            }
            if !full {
                return Ok(matches);
            }
        }
    }

    /// Brings the engine up to date with one event and evaluates what it
    /// can have changed.
    async fn apply(&self, engine: &mut Engine, event: &LifecycleEvent) -> ApiResult<Vec<Match>> {
        let now = now_ms();
        let Some(payload) = &event.payload else {
            return Ok(Vec::new());
        };
        Ok(match payload {
            Payload::SessionCreated(p) => self.reload_session(engine, &p.session_id, now).await?,
            Payload::StateTransition(p) if p.kind == EntityKind::Session as i32 => {
                self.reload_session(engine, &p.entity_id, now).await?
            }
            Payload::StateTransition(p) if p.kind == EntityKind::Account as i32 => {
                self.reload_account(engine, &p.entity_id, now).await?
            }
            Payload::AccountInitialized(p) => {
                self.reload_account(engine, &p.account_id, now).await?
            }
            Payload::SessionConsumed(p) => {
                if let Some(session) = engine.remove_session(&p.session_id) {
                    let lived = (now - session.created_at_ms).max(0) as f64 / 1000.0;
                    self.metrics.session_lifetime.observe(lived);
                }
                Vec::new()
            }
            Payload::RuleCreated(p)
            | Payload::RuleUpdated(p)
            | Payload::RuleEnabled(p)
            | Payload::RuleDisabled(p) => {
                let Some(rule) = p.rule.clone() else {
                    return Ok(Vec::new());
                };
                let id = rule.id.clone();
                let now_rule = match rule.enabled {
                    true => compile_stored(rule),
                    false => None,
                };
                if !engine.change_rule(&id, now_rule) {
                    return Ok(Vec::new());
                }
                off_runtime(engine, move |e| e.evaluate_rule(&id, now)).await
            }
            Payload::RuleDeleted(p) => {
                if let Some(rule) = &p.rule {
                    engine.change_rule(&rule.id, None);
                }
                Vec::new()
            }
            _ => Vec::new(),
        })
    }

    async fn reload_session(
        &self,
        engine: &mut Engine,
        id: &str,
        now: i64,
    ) -> ApiResult<Vec<Match>> {
        let Some(session) = self.store.live_session(id).await? else {
            engine.remove_session(id);
            return Ok(Vec::new());
        };
        for account in &session.accounts {
            if let Some(facts) = self.store.account_facts(account).await? {
                engine.upsert_account(facts);
            }
        }
        engine.upsert_session(session);
        Ok(engine.evaluate_session(id, now))
    }

    async fn reload_account(
        &self,
        engine: &mut Engine,
        id: &str,
        now: i64,
    ) -> ApiResult<Vec<Match>> {
        let Some(facts) = self.store.account_facts(id).await? else {
            return Ok(Vec::new());
        };
        let sessions = engine.upsert_account(facts);
        Ok(engine.evaluate_account_change(&sessions, now))
    }
}
