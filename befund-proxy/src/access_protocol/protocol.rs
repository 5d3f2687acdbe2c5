//! The access protocol's data model: the pass/fail rows of the lab's access
//! tests, the server-certificate report, the TLS survey and the weaknesses they
//! revealed. The renderers turn one [`Protocol`] into Markdown or JSON.

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

use super::server_cert::ServerCertificate;
use super::tls_survey::TlsSurvey;

/// Everything one audit run found, in the order the protocol lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Protocol {
    /// What was audited, when and with which tool.
    pub header: Header,
    /// The access tests, one row each.
    pub rows: Vec<Row>,
    /// The report on the certificate the target presented.
    pub server_certificate: ServerCertificate,
    /// Which TLS versions and cipher suites the target accepts.
    pub tls_survey: TlsSurvey,
    /// Weaknesses found by the certificate report and the survey.
    pub weaknesses: Vec<Weakness>,
    /// `true` when every row is as expected and no weakness was found.
    pub passed: bool,
}

impl Protocol {
    /// Assembles the protocol and derives the weaknesses and the overall result.
    pub fn new(
        header: Header,
        rows: Vec<Row>,
        server_certificate: ServerCertificate,
        tls_survey: TlsSurvey,
    ) -> Self {
        let mut weaknesses = server_certificate.weaknesses();
        weaknesses.extend(tls_survey.weaknesses());
        let passed = weaknesses.is_empty() && rows.iter().all(|row| row.verdict != Verdict::Fail);

        Self {
            header,
            rows,
            server_certificate,
            tls_survey,
            weaknesses,
            passed,
        }
    }
}

/// The protocol's header.
#[derive(Clone, Debug, Serialize)]
pub struct Header {
    /// The audited deployment as given, `https://NAME[:PORT]`.
    pub target: String,
    /// The address the audit connected to for it.
    pub address: SocketAddr,
    /// When the audit started, RFC 3339 UTC.
    pub date: String,
    /// The tool and its version, e.g. `befundctl 0.1.0`.
    pub tool: String,
}

/// One access test of the lab's protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessTest {
    /// Row 1: a TLS client that presents no certificate.
    NoClientCertificate,
    /// Row 2: a self-signed certificate with the valid certificate's subject.
    SelfIssuedCertificate,
    /// Row 3: the valid certificate, signed for with a different private key.
    CertificateWithoutKey,
    /// Row 4: the valid certificate with its private key.
    ValidCertificate,
    /// Row 5: a direct TCP connection to a Befundserver address.
    DirectBefundserver {
        /// The address that must be unreachable (`None` when none was given).
        address: Option<SocketAddr>,
    },
    /// Row 6: a TCP connection to the proxy's HTTPS port.
    ProxyPort,
    /// Row 7: a port scan of the target host.
    PortScan,
}

impl AccessTest {
    /// The row number the lab's protocol uses.
    pub fn number(&self) -> u8 {
        match self {
            Self::NoClientCertificate => 1,
            Self::SelfIssuedCertificate => 2,
            Self::CertificateWithoutKey => 3,
            Self::ValidCertificate => 4,
            Self::DirectBefundserver { .. } => 5,
            Self::ProxyPort => 6,
            Self::PortScan => 7,
        }
    }

    /// What the protocol requires for this test.
    pub fn expected(&self) -> Expectation {
        match self {
            Self::NoClientCertificate
            | Self::SelfIssuedCertificate
            | Self::CertificateWithoutKey => Expectation::Refused,
            Self::ValidCertificate => Expectation::Admitted,
            Self::DirectBefundserver { .. } => Expectation::Impossible,
            Self::ProxyPort => Expectation::Possible,
            Self::PortScan => Expectation::OnlyProxyPortOpen,
        }
    }
}

impl fmt::Display for AccessTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoClientCertificate => f.write_str("no client certificate"),
            Self::SelfIssuedCertificate => {
                f.write_str("self-issued certificate (same subject, not signed by the lab CA)")
            }
            Self::CertificateWithoutKey => {
                f.write_str("valid certificate presented without its private key")
            }
            Self::ValidCertificate => f.write_str("valid certificate with its private key"),
            Self::DirectBefundserver {
                address: Some(address),
            } => {
                write!(f, "direct access to the Befundserver {address}")
            }
            Self::DirectBefundserver { address: None } => {
                f.write_str("direct access to the Befundserver")
            }
            Self::ProxyPort => f.write_str("access to the reverse proxy's HTTPS port"),
            Self::PortScan => f.write_str("port scan of the target host"),
        }
    }
}

