//! Next-hop upkeep: the director's interfaces as the kernel has them, the
//! next hops (routes and neighbours) built from the kernel's tables over
//! netlink with the static neighbours on top, and the kernel's help with
//! addresses not resolved yet.
//!
//! # Contract
//! - [`Hops::wait`] waits for a change of the kernel's routes, neighbours
//!   or addresses (workers wake it when they ask for a neighbour, since
//!   frames wait for it in their hold queues), asks the kernel to resolve
//!   each address a worker found unresolved (once per round), and lets a
//!   burst of changes settle before it says there was one.
//! - [`Hops::refresh`] rebuilds the interfaces and next hops after a
//!   change; if the kernel's tables cannot be read the previous next hops
//!   stay (and the reason is logged).
//! - [`Hops::resolve_ahead`] asks for the next hops of every real server
//!   and every route's gateway before a packet needs them.
//!
//! Nothing here publishes: the director turns what changed into a snapshot.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};

use super::{err, DirectorError, StaticNeighbourSpec};
use crate::neigh::netlink::{self, Interface, Waker, Watcher};
use crate::neigh::snapshot::{Port, StaticNeighbour};
use crate::neigh::{NextHops, Unresolved};
use crate::pipeline::PortConfig;
use crate::service::ServiceTable;

/// Addresses workers may ask to be resolved before the control thread
/// takes them.
const RESOLVE_QUEUE: usize = 1024;

/// The director's interfaces and next hops, kept current.
pub struct Hops {
    ifaces: Vec<Interface>,
    statics: Vec<StaticNeighbour>,
    next_hops: NextHops,
    watcher: Watcher,
    /// Addresses workers found unresolved.
    resolve_rx: Receiver<IpAddr>,
}

impl Hops {
    /// Reads the next hops of `ifaces` from the kernel (the static
    /// neighbours win) and starts watching for changes. Also returns the
    /// sender on which workers ask for an address to be resolved.
    pub fn open(
        ifaces: Vec<Interface>,
        statics: &[StaticNeighbourSpec],
    ) -> Result<(Hops, Sender<IpAddr>), DirectorError> {
        let statics = resolve_statics(&ifaces, statics)?;
        let next_hops = kernel_next_hops(&ifaces, &statics)?;
        let watcher =
            Watcher::open(&ifaces.iter().map(|i| i.ifindex).collect::<Vec<_>>()).map_err(err)?;
        let (resolve_tx, resolve_rx) = crossbeam::channel::bounded(RESOLVE_QUEUE);
        let hops = Hops {
            ifaces,
            statics,
            next_hops,
            watcher,
            resolve_rx,
        };
        Ok((hops, resolve_tx))
    }

    pub fn interfaces(&self) -> &[Interface] {
        &self.ifaces
    }

    pub fn next_hops(&self) -> &NextHops {
        &self.next_hops
    }

    /// The ports as workers' snapshots describe them.
    pub fn port_configs(&self) -> Vec<PortConfig> {
        port_configs(&self.ifaces)
    }

    /// A handle that wakes [`Hops::wait`], for a worker.
    pub fn waker(&self) -> std::io::Result<Waker> {
        self.watcher.waker()
    }

    /// Waits up to `wait` for a change of the kernel's network state,
    /// serving resolve requests meanwhile; true if something changed.
    pub fn wait(&mut self, wait: Duration) -> bool {
        // Workers wake the wait when they ask for a neighbour: frames wait
        // for it in their hold queues.
        let changed = self.watcher.wait(wait);
        let mut asked = HashSet::new();
        while let Ok(addr) = self.resolve_rx.try_recv() {
            if asked.insert(addr) {
                if let Some(port) = self.next_hops.port_toward(addr) {
                    if let Some(i) = self.ifaces.get(usize::from(port)) {
                        if let Err(e) = netlink::resolve_request(addr, i.ifindex) {
                            tracing::warn!("{e}");
                        }
                    }
                }
            }
        }
        if changed {
            // Let a burst of changes settle, then rebuild once; briefly,
            // since a resolved neighbour releases held frames.
            std::thread::sleep(Duration::from_millis(2));
            while self.watcher.wait(Duration::ZERO) {}
        }
        changed
    }

