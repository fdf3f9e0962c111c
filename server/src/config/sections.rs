//! The sections of `config.toml`, one struct each, with their embedded
//! defaults.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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

/// One `[[lifecycle.shards]]` table: a shard program to watch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Base58 program id.
    pub id: String,
    /// Short name for metrics, logs and filters; empty means the id.
    #[serde(default)]
    pub name: String,
}

/// `[leases]`: how replicas on one PostgreSQL share the shards' chain work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LeasesConfig {
    /// How long a lease lasts unless renewed (env LEASE_TTL_MS); also how
    /// long a silent replica still counts as live.
    pub ttl_ms: u64,
    /// How often a replica renews its leases, beats its heartbeat and
    /// rebalances (env LEASE_RENEW_INTERVAL_MS); well under `ttl_ms`.
    pub renew_interval_ms: u64,
    /// Hand shards over when a replica joins (each replica keeps its
    /// quota: shards ÷ live replicas, the first `shards % live` by replica
    /// id one more). False: replicas keep what they hold and only take
    /// free or expired shards, up to shards ÷ live rounded up.
    pub rebalance: bool,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        LeasesConfig {
            ttl_ms: 10_000,
            renew_interval_ms: 2_000,
            rebalance: true,
        }
    }
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
    /// Connections each listener holds at once. At the cap a new connection
    /// closes the one that has waited longest for a request; when every
    /// connection has a request in flight, the new one is refused.
    pub max_connections: usize,
    /// Seconds a new connection has to send its first request head (REST)
    /// or the HTTP/2 preface (gRPC); a REST keep-alive connection also waits
    /// at most this long for its next request.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight.
    pub idle_timeout_secs: u64,
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
            max_connections: 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
        }
    }
}

/// `[tls]`: TLS on the gRPC and REST listeners. Off while `cert_path` is
/// empty; the files are re-read on SIGHUP (open connections keep theirs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (env TLS_CERT_PATH).
    pub cert_path: String,
    /// PEM private key of the leaf (env TLS_KEY_PATH).
    pub key_path: String,
    /// PEM CA certificates; when set, gRPC clients must present a
    /// certificate they signed (env TLS_CLIENT_CA_PATH).
    pub client_ca_path: String,
}

impl TlsConfig {
    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty()
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
    /// Serve the operator console at /console.
    pub console: bool,
    /// Where the console links a transaction: `{signature}` is replaced by
    /// its signature (empty: no links).
    pub explorer_url: String,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            health_check_interval_secs: 30,
            metrics_port: None,
            enable_prometheus: true,
            console: true,
            explorer_url: "https://explorer.solana.com/tx/{signature}".into(),
        }
    }
}

/// `[lifecycle]`: seed 000's behaviour switches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Base58 id of the shard program (env SHARD_PROGRAM_ID); empty means the stand-in on the embedded chain.
    pub shard_program_id: String,
    /// Several shard programs, comma-separated, each `<id>` or
    /// `<name>=<id>` (env SHARD_PROGRAM_IDS); when set it wins over
    /// `shards` and `shard_program_id`.
    pub shard_program_ids: String,
    /// Several shard programs as `[[lifecycle.shards]]` tables (id, name);
    /// when set they win over `shard_program_id`.
    pub shards: Vec<ShardConfig>,
    /// Seconds between reconciliation passes (env POLL_INTERVAL).
    pub poll_interval_secs: u64,
    /// Seconds between passes while both websocket feeds are healthy and
    /// have not reconnected since the last pass (env LIVE_POLL_INTERVAL);
    /// they deliver every change meanwhile, and a pass of 10^5 unchanged
    /// accounts costs the CPU of receiving them all.
    pub live_poll_interval_secs: u64,
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
            shard_program_ids: String::new(),
            shards: Vec::new(),
            poll_interval_secs: 5,
            live_poll_interval_secs: 60,
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
