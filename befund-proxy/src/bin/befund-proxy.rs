//! `befund-proxy`: the Befund Gateway daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use befund_proxy::config::{Config, DEFAULT_CONFIG_PATH};
use befund_proxy::{check, logging, privileges, proxy};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "befund-proxy", version, about = "Befund Gateway daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and every file it names, without starting anything.
    CheckConfig {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run only the mTLS reverse proxy (no XDP filter), e.g. for testing.
    Serve {
        /// The configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => match serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("befund-proxy: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
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
            ExitCode::from(2)
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    logging::init(&config.log)?;
    let bound = proxy::Proxy::load(&config)?.bind()?;
    if let Some(user) = &config.runtime.user {
        privileges::drop_to_user(user)?;
    }
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(bound.serve(shutdown_signal()))?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
