//! NotifyWebhook: one signed POST per attempt, the action id as delivery
//! id so that a receiver can drop a repeat after a crash mid-request.

use hmac::{Hmac, Mac as _};
use serde_json::json;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::{Executor, Outcome};
use crate::{
    error::brief,
    store::{now_ms, PendingAction},
};

/// The header carrying the body's HMAC.
pub const SIGNATURE_HEADER: &str = "X-Valence-Signature";
/// The header carrying the delivery (action) id.
pub const DELIVERY_HEADER: &str = "X-Valence-Delivery";

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn sign_body(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Executor {
    /// Delivers the notification, retrying failures (including non-2xx
    /// answers) with backoff.
    pub(super) async fn webhook(
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
}
