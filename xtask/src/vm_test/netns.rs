//! The VM's surroundings: a client and a lab network namespace, each joined
//! to the VM by a TAP device, and processes started inside them. Every guard
//! removes what it made when dropped, also when the test fails.

use std::process::{Child, Command, Stdio};

use anyhow::Result;

use crate::command::{self, succeeds};

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    pub fn create(name: String) -> Result<Self> {
        command::run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self { name };
        netns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `argv` inside the namespace; fails unless it exits 0.
    pub fn run(&self, argv: &[&str]) -> Result<()> {
        command::run(self.command(argv[0]).args(&argv[1..]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !succeeds(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("vm-test: could not delete network namespace {}", self.name);
        }
    }
}

/// A persistent TAP device for one of the VM's NICs, deleted on drop
/// wherever it ended up.
pub struct Tap {
    /// Its name.
    pub name: String,
    netns: Option<String>,
}

impl Tap {
    /// Creates the TAP in the host's namespace, where QEMU opens it.
    pub fn create(name: String) -> Result<Self> {
        command::run(Command::new("ip").args(["tuntap", "add", "dev", &name, "mode", "tap"]))?;
        Ok(Self { name, netns: None })
    }

    /// Moves the TAP (after QEMU has attached to it) into `netns`, gives it
    /// `address` and brings it up.
    pub fn move_into(&mut self, netns: &Netns, address: &str) -> Result<()> {
        command::run(Command::new("ip").args(["link", "set", &self.name, "netns", &netns.name]))?;
        self.netns = Some(netns.name.clone());
        netns.run(&["ip", "address", "add", address, "dev", &self.name])?;
        netns.run(&["ip", "link", "set", &self.name, "up"])
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let deleted = match &self.netns {
            Some(netns) => {
                succeeds(Command::new("ip").args(["-n", netns, "link", "del", &self.name]))
            }
            None => succeeds(Command::new("ip").args(["link", "del", &self.name])),
        };
        // A namespace deleted first takes its TAP with it.
        if !deleted && succeeds(Command::new("ip").args(["link", "show", &self.name])) {
            eprintln!("vm-test: could not delete TAP device {}", self.name);
        }
    }
}

/// A process started inside a namespace, killed on drop.
pub struct NsProcess {
    /// What it is, for messages.
    pub what: String,
    child: Child,
}

impl NsProcess {
    /// Starts `argv` in `netns` with its output discarded.
    pub fn spawn(netns: &Netns, what: &str, argv: &[&str]) -> Result<Self> {
        let mut cmd = netns.command(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        eprintln!("+ {}", command::render(&cmd));
        let child = cmd.spawn()?;
        Ok(Self {
            what: what.to_owned(),
            child,
        })
    }

    /// Starts `argv` in `netns` with its output appended to `log`.
    pub fn spawn_logged(
        netns: &Netns,
        what: &str,
        argv: &[&str],
        log: &std::path::Path,
    ) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        let mut cmd = netns.command(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        eprintln!("+ {}", command::render(&cmd));
        let child = cmd.spawn()?;
        Ok(Self {
            what: what.to_owned(),
            child,
        })
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
