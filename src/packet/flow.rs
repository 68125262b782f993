//! Flow keys: the five-tuple that names one direction of a connection.
//!
//! A [`FlowKey`] is what the connection table is indexed by. The client→virtual
//! service direction is the key a connection is created under; for NAT the real
//! server→client direction ([`FlowKey::reply_from`]) finds the same connection
//! when the answer comes back through the director.

use std::net::IpAddr;

/// The transport protocols a virtual service can be defined for, plus the ICMP
/// variants that only ever appear as the carrier of an error about a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum L4Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
    Icmpv6 = 58,
}

impl L4Proto {
    /// The IP protocol number (IPv4 `protocol`, IPv6 `next header`).
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(n: u8) -> Option<L4Proto> {
        match n {
            1 => Some(L4Proto::Icmp),
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            58 => Some(L4Proto::Icmpv6),
            _ => None,
        }
    }

    /// ipvsadm's name for the protocol of a service (`TCP`, `UDP`).
    pub fn name(self) -> &'static str {
        match self {
            L4Proto::Icmp => "ICMP",
            L4Proto::Tcp => "TCP",
            L4Proto::Udp => "UDP",
            L4Proto::Icmpv6 => "ICMPv6",
        }
    }
}

/// One direction of a transport flow. Both addresses are of the same family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: L4Proto,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    pub fn new(proto: L4Proto, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> FlowKey {
        FlowKey {
            proto,
            src,
            dst,
            sport,
            dport,
        }
    }

    /// The same flow seen from the other end: source and destination swapped.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// The key of the answers a NAT real server sends for this client→VIP flow
    /// once the director has rewritten the destination to `rip:rport`.
    pub fn reply_from(&self, rip: IpAddr, rport: u16) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: rip,
            dst: self.src,
            sport: rport,
            dport: self.sport,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_key_swaps_and_substitutes_the_real_server() {
        let k = FlowKey::new(
            L4Proto::Tcp,
            "203.0.113.7".parse().unwrap(),
            40000,
            "192.0.2.10".parse().unwrap(),
            80,
        );
        let r = k.reply_from("198.51.100.2".parse().unwrap(), 8080);
        assert_eq!(r.src, "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.sport, 8080);
        assert_eq!(r.dst, k.src);
        assert_eq!(r.dport, 40000);
        assert_eq!(k.reversed().reversed(), k);
    }
}
