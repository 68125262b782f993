//! Round-robin (`rr`): each new connection goes to the next available real
//! server in list order.
//!
//! IPVS keeps a pointer to the last server picked and scans forward from the
//! one after it, skipping quiesced and overloaded servers. Here the position
//! is a counter per worker ([`Cursors`]): a pick takes its worker's next
//! position with one `fetch_add` on a line no other worker writes, and when
//! it had to skip servers it moves that counter past the one it chose, so
//! each worker's sequence matches IPVS's while servers are skipped too.
//!
//! When the servers change, the server that would have been tried next stays
//! next (or, if it was removed, the first one after it that remains), as
//! IPVS's pointer stays on its list entry, for each worker's position.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{available, Cursors};
use crate::service::{RealId, RealLoads, RealServer};

#[derive(Debug, Default)]
pub struct Rr {
    /// Each worker's position.
    cursors: Cursors,
    /// The servers in list order, to find the position again after a change.
    ids: Box<[RealId]>,
}

impl Rr {
    pub fn new(reals: &[RealServer]) -> Rr {
        Rr {
            cursors: Cursors::default(),
            ids: reals.iter().map(|r| r.id).collect(),
        }
    }

    /// A scheduler for the changed `reals` that goes on from this one's
    /// positions.
    pub fn carry_over(&self, reals: &[RealServer]) -> Rr {
        let n = self.ids.len();
        let next = |cursor: u64| {
            if n == 0 {
                return 0;
            }
            let at = (cursor % n as u64) as usize;
            (0..n)
                .find_map(|k| {
                    let id = self.ids[(at + k) % n];
                    reals.iter().position(|r| r.id == id)
                })
                .unwrap_or(0) as u64
        };
        Rr {
            cursors: self.cursors.carried(next),
            ids: reals.iter().map(|r| r.id).collect(),
        }
    }

    pub fn schedule(&self, reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
        let n = reals.len();
        if n == 0 {
            return None;
        }
        let cursor = self.cursors.mine();
        let ticket = cursor.fetch_add(1, Ordering::Relaxed);
        let first = (ticket % n as u64) as usize;
        // The common case: the server whose turn it is takes it.
        if available(&reals[first], loads).is_some() {
            return Some(first);
        }
        self.skip(reals, loads, cursor, (ticket, first))
    }

    /// [`Rr::schedule`] when the server at `first` (of `ticket`, taken from
    /// `cursor`) is not available: the next one that is, and the cursor
    /// moved past it.
    #[cold]
    fn skip(
        &self,
        reals: &[RealServer],
        loads: &RealLoads,
        cursor: &AtomicU64,
        (ticket, first): (u64, usize),
    ) -> Option<usize> {
        let n = reals.len();
        for step in 1..n {
            let mut i = first + step;
            if i >= n {
                i -= n;
            }
            if available(&reals[i], loads).is_some() {
                let next = ticket.wrapping_add(1);
                // Best effort: a thread sharing the stripe that moved it
                // meanwhile keeps its position.
                let _ = cursor.compare_exchange(
                    next,
                    next.wrapping_add(step as u64),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;

    fn picks(
        s: &Scheduler,
        svc: &crate::service::VirtualService,
        d: &crate::service::RealLoads,
        n: u32,
    ) -> Vec<usize> {
        (0..n)
            .map(|k| s.schedule(svc, &client_key(k), d).unwrap())
            .collect()
    }

    #[test]
    fn cycles_in_list_order() {
        let svc = service(SchedulerKind::Rr, &[1, 5, 1]);
        let d = loads(3);
        let s = Scheduler::new(&svc);
        assert_eq!(picks(&s, &svc, &d, 7), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn skips_quiesced_and_overloaded_like_ipvs() {
        // IPVS: A(0) quiesced, C overloaded: B, D, B, D ...
        let svc = service(SchedulerKind::Rr, &[0, 1, 1, 1]);
        let d = loads(4);
        set_overloaded(&d, 2, true);
        let s = Scheduler::new(&svc);
        assert_eq!(picks(&s, &svc, &d, 6), [1, 3, 1, 3, 1, 3]);
        // C recovers: the walk goes on from after D's last pick.
        set_overloaded(&d, 2, false);
        assert_eq!(picks(&s, &svc, &d, 4), [1, 2, 3, 1]);
    }

    /// A pick moves only its own worker's cursor, on a line of its own,
    /// and a change carries every worker's position over.
    #[test]
    fn each_worker_keeps_a_position_of_its_own() {
        use super::Rr;
        use crate::service::counters::{stripe, STRIPES};
        let svc = service(SchedulerKind::Rr, &[1, 1, 1]);
        let d = loads(3);
        let rr = Rr::new(&svc.reals);
        let picked: Vec<_> = (0..4).map(|_| rr.schedule(&svc.reals, &d)).collect();
        assert_eq!(picked, [Some(0), Some(1), Some(2), Some(0)]);
        let mine = stripe();
        let at = |rr: &Rr, i: usize| rr.cursors.at(i);
        for i in 0..STRIPES {
            assert_eq!(at(&rr, i), if i == mine { 4 } else { 0 }, "stripe {i}");
        }
        // Another worker's position, two servers on: kept across a change
        // that adds a server in front, as this worker's is.
        let other = (mine + 1) % STRIPES;
        rr.cursors.set(other, 2);
        let mut grown = svc.clone();
        grown.reals.insert(0, real(9, 1));
        let carried = rr.carry_over(&grown.reals);
        assert_eq!(at(&carried, mine), 2, "id 1 (now index 2) is next here");
        assert_eq!(at(&carried, other), 3, "id 2 (now index 3) is next there");
    }

    #[test]
    fn update_keeps_the_position() {
        let svc = service(SchedulerKind::Rr, &[1, 1, 1, 1]);
        let d = loads(5);
        let s = Scheduler::new(&svc);
        assert_eq!(picks(&s, &svc, &d, 2), [0, 1]);
        let s2 = s.update(&svc);
        assert_eq!(picks(&s2, &svc, &d, 2), [2, 3]);
        // Next is id 0. Add a server in front: id 0 is still next.
        let mut grown = svc.clone();
        grown.reals.insert(0, real(4, 1));
        let s3 = s2.update(&grown);
        assert_eq!(picks(&s3, &grown, &d, 2), [1, 2]);
        // Next is id 2 (index 3); remove it: id 3 comes next.
        let mut shrunk = grown.clone();
        shrunk.reals.remove(3);
        let s4 = s3.update(&shrunk);
        assert_eq!(shrunk.reals[3].id.0, 3);
        assert_eq!(picks(&s4, &shrunk, &d, 2), [3, 0]);
    }
}
