//! `[firewall]`: the XDP WAN filter's settings.

use std::{
    net::IpAddr,
    num::NonZeroU16,
    path::{Path, PathBuf},
    time::Duration,
};

use befund_common::MAX_PROXY_ADDRESSES;
use serde::{Deserialize, Deserializer};

use super::ConfigError;
use crate::{
    cidr::Cidr,
    firewall::{AllowRule, Protocol},
};

/// `[firewall]` section.
///
/// The rules here are the baseline that every start and reload applies;
/// `befundctl fw` layers its own rules on top (see [`crate::firewall::state`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// The internet-facing interface the filter attaches to.
    pub interface: String,
    /// Addresses on which the proxy serves HTTPS (IPv4 or IPv6).
    pub proxy_addresses: Vec<IpAddr>,
    /// The proxy's TCP port.
    #[serde(default = "default_proxy_port")]
    pub proxy_port: u16,
    /// Destinations dropped whatever the port (the Befundserver and the rest
    /// of the lab network, if it is reachable through this interface).
    #[serde(default)]
    pub protected: Vec<Cidr>,
    /// Sources dropped before any other rule.
    #[serde(default)]
    pub blocked: Vec<Cidr>,
    /// Extra services opened to a source prefix, e.g. SSH from an admin network.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// How the XDP program is attached.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Where the link and maps are pinned (a bpffs directory).
    #[serde(default = "default_pin_root")]
    pub pin_root: PathBuf,
    /// Where rules changed with `befundctl fw` are kept across restarts.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// Start in lockdown: only ARP/ND, path MTU and the allow rules pass; the
    /// proxy port is closed.
    #[serde(default)]
    pub lockdown: bool,
    /// How long a TCP connection that the gateway opened admits replies after
    /// its last outbound packet, e.g. `"10m"`.
    #[serde(default = "default_tcp_flow_timeout", deserialize_with = "duration")]
    pub tcp_flow_timeout: Duration,
    /// The same for UDP (DNS, NTP) and ICMP echo, e.g. `"30s"`.
    #[serde(default = "default_udp_flow_timeout", deserialize_with = "duration")]
    pub udp_flow_timeout: Duration,
}

/// One `[[firewall.allow]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// Source prefix, e.g. `"198.51.100.0/24"`.
    pub source: Cidr,
    /// `"tcp"` or `"udp"`.
    pub protocol: Protocol,
    /// Destination port on the gateway.
    pub port: NonZeroU16,
    /// Free text shown by `befundctl fw status`.
    #[serde(default)]
    pub comment: Option<String>,
}

impl AllowEntry {
    /// The rule this entry opens.
    pub fn rule(&self) -> AllowRule {
        AllowRule {
            source: self.source,
            protocol: self.protocol,
            port: self.port,
        }
    }
}

/// How the XDP program is attached to the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver, before the kernel allocates a socket buffer. Fast, and
    /// what production uses.
    #[default]
    Native,
    /// Generic XDP in the kernel's receive path: works on every interface but
    /// costs more per packet. For drivers without native XDP.
    Skb,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// Longest flow timeout accepted: a day. Longer ones would keep replies
/// admitted for peers the gateway forgot long ago.
const MAX_FLOW_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

fn default_proxy_port() -> u16 {
    443
}

fn default_pin_root() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/befund")
}

fn default_state_file() -> PathBuf {
    PathBuf::from("/var/lib/befund/firewall/state.json")
}

fn default_tcp_flow_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_udp_flow_timeout() -> Duration {
    Duration::from_secs(30)
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write e.g. \"30s\" or \"10m\""
        ))
    })
}

