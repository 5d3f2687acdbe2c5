//! One client connection: TLS handshake (refusals logged and counted), then
//! HTTP/1.1 or HTTP/2 as negotiated by ALPN, under the connection's deadlines.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, Deadlines, Expiry, MonitoredIo};
use super::identity::{ClientIdentity, ConnectionHeaders};
use super::live::LiveConnections;
use super::service::{ConnectionInfo, ErrorChain, Shared, handle};
use super::supervised::{Ended, Supervised};
use crate::audit::ConnectionFields;
use crate::config::LimitsConfig;
use crate::tls::{RefusalReason, SharedTlsState, TlsState};

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
pub(crate) async fn serve_connection(
    ctx: Arc<ConnectionContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: CancellationToken,
) {
    let state = ctx.tls.load_full();
    let acceptor = TlsAcceptor::from(state.server_config.clone());
    let handshake = tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(tcp));
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        () = shutdown.cancelled() => return,
    };
    let stream = match outcome {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return refuse(
                &ctx,
                &state,
                peer,
                RefusalReason::classify(&error),
                Some(&error),
            );
        }
        Err(_elapsed) => return refuse(&ctx, &state, peer, RefusalReason::Timeout, None),
    };

    let (_, session) = stream.get_ref();
    let identity = match session.peer_certificates().map(ClientIdentity::from_chain) {
        Some(Ok(identity)) => identity,
        Some(Err(error)) => {
            tracing::warn!(%peer, side = "client", error = %error, "verified client certificate cannot be read; closing");
            return;
        }
        None => {
            tracing::error!(%peer, side = "proxy", "handshake completed without a client certificate; closing");
            return;
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
        chain,
    );
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
    let shared = ctx.shared.clone();
    let service = service_fn(move |request| handle(shared.clone(), info.clone(), request));

    let limits = &ctx.limits;
    let header_limit = u32::try_from(limits.max_header_size.get()).unwrap_or(u32::MAX);
    if http2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(header_limit)
            .max_concurrent_streams(limits.max_streams_per_connection);
        drive(
            &ctx,
            builder.serve_connection(io, service),
            &activity,
            peer,
            &shutdown,
            registration.closed(),
        )
        .await;
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The connection's own watchdog enforces header_read_timeout, so
            // that it starts with a request's first byte, not at idle.
            .header_read_timeout(None)
            .max_header_size(limits.max_header_size.get());
        drive(
            &ctx,
            builder.serve_connection(io, service),
            &activity,
            peer,
            &shutdown,
            registration.closed(),
        )
        .await;
    }
}

/// What ends a connection before it ends by itself.
enum Stop {
    Revoked,
    Expired(Expiry),
    Shutdown,
}

/// Runs `conn` until it ends, its deadline passes, its certificate is no
/// longer admitted (then at once) or shutdown (then gracefully, for at most
/// `limits.shutdown_grace`).
async fn drive<C>(
    ctx: &ConnectionContext,
    conn: C,
    activity: &Activity,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    revoked: &CancellationToken,
) where
    C: GracefulConnection<Error = hyper::Error>,
{
    tokio::pin!(conn);
    let stop = async {
        tokio::select! {
            biased;
            () = revoked.cancelled() => Stop::Revoked,
            expiry = activity.expired() => Stop::Expired(expiry),
            () = shutdown.cancelled() => Stop::Shutdown,
        }
    };
    let ended = Supervised::new(conn.as_mut(), stop).await;
    let result = match ended {
        Ended::Completed(result) => result,
        // Dropping the connection closes the socket and abandons requests in
        // progress: a revoked certificate gets no further byte.
        Ended::Stopped(Stop::Revoked) => return,
        Ended::Stopped(Stop::Expired(expiry)) => return log_expiry(ctx, peer, expiry),
        Ended::Stopped(Stop::Shutdown) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(ctx.limits.shutdown_grace, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(%peer, "connection closed at shutdown with requests in progress");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        log_connection_error(peer, &error);
    }
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
