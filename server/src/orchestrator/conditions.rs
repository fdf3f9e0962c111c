//! Rule conditions, compiled once per rule and evaluated against a live
//! session and its member accounts.
//!
//! - AllAccountsHaveCapability: every member account is stored and has the
//!   capability (an empty session never matches).
//! - SessionIdleFor: now − max(created_at, last activity) ≥ the duration.
//! - StateHashMatches: the aggregate state hash ([`aggregate_hash`]) equals
//!   the value.
//! - CustomPredicate: a CEL program over the variables of [`cel_session`]
//!   and [`cel_accounts`], plus `idle_seconds` and `now`.

use std::{collections::HashMap, sync::Arc};

use cel::{
    common::value::{CowVal, Val},
    context::VariableResolver,
    objects::Key,
    Context, Env, ExecutionError, Program, Value,
};
use sha2::{Digest as _, Sha256};
use valence_lifecycle_api::v1::{rule_action, rule_condition, ProgressionRule};

use crate::store::{AccountFacts, LiveSession};

/// Variables a CustomPredicate may use.
pub const CEL_VARIABLES: [&str; 4] = ["session", "accounts", "idle_seconds", "now"];

/// A compiled condition.
pub enum Condition {
    /// Every member account has this capability.
    Capability(String),
    /// Idle for at least this many milliseconds.
    IdleFor(i64),
    /// Aggregate state hash equals this.
    HashMatches([u8; 32]),
    /// A CEL predicate.
    Cel(Box<CelPredicate>),
}

/// A compiled CEL expression and what it depends on.
pub struct CelPredicate {
    program: Program,
    /// Reads `idle_seconds` or `now`, so its answer changes with time alone.
    pub time_based: bool,
}

impl std::fmt::Debug for CelPredicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelPredicate")
            .field("time_based", &self.time_based)
            .finish()
    }
}

/// What a condition is evaluated against.
pub struct View<'a> {
    /// The session.
    pub session: &'a LiveSession,
    /// Its member accounts in order (None where not stored).
    pub accounts: &'a [Option<AccountFacts>],
    /// The aggregate state hash, when every member account is stored.
    pub aggregate: Option<[u8; 32]>,
    /// The session as a CEL value.
    pub cel_session: &'a dyn Val,
    /// The accounts as a CEL value.
    pub cel_accounts: &'a dyn Val,
    /// Now, Unix ms.
    pub now_ms: i64,
}

impl View<'_> {
    /// Milliseconds since the session's last activity.
    pub fn idle_ms(&self) -> i64 {
        let since = self
            .session
            .created_at_ms
            .max(self.session.last_activity_ms);
        (self.now_ms - since).max(0)
    }
}

/// Compiles a CEL predicate: it must parse, use only [`CEL_VARIABLES`]
/// and give a bool for a sample session.
pub fn compile_cel(expr: &str) -> Result<CelPredicate, String> {
    let program = Program::compile(expr).map_err(|e| format!("does not compile: {e}"))?;
    let references = program.references();
    let time_based = references.has_variable("idle_seconds") || references.has_variable("now");
    let predicate = CelPredicate {
        program,
        time_based,
    };
    // Run it once on a sample: undeclared names (macro variables such as
    // `a` in `accounts.all(a, ...)` are declared by the macro) and results
    // that are not bools are caught here rather than on every evaluation.
    let sample_session = LiveSession {
        id: "11111111111111111111111111111111".into(),
        owner: "11111111111111111111111111111111".into(),
        accounts: vec!["11111111111111111111111111111111".into()],
        namespace: "sample".into(),
        nonce: 1,
        created_at_ms: 1_700_000_000_000,
        last_activity_ms: 1_700_000_000_000,
        metadata: vec![],
    };
    let sample_accounts = vec![Some(AccountFacts {
        id: sample_session.accounts[0].clone(),
        owner: sample_session.owner.clone(),
        capabilities: vec!["sample".into()],
        state_hash: "00".repeat(32),
        is_active: true,
    })];
    let aggregate = aggregate_hash(&sample_accounts);
    let view = View {
        session: &sample_session,
        cel_session: &*cel_session(&sample_session, aggregate),
        cel_accounts: &*cel_accounts(&sample_accounts),
        accounts: &sample_accounts,
        aggregate,
        now_ms: 1_700_000_100_000,
    };
    let env = Arc::new(Env::stdlib());
    match predicate.execute(&env, &view) {
        Ok(Value::Bool(_)) => Ok(predicate),
        Ok(other) => Err(format!(
            "must evaluate to a bool, gives {:?}",
            other.type_of()
        )),
        Err(ExecutionError::UndeclaredReference(name)) => Err(format!(
            "uses unknown variable {name:?}; known: {}",
            CEL_VARIABLES.join(", ")
        )),
        Err(ExecutionError::FunctionError { function, message }) => {
            Err(format!("function {function}: {message}"))
        }
        // Other errors may depend on the data (a missing map key, an
        // index out of range): the expression is valid, the sample is not.
        Err(_) => Ok(predicate),
    }
}