/// The result a row requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// The proxy turns the client away before any HTTP response.
    Refused,
    /// The proxy completes the handshake and answers HTTP.
    Admitted,
    /// No TCP connection can be made.
    Impossible,
    /// A TCP connection can be made.
    Possible,
    /// Of the scanned ports, at most the proxy's is open.
    OnlyProxyPortOpen,
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refused => "refused",
            Self::Admitted => "admitted",
            Self::Impossible => "impossible",
            Self::Possible => "possible",
            Self::OnlyProxyPortOpen => "only the proxy port open",
        })
    }
}

/// Whether a row came out as the protocol requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Observed as expected.
    Pass,
    /// Observed otherwise, or the probe could not decide.
    Fail,
    /// Not run because the operator did not ask for it.
    Skipped,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skipped => "SKIPPED",
        })
    }
}

/// One row of the protocol.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The row number (several rows may share 5, one per Befundserver address).
    pub number: u8,
    /// Which test.
    pub test: AccessTest,
    /// What the test requires.
    pub expected: Expectation,
    /// What the probe saw, in a word or two (`refused`, `admitted`, ...).
    pub observed: String,
    /// Whether that is what the test requires.
    pub verdict: Verdict,
    /// Evidence: the TLS alert, the HTTP status, the connect error.
    pub detail: String,
}

impl Row {
    /// A row whose verdict follows from comparing the observation with the expectation.
    pub fn judged(test: AccessTest, observed: Expectation, detail: String) -> Self {
        let verdict = if observed == test.expected() {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        Self::with_verdict(test, observed.to_string(), verdict, detail)
    }

    /// A row with an explicit verdict, for observations that are no expectation
    /// (an inconclusive probe, a skipped test).
    pub fn with_verdict(
        test: AccessTest,
        observed: String,
        verdict: Verdict,
        detail: String,
    ) -> Self {
        Self {
            number: test.number(),
            expected: test.expected(),
            test,
            observed,
            verdict,
            detail,
        }
    }
}

/// A weakness: something the lab's old concept allowed that is weak today.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Weakness {
    /// Which kind.
    pub kind: WeaknessKind,
    /// The evidence, e.g. the protocol and cipher the target negotiated.
    pub detail: String,
}

/// The kinds of weakness the audit flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeaknessKind {
    /// SSL 3.0, TLS 1.0 or TLS 1.1 accepted.
    ProtocolBelowTls12,
    /// An RC4 cipher suite accepted.
    Rc4,
    /// A 3DES cipher suite accepted.
    TripleDes,
    /// A CBC-mode cipher suite accepted.
    Cbc,
    /// A cipher suite without encryption accepted.
    NullCipher,
    /// An export-grade cipher suite accepted.
    ExportCipher,
    /// The server certificate is signed with SHA-1 or MD5.
    WeakSignatureHash,
    /// The server certificate's RSA key is shorter than 2048 bits.
    ShortRsaKey,
    /// The server certificate is outside its validity period.
    CertificateNotValidNow,
}

