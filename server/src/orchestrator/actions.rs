//! Rule actions, each driven from its recorded pending row to an end
//! (executed, failed or expired) exactly once.
//!
//! Every attempt looks first at what an earlier attempt (or an earlier run
//! of the server) may have done, and only then sends:
//! - ConsumeAndCreate writes the consumption record and the new sessions
//!   into accounts at addresses derived from (rule, session, nonce), in
//!   the same transaction as `consume_session`; a consumed session whose
//!   consumption record sits at our derived address was consumed by us.
//! - ExecuteBundle has no such trace, so the noted signature is asked for.
//! - A transaction that may still land (its blockhash is still valid) is
//!   waited for, never sent alongside.
//! - NotifyWebhook is delivered with the action id as delivery id: an HTTP
//!   receiver cannot be asked what it received, so a crash mid-request can
//!   repeat a delivery, with the same id for the receiver to drop.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac as _};
use serde_json::json;
use sha2::Sha256;
use solana_sdk::{
    hash::Hash,
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
    signature::Signer as _,
};
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::{rule_action, BundleOperation, SessionTemplate};

use crate::{
    chain::address::{derive_seed, seeded_address},
    chain::{
        codec::{
            self, consumption_space, session_space, BundleOperationArg, Record, SessionRecord,
            SessionTemplateArg,
        },
        Chain, RetryPolicy,
    },
    error::brief,
    store::{now_ms, ActionEnd, ActionStatus, PendingAction, Store},
    telemetry::{metrics::ActionLabels, Metrics},
};

/// How often a transaction that may still land is looked at again.
const WAIT: Duration = Duration::from_secs(1);

/// The header carrying the body's HMAC.
pub const SIGNATURE_HEADER: &str = "X-Valence-Signature";
/// The header carrying the delivery (action) id.
pub const DELIVERY_HEADER: &str = "X-Valence-Delivery";

/// How an action ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the signature or HTTP status.
    Executed(String),
    /// Gave up.
    Failed(String),
    /// Not finished within CONSUMPTION_TIMEOUT.
    Expired(String),
}

/// One step of a chain action.
enum Step {
    Done(String),
    Fail(String),
    /// A sent transaction may still land: look again shortly.
    Wait,
    /// A transaction was sent and failed.
    SendFailed(String),
    /// The chain did not answer; nothing was sent.
    Unreachable(String),
    Expired(String),
}

/// What a chain action sends.
enum ChainWork {
    Consume(Vec<SessionTemplate>),
    Bundle(Vec<BundleOperation>),
}

