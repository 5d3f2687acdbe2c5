//! The WAN ingress filter: the rule order and its verdicts.
//!
//! Default deny. Each frame gets exactly one verdict, and each verdict is
//! counted in exactly one slot: a fixed slot (`befund_common::SLOT_*`) or the
//! slot of the operator rule that decided it.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use befund_common::{
    FilterSettings, LOCAL_GATEWAY, SLOT_ARP, SLOT_DEFAULT_DROP, SLOT_FRAGMENT, SLOT_LOCKDOWN,
    SLOT_NEIGHBOUR_DISCOVERY, SLOT_PATH_MTU, SLOT_PROXY, SLOT_REPLY, SLOT_UNPARSEABLE,
};

use crate::{
    flows,
    frame::{self, Frame},
    headers::{
        ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_FRAG_NEEDED, ICMPV6_ECHO_REPLY, ICMPV6_ND_FIRST,
        ICMPV6_ND_LAST, ICMPV6_PACKET_TOO_BIG, ND_HOP_LIMIT, TCP_ACK, TCP_SYN,
    },
    ip::Ip,
    keys::{AddrWords, FlowWords, ipv4_mapped_words},
    maps::{self, BLOCKLIST, PROTECTED},
    parse::{Packet, Unparseable},
    transport::{self, Kind, Transport},
};

/// What happens to a frame, and the counter slot that records it.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// Hand the frame to the kernel's network stack.
    Pass(u32),
    /// Discard the frame.
    Drop(u32),
}

impl Verdict {
    /// The verdict for frames the filter cannot classify.
    pub const UNPARSEABLE: Self = Self::Drop(SLOT_UNPARSEABLE);

    /// Counts the frame in the verdict's slot and returns the XDP action.
    #[inline(always)]
    pub fn record(self, ctx: &XdpContext) -> u32 {
        let (action, slot) = match self {
            Self::Pass(slot) => (xdp_action::XDP_PASS, slot),
            Self::Drop(slot) => (xdp_action::XDP_DROP, slot),
        };
        maps::count(slot, ctx.data_end() - ctx.data());
        action
    }
}

/// Classifies one frame arriving on the WAN interface.
///
/// # Errors
///
/// [`Unparseable`] when a header the decision needs is missing or malformed.
#[inline(always)]
pub fn try_befund_wan(ctx: &XdpContext) -> Result<Verdict, Unparseable> {
    let (start, end) = (ctx.data(), ctx.data_end());
    // SAFETY: the kernel keeps `data..data_end` of the XDP buffer readable
    // while the program runs, and `pkt` does not outlive this call.
    let pkt = unsafe { Packet::new(start, end, end - start) };

    match frame::parse(&pkt)? {
        Frame::Arp => Ok(Verdict::Pass(SLOT_ARP)),
        Frame::Other => Ok(Verdict::Drop(SLOT_DEFAULT_DROP)),
        Frame::Ip(ip) => ip_verdict(&pkt, &ip),
    }
}

/// The rules for IP packets, in order; the first that applies decides.
#[inline(always)]
fn ip_verdict(pkt: &Packet<'_>, ip: &Ip) -> Result<Verdict, Unparseable> {
    let Some(settings) = maps::settings() else {
        // Slot 0 of a one-slot array always exists; were it missing, the
        // rule maps could not be trusted either, so nothing is admitted.
        return Ok(Verdict::Drop(SLOT_DEFAULT_DROP));
    };
    // Nothing reaches a protected address: no port, no protocol, no
    // fragment, no allow rule. (An empty map cannot match; its lookup is
    // skipped, here and below.)
    if settings.protected_entries != 0
        && let Some(slot) = maps::slot_of_addr(&PROTECTED, &ip.dst)
    {
        return Ok(Verdict::Drop(slot));
    }
    // A blocked source overrides every allow rule.
    if settings.blocked_entries != 0
        && let Some(slot) = maps::slot_of_addr(&BLOCKLIST, &ip.src)
    {
        return Ok(Verdict::Drop(slot));
    }
    // A later fragment has no transport header, so no port rule may match it.
    // (Neighbour discovery, which the rule order puts first, is never such a
    // fragment: it needs its ICMPv6 header.)
    if ip.later_fragment {
        return Ok(Verdict::Drop(SLOT_FRAGMENT));
    }

    let transport = transport::parse(pkt, ip)?;
    if is_neighbour_discovery(ip, &transport) {
        return Ok(Verdict::Pass(SLOT_NEIGHBOUR_DISCOVERY));
    }
    if settings.allow_entries != 0
        && let Some(slot) = allow_rule(ip, &transport)
    {
        return Ok(Verdict::Pass(slot));
    }

    if settings.lockdown != 0 {
        return Ok(Verdict::Drop(SLOT_LOCKDOWN));
    }
    if is_for_proxy(ip, &transport, settings) {
        return Ok(Verdict::Pass(SLOT_PROXY));
    }
    if is_path_mtu_signal(ip, &transport) {
        return Ok(Verdict::Pass(SLOT_PATH_MTU));
    }
    if is_reply(ip, &transport, settings) {
        return Ok(Verdict::Pass(SLOT_REPLY));
    }
    Ok(Verdict::Drop(SLOT_DEFAULT_DROP))
}

