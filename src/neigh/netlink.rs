//! The kernel side of next hops, over rtnetlink (the rust-netlink crates;
//! blocking sockets, no async runtime). Used by the control thread only.
//!
//! - [`interface`]: what the director needs to know about one interface.
//! - [`local_addresses`]: every address of the namespace, on any interface.
//! - [`vrrp_macs`]: the VRRP virtual MACs the host holds on given interfaces
//!   (keepalived's `use_vmac` macvlans while they carry the virtual addresses).
//! - [`snapshot()`]: the main routing table and the neighbour tables, restricted
//!   to the director's ports, as a [`NextHops`](super::NextHops).
//! - [`Watcher`]: wakes the control thread when a route, neighbour or link of
//!   the director's interfaces changes (a link on top of one, such as a
//!   macvlan, too), or an address of any interface, so it
//!   rebuilds and republishes the snapshot and the steering program's set of
//!   the host's own addresses.
//! - [`resolve_request`]: makes the kernel resolve a neighbour the data plane
//!   found missing. It adds a *managed* neighbour entry (`NTF_EXT_MANAGED`,
//!   Linux 5.16; `ip neigh add ADDR dev DEV managed`), which the kernel
//!   resolves at once and keeps resolved while it exists, with no traffic of
//!   ours. Where managed entries are missing it falls back to [`probe_request`]
//!   (`NTF_USE`, any kernel): one ARP request or neighbour solicitation for
//!   that address only, as if a packet were queued to it. No datagram is sent
//!   to anyone.
//!
//! Each call opens its own netlink socket, so it reads the network namespace
//! of the calling thread.
//!
//! The control thread's loop, in outline:
//!
//! ```no_run
//! use std::time::Duration;
//! use xvs::neigh::netlink::{self, Watcher};
//! # fn publish(_: xvs::neigh::NextHops) {}
//! # fn requests() -> Vec<std::net::IpAddr> { Vec::new() }
//! # fn main() -> Result<(), netlink::Error> {
//! let ifaces = [netlink::interface("eth0")?, netlink::interface("eth1")?];
//! let ports: Vec<_> = (0..).zip(&ifaces).map(|(id, i)| i.port(id)).collect();
//! let ifindexes: Vec<_> = ifaces.iter().map(|i| i.ifindex).collect();
//! let mut watcher = Watcher::open(&ifindexes)?;
//! let mut snapshot = netlink::snapshot(&ports, &[])?;
//! publish(snapshot.next_hops.clone());
//! loop {
//!     if watcher.wait(Duration::from_millis(100)) {
//!         // Let a burst of changes settle, then rebuild once.
//!         while watcher.wait(Duration::from_millis(20)) {}
//!         snapshot = netlink::snapshot(&ports, &[])?;
//!         publish(snapshot.next_hops.clone());
//!     }
//!     // The addresses the workers' `ResolveRequests` collected.
//!     for addr in requests() {
//!         if let Some(port) = snapshot.next_hops.port_toward(addr) {
//!             netlink::resolve_request(addr, ports[usize::from(port)].ifindex)?;
//!         }
//!     }
//! }
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHopFlags, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::snapshot::{
    self, KernelNeighbour, KernelRoute, KernelRouteHop, Port, Snapshot, StaticNeighbour,
};
use super::PortId;
use crate::packet::MacAddr;

