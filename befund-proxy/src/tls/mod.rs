//! TLS termination: the server certificate, the client-certificate policy
//! (lab CA, CRLs, `clientAuth`), and why handshakes are refused.
//!
//! [`TlsState::load`] reads everything from the files the configuration names
//! and builds the rustls server configuration. The proxy keeps the state in a
//! [`SharedTlsState`], so a reload can swap in a freshly loaded state while
//! connections in progress keep the one they started with.

pub mod client_auth;
pub mod crl;
pub mod dn;
pub mod files;
pub mod refusal;
pub mod server;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use self::crl::{CrlInfo, CrlMonitor, CrlStanding};
pub use self::refusal::{RefusalCounters, RefusalReason};
pub use self::server::{ServerCertificate, TlsState, crypto_provider};

/// The TLS state currently in force; swap it to reload certificates and CRLs.
pub type SharedTlsState = Arc<ArcSwap<TlsState>>;
