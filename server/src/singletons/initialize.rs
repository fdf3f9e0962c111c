//! InitializeSingletons: processor, then scheduler, then diff, each
//! skipped when its state account already exists.

use std::collections::HashMap;

use solana_sdk::signature::Signer as _;
use valence_lifecycle_api::v1::{InitializeSingletonsRequest, SingletonInfo, SingletonStatus};

use super::{
    instructions,
    kind::INIT_ORDER,
    operations::{with_progress, After, INITIALIZE},
    state::ChainState,
    Kind, SingletonConfig, Singletons,
};
use crate::error::{ApiError, ApiResult};

impl Singletons {
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

    pub(super) async fn send_initialize(&self, config: &SingletonConfig) -> ApiResult<()> {
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
}
