//! The lab's access protocol ("Prüfprotokoll"), automated.
//!
//! An audit runs the access tests of the lab's security concept against a live
//! deployment, from wherever it runs:
//!
//! 1. no client certificate: refused;
//! 2. a self-issued certificate with the valid one's subject: refused;
//! 3. the valid certificate without its private key: refused;
//! 4. the valid certificate with its key: admitted, and an HTTP response arrives;
//! 5. each Befundserver address directly: unreachable;
//! 6. the proxy's HTTPS port: reachable;
//! 7. optionally, a port scan of the target host: only the proxy port open.
//!
//! It then reports on the server certificate and surveys the TLS versions and
//! cipher suites the target accepts, flagging what the lab's old concept
//! allowed and what is weak today. The result is a [`Protocol`], which
//! [`markdown`] and [`json`] render.

pub mod credentials;
pub mod impostor;
pub mod json;
pub mod markdown;
pub mod openssl_probe;
pub mod protocol;
pub mod reachability;
pub mod server_cert;
pub mod target;
pub mod tls_client;
pub mod tls_survey;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use self::protocol::{AccessTest, Expectation, Header, Protocol, Row, Verdict, Weakness};
pub use self::reachability::PortList;
pub use self::target::Target;

use self::credentials::{CredentialError, Credentials};
use self::impostor::ImpostorError;
use self::openssl_probe::{Endpoint, Openssl};
use self::reachability::{Reachability, tcp_probe};
use self::server_cert::{CertificateReport, ServerCertificate};
use self::target::TargetError;
use self::tls_client::{AccessOutcome, ClientIdentity, client_config, probe_access};
use self::tls_survey::{ProbeResult, ProbeTool, RustlsSurvey, SurveyProbe, TlsSurvey};

/// What to audit and how.
#[derive(Clone, Debug)]
pub struct AuditPlan {
    /// The deployment, `https://NAME[:PORT]`.
    pub target: Target,
    /// Connect here instead of resolving the target's name.
    pub connect: Option<SocketAddr>,
    /// The CA certificate(s) that must have issued the target's certificate.
    pub ca: PathBuf,
    /// The physician's certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// Addresses that must be unreachable from here.
    pub befundservers: Vec<SocketAddr>,
    /// The path to request with the valid certificate.
    pub path: String,
    /// Ports of the target host to scan, if any.
    pub scan_ports: Option<PortList>,
    /// Bound for each connect, handshake, response and `openssl` run.
    pub timeout: Duration,
    /// Bound for the whole port scan.
    pub scan_budget: Duration,
}

/// Why an audit could not run at all (as opposed to finding problems).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The CA, certificate or key could not be loaded.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The target could not be resolved.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// An impostor certificate could not be generated.
    #[error(transparent)]
    Impostor(#[from] ImpostorError),
    /// The TLS client could not be configured.
    #[error("failed to configure the TLS client: {0}")]
    Tls(String),
}

