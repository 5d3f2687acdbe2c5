//! `[firewall]`: the XDP WAN filter's settings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[firewall]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// The internet-facing interface the filter attaches to.
    pub interface: String,
    /// Addresses on which the proxy serves HTTPS (IPv4 or IPv6).
    pub proxy_addresses: Vec<std::net::IpAddr>,
    /// The proxy's TCP port.
    #[serde(default = "default_proxy_port")]
    pub proxy_port: u16,
    /// Where the link and maps are pinned (a bpffs directory).
    #[serde(default = "default_pin_root")]
    pub pin_root: PathBuf,
}

fn default_proxy_port() -> u16 {
    443
}

fn default_pin_root() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/befund")
}

impl FirewallConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.proxy_port == 0 {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "firewall.proxy_port".into(),
                problem: "port 0 cannot be served; use the proxy's TCP port, e.g. 443".into(),
            });
        }
        Ok(())
    }
}
