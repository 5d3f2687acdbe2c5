//! Probes for what rustls cannot offer (SSL 3.0, TLS 1.0/1.1, RC4, 3DES, CBC,
//! NULL and export ciphers), made with the `openssl s_client` command when it is
//! installed. Each probe is one `s_client` run with stdin closed, bounded by the
//! audit's timeout; the probe reads the negotiated protocol and cipher from its
//! output. An `openssl` built without a protocol or cipher family says so
//! instead of guessing.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::process::Command;

use super::protocol::WeaknessKind;
use super::tls_survey::{ProbeResult, ProbeTool, SurveyProbe};

/// Lowers OpenSSL's security level so that it offers what it refuses by
/// default (TLS 1.0 and 1.1, SHA-1 MACs, small keys): the survey asks what the
/// *server* accepts.
const SECLEVEL_0: &str = "@SECLEVEL=0";

/// Where and with which credentials `s_client` connects.
pub struct Endpoint<'a> {
    /// The address to connect to.
    pub address: SocketAddr,
    /// The DNS name to send as SNI, if the target is named by one.
    pub sni: Option<&'a str>,
    /// The client certificate file (PEM), so servers that require one answer.
    pub cert: &'a Path,
    /// Its private key file; only its path is passed, to `openssl`.
    pub key: &'a Path,
    /// Bound for each run.
    pub timeout: Duration,
}

/// One cipher line of `openssl ciphers -v`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CipherLine {
    name: String,
    protocol: String,
    encryption: String,
    mac: String,
}

impl CipherLine {
    /// `NAME PROTOCOL Kx=.. Au=.. Enc=.. Mac=.. [export]`
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let name = fields.next()?.to_owned();
        let protocol = fields.next()?.to_owned();
        let mut encryption = None;
        let mut mac = None;
        for field in fields {
            if let Some(value) = field.strip_prefix("Enc=") {
                encryption = Some(value.to_owned());
            } else if let Some(value) = field.strip_prefix("Mac=") {
                mac = Some(value.to_owned());
            }
        }
        Some(Self {
            name,
            protocol,
            encryption: encryption?,
            mac: mac?,
        })
    }

    fn is_export(&self) -> bool {
        self.name.starts_with("EXP")
    }
}

/// A cipher family the survey probes, and how to recognise its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Rc4,
    TripleDes,
    Cbc,
    Null,
    Export,
}

impl Family {
    const ALL: [Self; 5] = [
        Self::Rc4,
        Self::TripleDes,
        Self::Cbc,
        Self::Null,
        Self::Export,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Rc4 => "RC4",
            Self::TripleDes => "3DES",
            Self::Cbc => "CBC",
            Self::Null => "NULL",
            Self::Export => "EXPORT",
        }
    }

    fn weakness(self) -> WeaknessKind {
        match self {
            Self::Rc4 => WeaknessKind::Rc4,
            Self::TripleDes => WeaknessKind::TripleDes,
            Self::Cbc => WeaknessKind::Cbc,
            Self::Null => WeaknessKind::NullCipher,
            Self::Export => WeaknessKind::ExportCipher,
        }
    }

    fn contains(self, cipher: &CipherLine) -> bool {
        let encryption = cipher.encryption.as_str();
        match self {
            Self::Rc4 => encryption.starts_with("RC4"),
            Self::TripleDes => encryption.starts_with("3DES"),
            Self::Null => encryption == "None",
            Self::Export => cipher.is_export(),
            // Block ciphers with a separate MAC are CBC mode; AEAD suites say
            // `Mac=AEAD`. 3DES and RC4 have their own rows.
            Self::Cbc => {
                cipher.mac != "AEAD"
                    && encryption != "None"
                    && !encryption.starts_with("RC4")
                    && !encryption.starts_with("3DES")
            }
        }
    }
}

/// A legacy protocol version the survey probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Legacy {
    Ssl3,
    Tls10,
    Tls11,
}

impl Legacy {
    const ALL: [Self; 3] = [Self::Ssl3, Self::Tls10, Self::Tls11];

    fn label(self) -> &'static str {
        match self {
            Self::Ssl3 => "SSL 3.0",
            Self::Tls10 => "TLS 1.0",
            Self::Tls11 => "TLS 1.1",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Ssl3 => "-ssl3",
            Self::Tls10 => "-tls1",
            Self::Tls11 => "-tls1_1",
        }
    }
}

/// An installed `openssl` and what its `s_client` can offer.
pub struct Openssl {
    program: PathBuf,
    version: String,
    client_help: String,
    ciphers: Vec<CipherLine>,
}

