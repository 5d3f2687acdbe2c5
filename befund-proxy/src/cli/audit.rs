//! `befundctl audit`: runs the lab's access protocol against a deployment and
//! writes it as Markdown (stdout and `--markdown`) and JSON (`--json`).
//!
//! Exit status: 0 when every access test came out as required and no weakness
//! was found, 1 otherwise, 2 when the audit could not run (bad arguments,
//! unreadable files).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::access_protocol::{self, AuditPlan, PortList, Protocol, Target, json, markdown};

/// Exit status when the protocol passed.
const EXIT_PASSED: u8 = 0;
/// Exit status when a test failed or a weakness was found.
const EXIT_FAILED: u8 = 1;
/// Exit status when the audit could not run; clap uses it for usage errors too.
const EXIT_USAGE: u8 = 2;

/// Run the lab's access tests against a deployment and write the protocol.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The deployment to audit, as https://NAME[:PORT].
    #[arg(long, value_name = "URL")]
    pub target: Target,

    /// CA certificate(s) that issued the deployment's server certificate (PEM).
    #[arg(long, value_name = "CA.pem")]
    pub ca: PathBuf,

    /// A valid client certificate issued by the lab CA, leaf first (PEM).
    #[arg(long, value_name = "CLIENT.pem")]
    pub cert: PathBuf,

    /// The client certificate's private key (PEM). It is never printed.
    #[arg(long, value_name = "CLIENT.key")]
    pub key: PathBuf,

    /// Connect to this address instead of resolving NAME (like curl --resolve).
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: Option<SocketAddr>,

    /// A Befundserver address that must be unreachable from here (repeatable).
    #[arg(long = "befundserver", value_name = "ADDR:PORT", num_args = 1..)]
    pub befundservers: Vec<SocketAddr>,

    /// The path to GET with the valid certificate.
    #[arg(long, default_value = "/", value_parser = parse_path)]
    pub path: String,

    /// Scan these ports of the target host: only the proxy's may be open.
    #[arg(long, value_name = "LIST|RANGE")]
    pub scan_ports: Option<PortList>,

    /// Time budget of the whole port scan.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub scan_budget: Duration,

    /// Also write the protocol as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// Write the protocol as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Bound for each connect, handshake, HTTP response and openssl probe.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl AuditArgs {
    fn plan(&self) -> AuditPlan {
        AuditPlan {
            target: self.target.clone(),
            connect: self.connect,
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            befundservers: self.befundservers.clone(),
            path: self.path.clone(),
            scan_ports: self.scan_ports.clone(),
            timeout: self.timeout,
            scan_budget: self.scan_budget,
        }
    }
}

/// Runs the audit and ends the process with its exit status.
pub fn run_and_exit(args: &AuditArgs) -> ! {
    let status = run(args);
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(status))
}

/// Runs the audit, prints the Markdown protocol, writes the requested files and
/// returns the exit status.
pub fn run(args: &AuditArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage_error(&format!("cannot start the async runtime: {e}")),
    };

    let protocol = match runtime.block_on(access_protocol::run(&args.plan())) {
        Ok(protocol) => protocol,
        Err(e) => return usage_error(&e.to_string()),
    };

    let text = markdown::render(&protocol);
    print!("{text}");
    if let Err(message) = write_outputs(args, &protocol, &text) {
        return usage_error(&message);
    }

    if protocol.passed {
        EXIT_PASSED
    } else {
        EXIT_FAILED
    }
}

fn write_outputs(args: &AuditArgs, protocol: &Protocol, markdown: &str) -> Result<(), String> {
    if let Some(path) = &args.markdown {
        write_file("--markdown", path, markdown)?;
    }
    if let Some(path) = &args.json {
        let text =
            json::render(protocol).map_err(|e| format!("cannot render the JSON protocol: {e}"))?;
        write_file("--json", path, &text)?;
    }
    Ok(())
}

fn write_file(option: &str, path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| {
        format!(
            "cannot write {option} {}: {e}; choose a writable path",
            path.display()
        )
    })
}

fn usage_error(message: &str) -> u8 {
    eprintln!("befundctl audit: {message}");
    EXIT_USAGE
}

/// A request path: it must start with `/`.
fn parse_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') && !text.chars().any(char::is_whitespace) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a request path; write it like /healthz"
        ))
    }
}

/// `3s`, `500ms`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration; write it like 3s, 500ms or 1m");
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let value: u64 = number.parse().map_err(|_| invalid())?;

    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        _ => return Err(invalid()),
    };
    if duration.is_zero() {
        return Err(invalid());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        audit: AuditArgs,
    }

    fn parse(extra: &[&str]) -> Result<AuditArgs, clap::Error> {
        let required = [
            "audit",
            "--target=https://proxy.test",
            "--ca=a",
            "--cert=b",
            "--key=c",
        ];
        let args = required.iter().chain(extra);
        Command::try_parse_from(args).map(|c| c.audit)
    }

    #[test]
    fn befundserver_addresses_may_be_repeated_or_listed() {
        let args = parse(&[
            "--befundserver",
            "10.0.0.1:443",
            "10.0.0.2:22",
            "--befundserver=[::1]:80",
        ])
        .unwrap();

        let expected: Vec<SocketAddr> = ["10.0.0.1:443", "10.0.0.2:22", "[::1]:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(args.befundservers, expected);
        assert_eq!(args.timeout, Duration::from_secs(3));
        assert_eq!(args.path, "/");
    }

    #[test]
    fn bad_options_are_usage_errors() {
        for bad in [
            &["--timeout=0s"][..],
            &["--scan-ports=0-10"],
            &["--path=healthz"],
            &["--connect=proxy:443"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_accept_seconds_milliseconds_and_minutes() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn durations_reject_zero_negative_and_unknown_units() {
        for bad in ["0s", "-1s", "3h", "s", "1.5s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn paths_must_start_with_a_slash() {
        assert_eq!(parse_path("/healthz"), Ok("/healthz".to_owned()));
        assert!(parse_path("healthz").is_err());
        assert!(parse_path("/a b").is_err());
    }
}
