//! What the VM test puts on the config drive and what it expects, per
//! scenario.
//!
//! - `appliance`: the drive carries a full configuration with certificates
//!   issued by `befundctl`; the lab namespace runs the reference
//!   Befundserver. befund-proxy must come up through systemd, attach the
//!   filter to the WAN NIC and listen on the WAN address's HTTPS port;
//!   `befundctl audit` from the client namespace must pass every row of the
//!   access protocol; and the filter's counters, read inside the VM before
//!   and after, must show the proxy's traffic and the dropped direct attempts
//!   at the Befundserver.
//! - `unconfigured`: the drive carries network settings but no befund.toml.
//!   The appliance must boot, refuse to start befund-proxy and say so on the
//!   console, keep every port closed and forward nothing.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use befund_testbed::{netns::Netns, process::Child};

use super::{
    checks::{self, Check, GuestFacts, check, check_that},
    config_drive::{ConfigDrive, network_file},
    lab::{self, Counter, Credentials, HostBinaries},
    netns,
};
use crate::command::workspace_root;

/// Read inside the VM before and after the checks from outside.
const COUNTERS_COMMAND: &str = "befundctl fw counters --json";
/// Printed on the console after the checks, for the operator reading it.
const STATUS_COMMAND: &str = "befundctl fw status";
/// Run inside the VM after the checks: the daemon, no longer root by then,
/// re-reads its configuration, certificates, CRLs and firewall section.
const RELOAD_COMMAND: &str = "systemctl reload befund-proxy";

/// The addresses and NICs of the test network (the same plan as the demo).
pub struct Topology {
    /// MAC of the VM's WAN NIC.
    pub wan_mac: &'static str,
    /// MAC of the VM's LAN NIC.
    pub lan_mac: &'static str,
    /// PCI slot of the WAN NIC: the guest names it `enp0s3`.
    pub wan_slot: u8,
    /// PCI slot of the LAN NIC: the guest names it `enp0s4`.
    pub lan_slot: u8,
    /// The guest's name of its WAN NIC.
    pub wan_interface: &'static str,
    /// The guest's name of its LAN NIC.
    pub lan_interface: &'static str,
    /// The gateway's WAN address.
    pub gateway_wan: &'static str,
    /// The internet client's address.
    pub client: &'static str,
    /// The gateway's lab-side address.
    pub gateway_lan: &'static str,
    /// The Befundserver's address.
    pub lab_host: &'static str,
    /// The lab network, protected by the gateway.
    pub lab_network: &'static str,
    /// The port the lab host serves on.
    pub lab_port: u16,
    /// The name physicians use for the gateway.
    pub server_name: &'static str,
}

impl Topology {
    /// The fixed plan.
    pub fn new() -> Self {
        Self {
            wan_mac: "52:54:00:be:f0:01",
            lan_mac: "52:54:00:be:f0:02",
            wan_slot: 3,
            lan_slot: 4,
            wan_interface: "enp0s3",
            lan_interface: "enp0s4",
            gateway_wan: "198.51.100.1",
            client: "198.51.100.2",
            gateway_lan: "10.20.0.1",
            lab_host: "10.20.0.5",
            lab_network: "10.20.0.0/24",
            lab_port: 8080,
            server_name: "befunde.example-labor.de",
        }
    }

    /// The client's address with prefix length.
    pub fn client_cidr(&self) -> String {
        format!("{}/24", self.client)
    }

    /// The lab host's address with prefix length.
    pub fn lab_host_cidr(&self) -> String {
        format!("{}/24", self.lab_host)
    }

    fn lab_service(&self) -> String {
        format!("{}:{}", self.lab_host, self.lab_port)
    }
}

/// What the config drive carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A full configuration: the appliance must serve and pass the audit.
    Appliance,
    /// Network settings only: the appliance must fail closed.
    Unconfigured,
}

