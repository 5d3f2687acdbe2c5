//! `/metrics`: everything the proxy counts, the CRLs' and the server
//! certificate's dates and the XDP filter's per-rule counters, read at scrape
//! time and written in the Prometheus text format.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::firewall::{Firewall, NamedCounter};
use crate::proxy::{LiveConnections, ProxyMetrics};
use crate::tls::{CrlStanding, RefusalReason, SharedTlsState};

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the XDP counters come from.
pub type FirewallHandle = Arc<Mutex<Firewall>>;

/// What a scrape reads.
pub struct Sources {
    /// The proxy's counters.
    pub proxy: Arc<ProxyMetrics>,
    /// The TLS state in force (CRL and certificate dates).
    pub tls: SharedTlsState,
    /// The open verified connections.
    pub live: Arc<LiveConnections>,
    /// The filter, for its counters; `None` without a filter.
    pub firewall: Option<FirewallHandle>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// Builds the registry that `/metrics` encodes.
pub fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(sources));
    registry
}

/// Encodes `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

type Labels = Vec<(&'static str, String)>;

fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (Labels, f64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn one(value: u64) -> [(Labels, u64); 1] {
    [(Vec::new(), value)]
}

/// Seconds from `now` to `then`, negative when `then` has passed.
fn seconds_until(then: SystemTime, now: SystemTime) -> f64 {
    match then.duration_since(now) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_connections(&mut encoder)?;
        self.encode_requests(&mut encoder)?;
        self.encode_trust(&mut encoder)?;
        self.encode_filter(&mut encoder)
    }
}

impl Sources {
    fn encode_connections(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let m = &self.proxy;
        counters(
            e,
            "befund_connections_accepted",
            "TCP connections accepted on the HTTPS listeners",
            one(m.connections_accepted.get()),
        )?;
        counters(
            e,
            "befund_connections_over_limit",
            "Connections closed at once because limits.max_connections was reached",
            one(m.connections_over_limit.get()),
        )?;
        let verified = (
            vec![("outcome", "verified".to_owned())],
            m.handshakes_completed.get(),
        );
        let refused = m.refusals.snapshot().into_iter().map(|(reason, n)| {
            let labels = vec![
                ("outcome", "refused".to_owned()),
                ("reason", reason.as_str().to_owned()),
            ];
            (labels, n)
        });
        counters(
            e,
            "befund_handshakes",
            "TLS handshakes by outcome, refusals by reason",
            std::iter::once(verified).chain(refused),
        )?;
        counters(
            e,
            "befund_connections_closed_by_trust_change",
            "Open connections closed because a new CRL or reload no longer admits their certificate",
            reasons(m.connections_closed_by_trust_change.snapshot()),
        )?;
        gauges(
            e,
            "befund_connections_open",
            "TCP connections open on the HTTPS listeners",
            None,
            [(Vec::new(), m.connections_open.get() as f64)],
        )?;
        gauges(
            e,
            "befund_connections_parked",
            "Idle HTTP/1.1 connections holding only their TLS state",
            None,
            [(Vec::new(), m.connections_parked.get() as f64)],
        )?;
        gauges(
            e,
            "befund_connections_verified",
            "Open connections with a verified client certificate",
            None,
            [(Vec::new(), self.live.len() as f64)],
        )
    }

    fn encode_requests(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let m = &self.proxy;
        counters(
            e,
            "befund_requests",
            "Requests received from verified clients",
            one(m.requests.get()),
        )?;
        counters(
            e,
            "befund_responses",
            "Responses sent to clients by status class",
            m.responses
                .snapshot()
                .into_iter()
                .map(|(class, n)| (vec![("class", class.to_owned())], n)),
        )?;
        counters(
            e,
            "befund_upstream_failures",
            "Requests the proxy answered itself because the Befundserver failed",
            [
                (vec![("kind", "error".to_owned())], m.upstream_errors.get()),
                (
                    vec![("kind", "timeout".to_owned())],
                    m.upstream_timeouts.get(),
                ),
            ],
        )?;
        counters(
            e,
            "befund_misdirected_requests",
            "Requests refused with 421 for another Host",
            one(m.misdirected.get()),
        )?;
        counters(
            e,
            "befund_header_timeouts",
            "Connections closed because a request head took too long",
            one(m.header_timeouts.get()),
        )?;
        m.request_duration.encode(e.encode_descriptor(
            "befund_request_duration",
            "Time from a request's head to the end of its response",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)?;
        m.upstream_duration.encode(e.encode_descriptor(
            "befund_upstream_duration",
            "Time the Befundserver took to send a response head",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)
    }

    fn encode_trust(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let m = &self.proxy;
        let state = self.tls.load_full();
        let now = SystemTime::now();
        counters(
            e,
            "befund_reloads",
            "Reloads (SIGHUP, befundctl reload) by result",
            [
                (vec![("result", "applied".to_owned())], m.reloads.get()),
                (
                    vec![("result", "rejected".to_owned())],
                    m.reloads_rejected.get(),
                ),
            ],
        )?;
        counters(
            e,
            "befund_crl_file_updates",
            "Changed CRL files picked up without a reload, by result",
            [
                (vec![("result", "applied".to_owned())], m.crl_updates.get()),
                (
                    vec![("result", "failed".to_owned())],
                    m.crl_update_failures.get(),
                ),
            ],
        )?;
        gauges(
            e,
            "befund_server_certificate_expiry",
            "Time until the server certificate's notAfter",
            Some(&Unit::Seconds),
            [(
                Vec::new(),
                seconds_until(state.server_certificate.not_after, now),
            )],
        )?;
        let crls = state.crl_monitor.crls();
        let file = |c: &crate::tls::CrlInfo| vec![("file", c.file.display().to_string())];
        gauges(
            e,
            "befund_crl_age",
            "Time since the CRL's thisUpdate",
            Some(&Unit::Seconds),
            crls.iter()
                .map(|c| (file(c), -seconds_until(c.this_update, now))),
        )?;
        gauges(
            e,
            "befund_crl_next_update",
            "Time until the CRL's nextUpdate (negative once passed)",
            Some(&Unit::Seconds),
            crls.iter().filter_map(|c| {
                c.next_update
                    .map(|next| (file(c), seconds_until(next, now)))
            }),
        )?;
        gauges(
            e,
            "befund_crl_expiring",
            "1 when the CRL is within tls.crl_warning_days of its nextUpdate or past it",
            None,
            crls.iter().map(|c| {
                let standing = state.crl_monitor.standing_of(c, now);
                (file(c), f64::from(u8::from(standing != CrlStanding::Fresh)))
            }),
        )?;
        gauges(
            e,
            "befund_crl_revoked_certificates",
            "Certificates the CRL lists as revoked",
            None,
            crls.iter().map(|c| (file(c), c.revoked as f64)),
        )
    }

    fn encode_filter(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let Some(firewall) = &self.firewall else {
            return Ok(());
        };
        let read = firewall
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .counters();
        let slots = match read {
            Ok(slots) => slots,
            Err(error) => {
                tracing::warn!(side = "proxy", error = %error, "cannot read the filter's counters");
                return Ok(());
            }
        };
        let labels = |c: &NamedCounter| {
            vec![
                ("slot", c.slot.to_string()),
                ("name", c.name.clone()),
                ("kind", if c.rule { "rule" } else { "verdict" }.to_owned()),
            ]
        };
        counters(
            e,
            "befund_xdp_packets",
            "Packets the WAN filter counted per verdict or rule",
            slots.iter().map(|c| (labels(c), c.packets)),
        )?;
        counters(
            e,
            "befund_xdp_bytes",
            "Bytes the WAN filter counted per verdict or rule",
            slots.iter().map(|c| (labels(c), c.bytes)),
        )
    }
}

fn reasons(snapshot: Vec<(RefusalReason, u64)>) -> impl Iterator<Item = (Labels, u64)> {
    snapshot
        .into_iter()
        .map(|(reason, n)| (vec![("reason", reason.as_str().to_owned())], n))
}
