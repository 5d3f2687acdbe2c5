//! The WAN filter's rules and parsing edges, one fixture frame per row, run
//! through the real programs in the kernel with `BPF_PROG_TEST_RUN`.
//!
//! Needs root (BPF and a private bpffs). Run with
//! `cargo test -p befund-tests -- --test-threads=1`.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use befund_common::{
    FIXED_SLOT_NAMES, FilterSettings, FlowKey, LOCAL_GATEWAY, SLOT_ARP, SLOT_DEFAULT_DROP,
    SLOT_FRAGMENT, SLOT_LOCKDOWN, SLOT_NEIGHBOUR_DISCOVERY, SLOT_PATH_MTU, SLOT_PROXY, SLOT_REPLY,
    SLOT_UNPARSEABLE,
};
use befund_proxy::firewall::set_proxy_addresses;
use befund_tests::{
    frames::{
        self, ETH_LEN, IPPROTO_ESP, IPPROTO_NONE, Vlan, arp_request, echo, icmp, other_ether_type,
        padded, raw_ip, tcp, truncated, udp, with_ipv4_header_words, with_ipv4_total_len,
        with_ipv6_destination_options, with_ipv6_payload_len, with_third_vlan_tag,
    },
    wan_filter::{LoadedFilter, TC_ACT_OK, XDP_DROP, XDP_PASS, map_addr},
};
use etherparse::{IpAuthHeader, IpNumber, Ipv6Extensions, Ipv6RawExtHeader, Ipv6RoutingExtensions};

// The gateway's addresses.
const PROXY_V4: &str = "192.0.2.10";
const GATEWAY_V4: &str = "192.0.2.1";
const PROXY_V6: &str = "2001:db8:1::10";
const GATEWAY_V6: &str = "2001:db8:1::1";
const PROXY_PORT: u16 = 443;

// Protected hosts (the Befundserver and its network).
const PROTECTED_V4: &str = "192.0.2.50";
const PROTECTED_NET_V4: &str = "192.0.2.128/25";
const PROTECTED_IN_NET_V4: &str = "192.0.2.200";
const PROTECTED_V6: &str = "2001:db8:1::50";
const SLOT_PROTECTED_V4: u32 = 16;
const SLOT_PROTECTED_NET_V4: u32 = 17;
const SLOT_PROTECTED_V6: u32 = 18;

// Blocked sources.
const BLOCKED_V4: &str = "203.0.113.66";
const BLOCKED_NET_V6: &str = "2001:db8:ad:bad::/64";
const BLOCKED_V6: &str = "2001:db8:ad:bad::7";
const SLOT_BLOCKED_V4: u32 = 20;
const SLOT_BLOCKED_V6: u32 = 21;

// Operator allow rules.
const ADMIN_NET_V4: &str = "198.51.100.0/24";
const ADMIN_V4: &str = "198.51.100.20";
const ADMIN_HOST_V4: &str = "198.51.100.7";
const ADMIN_NET_V6: &str = "2001:db8:ad::/48";
const ADMIN_V6: &str = "2001:db8:ad::20";
const SSH: u16 = 22;
const WIREGUARD: u16 = 51820;
const SLOT_SSH_ADMIN_NET_V4: u32 = 24;
const SLOT_SSH_ADMIN_HOST_V4: u32 = 25;
const SLOT_SSH_ADMIN_NET_V6: u32 = 26;
const SLOT_WIREGUARD_ANY_V4: u32 = 27;

// Peers on the internet.
const CLIENT_V4: &str = "203.0.113.5";
const CLIENT_V6: &str = "2001:db8:c::5";
const SERVER_V4: &str = "203.0.113.80";
const SERVER_V6: &str = "2001:db8:beef::80";
const ROUTER_V4: &str = "192.0.2.254";

const TCP: u8 = 6;
const UDP: u8 = 17;
// Short flow timeouts: flows are aged by moving their timestamps back, which
// cannot go past the moment the kernel's monotonic clock started (a freshly
// booted test VM is only seconds old).
const TCP_FLOW_TIMEOUT: Duration = Duration::from_secs(4);
const UDP_FLOW_TIMEOUT: Duration = Duration::from_secs(2);

/// ICMP/ICMPv6 message types used below.
mod icmp_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
    pub const PORT_UNREACH: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
    pub const V6_ROUTER_ADVERTISEMENT: u8 = 134;
    pub const V6_NEIGHBOUR_SOLICITATION: u8 = 135;
    pub const V6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
    pub const V6_ROUTER_RENUMBERING: u8 = 138;
}
use icmp_type::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

/// State a row needs before its frame arrives.
enum Given {
    /// Lockdown on for this row.
    Lockdown,
    /// The gateway sent this frame (through the egress program).
    Sent(Vec<u8>),
    /// This much time passed since every recorded flow's last packet.
    Aged(Duration),
}

struct Row {
    name: &'static str,
    given: Vec<Given>,
    frame: Vec<u8>,
    verdict: Verdict,
    slot: u32,
}

