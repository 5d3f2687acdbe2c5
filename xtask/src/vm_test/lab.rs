//! The appliance scenario's world around the VM, made with the product's own
//! tools run as processes: the lab CA and certificates from `befundctl`, the
//! reference Befundserver (`befundserver`) in the lab namespace, and
//! `befundctl audit` from the client namespace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use befund_testbed::{
    files::write_private,
    netns::Netns,
    pki::{Befundctl, ClientRequest, ServerRequest, fingerprint, random_hex},
    process::Child,
};

use super::{
    checks::{Check, check, check_that},
    netns,
    scenario::Topology,
};
use crate::{
    command::{self, workspace_root},
    image::binaries::cargo_executables,
};

/// The physician whose certificate the audit presents.
const PHYSICIAN_CN: &str = "ARZT0001";
const PHYSICIAN_ACCOUNT: &str = "weber";
const PHYSICIAN_PASSWORD: &str = "Kalium-4.2-mmol";
/// Ports of the gateway the audit scans: only the proxy's may be open.
const SCANNED_PORTS: &str = "22,80,443,8080,9443";

/// The host's builds of the tools the test runs outside the VM.
pub struct HostBinaries {
    /// `befundctl` (the same build as in the image).
    pub befundctl: PathBuf,
    /// The reference Befundserver.
    pub befundserver: PathBuf,
}

impl HostBinaries {
    /// Builds them in release mode. `befundctl` comes from the same command
    /// as the image's binaries, so cargo reuses that build.
    pub fn build() -> Result<Self> {
        let proxy = cargo_executables(
            Command::new(env!("CARGO"))
                .current_dir(workspace_root())
                .args(["build", "--release", "--bins", "-p", "befund-proxy"]),
        )
        .context("failed to build befundctl")?;
        let server = cargo_executables(
            Command::new(env!("CARGO"))
                .current_dir(workspace_root())
                .args([
                    "build",
                    "--release",
                    "-p",
                    "befund-tests",
                    "--bin",
                    "befundserver",
                ]),
        )
        .context("failed to build the reference Befundserver")?;
        Ok(Self {
            befundctl: named(&proxy, "befundctl")?,
            befundserver: named(&server, "befundserver")?,
        })
    }
}

fn named(executables: &[PathBuf], name: &str) -> Result<PathBuf> {
    executables
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == name))
        .cloned()
        .with_context(|| format!("cargo built no `{name}` (built: {executables:?})"))
}

/// What the lab issued with `befundctl`, in the test's directory.
pub struct Credentials {
    /// The lab CA's certificate: issues the server and client certificates.
    pub ca_cert: PathBuf,
    /// The CA's CRL.
    pub crl: PathBuf,
    /// The gateway's certificate chain (leaf first).
    pub server_chain: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// The secret the proxy shows the Befundserver.
    pub proxy_secret: PathBuf,
    /// The physician's certificate.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// Its SHA-256 fingerprint, computed by openssl.
    pub client_fingerprint: String,
    /// The physician's password at the Befundserver.
    pub password_file: PathBuf,
}

impl Credentials {
    /// Creates the CA and issues the gateway's server certificate (for the
    /// configured server name and the WAN address), a physician's client
    /// certificate, the CRL and the proxy secret under `dir`.
    pub fn issue(befundctl: &Path, dir: &Path, topology: &Topology) -> Result<Self> {
        let befundctl = Befundctl::new(befundctl);
        let ca = dir.join("ca");
        let issued = dir.join("issued");
        fs::create_dir_all(&issued)?;
        eprintln!(
            "vm-test: issuing the lab's certificates in {}",
            dir.display()
        );
        let ca_cert = befundctl.init_ca(&ca, None)?;
        let server = befundctl.issue_server(
            &ca,
            &ServerRequest {
                dns: &[topology.server_name],
                ips: &[topology.gateway_wan],
                key: None,
            },
            &issued.join("gateway"),
        )?;
        let physician = ClientRequest {
            cn: PHYSICIAN_CN,
            user: PHYSICIAN_ACCOUNT,
            key: None,
        };
        let client = befundctl.issue_client(&ca, &physician, &issued.join(PHYSICIAN_CN))?;
        let crl = ca.join("crl.pem");
        befundctl.write_crl(&ca, &crl)?;
        let proxy_secret = dir.join("proxy-secret");
        write_private(&proxy_secret, random_hex(32)?)?;
        let password_file = dir.join(format!("{PHYSICIAN_ACCOUNT}.password"));
        write_private(&password_file, PHYSICIAN_PASSWORD)?;
        Ok(Self {
            ca_cert,
            crl,
            server_chain: server.chain,
            server_key: server.key,
            proxy_secret,
            client_fingerprint: fingerprint(&client.cert)?,
            client_key: client.key,
            client_cert: client.cert,
            password_file,
        })
    }