/// The variables of one evaluation, resolved when the expression reads
/// them: the session and accounts are converted to CEL once per session
/// change, not once per evaluation.
struct Variables<'a> {
    session: &'a dyn Val,
    accounts: &'a dyn Val,
    idle_seconds: i64,
    now: i64,
}

impl VariableResolver for Variables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "session" => Some(CowVal::Borrowed(self.session)),
            "accounts" => Some(CowVal::Borrowed(self.accounts)),
            "idle_seconds" => Some(CowVal::Owned(to_val(Value::Int(self.idle_seconds)))),
            "now" => Some(CowVal::Owned(to_val(Value::Int(self.now)))),
            _ => None,
        }
    }
}

/// A CEL value in the interpreter's form. The values built here (strings,
/// ints, bytes, bools, lists and maps of them) always convert.
pub fn to_val(value: Value) -> Box<dyn Val> {
    Box::<dyn Val>::try_from(value)
        .or_else(|_| Box::<dyn Val>::try_from(Value::Null))
        .expect("null converts")
}

impl CelPredicate {
    fn execute(&self, env: &Arc<Env>, view: &View<'_>) -> Result<Value, ExecutionError> {
        let variables = Variables {
            session: view.cel_session,
            accounts: view.cel_accounts,
            idle_seconds: view.idle_ms() / 1000,
            now: view.now_ms.div_euclid(1000),
        };
        let mut context = Context::with_env(env.clone());
        context.set_variable_resolver(&variables);
        self.program.execute(&context)
    }
}

/// The session as the CEL variable `session`. Times are Unix seconds.
pub fn cel_session(s: &LiveSession, aggregate: Option<[u8; 32]>) -> Box<dyn Val> {
    let mut m: HashMap<Key, Value> = HashMap::new();
    let mut put = |k: &str, v: Value| {
        m.insert(Key::String(Arc::new(k.to_string())), v);
    };
    put("id", s.id.clone().into());
    put("owner", s.owner.clone().into());
    put("namespace", s.namespace.clone().into());
    put("nonce", Value::Int(s.nonce.min(i64::MAX as u64) as i64));
    put("created_at", Value::Int(s.created_at_ms.div_euclid(1000)));
    put(
        "last_activity_at",
        Value::Int(s.last_activity_ms.div_euclid(1000)),
    );
    put("metadata", Value::Bytes(Arc::new(s.metadata.clone())));
    put("account_count", Value::Int(s.accounts.len() as i64));
    put(
        "state_hash",
        aggregate.map(hex::encode).unwrap_or_default().into(),
    );
    to_val(Value::Map(cel::objects::Map { map: Arc::new(m) }))
}

/// The member accounts as the CEL variable `accounts` (accounts the
/// server has not recorded appear with only their id).
pub fn cel_accounts(accounts: &[Option<AccountFacts>]) -> Box<dyn Val> {
    let list: Vec<Value> = accounts
        .iter()
        .map(|a| {
            let mut m: HashMap<Key, Value> = HashMap::new();
            let mut put = |k: &str, v: Value| {
                m.insert(Key::String(Arc::new(k.to_string())), v);
            };
            if let Some(a) = a {
                put("id", a.id.clone().into());
                put("owner", a.owner.clone().into());
                put(
                    "capabilities",
                    Value::List(Arc::new(
                        a.capabilities.iter().map(|c| c.clone().into()).collect(),
                    )),
                );
                put("state_hash", a.state_hash.clone().into());
                put("is_active", Value::Bool(a.is_active));
            }
            Value::Map(cel::objects::Map { map: Arc::new(m) })
        })
        .collect();
    to_val(Value::List(Arc::new(list)))
}