fn passes(name: &'static str, frame: Vec<u8>, slot: u32) -> Row {
    Row {
        name,
        given: Vec::new(),
        frame,
        verdict: Verdict::Pass,
        slot,
    }
}

fn drops(name: &'static str, frame: Vec<u8>, slot: u32) -> Row {
    Row {
        verdict: Verdict::Drop,
        ..passes(name, frame, slot)
    }
}

impl Row {
    fn given(mut self, given: Given) -> Self {
        self.given.push(given);
        self
    }
}

fn settings(lockdown: bool) -> FilterSettings {
    let mut settings = FilterSettings {
        proxy_port: PROXY_PORT,
        lockdown: u32::from(lockdown),
        tcp_flow_timeout_secs: u32::try_from(TCP_FLOW_TIMEOUT.as_secs()).expect("fits"),
        udp_flow_timeout_secs: u32::try_from(UDP_FLOW_TIMEOUT.as_secs()).expect("fits"),
        ..FilterSettings::default()
    };
    let proxy = [PROXY_V4, PROXY_V6].map(|a| a.parse().expect("fixture address"));
    set_proxy_addresses(&mut settings, &proxy);
    settings
}

/// The filter with the rules every row runs against.
fn configured_filter() -> Result<LoadedFilter> {
    let mut filter = LoadedFilter::load()
        .context("loading the WAN filter needs root; run the privileged tests as root")?;
    filter.set_settings(settings(false))?;
    filter.add_local(GATEWAY_V4, LOCAL_GATEWAY)?;
    filter.add_local(GATEWAY_V6, LOCAL_GATEWAY)?;
    filter.protect(PROTECTED_V4, SLOT_PROTECTED_V4)?;
    filter.protect(PROTECTED_NET_V4, SLOT_PROTECTED_NET_V4)?;
    filter.protect(PROTECTED_V6, SLOT_PROTECTED_V6)?;
    filter.block(BLOCKED_V4, SLOT_BLOCKED_V4)?;
    filter.block(BLOCKED_NET_V6, SLOT_BLOCKED_V6)?;
    filter.allow(TCP, SSH, ADMIN_NET_V4, SLOT_SSH_ADMIN_NET_V4)?;
    filter.allow(TCP, SSH, ADMIN_HOST_V4, SLOT_SSH_ADMIN_HOST_V4)?;
    filter.allow(TCP, SSH, ADMIN_NET_V6, SLOT_SSH_ADMIN_NET_V6)?;
    filter.allow(UDP, WIREGUARD, "0.0.0.0/0", SLOT_WIREGUARD_ANY_V4)?;
    Ok(filter)
}

fn to_proxy_v4() -> frames::FrameBuilder {
    tcp(CLIENT_V4, 40000, PROXY_V4, PROXY_PORT)
}

fn to_proxy_v6() -> frames::FrameBuilder {
    tcp(CLIENT_V6, 40000, PROXY_V6, PROXY_PORT)
}

fn link_layer_rows() -> Vec<Row> {
    let v4 = to_proxy_v4().build();
    let single = to_proxy_v4().vlan(Vlan::Single).build();
    let double = to_proxy_v4().vlan(Vlan::Double).build();
    vec![
        passes(
            "ARP request for the gateway",
            arp_request(
                ROUTER_V4.parse().expect("v4"),
                GATEWAY_V4.parse().expect("v4"),
            ),
            SLOT_ARP,
        ),
        drops(
            "unknown EtherType (LLDP)",
            other_ether_type(0x88cc),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "Ethernet header followed by nothing",
            truncated(v4.clone(), ETH_LEN),
            SLOT_UNPARSEABLE,
        ),
        passes("802.1Q tag, TCP 443 to proxy", single.clone(), SLOT_PROXY),
        passes(
            "802.1ad and 802.1Q tags, TCP 443 to proxy",
            double.clone(),
            SLOT_PROXY,
        ),
        drops(
            "three VLAN tags",
            with_third_vlan_tag(double.clone()),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "VLAN tag cut short",
            truncated(single, ETH_LEN + 2),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "second VLAN tag cut short",
            truncated(double, ETH_LEN + 4 + 2),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "VLAN-tagged unknown EtherType",
            {
                let mut frame = to_proxy_v4().vlan(Vlan::Single).build();
                frame[16..18].copy_from_slice(&0x88cc_u16.to_be_bytes());
                frame
            },
            SLOT_DEFAULT_DROP,
        ),
    ]
}

