//! The connection table: which real server each connection went to, its IPVS
//! state and timeout, shared by every worker without locks on the packet path.
//!
//! # Contract
//! - [`ConnTable::lookup`] finds a connection by its client→VIP key or, for
//!   NAT, by the real server→client reply key ([`FlowKey::reply_from`]); both
//!   give the same [`ConnRef`]. It takes no lock, never retries, never
//!   allocates: wait-free.
//! - [`ConnTable::insert`] adds a connection the scheduler placed. Two workers
//!   inserting the same key get one entry (the second gets the first's).
//!   When the key's probe window (8 buckets of 15 slots: its home bucket,
//!   then a run at a second hash position) is full, an expired entry there
//!   is reused; otherwise the insert is refused and counted
//!   ([`InsertError::TableFull`]). A live connection is never evicted. With
//!   look-alike keys none is refused up to 80% of the slots full, 0–5 in
//!   52 000 at 85%, about 1 in 2 200 at 90% (`fills_to_85_percent_of_its_slots`):
//!   size `--conn-table-size` with 20% headroom.
//! - [`ConnTable::open`] is an insert and the update of the packet that
//!   opened the connection in one step (the entry is published in the
//!   state that packet leads to); [`ConnTable::probe`] hashes a frame's
//!   key once for the batch prefetch, the lookup and that insert.
//! - [`ConnTable::update`] runs one packet through IPVS's TCP state machine
//!   (NAT: input/output tables; DR/TUN: the input-only table), re-arms the
//!   timeout, and keeps the real server's ActiveConn/InActConn exact. An
//!   unchanged state rewrites its deadline only when it moves by ≥ 1 s, so a
//!   busy flow does not write its shared cache line on every packet.
//! - [`ConnTable::expire_step`] sweeps a budget of buckets; concurrent
//!   callers sweep disjoint slices. The workers call
//!   [`ConnTable::expire_paced_with`] once per batch, which takes one step a
//!   millisecond for all of them together, so the sweep's work does not
//!   grow with the number of workers. Released
//!   entries give back their real server's counts and their template
//!   reference; [`ConnTable::expire_step_with`] also shows the caller each
//!   entry it released (connection sync's "closed"), allocating nothing.
//!   There is no stop-the-world sweep.
//! - Persistence: [`ConnTable::template`] / [`ConnTable::insert_template`]
//!   for `(protocol, masked client, VIP, vport)` → real server; a template
//!   lives while connections it placed live, or until its own timeout since
//!   last used (IPVS), and counts in the real server's PersistConn.
//! - [`ConnTable::import`] is a connection-sync receiver's insert: it
//!   installs a connection the master reported (key, real server, method,
//!   state, remaining timeout, template) or refreshes the live entry of its
//!   key, with the counts moved as [`ConnTable::update`] would; what the
//!   table cannot hold is refused as an insert is ([`ImportError`]).
//! - [`ConnTable::for_each`] lists entries for `ipvsadm -L -c` while workers
//!   run (each entry read consistently; the list is not a snapshot in time).
//! - Deleted real servers, with IPVS's `expire_nodest_conn`: the control
//!   plane calls [`ConnTable::expire_reals`] once per change; a worker that
//!   meets a connection whose [`RealId`] is gone from its snapshot may call
//!   [`ConnTable::remove`] on it instead.
//!
//! # Use from the pipeline
//! ```text
//! // Pipeline::prefetch, per batch of up to 64 frames: overlap the misses
//! // dir: Original for packets to a VIP, Reply for packets from a NAT RS
//! for frame in batch { probe = table.probe(&key, dir) }   // hashed once
//! for frame in batch { table.prefetch_probe(&probe) }     // index lines
//! for frame in batch { table.prefetch_entry_probe(&probe) } // their entries
//! for frame in batch {
//!     let probe = table.probe(&key, dir);
//!     let hit = table.lookup_probe(&probe, now);  // or lookup_original/_reply
//!     // (the frame's path: find_probe / find_reply give a Hit, update_hit
//!     // updates it, hit_conn reads the Conn for events and removal; a miss
//!     // of find_probe(&mut probe) leaves in the probe what spares
//!     // open_probed's insert its re-check)
//!     match hit.filter(|c| table.update(&c.handle, c.dir, tcp_flags, now).is_some()) {
//!         Some(c) => forward per c.method(), c.real() / c.virt(), c.real_id(),
//!         None if opening packet => {
//!             // persistent service: tk = TemplateKey::for_flow(&key, prefix_len);
//!             //   table.template(&tk, now) gives the real_id, or schedule and
//!             //   table.insert_template(&tk, real_id, real, timeout, now)
//!             // insert + update with the opening packet, in one step:
//!             let (c, state) = table.open_probed(&NewConn { key, real_id, method,
//!                 real, template }, Some(&probe), tcp_flags, now)?; // Err: drop + counter
//!         }
//!         None => drop,
//!     }
//! }
//! table.expire_step(now, 64);   // once per batch (expire_step_with: and see each release)
//! ```
//!
//! # Memory
//! An IPv4 entry is a 40-byte slot: 5 atomic words — meta (generation, a
//! 16-bit real_id, flags; 16 bits free), timer, ports, client and VIP,
//! real server and template link; addresses inline, 32 bits each. With the
//! tag index (4.3 bytes a slot) and the reply index (9.7 bytes a slot, sized
//! 17/16 of the slots) that is **54.0 bytes per slot**, 63.5 bytes per
//! connection at 85% occupancy. IPv6 entries live in a separate part of the
//! table (capacity/8 by default) in 80-byte slots, 94.0 bytes a slot in all.
//! The whole table is allocated in [`ConnTable::new`]; nothing later.
//! [`ConnTable::try_new`] returns an allocation the machine cannot satisfy
//! as an error instead of aborting, and [`ConnTable::memory_needed`] says
//! beforehand how much a capacity takes.
//!
//! # Concurrency design
//! Every shared word is an atomic; there is no `unsafe`. An entry's key words
//! are written while its slot is private and read under the slot's generation
//! (seqlock: read `meta`, read words, acquire fence, re-read `meta`), so a
//! reader never returns an entry for a wrong key and never waits: a slot being
//! recycled under it just reads as a miss. State, deadline and template
//! refcount share one `timer` word carrying 12 generation bits, changed only
//! by CAS, so whoever wins the CAS that changes a state (or marks the entry
//! DEAD) does the matching count change exactly once. A new entry's timer
//! reads INSERTING until both of its keys are published, so no one can
//! update or release it halfway through its insert. Inserts of keys that
//! hash to the same home bucket serialise on a bit in that bucket's header —
//! the only spinning anywhere, held for the few dozen instructions of one
//! insert, never by lookups, updates or expiry.
//!
//! Verification: unit tests of every transition of the three TCP tables and
//! of every timeout; a stress test (`stress_threads_insert_lookup_update_expire`)
//! where threads insert, look up (both keys), update, remove and expire
//! shared keys while each keeps private established connections, checking
//! that no lookup returns another key's entry, no private connection is
//! lost, one live entry per key, and that every counter equals a recount;
//! and a test racing two inserts of one key. They are written to run under
//! Miri as well (scaled down under `cfg(miri)`). Measurements and the Miri
//! runs are recorded in `BENCHMARKS.md`.
//!
//! # SYN flood
//! A client SYN puts a connection in SYN_RECV for 30 s (IPVS: 60 s). While
//! half-open entries exceed 1/8 of the table, new SYN_RECV deadlines are 2 s
//! ([`Timeouts::syn_flood`]): a flood of R SYN/s then holds about
//! max(capacity/8, 2·R) entries, expired ones are reused in place by the next
//! insert, and established connections are never touched.

mod state;
mod table;
/// The checks every new connection entry passes: client, VIP and real
/// server of one family, and a real-server id an entry can hold.
fn check_new(key: &FlowKey, real: SocketAddr, real_id: RealId) -> Result<(), InsertError> {
    let v6 = key.is_ipv6();
    if real.is_ipv6() != v6 || key.dst.is_ipv6() != v6 {
        return Err(InsertError::AddressFamily);
    }
    if real_id.0 > MAX_ID {
        return Err(InsertError::IdOutOfRange);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::packet::{FlowKey, L4Proto, TcpFlags};
use crate::service::counters::{stripe, stripes_in_use, STRIPES};
use crate::service::{ForwardMethod, RealId, RealLoad, RealLoads};
use crate::Millis;

use state::{tcp_next, LiveTimeouts, TcpTable, STATES};
pub use state::{ConnState, Timeouts};
use table::{addr_bits, proto_code, proto_from_code, timer, Fresh, Kind, Placed, Refused};
use table::{gen_of_meta, Judge, Layout, Shard, Snap, Timer, Tuple, MAX_ID};

/// Which way a packet goes on its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → virtual service (found by the client→VIP key).
    Original,
    /// Real server → client, NAT only (found by the reply key).
    Reply,
}

/// A handle on one entry: valid until that entry is released; every
/// operation on a stale handle is a no-op returning `None`/`false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRef {
    v6: bool,
    flags: u8,
    slot: u32,
    gen: u32,
    real_id: u32,
}

