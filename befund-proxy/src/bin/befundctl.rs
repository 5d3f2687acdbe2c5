//! `befundctl`: the operator's tool for the firewall, the internal CA and the audit.

use std::process::ExitCode;

use befund_proxy::cli::{audit, fw};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "befundctl", version, about = "Operate a Befund Gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Firewall rules, counters and the filter's attachment.
    Fw(fw::FwArgs),
    /// Run the lab's access tests against a deployment and write the protocol.
    Audit(audit::AuditArgs),
}

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result = match command {
        Command::Fw(args) => fw::run(args).map_err(|e| e.to_string()),
        Command::Audit(args) => audit::run_and_exit(&args),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("befundctl: {e}");
            ExitCode::FAILURE
        }
    }
}
