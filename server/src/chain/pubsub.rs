//! Websocket subscriptions that heal: programSubscribe (account changes of
//! the shard program) and logsSubscribe (its transactions' logs, carrying
//! its events). Each runs in its own task, reconnects with backoff when
//! the connection fails or ends, reports its state through [`FeedStatus`]
//! (the supervisor's status board, wired in by the monitor; the chain
//! adapter does not know the board), and hands what it receives to the
//! monitor through a bounded channel.
//!
//! Nothing received only here is lost when a connection drops: the
//! monitor's periodic reconciliation reads the program's accounts again.

use std::{future::Future, sync::Arc, time::Duration};

use futures::StreamExt as _;
use solana_client::{
    nonblocking::pubsub_client::PubsubClient,
    rpc_config::{
        RpcAccountInfoConfig, RpcProgramAccountsConfig, RpcTransactionLogsConfig,
        RpcTransactionLogsFilter, UiAccountEncoding,
    },
};
use solana_sdk::pubkey::Pubkey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use valence_lifecycle_api::v1::ComponentState;

use super::Chain;

/// Where a feed reports the state of its connection.
pub trait FeedStatus: Send + Sync + 'static {
    /// The feed exists (before its first connection).
    fn register(&self, feed: &str);
    /// The feed's connection is in `state` now.
    fn report(
        &self,
        feed: &str,
        state: ComponentState,
        message: String,
    ) -> impl Future<Output = ()> + Send;
    /// The connection failed; the feed reconnects after `delay`
    /// (`failures` in a row so far).
    fn reconnecting(
        &self,
        feed: &str,
        failures: u32,
        delay: Duration,
        why: &str,
    ) -> impl Future<Output = ()> + Send;
    /// The feed is subscribed again.
    fn reconnected(&self, feed: &str, message: &str) -> impl Future<Output = ()> + Send;
}

/// Something the chain told us.
#[derive(Debug, Clone)]
pub enum Update {
    /// An account of the shard program, as it is now.
    Account {
        /// Its address.
        key: Pubkey,
        /// Its data.
        data: Vec<u8>,
        /// Slot of the notification.
        slot: u64,
    },
    /// A transaction that mentions the shard program.
    Logs {
        /// Base58 signature.
        signature: String,
        /// Slot.
        slot: u64,
        /// Log lines.
        logs: Vec<String>,
        /// Whether the transaction failed (its events must be ignored).
        failed: bool,
        /// When the notification arrived, Unix ms: the confirmation time
        /// seed 001's deadlines are measured from.
        received_at_ms: i64,
    },
}

/// Which subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// programSubscribe.
    Accounts,
    /// logsSubscribe.
    Logs,
}

impl Feed {
    /// Every feed.
    pub const ALL: [Feed; 2] = [Feed::Accounts, Feed::Logs];

    /// Status board name.
    pub fn component(self) -> &'static str {
        match self {
            Feed::Accounts => "chain-accounts-ws",
            Feed::Logs => "chain-logs-ws",
        }
    }
}

/// How long a connect or subscribe may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest pause between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Keeps `feed` subscribed until `cancel` fires.
pub async fn run<S: FeedStatus>(
    chain: Chain,
    feed: Feed,
    name: String,
    out: mpsc::Sender<Update>,
    board: Arc<S>,
    cancel: CancellationToken,
) {
    let name = name.as_str();
    board.register(name);
    let mut failures = 0u32;
    while !cancel.is_cancelled() {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => break,
            r = session(&chain, feed, name, &out, board.as_ref()) => r,
        };
        let message = match outcome {
            Ok(()) => "the subscription ended".to_string(),
            Err(e) => format!("{e:#}"),
        };
        failures += 1;
        let delay = chain.retry.delay(failures).min(MAX_BACKOFF);
        tracing::warn!(feed = name, error = %message, delay_ms = delay.as_millis() as u64, "websocket down; reconnecting");
        board
            .report(
                name,
                ComponentState::Degraded,
                format!("reconnecting: {message}"),
            )
            .await;
        board.reconnecting(name, failures, delay, &message).await;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    board
        .report(name, ComponentState::Stopped, String::new())
        .await;
}

/// One connection: connect, subscribe, forward until it breaks.
async fn session(
    chain: &Chain,
    feed: Feed,
    name: &str,
    out: &mpsc::Sender<Update>,
    board: &impl FeedStatus,
) -> anyhow::Result<()> {
    let client = tokio::time::timeout(CONNECT_TIMEOUT, PubsubClient::new(chain.ws_url.as_str()))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {} timed out", chain.ws_url))??;
    let result = match feed {
        Feed::Accounts => accounts(chain, &client, name, out, board).await,
        Feed::Logs => logs(chain, &client, name, out, board).await,
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), client.shutdown()).await;
    result
}

async fn accounts(
    chain: &Chain,
    client: &PubsubClient,
    name: &str,
    out: &mpsc::Sender<Update>,
    board: &impl FeedStatus,
) -> anyhow::Result<()> {
    let config = RpcProgramAccountsConfig {
        filters: None,
        account_config: RpcAccountInfoConfig {
            encoding: Some(UiAccountEncoding::Base64),
            commitment: Some(chain.commitment),
            ..Default::default()
        },
        with_context: None,
        sort_results: None,
    };
    let (mut stream, unsubscribe) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.program_subscribe(&chain.program_id, Some(config)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("programSubscribe timed out"))??;
    board.reconnected(name, "subscribed").await;
    while let Some(notification) = stream.next().await {
        let slot = notification.context.slot;
        let keyed = notification.value;
        let (Ok(key), Some(data)) = (keyed.pubkey.parse::<Pubkey>(), keyed.account.data.decode())
        else {
            tracing::warn!(account = %keyed.pubkey, "undecodable account notification");
            continue;
        };
        if out.send(Update::Account { key, data, slot }).await.is_err() {
            break;
        }
    }
    drop(stream);
    let _ = tokio::time::timeout(Duration::from_secs(2), unsubscribe()).await;
    Ok(())
}

async fn logs(
    chain: &Chain,
    client: &PubsubClient,
    name: &str,
    out: &mpsc::Sender<Update>,
    board: &impl FeedStatus,
) -> anyhow::Result<()> {
    let filter = RpcTransactionLogsFilter::Mentions(vec![chain.program_id.to_string()]);
    let config = RpcTransactionLogsConfig {
        commitment: Some(chain.commitment),
    };
    let (mut stream, unsubscribe) =
        tokio::time::timeout(CONNECT_TIMEOUT, client.logs_subscribe(filter, config))
            .await
            .map_err(|_| anyhow::anyhow!("logsSubscribe timed out"))??;
    board.reconnected(name, "subscribed").await;
    while let Some(notification) = stream.next().await {
        let value = notification.value;
        let update = Update::Logs {
            signature: value.signature,
            slot: notification.context.slot,
            logs: value.logs,
            failed: value.err.is_some(),
            received_at_ms: crate::store::now_ms(),
        };
        if out.send(update).await.is_err() {
            break;
        }
    }
    drop(stream);
    let _ = tokio::time::timeout(Duration::from_secs(2), unsubscribe()).await;
    Ok(())
}
