//! Transport headers: ports of TCP and UDP, type and identifier of ICMP.

use core::mem::size_of;

use crate::{
    headers::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IcmpHdr, TcpHdr, UdpHdr},
    ip::Ip,
    parse::{Header, Packet, Unparseable},
};

/// The transport header of a packet, as far as the rules need it.
pub enum Transport {
    /// TCP, with ports in network byte order.
    Tcp {
        /// Source port.
        src_port: [u8; 2],
        /// Destination port.
        dst_port: [u8; 2],
        /// The flags byte (SYN, ACK, ...).
        flags: u8,
    },
    /// UDP, with ports in network byte order.
    Udp {
        /// Source port.
        src_port: [u8; 2],
        /// Destination port.
        dst_port: [u8; 2],
    },
    /// ICMP over IPv4 or ICMPv6 over IPv6.
    Icmp {
        /// Message type.
        kind: u8,
        /// Message code.
        code: u8,
        /// Echo identifier (meaningless for other messages).
        id: [u8; 2],
    },
    /// A protocol the rules do not look into.
    Other,
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
            Ok(Transport::Tcp {
                src_port: tcp.src_port,
                dst_port: tcp.dst_port,
                flags: tcp.flags,
            })
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = within(pkt, ip)?;
            Ok(Transport::Udp {
                src_port: udp.src_port,
                dst_port: udp.dst_port,
            })
        }
        proto if proto == icmp_proto => {
            let icmp: &IcmpHdr = within(pkt, ip)?;
            Ok(Transport::Icmp {
                kind: icmp.kind,
                code: icmp.code,
                id: icmp.id,
            })
        }
        _ => Ok(Transport::Other),
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
