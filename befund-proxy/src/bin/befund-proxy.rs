//! `befund-proxy`: the Befund Gateway daemon.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use befund_proxy::{
    check,
    config::{Config, DEFAULT_CONFIG_PATH},
    daemon, logging,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "befund-proxy", version, about = "The Befund Gateway daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the WAN filter and serve HTTPS until SIGTERM/SIGINT (SIGHUP
    /// reloads). The filter stays attached when the daemon stops.
    Run {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate the configuration and every file it names, without starting
    /// anything.
    CheckConfig {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

/// Exit status for an unusable configuration (sysexits' EX_CONFIG).
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run(&config),
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("befund-proxy: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(e) = logging::init(&config.log) {
        eprintln!("befund-proxy: {}: key `log.level`: {e}", path.display());
        return ExitCode::from(EX_CONFIG);
    }
    match daemon::run(path, config) {
        Ok(()) => ExitCode::SUCCESS,
        // A problem with the configuration or a file it names: a restart
        // cannot help, so exit with EX_CONFIG (the unit does not restart on it).
        Err(
            daemon::DaemonError::Config(e)
            | daemon::DaemonError::Proxy(befund_proxy::proxy::ProxyError::Config(e)),
        ) => {
            eprintln!("befund-proxy: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("befund-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    match check::check_config(path) {
        Ok(report) => {
            for line in report.lines {
                println!("{line}");
            }
            println!("{}: configuration OK", path.display());
            ExitCode::SUCCESS
        }
        Err(failed) => {
            for error in &failed.errors {
                eprintln!("error: {error}");
            }
            ExitCode::from(EX_CONFIG)
        }
    }
}
