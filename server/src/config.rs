//! Configuration: embedded defaults, then `config.toml` (seed 001's
//! sections), then environment variables (seed 000's names, plus
//! `VALENCE_LIFECYCLE_<SECTION>__<KEY>` for everything), then command-line flags.
//! [`Config::validate`] checks the merged result once; any error names the
//! key and the value and stops start-up.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners and request limits.
    pub server: ServerConfig,
    /// Storage backend.
    pub database: DatabaseConfig,
    /// Solana RPC (seed 001 `[rpc]`).
    pub rpc: RpcConfig,
    /// Builder service settings (seed 001 `[service]`).
    pub service: ServiceConfig,
    /// Retry policy for chain operations (seed 001 `[retry]`).
    pub retry: RetryConfig,
    /// Health checks and metrics (seed 001 `[monitoring]`).
    pub monitoring: MonitoringConfig,
    /// Lifecycle behaviour (seed 000's variables).
    pub lifecycle: LifecycleConfig,
    /// Event log retention and subscription buffers.
    pub events: EventsConfig,
    /// Bearer tokens and roles.
    pub auth: AuthConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// The singleton programs and their authority (seed 002).
    pub singletons: SingletonsConfig,
    /// Heartbeats and restarts of components (seeds 003 and 004).
    pub supervision: SupervisionConfig,
    /// Leader election among replicas sharing one PostgreSQL.
    pub leader: LeaderConfig,
}

/// `[supervision]`: how components are kept alive (seed 003's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// How often a component reports that it is alive.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a component is considered hung and restarted.
    pub heartbeat_timeout_ms: u64,
    /// Restarts after a failure before the component stays in error.
    pub max_restarts: u32,
    /// Delay before the first restart.
    pub restart_initial_delay_ms: u64,
    /// Largest delay between restarts.
    pub restart_max_delay_ms: u64,
    /// Growth of the delay per restart.
    pub restart_multiplier: f64,
    /// Random spread of each delay, as a fraction (0.1 = ±10%).
    pub restart_jitter: f64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 90_000,
            max_restarts: 5,
            restart_initial_delay_ms: 1_000,
            restart_max_delay_ms: 30_000,
            restart_multiplier: 2.0,
            restart_jitter: 0.1,
        }
    }
}

/// `[leader]`: one replica (the leader) runs the monitor, the builder and
/// the orchestrator; the others serve reads and event streams.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderConfig {
    /// This replica's name in events, /health and GetStats (env REPLICA_ID);
    /// empty means `<hostname>-<pid>`.
    pub replica_id: String,
    /// How often a follower tries to take the lead.
    pub retry_interval_ms: u64,
    /// How often the leader checks its lock connection; a failed check
    /// makes it step down at once.
    pub check_interval_ms: u64,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            replica_id: String::new(),
            retry_interval_ms: 2_000,
            check_interval_ms: 3_000,
        }
    }
}

/// `[server]`: listeners and request limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address both listeners bind to (env BIND_ADDRESS).
    pub bind_address: IpAddr,
    /// gRPC port (env GRPC_PORT).
    pub grpc_port: u16,
    /// REST gateway port (env API_PORT).
    pub api_port: u16,
    /// Per-request timeout for unary calls and REST requests.
    pub request_timeout_secs: u64,
    /// Requests served at once per listener; more wait.
    pub max_concurrent_requests: usize,
    /// Largest request message or body accepted, in bytes.
    pub max_message_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind_address: IpAddr::from([127, 0, 0, 1]),
            grpc_port: 50051,
            api_port: 8080,
            request_timeout_secs: 30,
            max_concurrent_requests: 256,
            max_message_bytes: 4 * 1024 * 1024,
            shutdown_grace_secs: 10,
        }
    }
}

/// `[database]`: where state lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (the default, created if missing) or `postgres://...` (env DATABASE_URL).
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://valence-lifecycle.db".into(),
            max_connections: 10,
            acquire_timeout_secs: 5,
        }
    }
}

/// `[rpc]`: the Solana cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// JSON-RPC URL (env RPC_URL); empty means the embedded local network.
    pub url: String,
    /// Websocket URL (env WS_URL); empty means derived from `url`.
    pub ws_url: String,
    /// processed, confirmed or finalized.
    pub commitment: String,
    /// Timeout of each RPC call.
    pub timeout_secs: u64,
    /// With `url` empty: start an embedded local network (true) or run
    /// without a chain, API and event log only (false).
    pub embedded: bool,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            url: String::new(),
            ws_url: String::new(),
            commitment: "confirmed".into(),
            timeout_secs: 10,
            embedded: true,
        }
    }
}