/// What went wrong talking to the kernel, worded for a person.
#[derive(Debug)]
pub enum Error {
    InterfaceNotFound { name: String, existing: Vec<String> },
    NotEthernet { name: String },
    Netlink { doing: String, source: io::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InterfaceNotFound { name, existing } => write!(
                f,
                "interface {name} not found (ip link shows: {})",
                existing.join(", ")
            ),
            Error::NotEthernet { name } => write!(
                f,
                "interface {name} has no Ethernet address; xvs forwards Ethernet frames only"
            ),
            Error::Netlink { doing, source } => {
                write!(f, "{doing}: {source}")?;
                if source.kind() == io::ErrorKind::PermissionDenied {
                    write!(f, " (this needs CAP_NET_ADMIN: run xvs as root)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Netlink { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn doing(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let doing = what.into();
    move |source| Error::Netlink { doing, source }
}

/// A director interface as the kernel has it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: MacAddr,
    pub mtu: u32,
    pub up: bool,
    /// Addresses with their prefix length, IPv4 and IPv6.
    pub addrs: Vec<(IpAddr, u8)>,
    /// RX queues in use: one AF_XDP socket per queue can be bound. From
    /// sysfs (the driver's current count); where sysfs shows another
    /// namespace, the number the device was created with.
    pub rx_queues: u32,
}

impl Interface {
    /// This interface as the director's port `id`.
    pub fn port(&self, id: PortId) -> Port {
        Port {
            id,
            ifindex: self.ifindex,
            mac: self.mac,
        }
    }
}

/// The interface called `name`, or an error that lists the ones there are.
pub fn interface(name: &str) -> Result<Interface, Error> {
    let mut conn = Conn::open()?;
    let links = conn
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(doing("listing interfaces"))?;
    let mut names = Vec::new();
    let mut found = None;
    for m in links {
        let RouteNetlinkMessage::NewLink(link) = m else {
            continue;
        };
        let link_name = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let Some(link_name) = link_name else {
            continue;
        };
        names.push((link.header.index, link_name.clone()));
        if link_name == name {
            found = Some(link);
        }
    }
    let Some(link) = found else {
        names.sort();
        return Err(Error::InterfaceNotFound {
            name: name.to_owned(),
            existing: names.into_iter().map(|(_, n)| n).collect(),
        });
    };
    let ifindex = link.header.index;
    let mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(bytes) => MacAddr::try_from(bytes.as_slice()).ok(),
            _ => None,
        })
        .ok_or_else(|| Error::NotEthernet {
            name: name.to_owned(),
        })?;
    let attr_u32 = |want: fn(&LinkAttribute) -> Option<u32>| link.attributes.iter().find_map(want);
    let mtu = attr_u32(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
    .unwrap_or(1500);
    let created_rx_queues = attr_u32(|a| match a {
        LinkAttribute::NumRxQueues(n) => Some(*n),
        _ => None,
    });

    let addrs = conn
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(doing(format!("listing the addresses of {name}")))?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == ifindex => address_record(&a),
            _ => None,
        })
        .collect();

    Ok(Interface {
        name: name.to_owned(),
        ifindex,
        mac,
        mtu,
        up: link.header.flags.contains(LinkFlags::Up),
        addrs,
        rx_queues: sysfs_rx_queues(name, ifindex, mac)
            .or(created_rx_queues)
            .unwrap_or(1)
            .max(1),
    })
}

/// Every address of the calling thread's network namespace, IPv4 and IPv6,
/// on every interface (lo included), once each: the director host's own
/// addresses, whatever interface its traffic leaves from.
pub fn local_addresses() -> Result<Vec<IpAddr>, Error> {
    let mut conn = Conn::open()?;
    let mut addrs: Vec<IpAddr> = conn
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(doing("listing the host's addresses"))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => address_record(a).map(|(ip, _)| ip),
            _ => None,
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// The VRRP virtual MACs (`00:00:5e:00:01:VRID` for IPv4,
/// `00:00:5e:00:02:VRID` for IPv6) the host holds on top of the interfaces
/// `lowers`, as (lower ifindex, MAC): one for each macvlan of such a MAC on
/// one of them that is up and carries an address other than an IPv6
/// link-local one. That is keepalived's `use_vmac` on the master: its
/// backup keeps the macvlan up too, but the virtual addresses are on it
/// only while it is master.
pub fn vrrp_macs(lowers: &[u32]) -> Result<Vec<(u32, MacAddr)>, Error> {
    let mut conn = Conn::open()?;
    let candidates: Vec<(u32, u32, MacAddr)> = conn
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(doing("listing interfaces"))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => vrrp_macvlan(l),
            _ => None,
        })
        .filter(|(_, lower, _)| lowers.contains(lower))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let addressed: Vec<u32> = conn
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(doing("listing the host's addresses"))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => {
                let (ip, _) = address_record(a)?;
                let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
                (!link_local).then_some(a.header.index)
            }
            _ => None,
        })
        .collect();
    let mut macs: Vec<(u32, MacAddr)> = candidates
        .into_iter()
        .filter(|(index, _, _)| addressed.contains(index))
        .map(|(_, lower, mac)| (lower, mac))
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// (ifindex, lower ifindex, MAC) of a macvlan that is up and has a VRRP
/// virtual MAC.
fn vrrp_macvlan(l: &LinkMessage) -> Option<(u32, u32, MacAddr)> {
    if !l.header.flags.contains(LinkFlags::Up) {
        return None;
    }
    let mut lower = None;
    let mut mac = None;
    let mut macvlan = false;
    for a in &l.attributes {
        match a {
            LinkAttribute::Link(i) => lower = Some(*i),
            LinkAttribute::Address(bytes) => mac = MacAddr::try_from(bytes.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                macvlan |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::MacVlan)));
            }
            _ => {}
        }
    }
    let mac = mac.filter(is_vrrp_mac)?;
    macvlan.then_some((l.header.index, lower?, mac))
}