impl FirewallConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("firewall.{key}"),
            problem,
        };

        if self.proxy_port == 0 {
            return Err(invalid(
                "proxy_port",
                "port 0 cannot be served; use the proxy's TCP port, e.g. 443".into(),
            ));
        }
        if !is_interface_name(&self.interface) {
            return Err(invalid(
                "interface",
                format!(
                    "`{}` is not an interface name; use the WAN interface as `ip link` shows it, \
                     e.g. \"eth0\"",
                    self.interface
                ),
            ));
        }
        if self.proxy_addresses.is_empty() {
            return Err(invalid(
                "proxy_addresses",
                "list at least one address on which the proxy serves HTTPS".into(),
            ));
        }
        let (v4, v6) = crate::cidr::split_proxy_addresses(&self.proxy_addresses);
        for (family, count) in [("IPv4", v4.len()), ("IPv6", v6.len())] {
            if count > MAX_PROXY_ADDRESSES {
                return Err(invalid(
                    "proxy_addresses",
                    format!(
                        "{count} {family} addresses are listed, but the filter holds at most \
                         {MAX_PROXY_ADDRESSES} of each family; list only the addresses on \
                         which the proxy serves HTTPS"
                    ),
                ));
            }
        }
        for addr in &self.proxy_addresses {
            if let Some(cidr) = self.protected.iter().find(|c| c.contains(*addr)) {
                return Err(invalid(
                    "protected",
                    format!(
                        "{cidr} contains the proxy address {addr}, which would make the proxy \
                         unreachable; narrow the prefix or move the proxy address"
                    ),
                ));
            }
        }
        for (key, timeout) in [
            ("tcp_flow_timeout", self.tcp_flow_timeout),
            ("udp_flow_timeout", self.udp_flow_timeout),
        ] {
            if timeout < Duration::from_secs(1) || timeout > MAX_FLOW_TIMEOUT {
                return Err(invalid(
                    key,
                    "use a duration from 1s to 24h, e.g. \"30s\" or \"10m\"".into(),
                ));
            }
        }
        if !self.pin_root.is_absolute() {
            return Err(invalid(
                "pin_root",
                "use an absolute path on a bpf filesystem, e.g. \"/sys/fs/bpf/befund\"".into(),
            ));
        }
        if !self.state_file.is_absolute() {
            return Err(invalid(
                "state_file",
                "use an absolute path, e.g. \"/var/lib/befund/firewall/state.json\"".into(),
            ));
        }
        Ok(())
    }
}