/// `[service]`: the account builder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Account creations in flight at once.
    pub max_concurrent_creations: usize,
    /// Service wallet, Solana CLI keypair JSON (env WALLET_PATH); empty on the embedded chain.
    pub keypair_path: String,
    /// Wallet balance below which health warns.
    pub min_wallet_balance_lamports: u64,
    /// Send the shard program's initialize_account with each new account
    /// (false: only create the account, for programs that initialize
    /// accounts some other way).
    pub initialize_accounts: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_concurrent_creations: 10,
            keypair_path: String::new(),
            min_wallet_balance_lamports: 100_000_000,
            initialize_accounts: true,
        }
    }
}

/// `[retry]`: exponential backoff with jitter for chain operations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per operation.
    pub max_retries: u32,
    /// First delay.
    pub initial_delay_ms: u64,
    /// Largest delay.
    pub max_delay_ms: u64,
    /// Growth factor per attempt.
    pub multiplier: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            initial_delay_ms: 100,
            max_delay_ms: 30_000,
            multiplier: 2.0,
        }
    }
}

/// `[monitoring]`: health checks and Prometheus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Seconds between background health checks.
    pub health_check_interval_secs: u64,
    /// Extra port that serves only /metrics, when set (it is always on the API port too).
    pub metrics_port: Option<u16>,
    /// Serve /metrics at all.
    pub enable_prometheus: bool,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            health_check_interval_secs: 30,
            metrics_port: None,
            enable_prometheus: true,
        }
    }
}

/// `[lifecycle]`: seed 000's behaviour switches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Base58 id of the shard program (env SHARD_PROGRAM_ID); empty means the stand-in on the embedded chain.
    pub shard_program_id: String,
    /// Seconds between reconciliation passes (env POLL_INTERVAL).
    pub poll_interval_secs: u64,
    /// Largest session (env MAX_ACCOUNTS_PER_SESSION).
    pub max_accounts_per_session: u32,
    /// Seconds a pending consumption may take before it expires (env CONSUMPTION_TIMEOUT).
    pub consumption_timeout_secs: u64,
    /// Execute rule actions; false only reports matches (env AUTO_PROGRESS).
    pub auto_progress: bool,
    /// Seconds between evaluations of time-based rule conditions.
    pub rule_tick_secs: u64,
    /// HMAC-SHA256 key of NotifyWebhook signatures (env WEBHOOK_SECRET);
    /// empty sends unsigned notifications.
    pub webhook_secret: String,
    /// Seconds one webhook POST may take (env WEBHOOK_TIMEOUT).
    pub webhook_timeout_secs: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            shard_program_id: String::new(),
            poll_interval_secs: 5,
            max_accounts_per_session: 10,
            consumption_timeout_secs: 300,
            auto_progress: false,
            rule_tick_secs: 1,
            webhook_secret: String::new(),
            webhook_timeout_secs: 10,
        }
    }
}

/// `[events]`: the event log and its subscribers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Prune events older than this many seconds (0 keeps them by age).
    pub retention_max_age_secs: u64,
    /// Keep at most this many events (0 keeps them by count).
    pub retention_max_count: u64,
    /// Seconds between pruning passes.
    pub prune_interval_secs: u64,
    /// Events held in the shared live buffer.
    pub live_buffer: usize,
    /// Messages buffered per subscriber before it is served from the store.
    pub subscriber_buffer: usize,
    /// Events read from the store per catch-up query.
    pub catch_up_page: u32,
    /// Largest number of concurrent subscriptions.
    pub max_subscribers: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_max_age_secs: 30 * 24 * 3600,
            retention_max_count: 10_000_000,
            prune_interval_secs: 60,
            live_buffer: 4096,
            subscriber_buffer: 64,
            catch_up_page: 256,
            max_subscribers: 10_000,
        }
    }
}

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

/// `[telemetry]`: logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// tracing filter (env RUST_LOG).
    pub log_filter: String,
    /// plain or json (env LOG_FORMAT).
    pub log_format: String,
    /// OTLP gRPC endpoint for traces (env OTEL_EXPORTER_OTLP_ENDPOINT); empty disables.
    pub otlp_endpoint: String,
    /// service.name of exported traces.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_filter: "info".into(),
            log_format: "plain".into(),
            otlp_endpoint: String::new(),
            service_name: "valence-lifecycle".into(),
        }
    }
}

