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
    fs::{File, Permissions},
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
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
    services: Vec<(String, Child)>,
    namespaces: Vec<String>,
    mounted: bool,
    keep_dir: bool,
}

impl Lab {
    /// Builds the namespaces, the link and the bpffs mount.
    pub fn create() -> Result<Self> {
        let id = std::process::id();
        let dir = std::env::temp_dir().join(format!("befund-bench-{id}"));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, Permissions::from_mode(0o700)))
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let mut lab = Self {
            client_ns: format!("bbc-{id}"),
            gateway_ns: format!("bbg-{id}"),
            pin_root: dir.join("bpffs"),
            dir,
            services: Vec::new(),
            namespaces: Vec::new(),
            mounted: false,
            keep_dir: false,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        for ns in [self.client_ns.clone(), self.gateway_ns.clone()] {
            quiet(Command::new("ip").args(["netns", "add", &ns]))?;
            self.namespaces.push(ns.clone());
            self.exec(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        let (client, gateway) = (self.client_ns.clone(), self.gateway_ns.clone());
        quiet(Command::new("ip").args([
            "link",
            "add",
            "cl-wan",
            "netns",
            &client,
            "type",
            "veth",
            "peer",
            "name",
            WAN_INTERFACE,
            "netns",
            &gateway,
        ]))?;

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

        std::fs::create_dir_all(&self.pin_root)?;
        quiet(
            Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&self.pin_root),
        )?;
        self.mounted = true;
        Ok(())
    }

    /// Runs `cmd` inside namespace `ns` and fails unless it exits 0.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Result<()> {
        quiet(Command::new("ip").args(["netns", "exec", ns]).args(cmd))
    }

    /// A command that will run inside namespace `ns`. `ip netns exec`
    /// replaces itself with the program, so the child's id is the program's.
    pub fn command(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Starts a long-running process, its output going to `<dir>/<name>.log`.
    /// It is stopped when the lab is dropped.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<()> {
        let log = File::create(self.log_path(name))?;
        eprintln!("+ {}", command::render(&cmd));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        interrupt::register(child.id());
        self.services.push((name.to_owned(), child));
        Ok(())
    }

    /// The process id of the started process `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, child)| child.id())
    }

    /// Where [`Lab::spawn`] writes a process's output.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Fails if a started process has exited, naming it and showing the end
    /// of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.services {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "{name} exited ({status}); last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
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
        self.keep_dir = true;
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master stops its workers, befund-proxy
        // drains; both are killed if they take too long.
        for (_, child) in &mut self.services {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        for (name, child) in &mut self.services {
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("bench: {name} did not stop within {STOP_GRACE:?}; killing it");
                let _ = child.kill();
            }
            interrupt::unregister(child.id());
            let _ = child.wait();
        }
        if self.mounted {
            let _ = Command::new("umount").arg(&self.pin_root).status();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if self.keep_dir {
            eprintln!(
                "bench: logs and configuration kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn quiet(cmd: &mut Command) -> Result<()> {
    command::output(cmd).map(drop)
}
