//! The frames `xvs-traffic` sends and how the sink reads them back.
//!
//! IPv4 over Ethernet, UDP or TCP. Flow `f` is the client address
//! `src + f / PORTS_PER_ADDR` and port `1024 + f % PORTS_PER_ADDR`. Every
//! frame carries a tag right after the L4 header:
//!
//! ```text
//! magic u16 (0x5856) | flow u32 | send time u32 (low bits of CLOCK_MONOTONIC ns) | seq u32 (UDP)
//! ```
//!
//! TCP carries the per-flow sequence number in the TCP sequence field
//! instead, so that a 64-byte TCP frame (10 bytes of payload) still holds a
//! whole tag. The send time's low 32 bits wrap every 4.29 s; a one-way
//! latency is their wrapping difference, valid below that.
//!
//! Checksums are built incrementally: the sum of everything fixed is taken
//! once, and each packet adds only the words that vary, so a 1500-byte frame
//! costs what a 64-byte one does.

use std::net::Ipv4Addr;

use xvs::packet::checksum::{finish, pseudo_header_sum, sum};

pub const MAGIC: u16 = 0x5856;
pub const PORTS_PER_ADDR: u32 = 64512;
const ETH: usize = 14;
const IP: usize = 20;
const UDP: usize = 8;
const TCP: usize = 20;
/// Bytes of the tag; TCP leaves the trailing sequence number out.
const TAG_UDP: usize = 14;
const TAG_TCP: usize = 10;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Udp => 17,
            Proto::Tcp => 6,
        }
    }
    fn l4_header(self) -> usize {
        match self {
            Proto::Udp => UDP,
            Proto::Tcp => TCP,
        }
    }
    fn tag(self) -> usize {
        match self {
            Proto::Udp => TAG_UDP,
            Proto::Tcp => TAG_TCP,
        }
    }
    /// The smallest frame that holds the headers and the tag.
    pub fn min_frame(self) -> usize {
        ETH + IP + self.l4_header() + self.tag()
    }
}

/// Everything about a frame that is the same for every packet of a run.
#[derive(Clone, Debug)]
pub struct Template {
    pub proto: Proto,
    pub size: usize,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// Sum of the fixed parts of the L4 checksum (pseudo-header without
    /// the source address, header without the source port, zero tag).
    l4_base: u32,
}

/// What varies per packet.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub flow: u32,
    pub seq: u32,
    pub time: u32,
    pub tcp_flags: u8,
}

impl Template {
    pub fn new(
        proto: Proto,
        size: usize,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        dport: u16,
    ) -> Template {
        let mut t = Template {
            proto,
            size,
            src_mac,
            dst_mac,
            src,
            dst,
            dport,
            l4_base: 0,
        };
        let mut frame = vec![0u8; size];
        t.write_fixed(&mut frame);
        let l4_len = (size - ETH - IP) as u32;
        let l4 = &frame[ETH + IP..];
        t.l4_base = sum(
            l4,
            pseudo_header_sum(&[0; 4], &dst.octets(), proto.number(), l4_len),
        );
        t
    }

