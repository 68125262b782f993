//! Source hashing (`sh`): the client address (and with `sh-port` its source
//! port) picks one of IPVS's 256 buckets; the bucket names the server.
//!
//! The table is filled as IPVS fills it: servers in list order, each taking
//! `weight` consecutive buckets (a quiesced server still takes one), round
//! and round until all 256 are assigned. So weights are bucket counts, and
//! large weights let the first servers take the whole table, as in IPVS.
//! The hash is IPVS's: `hash_32(port + fold(addr), 8)`.
//!
//! If the hashed server is unavailable the connection is refused, or with
//! `sh-fallback` IPVS's walk around the table from the hashed bucket finds
//! the next available one (deterministic, so a client still sticks).

use super::{hashed_port, ipvs_fold, usable};
use crate::packet::FlowKey;
use crate::service::{RealLoads, RealServer, VirtualService};

/// IPVS's `IP_VS_SH_TAB_BITS` default.
const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_MASK: u32 = TAB_SIZE as u32 - 1;
const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct Sh {
    buckets: [u32; TAB_SIZE],
}

/// Linux's `hash_32`: multiplicative hashing by the golden ratio.
pub(super) fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(0x61c8_8647) >> (32 - bits)
}

fn hashkey(key: &FlowKey, port: u16, offset: u32) -> usize {
    let h = hash_32(u32::from(port).wrapping_add(ipvs_fold(&key.src)), TAB_BITS);
    (offset.wrapping_add(h) & TAB_MASK) as usize
}

impl Sh {
    pub fn new(reals: &[RealServer]) -> Sh {
        let mut buckets = [EMPTY; TAB_SIZE];
        if !reals.is_empty() {
            let mut p = 0;
            let mut taken = 0;
            for b in buckets.iter_mut() {
                *b = p as u32;
                taken += 1;
                if taken >= reals[p].weight {
                    p = (p + 1) % reals.len();
                    taken = 0;
                }
            }
        }
        Sh { buckets }
    }

    pub fn schedule(
        &self,
        svc: &VirtualService,
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        let port = hashed_port(key, svc.sched_flags.port);
        let ihash = hashkey(key, port, 0);
        if self.buckets[ihash] == EMPTY {
            return None;
        }
        if let Some(i) = usable(self.buckets[ihash] as usize, &svc.reals, loads) {
            return Some(i);
        }
        if !svc.sched_flags.fallback {
            return None;
        }
        self.fallback(&svc.reals, key, port, ihash, loads)
    }

    #[cold]
    fn fallback(
        &self,
        reals: &[RealServer],
        key: &FlowKey,
        port: u16,
        ihash: usize,
        loads: &RealLoads,
    ) -> Option<usize> {
        (0..TAB_SIZE).find_map(|offset| {
            let roffset = ((offset + ihash) % TAB_SIZE) as u32;
            let bucket = hashkey(key, port, roffset);
            usable(self.buckets[bucket] as usize, reals, loads)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;
    use proptest::prelude::*;

    #[test]
    fn table_is_filled_by_weight_in_list_order() {
        let svc = service(SchedulerKind::Sh, &[2, 1, 0]);
        let sh = Sh::new(&svc.reals);
        assert_eq!(&sh.buckets[..8], &[0, 0, 1, 2, 0, 0, 1, 2]);
        let svc = service(SchedulerKind::Sh, &[200, 100]);
        let sh = Sh::new(&svc.reals);
        assert_eq!(sh.buckets.iter().filter(|&&b| b == 0).count(), 200);
        assert_eq!(sh.buckets[255], 1);
    }

    #[test]
    fn hash_is_ipvs_hash_32() {
        // 198.51.100.7 = 0xc6336407; * 0x61c88647 mod 2^32 = 0xab1467f1 -> top
        // 8 bits 0xab.
        let key = client_key(7);
        assert_eq!(hash_32(0xc633_6407, 8), 0xab);
        assert_eq!(hashkey(&key, 0, 0), 0xab);
        assert_eq!(hashkey(&key, 0, 0xab), 0x56);
    }

    #[test]
    fn unavailable_server_refuses_without_fallback_and_moves_with_it() {
        let mut svc = service(SchedulerKind::Sh, &[1, 1, 1, 1]);
        let d = loads(4);
        let key = client_key(7); // bucket 171 -> server 171 % 4 = 3
        let s = Scheduler::new(&svc);
        assert_eq!(s.schedule(&svc, &key, &d), Some(3));
        set_overloaded(&d, 3, true);
        assert_eq!(s.schedule(&svc, &key, &d), None);
        svc.sched_flags.fallback = true;
        // IPVS's walk: roffset = 171 + offset, bucket = (171 + roffset) & 255
        // = 86 -> server 2.
        assert_eq!(s.schedule(&svc, &key, &d), Some(2));
        set_overloaded(&d, 2, true);
        // offset 1: bucket 87 -> server 3, overloaded; offset 2: 88 -> 0.
        assert_eq!(s.schedule(&svc, &key, &d), Some(0));
    }

    #[test]
    fn port_flag_hashes_the_source_port() {
        let mut svc = service(SchedulerKind::Sh, &[1; 8]);
        let d = loads(8);
        let s = Scheduler::new(&svc);
        let mut key = client_key(7);
        let mut seen = std::collections::HashSet::new();
        for p in 0..64 {
            key.sport = 1024 + p;
            seen.insert(s.schedule(&svc, &key, &d));
        }
        assert_eq!(seen.len(), 1, "without sh-port the port is ignored");
        svc.sched_flags.port = true;
        seen.clear();
        for p in 0..64 {
            key.sport = 1024 + p;
            seen.insert(s.schedule(&svc, &key, &d));
        }
        assert!(seen.len() > 4);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// While the set is unchanged a client always gets the same server,
        /// with or without the flags, and from any scheduler built for it.
        #[test]
        fn same_key_same_server(
            weights in proptest::collection::vec(1u32..=5, 1..12),
            bits in any::<u128>(),
            sport in any::<u16>(),
            port in any::<bool>(),
            fallback in any::<bool>(),
        ) {
            let mut svc = service(SchedulerKind::Sh, &weights);
            svc.sched_flags.port = port;
            svc.sched_flags.fallback = fallback;
            let d = loads(weights.len());
            let key = client_key_v6(bits, sport);
            let first = Scheduler::new(&svc).schedule(&svc, &key, &d);
            prop_assert!(first.is_some());
            let s = Scheduler::new(&svc);
            for _ in 0..4 {
                prop_assert_eq!(s.schedule(&svc, &key, &d), first);
            }
        }
    }
}
