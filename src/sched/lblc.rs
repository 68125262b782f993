//! Locality-based least-connection (`lblc`): connections to one destination
//! address go to the same server while it copes, so a cache cluster keeps
//! each site's objects on one cache.
//!
//! Semantics kept from IPVS: a table maps a destination address to the
//! server last chosen for it. A hit whose server is available and not
//! "overloaded" in lblc's sense (more active connections than its weight
//! while some server has less than half its weight in active connections)
//! is used; otherwise wlc picks a server and the entry is pointed at it.
//! Entries expire 24 h after their last use ([`LBLC_EXPIRATION_SECS`], IPVS's
//! `lblc_expiration` default).
//!
//! Differences, for a fixed-size lock-free table: it has 1024 sets of 4
//! entries (IPVS: 1024 hash chains, trimmed when over 16384 entries); an
//! expired entry is ignored at lookup rather than removed by a timer; when a
//! set is full the least recently used entry makes room (IPVS's trim drops
//! entries idle for 6 minutes). A cached server over its `-x` threshold is
//! not used (IPVS checks only lblc's own overload there). Entries name
//! servers by [`RealId`] and the table survives [`Scheduler::update`], as
//! IPVS's survives real-server changes.
//!
//! Concurrency: an entry is two atomic words (key hash, server + last use).
//! A reader racing with a writer that replaces the entry may see the new key
//! with the old server for an instant; that only sends one connection to
//! another valid, available server, which lblc allows anyway.
//!
//! [`RealId`]: crate::service::RealId
//! [`Scheduler::update`]: super::Scheduler::update

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::{addr_port_hash, usable, wlc};
use crate::packet::FlowKey;
use crate::service::{RealLoads, RealServer};
use crate::Millis;

/// IPVS's default `lblc_expiration`: one day.
pub const LBLC_EXPIRATION_SECS: u32 = 24 * 60 * 60;
const SETS: usize = 1024;
const WAYS: usize = 4;

#[derive(Debug, Default)]
pub(super) struct Entry {
    /// Hash of the destination address; 0 = empty.
    key: AtomicU64,
    /// `(RealId + 1) << 32 | last use in seconds`; 0 = being written.
    val: AtomicU64,
}

/// lblc: a locality table whose entries name one server each.
pub(super) type Lblc = Locality<Entry>;

/// What lblc and lblcr keep: a table of `SETS` sets of `WAYS` entries `E`
/// with its clock, shared across
/// [`Scheduler::update`](super::Scheduler::update), and the [`IdIndex`] of
/// the reals this scheduler was built for.
#[derive(Debug)]
pub(super) struct Locality<E> {
    table: Arc<Table<E>>,
    ids: IdIndex,
}

#[derive(Debug)]
struct Table<E> {
    entries: Box<[E]>,
    /// Seconds, as last given to [`Locality::tick`].
    clock: AtomicU32,
}

impl<E: Default> Locality<E> {
    pub fn new(reals: &[RealServer]) -> Locality<E> {
        Locality {
            table: Arc::new(Table {
                entries: (0..SETS * WAYS).map(|_| E::default()).collect(),
                clock: AtomicU32::new(0),
            }),
            ids: IdIndex::new(reals),
        }
    }
}

impl<E> Locality<E> {
    /// A scheduler for the changed `reals` sharing this one's table.
    pub fn carry_over(&self, reals: &[RealServer]) -> Locality<E> {
        Locality {
            table: Arc::clone(&self.table),
            ids: IdIndex::new(reals),
        }
    }

    pub fn tick(&self, now: Millis) {
        self.table.clock.store(secs(now), Ordering::Relaxed);
    }

    /// The time in seconds, as last given to [`Locality::tick`].
    pub(super) fn now_s(&self) -> u32 {
        self.table.clock.load(Ordering::Relaxed)
    }

