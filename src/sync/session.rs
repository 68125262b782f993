//! The sans-IO sync session: what one director says to and hears from its
//! peers, given the time, the connection events and the datagrams that
//! came; it opens no socket and reads no clock ([`Now`] is passed in).
//!
//! # Contract
//! - As **master**, [`Session::conn_event`] batches opens, the state
//!   changes worth sending (established, FIN, close...) and closes into
//!   stream datagrams of at most `maxlen` bytes, flushed when full or
//!   `flush_ms` after their first entry ([`Session::tick`]); the last
//!   `ring` of them are kept to resend. Every `refresh_ms` the whole table
//!   is sent again in bulk, so a peer's copy never expires while ours
//!   lives. A peer's resync request is answered with the whole table
//!   ([`Table::walk`]), `bulk_per_tick` datagrams a tick: paced, so the
//!   sync thread never floods the link or holds the table.
//! - As **backup**, an authentic stream or bulk entry is installed through
//!   [`Table::apply`]; a gap in a sender's stream sequence is asked again
//!   (a NACK to the sender, every `repair_ms`, `repair_tries` times), then
//!   given up on for a resync from that sender. [`Session::start_backup`]
//!   asks every peer for the full table; the session is
//!   [`Session::ready`] when one bulk arrived whole, or when none answered
//!   within `resync_wait_ms` (the first director of a pair).
//! - Every datagram is refused before it touches anything if it is
//!   truncated, malformed, not authentic, of another sync id, older or
//!   newer than `max_skew_ms` by its timestamp, or a replay (a sender's
//!   [`Window`]); each refusal is counted by reason ([`SyncStats`]).
//! - Both roles may be on at once (active-active); switching one off keeps
//!   the table as it is.
//! - With `services` on, [`Session::set_services`] gives the session this
//!   director's service configuration (`ipvsadm -S -n` text); each change
//!   is a new generation, sent by a master in the stream as
//!   [`ServicesChunk`](super::wire::ServicesChunk)s, and again before the
//!   connections of every bulk. A backup with `services` on puts a
//!   generation together ([`Assembler`]) and hands it whole to
//!   [`Table::services`]; with it off, every chunk is counted refused
//!   ([`Refused::ServicesOff`]) and nothing else happens.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use super::services::{self, Assembler, Fed, ServicesUpdate};
use super::stats::{Refused, SyncStats};
use super::window::Window;
use super::wire::{
    self, Body, ConnRecord, Entry, Header, Key, Kind, Reject, ServicesChunk, HEADER_LEN,
    SERVICES_CHUNK_HEADER, TAG_LEN,
};
use crate::conntrack::ConnState;
use crate::packet::FlowKey;
use crate::pipeline::Event;
use crate::Millis;

/// The two clocks a session needs: monotonic for its timers, wall (Unix
/// milliseconds) for datagram timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Millis,
    pub wall_ms: u64,
}

/// The connection table as a session sees it.
pub trait Table {
    /// Installs or refreshes what `e` says (or removes, for a close).
    fn apply(&mut self, e: &Entry, now: Millis) -> Result<(), Refused>;
    /// Every live entry: templates first, then connections.
    fn walk(&mut self, now: Millis) -> Vec<Entry>;
    /// A peer's whole service configuration, for this director to apply
    /// (only ever called with `services` on). A table that takes none
    /// refuses it.
    fn services(&mut self, update: ServicesUpdate) -> Result<(), Refused> {
        let _ = update;
        Err(Refused::ServicesOff)
    }
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The multicast group, or every configured peer.
    All,
    /// One peer (an answer to its request).
    To(SocketAddr),
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    pub bytes: Vec<u8>,
}

/// A session's tunables.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub syncid: u8,
    /// The largest datagram (UDP payload), tag included.
    pub maxlen: usize,
    /// This director's id on the wire.
    pub sender: u32,
    pub flush_ms: u64,
    pub repair_ms: u64,
    pub repair_tries: u32,
    pub resync_ask_ms: u64,
    pub resync_wait_ms: u64,
    pub refresh_ms: u64,
    pub bulk_per_tick: usize,
    /// An idle master sends an empty stream datagram this often, so a
    /// backup notices the loss of the last one.
    pub heartbeat_ms: u64,
    /// Stream datagrams kept to resend.
    pub ring: usize,
    pub max_skew_ms: u64,
    /// `[sync] services`: send (as master) and apply (as backup) the
    /// service configuration.
    pub services: bool,
}