    /// Writes the bytes that never change; the rest stays zero.
    pub fn write_fixed(&self, f: &mut [u8]) {
        let f = &mut f[..self.size];
        f.fill(0);
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[ETH..ETH + IP];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((self.size - ETH) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = self.proto.number();
        ip[16..20].copy_from_slice(&self.dst.octets());
        let l4 = &mut f[ETH + IP..];
        l4[2..4].copy_from_slice(&self.dport.to_be_bytes());
        match self.proto {
            Proto::Udp => {
                let len = (self.size - ETH - IP) as u16;
                l4[4..6].copy_from_slice(&len.to_be_bytes());
            }
            Proto::Tcp => {
                l4[12] = 5 << 4;
                l4[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
            }
        }
        let tag = self.proto.l4_header();
        l4[tag..tag + 2].copy_from_slice(&MAGIC.to_be_bytes());
    }

    /// The client address and port of `flow`.
    pub fn client(&self, flow: u32) -> (Ipv4Addr, u16) {
        let addr = u32::from(self.src).wrapping_add(flow / PORTS_PER_ADDR);
        (Ipv4Addr::from(addr), (1024 + flow % PORTS_PER_ADDR) as u16)
    }

    /// Patches a frame holding [`write_fixed`](Self::write_fixed)'s bytes
    /// into packet `s`; returns the frame length.
    pub fn stamp(&self, f: &mut [u8], s: Stamp) -> usize {
        let (addr, sport) = self.client(s.flow);
        let a = addr.octets();
        let f = &mut f[..self.size];
        {
            let ip = &mut f[ETH..ETH + IP];
            ip[12..16].copy_from_slice(&a);
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = finish(sum(ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let hdr = self.proto.l4_header();
        let l4 = &mut f[ETH + IP..];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[hdr + 2..hdr + 6].copy_from_slice(&s.flow.to_be_bytes());
        l4[hdr + 6..hdr + 10].copy_from_slice(&s.time.to_be_bytes());
        let words = |v: u32| (v >> 16) + (v & 0xffff);
        let mut c = self.l4_base
            + words(u32::from_be_bytes(a))
            + u32::from(sport)
            + words(s.flow)
            + words(s.time);
        match self.proto {
            Proto::Udp => {
                l4[hdr + 10..hdr + 14].copy_from_slice(&s.seq.to_be_bytes());
                c += words(s.seq);
                let mut v = finish(c);
                if v == 0 {
                    v = 0xffff;
                }
                l4[6..8].copy_from_slice(&v.to_be_bytes());
            }
            Proto::Tcp => {
                l4[4..8].copy_from_slice(&s.seq.to_be_bytes());
                l4[13] = s.tcp_flags;
                c += words(s.seq) + u32::from(s.tcp_flags);
                l4[16..18].copy_from_slice(&finish(c).to_be_bytes());
            }
        }
        self.size
    }
}

/// A tagged packet as the sink sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub flow: u32,
    pub seq: u32,
    pub time: u32,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds the tag in a frame, looking through one IPv4-in-IPv4 header (what
/// a TUN director sends). None for anything else.
pub fn parse(frame: &[u8]) -> Option<Seen> {
    if be16(frame, 12)? != 0x0800 {
        return None;
    }
    let mut ip = frame.get(ETH..)?;
    for _ in 0..2 {
        let ihl = usize::from(ip.first()? & 0x0f) * 4;
        if ip.first()? >> 4 != 4 || ihl < IP {
            return None;
        }
        let proto = *ip.get(9)?;
        let l4 = ip.get(ihl..)?;
        match proto {
            4 => ip = l4,
            17 => {
                let t = l4.get(UDP..)?;
                return (be16(t, 0)? == MAGIC).then_some(Seen {
                    flow: be32(t, 2)?,
                    time: be32(t, 6)?,
                    seq: be32(t, 10)?,
                });
            }
            6 => {
                let off = usize::from(l4.get(12)? >> 4) * 4;
                let t = l4.get(off..)?;
                return (be16(t, 0)? == MAGIC).then_some(Seen {
                    flow: be32(t, 2)?,
                    time: be32(t, 6)?,
                    seq: be32(l4, 4)?,
                });
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(proto: Proto, size: usize) -> Template {
        Template::new(
            proto,
            size,
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(192, 0, 2, 100),
            Ipv4Addr::new(203, 0, 113, 10),
            80,
        )
    }

    fn checksums_hold(f: &[u8]) {
        assert_eq!(finish(sum(&f[ETH..ETH + IP], 0)), 0, "IP checksum");
        let l4 = &f[ETH + IP..];
        let pseudo = pseudo_header_sum(&f[26..30], &f[30..34], f[23], l4.len() as u32);
        assert_eq!(finish(sum(l4, pseudo)), 0, "L4 checksum");
    }

    #[test]
    fn stamped_frames_carry_valid_checksums_and_parse_back() {
        for (proto, size) in [
            (Proto::Udp, 64),
            (Proto::Tcp, 64),
            (Proto::Udp, 1500),
            (Proto::Tcp, 1500),
        ] {
            let t = template(proto, size);
            let mut f = vec![0u8; 2048];
            t.write_fixed(&mut f);
            let s = Stamp {
                flow: 70_000,
                seq: 0xdead_beef,
                time: 0x1234_5678,
                tcp_flags: TCP_ACK | TCP_PSH,
            };
            let len = t.stamp(&mut f, s);
            assert_eq!(len, size);
            checksums_hold(&f[..len]);
            assert_eq!(
                parse(&f[..len]),
                Some(Seen {
                    flow: 70_000,
                    seq: 0xdead_beef,
                    time: 0x1234_5678
                })
            );
            assert_eq!(&f[26..30], &[192, 0, 2, 101]);
        }
    }

    #[test]
    fn parse_looks_through_ipip_and_ignores_the_rest() {
        let t = template(Proto::Udp, 64);
        let mut inner = vec![0u8; 64];
        t.write_fixed(&mut inner);
        t.stamp(
            &mut inner,
            Stamp {
                flow: 3,
                seq: 9,
                time: 1,
                tcp_flags: 0,
            },
        );
        let mut outer = inner[..ETH].to_vec();
        outer.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 4, 0, 0]);
        outer.extend_from_slice(&[198, 51, 100, 1, 198, 51, 100, 2]);
        outer.extend_from_slice(&inner[ETH..]);
        assert_eq!(parse(&outer).map(|s| (s.flow, s.seq)), Some((3, 9)));
        assert_eq!(parse(&outer[..40]), None);
        assert_eq!(parse(&[0u8; 10]), None);
        let mut arp = inner.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&arp), None);
    }
}
