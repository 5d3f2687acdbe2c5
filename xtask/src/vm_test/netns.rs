//! The VM's surroundings: a client and a lab network namespace
//! ([`Netns`]), each joined to the VM by a TAP device, and processes
//! started inside them. Every guard removes what it made when dropped, also
//! when the test fails.

use std::{path::Path, process::Command};

use anyhow::Result;
use befund_testbed::{
    netns::Netns,
    process::{Child, Stop},
};

use crate::command::{self, succeeds};

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
        command::run(Command::new("ip").args(["link", "set", &self.name, "netns", netns.name()]))?;
        self.netns = Some(netns.name().to_owned());
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

/// Starts `argv` in `netns` as `what`, its output appended to `log` or
/// discarded; killed on drop.
pub fn spawn(netns: &Netns, what: &str, argv: &[&str], log: Option<&Path>) -> Result<Child> {
    let mut cmd = netns.command(argv[0]);
    cmd.args(&argv[1..]);
    eprintln!("+ {}", command::render(&cmd));
    match log {
        Some(log) => Child::spawn_logged(what, cmd, log, Stop::Kill),
        None => Child::spawn(what, cmd, Stop::Kill),
    }
}
