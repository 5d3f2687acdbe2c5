//! The admin listener: plain HTTP on `[admin] listen` (loopback or the lab
//! side, never the WAN), serving
//!
//! - `GET /healthz`: 200 `{"status":"ok",...}` when the filter is attached,
//!   the HTTPS listeners serve and the Befundserver accepts connections;
//!   503 with the failed checks otherwise;
//! - `GET /metrics`: Prometheus text format;
//! - `GET /status`: the daemon's pid and the outcome of the last reload
//!   (`befundctl reload` reads it to report whether the reload applied).

pub mod health;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::health::Health;

/// How long the admin listener waits for a request head.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The outcome of one reload, as `/status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// Whether the new configuration is in force.
    pub applied: bool,
    /// What was reloaded, or why nothing changed.
    pub message: String,
    /// When it finished, RFC 3339.
    pub at: String,
}

/// What `/status` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's process id.
    pub pid: u32,
    /// Reloads attempted since start.
    pub reloads: u64,
    /// The last reload's outcome.
    pub last_reload: Option<ReloadOutcome>,
}

/// The daemon's status, updated by reloads.
#[derive(Debug)]
pub struct StatusBoard(Mutex<Status>);

impl Default for StatusBoard {
    fn default() -> Self {
        Self(Mutex::new(Status {
            pid: std::process::id(),
            ..Status::default()
        }))
    }
}

impl StatusBoard {
    /// Records a finished reload.
    pub fn record_reload(&self, applied: bool, message: String) {
        let mut status = self.0.lock().unwrap_or_else(|p| p.into_inner());
        status.reloads += 1;
        status.last_reload = Some(ReloadOutcome {
            applied,
            message,
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        });
    }

    /// The current status.
    pub fn get(&self) -> Status {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Everything the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// The health checks.
    pub health: Arc<Health>,
    /// The metrics registry.
    pub registry: Registry,
    /// The daemon's status.
    pub status: Arc<StatusBoard>,
}

/// Binds the admin listener (before privileges are dropped).
///
/// # Errors
///
/// The bind error.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the admin endpoints until `cancel`.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "admin listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &request).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                result = conn => if let Err(error) = result {
                    tracing::debug!(%peer, error = %error, "admin connection ended");
                },
                () = cancel.cancelled() => {}
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn route(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => {
            let report = state.health.check().await;
            let status = if report.healthy() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &report)
        }
        "/metrics" => match metrics::encode(&state.registry) {
            Ok(body) => with_type(StatusCode::OK, metrics::CONTENT_TYPE, body),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
        },
        "/status" => json(StatusCode::OK, &state.status.get()),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    body.push('\n');
    with_type(status, "application/json", body)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.to_owned())
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
