//! What the VM test puts on the config drive and what it expects, per
//! scenario.
//!
//! - `unconfigured`: the drive carries network settings but no befund.toml.
//!   The appliance must boot, refuse to start befund-proxy and say so on the
//!   console, keep every port closed and forward nothing.
//! - `appliance`: the drive carries a full configuration with certificates
//!   from `befundctl ca`; befund-proxy must report ready to systemd, attach
//!   the filter to the WAN NIC, and `befundctl audit` from the client
//!   namespace must reproduce the access protocol. This needs the daemon's
//!   `check-config`/`run`, `befundctl ca` and `audit` and the reference
//!   Befundserver; the parts below say where each plugs in.

use std::fs;

use anyhow::{Context as _, Result, bail};

use super::{
    checks::{self, Check, GuestFacts, check, check_that},
    config_drive::{ConfigDrive, network_file},
    netns::{Netns, NsProcess},
};
use crate::command::workspace_root;

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
            gateway_wan: "198.51.100.1",
            client: "198.51.100.2",
            gateway_lan: "10.20.0.1",
            lab_host: "10.20.0.5",
            lab_network: "10.20.0.0/24",
            lab_port: 8080,
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
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Scenario {
    /// Network settings only: the appliance must fail closed.
    Unconfigured,
    /// A full configuration: the appliance must serve and pass the audit.
    Appliance,
}

impl Scenario {
    /// Writes the scenario's files onto the config drive.
    pub fn fill_config_drive(self, drive: &ConfigDrive, topology: &Topology) -> Result<()> {
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
            Self::Appliance => {
                drive.write("befund.toml", &appliance_config(topology)?)?;
                // Read inside the VM once the client's probes are done: the
                // drops they caused must show in the filter's counters.
                drive.write("selftest/after-checks", "befundctl fw counters\n")?;
                issue_credentials(drive)
            }
        }
    }

    /// Starts the service on the lab host that the gateway must reach and
    /// the client must not.
    pub fn start_lab_service(self, lab: &Netns, topology: &Topology) -> Result<NsProcess> {
        match self {
            // Any real TCP service proves the reachability boundary; until
            // the workspace builds the reference Befundserver, Python's
            // HTTP server stands on its address and port.
            Self::Unconfigured => NsProcess::spawn(
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
            ),
            Self::Appliance => bail!(
                "the appliance scenario runs the reference Befundserver in the lab namespace; \
                 the workspace does not build `befundserver` yet"
            ),
        }
    }

    /// Checks on what the guest reported about itself.
    pub fn guest_checks(self, facts: &GuestFacts, topology: &Topology) -> Result<Vec<Check>> {
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
            Self::Appliance => {
                // Type=notify: `active running` means the daemon sent READY=1
                // after attaching the filter and binding the listener.
                checks.push(check_that(
                    "befund-proxy reports ready to systemd",
                    "active running",
                    &proxy,
                    proxy.starts_with("active running"),
                ));
                checks.push(check_that(
                    "the XDP filter is attached to the WAN NIC",
                    "a program id",
                    &wan_xdp,
                    wan_xdp.parse::<u32>().is_ok(),
                ));
                let tcp = facts.report("listen tcp");
                let https = format!("{}:443", topology.gateway_wan);
                checks.push(check_that(
                    "the proxy listens on the WAN address's HTTPS port",
                    &https,
                    &tcp,
                    tcp.split_whitespace().any(|l| l == https),
                ));
                checks.push(check(
                    "the filter's counters are readable inside the VM after the probes",
                    "0",
                    facts.selftest("after-check-exit"),
                ));
            }
        }
        Ok(checks)
    }

    /// Probes the gateway from the client namespace.
    pub fn client_checks(self, client: &Netns, topology: &Topology) -> Result<Vec<Check>> {
        let lab_from_client = connect(client, topology.lab_host, topology.lab_port)?;
        let mut checks = vec![
            check(
                "the client reaches the gateway's WAN address",
                "reachable",
                ping(client, topology.gateway_wan)?,
            ),
            check_that(
                "the lab service is unreachable from the client",
                "anything but connected",
                &lab_from_client,
                lab_from_client != "connected",
            ),
        ];
        match self {
            Self::Unconfigured => checks.push(check(
                "the gateway's HTTPS port is closed while unconfigured",
                "refused",
                connect(client, topology.gateway_wan, 443)?,
            )),
            // `befundctl audit` from here runs the access protocol (no
            // certificate, self-issued, certificate without key, valid,
            // Befundserver direct, proxy port); its exit code and table
            // become checks.
            Self::Appliance => bail!("the appliance scenario needs `befundctl audit`"),
        }
        Ok(checks)
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

/// The default configuration with the test network's values.
fn appliance_config(topology: &Topology) -> Result<String> {
    let path = workspace_root().join("images/config/befund.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(text
        .replace(
            "interface = \"wan\"",
            &format!("interface = \"{}\"", topology.wan_interface),
        )
        .replace(
            "url = \"http://10.20.0.5:8080\"",
            &format!("url = \"http://{}/\"", topology.lab_service()),
        ))
}

/// Server certificate, client CA, CRL and proxy secret for `tls/`, issued
/// with `befundctl ca` into the drive.
fn issue_credentials(_drive: &ConfigDrive) -> Result<()> {
    bail!(
        "the appliance scenario issues its certificates with `befundctl ca`, which the workspace does not build yet"
    )
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
