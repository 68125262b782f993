//! A worker's flow cache: for the IPv4 client→VIP flows this worker
//! forwarded lately, the connection entry the table's lookup found
//! ([`Remembered`]) and the service and real server it goes to, so that
//! the next packet of the flow skips the service lookup, the connection
//! lookup and the real server's search ([`super::Engine`]'s `cached`).
//!
//! Direct-mapped, one slot per hash of the flow's key; a flow whose slot
//! another took is found by the lookups as before and takes the slot back.
//! Nothing here is trusted: an entry only names where to look, and the
//! connection table says whether its entry there is still the flow's and
//! the packet leaves it as it is ([`ConnTable::quiet_remembered`]);
//! every other packet takes the lookups. The service and real server
//! positions are those of the snapshot the entry was made under: the
//! cache is emptied with every new snapshot.
//!
//! [`ConnTable::quiet_remembered`]: crate::conntrack::ConnTable::quiet_remembered

use crate::conntrack::Remembered;
use crate::packet::V4Flow;
use crate::service::ServiceIndex;

/// Slots of a cache: a power of two.
const SLOTS: usize = 4096;

/// A flow's key as two words: the addresses, then the ports and protocol.
#[inline(always)]
fn key_words(f: &V4Flow) -> (u64, u64) {
    let addrs = u64::from(u32::from(f.src)) << 32 | u64::from(u32::from(f.dst));
    let ports = u64::from(f.sport) << 16 | u64::from(f.dport) | u64::from(f.proto.number()) << 32;
    (addrs, ports)
}

/// What the cache holds of one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Cached {
    addrs: u64,
    /// Ports and protocol: never 0 for a filled slot (the protocol is TCP
    /// or UDP), so that an empty slot matches no frame.
    ports: u64,
    pub conn: Remembered,
    pub si: u16,
    pub ri: u16,
}

pub(super) struct FlowCache {
    slots: Box<[Cached]>,
}

impl FlowCache {
    pub fn new() -> FlowCache {
        FlowCache {
            slots: vec![Cached::default(); SLOTS].into_boxed_slice(),
        }
    }

    #[inline(always)]
    fn index(addrs: u64, ports: u64) -> usize {
        let h = (addrs ^ ports.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// The flow's entry, if its slot holds it.
    #[inline(always)]
    pub fn get(&self, f: &V4Flow) -> Option<&Cached> {
        let (addrs, ports) = key_words(f);
        let c = self.slots.get(Self::index(addrs, ports))?;
        (c.addrs == addrs && c.ports == ports).then_some(c)
    }

    /// Keeps `conn` and the positions of its service and real server for
    /// the flow of `f`, in place of whatever its slot held. Positions past
    /// 16 bits are not kept.
    #[inline(always)]
    pub fn put(&mut self, f: &V4Flow, conn: Remembered, si: ServiceIndex, ri: usize) {
        let (Ok(si), Ok(ri)) = (u16::try_from(si), u16::try_from(ri)) else {
            return;
        };
        let (addrs, ports) = key_words(f);
        if let Some(c) = self.slots.get_mut(Self::index(addrs, ports)) {
            *c = Cached {
                addrs,
                ports,
                conn,
                si,
                ri,
            };
        }
    }

    /// The flow's entry, to change in a test.
    #[cfg(test)]
    pub fn get_mut(&mut self, f: &V4Flow) -> Option<&mut Cached> {
        let (addrs, ports) = key_words(f);
        let c = self.slots.get_mut(Self::index(addrs, ports))?;
        (c.addrs == addrs && c.ports == ports).then_some(c)
    }

    /// Forgets every flow: a new snapshot's positions are its own.
    pub fn clear(&mut self) {
        self.slots.fill(Cached::default());
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::packet::{parse_flow, Frame, L4Proto};
    use crate::pipeline::testnet::{self, pipeline, Pkt, ACK, PORT_DR, PORT_NAT, SYN};
    use crate::pipeline::Pipeline;
    use crate::verdict::Verdict;
    use crate::Millis;

    /// The frame `process` makes of `bytes`, with its verdict.
    fn run(p: &mut Pipeline, bytes: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        buf[..bytes.len()].copy_from_slice(bytes);
        let mut f = Frame::new(&mut buf, 0, bytes.len());
        let v = p.process(Millis(2), 0, &mut f);
        (v, f.data().to_vec())
    }

    /// The destination address of an IPv4 frame.
    fn dst(frame: &[u8]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]))
    }

