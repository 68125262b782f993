//! Weighted round-robin (`wrr`): IPVS's walk down from the largest weight in
//! steps of the weights' gcd, precomputed.
//!
//! IPVS keeps a current weight `cw` (starting at `mw = max - (gcd - 1)`) and
//! walks the list picking every server whose weight is at least `cw`; at the
//! end of the list `cw` drops by the gcd, and below 1 it starts again at `mw`.
//! One period of that walk visits each server `weight / gcd` times. Levels of
//! `cw` between two consecutive distinct weights pick the same servers, so the
//! period is stored as at most one *band* per distinct weight: the servers
//! eligible in it (list order) and how many levels repeat them. A pick takes
//! a position with one atomic `fetch_add` and finds it with a binary search
//! over the bands: memory O(servers²) at worst, independent of the weights.
//!
//! A quiesced or overloaded server is skipped by going on along the walk,
//! exactly as IPVS does, and the worker's position ([`Cursors`]: one per
//! worker) moves past the server chosen (best effort where threads share a
//! stripe). Each worker walks the period by itself. A rebuild starts the
//! walk afresh at `mw` (IPVS keeps `cw` across a real-server change; the
//! difference lasts at most one period).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{usable, Cursors};
use crate::service::{RealLoads, RealServer};

#[derive(Debug)]
struct Band {
    /// First position of the period in this band.
    start: u64,
    /// Range of `members` holding this band's servers.
    first: u32,
    len: u32,
}

