//! The in-process chain the chain benchmarks share: Surfnet with the
//! stand-in shard program, and records or wallets placed with cheatcodes.
//! Only benchmarks that need the embedded-chain feature include it.
#![allow(dead_code)]

use solana_sdk::{pubkey::Pubkey, signature::Keypair, signer::Signer as _};
use surfpool_sdk::{cheatcodes::builders::DeployProgram, Surfnet};
use valence_lifecycle_server::chain::{codec::Record, dev, embedded::SHARD_PROGRAM};

/// The in-process chain with the stand-in program.
pub(crate) struct Net {
    pub(crate) surfnet: Surfnet,
    pub(crate) program: Pubkey,
    pub(crate) rpc_url: String,
    pub(crate) ws_url: String,
}

impl Net {
    pub(crate) async fn start() -> anyhow::Result<Net> {
        let surfnet = Surfnet::start()
            .await
            .map_err(|e| anyhow::anyhow!("starting Surfnet: {e}"))?;
        let program = Pubkey::new_unique();
        tokio::task::block_in_place(|| {
            surfnet
                .cheatcodes()
                .deploy(DeployProgram::new(program).so_bytes(SHARD_PROGRAM.to_vec()))
        })
        .map_err(|e| anyhow::anyhow!("deploying the stand-in: {e}"))?;
        let (rpc_url, ws_url) = (surfnet.rpc_url().to_string(), surfnet.ws_url().to_string());
        Ok(Net {
            surfnet,
            program,
            rpc_url,
            ws_url,
        })
    }

    /// `n` records, a third of each kind, written with cheatcodes.
    pub(crate) fn place_records(&self, n: usize) -> anyhow::Result<()> {
        let owner = Pubkey::new_unique();
        tokio::task::block_in_place(|| {
            let cheats = self.surfnet.cheatcodes();
            for i in 0..n {
                let key = dev::random_key();
                let record: Record = match i % 3 {
                    0 => dev::account_request(key, owner, vec!["transfer".into()], [0; 32]),
                    1 => dev::account(key, owner, vec!["transfer".into()]),
                    _ => dev::session(key, owner, &[], "bench".into(), i as u64),
                };
                cheats
                    .set_account(&key, 10_000_000, &record.encode(), &self.program)
                    .map_err(|e| anyhow::anyhow!("placing record {i}: {e}"))?;
            }
            Ok(())
        })
    }

    /// A funded wallet, written as a Solana CLI keypair file in `dir`.
    pub(crate) fn wallet(
        &self,
        dir: &std::path::Path,
    ) -> anyhow::Result<(Keypair, std::path::PathBuf)> {
        let keypair = Keypair::new();
        tokio::task::block_in_place(|| {
            self.surfnet
                .cheatcodes()
                .fund_sol(&keypair.pubkey(), 1_000_000_000_000)
        })
        .map_err(|e| anyhow::anyhow!("funding the wallet: {e}"))?;
        let path = dir.join("wallet.json");
        std::fs::write(&path, serde_json::to_string(&keypair.to_bytes().to_vec())?)?;
        Ok((keypair, path))
    }

    /// `n` AccountRequest records the builder will accept (their state
    /// hash is the one their capabilities give), written with cheatcodes.
    pub(crate) fn place_requests(&self, n: usize) -> anyhow::Result<Vec<Pubkey>> {
        let capabilities = vec!["transfer".to_string()];
        let hash =
            valence_lifecycle_api::initial_state::InitialState::for_capabilities(&capabilities)
                .hash();
        let owner = Pubkey::new_unique();
        tokio::task::block_in_place(|| {
            let cheats = self.surfnet.cheatcodes();
            (0..n)
                .map(|i| {
                    let key = dev::random_key();
                    let record = dev::account_request(key, owner, capabilities.clone(), hash);
                    cheats
                        .set_account(&key, 10_000_000, &record.encode(), &self.program)
                        .map_err(|e| anyhow::anyhow!("placing request {i}: {e}"))?;
                    Ok(key)
                })
                .collect()
        })
    }
}
