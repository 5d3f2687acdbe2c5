//! One client connection: TLS handshake (refusals logged and counted), then
//! HTTP/1.1 or HTTP/2 as negotiated by ALPN, under the connection's deadlines.
//!
//! Most connections spend most of their life idle, so what an idle
//! connection holds decides the proxy's memory. An HTTP/1.1 connection idle
//! for [`PARK_AFTER`] is *parked*: hyper is asked to end it gracefully
//! without closing the stream, which it does at once for an idle connection
//! (no `Connection: close`, nothing sent) and which hands back the TLS
//! stream with any bytes of a next request it had read already. The parked
//! connection holds only its TLS state; the client's next bytes start a new
//! hyper connection on the same stream, those bytes read first. Deadlines,
//! revocation and shutdown apply while parked as before.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, Deadlines, Expiry, MonitoredIo};
use super::identity::{ClientIdentity, ConnectionHeaders};
use super::live::{LiveConnections, Registration};
use super::metrics::ProxyMetrics;
use super::service::{AuditedBody, ConnectionInfo, ErrorChain, Shared, handle};
use super::supervised::{Ended, Supervised};
use crate::audit::ConnectionFields;
use crate::config::LimitsConfig;
use crate::tls::{RefusalReason, SharedTlsState, TlsState};

/// Idle time after which an HTTP/1.1 connection is parked. Long enough that
/// a client sending requests in quick succession (a page, then its
/// resources) keeps its HTTP state; short enough that an idle connection
/// holds little more than its TLS state. Parking and resuming cost a few
/// allocations, nothing on the wire.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(1);

/// Bytes read at a time while waiting for a parked connection's client.
/// Whatever else is ready stays in the TLS layer for hyper to read.
const PARKED_READ: usize = 64;

/// What the connection tasks share besides the request [`Shared`] state.
#[derive(Debug)]
pub(crate) struct ConnectionContext {
    pub shared: Arc<Shared>,
    pub tls: SharedTlsState,
    pub limits: LimitsConfig,
    /// Time a busy connection may go without moving a byte.
    pub stall_timeout: Duration,
    /// The open verified connections, rechecked at every trust change.
    pub live: Arc<LiveConnections>,
}

/// Serves one accepted TCP connection until it closes, expires or `shutdown` ends it.
///
/// A task's future is as large as its largest state for the task's whole
/// life, and most connections spend it idle. So the handshake and the
/// serving each live in their own box: an idle connection holds neither the
/// handshake's state nor the other protocol's.
pub(crate) async fn serve_connection(
    ctx: Arc<ConnectionContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: CancellationToken,
) {
    let Some((stream, verified_by)) = handshake(&ctx, tcp, peer, &shutdown).await else {
        return;
    };
    if let Some(serving) = serve_verified(ctx, stream, &verified_by, peer, local, shutdown) {
        serving.await;
    }
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A verified client's stream as the HTTP connection reads and writes it.
type Io = TokioIo<MonitoredIo<TlsStream>>;

/// Serves the HTTP connection of a verified client.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The request service of one connection. Each request's future is boxed:
/// hyper hands an HTTP/1.1 connection's parts back (to park it) only when
/// the service's future can move.
#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
    info: Arc<ConnectionInfo>,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<AuditedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        Box::pin(handle(self.shared.clone(), self.info.clone(), request))
    }
}

type Http1Connection = http1::Connection<Io, Handler>;

/// The TLS handshake, within `limits.handshake_timeout`; a refusal is logged
/// and counted. Returns the stream and the TLS state that verified the
/// client.
async fn handshake(
    ctx: &ConnectionContext,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<(TlsStream, Arc<TlsState>)> {
    let state = ctx.tls.load_full();
    let acceptor = TlsAcceptor::from(state.server_config.clone());
    let handshake =
        tokio::time::timeout(ctx.limits.handshake_timeout, Box::pin(acceptor.accept(tcp)));
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        () = shutdown.cancelled() => return None,
    };
    match outcome {
        Ok(Ok(stream)) => Some((stream, state)),
        Ok(Err(error)) => {
            let reason = RefusalReason::classify(&error);
            refuse(ctx, &state, peer, reason, Some(&error));
            None
        }
        Err(_elapsed) => {
            refuse(ctx, &state, peer, RefusalReason::Timeout, None);
            None
        }
    }
}

