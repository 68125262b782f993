//! TCP resets the director sends itself, for a segment to a virtual service
//! that belongs to no connection and opens none (after a restart, or a
//! connection long expired): where IPVS hands such a segment to the local
//! stack, which answers with a reset, xvs answers it the same way instead of
//! dropping it, so the client learns at once that the connection is gone
//! rather than hanging until its own timeout.
//!
//! The reset is built in place of the segment and goes back out of the
//! interface it came in on: MACs swapped, addresses and ports swapped, no IP
//! options or extension headers, no payload. Sequence numbers follow RFC 793
//! §3.4 (as Linux's `tcp_v4_send_reset`): a segment with ACK gets `RST` with
//! `seq = SEG.ACK`; one without gets `RST|ACK` with `ack = SEG.SEQ +
//! SEG.LEN` (SYN and FIN counting one each). A reset is never answered.

use super::checksum::{self, read_u16, write_u16};
use super::frame::Frame;
use super::parse::{IpVersion, Parsed, TcpFlags, Transport};
use super::L4Proto;

const RESET_TTL: u8 = 64;

/// Replaces the TCP segment in `frame` with the reset that answers it.
/// Returns false, changing nothing, if the segment is a reset itself or is
/// not TCP.
pub fn answer_with_reset(frame: &mut Frame<'_>, p: &Parsed) -> bool {
    let Transport::Tcp { flags } = p.transport else {
        return false;
    };
    if flags.rst() {
        return false;
    }
    let d = frame.data_mut();
    let Some(tcp) = d.get(p.l4..p.l4 + 20) else {
        return false;
    };
    let (sport, dport) = (read_u16(tcp, 0), read_u16(tcp, 2));
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let header_len = usize::from(tcp[12] >> 4) * 4;
    let payload = (p.ip_end()).saturating_sub(p.l4 + header_len) as u32;
    let (out_seq, out_ack, out_flags) = if flags.ack() {
        (ack, 0, TcpFlags::RST)
    } else {
        let len = payload + u32::from(flags.syn()) + u32::from(flags.fin());
        (0, seq.wrapping_add(len), TcpFlags::RST | TcpFlags::ACK)
    };

    let ip_len = match p.version {
        IpVersion::V4 => 20,
        IpVersion::V6 => 40,
    };
    let end = p.l3 + ip_len + 20;
    if d.len() < end {
        return false;
    }
    // MACs back toward the sender.
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&d[..12]);
    d[..6].copy_from_slice(&macs[6..12]);
    d[6..12].copy_from_slice(&macs[..6]);
    let (ip, rest) = d[p.l3..end].split_at_mut(ip_len);
    let pseudo = match p.version {
        IpVersion::V4 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&ip[12..20]);
            ip[0] = 0x45;
            ip[1] = 0;
            write_u16(ip, 2, 40);
            write_u16(ip, 4, 0);
            write_u16(ip, 6, 0x4000); // DF
            ip[8] = RESET_TTL;
            ip[9] = L4Proto::Tcp.number();
            write_u16(ip, 10, 0);
            ip[12..16].copy_from_slice(&a[4..8]);
            ip[16..20].copy_from_slice(&a[..4]);
            let c = checksum::finish(checksum::sum(ip, 0));
            write_u16(ip, 10, c);
            checksum::pseudo_header_sum_of(&ip[12..20], L4Proto::Tcp.number(), 20)
        }
        IpVersion::V6 => {
            let mut a = [0u8; 32];
            a.copy_from_slice(&ip[8..40]);
            ip[0] = 0x60;
            ip[1..4].fill(0);
            write_u16(ip, 4, 20);
            ip[6] = L4Proto::Tcp.number();
            ip[7] = RESET_TTL;
            ip[8..24].copy_from_slice(&a[16..32]);
            ip[24..40].copy_from_slice(&a[..16]);
            checksum::pseudo_header_sum_of(&ip[8..40], L4Proto::Tcp.number(), 20)
        }
    };
    let tcp = rest;
    write_u16(tcp, 0, dport);
    write_u16(tcp, 2, sport);
    tcp[4..8].copy_from_slice(&out_seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&out_ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = out_flags;
    write_u16(tcp, 14, 0); // window
    write_u16(tcp, 16, 0);
    write_u16(tcp, 18, 0); // urgent pointer
    let c = checksum::finish(checksum::sum(tcp, pseudo));
    write_u16(tcp, 16, c);
    frame.truncate(end);
    true
}