impl SessionConfig {
    /// Defaults for `sender` with sync id 0.
    pub fn new(sender: u32) -> SessionConfig {
        SessionConfig {
            syncid: 0,
            maxlen: 1472,
            sender,
            flush_ms: 20,
            repair_ms: 200,
            repair_tries: 3,
            resync_ask_ms: 1000,
            resync_wait_ms: 3000,
            refresh_ms: 60_000,
            bulk_per_tick: 8,
            heartbeat_ms: 1000,
            ring: 1024,
            max_skew_ms: 60_000,
            services: false,
        }
    }
}

/// The smallest `maxlen`: a header, a stream's prefix, the largest entry
/// and the tag.
pub const MIN_MAXLEN: usize = HEADER_LEN + 8 + wire::MAX_ENTRY_LEN + TAG_LEN;
/// Senders remembered at most (each a replay window and stream position).
const MAX_PEERS: usize = 64;
/// Missing stream datagrams tracked per sender before a resync is cheaper.
const MAX_MISSING: u64 = 4096;
/// Connections remembered per sender while a gap is open.
const MAX_RECENT: usize = 1 << 16;
/// Bulk re-requests before a resync settles for what it got.
const RESYNC_TRIES: u32 = 3;

/// What this director does: send (master), receive (backup), or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub master: bool,
    pub backup: bool,
}

struct Peer {
    window: Window,
    addr: SocketAddr,
    heard: Millis,
    next_stream: Option<u64>,
    /// The first stream number heard, while a bulk from this peer is
    /// awaited to say where its stream stood (see [`place_stream`]).
    first_stream: Option<u64>,
    /// Missing stream numbers, each with when it was found missing.
    missing: BTreeMap<u64, Millis>,
    /// While some are missing: the stream number that last spoke of each
    /// connection, so a late repair does not undo a later change.
    recent: HashMap<FlowKey, u64>,
    last_nack: Option<Millis>,
    nacks: u32,
}

