//! Root-only integration tests: real Linux network stacks in namespaces.
//!
//! Run by `tools/test` (as root): `cargo test --test netns -- --test-threads=1`.

mod clusters;
mod common;
mod control;
mod decap;
mod ecmp;
mod ha;
mod health;
mod keepalived;
mod ldirectord;
mod mon;
mod neigh;
mod package;
mod sync;
mod xsk;
