//! Next hops: which port a packet leaves by and which MACs it carries.
//!
//! [`NextHops`] is an immutable snapshot of the routes and neighbours the
//! director needs: the control plane resolves them (from the kernel's tables,
//! or static configuration) and publishes a new snapshot on every change; the
//! data plane only looks up. An address with no known neighbour is reported as
//! [`Unresolved`]; its packets wait in the worker's [`hold::HoldQueue`] until
//! a snapshot resolves it (or are dropped and counted after a bound).
//!
//! [`snapshot`] builds a `NextHops` from route and neighbour records (pure,
//! unit-tested); [`netlink`] reads those records from the kernel, watches for
//! changes and asks the kernel to resolve missing neighbours.

pub mod hold;
pub mod netlink;
pub mod snapshot;

use std::net::IpAddr;

use crate::packet::MacAddr;

/// Index of a director interface (port) in the order they were given.
pub type PortId = u8;

/// Where and how a frame leaves the director.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub port: PortId,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
}

/// The next-hop address (a gateway, or the destination itself when it is on
/// a connected network) has no known MAC yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unresolved(pub IpAddr);

/// A route: destinations within `net/prefix_len` leave through `port`, via the
/// gateway `via` or, when `via` is None, directly (a connected network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub net: IpAddr,
    pub prefix_len: u8,
    pub port: PortId,
    pub via: Option<IpAddr>,
}

impl Route {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.net, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let bits = u32::from(self.prefix_len.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let bits = u32::from(self.prefix_len.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Routes, neighbours and the MAC of each port.
#[derive(Clone, Debug, Default)]
pub struct NextHops {
    port_macs: Vec<MacAddr>,
    /// Longest prefix first, so the first match is the best one.
    routes: Vec<Route>,
    /// Sorted by address (then port) for binary search.
    neighbours: Vec<Neighbour>,
}

/// A resolved neighbour; `port: None` holds on every port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Neighbour {
    addr: IpAddr,
    port: Option<PortId>,
    mac: MacAddr,
}

impl NextHops {
    /// Neighbours given by address only: each holds whichever port the
    /// route toward it leaves by.
    pub fn new(
        port_macs: Vec<MacAddr>,
        routes: Vec<Route>,
        neighbours: Vec<(IpAddr, MacAddr)>,
    ) -> NextHops {
        let neighbours = neighbours
            .into_iter()
            .map(|(addr, mac)| Neighbour {
                addr,
                port: None,
                mac,
            })
            .collect();
        NextHops::build(port_macs, routes, neighbours)
    }

    /// Neighbours as the kernel knows them, per port: a neighbour is used
    /// only for routes that leave by its port, so the same address on two
    /// segments never gets the other segment's MAC.
    pub fn with_port_neighbours(
        port_macs: Vec<MacAddr>,
        routes: Vec<Route>,
        neighbours: Vec<(IpAddr, PortId, MacAddr)>,
    ) -> NextHops {
        let neighbours = neighbours
            .into_iter()
            .map(|(addr, port, mac)| Neighbour {
                addr,
                port: Some(port),
                mac,
            })
            .collect();
        NextHops::build(port_macs, routes, neighbours)
    }

    fn build(
        port_macs: Vec<MacAddr>,
        mut routes: Vec<Route>,
        mut neighbours: Vec<Neighbour>,
    ) -> NextHops {
        // Stable: of two routes with one prefix length the first given wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix_len));
        routes.retain(|r| usize::from(r.port) < port_macs.len());
        // Stable too: of two entries for one (address, port) the first wins.
        neighbours.sort_by_key(|n| (n.addr, n.port));
        neighbours.dedup_by(|a, b| (a.addr, a.port) == (b.addr, b.port));
        NextHops {
            port_macs,
            routes,
            neighbours,
        }
    }

    pub fn port_mac(&self, port: PortId) -> Option<MacAddr> {
        self.port_macs.get(usize::from(port)).copied()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The next hop toward `dst`. `Err` names the address whose MAC is missing;
    /// an address no route covers is reported the same way.
    pub fn resolve(&self, dst: IpAddr) -> Result<NextHop, Unresolved> {
        let route = self.route(dst).ok_or(Unresolved(dst))?;
        let gateway = route.via.unwrap_or(dst);
        let first = self.neighbours.partition_point(|n| n.addr < gateway);
        let neighbour = self.neighbours[first..]
            .iter()
            .take_while(|n| n.addr == gateway)
            .find(|n| n.port.is_none_or(|p| p == route.port))
            .ok_or(Unresolved(gateway))?;
        Ok(NextHop {
            port: route.port,
            src_mac: self.port_macs[usize::from(route.port)],
            dst_mac: neighbour.mac,
        })
    }

    /// The port a packet to `addr` leaves by, resolved or not: where the
    /// control plane asks the kernel to resolve an [`Unresolved`] address.
    pub fn port_toward(&self, addr: IpAddr) -> Option<PortId> {
        self.route(addr).map(|r| r.port)
    }

    fn route(&self, dst: IpAddr) -> Option<&Route> {
        self.routes.iter().find(|r| r.contains(dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_and_gateway() {
        let hops = NextHops::new(
            vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            vec![
                Route {
                    net: ip("0.0.0.0"),
                    prefix_len: 0,
                    port: 0,
                    via: Some(ip("203.0.113.1")),
                },
                Route {
                    net: ip("198.51.100.0"),
                    prefix_len: 24,
                    port: 1,
                    via: None,
                },
                Route {
                    net: ip("203.0.113.0"),
                    prefix_len: 24,
                    port: 0,
                    via: None,
                },
            ],
            vec![
                (ip("203.0.113.1"), [2, 0, 0, 0, 0, 0xa]),
                (ip("198.51.100.5"), [2, 0, 0, 0, 0, 0xb]),
            ],
        );
        let h = hops.resolve(ip("192.0.2.9")).unwrap();
        assert_eq!((h.port, h.dst_mac[5], h.src_mac[5]), (0, 0xa, 1));
        let h = hops.resolve(ip("198.51.100.5")).unwrap();
        assert_eq!((h.port, h.dst_mac[5], h.src_mac[5]), (1, 0xb, 2));
        assert_eq!(
            hops.resolve(ip("198.51.100.6")),
            Err(Unresolved(ip("198.51.100.6")))
        );
        assert_eq!(
            hops.resolve(ip("2001:db8::1")),
            Err(Unresolved(ip("2001:db8::1")))
        );
        assert_eq!(hops.port_toward(ip("198.51.100.6")), Some(1));
        assert_eq!(hops.port_toward(ip("2001:db8::1")), None);
    }

    #[test]
    fn a_port_neighbour_serves_only_its_port() {
        let net = |s, port| Route {
            net: ip(s),
            prefix_len: 24,
            port,
            via: None,
        };
        let hops = NextHops::with_port_neighbours(
            vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            vec![net("198.51.100.0", 1), net("203.0.113.0", 0)],
            vec![
                (ip("198.51.100.5"), 0, [2, 0, 0, 0, 0, 0xa]),
                (ip("198.51.100.5"), 1, [2, 0, 0, 0, 0, 0xb]),
                (ip("203.0.113.5"), 1, [2, 0, 0, 0, 0, 0xc]),
            ],
        );
        let h = hops.resolve(ip("198.51.100.5")).unwrap();
        assert_eq!((h.port, h.dst_mac[5]), (1, 0xb));
        assert_eq!(
            hops.resolve(ip("203.0.113.5")),
            Err(Unresolved(ip("203.0.113.5")))
        );
    }
}
