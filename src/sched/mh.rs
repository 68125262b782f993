//! Maglev hashing (`mh`): a lookup table of prime size, filled on the
//! control plane from each server's permutation of the slots, indexed on the
//! hot path by a hash of the client address (and with `mh-port` its source
//! port).
//!
//! The table is Katran's weighted Maglev rather than IPVS's fill (which gives
//! a server `weight / gcd` consecutive turns): every round each server adds
//! its weight to a running sum and claims its next preferred free slot each
//! time the sum reaches the largest weight. Shares follow weights closely
//! and removing or adding one of N servers moves about 1/N of the slots.
//!
//! Every director must build the same table from the same servers (ECMP in
//! front of several directors relies on it), so the permutations hash the
//! server's address and port with a fixed function, and servers are filled
//! in (address, port) order, not list order.
//!
//! Size: the smallest prime that is at least 100 × the number of servers,
//! and at least [`MH_DEFAULT_TABLE_SIZE`] (65537, Katran's default; IPVS's
//! compile-time default is 4093). Quiesced servers take no slots (IPVS keeps
//! their slots from the last weight and refuses, or with `mh-fallback`
//! rehashes, the keys that land there; xvs has no last weight, so a quiesced
//! server is out of the table and its keys move as if it were removed).
//!
//! An overloaded hashed server refuses the connection, or with `mh-fallback`
//! the key is rehashed with salts as IPVS rehashes it with offsets (up to 8
//! tries instead of IPVS's table size, to bound the hot path), then the
//! servers are tried in (address, port) order starting from the key's slot:
//! deterministic, so a client keeps its server while the set and the
//! overloads stay the same, and every director agrees.

use std::fmt;

use super::{addr_port_hash, hashed_port, mix64, usable};
use crate::packet::FlowKey;
use crate::service::{RealLoads, RealServer, VirtualService};

/// The table size for up to 655 servers.
pub const MH_DEFAULT_TABLE_SIZE: usize = 65537;
/// Slots per server at least.
const SLOTS_PER_SERVER: usize = 100;
/// Rehashes tried with `mh-fallback` before scanning the servers in order.
const FALLBACK_REHASHES: u64 = 8;
const EMPTY: u16 = u16::MAX;
const SEED_OFFSET: u64 = 0x5851_f42d_4c95_7f2d;
const SEED_SKIP: u64 = 0x1405_7b7e_f767_814f;

pub struct Mh {
    /// Slot → index into the service's reals; empty when no server has a
    /// weight.
    table: Box<[u16]>,
    /// The servers in the table, in (address, port) order.
    order: Box<[u16]>,
}

impl fmt::Debug for Mh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mh")
            .field("table_size", &self.table.len())
            .field("servers", &self.order.len())
            .finish()
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The table size for `servers` servers.
pub fn table_size(servers: usize) -> usize {
    let mut n = (servers * SLOTS_PER_SERVER).max(MH_DEFAULT_TABLE_SIZE);
    while !is_prime(n) {
        n += 1;
    }
    n
}

impl Mh {
    pub fn new(reals: &[RealServer]) -> Mh {
        let servers = reals.iter().filter(|r| r.weight > 0).count();
        Mh::with_size(reals, table_size(servers))
    }