fn ipv4_rows() -> Vec<Row> {
    let v4 = to_proxy_v4().build();
    let max_options: Vec<u8> = [vec![1; 39], vec![0]].concat();
    vec![
        passes("TCP 443 to proxy over IPv4", v4.clone(), SLOT_PROXY),
        passes(
            "TCP 443 to proxy with Ethernet padding",
            padded(v4.clone(), 60),
            SLOT_PROXY,
        ),
        drops(
            "TCP 22 to proxy without a rule",
            tcp(CLIENT_V4, 40000, PROXY_V4, SSH).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "TCP 443 to the gateway's own (non-proxy) address",
            tcp(CLIENT_V4, 40000, GATEWAY_V4, PROXY_PORT).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "TCP 443 to an address that is not the gateway's",
            tcp(CLIENT_V4, 40000, "192.0.2.77", PROXY_PORT).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "UDP 443 to proxy",
            udp(CLIENT_V4, 40000, PROXY_V4, PROXY_PORT).build(),
            SLOT_DEFAULT_DROP,
        ),
        passes(
            "IPv4 options (IHL 6), TCP 443 to proxy",
            to_proxy_v4().ipv4_options(&[1, 1, 1, 0]).build(),
            SLOT_PROXY,
        ),
        passes(
            "40 bytes of IPv4 options (IHL 15), TCP 443 to proxy",
            to_proxy_v4().ipv4_options(&max_options).build(),
            SLOT_PROXY,
        ),
        drops(
            "IPv4 header length 4 words",
            with_ipv4_header_words(v4.clone(), 4),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv4 header length 0",
            with_ipv4_header_words(v4.clone(), 0),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv4 version 6 behind the IPv4 EtherType",
            {
                let mut frame = v4.clone();
                frame[ETH_LEN] = 0x65;
                frame
            },
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv4 total length beyond the frame",
            with_ipv4_total_len(v4.clone(), 1500),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv4 total length below the header length",
            with_ipv4_total_len(v4.clone(), 16),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv4 header cut short",
            truncated(v4.clone(), ETH_LEN + 12),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "TCP header cut short by the frame",
            with_ipv4_total_len(truncated(v4.clone(), ETH_LEN + 20 + 10), 30),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "TCP header cut short by the IPv4 total length (padding behind)",
            with_ipv4_total_len(v4, 30),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv4 ESP to proxy (protocol without rules)",
            raw_ip(CLIENT_V4, PROXY_V4, IPPROTO_ESP).build(),
            SLOT_DEFAULT_DROP,
        ),
    ]
}

fn ipv6_rows() -> Vec<Row> {
    let v6 = to_proxy_v6().build();
    let routing = Ipv6RoutingExtensions {
        routing: Ipv6RawExtHeader::new_raw(IpNumber(0), &[0; 6]).expect("raw header"),
        final_destination_options: Some(
            Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).expect("raw header"),
        ),
    };
    let chain = Ipv6Extensions {
        hop_by_hop_options: Some(
            Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).expect("raw header"),
        ),
        destination_options: Some(
            Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .expect("raw header"),
        ),
        routing: Some(routing),
        fragment: None,
        auth: Some(IpAuthHeader::new(IpNumber(0), 1, 1, &[0; 12]).expect("auth header")),
    };
    vec![
        passes("TCP 443 to proxy over IPv6", v6.clone(), SLOT_PROXY),
        passes(
            "IPv6 to the IPv4-mapped form of the IPv4 proxy address, TCP 443",
            tcp(CLIENT_V6, 40000, "::ffff:192.0.2.10", PROXY_PORT).build(),
            SLOT_PROXY,
        ),
        drops(
            "IPv6 to the IPv4-mapped form of the gateway address, TCP 443",
            tcp(CLIENT_V6, 40000, "::ffff:192.0.2.1", PROXY_PORT).build(),
            SLOT_DEFAULT_DROP,
        ),
        passes(
            "six IPv6 extension headers (hop-by-hop, options, routing, options, fragment, AH), TCP 443 to proxy",
            to_proxy_v6()
                .ipv6_extensions(chain)
                .fragment(0, false)
                .build(),
            SLOT_PROXY,
        ),
        passes(
            "six destination-options headers, TCP 443 to proxy",
            with_ipv6_destination_options(v6.clone(), 6),
            SLOT_PROXY,
        ),
        drops(
            "seven destination-options headers",
            with_ipv6_destination_options(v6.clone(), 7),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "extension header longer than the payload",
            {
                let mut frame = with_ipv6_destination_options(v6.clone(), 1);
                frame[ETH_LEN + 40 + 1] = 200;
                frame
            },
            SLOT_UNPARSEABLE,
        ),
        drops(
            "ESP to proxy",
            raw_ip(CLIENT_V6, PROXY_V6, IPPROTO_ESP).build(),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "no next header",
            raw_ip(CLIENT_V6, PROXY_V6, IPPROTO_NONE).build(),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv6 header cut short",
            truncated(v6.clone(), ETH_LEN + 30),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "IPv6 payload length beyond the frame",
            with_ipv6_payload_len(v6.clone(), 1000),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "TCP header cut short by the IPv6 payload length",
            with_ipv6_payload_len(v6, 12),
            SLOT_UNPARSEABLE,
        ),
        drops(
            "TCP 22 to the IPv6 proxy without a rule",
            tcp(CLIENT_V6, 40000, PROXY_V6, SSH).build(),
            SLOT_DEFAULT_DROP,
        ),
    ]
}

