//! Views over frame bytes: parsing, flow keys, checksums, in-place rewrites.

mod flow;

pub use flow::{FlowKey, L4Proto};
