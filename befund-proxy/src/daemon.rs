//! `befund-proxy run`: the daemon's start-up, reload and shutdown.
//!
//! Start-up order matters for failing closed: the filter is attached (or
//! swapped in place) before anything listens, and it stays pinned when the
//! daemon exits, on purpose or not.

use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    config::{Config, ConfigError},
    firewall::{Firewall, FirewallError, StartReport},
};

/// Why the daemon could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The firewall could not be set up.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// Signal handlers could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Reads and validates the configuration file, as `check-config` does.
///
/// # Errors
///
/// The [`ConfigError`] naming file, key and fix.
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    Config::load(path)
}

/// Runs the daemon until SIGTERM or SIGINT. SIGHUP re-reads the
/// configuration and applies the firewall section.
///
/// # Errors
///
/// A [`DaemonError`] from start-up. Errors during a reload are logged and
/// the daemon keeps running with the previous settings.
pub async fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = Config::load(config_path)?;
    let mut sigterm = install(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = install(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = install(SignalKind::hangup(), "SIGHUP")?;

    let (mut firewall, report) = Firewall::start(&config.firewall)?;
    log_start(&config, &report);

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => reload(config_path.to_path_buf(), &mut firewall),
        }
    }
    info!(
        interface = %firewall.config().interface,
        "stopping; the filter stays attached"
    );
    Ok(())
}

fn install(
    kind: SignalKind,
    name: &'static str,
) -> Result<tokio::signal::unix::Signal, DaemonError> {
    signal(kind).map_err(|source| DaemonError::Signal {
        signal: name,
        source,
    })
}

fn log_start(config: &Config, report: &StartReport) {
    let fw = &config.firewall;
    info!(
        interface = %fw.interface,
        mode = %fw.xdp_mode,
        xdp = ?report.xdp,
        egress = ?report.egress,
        pin_root = %fw.pin_root.display(),
        rules = report.rules,
        local_addresses = report.local_addresses,
        lockdown = report.lockdown,
        "firewall attached"
    );
}

fn reload(path: PathBuf, firewall: &mut Firewall) {
    info!(config = %path.display(), "reloading");
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            error!(error = %e, "reload rejected, keeping the running configuration");
            return;
        }
    };
    if let Err(e) = firewall.reload(&config.firewall) {
        warn!(error = %e, "firewall reload incomplete");
    }
}
