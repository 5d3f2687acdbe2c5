//! What the kernel knows about network interfaces: index, addresses and the
//! XDP program attached, read over rtnetlink.

use std::{io, net::IpAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::config::firewall::XdpMode;

/// One interface of the current network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Name as `ip link` shows it.
    pub name: String,
    /// Kernel interface index.
    pub index: u32,
    /// The XDP program attached, if any.
    pub xdp: Option<XdpProgram>,
}

/// An XDP program attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpProgram {
    /// Kernel program id.
    pub id: u32,
    /// How it is attached; `None` for hardware offload or several modes at
    /// once, which this product never sets up.
    pub mode: Option<XdpMode>,
}

/// Every interface of the current network namespace.
///
/// # Errors
///
/// The netlink socket's error.
pub fn list() -> io::Result<Vec<Interface>> {
    let replies = dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    Ok(replies
        .into_iter()
        .filter_map(|msg| match msg {
            RouteNetlinkMessage::NewLink(link) => Some(interface(link)),
            _ => None,
        })
        .collect())
}

/// The interface called `name`, if it exists.
///
/// # Errors
///
/// The netlink socket's error.
pub fn by_name(name: &str) -> io::Result<Option<Interface>> {
    Ok(list()?.into_iter().find(|i| i.name == name))
}

/// The interface to which the XDP program `prog_id` is attached.
///
/// # Errors
///
/// The netlink socket's error.
pub fn with_xdp_program(prog_id: u32) -> io::Result<Option<Interface>> {
    Ok(list()?
        .into_iter()
        .find(|i| i.xdp.is_some_and(|x| x.id == prog_id)))
}

/// The addresses assigned to the interface with index `index`.
///
/// # Errors
///
/// The netlink socket's error.
pub fn addresses(index: u32) -> io::Result<Vec<IpAddr>> {
    let replies = dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
    let mut addrs = Vec::new();
    for msg in replies {
        let RouteNetlinkMessage::NewAddress(addr) = msg else {
            continue;
        };
        if addr.header.index != index {
            continue;
        }
        // IFA_LOCAL is the interface's own address on point-to-point links,
        // where IFA_ADDRESS is the peer's; elsewhere both are the same.
        let local = addr.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = addr.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address)
            && !addrs.contains(&ip)
        {
            addrs.push(ip);
        }
    }
    Ok(addrs)
}

fn interface(link: LinkMessage) -> Interface {
    let mut name = String::new();
    let mut xdp = None;
    for attr in link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n,
            LinkAttribute::Xdp(attrs) => xdp = xdp_program(&attrs),
            _ => {}
        }
    }
    Interface {
        name,
        index: link.header.index,
        xdp,
    }
}

fn xdp_program(attrs: &[LinkXdp]) -> Option<XdpProgram> {
    let mut attached = XdpAttached::None;
    let mut id = None;
    for attr in attrs {
        match attr {
            LinkXdp::Attached(a) => attached = *a,
            LinkXdp::ProgId(p) => id = Some(*p),
            _ => {}
        }
    }
    let mode = match attached {
        XdpAttached::None => return None,
        XdpAttached::Driver => Some(XdpMode::Native),
        XdpAttached::SocketBuffer => Some(XdpMode::Skb),
        _ => None,
    };
    Some(XdpProgram { id: id?, mode })
}

/// Sends a dump request and collects every reply up to `NLMSG_DONE`.
fn dump(request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
    msg.finalize();
    let mut buf = vec![0; msg.header.length as usize];
    msg.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut replies = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_attachment_reads_as_native_with_its_program() {
        let attrs = [
            LinkXdp::Attached(XdpAttached::Driver),
            LinkXdp::ProgId(42),
            LinkXdp::DrvProgId(42),
        ];
        assert_eq!(
            xdp_program(&attrs),
            Some(XdpProgram {
                id: 42,
                mode: Some(XdpMode::Native)
            })
        );
    }

    #[test]
    fn generic_attachment_reads_as_skb() {
        let attrs = [
            LinkXdp::Attached(XdpAttached::SocketBuffer),
            LinkXdp::ProgId(7),
        ];
        assert_eq!(xdp_program(&attrs).and_then(|p| p.mode), Some(XdpMode::Skb));
    }

    #[test]
    fn no_attachment_is_no_program() {
        assert_eq!(xdp_program(&[LinkXdp::Attached(XdpAttached::None)]), None);
        assert_eq!(xdp_program(&[]), None);
    }

    #[test]
    fn offloaded_program_has_no_mode_this_product_uses() {
        let attrs = [LinkXdp::Attached(XdpAttached::Hardware), LinkXdp::ProgId(9)];
        assert_eq!(xdp_program(&attrs), Some(XdpProgram { id: 9, mode: None }));
    }
}
