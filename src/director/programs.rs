//! The steering programs: one XDP program per director interface, and the
//! maps that decide which frames they hand to xvs (`services`: every
//! virtual service; `nat_reals`: every NAT real server's endpoint, whose
//! answers come back through the director; `local_addrs`: the host's own
//! addresses, whose traffic stays with the kernel).
//!
//! # Contract
//! - [`Programs::attach`] loads and attaches one program per interface, in
//!   the interfaces' order; if one fails, those attached before it are
//!   detached again (dropping a [`SteeringProgram`] detaches it).
//! - The maps change only through [`Programs::sync_services`] and
//!   [`Programs::sync_local_addrs`], each making every program's maps equal
//!   to the wanted set. The director calls `sync_services` only after the
//!   workers have the snapshot that knows the services
//!   ([`super::publish`]).
//! - [`Programs::detach`] detaches them all; only after the workers (and
//!   their sockets) have stopped.

use std::collections::HashSet;

use super::{err, DirectorError};
use crate::neigh::netlink::{self, Interface};
use crate::service::{ForwardMethod, ServiceTable};
use crate::xsk::prog::{Endpoint, LocalAddr, SteeringProgram, XdpMode};

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

    /// Detaches every program.
    pub fn detach(&mut self) {
        self.programs.clear();
    }
}

/// The steering program's `services` and `nat_reals` sets for `services`:
/// every (protocol, VIP, port), and every NAT real server's (protocol,
/// address, port).
pub(crate) fn steered_endpoints(services: &ServiceTable) -> (HashSet<Endpoint>, HashSet<Endpoint>) {
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
