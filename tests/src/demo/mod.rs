//! The embedded default of the whole system: `cargo xtask demo`.
//!
//! Builds the client, gateway and lab namespaces, issues a CA and
//! certificates with `befundctl`, starts the reference Befundserver in the lab
//! and `befund-proxy run` on the gateway with the XDP filter on its WAN
//! interface, then runs the lab's access protocol from the client namespace
//! with real clients (curl, openssl, nmap, `befundctl audit`).

pub mod audit;
pub mod clients;
pub mod pki;
pub mod protocol;
pub mod report;
pub mod topology;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use befund_testbed::netns::Netns;

use self::topology::Topology;

/// The name physicians use for the gateway.
pub const SERVER_NAME: &str = "befund.labor.test";
/// The Befundserver's port on the lab network.
pub const BEFUNDSERVER_PORT: u16 = 8080;

/// Where the binaries are and what to do at the end.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory holding `befund-proxy`, `befundctl` and `befundserver`.
    pub bin_dir: PathBuf,
    /// A tag that keeps namespace names apart between users (`demo`, `e2e`).
    pub tag: String,
    /// Extra environment of the gateway daemon (e.g. `NOTIFY_SOCKET`).
    pub gateway_env: Vec<(String, String)>,
    /// `[runtime] user` of the gateway: the daemon drops to this user after
    /// start-up; the files it re-reads are made readable for it.
    pub runtime_user: Option<String>,
}

/// A running demo deployment: topology, PKI and started services.
pub struct Deployment {
    /// The namespaces and processes; dropping it removes everything.
    pub topology: Topology,
    /// Certificates and keys issued for the demo.
    pub pki: pki::Pki,
    /// Where the binaries are.
    pub bin_dir: PathBuf,
    /// `befundctl audit`'s protocol, run once and shared by the rows that
    /// use it.
    audit: std::cell::OnceCell<audit::AuditOutcome>,
}

