//! `befundctl`: the operator's tool for the firewall, the internal CA and the audit.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "befundctl", version, about = "Operate a Befund Gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() {
    let Cli { command } = Cli::parse();
    match command {}
}
