//! Connections served on several worker threads: shutdown, revocation,
//! the connection limit and slow clients hold across workers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use befund_proxy::tls::RefusalReason;
use common::pki::SERVER_NAME;
use common::{
    ClientAuth, Options, RecordingUpstream, RunningProxy, Setup, client_config, connect,
    eventually, hello_from_upstream, read_responses, serve_http1,
};

/// Longest wait for anything in these tests; only a guard against hanging.
const GUARD: Duration = Duration::from_secs(30);

/// A Befundserver that holds every request until the test releases it.
struct GatedUpstream {
    addr: std::net::SocketAddr,
    arrived: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl GatedUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let (count, held) = (arrived.clone(), gate.clone());
        let task = serve_http1(listener, move |_request| {
            let (count, held) = (count.clone(), held.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                held.acquire().await.unwrap().forget();
                hello_from_upstream()
            }
        });
        Self {
            addr,
            arrived,
            gate,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

impl Drop for GatedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn http1_client(setup: &Setup) -> Arc<rustls::ClientConfig> {
    client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    )
}

/// Opens an HTTP/1.1 connection and sends `GET path` on it.
async fn send_get(
    setup: &Setup,
    proxy: &RunningProxy,
    path: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut stream = connect(http1_client(setup), proxy.addr).await.unwrap();
    stream
        .write_all(get_request(path).as_bytes())
        .await
        .unwrap();
    stream
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n")
}

#[tokio::test]
async fn shutdown_answers_requests_in_flight_on_every_worker_then_closes_with_close_notify() {
    let upstream = GatedUpstream::start().await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        extra_limits: "shutdown_grace = \"20s\"".into(),
        workers: Some(3),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let metrics = proxy.metrics.clone();
    let mut streams = Vec::new();
    for i in 0..6 {
        let stream = send_get(&setup, &proxy, &format!("/inflight/{i}")).await;
        streams.push(stream);
    }
    assert!(eventually(|| upstream.arrived.load(Ordering::SeqCst) == 6).await);

    let stopped = tokio::spawn(proxy.stop());
    // Shutdown has begun; the Befundserver answers now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    upstream.release(6);
    for stream in &mut streams {
        let mut text = Vec::new();
        let closed = tokio::time::timeout(GUARD, stream.read_to_end(&mut text))
            .await
            .expect("the proxy closes the connection");
        assert!(closed.is_ok(), "clean TLS close: {closed:?}");
        let text = String::from_utf8_lossy(&text);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("hello from upstream"), "{text}");
    }
    stopped.await.unwrap();
    let lines = setup.audit_lines();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(metrics.connections_open.get(), 0);
}

#[tokio::test]
async fn revocation_closes_parked_and_busy_connections_on_every_worker() {
    let upstream = GatedUpstream::start().await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        workers: Some(2),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let metrics = proxy.metrics.clone();
    // Four parked connections (one request each, answered).
    let mut parked = Vec::new();
    for i in 0..4 {
        let mut stream = send_get(&setup, &proxy, &format!("/parked/{i}")).await;
        upstream.release(1);
        read_responses(&mut stream, 1).await;
        parked.push(stream);
    }
    assert!(eventually(|| metrics.connections_parked.get() == 4).await);
    // Four busy ones, their requests held by the Befundserver.
    let mut busy = Vec::new();
    for i in 0..4 {
        let stream = send_get(&setup, &proxy, &format!("/busy/{i}")).await;
        busy.push(stream);
    }
    assert!(eventually(|| upstream.arrived.load(Ordering::SeqCst) == 8).await);

    setup.revoke_valid_certificate();
    for stream in parked.iter_mut().chain(busy.iter_mut()) {
        let mut text = Vec::new();
        let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut text))
            .await
            .expect("the connection is closed");
        assert!(
            !String::from_utf8_lossy(&text).contains("HTTP/1.1"),
            "{text:?}"
        );
    }
    assert!(
        eventually(|| metrics
            .connections_closed_by_trust_change
            .get(RefusalReason::Revoked)
            == 8)
        .await
    );
    assert_eq!(metrics.connections_parked.get(), 0);
    upstream.release(100);
    proxy.stop().await;
}