impl ConnRef {
    #[inline(always)]
    fn of(s: &Snap) -> ConnRef {
        ConnRef {
            v6: s.v6,
            flags: s.meta_flags(),
            slot: s.slot,
            gen: s.gen(),
            real_id: s.real_id(),
        }
    }

    /// The real server of the entry referred to.
    pub fn real_id(&self) -> RealId {
        RealId(self.real_id)
    }
}

/// A connection as a lookup or insert returns it: a copy of the entry's
/// words, decoded only by the accessors the caller uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub handle: ConnRef,
    /// Which key matched: the packet's direction.
    pub dir: Direction,
    snap: Snap,
}

impl Conn {
    #[inline(always)]
    fn of(s: &Snap, dir: Direction) -> Conn {
        Conn {
            handle: ConnRef::of(s),
            dir,
            snap: *s,
        }
    }

    pub fn proto(&self) -> L4Proto {
        proto_from_code(self.snap.proto())
    }

    pub fn client(&self) -> SocketAddr {
        self.snap.client()
    }

    /// The virtual service address (VIP:vport): a NAT reply's new source.
    pub fn virt(&self) -> SocketAddr {
        self.snap.virt()
    }

    /// The real server (RIP:rport): where the director forwards to.
    pub fn real(&self) -> SocketAddr {
        self.snap.real()
    }

    pub fn real_id(&self) -> RealId {
        RealId(self.snap.real_id())
    }

    /// The client→VIP key (whichever key the lookup matched).
    pub fn key(&self) -> FlowKey {
        let (c, v) = (self.client(), self.virt());
        FlowKey::new(self.proto(), c.ip(), c.port(), v.ip(), v.port())
    }

    pub fn method(&self) -> ForwardMethod {
        self.snap.method()
    }

    /// The state when the entry was read.
    pub fn state(&self) -> ConnState {
        self.snap.timer().state().unwrap_or(ConnState::Close)
    }
}

/// A connection as the pipeline's per-frame lookups find it
/// ([`ConnTable::find_probe`], [`ConnTable::find_reply`]): the handle and
/// the entry's words as read under its generation, timer word included;
/// for an IPv4 client→VIP hit only those of its key, `meta` and the timer
/// (not the real server's address). A value the compiler can keep in
/// registers when the lookup is inlined into its caller;
/// [`ConnTable::hit_conn`] reads the [`Conn`] the rarer uses (events,
/// removal) take, where they need it, so that the frame's path stores
/// nothing of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Which key matched: the packet's direction.
    pub dir: Direction,
    snap: Snap,
    /// The packet the lookup was given leaves this entry as it is
    /// ([`ConnTable::quiet`]): [`ConnTable::update_hit`] has nothing to do.
    quiet: bool,
}

impl Hit {
    #[inline(always)]
    fn of(s: &Snap, dir: Direction, quiet: bool) -> Hit {
        Hit {
            dir,
            snap: *s,
            quiet,
        }
    }

    /// The handle on this hit's entry, decoded where it is used (the
    /// out-of-line update): a field built by every lookup decoded its
    /// generation on the hit path and kept it in a spilled register.
    #[inline(always)]
    pub fn handle(&self) -> ConnRef {
        ConnRef::of(&self.snap)
    }

    /// The state when the entry was read.
    #[inline(always)]
    pub fn state(&self) -> ConnState {
        state::state_or_close(self.snap.timer().state_code())
    }

    #[inline(always)]
    pub fn real_id(&self) -> RealId {
        RealId(self.snap.real_id())
    }

    pub fn client(&self) -> SocketAddr {
        self.snap.client()
    }

    /// The virtual service address (VIP:vport): a NAT reply's new source.
    #[inline(always)]
    pub fn virt(&self) -> SocketAddr {
        self.snap.virt()
    }

    #[inline(always)]
    pub fn method(&self) -> ForwardMethod {
        self.snap.method()
    }

    /// What finds this entry again without a lookup
    /// ([`ConnTable::quiet_remembered`]): an IPv4 client→VIP hit's slot
    /// and meta word; `None` for any other hit.
    #[inline(always)]
    pub fn remembered(&self) -> Option<Remembered> {
        (!self.snap.v6 && self.dir == Direction::Original).then_some(Remembered {
            meta: self.snap.meta(),
            slot: self.snap.slot,
        })
    }
}

/// An IPv4 connection entry as a lookup's [`Hit`] found it, for a worker to
/// find it again without the lookup ([`ConnTable::quiet_remembered`]): its
/// slot, and its meta word, which only the entry's insert and release
/// write, each with a new generation, so that the word read again unchanged
/// is the same entry (its key, real server, method and protocol). Only a
/// hint: a slot reused since reads another meta word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remembered {
    meta: u64,
    slot: u32,
}

/// A flow key's place in the table for one direction ([`ConnTable::probe`]):
/// its index tuple and seeded hash, so that a worker hashes a frame's key
/// once for the batch prefetch ([`ConnTable::prefetch_probe`],
/// [`ConnTable::prefetch_entry_probe`]), the lookup
/// ([`ConnTable::lookup_probe`]) and a new connection's insert
/// ([`ConnTable::open_probed`]). Meant for the table that made it: another
/// table's probe misses in lookups and is hashed afresh by an insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    v6: bool,
    dir: Direction,
    tuple: Tuple,
    hash: u64,
    /// Which shard's seed `hash` is of.
    seed: u64,
    /// What [`ConnTable::find_probe`] leaves for the insert after a miss
    /// that found no entry of the key at all: its home bucket's header as
    /// read before the search (see [`Shard::find_fwd_vacant`]). The
    /// insert that finds the header unchanged under the bucket's guard
    /// knows the key still absent and skips its re-check.
    vacancy: Option<u32>,
}

/// The frame path's [`Judge`], [`ConnTable::judge`]: a lookup's entry of
/// the key is taken if alive, marked if the packet leaves it as it is.
struct QuietOrAlive<'a> {
    table: &'a ConnTable,
    dir: Direction,
    flags: Option<TcpFlags>,
    now: Millis,
}

impl Judge for QuietOrAlive<'_> {
    #[inline(always)]
    fn judge(&mut self, s: &Snap) -> Option<bool> {
        self.table.judge(s, self.dir, self.flags, self.now)
    }
}

/// A connection the scheduler just placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// The client→VIP key of the packet that opens it.
    pub key: FlowKey,
    pub real_id: RealId,
    pub method: ForwardMethod,
    /// The real server's address and port (the NAT rewrite target).
    pub real: SocketAddr,
    /// The persistence template that chose `real_id`, if the service is
    /// persistent; the connection keeps the template alive.
    pub template: Option<ConnRef>,
}

/// What [`ConnTable::open_new`] opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// A new entry of the key, in this state.
    New(ConnRef, ConnState),
    /// The key's live entry, placed meanwhile by another worker, and the
    /// state the opening packet moved it to, if it moved. Its handle only,
    /// as a new entry's: a whole [`Conn`] here made the caller's match
    /// copy its words on the new entry's path too.
    Existing(ConnRef, Option<ConnState>),
}

/// A connection as a connection-sync receiver learns it from the master
/// director: everything [`ConnTable::import`] needs to install or refresh it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportConn {
    /// The client→VIP key.
    pub key: FlowKey,
    pub real_id: RealId,
    pub method: ForwardMethod,
    /// The real server's address and port (the NAT rewrite target).
    pub real: SocketAddr,
    pub state: ConnState,
    /// Milliseconds left until it expires, as the master counted them.
    pub timeout_ms: u64,
    /// This table's live template the connection belongs to (look it up
    /// with [`ConnTable::template`], or import it first with
    /// [`ConnTable::insert_template`]).
    pub template: Option<ConnRef>,
}

/// Why [`ConnTable::import`] installed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// The table refused the entry, as it refuses an insert.
    Refused(InsertError),
    /// A state the key's protocol cannot be in (a TCP state for UDP, a
    /// template's NONE for ICMP...).
    StateMismatch,
}

impl From<InsertError> for ImportError {
    fn from(e: InsertError) -> ImportError {
        ImportError::Refused(e)
    }
}

/// The key of a persistence template: one per (service, masked client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub proto: L4Proto,
    /// The client address with `-M` applied.
    pub client: IpAddr,
    pub vip: IpAddr,
    pub vport: u16,
}

