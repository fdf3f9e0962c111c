//! `lifecyclectl`: the command-line client of the Valence Lifecycle Manager.
//! Run `lifecyclectl --help` for the command tree.

mod cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cli::run().await
}
