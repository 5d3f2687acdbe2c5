//! `befund-proxy run`: the daemon's start-up, reload and shutdown.
//!
//! Start-up order matters for failing closed:
//!
//! 1. read and validate the configuration (the admin address must not be
//!    on the WAN interface), take the pid file;
//! 2. load the server certificate, the client CA bundle, the CRLs, the
//!    upstream client, the identity secret and the audit log;
//! 3. attach the XDP filter (or swap the program inside the filter an earlier
//!    run left pinned), before anything listens;
//! 4. bind the HTTPS listeners and the admin listener;
//! 5. drop privileges to `runtime.user`, when configured;
//! 6. start the connection worker threads, tell systemd `READY=1` and serve
//!    until SIGTERM or SIGINT; SIGHUP reloads.
//!
//! The filter stays pinned when the daemon exits, on purpose or not.
//!
//! A reload re-reads the configuration file and every file it names and
//! applies all of it or nothing: it is rejected when the file or a
//! certificate, key, CA bundle or CRL is invalid, when the `[firewall]`
//! section cannot be applied, or when a key changed that only a restart can
//! apply ([`Config::restart_only_changes`]). The firewall section is checked
//! before anything is written, and the TLS state is swapped last.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::Notify,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    admin::{
        self, AdminState, StatusBoard,
        health::{FilterCheck, Health},
        metrics::Sources,
    },
    config::{Config, ConfigError},
    firewall::{
        Firewall, FirewallError, StartReport,
        attach::{self, XdpState},
        interface,
    },
    notify, open_files,
    pidfile::{PidFile, PidFileError},
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
    /// The pid file could not be taken.
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    /// The firewall could not be set up.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The proxy could not load its files or bind.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Privileges could not be dropped.
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// The filter is not where the daemon just attached it.
    #[error("the XDP filter is not attached after start-up ({0}); check `befundctl fw status`")]
    FilterMissing(String),
    /// The admin listener could not be bound.
    #[error("cannot listen for health and metrics on {addr} (admin.listen): {source}")]
    Admin {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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

/// What [`serve`] runs.
struct Parts {
    config: Config,
    firewall: Firewall,
    filter: FilterCheck,
    bound: BoundProxy,
    admin: std::net::TcpListener,
    _pid_file: Option<PidFile>,
}

/// Starts the daemon with `config` (read from `config_path`) and runs it until
/// SIGTERM or SIGINT.
///
/// # Errors
///
/// A [`DaemonError`] from start-up. Errors during a reload are logged and the
/// daemon keeps running with the previous state.
pub fn run(config_path: &Path, config: Config) -> Result<(), DaemonError> {
    raise_open_file_limit(&config);
    let pid_file = take_pid_file(&config)?;
    refuse_admin_on_wan(&config)?;
    let proxy = Proxy::load(&config)?;
    let (firewall, report) = Firewall::start(&config.firewall)?;
    log_firewall(&config, &report);
    let filter = filter_check(&config)?;

    let bound = proxy.bind()?;
    let admin_addr = config.admin.listen;
    let admin = admin::bind(admin_addr).map_err(|source| DaemonError::Admin {
        addr: admin_addr,
        source,
    })?;
    info!(addr = %admin_addr, "serving health and metrics");

    if let Some(user) = &config.runtime.user {
        let keep_bpf = !privileges::works_without_bpf_capability(|| firewall.maps_usable());
        let running_as = privileges::drop_to_user(user, keep_bpf)?;
        info!(
            user = %user, uid = running_as.uid, gid = running_as.gid,
            kept = ?running_as.kept, "privileges dropped"
        );
        privileges::check_files_after_drop(user, &config)?;
    }

    // One thread for signals, reloads, the admin listener and accepting;
    // the connections are served by the proxy's own worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Runtime {
            what: "start the async runtime",
            source,
        })?;
    let parts = Parts {
        config,
        firewall,
        filter,
        bound,
        admin,
        _pid_file: pid_file,
    };
    runtime.block_on(serve(config_path, parts))
}

/// Raises the soft limit on open files to the hard limit, and warns if even
/// that is too low for `limits.max_connections`: connections beyond it would
/// fail at accept.
fn raise_open_file_limit(config: &Config) {
    let limit = match open_files::raise_soft_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "keeping the open-file limit the daemon started with");
            return;
        }
    };
    if limit.now > limit.before {
        info!(
            from = limit.before,
            to = limit.now,
            "open-file limit raised to the hard limit"
        );
    }
    let max_connections = config.limits.max_connections.get();
    if let Some(needed) = open_files::shortfall(limit.now, max_connections) {
        warn!(
            limit = limit.now,
            needed,
            max_connections,
            "the open-file limit is too low for limits.max_connections; raise LimitNOFILE= in \
             the systemd unit (or the hard limit) or lower limits.max_connections"
        );
    }
}

/// Takes the pid file. Another daemon holding it stops the start; a pid file
/// that cannot be written (e.g. a read-only /run) only costs `befundctl
/// reload` its way to the daemon, so the filter and proxy start anyway.
fn take_pid_file(config: &Config) -> Result<Option<PidFile>, DaemonError> {
    match PidFile::acquire(&config.runtime.pid_file) {
        Ok(pid_file) => Ok(Some(pid_file)),
        Err(e @ PidFileError::AlreadyRunning { .. }) => Err(e.into()),
        Err(e) => {
            warn!(
                error = %e,
                "running without a pid file: befundctl reload cannot find this daemon, send \
                 SIGHUP instead (systemctl reload befund-proxy)"
            );
            Ok(None)
        }
    }
}

