//! LVS/TUN: the client's packet, untouched, inside an outer IP header from the
//! director to the real server. The real server decapsulates and answers the
//! client directly from the VIP.
//!
//! A packet that would exceed the egress MTU once encapsulated: with DF set
//! (always, for IPv6) the client is told the usable MTU with an ICMP error, as
//! IPVS does; without DF it is dropped and counted, since xvs does not
//! fragment (IPVS lets the kernel fragment the outer packet instead).

use std::net::{IpAddr, Ipv4Addr};

use crate::neigh::NextHop;
use crate::packet::encap::{self, EncapError, Inner4};
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
    rewrite::set_macs(frame.data_mut(), &hop.src_mac, &hop.dst_mac);
    Ok(TunOutcome::Encapsulated)
}

/// The frame headers toward one IPv4 TUN real server whose next hop is
/// resolved, precomputed with the snapshot: the frame path of
/// [`to_real4`], which writes them without choosing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template4 {
    /// Destination then source MAC, as they lie in the Ethernet header.
    macs: rewrite::EthAddrs,
    outer: encap::Outer4,
    /// The longest inner IPv4 packet that fits the egress MTU once
    /// encapsulated.
    max_inner: u32,
}

impl Template4 {
    /// The headers from `tunnel_src` to `rip` by `hop`, out of a port of
    /// `egress_mtu`.
    pub fn new(tunnel_src: Ipv4Addr, rip: Ipv4Addr, hop: &NextHop, egress_mtu: u32) -> Template4 {
        Template4 {
            macs: rewrite::eth_addrs(&hop.src_mac, &hop.dst_mac),
            outer: encap::Outer4::new(tunnel_src, rip),
            max_inner: egress_mtu.saturating_sub(encap::IPV4_HEADER_LEN as u32),
        }
    }

    /// Whether [`to_real4`] takes the IPv4 packet: not too big once
    /// encapsulated. Any other (and any IPv6 packet) goes through
    /// [`to_real`].
    #[inline(always)]
    pub fn fits(&self, p: Inner4) -> bool {
        p.ip_len <= self.max_inner as usize
    }
}

/// [`to_real`] of an IPv4 packet that `t` [fits](Template4::fits), with
/// the template of the same tunnel source, real server, next hop and MTU:
/// the same frame, [`TunOutcome::Encapsulated`] being the only outcome.
#[inline(always)]
pub fn to_real4(
    frame: &mut Frame<'_>,
    p: Inner4,
    t: &Template4,
    ip_id: u16,
) -> Result<(), DropReason> {
    let d = encap::encapsulate4(frame, p, &t.outer, ip_id).map_err(|_| DropReason::NoRoom)?;
    // Always there: the frame holds an IP packet behind its Ethernet header.
    rewrite::set_eth_addrs(d, &t.macs);
    Ok(())
}
