//! Per-connection deadlines that hyper does not enforce the way the proxy needs.
//!
//! A connection is in one of three phases:
//! - *reading a request head*: right after the handshake, and (HTTP/1.1) as
//!   soon as the first byte of a further request arrives; it must turn into a
//!   request within `header_read_timeout`, so a client that trickles its
//!   headers byte by byte is cut off;
//! - *busy*: at least one request is in progress (its response is being
//!   produced or sent, or its body is still arriving); the connection is cut
//!   off only if no byte moves in either direction for `stall_timeout`;
//! - *idle*: between requests; closed after `idle_timeout`. An HTTP/1.1
//!   connection idle for `park_after` is *parked* first: it gives up its
//!   HTTP state and keeps only its TLS stream until the client sends again
//!   (see `connection`), unless a response is still waiting for the client
//!   to read it, or a request body was left unread (the stream is then in
//!   the middle of a message and the connection closes instead).
//!
//! [`MonitoredIo`] reports bytes, the request service reports requests,
//! [`RequestBody`] reports the end of request bodies, and
//! [`Activity::expired`] resolves when the current phase's deadline passes.
//!
//! The watchdog sleeps until the deadline it last computed and re-checks when
//! it wakes. A change wakes it early only when it moves the deadline before
//! that time, so the bytes and requests of a busy keep-alive connection (which
//! only push the deadline later) cost no wake-up each.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a connection's deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A request head did not arrive completely in time.
    HeaderTimeout,
    /// No request for `idle_timeout`.
    Idle,
    /// Requests in progress but no byte moved for `stall_timeout`.
    Stalled,
    /// Idle for `park_after`: time to park the connection (it stays open).
    Park,
}

/// The deadlines of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Time allowed for a request head once it started.
    pub header_read_timeout: Duration,
    /// Time allowed between requests.
    pub idle_timeout: Duration,
    /// Time allowed without any byte moving while requests are in progress.
    pub stall_timeout: Duration,
    /// Whether bytes arriving between requests start the header deadline
    /// (HTTP/1.1; for HTTP/2 control frames arrive between requests too).
    pub bytes_start_a_request: bool,
    /// Idle time after which the connection is parked (`None`: never).
    pub park_after: Option<Duration>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    ReadingHead {
        since: Instant,
    },
    /// `open` responses and request bodies in progress.
    Busy {
        open: usize,
    },
    Idle {
        since: Instant,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    last_io: Instant,
    /// The time the watchdog sleeps until; never later than the deadline.
    armed: Option<Instant>,
    /// Parked in the current idle phase.
    parked: bool,
    /// The last write or flush could not complete: the client is not
    /// reading. Such a connection is not parked, as its HTTP state holds
    /// bytes still to be sent.
    write_blocked: bool,
    /// A request body was dropped before its end: the rest of it may still
    /// arrive, so the stream is not at the start of a request and the
    /// connection is never parked (the HTTP connection closes instead).
    read_abandoned: bool,
}

impl State {
    fn open_one(&mut self) {
        self.phase = match self.phase {
            Phase::Busy { open } => Phase::Busy { open: open + 1 },
            _ => Phase::Busy { open: 1 },
        };
    }

    fn close_one(&mut self, now: Instant) {
        self.phase = match self.phase {
            Phase::Busy { open } if open > 1 => Phase::Busy { open: open - 1 },
            _ => Phase::Idle { since: now },
        };
        self.parked = false;
    }

    fn may_park(&self) -> bool {
        !self.parked && !self.write_blocked && !self.read_abandoned
    }
}

/// Shared between the connection's IO, its request service and its watchdog.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
    deadlines: Deadlines,
}

