//! From the kernel's routes and neighbours to a [`NextHops`]: pure, no I/O.
//!
//! Only what leaves by a director port counts: a route whose output interface
//! is not one is left out, so is a neighbour on another interface. A
//! multipath route uses its first next hop on a director port, and the
//! snapshot says so in its notes. Neighbours in REACHABLE, STALE, DELAY,
//! PROBE, PERMANENT or NOARP are resolved (the kernel's `NUD_VALID`);
//! INCOMPLETE, FAILED and NONE are not. A static neighbour from the
//! configuration wins over the kernel: its MAC is used whatever the kernel
//! says about the address, and a host route sends the address out of its port.

use std::fmt;
use std::net::IpAddr;

use super::{NextHops, PortId, Route};
use crate::packet::MacAddr;

/// A director port as the kernel knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub id: PortId,
    pub ifindex: u32,
    pub mac: MacAddr,
}

/// A unicast route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// One for a plain route, several for a multipath route, in the kernel's
    /// order.
    pub hops: Vec<KernelRouteHop>,
}

/// One next hop of a route: the output interface and the gateway, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelRouteHop {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
}

/// A neighbour table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelNeighbour {
    pub addr: IpAddr,
    pub ifindex: u32,
    /// None when the kernel has no link-layer address (INCOMPLETE, FAILED)
    /// or one that is not an Ethernet MAC.
    pub mac: Option<MacAddr>,
    /// The kernel's `NUD_*` state bits.
    pub state: u16,
}

/// The kernel's `NUD_VALID`: PERMANENT | NOARP | REACHABLE | PROBE | STALE | DELAY.
const NUD_VALID: u16 = 0x80 | 0x40 | 0x02 | 0x10 | 0x04 | 0x08;

impl KernelNeighbour {
    pub fn is_resolved(&self) -> bool {
        self.state & NUD_VALID != 0 && self.mac.is_some()
    }
}

/// A neighbour set in the configuration: `addr` is on the segment of `port`
/// and has `mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticNeighbour {
    pub addr: IpAddr,
    pub port: PortId,
    pub mac: MacAddr,
}

/// A snapshot and what a person should know about how it was built.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub next_hops: NextHops,
    /// One line per simplification or oddity (a multipath route reduced to
    /// one next hop, a static neighbour on an unknown port).
    pub notes: Vec<String>,
}

/// Builds the next hops toward everything the director's ports reach.
pub fn build(
    ports: &[Port],
    routes: &[KernelRoute],
    neighbours: &[KernelNeighbour],
    statics: &[StaticNeighbour],
) -> Snapshot {
    let mut notes = Vec::new();
    let port_count = ports.iter().map(|p| usize::from(p.id) + 1).max();
    let mut port_macs = vec![[0u8; 6]; port_count.unwrap_or(0)];
    for p in ports {
        port_macs[usize::from(p.id)] = p.mac;
    }
    let port_of = |ifindex: u32| ports.iter().find(|p| p.ifindex == ifindex).map(|p| p.id);

    // Static host routes first: of two routes of one prefix length the first wins.
    let mut out_routes = Vec::with_capacity(statics.len() + routes.len());
    let mut out_neighbours = Vec::with_capacity(statics.len() + neighbours.len());
    for s in statics {
        if usize::from(s.port) >= port_macs.len() {
            notes.push(format!(
                "static neighbour {} names port {}, which the director does not have; ignored",
                s.addr, s.port
            ));
            continue;
        }
        out_routes.push(Route {
            net: s.addr,
            prefix_len: if s.addr.is_ipv4() { 32 } else { 128 },
            port: s.port,
            via: None,
        });
        out_neighbours.push((s.addr, s.port, s.mac));
    }

    for r in routes {
        let Some((hop, port)) = r
            .hops
            .iter()
            .find_map(|h| port_of(h.ifindex).map(|port| (h, port)))
        else {
            continue;
        };
        if r.hops.len() > 1 {
            notes.push(format!(
                "route {}/{} has {} next hops; xvs uses one: {}",
                r.dst,
                r.prefix_len,
                r.hops.len(),
                HopText(hop)
            ));
        }
        out_routes.push(Route {
            net: r.dst,
            prefix_len: r.prefix_len,
            port,
            via: hop.gateway,
        });
    }

    for n in neighbours {
        let (Some(port), Some(mac)) = (port_of(n.ifindex), n.mac) else {
            continue;
        };
        if !n.is_resolved() || statics.iter().any(|s| s.addr == n.addr) {
            continue;
        }
        out_neighbours.push((n.addr, port, mac));
    }

    Snapshot {
        next_hops: NextHops::with_port_neighbours(port_macs, out_routes, out_neighbours),
        notes,
    }
}

struct HopText<'a>(&'a KernelRouteHop);

