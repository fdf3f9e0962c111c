//! Instructions of the singleton programs (Anchor encoding:
//! `sha256("global:<name>")[..8]` then borsh arguments) and the address of
//! each singleton's state account.
//!
//! Accounts of every singleton instruction: `[0]` the SingletonState
//! record (writable), `[1]` the authority (signer). The state account is
//! `create_with_seed(authority, "singleton-<kind>", program)`, created by
//! `create_account_with_seed` in the same transaction as `initialize`, so
//! its address is known without any lookup and a second initialization
//! cannot create a second one.

use borsh::BorshSerialize;
use solana_sdk::{
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
};

use super::{config::SingletonConfig, kind::Kind};
use crate::chain::codec;

/// Bytes of every state account: the SingletonState record with room for a
/// config of up to [`MAX_CONFIG_BYTES`] (the program never resizes it).
pub const STATE_SPACE: u64 = 8 + 1 + 1 + 4 + 32 + 4 + MAX_CONFIG_BYTES;
/// Largest config the state account holds (the largest layout is 44 bytes).
pub const MAX_CONFIG_BYTES: u64 = 64;

#[derive(BorshSerialize)]
struct InitializeArgs {
    kind: u8,
    config: Vec<u8>,
}

#[derive(BorshSerialize)]
struct UpdateConfigArgs {
    config: Vec<u8>,
}

/// The state account of `kind` for this authority and program.
pub fn state_address(kind: Kind, authority: &Pubkey, program: &Pubkey) -> Pubkey {
    Pubkey::create_with_seed(authority, &kind.state_seed(), program)
        .expect("seeds are short and programs are not PDA markers")
}

fn accounts(state: Pubkey, authority: Pubkey) -> Vec<AccountMeta> {
    vec![
        AccountMeta::new(state, false),
        AccountMeta::new_readonly(authority, true),
    ]
}

/// `initialize(kind: u8, config: Vec<u8>)`.
pub fn initialize(
    program: Pubkey,
    state: Pubkey,
    authority: Pubkey,
    config: &SingletonConfig,
) -> Instruction {
    let args = InitializeArgs {
        kind: config.kind().code(),
        config: config.encode(),
    };
    Instruction {
        program_id: program,
        accounts: accounts(state, authority),
        data: codec::instruction_data("initialize", &args),
    }
}

/// `pause()`.
pub fn pause(program: Pubkey, state: Pubkey, authority: Pubkey) -> Instruction {
    Instruction {
        program_id: program,
        accounts: accounts(state, authority),
        data: codec::instruction_data("pause", &()),
    }
}

/// `resume()`.
pub fn resume(program: Pubkey, state: Pubkey, authority: Pubkey) -> Instruction {
    Instruction {
        program_id: program,
        accounts: accounts(state, authority),
        data: codec::instruction_data("resume", &()),
    }
}

/// `update_config(config: Vec<u8>)`.
pub fn update_config(
    program: Pubkey,
    state: Pubkey,
    authority: Pubkey,
    config: &SingletonConfig,
) -> Instruction {
    let args = UpdateConfigArgs {
        config: config.encode(),
    };
    Instruction {
        program_id: program,
        accounts: accounts(state, authority),
        data: codec::instruction_data("update_config", &args),
    }
}

/// The system instruction that creates the state account (funded by `payer`).
pub fn create_state(
    kind: Kind,
    payer: &Pubkey,
    authority: &Pubkey,
    program: &Pubkey,
    lamports: u64,
) -> Instruction {
    solana_system_interface::instruction::create_account_with_seed(
        payer,
        &state_address(kind, authority, program),
        authority,
        &kind.state_seed(),
        lamports,
        STATE_SPACE,
        program,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::singletons::config::{DiffConfig, OptimizationLevel, SchedulerConfig};

    #[test]
    fn instruction_data_golden_vectors() {
        let (program, state, authority) = (
            Pubkey::new_from_array([1; 32]),
            Pubkey::new_from_array([2; 32]),
            Pubkey::new_from_array([3; 32]),
        );
        let scheduler = SingletonConfig::Scheduler(SchedulerConfig {
            max_shards: 100,
            max_queue_size: 1000,
            default_priority: 5,
        });
        // Discriminators from server/shard-program/README.md.
        let init = initialize(program, state, authority, &scheduler);
        assert_eq!(
            hex::encode(&init.data),
            "afaf6d1f0d989bed020900000064000000e803000005"
        );
        assert_eq!(init.program_id, program);
        assert_eq!(init.accounts[0], AccountMeta::new(state, false));
        assert_eq!(init.accounts[1], AccountMeta::new_readonly(authority, true));
        assert_eq!(
            hex::encode(pause(program, state, authority).data),
            "d316ddfb4a79c12f"
        );
        assert_eq!(
            hex::encode(resume(program, state, authority).data),
            "01a633aa7f208dce"
        );
        let diff = SingletonConfig::Diff(DiffConfig {
            max_batch_size: 50,
            optimization_level: OptimizationLevel::Aggressive,
        });
        assert_eq!(
            hex::encode(update_config(program, state, authority, &diff).data),
            "1d9efcbf0a53db63050000003200000002"
        );
    }

    #[test]
    fn state_accounts_are_deterministic_per_kind() {
        let (authority, program) = (Pubkey::new_unique(), Pubkey::new_unique());
        let a = state_address(Kind::Processor, &authority, &program);
        assert_eq!(a, state_address(Kind::Processor, &authority, &program));
        assert_ne!(a, state_address(Kind::Scheduler, &authority, &program));
        let create = create_state(Kind::Processor, &authority, &authority, &program, 1);
        assert_eq!(create.accounts[1].pubkey, a);
        for kind in crate::singletons::kind::INIT_ORDER {
            let len = crate::singletons::config::placeholder(kind).encode().len() as u64;
            assert!(len <= MAX_CONFIG_BYTES, "{kind} config of {len} bytes");
        }
    }
}