    /// The table set destination hash `h` falls in.
    pub(super) fn set(&self, h: u64) -> &[E] {
        let s = (h as usize % SETS) * WAYS;
        &self.table.entries[s..s + WAYS]
    }

    /// The index in the reals this scheduler was built for of the server
    /// with [`RealId`](crate::service::RealId) `id`.
    #[inline]
    pub(super) fn index(&self, id: u32) -> Option<usize> {
        self.ids.index(id)
    }
}

/// Maps a [`RealId`](crate::service::RealId) to its index in the reals the
/// scheduler was built for.
#[derive(Debug)]
struct IdIndex(Box<[(u32, u32)]>);

impl IdIndex {
    fn new(reals: &[RealServer]) -> IdIndex {
        let mut v: Vec<(u32, u32)> = reals
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.0, i as u32))
            .collect();
        v.sort_unstable();
        IdIndex(v.into_boxed_slice())
    }

    #[inline]
    fn index(&self, id: u32) -> Option<usize> {
        self.0
            .binary_search_by_key(&id, |&(id, _)| id)
            .ok()
            .map(|k| self.0[k].1 as usize)
    }
}

/// The nonzero hash the locality tables key a destination address on.
#[inline]
pub(super) fn dst_hash(key: &FlowKey) -> u64 {
    addr_port_hash(&key.dst, 0).max(1)
}

#[inline]
fn secs(now: Millis) -> u32 {
    (now.0 / 1000) as u32
}

/// lblc/lblcr's own overload test: `real` has more active connections than
/// its weight and some server has less than half its weight.
pub(super) fn lblc_overloaded(i: usize, reals: &[RealServer], loads: &RealLoads) -> bool {
    let active = |r: &RealServer| loads.get(r.id).map_or(0, |c| u64::from(c.active()));
    let Some(real) = reals.get(i) else {
        return true;
    };
    active(real) > u64::from(real.weight)
        && reals.iter().any(|d| active(d) * 2 < u64::from(d.weight))
}

fn pack(id: u32, secs: u32) -> u64 {
    (u64::from(id) + 1) << 32 | u64::from(secs)
}

impl Lblc {
    pub fn schedule(
        &self,
        reals: &[RealServer],
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        let h = dst_hash(key);
        let now_s = self.now_s();
        let set = self.set(h);
        if let Some(e) = set.iter().find(|e| e.key.load(Ordering::Relaxed) == h) {
            let v = e.val.load(Ordering::Relaxed);
            let last = v as u32;
            if v != 0 && now_s.wrapping_sub(last) <= LBLC_EXPIRATION_SECS {
                let id = ((v >> 32) - 1) as u32;
                if last != now_s {
                    e.val.store(pack(id, now_s), Ordering::Relaxed);
                }
                if let Some(i) = self.index(id) {
                    if usable(i, reals, loads).is_some() && !lblc_overloaded(i, reals, loads) {
                        return Some(i);
                    }
                }
            }
        }
        let i = wlc::schedule(reals, loads)?;
        Self::remember(set, h, reals[i].id.0, now_s);
        Some(i)
    }

