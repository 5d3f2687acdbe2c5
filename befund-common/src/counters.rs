//! Counter slots: every verdict of the filter is attributed to exactly one.

/// Number of counter slots (size of the per-CPU counter array).
///
/// Slots below [`FIRST_RULE_SLOT`] are the fixed verdicts of the filter;
/// the rest are handed out by userspace, one per operator rule.
pub const COUNTER_SLOTS: u32 = 1024;

/// First slot available for operator rules (protected addresses, blocked
/// sources, allow rules).
pub const FIRST_RULE_SLOT: u32 = 16;

/// Dropped because no rule admitted it (default deny).
pub const SLOT_DEFAULT_DROP: u32 = 0;
/// Dropped because the frame could not be classified: truncated headers,
/// IPv4 IHL below 5, too many VLAN tags or IPv6 extension headers, ESP.
pub const SLOT_UNPARSEABLE: u32 = 1;
/// Dropped: a non-first IP fragment. It carries no ports, so no port rule may
/// admit it.
pub const SLOT_FRAGMENT: u32 = 2;
/// Dropped because lockdown is on and only ARP/ND and admin rules are open.
pub const SLOT_LOCKDOWN: u32 = 3;
/// Passed: ARP.
pub const SLOT_ARP: u32 = 4;
/// Passed: IPv6 neighbour discovery (router/neighbour solicitation and
/// advertisement, redirect).
pub const SLOT_NEIGHBOUR_DISCOVERY: u32 = 5;
/// Passed: ICMP fragmentation-needed or ICMPv6 packet-too-big addressed to
/// the gateway (path MTU discovery).
pub const SLOT_PATH_MTU: u32 = 6;
/// Passed: TCP to a proxy address on the proxy port.
pub const SLOT_PROXY: u32 = 7;
/// Passed: a reply to a flow that the gateway itself opened.
pub const SLOT_REPLY: u32 = 8;

/// Stable names of the fixed slots, as shown by `befundctl fw counters` and
/// exported as metric labels.
pub const FIXED_SLOT_NAMES: [(u32, &str); 9] = [
    (SLOT_DEFAULT_DROP, "default_drop"),
    (SLOT_UNPARSEABLE, "unparseable"),
    (SLOT_FRAGMENT, "fragment"),
    (SLOT_LOCKDOWN, "lockdown"),
    (SLOT_ARP, "arp"),
    (SLOT_NEIGHBOUR_DISCOVERY, "neighbour_discovery"),
    (SLOT_PATH_MTU, "path_mtu"),
    (SLOT_PROXY, "proxy"),
    (SLOT_REPLY, "reply"),
];

/// Packets and bytes seen by one counter slot on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets attributed to the slot.
    pub packets: u64,
    /// Bytes of those packets, from the Ethernet header on.
    pub bytes: u64,
}
