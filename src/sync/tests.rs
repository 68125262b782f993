//! Two sans-IO sessions on a fake wire with a fake clock: a master (A) and
//! a backup (B), each over a table of plain maps; the wire loses what a
//! test tells it to. Then the real table: entries installed by address
//! against a service table, and walked back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::services::ServicesUpdate;
use super::session::{Dest, Now, Session, SessionConfig, Table, Transmit};
use super::stats::{Refused, SyncStats};
use super::wire::{self, Body, ConnRecord, Entry, Key, Reject};
use crate::conntrack::{ConnState, ConnTable, Timeouts};
use crate::packet::{FlowKey, L4Proto};
use crate::pipeline::{ConnClosed, ConnEvent, Event};
use crate::service::{ForwardMethod, RealId, RealLoads};
use crate::Millis;

const WALL: u64 = 1_800_000_000_000;

#[derive(Default)]
struct FakeTable {
    conns: HashMap<FlowKey, ConnRecord>,
    /// What `walk` returns (the master's side).
    all: Vec<Entry>,
    /// Whole service configurations handed up.
    services: Vec<ServicesUpdate>,
}

impl Table for FakeTable {
    fn apply(&mut self, e: &Entry, _now: Millis) -> Result<(), Refused> {
        match e {
            Entry::Conn(c) if c.real.port() == 9 => return Err(Refused::NoReal),
            Entry::Conn(c) => {
                self.conns.insert(c.key, *c);
            }
            Entry::Closed(k) => {
                self.conns.remove(k);
            }
            Entry::Template(_) | Entry::Health(_) | Entry::Services(_) => {}
        }
        Ok(())
    }

    fn walk(&mut self, _now: Millis) -> Vec<Entry> {
        self.all.clone()
    }

