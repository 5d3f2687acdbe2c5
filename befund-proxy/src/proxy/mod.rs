//! The mTLS reverse proxy: accepts HTTPS from verified clients and forwards
//! their requests, with the identity from their certificate, to the
//! Befundserver.
//!
//! Start-up is split so the daemon can order it: [`Proxy::load`] reads the
//! certificates, keys, CRLs, secret and audit file; [`Proxy::bind`] binds the
//! listening sockets (still privileged); after dropping privileges the daemon
//! calls [`BoundProxy::serve`], which accepts on the caller's runtime and
//! serves each connection on one of the proxy's worker threads
//! ([`workers`]).

pub mod activity;
pub mod authority;
mod connection;
mod crl_watch;
pub mod identity;
pub mod live;
pub mod metrics;
mod pool;
mod service;
mod supervised;
pub mod upstream;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::connection::{ConnectionContext, serve_connection};
pub use self::identity::{ClientIdentity, IdentityHeaders};
pub use self::live::LiveConnections;
pub use self::metrics::{ProxyMetrics, Side};
pub use self::pool::{PooledBody, UpstreamBody};
use self::service::Shared;
pub use self::upstream::Upstream;
pub use self::workers::WorkerProbe;
use self::workers::Workers;
use crate::audit::AuditLog;
use crate::config::{Config, ConfigError, LimitsConfig};
use crate::tls::{SharedTlsState, TlsState, TlsStateCell};

/// Listen backlog: enough for bursts of connects while staying far below
/// the kernel's default somaxconn.
const LISTEN_BACKLOG: i32 = 1024;

