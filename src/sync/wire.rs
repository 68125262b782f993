//! The sync wire format: one UDP datagram is a [`Header`], a body of its
//! [`Kind`], and an HMAC-SHA256 tag over everything before it.
//!
//! ```text
//!  0      2   3    4       5    6      8      10     12          16
//!  +------+---+----+-------+----+------+------+------+-----------+
//!  | "XS" |ver|kind|syncid | 0  | len  |count |  0   | sender    |
//!  +------+---+----+-------+----+------+------+------+-----------+
//!  | seq (u64, every datagram)  | time_ms (u64, sender's wall clock) |
//!  +----------------------------+-----------------------------------+
//!  | body (kind's)  ...                         | tag (32 bytes)    |
//! ```
//!
//! All numbers are big-endian. `len` is the whole datagram, tag included:
//! a datagram shorter than it says is [`Reject::Truncated`], before any
//! MAC is computed. Bodies:
//! - [`Kind::Stream`]: `stream_seq: u64`, then `count` [`Entry`]s. The
//!   stream is what a master sends everyone; its own sequence (apart from
//!   the header's, which every datagram has and replay protection uses)
//!   is what receivers find gaps in.
//! - [`Kind::Nack`]: `target: u32`, then `count` ranges `(from, to)` of
//!   stream sequence numbers (inclusive) the sender misses of `target`.
//! - [`Kind::ResyncRequest`]: `target: u32` (0: any master).
//! - [`Kind::Bulk`]: `target: u32, bulk_id: u32, index: u32, stream_seq:
//!   u64`, then `count` entries: part of a full table for `target` (0: a
//!   refresh for all). `stream_seq` is the sender's next stream number when
//!   it took the table: the stream from there on is what the bulk lacks.
//! - [`Kind::BulkEnd`]: `target, bulk_id, datagrams, entries` (u32 each),
//!   then `stream_seq: u64` as in its bulk.
//!
//! Entries are self-delimiting (a kind byte, a flags byte whose bit 0 says
//! IPv6); addresses are 4 or 16 bytes. A [`ServicesChunk`] is one piece of
//! the sender's service configuration (`ipvsadm -S -n` text):
//! `kind, 0, 0, 0, generation: u32, index: u16, count: u16, len: u16, 0: u16`,
//! then `len` bytes of text. A connection entry carries the real
//! server by address and port, never by [`crate::service::RealId`]: ids are
//! each director's own.
//!
//! Decoding never panics and allocates only the entries it returns; any
//! inconsistency is a [`Reject`] with a reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::conntrack::ConnState;
use crate::packet::{FlowKey, L4Proto};
use crate::service::{ForwardMethod, ServiceKey};

pub const MAGIC: [u8; 2] = *b"XS";
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 32;
pub const TAG_LEN: usize = 32;
/// The smallest datagram: a header and a tag.
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// The largest connection entry (IPv6, with a template); a
/// [`ServicesChunk`] is cut to fit the datagram it rides in.
pub const MAX_ENTRY_LEN: usize = 16 + 4 * 16;

/// What a datagram is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Stream = 1,
    Nack = 2,
    ResyncRequest = 3,
    Bulk = 4,
    BulkEnd = 5,
}

impl Kind {
    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Stream,
            2 => Kind::Nack,
            3 => Kind::ResyncRequest,
            4 => Kind::Bulk,
            5 => Kind::BulkEnd,
            _ => return None,
        })
    }
}

/// Why a datagram was refused; each is counted, none touches the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than a header and tag, or than its header says.
    Truncated,
    /// Not our magic or version, a length past the datagram, an unknown
    /// kind, a body that does not parse.
    Malformed,
    /// The tag does not match: not made with our key, or altered.
    BadMac,
    /// Its sequence number was seen already, or is too old to tell.
    Replayed,
    /// Its timestamp is too far from our clock.
    Stale,
    /// Another sync id (another cluster sharing the group).
    SyncId,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::Truncated,
        Reject::Malformed,
        Reject::BadMac,
        Reject::Replayed,
        Reject::Stale,
        Reject::SyncId,
    ];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Malformed => "malformed",
            Reject::BadMac => "bad_mac",
            Reject::Replayed => "replayed",
            Reject::Stale => "stale",
            Reject::SyncId => "syncid",
        }
    }
}

