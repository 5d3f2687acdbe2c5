//! `befund-proxy`: the gateway daemon.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use befund_proxy::{config::DEFAULT_CONFIG_PATH, daemon};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "befund-proxy", version, about = "The Befund Gateway daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the WAN filter and run until SIGTERM/SIGINT (SIGHUP reloads).
    /// The filter stays attached when the daemon stops.
    Run {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration file and exit.
    CheckConfig {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

/// Exit status for an unusable configuration (sysexits' EX_CONFIG).
const EX_CONFIG: u8 = 78;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match Cli::parse().command {
        Command::CheckConfig { config } => match daemon::check_config(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("befund-proxy: {e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Run { config } => match daemon::run(&config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(daemon::DaemonError::Config(e)) => {
                eprintln!("befund-proxy: {e}");
                ExitCode::from(EX_CONFIG)
            }
            Err(e) => {
                eprintln!("befund-proxy: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