#[tokio::test]
async fn connection_limit_holds_exactly_across_workers() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        extra_limits: "max_connections = 5".into(),
        workers: Some(3),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let client = http1_client(&setup);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect(client.clone(), proxy.addr).await.unwrap());
    }
    for _ in 0..4 {
        assert!(connect(client.clone(), proxy.addr).await.is_err());
    }
    assert_eq!(proxy.metrics.connections_over_limit.get(), 4);
    assert_eq!(proxy.metrics.connections_open.get(), 5);
    for stream in &mut held {
        stream
            .write_all(get_request("/held").as_bytes())
            .await
            .unwrap();
        read_responses(stream, 1).await;
    }
    drop(held.pop());
    let metrics = proxy.metrics.clone();
    assert!(eventually(|| metrics.connections_open.get() == 4).await);
    let mut again = connect(client.clone(), proxy.addr).await.unwrap();
    again
        .write_all(get_request("/again").as_bytes())
        .await
        .unwrap();
    read_responses(&mut again, 1).await;
    proxy.stop().await;
}

#[tokio::test]
async fn stalled_handshakes_and_header_trickles_do_not_stall_the_single_worker() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        workers: Some(1),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    // A half ClientHello, a verified client that sent half a request head,
    // and a client that never reads a large stream of responses.
    let mut half_hello = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut trickle = connect(http1_client(&setup), proxy.addr).await.unwrap();
    trickle.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let mut deaf = connect(http1_client(&setup), proxy.addr).await.unwrap();
    let many: String = (0..2000)
        .map(|i| get_request(&format!("/deaf/{i}")))
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(2), deaf.write_all(many.as_bytes())).await;

    for i in 0..5 {
        let mut stream = send_get(&setup, &proxy, &format!("/ok/{i}")).await;
        read_responses(&mut stream, 1).await;
    }
    drop((half_hello, trickle, deaf));
    proxy.stop().await;
}

