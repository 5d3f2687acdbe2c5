//! The bench's certificates, issued with `befundctl` as a lab operator
//! would: one CA, the gateway's server certificate (used by both proxies),
//! one physician's client certificate (used by the load generator) and the
//! CA's CRL (checked by both proxies).

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::command;

/// The name clients use for the gateway.
pub const SERVER_NAME: &str = "befund.labor.test";

/// Key types, named explicitly so the report can state them.
pub const CA_KEY: &str = "ecdsa-p384";
/// The server certificate's key (befundctl's default for servers).
pub const SERVER_KEY: &str = "rsa3072";
/// The client certificate's key (befundctl's default for physicians).
pub const CLIENT_KEY: &str = "rsa2048";

/// Everything issued for the bench.
pub struct Pki {
    /// The CA certificate (client CA of both proxies, server CA of the client).
    pub ca_cert: PathBuf,
    /// The CA's CRL.
    pub crl: PathBuf,
    /// Server certificate followed by its chain.
    pub server_chain: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The physician's certificate.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// The shared secret both proxies send to the upstream.
    pub secret_file: PathBuf,
    /// The same secret, for nginx's configuration.
    pub secret: String,
}

impl Pki {
    /// Issues everything under `dir` with the `befundctl` at `befundctl`.
    pub fn issue(befundctl: &Path, dir: &Path) -> Result<Self> {
        let ca_dir = dir.join("ca");
        let ctl = |args: &[&str]| -> Result<()> {
            command::output(
                Command::new(befundctl)
                    .args(args)
                    .env_remove("BEFUND_CA_DIR"),
            )
            .map(drop)
        };
        let ca = path_str(&ca_dir)?;
        ctl(&["ca", "init", "--dir", ca, "--key", CA_KEY])?;

        let server_dir = dir.join("server");
        ctl(&[
            "cert",
            "server",
            "--dir",
            ca,
            "--dns",
            SERVER_NAME,
            "--key",
            SERVER_KEY,
            "--out-dir",
            path_str(&server_dir)?,
        ])?;

        let client_dir = dir.join("client");
        ctl(&[
            "cert",
            "issue",
            "--dir",
            ca,
            "--cn",
            "BENCH0001",
            "--user",
            "bench",
            "--key",
            CLIENT_KEY,
            "--out-dir",
            path_str(&client_dir)?,
        ])?;

        let crl = ca_dir.join("crl.pem");
        ctl(&["crl", "--dir", ca, "--out", path_str(&crl)?])?;

        let secret = random_hex(32)?;
        let secret_file = dir.join("proxy-secret");
        write_private(&secret_file, &secret)?;

        Ok(Self {
            ca_cert: ca_dir.join("ca.crt"),
            crl,
            server_chain: server_dir.join("server-chain.pem"),
            server_key: server_dir.join("server.key"),
            client_cert: only_file(&client_dir, "crt")?,
            client_key: only_file(&client_dir, "key")?,
            secret_file,
            secret,
        })
    }
}

/// `path` as UTF-8, which configuration files and command lines need here.
pub fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

/// `bytes` random bytes from the kernel, as lowercase hex.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("failed to read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    writeln!(file, "{contents}")?;
    Ok(())
}

/// The one file with extension `ext` in `dir` (befundctl names issued
/// files after CN and serial).
fn only_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one .{ext} file in {}, found {found:?}",
            dir.display()
        ),
    }
}