/// Least time between two "connection limit reached" warnings.
const OVER_LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Longest time between two re-checks of the CRL dates.
const CRL_RECHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration or a file it names is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `tls.listen`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection worker threads could not be started.
    #[error("cannot start the connection workers: {0}")]
    Workers(#[source] std::io::Error),
    /// A bound socket could not be registered with the runtime.
    #[error("cannot serve on {addr}: {source}")]
    Register {
        /// The bound address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A proxy with everything loaded, not yet listening.
#[derive(Debug)]
pub struct Proxy {
    tls: SharedTlsState,
    shared: Shared,
    live: Arc<LiveConnections>,
    listen: Vec<SocketAddr>,
    limits: LimitsConfig,
    stall_timeout: Duration,
    /// Connection worker threads.
    workers: NonZeroUsize,
    /// Whether those threads still run their tasks.
    probe: WorkerProbe,
}

impl Proxy {
    /// Loads the TLS state, the upstream client, the identity secret and the
    /// audit log named in `config`.
    pub fn load(config: &Config) -> Result<Self, ProxyError> {
        let tls = TlsState::load(config)?;
        let cert = &tls.server_certificate;
        tracing::info!(
            subject = %cert.subject, issuer = %cert.issuer, key = %cert.key,
            not_after = %humantime::format_rfc3339_seconds(cert.not_after),
            "server certificate loaded"
        );
        tracing::info!(
            client_cas = ?tls.client_cas, crls = tls.crl_monitor.crls().len(),
            crl_expired = config.tls.crl_expired.as_str(), "client certificate policy loaded"
        );
        tls.crl_monitor.log_standing(SystemTime::now());

        let upstream = Upstream::load(config)?;
        let identity_headers = IdentityHeaders::load(config)?;
        let audit = AuditLog::open(config)?;
        let shared = Shared {
            server_name: config.tls.server_name.clone(),
            identity_headers,
            upstream,
            audit: Arc::new(audit),
            metrics: Arc::new(ProxyMetrics::default()),
        };
        Ok(Self {
            tls: Arc::new(TlsStateCell::new(tls)),
            shared,
            live: Arc::new(LiveConnections::default()),
            listen: config.tls.listen.clone(),
            limits: config.limits.clone(),
            stall_timeout: config.upstream.response_timeout + config.limits.idle_timeout,
            workers: config.runtime.connection_workers(),
            probe: WorkerProbe::default(),
        })
    }

    /// The TLS state in force; store a new one to reload certificates and CRLs.
    pub fn tls_state(&self) -> SharedTlsState {
        self.tls.clone()
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        self.shared.metrics.clone()
    }

    /// The open verified connections.
    pub fn live(&self) -> Arc<LiveConnections> {
        self.live.clone()
    }

    /// The Befundserver's `host:port`, for reachability checks.
    pub fn upstream_authority(&self) -> String {
        self.shared.upstream.authority()
    }

    /// Binds every address of `tls.listen`. Needs no async runtime, so it can
    /// run before privileges are dropped.
    pub fn bind(self) -> Result<BoundProxy, ProxyError> {
        let mut listeners = Vec::with_capacity(self.listen.len());
        for addr in &self.listen {
            let listener = bind_socket(*addr).map_err(|source| ProxyError::Bind {
                addr: *addr,
                source,
            })?;
            let local = listener.local_addr().map_err(|source| ProxyError::Bind {
                addr: *addr,
                source,
            })?;
            tracing::info!(addr = %local, "listening for HTTPS");
            listeners.push((local, listener));
        }
        Ok(BoundProxy {
            proxy: self,
            listeners,
        })
    }
}

fn bind_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]:443` next to `0.0.0.0:443` must not claim IPv4 as well.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A proxy with its sockets bound.
#[derive(Debug)]
pub struct BoundProxy {
    proxy: Proxy,
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
}

impl BoundProxy {
    /// The bound addresses (with the actual port where `tls.listen` said 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(addr, _)| *addr).collect()
    }

    /// The TLS state in force; store a new one to reload certificates and CRLs.
    pub fn tls_state(&self) -> SharedTlsState {
        self.proxy.tls_state()
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        self.proxy.metrics()
    }

    /// The open verified connections.
    pub fn live(&self) -> Arc<LiveConnections> {
        self.proxy.live()
    }

    /// The Befundserver's `host:port`, for reachability checks.
    pub fn upstream_authority(&self) -> String {
        self.proxy.upstream_authority()
    }

    /// Asks the connection worker threads, once serving, whether they still
    /// run their tasks (for the service manager's watchdog).
    pub fn worker_probe(&self) -> WorkerProbe {
        self.proxy.probe.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets requests
    /// in progress finish for up to `limits.shutdown_grace` and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let Self { proxy, listeners } = self;
        let workers = proxy.workers.get();
        let contexts = (0..workers)
            .map(|_| {
                Arc::new(ConnectionContext {
                    shared: Arc::new(proxy.shared.for_worker(workers)),
                    tls: proxy.tls.clone(),
                    limits: proxy.limits.clone(),
                    stall_timeout: proxy.stall_timeout,
                    live: proxy.live.clone(),
                })
            })
            .collect();
        let workers = Arc::new(Workers::start(contexts).map_err(ProxyError::Workers)?);
        proxy.probe.set(workers.runtimes());
        tracing::info!(threads = workers.len(), "connection workers started");
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(proxy.limits.max_connections.get()));
        let over_limit = Arc::new(OverLimitLog::default());

        for (addr, listener) in listeners {
            let listener = TcpListener::from_std(listener)
                .map_err(|source| ProxyError::Register { addr, source })?;
            let accept = AcceptLoop {
                listener,
                addr,
                workers: workers.clone(),
                metrics: proxy.shared.metrics.clone(),
                max_connections: proxy.limits.max_connections.get(),
                cancel: cancel.clone(),
                tracker: tracker.clone(),
                permits: permits.clone(),
                over_limit: over_limit.clone(),
            };
            tracker.spawn(accept.run());
        }
        tracker.spawn(watch_crls(proxy.tls.clone(), cancel.clone()));
        tracker.spawn(crl_watch::watch_files(
            proxy.tls.clone(),
            proxy.shared.metrics.clone(),
            cancel.clone(),
        ));
        tracker.spawn(recheck_on_trust_change(
            proxy.tls.clone(),
            proxy.live.clone(),
            proxy.shared.metrics.clone(),
            cancel.clone(),
        ));

        shutdown.await;
        tracing::info!(grace = ?proxy.limits.shutdown_grace, "shutting down: no new connections");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        proxy.probe.set(Vec::new());
        if let Some(workers) = Arc::into_inner(workers) {
            workers.stop().await;
        }
        tracing::info!("proxy stopped");
        Ok(())
    }
}

struct AcceptLoop {
    listener: TcpListener,
    addr: SocketAddr,
    workers: Arc<Workers>,
    metrics: Arc<ProxyMetrics>,
    max_connections: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    permits: Arc<Semaphore>,
    over_limit: Arc<OverLimitLog>,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                () = self.cancel.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(addr = %self.addr, error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.metrics.connections_over_limit.inc();
                drop(tcp);
                self.over_limit.note(peer, self.max_connections);
                continue;
            };
            self.metrics.connections_accepted.inc();
            self.metrics.connections_open.inc();
            let _ = tcp.set_nodelay(true);
            let local = tcp.local_addr().unwrap_or(self.addr);
            // Registered again on the worker's runtime, which polls it from now on.
            let tcp = match tcp.into_std() {
                Ok(tcp) => tcp,
                Err(error) => {
                    tracing::warn!(%peer, error = %error, "cannot hand the connection to a worker");
                    self.metrics.connections_open.dec();
                    continue;
                }
            };
            let cancel = self.cancel.clone();
            let metrics = self.metrics.clone();
            self.workers.spawn(|ctx| {
                self.tracker.track_future(async move {
                    if let Ok(tcp) = TcpStream::from_std(tcp) {
                        serve_connection(ctx, tcp, peer, local, cancel).await;
                    }
                    metrics.connections_open.dec();
                    drop(permit);
                })
            });
        }
    }
}

/// Rate-limits the warning about connections closed at the limit.
#[derive(Debug, Default)]
struct OverLimitLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl OverLimitLog {
    fn note(&self, peer: SocketAddr, max_connections: usize) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|t| t.elapsed() < OVER_LIMIT_LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        tracing::warn!(
            %peer, max_connections, closed_since_last_warning = *suppressed,
            "connection limit reached; closing new connections"
        );
        *last = Some(Instant::now());
        *suppressed = 0;
    }
}

/// Closes the open connections that a new trust state no longer admits.
async fn recheck_on_trust_change(
    tls: SharedTlsState,
    live: Arc<LiveConnections>,
    metrics: Arc<ProxyMetrics>,
    cancel: CancellationToken,
) {
    let mut changes = tls.subscribe();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let state = tls.load_full();
        let registry = live.clone();
        // Verifying many chains costs signature checks: keep them off the
        // threads that serve connections.
        let (checked, closed) = match tokio::task::spawn_blocking(move || registry.recheck(&state))
            .await
        {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(side = "proxy", error = %e, "re-checking open connections failed");
                continue;
            }
        };
        for c in &closed {
            metrics.connections_closed_by_trust_change.record(c.reason);
            tracing::warn!(
                peer = %c.peer, serial = %c.serial, subject = %c.subject, reason = c.reason.as_str(),
                "client certificate no longer admitted; connection closed"
            );
        }
        tracing::info!(
            checked,
            closed = closed.len(),
            "open connections re-checked against the new trust state"
        );
    }
}

/// Logs CRLs that are about to expire or have expired: when their standing
/// changes and every few hours while it lasts.
async fn watch_crls(tls: SharedTlsState, cancel: CancellationToken) {
    loop {
        let now = SystemTime::now();
        let next = tls.load().crl_monitor.next_change(now);
        let wait = next
            .and_then(|t| t.duration_since(now).ok())
            .map_or(CRL_RECHECK_INTERVAL, |d| {
                (d + Duration::from_secs(1)).min(CRL_RECHECK_INTERVAL)
            });
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        tls.load().crl_monitor.log_standing(SystemTime::now());
    }
}
