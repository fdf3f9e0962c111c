//! Deterministic addresses of accounts created with
//! `create_account_with_seed`: the builder's accounts, the requests placed
//! for clients and the orchestrator's consumption records all derive their
//! seed from what they are for, so a restart finds what an earlier run
//! created instead of creating it again.

use sha2::{Digest as _, Sha256};
use solana_sdk::pubkey::Pubkey;

/// Length of derived seeds: 32 hex characters (128 bits), the most
/// `create_account_with_seed` accepts.
const SEED_LEN: usize = 32;

/// A seed for `create_account_with_seed`: the first 32 hex characters of
/// sha256(`domain` ‖ `input`). Different domains keep request records and
/// accounts apart even for the same input.
pub fn derive_seed(domain: &str, input: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(domain.as_bytes())
        .chain_update(input)
        .finalize();
    hex::encode(digest)[..SEED_LEN].to_string()
}

/// The address `create_account_with_seed` gives `base` with `seed` for
/// `program`. Seeds from [`derive_seed`] are 32 ASCII characters, within
/// the limit, so derivation cannot fail.
pub fn seeded_address(base: &Pubkey, seed: &str, program: &Pubkey) -> Pubkey {
    Pubkey::create_with_seed(base, seed, program)
        .expect("a 32-character seed is within create_with_seed's limit")
}
