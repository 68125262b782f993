//! Weighted failover (`fo`): every new connection goes to the available
//! server with the highest weight, the first in list order on a tie; the next
//! one takes over when it becomes quiesced or overloaded.
//!
//! The servers are sorted by that preference when the scheduler is built, so
//! a pick stops at the first available one instead of scanning them all.

use super::usable;
use crate::service::{RealLoads, RealServer};

#[derive(Debug)]
pub struct Fo {
    /// Indices of servers with a weight, highest weight first, list order
    /// among equals.
    order: Box<[u32]>,
}

/// Indices of the servers with a weight, by weight descending, stable.
pub(super) fn by_weight(reals: &[RealServer]) -> Box<[u32]> {
    let mut order: Vec<u32> = (0..reals.len() as u32)
        .filter(|&i| reals[i as usize].weight > 0)
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(reals[i as usize].weight));
    order.into_boxed_slice()
}

impl Fo {
    pub fn new(reals: &[RealServer]) -> Fo {
        Fo {
            order: by_weight(reals),
        }
    }

    pub fn schedule(&self, reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
        self.order
            .iter()
            .find_map(|&i| usable(i as usize, reals, loads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::SchedulerKind;

    #[test]
    fn highest_weight_until_it_fails() {
        let svc = service(SchedulerKind::Fo, &[2, 5, 5, 1]);
        let d = loads(4);
        let fo = Fo::new(&svc.reals);
        assert_eq!(fo.schedule(&svc.reals, &d), Some(1));
        set_conns(&d, 1, 1000, 0);
        assert_eq!(fo.schedule(&svc.reals, &d), Some(1), "load does not matter");
        set_overloaded(&d, 1, true);
        assert_eq!(fo.schedule(&svc.reals, &d), Some(2));
        set_overloaded(&d, 2, true);
        assert_eq!(fo.schedule(&svc.reals, &d), Some(0));
    }
}