impl TemplateKey {
    /// The template key of the client→VIP flow `key` for a persistent
    /// service whose netmask is `prefix_len` bits.
    pub fn for_flow(key: &FlowKey, prefix_len: u8) -> TemplateKey {
        let client = match key.src {
            IpAddr::V4(a) => {
                let bits = prefix_len.min(32) as u32;
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = prefix_len.min(128) as u32;
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        TemplateKey {
            proto: key.proto,
            client,
            vip: key.dst,
            vport: key.dport,
        }
    }
}

/// A persistence template: which real server a masked client goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    pub handle: ConnRef,
    pub real_id: RealId,
    pub real: SocketAddr,
}

/// Why an insert created nothing. Each is counted in [`TableStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// No free or expired slot where the key may go: drop the new flow.
    TableFull,
    /// NAT: another live connection already answers from the same real
    /// server endpoint to the same client endpoint; replies would be
    /// ambiguous, so the new flow is refused.
    ReplyConflict,
    /// The template given in [`NewConn::template`] was released meanwhile;
    /// look it up (or schedule) again.
    TemplateGone,
    /// Client and real server addresses are of different families.
    AddressFamily,
    /// A [`RealId`] above 65535: entries store 16 bits.
    IdOutOfRange,
    /// Neither TCP nor UDP: no virtual service is of another protocol, so
    /// no connection is.
    Protocol,
}

/// Table-wide counters (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Live connections (templates excluded).
    pub conns: usize,
    pub templates: usize,
    /// Connections in SYN_RECV.
    pub half_open: usize,
    pub table_full: u64,
    pub reply_conflicts: u64,
    pub template_gone: u64,
    /// Entries released by expiry, [`ConnTable::remove`] or
    /// [`ConnTable::expire_reals`].
    pub released: u64,
}

/// One entry as `ipvsadm -L -c` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    pub proto: L4Proto,
    /// `NONE` for templates.
    pub state: ConnState,
    pub template: bool,
    /// Milliseconds until it expires.
    pub expires_ms: u64,
    /// Client (for a template: the masked client, port 0).
    pub client: SocketAddr,
    pub virt: SocketAddr,
    pub real: SocketAddr,
    pub real_id: RealId,
    /// The connection's forwarding method (meaningless for a template).
    pub method: ForwardMethod,
}

impl ConnEntry {
    /// The `expire` column: `mm:ss`, whole seconds left (as IPVS rounds).
    pub fn expire_mmss(&self) -> String {
        let secs = self.expires_ms / 1000;
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }
}

/// The table's counters. Those every new connection and every release
/// writes are striped: each thread counts into its own [`Stripe`] (the
/// stripe of `crate::service::counters::stripe`), so that workers opening
/// connections at once do not hand one line from core to core; a read sums
/// the stripes in use. The refusal counters, written only when an insert
/// fails, share one line apart from them.
#[derive(Debug)]
struct Counters {
    stripes: [Stripe; STRIPES],
    rare: Refusals,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            stripes: std::array::from_fn(|_| Stripe::default()),
            rare: Refusals::default(),
        }
    }
}

/// One stripe of the table's counts: wrapping deltas (a connection may be
/// counted in on one thread's stripe and out on another's), whose wrapping
/// sum over the stripes is the count. A line and its prefetched neighbour
/// of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Stripe {
    conns: AtomicUsize,
    templates: AtomicUsize,
    half_open: AtomicUsize,
    released: AtomicU64,
    /// The flood check's view of the other stripes' half-open count
    /// (`others_half_open`) as of millisecond `seen_ms`: written by this
    /// stripe's thread, at most once a millisecond.
    seen_ms: AtomicU64,
    others_half_open: AtomicUsize,
}

impl Default for Stripe {
    fn default() -> Stripe {
        Stripe {
            conns: AtomicUsize::new(0),
            templates: AtomicUsize::new(0),
            half_open: AtomicUsize::new(0),
            released: AtomicU64::new(0),
            seen_ms: AtomicU64::new(u64::MAX),
            others_half_open: AtomicUsize::new(0),
        }
    }
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Refusals {
    table_full: AtomicU64,
    reply_conflicts: AtomicU64,
    template_gone: AtomicU64,
}

impl Counters {
    /// The calling thread's stripe.
    #[inline]
    fn mine(&self) -> &Stripe {
        self.on(stripe())
    }

    /// Stripe `me` (a [`stripe`] the caller looked up once for several
    /// counts), masked into range so the index needs no bounds check.
    #[inline]
    fn on(&self, me: usize) -> &Stripe {
        &self.stripes[me % STRIPES]
    }

    /// The sum of `field` over the stripes in use, 0 if the stripes read
    /// one by one while others move add up below 0.
    fn sum(&self, field: impl Fn(&Stripe) -> &AtomicUsize) -> usize {
        let sum = self.stripes[..stripes_in_use()]
            .iter()
            .fold(0usize, |a, s| {
                a.wrapping_add(field(s).load(Ordering::Relaxed))
            });
        if (sum as isize) < 0 {
            0
        } else {
            sum
        }
    }

    /// Whether the half-open connections exceed `threshold` (the flood
    /// check of every update to SYN_RECV). Exact for the calling thread's
    /// own stripe; the others' sum is re-read once per millisecond of
    /// `now` per stripe, so what other workers added in the current
    /// millisecond is seen in the next one. (Threads sharing a stripe may
    /// overwrite each other's view: it stays one of a recent millisecond.)
    #[inline]
    fn half_open_above(&self, threshold: usize, now: Millis) -> bool {
        self.half_open_above_on(stripe(), threshold, now)
    }

    /// [`Counters::half_open_above`] for the calling thread's stripe `me`.
    #[inline(always)]
    fn half_open_above_on(&self, me: usize, threshold: usize, now: Millis) -> bool {
        let me = me % STRIPES;
        let s = &self.stripes[me];
        let others = if s.seen_ms.load(Ordering::Relaxed) == now.0 {
            s.others_half_open.load(Ordering::Relaxed)
        } else {
            let o = self.others_half_open(me);
            s.others_half_open.store(o, Ordering::Relaxed);
            s.seen_ms.store(now.0, Ordering::Relaxed);
            o
        };
        let n = others.wrapping_add(s.half_open.load(Ordering::Relaxed)) as isize;
        n > threshold as isize
    }

    #[cold]
    fn others_half_open(&self, me: usize) -> usize {
        (0..stripes_in_use())
            .filter(|&i| i != me)
            .fold(0usize, |a, i| {
                a.wrapping_add(self.stripes[i].half_open.load(Ordering::Relaxed))
            })
    }
}

/// The connection table shared by every worker (wrap it in an `Arc`).
pub struct ConnTable {
    v4: Shard,
    v6: Shard,
    loads: Arc<RealLoads>,
    timeouts: LiveTimeouts,
    counters: Counters,
    /// Half-open entries above which SYN_RECV gets the flood timeout.
    flood_threshold: usize,
    /// The millisecond of the last paced sweep step
    /// ([`ConnTable::expire_paced_with`]), on a line of its own: every
    /// worker reads it once a millisecond, one writes it.
    swept_ms: crossbeam::utils::CachePadded<AtomicU64>,
}

fn layouts(v4: usize, v6: usize) -> Option<(Layout, Layout)> {
    Some((Layout::of(false, v4)?, Layout::of(true, v6)?))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// Only if past its deadline (a template with connections is re-armed).
    IfExpired,
    /// Now, unless a template still controls connections.
    Force,
}

/// The memory a connection table needs could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableAllocError {
    /// IPv4 and IPv6 connections asked for.
    pub capacity: (usize, usize),
    /// The bytes they need; `None` when that does not fit in a `usize`.
    pub bytes: Option<usize>,
}

impl std::fmt::Display for TableAllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (v4, v6) = self.capacity;
        match self.bytes {
            Some(b) => write!(
                f,
                "cannot allocate {} for a connection table of {v4} IPv4 and {v6} IPv6 connections",
                crate::files::size_text(b as u64)
            ),
            None => write!(
                f,
                "a connection table of {v4} IPv4 and {v6} IPv6 connections is larger than memory can address"
            ),
        }
    }
}

impl std::error::Error for TableAllocError {}

impl ConnTable {
    /// A table for `capacity` IPv4 connections and `capacity / 8` IPv6 ones
    /// (each rounded up to whole buckets of 15). Panics if the memory cannot
    /// be had; [`ConnTable::try_new`] returns that as an error.
    pub fn new(capacity: usize, timeouts: Timeouts, loads: Arc<RealLoads>) -> ConnTable {
        ConnTable::with_v6_capacity(capacity, capacity / 8, timeouts, loads)
    }

    /// As [`ConnTable::new`], but an allocation the machine cannot satisfy
    /// is an error, not an abort.
    pub fn try_new(
        capacity: usize,
        timeouts: Timeouts,
        loads: Arc<RealLoads>,
    ) -> Result<ConnTable, TableAllocError> {
        ConnTable::try_with_v6_capacity(capacity, capacity / 8, timeouts, loads)
    }

    /// Bytes a table from [`ConnTable::new`] of `capacity` holds (its
    /// [`memory_bytes`](Self::memory_bytes)), without allocating it; `None`
    /// when that does not fit in a `usize`.
    pub fn memory_needed(capacity: usize) -> Option<usize> {
        layouts(capacity, capacity / 8).and_then(|(v4, v6)| v4.bytes()?.checked_add(v6.bytes()?))
    }