impl Scenario {
    /// Builds what the scenario needs outside the VM: for `appliance` the
    /// host's `befundctl` and `befundserver` and the lab's certificates
    /// (under `dir`); protocols and logs worth keeping go to `keep`.
    pub fn prepare(self, dir: &Path, keep: &Path, topology: &Topology) -> Result<Plan> {
        Ok(match self {
            Self::Unconfigured => Plan::Unconfigured,
            Self::Appliance => {
                let binaries = HostBinaries::build()?;
                let credentials =
                    Credentials::issue(&binaries.befundctl, &dir.join("pki"), topology)
                        .context("failed to issue the lab's certificates with befundctl")?;
                Plan::Appliance(Box::new(Appliance {
                    binaries,
                    credentials,
                    dir: dir.to_path_buf(),
                    keep: keep.to_path_buf(),
                }))
            }
        })
    }
}

/// A prepared scenario.
pub enum Plan {
    /// Network settings only.
    Unconfigured,
    /// The full appliance.
    Appliance(Box<Appliance>),
}

/// What the appliance scenario made on the host.
pub struct Appliance {
    binaries: HostBinaries,
    credentials: Credentials,
    /// The test run's private directory.
    dir: PathBuf,
    /// Where the audit protocol and the Befundserver's log are kept.
    keep: PathBuf,
}

impl Plan {
    /// Writes the scenario's files onto the config drive.
    pub fn fill_config_drive(&self, drive: &ConfigDrive, topology: &Topology) -> Result<()> {
        drive.write(
            "network/10-wan.network",
            &network_file(topology.wan_mac, &format!("{}/24", topology.gateway_wan)),
        )?;
        drive.write(
            "network/20-lan.network",
            &network_file(topology.lan_mac, &format!("{}/24", topology.gateway_lan)),
        )?;
        drive.write("hostname", "befund-vmtest\n")?;
        drive.write("selftest/ping", &format!("{}\n", topology.lab_host))?;
        drive.write("selftest/tcp", &format!("{}\n", topology.lab_service()))?;
        match self {
            Self::Unconfigured => Ok(()),
            Self::Appliance(appliance) => {
                drive.write("befund.toml", &appliance_config(topology)?)?;
                for (file, on_drive) in appliance.credentials.drive_files() {
                    drive.copy(file, on_drive)?;
                }
                // The counters before and after the client's probes: the
                // traffic they caused must show in the difference.
                drive.write("selftest/before-checks", &format!("{COUNTERS_COMMAND}\n"))?;
                drive.write(
                    "selftest/after-checks",
                    &format!("{COUNTERS_COMMAND}\n{RELOAD_COMMAND}\n{STATUS_COMMAND}\n"),
                )
            }
        }
    }

    /// Starts the service on the lab host that the gateway must reach and
    /// the client must not.
    pub fn start_lab_service(&self, lab: &Netns, topology: &Topology) -> Result<Child> {
        match self {
            // Any real TCP service proves the reachability boundary.
            Self::Unconfigured => netns::spawn(
                lab,
                "lab HTTP service (python3 http.server)",
                &[
                    "/usr/bin/python3",
                    "-m",
                    "http.server",
                    "--bind",
                    topology.lab_host,
                    &topology.lab_port.to_string(),
                ],
                None,
            ),
            Self::Appliance(appliance) => {
                let dir = appliance.dir.join("befundserver");
                let process = lab::start_befundserver(
                    &appliance.binaries,
                    &appliance.credentials,
                    lab,
                    topology,
                    &dir,
                )?;
                Ok(process)
            }
        }
    }

    /// Keeps the lab service's log next to the console log.
    pub fn keep_logs(&self) {
        if let Self::Appliance(appliance) = self {
            let log = appliance.dir.join("befundserver/befundserver.log");
            if log.exists() {
                fs::copy(&log, appliance.keep.join("befundserver.log")).ok();
            }
        }
    }