/// VRRP's virtual router MACs (RFC 5798 §7.3): `00:00:5e:00:01:VRID` (IPv4)
/// and `00:00:5e:00:02:VRID` (IPv6).
pub fn is_vrrp_mac(mac: &MacAddr) -> bool {
    mac[..4] == [0x00, 0x00, 0x5e, 0x00] && matches!(mac[4], 1 | 2)
}

fn address_record(m: &AddressMessage) -> Option<(IpAddr, u8)> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
    // point-to-point links and the same as IFA_LOCAL elsewhere (IPv6 sends
    // only IFA_ADDRESS).
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address).map(|ip| (ip, m.header.prefix_len))
}

/// sysfs shows the namespace it was mounted in, which may not be the calling
/// thread's: trust it only when it shows the same device.
fn sysfs_rx_queues(name: &str, ifindex: u32, mac: MacAddr) -> Option<u32> {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    let read = |f: &str| crate::files::read_text(&dir.join(f), crate::files::MAX_SYSTEM_BYTES);
    let same_index = read("ifindex").ok()?.trim().parse::<u32>().ok() == Some(ifindex);
    let mac_text = mac.map(|b| format!("{b:02x}")).join(":");
    let same_mac = read("address").ok()?.trim() == mac_text;
    if !same_index || !same_mac {
        return None;
    }
    let count = std::fs::read_dir(dir.join("queues"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(count).ok().filter(|&n| n > 0)
}

/// Reads the main routing table and the neighbour tables and builds the next
/// hops through `ports`; `statics` win over the kernel.
pub fn snapshot(ports: &[Port], statics: &[StaticNeighbour]) -> Result<Snapshot, Error> {
    let mut conn = Conn::open()?;
    let routes: Vec<KernelRoute> = conn
        .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
        .map_err(doing("reading the routing table"))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => route_record(r),
            _ => None,
        })
        .collect();
    let neighbours: Vec<KernelNeighbour> = conn
        .dump(RouteNetlinkMessage::GetNeighbour(
            NeighbourMessage::default(),
        ))
        .map_err(doing("reading the neighbour tables"))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => neighbour_record(n),
            _ => None,
        })
        .collect();
    let mut snapshot = snapshot::build(ports, &routes, &neighbours, statics);
    if conn.undecodable > 0 {
        snapshot.notes.push(format!(
            "{} kernel messages could not be decoded and were skipped",
            conn.undecodable
        ));
    }
    Ok(snapshot)
}

