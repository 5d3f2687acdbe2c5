//! The audit's credentials: the CA that must have issued the target's
//! certificate, and the physician's certificate and private key, read from PEM
//! files. The private key stays inside a rustls signing key; it is never
//! printed or logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why the credentials could not be loaded; each message names the option to fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {option} {}: {source}", path.display())]
    Pem {
        /// The command-line option that named the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{option} {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The command-line option that named the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("--ca {}: unusable CA certificate: {source}", path.display())]
    TrustAnchor {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The private key is of a kind the crypto provider cannot sign with, or it
    /// does not belong to the certificate.
    #[error("--key {} cannot sign for --cert {}: {source}", key.display(), cert.display())]
    Key {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

/// The trust anchors and the physician's identity the audit uses.
pub struct Credentials {
    roots: Arc<RootCertStore>,
    identity: Arc<CertifiedKey>,
}

impl Credentials {
    /// Reads the CA certificate(s), the client certificate chain (leaf first)
    /// and its private key, and checks that key and certificate belong together.
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
    ) -> Result<Self, CredentialError> {
        let roots = load_roots(ca)?;
        let chain = read_certificates("--cert", cert)?;
        let private_key =
            PrivateKeyDer::from_pem_file(key).map_err(|source| CredentialError::Pem {
                option: "--key",
                path: key.to_owned(),
                source,
            })?;

        let key_error = |source| CredentialError::Key {
            key: key.to_owned(),
            cert: cert.to_owned(),
            source,
        };
        let identity = CertifiedKey::from_der(chain, private_key, provider).map_err(key_error)?;

        Ok(Self {
            roots: Arc::new(roots),
            identity: Arc::new(identity),
        })
    }

    /// The trust anchors for the target's certificate.
    pub fn roots(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.roots)
    }

    /// The physician's certificate chain with its own private key.
    pub fn identity(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.identity)
    }

    /// The physician's certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.identity.cert
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, CredentialError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates("--ca", path)? {
        roots
            .add(certificate)
            .map_err(|source| CredentialError::TrustAnchor {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(roots)
}

fn read_certificates(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let pem_error = |source| CredentialError::Pem {
        option,
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;

    if certificates.is_empty() {
        return Err(CredentialError::NoCertificate {
            option,
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}