impl fmt::Display for HopText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.gateway {
            Some(gw) => write!(f, "via {gw} ifindex {}", self.0.ifindex),
            None => write!(f, "ifindex {}", self.0.ifindex),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neigh::{NextHop, Unresolved};

    const NUD_INCOMPLETE: u16 = 0x01;
    const NUD_REACHABLE: u16 = 0x02;
    const NUD_STALE: u16 = 0x04;
    const NUD_DELAY: u16 = 0x08;
    const NUD_PROBE: u16 = 0x10;
    const NUD_FAILED: u16 = 0x20;
    const NUD_NOARP: u16 = 0x40;
    const NUD_PERMANENT: u16 = 0x80;

    const EXT: Port = Port {
        id: 0,
        ifindex: 7,
        mac: [2, 0, 0, 0, 0, 0xe0],
    };
    const INT: Port = Port {
        id: 1,
        ifindex: 9,
        mac: [2, 0, 0, 0, 0, 0xe1],
    };
    const OTHER_IFINDEX: u32 = 2;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> MacAddr {
        [2, 0, 0, 0, 0, last]
    }

    fn route(dst: &str, len: u8, ifindex: u32, gw: Option<&str>) -> KernelRoute {
        KernelRoute {
            dst: ip(dst),
            prefix_len: len,
            hops: vec![KernelRouteHop {
                ifindex,
                gateway: gw.map(ip),
            }],
        }
    }

    fn neighbour(addr: &str, ifindex: u32, last: u8, state: u16) -> KernelNeighbour {
        KernelNeighbour {
            addr: ip(addr),
            ifindex,
            mac: Some(mac(last)),
            state,
        }
    }

    /// The seed's two-NIC NAT director: clients behind a gateway on the
    /// external port, real servers on the internal segment.
    fn two_arm_routes() -> Vec<KernelRoute> {
        vec![
            route("0.0.0.0", 0, EXT.ifindex, Some("203.0.113.1")),
            route("203.0.113.0", 24, EXT.ifindex, None),
            route("198.51.100.0", 24, INT.ifindex, None),
            route("::", 0, EXT.ifindex, Some("2001:db8:e::1")),
            route("2001:db8:e::", 64, EXT.ifindex, None),
            route("2001:db8:1::", 64, INT.ifindex, None),
        ]
    }

    fn hop(port: &Port, last: u8) -> Result<NextHop, Unresolved> {
        Ok(NextHop {
            port: port.id,
            src_mac: port.mac,
            dst_mac: mac(last),
        })
    }

    #[test]
    fn connected_and_gateway_routes_with_reachable_neighbours() {
        let s = build(
            &[EXT, INT],
            &two_arm_routes(),
            &[
                neighbour("203.0.113.1", EXT.ifindex, 0x01, NUD_REACHABLE),
                neighbour("198.51.100.4", INT.ifindex, 0x04, NUD_REACHABLE),
                neighbour("2001:db8:e::1", EXT.ifindex, 0x61, NUD_STALE),
                neighbour("2001:db8:1::4", INT.ifindex, 0x64, NUD_DELAY),
            ],
            &[],
        );
        let h = &s.next_hops;
        assert_eq!(
            h.resolve(ip("192.0.2.77")),
            hop(&EXT, 0x01),
            "client via gateway"
        );
        assert_eq!(
            h.resolve(ip("198.51.100.4")),
            hop(&INT, 0x04),
            "real server"
        );
        assert_eq!(h.resolve(ip("2001:db8:ff::9")), hop(&EXT, 0x61));
        assert_eq!(h.resolve(ip("2001:db8:1::4")), hop(&INT, 0x64));
        assert_eq!(
            h.resolve(ip("198.51.100.5")),
            Err(Unresolved(ip("198.51.100.5")))
        );
        assert!(s.notes.is_empty(), "{:?}", s.notes);
    }

    #[test]
    fn only_valid_states_count_as_resolved() {
        let table = [
            (NUD_REACHABLE, true),
            (NUD_STALE, true),
            (NUD_DELAY, true),
            (NUD_PROBE, true),
            (NUD_PERMANENT, true),
            (NUD_NOARP, true),
            (NUD_INCOMPLETE, false),
            (NUD_FAILED, false),
            (0, false),
        ];
        for (state, resolved) in table {
            let s = build(
                &[EXT, INT],
                &two_arm_routes(),
                &[neighbour("198.51.100.4", INT.ifindex, 4, state)],
                &[],
            );
            assert_eq!(
                s.next_hops.resolve(ip("198.51.100.4")).is_ok(),
                resolved,
                "state {state:#x}"
            );
        }
        let no_mac = KernelNeighbour {
            mac: None,
            ..neighbour("198.51.100.4", INT.ifindex, 4, NUD_REACHABLE)
        };
        let s = build(&[EXT, INT], &two_arm_routes(), &[no_mac], &[]);
        assert!(s.next_hops.resolve(ip("198.51.100.4")).is_err());
    }

