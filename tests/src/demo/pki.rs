//! The demo's certificates, issued with `befundctl` like a lab operator
//! would, plus the self-issued look-alike that the protocol must refuse.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;
use befund_testbed::{
    command::{run, stdout},
    files::write_private,
    pki::{Befundctl, ClientRequest, ServerRequest, fingerprint, random_hex},
};

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
        let befundctl = Befundctl::new(bin_dir.join("befundctl"));
        let ca_dir = dir.join("ca");
        let out = dir.join("issued");
        std::fs::create_dir_all(&out)?;

        let ca_cert = befundctl.init_ca(&ca_dir, None)?;
        let wan = topology::GATEWAY_WAN.to_string();
        let server = befundctl.issue_server(
            &ca_dir,
            &ServerRequest {
                dns: &[SERVER_NAME],
                ips: &[&wan, topology::GATEWAY_WAN6],
                key: None,
            },
            &out.join("gateway"),
        )?;

        let mut physicians = Vec::new();
        for (cn, account, password) in [
            ("ARZT0001", "weber", "Kalium-4.2-mmol"),
            ("ARZT0002", "brandt", "Natrium-140-mmol"),
        ] {
            let request = ClientRequest {
                cn,
                user: account,
                key: None,
            };
            let issued = befundctl.issue_client(&ca_dir, &request, &out.join(cn))?;
            let password_file = dir.join(format!("{account}.password"));
            write_private(&password_file, password)?;
            physicians.push(Physician {
                fingerprint: fingerprint(&issued.cert)?,
                cn: cn.to_owned(),
                account: account.to_owned(),
                password: password.to_owned(),
                password_file,
                cert: issued.cert,
                key: issued.key,
            });
        }

        let crl = ca_dir.join("crl.pem");
        befundctl.write_crl(&ca_dir, &crl)?;

        let proxy_secret = dir.join("proxy-secret");
        write_private(&proxy_secret, random_hex(32)?)?;

        let (self_issued_cert, self_issued_key) = self_issue(&physicians[0].cert, &out)?;
        Ok(Self {
            ca_cert,
            crl,
            server_chain: server.chain,
            server_key: server.key,
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
    let subject = stdout(
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
