//! Locality-based least-connection with replication (`lblcr`): like lblc, but
//! a destination address maps to a *set* of servers, grown when all of them
//! are busy and shrunk when it has not changed for a while.
//!
//! Semantics kept from IPVS: on a hit the set's least loaded available member
//! (`overhead / weight`, wlc's measure) is used unless it is overloaded in
//! lblc's sense, in which case wlc picks a server over the whole service and
//! it joins the set. When the set has more than one member and has not
//! changed for [`LBLCR_EXPIRATION_SECS`] (IPVS's default, one day), its most
//! loaded member leaves it. Entries unused for that long expire.
//!
//! Differences, for a fixed-size lock-free table: 1024 sets of 4 entries,
//! each entry holding at most 4 servers (IPVS's sets are unbounded lists).
//! A server joining a full set takes the place of a member that is no longer
//! in the service, else of the most loaded member. Expired entries are
//! ignored at lookup instead of removed by a timer, and a full table set
//! reuses its least recently used entry. On equal load the member in the
//! lowest slot wins (IPVS: the most recently added). A member's slot is one
//! atomic word, joined and left with compare-and-swap; two workers growing
//! the same set at once may both add their pick, which a set allows.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::lblc::{dst_hash, lblc_overloaded, Locality};
use super::{cmp_load, conn_overhead, weighted_least, wlc};
use crate::packet::FlowKey;
use crate::service::{RealLoads, RealServer};

/// IPVS's default `lblcr_expiration`: one day.
pub const LBLCR_EXPIRATION_SECS: u32 = 24 * 60 * 60;
const SET_MAX: usize = 4;

#[derive(Debug, Default)]
pub(super) struct Entry {
    /// Hash of the destination address; 0 = empty.
    key: AtomicU64,
    lastuse: AtomicU32,
    lastmod: AtomicU32,
    /// `RealId + 1` of each member; 0 = free slot.
    members: [AtomicU32; SET_MAX],
}

/// lblcr: a locality table whose entries name a set of servers each.
pub(super) type Lblcr = Locality<Entry>;

impl Lblcr {
    /// Members of `e` that are servers of the service: (slot, index).
    fn members<'a>(&'a self, e: &'a Entry) -> impl Iterator<Item = (usize, usize)> + 'a {
        e.members.iter().enumerate().filter_map(|(slot, m)| {
            let v = m.load(Ordering::Relaxed);
            (v != 0)
                .then(|| self.index(v - 1))
                .flatten()
                .map(|i| (slot, i))
        })
    }

    /// IPVS's `ip_vs_dest_set_min`: the available member with the smallest
    /// `overhead / weight`.
    fn least(&self, e: &Entry, reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
        let members = self.members(e).map(|(_, i)| i);
        weighted_least(reals, members, loads, conn_overhead)
    }

    /// IPVS's `ip_vs_dest_set_max`: the slot of the member with weight whose
    /// `overhead / weight` is largest.
    fn most(&self, e: &Entry, reals: &[RealServer], loads: &RealLoads) -> Option<usize> {
        let mut most: Option<(usize, u64, u32)> = None;
        for (slot, i) in self.members(e) {
            let Some(real) = reals.get(i).filter(|r| r.weight > 0) else {
                continue;
            };
            let doh = loads.get(real.id).map_or(0, conn_overhead);
            match most {
                Some((_, moh, mw)) if cmp_load(moh, mw, doh, real.weight).is_ge() => {}
                _ => most = Some((slot, doh, real.weight)),
            }
        }
        most.map(|(slot, _, _)| slot)
    }

