//! LVS/DR: the frame goes to the real server unchanged but for its Ethernet
//! header. The real server holds the VIP on a non-ARPing interface and answers
//! the client directly, so the director never sees the replies.

use crate::neigh::NextHop;
use crate::packet::rewrite;

/// Readdresses the frame to the real server's MAC, from the egress port's MAC.
#[inline(always)]
pub fn to_real(frame: &mut [u8], hop: &NextHop) {
    rewrite::set_macs(frame, hop.src_mac, hop.dst_mac);
}
