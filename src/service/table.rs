//! The immutable snapshot of every virtual service that workers read.
//!
//! The control plane builds a new [`ServiceTable`] for every change
//! ([`super::ServiceModel::snapshot`]) and publishes it; workers only read
//! it, and find a packet's service and a connection's real server in it
//! without allocating or locking. It is the scheduling view of the model
//! ([`super::ServiceModel::view`]): a real server's `weight` here is the
//! weight it schedules with, the one the operator gave it (or a dynamic
//! check), or 0 while its [`super::Health`] is down (no new connections,
//! its established ones go on, as with weight 0); a down server its
//! service removes is not here, a sorry server in use is.

use std::collections::HashMap;

use super::{RealId, RealServer, ServiceKey, VirtualService};

/// Index of a service inside one [`ServiceTable`] snapshot.
pub type ServiceIndex = u32;

/// An immutable snapshot of every virtual service, indexed by service key
/// and by real-server id (built once, with the snapshot).
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    services: Vec<VirtualService>,
    /// The key index: an open-addressed table of `service index + 1` (0 is
    /// empty), at most half full, at the slot [`key_hash`] names or the
    /// first free one after it. One multiply and, for a service packet,
    /// one key comparison find a service; a miss usually meets an empty
    /// slot at once.
    by_key: Box<[u32]>,
    /// Real server id → (its service, its place in the service's list).
    by_real: HashMap<RealId, (ServiceIndex, usize)>,
}

/// Up to this many real servers `real_position` scans a service's list.
const SCAN_MAX: usize = 8;

/// The key index's hash: the key's bits folded into one word and
/// multiplied (Fibonacci hashing); the slot is its top bits. Not keyed:
/// the keys are the operator's services, not the packets' choice.
#[inline(always)]
fn key_hash(key: &ServiceKey) -> u64 {
    let addr = match key.addr {
        std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => {
            let b = u128::from(a);
            (b as u64) ^ ((b >> 64) as u64).rotate_left(17) ^ 1 << 63
        }
    };
    (addr ^ u64::from(key.port) << 32 ^ (key.proto as u64) << 48)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl ServiceTable {
    pub fn new(services: Vec<VirtualService>) -> ServiceTable {
        let bits = (services.len() * 2)
            .max(16)
            .next_power_of_two()
            .trailing_zeros();
        let mut by_key = vec![0u32; 1 << bits].into_boxed_slice();
        let mask = by_key.len() - 1;
        let mut by_real = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            let mut at = (key_hash(&s.key) >> (64 - bits)) as usize;
            loop {
                match by_key[at] {
                    0 => {
                        by_key[at] = i as u32 + 1;
                        break;
                    }
                    // The first of two services with one key is the one found.
                    j if services[j as usize - 1].key == s.key => break,
                    _ => at = (at + 1) & mask,
                }
            }
            for (j, r) in s.reals.iter().enumerate() {
                by_real.entry(r.id).or_insert((i as ServiceIndex, j));
            }
        }
        ServiceTable {
            services,
            by_key,
            by_real,
        }
    }

    pub fn services(&self) -> &[VirtualService] {
        &self.services
    }

    pub fn service(&self, index: ServiceIndex) -> Option<&VirtualService> {
        self.services.get(index as usize)
    }

    /// The service a packet to `(proto, addr, port)` belongs to.
    #[inline]
    pub fn find(&self, key: &ServiceKey) -> Option<(ServiceIndex, &VirtualService)> {
        let mask = self.by_key.len().checked_sub(1)?;
        let bits = self.by_key.len().trailing_zeros();
        let mut at = (key_hash(key) >> (64 - bits)) as usize;
        loop {
            let i = (*self.by_key.get(at)? as usize).checked_sub(1)?;
            let s = self.services.get(i)?;
            if s.key == *key {
                return Some((i as ServiceIndex, s));
            }
            at = (at + 1) & mask;
        }
    }

    /// Where real server `id` is in service `si`'s list, if it is there: a
    /// scan for a few real servers, the index for more.
    #[inline]
    pub fn real_position(&self, si: ServiceIndex, id: RealId) -> Option<usize> {
        let reals = &self.services.get(si as usize)?.reals;
        if reals.len() <= SCAN_MAX {
            reals.iter().position(|r| r.id == id)
        } else {
            self.by_real
                .get(&id)
                .filter(|(i, _)| *i == si)
                .map(|&(_, j)| j)
        }
    }

    /// The real server with this id, and the service it belongs to.
    pub fn real(&self, id: RealId) -> Option<(ServiceIndex, &RealServer)> {
        let &(i, j) = self.by_real.get(&id)?;
        Some((i, self.services.get(i as usize)?.reals.get(j)?))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::packet::L4Proto;
    use crate::service::{SchedFlags, SchedulerKind};

    fn svc(proto: L4Proto, addr: IpAddr, port: u16) -> VirtualService {
        VirtualService {
            key: ServiceKey { proto, addr, port },
            scheduler: SchedulerKind::Rr,
            sched_flags: SchedFlags::default(),
            persistence: None,
            reals: vec![],
        }
    }

    fn keys(n: u16) -> Vec<ServiceKey> {
        let mut keys = Vec::new();
        for k in 0..n {
            let v4: IpAddr = format!("192.0.2.{}", k % 7).parse().unwrap();
            let v6: IpAddr = format!("2001:db8::{:x}", k % 5).parse().unwrap();
            for (proto, addr) in [(L4Proto::Tcp, v4), (L4Proto::Udp, v6)] {
                keys.push(ServiceKey {
                    proto,
                    addr,
                    port: 80 + k,
                });
            }
        }
        keys
    }

    #[test]
    fn find_by_key_in_tables_of_every_size() {
        for n in [0u16, 1, 3, 8, 9, 100, 1000] {
            let all = keys(n);
            let t = ServiceTable::new(all.iter().map(|k| svc(k.proto, k.addr, k.port)).collect());
            for (i, k) in all.iter().enumerate() {
                let (si, s) = t.find(k).expect("every service is found");
                assert_eq!((si as usize, s.key), (i, *k));
            }
            for k in keys(n + 50).iter().skip(all.len()) {
                assert!(t.find(k).is_none(), "{k:?} is no service");
            }
            // Same address and port, other protocol: another key.
            for k in &all {
                let other = ServiceKey {
                    proto: L4Proto::Icmp,
                    ..*k
                };
                assert!(t.find(&other).is_none());
            }
        }
        assert!(ServiceTable::default().find(&keys(1)[0]).is_none());
    }

    #[test]
    fn the_first_of_two_services_with_one_key_is_found() {
        let k = keys(1)[0];
        let mut a = svc(k.proto, k.addr, k.port);
        a.scheduler = SchedulerKind::Wrr;
        let b = svc(k.proto, k.addr, k.port);
        let t = ServiceTable::new(vec![a, b]);
        let (si, s) = t.find(&k).unwrap();
        assert_eq!((si, s.scheduler), (0, SchedulerKind::Wrr));
    }
}
