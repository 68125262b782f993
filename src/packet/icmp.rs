//! ICMP errors the director sends itself: "fragmentation needed" (ICMPv4 type 3
//! code 4) and "packet too big" (ICMPv6 type 2), when a packet with DF set would
//! exceed the MTU once encapsulated. IPVS does the same for LVS/TUN.
//!
//! The error is built in place of the offending frame and goes back out of the
//! interface the frame came in on: MACs swapped, source address the address the
//! client sent to (the VIP), and as much of the original packet quoted as fits
//! in 576 bytes (IPv4, RFC 1812 §4.3.2.3) or 1280 bytes (IPv6, RFC 4443 §2.4).

use super::checksum::{self, write_u16};
use super::frame::{Frame, NoRoom};
use super::parse::{IpVersion, Parsed};
use super::L4Proto;

/// Largest IPv4 ICMP error, in bytes of IP packet.
const V4_ERROR_MAX: usize = 576;
/// Largest ICMPv6 error: the IPv6 minimum MTU.
const V6_ERROR_MAX: usize = 1280;
const ERROR_TTL: u8 = 64;
/// IPv4 TOS of ICMP errors: precedence "internetwork control", as Linux sends.
const ERROR_TOS: u8 = 0xc0;

/// Replaces the frame with an ICMP "too big" error about it, telling the
/// sender to use packets of at most `mtu` bytes.
pub fn too_big(frame: &mut Frame<'_>, p: &Parsed, mtu: u32) -> Result<(), NoRoom> {
    let (hdr, max) = match p.version {
        IpVersion::V4 => (20 + 8, V4_ERROR_MAX),
        IpVersion::V6 => (40 + 8, V6_ERROR_MAX),
    };
    let quote = p.ip_len.min(max - hdr);
    frame.truncate(p.l3 + quote);
    frame.insert_gap(p.l3, hdr)?;
    let d = frame.data_mut();
    // MACs back toward the sender.
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&d[..12]);
    d[..6].copy_from_slice(&macs[6..12]);
    d[6..12].copy_from_slice(&macs[..6]);
    let (out, quoted) = d[p.l3..].split_at_mut(hdr);
    match p.version {
        IpVersion::V4 => {
            out[0] = 0x45;
            out[1] = ERROR_TOS;
            write_u16(out, 2, (hdr + quote) as u16);
            write_u16(out, 4, 0);
            write_u16(out, 6, 0);
            out[8] = ERROR_TTL;
            out[9] = L4Proto::Icmp.number();
            write_u16(out, 10, 0);
            out[12..16].copy_from_slice(&quoted[16..20]);
            out[16..20].copy_from_slice(&quoted[12..16]);
            let c = checksum::finish(checksum::sum(&out[..20], 0));
            write_u16(out, 10, c);
            let icmp = &mut out[20..28];
            icmp[0] = 3;
            icmp[1] = 4;
            write_u16(icmp, 2, 0);
            write_u16(icmp, 4, 0);
            write_u16(icmp, 6, mtu.min(0xffff) as u16);
            let s = checksum::sum(quoted, checksum::sum(icmp, 0));
            write_u16(icmp, 2, checksum::finish(s));
        }
        IpVersion::V6 => {
            out[0] = 0x60;
            out[1..4].fill(0);
            write_u16(out, 4, (8 + quote) as u16);
            out[6] = L4Proto::Icmpv6.number();
            out[7] = ERROR_TTL;
            out[8..24].copy_from_slice(&quoted[24..40]);
            out[24..40].copy_from_slice(&quoted[8..24]);
            let (ip, icmp) = out.split_at_mut(40);
            icmp[0] = 2;
            icmp[1] = 0;
            write_u16(icmp, 2, 0);
            icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
            let pseudo = checksum::pseudo_header_sum(
                &ip[8..24],
                &ip[24..40],
                L4Proto::Icmpv6.number(),
                (8 + quote) as u32,
            );
            let s = checksum::sum(quoted, checksum::sum(icmp, pseudo));
            write_u16(icmp, 2, checksum::finish(s));
        }
    }
    Ok(())
}
