//! Instructions of seed 001's session factory as the stand-in program
//! implements them (`server/shard-program/README.md`): reserve, queue,
//! initialize from the queue (one, or a batch whose events go through a
//! self-CPI), initialize manually, reset. For tests, benchmarks and
//! operators' scripts; the server itself only reads what they emit.

use anyhow::Context as _;
use borsh::BorshSerialize;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::{
    instruction::{AccountMeta, Instruction},
    pubkey::Pubkey,
    signature::{Keypair, Signer as _},
    transaction::Transaction,
};

use super::{codec::instruction_data, logs::event_authority};

/// Bytes of a SessionQueue record.
pub const QUEUE_SPACE: u64 = 64;

/// Bytes of a SessionReservation with `namespace` (the Session written
/// over it later is smaller).
pub fn reservation_space(namespace: &str) -> u64 {
    133 + namespace.len() as u64
}

#[derive(BorshSerialize)]
struct NoArgs {}

fn instruction<T: BorshSerialize>(
    program: &Pubkey,
    name: &str,
    args: &T,
    accounts: Vec<AccountMeta>,
) -> Instruction {
    Instruction {
        program_id: *program,
        accounts,
        data: instruction_data(name, args),
    }
}

/// A reservation and its queue, both written.
fn reservation_and_queue(reservation: &Pubkey, queue: &Pubkey) -> Vec<AccountMeta> {
    vec![
        AccountMeta::new(*reservation, false),
        AccountMeta::new(*queue, false),
    ]
}

/// A reservation, its queue and the queue's authority (signing).
fn with_authority(reservation: &Pubkey, queue: &Pubkey, authority: &Pubkey) -> Vec<AccountMeta> {
    let mut accounts = reservation_and_queue(reservation, queue);
    accounts.push(AccountMeta::new_readonly(*authority, true));
    accounts
}

/// `init_queue()`: a fresh queue record, its authority signing.
pub fn init_queue(program: &Pubkey, queue: &Pubkey, authority: &Pubkey) -> Instruction {
    let accounts = vec![
        AccountMeta::new(*queue, false),
        AccountMeta::new_readonly(*authority, true),
    ];
    instruction(program, "init_queue", &NoArgs {}, accounts)
}

/// `reserve_session(owner, namespace, ttl_seconds)` into a fresh account.
pub fn reserve_session(
    program: &Pubkey,
    reservation: &Pubkey,
    queue: &Pubkey,
    owner: &Pubkey,
    namespace: &str,
    ttl_seconds: i64,
) -> Instruction {
    #[derive(BorshSerialize)]
    struct Args {
        owner: [u8; 32],
        namespace: String,
        ttl_seconds: i64,
    }
    let args = Args {
        owner: owner.to_bytes(),
        namespace: namespace.to_string(),
        ttl_seconds,
    };
    let accounts = vec![
        AccountMeta::new(*reservation, false),
        AccountMeta::new_readonly(*queue, false),
    ];
    instruction(program, "reserve_session", &args, accounts)
}

/// `queue_session(deadline_seconds)`.
pub fn queue_session(
    program: &Pubkey,
    reservation: &Pubkey,
    queue: &Pubkey,
    deadline_seconds: i64,
) -> Instruction {
    let accounts = reservation_and_queue(reservation, queue);
    instruction(program, "queue_session", &deadline_seconds, accounts)
}

/// `initialize_from_queue()`.
pub fn initialize_from_queue(
    program: &Pubkey,
    reservation: &Pubkey,
    queue: &Pubkey,
) -> Instruction {
    let accounts = reservation_and_queue(reservation, queue);
    instruction(program, "initialize_from_queue", &NoArgs {}, accounts)
}

/// `process_queue()` over `reservations`; its events go through self-CPIs
/// signed by the program's event authority.
pub fn process_queue(program: &Pubkey, queue: &Pubkey, reservations: &[Pubkey]) -> Instruction {
    let mut accounts = vec![
        AccountMeta::new(*queue, false),
        AccountMeta::new_readonly(event_authority(program), false),
        AccountMeta::new_readonly(*program, false),
    ];
    accounts.extend(reservations.iter().map(|r| AccountMeta::new(*r, false)));
    instruction(program, "process_queue", &NoArgs {}, accounts)
}