    /// Checks on what the guest reported about itself.
    pub fn guest_checks(&self, facts: &GuestFacts, topology: &Topology) -> Result<Vec<Check>> {
        let mut checks = common_guest_checks(facts, topology)?;
        let proxy = facts.report("service befund-proxy.service");
        let wan_xdp = facts.report(&format!("xdp {}", topology.wan_interface));
        match self {
            Self::Unconfigured => {
                checks.push(check_that(
                    "befund-proxy is attempted but never ready without a configuration",
                    "failed, or activating after restarts",
                    &proxy,
                    attempted_but_never_ready(&proxy),
                ));
                let notice = facts
                    .alerts
                    .iter()
                    .chain(&facts.config_messages)
                    .find(|m| {
                        m.starts_with("befund-proxy.service FAILED")
                            || m.contains("befund-proxy will not start")
                    })
                    .cloned();
                checks.push(check_that(
                    "the console says that befund-proxy will not start",
                    "a befund-config or befund-alert message",
                    notice.clone().unwrap_or_else(|| "(no message)".into()),
                    notice.is_some(),
                ));
                checks.push(check(
                    "nothing listens on TCP",
                    "none",
                    facts.report("listen tcp"),
                ));
                checks.push(check("no XDP program on the WAN NIC", "none", wan_xdp));
            }
            Self::Appliance(_) => {
                checks.push(readiness_check(
                    &facts.report("unit-type befund-proxy.service"),
                    &proxy,
                ));
                checks.push(check_that(
                    "the XDP filter is attached to the WAN NIC",
                    "a program id",
                    &wan_xdp,
                    wan_xdp.parse::<u32>().is_ok(),
                ));
                checks.push(check(
                    "no XDP program on the LAN NIC",
                    "none",
                    facts.report(&format!("xdp {}", topology.lan_interface)),
                ));
                checks.push(listeners_check(
                    &facts.report("listen tcp"),
                    topology.gateway_wan,
                ));
                checks.extend(counter_checks(facts, topology));
                let reload = facts
                    .check_run("after", RELOAD_COMMAND)
                    .and_then(|r| r.exit.clone())
                    .unwrap_or_else(|| "(not run)".into());
                checks.push(check(
                    &format!(
                        "`{RELOAD_COMMAND}` succeeds: the daemon, running as its own user, \
                         reloads everything, firewall state included"
                    ),
                    "0",
                    &reload,
                ));
            }
        }
        Ok(checks)
    }

    /// Probes the gateway from the client namespace.
    pub fn client_checks(&self, client: &Netns, topology: &Topology) -> Result<Vec<Check>> {
        let lab_from_client = connect(client, topology.lab_host, topology.lab_port)?;
        let ping_gateway = ping(client, topology.gateway_wan)?;
        let mut checks = vec![check_that(
            "the lab service is unreachable from the client",
            "anything but connected",
            &lab_from_client,
            lab_from_client != "connected",
        )];
        match self {
            Self::Unconfigured => {
                checks.push(check(
                    "the client reaches the gateway's WAN address (no filter attached)",
                    "reachable",
                    ping_gateway,
                ));
                checks.push(check(
                    "the gateway's HTTPS port is closed while unconfigured",
                    "refused",
                    connect(client, topology.gateway_wan, 443)?,
                ));
            }
            Self::Appliance(appliance) => {
                // Default deny: ICMP echo is neither the proxy port nor
                // opened by a rule, so the filter drops it.
                checks.push(check(
                    "the filter drops the client's ping to the gateway (default deny)",
                    "unreachable",
                    ping_gateway,
                ));
                checks.extend(lab::audit(
                    &appliance.binaries,
                    &appliance.credentials,
                    client,
                    topology,
                    &appliance.keep,
                )?);
            }
        }
        Ok(checks)
    }
}