    fn services(&mut self, update: ServicesUpdate) -> Result<(), Refused> {
        self.services.push(update);
        Ok(())
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key(port: u16) -> FlowKey {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    FlowKey::new(L4Proto::Tcp, ip("203.0.113.7"), port, ip("192.0.2.10"), 80)
}

fn event(port: u16, state: ConnState) -> ConnEvent {
    ConnEvent {
        key: key(port),
        real_id: RealId(1),
        real: addr("198.51.100.2:80"),
        method: ForwardMethod::Nat,
        state,
        timeout_ms: 900_000,
        template: None,
    }
}

fn record(port: u16) -> Entry {
    Entry::Conn(ConnRecord {
        key: key(port),
        real: addr("198.51.100.2:80"),
        method: ForwardMethod::Nat,
        state: ConnState::Established,
        timeout_ms: 900_000,
        template: None,
    })
}

struct Net {
    a: Session,
    b: Session,
    ta: FakeTable,
    tb: FakeTable,
    sa: Arc<SyncStats>,
    sb: Arc<SyncStats>,
    ms: u64,
    /// Every datagram A sent, in order.
    from_a: Vec<Transmit>,
}

const A: &str = "203.0.113.1:8848";
const B: &str = "203.0.113.2:8848";

impl Net {
    fn new(tune: impl Fn(&mut SessionConfig)) -> Net {
        let key = Key::new(b"a shared secret of both");
        let (sa, sb) = (
            Arc::new(SyncStats::default()),
            Arc::new(SyncStats::default()),
        );
        let mut ca = SessionConfig::new(0xa);
        let mut cb = SessionConfig::new(0xb);
        tune(&mut ca);
        tune(&mut cb);
        let mut n = Net {
            a: Session::new(ca, key.clone(), Arc::clone(&sa)),
            b: Session::new(cb, key, Arc::clone(&sb)),
            ta: FakeTable::default(),
            tb: FakeTable::default(),
            sa,
            sb,
            ms: 1000,
            from_a: Vec::new(),
        };
        let now = n.now();
        n.a.set_master(true, now);
        n
    }

    fn now(&self) -> Now {
        Now {
            mono: Millis(self.ms),
            wall_ms: WALL + self.ms,
        }
    }

    /// Advances the clock by `ms`, ticking both sessions.
    fn tick(&mut self, ms: u64) {
        self.ms += ms;
        let now = self.now();
        self.a.tick(now, &mut self.ta);
        self.b.tick(now, &mut self.tb);
    }

    /// Carries every waiting datagram both ways until none is left; A's
    /// datagrams for which `lose` holds never arrive.
    fn carry(&mut self, mut lose: impl FnMut(&Transmit) -> bool) {
        loop {
            let mut moved = false;
            let now = self.now();
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                assert!(matches!(t.dest, Dest::All) || t.dest == Dest::To(addr(B)));
                self.from_a.push(t.clone());
                if !lose(&t) {
                    let _ = self.b.receive(now, addr(A), &t.bytes, &mut self.tb);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                assert!(matches!(t.dest, Dest::All) || t.dest == Dest::To(addr(A)));
                let _ = self.a.receive(now, addr(B), &t.bytes, &mut self.ta);
            }
            if !moved {
                return;
            }
        }
    }

    /// B started as backup and done with its (empty) resync.
    fn with_backup(mut self) -> Net {
        let now = self.now();
        self.b.start_backup(now);
        self.tick(1);
        self.carry(|_| false);
        self.tick(1);
        self.carry(|_| false);
        assert!(self.b.ready(), "an empty resync makes B ready");
        self.from_a.clear();
        self
    }

    /// `rounds` rounds of ten new connections each, one stream datagram a
    /// round; the second of them never arrives.
    fn rounds_losing_the_second_datagram(&mut self, rounds: u16) {
        let mut sent = 0;
        for round in 0..rounds {
            self.open(round * 10..round * 10 + 10);
            self.tick(20);
            self.carry(|t| {
                let s = stream_seq(t).is_some();
                sent += s as u32;
                s && sent == 2
            });
        }
    }

    fn open(&mut self, ports: std::ops::Range<u16>) {
        let now = self.now();
        for p in ports {
            self.a
                .conn_event(now, &Event::Opened(event(p, ConnState::SynRecv)));
        }
    }
}

fn stream_seq(t: &Transmit) -> Option<u64> {
    match wire::decode(&t.bytes, &Key::new(b"a shared secret of both")) {
        Ok((_, Body::Stream { stream_seq, .. })) => Some(stream_seq),
        _ => None,
    }
}

#[test]
fn a_masters_events_reach_the_backup_and_a_close_removes_them() {
    let mut n = Net::new(|_| {}).with_backup();
    n.open(0..3);
    let now = n.now();
    n.a.conn_event(now, &Event::Changed(event(1, ConnState::Established)));
    // Not worth a datagram: another packet of a SYN_RECV connection.
    n.a.conn_event(now, &Event::Changed(event(2, ConnState::SynRecv)));
    n.carry(|_| false);
    assert!(n.tb.conns.is_empty(), "batched until flush_ms");
    n.tick(20);
    n.carry(|_| false);
    assert_eq!(n.tb.conns.len(), 3);
    assert_eq!(n.tb.conns[&key(1)].state, ConnState::Established);
    assert_eq!(n.tb.conns[&key(2)].state, ConnState::SynRecv);
    let now = n.now();
    n.a.conn_event(
        now,
        &Event::Closed(ConnClosed {
            key: key(0),
            real_id: RealId(1),
        }),
    );
    n.tick(20);
    n.carry(|_| false);
    assert!(!n.tb.conns.contains_key(&key(0)));
    assert_eq!(n.sb.read().installed, 5);
    assert_eq!(
        n.sa.read().sent_entries,
        5,
        "the SYN_RECV repeat was not sent"
    );
}

#[test]
fn entries_are_batched_into_datagrams_of_at_most_maxlen() {
    let mut n = Net::new(|_| {}).with_backup();
    n.open(0..1000);
    n.tick(20);
    n.carry(|_| false);
    let streams: Vec<&Transmit> = n
        .from_a
        .iter()
        .filter(|t| stream_seq(t).is_some())
        .collect();
    // (1472 - 32 header - 8 stream - 32 tag) / 28 bytes an IPv4 entry = 50.
    assert_eq!(streams.len(), 20);
    assert!(streams.iter().all(|t| t.bytes.len() <= 1472));
    assert_eq!(streams[0].bytes.len(), 32 + 8 + 50 * 28 + 32);
    assert_eq!(n.tb.conns.len(), 1000);
}

#[test]
fn a_gap_is_nacked_and_repaired_from_the_ring() {
    let mut n = Net::new(|_| {}).with_backup();
    n.rounds_losing_the_second_datagram(5);
    assert_eq!(n.tb.conns.len(), 40, "one datagram of ten entries lost");
    assert_eq!(n.sb.read().gaps, 1);
    // After the grace time B asks, A resends, B has everything.
    n.tick(60);
    n.carry(|_| false);
    assert_eq!(n.tb.conns.len(), 50);
    let m = n.sb.read();
    assert_eq!((m.gaps, m.gaps_repaired, m.gaps_lost), (1, 1, 0));
    assert_eq!(n.sa.read().resent, 1);
}

#[test]
fn a_repair_does_not_undo_a_later_change() {
    let mut n = Net::new(|_| {}).with_backup();
    n.open(0..1);
    n.tick(20);
    n.carry(|_| false);
    let now = n.now();
    n.a.conn_event(now, &Event::Changed(event(0, ConnState::Established)));
    n.tick(20);
    let mut first = true;
    n.carry(|t| std::mem::take(&mut first) && stream_seq(t).is_some());
    let now = n.now();
    n.a.conn_event(now, &Event::Changed(event(0, ConnState::FinWait)));
    n.tick(20);
    n.carry(|_| false);
    assert_eq!(n.tb.conns[&key(0)].state, ConnState::FinWait);
    n.tick(60);
    n.carry(|_| false);
    assert_eq!(n.sb.read().gaps_repaired, 1);
    assert_eq!(
        n.tb.conns[&key(0)].state,
        ConnState::FinWait,
        "the late ESTABLISHED did not overwrite FIN_WAIT"
    );
}

#[test]
fn the_loss_of_the_last_datagram_is_found_by_the_heartbeat() {
    let mut n = Net::new(|_| {}).with_backup();
    n.open(0..5);
    n.tick(20);
    n.carry(|t| stream_seq(t).is_some());
    assert!(n.tb.conns.is_empty());
    // An idle master's heartbeat shows B what it missed.
    for _ in 0..11 {
        n.tick(100);
        n.carry(|_| false);
    }
    assert_eq!(n.tb.conns.len(), 5);
    assert_eq!(n.sb.read().gaps_repaired, 1);
}

#[test]
fn the_loss_of_a_masters_first_stream_datagram_is_found() {
    // No heartbeat came before B's (empty) resync: its bulk's end says
    // where A's stream stands, so the loss of stream datagram 0 is a gap.
    let mut n = Net::new(|c| c.heartbeat_ms = 60_000).with_backup();
    assert!(n.from_a.is_empty() || n.from_a.iter().all(|t| stream_seq(t).is_none()));
    n.open(0..5);
    n.tick(20);
    n.carry(|t| stream_seq(t) == Some(0));
    n.open(5..6);
    n.tick(20);
    n.carry(|_| false);
    assert_eq!(n.sb.read().gaps, 1);
    n.tick(60);
    n.carry(|_| false);
    assert_eq!(n.tb.conns.len(), 6);
    assert_eq!(n.sb.read().gaps_repaired, 1);
}

#[test]
fn a_peer_first_heard_past_stream_0_is_asked_for_the_ones_before() {
    // B waited out its resync with A silent; A's first datagram is lost.
    let mut n = Net::new(|c| c.heartbeat_ms = 60_000);
    let now = n.now();
    n.b.start_backup(now);
    for _ in 0..30 {
        n.tick(100);
        n.carry(|_| true);
    }
    assert!(n.b.ready());
    n.open(0..5);
    n.tick(20);
    n.carry(|t| stream_seq(t) == Some(0));
    n.open(5..6);
    n.tick(20);
    n.carry(|_| false);
    n.tick(60);
    n.carry(|_| false);
    assert_eq!(n.tb.conns.len(), 6);
    let m = n.sb.read();
    assert_eq!((m.gaps, m.gaps_repaired), (1, 1));
}

#[test]
fn a_stream_datagram_lost_while_the_bulk_was_awaited_is_repaired() {
    let mut n = Net::new(|c| c.heartbeat_ms = 60_000);
    n.ta.all = (1000..1010).map(record).collect();
    let now = n.now();
    n.b.start_backup(now);
    n.tick(1);
    // B's request reaches A, which takes its table for the bulk.
    while let Some(t) = n.b.poll_transmit() {
        let now = n.now();
        let _ = n.a.receive(now, addr(B), &t.bytes, &mut n.ta);
    }
    // Before the bulk goes out A streams twice (a full datagram, then the
    // rest at the flush); the first is lost and B hears the second first.
    n.open(0..60);
    n.tick(20);
    n.carry(|t| stream_seq(t) == Some(0));
    assert!(n.b.ready(), "the bulk came");
    assert_eq!(n.sb.read().gaps, 1, "the bulk said the stream began at 0");
    n.tick(60);
    n.carry(|_| false);
    assert_eq!(n.tb.conns.len(), 70);
    assert_eq!(n.sb.read().gaps_repaired, 1);
}

#[test]
fn a_gap_older_than_the_ring_is_repaired_by_a_bulk() {
    let mut n = Net::new(|c| c.ring = 2).with_backup();
    n.ta.all = (0..30).map(record).collect();
    let mut sent = 0;
    for round in 0..5 {
        n.open(round * 10..round * 10 + 10);
        n.tick(20);
        n.carry(|t| {
            let s = stream_seq(t).is_some();
            sent += s as u32;
            s && sent == 1
        });
    }
    n.tick(60);
    n.carry(|_| false);
    for _ in 0..3 {
        n.tick(5);
        n.carry(|_| false);
    }
    assert_eq!(n.sa.read().bulk_entries, 30, "the whole table, to B");
    assert!(
        (0..10).all(|p| n.tb.conns.contains_key(&key(p))),
        "what the lost datagram said came in the bulk"
    );
}

#[test]
fn nacks_that_go_unanswered_end_in_a_resync_request() {
    let mut n = Net::new(|_| {}).with_backup();
    n.rounds_losing_the_second_datagram(3);
    // A is gone: nothing B sends reaches it any more.
    let mut asked = Vec::new();
    for _ in 0..20 {
        n.tick(100);
        while n.a.poll_transmit().is_some() {}
        while let Some(t) = n.b.poll_transmit() {
            let k = wire::decode(&t.bytes, &Key::new(b"a shared secret of both"))
                .map(|(h, _)| h.kind)
                .unwrap();
            asked.push(k);
        }
    }
    use super::wire::Kind;
    let nacks = asked.iter().filter(|k| **k == Kind::Nack).count();
    assert_eq!(nacks, 3, "repair_tries NACKs: {asked:?}");
    assert!(asked.contains(&Kind::ResyncRequest), "{asked:?}");
    assert_eq!(n.sb.read().gaps_lost, 1);
}

#[test]
fn a_starting_backup_takes_the_whole_table_paced_before_it_is_ready() {
    let mut n = Net::new(|_| {});
    n.ta.all = (0..1000).map(record).collect();
    let now = n.now();
    n.b.start_backup(now);
    assert!(!n.b.ready());
    n.tick(1);
    n.carry(|_| false);
    // The request reached A; every tick sends at most bulk_per_tick (8).
    let mut ticks = 0;
    while !n.b.ready() {
        n.tick(5);
        let mut this_tick = 0;
        while let Some(t) = n.a.poll_transmit() {
            this_tick += 1;
            let now = n.now();
            let _ = n.b.receive(now, addr(A), &t.bytes, &mut n.tb);
        }
        assert!(this_tick <= 8 + 1, "{this_tick} datagrams in one tick");
        ticks += 1;
        assert!(ticks < 100, "no end to the resync");
    }
    // 1000 entries of 28 bytes, 50 a datagram (less the bulk prefix: 49).
    assert_eq!(n.tb.conns.len(), 1000);
    assert!(ticks >= 3, "paced over several ticks: {ticks}");
    let m = n.sb.read();
    assert_eq!((m.resyncs, m.resync_entries, m.ready), (1, 1000, 1));
}

#[test]
fn a_backup_no_peer_answers_is_ready_after_the_wait() {
    let mut n = Net::new(|_| {});
    n.a.set_master(false, n.now());
    let now = n.now();
    n.b.start_backup(now);
    for _ in 0..29 {
        n.tick(100);
        n.carry(|_| false);
    }
    assert!(!n.b.ready());
    n.tick(100);
    assert!(n.b.ready());
    assert_eq!(n.sb.read().resyncs, 0);
}

#[test]
fn replays_foreign_ids_and_stale_datagrams_are_refused_and_install_nothing() {
    let mut n = Net::new(|c| c.syncid = 5).with_backup();
    n.open(0..1);
    n.tick(20);
    n.carry(|_| false);
    let dgram = n
        .from_a
        .iter()
        .rev()
        .find(|t| stream_seq(t).is_some())
        .unwrap()
        .clone();
    n.tb.conns.clear();
    let now = n.now();
    assert_eq!(
        n.b.receive(now, addr(A), &dgram.bytes, &mut n.tb),
        Err(Reject::Replayed)
    );
    let late = Now {
        wall_ms: now.wall_ms + 120_000,
        ..now
    };
    let mut other = Session::new(
        SessionConfig {
            syncid: 6,
            ..SessionConfig::new(0xc)
        },
        Key::new(b"a shared secret of both"),
        Arc::new(SyncStats::default()),
    );
    other.set_master(true, now);
    other.conn_event(now, &Event::Opened(event(7, ConnState::SynRecv)));
    other.tick(
        Now {
            mono: Millis(n.ms + 50),
            ..now
        },
        &mut FakeTable::default(),
    );
    let foreign = other.poll_transmit().unwrap();
    assert_eq!(
        n.b.receive(now, addr(A), &foreign.bytes, &mut n.tb),
        Err(Reject::SyncId)
    );
    // A's next datagram, arriving two minutes off our clock.
    n.open(1..2);
    n.tick(20);
    let fresh = n.a.poll_transmit().unwrap();
    assert_eq!(
        n.b.receive(late, addr(A), &fresh.bytes, &mut n.tb),
        Err(Reject::Stale)
    );
    let mut forged = fresh.bytes.clone();
    forged[45] ^= 0xff;
    assert_eq!(
        n.b.receive(now, addr(A), &forged, &mut n.tb),
        Err(Reject::BadMac)
    );
    assert!(n.tb.conns.is_empty(), "nothing refused was installed");
    let m = n.sb.read();
    for (r, want) in [
        (Reject::Replayed, 1),
        (Reject::SyncId, 1),
        (Reject::Stale, 1),
        (Reject::BadMac, 1),
    ] {
        assert_eq!(m.rejected_for(r), want, "{r:?}");
    }
    // The stale datagram, on time, is still new: it goes in.
    assert_eq!(n.b.receive(now, addr(A), &fresh.bytes, &mut n.tb), Ok(()));
    assert!(n.tb.conns.contains_key(&key(1)));
}

#[test]
fn what_the_table_refuses_is_counted_by_reason() {
    let mut n = Net::new(|_| {}).with_backup();
    let now = n.now();
    let mut e = event(1, ConnState::SynRecv);
    e.real = addr("198.51.100.2:9");
    n.a.conn_event(now, &Event::Opened(e));
    n.tick(20);
    n.carry(|_| false);
    assert_eq!(n.sb.read().refused_for(Refused::NoReal), 1);
    assert!(n.tb.conns.is_empty());
}

#[test]
fn a_stopped_master_sends_what_is_pending_and_then_nothing() {
    let mut n = Net::new(|_| {}).with_backup();
    n.open(0..3);
    let now = n.now();
    n.a.set_master(false, now);
    n.carry(|_| false);
    assert_eq!(n.tb.conns.len(), 3, "flushed on stop");
    n.open(3..6);
    n.tick(2000);
    n.carry(|_| false);
    assert_eq!(n.tb.conns.len(), 3, "a stopped master sends no more");
    n.b.stop_backup();
    assert_eq!(n.tb.conns.len(), 3, "stopping the backup keeps the table");
}

/// The real table: a service of two real servers, entries by address.
#[test]
fn entries_install_by_real_server_address_and_walk_back() {
    use super::table::ConnSync;
    use crate::service::{Edit, Persistence, RealSpec, SchedFlags, SchedulerKind, ServiceKey};
    use crate::service::{ServiceModel, ServiceSpec};
    use arc_swap::ArcSwap;

    let mut model = ServiceModel::new(16);
    let vip: IpAddr = "192.0.2.10".parse().unwrap();
    let skey = ServiceKey {
        proto: L4Proto::Tcp,
        addr: vip,
        port: 80,
    };
    model
        .apply(&Edit::AddService(ServiceSpec {
            key: skey,
            scheduler: SchedulerKind::Rr,
            sched_flags: SchedFlags::default(),
            persistence: Some(Persistence {
                timeout_secs: 300,
                prefix_len: 24,
            }),
        }))
        .unwrap();
    for last in [2, 3] {
        model
            .apply(&Edit::AddReal(
                skey,
                RealSpec {
                    addr: format!("198.51.100.{last}").parse().unwrap(),
                    port: 80,
                    method: ForwardMethod::Nat,
                    weight: 1,
                    upper_threshold: 0,
                    lower_threshold: 0,
                },
            ))
            .unwrap();
    }
    let services = model.snapshot();
    let loads = Arc::new(RealLoads::new(16));
    let conns = Arc::new(ConnTable::new(
        4096,
        Timeouts::default(),
        Arc::clone(&loads),
    ));
    let mut t = ConnSync {
        conns: Arc::clone(&conns),
        services: Arc::new(ArcSwap::from_pointee(services.clone())),
        health: None,
        peer_services: None,
    };
    let now = Millis(1000);
    let mut rec = match record(5) {
        Entry::Conn(c) => c,
        _ => unreachable!(),
    };
    rec.real = addr("198.51.100.3:80");
    rec.template = Some("203.0.113.0".parse().unwrap());
    assert_eq!(t.apply(&Entry::Conn(rec), now), Ok(()));
    let here = conns.lookup_original(&key(5), now).expect("installed");
    let id3 = services.services()[0].reals[1].id;
    assert_eq!((here.real_id(), here.real()), (id3, rec.real));
    assert_eq!(here.state(), ConnState::Established);
    let tk = conns.template_key(&here).expect("with its template");
    assert_eq!(tk.client, "203.0.113.0".parse::<IpAddr>().unwrap());
    // Unknown real server, unknown service: refused, nothing installed.
    let mut stranger = rec;
    stranger.key = key(6);
    stranger.real = addr("198.51.100.9:80");
    assert_eq!(t.apply(&Entry::Conn(stranger), now), Err(Refused::NoReal));
    let mut elsewhere = rec;
    elsewhere.key.dport = 443;
    assert_eq!(
        t.apply(&Entry::Conn(elsewhere), now),
        Err(Refused::NoService)
    );
    // The walk gives back the template first, then the connection.
    let walked = t.walk(now);
    assert_eq!(walked.len(), 2, "{walked:?}");
    assert!(matches!(walked[0], Entry::Template(_)));
    match &walked[1] {
        Entry::Conn(c) => {
            assert_eq!(
                (c.key, c.real, c.template),
                (rec.key, rec.real, rec.template)
            )
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(t.apply(&Entry::Closed(key(5)), now), Ok(()));
    assert!(conns.lookup_original(&key(5), now).is_none());
}

/// `ipvsadm -S -n` text of `n` services, each with one real server.
fn saved(n: u16) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "-A -t 192.0.2.10:{p} -s rr\n-a -t 192.0.2.10:{p} -r 198.51.100.2:{p} -m -w 1\n",
                p = 1000 + i
            )
        })
        .collect::<String>()
        .into_bytes()
}

