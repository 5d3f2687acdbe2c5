//! What can go wrong in the CA, phrased so the operator knows what to do.

use std::io;
use std::path::PathBuf;

/// An error from the internal CA. Each message names the object and, where
/// the operator can fix it, the fix.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `ca init` or `ca import` found a CA in the target directory.
    #[error(
        "{} already exists; refusing to overwrite an existing CA (choose another --dir)",
        path.display()
    )]
    CaExists { path: PathBuf },

    /// The CA directory has no CA certificate.
    #[error(
        "no CA in {dir} ({dir}/ca.crt not found): create one with `befundctl ca init --dir {dir}` \
         or adopt one with `befundctl ca import --dir {dir}`",
        dir = dir.display()
    )]
    CaMissing { dir: PathBuf },

    /// The CA key file does not exist.
    #[error(
        "CA key {} not found: restore it from your backup (mode 0600) next to ca.crt",
        path.display()
    )]
    KeyMissing { path: PathBuf },

    /// The CA key exists but cannot be read by this user.
    #[error(
        "cannot read CA key {}: {source} (run befundctl as the user that owns the key)",
        path.display()
    )]
    KeyUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The CA key is readable by group or others.
    #[error(
        "CA key {path} is accessible by group or others (mode {mode:04o}); \
         run `chmod 600 {path}` and try again",
        path = path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },

    /// The key file is password-protected.
    #[error(
        "private key {path} is encrypted; write a decrypted copy with \
         `openssl pkey -in {path} -out ca-plain.key` (keep it mode 0600) and import that",
        path = path.display()
    )]
    KeyEncrypted { path: PathBuf },

    /// The key file holds no private key we can use.
    #[error(
        "cannot read a private key from {}: expected a PEM RSA or ECDSA key ({reason})",
        path.display()
    )]
    KeyParse { path: PathBuf, reason: String },

    /// The certificate file holds no certificate we can read.
    #[error("cannot read a certificate from {}: {reason}", path.display())]
    CertParse { path: PathBuf, reason: String },

    /// The CA certificate's own signature uses a broken hash.
    #[error(
        "refusing CA certificate {path}: it is signed with {algorithm}, which is broken \
         (colliding certificates can be forged) and rejected by current TLS stacks. \
         Keep the key and re-sign the CA certificate with SHA-256 \
         (`openssl x509 -in {path} -key ca.key -sha256 -days 3650 -out ca-sha256.crt`), \
         then import ca-sha256.crt; certificates issued under the old one keep verifying \
         because subject and key stay the same",
        path = path.display()
    )]
    WeakCaSignature {
        path: PathBuf,
        algorithm: &'static str,
    },

    /// The CA certificate's signature algorithm is not one we accept.
    #[error(
        "refusing CA certificate {}: unsupported signature algorithm {oid} \
         (accepted: RSA PKCS#1 v1.5 or ECDSA with SHA-256/384/512, Ed25519)",
        path.display()
    )]
    UnsupportedCaSignature { path: PathBuf, oid: String },

    /// The certificate is not a CA certificate.
    #[error(
        "{} is not a CA certificate: {reason}; import the CA's own certificate (Easy-RSA: pki/ca.crt)",
        path.display()
    )]
    NotACa { path: PathBuf, reason: &'static str },

    /// The CA's key is too weak to keep.
    #[error(
        "refusing CA certificate {}: its key is {key} (need RSA 2048 or ECDSA P-256 or stronger); \
         create a new CA with `befundctl ca init`",
        path.display()
    )]
    WeakCaKey { path: PathBuf, key: String },

    /// The CA certificate has expired or is not yet valid.
    #[error(
        "refusing CA certificate {}: it is valid only from {not_before} to {not_after}",
        path.display()
    )]
    CaNotValidNow {
        path: PathBuf,
        not_before: String,
        not_after: String,
    },

    /// Certificate and key do not belong together.
    #[error(
        "key {} does not belong to certificate {} (their public keys differ)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    /// A signature check after signing failed, or the issuer name changed.
    #[error("self-check of the CA failed: {0}")]
    SelfCheck(String),

    /// Key generation failed.
    #[error("cannot generate a {key_type} key: {source}")]
    KeyGeneration {
        key_type: &'static str,
        #[source]
        source: rcgen::Error,
    },

    /// Signing a certificate or CRL failed.
    #[error("cannot sign the {what}: {source}")]
    Sign {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    /// A registry operation failed.
    #[error("certificate registry {}: cannot {action}: {source}", path.display())]
    Registry {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The registry was written by a newer befundctl.
    #[error(
        "certificate registry {} has schema version {found}, this befundctl knows up to \
         {supported}: use the befundctl that wrote it (or a newer one)",
        path.display()
    )]
    RegistryVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// The registry belongs to another CA certificate.
    #[error(
        "certificate registry {} belongs to another CA (fingerprint {expected}), not to ca.crt \
         ({found}); put the matching ca.crt back",
        path.display()
    )]
    RegistryOtherCa {
        path: PathBuf,
        expected: String,
        found: String,
    },

    /// No registry entry matches.
    #[error("no certificate with serial or CN `{0}` in the registry (see `befundctl cert list`)")]
    NotFound(String),

    /// Several registry entries match a CN.
    #[error("CN `{selector}` matches several certificates ({serials}); name one by its serial")]
    Ambiguous { selector: String, serials: String },

    /// Every certificate with this CN is revoked.
    #[error("every certificate with CN `{0}` is already revoked (see `befundctl cert show {0}`)")]
    AllRevoked(String),

    /// The certificate was revoked before.
    #[error("certificate {serial} was already revoked at {at}")]
    AlreadyRevoked { serial: String, at: String },

    /// An argument is out of range or malformed.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: String },

    /// The PKCS#12 password file is empty.
    #[error(
        "password file {} is empty: write the PKCS#12 password into it as one line",
        path.display()
    )]
    PasswordEmpty { path: PathBuf },

    /// The PKCS#12 password is too short.
    #[error(
        "the password in {} is too short: use at least {min} characters (e.g. `openssl rand -base64 15`)",
        path.display()
    )]
    PasswordTooShort { path: PathBuf, min: usize },

    /// The PKCS#12 password file has more than one line.
    #[error(
        "password file {} has more than one line: write only the password",
        path.display()
    )]
    PasswordMultiLine { path: PathBuf },

    /// The certificate's private key is not on this machine.
    #[error(
        "the private key of certificate {serial} is not at {} any more; \
         a PKCS#12 file needs it (issue a new certificate instead)",
        path.display()
    )]
    LeafKeyMissing { serial: String, path: PathBuf },

    /// Writing the PKCS#12 file failed.
    #[error("cannot build the PKCS#12 file: {0}")]
    Pkcs12(#[from] p12_keystore::error::Error),

    /// A revocation was committed but its CRL could not be written.
    #[error(
        "the revocation is recorded, but the CRL could not be written ({source}); \
         run `befundctl crl --dir {dir}` once the cause is fixed",
        dir = dir.display()
    )]
    CrlNotWritten {
        dir: PathBuf,
        #[source]
        source: Box<CaError>,
    },

    /// An output file exists and may not be replaced.
    #[error("{} exists; pass --replace to overwrite it", path.display())]
    OutputExists { path: PathBuf },
}

impl CaError {
    /// Wraps an I/O error with what was attempted on which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    /// Rejects a malformed argument.
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            what,
            reason: reason.into(),
        }
    }
}
