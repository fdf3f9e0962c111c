//! The evaluation engine: live sessions and their accounts in memory, rules
//! indexed by what can change their answer, so a trigger evaluates only the
//! (session, rule) pairs it can affect.
//!
//! - A new or changed session: every rule, for that session.
//! - A changed account: the rules that read accounts (capability, state
//!   hash, CEL), for the sessions it belongs to.
//! - Time passing (a tick): SessionIdleFor rules read a range of an index
//!   ordered by last activity, from where the previous tick stopped, so
//!   each session is looked at about once per rule as it crosses the
//!   threshold; CEL rules that read `idle_seconds` or `now` are evaluated
//!   for every live session (the only rules whose cost grows with time).
//! - A new or changed rule: that rule, for every live session.
//!
//! A (rule, session) pair that matched is not evaluated again: an action
//! runs once per (rule, session, session state), and a session's state
//! (its nonce) never changes while it is live.
//!
//! The engine is synchronous and does no I/O; the orchestrator feeds it and
//! records what it returns.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, OnceLock},
};

use cel::Env;
use valence_lifecycle_api::v1::{rule_condition, ProgressionRule};

use super::conditions::{action_kind, aggregate_hash, CelVars, Condition, View};
use crate::store::{AccountFacts, LiveSession};

/// A rule ready to evaluate.
pub struct CompiledRule {
    /// The rule.
    pub rule: ProgressionRule,
    /// Its condition.
    pub condition: Condition,
    /// Its action kind.
    pub kind: &'static str,
}

impl CompiledRule {
    /// Compiles `rule`; errors name the field.
    pub fn new(rule: ProgressionRule) -> Result<CompiledRule, (&'static str, String)> {
        let kind = rule
            .condition
            .as_ref()
            .and_then(|c| c.kind.as_ref())
            .ok_or(("rule.condition", "must be set".to_string()))?;
        let condition = Condition::compile(kind)?;
        Ok(CompiledRule {
            kind: action_kind(&rule),
            rule,
            condition,
        })
    }

    fn reads_accounts(&self) -> bool {
        !matches!(self.condition, Condition::IdleFor(_))
    }

    fn version(&self) -> (i64, i32) {
        self.rule
            .updated_at
            .as_ref()
            .map(|t| (t.seconds, t.nanos))
            .unwrap_or_default()
    }
}

/// A rule that matched a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Match {
    /// Rule id.
    pub rule_id: String,
    /// Session id.
    pub session_id: String,
}

/// A live session with everything conditions read, precomputed.
struct Entry {
    session: LiveSession,
    accounts: Vec<Option<AccountFacts>>,
    aggregate: Option<[u8; 32]>,
    cel: OnceLock<CelVars>,
}

impl Entry {
    fn since(&self) -> i64 {
        self.session
            .created_at_ms
            .max(self.session.last_activity_ms)
    }

    fn view(&self, now_ms: i64) -> View<'_> {
        View {
            session: &self.session,
            accounts: &self.accounts,
            aggregate: self.aggregate,
            cel: &self.cel,
            now_ms,
        }
    }
}

/// Live sessions, accounts and rules.
#[derive(Default)]
pub struct Engine {
    rules: Vec<CompiledRule>,
    sessions: HashMap<String, Entry>,
    accounts: HashMap<String, AccountFacts>,
    /// account id → live sessions it belongs to.
    members: HashMap<String, HashSet<String>>,
    /// (since, session id): sessions by last activity.
    by_activity: BTreeSet<(i64, String)>,
    /// Idle rule id → the activity cutoff its last tick covered.
    idle_marks: HashMap<String, i64>,
    /// session id → rules that matched it.
    fired: HashMap<String, HashSet<String>>,
    evaluated: u64,
}

