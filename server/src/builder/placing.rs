//! RequestAccount: the server places an account request on chain for a
//! client (the shard program's `request_account`, paid by the service
//! wallet) and queues it, so the client needs no Solana tooling.

use rand::Rng as _;
use solana_sdk::{
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
    signature::Signer as _,
};
use valence_lifecycle_api::{
    initial_state::InitialState,
    v1::{AccountRequest, RequestAccountRequest},
};

use super::plan::{derive_seed, request_space, seeded_address};
use crate::{
    chain::{codec, Chain},
    error::{ApiError, ApiResult},
    store::{now_ms, AccountRequestRecord, Store},
    validate,
};

/// Most capabilities per request.
pub const MAX_CAPABILITIES: usize = 16;
/// Longest capability name.
pub const MAX_CAPABILITY_LEN: usize = 32;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 64;

/// A validated RequestAccount call.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Future owner.
    pub owner: Pubkey,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Expected state hash (computed when the caller sent none).
    pub init_state_hash: [u8; 32],
    /// Caller's idempotency key (may be empty).
    pub idempotency_key: String,
}

/// Checks a RequestAccount call; errors name the field.
pub fn validate(r: &RequestAccountRequest) -> ApiResult<NewRequest> {
    validate::pubkey("owner", &r.owner)?;
    if r.capabilities.len() > MAX_CAPABILITIES {
        return Err(ApiError::invalid(
            "capabilities",
            format!("{} given, at most {MAX_CAPABILITIES}", r.capabilities.len()),
        ));
    }
    for (i, capability) in r.capabilities.iter().enumerate() {
        validate::identifier(
            &format!("capabilities[{i}]"),
            capability,
            MAX_CAPABILITY_LEN,
        )?;
    }
    let init_state_hash = if r.init_state_hash.is_empty() {
        InitialState::for_capabilities(&r.capabilities).hash()
    } else {
        validate::hash_hex("init_state_hash", &r.init_state_hash)?
    };
    let key = &r.idempotency_key;
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_LEN} printable characters"),
        ));
    }
    Ok(NewRequest {
        owner: r.owner.parse().expect("validated above"),
        capabilities: r.capabilities.clone(),
        init_state_hash,
        idempotency_key: key.clone(),
    })
}

/// Places `new` on chain (unless its idempotency key was used before) and
/// records it; returns the stored request and the transaction's signature
/// (empty for a repeat).
pub async fn place(
    chain: &Chain,
    store: &Store,
    new: NewRequest,
) -> ApiResult<(AccountRequest, String)> {
    let wallet = chain
        .payer()
        .map_err(|e| ApiError::FailedPrecondition(e.to_string()))?;
    let seed = if new.idempotency_key.is_empty() {
        hex::encode(rand::rng().random::<[u8; 16]>())
    } else {
        derive_seed("valence-request:", new.idempotency_key.as_bytes())
    };
    let address = seeded_address(&wallet.pubkey(), &seed, &chain.program_id);
    let existing = chain
        .account(&address)
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading the chain: {e:#}")))?;
    if let Some(account) = existing {
        return repeat(store, &new, address, &account.data).await;
    }
    let signature = send(chain, &new, &seed, address).await?;
    store
        .upsert_account_request(&AccountRequestRecord {
            id: address.to_string(),
            owner: new.owner.to_string(),
            capabilities: new.capabilities.clone(),
            init_state_hash: hex::encode(new.init_state_hash),
            created_at_ms: now_ms(),
            slot: None,
        })
        .await?;
    Ok((
        store.get_account_request(&address.to_string()).await?,
        signature,
    ))
}

/// The shard program's `request_account`, in a new account at `address`.
async fn send(chain: &Chain, new: &NewRequest, seed: &str, address: Pubkey) -> ApiResult<String> {
    let wallet = chain
        .payer()
        .map_err(|e| ApiError::FailedPrecondition(e.to_string()))?;
    let space = request_space(&new.capabilities);
    let lamports = chain
        .rent_exempt(space)
        .await
        .map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
    let create = solana_system_interface::instruction::create_account_with_seed(
        &wallet.pubkey(),
        &address,
        &wallet.pubkey(),
        seed,
        lamports,
        space as u64,
        &chain.program_id,
    );
    let args = (
        new.owner.to_bytes(),
        new.capabilities.clone(),
        new.init_state_hash,
    );
    let request = Instruction {
        program_id: chain.program_id,
        accounts: vec![AccountMeta::new(address, false)],
        data: codec::instruction_data("request_account", &args),
    };
    let signature = chain.send(&[create, request], &[]).await.map_err(|e| {
        ApiError::Unavailable(format!("the request_account transaction failed: {e:#}"))
    })?;
    Ok(signature.to_string())
}

/// An idempotent repeat: the request placed the first time.
async fn repeat(
    store: &Store,
    new: &NewRequest,
    address: Pubkey,
    data: &[u8],
) -> ApiResult<(AccountRequest, String)> {
    let Ok(codec::Record::AccountRequest(record)) = codec::Record::decode(data) else {
        return Err(ApiError::FailedPrecondition(format!(
            "idempotency_key {:?} maps to {address}, which holds no account request",
            new.idempotency_key
        )));
    };
    if record.owner != new.owner.to_bytes() || record.capabilities != new.capabilities {
        return Err(ApiError::invalid(
            "idempotency_key",
            format!(
                "{:?} was used for a different request ({address})",
                new.idempotency_key
            ),
        ));
    }
    store
        .upsert_account_request(&AccountRequestRecord {
            id: address.to_string(),
            owner: codec::base58(&record.owner),
            capabilities: record.capabilities,
            init_state_hash: hex::encode(record.init_state_hash),
            created_at_ms: record.created_at.saturating_mul(1000),
            slot: None,
        })
        .await?;
    Ok((
        store.get_account_request(&address.to_string()).await?,
        String::new(),
    ))
}
