//! Weighted overflow (`ovf`): the available server with the highest weight
//! whose active connections do not exceed its weight (the first in list order
//! on a tie); when it fills up, the next highest takes the overflow.
//!
//! Like fo, the preference order is sorted when the scheduler is built.

use super::available;
use super::fo::by_weight;
use crate::service::{RealLoads, RealServer};

#[derive(Debug)]
pub struct Ovf {
    order: Box<[u32]>,
}

impl Ovf {
    pub fn new(reals: &[RealServer]) -> Ovf {
        Ovf {
            order: by_weight(reals),
        }
    }

    pub fn schedule(&self, reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
        self.order.iter().map(|&i| i as usize).find(|&i| {
            reals
                .get(i)
                .is_some_and(|r| available(r, loads).is_some_and(|c| c.active() <= r.weight))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::SchedulerKind;

    #[test]
    fn overflows_by_weight() {
        let svc = service(SchedulerKind::Ovf, &[3, 10, 5, 10]);
        let d = loads(4);
        let ovf = Ovf::new(&svc.reals);
        assert_eq!(ovf.schedule(&svc.reals, &d), Some(1));
        set_conns(&d, 1, 10, 99);
        assert_eq!(
            ovf.schedule(&svc.reals, &d),
            Some(1),
            "active == weight still takes one"
        );
        set_conns(&d, 1, 11, 0);
        assert_eq!(
            ovf.schedule(&svc.reals, &d),
            Some(3),
            "the tie, next in list"
        );
        set_conns(&d, 3, 11, 0);
        assert_eq!(ovf.schedule(&svc.reals, &d), Some(2));
        set_conns(&d, 2, 6, 0);
        assert_eq!(ovf.schedule(&svc.reals, &d), Some(0));
        set_conns(&d, 0, 4, 0);
        assert_eq!(
            ovf.schedule(&svc.reals, &d),
            None,
            "everyone is over its weight"
        );
    }
}
