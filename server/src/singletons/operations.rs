//! Pause, resume and config updates, and the one place every operation
//! is sent, recorded and logged.

use solana_sdk::signature::{Keypair, Signer as _};
use valence_lifecycle_api::v1::{
    update_singleton_config_request::Update, SingletonInfo, SingletonStatus,
};

use super::{
    config, instructions,
    kind::{PAUSE_ORDER, RESUME_ORDER},
    state::ChainState,
    Kind, SingletonConfig, Singletons,
};
use crate::{
    error::{ApiError, ApiResult},
    store::{SingletonState, SingletonSuccess},
};

/// Operation names, as in the SingletonOperation event.
pub(super) const INITIALIZE: &str = "initialize";
pub(super) const PAUSE: &str = "pause";
pub(super) const RESUME: &str = "resume";
pub(super) const UPDATE_CONFIG: &str = "update_config";

impl Singletons {
    /// Sends `ixs` signed by the authority and records the outcome.
    pub(super) async fn execute(
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
                let status = SingletonState::from(after.status);
                self.store
                    .record_singleton_success(&SingletonSuccess {
                        kind: kind.name(),
                        operation,
                        status,
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
                        SingletonState::from(status),
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

    pub(super) async fn toggle(
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
            states.push((*kind, self.initialized(*kind).await?));
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

    /// The on-chain state of `kind`, which pause, resume and update need
    /// initialized (FailedPrecondition otherwise).
    async fn initialized(
        &self,
        kind: Kind,
    ) -> ApiResult<crate::chain::codec::SingletonStateRecord> {
        match self.observe(kind).await? {
            ChainState::Present(r) => Ok(r),
            ChainState::Missing => Err(ApiError::FailedPrecondition(format!(
                "{kind} is not initialized; initialize it first (InitializeSingletons)"
            ))),
            ChainState::Invalid(why) => Err(ApiError::FailedPrecondition(format!(
                "the {kind} state account is not a valid singleton state: {why}"
            ))),
        }
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
        let record = self.initialized(kind).await?;
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
}

/// What a confirmed operation leaves behind.
pub(super) struct After {
    pub(super) status: SingletonStatus,
    pub(super) version: u32,
    /// The new config (initialize, update_config).
    pub(super) config: Option<String>,
}

/// A failed transaction: the program said no (FailedPrecondition), or the
/// chain did not answer (Unavailable, worth a retry).
pub(super) fn send_error(kind: Kind, operation: &str, error: &str) -> ApiError {
    let message = format!("{kind} {operation} transaction failed: {error}");
    if error.contains("custom program error") || error.contains("Error processing Instruction") {
        ApiError::FailedPrecondition(message)
    } else {
        ApiError::Unavailable(message)
    }
}

/// Adds what was already done to an error of a multi-singleton operation.
pub(super) fn with_progress(error: ApiError, verb: &str, done: &[Kind]) -> ApiError {
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
    pub(super) fn send_errors_map_to_codes_and_name_progress() {
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
}
