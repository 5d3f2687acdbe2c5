//! `befundctl`: the operator's tool for the firewall, the internal CA and the audit.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "befundctl", version, about = "Operate a Befund Gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the lab's access tests against a deployment and write the protocol.
    Audit(befund_proxy::cli::audit::AuditArgs),
}

fn main() {
    let Cli { command } = Cli::parse();
    match command {
        Command::Audit(args) => befund_proxy::cli::audit::run_and_exit(&args),
    }
}
