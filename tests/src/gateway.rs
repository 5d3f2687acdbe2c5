//! A gateway topology in network namespaces with the real `befund-proxy`
//! daemon guarding it, and the real `befundctl` to operate it.
//!
//! ```text
//!  client ns                         gateway ns
//!  192.0.2.100 (client)   veth      192.0.2.1  (gateway's own address)
//!  192.0.2.200 (blocked)  ======    192.0.2.10 (proxy address)
//!                                   192.0.2.20 (protected address)
//! ```

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use befund_testbed::{
    bpffs::BpfFs,
    command::run,
    files::{TempDir, write_private},
    netns::{Netns, Veth},
    pki::{Befundctl, ServerRequest, random_hex},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::harness::profile_dir;

/// The gateway's own address (not a proxy address).
pub const GATEWAY_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// The proxy's address.
pub const PROXY_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
/// An address on the gateway that the configuration protects.
pub const PROTECTED_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
/// The client's address.
pub const CLIENT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
/// A second client address that the configuration blocks.
pub const BLOCKED_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
/// The proxy's IPv6 address.
pub const PROXY_ADDR6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
/// The client's IPv6 address.
pub const CLIENT_ADDR6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));
/// The proxy port the configuration opens.
pub const PROXY_PORT: u16 = 443;

/// How the filter is attached in a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Driver mode (veth supports it).
    Native,
    /// Generic mode.
    Skb,
}

impl Mode {
    fn config_value(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }

    /// How `ip link` names an attachment in this mode.
    pub fn ip_link_keyword(self) -> &'static str {
        match self {
            Self::Native => "xdp ",
            Self::Skb => "xdpgeneric",
        }
    }
}

/// The path of a binary of this workspace (`befund-proxy`, `befundctl`),
/// built once per test process so it matches the sources.
pub fn binary(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| build_binaries().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(dir.join(name))
}

fn build_binaries() -> Result<PathBuf> {
    let profile_dir = profile_dir()?;
    let target_dir = profile_dir.parent().context("no target directory")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "befund-proxy",
            "--bins",
            "--target-dir",
        ])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(profile_dir)
}

/// The two namespaces, the veth, a bpffs for the pins, the configuration,
/// and the daemon when it runs. Drop order is field order: the daemon
/// stops before the namespaces go.
pub struct Gateway {
    daemon: Option<Daemon>,
    veth: Veth,
    /// The client side.
    pub client: Netns,
    /// The gateway side, where the daemon runs.
    pub gw: Netns,
    bpffs: BpfFs,
    dir: TempDir,
    mode: Mode,
    starts: u32,
}

