//! The lab's access protocol, run from the client namespace with real
//! clients against a running [`Deployment`].

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context as _, Result};

use super::{
    BEFUNDSERVER_PORT, Deployment, SERVER_NAME,
    clients::{self, CurlOutcome},
    report::{Expect, Row},
    topology::{BEFUNDSERVER, GATEWAY_WAN},
};

/// Runs every access test and returns one row per test.
pub fn run(deployment: &Deployment) -> Result<Vec<Row>> {
    let tests: [(&str, &str, Expect, Probe); 13] = [
        (
            "no client certificate",
            "curl",
            Expect::Refused,
            no_certificate,
        ),
        (
            "no client certificate",
            "openssl s_client",
            Expect::Refused,
            no_certificate_openssl,
        ),
        (
            "self-issued certificate, same subject",
            "curl",
            Expect::Refused,
            self_issued,
        ),
        (
            "valid certificate without its private key",
            "befundctl audit",
            Expect::Refused,
            without_private_key,
        ),
        (
            "valid certificate, wrong password",
            "curl",
            Expect::Refused,
            wrong_password,
        ),
        (
            "valid certificate, another physician's account",
            "curl",
            Expect::Refused,
            other_account,
        ),
        (
            "valid certificate and right password: report arrives",
            "curl",
            Expect::Admitted,
            right_password,
        ),
        (
            "valid certificate",
            "openssl s_client",
            Expect::Admitted,
            valid_openssl,
        ),
        (
            "valid certificate over IPv6",
            "curl",
            Expect::Admitted,
            valid_ipv6,
        ),
        (
            "direct TCP connect to the Befundserver",
            "bash /dev/tcp",
            Expect::Unreachable,
            direct_connect,
        ),
        (
            "direct port scan of the Befundserver",
            "nmap",
            Expect::Unreachable,
            direct_scan,
        ),
        (
            "port scan of the gateway: only 443 open",
            "nmap",
            Expect::Admitted,
            gateway_scan,
        ),
        (
            "audit protocol passes, TLS 1.2+/AEAD only, strong certificate",
            "befundctl audit",
            Expect::Admitted,
            full_audit,
        ),
    ];

    let mut rows = Vec::new();
    for (test, client, expected, probe) in tests {
        let before = counters(deployment)?;
        let (observed, detail) =
            probe(deployment).with_context(|| format!("test `{test}` could not run"))?;
        let after = counters(deployment)?;
        rows.push(Row {
            test: test.to_owned(),
            client: client.to_owned(),
            expected,
            observed,
            detail,
            counters: moved(&before, &after),
        });
    }
    Ok(rows)
}

type Probe = fn(&Deployment) -> Result<(Expect, String)>;

