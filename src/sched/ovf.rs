//! Weighted overflow (`ovf`): the available server with the highest weight
//! whose active connections do not exceed its weight (the first in list order
//! on a tie); when it fills up, the next highest takes the overflow.

use super::available;
use crate::service::{DestTable, RealServer};

pub fn schedule(reals: &[RealServer], dests: &DestTable) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, real) in reals.iter().enumerate() {
        let Some(counters) = available(real, dests) else {
            continue;
        };
        if counters.active() > real.weight {
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
    fn overflows_by_weight() {
        let svc = service(SchedulerKind::Ovf, &[3, 10, 5]);
        let d = dests(3);
        assert_eq!(schedule(&svc.reals, &d), Some(1));
        set_conns(&d, 1, 10, 99);
        assert_eq!(
            schedule(&svc.reals, &d),
            Some(1),
            "active == weight still takes one"
        );
        set_conns(&d, 1, 11, 0);
        assert_eq!(schedule(&svc.reals, &d), Some(2));
        set_conns(&d, 2, 6, 0);
        assert_eq!(schedule(&svc.reals, &d), Some(0));
        set_conns(&d, 0, 4, 0);
        assert_eq!(
            schedule(&svc.reals, &d),
            None,
            "everyone is over its weight"
        );
    }
}
