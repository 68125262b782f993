//! Per-real-server counters, each declared once.
//!
//! A counter set is written once, in `counter_set!`: from the one list of
//! counters come the atomic form the data plane writes and the plain value
//! the control plane copies it into (`read`), sums (`add`) and subtracts
//! (`minus`, for `-Z` baselines). Two sets, both indexed by [`RealId`] and
//! allocated once at start, so what they count outlives every
//! [`super::ServiceTable`]:
//! - [`RealLoad`] / [`RealCounts`]: ActiveConn, InActConn, PersistConn. One
//!   [`RealLoads`] is shared by every worker: connections update it as they
//!   open, change state and close, and schedulers read it.
//! - [`RealTrafficSlot`] / [`TotalStats`]: what `ipvsadm -L --stats` shows.
//!   Each worker writes its own [`RealTraffic`] (a load and a store, no
//!   read-modify-write on a shared line); the control plane sums the
//!   workers' tables.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::RealId;

/// Declares a counter set: the plain value type (`Copy`, with `add` and
/// `minus`), the atomic type with the same counters (plus any fields of its
/// own that are not counters), and `read` from the one to the other.
macro_rules! counter_set {
    (
        $(#[$plain_meta:meta])*
        pub struct $plain:ident($int:ty);
        $(#[$atomic_meta:meta])*
        pub struct $atomic:ident($cell:ty) {
            $( $(#[$extra_meta:meta])* pub $extra:ident: $extra_ty:ty, )*
        }
        counters {
            $( $(#[$meta:meta])* $field:ident, )+
        }
    ) => {
        $(#[$plain_meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $plain {
            $( $(#[$meta])* pub $field: $int, )+
        }

        $(#[$atomic_meta])*
        #[derive(Debug, Default)]
        pub struct $atomic {
            $( $(#[$meta])* pub $field: $cell, )+
            $( $(#[$extra_meta])* pub $extra: $extra_ty, )*
        }

        impl $atomic {
            /// Every counter, each read once (relaxed: each value is exact,
            /// the set is not one instant's).
            pub fn read(&self) -> $plain {
                $plain {
                    $( $field: self.$field.load(Ordering::Relaxed), )+
                }
            }
        }

        impl $plain {
            /// `self` since `base`, each counter at least 0.
            pub fn minus(&self, base: &$plain) -> $plain {
                $plain {
                    $( $field: self.$field.saturating_sub(base.$field), )+
                }
            }

            /// Adds `other`'s counts to `self`'s.
            pub fn add(&mut self, other: &$plain) {
                $( self.$field = self.$field.wrapping_add(other.$field); )+
            }
        }
    };
}

counter_set! {
    /// A real server's live connection counts, as `ipvsadm -L` shows them.
    pub struct RealCounts(u32);

    /// Live connection counts of one real server, shared by every worker.
    ///
    /// ActiveConn counts connections in ESTABLISHED state, InActConn all
    /// others, exactly as `ipvsadm -L` shows them; PersistConn counts
    /// persistence templates.
    pub struct RealLoad(AtomicU32) {
        /// Set once the server reached its upper threshold; cleared when it
        /// drops below the lower one (IPVS's `IP_VS_DEST_F_OVERLOAD`
        /// hysteresis).
        pub overloaded: AtomicBool,
    }

    counters {
        /// ActiveConn.
        active_conns,
        /// InActConn.
        inact_conns,
        /// PersistConn: persistence templates.
        persist_conns,
    }
}

counter_set! {
    /// Traffic totals since start or the last `-Z` (`ipvsadm -L --stats`),
    /// of a real server or, summed, of a service.
    pub struct TotalStats(u64);

    /// One real server's traffic counters in a worker's [`RealTraffic`].
    pub struct RealTrafficSlot(AtomicU64) {}

    counters {
        /// Connections scheduled to the real server.
        conns,
        /// Packets client → real server.
        inpkts,
        /// Packets real server → client (seen by NAT only).
        outpkts,
        /// Bytes client → real server (IP length).
        inbytes,
        /// Bytes real server → client (seen by NAT only).
        outbytes,
    }
}

impl RealLoad {
    pub fn active(&self) -> u32 {
        self.active_conns.load(Ordering::Relaxed)
    }

    pub fn inactive(&self) -> u32 {
        self.inact_conns.load(Ordering::Relaxed)
    }

    pub fn persistent(&self) -> u32 {
        self.persist_conns.load(Ordering::Relaxed)
    }
}

/// Connection counts of every real server, indexed by [`RealId`], allocated
/// once at start and shared by every worker.
#[derive(Debug)]
pub struct RealLoads {
    slots: Box<[RealLoad]>,
}

impl RealLoads {
    pub fn new(capacity: usize) -> RealLoads {
        RealLoads {
            slots: (0..capacity).map(|_| RealLoad::default()).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Counters of `id`; ids come from the control plane, which never hands
    /// out one past the capacity.
    pub fn get(&self, id: RealId) -> Option<&RealLoad> {
        self.slots.get(id.0 as usize)
    }
}

/// Per-real-server traffic of one worker, what `ipvsadm -L --stats` shows:
/// connections scheduled, and packets/bytes in (client → real server) and
/// out (real server → client, seen by NAT only). Only the worker that owns
/// the table counts into it; the control plane reads it.
#[derive(Debug)]
pub struct RealTraffic {
    slots: Box<[RealTrafficSlot]>,
}

impl RealTraffic {
    pub fn new(capacity: usize) -> RealTraffic {
        RealTraffic {
            slots: (0..capacity).map(|_| RealTrafficSlot::default()).collect(),
        }
    }

    pub fn get(&self, id: RealId) -> Option<&RealTrafficSlot> {
        self.slots.get(id.0 as usize)
    }

    /// Only the owning worker calls this: a plain load and store suffice.
    fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// A packet of `bytes` (IP length) from a client to real server `id`.
    pub fn count_in(&self, id: RealId, bytes: usize) {
        if let Some(s) = self.get(id) {
            RealTraffic::add(&s.inpkts, 1);
            RealTraffic::add(&s.inbytes, bytes as u64);
        }
    }

    /// A packet of `bytes` from real server `id` back to its client.
    pub fn count_out(&self, id: RealId, bytes: usize) {
        if let Some(s) = self.get(id) {
            RealTraffic::add(&s.outpkts, 1);
            RealTraffic::add(&s.outbytes, bytes as u64);
        }
    }

    /// A connection scheduled to real server `id`.
    pub fn count_conn(&self, id: RealId) {
        if let Some(s) = self.get(id) {
            RealTraffic::add(&s.conns, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain value is what the atomics held; `add` and `minus` work
    /// counter by counter.
    #[test]
    fn one_declaration_gives_the_atomic_and_the_plain_form() {
        let t = RealTraffic::new(2);
        t.count_conn(RealId(1));
        t.count_in(RealId(1), 100);
        t.count_in(RealId(1), 60);
        t.count_out(RealId(1), 40);
        t.count_in(RealId(9), 1); // past the capacity: not counted
        let one = t.get(RealId(1)).unwrap().read();
        assert_eq!(
            one,
            TotalStats {
                conns: 1,
                inpkts: 2,
                outpkts: 1,
                inbytes: 160,
                outbytes: 40,
            }
        );
        assert_eq!(t.get(RealId(0)).unwrap().read(), TotalStats::default());
        let mut sum = one;
        sum.add(&one);
        assert_eq!(sum.minus(&one), one);
        assert_eq!(one.minus(&sum), TotalStats::default());

        let loads = RealLoads::new(1);
        let l = loads.get(RealId(0)).unwrap();
        l.active_conns.store(2, Ordering::Relaxed);
        l.persist_conns.store(1, Ordering::Relaxed);
        assert_eq!(
            l.read(),
            RealCounts {
                active_conns: 2,
                inact_conns: 0,
                persist_conns: 1,
            }
        );
        assert_eq!((l.active(), l.inactive(), l.persistent()), (2, 0, 1));
    }
}
