//! Handling one request: Host check, identity headers, forwarding, errors and
//! the audit record.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::activity::{Activity, ClientBodyError, RequestBody};
use super::authority::{AuthorityError, check_authority};
use super::identity::{ConnectionHeaders, IdentityHeaders};
use super::metrics::{ProxyMetrics, Side};
use super::pool::UpstreamBody;
use super::upstream::{Upstream, UpstreamError};
use crate::audit::{AuditLog, ConnectionFields, RequestFields};

/// What the connections of one worker share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub server_name: String,
    pub identity_headers: IdentityHeaders,
    pub upstream: Upstream,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<ProxyMetrics>,
}

impl Shared {
    /// The same, for one of `workers` connection workers: with its own
    /// share of the Befundserver connection pool.
    pub fn for_worker(&self, workers: usize) -> Self {
        Self {
            server_name: self.server_name.clone(),
            identity_headers: self.identity_headers.clone(),
            upstream: self.upstream.with_own_pool(workers),
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// One verified client connection, with what its requests share prepared
/// once: the identity headers and the audit line's connection members.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    pub peer: SocketAddr,
    pub local_port: u16,
    pub headers: ConnectionHeaders,
    pub audit: ConnectionFields,
    pub activity: Arc<Activity>,
}

/// Handles one request from a verified client.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Result<Response<AuditedBody>, Infallible> {
    conn.activity.request_started();
    let request = request.map(|body| RequestBody::new(body, &conn.activity));
    shared.metrics.requests.inc();
    let mut record = RequestRecord::new(&request);

    let response = match forward(&shared, &conn, request, &mut record).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(failure) => {
            record.error_side = Some(failure.side);
            failure.log(conn.peer, &record);
            failure.response()
        }
    };
    record.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        AuditedBody::new(body, shared, conn, record),
    ))
}

async fn forward(
    shared: &Shared,
    conn: &ConnectionInfo,
    request: Request<RequestBody>,
    record: &mut RequestRecord,
) -> Result<Response<UpstreamBody>, Failure> {
    let (mut parts, body) = request.into_parts();
    if parts.method == http::Method::CONNECT {
        return Err(Failure::new(
            FailureKind::MethodNotAllowed,
            Side::Client,
            "CONNECT: the proxy opens no tunnels".into(),
        ));
    }
    let host = check_authority(
        &parts.uri,
        &parts.headers,
        &shared.server_name,
        conn.local_port,
    )
    .map_err(|e| {
        if e == AuthorityError::Misdirected {
            shared.metrics.misdirected.inc();
        }
        Failure::authority(e, &parts.headers, &parts.uri)
    })?;

    let uri = shared
        .upstream
        .uri_for(parts.uri.path_and_query())
        .map_err(|e| Failure::new(FailureKind::Internal, Side::Proxy, e.to_string()))?;

    let mut headers = std::mem::take(&mut parts.headers);
    remove_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::EXPECT);
    join_cookies(&mut headers);
    shared.identity_headers.strip(&mut headers);
    shared
        .identity_headers
        .apply(&mut headers, &conn.headers, &host);

    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    *upstream_request.version_mut() = Version::HTTP_11;
    *upstream_request.headers_mut() = headers;

    let started = Instant::now();
    let result = tokio::time::timeout(
        shared.upstream.response_timeout(),
        shared.upstream.send(upstream_request),
    )
    .await;
    let upstream_time = started.elapsed();
    record.upstream_ms = Some(millis(upstream_time));
    if result.is_ok() {
        shared
            .metrics
            .upstream_duration
            .observe(upstream_time.as_secs_f64());
    }
    match result {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => {
            // Sending the request body failed because the client's did.
            if let Some(client) = ClientBodyError::cause_of(&e) {
                return Err(Failure::new(
                    FailureKind::BadRequest,
                    Side::Client,
                    ErrorChain(client).to_string(),
                ));
            }
            shared.metrics.upstream_errors.inc();
            let kind = match e {
                UpstreamError::Connect(_) => FailureKind::UpstreamUnreachable,
                UpstreamError::Exchange(_) => FailureKind::UpstreamFailed,
            };
            Err(Failure::new(
                kind,
                Side::Upstream,
                ErrorChain(&e).to_string(),
            ))
        }
        Err(_) => {
            shared.metrics.upstream_timeouts.inc();
            Err(Failure::new(
                FailureKind::UpstreamTimeout,
                Side::Upstream,
                format!(
                    "no response within {:?}",
                    shared.upstream.response_timeout()
                ),
            ))
        }
    }
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one.
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// The standard hop-by-hop headers.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes the headers that describe one connection rather than the message:
/// those `Connection` lists and the standard hop-by-hop headers.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present instead of a lookup for each name
    // that might be: most messages carry none or only `Connection`.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in doomed {
        headers.remove(name);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    BadRequest,
    MethodNotAllowed,
    Misdirected,
    UpstreamUnreachable,
    UpstreamFailed,
    UpstreamTimeout,
    Internal,
}

/// A request the proxy answers itself, and why.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    side: Side,
    detail: String,
}

impl Failure {
    fn new(kind: FailureKind, side: Side, detail: String) -> Self {
        Self { kind, side, detail }
    }

    fn authority(error: AuthorityError, headers: &HeaderMap, uri: &http::Uri) -> Self {
        let host = headers
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let (kind, detail) = match error {
            AuthorityError::Missing => (FailureKind::BadRequest, "no Host header".to_owned()),
            AuthorityError::Malformed => (
                FailureKind::BadRequest,
                format!("malformed or conflicting Host {host:?}"),
            ),
            AuthorityError::Misdirected => {
                (FailureKind::Misdirected, format!("request for {host:?}"))
            }
        };
        Self::new(kind, Side::Client, detail)
    }