/// The fixed part of every datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub syncid: u8,
    pub count: u16,
    /// Random per start (or configured): the sender's identity.
    pub sender: u32,
    /// Per sender, one up for every datagram (replay protection).
    pub seq: u64,
    /// The sender's wall clock, Unix milliseconds.
    pub time_ms: u64,
}

/// A connection as sync carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRecord {
    /// Client → VIP.
    pub key: FlowKey,
    pub real: SocketAddr,
    pub method: ForwardMethod,
    pub state: ConnState,
    /// Milliseconds left, as the sender counted them.
    pub timeout_ms: u32,
    /// The masked client of the persistence template that placed it
    /// (protocol, VIP and port are the connection's).
    pub template: Option<IpAddr>,
}

/// A persistence template: `(proto, masked client, VIP, vport) → real`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateRecord {
    pub proto: L4Proto,
    pub client: IpAddr,
    pub vip: IpAddr,
    pub vport: u16,
    pub real: SocketAddr,
    pub timeout_ms: u32,
}

/// A real server's health as the sender's checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthRecord {
    pub service: ServiceKey,
    pub real: SocketAddr,
    pub up: bool,
}

/// Piece `index` of `count` of generation `generation` of the sender's
/// service configuration, as `ipvsadm -S -n` prints its configured model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesChunk {
    /// One up for every change of the sender's configuration.
    pub generation: u32,
    pub index: u16,
    /// At least 1; `index < count`.
    pub count: u16,
    pub bytes: Vec<u8>,
}

/// The fixed part of a [`ServicesChunk`] entry, before its bytes.
pub const SERVICES_CHUNK_HEADER: usize = 16;

/// One thing a datagram tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Conn(ConnRecord),
    Template(TemplateRecord),
    /// The connection of this client → VIP key ended.
    Closed(FlowKey),
    Health(HealthRecord),
    Services(ServicesChunk),
}

const E_CONN: u8 = 1;
const E_TEMPLATE: u8 = 2;
const E_CLOSED: u8 = 3;
const E_HEALTH: u8 = 4;
const E_SERVICES: u8 = 5;
const F_V6: u8 = 1;
const F_TEMPLATE: u8 = 2;

