//! Least-connection (`lc`): the available server with the smallest overhead
//! `active * 256 + inactive`, the first one in list order on a tie. Weights
//! only matter as quiescing (0 = never picked), as in IPVS.

use super::{available, conn_overhead};
use crate::service::{RealLoads, RealServer};

pub fn schedule(reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for (i, real) in reals.iter().enumerate() {
        let Some(counters) = available(real, loads) else {
            continue;
        };
        let oh = conn_overhead(counters);
        if least.is_none_or(|(_, loh)| oh < loh) {
            least = Some((i, oh));
        }
    }
    least.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::SchedulerKind;

    #[test]
    fn picks_the_smallest_overhead_first_on_ties() {
        let svc = service(SchedulerKind::Lc, &[1, 100, 1]);
        let d = loads(3);
        assert_eq!(schedule(&svc.reals, &d), Some(0));
        // One active (256) outweighs 255 inactive.
        set_conns(&d, 0, 1, 0);
        set_conns(&d, 1, 0, 255);
        set_conns(&d, 2, 0, 256);
        assert_eq!(schedule(&svc.reals, &d), Some(1));
        set_conns(&d, 1, 0, 257);
        assert_eq!(schedule(&svc.reals, &d), Some(0));
        // Weight does not scale lc.
        set_conns(&d, 0, 5, 0);
        set_conns(&d, 1, 4, 0);
        set_conns(&d, 2, 4, 0);
        assert_eq!(schedule(&svc.reals, &d), Some(1));
    }
}
