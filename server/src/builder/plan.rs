//! What the builder sends for one request: the account's deterministic
//! address, its size and the instructions. Pure functions, so the same
//! request always plans the same transaction (and a restart finds what an
//! earlier run created).

use solana_sdk::{
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
};
use valence_lifecycle_api::initial_state::InitialState;

use crate::chain::{
    address::{derive_seed, seeded_address},
    codec,
};

/// Size of a borsh `Vec<String>`.
fn strings_len(items: &[String]) -> usize {
    4 + items.iter().map(|s| 4 + s.len()).sum::<usize>()
}

/// Size of the shard program's Account record with these capabilities.
pub fn account_space(capabilities: &[String]) -> usize {
    8 + 32 + 32 + strings_len(capabilities) + 32 + 1 + 8
}

/// Size of the shard program's AccountRequest record with these capabilities.
pub fn request_space(capabilities: &[String]) -> usize {
    8 + 32 + 32 + strings_len(capabilities) + 32 + 8 + 32
}

/// Everything needed to initialize one requested account.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The AccountRequest record.
    pub request: Pubkey,
    /// The shard program (owner of the new account).
    pub program: Pubkey,
    /// The service wallet: pays, and is the base of the derived address.
    pub base: Pubkey,
    /// Seed of the derived address.
    pub seed: String,
    /// The new account's address.
    pub address: Pubkey,
    /// Its size.
    pub space: usize,
    /// Encoded initial state (`init_state_data` of initialize_account).
    pub state: Vec<u8>,
    /// sha256 of `state`.
    pub state_hash: [u8; 32],
}

impl Plan {
    /// Plans the account of `request` with `capabilities`.
    pub fn new(request: Pubkey, capabilities: &[String], program: Pubkey, base: Pubkey) -> Plan {
        let seed = derive_seed("valence-account:", request.as_ref());
        let address = seeded_address(&base, &seed, &program);
        let initial = InitialState::for_capabilities(capabilities);
        Plan {
            request,
            program,
            base,
            seed,
            address,
            space: account_space(capabilities),
            state: initial.encode(),
            state_hash: initial.hash(),
        }
    }

    /// Whether `expected` (hex, from the request) allows this state: empty
    /// or all zero means "no expectation", as in the shard program.
    pub fn hash_matches(&self, expected: &str) -> bool {
        let expected = expected.trim();
        expected.is_empty()
            || expected.bytes().all(|b| b == b'0')
            || expected.eq_ignore_ascii_case(&hex::encode(self.state_hash))
    }

    /// The instructions of one attempt: create the account (unless it
    /// already exists) and let the program write its Account record
    /// (unless `initialize` is off).
    pub fn instructions(&self, lamports: u64, create: bool, initialize: bool) -> Vec<Instruction> {
        let mut out = Vec::with_capacity(2);
        if create {
            out.push(
                solana_system_interface::instruction::create_account_with_seed(
                    &self.base,
                    &self.address,
                    &self.base,
                    &self.seed,
                    lamports,
                    self.space as u64,
                    &self.program,
                ),
            );
        }
        if initialize {
            out.push(self.initialize_instruction());
        }
        out
    }

    /// The shard program's `initialize_account(request_id, init_state_data)`.
    pub fn initialize_instruction(&self) -> Instruction {
        let args = (self.request.to_bytes(), self.state.clone());
        Instruction {
            program_id: self.program,
            accounts: vec![
                AccountMeta::new(self.address, false),
                // Writable: the program notes the account in the request.
                AccountMeta::new(self.request, false),
            ],
            data: codec::instruction_data("initialize_account", &args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_same_request_plans_the_same_address() {
        let (request, program, base) = (
            Pubkey::new_unique(),
            Pubkey::new_unique(),
            Pubkey::new_unique(),
        );
        let a = Plan::new(request, &caps(&["transfer"]), program, base);
        let b = Plan::new(request, &caps(&["transfer"]), program, base);
        assert_eq!(a.address, b.address);
        assert_eq!(a.seed.len(), 32);
        let other = Plan::new(Pubkey::new_unique(), &caps(&["transfer"]), program, base);
        assert_ne!(a.address, other.address);
    }

    #[test]
    fn space_matches_the_encoded_record() {
        let capabilities = caps(&["transfer", "mint"]);
        let record = codec::Record::Account(codec::AccountRecord {
            id: [1; 32],
            owner: [2; 32],
            capabilities: capabilities.clone(),
            state_hash: [3; 32],
            is_active: true,
            created_at: 5,
        });
        assert_eq!(record.encode().len(), account_space(&capabilities));
        let request = codec::Record::AccountRequest(codec::AccountRequestRecord {
            id: [1; 32],
            owner: [2; 32],
            capabilities: capabilities.clone(),
            init_state_hash: [0; 32],
            created_at: 5,
            account: [0; 32],
        });
        assert_eq!(request.encode().len(), request_space(&capabilities));
    }

    #[test]
    fn initialize_account_is_anchor_encoded() {
        let plan = Plan::new(
            Pubkey::new_from_array([9; 32]),
            &caps(&[]),
            Pubkey::new_unique(),
            Pubkey::new_unique(),
        );
        let ix = plan.initialize_instruction();
        // sha256("global:initialize_account")[..8], then borsh (Pubkey, Vec<u8>).
        assert_eq!(
            ix.data[..8],
            codec::discriminator("global", "initialize_account")
        );
        assert_eq!(ix.data[8..40], [9; 32]);
        assert_eq!(ix.data[40..44], (plan.state.len() as u32).to_le_bytes());
        assert_eq!(ix.data[44..], plan.state[..]);
        assert!(ix.accounts[0].is_writable && ix.accounts[1].is_writable);
    }

    #[test]
    fn zero_or_empty_hashes_expect_nothing() {
        let plan = Plan::new(
            Pubkey::new_unique(),
            &caps(&["admin"]),
            Pubkey::new_unique(),
            Pubkey::new_unique(),
        );
        assert!(plan.hash_matches(""));
        assert!(plan.hash_matches(&"0".repeat(64)));
        assert!(plan.hash_matches(&hex::encode(plan.state_hash).to_uppercase()));
        assert!(!plan.hash_matches(&"ab".repeat(32)));
    }
}
