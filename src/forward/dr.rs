//! LVS/DR: the frame goes to the real server unchanged but for its Ethernet
//! header. The real server holds the VIP on a non-ARPing interface and answers
//! the client directly, so the director never sees the replies.

use crate::packet::rewrite::{self, EthAddrs};

/// Readdresses the frame to the real server's MAC, from the egress port's
/// MAC: `macs`, the next hop's (see [`EthAddrs`]).
#[inline(always)]
pub fn to_real(frame: &mut [u8], macs: &EthAddrs) {
    rewrite::set_eth_addrs(frame, macs);
}
