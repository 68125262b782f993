//! xvs: a Linux Virtual Server director in userspace over AF_XDP.
//!
//! The crate is laid out as the data path runs: [`packet`] parses and rewrites
//! frames, [`forward`] applies an LVS forwarding method (NAT, TUN, DR) to one
//! frame, [`conntrack`] remembers which real server a connection went to,
//! [`sched`] picks a real server for a new connection, and [`pipeline`] ties them
//! into the one sans-IO entry point every caller uses:
//! `Pipeline::process(now, frame) -> Verdict`.

pub mod conntrack;
pub mod forward;
pub mod packet;
pub mod pipeline;
pub mod sched;
pub mod service;
