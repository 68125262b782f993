//! What each LVS forwarding method does to a frame, given the decision the
//! pipeline already made (which real server, which next hop).
//!
//! - [`nat`]: masquerading, both directions, and ICMP errors about NATed flows;
//! - [`tun`]: IP-in-IP encapsulation, with the MTU check;
//! - [`dr`]: direct routing, a MAC rewrite.

pub mod dr;
pub mod nat;
pub mod tun;
