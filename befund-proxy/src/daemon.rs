//! `befund-proxy run`: the daemon's start-up, reload and shutdown.
//!
//! Start-up order matters for failing closed:
//!
//! 1. read and validate the configuration;
//! 2. load the server certificate, the client CA bundle, the CRLs, the
//!    upstream client, the identity secret and the audit log;
//! 3. attach the XDP filter (or swap the program inside the filter an earlier
//!    run left pinned), before anything listens;
//! 4. bind the HTTPS listeners;
//! 5. drop privileges to `runtime.user`, when configured;
//! 6. serve until SIGTERM or SIGINT; SIGHUP reloads.
//!
//! The filter stays pinned when the daemon exits, on purpose or not.

use std::{path::Path, sync::Arc};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::Notify,
};
use tracing::{error, info, warn};

use crate::{
    config::{Config, ConfigError},
    firewall::{Firewall, FirewallError, StartReport},
    privileges::{self, PrivilegeError},
    proxy::{BoundProxy, Proxy, ProxyError},
    tls::{SharedTlsState, TlsState},
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
    /// The proxy could not load its files or bind.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Privileges could not be dropped.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// The async runtime or a signal handler could not be set up.
    #[error("cannot {what}: {source}")]
    Runtime {
        /// What was being set up.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Reads and validates the configuration file.
///
/// # Errors
///
/// The [`ConfigError`] naming file, key and fix.
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    Config::load(path)
}

/// Starts the daemon with `config` (read from `config_path`) and runs it until
/// SIGTERM or SIGINT.
///
/// # Errors
///
/// A [`DaemonError`] from start-up. Errors during a reload are logged and the
/// daemon keeps running with the previous state.
pub fn run(config_path: &Path, config: Config) -> Result<(), DaemonError> {
    let proxy = Proxy::load(&config)?;
    let (firewall, report) = Firewall::start(&config.firewall)?;
    log_firewall(&config, &report);
    let bound = proxy.bind()?;
    if let Some(user) = &config.runtime.user {
        let running_as = privileges::drop_to_user(user)?;
        info!(user = %user, uid = running_as.uid, gid = running_as.gid, "privileges dropped");
    }

    let runtime = tokio::runtime::Runtime::new().map_err(|source| DaemonError::Runtime {
        what: "start the async runtime",
        source,
    })?;
    runtime.block_on(serve(config_path, firewall, bound))
}

async fn serve(
    config_path: &Path,
    mut firewall: Firewall,
    bound: BoundProxy,
) -> Result<(), DaemonError> {
    let mut sigterm = install(SignalKind::terminate(), "install the SIGTERM handler")?;
    let mut sigint = install(SignalKind::interrupt(), "install the SIGINT handler")?;
    let mut sighup = install(SignalKind::hangup(), "install the SIGHUP handler")?;

    let tls = bound.tls_state();
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let mut server = tokio::spawn(bound.serve(async move { stopped.notified().await }));

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => reload(config_path, &mut firewall, &tls),
            result = &mut server => return finished(result),
        }
    }
    info!(
        interface = %firewall.config().interface,
        "stopping; the filter stays attached"
    );
    stop.notify_one();
    finished(server.await)
}

fn finished(
    result: Result<Result<(), ProxyError>, tokio::task::JoinError>,
) -> Result<(), DaemonError> {
    match result {
        Ok(result) => result.map_err(DaemonError::from),
        Err(e) => Err(DaemonError::Runtime {
            what: "keep serving",
            source: std::io::Error::other(e),
        }),
    }
}

fn install(kind: SignalKind, what: &'static str) -> Result<Signal, DaemonError> {
    signal(kind).map_err(|source| DaemonError::Runtime { what, source })
}

fn log_firewall(config: &Config, report: &StartReport) {
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

/// Re-reads the configuration and every file it names. Nothing changes
/// unless the new configuration and its TLS files are valid.
fn reload(path: &Path, firewall: &mut Firewall, tls: &SharedTlsState) {
    info!(config = %path.display(), "reloading");
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!(error = %e, "reload rejected, keeping the running configuration");
            return;
        }
    };
    let state = match TlsState::load(&config) {
        Ok(state) => state,
        Err(e) => {
            error!(error = %e, "reload rejected, keeping the running certificates");
            return;
        }
    };
    if let Err(e) = firewall.reload(&config.firewall) {
        warn!(error = %e, "firewall reload incomplete");
    }
    tls.store(Arc::new(state));
    info!("reloaded: server certificate, client CAs and CRLs in force for new handshakes");
}
