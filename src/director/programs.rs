//! The steering programs: one XDP program per director interface, and the
//! maps that decide which frames they hand to xvs (`services`: every
//! virtual service; `nat_reals`: every NAT real server's endpoint, whose
//! answers come back through the director; `local_addrs`: the host's own
//! addresses, whose traffic stays with the kernel; `own_macs`, per
//! interface: the unicast MACs a frame must be sent to to be xvs's, the
//! interface's own and the VRRP virtual MACs the host holds on it).
//!
//! # Contract
//! - [`Programs::attach`] loads and attaches one program per interface, in
//!   the interfaces' order; if one fails, those attached before it are
//!   detached again (dropping a [`SteeringProgram`] detaches it).
//! - The maps change only through [`Programs::sync_services`],
//!   [`Programs::sync_local_addrs`] and [`Programs::sync_own_macs`], each
//!   making every program's maps equal to the wanted set. The director calls `sync_services` only after the
//!   workers have the snapshot that knows the services
//!   ([`super::publish`]).
//! - [`Programs::detach`] detaches them all; only after the workers (and
//!   their sockets) have stopped.

use std::collections::HashSet;

use super::{err, DirectorError};
use crate::neigh::netlink::{self, Interface};
use crate::packet::MacAddr;
use crate::service::{ForwardMethod, ServiceTable};
use crate::xsk::prog::{Endpoint, LocalAddr, OwnMac, SteerCounter, SteeringProgram, XdpMode};

/// The attached steering programs, one per interface, in their order.
pub struct Programs {
    programs: Vec<SteeringProgram>,
    modes: Vec<XdpMode>,
}

impl Programs {
    /// Loads and attaches a program on each of `ifaces`.
    pub fn attach(ifaces: &[Interface]) -> Result<Programs, DirectorError> {
        let mut programs = Vec::new();
        let mut modes = Vec::new();
        for i in ifaces {
            let mut p = SteeringProgram::load().map_err(err)?;
            modes.push(p.attach(i.ifindex, &i.name).map_err(err)?);
            programs.push(p);
        }
        Ok(Programs { programs, modes })
    }

    /// The programs, for the workers to register their sockets with.
    pub fn programs(&self) -> &[SteeringProgram] {
        &self.programs
    }

    /// How each program is attached (native, or generic as fallback).
    pub fn modes(&self) -> &[XdpMode] {
        &self.modes
    }

    /// Makes every program's `services` and `nat_reals` match `services`.
    pub fn sync_services(&mut self, services: &ServiceTable) -> Result<(), DirectorError> {
        let (vips, nat_reals) = steered_endpoints(services);
        for p in &mut self.programs {
            p.sync_services(&vips).map_err(err)?;
            p.sync_nat_reals(&nat_reals).map_err(err)?;
        }
        Ok(())
    }

    /// Makes every program's `local_addrs` the host's addresses now. Until
    /// this runs after a change, answers to a new address coming from a NAT
    /// real server's endpoint still go to xvs (and are dropped).
    pub fn sync_local_addrs(&mut self) -> Result<(), DirectorError> {
        let addrs: HashSet<LocalAddr> = netlink::local_addresses()
            .map_err(err)?
            .into_iter()
            .map(LocalAddr::new)
            .collect();
        for p in &mut self.programs {
            p.sync_local_addrs(&addrs).map_err(err)?;
        }
        Ok(())
    }

    /// Makes each program's `own_macs` its interface's MAC and the VRRP
    /// virtual MACs the host holds on that interface now; `ifaces` are the
    /// interfaces as last read, in the programs' order. Until this runs
    /// after a takeover, frames to the virtual MAC are passed (and counted).
    pub fn sync_own_macs(&mut self, ifaces: &[Interface]) -> Result<(), DirectorError> {
        let lowers: Vec<u32> = ifaces.iter().map(|i| i.ifindex).collect();
        let vmacs = netlink::vrrp_macs(&lowers).map_err(err)?;
        for (p, i) in self.programs.iter_mut().zip(ifaces) {
            p.sync_own_macs(&own_macs(i, &vmacs)).map_err(err)?;
        }
        Ok(())
    }

    /// Each program's counters, in the interfaces' order, by
    /// [`SteerCounter::ALL`]; one that cannot be read is 0.
    pub fn counters(&self) -> Vec<[u64; SteerCounter::ALL.len()]> {
        self.programs
            .iter()
            .map(|p| SteerCounter::ALL.map(|c| p.counter(c).unwrap_or(0)))
            .collect()
    }

    /// Detaches every program.
    pub fn detach(&mut self) {
        self.programs.clear();
    }
}

/// The `own_macs` set of the program on `iface`: its MAC, and the virtual
/// MACs of `vmacs` (lower ifindex, MAC) on top of it.
fn own_macs(iface: &Interface, vmacs: &[(u32, MacAddr)]) -> HashSet<OwnMac> {
    std::iter::once(iface.mac)
        .chain(
            vmacs
                .iter()
                .filter(|(lower, _)| *lower == iface.ifindex)
                .map(|(_, mac)| *mac),
        )
        .map(OwnMac::new)
        .collect()
}

/// The steering program's `services` and `nat_reals` sets for `services`:
/// every (protocol, VIP, port), and every NAT real server's (protocol,
/// address, port).
pub fn steered_endpoints(services: &ServiceTable) -> (HashSet<Endpoint>, HashSet<Endpoint>) {
    let mut vips = HashSet::new();
    let mut nat_reals = HashSet::new();
    for s in services.services() {
        vips.insert(Endpoint::new(s.key.proto, s.key.addr, s.key.port));
        for r in s.reals.iter().filter(|r| r.method == ForwardMethod::Nat) {
            nat_reals.insert(Endpoint::new(s.key.proto, r.addr, r.port));
        }
    }
    (vips, nat_reals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(ifindex: u32, mac: MacAddr) -> Interface {
        Interface {
            name: format!("eth{ifindex}"),
            ifindex,
            mac,
            mtu: 1500,
            up: true,
            addrs: Vec::new(),
            rx_queues: 1,
        }
    }

    #[test]
    fn an_interface_answers_to_its_mac_and_the_virtual_macs_on_it_only() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (v4, v6, elsewhere) = (
            [0, 0, 0x5e, 0, 1, 51],
            [0, 0, 0x5e, 0, 2, 51],
            [0, 0, 0x5e, 0, 1, 52],
        );
        let vmacs = [(3, v4), (3, v6), (4, elsewhere)];
        let want: HashSet<OwnMac> = [a, v4, v6].into_iter().map(OwnMac::new).collect();
        assert_eq!(own_macs(&iface(3, a), &vmacs), want);
        let want: HashSet<OwnMac> = [b].into_iter().map(OwnMac::new).collect();
        assert_eq!(own_macs(&iface(5, b), &vmacs), want);
    }
}
