//! The idle HTTP/1.1 connections to the Befundserver, kept for reuse.
//!
//! A connection is lent for one request and comes back when that request's
//! response body has arrived completely ([`PooledBody`]). While it is lent,
//! the task that sends the request and reads the response also drives the
//! connection (writes the request, reads the response): the request's
//! bytes and the response's bytes are moved by the client connection's own
//! task, with no hand-over to another task in between. One that is not
//! ready for the next request by then (the Befundserver answered before the
//! request body was sent) is driven by a task of its own until it is. A
//! response body abandoned halfway takes its connection with it: dropping
//! it closes the connection. Idle connections are closed after the idle
//! timeout or when the Befundserver closes them (noticed when the reaper
//! looks at them), at most `max_idle` are kept, and the most recently used
//! goes out first.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::rt::{Read, Write};
use tokio::time::Instant;

use super::activity::RequestBody;

/// The sending half of one connection to the Befundserver, for requests
/// with bodies of type `B` (the clients' request bodies).
pub(crate) type Sender<B = RequestBody> = SendRequest<B>;

/// What a connection to the Befundserver runs on.
pub trait Io: Read + Write + Unpin + Send + 'static {}
impl<T: Read + Write + Unpin + Send + 'static> Io for T {}

/// Request bodies a pooled connection can send.
pub trait SendBody:
    Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}
impl<B> SendBody for B where
    B: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

/// One connection to the Befundserver: the handle requests are sent with,
/// and the connection itself, which moves the bytes whenever it is polled.
pub(crate) struct UpstreamConn<T: Io, B: SendBody = RequestBody> {
    sender: Sender<B>,
    /// `None` once the connection has ended. Boxed: the connection's state
    /// is large, and this handle moves several times per request (into the
    /// response body, back into the pool).
    connection: Option<Box<Connection<T, B>>>,
}

impl<T: Io, B: SendBody> std::fmt::Debug for UpstreamConn<T, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn")
            .field("ended", &self.connection.is_none())
            .finish_non_exhaustive()
    }
}

impl<T: Io, B: SendBody> UpstreamConn<T, B> {
    /// The two halves from a handshake.
    pub(crate) fn new(sender: Sender<B>, connection: Connection<T, B>) -> Self {
        Self {
            sender,
            connection: Some(Box::new(connection)),
        }
    }

