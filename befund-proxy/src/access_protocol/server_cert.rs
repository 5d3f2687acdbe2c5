//! The report on the certificate the target presents: key, signature
//! algorithm, validity, usages and names, and the weaknesses among them.

use std::fmt;
use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::extensions::{ExtendedKeyUsage, GeneralName};
use x509_parser::objects::{oid_registry, oid2sn};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::AlgorithmIdentifier;

use super::protocol::{Weakness, WeaknessKind};

/// Signature algorithms whose hash is broken for certificates: MD2, MD4, MD5
/// and SHA-1 with RSA, SHA-1 with ECDSA and with DSA.
const WEAK_SIGNATURE_OIDS: &[&str] = &[
    "1.2.840.113549.1.1.2",
    "1.2.840.113549.1.1.3",
    "1.2.840.113549.1.1.4",
    "1.2.840.113549.1.1.5",
    "1.3.14.3.2.29",
    "1.2.840.10045.4.1",
    "1.2.840.10040.4.3",
];

/// SHA-1, as a hash algorithm inside RSASSA-PSS parameters.
const SHA1_OID: &str = "1.3.14.3.2.26";

/// The shortest RSA key the lab's concept accepts.
const MIN_RSA_BITS: usize = 2048;

/// The certificate part of the protocol.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ServerCertificate {
    /// The target presented a certificate and it could be parsed.
    Obtained(Box<CertificateReport>),
    /// No certificate could be obtained or parsed.
    NotObtained {
        /// Why.
        reason: String,
    },
}

impl ServerCertificate {
    /// The weaknesses the certificate shows.
    pub fn weaknesses(&self) -> Vec<Weakness> {
        match self {
            Self::Obtained(report) => report.weaknesses(),
            Self::NotObtained { .. } => Vec::new(),
        }
    }
}

/// The kind of public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// RSA.
    Rsa,
    /// Elliptic curve (ECDSA).
    Ec,
    /// Ed25519.
    Ed25519,
    /// Anything else (DSA, GOST, ...).
    Other,
}

/// The server certificate's public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key type.
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// The key size in bits.
    pub bits: usize,
    /// The named curve of an EC key, e.g. `P-256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<String>,
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key_type, &self.curve) {
            (KeyType::Rsa, _) => write!(f, "RSA {} bits", self.bits),
            (KeyType::Ec, Some(curve)) => write!(f, "EC {curve} ({} bits)", self.bits),
            (KeyType::Ec, None) => write!(f, "EC {} bits", self.bits),
            (KeyType::Ed25519, _) => f.write_str("Ed25519"),
            (KeyType::Other, _) => write!(f, "other key type ({} bits)", self.bits),
        }
    }
}

/// What the protocol records about the server certificate (the leaf).
#[derive(Clone, Debug, Serialize)]
pub struct CertificateReport {
    /// How the certificate was obtained, e.g. `rustls handshake`.
    pub obtained_via: String,
    /// Certificates the server sent, the leaf included.
    pub chain_length: usize,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Subject alternative names, e.g. `DNS:proxy.example`.
    pub subject_alt_names: Vec<String>,
    /// The public key.
    pub key: KeyInfo,
    /// The signature algorithm's name, e.g. `sha256WithRSAEncryption`.
    pub signature_algorithm: String,
    /// Whether that signature uses SHA-1 or an older hash.
    pub weak_signature_hash: bool,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whole days from the audit until `not_after` (negative once expired).
    pub days_left: i64,
    /// Whether the audit ran within the validity period.
    pub valid_now: bool,
    /// Key usage bits, e.g. `Digital Signature`.
    pub key_usage: Vec<String>,
    /// Extended key usages, e.g. `serverAuth`.
    pub extended_key_usage: Vec<String>,
}

