//! Reading certificates back: the facts the registry and `cert show` keep
//! (subject, serial, fingerprint, validity, key type), taken from the DER the
//! CA signed rather than from the parameters it was asked for.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

use super::names;
use super::serial::Serial;

/// What the CA records about a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub serial: Serial,
    /// RFC 4514, most specific RDN first.
    pub subject: String,
    /// RFC 4514, most specific RDN first.
    pub issuer: String,
    pub common_name: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, 64 lowercase hex digits.
    pub fingerprint: String,
    /// For example `RSA 2048` or `ECDSA P-256`.
    pub key_type: String,
    /// Public key size in bits (RSA modulus or curve size).
    pub key_bits: usize,
}

impl CertInfo {
    /// Reads the facts from a parsed certificate and its DER.
    pub fn from_x509(cert: &X509Certificate<'_>, der: &[u8]) -> Self {
        let (key_type, key_bits) = describe_key(cert);
        Self {
            serial: Serial::from_der_content(cert.raw_serial()),
            subject: names::rfc4514(cert.subject()),
            issuer: names::rfc4514(cert.issuer()),
            common_name: names::common_name(cert.subject()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            fingerprint: fingerprint(der),
            key_type,
            key_bits,
        }
    }

    /// Parses DER and reads the facts.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        Ok(Self::from_x509(&cert, der))
    }
}

/// SHA-256 of `der` as 64 lowercase hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 3339 in UTC with whole seconds, as in `2027-12-04T16:00:00Z`.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// Parses what [`rfc3339`] wrote.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The current time, truncated to whole seconds as certificates store it.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Certificates in `data`, PEM (any number of `CERTIFICATE` blocks) or a
/// single DER certificate.
pub fn certificates_from(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if data.first() == Some(&0x30) {
        return Ok(vec![data.to_vec()]);
    }
    let blocks = pem::parse_many(data).map_err(|e| e.to_string())?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// PEM text of one DER object.
pub fn to_pem(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

fn describe_key(cert: &X509Certificate<'_>) -> (String, usize) {
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            (format!("RSA {bits}"), bits)
        }
        // Uncompressed points: 0x04 || X || Y.
        Ok(PublicKey::EC(point)) => match point.data().len() {
            65 => ("ECDSA P-256".into(), 256),
            97 => ("ECDSA P-384".into(), 384),
            133 => ("ECDSA P-521".into(), 521),
            n => (format!("EC ({n}-byte point)"), 0),
        },
        _ => match cert
            .public_key()
            .algorithm
            .algorithm
            .to_id_string()
            .as_str()
        {
            "1.3.101.112" => ("Ed25519".into(), 256),
            oid => (format!("unknown ({oid})"), 0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_in_lowercase_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rfc3339_is_utc_with_whole_seconds() {
        let at = time::macros::datetime!(2027-12-04 17:00:00.25 +01:00);

        assert_eq!(rfc3339(at), "2027-12-04T16:00:00Z");
        assert_eq!(
            parse_rfc3339("2027-12-04T16:00:00Z"),
            Some(at.replace_nanosecond(0).unwrap())
        );
    }

    #[test]
    fn pem_without_certificates_is_rejected() {
        let text = to_pem("PRIVATE KEY", b"\x30\x00");

        assert!(certificates_from(text.as_bytes()).is_err());
    }

    #[test]
    fn ecdsa_certificate_is_described_by_curve() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();

        let info = CertInfo::from_der(cert.der()).unwrap();

        assert_eq!(info.key_type, "ECDSA P-384");
        assert_eq!(
            certificates_from(cert.pem().as_bytes()).unwrap(),
            vec![cert.der().to_vec()]
        );
    }
}