impl Engine {
    /// An empty engine.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// A rule by id.
    pub fn rule(&self, id: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.rule.id == id)
    }

    /// A live session by id.
    pub fn session(&self, id: &str) -> Option<&LiveSession> {
        self.sessions.get(id).map(|e| &e.session)
    }

    /// Condition evaluations since the last call.
    pub fn take_evaluated(&mut self) -> u64 {
        std::mem::take(&mut self.evaluated)
    }

    /// Replaces the rule set (enabled rules). Returns the ids of rules that
    /// are new or changed: the caller evaluates those for every session.
    pub fn set_rules(&mut self, mut rules: Vec<CompiledRule>) -> Vec<String> {
        // Kept in id order (Rust's, whatever the database's collation) so
        // that one rule's change finds its place by binary search.
        rules.sort_by(|a, b| a.rule.id.cmp(&b.rule.id));
        let old: HashMap<String, (i64, i32)> = self
            .rules
            .iter()
            .map(|r| (r.rule.id.clone(), r.version()))
            .collect();
        let changed: Vec<String> = rules
            .iter()
            .filter(|r| old.get(&r.rule.id) != Some(&r.version()))
            .map(|r| r.rule.id.clone())
            .collect();
        for id in &changed {
            self.idle_marks.remove(id);
        }
        let keep: HashSet<&str> = rules.iter().map(|r| r.rule.id.as_str()).collect();
        self.idle_marks.retain(|id, _| keep.contains(id.as_str()));
        self.rules = rules;
        changed
    }

    /// Applies one rule's change as the log tells it (the rule as it is
    /// now; None when it was deleted or disabled): cheaper than
    /// [`Self::set_rules`] with every rule reloaded, and the same result.
    /// Returns whether the engine's rule set changed.
    pub fn change_rule(&mut self, id: &str, now: Option<CompiledRule>) -> bool {
        let at = self.rules.binary_search_by(|r| r.rule.id.as_str().cmp(id));
        let changed = match (at, now) {
            (Ok(i), Some(rule)) if self.rules[i].version() == rule.version() => false,
            (Ok(i), Some(rule)) => {
                self.rules[i] = rule;
                true
            }
            (Err(i), Some(rule)) => {
                self.rules.insert(i, rule);
                true
            }
            (Ok(i), None) => {
                self.rules.remove(i);
                true
            }
            (Err(_), None) => false,
        };
        if changed {
            self.idle_marks.remove(id);
        }
        changed
    }

    /// Notes that `rule_id` matched `session_id` (also at start-up, from
    /// the stored matches), so the pair is not evaluated again.
    pub fn mark_fired(&mut self, rule_id: &str, session_id: &str) {
        self.fired
            .entry(session_id.to_string())
            .or_default()
            .insert(rule_id.to_string());
    }

    /// Forgets a match that could not be recorded, so it is tried again.
    pub fn unmark_fired(&mut self, rule_id: &str, session_id: &str) {
        if let Some(rules) = self.fired.get_mut(session_id) {
            rules.remove(rule_id);
        }
    }

    fn has_fired(&self, rule_id: &str, session_id: &str) -> bool {
        self.fired
            .get(session_id)
            .is_some_and(|r| r.contains(rule_id))
    }

    /// Adds or replaces an account's facts; returns the live sessions it
    /// belongs to (their account-reading rules need evaluating).
    pub fn upsert_account(&mut self, facts: AccountFacts) -> Vec<String> {
        let id = facts.id.clone();
        self.accounts.insert(id.clone(), facts);
        let sessions: Vec<String> = self
            .members
            .get(&id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for session in &sessions {
            self.refresh_accounts(session);
        }
        sessions
    }

    /// Adds or replaces a live session (what matched it stays matched).
    pub fn upsert_session(&mut self, session: LiveSession) {
        self.detach(&session.id.clone());
        for account in &session.accounts {
            self.members
                .entry(account.clone())
                .or_default()
                .insert(session.id.clone());
        }
        let accounts = self.facts_of(&session);
        let aggregate = aggregate_hash(&accounts);
        let entry = Entry {
            cel: OnceLock::new(),
            session,
            accounts,
            aggregate,
        };
        self.by_activity
            .insert((entry.since(), entry.session.id.clone()));
        self.sessions.insert(entry.session.id.clone(), entry);
    }

    /// Forgets a session (consumed); returns it if it was live.
    pub fn remove_session(&mut self, id: &str) -> Option<LiveSession> {
        self.fired.remove(id);
        self.detach(id)
    }

    fn detach(&mut self, id: &str) -> Option<LiveSession> {
        let entry = self.sessions.remove(id)?;
        self.by_activity.remove(&(entry.since(), id.to_string()));
        for account in &entry.session.accounts {
            if let Some(set) = self.members.get_mut(account) {
                set.remove(id);
                if set.is_empty() {
                    self.members.remove(account);
                }
            }
        }
        Some(entry.session)
    }

    fn facts_of(&self, session: &LiveSession) -> Vec<Option<AccountFacts>> {
        session
            .accounts
            .iter()
            .map(|a| self.accounts.get(a).cloned())
            .collect()
    }

    fn refresh_accounts(&mut self, session_id: &str) {
        let Some(entry) = self.sessions.get(session_id) else {
            return;
        };
        let accounts = self.facts_of(&entry.session);
        let aggregate = aggregate_hash(&accounts);
        let entry = self.sessions.get_mut(session_id).expect("checked above");
        entry.cel = OnceLock::new();
        entry.accounts = accounts;
        entry.aggregate = aggregate;
    }

    /// Evaluates every rule for one session.
    pub fn evaluate_session(&mut self, session_id: &str, now_ms: i64) -> Vec<Match> {
        let indices: Vec<usize> = (0..self.rules.len()).collect();
        self.evaluate_pairs(&indices, &[session_id.to_string()], now_ms)
    }

    /// Evaluates the rules that read accounts, for `sessions`.
    pub fn evaluate_account_change(&mut self, sessions: &[String], now_ms: i64) -> Vec<Match> {
        let indices: Vec<usize> = (0..self.rules.len())
            .filter(|i| self.rules[*i].reads_accounts())
            .collect();
        self.evaluate_pairs(&indices, sessions, now_ms)
    }

    /// Evaluates one rule for every live session.
    pub fn evaluate_rule(&mut self, rule_id: &str, now_ms: i64) -> Vec<Match> {
        let Some(index) = self.rules.iter().position(|r| r.rule.id == rule_id) else {
            return Vec::new();
        };
        let sessions: Vec<String> = self.sessions.keys().cloned().collect();
        let matches = self.evaluate_pairs(&[index], &sessions, now_ms);
        if matches!(self.rules[index].condition, Condition::IdleFor(_)) {
            // Everything up to now was looked at; ticks go on from here.
            if let Condition::IdleFor(ms) = self.rules[index].condition {
                self.idle_marks.insert(rule_id.to_string(), now_ms - ms);
            }
        }
        matches
    }

    /// Time has passed: evaluates what time alone can change.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Match> {
        let env = Arc::new(Env::stdlib());
        let mut out = Vec::new();
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            match &rule.condition {
                Condition::IdleFor(ms) => {
                    let cutoff = now_ms - ms;
                    let from = self
                        .idle_marks
                        .get(&rule.rule.id)
                        .copied()
                        .unwrap_or(i64::MIN);
                    if cutoff <= from {
                        continue;
                    }
                    let due: Vec<String> = self
                        .by_activity
                        .range((from, String::new())..(cutoff.saturating_add(1), String::new()))
                        .filter(|(since, _)| *since > from || from == i64::MIN)
                        .map(|(_, id)| id.clone())
                        .collect();
                    let rule_id = rule.rule.id.clone();
                    self.idle_marks.insert(rule_id, cutoff);
                    out.extend(self.evaluate_with(&env, &[index], &due, now_ms));
                }
                Condition::Cel(p) if p.time_based => {
                    let sessions: Vec<String> = self.sessions.keys().cloned().collect();
                    out.extend(self.evaluate_with(&env, &[index], &sessions, now_ms));
                }
                _ => {}
            }
        }
        out
    }

    /// The baseline this engine avoids: every rule for every session.
    pub fn rescan_all(&mut self, now_ms: i64) -> Vec<Match> {
        let indices: Vec<usize> = (0..self.rules.len()).collect();
        let sessions: Vec<String> = self.sessions.keys().cloned().collect();
        self.evaluate_pairs(&indices, &sessions, now_ms)
    }

    /// Dry run: the sessions `rule` matches now (matched before or not),
    /// at most `limit` (in id order), and how many sessions were examined
    /// (all of them unless the limit was reached first).
    pub fn dry_run(
        &mut self,
        rule: &CompiledRule,
        now_ms: i64,
        limit: usize,
    ) -> (Vec<LiveSession>, u64) {
        let env = Arc::new(Env::stdlib());
        let mut ids: Vec<&String> = self.sessions.keys().collect();
        ids.sort();
        let mut out = Vec::new();
        let mut examined = 0u64;
        for id in &ids {
            let entry = &self.sessions[*id];
            examined += 1;
            if rule.condition.holds(&entry.view(now_ms), &env) {
                out.push(entry.session.clone());
                if out.len() >= limit {
                    break;
                }
            }
        }
        self.evaluated += examined;
        (out, examined)
    }

    fn evaluate_pairs(&mut self, rules: &[usize], sessions: &[String], now_ms: i64) -> Vec<Match> {
        let env = Arc::new(Env::stdlib());
        self.evaluate_with(&env, rules, sessions, now_ms)
    }

    fn evaluate_with(
        &mut self,
        env: &Arc<Env>,
        rules: &[usize],
        sessions: &[String],
        now_ms: i64,
    ) -> Vec<Match> {
        let mut out = Vec::new();
        for session_id in sessions {
            let Some(entry) = self.sessions.get(session_id) else {
                continue;
            };
            let view = entry.view(now_ms);
            for &index in rules {
                let rule = &self.rules[index];
                if self.has_fired(&rule.rule.id, session_id) {
                    continue;
                }
                self.evaluated += 1;
                if rule.condition.holds(&view, env) {
                    out.push(Match {
                        rule_id: rule.rule.id.clone(),
                        session_id: session_id.clone(),
                    });
                }
            }
        }
        for m in &out {
            self.mark_fired(&m.rule_id, &m.session_id);
        }
        out
    }
}

