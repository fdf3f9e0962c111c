//! Sending transactions: one place that signs with the service wallet,
//! takes a fresh blockhash per attempt and waits for confirmation at the
//! configured commitment within a bound. Callers (the builder, singleton
//! administration, the orchestrator) decide whether and when to retry.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use solana_sdk::{
    account::Account,
    instruction::Instruction,
    pubkey::Pubkey,
    signature::{Keypair, Signature, Signer as _},
    transaction::Transaction,
};

use super::Chain;

/// How long a sent transaction may take to confirm. A blockhash expires
/// after about 150 slots (~60-90 s); past that the transaction can no longer
/// land, so waiting longer only delays the retry.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a rent-exempt minimum is reused.
const RENT_FRESH: Duration = Duration::from_secs(600);

impl Chain {
    /// The service wallet, or an error naming the setting that provides it.
    pub fn payer(&self) -> anyhow::Result<&Keypair> {
        self.wallet.as_deref().ok_or_else(|| {
            anyhow!("no service wallet is configured (service.keypair_path / WALLET_PATH)")
        })
    }

    /// Signs `instructions` with the service wallet (fee payer) and
    /// `signers`, sends them with a fresh blockhash and waits for
    /// confirmation. One attempt.
    pub async fn send(
        &self,
        instructions: &[Instruction],
        signers: &[&Keypair],
    ) -> anyhow::Result<Signature> {
        let tx = self.sign(instructions, signers).await?;
        self.submit(&tx).await
    }

    /// A transaction of `instructions` signed by the service wallet (fee
    /// payer) and `signers`, with a fresh blockhash. Its signature is known
    /// before it is sent, so callers can note it first.
    pub async fn sign(
        &self,
        instructions: &[Instruction],
        signers: &[&Keypair],
    ) -> anyhow::Result<Transaction> {
        let blockhash = self.latest_blockhash().await?;
        self.sign_with(blockhash, instructions, signers)
    }

    /// The cluster's latest blockhash (one attempt), for [`Self::sign_with`]:
    /// a caller can fetch it alongside its other reads.
    pub async fn latest_blockhash(&self) -> anyhow::Result<solana_sdk::hash::Hash> {
        self.rpc
            .get_latest_blockhash()
            .await
            .context("getLatestBlockhash")
    }

    /// [`Self::sign`] with a blockhash the caller fetched just before.
    pub fn sign_with(
        &self,
        blockhash: solana_sdk::hash::Hash,
        instructions: &[Instruction],
        signers: &[&Keypair],
    ) -> anyhow::Result<Transaction> {
        let payer = self.payer()?;
        let mut all: Vec<&Keypair> = vec![payer];
        all.extend_from_slice(signers);
        Ok(Transaction::new_signed_with_payer(
            instructions,
            Some(&payer.pubkey()),
            &all,
            blockhash,
        ))
    }

    /// Sends a signed transaction and waits for confirmation at our
    /// commitment, at most [`CONFIRM_TIMEOUT`].
    pub async fn submit(&self, tx: &Transaction) -> anyhow::Result<Signature> {
        // The client was built with our commitment, which this waits for.
        let confirm = self.rpc.send_and_confirm_transaction(tx);
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(result) => result.map_err(|e| anyhow!("{e}")),
            Err(_) => Err(anyhow!(
                "transaction {} not confirmed within {CONFIRM_TIMEOUT:?}",
                tx.signatures[0]
            )),
        }
    }

    /// The account at `key` (None when it does not exist), one attempt.
    pub async fn account(&self, key: &Pubkey) -> anyhow::Result<Option<Account>> {
        Ok(self
            .rpc
            .get_account_with_commitment(key, self.commitment)
            .await
            .with_context(|| format!("getAccountInfo {key}"))?
            .value)
    }

    /// The oldest successful transaction that touched `key` (for a fresh
    /// account: the one that created it), from the newest page of its
    /// history. One attempt; None when there is none.
    pub async fn creating_signature(&self, key: &Pubkey) -> anyhow::Result<Option<Signature>> {
        Ok(self
            .creating_transaction(key)
            .await?
            .map(|(signature, _)| signature))
    }

    /// [`Self::creating_signature`] with the slot it landed in.
    pub async fn creating_transaction(
        &self,
        key: &Pubkey,
    ) -> anyhow::Result<Option<(Signature, u64)>> {
        let page = self
            .rpc
            .get_signatures_for_address(key)
            .await
            .with_context(|| format!("getSignaturesForAddress {key}"))?;
        Ok(page
            .iter()
            .rev()
            .find(|s| s.err.is_none())
            .and_then(|s| Some((s.signature.parse().ok()?, s.slot))))
    }

    /// The slot `signature` landed in (None: unknown to the node). The
    /// slot of the transaction itself, for records that a transaction
    /// backs: not the slot of whatever call happened to observe it.
    pub async fn transaction_slot(&self, signature: &Signature) -> anyhow::Result<Option<u64>> {
        let statuses = self
            .rpc
            .get_signature_statuses_with_history(&[*signature])
            .await
            .with_context(|| format!("getSignatureStatuses {signature}"))?;
        Ok(statuses.value.into_iter().next().flatten().map(|s| s.slot))
    }

    /// Lamports that make an account of `space` bytes rent-exempt.
    pub async fn rent_exempt(&self, space: usize) -> anyhow::Result<u64> {
        if let Some(lamports) = self.known_rent(space) {
            return Ok(lamports);
        }
        let lamports = self
            .retry
            .run(
                "getMinimumBalanceForRentExemption",
                || self.rpc.get_minimum_balance_for_rent_exemption(space),
                |_| true,
            )
            .await
            .context("getMinimumBalanceForRentExemption")?;
        let mut known = self.rent.lock().expect("rent lock");
        known.insert(space, (std::time::Instant::now(), lamports));
        Ok(lamports)
    }

    /// A rent-exempt minimum read less than [`RENT_FRESH`] ago. Rent only
    /// changes with a cluster's feature activations, and the builder asks
    /// once per account: one round trip of every attempt saved.
    fn known_rent(&self, space: usize) -> Option<u64> {
        let known = self.rent.lock().expect("rent lock");
        known
            .get(&space)
            .filter(|(read, _)| read.elapsed() < RENT_FRESH)
            .map(|(_, lamports)| *lamports)
    }
}
