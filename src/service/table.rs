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
use std::net::{IpAddr, Ipv4Addr};

use super::{RealId, RealServer, ServiceKey, VirtualService};
use crate::packet::L4Proto;

/// Index of a service inside one [`ServiceTable`] snapshot.
pub type ServiceIndex = u32;

/// An immutable snapshot of every virtual service, indexed by service key
/// and by real-server id (built once, with the snapshot).
#[derive(Clone, Debug)]
pub struct ServiceTable {
    services: Vec<VirtualService>,
    /// The key index: an open-addressed table, at most half full, each
    /// service at the slot its key's [`word`] hashes to or the first free
    /// one after it. One multiply and one word comparison find an IPv4
    /// service; a miss usually meets an empty slot at once.
    by_key: Box<[Slot]>,
    /// `64 - log2(by_key.len())`: the hash's top bits name the slot.
    shift: u32,
    /// Real server id → (its service, its place in the service's list).
    by_real: HashMap<RealId, (ServiceIndex, usize)>,
}

/// One slot of the key index: a service's key in one word and its index.
#[derive(Clone, Copy, Debug)]
struct Slot {
    word: u64,
    index: ServiceIndex,
}

/// An empty slot's index; its word is 0, which no IPv4 key's is.
const EMPTY: ServiceIndex = ServiceIndex::MAX;

/// Up to this many real servers `real_position` scans a service's list.
const SCAN_MAX: usize = 8;

/// The multiplier of the key index's hash (Fibonacci hashing). Not keyed:
/// the keys are the operator's services, not the packets' choice.
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// Bit 56 of a key's word: set for an IPv4 key, whose word is the whole
/// key, clear for an IPv6 key, whose word is a fold of it.
const V4: u64 = 1 << 56;

/// An IPv4 key in one word: the address's bytes as they lie in memory, the
/// port and the protocol, and [`V4`]. Two IPv4 keys are equal exactly when
/// their words are.
#[inline(always)]
fn v4_word(proto: L4Proto, addr: Ipv4Addr, port: u16) -> u64 {
    u64::from(u32::from_ne_bytes(addr.octets())) | u64::from(port) << 32 | (proto as u64) << 48 | V4
}

/// A key's word: [`v4_word`] for an IPv4 key, a fold of the key without
/// [`V4`] for an IPv6 one (equal words then need the keys compared).
#[inline(always)]
fn word(key: &ServiceKey) -> u64 {
    match key.addr {
        IpAddr::V4(a) => v4_word(key.proto, a, key.port),
        IpAddr::V6(a) => {
            let b = a.to_bits();
            ((b as u64)
                ^ ((b >> 64) as u64).rotate_left(17)
                ^ u64::from(key.port) << 32
                ^ (key.proto as u64) << 48)
                & !V4
        }
    }
}

impl Default for ServiceTable {
    fn default() -> ServiceTable {
        ServiceTable::new(Vec::new())
    }
}

