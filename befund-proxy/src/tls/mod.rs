//! TLS termination: the server certificate, the client-certificate policy
//! (lab CA, CRLs, `clientAuth`), and why handshakes are refused.
//!
//! [`TlsState::load`] reads everything from the files the configuration names
//! and builds the rustls server configuration. The proxy keeps the state in a
//! [`SharedTlsState`], so a reload can swap in a freshly loaded state. New
//! handshakes use the state in force; every swap is announced to
//! subscribers, so open connections can be checked against the new state.

pub mod client_auth;
pub mod crl;
pub mod dn;
pub mod files;
pub mod refusal;
pub mod server;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

pub use self::crl::{CrlInfo, CrlMonitor, CrlStanding};
pub use self::refusal::{RefusalCounters, RefusalReason};
pub use self::server::{ServerCertificate, TlsState, crypto_provider};

/// The TLS state currently in force; swap it to reload certificates and CRLs.
pub type SharedTlsState = Arc<TlsStateCell>;

/// Holds the [`TlsState`] in force and counts its replacements.
#[derive(Debug)]
pub struct TlsStateCell {
    current: ArcSwap<TlsState>,
    generation: watch::Sender<u64>,
}

impl TlsStateCell {
    /// A cell holding `state` (generation 0).
    pub fn new(state: TlsState) -> Self {
        Self {
            current: ArcSwap::from_pointee(state),
            generation: watch::Sender::new(0),
        }
    }

    /// The state in force, for a short look.
    pub fn load(&self) -> Guard<Arc<TlsState>> {
        self.current.load()
    }

    /// The state in force, to keep.
    pub fn load_full(&self) -> Arc<TlsState> {
        self.current.load_full()
    }

    /// Puts `state` in force and tells the subscribers.
    pub fn store(&self, state: Arc<TlsState>) {
        self.current.store(state);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Puts `state` in force only if `expected` is still in force (so a
    /// state derived from an older one never replaces a newer reload).
    /// Returns whether it did.
    pub fn replace_if_current(&self, expected: &Arc<TlsState>, state: Arc<TlsState>) -> bool {
        let previous = self.current.compare_and_swap(expected, state);
        let replaced = Arc::ptr_eq(&previous, expected);
        if replaced {
            self.generation.send_modify(|g| *g += 1);
        }
        replaced
    }

    /// Notified at every replacement.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// How many times the state was replaced.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
}