    /// Re-reads the interfaces and the next hops after a change; true if
    /// the next hops were rebuilt (else the previous ones stay).
    pub fn refresh(&mut self) -> bool {
        for i in &mut self.ifaces {
            if let Ok(fresh) = netlink::interface(&i.name) {
                *i = fresh;
            }
        }
        match kernel_next_hops(&self.ifaces, &self.statics) {
            Ok(h) => {
                self.next_hops = h;
                true
            }
            Err(e) => {
                tracing::warn!("keeping the previous next hops: {e}");
                false
            }
        }
    }

    /// Asks the kernel to resolve, before any packet needs them, the next
    /// hops xvs will send to: every real server's, and every gateway of a
    /// route through a director port. Without this the first packets of the
    /// first connections would find no MAC and be dropped.
    pub fn resolve_ahead(&self, services: &ServiceTable) {
        let mut wanted: Vec<IpAddr> = services
            .services()
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .collect();
        wanted.extend(self.next_hops.routes().iter().filter_map(|r| r.via));
        wanted.sort();
        wanted.dedup();
        for addr in wanted {
            if let Err(Unresolved(hop)) = self.next_hops.resolve(addr) {
                let port = self.next_hops.port_toward(hop).map(usize::from);
                if let Some(i) = port.and_then(|p| self.ifaces.get(p)) {
                    if let Err(e) = netlink::resolve_request(hop, i.ifindex) {
                        tracing::warn!("{e}");
                    }
                }
            }
        }
    }
}

fn port_configs(ifaces: &[Interface]) -> Vec<PortConfig> {
    ifaces
        .iter()
        .map(|i| PortConfig {
            name: i.name.clone(),
            mac: i.mac,
            mtu: i.mtu,
            addrs: i
                .addrs
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| !is_link_local(a))
                .collect(),
        })
        .collect()
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn ports(ifaces: &[Interface]) -> Vec<Port> {
    ifaces.iter().zip(0..).map(|(f, i)| f.port(i)).collect()
}

fn resolve_statics(
    ifaces: &[Interface],
    specs: &[StaticNeighbourSpec],
) -> Result<Vec<StaticNeighbour>, DirectorError> {
    specs
        .iter()
        .map(|s| {
            let port = ifaces
                .iter()
                .position(|i| i.name == s.iface)
                .ok_or_else(|| {
                    err(format!(
                        "static neighbour {} is on {}, which is not a director interface ({})",
                        s.addr,
                        s.iface,
                        ifaces
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            Ok(StaticNeighbour {
                addr: s.addr,
                port: port as u8,
                mac: s.mac,
            })
        })
        .collect()
}

fn kernel_next_hops(
    ifaces: &[Interface],
    statics: &[StaticNeighbour],
) -> Result<NextHops, DirectorError> {
    let snap = netlink::snapshot(&ports(ifaces), statics).map_err(err)?;
    for note in &snap.notes {
        tracing::warn!("{note}");
    }
    Ok(snap.next_hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            up: true,
            addrs: addrs.iter().map(|a| (a.parse().unwrap(), 24)).collect(),
            rx_queues: 1,
        }
    }

    #[test]
    fn ports_carry_no_link_local_address() {
        let ifaces = [iface(
            "d0",
            &["192.0.2.1", "169.254.1.1", "2001:db8::1", "fe80::1"],
        )];
        let ports = port_configs(&ifaces);
        let addrs: Vec<String> = ports[0].addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["192.0.2.1", "2001:db8::1"]);
        assert_eq!((ports[0].name.as_str(), ports[0].mtu), ("d0", 1500));
    }

    #[test]
    fn a_static_neighbour_must_be_on_a_director_interface() {
        let ifaces = [iface("d0", &[]), iface("d1", &[])];
        let spec = |on: &str| StaticNeighbourSpec {
            addr: "198.51.100.2".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 2],
            iface: on.into(),
        };
        let found = resolve_statics(&ifaces, &[spec("d1")]).unwrap();
        assert_eq!(found[0].port, 1);
        let e = resolve_statics(&ifaces, &[spec("eth9")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "static neighbour 198.51.100.2 is on eth9, which is not a director interface (d0, d1)"
        );
    }
}
