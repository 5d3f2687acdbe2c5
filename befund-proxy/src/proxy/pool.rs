//! The idle HTTP/1.1 connections to the Befundserver, kept for reuse.
//!
//! A connection is lent for one request and comes back when that request's
//! response body has arrived completely ([`UpstreamBody`]). One that is not
//! ready for the next request by then (the Befundserver answered before the
//! request body was sent) is watched until it is, by a task of its own. A
//! response body abandoned halfway takes its connection with it: hyper
//! closes it. Idle connections are closed after the idle timeout, at most
//! `max_idle` are kept, and the most recently used goes out first.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::activity::RequestBody;

/// The sending half of one connection to the Befundserver, for requests
/// with bodies of type `B` (the clients' request bodies).
pub(crate) type Sender<B = RequestBody> = SendRequest<B>;

/// The idle connections.
#[derive(Debug)]
pub(crate) struct Pool<B = RequestBody> {
    idle: Mutex<Idle<B>>,
    max_idle: usize,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle<B> {
    /// Most recently returned last.
    senders: Vec<(Sender<B>, Instant)>,
    /// Whether a task is closing expired connections.
    reaper: bool,
}

impl<B: Send + 'static> Pool<B> {
    /// Keeps up to `max_idle` connections for up to `idle_timeout` each.
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Idle {
                senders: Vec::new(),
                reaper: false,
            }),
            max_idle,
            idle_timeout,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Idle<B>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection ready for a request, the most recently used one.
    /// Closed and expired ones met on the way are dropped, which closes them.
    pub(crate) fn checkout(&self) -> Option<Sender<B>> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.lock();
            loop {
                match idle.senders.pop() {
                    Some((sender, since))
                        if sender.is_ready() && since.elapsed() < self.idle_timeout =>
                    {
                        break Some(sender);
                    }
                    Some((sender, _)) => stale.push(sender),
                    None => break None,
                }
            }
        };
        drop(stale);
        found
    }

    /// Takes back a connection whose exchange is complete.
    pub(crate) fn give_back(self: &Arc<Self>, mut sender: Sender<B>) {
        if self.max_idle == 0 || sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            // The connection still finishes the exchange (typically: the
            // request body is still going out). Keep it once it is done.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::downgrade(self);
            let timeout = self.idle_timeout;
            runtime.spawn(async move {
                let ready = tokio::time::timeout(timeout, sender.ready()).await;
                if let (Ok(Ok(())), Some(pool)) = (ready, pool.upgrade()) {
                    pool.keep(sender);
                }
            });
            return;
        }
        self.keep(sender);
    }

    fn keep(self: &Arc<Self>, sender: Sender<B>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut idle = self.lock();
        if idle.senders.len() >= self.max_idle {
            return;
        }
        idle.senders.push((sender, Instant::now()));
        if !idle.reaper {
            idle.reaper = true;
            runtime.spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Drops the connections idle for `idle_timeout` or closed; returns
    /// whether any are left.
    fn reap_expired(&self) -> bool {
        let timeout = self.idle_timeout;
        let mut idle = self.lock();
        let (kept, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut idle.senders)
            .into_iter()
            .partition(|(sender, since)| !sender.is_closed() && since.elapsed() < timeout);
        idle.senders = kept;
        let any_left = !idle.senders.is_empty();
        idle.reaper = any_left;
        drop(idle);
        drop(expired);
        any_left
    }

    /// Number of idle connections.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().senders.len()
    }
}

/// Closes expired idle connections while there are any.
async fn reap<B: Send + 'static>(pool: Weak<Pool<B>>, idle_timeout: Duration) {
    // Checking a few times per timeout bounds how long an expired
    // connection stays open to a quarter of the timeout.
    let period = (idle_timeout / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(pool) if pool.reap_expired() => {}
            _ => return,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body from the Befundserver that returns its connection to
    /// the pool once it has arrived completely.
    pub struct PooledBody<B>
    where
        B: Send,
        B: 'static,
    {
        #[pin]
        inner: Incoming,
        lent: Option<(Sender<B>, Arc<Pool<B>>)>,
    }

    impl<B> PinnedDrop for PooledBody<B>
    where
        B: Send,
        B: 'static,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.inner.is_end_stream() {
                give_back(this.lent);
            }
        }
    }
}

impl<B: Send + 'static> std::fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A response body from the Befundserver, for a client's request.
pub type UpstreamBody = PooledBody<RequestBody>;

fn give_back<B: Send + 'static>(lent: &mut Option<(Sender<B>, Arc<Pool<B>>)>) {
    if let Some((sender, pool)) = lent.take() {
        pool.give_back(sender);
    }
}

