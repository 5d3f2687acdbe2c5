//! Ethernet and VLAN tags: what kind of frame this is and where its network
//! header starts.

use core::mem::size_of;

use crate::{
    headers::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, EthHdr, VlanHdr},
    ip::{self, Ip},
    parse::{Packet, Unparseable},
};

/// VLAN tags the filter looks behind: a customer tag, optionally inside a
/// service tag (QinQ). A frame with more is refused, since an attacker could
/// otherwise stack tags to hide what is behind them.
const MAX_VLAN_TAGS: usize = 2;

/// What a frame carries.
pub enum Frame {
    /// An ARP message.
    Arp,
    /// An IPv4 or IPv6 packet.
    Ip(Ip),
    /// Any other EtherType.
    Other,
}

/// Reads the Ethernet header, up to [`MAX_VLAN_TAGS`] VLAN tags and, for IP,
/// the network header and IPv6 extension headers.
///
/// # Errors
///
/// [`Unparseable`] when a header is truncated, a frame has more VLAN tags than
/// allowed, or the IP header is malformed (see [`ip`]).
#[inline(always)]
pub fn parse(pkt: &Packet<'_>) -> Result<Frame, Unparseable> {
    let eth: &EthHdr = pkt.header(0)?;
    let mut ether_type = u16::from_be_bytes(eth.ether_type);
    let mut offset = size_of::<EthHdr>();

    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        let tag: &VlanHdr = pkt.header(offset)?;
        ether_type = u16::from_be_bytes(tag.ether_type);
        offset += size_of::<VlanHdr>();
    }

    match ether_type {
        ETH_P_IPV4 => ip::ipv4(pkt, offset).map(Frame::Ip),
        ETH_P_IPV6 => ip::ipv6(pkt, offset).map(Frame::Ip),
        ETH_P_ARP => Ok(Frame::Arp),
        ETH_P_8021Q | ETH_P_8021AD => Err(Unparseable),
        _ => Ok(Frame::Other),
    }
}

#[inline(always)]
fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet header (IPv4) and a minimal IPv4/TCP packet to 192.0.2.10:443.
    const TCP_SYN: [u8; 54] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0xfe, 0x08, 0x00, // Ethernet
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, // IPv4 up to the checksum
        203, 0, 113, 5, 192, 0, 2, 10, // addresses
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0,
        0, // TCP
    ];

    fn parse_bytes(bytes: &[u8]) -> Result<Frame, Unparseable> {
        parse(&Packet::from_slice(bytes))
    }

    #[test]
    fn frame_shorter_than_an_ethernet_header_is_unparseable() {
        for len in 0..size_of::<EthHdr>() {
            assert!(parse_bytes(&TCP_SYN[..len]).is_err(), "{len} bytes");
        }
    }

    #[test]
    fn complete_ipv4_frame_yields_mapped_addresses_and_the_tcp_offset() {
        let Ok(Frame::Ip(ip)) = parse_bytes(&TCP_SYN) else {
            panic!("not parsed as IP");
        };

        assert_eq!(
            *ip.dst.addr(),
            crate::keys::ipv4_mapped_words(&[192, 0, 2, 10])
        );
        assert_eq!(
            *ip.src.addr(),
            crate::keys::ipv4_mapped_words(&[203, 0, 113, 5])
        );
        assert_eq!((ip.proto, ip.l4, ip.end), (6, 34, 54));
        assert!(!ip.v6 && !ip.later_fragment);
    }

    #[test]
    fn every_cut_inside_the_ip_header_is_unparseable() {
        for len in size_of::<EthHdr>()..34 {
            assert!(parse_bytes(&TCP_SYN[..len]).is_err(), "{len} bytes");
        }
    }
}