impl Deployment {
    /// Builds the topology, issues the PKI and starts the Befundserver and
    /// the gateway, and waits until the gateway answers on its HTTPS port.
    pub fn start(options: &Options) -> Result<Self> {
        for bin in ["befund-proxy", "befundctl", "befundserver"] {
            let path = options.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} is missing; build with `cargo build --release --bins`",
                    path.display()
                );
            }
        }
        let mut topology = Topology::create(&options.tag)?;
        let pki = match pki::Pki::issue(&options.bin_dir, &topology.dir) {
            Ok(pki) => pki,
            Err(e) => {
                topology.keep_dir();
                return Err(e.context(format!("files kept in {}", topology.dir.display())));
            }
        };
        let mut deployment = Self {
            bin_dir: options.bin_dir.clone(),
            pki,
            topology,
            audit: std::cell::OnceCell::new(),
        };
        deployment.setup_befundserver()?;
        deployment.start_befundserver()?;
        if let Some(user) = &options.runtime_user {
            deployment.grant_runtime_user(user)?;
        }
        deployment.start_gateway(&options.gateway_env, options.runtime_user.as_deref())?;
        Ok(deployment)
    }

    /// `befundctl audit`'s protocol against this deployment (run on first use).
    pub fn audit(&self) -> Result<&audit::AuditOutcome> {
        if let Some(done) = self.audit.get() {
            return Ok(done);
        }
        let outcome = audit::run(self)?;
        Ok(self.audit.get_or_init(|| outcome))
    }

    /// Path of one of the product's binaries.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn setup_befundserver(&mut self) -> Result<()> {
        let dir = self.topology.dir.join("befundserver");
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("befund.sqlite");
        let server = self.bin("befundserver");
        let run = |args: &[&std::ffi::OsStr]| -> Result<()> {
            let out = std::process::Command::new(&server).args(args).output()?;
            if !out.status.success() {
                bail!(
                    "befundserver {:?} failed: {}",
                    args,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        run(&["init".as_ref(), "--db".as_ref(), db.as_os_str()])?;
        for physician in &self.pki.physicians {
            run(&[
                "add-user".as_ref(),
                "--db".as_ref(),
                db.as_os_str(),
                "--username".as_ref(),
                physician.account.as_ref(),
                "--password-file".as_ref(),
                physician.password_file.as_os_str(),
                "--cert-fingerprint".as_ref(),
                physician.fingerprint.as_ref(),
            ])?;
            run(&[
                "seed-demo".as_ref(),
                "--db".as_ref(),
                db.as_os_str(),
                "--username".as_ref(),
                physician.account.as_ref(),
            ])?;
        }
        Ok(())
    }

    /// Starts the Befundserver in the lab namespace (its database was set
    /// up by [`Deployment::start`]) and waits until it accepts connections.
    pub fn start_befundserver(&mut self) -> Result<()> {
        let db = self.topology.dir.join("befundserver/befund.sqlite");
        let server = self.bin("befundserver");
        let listen = format!("{}:{BEFUNDSERVER_PORT}", topology::BEFUNDSERVER);
        let mut cmd = self.topology.lab.command(&server);
        cmd.args(["serve", "--db"])
            .arg(&db)
            .args(["--listen", &listen, "--proxy-secret-file"])
            .arg(&self.pki.proxy_secret);
        self.topology.spawn("befundserver", cmd)?;
        let lab = Netns::existing(self.topology.lab.name());
        self.wait_for_port(
            "the Befundserver",
            &lab,
            &topology::BEFUNDSERVER.to_string(),
            BEFUNDSERVER_PORT,
        )
    }

    /// Stops the Befundserver (SIGKILL, as a crash would).
    pub fn stop_befundserver(&mut self) -> Result<()> {
        self.topology.stop("befundserver")
    }

    /// The gateway daemon's process id, from its pid file.
    pub fn gateway_pid(&self) -> Result<i32> {
        let text = std::fs::read_to_string(self.gateway_pid_file())
            .context("failed to read the gateway's pid file")?;
        text.trim()
            .parse()
            .with_context(|| format!("pid file holds {text:?}"))
    }

    /// Where the gateway daemon writes its pid.
    pub fn gateway_pid_file(&self) -> PathBuf {
        self.topology.dir.join("gateway/befund-proxy.pid")
    }

    /// Lets `user` read what the daemon re-reads after dropping privileges
    /// (certificate, key, CA bundle, CRL: group-readable for the user's group,
    /// directories traversable) and write the firewall state directory.
    fn grant_runtime_user(&self, user: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;

        let entry =
            nix::unistd::User::from_name(user)?.with_context(|| format!("no user {user}"))?;
        let gateway = self.topology.dir.join("gateway");
        std::fs::create_dir_all(&gateway)?;
        std::os::unix::fs::chown(&gateway, Some(entry.uid.as_raw()), Some(entry.gid.as_raw()))?;
        let pki = &self.pki;
        for file in [&pki.server_chain, &pki.server_key, &pki.ca_cert, &pki.crl] {
            std::os::unix::fs::chown(file, None, Some(entry.gid.as_raw()))?;
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o640))?;
            let mut dir = file.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(&self.topology.dir)) {
                let mode = std::fs::metadata(d)?.permissions().mode();
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711))?;
                dir = d.parent();
            }
        }
        Ok(())
    }

    fn start_gateway(&mut self, env: &[(String, String)], user: Option<&str>) -> Result<()> {
        let config = self.write_gateway_config(user)?;
        let check = std::process::Command::new(self.bin("befund-proxy"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()?;
        if !check.status.success() {
            bail!(
                "the demo's gateway configuration is invalid: {}",
                String::from_utf8_lossy(&check.stderr).trim()
            );
        }

        let mut cmd = self.topology.gateway.command(self.bin("befund-proxy"));
        cmd.args(["run", "--config"]).arg(&config);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        self.topology.spawn("befund-proxy", cmd)?;
        let client = Netns::existing(self.topology.client.name());
        self.wait_for_port(
            "the gateway's HTTPS port",
            &client,
            &topology::GATEWAY_WAN.to_string(),
            443,
        )
    }

    /// The gateway's configuration file.
    pub fn gateway_config(&self) -> PathBuf {
        self.topology.dir.join("gateway/befund.toml")
    }

    fn write_gateway_config(&self, user: Option<&str>) -> Result<PathBuf> {
        let dir = self.topology.dir.join("gateway");
        std::fs::create_dir_all(&dir)?;
        let path = self.gateway_config();
        let pki = &self.pki;
        let text = format!(
            r#"# Demo gateway: WAN {wan} in namespace {gw_ns}, lab network {lab_net}.
[firewall]
interface = "{wan_if}"
proxy_addresses = ["{wan}", "{wan6}"]
proxy_port = 443
protected = ["{lab_net}"]
pin_root = "{pin_root}"
state_file = "{state}"

[tls]
listen = ["{wan}:443", "[{wan6}]:443"]
server_name = "{name}"
certificate = "{server_chain}"
private_key = "{server_key}"
client_ca = "{ca}"
crls = ["{crl}"]

[upstream]
url = "http://{befundserver}:{port}"

[identity]
secret_file = "{secret}"

[log]
audit = "{audit}"

[runtime]
pid_file = "{pid_file}"
{user}
"#,
            wan = topology::GATEWAY_WAN,
            wan6 = topology::GATEWAY_WAN6,
            gw_ns = self.topology.gateway.name(),
            lab_net = topology::LAB_NETWORK,
            wan_if = topology::WAN_INTERFACE,
            pin_root = self.topology.pin_root().display(),
            state = dir.join("firewall.json").display(),
            name = SERVER_NAME,
            server_chain = pki.server_chain.display(),
            server_key = pki.server_key.display(),
            ca = pki.ca_cert.display(),
            crl = pki.crl.display(),
            befundserver = topology::BEFUNDSERVER,
            port = BEFUNDSERVER_PORT,
            secret = pki.proxy_secret.display(),
            audit = dir.join("audit.jsonl").display(),
            pid_file = self.gateway_pid_file().display(),
            user = user.map(|u| format!("user = \"{u}\"")).unwrap_or_default(),
        );
        std::fs::write(&path, text)
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(path)
    }

    /// Waits until a TCP connection from namespace `from` to `addr:port`
    /// succeeds, failing early if a started process died.
    fn wait_for_port(&mut self, what: &str, from: &Netns, addr: &str, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            self.topology.check_alive()?;
            if clients::tcp_connects(from.command("env"), addr, port, 1)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.topology.check_alive()?;
        bail!("{what} did not become reachable within 30 s")
    }
}
