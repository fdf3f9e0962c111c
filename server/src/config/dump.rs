//! `--dump-config`: the merged configuration as a config file, secrets
//! redacted.

use anyhow::Context as _;

use super::Config;

/// What `--dump-config` prints in place of a secret.
const REDACTED: &str = "<redacted>";

impl Config {
    /// The config as TOML, secrets redacted (for `--dump-config`); the
    /// text is a config file the server reads back.
    pub fn to_toml_redacted(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(&self.redacted()).context("serializing config")
    }

    /// A copy safe to print: tokens and a set webhook secret replaced.
    fn redacted(&self) -> Config {
        let mut copy = self.clone();
        // sha256:, file: and env: tokens say where the secret is, not what.
        for t in copy.auth.tokens.iter_mut().filter(|t| t.is_plaintext()) {
            t.token = REDACTED.into();
        }
        if !copy.lifecycle.webhook_secret.is_empty() {
            copy.lifecycle.webhook_secret = REDACTED.into();
        }
        for url in [
            &mut copy.database.url,
            &mut copy.rpc.url,
            &mut copy.rpc.ws_url,
        ] {
            *url = without_password(url);
        }
        copy
    }
}

/// `url` with the password of its user-info part (`scheme://user:password@host`)
/// redacted; anything else unchanged.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;

    use super::*;
    use crate::config::{Role, TokenConfig};

    /// Non-default values in every kind of field: integers, floats, an
    /// address, an optional port, booleans and a secret.
    const CUSTOM: &str = r#"
[server]
bind_address = "0.0.0.0"
grpc_port = 9002
[database]
url = "postgres://db.example/valence"
[rpc]
commitment = "finalized"
embedded = false
[monitoring]
metrics_port = 9400
[lifecycle]
auto_progress = true
webhook_secret = "a-webhook-signing-key"
[supervision]
restart_multiplier = 1.5
restart_jitter = 0.25
[leader]
replica_id = "replica-a"
"#;

    fn load_text(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, true, Figment::new()).unwrap()
    }

    #[test]
    fn the_dump_loads_back_as_the_same_config_with_secrets_redacted() {
        // Both loads see the same environment, so any variable set while
        // the tests run lands in both.
        let original = load_text(CUSTOM);
        assert_eq!(original.monitoring.metrics_port, Some(9400));
        let text = original.to_toml_redacted().unwrap();
        assert!(!text.contains("a-webhook-signing-key"), "{text}");
        let reloaded = load_text(&text);
        assert_eq!(reloaded, original.redacted());
        assert_eq!(reloaded.lifecycle.webhook_secret, REDACTED);
    }

    #[test]
    fn the_dump_redacts_passwords_in_urls() {
        assert_eq!(
            without_password("postgres://valence:s3cret@db.example:5432/valence?sslmode=require"),
            "postgres://valence:<redacted>@db.example:5432/valence?sslmode=require"
        );
        for kept in [
            "postgres://valence@db.example/valence",
            "sqlite://valence-lifecycle.db",
            "http://127.0.0.1:8899",
            "not a url",
        ] {
            assert_eq!(without_password(kept), kept);
        }
        let mut config = Config::default();
        config.database.url = "postgres://u:hunter22@h/d".into();
        let text = config.to_toml_redacted().unwrap();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains("postgres://u:<redacted>@h/d"), "{text}");
    }

    #[test]
    fn the_dump_redacts_tokens_and_keeps_their_roles() {
        let mut config = Config::default();
        config.auth.tokens = vec![TokenConfig {
            token: "a-long-admin-secret-token".into(),
            role: Role::Admin,
            name: "ops".into(),
        }];
        let text = config.to_toml_redacted().unwrap();
        assert!(!text.contains("a-long-admin-secret-token"), "{text}");
        // A redacted token is too short to pass validation, so read the
        // text back as TOML only.
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed, config.redacted());
        assert_eq!(parsed.auth.tokens[0].token, REDACTED);
        assert_eq!(parsed.auth.tokens[0].role, Role::Admin);
    }
}
