//! The identity contract as the Befundserver sees it: spoofed identity
//! headers never arrive, the proxy's own arrive once each with the values
//! taken from the verified certificate, escaped onto one line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{DistinguishedName, DnType};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use common::pki::{Issued, Pki, SERVER_NAME, client_params};
use common::{
    ClientAuth, Options, RecordingUpstream, RunningProxy, SECRET, Setup, client_config, exchange,
    status_of, wait_for_lines,
};

/// Every header the proxy sets, in the contract's spelling (lower case).
const PROXY_HEADERS: [&str; 11] = [
    "client-cert",
    "client-cert-chain",
    "x-client-cert-subject",
    "x-client-cert-issuer",
    "x-client-cert-serial",
    "x-client-cert-fingerprint",
    "x-client-cert-not-after",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-befund-proxy-auth",
];

fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn looks_like_identity(name: &str) -> bool {
    let n = normalized(name);
    PROXY_HEADERS.contains(&n.as_str())
        || n == "forwarded"
        || n == "x-forwarded-client-cert"
        || n.starts_with("x-client-")
        || n.starts_with("x-ssl-")
        || n.starts_with("x-forwarded-")
        || n == "x-remote-user"
}

fn rfc3339(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn start(options: Options) -> (Setup, RecordingUpstream, RunningProxy) {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        strip_headers: vec!["X-Remote-User".into()],
        ..options
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    (setup, upstream, proxy)
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_befundserver() {
    let (setup, upstream, proxy) = start(Options::default()).await;
    let port = proxy.addr.port();
    let spoofed = [
        "Client-Cert: :AAAA:",
        "client-cert: :BBBB:",
        "CLIENT_CERT: :CCCC:",
        "Client-Cert-Chain: :AAAA:",
        "X-Forwarded-Client-Cert: Hash=abc;Subject=\"CN=admin\"",
        "X-Client-Cert-Subject: CN=admin",
        "x-client-cert-subject: CN=root",
        "X_Client_Cert_Subject: CN=underscore",
        "X-CLIENT-CERT-FINGERPRINT: 00",
        "x_client_cert_serial: 01",
        "X-Client-Cert-Issuer: CN=Evil CA",
        "X-Client-Cert-Not-After: 2099-01-01T00:00:00Z",
        "X-Client-Verify: SUCCESS",
        "X-SSL-Client-DN: CN=admin",
        "X_SSL_Client_Verify: SUCCESS",
        "x-ssl-cert: -----BEGIN",
        "Forwarded: for=203.0.113.9;proto=https",
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-For: 198.51.100.7",
        "X_Forwarded_For: 192.0.2.1",
        "X-Forwarded-Host: evil.example",
        "X-Forwarded-Proto: http",
        "X-Forwarded-Port: 80",
        "X-Befund-Proxy-Auth: guessed-secret",
        "x_befund_proxy_auth: guessed-secret",
        "X-Remote-User: admin",
        "X_Remote_User: admin",
    ];
    let request = format!(
        "GET /befunde/42?patient=7 HTTP/1.1\r\nHost: {SERVER_NAME}:{port}\r\n{}\r\nX-Request-Id: abc-123\r\nConnection: close\r\n\r\n",
        spoofed.join("\r\n")
    );
    let config = client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    );
    let response = exchange(config, proxy.addr, &request).await;
    assert_eq!(status_of(response.response()), 200, "{response:?}");

    let recorded = upstream.recorded();
    assert_eq!(recorded.len(), 1);
    let seen = &recorded[0];
    assert_eq!(seen.uri, "/befunde/42?patient=7");

    let mut identity_names: Vec<String> = seen
        .headers
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| looks_like_identity(n))
        .collect();
    identity_names.sort();
    let mut expected: Vec<String> = PROXY_HEADERS.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(
        identity_names, expected,
        "exactly the proxy's identity headers arrive, once each"
    );

    let valid = &setup.pki.valid;
    let intermediate = &setup.pki.intermediate.cert;
    let (_, leaf) = X509Certificate::from_der(valid.der.as_ref()).unwrap();
    let fingerprint: String = Sha256::digest(valid.der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        seen.single("client-cert"),
        format!(":{}:", BASE64.encode(valid.der.as_ref()))
    );
    assert_eq!(
        seen.single("client-cert-chain"),
        format!(":{}:", BASE64.encode(intermediate.der.as_ref()))
    );
    assert_eq!(
        seen.single("x-client-cert-subject"),
        "CN=Dr. Erika Muster,O=Labor Test,C=DE"
    );
    assert_eq!(
        seen.single("x-client-cert-issuer"),
        "CN=Befund Test Client CA,O=Labor Test,C=DE"
    );
    assert_eq!(seen.single("x-client-cert-serial"), "5f3a09c2e1d4b7a8");
    assert_eq!(seen.single("x-client-cert-fingerprint"), fingerprint);
    assert_eq!(
        seen.single("x-client-cert-not-after"),
        rfc3339(leaf.validity().not_after.timestamp())
    );
    assert_eq!(seen.single("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.single("x-forwarded-proto"), "https");
    assert_eq!(
        seen.single("x-forwarded-host"),
        format!("{SERVER_NAME}:{port}")
    );
    assert_eq!(seen.single("x-befund-proxy-auth"), SECRET);
    assert_eq!(
        seen.single("x-request-id"),
        "abc-123",
        "ordinary headers pass"
    );
    assert_eq!(
        seen.single("host"),
        upstream.addr.to_string(),
        "Host names the Befundserver"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn subject_with_specials_non_ascii_and_newline_arrives_escaped_on_one_line() {
    let pki = Pki::new();
    let mut params = client_params("unused", 0x00ff_0001);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "DE");
    dn.push(DnType::OrganizationName, "Praxis <Nord>; Süd");
    dn.push(
        DnType::CommonName,
        "Dr. \"Max\" Müller, Jr.+Partner\nZeile2\\",
    );
    params.distinguished_name = dn;
    let odd: Issued = pki.intermediate.issue(params);

    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::with_pki(
        pki,
        &Options {
            upstream: upstream.url(),
            ..Options::default()
        },
    );
    let proxy = RunningProxy::start(&setup.config()).await;

    let config = client_config(&setup.pki, ClientAuth::Cert(&odd), &[b"http/1.1"]);
    let request = format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
    let response = exchange(config, proxy.addr, &request).await;
    assert_eq!(status_of(response.response()), 200);

    let seen = &upstream.recorded()[0];
    let subject = seen.single("x-client-cert-subject");
    assert_eq!(
        subject,
        r#"CN=Dr. \"Max\" M\c3\bcller\, Jr.\+Partner\0aZeile2\5c,O=Praxis \<Nord\>\; S\c3\bcd,C=DE"#
    );
    assert!(subject.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    assert_eq!(
        seen.single("x-client-cert-serial"),
        "ff0001",
        "leading zero bytes and sign byte dropped"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn each_request_writes_one_audit_line_to_a_0640_file() {
    let (setup, _upstream, proxy) = start(Options::default()).await;
    let port = proxy.addr.port();
    let config = client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    );
    let request = format!(
        "GET /befunde/42?patient=7 HTTP/1.1\r\nHost: {SERVER_NAME}:{port}\r\nConnection: close\r\n\r\n"
    );
    let response = exchange(config.clone(), proxy.addr, &request).await;
    assert_eq!(status_of(response.response()), 200);
    let request = "GET /x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n";
    let response = exchange(config, proxy.addr, request).await;
    assert_eq!(status_of(response.response()), 421);

    let path = setup.path("audit.jsonl");
    let lines = wait_for_lines(&path, 2).await;
    assert_eq!(lines.len(), 2);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(first["subject"], "CN=Dr. Erika Muster,O=Labor Test,C=DE");
    assert_eq!(first["serial"], "5f3a09c2e1d4b7a8");
    assert_eq!(first["fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(first["method"], "GET");
    assert_eq!(
        first["path"], "/befunde/42",
        "the query string stays out of the audit log"
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 19);
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert!(first["error_side"].is_null());

    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 421);
    assert!(second["upstream_ms"].is_null());
    assert_eq!(second["error_side"], "client");
    proxy.stop().await;
}
