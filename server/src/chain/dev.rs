//! Developer tools for a local network: put shard-program records on the
//! embedded Surfnet with its `surfnet_setAccount` cheatcode, so a newcomer
//! can watch the monitor react (`valence-lifecycle dev …`).

use anyhow::{bail, Context as _};
use solana_client::{nonblocking::rpc_client::RpcClient, rpc_request::RpcRequest};
use solana_sdk::{
    native_token::LAMPORTS_PER_SOL,
    pubkey::Pubkey,
    signature::{Keypair, Signer as _},
};
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
    let rpc = RpcClient::new(chain.rpc_url.clone());
    set_account(&rpc, &key, LAMPORTS, &record(key).encode(), &program).await?;
    Ok(key)
}

/// The `surfnet_setAccount` cheatcode.
async fn set_account(
    rpc: &RpcClient,
    key: &Pubkey,
    lamports: u64,
    data: &[u8],
    owner: &Pubkey,
) -> anyhow::Result<()> {
    let params = serde_json::json!([
        key.to_string(),
        { "lamports": lamports, "data": hex::encode(data), "owner": owner.to_string() }
    ]);
    rpc.send::<serde_json::Value>(
        RpcRequest::Custom {
            method: "surfnet_setAccount",
        },
        params,
    )
    .await
    .context("surfnet_setAccount")?;
    Ok(())
}

/// Seed 001's session factory, played once with real transactions (a fresh
/// payer funded by cheatcode): a queue; a session reserved, queued and
/// initialized from the queue; two initialized in one batch (process_queue,
/// events by self-CPI); one initialized by hand; one reset while queued.
/// Returns what became of each session.
pub async fn session_factory(chain: &ChainInfo) -> anyhow::Result<Vec<(&'static str, Pubkey)>> {
    use super::factory as fx;
    let program: Pubkey = chain.shard_program_id.parse().context("shard program id")?;
    let rpc = RpcClient::new_with_commitment(
        chain.rpc_url.clone(),
        solana_commitment_config::CommitmentConfig::confirmed(),
    );
    let payer = Keypair::new();
    let system = solana_system_interface::program::ID;
    set_account(&rpc, &payer.pubkey(), 100 * LAMPORTS_PER_SOL, &[], &system).await?;
    let tx = fx::Payer {
        rpc: &rpc,
        payer: &payer,
        program,
    };
    let queue = tx.fresh(fx::QUEUE_SPACE).await?;
    let init = fx::init_queue(&program, &queue.pubkey(), &payer.pubkey());
    tx.send(vec![init], &[]).await?;
    let queue = queue.pubkey();
    let reserve = async || -> anyhow::Result<Pubkey> {
        let session = tx.fresh(fx::reservation_space("factory")).await?;
        let ix = fx::reserve_session(
            &program,
            &session.pubkey(),
            &queue,
            &payer.pubkey(),
            "factory",
            600,
        );
        tx.send(vec![ix], &[]).await?;
        Ok(session.pubkey())
    };
    let (a, b, c, d, e) = (
        reserve().await?,
        reserve().await?,
        reserve().await?,
        reserve().await?,
        reserve().await?,
    );
    for s in [a, b, c, e] {
        tx.send(vec![fx::queue_session(&program, &s, &queue, 60)], &[])
            .await?;
    }
    tx.send(vec![fx::initialize_from_queue(&program, &a, &queue)], &[])
        .await?;
    tx.send(vec![fx::process_queue(&program, &queue, &[b, c])], &[])
        .await?;
    tx.send(
        vec![fx::manual_initialize(&program, &d, &queue, &payer.pubkey())],
        &[],
    )
    .await?;
    let reset = fx::emergency_reset(
        &program,
        &e,
        &queue,
        &payer.pubkey(),
        "demo: reset while queued",
    );
    tx.send(vec![reset], &[]).await?;
    Ok(vec![
        ("initialized from the queue", a),
        ("initialized in a batch", b),
        ("initialized in a batch", c),
        ("initialized by hand", d),
        ("reset while queued", e),
    ])
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
