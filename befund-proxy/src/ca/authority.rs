//! The CA itself: creating a new one, adopting an existing one (such as an
//! Easy-RSA CA whose certificates are installed on physicians' machines), and
//! loading it to sign.

use std::fs;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose,
};
use time::Duration;
use x509_parser::certificate::X509Certificate;

use super::crl::{self, CrlLock, DEFAULT_CRL_DAYS};
use super::error::CaError;
use super::files::{self, PRIVATE_MODE, PUBLIC_MODE, StagedFile};
use super::inspect::{self, CertInfo};
use super::keys::CaKeyType;
use super::layout::CaDir;
use super::registry::{CaIdentity, Registry};
use super::serial::Serial;

/// Mode of a CA directory this creates: the proxy, which may run as its
/// own user, reads `ca.crt` and `crl.pem` from it.
const CA_DIR_MODE: u32 = 0o755;

/// Backdating of `notBefore`, so a certificate is valid at once on a
/// machine whose clock runs a little behind.
pub const BACKDATE: Duration = Duration::hours(1);

/// Signature algorithms a CA certificate may be signed with.
const ACCEPTED_SIGNATURES: &[&str] = &[
    "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
    "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
    "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
    "1.2.840.10045.4.3.4",   // ecdsa-with-SHA512
    "1.3.101.112",           // Ed25519
];

/// Broken signature algorithms, with the name the refusal gives.
const BROKEN_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.5", "SHA-1 (sha1WithRSAEncryption)"),
    ("1.3.14.3.2.29", "SHA-1 (sha1WithRSASignature)"),
    ("1.2.840.10045.4.1", "SHA-1 (ecdsa-with-SHA1)"),
    ("1.2.840.10040.4.3", "SHA-1 (dsa-with-sha1)"),
    ("1.2.840.113549.1.1.4", "MD5 (md5WithRSAEncryption)"),
    ("1.2.840.113549.1.1.3", "MD4 (md4WithRSAEncryption)"),
    ("1.2.840.113549.1.1.2", "MD2 (md2WithRSAEncryption)"),
];

/// What `ca init` is asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub key: CaKeyType,
    pub common_name: String,
    pub organization: Option<String>,
    pub days: u32,
}

/// A loaded CA, ready to sign.
#[derive(Debug)]
pub struct CertificateAuthority {
    dir: CaDir,
    cert_der: Vec<u8>,
    info: CertInfo,
    issuer: Issuer<'static, KeyPair>,
    key_id: KeyIdMethod,
}

