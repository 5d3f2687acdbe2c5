//! Certificate identities: the binding stored with a user account and the
//! identity the proxy forwards with each request.
//!
//! The proxy forwards the verified client certificate twice: as DER in the
//! RFC 9440 `Client-Cert` header and as derived values (fingerprint, issuer,
//! serial). The derived values are only believed when they agree with the DER,
//! so a mistake or a forgery in one header cannot select another account.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::HeaderName;
use sha2::{Digest, Sha256};

/// RFC 9440 header carrying the leaf certificate's DER.
pub const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
/// SHA-256 of the leaf certificate's DER, lowercase hex.
pub const CERT_FINGERPRINT: HeaderName = HeaderName::from_static("x-client-cert-fingerprint");
/// Issuer of the leaf certificate as an RFC 4514 string.
pub const CERT_ISSUER: HeaderName = HeaderName::from_static("x-client-cert-issuer");
/// Serial number of the leaf certificate, lowercase hex without sign byte.
pub const CERT_SERIAL: HeaderName = HeaderName::from_static("x-client-cert-serial");

/// SHA-256 fingerprint of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Fingerprint of the given DER bytes.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl FromStr for Fingerprint {
    type Err = IdentityParseError;

    /// Accepts 64 hex digits in either case, optionally separated by colons
    /// as `openssl x509 -fingerprint -sha256` prints them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex(s).ok_or(IdentityParseError::FingerprintNotHex)?;
        let bytes =
            <[u8; 32]>::try_from(bytes).map_err(|_| IdentityParseError::FingerprintLength)?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_lower(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A certificate serial number, kept as the magnitude's big-endian bytes:
/// no DER sign byte and no other leading zero bytes, so that every spelling
/// of the same number compares equal.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CertSerial(Vec<u8>);

impl CertSerial {
    /// Serial from the content bytes of a DER INTEGER (or any big-endian
    /// byte string).
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len().saturating_sub(1));
        Self(bytes[first..].to_vec())
    }
}

impl FromStr for CertSerial {
    type Err = IdentityParseError;

    /// Accepts hex digits in either case, optionally separated by colons, with
    /// or without a leading `00` sign byte.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex(s).ok_or(IdentityParseError::SerialNotHex)?;
        if bytes.is_empty() {
            return Err(IdentityParseError::SerialNotHex);
        }
        Ok(Self::from_be_bytes(&bytes))
    }
}

impl fmt::Display for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_lower(&self.0))
    }
}

impl fmt::Debug for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertSerial({self})")
    }
}

/// The certificate a user account is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertBinding {
    /// Exactly one certificate, by the SHA-256 of its DER.
    Fingerprint(Fingerprint),
    /// The certificate with this serial from this issuer (the RFC 4514 string
    /// exactly as the proxy forwards it in `X-Client-Cert-Issuer`).
    IssuerSerial {
        /// Issuer distinguished name, RFC 4514.
        issuer: String,
        /// Serial number assigned by that issuer.
        serial: CertSerial,
    },
}

impl fmt::Display for CertBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fingerprint(fp) => write!(f, "fingerprint {fp}"),
            Self::IssuerSerial { issuer, serial } => {
                write!(f, "issuer {issuer:?} serial {serial}")
            }
        }
    }
}

/// The client certificate identity the proxy forwarded with a request,
/// after checking that its parts agree with the forwarded DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedIdentity {
    /// SHA-256 of the certificate's DER.
    pub fingerprint: Fingerprint,
    /// Issuer string, when the proxy sent one.
    pub issuer: Option<String>,
    /// Serial number, when the proxy sent one; always equal to the DER's.
    pub serial: Option<CertSerial>,
}

impl ForwardedIdentity {
    /// Reads and cross-checks the identity headers.
    ///
    /// `Client-Cert` and `X-Client-Cert-Fingerprint` are required on every
    /// request; the fingerprint must be the SHA-256 of the forwarded DER, and a
    /// forwarded serial must be the DER's serial.
    ///
    /// # Errors
    ///
    /// [`IdentityError::Missing`] when a required header is absent,
    /// [`IdentityError::Malformed`] when a header is repeated or cannot be
    /// decoded, [`IdentityError::Inconsistent`] when the headers disagree.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, IdentityError> {
        let client_cert =
            single(headers, &CLIENT_CERT)?.ok_or(IdentityError::Missing(CLIENT_CERT))?;
        let fingerprint =
            single(headers, &CERT_FINGERPRINT)?.ok_or(IdentityError::Missing(CERT_FINGERPRINT))?;
        let issuer = single(headers, &CERT_ISSUER)?;
        let serial = single(headers, &CERT_SERIAL)?;

        let der = decode_rfc9440(client_cert).ok_or(IdentityError::Malformed(CLIENT_CERT))?;
        let der_serial = certificate_serial(&der).ok_or(IdentityError::Malformed(CLIENT_CERT))?;
        let fingerprint: Fingerprint = fingerprint
            .parse()
            .map_err(|_| IdentityError::Malformed(CERT_FINGERPRINT))?;
        let serial = serial
            .map(|s| s.parse::<CertSerial>())
            .transpose()
            .map_err(|_| IdentityError::Malformed(CERT_SERIAL))?;

