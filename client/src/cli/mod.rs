//! `lifecyclectl`'s command line: global flags, the command tree, and the
//! dispatch from a parsed command to the module that runs it.

mod args;
mod entities;
mod events;
mod output;
mod rules;
mod singletons;
mod status;

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser, Subcommand};
use tokio::sync::OnceCell;
use valence_lifecycle_client::{ClientConfig, ClientError, LifecycleClient};

/// Help heading of the flags every command takes, so they do not mix with
/// a command's own flags.
const GLOBAL: &str = "Global options";

/// Command-line client of the Valence Lifecycle Manager.
#[derive(Debug, Parser)]
#[command(name = "lifecyclectl", version, propagate_version = true)]
pub(crate) struct Cli {
    /// gRPC endpoint of the server.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "VALENCE_ENDPOINT",
        default_value = ClientConfig::DEFAULT_ENDPOINT
    )]
    endpoint: String,
    /// Bearer token (reader, operator or admin role).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "VALENCE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// PEM CA certificates of the server's TLS certificate: connect with
    /// TLS (`https://` is then the default scheme).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "VALENCE_CA_FILE",
        value_name = "PEM"
    )]
    ca_file: Option<std::path::PathBuf>,
    /// Print responses as JSON instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Deadline of each call, in seconds.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        default_value_t = 30,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout: u64,
    /// More output: heartbeats in `events watch`, debug logs on stderr.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// gRPC health of the server and of each API service (exit 1 unless serving).
    Health,
    /// Service statistics and component states.
    Stats,
    /// Initialized accounts.
    #[command(subcommand)]
    Accounts(entities::AccountsCommand),
    /// Requests to initialize accounts.
    #[command(subcommand, name = "account-requests")]
    AccountRequests(entities::AccountRequestsCommand),
    /// Sessions.
    #[command(subcommand)]
    Sessions(entities::SessionsCommand),
    /// The linear state and transition history of an account or session.
    Progression {
        /// Account, account request or session id.
        id: String,
    },
    /// The event log: list it, or watch it live.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Progression rules.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Singleton programs (processor, scheduler, diff); needs the admin role.
    #[command(subcommand)]
    Singletons(singletons::SingletonsCommand),
}

/// What every command needs: the client and the output mode.
#[derive(Debug)]
pub(crate) struct Context {
    /// How to connect.
    config: ClientConfig,
    /// The client, connected on first use.
    client: OnceCell<LifecycleClient>,
    /// `--json` was given.
    pub(crate) json: bool,
    /// `--verbose` was given.
    pub(crate) verbose: bool,
}

/// Parses the command line, runs the command and turns the outcome into the
/// exit status: 0 on success, 1 on an error (printed as
/// `error: <code>: <message>`), 2 on a usage error (printed by clap).
pub(crate) async fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match execute(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}: {error}", error.code_name());
            ExitCode::FAILURE
        }
    }
}

impl Context {
    /// The connected client. Connecting on first use lets commands check
    /// their local input (rule files, flags) first, so those errors show
    /// even when the server is down.
    pub(crate) async fn client(&self) -> Result<&LifecycleClient, ClientError> {
        self.client
            .get_or_try_init(|| LifecycleClient::connect(self.config.clone()))
            .await
    }
}

async fn execute(cli: Cli) -> Result<ExitCode, ClientError> {
    let config = ClientConfig {
        endpoint: cli.endpoint,
        token: cli.token,
        ca_file: cli.ca_file,
        request_timeout: Duration::from_secs(cli.timeout),
        ..ClientConfig::default()
    };
    let ctx = Context {
        config,
        client: OnceCell::new(),
        json: cli.json,
        verbose: cli.verbose,
    };
    match cli.command {
        // Health is the one command whose answer decides the exit status.
        Command::Health => return status::health(&ctx).await,
        Command::Stats => status::stats(&ctx).await?,
        Command::Accounts(command) => entities::accounts(&ctx, command).await?,
        Command::AccountRequests(command) => entities::account_requests(&ctx, command).await?,
        Command::Sessions(command) => entities::sessions(&ctx, command).await?,
        Command::Progression { id } => entities::progression(&ctx, id).await?,
        Command::Events(command) => events::run(&ctx, command).await?,
        Command::Rules(command) => rules::run(&ctx, command).await?,
        Command::Singletons(command) => singletons::run(&ctx, command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Reports a usage error the way clap does (with the usage line) and exits
/// with status 2; for checks clap's attributes cannot express.
pub(crate) fn usage_error(message: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

/// Logs go to stderr: warnings (such as subscription reconnects) always,
/// this crate's debug messages with --verbose; RUST_LOG overrides both.
fn init_logging(verbose: bool) {
    let default = if verbose {
        "warn,valence_lifecycle_client=debug"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal, not a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "lifecyclectl",
            "accounts",
            "list",
            "--json",
            "--endpoint",
            "http://h:1",
            "--timeout",
            "3",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.endpoint, "http://h:1");
        assert_eq!(cli.timeout, 3);
    }
}
