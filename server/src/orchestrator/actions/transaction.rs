//! The step loop shared by the chain actions: sign, note, send, then wait
//! for a transaction that may still land or back off and try again.

use solana_sdk::{hash::Hash, instruction::Instruction, pubkey::Pubkey};
use tokio_util::sync::CancellationToken;

use super::{ChainWork, Executor, Outcome, Step, WAIT};
use crate::{
    chain::{
        codec::{Record, SessionRecord},
        Chain,
    },
    error::brief,
    store::{now_ms, ActionStatus, PendingAction},
};

impl Executor {
    /// The loop shared by chain actions: steps until an end, with backoff
    /// between failed sends and unanswered calls.
    pub(super) async fn chain_action(
        &self,
        action: &mut PendingAction,
        cancel: &CancellationToken,
        work: ChainWork,
    ) -> Option<Outcome> {
        let Some(chain) = self.chain.as_ref() else {
            return Some(Outcome::Failed(
                "no chain is configured (rpc.url / RPC_URL, or rpc.embedded): chain actions cannot run"
                    .into(),
            ));
        };
        if chain.wallet.is_none() {
            return Some(Outcome::Failed(
                "no service wallet (service.keypair_path / WALLET_PATH): chain actions cannot run"
                    .into(),
            ));
        }
        let chain = &self.session_chain(chain, action).await;
        let mut unreachable = 0;
        loop {
            let step = match &work {
                ChainWork::Consume(templates) => self.consume_step(chain, action, templates).await,
                ChainWork::Bundle(operations) => self.bundle_step(chain, action, operations).await,
            };
            let delay = match step.unwrap_or_else(|step| step) {
                Step::Done(detail) => return Some(Outcome::Executed(detail)),
                Step::Fail(reason) => return Some(Outcome::Failed(reason)),
                Step::Expired(reason) => return Some(Outcome::Expired(reason)),
                Step::Wait => WAIT,
                Step::SendFailed(reason) => {
                    tracing::warn!(action = %action.id, attempts = action.attempts, reason = %reason, "rule action transaction failed");
                    if action.attempts >= self.retry.max_attempts {
                        return Some(Outcome::Failed(reason));
                    }
                    self.count(&action.action_kind, "retried");
                    self.retry.delay(action.attempts)
                }
                Step::Unreachable(reason) => {
                    unreachable += 1;
                    tracing::warn!(action = %action.id, reason = %reason, "the chain did not answer; trying again");
                    if now_ms() >= action.expires_at_ms {
                        return Some(Outcome::Expired(format!(
                            "not finished within CONSUMPTION_TIMEOUT; last error: {reason}"
                        )));
                    }
                    self.retry.delay(unreachable)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Whether the transaction last noted for `action` may still land.
    pub(super) async fn may_still_land(
        &self,
        chain: &Chain,
        action: &PendingAction,
    ) -> Result<bool, String> {
        if action.status != ActionStatus::Sent || action.blockhash.is_empty() {
            return Ok(false);
        }
        let hash: Hash = action
            .blockhash
            .parse()
            .map_err(|_| format!("stored blockhash {} does not parse", action.blockhash))?;
        chain
            .rpc()
            .is_blockhash_valid(&hash, chain.commitment)
            .await
            .map_err(|e| brief(format!("isBlockhashValid: {e}")))
    }

    /// Signs, notes and sends one attempt; the action's row says `sent`
    /// before the transaction leaves.
    pub(super) async fn send(
        &self,
        chain: &Chain,
        action: &mut PendingAction,
        instructions: &[Instruction],
    ) -> Result<String, Step> {
        let tx = chain
            .sign(instructions, &[])
            .await
            .map_err(|e| Step::Unreachable(brief(format!("{e:#}"))))?;
        let signature = tx.signatures[0].to_string();
        let blockhash = tx.message.recent_blockhash.to_string();
        let attempts = action.attempts + 1;
        self.store
            .note_action_attempt(&action.id, attempts, &signature, &blockhash)
            .await
            .map_err(|e| Step::Unreachable(brief(e)))?;
        action.attempts = attempts;
        action.status = ActionStatus::Sent;
        action.signature = signature.clone();
        action.blockhash = blockhash;
        match chain.submit(&tx).await {
            Ok(_) => Ok(signature),
            Err(e) => {
                // A rejected or timed-out transaction cannot land any more
                // (past CONFIRM_TIMEOUT its blockhash has expired): the
                // next attempt need not wait for it.
                action.blockhash.clear();
                Err(Step::SendFailed(brief(format!("{e:#}"))))
            }
        }
    }

    /// The chain as seen by the action's session's own shard program: with
    /// several shards, each session lives in (and is consumed through) one.
    async fn session_chain(&self, chain: &Chain, action: &PendingAction) -> Chain {
        let shard = match self.store.get_session(&action.session_id).await {
            Ok(session) => session.shard,
            Err(_) => return chain.clone(),
        };
        match shard.parse() {
            Ok(program) => chain.for_program(program),
            Err(_) => chain.clone(),
        }
    }

    pub(super) async fn session_record(
        &self,
        chain: &Chain,
        session: &Pubkey,
    ) -> Result<Option<SessionRecord>, Step> {
        let account = chain
            .account(session)
            .await
            .map_err(|e| Step::Unreachable(brief(format!("{e:#}"))))?;
        let Some(account) = account else {
            return Ok(None);
        };
        match Record::decode(&account.data) {
            Ok(Record::Session(s)) => Ok(Some(s)),
            _ => Err(Step::Fail(format!(
                "{session} does not hold a Session record"
            ))),
        }
    }
}

/// The action's session as a public key.
pub(super) fn session_key(action: &PendingAction) -> Result<Pubkey, Step> {
    action
        .session_id
        .parse()
        .map_err(|_| Step::Fail(format!("{} is not a public key", action.session_id)))
}
