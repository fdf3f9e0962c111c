//! Resource health checks of the chain (seed 004's `add_health_check`):
//! the RPC endpoint answers, and the service wallet can pay (seed 001's
//! minimum balance). They run on every replica, leader or not, in the
//! background; health endpoints read their last result.

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use solana_sdk::signature::Signer as _;

use super::Chain;
use crate::{supervisor::health::Check, telemetry::Metrics};

/// Board name of the RPC check.
pub const RPC_CHECK: &str = "chain-rpc";
/// Board name of the wallet check.
pub const WALLET_CHECK: &str = "chain-wallet";

/// `getSlot` answers (one attempt, no retries: a probe must be quick).
pub fn rpc(chain: &Chain, metrics: &Arc<Metrics>, every: Duration, timeout: Duration) -> Check {
    let (chain, metrics) = (chain.clone(), metrics.clone());
    Check {
        name: RPC_CHECK.into(),
        every,
        timeout,
        probe: Arc::new(move || {
            let (chain, metrics) = (chain.clone(), metrics.clone());
            Box::pin(async move {
                // A probe that times out is dropped before this line, so
                // mark the connection down first and up once it answered.
                metrics.rpc_connection_status.set(0);
                chain.probe_slot().await?;
                metrics.rpc_connection_status.set(1);
                Ok(())
            })
        }),
        on_change: None,
    }
}

/// The wallet's balance as a metric, and a failure below `min_lamports`.
/// None without a wallet.
pub fn wallet(
    chain: &Chain,
    metrics: &Arc<Metrics>,
    min_lamports: u64,
    every: Duration,
    timeout: Duration,
) -> Option<Check> {
    let key = chain.wallet.as_ref()?.pubkey();
    let (chain, metrics) = (chain.clone(), metrics.clone());
    Some(Check {
        name: WALLET_CHECK.into(),
        every,
        timeout,
        probe: Arc::new(move || {
            let (chain, metrics) = (chain.clone(), metrics.clone());
            Box::pin(async move {
                let balance = chain.balance(&key).await?;
                metrics.wallet_balance_lamports.set(balance);
                if balance < min_lamports {
                    bail!("balance {balance} lamports is below {min_lamports}");
                }
                Ok(())
            })
        }),
        on_change: None,
    })
}
