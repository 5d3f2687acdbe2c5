//! The verified connections that are open, with the certificate chain each
//! was admitted with, so that a change of the trust state (a reload, a new
//! CRL) reaches them too: every connection whose chain the new state would
//! refuse at a handshake is closed at once, requests in progress included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use crate::tls::{RefusalReason, TlsState};

/// One open, verified connection.
#[derive(Debug)]
struct Entry {
    peer: SocketAddr,
    serial: String,
    subject: String,
    chain: Arc<[CertificateDer<'static>]>,
    close: CancellationToken,
}

/// The registry of open verified connections.
#[derive(Debug, Default)]
pub struct LiveConnections {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

/// Removes its connection from the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    live: Arc<LiveConnections>,
    id: u64,
    close: CancellationToken,
}

impl Registration {
    /// Cancelled when the connection must close because its certificate is
    /// no longer admitted.
    pub fn closed(&self) -> &CancellationToken {
        &self.close
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.live.lock().remove(&self.id);
    }
}

/// A connection closed by [`LiveConnections::recheck`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The client's address.
    pub peer: SocketAddr,
    /// The certificate's serial number.
    pub serial: String,
    /// The certificate's subject.
    pub subject: String,
    /// Why the new state refuses it.
    pub reason: RefusalReason,
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a connection admitted with `chain` (leaf first).
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        serial: String,
        subject: String,
        chain: Arc<[CertificateDer<'static>]>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                peer,
                serial,
                subject,
                chain,
                close: close.clone(),
            },
        );
        Registration {
            live: self.clone(),
            id,
            close,
        }
    }

    /// Number of open verified connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no verified connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every open connection's chain against `state` and closes
    /// those it refuses. Each distinct chain is verified once. Returns how
    /// many connections were checked and the ones closed.
    pub fn recheck(&self, state: &TlsState) -> (usize, Vec<Closed>) {
        let snapshot: Vec<(u64, Arc<[CertificateDer<'static>]>)> = self
            .lock()
            .iter()
            .map(|(id, entry)| (*id, entry.chain.clone()))
            .collect();

        let checked = snapshot.len();
        let mut verdicts: HashMap<Vec<u8>, Option<RefusalReason>> = HashMap::new();
        let mut refused = Vec::new();
        for (id, chain) in snapshot {
            let key = chain
                .first()
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default();
            let verdict = *verdicts.entry(key).or_insert_with(|| {
                state
                    .verify_client_chain(&chain)
                    .err()
                    .map(|e| RefusalReason::from_tls_error(&e))
            });
            if let Some(reason) = verdict {
                refused.push((id, reason));
            }
        }

        let entries = self.lock();
        let closed = refused
            .into_iter()
            .filter_map(|(id, reason)| {
                let entry = entries.get(&id)?;
                entry.close.cancel();
                Some(Closed {
                    peer: entry.peer,
                    serial: entry.serial.clone(),
                    subject: entry.subject.clone(),
                    reason,
                })
            })
            .collect();
        (checked, closed)
    }
}
