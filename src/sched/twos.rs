//! Weighted random twos choices (`twos`): two servers are drawn at random
//! with probability proportional to weight, and the one with the smaller
//! `overhead / weight` (wlc's measure) gets the connection; on a tie the
//! first draw.
//!
//! As IPVS: each draw is uniform in `[0, total weight]` inclusive and walks
//! the available servers subtracting weights, so the first server gets one
//! extra chance in `total + 1`.
//!
//! The draw uses weights summed when the scheduler is built (binary search,
//! O(log n)); a draw that lands on an overloaded server is drawn again, and
//! only if that keeps failing does IPVS's O(n) walk over the available
//! servers decide.
//!
//! Randomness without locks: the draws are a mix of the flow key's hash
//! with the worker's counter ([`Cursors`], `fetch_add`, relaxed), so
//! retries of one flow draw differently and concurrent workers never wait
//! on each other or write each other's lines. It is not cryptographic; a
//! client cannot steer its draw beyond choosing its own address and port,
//! which only picks among servers the weights already allow.

use std::sync::atomic::Ordering;

use super::{addr_port_hash, available, cmp_load, conn_overhead, mix64, Cursors};
use crate::packet::FlowKey;
use crate::service::{RealLoads, RealServer};

/// Draws per choice on the fast path before falling back to IPVS's walk over
/// the available servers only.
const REDRAWS: u64 = 4;

#[derive(Debug)]
pub struct Twos {
    /// Each worker's draw counter.
    counters: Cursors,
    /// Servers with a weight, in list order...
    servers: Box<[u32]>,
    /// ...and the running sum of their weights, for a binary-search draw.
    cumulative: Box<[u64]>,
}

/// A chosen server: index, overhead, weight.
type Choice = (usize, u64, u32);

impl Twos {
    pub fn new(reals: &[RealServer]) -> Twos {
        let servers: Vec<u32> = (0..reals.len() as u32)
            .filter(|&i| reals[i as usize].weight > 0)
            .collect();
        let cumulative = servers
            .iter()
            .scan(0u64, |sum, &i| {
                *sum += u64::from(reals[i as usize].weight);
                Some(*sum)
            })
            .collect();
        Twos {
            counters: Cursors::default(),
            servers: servers.into_boxed_slice(),
            cumulative,
        }
    }