impl Entry {
    /// Its encoded length.
    pub fn len(&self) -> usize {
        let a = |v6: bool| if v6 { 16 } else { 4 };
        match self {
            Entry::Conn(c) => {
                let n = a(c.key.src.is_ipv6());
                16 + 3 * n + if c.template.is_some() { n } else { 0 }
            }
            Entry::Template(t) => 12 + 3 * a(t.client.is_ipv6()),
            Entry::Closed(k) => 8 + 2 * a(k.src.is_ipv6()),
            Entry::Health(h) => 8 + 2 * a(h.real.is_ipv6()),
            Entry::Services(c) => SERVICES_CHUNK_HEADER + c.bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the entry to `out`. Addresses of one entry are of one
    /// family (the table holds no other); a mixed one is written with the
    /// first address's family and the others as that family's zero.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Entry::Conn(c) => {
                let v6 = c.key.src.is_ipv6();
                let flags = (v6 as u8 * F_V6) | (c.template.is_some() as u8 * F_TEMPLATE);
                out.extend_from_slice(&[
                    E_CONN,
                    flags,
                    proto_code(c.key.proto),
                    method_code(c.method),
                    c.state as u8,
                    0,
                ]);
                out.extend_from_slice(&c.key.sport.to_be_bytes());
                out.extend_from_slice(&c.key.dport.to_be_bytes());
                out.extend_from_slice(&c.real.port().to_be_bytes());
                out.extend_from_slice(&c.timeout_ms.to_be_bytes());
                put_addr(out, v6, c.key.src);
                put_addr(out, v6, c.key.dst);
                put_addr(out, v6, c.real.ip());
                if let Some(t) = c.template {
                    put_addr(out, v6, t);
                }
            }
            Entry::Template(t) => {
                let v6 = t.client.is_ipv6();
                out.extend_from_slice(&[E_TEMPLATE, v6 as u8 * F_V6, proto_code(t.proto), 0]);
                out.extend_from_slice(&t.vport.to_be_bytes());
                out.extend_from_slice(&t.real.port().to_be_bytes());
                out.extend_from_slice(&t.timeout_ms.to_be_bytes());
                put_addr(out, v6, t.client);
                put_addr(out, v6, t.vip);
                put_addr(out, v6, t.real.ip());
            }
            Entry::Closed(k) => {
                let v6 = k.src.is_ipv6();
                out.extend_from_slice(&[E_CLOSED, v6 as u8 * F_V6, proto_code(k.proto), 0]);
                out.extend_from_slice(&k.sport.to_be_bytes());
                out.extend_from_slice(&k.dport.to_be_bytes());
                put_addr(out, v6, k.src);
                put_addr(out, v6, k.dst);
            }
            Entry::Health(h) => {
                let v6 = h.real.is_ipv6();
                out.extend_from_slice(&[
                    E_HEALTH,
                    v6 as u8 * F_V6,
                    proto_code(h.service.proto),
                    h.up as u8,
                ]);
                out.extend_from_slice(&h.service.port.to_be_bytes());
                out.extend_from_slice(&h.real.port().to_be_bytes());
                put_addr(out, v6, h.service.addr);
                put_addr(out, v6, h.real.ip());
            }
            Entry::Services(c) => {
                out.extend_from_slice(&[E_SERVICES, 0, 0, 0]);
                out.extend_from_slice(&c.generation.to_be_bytes());
                out.extend_from_slice(&c.index.to_be_bytes());
                out.extend_from_slice(&c.count.to_be_bytes());
                out.extend_from_slice(&(c.bytes.len() as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&c.bytes);
            }
        }
    }

    /// Reads one entry from the front of `r`.
    fn decode(r: &mut Reader<'_>) -> Option<Entry> {
        let kind = r.u8()?;
        let flags = r.u8()?;
        if kind == E_SERVICES {
            r.take(2)?;
            let generation = r.u32()?;
            let (index, count, len) = (r.u16()?, r.u16()?, r.u16()?);
            r.take(2)?;
            if index >= count {
                return None;
            }
            let bytes = r.take(len as usize)?.to_vec();
            return Some(Entry::Services(ServicesChunk {
                generation,
                index,
                count,
                bytes,
            }));
        }
        let v6 = flags & F_V6 != 0;
        let proto = proto_from(r.u8()?)?;
        Some(match kind {
            E_CONN => {
                let method = method_from(r.u8()?)?;
                let state = ConnState::from_code(r.u8()?)?;
                r.u8()?;
                let (sport, dport, rport) = (r.u16()?, r.u16()?, r.u16()?);
                let timeout_ms = r.u32()?;
                let (src, dst, rip) = (r.addr(v6)?, r.addr(v6)?, r.addr(v6)?);
                let template = if flags & F_TEMPLATE != 0 {
                    Some(r.addr(v6)?)
                } else {
                    None
                };
                Entry::Conn(ConnRecord {
                    key: FlowKey::new(proto, src, sport, dst, dport),
                    real: SocketAddr::new(rip, rport),
                    method,
                    state,
                    timeout_ms,
                    template,
                })
            }
            E_TEMPLATE => {
                r.u8()?;
                let (vport, rport, timeout_ms) = (r.u16()?, r.u16()?, r.u32()?);
                let (client, vip, rip) = (r.addr(v6)?, r.addr(v6)?, r.addr(v6)?);
                Entry::Template(TemplateRecord {
                    proto,
                    client,
                    vip,
                    vport,
                    real: SocketAddr::new(rip, rport),
                    timeout_ms,
                })
            }
            E_CLOSED => {
                r.u8()?;
                let (sport, dport) = (r.u16()?, r.u16()?);
                let (src, dst) = (r.addr(v6)?, r.addr(v6)?);
                Entry::Closed(FlowKey::new(proto, src, sport, dst, dport))
            }
            E_HEALTH => {
                let up = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let (vport, rport) = (r.u16()?, r.u16()?);
                let (vip, rip) = (r.addr(v6)?, r.addr(v6)?);
                Entry::Health(HealthRecord {
                    service: ServiceKey {
                        proto,
                        addr: vip,
                        port: vport,
                    },
                    real: SocketAddr::new(rip, rport),
                    up,
                })
            }
            _ => return None,
        })
    }
}

