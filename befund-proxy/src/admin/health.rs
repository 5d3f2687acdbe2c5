//! `/healthz`: the appliance is healthy when the WAN filter is attached, the
//! HTTPS listeners are open and the Befundserver accepts TCP connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::firewall::interface;

/// Longest wait for a TCP connection to the Befundserver.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The XDP program the daemon attached, to find on its interface.
#[derive(Clone, Debug)]
pub struct FilterCheck {
    /// The WAN interface.
    pub interface: String,
    /// The kernel id of the program in the pinned link.
    pub program_id: u32,
}

/// The health checks and their cached upstream result.
#[derive(Debug)]
pub struct Health {
    filter: FilterCheck,
    upstream: String,
    upstream_cache: Duration,
    listening: AtomicBool,
    last_upstream: Mutex<Option<(Instant, Result<(), String>)>>,
}

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// `filter`, `listener` or `upstream`.
    pub check: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// The result of all checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// The failed checks (empty when healthy).
    pub failures: Vec<Failure>,
}

impl Report {
    /// Whether every check passed.
    pub fn healthy(&self) -> bool {
        self.failures.is_empty()
    }
}

impl Health {
    /// Checks `filter`, the listeners (see [`Health::set_listening`]) and a
    /// TCP connection to `upstream` (`host:port`), reusing an upstream
    /// result for `upstream_cache`.
    pub fn new(filter: FilterCheck, upstream: String, upstream_cache: Duration) -> Self {
        Self {
            filter,
            upstream,
            upstream_cache,
            listening: AtomicBool::new(false),
            last_upstream: Mutex::new(None),
        }
    }

    /// Records whether the HTTPS listeners are serving.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Relaxed);
    }

    /// Runs the checks.
    pub async fn check(&self) -> Report {
        let mut failures = Vec::new();
        if let Err(reason) = self.check_filter() {
            failures.push(Failure {
                check: "filter",
                reason,
            });
        }
        if !self.listening.load(Ordering::Relaxed) {
            failures.push(Failure {
                check: "listener",
                reason: "the HTTPS listeners are not serving".into(),
            });
        }
        if let Err(reason) = self.check_upstream().await {
            failures.push(Failure {
                check: "upstream",
                reason,
            });
        }
        Report {
            status: if failures.is_empty() {
                "ok"
            } else {
                "unhealthy"
            },
            failures,
        }
    }

    /// The filter is in place when the WAN interface runs the program the
    /// daemon put into the pinned link (read over rtnetlink, which needs no
    /// privileges, and without holding the link open: `befundctl fw detach`
    /// must still be able to remove it).
    pub fn check_filter(&self) -> Result<(), String> {
        let FilterCheck {
            interface: name,
            program_id,
        } = &self.filter;
        let found = interface::by_name(name)
            .map_err(|e| format!("cannot read interface {name}: {e}"))?
            .ok_or_else(|| format!("interface {name} is gone"))?;
        match found.xdp {
            Some(xdp) if xdp.id == *program_id => Ok(()),
            Some(xdp) => Err(format!(
                "{name} runs XDP program {} instead of the filter ({program_id})",
                xdp.id
            )),
            None => Err(format!("no XDP filter attached to {name}")),
        }
    }

    async fn check_upstream(&self) -> Result<(), String> {
        let mut last = self.last_upstream.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < self.upstream_cache
        {
            return result.clone();
        }
        let connect = TcpStream::connect(self.upstream.as_str());
        let result = match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("befundserver {}: {e}", self.upstream)),
            Err(_) => Err(format!(
                "befundserver {}: no connection within {UPSTREAM_CONNECT_TIMEOUT:?}",
                self.upstream
            )),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(upstream: String) -> Health {
        let filter = FilterCheck {
            interface: "lo".into(),
            program_id: 1,
        };
        Health::new(filter, upstream, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn reachable_upstream_passes_and_is_cached() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = health(addr.to_string());
        assert_eq!(health.check_upstream().await, Ok(()));
        drop(listener);
        // Within the cache period the earlier result stands.
        assert_eq!(health.check_upstream().await, Ok(()));
    }

    #[tokio::test]
    async fn closed_upstream_port_fails_with_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let health = health(addr.to_string());
        let err = health.check_upstream().await.unwrap_err();
        assert!(err.contains(&addr.to_string()), "{err}");
    }

    #[tokio::test]
    async fn loopback_without_xdp_fails_the_filter_check() {
        let health = health("127.0.0.1:9".into());
        let report = health.check().await;
        assert!(!report.healthy());
        let checks: Vec<_> = report.failures.iter().map(|f| f.check).collect();
        assert!(checks.contains(&"filter"), "{report:?}");
        assert!(checks.contains(&"listener"), "{report:?}");
    }
}
