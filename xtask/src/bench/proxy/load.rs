//! One load run: `oha` in the client namespace against one proxy, with the
//! physician's certificate, and its JSON summary read back.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    cpu, interrupt,
    lab::Lab,
    pki::{Pki, SERVER_NAME, path_str},
    servers::Proxy,
};
use crate::command;

/// The path requested; both proxies forward it to the upstream.
const PATH: &str = "/befunde";

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Requests on kept-alive connections: the forwarding path.
    KeepAlive,
    /// A new TCP connection and full TLS handshake with client certificate
    /// for every request: the handshake path.
    Handshake,
}

impl Scenario {
    /// Both, in report order.
    pub const BOTH: [Self; 2] = [Self::KeepAlive, Self::Handshake];

    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeepAlive => "keep-alive",
            Self::Handshake => "new handshake per request",
        }
    }
}

/// How hard and how long to drive a run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Length of the run.
    pub seconds: u32,
    /// Concurrent connections.
    pub connections: u32,
    /// Requests per second for the keep-alive scenario, all connections
    /// together; `None` for as many as the proxy answers. At a fixed rate
    /// below both proxies' capacity, the CPU time per request compares them
    /// with less noise from other load on the machine than saturation does.
    pub rate: Option<u32>,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Successful (2xx) responses.
    pub ok: u64,
    /// Successful responses per second over the run.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// CPU time the proxy (all its threads or processes) used per
    /// successful request, microseconds.
    pub cpu_us: f64,
}

/// Runs oha against the proxies from the client namespace.
pub struct Driver<'a> {
    /// The load generator.
    pub oha: &'a Path,
    /// The client certificate and the CA.
    pub pki: &'a Pki,
    /// Unit of the CPU times read from /proc.
    pub ticks_per_second: u64,
}

impl Driver<'_> {
    /// Drives `proxy` with `load` in `scenario`. Fails when any request
    /// failed: a TLS or connection error, a timeout or a status other than
    /// 2xx.
    pub fn run(&self, lab: &Lab, proxy: Proxy, scenario: Scenario, load: Load) -> Result<Outcome> {
        interrupt::check()?;
        let pid = lab
            .pid(proxy.service())
            .with_context(|| format!("{} is not running", proxy.name()))?;
        let mut cmd = self.command(lab, proxy, scenario, load)?;
        eprintln!(
            "bench: {} / {}: {} s, {} connections{}",
            proxy.name(),
            scenario.name(),
            load.seconds,
            load.connections,
            match (scenario, load.rate) {
                (Scenario::KeepAlive, Some(rate)) => format!(", {rate} requests/s"),
                _ => String::new(),
            }
        );

        let cpu_before = cpu::tree_ticks(pid);
        let json = run_registered(&mut cmd);
        let cpu_ticks = cpu::tree_ticks(pid).saturating_sub(cpu_before);
        // A stop signal also ends oha; report the interruption, not oha.
        interrupt::check()?;
        let json = json?;

        let summary = parse(&json).with_context(|| {
            format!(
                "{} / {}: unexpected oha output",
                proxy.name(),
                scenario.name()
            )
        })?;
        let cpu_seconds = cpu_ticks as f64 / self.ticks_per_second as f64;
        summary.into_result(proxy, scenario, cpu_seconds)
    }

    fn command(&self, lab: &Lab, proxy: Proxy, scenario: Scenario, load: Load) -> Result<Command> {
        let (pki, target) = (self.pki, proxy.addr());
        let mut cmd = lab.command(&lab.client_ns, self.oha);
        cmd.args(["--no-tui", "--output-format", "json", "--no-color"])
            .args(["-z", &format!("{}s", load.seconds)])
            // Requests still running at the deadline finish and are
            // counted, instead of being reported as aborted.
            .arg("-w")
            .args(["-c", &load.connections.to_string()])
            .args(["-t", "10s"])
            .args(["--cacert", path_str(&pki.ca_cert)?])
            .args(["--cert", path_str(&pki.client_cert)?])
            .args(["--key", path_str(&pki.client_key)?])
            .arg("--connect-to")
            .arg(format!(
                "{SERVER_NAME}:443:{}:{}",
                target.ip(),
                target.port()
            ));
        match (scenario, load.rate) {
            (Scenario::Handshake, _) => {
                cmd.arg("--disable-keepalive");
            }
            (Scenario::KeepAlive, Some(rate)) => {
                cmd.args(["-q", &rate.to_string()]);
            }
            (Scenario::KeepAlive, None) => {}
        }
        cmd.arg(format!("https://{SERVER_NAME}{PATH}"));
        Ok(cmd)
    }
}

