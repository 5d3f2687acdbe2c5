//! The WAN egress recorder: notes the flows the gateway opens, so that their
//! replies pass the ingress filter. It never blocks anything.

use aya_ebpf::programs::TcContext;

use crate::{
    flows,
    frame::{self, Frame},
    headers::{ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, TCP_ACK, TCP_SYN},
    keys::FlowWords,
    parse::{Packet, Unparseable},
    transport::{self, Kind},
};

/// Records the flow of one outbound frame, if it opens or continues one.
///
/// - TCP SYN without ACK opens (or refreshes) a flow; any other TCP segment
///   only refreshes a flow already open, so the proxy's answers to clients
///   open nothing.
/// - UDP opens or refreshes a flow.
/// - ICMP and ICMPv6 echo requests open or refresh a flow keyed by their
///   identifier.
///
/// # Errors
///
/// [`Unparseable`] when the headers cannot be read; nothing is recorded then.
#[inline(always)]
pub fn try_befund_egress(ctx: &TcContext) -> Result<(), Unparseable> {
    // SAFETY: the kernel keeps `data..data_end` of the socket buffer readable
    // while the program runs, and `pkt` does not outlive this call; `len()`
    // is the whole frame, of which only the headers need to be linear.
    let pkt = unsafe { Packet::new(ctx.data(), ctx.data_end(), ctx.len() as usize) };
    let Frame::Ip(ip) = frame::parse(&pkt)? else {
        return Ok(());
    };
    if ip.later_fragment {
        return Ok(());
    }

    let echo_request = if ip.v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    };
    let flow = |remote_port, local_port| {
        FlowWords::new(&ip.dst, &ip.src, remote_port, local_port, ip.proto)
    };
    let t = transport::parse(&pkt, &ip)?;
    // For ICMP echo both ports are the identifier.
    let (src_port, dst_port) = (t.src_port, t.dst_port);
    match t.kind {
        Kind::Tcp => {
            if t.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                flows::open(&flow(dst_port, src_port));
            } else {
                flows::refresh(&flow(dst_port, src_port));
            }
        }
        Kind::Udp => flows::open(&flow(dst_port, src_port)),
        Kind::Icmp if t.icmp_type == echo_request => flows::open(&flow(dst_port, src_port)),
        Kind::Icmp | Kind::Other => {}
    }
    Ok(())
}
