//! The service wallet: a Solana CLI keypair file (WALLET_PATH), or on the
//! embedded network a fresh funded keypair. Its balance is watched: below
//! `service.min_wallet_balance_lamports` health turns degraded (seed 001).

use std::path::Path;

use anyhow::{bail, Context as _};
use solana_sdk::signature::{Keypair, Signer as _};

/// Reads a Solana CLI keypair file (a JSON array of 64 numbers). A file
/// readable by others than its owner is a warning: it holds a secret key.
pub fn load(path: &Path) -> anyhow::Result<Keypair> {
    load_as(path, "service.keypair_path (WALLET_PATH)")
}

/// [`load`] for another setting: errors name `setting`.
pub fn load_as(path: &Path, setting: &str) -> anyhow::Result<Keypair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {setting} {}", path.display()))?;
    warn_if_exposed(path);
    // serde_json's message can quote the file (a secret key): keep only
    // where the error is.
    let bytes: Vec<u8> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{setting} {} is not a Solana CLI keypair (a JSON array of 64 numbers): \
             {:?} error at line {} column {}",
            path.display(),
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    if bytes.len() != 64 {
        bail!(
            "{setting} {} holds {} bytes; a keypair has 64",
            path.display(),
            bytes.len()
        );
    }
    Keypair::try_from(bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the service keypair is readable by others; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

/// A new keypair funded by the (embedded) network's airdrop.
pub async fn funded(
    rpc: &solana_client::nonblocking::rpc_client::RpcClient,
    lamports: u64,
) -> anyhow::Result<Keypair> {
    let keypair = Keypair::new();
    rpc.request_airdrop(&keypair.pubkey(), lamports)
        .await
        .context("funding the embedded service wallet")?;
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_cli_keypair_files_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let keypair = Keypair::new();
        let good = dir.path().join("id.json");
        std::fs::write(
            &good,
            serde_json::to_string(&keypair.to_bytes().to_vec()).unwrap(),
        )
        .unwrap();
        assert_eq!(load(&good).unwrap().pubkey(), keypair.pubkey());

        let short = dir.path().join("short.json");
        std::fs::write(&short, "[1,2,3]").unwrap();
        assert!(load(&short).unwrap_err().to_string().contains("64"));
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "not json").unwrap();
        assert!(format!("{:#}", load(&garbage).unwrap_err()).contains("WALLET_PATH"));
        assert!(
            format!("{:#}", load(&dir.path().join("missing.json")).unwrap_err())
                .contains("WALLET_PATH")
        );
    }

    #[test]
    fn a_malformed_keypair_file_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        for text in [
            r#"[1, 2, "very-secret-words"]"#,
            "very-secret-words",
            r#"{"very-secret-words": 1}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", load_as(&path, "service.keypair_path").unwrap_err());
            assert!(!err.contains("very-secret"), "{err}");
            assert!(err.contains("not a Solana CLI keypair"), "{err}");
        }
    }
}
