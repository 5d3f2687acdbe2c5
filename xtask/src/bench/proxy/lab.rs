//! The bench's network: a client namespace that drives the load and a
//! gateway namespace with both proxies and their shared upstream, joined by a
//! veth pair whose gateway end carries the XDP WAN filter.
//!
//! ```text
//!  client ns                       gateway ns
//!  cl-wan 198.51.100.2 ──veth── wan 198.51.100.1:443  befund-proxy ─┐
//!  (oha, curl)                      198.51.100.3:443  nginx ────────┼─► 127.0.0.1:8080 upstream
//! ```
//!
//! Names carry the process id, so parallel runs cannot collide. `Drop`
//! stops every started process and removes the namespaces, the bpffs mount
//! and (after a successful run) the work directory, also after an error or
//! Ctrl-C.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use befund_testbed::{
    bpffs::BpfFs,
    files::TempDir,
    netns::{Netns, Veth},
    process::{Child, Services, Stop},
};

use super::interrupt;
use crate::command;

/// The load generator's address.
pub const CLIENT_ADDR: &str = "198.51.100.2";
/// Where befund-proxy listens (port 443).
pub const OURS_ADDR: &str = "198.51.100.1";
/// Where nginx listens (port 443).
pub const NGINX_ADDR: &str = "198.51.100.3";
/// The gateway's internet-facing interface, where the filter is attached.
pub const WAN_INTERFACE: &str = "wan";
/// The upstream both proxies forward to, inside the gateway namespace.
pub const UPSTREAM: &str = "127.0.0.1:8080";

/// How long a stopped process gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Two namespaces, a veth pair, a bpffs for the filter's pins, a work
/// directory and the started processes; torn down on drop.
pub struct Lab {
    /// Namespace of the load generator.
    pub client_ns: String,
    /// Namespace of the gateway (both proxies and the upstream).
    pub gateway_ns: String,
    /// Work directory (certificates, configurations, logs).
    pub dir: PathBuf,
    /// bpffs mount used as the filter's pin root.
    pub pin_root: PathBuf,
    // Dropped in this order, after `Drop` has stopped the services: the
    // pins go, then the link and the namespaces, and the work directory last.
    services: Services,
    _pins: BpfFs,
    _link: Veth,
    _namespaces: [Netns; 2],
    work: TempDir,
}

impl Lab {
    /// Builds the namespaces, the link and the bpffs mount.
    pub fn create() -> Result<Self> {
        let id = std::process::id();
        let work =
            TempDir::create_private(std::env::temp_dir().join(format!("befund-bench-{id}")))?;
        let dir = work.path().to_path_buf();
        let client = Netns::create(format!("bbc-{id}"))?;
        let gateway = Netns::create(format!("bbg-{id}"))?;
        let link = Veth::create(&client, "cl-wan", &gateway, WAN_INTERFACE)?;
        let pins = BpfFs::mount(dir.join("bpffs"))?;
        let mut lab = Self {
            client_ns: client.name().to_owned(),
            gateway_ns: gateway.name().to_owned(),
            pin_root: pins.path().to_path_buf(),
            services: Services::new(&dir, Stop::Terminate { grace: STOP_GRACE }),
            dir,
            _pins: pins,
            _link: link,
            _namespaces: [client, gateway],
            work,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let (client, gateway) = (self.client_ns.clone(), self.gateway_ns.clone());
        let client_addr = format!("{CLIENT_ADDR}/24");
        let ours = format!("{OURS_ADDR}/24");
        let nginx = format!("{NGINX_ADDR}/24");
        let steps: [(&str, &[&str]); 8] = [
            (
                &client,
                &["ip", "addr", "add", &client_addr, "dev", "cl-wan"],
            ),
            (&client, &["ip", "link", "set", "cl-wan", "up"]),
            // Every request of the handshake runs is a new connection: give
            // the load generator the whole port range.
            (
                &client,
                &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"],
            ),
            (&client, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]),
            (
                &gateway,
                &["ip", "addr", "add", &ours, "dev", WAN_INTERFACE],
            ),
            (
                &gateway,
                &["ip", "addr", "add", &nginx, "dev", WAN_INTERFACE],
            ),
            (&gateway, &["ip", "link", "set", WAN_INTERFACE, "up"]),
            (&gateway, &["sysctl", "-qw", "net.core.somaxconn=4096"]),
        ];
        for (ns, cmd) in steps {
            self.exec(ns, cmd)?;
        }
        Ok(())
    }

    /// Runs `cmd` inside namespace `ns` and fails unless it exits 0.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Result<()> {
        Netns::existing(ns).run(cmd)
    }

    /// A command that will run inside namespace `ns`. `ip netns exec`
    /// replaces itself with the program, so the child's id is the program's.
    pub fn command(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        Netns::existing(ns).command(program)
    }

    /// Starts a long-running process, its output going to `<dir>/<name>.log`.
    /// It is stopped when the lab is dropped.
    pub fn spawn(&mut self, name: &str, cmd: Command) -> Result<()> {
        eprintln!("+ {}", command::render(&cmd));
        let child = self.services.spawn(name, cmd)?;
        interrupt::register(child.id());
        Ok(())
    }

    /// The process id of the started process `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.services.get(name).map(Child::id)
    }

    /// Where [`Lab::spawn`] writes a process's output.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.services.log_path(name)
    }

    /// Fails if a started process has exited, naming it and showing the end
    /// of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        self.services.check_alive()
    }

    /// Waits until `addr` accepts TCP connections from inside namespace
    /// `ns`, failing early if a started process died.
    pub fn wait_for_port(&mut self, what: &str, ns: &str, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            interrupt::check()?;
            self.check_alive()?;
            // bash's /dev/tcp connects from inside the namespace without
            // sending a byte.
            let probe = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
            let connected = self
                .command(ns, "bash")
                .args(["-c", &probe])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if connected {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.check_alive()?;
        bail!("{what} did not accept connections on {addr} within 30 s")
    }

    /// Leaves the work directory in place after drop, for the logs.
    pub fn keep_dir(&mut self) {
        self.work.keep();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Forgotten before they are reaped (their ids may then be reused);
        // stopping sends SIGTERM to them all anyway.
        for id in self.services.ids() {
            interrupt::unregister(id);
        }
        // SIGTERM first: nginx's master stops its workers, befund-proxy
        // drains; both are killed if they take too long.
        self.services.stop_all();
        if self.work.is_kept() {
            eprintln!(
                "bench: logs and configuration kept in {}",
                self.dir.display()
            );
        }
    }
}