    pub fn with_v6_capacity(
        capacity: usize,
        v6_capacity: usize,
        timeouts: Timeouts,
        loads: Arc<RealLoads>,
    ) -> ConnTable {
        ConnTable::try_with_v6_capacity(capacity, v6_capacity, timeouts, loads)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_with_v6_capacity(
        capacity: usize,
        v6_capacity: usize,
        timeouts: Timeouts,
        loads: Arc<RealLoads>,
    ) -> Result<ConnTable, TableAllocError> {
        let refused = |bytes| TableAllocError {
            capacity: (capacity, v6_capacity),
            bytes,
        };
        let (l4, l6) = layouts(capacity, v6_capacity).ok_or_else(|| refused(None))?;
        let bytes = l4
            .bytes()
            .zip(l6.bytes())
            .and_then(|(a, b)| a.checked_add(b));
        let v4 = Shard::try_new(false, l4).map_err(|_| refused(bytes))?;
        let v6 = Shard::try_new(true, l6).map_err(|_| refused(bytes))?;
        let flood_threshold = (v4.capacity() + v6.capacity()) / 8;
        Ok(ConnTable {
            v4,
            v6,
            loads,
            timeouts: LiveTimeouts::new(&timeouts),
            counters: Counters::default(),
            flood_threshold,
            swept_ms: Default::default(),
        })
    }

    /// This empty table with its hashes seeded from `seed` instead of at
    /// random, so that the same flows land in the same buckets on every
    /// run: for the benchmarks that count instructions (a lookup's cost
    /// depends on how far into its bucket the entry lies) and for tests.
    /// A director keeps the random seed, which a sender cannot learn and
    /// so cannot aim many flows at one bucket.
    pub fn with_seed(mut self, seed: u64) -> ConnTable {
        self.v4.set_seed(seed);
        self.v6.set_seed(seed);
        self
    }

    /// Slots for IPv4 and IPv6 connections.
    /// Buckets the incremental expiry has looked at so far, IPv4 table
    /// (each [`ConnTable::expire_step`] adds its budget).
    pub fn swept_buckets(&self) -> usize {
        self.v4.swept()
    }

    /// Whether the IPv4 table's entries are on transparent huge pages where
    /// the kernel has them (it took the advice: see [`crate::xsk::huge`]).
    pub fn huge_pages(&self) -> bool {
        self.v4.huge_pages()
    }

    pub fn capacity(&self) -> (usize, usize) {
        (self.v4.capacity(), self.v6.capacity())
    }

    /// Hash buckets (of 15 slots each) for IPv4 and IPv6 connections.
    pub fn buckets(&self) -> (usize, usize) {
        (
            self.v4.capacity() / table::TAGS,
            self.v6.capacity() / table::TAGS,
        )
    }

    /// Bytes of memory the table holds (all of it allocated at creation).
    pub fn memory_bytes(&self) -> usize {
        self.v4.bytes() + self.v6.bytes()
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts.load()
    }

    /// Replaces every timeout; applies to each entry from its next update.
    pub fn set_timeouts(&self, t: &Timeouts) {
        self.timeouts.store(t);
    }

    /// `ipvsadm --set tcp tcpfin udp` (seconds; 0 leaves a value unchanged).
    pub fn set_ipvsadm_timeouts(&self, tcp: u32, tcpfin: u32, udp: u32) {
        self.timeouts.set_ipvsadm(tcp, tcpfin, udp);
    }

    /// The counters, each summed over the stripes (exact when nothing
    /// moves; the set is not one instant's).
    pub fn stats(&self) -> TableStats {
        let c = &self.counters;
        let released = c.stripes[..stripes_in_use()].iter().fold(0u64, |a, s| {
            a.wrapping_add(s.released.load(Ordering::Relaxed))
        });
        TableStats {
            conns: c.sum(|s| &s.conns),
            templates: c.sum(|s| &s.templates),
            half_open: c.sum(|s| &s.half_open),
            table_full: c.rare.table_full.load(Ordering::Relaxed),
            reply_conflicts: c.rare.reply_conflicts.load(Ordering::Relaxed),
            template_gone: c.rare.template_gone.load(Ordering::Relaxed),
            released,
        }
    }

    fn shard(&self, v6: bool) -> &Shard {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    fn load(&self, id: u32) -> Option<RealLoad<'_>> {
        self.loads.get(RealId(id))
    }

    /// The live connection `key` belongs to, in either direction: first as a
    /// client→VIP key, then as a NAT reply key.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, now: Millis) -> Option<Conn> {
        self.lookup_original(key, now)
            .or_else(|| self.lookup_reply(key, now))
    }

    /// Batch prefetch, stage 1: brings the index line `key`'s lookup reads
    /// into cache. A worker calls this for every frame of a batch, then
    /// [`ConnTable::prefetch_entry`] for every frame, then looks them up: the
    /// cache misses of a large table then overlap instead of queueing.
    #[inline]
    pub fn prefetch(&self, key: &FlowKey, dir: Direction) {
        self.shard(key.is_ipv6()).touch(&index_tuple(key, dir));
    }

    /// Batch prefetch, stage 2: brings in the entry the index line points to.
    #[inline]
    pub fn prefetch_entry(&self, key: &FlowKey, dir: Direction) {
        self.shard(key.is_ipv6())
            .touch_entry(&index_tuple(key, dir));
    }

    /// The probe of `key` looked up in direction `dir`: its index tuple and
    /// hash, computed once for a frame's prefetch, lookup and insert.
    #[inline(always)]
    pub fn probe(&self, key: &FlowKey, dir: Direction) -> Probe {
        let v6 = key.is_ipv6();
        let tuple = index_tuple(key, dir);
        // Each family hashed by its own body: a caller whose key is known
        // to be IPv4 when compiling (the pipeline's fast path) gets one.
        let (shard, hash) = if v6 {
            (&self.v6, self.v6.hash_in::<true>(&tuple))
        } else {
            (&self.v4, self.v4.hash_in::<false>(&tuple))
        };
        Probe {
            v6,
            dir,
            hash,
            seed: shard.seed_id(),
            tuple,
            vacancy: None,
        }
    }

    /// [`ConnTable::prefetch`] of a probe.
    #[inline]
    pub fn prefetch_probe(&self, p: &Probe) {
        self.shard(p.v6).touch_hashed(p.tuple.kind, p.hash);
    }

    /// [`ConnTable::prefetch_entry`] of a probe.
    #[inline]
    pub fn prefetch_entry_probe(&self, p: &Probe) {
        self.shard(p.v6).touch_entry_hashed(p.tuple.kind, p.hash);
    }

    /// The live connection of the probe's key in its direction:
    /// [`ConnTable::lookup_original`] or [`ConnTable::lookup_reply`].
    #[inline]
    pub fn lookup_probe(&self, p: &Probe, now: Millis) -> Option<Conn> {
        let shard = self.shard(p.v6);
        let s = match p.dir {
            Direction::Original => shard.find_fwd_hashed(&p.tuple, p.hash, |s| s.alive(now)),
            Direction::Reply => shard.find_reply_hashed(&p.tuple, p.hash, |s| s.alive(now)),
        }?;
        Some(Conn::of(&s, p.dir))
    }

    /// [`ConnTable::lookup_probe`] for the pipeline's frame path, inlined
    /// into it: an IPv4 probe's lookup is compiled in place, so its hit
    /// stays in registers; IPv6 takes an out-of-line call. A miss of an
    /// IPv4 client→VIP key that found no entry of the key leaves in `p`
    /// what spares [`ConnTable::open_probed`]'s insert its re-check.
    /// `flags` and `now` are the packet's, as [`ConnTable::update_hit`]
    /// is then given them: the lookup decides there whether the packet
    /// leaves the entry as it is, which for most entries also tells it
    /// alive (see [`ConnTable::quiet`]).
    #[inline(always)]
    pub fn find_probe(&self, p: &mut Probe, flags: Option<TcpFlags>, now: Millis) -> Option<Hit> {
        if p.v6 {
            return self.find_probe_v6(p, flags, now);
        }
        let judge = |dir| QuietOrAlive {
            table: self,
            dir,
            flags,
            now,
        };
        let (s, quiet) = match p.dir {
            Direction::Original => self.v4.find_fwd_vacant(
                &p.tuple,
                p.hash,
                judge(Direction::Original),
                &mut p.vacancy,
            ),
            Direction::Reply => {
                let judge = judge(Direction::Reply);
                self.v4.find_reply_judged::<false>(&p.tuple, p.hash, judge)
            }
        }?;
        Some(Hit::of(&s, p.dir, quiet))
    }

    /// [`ConnTable::find_probe`] of an IPv6 probe.
    #[inline(never)]
    fn find_probe_v6(&self, p: &Probe, flags: Option<TcpFlags>, now: Millis) -> Option<Hit> {
        let judge = QuietOrAlive {
            table: self,
            dir: p.dir,
            flags,
            now,
        };
        let (s, quiet) = match p.dir {
            Direction::Original => self.v6.find_fwd_judged::<true>(&p.tuple, p.hash, judge),
            Direction::Reply => self.v6.find_reply_judged::<true>(&p.tuple, p.hash, judge),
        }?;
        Some(Hit::of(&s, p.dir, quiet))
    }

