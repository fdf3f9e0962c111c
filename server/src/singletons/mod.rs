//! Singleton administration (seed 002): the processor, scheduler and diff
//! programs, initialized in that order, paused in that order, resumed in
//! reverse, with partial config updates and a version history.
//!
//! Every operation is one transaction to the singleton's program, signed by
//! the singleton authority (`singletons.authority_keypair_path`, else the
//! service wallet), recorded in the store with its signature and appended
//! to the event log as SingletonOperation. Chain state is the truth: before
//! acting, each singleton's SingletonState account is read, so a repeated
//! call is a no-op that sends nothing (pausing a paused singleton would
//! only fail on chain with AlreadyPaused). Operations run one at a time.

pub mod config;
pub mod instructions;
pub mod kind;

use std::{collections::HashMap, path::Path, sync::Arc};

use sha2::{Digest, Sha256};
use solana_sdk::{
    pubkey::Pubkey,
    signature::{Keypair, Signer as _},
};
use tokio::sync::Mutex;
use valence_lifecycle_api::{
    json::{parse_name, short_name},
    v1::{
        update_singleton_config_request::Update, InitializeSingletonsRequest,
        SingletonConfigVersion, SingletonHealth, SingletonInfo, SingletonStatus,
    },
};

use self::kind::{INIT_ORDER, PAUSE_ORDER, RESUME_ORDER};
pub use self::{config::SingletonConfig, kind::Kind};
use crate::{
    chain::{
        codec::{Record, SingletonStateRecord},
        Chain,
    },
    config::Config,
    error::{ApiError, ApiResult},
    store::{timestamp, SingletonRow, SingletonSuccess, Store},
    telemetry::Metrics,
};

/// The stand-in's program id for `kind` on the embedded network when none
/// is configured: fixed, like the shard program's, so tools can rely on it.
pub fn default_program_id(kind: Kind) -> Pubkey {
    let label = format!("valence-lifecycle:stand-in-{}-singleton", kind.name());
    Pubkey::new_from_array(Sha256::digest(label.as_bytes()).into())
}

/// The configured program id of `kind` (None when not set).
fn configured_program(config: &Config, kind: Kind) -> anyhow::Result<Option<Pubkey>> {
    let (value, key) = match kind {
        Kind::Processor => (
            &config.singletons.processor_program_id,
            "singletons.processor_program_id (PROCESSOR_PROGRAM_ID)",
        ),
        Kind::Scheduler => (
            &config.singletons.scheduler_program_id,
            "singletons.scheduler_program_id (SCHEDULER_PROGRAM_ID)",
        ),
        Kind::Diff => (
            &config.singletons.diff_program_id,
            "singletons.diff_program_id (DIFF_PROGRAM_ID)",
        ),
    };
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{key}: {e}"))
}

/// The setting that names `kind`'s program id, for error messages.
fn program_setting(kind: Kind) -> String {
    format!(
        "singletons.{0}_program_id ({1}_PROGRAM_ID)",
        kind.name(),
        kind.name().to_ascii_uppercase()
    )
}

/// What the singletons need from configuration, resolved at start-up.
pub struct Setup {
    programs: HashMap<Kind, Pubkey>,
    authority: Option<Keypair>,
}

impl Setup {
    /// Program ids (configured, else on the embedded network the stand-in's
    /// default ids) and the authority keypair (None: the service wallet).
    pub fn resolve(config: &Config, embedded: bool) -> anyhow::Result<Setup> {
        let mut programs = HashMap::new();
        for kind in INIT_ORDER {
            match configured_program(config, kind)? {
                Some(id) => {
                    programs.insert(kind, id);
                }
                None if embedded => {
                    programs.insert(kind, default_program_id(kind));
                }
                None => {}
            }
        }
        let path = &config.singletons.authority_keypair_path;
        let authority = if path.is_empty() {
            None
        } else {
            Some(crate::chain::wallet::load_as(
                Path::new(path),
                "singletons.authority_keypair_path (SINGLETON_AUTHORITY_PATH)",
            )?)
        };
        Ok(Setup {
            programs,
            authority,
        })
    }

    /// The program ids the embedded network must deploy the stand-in at.
    pub fn embedded_programs(config: &Config) -> anyhow::Result<Vec<Pubkey>> {
        INIT_ORDER
            .into_iter()
            .map(|k| Ok(configured_program(config, k)?.unwrap_or_else(|| default_program_id(k))))
            .collect()
    }
}