fn services_chunks(t: &Transmit) -> usize {
    let entries = match wire::decode(&t.bytes, &Key::new(b"a shared secret of both")) {
        Ok((_, Body::Stream { entries, .. } | Body::Bulk { entries, .. })) => entries,
        _ => return 0,
    };
    entries
        .iter()
        .filter(|e| matches!(e, Entry::Services(_)))
        .count()
}

#[test]
fn the_service_configuration_travels_in_chunks_and_survives_a_lost_datagram() {
    let mut n = Net::new(|c| {
        c.services = true;
        c.maxlen = 300;
    })
    .with_backup();
    let text = saved(20);
    let now = n.now();
    n.a.set_services(text.clone(), now);
    // The same text again is no new generation.
    n.a.set_services(text.clone(), now);
    n.tick(20);
    // The second datagram with chunks is lost.
    let mut with_chunks = 0;
    n.carry(|t| {
        let c = services_chunks(t) > 0;
        with_chunks += c as u32;
        c && with_chunks == 2
    });
    let chunks: usize = n.from_a.iter().map(services_chunks).sum();
    assert!(chunks > 4, "{} bytes in {chunks} chunks", text.len());
    assert!(n.from_a.iter().all(|t| t.bytes.len() <= 300));
    assert!(n.tb.services.is_empty(), "a chunk is missing");
    // The NACK brings it again: whole, once.
    n.tick(60);
    n.carry(|_| false);
    assert_eq!(n.tb.services.len(), 1);
    let got = &n.tb.services[0];
    assert_eq!((got.generation, got.text.as_bytes()), (1, &text[..]));
    assert_eq!(got.from, addr(A));
    assert_eq!(n.sa.read().services_sent, 1);
    assert_eq!(n.sb.read().services_received, 1);
    // A change is generation 2, and replaces it.
    let now = n.now();
    n.a.set_services(saved(3), now);
    n.tick(20);
    n.carry(|_| false);
    assert_eq!(n.tb.services.len(), 2);
    assert_eq!(n.tb.services[1].generation, 2);
    assert_eq!(n.tb.services[1].text.as_bytes(), &saved(3)[..]);
}