/// Whether befund-proxy came up through systemd. With `Type=notify`,
/// `active running` means the daemon sent READY=1 after attaching the filter
/// and binding its listener. With any other type it means only that the
/// daemon runs: the HTTPS listener (a check of its own) is the readiness
/// proof then, and the check's name says so.
fn readiness_check(unit_type: &str, state: &str) -> Check {
    let name = if unit_type == "notify" {
        "befund-proxy reports ready to systemd (Type=notify), without restarts".to_owned()
    } else {
        format!(
            "befund-proxy is active under systemd without restarts (Type={unit_type}: no \
             readiness notification; readiness is proven by the HTTPS listener)"
        )
    };
    check_that(
        &name,
        "active running ... restarts=0",
        state,
        state.starts_with("active running") && state.ends_with("restarts=0"),
    )
}

/// The admin listener of the appliance's configuration: the daemon's
/// default, loopback only.
const ADMIN_LISTENER: &str = "127.0.0.1:9090";

/// What listens on TCP in the appliance (`listen` as `befund-report` prints
/// it, space-separated): the proxy on the WAN address's port 443 and its
/// admin listener on loopback, in any order, and nothing else.
fn listeners_check(listening: &str, gateway_wan: &str) -> Check {
    let https = format!("{gateway_wan}:443");
    let mut expected = vec![https.as_str(), ADMIN_LISTENER];
    let mut observed: Vec<&str> = listening.split_whitespace().collect();
    expected.sort_unstable();
    observed.sort_unstable();
    check_that(
        "on TCP only the proxy listens: HTTPS on the WAN address, its admin listener on loopback",
        &expected.join(" "),
        listening,
        observed == expected,
    )
}

/// The counters read inside the VM before and after the client's probes:
/// both reads succeed, the proxy's slot moved (the audit's connections), the
/// protected network's slot moved (the direct attempts at the Befundserver,
/// which the filter dropped) and so did the default drop (ping, closed
/// ports).
fn counter_checks(facts: &GuestFacts, topology: &Topology) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut read = |phase: &str| -> Option<Vec<Counter>> {
        let run = facts.check_run(phase, COUNTERS_COMMAND);
        let exit = run
            .and_then(|r| r.exit.clone())
            .unwrap_or_else(|| "(not run)".into());
        checks.push(check(
            &format!("`{COUNTERS_COMMAND}` works inside the VM {phase} the checks from outside"),
            "0",
            &exit,
        ));
        let parsed = run.map(|r| lab::parse_counters(&r.output));
        match parsed {
            Some(Ok(counters)) => Some(counters),
            Some(Err(e)) => {
                checks.push(check_that(
                    &format!("the counters {phase} the checks are JSON"),
                    "JSON",
                    format!("{e:#}"),
                    false,
                ));
                None
            }
            None => None,
        }
    };
    let before = read("before");
    let after = read("after");
    if let (Some(before), Some(after)) = (before, after) {
        checks.push(counter_moved(
            "the filter's proxy counter moved with the audit's connections",
            &before,
            &after,
            |c| c.name == "proxy",
        ));
        checks.push(counter_moved(
            &format!(
                "the filter's counter for the protected {} moved with the direct attempts at \
                 the Befundserver",
                topology.lab_network
            ),
            &before,
            &after,
            |c| c.slot >= 16 && c.name.contains(topology.lab_network),
        ));
        checks.push(counter_moved(
            "the filter's default_drop counter moved with the client's ping and the scan of \
             closed ports",
            &before,
            &after,
            |c| c.name == "default_drop",
        ));
    }
    checks
}

fn counter_moved(
    name: &str,
    before: &[Counter],
    after: &[Counter],
    slot: impl Fn(&Counter) -> bool,
) -> Check {
    let find = |counters: &[Counter]| counters.iter().find(|c| slot(c)).cloned();
    match (find(before), find(after)) {
        (_, None) => check_that(
            name,
            "more packets after the checks than before",
            "the slot is not listed after the checks",
            false,
        ),
        (before, Some(after)) => {
            let was = before.map_or(0, |c| c.packets);
            check_that(
                name,
                "more packets after the checks than before",
                format!(
                    "slot {} ({}): {was} packets before, {} after",
                    after.slot, after.name, after.packets
                ),
                after.packets > was,
            )
        }
    }
}

