//! Weighted random twos choices (`twos`): two servers are drawn at random
//! with probability proportional to weight, and the one with the smaller
//! `overhead / weight` (wlc's measure) gets the connection; on a tie the
//! first draw.
//!
//! As IPVS: each draw is uniform in `[0, total weight]` inclusive and walks
//! the available servers subtracting weights, so the first server gets one
//! extra chance in `total + 1`.
//!
//! Randomness without locks or per-thread state: the two draws are a mix of
//! the flow key's hash with a per-scheduler atomic counter (`fetch_add`,
//! relaxed), so retries of one flow draw differently and concurrent workers
//! never wait on each other. It is not cryptographic; a client cannot steer
//! its draw beyond choosing its own address and port, which only picks among
//! servers the weights already allow.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{addr_port_hash, available, conn_overhead, mix64};
use crate::packet::FlowKey;
use crate::service::{DestTable, RealServer};

#[derive(Debug, Default)]
pub struct Twos {
    counter: AtomicU64,
}

impl Twos {
    pub fn new() -> Twos {
        Twos::default()
    }

    fn draws(&self, key: &FlowKey) -> (u64, u64) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let seed = addr_port_hash(&key.src, key.sport) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let r1 = mix64(seed);
        (r1, mix64(r1 ^ 0x2545_f491_4f6c_dd1d))
    }

    pub fn schedule(
        &self,
        reals: &[RealServer],
        key: &FlowKey,
        dests: &DestTable,
    ) -> Option<usize> {
        let total: u64 = reals
            .iter()
            .filter(|r| available(r, dests).is_some())
            .map(|r| u64::from(r.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let (r1, r2) = self.draws(key);
        pick_two(reals, dests, r1 % (total + 1), r2 % (total + 1))
    }
}

/// The two draws `w1`, `w2` in `[0, total]`, then the better of the two.
fn pick_two(reals: &[RealServer], dests: &DestTable, w1: u64, w2: u64) -> Option<usize> {
    let mut w1 = Some(w1);
    let mut w2 = Some(w2);
    let mut c1: Option<(usize, u64, u32)> = None;
    let mut c2: Option<(usize, u64, u32)> = None;
    for (i, real) in reals.iter().enumerate() {
        let Some(counters) = available(real, dests) else {
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
    match (c1, c2) {
        (Some((i1, oh1, wt1)), Some((i2, oh2, wt2))) => {
            if u128::from(wt2) * u128::from(oh1) > u128::from(wt1) * u128::from(oh2) {
                Some(i2)
            } else {
                Some(i1)
            }
        }
        (Some((i, _, _)), None) | (None, Some((i, _, _))) => Some(i),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;

    #[test]
    fn draws_walk_the_weights_like_ipvs() {
        let svc = service(SchedulerKind::Twos, &[2, 0, 3]);
        let d = dests(3);
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
    fn idle_servers_share_by_weight() {
        // With equal load the pick is the first draw, so shares follow
        // IPVS's draw: 2/5, 1/5, 2/5 here (the first server's extra chance), within 3 points.
        let svc = service(SchedulerKind::Twos, &[1, 1, 2]);
        let d = dests(3);
        let s = Scheduler::new(&svc);
        let counts = histogram(&s, &svc, &d, 5000);
        let share = |i: usize| f64::from(counts[i]) / 5000.0;
        assert!((share(0) - 0.4).abs() < 0.03, "{counts:?}");
        assert!((share(1) - 0.2).abs() < 0.03, "{counts:?}");
        assert!((share(2) - 0.4).abs() < 0.03, "{counts:?}");
    }
}
