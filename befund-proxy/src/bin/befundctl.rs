//! `befundctl`: the operator's tool for the firewall, the internal CA and the audit.

use std::process::ExitCode;

use befund_proxy::cli;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "befundctl", version, about = "Operate a Befund Gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the lab's internal CA or adopt an existing one.
    #[command(subcommand)]
    Ca(cli::ca::CaCommand),
    /// Issue, list, show, revoke and export certificates.
    #[command(subcommand)]
    Cert(cli::cert::CertCommand),
    /// Publish a fresh CRL (run daily by befund-crl.timer).
    Crl(cli::crl::CrlArgs),
}

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result: anyhow::Result<()> = match command {
        Command::Ca(cmd) => cmd.run().map_err(Into::into),
        Command::Cert(cmd) => cmd.run().map_err(Into::into),
        Command::Crl(cmd) => cmd.run().map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("befundctl: {e}");
            ExitCode::FAILURE
        }
    }
}