/// Runs every test of the protocol against `plan.target` and returns the protocol.
pub async fn run(plan: &AuditPlan) -> Result<Protocol, AuditError> {
    let started = OffsetDateTime::now_utc();
    let started = started.replace_nanosecond(0).unwrap_or(started);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let credentials = Credentials::load(&plan.ca, &plan.cert, &plan.key, &provider)?;
    let address = plan.target.resolve(plan.connect).await?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(credentials.roots(), Arc::clone(&provider))
            .build()
            .map_err(|e| AuditError::Tls(e.to_string()))?;
    let header = Header {
        target: plan.target.to_string(),
        address,
        date: started.format(&Rfc3339).unwrap_or_default(),
        tool: concat!("befundctl ", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    tracing::info!(audited = %plan.target, %address, "access audit started");

    let context = Context {
        plan,
        provider,
        credentials,
        verifier,
        address,
    };
    let mut rows = context.access_rows().await?;
    rows.extend(context.reachability_rows().await);
    let (tls_survey, server_certificate) = context.survey(started).await;

    Ok(Protocol::new(header, rows, server_certificate, tls_survey))
}

/// Everything the probes share.
struct Context<'a> {
    plan: &'a AuditPlan,
    provider: Arc<CryptoProvider>,
    credentials: Credentials,
    verifier: Arc<WebPkiServerVerifier>,
    address: SocketAddr,
}

impl Context<'_> {
    /// Rows 1 to 4: the TLS client tests.
    async fn access_rows(&self) -> Result<Vec<Row>, AuditError> {
        let provider = &self.provider;
        let self_issued = impostor::self_issued(&self.credentials.chain()[0], provider)?;
        let without_key = impostor::without_key(self.credentials.chain(), provider)?;
        let tests = [
            (AccessTest::NoClientCertificate, ClientIdentity::None),
            (
                AccessTest::SelfIssuedCertificate,
                ClientIdentity::Present(Arc::new(self_issued)),
            ),
            (
                AccessTest::CertificateWithoutKey,
                ClientIdentity::Present(Arc::new(without_key)),
            ),
            (
                AccessTest::ValidCertificate,
                ClientIdentity::Present(self.credentials.identity()),
            ),
        ];

        let mut rows = Vec::new();
        for (test, identity) in tests {
            let config = client_config(Arc::clone(provider), self.verifier.clone(), identity)
                .map_err(|e| AuditError::Tls(e.to_string()))?;
            let outcome = probe_access(
                Arc::new(config),
                &self.plan.target,
                self.address,
                &self.plan.path,
                self.plan.timeout,
            )
            .await;
            tracing::debug!(row = test.number(), %outcome, "access probe done");
            rows.push(access_row(test, &outcome, &self.plan.path));
        }
        Ok(rows)
    }

    /// Rows 5 to 7: what is reachable over TCP.
    async fn reachability_rows(&self) -> Vec<Row> {
        let timeout = self.plan.timeout;
        let mut rows = Vec::new();

        if self.plan.befundservers.is_empty() {
            rows.push(Row::with_verdict(
                AccessTest::DirectBefundserver { address: None },
                "not tested".to_owned(),
                Verdict::Skipped,
                "give the Befundserver's address with --befundserver ADDR:PORT".to_owned(),
            ));
        }
        for &address in &self.plan.befundservers {
            let reachability = tcp_probe(address, timeout).await;
            let observed = reachable(
                &reachability,
                Expectation::Possible,
                Expectation::Impossible,
            );
            let test = AccessTest::DirectBefundserver {
                address: Some(address),
            };
            rows.push(Row::judged(test, observed, reachability.to_string()));
        }

        let reachability = tcp_probe(self.address, timeout).await;
        let observed = reachable(
            &reachability,
            Expectation::Possible,
            Expectation::Impossible,
        );
        let detail = format!("{reachability} ({})", self.address);
        rows.push(Row::judged(AccessTest::ProxyPort, observed, detail));

        rows.push(self.scan_row().await);
        rows
    }

    /// Row 7: the optional port scan.
    async fn scan_row(&self) -> Row {
        let Some(ports) = &self.plan.scan_ports else {
            return Row::with_verdict(
                AccessTest::PortScan,
                "not tested".to_owned(),
                Verdict::Skipped,
                "give ports to scan with --scan-ports LIST|RANGE".to_owned(),
            );
        };

        let host = self.address.ip();
        let result =
            reachability::scan(host, ports, self.plan.timeout, self.plan.scan_budget).await;
        let others: Vec<String> = result
            .open
            .iter()
            .filter(|&&port| port != self.address.port())
            .map(u16::to_string)
            .collect();
        let detail = format!(
            "{} ports of {host} scanned: open {:?}, closed {}, filtered {}, not probed in time {}",
            ports.len(),
            result.open,
            result.closed,
            result.filtered,
            result.unprobed
        );

        if !others.is_empty() {
            let observed = format!("other ports open: {}", others.join(", "));
            Row::with_verdict(AccessTest::PortScan, observed, Verdict::Fail, detail)
        } else if result.unprobed > 0 {
            let observed = "inconclusive (scan incomplete)".to_owned();
            Row::with_verdict(AccessTest::PortScan, observed, Verdict::Fail, detail)
        } else {
            Row::judged(AccessTest::PortScan, Expectation::OnlyProxyPortOpen, detail)
        }
    }

    /// The TLS survey and the server-certificate report.
    async fn survey(&self, now: OffsetDateTime) -> (TlsSurvey, ServerCertificate) {
        let rustls = RustlsSurvey {
            provider: Arc::clone(&self.provider),
            verifier: Arc::clone(&self.verifier),
            identity: self.credentials.identity(),
            target: &self.plan.target,
            address: self.address,
            timeout: self.plan.timeout,
        };
        let (mut probes, mut chain) = rustls.run().await;
        let mut via = "rustls handshake";

        let sni = match self.plan.target.server_name() {
            rustls::pki_types::ServerName::DnsName(name) => Some(name.as_ref().to_owned()),
            _ => None,
        };
        let endpoint = Endpoint {
            address: self.address,
            sni: sni.as_deref(),
            cert: &self.plan.cert,
            key: &self.plan.key,
            timeout: self.plan.timeout,
        };
        let openssl = Openssl::discover(self.plan.timeout).await;
        match &openssl {
            Some(openssl) => {
                probes.extend(openssl.survey(&endpoint).await);
                if chain.is_none() {
                    chain = openssl.fetch_chain(&endpoint).await;
                    via = "openssl s_client";
                }
            }
            None => probes.extend(not_probed_without_openssl()),
        }

        let server_certificate = match chain {
            Some(chain) => match CertificateReport::from_chain(&chain, via, now) {
                Ok(report) => ServerCertificate::Obtained(Box::new(report)),
                Err(reason) => ServerCertificate::NotObtained { reason },
            },
            None => ServerCertificate::NotObtained {
                reason: "no handshake got as far as the server's certificate".to_owned(),
            },
        };
        let survey = TlsSurvey {
            openssl: openssl.map(|o| o.version().to_owned()),
            probes,
        };
        (survey, server_certificate)
    }
}

