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

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, OnceLock},
};

use cel::{
    common::{
        ast::{EntryExpr, Expr},
        value::{CowVal, Val},
    },
    context::VariableResolver,
    objects::Key,
    parser::{Expression, Parser},
    Context, Env, ExecutionError, Value,
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

/// Longest CustomPredicate, in bytes. Real predicates are a few dozen to a
/// few hundred bytes; 4 KiB still holds a list of some 80 base58 keys. It
/// bounds the parser's work and, with the nesting limit, the stack the
/// parser needs (measured below [`COMPILE_STACK`]).
pub const MAX_CEL_BYTES: usize = 4096;

/// Deepest nesting of brackets (`(`, `[`, `{`) and conditionals (`?`) in a
/// CustomPredicate. The parser recurses through about ten grammar rules
/// per level (some 8 KiB of stack in a release build, 170 KiB in a debug
/// one); 32 levels is far more than a readable predicate uses.
pub const MAX_CEL_NESTING: usize = 32;

/// Deepest expression tree a CustomPredicate may compile to. Chains such
/// as `1 + 1 + …` or `a.b.c…` nest the tree without nesting brackets, and
/// evaluation recurses once per level of the tree: about 2.3 KiB of stack
/// per level in a release build and 40 KiB in a debug one (cel 0.15), so
/// 24 levels need at most 60 KiB / 1 MiB. That is what lets evaluation run
/// on whatever thread holds the engine (tokio workers and blocking threads
/// have 2 MiB) with no stack switch on the hot path. Real predicates are
/// well under 24: `accounts.all(a, 'x' in a.capabilities) && idle_seconds
/// > 600` is 6 deep.
pub const MAX_CEL_DEPTH: usize = 24;

/// Most nodes a CustomPredicate may compile to (macros count what they
/// expand to). An evaluation visits each node about once outside of
/// comprehensions, and every live session is evaluated on each tick of a
/// time-based rule, so this bounds the cost of one evaluation.
pub const MAX_CEL_NODES: usize = 1024;

/// Stack of the thread that parses a CustomPredicate and runs it on the
/// sample. Within [`MAX_CEL_BYTES`] and [`MAX_CEL_NESTING`] the worst
/// inputs measured (32 nested lists or calls; a 2,000-link chain, which the
/// parser turns into a 2,000-deep tree before [`MAX_CEL_DEPTH`] refuses
/// it) need 1 MiB of stack in a release build and 5.5 MiB in a debug one;
/// 32 MiB leaves a margin of 6 (debug) to 30 (release). It is reserved
/// address space: only the pages a parse touches are used.
const COMPILE_STACK: usize = 32 << 20;

/// A compiled CEL expression and what it depends on.
pub struct CelPredicate {
    /// The expression tree, at most [`MAX_CEL_DEPTH`] deep.
    expression: Expression,
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
    /// The CEL variables, built the first time a CEL rule reads them.
    pub cel: &'a OnceLock<CelVars>,
    /// Now, Unix ms.
    pub now_ms: i64,
}

/// The session and its accounts as CEL values. Built only for the
/// sessions a CEL rule is evaluated on, and kept until the session or its
/// accounts change: most deployments' rules are not CEL, and these maps
/// are most of what a live session would otherwise cost in memory.
pub struct CelVars {
    session: Box<dyn Val>,
    accounts: Box<dyn Val>,
}

impl View<'_> {
    fn cel_vars(&self) -> &CelVars {
        self.cel.get_or_init(|| CelVars {
            session: cel_session(self.session, self.aggregate),
            accounts: cel_accounts(self.accounts),
        })
    }

    /// Milliseconds since the session's last activity.
    pub fn idle_ms(&self) -> i64 {
        let since = self
            .session
            .created_at_ms
            .max(self.session.last_activity_ms);
        (self.now_ms - since).max(0)
    }
}

/// Compiles a CEL predicate: it must stay within the limits above, parse,
/// use only [`CEL_VARIABLES`] and give a bool for a sample session.
///
/// Length and nesting are checked here, before anything is parsed; the
/// parse, the tree's depth and size and the sample run happen on a thread
/// of its own with a [`COMPILE_STACK`] stack, since a tree that is too deep
/// exists (and is dropped) before it can be measured. A panic in the CEL
/// parser ends that thread only and refuses the expression.
pub fn compile_cel(expr: &str) -> Result<CelPredicate, String> {
    check_source(expr)?;
    std::thread::scope(|scope| {
        let compiler = std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn_scoped(scope, || compile_parsed(expr))
            .map_err(|e| format!("cannot be compiled now (no compiler thread: {e})"))?;
        compiler.join().unwrap_or_else(|_| {
            tracing::warn!("the cel parser panicked on a predicate");
            Err("does not compile: the CEL parser failed on it".to_string())
        })
    })
}

