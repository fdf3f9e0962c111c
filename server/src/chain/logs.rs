//! The program's events out of a transaction, in both forms Anchor uses:
//! `Program data:` log lines (`emit!`) and self-invocations whose
//! instruction data carries the event (`emit_cpi!`).
//!
//! Why both: the runtime keeps at most 10,000 bytes of a transaction's logs
//! and replaces the rest with `Log truncated`, so events logged past that
//! point are gone (anchor#1613). Inner instructions are not truncated, so a
//! program that emits through a self-CPI can always be read back from
//! `getTransaction`. A truncated transaction whose cut instructions left no
//! such event behind is a gap: what it emitted is unknown, and the monitor
//! says so (a ChainGap event, a counter, degraded `chain-logs` health).

use anyhow::Context as _;
use base64::Engine as _;
use solana_client::rpc_config::{RpcTransactionConfig, UiTransactionEncoding};
use solana_sdk::pubkey::Pubkey;
use solana_transaction_status_client_types::{
    option_serializer::OptionSerializer, EncodedTransaction, UiInstruction, UiMessage,
};

use super::Chain;

/// Anchor's `EVENT_IX_TAG` (`0x1d9acb512ea545e4`), little-endian: the first
/// bytes of a self-CPI that carries an event.
pub const EVENT_IX_TAG_LE: [u8; 8] = [0xe4, 0x45, 0xa5, 0x2e, 0x51, 0xcb, 0x9a, 0x1d];

/// Seed of the PDA that signs a program's event self-CPIs (Anchor's).
pub const EVENT_AUTHORITY_SEED: &[u8] = b"__event_authority";

/// Event positions of CPI events start here, so that they never collide
/// with log events' (which count from 0 in log order) and stay the same
/// whichever way the transaction is read.
pub const CPI_EVENT_INDEX: u32 = 1 << 20;

/// The line the runtime puts where it cut a transaction's logs.
const TRUNCATED: &str = "Log truncated";

/// What a transaction's logs say about the program.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// `Program data:` payloads the program emitted, in order.
    pub events: Vec<Vec<u8>>,
    /// The top-level instruction each of `events` came from.
    pub event_instructions: Vec<u32>,
    /// The runtime cut the logs.
    pub truncated: bool,
    /// The program invoked itself (an event self-CPI, whose data only
    /// `getTransaction` shows).
    pub self_invoked: bool,
    /// Top-level instructions of the program, by index in the
    /// transaction, and whether their logs show them finished.
    pub instructions: Vec<(u32, bool)>,
}

impl LogSummary {
    /// Whether the transaction must be fetched to read all its events.
    pub fn needs_transaction(&self) -> bool {
        self.self_invoked || self.truncated
    }

    /// The program's top-level instructions whose logs were cut.
    pub fn cut(&self) -> impl Iterator<Item = u32> + '_ {
        self.instructions
            .iter()
            .filter(|(_, finished)| !finished)
            .map(|(index, _)| *index)
    }
}

/// Reads `logs` for `program_id`: its events (lines printed while another
/// program runs, a CPI callee or caller, are not its), whether the logs
/// were cut, and which of its top-level instructions they show finished.
pub fn summarize(logs: &[String], program_id: &str) -> LogSummary {
    let mut summary = LogSummary::default();
    // (program, top-level index) of each running invocation.
    let mut stack: Vec<&str> = Vec::new();
    let mut top_level: u32 = 0;
    for line in logs {
        if line.trim() == TRUNCATED {
            summary.truncated = true;
            continue;
        }
        let Some(rest) = line.strip_prefix("Program ") else {
            continue;
        };
        if let Some(data) = rest.strip_prefix("data: ") {
            if stack.last() == Some(&program_id) {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data.trim()) {
                    summary.events.push(bytes);
                    summary.event_instructions.push(top_level.saturating_sub(1));
                }
            }
            continue;
        }
        let mut words = rest.split_whitespace();
        let (id, verb) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        match verb {
            "invoke" => {
                if stack.is_empty() {
                    if id == program_id {
                        summary.instructions.push((top_level, false));
                    }
                    top_level += 1;
                } else if id == program_id && stack.last() == Some(&program_id) {
                    summary.self_invoked = true;
                }
                stack.push(id);
            }
            "success" | "failed:" => {
                stack.pop();
                if stack.is_empty() && id == program_id {
                    if let Some(last) = summary.instructions.last_mut() {
                        last.1 = true;
                    }
                }
            }
            _ => {}
        }
    }
    summary
}

/// A transaction as `getTransaction` returns it, reduced to what the
/// monitor reads.
#[derive(Debug, Clone, Default)]
pub struct FetchedTransaction {
    /// Its logs.
    pub logs: Vec<String>,
    /// It failed (its events changed nothing).
    pub failed: bool,
    /// Unix seconds of its block, when the node knows it.
    pub block_time: Option<i64>,
    /// Event payloads (discriminator + fields) the program emitted through
    /// self-CPIs, with the top-level instruction each came from, in order.
    pub cpi_events: Vec<(u32, Vec<u8>)>,
    /// Indexes of the transaction's top-level instructions of the program.
    pub program_instructions: Vec<u32>,
}

