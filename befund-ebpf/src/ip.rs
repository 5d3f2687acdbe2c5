//! IPv4 and IPv6 headers, IPv6 extension headers and fragments.

use core::mem::size_of;

use crate::{
    headers::{
        IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_ESP, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_NONE,
        IPPROTO_ROUTING, IPV4_OFFSET_MASK, IPV6_OFFSET_MASK, Ipv4Hdr, Ipv6ExtHdr, Ipv6Hdr,
    },
    keys::{AddrKey, ipv4_mapped_words, ipv6_words},
    parse::{Packet, Unparseable},
};

/// IPv6 extension headers the filter walks before it gives up. Real traffic
/// carries one or two; the limit keeps the walk bounded for the verifier and
/// refuses chains built to exhaust a parser.
const MAX_IPV6_EXTENSION_HEADERS: usize = 6;

/// The parts of an IP packet the rules look at.
pub struct Ip {
    /// Source address (IPv4-mapped for IPv4).
    pub src: AddrKey,
    /// Destination address (IPv4-mapped for IPv4).
    pub dst: AddrKey,
    /// Protocol of the payload after all extension headers.
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// Whether this is IPv6.
    pub v6: bool,
    /// A fragment other than the first: it carries no transport header, only
    /// the middle or end of the datagram's payload.
    pub later_fragment: bool,
    /// Offset of the transport header from the start of the frame.
    pub l4: usize,
    /// Offset just past the packet, as its length fields say. Frames may be
    /// longer (Ethernet padding), never shorter.
    pub end: usize,
}

/// Parses the IPv4 header at `offset`; options are skipped.
///
/// # Errors
///
/// [`Unparseable`] when the header is truncated, the version is not 4, the
/// header length is below 5 words, or the total length is shorter than the
/// header or longer than the frame.
#[inline(always)]
pub fn ipv4(pkt: &Packet<'_>, offset: usize) -> Result<Ip, Unparseable> {
    let hdr: &Ipv4Hdr = pkt.header(offset)?;
    if hdr.version_ihl >> 4 != 4 {
        return Err(Unparseable);
    }
    let header_len = usize::from(hdr.version_ihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes(hdr.total_len));
    if header_len < size_of::<Ipv4Hdr>() || total_len < header_len || offset + total_len > pkt.len()
    {
        return Err(Unparseable);
    }

    let fragment_offset = u16::from_be_bytes(hdr.frag_off) & IPV4_OFFSET_MASK;
    Ok(Ip {
        src: AddrKey::new(ipv4_mapped_words(&hdr.src)),
        dst: AddrKey::new(ipv4_mapped_words(&hdr.dst)),
        proto: hdr.proto,
        hop_limit: hdr.ttl,
        v6: false,
        later_fragment: fragment_offset != 0,
        l4: offset + header_len,
        end: offset + total_len,
    })
}

/// Parses the IPv6 header at `offset` and walks its extension headers.
///
/// # Errors
///
/// [`Unparseable`] when a header is truncated or runs past the payload
/// length, the version is not 6, the chain is longer than
/// [`MAX_IPV6_EXTENSION_HEADERS`], or it ends in ESP or "no next header".
#[inline(always)]
pub fn ipv6(pkt: &Packet<'_>, offset: usize) -> Result<Ip, Unparseable> {
    let hdr: &Ipv6Hdr = pkt.header(offset)?;
    if hdr.version_class_flow[0] >> 4 != 6 {
        return Err(Unparseable);
    }
    let total_len = size_of::<Ipv6Hdr>() + usize::from(u16::from_be_bytes(hdr.payload_len));
    if offset + total_len > pkt.len() {
        return Err(Unparseable);
    }

    let mut ip = Ip {
        src: AddrKey::new(ipv6_words(&hdr.src)),
        dst: AddrKey::new(ipv6_words(&hdr.dst)),
        proto: hdr.next_header,
        hop_limit: hdr.hop_limit,
        v6: true,
        later_fragment: false,
        l4: offset + size_of::<Ipv6Hdr>(),
        end: offset + total_len,
    };
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        if !is_extension_header(ip.proto) {
            break;
        }
        let kind = ip.proto;
        let ext: &Ipv6ExtHdr = pkt.header(ip.l4)?;
        let ext_len = match kind {
            IPPROTO_FRAGMENT => size_of::<Ipv6ExtHdr>(),
            IPPROTO_AH => (usize::from(ext.len) + 2) * 4,
            _ => (usize::from(ext.len) + 1) * 8,
        };
        ip.proto = ext.next_header;
        ip.l4 += ext_len;
        if ip.l4 > ip.end {
            return Err(Unparseable);
        }
        if kind == IPPROTO_FRAGMENT && u16::from_be_bytes(ext.frag_off) & IPV6_OFFSET_MASK != 0 {
            // What follows is the middle of the payload, not headers.
            ip.later_fragment = true;
            return Ok(ip);
        }
    }

    if is_extension_header(ip.proto) || ip.proto == IPPROTO_ESP || ip.proto == IPPROTO_NONE {
        return Err(Unparseable);
    }
    Ok(ip)
}

#[inline(always)]
fn is_extension_header(next_header: u8) -> bool {
    matches!(
        next_header,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS | IPPROTO_AH
    )
}
