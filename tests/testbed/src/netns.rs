//! Network namespaces and the veth pairs that join them, as guards: what a
//! guard created is deleted when it drops, also when a test panics.

use std::{ffi::OsStr, fs::File, path::Path, process::Command};

use anyhow::{Context as _, Result};
use nix::sched::{CloneFlags, setns};

use crate::{command, unique_name};

/// `ip ARGS...`; returns what it printed.
pub fn ip(args: &[&str]) -> Result<String> {
    command::stdout(Command::new("ip").args(args))
}

/// A network namespace with its loopback up, deleted on drop when this
/// guard created it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Creates the namespace `name`. Callers that need fixed names (the
    /// demo, the benchmarks) put the process id into them themselves.
    pub fn create(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        ip(&["netns", "add", &name])?;
        let netns = Self { name, owned: true };
        netns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Creates a namespace with a [`unique_name`] starting with `prefix`.
    pub fn unique(prefix: &str) -> Result<Self> {
        Self::create(unique_name(prefix))
    }

    /// A handle on a namespace that another guard owns, e.g. for a thread;
    /// dropping it leaves the namespace alone.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`; returns what it printed.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace. `ip netns exec`
    /// replaces itself with the program, so the child's id is the
    /// program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` (program first) inside the namespace; fails unless it
    /// exits 0.
    pub fn run(&self, argv: &[&str]) -> Result<()> {
        let (program, args) = argv.split_first().context("no command to run")?;
        command::run(self.command(program).args(args)).map(drop)
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets created
    /// in `f` belong to the namespace for their whole life, so they can be
    /// returned and used from anywhere.
    ///
    /// # Panics
    ///
    /// If the namespace cannot be entered, or `f` panics.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let netns = File::open(&path).expect("open the namespace handle");
                    setns(netns, CloneFlags::CLONE_NEWNET).expect("enter the namespace");
                    f()
                })
                .join()
                .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "cleanup: cannot delete network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// A veth pair joining two namespaces, both ends up, deleted on drop.
/// Deleting either namespace deletes the pair too; then the guard has
/// nothing left to do.
#[derive(Debug)]
pub struct Veth {
    a: String,
    b: String,
    netns_a: String,
}

impl Veth {
    /// Creates the end `a` in `netns_a`, joined to the end `b` in
    /// `netns_b`. The names live inside the namespaces, so fixed names do
    /// not collide between runs.
    pub fn create(netns_a: &Netns, a: &str, netns_b: &Netns, b: &str) -> Result<Self> {
        ip(&[
            "link",
            "add",
            a,
            "netns",
            netns_a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            netns_b.name(),
        ])?;
        let veth = Self {
            a: a.to_owned(),
            b: b.to_owned(),
            netns_a: netns_a.name().to_owned(),
        };
        netns_a.ip(&["link", "set", a, "up"])?;
        netns_b.ip(&["link", "set", b, "up"])?;
        Ok(veth)
    }

    /// Creates a pair with [`unique_name`]s (`va…` in `netns_a`, `vb…` in
    /// `netns_b`).
    pub fn unique(netns_a: &Netns, netns_b: &Netns) -> Result<Self> {
        Self::create(netns_a, &unique_name("va"), netns_b, &unique_name("vb"))
    }

    /// The end in the first namespace.
    pub fn a(&self) -> &str {
        &self.a
    }

    /// The end in the second namespace.
    pub fn b(&self) -> &str {
        &self.b
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Fails harmlessly when the namespace, and with it the pair, is gone.
        let _ = Command::new("ip")
            .args(["-n", &self.netns_a, "link", "del", &self.a])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_runs_the_program_through_ip_netns_exec() {
        let netns = Netns::existing("bfc-demo42");
        let mut cmd = netns.command("curl");
        cmd.arg("-sS");
        assert_eq!(command::render(&cmd), "ip netns exec bfc-demo42 curl -sS");
    }

    #[test]
    fn handle_on_an_existing_namespace_does_not_own_it() {
        let netns = Netns::existing("bfg-e2e7");
        assert_eq!(netns.name(), "bfg-e2e7");
        assert!(!netns.owned);
    }

    #[test]
    fn running_nothing_is_an_error() {
        assert!(Netns::existing("unused").run(&[]).is_err());
    }
}
