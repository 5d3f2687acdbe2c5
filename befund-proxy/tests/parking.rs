//! Parking of idle HTTP/1.1 connections under odd and hostile clients:
//! requests and bodies that arrive around and after the park, bytes of a
//! request held while parked, shutdown, many connections at once, HTTP/2.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::pki::SERVER_NAME;
use common::{
    ClientAuth, Options, RecordingUpstream, RunningProxy, Setup, client_config, connect,
    eventually, read_responses,
};

/// Longest wait for anything in these tests; only a guard against hanging.
const GUARD: Duration = Duration::from_secs(30);

async fn proxy_to(upstream: String, extra_limits: &str) -> (Setup, RunningProxy) {
    let setup = Setup::new(&Options {
        upstream,
        extra_limits: extra_limits.into(),
        ..Options::default()
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    (setup, proxy)
}

fn http1_client(setup: &Setup) -> Arc<rustls::ClientConfig> {
    client_config(
        &setup.pki,
        ClientAuth::Cert(&setup.pki.valid),
        &[b"http/1.1"],
    )
}

/// Reads until the proxy closes the connection; what arrived before.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut text = Vec::new();
    let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut text))
        .await
        .expect("the proxy closes the connection");
    String::from_utf8_lossy(&text).into_owned()
}

