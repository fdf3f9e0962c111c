//! ExecuteBundle: one `execute_sync_bundle` transaction. It leaves no
//! record on chain, so a noted signature is asked for before sending again.

use solana_sdk::instruction::{AccountMeta, Instruction};
use valence_lifecycle_api::v1::BundleOperation;

use super::{transaction::session_key, Executor, Step};
use crate::{
    chain::{
        codec::{self, BundleOperationArg, SessionRecord},
        Chain,
    },
    error::brief,
    store::{now_ms, ActionStatus, PendingAction},
};

/// Substitutes `{session_id}`, `{namespace}` and `{account_count}`.
pub fn substitute(template: &str, session_id: &str, namespace: &str, accounts: usize) -> String {
    template
        .replace("{session_id}", session_id)
        .replace("{namespace}", namespace)
        .replace("{account_count}", &accounts.to_string())
}

impl Executor {
    /// One attempt: settle a noted send first, then check the session and
    /// send.
    pub(super) async fn bundle_step(
        &self,
        chain: &Chain,
        action: &mut PendingAction,
        operations: &[BundleOperation],
    ) -> Result<Step, Step> {
        if let Some(step) = self.noted_send(chain, action).await? {
            return Ok(step);
        }
        let session = session_key(action)?;
        let record = match self.session_record(chain, &session).await? {
            None => return Ok(Step::Fail(format!("session {session} is not on chain"))),
            Some(r) if r.is_consumed => {
                return Ok(Step::Fail(format!("session {session} is consumed")))
            }
            Some(r) => r,
        };
        if now_ms() >= action.expires_at_ms {
            return Ok(Step::Expired(
                "not finished within CONSUMPTION_TIMEOUT; the bundle did not run".into(),
            ));
        }
        let ops = bundle_args(operations, action, &record)?;
        let instruction = Instruction {
            program_id: chain.program_id,
            accounts: vec![AccountMeta::new_readonly(session, false)],
            data: codec::instruction_data("execute_sync_bundle", &ops),
        };
        match self.send(chain, action, &[instruction]).await {
            Ok(signature) => Ok(Step::Done(signature)),
            Err(step) => Ok(step),
        }
    }

    /// What became of the transaction an earlier attempt noted: its end,
    /// Wait while it may still land, or None when a new send is due.
    async fn noted_send(
        &self,
        chain: &Chain,
        action: &mut PendingAction,
    ) -> Result<Option<Step>, Step> {
        if action.status != ActionStatus::Sent || action.signature.is_empty() {
            return Ok(None);
        }
        let signature = action.signature.parse().map_err(|_| {
            Step::Fail(format!(
                "stored signature {} does not parse",
                action.signature
            ))
        })?;
        let statuses = chain
            .rpc()
            .get_signature_statuses_with_history(&[signature])
            .await
            .map_err(|e| Step::Unreachable(brief(format!("getSignatureStatuses: {e}"))))?;
        if let Some(Some(status)) = statuses.value.first() {
            if !status.satisfies_commitment(chain.commitment) {
                return Ok(Some(Step::Wait));
            }
            return Ok(Some(match &status.err {
                None => Step::Done(action.signature.clone()),
                Some(e) => {
                    action.blockhash.clear();
                    action.signature.clear();
                    Step::SendFailed(format!("transaction failed: {e}"))
                }
            }));
        }
        if self
            .may_still_land(chain, action)
            .await
            .map_err(Step::Unreachable)?
        {
            return Ok(Some(Step::Wait));
        }
        Ok(None)
    }
}

/// The operations as instruction arguments, placeholders substituted.
fn bundle_args(
    operations: &[BundleOperation],
    action: &PendingAction,
    record: &SessionRecord,
) -> Result<Vec<BundleOperationArg>, Step> {
    let mut ops = Vec::with_capacity(operations.len());
    for (i, op) in operations.iter().enumerate() {
        let mut function_hash = [0u8; 32];
        hex::decode_to_slice(op.function_hash.trim(), &mut function_hash).map_err(|_| {
            Step::Fail(format!(
                "operation {i}: function_hash is not 64 hex characters"
            ))
        })?;
        let args = substitute(
            &op.args_template,
            &action.session_id,
            &record.namespace,
            record.accounts.len(),
        );
        ops.push(BundleOperationArg {
            function_hash,
            args: args.into_bytes(),
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_substitute_the_three_placeholders() {
        assert_eq!(
            substitute(
                "{session_id}/{namespace}/{account_count}/{other}",
                "S",
                "ns",
                3
            ),
            "S/ns/3/{other}"
        );
    }
}