/// sha256 over the member accounts' 32-byte state hashes concatenated in
/// session order; None when an account is not stored (or its hash is not
/// 32 bytes of hex).
pub fn aggregate_hash(accounts: &[Option<AccountFacts>]) -> Option<[u8; 32]> {
    let mut digest = Sha256::new();
    for account in accounts {
        let bytes = hex::decode(&account.as_ref()?.state_hash).ok()?;
        if bytes.len() != 32 {
            return None;
        }
        digest.update(&bytes);
    }
    Some(digest.finalize().into())
}

impl Condition {
    /// Compiles a rule's condition; errors name the field.
    pub fn compile(kind: &rule_condition::Kind) -> Result<Condition, (&'static str, String)> {
        use rule_condition::Kind;
        Ok(match kind {
            Kind::AllAccountsHaveCapability(cap) => Condition::Capability(cap.clone()),
            Kind::SessionIdleForSeconds(secs) => {
                Condition::IdleFor((*secs).min(i64::MAX as u64 / 1000) as i64 * 1000)
            }
            Kind::StateHashMatches(hash) => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(hash.trim(), &mut out).map_err(|_| {
                    (
                        "rule.condition.state_hash_matches",
                        "must be 64 hex characters".to_string(),
                    )
                })?;
                Condition::HashMatches(out)
            }
            Kind::CustomPredicate(expr) => Condition::Cel(Box::new(
                compile_cel(expr).map_err(|e| ("rule.condition.custom_predicate", e))?,
            )),
        })
    }

    /// Whether the answer can change with time alone (no event).
    pub fn time_based(&self) -> bool {
        match self {
            Condition::IdleFor(_) => true,
            Condition::Cel(p) => p.time_based,
            _ => false,
        }
    }

    /// Whether the condition holds for `view`. CEL errors and non-bool
    /// results count as "does not hold".
    pub fn holds(&self, view: &View<'_>, env: &Arc<Env>) -> bool {
        match self {
            Condition::Capability(cap) => {
                !view.accounts.is_empty()
                    && view
                        .accounts
                        .iter()
                        .all(|a| a.as_ref().is_some_and(|a| a.capabilities.contains(cap)))
            }
            Condition::IdleFor(ms) => view.idle_ms() >= *ms,
            Condition::HashMatches(hash) => view.aggregate.as_ref() == Some(hash),
            Condition::Cel(p) => matches!(p.execute(env, view), Ok(Value::Bool(true))),
        }
    }
}

/// The action kind's name as in events: consume_and_create,
/// execute_bundle, notify_webhook.
pub fn action_kind(rule: &ProgressionRule) -> &'static str {
    match rule.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(rule_action::Kind::ConsumeAndCreate(_)) => "consume_and_create",
        Some(rule_action::Kind::ExecuteBundle(_)) => "execute_bundle",
        Some(rule_action::Kind::NotifyWebhook(_)) => "notify_webhook",
        None => "none",
    }
}