#[test]
fn a_restarted_backup_gets_the_service_configuration_with_its_resync() {
    let mut n = Net::new(|c| c.services = true);
    let now = n.now();
    n.a.set_services(saved(2), now);
    n.tick(20);
    n.carry(|_| false);
    assert!(n.tb.services.is_empty(), "B is no backup yet");
    n.ta.all = vec![record(1)];
    let n = n.with_backup();
    assert_eq!(n.tb.services.len(), 1, "the bulk carried it");
    assert_eq!(n.tb.services[0].text.as_bytes(), &saved(2)[..]);
    assert_eq!(n.tb.conns.len(), 1);
    assert_eq!(n.sb.read().resync_entries, 1, "connections, not chunks");
}

#[test]
fn a_backup_without_the_switch_refuses_and_counts_the_configuration() {
    let mut n = Net::new(|c| c.services = true);
    // B has it off.
    let stats = Arc::new(SyncStats::default());
    n.sb = Arc::clone(&stats);
    n.b = Session::new(
        SessionConfig::new(0xb),
        Key::new(b"a shared secret of both"),
        stats,
    );
    let mut n = n.with_backup();
    let now = n.now();
    n.a.set_services(saved(1), now);
    n.tick(20);
    n.carry(|_| false);
    assert!(n.tb.services.is_empty());
    let chunks: usize = n.from_a.iter().map(services_chunks).sum();
    assert_eq!(chunks, 1);
    assert_eq!(n.sb.read().refused_for(Refused::ServicesOff), 1);
    assert_eq!(n.sb.read().services_received, 0);
    // A master without the switch sends none at all.
    let mut off = Net::new(|_| {}).with_backup();
    let now = off.now();
    off.a.set_services(saved(1), now);
    off.tick(20);
    off.carry(|_| false);
    assert_eq!(off.from_a.iter().map(services_chunks).sum::<usize>(), 0);
}
