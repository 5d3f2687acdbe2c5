//! The Host / :authority check: a request must name the proxy's server name
//! (with no port, or the port it arrived on).

use http::header::{HOST, HeaderValue};
use http::uri::Authority;
use http::{HeaderMap, Uri};

/// Why a request's authority was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorityError {
    /// No Host header and no authority in the request target (400).
    Missing,
    /// Several Host headers, a Host differing from the target's authority,
    /// or an unparsable value (400).
    Malformed,
    /// A well-formed authority for another name or port (421).
    Misdirected,
}

/// Returns the authority as the client sent it, if it names `server_name` and
/// either no port or `local_port`.
pub fn check_authority(
    uri: &Uri,
    headers: &HeaderMap,
    server_name: &str,
    local_port: u16,
) -> Result<HeaderValue, AuthorityError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::Malformed);
    }

    let sent = match (uri.authority(), host) {
        (None, None) => return Err(AuthorityError::Missing),
        (Some(target), None) => {
            HeaderValue::from_str(target.as_str()).map_err(|_| AuthorityError::Malformed)?
        }
        (None, Some(host)) => host.clone(),
        (Some(target), Some(host)) => {
            if !target
                .as_str()
                .eq_ignore_ascii_case(host.to_str().map_err(|_| AuthorityError::Malformed)?)
            {
                return Err(AuthorityError::Malformed);
            }
            host.clone()
        }
    };

    let text = sent.to_str().map_err(|_| AuthorityError::Malformed)?;
    let authority: Authority = text.parse().map_err(|_| AuthorityError::Malformed)?;
    if authority.as_str().contains('@') {
        return Err(AuthorityError::Malformed);
    }
    let host_name = authority.host();
    let host_name = host_name.strip_suffix('.').unwrap_or(host_name);
    let port_ok = match authority.port() {
        None => !text.ends_with(':'),
        Some(port) => port.as_u16() == local_port,
    };
    if host_name.eq_ignore_ascii_case(server_name) && port_ok {
        Ok(sent)
    } else {
        Err(AuthorityError::Misdirected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, hosts: &[&str]) -> Result<HeaderValue, AuthorityError> {
        let uri: Uri = uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(HOST, HeaderValue::from_str(h).unwrap());
        }
        check_authority(&uri, &headers, "befund.example", 8443)
    }

    #[test]
    fn matching_host_with_and_without_listen_port_is_accepted() {
        assert_eq!(check("/", &["befund.example"]).unwrap(), "befund.example");
        assert_eq!(
            check("/", &["Befund.Example:8443"]).unwrap(),
            "Befund.Example:8443"
        );
        assert!(check("/", &["befund.example."]).is_ok());
    }

    #[test]
    fn other_name_or_port_is_misdirected() {
        assert_eq!(
            check("/", &["other.example"]),
            Err(AuthorityError::Misdirected)
        );
        assert_eq!(
            check("/", &["befund.example:443"]),
            Err(AuthorityError::Misdirected)
        );
        assert_eq!(
            check("/", &["127.0.0.1:8443"]),
            Err(AuthorityError::Misdirected)
        );
        assert_eq!(
            check("/", &["befund.example.evil"]),
            Err(AuthorityError::Misdirected)
        );
    }

    #[test]
    fn http2_authority_is_checked_without_host_header() {
        assert!(check("https://befund.example:8443/x", &[]).is_ok());
        assert_eq!(
            check("https://other.example/x", &[]),
            Err(AuthorityError::Misdirected)
        );
    }

    #[test]
    fn conflicting_or_repeated_hosts_are_malformed() {
        assert_eq!(
            check("https://befund.example/", &["other.example"]),
            Err(AuthorityError::Malformed)
        );
        assert_eq!(
            check("/", &["befund.example", "befund.example"]),
            Err(AuthorityError::Malformed)
        );
        assert_eq!(
            check("/", &["user@befund.example"]),
            Err(AuthorityError::Malformed)
        );
        assert_eq!(
            check("/", &["befund example"]),
            Err(AuthorityError::Malformed)
        );
    }

    #[test]
    fn missing_host_is_reported() {
        assert_eq!(check("/", &[]), Err(AuthorityError::Missing));
    }
}