impl CertificateAuthority {
    /// Creates a new CA in `dir`: key (0600), self-signed certificate,
    /// registry and a first, empty CRL. Refuses if `dir` holds a CA already.
    pub fn init(dir: &CaDir, options: &InitOptions) -> Result<Self, CaError> {
        let InitOptions {
            key,
            common_name,
            organization,
            days,
        } = options;
        check_no_ca(dir)?;
        check_text("CN", common_name, 64)?;
        if let Some(org) = organization {
            check_text("organization", org, 64)?;
        }
        if !(1..=36_500).contains(days) {
            return Err(CaError::invalid(
                "CA validity",
                "--days must be between 1 and 36500",
            ));
        }

        let key = key.generate()?;
        let now = inspect::now();
        let mut params = CertificateParams::default();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(
            Serial::random()?.as_bytes(),
        ));
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(i64::from(*days));
        params.distinguished_name = distinguished_name(common_name, organization.as_deref());
        // No intermediates: this CA signs only end-entity certificates.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(|source| CaError::Sign {
            what: "CA certificate",
            source,
        })?;

        let key_pem = key.serialize_pem();
        let ca = Self::from_parts(dir, cert.der().to_vec(), key)?;
        ca.install(&key_pem)?;
        Ok(ca)
    }

    /// Adopts an existing CA: copies its certificate and key into `dir`
    /// (key with mode 0600) and creates the registry. The CA must be a CA
    /// (basicConstraints CA:TRUE), be able to sign certificates and CRLs, be
    /// signed with SHA-256 or better, and `key_path` must hold its key.
    pub fn import(dir: &CaDir, cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        check_no_ca(dir)?;
        let data = fs::read(cert_path).map_err(CaError::io("read", cert_path))?;
        let cert_der = inspect::certificates_from(&data)
            .map_err(|reason| CaError::CertParse {
                path: cert_path.to_owned(),
                reason,
            })?
            .remove(0);
        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::CertParse {
                path: cert_path.to_owned(),
                reason: e.to_string(),
            })?;
        check_importable(&x509, &cert_der, cert_path)?;

        let key_text = fs::read_to_string(key_path).map_err(CaError::io("read", key_path))?;
        let (key, key_pem) = parse_private_key(&key_text, key_path)?;
        if key.public_key_raw() != &*x509.public_key().subject_public_key.data {
            return Err(CaError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }

        let ca = Self::from_parts(dir, cert_der.clone(), key)?;
        ca.self_check()?;
        ca.install(&key_pem)?;
        Ok(ca)
    }

    /// Loads the CA in `dir` for signing. Checks the key file's mode before
    /// reading it and that the key belongs to the certificate.
    pub fn open(dir: &CaDir) -> Result<Self, CaError> {
        let cert_der = read_ca_cert(dir)?;
        let key_path = dir.key();
        let key_text = files::read_private_key(&key_path)?;
        let (key, _) = parse_private_key(&key_text, &key_path)?;

        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::CertParse {
                path: dir.cert(),
                reason: e.to_string(),
            })?;
        if key.public_key_raw() != &*x509.public_key().subject_public_key.data {
            return Err(CaError::KeyMismatch {
                cert: dir.cert(),
                key: key_path,
            });
        }
        Self::from_parts(dir, cert_der, key)
    }

    fn from_parts(dir: &CaDir, cert_der: Vec<u8>, key: KeyPair) -> Result<Self, CaError> {
        let path = dir.cert();
        let parse_err = |e: &dyn std::fmt::Display| CaError::CertParse {
            path: path.clone(),
            reason: e.to_string(),
        };
        let info = CertInfo::from_der(&cert_der).map_err(|e| parse_err(&e))?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| parse_err(&e))?;
        let key_id = subject_key_id(&x509);
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| parse_err(&e))?;
        Ok(Self {
            dir: dir.clone(),
            cert_der,
            info,
            issuer,
            key_id,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &CaDir {
        &self.dir
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        inspect::to_pem("CERTIFICATE", &self.cert_der)
    }

    /// Facts about the CA certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The signer for certificates and CRLs.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA's subject key identifier, which issued certificates and CRLs
    /// name as their authority key identifier.
    pub fn key_identifier_method(&self) -> KeyIdMethod {
        self.key_id.clone()
    }

    /// Opens this CA's registry and makes sure it belongs to this CA.
    pub fn registry(&self) -> Result<Registry, CaError> {
        let registry = Registry::open(&self.dir.registry())?;
        registry.check_belongs_to(&self.info.fingerprint)?;
        Ok(registry)
    }

    /// Checks a certificate this CA just signed: its issuer name must be the
    /// CA's subject byte for byte, and its signature must verify with the
    /// CA's key. Guards against a CA name that does not survive re-encoding.
    pub fn check_issued(&self, der: &[u8]) -> Result<(), CaError> {
        let (_, ca) = x509_parser::parse_x509_certificate(&self.cert_der)
            .map_err(|e| CaError::SelfCheck(e.to_string()))?;
        let (_, leaf) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CaError::SelfCheck(e.to_string()))?;
        if leaf.issuer().as_raw() != ca.subject().as_raw() {
            return Err(CaError::SelfCheck(format!(
                "the issuer name of a signed certificate ({}) differs from the CA's subject ({})",
                leaf.issuer(),
                ca.subject()
            )));
        }
        leaf.verify_signature(Some(ca.public_key()))
            .map_err(|e| CaError::SelfCheck(format!("a signed certificate does not verify: {e}")))
    }

    /// Signs a throwaway certificate and checks it, without storing it.
    fn self_check(&self) -> Result<(), CaError> {
        let key = KeyPair::generate().map_err(|source| CaError::KeyGeneration {
            key_type: "ECDSA P-256",
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("befundctl self-check", None);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CaError::Sign {
                what: "self-check certificate",
                source,
            })?;
        self.check_issued(cert.der())
    }

    /// Writes key, certificate, registry and a first CRL into the CA
    /// directory. Everything is prepared under temporary names first; if any
    /// final name is taken, nothing stays behind.
    fn install(&self, key_pem: &str) -> Result<(), CaError> {
        let dir = &self.dir;
        files::ensure_dir(dir.root(), CA_DIR_MODE)?;
        let _lock = CrlLock::acquire(dir.root())?;

        let registry_file = StagedFile::reserve(&dir.registry())?;
        let crl = {
            let identity = CaIdentity {
                fingerprint: self.info.fingerprint.clone(),
                serial: self.info.serial.to_string(),
                subject: self.info.subject.clone(),
            };
            let now = inspect::rfc3339(inspect::now());
            let mut registry = Registry::create(registry_file.temp_path(), &identity, &now)?;
            let tx = registry.begin()?;
            let crl = crl::sign_crl(self, &tx, DEFAULT_CRL_DAYS)?;
            tx.commit()?;
            crl
        };

        let staged = vec![
            StagedFile::write(&dir.key(), key_pem.as_bytes(), PRIVATE_MODE)?,
            StagedFile::write(&dir.cert(), self.cert_pem().as_bytes(), PUBLIC_MODE)?,
            registry_file,
            StagedFile::write(&dir.crl(), crl.pem.as_bytes(), PUBLIC_MODE)?,
        ];
        files::place_all(staged, false).map_err(|e| match e {
            CaError::OutputExists { path } => CaError::CaExists { path },
            other => other,
        })?;
        Ok(())
    }
}

/// Reads `ca.crt` of a CA directory (no key needed).
pub fn read_ca_cert(dir: &CaDir) -> Result<Vec<u8>, CaError> {
    let path = dir.cert();
    let data = fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => CaError::CaMissing {
            dir: dir.root().to_owned(),
        },
        _ => CaError::io("read", &path)(source),
    })?;
    let mut certs =
        inspect::certificates_from(&data).map_err(|reason| CaError::CertParse { path, reason })?;
    Ok(certs.remove(0))
}

