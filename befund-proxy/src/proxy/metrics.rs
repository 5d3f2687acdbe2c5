//! Counters the proxy keeps for monitoring (read by the metrics endpoint).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

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

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// HTTP status classes, `1xx` to `5xx`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Responses per status class.
#[derive(Debug, Default)]
pub struct StatusCounters([Counter; 5]);

impl StatusCounters {
    /// Counts one response with `status`.
    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].inc();
    }

    /// Every class with its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        STATUS_CLASSES
            .iter()
            .zip(&self.0)
            .map(|(class, c)| (*class, c.get()))
            .collect()
    }
}

/// Latency buckets in seconds: 2.5 ms doubling up to about 10 s, which
/// covers a cached report page as well as a slow PDF rendering.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0025, 2.0, 13))
}

/// Everything the proxy counts.
#[derive(Debug)]
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
    /// TCP connections open now (handshaking or verified).
    pub connections_open: Gauge,
    /// HTTP/1.1 connections parked now: idle, holding only their TLS state.
    pub connections_parked: Gauge,
    /// Responses sent, per status class.
    pub responses: StatusCounters,
    /// Time from a request's head to the end of its response body, seconds.
    pub request_duration: Histogram,
    /// Time the Befundserver took to answer with a response head, seconds.
    pub upstream_duration: Histogram,
    /// Open connections closed because a changed trust state (a new CRL, a
    /// reload) no longer admits their certificate, per reason.
    pub connections_closed_by_trust_change: RefusalCounters,
    /// Reloads applied.
    pub reloads: Counter,
    /// Reloads rejected (nothing changed).
    pub reloads_rejected: Counter,
    /// Changed CRL files picked up without a reload.
    pub crl_updates: Counter,
    /// Changed CRL files that could not be used (the previous CRLs stay).
    pub crl_update_failures: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            refusals: RefusalCounters::default(),
            connections_accepted: Counter::default(),
            connections_over_limit: Counter::default(),
            handshakes_completed: Counter::default(),
            header_timeouts: Counter::default(),
            requests: Counter::default(),
            misdirected: Counter::default(),
            upstream_errors: Counter::default(),
            upstream_timeouts: Counter::default(),
            connections_open: Gauge::default(),
            connections_parked: Gauge::default(),
            responses: StatusCounters::default(),
            request_duration: latency_histogram(),
            upstream_duration: latency_histogram(),
            connections_closed_by_trust_change: RefusalCounters::default(),
            reloads: Counter::default(),
            reloads_rejected: Counter::default(),
            crl_updates: Counter::default(),
            crl_update_failures: Counter::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_sort_responses_into_classes() {
        let counters = StatusCounters::default();
        for status in [200, 204, 302, 421, 502, 504] {
            counters.record(status);
        }
        assert_eq!(
            counters.snapshot(),
            [("1xx", 0), ("2xx", 2), ("3xx", 1), ("4xx", 1), ("5xx", 2)]
        );
    }
}
