//! `befundctl crl`: publish a fresh CRL of the internal CA.

use std::path::PathBuf;

use clap::Args;

use super::ca::CaDirArg;
use crate::ca::{self, CaError, CertificateAuthority, CrlLock, DEFAULT_CRL_DAYS};

/// Sign and write a fresh CRL listing every revoked certificate, with the next
/// CRL number. Safe to run on a schedule (befund-crl.timer runs it daily):
/// each run gets a higher number, and revoked serials stay on every CRL.
#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// Where to write the CRL (PEM); default: DIR/crl.pem, which the proxy loads.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Validity in days (nextUpdate = now + N days).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CRL_DAYS)]
    pub days: u32,
}

impl CrlArgs {
    /// Runs the command.
    pub fn run(self) -> Result<(), CaError> {
        let Self { dir, out, days } = self;
        let ca_dir = dir.ca_dir();
        let out = out.unwrap_or_else(|| ca_dir.crl());
        let ca = CertificateAuthority::open(&ca_dir)?;
        let _lock = CrlLock::acquire(ca_dir.root())?;
        let mut registry = ca.registry()?;

        let tx = registry.begin()?;
        let crl = ca::sign_crl(&ca, &tx, days)?;
        tx.commit()?;
        let path = ca::write_crl(&crl, &out)?;

        println!(
            "wrote CRL number {} to {} ({} revoked, this update {}, next update {})",
            crl.number,
            path.display(),
            crl.revoked,
            ca::rfc3339(crl.this_update),
            ca::rfc3339(crl.next_update)
        );
        Ok(())
    }
}
