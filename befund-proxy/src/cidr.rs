//! Address prefixes (`192.0.2.0/24`, `2001:db8::/32`, or a bare address).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 or IPv6 prefix whose host bits are all zero.
///
/// A bare address parses as a single-host prefix (`/32` or `/128`). A prefix
/// with host bits set (`10.0.0.1/8`) is rejected rather than silently
/// truncated, because it usually means a typo in the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a text is not a valid [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("`{0}` is not an IP address; write e.g. 192.0.2.0/24 or 2001:db8::/32")]
    Address(String),
    /// The part after `/` is not a number in range.
    #[error("`{text}`: prefix length must be a number from 0 to {max}")]
    PrefixLength {
        /// The whole text.
        text: String,
        /// 32 or 128.
        max: u8,
    },
    /// Bits beyond the prefix length are set.
    #[error("`{text}` has host bits set; did you mean {suggestion}?")]
    HostBits {
        /// The whole text.
        text: String,
        /// The prefix with host bits cleared.
        suggestion: Cidr,
    },
}

impl Cidr {
    /// A prefix from an address and a length, or `None` if the length is out
    /// of range or host bits are set.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let cidr = Self { addr, prefix_len };
        (prefix_len <= max_len(addr) && cidr.truncated() == cidr).then_some(cidr)
    }

    /// The single-host prefix of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix_len: max_len(addr),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits of the address family.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The network address as 16 bytes, IPv4 mapped into `::ffff:0:0/96`.
    pub fn mapped_addr(&self) -> [u8; 16] {
        mapped(self.addr)
    }

    /// The prefix length over the 16-byte mapped address (IPv4 `/n` is
    /// `/96+n`).
    pub fn mapped_prefix_len(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 96 + self.prefix_len,
            IpAddr::V6(_) => self.prefix_len,
        }
    }

    /// Whether `addr` lies inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let other = Self {
            addr,
            prefix_len: self.prefix_len,
        };
        self.addr.is_ipv4() == addr.is_ipv4() && other.truncated() == *self
    }

    /// The same prefix with every host bit cleared.
    fn truncated(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self { addr, ..*self }
    }
}

/// `addr` as 16 bytes, IPv4 mapped into `::ffff:0:0/96`.
pub fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The distinct addresses of `addrs` by family, in their order, as the
/// filter compares them: an IPv4-mapped IPv6 address is an IPv4 address.
pub fn split_proxy_addresses(addrs: &[IpAddr]) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for addr in addrs {
        match unmapped(mapped(*addr)) {
            IpAddr::V4(a) if !v4.contains(&a) => v4.push(a),
            IpAddr::V6(a) if !v6.contains(&a) => v6.push(a),
            _ => {}
        }
    }
    (v4, v6)
}

/// The inverse of [`mapped`]: IPv4-mapped addresses come back as IPv4.
pub fn unmapped(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| CidrError::Address(addr_text.trim().to_owned()))?;

        let max = max_len(addr);
        let prefix_len = match len_text {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| CidrError::PrefixLength {
                    text: text.to_owned(),
                    max,
                })?,
        };

        let cidr = Self { addr, prefix_len };
        let suggestion = cidr.truncated();
        if suggestion != cidr {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                suggestion,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_with_prefix_parses_and_displays_canonically() {
        let cidr: Cidr = "192.0.2.0/24".parse().unwrap();
        assert_eq!(cidr.addr(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)));
        assert_eq!(cidr.prefix_len(), 24);
        assert_eq!(cidr.to_string(), "192.0.2.0/24");

        let v6: Cidr = "2001:DB8::/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
    }

    #[test]
    fn bare_address_is_a_single_host_prefix() {
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            "2001:db8::1".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn cidr_with_host_bits_is_rejected_with_a_suggestion() {
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBits {
                text: "10.0.0.1/8".into(),
                suggestion: "10.0.0.0/8".parse().unwrap(),
            }
        );
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"));
    }

    #[test]
    fn prefix_length_beyond_the_family_is_rejected() {
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixLength { max: 32, .. })
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixLength { max: 128, .. })
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::PrefixLength { .. })
        ));
    }

    #[test]
    fn garbage_address_is_rejected() {
        assert_eq!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address("10.0.0".into()))
        );
    }

    #[test]
    fn zero_length_prefixes_cover_their_family_only() {
        let all4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all4.contains("203.0.113.9".parse().unwrap()));
        assert!(!all4.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(all4.mapped_prefix_len(), 96);

        let all6: Cidr = "::/0".parse().unwrap();
        assert_eq!(all6.mapped_prefix_len(), 0);
    }

    #[test]
    fn ipv4_prefix_maps_into_the_ipv4_mapped_range() {
        let cidr: Cidr = "198.51.100.0/24".parse().unwrap();
        assert_eq!(cidr.mapped_prefix_len(), 120);
        assert_eq!(
            cidr.mapped_addr(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 0]
        );
        assert_eq!(unmapped(cidr.mapped_addr()), cidr.addr());
    }

    #[test]
    fn contains_respects_the_prefix_boundary() {
        let cidr: Cidr = "10.20.0.0/15".parse().unwrap();
        assert!(cidr.contains("10.21.255.255".parse().unwrap()));
        assert!(!cidr.contains("10.22.0.0".parse().unwrap()));
    }

    #[test]
    fn new_rejects_host_bits_and_long_prefixes() {
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(Cidr::new(addr, 8), None);
        assert_eq!(Cidr::new(addr, 33), None);
        assert_eq!(Cidr::new(addr, 32), Some(Cidr::host(addr)));
    }
}