/// Whether a stored rule's condition is one the engine can run (the
/// validation on write guarantees it; rows from older versions might not).
pub fn has_condition(rule: &ProgressionRule) -> bool {
    matches!(
        rule.condition.as_ref().and_then(|c| c.kind.as_ref()),
        Some(
            rule_condition::Kind::AllAccountsHaveCapability(_)
                | rule_condition::Kind::SessionIdleForSeconds(_)
                | rule_condition::Kind::StateHashMatches(_)
                | rule_condition::Kind::CustomPredicate(_)
        )
    )
}

#[cfg(test)]
mod tests {
    use valence_lifecycle_api::rule_json::SeedRule;

    use super::*;

    fn rule(id: &str, condition: &str) -> CompiledRule {
        let json = format!(
            r#"{{"id":"{id}","name":"n","condition":{condition},"action":{{"NotifyWebhook":"http://x"}},"enabled":true}}"#
        );
        CompiledRule::new(serde_json::from_str::<SeedRule>(&json).unwrap().into()).unwrap()
    }

    fn session(id: &str, accounts: &[&str], since: i64) -> LiveSession {
        LiveSession {
            id: id.into(),
            owner: "o".into(),
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            namespace: "ns".into(),
            nonce: 1,
            created_at_ms: since,
            last_activity_ms: since,
            metadata: vec![],
        }
    }

