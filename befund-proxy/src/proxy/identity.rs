//! The identity contract with the Befundserver: which request headers are
//! removed, and which are added from the verified client certificate.
//!
//! First every client-supplied identity header goes (names compared
//! case-insensitively, `_` equal to `-`): `Client-Cert`, `Client-Cert-Chain`,
//! `X-Forwarded-Client-Cert`, `Forwarded`, everything starting with
//! `X-Client-`, `X-SSL-` or `X-Forwarded-`, the secret header and the names in
//! `[identity] strip_headers`. Then the proxy sets, once each:
//!
//! | header | value |
//! |---|---|
//! | `Client-Cert` | RFC 9440: the leaf's DER, base64 between colons |
//! | `Client-Cert-Chain` | RFC 9440 list of the further certificates the client sent (absent if none) |
//! | `X-Client-Cert-Subject` | subject, RFC 4514 (see [`crate::tls::dn`]) |
//! | `X-Client-Cert-Issuer` | issuer, same format |
//! | `X-Client-Cert-Serial` | serial number, lowercase hex without sign byte |
//! | `X-Client-Cert-Fingerprint` | SHA-256 of the leaf's DER, lowercase hex |
//! | `X-Client-Cert-Not-After` | notAfter, RFC 3339 UTC |
//! | `X-Forwarded-For` | the client's IP address |
//! | `X-Forwarded-Proto` | `https` |
//! | `X-Forwarded-Host` | the Host / :authority the client sent |
//! | secret header | the shared secret from `[identity] secret_file` |

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{Config, ConfigError};
use crate::tls::dn::format_name;
use crate::tls::files::ConfigFile;

/// Shortest shared secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// `Client-Cert` (RFC 9440).
pub static CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
/// `Client-Cert-Chain` (RFC 9440).
pub static CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
/// `X-Client-Cert-Subject`.
pub static SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
/// `X-Client-Cert-Issuer`.
pub static ISSUER: HeaderName = HeaderName::from_static("x-client-cert-issuer");
/// `X-Client-Cert-Serial`.
pub static SERIAL: HeaderName = HeaderName::from_static("x-client-cert-serial");
/// `X-Client-Cert-Fingerprint`.
pub static FINGERPRINT: HeaderName = HeaderName::from_static("x-client-cert-fingerprint");
/// `X-Client-Cert-Not-After`.
pub static NOT_AFTER: HeaderName = HeaderName::from_static("x-client-cert-not-after");
/// `X-Forwarded-For`.
pub static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The identity read from a verified client certificate chain, with the
/// header values already encoded.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Subject, RFC 4514.
    pub subject: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 fingerprint of the leaf, lowercase hex.
    pub fingerprint: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("subject", &self.subject)
            .field("serial", &self.serial)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A client certificate the proxy cannot describe (only possible for
/// certificates webpki accepted but x509-parser does not).
#[derive(Debug, thiserror::Error)]
#[error("cannot read the client certificate: {0}")]
pub struct IdentityError(String);

impl ClientIdentity {
    /// Reads the leaf (first) certificate and encodes the further ones as the chain.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self, IdentityError> {
        let (leaf_der, sent_chain) = chain
            .split_first()
            .ok_or_else(|| IdentityError("no certificate".into()))?;
        let (_, leaf) = X509Certificate::from_der(leaf_der.as_ref())
            .map_err(|e| IdentityError(e.to_string()))?;

        let subject = format_name(leaf.subject());
        let issuer = format_name(leaf.issuer());
        let serial = serial_hex(leaf.raw_serial());
        let fingerprint = hex(&Sha256::digest(leaf_der.as_ref()));
        let not_after = rfc3339_utc(&leaf.validity().not_after.to_datetime());

        let mut headers = vec![
            (CLIENT_CERT.clone(), sf_binary(leaf_der.as_ref())),
            (SUBJECT.clone(), ascii_value(&subject)?),
            (ISSUER.clone(), ascii_value(&issuer)?),
            (SERIAL.clone(), ascii_value(&serial)?),
            (FINGERPRINT.clone(), ascii_value(&fingerprint)?),
            (NOT_AFTER.clone(), ascii_value(&not_after)?),
        ];
        if !sent_chain.is_empty() {
            let list = sent_chain
                .iter()
                .map(|c| format!(":{}:", BASE64.encode(c.as_ref())))
                .collect::<Vec<_>>()
                .join(", ");
            headers.push((CLIENT_CERT_CHAIN.clone(), ascii_value(&list)?));
        }
        Ok(Self {
            subject,
            issuer,
            serial,
            fingerprint,
            not_after,
            headers,
        })
    }
}

fn sf_binary(der: &[u8]) -> HeaderValue {
    HeaderValue::try_from(format!(":{}:", BASE64.encode(der)))
        .expect("base64 is a valid header value")
}