/// A singleton's SingletonState account as read from chain.
#[derive(Debug, Clone)]
enum ChainState {
    /// Not created: not initialized.
    Missing,
    /// A valid record.
    Present(SingletonStateRecord),
    /// Something else is at the address.
    Invalid(String),
}

impl ChainState {
    fn status(&self) -> SingletonStatus {
        match self {
            ChainState::Missing => SingletonStatus::Uninitialized,
            ChainState::Present(r) if r.status == 1 => SingletonStatus::Active,
            ChainState::Present(r) if r.status == 2 => SingletonStatus::Paused,
            _ => SingletonStatus::Error,
        }
    }
}

fn status_name(status: SingletonStatus) -> String {
    short_name::<SingletonStatus>(status as i32)
}

/// Operation names, as in the SingletonOperation event.
const INITIALIZE: &str = "initialize";
const PAUSE: &str = "pause";
const RESUME: &str = "resume";
const UPDATE_CONFIG: &str = "update_config";

/// Singleton administration: the logic behind SingletonAdminService.
pub struct Singletons {
    store: Store,
    chain: Option<Chain>,
    programs: HashMap<Kind, Pubkey>,
    authority: Option<Arc<Keypair>>,
    metrics: Arc<Metrics>,
    /// One operation at a time, so order checks and sends cannot interleave.
    turn: Mutex<()>,
}

impl Singletons {
    /// The service over `store` and `chain` (None: reads only).
    pub fn new(
        setup: Setup,
        store: Store,
        chain: Option<Chain>,
        metrics: Arc<Metrics>,
    ) -> Singletons {
        Singletons {
            store,
            chain,
            programs: setup.programs,
            authority: setup.authority.map(Arc::new),
            metrics,
            turn: Mutex::new(()),
        }
    }

    /// The program id of `kind`, when known.
    pub fn program(&self, kind: Kind) -> Option<Pubkey> {
        self.programs.get(&kind).copied()
    }

