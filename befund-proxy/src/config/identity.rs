//! `[identity]`: how the proxy vouches for the forwarded client identity.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// Default name of the header that carries the shared secret to the Befundserver.
pub const DEFAULT_SECRET_HEADER: &str = "X-Befund-Proxy-Auth";

/// `[identity]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Header that carries the shared secret; the Befundserver trusts the identity
    /// headers only when it carries the right value.
    #[serde(default = "default_secret_header")]
    pub secret_header: String,
    /// File holding the shared secret (at least 32 bytes, not world-readable).
    /// The secret itself never appears in this configuration.
    pub secret_file: PathBuf,
    /// Further request headers to remove before forwarding, in addition to the
    /// built-in identity headers (matched case-insensitively, `_` equal to `-`).
    #[serde(default)]
    pub strip_headers: Vec<String>,
}

fn default_secret_header() -> String {
    DEFAULT_SECRET_HEADER.to_owned()
}

impl IdentityConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("identity.{key}"),
            problem,
        };

        let secret = self.secret_header.to_ascii_lowercase().replace('_', "-");
        if http::HeaderName::from_bytes(self.secret_header.as_bytes()).is_err() {
            return Err(invalid(
                "secret_header",
                format!(
                    "`{}` is not a valid header name; use e.g. \"{DEFAULT_SECRET_HEADER}\"",
                    self.secret_header
                ),
            ));
        }
        let reserved = secret == "host"
            || secret.starts_with("client-cert")
            || secret.starts_with("x-client-")
            || secret.starts_with("x-forwarded-")
            || secret.starts_with("x-ssl-")
            || secret == "forwarded";
        if reserved {
            return Err(invalid(
                "secret_header",
                format!(
                    "`{}` collides with a header the proxy sets itself; use e.g. \"{DEFAULT_SECRET_HEADER}\"",
                    self.secret_header
                ),
            ));
        }
        for name in &self.strip_headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    "strip_headers",
                    format!(
                        "`{name}` is not a valid header name; list names like \"X-Remote-User\""
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret_header: &str) -> IdentityConfig {
        IdentityConfig {
            secret_header: secret_header.into(),
            secret_file: "/etc/befund/secret".into(),
            strip_headers: vec![],
        }
    }

    #[test]
    fn secret_header_named_like_an_identity_header_is_rejected() {
        let err = config("X_Client_Cert_Subject")
            .validate(Path::new("b.toml"))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("collides with a header the proxy sets"),
            "{err}"
        );
    }

    #[test]
    fn secret_header_with_space_is_rejected() {
        let err = config("X Auth").validate(Path::new("b.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.toml: key `identity.secret_header`: `X Auth` is not a valid header name; use e.g. \
             \"X-Befund-Proxy-Auth\""
        );
    }
}
