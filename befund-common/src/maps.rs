//! Keys and values of the filter's maps.

/// Map names. The maps are pinned under the pin root by these names, so
/// `befundctl` finds them whether or not the daemon runs.
pub mod names {
    /// Array of one entry: [`crate::FilterSettings`] in slot 0.
    pub const SETTINGS: &str = "BEFUND_SETTINGS";
    /// Hash map: local address of the gateway ([`crate::Addr`]) to its
    /// `LOCAL_*` flags (`u32`).
    pub const LOCAL_ADDRS: &str = "BEFUND_LOCAL";
    /// LPM trie: protected destination prefix over [`crate::Addr`] to its
    /// counter slot (`u32`).
    pub const PROTECTED: &str = "BEFUND_PROTECT";
    /// LPM trie: blocked source prefix over [`crate::Addr`] to its counter
    /// slot (`u32`).
    pub const BLOCKLIST: &str = "BEFUND_BLOCK";
    /// LPM trie: operator allow rule over [`crate::AllowRuleKey`] to its
    /// counter slot (`u32`).
    pub const ALLOW_RULES: &str = "BEFUND_ALLOW";
    /// Array of one entry: [`crate::AllowPorts`], the (protocol, port) pairs
    /// that at least one allow rule opens.
    pub const ALLOW_PORTS: &str = "BEFUND_ALLOW_PORTS";
    /// LRU hash map: flow opened by the gateway ([`crate::FlowKey`]) to
    /// [`crate::FlowState`], written by the egress program.
    pub const FLOWS: &str = "BEFUND_FLOWS";
    /// Per-CPU array of [`crate::COUNTER_SLOTS`] [`crate::Counter`]s, indexed
    /// by slot.
    pub const COUNTERS: &str = "BEFUND_COUNTERS";
}

/// Program names inside the eBPF object.
pub mod programs {
    /// The XDP program on the WAN interface's ingress.
    pub const WAN_INGRESS: &str = "befund_wan";
    /// The TC program on the WAN interface's egress that records the flows the
    /// gateway opens.
    pub const WAN_EGRESS: &str = "befund_egress";
}

/// An IPv6 address or an IPv4-mapped IPv6 address, in network byte order.
pub type Addr = [u8; 16];

/// Maximum entries of the address maps (local, protected, blocklist).
pub const MAX_ADDRESS_ENTRIES: u32 = 4096;
/// Maximum operator allow rules.
pub const MAX_ALLOW_RULES: u32 = 512;
/// Maximum tracked outbound flows. The gateway itself opens few connections
/// (time, DNS, updates); the LRU evicts the oldest when it is full.
pub const MAX_FLOWS: u32 = 16384;

/// Flag in `LOCAL_ADDRS`: the gateway's own address; path-MTU ICMP addressed
/// to it is admitted. (The proxy's addresses are in [`FilterSettings`].)
pub const LOCAL_GATEWAY: u32 = 2;

/// Proxy addresses of each family that fit into [`FilterSettings`].
pub const MAX_PROXY_ADDRESSES: usize = 4;

/// Words of [`AllowPorts`]: one bit per destination port for TCP, then one
/// per port for UDP.
pub const ALLOW_PORT_WORDS: usize = 2 * 65536 / 64;

/// One bit per (protocol, destination port) that at least one allow rule
/// opens, in `u64` words: TCP ports first, then UDP ports; port `p` of a
/// protocol is bit `p % 64` of that protocol's word `p / 64`. The filter
/// searches the allow rules only for packets whose bit is set.
pub type AllowPorts = [u64; ALLOW_PORT_WORDS];

/// The word and the bit mask of `proto` (6 TCP, 17 UDP) to destination
/// `port` (host byte order) in [`AllowPorts`]; `None` for any other
/// protocol, which no allow rule can name.
#[inline(always)]
pub fn allow_port_bit(proto: u8, port: u16) -> Option<(usize, u64)> {
    let base = match proto {
        6 => 0,
        17 => 65536 / 64,
        _ => return None,
    };
    Some((base + usize::from(port / 64), 1 << (port % 64)))
}