/// Reads the verified client's identity, registers the connection for
/// trust re-checks, and returns the HTTP/1.1 or HTTP/2 connection (as
/// negotiated by ALPN) under its deadlines; `None` if the certificate
/// cannot be read or the trust state in force no longer admits it.
///
/// Not async: the stream is taken by value and moved on, so no future keeps
/// a copy of it besides the HTTP connection's.
fn serve_verified(
    ctx: Arc<ConnectionContext>,
    stream: TlsStream,
    verified_by: &Arc<TlsState>,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: CancellationToken,
) -> Option<Serving> {
    let (_, session) = stream.get_ref();
    let identity = match session.peer_certificates().map(ClientIdentity::from_chain) {
        Some(Ok(identity)) => identity,
        Some(Err(error)) => {
            tracing::warn!(%peer, side = "client", error = %error, "verified client certificate cannot be read; closing");
            return None;
        }
        None => {
            tracing::error!(%peer, side = "proxy", "handshake completed without a client certificate; closing");
            return None;
        }
    };
    let http2 = session.alpn_protocol() == Some(b"h2");
    let chain: Arc<[CertificateDer<'static>]> = session
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let registration = ctx.live.register(
        peer,
        identity.serial.clone(),
        identity.subject.clone(),
        chain.clone(),
    );
    // A trust change (reload, CRL update) put in force after the handshake
    // began re-checked the open connections without this one; from now on
    // it is registered and every later change re-checks it. Check it here
    // against the state in force now.
    let current = ctx.tls.load_full();
    if !Arc::ptr_eq(&current, verified_by)
        && let Err(error) = current.verify_client_chain(&chain)
    {
        let reason = RefusalReason::from_tls_error(&error);
        ctx.shared
            .metrics
            .connections_closed_by_trust_change
            .record(reason);
        tracing::warn!(
            %peer, serial = %identity.serial, subject = %identity.subject,
            reason = reason.as_str(),
            "client certificate no longer admitted; connection closed"
        );
        return None;
    }
    ctx.shared.metrics.handshakes_completed.inc();
    tracing::debug!(
        %peer, subject = %identity.subject, serial = %identity.serial,
        protocol = if http2 { "h2" } else { "http/1.1" }, "client verified"
    );

    let activity = Activity::new(Deadlines {
        header_read_timeout: ctx.limits.header_read_timeout,
        idle_timeout: ctx.limits.idle_timeout,
        stall_timeout: ctx.stall_timeout,
        bytes_start_a_request: !http2,
        park_after: (!http2).then_some(PARK_AFTER),
    });
    let info = Arc::new(ConnectionInfo {
        peer,
        local_port: local.port(),
        headers: ConnectionHeaders::new(&identity, peer.ip()),
        audit: ConnectionFields::new(
            peer,
            &identity.subject,
            &identity.serial,
            &identity.fingerprint,
        ),
        activity: activity.clone(),
    });
    let io = TokioIo::new(MonitoredIo::new(stream, activity.clone()));
    let service = Handler {
        shared: ctx.shared.clone(),
        info,
    };

    let limits = &ctx.limits;
    let header_limit = u32::try_from(limits.max_header_size.get()).unwrap_or(u32::MAX);
    if http2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(header_limit)
            .max_concurrent_streams(limits.max_streams_per_connection);
        let mut conn = Box::pin(builder.serve_connection(io, service));
        Some(Box::pin(async move {
            let revoked = registration.closed();
            drive(&ctx, conn.as_mut(), &activity, peer, &shutdown, revoked).await;
        }))
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The connection's own watchdog enforces header_read_timeout, so
            // that it starts with a request's first byte, not at idle.
            .header_read_timeout(None)
            .max_header_size(limits.max_header_size.get());
        let conn = Box::new(builder.serve_connection(io, service));
        let http1 = Http1 {
            ctx,
            builder,
            activity,
            peer,
            shutdown,
            registration,
        };
        Some(Box::pin(serve_http1(http1, conn)))
    }
}

/// What an HTTP/1.1 connection keeps across its hyper connections.
struct Http1 {
    ctx: Arc<ConnectionContext>,
    builder: http1::Builder,
    activity: Arc<Activity>,
    peer: SocketAddr,
    shutdown: CancellationToken,
    registration: Registration,
}

