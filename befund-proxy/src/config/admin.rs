//! `[admin]`: the plain-HTTP listener for health checks and metrics.
//!
//! It must never be reachable from the internet: the address has to be
//! loopback or one of the lab side's addresses. Parsing refuses the proxy's
//! public addresses and wildcard addresses; at start-up the daemon also
//! refuses an address that sits on the WAN interface. The XDP filter would
//! drop WAN traffic to the admin port anyway (only the proxy port passes);
//! these checks keep a configuration mistake from relying on that alone.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[admin]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where `/healthz` and `/metrics` are served, e.g. `"127.0.0.1:9090"`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long a result of the Befundserver reachability check is reused,
    /// e.g. `"5s"`.
    #[serde(default = "default_upstream_check_interval", with = "humantime_serde")]
    pub upstream_check_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            upstream_check_interval: default_upstream_check_interval(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

fn default_upstream_check_interval() -> Duration {
    Duration::from_secs(5)
}

impl AdminConfig {
    /// Checks the address against the proxy's public addresses and
    /// listeners (which [`super::Config::validate`] passes in).
    pub(super) fn validate(
        &self,
        path: &Path,
        proxy_addresses: &[IpAddr],
        proxy_listen: &[SocketAddr],
    ) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("admin.{key}"),
            problem,
        };
        let fix = "use loopback (\"127.0.0.1:9090\") or an address on the lab side";
        let ip = self.listen.ip();
        if ip.is_unspecified() {
            return Err(invalid(
                "listen",
                format!("{ip} listens on every interface, the WAN included; {fix}"),
            ));
        }
        // Loopback never arrives from another host, even when (in a test
        // set-up) the proxy serves there too.
        if !ip.is_loopback() && proxy_addresses.contains(&ip) {
            return Err(invalid(
                "listen",
                format!(
                    "{ip} is a public proxy address (firewall.proxy_addresses); health and \
                     metrics must not be served there, {fix}"
                ),
            ));
        }
        if proxy_listen.contains(&self.listen) {
            return Err(invalid(
                "listen",
                format!("{} is also in tls.listen; {fix}", self.listen),
            ));
        }
        let interval = self.upstream_check_interval;
        if interval < Duration::from_secs(1) || interval > Duration::from_secs(300) {
            return Err(invalid(
                "upstream_check_interval",
                "use a duration from 1s to 5m, e.g. \"5s\"".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
[firewall]
interface = "wan0"
proxy_addresses = ["192.0.2.10"]

[tls]
listen = ["192.0.2.10:443"]
server_name = "befund.example"
certificate = "/etc/befund/tls/server.crt"
private_key = "/etc/befund/tls/server.key"
client_ca = "/etc/befund/tls/ca.crt"

[upstream]
url = "http://10.20.0.5:8080"

[identity]
secret_file = "/etc/befund/secret"
"#;

    fn parse(admin: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("b.toml"), &format!("{BASE}\n[admin]\n{admin}\n"))
    }

    fn invalid_key(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn admin_section_defaults_to_loopback_9090() {
        let config = Config::parse(Path::new("b.toml"), BASE).unwrap();
        assert_eq!(config.admin.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(config.admin.upstream_check_interval, Duration::from_secs(5));
    }

    #[test]
    fn admin_on_a_proxy_address_is_refused() {
        let err = parse("listen = \"192.0.2.10:9090\"").unwrap_err();
        assert!(err.to_string().contains("public proxy address"), "{err}");
        assert_eq!(invalid_key(err), "admin.listen");
    }

    #[test]
    fn admin_on_loopback_is_accepted_even_when_the_proxy_serves_there() {
        let text = BASE.replace("192.0.2.10\"]\n\n[tls]", "127.0.0.1\"]\n\n[tls]");
        let config = Config::parse(Path::new("b.toml"), &text).unwrap();
        assert_eq!(
            config.firewall.proxy_addresses,
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(config.admin.listen.ip().is_loopback());
    }

    #[test]
    fn admin_on_every_interface_is_refused() {
        let err = parse("listen = \"0.0.0.0:9090\"").unwrap_err();
        assert_eq!(invalid_key(err), "admin.listen");
        let err = parse("listen = \"[::]:9090\"").unwrap_err();
        assert_eq!(invalid_key(err), "admin.listen");
    }

    #[test]
    fn admin_on_a_lab_address_is_accepted() {
        let config = parse("listen = \"10.20.0.1:9090\"").unwrap();
        assert_eq!(config.admin.listen, "10.20.0.1:9090".parse().unwrap());
    }
}
