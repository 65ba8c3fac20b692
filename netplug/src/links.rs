//! Links, addresses and routes over rtnetlink: the bridge, a veth pair per pod, the pod side's address and
//! default route.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage as Msg;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use nix::errno::Errno;

use crate::rtnl::Rtnl;

fn by_name(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

fn by_index(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// The index of the link called `name`, or `None` when there is none.
pub fn index_of(rtnl: &mut Rtnl, name: &str) -> Result<Option<u32>, Errno> {
    match rtnl.get(Msg::GetLink(by_name(name))) {
        Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
            Msg::NewLink(l) => Some(l.header.index),
            _ => None,
        })),
        Err(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the link is administratively up.
pub fn is_up(rtnl: &mut Rtnl, name: &str) -> Result<bool, Errno> {
    match rtnl.get(Msg::GetLink(by_name(name))) {
        Ok(msgs) => {
            Ok(msgs.into_iter().any(|m| matches!(m, Msg::NewLink(l) if l.header.flags.contains(LinkFlags::Up))))
        }
        Err(Errno::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn set_up(rtnl: &mut Rtnl, index: u32) -> Result<(), Errno> {
    let mut m = by_index(index);
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    rtnl.request(Msg::SetLink(m))
}

/// Creates the bridge if it is missing and brings it up; returns its index.
pub fn ensure_bridge(rtnl: &mut Rtnl, name: &str) -> Result<u32, Errno> {
    let index = match index_of(rtnl, name)? {
        Some(i) => i,
        None => {
            let mut m = by_name(name);
            m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
            match rtnl.create(Msg::NewLink(m)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            index_of(rtnl, name)?.ok_or(Errno::ENODEV)?
        }
    };
    set_up(rtnl, index)?;
    Ok(index)
}

/// Adds `addr/prefix` to the link; an address already there is fine. An IPv6 address skips duplicate address
/// detection (IPAM hands each address out once): otherwise it stays tentative, unusable, for a second or more.
pub fn ensure_address(rtnl: &mut Rtnl, index: u32, addr: IpAddr, prefix: u8) -> Result<(), Errno> {
    let mut m = AddressMessage::default();
    m.header.family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.prefix_len = prefix;
    m.header.index = index;
    if addr.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    } else {
        m.attributes.push(AddressAttribute::Local(addr));
    }
    m.attributes.push(AddressAttribute::Address(addr));
    match rtnl.create(Msg::NewAddress(m)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a veth pair in one message: `host` on the bridge, up, and its peer already inside the pod's network
/// namespace as `peer` (brought up there: the kernel refuses to set a peer up across namespaces at creation). Being one netlink request, a crash leaves either the whole pair or nothing.
pub fn create_veth(
    rtnl: &mut Rtnl,
    host: &str,
    bridge: u32,
    mtu: u32,
    peer: &str,
    netns: &std::fs::File,
) -> Result<(), Errno> {
    let mut p = by_name(peer);
    p.attributes.push(LinkAttribute::Mtu(mtu));
    p.attributes.push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    let mut m = by_name(host);
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::Controller(bridge));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
    ]));
    rtnl.create(Msg::NewLink(m))
}

/// Hairpin on a bridge port: a pod reaching its own hostPort gets its packets back through the same port.
pub fn set_hairpin(rtnl: &mut Rtnl, index: u32) -> Result<(), Errno> {
    let mut m = by_index(index);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
    ]));
    rtnl.request(Msg::NewLink(m))
}

/// Removes `addr/prefix` from the link; an address already gone is fine.
pub fn delete_address(rtnl: &mut Rtnl, index: u32, addr: IpAddr, prefix: u8) -> Result<(), Errno> {
    let mut m = AddressMessage::default();
    m.header.family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.prefix_len = prefix;
    m.header.index = index;
    m.attributes.push(if addr.is_ipv4() { AddressAttribute::Local(addr) } else { AddressAttribute::Address(addr) });
    match rtnl.request(Msg::DelAddress(m)) {
        Ok(()) | Err(Errno::EADDRNOTAVAIL) | Err(Errno::ENODEV) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a link by name; a link already gone is fine.
pub fn delete(rtnl: &mut Rtnl, name: &str) -> Result<(), Errno> {
    let Some(index) = index_of(rtnl, name)? else { return Ok(()) };
    match rtnl.request(Msg::DelLink(by_index(index))) {
        Ok(()) | Err(Errno::ENODEV) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The names of the links enslaved to the bridge.
pub fn ports_of(rtnl: &mut Rtnl, bridge: u32) -> Result<Vec<String>, Errno> {
    Ok(rtnl
        .dump(Msg::GetLink(LinkMessage::default()))?
        .into_iter()
        .filter_map(|m| match m {
            Msg::NewLink(l) if l.attributes.contains(&LinkAttribute::Controller(bridge)) => {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
            }
            _ => None,
        })
        .collect())
}

/// A default route via `gateway` (in the pod's namespace), of the gateway's family.
pub fn add_default_route(rtnl: &mut Rtnl, gateway: IpAddr, index: u32) -> Result<(), Errno> {
    let mut m = RouteMessage::default();
    m.header.address_family = if gateway.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Gateway(match gateway {
        IpAddr::V4(v) => RouteAddress::Inet(v),
        IpAddr::V6(v) => RouteAddress::Inet6(v),
    }));
    m.attributes.push(RouteAttribute::Oif(index));
    match rtnl.create(Msg::NewRoute(m)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}