/// `manual_initialize_session()`, the queue's authority signing.
pub fn manual_initialize(
    program: &Pubkey,
    reservation: &Pubkey,
    queue: &Pubkey,
    authority: &Pubkey,
) -> Instruction {
    let accounts = with_authority(reservation, queue, authority);
    instruction(program, "manual_initialize_session", &NoArgs {}, accounts)
}

/// `emergency_reset_session(reason)`, the queue's authority signing.
pub fn emergency_reset(
    program: &Pubkey,
    reservation: &Pubkey,
    queue: &Pubkey,
    authority: &Pubkey,
    reason: &str,
) -> Instruction {
    let accounts = with_authority(reservation, queue, authority);
    instruction(
        program,
        "emergency_reset_session",
        &reason.to_string(),
        accounts,
    )
}

/// `pad_logs(bytes)`: filler log lines (to overflow the log limit in tests).
pub fn pad_logs(program: &Pubkey, bytes: u32) -> Instruction {
    instruction(program, "pad_logs", &bytes, vec![])
}

/// Sends transactions to the program, paid by `payer`.
pub struct Payer<'a> {
    /// The node.
    pub rpc: &'a RpcClient,
    /// Pays and signs every transaction.
    pub payer: &'a Keypair,
    /// The shard program.
    pub program: Pubkey,
}

impl Payer<'_> {
    /// A fresh account of the program, created by a transaction of its own.
    pub async fn fresh(&self, space: u64) -> anyhow::Result<Keypair> {
        let account = Keypair::new();
        let lamports = self
            .rpc
            .get_minimum_balance_for_rent_exemption(space as usize)
            .await?;
        let ix = solana_system_interface::instruction::create_account(
            &self.payer.pubkey(),
            &account.pubkey(),
            lamports,
            space,
            &self.program,
        );
        self.send(vec![ix], &[&account]).await?;
        Ok(account)
    }

    /// Sends `ixs` signed by the payer and `signers`; the signature once
    /// confirmed.
    pub async fn send(
        &self,
        ixs: Vec<Instruction>,
        signers: &[&Keypair],
    ) -> anyhow::Result<String> {
        let mut all = vec![self.payer];
        all.extend_from_slice(signers);
        let blockhash = self.rpc.get_latest_blockhash().await?;
        let mut tx = Transaction::new_with_payer(&ixs, Some(&self.payer.pubkey()));
        tx.try_sign(&all, blockhash)
            .context("signing a transaction")?;
        let signature = self
            .rpc
            .send_and_confirm_transaction(&tx)
            .await
            .context("sending a transaction")?;
        Ok(signature.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::codec::{
        Record, SessionQueueRecord, SessionRecord, SessionReservationRecord,
    };

    /// The sizes callers allocate are the records' encoded sizes, and the
    /// Session the program writes over a reservation fits in its account.
    #[test]
    fn spaces_are_the_records_sizes() {
        let queue = Record::SessionQueue(SessionQueueRecord {
            authority: [1; 32],
            next_position: 2,
            pending: 3,
            processed: 4,
        });
        assert_eq!(queue.encode().len() as u64, QUEUE_SPACE);
        let reservation = Record::SessionReservation(SessionReservationRecord {
            session: [1; 32],
            owner: [2; 32],
            queue: [3; 32],
            namespace: "factory".into(),
            status: 2,
            expires_at: 5,
            queue_position: 6,
            deadline: 7,
        });
        let encoded = reservation.encode();
        assert_eq!(encoded.len() as u64, reservation_space("factory"));
        assert_eq!(Record::decode(&encoded).unwrap(), reservation);
        let session = Record::Session(SessionRecord {
            id: [1; 32],
            owner: [2; 32],
            accounts: vec![],
            namespace: "factory".into(),
            is_consumed: false,
            nonce: 0,
            created_at: 5,
            metadata: vec![],
        });
        assert!((session.encode().len() as u64) < reservation_space("factory"));
    }

    #[test]
    fn process_queue_names_the_event_authority_and_the_program() {
        let program = Pubkey::new_unique();
        let ix = process_queue(&program, &Pubkey::new_unique(), &[Pubkey::new_unique()]);
        assert_eq!(ix.accounts[1].pubkey, event_authority(&program));
        assert_eq!(ix.accounts[2].pubkey, program);
        assert!(ix.accounts[3].is_writable);
    }
}
