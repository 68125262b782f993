//! The AF_XDP data plane — and the only module of xvs with `unsafe`.
//!
//! - [`prog`]: the XDP steering program (`steer.bpf.c`, compiled by build.rs)
//!   that redirects to AF_XDP only what xvs handles and passes the rest to
//!   the kernel; its maps follow the configuration.
//! - [`worker`]: per-worker UMEM, one socket per interface on the worker's
//!   queue sharing that UMEM (a frame received on one interface leaves by
//!   another without a copy), and the rx → pipeline → tx loop with
//!   fill/completion accounting that never loses a frame.
//! - [`huge`]: large arrays on transparent huge pages (the connection
//!   table's memory), mapped and advised here with the other system calls
//!   that need `unsafe`.
//! - `sys`: the system calls xsk-rs does not wrap (busy poll, poll, euid).
//! - `rings`: the worker's own consumer of a socket's RX and completion
//!   rings and producer of its fill and TX rings, one mapping and protocol
//!   for all four, reading descriptors straight into an address and a
//!   length; TX sends a frame from wherever it starts in its chunk (TUN
//!   grows it into the headroom).
//! - `txring`: the chunk arithmetic of aligned UMEM addresses that TX needs.
//!
//! Every `unsafe` block says why it holds in a `// SAFETY:` comment.

pub mod bench;
pub mod huge;
pub mod prog;
mod rings;
mod sys;
mod txring;
pub mod worker;

pub use sys::euid;
