//! One request from claim to outcome: check the hash, then attempts (each
//! looks at the chain first, so it never repeats what already happened),
//! retries with backoff, and the final record.
//!
//! The chain is the arbiter of "already done": the request's own on-chain
//! record names its Account once one is written, and the program refuses a
//! second one. Every attempt reads it first, so another wallet's account
//! (a second deployment, a fresh database on a used chain) is adopted, not
//! duplicated at this wallet's derived address.

use std::{sync::Arc, time::Instant};

use solana_sdk::{account::Account, pubkey::Pubkey};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{plan::Plan, Builder, HASH_MISMATCH};
use crate::{
    chain::codec::{base58, AccountRecord as ChainAccount, Record},
    error::brief,
    store::{AccountRecord, AttemptFailure, ClaimedRequest},
    telemetry::metrics::OutcomeLabels,
};

/// Why an attempt did not initialize the account.
enum Failure {
    /// The chain could not be asked or told anything: nothing was sent, so
    /// no attempt is used up; retried with backoff until it answers.
    Unreachable(String),
    /// A transaction was sent and failed: one attempt used.
    Failed(String),
    /// Retrying cannot help (the address holds something else).
    Permanent(String),
}

/// What the derived address holds.
enum Existing {
    /// Nothing yet.
    Nothing,
    /// A program-owned account of the right size whose record is not written.
    Created,
    /// The initialized account.
    Initialized(ChainAccount),
}

/// Success: the account's address and record (when the program wrote one).
struct Done {
    address: Pubkey,
    record: Option<ChainAccount>,
    sent: bool,
}

impl Builder {
    /// Works one claimed request to its outcome.
    pub(super) async fn process(
        self: Arc<Self>,
        request: ClaimedRequest,
        cancel: CancellationToken,
    ) {
        let span = tracing::info_span!("build", request = %request.id);
        self.process_inner(request, cancel).instrument(span).await
    }

