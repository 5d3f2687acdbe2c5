//! Ethernet frames for the WAN filter's fixtures and benchmarks.
//!
//! Well-formed frames come from `etherparse`, an implementation independent
//! of the filter's own parser; malformed ones are well-formed frames with
//! bytes changed afterwards by the functions at the end of this module.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel, Ipv6FragmentHeader,
    Ipv6Header, PacketBuilder, PacketBuilderStep, VlanId,
};

/// MAC address of the gateway's WAN interface.
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// MAC address of the upstream router.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];

/// Length of an Ethernet II header.
pub const ETH_LEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_LEN: usize = 4;
/// Length of the IPv6 fixed header.
pub const IPV6_LEN: usize = 40;

/// IPv6 "destination options" extension header number.
pub const IPPROTO_DSTOPTS: u8 = 60;
/// Encapsulating security payload.
pub const IPPROTO_ESP: u8 = 50;
/// IPv6 "no next header".
pub const IPPROTO_NONE: u8 = 59;

/// VLAN tagging of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vlan {
    /// Untagged.
    None,
    /// One 802.1Q tag (EtherType 0x8100).
    Single,
    /// An 802.1ad service tag (0x88a8) around an 802.1Q tag (0x8100).
    Double,
}

/// What the IP packet carries.
#[derive(Clone, Debug)]
pub enum Transport {
    /// A TCP segment.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// SYN flag.
        syn: bool,
        /// ACK flag.
        ack: bool,
    },
    /// A UDP datagram.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6), by the address family.
    Icmp {
        /// Message type.
        kind: u8,
        /// Message code.
        code: u8,
        /// Bytes 5 to 8 of the message (echo: identifier and sequence).
        rest: [u8; 4],
    },
    /// Raw payload under the given protocol number.
    Raw(u8),
}

/// An IP frame under construction.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    src: IpAddr,
    dst: IpAddr,
    vlan: Vlan,
    hop_limit: u8,
    ipv4_options: Vec<u8>,
    fragment: Option<(u16, bool)>,
    ipv6_extensions: Ipv6Extensions,
    transport: Transport,
    payload: Vec<u8>,
}

/// A TCP SYN from `src`:`src_port` to `dst`:`dst_port`.
pub fn tcp(src: &str, src_port: u16, dst: &str, dst_port: u16) -> FrameBuilder {
    FrameBuilder::new(
        src,
        dst,
        Transport::Tcp {
            src_port,
            dst_port,
            syn: true,
            ack: false,
        },
    )
}

/// A UDP datagram from `src`:`src_port` to `dst`:`dst_port`.
pub fn udp(src: &str, src_port: u16, dst: &str, dst_port: u16) -> FrameBuilder {
    FrameBuilder::new(src, dst, Transport::Udp { src_port, dst_port })
}

/// An ICMP (or, between IPv6 addresses, ICMPv6) message.
pub fn icmp(src: &str, dst: &str, kind: u8, code: u8) -> FrameBuilder {
    FrameBuilder::new(
        src,
        dst,
        Transport::Icmp {
            kind,
            code,
            rest: [0; 4],
        },
    )
}

/// An ICMP or ICMPv6 echo message of type `kind` with identifier `id`.
pub fn echo(src: &str, dst: &str, kind: u8, id: u16) -> FrameBuilder {
    let [a, b] = id.to_be_bytes();
    FrameBuilder::new(
        src,
        dst,
        Transport::Icmp {
            kind,
            code: 0,
            rest: [a, b, 0, 1],
        },
    )
}

/// An IP packet whose payload is 16 opaque bytes under protocol `proto`.
pub fn raw_ip(src: &str, dst: &str, proto: u8) -> FrameBuilder {
    FrameBuilder::new(src, dst, Transport::Raw(proto)).payload(&[0x5a; 16])
}

/// An ARP request from the router for the gateway's `target` address.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &ROUTER_MAC,
        &sender.octets(),
        &[0; 6],
        &target.octets(),
    )
    .expect("ARP addresses have Ethernet and IPv4 lengths");
    let builder = PacketBuilder::ethernet2(ROUTER_MAC, [0xff; 6]).arp(arp);
    let mut frame = Vec::with_capacity(builder.size());
    builder.write(&mut frame).expect("writing to a Vec");
    frame
}

/// A frame with an EtherType the filter does not know, padded to the
/// Ethernet minimum.
pub fn other_ether_type(ether_type: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&GATEWAY_MAC);
    frame.extend_from_slice(&ROUTER_MAC);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.resize(60, 0);
    frame
}