#[derive(Debug)]
pub struct Wrr {
    bands: Box<[Band]>,
    members: Box<[u32]>,
    /// Positions in one period: the sum of `weight / gcd`.
    period: u64,
    /// Each worker's position.
    cursors: Cursors,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Wrr {
    pub fn new(reals: &[RealServer]) -> Wrr {
        let weights: Vec<u64> = reals.iter().map(|r| u64::from(r.weight)).collect();
        let di = weights
            .iter()
            .copied()
            .filter(|&w| w > 0)
            .fold(0, gcd)
            .max(1);
        let max = weights.iter().copied().max().unwrap_or(0);
        let mut bands = Vec::new();
        let mut members = Vec::new();
        let mut period = 0u64;
        if max > 0 {
            let mw = max - (di - 1);
            let mut distinct: Vec<u64> = weights.iter().copied().filter(|&w| w > 0).collect();
            distinct.sort_unstable_by(|a, b| b.cmp(a));
            distinct.dedup();
            for (j, &hi) in distinct.iter().enumerate() {
                let lo = distinct.get(j + 1).copied().unwrap_or(0);
                // Levels cw = mw - k*di with lo < cw <= hi.
                let k_min = if mw > hi { (mw - hi).div_ceil(di) } else { 0 };
                if mw <= lo {
                    continue;
                }
                let k_max = (mw - lo - 1) / di;
                if k_max < k_min {
                    continue;
                }
                let reps = k_max - k_min + 1;
                let first = members.len() as u32;
                members.extend(
                    weights
                        .iter()
                        .enumerate()
                        .filter(|&(_, &w)| w >= hi)
                        .map(|(i, _)| i as u32),
                );
                let len = members.len() as u32 - first;
                bands.push(Band {
                    start: period,
                    first,
                    len,
                });
                period += reps * u64::from(len);
            }
        }
        Wrr {
            bands: bands.into_boxed_slice(),
            members: members.into_boxed_slice(),
            period,
            cursors: Cursors::default(),
        }
    }

    /// The band holding position `p` (< period) and the band's end.
    #[inline]
    fn band_of(&self, p: u64) -> (usize, u64) {
        let b = self.bands.partition_point(|band| band.start <= p) - 1;
        let end = self.bands.get(b + 1).map_or(self.period, |n| n.start);
        (b, end)
    }

    #[inline]
    fn member(&self, band: &Band, p: u64) -> usize {
        let offset = ((p - band.start) % u64::from(band.len)) as u32;
        self.members[(band.first + offset) as usize] as usize
    }

    pub fn schedule(&self, reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
        if self.period == 0 {
            return None;
        }
        let cursor = self.cursors.mine();
        let ticket = cursor.fetch_add(1, Ordering::Relaxed);
        let p = ticket % self.period;
        let (b, end) = self.band_of(p);
        let i = self.member(&self.bands[b], p);
        usable(i, reals, loads)
            .or_else(|| self.skip_from(reals, loads, (cursor, ticket), p, b, end))
    }

    /// Goes on along the walk from position `p` (whose server is unavailable)
    /// to the next available server: within a band, one cycle through its
    /// servers tells whether any is available, so each band is visited at
    /// most once before giving up.
    #[cold]
    fn skip_from(
        &self,
        reals: &[RealServer],
        loads: &RealLoads,
        (cursor, ticket): (&AtomicU64, u64),
        mut p: u64,
        mut b: usize,
        mut end: u64,
    ) -> Option<usize> {
        let mut travelled = 0u64;
        for _ in 0..=self.bands.len() {
            let band = &self.bands[b];
            let tries = u64::from(band.len).min(end - p);
            for t in 0..tries {
                let i = self.member(band, p + t);
                if usable(i, reals, loads).is_some() {
                    let next = ticket.wrapping_add(1);
                    let _ = cursor.compare_exchange(
                        next,
                        next.wrapping_add(travelled + t),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    return Some(i);
                }
            }
            travelled += end - p;
            b += 1;
            if b == self.bands.len() {
                b = 0;
            }
            p = self.bands[b].start;
            end = self.bands.get(b + 1).map_or(self.period, |n| n.start);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;
    use proptest::prelude::*;

    /// A pick moves only its own worker's position, skips included.
    #[test]
    fn each_worker_keeps_a_position_of_its_own() {
        use crate::service::counters::{stripe, STRIPES};
        let svc = service(SchedulerKind::Wrr, &[4, 3, 2]);
        let d = loads(3);
        let w = Wrr::new(&svc.reals);
        let picked: Vec<_> = (0..4).map(|_| w.schedule(&svc.reals, &d)).collect();
        assert_eq!(picked, [Some(0), Some(0), Some(1), Some(0)]);
        // The walk is A A B A B C ...: with B overloaded the fifth pick
        // walks on to C and moves this worker's position past it.
        set_overloaded(&d, 1, true);
        assert_eq!(w.schedule(&svc.reals, &d), Some(2));
        let mine = stripe();
        for i in 0..STRIPES {
            let want = if i == mine { 6 } else { 0 };
            assert_eq!(w.cursors.at(i), want, "stripe {i}");
        }
    }

    fn seq(weights: &[u32], n: u32) -> Vec<usize> {
        let svc = service(SchedulerKind::Wrr, weights);
        let d = loads(weights.len());
        let s = Scheduler::new(&svc);
        (0..n)
            .map(|k| s.schedule(&svc, &client_key(k), &d).unwrap())
            .collect()
    }

    #[test]
    fn weights_4_3_2_give_ipvs_order() {
        // cw=4: A; cw=3: A B; cw=2: A B C; cw=1: A B C; then again.
        let a = seq(&[4, 3, 2], 18);
        assert_eq!(a, [0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn gcd_steps_the_walk() {
        // gcd 2, mw = 6 - 1 = 5: cw=5: A; cw=3: A B; cw=1: A B C.
        assert_eq!(seq(&[6, 4, 2], 6), [0, 0, 1, 0, 1, 2]);
        // Equal weights are plain round-robin.
        assert_eq!(seq(&[100, 100, 100], 4), [0, 1, 2, 0]);
    }

    #[test]
    fn quiesced_servers_are_outside_the_walk() {
        assert_eq!(seq(&[2, 0, 1], 6), [0, 0, 2, 0, 0, 2]);
    }

    #[test]
    fn overloaded_servers_are_skipped_along_the_walk() {
        // Walk for 4,3,2 is A A B A B C A B C; with A overloaded IPVS yields
        // B B C B C, B B C B C ...
        let svc = service(SchedulerKind::Wrr, &[4, 3, 2]);
        let d = loads(3);
        set_overloaded(&d, 0, true);
        let s = Scheduler::new(&svc);
        let got: Vec<usize> = (0..10)
            .map(|k| s.schedule(&svc, &client_key(k), &d).unwrap())
            .collect();
        assert_eq!(got, [1, 1, 2, 1, 2, 1, 1, 2, 1, 2]);
    }

    #[test]
    fn a_long_band_of_one_overloaded_server_is_crossed_at_once() {
        // Weights 65535 and 1: the top band is 65534 levels of A alone.
        let svc = service(SchedulerKind::Wrr, &[65535, 1]);
        let d = loads(2);
        set_overloaded(&d, 0, true);
        let s = Scheduler::new(&svc);
        for k in 0..5 {
            assert_eq!(s.schedule(&svc, &client_key(k), &d), Some(1));
        }
    }

    #[test]
    fn bands_stay_small_for_large_weights() {
        let reals: Vec<_> = (0..64).map(|i| real(i, 65535 - i as u32)).collect();
        let w = Wrr::new(&reals);
        assert_eq!(w.bands.len(), 64);
        assert_eq!(w.period, (0..64u64).map(|i| 65535 - i).sum::<u64>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Over whole periods wrr is exact; over any 2000 picks each server's
        /// share is within 2 percentage points of weight / total (one period
        /// is at most 8 * 20 = 160 picks here, so a partial one moves a share
        /// by at most 160 / 2000 / 4 or so).
        #[test]
        fn distribution_follows_weights(weights in proptest::collection::vec(0u32..=20, 1..8)) {
            let total: u32 = weights.iter().sum();
            let svc = service(SchedulerKind::Wrr, &weights);
            let d = loads(weights.len());
            let s = Scheduler::new(&svc);
            let picks = 2000;
            let counts = histogram(&s, &svc, &d, picks);
            for (i, &w) in weights.iter().enumerate() {
                if total == 0 {
                    prop_assert_eq!(counts[i], 0);
                    continue;
                }
                let want = f64::from(w) / f64::from(total);
                let got = f64::from(counts[i]) / f64::from(picks);
                prop_assert!((want - got).abs() <= 0.02, "server {} weight {} share {} want {}", i, w, got, want);
            }
            if let crate::sched::Inner::Wrr(w) = &s.inner {
                // One full period is exactly weight/gcd picks each.
                let g = weights.iter().copied().filter(|&w| w > 0).fold(0u32, |a, b| gcd(u64::from(a), u64::from(b)) as u32).max(1);
                prop_assert_eq!(w.period, u64::from(total / g));
            }
        }
    }
}
