//! Configuration: embedded defaults, then `config.toml` (seed 001's
//! sections), then environment variables (seed 000's names, plus
//! `VALENCE_LIFECYCLE_<SECTION>__<KEY>` for everything), then command-line flags.
//! [`Config::validate`] checks the merged result once; any error names the
//! key and the value and stops start-up.

mod auth;
mod dump;
pub(crate) mod env;
mod example;
mod sections;
mod shards;
mod validation;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::bail;
use figment::{
    providers::{Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

pub use self::{
    auth::{AuthConfig, Role, TokenConfig, TokenSource, MIN_TOKEN_LEN},
    env::ENV_PREFIX,
    example::example_toml,
    sections::{
        DatabaseConfig, EventsConfig, LeaderConfig, LeasesConfig, LifecycleConfig,
        MonitoringConfig, RetryConfig, RpcConfig, ServerConfig, ServiceConfig, ShardConfig,
        SingletonsConfig, SupervisionConfig, TelemetryConfig, TlsConfig,
    },
    shards::MAX_SHARDS,
};

/// The whole server configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners and request limits.
    pub server: ServerConfig,
    /// TLS on both listeners.
    pub tls: TlsConfig,
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
    /// How replicas share the shards' chain work.
    pub leases: LeasesConfig,
}

impl Config {
    /// Merges defaults, the TOML file (when it exists, or must exist when
    /// `explicit`), the environment and `overrides` (command-line flags,
    /// already in figment's nested form), then validates.
    pub fn load(file: &Path, explicit: bool, overrides: Figment) -> anyhow::Result<Config> {
        if explicit && !file.exists() {
            bail!("config file {} does not exist", file.display());
        }
        // `file_exact`: the named file only. `Toml::file` would also search
        // the parent directories and pick up another deployment's file
        // (tokens included) from above the working directory.
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if file.exists() {
            figment = figment.merge(Toml::file_exact(file));
        }
        env::check()?;
        let figment = env::merge(figment).merge(overrides);
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.validate()?;
        Ok(config)
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
