//! Where environment variables land: seed 000's plain names, then
//! `VALENCE_LIFECYCLE_<SECTION>__<KEY>` for any key.

use figment::{providers::Env, Figment};

/// Prefix of environment variables that set any key:
/// `VALENCE_LIFECYCLE_EVENTS__RETENTION_MAX_COUNT` is `events.retention_max_count`.
/// (Not plain `VALENCE_`, which `lifecyclectl` uses for its own settings.)
pub const ENV_PREFIX: &str = "VALENCE_LIFECYCLE_";

/// Seed 000's environment variable names and where they land.
const ENV_KEYS: &[(&str, &str)] = &[
    ("RPC_URL", "rpc.url"),
    ("WS_URL", "rpc.ws_url"),
    ("WALLET_PATH", "service.keypair_path"),
    ("SHARD_PROGRAM_ID", "lifecycle.shard_program_id"),
    ("SHARD_PROGRAM_IDS", "lifecycle.shard_program_ids"),
    ("LEASE_TTL_MS", "leases.ttl_ms"),
    ("LEASE_RENEW_INTERVAL_MS", "leases.renew_interval_ms"),
    ("DATABASE_URL", "database.url"),
    ("API_PORT", "server.api_port"),
    ("GRPC_PORT", "server.grpc_port"),
    ("BIND_ADDRESS", "server.bind_address"),
    ("TLS_CERT_PATH", "tls.cert_path"),
    ("TLS_KEY_PATH", "tls.key_path"),
    ("TLS_CLIENT_CA_PATH", "tls.client_ca_path"),
    ("POLL_INTERVAL", "lifecycle.poll_interval_secs"),
    ("LIVE_POLL_INTERVAL", "lifecycle.live_poll_interval_secs"),
    (
        "MAX_ACCOUNTS_PER_SESSION",
        "lifecycle.max_accounts_per_session",
    ),
    ("CONSUMPTION_TIMEOUT", "lifecycle.consumption_timeout_secs"),
    ("AUTO_PROGRESS", "lifecycle.auto_progress"),
    ("REPLICA_ID", "leader.replica_id"),
    ("WEBHOOK_SECRET", "lifecycle.webhook_secret"),
    ("WEBHOOK_TIMEOUT", "lifecycle.webhook_timeout_secs"),
    ("RUST_LOG", "telemetry.log_filter"),
    ("LOG_FORMAT", "telemetry.log_format"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("PROCESSOR_PROGRAM_ID", "singletons.processor_program_id"),
    ("SCHEDULER_PROGRAM_ID", "singletons.scheduler_program_id"),
    ("DIFF_PROGRAM_ID", "singletons.diff_program_id"),
    (
        "SINGLETON_AUTHORITY_PATH",
        "singletons.authority_keypair_path",
    ),
];

/// Seed 000's environment variable for `key` (`server.grpc_port`), if it has one.
pub(super) fn seed_name(key: &str) -> Option<&'static str> {
    ENV_KEYS
        .iter()
        .find(|(_, path)| *path == key)
        .map(|(name, _)| *name)
}

/// Deepest nesting of `[` and `{` taken in one of our environment values.
/// figment parses a value that starts with one recursively, and some
/// thousand levels overflow the stack (found by the property tests); a
/// config value needs two at most (a list of token tables).
pub(crate) const MAX_VALUE_NESTING: usize = 32;

/// Refuses, before figment parses them, the environment values that
/// [`merge`] reads and that nest deeper than [`MAX_VALUE_NESTING`].
pub(super) fn check() -> anyhow::Result<()> {
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        let ours = ENV_KEYS.iter().any(|(k, _)| name.eq_ignore_ascii_case(k))
            || name
                .get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX));
        if ours {
            check_value(name, value)?;
        }
    }
    Ok(())
}

/// Refuses `value` of variable `name` when it is an array or dict (the
/// only values figment parses recursively) nesting brackets deeper than
/// [`MAX_VALUE_NESTING`]. Brackets in quoted strings count too: erring
/// that way is safe.
pub(crate) fn check_value(name: &str, value: &str) -> anyhow::Result<()> {
    if !value.trim_start().starts_with(['[', '{']) {
        return Ok(());
    }
    let mut depth = 0usize;
    for byte in value.bytes() {
        match byte {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => continue,
        }
        if depth > MAX_VALUE_NESTING {
            anyhow::bail!(
                "invalid configuration: environment variable {name} nests brackets more than \
                 {MAX_VALUE_NESTING} deep"
            );
        }
    }
    Ok(())
}

/// Adds both environment layers on top of `figment`; the prefixed form
/// wins, being the more specific.
pub(super) fn merge(figment: Figment) -> Figment {
    figment
        .merge(Env::raw().filter_map(|key| {
            ENV_KEYS
                .iter()
                .find(|(name, _)| key.as_str().eq_ignore_ascii_case(name))
                .map(|(_, path)| (*path).into())
        }))
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_values_are_refused_before_figment_parses_them() {
        // 10,000 levels overflowed the stack in figment's parser.
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = check_value("VALENCE_LIFECYCLE_SERVER__GRPC_PORT", &deep).unwrap_err();
        assert!(err.to_string().contains("32 deep"), "{err}");
        let tokens = r#"[{token = "a-long-admin-secret-token", role = "admin", name = "ops"}]"#;
        assert!(check_value("VALENCE_LIFECYCLE_AUTH__TOKENS", tokens).is_ok());
        // Not an array or dict: figment takes it as text, whatever it holds.
        assert!(check_value("WEBHOOK_SECRET", &"[".repeat(100).replace('[', "x[")).is_ok());
    }
}