impl Gateway {
    /// Builds the topology (no filter yet) with the given extra `[firewall]`
    /// lines.
    pub fn new(mode: Mode, extra_config: &str) -> Result<Self> {
        require_root()?;
        let client = Netns::unique("fwc")?;
        let gw = Netns::unique("fwg")?;
        let veth = Veth::unique(&client, &gw)?;
        let bpffs = BpfFs::unique()?;
        let dir = TempDir::unique("fwt")?;

        for addr in [CLIENT_ADDR, BLOCKED_ADDR] {
            client.ip(&["addr", "add", &format!("{addr}/24"), "dev", veth.a()])?;
        }
        for addr in [GATEWAY_ADDR, PROXY_ADDR, PROTECTED_ADDR] {
            gw.ip(&["addr", "add", &format!("{addr}/24"), "dev", veth.b()])?;
        }
        // nodad: usable at once, without waiting for duplicate detection.
        client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_ADDR6}/64"),
            "dev",
            veth.a(),
            "nodad",
        ])?;
        gw.ip(&[
            "addr",
            "add",
            &format!("{PROXY_ADDR6}/64"),
            "dev",
            veth.b(),
            "nodad",
        ])?;
        let gateway = Self {
            daemon: None,
            veth,
            client,
            gw,
            bpffs,
            dir,
            mode,
            starts: 0,
        };
        gateway.issue_tls()?;
        gateway.write_config(extra_config)?;
        Ok(gateway)
    }

    /// The proxy needs a CA, a server certificate and the upstream secret to
    /// start; these tests only look at the filter, so the proxy listens on
    /// the gateway's loopback and its upstream is never contacted.
    fn issue_tls(&self) -> Result<()> {
        let befundctl = Befundctl::new(binary("befundctl")?);
        let ca = self.dir.path().join("ca");
        befundctl.init_ca(&ca, None)?;
        let server = ServerRequest {
            dns: &["gateway.test"],
            ..ServerRequest::default()
        };
        befundctl.issue_server(&ca, &server, &self.dir.path().join("server"))?;
        write_private(&self.dir.path().join("proxy-secret"), random_hex(32)?)
    }

    /// Rewrites the configuration file with other extra lines.
    pub fn write_config(&self, extra: &str) -> Result<()> {
        let text = format!(
            "[firewall]\n\
             interface = \"{iface}\"\n\
             proxy_addresses = [\"{PROXY_ADDR}\", \"{PROXY_ADDR6}\"]\n\
             proxy_port = {PROXY_PORT}\n\
             xdp_mode = \"{mode}\"\n\
             pin_root = \"{pins}\"\n\
             state_file = \"{state}\"\n\
             {extra}\n\
             \n\
             [tls]\n\
             listen = [\"127.0.0.1:8443\"]\n\
             server_name = \"gateway.test\"\n\
             certificate = \"{dir}/server/server-chain.pem\"\n\
             private_key = \"{dir}/server/server.key\"\n\
             client_ca = \"{dir}/ca/ca.crt\"\n\
             \n\
             [upstream]\n\
             url = \"http://127.0.0.1:9\"\n\
             \n\
             [identity]\n\
             secret_file = \"{dir}/proxy-secret\"\n\
             \n\
             [log]\n\
             audit = \"{dir}/audit.log\"\n\
             \n\
             [runtime]\n\
             pid_file = \"{dir}/befund-proxy.pid\"\n",
            iface = self.veth.b(),
            mode = self.mode.config_value(),
            pins = self.pin_root().display(),
            state = self.state_file().display(),
            dir = self.dir.path().display(),
        );
        fs::write(self.config_path(), text)?;
        Ok(())
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("befund.toml")
    }

    /// The pin root on the test's bpffs.
    pub fn pin_root(&self) -> PathBuf {
        self.bpffs.path().join("befund")
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("state/firewall.json")
    }

    /// The gateway's WAN interface.
    pub fn wan(&self) -> &str {
        self.veth.b()
    }

    /// Starts the daemon and waits until it reports the filter attached.
    pub fn start_daemon(&mut self) -> Result<String> {
        if self.daemon.is_some() {
            bail!("the daemon already runs");
        }
        self.starts += 1;
        let log = self.dir.path().join(format!("daemon-{}.log", self.starts));
        let daemon = Daemon::start(&self.gw, &self.config_path(), &log)?;
        let line = daemon.attached_line.clone();
        self.daemon = Some(daemon);
        Ok(line)
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill_daemon(&mut self) -> Result<()> {
        let mut daemon = self.daemon.take().context("the daemon does not run")?;
        daemon.signal(Signal::SIGKILL)
    }

    /// Sends SIGHUP and waits until the daemon reports the reload.
    pub fn reload_daemon(&mut self) -> Result<()> {
        let daemon = self.daemon.as_mut().context("the daemon does not run")?;
        daemon.reload()
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop_daemon(&mut self) -> Result<()> {
        let mut daemon = self.daemon.take().context("the daemon does not run")?;
        daemon.signal(Signal::SIGTERM)
    }

    /// Runs `befundctl fw ARGS...` in the gateway namespace; fails unless it
    /// succeeds.
    pub fn fw(&self, args: &[&str]) -> Result<String> {
        let out = run(&mut self.fw_command(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `befundctl fw ARGS...` expecting failure; returns its stderr.
    pub fn fw_err(&self, args: &[&str]) -> Result<String> {
        let out = self.fw_command(args).output()?;
        if out.status.success() {
            bail!(
                "befundctl fw {args:?} succeeded: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn fw_command(&self, args: &[&str]) -> Command {
        let mut cmd = self
            .gw
            .command(binary("befundctl").expect("befundctl is built"));
        cmd.arg("fw")
            .arg("--config")
            .arg(self.config_path())
            .args(args);
        cmd
    }

    /// Packets per counter name (`default_drop`, `proxy`, `block
    /// 192.0.2.200/32`, ...), read with `befundctl fw counters --json`.
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let json: serde_json::Value = serde_json::from_str(&self.fw(&["counters", "--json"])?)?;
        let mut counters = BTreeMap::new();
        for c in json["counters"].as_array().context("counters array")? {
            let name = c["name"].as_str().context("counter name")?;
            let packets = c["packets"].as_u64().context("counter packets")?;
            counters.insert(name.to_owned(), packets);
        }
        Ok(counters)
    }

    /// Packets of one named counter (0 if it is not listed).
    pub fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.counters()?.get(name).copied().unwrap_or(0))
    }

    /// `ip -d link show` of the WAN interface.
    pub fn wan_link(&self) -> Result<String> {
        self.gw.ip(&["-d", "link", "show", "dev", self.wan()])
    }
}

/// The daemon process, stopped on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
    attached_line: String,
}

/// Longest wait for the daemon to attach the filter; only a guard against
/// hanging forever, never reached when the daemon works.
const START_TIMEOUT: Duration = Duration::from_secs(120);

impl Daemon {
    fn start(gw: &Netns, config: &Path, log: &Path) -> Result<Self> {
        let log_file = fs::File::create(log)?;
        let child = gw
            .command(binary("befund-proxy")?)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let mut daemon = Self {
            child,
            log: log.to_path_buf(),
            attached_line: String::new(),
        };
        daemon.attached_line = daemon.wait_for_log("firewall attached", 1)?;
        Ok(daemon)
    }

    /// Waits until the log has `count` lines containing `needle`; returns
    /// the last.
    fn wait_for_log(&mut self, needle: &str, count: usize) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            if lines.len() >= count {
                return Ok(lines[count - 1].to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("befund-proxy exited with {status} before logging `{needle}`:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("befund-proxy did not log `{needle}`:\n{text}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn reload(&mut self) -> Result<()> {
        let count = |needle: &str| {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            text.lines().filter(|l| l.contains(needle)).count()
        };
        let failures = count("reload rejected") + count("reload incomplete");
        let reloads = count("firewall configuration reloaded");
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, Signal::SIGHUP)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while count("firewall configuration reloaded") == reloads {
            let failed = count("reload rejected") + count("reload incomplete") > failures;
            ensure!(
                !failed,
                "reload failed:\n{}",
                fs::read_to_string(&self.log)?
            );
            ensure!(Instant::now() < deadline, "befund-proxy did not reload");
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, signal)?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.signal(Signal::SIGTERM);
        }
    }
}

/// Fails unless this process may create namespaces and load BPF programs.
fn require_root() -> Result<()> {
    ensure!(
        nix::unistd::Uid::effective().is_root(),
        "the network-namespace tests need root (run `cargo xtask test` as root)"
    );
    Ok(())
}
