//! The demo's network: an internet client, the gateway appliance and the lab
//! network, each in its own network namespace, joined by veth pairs.
//!
//! ```text
//!  client ns                 gateway ns                     lab ns
//!  c-wan 198.51.100.2 ─veth─ wan 198.51.100.1   lan 10.20.0.1 ─veth─ l-lan 10.20.0.5
//!        2001:db8:100::2          2001:db8:100::1                    (Befundserver)
//! ```
//!
//! Every name carries the process id, so parallel runs cannot collide, and
//! [`Topology`]'s `Drop` removes every process, mount and namespace it made,
//! also when a test panics.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The gateway's WAN (internet-facing) address.
pub const GATEWAY_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The internet client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The gateway's lab-side address.
pub const GATEWAY_LAN: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
/// The Befundserver's address on the lab network.
pub const BEFUNDSERVER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);
/// The lab network, protected by the WAN filter.
pub const LAB_NETWORK: &str = "10.20.0.0/24";
/// The gateway's WAN address, IPv6.
pub const GATEWAY_WAN6: &str = "2001:db8:100::1";
/// The client's address, IPv6.
pub const CLIENT6: &str = "2001:db8:100::2";
/// Name of the gateway's WAN interface.
pub const WAN_INTERFACE: &str = "wan";

/// Three namespaces, two veth pairs, a bpffs for the filter's pins and a
/// work directory; torn down on drop.
pub struct Topology {
    /// Namespace of the internet client.
    pub client: String,
    /// Namespace of the gateway appliance.
    pub gateway: String,
    /// Namespace of the lab network.
    pub lab: String,
    /// Work directory (certificates, configs, databases, logs).
    pub dir: PathBuf,
    /// bpffs mount used as the filter's pin root.
    pub pin_root: PathBuf,
    children: Vec<(String, Child)>,
    created: Vec<String>,
    mounted: bool,
    keep_dir: bool,
}

impl Topology {
    /// Builds the namespaces and links. `tag` keeps names apart between
    /// users of this module (e.g. `demo`, `e2e`).
    pub fn create(tag: &str) -> Result<Self> {
        let id = format!("{tag}{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("befund-{id}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let mut topology = Self {
            client: format!("bfc-{id}"),
            gateway: format!("bfg-{id}"),
            lab: format!("bfl-{id}"),
            pin_root: dir.join("bpffs"),
            dir,
            children: Vec::new(),
            created: Vec::new(),
            mounted: false,
            keep_dir: false,
        };
        topology.build()?;
        Ok(topology)
    }

    fn build(&mut self) -> Result<()> {
        for ns in [self.client.clone(), self.gateway.clone(), self.lab.clone()] {
            ip(&["netns", "add", &ns])?;
            self.created.push(ns.clone());
            self.exec(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        let (client, gateway, lab) = (&self.client, &self.gateway, &self.lab);

        ip(&[
            "link",
            "add",
            "c-wan",
            "netns",
            client,
            "type",
            "veth",
            "peer",
            "name",
            WAN_INTERFACE,
            "netns",
            gateway,
        ])?;
        ip(&[
            "link", "add", "lan", "netns", gateway, "type", "veth", "peer", "name", "l-lan",
            "netns", lab,
        ])?;

        let setup: [(&str, &[&str]); 12] = [
            (
                client,
                &["ip", "addr", "add", "198.51.100.2/24", "dev", "c-wan"],
            ),
            (
                client,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    "2001:db8:100::2/64",
                    "dev",
                    "c-wan",
                    "nodad",
                ],
            ),
            (client, &["ip", "link", "set", "c-wan", "up"]),
            // The client knows a route to the lab network through the gateway,
            // so a direct attempt really reaches the gateway's filter.
            (
                client,
                &["ip", "route", "add", LAB_NETWORK, "via", "198.51.100.1"],
            ),
            (
                gateway,
                &["ip", "addr", "add", "198.51.100.1/24", "dev", WAN_INTERFACE],
            ),
            (
                gateway,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    "2001:db8:100::1/64",
                    "dev",
                    WAN_INTERFACE,
                    "nodad",
                ],
            ),
            (gateway, &["ip", "link", "set", WAN_INTERFACE, "up"]),
            (
                gateway,
                &["ip", "addr", "add", "10.20.0.1/24", "dev", "lan"],
            ),
            (gateway, &["ip", "link", "set", "lan", "up"]),
            (gateway, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]),
            (lab, &["ip", "addr", "add", "10.20.0.5/24", "dev", "l-lan"]),
            (lab, &["ip", "link", "set", "l-lan", "up"]),
        ];
        for (ns, cmd) in setup {
            self.exec(ns, cmd)?;
        }

        std::fs::create_dir_all(&self.pin_root)?;
        run(Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&self.pin_root))?;
        self.mounted = true;
        Ok(())
    }

    /// Runs `cmd` inside namespace `ns` and fails unless it exits 0.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Result<()> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(cmd))
    }

    /// A command that will run inside namespace `ns`.
    pub fn command(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Starts a long-running process in `ns`, its output going to
    /// `<dir>/<name>.log`. It is killed when the topology is dropped.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<()> {
        let log = self.log_path(name);
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Kills the process started as `name` and waits for it.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let index = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("no process {name} runs"))?;
        let (_, mut child) = self.children.remove(index);
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Where [`Topology::spawn`] writes a process's output.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Fails if a spawned process has exited, naming it and showing the end
    /// of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
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

    /// Leaves the work directory in place after drop (for `--keep` and for
    /// inspecting a failed run).
    pub fn keep_dir(&mut self) {
        self.keep_dir = true;
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.mounted {
            let _ = Command::new("umount").arg(&self.pin_root).status();
        }
        for ns in self.created.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `path` exists; a small helper for polling readiness files.
pub fn exists(path: &Path) -> bool {
    path.exists()
}
