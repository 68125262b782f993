//! xvs: a Linux Virtual Server director in userspace over AF_XDP.
//!
//! ARCHITECTURE.md draws the layers and who posts what to whom; in short,
//! from the bytes up:
//! - [`packet`] parses and rewrites frames; [`verdict`] names what becomes
//!   of one ([`verdict::Verdict`], [`verdict::DropReason`]).
//! - [`service`] is the model: virtual services, real servers, their ids,
//!   health and edits; the immutable snapshots workers read; the
//!   per-real-server counters. [`counters`] declares every worker counter
//!   once.
//! - [`forward`] applies an LVS forwarding method (NAT, TUN, DR) to one
//!   frame, [`conntrack`] remembers which real server a connection went to,
//!   [`sched`] picks a real server for a new one, [`neigh`] holds next hops.
//! - [`pipeline`] ties them into the sans-IO core every caller drives:
//!   `Pipeline::process(now, ingress, frame) -> Verdict` (and
//!   `process_batch`), with an outbox of events (`Pipeline::poll_event`).
//! - [`xsk`] moves frames between AF_XDP rings and the pipeline (the only
//!   `unsafe`), [`director`] starts and upkeeps the data plane, and
//!   [`control`] runs the daemon that owns the model, with its front ends
//!   (ipvsadm, the TOML config, keepalived.conf) and servers (control
//!   socket, metrics); [`health`] checks the real servers and reports
//!   transitions to the daemon; [`sync`] keeps a peer director's
//!   connection table in step with ours.

pub mod conntrack;
pub mod control;
pub mod counters;
pub mod cpus;
pub mod director;
pub mod files;
pub mod forward;
pub mod health;
pub mod limits;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod sched;
pub mod service;
pub mod sync;
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