/// A unicast route of the main table, or None for anything else: other
/// tables, local/broadcast/blackhole/... routes, source-specific or TOS
/// routes, routes with no usable next hop.
pub fn route_record(m: &RouteMessage) -> Option<KernelRoute> {
    let h = &m.header;
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if h.kind != RouteType::Unicast
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.source_prefix_length != 0
        || h.tos != 0
    {
        return None;
    }
    let mut dst = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut oif = None;
    let mut multipath = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(addr) => dst = route_addr(addr)?,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    if dst.is_ipv4() != (h.address_family == AddressFamily::Inet) {
        return None;
    }
    let hops: Vec<KernelRouteHop> = match multipath {
        Some(hops) => hops
            .iter()
            .filter(|nh| !nh.flags.contains(RouteNextHopFlags::Dead))
            .map(|nh| KernelRouteHop {
                ifindex: nh.interface_index,
                gateway: gateway(&nh.attributes),
            })
            .collect(),
        None => vec![KernelRouteHop {
            ifindex: oif?,
            gateway: gateway(&m.attributes),
        }],
    };
    if hops.is_empty() {
        return None;
    }
    Some(KernelRoute {
        dst,
        prefix_len: h.destination_prefix_length,
        hops,
    })
}

/// RTA_GATEWAY, or RTA_VIA (an IPv4 route via an IPv6 neighbour, RFC 8950).
fn gateway(attributes: &[RouteAttribute]) -> Option<IpAddr> {
    attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(addr) => route_addr(addr),
        RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

fn route_addr(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// An IPv4 or IPv6 neighbour entry (not a proxy entry), or None.
pub fn neighbour_record(m: &NeighbourMessage) -> Option<KernelNeighbour> {
    if m.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let addr = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let mac = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => MacAddr::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    Some(KernelNeighbour {
        addr,
        ifindex: m.header.ifindex,
        mac,
        state: u16::from(m.header.state),
    })
}

/// How [`resolve_request`] asked the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A managed neighbour entry: resolved now and kept resolved.
    Managed,
    /// One ARP request or neighbour solicitation ([`probe_request`]).
    Probe,
}

/// Makes the kernel resolve `addr` on the interface `ifindex`; the result
/// shows in a later [`snapshot()`] (and wakes the [`Watcher`]). Harmless on an
/// entry that is already resolved: a managed request keeps its state.
/// Managed entries stay after xvs exits (`ip neigh del` removes them).
pub fn resolve_request(addr: IpAddr, ifindex: u32) -> Result<Resolution, Error> {
    let mut conn = Conn::open()?;
    let mut managed = neighbour_request(addr, ifindex);
    managed
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    // A kernel older than 5.16 ignores NDA_FLAGS_EXT and accepts the request,
    // so look whether the entry really is managed.
    let accepted = conn
        .ack(RouteNetlinkMessage::NewNeighbour(managed), NLM_F_CREATE)
        .is_ok();
    if accepted && conn.is_managed(addr, ifindex) {
        return Ok(Resolution::Managed);
    }
    probe_request(addr, ifindex)?;
    Ok(Resolution::Probe)
}

/// One resolution attempt for `addr` on `ifindex` (`NTF_USE`): the kernel
/// sends an ARP request or neighbour solicitation for that address, as it
/// would for a queued packet; an entry it already has keeps its state.
pub fn probe_request(addr: IpAddr, ifindex: u32) -> Result<(), Error> {
    let mut conn = Conn::open()?;
    let mut probe = neighbour_request(addr, ifindex);
    probe.header.flags = NeighbourFlags::Use;
    conn.ack(RouteNetlinkMessage::NewNeighbour(probe), NLM_F_CREATE)
        .map_err(doing(format!(
            "asking the kernel to resolve {addr} on interface index {ifindex}"
        )))
}

fn neighbour_request(addr: IpAddr, ifindex: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family_of(addr);
    m.header.ifindex = ifindex;
    m.attributes
        .push(NeighbourAttribute::Destination(match addr {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    m
}

fn family_of(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// rtnetlink multicast groups (`RTNLGRP_*`) the watcher listens to.
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// Says when a route, neighbour or link of the director's interfaces
/// changed, or an address of *any* interface (the steering program must
/// know every address of the host, not only the ports'). It does not
/// debounce: a neighbour going from REACHABLE to STALE wakes it too, so the
/// caller waits a little for more and then rebuilds once. Interface facts
/// (a port's MAC or MTU) may have changed as well when it wakes.
pub struct Watcher {
    socket: Socket,
    ifindexes: Vec<u32>,
    buf: Vec<u8>,
    /// The receiving end of every [`Waker`]; `wait` returns when it is readable.
    wake: std::os::unix::net::UnixDatagram,
    waker: Waker,
}

/// Ends a [`Watcher::wait`] early from another thread: a worker that asked
/// for a neighbour uses it so the request is acted on at once, not after
/// the control thread's next timeout. Cheap to clone; never blocks.
#[derive(Debug)]
pub struct Waker(std::os::unix::net::UnixDatagram);

impl Waker {
    pub fn wake(&self) {
        // A full socket already holds a wake-up: nothing is lost.
        let _ = self.0.send(&[1]);
    }

    pub fn try_clone(&self) -> io::Result<Waker> {
        self.0.try_clone().map(Waker)
    }
}

impl Watcher {
    /// Watches routes, neighbours and links of the interfaces `ifindexes`
    /// (empty: of every interface), and the addresses of every interface, in
    /// the calling thread's network namespace.
    pub fn open(ifindexes: &[u32]) -> Result<Watcher, Error> {
        let subscribe = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            for group in [
                RTNLGRP_LINK,
                RTNLGRP_NEIGH,
                RTNLGRP_IPV4_IFADDR,
                RTNLGRP_IPV4_ROUTE,
                RTNLGRP_IPV6_IFADDR,
                RTNLGRP_IPV6_ROUTE,
            ] {
                socket.add_membership(group)?;
            }
            socket.set_non_blocking(true)?;
            // Fewer lost events (ENOBUFS) on a busy host; a lost event still
            // reads as a change.
            let _ = socket.set_rx_buf_sz(1 << 20);
            Ok(socket)
        };
        let (wake, waker) = std::os::unix::net::UnixDatagram::pair()
            .and_then(|(a, b)| {
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                Ok((a, Waker(b)))
            })
            .map_err(doing("creating the control thread's wake-up socket"))?;
        Ok(Watcher {
            socket: subscribe().map_err(doing("subscribing to kernel network changes"))?,
            ifindexes: ifindexes.to_vec(),
            buf: vec![0; RECV_BUF],
            wake,
            waker,
        })
    }

    /// A handle that ends the current or next [`Watcher::wait`] early.
    pub fn waker(&self) -> io::Result<Waker> {
        self.waker.try_clone()
    }

    /// Waits up to `timeout` for a change, or for a [`Waker`]; true when
    /// something changed (or events were lost, or the socket failed:
    /// rebuilding is always safe).
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let (ready, woken) = {
            let mut fds = [
                PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            let ready = poll(&mut fds, timeout);
            let readable = |f: &PollFd| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            (ready.map(|_| readable(&fds[0])), readable(&fds[1]))
        };
        if woken {
            let mut byte = [0u8; 64];
            while self.wake.recv(&mut byte).is_ok() {}
        }
        match ready {
            Ok(false) | Err(Errno::EINTR) => false,
            Ok(true) => self.drain(),
            Err(_) => true,
        }
    }

    /// Reads every queued event; true if one concerns the watched interfaces
    /// or is an address change.
    fn drain(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => {
                    let mut data = &self.buf[..n.min(self.buf.len())];
                    while let Some((message, rest)) = next_message(data) {
                        data = rest;
                        changed |= match message.payload() {
                            Ok(NetlinkPayload::InnerMessage(m)) => self.concerns(&m),
                            Ok(_) => false,
                            Err(()) => true,
                        };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ENOBUFS: the kernel dropped events; anything may have changed.
                Err(_) => return true,
            }
        }
    }

    fn concerns(&self, m: &RouteNetlinkMessage) -> bool {
        let watched = |i: u32| self.ifindexes.is_empty() || self.ifindexes.contains(&i);
        match m {
            // A link on top of a watched one too: a VRRP macvlan coming or
            // going changes what the steering program answers to.
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
                watched(l.header.index)
                    || l.attributes
                        .iter()
                        .any(|a| matches!(a, LinkAttribute::Link(lower) if watched(*lower)))
            }
            // Any interface's: the host's own addresses are all the
            // steering program's business.
            RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => true,
            RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
                watched(n.header.ifindex)
            }
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                route_record(r).is_some_and(|r| r.hops.iter().any(|h| watched(h.ifindex)))
            }
            _ => false,
        }
    }
}

/// Large enough for the kernel's biggest dump datagram (32 KiB or a page).
const RECV_BUF: usize = 64 * 1024;
/// A dump the kernel marks inconsistent (the table changed meanwhile) is
/// retried this many times; the last one is used, and the change wakes the
/// watcher anyway.
const DUMP_TRIES: usize = 3;

/// One request/response netlink socket.
struct Conn {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Messages skipped because they could not be decoded.
    undecodable: usize,
}

impl Conn {
    fn open() -> Result<Conn, Error> {
        let connect = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        };
        Ok(Conn {
            socket: connect().map_err(doing("opening a netlink socket"))?,
            seq: 0,
            buf: vec![0; RECV_BUF],
            undecodable: 0,
        })
    }

    fn send(&mut self, request: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(self.seq)
    }

    /// Every object of a dump request.
    fn dump(&mut self, request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        for _ in 0..DUMP_TRIES {
            out.clear();
            let seq = self.send(request.clone(), NLM_F_DUMP)?;
            if !self.replies(seq, &mut out)? {
                break;
            }
        }
        Ok(out)
    }

    /// A change request; Ok once the kernel acknowledged it.
    fn ack(&mut self, request: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(request, NLM_F_ACK | flags)?;
        self.replies(seq, &mut Vec::new()).map(drop)
    }

    /// Whether the kernel's entry for `addr` on `ifindex` is managed.
    fn is_managed(&mut self, addr: IpAddr, ifindex: u32) -> bool {
        let request = RouteNetlinkMessage::GetNeighbour(neighbour_request(addr, ifindex));
        let mut out = Vec::new();
        let answered = self
            .send(request, 0)
            .and_then(|seq| self.replies(seq, &mut out));
        answered.is_ok()
            && out.iter().any(|m| {
                matches!(m, RouteNetlinkMessage::NewNeighbour(n) if n.attributes.iter().any(|a|
                    matches!(a, NeighbourAttribute::ExtFlags(f) if f.contains(NeighbourExtFlags::Managed))))
            })
    }

    /// Collects the replies to `seq` until the exchange ends: the end of a
    /// dump, an acknowledgement, an error, or a single (non-multipart) reply.
    /// Returns whether the kernel marked the dump inconsistent.
    fn replies(&mut self, seq: u32, out: &mut Vec<RouteNetlinkMessage>) -> io::Result<bool> {
        let mut interrupted = false;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut data = &self.buf[..n.min(self.buf.len())];
            while let Some((message, rest)) = next_message(data) {
                data = rest;
                if message.seq != seq {
                    continue;
                }
                interrupted |= message.flags & NLM_F_DUMP_INTR != 0;
                let multipart = message.flags & NLM_F_MULTIPART != 0;
                match message.payload() {
                    Ok(NetlinkPayload::Done(_)) => return Ok(interrupted),
                    Ok(NetlinkPayload::Error(e)) => {
                        return match e.code {
                            None => Ok(interrupted),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    Ok(NetlinkPayload::InnerMessage(m)) => out.push(m),
                    Ok(_) => {}
                    Err(()) => self.undecodable += 1,
                }
                if !multipart {
                    return Ok(interrupted);
                }
            }
        }
    }
}

/// One netlink message of a datagram, its header read, its body decoded on
/// demand.
struct Message<'a> {
    bytes: &'a [u8],
    seq: u32,
    flags: u16,
}

