//! The idle-connections scenario: `idle-clients` (crate befund-tests) in the
//! client namespace opens N mTLS connections to one proxy, sends one
//! HTTP/1.1 keep-alive request (or with `--idle-http2` one HTTP/2 request)
//! on each, and holds them all idle; the bench
//! reads the proxy's memory before and while they are held, then lets the
//! client close them.
//!
//! A connection that fails to open, is answered with anything but 2xx or is
//! closed by the proxy while held fails the bench; the memory figure is a
//! measurement and never does.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use super::{
    interrupt,
    lab::Lab,
    memory::{self, Memory},
    pki::{Pki, SERVER_NAME, path_str},
    servers::Proxy,
};
use crate::command;

/// Connections being opened at once: enough to keep both CPUs busy with
/// handshakes, few enough that neither proxy's accept backlog overflows.
pub const IN_FLIGHT: u32 = 200;
/// Time allowed to open all connections. At a few hundred handshakes per
/// second on two shared cores, 50 000 connections take a few minutes.
pub const OPEN_DEADLINE: Duration = Duration::from_secs(360);
/// Pause between the last connection turning idle and reading memory, so
/// that memory freed after the last response is freed.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Longest time the client holds the connections if the bench never lets
/// go (it normally releases them seconds after reading memory).
const HOLD_LIMIT: Duration = Duration::from_secs(900);
/// Time allowed for closing all connections.
const CLOSE_DEADLINE: Duration = Duration::from_secs(60);
/// The path requested once per connection.
const PATH: &str = "/befunde";

/// What the scenario measured on one proxy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdleOutcome {
    /// Which proxy.
    pub proxy: Proxy,
    /// Connections held.
    pub connections: u32,
    /// Whether they spoke HTTP/2 rather than HTTP/1.1.
    pub http2: bool,
    /// Before the connections were opened.
    pub baseline: Memory,
    /// While all connections were held idle.
    pub held: Memory,
    /// A settle time after the client closed them.
    pub released: Memory,
    /// Seconds the client took to open them all.
    pub open_seconds: f64,
}

/// Runs `idle-clients` against the proxies.
pub struct IdleDriver<'a> {
    /// The `idle-clients` binary.
    pub client: &'a Path,
    /// The client certificate and the CA.
    pub pki: &'a Pki,
    /// Speak HTTP/2 on the idle connections instead of HTTP/1.1.
    pub http2: bool,
}

impl IdleDriver<'_> {
    /// Opens `connections` idle connections to `proxy`, reads its memory,
    /// and closes them.
    pub fn run(&self, lab: &mut Lab, proxy: Proxy, connections: u32) -> Result<IdleOutcome> {
        let pid = lab
            .pid(proxy.service())
            .with_context(|| format!("{} is not running", proxy.name()))?;
        let baseline = memory::of_tree(pid)?;
        eprintln!(
            "bench: opening {connections} idle connections to {} ({} in flight)",
            proxy.name(),
            IN_FLIGHT
        );
        let mut client = ClientProcess::start(self.command(lab, proxy, connections)?, lab, proxy)?;

        let opened = client.next_line(OPEN_DEADLINE + Duration::from_secs(30), lab)?;
        let opened = check_opened(proxy, connections, &opened)?;
        sleep(SETTLE)?;
        lab.check_alive()?;
        client.check_running()?;
        let held = memory::of_tree(pid)?;

        client.release();
        let released_line = client.next_line(CLOSE_DEADLINE, lab)?;
        check_released(proxy, connections, &released_line)?;
        client.finish()?;
        sleep(SETTLE)?;
        let released = memory::of_tree(pid)?;
        eprintln!(
            "bench: {}: {} of {connections} connections established, {} answered, in {:.1} s; \
             held {} s and closed",
            proxy.name(),
            opened.established,
            opened.answered,
            opened.seconds,
            SETTLE.as_secs()
        );
        Ok(IdleOutcome {
            proxy,
            connections,
            http2: self.http2,
            baseline,
            held,
            released,
            open_seconds: opened.seconds,
        })
    }

    fn command(&self, lab: &Lab, proxy: Proxy, connections: u32) -> Result<Command> {
        let pki = self.pki;
        let mut cmd = lab.command(&lab.client_ns, self.client);
        cmd.arg("--connect")
            .arg(proxy.addr().to_string())
            .args(["--server-name", SERVER_NAME])
            .args(["--ca", path_str(&pki.ca_cert)?])
            .args(["--cert", path_str(&pki.client_cert)?])
            .args(["--key", path_str(&pki.client_key)?])
            .args(["--connections", &connections.to_string()])
            .args(["--in-flight", &IN_FLIGHT.to_string()])
            .args(["--path", PATH])
            .args(["--deadline", &OPEN_DEADLINE.as_secs().to_string()])
            .args(["--hold-limit", &HOLD_LIMIT.as_secs().to_string()]);
        if self.http2 {
            cmd.arg("--http2");
        }
        Ok(cmd)
    }
}

/// What the client's first line says, once checked.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Opened {
    /// TLS handshakes completed.
    established: u64,
    /// Requests answered with 2xx.
    answered: u64,
    /// Time taken to open them all.
    seconds: f64,
}