/// Serves an HTTP/1.1 connection, parking it whenever it has been idle for
/// [`PARK_AFTER`] and resuming it with a new hyper connection when the
/// client sends again.
///
/// The hyper connection comes in a box and is moved out of it when the
/// connection is parked, so that a parked connection holds none of hyper's
/// state.
async fn serve_http1(http1: Http1, mut conn: Box<Http1Connection>) {
    let Http1 {
        ctx,
        builder,
        activity,
        peer,
        shutdown,
        registration,
    } = &http1;
    let revoked = registration.closed();
    loop {
        let driven = drive(
            ctx,
            Pin::new(&mut *conn),
            activity,
            *peer,
            shutdown,
            revoked,
        )
        .await;
        if driven == Driven::Ended {
            return;
        }
        let Some(parked) = release(ctx, conn, *peer, shutdown, revoked).await else {
            return;
        };
        if parked.holds_a_request_start() {
            activity.request_bytes_held();
        }
        activity.parked();
        tracing::trace!(%peer, "idle connection parked");
        let Parked {
            io,
            service,
            read_ahead,
        } = parked;
        let resumed = wait_parked(ctx, io, read_ahead, activity, *peer, shutdown, revoked);
        let Some(io) = resumed.await else {
            return;
        };
        conn = Box::new(builder.serve_connection(*io, service));
    }
}

/// What a parked connection holds besides its [`Http1`] parts.
struct Parked {
    /// The stream, boxed so that the future waiting on it stays small.
    io: Box<Io>,
    /// The connection's request service.
    service: Handler,
    /// Bytes of a next request that hyper had read already, copied out of
    /// hyper's read buffer so that the buffer is freed.
    read_ahead: Bytes,
}

impl Parked {
    fn new(parts: http1::Parts<Io, Handler>) -> Self {
        Self {
            io: Box::new(parts.io),
            service: parts.service,
            read_ahead: Bytes::copy_from_slice(&parts.read_buf),
        }
    }

    /// Whether the bytes read ahead start a request (empty lines before a
    /// request do not).
    fn holds_a_request_start(&self) -> bool {
        self.read_ahead.iter().any(|b| !matches!(b, b'\r' | b'\n'))
    }
}

/// Ends an idle hyper connection without closing the stream and returns
/// what the parked connection holds. `None` if the connection is to close
/// instead.
async fn release(
    ctx: &ConnectionContext,
    mut conn: Box<Http1Connection>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    revoked: &CancellationToken,
) -> Option<Parked> {
    // Idle: hyper closes at once. Had a request just begun, its response
    // would carry `Connection: close` and the wait would be that response's.
    Pin::new(&mut *conn).graceful_shutdown();
    let finished = tokio::select! {
        biased;
        () = revoked.cancelled() => return None,
        finished = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => finished,
        () = shutdown.cancelled() => return None,
        () = tokio::time::sleep(ctx.stall_timeout) => return None,
    };
    match finished {
        Ok(()) => Some(Parked::new(conn.into_parts())),
        Err(error) => {
            log_connection_error(peer, &error);
            None
        }
    }
}

/// Holds a parked connection until its client sends again, its idle time
/// runs out, its certificate is no longer admitted or the proxy shuts down.
/// Returns the stream with the bytes read so far put back in front, for a
/// new hyper connection.
async fn wait_parked(
    ctx: &ConnectionContext,
    mut io: Box<Io>,
    read_ahead: Bytes,
    activity: &Activity,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    revoked: &CancellationToken,
) -> Option<Box<Io>> {
    let _parked = ParkedGauge::new(&ctx.shared.metrics);
    let stream = io.inner_mut();
    let mut first = [0u8; PARKED_READ];
    let read = tokio::select! {
        biased;
        () = revoked.cancelled() => return None,
        read = async {
            stream.flush().await?;
            stream.read(&mut first).await
        } => read,
        expiry = activity.expired() => {
            log_expiry(ctx, peer, expiry);
            return None;
        }
        () = shutdown.cancelled() => {
            // As hyper ends an idle connection at shutdown: close_notify,
            // then the end of the TCP stream.
            let _ = tokio::time::timeout(ctx.limits.shutdown_grace, stream.shutdown()).await;
            return None;
        }
    };
    let n = match read {
        Ok(0) => {
            tracing::debug!(%peer, "parked connection closed by the client");
            return None;
        }
        Ok(n) => n,
        Err(error) => {
            tracing::debug!(%peer, side = "client", %error, "parked connection ended");
            return None;
        }
    };
    let mut unread = BytesMut::with_capacity(read_ahead.len() + n);
    unread.extend_from_slice(&read_ahead);
    unread.extend_from_slice(&first[..n]);
    stream.unread(unread.freeze());
    tracing::trace!(%peer, "parked connection resumed");
    Some(io)
}

