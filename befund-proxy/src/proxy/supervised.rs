//! A connection run beside the future that may end it early.
//!
//! A connection's task wakes several times per request: bytes from the
//! client, the Befundserver's answer, room to write. What may end the
//! connection early (a revoked certificate, its deadline, shutdown) fires
//! rarely, but polling those futures takes a lock each. [`Supervised`] polls
//! the supervising future only after it woke the task itself, and then
//! before the connection, so that what it signals takes effect before the
//! connection moves another byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// How a [`Supervised`] future ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended<T, S> {
    /// The supervised future completed.
    Completed(T),
    /// The supervisor completed first.
    Stopped(S),
}

/// The supervisor's waker: notes that the supervisor wants to be polled and
/// wakes the task.
#[derive(Debug)]
struct SupervisorWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SupervisorWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// Runs `main` until it completes or `supervisor` does, whichever is
    /// first; `supervisor` is polled on the first poll and after each time it
    /// woke the task, `main` on every poll.
    pub(crate) struct Supervised<F, S> {
        #[pin]
        main: F,
        #[pin]
        supervisor: S,
        wake: Arc<SupervisorWake>,
        waker: Waker,
    }
}

impl<F, S> Supervised<F, S> {
    pub(crate) fn new(main: F, supervisor: S) -> Self {
        let wake = Arc::new(SupervisorWake {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(wake.clone());
        Self {
            main,
            supervisor,
            wake,
            waker,
        }
    }
}

impl<F: Future, S: Future> Future for Supervised<F, S> {
    type Output = Ended<F::Output, S::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.wake.task.register(cx.waker());
        if this.wake.woken.swap(false, Ordering::AcqRel) {
            let mut supervisor_cx = Context::from_waker(this.waker);
            if let Poll::Ready(stop) = this.supervisor.poll(&mut supervisor_cx) {
                return Poll::Ready(Ended::Stopped(stop));
            }
        }
        this.main.poll(cx).map(Ended::Completed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// Counts its polls; pending until `ready_after` polls, waking its task
    /// each time (as a busy connection is woken again and again).
    struct Busy<'a> {
        polls: &'a AtomicUsize,
        ready_after: usize,
    }

    impl Future for Busy<'_> {
        type Output = usize;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let n = self.polls.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.ready_after {
                return Poll::Ready(n);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts its polls and waits for `notify`.
    async fn counted_wait(polls: &AtomicUsize, notify: &Notify) -> &'static str {
        let notified = notify.notified();
        tokio::pin!(notified);
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx)
        })
        .await;
        "stopped"
    }

    #[tokio::test]
    async fn supervisor_is_polled_only_when_it_woke_the_task() {
        let (main_polls, supervisor_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let notify = Notify::new();
        let main = Busy {
            polls: &main_polls,
            ready_after: 50,
        };
        let ended = Supervised::new(main, counted_wait(&supervisor_polls, &notify)).await;
        assert_eq!(ended, Ended::Completed(50));
        assert_eq!(supervisor_polls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn supervisor_that_fires_stops_before_the_next_poll_of_main() {
        let (main_polls, supervisor_polls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let notify = Arc::new(Notify::new());
        let main = std::future::poll_fn(|_| {
            main_polls.fetch_add(1, Ordering::Relaxed);
            Poll::<()>::Pending
        });
        let firing = {
            let notify = notify.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                notify.notify_one();
            })
        };
        let ended = Supervised::new(main, counted_wait(&supervisor_polls, &notify)).await;
        firing.await.unwrap();
        assert_eq!(ended, Ended::Stopped("stopped"));
        // main was polled once, at the start; the supervisor at the start
        // and after it woke the task, and that poll ended it.
        assert_eq!(main_polls.load(Ordering::Relaxed), 1);
        assert_eq!(supervisor_polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn supervisor_ready_at_once_wins_over_ready_main() {
        let ended = Supervised::new(std::future::ready(1), std::future::ready("stop")).await;
        assert_eq!(ended, Ended::Stopped("stop"));
    }
}
