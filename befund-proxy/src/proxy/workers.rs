//! Connection workers: the threads that serve client connections.
//!
//! Each worker is one thread running its own single-threaded async runtime.
//! An accepted connection is handed to the worker with the fewest open
//! connections and stays there for its life: its TLS stream, its HTTP state,
//! its timers and the Befundserver connections it borrows are all polled on
//! that one thread. Nothing is moved between threads per request, and a
//! worker waits for its sockets itself instead of being woken by another
//! thread. Each worker keeps its own pool of Befundserver connections, so a
//! borrowed connection's readiness is reported to the thread that uses it.
//!
//! The runtime that accepts (the daemon's) keeps everything else: the admin
//! listener, signals, reloads and the CRL watch.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tracing::Dispatch;

use super::connection::ConnectionContext;

/// The worker threads, started by [`Workers::start`] and stopped by
/// [`Workers::stop`]; each has its own context `C` for its connections.
#[derive(Debug)]
pub(crate) struct Workers<C = ConnectionContext> {
    workers: Vec<Worker<C>>,
}

#[derive(Debug)]
struct Worker<C> {
    runtime: Handle,
    ctx: Arc<C>,
    /// Connections handed to this worker and not yet finished.
    load: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl<C> Workers<C> {
    /// Starts one thread per context in `contexts`, named `befund-conn-N`.
    pub(crate) fn start(contexts: Vec<Arc<C>>) -> io::Result<Self> {
        let mut workers = Self {
            workers: Vec::with_capacity(contexts.len()),
        };
        for (index, ctx) in contexts.into_iter().enumerate() {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            // The workers log where the thread that starts them logs.
            let logging = tracing::dispatcher::get_default(Dispatch::clone);
            let thread = std::thread::Builder::new()
                .name(format!("befund-conn-{index}"))
                .spawn(move || {
                    let _logging = tracing::dispatcher::set_default(&logging);
                    // Tasks spawned through the handle run while this waits.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                });
            // Threads started so far stop when `workers` is dropped.
            let thread = thread?;
            workers.workers.push(Worker {
                runtime: handle,
                ctx,
                load: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(workers)
    }

    /// Number of worker threads.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// The workers' runtimes, for a [`WorkerProbe`].
    pub(crate) fn runtimes(&self) -> Vec<Handle> {
        self.workers.iter().map(|w| w.runtime.clone()).collect()
    }

    /// Runs the connection task `serve(ctx)` on the worker with the fewest
    /// open connections, with that worker's context.
    pub(crate) fn spawn<F, Fut>(&self, serve: F)
    where
        F: FnOnce(Arc<C>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        let load = worker.load.clone();
        load.fetch_add(1, Ordering::Relaxed);
        let task = serve(worker.ctx.clone());
        worker.runtime.spawn(async move {
            let _counted = Counted(load);
            task.await;
        });
    }

    /// Stops the threads once their tasks are done or dropped, and waits for
    /// them. Tasks still running are dropped with their runtime.
    pub(crate) async fn stop(mut self) {
        let threads: Vec<_> = self.workers.iter_mut().filter_map(stop_worker).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Asks the running connection workers whether their threads still run
/// their tasks: a worker whose thread is stuck (in a blocking call, a loop)
/// stalls every connection it serves. Empty until the workers start and
/// again once they are told to stop.
#[derive(Clone, Debug, Default)]
pub struct WorkerProbe {
    runtimes: Arc<Mutex<Vec<Handle>>>,
}

impl WorkerProbe {
    /// Probes these runtimes from now on (none: nothing to probe).
    pub(crate) fn set(&self, runtimes: Vec<Handle>) {
        *self
            .runtimes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = runtimes;
    }

    /// Whether every worker runs a task handed to it within `within`.
    pub async fn all_responding(&self, within: Duration) -> bool {
        let runtimes = self
            .runtimes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let replies: Vec<_> = runtimes.iter().map(|r| r.spawn(async {})).collect();
        let all = async {
            for reply in replies {
                if reply.await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(within, all).await.unwrap_or(false)
    }
}

/// Tells a worker to stop; returns its thread to join.
fn stop_worker<C>(worker: &mut Worker<C>) -> Option<JoinHandle<()>> {
    if let Some(stop) = worker.stop.take() {
        let _ = stop.send(());
    }
    worker.thread.take()
}

impl<C> Drop for Workers<C> {
    fn drop(&mut self) {
        // Without `stop` (a panic or an early return): the threads end on
        // their own once told to; nobody waits for them.
        for worker in &mut self.workers {
            stop_worker(worker);
        }
    }
}

/// Counts a connection against its worker's load while it lives.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// Where each connection task ran: its worker's context and its thread.
    type Seen = Arc<Mutex<Vec<(usize, String)>>>;

    fn record(seen: &Seen, ctx: &usize) {
        let thread = std::thread::current().name().unwrap_or_default().to_owned();
        seen.lock().unwrap().push((*ctx, thread));
    }

    async fn wait_for(seen: &Seen, count: usize) {
        for _ in 0..5000 {
            if seen.lock().unwrap().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the connection tasks did not run");
    }

    #[tokio::test]
    async fn each_connection_runs_on_its_own_workers_thread_with_that_workers_context() {
        let workers = Workers::start((0..3).map(Arc::new).collect()).unwrap();
        assert_eq!(workers.len(), 3);
        let seen = Seen::default();
        let release = Arc::new(Notify::new());
        for _ in 0..6 {
            let (seen, release) = (seen.clone(), release.clone());
            workers.spawn(move |ctx| async move {
                record(&seen, &ctx);
                release.notified().await;
            });
        }
        wait_for(&seen, 6).await;
        let mut per_worker = BTreeMap::new();
        for (ctx, thread) in seen.lock().unwrap().iter() {
            assert_eq!(thread, &format!("befund-conn-{ctx}"));
            *per_worker.entry(*ctx).or_insert(0) += 1;
        }
        // Held open, the six connections are spread two to a worker.
        assert_eq!(per_worker, BTreeMap::from([(0, 2), (1, 2), (2, 2)]));
        release.notify_waiters();
        workers.stop().await;
    }

    #[tokio::test]
    async fn a_new_connection_goes_to_the_worker_whose_connections_ended() {
        let workers = Workers::start((0..2).map(Arc::new).collect()).unwrap();
        let seen = Seen::default();
        let (hold, end_second) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        for index in 0..4 {
            let (seen, hold, end_second) = (seen.clone(), hold.clone(), end_second.clone());
            workers.spawn(move |ctx| async move {
                record(&seen, &ctx);
                if index == 1 {
                    end_second.notified().await;
                } else {
                    hold.notified().await;
                }
            });
        }
        wait_for(&seen, 4).await;
        // Handed out in turn, the second connection went to worker 1; once
        // it has ended, worker 1 has one connection and worker 0 two.
        end_second.notify_one();
        for _ in 0..5000 {
            if workers.workers[1].load.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let next = seen.clone();
        workers.spawn(move |ctx| async move { record(&next, &ctx) });
        wait_for(&seen, 5).await;
        assert_eq!(seen.lock().unwrap()[4].0, 1);
        hold.notify_waiters();
        workers.stop().await;
    }

    #[tokio::test]
    async fn a_worker_whose_thread_is_blocked_fails_the_probe_until_it_runs_again() {
        let workers = Workers::start((0..2).map(Arc::new).collect()).unwrap();
        let probe = WorkerProbe::default();
        assert!(
            probe.all_responding(Duration::from_millis(1)).await,
            "none to probe"
        );
        probe.set(workers.runtimes());
        assert!(probe.all_responding(Duration::from_secs(10)).await);

        // A connection task that blocks its worker's thread.
        let (unblock, blocked) = std::sync::mpsc::channel::<()>();
        let entered = Seen::default();
        {
            let entered = entered.clone();
            workers.spawn(move |ctx| async move {
                record(&entered, &ctx);
                let _ = blocked.recv();
            });
        }
        wait_for(&entered, 1).await;
        assert!(!probe.all_responding(Duration::from_millis(100)).await);

        unblock.send(()).unwrap();
        assert!(probe.all_responding(Duration::from_secs(10)).await);
        probe.set(Vec::new());
        workers.stop().await;
    }

    #[tokio::test]
    async fn stopping_ends_the_threads_and_drops_unfinished_connections() {
        let workers = Workers::start(vec![Arc::new(0)]).unwrap();
        let dropped = Arc::new(Notify::new());
        let started = Seen::default();
        {
            let (dropped, started) = (dropped.clone(), started.clone());
            workers.spawn(move |ctx| async move {
                struct OnDrop(Arc<Notify>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.notify_one();
                    }
                }
                let _guard = OnDrop(dropped);
                record(&started, &ctx);
                std::future::pending::<()>().await;
            });
        }
        wait_for(&started, 1).await;
        workers.stop().await;
        tokio::time::timeout(Duration::from_secs(5), dropped.notified())
            .await
            .expect("the unfinished connection task was dropped");
    }
}