fn fragment_rows() -> Vec<Row> {
    vec![
        drops(
            "later IPv4 fragment looking like TCP 443 to proxy",
            to_proxy_v4().fragment(185, false).build(),
            SLOT_FRAGMENT,
        ),
        drops(
            "later IPv4 fragment looking like admin SSH",
            tcp(ADMIN_V4, 40000, PROXY_V4, SSH)
                .fragment(1, true)
                .build(),
            SLOT_FRAGMENT,
        ),
        drops(
            "later IPv6 fragment looking like TCP 443 to proxy",
            to_proxy_v6().fragment(185, false).build(),
            SLOT_FRAGMENT,
        ),
        passes(
            "first IPv4 fragment, TCP 443 to proxy",
            to_proxy_v4().fragment(0, true).build(),
            SLOT_PROXY,
        ),
        passes(
            "first IPv6 fragment, TCP 443 to proxy",
            to_proxy_v6().fragment(0, true).build(),
            SLOT_PROXY,
        ),
    ]
}

fn protected_rows() -> Vec<Row> {
    vec![
        drops(
            "protected IPv4 host, TCP 443",
            tcp(CLIENT_V4, 40000, PROTECTED_V4, PROXY_PORT).build(),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "protected IPv4 host, TCP 22 from the admin network",
            tcp(ADMIN_V4, 40000, PROTECTED_V4, SSH).build(),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "protected IPv4 host, UDP 53",
            udp(CLIENT_V4, 40000, PROTECTED_V4, 53).build(),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "protected IPv4 host, ICMP echo request",
            echo(CLIENT_V4, PROTECTED_V4, ECHO_REQUEST, 1).build(),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "protected IPv4 host, later fragment",
            tcp(CLIENT_V4, 40000, PROTECTED_V4, PROXY_PORT)
                .fragment(185, false)
                .build(),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "protected IPv4 host, first fragment",
            tcp(CLIENT_V4, 40000, PROTECTED_V4, PROXY_PORT)
                .fragment(0, true)
                .build(),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "protected IPv4 host, TCP header cut short",
            with_ipv4_total_len(
                truncated(
                    tcp(CLIENT_V4, 40000, PROTECTED_V4, PROXY_PORT).build(),
                    ETH_LEN + 24,
                ),
                24,
            ),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "protected IPv4 host from a blocked source",
            tcp(BLOCKED_V4, 40000, PROTECTED_V4, PROXY_PORT).build(),
            SLOT_PROTECTED_V4,
        ),
        drops(
            "host inside a protected IPv4 network",
            tcp(CLIENT_V4, 40000, PROTECTED_IN_NET_V4, PROXY_PORT).build(),
            SLOT_PROTECTED_NET_V4,
        ),
        drops(
            "protected IPv6 host, TCP 443",
            tcp(CLIENT_V6, 40000, PROTECTED_V6, PROXY_PORT).build(),
            SLOT_PROTECTED_V6,
        ),
        drops(
            "protected IPv6 host, later fragment",
            tcp(CLIENT_V6, 40000, PROTECTED_V6, PROXY_PORT)
                .fragment(185, false)
                .build(),
            SLOT_PROTECTED_V6,
        ),
        drops(
            "protected IPv6 host, TCP 22 from the admin network",
            tcp(ADMIN_V6, 40000, PROTECTED_V6, SSH).build(),
            SLOT_PROTECTED_V6,
        ),
    ]
}

fn blocklist_and_allow_rows() -> Vec<Row> {
    vec![
        drops(
            "blocked source, TCP 443 to proxy",
            tcp(BLOCKED_V4, 40000, PROXY_V4, PROXY_PORT).build(),
            SLOT_BLOCKED_V4,
        ),
        drops(
            "blocked source, UDP to the any-source WireGuard rule",
            udp(BLOCKED_V4, 40000, GATEWAY_V4, WIREGUARD).build(),
            SLOT_BLOCKED_V4,
        ),
        drops(
            "blocked IPv6 network inside the admin network, TCP 22",
            tcp(BLOCKED_V6, 40000, GATEWAY_V6, SSH).build(),
            SLOT_BLOCKED_V6,
        ),
        drops(
            "blocked IPv6 source, neighbour solicitation",
            icmp(BLOCKED_V6, GATEWAY_V6, V6_NEIGHBOUR_SOLICITATION, 0)
                .hop_limit(255)
                .build(),
            SLOT_BLOCKED_V6,
        ),
        passes(
            "admin network, TCP 22",
            tcp(ADMIN_V4, 40000, GATEWAY_V4, SSH).build(),
            SLOT_SSH_ADMIN_NET_V4,
        ),
        passes(
            "admin host (more specific rule), TCP 22",
            tcp(ADMIN_HOST_V4, 40000, GATEWAY_V4, SSH).build(),
            SLOT_SSH_ADMIN_HOST_V4,
        ),
        passes(
            "admin IPv6 network, TCP 22",
            tcp(ADMIN_V6, 40000, GATEWAY_V6, SSH).build(),
            SLOT_SSH_ADMIN_NET_V6,
        ),
        passes(
            "any IPv4 source, UDP 51820",
            udp(CLIENT_V4, 40000, GATEWAY_V4, WIREGUARD).build(),
            SLOT_WIREGUARD_ANY_V4,
        ),
        drops(
            "admin network, wrong port (TCP 23)",
            tcp(ADMIN_V4, 40000, GATEWAY_V4, 23).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "admin network, wrong protocol (UDP 22)",
            udp(ADMIN_V4, 40000, GATEWAY_V4, SSH).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "wrong source, TCP 22",
            tcp(CLIENT_V4, 40000, GATEWAY_V4, SSH).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "wrong IPv6 source, TCP 22",
            tcp(CLIENT_V6, 40000, GATEWAY_V6, SSH).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "IPv6 source, UDP 51820 (the any-source rule is IPv4 only)",
            udp(CLIENT_V6, 40000, GATEWAY_V6, WIREGUARD).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "any IPv4 source, TCP 51820 (only UDP 51820 has a rule)",
            tcp(CLIENT_V4, 40000, GATEWAY_V4, WIREGUARD).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "admin network, UDP 22 from port 51820 (ports are matched as destinations)",
            udp(ADMIN_V4, WIREGUARD, GATEWAY_V4, SSH).build(),
            SLOT_DEFAULT_DROP,
        ),
    ]
}

