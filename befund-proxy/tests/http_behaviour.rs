//! HTTP behaviour between verified clients, the proxy and the Befundserver:
//! Host checks, slow clients, upstream failures, HTTP/2, limits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::pki::SERVER_NAME;
use common::{
    ClientAuth, Exchange, LogCapture, Options, RecordingUpstream, RunningProxy, Setup,
    client_config, closed_port, connect, eventually, exchange, get, read_responses, status_of,
    wait_for_lines,
};

async fn proxy_to(upstream: String, options: Options) -> (Setup, RunningProxy) {
    let setup = Setup::new(&Options {
        upstream,
        ..options
    });
    let proxy = RunningProxy::start(&setup.config()).await;
    (setup, proxy)
}

fn valid_client(setup: &Setup, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config(&setup.pki, ClientAuth::Cert(&setup.pki.valid), alpn)
}

#[tokio::test]
async fn request_for_another_host_or_port_gets_421_and_is_not_forwarded() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), Options::default()).await;
    let client = valid_client(&setup, &[b"http/1.1"]);
    let port = proxy.addr.port();

    for host in [
        "other.example",
        "127.0.0.1",
        &format!("{SERVER_NAME}:{}", port + 1),
        &format!("{SERVER_NAME}.evil"),
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = exchange(client.clone(), proxy.addr, &request).await;
        assert_eq!(status_of(response.response()), 421, "Host {host}");
    }
    assert!(upstream.recorded().is_empty());
    assert_eq!(proxy.metrics.misdirected.get(), 4);

    for host in [
        SERVER_NAME.to_owned(),
        format!("{SERVER_NAME}:{port}"),
        "BEFUND.TEST".to_owned(),
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = exchange(client.clone(), proxy.addr, &request).await;
        assert_eq!(status_of(response.response()), 200, "Host {host}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), Options::default()).await;
    let client = valid_client(&setup, &[b"http/1.1"]);

    for request in [
        "GARBAGE\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        format!(
            "GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nBad Header: x\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let response = exchange(client.clone(), proxy.addr, &request).await;
        assert_eq!(status_of(response.response()), 400, "{request:?}");
    }
    assert!(upstream.recorded().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(
        upstream.url(),
        Options {
            extra_limits: "max_header_size = 8192".into(),
            ..Options::default()
        },
    )
    .await;
    let big = "a".repeat(10_000);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nCookie: {big}\r\nConnection: close\r\n\r\n"
    );
    let response = exchange(valid_client(&setup, &[b"http/1.1"]), proxy.addr, &request).await;
    assert_eq!(status_of(response.response()), 431);
    assert!(upstream.recorded().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn client_trickling_headers_one_byte_per_second_is_cut_off() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(
        upstream.url(),
        Options {
            extra_limits: "header_read_timeout = \"2s\"".into(),
            ..Options::default()
        },
    )
    .await;
    let stream = connect(valid_client(&setup, &[b"http/1.1"]), proxy.addr)
        .await
        .unwrap();

    // 60 bytes at one per second would take a minute.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(20)
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let writer_sent = sent.clone();
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    let trickle = tokio::spawn(async move {
        for byte in request.as_bytes() {
            if write_half.write_all(&[*byte]).await.is_err() || write_half.flush().await.is_err() {
                return;
            }
            writer_sent.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(45), read_half.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the proxy closed the connection before the client finished"
    );
    assert!(
        sent.load(Ordering::SeqCst) < 50,
        "cut off well before the request was complete"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    trickle.abort();
    assert!(upstream.recorded().is_empty());
    assert_eq!(proxy.metrics.header_timeouts.get(), 1);
    assert_eq!(
        logs.lines_with(&[
            "WARN",
            "request headers not received in time",
            "side=\"client\""
        ])
        .len(),
        1,
        "{}",
        logs.text()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_befundserver_gives_502_without_internal_detail() {
    let logs = LogCapture::start();
    let (setup, proxy) = proxy_to(
        format!("http://127.0.0.1:{}", closed_port()),
        Options::default(),
    )
    .await;
    let response = exchange(
        valid_client(&setup, &[b"http/1.1"]),
        proxy.addr,
        &get("/", proxy.addr.port()),
    )
    .await;
    let text = response.response();
    assert_eq!(status_of(text), 502);
    assert!(text.ends_with("\r\n\r\nbad gateway\n"), "{text:?}");
    assert!(
        !text.contains("127.0.0.1"),
        "the body names no internal address"
    );
    assert_eq!(
        logs.lines_with(&["befundserver unreachable", "side=\"upstream\""])
            .len(),
        1,
        "{}",
        logs.text()
    );
    let lines = wait_for_lines(&setup.path("audit.jsonl"), 1).await;
    assert!(
        lines[0].contains("\"status\":502") && lines[0].contains("\"error_side\":\"upstream\""),
        "{}",
        lines[0]
    );
    proxy.stop().await;
}

#[tokio::test]
async fn slow_befundserver_gives_504() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::from_secs(10)).await;
    let (setup, proxy) = proxy_to(
        upstream.url(),
        Options {
            response_timeout: "1s",
            ..Options::default()
        },
    )
    .await;
    let response = exchange(
        valid_client(&setup, &[b"http/1.1"]),
        proxy.addr,
        &get("/", proxy.addr.port()),
    )
    .await;
    let text = response.response();
    assert_eq!(status_of(text), 504);
    assert!(text.ends_with("gateway timeout\n"), "{text:?}");
    assert_eq!(
        upstream.recorded().len(),
        1,
        "the request did reach the Befundserver"
    );
    assert_eq!(proxy.metrics.upstream_timeouts.get(), 1);
    assert_eq!(
        logs.lines_with(&["befundserver too slow", "side=\"upstream\""])
            .len(),
        1
    );
    proxy.stop().await;
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_forwarded_as_http1() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), Options::default()).await;
    let stream = connect(valid_client(&setup, &[b"h2"]), proxy.addr)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let port = proxy.addr.port();
    for path in ["/eins", "/zwei"] {
        let request = hyper::Request::get(format!("https://{SERVER_NAME}:{port}{path}"))
            .header("x-client-cert-subject", "CN=spoofed over h2")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello from upstream");
    }

    let wrong = hyper::Request::get("https://other.example/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(wrong).await.unwrap().status(), 421);

    let recorded = upstream.recorded();
    assert_eq!(recorded.len(), 2, "two requests on one HTTP/2 connection");
    assert_eq!(recorded[0].uri, "/eins");
    assert_eq!(
        recorded[0].single("x-client-cert-subject"),
        "CN=Dr. Erika Muster,O=Labor Test,C=DE"
    );
    assert_eq!(
        recorded[0].single("x-forwarded-host"),
        format!("{SERVER_NAME}:{port}")
    );
    assert_eq!(recorded[0].single("cookie"), "a=1; b=2");
    let lines = wait_for_lines(&setup.path("audit.jsonl"), 3).await;
    assert!(
        lines[0].contains("\"version\":\"HTTP/2.0\""),
        "{}",
        lines[0]
    );
    assert_eq!(proxy.metrics.handshakes_completed.get(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(
        upstream.url(),
        Options {
            extra_limits: "idle_timeout = \"1s\"".into(),
            ..Options::default()
        },
    )
    .await;
    let mut stream = connect(valid_client(&setup, &[b"http/1.1"]), proxy.addr)
        .await
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive: nothing more arrives, then the proxy closes.
    let rest = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
    assert!(rest.is_ok(), "the idle connection was closed");
    proxy.stop().await;
}

fn recorded_paths(upstream: &RecordingUpstream) -> Vec<String> {
    upstream.recorded().into_iter().map(|r| r.uri).collect()
}

#[tokio::test]
async fn keep_alive_connection_parked_while_idle_serves_its_next_request() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), Options::default()).await;
    let mut stream = connect(valid_client(&setup, &[b"http/1.1"]), proxy.addr)
        .await
        .unwrap();

    let first = format!("GET /first HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    stream.write_all(first.as_bytes()).await.unwrap();
    assert!(
        read_responses(&mut stream, 1)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let metrics = proxy.metrics.clone();
    assert!(
        eventually(|| metrics.connections_parked.get() == 1).await,
        "the idle connection is parked"
    );

    let second = format!("GET /second HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    stream.write_all(second.as_bytes()).await.unwrap();
    assert!(
        read_responses(&mut stream, 1)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(recorded_paths(&upstream), ["/first", "/second"]);
    assert_eq!(proxy.metrics.handshakes_completed.get(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn pipelined_request_cut_short_before_parking_is_completed_after() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), Options::default()).await;
    let mut stream = connect(valid_client(&setup, &[b"http/1.1"]), proxy.addr)
        .await
        .unwrap();

    // A whole request and the start of the next in one write: the proxy
    // reads both, answers the first and holds the start of the second.
    let pipelined = format!("GET /first HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\nGET /sec");
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    read_responses(&mut stream, 1).await;
    let metrics = proxy.metrics.clone();
    assert!(
        eventually(|| metrics.connections_parked.get() == 1).await,
        "the idle connection is parked"
    );

    let rest = format!("ond HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    stream.write_all(rest.as_bytes()).await.unwrap();
    assert!(
        read_responses(&mut stream, 1)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(recorded_paths(&upstream), ["/first", "/second"]);
    proxy.stop().await;
}

#[tokio::test]
async fn parked_connection_woken_by_an_incomplete_request_is_cut_off_at_the_header_timeout() {
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(
        upstream.url(),
        Options {
            extra_limits: "header_read_timeout = \"2s\"".into(),
            ..Options::default()
        },
    )
    .await;
    let mut stream = connect(valid_client(&setup, &[b"http/1.1"]), proxy.addr)
        .await
        .unwrap();
    let first = format!("GET /first HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    stream.write_all(first.as_bytes()).await.unwrap();
    read_responses(&mut stream, 1).await;
    let metrics = proxy.metrics.clone();
    assert!(eventually(|| metrics.connections_parked.get() == 1).await);

    stream
        .write_all(b"GET /second HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the proxy closed the connection");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(proxy.metrics.header_timeouts.get(), 1);
    assert_eq!(recorded_paths(&upstream), ["/first"]);
    proxy.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once_and_logged() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(
        upstream.url(),
        Options {
            extra_limits: "max_connections = 1".into(),
            ..Options::default()
        },
    )
    .await;
    let client = valid_client(&setup, &[b"http/1.1"]);
    let first = connect(client.clone(), proxy.addr).await.unwrap();

    for _ in 0..3 {
        let second =
            tokio::time::timeout(Duration::from_secs(10), connect(client.clone(), proxy.addr))
                .await
                .expect("refused promptly");
        assert!(second.is_err(), "a second connection is not served");
    }
    assert_eq!(proxy.metrics.connections_over_limit.get(), 3);
    assert_eq!(
        logs.lines_with(&["WARN", "connection limit reached"]).len(),
        1,
        "the warning is rate-limited: {}",
        logs.text()
    );

    drop(first);
    // Once the first connection is gone, a new one is served again.
    let mut served = false;
    for _ in 0..50 {
        if let Exchange::Response(text) =
            exchange(client.clone(), proxy.addr, &get("/", proxy.addr.port())).await
        {
            served = status_of(&text) == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served);
    proxy.stop().await;
}

#[tokio::test]
async fn request_body_the_client_breaks_is_answered_400_as_the_clients_fault() {
    let logs = LogCapture::start();
    let upstream = RecordingUpstream::start(Duration::ZERO).await;
    let (setup, proxy) = proxy_to(upstream.url(), Options::default()).await;
    // One good chunk, then a chunk size that is no number.
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {SERVER_NAME}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n4\r\nwxyz\r\nZZ-no-size\r\n\r\n"
    );
    let response = exchange(valid_client(&setup, &[b"http/1.1"]), proxy.addr, &request).await;
    assert_eq!(
        status_of(response.response()),
        400,
        "{:?}",
        response.response()
    );
    assert_eq!(proxy.metrics.upstream_errors.get(), 0);

    let lines = wait_for_lines(&setup.path("audit.jsonl"), 1).await;
    assert!(
        lines[0].contains("\"status\":400") && lines[0].contains("\"error_side\":\"client\""),
        "{}",
        lines[0]
    );
    let refused = logs.lines_with(&["request refused", "side=\"client\"", "request body"]);
    assert_eq!(refused.len(), 1, "{}", logs.text());
    assert!(
        logs.lines_with(&["side=\"upstream\""]).is_empty(),
        "{}",
        logs.text()
    );
    proxy.stop().await;
}