    /// Sends `request` and waits for the response head, driving the
    /// connection meanwhile. A request the connection closed before sending
    /// comes back in the error.
    pub(crate) async fn send(
        &mut self,
        request: http::Request<B>,
    ) -> Result<http::Response<Incoming>, TrySendError<http::Request<B>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            // The connection first: it writes the request and reads the
            // response, if it has arrived, so one pass usually suffices.
            let ended = self.drive(cx);
            // Only driving the connection (above) delivers the response, so
            // the response need not wake this task: a wake from within its
            // own poll would only poll the whole client connection again.
            if ended {
                response.as_mut().poll(cx)
            } else {
                response
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
            }
        })
        .await
    }

    /// Moves what bytes can be moved now; afterwards `cx` is woken when
    /// more can. Returns whether the connection has ended.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(connection) = self.connection.as_mut() else {
            return true;
        };
        match Pin::new(&mut **connection).poll(cx) {
            Poll::Pending => false,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(side = "upstream", error = %error, "befundserver connection ended");
                }
                self.connection = None;
                true
            }
        }
    }

    /// Whether the connection can take a request now.
    fn is_ready(&self) -> bool {
        self.connection.is_some() && self.sender.is_ready()
    }

    /// Whether the connection has ended or cannot be used again.
    fn is_closed(&self) -> bool {
        self.connection.is_none() || self.sender.is_closed()
    }

    /// Drives the connection until it can take the next request; `false`
    /// when it ended instead.
    async fn settle(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            let ended = self.drive(cx);
            if self.sender.is_ready() {
                return Poll::Ready(!ended);
            }
            match self.sender.poll_ready(cx) {
                Poll::Ready(result) => Poll::Ready(result.is_ok() && !ended),
                Poll::Pending if ended => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// The idle connections.
#[derive(Debug)]
pub(crate) struct Pool<T: Io, B: SendBody = RequestBody> {
    idle: Mutex<Idle<T, B>>,
    max_idle: usize,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle<T: Io, B: SendBody> {
    /// Most recently returned last.
    connections: Vec<(UpstreamConn<T, B>, Instant)>,
    /// Whether a task is closing expired connections.
    reaper: bool,
}

impl<T: Io, B: SendBody> Pool<T, B> {
    /// Keeps up to `max_idle` connections for up to `idle_timeout` each.
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Idle {
                connections: Vec::new(),
                reaper: false,
            }),
            max_idle,
            idle_timeout,
        })
    }

    /// Most idle connections kept.
    pub(crate) fn max_idle(&self) -> usize {
        self.max_idle
    }

    /// How long an idle connection is kept.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    fn lock(&self) -> MutexGuard<'_, Idle<T, B>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection ready for a request, the most recently used one.
    /// Closed and expired ones met on the way are dropped, which closes them.
    pub(crate) fn checkout(&self) -> Option<UpstreamConn<T, B>> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.lock();
            loop {
                match idle.connections.pop() {
                    Some((upstream, since))
                        if upstream.is_ready() && since.elapsed() < self.idle_timeout =>
                    {
                        break Some(upstream);
                    }
                    Some((upstream, _)) => stale.push(upstream),
                    None => break None,
                }
            }
        };
        drop(stale);
        found
    }

    /// Takes back a connection whose exchange is complete.
    pub(crate) fn give_back(self: &Arc<Self>, mut upstream: UpstreamConn<T, B>) {
        if self.max_idle == 0 || upstream.is_closed() {
            return;
        }
        if !upstream.is_ready() {
            // The connection still finishes the exchange (typically: the
            // request body is still going out). Keep it once it is done.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::downgrade(self);
            let timeout = self.idle_timeout;
            runtime.spawn(async move {
                let ready = tokio::time::timeout(timeout, upstream.settle()).await;
                if let (Ok(true), Some(pool)) = (ready, pool.upgrade()) {
                    pool.keep(upstream);
                }
            });
            return;
        }
        self.keep(upstream);
    }

    fn keep(self: &Arc<Self>, mut upstream: UpstreamConn<T, B>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Driven once more without a waker, the connection forgets the task
        // that last drove it: the next request would otherwise wake that
        // task (another client's) for nothing.
        if upstream.drive(&mut Context::from_waker(Waker::noop())) || !upstream.is_ready() {
            return;
        }
        let mut idle = self.lock();
        if idle.connections.len() >= self.max_idle {
            return;
        }
        idle.connections.push((upstream, Instant::now()));
        if !idle.reaper {
            idle.reaper = true;
            runtime.spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Drops the connections idle for `idle_timeout` or closed (by the
    /// Befundserver too: each is driven once to notice); returns whether any
    /// are left.
    fn reap_expired(&self) -> bool {
        let timeout = self.idle_timeout;
        let mut idle = self.lock();
        // Nothing waits on an idle connection: whoever lends it next drives
        // it with their own waker.
        let mut cx = Context::from_waker(Waker::noop());
        let mut expired = Vec::new();
        let mut kept = Vec::with_capacity(idle.connections.len());
        for (mut upstream, since) in std::mem::take(&mut idle.connections) {
            let ended = upstream.drive(&mut cx);
            if ended || upstream.is_closed() || since.elapsed() >= timeout {
                expired.push(upstream);
            } else {
                kept.push((upstream, since));
            }
        }
        idle.connections = kept;
        let any_left = !idle.connections.is_empty();
        idle.reaper = any_left;
        drop(idle);
        drop(expired);
        any_left
    }

    /// Number of idle connections.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().connections.len()
    }
}

/// Closes expired idle connections while there are any.
async fn reap<T: Io, B: SendBody>(pool: Weak<Pool<T, B>>, idle_timeout: Duration) {
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
    /// A response body from the Befundserver that drives its connection
    /// while it is read and returns the connection to the pool once it has
    /// arrived completely.
    pub struct PooledBody<T, B>
    where
        T: Io,
        B: SendBody,
    {
        #[pin]
        inner: Incoming,
        lent: Option<Lent<T, B>>,
    }

    impl<T, B> PinnedDrop for PooledBody<T, B>
    where
        T: Io,
        B: SendBody,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.inner.is_end_stream() {
                give_back(this.lent);
            }
        }
    }
}

impl<T: Io, B: SendBody> std::fmt::Debug for PooledBody<T, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A connection lent out, and the pool it goes back to.
type Lent<T, B> = (UpstreamConn<T, B>, Arc<Pool<T, B>>);