    /// A pipeline with the client's NAT connection open and established,
    /// and the connection's data segment.
    fn established() -> (Pipeline, Vec<u8>) {
        let n = testnet::v4();
        let mut p = pipeline();
        run(
            &mut p,
            &Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, SYN).bytes(),
        );
        let ack = Pkt::tcp(n.client, 40000, n.vip, PORT_NAT, ACK)
            .payload(vec![7; 10])
            .bytes();
        let (v, out) = run(&mut p, &ack);
        assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
        assert_eq!(dst(&out), n.rs_nat);
        (p, ack)
    }

    #[test]
    fn a_cached_flow_is_forwarded_by_what_the_cache_holds() {
        let (mut p, ack) = established();
        let f = parse_flow(&ack).unwrap();
        // Point the flow's entry at the DR service's real server: the next
        // segment goes there unchanged (DR), which only the cache's path
        // can do (the lookups find the NAT service and its server).
        let snap = p.snapshot().clone();
        let n = testnet::v4();
        let (dr, _) = snap
            .services
            .find_v4(
                L4Proto::Tcp,
                match n.vip {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => unreachable!(),
                },
                PORT_DR,
            )
            .unwrap();
        let c = p.engine.flows.get_mut(&f).expect("filled by the hit");
        c.si = dr as u16;
        c.ri = 0;
        let (v, out) = run(&mut p, &ack);
        assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
        assert_eq!(dst(&out), n.vip, "DR leaves the destination as it is");
        // A new snapshot empties the cache: the lookups again, NAT.
        p.set_snapshot(snap);
        assert_eq!(p.engine.flows.get(&f), None);
        assert_eq!(dst(&run(&mut p, &ack).1), n.rs_nat);
    }

    #[test]
    fn a_cached_flow_whose_connection_is_gone_takes_the_lookups() {
        let (mut p, ack) = established();
        let f = parse_flow(&ack).unwrap();
        assert!(p.engine.flows.get(&f).is_some());
        let conn = p.conns().lookup_original(&f.key(), Millis(2)).unwrap();
        assert!(p.conns().remove(&conn.handle, Millis(2)));
        // No connection: the segment is answered with a reset (or dropped
        // past the reset budget), not sent to the real server.
        let (v, out) = run(&mut p, &ack);
        assert_ne!(dst(&out), testnet::v4().rs_nat, "{v:?}");
        assert!(p.conns().lookup_original(&f.key(), Millis(2)).is_none());
    }

    fn flow(sport: u16, proto: L4Proto) -> V4Flow {
        V4Flow {
            src: Ipv4Addr::new(203, 0, 113, 7),
            dst: Ipv4Addr::new(192, 0, 2, 1),
            sport,
            dport: 80,
            ip_len: 40,
            proto,
            tcp_flags: 0x10,
        }
    }

    #[test]
    fn a_flow_is_found_as_it_was_kept_and_only_its_own_key_finds_it() {
        let mut c = FlowCache::new();
        let f = flow(40000, L4Proto::Tcp);
        assert_eq!(c.get(&f), None, "an empty cache holds nothing");
        c.put(&f, Remembered::default(), 3, 5);
        let got = c.get(&f).expect("kept");
        assert_eq!((got.si, got.ri), (3, 5));
        // The same addresses and ports of the other protocol, or another
        // port: not this flow, whatever slot they hash to.
        assert_eq!(c.get(&flow(40000, L4Proto::Udp)), None);
        assert_eq!(c.get(&flow(40001, L4Proto::Tcp)), None);
        c.clear();
        assert_eq!(c.get(&f), None, "cleared");
    }

    #[test]
    fn positions_past_sixteen_bits_are_not_kept() {
        let mut c = FlowCache::new();
        let f = flow(40000, L4Proto::Tcp);
        c.put(&f, Remembered::default(), 1 << 16, 0);
        assert_eq!(c.get(&f), None);
        c.put(&f, Remembered::default(), 0, 1 << 16);
        assert_eq!(c.get(&f), None);
    }

    #[test]
    fn an_empty_slot_matches_no_frame_of_zero_addresses_and_ports() {
        let c = FlowCache::new();
        let mut f = flow(0, L4Proto::Tcp);
        f.src = Ipv4Addr::UNSPECIFIED;
        f.dst = Ipv4Addr::UNSPECIFIED;
        f.dport = 0;
        assert_eq!(c.get(&f), None);
    }
}
