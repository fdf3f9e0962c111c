//! RequestAccount: the server places an account request on chain for a
//! client (the shard program's `request_account`, paid by the service
//! wallet), so the client needs no Solana tooling. Placing writes nothing
//! to the store: the leader's monitor records the request when it sees it
//! on chain, like any other request (one writer per record kind).

use rand::Rng as _;
use solana_sdk::{
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
    signature::Signer as _,
};
use valence_lifecycle_api::{initial_state::InitialState, v1::RequestAccountRequest};

use super::plan::request_space;
use crate::{
    chain::{
        address::{derive_seed, seeded_address},
        codec, Chain,
    },
    error::{ApiError, ApiResult},
    store::{now_ms, RequestStatus, StoredRequest},
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

/// A request placed on chain (not yet recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The request as it stands on chain.
    pub request: StoredRequest,
    /// Signature of the placing transaction; empty for a repeat.
    pub signature: String,
}

/// Places `new` on chain, unless its idempotency key was used before (then
/// the request placed the first time answers).
pub async fn place(chain: &Chain, new: NewRequest) -> ApiResult<Placed> {
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
        let mut placed = repeat(&new, address, &account.data)?;
        placed.request.shard = chain.program_id.to_string();
        return Ok(placed);
    }
    let signature = send(chain, &new, &seed, address).await?;
    let mut request = pending_request(
        address,
        new.owner.to_string(),
        new.capabilities,
        new.init_state_hash,
        now_ms(),
    );
    request.shard = chain.program_id.to_string();
    Ok(Placed { request, signature })
}

/// A request as placed: pending, no attempt yet.
fn pending_request(
    address: Pubkey,
    owner: String,
    capabilities: Vec<String>,
    init_state_hash: [u8; 32],
    created_at_ms: i64,
) -> StoredRequest {
    StoredRequest {
        id: address.to_string(),
        owner,
        capabilities,
        init_state_hash: hex::encode(init_state_hash),
        status: RequestStatus::Pending,
        failure_reason: String::new(),
        attempts: 0,
        created_at_ms,
        updated_at_ms: created_at_ms,
        signature: String::new(),
        account_id: String::new(),
        shard: String::new(),
    }
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

/// An idempotent repeat: the request placed the first time, as it stands
/// on chain.
fn repeat(new: &NewRequest, address: Pubkey, data: &[u8]) -> ApiResult<Placed> {
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
    let request = pending_request(
        address,
        codec::base58(&record.owner),
        record.capabilities,
        record.init_state_hash,
        record.created_at.saturating_mul(1000),
    );
    Ok(Placed {
        request,
        signature: String::new(),
    })
}