impl fmt::Display for WeaknessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ProtocolBelowTls12 => "protocol below TLS 1.2",
            Self::Rc4 => "RC4 cipher",
            Self::TripleDes => "3DES cipher",
            Self::Cbc => "CBC-mode cipher",
            Self::NullCipher => "NULL cipher",
            Self::ExportCipher => "export-grade cipher",
            Self::WeakSignatureHash => "SHA-1/MD5 certificate signature",
            Self::ShortRsaKey => "RSA key below 2048 bits",
            Self::CertificateNotValidNow => "certificate not valid now",
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::access_protocol::server_cert::{CertificateReport, KeyInfo, KeyType};
    use crate::access_protocol::tls_survey::{ProbeResult, ProbeTool, SurveyProbe};

    /// A protocol as a weak deployment would produce it.
    pub(crate) fn sample() -> Protocol {
        let header = Header {
            target: "https://proxy.befund.test:8443".to_owned(),
            address: "127.0.0.1:8443".parse().unwrap(),
            date: "2026-12-04T16:00:00Z".to_owned(),
            tool: "befundctl 0.1.0".to_owned(),
        };
        let refused = "TLS alert certificate_required (116) after the handshake".to_owned();
        let rows = vec![
            Row::judged(
                AccessTest::NoClientCertificate,
                Expectation::Refused,
                refused,
            ),
            Row::judged(
                AccessTest::SelfIssuedCertificate,
                Expectation::Admitted,
                "HTTP 200".to_owned(),
            ),
            Row::with_verdict(
                AccessTest::CertificateWithoutKey,
                "inconclusive".to_owned(),
                Verdict::Fail,
                "TLS handshake timed out".to_owned(),
            ),
            Row::judged(
                AccessTest::ValidCertificate,
                Expectation::Admitted,
                "HTTP 200".to_owned(),
            ),
            Row::judged(
                AccessTest::DirectBefundserver {
                    address: Some("127.0.0.1:9".parse().unwrap()),
                },
                Expectation::Impossible,
                "TCP connect refused".to_owned(),
            ),
            Row::judged(
                AccessTest::ProxyPort,
                Expectation::Possible,
                "TCP connect succeeded".to_owned(),
            ),
            Row::with_verdict(
                AccessTest::PortScan,
                "not tested".to_owned(),
                Verdict::Skipped,
                String::new(),
            ),
        ];
        let certificate = CertificateReport {
            obtained_via: "openssl s_client".to_owned(),
            chain_length: 1,
            subject: "CN=proxy.befund.test".to_owned(),
            issuer: "CN=proxy.befund.test".to_owned(),
            serial: "01".to_owned(),
            subject_alt_names: vec!["DNS:proxy.befund.test".to_owned()],
            key: KeyInfo {
                key_type: KeyType::Rsa,
                bits: 1024,
                curve: None,
            },
            signature_algorithm: "sha256WithRSAEncryption".to_owned(),
            weak_signature_hash: false,
            not_before: "2026-12-01T00:00:00Z".to_owned(),
            not_after: "2027-12-01T00:00:00Z".to_owned(),
            days_left: 361,
            valid_now: true,
            key_usage: vec!["Digital Signature".to_owned()],
            extended_key_usage: vec!["serverAuth".to_owned()],
        };
        let survey = TlsSurvey {
            openssl: Some("OpenSSL 3.0.19".to_owned()),
            probes: vec![SurveyProbe {
                protocol: "TLS 1.0".to_owned(),
                cipher: "any".to_owned(),
                tool: ProbeTool::Openssl,
                result: ProbeResult::Accepted,
                detail: "negotiated TLSv1 ECDHE-RSA-AES256-SHA".to_owned(),
                weak_if_accepted: Some(WeaknessKind::ProtocolBelowTls12),
            }],
        };
        Protocol::new(
            header,
            rows,
            ServerCertificate::Obtained(Box::new(certificate)),
            survey,
        )
    }

    #[test]
    fn judged_row_passes_only_when_observation_matches() {
        let pass = Row::judged(
            AccessTest::NoClientCertificate,
            Expectation::Refused,
            String::new(),
        );
        let fail = Row::judged(
            AccessTest::NoClientCertificate,
            Expectation::Admitted,
            String::new(),
        );

        assert_eq!(pass.verdict, Verdict::Pass);
        assert_eq!(fail.verdict, Verdict::Fail);
        assert_eq!(fail.observed, "admitted");
    }

    #[test]
    fn protocol_fails_on_a_failed_row_or_a_weakness_but_not_on_skipped_rows() {
        let protocol = sample();

        assert!(!protocol.passed);
        let kinds: Vec<_> = protocol.weaknesses.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [WeaknessKind::ShortRsaKey, WeaknessKind::ProtocolBelowTls12]
        );

        let clean_rows = vec![
            Row::judged(AccessTest::ProxyPort, Expectation::Possible, String::new()),
            Row::with_verdict(
                AccessTest::PortScan,
                String::new(),
                Verdict::Skipped,
                String::new(),
            ),
        ];
        let clean = Protocol::new(
            protocol.header.clone(),
            clean_rows,
            ServerCertificate::NotObtained {
                reason: String::new(),
            },
            TlsSurvey::default(),
        );
        assert!(clean.passed);
    }
}