impl ServiceTable {
    pub fn new(services: Vec<VirtualService>) -> ServiceTable {
        let bits = (services.len() * 2)
            .max(16)
            .next_power_of_two()
            .trailing_zeros();
        let empty = Slot {
            word: 0,
            index: EMPTY,
        };
        let mut by_key = vec![empty; 1 << bits].into_boxed_slice();
        let mask = by_key.len() - 1;
        let shift = 64 - bits;
        let mut by_real = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            let w = word(&s.key);
            let mut at = (w.wrapping_mul(MUL) >> shift) as usize;
            loop {
                match by_key[at].index {
                    EMPTY => {
                        by_key[at] = Slot {
                            word: w,
                            index: i as ServiceIndex,
                        };
                        break;
                    }
                    // The first of two services with one key is the one found.
                    j if services[j as usize].key == s.key => break,
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
            shift,
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
        let w = word(key);
        let mask = self.by_key.len() - 1;
        let mut at = (w.wrapping_mul(MUL) >> self.shift) as usize;
        loop {
            let slot = self.by_key.get(at)?;
            if slot.index == EMPTY {
                return None;
            }
            if slot.word == w {
                let s = self.services.get(slot.index as usize)?;
                if s.key == *key {
                    return Some((slot.index, s));
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// [`ServiceTable::find`] for an IPv4 key given by its parts, as the
    /// fast path read them: the word compared alone (it is the whole key).
    #[inline(always)]
    pub fn find_v4(
        &self,
        proto: L4Proto,
        addr: Ipv4Addr,
        port: u16,
    ) -> Option<(ServiceIndex, &VirtualService)> {
        let w = v4_word(proto, addr, port);
        let mask = self.by_key.len() - 1;
        let mut at = (w.wrapping_mul(MUL) >> self.shift) as usize;
        loop {
            let slot = self.by_key.get(at)?;
            if slot.word == w {
                return Some((slot.index, self.services.get(slot.index as usize)?));
            }
            if slot.index == EMPTY {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Where real server `id` is in service `si`'s list, if it is there: a
    /// scan for a few real servers, the index for more.
    #[inline]
    pub fn real_position(&self, si: ServiceIndex, id: RealId) -> Option<usize> {
        let (j, _) = self.real_in(si, self.services.get(si as usize)?, id)?;
        Some(j)
    }

    /// Real server `id` in the service `svc` at `si` (what
    /// [`ServiceTable::find_v4`] returned), with its position there: the
    /// scan inline, the index for more real servers a call.
    #[inline(always)]
    pub fn real_in<'s>(
        &self,
        si: ServiceIndex,
        svc: &'s VirtualService,
        id: RealId,
    ) -> Option<(usize, &'s RealServer)> {
        debug_assert!(self.service(si).is_some_and(|s| std::ptr::eq(s, svc)));
        let reals = &svc.reals;
        if reals.len() <= SCAN_MAX {
            reals.iter().enumerate().find(|(_, r)| r.id == id)
        } else {
            let j = self.indexed_position(si, id)?;
            Some((j, reals.get(j)?))
        }
    }

    /// Real server `id`'s place in service `si` by the index.
    #[inline(never)]
    fn indexed_position(&self, si: ServiceIndex, id: RealId) -> Option<usize> {
        self.by_real
            .get(&id)
            .filter(|(i, _)| *i == si)
            .map(|&(_, j)| j)
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
            // The fast path's lookup agrees with `find` on every IPv4 key,
            // services and others alike.
            for k in &keys(n + 50) {
                if let IpAddr::V4(a) = k.addr {
                    let found = t.find_v4(k.proto, a, k.port).map(|(i, _)| i);
                    assert_eq!(found, t.find(k).map(|(i, _)| i), "{k:?}");
                }
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

    /// `real_in` finds a service's real server with its position, by the
    /// scan for a few real servers and by the index for more, and never
    /// one of another service; `real_position` agrees.
    #[test]
    fn a_real_server_is_found_in_its_own_service_by_scan_and_index() {
        let with_reals = |port: u16, ids: std::ops::Range<u32>| {
            let mut s = svc(L4Proto::Tcp, "192.0.2.1".parse().unwrap(), port);
            s.reals = ids
                .map(|i| RealServer {
                    id: RealId(i),
                    addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8)),
                    port: 80,
                    method: crate::service::ForwardMethod::Nat,
                    weight: 1,
                    upper_threshold: 0,
                    lower_threshold: 0,
                })
                .collect();
            s
        };
        // Three real servers (scanned) and twelve (the index).
        let t = ServiceTable::new(vec![with_reals(80, 0..3), with_reals(81, 3..15)]);
        for (si, ids) in [(0, 0..3), (1, 3..15)] {
            let s = t.service(si).unwrap();
            for (j, id) in ids.enumerate() {
                let (at, r) = t.real_in(si, s, RealId(id)).expect("its own real server");
                assert_eq!((at, r.id), (j, RealId(id)));
                assert_eq!(t.real_position(si, RealId(id)), Some(j));
            }
        }
        let (a, b) = (t.service(0).unwrap(), t.service(1).unwrap());
        assert!(t.real_in(0, a, RealId(5)).is_none());
        assert!(t.real_in(1, b, RealId(1)).is_none());
        assert!(t.real_in(1, b, RealId(99)).is_none());
        assert_eq!(t.real_position(2, RealId(1)), None);
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