impl Openssl {
    /// Finds `openssl` on `PATH` and asks it which protocols and ciphers it can
    /// offer; `None` when it is not installed or does not answer.
    pub async fn discover(timeout: Duration) -> Option<Self> {
        let program = find_on_path("openssl")?;
        let version = run(&program, ["version"], timeout).await?.stdout;
        // `s_client -help` lists the protocol options this build supports.
        let client_help = run(&program, ["s_client", "-help"], timeout).await?;
        let cipher_list = format!("ALL:COMPLEMENTOFALL:{SECLEVEL_0}");
        let ciphers = run(&program, ["ciphers", "-v", cipher_list.as_str()], timeout).await?;

        Some(Self {
            program,
            version: version.trim().to_owned(),
            client_help: client_help.stdout + &client_help.stderr,
            ciphers: ciphers
                .stdout
                .lines()
                .filter_map(CipherLine::parse)
                .filter(|c| c.protocol != "TLSv1.3")
                .collect(),
        })
    }

    /// The `openssl version` line.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// One probe per legacy protocol version and per weak cipher family.
    pub async fn survey(&self, endpoint: &Endpoint<'_>) -> Vec<SurveyProbe> {
        let mut probes = Vec::new();
        for legacy in Legacy::ALL {
            probes.push(self.probe_protocol(legacy, endpoint).await);
        }
        for family in Family::ALL {
            probes.push(self.probe_family(family, endpoint).await);
        }
        probes
    }

    async fn probe_protocol(&self, legacy: Legacy, endpoint: &Endpoint<'_>) -> SurveyProbe {
        let probe = |result, detail| SurveyProbe {
            protocol: legacy.label().to_owned(),
            cipher: "any".to_owned(),
            tool: ProbeTool::Openssl,
            result,
            detail,
            weak_if_accepted: Some(WeaknessKind::ProtocolBelowTls12),
        };
        if !self.offers_option(legacy.flag()) {
            let detail = format!("not probed (this openssl cannot offer {})", legacy.label());
            return probe(ProbeResult::NotProbed, detail);
        }

        let cipher_list = format!("ALL:COMPLEMENTOFALL:{SECLEVEL_0}");
        let (result, detail) = self
            .handshake(endpoint, &[legacy.flag(), "-cipher", &cipher_list])
            .await;
        probe(result, detail)
    }

    async fn probe_family(&self, family: Family, endpoint: &Endpoint<'_>) -> SurveyProbe {
        let probe = |result, detail| SurveyProbe {
            protocol: "TLS 1.2 and older".to_owned(),
            cipher: family.label().to_owned(),
            tool: ProbeTool::Openssl,
            result,
            detail,
            weak_if_accepted: Some(family.weakness()),
        };
        let members: Vec<&str> = self
            .ciphers
            .iter()
            .filter(|c| family.contains(c))
            .map(|c| c.name.as_str())
            .collect();
        if members.is_empty() {
            let detail = format!(
                "not probed (this openssl cannot offer {} ciphers)",
                family.label()
            );
            return probe(ProbeResult::NotProbed, detail);
        }

        let cipher_list = format!("{}:{SECLEVEL_0}", members.join(":"));
        let (result, detail) = self
            .handshake(endpoint, &["-no_tls1_3", "-cipher", &cipher_list])
            .await;
        probe(result, detail)
    }

    /// Whether `s_client` lists `option` (e.g. `-ssl3`) in its help.
    fn offers_option(&self, option: &str) -> bool {
        self.client_help
            .lines()
            .any(|line| line.split_whitespace().next() == Some(option))
    }

    async fn handshake(&self, endpoint: &Endpoint<'_>, extra: &[&str]) -> (ProbeResult, String) {
        let mut args = client_args(endpoint);
        args.extend(extra.iter().map(OsString::from));

        let Some(output) = run(&self.program, args, endpoint.timeout).await else {
            let detail = format!("no answer within {:?}", endpoint.timeout);
            return (ProbeResult::NotProbed, detail);
        };
        match negotiated(&output.stdout) {
            Some((version, cipher)) => (
                ProbeResult::Accepted,
                format!("negotiated {version} {cipher}"),
            ),
            None => (ProbeResult::Rejected, failure_reason(&output.stderr)),
        }
    }

    /// The certificate chain the server sends, fetched with `s_client -showcerts`
    /// at the lowest security level, for servers rustls cannot talk to.
    pub async fn fetch_chain(
        &self,
        endpoint: &Endpoint<'_>,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let mut args = client_args(endpoint);
        let cipher_list = format!("ALL:COMPLEMENTOFALL:{SECLEVEL_0}");
        args.extend(["-showcerts", "-cipher", cipher_list.as_str()].map(OsString::from));

        let output = run(&self.program, args, endpoint.timeout).await?;
        let chain: Vec<_> = CertificateDer::pem_slice_iter(output.stdout.as_bytes())
            .filter_map(Result::ok)
            .collect();
        (!chain.is_empty()).then_some(chain)
    }
}