impl FrameBuilder {
    fn new(src: &str, dst: &str, transport: Transport) -> Self {
        let src: IpAddr = src.parse().expect("fixture source is an IP address");
        let dst: IpAddr = dst.parse().expect("fixture destination is an IP address");
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "fixture mixes address families"
        );
        Self {
            src,
            dst,
            vlan: Vlan::None,
            hop_limit: 64,
            ipv4_options: Vec::new(),
            fragment: None,
            ipv6_extensions: Ipv6Extensions::default(),
            transport,
            payload: Vec::new(),
        }
    }

    /// Tags the frame.
    pub fn vlan(mut self, vlan: Vlan) -> Self {
        self.vlan = vlan;
        self
    }

    /// Sets the IPv4 TTL or IPv6 hop limit.
    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }

    /// Adds IPv4 options (a multiple of 4 bytes, at most 40).
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        self
    }

    /// Makes the packet a fragment at `offset` (in 8-byte units); IPv6 gets
    /// a fragment extension header.
    pub fn fragment(mut self, offset: u16, more_fragments: bool) -> Self {
        self.fragment = Some((offset, more_fragments));
        self
    }

    /// Adds IPv6 extension headers (the fragment header comes from
    /// [`Self::fragment`]).
    pub fn ipv6_extensions(mut self, extensions: Ipv6Extensions) -> Self {
        self.ipv6_extensions = extensions;
        self
    }

    /// Sets the TCP flags to SYN+ACK.
    pub fn syn_ack(self) -> Self {
        self.tcp_flags(true, true)
    }

    /// Sets the TCP flags to a plain ACK.
    pub fn ack(self) -> Self {
        self.tcp_flags(false, true)
    }

    fn tcp_flags(mut self, syn: bool, ack: bool) -> Self {
        let Transport::Tcp {
            src_port, dst_port, ..
        } = self.transport
        else {
            panic!("TCP flags on a frame that is not TCP");
        };
        self.transport = Transport::Tcp {
            src_port,
            dst_port,
            syn,
            ack,
        };
        self
    }

    /// Sets the transport payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Serialises the frame, checksums and lengths included.
    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(ROUTER_MAC, GATEWAY_MAC);
        let ip = self.ip_headers();
        let step = match self.vlan {
            Vlan::None => eth.ip(ip),
            Vlan::Single => eth.single_vlan(vlan_id(10)).ip(ip),
            Vlan::Double => eth.double_vlan(vlan_id(100), vlan_id(10)).ip(ip),
        };
        self.write_transport(step)
    }

    fn ip_headers(&self) -> IpHeaders {
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                IpHeaders::Ipv4(self.ipv4_header(src, dst), Ipv4Extensions::default())
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => self.ipv6_headers(src, dst),
            _ => unreachable!("families checked in FrameBuilder::new"),
        }
    }

    fn ipv4_header(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Header {
        let mut header =
            Ipv4Header::new(0, self.hop_limit, IpNumber(0), src.octets(), dst.octets())
                .expect("an empty payload fits");
        header.options = Ipv4Options::try_from(&self.ipv4_options[..])
            .expect("fixture IPv4 options are a multiple of 4 bytes, at most 40");
        if let Some((offset, more)) = self.fragment {
            header.fragment_offset = frag_offset(offset);
            header.more_fragments = more;
            header.identification = 0x4242;
        }
        header
    }

    fn ipv6_headers(&self, src: Ipv6Addr, dst: Ipv6Addr) -> IpHeaders {
        let header = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: IpNumber(0),
            hop_limit: self.hop_limit,
            source: src.octets(),
            destination: dst.octets(),
        };
        let mut extensions = self.ipv6_extensions.clone();
        if let Some((offset, more)) = self.fragment {
            extensions.fragment = Some(Ipv6FragmentHeader::new(
                IpNumber(0),
                frag_offset(offset),
                more,
                0x4242,
            ));
        }
        IpHeaders::Ipv6(header, extensions)
    }

    fn write_transport(&self, step: PacketBuilderStep<IpHeaders>) -> Vec<u8> {
        let mut frame = Vec::new();
        let payload = &self.payload[..];
        let v6 = self.src.is_ipv6();
        let written = match self.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                syn,
                ack,
            } => {
                let mut tcp = step.tcp(src_port, dst_port, 1000, 64240);
                if syn {
                    tcp = tcp.syn();
                }
                if ack {
                    tcp = tcp.ack(2000);
                }
                tcp.write(&mut frame, payload)
            }
            Transport::Udp { src_port, dst_port } => {
                step.udp(src_port, dst_port).write(&mut frame, payload)
            }
            Transport::Icmp { kind, code, rest } if v6 => {
                step.icmpv6_raw(kind, code, rest).write(&mut frame, payload)
            }
            Transport::Icmp { kind, code, rest } => {
                step.icmpv4_raw(kind, code, rest).write(&mut frame, payload)
            }
            Transport::Raw(proto) => step.write(&mut frame, IpNumber(proto), payload),
        };
        written.expect("fixture frame serialises");
        frame
    }
}