    #[test]
    fn routes_and_neighbours_off_the_director_ports_are_left_out() {
        let mut routes = two_arm_routes();
        routes.push(route("192.0.2.0", 24, OTHER_IFINDEX, None));
        let s = build(
            &[EXT, INT],
            &routes,
            &[
                neighbour("192.0.2.5", OTHER_IFINDEX, 5, NUD_REACHABLE),
                neighbour("203.0.113.1", OTHER_IFINDEX, 9, NUD_REACHABLE),
            ],
            &[],
        );
        let h = &s.next_hops;
        assert!(h.routes().iter().all(|r| r.net != ip("192.0.2.0")));
        // 192.0.2.5 now falls to the default route, whose gateway's MAC is
        // known only on another interface: unresolved.
        assert_eq!(
            h.resolve(ip("192.0.2.5")),
            Err(Unresolved(ip("203.0.113.1")))
        );
    }

    #[test]
    fn a_neighbour_is_used_only_on_its_own_port() {
        // One address seen on both segments: the route decides which MAC.
        let s = build(
            &[EXT, INT],
            &two_arm_routes(),
            &[
                neighbour("198.51.100.4", EXT.ifindex, 0xee, NUD_REACHABLE),
                neighbour("198.51.100.4", INT.ifindex, 0x04, NUD_REACHABLE),
            ],
            &[],
        );
        assert_eq!(s.next_hops.resolve(ip("198.51.100.4")), hop(&INT, 0x04));
    }

    #[test]
    fn multipath_takes_the_first_hop_on_a_director_port_and_says_so() {
        let ecmp = KernelRoute {
            dst: ip("0.0.0.0"),
            prefix_len: 0,
            hops: vec![
                KernelRouteHop {
                    ifindex: OTHER_IFINDEX,
                    gateway: Some(ip("192.0.2.1")),
                },
                KernelRouteHop {
                    ifindex: EXT.ifindex,
                    gateway: Some(ip("203.0.113.1")),
                },
                KernelRouteHop {
                    ifindex: EXT.ifindex,
                    gateway: Some(ip("203.0.113.2")),
                },
            ],
        };
        let s = build(
            &[EXT],
            &[ecmp, route("203.0.113.0", 24, EXT.ifindex, None)],
            &[
                neighbour("203.0.113.1", EXT.ifindex, 1, NUD_REACHABLE),
                neighbour("203.0.113.2", EXT.ifindex, 2, NUD_REACHABLE),
            ],
            &[],
        );
        assert_eq!(s.next_hops.resolve(ip("192.0.2.50")), hop(&EXT, 1));
        assert_eq!(s.notes.len(), 1);
        assert!(
            s.notes[0].contains("0.0.0.0/0 has 3 next hops")
                && s.notes[0].contains("via 203.0.113.1"),
            "{}",
            s.notes[0]
        );
    }

    #[test]
    fn static_neighbours_win_over_the_kernel() {
        let s = build(
            &[EXT, INT],
            &two_arm_routes(),
            &[
                neighbour("198.51.100.4", INT.ifindex, 0x04, NUD_REACHABLE),
                neighbour("203.0.113.1", EXT.ifindex, 0x01, NUD_FAILED),
            ],
            &[
                // A changed MAC the kernel has not seen yet.
                StaticNeighbour {
                    addr: ip("198.51.100.4"),
                    port: INT.id,
                    mac: mac(0x44),
                },
                // The gateway, which the kernel fails to resolve.
                StaticNeighbour {
                    addr: ip("203.0.113.1"),
                    port: EXT.id,
                    mac: mac(0x11),
                },
                // An address no kernel route covers: the static route carries it.
                StaticNeighbour {
                    addr: ip("2001:db8:99::9"),
                    port: INT.id,
                    mac: mac(0x99),
                },
                StaticNeighbour {
                    addr: ip("198.51.100.9"),
                    port: 5,
                    mac: mac(0x55),
                },
            ],
        );
        let h = &s.next_hops;
        assert_eq!(h.resolve(ip("198.51.100.4")), hop(&INT, 0x44));
        assert_eq!(h.resolve(ip("192.0.2.1")), hop(&EXT, 0x11));
        assert_eq!(h.resolve(ip("2001:db8:99::9")), hop(&INT, 0x99));
        assert_eq!(s.notes.len(), 1);
        assert!(s.notes[0].contains("port 5"), "{}", s.notes[0]);
    }

    #[test]
    fn no_ports_no_routes() {
        let s = build(&[], &two_arm_routes(), &[], &[]);
        assert!(s.next_hops.routes().is_empty());
        assert_eq!(s.next_hops.port_mac(0), None);
    }
}