/// Counts a connection as parked while alive.
struct ParkedGauge<'a>(&'a ProxyMetrics);

impl<'a> ParkedGauge<'a> {
    fn new(metrics: &'a ProxyMetrics) -> Self {
        metrics.connections_parked.inc();
        Self(metrics)
    }
}

impl Drop for ParkedGauge<'_> {
    fn drop(&mut self) {
        self.0.connections_parked.dec();
    }
}

/// What ends a connection before it ends by itself.
enum Stop {
    Revoked,
    Expired(Expiry),
    Shutdown,
}

/// How [`drive`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driven {
    /// The connection is closed or to be closed.
    Ended,
    /// The connection has been idle long enough to be parked.
    Idle,
}

/// Runs `conn` until it ends, its deadline passes, its certificate is no
/// longer admitted (then at once), shutdown (then gracefully, for at most
/// `limits.shutdown_grace`), or it is to be parked.
async fn drive<C>(
    ctx: &ConnectionContext,
    mut conn: Pin<&mut C>,
    activity: &Activity,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    revoked: &CancellationToken,
) -> Driven
where
    C: GracefulConnection<Error = hyper::Error>,
{
    let stop = async {
        tokio::select! {
            biased;
            () = revoked.cancelled() => Stop::Revoked,
            expiry = activity.expired() => Stop::Expired(expiry),
            () = shutdown.cancelled() => Stop::Shutdown,
        }
    };
    let result = match Supervised::new(conn.as_mut(), stop).await {
        Ended::Completed(result) => result,
        // Dropping the connection closes the socket and abandons requests in
        // progress: a revoked certificate gets no further byte.
        Ended::Stopped(Stop::Revoked) => return Driven::Ended,
        Ended::Stopped(Stop::Expired(Expiry::Park)) => return Driven::Idle,
        Ended::Stopped(Stop::Expired(expiry)) => {
            log_expiry(ctx, peer, expiry);
            return Driven::Ended;
        }
        Ended::Stopped(Stop::Shutdown) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(ctx.limits.shutdown_grace, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(%peer, "connection closed at shutdown with requests in progress");
                    return Driven::Ended;
                }
            }
        }
    };
    if let Err(error) = result {
        log_connection_error(peer, &error);
    }
    Driven::Ended
}

fn log_expiry(ctx: &ConnectionContext, peer: SocketAddr, expiry: Expiry) {
    match expiry {
        Expiry::HeaderTimeout => {
            ctx.shared.metrics.header_timeouts.inc();
            tracing::warn!(
                %peer, side = "client", timeout = ?ctx.limits.header_read_timeout,
                "request headers not received in time; connection closed"
            );
        }
        Expiry::Idle => tracing::debug!(%peer, "idle connection closed"),
        Expiry::Stalled => tracing::info!(
            %peer, side = "client", timeout = ?ctx.stall_timeout,
            "no data moved on a busy connection; connection closed"
        ),
        Expiry::Park => tracing::debug!(%peer, "connection closed instead of parked"),
    }
}

fn log_connection_error(peer: SocketAddr, error: &hyper::Error) {
    if error.is_parse() || error.is_parse_too_large() {
        tracing::warn!(%peer, side = "client", error = %ErrorChain(error), "malformed request; answered 4xx and closed");
    } else if error.is_user() {
        tracing::error!(%peer, side = "proxy", error = %ErrorChain(error), "connection failed");
    } else {
        tracing::debug!(%peer, side = "client", error = %ErrorChain(error), "connection ended");
    }
}

fn refuse(
    ctx: &ConnectionContext,
    state: &TlsState,
    peer: SocketAddr,
    reason: RefusalReason,
    error: Option<&io::Error>,
) {
    ctx.shared.metrics.refusals.record(reason);
    if reason == RefusalReason::CrlExpired {
        state.crl_monitor.report_refused_for_expiry();
    }
    let went_away = error.is_some_and(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
        )
    });
    let detail = error
        .map(|e| e.to_string())
        .unwrap_or_else(|| format!("not completed within {:?}", ctx.limits.handshake_timeout));
    if reason.is_peer_misbehaviour() && !went_away {
        tracing::warn!(%peer, reason = reason.as_str(), %detail, "TLS handshake refused");
    } else {
        tracing::info!(%peer, reason = reason.as_str(), %detail, "TLS handshake refused");
    }
}