fn ascii_value(text: &str) -> Result<HeaderValue, IdentityError> {
    HeaderValue::from_str(text)
        .map_err(|_| IdentityError(format!("value is not printable ASCII: {text:?}")))
}

/// The DER INTEGER's content bytes in lowercase hex, without a leading `00` sign byte.
fn serial_hex(raw: &[u8]) -> String {
    let digits = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    hex(digits)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn rfc3339_utc(time: &time::OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The headers that stay the same for every request of one connection: the
/// certificate's, `X-Forwarded-For` and `X-Forwarded-Proto`, encoded once
/// when the client is verified.
#[derive(Clone, Debug)]
pub struct ConnectionHeaders(Vec<(HeaderName, HeaderValue)>);

impl ConnectionHeaders {
    /// The headers for a client at `client_ip` with `identity`.
    pub fn new(identity: &ClientIdentity, client_ip: IpAddr) -> Self {
        let ip = HeaderValue::try_from(client_ip.to_canonical().to_string())
            .expect("an IP address is ASCII");
        let mut headers = identity.headers.clone();
        headers.push((FORWARDED_FOR.clone(), ip));
        headers.push((FORWARDED_PROTO.clone(), HeaderValue::from_static("https")));
        Self(headers)
    }
}

/// The shared secret, never printed.
#[derive(Clone)]
struct Secret(HeaderValue);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Applies the identity contract to requests on their way to the Befundserver.
#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    secret_name: HeaderName,
    secret: Secret,
    /// Extra names to strip, lower case with `_` replaced by `-`.
    extra: Vec<String>,
}

impl IdentityHeaders {
    /// Reads the shared secret and the strip list from `[identity]`.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let identity = &config.identity;
        let file = ConfigFile::new(
            &config.source,
            "identity.secret_file",
            &identity.secret_file,
        );
        let bytes = file.read()?;
        file.refuse_world_readable()?;
        let secret = std::str::from_utf8(&bytes)
            .ok()
            .map(|s| s.trim_end_matches(['\n', '\r']))
            .filter(|s| s.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or_else(|| {
                file.error(
                    "the secret must be one line of printable ASCII without spaces; create one with \
                     `openssl rand -hex 32`",
                )
            })?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(file.error(format!(
                "the secret has {} bytes, at least {MIN_SECRET_LEN} are required; create one with \
                 `openssl rand -hex 32`",
                secret.len()
            )));
        }
        let mut value = HeaderValue::from_str(secret).expect("checked to be printable ASCII");
        value.set_sensitive(true);
        let secret_name =
            HeaderName::from_bytes(identity.secret_header.as_bytes()).map_err(|_| {
                ConfigError::Invalid {
                    path: config.source.clone(),
                    key: "identity.secret_header".into(),
                    problem: "not a valid header name".into(),
                }
            })?;
        Ok(Self {
            secret_name,
            secret: Secret(value),
            extra: identity
                .strip_headers
                .iter()
                .map(|n| normalize(n))
                .collect(),
        })
    }

    /// The secret header's name.
    pub fn secret_header(&self) -> &HeaderName {
        &self.secret_name
    }

    /// Whether `name` is an identity header a client must not send through.
    pub fn is_stripped(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        is_builtin_identity_header(name)
            || same_name(name, self.secret_name.as_str())
            || self.extra.iter().any(|extra| same_name(name, extra))
    }

    /// Removes every client-supplied identity header (all values of each).
    pub fn strip(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| self.is_stripped(n))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
    }

    /// Sets the identity headers of a request on `connection` that addressed
    /// the proxy as `host`, each once. Call after [`Self::strip`].
    pub fn apply(
        &self,
        headers: &mut HeaderMap,
        connection: &ConnectionHeaders,
        host: &HeaderValue,
    ) {
        for (name, value) in &connection.0 {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(FORWARDED_HOST.clone(), host.clone());
        headers.insert(self.secret_name.clone(), self.secret.0.clone());
    }
}

fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// A header name byte as compared: lower case, `_` read as `-`.
fn normalized_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Whether two header names are equal, case-insensitively and with `_`
/// equal to `-` (without allocating: this runs for every request header).
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| normalized_byte(x) == normalized_byte(y))
}

/// Whether header name `name` starts with `prefix`, compared as in [`same_name`].
fn starts_with_name(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(x, y)| normalized_byte(x) == normalized_byte(y))
}

