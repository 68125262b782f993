//! Weighted least-connection (`wlc`, ipvsadm's default): the available
//! server with the smallest `(active * 256 + inactive) / weight`, the first in
//! list order on a tie.

use super::{conn_overhead, weighted_least};
use crate::service::{RealLoads, RealServer};

pub fn schedule(reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
    weighted_least(reals, 0..reals.len(), loads, conn_overhead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::{RealId, SchedulerKind};
    use proptest::prelude::*;

    #[test]
    fn overhead_is_divided_by_weight() {
        let svc = service(SchedulerKind::Wlc, &[1, 3, 2]);
        let d = loads(3);
        assert_eq!(schedule(&svc.reals, &d), Some(0), "all idle: first");
        set_conns(&d, 0, 1, 0); // 256/1
        set_conns(&d, 1, 3, 0); // 768/3 = 256: tie with 0, not better
        set_conns(&d, 2, 1, 0); // 256/2 = 128
        assert_eq!(schedule(&svc.reals, &d), Some(2));
        set_conns(&d, 2, 2, 1); // 513/2 = 256.5
        assert_eq!(schedule(&svc.reals, &d), Some(0));
        set_conns(&d, 1, 2, 255); // 767/3 < 256
        assert_eq!(schedule(&svc.reals, &d), Some(1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Connections that stay open spread in proportion to weight: after
        /// `P` picks, each holding one active connection, every server's
        /// count lies in `[P*w/T - (n-1), P*w/T + 1]`. That is the exact
        /// bound of wlc's greedy rule: a server is only picked while its
        /// `active / weight` is the lowest, so none gets more than one ahead.
        #[test]
        fn distribution_follows_weights(weights in proptest::collection::vec(0u32..=50, 1..10)) {
            let svc = service(SchedulerKind::Wlc, &weights);
            let d = loads(weights.len());
            let total: u32 = weights.iter().sum();
            let picks = 1000u32;
            for _ in 0..picks {
                match schedule(&svc.reals, &d) {
                    Some(i) => {
                        d.get(RealId(i as u32)).unwrap().opened(true);
                    }
                    None => prop_assert_eq!(total, 0),
                }
            }
            if total > 0 {
                for (i, &w) in weights.iter().enumerate() {
                    let got = f64::from(d.get(RealId(i as u32)).unwrap().active());
                    let want = f64::from(picks) * f64::from(w) / f64::from(total);
                    let slack = (weights.len() - 1) as f64;
                    prop_assert!(got <= want + 1.0 && got >= want - slack, "server {} weight {} got {} want {}", i, w, got, want);
                }
            }
        }
    }
}
