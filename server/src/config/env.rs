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
    ("DATABASE_URL", "database.url"),
    ("API_PORT", "server.api_port"),
    ("GRPC_PORT", "server.grpc_port"),
    ("BIND_ADDRESS", "server.bind_address"),
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