fn is_builtin_identity_header(name: &str) -> bool {
    [
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "forwarded",
        // Client-address headers that applications commonly trust as the
        // peer's address; only the proxy says where a request came from.
        "x-real-ip",
        "true-client-ip",
    ]
    .iter()
    .any(|exact| same_name(name, exact))
        || ["x-client-", "x-ssl-", "x-forwarded-"]
            .iter()
            .any(|prefix| starts_with_name(name, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> IdentityHeaders {
        let mut value = HeaderValue::from_static("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t");
        value.set_sensitive(true);
        IdentityHeaders {
            secret_name: HeaderName::from_static("x-befund-proxy-auth"),
            secret: Secret(value),
            extra: vec!["x-remote-user".into()],
        }
    }

    #[test]
    fn identity_headers_in_any_spelling_are_stripped() {
        let rules = headers();
        for name in [
            "client-cert",
            "client_cert",
            "client-cert-chain",
            "x-forwarded-client-cert",
            "x_forwarded_client_cert",
            "forwarded",
            "x-client-cert-subject",
            "x_client_cert_fingerprint",
            "x-client-anything",
            "x-ssl-client-dn",
            "x_ssl_client_verify",
            "x-forwarded-for",
            "x_forwarded_host",
            "x-forwarded-proto",
            "x-befund-proxy-auth",
            "x_befund_proxy_auth",
            "x-remote-user",
            "x_remote_user",
            "x-real-ip",
            "X_Real_IP",
            "true-client-ip",
        ] {
            assert!(
                rules.is_stripped(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
                "{name}"
            );
        }
    }

    #[test]
    fn ordinary_headers_are_kept() {
        let rules = headers();
        for name in [
            "cookie",
            "authorization",
            "x-client",
            "x-forwarded",
            "clientcert",
            "accept",
        ] {
            assert!(
                !rules.is_stripped(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
                "{name}"
            );
        }
    }

    #[test]
    fn strip_removes_every_value_of_a_repeated_header() {
        let mut map = HeaderMap::new();
        map.append("x-client-cert-subject", HeaderValue::from_static("CN=a"));
        map.append("x-client-cert-subject", HeaderValue::from_static("CN=b"));
        map.append("cookie", HeaderValue::from_static("a=b"));
        headers().strip(&mut map);
        assert_eq!(map.len(), 1);
        assert!(map.contains_key("cookie"));
    }

    fn leaf_identity() -> ClientIdentity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Dr. Nord");
        let cert = params.self_signed(&key).unwrap();
        ClientIdentity::from_chain(&[cert.der().clone()]).unwrap()
    }

    #[test]
    fn apply_replaces_client_values_and_sets_each_identity_header_once() {
        let rules = headers();
        let identity = leaf_identity();
        let client: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        let connection = ConnectionHeaders::new(&identity, client);
        let host = HeaderValue::from_static("befund.example");

        // The same connection's values serve every request unchanged.
        for _request in 0..2 {
            let mut map = HeaderMap::new();
            map.append(
                "x-client-cert-subject",
                HeaderValue::from_static("CN=forged"),
            );
            map.append("x_forwarded_for", HeaderValue::from_static("10.0.0.1"));
            map.append("accept", HeaderValue::from_static("*/*"));
            rules.strip(&mut map);
            rules.apply(&mut map, &connection, &host);

            let single = |name: &HeaderName| {
                let values: Vec<_> = map.get_all(name).iter().collect();
                assert_eq!(values.len(), 1, "{name}: {values:?}");
                values[0].to_str().unwrap().to_owned()
            };
            assert_eq!(single(&SUBJECT), identity.subject);
            assert_eq!(single(&ISSUER), identity.issuer);
            assert_eq!(single(&SERIAL), identity.serial);
            assert_eq!(single(&FINGERPRINT), identity.fingerprint);
            assert_eq!(single(&NOT_AFTER), identity.not_after);
            assert!(single(&CLIENT_CERT).starts_with(':'));
            assert_eq!(single(&FORWARDED_FOR), "198.51.100.7");
            assert_eq!(single(&FORWARDED_PROTO), "https");
            assert_eq!(single(&FORWARDED_HOST), "befund.example");
            let secret = map.get(rules.secret_header()).unwrap();
            assert!(secret.is_sensitive());
            assert_eq!(secret, "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t");
            assert!(!map.contains_key("x_forwarded_for"));
            assert!(!map.contains_key(&CLIENT_CERT_CHAIN));
            assert_eq!(map.get("accept").unwrap(), "*/*");
            assert_eq!(map.len(), 11);
        }
    }

    #[test]
    fn serial_drops_only_the_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x9f, 0x01]), "9f01");
        assert_eq!(serial_hex(&[0x5f, 0x3a]), "5f3a");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn not_after_is_rfc3339_utc_with_z() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_827_936_000).unwrap();
        assert_eq!(rfc3339_utc(&t), "2027-12-04T16:00:00Z");
    }

    #[test]
    fn secret_is_not_printed_by_debug() {
        let text = format!("{:?}", headers());
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}