/// Whether `name` can be a Linux interface name (`IFNAMSIZ` is 16 with the
/// terminating NUL).
fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Parses a file that holds only the `[firewall]` section, with the same
/// validation and error messages as the whole configuration.
#[cfg(test)]
pub(crate) fn parse_section(path: &Path, text: &str) -> Result<FirewallConfig, ConfigError> {
    #[derive(Deserialize)]
    struct Only {
        firewall: FirewallConfig,
    }
    let only: Only = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    only.firewall.validate(path)?;
    Ok(only.firewall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FirewallConfig, ConfigError> {
        parse_section(Path::new("/etc/befund/befund.toml"), text)
    }

    fn invalid_key(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    const MINIMAL: &str = "[firewall]\ninterface = \"wan0\"\nproxy_addresses = [\"192.0.2.10\"]\n";

    #[test]
    fn minimal_section_gets_the_strict_defaults() {
        let fw = parse(MINIMAL).unwrap();
        assert_eq!(fw.proxy_port, 443);
        assert_eq!(fw.xdp_mode, XdpMode::Native);
        assert_eq!(fw.pin_root, Path::new("/sys/fs/bpf/befund"));
        assert_eq!(
            fw.state_file,
            Path::new("/var/lib/befund/firewall/state.json")
        );
        assert!(!fw.lockdown);
        assert!(fw.protected.is_empty() && fw.blocked.is_empty() && fw.allow.is_empty());
        assert_eq!(fw.tcp_flow_timeout, Duration::from_secs(600));
        assert_eq!(fw.udp_flow_timeout, Duration::from_secs(30));
    }

    #[test]
    fn full_section_parses_into_typed_values() {
        let fw = parse(
            r#"
            [firewall]
            interface = "wan0"
            proxy_addresses = ["192.0.2.10", "2001:db8::10"]
            proxy_port = 8443
            protected = ["10.10.0.5", "10.20.0.0/16"]
            blocked = ["203.0.113.0/24"]
            xdp_mode = "skb"
            pin_root = "/run/befund-bpf"
            state_file = "/tmp/fw.json"
            lockdown = true
            tcp_flow_timeout = "2m"
            udp_flow_timeout = "15s"

            [[firewall.allow]]
            source = "198.51.100.0/24"
            protocol = "tcp"
            port = 22
            comment = "admin SSH"
            "#,
        )
        .unwrap();
        assert_eq!(fw.proxy_port, 8443);
        assert_eq!(fw.protected[0].to_string(), "10.10.0.5/32");
        assert_eq!(fw.xdp_mode, XdpMode::Skb);
        assert_eq!(fw.tcp_flow_timeout, Duration::from_secs(120));
        assert_eq!(fw.allow[0].protocol, Protocol::Tcp);
        assert_eq!(fw.allow[0].port.get(), 22);
        assert_eq!(fw.allow[0].comment.as_deref(), Some("admin SSH"));
    }

    #[test]
    fn cidr_with_host_bits_names_file_key_and_fix() {
        let err = parse(&format!("{MINIMAL}blocked = [\"203.0.113.7/24\"]\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/etc/befund/befund.toml:"), "{text}");
        assert!(text.contains("blocked"), "{text}");
        assert!(text.contains("did you mean 203.0.113.0/24"), "{text}");
    }

    #[test]
    fn unknown_protocol_is_rejected() {
        let err = parse(&format!(
            "{MINIMAL}[[firewall.allow]]\nsource = \"10.0.0.0/8\"\nprotocol = \"icmp\"\nport = 1\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("icmp"), "{err}");
    }

    #[test]
    fn allow_port_zero_is_rejected() {
        let err = parse(&format!(
            "{MINIMAL}[[firewall.allow]]\nsource = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nport = 0\n"
        ))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn protected_prefix_covering_the_proxy_is_rejected() {
        let err = parse(&format!("{MINIMAL}protected = [\"192.0.2.0/24\"]\n")).unwrap_err();
        assert_eq!(invalid_key(err), "firewall.protected");
    }

    #[test]
    fn four_proxy_addresses_of_each_family_are_accepted_five_are_not() {
        let list = |v4: u8, v6: u8| {
            let v4 = (1..=v4).map(|i| format!("\"192.0.2.{i}\""));
            let v6 = (1..=v6).map(|i| format!("\"2001:db8::{i}\""));
            let all: Vec<String> = v4.chain(v6).collect();
            format!(
                "[firewall]\ninterface = \"wan0\"\nproxy_addresses = [{}]\n",
                all.join(", ")
            )
        };
        assert!(parse(&list(4, 4)).is_ok());
        for (v4, v6) in [(5, 0), (0, 5)] {
            let err = parse(&list(v4, v6)).unwrap_err();
            assert_eq!(invalid_key(err), "firewall.proxy_addresses");
        }
        // A repeated address, or an IPv4 address also written IPv4-mapped,
        // takes one place.
        let repeated = "[firewall]\ninterface = \"wan0\"\nproxy_addresses = [\"192.0.2.1\", \
                        \"192.0.2.1\", \"::ffff:192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\", \
                        \"192.0.2.4\"]\n";
        assert!(parse(repeated).is_ok());
    }

    #[test]
    fn empty_proxy_addresses_are_rejected() {
        let err = parse("[firewall]\ninterface = \"wan0\"\nproxy_addresses = []\n").unwrap_err();
        assert_eq!(invalid_key(err), "firewall.proxy_addresses");
    }

    #[test]
    fn interface_name_with_a_slash_is_rejected() {
        let err = parse("[firewall]\ninterface = \"../x\"\nproxy_addresses = [\"192.0.2.1\"]\n")
            .unwrap_err();
        assert_eq!(invalid_key(err), "firewall.interface");
    }

    #[test]
    fn flow_timeout_out_of_range_is_rejected() {
        let err = parse(&format!("{MINIMAL}udp_flow_timeout = \"3d\"\n")).unwrap_err();
        assert_eq!(invalid_key(err), "firewall.udp_flow_timeout");
        let err = parse(&format!("{MINIMAL}tcp_flow_timeout = \"soon\"\n")).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn relative_pin_root_is_rejected() {
        let err = parse(&format!("{MINIMAL}pin_root = \"bpf\"\n")).unwrap_err();
        assert_eq!(invalid_key(err), "firewall.pin_root");
    }

    #[test]
    fn proxy_port_zero_is_rejected() {
        let err = parse(&format!("{MINIMAL}proxy_port = 0\n")).unwrap_err();
        assert_eq!(invalid_key(err), "firewall.proxy_port");
    }
}
