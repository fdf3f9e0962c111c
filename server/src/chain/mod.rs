//! The chain adapter: one place that owns the Solana RPC connection, the
//! commitment level, a timeout on every call and retries with backoff
//! (seed 001), plus the shard program's codecs, resilient websocket
//! subscriptions and the embedded local network.

pub mod address;
pub mod checks;
pub mod codec;
pub mod dev;
#[cfg(feature = "embedded-chain")]
pub mod embedded;
pub mod factory;
pub mod logs;
pub mod pubsub;
pub mod retry;
pub mod tx;
pub mod wallet;

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::{anyhow, Context as _};
use solana_client::{
    nonblocking::rpc_client::RpcClient,
    rpc_client::GetConfirmedSignaturesForAddress2Config,
    rpc_config::{RpcAccountInfoConfig, RpcProgramAccountsConfig, UiAccountEncoding},
    rpc_filter::{Memcmp, RpcFilterType},
};
use solana_commitment_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;

pub use retry::RetryPolicy;

use crate::config::Config;

/// Where the chain is and how to talk to it.
#[derive(Clone)]
pub struct Chain {
    rpc: Arc<RpcClient>,
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Websocket URL.
    pub ws_url: String,
    /// The shard program.
    pub program_id: Pubkey,
    /// Commitment for reads and subscriptions.
    pub commitment: CommitmentConfig,
    /// Retry policy for RPC calls.
    pub retry: RetryPolicy,
    /// Whether this is the embedded local network.
    pub embedded: bool,
    /// The service wallet, when one is configured (or generated on the
    /// embedded network).
    pub wallet: Option<Arc<solana_sdk::signature::Keypair>>,
    /// Rent-exempt minimums by account size, with when each was read (see
    /// `Chain::rent_exempt`).
    rent: Arc<std::sync::Mutex<std::collections::HashMap<usize, (std::time::Instant, u64)>>>,
}

/// Parses `processed`/`confirmed`/`finalized` (validated in config).
pub fn commitment(name: &str) -> CommitmentConfig {
    CommitmentConfig::from_str(name).unwrap_or_else(|_| CommitmentConfig::confirmed())
}

/// `http://host:8899` -> `ws://host:8900`: Solana's convention of the
/// websocket on the next port.
pub fn derive_ws_url(rpc_url: &str) -> String {
    let ws = rpc_url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let Some((head, port_and_path)) = ws.rsplit_once(':') else {
        return ws;
    };
    let digits: String = port_and_path
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    match digits.parse::<u16>() {
        Ok(port) if !head.ends_with("/") && !head.ends_with(":") => {
            format!("{head}:{}{}", port + 1, &port_and_path[digits.len()..])
        }
        _ => ws,
    }
}

impl Chain {
    /// A chain at `rpc_url`/`ws_url` watching `program_id`.
    pub fn new(
        config: &Config,
        rpc_url: String,
        ws_url: String,
        program_id: Pubkey,
        embedded: bool,
    ) -> Chain {
        let commitment = commitment(&config.rpc.commitment);
        let timeout = Duration::from_secs(config.rpc.timeout_secs);
        let rpc = RpcClient::new_with_timeout_and_commitment(rpc_url.clone(), timeout, commitment);
        Chain {
            rpc: Arc::new(rpc),
            rpc_url,
            ws_url,
            program_id,
            commitment,
            retry: RetryPolicy::from(&config.retry),
            embedded,
            wallet: None,
            rent: Arc::default(),
        }
    }

    /// The same cluster, connection and wallet, watching `program` (one
    /// shard program of several).
    pub fn for_program(&self, program: Pubkey) -> Chain {
        Chain {
            program_id: program,
            ..self.clone()
        }
    }

    /// Sets the service wallet.
    pub fn with_wallet(mut self, wallet: solana_sdk::signature::Keypair) -> Chain {
        self.wallet = Some(Arc::new(wallet));
        self
    }

    /// The RPC client (for callers that build their own requests).
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// Current slot at our commitment, with retries.
    pub async fn slot(&self) -> anyhow::Result<u64> {
        self.retry
            .run(
                "getSlot",
                || self.rpc.get_slot_with_commitment(self.commitment),
                |_| true,
            )
            .await
            .context("getSlot")
    }

    /// Current slot, one attempt: for health probes, which must answer fast.
    pub async fn probe_slot(&self) -> anyhow::Result<u64> {
        Ok(self.rpc.get_slot_with_commitment(self.commitment).await?)
    }

