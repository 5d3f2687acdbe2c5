//! `[upstream]`: how the proxy reaches the Befundserver.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[upstream]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the Befundserver, `http://` or `https://`, without path, e.g.
    /// `http://10.20.0.5:8080`.
    pub url: UpstreamUrl,
    /// PEM bundle of the CA that issued the Befundserver's certificate (required for https).
    pub ca: Option<PathBuf>,
    /// PEM certificate the proxy presents to an https Befundserver (optional).
    pub client_certificate: Option<PathBuf>,
    /// The private key of `client_certificate`.
    pub client_key: Option<PathBuf>,
    /// How long to wait for a TCP (and TLS) connection to the Befundserver.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for the Befundserver's response headers after sending a request.
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How many idle connections to the Befundserver the pool keeps at most.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// How long an idle pooled connection is kept.
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

// A Befundserver on the lab network answers a connect within milliseconds; 5 s
// covers a busy host without letting clients wait long for a 502.
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

// Report pages are generated on demand (PDF rendering); a minute is generous
// for that and still bounds a hung backend.
fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_pool_max_idle() -> usize {
    32
}

fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}

/// A validated Befundserver base URL: scheme http or https, a host, no path, query or user info.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct UpstreamUrl(http::Uri);

/// URL scheme of the Befundserver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamScheme {
    /// Plain HTTP on the lab network.
    Http,
    /// HTTPS, verified against `upstream.ca`.
    Https,
}

impl UpstreamUrl {
    /// The parsed URL.
    pub fn uri(&self) -> &http::Uri {
        &self.0
    }

    /// The scheme.
    pub fn scheme(&self) -> UpstreamScheme {
        if self.0.scheme() == Some(&http::uri::Scheme::HTTPS) {
            UpstreamScheme::Https
        } else {
            UpstreamScheme::Http
        }
    }

    /// `host[:port]` as written in the URL.
    pub fn authority(&self) -> &http::uri::Authority {
        self.0
            .authority()
            .expect("an UpstreamUrl always has an authority (checked when parsed)")
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<String> for UpstreamUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let example = "e.g. \"http://10.20.0.5:8080\"";
        let uri: http::Uri = text.parse().map_err(|e| {
            format!("`{text}` is not a URL ({e}); give the Befundserver's base URL, {example}")
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(format!(
                    "`{text}` must start with http:// or https://, {example}"
                ));
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("`{text}` has no host, {example}"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{text}` must not contain user information, {example}"
            ));
        }
        if authority.host().is_empty() {
            return Err(format!("`{text}` has no host, {example}"));
        }
        let path_is_root = matches!(uri.path(), "" | "/");
        if !path_is_root || uri.query().is_some() {
            return Err(format!(
                "`{text}` has a path or query; the proxy forwards request paths unchanged, so \
                 give only scheme, host and port, {example}"
            ));
        }
        Ok(Self(uri))
    }
}

impl UpstreamConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("upstream.{key}"),
            problem,
        };

        match (&self.client_certificate, &self.client_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "client_key",
                    "missing: `client_certificate` is set, so give its private key too".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "client_certificate",
                    "missing: `client_key` is set, so give its certificate too".into(),
                ));
            }
            _ => {}
        }
        match self.url.scheme() {
            UpstreamScheme::Https if self.ca.is_none() => {
                return Err(invalid(
                    "ca",
                    "missing: the upstream url uses https, so name the PEM file of the CA that \
                     issued the Befundserver's certificate"
                        .into(),
                ));
            }
            UpstreamScheme::Http if self.ca.is_some() || self.client_certificate.is_some() => {
                return Err(invalid(
                    "url",
                    format!(
                        "`{}` uses plain http but `ca`/`client_certificate` are set; use an \
                         https:// url or remove them",
                        self.url
                    ),
                ));
            }
            _ => {}
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    key,
                    "a zero timeout would fail every request; use e.g. \"5s\"".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_path_is_rejected() {
        let err = UpstreamUrl::try_from("http://10.0.0.5:8080/app".to_owned()).unwrap_err();
        assert!(err.contains("has a path or query"), "{err}");
    }

    #[test]
    fn url_with_other_scheme_is_rejected() {
        let err = UpstreamUrl::try_from("ftp://10.0.0.5".to_owned()).unwrap_err();
        assert!(err.contains("must start with http:// or https://"), "{err}");
    }

    #[test]
    fn url_with_user_info_is_rejected() {
        let err = UpstreamUrl::try_from("http://a:b@10.0.0.5".to_owned()).unwrap_err();
        assert!(err.contains("user information"), "{err}");
    }

    #[test]
    fn https_url_keeps_scheme_and_authority() {
        let url = UpstreamUrl::try_from("https://befund.lab:8443/".to_owned()).unwrap();
        assert_eq!(url.scheme(), UpstreamScheme::Https);
        assert_eq!(url.authority().as_str(), "befund.lab:8443");
    }
}
