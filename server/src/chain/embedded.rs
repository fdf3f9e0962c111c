//! The embedded local network: an offline, in-process Surfnet on loopback
//! with the stand-in shard program deployed, so `cargo run` with nothing
//! configured shows the whole lifecycle on one machine.

use sha2::{Digest, Sha256};
use solana_sdk::pubkey::Pubkey;
use surfpool_sdk::{cheatcodes::builders::DeployProgram, BlockProductionMode, Surfnet};

/// Slot time of the embedded network: a cluster's, so slots and the Clock
/// sysvar advance with wall time (Surfnet's default, transaction-driven
/// 1 ms slots, keeps the Clock at its start and gives every record the
/// same `created_at`).
const SLOT_TIME_MS: u64 = 400;

/// The stand-in shard program, built from `server/shard-program/`.
pub const SHARD_PROGRAM: &[u8] = include_bytes!("../../shard-program/shard_program.so");

/// The stand-in's program id on the embedded network when none is
/// configured: fixed, so tools can rely on it across restarts.
pub fn default_program_id() -> Pubkey {
    let digest = Sha256::digest(b"valence-lifecycle:stand-in-shard-program");
    Pubkey::new_from_array(digest.into())
}

/// A running embedded network (stopped when dropped).
pub struct EmbeddedChain {
    surfnet: Surfnet,
    /// Where the stand-in is deployed.
    pub program_id: Pubkey,
}

impl EmbeddedChain {
    /// Starts Surfnet and deploys the stand-in at `program_id`.
    pub async fn start(program_id: Pubkey) -> anyhow::Result<EmbeddedChain> {
        let surfnet = Surfnet::builder()
            .block_production_mode(BlockProductionMode::Clock)
            .slot_time_ms(SLOT_TIME_MS)
            .start()
            .await
            .map_err(|e| anyhow::anyhow!("starting the embedded Surfnet: {e}"))?;
        let chain = EmbeddedChain {
            surfnet,
            program_id,
        };
        chain.deploy_stand_in(program_id)?;
        Ok(chain)
    }

    /// Deploys the stand-in program at `program_id` too (it also plays the
    /// singleton programs).
    pub fn deploy_stand_in(&self, program_id: Pubkey) -> anyhow::Result<()> {
        // The cheatcodes use a blocking RPC client.
        tokio::task::block_in_place(|| {
            self.surfnet
                .cheatcodes()
                .deploy(DeployProgram::new(program_id).so_bytes(SHARD_PROGRAM.to_vec()))
        })
        .map_err(|e| anyhow::anyhow!("deploying the stand-in program at {program_id}: {e}"))?;
        Ok(())
    }

    /// JSON-RPC URL.
    pub fn rpc_url(&self) -> String {
        self.surfnet.rpc_url().to_string()
    }

    /// Websocket URL.
    pub fn ws_url(&self) -> String {
        self.surfnet.ws_url().to_string()
    }
}
