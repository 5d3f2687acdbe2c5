//! The lab's internal certificate authority: it issues the physicians'
//! client certificates and the proxy's server certificate, binds each client
//! certificate to a Befundserver account in a registry, revokes certificates
//! and publishes CRLs, and exports PKCS#12 files for Windows.
//!
//! Certificates are signed with SHA-256 or better. The CA key and every
//! issued key are written with mode 0600 from the moment they are created,
//! and never printed or logged.

mod authority;
mod crl;
mod error;
mod export;
mod files;
mod inspect;
mod issue;
mod keys;
mod layout;
mod names;
mod registry;
mod serial;

pub use authority::{CertificateAuthority, InitOptions, read_ca_cert};
pub use crl::{CrlLock, DEFAULT_CRL_DAYS, RevocationReason, SignedCrl, sign_crl, write_crl};
pub use error::CaError;
pub use export::{Exported, Password, Pkcs12Mode, export};
pub use inspect::{CertInfo, fingerprint, now, rfc3339};
pub use issue::{ClientRequest, Issued, ServerRequest, issue_client, issue_server};
pub use keys::{CaKeyType, LeafKeyType};
pub use layout::CaDir;
pub use registry::{
    CertKind, CertRecord, CertStatus, Registry, RegistryTx, Revocation, SCHEMA_VERSION,
    single_valid,
};
pub use serial::Serial;
