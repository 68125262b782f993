//! Connection sync's costs, per the unit a director pays them in:
//! - `encode/stream_50`: one stream datagram of 50 IPv4 connection entries
//!   (a full 1472-byte datagram) encoded and HMAC-SHA256-tagged.
//! - `decode/stream_50`: the same datagram checked (length, tag) and
//!   decoded: a backup's cost before it touches its table.
//! - `session/1000_connections`: a master session turning the events of
//!   1000 connections (open, established, FIN_WAIT, TIME_WAIT, closed: five
//!   each) into datagrams, and a backup session receiving them into a
//!   table of plain maps: the sync threads' CPU per 1000 new connections.
//!   The bytes and datagrams that makes are printed once at the start.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use xvs::conntrack::ConnState;
use xvs::packet::{FlowKey, L4Proto};
use xvs::pipeline::{ConnClosed, ConnEvent, Event};
use xvs::service::{ForwardMethod, RealId};
use xvs::sync::session::Table;
use xvs::sync::stats::Refused;
use xvs::sync::wire::{self, Body, ConnRecord, Entry, Header, Key, Kind};
use xvs::sync::{Now, Session, SessionConfig, SyncStats};
use xvs::Millis;

fn key(i: u32) -> FlowKey {
    FlowKey::new(
        L4Proto::Tcp,
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i & 255) as u8)),
        1024 + (i >> 8) as u16,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        80,
    )
}

fn real() -> SocketAddr {
    "198.51.100.2:80".parse().unwrap()
}

fn entries(n: u32) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            Entry::Conn(ConnRecord {
                key: key(i),
                real: real(),
                method: ForwardMethod::Nat,
                state: ConnState::Established,
                timeout_ms: 900_000,
                template: None,
            })
        })
        .collect()
}

fn header() -> Header {
    Header {
        kind: Kind::Stream,
        syncid: 0,
        count: 50,
        sender: 1,
        seq: 1,
        time_ms: 1_800_000_000_000,
    }
}

#[derive(Default)]
struct Maps(HashMap<FlowKey, ConnRecord>);

impl Table for Maps {
    fn apply(&mut self, e: &Entry, _now: Millis) -> Result<(), Refused> {
        match e {
            Entry::Conn(c) => {
                self.0.insert(c.key, *c);
            }
            Entry::Closed(k) => {
                self.0.remove(k);
            }
            _ => {}
        }
        Ok(())
    }

    fn walk(&mut self, _now: Millis) -> Vec<Entry> {
        Vec::new()
    }
}

fn lifecycle(i: u32) -> [Event; 5] {
    let e = |state| ConnEvent {
        key: key(i),
        real_id: RealId(1),
        real: real(),
        method: ForwardMethod::Nat,
        state,
        timeout_ms: 900_000,
        template: None,
    };
    [
        Event::Opened(e(ConnState::SynRecv)),
        Event::Changed(e(ConnState::Established)),
        Event::Changed(e(ConnState::FinWait)),
        Event::Changed(e(ConnState::TimeWait)),
        Event::Closed(ConnClosed {
            key: key(i),
            real_id: RealId(1),
        }),
    ]
}

/// Master and backup sessions through 1000 connections' events; the
/// datagrams and bytes sent.
fn thousand(
    master: &mut Session,
    backup: &mut Session,
    table: &mut Maps,
    t: &mut u64,
) -> (u64, u64) {
    let from: SocketAddr = "203.0.113.1:8848".parse().unwrap();
    let (mut n, mut bytes) = (0, 0);
    for i in 0..1000 {
        *t += 1;
        let now = Now {
            mono: Millis(*t),
            wall_ms: 1_800_000_000_000 + *t,
        };
        for e in lifecycle(i) {
            master.conn_event(now, &e);
        }
        if i % 20 == 19 {
            master.tick(now, table);
            while let Some(d) = master.poll_transmit() {
                n += 1;
                bytes += d.bytes.len() as u64;
                let _ = backup.receive(now, from, &d.bytes, table);
            }
        }
    }
    (n, bytes)
}

fn bench(c: &mut Criterion) {
    let key_ = Key::new(b"a shared secret of both directors");
    let body = Body::Stream {
        stream_seq: 7,
        entries: entries(50),
    };
    let dgram = wire::encode(&header(), &body, &key_);
    assert_eq!(dgram.len(), 32 + 8 + 50 * 28 + 32);
    c.bench_function("encode/stream_50", |b| {
        b.iter(|| wire::encode(black_box(&header()), black_box(&body), &key_))
    });
    c.bench_function("decode/stream_50", |b| {
        b.iter(|| wire::decode(black_box(&dgram), &key_).unwrap())
    });

    let mut cfg = SessionConfig::new(1);
    cfg.flush_ms = 1;
    let mut master = Session::new(cfg, key_.clone(), Arc::new(SyncStats::default()));
    let mut backup = Session::new(
        SessionConfig::new(2),
        key_.clone(),
        Arc::new(SyncStats::default()),
    );
    let start = Now {
        mono: Millis(0),
        wall_ms: 1_800_000_000_000,
    };
    master.set_master(true, start);
    backup.start_backup(start);
    let mut table = Maps::default();
    let mut t = 0;
    let (n, bytes) = thousand(&mut master, &mut backup, &mut table, &mut t);
    eprintln!(
        "sync: 1000 connections (5 events each) = {n} datagrams, {bytes} bytes \
         ({:.1} bytes a connection); an Entry is {} bytes in memory, an Event {}",
        bytes as f64 / 1000.0,
        std::mem::size_of::<Entry>(),
        std::mem::size_of::<Event>()
    );
    c.bench_function("session/1000_connections", |b| {
        b.iter(|| thousand(&mut master, &mut backup, &mut table, &mut t))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