struct BulkJob {
    dest: Dest,
    target: u32,
    bulk_id: u32,
    /// The stream number the table was taken at.
    stream_seq: u64,
    entries: std::vec::IntoIter<Entry>,
    datagrams: u32,
    sent: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resync {
    Idle,
    /// Asking for a bulk (`target` 0: anyone).
    Asking {
        since: Millis,
        asked: Option<Millis>,
        target: u32,
        tries: u32,
    },
    Receiving {
        since: Millis,
        from: u32,
        addr: SocketAddr,
        bulk_id: u32,
        datagrams: u32,
        entries: u32,
        heard: Millis,
        tries: u32,
    },
}

/// One director's sync state.
pub struct Session {
    cfg: SessionConfig,
    key: Key,
    roles: Roles,
    seq: u64,
    stream_seq: u64,
    pending: Vec<Entry>,
    pending_len: usize,
    pending_since: Option<Millis>,
    /// The last stream datagrams' entries; the front one is `ring_first`.
    ring: VecDeque<Vec<Entry>>,
    ring_first: u64,
    peers: HashMap<u32, Peer>,
    out: VecDeque<Transmit>,
    jobs: VecDeque<BulkJob>,
    next_bulk_id: u32,
    next_refresh: Option<Millis>,
    resync: Resync,
    ready: bool,
    /// When the last stream datagram was sent.
    last_stream: Millis,
    wall_ms: u64,
    now_mono: Millis,
    stats: Arc<SyncStats>,
    /// This director's service configuration and its generation.
    services: Option<(u32, Vec<u8>)>,
    /// Peers' service configurations being put together.
    assembler: Assembler,
}

impl Session {
    pub fn new(cfg: SessionConfig, key: Key, stats: Arc<SyncStats>) -> Session {
        Session {
            cfg,
            key,
            roles: Roles::default(),
            seq: 0,
            stream_seq: 0,
            pending: Vec::new(),
            pending_len: 0,
            pending_since: None,
            ring: VecDeque::new(),
            ring_first: 0,
            peers: HashMap::new(),
            out: VecDeque::new(),
            jobs: VecDeque::new(),
            next_bulk_id: 1,
            next_refresh: None,
            resync: Resync::Idle,
            ready: false,
            last_stream: Millis(0),
            wall_ms: 0,
            now_mono: Millis(0),
            stats,
            services: None,
            assembler: Assembler::default(),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Changes the sync id and datagram size (a daemon started again with
    /// other options); what is pending is sent first.
    pub fn reconfigure(&mut self, syncid: u8, maxlen: usize) {
        self.flush();
        self.cfg.syncid = syncid;
        self.cfg.maxlen = maxlen.max(MIN_MAXLEN);
    }

    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// Starts or stops sending; stopping sends what is pending first.
    pub fn set_master(&mut self, on: bool, now: Now) {
        self.wall_ms = now.wall_ms;
        self.now_mono = now.mono;
        if !on {
            self.flush();
            self.jobs.clear();
        } else if !self.roles.master {
            self.next_refresh = Some(now.mono + self.cfg.refresh_ms);
            self.roles.master = true;
            self.push_services(now);
        }
        self.roles.master = on;
    }

    /// This director's service configuration (`ipvsadm -S -n` of its
    /// configured model) as it is now: if it differs from the last, it is
    /// the next generation, and a master sends it. Ignored with `services`
    /// off.
    pub fn set_services(&mut self, text: Vec<u8>, now: Now) {
        if !self.cfg.services || self.services.as_ref().is_some_and(|(_, t)| *t == text) {
            return;
        }
        let generation = self.services.as_ref().map_or(1, |(g, _)| g.wrapping_add(1));
        self.services = Some((generation, text));
        self.push_services(now);
    }

    /// The current generation's chunks, sized so one fits a datagram of
    /// any kind that carries entries.
    fn services_chunks(&self) -> Vec<Entry> {
        let Some((generation, text)) = &self.services else {
            return Vec::new();
        };
        let room = self.cfg.maxlen
            - HEADER_LEN
            - wire::body_prefix_len(Kind::Bulk)
            - SERVICES_CHUNK_HEADER
            - TAG_LEN;
        match services::split(*generation, text, room) {
            Some(chunks) => chunks.into_iter().map(Entry::Services).collect(),
            None => {
                tracing::warn!(
                    "sync: the service configuration ({} bytes) is too large to sync; not sent",
                    text.len()
                );
                Vec::new()
            }
        }
    }

    /// Queues the current generation for the stream, if master.
    fn push_services(&mut self, now: Now) {
        if !self.roles.master {
            return;
        }
        let chunks = self.services_chunks();
        if !chunks.is_empty() {
            SyncStats::add(&self.stats.services_sent, 1);
        }
        for c in chunks {
            self.push(c, now);
        }
    }

    /// Starts receiving, and asks the peers for the full table: not
    /// [`Session::ready`] until it came (or no peer answered in time).
    pub fn start_backup(&mut self, now: Now) {
        self.wall_ms = now.wall_ms;
        self.now_mono = now.mono;
        self.roles.backup = true;
        self.ready = false;
        SyncStats::set(&self.stats.ready, 0);
        self.resync = Resync::Asking {
            since: now.mono,
            asked: None,
            target: 0,
            tries: 0,
        };
    }

    /// Stops receiving; the table keeps what it holds.
    pub fn stop_backup(&mut self) {
        self.roles.backup = false;
        self.resync = Resync::Idle;
    }

    /// Whether a backup holds its peers' table.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// A connection event from a worker: queued for the stream if master
    /// and worth sending.
    pub fn conn_event(&mut self, now: Now, e: &Event) {
        if !self.roles.master {
            return;
        }
        let entry = match e {
            Event::Opened(c) => Entry::Conn(record(c)),
            Event::Changed(c) if worth_sending(c.state) => Entry::Conn(record(c)),
            Event::Closed(c) => Entry::Closed(c.key),
            Event::Changed(_) | Event::Resolve(_) => return,
        };
        self.push(entry, now);
    }

    /// Queues any entry (a health change, say) for the stream, if master.
    pub fn send_entry(&mut self, entry: Entry, now: Now) {
        if self.roles.master {
            self.push(entry, now);
        }
    }

    /// Handles one datagram from `from`; a refusal is counted and returned.
    pub fn receive(
        &mut self,
        now: Now,
        from: SocketAddr,
        bytes: &[u8],
        table: &mut impl Table,
    ) -> Result<(), Reject> {
        self.wall_ms = now.wall_ms;
        self.now_mono = now.mono;
        let r = self.receive_checked(now, from, bytes, table);
        if let Err(reason) = r {
            self.stats.reject(reason);
        }
        r
    }

    fn receive_checked(
        &mut self,
        now: Now,
        from: SocketAddr,
        bytes: &[u8],
        table: &mut impl Table,
    ) -> Result<(), Reject> {
        let (h, body) = wire::decode(bytes, &self.key)?;
        if h.sender == self.cfg.sender {
            return Ok(()); // our own, looped back
        }
        if self.cfg.syncid != 0 && h.syncid != self.cfg.syncid {
            return Err(Reject::SyncId);
        }
        if now.wall_ms.abs_diff(h.time_ms) > self.cfg.max_skew_ms {
            return Err(Reject::Stale);
        }
        self.make_room_for(h.sender);
        let peer = self.peers.entry(h.sender).or_insert_with(|| Peer {
            window: Window::default(),
            addr: from,
            heard: now.mono,
            next_stream: None,
            first_stream: None,
            missing: BTreeMap::new(),
            recent: HashMap::new(),
            last_nack: None,
            nacks: 0,
        });
        if !peer.window.accept(h.seq) {
            return Err(Reject::Replayed);
        }
        peer.addr = from;
        peer.heard = now.mono;
        if let Body::Bulk {
            target, stream_seq, ..
        }
        | Body::BulkEnd {
            target, stream_seq, ..
        } = body
        {
            if self.roles.backup && (target == self.cfg.sender || target == 0) {
                place_stream(peer, stream_seq, now.mono, &self.stats);
            }
        }
        SyncStats::add(&self.stats.received_datagrams, 1);
        SyncStats::add(&self.stats.received_bytes, bytes.len() as u64);
        SyncStats::set(&self.stats.lag_ms, now.wall_ms.saturating_sub(h.time_ms));
        match body {
            Body::Stream {
                stream_seq,
                entries,
            } => {
                let awaiting_bulk = !matches!(self.resync, Resync::Idle);
                let order = track_stream(peer, stream_seq, awaiting_bulk, now.mono, &self.stats);
                let mut chunks = Vec::new();
                if self.roles.backup && order != Order::Seen {
                    for e in &entries {
                        let key = match e {
                            Entry::Conn(c) => Some(c.key),
                            Entry::Closed(k) => Some(*k),
                            Entry::Services(c) => {
                                chunks.push(c);
                                continue;
                            }
                            Entry::Template(_) | Entry::Health(_) => None,
                        };
                        if let Some(k) = key {
                            // A repair must not undo what a later
                            // datagram said of the same connection.
                            if order == Order::Late
                                && peer.recent.get(&k).is_some_and(|&s| s > stream_seq)
                            {
                                continue;
                            }
                            if !peer.missing.is_empty() && peer.recent.len() < MAX_RECENT {
                                peer.recent.insert(k, stream_seq);
                            }
                        }
                        match table.apply(e, now.mono) {
                            Ok(()) => SyncStats::add(&self.stats.installed, 1),
                            Err(r) => self.stats.refuse(r),
                        }
                    }
                    if peer.missing.is_empty() {
                        peer.recent.clear();
                    }
                }
                for c in chunks {
                    self.services_chunk(h.sender, from, c, table);
                }
            }
            Body::Nack { target, ranges } => {
                if target == self.cfg.sender && self.roles.master {
                    self.resend(h.sender, from, &ranges, now, table);
                }
            }
            Body::ResyncRequest { target } => {
                if (target == 0 || target == self.cfg.sender) && self.roles.master {
                    self.start_bulk(Dest::To(from), h.sender, now.mono, table);
                }
            }
            Body::Bulk {
                target,
                bulk_id,
                entries,
                ..
            } => {
                if target == self.cfg.sender {
                    self.bulk_heard(&h, from, bulk_id, entries.len() as u32, now.mono);
                }
                if self.roles.backup && (target == self.cfg.sender || target == 0) {
                    self.install(h.sender, from, &entries, now.mono, table);
                }
            }
            Body::BulkEnd {
                target,
                bulk_id,
                datagrams,
                entries,
                ..
            } => {
                if target == self.cfg.sender {
                    self.bulk_ended(&h, bulk_id, datagrams, entries, now.mono);
                }
            }
        }
        Ok(())
    }

    /// Timers: flush the pending stream datagram, NACK gaps, pace bulk
    /// jobs, refresh, resync requests.
    pub fn tick(&mut self, now: Now, table: &mut impl Table) {
        self.wall_ms = now.wall_ms;
        self.now_mono = now.mono;
        if self
            .pending_since
            .is_some_and(|t| now.mono.saturating_sub(t) >= self.cfg.flush_ms)
        {
            self.flush();
        }
        if self.roles.master
            && self.pending.is_empty()
            && now.mono.saturating_sub(self.last_stream) >= self.cfg.heartbeat_ms
        {
            self.flush_stream();
        }
        self.repair(now.mono);
        self.resync_tick(now.mono);
        if self.roles.master {
            if let Some(at) = self.next_refresh {
                if now.mono >= at {
                    self.next_refresh = Some(now.mono + self.cfg.refresh_ms);
                    if !self.jobs.iter().any(|j| j.dest == Dest::All) {
                        self.start_bulk(Dest::All, 0, now.mono, table);
                    }
                }
            }
        }
        self.pace_bulk();
        let mono = now.mono;
        self.peers
            .retain(|_, p| mono.saturating_sub(p.heard) < 600_000 || !p.missing.is_empty());
        let peers = &self.peers;
        self.assembler.retain(|s| peers.contains_key(&s));
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn push(&mut self, entry: Entry, now: Now) {
        self.wall_ms = now.wall_ms;
        self.now_mono = now.mono;
        if HEADER_LEN + 8 + self.pending_len + entry.len() + TAG_LEN > self.cfg.maxlen {
            self.flush();
        }
        self.pending_len += entry.len();
        self.pending.push(entry);
        self.pending_since.get_or_insert(now.mono);
        SyncStats::add(&self.stats.sent_entries, 1);
    }

    fn flush(&mut self) {
        self.pending_since = None;
        if !self.pending.is_empty() {
            self.flush_stream();
        }
    }

    /// Sends what is pending (perhaps nothing: a heartbeat) as the next
    /// stream datagram, and keeps it in the ring.
    fn flush_stream(&mut self) {
        self.pending_since = None;
        let body = Body::Stream {
            stream_seq: self.stream_seq,
            entries: std::mem::take(&mut self.pending),
        };
        self.pending_len = 0;
        let bytes = self.datagram(&body);
        self.send(Dest::All, bytes);
        let Body::Stream {
            stream_seq,
            entries,
        } = body
        else {
            return;
        };
        self.stream_seq += 1;
        self.last_stream = self.now_mono;
        if self.ring.is_empty() {
            self.ring_first = stream_seq;
        }
        self.ring.push_back(entries);
        while self.ring.len() > self.cfg.ring {
            self.ring.pop_front();
            self.ring_first += 1;
        }
    }

    /// Encodes `body` with the next header sequence number.
    fn datagram(&mut self, body: &Body) -> Vec<u8> {
        let header = Header {
            kind: body.kind(),
            syncid: self.cfg.syncid,
            count: 0,
            sender: self.cfg.sender,
            seq: self.seq,
            time_ms: self.wall_ms,
        };
        self.seq += 1;
        wire::encode(&header, body, &self.key)
    }

    fn send(&mut self, dest: Dest, bytes: Vec<u8>) {
        SyncStats::add(&self.stats.sent_datagrams, 1);
        SyncStats::add(&self.stats.sent_bytes, bytes.len() as u64);
        self.out.push_back(Transmit { dest, bytes });
    }

    fn install(
        &mut self,
        sender: u32,
        from: SocketAddr,
        entries: &[Entry],
        now: Millis,
        table: &mut impl Table,
    ) {
        for e in entries {
            if let Entry::Services(c) = e {
                self.services_chunk(sender, from, c, table);
                continue;
            }
            match table.apply(e, now) {
                Ok(()) => SyncStats::add(&self.stats.installed, 1),
                Err(r) => self.stats.refuse(r),
            }
        }
    }

    /// A backup's part of a peer's service configuration: refused with the
    /// switch off, else put together and handed whole to the table.
    fn services_chunk(
        &mut self,
        sender: u32,
        from: SocketAddr,
        c: &ServicesChunk,
        table: &mut impl Table,
    ) {
        if !self.cfg.services {
            self.stats.refuse(Refused::ServicesOff);
            return;
        }
        match self.assembler.feed(sender, c) {
            Fed::Partial => {}
            Fed::Old => self.stats.refuse(Refused::ServicesOld),
            Fed::Whole(text) => {
                let Ok(text) = String::from_utf8(text) else {
                    self.stats.refuse(Refused::ServicesInvalid);
                    return;
                };
                let update = ServicesUpdate {
                    from,
                    generation: c.generation,
                    text,
                };
                match table.services(update) {
                    Ok(()) => SyncStats::add(&self.stats.services_received, 1),
                    Err(r) => self.stats.refuse(r),
                }
            }
        }
    }

    /// Forgets the sender heard from longest ago if the peer list is full
    /// and `sender` is new to it.
    fn make_room_for(&mut self, sender: u32) {
        if self.peers.len() < MAX_PEERS || self.peers.contains_key(&sender) {
            return;
        }
        if let Some(oldest) = self
            .peers
            .iter()
            .min_by_key(|(_, p)| p.heard)
            .map(|(id, _)| *id)
        {
            self.peers.remove(&oldest);
        }
    }

    /// Resends what `ranges` asks for from the ring; what left the ring is
    /// repaired by a bulk instead.
    fn resend(
        &mut self,
        requester: u32,
        to: SocketAddr,
        ranges: &[(u64, u64)],
        now: Now,
        table: &mut impl Table,
    ) {
        let mut budget = self.cfg.ring as u64;
        let mut gone = false;
        for &(from, until) in ranges {
            for s in from..=until.min(from.saturating_add(budget)) {
                budget = budget.saturating_sub(1);
                let idx = s.checked_sub(self.ring_first).map(|i| i as usize);
                match idx.and_then(|i| self.ring.get(i)) {
                    Some(entries) => {
                        let body = Body::Stream {
                            stream_seq: s,
                            entries: entries.clone(),
                        };
                        let bytes = self.datagram(&body);
                        self.send(Dest::To(to), bytes);
                        SyncStats::add(&self.stats.resent, 1);
                    }
                    None if s < self.stream_seq => gone = true,
                    None => {}
                }
            }
        }
        if gone && !self.jobs.iter().any(|j| j.target == requester) {
            self.start_bulk(Dest::To(to), requester, now.mono, table);
        }
    }

    /// Queues the whole table for `target` (0: everyone, a refresh).
    fn start_bulk(&mut self, dest: Dest, target: u32, now: Millis, table: &mut impl Table) {
        self.jobs
            .retain(|j| !(j.target == target && j.dest == dest));
        // The services first: a backup that applies them can place the
        // connections that follow.
        let mut entries = self.services_chunks();
        entries.extend(table.walk(now));
        let bulk_id = self.next_bulk_id;
        self.next_bulk_id = self.next_bulk_id.wrapping_add(1).max(1);
        self.jobs.push_back(BulkJob {
            dest,
            target,
            bulk_id,
            stream_seq: self.stream_seq,
            entries: entries.into_iter(),
            datagrams: 0,
            sent: 0,
        });
    }

    /// Sends up to `bulk_per_tick` bulk datagrams, the first job first.
    fn pace_bulk(&mut self) {
        let mut budget = self.cfg.bulk_per_tick;
        while budget > 0 {
            let Some(job) = self.jobs.front_mut() else {
                return;
            };
            let room = self.cfg.maxlen - HEADER_LEN - wire::body_prefix_len(Kind::Bulk) - TAG_LEN;
            let mut entries = Vec::new();
            let mut len = 0;
            while let Some(e) = job.entries.as_slice().first() {
                if len + e.len() > room {
                    break;
                }
                len += e.len();
                entries.push(e.clone());
                job.entries.next();
            }
            let (dest, target, bulk_id, stream_seq) =
                (job.dest, job.target, job.bulk_id, job.stream_seq);
            let done = job.entries.as_slice().is_empty();
            let body = if entries.is_empty() {
                None
            } else {
                let index = job.datagrams;
                job.datagrams += 1;
                // BulkEnd counts the table's entries, not the services'.
                let table_entries = entries
                    .iter()
                    .filter(|e| !matches!(e, Entry::Services(_)))
                    .count();
                job.sent += table_entries as u32;
                SyncStats::add(&self.stats.bulk_entries, entries.len() as u64);
                Some(Body::Bulk {
                    target,
                    bulk_id,
                    index,
                    stream_seq,
                    entries,
                })
            };
            let end = done.then_some(Body::BulkEnd {
                target,
                bulk_id,
                datagrams: job.datagrams,
                entries: job.sent,
                stream_seq,
            });
            for b in body.iter().chain(end.iter()) {
                let bytes = self.datagram(b);
                self.send(dest, bytes);
                budget = budget.saturating_sub(1);
            }
            if done {
                self.jobs.pop_front();
            }
        }
    }

    /// NACKs each sender's missing stream datagrams, or gives up on them
    /// for a resync from that sender.
    fn repair(&mut self, now: Millis) {
        let mut nacks = Vec::new();
        let mut give_up = Vec::new();
        let grace = self.cfg.repair_ms / 4;
        for (&id, p) in self.peers.iter_mut() {
            let Some(&found) = p.missing.values().min() else {
                p.nacks = 0;
                p.last_nack = None;
                continue;
            };
            if now.saturating_sub(found) < grace
                || p.last_nack
                    .is_some_and(|t| now.saturating_sub(t) < self.cfg.repair_ms)
            {
                continue;
            }
            if p.nacks >= self.cfg.repair_tries {
                SyncStats::add(&self.stats.gaps_lost, p.missing.len() as u64);
                p.missing.clear();
                p.nacks = 0;
                p.last_nack = None;
                give_up.push((id, p.addr));
                continue;
            }
            p.nacks += 1;
            p.last_nack = Some(now);
            let room = (self.cfg.maxlen - HEADER_LEN - 4 - TAG_LEN) / 16;
            let mut ranges: Vec<(u64, u64)> = Vec::new();
            for &s in p.missing.keys() {
                if let Some((_, b)) = ranges.last_mut().filter(|(_, b)| *b + 1 == s) {
                    *b = s;
                } else if ranges.len() >= room {
                    break;
                } else {
                    ranges.push((s, s));
                }
            }
            nacks.push((id, p.addr, ranges));
        }
        for (target, addr, ranges) in nacks {
            let bytes = self.datagram(&Body::Nack { target, ranges });
            self.send(Dest::To(addr), bytes);
        }
        if self.roles.backup {
            for (target, addr) in give_up {
                let bytes = self.datagram(&Body::ResyncRequest { target });
                self.send(Dest::To(addr), bytes);
            }
        }
    }

    fn resync_tick(&mut self, now: Millis) {
        match self.resync {
            Resync::Idle => {}
            Resync::Asking {
                since,
                asked,
                target,
                tries,
            } => {
                if now.saturating_sub(since) >= self.cfg.resync_wait_ms && !self.ready {
                    tracing::info!(
                        "sync: no peer answered the resync request in {} ms; ready with the table as it is",
                        now.saturating_sub(since)
                    );
                    self.set_ready();
                    self.resync = Resync::Idle;
                    return;
                }
                if asked.is_none_or(|t| now.saturating_sub(t) >= self.cfg.resync_ask_ms) {
                    self.resync = Resync::Asking {
                        since,
                        asked: Some(now),
                        target,
                        tries,
                    };
                    let bytes = self.datagram(&Body::ResyncRequest { target });
                    self.send(Dest::All, bytes);
                }
            }
            Resync::Receiving {
                heard, from, tries, ..
            } => {
                if now.saturating_sub(heard) >= self.cfg.resync_wait_ms {
                    self.retry_resync(from, tries, now);
                }
            }
        }
    }

    fn retry_resync(&mut self, from: u32, tries: u32, now: Millis) {
        if tries >= RESYNC_TRIES {
            tracing::warn!("sync: the resync from sender {from:08x} stayed incomplete after {tries} tries; ready with what came");
            self.set_ready();
            self.resync = Resync::Idle;
            return;
        }
        self.resync = Resync::Asking {
            since: now,
            asked: None,
            target: from,
            tries: tries + 1,
        };
    }

    fn bulk_heard(&mut self, h: &Header, addr: SocketAddr, bulk_id: u32, n: u32, now: Millis) {
        match &mut self.resync {
            Resync::Asking { since, tries, .. } => {
                self.resync = Resync::Receiving {
                    since: *since,
                    from: h.sender,
                    addr,
                    bulk_id,
                    datagrams: 1,
                    entries: n,
                    heard: now,
                    tries: *tries,
                }
            }
            Resync::Receiving {
                from,
                bulk_id: id,
                datagrams,
                entries,
                heard,
                ..
            } if *from == h.sender && *id == bulk_id => {
                *datagrams += 1;
                *entries += n;
                *heard = now;
            }
            _ => {}
        }
    }

    fn bulk_ended(&mut self, h: &Header, bulk_id: u32, datagrams: u32, entries: u32, now: Millis) {
        if let Resync::Asking { since, tries, .. } = self.resync {
            if datagrams == 0 {
                // An empty table: nothing to wait for.
                self.resync = Resync::Receiving {
                    since,
                    from: h.sender,
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    bulk_id,
                    datagrams: 0,
                    entries: 0,
                    heard: now,
                    tries,
                };
            }
        }
        let Resync::Receiving {
            since,
            from,
            addr,
            bulk_id: id,
            datagrams: got,
            tries,
            ..
        } = self.resync
        else {
            return;
        };
        if from != h.sender || id != bulk_id {
            return;
        }
        if got == datagrams {
            let ms = now.saturating_sub(since);
            tracing::info!("sync: resync from {addr} done: {entries} connections in {ms} ms");
            SyncStats::add(&self.stats.resyncs, 1);
            SyncStats::set(&self.stats.resync_ms, ms);
            SyncStats::set(&self.stats.resync_entries, entries as u64);
            self.set_ready();
            self.resync = Resync::Idle;
        } else {
            tracing::warn!(
                "sync: the resync from {addr} lost {} of {datagrams} datagrams; asking again",
                datagrams - got.min(datagrams)
            );
            self.retry_resync(from, tries, now);
        }
    }

    fn set_ready(&mut self) {
        self.ready = true;
        SyncStats::set(&self.stats.ready, 1);
    }
}

/// Where a stream datagram falls in its sender's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// The next, or past a gap (now missing).
    Next,
    /// One that was missing: a repair.
    Late,
    /// Came already (a resend of a datagram that was not lost).
    Seen,
}

/// Notes a stream datagram's number.
///
/// A peer's stream starts at 0 (a restarted director has a new sender id),
/// so the first number heard of a peer, if not 0, says that the ones before
/// it were lost: they are missing, to be NACKed. Unless a bulk is awaited:
/// it holds the table as it was at some stream number, which
/// [`place_stream`] then takes for where the stream starts.
fn track_stream(
    peer: &mut Peer,
    s: u64,
    awaiting_bulk: bool,
    now: Millis,
    stats: &SyncStats,
) -> Order {
    match peer.next_stream {
        None if s == 0 => peer.next_stream = Some(1),
        None if awaiting_bulk => {
            peer.next_stream = Some(s + 1);
            peer.first_stream = Some(s);
        }
        None => {
            peer.next_stream = Some(0);
            return track_stream(peer, s, false, now, stats);
        }
        Some(n) if s == n => peer.next_stream = Some(s + 1),
        Some(n) if s > n => {
            let gap = s - n;
            SyncStats::add(&stats.gaps, gap);
            if gap + peer.missing.len() as u64 > MAX_MISSING {
                // Too many to ask for one by one: the NACKs will run out
                // on the oldest and a resync follows.
                let keep: Vec<u64> = (s.saturating_sub(MAX_MISSING)..s).collect();
                peer.missing
                    .retain(|k, _| *k >= s.saturating_sub(MAX_MISSING));
                for k in keep {
                    peer.missing.entry(k).or_insert(now);
                }
            } else {
                for k in n..s {
                    peer.missing.insert(k, now);
                }
            }
            peer.next_stream = Some(s + 1);
        }
        Some(_) => {
            if peer.missing.remove(&s).is_none() {
                return Order::Seen;
            }
            SyncStats::add(&stats.gaps_repaired, 1);
            return Order::Late;
        }
    }
    Order::Next
}

/// A bulk from `peer` says its table was taken at stream number `s`: the
/// stream from `s` on is what it lacks. A peer not heard streaming yet is
/// expected at `s`; one first heard at `f` past `s` (while the bulk was
/// awaited) is missing `s..f`. Later bulks (refreshes) change nothing.
fn place_stream(peer: &mut Peer, s: u64, now: Millis, stats: &SyncStats) {
    match (peer.next_stream, peer.first_stream.take()) {
        (None, _) => peer.next_stream = Some(s),
        (Some(_), Some(f)) if s < f => {
            let from = s.max(f.saturating_sub(MAX_MISSING));
            SyncStats::add(&stats.gaps, f - from);
            for k in from..f {
                peer.missing.entry(k).or_insert(now);
            }
        }
        _ => {}
    }
}

/// IPVS sends a state change when it matters to a backup: established,
/// the closing states, close. Not every packet; not SYN_RECV again.
fn worth_sending(s: ConnState) -> bool {
    use ConnState::*;
    matches!(
        s,
        Established | FinWait | TimeWait | Close | CloseWait | LastAck | Udp
    )
}

fn record(c: &crate::pipeline::ConnEvent) -> ConnRecord {
    ConnRecord {
        key: c.key,
        real: c.real,
        method: c.method,
        state: c.state,
        timeout_ms: c.timeout_ms.min(u32::MAX as u64) as u32,
        template: c.template.map(|t| t.client),
    }
}