/// Per-slot packet counts of the WAN filter, read with `befundctl fw
/// counters --json` from the pinned maps.
pub fn counters(deployment: &Deployment) -> Result<BTreeMap<String, u64>> {
    let out = Command::new(deployment.bin("befundctl"))
        .args(["fw", "counters", "--json", "--config"])
        .arg(deployment.gateway_config())
        .output()
        .context("failed to run befundctl fw counters")?;
    anyhow::ensure!(
        out.status.success(),
        "befundctl fw counters failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut counts = BTreeMap::new();
    for counter in doc["counters"]
        .as_array()
        .context("no counters in befundctl's JSON")?
    {
        let name = counter["name"].as_str().unwrap_or("?").to_owned();
        counts.insert(name, counter["packets"].as_u64().unwrap_or(0));
    }
    Ok(counts)
}

fn moved(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    after
        .iter()
        .filter_map(|(name, now)| {
            let delta = now.saturating_sub(before.get(name).copied().unwrap_or(0));
            (delta > 0).then(|| (name.clone(), delta))
        })
        .collect()
}

fn client(deployment: &Deployment, program: &str) -> Command {
    deployment.topology.client.command(program)
}

/// curl against the gateway by name, resolved to its WAN address.
fn curl(deployment: &Deployment, address: &str) -> Command {
    let mut cmd = client(deployment, "curl");
    clients::curl_args(&mut cmd, 5);
    cmd.arg("--resolve")
        .arg(format!("{SERVER_NAME}:443:{address}"))
        .arg("--cacert")
        .arg(&deployment.pki.ca_cert);
    cmd
}

fn url(path: &str) -> String {
    format!("https://{SERVER_NAME}{path}")
}

/// A TLS-level outcome: refused unless an HTTP response arrived.
fn tls_outcome(outcome: &CurlOutcome) -> (Expect, String) {
    let observed = if outcome.status.is_some() {
        Expect::Admitted
    } else {
        Expect::Refused
    };
    (observed, outcome.detail())
}

fn no_certificate(d: &Deployment) -> Result<(Expect, String)> {
    let mut cmd = curl(d, &GATEWAY_WAN.to_string());
    cmd.arg(url("/healthz"));
    Ok(tls_outcome(&clients::curl(cmd)?))
}

fn self_issued(d: &Deployment) -> Result<(Expect, String)> {
    let mut cmd = curl(d, &GATEWAY_WAN.to_string());
    cmd.arg("--cert")
        .arg(&d.pki.self_issued_cert)
        .arg("--key")
        .arg(&d.pki.self_issued_key)
        .arg(url("/healthz"));
    Ok(tls_outcome(&clients::curl(cmd)?))
}

/// Logs in as `account` with `password` presenting physician `cert_of`'s
/// certificate, then fetches the report list with the session.
fn login(
    d: &Deployment,
    cert_of: usize,
    account: &str,
    password: &str,
) -> Result<(Expect, String)> {
    let physician = &d.pki.physicians[cert_of];
    let jar = d
        .topology
        .dir
        .join(format!("cookies-{}-{account}", physician.cn));
    let _ = std::fs::remove_file(&jar);

    let mut cmd = curl(d, &GATEWAY_WAN.to_string());
    cmd.arg("--cert")
        .arg(&physician.cert)
        .arg("--key")
        .arg(&physician.key)
        .arg("--cookie-jar")
        .arg(&jar)
        .args(["--data-urlencode", &format!("username={account}")])
        .args(["--data-urlencode", &format!("password={password}")])
        .arg(url("/login"));
    let login = clients::curl(cmd)?;
    if login.status != Some(200) {
        return Ok((Expect::Refused, format!("login: {}", login.detail())));
    }

    let mut cmd = curl(d, &GATEWAY_WAN.to_string());
    cmd.arg("--cert")
        .arg(&physician.cert)
        .arg("--key")
        .arg(&physician.key)
        .arg("--cookie")
        .arg(&jar)
        .args(["-H", "Accept: application/json"])
        .arg(url("/reports"));
    let reports = clients::curl(cmd)?;
    let count = serde_json::from_str::<serde_json::Value>(&reports.body)
        .ok()
        .and_then(|doc| report_count(&doc));
    match (reports.status, count) {
        (Some(200), Some(n)) if n > 0 => {
            Ok((Expect::Admitted, format!("login HTTP 200, {n} reports")))
        }
        _ => Ok((Expect::Refused, format!("reports: {}", reports.detail()))),
    }
}

fn report_count(doc: &serde_json::Value) -> Option<usize> {
    doc.as_array()
        .or_else(|| doc["reports"].as_array())
        .map(Vec::len)
}

fn wrong_password(d: &Deployment) -> Result<(Expect, String)> {
    let account = d.pki.physicians[0].account.clone();
    login(d, 0, &account, "not-the-password")
}

fn other_account(d: &Deployment) -> Result<(Expect, String)> {
    let other = d.pki.physicians[1].clone();
    login(d, 0, &other.account, &other.password)
}

fn right_password(d: &Deployment) -> Result<(Expect, String)> {
    let me = d.pki.physicians[0].clone();
    login(d, 0, &me.account, &me.password)
}

fn valid_ipv6(d: &Deployment) -> Result<(Expect, String)> {
    let physician = &d.pki.physicians[0];
    let mut cmd = curl(d, &format!("[{}]", super::topology::GATEWAY_WAN6));
    cmd.arg("--cert")
        .arg(&physician.cert)
        .arg("--key")
        .arg(&physician.key)
        .arg(url("/healthz"));
    Ok(tls_outcome(&clients::curl(cmd)?))
}

/// openssl s_client: refused unless the handshake completes and the server
/// answers an HTTP request.
fn s_client(
    d: &Deployment,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<(Expect, String)> {
    let mut cmd = client(d, "timeout");
    cmd.args(["10", "openssl", "s_client", "-quiet", "-ign_eof"])
        .args([
            "-connect",
            &format!("{GATEWAY_WAN}:443"),
            "-servername",
            SERVER_NAME,
        ])
        .arg("-CAfile")
        .arg(&d.pki.ca_cert)
        .args(["-verify_return_error"]);
    if let Some((cert, key)) = cert {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
    let out = clients::with_stdin(cmd, request.as_bytes())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find(|l| l.starts_with("HTTP/")) {
        Some(status) => Ok((Expect::Admitted, status.trim().to_owned())),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let alert = stderr
                .lines()
                .find(|l| l.contains("alert"))
                .unwrap_or("no HTTP response")
                .trim();
            Ok((Expect::Refused, shorten(alert)))
        }
    }
}

fn shorten(line: &str) -> String {
    // openssl prefixes its error lines with a process id and a source path;
    // the alert name at the end is what matters.
    line.rsplit_once(":SSL alert number")
        .map(|(head, number)| {
            let reason = head.rsplit(':').next().unwrap_or(head);
            format!("{reason} (alert {})", number.trim())
        })
        .unwrap_or_else(|| line.to_owned())
}

fn no_certificate_openssl(d: &Deployment) -> Result<(Expect, String)> {
    s_client(d, None)
}

fn valid_openssl(d: &Deployment) -> Result<(Expect, String)> {
    let physician = &d.pki.physicians[0];
    s_client(d, Some((&physician.cert, &physician.key)))
}

fn without_private_key(d: &Deployment) -> Result<(Expect, String)> {
    let audit = d.audit()?;
    let row = audit
        .rows()
        .find(|row| row.kind == "certificate_without_key")
        .context("befundctl audit reported no row for the certificate without its key")?;
    let observed = if row.observed == "refused" {
        Expect::Refused
    } else {
        Expect::Admitted
    };
    Ok((observed, format!("{}: {}", row.observed, row.detail)))
}

fn full_audit(d: &Deployment) -> Result<(Expect, String)> {
    let audit = d.audit()?;
    let failed: Vec<String> = audit
        .rows()
        .filter(|row| row.verdict == "fail")
        .map(|row| row.kind.to_owned())
        .collect();
    let weaknesses = audit.weaknesses();
    let detail = format!(
        "{} rows, failed: {failed:?}, weaknesses: {weaknesses:?}",
        audit.rows().count()
    );
    if audit.passed && failed.is_empty() && weaknesses.is_empty() {
        Ok((Expect::Admitted, detail))
    } else {
        Ok((Expect::Refused, detail))
    }
}

fn direct_connect(d: &Deployment) -> Result<(Expect, String)> {
    let reached = clients::tcp_connects(
        client(d, "env"),
        &BEFUNDSERVER.to_string(),
        BEFUNDSERVER_PORT,
        3,
    )?;
    Ok(if reached {
        (
            Expect::Admitted,
            format!("{BEFUNDSERVER}:{BEFUNDSERVER_PORT} answered"),
        )
    } else {
        (
            Expect::Unreachable,
            format!("{BEFUNDSERVER}:{BEFUNDSERVER_PORT}: no answer within 3 s"),
        )
    })
}

fn direct_scan(d: &Deployment) -> Result<(Expect, String)> {
    let ports = format!("1-1024,{BEFUNDSERVER_PORT}");
    let open = clients::nmap_open_ports(client(d, "nmap"), &BEFUNDSERVER.to_string(), &ports)?;
    Ok(if open.is_empty() {
        (Expect::Unreachable, format!("ports {ports}: none open"))
    } else {
        (Expect::Admitted, format!("open: {open:?}"))
    })
}

fn gateway_scan(d: &Deployment) -> Result<(Expect, String)> {
    let mut cmd = client(d, "nmap");
    cmd.args(["--min-rate", "5000"]);
    let open = clients::nmap_open_ports(cmd, &GATEWAY_WAN.to_string(), "1-65535")?;
    Ok(if open == [443] {
        (
            Expect::Admitted,
            "ports 1-65535: only 443/tcp open".to_owned(),
        )
    } else {
        (Expect::Refused, format!("open: {open:?}"))
    })
}