/// What the rule's action does for `session`, in words.
pub fn describe(rule: &ProgressionRule, session: &LiveSession) -> String {
    match rule.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(rule_action::Kind::ConsumeAndCreate(c)) => {
            let created: Vec<String> = c
                .templates
                .iter()
                .map(|t| {
                    format!(
                        "{} with accounts {:?}",
                        t.namespace,
                        t.account_indices
                            .iter()
                            .map(|i| session
                                .accounts
                                .get(*i as usize)
                                .cloned()
                                .unwrap_or_else(|| format!("<no account {i}>")))
                            .collect::<Vec<_>>()
                    )
                })
                .collect();
            format!(
                "consume session {} (nonce {}) and create {} session(s): {}",
                session.id,
                session.nonce,
                created.len(),
                created.join("; ")
            )
        }
        Some(rule_action::Kind::ExecuteBundle(b)) => format!(
            "execute a bundle of {} operation(s) on session {}",
            b.operations.len(),
            session.id
        ),
        Some(rule_action::Kind::NotifyWebhook(w)) => {
            format!("POST session {} to {}", session.id, w.url)
        }
        None => "nothing".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(accounts: usize) -> LiveSession {
        LiveSession {
            id: "S".into(),
            owner: "O".into(),
            accounts: (0..accounts).map(|i| format!("A{i}")).collect(),
            namespace: "ns".into(),
            nonce: 3,
            created_at_ms: 1_000_000,
            last_activity_ms: 2_000_000,
            metadata: vec![1, 2],
        }
    }

    fn facts(id: &str, caps: &[&str], hash: u8) -> Option<AccountFacts> {
        Some(AccountFacts {
            id: id.into(),
            owner: "O".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            state_hash: hex::encode([hash; 32]),
            is_active: true,
        })
    }

    fn holds(c: &Condition, s: &LiveSession, accounts: &[Option<AccountFacts>], now: i64) -> bool {
        let aggregate = aggregate_hash(accounts);
        let view = View {
            session: s,
            accounts,
            aggregate,
            cel_session: &*cel_session(s, aggregate),
            cel_accounts: &*cel_accounts(accounts),
            now_ms: now,
        };
        c.holds(&view, &Arc::new(Env::stdlib()))
    }

    #[test]
    fn aggregate_is_sha256_of_member_hashes_in_order() {
        let accounts = [facts("A0", &[], 1), facts("A1", &[], 2)];
        let mut bytes = vec![1u8; 32];
        bytes.extend([2u8; 32]);
        let expected: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(aggregate_hash(&accounts), Some(expected));
        let swapped = [facts("A1", &[], 2), facts("A0", &[], 1)];
        assert_ne!(aggregate_hash(&swapped), Some(expected));
        assert_eq!(aggregate_hash(&[facts("A0", &[], 1), None]), None);
    }

    #[test]
    fn capability_idle_and_hash() {
        let s = session(2);
        let both = [facts("A0", &["x", "y"], 1), facts("A1", &["x"], 2)];
        assert!(holds(&Condition::Capability("x".into()), &s, &both, 0));
        assert!(!holds(&Condition::Capability("y".into()), &s, &both, 0));
        assert!(!holds(
            &Condition::Capability("x".into()),
            &s,
            &[facts("A0", &["x"], 1), None],
            0
        ));
        // Idle counts from the later of creation and last activity.
        assert!(holds(&Condition::IdleFor(5_000), &s, &both, 2_005_000));
        assert!(!holds(&Condition::IdleFor(5_000), &s, &both, 2_004_999));
        let hash = aggregate_hash(&both).unwrap();
        assert!(holds(&Condition::HashMatches(hash), &s, &both, 0));
        assert!(!holds(&Condition::HashMatches([0; 32]), &s, &both, 0));
    }

    #[test]
    fn cel_predicates_see_the_documented_variables() {
        let s = session(2);
        let accounts = [facts("A0", &["x"], 1), facts("A1", &["x", "y"], 2)];
        let cases = [
            ("session.namespace == 'ns' && session.nonce == 3", true),
            ("session.account_count == 2 && size(accounts) == 2", true),
            ("accounts.all(a, 'x' in a.capabilities)", true),
            ("accounts.exists(a, 'y' in a.capabilities)", true),
            ("accounts.all(a, 'y' in a.capabilities)", false),
            ("idle_seconds >= 10 && now == 2010", true),
            ("idle_seconds >= 11", false),
            ("session.metadata == b'\\x01\\x02'", true),
            ("size(session.state_hash) == 64", true),
        ];
        for (expr, expected) in cases {
            let c = Condition::Cel(Box::new(compile_cel(expr).unwrap()));
            assert_eq!(holds(&c, &s, &accounts, 2_010_000), expected, "{expr}");
        }
    }

    #[test]
    fn bad_cel_is_rejected_at_compile_time() {
        assert!(compile_cel("session.nonce >")
            .unwrap_err()
            .contains("compile"));
        assert!(compile_cel("sesion.nonce > 1")
            .unwrap_err()
            .contains("unknown variable"));
        assert!(compile_cel("session.nonce + 1")
            .unwrap_err()
            .contains("bool"));
        // Inputs that made older CEL parsers panic (cel-rust#191, #194).
        for bad in [".", "/", "1 +", "(", ")", ""] {
            assert!(compile_cel(bad).is_err(), "{bad:?}");
        }
        assert!(compile_cel("idle_seconds > 5").unwrap().time_based);
        assert!(!compile_cel("session.nonce > 5").unwrap().time_based);
    }
}
