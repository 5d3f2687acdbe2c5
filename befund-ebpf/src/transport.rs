//! Transport headers: ports of TCP and UDP, type and identifier of ICMP.

use core::mem::size_of;

use crate::{
    headers::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IcmpHdr, TcpHdr, UdpHdr},
    ip::Ip,
    parse::{Header, Packet, Unparseable},
};

/// The transport protocols the rules tell apart.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP over IPv4 or ICMPv6 over IPv6.
    Icmp,
    /// A protocol the rules do not look into.
    Other,
}

/// The transport header of a packet, as far as the rules need it.
///
/// A struct rather than an enum with fields: every field is set for every
/// packet (zero where the protocol has no such field), so the compiler
/// never computes with the undefined bytes of an inactive variant, which
/// the verifier refuses to read.
pub struct Transport {
    /// The protocol.
    pub kind: Kind,
    /// TCP or UDP source port, network byte order; for ICMP the echo
    /// identifier (meaningless for other messages).
    pub src_port: [u8; 2],
    /// TCP or UDP destination port, network byte order; for ICMP the echo
    /// identifier, as in `src_port`.
    pub dst_port: [u8; 2],
    /// The TCP flags byte (SYN, ACK, ...).
    pub flags: u8,
    /// ICMP message type.
    pub icmp_type: u8,
    /// ICMP message code.
    pub icmp_code: u8,
}

impl Transport {
    const NONE: Self = Self {
        kind: Kind::Other,
        src_port: [0; 2],
        dst_port: [0; 2],
        flags: 0,
        icmp_type: 0,
        icmp_code: 0,
    };
}

/// Reads the transport header of `ip`, which must not be a later fragment.
///
/// # Errors
///
/// [`Unparseable`] when the TCP, UDP or ICMP header is cut short by the frame
/// or by the IP packet's own length.
#[inline(always)]
pub fn parse(pkt: &Packet<'_>, ip: &Ip) -> Result<Transport, Unparseable> {
    let icmp_proto = if ip.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
    match ip.proto {
        IPPROTO_TCP => {
            let tcp: &TcpHdr = within(pkt, ip)?;
            Ok(Transport {
                kind: Kind::Tcp,
                src_port: tcp.src_port,
                dst_port: tcp.dst_port,
                flags: tcp.flags,
                ..Transport::NONE
            })
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = within(pkt, ip)?;
            Ok(Transport {
                kind: Kind::Udp,
                src_port: udp.src_port,
                dst_port: udp.dst_port,
                ..Transport::NONE
            })
        }
        proto if proto == icmp_proto => {
            let icmp: &IcmpHdr = within(pkt, ip)?;
            Ok(Transport {
                kind: Kind::Icmp,
                src_port: icmp.id,
                dst_port: icmp.id,
                icmp_type: icmp.kind,
                icmp_code: icmp.code,
                ..Transport::NONE
            })
        }
        _ => Ok(Transport::NONE),
    }
}

/// The header of type `T` at the transport offset, if it lies inside both the
/// frame and the IP packet.
#[inline(always)]
fn within<'a, T: Header>(pkt: &Packet<'a>, ip: &Ip) -> Result<&'a T, Unparseable> {
    if ip.l4 + size_of::<T>() > ip.end {
        return Err(Unparseable);
    }
    pkt.header(ip.l4)
}