impl Chain {
    /// Fetches a transaction: its logs and its event self-CPIs.
    pub async fn transaction(&self, signature: &str) -> anyhow::Result<FetchedTransaction> {
        let signature = signature.parse().context("signature")?;
        let config = RpcTransactionConfig {
            encoding: Some(UiTransactionEncoding::Json),
            commitment: Some(self.commitment),
            max_supported_transaction_version: Some(0),
        };
        let tx = self
            .retry
            .run(
                "getTransaction",
                || self.rpc.get_transaction_with_config(&signature, config),
                |_| true,
            )
            .await
            .context("getTransaction")?;
        let block_time = tx.block_time;
        let Some(meta) = tx.transaction.meta else {
            return Ok(FetchedTransaction {
                block_time,
                ..FetchedTransaction::default()
            });
        };
        let (mut keys, top_level) = match tx.transaction.transaction {
            EncodedTransaction::Json(ui) => match ui.message {
                UiMessage::Raw(raw) => {
                    let programs: Vec<u8> = raw
                        .instructions
                        .iter()
                        .map(|i| i.program_id_index)
                        .collect();
                    (raw.account_keys, programs)
                }
                UiMessage::Parsed(_) => (Vec::new(), Vec::new()),
            },
            _ => (Vec::new(), Vec::new()),
        };
        // A v0 transaction's keys go on with those it loaded from tables.
        if let OptionSerializer::Some(loaded) = meta.loaded_addresses {
            keys.extend(loaded.writable);
            keys.extend(loaded.readonly);
        }
        let logs = match meta.log_messages {
            OptionSerializer::Some(logs) => logs,
            _ => Vec::new(),
        };
        let inner = match meta.inner_instructions {
            OptionSerializer::Some(inner) => inner,
            _ => Vec::new(),
        };
        let program = self.program_id.to_string();
        let authority = event_authority(&self.program_id).to_string();
        let program_instructions = top_level
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                keys.get(usize::from(**p)).map(String::as_str) == Some(program.as_str())
            })
            .map(|(i, _)| i as u32)
            .collect();
        let mut cpi_events = Vec::new();
        for set in inner {
            for ix in set.instructions {
                let UiInstruction::Compiled(ix) = ix else {
                    continue;
                };
                let key = |i: u8| keys.get(usize::from(i)).map(String::as_str);
                if key(ix.program_id_index) != Some(program.as_str()) {
                    continue;
                }
                // Only the program can sign for its event authority, so an
                // event CPI that names it is the program's own.
                if ix.accounts.first().and_then(|a| key(*a)) != Some(authority.as_str()) {
                    continue;
                }
                let Ok(data) = bs58::decode(&ix.data).into_vec() else {
                    continue;
                };
                if let Some(event) = data.strip_prefix(&EVENT_IX_TAG_LE) {
                    cpi_events.push((u32::from(set.index), event.to_vec()));
                }
            }
        }
        Ok(FetchedTransaction {
            logs,
            failed: meta.err.is_some(),
            block_time,
            cpi_events,
            program_instructions,
        })
    }
}

/// The PDA that signs `program`'s event self-CPIs.
pub fn event_authority(program: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[EVENT_AUTHORITY_SEED], program).0
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "Shard11111111111111111111111111111111111111";

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn events_cuts_and_self_invocations_are_read_from_the_logs() {
        let logs = lines(&[
            "Program 11111111111111111111111111111111 invoke [1]",
            "Program 11111111111111111111111111111111 success",
            &format!("Program {ME} invoke [1]"),
            "Program data: AQID",
            &format!("Program {ME} invoke [2]"),
            &format!("Program {ME} success"),
            &format!("Program {ME} success"),
            &format!("Program {ME} invoke [1]"),
            "Program data: BAUG",
            "Log truncated",
        ]);
        let s = summarize(&logs, ME);
        assert_eq!(s.events, vec![vec![1, 2, 3], vec![4, 5, 6]]);
        assert_eq!(s.event_instructions, vec![1, 2]);
        assert!(s.truncated && s.self_invoked && s.needs_transaction());
        assert_eq!(s.instructions, vec![(1, true), (2, false)]);
        assert_eq!(s.cut().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_plain_transaction_needs_no_fetch() {
        let logs = lines(&[
            &format!("Program {ME} invoke [1]"),
            "Program log: Instruction: CreateSession",
            "Program data: AQID",
            &format!("Program {ME} consumed 2300 of 200000 compute units"),
            &format!("Program {ME} success"),
        ]);
        let s = summarize(&logs, ME);
        assert!(!s.needs_transaction());
        assert_eq!(s.cut().count(), 0);
    }

    #[test]
    fn the_tag_is_anchors() {
        assert_eq!(u64::from_le_bytes(EVENT_IX_TAG_LE), 0x1d9a_cb51_2ea5_45e4);
    }
}