/// A datagram's body, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Stream {
        stream_seq: u64,
        entries: Vec<Entry>,
    },
    Nack {
        target: u32,
        ranges: Vec<(u64, u64)>,
    },
    ResyncRequest {
        target: u32,
    },
    Bulk {
        target: u32,
        bulk_id: u32,
        index: u32,
        stream_seq: u64,
        entries: Vec<Entry>,
    },
    BulkEnd {
        target: u32,
        bulk_id: u32,
        datagrams: u32,
        entries: u32,
        stream_seq: u64,
    },
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Stream { .. } => Kind::Stream,
            Body::Nack { .. } => Kind::Nack,
            Body::ResyncRequest { .. } => Kind::ResyncRequest,
            Body::Bulk { .. } => Kind::Bulk,
            Body::BulkEnd { .. } => Kind::BulkEnd,
        }
    }

    fn count(&self) -> usize {
        match self {
            Body::Stream { entries, .. } | Body::Bulk { entries, .. } => entries.len(),
            Body::Nack { ranges, .. } => ranges.len(),
            Body::ResyncRequest { .. } | Body::BulkEnd { .. } => 0,
        }
    }
}

/// The bytes of the fixed part of a body of this kind.
pub fn body_prefix_len(kind: Kind) -> usize {
    match kind {
        Kind::Stream => 8,
        Kind::Nack | Kind::ResyncRequest => 4,
        Kind::Bulk => 20,
        Kind::BulkEnd => 24,
    }
}

/// The shared secret datagrams are authenticated with.
#[derive(Clone)]
pub struct Key(Hmac<Sha256>);

