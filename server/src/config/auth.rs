//! `[auth]`: bearer tokens and the roles they grant.

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A role; each includes the ones before it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and subscriptions.
    Reader,
    /// Plus rule changes and retries.
    Operator,
    /// Plus singleton administration.
    Admin,
}

/// One configured bearer token.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret, or where it is: `sha256:<64 hex>` (its digest, so the
    /// config holds no plaintext), `file:<path>` (the file's contents,
    /// trimmed; re-read on SIGHUP) or `env:<VARIABLE>`.
    pub token: String,
    /// What it may do.
    pub role: Role,
    /// Who holds it, for logs (never the token itself).
    #[serde(default)]
    pub name: String,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .field("name", &self.name)
            .finish()
    }
}

/// `[auth]`: who may do what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens and their roles. With none, every caller has every role and
    /// the server only listens on loopback.
    pub tokens: Vec<TokenConfig>,
    /// Let callers without a token read.
    pub allow_anonymous_reads: bool,
    /// Seconds a stream ticket (`POST /events/tickets`) opens the gateway's
    /// event streams.
    pub stream_ticket_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: Vec::new(),
            allow_anonymous_reads: false,
            stream_ticket_secs: 60,
        }
    }
}

/// Shortest plaintext token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Where a token's secret comes from, by the prefix of `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource<'a> {
    /// The token itself.
    Plain(&'a str),
    /// `sha256:<hex>`: the hex SHA-256 digest of the token.
    Sha256(&'a str),
    /// `file:<path>`: a file holding the token.
    File(&'a str),
    /// `env:<NAME>`: an environment variable holding the token.
    Env(&'a str),
}

impl TokenConfig {
    /// Where the secret comes from.
    pub fn source(&self) -> TokenSource<'_> {
        let t = self.token.as_str();
        if let Some(hex) = t.strip_prefix("sha256:") {
            TokenSource::Sha256(hex)
        } else if let Some(path) = t.strip_prefix("file:") {
            TokenSource::File(path)
        } else if let Some(name) = t.strip_prefix("env:") {
            TokenSource::Env(name)
        } else {
            TokenSource::Plain(t)
        }
    }

    /// Whether `token` is the secret itself (redacted by `--dump-config`).
    pub fn is_plaintext(&self) -> bool {
        matches!(self.source(), TokenSource::Plain(_))
    }

    /// The token's SHA-256 digest, reading its file or variable now. An
    /// error names the source, never the secret.
    pub fn digest(&self) -> anyhow::Result<[u8; 32]> {
        let secret = match self.source() {
            TokenSource::Sha256(hex) => {
                let bytes = hex::decode(hex)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                return bytes
                    .context("a sha256: token must be 64 hex characters (value not shown)");
            }
            TokenSource::Plain(token) => token.to_string(),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {path}"))?
                .trim()
                .to_string(),
            TokenSource::Env(name) => std::env::var(name)
                .with_context(|| format!("reading the token variable {name}"))?
                .trim()
                .to_string(),
        };
        if secret.len() < MIN_TOKEN_LEN {
            bail!("must be at least {MIN_TOKEN_LEN} characters (value not shown)");
        }
        Ok(Sha256::digest(secret.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> TokenConfig {
        TokenConfig {
            token: t.into(),
            role: Role::Reader,
            name: String::new(),
        }
    }

    #[test]
    fn tokens_come_from_the_config_a_digest_a_file_or_a_variable() {
        let secret = "a-long-reader-secret-token";
        let want: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        assert_eq!(token(secret).digest().unwrap(), want);
        assert!(token(secret).is_plaintext());
        let hex = hex::encode(want);
        assert_eq!(token(&format!("sha256:{hex}")).digest().unwrap(), want);
        assert!(!token(&format!("sha256:{hex}")).is_plaintext());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reader.token");
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        let from_file = token(&format!("file:{}", path.display()));
        assert_eq!(from_file.digest().unwrap(), want);
        // Nothing else sets this variable.
        let name = "VALENCE_TEST_TOKEN_FROM_ENV_CONFIG_AUTH";
        assert!(token(&format!("env:{name}")).digest().is_err());
    }

    #[test]
    fn bad_tokens_are_refused_without_showing_them() {
        for bad in [
            "short",
            "sha256:abcd",
            "sha256:zz",
            "file:/no/such/token/file",
        ] {
            let err = format!("{:#}", token(bad).digest().unwrap_err());
            assert!(!err.contains("short") && !err.contains("abcd"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.token");
        std::fs::write(&path, "tiny-secret").unwrap();
        let err = format!(
            "{:#}",
            token(&format!("file:{}", path.display()))
                .digest()
                .unwrap_err()
        );
        assert!(
            err.contains("16 characters") && !err.contains("tiny-secret"),
            "{err}"
        );
    }
}
