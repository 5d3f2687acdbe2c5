//! An https Befundserver: verified against `[upstream] ca`, with the proxy's
//! own client certificate (mTLS on the lab side).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, SanType};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

use common::pki::{Ca, Issued, Pki, client_params, write_file};
use common::{ClientAuth, Options, RunningProxy, Setup, client_config, exchange, get, status_of};

/// An https server requiring a client certificate from `client_ca`; records
/// the subject of each client certificate it saw.
async fn tls_upstream(server: &Issued, client_ca: &Ca) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let mut roots = RootCertStore::empty();
    roots.add(client_ca.cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.full_chain(), server.key_der())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
                record.lock().unwrap().push(cert.subject().to_string());
                let service = service_fn(|_: hyper::Request<Incoming>| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello over tls",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn upstream_server_cert(ca: &Ca) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    ca.issue(params)
}

struct TlsUpstreamProxy {
    setup: Setup,
    proxy: RunningProxy,
    seen: Arc<Mutex<Vec<String>>>,
    _files: tempfile::TempDir,
}

async fn proxy_with_tls_upstream(trusted_ca: &str, upstream_server: &Issued) -> TlsUpstreamProxy {
    let pki = Pki::new();
    let lab_side = Ca::root("Labornetz CA");
    let (addr, seen) = tls_upstream(upstream_server, &lab_side).await;
    let proxy_cert = lab_side.issue(client_params("befund-proxy", 77));

    let dir = tempfile::tempdir().unwrap();
    let ca = write_file(dir.path(), "upstream-ca.pem", trusted_ca.as_bytes(), 0o644);
    let cert = write_file(dir.path(), "proxy.pem", proxy_cert.pem.as_bytes(), 0o644);
    let key = write_file(
        dir.path(),
        "proxy.key",
        proxy_cert.key.serialize_pem().as_bytes(),
        0o600,
    );
    let setup = Setup::with_pki(
        pki,
        &Options {
            upstream: format!("https://{addr}"),
            upstream_extra: format!(
                "ca = {ca:?}\nclient_certificate = {cert:?}\nclient_key = {key:?}"
            ),
            ..Options::default()
        },
    );
    let proxy = RunningProxy::start(&setup.config()).await;
    TlsUpstreamProxy {
        setup,
        proxy,
        seen,
        _files: dir,
    }
}

#[tokio::test]
async fn https_befundserver_is_verified_and_sees_the_proxys_client_certificate() {
    let upstream_ca = Ca::root("Befundserver CA");
    let server = upstream_server_cert(&upstream_ca);
    let TlsUpstreamProxy {
        setup,
        proxy,
        seen,
        _files,
    } = proxy_with_tls_upstream(&upstream_ca.cert.pem, &server).await;

    let client = client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    );
    let response = exchange(client, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(status_of(response.response()), 200, "{response:?}");
    assert!(response.response().ends_with("hello over tls"));
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["C=DE, O=Labor Test, CN=befund-proxy"]
    );
    proxy.stop().await;
}

#[tokio::test]
async fn https_befundserver_with_an_untrusted_certificate_gives_502() {
    let upstream_ca = Ca::root("Befundserver CA");
    let impostor_ca = Ca::root("Befundserver CA");
    let server = upstream_server_cert(&impostor_ca);
    let TlsUpstreamProxy {
        setup,
        proxy,
        seen,
        _files,
    } = proxy_with_tls_upstream(&upstream_ca.cert.pem, &server).await;

    let client = client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    );
    let response = exchange(client, proxy.addr, &get("/", proxy.addr.port())).await;
    assert_eq!(status_of(response.response()), 502);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "no request reached the impostor"
    );
    proxy.stop().await;
}
