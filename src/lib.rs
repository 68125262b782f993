//! xvs: a Linux Virtual Server director in userspace over AF_XDP.
//!
//! The crate is laid out as the data path runs: [`packet`] parses and rewrites
//! frames, [`forward`] applies an LVS forwarding method (NAT, TUN, DR) to one
//! frame, [`conntrack`] remembers which real server a connection went to,
//! [`sched`] picks a real server for a new connection, and [`pipeline`] ties them
//! into the one sans-IO entry point every caller uses:
//! `Pipeline::process(now, frame) -> Verdict`.

pub mod conntrack;
pub mod control;
pub mod counters;
pub mod cpus;
pub mod director;
pub mod files;
pub mod forward;
pub mod limits;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod sched;
pub mod service;
pub mod verdict;
#[allow(unsafe_code)] // AF_XDP rings and UMEM: the one place unsafe code may live.
pub mod xsk;

/// A point on the caller's monotonic clock, in milliseconds.
///
/// The sans-IO core never reads a clock: the worker loop reads one once per
/// batch and passes it down, tests and the fuzzer pass whatever they like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    pub fn from_secs(secs: u64) -> Millis {
        Millis(secs * 1000)
    }

    pub fn saturating_sub(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<u64> for Millis {
    type Output = Millis;

    /// Adds a number of milliseconds.
    fn add(self, ms: u64) -> Millis {
        Millis(self.0 + ms)
    }
}

#[cfg(test)]
mod architecture;