impl Message<'_> {
    fn payload(&self) -> Result<NetlinkPayload<RouteNetlinkMessage>, ()> {
        NetlinkMessage::<RouteNetlinkMessage>::deserialize(self.bytes)
            .map(|m| m.payload)
            .map_err(drop)
    }
}

/// Splits the first message off a datagram; None at the end or on a length
/// that does not fit.
fn next_message(data: &[u8]) -> Option<(Message<'_>, &[u8])> {
    let header = NetlinkBuffer::new_checked(data).ok()?;
    let len = usize::try_from(header.length()).ok()?;
    let bytes = data.get(..len)?;
    let rest = data.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    let message = Message {
        bytes,
        seq: header.sequence_number(),
        flags: header.flags(),
    };
    Some((message, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::NeighbourState;
    use netlink_packet_route::route::RouteNextHop;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route_message(family: AddressFamily, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Unicast;
        m.attributes = attrs;
        m
    }

    fn link_message(index: u32, up: bool, attrs: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.attributes = attrs;
        m
    }

    fn macvlan(lower: u32, mac: MacAddr) -> Vec<LinkAttribute> {
        vec![
            LinkAttribute::Link(lower),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::MacVlan)]),
        ]
    }

    #[test]
    fn vrrp_macs_are_the_two_virtual_router_prefixes() {
        assert!(is_vrrp_mac(&[0, 0, 0x5e, 0, 1, 51]));
        assert!(is_vrrp_mac(&[0, 0, 0x5e, 0, 2, 255]));
        assert!(!is_vrrp_mac(&[0, 0, 0x5e, 0, 3, 51]));
        assert!(!is_vrrp_mac(&[0x02, 0, 0x5e, 0, 1, 51]));
        assert!(
            !is_vrrp_mac(&[0x01, 0, 0x5e, 0, 0, 18]),
            "VRRP's multicast group MAC"
        );
    }

    #[test]
    fn a_vrrp_macvlan_counts_when_up_with_a_virtual_mac() {
        let vmac = [0, 0, 0x5e, 0, 1, 51];
        assert_eq!(
            vrrp_macvlan(&link_message(9, true, macvlan(2, vmac))),
            Some((9, 2, vmac))
        );
        assert_eq!(
            vrrp_macvlan(&link_message(9, false, macvlan(2, vmac))),
            None,
            "down"
        );
        let other = [0x02, 0, 0, 0, 0, 7];
        assert_eq!(
            vrrp_macvlan(&link_message(9, true, macvlan(2, other))),
            None,
            "no VRRP MAC"
        );
        let mut veth = macvlan(2, vmac);
        veth.pop();
        assert_eq!(
            vrrp_macvlan(&link_message(9, true, veth)),
            None,
            "not a macvlan"
        );
    }

    #[test]
    fn a_default_route_via_a_gateway() {
        let m = route_message(
            AddressFamily::Inet,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet("203.0.113.1".parse().unwrap())),
                RouteAttribute::Oif(7),
            ],
        );
        assert_eq!(
            route_record(&m),
            Some(KernelRoute {
                dst: ip("0.0.0.0"),
                prefix_len: 0,
                hops: vec![KernelRouteHop {
                    ifindex: 7,
                    gateway: Some(ip("203.0.113.1")),
                }],
            })
        );
    }

    #[test]
    fn a_connected_ipv6_route() {
        let mut m = route_message(
            AddressFamily::Inet6,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6("2001:db8:1::".parse().unwrap())),
                RouteAttribute::Oif(9),
            ],
        );
        m.header.destination_prefix_length = 64;
        let r = route_record(&m).unwrap();
        assert_eq!((r.dst, r.prefix_len), (ip("2001:db8:1::"), 64));
        assert_eq!(
            r.hops,
            vec![KernelRouteHop {
                ifindex: 9,
                gateway: None
            }]
        );
    }

    #[test]
    fn multipath_keeps_live_hops_in_order() {
        let hop = |ifindex, gw: &str, dead| {
            let mut nh = RouteNextHop::default();
            nh.interface_index = ifindex;
            if dead {
                nh.flags = RouteNextHopFlags::Dead;
            }
            nh.attributes = vec![RouteAttribute::Via(RouteVia::Inet6(gw.parse().unwrap()))];
            nh
        };
        let m = route_message(
            AddressFamily::Inet,
            vec![RouteAttribute::MultiPath(vec![
                hop(3, "2001:db8::3", true),
                hop(4, "2001:db8::4", false),
                hop(5, "2001:db8::5", false),
            ])],
        );
        let r = route_record(&m).unwrap();
        let gws: Vec<_> = r.hops.iter().map(|h| (h.ifindex, h.gateway)).collect();
        assert_eq!(
            gws,
            vec![(4, Some(ip("2001:db8::4"))), (5, Some(ip("2001:db8::5")))]
        );
    }

    #[test]
    fn not_main_not_unicast_or_no_interface_is_no_route() {
        let base = || {
            route_message(
                AddressFamily::Inet,
                vec![
                    RouteAttribute::Destination(RouteAddress::Inet(
                        "198.51.100.0".parse().unwrap(),
                    )),
                    RouteAttribute::Oif(2),
                ],
            )
        };
        assert!(route_record(&base()).is_some());
        let mut local = base();
        local.header.kind = RouteType::Local;
        let mut other_table = base();
        other_table.header.table = 255;
        let mut big_table = base();
        big_table.attributes.push(RouteAttribute::Table(1000));
        let mut from = base();
        from.header.source_prefix_length = 24;
        let mut no_oif = base();
        no_oif
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        for m in [local, other_table, big_table, from, no_oif] {
            assert_eq!(route_record(&m), None, "{m:?}");
        }
    }

    fn neighbour_message(state: NeighbourState, lladdr: Option<Vec<u8>>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = 9;
        m.header.state = state;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                "198.51.100.4".parse().unwrap(),
            )));
        if let Some(l) = lladdr {
            m.attributes.push(NeighbourAttribute::LinkLayerAddress(l));
        }
        m
    }

    #[test]
    fn neighbour_records() {
        let n = neighbour_record(&neighbour_message(
            NeighbourState::Reachable,
            Some(vec![2, 0, 0, 0, 0, 4]),
        ))
        .unwrap();
        assert_eq!(
            (n.addr, n.ifindex, n.mac),
            (ip("198.51.100.4"), 9, Some([2, 0, 0, 0, 0, 4]))
        );
        assert!(n.is_resolved());

        let n = neighbour_record(&neighbour_message(NeighbourState::Incomplete, None)).unwrap();
        assert!(!n.is_resolved());
        // A link-layer address that is not a MAC (a tunnel's IPv4 address).
        let n = neighbour_record(&neighbour_message(
            NeighbourState::Permanent,
            Some(vec![192, 0, 2, 1]),
        ))
        .unwrap();
        assert_eq!(n.mac, None);
        assert!(!n.is_resolved());

        let mut proxy = neighbour_message(NeighbourState::Permanent, None);
        proxy.header.flags = NeighbourFlags::Proxy;
        assert_eq!(neighbour_record(&proxy), None);
    }

    #[test]
    fn the_missing_interface_error_lists_the_others() {
        let e = Error::InterfaceNotFound {
            name: "eth9".into(),
            existing: vec!["eth0".into(), "eth1".into()],
        };
        assert_eq!(
            e.to_string(),
            "interface eth9 not found (ip link shows: eth0, eth1)"
        );
        let e = Error::Netlink {
            doing: "asking the kernel to resolve 192.0.2.1".into(),
            source: io::Error::from_raw_os_error(1),
        };
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn messages_split_on_their_lengths() {
        // Two NLMSG_DONE messages of 20 bytes back to back, then garbage.
        let done = |seq: u8| {
            let mut b = vec![
                20, 0, 0, 0, 3, 0, 2, 0, seq, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            b.truncate(20);
            b
        };
        let mut data = done(1);
        data.extend(done(2));
        data.extend([0xff; 3]);
        let (first, rest) = next_message(&data).unwrap();
        assert_eq!((first.seq, first.flags), (1, NLM_F_MULTIPART));
        assert!(matches!(first.payload(), Ok(NetlinkPayload::Done(_))));
        let (second, rest) = next_message(rest).unwrap();
        assert_eq!(second.seq, 2);
        assert!(next_message(rest).is_none());
        // A length past the end of the datagram.
        let mut short = done(3);
        short[0] = 200;
        assert!(next_message(&short).is_none());
    }
}