    /// Balance of `key` in lamports.
    pub async fn balance(&self, key: &Pubkey) -> anyhow::Result<u64> {
        Ok(self
            .rpc
            .get_balance_with_commitment(key, self.commitment)
            .await?
            .value)
    }

    /// Every account of the shard program whose data starts with one of
    /// `discriminators`, with the slot read just before the scan (the data
    /// is at least that fresh).
    pub async fn program_accounts(
        &self,
        discriminators: &[[u8; 8]],
    ) -> anyhow::Result<(u64, Vec<(Pubkey, Vec<u8>)>)> {
        let slot = self.slot().await?;
        let mut out = Vec::new();
        for disc in discriminators {
            let config = RpcProgramAccountsConfig {
                filters: Some(vec![RpcFilterType::Memcmp(Memcmp::new_raw_bytes(
                    0,
                    disc.to_vec(),
                ))]),
                account_config: RpcAccountInfoConfig {
                    encoding: Some(UiAccountEncoding::Base64),
                    commitment: Some(self.commitment),
                    ..Default::default()
                },
                with_context: None,
                sort_results: None,
            };
            let accounts = self
                .retry
                .run(
                    "getProgramAccounts",
                    || {
                        self.rpc
                            .get_program_ui_accounts_with_config(&self.program_id, config.clone())
                    },
                    |_| true,
                )
                .await
                .context("getProgramAccounts")?;
            for (key, account) in accounts {
                let data = account
                    .data
                    .decode()
                    .ok_or_else(|| anyhow!("account {key} data is not base64"))?;
                out.push((key, data));
            }
        }
        Ok((slot, out))
    }

    /// Data of the given accounts (None where an account does not exist).
    pub async fn accounts(&self, keys: &[Pubkey]) -> anyhow::Result<(u64, Vec<Option<Vec<u8>>>)> {
        let response = self
            .retry
            .run(
                "getMultipleAccounts",
                || {
                    self.rpc
                        .get_multiple_accounts_with_commitment(keys, self.commitment)
                },
                |_| true,
            )
            .await
            .context("getMultipleAccounts")?;
        let data = response
            .value
            .into_iter()
            .map(|a| a.map(|a| a.data))
            .collect();
        Ok((response.context.slot, data))
    }
}

/// A transaction of the shard program, as getSignaturesForAddress lists it.
#[derive(Debug, Clone)]
pub struct ProgramTransaction {
    /// Base58 signature.
    pub signature: String,
    /// Its slot.
    pub slot: u64,
    /// Whether it failed.
    pub failed: bool,
}

impl Chain {
    /// Transactions that mention the program, newer than `until` (or the
    /// newest `limit` when there is no `until`), oldest first. Pages back
    /// through at most `max_pages` pages of `limit`.
    pub async fn transactions_since(
        &self,
        until: Option<&str>,
        limit: usize,
        max_pages: usize,
    ) -> anyhow::Result<Vec<ProgramTransaction>> {
        let until = until
            .map(|s| s.parse())
            .transpose()
            .context("backfill cursor")?;
        let mut before = None;
        let mut out = Vec::new();
        for _ in 0..max_pages {
            // The config is not Clone; build one per attempt.
            let config = || GetConfirmedSignaturesForAddress2Config {
                before,
                until,
                limit: Some(limit),
                commitment: Some(self.commitment),
            };
            let page = self
                .retry
                .run(
                    "getSignaturesForAddress",
                    || {
                        self.rpc
                            .get_signatures_for_address_with_config(&self.program_id, config())
                    },
                    |_| true,
                )
                .await
                .context("getSignaturesForAddress")?;
            let full = page.len() == limit;
            before = page.last().and_then(|t| t.signature.parse().ok());
            out.extend(page.into_iter().map(|t| ProgramTransaction {
                signature: t.signature,
                slot: t.slot,
                failed: t.err.is_some(),
            }));
            if !full || until.is_none() {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_is_the_next_port() {
        assert_eq!(
            derive_ws_url("http://localhost:8899"),
            "ws://localhost:8900"
        );
        assert_eq!(
            derive_ws_url("https://rpc.example.com:443/key"),
            "wss://rpc.example.com:444/key"
        );
        assert_eq!(
            derive_ws_url("https://api.mainnet-beta.solana.com"),
            "wss://api.mainnet-beta.solana.com"
        );
    }
}