/// The client's first line: every connection answered, or fail naming why
/// not.
fn check_opened(proxy: Proxy, connections: u32, line: &str) -> Result<Opened> {
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("idle-clients printed no JSON line: {line}"))?;
    let count = |key: &str| -> Result<u64> {
        v[key]
            .as_u64()
            .with_context(|| format!("idle-clients' line has no {key}: {line}"))
    };
    let (answered, failed) = (count("answered")?, count("failed")?);
    if failed > 0 || answered != u64::from(connections) {
        let reasons: Vec<String> = v["failures"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(reason, n)| format!("{n} × {reason}"))
                    .collect()
            })
            .unwrap_or_default();
        bail!(
            "{} / idle connections: {answered} of {connections} connections answered, {failed} \
             failed ({} established the TLS handshake): {}",
            proxy.name(),
            count("established")?,
            reasons.join("; ")
        );
    }
    Ok(Opened {
        established: count("established")?,
        answered,
        seconds: v["seconds"]
            .as_f64()
            .with_context(|| format!("idle-clients' line has no seconds: {line}"))?,
    })
}

/// The client's second line: every connection was still open when released.
fn check_released(proxy: Proxy, connections: u32, line: &str) -> Result<()> {
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("idle-clients printed no JSON line: {line}"))?;
    let closed = v["closed_by_server"]
        .as_u64()
        .with_context(|| format!("idle-clients' line has no closed_by_server: {line}"))?;
    let held = v["held"].as_u64().unwrap_or(0);
    if closed > 0 || held != u64::from(connections) {
        bail!(
            "{} / idle connections: the proxy closed {closed} of {connections} idle connections \
             while they were held (its idle or header timeout, or its connection limit); {held} \
             were held to the end",
            proxy.name()
        );
    }
    Ok(())
}

/// Sleeps, but returns early with an error on Ctrl-C.
fn sleep(duration: Duration) -> Result<()> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        interrupt::check()?;
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
    Ok(())
}

/// The running `idle-clients`: its standard input (closing it releases the
/// connections) and its output lines. Killed on drop unless it finished.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: std::path::PathBuf,
}

impl ClientProcess {
    fn start(mut cmd: Command, lab: &Lab, proxy: Proxy) -> Result<Self> {
        let log = lab.log_path(&format!("idle-clients-{}", proxy.service()));
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("failed to create {}", log.display()))?;
        eprintln!("+ {}", command::render(&cmd));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start {}", command::render(&cmd)))?;
        interrupt::register(child.id());
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("idle-clients' stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
            log,
        })
    }

    /// The next line of output, waiting at most `timeout`; fails early on
    /// Ctrl-C, if a server died or the client exited without a line.
    fn next_line(&mut self, timeout: Duration, lab: &mut Lab) -> Result<String> {
        let until = Instant::now() + timeout;
        loop {
            interrupt::check()?;
            lab.check_alive()?;
            match self.lines.recv_timeout(Duration::from_millis(500)) {
                Ok(line) => return Ok(line),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!(
                        "idle-clients exited ({status}) early: {}",
                        self.stderr_tail()
                    );
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= until => {
                    bail!("idle-clients printed nothing within {timeout:?}");
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Fails if the client exited while it should hold its connections.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "idle-clients exited ({status}) while holding: {}",
                self.stderr_tail()
            );
        }
        Ok(())
    }

    /// Closes its standard input: it closes every connection and reports.
    fn release(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits for it to exit and fails unless it exited 0.
    fn finish(&mut self) -> Result<()> {
        let status = self.child.wait()?;
        interrupt::unregister(self.child.id());
        if !status.success() {
            bail!("idle-clients failed ({status}): {}", self.stderr_tail());
        }
        Ok(())
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        interrupt::unregister(self.child.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_connections_answered_yields_the_counts_and_seconds_taken() {
        let line = r#"{"connections":500,"established":500,"answered":500,"failed":0,"failures":{},"seconds":3.5}"#;
        let opened = check_opened(Proxy::Ours, 500, line).unwrap();
        assert_eq!(
            opened,
            Opened {
                established: 500,
                answered: 500,
                seconds: 3.5
            }
        );
    }

    #[test]
    fn failed_connections_fail_the_scenario_with_their_reasons() {
        let line = r#"{"connections":500,"established":498,"answered":497,"failed":3,
            "failures":{"status 502":1,"TLS handshake: connection reset":2},"seconds":3.5}"#;
        let err = check_opened(Proxy::Nginx, 500, line)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("nginx / idle connections: 497 of 500 connections answered, 3 failed"),
            "{err}"
        );
        assert!(err.contains("2 × TLS handshake: connection reset"), "{err}");
        assert!(err.contains("1 × status 502"), "{err}");
    }

    #[test]
    fn fewer_answers_than_connections_fail_even_without_failures() {
        let line = r#"{"connections":500,"established":400,"answered":400,"failed":0,"failures":{},"seconds":3.5}"#;
        assert!(check_opened(Proxy::Ours, 500, line).is_err());
    }

    #[test]
    fn connections_closed_by_the_proxy_while_held_fail_the_scenario() {
        let ok = r#"{"held":500,"closed_by_server":0,"seconds":2.1}"#;
        assert!(check_released(Proxy::Ours, 500, ok).is_ok());
        let closed = r#"{"held":480,"closed_by_server":20,"seconds":2.1}"#;
        let err = check_released(Proxy::Ours, 500, closed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("closed 20 of 500"), "{err}");
    }
}
