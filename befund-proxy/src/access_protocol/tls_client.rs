//! The TLS client probes of rows 1 to 4: connect with a given client identity
//! (none, an impostor, the real one), send `GET path`, and classify what
//! happened as admitted, refused by the server, or inconclusive.
//!
//! Only the *server's* refusal counts as refused: a TLS alert from the server,
//! or the connection closed before any HTTP response. A failure on the audit's
//! own side (the target's certificate not trusted by `--ca`, no common protocol
//! version, a timeout) proves nothing about client authentication and is
//! reported as inconclusive.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, ClientConnection, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::target::Target;

/// The `User-Agent` of the audit's requests, so the proxy's log shows them.
const AUDIT_USER_AGENT: &str = concat!("befundctl-audit/", env!("CARGO_PKG_VERSION"));

/// The certificate a probe presents.
pub enum ClientIdentity {
    /// No certificate: the client answers a certificate request with an empty list.
    None,
    /// This chain and signing key, presented whatever CAs the server names.
    Present(Arc<CertifiedKey>),
}

/// Presents one fixed certificate and key whenever the server asks, ignoring
/// the server's hints about acceptable CAs: an impostor does not hold back.
struct PresentedIdentity(Arc<CertifiedKey>);

impl fmt::Debug for PresentedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately no fields: the signing key must never be printed.
        f.write_str("PresentedIdentity")
    }
}

impl ResolvesClientCert for PresentedIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client configuration for one probe: TLS 1.3 and 1.2 with the provider's
/// suites (or the subset in `provider`), the given server verifier and identity.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    identity: ClientIdentity,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        ClientIdentity::None => builder.with_no_client_auth(),
        ClientIdentity::Present(key) => {
            builder.with_client_cert_resolver(Arc::new(PresentedIdentity(key)))
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The protocol version and cipher suite a handshake agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// E.g. `TLS 1.3`.
    pub version: String,
    /// E.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
}

impl Negotiated {
    fn of(connection: &ClientConnection) -> Self {
        let version = connection
            .protocol_version()
            .map_or_else(|| "unknown version".to_owned(), version_name);
        let cipher_suite = connection
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown suite".to_owned(), |s| suite_name(s.suite()));
        Self {
            version,
            cipher_suite,
        }
    }
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.version, self.cipher_suite)
    }
}

/// A protocol version as people write it: `TLS 1.2`.
pub fn version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::SSLv3 => "SSL 3.0".to_owned(),
        rustls::ProtocolVersion::TLSv1_0 => "TLS 1.0".to_owned(),
        rustls::ProtocolVersion::TLSv1_1 => "TLS 1.1".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A cipher suite's IANA-style name, e.g. `TLS13_AES_128_GCM_SHA256`.
pub fn suite_name(suite: rustls::CipherSuite) -> String {
    format!("{suite:?}")
}

/// A TLS alert as the RFCs spell it, with its code: `unknown_ca (48)`.
pub fn alert_name(alert: AlertDescription) -> String {
    let debug = format!("{alert:?}");
    let mut name = String::with_capacity(debug.len() + 4);
    let mut previous_lower = false;
    for c in debug.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            name.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        name.push(c.to_ascii_lowercase());
    }
    format!("{name} ({})", u8::from(alert))
}

/// When the server turned the client away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Before the client's handshake completed (TLS 1.2, or a TLS 1.3 server
    /// that rejects early).
    Handshake,
    /// After the client's Finished, before any HTTP response: how TLS 1.3
    /// servers reject a client certificate.
    AfterHandshake,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Handshake => "during the handshake",
            Self::AfterHandshake => "after the handshake, before any HTTP response",
        })
    }
}

/// How the server ended the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It sent this TLS alert.
    Alert(AlertDescription),
    /// It closed the connection.
    Closed,
    /// It reset the connection.
    Reset,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Alert(alert) => write!(f, "TLS alert {}", alert_name(*alert)),
            Self::Closed => f.write_str("connection closed"),
            Self::Reset => f.write_str("connection reset"),
        }
    }
}

/// What one access probe observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessOutcome {
    /// The handshake completed and an HTTP response arrived.
    Admitted {
        /// The response's status code.
        status: u16,
        /// What the handshake agreed on.
        negotiated: Negotiated,
    },
    /// The server ended the connection before any HTTP response.
    Refused {
        /// How.
        refusal: Refusal,
        /// When.
        stage: Stage,
    },
    /// The probe could not tell: the failure was on the audit's side or the
    /// server did not answer in time.
    Inconclusive(String),
}

impl fmt::Display for AccessOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admitted { status, negotiated } => {
                write!(f, "HTTP {status} ({negotiated})")
            }
            Self::Refused { refusal, stage } => write!(f, "{refusal} {stage}"),
            Self::Inconclusive(reason) => f.write_str(reason),
        }
    }
}

/// A failed exchange, classified.
enum Failure {
    Refused(Refusal),
    Local(String),
}