fn check_no_ca(dir: &CaDir) -> Result<(), CaError> {
    for path in [dir.key(), dir.cert(), dir.registry()] {
        if path.symlink_metadata().is_ok() {
            return Err(CaError::CaExists { path });
        }
    }
    Ok(())
}

fn check_importable(x509: &X509Certificate<'_>, der: &[u8], path: &Path) -> Result<(), CaError> {
    let oid = x509.signature_algorithm.algorithm.to_id_string();
    if let Some((_, algorithm)) = BROKEN_SIGNATURES.iter().find(|(id, _)| *id == oid) {
        return Err(CaError::WeakCaSignature {
            path: path.to_owned(),
            algorithm,
        });
    }
    if !ACCEPTED_SIGNATURES.contains(&oid.as_str()) {
        return Err(CaError::UnsupportedCaSignature {
            path: path.to_owned(),
            oid,
        });
    }

    let not_a_ca = |reason| CaError::NotACa {
        path: path.to_owned(),
        reason,
    };
    match x509.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(not_a_ca("basicConstraints CA:TRUE is missing")),
        Err(_) => return Err(not_a_ca("its basicConstraints extension is malformed")),
    }
    if let Ok(Some(usage)) = x509.key_usage() {
        if !usage.value.key_cert_sign() {
            return Err(not_a_ca("its keyUsage lacks keyCertSign"));
        }
        if !usage.value.crl_sign() {
            return Err(not_a_ca(
                "its keyUsage lacks cRLSign, so it cannot sign CRLs",
            ));
        }
    }

    let info = CertInfo::from_x509(x509, der);
    let now = inspect::now();
    if now < info.not_before || now > info.not_after {
        return Err(CaError::CaNotValidNow {
            path: path.to_owned(),
            not_before: inspect::rfc3339(info.not_before),
            not_after: inspect::rfc3339(info.not_after),
        });
    }
    let strong = match info.key_type.split(' ').next() {
        Some("RSA") => info.key_bits >= 2048,
        Some("ECDSA") | Some("Ed25519") => info.key_bits >= 256,
        _ => false,
    };
    if !strong {
        return Err(CaError::WeakCaKey {
            path: path.to_owned(),
            key: info.key_type,
        });
    }
    Ok(())
}

/// Reads an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) and
/// returns it with its PEM text alone (without, say, `EC PARAMETERS`).
fn parse_private_key(text: &str, path: &Path) -> Result<(KeyPair, String), CaError> {
    let key_err = |reason: String| CaError::KeyParse {
        path: path.to_owned(),
        reason,
    };
    let blocks = pem::parse_many(text).map_err(|e| key_err(e.to_string()))?;
    let encrypted = blocks.iter().any(|b| {
        b.tag() == "ENCRYPTED PRIVATE KEY"
            || b.headers()
                .get("Proc-Type")
                .is_some_and(|v| v.contains("ENCRYPTED"))
    });
    if encrypted {
        return Err(CaError::KeyEncrypted {
            path: path.to_owned(),
        });
    }
    let block = blocks
        .into_iter()
        .find(|b| {
            matches!(
                b.tag(),
                "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
            )
        })
        .ok_or_else(|| key_err("no PRIVATE KEY block".into()))?;
    let key = KeyPair::try_from(block.contents()).map_err(|e| key_err(e.to_string()))?;
    let pem = inspect::to_pem(block.tag(), block.contents());
    Ok((key, pem))
}

fn subject_key_id(x509: &X509Certificate<'_>) -> KeyIdMethod {
    x509.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
            }
            _ => None,
        })
        .unwrap_or(KeyIdMethod::Sha256)
}

/// `O=organization, CN=common_name` (encoded most general first).
pub fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Refuses empty, over-long or control-character text for a name field.
pub fn check_text(what: &'static str, text: &str, max_chars: usize) -> Result<(), CaError> {
    if text.trim().is_empty() {
        return Err(CaError::invalid(what, "must not be empty"));
    }
    if text.chars().count() > max_chars {
        return Err(CaError::invalid(
            what,
            format!("longer than {max_chars} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(CaError::invalid(what, "contains control characters"));
    }
    Ok(())
}
