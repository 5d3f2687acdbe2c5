//! The bench's certificates, issued with `befundctl` as a lab operator
//! would: one CA, the gateway's server certificate (used by both proxies),
//! one physician's client certificate (used by the load generator) and the
//! CA's CRL (checked by both proxies).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use befund_testbed::{
    files::write_private,
    pki::{Befundctl, ClientRequest, ServerRequest, random_hex},
};

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
        let befundctl = Befundctl::new(befundctl);
        let ca_dir = dir.join("ca");
        let ca_cert = befundctl.init_ca(&ca_dir, Some(CA_KEY))?;
        let gateway = ServerRequest {
            dns: &[SERVER_NAME],
            ips: &[],
            key: Some(SERVER_KEY),
        };
        let server = befundctl.issue_server(&ca_dir, &gateway, &dir.join("server"))?;
        let physician = ClientRequest {
            cn: "BENCH0001",
            user: "bench",
            key: Some(CLIENT_KEY),
        };
        let client = befundctl.issue_client(&ca_dir, &physician, &dir.join("client"))?;
        let crl = ca_dir.join("crl.pem");
        befundctl.write_crl(&ca_dir, &crl)?;

        let secret = random_hex(32)?;
        let secret_file = dir.join("proxy-secret");
        write_private(&secret_file, format!("{secret}\n"))?;

        Ok(Self {
            ca_cert,
            crl,
            server_chain: server.chain,
            server_key: server.key,
            client_cert: client.cert,
            client_key: client.key,
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
