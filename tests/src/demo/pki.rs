//! The demo's certificates, issued with `befundctl` like a lab operator
//! would, plus the self-issued look-alike that the protocol must refuse.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{SERVER_NAME, topology};

/// One physician: account, password and certificate.
#[derive(Clone, Debug)]
pub struct Physician {
    /// Common name of the certificate (the lab's physician number).
    pub cn: String,
    /// Account at the Befundserver.
    pub account: String,
    /// File holding the account's password.
    pub password_file: PathBuf,
    /// The password itself (demo data).
    pub password: String,
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// SHA-256 fingerprint of the certificate, lowercase hex.
    pub fingerprint: String,
}

/// Everything the demo issued.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA directory (`befundctl --dir`).
    pub ca_dir: PathBuf,
    /// The lab CA's certificate.
    pub ca_cert: PathBuf,
    /// The CA's current CRL.
    pub crl: PathBuf,
    /// The gateway's server certificate chain and key.
    pub server_chain: PathBuf,
    /// The gateway's server key.
    pub server_key: PathBuf,
    /// The shared secret between proxy and Befundserver.
    pub proxy_secret: PathBuf,
    /// Two physicians.
    pub physicians: Vec<Physician>,
    /// A self-issued certificate with the first physician's subject.
    pub self_issued_cert: PathBuf,
    /// Its key.
    pub self_issued_key: PathBuf,
}

impl Pki {
    /// Issues the CA, the server certificate and two physicians' certificates
    /// under `dir`.
    pub fn issue(bin_dir: &Path, dir: &Path) -> Result<Self> {
        let befundctl = bin_dir.join("befundctl");
        let ca_dir = dir.join("ca");
        let out = dir.join("issued");
        std::fs::create_dir_all(&out)?;

        run(Command::new(&befundctl)
            .args(["ca", "init", "--dir"])
            .arg(&ca_dir))?;
        let server_dir = out.join("gateway");
        run(Command::new(&befundctl)
            .args(["cert", "server", "--dir"])
            .arg(&ca_dir)
            .args([
                "--dns",
                SERVER_NAME,
                "--ip",
                &topology::GATEWAY_WAN.to_string(),
            ])
            .args(["--ip", topology::GATEWAY_WAN6, "--out-dir"])
            .arg(&server_dir))?;

        let mut physicians = Vec::new();
        for (cn, account, password) in [
            ("ARZT0001", "weber", "Kalium-4.2-mmol"),
            ("ARZT0002", "brandt", "Natrium-140-mmol"),
        ] {
            let cert_dir = out.join(cn);
            run(Command::new(&befundctl)
                .args(["cert", "issue", "--dir"])
                .arg(&ca_dir)
                .args(["--cn", cn, "--user", account, "--out-dir"])
                .arg(&cert_dir))?;
            let cert = only_file(&cert_dir, "crt")?;
            let key = only_file(&cert_dir, "key")?;
            let password_file = dir.join(format!("{account}.password"));
            std::fs::write(&password_file, password)?;
            physicians.push(Physician {
                fingerprint: fingerprint(&cert)?,
                cn: cn.to_owned(),
                account: account.to_owned(),
                password: password.to_owned(),
                password_file,
                cert,
                key,
            });
        }

        let crl = ca_dir.join("crl.pem");
        run(Command::new(&befundctl)
            .args(["crl", "--dir"])
            .arg(&ca_dir)
            .arg("--out")
            .arg(&crl))?;

        let proxy_secret = dir.join("proxy-secret");
        let secret = output(Command::new("openssl").args(["rand", "-hex", "32"]))?;
        write_private(&proxy_secret, secret.trim())?;

        let (self_issued_cert, self_issued_key) = self_issue(&physicians[0].cert, &out)?;
        Ok(Self {
            ca_cert: ca_dir.join("ca.crt"),
            crl,
            server_chain: server_dir.join("server-chain.pem"),
            server_key: server_dir.join("server.key"),
            ca_dir,
            proxy_secret,
            physicians,
            self_issued_cert,
            self_issued_key,
        })
    }
}

/// A self-signed certificate with exactly the subject of `original`, made
/// with openssl: what an attacker who knows a physician's name could build.
fn self_issue(original: &Path, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let subject = output(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "compat", "-in"])
            .arg(original),
    )?;
    let subject = subject
        .trim()
        .trim_start_matches("subject=")
        .trim()
        .to_owned();
    let cert = out.join("self-issued.crt");
    let key = out.join("self-issued.key");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", &subject])
        .args(["-addext", "extendedKeyUsage=clientAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert))?;
    Ok((cert, key))
}

/// SHA-256 fingerprint of a PEM certificate as lowercase hex, computed by
/// openssl independently of the product.
pub fn fingerprint(cert: &Path) -> Result<String> {
    let line = output(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
    )?;
    let hex = line
        .trim()
        .rsplit_once('=')
        .map(|(_, hex)| hex.replace(':', "").to_ascii_lowercase())
        .context("openssl printed no fingerprint")?;
    Ok(hex)
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

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