/// Runs `cmd` to completion with its id known to the interrupt handler, and
/// returns its standard output.
fn run_registered(cmd: &mut Command) -> Result<String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {}", command::render(cmd)))?;
    let pid = child.id();
    interrupt::register(pid);
    let out = child.wait_with_output();
    interrupt::unregister(pid);
    let out = out?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            command::render(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// oha's summary, before the check for failed requests.
#[derive(Debug)]
struct Summary {
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse(json: &str) -> Result<Summary> {
    let v: Value = serde_json::from_str(json)?;
    let counts = |key: &str| -> Result<BTreeMap<String, u64>> {
        let map = v[key].as_object().with_context(|| format!("no {key}"))?;
        map.iter()
            .map(|(k, n)| Ok((k.clone(), n.as_u64().with_context(|| format!("{key}.{k}"))?)))
            .collect()
    };
    let seconds = |value: &Value, what: &str| -> Result<f64> {
        value.as_f64().with_context(|| format!("no {what}"))
    };
    Ok(Summary {
        statuses: counts("statusCodeDistribution")?,
        errors: counts("errorDistribution")?,
        seconds: seconds(&v["summary"]["total"], "summary.total")?,
        p50_ms: seconds(&v["latencyPercentiles"]["p50"], "latencyPercentiles.p50")? * 1000.0,
        p99_ms: seconds(&v["latencyPercentiles"]["p99"], "latencyPercentiles.p99")? * 1000.0,
    })
}

impl Summary {
    fn into_result(self, proxy: Proxy, scenario: Scenario, cpu_seconds: f64) -> Result<Outcome> {
        let ok: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| status.starts_with('2'))
            .map(|(_, n)| n)
            .sum();
        let failed: Vec<String> = self
            .statuses
            .iter()
            .filter(|(status, _)| !status.starts_with('2'))
            .map(|(status, n)| format!("{n} × status {status}"))
            .chain(self.errors.iter().map(|(e, n)| format!("{n} × {e}")))
            .collect();
        if !failed.is_empty() {
            let all: u64 = self.statuses.values().chain(self.errors.values()).sum();
            bail!(
                "{} / {}: {} of {all} requests failed: {}",
                proxy.name(),
                scenario.name(),
                all - ok,
                failed.join("; ")
            );
        }
        if ok == 0 || self.seconds <= 0.0 {
            bail!(
                "{} / {}: no request completed",
                proxy.name(),
                scenario.name()
            );
        }
        Ok(Outcome {
            ok,
            rps: ok as f64 / self.seconds,
            p50_ms: self.p50_ms,
            p99_ms: self.p99_ms,
            cpu_us: cpu_seconds * 1e6 / ok as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = r#"{"summary":{"total":2.0,"requestsPerSec":50.0},
        "latencyPercentiles":{"p50":0.004,"p99":0.012},
        "statusCodeDistribution":{"200":100},"errorDistribution":{}}"#;

    #[test]
    fn clean_run_yields_successful_requests_per_second_and_latency_in_ms() {
        let outcome = parse(CLEAN)
            .unwrap()
            .into_result(Proxy::Ours, Scenario::KeepAlive, 0.05)
            .unwrap();
        assert_eq!(outcome.ok, 100);
        assert!((outcome.rps - 50.0).abs() < 1e-9);
        assert!((outcome.p50_ms - 4.0).abs() < 1e-9);
        assert!((outcome.p99_ms - 12.0).abs() < 1e-9);
        assert!((outcome.cpu_us - 500.0).abs() < 1e-9);
    }

    #[test]
    fn run_with_tls_errors_or_non_2xx_statuses_fails() {
        let json = r#"{"summary":{"total":2.0},
            "latencyPercentiles":{"p50":0.004,"p99":0.012},
            "statusCodeDistribution":{"200":98,"502":1},
            "errorDistribution":{"invalid peer certificate: UnknownIssuer":1}}"#;
        let err = parse(json)
            .unwrap()
            .into_result(Proxy::Nginx, Scenario::Handshake, 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 × status 502"), "{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(
            err.starts_with("nginx / new handshake per request: 2 of 100 requests failed"),
            "{err}"
        );
    }

    #[test]
    fn run_without_any_response_fails() {
        let json = r#"{"summary":{"total":2.0},
            "latencyPercentiles":{"p50":0.0,"p99":0.0},
            "statusCodeDistribution":{},"errorDistribution":{}}"#;
        assert!(
            parse(json)
                .unwrap()
                .into_result(Proxy::Ours, Scenario::KeepAlive, 1.0)
                .is_err()
        );
    }
}