/// The limits that can be checked on the source text: its length, and how
/// deep brackets and conditionals nest. Text in string literals and
/// comments is skipped. The scan only has to be right for the message: if
/// it misjudged a literal, the parser's own recursion limit (set to the
/// same nesting) still stops the parse.
fn check_source(expr: &str) -> Result<(), String> {
    if expr.len() > MAX_CEL_BYTES {
        return Err(format!(
            "is {} bytes long, over the limit of {MAX_CEL_BYTES} bytes",
            expr.len()
        ));
    }
    let bytes = expr.as_bytes();
    // Per open bracket: the `?` not yet matched by their `:`, and the
    // conditionals' `:` branches open (each nests the rest of the
    // expression until the next `,` or closing bracket).
    let mut levels: Vec<(usize, usize)> = vec![(0, 0)];
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let level = levels.len() - 1;
        match bytes[i] {
            b'(' | b'[' | b'{' => {
                depth += 1;
                levels.push((0, 0));
            }
            b')' | b']' | b'}' if level > 0 => {
                depth -= 1 + levels[level].1;
                levels.pop();
            }
            b',' => {
                depth -= levels[level].1;
                levels[level] = (0, 0);
            }
            b'?' => levels[level].0 += 1,
            b':' if levels[level].0 > 0 => {
                levels[level].0 -= 1;
                levels[level].1 += 1;
                depth += 1;
            }
            b'\'' | b'"' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i += bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .unwrap_or(bytes.len() - i);
                continue;
            }
            _ => {}
        }
        if depth > MAX_CEL_NESTING {
            return Err(format!(
                "nests brackets or conditionals more than {MAX_CEL_NESTING} deep (the limit)"
            ));
        }
        i += 1;
    }
    Ok(())
}

/// The index just after the string literal whose opening quote is at
/// `start` (the end of `bytes` when it is not closed): single or triple
/// quotes, backslash escapes unless the literal is raw (`r'…'`, `br'…'`).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let raw = start
        .checked_sub(1)
        .and_then(|i| bytes.get(i))
        .is_some_and(|b| matches!(b, b'r' | b'R'))
        || (start >= 2
            && matches!(bytes[start - 1], b'b' | b'B')
            && matches!(bytes[start - 2], b'r' | b'R'));
    let triple = bytes.get(start..start + 3) == Some(&[quote; 3][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        if bytes[i] == b'\\' && !raw {
            i += 2;
            continue;
        }
        if bytes[i] == quote && (!triple || bytes.get(i..i + 3) == Some(&[quote; 3][..])) {
            return i + if triple { 3 } else { 1 };
        }
        i += 1;
    }
    bytes.len()
}

/// How deep an expression tree is and how many nodes it has, counted
/// without recursion (the tree may be deeper than the limit).
fn tree_shape(expression: &Expression) -> (usize, usize) {
    let (mut depth, mut nodes) = (0, 0);
    let mut pending = vec![(expression, 1usize)];
    while let Some((node, level)) = pending.pop() {
        depth = depth.max(level);
        nodes += 1;
        let below = level + 1;
        match &node.expr {
            Expr::Call(call) => {
                pending.extend(call.target.iter().map(|t| (&**t, below)));
                pending.extend(call.args.iter().map(|a| (a, below)));
            }
            Expr::Comprehension(c) => pending.extend(
                [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]
                .map(|e| (e, below)),
            ),
            Expr::List(list) => pending.extend(list.elements.iter().map(|e| (e, below))),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        pending.extend([(&e.key, below), (&e.value, below)]);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        pending.push((&f.value, below));
                    }
                }
            }
            Expr::Select(select) => pending.push((&select.operand, below)),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    (depth, nodes)
}