fn client_args(endpoint: &Endpoint<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "s_client".into(),
        "-connect".into(),
        endpoint.address.to_string().into(),
        "-cert".into(),
        endpoint.cert.into(),
        "-key".into(),
        endpoint.key.into(),
    ];
    if let Some(sni) = endpoint.sni {
        args.extend(["-servername".into(), sni.into()]);
    }
    args
}

/// What `s_client` printed.
struct Output {
    stdout: String,
    stderr: String,
}

async fn run<I, S>(program: &Path, args: I, timeout: Duration) -> Option<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, child).await.ok()?.ok()?;

    Some(Output {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The protocol and cipher of a completed handshake, from `s_client`'s output:
/// the cipher from `New, ..., Cipher is ECDHE-RSA-AES256-SHA` (`(NONE)` when
/// the handshake failed), the protocol from the session's `Protocol  : TLSv1.1`
/// line (the `New, ...` line names the cipher's minimum version instead).
fn negotiated(stdout: &str) -> Option<(String, String)> {
    let cipher = stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("New, ")?;
        let (_, cipher) = rest.split_once(", Cipher is ")?;
        Some(cipher.trim())
    })?;
    if cipher == "(NONE)" {
        return None;
    }
    let protocol = stdout
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Protocol")?
                .trim()
                .strip_prefix(':')
        })
        .map_or("unknown protocol", str::trim);
    Some((protocol.to_owned(), cipher.to_owned()))
}

/// The reason from OpenSSL's first error line
/// (`PID:error:CODE:LIBRARY:FUNCTION:REASON:FILE:LINE:`).
fn failure_reason(stderr: &str) -> String {
    let Some(line) = stderr.lines().find(|l| l.contains(":error:")) else {
        return "handshake failed".to_owned();
    };
    match line.split(':').nth(5) {
        Some(reason) if !reason.is_empty() => format!("refused: {reason}"),
        _ => format!("refused: {}", line.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(line: &str) -> CipherLine {
        CipherLine::parse(line).unwrap()
    }

    #[test]
    fn cipher_families_follow_encryption_and_mac() {
        let cbc = cipher("ECDHE-RSA-AES256-SHA   TLSv1 Kx=ECDH Au=RSA Enc=AES(256) Mac=SHA1");
        let gcm =
            cipher("ECDHE-RSA-AES256-GCM-SHA384 TLSv1.2 Kx=ECDH Au=RSA Enc=AESGCM(256) Mac=AEAD");
        let null = cipher("NULL-SHA256 TLSv1.2 Kx=RSA Au=RSA Enc=None Mac=SHA256");
        let des = cipher("DES-CBC3-SHA SSLv3 Kx=RSA Au=RSA Enc=3DES(168) Mac=SHA1");
        let rc4 = cipher("RC4-SHA SSLv3 Kx=RSA Au=RSA Enc=RC4(128) Mac=SHA1");
        let export = cipher("EXP-RC4-MD5 SSLv3 Kx=RSA(512) Au=RSA Enc=RC4(40) Mac=MD5 export");

        assert!(Family::Cbc.contains(&cbc));
        assert!(!Family::Cbc.contains(&gcm));
        assert!(!Family::Cbc.contains(&null) && Family::Null.contains(&null));
        assert!(!Family::Cbc.contains(&des) && Family::TripleDes.contains(&des));
        assert!(!Family::Cbc.contains(&rc4) && Family::Rc4.contains(&rc4));
        assert!(Family::Export.contains(&export));
        assert!(Family::ALL.iter().all(|f| !f.contains(&gcm)));
    }

    #[test]
    fn negotiated_reads_session_protocol_not_the_cipher_minimum() {
        let stdout = "---\nNew, TLSv1.0, Cipher is ECDHE-RSA-AES256-SHA\n\
                      SSL-Session:\n    Protocol  : TLSv1.1\n    Cipher    : ECDHE-RSA-AES256-SHA\n";
        let failed = "New, (NONE), Cipher is (NONE)\nSSL-Session:\n    Protocol  : TLSv1.2\n";

        assert_eq!(
            negotiated(stdout),
            Some(("TLSv1.1".to_owned(), "ECDHE-RSA-AES256-SHA".to_owned()))
        );
        assert_eq!(negotiated(failed), None);
        assert_eq!(negotiated(""), None);
    }

    #[test]
    fn failure_reason_takes_openssl_reason_field() {
        let stderr = "40F7:error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1605:SSL alert number 40\n";

        assert_eq!(
            failure_reason(stderr),
            "refused: sslv3 alert handshake failure"
        );
    }
}