    /// What the frame path's lookup makes of an entry of its key: `None`
    /// if it is not alive, else whether a packet with `flags` in
    /// direction `dir` at `now` leaves it as it is ([`Hit`]'s `quiet`).
    /// The quiet test first: where it holds the liveness test is not made.
    #[inline(always)]
    fn judge(
        &self,
        s: &Snap,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> Option<bool> {
        if self.quiet(s.timer(), s.meta_flags(), dir, flags, now) {
            Some(true)
        } else {
            s.alive(now).then_some(false)
        }
    }

    /// Whether the entry `r` remembers is still that connection and a
    /// client→VIP packet with `flags` at `now` leaves it as it is, alive
    /// ([`ConnTable::quiet`]): what [`ConnTable::find_probe`] and
    /// [`ConnTable::update_hit`] would find and do for the packet (a hit
    /// with nothing to write) but read from the entry's meta and timer
    /// words alone. False where the lookup is needed to tell: the entry
    /// released or reused (its meta word moved on; the timer's generation
    /// no longer the meta word's), or the packet changes it.
    #[inline(always)]
    pub fn quiet_remembered(&self, r: Remembered, flags: Option<TcpFlags>, now: Millis) -> bool {
        let Some((m, t)) = self.v4.meta_and_timer(r.slot) else {
            return false;
        };
        m == r.meta
            && t.gen_matches(gen_of_meta(m))
            && self.quiet(t, m as u8, Direction::Original, flags, now)
    }

    /// [`ConnTable::lookup_reply`] for the pipeline's frame path, as
    /// [`ConnTable::find_probe`]: the live NAT connection whose real
    /// server→client key is `key`.
    #[inline(always)]
    pub fn find_reply(&self, key: &FlowKey, flags: Option<TcpFlags>, now: Millis) -> Option<Hit> {
        self.find_probe(&mut self.probe(key, Direction::Reply), flags, now)
    }

    /// The live connection whose client→VIP key is `key`.
    #[inline]
    pub fn lookup_original(&self, key: &FlowKey, now: Millis) -> Option<Conn> {
        let t = fwd_tuple(key, Kind::Conn);
        let s = self.shard(key.is_ipv6()).find_fwd(&t, now)?;
        Some(Conn::of(&s, Direction::Original))
    }

    /// The live NAT connection whose real server→client key is `key`.
    #[inline]
    pub fn lookup_reply(&self, key: &FlowKey, now: Millis) -> Option<Conn> {
        let s = self
            .shard(key.is_ipv6())
            .find_reply(&fwd_tuple(key, Kind::Reply), now)?;
        Some(Conn::of(&s, Direction::Reply))
    }

    /// The [`Conn`] of a hit, by its [`Hit::handle`] and direction, as
    /// [`ConnTable::lookup_probe`] gives it: read again under the hit's
    /// generation (the hit does not carry every word); `None` once the
    /// entry has been released.
    #[inline(never)]
    pub fn hit_conn(&self, h: &ConnRef, dir: Direction) -> Option<Conn> {
        match self.shard(h.v6).read(h.slot) {
            Some(s) if s.gen() == h.gen => Some(Conn::of(&s, dir)),
            _ => None,
        }
    }

    /// Adds a connection in state NONE (TCP) or UDP; then call
    /// [`ConnTable::update`] with the packet that opened it. If the key is
    /// already present and alive (another worker won the race) that entry
    /// is returned instead, and `template` is left as it was.
    pub fn insert(&self, new: &NewConn, now: Millis) -> Result<Conn, InsertError> {
        check_new(&new.key, new.real, new.real_id)?;
        let state = match new.key.proto {
            L4Proto::Tcp => ConnState::None,
            L4Proto::Udp => ConnState::Udp,
            L4Proto::Icmp | L4Proto::Icmpv6 => return Err(InsertError::Protocol),
        };
        let placed = self.place_conn(
            &new.key,
            (new.real_id, new.method, new.real),
            new.template,
            (state, self.timeouts.ms(state, false)),
            None,
            now,
        );
        match placed? {
            Placed::New(s) => {
                self.counted_new(stripe(), new.real_id.0, state);
                Ok(Conn::of(&s, Direction::Original))
            }
            Placed::Existing(s) => Ok(Conn::of(&s, Direction::Original)),
        }
    }

    /// [`ConnTable::insert`] and then [`ConnTable::update`] with the packet
    /// that opens the connection (`flags`, as `update` takes them), in one
    /// step: a new entry is written in the state that packet leads to, with
    /// that state's timeout (SYN_RECV's flood check included) and counted
    /// once. If another worker's entry of the key won the race, that entry
    /// is updated with the packet instead. Returns the entry and the state
    /// `update` would have returned (`None`: the present entry expired or
    /// was released meanwhile).
    pub fn open(
        &self,
        new: &NewConn,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> Result<(Conn, Option<ConnState>), InsertError> {
        self.open_probed(new, None, flags, now)
    }

    /// [`ConnTable::open`] with the probe of the frame's lookup
    /// ([`ConnTable::probe`] of `new.key`, [`Direction::Original`]): the
    /// insert's locked re-check and placement reuse its hash. A probe of
    /// another key is ignored (the key is hashed again).
    pub fn open_probed(
        &self,
        new: &NewConn,
        probe: Option<&Probe>,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> Result<(Conn, Option<ConnState>), InsertError> {
        let real = (new.real_id, new.method, new.real);
        Ok(
            match self.open_placed(&new.key, real, new.template, probe, flags, now)? {
                (Placed::New(s), state) => (Conn::of(&s, Direction::Original), Some(state)),
                (Placed::Existing(s), _) => self.met(&s, flags, now),
            },
        )
    }

    /// [`ConnTable::open_probed`] returning a new entry as its handle
    /// only (read it back with [`ConnTable::conn`]): the pipeline needs
    /// the entry's words only for a conn event, which is usually off, and
    /// the whole [`Conn`] in the `Result` was about 30 stores.
    ///
    /// Given [`NewConn`]'s fields, not one built by the caller: the key
    /// stays where the caller has it, not copied into the `NewConn`.
    pub(crate) fn open_new(
        &self,
        key: &FlowKey,
        real: (RealId, ForwardMethod, SocketAddr),
        template: Option<ConnRef>,
        probe: &Probe,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> Result<Opened, InsertError> {
        Ok(
            match self.open_placed(key, real, template, Some(probe), flags, now)? {
                (Placed::New(s), state) => Opened::New(ConnRef::of(&s), state),
                (Placed::Existing(s), _) => {
                    let (c, state) = self.met(&s, flags, now);
                    Opened::Existing(c.handle, state)
                }
            },
        )
    }

    /// The open's check, state and placement, the new entry counted;
    /// inlined into [`ConnTable::open_probed`] and
    /// [`ConnTable::open_new`], which differ in what they return of it.
    #[inline(always)]
    fn open_placed(
        &self,
        key: &FlowKey,
        (real_id, method, real): (RealId, ForwardMethod, SocketAddr),
        template: Option<ConnRef>,
        probe: Option<&Probe>,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> Result<(Placed, ConnState), InsertError> {
        check_new(key, real, real_id)?;
        let state = match key.proto {
            L4Proto::Tcp => match flags {
                Some(f) => tcp_next(ConnState::None, table_for(method, Direction::Original), f),
                None => ConnState::None,
            },
            L4Proto::Udp => ConnState::Udp,
            L4Proto::Icmp | L4Proto::Icmpv6 => return Err(InsertError::Protocol),
        };
        // One stripe look-up for the flood check and the counts.
        let me = stripe();
        let flood = state.is_half_open()
            && self
                .counters
                .half_open_above_on(me, self.flood_threshold, now);
        let placed = self.place_conn(
            key,
            (real_id, method, real),
            template,
            (state, self.timeouts.ms(state, flood)),
            probe,
            now,
        )?;
        if let Placed::New(_) = placed {
            self.counted_new(me, real_id.0, state);
        }
        Ok((placed, state))
    }

    /// The key's live entry an open found placed meanwhile, updated with
    /// the opening packet's flags.
    fn met(&self, s: &Snap, flags: Option<TcpFlags>, now: Millis) -> (Conn, Option<ConnState>) {
        let c = Conn::of(s, Direction::Original);
        let state = self.update(&c.handle, Direction::Original, flags, now);
        (c, state)
    }

    /// The live connection `handle` refers to, as a lookup returns it
    /// (matched in [`Direction::Original`]); `None` once it is released.
    pub fn conn(&self, handle: &ConnRef) -> Option<Conn> {
        match self.shard(handle.v6).read(handle.slot) {
            Some(s) if s.gen() == handle.gen && !s.is_template() => {
                Some(Conn::of(&s, Direction::Original))
            }
            _ => None,
        }
    }

    /// Installs a connection a sync receiver was told about, or refreshes
    /// the live entry of its key: state and deadline as given, with the
    /// real server's ActiveConn/InActConn (and the half-open count) moved
    /// as the state says. An entry of the key for another real server or
    /// method is replaced. Refusals are the insert's ([`InsertError`]), or
    /// a state the protocol cannot have.
    pub fn import(&self, c: &ImportConn, now: Millis) -> Result<Conn, ImportError> {
        let state_fits = match c.key.proto {
            L4Proto::Tcp => c.state != ConnState::Udp,
            L4Proto::Udp => c.state == ConnState::Udp,
            L4Proto::Icmp | L4Proto::Icmpv6 => {
                return Err(ImportError::Refused(InsertError::Protocol))
            }
        };
        if !state_fits {
            return Err(ImportError::StateMismatch);
        }
        check_new(&c.key, c.real, c.real_id)?;
        if let Some(old) = self.lookup_original(&c.key, now) {
            let same =
                old.real_id() == c.real_id && old.method() == c.method && old.real() == c.real;
            if same {
                if let Some(conn) = self.refresh(&old, c.state, c.timeout_ms, now) {
                    return Ok(conn);
                }
            } else {
                self.remove(&old.handle, now);
            }
        }
        let placed = self.place_conn(
            &c.key,
            (c.real_id, c.method, c.real),
            c.template,
            (c.state, c.timeout_ms),
            None,
            now,
        );
        match placed? {
            Placed::New(s) => {
                self.counted_new(stripe(), c.real_id.0, c.state);
                Ok(Conn::of(&s, Direction::Original))
            }
            // Another thread placed the key meanwhile: refresh that one.
            Placed::Existing(s) => {
                let old = Conn::of(&s, Direction::Original);
                self.refresh(&old, c.state, c.timeout_ms, now)
                    .ok_or(ImportError::Refused(InsertError::TableFull))
            }
        }
    }

    /// Sets a live entry's state and deadline (`now + ms`), moving the
    /// counts; `None` if it was released meanwhile.
    fn refresh(&self, conn: &Conn, state: ConnState, ms: u64, now: Millis) -> Option<Conn> {
        let h = conn.handle;
        let shard = self.shard(h.v6);
        let mut t = shard.load_timer(h.slot)?;
        let old = loop {
            // An entry past its deadline is the sweep's (or the insert's):
            // re-arming it could leave the key two live entries.
            if t.is_untouchable() || !t.gen_matches(h.gen) || t.expired(now) {
                return None;
            }
            let old = t.state()?;
            match shard.cas_timer(h.slot, t, timer::with_state(t, state, now, ms)) {
                Ok(()) => break old,
                Err(seen) => t = seen,
            }
        };
        if old != state {
            self.moved(h.real_id, old, state);
        }
        let s = shard.read(h.slot)?;
        Some(Conn::of(&s, Direction::Original))
    }

    /// Places a connection entry of `key` toward `(real_id, method, real)`
    /// in `(state, timeout_ms)`, linked to `template` (bound first, and
    /// unbound again unless a new entry took the link): what an insert and
    /// an import both write.
    #[inline(always)]
    fn place_conn(
        &self,
        key: &FlowKey,
        (real_id, method, real): (RealId, ForwardMethod, SocketAddr),
        template: Option<ConnRef>,
        (state, timeout_ms): (ConnState, u64),
        probe: Option<&Probe>,
        now: Millis,
    ) -> Result<Placed, InsertError> {
        let v6 = key.is_ipv6();
        let link = match template {
            Some(t) => {
                if t.v6 != v6 || !self.bind(&t, now) {
                    self.counters
                        .rare
                        .template_gone
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(InsertError::TemplateGone);
                }
                t.slot + 1
            }
            None => 0,
        };
        let fresh = Fresh {
            fwd: fwd_tuple(key, Kind::Conn),
            method,
            real: addr_bits(real.ip()),
            rport: real.port(),
            real_id: real_id.0,
            link,
            persist_secs: 0,
            state,
            timeout_ms,
        };
        let placed = self.place(v6, &fresh, probe, now);
        if !matches!(placed, Ok(Placed::New(_))) && link != 0 {
            self.unbind(v6, link - 1);
        }
        placed
    }

    /// Counts a new connection entry placed in `state`, in the calling
    /// thread's stripe `me`.
    #[inline]
    fn counted_new(&self, me: usize, real_id: u32, state: ConnState) {
        let c = self.counters.on(me);
        c.conns.fetch_add(1, Ordering::Relaxed);
        if state.is_half_open() {
            c.half_open.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = self.load(real_id) {
            d.opened_on(me, state.is_active());
        }
    }

    /// Places `fresh` in the shard of `v6`; `probe`, if it is of
    /// `fresh`'s key, spares hashing that key again.
    #[inline(always)]
    fn place(
        &self,
        v6: bool,
        fresh: &Fresh,
        probe: Option<&Probe>,
        now: Millis,
    ) -> Result<Placed, InsertError> {
        let shard = self.shard(v6);
        let (h, vacancy) = match probe {
            Some(p)
                if p.v6 == v6 && p.seed == shard.seed_id() && same_tuple(&p.tuple, &fresh.fwd) =>
            {
                (p.hash, p.vacancy)
            }
            _ => (shard.hash(&fresh.fwd), None),
        };
        let placed = shard.insert_hashed(fresh, (h, vacancy), now, |s| {
            self.kill(shard, s, now, Kill::IfExpired)
        });
        placed.map_err(|e| self.refused(e))
    }

    /// Counts an insert's refusal and says why in the table's terms.
    #[cold]
    #[inline(never)]
    fn refused(&self, e: Refused) -> InsertError {
        match e {
            Refused::Full => {
                self.counters
                    .rare
                    .table_full
                    .fetch_add(1, Ordering::Relaxed);
                InsertError::TableFull
            }
            Refused::ReplyConflict => {
                self.counters
                    .rare
                    .reply_conflicts
                    .fetch_add(1, Ordering::Relaxed);
                InsertError::ReplyConflict
            }
        }
    }

    /// One packet of connection `conn`: moves the TCP state (flags are
    /// ignored for UDP/ICMP; `None` = no flags) and re-arms the timeout.
    /// Returns the new state, or `None` if the entry has expired or been
    /// released — treat the packet as a miss.
    #[inline(always)]
    pub fn update(
        &self,
        conn: &ConnRef,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> Option<ConnState> {
        let t = self.shard(conn.v6).load_timer(conn.slot)?;
        // The common case, inline: a live entry that this packet leaves in
        // its state and whose deadline would move by less than COARSE_TICKS
        // has nothing to write. Every other case takes the general path.
        if t.gen_matches(conn.gen)
            && !t.expired(now)
            && self.unchanged(t, conn.flags, dir, flags, now)
        {
            return ConnState::from_code(t.state_code() as u8);
        }
        self.update_slow(conn, dir, flags, now, t)
    }

    /// Whether a packet with `flags` in direction `dir` leaves a live
    /// entry with `meta_flags` and timer word `t` as it is: its state a
    /// [`ConnState`] other than SYN_RECV (whose timeout depends on the
    /// flood check) that the packet keeps, and its deadline one that
    /// `now` plus the state's timeout moves by less than COARSE_TICKS.
    /// One table load and bit test for the state, one compare for the
    /// deadline.
    #[inline(always)]
    fn unchanged(
        &self,
        t: Timer,
        meta_flags: u8,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> bool {
        self.unchanged_where(t, meta_flags, dir, flags, now, |_| true)
    }

    /// [`ConnTable::unchanged`] of an entry that, where it holds, is also
    /// alive at `now` without a test of its own: its state's timeout is
    /// one whose unchanged deadline `now` has not reached
    /// ([`timer::unchanged_is_live`]; every timeout from 1 s to about
    /// 99 days). The state a [`ConnState`], hence not DEAD or INSERTING.
    #[inline(always)]
    fn quiet(
        &self,
        t: Timer,
        meta_flags: u8,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> bool {
        self.unchanged_where(t, meta_flags, dir, flags, now, timer::unchanged_is_live)
    }

    /// [`ConnTable::unchanged`], its state's reach also accepted by `sure`.
    #[inline(always)]
    fn unchanged_where(
        &self,
        t: Timer,
        meta_flags: u8,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Millis,
        sure: impl Fn(u64) -> bool,
    ) -> bool {
        let code = t.state_code();
        // No flags reads as a segment without FIN, SYN, RST or ACK: both
        // leave every state as it is.
        let keep = KEEPS[dir as usize][(meta_flags >> 2 & 15) as usize][keeps_flags(flags)];
        if keep >> code & 1 == 0 {
            return false;
        }
        let reach = self.timeouts.reach_of_code(code as usize);
        sure(reach) && !timer::worth_touch_reach(t, now, reach)
    }

    /// [`ConnTable::update`] of a lookup's hit, in its direction, with the
    /// packet's `flags` and `now` the lookup was given: the common case is
    /// what the lookup decided from the words it read. A hit the packet
    /// leaves in its state with a deadline it moves by less than
    /// `COARSE_TICKS` (and found alive at `now`) has nothing to write, as
    /// `update` finds from a fresh load (an entry released since the
    /// lookup is released just after this packet, as it would be a moment
    /// later). Everything else is `update`, out of line.
    #[inline(always)]
    pub fn update_hit(&self, hit: &Hit, flags: Option<TcpFlags>, now: Millis) -> Option<ConnState> {
        if hit.quiet {
            // A state `KEEPS` holds is a `ConnState`: `Hit::state` of it,
            // the expression a caller compares the result with, so that
            // the compiler folds that compare away.
            return Some(hit.state());
        }
        self.update_out_of_line(hit.handle(), hit.dir, flags, now)
    }

    /// [`ConnTable::update`], a call: the rest of [`ConnTable::update_hit`].
    /// The handle by value: a reference would make the caller keep its
    /// hit in memory.
    #[inline(never)]
    fn update_out_of_line(
        &self,
        conn: ConnRef,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Millis,
    ) -> Option<ConnState> {
        self.update(&conn, dir, flags, now)
    }

    /// [`ConnTable::update`] from the timer word `t` on: the state change,
    /// the flood check and the CAS that re-arms the deadline.
    #[inline(never)]
    fn update_slow(
        &self,
        conn: &ConnRef,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Millis,
        mut t: Timer,
    ) -> Option<ConnState> {
        let shard = self.shard(conn.v6);
        let proto = proto_from_code(conn.flags >> 2);
        let table = tcp_table(conn.flags, dir);
        let (old, new) = loop {
            if t.is_untouchable() || !t.gen_matches(conn.gen) || t.expired(now) {
                return None;
            }
            let old = t.state()?;
            let new = match (proto, flags) {
                (L4Proto::Tcp, Some(f)) => tcp_next(old, table, f),
                _ => old,
            };
            let flood =
                new.is_half_open() && self.counters.half_open_above(self.flood_threshold, now);
            let ms = self.timeouts.ms(new, flood);
            if new == old && !timer::worth_touch(t, now, ms) {
                return Some(old);
            }
            match shard.cas_timer(conn.slot, t, timer::with_state(t, new, now, ms)) {
                Ok(()) => break (old, new),
                Err(seen) => t = seen,
            }
        };
        if old != new {
            self.moved(conn.real_id, old, new);
        }
        Some(new)
    }

    /// Count changes for a state change this thread made by CAS.
    fn moved(&self, real_id: u32, old: ConnState, new: ConnState) {
        if old.is_half_open() != new.is_half_open() {
            let h = &self.counters.mine().half_open;
            if new.is_half_open() {
                h.fetch_add(1, Ordering::Relaxed);
            } else {
                h.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if old.is_active() == new.is_active() {
            return;
        }
        // A concurrent release may subtract the new state's count before we
        // add it: the counter is briefly off by one, never for longer.
        if let Some(d) = self.load(real_id) {
            d.moved(new.is_active());
        }
    }

    /// Marks `s` DEAD (if `how` allows) and releases it: counts, template
    /// reference, reply key, slot. Returns whether this call released it.
    fn kill(&self, shard: &Shard, s: &Snap, now: Millis, how: Kill) -> bool {
        let Some(mut t) = shard.load_timer(s.slot) else {
            return false;
        };
        loop {
            if t.is_untouchable() || !t.gen_matches(s.gen()) {
                return false;
            }
            if how == Kill::IfExpired && !t.expired(now) {
                return false;
            }
            if s.is_template() && t.refs() > 0 {
                if how == Kill::Force {
                    return false;
                }
                // IPVS re-arms a template that still controls connections.
                let ms = s.persist_secs() * 1000;
                let _ = shard.cas_timer(s.slot, t, timer::extended(t, now, ms));
                return false;
            }
            match shard.cas_timer(s.slot, t, timer::dead(t)) {
                Ok(()) => break,
                Err(seen) => t = seen,
            }
        }
        self.release_counts(shard, s, t);
        shard.release(s);
        self.counters
            .mine()
            .released
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    fn release_counts(&self, shard: &Shard, s: &Snap, t: Timer) {
        let d = self.load(s.real_id());
        let c = self.counters.mine();
        if s.is_template() {
            c.templates.fetch_sub(1, Ordering::Relaxed);
            if let Some(d) = d {
                d.template(false);
            }
            return;
        }
        c.conns.fetch_sub(1, Ordering::Relaxed);
        let state = t.state().unwrap_or(ConnState::Close);
        if state.is_half_open() {
            c.half_open.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(d) = d {
            d.closed(state.is_active());
        }
        if s.link() != 0 {
            self.unbind(shard.is_v6(), s.link() - 1);
        }
    }

    /// Takes a reference on a template for a new connection, refreshing its
    /// deadline (IPVS restarts a template's timer each time it is used).
    fn bind(&self, t: &ConnRef, now: Millis) -> bool {
        let shard = self.shard(t.v6);
        let Some(s) = shard.read(t.slot) else {
            return false;
        };
        if s.gen() != t.gen || !s.is_template() {
            return false;
        }
        let ms = s.persist_secs() * 1000;
        let Some(mut cur) = shard.load_timer(t.slot) else {
            return false;
        };
        loop {
            let alive = !cur.is_untouchable() && (!cur.expired(now) || cur.refs() > 0);
            if !alive || !cur.gen_matches(t.gen) {
                return false;
            }
            let Some(next) = timer::with_refs(cur, cur.refs() + 1) else {
                return false;
            };
            match shard.cas_timer(t.slot, cur, timer::extended(next, now, ms)) {
                Ok(()) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Drops a connection's reference on its template. A template is never
    /// released while referenced, so `slot` still holds it.
    fn unbind(&self, v6: bool, slot: u32) {
        let shard = self.shard(v6);
        let Some(mut cur) = shard.load_timer(slot) else {
            return;
        };
        loop {
            if cur.refs() == 0 {
                return;
            }
            let Some(next) = timer::with_refs(cur, cur.refs() - 1) else {
                return;
            };
            match shard.cas_timer(slot, cur, next) {
                Ok(()) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The live persistence template for `key`.
    pub fn template(&self, key: &TemplateKey, now: Millis) -> Option<Template> {
        let s = self
            .shard(key.client.is_ipv6())
            .find_fwd(&template_tuple(key), now)?;
        Some(Template {
            handle: ConnRef::of(&s),
            real_id: RealId(s.real_id()),
            real: s.real(),
        })
    }

    /// Creates the template `key` → `real_id` with the service's persistence
    /// timeout (seconds, at most 65535), or returns the live one another
    /// worker created first.
    pub fn insert_template(
        &self,
        key: &TemplateKey,
        real_id: RealId,
        real: SocketAddr,
        timeout_secs: u32,
        now: Millis,
    ) -> Result<Template, InsertError> {
        let v6 = key.client.is_ipv6();
        if real.is_ipv6() != v6 || key.vip.is_ipv6() != v6 {
            return Err(InsertError::AddressFamily);
        }
        if real_id.0 > MAX_ID {
            return Err(InsertError::IdOutOfRange);
        }
        let secs = timeout_secs.min(u16::MAX as u32) as u16;
        let fresh = Fresh {
            fwd: template_tuple(key),
            method: ForwardMethod::Dr,
            real: addr_bits(real.ip()),
            rport: real.port(),
            real_id: real_id.0,
            link: 0,
            persist_secs: secs,
            state: ConnState::None,
            timeout_ms: secs as u64 * 1000,
        };
        let s = match self.place(v6, &fresh, None, now)? {
            Placed::New(s) => {
                self.counters
                    .mine()
                    .templates
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(d) = self.load(real_id.0) {
                    d.template(true);
                }
                s
            }
            Placed::Existing(s) => s,
        };
        Ok(Template {
            handle: ConnRef::of(&s),
            real_id: RealId(s.real_id()),
            real: s.real(),
        })
    }

    /// Incremental expiry: looks at the next `budget` buckets (15 slots
    /// each) of each address family and releases what has expired. Call it
    /// once per batch from every worker; a budget of 64 sweeps a 1M table
    /// every ~1100 calls. Returns how many entries it released.
    pub fn expire_step(&self, now: Millis, budget: usize) -> usize {
        self.expire_step_with(now, budget, |_| {})
    }

    /// [`ConnTable::expire_step`] that shows `released` each entry it
    /// released (connections and templates, as they were just before),
    /// without allocating: how connection sync learns what ended.
    pub fn expire_step_with(
        &self,
        now: Millis,
        budget: usize,
        mut released: impl FnMut(&ConnEntry),
    ) -> usize {
        let mut n = 0;
        for shard in [&self.v4, &self.v6] {
            for slot in shard.sweep_slice(budget) {
                if let Some(s) = shard.read(slot) {
                    if s.timer().expired(now) && self.kill(shard, &s, now, Kill::IfExpired) {
                        released(&entry_of(&s, now));
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// [`ConnTable::expire_step_with`] paced by the callers' clock, for all
    /// of them together: of the calls in one millisecond of `now`, the
    /// first sweeps `budget` buckets and the others return 0 at once (one
    /// load). So the table is swept `budget` buckets a millisecond however
    /// many workers share it: N workers do one sweep between them, not N,
    /// and an entry is released within the same time of its expiry as
    /// with one worker (a pass over the table takes its buckets / `budget`
    /// milliseconds of calls).
    pub fn expire_paced_with(
        &self,
        now: Millis,
        budget: usize,
        released: impl FnMut(&ConnEntry),
    ) -> usize {
        let last = self.swept_ms.load(Ordering::Relaxed);
        if now.0 <= last
            || self
                .swept_ms
                .compare_exchange(last, now.0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        self.expire_step_with(now, budget, released)
    }

    /// Milliseconds until `conn` expires; `None` once it is released.
    pub fn remaining_ms(&self, conn: &ConnRef, now: Millis) -> Option<u64> {
        let t = self.shard(conn.v6).load_timer(conn.slot)?;
        (!t.is_untouchable() && t.gen_matches(conn.gen)).then(|| t.remaining_ms(now))
    }

    /// The key of the persistence template that placed `conn`, if any.
    pub fn template_key(&self, conn: &Conn) -> Option<TemplateKey> {
        let link = conn.snap.link();
        if link == 0 {
            return None;
        }
        let t = self.shard(conn.handle.v6).read(link - 1)?;
        t.is_template().then(|| {
            let (c, v) = (t.client(), t.virt());
            TemplateKey {
                proto: proto_from_code(t.proto()),
                client: c.ip(),
                vip: v.ip(),
                vport: v.port(),
            }
        })
    }

    /// Releases one connection now (e.g. its real server is gone). Returns
    /// false if it was already released, or is a template still in use.
    pub fn remove(&self, conn: &ConnRef, now: Millis) -> bool {
        let shard = self.shard(conn.v6);
        match shard.read(conn.slot) {
            Some(s) if s.gen() == conn.gen => self.kill(shard, &s, now, Kill::Force),
            _ => false,
        }
    }

    /// IPVS `expire_nodest_conn`: releases every connection, then every
    /// template, of the deleted real servers `loads`, in one pass over the
    /// table whatever their number. Runs beside the workers (on a thread of
    /// the control plane's, never the control loop itself); returns how many
    /// entries it released.
    pub fn expire_reals(&self, loads: &[RealId], now: Millis) -> usize {
        let Some(max) = loads.iter().map(|d| d.0 as usize).max() else {
            return 0;
        };
        let mut gone = vec![0u64; max / 64 + 1];
        for d in loads {
            gone[d.0 as usize / 64] |= 1 << (d.0 % 64);
        }
        let is_gone = |real_id: u32| {
            gone.get(real_id as usize / 64)
                .is_some_and(|w| w & (1 << (real_id % 64)) != 0)
        };
        let mut released = 0;
        for templates in [false, true] {
            for shard in [&self.v4, &self.v6] {
                for slot in shard.all_slots() {
                    if let Some(s) = shard.read(slot) {
                        if is_gone(s.real_id())
                            && s.is_template() == templates
                            && self.kill(shard, &s, now, Kill::Force)
                        {
                            released += 1;
                        }
                    }
                }
            }
        }
        released
    }

    /// Calls `f` for every live entry (connections and templates), for
    /// `ipvsadm -L -c`. Workers are not stopped; each entry is consistent.
    pub fn for_each(&self, now: Millis, f: impl FnMut(&ConnEntry)) {
        self.visit(now, true, f)
    }

    /// Like `for_each`; with `alive_only` false it also shows entries past
    /// their deadline that no sweep has released yet (they still count).
    fn visit(&self, now: Millis, alive_only: bool, mut f: impl FnMut(&ConnEntry)) {
        for shard in [&self.v4, &self.v6] {
            for slot in shard.all_slots() {
                let Some(s) = shard.read(slot) else { continue };
                if s.timer().is_untouchable() || (alive_only && !s.alive(now)) {
                    continue;
                }
                f(&entry_of(&s, now));
            }
        }
    }

    /// All live entries (allocates: control plane only).
    pub fn entries(&self, now: Millis) -> Vec<ConnEntry> {
        let mut v = Vec::new();
        self.for_each(now, |e| v.push(*e));
        v
    }
}

fn entry_of(s: &Snap, now: Millis) -> ConnEntry {
    let t = s.timer();
    ConnEntry {
        proto: proto_from_code(s.proto()),
        state: t.state().unwrap_or(ConnState::Close),
        template: s.is_template(),
        expires_ms: t.remaining_ms(now),
        client: s.client(),
        virt: s.virt(),
        real: s.real(),
        real_id: RealId(s.real_id()),
        method: s.method(),
    }
}

fn table_method(flags: u8) -> ForwardMethod {
    table::method_from_code(flags >> 4)
}

/// The TCP table a packet of an entry with `meta_flags` goes through in
/// direction `dir`.
#[inline]
fn tcp_table(meta_flags: u8, dir: Direction) -> TcpTable {
    table_for(table_method(meta_flags), dir)
}

/// The TCP table a packet of a connection forwarded by `method` goes
/// through in direction `dir`.
#[inline]
fn table_for(method: ForwardMethod, dir: Direction) -> TcpTable {
    match (method, dir) {
        (ForwardMethod::Nat, Direction::Original) => TcpTable::Input,
        (ForwardMethod::Nat, Direction::Reply) => TcpTable::Output,
        _ => TcpTable::InputOnly,
    }
}

/// Whether a packet with `flags` in direction `dir` leaves an entry with
/// `meta_flags` in state code `code` (below 16) in that state.
#[cfg(test)]
fn stays(meta_flags: u8, dir: Direction, flags: Option<TcpFlags>, code: u64) -> bool {
    match flags {
        Some(f) if proto_from_code(meta_flags >> 2) == L4Proto::Tcp => {
            state::tcp_stays(code, tcp_table(meta_flags, dir), f)
        }
        _ => true,
    }
}

/// [`KEEPS`]'s last index for a packet's `flags`: its FIN, SYN, RST and
/// ACK bits where they are (no flags reads as none of them), one `and`
/// where [`state::folded`]'s 4 bits took four instructions more.
#[inline(always)]
fn keeps_flags(flags: Option<TcpFlags>) -> usize {
    flags.unwrap_or(TcpFlags(0)).0 as usize & 0x17
}

/// `KEEPS[dir][meta_flags >> 2 & 15][keeps_flags(flags)]`: bit `s` set where
/// such a packet leaves an entry of that protocol and method (the index's
/// two fields of two bits) in state code `s`, [`stays`], and `s` is a
/// state other than SYN_RECV, so that [`ConnTable::unchanged`] tests all
/// of that with one load. A test holds it to `stays` for every flag byte.
const KEEPS: [[[u16; 32]; 16]; 2] = {
    let usable = ((1u16 << STATES) - 1) & !(1 << ConnState::SynRecv as u16);
    let mut out = [[[0u16; 32]; 16]; 2];
    let mut dir = 0;
    while dir < 2 {
        let mut m = 0;
        while m < 16 {
            // Bits 0..2 the protocol's code (TCP 0), bits 2..4 the
            // method's (NAT 0), as `proto_code` and `method_code` give them.
            let table = match (m >> 2, dir) {
                (0, 0) => TcpTable::Input,
                (0, _) => TcpTable::Output,
                _ => TcpTable::InputOnly,
            };
            let mut f = 0;
            while f < 32 {
                let stays = if m & 3 == 0 {
                    state::stays_bits(table, state::folded(TcpFlags(f as u8)))
                } else {
                    u16::MAX
                };
                out[dir][m][f] = stays & usable;
                f += 1;
            }
            m += 1;
        }
        dir += 1;
    }
    out
};

fn fwd_tuple(key: &FlowKey, kind: Kind) -> Tuple {
    Tuple {
        proto: proto_code(key.proto),
        kind,
        a: addr_bits(key.src),
        ap: key.sport,
        b: addr_bits(key.dst),
        bp: key.dport,
    }
}

/// `a == b` by word compares: the derived `==` of the two `u128`s and
/// the small fields compiles to a `memcmp` call.
#[inline(always)]
fn same_tuple(a: &Tuple, b: &Tuple) -> bool {
    (a.a ^ b.a) | (a.b ^ b.b) == 0
        && (a.ap, a.bp, a.proto, a.kind as u8) == (b.ap, b.bp, b.proto, b.kind as u8)
}

fn index_tuple(key: &FlowKey, dir: Direction) -> Tuple {
    match dir {
        Direction::Original => fwd_tuple(key, Kind::Conn),
        // A real server→client packet: the same fields, in the reply index.
        Direction::Reply => fwd_tuple(key, Kind::Reply),
    }
}

fn template_tuple(key: &TemplateKey) -> Tuple {
    Tuple {
        proto: proto_code(key.proto),
        kind: Kind::Template,
        a: addr_bits(key.client),
        ap: 0,
        b: addr_bits(key.vip),
        bp: key.vport,
    }
}
