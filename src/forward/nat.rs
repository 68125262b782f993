//! LVS/NAT (masquerading).
//!
//! Client → real server: destination VIP:vport becomes RIP:rport. Real server →
//! client (the director is the real server's gateway): source RIP:rport becomes
//! VIP:vport. Both directions are routed, so the TTL is decremented and the
//! MACs set toward the next hop. ICMP errors about a NATed flow get the same
//! rewrite in the header they quote and in their own header.

use std::net::IpAddr;

use crate::neigh::NextHop;
use crate::packet::rewrite::{self, EthAddrs, FamilyMismatch};
use crate::packet::{Parsed, Quoted, Side, V4Flow};
use crate::verdict::DropReason;

impl From<FamilyMismatch> for DropReason {
    fn from(_: FamilyMismatch) -> DropReason {
        DropReason::AddressFamily
    }
}

fn route(frame: &mut [u8], p: &Parsed, hop: &NextHop) -> Result<(), DropReason> {
    if !rewrite::decrement_ttl(frame, p) {
        return Err(DropReason::TtlExpired);
    }
    rewrite::set_macs(frame, &hop.src_mac, &hop.dst_mac);
    Ok(())
}

/// A client's packet to VIP:vport, readdressed to the real server
/// `rip:rport`, its MACs set to `macs` (the next hop's, see
/// [`rewrite::EthAddrs`]).
pub fn to_real(
    frame: &mut [u8],
    p: &Parsed,
    rip: IpAddr,
    rport: u16,
    macs: &EthAddrs,
) -> Result<(), DropReason> {
    if p.ttl <= 1 {
        return Err(DropReason::TtlExpired);
    }
    rewrite::route_endpoint(frame, p, Side::Dst, rip, rport)?;
    rewrite::set_eth_addrs(frame, macs);
    Ok(())
}

/// A real server's answer, made to come from `vip:vport`.
pub fn to_client(
    frame: &mut [u8],
    p: &Parsed,
    vip: IpAddr,
    vport: u16,
    hop: &NextHop,
) -> Result<(), DropReason> {
    if p.ttl <= 1 {
        return Err(DropReason::TtlExpired);
    }
    rewrite::route_endpoint(frame, p, Side::Src, vip, vport)?;
    rewrite::set_macs(frame, &hop.src_mac, &hop.dst_mac);
    Ok(())
}

/// [`to_real`] for the fast path's frame `f`, at constant offsets.
#[inline(always)]
pub fn to_real_v4(
    frame: &mut [u8],
    f: &V4Flow,
    rip: IpAddr,
    rport: u16,
    macs: &EthAddrs,
) -> Result<(), DropReason> {
    if f.ttl(frame) <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let IpAddr::V4(rip) = rip else {
        return Err(DropReason::AddressFamily);
    };
    rewrite::route_endpoint_v4(frame, f, Side::Dst, rip, rport);
    rewrite::set_eth_addrs(frame, macs);
    Ok(())
}

/// [`to_client`] for the fast path's frame `f`, at constant offsets.
#[inline(always)]
pub fn to_client_v4(
    frame: &mut [u8],
    f: &V4Flow,
    vip: IpAddr,
    vport: u16,
    hop: &NextHop,
) -> Result<(), DropReason> {
    if f.ttl(frame) <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let IpAddr::V4(vip) = vip else {
        return Err(DropReason::AddressFamily);
    };
    rewrite::route_endpoint_v4(frame, f, Side::Src, vip, vport);
    rewrite::set_macs(frame, &hop.src_mac, &hop.dst_mac);
    Ok(())
}

/// An ICMP error on its way to the client about a packet the director had
/// sent to the real server (it quotes client → RIP:rport): the quote must show
/// client → VIP:vport, and if the real server itself sent the error, its
/// source becomes the VIP too.
pub fn icmp_to_client(
    frame: &mut [u8],
    p: &Parsed,
    q: &Quoted,
    rip: IpAddr,
    vip: IpAddr,
    vport: u16,
    hop: &NextHop,
) -> Result<(), DropReason> {
    route(frame, p, hop)?;
    rewrite::rewrite_quoted_endpoint(frame, p, q, Side::Dst, vip, vport)?;
    if p.src == rip {
        rewrite::rewrite_addr(frame, p, Side::Src, vip)?;
    }
    rewrite::fix_icmp_checksum(frame, p);
    Ok(())
}

/// An ICMP error from the client's side about an answer the director sent
/// (it quotes VIP:vport → client), sent on to the real server: the quote must
/// show RIP:rport → client and the error is addressed to the real server.
pub fn icmp_to_real(
    frame: &mut [u8],
    p: &Parsed,
    q: &Quoted,
    rip: IpAddr,
    rport: u16,
    hop: &NextHop,
) -> Result<(), DropReason> {
    route(frame, p, hop)?;
    rewrite::rewrite_quoted_endpoint(frame, p, q, Side::Src, rip, rport)?;
    rewrite::rewrite_addr(frame, p, Side::Dst, rip)?;
    rewrite::fix_icmp_checksum(frame, p);
    Ok(())
}