fn neighbour_discovery_and_path_mtu_rows() -> Vec<Row> {
    let nd = |kind, hop_limit| {
        icmp("fe80::1", "ff02::1:ff00:1", kind, 0)
            .hop_limit(hop_limit)
            .payload(&[0; 16])
            .build()
    };
    vec![
        passes(
            "neighbour solicitation, hop limit 255",
            nd(V6_NEIGHBOUR_SOLICITATION, 255),
            SLOT_NEIGHBOUR_DISCOVERY,
        ),
        passes(
            "neighbour advertisement, hop limit 255",
            nd(V6_NEIGHBOUR_ADVERTISEMENT, 255),
            SLOT_NEIGHBOUR_DISCOVERY,
        ),
        passes(
            "router advertisement, hop limit 255",
            nd(V6_ROUTER_ADVERTISEMENT, 255),
            SLOT_NEIGHBOUR_DISCOVERY,
        ),
        drops(
            "neighbour solicitation, hop limit 64",
            nd(V6_NEIGHBOUR_SOLICITATION, 64),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "neighbour solicitation, hop limit 254",
            nd(V6_NEIGHBOUR_SOLICITATION, 254),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "ICMPv6 router renumbering, hop limit 255",
            nd(V6_ROUTER_RENUMBERING, 255),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "ICMPv4 with neighbour solicitation's type number, TTL 255",
            icmp(CLIENT_V4, GATEWAY_V4, V6_NEIGHBOUR_SOLICITATION, 0)
                .hop_limit(255)
                .build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "neighbour solicitation, ICMPv6 header cut short",
            truncated(nd(V6_NEIGHBOUR_SOLICITATION, 255), ETH_LEN + 40 + 4),
            SLOT_UNPARSEABLE,
        ),
        passes(
            "ICMP fragmentation needed to the gateway",
            icmp(SERVER_V4, GATEWAY_V4, DEST_UNREACH, FRAG_NEEDED).build(),
            SLOT_PATH_MTU,
        ),
        drops(
            "ICMP fragmentation needed to the proxy-only address",
            icmp(SERVER_V4, PROXY_V4, DEST_UNREACH, FRAG_NEEDED).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "ICMP fragmentation needed to another address",
            icmp(SERVER_V4, "192.0.2.77", DEST_UNREACH, FRAG_NEEDED).build(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "ICMP port unreachable to the gateway",
            icmp(SERVER_V4, GATEWAY_V4, DEST_UNREACH, PORT_UNREACH).build(),
            SLOT_DEFAULT_DROP,
        ),
        passes(
            "ICMPv6 packet too big to the gateway",
            icmp(SERVER_V6, GATEWAY_V6, V6_PACKET_TOO_BIG, 0).build(),
            SLOT_PATH_MTU,
        ),
        drops(
            "ICMPv6 packet too big to another address",
            icmp(SERVER_V6, "2001:db8:1::77", V6_PACKET_TOO_BIG, 0).build(),
            SLOT_DEFAULT_DROP,
        ),
    ]
}

fn lockdown_rows() -> Vec<Row> {
    let gateway_syn = tcp(GATEWAY_V4, 40000, SERVER_V4, 443).build();
    vec![
        drops(
            "lockdown: TCP 443 to proxy",
            to_proxy_v4().build(),
            SLOT_LOCKDOWN,
        )
        .given(Given::Lockdown),
        passes(
            "lockdown: admin TCP 22 still open",
            tcp(ADMIN_V4, 40000, GATEWAY_V4, SSH).build(),
            SLOT_SSH_ADMIN_NET_V4,
        )
        .given(Given::Lockdown),
        passes(
            "lockdown: ARP still open",
            arp_request(
                ROUTER_V4.parse().expect("v4"),
                GATEWAY_V4.parse().expect("v4"),
            ),
            SLOT_ARP,
        )
        .given(Given::Lockdown),
        passes(
            "lockdown: neighbour discovery still open",
            icmp("fe80::1", "ff02::1:ff00:1", V6_NEIGHBOUR_SOLICITATION, 0)
                .hop_limit(255)
                .build(),
            SLOT_NEIGHBOUR_DISCOVERY,
        )
        .given(Given::Lockdown),
        drops(
            "lockdown: reply to a flow the gateway opened",
            tcp(SERVER_V4, 443, GATEWAY_V4, 40000).syn_ack().build(),
            SLOT_LOCKDOWN,
        )
        .given(Given::Sent(gateway_syn))
        .given(Given::Lockdown),
        drops(
            "lockdown: ICMP fragmentation needed to the gateway",
            icmp(SERVER_V4, GATEWAY_V4, DEST_UNREACH, FRAG_NEEDED).build(),
            SLOT_LOCKDOWN,
        )
        .given(Given::Lockdown),
        drops(
            "lockdown: protected host still counted as protected",
            tcp(CLIENT_V4, 40000, PROTECTED_V4, PROXY_PORT).build(),
            SLOT_PROTECTED_V4,
        )
        .given(Given::Lockdown),
    ]
}

fn flow_rows() -> Vec<Row> {
    let syn_v4 = || tcp(GATEWAY_V4, 40000, SERVER_V4, 443).build();
    let syn_ack_v4 = || tcp(SERVER_V4, 443, GATEWAY_V4, 40000).syn_ack().build();
    let dns_query = || udp(GATEWAY_V4, 53000, SERVER_V4, 53).build();
    let dns_answer = || udp(SERVER_V4, 53, GATEWAY_V4, 53000).build();
    let past_tcp_timeout = TCP_FLOW_TIMEOUT + Duration::from_secs(1);
    let past_udp_timeout = UDP_FLOW_TIMEOUT + Duration::from_secs(1);
    vec![
        drops(
            "SYN-ACK that no SYN of the gateway asked for",
            syn_ack_v4(),
            SLOT_DEFAULT_DROP,
        ),
        passes("SYN-ACK after the gateway's SYN", syn_ack_v4(), SLOT_REPLY)
            .given(Given::Sent(syn_v4())),
        passes(
            "IPv6 SYN-ACK after the gateway's SYN",
            tcp(SERVER_V6, 443, GATEWAY_V6, 40000).syn_ack().build(),
            SLOT_REPLY,
        )
        .given(Given::Sent(tcp(GATEWAY_V6, 40000, SERVER_V6, 443).build())),
        passes(
            "SYN-ACK after the gateway's double-tagged SYN",
            syn_ack_v4(),
            SLOT_REPLY,
        )
        .given(Given::Sent(
            tcp(GATEWAY_V4, 40000, SERVER_V4, 443)
                .vlan(Vlan::Double)
                .build(),
        )),
        drops(
            "look-alike reply from another server port",
            tcp(SERVER_V4, 444, GATEWAY_V4, 40000).syn_ack().build(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(syn_v4())),
        drops(
            "look-alike reply from another server",
            tcp("203.0.113.81", 443, GATEWAY_V4, 40000)
                .syn_ack()
                .build(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(syn_v4())),
        drops(
            "look-alike reply to another local port",
            tcp(SERVER_V4, 443, GATEWAY_V4, 40001).syn_ack().build(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(syn_v4())),
        drops(
            "SYN without ACK from the server of a recorded flow",
            tcp(SERVER_V4, 443, GATEWAY_V4, 40000).build(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(syn_v4())),
        passes(
            "plain ACK from the server of a recorded flow",
            tcp(SERVER_V4, 443, GATEWAY_V4, 40000).ack().build(),
            SLOT_REPLY,
        )
        .given(Given::Sent(syn_v4())),
        drops(
            "look-alike reply over UDP to a TCP flow",
            udp(SERVER_V4, 443, GATEWAY_V4, 40000).build(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(syn_v4())),
        passes(
            "TCP reply 3 s after the last packet (TCP timeout 4 s, UDP 2 s)",
            syn_ack_v4(),
            SLOT_REPLY,
        )
        .given(Given::Sent(syn_v4()))
        .given(Given::Aged(past_udp_timeout)),
        drops(
            "TCP reply after the flow expired",
            syn_ack_v4(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(syn_v4()))
        .given(Given::Aged(past_tcp_timeout)),
        passes(
            "TCP reply after an outbound ACK refreshed the expired flow",
            syn_ack_v4(),
            SLOT_REPLY,
        )
        .given(Given::Sent(syn_v4()))
        .given(Given::Aged(past_tcp_timeout))
        .given(Given::Sent(
            tcp(GATEWAY_V4, 40000, SERVER_V4, 443).ack().build(),
        )),
        drops(
            "outbound ACK without a SYN opens no flow",
            syn_ack_v4(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(
            tcp(GATEWAY_V4, 40000, SERVER_V4, 443).ack().build(),
        )),
        drops(
            "the proxy's SYN-ACK to a client opens no flow",
            tcp(CLIENT_V4, 5555, GATEWAY_V4, 8443).ack().build(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(
            tcp(GATEWAY_V4, 8443, CLIENT_V4, 5555).syn_ack().build(),
        )),
        passes(
            "UDP answer after the gateway's query",
            dns_answer(),
            SLOT_REPLY,
        )
        .given(Given::Sent(dns_query())),
        drops(
            "UDP answer after the UDP timeout",
            dns_answer(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(dns_query()))
        .given(Given::Aged(past_udp_timeout)),
        drops(
            "UDP answer that no query asked for",
            dns_answer(),
            SLOT_DEFAULT_DROP,
        ),
        drops(
            "ICMP echo reply without a request",
            echo(SERVER_V4, GATEWAY_V4, ECHO_REPLY, 7).build(),
            SLOT_DEFAULT_DROP,
        ),
        passes(
            "ICMP echo reply after the gateway's request",
            echo(SERVER_V4, GATEWAY_V4, ECHO_REPLY, 7).build(),
            SLOT_REPLY,
        )
        .given(Given::Sent(
            echo(GATEWAY_V4, SERVER_V4, ECHO_REQUEST, 7).build(),
        )),
        drops(
            "ICMP echo reply with another identifier",
            echo(SERVER_V4, GATEWAY_V4, ECHO_REPLY, 8).build(),
            SLOT_DEFAULT_DROP,
        )
        .given(Given::Sent(
            echo(GATEWAY_V4, SERVER_V4, ECHO_REQUEST, 7).build(),
        )),
        drops(
            "ICMP echo request from the internet",
            echo(SERVER_V4, GATEWAY_V4, ECHO_REQUEST, 7).build(),
            SLOT_DEFAULT_DROP,
        ),
        passes(
            "ICMPv6 echo reply after the gateway's request",
            echo(SERVER_V6, GATEWAY_V6, V6_ECHO_REPLY, 9).build(),
            SLOT_REPLY,
        )
        .given(Given::Sent(
            echo(GATEWAY_V6, SERVER_V6, V6_ECHO_REQUEST, 9).build(),
        )),
        drops(
            "ICMPv6 echo reply without a request",
            echo(SERVER_V6, GATEWAY_V6, V6_ECHO_REPLY, 9).build(),
            SLOT_DEFAULT_DROP,
        ),
    ]
}

fn table() -> Vec<Row> {
    [
        link_layer_rows(),
        ipv4_rows(),
        ipv6_rows(),
        fragment_rows(),
        protected_rows(),
        blocklist_and_allow_rows(),
        neighbour_discovery_and_path_mtu_rows(),
        lockdown_rows(),
        flow_rows(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn slot_name(slot: u32) -> String {
    FIXED_SLOT_NAMES
        .iter()
        .find(|(fixed, _)| *fixed == slot)
        .map_or_else(
            || format!("rule slot {slot}"),
            |(_, name)| (*name).to_owned(),
        )
}

/// Runs one row; returns what went wrong, if anything.
fn check(filter: &mut LoadedFilter, row: &Row) -> Result<Option<String>> {
    filter.clear_flows()?;
    let lockdown = row.given.iter().any(|g| matches!(g, Given::Lockdown));
    filter.set_settings(settings(lockdown))?;
    for given in &row.given {
        match given {
            Given::Lockdown => {}
            Given::Sent(frame) => {
                let action = filter.egress(frame)?;
                ensure!(
                    action == TC_ACT_OK,
                    "egress returned {action} for a sent frame"
                );
            }
            Given::Aged(by) => filter.age_flows(*by)?,
        }
    }

    let before = filter.counters()?;
    let action = filter.ingress(&row.frame)?;
    let after = filter.counters()?;

    let mut problems = Vec::new();
    let expected_action = match row.verdict {
        Verdict::Pass => XDP_PASS,
        Verdict::Drop => XDP_DROP,
    };
    if action != expected_action {
        problems.push(format!(
            "action {action}, expected {expected_action} ({:?})",
            row.verdict
        ));
    }
    for (slot, (b, a)) in (0..).zip(before.iter().zip(&after)) {
        let (packets, bytes) = (a.packets - b.packets, a.bytes - b.bytes);
        let expected = if slot == row.slot {
            (1, row.frame.len() as u64)
        } else {
            (0, 0)
        };
        if (packets, bytes) != expected {
            problems.push(format!(
                "{} moved by {packets} packets / {bytes} bytes, expected {} / {}",
                slot_name(slot),
                expected.0,
                expected.1
            ));
        }
    }
    Ok((!problems.is_empty()).then(|| format!("{}: {}", row.name, problems.join("; "))))
}

#[test]
fn every_fixture_frame_gets_its_verdict_and_moves_only_its_counter_slot() -> Result<()> {
    let mut filter = configured_filter()?;
    let rows = table();

    let mut failures = Vec::new();
    for row in &rows {
        if let Some(failure) =
            check(&mut filter, row).with_context(|| format!("row {:?}", row.name))?
        {
            failures.push(failure);
        }
    }

    eprintln!("{} fixture rows run", rows.len());
    ensure!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    Ok(())
}

fn flow(remote: &str, local: &str, remote_port: u16, local_port: u16, proto: u8) -> FlowKey {
    FlowKey {
        remote: map_addr(remote.parse().expect("fixture address")),
        local: map_addr(local.parse().expect("fixture address")),
        remote_port: remote_port.to_be_bytes(),
        local_port: local_port.to_be_bytes(),
        proto,
        reserved: [0; 3],
    }
}

/// The flows recorded after the egress program saw exactly `sent`.
fn flows_after_sending(filter: &mut LoadedFilter, sent: &[Vec<u8>]) -> Result<Vec<FlowKey>> {
    filter.clear_flows()?;
    for frame in sent {
        ensure!(filter.egress(frame)? == TC_ACT_OK, "egress blocked a frame");
    }
    let mut keys: Vec<FlowKey> = filter.flows()?.into_iter().map(|(key, _)| key).collect();
    keys.sort_by_key(|k| (k.proto, k.local_port, k.remote_port));
    Ok(keys)
}

/// Frames the gateway sends, and the flows they must leave recorded.
type EgressCase = (&'static str, Vec<Vec<u8>>, Vec<FlowKey>);

#[test]
fn egress_records_only_flows_the_gateway_opens() -> Result<()> {
    let mut filter = configured_filter()?;
    let syn = tcp(GATEWAY_V4, 40000, SERVER_V4, 443).build();

    let cases: Vec<EgressCase> = vec![
        (
            "TCP SYN",
            vec![syn.clone()],
            vec![flow(SERVER_V4, GATEWAY_V4, 443, 40000, TCP)],
        ),
        (
            "TCP SYN over IPv6 with two VLAN tags",
            vec![
                tcp(GATEWAY_V6, 40000, SERVER_V6, 443)
                    .vlan(Vlan::Double)
                    .build(),
            ],
            vec![flow(SERVER_V6, GATEWAY_V6, 443, 40000, TCP)],
        ),
        (
            "TCP SYN-ACK (the proxy answering a client)",
            vec![tcp(PROXY_V4, 443, CLIENT_V4, 5555).syn_ack().build()],
            vec![],
        ),
        (
            "TCP ACK without an open flow",
            vec![tcp(GATEWAY_V4, 40000, SERVER_V4, 443).ack().build()],
            vec![],
        ),
        (
            "UDP query",
            vec![udp(GATEWAY_V4, 53000, SERVER_V4, 53).build()],
            vec![flow(SERVER_V4, GATEWAY_V4, 53, 53000, UDP)],
        ),
        (
            "ICMP echo request",
            vec![echo(GATEWAY_V4, SERVER_V4, ECHO_REQUEST, 7).build()],
            vec![flow(SERVER_V4, GATEWAY_V4, 7, 7, 1)],
        ),
        (
            "ICMPv6 echo request",
            vec![echo(GATEWAY_V6, SERVER_V6, V6_ECHO_REQUEST, 9).build()],
            vec![flow(SERVER_V6, GATEWAY_V6, 9, 9, 58)],
        ),
        (
            "ICMP echo reply (answering a ping)",
            vec![echo(GATEWAY_V4, CLIENT_V4, ECHO_REPLY, 7).build()],
            vec![],
        ),
        (
            "later UDP fragment",
            vec![
                udp(GATEWAY_V4, 53000, SERVER_V4, 53)
                    .fragment(185, false)
                    .build(),
            ],
            vec![],
        ),
        (
            "UDP header cut short",
            vec![with_ipv4_total_len(
                truncated(udp(GATEWAY_V4, 53000, SERVER_V4, 53).build(), ETH_LEN + 24),
                24,
            )],
            vec![],
        ),
        (
            "ARP",
            vec![arp_request(GATEWAY_V4.parse()?, ROUTER_V4.parse()?)],
            vec![],
        ),
    ];

    for (name, sent, expected) in cases {
        let recorded = flows_after_sending(&mut filter, &sent)?;
        ensure!(
            recorded == expected,
            "{name}: recorded {recorded:?}, expected {expected:?}"
        );
    }
    Ok(())
}

#[test]
fn outbound_ack_refreshes_the_flow_its_syn_opened() -> Result<()> {
    let mut filter = configured_filter()?;
    filter.clear_flows()?;
    filter.egress(&tcp(GATEWAY_V4, 40000, SERVER_V4, 443).build())?;
    let opened = filter.flows()?[0].1.last_outbound_ns;
    filter.age_flows(TCP_FLOW_TIMEOUT + Duration::from_secs(1))?;

    filter.egress(&tcp(GATEWAY_V4, 40000, SERVER_V4, 443).ack().build())?;

    let flows = filter.flows()?;
    ensure!(flows.len() == 1, "expected one flow, found {}", flows.len());
    ensure!(
        flows[0].1.last_outbound_ns >= opened,
        "the ACK left the flow at its aged time"
    );
    Ok(())
}
