//! Counters the proxy keeps for monitoring (read by the metrics endpoint).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::tls::RefusalCounters;

/// Which side a failure is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong or went away.
    Client,
    /// The Befundserver was unreachable, too slow or broke the exchange.
    Upstream,
    /// The proxy itself failed.
    Proxy,
}

impl Side {
    /// `client`, `upstream` or `proxy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Proxy => "proxy",
        }
    }
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything the proxy counts.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Refused handshakes, per reason.
    pub refusals: RefusalCounters,
    /// Connections accepted and handed to TLS.
    pub connections_accepted: Counter,
    /// Connections closed at once because `limits.max_connections` was reached.
    pub connections_over_limit: Counter,
    /// Completed handshakes (verified clients).
    pub handshakes_completed: Counter,
    /// Connections cut off because a request head took too long.
    pub header_timeouts: Counter,
    /// Requests received from verified clients.
    pub requests: Counter,
    /// Requests refused with 421 (wrong Host / :authority).
    pub misdirected: Counter,
    /// Requests answered 502 because the Befundserver was unreachable or failed.
    pub upstream_errors: Counter,
    /// Requests answered 504 because the Befundserver was too slow.
    pub upstream_timeouts: Counter,
}
