//! A change of the trust state reaches connections that are already open:
//! a changed CRL file (picked up without a reload) and a reloaded state that
//! no longer trusts the client's CA both close the connections they refuse.

mod common;

use std::sync::Arc;
use std::time::Duration;

use befund_proxy::tls::{RefusalReason, TlsState};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use common::pki::{SERVER_NAME, write_file};
use common::{ClientAuth, Options, RecordingUpstream, RunningProxy, Setup, client_config, connect};

/// Longest wait for a connection to close; only a guard against hanging.
const GUARD: Duration = Duration::from_secs(30);

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 keep-alive connection with `Pki::valid`'s certificate, used
/// once; returns its sender and the task driving it.
async fn open_connection(
    setup: &Setup,
    proxy: &RunningProxy,
) -> (Sender, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let config = client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    );
    let stream = connect(config, proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let response = sender.send_request(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    (sender, task)
}

/// Waits until `count` reaches `expected` (it is updated right after the
/// connection is closed).
async fn counted(count: impl Fn() -> u64, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + GUARD;
    while count() < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    count()
}

fn request() -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get("/befunde")
        .header(hyper::header::HOST, SERVER_NAME)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn changed_crl_file_closes_open_connections_of_the_revoked_certificate() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let (mut sender, conn) = open_connection(&setup, &proxy).await;
    let generation = proxy.tls.generation();

    // The intermediate's CRL now also lists the connection's certificate.
    setup.revoke_valid_certificate();

    let _ = tokio::time::timeout(GUARD, conn)
        .await
        .expect("the connection is closed");
    assert!(sender.send_request(request()).await.is_err());
    assert!(proxy.tls.generation() > generation);
    let metrics = proxy.metrics.clone();
    let closed = counted(
        || {
            metrics
                .connections_closed_by_trust_change
                .get(RefusalReason::Revoked)
        },
        1,
    )
    .await;
    assert_eq!(closed, 1);
    assert_eq!(proxy.metrics.crl_updates.get(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn revoking_the_certificate_closes_its_parked_idle_connection() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let (_sender, conn) = open_connection(&setup, &proxy).await;
    let metrics = proxy.metrics.clone();
    let parked = counted(|| metrics.connections_parked.get() as u64, 1).await;
    assert_eq!(parked, 1, "the idle connection is parked");

    setup.revoke_valid_certificate();

    let _ = tokio::time::timeout(GUARD, conn)
        .await
        .expect("the parked connection is closed");
    assert_eq!(
        counted(
            || metrics
                .connections_closed_by_trust_change
                .get(RefusalReason::Revoked),
            1
        )
        .await,
        1
    );
    assert_eq!(metrics.connections_parked.get(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn reload_that_drops_the_clients_ca_closes_its_open_connections() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let (mut sender, conn) = open_connection(&setup, &proxy).await;

    // The client CA bundle now holds another CA only; its CRLs go too.
    let other = common::pki::Ca::root("Another Lab CA");
    write_file(
        setup.dir.path(),
        "client-ca.pem",
        other.cert.pem.as_bytes(),
        0o644,
    );
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    let start = text.find("crls = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let edited = format!("{}crls = []{}", &text[..start], &text[end..]);
    std::fs::write(&setup.config_path, edited).unwrap();
    let state = TlsState::load(&setup.config()).unwrap();
    proxy.tls.store(Arc::new(state));

    let _ = tokio::time::timeout(GUARD, conn)
        .await
        .expect("the connection is closed");
    assert!(sender.send_request(request()).await.is_err());
    let metrics = proxy.metrics.clone();
    let closed = counted(
        || {
            metrics
                .connections_closed_by_trust_change
                .get(RefusalReason::UnknownIssuer)
        },
        1,
    )
    .await;
    assert_eq!(closed, 1);
    proxy.stop().await;
}
