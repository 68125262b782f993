//! LVS/TUN: the client's packet, untouched, inside an outer IP header from the
//! director to the real server. The real server decapsulates and answers the
//! client directly from the VIP.
//!
//! A packet that would exceed the egress MTU once encapsulated: with DF set
//! (always, for IPv6) the client is told the usable MTU with an ICMP error, as
//! IPVS does; without DF it is dropped and counted, since xvs does not
//! fragment (IPVS lets the kernel fragment the outer packet instead).

use std::net::IpAddr;

use crate::neigh::NextHop;
use crate::packet::encap::{self, EncapError};
use crate::packet::{icmp, rewrite, Frame, Parsed};
use crate::verdict::DropReason;

/// What became of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunOutcome {
    /// Encapsulated toward the real server; send it by the next hop's port.
    Encapsulated,
    /// Too big: the frame is now an ICMP error for the client; send it back
    /// out of the port it came in by.
    TooBig,
}

/// Encapsulates toward `rip` from `tunnel_src`, or turns an oversize DF
/// packet into an ICMP error for the sender.
pub fn to_real(
    frame: &mut Frame<'_>,
    p: &Parsed,
    tunnel_src: IpAddr,
    rip: IpAddr,
    hop: &NextHop,
    egress_mtu: u32,
    ip_id: u16,
) -> Result<TunOutcome, DropReason> {
    let overhead = encap::overhead(p.version);
    if p.ip_len + overhead > egress_mtu as usize {
        if !p.dont_fragment {
            return Err(DropReason::TunnelTooBig);
        }
        let mtu = egress_mtu.saturating_sub(overhead as u32);
        icmp::too_big(frame, p, mtu).map_err(|_| DropReason::NoRoom)?;
        return Ok(TunOutcome::TooBig);
    }
    encap::encapsulate(frame, p, tunnel_src, rip, ip_id).map_err(|e| match e {
        EncapError::NoRoom => DropReason::NoRoom,
        EncapError::FamilyMismatch => DropReason::AddressFamily,
    })?;
    rewrite::set_macs(frame.data_mut(), hop.src_mac, hop.dst_mac);
    Ok(TunOutcome::Encapsulated)
}
