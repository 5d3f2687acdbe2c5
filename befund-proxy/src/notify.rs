//! systemd readiness notification (`Type=notify` / `notify-reload`) and the
//! watchdog. Without `$NOTIFY_SOCKET` every call does nothing.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(error = %error, "cannot notify the service manager");
    }
}

/// The filter is attached and the listeners are bound: ready to serve.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (with the monotonic time `notify-reload` asks for).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A reload finished; `status` says how.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The daemon is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog interval systemd asks for, if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Sends `WATCHDOG=1` every half of `interval` until `cancel`, each time
/// only if `responding` (given a quarter of `interval`) says the threads
/// that serve connections still run. Runs on the daemon's runtime, so a
/// stuck runtime stops the pings too; either way systemd restarts the
/// daemon.
pub async fn watchdog<F, R>(interval: Duration, cancel: CancellationToken, mut responding: F)
where
    F: FnMut(Duration) -> R,
    R: Future<Output = bool>,
{
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let answered = tokio::select! {
            () = cancel.cancelled() => return,
            answered = responding(interval / 4) => answered,
        };
        if answered {
            send(&[NotifyState::Watchdog]);
        } else {
            tracing::error!(
                side = "proxy",
                "a connection worker thread is stuck; withholding the watchdog ping so that \
                 the service manager restarts the daemon"
            );
        }
    }
}