/// Where the filter was attached, to check it for `/healthz`.
fn filter_check(config: &Config) -> Result<FilterCheck, DaemonError> {
    match attach::xdp_state(&config.firewall.pin_root)? {
        XdpState::Attached {
            interface,
            program_id,
        } => Ok(FilterCheck {
            interface: interface.name,
            program_id,
        }),
        other => Err(DaemonError::FilterMissing(format!("{other:?}"))),
    }
}

/// The admin listener must not sit on the WAN interface.
fn refuse_admin_on_wan(config: &Config) -> Result<(), DaemonError> {
    let ip = config.admin.listen.ip();
    if ip.is_loopback() {
        return Ok(());
    }
    let wan = &config.firewall.interface;
    let lookup = |source| FirewallError::Netlink {
        operation: "list the WAN interface's addresses",
        source,
    };
    let Some(iface) = interface::by_name(wan).map_err(lookup)? else {
        return Ok(());
    };
    if interface::addresses(iface.index)
        .map_err(lookup)?
        .contains(&ip)
    {
        return Err(ConfigError::Invalid {
            path: config.source.clone(),
            key: "admin.listen".into(),
            problem: format!(
                "{ip} is an address of the WAN interface {wan}; use loopback (\"127.0.0.1:9090\") \
                 or an address on the lab side"
            ),
        }
        .into());
    }
    Ok(())
}

async fn serve(config_path: &Path, parts: Parts) -> Result<(), DaemonError> {
    let Parts {
        config,
        firewall,
        filter,
        bound,
        admin,
        _pid_file,
    } = parts;
    let mut sigterm = install(SignalKind::terminate(), "install the SIGTERM handler")?;
    let mut sigint = install(SignalKind::interrupt(), "install the SIGINT handler")?;
    let mut sighup = install(SignalKind::hangup(), "install the SIGHUP handler")?;

    let tls = bound.tls_state();
    let metrics = bound.metrics();
    let workers = bound.worker_probe();
    let firewall = Arc::new(Mutex::new(firewall));
    let health = Arc::new(Health::new(
        filter,
        bound.upstream_authority(),
        config.admin.upstream_check_interval,
    ));
    let status = Arc::new(StatusBoard::default());
    let registry = admin::metrics::registry(Sources {
        proxy: metrics.clone(),
        tls: tls.clone(),
        live: bound.live(),
        firewall: Some(firewall.clone()),
    });
    let admin_state = Arc::new(AdminState {
        health: health.clone(),
        registry,
        status: status.clone(),
    });
    let cancel = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(admin, admin_state, cancel.clone()));

    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let mut server = tokio::spawn(bound.serve(async move { stopped.notified().await }));
    health.set_listening(true);
    notify::ready("serving");
    if let Some(interval) = notify::watchdog_interval() {
        info!(interval = ?interval, "systemd watchdog enabled");
        tokio::spawn(notify::watchdog(interval, cancel.clone(), move |within| {
            let workers = workers.clone();
            async move { workers.all_responding(within).await }
        }));
    }

    let mut running = config;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                notify::reloading();
                let outcome = reload(config_path, &mut running, &firewall, &tls);
                let (applied, message) = match outcome {
                    Ok(message) => {
                        metrics.reloads.inc();
                        info!(what = %message, "reloaded");
                        (true, message)
                    }
                    Err(message) => {
                        metrics.reloads_rejected.inc();
                        error!(error = %message, "reload rejected, nothing changed");
                        (false, message)
                    }
                };
                notify::reloaded(if applied { "serving; reloaded" } else { "serving; reload rejected" });
                status.record_reload(applied, message);
            }
            result = &mut server => {
                health.set_listening(false);
                cancel.cancel();
                return finished(result);
            }
        }
    }
    notify::stopping();
    info!(
        interface = %running.firewall.interface,
        "stopping; the filter stays attached"
    );
    stop.notify_one();
    let result = server.await;
    health.set_listening(false);
    cancel.cancel();
    let _ = admin_task.await;
    finished(result)
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

/// Re-reads the configuration and every file it names and applies all of
/// it, or nothing. Returns what was reloaded, or why nothing changed.
fn reload(
    path: &Path,
    running: &mut Config,
    firewall: &Mutex<Firewall>,
    tls: &SharedTlsState,
) -> Result<String, String> {
    info!(config = %path.display(), "reloading");
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let restart_only = running.restart_only_changes(&config);
    if !restart_only.is_empty() {
        return Err(format!(
            "{}: changed {}, which only a restart applies (systemctl restart befund-proxy); \
             undo the change to reload the rest",
            path.display(),
            restart_only.join(", ")
        ));
    }
    let state = TlsState::load(&config).map_err(|e| e.to_string())?;

    let mut firewall = firewall.lock().unwrap_or_else(|p| p.into_inner());
    let prepared = firewall
        .prepare(&config.firewall)
        .map_err(|e| format!("{}: [firewall]: {e}", path.display()))?;
    firewall.commit(prepared).map_err(|e| {
        format!(
            "{}: [firewall]: {e}; the filter may hold part of the new rules, the TLS state is \
             unchanged",
            path.display()
        )
    })?;
    drop(firewall);

    let cert = &state.server_certificate;
    info!(
        subject = %cert.subject, key = %cert.key,
        not_after = %humantime::format_rfc3339_seconds(cert.not_after),
        crls = state.crl_monitor.crls().len(),
        "server certificate and client-certificate policy loaded"
    );
    state.crl_monitor.log_standing(std::time::SystemTime::now());
    tls.store(Arc::new(state));
    *running = config;
    Ok(
        "server certificate, client CAs, CRLs and firewall rules in force; open connections \
        re-checked"
            .to_owned(),
    )
}
