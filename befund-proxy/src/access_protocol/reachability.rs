//! TCP reachability: single connect probes (rows 5 and 6) and a bounded port
//! scan of the target host (row 7).

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How many connects the scan keeps in flight: enough to finish a few thousand
/// closed ports quickly, few enough to stay far from descriptor limits and not
/// to flood a firewall's connection table.
const SCAN_CONCURRENCY: usize = 64;

/// What a TCP connect attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// The three-way handshake completed.
    Open,
    /// The host answered with a reset: nothing listens, or a filter rejects.
    Refused,
    /// No answer within the timeout: a filter drops the packets.
    TimedOut,
    /// The connect failed otherwise (no route, host unreachable, ...).
    Failed(String),
}

impl Reachability {
    /// Whether a connection could be made.
    pub fn is_open(&self) -> bool {
        *self == Self::Open
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open => f.write_str("TCP connect succeeded"),
            Self::Refused => f.write_str("TCP connect refused"),
            Self::TimedOut => f.write_str("TCP connect timed out"),
            Self::Failed(error) => write!(f, "TCP connect failed: {error}"),
        }
    }
}

/// Tries one TCP connect and closes the connection at once.
pub async fn tcp_probe(address: SocketAddr, timeout: Duration) -> Reachability {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => Reachability::Open,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Reachability::Refused,
        Ok(Err(e)) => Reachability::Failed(e.to_string()),
        Err(_elapsed) => Reachability::TimedOut,
    }
}

/// A set of TCP ports: `22,80,443`, `1-1024`, or a mix, `22,8000-8100`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortList(BTreeSet<u16>);

impl PortList {
    /// The ports in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }

    /// How many ports the list holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list holds no port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a port list could not be parsed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid port list `{0}`: write ports 1-65535 as a list (22,443) or a range (1-1024)")]
pub struct PortListError(String);

impl FromStr for PortList {
    type Err = PortListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || PortListError(text.to_owned());
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(invalid)
        };

        let mut ports = BTreeSet::new();
        for item in text.split(',') {
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (port(first)?, port(last)?);
                    if first > last {
                        return Err(invalid());
                    }
                    ports.extend(first..=last);
                }
                None => {
                    ports.insert(port(item)?);
                }
            }
        }
        Ok(Self(ports))
    }
}

/// The outcome of a port scan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanResult {
    /// Ports that accepted a TCP connection.
    pub open: Vec<u16>,
    /// Ports that answered with a reset.
    pub closed: usize,
    /// Ports that did not answer within the timeout, or failed otherwise.
    pub filtered: usize,
    /// Ports not probed because the time budget ran out.
    pub unprobed: usize,
}

/// Connects to every port of `ports` on `host`, at most [`SCAN_CONCURRENCY`]
/// at a time, each connect bounded by `timeout` and the whole scan by `budget`.
pub async fn scan(
    host: IpAddr,
    ports: &PortList,
    timeout: Duration,
    budget: Duration,
) -> ScanResult {
    let mut result = ScanResult::default();
    let mut pending = ports.iter();
    let mut in_flight = JoinSet::new();
    let deadline = tokio::time::Instant::now() + budget;

    loop {
        while in_flight.len() < SCAN_CONCURRENCY {
            let Some(port) = pending.next() else { break };
            let address = SocketAddr::new(host, port);
            in_flight.spawn(async move { (port, tcp_probe(address, timeout).await) });
        }

        let next = tokio::time::timeout_at(deadline, in_flight.join_next()).await;
        match next {
            Ok(Some(Ok((port, reachability)))) => match reachability {
                Reachability::Open => result.open.push(port),
                Reachability::Refused => result.closed += 1,
                Reachability::TimedOut | Reachability::Failed(_) => result.filtered += 1,
            },
            Ok(Some(Err(_join_error))) => result.filtered += 1,
            Ok(None) => break,
            Err(_budget_spent) => {
                result.unprobed = in_flight.len() + pending.count();
                break;
            }
        }
    }

    result.open.sort_unstable();
    result
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn port_list_parses_lists_and_ranges() {
        let list: PortList = "443, 20-22,8443".parse().unwrap();

        assert_eq!(list.iter().collect::<Vec<_>>(), [20, 21, 22, 443, 8443]);
    }

    #[test]
    fn port_list_rejects_port_zero_reversed_ranges_and_words() {
        for bad in ["0", "22-20", "ssh", "", "1-70000", "22,"] {
            assert!(bad.parse::<PortList>().is_err(), "{bad} was accepted");
        }
    }

    /// A loopback port that was just free: bind it, note it, release it.
    fn closed_loopback_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn closed_loopback_port_is_refused_and_listening_port_is_open() {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let open = listener.local_addr().unwrap();
        let closed = closed_loopback_port();

        assert_eq!(
            tcp_probe(open, Duration::from_secs(3)).await,
            Reachability::Open
        );
        assert_eq!(
            tcp_probe(closed, Duration::from_secs(3)).await,
            Reachability::Refused
        );
    }

    #[tokio::test]
    async fn scan_reports_exactly_the_listening_ports() {
        let first_listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let second_listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let first = first_listener.local_addr().unwrap().port();
        let second = second_listener.local_addr().unwrap().port();
        let closed = closed_loopback_port().port();
        let ports: PortList = format!("{first},{second},{closed}").parse().unwrap();

        let result = scan(
            Ipv4Addr::LOCALHOST.into(),
            &ports,
            Duration::from_secs(3),
            Duration::from_secs(30),
        )
        .await;

        let mut expected = vec![first, second];
        expected.sort_unstable();
        assert_eq!(result.open, expected);
        assert_eq!(result.closed, 1);
        assert_eq!(result.unprobed, 0);
    }
}
