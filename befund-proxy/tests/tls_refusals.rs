//! The access tests of the lab's security concept, at the TLS layer: every
//! kind of bad client certificate is refused during the handshake, with the
//! proper alert, before any HTTP reaches the Befundserver; a valid
//! certificate with its key is admitted.

mod common;

use std::time::Duration;

use befund_proxy::tls::RefusalReason;
use rustls::AlertDescription;

use common::{
    ClientAuth, LogCapture, Options, RecordingUpstream, RunningProxy, Setup, client_config,
    client_config_for, exchange, get, status_of,
};

struct Case<'a> {
    name: &'a str,
    auth: ClientAuth<'a>,
    reason: RefusalReason,
    alert: AlertDescription,
}

async fn assert_refused(setup: &Setup, proxy: &RunningProxy, logs: &LogCapture, case: Case<'_>) {
    let before = proxy.metrics.refusals.get(case.reason);
    let config = client_config(&setup.pki, case.auth, &[b"http/1.1"]);
    let outcome = exchange(config, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(
        outcome.alert(),
        Some(case.alert),
        "{}: {outcome:?}",
        case.name
    );

    // The refusal is counted and logged once, with its reason, once the
    // server side of the handshake has finished (on a worker thread: the
    // line may trail the counter).
    let reason = format!("reason=\"{}\"", case.reason.as_str());
    for _ in 0..100 {
        if proxy.metrics.refusals.get(case.reason) > before
            && logs.lines_with(&["TLS handshake refused", &reason]).len() as u64 > before
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        proxy.metrics.refusals.get(case.reason),
        before + 1,
        "{}",
        case.name
    );
    let lines = logs.lines_with(&["TLS handshake refused", &reason]);
    assert_eq!(
        lines.len() as u64,
        before + 1,
        "{}: {}",
        case.name,
        logs.text()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN") && l.contains("peer=127.0.0.1:")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn every_bad_client_certificate_is_refused_in_the_handshake_and_a_valid_one_admitted() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let pki = &setup.pki;

    let cases = [
        Case {
            name: "no certificate",
            auth: ClientAuth::None,
            reason: RefusalReason::NoCertificate,
            alert: AlertDescription::CertificateRequired,
        },
        Case {
            name: "self-issued, same subject",
            auth: ClientAuth::Cert(&pki.self_issued),
            reason: RefusalReason::UnknownIssuer,
            alert: AlertDescription::UnknownCA,
        },
        Case {
            name: "forged CA with the lab CA's name",
            auth: ClientAuth::Cert(&pki.forged_issuer),
            reason: RefusalReason::BadSignature,
            alert: AlertDescription::DecryptError,
        },
        Case {
            name: "valid certificate without its private key",
            auth: ClientAuth::WrongKey(&pki.valid, &pki.other_ca),
            reason: RefusalReason::BadSignature,
            alert: AlertDescription::DecryptError,
        },
        Case {
            name: "expired",
            auth: ClientAuth::Cert(&pki.expired),
            reason: RefusalReason::Expired,
            alert: AlertDescription::CertificateExpired,
        },
        Case {
            name: "not yet valid",
            auth: ClientAuth::Cert(&pki.not_yet_valid),
            reason: RefusalReason::NotYetValid,
            alert: AlertDescription::CertificateExpired,
        },
        Case {
            name: "another CA",
            auth: ClientAuth::Cert(&pki.other_ca),
            reason: RefusalReason::UnknownIssuer,
            alert: AlertDescription::UnknownCA,
        },
        Case {
            name: "serverAuth EKU only",
            auth: ClientAuth::Cert(&pki.server_auth_only),
            reason: RefusalReason::WrongUsage,
            alert: AlertDescription::UnsupportedCertificate,
        },
        Case {
            name: "no EKU extension",
            auth: ClientAuth::Cert(&pki.no_eku),
            reason: RefusalReason::WrongUsage,
            alert: AlertDescription::UnsupportedCertificate,
        },
        Case {
            name: "revoked",
            auth: ClientAuth::Cert(&pki.revoked),
            reason: RefusalReason::Revoked,
            alert: AlertDescription::CertificateRevoked,
        },
    ];
    for case in cases {
        assert_refused(&setup, &proxy, &logs, case).await;
    }
    assert!(
        upstream.recorded().is_empty(),
        "no refused client reached the Befundserver"
    );

    let config = client_config(pki, ClientAuth::Cert(&pki.valid), &[b"http/1.1"]);
    let response = exchange(config, proxy.addr, &get("/befunde", proxy.addr.port())).await;
    assert_eq!(status_of(response.response()), 200);
    assert!(response.response().ends_with("hello from upstream"));
    assert_eq!(upstream.recorded().len(), 1);
    assert_eq!(proxy.metrics.handshakes_completed.get(), 1);
    assert!(
        !logs.text().contains("BEGIN"),
        "no key or certificate material in the log"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn client_that_never_finishes_the_handshake_is_cut_off_as_timeout() {
    let logs = LogCapture::start();
    let setup = Setup::new(&Options {
        extra_limits: "handshake_timeout = \"1s\"".into(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await
    .expect("the proxy closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    for _ in 0..100 {
        if proxy.metrics.refusals.get(RefusalReason::Timeout) == 1
            && !logs
                .lines_with(&["TLS handshake refused", "reason=\"timeout\""])
                .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.metrics.refusals.get(RefusalReason::Timeout), 1);
    assert_eq!(
        logs.lines_with(&["TLS handshake refused", "reason=\"timeout\"", "INFO"])
            .len(),
        1,
        "{}",
        logs.text()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_https_port_is_a_protocol_refusal() {
    let _logs = LogCapture::start();
    let setup = Setup::new(&Options::default());
    let proxy = RunningProxy::start(&setup.config()).await;

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: befund.test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut response),
    )
    .await
    .expect("the proxy closes");
    assert!(
        !String::from_utf8_lossy(&response).contains("HTTP/1.1"),
        "no HTTP answer on the TLS port"
    );
    for _ in 0..100 {
        if proxy.metrics.refusals.get(RefusalReason::Protocol) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.metrics.refusals.get(RefusalReason::Protocol), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn tls12_clients_are_held_to_the_same_policy() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let pki = &setup.pki;
    let tls12 = &[&rustls::version::TLS12];

    let none = client_config_for(pki, ClientAuth::None, &[b"http/1.1"], tls12);
    let outcome = exchange(none, proxy.addr, &get("/", proxy.addr.port())).await;
    assert!(
        matches!(outcome, common::Exchange::TlsFailed(..)),
        "{outcome:?}"
    );

    let wrong_key = client_config_for(
        pki,
        ClientAuth::WrongKey(&pki.valid, &pki.other_ca),
        &[b"http/1.1"],
        tls12,
    );
    let outcome = exchange(wrong_key, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(
        outcome.alert(),
        Some(AlertDescription::DecryptError),
        "{outcome:?}"
    );

    let valid = client_config_for(pki, ClientAuth::Cert(&pki.valid), &[b"http/1.1"], tls12);
    let stream = common::connect(valid.clone(), proxy.addr).await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    drop(stream);
    let response = exchange(valid, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(status_of(response.response()), 200);
    assert_eq!(upstream.recorded().len(), 1);
    let metrics = proxy.metrics.clone();
    assert!(common::eventually(|| metrics.refusals.get(RefusalReason::NoCertificate) == 1).await);
    assert!(common::eventually(|| metrics.refusals.get(RefusalReason::BadSignature) == 1).await);
    proxy.stop().await;
}
