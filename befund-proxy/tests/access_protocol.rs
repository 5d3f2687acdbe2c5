//! The access protocol against real mTLS servers on loopback: `openssl
//! s_server` configured as a strict proxy, as a proxy that forgot client
//! authentication, and as the lab's old weak setup (TLS 1.0, CBC, SHA-1 and
//! RSA-1024); and a rustls + hyper server that requires client certificates
//! as the proxy does. Needs the `openssl` command (Debian package `openssl`).

use std::convert::Infallible;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use befund_proxy::access_protocol::protocol::WeaknessKind;
use befund_proxy::access_protocol::server_cert::{KeyType, ServerCertificate};
use befund_proxy::access_protocol::tls_survey::{ProbeResult, ProbeTool};
use befund_proxy::access_protocol::{self, AccessTest, AuditPlan, Protocol, Verdict};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::Value;
use tempfile::TempDir;
use tokio_rustls::TlsAcceptor;

const SERVER_NAME: &str = "proxy.befund.test";

/// Generous bound for each probe; the tests never assert on timing.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The lab's PKI in a temporary directory: CA, proxy server certificate (RSA
/// 2048), and a physician's client certificate (ECDSA P-256).
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();

        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Befund Test Lab CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut server_params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut client_params = CertificateParams::default();
        client_params
            .distinguished_name
            .push(DnType::CountryName, "DE");
        client_params
            .distinguished_name
            .push(DnType::OrganizationName, "Praxis Mustermann");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "Dr. Erika Mustermann");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &issuer).unwrap();

        let pki = Self { dir };
        fs::write(pki.path("ca.pem"), ca.pem()).unwrap();
        fs::write(pki.path("server.pem"), server.pem()).unwrap();
        write_private(&pki.path("server.key"), &server_key.serialize_pem());
        fs::write(pki.path("client.pem"), client.pem()).unwrap();
        write_private(&pki.path("client.key"), &client_key.serialize_pem());
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A self-signed RSA-1024 certificate with a SHA-1 signature, made with
    /// openssl as the lab's old Easy-RSA setup made them.
    fn weak_server_certificate(&self) -> (PathBuf, PathBuf) {
        let (cert, key) = (self.path("weak.pem"), self.path("weak.key"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:1024", "-sha1", "-nodes", "-days", "30",
            ])
            .args(["-subj", &format!("/CN={SERVER_NAME}")])
            .args(["-addext", &format!("subjectAltName=DNS:{SERVER_NAME}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the openssl command is needed: apt-get install openssl");
        assert!(
            status.success(),
            "openssl req failed to make the weak certificate"
        );
        (cert, key)
    }

    fn plan(&self, server: &OpensslServer) -> AuditPlan {
        self.plan_for(server.address)
    }

    fn plan_for(&self, address: SocketAddr) -> AuditPlan {
        AuditPlan {
            target: format!("https://{SERVER_NAME}:{}", address.port())
                .parse()
                .unwrap(),
            connect: Some(address),
            ca: self.path("ca.pem"),
            cert: self.path("client.pem"),
            key: self.path("client.key"),
            befundservers: vec![closed_loopback_port()],
            path: "/healthz".to_owned(),
            scan_ports: None,
            timeout: TIMEOUT,
            scan_budget: Duration::from_secs(60),
        }
    }

    /// `befundctl audit` arguments for `server`, writing JSON to `json`.
    fn cli_args(&self, server: &OpensslServer, json: &Path) -> Vec<String> {
        let path = |name: &str| self.path(name).display().to_string();
        vec![
            "audit".to_owned(),
            format!("--target=https://{SERVER_NAME}:{}", server.address.port()),
            format!("--connect={}", server.address),
            format!("--ca={}", path("ca.pem")),
            format!("--cert={}", path("client.pem")),
            format!("--key={}", path("client.key")),
            format!("--befundserver={}", closed_loopback_port()),
            format!("--json={}", json.display()),
            "--timeout=5s".to_owned(),
        ]
    }
}

fn write_private(path: &Path, pem: &str) {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(pem.as_bytes()).unwrap();
}

/// A loopback port that was free a moment ago: nothing listens there.
fn closed_loopback_port() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An `openssl s_server -www` on a free loopback port, killed on drop.
struct OpensslServer {
    child: Child,
    address: SocketAddr,
}

impl OpensslServer {
    /// Starts `s_server` with `cert`/`key` and the extra options.
    fn start(pki: &Pki, cert: &Path, key: &Path, options: &[&str]) -> Self {
        let log_path = pki.path(&format!(
            "s_server-{}.log",
            std::process::id() ^ rand_suffix()
        ));
        let log = fs::File::create(&log_path).unwrap();
        let child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www"])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(options)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the openssl command is needed: apt-get install openssl");
        let mut server = Self {
            child,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        };
        server.address = server.wait_for_accept(&log_path);
        server
    }

    /// A strict proxy: client certificate from the lab CA required, TLS 1.2
    /// only with ECDHE and AEAD suites (and TLS 1.3).
    fn strict(pki: &Pki) -> Self {
        let ca = pki.path("ca.pem").display().to_string();
        let options = ["-Verify", "1", "-verify_return_error", "-CAfile", &ca];
        let options = [&options[..], &["-cipher", "ECDHE+AESGCM:ECDHE+CHACHA20"]].concat();
        Self::start(
            pki,
            &pki.path("server.pem"),
            &pki.path("server.key"),
            &options,
        )
    }

    /// Reads the log until s_server names the port it listens on.
    fn wait_for_accept(&mut self, log_path: &Path) -> SocketAddr {
        let started = Instant::now();
        loop {
            let log = fs::read_to_string(log_path).unwrap_or_default();
            if let Some(address) = log.lines().find_map(|l| l.strip_prefix("ACCEPT ")) {
                return address.trim().parse().unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("openssl s_server exited with {status}:\n{log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "openssl s_server did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// A TLS server the way the proxy is built (rustls requiring a client
/// certificate from the lab CA, hyper answering HTTP): every request gets
/// `204 No Content`. It runs on the caller's tokio runtime.
async fn start_rustls_server(pki: &Pki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_request| async {
                    let mut response = Response::new(String::new());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    address
}

fn audit(plan: &AuditPlan) -> Protocol {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(access_protocol::run(plan)).unwrap()
}

fn row(protocol: &Protocol, number: u8) -> &access_protocol::Row {
    protocol.rows.iter().find(|r| r.number == number).unwrap()
}

fn befundctl(args: &[String], path_env: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_befundctl"));
    command.args(args);
    if let Some(path) = path_env {
        command.env("PATH", path);
    }
    command.output().unwrap()
}

fn weakness_kinds(protocol: &Protocol) -> Vec<WeaknessKind> {
    protocol.weaknesses.iter().map(|w| w.kind).collect()
}

#[test]
fn strict_mtls_server_refuses_impostors_and_admits_the_valid_certificate() {
    let pki = Pki::new();
    let server = OpensslServer::strict(&pki);
    let mut plan = pki.plan(&server);
    plan.scan_ports = Some(
        format!(
            "{},{}",
            server.address.port(),
            closed_loopback_port().port()
        )
        .parse()
        .unwrap(),
    );

    let protocol = audit(&plan);

    for number in 1..=3 {
        let row = row(&protocol, number);
        assert_eq!(
            (row.observed.as_str(), row.verdict),
            ("refused", Verdict::Pass),
            "row {number}: {row:?}"
        );
    }
    let admitted = row(&protocol, 4);
    assert_eq!(
        (admitted.observed.as_str(), admitted.verdict),
        ("admitted", Verdict::Pass),
        "{admitted:?}"
    );
    assert!(
        admitted.detail.starts_with("HTTP 200 for GET /healthz"),
        "{admitted:?}"
    );
    for number in 5..=7 {
        assert_eq!(
            row(&protocol, number).verdict,
            Verdict::Pass,
            "{:?}",
            row(&protocol, number)
        );
    }

    let ServerCertificate::Obtained(certificate) = &protocol.server_certificate else {
        panic!("no server certificate: {:?}", protocol.server_certificate);
    };
    assert_eq!(
        (certificate.key.key_type, certificate.key.bits),
        (KeyType::Rsa, 2048)
    );
    assert_eq!(certificate.signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(
        certificate.subject_alt_names,
        [format!("DNS:{SERVER_NAME}")]
    );

    let accepted: Vec<_> = protocol
        .tls_survey
        .probes
        .iter()
        .filter(|p| p.result == ProbeResult::Accepted)
        .map(|p| p.cipher.as_str())
        .collect();
    assert!(
        accepted.contains(&"TLS13_AES_256_GCM_SHA384"),
        "{accepted:?}"
    );
    assert!(
        accepted.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        "{accepted:?}"
    );
    assert!(
        !accepted.contains(&"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{accepted:?}"
    );
    let legacy_rejected = protocol
        .tls_survey
        .probes
        .iter()
        .filter(|p| {
            p.tool == ProbeTool::Openssl && ["TLS 1.0", "TLS 1.1"].contains(&p.protocol.as_str())
        })
        .all(|p| p.result == ProbeResult::Rejected);
    assert!(legacy_rejected, "{:?}", protocol.tls_survey);

    assert_eq!(weakness_kinds(&protocol), []);
    assert!(protocol.passed);
}

#[tokio::test]
async fn rustls_server_requiring_client_certificates_refuses_impostors_and_answers_the_valid_one() {
    let pki = Pki::new();
    let address = start_rustls_server(&pki).await;
    let mut plan = pki.plan_for(address);
    plan.path = "/befunde".to_owned();

    let protocol = access_protocol::run(&plan).await.unwrap();

    for number in 1..=3 {
        let row = row(&protocol, number);
        assert_eq!(
            (row.observed.as_str(), row.verdict),
            ("refused", Verdict::Pass),
            "row {number}: {row:?}"
        );
    }
    let admitted = row(&protocol, 4);
    assert_eq!(admitted.verdict, Verdict::Pass, "{admitted:?}");
    assert!(
        admitted
            .detail
            .starts_with("HTTP 204 for GET /befunde (TLS 1.3, "),
        "{admitted:?}"
    );
}

#[test]
fn server_without_client_authentication_fails_rows_one_to_three_with_exit_code_1() {
    let pki = Pki::new();
    let server = OpensslServer::start(
        &pki,
        &pki.path("server.pem"),
        &pki.path("server.key"),
        &["-cipher", "ECDHE+AESGCM"],
    );
    let json_path = pki.path("protocol.json");

    let output = befundctl(&pki.cli_args(&server, &json_path), None);

    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let protocol: Value = serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    let rows = protocol["rows"].as_array().unwrap();
    for row in &rows[..3] {
        assert_eq!(
            (&row["observed"], &row["verdict"]),
            (&"admitted".into(), &"fail".into()),
            "{row}"
        );
    }
    assert_eq!(rows[3]["verdict"], "pass");
    assert_eq!(protocol["passed"], false);
}

#[test]
fn strict_server_passes_on_the_command_line_with_exit_code_0_and_both_files() {
    let pki = Pki::new();
    let server = OpensslServer::strict(&pki);
    let (json_path, markdown_path) = (pki.path("protocol.json"), pki.path("protocol.md"));
    let mut args = pki.cli_args(&server, &json_path);
    args.push(format!("--markdown={}", markdown_path.display()));

    let output = befundctl(&args, None);

    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| result | **PASS** |"), "{stdout}");
    assert!(stdout.contains(
        "| 4 | valid certificate with its private key | admitted | admitted | PASS | HTTP 200"
    ));
    assert_eq!(fs::read_to_string(&markdown_path).unwrap(), stdout);
    let protocol: Value = serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(protocol["passed"], true);
    assert!(!stdout.contains("PRIVATE KEY"));
}

#[test]
fn legacy_server_with_tls10_cbc_and_sha1_rsa1024_certificate_is_flagged() {
    let pki = Pki::new();
    let (cert, key) = pki.weak_server_certificate();
    let ca = pki.path("ca.pem").display().to_string();
    let options = [
        "-tls1",
        "-cipher",
        "ALL:@SECLEVEL=0",
        "-Verify",
        "1",
        "-verify_return_error",
        "-CAfile",
        &ca,
    ];
    let server = OpensslServer::start(&pki, &cert, &key, &options);

    let protocol = audit(&pki.plan(&server));

    let kinds = weakness_kinds(&protocol);
    for expected in [
        WeaknessKind::ProtocolBelowTls12,
        WeaknessKind::Cbc,
        WeaknessKind::WeakSignatureHash,
        WeaknessKind::ShortRsaKey,
    ] {
        assert!(kinds.contains(&expected), "{expected:?} not in {kinds:?}");
    }
    let ServerCertificate::Obtained(certificate) = &protocol.server_certificate else {
        panic!("no server certificate: {:?}", protocol.server_certificate);
    };
    assert_eq!(certificate.obtained_via, "openssl s_client");
    let tls10 = protocol
        .tls_survey
        .probes
        .iter()
        .find(|p| p.protocol == "TLS 1.0")
        .unwrap();
    assert_eq!(tls10.result, ProbeResult::Accepted);
    assert!(tls10.detail.starts_with("negotiated TLSv1 "), "{tls10:?}");
    assert_eq!(certificate.signature_algorithm, "sha1WithRSAEncryption");
    assert!(!protocol.passed);
}

#[test]
fn second_open_port_on_the_target_host_fails_the_port_scan() {
    let pki = Pki::new();
    let server = OpensslServer::strict(&pki);
    let stray = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let stray_port = stray.local_addr().unwrap().port();
    let mut plan = pki.plan(&server);
    plan.scan_ports = Some(
        format!("{},{stray_port}", server.address.port())
            .parse()
            .unwrap(),
    );

    let protocol = audit(&plan);

    let scan = row(&protocol, 7);
    assert_eq!(scan.test, AccessTest::PortScan);
    assert_eq!(scan.verdict, Verdict::Fail);
    assert_eq!(scan.observed, format!("other ports open: {stray_port}"));
    assert!(!protocol.passed);
}

#[test]
fn reachable_befundserver_address_fails_row_five() {
    let pki = Pki::new();
    let server = OpensslServer::strict(&pki);
    let befundserver = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut plan = pki.plan(&server);
    plan.befundservers = vec![befundserver.local_addr().unwrap(), closed_loopback_port()];

    let protocol = audit(&plan);

    let direct: Vec<_> = protocol.rows.iter().filter(|r| r.number == 5).collect();
    assert_eq!(direct.len(), 2);
    assert_eq!(
        (direct[0].observed.as_str(), direct[0].verdict),
        ("possible", Verdict::Fail)
    );
    assert_eq!(
        (direct[1].observed.as_str(), direct[1].verdict),
        ("impossible", Verdict::Pass)
    );
    assert!(!protocol.passed);
}

#[test]
fn without_openssl_the_legacy_probes_say_not_probed() {
    let pki = Pki::new();
    let server = OpensslServer::strict(&pki);
    let json_path = pki.path("protocol.json");
    let empty_path = pki.path("empty-bin");
    fs::create_dir(&empty_path).unwrap();

    let output = befundctl(&pki.cli_args(&server, &json_path), Some(&empty_path));

    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let protocol: Value = serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(protocol["tls_survey"]["openssl"], Value::Null);
    let legacy: Vec<_> = protocol["tls_survey"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["tool"] == "openssl")
        .collect();
    assert_eq!(legacy.len(), 8);
    assert!(legacy.iter().all(|p| p["result"] == "not_probed" && p["detail"] == "not probed (openssl not found)"));
}

#[test]
fn missing_client_certificate_file_is_a_usage_error_with_exit_code_2() {
    let pki = Pki::new();
    let args: Vec<String> = [
        "audit",
        "--target=https://proxy.befund.test",
        "--connect=127.0.0.1:9",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--ca={}", pki.path("ca.pem").display()),
        format!("--cert={}", pki.path("missing.pem").display()),
        format!("--key={}", pki.path("client.key").display()),
    ])
    .collect();

    let output = befundctl(&args, None);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("befundctl audit: cannot read --cert "),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
