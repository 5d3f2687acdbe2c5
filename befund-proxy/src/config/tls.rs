//! `[tls]`: the client-facing HTTPS listener, its certificate and the client-certificate policy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[tls]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Socket addresses the proxy listens on, e.g. `["0.0.0.0:443", "[::]:443"]`.
    pub listen: Vec<SocketAddr>,
    /// The name clients use (`Host` / `:authority` must equal it), e.g. `befund.labor.example`.
    pub server_name: String,
    /// PEM file with the server certificate followed by its intermediates.
    pub certificate: PathBuf,
    /// PEM file with the server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// PEM bundle of the CA certificates that issue client certificates.
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM or DER), one per issuing CA.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// What to do once a CRL is past its `nextUpdate`.
    #[serde(default)]
    pub crl_expired: CrlExpiredPolicy,
    /// How many days before a CRL's `nextUpdate` the proxy starts warning.
    #[serde(default = "default_crl_warning_days")]
    pub crl_warning_days: u32,
}

/// What the proxy does with clients of a CA whose CRL is past its `nextUpdate`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CrlExpiredPolicy {
    /// Refuse those clients and log an error until a fresh CRL is installed (fail closed).
    #[default]
    Refuse,
    /// Keep accepting them with the stale CRL and log a warning.
    Warn,
}

impl CrlExpiredPolicy {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Warn => "warn",
        }
    }
}

/// `befundctl crl` publishes CRLs valid for 7 days and the appliance renews
/// them daily, so a fresh CRL is always within 7 days of its nextUpdate: the
/// warning starts after four missed renewals, three days before clients
/// would be locked out.
fn default_crl_warning_days() -> u32 {
    3
}

impl TlsConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("tls.{key}"),
            problem,
        };

        if self.listen.is_empty() {
            return Err(invalid(
                "listen",
                "no address to listen on; give at least one, e.g. [\"0.0.0.0:443\"]".into(),
            ));
        }
        if let Some(dup) = first_duplicate(&self.listen) {
            return Err(invalid(
                "listen",
                format!("{dup} is listed twice; list each address once"),
            ));
        }
        if let Err(problem) = validate_server_name(&self.server_name) {
            return Err(invalid("server_name", problem));
        }
        if self.crl_warning_days > 365 {
            return Err(invalid(
                "crl_warning_days",
                format!(
                    "{} days is more than a year; use a value of 0 to 365",
                    self.crl_warning_days
                ),
            ));
        }
        Ok(())
    }
}

fn first_duplicate(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .enumerate()
        .find(|(i, a)| addrs[..*i].contains(a))
        .map(|(_, a)| *a)
}

/// Checks that `name` is a DNS name without port, scheme or trailing dot.
fn validate_server_name(name: &str) -> Result<(), String> {
    let fix =
        "give the DNS name clients use, without scheme or port, e.g. \"befund.labor.example\"";
    if name.is_empty() {
        return Err(format!("empty name; {fix}"));
    }
    if name.len() > 253 {
        return Err(format!("the name is longer than 253 characters; {fix}"));
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok {
        return Err(format!("`{name}` is not a DNS name; {fix}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_with_port_is_rejected() {
        let err = validate_server_name("befund.example:443").unwrap_err();
        assert!(err.contains("is not a DNS name"), "{err}");
    }

    #[test]
    fn server_name_with_scheme_is_rejected() {
        assert!(validate_server_name("https://befund.example").is_err());
    }

    #[test]
    fn plain_dns_name_is_accepted() {
        validate_server_name("befund.labor-1.example").unwrap();
    }
}