impl<B: Send + 'static> PooledBody<B> {
    /// `inner`, received on the connection of `sender`, lent from `pool`.
    pub(crate) fn new(inner: Incoming, sender: Sender<B>, pool: Arc<Pool<B>>) -> Self {
        Self {
            inner,
            lent: Some((sender, pool)),
        }
    }
}

impl<B: Send + 'static> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let result = this.inner.as_mut().poll_frame(cx);
        match &result {
            Poll::Ready(None) => give_back(this.lent),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => give_back(this.lent),
            // A broken exchange leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => drop(this.lent.take()),
            _ => {}
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
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    type Requests = Empty<Bytes>;

    /// A Befundserver that answers every request with `body_len` bytes and
    /// counts the connections it accepted and those still open.
    struct Server {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        open: Arc<AtomicUsize>,
    }

    impl Server {
        async fn start(body_len: usize) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let open = Arc::new(AtomicUsize::new(0));
            let (a, o) = (accepted.clone(), open.clone());
            tokio::spawn(async move {
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    a.fetch_add(1, Ordering::Relaxed);
                    o.fetch_add(1, Ordering::Relaxed);
                    let o = o.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |_req: Request<Incoming>| async move {
                            let body = Full::new(Bytes::from(vec![b'x'; body_len]));
                            Ok::<_, Infallible>(Response::new(body))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                        o.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            });
            Self {
                addr,
                accepted,
                open,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::Relaxed)
        }

        fn open(&self) -> usize {
            self.open.load(Ordering::Relaxed)
        }
    }

    async fn connect(addr: SocketAddr) -> Sender<Requests> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// Sends one request the way the proxy does and returns the response
    /// body, not yet read.
    async fn request(pool: &Arc<Pool<Requests>>, addr: SocketAddr) -> PooledBody<Requests> {
        let mut sender = match pool.checkout() {
            Some(sender) => sender,
            None => connect(addr).await,
        };
        let request = Request::builder()
            .uri("/")
            .header("host", "befundserver")
            .body(Empty::new())
            .unwrap();
        let response = sender.try_send_request(request).await.unwrap();
        PooledBody::new(response.into_body(), sender, pool.clone())
    }

    async fn eventually(condition: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        condition()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let server = Server::start(3).await;
        let pool = Pool::new(8, Duration::from_secs(60));
        for _ in 0..5 {
            let body = request(&pool, server.addr).await;
            assert_eq!(body.collect().await.unwrap().to_bytes().len(), 3);
            // The connection may become ready a moment after the body ended.
            assert!(eventually(|| pool.idle_count() == 1).await);
        }
        assert_eq!(server.accepted(), 1);
    }

    #[tokio::test]
    async fn body_dropped_when_complete_returns_its_connection() {
        let server = Server::start(3).await;
        let pool = Pool::new(8, Duration::from_secs(60));
        let mut body = request(&pool, server.addr).await;
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.unwrap().unwrap().is_data());
        drop(body);
        assert!(eventually(|| pool.idle_count() == 1).await);
        drop(request(&pool, server.addr).await);
        assert_eq!(server.accepted(), 1);
    }

    #[tokio::test]
    async fn body_abandoned_halfway_closes_its_connection() {
        let server = Server::start(64 * 1024).await;
        let pool = Pool::new(8, Duration::from_secs(60));
        let mut body = request(&pool, server.addr).await;
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.unwrap().unwrap().is_data());
        drop(body);
        assert!(eventually(|| server.open() == 0).await);
        assert_eq!(pool.idle_count(), 0);
        drop(request(&pool, server.addr).await);
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn no_more_than_max_idle_connections_are_kept() {
        let server = Server::start(3).await;
        let pool = Pool::new(1, Duration::from_secs(60));
        let (first, second) = (
            request(&pool, server.addr).await,
            request(&pool, server.addr).await,
        );
        assert_eq!(server.accepted(), 2);
        first.collect().await.unwrap();
        second.collect().await.unwrap();
        assert!(eventually(|| pool.idle_count() == 1 && server.open() == 1).await);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let server = Server::start(3).await;
        let pool = Pool::new(8, Duration::from_millis(200));
        request(&pool, server.addr).await.collect().await.unwrap();
        assert!(eventually(|| pool.idle_count() == 1).await);
        assert!(eventually(|| pool.idle_count() == 0 && server.open() == 0).await);
        request(&pool, server.addr).await.collect().await.unwrap();
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn pool_of_size_zero_keeps_nothing() {
        let server = Server::start(3).await;
        let pool = Pool::new(0, Duration::from_secs(60));
        request(&pool, server.addr).await.collect().await.unwrap();
        assert!(eventually(|| server.open() == 0).await);
        assert_eq!(pool.idle_count(), 0);
    }
}
