//! Weighted failover (`fo`): every new connection goes to the available
//! server with the highest weight, the first in list order on a tie; the next
//! one takes over when it becomes quiesced or overloaded.

use super::available;
use crate::service::{DestTable, RealServer};

pub fn schedule(reals: &[RealServer], dests: &DestTable) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, real) in reals.iter().enumerate() {
        if available(real, dests).is_none() {
            continue;
        }
        if best.is_none_or(|(_, hw)| real.weight > hw) {
            best = Some((i, real.weight));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::SchedulerKind;

    #[test]
    fn highest_weight_until_it_fails() {
        let svc = service(SchedulerKind::Fo, &[2, 5, 5, 1]);
        let d = dests(4);
        assert_eq!(schedule(&svc.reals, &d), Some(1));
        set_conns(&d, 1, 1000, 0);
        assert_eq!(schedule(&svc.reals, &d), Some(1), "load does not matter");
        set_overloaded(&d, 1, true);
        assert_eq!(schedule(&svc.reals, &d), Some(2));
        set_overloaded(&d, 2, true);
        assert_eq!(schedule(&svc.reals, &d), Some(0));
    }
}
