//! The audited deployment: `https://NAME[:PORT]`, and where to connect for it.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use hyper::Uri;
use rustls::pki_types::ServerName;

/// HTTPS's port when the target names none.
const HTTPS_PORT: u16 = 443;

/// Why a target could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a URL at all.
    #[error("invalid target URL `{url}`: {reason}; write it as https://NAME[:PORT]")]
    Invalid {
        /// What was given.
        url: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The name could not be resolved.
    #[error("cannot resolve {name}: {source}; give the address with --connect ADDR:PORT")]
    Resolve {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The deployment under audit.
#[derive(Clone, Debug)]
pub struct Target {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl Target {
    /// The name the client sends as SNI and checks the certificate against.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// The value of the HTTP `Host` header: the name, with the port unless it is 443.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            HTTPS_PORT => host,
            port => format!("{host}:{port}"),
        }
    }

    /// The address to connect to: `connect` when given (like curl's
    /// `--resolve`), otherwise the first address the name resolves to.
    pub async fn resolve(&self, connect: Option<SocketAddr>) -> Result<SocketAddr, TargetError> {
        if let Some(address) = connect {
            return Ok(address);
        }

        let resolve_error = |source| TargetError::Resolve {
            name: self.host.clone(),
            source,
        };
        let mut addresses = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(resolve_error)?;
        addresses.next().ok_or_else(|| {
            resolve_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name has no address",
            ))
        })
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| TargetError::Invalid {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;

        if uri.scheme_str() != Some("https") {
            return Err(invalid("the scheme must be https"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(invalid(
                "give the request path with --path, not in the target",
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| invalid("no host name"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| invalid("the host is neither a DNS name nor an IP address"))?;

        Ok(Self {
            port: uri.port_u16().unwrap_or(HTTPS_PORT),
            host,
            server_name,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_without_port_uses_443_and_bare_host_header() {
        let target: Target = "https://befund.labor.example".parse().unwrap();

        assert_eq!(target.authority(), "befund.labor.example");
        assert_eq!(target.to_string(), "https://befund.labor.example");
    }

    #[test]
    fn target_with_port_keeps_it_in_host_header() {
        let target: Target = "https://proxy.test:8443/".parse().unwrap();

        assert_eq!(target.authority(), "proxy.test:8443");
    }

    #[test]
    fn target_with_ipv6_literal_brackets_host_header_only() {
        let target: Target = "https://[::1]:8443".parse().unwrap();

        assert_eq!(target.authority(), "[::1]:8443");
        assert!(matches!(target.server_name(), ServerName::IpAddress(_)));
    }

    #[test]
    fn target_rejects_plain_http_and_paths() {
        assert!("http://proxy.test".parse::<Target>().is_err());
        assert!("https://proxy.test/healthz".parse::<Target>().is_err());
        assert!("proxy.test".parse::<Target>().is_err());
    }

    #[tokio::test]
    async fn connect_address_overrides_resolution() {
        let target: Target = "https://name.invalid:8443".parse().unwrap();
        let address: SocketAddr = "127.0.0.1:9443".parse().unwrap();

        assert_eq!(target.resolve(Some(address)).await.unwrap(), address);
    }
}