/// A Befundserver that answers each request as soon as its head has
/// arrived, without reading its body, and drops the connection
/// `hang_up_after` later; records every request head it sees.
struct EarlyAnswering {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EarlyAnswering {
    async fn start(hang_up_after: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut received = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&received);
                    let head = text.split("\r\n\r\n").next().unwrap_or_default();
                    recorded.lock().unwrap().push(head.to_owned());
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly";
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(hang_up_after).await;
                });
            }
        });
        Self { addr, heads, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for EarlyAnswering {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn request_body_left_unread_is_never_taken_for_a_request_after_parking() {
    let upstream = EarlyAnswering::start(Duration::from_millis(1500)).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let mut stream = connect(http1_client(&setup), proxy.addr).await.unwrap();

    // The body's second part reads like a request of its own.
    let inner = format!("GET /smuggled HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    let first_part = "0123456789";
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Length: {}\r\n\r\n",
        first_part.len() + inner.len()
    );
    stream
        .write_all(format!("{head}{first_part}").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
        .await
        .expect("the early answer arrives")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("early"));

    // Past the park moment and the Befundserver hanging up, the rest of
    // the body arrives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = stream.write_all(inner.as_bytes()).await;
    let rest = read_until_closed(&mut stream).await;
    assert!(!rest.contains("HTTP/1.1"), "answered again: {rest:?}");
    let heads = upstream.heads();
    assert!(
        heads.iter().all(|h| !h.contains("/smuggled")),
        "the Befundserver received {heads:?}"
    );
    assert_eq!(heads.len(), 1, "{heads:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn start_of_a_pipelined_request_held_while_parked_is_cut_off_at_the_header_timeout() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "header_read_timeout = \"2s\"").await;
    let mut stream = connect(http1_client(&setup), proxy.addr).await.unwrap();

    let pipelined = format!("GET /first HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\nGET /sec");
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    read_responses(&mut stream, 1).await;
    let metrics = proxy.metrics.clone();
    assert!(eventually(|| metrics.connections_parked.get() == 1).await);

    // No further byte: the started request must complete within
    // header_read_timeout (2 s), long before idle_timeout (60 s).
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(proxy.metrics.header_timeouts.get(), 1);
    assert_eq!(metrics.connections_parked.get(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn parked_connection_is_closed_with_close_notify_at_shutdown() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let mut stream = connect(http1_client(&setup), proxy.addr).await.unwrap();
    let request = format!("GET /first HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_responses(&mut stream, 1).await;
    let metrics = proxy.metrics.clone();
    assert!(eventually(|| metrics.connections_parked.get() == 1).await);

    let stopped = tokio::spawn(proxy.stop());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(GUARD, stream.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the connection");
    // A clean TLS close (close_notify), as for an idle connection not yet
    // parked; rustls reports a close without it as an error.
    assert!(closed.is_ok(), "{closed:?}");
    assert!(rest.is_empty());
    stopped.await.unwrap();
    assert_eq!(metrics.connections_parked.get(), 0);
    assert_eq!(metrics.connections_open.get(), 0);
}

/// The audit lines, once there are `n`.
async fn audit_lines(setup: &Setup, n: usize) -> Vec<serde_json::Value> {
    assert!(
        eventually(|| setup.audit_lines().len() >= n).await,
        "{} audit lines",
        setup.audit_lines().len()
    );
    setup.audit_lines()
}

/// Checks that each of `paths` was forwarded once and audited once, with
/// the client address of the connection that sent it and the client's
/// identity.
async fn each_answered_once(
    setup: &Setup,
    upstream: &RecordingUpstream,
    paths: &[(String, std::net::SocketAddr)],
) {
    let mut forwarded: Vec<String> = upstream.recorded().into_iter().map(|r| r.uri).collect();
    forwarded.sort();
    let mut expected: Vec<String> = paths.iter().map(|(p, _)| p.clone()).collect();
    expected.sort();
    assert_eq!(forwarded, expected);

    let lines = audit_lines(setup, paths.len()).await;
    assert_eq!(lines.len(), paths.len());
    for (path, client) in paths {
        let audited: Vec<_> = lines
            .iter()
            .filter(|l| l["path"] == path.as_str())
            .collect();
        assert_eq!(audited.len(), 1, "{path}: {audited:?}");
        let line = audited[0];
        assert_eq!(line["client"], client.to_string(), "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["serial"], "5f3a09c2e1d4b7a8", "{line}");
        assert_eq!(
            line["subject"], "CN=Dr. Erika Muster,O=Labor Test,C=DE",
            "{line}"
        );
    }
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n")
}

#[tokio::test]
async fn request_split_at_any_byte_across_the_park_is_answered_once() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let client = http1_client(&setup);
    let split_len = get_request("/second-00").len();

    // One connection per split point, all at once: the first request and
    // the second's first `k` bytes, then the rest once parked.
    let mut connections = Vec::new();
    for k in 0..=split_len {
        let client = client.clone();
        let addr = proxy.addr;
        connections.push(tokio::spawn(async move {
            let mut stream = connect(client, addr).await.unwrap();
            let local = stream.get_ref().0.local_addr().unwrap();
            let first = get_request(&format!("/first-{k:02}"));
            let second = get_request(&format!("/second-{k:02}"));
            let (head, tail) = second.split_at(k);
            stream
                .write_all(format!("{first}{head}").as_bytes())
                .await
                .unwrap();
            let mut responses = read_responses(&mut stream, 1).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stream.write_all(tail.as_bytes()).await.unwrap();
            if responses.matches("hello from upstream").count() < 2 {
                responses.push_str(&read_responses(&mut stream, 1).await);
            }
            assert_eq!(responses.matches("HTTP/1.1 200 OK").count(), 2, "{k}");
            vec![
                (format!("/first-{k:02}"), local),
                (format!("/second-{k:02}"), local),
            ]
        }));
    }
    let mut paths = Vec::new();
    for connection in connections {
        paths.extend(connection.await.unwrap());
    }
    each_answered_once(&setup, &upstream, &paths).await;
    let metrics = proxy.metrics.clone();
    proxy.stop().await;
    assert_eq!(metrics.connections_parked.get(), 0);
    assert_eq!(metrics.connections_open.get(), 0);
}

#[tokio::test]
async fn requests_sent_around_the_park_moment_are_each_answered_once() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let client = http1_client(&setup);

    // Pauses from 960 to 1040 ms, around the moment the connection parks.
    let mut connections = Vec::new();
    for i in 0..=40u64 {
        let client = client.clone();
        let addr = proxy.addr;
        connections.push(tokio::spawn(async move {
            let mut stream = connect(client, addr).await.unwrap();
            let local = stream.get_ref().0.local_addr().unwrap();
            let mut paths = Vec::new();
            for round in 0..3 {
                let path = format!("/pause-{i:02}-{round}");
                stream
                    .write_all(get_request(&path).as_bytes())
                    .await
                    .unwrap();
                let response = read_responses(&mut stream, 1).await;
                assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
                paths.push((path, local));
                tokio::time::sleep(Duration::from_millis(960 + 2 * i)).await;
            }
            paths
        }));
    }
    let mut paths = Vec::new();
    for connection in connections {
        paths.extend(connection.await.unwrap());
    }
    each_answered_once(&setup, &upstream, &paths).await;
    let metrics = proxy.metrics.clone();
    proxy.stop().await;
    assert_eq!(metrics.connections_parked.get(), 0);
    assert_eq!(metrics.connections_open.get(), 0);
}

#[tokio::test]
async fn many_connections_park_and_resume_and_leave_no_count_behind() {
    const CONNECTIONS: usize = 200;
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let client = http1_client(&setup);
    let metrics = proxy.metrics.clone();

    let mut streams = Vec::new();
    let mut paths = Vec::new();
    for i in 0..CONNECTIONS {
        let mut stream = connect(client.clone(), proxy.addr).await.unwrap();
        let path = format!("/one-{i:03}");
        stream
            .write_all(get_request(&path).as_bytes())
            .await
            .unwrap();
        paths.push((path, stream.get_ref().0.local_addr().unwrap()));
        streams.push(stream);
    }
    for stream in &mut streams {
        read_responses(stream, 1).await;
    }
    assert!(
        eventually(|| metrics.connections_parked.get() == CONNECTIONS as i64).await,
        "{} parked",
        metrics.connections_parked.get()
    );

    // All resume at once; half of them close right after their answer,
    // the other half are dropped while parked again.
    let mut resumed = Vec::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let path = format!("/two-{i:03}");
        paths.push((path.clone(), stream.get_ref().0.local_addr().unwrap()));
        resumed.push(tokio::spawn(async move {
            stream
                .write_all(get_request(&path).as_bytes())
                .await
                .unwrap();
            read_responses(&mut stream, 1).await;
            (i % 2 == 0).then_some(stream)
        }));
    }
    let mut kept = Vec::new();
    for task in resumed {
        kept.extend(task.await.unwrap());
    }
    assert!(
        eventually(|| metrics.connections_parked.get() == kept.len() as i64).await,
        "{} parked",
        metrics.connections_parked.get()
    );
    drop(kept);
    assert!(eventually(|| metrics.connections_open.get() == 0).await);
    assert_eq!(metrics.connections_parked.get(), 0);
    each_answered_once(&setup, &upstream, &paths).await;
    proxy.stop().await;
}

#[tokio::test]
async fn bursts_and_bodies_arriving_while_parked_are_read_completely() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let client = http1_client(&setup);
    let metrics = proxy.metrics.clone();

    let mut streams = Vec::new();
    for i in 0..4 {
        let mut stream = connect(client.clone(), proxy.addr).await.unwrap();
        stream
            .write_all(get_request(&format!("/before-{i}")).as_bytes())
            .await
            .unwrap();
        read_responses(&mut stream, 1).await;
        streams.push(stream);
    }
    assert!(eventually(|| metrics.connections_parked.get() == 4).await);
    let mut streams = streams.into_iter();

    // Five requests in one write, far more than the first read while parked.
    let mut burst = streams.next().unwrap();
    let five: String = (0..5)
        .map(|i| get_request(&format!("/burst-{i}")))
        .collect();
    burst.write_all(five.as_bytes()).await.unwrap();
    let burst = tokio::spawn(async move { read_responses(&mut burst, 5).await });

    // A head, and its body a moment later.
    let mut late_body = streams.next().unwrap();
    let head =
        format!("POST /late-body HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Length: 11\r\n\r\n");
    late_body.write_all(head.as_bytes()).await.unwrap();
    let late_body = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        late_body.write_all(b"late-body-1").await.unwrap();
        read_responses(&mut late_body, 1).await
    });

    // A chunked body in pieces.
    let mut chunked = streams.next().unwrap();
    let head = format!(
        "POST /chunked HTTP/1.1\r\nHost: {SERVER_NAME}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunked = tokio::spawn(async move {
        for piece in [&head[..], "4\r\nchu", "n\r\n3", "\r\nked\r\n0\r", "\n\r\n"] {
            chunked.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        read_responses(&mut chunked, 1).await
    });

    // Expect: 100-continue: the body only after the interim answer.
    let mut continued = streams.next().unwrap();
    let head = format!(
        "POST /continue HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n"
    );
    continued.write_all(head.as_bytes()).await.unwrap();
    let continued = tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(GUARD, continued.read(&mut buf))
            .await
            .expect("the interim answer arrives")
            .unwrap();
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
        continued.write_all(b"continue").await.unwrap();
        read_responses(&mut continued, 1).await
    });

    let text = burst.await.unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 5, "{text}");
    for task in [late_body, chunked, continued] {
        let text = task.await.unwrap();
        assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    }
    let recorded = upstream.recorded();
    let body_of = |path: &str| {
        let found: Vec<_> = recorded.iter().filter(|r| r.uri == path).collect();
        assert_eq!(found.len(), 1, "{path}: {found:?}");
        String::from_utf8(found[0].body.clone()).unwrap()
    };
    assert_eq!(body_of("/late-body"), "late-body-1");
    assert_eq!(body_of("/chunked"), "chunked");
    assert_eq!(body_of("/continue"), "continue");
    for i in 0..5 {
        assert_eq!(body_of(&format!("/burst-{i}")), "");
    }
    assert_eq!(recorded.len(), 4 + 5 + 3);
    assert_eq!(audit_lines(&setup, 12).await.len(), 12);
    proxy.stop().await;
}