/// `[singletons]`: the processor, scheduler and diff programs (seed 002).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SingletonsConfig {
    /// Base58 processor program id (env PROCESSOR_PROGRAM_ID); empty means the stand-in on the embedded chain.
    pub processor_program_id: String,
    /// Base58 scheduler program id (env SCHEDULER_PROGRAM_ID); empty means the stand-in on the embedded chain.
    pub scheduler_program_id: String,
    /// Base58 diff program id (env DIFF_PROGRAM_ID); empty means the stand-in on the embedded chain.
    pub diff_program_id: String,
    /// Solana CLI keypair of the singleton authority (env SINGLETON_AUTHORITY_PATH); empty means the service wallet.
    pub authority_keypair_path: String,
}

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

impl Config {
    /// Merges defaults, the TOML file (when it exists, or must exist when
    /// `explicit`), the environment and `overrides` (command-line flags,
    /// already in figment's nested form), then validates.
    pub fn load(file: &Path, explicit: bool, overrides: Figment) -> anyhow::Result<Config> {
        if explicit && !file.exists() {
            bail!("config file {} does not exist", file.display());
        }
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(Env::raw().filter_map(|key| {
                ENV_KEYS
                    .iter()
                    .find(|(name, _)| key.as_str().eq_ignore_ascii_case(name))
                    .map(|(_, path)| (*path).into())
            }))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .merge(overrides);
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that types alone cannot; errors name key and value.
    pub fn validate(&self) -> anyhow::Result<()> {
        let s = &self.server;
        check(
            s.request_timeout_secs > 0,
            "server.request_timeout_secs",
            &s.request_timeout_secs,
        )?;
        check(
            s.max_concurrent_requests > 0,
            "server.max_concurrent_requests",
            &s.max_concurrent_requests,
        )?;
        check(
            s.max_message_bytes >= 1024,
            "server.max_message_bytes",
            &s.max_message_bytes,
        )?;
        let db = &self.database.url;
        check(
            db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"),
            "database.url (DATABASE_URL)",
            db,
        )?;
        check(
            self.database.max_connections > 0,
            "database.max_connections",
            &self.database.max_connections,
        )?;
        check(
            ["processed", "confirmed", "finalized"].contains(&self.rpc.commitment.as_str()),
            "rpc.commitment",
            &self.rpc.commitment,
        )?;
        check(
            self.rpc.url.is_empty()
                || self.rpc.url.starts_with("http://")
                || self.rpc.url.starts_with("https://"),
            "rpc.url (RPC_URL)",
            &self.rpc.url,
        )?;
        check(
            self.rpc.ws_url.is_empty()
                || self.rpc.ws_url.starts_with("ws://")
                || self.rpc.ws_url.starts_with("wss://"),
            "rpc.ws_url (WS_URL)",
            &self.rpc.ws_url,
        )?;
        check(
            self.rpc.timeout_secs > 0,
            "rpc.timeout_secs",
            &self.rpc.timeout_secs,
        )?;
        self.validate_lifecycle()?;
        self.validate_rest()
    }

    fn validate_lifecycle(&self) -> anyhow::Result<()> {
        let sg = &self.singletons;
        for (key, value) in [
            (
                "singletons.processor_program_id (PROCESSOR_PROGRAM_ID)",
                &sg.processor_program_id,
            ),
            (
                "singletons.scheduler_program_id (SCHEDULER_PROGRAM_ID)",
                &sg.scheduler_program_id,
            ),
            (
                "singletons.diff_program_id (DIFF_PROGRAM_ID)",
                &sg.diff_program_id,
            ),
        ] {
            if !value.is_empty() {
                crate::validate::pubkey(key, value).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        let l = &self.lifecycle;
        if !l.shard_program_id.is_empty() {
            crate::validate::pubkey(
                "lifecycle.shard_program_id (SHARD_PROGRAM_ID)",
                &l.shard_program_id,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        check(
            l.poll_interval_secs > 0,
            "lifecycle.poll_interval_secs (POLL_INTERVAL)",
            &l.poll_interval_secs,
        )?;
        check(
            (1..=64).contains(&l.max_accounts_per_session),
            "lifecycle.max_accounts_per_session (MAX_ACCOUNTS_PER_SESSION)",
            &l.max_accounts_per_session,
        )?;
        check(
            l.consumption_timeout_secs > 0,
            "lifecycle.consumption_timeout_secs (CONSUMPTION_TIMEOUT)",
            &l.consumption_timeout_secs,
        )?;
        check(
            (1..=3600).contains(&l.rule_tick_secs),
            "lifecycle.rule_tick_secs",
            &l.rule_tick_secs,
        )?;
        check(
            (1..=300).contains(&l.webhook_timeout_secs),
            "lifecycle.webhook_timeout_secs (WEBHOOK_TIMEOUT)",
            &l.webhook_timeout_secs,
        )
    }

    fn validate_supervision(&self) -> anyhow::Result<()> {
        let v = &self.supervision;
        check(
            v.heartbeat_interval_ms > 0,
            "supervision.heartbeat_interval_ms",
            &v.heartbeat_interval_ms,
        )?;
        check(
            v.heartbeat_timeout_ms > v.heartbeat_interval_ms,
            "supervision.heartbeat_timeout_ms (must exceed heartbeat_interval_ms)",
            &v.heartbeat_timeout_ms,
        )?;
        check(
            v.restart_initial_delay_ms > 0,
            "supervision.restart_initial_delay_ms",
            &v.restart_initial_delay_ms,
        )?;
        check(
            v.restart_max_delay_ms >= v.restart_initial_delay_ms,
            "supervision.restart_max_delay_ms",
            &v.restart_max_delay_ms,
        )?;
        check(
            v.restart_multiplier >= 1.0,
            "supervision.restart_multiplier",
            &v.restart_multiplier,
        )?;
        check(
            (0.0..1.0).contains(&v.restart_jitter),
            "supervision.restart_jitter",
            &v.restart_jitter,
        )?;
        let l = &self.leader;
        check(
            l.retry_interval_ms > 0,
            "leader.retry_interval_ms",
            &l.retry_interval_ms,
        )?;
        check(
            l.check_interval_ms > 0,
            "leader.check_interval_ms",
            &l.check_interval_ms,
        )
    }

    fn validate_rest(&self) -> anyhow::Result<()> {
        self.validate_supervision()?;
        let r = &self.retry;
        check(r.max_retries > 0, "retry.max_retries", &r.max_retries)?;
        check(
            r.initial_delay_ms > 0,
            "retry.initial_delay_ms",
            &r.initial_delay_ms,
        )?;
        check(
            r.max_delay_ms >= r.initial_delay_ms,
            "retry.max_delay_ms",
            &r.max_delay_ms,
        )?;
        check(r.multiplier >= 1.0, "retry.multiplier", &r.multiplier)?;
        check(
            self.service.max_concurrent_creations > 0,
            "service.max_concurrent_creations",
            &self.service.max_concurrent_creations,
        )?;
        check(
            self.monitoring.health_check_interval_secs > 0,
            "monitoring.health_check_interval_secs",
            &self.monitoring.health_check_interval_secs,
        )?;
        let e = &self.events;
        check(e.live_buffer >= 16, "events.live_buffer", &e.live_buffer)?;
        check(
            e.subscriber_buffer >= 1,
            "events.subscriber_buffer",
            &e.subscriber_buffer,
        )?;
        check(
            (1..=10_000).contains(&e.catch_up_page),
            "events.catch_up_page",
            &e.catch_up_page,
        )?;
        check(
            e.prune_interval_secs > 0,
            "events.prune_interval_secs",
            &e.prune_interval_secs,
        )?;
        check(
            e.max_subscribers > 0,
            "events.max_subscribers",
            &e.max_subscribers,
        )?;
        check(
            ["plain", "json"].contains(&self.telemetry.log_format.as_str()),
            "telemetry.log_format (LOG_FORMAT)",
            &self.telemetry.log_format,
        )?;
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                bail!("invalid auth.tokens[{i}].token: must be at least 16 characters (value not shown)");
            }
        }
        Ok(())
    }

    /// gRPC listen address.
    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.bind_address, self.server.grpc_port)
    }

    /// REST listen address.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.bind_address, self.server.api_port)
    }

    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_secs)
    }

    /// The config as TOML, secrets redacted (for `--dump-config`); the
    /// text is a config file the server reads back.
    pub fn to_toml_redacted(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(&self.redacted()).context("serializing config")
    }

    /// A copy safe to print: tokens and a set webhook secret replaced.
    fn redacted(&self) -> Config {
        let mut copy = self.clone();
        for t in &mut copy.auth.tokens {
            t.token = REDACTED.into();
        }
        if !copy.lifecycle.webhook_secret.is_empty() {
            copy.lifecycle.webhook_secret = REDACTED.into();
        }
        copy
    }
}

/// What `--dump-config` prints in place of a secret.
const REDACTED: &str = "<redacted>";

fn check(ok: bool, key: &str, value: &dyn std::fmt::Display) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        bail!(
            "invalid value {value:?} for {key}",
            value = value.to_string()
        )
    }
}

/// figment's message names the key, the value and where it came from
/// (file or environment variable); keep all of it.
fn describe_figment_error(err: figment::Error) -> anyhow::Error {
    let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
    anyhow::anyhow!("invalid configuration: {}", messages.join("; "))
}

/// The default config file: `config.toml` in the working directory.
pub fn default_config_path() -> PathBuf {
    PathBuf::from("config.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

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