    async fn process_inner(&self, request: ClaimedRequest, cancel: CancellationToken) {
        let started = Instant::now();
        let plan = match self.plan(&request) {
            Ok(plan) => plan,
            Err(reason) => return self.park(&request, request.attempts, &reason).await,
        };
        if !plan.hash_matches(&request.init_state_hash) {
            tracing::warn!(
                expected = %request.init_state_hash,
                computed = %hex::encode(plan.state_hash),
                "initial state hash mismatch: parked, nothing sent"
            );
            self.count("hash_mismatch");
            return self.park(&request, request.attempts, HASH_MISMATCH).await;
        }
        let mut attempts = request.attempts;
        let mut signature = request.signature.clone();
        let mut unreachable = 0;
        loop {
            let outcome = self
                .in_slot(self.attempt(&plan, &request, &mut attempts, &mut signature))
                .await;
            let delay = match outcome {
                Ok(done) => {
                    return self
                        .finish(&plan, &request, done, &signature, started)
                        .await
                }
                Err(Failure::Permanent(reason)) => {
                    self.count("permanent_failure");
                    return self.park(&request, attempts, &reason).await;
                }
                Err(Failure::Failed(reason)) => {
                    self.count("failed");
                    let parked = attempts >= self.retry.max_attempts;
                    tracing::warn!(attempts, parked, reason = %reason, "initialization attempt failed");
                    self.record_failure(&request, attempts, &reason, parked)
                        .await;
                    if parked {
                        return;
                    }
                    self.retry.delay(attempts)
                }
                Err(Failure::Unreachable(reason)) => {
                    self.count("unreachable");
                    unreachable += 1;
                    tracing::warn!(reason = %reason, "the chain did not answer; trying again");
                    self.retry.delay(unreachable)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn plan(&self, request: &ClaimedRequest) -> Result<Plan, String> {
        let id: Pubkey = request
            .id
            .parse()
            .map_err(|_| format!("invalid_request: id {} is not a public key", request.id))?;
        let base = self.chain.payer().map_err(brief)?;
        Ok(Plan::new(
            id,
            &request.capabilities,
            self.chain.program_id,
            solana_sdk::signature::Signer::pubkey(base),
        ))
    }

    /// One attempt: look at the address, send what is missing, verify.
    async fn attempt(
        &self,
        plan: &Plan,
        request: &ClaimedRequest,
        attempts: &mut u32,
        signature: &mut String,
    ) -> Result<Done, Failure> {
        // Independent reads, at once: an attempt's latency is mostly round
        // trips to the RPC node, and its slot is held all along.
        let (elsewhere, existing, blockhash) = tokio::join!(
            self.initialized_elsewhere(plan),
            self.inspect(plan),
            self.chain.latest_blockhash()
        );
        if let Some(done) = elsewhere? {
            return Ok(done);
        }
        let create = match existing? {
            Existing::Initialized(record) => {
                return Ok(Done {
                    address: plan.address,
                    record: Some(record),
                    sent: false,
                })
            }
            Existing::Created if !self.initialize => {
                return Ok(Done {
                    address: plan.address,
                    record: None,
                    sent: false,
                })
            }
            Existing::Created => false,
            Existing::Nothing => true,
        };
        let lamports = self
            .chain
            .rent_exempt(plan.space)
            .await
            .map_err(|e| Failure::Unreachable(brief(e)))?;
        let instructions = plan.instructions(lamports, create, self.initialize);
        let tx = blockhash
            .and_then(|blockhash| self.chain.sign_with(blockhash, &instructions, &[]))
            .map_err(|e| Failure::Unreachable(brief(e)))?;
        *attempts += 1;
        *signature = tx.signatures[0].to_string();
        // Noted before sending: after a crash the next run knows which
        // transaction may have landed, and links the account to its request.
        self.store
            .note_attempt(&request.id, *attempts, &plan.address.to_string(), signature)
            .await
            .map_err(|e| Failure::Unreachable(brief(e)))?;
        if let Err(e) = self.chain.submit(&tx).await {
            // Refused because someone else initialized the request between
            // our read and our send (RequestAlreadyInitialized): theirs wins.
            if let Some(done) = self.initialized_elsewhere(plan).await? {
                return Ok(done);
            }
            return Err(Failure::Failed(brief(e)));
        }
        match self.inspect(plan).await? {
            Existing::Initialized(record) => Ok(Done {
                address: plan.address,
                record: Some(record),
                sent: true,
            }),
            Existing::Created if !self.initialize => Ok(Done {
                address: plan.address,
                record: None,
                sent: true,
            }),
            _ => Err(Failure::Failed(format!(
                "verification: {} not initialized after confirmed transaction {signature}",
                plan.address
            ))),
        }
    }

    /// The account the request's on-chain record names, when it is not the
    /// one this wallet plans (ours is checked by [`Self::inspect`]). A
    /// request record that cannot be read or decoded says nothing: the
    /// attempt goes on and the program has the last word.
    async fn initialized_elsewhere(&self, plan: &Plan) -> Result<Option<Done>, Failure> {
        let unreachable = |e: anyhow::Error| Failure::Unreachable(brief(e));
        let Some(request) = self
            .chain
            .account(&plan.request)
            .await
            .map_err(unreachable)?
        else {
            return Ok(None);
        };
        let Ok(Record::AccountRequest(record)) = Record::decode(&request.data) else {
            return Ok(None);
        };
        let Some(key) = record.initialized_account() else {
            return Ok(None);
        };
        let address = Pubkey::new_from_array(key);
        if address == plan.address {
            return Ok(None);
        }
        let account = self.chain.account(&address).await.map_err(unreachable)?;
        let record = match account.map(|a| Record::decode(&a.data)) {
            Some(Ok(Record::Account(record))) => record,
            _ => {
                return Err(Failure::Permanent(format!(
                    "address_conflict: the request names account {address}, which holds no Account record"
                )))
            }
        };
        tracing::info!(account = %address, "the request was initialized by another wallet: adopting its account");
        Ok(Some(Done {
            address,
            record: Some(record),
            sent: false,
        }))
    }

    /// Reads the derived address and checks it holds what we plan (owner,
    /// size, rent-exempt lamports, and the record once written).
    async fn inspect(&self, plan: &Plan) -> Result<Existing, Failure> {
        let account = self
            .chain
            .account(&plan.address)
            .await
            .map_err(|e| Failure::Unreachable(brief(e)))?;
        let Some(account) = account else {
            return Ok(Existing::Nothing);
        };
        let rent = self
            .chain
            .rent_exempt(plan.space)
            .await
            .map_err(|e| Failure::Unreachable(brief(e)))?;
        check_existing(plan, &account, rent)
    }

    async fn finish(
        &self,
        plan: &Plan,
        request: &ClaimedRequest,
        done: Done,
        noted: &str,
        started: Instant,
    ) {
        let creator = match done.sent {
            true => None,
            false => self.creator(&done.address).await,
        };
        // An earlier attempt of ours that landed unconfirmed (a timeout,
        // a dropped answer), found on the retry: still sent by this wallet.
        let sent = done.sent || (!noted.is_empty() && creator.as_deref() == Some(noted));
        let signature = creator.as_deref().unwrap_or(noted);
        let slot = self.landed_in(signature).await;
        let state_hash = done
            .record
            .as_ref()
            .map(|r| r.state_hash)
            .unwrap_or(plan.state_hash);
        let record = AccountRecord {
            id: done.address.to_string(),
            owner: done
                .record
                .as_ref()
                .map(|r| base58(&r.owner))
                .unwrap_or_else(|| request.owner.clone()),
            capabilities: request.capabilities.clone(),
            state_hash: hex::encode(state_hash),
            is_active: done.record.as_ref().is_none_or(|r| r.is_active),
            created_at_ms: done
                .record
                .as_ref()
                .map(|r| r.created_at.saturating_mul(1000))
                .unwrap_or_else(crate::store::now_ms),
            request_id: request.id.clone(),
            slot,
            signature: signature.to_string(),
        };
        let stored = self
            .retry
            .run(
                "recording an account",
                || self.store.upsert_account(&record),
                |_| true,
            )
            .await;
        if let Err(e) = stored {
            // The account exists on chain; the next start finds it there
            // and records it then.
            tracing::error!(account = %record.id, error = %e, "recording the initialized account failed");
            return;
        }
        self.count(if sent {
            "initialized"
        } else {
            "already_initialized"
        });
        self.metrics
            .account_initialization_duration
            .observe(started.elapsed().as_secs_f64());
        self.clock.verified(&request.id, &self.metrics);
        tracing::info!(account = %record.id, %signature, sent, "account initialized");
    }

    /// The transaction that created an account found already there: the
    /// chain says which, whatever was noted (an earlier attempt may have
    /// landed after a later one was noted). None if the chain cannot tell.
    async fn creator(&self, address: &Pubkey) -> Option<String> {
        match self.chain.creating_signature(address).await {
            Ok(signature) => signature.map(|s| s.to_string()),
            Err(e) => {
                tracing::debug!(error = %e, "looking up the creating transaction failed");
                None
            }
        }
    }

    /// The slot of the transaction that initialized the account, so its
    /// step and event carry it whoever records them first (None when the
    /// chain cannot tell; the monitor's observation fills it in then).
    async fn landed_in(&self, signature: &str) -> Option<u64> {
        let signature = signature.parse().ok()?;
        match self.chain.transaction_slot(&signature).await {
            Ok(slot) => slot,
            Err(e) => {
                tracing::debug!(error = %e, "looking up the initializing transaction's slot failed");
                None
            }
        }
    }

    async fn park(&self, request: &ClaimedRequest, attempts: u32, reason: &str) {
        self.clock.forget(&request.id);
        self.record_failure(request, attempts, reason, true).await
    }

    async fn record_failure(
        &self,
        request: &ClaimedRequest,
        attempts: u32,
        reason: &str,
        parked: bool,
    ) {
        let failure = AttemptFailure {
            id: &request.id,
            attempts,
            reason,
            parked,
        };
        if let Err(e) = self.store.record_attempt_failure(&failure).await {
            tracing::error!(error = %e, "recording a failed attempt failed");
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .builder_attempts
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// What `account` at the planned address means for the plan.
fn check_existing(plan: &Plan, account: &Account, rent: u64) -> Result<Existing, Failure> {
    let conflict =
        |what: String| Failure::Permanent(format!("address_conflict: {} {what}", plan.address));
    if account.owner != plan.program {
        return Err(conflict(format!(
            "is owned by {}, not the shard program",
            account.owner
        )));
    }
    if account.data.len() != plan.space {
        return Err(conflict(format!(
            "has {} bytes, {} expected",
            account.data.len(),
            plan.space
        )));
    }
    if account.lamports < rent {
        return Err(conflict(format!(
            "holds {} lamports, below the {rent} that make it rent-exempt",
            account.lamports
        )));
    }
    if account.data.iter().all(|b| *b == 0) {
        return Ok(Existing::Created);
    }
    match Record::decode(&account.data) {
        Ok(Record::Account(record)) if record.id == plan.address.to_bytes() => {
            if record.state_hash != plan.state_hash {
                return Err(conflict(format!(
                    "holds state hash {}, {} expected",
                    hex::encode(record.state_hash),
                    hex::encode(plan.state_hash)
                )));
            }
            Ok(Existing::Initialized(record))
        }
        _ => Err(conflict(
            "holds data that is not this request's Account record".into(),
        )),
    }
}