        if fingerprint != Fingerprint::of_der(&der) {
            return Err(IdentityError::Inconsistent(CERT_FINGERPRINT));
        }
        if serial.as_ref().is_some_and(|s| *s != der_serial) {
            return Err(IdentityError::Inconsistent(CERT_SERIAL));
        }
        Ok(Self {
            fingerprint,
            issuer: issuer.map(str::to_owned),
            serial,
        })
    }

    /// Whether this is the certificate the binding names.
    ///
    /// An issuer + serial binding needs both headers; a fingerprint binding
    /// needs only the (always present) fingerprint.
    pub fn matches(&self, binding: &CertBinding) -> bool {
        match binding {
            CertBinding::Fingerprint(fp) => self.fingerprint == *fp,
            CertBinding::IssuerSerial { issuer, serial } => {
                self.issuer.as_deref() == Some(issuer.as_str())
                    && self.serial.as_ref() == Some(serial)
            }
        }
    }
}

/// Why the forwarded identity headers were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A required header is absent.
    #[error("missing identity header {0}")]
    Missing(HeaderName),
    /// A header is repeated or its value cannot be decoded.
    #[error("malformed identity header {0}")]
    Malformed(HeaderName),
    /// A header disagrees with the forwarded certificate.
    #[error("identity header {0} does not match the forwarded certificate")]
    Inconsistent(HeaderName),
}

/// Why an operator-supplied fingerprint or serial was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityParseError {
    /// Not hex digits (optionally colon-separated).
    #[error("certificate fingerprint is not hex; give the 64 hex digits of its SHA-256")]
    FingerprintNotHex,
    /// Hex, but not 32 bytes.
    #[error("certificate fingerprint is not 32 bytes; give the SHA-256 fingerprint, not SHA-1")]
    FingerprintLength,
    /// Not hex digits, or empty.
    #[error("certificate serial is not hex; give it as `openssl x509 -serial` prints it")]
    SerialNotHex,
}

/// The one value of `name`, `None` when absent.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, IdentityError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(IdentityError::Malformed(name.clone()));
    }
    let value = first
        .to_str()
        .map_err(|_| IdentityError::Malformed(name.clone()))?;
    Ok(Some(value))
}

/// Decodes an RFC 9440 certificate value: standard base64 between colons.
fn decode_rfc9440(value: &str) -> Option<Vec<u8>> {
    let inner = value.trim().strip_prefix(':')?.strip_suffix(':')?;
    STANDARD.decode(inner).ok()
}

/// The serial number of a DER certificate, `None` when it is not exactly one
/// X.509 certificate.
fn certificate_serial(der: &[u8]) -> Option<CertSerial> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Some(CertSerial::from_be_bytes(cert.raw_serial())),
        _ => None,
    }
}