impl Activity {
    /// A connection whose handshake just completed: waiting for the first request.
    pub fn new(deadlines: Deadlines) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            state: Mutex::new(State {
                phase: Phase::ReadingHead { since: now },
                last_io: now,
                armed: None,
                parked: false,
                write_blocked: false,
                read_abandoned: false,
            }),
            changed: Notify::new(),
            deadlines,
        })
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    /// Applies a change of state, and wakes the watchdog if the change moved
    /// the deadline before the time it sleeps until.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let wake = self.with_state(|s| {
            change(s);
            let (deadline, _) = self.deadline_of(s);
            match s.armed {
                Some(armed) if deadline < armed => {
                    s.armed = Some(deadline);
                    true
                }
                _ => false,
            }
        });
        if wake {
            self.changed.notify_one();
        }
    }

    fn bytes_read(&self) {
        let now = Instant::now();
        let starts_head = self.deadlines.bytes_start_a_request;
        self.update(|s| {
            s.last_io = now;
            if starts_head && matches!(s.phase, Phase::Idle { .. }) {
                s.phase = Phase::ReadingHead { since: now };
            }
        });
    }

    fn bytes_written(&self) {
        let now = Instant::now();
        // Only a busy connection's deadline depends on the last byte, and it
        // moves later: no need to wake the watchdog.
        self.with_state(|s| s.last_io = now);
    }

    /// The client stopped or resumed taking the bytes sent to it.
    fn write_blocked(&self, blocked: bool) {
        self.update(|s| s.write_blocked = blocked);
    }

    /// The connection was parked: it stays idle until `idle_timeout`.
    pub fn parked(&self) {
        self.update(|s| s.parked = true);
    }

    /// Bytes of a next request were read already when the connection was
    /// parked: the request has started, and its head must arrive within
    /// `header_read_timeout`.
    pub fn request_bytes_held(&self) {
        let now = Instant::now();
        self.update(|s| {
            if matches!(s.phase, Phase::Idle { .. }) {
                s.phase = Phase::ReadingHead { since: now };
            }
        });
    }

    /// A request head arrived and is being handled.
    pub fn request_started(&self) {
        self.update(State::open_one);
    }

    /// A response has been sent completely (or abandoned).
    pub fn request_finished(&self) {
        let now = Instant::now();
        self.update(|s| s.close_one(now));
    }

    /// A request body started to arrive; it is read until
    /// [`Self::body_finished`] or [`Self::body_abandoned`].
    fn body_started(&self) {
        self.update(State::open_one);
    }

    /// A request body arrived completely.
    fn body_finished(&self) {
        let now = Instant::now();
        self.update(|s| s.close_one(now));
    }

    /// A request body was dropped or broke before its end.
    fn body_abandoned(&self) {
        let now = Instant::now();
        self.update(|s| {
            s.read_abandoned = true;
            s.close_one(now);
        });
    }

    fn deadline_of(&self, s: &State) -> (Instant, Expiry) {
        let d = &self.deadlines;
        match s.phase {
            Phase::ReadingHead { since } => (since + d.header_read_timeout, Expiry::HeaderTimeout),
            Phase::Idle { since } => match d.park_after {
                Some(park) if s.may_park() && park < d.idle_timeout => (since + park, Expiry::Park),
                _ => (since + d.idle_timeout, Expiry::Idle),
            },
            Phase::Busy { .. } => (s.last_io + d.stall_timeout, Expiry::Stalled),
        }
    }

    /// The current deadline, which the watchdog now sleeps until.
    fn arm(&self) -> (Instant, Expiry) {
        self.with_state(|s| {
            let deadline = self.deadline_of(s);
            s.armed = Some(deadline.0);
            deadline
        })
    }

    /// Resolves once the current phase's deadline has passed.
    pub async fn expired(&self) -> Expiry {
        let (mut deadline, _) = self.arm();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    // The deadline may have moved since; expire only if the
                    // current one has passed, otherwise sleep until it.
                    let (current, expiry) = self.arm();
                    if current <= Instant::now() {
                        return expiry;
                    }
                    deadline = current;
                }
                () = self.changed.notified() => deadline = self.arm().0,
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body as the request service passes it on: the request stays
    /// in progress until the body has arrived completely, and a body dropped
    /// before its end keeps the connection from being parked.
    #[derive(Debug)]
    pub struct RequestBody<B = Incoming> {
        #[pin]
        inner: B,
        // Set while the body is still arriving.
        activity: Option<Arc<Activity>>,
    }

    impl<B> PinnedDrop for RequestBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(activity) = this.activity.take() {
                activity.body_abandoned();
            }
        }
    }
}

impl<B: Body> RequestBody<B> {
    /// Wraps the body of a request of the connection of `activity`.
    pub fn new(inner: B, activity: &Arc<Activity>) -> Self {
        let activity = (!inner.is_end_stream()).then(|| {
            activity.body_started();
            activity.clone()
        });
        Self { inner, activity }
    }
}

/// A request body that broke while the client was sending it (malformed
/// chunked encoding, a connection cut short): the client's fault, whatever
/// the Befundserver's side reports on the way.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body broke off")]
pub struct ClientBodyError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl ClientBodyError {
    /// The [`ClientBodyError`] that caused `error`, if one did.
    pub fn cause_of<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<Self>())
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, ClientBodyError>>> {
        let mut this = self.project();
        let result = this
            .inner
            .as_mut()
            .poll_frame(cx)
            .map_err(|e| ClientBodyError(e.into()));
        let ended = match &result {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if ended && let Some(activity) = this.activity.take() {
            activity.body_finished();
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

pin_project_lite::pin_project! {
    /// Wraps a connection's stream and reports bytes and blocked writes to
    /// its [`Activity`]. Bytes set with [`MonitoredIo::unread`] are read
    /// again before the stream's.
    #[derive(Debug)]
    pub struct MonitoredIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
        unread: Bytes,
        write_blocked: bool,
    }
}

impl<T> MonitoredIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            unread: Bytes::new(),
            write_blocked: false,
        }
    }

    /// Puts bytes that were read from the stream back in front of it; they
    /// count as read already.
    pub fn unread(&mut self, bytes: Bytes) {
        self.unread = bytes;
    }

    /// Reports a write or flush that could not complete, or the first that
    /// did after one that could not.
    fn note_write<R>(activity: &Activity, blocked: &mut bool, result: &Poll<R>) {
        if result.is_pending() != *blocked {
            *blocked = result.is_pending();
            activity.write_blocked(*blocked);
        }
    }
}