/// Opens an HTTP/1.1 connection, has one request answered and waits until
/// the connection is parked (with `parked` parked connections in all).
async fn parked_connection(
    setup: &Setup,
    proxy: &RunningProxy,
    parked: i64,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut stream = connect(http1_client(setup), proxy.addr).await.unwrap();
    stream
        .write_all(get_request("/before").as_bytes())
        .await
        .unwrap();
    read_responses(&mut stream, 1).await;
    let metrics = proxy.metrics.clone();
    assert!(
        eventually(|| metrics.connections_parked.get() == parked).await,
        "{} parked",
        metrics.connections_parked.get()
    );
    stream
}

#[tokio::test]
async fn http2_connection_is_never_parked() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let h2 = client_config(&setup.pki, ClientAuth::Cert(&setup.pki.valid), &[b"h2"]);
    let stream = connect(h2, proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = || {
        hyper::Request::get(format!("https://{SERVER_NAME}/h2"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(sender.send_request(request()).await.unwrap().status(), 200);

    // An HTTP/1.1 connection idle as long is parked meanwhile; the HTTP/2
    // one is not.
    let _http1 = parked_connection(&setup, &proxy, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.metrics.connections_parked.get(), 1);
    assert_eq!(sender.send_request(request()).await.unwrap().status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn client_closing_its_side_while_parked_is_closed() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let metrics = proxy.metrics.clone();

    // close_notify and the end of its TCP stream while parked.
    let mut parked = parked_connection(&setup, &proxy, 1).await;
    parked.shutdown().await.unwrap();
    assert!(read_until_closed(&mut parked).await.is_empty());
    assert!(eventually(|| metrics.connections_open.get() == 0).await);
    assert_eq!(metrics.connections_parked.get(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn parked_connection_survives_a_reload_that_still_admits_it_and_a_key_update() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), "").await;
    let mut stream = parked_connection(&setup, &proxy, 1).await;

    let metrics = proxy.metrics.clone();
    let state = befund_proxy::tls::TlsState::load(&setup.config()).unwrap();
    proxy.tls.store(Arc::new(state));
    // A TLS 1.3 key update arrives on the parked connection too.
    stream.get_mut().1.refresh_traffic_keys().unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    stream
        .write_all(get_request("/after").as_bytes())
        .await
        .unwrap();
    let answer = read_responses(&mut stream, 1).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert_eq!(
        metrics
            .connections_closed_by_trust_change
            .get(befund_proxy::tls::RefusalReason::Revoked),
        0
    );
    proxy.stop().await;
}

/// A Befundserver answering every request with `size` bytes.
async fn large_answering(size: usize) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        received.drain(..end + 4);
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                        let body = vec![b'x'; size];
                        if tcp.write_all(head.as_bytes()).await.is_err()
                            || tcp.write_all(&body).await.is_err()
                        {
                            return;
                        }
                    }
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn client_taking_its_response_late_gets_all_of_it_and_is_served_after() {
    const SIZE: usize = 256 * 1024;
    let (url, upstream) = large_answering(SIZE).await;
    let (setup, proxy) = proxy_to(url, "").await;

    // A small receive buffer, so that the answer stays partly unsent.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(proxy.addr).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(http1_client(&setup))
        .connect(
            rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    for round in 0..2 {
        stream
            .write_all(get_request(&format!("/large-{round}")).as_bytes())
            .await
            .unwrap();
        if round == 0 {
            // Not reading past the park moment.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !received.ends_with(&[b'x'; 16]) || received.len() < SIZE {
            let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
                .await
                .expect("the answer arrives")
                .unwrap();
            assert!(n > 0, "closed after {} bytes", received.len());
            received.extend_from_slice(&buf[..n]);
        }
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(received.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(received.len() - head_end, SIZE, "round {round}");
    }
    assert_eq!(audit_lines(&setup, 2).await.len(), 2);
    proxy.stop().await;
    upstream.abort();
}
