//! Network namespaces, veth pairs, bpffs mounts and temporary directories as
//! RAII guards: whatever a test creates is removed when the guard drops, also
//! when the test panics.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail, ensure};
use nix::sched::{CloneFlags, setns};

/// A name unique to this process and call: `<prefix><pid>x<n>`, at most 15
/// characters so it also fits an interface name.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id());
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// Runs `cmd` and fails with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = run(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name starting with `prefix`, with
    /// loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace that another guard owns; dropping it does
    /// not delete the namespace.
    pub fn existing(name: &str) -> BorrowedNetNs {
        BorrowedNetNs(std::mem::ManuallyDrop::new(Self {
            name: name.to_owned(),
        }))
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets created
    /// in `f` belong to the namespace for their whole life, so they can be
    /// returned and used from anywhere.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).expect("open the namespace handle");
                    setns(ns, CloneFlags::CLONE_NEWNET).expect("enter the namespace");
                    f()
                })
                .join()
                .expect("namespace thread panicked")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A namespace owned elsewhere; derefs to [`NetNs`] and never deletes it.
#[derive(Debug)]
pub struct BorrowedNetNs(std::mem::ManuallyDrop<NetNs>);

impl std::ops::Deref for BorrowedNetNs {
    type Target = NetNs;

    fn deref(&self) -> &NetNs {
        &self.0
    }
}

/// A veth pair joining two namespaces. Deleting either namespace removes it;
/// this guard also removes it explicitly.
#[derive(Debug)]
pub struct Veth {
    /// The end in the first namespace.
    pub a: String,
    /// The end in the second namespace.
    pub b: String,
    ns_a: String,
}

impl Veth {
    /// Creates `a` in `ns_a` and `b` in `ns_b`, both up.
    pub fn new(ns_a: &NetNs, ns_b: &NetNs) -> Result<Self> {
        let a = unique_name("va");
        let b = unique_name("vb");
        ip(&[
            "link",
            "add",
            &a,
            "netns",
            ns_a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            ns_b.name(),
        ])?;
        let veth = Self {
            a,
            b,
            ns_a: ns_a.name().to_owned(),
        };
        ns_a.ip(&["link", "set", &veth.a, "up"])?;
        ns_b.ip(&["link", "set", &veth.b, "up"])?;
        Ok(veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Fails harmlessly when the namespace is already gone.
        let _ = Command::new("ip")
            .args(["-n", &self.ns_a, "link", "del", &self.a])
            .output();
    }
}

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system's temporary directory.
    pub fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(unique_name(prefix));
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A bpf filesystem mounted on a temporary directory, unmounted on drop.
/// `ip netns exec` remounts `/sys`, hiding `/sys/fs/bpf`, so tests pin here.
#[derive(Debug)]
pub struct BpfFs {
    dir: TempDir,
}

impl BpfFs {
    /// Mounts a fresh bpffs.
    pub fn new() -> Result<Self> {
        let dir = TempDir::new("bfs")?;
        let target = dir.path().to_str().context("temp path is UTF-8")?;
        run(Command::new("mount").args(["-t", "bpf", "bpf", target]))?;
        Ok(Self { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(self.dir.path()).output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("cleanup: cannot unmount {}", self.dir.path().display());
        }
    }
}

/// Fails unless this process may create namespaces and load BPF programs.
pub fn require_root() -> Result<()> {
    ensure!(
        nix::unistd::Uid::effective().is_root(),
        "the network-namespace tests need root (run `cargo xtask test` as root)"
    );
    Ok(())
}