impl Key {
    /// A key from the shared secret's bytes (any length; HMAC hashes a
    /// long one).
    pub fn new(secret: &[u8]) -> Key {
        Key(Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"))
    }

    /// The well-known empty key of `--sync-insecure`: datagrams are still
    /// checked for damage, but anyone can make them.
    pub fn insecure() -> Key {
        Key::new(b"")
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.0.clone();
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let mut m = self.0.clone();
        m.update(bytes);
        m.verify_slice(tag).is_ok()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Encodes one datagram: header, body, tag.
pub fn encode(header: &Header, body: &Body, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(body.kind() as u8);
    out.push(header.syncid);
    out.push(0);
    out.extend_from_slice(&[0, 0]); // len, below
    out.extend_from_slice(&(body.count() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&header.sender.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.time_ms.to_be_bytes());
    match body {
        Body::Stream {
            stream_seq,
            entries,
        } => {
            out.extend_from_slice(&stream_seq.to_be_bytes());
            entries.iter().for_each(|e| e.encode(&mut out));
        }
        Body::Nack { target, ranges } => {
            out.extend_from_slice(&target.to_be_bytes());
            for (a, b) in ranges {
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        Body::ResyncRequest { target } => out.extend_from_slice(&target.to_be_bytes()),
        Body::Bulk {
            target,
            bulk_id,
            index,
            stream_seq,
            entries,
        } => {
            for n in [target, bulk_id, index] {
                out.extend_from_slice(&n.to_be_bytes());
            }
            out.extend_from_slice(&stream_seq.to_be_bytes());
            entries.iter().for_each(|e| e.encode(&mut out));
        }
        Body::BulkEnd {
            target,
            bulk_id,
            datagrams,
            entries,
            stream_seq,
        } => {
            for n in [target, bulk_id, datagrams, entries] {
                out.extend_from_slice(&n.to_be_bytes());
            }
            out.extend_from_slice(&stream_seq.to_be_bytes());
        }
    }
    let len = (out.len() + TAG_LEN) as u16;
    out[6..8].copy_from_slice(&len.to_be_bytes());
    let tag = key.tag(&out);
    out.extend_from_slice(&tag);
    out
}

/// Checks a datagram's length, magic, version and tag, and decodes it.
/// Sync id, freshness and replay are the session's to check.
pub fn decode(bytes: &[u8], key: &Key) -> Result<(Header, Body), Reject> {
    if bytes.len() < MIN_LEN {
        return Err(Reject::Truncated);
    }
    if bytes[0..2] != MAGIC || bytes[2] != VERSION {
        return Err(Reject::Malformed);
    }
    let len = u16::from_be_bytes([bytes[6], bytes[7]]) as usize;
    if bytes.len() < len {
        return Err(Reject::Truncated);
    }
    if len < MIN_LEN || bytes.len() > len {
        return Err(Reject::Malformed);
    }
    let (signed, tag) = bytes.split_at(len - TAG_LEN);
    if !key.verify(signed, tag) {
        return Err(Reject::BadMac);
    }
    let mut r = Reader(signed);
    r.take(3); // magic, version
    let kind = r.u8().and_then(Kind::from_code);
    let syncid = r.u8();
    r.take(3); // reserved, len (checked above)
    let count = r.u16();
    r.take(2);
    let (sender, seq, time_ms) = (r.u32(), r.u64(), r.u64());
    let (Some(kind), Some(syncid), Some(count), Some(sender), Some(seq), Some(time_ms)) =
        (kind, syncid, count, sender, seq, time_ms)
    else {
        return Err(Reject::Malformed);
    };
    let header = Header {
        kind,
        syncid,
        count,
        sender,
        seq,
        time_ms,
    };
    let body = decode_body(kind, count as usize, &mut r).ok_or(Reject::Malformed)?;
    if !r.0.is_empty() {
        return Err(Reject::Malformed);
    }
    Ok((header, body))
}

fn decode_body(kind: Kind, count: usize, r: &mut Reader<'_>) -> Option<Body> {
    let entries = |r: &mut Reader<'_>| -> Option<Vec<Entry>> {
        // Each entry is at least 8 bytes: a count past that is a lie.
        if count > r.0.len() / 8 {
            return None;
        }
        (0..count).map(|_| Entry::decode(r)).collect()
    };
    Some(match kind {
        Kind::Stream => Body::Stream {
            stream_seq: r.u64()?,
            entries: entries(r)?,
        },
        Kind::Nack => {
            let target = r.u32()?;
            if count > r.0.len() / 16 {
                return None;
            }
            let ranges = (0..count)
                .map(|_| Some((r.u64()?, r.u64()?)))
                .collect::<Option<Vec<_>>>()?;
            Body::Nack { target, ranges }
        }
        Kind::ResyncRequest => Body::ResyncRequest { target: r.u32()? },
        Kind::Bulk => Body::Bulk {
            target: r.u32()?,
            bulk_id: r.u32()?,
            index: r.u32()?,
            stream_seq: r.u64()?,
            entries: entries(r)?,
        },
        Kind::BulkEnd => Body::BulkEnd {
            target: r.u32()?,
            bulk_id: r.u32()?,
            datagrams: r.u32()?,
            entries: r.u32()?,
            stream_seq: r.u64()?,
        },
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn addr(&mut self, v6: bool) -> Option<IpAddr> {
        Some(if v6 {
            let b: [u8; 16] = self.take(16)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            let b: [u8; 4] = self.take(4)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(b))
        })
    }
}

fn put_addr(out: &mut Vec<u8>, v6: bool, a: IpAddr) {
    match (v6, a) {
        (false, IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
        (true, IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
        (false, _) => out.extend_from_slice(&[0; 4]),
        (true, _) => out.extend_from_slice(&[0; 16]),
    }
}

fn proto_code(p: L4Proto) -> u8 {
    match p {
        L4Proto::Tcp => 6,
        L4Proto::Udp => 17,
        L4Proto::Icmp => 1,
        L4Proto::Icmpv6 => 58,
    }
}

fn proto_from(c: u8) -> Option<L4Proto> {
    match c {
        6 => Some(L4Proto::Tcp),
        17 => Some(L4Proto::Udp),
        _ => None,
    }
}

fn method_code(m: ForwardMethod) -> u8 {
    match m {
        ForwardMethod::Nat => 0,
        ForwardMethod::Tun => 1,
        ForwardMethod::Dr => 2,
    }
}

fn method_from(c: u8) -> Option<ForwardMethod> {
    match c {
        0 => Some(ForwardMethod::Nat),
        1 => Some(ForwardMethod::Tun),
        2 => Some(ForwardMethod::Dr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn conn(port: u16) -> Entry {
        Entry::Conn(ConnRecord {
            key: FlowKey::new(L4Proto::Tcp, v4("203.0.113.7"), port, v4("192.0.2.10"), 80),
            real: "198.51.100.2:8080".parse().unwrap(),
            method: ForwardMethod::Nat,
            state: ConnState::Established,
            timeout_ms: 900_000,
            template: None,
        })
    }

    fn header() -> Header {
        Header {
            kind: Kind::Stream,
            syncid: 7,
            count: 1,
            sender: 0x0102_0304,
            seq: 5,
            time_ms: 0x0000_0190_0000_0000,
        }
    }

    /// A stream datagram with one IPv4 connection, made with key "k".
    static STREAM_BYTES: [u8; 100] = [
        b'X', b'S', 2, 1, 7, 0, 0, 100, 0, 1, 0, 0, // magic ver kind syncid 0 len count 0
        1, 2, 3, 4, // sender
        0, 0, 0, 0, 0, 0, 0, 5, // seq
        0, 0, 1, 0x90, 0, 0, 0, 0, // time
        0, 0, 0, 0, 0, 0, 0, 9, // stream_seq
        1, 0, 6, 0, 1, 0, // conn, v4, tcp, nat, established
        0x30, 0x39, 0, 80, 0x1f, 0x90, // 12345 → 80, rport 8080
        0, 0x0d, 0xbb, 0xa0, // 900 000 ms
        203, 0, 113, 7, 192, 0, 2, 10, 198, 51, 100, 2, // client, vip, rip
        // tag: 32 bytes, checked by the test
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0,
    ];

    #[test]
    fn a_stream_datagram_is_laid_out_as_documented() {
        let key = Key::new(b"k");
        let body = Body::Stream {
            stream_seq: 9,
            entries: vec![conn(12345)],
        };
        let bytes = encode(&header(), &body, &key);
        assert_eq!(bytes.len(), STREAM_BYTES.len());
        assert_eq!(bytes[..68], STREAM_BYTES[..68]);
        assert_eq!(bytes[68..], key.tag(&bytes[..68]));
        assert_eq!(decode(&bytes, &key), Ok((header(), body)));
    }

    #[test]
    fn every_body_and_entry_kind_round_trips() {
        let key = Key::new(b"secret");
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let entries = vec![
            conn(1),
            Entry::Conn(ConnRecord {
                key: FlowKey::new(L4Proto::Udp, v6("2001:db8::7"), 53, v6("2001:db8::10"), 53),
                real: "[2001:db8:1::2]:5353".parse().unwrap(),
                method: ForwardMethod::Dr,
                state: ConnState::Udp,
                timeout_ms: 300_000,
                template: Some(v6("2001:db8::")),
            }),
            Entry::Template(TemplateRecord {
                proto: L4Proto::Tcp,
                client: v4("203.0.113.0"),
                vip: v4("192.0.2.10"),
                vport: 443,
                real: "198.51.100.3:443".parse().unwrap(),
                timeout_ms: 360_000,
            }),
            Entry::Closed(FlowKey::new(
                L4Proto::Tcp,
                v4("203.0.113.9"),
                999,
                v4("192.0.2.10"),
                80,
            )),
            Entry::Health(HealthRecord {
                service: ServiceKey {
                    proto: L4Proto::Tcp,
                    addr: v4("192.0.2.10"),
                    port: 80,
                },
                real: "198.51.100.2:8080".parse().unwrap(),
                up: false,
            }),
            Entry::Services(ServicesChunk {
                generation: 7,
                index: 1,
                count: 3,
                bytes: b"-A -t 192.0.2.10:80 -s rr\n".to_vec(),
            }),
        ];
        for e in &entries {
            let mut b = Vec::new();
            e.encode(&mut b);
            assert_eq!(b.len(), e.len(), "{e:?}");
        }
        let bodies = [
            Body::Stream {
                stream_seq: u64::MAX,
                entries: entries.clone(),
            },
            Body::Nack {
                target: 9,
                ranges: vec![(1, 3), (7, 7)],
            },
            Body::ResyncRequest { target: 0 },
            Body::Bulk {
                target: 3,
                bulk_id: 4,
                index: 5,
                stream_seq: 7,
                entries,
            },
            Body::BulkEnd {
                target: 3,
                bulk_id: 4,
                datagrams: 6,
                entries: 60,
                stream_seq: u64::MAX,
            },
        ];
        for body in bodies {
            let h = Header {
                kind: body.kind(),
                count: body.count() as u16,
                ..header()
            };
            let bytes = encode(&h, &body, &key);
            assert_eq!(decode(&bytes, &key), Ok((h, body)));
        }
    }

    #[test]
    fn damaged_or_foreign_datagrams_are_refused_by_reason() {
        let key = Key::new(b"k");
        let body = Body::Stream {
            stream_seq: 9,
            entries: vec![conn(1), conn(2)],
        };
        let good = encode(&header(), &body, &key);
        assert_eq!(decode(&good, &Key::new(b"other")), Err(Reject::BadMac));
        for cut in [0, 10, MIN_LEN - 1, MIN_LEN, good.len() - 1] {
            assert_eq!(decode(&good[..cut], &key), Err(Reject::Truncated), "{cut}");
        }
        let mut flipped = good.clone();
        flipped[50] ^= 1;
        assert_eq!(decode(&flipped, &key), Err(Reject::BadMac));
        let mut magic = good.clone();
        magic[0] = b'Y';
        assert_eq!(decode(&magic, &key), Err(Reject::Malformed));
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode(&longer, &key), Err(Reject::Malformed));
        // Authentic but nonsense: a count past the entries, a bad state.
        let mut lie = good[..good.len() - TAG_LEN].to_vec();
        lie[8..10].copy_from_slice(&3u16.to_be_bytes());
        let tag = key.tag(&lie);
        lie.extend_from_slice(&tag);
        assert_eq!(decode(&lie, &key), Err(Reject::Malformed));
        let mut state = good[..good.len() - TAG_LEN].to_vec();
        state[44] = 200;
        let tag = key.tag(&state);
        state.extend_from_slice(&tag);
        assert_eq!(decode(&state, &key), Err(Reject::Malformed));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let key = Key::insecure();
        let mut x = 0x1234_5678u32;
        for len in 0..300 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if b.len() >= 8 {
                b[0..3].copy_from_slice(&[b'X', b'S', 1]);
                b[6..8].copy_from_slice(&(len as u16).to_be_bytes());
            }
            if b.len() >= MIN_LEN {
                // Authentic garbage: the body parser runs on it.
                let tag = key.tag(&b[..len - TAG_LEN]);
                b[len - TAG_LEN..].copy_from_slice(&tag);
                assert_ne!(decode(&b, &key).err(), Some(Reject::BadMac));
            } else {
                assert_eq!(decode(&b, &key).err(), Some(Reject::Truncated));
            }
        }
    }
}
