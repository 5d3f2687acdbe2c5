//! Before measuring: both proxies answer a client with the physician's
//! certificate with 200 and refuse one without a certificate, checked with
//! curl. A comparison in which one side did not demand the certificate would
//! measure nothing.

use std::process::Command;

use anyhow::{Result, bail};

use super::{
    lab::Lab,
    pki::{Pki, SERVER_NAME, path_str},
    servers::Proxy,
};

/// Checks both proxies; fails naming the proxy that misbehaves.
pub fn check(lab: &Lab, pki: &Pki) -> Result<()> {
    for proxy in Proxy::BOTH {
        let (status, ok) = curl(lab, pki, proxy, true)?;
        if !ok || status != "200" {
            bail!(
                "{} did not answer 200 to a client with a valid certificate (curl: {status}); \
                 see the logs in {}",
                proxy.name(),
                lab.dir.display()
            );
        }
        // befund-proxy refuses during the handshake; nginx completes it and
        // answers 400. Either way the request must not get through.
        let (status, _) = curl(lab, pki, proxy, false)?;
        if status.starts_with('2') {
            bail!(
                "{} answered {status} to a client without a certificate; it must refuse it",
                proxy.name()
            );
        }
        let how = match status.as_str() {
            "" | "000" => "in the TLS handshake".to_owned(),
            status => format!("with status {status}"),
        };
        eprintln!(
            "bench: {} admits the physician's certificate and refuses a client without one {how}",
            proxy.name()
        );
    }
    Ok(())
}

/// curl's status code output and whether curl exited 0.
fn curl(lab: &Lab, pki: &Pki, proxy: Proxy, with_cert: bool) -> Result<(String, bool)> {
    let addr = proxy.addr();
    let mut cmd: Command = lab.command(&lab.client_ns, "curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10"])
        .args(["--cacert", path_str(&pki.ca_cert)?])
        .arg("--resolve")
        .arg(format!("{SERVER_NAME}:443:{}", addr.ip()));
    if with_cert {
        cmd.args(["--cert", path_str(&pki.client_cert)?])
            .args(["--key", path_str(&pki.client_key)?]);
    }
    cmd.arg(format!("https://{SERVER_NAME}/befunde"));
    let out = cmd.output()?;
    Ok((
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        out.status.success(),
    ))
}