/// Parses `expr` (within the source limits), checks the tree's limits and
/// runs it on a sample; on the compiler thread.
fn compile_parsed(expr: &str) -> Result<CelPredicate, String> {
    // The standard macros, as `Program::compile` uses; the recursion limit
    // matches the nesting limit (the parser counts the outermost
    // expression as one level).
    let expression = Parser::new()
        .max_recursion_depth(MAX_CEL_NESTING as u16)
        .parse(expr)
        .map_err(|e| format!("does not compile: {e}"))?;
    let (depth, nodes) = tree_shape(&expression);
    if depth > MAX_CEL_DEPTH {
        return Err(format!(
            "compiles to an expression {depth} levels deep, over the limit of {MAX_CEL_DEPTH} \
             (long chains such as `a + b + …` or `a.b.…` count one level per link)"
        ));
    }
    if nodes > MAX_CEL_NODES {
        return Err(format!(
            "compiles to {nodes} nodes, over the limit of {MAX_CEL_NODES}"
        ));
    }
    let references = expression.references();
    let time_based = references.has_variable("idle_seconds") || references.has_variable("now");
    let predicate = CelPredicate {
        expression,
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
        cel: &OnceLock::new(),
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
        let vars = view.cel_vars();
        let variables = Variables {
            session: &*vars.session,
            accounts: &*vars.accounts,
            idle_seconds: view.idle_ms() / 1000,
            now: view.now_ms.div_euclid(1000),
        };
        let mut context = Context::with_env(env.clone());
        context.set_variable_resolver(&variables);
        // On the caller's stack: the tree is at most MAX_CEL_DEPTH deep.
        Value::resolve(&self.expression, &context)
    }
}

/// The session as the CEL variable `session`. Times are Unix seconds.
pub fn cel_session(s: &LiveSession, aggregate: Option<[u8; 32]>) -> Box<dyn Val> {
    let mut m: HashMap<Key, Value> = HashMap::with_capacity(9);
    let mut put = |k: &'static str, v: Value| {
        m.insert(key(k), v);
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

/// The names of the CEL maps' fields, allocated once and shared by every
/// session's maps (a key is an `Arc<String>`).
static KEYS: LazyLock<Vec<(&'static str, Arc<String>)>> = LazyLock::new(|| {
    [
        "id",
        "owner",
        "namespace",
        "nonce",
        "created_at",
        "last_activity_at",
        "metadata",
        "account_count",
        "state_hash",
        "capabilities",
        "is_active",
    ]
    .into_iter()
    .map(|k| (k, Arc::new(k.to_string())))
    .collect()
});

fn key(name: &'static str) -> Key {
    let shared = KEYS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, a)| a.clone());
    Key::String(shared.unwrap_or_else(|| Arc::new(name.to_string())))
}