    /// The first random word for this pick; later ones are mixes of it.
    fn seed(&self, key: &FlowKey) -> u64 {
        let n = self.counters.mine().fetch_add(1, Ordering::Relaxed);
        mix64(addr_port_hash(&key.src, key.sport) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// IPVS's weighted draw over every server with a weight: `r` in
    /// `[0, total]` lands on the first server whose running sum reaches it.
    fn draw(&self, reals: &[RealServer], loads: &RealLoads, r: u64) -> Option<Choice> {
        let total = *self.cumulative.last()?;
        let p = self.cumulative.partition_point(|&c| c < r % (total + 1));
        let i = *self.servers.get(p)? as usize;
        let real = reals.get(i)?;
        let c = available(real, loads)?;
        Some((i, conn_overhead(c), real.weight))
    }

    /// Fast path: both draws over the precomputed weights, an unavailable
    /// draw drawn again (with none overloaded this is exactly IPVS's draw;
    /// with some overloaded, a redraw is proportional to the weights of the
    /// others, as IPVS's draw over available servers is). If a choice stays
    /// unavailable after a few redraws, IPVS's own walk over the available
    /// servers decides.
    pub fn schedule(
        &self,
        reals: &[RealServer],
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        if self.servers.is_empty() {
            return None;
        }
        let mut r = self.seed(key);
        let mut c1 = None;
        let mut c2 = None;
        for _ in 0..REDRAWS {
            if c1.is_none() {
                c1 = self.draw(reals, loads, r);
            }
            r = mix64(r ^ 0x2545_f491_4f6c_dd1d);
            if c2.is_none() {
                c2 = self.draw(reals, loads, r);
            }
            if c1.is_some() && c2.is_some() {
                return better(c1, c2);
            }
            r = mix64(r ^ 0x6a09_e667_f3bc_c909);
        }
        self.slow_path(reals, loads, r)
    }

    #[cold]
    fn slow_path(&self, reals: &[RealServer], loads: &RealLoads, r: u64) -> Option<usize> {
        let total: u64 = reals
            .iter()
            .filter(|r| available(r, loads).is_some())
            .map(|r| u64::from(r.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let r2 = mix64(r ^ 0x2545_f491_4f6c_dd1d);
        pick_two(reals, loads, r % (total + 1), r2 % (total + 1))
    }
}

/// IPVS's final step: the second choice wins only with a strictly smaller
/// `overhead / weight`.
fn better(c1: Option<Choice>, c2: Option<Choice>) -> Option<usize> {
    match (c1, c2) {
        (Some((i1, oh1, wt1)), Some((i2, oh2, wt2))) => {
            if cmp_load(oh1, wt1, oh2, wt2).is_gt() {
                Some(i2)
            } else {
                Some(i1)
            }
        }
        (Some((i, _, _)), None) | (None, Some((i, _, _))) => Some(i),
        (None, None) => None,
    }
}

/// IPVS's walk: the draws `w1`, `w2` in `[0, total]` over the available
/// servers' weights, then the better of the two.
fn pick_two(reals: &[RealServer], loads: &RealLoads, w1: u64, w2: u64) -> Option<usize> {
    let mut w1 = Some(w1);
    let mut w2 = Some(w2);
    let mut c1: Option<Choice> = None;
    let mut c2: Option<Choice> = None;
    for (i, real) in reals.iter().enumerate() {
        let Some(counters) = available(real, loads) else {
            continue;
        };
        let w = u64::from(real.weight);
        for (left, choice) in [(&mut w1, &mut c1), (&mut w2, &mut c2)] {
            if let Some(l) = *left {
                if l <= w {
                    *choice = Some((i, conn_overhead(counters), real.weight));
                    *left = None;
                } else {
                    *left = Some(l - w);
                }
            }
        }
        if c1.is_some() && c2.is_some() {
            break;
        }
    }
    better(c1, c2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;

    /// A pick draws from its own worker's counter only.
    #[test]
    fn each_worker_draws_from_a_counter_of_its_own() {
        use crate::service::counters::{stripe, STRIPES};
        let svc = service(SchedulerKind::Twos, &[1, 2, 3]);
        let d = loads(3);
        let t = Twos::new(&svc.reals);
        for k in 0..5 {
            assert!(t.schedule(&svc.reals, &client_key(k), &d).is_some());
        }
        let mine = stripe();
        for i in 0..STRIPES {
            let want = if i == mine { 5 } else { 0 };
            assert_eq!(t.counters.at(i), want, "stripe {i}");
        }
    }

    #[test]
    fn draws_walk_the_weights_like_ipvs() {
        let svc = service(SchedulerKind::Twos, &[2, 0, 3]);
        let d = loads(3);
        // Total 5; draws 0..=2 land on 0 (one extra), 3..=5 on 2.
        for (w, want) in [(0, 0), (2, 0), (3, 2), (5, 2)] {
            assert_eq!(pick_two(&svc.reals, &d, w, w), Some(want), "draw {w}");
        }
        // Two different servers: the lower overhead/weight wins.
        set_conns(&d, 0, 1, 0); // 256/2 = 128
        set_conns(&d, 2, 1, 0); // 256/3 < 128
        assert_eq!(pick_two(&svc.reals, &d, 0, 4), Some(2));
        assert_eq!(pick_two(&svc.reals, &d, 4, 0), Some(2));
        set_conns(&d, 2, 2, 0); // 512/3 > 128
        assert_eq!(pick_two(&svc.reals, &d, 4, 0), Some(0));
        // A tie keeps the first draw.
        set_conns(&d, 0, 2, 0); // 512/2 = 256
        set_conns(&d, 2, 3, 0); // 768/3 = 256
        assert_eq!(pick_two(&svc.reals, &d, 4, 0), Some(2));
        assert_eq!(pick_two(&svc.reals, &d, 0, 4), Some(0));
    }

    #[test]
    fn fast_draw_matches_ipvs_walk() {
        let svc = service(SchedulerKind::Twos, &[2, 0, 3, 1]);
        let d = loads(4);
        let t = Twos::new(&svc.reals);
        for r in 0..=6 {
            let fast = t.draw(&svc.reals, &d, r).map(|c| c.0);
            assert_eq!(fast, pick_two(&svc.reals, &d, r, r), "draw {r}");
        }
    }

    #[test]
    fn overloaded_draws_are_drawn_again() {
        let svc = service(SchedulerKind::Twos, &[5, 1, 5]);
        let d = loads(3);
        set_overloaded(&d, 0, true);
        set_overloaded(&d, 2, true);
        let s = Scheduler::new(&svc);
        for n in 0..100 {
            assert_eq!(s.schedule(&svc, &client_key(n), &d), Some(1));
        }
    }

    #[test]
    fn idle_servers_share_by_weight() {
        // With equal load the pick is the first draw, so shares follow
        // IPVS's draw: 2/5, 1/5, 2/5 here (the first server's extra chance), within 3 points.
        let svc = service(SchedulerKind::Twos, &[1, 1, 2]);
        let d = loads(3);
        let s = Scheduler::new(&svc);
        let counts = histogram(&s, &svc, &d, 5000);
        let share = |i: usize| f64::from(counts[i]) / 5000.0;
        assert!((share(0) - 0.4).abs() < 0.03, "{counts:?}");
        assert!((share(1) - 0.2).abs() < 0.03, "{counts:?}");
        assert!((share(2) - 0.4).abs() < 0.03, "{counts:?}");
    }
}
