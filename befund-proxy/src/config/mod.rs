//! The appliance's configuration: one TOML file, one section per concern.
//!
//! Parsing validates everything it can without touching the system, so that
//! `befund-proxy check-config` and a reload can reject a bad file before it
//! changes anything. Every error names the file, the key and the fix.

pub mod admin;
pub mod firewall;
pub mod identity;
pub mod limits;
pub mod log;
pub mod runtime;
pub mod tls;
pub mod upstream;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::admin::AdminConfig;
pub use self::firewall::FirewallConfig;
pub use self::identity::IdentityConfig;
pub use self::limits::LimitsConfig;
pub use self::log::{AuditTarget, LogConfig, LogFormat};
pub use self::runtime::{DEFAULT_PID_FILE, RuntimeConfig};
pub use self::tls::{CrlExpiredPolicy, TlsConfig};
pub use self::upstream::{UpstreamConfig, UpstreamScheme, UpstreamUrl};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/befund/befund.toml";

/// The whole appliance configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this configuration was read from (for error messages); empty
    /// when parsed from a string without a name.
    #[serde(skip)]
    pub source: PathBuf,
    /// The XDP WAN filter.
    pub firewall: FirewallConfig,
    /// The client-facing HTTPS listener and the client-certificate policy.
    pub tls: TlsConfig,
    /// The Befundserver.
    pub upstream: UpstreamConfig,
    /// The identity forwarded to the Befundserver.
    pub identity: IdentityConfig,
    /// Timeouts and sizes.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Daemon log and audit log.
    #[serde(default)]
    pub log: LogConfig,
    /// Process settings (privilege drop, pid file).
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Health and metrics listener.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// A configuration error: which file, which key, what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// A key's value is unusable.
    #[error("{path}: key `{key}`: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key, e.g. `firewall.proxy_port`.
        key: String,
        /// What is wrong and what to do instead.
        problem: String,
    },
    /// A file named by a key cannot be used.
    #[error("{path}: key `{key}`: {file}: {problem}")]
    File {
        /// The configuration file.
        path: PathBuf,
        /// Dotted key that names the file, e.g. `tls.private_key`.
        key: String,
        /// The file named by the key.
        file: PathBuf,
        /// What is wrong with it and what to do instead.
        problem: String,
    },
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_parse_error(text, &e),
        })?;
        config.source = path.to_path_buf();
        config.validate(path)?;
        Ok(config)
    }

    /// The keys and sections that differ between `self` (in force) and
    /// `new` and that only a restart can apply: the listening sockets, the
    /// filter's attachment, the upstream client, the identity secret, the
    /// limits, the logs and the process settings. A reload applies the
    /// certificates, the client CAs, the CRLs and the rest of `[firewall]`.
    pub fn restart_only_changes(&self, new: &Self) -> Vec<&'static str> {
        let (fw, tls) = (&self.firewall, &self.tls);
        let checks = [
            ("firewall.interface", fw.interface != new.firewall.interface),
            ("firewall.xdp_mode", fw.xdp_mode != new.firewall.xdp_mode),
            ("firewall.pin_root", fw.pin_root != new.firewall.pin_root),
            ("tls.listen", tls.listen != new.tls.listen),
            ("tls.server_name", tls.server_name != new.tls.server_name),
            ("[upstream]", self.upstream != new.upstream),
            ("[identity]", self.identity != new.identity),
            ("[limits]", self.limits != new.limits),
            ("[log]", self.log != new.log),
            ("[runtime]", self.runtime != new.runtime),
            ("[admin]", self.admin != new.admin),
        ];
        checks
            .into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect()
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.firewall.validate(path)?;
        self.tls.validate(path)?;
        self.upstream.validate(path)?;
        self.identity.validate(path)?;
        self.limits.validate(path)?;
        self.log.validate(path)?;
        self.runtime.validate(path)?;
        self.admin
            .validate(path, &self.firewall.proxy_addresses, &self.tls.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const BASE: &str = r#"
[firewall]
interface = "wan0"
proxy_addresses = ["192.0.2.10"]

[tls]
listen = ["192.0.2.10:443"]
server_name = "befund.example"
certificate = "/etc/befund/tls/server.crt"
private_key = "/etc/befund/tls/server.key"
client_ca = "/etc/befund/tls/ca.crt"
crls = ["/etc/befund/tls/ca.crl"]

[upstream]
url = "http://10.20.0.5:8080"

[identity]
secret_file = "/etc/befund/secret"
"#;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("b.toml"), text).unwrap()
    }

    #[test]
    fn certificates_crls_and_firewall_rules_reload_without_a_restart() {
        let running = parse(BASE);
        let edited = BASE
            .replace("server.crt", "server-2026.crt")
            .replace("ca.crl\"]", "ca.crl\", \"/etc/befund/tls/sub.crl\"]")
            .replace(
                "proxy_addresses = [\"192.0.2.10\"]",
                "proxy_addresses = [\"192.0.2.10\"]\nblocked = [\"203.0.113.0/24\"]",
            );
        assert_eq!(
            running.restart_only_changes(&parse(&edited)),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn listener_interface_and_upstream_changes_need_a_restart() {
        let running = parse(BASE);
        let edited = BASE
            .replace(
                "listen = [\"192.0.2.10:443\"]",
                "listen = [\"192.0.2.10:8443\"]",
            )
            .replace("interface = \"wan0\"", "interface = \"wan1\"")
            .replace("10.20.0.5:8080", "10.20.0.6:8080");
        assert_eq!(
            running.restart_only_changes(&parse(&edited)),
            ["firewall.interface", "tls.listen", "[upstream]"]
        );
    }

    #[test]
    fn connection_workers_default_to_one_per_cpu_and_change_only_at_a_restart() {
        let running = parse(BASE);
        assert_eq!(
            running.runtime.connection_workers(),
            std::thread::available_parallelism().unwrap()
        );
        let edited = parse(&format!("{BASE}\n[runtime]\nworkers = 3\n"));
        assert_eq!(running.restart_only_changes(&edited), ["[runtime]"]);
    }
}

/// One line for a TOML or schema error: where (line, column, and the dotted
/// key when the parser points at one), what, and what to do.
fn describe_parse_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else {
        return format!("{message}; see the README's configuration sections");
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;

    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        // The span of a table that lacks a key may start at its header.
        let header_line = text[before.len()..].lines().next().unwrap_or("");
        let section = section_at(header_line).or_else(|| section_at(before));
        return match section {
            None => format!("the section [{field}] is missing; add it (see the README)"),
            Some(section) => format!("[{section}]: key `{section}.{field}` is missing; add it"),
        };
    }
    let key = key_at(text, before);
    match key {
        Some(key) => format!("line {line}, column {column}: key `{key}`: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The `[section]` header in force at the end of `before`.
fn section_at(before: &str) -> Option<String> {
    before.lines().rev().find_map(|line| {
        let line = line.trim();
        let name = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"));
        let name = name.or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
        name.map(|n| n.trim().to_owned())
    })
}

/// The dotted key of the `key = value` line the error points into.
fn key_at(text: &str, before: &str) -> Option<String> {
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    Some(match section_at(before) {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod parse_error_tests {
    use super::*;

    fn error(text: &str) -> String {
        Config::parse(Path::new("/etc/befund/befund.toml"), text)
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn a_missing_section_is_named_in_one_line() {
        let e = error("# nothing but a comment\n");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("section [firewall] is missing"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_line_and_dotted_key() {
        let e = error(
            "[firewall]\ninterface = \"wan0\"\nproxy_addresses = [\"192.0.2.1\"]\nproxy_port = \"443\"\n",
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with("/etc/befund/befund.toml: line 4"), "{e}");
        assert!(e.contains("key `firewall.proxy_port`"), "{e}");
    }

    #[test]
    fn zero_or_too_many_connection_workers_are_named_with_the_fix() {
        let base = super::tests::BASE;
        let zero = error(&format!("{base}\n[runtime]\nworkers = 0\n"));
        assert!(zero.contains("key `runtime.workers`"), "{zero}");
        assert!(zero.contains("it must be 1 to 256"), "{zero}");
        assert!(zero.contains("remove the key to run one per CPU"), "{zero}");
        let many = error(&format!("{base}\n[runtime]\nworkers = 1000\n"));
        assert!(many.contains("key `runtime.workers`"), "{many}");
        assert!(many.contains("remove the key to run one per CPU"), "{many}");
        let two = Config::parse(
            Path::new("b.toml"),
            &format!("{base}\n[runtime]\nworkers = 2\n"),
        )
        .unwrap();
        assert_eq!(two.runtime.connection_workers().get(), 2);
    }

    #[test]
    fn a_missing_key_names_its_section() {
        let e = error("[firewall]\ninterface = \"wan0\"\n");
        assert!(
            e.contains("key `firewall.proxy_addresses` is missing"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod default_configuration_tests {
    use super::*;

    /// The appliance image ships this file as its commented default; the
    /// operator copies it to the config drive, so it must stay valid.
    #[test]
    fn the_appliance_images_default_configuration_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../images/config/befund.toml"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        let config = Config::parse(path, &text).unwrap();
        assert_eq!(config.runtime.user.as_deref(), Some("befund"));
        assert_eq!(config.tls.listen.len(), 1);
    }
}