    pub fn schedule(
        &self,
        reals: &[RealServer],
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        let h = dst_hash(key);
        let now_s = self.now_s();
        let set = self.set(h);
        let hit = set.iter().find(|e| {
            e.key.load(Ordering::Relaxed) == h
                && now_s.wrapping_sub(e.lastuse.load(Ordering::Relaxed)) <= LBLCR_EXPIRATION_SECS
        });
        let Some(e) = hit else {
            let i = wlc::schedule(reals, loads)?;
            Self::start_entry(set, h, reals[i].id.0, now_s);
            return Some(i);
        };
        if e.lastuse.load(Ordering::Relaxed) != now_s {
            e.lastuse.store(now_s, Ordering::Relaxed);
        }
        let least = self.least(e, reals, loads);
        let size = e
            .members
            .iter()
            .filter(|m| m.load(Ordering::Relaxed) != 0)
            .count();
        if size > 1 && now_s.wrapping_sub(e.lastmod.load(Ordering::Relaxed)) > LBLCR_EXPIRATION_SECS
        {
            if let Some(slot) = self.most(e, reals, loads) {
                let m = &e.members[slot];
                let v = m.load(Ordering::Relaxed);
                if m.compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    e.lastmod.store(now_s, Ordering::Relaxed);
                }
            }
        }
        if let Some(i) = least {
            if !lblc_overloaded(i, reals, loads) {
                return Some(i);
            }
        }
        let i = wlc::schedule(reals, loads)?;
        self.join(e, reals, loads, reals[i].id.0, now_s);
        Some(i)
    }

    /// Adds `id` to `e`'s set unless it is a member already.
    fn join(&self, e: &Entry, reals: &[RealServer], loads: &RealLoads, id: u32, now_s: u32) {
        let v = id + 1;
        if e.members.iter().any(|m| m.load(Ordering::Relaxed) == v) {
            return;
        }
        let stale = e.members.iter().position(|m| {
            let cur = m.load(Ordering::Relaxed);
            cur == 0 || self.index(cur - 1).is_none()
        });
        let Some(slot) = stale.or_else(|| self.most(e, reals, loads)) else {
            return;
        };
        let m = &e.members[slot];
        let cur = m.load(Ordering::Relaxed);
        if m.compare_exchange(cur, v, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            e.lastmod.store(now_s, Ordering::Relaxed);
        }
    }

    /// Makes an entry for `h` whose set is `{id}`: an empty, expired or the
    /// least recently used entry of the table set.
    fn start_entry(set: &[Entry], h: u64, id: u32, now_s: u32) {
        let age = |e: &Entry| {
            if e.key.load(Ordering::Relaxed) == 0 {
                u32::MAX
            } else {
                now_s.wrapping_sub(e.lastuse.load(Ordering::Relaxed))
            }
        };
        let victim = set
            .iter()
            .find(|e| e.key.load(Ordering::Relaxed) == h)
            .or_else(|| set.iter().max_by_key(|e| age(e)));
        let Some(e) = victim else { return };
        e.key.store(0, Ordering::Relaxed);
        for m in &e.members {
            m.store(0, Ordering::Relaxed);
        }
        e.members[0].store(id + 1, Ordering::Relaxed);
        e.lastuse.store(now_s, Ordering::Relaxed);
        e.lastmod.store(now_s, Ordering::Relaxed);
        e.key.store(h, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;
    use crate::Millis;

    fn members(s: &Scheduler, key: &FlowKey) -> Vec<u32> {
        let crate::sched::Inner::Lblcr(l) = &s.inner else {
            panic!()
        };
        let h = dst_hash(key);
        let e = l
            .set(h)
            .iter()
            .find(|e| e.key.load(Ordering::Relaxed) == h)
            .unwrap();
        let mut v: Vec<u32> = e
            .members
            .iter()
            .map(|m| m.load(Ordering::Relaxed))
            .filter(|&m| m != 0)
            .map(|m| m - 1)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_set_grows_when_its_members_are_busy_and_shrinks_after_a_day() {
        let svc = service(SchedulerKind::Lblcr, &[2, 2, 2]);
        let d = loads(3);
        let s = Scheduler::new(&svc);
        let a = to("203.0.113.60");
        assert_eq!(s.schedule(&svc, &a, &d), Some(0));
        assert_eq!(members(&s, &a), [0]);
        set_conns(&d, 0, 2, 0);
        assert_eq!(s.schedule(&svc, &a, &d), Some(0), "not over weight");
        set_conns(&d, 0, 3, 0); // over weight while 1 and 2 are idle
        assert_eq!(at(&s, Millis(1000), &svc, &a, &d), Some(1));
        assert_eq!(members(&s, &a), [0, 1]);
        // Both members usable: the least loaded of the set, not of the service.
        set_conns(&d, 0, 1, 0);
        set_conns(&d, 1, 2, 0);
        assert_eq!(at(&s, Millis(2000), &svc, &a, &d), Some(0));
        // A day without change: the most loaded member (1) leaves.
        let later = Millis(1000 + u64::from(LBLCR_EXPIRATION_SECS) * 1000 + 1000);
        assert_eq!(at(&s, later, &svc, &a, &d), Some(0));
        assert_eq!(members(&s, &a), [0]);
    }

    #[test]
    fn removed_servers_give_their_place_up() {
        let svc = service(SchedulerKind::Lblcr, &[1, 1, 1, 1, 1, 1]);
        let d = loads(6);
        let s = Scheduler::new(&svc);
        let a = to("203.0.113.61");
        // Fill the set with 0..4 by overloading each chosen member in turn.
        for i in 0..SET_MAX {
            assert_eq!(s.schedule(&svc, &a, &d), Some(i));
            set_conns(&d, i, 2, 0);
        }
        assert_eq!(members(&s, &a), [0, 1, 2, 3]);
        let mut changed = svc.clone();
        changed.reals.remove(2);
        let s2 = s.update(&changed);
        // Members 0,1,3 are over weight; wlc picks id 4 (index 3 now), which
        // takes the removed server's slot.
        assert_eq!(s2.schedule(&changed, &a, &d), Some(3));
        assert_eq!(members(&s2, &a), [0, 1, 3, 4]);
    }
}