/// The member accounts as the CEL variable `accounts` (accounts the
/// server has not recorded appear with only their id).
pub fn cel_accounts(accounts: &[Option<AccountFacts>]) -> Box<dyn Val> {
    let list: Vec<Value> = accounts
        .iter()
        .map(|a| {
            let mut m: HashMap<Key, Value> = HashMap::with_capacity(5);
            let mut put = |k: &'static str, v: Value| {
                m.insert(key(k), v);
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
            cel: &OnceLock::new(),
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

    fn nest(open: &str, inner: &str, close: &str, times: usize) -> String {
        format!("{}{inner}{}", open.repeat(times), close.repeat(times))
    }

    /// The tree depth of `expr` (parsed, like compile_cel does, on a big stack).
    fn depth_of(expr: &str) -> usize {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(COMPILE_STACK)
                .spawn_scoped(scope, || {
                    let parsed = Parser::new().max_recursion_depth(200).parse(expr).unwrap();
                    tree_shape(&parsed).0
                })
                .unwrap()
                .join()
                .unwrap()
        })
    }

    #[test]
    fn over_limit_predicates_are_refused_naming_the_limit() {
        let sum = format!("{} > 0", vec!["1"; 1500].join(" + "));
        let chain = format!("session{} == 1", ".a".repeat(10_000));
        let cases = [
            // The shapes of issue 13 (they overflowed a worker's stack).
            (sum, "4096 bytes"),
            (chain, "4096 bytes"),
            // Within the length limit, the tree is too deep.
            (format!("{} > 0", vec!["1"; 2000].join("+")), "limit of 24"),
            (format!("session{} == 1", ".a".repeat(2000)), "limit of 24"),
            (format!("[0]{} == 0", "[0]".repeat(30)), "limit of 24"),
            // Brackets or conditionals nested too deep.
            (format!("size({}) > 0", nest("[", "1", "]", 32)), "32 deep"),
            (format!("{}true", "true ? true : ".repeat(33)), "32 deep"),
            (format!("{} > 0", nest("(", "1", ")", 33)), "32 deep"),
            // Too many nodes.
            (
                format!("size([{}]) > 0", vec!["1"; 1100].join(",")),
                "limit of 1024",
            ),
        ];
        for (expr, limit) in cases {
            let err = compile_cel(&expr).unwrap_err();
            assert!(err.contains(limit), "{err:?} should name {limit:?}");
        }
        // Brackets in string literals and comments do not nest; a list of
        // conditionals does not nest either.
        let quoted = format!(
            "session.namespace != '{}' // {}",
            "(".repeat(40),
            "[".repeat(40)
        );
        assert!(compile_cel(&quoted).is_ok());
        let raw = format!(
            "session.namespace != r'\\' && session.namespace != \"{}\"",
            "(".repeat(40)
        );
        assert!(compile_cel(&raw).is_ok(), "{raw}");
        let listed = format!("size([{}]) > 0", vec!["true ? 1 : 2"; 40].join(", "));
        assert!(compile_cel(&listed).is_ok());
    }

    /// The deepest expression `make(n)` gives within MAX_CEL_DEPTH.
    fn deepest(make: impl Fn(usize) -> String) -> String {
        let mut best = make(1);
        for n in 2.. {
            let next = make(n);
            if depth_of(&next) > MAX_CEL_DEPTH {
                break;
            }
            best = next;
        }
        assert!(depth_of(&best) >= MAX_CEL_DEPTH - 2, "{best}");
        best
    }

    #[test]
    fn predicates_at_the_limits_compile_and_evaluate_on_a_worker_stack() {
        let at_limits = [
            deepest(|n| format!("{} > 0", vec!["1"; n].join(" + "))),
            deepest(|n| format!("{} != ''", vec!["session.namespace"; n].join(" + "))),
            deepest(|n| format!("{} == 1", nest("size([", "1", "])", n))),
            deepest(|n| format!("size({}) == 1", nest("[", "1", "]", n))),
            deepest(|n| format!("size({}) == 1", nest("{1: ", "1", "}", n))),
            deepest(|n| format!("{} == 1", nest("int(", "1", ")", n))),
            deepest(|n| nest("true ? (", "true", ") : false", n)),
            deepest(|n| nest("!(", "true", ")", 2 * n)),
            deepest(|n| nest("accounts.exists(a, ", "true", ")", n)),
            deepest(|n| nest("accounts.all(a, ", "a.id != ''", ")", n)),
            deepest(|n| format!("size({}) == 2", nest("accounts.map(a, ", "1", ")", n))),
            deepest(|n| format!("{}{} == 1", nest("[", "1", "]", n), "[0]".repeat(n))),
            // The longest and the most nested source.
            format!(
                "session.namespace != '{}'",
                "x".repeat(MAX_CEL_BYTES - "session.namespace != ''".len())
            ),
            format!("{} == 1", nest("(", "1", ")", MAX_CEL_NESTING)),
        ];
        let s = session(2);
        let accounts = [facts("A0", &["x"], 1), facts("A1", &["x"], 2)];
        let compiled: Vec<Arc<Condition>> = at_limits
            .iter()
            .map(|expr| {
                assert!(expr.len() <= MAX_CEL_BYTES);
                let predicate = compile_cel(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
                Arc::new(Condition::Cel(Box::new(predicate)))
            })
            .collect();
        // Where the engine evaluates: a tokio worker and a blocking thread,
        // with tokio's default stack.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        for (expr, condition) in at_limits.iter().zip(compiled) {
            let (s1, a1, c1) = (s.clone(), accounts.clone(), condition.clone());
            let on_worker = runtime
                .block_on(runtime.spawn(async move { holds(&c1, &s1, &a1, 2_010_000) }))
                .unwrap();
            let (s2, a2) = (s.clone(), accounts.clone());
            let on_blocking = runtime
                .block_on(runtime.spawn_blocking(move || holds(&condition, &s2, &a2, 2_010_000)))
                .unwrap();
            assert!(on_worker && on_blocking, "{expr}");
        }
    }
}