/// ICMPv6 router/neighbour solicitation and advertisement or redirect that
/// has not crossed a router.
#[inline(always)]
fn is_neighbour_discovery(ip: &Ip, transport: &Transport) -> bool {
    transport.kind == Kind::Icmp
        && ip.v6
        && (ICMPV6_ND_FIRST..=ICMPV6_ND_LAST).contains(&transport.icmp_type)
        && ip.hop_limit == ND_HOP_LIMIT
}

/// The slot of the operator rule that admits this TCP or UDP packet.
#[inline(always)]
fn allow_rule(ip: &Ip, transport: &Transport) -> Option<u32> {
    if !matches!(transport.kind, Kind::Tcp | Kind::Udp) {
        return None;
    }
    maps::slot_of_allow_rule(ip.proto, transport.dst_port, &ip.src)
}

/// TCP to one of the proxy's addresses on the proxy port.
#[inline(always)]
fn is_for_proxy(ip: &Ip, transport: &Transport, settings: &FilterSettings) -> bool {
    // Port 0 is the unconfigured state and admits nothing.
    transport.kind == Kind::Tcp
        && settings.proxy_port != 0
        && u16::from_be_bytes(transport.dst_port) == settings.proxy_port
        && is_proxy_address(ip.dst.addr(), settings)
}

/// Whether `dst` is one of the proxy's addresses in the settings. An
/// IPv4-mapped destination is compared with the IPv4 ones, whichever the
/// packet's family, exactly as a lookup of the 16-byte address would.
#[inline(always)]
fn is_proxy_address(dst: &AddrWords, settings: &FilterSettings) -> bool {
    // Word by word: comparing arrays or slices would call memcmp, which BPF
    // does not have.
    let mapped = ipv4_mapped_words(&[0; 4]);
    if dst[0] == mapped[0] && dst[1] == mapped[1] && dst[2] == mapped[2] {
        let count = usize::from(settings.proxy_ipv4_count);
        for (i, addr) in settings.proxy_ipv4.iter().enumerate() {
            if i < count && *addr == dst[3] {
                return true;
            }
        }
    } else {
        let count = usize::from(settings.proxy_ipv6_count);
        for (i, addr) in settings.proxy_ipv6.iter().enumerate() {
            if i < count
                && addr[0] == dst[0]
                && addr[1] == dst[1]
                && addr[2] == dst[2]
                && addr[3] == dst[3]
            {
                return true;
            }
        }
    }
    false
}

/// ICMP "fragmentation needed" or ICMPv6 "packet too big" for the gateway:
/// without them path MTU discovery of the gateway's own connections fails.
#[inline(always)]
fn is_path_mtu_signal(ip: &Ip, transport: &Transport) -> bool {
    let (kind, code) = (transport.icmp_type, transport.icmp_code);
    let too_big = if ip.v6 {
        kind == ICMPV6_PACKET_TOO_BIG
    } else {
        kind == ICMP_DEST_UNREACH && code == ICMP_FRAG_NEEDED
    };
    transport.kind == Kind::Icmp && too_big && maps::local_flags(&ip.dst) & LOCAL_GATEWAY != 0
}

/// A reply within a flow that the gateway opened and used recently.
#[inline(always)]
fn is_reply(ip: &Ip, transport: &Transport, settings: &FilterSettings) -> bool {
    let echo_reply = if ip.v6 {
        ICMPV6_ECHO_REPLY
    } else {
        ICMP_ECHO_REPLY
    };
    let timeout = match transport.kind {
        // A segment that opens a connection (SYN without ACK) answers
        // nothing; a flood of them costs no flow lookup.
        Kind::Tcp if transport.flags & (TCP_SYN | TCP_ACK) == TCP_SYN => return false,
        Kind::Tcp => settings.tcp_flow_timeout_secs,
        Kind::Udp => settings.udp_flow_timeout_secs,
        // Both ports are the echo identifier.
        Kind::Icmp if transport.icmp_type == echo_reply => settings.udp_flow_timeout_secs,
        Kind::Icmp | Kind::Other => return false,
    };

    let flow = FlowWords::new(
        &ip.src,
        &ip.dst,
        transport.src_port,
        transport.dst_port,
        ip.proto,
    );
    flows::is_fresh(&flow, timeout)
}