    /// The files for the config drive's `tls/` directory, under the names
    /// the appliance's default configuration uses.
    pub fn drive_files(&self) -> [(&Path, &'static str); 5] {
        [
            (&self.server_chain, "tls/server.crt"),
            (&self.server_key, "tls/server.key"),
            (&self.ca_cert, "tls/client-ca.crt"),
            (&self.crl, "tls/client-ca.crl"),
            (&self.proxy_secret, "tls/proxy-secret"),
        ]
    }
}

/// Sets up the Befundserver's database under `dir` (the physician bound to
/// the certificate's fingerprint, demo reports) and starts it in the lab
/// namespace; its log goes to `dir/befundserver.log`.
pub fn start_befundserver(
    binaries: &HostBinaries,
    credentials: &Credentials,
    lab: &Netns,
    topology: &Topology,
    dir: &Path,
) -> Result<Child> {
    fs::create_dir_all(dir)?;
    let db = dir.join("befund.sqlite");
    let server = &binaries.befundserver;
    command::run(Command::new(server).args(["init", "--db"]).arg(&db))?;
    command::run(
        Command::new(server)
            .args(["add-user", "--db"])
            .arg(&db)
            .args(["--username", PHYSICIAN_ACCOUNT, "--password-file"])
            .arg(&credentials.password_file)
            .args(["--cert-fingerprint", &credentials.client_fingerprint]),
    )?;
    command::run(
        Command::new(server)
            .args(["seed-demo", "--db"])
            .arg(&db)
            .args(["--username", PHYSICIAN_ACCOUNT]),
    )?;
    let listen = format!("{}:{}", topology.lab_host, topology.lab_port);
    let server = server.to_string_lossy();
    let db = db.to_string_lossy();
    let secret = credentials.proxy_secret.to_string_lossy();
    netns::spawn(
        lab,
        "reference Befundserver",
        &[
            &server,
            "serve",
            "--db",
            &db,
            "--listen",
            &listen,
            "--proxy-secret-file",
            &secret,
        ],
        Some(&dir.join("befundserver.log")),
    )
}

/// Runs `befundctl audit` from the client namespace against the gateway
/// and turns its exit status, every row and the weaknesses into checks. The
/// protocol is written to `out` (Markdown and JSON).
pub fn audit(
    binaries: &HostBinaries,
    credentials: &Credentials,
    client: &Netns,
    topology: &Topology,
    out: &Path,
) -> Result<Vec<Check>> {
    let json = out.join("audit-protocol.json");
    let markdown = out.join("audit-protocol.md");
    let _ = fs::remove_file(&json);
    let mut cmd = client.command(&binaries.befundctl);
    cmd.args(["audit", "--target"])
        .arg(format!("https://{}:443", topology.server_name))
        .arg("--connect")
        .arg(format!("{}:443", topology.gateway_wan))
        .arg("--ca")
        .arg(&credentials.ca_cert)
        .arg("--cert")
        .arg(&credentials.client_cert)
        .arg("--key")
        .arg(&credentials.client_key)
        .arg("--befundserver")
        .arg(format!("{}:{}", topology.lab_host, topology.lab_port))
        .args(["--path", "/healthz", "--scan-ports", SCANNED_PORTS])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown);
    eprintln!("+ {}", command::render(&cmd));
    let result = cmd.output().context("failed to run befundctl audit")?;
    let code = result
        .status
        .code()
        .map_or_else(|| result.status.to_string(), |c| c.to_string());
    let text = fs::read_to_string(&json).with_context(|| {
        format!(
            "befundctl audit (exit {code}) wrote no protocol: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        )
    })?;
    let protocol: serde_json::Value =
        serde_json::from_str(&text).context("befundctl audit's JSON protocol is unreadable")?;
    let mut checks = vec![check(
        "befundctl audit from the client passes (exit 0)",
        "0",
        code,
    )];
    checks.extend(audit_checks(&protocol)?);
    Ok(checks)
}

/// One check per row of the protocol (every row must pass; none may be
/// skipped, since the test names the Befundserver and the ports to scan),
/// and one that no weakness was found.
fn audit_checks(protocol: &serde_json::Value) -> Result<Vec<Check>> {
    let rows = protocol["rows"]
        .as_array()
        .context("the audit protocol has no rows")?;
    if rows.is_empty() {
        bail!("the audit protocol has no rows");
    }
    let mut checks = Vec::new();
    for row in rows {
        let text = |key: &str| row[key].as_str().unwrap_or("?").to_owned();
        let mut name = format!(
            "audit row {}: {} is {}",
            row["number"],
            row["test"]["kind"].as_str().unwrap_or("?"),
            text("expected")
        );
        if let Some(address) = row["test"]["address"].as_str() {
            name.push_str(&format!(" ({address})"));
        }
        let verdict = text("verdict");
        checks.push(check_that(
            &name,
            "pass",
            format!("{verdict}: {}; {}", text("observed"), text("detail")),
            verdict == "pass",
        ));
    }
    let weaknesses: Vec<&str> = protocol["weaknesses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["kind"].as_str().unwrap_or("?"))
        .collect();
    checks.push(check_that(
        "the audit finds no weakness in the server certificate or TLS settings",
        "none",
        if weaknesses.is_empty() {
            "none".to_owned()
        } else {
            weaknesses.join(", ")
        },
        weaknesses.is_empty(),
    ));
    Ok(checks)
}

/// One counter slot as `befundctl fw counters --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The slot.
    pub slot: u64,
    /// Fixed verdict or rule.
    pub name: String,
    /// Packets counted.
    pub packets: u64,
}

/// Parses the output of `befundctl fw counters --json`.
pub fn parse_counters(lines: &[String]) -> Result<Vec<Counter>> {
    let text = lines.join("\n");
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("not the JSON of `befundctl fw counters --json`:\n{text}"))?;
    value["counters"]
        .as_array()
        .context("no `counters` array")?
        .iter()
        .map(|c| {
            Ok(Counter {
                slot: c["slot"].as_u64().context("a counter without slot")?,
                name: c["name"].as_str().unwrap_or_default().to_owned(),
                packets: c["packets"].as_u64().context("a counter without packets")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_befundctls_json() {
        let lines: Vec<String> = [
            "{",
            "  \"counters\": [",
            "    { \"slot\": 7, \"name\": \"proxy\", \"rule\": false, \"packets\": 12, \"bytes\": 900 },",
            "    { \"slot\": 16, \"name\": \"protect 10.20.0.0/24\", \"rule\": true, \"packets\": 3, \"bytes\": 180 }",
            "  ]",
            "}",
        ]
        .map(str::to_owned)
        .to_vec();
        let counters = parse_counters(&lines).unwrap();
        assert_eq!(
            counters[1],
            Counter {
                slot: 16,
                name: "protect 10.20.0.0/24".into(),
                packets: 3
            }
        );
    }

    #[test]
    fn counters_output_that_is_not_json_is_an_error() {
        assert!(parse_counters(&["befundctl: no filter pinned".to_owned()]).is_err());
    }

    #[test]
    fn every_audit_row_must_pass_and_skipped_rows_fail() {
        let protocol = serde_json::json!({
            "rows": [
                { "number": 1, "test": { "kind": "no_client_certificate" },
                  "expected": "refused", "observed": "refused", "verdict": "pass", "detail": "" },
                { "number": 7, "test": { "kind": "port_scan" },
                  "expected": "only the proxy port open", "observed": "", "verdict": "skipped",
                  "detail": "" }
            ],
            "weaknesses": [ { "kind": "cbc_cipher_suite" } ]
        });
        let checks = audit_checks(&protocol).unwrap();
        let verdicts: Vec<bool> = checks.iter().map(|c| c.passed).collect();
        assert_eq!(verdicts, [true, false, false]);
        assert_eq!(checks[2].observed, "cbc_cipher_suite");
    }
}