    /// Points the entry for `h` at `id`, taking an empty, expired or the
    /// least recently used entry of the set if `h` has none.
    fn remember(set: &[Entry], h: u64, id: u32, now_s: u32) {
        let val = pack(id, now_s);
        if let Some(e) = set.iter().find(|e| e.key.load(Ordering::Relaxed) == h) {
            e.val.store(val, Ordering::Relaxed);
            return;
        }
        for e in set {
            if e.key
                .compare_exchange(0, h, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                e.val.store(val, Ordering::Relaxed);
                return;
            }
        }
        let age = |e: &Entry| now_s.wrapping_sub(e.val.load(Ordering::Relaxed) as u32);
        if let Some(victim) = set.iter().max_by_key(|e| age(e)) {
            victim.val.store(0, Ordering::Relaxed);
            victim.key.store(h, Ordering::Relaxed);
            victim.val.store(val, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::sched::Scheduler;
    use crate::service::SchedulerKind;

    #[test]
    fn a_destination_sticks_to_its_server() {
        let svc = service(SchedulerKind::Lblc, &[1, 1, 1]);
        let d = loads(3);
        let s = Scheduler::new(&svc);
        let a = to("203.0.113.50");
        let b = to("203.0.113.51");
        assert_eq!(s.schedule(&svc, &a, &d), Some(0));
        set_conns(&d, 0, 1, 0);
        // wlc would now say 1; the cache says 0 for a, wlc picks 1 for b.
        assert_eq!(at(&s, Millis(1000), &svc, &a, &d), Some(0));
        assert_eq!(at(&s, Millis(1000), &svc, &b, &d), Some(1));
        assert_eq!(at(&s, Millis(2000), &svc, &b, &d), Some(1));
    }

    #[test]
    fn lblc_overload_moves_the_destination() {
        let svc = service(SchedulerKind::Lblc, &[2, 2]);
        let d = loads(2);
        let s = Scheduler::new(&svc);
        let a = to("203.0.113.50");
        assert_eq!(s.schedule(&svc, &a, &d), Some(0));
        set_conns(&d, 0, 2, 0); // active == weight: not overloaded
        assert_eq!(s.schedule(&svc, &a, &d), Some(0));
        set_conns(&d, 0, 3, 0); // > weight, and server 1 has 0*2 < 2
        assert_eq!(s.schedule(&svc, &a, &d), Some(1));
        // The entry now points at 1.
        set_conns(&d, 0, 0, 0);
        assert_eq!(s.schedule(&svc, &a, &d), Some(1));
    }

    #[test]
    fn entries_expire_after_a_day_of_disuse() {
        let svc = service(SchedulerKind::Lblc, &[1, 1]);
        let d = loads(2);
        let s = Scheduler::new(&svc);
        let a = to("203.0.113.50");
        assert_eq!(s.schedule(&svc, &a, &d), Some(0));
        set_conns(&d, 0, 1, 0);
        let day = u64::from(LBLC_EXPIRATION_SECS) * 1000;
        assert_eq!(at(&s, Millis(day), &svc, &a, &d), Some(0), "used at t=day");
        assert_eq!(
            at(&s, Millis(2 * day + 1000), &svc, &a, &d),
            Some(1),
            "expired"
        );
    }

    #[test]
    fn the_table_survives_an_update_and_follows_ids() {
        let svc = service(SchedulerKind::Lblc, &[1, 1, 1]);
        let d = loads(3);
        let s = Scheduler::new(&svc);
        let a = to("203.0.113.50");
        set_conns(&d, 0, 5, 0);
        set_conns(&d, 1, 5, 0);
        assert_eq!(s.schedule(&svc, &a, &d), Some(2));
        set_conns(&d, 2, 1, 0);
        // Server 0 removed: the server with id 2 is now at index 1.
        let mut changed = svc.clone();
        changed.reals.remove(0);
        let s2 = s.update(&changed);
        assert_eq!(s2.schedule(&changed, &a, &d), Some(1));
        assert_eq!(changed.reals[1].id.0, 2);
    }

    #[test]
    fn a_full_set_evicts_the_least_recently_used() {
        let reals: Vec<_> = (0..2).map(|i| real(i, 1)).collect();
        let lblc = Lblc::new(&reals);
        let h = 7u64;
        let set = lblc.set(h);
        for w in 0..WAYS as u64 {
            Lblc::remember(set, h + (w + 1) * SETS as u64, 0, 10 + w as u32);
        }
        Lblc::remember(set, h, 1, 20);
        let keys: Vec<u64> = set.iter().map(|e| e.key.load(Ordering::Relaxed)).collect();
        assert!(keys.contains(&h));
        assert!(!keys.contains(&(h + SETS as u64)), "the oldest went");
    }
}