/// A response body from the Befundserver, for a client's request.
pub type UpstreamBody = PooledBody<super::upstream::UpstreamIo, RequestBody>;

fn give_back<T: Io, B: SendBody>(lent: &mut Option<Lent<T, B>>) {
    if let Some((upstream, pool)) = lent.take() {
        pool.give_back(upstream);
    }
}

impl<T: Io, B: SendBody> PooledBody<T, B> {
    /// `inner`, received on `upstream`, lent from `pool`.
    pub(crate) fn new(
        inner: Incoming,
        upstream: UpstreamConn<T, B>,
        pool: Arc<Pool<T, B>>,
    ) -> Self {
        Self {
            inner,
            lent: Some((upstream, pool)),
        }
    }
}

impl<T: Io, B: SendBody> Body for PooledBody<T, B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        // The connection first: it moves the body's next bytes, if any
        // have arrived, into `inner`. As long as it runs, only it fills
        // `inner`, so `inner` need not wake the task (see `send`).
        let driven = match this.lent.as_mut() {
            Some((upstream, _)) => !upstream.drive(cx),
            None => false,
        };
        let result = if driven {
            let mut quiet = Context::from_waker(Waker::noop());
            this.inner.as_mut().poll_frame(&mut quiet)
        } else {
            this.inner.as_mut().poll_frame(cx)
        };
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
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

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

        /// A Befundserver that answers one request per connection and closes
        /// it once `close` is cancelled, without having said so beforehand
        /// (no `Connection: close`), as one does when its keep-alive timeout
        /// passes.
        async fn start_closing_after_one_request(close: CancellationToken) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let open = Arc::new(AtomicUsize::new(0));
            let (a, o) = (accepted.clone(), open.clone());
            tokio::spawn(async move {
                loop {
                    let (mut tcp, _) = listener.accept().await.unwrap();
                    a.fetch_add(1, Ordering::Relaxed);
                    o.fetch_add(1, Ordering::Relaxed);
                    let (o, close) = (o.clone(), close.clone());
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tcp.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nxxx")
                            .await;
                        close.cancelled().await;
                        drop(tcp);
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

    type Io = TokioIo<TcpStream>;

    async fn connect(addr: SocketAddr) -> UpstreamConn<Io, Requests> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        UpstreamConn::new(sender, connection)
    }

    /// Sends one request the way the proxy does and returns the response
    /// body, not yet read.
    async fn request(pool: &Arc<Pool<Io, Requests>>, addr: SocketAddr) -> PooledBody<Io, Requests> {
        let mut upstream = match pool.checkout() {
            Some(upstream) => upstream,
            None => connect(addr).await,
        };
        let response = upstream.send(get()).await.unwrap();
        PooledBody::new(response.into_body(), upstream, pool.clone())
    }

    fn get() -> Request<Requests> {
        Request::builder()
            .uri("/")
            .header("host", "befundserver")
            .body(Empty::new())
            .unwrap()
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
    async fn idle_connection_the_befundserver_closed_gives_the_request_back_unsent() {
        let close = CancellationToken::new();
        let server = Server::start_closing_after_one_request(close.clone()).await;
        let pool = Pool::new(8, Duration::from_secs(60));
        request(&pool, server.addr).await.collect().await.unwrap();
        assert!(eventually(|| pool.idle_count() == 1).await);
        close.cancel();
        // Nothing drives an idle connection, so it is still in the pool
        // after the Befundserver closed it.
        assert!(eventually(|| server.open() == 0).await);
        assert_eq!(pool.idle_count(), 1);
        let mut upstream = pool.checkout().unwrap();
        let mut error = upstream.send(get()).await.unwrap_err();
        assert!(error.take_message().is_some(), "{error:?}");
        drop(upstream);
        // A request the caller sends again goes out on a new connection.
        request(&pool, server.addr).await.collect().await.unwrap();
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn reaper_drops_idle_connections_the_befundserver_closed() {
        let close = CancellationToken::new();
        let server = Server::start_closing_after_one_request(close.clone()).await;
        // Expiry would close the connection only after an hour.
        let pool = Pool::new(8, Duration::from_secs(3600));
        request(&pool, server.addr).await.collect().await.unwrap();
        assert!(eventually(|| pool.idle_count() == 1).await);
        close.cancel();
        assert!(eventually(|| server.open() == 0).await);
        assert!(!pool.reap_expired());
        assert_eq!(pool.idle_count(), 0);
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
