//! `valence-lifecycle`: the Valence Lifecycle Manager daemon.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use figment::{providers::Serialized, Figment};
use serde_json::{json, Map, Value};
use valence_lifecycle_server::{config, store::Store, telemetry};

/// Manages the lifecycle of Valence accounts and sessions on Solana.
#[derive(Debug, Parser)]
#[command(name = "valence-lifecycle", version, about)]
struct Cli {
    /// Config file (default: ./config.toml when it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print the merged configuration (tokens redacted) and exit.
    #[arg(long, global = true)]
    dump_config: bool,
    /// gRPC port (overrides GRPC_PORT and the file).
    #[arg(long, global = true)]
    grpc_port: Option<u16>,
    /// REST port (overrides API_PORT and the file).
    #[arg(long, global = true)]
    api_port: Option<u16>,
    /// Address to bind (overrides BIND_ADDRESS and the file).
    #[arg(long, global = true)]
    bind_address: Option<String>,
    /// Database URL (overrides DATABASE_URL and the file).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Solana RPC URL (overrides RPC_URL and the file).
    #[arg(long, global = true)]
    rpc_url: Option<String>,
    /// Log format: plain or json (overrides LOG_FORMAT and the file).
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

impl Cli {
    /// Flags as a figment layer, nested like the config file.
    fn overrides(&self) -> Figment {
        let mut root = Map::new();
        let mut set = |section: &str, key: &str, value: Value| {
            let table = root.entry(section.to_string()).or_insert_with(|| json!({}));
            table[key] = value;
        };
        if let Some(v) = self.grpc_port {
            set("server", "grpc_port", json!(v));
        }
        if let Some(v) = self.api_port {
            set("server", "api_port", json!(v));
        }
        if let Some(v) = &self.bind_address {
            set("server", "bind_address", json!(v));
        }
        if let Some(v) = &self.database_url {
            set("database", "url", json!(v));
        }
        if let Some(v) = &self.rpc_url {
            set("rpc", "url", json!(v));
        }
        if let Some(v) = &self.log_format {
            set("telemetry", "log_format", json!(v));
        }
        Figment::from(Serialized::defaults(Value::Object(root)))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (config::default_config_path(), false),
    };
    let config = match config::Config::load(&path, explicit, cli.overrides()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if cli.dump_config {
        return match config.to_toml_redacted() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config))
}

async fn run(command: Command, config: config::Config) -> ExitCode {
    let _guard = match telemetry::init(&config.telemetry) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Migrate => Store::connect(&config.database).await.map(|_| {
            tracing::info!("migrations applied");
            true
        }),
        Command::Serve => valence_lifecycle_server::serve(config).await,
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            tracing::error!("shutdown was not clean");
            ExitCode::from(3)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
