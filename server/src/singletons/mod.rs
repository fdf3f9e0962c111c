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
mod health;
mod initialize;
pub mod instructions;
pub mod kind;
mod operations;
mod state;

use std::{collections::HashMap, path::Path, sync::Arc};

use sha2::{Digest, Sha256};
use solana_sdk::{
    pubkey::Pubkey,
    signature::{Keypair, Signer as _},
};
use tokio::sync::Mutex;

use self::kind::INIT_ORDER;
pub use self::{config::SingletonConfig, kind::Kind};
use crate::{
    chain::Chain,
    config::Config,
    error::{ApiError, ApiResult},
    store::Store,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_program_ids_differ_and_are_stable() {
        let ids: Vec<Pubkey> = INIT_ORDER.into_iter().map(default_program_id).collect();
        assert_eq!(ids[0], default_program_id(Kind::Processor));
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    }
}
