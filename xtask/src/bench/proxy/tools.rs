//! What the proxy bench needs besides the product, installed idempotently:
//! nginx from Debian and the load generator `oha` at a pinned version.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    command::{self, output},
    setup,
};

/// Debian packages: nginx (the comparison), curl and openssl (the check that
/// both proxies demand a client certificate), iproute2 (namespaces).
const PACKAGES: &[&str] = &["nginx-light", "curl", "openssl", "iproute2"];

/// oha, pinned: an HTTP load generator on rustls that presents a client
/// certificate (`--cert`/`--key`), trusts a given CA (`--cacert`) and can open
/// a new connection per request (`--disable-keepalive`).
pub const OHA_VERSION: &str = "1.16.0";

/// Paths and versions of the tools in use.
pub struct Tools {
    /// The load generator.
    pub oha: PathBuf,
    /// `oha --version`.
    pub oha_version: String,
    /// nginx's version and the OpenSSL it was built with.
    pub nginx_version: String,
}

/// Installs what is missing and reports versions.
pub fn install() -> Result<Tools> {
    setup::install_packages(PACKAGES)?;
    let oha = install_oha()?;
    let oha_version = output(Command::new(&oha).arg("--version"))?
        .trim()
        .to_owned();
    // nginx prints its version and build details on stderr.
    let nginx = Command::new("nginx")
        .arg("-V")
        .output()
        .context("failed to run nginx -V")?;
    let text = String::from_utf8_lossy(&nginx.stderr);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("nginx version: "))
        .unwrap_or("nginx (unknown version)");
    let openssl = text
        .lines()
        .find_map(|l| l.strip_prefix("built with "))
        .map(|l| l.split(" (").next().unwrap_or(l))
        .unwrap_or("unknown OpenSSL");
    Ok(Tools {
        oha,
        oha_version,
        nginx_version: format!("{version}, {openssl}"),
    })
}

fn install_oha() -> Result<PathBuf> {
    let path = cargo_home().join("bin/oha");
    let installed = output(Command::new(&path).arg("--version")).unwrap_or_default();
    if installed.split_whitespace().nth(1) == Some(OHA_VERSION) {
        eprintln!("bench: oha {OHA_VERSION} present");
        return Ok(path);
    }
    eprintln!("bench: installing oha {OHA_VERSION} (a few minutes on two cores)");
    command::run(Command::new(env!("CARGO")).args([
        "install",
        "--locked",
        "oha",
        "--version",
        OHA_VERSION,
        "--force",
    ]))?;
    Ok(path)
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, by default
/// `~/.cargo/bin`.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_INSTALL_ROOT")
        .or_else(|| std::env::var_os("CARGO_HOME"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}