/// The row for one TLS client probe.
fn access_row(test: AccessTest, outcome: &AccessOutcome, path: &str) -> Row {
    match outcome {
        AccessOutcome::Admitted { status, negotiated } => {
            let detail = format!("HTTP {status} for GET {path} ({negotiated})");
            Row::judged(test, Expectation::Admitted, detail)
        }
        AccessOutcome::Refused { .. } => {
            Row::judged(test, Expectation::Refused, outcome.to_string())
        }
        AccessOutcome::Inconclusive(reason) => Row::with_verdict(
            test,
            "inconclusive".to_owned(),
            Verdict::Fail,
            reason.clone(),
        ),
    }
}

fn reachable(reachability: &Reachability, open: Expectation, closed: Expectation) -> Expectation {
    if reachability.is_open() { open } else { closed }
}

/// The legacy probes' rows when no `openssl` is installed.
fn not_probed_without_openssl() -> Vec<SurveyProbe> {
    let legacy = ["SSL 3.0", "TLS 1.0", "TLS 1.1"]
        .map(|p| (p, "any", protocol::WeaknessKind::ProtocolBelowTls12));
    let families = [
        ("RC4", protocol::WeaknessKind::Rc4),
        ("3DES", protocol::WeaknessKind::TripleDes),
        ("CBC", protocol::WeaknessKind::Cbc),
        ("NULL", protocol::WeaknessKind::NullCipher),
        ("EXPORT", protocol::WeaknessKind::ExportCipher),
    ]
    .map(|(c, k)| ("TLS 1.2 and older", c, k));

    legacy
        .into_iter()
        .chain(families)
        .map(|(protocol, cipher, kind)| SurveyProbe {
            protocol: protocol.to_owned(),
            cipher: cipher.to_owned(),
            tool: ProbeTool::Openssl,
            result: ProbeResult::NotProbed,
            detail: "not probed (openssl not found)".to_owned(),
            weak_if_accepted: Some(kind),
        })
        .collect()
}
