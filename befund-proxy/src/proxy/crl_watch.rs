//! Picks up changed CRL files without a reload, so that `befundctl cert
//! revoke` on the appliance takes effect by itself.
//!
//! Every [`POLL_INTERVAL`] the watcher hashes each configured CRL file and
//! compares it with the hash the state in force was built from. On a change
//! it re-reads only the CRLs (certificates, keys and CA bundle stay), checks
//! them like a reload does and puts the new state in force; the connection
//! registry then closes connections whose certificates are now revoked. A
//! CRL that cannot be used leaves the previous CRLs in force and is logged
//! once per content.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics::ProxyMetrics;
use crate::tls::SharedTlsState;
use crate::tls::crl::content_hash;

/// How often the CRL files are looked at. Polling a few small files costs
/// nothing measurable and, unlike inotify, also sees a file replaced by a
/// rename or on a bind mount.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a file held at one look: its content hash, or why it could not be read.
type Seen = Vec<(PathBuf, Result<[u8; 32], String>)>;

/// Watches the CRL files until `cancel`.
pub(crate) async fn watch_files(
    tls: SharedTlsState,
    metrics: Arc<ProxyMetrics>,
    cancel: CancellationToken,
) {
    let mut last_failure: Option<Seen> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let state = tls.load_full();
        let files = state.crl_files().to_vec();
        let Ok(seen) = tokio::task::spawn_blocking(move || look(&files)).await else {
            continue;
        };
        let changed: Vec<&PathBuf> = seen
            .iter()
            .zip(state.crl_monitor.crls())
            .filter(|((_, now), loaded)| now.as_ref().ok() != Some(&loaded.content_hash))
            .map(|((path, _), _)| path)
            .collect();
        if changed.is_empty() {
            last_failure = None;
            continue;
        }
        if last_failure.as_ref() == Some(&seen) {
            continue;
        }
        let files: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();

        let current = state.clone();
        let rebuilt = tokio::task::spawn_blocking(move || current.with_fresh_crls()).await;
        match rebuilt {
            Ok(Ok(fresh)) => {
                let fresh = Arc::new(fresh);
                fresh.crl_monitor.log_standing(std::time::SystemTime::now());
                if tls.replace_if_current(&state, fresh.clone()) {
                    metrics.crl_updates.inc();
                    let revoked: Vec<usize> =
                        fresh.crl_monitor.crls().iter().map(|c| c.revoked).collect();
                    tracing::info!(
                        files = ?files, revoked = ?revoked,
                        "changed CRL in force for new handshakes and open connections"
                    );
                }
                last_failure = None;
            }
            Ok(Err(e)) => {
                metrics.crl_update_failures.inc();
                tracing::error!(
                    files = ?files, error = %e,
                    "changed CRL not usable; the previous CRLs stay in force"
                );
                last_failure = Some(seen);
            }
            Err(e) => {
                tracing::error!(side = "proxy", error = %e, "re-reading the CRLs failed");
            }
        }
    }
}

fn look(files: &[PathBuf]) -> Seen {
    files
        .iter()
        .map(|path| {
            let seen = std::fs::read(path)
                .map(|bytes| content_hash(&bytes))
                .map_err(|e| e.to_string());
            (path.clone(), seen)
        })
        .collect()
}