/// Runs actions.
pub struct Executor {
    chain: Option<Chain>,
    store: Store,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
    http: reqwest::Client,
    secret: Vec<u8>,
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn sign_body(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Substitutes `{session_id}`, `{namespace}` and `{account_count}`.
pub fn substitute(template: &str, session_id: &str, namespace: &str, accounts: usize) -> String {
    template
        .replace("{session_id}", session_id)
        .replace("{namespace}", namespace)
        .replace("{account_count}", &accounts.to_string())
}

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
    /// An executor; `chain` is None when no chain is configured.
    pub fn new(
        chain: Option<Chain>,
        store: Store,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
        webhook_timeout: Duration,
        secret: &str,
    ) -> anyhow::Result<Executor> {
        let http = reqwest::Client::builder()
            .timeout(webhook_timeout)
            .connect_timeout(webhook_timeout)
            .build()?;
        Ok(Executor {
            chain,
            store,
            metrics,
            retry,
            http,
            secret: secret.as_bytes().to_vec(),
        })
    }

    /// Drives `action` to its end and records it. Returns None when
    /// cancelled first (the action stays open and resumes at the next start).
    pub async fn run(
        &self,
        mut action: PendingAction,
        cancel: CancellationToken,
    ) -> Option<Outcome> {
        let kind = action.rule.action.as_ref().and_then(|a| a.kind.clone());
        let outcome = match kind {
            Some(rule_action::Kind::ConsumeAndCreate(c)) => {
                self.chain_action(&mut action, &cancel, ChainWork::Consume(c.templates))
                    .await?
            }
            Some(rule_action::Kind::ExecuteBundle(b)) => {
                self.chain_action(&mut action, &cancel, ChainWork::Bundle(b.operations))
                    .await?
            }
            Some(rule_action::Kind::NotifyWebhook(w)) => {
                self.webhook(&mut action, &w.url, &cancel).await?
            }
            None => Outcome::Failed("the rule has no action".into()),
        };
        self.finish(&action, &outcome).await;
        Some(outcome)
    }

    async fn finish(&self, action: &PendingAction, outcome: &Outcome) {
        let (status, detail, error) = match outcome {
            Outcome::Executed(detail) => (ActionStatus::Executed, detail.as_str(), ""),
            Outcome::Failed(e) => (ActionStatus::Failed, "", e.as_str()),
            Outcome::Expired(e) => (ActionStatus::Expired, "", e.as_str()),
        };
        let label = status.as_str();
        let end = ActionEnd {
            id: &action.id,
            status,
            attempts: action.attempts,
            detail,
            error,
        };
        let recorded = self
            .retry
            .run(
                "recording an action outcome",
                || self.store.finish_action(&end),
                |_| true,
            )
            .await;
        match recorded {
            Ok(true) => {
                self.count(&action.action_kind, label);
                match outcome {
                    Outcome::Executed(_) => {
                        tracing::info!(action = %action.id, rule = %action.rule.id, session = %action.session_id, detail, "rule action executed")
                    }
                    _ => {
                        tracing::warn!(action = %action.id, rule = %action.rule.id, session = %action.session_id, error, outcome = label, "rule action did not execute")
                    }
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(action = %action.id, error = %e, "recording an action outcome failed; it is resumed at the next start")
            }
        }
    }

    fn count(&self, kind: &str, outcome: &str) {
        self.metrics
            .rule_actions
            .get_or_create(&ActionLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The loop shared by chain actions: steps until an end, with backoff
    /// between failed sends and unanswered calls.
    async fn chain_action(
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
        let mut unreachable = 0;
        loop {
            let step = match &work {
                ChainWork::Consume(templates) => self.consume_inner(chain, action, templates).await,
                ChainWork::Bundle(operations) => self.bundle_inner(chain, action, operations).await,
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
    async fn may_still_land(&self, chain: &Chain, action: &PendingAction) -> Result<bool, String> {
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
    async fn send(
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

    async fn session_record(
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

    async fn consume_inner(
        &self,
        chain: &Chain,
        action: &mut PendingAction,
        templates: &[SessionTemplate],
    ) -> Result<Step, Step> {
        let session: Pubkey = action
            .session_id
            .parse()
            .map_err(|_| Step::Fail(format!("{} is not a public key", action.session_id)))?;
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
        let mut args = Vec::with_capacity(templates.len());
        for (i, t) in templates.iter().enumerate() {
            if let Some(bad) = t
                .account_indices
                .iter()
                .find(|j| **j as usize >= record.accounts.len())
            {
                return Ok(Step::Fail(format!(
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
        let mut instructions = Vec::new();
        let mut metas = vec![
            AccountMeta::new(session, false),
            AccountMeta::new(addresses.consumption.1, false),
        ];
        let mut targets = vec![(
            addresses.consumption.clone(),
            consumption_space(templates.len()),
        )];
        for (arg, successor) in args.iter().zip(&addresses.successors) {
            let space = session_space(
                arg.account_indices.len(),
                &arg.namespace,
                arg.metadata.len(),
            );
            targets.push((successor.clone(), space));
            metas.push(AccountMeta::new(successor.1, false));
        }
        for ((seed, address), space) in &targets {
            let lamports = chain
                .rent_exempt(*space)
                .await
                .map_err(|e| Step::Unreachable(brief(format!("{e:#}"))))?;
            instructions.push(
                solana_system_interface::instruction::create_account_with_seed(
                    &base,
                    address,
                    &base,
                    seed,
                    lamports,
                    *space as u64,
                    &chain.program_id,
                ),
            );
        }
        instructions.push(Instruction {
            program_id: chain.program_id,
            accounts: metas,
            data: codec::instruction_data("consume_session", &args),
        });
        let signature = match self.send(chain, action, &instructions).await {
            Ok(signature) => signature,
            Err(step) => return Ok(step),
        };
        match self.session_record(chain, &session).await? {
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

    async fn bundle_inner(
        &self,
        chain: &Chain,
        action: &mut PendingAction,
        operations: &[BundleOperation],
    ) -> Result<Step, Step> {
        if action.status == ActionStatus::Sent && !action.signature.is_empty() {
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
                if status.satisfies_commitment(chain.commitment) {
                    return Ok(match &status.err {
                        None => Step::Done(action.signature.clone()),
                        Some(e) => {
                            action.blockhash.clear();
                            action.signature.clear();
                            Step::SendFailed(format!("transaction failed: {e}"))
                        }
                    });
                }
                return Ok(Step::Wait);
            }
            if self
                .may_still_land(chain, action)
                .await
                .map_err(Step::Unreachable)?
            {
                return Ok(Step::Wait);
            }
        }
        let session: Pubkey = action
            .session_id
            .parse()
            .map_err(|_| Step::Fail(format!("{} is not a public key", action.session_id)))?;
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

    /// Delivers the notification, retrying failures (including non-2xx
    /// answers) with backoff.
    async fn webhook(
        &self,
        action: &mut PendingAction,
        url: &str,
        cancel: &CancellationToken,
    ) -> Option<Outcome> {
        let body = match self.webhook_body(action).await {
            Ok(body) => body,
            Err(e) => return Some(Outcome::Failed(brief(e))),
        };
        loop {
            if now_ms() >= action.expires_at_ms {
                return Some(Outcome::Expired(
                    "not delivered within CONSUMPTION_TIMEOUT".into(),
                ));
            }
            let attempts = action.attempts + 1;
            if let Err(e) = self
                .store
                .note_action_attempt(&action.id, attempts, "", "")
                .await
            {
                tracing::warn!(action = %action.id, error = %e, "noting a webhook attempt failed; trying again");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(self.retry.delay(1)) => {}
                }
                continue;
            }
            action.attempts = attempts;
            let mut request = self
                .http
                .post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(DELIVERY_HEADER, &action.id)
                .body(body.clone());
            if !self.secret.is_empty() {
                request = request.header(SIGNATURE_HEADER, sign_body(&self.secret, &body));
            }
            let error = match request.send().await {
                Ok(r) if r.status().is_success() => {
                    return Some(Outcome::Executed(format!("HTTP {}", r.status().as_u16())))
                }
                Ok(r) => format!("the receiver answered HTTP {}", r.status().as_u16()),
                Err(e) => brief(format!("POST {url}: {e}")),
            };
            tracing::warn!(action = %action.id, attempts, error = %error, "webhook delivery failed");
            if attempts >= self.retry.max_attempts {
                return Some(Outcome::Failed(error));
            }
            self.count(&action.action_kind, "retried");
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.retry.delay(attempts)) => {}
            }
        }
    }

    /// The JSON notification: delivery id, rule and session.
    async fn webhook_body(&self, action: &PendingAction) -> anyhow::Result<Vec<u8>> {
        let session = self.store.get_session(&action.session_id).await?;
        let body = json!({
            "delivery_id": action.id,
            "event": "rule_matched",
            "matched_at": action.created_at_ms / 1000,
            "rule": {
                "id": action.rule.id,
                "name": action.rule.name,
                "action": action.action_kind,
            },
            "session": {
                "id": session.id,
                "owner": session.owner,
                "namespace": session.namespace,
                "nonce": session.nonce,
                "accounts": session.accounts,
                "is_consumed": session.is_consumed,
                "created_at": session.created_at_ms.div_euclid(1000),
                "last_activity_at": session.last_activity_at_ms.div_euclid(1000),
                "metadata": hex::encode(&session.metadata),
                "state": action.state_key,
            },
        });
        Ok(serde_json::to_vec(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = sign_body(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

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
