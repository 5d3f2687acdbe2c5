//! Ctrl-C and SIGTERM during a bench: the processes the bench started are
//! told to stop, the waiting main thread sees [`check`] fail, and the
//! [`super::lab::Lab`]'s `Drop` removes namespaces, mounts and files.

use std::sync::{
    Mutex, Once,
    atomic::{AtomicBool, Ordering},
};

use anyhow::{Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Installs the handler for SIGINT, SIGTERM and SIGHUP (once per process).
pub fn install() -> Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, Ordering::SeqCst);
            for pid in running().iter() {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
            }
        });
    });
    Ok(result?)
}

/// Whether a stop signal has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once a stop signal has arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted; stopping and cleaning up");
    }
    Ok(())
}

/// Remembers a started process, so that a stop signal reaches it too.
pub fn register(pid: u32) {
    running().push(pid);
}

/// Forgets a process before it is reaped (its id may then be reused).
pub fn unregister(pid: u32) {
    running().retain(|p| *p != pid);
}

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