    fn chain(&self) -> ApiResult<&Chain> {
        self.chain.as_ref().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "singleton administration needs a chain: set rpc.url (RPC_URL) or enable the embedded network".into(),
            )
        })
    }

    /// The authority keypair: the configured one, else the service wallet.
    fn authority(&self) -> ApiResult<&Keypair> {
        if let Some(a) = &self.authority {
            return Ok(a);
        }
        self.chain()?.payer().map_err(|e| {
            ApiError::FailedPrecondition(format!(
                "no singleton authority: {e}; or set singletons.authority_keypair_path (SINGLETON_AUTHORITY_PATH)"
            ))
        })
    }

    fn program_or_fail(&self, kind: Kind) -> ApiResult<Pubkey> {
        self.program(kind).ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
                "no {kind} program id is configured ({})",
                program_setting(kind)
            ))
        })
    }

    fn state_key(&self, kind: Kind) -> ApiResult<Pubkey> {
        Ok(instructions::state_address(
            kind,
            &self.authority()?.pubkey(),
            &self.program_or_fail(kind)?,
        ))
    }

    /// Reads `kind`'s state account.
    async fn read_state(&self, kind: Kind) -> ApiResult<ChainState> {
        let chain = self.chain()?;
        let program = self.program_or_fail(kind)?;
        let key = self.state_key(kind)?;
        let account = chain.account(&key).await.map_err(|e| {
            tracing::warn!(singleton = %kind, error = format!("{e:#}"), "reading singleton state failed");
            ApiError::Unavailable(format!("reading the {kind} state account failed; retry later"))
        })?;
        let Some(account) = account else {
            return Ok(ChainState::Missing);
        };
        if account.owner != program {
            return Ok(ChainState::Invalid(format!(
                "{key} is owned by {}, not the {kind} program",
                account.owner
            )));
        }
        Ok(match Record::decode(&account.data) {
            Ok(Record::SingletonState(r)) if r.kind == kind.code() => ChainState::Present(r),
            Ok(Record::SingletonState(r)) => {
                ChainState::Invalid(format!("{key} holds the state of kind {}", r.kind))
            }
            Ok(other) => ChainState::Invalid(format!("{key} holds a {} record", other.name())),
            Err(_) if account.data.iter().take(8).all(|b| *b == 0) => ChainState::Missing,
            Err(e) => ChainState::Invalid(format!("{key} does not decode: {e}")),
        })
    }

    /// Reads `kind`'s chain state and aligns the store with it.
    async fn observe(&self, kind: Kind) -> ApiResult<ChainState> {
        let state = self.read_state(kind).await?;
        let program = self.program_or_fail(kind)?.to_string();
        let adopted = match &state {
            ChainState::Present(r) => SingletonConfig::decode(kind, &r.config)
                .ok()
                .map(|c| (r.version, c.to_json())),
            _ => None,
        };
        let status = match &state {
            // No account and a failed last operation: keep "error" (the
            // last operation's outcome is all there is to go on).
            ChainState::Missing => None,
            s => Some(status_name(s.status())),
        };
        if let Some(status) = status {
            self.store
                .sync_singleton(
                    kind.name(),
                    &status,
                    &program,
                    adopted.as_ref().map(|(v, c)| (*v, c.as_str())),
                )
                .await?;
        }
        Ok(state)
    }

    /// Everything known about every singleton, in initialization order.
    /// Chain state is read when a chain is there; if it does not answer,
    /// the stored state is shown.
    pub async fn get(&self) -> ApiResult<Vec<SingletonInfo>> {
        if self.chain.is_some() && self.authority().is_ok() {
            let _turn = self.turn.lock().await;
            for kind in INIT_ORDER {
                if self.program(kind).is_none() {
                    continue;
                }
                if let Err(e) = self.observe(kind).await {
                    tracing::warn!(singleton = %kind, error = %e, "showing stored singleton state");
                }
            }
        }
        self.infos(&INIT_ORDER).await
    }

    /// Infos of `kinds`, in that order, from the store.
    async fn infos(&self, kinds: &[Kind]) -> ApiResult<Vec<SingletonInfo>> {
        let rows = self.store.singletons().await?;
        let mut out = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let row = rows.iter().find(|r| r.kind == kind.name());
            let history = self.store.singleton_history(kind.name()).await?;
            let info = self.info(*kind, row, history);
            self.metrics.set_singleton_status(kind.name(), info.status);
            out.push(info);
        }
        Ok(out)
    }

    fn info(
        &self,
        kind: Kind,
        row: Option<&SingletonRow>,
        history: Vec<crate::store::ConfigVersionRow>,
    ) -> SingletonInfo {
        let program_id = self.program(kind).map(|p| p.to_string());
        let Some(row) = row else {
            return SingletonInfo {
                kind: kind.proto() as i32,
                status: SingletonStatus::Uninitialized as i32,
                program_id: program_id.unwrap_or_default(),
                health: Some(SingletonHealth {
                    success_rate: 1.0,
                    ..Default::default()
                }),
                ..Default::default()
            };
        };
        SingletonInfo {
            kind: kind.proto() as i32,
            status: parse_name::<SingletonStatus>(&row.status)
                .unwrap_or(SingletonStatus::Unspecified as i32),
            program_id: program_id.unwrap_or_else(|| row.program_id.clone()),
            version: row.version,
            updated_at: Some(timestamp(row.updated_at_ms)),
            config: SingletonConfig::from_json(kind, &row.config_json)
                .ok()
                .map(|c| c.proto()),
            history: history
                .into_iter()
                .map(|h| SingletonConfigVersion {
                    version: h.version,
                    at: Some(timestamp(h.at_ms)),
                    signature: h.signature,
                    config_json: h.config_json,
                })
                .collect(),
            health: Some(health(row)),
        }
    }

    /// Initializes the singletons given, processor, then scheduler, then diff.
    pub async fn initialize(
        &self,
        request: &InitializeSingletonsRequest,
    ) -> ApiResult<Vec<SingletonInfo>> {
        // Validate everything before touching the chain: nothing is sent
        // for a request with one bad field.
        let authority_key = self
            .authority()
            .map(|a| a.pubkey().to_bytes())
            .unwrap_or_default();
        let mut wanted: Vec<SingletonConfig> = Vec::new();
        if let Some(c) = &request.processor {
            wanted.push(SingletonConfig::processor(c, &authority_key)?);
        }
        if let Some(c) = &request.scheduler {
            wanted.push(SingletonConfig::scheduler(c)?);
        }
        if let Some(c) = &request.diff {
            wanted.push(SingletonConfig::diff(c)?);
        }
        if wanted.is_empty() {
            return Err(ApiError::invalid(
                "processor",
                "nothing to initialize: give processor, scheduler or diff configs",
            ));
        }
        for config in &wanted {
            self.program_or_fail(config.kind())?;
        }
        self.authority()?;
        let _turn = self.turn.lock().await;
        let mut states = HashMap::new();
        for kind in INIT_ORDER {
            if self.program(kind).is_some() {
                states.insert(kind, self.observe(kind).await?);
            }
        }
        let requested: Vec<Kind> = wanted.iter().map(SingletonConfig::kind).collect();
        let mut to_send = Vec::new();
        for config in &wanted {
            let kind = config.kind();
            for prerequisite in kind.prerequisites() {
                let initialized = matches!(states.get(prerequisite), Some(ChainState::Present(_)));
                if !initialized && !requested.contains(prerequisite) {
                    return Err(ApiError::FailedPrecondition(format!(
                        "{prerequisite} is not initialized: {kind} needs {prerequisite} first \
                         (initialize {prerequisite} before {kind}, or in the same request)"
                    )));
                }
            }
            match states.get(&kind) {
                Some(ChainState::Present(r)) if r.config == config.encode() => {}
                Some(ChainState::Present(r)) => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "{kind} is already initialized with a different config (version {}); \
                         use UpdateSingletonConfig to change it",
                        r.version
                    )))
                }
                Some(ChainState::Invalid(why)) => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "the {kind} state account is not a valid singleton state: {why}"
                    )))
                }
                _ => to_send.push(config.clone()),
            }
        }
        let mut done = Vec::new();
        for config in to_send {
            let kind = config.kind();
            self.send_initialize(&config)
                .await
                .map_err(|e| with_progress(e, "initialized", &done))?;
            done.push(kind);
        }
        self.infos(&requested).await
    }

    async fn send_initialize(&self, config: &SingletonConfig) -> ApiResult<()> {
        let kind = config.kind();
        let chain = self.chain()?;
        let authority = self.authority()?.pubkey();
        let program = self.program_or_fail(kind)?;
        let state = self.state_key(kind)?;
        let payer = chain
            .payer()
            .map_err(|e| ApiError::FailedPrecondition(e.to_string()))?
            .pubkey();
        let lamports = chain
            .rent_exempt(instructions::STATE_SPACE as usize)
            .await
            .map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
        let ixs = [
            instructions::create_state(kind, &payer, &authority, &program, lamports),
            instructions::initialize(program, state, authority, config),
        ];
        let after = After {
            status: SingletonStatus::Active,
            version: 1,
            config: Some(config.to_json()),
        };
        self.execute(kind, INITIALIZE, &ixs, after).await
    }

    /// Sends `ixs` signed by the authority and records the outcome.
    async fn execute(
        &self,
        kind: Kind,
        operation: &str,
        ixs: &[solana_sdk::instruction::Instruction],
        after: After,
    ) -> ApiResult<()> {
        let chain = self.chain()?;
        let authority = self.authority()?;
        let payer = chain
            .payer()
            .map_err(|e| ApiError::FailedPrecondition(e.to_string()))?;
        // The wallet signs as fee payer already; a second copy is not needed.
        let signers: Vec<&Keypair> = if authority.pubkey() == payer.pubkey() {
            vec![]
        } else {
            vec![authority]
        };
        let program = self.program_or_fail(kind)?.to_string();
        match chain.send(ixs, &signers).await {
            Ok(signature) => {
                let signature = signature.to_string();
                let status = status_name(after.status);
                self.store
                    .record_singleton_success(&SingletonSuccess {
                        kind: kind.name(),
                        operation,
                        status: &status,
                        program_id: &program,
                        version: after.version,
                        new_config_json: after.config.as_deref(),
                        signature: &signature,
                    })
                    .await?;
                tracing::info!(singleton = %kind, operation, %signature, "singleton operation confirmed");
                Ok(())
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(singleton = %kind, operation, error = %error, "singleton operation failed");
                // Where the state account exists its status is the truth;
                // otherwise the failed operation leaves the singleton in error.
                let status = match self.read_state(kind).await {
                    Ok(state @ (ChainState::Present(_) | ChainState::Invalid(_))) => state.status(),
                    _ => SingletonStatus::Error,
                };
                self.store
                    .record_singleton_failure(
                        kind.name(),
                        operation,
                        &status_name(status),
                        &program,
                        &error,
                    )
                    .await?;
                Err(send_error(kind, operation, &error))
            }
        }
    }

    /// Pauses `target` (None: all, processor first). Paused ones are left
    /// alone and named in the message.
    pub async fn pause(&self, target: Option<Kind>) -> ApiResult<(Vec<SingletonInfo>, String)> {
        self.toggle(target, true).await
    }

    /// Resumes `target` (None: all, diff first). Active ones are left
    /// alone and named in the message.
    pub async fn resume(&self, target: Option<Kind>) -> ApiResult<(Vec<SingletonInfo>, String)> {
        self.toggle(target, false).await
    }

    async fn toggle(
        &self,
        target: Option<Kind>,
        pause: bool,
    ) -> ApiResult<(Vec<SingletonInfo>, String)> {
        let kinds: Vec<Kind> = match (target, pause) {
            (Some(k), _) => vec![k],
            (None, true) => PAUSE_ORDER.to_vec(),
            (None, false) => RESUME_ORDER.to_vec(),
        };
        for kind in &kinds {
            self.program_or_fail(*kind)?;
        }
        self.authority()?;
        let _turn = self.turn.lock().await;
        // Check all before sending any: "all" must not stop half-way on a
        // singleton that was never initialized.
        let mut states = Vec::new();
        for kind in &kinds {
            let state = self.observe(*kind).await?;
            match &state {
                ChainState::Present(r) => states.push((*kind, r.clone())),
                ChainState::Missing => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "{kind} is not initialized; initialize it first (InitializeSingletons)"
                    )))
                }
                ChainState::Invalid(why) => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "the {kind} state account is not a valid singleton state: {why}"
                    )))
                }
            }
        }
        let (operation, verb, already) = if pause {
            (PAUSE, "paused", SingletonStatus::Paused)
        } else {
            (RESUME, "resumed", SingletonStatus::Active)
        };
        let (mut sent, mut skipped) = (Vec::new(), Vec::new());
        for (kind, record) in states {
            if ChainState::Present(record.clone()).status() == already {
                skipped.push(kind.name());
                continue;
            }
            let program = self.program_or_fail(kind)?;
            let state = self.state_key(kind)?;
            let authority = self.authority()?.pubkey();
            let ix = if pause {
                instructions::pause(program, state, authority)
            } else {
                instructions::resume(program, state, authority)
            };
            let after = After {
                status: already,
                version: record.version,
                config: None,
            };
            self.execute(kind, operation, &[ix], after)
                .await
                .map_err(|e| with_progress(e, verb, &sent))?;
            sent.push(kind);
        }
        let mut message = Vec::new();
        if !sent.is_empty() {
            let names: Vec<&str> = sent.iter().map(|k| k.name()).collect();
            message.push(format!("{verb} {}", names.join(", then ")));
        }
        if !skipped.is_empty() {
            let was = if skipped.len() == 1 { "was" } else { "were" };
            message.push(format!(
                "{} {was} already {verb}{}",
                skipped.join(", "),
                if sent.is_empty() {
                    "; nothing sent"
                } else {
                    ""
                }
            ));
        }
        Ok((self.infos(&kinds).await?, message.join("; ")))
    }

    /// Applies the fields of `update` that are set; bumps the version.
    /// An update that changes nothing sends nothing.
    pub async fn update(&self, update: &Update) -> ApiResult<SingletonInfo> {
        let kind = config::update_kind(update);
        // Validate the given fields before reading anything.
        config::placeholder(kind).merged(update)?;
        let program = self.program_or_fail(kind)?;
        let authority = self.authority()?.pubkey();
        let _turn = self.turn.lock().await;
        let record = match self.observe(kind).await? {
            ChainState::Present(r) => r,
            ChainState::Missing => {
                return Err(ApiError::FailedPrecondition(format!(
                    "{kind} is not initialized; initialize it first (InitializeSingletons)"
                )))
            }
            ChainState::Invalid(why) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "the {kind} state account is not a valid singleton state: {why}"
                )))
            }
        };
        let current = SingletonConfig::decode(kind, &record.config).map_err(|e| {
            ApiError::FailedPrecondition(format!(
                "the {kind} config on chain does not decode ({e}); it was not written by this server"
            ))
        })?;
        let next = current.merged(update)?;
        if next != current {
            let ix = instructions::update_config(program, self.state_key(kind)?, authority, &next);
            let after = After {
                status: ChainState::Present(record.clone()).status(),
                version: record.version + 1,
                config: Some(next.to_json()),
            };
            self.execute(kind, UPDATE_CONFIG, &[ix], after).await?;
        }
        let mut infos = self.infos(&[kind]).await?;
        Ok(infos.remove(0))
    }

    /// Sets the status gauges from the store (before a metrics scrape).
    pub async fn refresh_gauges(&self) {
        match self.store.singletons().await {
            Ok(rows) => {
                for row in rows {
                    let status = parse_name::<SingletonStatus>(&row.status).unwrap_or_default();
                    self.metrics.set_singleton_status(&row.kind, status);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh singleton gauges"),
        }
    }

    /// Per-singleton health for /health, from the store.
    pub async fn health_json(&self) -> ApiResult<Vec<serde_json::Value>> {
        let rows = self.store.singletons().await?;
        Ok(INIT_ORDER
            .iter()
            .map(|kind| {
                let row = rows.iter().find(|r| r.kind == kind.name());
                let h = row.map(health);
                serde_json::json!({
                    "name": kind.name(),
                    "status": row.map_or("uninitialized", |r| r.status.as_str()),
                    "version": row.map_or(0, |r| r.version),
                    "success_rate": h.as_ref().map_or(1.0, |h| h.success_rate),
                    "operations_total": h.as_ref().map_or(0, |h| h.operations_total),
                    "last_error": h.as_ref().map_or("", |h| h.last_error.as_str()),
                    "last_operation_at": h.as_ref().and_then(|h| h.last_operation_at.map(|t| t.to_string())),
                })
            })
            .collect())
    }
}

/// What a confirmed operation leaves behind.
struct After {
    status: SingletonStatus,
    version: u32,
    /// The new config (initialize, update_config).
    config: Option<String>,
}

/// Health of a stored singleton.
fn health(row: &SingletonRow) -> SingletonHealth {
    let success_rate = if row.operations_total == 0 {
        1.0
    } else {
        (row.operations_total - row.failures_total.min(row.operations_total)) as f64
            / row.operations_total as f64
    };
    SingletonHealth {
        success_rate,
        last_error: row.last_error.clone(),
        last_operation_at: row.last_operation_at_ms.map(timestamp),
        operations_total: row.operations_total,
        failures_total: row.failures_total,
    }
}

/// A failed transaction: the program said no (FailedPrecondition), or the
/// chain did not answer (Unavailable, worth a retry).
fn send_error(kind: Kind, operation: &str, error: &str) -> ApiError {
    let message = format!("{kind} {operation} transaction failed: {error}");
    if error.contains("custom program error") || error.contains("Error processing Instruction") {
        ApiError::FailedPrecondition(message)
    } else {
        ApiError::Unavailable(message)
    }
}

/// Adds what was already done to an error of a multi-singleton operation.
fn with_progress(error: ApiError, verb: &str, done: &[Kind]) -> ApiError {
    if done.is_empty() {
        return error;
    }
    let names: Vec<&str> = done.iter().map(|k| k.name()).collect();
    let suffix = format!(" ({verb} before the failure: {})", names.join(", "));
    match error {
        ApiError::FailedPrecondition(m) => ApiError::FailedPrecondition(m + &suffix),
        ApiError::Unavailable(m) => ApiError::Unavailable(m + &suffix),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_rates_and_error_mapping() {
        let mut row = SingletonRow {
            kind: "diff".into(),
            status: "active".into(),
            program_id: String::new(),
            version: 1,
            config_json: String::new(),
            updated_at_ms: 0,
            last_signature: String::new(),
            operations_total: 0,
            failures_total: 0,
            last_error: String::new(),
            last_operation_at_ms: None,
        };
        assert_eq!(health(&row).success_rate, 1.0);
        row.operations_total = 4;
        row.failures_total = 1;
        assert_eq!(health(&row).success_rate, 0.75);

        let refused = send_error(Kind::Diff, PAUSE, "custom program error: 0x1780");
        assert_eq!(refused.grpc_code(), tonic::Code::FailedPrecondition);
        let down = send_error(Kind::Diff, PAUSE, "connection refused");
        assert_eq!(down.grpc_code(), tonic::Code::Unavailable);
        let partial = with_progress(down, "paused", &[Kind::Processor, Kind::Scheduler]);
        assert!(
            partial
                .to_string()
                .ends_with("(paused before the failure: processor, scheduler)"),
            "{partial}"
        );
    }

    #[test]
    fn default_program_ids_differ_and_are_stable() {
        let ids: Vec<Pubkey> = INIT_ORDER.into_iter().map(default_program_id).collect();
        assert_eq!(ids[0], default_program_id(Kind::Processor));
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    }
}