/// Global settings of the filter, slot 0 of `SETTINGS`.
///
/// All zero (the state before userspace writes it) admits nothing to the
/// proxy: port 0 never matches, and no proxy address is listed. That is the
/// fail-closed default.
///
/// The entry counts summarise the rule maps so that the filter skips a
/// lookup that cannot match: it searches a map only while its count is not
/// zero. Userspace rewrites them after every change to those maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterSettings {
    /// TCP port of the proxy, host byte order.
    pub proxy_port: u16,
    /// Always zero; keeps the layout free of implicit padding.
    pub reserved: u16,
    /// Non-zero when lockdown is on. A `u32` instead of a `bool` so the
    /// struct has no padding and every bit pattern is valid.
    pub lockdown: u32,
    /// How long a TCP flow opened by the gateway admits replies after its
    /// last outbound packet, in seconds.
    pub tcp_flow_timeout_secs: u32,
    /// The same for UDP and ICMP echo.
    pub udp_flow_timeout_secs: u32,
    /// Entries in the `PROTECTED` map.
    pub protected_entries: u32,
    /// Entries in the `BLOCKLIST` map.
    pub blocked_entries: u32,
    /// Entries in the `ALLOW_RULES` map.
    pub allow_entries: u32,
    /// How many of `proxy_ipv4` are proxy addresses (at most
    /// [`MAX_PROXY_ADDRESSES`]); the rest are zero.
    pub proxy_ipv4_count: u16,
    /// How many of `proxy_ipv6` are proxy addresses (at most
    /// [`MAX_PROXY_ADDRESSES`]); the rest are zero.
    pub proxy_ipv6_count: u16,
    /// IPv4 addresses of the proxy, each its four bytes in network order
    /// read as one native-endian word (`u32::from_ne_bytes(octets)`).
    pub proxy_ipv4: [u32; MAX_PROXY_ADDRESSES],
    /// IPv6 addresses of the proxy (never IPv4-mapped ones: those are
    /// IPv4 addresses), each its 16 bytes as four such words.
    pub proxy_ipv6: [[u32; 4]; MAX_PROXY_ADDRESSES],
}

/// Data part of an allow-rule LPM key: protocol and destination port are
/// always matched in full (32 bits), the source address by its prefix.
///
/// The LPM prefix length of a rule is `32 + source prefix` (with IPv4 mapped:
/// `32 + 96 + n`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowRuleKey {
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Always zero.
    pub reserved: u8,
    /// Destination port, network byte order.
    pub port: [u8; 2],
    /// Source address.
    pub source: Addr,
}

/// Prefix bits of [`AllowRuleKey`] before the source address.
pub const ALLOW_RULE_FIXED_BITS: u32 = 32;

/// A flow seen from the gateway: the remote peer and the local end.
///
/// The egress program records `(remote = destination, local = source)`; the
/// ingress program looks up `(remote = source, local = destination)`. For
/// ICMP echo both ports are the echo identifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Address of the remote peer.
    pub remote: Addr,
    /// Address of the gateway's end.
    pub local: Addr,
    /// Remote port, network byte order.
    pub remote_port: [u8; 2],
    /// Local port, network byte order.
    pub local_port: [u8; 2],
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub reserved: [u8; 3],
}

/// Value of a tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// `bpf_ktime_get_ns` of the last outbound packet.
    pub last_outbound_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]

    // SAFETY: each type is repr(C), Copy, made only of integers and byte
    // arrays without padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::FilterSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowRuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::Counter {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn allow_port_bits_are_distinct_per_protocol_and_port() {
        assert_eq!(allow_port_bit(6, 0), Some((0, 1)));
        assert_eq!(allow_port_bit(6, 65), Some((1, 2)));
        assert_eq!(allow_port_bit(17, 0), Some((1024, 1)));
        assert_eq!(
            allow_port_bit(17, 65535),
            Some((ALLOW_PORT_WORDS - 1, 1 << 63))
        );
        assert_eq!(allow_port_bit(1, 22), None);
    }

    #[test]
    fn shared_types_have_no_padding() {
        assert_eq!(size_of::<FilterSettings>(), 112);
        assert_eq!(size_of::<AllowRuleKey>(), 20);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowState>(), 8);
        assert_eq!(size_of::<crate::Counter>(), 16);
    }
}
