//! The lab's PKI as its operator makes it: a CA, server and client
//! certificates and the CRL from `befundctl`, plus the shared secret
//! between proxy and Befundserver and certificate fingerprints computed by
//! openssl, independently of the product.

use std::{
    ffi::OsStr,
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{command, files::only_file};

/// The operator's tool, run as a process like an operator would.
#[derive(Clone, Debug)]
pub struct Befundctl {
    program: PathBuf,
}

/// A server certificate to issue (`befundctl cert server`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerRequest<'a> {
    /// DNS names (`--dns`).
    pub dns: &'a [&'a str],
    /// IP addresses (`--ip`).
    pub ips: &'a [&'a str],
    /// Key type (`--key`); `None` takes befundctl's default for servers.
    pub key: Option<&'a str>,
}

/// A physician's client certificate to issue (`befundctl cert issue`).
#[derive(Clone, Copy, Debug)]
pub struct ClientRequest<'a> {
    /// Common name (the lab's physician number).
    pub cn: &'a str,
    /// The account at the Befundserver the certificate is bound to.
    pub user: &'a str,
    /// Key type (`--key`); `None` takes befundctl's default for clients.
    pub key: Option<&'a str>,
}

/// What `befundctl cert server` wrote.
#[derive(Clone, Debug)]
pub struct ServerFiles {
    /// The certificate followed by its chain (`server-chain.pem`).
    pub chain: PathBuf,
    /// Its private key (`server.key`).
    pub key: PathBuf,
}

/// What `befundctl cert issue` wrote.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl Befundctl {
    /// The `befundctl` binary at `program`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// `befundctl ca init`: a new CA in `ca_dir`, with key type `key` or
    /// befundctl's default. Returns the CA's certificate.
    pub fn init_ca(&self, ca_dir: &Path, key: Option<&str>) -> Result<PathBuf> {
        let options: Vec<_> = key.map(|key| ("--key", key.as_ref())).into_iter().collect();
        self.run(&["ca", "init"], ca_dir, &options)?;
        Ok(ca_dir.join("ca.crt"))
    }

    /// `befundctl cert server`: the CA in `ca_dir` issues a server
    /// certificate into `out_dir`.
    pub fn issue_server(
        &self,
        ca_dir: &Path,
        request: &ServerRequest<'_>,
        out_dir: &Path,
    ) -> Result<ServerFiles> {
        let mut options: Vec<(&str, &OsStr)> = Vec::new();
        options.extend(request.dns.iter().map(|name| ("--dns", name.as_ref())));
        options.extend(request.ips.iter().map(|ip| ("--ip", ip.as_ref())));
        options.extend(request.key.map(|key| ("--key", key.as_ref())));
        options.push(("--out-dir", out_dir.as_os_str()));
        self.run(&["cert", "server"], ca_dir, &options)?;
        Ok(ServerFiles {
            chain: out_dir.join("server-chain.pem"),
            key: out_dir.join("server.key"),
        })
    }

    /// `befundctl cert issue`: the CA in `ca_dir` issues a physician's
    /// client certificate into `out_dir`.
    pub fn issue_client(
        &self,
        ca_dir: &Path,
        request: &ClientRequest<'_>,
        out_dir: &Path,
    ) -> Result<ClientFiles> {
        let mut options: Vec<(&str, &OsStr)> = vec![
            ("--cn", request.cn.as_ref()),
            ("--user", request.user.as_ref()),
        ];
        options.extend(request.key.map(|key| ("--key", key.as_ref())));
        options.push(("--out-dir", out_dir.as_os_str()));
        self.run(&["cert", "issue"], ca_dir, &options)?;
        Ok(ClientFiles {
            cert: only_file(out_dir, "crt")?,
            key: only_file(out_dir, "key")?,
        })
    }

    /// `befundctl crl`: the current CRL of the CA in `ca_dir`, written to
    /// `out`.
    pub fn write_crl(&self, ca_dir: &Path, out: &Path) -> Result<()> {
        self.run(&["crl"], ca_dir, &[("--out", out.as_os_str())])
    }

    /// `befundctl SUBCOMMAND --dir CA_DIR OPTIONS...`.
    fn run(&self, subcommand: &[&str], ca_dir: &Path, options: &[(&str, &OsStr)]) -> Result<()> {
        let mut cmd = Command::new(&self.program);
        cmd.args(subcommand).arg("--dir").arg(ca_dir);
        for (flag, value) in options {
            cmd.arg(flag).arg(value);
        }
        // Every call names the CA directory; an operator's environment must
        // not point another one in.
        cmd.env_remove("BEFUND_CA_DIR");
        command::run(&mut cmd).map(drop)
    }
}

/// SHA-256 fingerprint of a PEM certificate as lowercase hex without
/// colons, computed by openssl independently of the product.
pub fn fingerprint(cert: &Path) -> Result<String> {
    let line = command::stdout(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
    )?;
    fingerprint_from_openssl(&line)
        .with_context(|| format!("openssl printed no fingerprint for {}", cert.display()))
}

/// The fingerprint in openssl's `sha256 Fingerprint=AB:CD:…` line, as
/// lowercase hex without colons.
fn fingerprint_from_openssl(line: &str) -> Option<String> {
    let (_, hex) = line.trim().rsplit_once('=')?;
    let hex = hex.replace(':', "").to_ascii_lowercase();
    (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// `bytes` random bytes from the kernel as lowercase hex, e.g. for the
/// secret the proxy shows the Befundserver.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut buf))
        .context("failed to read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_lowercase_hex_without_colons() {
        let line = "sha256 Fingerprint=3A:0B:FF:12:9C\n";
        assert_eq!(
            fingerprint_from_openssl(line).as_deref(),
            Some("3a0bff129c")
        );
    }

    #[test]
    fn fingerprint_is_read_from_older_openssl_output_too() {
        let line = "SHA256 Fingerprint=AB:CD";
        assert_eq!(fingerprint_from_openssl(line).as_deref(), Some("abcd"));
    }

    #[test]
    fn output_without_a_fingerprint_is_rejected() {
        assert_eq!(fingerprint_from_openssl("unable to load certificate"), None);
        assert_eq!(fingerprint_from_openssl("sha256 Fingerprint="), None);
        assert_eq!(fingerprint_from_openssl("x=not hex"), None);
    }

    #[test]
    fn random_hex_has_two_digits_per_byte_and_differs() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(a, random_hex(32).unwrap());
    }

    #[test]
    fn befundctl_failure_names_the_command() {
        let ctl = Befundctl::new("/nonexistent/befundctl");
        let error = format!(
            "{:#}",
            ctl.write_crl(Path::new("/ca"), Path::new("/crl.pem"))
                .unwrap_err()
        );
        assert!(
            error.contains("/nonexistent/befundctl crl --dir /ca --out /crl.pem"),
            "{error}"
        );
    }
}
