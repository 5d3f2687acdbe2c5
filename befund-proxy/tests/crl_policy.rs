//! The CRL policy: an expired CRL refuses its CA's clients by default and
//! says so loudly; `crl_expired = "warn"` keeps them in with a warning; a CRL
//! close to its nextUpdate is warned about ahead of time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use befund_proxy::tls::{RefusalReason, TlsState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::pki::SERVER_NAME;
use common::{
    ClientAuth, LogCapture, Options, RecordingUpstream, RunningProxy, Setup, client_config,
    connect, eventually, exchange, get, status_of,
};

async fn wait_for_refusal(proxy: &RunningProxy, reason: RefusalReason) {
    for _ in 0..100 {
        if proxy.metrics.refusals.get(reason) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no refusal with reason {reason}");
}

#[tokio::test]
async fn expired_crl_refuses_clients_of_its_ca_and_logs_an_error_naming_file_and_date() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        crl_days_left: Some(-1),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;

    let crl_file = setup.path("client-ca.crl").display().to_string();
    let startup = logs.lines_with(&["ERROR", "CRL expired: refusing", &crl_file, "next_update="]);
    assert_eq!(startup.len(), 1, "{}", logs.text());

    let config = client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    );
    let outcome = exchange(config, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(
        outcome.alert(),
        Some(rustls::AlertDescription::UnknownCA),
        "a valid client of that CA is refused: {outcome:?}"
    );
    wait_for_refusal(&proxy, RefusalReason::CrlExpired).await;
    // Logged on a worker thread: the lines may trail the counter.
    assert!(
        eventually(|| {
            !logs
                .lines_with(&["ERROR", "client refused: CRL expired", &crl_file])
                .is_empty()
                && !logs
                    .lines_with(&["TLS handshake refused", "reason=\"crl_expired\""])
                    .is_empty()
        })
        .await
    );
    assert!(upstream.recorded().is_empty());
    assert_eq!(
        logs.lines_with(&["TLS handshake refused", "reason=\"crl_expired\""])
            .len(),
        1
    );
    assert!(
        !logs
            .lines_with(&["ERROR", "client refused: CRL expired", &crl_file])
            .is_empty(),
        "{}",
        logs.text()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn expired_crl_under_warn_policy_admits_clients_with_a_warning() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        crl_days_left: Some(-1),
        crl_expired: "warn",
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let crl_file = setup.path("client-ca.crl").display().to_string();
    assert_eq!(
        logs.lines_with(&["WARN", "CRL expired: still accepting", &crl_file])
            .len(),
        1,
        "{}",
        logs.text()
    );
    assert!(logs.lines_with(&["ERROR"]).is_empty());

    let pki = &setup.pki;
    let valid = client_config(pki, ClientAuth::Cert(&pki.valid), &[b"http/1.1"]);
    let response = exchange(valid, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(status_of(response.response()), 200);

    // The stale CRL still counts for what it lists.
    let revoked = client_config(pki, ClientAuth::Cert(&pki.revoked), &[b"http/1.1"]);
    let outcome = exchange(revoked, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(
        outcome.alert(),
        Some(rustls::AlertDescription::CertificateRevoked)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn crl_within_the_warning_period_is_warned_about_at_start() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        crl_days_left: Some(3),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let crl_file = setup.path("client-ca.crl").display().to_string();
    assert_eq!(
        logs.lines_with(&["WARN", "CRL expires soon", &crl_file])
            .len(),
        1,
        "{}",
        logs.text()
    );

    let pki = &setup.pki;
    let valid = client_config(pki, ClientAuth::Cert(&pki.valid), &[b"http/1.1"]);
    let response = exchange(valid, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(status_of(response.response()), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn fresh_crls_log_no_warning() {
    let logs = LogCapture::start();
    let setup = Setup::new(&Options::default());
    let proxy = RunningProxy::start(&setup.config()).await;
    assert!(
        logs.lines_with(&["CRL"])
            .iter()
            .all(|l| !l.contains("WARN") && !l.contains("ERROR")),
        "{}",
        logs.text()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn swapped_in_crl_refuses_new_connections_and_closes_open_ones() {
    let _logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let pki = &setup.pki;
    let client = client_config(pki, ClientAuth::Cert(&pki.valid), &[b"http/1.1"]);
    let keep_alive = format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");

    let mut open = connect(client.clone(), proxy.addr).await.unwrap();
    open.write_all(keep_alive.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = open.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // The lab revokes the certificate and the new CRL is loaded.
    setup.revoke_valid_certificate();
    proxy
        .tls
        .store(Arc::new(TlsState::load(&setup.config()).unwrap()));

    let outcome = exchange(client, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(
        outcome.alert(),
        Some(rustls::AlertDescription::CertificateRevoked)
    );

    // Open connections are re-checked in the background; once that has run,
    // the connection that was open is closed, not served further.
    let metrics = proxy.metrics.clone();
    assert!(
        common::eventually(|| {
            metrics
                .connections_closed_by_trust_change
                .get(RefusalReason::Revoked)
                == 1
        })
        .await
    );
    let _ = open.write_all(keep_alive.as_bytes()).await;
    let read = tokio::time::timeout(Duration::from_secs(30), open.read(&mut buf))
        .await
        .expect("the open connection is closed");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the revoked connection answered: {read:?}"
    );
    assert_eq!(upstream.recorded().len(), 1);
    proxy.stop().await;
}
