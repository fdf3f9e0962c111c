//! ConsumeAndCreate: `consume_session` plus the consumption record and
//! the new sessions, created at addresses derived from (rule, session,
//! nonce) in the same transaction, so a later attempt can tell whether
//! the session was consumed by us.

use solana_sdk::{
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
    signature::Signer as _,
};
use valence_lifecycle_api::v1::SessionTemplate;

use super::{transaction::session_key, Executor, Step};
use crate::{
    chain::address::{derive_seed, seeded_address},
    chain::{
        codec::{
            self, consumption_space, session_space, Record, SessionRecord, SessionTemplateArg,
        },
        Chain,
    },
    error::brief,
    store::{now_ms, PendingAction},
};

/// Addresses of a ConsumeAndCreate, derived from (rule, session, nonce).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeAddresses {
    /// Seed and address of the SessionConsumption record.
    pub consumption: (String, Pubkey),
    /// Seed and address of each new session, in template order.
    pub successors: Vec<(String, Pubkey)>,
}

impl ConsumeAddresses {
    /// Derives the addresses under `base` (the service wallet) for `program`.
    pub fn derive(
        rule_id: &str,
        session_id: &str,
        nonce: u64,
        templates: usize,
        base: &Pubkey,
        program: &Pubkey,
    ) -> ConsumeAddresses {
        let mut input = Vec::new();
        input.extend_from_slice(rule_id.as_bytes());
        input.push(0);
        input.extend_from_slice(session_id.as_bytes());
        input.push(0);
        input.extend_from_slice(&nonce.to_le_bytes());
        let at = |seed: String| {
            let address = seeded_address(base, &seed, program);
            (seed, address)
        };
        let consumption = at(derive_seed("valence-consumption:", &input));
        let successors = (0..templates as u32)
            .map(|i| {
                let mut with_index = input.clone();
                with_index.extend_from_slice(&i.to_le_bytes());
                at(derive_seed("valence-successor:", &with_index))
            })
            .collect();
        ConsumeAddresses {
            consumption,
            successors,
        }
    }
}

impl Executor {
    /// One attempt: look at the session, then wait, end, or send.
    pub(super) async fn consume_step(
        &self,
        chain: &Chain,
        action: &mut PendingAction,
        templates: &[SessionTemplate],
    ) -> Result<Step, Step> {
        let session = session_key(action)?;
        let Some(record) = self.session_record(chain, &session).await? else {
            return Ok(Step::Fail(format!("session {session} is not on chain")));
        };
        let base = chain
            .payer()
            .map_err(|e| Step::Fail(e.to_string()))?
            .pubkey();
        let addresses = ConsumeAddresses::derive(
            &action.rule.id,
            &action.session_id,
            record.nonce,
            templates.len(),
            &base,
            &chain.program_id,
        );
        if record.is_consumed {
            return self
                .consumed_by_us(chain, action, &session, &addresses)
                .await;
        }
        if self
            .may_still_land(chain, action)
            .await
            .map_err(Step::Unreachable)?
        {
            return Ok(Step::Wait);
        }
        if now_ms() >= action.expires_at_ms {
            return Ok(Step::Expired(
                "not finished within CONSUMPTION_TIMEOUT; the session was not consumed".into(),
            ));
        }
        let args = template_args(templates, &record)?;
        let instructions = consume_instructions(chain, &base, &session, &addresses, &args).await?;
        let signature = match self.send(chain, action, &instructions).await {
            Ok(signature) => signature,
            Err(step) => return Ok(step),
        };
        self.verify_consumed(chain, &session, signature).await
    }

    /// A confirmed transaction is not enough: the session must read as
    /// consumed, or the attempt counts as a failed send.
    async fn verify_consumed(
        &self,
        chain: &Chain,
        session: &Pubkey,
        signature: String,
    ) -> Result<Step, Step> {
        match self.session_record(chain, session).await? {
            Some(r) if r.is_consumed => Ok(Step::Done(signature)),
            _ => Ok(Step::SendFailed(format!(
                "verification: session {session} not consumed after confirmed transaction {signature}"
            ))),
        }
    }