/// `ActiveState SubState result=R restarts=N` of a unit that was started
/// (or retried) and never got to `active`.
fn attempted_but_never_ready(state: &str) -> bool {
    let restarts = state
        .split_whitespace()
        .find_map(|w| w.strip_prefix("restarts="))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    state.starts_with("failed") || (state.starts_with("activating") && restarts > 0)
}

fn common_guest_checks(facts: &GuestFacts, topology: &Topology) -> Result<Vec<Check>> {
    let kernel = facts.report("kernel");
    let mut checks = vec![
        check_that(
            "the appliance runs Debian's 6.1 kernel",
            "6.1.*",
            &kernel,
            kernel.starts_with("6.1."),
        ),
        check("the kernel has BTF", "present", facts.report("btf")),
        check_that(
            "the config drive was imported",
            "active",
            facts.report("service befund-config.service"),
            facts
                .report("service befund-config.service")
                .starts_with("active"),
        ),
        check(
            "the gateway reaches the lab host",
            "ok",
            facts.selftest(&format!("ping {}", topology.lab_host)),
        ),
        check(
            "the gateway reaches the lab service",
            "open",
            facts.selftest(&format!("tcp {}", topology.lab_service())),
        ),
        check("nothing listens on UDP", "none", facts.report("listen udp")),
    ];
    let sysctl_file = workspace_root().join("images/sysctl/99-befund.conf");
    let text = fs::read_to_string(&sysctl_file)
        .with_context(|| format!("failed to read {}", sysctl_file.display()))?;
    for (key, value) in checks::sysctl_settings(&text) {
        checks.push(check(
            &format!("sysctl {key} is in force"),
            value,
            facts.report(&format!("sysctl {key}")),
        ));
    }
    Ok(checks)
}

/// The image's default configuration with the test network's values; every
/// replaced line must be found exactly once, so that the test notices when
/// the default changes.
fn appliance_config(topology: &Topology) -> Result<String> {
    let path = workspace_root().join("images/config/befund.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    let settings = [
        ("interface", format!("\"{}\"", topology.wan_interface)),
        ("proxy_addresses", format!("[\"{}\"]", topology.gateway_wan)),
        ("protected", format!("[\"{}\"]", topology.lab_network)),
        ("listen", format!("[\"{}:443\"]", topology.gateway_wan)),
        ("server_name", format!("\"{}\"", topology.server_name)),
        ("url", format!("\"http://{}\"", topology.lab_service())),
    ];
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (key, value) in settings {
        let mut found = lines
            .iter_mut()
            .filter(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key));
        match (found.next(), found.next()) {
            (Some(line), None) => *line = format!("{key} = {value}"),
            _ => bail!(
                "{} must set `{key}` exactly once for the VM test to adapt it",
                path.display()
            ),
        }
    }
    Ok(lines.join("\n") + "\n")
}

fn ping(netns: &Netns, address: &str) -> Result<String> {
    let result = netns
        .command("ping")
        .args(["-c", "2", "-W", "2", address])
        .output()
        .context("failed to run ping")?;
    let stderr = String::from_utf8_lossy(&result.stderr);
    if stderr.contains("exec of") {
        bail!("cannot run ping in the namespace: {}", stderr.trim());
    }
    Ok(if result.status.success() {
        "reachable"
    } else {
        "unreachable"
    }
    .to_owned())
}

