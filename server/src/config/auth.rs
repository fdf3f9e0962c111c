//! `[auth]`: bearer tokens and the roles they grant.

use serde::{Deserialize, Serialize};

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
    /// The secret.
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens and their roles. With none, every caller has every role and
    /// the server only listens on loopback.
    pub tokens: Vec<TokenConfig>,
    /// Let callers without a token read.
    pub allow_anonymous_reads: bool,
}
