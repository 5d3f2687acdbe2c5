//! The real clients of the access protocol: curl, openssl and nmap, run
//! inside the client namespace.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result};

/// What one curl call observed.
#[derive(Debug)]
pub struct CurlOutcome {
    /// curl's exit code (0: an HTTP response arrived).
    pub exit: i32,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Response body.
    pub body: String,
    /// curl's error line, if any.
    pub error: String,
}

impl CurlOutcome {
    /// A one-line summary for the protocol table.
    pub fn detail(&self) -> String {
        match self.status {
            Some(status) => format!("HTTP {status}"),
            None => format!("curl exit {}: {}", self.exit, self.error),
        }
    }
}

/// Runs `cmd` (a prepared curl command line) and collects its outcome. The
/// command must write the body to stdout followed by a final line holding
/// `%{http_code}` (see [`curl_args`]).
pub fn curl(mut cmd: Command) -> Result<CurlOutcome> {
    let out = cmd.output().context("failed to run curl")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    let status = code.trim().parse::<u16>().ok().filter(|s| *s != 0);
    Ok(CurlOutcome {
        exit: out.status.code().unwrap_or(-1),
        status,
        body: body.to_owned(),
        error: String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_owned(),
    })
}

/// The common curl arguments: silent but with errors, bounded time, body
/// then the status code on a line of its own.
pub fn curl_args(cmd: &mut Command, max_time_secs: u32) {
    cmd.args(["-sS", "--max-time", &max_time_secs.to_string()])
        .args(["-w", "\n%{http_code}"]);
}

/// Ports that nmap found open on `target`.
pub fn nmap_open_ports(mut cmd: Command, target: &str, ports: &str) -> Result<Vec<u16>> {
    // -Pn: the filter answers no ping; -n: no DNS; -sT: a full connect, as
    // any client would; greppable output to stdout.
    let out = cmd
        .args(["-Pn", "-n", "-sT", "-T4", "--max-retries", "1", "-p", ports])
        .args(["-oG", "-", target])
        .output()
        .context("failed to run nmap")?;
    anyhow::ensure!(
        out.status.success(),
        "nmap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(parse_greppable(&String::from_utf8_lossy(&out.stdout)))
}

/// Extracts open ports from nmap's greppable output
/// (`Ports: 443/open/tcp//https///, 22/filtered/tcp//ssh///`).
fn parse_greppable(text: &str) -> Vec<u16> {
    let mut open = Vec::new();
    for line in text.lines() {
        let Some((_, ports)) = line.split_once("Ports: ") else {
            continue;
        };
        let ports = ports.split('\t').next().unwrap_or("");
        for entry in ports.split(", ") {
            let mut fields = entry.split('/');
            let (Some(port), Some("open")) = (fields.next(), fields.next()) else {
                continue;
            };
            if let Ok(port) = port.trim().parse() {
                open.push(port);
            }
        }
    }
    open
}

/// Whether a TCP connection to `addr` succeeds within `secs` seconds, tried
/// with bash's /dev/tcp from inside the namespace of `cmd`.
pub fn tcp_connects(mut cmd: Command, addr: &str, port: u16, secs: u32) -> Result<bool> {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port}");
    let status = cmd
        .args(["timeout", &secs.to_string(), "bash", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("failed to run bash")?;
    Ok(status.success())
}

/// Runs `cmd` with `input` on its standard input and collects its output.
pub fn with_stdin(mut cmd: Command, input: &[u8]) -> Result<std::process::Output> {
    use std::io::Write as _;

    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("failed to start the client")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A client that refuses early closes its input; that is an outcome,
        // not an error.
        let _ = stdin.write_all(input);
    }
    child
        .wait_with_output()
        .context("failed to wait for the client")
}

/// Whether a file looks like PEM (for early, clear errors on missing output).
pub fn is_pem(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains("-----BEGIN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greppable_output_yields_only_open_ports() {
        let text = "# Nmap 7.93 scan\nHost: 198.51.100.1 ()\tStatus: Up\n\
                    Host: 198.51.100.1 ()\tPorts: 22/filtered/tcp//ssh///, 443/open/tcp//https///, \
                    8443/closed/tcp/////\tIgnored State: filtered (65532)\n";
        assert_eq!(parse_greppable(text), vec![443]);
    }

    #[test]
    fn greppable_output_without_ports_yields_nothing() {
        assert!(parse_greppable("Host: 10.20.0.5 ()\tStatus: Up\n").is_empty());
    }
}
