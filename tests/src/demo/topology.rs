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
    process::Command,
};

use anyhow::Result;
use befund_testbed::{
    bpffs::BpfFs,
    files::TempDir,
    netns::{Netns, Veth},
    process::{Services, Stop},
};

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

/// Three namespaces, two veth pairs, a bpffs for the filter's pins, a work
/// directory and the started processes; torn down on drop.
pub struct Topology {
    // Drop order is field order: the processes stop first, then the pins
    // go, then the links and namespaces, and the work directory last.
    services: Services,
    pin_mount: BpfFs,
    _links: [Veth; 2],
    /// Namespace of the internet client.
    pub client: Netns,
    /// Namespace of the gateway appliance.
    pub gateway: Netns,
    /// Namespace of the lab network.
    pub lab: Netns,
    /// Work directory (certificates, configs, databases, logs).
    pub dir: PathBuf,
    work: TempDir,
}

impl Topology {
    /// Builds the namespaces and links. `tag` keeps names apart between
    /// users of this module (e.g. `demo`, `e2e`).
    pub fn create(tag: &str) -> Result<Self> {
        let id = format!("{tag}{}", std::process::id());
        let work = TempDir::create(std::env::temp_dir().join(format!("befund-{id}")))?;
        let dir = work.path().to_path_buf();
        let client = Netns::create(format!("bfc-{id}"))?;
        let gateway = Netns::create(format!("bfg-{id}"))?;
        let lab = Netns::create(format!("bfl-{id}"))?;
        let links = [
            Veth::create(&client, "c-wan", &gateway, WAN_INTERFACE)?,
            Veth::create(&gateway, "lan", &lab, "l-lan")?,
        ];
        address(&client, &gateway, &lab)?;
        let pin_mount = BpfFs::mount(dir.join("bpffs"))?;
        Ok(Self {
            // Killed at once on teardown: nothing there waits for a drain.
            services: Services::new(&dir, Stop::Kill),
            pin_mount,
            _links: links,
            client,
            gateway,
            lab,
            dir,
            work,
        })
    }

    /// The bpffs mount used as the filter's pin root.
    pub fn pin_root(&self) -> &Path {
        self.pin_mount.path()
    }

    /// Starts a long-running process, its output going to
    /// `<dir>/<name>.log`. It is killed when the topology is dropped.
    pub fn spawn(&mut self, name: &str, cmd: Command) -> Result<()> {
        self.services.spawn(name, cmd).map(drop)
    }

    /// Kills the process started as `name` and waits for it.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        self.services.kill(name)
    }

    /// Where [`Topology::spawn`] writes a process's output.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.services.log_path(name)
    }

    /// Fails if a spawned process has exited, naming it and showing the end
    /// of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        self.services.check_alive()
    }

    /// Leaves the work directory in place after drop (for `--keep` and for
    /// inspecting a failed run).
    pub fn keep_dir(&mut self) {
        self.work.keep();
    }
}

/// Addresses and routes of the three namespaces (see the module's picture).
fn address(client: &Netns, gateway: &Netns, lab: &Netns) -> Result<()> {
    let setup: [(&Netns, &[&str]); 12] = [
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
    for (netns, argv) in setup {
        netns.run(argv)?;
    }
    Ok(())
}
