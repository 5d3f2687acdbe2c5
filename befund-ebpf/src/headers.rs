//! Wire layouts of the headers the filter reads, and their protocol numbers.
//!
//! Multi-byte fields are byte arrays in network byte order, so every struct
//! has alignment 1 and can be viewed in place with [`crate::parse::Packet`].

use crate::parse::Header;

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of an IEEE 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an IEEE 802.1ad (QinQ service) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 extension header: hop-by-hop options.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv6 extension header: routing.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 extension header: fragment.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// Encapsulating security payload: nothing behind it is readable.
pub const IPPROTO_ESP: u8 = 50;
/// Authentication header.
pub const IPPROTO_AH: u8 = 51;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 "no next header".
pub const IPPROTO_NONE: u8 = 59;
/// IPv6 extension header: destination options.
pub const IPPROTO_DSTOPTS: u8 = 60;

/// TCP flag SYN in [`TcpHdr::flags`].
pub const TCP_SYN: u8 = 0x02;
/// TCP flag ACK in [`TcpHdr::flags`].
pub const TCP_ACK: u8 = 0x10;

/// ICMP echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Code of [`ICMP_DEST_UNREACH`]: fragmentation needed and DF set.
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMP echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMPv6 packet too big.
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 echo request.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// First ICMPv6 neighbour discovery type (router solicitation).
pub const ICMPV6_ND_FIRST: u8 = 133;
/// Last ICMPv6 neighbour discovery type (redirect).
pub const ICMPV6_ND_LAST: u8 = 137;
/// The hop limit every neighbour discovery message must carry (RFC 4861):
/// anything less has crossed a router and is forged.
pub const ND_HOP_LIMIT: u8 = 255;

/// Ethernet II header.
#[repr(C)]
pub struct EthHdr {
    /// Destination MAC address.
    pub dst: [u8; 6],
    /// Source MAC address.
    pub src: [u8; 6],
    /// EtherType of what follows.
    pub ether_type: [u8; 2],
}

/// The part of an 802.1Q/802.1ad tag after its own EtherType.
#[repr(C)]
pub struct VlanHdr {
    /// Priority, drop eligibility and VLAN id.
    pub tci: [u8; 2],
    /// EtherType of what follows.
    pub ether_type: [u8; 2],
}

/// IPv4 header without options.
#[repr(C)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub version_ihl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Length of the whole datagram (header and payload).
    pub total_len: [u8; 2],
    /// Identification of the datagram's fragments.
    pub id: [u8; 2],
    /// Flags (3 bits) and fragment offset in 8-byte units (13 bits).
    pub frag_off: [u8; 2],
    /// Time to live.
    pub ttl: u8,
    /// Protocol of the payload.
    pub proto: u8,
    /// Header checksum.
    pub check: [u8; 2],
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

/// Mask of the fragment offset in [`Ipv4Hdr::frag_off`].
pub const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// IPv6 fixed header.
#[repr(C)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8 bits) and flow label (20 bits).
    pub version_class_flow: [u8; 4],
    /// Length of everything after this header.
    pub payload_len: [u8; 2],
    /// Protocol or extension header that follows.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
}

/// The first eight bytes of any IPv6 extension header: hop-by-hop,
/// routing, destination options, fragment and authentication header all
/// start with the next header and (except fragment) a length byte, and none
/// is shorter than eight bytes.
#[repr(C)]
pub struct Ipv6ExtHdr {
    /// Protocol or extension header that follows.
    pub next_header: u8,
    /// Length: in 8-byte units after the first 8 (options, routing), in
    /// 4-byte units minus 2 (AH), reserved (fragment).
    pub len: u8,
    /// Fragment header: offset in 8-byte units (13 bits) and flags (3 bits).
    /// Other headers: their first data bytes.
    pub frag_off: [u8; 2],
    /// The rest of the first eight bytes.
    pub rest: [u8; 4],
}

/// Mask of the fragment offset in [`Ipv6ExtHdr::frag_off`] of a fragment
/// header.
pub const IPV6_OFFSET_MASK: u16 = 0xfff8;

/// TCP header without options.
#[repr(C)]
pub struct TcpHdr {
    /// Source port.
    pub src_port: [u8; 2],
    /// Destination port.
    pub dst_port: [u8; 2],
    /// Sequence number.
    pub seq: [u8; 4],
    /// Acknowledgement number.
    pub ack_seq: [u8; 4],
    /// Data offset (high nibble) and reserved bits.
    pub data_offset: u8,
    /// CWR, ECE, URG, ACK, PSH, RST, SYN, FIN.
    pub flags: u8,
    /// Receive window.
    pub window: [u8; 2],
    /// Checksum.
    pub check: [u8; 2],
    /// Urgent pointer.
    pub urgent: [u8; 2],
}

/// UDP header.
#[repr(C)]
pub struct UdpHdr {
    /// Source port.
    pub src_port: [u8; 2],
    /// Destination port.
    pub dst_port: [u8; 2],
    /// Length of header and payload.
    pub len: [u8; 2],
    /// Checksum.
    pub check: [u8; 2],
}

/// The first eight bytes of an ICMP or ICMPv6 message.
#[repr(C)]
pub struct IcmpHdr {
    /// Message type.
    pub kind: u8,
    /// Message code.
    pub code: u8,
    /// Checksum.
    pub check: [u8; 2],
    /// Echo: identifier. Other messages: the start of their own fields.
    pub id: [u8; 2],
    /// Echo: sequence number.
    pub seq: [u8; 2],
}

// SAFETY: each struct below is repr(C) and consists of u8 and byte arrays
// only, so its alignment is 1 and every bit pattern is a valid value.
unsafe impl Header for EthHdr {}
// SAFETY: as above.
unsafe impl Header for VlanHdr {}
// SAFETY: as above.
unsafe impl Header for Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Header for Ipv6Hdr {}
// SAFETY: as above.
unsafe impl Header for Ipv6ExtHdr {}
// SAFETY: as above.
unsafe impl Header for TcpHdr {}
// SAFETY: as above.
unsafe impl Header for UdpHdr {}
// SAFETY: as above.
unsafe impl Header for IcmpHdr {}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn header_layouts_match_the_wire() {
        assert_eq!(size_of::<EthHdr>(), 14);
        assert_eq!(size_of::<VlanHdr>(), 4);
        assert_eq!(size_of::<Ipv4Hdr>(), 20);
        assert_eq!(size_of::<Ipv6Hdr>(), 40);
        assert_eq!(size_of::<Ipv6ExtHdr>(), 8);
        assert_eq!(size_of::<TcpHdr>(), 20);
        assert_eq!(size_of::<UdpHdr>(), 8);
        assert_eq!(size_of::<IcmpHdr>(), 8);
    }

    #[test]
    fn headers_need_no_alignment() {
        assert_eq!(align_of::<Ipv4Hdr>(), 1);
        assert_eq!(align_of::<Ipv6Hdr>(), 1);
        assert_eq!(align_of::<TcpHdr>(), 1);
    }
}
