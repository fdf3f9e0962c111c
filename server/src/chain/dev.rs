//! Developer tools for a local network: put shard-program records on the
//! embedded Surfnet with its `surfnet_setAccount` cheatcode, so a newcomer
//! can watch the monitor react (`valence-lifecycle dev …`).

use anyhow::{bail, Context as _};
use solana_client::{nonblocking::rpc_client::RpcClient, rpc_request::RpcRequest};
use solana_sdk::pubkey::Pubkey;
use valence_lifecycle_api::v1::{
    lifecycle_service_client::LifecycleServiceClient, ChainInfo, GetStatsRequest,
};

use super::codec::{AccountRecord, AccountRequestRecord, Record, SessionRecord};

/// Lamports given to placed accounts (enough to be rent-exempt at these sizes).
const LAMPORTS: u64 = 10_000_000;

/// Asks the running server which chain it watches; refuses anything but
/// its embedded network (cheatcodes exist only there).
pub async fn embedded_chain(endpoint: &str) -> anyhow::Result<ChainInfo> {
    let mut client = LifecycleServiceClient::connect(endpoint.to_string())
        .await
        .with_context(|| format!("connecting to the server at {endpoint}"))?;
    let stats = client
        .get_stats(GetStatsRequest {})
        .await
        .context("GetStats")?
        .into_inner();
    let Some(chain) = stats.chain else {
        bail!("the server at {endpoint} watches no chain")
    };
    if !chain.embedded {
        bail!("the server watches {}, not its embedded network; dev commands only write to the embedded one", chain.rpc_url);
    }
    Ok(chain)
}

/// Writes `record` at a new address owned by the shard program; returns the address.
pub async fn place(
    chain: &ChainInfo,
    record: impl FnOnce(Pubkey) -> Record,
) -> anyhow::Result<Pubkey> {
    let key = random_key();
    let program: Pubkey = chain.shard_program_id.parse().context("shard program id")?;
    let data = record(key).encode();
    let params = serde_json::json!([
        key.to_string(),
        { "lamports": LAMPORTS, "data": hex::encode(&data), "owner": program.to_string() }
    ]);
    RpcClient::new(chain.rpc_url.clone())
        .send::<serde_json::Value>(
            RpcRequest::Custom {
                method: "surfnet_setAccount",
            },
            params,
        )
        .await
        .context("surfnet_setAccount")?;
    Ok(key)
}

/// An AccountRequest record.
pub fn account_request(
    key: Pubkey,
    owner: Pubkey,
    capabilities: Vec<String>,
    init_state_hash: [u8; 32],
) -> Record {
    Record::AccountRequest(AccountRequestRecord {
        id: key.to_bytes(),
        owner: owner.to_bytes(),
        capabilities,
        init_state_hash,
        created_at: now_secs(),
        account: [0; 32],
    })
}

/// An initialized Account record (what `initialize_account` writes).
pub fn account(key: Pubkey, owner: Pubkey, capabilities: Vec<String>) -> Record {
    Record::Account(AccountRecord {
        id: key.to_bytes(),
        owner: owner.to_bytes(),
        capabilities,
        state_hash: [0; 32],
        is_active: true,
        created_at: now_secs(),
    })
}

/// A live Session record.
pub fn session(
    key: Pubkey,
    owner: Pubkey,
    accounts: &[Pubkey],
    namespace: String,
    nonce: u64,
) -> Record {
    Record::Session(SessionRecord {
        id: key.to_bytes(),
        owner: owner.to_bytes(),
        accounts: accounts.iter().map(|a| a.to_bytes()).collect(),
        namespace,
        is_consumed: false,
        nonce,
        created_at: now_secs(),
        metadata: Vec::new(),
    })
}

fn now_secs() -> i64 {
    crate::store::now_ms() / 1000
}

/// A fresh random address. (`Pubkey::new_unique` counts from the same
/// start in every process, so two dev commands would collide.)
pub fn random_key() -> Pubkey {
    Pubkey::new_from_array(rand::random())
}