/// Lowercase hex without separators.
fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits of either case, optionally separated by colons; an odd number
/// of digits is read as if it had a leading zero.
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .trim()
        .chars()
        .filter(|&c| c != ':')
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    let padded: Vec<u8> = if digits.len() % 2 == 1 {
        std::iter::once(0).chain(digits).collect()
    } else {
        digits
    };
    Some(padded.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;
    use rcgen::{CertificateParams, DnType, KeyPair, SerialNumber};

    use super::*;

    fn certificate(serial: &[u8]) -> Vec<u8> {
        let key = KeyPair::generate().expect("key generation must work");
        let mut params = CertificateParams::new(vec![]).expect("empty SAN list is valid");
        params
            .distinguished_name
            .push(DnType::CommonName, "Dr. Test");
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params
            .self_signed(&key)
            .expect("self-signing must work")
            .der()
            .to_vec()
    }

    fn headers(der: &[u8], fingerprint: &str, serial: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let cert = format!(":{}:", STANDARD.encode(der));
        headers.insert(CLIENT_CERT, HeaderValue::from_str(&cert).unwrap());
        headers.insert(
            CERT_FINGERPRINT,
            HeaderValue::from_str(fingerprint).unwrap(),
        );
        headers.insert(CERT_ISSUER, HeaderValue::from_static("CN=Test CA,O=Labor"));
        if let Some(serial) = serial {
            headers.insert(CERT_SERIAL, HeaderValue::from_str(serial).unwrap());
        }
        headers
    }

    #[test]
    fn fingerprint_accepts_openssl_colon_spelling() {
        let der = certificate(&[1]);
        let fp = Fingerprint::of_der(&der);
        let openssl_style = fp
            .to_string()
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");

        assert_eq!(openssl_style.parse::<Fingerprint>(), Ok(fp));
    }

    #[test]
    fn fingerprint_of_wrong_length_is_rejected() {
        assert_eq!(
            "ab".repeat(20).parse::<Fingerprint>(),
            Err(IdentityParseError::FingerprintLength)
        );
        assert_eq!(
            "zz".parse::<Fingerprint>(),
            Err(IdentityParseError::FingerprintNotHex)
        );
    }

    #[test]
    fn serial_spellings_with_and_without_sign_byte_compare_equal() {
        let a: CertSerial = "009C:3A".parse().unwrap();
        let b: CertSerial = "9c3a".parse().unwrap();

        assert_eq!(a, b);
        assert_eq!(a.to_string(), "9c3a");
        assert_eq!(CertSerial::from_be_bytes(&[0, 0]).to_string(), "00");
    }

    #[test]
    fn consistent_headers_yield_identity_with_der_serial() {
        let der = certificate(&[0x9c, 0x01, 0x02]);
        let fp = Fingerprint::of_der(&der).to_string();

        let identity =
            ForwardedIdentity::from_headers(&headers(&der, &fp, Some("9c0102"))).unwrap();

        assert_eq!(identity.fingerprint, Fingerprint::of_der(&der));
        assert_eq!(identity.serial, Some("9c0102".parse().unwrap()));
        assert_eq!(identity.issuer.as_deref(), Some("CN=Test CA,O=Labor"));
    }

    #[test]
    fn fingerprint_of_another_certificate_is_inconsistent() {
        let der = certificate(&[1]);
        let other = Fingerprint::of_der(&certificate(&[2])).to_string();

        let err = ForwardedIdentity::from_headers(&headers(&der, &other, None)).unwrap_err();

        assert_eq!(err, IdentityError::Inconsistent(CERT_FINGERPRINT));
    }

    #[test]
    fn serial_other_than_the_certificates_is_inconsistent() {
        let der = certificate(&[0x11, 0x22]);
        let fp = Fingerprint::of_der(&der).to_string();

        let err = ForwardedIdentity::from_headers(&headers(&der, &fp, Some("1123"))).unwrap_err();

        assert_eq!(err, IdentityError::Inconsistent(CERT_SERIAL));
    }

    #[test]
    fn missing_client_cert_is_missing_identity() {
        let der = certificate(&[1]);
        let fp = Fingerprint::of_der(&der).to_string();
        let mut headers = headers(&der, &fp, None);
        headers.remove(CLIENT_CERT);

        let err = ForwardedIdentity::from_headers(&headers).unwrap_err();

        assert_eq!(err, IdentityError::Missing(CLIENT_CERT));
    }

    #[test]
    fn repeated_fingerprint_header_is_malformed() {
        let der = certificate(&[1]);
        let fp = Fingerprint::of_der(&der).to_string();
        let mut headers = headers(&der, &fp, None);
        headers.append(CERT_FINGERPRINT, HeaderValue::from_str(&fp).unwrap());

        let err = ForwardedIdentity::from_headers(&headers).unwrap_err();

        assert_eq!(err, IdentityError::Malformed(CERT_FINGERPRINT));
    }

    #[test]
    fn client_cert_without_colons_or_not_a_certificate_is_malformed() {
        let der = certificate(&[1]);
        let fp = Fingerprint::of_der(&der).to_string();
        let mut no_colons = headers(&der, &fp, None);
        let bare = STANDARD.encode(&der);
        no_colons.insert(CLIENT_CERT, HeaderValue::from_str(&bare).unwrap());
        let mut not_cert = headers(&der, &fp, None);
        let junk = format!(":{}:", STANDARD.encode(b"not a certificate"));
        not_cert.insert(CLIENT_CERT, HeaderValue::from_str(&junk).unwrap());

        for headers in [no_colons, not_cert] {
            let err = ForwardedIdentity::from_headers(&headers).unwrap_err();
            assert_eq!(err, IdentityError::Malformed(CLIENT_CERT));
        }
    }

    #[test]
    fn issuer_serial_binding_needs_both_to_match() {
        let der = certificate(&[0x42]);
        let fp = Fingerprint::of_der(&der).to_string();
        let identity = ForwardedIdentity::from_headers(&headers(&der, &fp, Some("42"))).unwrap();
        let bound = |issuer: &str, serial: &str| CertBinding::IssuerSerial {
            issuer: issuer.to_owned(),
            serial: serial.parse().unwrap(),
        };

        assert!(identity.matches(&bound("CN=Test CA,O=Labor", "42")));
        assert!(!identity.matches(&bound("CN=Other CA,O=Labor", "42")));
        assert!(!identity.matches(&bound("CN=Test CA,O=Labor", "43")));
        assert!(identity.matches(&CertBinding::Fingerprint(Fingerprint::of_der(&der))));
    }

    #[test]
    fn issuer_serial_binding_does_not_match_without_serial_header() {
        let der = certificate(&[0x42]);
        let fp = Fingerprint::of_der(&der).to_string();
        let identity = ForwardedIdentity::from_headers(&headers(&der, &fp, None)).unwrap();
        let binding = CertBinding::IssuerSerial {
            issuer: "CN=Test CA,O=Labor".to_owned(),
            serial: "42".parse().unwrap(),
        };

        assert!(!identity.matches(&binding));
    }
}
