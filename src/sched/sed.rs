//! Shortest expected delay (`sed`): the available server with the smallest
//! `(active + 1) / weight`, the first in list order on a tie. Inactive
//! connections are not counted (IPVS's `ip_vs_sed_dest_overhead`).

use super::weighted_least;
use crate::service::{RealLoad, RealLoads, RealServer};

/// IPVS's sed/nq overhead: the delay a new connection would see.
fn overhead(counters: RealLoad<'_>) -> u64 {
    u64::from(counters.active()) + 1
}

pub fn schedule(reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
    weighted_least(reals, 0..reals.len(), loads, overhead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::SchedulerKind;

    #[test]
    fn expected_delay_decides() {
        let svc = service(SchedulerKind::Sed, &[1, 2, 3]);
        let d = loads(3);
        // All idle: 1/1, 1/2, 1/3: the heaviest wins (unlike wlc's first).
        assert_eq!(schedule(&svc.reals, &d), Some(2));
        set_conns(&d, 2, 2, 1000); // 3/3 = 1; inactive ignored
        assert_eq!(schedule(&svc.reals, &d), Some(1)); // 1/2
        set_conns(&d, 1, 1, 0); // 2/2 = 1: ties with 0 (1/1) and 2 (3/3)
        assert_eq!(schedule(&svc.reals, &d), Some(0));
    }
}
