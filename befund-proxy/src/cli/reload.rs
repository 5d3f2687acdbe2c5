//! `befundctl reload`: asks the running daemon to re-read its configuration,
//! certificates, CRLs and firewall section, and reports whether it did.
//!
//! The daemon is found through its pid file (`[runtime] pid_file`), which it
//! keeps locked while it runs, so a stale file is never signalled. The
//! outcome is read from the daemon's admin listener (`GET /status`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::admin::Status;
use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::pidfile::{self, PidFileError};

/// Arguments of `befundctl reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The configuration file the daemon runs with (it names the pid file
    /// and the admin listener).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// How long to wait for the daemon to report the outcome, e.g. "30s".
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Why `befundctl reload` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon was not found.
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    /// The signal could not be sent.
    #[error("cannot signal befund-proxy (pid {pid}): {source}; run befundctl as root")]
    Signal {
        /// The daemon's pid.
        pid: i32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The daemon rejected the reload; nothing changed.
    #[error("reload rejected, the daemon keeps its running configuration: {0}")]
    Rejected(String),
    /// No outcome arrived in time.
    #[error(
        "befund-proxy (pid {pid}) reported no reload outcome within {timeout:?}; see `journalctl -u befund-proxy`"
    )]
    NoOutcome {
        /// The daemon's pid.
        pid: i32,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Signals the daemon and waits for the outcome. Returns the line to print.
///
/// # Errors
///
/// [`ReloadError`] when the daemon is not running, cannot be signalled, or
/// rejected the new configuration.
pub fn run(args: &ReloadArgs) -> Result<String, ReloadError> {
    let config = Config::load(&args.config)?;
    let pid = pidfile::running_daemon(&config.runtime.pid_file)?;
    let admin = config.admin.listen;
    let before = fetch_status(admin);

    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|source| ReloadError::Signal { pid, source })?;

    let Some(before) = before else {
        return Ok(format!(
            "asked befund-proxy (pid {pid}) to reload; its admin listener {admin} does not \
             answer, so see `journalctl -u befund-proxy` for the outcome"
        ));
    };
    wait_for_outcome(admin, pid, before.reloads, args.timeout)
}

fn wait_for_outcome(
    admin: SocketAddr,
    pid: i32,
    reloads_before: u64,
    timeout: Duration,
) -> Result<String, ReloadError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let Some(status) = fetch_status(admin) else {
            continue;
        };
        if status.reloads <= reloads_before {
            continue;
        }
        return match status.last_reload {
            Some(outcome) if outcome.applied => Ok(format!(
                "befund-proxy (pid {pid}) reloaded: {}",
                outcome.message
            )),
            Some(outcome) => Err(ReloadError::Rejected(outcome.message)),
            None => continue,
        };
    }
    Err(ReloadError::NoOutcome { pid, timeout })
}

/// `GET /status` from the admin listener; `None` when it does not answer.
fn fetch_status(admin: SocketAddr) -> Option<Status> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let body = tokio::time::timeout(Duration::from_secs(3), get(admin, "/status"))
            .await
            .ok()??;
        serde_json::from_slice(&body).ok()
    })
}

async fn get(addr: SocketAddr, path: &str) -> Option<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(response.into_body().collect().await.ok()?.to_bytes())
}