    fn status_and_text(&self) -> (StatusCode, &'static str) {
        match self.kind {
            FailureKind::BadRequest => (StatusCode::BAD_REQUEST, "bad request\n"),
            FailureKind::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            FailureKind::Misdirected => (StatusCode::MISDIRECTED_REQUEST, "misdirected request\n"),
            FailureKind::UpstreamUnreachable | FailureKind::UpstreamFailed => {
                (StatusCode::BAD_GATEWAY, "bad gateway\n")
            }
            FailureKind::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n"),
            FailureKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
        }
    }

    /// A short response that reveals nothing about the lab network.
    fn response(&self) -> Response<BoxBody<Bytes, hyper::Error>> {
        let (status, text) = self.status_and_text();
        let mut response = Response::new(
            Full::new(Bytes::from_static(text.as_bytes()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn log(&self, peer: SocketAddr, record: &RequestRecord) {
        let side = self.side.as_str();
        let detail = &self.detail;
        let (method, path) = (&record.method, record.uri.path());
        match self.kind {
            FailureKind::BadRequest | FailureKind::MethodNotAllowed | FailureKind::Misdirected => {
                tracing::warn!(%peer, side, %method, %path, %detail, "request refused");
            }
            FailureKind::UpstreamUnreachable => {
                tracing::warn!(%peer, side, %method, %path, error = %detail, "befundserver unreachable");
            }
            FailureKind::UpstreamFailed => {
                tracing::warn!(%peer, side, %method, %path, error = %detail, "befundserver failed");
            }
            FailureKind::UpstreamTimeout => {
                tracing::warn!(%peer, side, %method, %path, error = %detail, "befundserver too slow");
            }
            FailureKind::Internal => {
                tracing::error!(%peer, side, %method, %path, error = %detail, "internal error");
            }
        }
    }
}

/// Formats an error with its sources, `outer: inner: innermost`.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// What the audit line of one request needs, collected while handling it.
#[derive(Debug)]
pub(crate) struct RequestRecord {
    time: SystemTime,
    started: Instant,
    method: Method,
    /// The request target; the audit line takes its path.
    uri: Uri,
    version: &'static str,
    status: u16,
    upstream_ms: Option<f64>,
    error_side: Option<Side>,
}

impl RequestRecord {
    fn new<B>(request: &Request<B>) -> Self {
        Self {
            time: SystemTime::now(),
            started: Instant::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: match request.version() {
                Version::HTTP_2 => "HTTP/2.0",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            status: 0,
            upstream_ms: None,
            error_side: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body: counts the bytes sent and, when the body is done
    /// (or abandoned), writes the audit line and marks the request finished.
    pub(crate) struct AuditedBody {
        #[pin]
        inner: BoxBody<Bytes, hyper::Error>,
        bytes: u64,
        done: Option<Done>,
    }

    impl PinnedDrop for AuditedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                done.finish(*this.bytes);
            }
        }
    }
}

struct Done {
    shared: Arc<Shared>,
    conn: Arc<ConnectionInfo>,
    record: RequestRecord,
}

impl Done {
    fn finish(self, bytes: u64) {
        let Self {
            shared,
            conn,
            record,
        } = self;
        let duration = record.started.elapsed();
        shared.metrics.responses.record(record.status);
        shared
            .metrics
            .request_duration
            .observe(duration.as_secs_f64());
        let path = record.uri.path();
        shared.audit.record(
            &conn.audit,
            &RequestFields {
                time: record.time,
                method: record.method.as_str(),
                path,
                version: record.version,
                status: record.status,
                bytes,
                duration_ms: millis(duration),
                upstream_ms: record.upstream_ms,
                error_side: record.error_side.map(Side::as_str),
            },
        );
        tracing::debug!(peer = %conn.peer, method = %record.method, path, status = record.status, bytes, "request done");
        conn.activity.request_finished();
    }
}

impl AuditedBody {
    fn new(
        inner: BoxBody<Bytes, hyper::Error>,
        shared: Arc<Shared>,
        conn: Arc<ConnectionInfo>,
        record: RequestRecord,
    ) -> Self {
        Self {
            inner,
            bytes: 0,
            done: Some(Done {
                shared,
                conn,
                record,
            }),
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let result = this.inner.poll_frame(cx);
        match &result {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(done) = this.done.as_ref() {
                    tracing::warn!(peer = %done.conn.peer, side = "upstream", error = %e, "befundserver broke off the response body");
                }
            }
            Poll::Ready(None) => {
                if let Some(done) = this.done.take() {
                    done.finish(*this.bytes);
                }
            }
            Poll::Pending => {}
        }
        result
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Trace"),
        );
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn hop_by_hop_headers_go_without_a_connection_header_too() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("Proxy-Connection", HeaderValue::from_static("keep-alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), [header::COOKIE]);
    }

    #[test]
    fn message_without_hop_by_hop_headers_is_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let before = headers.clone();
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn split_cookies_are_joined_for_http1() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut headers);
        assert_eq!(
            headers.get_all(header::COOKIE).iter().collect::<Vec<_>>(),
            ["a=1; b=2"]
        );
    }

    #[test]
    fn error_bodies_name_no_internal_detail() {
        let failure = Failure::new(
            FailureKind::UpstreamUnreachable,
            Side::Upstream,
            "tcp connect error: 10.20.0.5:8080".into(),
        );
        let (status, text) = failure.status_and_text();
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(text, "bad gateway\n");
    }
}