impl Failure {
    fn at(self, stage: Stage) -> AccessOutcome {
        match self {
            Self::Refused(refusal) => AccessOutcome::Refused { refusal, stage },
            Self::Local(reason) => AccessOutcome::Inconclusive(reason),
        }
    }

    /// Of two views of one failure, the more telling: a TLS alert beats a
    /// closed connection, which beats a local error.
    fn better(self, other: Self) -> Self {
        match (&self, &other) {
            (Self::Refused(Refusal::Alert(_)), _) => self,
            (_, Self::Refused(Refusal::Alert(_))) => other,
            (Self::Refused(_), _) => self,
            (_, Self::Refused(_)) => other,
            _ => self,
        }
    }
}

/// Walks an error chain for the TLS or socket error that ended the exchange.
fn classify(error: &(dyn StdError + 'static)) -> Failure {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return from_tls(tls);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            // `io::Error::source` skips the wrapped error itself, so look inside.
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return from_tls(tls);
            }
            match io.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionAborted => {
                    return Failure::Refused(Refusal::Closed);
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    return Failure::Refused(Refusal::Reset);
                }
                _ => {}
            }
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return Failure::Refused(Refusal::Closed);
        }
        current = e.source();
    }
    Failure::Local(error.to_string())
}

fn from_tls(error: &rustls::Error) -> Failure {
    match error {
        rustls::Error::AlertReceived(alert) => Failure::Refused(Refusal::Alert(*alert)),
        rustls::Error::InvalidCertificate(_) => Failure::Local(format!(
            "the audit does not trust the target's certificate (check --ca and the target name): {error}"
        )),
        other => Failure::Local(format!("TLS failed on the audit's side: {other}")),
    }
}

/// A handshake error for the protocol: the server's alert by its RFC name,
/// otherwise the error as rustls or the socket reports it.
pub fn describe_handshake_error(error: &io::Error) -> String {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => format!("TLS alert {}", alert_name(*alert)),
        _ => error.to_string(),
    }
}

/// Connects to `address` as a client of `target` with `config`, then sends
/// `GET path` and waits for the response. Each step is bounded by `timeout`.
pub async fn probe_access(
    config: Arc<ClientConfig>,
    target: &Target,
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> AccessOutcome {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return AccessOutcome::Inconclusive(format!("TCP connect failed: {e}")),
        Err(_) => {
            return AccessOutcome::Inconclusive(format!("TCP connect timed out after {timeout:?}"));
        }
    };

    let connector = TlsConnector::from(config);
    let handshake = connector.connect(target.server_name().clone(), tcp);
    let tls = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return classify(&e).at(Stage::Handshake),
        Err(_) => {
            return AccessOutcome::Inconclusive(format!(
                "TLS handshake timed out after {timeout:?}"
            ));
        }
    };
    let negotiated = Negotiated::of(tls.get_ref().1);

    match tokio::time::timeout(timeout, http_get(tls, target, path)).await {
        Ok(Ok(status)) => AccessOutcome::Admitted { status, negotiated },
        Ok(Err(failure)) => failure.at(Stage::AfterHandshake),
        Err(_) => AccessOutcome::Inconclusive(format!(
            "handshake completed ({negotiated}) but neither a response nor a refusal came within {timeout:?}"
        )),
    }
}

async fn http_get(tls: TlsStream<TcpStream>, target: &Target, path: &str) -> Result<u16, Failure> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| classify(&e))?;
    let driver = tokio::spawn(connection);

    let request = Request::get(path)
        .header(HOST, target.authority())
        .header(USER_AGENT, AUDIT_USER_AGENT)
        .body(String::new())
        .map_err(|e| Failure::Local(format!("invalid request for path {path}: {e}")))?;

    match sender.send_request(request).await {
        Ok(response) => {
            driver.abort();
            Ok(response.status().as_u16())
        }
        Err(e) => {
            // The connection task holds the transport error that ended the
            // exchange; the request's error may only say "closed".
            let failure = classify(&e);
            match driver.await {
                Ok(Err(connection_error)) => Err(failure.better(classify(&connection_error))),
                _ => Err(failure),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_follow_the_rfc_spelling() {
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca (48)");
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required (116)"
        );
        assert_eq!(
            alert_name(AlertDescription::DecryptError),
            "decrypt_error (51)"
        );
    }

    #[test]
    fn alert_inside_io_error_is_a_refusal() {
        let error = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::BadCertificate),
        );

        assert!(matches!(
            classify(&error),
            Failure::Refused(Refusal::Alert(AlertDescription::BadCertificate))
        ));
    }

    #[test]
    fn untrusted_server_certificate_is_not_a_refusal() {
        let error = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );

        assert!(matches!(classify(&error), Failure::Local(_)));
    }

    #[test]
    fn eof_is_a_closed_connection() {
        let error = io::Error::from(io::ErrorKind::UnexpectedEof);

        assert!(matches!(
            classify(&error),
            Failure::Refused(Refusal::Closed)
        ));
    }
}
