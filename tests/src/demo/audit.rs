//! `befundctl audit` run from the client namespace: the product's own
//! protocol tool, used for the one test that no stock client can make (a
//! valid certificate presented without its private key) and for the TLS
//! survey.

use std::process::Command;

use anyhow::{Context as _, Result};

use super::{BEFUNDSERVER_PORT, Deployment, SERVER_NAME, topology};

/// The audit's JSON protocol and its exit status.
pub struct AuditOutcome {
    /// The parsed JSON protocol.
    pub protocol: serde_json::Value,
    /// Whether `befundctl audit` exited 0.
    pub passed: bool,
}

/// One row of the audit's protocol.
pub struct AuditRow<'a> {
    /// The test's kind, e.g. `certificate_without_key`.
    pub kind: &'a str,
    /// What the audit observed.
    pub observed: &'a str,
    /// `pass`, `fail` or `skipped`.
    pub verdict: &'a str,
    /// Evidence.
    pub detail: &'a str,
}

impl AuditOutcome {
    /// The protocol's rows.
    pub fn rows(&self) -> impl Iterator<Item = AuditRow<'_>> {
        self.protocol["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| AuditRow {
                kind: row["test"]["kind"].as_str().unwrap_or(""),
                observed: row["observed"].as_str().unwrap_or(""),
                verdict: row["verdict"].as_str().unwrap_or(""),
                detail: row["detail"].as_str().unwrap_or(""),
            })
    }

    /// Weaknesses the audit flagged, by kind.
    pub fn weaknesses(&self) -> Vec<String> {
        self.protocol["weaknesses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w["kind"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

/// Runs `befundctl audit` against the gateway with the first physician's
/// certificate and writes its protocol next to the demo's files.
pub fn run(deployment: &Deployment) -> Result<AuditOutcome> {
    let dir = &deployment.topology.dir;
    let json = dir.join("audit-protocol.json");
    let markdown = dir.join("audit-protocol.md");
    let physician = &deployment.pki.physicians[0];

    let mut cmd: Command = deployment
        .topology
        .client
        .command(deployment.bin("befundctl"));
    cmd.args(["audit", "--target", &format!("https://{SERVER_NAME}:443")])
        .args(["--connect", &format!("{}:443", topology::GATEWAY_WAN)])
        .arg("--ca")
        .arg(&deployment.pki.ca_cert)
        .arg("--cert")
        .arg(&physician.cert)
        .arg("--key")
        .arg(&physician.key)
        .args([
            "--befundserver",
            &format!("{}:{BEFUNDSERVER_PORT}", topology::BEFUNDSERVER),
        ])
        .args(["--path", "/healthz"])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown);
    let out = cmd.output().context("failed to run befundctl audit")?;
    let text = std::fs::read_to_string(&json).with_context(|| {
        format!(
            "befundctl audit wrote no protocol: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok(AuditOutcome {
        protocol: serde_json::from_str(&text).context("befundctl audit's JSON is unreadable")?,
        passed: out.status.success(),
    })
}