fn vlan_id(id: u16) -> VlanId {
    VlanId::try_new(id).expect("fixture VLAN ids are below 4096")
}

fn frag_offset(offset: u16) -> IpFragOffset {
    IpFragOffset::try_new(offset).expect("fixture fragment offsets fit 13 bits")
}

/// Offset of the IP header in `frame`, behind any VLAN tags.
pub fn ip_offset(frame: &[u8]) -> usize {
    let mut offset = ETH_LEN;
    let mut ether_type = u16::from_be_bytes([frame[12], frame[13]]);
    while ether_type == 0x8100 || ether_type == 0x88a8 {
        ether_type = u16::from_be_bytes([frame[offset + 2], frame[offset + 3]]);
        offset += VLAN_LEN;
    }
    offset
}

/// The frame cut to its first `len` bytes.
pub fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

/// The frame with the IPv4 header length field set to `words` (32-bit words).
pub fn with_ipv4_header_words(mut frame: Vec<u8>, words: u8) -> Vec<u8> {
    let ip = ip_offset(&frame);
    frame[ip] = 0x40 | (words & 0x0f);
    frame
}

/// The frame with the IPv4 total length field set to `len`.
pub fn with_ipv4_total_len(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    let ip = ip_offset(&frame);
    frame[ip + 2..ip + 4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// The frame with the IPv6 payload length field set to `len`.
pub fn with_ipv6_payload_len(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    let ip = ip_offset(&frame);
    frame[ip + 4..ip + 6].copy_from_slice(&len.to_be_bytes());
    frame
}

/// A double-tagged frame with one more 802.1ad tag in front.
pub fn with_third_vlan_tag(mut frame: Vec<u8>) -> Vec<u8> {
    assert_eq!(frame[12..14], [0x88, 0xa8], "needs a double-tagged frame");
    frame.splice(ETH_LEN..ETH_LEN, [0x00, 0x64, 0x88, 0xa8]);
    frame
}

/// An IPv6 frame with `count` destination-options headers (8 bytes each, a
/// PadN option inside) inserted right after the fixed header.
pub fn with_ipv6_destination_options(mut frame: Vec<u8>, count: usize) -> Vec<u8> {
    let ip = ip_offset(&frame);
    let upper = frame[ip + 6];
    let mut chain = Vec::with_capacity(count * 8);
    for i in 0..count {
        let next = if i + 1 == count {
            upper
        } else {
            IPPROTO_DSTOPTS
        };
        chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    let payload_len = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]) + chain.len() as u16;
    frame[ip + 4..ip + 6].copy_from_slice(&payload_len.to_be_bytes());
    frame[ip + 6] = IPPROTO_DSTOPTS;
    frame.splice(ip + IPV6_LEN..ip + IPV6_LEN, chain);
    frame
}

/// Appends Ethernet padding (bytes after the IP packet) up to `len`.
pub fn padded(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.resize(len, 0);
    frame
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    #[test]
    fn double_vlan_frame_has_service_tag_outside_customer_tag() {
        let frame = tcp("203.0.113.5", 40000, "192.0.2.10", 443)
            .vlan(Vlan::Double)
            .build();

        assert_eq!(frame[12..14], [0x88, 0xa8]);
        assert_eq!(frame[16..18], [0x81, 0x00]);
        assert_eq!(frame[20..22], [0x08, 0x00]);
        assert_eq!(ip_offset(&frame), 22);
    }

    #[test]
    fn destination_options_chain_parses_back_to_the_same_tcp_segment() {
        let frame = tcp("2001:db8:c::5", 40000, "2001:db8:1::10", 443).build();
        let frame = with_ipv6_destination_options(frame, 1);

        let sliced = SlicedPacket::from_ethernet(&frame).expect("frame parses");
        let Some(NetSlice::Ipv6(ip)) = sliced.net else {
            panic!("not IPv6");
        };
        assert_eq!(
            ip.extensions().first_header(),
            Some(IpNumber(IPPROTO_DSTOPTS))
        );
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP");
        };
        assert_eq!(tcp.destination_port(), 443);
    }

    #[test]
    fn later_ipv4_fragment_carries_its_offset() {
        let frame = tcp("203.0.113.5", 40000, "192.0.2.10", 443)
            .fragment(185, false)
            .build();
        let ip = ip_offset(&frame);

        let offset = u16::from_be_bytes([frame[ip + 6], frame[ip + 7]]) & 0x1fff;
        assert_eq!(offset, 185);
    }

    #[test]
    fn ipv4_options_raise_the_header_length() {
        let frame = tcp("203.0.113.5", 40000, "192.0.2.10", 443)
            .ipv4_options(&[1, 1, 1, 0])
            .build();

        assert_eq!(frame[ETH_LEN], 0x46);
    }
}