/// Tries a TCP connection with bash's /dev/tcp and names the outcome from
/// the error the kernel gave: connected, refused, no route, timed out.
fn connect(netns: &Netns, address: &str, port: u16) -> Result<String> {
    let result = netns
        .command("timeout")
        .args(["5", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{address}/{port}"))
        .output()
        .context("failed to run bash in the namespace")?;
    let stderr = String::from_utf8_lossy(&result.stderr);
    Ok(classify_connect(result.status.code(), &stderr))
}

fn classify_connect(code: Option<i32>, stderr: &str) -> String {
    match code {
        Some(0) => "connected".to_owned(),
        // timeout(1)'s exit code when the time ran out.
        Some(124) => "timed out".to_owned(),
        _ if stderr.contains("Connection refused") => "refused".to_owned(),
        _ if stderr.contains("No route to host") => "no route".to_owned(),
        _ if stderr.contains("Network is unreachable") => "network unreachable".to_owned(),
        other => format!("failed ({other:?}): {}", stderr.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_outcomes_are_named_from_the_kernel_error() {
        let refused =
            "bash: connect: Connection refused\nbash: line 1: /dev/tcp/x/443: Connection refused";
        assert_eq!(classify_connect(Some(1), refused), "refused");
        assert_eq!(
            classify_connect(Some(1), "connect: No route to host"),
            "no route"
        );
        assert_eq!(classify_connect(Some(124), ""), "timed out");
        assert_eq!(classify_connect(Some(0), ""), "connected");
    }

    #[test]
    fn a_unit_that_failed_or_keeps_restarting_was_never_ready() {
        assert!(attempted_but_never_ready(
            "failed failed result=exit-code restarts=4"
        ));
        assert!(attempted_but_never_ready(
            "activating auto-restart result=exit-code restarts=2"
        ));
    }

    #[test]
    fn the_default_configuration_gets_the_test_networks_values() {
        let config = appliance_config(&Topology::new()).unwrap();
        assert!(config.contains("\ninterface = \"enp0s3\"\n"));
        assert!(config.contains("\nlisten = [\"198.51.100.1:443\"]\n"));
        assert!(config.contains("\nurl = \"http://10.20.0.5:8080\"\n"));
        assert!(config.contains("\nserver_name = \"befunde.example-labor.de\"\n"));
    }

    #[test]
    fn only_the_https_and_the_loopback_admin_listener_may_listen() {
        let wan = "198.51.100.1";
        assert!(listeners_check("198.51.100.1:443 127.0.0.1:9090", wan).passed);
        assert!(listeners_check("127.0.0.1:9090 198.51.100.1:443", wan).passed);
        // The admin listener missing, an extra port, or the wrong address.
        assert!(!listeners_check("198.51.100.1:443", wan).passed);
        assert!(!listeners_check("198.51.100.1:443 127.0.0.1:9090 0.0.0.0:22", wan).passed);
        assert!(!listeners_check("0.0.0.0:443 127.0.0.1:9090", wan).passed);
        assert!(!listeners_check("none", wan).passed);
    }

    #[test]
    fn readiness_needs_a_running_unit_that_never_restarted() {
        let running = "active running result=success restarts=0";
        assert!(readiness_check("notify", running).passed);
        assert!(readiness_check("notify", running).name.contains("ready"));
        assert!(
            readiness_check("exec", running)
                .name
                .contains("HTTPS listener")
        );
        assert!(!readiness_check("exec", "active running result=success restarts=2").passed);
        assert!(!readiness_check("notify", "activating start result=success restarts=0").passed);
    }

    #[test]
    fn a_counter_must_grow_between_the_reads() {
        let counter = |packets| Counter {
            slot: 7,
            name: "proxy".into(),
            packets,
        };
        let proxy = |c: &Counter| c.name == "proxy";
        assert!(counter_moved("p", &[counter(3)], &[counter(9)], proxy).passed);
        assert!(counter_moved("p", &[], &[counter(1)], proxy).passed);
        assert!(!counter_moved("p", &[counter(3)], &[counter(3)], proxy).passed);
        assert!(!counter_moved("p", &[counter(3)], &[], proxy).passed);
    }

    #[test]
    fn a_running_or_never_started_unit_does_not_count_as_refused() {
        assert!(!attempted_but_never_ready(
            "active running result=success restarts=0"
        ));
        assert!(!attempted_but_never_ready(
            "inactive dead result=success restarts=0"
        ));
        assert!(!attempted_but_never_ready(
            "activating start-pre result=success restarts=0"
        ));
    }
}
