//! Where a CA keeps its files inside its directory.

use std::path::{Path, PathBuf};

/// A CA directory:
///
/// | path | what | mode |
/// |---|---|---|
/// | `ca.crt` | the CA certificate, which the proxy trusts | 0644 |
/// | `ca.key` | the CA's private key | 0600 |
/// | `registry.sqlite3` | every certificate issued, its account and status | 0600 |
/// | `crl.pem` | the current CRL, which the proxy loads | 0644 |
/// | `issued/` | client certificates and keys | 0700 |
/// | `server/` | the proxy's certificate, key and chain | 0700 |
/// | `.crl.lock` | serialises CRL publication | 0600 |
#[derive(Debug, Clone)]
pub struct CaDir {
    root: PathBuf,
}

impl CaDir {
    /// A CA directory at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The CA certificate.
    pub fn cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// The CA's private key.
    pub fn key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    /// The certificate registry.
    pub fn registry(&self) -> PathBuf {
        self.root.join("registry.sqlite3")
    }

    /// Where `befundctl cert revoke` and the daily timer publish the CRL.
    pub fn crl(&self) -> PathBuf {
        self.root.join("crl.pem")
    }

    /// Default output directory for client certificates.
    pub fn issued(&self) -> PathBuf {
        self.root.join("issued")
    }

    /// Default output directory for the proxy's server certificate.
    pub fn server(&self) -> PathBuf {
        self.root.join("server")
    }
}
