//! Which TLS versions and cipher suites the target accepts.
//!
//! rustls offers one suite at a time (every TLS 1.3 and TLS 1.2 suite of the
//! crypto provider, all AEAD), presenting the valid client certificate so that a
//! server requiring one does not end the handshake early. A suite counts as
//! accepted once the server answered with it and sent its certificate, even if
//! the audit then distrusts that certificate. What rustls cannot offer is
//! probed with `openssl s_client` (see [`super::openssl_probe`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedCipherSuite};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::protocol::{Weakness, WeaknessKind};
use super::target::Target;
use super::tls_client::{
    ClientIdentity, client_config, describe_handshake_error, suite_name, version_name,
};

/// The survey part of the protocol.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TlsSurvey {
    /// The `openssl version` used for the legacy probes, if one was found.
    pub openssl: Option<String>,
    /// One entry per probe.
    pub probes: Vec<SurveyProbe>,
}

impl TlsSurvey {
    /// Every accepted probe that is weak if accepted.
    pub fn weaknesses(&self) -> Vec<Weakness> {
        self.probes
            .iter()
            .filter(|p| p.result == ProbeResult::Accepted)
            .filter_map(|p| {
                p.weak_if_accepted.map(|kind| Weakness {
                    kind,
                    detail: format!("{} {} accepted: {}", p.protocol, p.cipher, p.detail),
                })
            })
            .collect()
    }
}

/// Which client made a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeTool {
    /// The audit's own rustls client.
    Rustls,
    /// The `openssl s_client` command.
    Openssl,
}

impl fmt::Display for ProbeTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rustls => "rustls",
            Self::Openssl => "openssl",
        })
    }
}

/// What a probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeResult {
    /// The server negotiated what was offered.
    Accepted,
    /// The server refused it.
    Rejected,
    /// The audit could not offer it, or got no answer.
    NotProbed,
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::NotProbed => "not probed",
        })
    }
}

/// One probe of the survey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SurveyProbe {
    /// The protocol version(s) offered, e.g. `TLS 1.3`.
    pub protocol: String,
    /// The cipher suite or family offered, e.g. `TLS13_AES_128_GCM_SHA256`, `CBC`.
    pub cipher: String,
    /// Who made the probe.
    pub tool: ProbeTool,
    /// What it found.
    pub result: ProbeResult,
    /// Evidence: what was negotiated, the alert, why it was not probed.
    pub detail: String,
    /// The weakness an acceptance means, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weak_if_accepted: Option<WeaknessKind>,
}

/// Verifies the server with the lab's trust anchors like any probe, and
/// remembers the chain the server sent, whether or not it verifies.
pub struct CapturingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl CapturingVerifier {
    /// Wraps the verifier for `--ca`.
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self {
            inner,
            chain: Mutex::new(None),
        }
    }

    /// The chain the server sent, if the handshake got that far.
    pub fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for CapturingVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturingVerifier").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.chain.lock().unwrap_or_else(PoisonError::into_inner) = Some(chain);

        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the rustls part of the survey needs.
pub struct RustlsSurvey<'a> {
    /// The provider whose suites are offered one by one.
    pub provider: Arc<CryptoProvider>,
    /// The verifier for `--ca`.
    pub verifier: Arc<WebPkiServerVerifier>,
    /// The valid client identity.
    pub identity: Arc<CertifiedKey>,
    /// The target (for SNI).
    pub target: &'a Target,
    /// Where to connect.
    pub address: SocketAddr,
    /// Bound for each connect and handshake.
    pub timeout: Duration,
}

impl RustlsSurvey<'_> {
    /// One handshake per suite; returns the probes and the first certificate
    /// chain the server sent.
    pub async fn run(&self) -> (Vec<SurveyProbe>, Option<Vec<CertificateDer<'static>>>) {
        let mut probes = Vec::new();
        let mut chain = None;
        for suite in &self.provider.cipher_suites {
            let (probe, seen) = self.probe_suite(*suite).await;
            probes.push(probe);
            chain = chain.or(seen);
        }
        (probes, chain)
    }

    async fn probe_suite(
        &self,
        suite: SupportedCipherSuite,
    ) -> (SurveyProbe, Option<Vec<CertificateDer<'static>>>) {
        let version = version_name(suite.version().version);
        let probe = |result, detail| SurveyProbe {
            protocol: version.clone(),
            cipher: suite_name(suite.suite()),
            tool: ProbeTool::Rustls,
            result,
            detail,
            weak_if_accepted: None,
        };

        let provider = Arc::new(CryptoProvider {
            cipher_suites: vec![suite],
            ..CryptoProvider::clone(&self.provider)
        });
        let verifier = Arc::new(CapturingVerifier::new(Arc::clone(&self.verifier)));
        let identity = ClientIdentity::Present(Arc::clone(&self.identity));
        let config = match client_config(provider, verifier.clone(), identity) {
            Ok(config) => config,
            Err(e) => return (probe(ProbeResult::NotProbed, e.to_string()), None),
        };

        let (result, detail) = self.handshake(config, &verifier).await;
        (probe(result, detail), verifier.chain())
    }

    async fn handshake(
        &self,
        config: rustls::ClientConfig,
        verifier: &CapturingVerifier,
    ) -> (ProbeResult, String) {
        let timeout = self.timeout;
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(self.address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return (ProbeResult::NotProbed, format!("TCP connect failed: {e}")),
            Err(_) => {
                return (
                    ProbeResult::NotProbed,
                    format!("TCP connect timed out after {timeout:?}"),
                );
            }
        };

        let connector = TlsConnector::from(Arc::new(config));
        let handshake = connector.connect(self.target.server_name().clone(), tcp);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(_tls)) => (ProbeResult::Accepted, "handshake completed".to_owned()),
            // The server chose the suite and sent its certificate; the audit
            // then stopped (untrusted or weak certificate).
            Ok(Err(e)) if verifier.chain().is_some() => (
                ProbeResult::Accepted,
                format!(
                    "negotiated, then the audit stopped: {}",
                    describe_handshake_error(&e)
                ),
            ),
            Ok(Err(e)) => (ProbeResult::Rejected, describe_handshake_error(&e)),
            Err(_) => (
                ProbeResult::NotProbed,
                format!("no answer within {timeout:?}"),
            ),
        }
    }
}
