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

mod bundle;
mod consume;
mod transaction;
mod webhook;

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::{rule_action, BundleOperation, SessionTemplate};

pub use self::{
    bundle::substitute,
    consume::ConsumeAddresses,
    webhook::{sign_body, DELIVERY_HEADER, SIGNATURE_HEADER},
};
use crate::{
    chain::{Chain, RetryPolicy},
    store::{ActionEnd, ActionStatus, PendingAction, Store},
    telemetry::{metrics::ActionLabels, Metrics},
};

/// How often a transaction that may still land is looked at again.
const WAIT: Duration = Duration::from_secs(1);

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
}