/// A client whose handshake is held between the server's flight and its
/// own (certificate, proof, Finished) until `go`; then it sends one request
/// and returns what arrives until the connection closes.
fn held_handshake(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    paused: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
) -> String {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(GUARD)).unwrap();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    while tls.wants_write() {
        tls.write_tls(&mut tcp).unwrap();
    }
    // The server's flight, up to its Finished: the client's own is queued.
    while !tls.wants_write() {
        assert!(tls.read_tls(&mut tcp).unwrap() > 0, "server closed");
        tls.process_new_packets().unwrap();
    }
    paused.send(()).unwrap();
    go.recv().unwrap();
    tls.writer()
        .write_all(get_request("/after-revocation").as_bytes())
        .unwrap();
    while tls.wants_write() {
        if tls.write_tls(&mut tcp).is_err() {
            break;
        }
    }
    let mut received = Vec::new();
    loop {
        match tls.read_tls(&mut tcp) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if tls.process_new_packets().is_err() {
            break;
        }
        let _ = tls.reader().read_to_end(&mut received);
        if received.ends_with(b"hello from upstream") {
            break;
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn handshake_under_way_while_the_certificate_is_revoked_is_closed_once_verified() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        workers: Some(2),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let metrics = proxy.metrics.clone();
    // An open connection of the same certificate shows when the open
    // connections have been re-checked.
    let mut open = send_get(&setup, &proxy, "/before").await;
    read_responses(&mut open, 1).await;

    let (paused_tx, paused) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let (config, addr) = (http1_client(&setup), proxy.addr);
    let held = std::thread::spawn(move || held_handshake(config, addr, paused_tx, go_rx));
    tokio::task::spawn_blocking(move || paused.recv().unwrap())
        .await
        .unwrap();

    // Revoked and reloaded while the handshake is under way.
    setup.revoke_valid_certificate();
    let state = befund_proxy::tls::TlsState::load(&setup.config()).unwrap();
    proxy.tls.store(Arc::new(state));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(GUARD, open.read_to_end(&mut rest))
        .await
        .expect("the open connection is closed");
    assert!(
        eventually(|| metrics
            .connections_closed_by_trust_change
            .get(RefusalReason::Revoked)
            == 1)
        .await
    );

    go.send(()).unwrap();
    let received = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap();
    assert!(
        !received.contains("HTTP/1.1"),
        "a revoked certificate was served: {received:?}"
    );
    assert_eq!(
        metrics
            .connections_closed_by_trust_change
            .get(RefusalReason::Revoked),
        2
    );
    let forwarded: Vec<String> = upstream.recorded().into_iter().map(|r| r.uri).collect();
    assert_eq!(forwarded, ["/before"]);
    proxy.stop().await;
}

#[tokio::test]
async fn http2_streams_in_flight_at_shutdown_are_answered_on_every_worker() {
    let upstream = GatedUpstream::start().await;
    let setup = Setup::new(&Options {
        upstream: upstream.url(),
        extra_limits: "shutdown_grace = \"20s\"".into(),
        workers: Some(2),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    let config = client_config(&setup.pki, ClientAuth::Cert(&setup.pki.valid), &[b"h2"]);
    let mut pending = Vec::new();
    let mut drivers = Vec::new();
    for c in 0..3 {
        let stream = connect(config.clone(), proxy.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        drivers.push(tokio::spawn(conn));
        for s in 0..10 {
            let mut sender = sender.clone();
            let request = hyper::Request::get(format!("https://{SERVER_NAME}/h2/{c}/{s}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            pending.push(tokio::spawn(async move {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = http_body_util::BodyExt::collect(response.into_body()).await?;
                Ok::<_, hyper::Error>((status, body.to_bytes()))
            }));
        }
    }
    assert!(eventually(|| upstream.arrived.load(Ordering::SeqCst) == 30).await);
    let stopped = tokio::spawn(proxy.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    upstream.release(30);
    for request in pending {
        let (status, body) = request.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"hello from upstream");
    }
    for driver in drivers {
        tokio::time::timeout(GUARD, driver)
            .await
            .expect("the proxy ends the connection")
            .unwrap()
            .unwrap();
    }
    stopped.await.unwrap();
    assert_eq!(setup.audit_lines().len(), 30);
}

/// Sends a GET on `stream` and returns the status of its response.
async fn status_on(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), path: &str) -> u16 {
    stream
        .write_all(get_request(path).as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    // Either answer is short and has a Content-Length: read until its body.
    loop {
        let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("an answer arrives")
            .unwrap();
        assert!(n > 0, "closed after {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.ends_with("hello from upstream") || text.ends_with("bad gateway\n") {
            return common::status_of(&text);
        }
    }
}

#[tokio::test]
async fn befundserver_restarted_under_load_is_used_again_by_every_worker() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let befundserver = serve_http1(listener, |_request| async { hello_from_upstream() });
    let setup = Setup::new(&Options {
        upstream: format!("http://{addr}"),
        workers: Some(3),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    // Keep-alive connections on each worker fill each worker's pool.
    let mut streams = Vec::new();
    for i in 0..6 {
        let mut stream = connect(http1_client(&setup), proxy.addr).await.unwrap();
        assert_eq!(status_on(&mut stream, &format!("/warm/{i}")).await, 200);
        streams.push(stream);
    }
    // The Befundserver goes away with its connections: 502, documented.
    befundserver.abort();
    let _ = befundserver.await;
    for stream in &mut streams {
        assert_eq!(status_on(stream, "/down").await, 502);
    }
    // Back on the same port: every worker's pool recovers.
    let befundserver = serve_http1(TcpListener::bind(addr).await.unwrap(), |_request| async {
        hello_from_upstream()
    });
    for round in 0..2 {
        for stream in &mut streams {
            assert_eq!(status_on(stream, &format!("/back/{round}")).await, 200);
        }
    }
    befundserver.abort();
    proxy.stop().await;
}