impl<T: AsyncRead> AsyncRead for MonitoredIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for MonitoredIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, data);
        Self::note_write(this.activity, this.write_blocked, &result);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        Self::note_write(this.activity, this.write_blocked, &result);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.inner.poll_flush(cx);
        Self::note_write(this.activity, this.write_blocked, &result);
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Empty, Full};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn deadlines() -> Deadlines {
        Deadlines {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(90),
            bytes_start_a_request: true,
            park_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_after_handshake_expires_as_header_timeout() {
        let activity = Activity::new(deadlines());
        assert_eq!(activity.expired().await, Expiry::HeaderTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn finished_request_leaves_connection_idle() {
        let activity = Activity::new(deadlines());
        activity.request_started();
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert!(start.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn byte_after_idle_starts_the_header_deadline() {
        let activity = Activity::new(deadlines());
        activity.request_started();
        activity.request_finished();
        let watchdog = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired().await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        activity.bytes_read();
        let start = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expiry::HeaderTimeout);
        assert!(start.elapsed() <= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn request_finished_while_watched_expires_idle_on_time() {
        let activity = Activity::new(deadlines());
        activity.request_started();
        let watchdog = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired().await })
        };
        // The watchdog now sleeps until the stall deadline (90 s); the idle
        // deadline (5 s + 60 s) is earlier and must wake it.
        tokio::time::sleep(Duration::from_secs(5)).await;
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expiry::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_of_a_busy_connection_push_the_stall_deadline_later() {
        let activity = Activity::new(deadlines());
        activity.request_started();
        let watchdog = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired().await })
        };
        tokio::time::sleep(Duration::from_secs(80)).await;
        activity.bytes_written();
        let start = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expiry::Stalled);
        assert_eq!(start.elapsed(), Duration::from_secs(90));
    }

    fn http1_deadlines() -> Deadlines {
        Deadlines {
            park_after: Some(Duration::from_secs(1)),
            ..deadlines()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_http1_connection_is_parked_then_closed_at_the_idle_timeout() {
        let activity = Activity::new(http1_deadlines());
        activity.request_started();
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Park);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        activity.parked();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn connection_is_parked_again_after_its_next_request() {
        let activity = Activity::new(http1_deadlines());
        activity.request_started();
        activity.request_finished();
        assert_eq!(activity.expired().await, Expiry::Park);
        activity.parked();
        tokio::time::sleep(Duration::from_secs(5)).await;
        activity.request_started();
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Park);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn connection_is_not_parked_while_its_client_does_not_read() {
        let activity = Activity::new(http1_deadlines());
        activity.request_started();
        activity.write_blocked(true);
        activity.request_finished();
        let watchdog = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired().await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watchdog.is_finished());
        // The client reads again: the park deadline has passed already.
        activity.write_blocked(false);
        let start = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expiry::Park);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn write_the_client_does_not_take_is_reported_as_blocked() {
        let activity = Activity::new(http1_deadlines());
        let (_client, server) = tokio::io::duplex(16);
        let mut io = MonitoredIo::new(server, activity.clone());
        activity.request_started();
        // More than the pipe holds, and nobody reads the other end.
        let write = tokio::time::timeout(Duration::from_millis(10), io.write_all(&[0; 64])).await;
        assert!(write.is_err());
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn request_stays_in_progress_until_its_body_has_arrived() {
        let activity = Activity::new(http1_deadlines());
        activity.request_started();
        let mut body = RequestBody::new(Full::new(Bytes::from_static(b"data")), &activity);
        // The response was sent before the body was read.
        activity.request_finished();
        let watchdog = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired().await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watchdog.is_finished(), "busy: only a stall ends it");
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "data");
        let start = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expiry::Park);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        drop(body);
    }

    #[tokio::test(start_paused = true)]
    async fn connection_whose_request_body_was_left_unread_is_never_parked() {
        let activity = Activity::new(http1_deadlines());
        activity.request_started();
        let body = RequestBody::new(Full::new(Bytes::from_static(b"data")), &activity);
        drop(body);
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn request_without_a_body_does_not_wait_for_one() {
        let activity = Activity::new(http1_deadlines());
        activity.request_started();
        drop(RequestBody::new(Empty::<Bytes>::new(), &activity));
        activity.request_finished();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Park);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_of_a_request_held_while_parked_start_the_header_deadline() {
        let activity = Activity::new(http1_deadlines());
        activity.request_started();
        activity.request_finished();
        assert_eq!(activity.expired().await, Expiry::Park);
        activity.request_bytes_held();
        activity.parked();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::HeaderTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn unread_bytes_are_read_before_the_stream() {
        let activity = Activity::new(deadlines());
        let mut io = MonitoredIo::new(&b" world"[..], activity);
        io.unread(Bytes::from_static(b"hello"));
        let mut text = String::new();
        io.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello world");
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connection_expires_only_when_stalled() {
        let activity = Activity::new(deadlines());
        activity.request_started();
        let start = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Stalled);
        assert!(start.elapsed() >= Duration::from_secs(90));
    }
}