impl CertificateReport {
    /// Parses the leaf of `chain` and reports on it as of `now`.
    pub fn from_chain(
        chain: &[CertificateDer<'_>],
        obtained_via: &str,
        now: OffsetDateTime,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("the server sent no certificate")?;
        let (_, certificate) = X509Certificate::from_der(leaf)
            .map_err(|e| format!("the server certificate is not valid DER: {e}"))?;
        let validity = certificate.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        let now_seconds = now.unix_timestamp();

        Ok(Self {
            obtained_via: obtained_via.to_owned(),
            chain_length: chain.len(),
            subject: certificate.subject().to_string(),
            issuer: certificate.issuer().to_string(),
            serial: serial_hex(certificate.raw_serial()),
            subject_alt_names: subject_alt_names(&certificate),
            key: key_info(&certificate),
            signature_algorithm: algorithm_name(&certificate.signature_algorithm),
            weak_signature_hash: has_weak_hash(&certificate.signature_algorithm),
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            days_left: (not_after - now_seconds).div_euclid(86_400),
            valid_now: (not_before..=not_after).contains(&now_seconds),
            key_usage: key_usage(&certificate),
            extended_key_usage: extended_key_usage(&certificate),
        })
    }

    /// SHA-1/MD5 signatures, short RSA keys, and a certificate outside its validity.
    pub fn weaknesses(&self) -> Vec<Weakness> {
        let mut weaknesses = Vec::new();
        if self.weak_signature_hash {
            weaknesses.push(Weakness {
                kind: WeaknessKind::WeakSignatureHash,
                detail: format!(
                    "server certificate signed with {}",
                    self.signature_algorithm
                ),
            });
        }
        if self.key.key_type == KeyType::Rsa && self.key.bits < MIN_RSA_BITS {
            weaknesses.push(Weakness {
                kind: WeaknessKind::ShortRsaKey,
                detail: format!("server certificate key is {}", self.key),
            });
        }
        if !self.valid_now {
            weaknesses.push(Weakness {
                kind: WeaknessKind::CertificateNotValidNow,
                detail: format!(
                    "server certificate valid from {} to {}",
                    self.not_before, self.not_after
                ),
            });
        }
        weaknesses
    }
}

fn serial_hex(raw: &[u8]) -> String {
    let trimmed = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(unix_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{unix_seconds}"))
}

fn algorithm_name(algorithm: &AlgorithmIdentifier<'_>) -> String {
    oid2sn(&algorithm.algorithm, oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| algorithm.algorithm.to_id_string())
}

fn has_weak_hash(algorithm: &AlgorithmIdentifier<'_>) -> bool {
    let oid = algorithm.algorithm.to_id_string();
    if WEAK_SIGNATURE_OIDS.contains(&oid.as_str()) {
        return true;
    }
    if algorithm.algorithm == OID_PKCS1_RSASSAPSS {
        return match SignatureAlgorithm::try_from(algorithm) {
            Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
                params.hash_algorithm_oid().to_id_string() == SHA1_OID
            }
            // Absent parameters mean the defaults, whose hash is SHA-1.
            _ => true,
        };
    }
    false
}

fn key_info(certificate: &X509Certificate<'_>) -> KeyInfo {
    let spki = certificate.public_key();
    let bits = spki.parsed().map(|key| key.key_size()).unwrap_or(0);
    let algorithm = &spki.algorithm.algorithm;

    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        KeyInfo {
            key_type: KeyType::Rsa,
            bits,
            curve: None,
        }
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let curve = curve.map(|oid| match oid {
            o if o == OID_EC_P256 => "P-256".to_owned(),
            o if o == OID_NIST_EC_P384 => "P-384".to_owned(),
            o if o == OID_NIST_EC_P521 => "P-521".to_owned(),
            o => o.to_id_string(),
        });
        KeyInfo {
            key_type: KeyType::Ec,
            bits,
            curve,
        }
    } else if *algorithm == OID_SIG_ED25519 {
        KeyInfo {
            key_type: KeyType::Ed25519,
            bits: 256,
            curve: None,
        }
    } else {
        KeyInfo {
            key_type: KeyType::Other,
            bits,
            curve: None,
        }
    }
}

fn subject_alt_names(certificate: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    extension
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => format!("DNS:{dns}"),
            GeneralName::RFC822Name(mail) => format!("email:{mail}"),
            GeneralName::URI(uri) => format!("URI:{uri}"),
            GeneralName::IPAddress(bytes) => match ip_address(bytes) {
                Some(ip) => format!("IP:{ip}"),
                None => format!("IP:{bytes:02x?}"),
            },
            other => other.to_string(),
        })
        .collect()
}

fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn key_usage(certificate: &X509Certificate<'_>) -> Vec<String> {
    match certificate.key_usage() {
        Ok(Some(extension)) => extension
            .value
            .to_string()
            .split(", ")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn extended_key_usage(certificate: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = certificate.extended_key_usage() else {
        return Vec::new();
    };
    let ExtendedKeyUsage {
        any,
        server_auth,
        client_auth,
        code_signing,
        email_protection,
        time_stamping,
        ocsp_signing,
        other,
    } = extension.value;

    let named = [
        (*any, "anyExtendedKeyUsage"),
        (*server_auth, "serverAuth"),
        (*client_auth, "clientAuth"),
        (*code_signing, "codeSigning"),
        (*email_protection, "emailProtection"),
        (*time_stamping, "timeStamping"),
        (*ocsp_signing, "OCSPSigning"),
    ];
    named
        .into_iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| name.to_owned())
        .chain(other.iter().map(|oid| oid.to_id_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    use time::Duration;

    use super::*;

    fn server_certificate(
        algorithm: &'static rcgen::SignatureAlgorithm,
    ) -> CertificateDer<'static> {
        let key = KeyPair::generate_for(algorithm).unwrap();
        let mut params = CertificateParams::new(vec!["proxy.befund.test".to_owned()]).unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn ecdsa_p256_certificate_is_reported_without_weaknesses() {
        let der = server_certificate(&rcgen::PKCS_ECDSA_P256_SHA256);

        let report =
            CertificateReport::from_chain(&[der], "test", OffsetDateTime::now_utc()).unwrap();

        assert_eq!(
            report.key,
            KeyInfo {
                key_type: KeyType::Ec,
                bits: 256,
                curve: Some("P-256".to_owned())
            }
        );
        assert_eq!(report.signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(report.subject_alt_names, ["DNS:proxy.befund.test"]);
        assert_eq!(report.extended_key_usage, ["serverAuth"]);
        assert_eq!(report.key_usage, ["Digital Signature"]);
        assert!((29..=30).contains(&report.days_left));
        assert!(report.weaknesses().is_empty());
    }

    #[test]
    fn rsa_2048_certificate_is_not_a_weakness() {
        let der = server_certificate(&rcgen::PKCS_RSA_SHA256);

        let report =
            CertificateReport::from_chain(&[der], "test", OffsetDateTime::now_utc()).unwrap();

        assert_eq!(report.key.to_string(), "RSA 2048 bits");
        assert_eq!(report.signature_algorithm, "sha256WithRSAEncryption");
        assert!(report.weaknesses().is_empty());
    }

    #[test]
    fn certificate_outside_its_validity_is_a_weakness() {
        let der = server_certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
        let later = OffsetDateTime::now_utc() + Duration::days(60);

        let report = CertificateReport::from_chain(&[der], "test", later).unwrap();

        assert!(report.days_left < 0);
        let kinds: Vec<_> = report.weaknesses().into_iter().map(|w| w.kind).collect();
        assert_eq!(kinds, [WeaknessKind::CertificateNotValidNow]);
    }

    #[test]
    fn serial_drops_only_the_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x5f, 0x3a]), "5f3a");
    }
}