    /// The session is consumed: by us when the consumption record at our
    /// derived address names it.
    async fn consumed_by_us(
        &self,
        chain: &Chain,
        action: &PendingAction,
        session: &Pubkey,
        addresses: &ConsumeAddresses,
    ) -> Result<Step, Step> {
        let record = chain
            .account(&addresses.consumption.1)
            .await
            .map_err(|e| Step::Unreachable(brief(format!("{e:#}"))))?;
        let ours = record.is_some_and(|a| {
            matches!(Record::decode(&a.data), Ok(Record::SessionConsumption(c)) if c.consumed_session == session.to_bytes())
        });
        if ours {
            let detail = if action.signature.is_empty() {
                "consumed by an earlier attempt".to_string()
            } else {
                action.signature.clone()
            };
            Ok(Step::Done(detail))
        } else {
            Ok(Step::Fail(format!(
                "session {session} was consumed by another transaction"
            )))
        }
    }
}

/// The templates as instruction arguments; an account index beyond the
/// session's accounts fails the action.
fn template_args(
    templates: &[SessionTemplate],
    record: &SessionRecord,
) -> Result<Vec<SessionTemplateArg>, Step> {
    let mut args = Vec::with_capacity(templates.len());
    for (i, t) in templates.iter().enumerate() {
        if let Some(bad) = t
            .account_indices
            .iter()
            .find(|j| **j as usize >= record.accounts.len())
        {
            return Err(Step::Fail(format!(
                "template {i}: account index {bad} is beyond the session's {} accounts",
                record.accounts.len()
            )));
        }
        args.push(SessionTemplateArg {
            account_indices: t.account_indices.iter().map(|j| *j as u8).collect(),
            namespace: t.namespace.clone(),
            metadata: t.metadata.clone(),
        });
    }
    Ok(args)
}

/// The consumption record and each new session, with the space it needs,
/// in the order `consume_session` expects them.
fn create_targets(
    addresses: &ConsumeAddresses,
    args: &[SessionTemplateArg],
) -> Vec<((String, Pubkey), usize)> {
    let mut targets = vec![(addresses.consumption.clone(), consumption_space(args.len()))];
    for (arg, successor) in args.iter().zip(&addresses.successors) {
        let space = session_space(
            arg.account_indices.len(),
            &arg.namespace,
            arg.metadata.len(),
        );
        targets.push((successor.clone(), space));
    }
    targets
}

/// One rent-exempt `create_account_with_seed` per target, then
/// `consume_session` over the session and the new accounts.
async fn consume_instructions(
    chain: &Chain,
    base: &Pubkey,
    session: &Pubkey,
    addresses: &ConsumeAddresses,
    args: &[SessionTemplateArg],
) -> Result<Vec<Instruction>, Step> {
    let targets = create_targets(addresses, args);
    let mut metas = vec![AccountMeta::new(*session, false)];
    let mut instructions = Vec::with_capacity(targets.len() + 1);
    for ((seed, address), space) in &targets {
        let lamports = chain
            .rent_exempt(*space)
            .await
            .map_err(|e| Step::Unreachable(brief(format!("{e:#}"))))?;
        instructions.push(
            solana_system_interface::instruction::create_account_with_seed(
                base,
                address,
                base,
                seed,
                lamports,
                *space as u64,
                &chain.program_id,
            ),
        );
        metas.push(AccountMeta::new(*address, false));
    }
    instructions.push(Instruction {
        program_id: chain.program_id,
        accounts: metas,
        data: codec::instruction_data("consume_session", &args),
    });
    Ok(instructions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_deterministic_and_distinct() {
        let base = Pubkey::new_unique();
        let program = Pubkey::new_unique();
        let a = ConsumeAddresses::derive("r", "s", 1, 2, &base, &program);
        assert_eq!(a, ConsumeAddresses::derive("r", "s", 1, 2, &base, &program));
        assert_ne!(a, ConsumeAddresses::derive("r", "s", 2, 2, &base, &program));
        assert_ne!(
            a,
            ConsumeAddresses::derive("r2", "s", 1, 2, &base, &program)
        );
        assert_ne!(a.successors[0].1, a.successors[1].1);
        assert_ne!(a.consumption.1, a.successors[0].1);
    }
}
