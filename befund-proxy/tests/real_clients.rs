//! The access tests with real clients: curl and openssl s_client, with and
//! without a client certificate.

mod common;

use std::process::Output;
use std::time::Duration;

use common::pki::SERVER_NAME;
use common::{Options, RecordingUpstream, RunningProxy, Setup};

async fn start() -> (Setup, RecordingUpstream, RunningProxy) {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    (setup, upstream, proxy)
}

async fn run(program: &str, args: &[String], stdin: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} must be installed (apt-get install curl openssl): {e}")
        });
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    // s_client exits once the server closes; keep stdin open until then.
    tokio::time::timeout(Duration::from_secs(60), async move {
        let output = child.wait_with_output().await;
        drop(input);
        output
    })
    .await
    .expect("client finished")
    .unwrap()
}

fn curl_args(setup: &Setup, port: u16, http: &str, cert: Option<(&str, &str)>) -> Vec<String> {
    let mut args = vec![
        "--silent".into(),
        "--show-error".into(),
        http.into(),
        "--max-time".into(),
        "30".into(),
        "--cacert".into(),
        setup.ca_pem.display().to_string(),
        "--resolve".into(),
        format!("{SERVER_NAME}:{port}:127.0.0.1"),
        "--write-out".into(),
        "\n%{http_code} %{http_version}".into(),
    ];
    if let Some((cert, key)) = cert {
        args.extend(["--cert".into(), cert.into(), "--key".into(), key.into()]);
    }
    args.push(format!("https://{SERVER_NAME}:{port}/befunde"));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_valid_certificate_is_admitted_over_http1_and_http2() {
    let (setup, upstream, proxy) = start().await;
    let (cert, key) = setup.write_client("valid", &setup.pki.valid);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let port = proxy.addr.port();

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = run(
            "curl",
            &curl_args(&setup, port, flag, Some((&cert, &key))),
            b"",
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout, format!("hello from upstream\n200 {version}"));
    }
    assert_eq!(upstream.recorded().len(), 2);
    assert_eq!(
        upstream.recorded()[1].single("x-client-cert-subject"),
        "CN=Dr. Erika Muster,O=Labor Test,C=DE"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_without_certificate_is_refused_in_the_handshake() {
    let (setup, upstream, proxy) = start().await;
    let out = run(
        "curl",
        &curl_args(&setup, proxy.addr.port(), "--http1.1", None),
        b"",
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "curl without a certificate must fail"
    );
    assert!(
        stderr.contains("alert") || stderr.contains("certificate required"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("hello"),
        "no response body"
    );
    assert!(upstream.recorded().is_empty());
    proxy.stop().await;
}

fn s_client_args(setup: &Setup, port: u16, cert: Option<(&str, &str)>) -> Vec<String> {
    let mut args = vec![
        "s_client".into(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-servername".into(),
        SERVER_NAME.into(),
        "-CAfile".into(),
        setup.ca_pem.display().to_string(),
        "-verify_return_error".into(),
        "-ign_eof".into(),
    ];
    if let Some((cert, key)) = cert {
        // s_client sends only the first certificate of -cert; the
        // intermediate goes in -cert_chain.
        let chain = setup.path("intermediate.pem");
        std::fs::write(&chain, &setup.pki.intermediate.cert.pem).unwrap();
        args.extend(["-cert".into(), cert.into(), "-key".into(), key.into()]);
        args.extend(["-cert_chain".into(), chain.display().to_string()]);
    }
    args
}

fn http_request(port: u16) -> Vec<u8> {
    format!("GET /befunde HTTP/1.1\r\nHost: {SERVER_NAME}:{port}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_with_valid_certificate_gets_a_response() {
    let (setup, upstream, proxy) = start().await;
    let (cert, key) = setup.write_client("valid", &setup.pki.valid);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let port = proxy.addr.port();
    let out = run(
        "openssl",
        &s_client_args(&setup, port, Some((&cert, &key))),
        &http_request(port),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    assert!(stdout.contains("HTTP/1.1 200 OK"), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello from upstream"), "{stdout}");
    assert_eq!(upstream.recorded().len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_without_certificate_gets_certificate_required_alert() {
    let (setup, upstream, proxy) = start().await;
    let port = proxy.addr.port();
    let out = run(
        "openssl",
        &s_client_args(&setup, port, None),
        &http_request(port),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("HTTP/1.1"), "{stdout}");
    assert!(stderr.contains("alert certificate required"), "{stderr}");
    assert!(upstream.recorded().is_empty());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_offering_only_tls11_or_weak_ciphers_is_refused() {
    let (setup, upstream, proxy) = start().await;
    let (cert, key) = setup.write_client("valid", &setup.pki.valid);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let port = proxy.addr.port();

    let mut tls11 = s_client_args(&setup, port, Some((&cert, &key)));
    tls11.push("-tls1_1".into());
    let mut cbc = s_client_args(&setup, port, Some((&cert, &key)));
    cbc.extend([
        "-tls1_2".into(),
        "-cipher".into(),
        "ECDHE-RSA-AES128-SHA256:AES128-SHA".into(),
    ]);
    for args in [tls11, cbc] {
        let out = run("openssl", &args, &http_request(port)).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("HTTP/1.1"), "{args:?}: {stdout}");
    }
    assert!(upstream.recorded().is_empty());
    proxy.stop().await;
}
