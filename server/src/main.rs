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
    /// Print every configuration key with its default and environment
    /// variables, commented (server/deploy/config.example.toml), and exit.
    #[arg(long)]
    print_example_config: bool,
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
    /// Put shard-program records on the running server's embedded network.
    ///
    /// It finds that network by asking the server on its gRPC port
    /// (--grpc-port / GRPC_PORT, and --config for the file); the server's
    /// own settings (--rpc-url, --database-url, --api-port, --bind-address,
    /// --log-format, --dump-config) do not apply and are refused.
    #[command(subcommand)]
    Dev(DevCommand),
}

/// Developer commands (embedded network only).
#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Place an AccountRequest record; prints its address.
    RequestAccount {
        /// Owner of the future account (base58; default: a new key).
        #[arg(long)]
        owner: Option<String>,
        /// A capability (repeatable).
        #[arg(long = "capability", default_value = "transfer")]
        capabilities: Vec<String>,
        /// Expected initial state hash, 64 hex characters (default: none).
        #[arg(long)]
        init_state_hash: Option<String>,
    },
    /// Place a Session record over existing accounts; prints its address.
    CreateSession {
        /// Owner (base58; default: a new key).
        #[arg(long)]
        owner: Option<String>,
        /// A member account (base58, repeatable).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// Namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Nonce.
        #[arg(long, default_value_t = 0)]
        nonce: u64,
    },
    /// Play seed 001's session factory once with real transactions
    /// (reserve, queue, initialize one and a batch, initialize by hand,
    /// reset); prints each session and what became of it.
    SessionFactory,
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

async fn run_dev(command: DevCommand, config: &config::Config) -> anyhow::Result<()> {
    use valence_lifecycle_server::chain::dev;
    let endpoint = format!("http://127.0.0.1:{}", config.server.grpc_port);
    let chain = dev::embedded_chain(&endpoint).await?;
    let pubkey =
        |field: &str, value: Option<String>| -> anyhow::Result<solana_sdk::pubkey::Pubkey> {
            match value {
                Some(v) => v.parse().map_err(|_| {
                    anyhow::anyhow!("invalid {field}: {v:?} is not a base58 public key")
                }),
                None => Ok(dev::random_key()),
            }
        };
    let key = match command {
        DevCommand::RequestAccount {
            owner,
            capabilities,
            init_state_hash,
        } => {
            let owner = pubkey("--owner", owner)?;
            let hash = match init_state_hash {
                Some(h) => hex::decode(&h)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("invalid --init-state-hash: {h:?} is not 64 hex characters")
                    })?,
                None => [0; 32],
            };
            dev::place(&chain, |key| {
                dev::account_request(key, owner, capabilities, hash)
            })
            .await?
        }
        DevCommand::CreateSession {
            owner,
            accounts,
            namespace,
            nonce,
        } => {
            let owner = pubkey("--owner", owner)?;
            let accounts = accounts
                .into_iter()
                .map(|a| pubkey("--account", Some(a)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            dev::place(&chain, |key| {
                dev::session(key, owner, &accounts, namespace, nonce)
            })
            .await?
        }
        DevCommand::SessionFactory => {
            for (outcome, session) in dev::session_factory(&chain).await? {
                println!("{session}  {outcome}");
            }
            return Ok(());
        }
    };
    println!("{key}");
    Ok(())
}

impl Cli {
    /// The global options given that `dev` would ignore.
    fn ignored_by_dev(&self) -> Vec<&'static str> {
        [
            ("--rpc-url", self.rpc_url.is_some()),
            ("--database-url", self.database_url.is_some()),
            ("--api-port", self.api_port.is_some()),
            ("--bind-address", self.bind_address.is_some()),
            ("--log-format", self.log_format.is_some()),
            ("--dump-config", self.dump_config),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Dev(_))) {
        let ignored = cli.ignored_by_dev();
        if !ignored.is_empty() {
            eprintln!(
                "error: `dev` asks the running server (on --grpc-port / GRPC_PORT) where its \
                 embedded network is; {} would be ignored: remove it",
                ignored.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    if cli.print_example_config {
        return match config::example_toml() {
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
    let file = path.exists().then_some(path);
    runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config, file))
}

async fn run(command: Command, config: config::Config, file: Option<PathBuf>) -> ExitCode {
    let _guard = match telemetry::init(&config.telemetry) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match &file {
        Some(path) => tracing::info!(file = %path.display(), "configuration file read"),
        None => tracing::info!("no configuration file: defaults, environment and flags only"),
    }
    let outcome = match command {
        Command::Migrate => Store::connect(&config.database).await.map(|_| {
            tracing::info!("migrations applied");
            true
        }),
        Command::Serve => valence_lifecycle_server::serve(config).await,
        Command::Dev(dev) => run_dev(dev, &config).await.map(|_| true),
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