    /// A table of `size` slots (`size` must be prime for every server's
    /// permutation to visit every slot).
    pub fn with_size(reals: &[RealServer], size: usize) -> Mh {
        // Index EMPTY is the empty marker, so servers past it stay out.
        let mut order: Vec<u16> = (0..reals.len().min(usize::from(EMPTY)))
            .filter(|&i| reals[i].weight > 0)
            .map(|i| i as u16)
            .collect();
        order.sort_by_key(|&i| (reals[usize::from(i)].addr, reals[usize::from(i)].port));
        if order.is_empty() || size < 2 {
            return Mh {
                table: Box::new([]),
                order: order.into_boxed_slice(),
            };
        }

        let size64 = size as u64;
        let mut perm: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| {
                let r = &reals[usize::from(i)];
                let h = addr_port_hash(&r.addr, r.port);
                let offset = mix64(h ^ SEED_OFFSET) % size64;
                let skip = mix64(h ^ SEED_SKIP) % (size64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let weights: Vec<u64> = order
            .iter()
            .map(|&i| u64::from(reals[usize::from(i)].weight))
            .collect();
        let max_weight = weights.iter().copied().max().unwrap_or(1);
        let mut cum = vec![0u64; order.len()];
        let mut table = vec![EMPTY; size];
        let mut filled = 0;
        'fill: loop {
            for (s, &server) in order.iter().enumerate() {
                cum[s] += weights[s];
                if cum[s] < max_weight {
                    continue;
                }
                cum[s] -= max_weight;
                let (next, skip) = &mut perm[s];
                while table[*next as usize] != EMPTY {
                    *next = (*next + *skip) % size64;
                }
                table[*next as usize] = server;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Mh {
            table: table.into_boxed_slice(),
            order: order.into_boxed_slice(),
        }
    }

    fn slot(&self, key: &FlowKey, port: u16, offset: u64) -> usize {
        let h = addr_port_hash(&key.src, port);
        let h = if offset == 0 { h } else { mix64(h ^ offset) };
        (h % self.table.len() as u64) as usize
    }

    pub fn schedule(
        &self,
        svc: &VirtualService,
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let port = hashed_port(key, svc.sched_flags.port);
        let ihash = self.slot(key, port, 0);
        if let Some(i) = usable(usize::from(self.table[ihash]), &svc.reals, loads) {
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
        let server = |i: u16| usable(usize::from(i), reals, loads);
        (1..=FALLBACK_REHASHES)
            .find_map(|offset| server(self.table[self.slot(key, port, offset)]))
            .or_else(|| {
                let n = self.order.len();
                (0..n).find_map(|k| server(self.order[(ihash + k) % n]))
            })
    }

    /// The slot → server table.
    #[cfg(test)]
    fn table(&self) -> &[u16] {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;
    use proptest::prelude::*;

    /// A smaller prime than the default keeps debug-build property tests fast;
    /// disruption bounds scale with servers/slots, and 100 slots per server
    /// is what the production size guarantees too.
    const TEST_SIZE: usize = 4093;

    fn shares(mh: &Mh, n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &s in mh.table() {
            c[usize::from(s)] += 1;
        }
        c.iter()
            .map(|&x| x as f64 / mh.table().len() as f64)
            .collect()
    }

    #[test]
    fn sizes_are_prime_and_large_enough() {
        assert_eq!(table_size(1), 65537);
        assert_eq!(table_size(655), 65537);
        let big = table_size(1000);
        assert!(big >= 100_000 && is_prime(big));
        assert_eq!(big, 100_003);
    }

    #[test]
    fn default_table_is_full_and_even() {
        let svc = service(SchedulerKind::Mh, &[1; 16]);
        let mh = Mh::new(&svc.reals);
        assert_eq!(mh.table().len(), MH_DEFAULT_TABLE_SIZE);
        for s in shares(&mh, 16) {
            assert!((s - 1.0 / 16.0).abs() < 0.005, "share {s}");
        }
    }

    #[test]
    fn list_order_does_not_change_the_table() {
        let svc = service(SchedulerKind::Mh, &[1, 2, 3, 1, 1]);
        let mut rev = svc.clone();
        rev.reals.reverse();
        let a = Mh::with_size(&svc.reals, TEST_SIZE);
        let b = Mh::with_size(&rev.reals, TEST_SIZE);
        for (x, y) in a.table().iter().zip(b.table()) {
            assert_eq!(svc.reals[usize::from(*x)].id, rev.reals[usize::from(*y)].id);
        }
    }

    #[test]
    fn fallback_rehashes_deterministically() {
        let mut svc = service(SchedulerKind::Mh, &[1; 6]);
        let d = loads(6);
        let s = Scheduler::new(&svc);
        let key = client_key(42);
        let home = s.schedule(&svc, &key, &d).unwrap();
        set_overloaded(&d, home, true);
        assert_eq!(s.schedule(&svc, &key, &d), None);
        svc.sched_flags.fallback = true;
        let other = s.schedule(&svc, &key, &d).unwrap();
        assert_ne!(other, home);
        assert_eq!(s.schedule(&svc, &key, &d), Some(other));
        // Only one server left: the ordered scan finds it.
        for i in 0..6 {
            set_overloaded(&d, i, i != 3);
        }
        assert_eq!(s.schedule(&svc, &key, &d), Some(3));
        set_overloaded(&d, home, false);
        assert_eq!(s.schedule(&svc, &key, &d), Some(home));
    }

    /// Fraction of slots whose server (by id) differs between two tables.
    fn moved(a: &Mh, ar: &[RealServer], b: &Mh, br: &[RealServer]) -> f64 {
        let diff = a
            .table()
            .iter()
            .zip(b.table())
            .filter(|(x, y)| ar[usize::from(**x)].id != br[usize::from(**y)].id)
            .count();
        diff as f64 / a.table().len() as f64
    }

    #[test]
    fn default_size_disruption_is_under_one_percent_extra() {
        // 100 servers in the default 65537-slot table; measured extra
        // disruption is about 0.55 %.
        let svc = service(SchedulerKind::Mh, &[1; 100]);
        let mut less = svc.clone();
        less.reals.remove(37);
        let full = Mh::new(&svc.reals);
        let fewer = Mh::new(&less.reals);
        let removed = moved(&full, &svc.reals, &fewer, &less.reals);
        assert!(removed <= 0.01 + 0.01, "removing moved {removed}");
        let added = moved(&fewer, &less.reals, &full, &svc.reals);
        assert!(added <= 0.01 + 0.01, "adding moved {added}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Each server's share of the table is within 1.5 percentage points
        /// or 15 % (whichever is larger) of weight / total.
        #[test]
        fn shares_follow_weights(weights in proptest::collection::vec(0u32..=10, 1..12)) {
            let svc = service(SchedulerKind::Mh, &weights);
            let mh = Mh::with_size(&svc.reals, TEST_SIZE);
            let total: u32 = weights.iter().sum();
            if total == 0 {
                prop_assert!(mh.table().is_empty());
                return Ok(());
            }
            for (i, share) in shares(&mh, weights.len()).into_iter().enumerate() {
                let want = f64::from(weights[i]) / f64::from(total);
                prop_assert!((share - want).abs() <= (0.015f64).max(want * 0.15),
                    "server {} weight {} share {} want {}", i, weights[i], share, want);
            }
        }

        /// A key keeps its server while the set is unchanged.
        #[test]
        fn same_key_same_server(
            n in 1usize..20,
            bits in any::<u128>(),
            sport in any::<u16>(),
            port in any::<bool>(),
        ) {
            let mut svc = service(SchedulerKind::Mh, &vec![1; n]);
            svc.sched_flags.port = port;
            let d = loads(n);
            let key = client_key_v6(bits, sport);
            let a = Mh::with_size(&svc.reals, TEST_SIZE).schedule(&svc, &key, &d);
            let b = Mh::with_size(&svc.reals, TEST_SIZE).schedule(&svc, &key, &d);
            prop_assert!(a.is_some());
            prop_assert_eq!(a, b);
        }

        /// Removing one of N servers moves its own 1/N of the slots plus at
        /// most 3 % of the table; adding one back likewise. (Measured: at
        /// most 1.8 % extra for N < 20 with this 4093-slot table.)
        #[test]
        fn removing_or_adding_one_server_moves_about_one_nth(n in 3usize..20, gone in any::<prop::sample::Index>()) {
            let svc = service(SchedulerKind::Mh, &vec![1; n]);
            let gone = gone.index(n);
            let mut less = svc.clone();
            less.reals.remove(gone);
            let full = Mh::with_size(&svc.reals, TEST_SIZE);
            let fewer = Mh::with_size(&less.reals, TEST_SIZE);
            let bound = 1.0 / n as f64 + 0.03;
            let removed = moved(&full, &svc.reals, &fewer, &less.reals);
            prop_assert!(removed <= bound, "removing moved {} > {}", removed, bound);
            let added = moved(&fewer, &less.reals, &full, &svc.reals);
            prop_assert!(added <= bound, "adding moved {} > {}", added, bound);
        }
    }
}
