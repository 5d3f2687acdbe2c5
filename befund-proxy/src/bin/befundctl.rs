//! `befundctl`: the operator's tool for the firewall, the internal CA and the audit.

use std::process::ExitCode;

use befund_proxy::cli::{self, audit, fw, reload};
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
    /// Create the lab's internal CA or adopt an existing one.
    #[command(subcommand)]
    Ca(cli::ca::CaCommand),
    /// Issue, list, show, revoke and export certificates.
    #[command(subcommand)]
    Cert(cli::cert::CertCommand),
    /// Publish a fresh CRL (run daily by befund-crl.timer).
    Crl(cli::crl::CrlArgs),
    /// Run the lab's access tests against a deployment and write the protocol.
    Audit(audit::AuditArgs),
    /// Make the running daemon re-read its configuration, certificates, CRLs
    /// and firewall rules (all or nothing) and report whether it did.
    Reload(reload::ReloadArgs),
}

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result: anyhow::Result<()> = match command {
        Command::Fw(args) => fw::run(args).map(|out| print!("{out}")).map_err(Into::into),
        Command::Ca(cmd) => cmd.run().map_err(Into::into),
        Command::Cert(cmd) => cmd.run().map_err(Into::into),
        Command::Crl(cmd) => cmd.run().map_err(Into::into),
        Command::Audit(args) => audit::run_and_exit(&args),
        Command::Reload(args) => reload::run(&args)
            .map(|line| println!("{line}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("befundctl: {e}");
            ExitCode::FAILURE
        }
    }
}
