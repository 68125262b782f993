//! Never queue (`nq`): an idle available server (no active connection) if
//! there is one, the first in list order; otherwise sed's smallest
//! `(active + 1) / weight`.

use super::{available, sed};
use crate::service::{RealLoads, RealServer};

pub fn schedule(reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
    reals
        .iter()
        .position(|r| available(r, loads).is_some_and(|c| c.active() == 0))
        .or_else(|| sed::schedule(reals, loads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::SchedulerKind;

    #[test]
    fn idle_server_first_then_expected_delay() {
        let svc = service(SchedulerKind::Nq, &[1, 2, 5]);
        let d = loads(3);
        assert_eq!(schedule(&svc.reals, &d), Some(0), "idle, first in list");
        set_conns(&d, 0, 1, 0);
        set_conns(&d, 2, 9, 0);
        assert_eq!(schedule(&svc.reals, &d), Some(1), "idle beats weight");
        set_conns(&d, 1, 1, 50);
        // 2/1, 2/2, 10/5: 1 and 2 tie at 1 -> the first of them.
        assert_eq!(schedule(&svc.reals, &d), Some(1));
        set_conns(&d, 0, 2, 0); // 3/1
        set_conns(&d, 1, 4, 0); // 5/2
        assert_eq!(schedule(&svc.reals, &d), Some(2)); // 10/5
    }
}