    fn facts(id: &str, caps: &[&str]) -> AccountFacts {
        AccountFacts {
            id: id.into(),
            owner: "o".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            state_hash: "11".repeat(32),
            is_active: true,
        }
    }

    fn ids(matches: &[Match]) -> Vec<(String, String)> {
        let mut v: Vec<_> = matches
            .iter()
            .map(|m| (m.rule_id.clone(), m.session_id.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn account_changes_reach_only_their_sessions_and_match_once() {
        let mut e = Engine::new();
        e.set_rules(vec![rule("cap", r#"{"AllAccountsHaveCapability":"x"}"#)]);
        e.upsert_session(session("s1", &["a1"], 0));
        e.upsert_session(session("s2", &["a2"], 0));
        assert!(e.evaluate_session("s1", 0).is_empty());
        let touched = e.upsert_account(facts("a1", &["x"]));
        assert_eq!(touched, vec!["s1".to_string()]);
        e.take_evaluated();
        let m = e.evaluate_account_change(&touched, 0);
        assert_eq!(ids(&m), vec![("cap".into(), "s1".into())]);
        assert_eq!(e.take_evaluated(), 1, "only s1 was evaluated");
        // Matched once: not evaluated again.
        let touched = e.upsert_account(facts("a1", &["x", "y"]));
        assert!(e.evaluate_account_change(&touched, 0).is_empty());
        assert_eq!(e.take_evaluated(), 0);
    }

    #[test]
    fn idle_ticks_look_only_at_sessions_crossing_the_threshold() {
        let mut e = Engine::new();
        e.set_rules(vec![rule("idle", r#"{"SessionIdleFor":10}"#)]);
        for i in 0..100 {
            e.upsert_session(session(&format!("s{i:03}"), &[], i * 1000));
        }
        // At t=20s sessions with since <= 10s are due: s000..=s010.
        let m = e.tick(20_000);
        assert_eq!(m.len(), 11);
        e.take_evaluated();
        // One second later exactly one more crosses.
        let m = e.tick(21_000);
        assert_eq!(ids(&m), vec![("idle".into(), "s011".into())]);
        assert_eq!(e.take_evaluated(), 1);
        assert!(e.tick(21_000).is_empty());
        // Consumed sessions are forgotten.
        assert!(e.remove_session("s050").is_some());
        assert_eq!(e.tick(200_000).len(), 100 - 12 - 1);
    }

    #[test]
    fn new_rules_scan_everything_once_and_rescan_is_the_baseline() {
        let mut e = Engine::new();
        e.set_rules(vec![rule(
            "ns",
            r#"{"CustomPredicate":"session.namespace == 'ns'"}"#,
        )]);
        e.upsert_session(session("s1", &[], 0));
        e.upsert_session(session("s2", &[], 0));
        assert_eq!(e.evaluate_rule("ns", 0).len(), 2);
        let changed = e.set_rules(vec![
            rule("ns", r#"{"CustomPredicate":"session.namespace == 'ns'"}"#),
            rule(
                "hash",
                r#"{"StateHashMatches":"00"}"#.replace("00", &"0".repeat(64)).as_str(),
            ),
        ]);
        assert_eq!(changed, vec!["hash".to_string()]);
        e.take_evaluated();
        assert!(e.rescan_all(0).is_empty());
        assert_eq!(e.take_evaluated(), 2, "matched pairs are skipped");
    }

    #[test]
    fn one_rules_change_is_applied_in_place_and_matches_a_full_reload() {
        let mut e = Engine::new();
        e.set_rules(vec![rule("b", r#"{"SessionIdleFor":1}"#)]);
        assert!(e.change_rule("a", Some(rule("a", r#"{"SessionIdleFor":2}"#))));
        assert!(e.change_rule("c", Some(rule("c", r#"{"SessionIdleFor":3}"#))));
        // The same version again changes nothing; a removal does.
        assert!(!e.change_rule("a", Some(rule("a", r#"{"SessionIdleFor":2}"#))));
        assert!(e.change_rule("b", None));
        assert!(!e.change_rule("b", None));
        let held: Vec<&str> = e.rules.iter().map(|r| r.rule.id.as_str()).collect();
        assert_eq!(held, ["a", "c"], "kept in id order");
    }
}
