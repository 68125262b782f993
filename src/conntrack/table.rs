//! Storage of one address family: slots of atomic words, a tag index for the
//! client→VIP key and a reference index for the NAT reply key.
//!
//! - `slots`: `stride` words per entry (5 for IPv4 = 40 bytes, 10 for IPv6).
//!   Word 0 is `meta` (generation | real_id | flags | LIVE; bits 8..24 are
//!   free: they held a service index nothing read), word 1 the `timer`
//!   (state | generation low bits | template refcount | deadline), the rest
//!   are written once while the entry is private and read under `meta`'s
//!   generation, seqlock style: a reader that sees the same LIVE `meta` before
//!   and after reading knows the words belong to that one entry.
//! - `tags`: buckets of one cache line, a header and 15 `u32` hash tags. The
//!   tag at bucket b, position p names slot `b * 15 + p`: the position *is*
//!   the slot, so the client key needs no pointer and there is no free list.
//!   A key lives in its home bucket or one of the `PROBE - 1` after it; the
//!   header counts the keys homed here that spilled, so a miss usually costs
//!   one cache line.
//! - `refs`: buckets of a header and 7 `u64` words `(tag << 32) | slot + 1`,
//!   the reply key index of NAT entries.
//!
//! Headers carry a writer bit (bit 0) that serialises *inserts of keys homed
//! in that bucket*, which is what makes two concurrent inserts of one key
//! yield one entry. Lookups, per-packet updates and expiry never take it.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::packet::L4Proto;
use crate::service::ForwardMethod;
use crate::xsk::huge::HugeSlice;
use crate::Millis;

use super::state::ConnState;

/// Tags per bucket (one header word + 15 tags = 64 bytes).
pub(super) const TAGS: usize = 15;
/// Reply references per bucket (one header word + 7 = 64 bytes).
const REFS: usize = 7;
/// Buckets a key may be placed in, counting its home bucket.
const PROBE: usize = 8;

const EMPTY: u32 = 0;
/// A position claimed by an inserter that is still writing the slot.
const BUSY: u32 = 1;

// meta word: gen 40..64 | real_id 24..40 | free 8..24 | flags 0..8
const LIVE: u64 = 1;
const GEN_BITS: u32 = 24;
const META_GEN_SHIFT: u32 = 40;
/// Largest [`crate::service::RealId`] an entry can hold.
pub(super) const MAX_ID: u32 = 0xffff;
const TEMPLATE: u64 = 1 << 1;
const PROTO_SHIFT: u32 = 2;
const METHOD_SHIFT: u32 = 4;

// timer word: state 0..4 | gen 4..16 | refcount 16..36 | deadline 36..64
const STATE_MASK: u64 = 0xf;
/// The state code of an entry being released; no [`ConnState`] has it.
const DEAD: u64 = 0xf;
/// The state code of an entry whose insert has not finished publishing it
/// in both indexes: nobody may update, release or reuse it yet.
const INSERTING: u64 = 0xe;
const GEN_SHIFT: u32 = 4;
const GEN_MASK: u64 = 0xfff;
const REF_SHIFT: u32 = 16;
const REF_MAX: u64 = (1 << 20) - 1;
const DEADLINE_SHIFT: u32 = 36;
const DEADLINE_MASK: u64 = (1 << 28) - 1;
/// Granularity of deadlines, in ms. Deadlines are 28-bit tick counters
/// compared with serial-number arithmetic, so a timeout can be up to
/// 2^27 ticks (about 99 days); longer ones are clamped.
pub(super) const TICK_MS: u64 = 64;
const TICK_SHIFT: u32 = TICK_MS.trailing_zeros();
const _: () = assert!(TICK_MS == 1 << TICK_SHIFT);
const MAX_TIMEOUT_TICKS: u64 = 1 << 27;
/// An unchanged state's deadline is rewritten only once it would move by at
/// least this much (16 ticks ≈ 1 s): a busy flow writes its entry about once
/// a second instead of once a packet.
const COARSE_TICKS: u64 = 16;

#[repr(align(64))]
struct TagBucket([AtomicU32; TAGS + 1]);

#[repr(align(64))]
struct RefBucket([AtomicU64; REFS + 1]);

/// Which index a tuple belongs to; mixed into the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Conn = 0,
    Template = 1,
    Reply = 2,
}

/// A key in the table's own terms: `a:ap → b:bp`. For connections and
/// templates `a` is the client and `b` the VIP; for reply keys `a` is the
/// real server and `b` the client. IPv4 addresses occupy the low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tuple {
    pub proto: u8,
    pub kind: Kind,
    pub a: u128,
    pub ap: u16,
    pub b: u128,
    pub bp: u16,
}

/// A protocol's 2-bit code in an entry: TCP 0, UDP 1, ICMP 2, ICMPv6 3.
/// One load from a table indexed by the protocol's number (every
/// [`L4Proto`] is below 64), where a `match` was a chain of compares and
/// branches on every key built.
#[inline(always)]
pub(super) fn proto_code(p: L4Proto) -> u8 {
    PROTO_CODES[p.number() as usize & 63]
}

const PROTO_CODES: [u8; 64] = {
    let mut t = [0u8; 64];
    t[L4Proto::Tcp as usize] = 0;
    t[L4Proto::Udp as usize] = 1;
    t[L4Proto::Icmp as usize] = 2;
    t[L4Proto::Icmpv6 as usize] = 3;
    t
};

pub(super) fn proto_from_code(c: u8) -> L4Proto {
    match c & 3 {
        0 => L4Proto::Tcp,
        1 => L4Proto::Udp,
        2 => L4Proto::Icmp,
        _ => L4Proto::Icmpv6,
    }
}

pub(super) fn method_code(m: ForwardMethod) -> u8 {
    match m {
        ForwardMethod::Nat => 0,
        ForwardMethod::Tun => 1,
        ForwardMethod::Dr => 2,
    }
}

pub(super) fn method_from_code(c: u8) -> ForwardMethod {
    match c & 3 {
        0 => ForwardMethod::Nat,
        1 => ForwardMethod::Tun,
        _ => ForwardMethod::Dr,
    }
}

pub(super) fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn addr_from_bits(v6: bool, bits: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    }
}

/// Current tick, masked to the deadline width.
pub(super) fn tick_now(now: Millis) -> u64 {
    (now.0 / TICK_MS) & DEADLINE_MASK
}

/// The tick at or after `now + ms` (never early).
fn deadline_tick(now: Millis, ms: u64) -> u64 {
    let ms = ms.min((MAX_TIMEOUT_TICKS - 1) * TICK_MS);
    now.0.saturating_add(ms).div_ceil(TICK_MS) & DEADLINE_MASK
}

/// `a - b` in serial-number arithmetic over 28 bits.
fn serial_diff(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) & DEADLINE_MASK;
    if d >= MAX_TIMEOUT_TICKS {
        d as i64 - (1 << 28)
    } else {
        d as i64
    }
}

/// Decoded timer word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timer(pub u64);

impl Timer {
    pub fn pack(state: u64, gen: u32, refs: u64, deadline: u64) -> Timer {
        Timer(
            (state & STATE_MASK)
                | ((gen as u64 & GEN_MASK) << GEN_SHIFT)
                | ((refs & REF_MAX) << REF_SHIFT)
                | ((deadline & DEADLINE_MASK) << DEADLINE_SHIFT),
        )
    }
    pub fn state_code(self) -> u64 {
        self.0 & STATE_MASK
    }
    /// Dead or not yet fully inserted: no one but its inserter may touch it.
    pub fn is_untouchable(self) -> bool {
        self.state_code() >= INSERTING
    }
    pub fn state(self) -> Option<ConnState> {
        ConnState::from_code(self.state_code() as u8)
    }
    pub fn gen_matches(self, gen: u32) -> bool {
        (self.0 >> GEN_SHIFT) & GEN_MASK == gen as u64 & GEN_MASK
    }
    pub fn refs(self) -> u64 {
        (self.0 >> REF_SHIFT) & REF_MAX
    }
    pub fn deadline(self) -> u64 {
        (self.0 >> DEADLINE_SHIFT) & DEADLINE_MASK
    }
    /// Whether `now` is at or past the deadline: `serial_diff(tick_now(now),
    /// deadline) >= 0`, computed in the word's top 28 bits as
    /// [`Timer::moves`] is, where the difference's sign is the i64's.
    #[inline(always)]
    pub fn expired(self, now: Millis) -> bool {
        let tick = (now.0 / TICK_MS) << DEADLINE_SHIFT;
        tick.wrapping_sub(self.0 & DEADLINE_MASK << DEADLINE_SHIFT) as i64 >= 0
    }
    /// Milliseconds until the deadline (0 once passed).
    pub fn remaining_ms(self, now: Millis) -> u64 {
        let ticks = serial_diff(self.deadline(), tick_now(now));
        if ticks <= 0 {
            0
        } else {
            (ticks as u64 * TICK_MS).saturating_sub(now.0 % TICK_MS)
        }
    }
    fn with(self, state: u64, refs: u64, deadline: u64) -> Timer {
        let gen = ((self.0 >> GEN_SHIFT) & GEN_MASK) as u32;
        Timer::pack(state, gen, refs, deadline)
    }
    /// Whether moving the deadline to `d` is worth a write: whether
    /// `serial_diff(d, deadline)` is at least COARSE_TICKS either way.
    /// Computed in the word's top 28 bits, where wrapping arithmetic is
    /// the deadline's serial arithmetic: the difference plus
    /// COARSE_TICKS - 1 is below 2 COARSE_TICKS - 1 exactly when the
    /// difference is within COARSE_TICKS of zero.
    #[inline(always)]
    fn moves(self, d: u64) -> bool {
        self.moves_top(d << DEADLINE_SHIFT)
    }
    /// [`Timer::moves`] of a deadline in `top`'s top 28 bits, whatever its
    /// low 36 bits hold: the timer's deadline has zeros there, so they
    /// neither borrow from nor carry into the top bits the test reads.
    #[inline(always)]
    fn moves_top(self, top: u64) -> bool {
        let diff = top.wrapping_sub(self.0 & DEADLINE_MASK << DEADLINE_SHIFT);
        diff.wrapping_add((COARSE_TICKS - 1) << DEADLINE_SHIFT)
            >= (2 * COARSE_TICKS - 1) << DEADLINE_SHIFT
    }
}

/// The words of one entry as read under its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Snap {
    pub v6: bool,
    pub slot: u32,
    w: [u64; 10],
}

/// The generation a meta word holds.
#[inline(always)]
pub(super) fn gen_of_meta(m: u64) -> u32 {
    (m >> META_GEN_SHIFT) as u32
}

impl Snap {
    /// This entry as a shard of family `V6` holds it: for IPv4 the words
    /// past its five are zero and the family is a constant, as
    /// `snap_under` builds them. The lookups' out-of-line rest returns
    /// its entry through memory; fitted, it differs from the inline hit
    /// only in the words an entry has, so the caller merges those two
    /// paths in five registers, not a 10-word copy in memory.
    #[inline(always)]
    fn fit<const V6: bool>(self) -> Snap {
        if V6 {
            self
        } else {
            let w = self.w;
            Snap {
                v6: false,
                slot: self.slot,
                w: [w[0], w[1], w[2], w[3], w[4], 0, 0, 0, 0, 0],
            }
        }
    }
    pub fn gen(&self) -> u32 {
        (self.w[0] >> META_GEN_SHIFT) as u32
    }
    /// The meta word as the read found it.
    pub fn meta(&self) -> u64 {
        self.w[0]
    }
    pub fn meta_flags(&self) -> u8 {
        self.w[0] as u8
    }
    pub fn is_template(&self) -> bool {
        self.w[0] & TEMPLATE != 0
    }
    pub fn proto(&self) -> u8 {
        ((self.w[0] >> PROTO_SHIFT) & 3) as u8
    }
    pub fn method(&self) -> ForwardMethod {
        method_from_code((self.w[0] >> METHOD_SHIFT) as u8)
    }
    pub fn timer(&self) -> Timer {
        Timer(self.w[1])
    }
    fn cport(&self) -> u16 {
        (self.w[2] >> 48) as u16
    }
    fn vport(&self) -> u16 {
        (self.w[2] >> 32) as u16
    }
    fn rport(&self) -> u16 {
        (self.w[2] >> 16) as u16
    }
    /// Persistence timeout of a template, in seconds.
    pub fn persist_secs(&self) -> u64 {
        self.w[2] & 0xffff
    }
    pub fn real_id(&self) -> u32 {
        ((self.w[0] >> 24) & 0xffff) as u32
    }
    fn c(&self) -> u128 {
        if self.v6 {
            self.w[3] as u128 | (self.w[4] as u128) << 64
        } else {
            (self.w[3] >> 32) as u128
        }
    }
    fn v(&self) -> u128 {
        if self.v6 {
            self.w[5] as u128 | (self.w[6] as u128) << 64
        } else {
            self.w[3] as u32 as u128
        }
    }
    fn r(&self) -> u128 {
        if self.v6 {
            self.w[7] as u128 | (self.w[8] as u128) << 64
        } else {
            (self.w[4] >> 32) as u128
        }
    }
    /// Slot + 1 of the template controlling this connection (0: none).
    pub fn link(&self) -> u32 {
        if self.v6 {
            self.w[9] as u32
        } else {
            self.w[4] as u32
        }
    }
    pub fn fwd_tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto(),
            kind: if self.is_template() {
                Kind::Template
            } else {
                Kind::Conn
            },
            a: self.c(),
            ap: self.cport(),
            b: self.v(),
            bp: self.vport(),
        }
    }
    pub fn reply_tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto(),
            kind: Kind::Reply,
            a: self.r(),
            ap: self.rport(),
            b: self.c(),
            bp: self.cport(),
        }
    }
    /// Not released and not past its deadline; a template that still
    /// controls connections stays alive past its deadline, as in IPVS.
    pub fn alive(&self, now: Millis) -> bool {
        let t = self.timer();
        !t.is_untouchable() && (!t.expired(now) || (self.is_template() && t.refs() > 0))
    }
    pub fn has_reply_key(&self) -> bool {
        !self.is_template() && self.method() == ForwardMethod::Nat
    }
    pub fn client(&self) -> SocketAddr {
        SocketAddr::new(addr_from_bits(self.v6, self.c()), self.cport())
    }
    pub fn virt(&self) -> SocketAddr {
        SocketAddr::new(addr_from_bits(self.v6, self.v()), self.vport())
    }
    pub fn real(&self) -> SocketAddr {
        SocketAddr::new(addr_from_bits(self.v6, self.r()), self.rport())
    }
}

/// Everything an insert writes into a fresh slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fresh {
    pub fwd: Tuple,
    pub method: ForwardMethod,
    pub real: u128,
    pub rport: u16,
    pub real_id: u32,
    pub link: u32,
    pub persist_secs: u16,
    pub state: ConnState,
    pub timeout_ms: u64,
}

impl Fresh {
    /// Whether the entry gets a reply key: a NAT connection (as
    /// [`Snap::has_reply_key`] of what is written).
    #[inline]
    fn has_reply_key(&self) -> bool {
        self.fwd.kind != Kind::Template && self.method == ForwardMethod::Nat
    }

    /// The reply key of the entry (as [`Snap::reply_tuple`] of what is
    /// written), taken from the insert's own fields instead of decoded back
    /// from the written words.
    #[inline]
    fn reply_tuple(&self) -> Tuple {
        Tuple {
            proto: self.fwd.proto,
            kind: Kind::Reply,
            a: self.real,
            ap: self.rport,
            b: self.fwd.a,
            bp: self.fwd.ap,
        }
    }
}

/// Why an insert did not create an entry (the shard-level part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    Full,
    ReplyConflict,
}

/// Result of a successful shard insert.
pub(super) enum Placed {
    New(Snap),
    Existing(Snap),
}

pub(super) struct Shard {
    v6: bool,
    stride: usize,
    seed: [u64; 5],
    tags: HugeSlice<TagBucket>,
    refs: HugeSlice<RefBucket>,
    words: HugeSlice<AtomicU64>,
    cursor: AtomicUsize,
}

/// 64×64→128 multiply folded to 64 bits (the wyhash / foldhash mixer).
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// `h` mapped onto `0..n` without a division (Lemire's multiply-shift).
#[inline]
fn range(h: u64, n: usize) -> usize {
    ((h as u128 * n as u128) >> 64) as usize
}

/// The `i`th bucket a key with hash `h` may occupy: its home bucket, then a
/// run of buckets starting at an independent second position. Spilling to a
/// random place instead of the neighbour keeps clusters from growing, so the
/// table fills to 90% before a probe window runs out.
#[inline]
fn bucket_at(h: u64, n: usize, i: usize) -> usize {
    if i == 0 {
        range(h, n)
    } else {
        (range(h.wrapping_mul(0xc2b2_ae3d_27d4_eb4f), n) + i - 1) % n
    }
}

// Bucket header: bit 0 the insert guard; bits 1..4 the highest probe index
// a key homed here was spilled to; bits 4..11 how many such keys are live
// (at most the 7 other buckets' 105 slots). A lookup probes past the home
// bucket only while that count is non-zero, and only as far as that index:
// most misses read one cache line. A reply bucket's header also holds its
// filter (bits 11..59, see `filter_one`). A tag bucket's holds, in bits
// 11..16, how many of its positions past the first [`FRONT`] are not
// EMPTY (see there), and in bits 16..32 how many times its guard was
// released, wrapping (`unlock`), so that an insert can tell that nothing
// was placed since a lookup's miss (`Shard::find_fwd_vacant`). It wraps
// after 2^16 inserts of keys homed in that one bucket, which a worker
// would have to sleep through between one frame's lookup and its insert
// (and the header then read the same in every other bit) for the insert
// to skip a re-check it needed.
const SPILL_ONE: u64 = 16;
const INSERT_ONE: u32 = 1 << 16;
const SPILL_COUNT: u64 = 0x7f << 4;

// The positions of a tag bucket a lookup reads first: inserts fill a
// bucket from its front (`Shard::claim_in`), so a bucket holding at most
// this many entries has them all there, and a miss in it reads four tags,
// not fifteen. Past them a lookup reads on only while the header's back
// count is non-zero: a claim adds to it after taking a position there and
// before publishing its tag, a free subtracts after emptying the
// position, so it reads 0 only when no tag is published past the front.
// It counts the 11 positions, and one more for each position emptied and
// claimed again while its freeing thread has not subtracted yet (at most
// one per thread): five bits hold that for 20 such threads at once.
const FRONT: usize = 4;
const BACK_ONE: u32 = 1 << 11;
const BACK_COUNT: u32 = 0x1f << 11;

fn spill_plus(h: u64, i: usize) -> u64 {
    let max = ((h >> 1) & 7).max(i as u64 & 7);
    ((h + SPILL_ONE) & !(7 << 1)) | max << 1
}

fn spill_minus(h: u64) -> u64 {
    let count = ((h & SPILL_COUNT) >> 4).saturating_sub(1);
    if count == 0 {
        h & !(SPILL_COUNT | 7 << 1)
    } else {
        (h & !SPILL_COUNT) | count << 4
    }
}

/// How many of a key's probe buckets a lookup must read.
#[inline]
fn probe_limit(h: u64) -> usize {
    if h & SPILL_COUNT == 0 {
        1
    } else {
        ((h >> 1) & 7) as usize + 1
    }
}

// The reply index's filter, so that a miss (every frame for the host
// itself) costs a header test, not a scan: 16 counters of 3 bits in each
// reply bucket's header, bits 11..59, counter `v` the number of references
// in that bucket whose tag has `v` in bits 1..5. An insert adds to it
// after placing its reference, a removal subtracts before clearing it, so
// a counter never exceeds the 7 references a bucket holds, and it counts
// every reference whose insert has finished and whose entry is not being
// released: a counter at 0 means no such reference, exactly.
const FILTER_SHIFT: u32 = 11;

/// What a reference with `tag` adds to its bucket's header.
#[inline]
fn filter_one(tag: u32) -> u64 {
    1 << (FILTER_SHIFT + 3 * ((tag >> 1) & 15))
}

/// Whether a reply bucket whose header reads `h` may hold a reference
/// with `tag`.
#[inline(always)]
fn filter_may_hold(h: u64, tag: u32) -> bool {
    (h >> (FILTER_SHIFT + 3 * ((tag >> 1) & 15))) & 7 != 0
}

/// The first position in `from..=to` of `bucket` whose tag is `tag`, or
/// 0: an unrolled run of a load, a compare and a branch per tag. Inlined
/// into the lookup: as a call, the caller's values were spilled around it
/// and each position was moved into the return register before its
/// compare.
#[inline(always)]
fn first_tag(bucket: &TagBucket, tag: u32, from: usize, to: usize) -> usize {
    for p in from..to + 1 {
        if bucket.0[p].load(Ordering::Relaxed) == tag {
            return p;
        }
    }
    0
}

/// The first position of `bucket` whose tag is `tag`, or 0, the back
/// positions read only where the header `head` counts one (see [`FRONT`]).
#[inline(always)]
fn first_tag_of(bucket: &TagBucket, head: u32, tag: u32) -> usize {
    let p = first_tag(bucket, tag, 1, FRONT);
    if p == 0 && head & BACK_COUNT != 0 {
        first_tag(bucket, tag, FRONT + 1, TAGS)
    } else {
        p
    }
}

/// Bit `p` set for each position `p` (1..=15) of `bucket` whose tag is
/// `tag`, for the rare scan past a tag collision.
#[inline]
fn tag_mask(bucket: &TagBucket, tag: u32) -> u32 {
    let mut m = 0;
    for p in 1..TAGS + 1 {
        m |= ((bucket.0[p].load(Ordering::Relaxed) == tag) as u32) << p;
    }
    m
}

/// The first position (1..=7) of `bucket` whose reference carries `tag`,
/// or 0, as [`first_tag`].
#[inline]
fn first_ref(bucket: &RefBucket, tag: u32) -> usize {
    for q in 1..REFS + 1 {
        if (bucket.0[q].load(Ordering::Relaxed) >> 32) as u32 == tag {
            return q;
        }
    }
    0
}

/// Bit `q` set for each position of `bucket` whose reference carries
/// `tag`, as [`tag_mask`].
#[inline]
fn ref_mask(bucket: &RefBucket, tag: u32) -> u32 {
    let mut m = 0;
    for q in 1..REFS + 1 {
        m |= (((bucket.0[q].load(Ordering::Relaxed) >> 32) as u32 == tag) as u32) << q;
    }
    m
}

/// What a lookup makes of each entry of its key that it reads: `None` to
/// pass it by, `Some` of a mark to take it, the mark returned with it. A
/// trait, not a closure, so that its method is inlined into both places a
/// lookup calls it (the inline hit and the out-of-line rest): a closure as
/// large as the frame path's was made a call.
pub(super) trait Judge {
    fn judge(&mut self, s: &Snap) -> Option<bool>;
}

/// The [`Judge`] of a test: takes the first entry it accepts, unmarked.
struct Taking<F>(F);

impl<F: FnMut(&Snap) -> bool> Judge for Taking<F> {
    #[inline(always)]
    fn judge(&mut self, s: &Snap) -> Option<bool> {
        (self.0)(s).then_some(false)
    }
}

/// A forward key as the words of an entry hold it, for comparing in place.
struct FwdKey {
    /// `meta`'s LIVE, TEMPLATE and protocol bits.
    meta: u64,
    /// Word 2's high half: client port, virtual port.
    ports: u64,
    /// Word 3 (IPv4: client, VIP), or words 3..7 (IPv6: client, VIP).
    addr: [u64; 4],
    /// The words a match is read with (bit `i` for word `i`), those of
    /// the key besides: all of them, or, for the frame path, `meta` and
    /// the timer only (the others are left zero).
    need: u32,
}

impl FwdKey {
    const META_MASK: u64 = LIVE | TEMPLATE | 3 << PROTO_SHIFT;

    #[inline]
    fn of(v6: bool, t: &Tuple) -> FwdKey {
        let template = if t.kind == Kind::Template {
            TEMPLATE
        } else {
            0
        };
        let addr = if v6 {
            [
                t.a as u64,
                (t.a >> 64) as u64,
                t.b as u64,
                (t.b >> 64) as u64,
            ]
        } else {
            [(t.a as u64) << 32 | (t.b as u32 as u64), 0, 0, 0]
        };
        FwdKey {
            need: !0,
            meta: LIVE | template | ((t.proto & 3) as u64) << PROTO_SHIFT,
            ports: (t.ap as u64) << 16 | t.bp as u64,
            addr,
        }
    }
}

/// A reply key (`real:rport → client:cport`) as the words of a NAT
/// connection entry hold it, for comparing in place.
struct ReplyKey {
    /// `meta`'s LIVE, TEMPLATE (clear), protocol and method (NAT) bits.
    meta: u64,
    /// Word 2's client and real server ports.
    ports: u64,
    /// The client's address (IPv4: the low half; IPv6: low, high words).
    client: [u64; 2],
    /// The real server's address, as `client`.
    real: [u64; 2],
}

impl ReplyKey {
    const META_MASK: u64 = LIVE | TEMPLATE | 3 << PROTO_SHIFT | 3 << METHOD_SHIFT;
    const PORTS_MASK: u64 = 0xffff << 48 | 0xffff << 16;

    #[inline]
    fn of(v6: bool, t: &Tuple) -> ReplyKey {
        let nat = method_code(ForwardMethod::Nat) as u64;
        let split = |x: u128| {
            if v6 {
                [x as u64, (x >> 64) as u64]
            } else {
                [x as u32 as u64, 0]
            }
        };
        ReplyKey {
            meta: LIVE | ((t.proto & 3) as u64) << PROTO_SHIFT | nat << METHOD_SHIFT,
            ports: (t.bp as u64) << 48 | (t.ap as u64) << 16,
            client: split(t.b),
            real: split(t.a),
        }
    }
}

/// Loads words `1..` of an entry (`words`: its 5 or 10) into `w`, each at
/// a fixed index: no loop and no bounds check per word.
#[inline(always)]
fn load_words(words: &[AtomicU64], w: &mut [u64; 10]) {
    if let Ok(a) = <&[AtomicU64; 5]>::try_from(words) {
        for i in 1..5 {
            w[i] = a[i].load(Ordering::Relaxed);
        }
    } else if let Ok(a) = <&[AtomicU64; 10]>::try_from(words) {
        for i in 1..10 {
            w[i] = a[i].load(Ordering::Relaxed);
        }
    }
}

/// Stores `w`'s words `1..` into an entry's 5 or 10 `words`, as
/// [`load_words`] loads them.
#[inline(always)]
fn store_words(words: &[AtomicU64], w: &[u64; 10]) {
    if let Ok(a) = <&[AtomicU64; 5]>::try_from(words) {
        for i in 1..5 {
            a[i].store(w[i], Ordering::Relaxed);
        }
    } else if let Ok(a) = <&[AtomicU64; 10]>::try_from(words) {
        for i in 1..10 {
            a[i].store(w[i], Ordering::Relaxed);
        }
    }
}

fn spill_add32(w: &AtomicU32, i: usize) {
    let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
        Some(spill_plus(h as u64, i) as u32)
    });
}

fn spill_sub32(w: &AtomicU32) {
    let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
        Some(spill_minus(h as u64) as u32)
    });
}

fn spill_add64(w: &AtomicU64, i: usize) {
    let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
        Some(spill_plus(h, i))
    });
}

fn spill_sub64(w: &AtomicU64) {
    let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
        Some(spill_minus(h))
    });
}

/// Takes a tag bucket's guard; returns the header as it was just before
/// (guard clear).
fn lock(word: &AtomicU32) -> u32 {
    loop {
        let was = word.fetch_or(1, Ordering::Acquire);
        if was & 1 == 0 {
            return was;
        }
        while word.load(Ordering::Relaxed) & 1 != 0 {
            std::hint::spin_loop();
        }
    }
}

/// Releases a tag bucket's guard, moving the header's insert count on in
/// the same step (the guard bit is set: adding `INSERT_ONE - 1` clears it).
fn unlock(word: &AtomicU32) {
    word.fetch_add(INSERT_ONE - 1, Ordering::Release);
}

fn lock64(word: &AtomicU64) {
    while word.fetch_or(1, Ordering::Acquire) & 1 != 0 {
        while word.load(Ordering::Relaxed) & 1 != 0 {
            std::hint::spin_loop();
        }
    }
}

fn unlock64(word: &AtomicU64) {
    word.fetch_and(!1, Ordering::Release);
}

/// How a shard of `capacity` connections is laid out: tag buckets, reply-index
/// buckets and entry words; `None` if the numbers overflow.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    buckets: usize,
    ref_buckets: usize,
    words: usize,
    stride: usize,
}

impl Layout {
    pub fn of(v6: bool, capacity: usize) -> Option<Layout> {
        let buckets = capacity.div_ceil(TAGS).max(PROBE);
        let slots = buckets.checked_mul(TAGS)?;
        // One reply reference per slot at most (NAT entries have one), and
        // 1/16 more room than that, so that an all-NAT table still fills
        // to 85% of its slots before the reply index's probes run out.
        let ref_buckets = (slots.checked_mul(17)? / 16).div_ceil(REFS).max(PROBE);
        let stride = if v6 { 10 } else { 5 };
        Some(Layout {
            buckets,
            ref_buckets,
            words: slots.checked_mul(stride)?,
            stride,
        })
    }

    /// Bytes the shard will hold (as [`Shard::bytes`] once allocated).
    pub fn bytes(&self) -> Option<usize> {
        self.buckets
            .checked_mul(size_of::<TagBucket>())?
            .checked_add(self.ref_buckets.checked_mul(size_of::<RefBucket>())?)?
            .checked_add(self.words.checked_mul(size_of::<AtomicU64>())?)
    }
}

impl Shard {
    /// A shard laid out as `l` (from [`Layout::of`]), or the allocator's
    /// refusal.
    pub fn try_new(v6: bool, l: Layout) -> std::io::Result<Shard> {
        let rs = std::collections::hash_map::RandomState::new();
        Ok(Shard {
            v6,
            stride: l.stride,
            seed: std::array::from_fn(|i| rs.hash_one(i) | 1),
            tags: HugeSlice::new(l.buckets, || {
                TagBucket(std::array::from_fn(|_| AtomicU32::new(0)))
            })?,
            refs: HugeSlice::new(l.ref_buckets, || {
                RefBucket(std::array::from_fn(|_| AtomicU64::new(0)))
            })?,
            words: HugeSlice::new(l.words, || AtomicU64::new(0))?,
            cursor: AtomicUsize::new(0),
        })
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.tags.len() * TAGS
    }

    /// Bytes of memory this shard holds.
    pub fn bytes(&self) -> usize {
        self.tags.len() * 64 + self.refs.len() * 64 + self.words.len() * 8
    }

    #[inline]
    pub fn hash(&self, t: &Tuple) -> u64 {
        if self.v6 {
            self.hash_in::<true>(t)
        } else {
            self.hash_in::<false>(t)
        }
    }

    /// [`Shard::hash`] in a shard of family `V6`: the caller that knows
    /// the family when compiling gets one body without the other's branch.
    #[inline(always)]
    pub fn hash_in<const V6: bool>(&self, t: &Tuple) -> u64 {
        let s = &self.seed;
        let z = (t.ap as u64) << 32 | (t.bp as u64) << 16 | (t.proto as u64) << 8 | t.kind as u64;
        let mixed = if V6 {
            let x = fold(t.a as u64 ^ s[0], (t.a >> 64) as u64 ^ s[1]);
            let y = fold(t.b as u64 ^ s[2], (t.b >> 64) as u64 ^ s[3]);
            fold(x ^ z, y ^ s[4])
        } else {
            // Both IPv4 addresses fit one word: one multiply mixes them
            // with the ports and the seed.
            fold((t.a as u64) << 32 ^ t.b as u64 ^ s[0], z ^ s[4])
        };
        // The second multiply spreads the few bits that vary between flows
        // of one client (the port) over the whole word.
        fold(mixed, 0x9e37_79b9_7f4a_7c15)
    }

    /// Seeds this shard's hashes from `seed` instead of at random, before
    /// anything is inserted (see [`crate::conntrack::ConnTable::with_seed`]).
    pub fn set_seed(&mut self, seed: u64) {
        let mut x = seed ^ if self.v6 { 0x6a09_e667_f3bc_c908 } else { 0 };
        self.seed = std::array::from_fn(|_| {
            // splitmix64: well spread words from one.
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) | 1
        });
    }

    /// A word of this shard's seed: tells its hashes from another shard's.
    #[inline]
    pub fn seed_id(&self) -> u64 {
        self.seed[0]
    }

    #[inline]
    fn word(&self, slot: u32, i: usize) -> &AtomicU64 {
        &self.words[slot as usize * self.stride + i]
    }

    pub fn timer_word(&self, slot: u32) -> &AtomicU64 {
        self.word(slot, 1)
    }

    /// `slot`'s meta word and then its timer word, each an acquire load;
    /// `None` for a slot past the shard's end. No seqlock read: a caller
    /// that holds an earlier read of the meta word learns from its value
    /// alone that the entry is the one it read (only an insert and a
    /// release write it, and both move the generation), and from the
    /// timer's generation that the timer is still that entry's.
    #[inline(always)]
    pub fn meta_and_timer(&self, slot: u32) -> Option<(u64, Timer)> {
        let base = slot as usize * self.stride;
        let w = self.words.get(base..base + 2)?;
        let m = w[0].load(Ordering::Acquire);
        Some((m, Timer(w[1].load(Ordering::Acquire))))
    }

    /// The entry whose `meta` read `m1` (LIVE) in `slot`'s `words`, copied
    /// out, if `meta` still reads `m1` after the copy: the seqlock's read
    /// side, shared by every lookup.
    #[inline(always)]
    fn snap_under(&self, v6: bool, slot: u32, words: &[AtomicU64], m1: u64) -> Option<Snap> {
        let mut w = [0u64; 10];
        load_words(words, &mut w);
        fence(Ordering::Acquire);
        if words[0].load(Ordering::Relaxed) != m1 {
            return None;
        }
        w[0] = m1;
        // `v6` is the shard's family, a constant where the caller's is.
        Some(Snap { v6, slot, w })
    }

    /// [`Shard::snap_under`] of an entry whose words flagged in `known`
    /// (bit `i` for word `i`) the caller has loaded into `w` already, after
    /// its acquire load of `m1`: the key words a lookup compared in place,
    /// kept rather than loaded a second time (an atomic load is not merged
    /// with another). The other words are loaded here, then the fence and
    /// `meta` again, as `snap_under` does.
    #[inline(always)]
    fn snap_known<const V6: bool>(
        &self,
        slot: u32,
        words: &[AtomicU64],
        m1: u64,
        mut w: [u64; 10],
        known: u32,
    ) -> Option<Snap> {
        let n = if V6 { 10 } else { 5 };
        // A constant range, unrolled (an iterator's `skip` was not: a
        // call of `Take::nth` per word).
        #[allow(clippy::needless_range_loop)]
        for i in 1..n {
            if known >> i & 1 == 0 {
                w[i] = words[i].load(Ordering::Relaxed);
            }
        }
        fence(Ordering::Acquire);
        if words[0].load(Ordering::Relaxed) != m1 {
            return None;
        }
        w[0] = m1;
        Some(Snap { v6: V6, slot, w })
    }

    /// The `stride` words of `slot` in a shard of family `V6` (whose
    /// stride is 10 words, else 5), at a length known when compiling.
    #[inline(always)]
    fn entry<const V6: bool>(&self, slot: u32) -> Option<&[AtomicU64]> {
        let stride = if V6 { 10 } else { 5 };
        let base = slot as usize * stride;
        self.words.get(base..base + stride)
    }

    /// The entry in `slot`, if LIVE, read consistently under its generation.
    #[inline]
    pub fn read(&self, slot: u32) -> Option<Snap> {
        let base = slot as usize * self.stride;
        let words = self.words.get(base..base + self.stride)?;
        let m1 = words[0].load(Ordering::Acquire);
        if m1 & LIVE == 0 {
            return None;
        }
        self.snap_under(self.v6, slot, words, m1)
    }

    /// The live entry (connection or template) with forward key `t`.
    #[inline]
    pub fn find_fwd(&self, t: &Tuple, now: Millis) -> Option<Snap> {
        self.find_fwd_where(t, |s| s.alive(now))
    }

    /// The first entry of forward tuple `t` that `take` accepts; `take`
    /// sees every entry of that tuple until then.
    #[inline]
    fn find_fwd_where(&self, t: &Tuple, take: impl FnMut(&Snap) -> bool) -> Option<Snap> {
        self.find_fwd_hashed(t, self.hash(t), take)
    }

    /// [`Shard::find_fwd_where`] with `t`'s hash `h` already computed.
    #[inline]
    pub fn find_fwd_hashed(
        &self,
        t: &Tuple,
        h: u64,
        take: impl FnMut(&Snap) -> bool,
    ) -> Option<Snap> {
        // One body per family: the IPv4 one compares and copies its five
        // words without the IPv6 branches.
        if self.v6 {
            self.find_fwd_in::<true>(t, h, take)
        } else {
            self.find_fwd_in::<false>(t, h, take)
        }
    }

    /// [`Shard::find_fwd_hashed`] in a shard of family `V6`: the home
    /// bucket's first matching tag inline, where nearly every lookup ends;
    /// what follows a tag collision, and the buckets a key may have spilled
    /// to, in [`Shard::find_fwd_rest`], a call, so that the inlined code
    /// stays small.
    #[inline(always)]
    pub fn find_fwd_in<const V6: bool>(
        &self,
        t: &Tuple,
        h: u64,
        take: impl FnMut(&Snap) -> bool,
    ) -> Option<Snap> {
        self.find_fwd_seen::<V6>(t, h, Taking(take), &mut None, !0)
            .map(|(s, _)| s)
    }

    /// [`Shard::find_fwd_in`] with a [`Judge`] of the entries of the key:
    /// the frame path's lookup, which marks an entry the packet leaves as
    /// it is.
    #[inline(always)]
    pub fn find_fwd_judged<const V6: bool>(
        &self,
        t: &Tuple,
        h: u64,
        judge: impl Judge,
    ) -> Option<(Snap, bool)> {
        self.find_fwd_seen::<V6>(t, h, judge, &mut None, !0)
    }

    /// [`Shard::find_fwd_judged`] in an IPv4 shard, for the frame path:
    /// the entry read with its key's words, `meta` and the timer only
    /// (word 4, the real server and template link, left zero: the frame
    /// path forwards by the real server's id, and its rare uses of the
    /// whole entry read it again). When it finds no entry of the key at
    /// all (no tag of it in the home bucket, nothing spilled from there),
    /// it puts in `vacancy` the home bucket's header as read before the
    /// search. An insert of the key that finds the header unchanged under
    /// the guard needs no re-check: the header is read with acquire
    /// ordering, so an insert it does not show yet changes it before that
    /// insert's guard is released.
    #[inline(always)]
    pub fn find_fwd_vacant(
        &self,
        t: &Tuple,
        h: u64,
        judge: impl Judge,
        vacancy: &mut Option<u32>,
    ) -> Option<(Snap, bool)> {
        self.find_fwd_seen::<false>(t, h, judge, vacancy, 0b11)
    }

    /// [`Shard::find_fwd_judged`], the home bucket's header put in
    /// `vacancy` on a miss that saw no entry of the key, the entry read
    /// with the words flagged in `need` (bit `i` for word `i`) besides its
    /// key's.
    #[inline(always)]
    fn find_fwd_seen<const V6: bool>(
        &self,
        t: &Tuple,
        h: u64,
        mut judge: impl Judge,
        vacancy: &mut Option<u32>,
        need: u32,
    ) -> Option<(Snap, bool)> {
        let n = self.tags.len();
        let home = range(h, n);
        let tag = (h as u32) | 2;
        let key = FwdKey {
            need,
            ..FwdKey::of(V6, t)
        };
        let bucket = &self.tags[home];
        let head = bucket.0[0].load(Ordering::Acquire);
        let p = first_tag_of(bucket, head, tag);
        if p != 0 {
            let slot = (home * TAGS + p - 1) as u32;
            if let Some(s) = self.read_fwd_in::<V6>(slot, &key) {
                if let Some(mark) = judge.judge(&s) {
                    return Some((s, mark));
                }
            }
        } else if head as u64 & SPILL_COUNT == 0 {
            // Nothing spilled from here (`probe_limit` 1): a hit finds its
            // tag in the home bucket without the limit computed.
            *vacancy = Some(head);
            return None;
        }
        // Past position `p` of the home bucket (all of it when `p` is 0).
        // The key and `take` go by value and the entry comes back in a
        // place of this branch's own: a reference to any of them would
        // keep this function's values in memory on the inline path too
        // (`take` by reference made the hit store `now` and its address).
        let after = if p == 0 { TAGS } else { p };
        let mut found = Snap {
            v6: V6,
            slot: 0,
            w: [0; 10],
        };
        let limit = probe_limit(head as u64);
        self.find_fwd_rest::<V6>(key, (h, tag), after, limit, judge, &mut found)
            .map(|mark| (found.fit::<V6>(), mark))
    }

    /// The rest of [`Shard::find_fwd_seen`]: the home bucket's tags after
    /// position `after`, then the other `limit - 1` probe buckets, in
    /// order, each entry of the key shown to `judge` until it accepts one,
    /// which is put in `found`; its mark is returned.
    #[inline(never)]
    fn find_fwd_rest<const V6: bool>(
        &self,
        key: FwdKey,
        (h, tag): (u64, u32),
        after: usize,
        limit: usize,
        mut judge: impl Judge,
        found: &mut Snap,
    ) -> Option<bool> {
        let n = self.tags.len();
        for i in 0..limit {
            let b = bucket_at(h, n, i);
            let bucket = &self.tags[b];
            let mut m = tag_mask(bucket, tag);
            if i == 0 {
                m &= !((2 << after) - 1);
            }
            while m != 0 {
                let p = m.trailing_zeros() as usize;
                m &= m - 1;
                let slot = (b * TAGS + p - 1) as u32;
                if let Some(s) = self.read_fwd_in::<V6>(slot, &key) {
                    if let Some(mark) = judge.judge(&s) {
                        *found = s;
                        return Some(mark);
                    }
                }
            }
        }
        None
    }

    /// The entry in `slot` if it is LIVE and its forward key is `key`, read
    /// consistently under its generation. The key words are compared in
    /// place first, so a tag collision costs a few loads, not a copy.
    #[inline(always)]
    #[cfg(test)]
    fn read_fwd(&self, slot: u32, key: &FwdKey) -> Option<Snap> {
        if self.v6 {
            self.read_fwd_in::<true>(slot, key)
        } else {
            self.read_fwd_in::<false>(slot, key)
        }
    }

    /// [`Shard::read_fwd`] in a shard of family `V6`.
    #[inline(always)]
    fn read_fwd_in<const V6: bool>(&self, slot: u32, key: &FwdKey) -> Option<Snap> {
        let words = self.entry::<V6>(slot)?;
        let m1 = words[0].load(Ordering::Acquire);
        // The words of a LIVE generation never change, so a mismatch read
        // under it means another entry (or one being replaced): not ours.
        // The words compared go into the copy as they were read.
        let mut w = [0u64; 10];
        if m1 & FwdKey::META_MASK != key.meta {
            return None;
        }
        w[2] = words[2].load(Ordering::Relaxed);
        if w[2] >> 32 != key.ports {
            return None;
        }
        for i in 3..if V6 { 7 } else { 4 } {
            w[i] = words[i].load(Ordering::Relaxed);
            if w[i] != key.addr[i - 3] {
                return None;
            }
        }
        // Words not needed count as known: not loaded, left zero.
        let known = if V6 { 0b111_1100 } else { 0b1100 } | !key.need;
        self.snap_known::<V6>(slot, words, m1, w, known)
    }

    /// The entry in `slot` if it is a LIVE NAT connection whose reply key
    /// is `key`, compared in place before the copy as in
    /// [`Shard::read_fwd`].
    #[inline(always)]
    #[cfg(test)]
    fn read_reply(&self, slot: u32, key: &ReplyKey) -> Option<Snap> {
        if self.v6 {
            self.read_reply_in::<true>(slot, key)
        } else {
            self.read_reply_in::<false>(slot, key)
        }
    }

    /// [`Shard::read_reply`] in a shard of family `V6`.
    #[inline(always)]
    fn read_reply_in<const V6: bool>(&self, slot: u32, key: &ReplyKey) -> Option<Snap> {
        let words = self.entry::<V6>(slot)?;
        let m1 = words[0].load(Ordering::Acquire);
        // The words compared go into the copy as they were read.
        let mut w = [0u64; 10];
        if m1 & ReplyKey::META_MASK != key.meta {
            return None;
        }
        w[2] = words[2].load(Ordering::Relaxed);
        if w[2] & ReplyKey::PORTS_MASK != key.ports {
            return None;
        }
        if V6 {
            for (i, k) in [
                (3, key.client[0]),
                (4, key.client[1]),
                (7, key.real[0]),
                (8, key.real[1]),
            ] {
                w[i] = words[i].load(Ordering::Relaxed);
                if w[i] != k {
                    return None;
                }
            }
        } else {
            w[3] = words[3].load(Ordering::Relaxed);
            if w[3] >> 32 != key.client[0] {
                return None;
            }
            w[4] = words[4].load(Ordering::Relaxed);
            if w[4] >> 32 != key.real[0] {
                return None;
            }
        }
        let known = if V6 { 0b1_1001_1100 } else { 0b1_1100 };
        self.snap_known::<V6>(slot, words, m1, w, known)
    }

    /// Loads the home bucket of `t`'s index so that a lookup shortly after
    /// finds it in cache; for batches, where the misses then overlap.
    #[inline]
    pub fn touch(&self, t: &Tuple) {
        self.touch_hashed(t.kind, self.hash(t))
    }

    /// [`Shard::touch`] of a tuple of kind `kind` whose hash is `h`.
    #[inline]
    pub fn touch_hashed(&self, kind: Kind, h: u64) {
        if kind == Kind::Reply {
            let b = &self.refs[range(h, self.refs.len())].0[0];
            std::hint::black_box(b.load(Ordering::Relaxed));
        } else {
            let b = &self.tags[range(h, self.tags.len())].0[0];
            std::hint::black_box(b.load(Ordering::Relaxed));
        }
    }

    /// Loads the entry slots whose tags match `t` in its home bucket (which
    /// [`Shard::touch`] should have brought in): the second stage of a
    /// batch prefetch.
    #[inline]
    pub fn touch_entry(&self, t: &Tuple) {
        self.touch_entry_hashed(t.kind, self.hash(t))
    }

    /// [`Shard::touch_entry`] of a tuple of kind `kind` whose hash is `h`.
    #[inline]
    pub fn touch_entry_hashed(&self, kind: Kind, h: u64) {
        if kind == Kind::Reply {
            let tag = (h as u32) | 1;
            for w in self.refs[range(h, self.refs.len())].0[1..].iter() {
                let v = w.load(Ordering::Relaxed);
                if (v >> 32) as u32 == tag && v as u32 != 0 {
                    self.touch_slot((v as u32 - 1) as usize);
                }
            }
        } else {
            let b = range(h, self.tags.len());
            let tag = (h as u32) | 2;
            let bucket = &self.tags[b].0;
            // The back positions only where the header counts one (`FRONT`).
            let to = if bucket[0].load(Ordering::Relaxed) & BACK_COUNT != 0 {
                TAGS
            } else {
                FRONT
            };
            for (p, w) in bucket[1..to + 1].iter().enumerate() {
                if w.load(Ordering::Relaxed) == tag {
                    self.touch_slot(b * TAGS + p);
                }
            }
        }
    }

    /// Loads a slot's `meta` word. (Touching its last word too, for slots
    /// that straddle two lines, measured slower: more misses in flight.)
    #[inline]
    fn touch_slot(&self, slot: usize) {
        if let Some(meta) = self.words.get(slot * self.stride) {
            std::hint::black_box(meta.load(Ordering::Relaxed));
        }
    }

    /// The live NAT connection whose reply key is `t`.
    #[inline]
    pub fn find_reply(&self, t: &Tuple, now: Millis) -> Option<Snap> {
        self.find_reply_where(t, |s| s.alive(now))
    }

    #[inline]
    fn find_reply_where(&self, t: &Tuple, ok: impl Fn(&Snap) -> bool) -> Option<Snap> {
        self.find_reply_hashed(t, self.hash(t), ok)
    }

    /// [`Shard::find_reply_where`] with `t`'s hash `h` already computed.
    #[inline]
    pub fn find_reply_hashed(&self, t: &Tuple, h: u64, ok: impl Fn(&Snap) -> bool) -> Option<Snap> {
        if self.v6 {
            self.find_reply_in::<true>(t, h, ok)
        } else {
            self.find_reply_in::<false>(t, h, ok)
        }
    }

    /// [`Shard::find_reply_hashed`] in a shard of family `V6`, as
    /// [`Shard::find_fwd_in`]: the home bucket's filter and first matching
    /// reference inline, the rest in [`Shard::find_reply_rest`].
    #[inline(always)]
    pub fn find_reply_in<const V6: bool>(
        &self,
        t: &Tuple,
        h: u64,
        ok: impl Fn(&Snap) -> bool,
    ) -> Option<Snap> {
        self.find_reply_judged::<V6>(t, h, Taking(ok))
            .map(|(s, _)| s)
    }

    /// [`Shard::find_reply_in`] with a `judge`, as
    /// [`Shard::find_fwd_judged`].
    #[inline(always)]
    pub fn find_reply_judged<const V6: bool>(
        &self,
        t: &Tuple,
        h: u64,
        mut judge: impl Judge,
    ) -> Option<(Snap, bool)> {
        let n = self.refs.len();
        let home = range(h, n);
        let tag = (h as u32) | 1;
        let bucket = &self.refs[home];
        let head = bucket.0[0].load(Ordering::Relaxed);
        let q = if filter_may_hold(head, tag) {
            first_ref(bucket, tag)
        } else {
            0
        };
        let key = ReplyKey::of(V6, t);
        if q != 0 {
            // Reloaded: the word may have changed since the scan, and the
            // slot is checked against the key in any case.
            let v = bucket.0[q].load(Ordering::Relaxed);
            if let Some(slot) = (v as u32).checked_sub(1) {
                if let Some(s) = self.read_reply_in::<V6>(slot, &key) {
                    if let Some(mark) = judge.judge(&s) {
                        return Some((s, mark));
                    }
                }
            }
        } else if head & SPILL_COUNT == 0 {
            return None;
        }
        // By value and into a place of its own, as in `find_fwd_in`.
        let after = if q == 0 { REFS } else { q };
        let mut found = Snap {
            v6: V6,
            slot: 0,
            w: [0; 10],
        };
        let limit = probe_limit(head);
        self.find_reply_rest::<V6>(key, (h, tag), after, limit, judge, &mut found)
            .map(|mark| (found.fit::<V6>(), mark))
    }

    /// The rest of [`Shard::find_reply_judged`], as [`Shard::find_fwd_rest`]:
    /// the home bucket's references after position `after`, then the other
    /// probe buckets whose filter may hold `tag`.
    #[inline(never)]
    fn find_reply_rest<const V6: bool>(
        &self,
        key: ReplyKey,
        (h, tag): (u64, u32),
        after: usize,
        limit: usize,
        mut judge: impl Judge,
        found: &mut Snap,
    ) -> Option<bool> {
        let n = self.refs.len();
        for i in 0..limit {
            let b = bucket_at(h, n, i);
            let bucket = &self.refs[b];
            if !filter_may_hold(bucket.0[0].load(Ordering::Relaxed), tag) {
                continue;
            }
            let mut m = ref_mask(bucket, tag);
            if i == 0 {
                m &= !((2 << after) - 1);
            }
            while m != 0 {
                let q = m.trailing_zeros() as usize;
                m &= m - 1;
                let v = bucket.0[q].load(Ordering::Relaxed);
                if let Some(slot) = (v as u32).checked_sub(1) {
                    if let Some(s) = self.read_reply_in::<V6>(slot, &key) {
                        if let Some(mark) = judge.judge(&s) {
                            *found = s;
                            return Some(mark);
                        }
                    }
                }
            }
        }
        None
    }

    /// Inserts `f` unless its forward key is present and alive (then returns
    /// that entry). `reclaim` releases an expired entry so its position can
    /// be reused; it returns whether it released it.
    #[cfg(test)]
    pub fn insert(
        &self,
        f: &Fresh,
        now: Millis,
        reclaim: impl FnMut(&Snap) -> bool,
    ) -> Result<Placed, Refused> {
        self.insert_hashed(f, (self.hash(&f.fwd), None), now, reclaim)
    }

    /// [`Shard::insert`] with the forward key's hash `h` already computed,
    /// and the vacancy a lookup of the key found, if any
    /// ([`Shard::find_fwd_vacant`]). Inlined into its few callers, so that
    /// what it writes is built where the caller keeps it.
    #[inline(always)]
    pub fn insert_hashed(
        &self,
        f: &Fresh,
        (h, vacancy): (u64, Option<u32>),
        now: Millis,
        mut reclaim: impl FnMut(&Snap) -> bool,
    ) -> Result<Placed, Refused> {
        let home = range(h, self.tags.len());
        let tag = (h as u32) | 2;
        let guard = &self.tags[home].0[0];
        // The header unchanged since the lookup's miss: no key homed here
        // was placed since (every insert's unlock moves the header's
        // insert count), so the key is still absent.
        let absent = lock(guard) == vacancy.unwrap_or(u32::MAX);
        let result = self.insert_locked(f, now, (h, home), (tag, absent), &mut reclaim);
        unlock(guard);
        result
    }

    /// The insert under the home bucket's guard: the re-check, the claim,
    /// the write and both keys' publication. Inlined, so that the entry
    /// written is built where the caller keeps it, not copied out.
    #[inline(always)]
    fn insert_locked(
        &self,
        f: &Fresh,
        now: Millis,
        (h, home): (u64, usize),
        (tag, absent): (u32, bool),
        reclaim: &mut impl FnMut(&Snap) -> bool,
    ) -> Result<Placed, Refused> {
        // The key's live entry is the answer. One past its deadline but not
        // collected yet is released here, before a new one is placed: left
        // to the sweep, a worker whose clock is a little behind this one's
        // could still re-arm it, and the key would have two live entries. If
        // a release loses to such a re-arm, the re-armed entry is the answer.
        // A key known absent (no entry of it at the lookup, nothing placed
        // since) has neither.
        // The key copied for the re-check, so that `f` itself has no
        // address taken and stays in registers.
        if !absent {
            let fwd = f.fwd;
            if let Some(s) = self.present(&fwd, h, now, reclaim) {
                return Ok(Placed::Existing(s));
            }
        }
        let (i, b, p) = self.claim((h, home), now, reclaim).ok_or(Refused::Full)?;
        let slot = (b * TAGS + p - 1) as u32;
        let snap = self.write(slot, f, now);
        if f.has_reply_key() {
            if let Err(e) = self.insert_reply(f.reply_tuple(), slot, now) {
                self.free((slot, snap.gen()), (b, p), home);
                return Err(e);
            }
        }
        if b != home {
            spill_add32(&self.tags[home].0[0], i);
        }
        self.tags[b].0[p].store(tag, Ordering::Release);
        // Only now, with both keys published, may others update or release
        // it: a release before this point would race the publishing.
        self.timer_word(slot)
            .store(snap.timer().0, Ordering::Release);
        Ok(Placed::New(snap))
    }

    /// The live entry of forward key `fwd`, under its home bucket's guard,
    /// expired ones released on the way ([`Shard::insert_locked`]'s
    /// re-check).
    #[inline(always)]
    fn present(
        &self,
        fwd: &Tuple,
        h: u64,
        now: Millis,
        reclaim: &mut impl FnMut(&Snap) -> bool,
    ) -> Option<Snap> {
        let mut lost = false;
        let live = self.find_fwd_hashed(fwd, h, |s| {
            if s.alive(now) {
                return true;
            }
            // Refused: already released by someone else, or re-armed.
            lost |= !reclaim(s);
            false
        });
        live.or_else(|| lost.then(|| self.find_fwd(fwd, now)).flatten())
    }

    /// Claims an empty position for a key of hash `h` homed in bucket
    /// `home`, reclaiming an expired entry if there is no empty one.
    #[inline(always)]
    fn claim(
        &self,
        (h, home): (u64, usize),
        now: Millis,
        reclaim: &mut impl FnMut(&Snap) -> bool,
    ) -> Option<(usize, usize, usize)> {
        // Inserts fill a bucket from the front: the home bucket's first
        // empty position is the usual answer.
        if let Some(p) = self.claim_in(home) {
            return Some((0, home, p));
        }
        self.claim_beyond(h, now, reclaim)
    }

    /// The first empty position of bucket `b`, claimed (BUSY).
    #[inline(always)]
    fn claim_in(&self, b: usize) -> Option<usize> {
        let bucket = &self.tags[b].0;
        (1..TAGS + 1).find(|&p| bucket[p].load(Ordering::Relaxed) == EMPTY && self.claim_at(b, p))
    }

    /// Claims position `p` of bucket `b` (BUSY) if it is empty, counted in
    /// the header if it lies past the front (see [`FRONT`]) before its tag
    /// can be published.
    #[inline(always)]
    fn claim_at(&self, b: usize, p: usize) -> bool {
        let bucket = &self.tags[b].0;
        let won = bucket[p]
            .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if won && p > FRONT {
            bucket[0].fetch_add(BACK_ONE, Ordering::Relaxed);
        }
        won
    }

    /// [`Shard::claim`] past a full home bucket: an empty position in the
    /// key's other buckets, else an expired entry's, reclaimed.
    #[inline(never)]
    fn claim_beyond(
        &self,
        h: u64,
        now: Millis,
        reclaim: &mut impl FnMut(&Snap) -> bool,
    ) -> Option<(usize, usize, usize)> {
        let n = self.tags.len();
        for i in 1..PROBE {
            if let Some(p) = self.claim_in(bucket_at(h, n, i)) {
                return Some((i, bucket_at(h, n, i), p));
            }
        }
        for i in 0..PROBE {
            let b = bucket_at(h, n, i);
            for p in 1..TAGS + 1 {
                if self.tags[b].0[p].load(Ordering::Relaxed) <= BUSY {
                    continue;
                }
                let Some(s) = self.read((b * TAGS + p - 1) as u32) else {
                    continue;
                };
                if s.timer().expired(now) && reclaim(&s) && self.claim_at(b, p) {
                    return Some((i, b, p));
                }
            }
        }
        None
    }

    /// Fills a claimed slot and makes it LIVE; returns what was written.
    #[inline(always)]
    fn write(&self, slot: u32, f: &Fresh, now: Millis) -> Snap {
        let gen = (self.word(slot, 0).load(Ordering::Acquire) >> META_GEN_SHIFT) as u32;
        let mut w = [0u64; 10];
        w[0] = (gen as u64) << META_GEN_SHIFT
            | ((f.real_id & MAX_ID) as u64) << 24
            | (f.fwd.proto as u64) << PROTO_SHIFT
            | (method_code(f.method) as u64) << METHOD_SHIFT
            | if f.fwd.kind == Kind::Template {
                TEMPLATE
            } else {
                0
            }
            | LIVE;
        let deadline = deadline_tick(now, f.timeout_ms);
        w[1] = Timer::pack(INSERTING, gen, 0, deadline).0;
        w[2] = (f.fwd.ap as u64) << 48
            | (f.fwd.bp as u64) << 32
            | (f.rport as u64) << 16
            | f.persist_secs as u64;
        if self.v6 {
            w[3] = f.fwd.a as u64;
            w[4] = (f.fwd.a >> 64) as u64;
            w[5] = f.fwd.b as u64;
            w[6] = (f.fwd.b >> 64) as u64;
            w[7] = f.real as u64;
            w[8] = (f.real >> 64) as u64;
            w[9] = f.link as u64;
        } else {
            w[3] = (f.fwd.a as u64) << 32 | (f.fwd.b as u32 as u64);
            w[4] = (f.real as u64) << 32 | f.link as u64;
        }
        // Readers still holding this slot's previous generation must see
        // the generation change if they see any of the new words.
        fence(Ordering::Release);
        let base = slot as usize * self.stride;
        let words = &self.words[base..base + self.stride];
        store_words(words, &w);
        words[0].store(w[0], Ordering::Release);
        w[1] = Timer::pack(f.state as u64, gen, 0, deadline).0;
        Snap {
            v6: self.v6,
            slot,
            w,
        }
    }

    /// Publishes reply key `t` of the entry written in `slot`, unless a
    /// live entry (or one still being inserted) holds that key already.
    /// Given the key by value, not the insert's `Fresh`: a reference would
    /// keep the whole `Fresh` in memory whether or not this is inlined.
    #[inline]
    fn insert_reply(&self, t: Tuple, slot: u32, now: Millis) -> Result<(), Refused> {
        let h = self.hash(&t);
        let n = self.refs.len();
        let home = range(h, n);
        let value_tag = h as u32 | 1;
        let value = (value_tag as u64) << 32 | (slot as u64 + 1);
        let guard = &self.refs[home].0[0];
        lock64(guard);
        let result = (|| {
            // A connection still being inserted under another client key
            // holds its reply key already.
            let taken = |s: &Snap| s.alive(now) || s.timer().state_code() == INSERTING;
            if self.find_reply_hashed(&t, h, taken).is_some() {
                return Err(Refused::ReplyConflict);
            }
            for i in 0..PROBE {
                let b = bucket_at(h, n, i);
                for word in self.refs[b].0[1..].iter() {
                    if word.load(Ordering::Relaxed) == 0
                        && word
                            .compare_exchange(0, value, Ordering::Release, Ordering::Relaxed)
                            .is_ok()
                    {
                        // The lookup side's filter (see `filter_one`).
                        self.refs[b].0[0].fetch_add(filter_one(value_tag), Ordering::Release);
                        if b != home {
                            spill_add64(&self.refs[home].0[0], i);
                        }
                        return Ok(());
                    }
                }
            }
            Err(Refused::Full)
        })();
        unlock64(guard);
        result
    }

    fn remove_reply(&self, s: &Snap) {
        let t = s.reply_tuple();
        let h = self.hash(&t);
        let n = self.refs.len();
        let home = range(h, n);
        let value_tag = h as u32 | 1;
        let value = (value_tag as u64) << 32 | (s.slot as u64 + 1);
        for i in 0..PROBE {
            let b = bucket_at(h, n, i);
            for word in self.refs[b].0[1..].iter() {
                // The filter first (see `filter_one`): only this release
                // clears this reference, so the word found stays until then.
                if word.load(Ordering::Relaxed) != value {
                    continue;
                }
                let head = &self.refs[b].0[0];
                head.fetch_sub(filter_one(value_tag), Ordering::Relaxed);
                if word
                    .compare_exchange(value, 0, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    if b != home {
                        spill_sub64(&self.refs[home].0[0]);
                    }
                    return;
                }
                head.fetch_add(filter_one(value_tag), Ordering::Relaxed);
            }
        }
    }

    /// Returns a released entry's slot to EMPTY. The caller won the CAS that
    /// marked it DEAD (or owns it unpublished), so no one else frees it.
    pub fn release(&self, s: &Snap) {
        if s.has_reply_key() {
            self.remove_reply(s);
        }
        let h = self.hash(&s.fwd_tuple());
        let home = range(h, self.tags.len());
        let pos = (s.slot as usize / TAGS, s.slot as usize % TAGS + 1);
        self.free((s.slot, s.gen()), pos, home);
    }

    /// Returns position `(b, p)` of the entry in `slot` of generation
    /// `gen` to EMPTY, the slot's generation moved on. Given the two
    /// words, not the entry's `Snap`: the insert's refusal would
    /// otherwise keep the `Snap` it returns in memory.
    fn free(&self, (slot, gen): (u32, u32), (b, p): (usize, usize), home: usize) {
        let next_gen = ((gen.wrapping_add(1) & ((1 << GEN_BITS) - 1)) as u64) << META_GEN_SHIFT;
        self.word(slot, 0).store(next_gen, Ordering::Release);
        let was_published = self.tags[b].0[p].swap(EMPTY, Ordering::Release) > BUSY;
        if p > FRONT {
            self.tags[b].0[0].fetch_sub(BACK_ONE, Ordering::Relaxed);
        }
        if was_published && b != home {
            spill_sub32(&self.tags[home].0[0]);
        }
    }

    /// Whether the kernel took the advice to put this shard's entry words,
    /// its largest array, on huge pages (`false` under 2 MiB).
    pub fn huge_pages(&self) -> bool {
        self.words.advised_huge()
    }

    /// Buckets handed out for sweeping so far (wrapping included).
    pub fn swept(&self) -> usize {
        self.cursor.load(Ordering::Relaxed)
    }

    /// The next `budget` buckets (wrapping) for an incremental sweep; workers
    /// calling this concurrently get disjoint slices.
    pub fn sweep_slice(&self, budget: usize) -> impl Iterator<Item = u32> + '_ {
        let n = self.tags.len();
        let budget = budget.min(n);
        let start = self.cursor.fetch_add(budget, Ordering::Relaxed) % n;
        (0..budget).flat_map(move |i| {
            let b = (start + i) % n;
            (1..=TAGS).filter_map(move |p| {
                (self.tags[b].0[p].load(Ordering::Relaxed) > BUSY)
                    .then_some((b * TAGS + p - 1) as u32)
            })
        })
    }

    /// Every published slot, for listing and whole-table passes.
    pub fn all_slots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.capacity() as u32).filter(|&slot| {
            let (b, p) = (slot as usize / TAGS, slot as usize % TAGS + 1);
            self.tags[b].0[p].load(Ordering::Relaxed) > BUSY
        })
    }

    /// Tries to move `slot`'s timer from `from` to `to` (one CAS).
    pub fn cas_timer(&self, slot: u32, from: Timer, to: Timer) -> Result<(), Timer> {
        self.timer_word(slot)
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Timer)
    }

    pub fn load_timer(&self, slot: u32) -> Option<Timer> {
        let base = slot as usize * self.stride;
        self.words
            .get(base + 1)
            .map(|w| Timer(w.load(Ordering::Acquire)))
    }
}

/// Timer arithmetic the table's policy code needs.
pub(super) mod timer {
    use super::*;

    pub fn dead(t: Timer) -> Timer {
        t.with(DEAD, t.refs(), t.deadline())
    }

    pub fn with_state(t: Timer, state: ConnState, now: Millis, ms: u64) -> Timer {
        t.with(state as u64, t.refs(), deadline_tick(now, ms))
    }

    /// Whether a same-state update to `now + ms` is worth writing.
    pub fn worth_touch(t: Timer, now: Millis, ms: u64) -> bool {
        t.moves(deadline_tick(now, ms))
    }

    /// A timeout of `ms` as [`worth_touch_reach`] takes it: clamped as
    /// `deadline_tick` clamps it, plus a tick less one, so that the tick
    /// of `now + reach` rounded down is `deadline_tick(now, ms)`. Made
    /// when a timeout is stored, not per packet.
    ///
    /// Bit 63 ([`UNSURE`]) is set where a deadline that `now` plus the
    /// timeout leaves unchanged (not [`worth_touch_reach`]) need not be
    /// one `now` has not reached: a timeout of 960 ms or less, whose
    /// unchanged window of ±15 ticks reaches back past `now`, or one
    /// within 16 ticks of the clamp, whose window reaches past the serial
    /// arithmetic's half range. Everywhere else an unchanged deadline is
    /// a live one, so that a lookup that finds it unchanged needs no
    /// liveness test of its own. `worth_touch_reach` shifts the bit out.
    pub fn reach(ms: u64) -> u64 {
        let ms = ms.min((MAX_TIMEOUT_TICKS - 1) * TICK_MS);
        let ticks = ms.div_ceil(TICK_MS);
        let sure = (COARSE_TICKS..=MAX_TIMEOUT_TICKS - COARSE_TICKS).contains(&ticks);
        (ms + (TICK_MS - 1)) | if sure { 0 } else { UNSURE }
    }

    /// [`reach`]'s bit for a timeout whose unchanged deadline may be past.
    pub const UNSURE: u64 = 1 << 63;

    /// Whether an entry whose timer word `t` is not [`worth_touch_reach`]
    /// of `reach` (from [`reach`]) is alive at `now` as far as its
    /// deadline goes: [`reach`] without [`UNSURE`].
    #[inline(always)]
    pub fn unchanged_is_live(reach: u64) -> bool {
        reach & UNSURE == 0
    }

    /// [`worth_touch`] of a timeout's [`reach`], for a packet's
    /// unchanged-state test: `now + reach` shifted so that its tick lands
    /// in the word's top 28 bits (the ms within the tick below them, which
    /// `Timer::moves_top` ignores), instead of `deadline_tick`'s clamp,
    /// saturating add, rounding division and mask. The same answer for
    /// every `now` below `2^64 - 2^34` (half a billion years of ms); past
    /// that the sum wraps.
    #[inline(always)]
    pub fn worth_touch_reach(t: Timer, now: Millis, reach: u64) -> bool {
        t.moves_top(now.0.wrapping_add(reach) << (DEADLINE_SHIFT - TICK_SHIFT))
    }

    pub fn with_refs(t: Timer, refs: u64) -> Option<Timer> {
        (refs <= REF_MAX).then(|| t.with(t.state_code(), refs, t.deadline()))
    }

    /// Deadline pushed to at least `now + ms`.
    pub fn extended(t: Timer, now: Millis, ms: u64) -> Timer {
        let d = deadline_tick(now, ms);
        let d = if serial_diff(d, t.deadline()) > 0 {
            d
        } else {
            t.deadline()
        };
        t.with(t.state_code(), t.refs(), d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Flow `i` of case `c` of `ipv4_hash_spreads_ports_and_addresses`.
    fn spread_case(c: usize, i: u32) -> Tuple {
        match c {
            0 => Tuple {
                proto: 0,
                kind: Kind::Conn,
                a: 0xc000_0201,
                ap: 1024 + i as u16,
                b: 0xc633_6401,
                bp: 80,
            },
            1 => Tuple {
                proto: 0,
                kind: Kind::Conn,
                a: 0xcb00_0000 | i as u128,
                ap: 40000,
                b: 0xc633_6401,
                bp: 443,
            },
            _ => Tuple {
                proto: 1,
                kind: Kind::Reply,
                a: 0xc633_6400 | (i & 0xff) as u128,
                ap: 8000 + (i >> 8) as u16,
                b: 0xc000_0201,
                bp: 5353,
            },
        }
    }

    /// The IPv4 hash spreads the flows of one client over the buckets as
    /// it does many clients' (chi-square of the bucket loads within a
    /// generous bound of its expectation, no bucket much above the mean),
    /// and gives the flows sharing a bucket distinct tags: for the
    /// client's ports in order, the clients of a /16 on one port, and the
    /// real servers' replies to one client.
    #[test]
    fn ipv4_hash_spreads_ports_and_addresses() {
        let layout = Layout::of(false, 15 * 1024).unwrap();
        let flows = 12_000u32;
        for round in 0..8 {
            let shard = Shard::try_new(false, layout).unwrap();
            let n = shard.tags.len();
            let cases = [
                "one client's ports",
                "clients of a /16",
                "replies to one client",
            ];
            for (c, what) in cases.into_iter().enumerate() {
                let mut load = vec![0u32; n];
                let mut tags = HashSet::new();
                let mut same_tag = 0;
                for i in 0..flows {
                    let h = shard.hash(&spread_case(c, i));
                    let b = range(h, n);
                    load[b] += 1;
                    same_tag += !tags.insert((b, h as u32 | 2)) as u32;
                }
                let mean = flows as f64 / n as f64;
                let chi2: f64 = load.iter().map(|&l| (l as f64 - mean).powi(2) / mean).sum();
                let max = *load.iter().max().unwrap();
                // Chi-square over n - 1 degrees of freedom: mean n - 1,
                // deviation about sqrt(2n); 1.3 n is about 7 deviations out.
                assert!(
                    chi2 < 1.3 * n as f64,
                    "{what}, round {round}: chi2 {chi2:.0} over {n} buckets"
                );
                assert!(
                    (max as f64) < 3.0 * mean + 10.0,
                    "{what}, round {round}: a bucket of {max}"
                );
                // 31 bits of tag: a shared one in a bucket is a 1 in 2^31 event per pair.
                assert!(
                    same_tag <= 1,
                    "{what}, round {round}: {same_tag} shared tags"
                );
            }
        }
    }

    /// `Timer::moves` is `serial_diff`'s distance compared with
    /// COARSE_TICKS, for deadlines on both sides of the 28-bit wrap.
    #[test]
    fn moves_is_the_serial_distance() {
        let edges = [0, 1, 15, 16, 17, MAX_TIMEOUT_TICKS - 1, MAX_TIMEOUT_TICKS];
        let mut old = vec![];
        for e in edges {
            old.push(e);
            old.push(DEADLINE_MASK - e);
        }
        for &o in &old {
            let t = Timer::pack(1, 7, 3, o);
            for delta in (0..40u64).chain(MAX_TIMEOUT_TICKS - 20..MAX_TIMEOUT_TICKS + 20) {
                for d in [o.wrapping_add(delta), o.wrapping_sub(delta)] {
                    let d = d & DEADLINE_MASK;
                    let expect = serial_diff(d, o).unsigned_abs() >= COARSE_TICKS;
                    assert_eq!(t.moves(d), expect, "deadline {o} to {d}");
                }
            }
        }
    }

    /// Clocks (ms) the reach tests try: around 0, a tick's edges, and the
    /// deadline field's wrap.
    const REACH_CLOCKS: [u64; 7] = [
        0,
        1,
        63,
        64,
        1_234_567,
        DEADLINE_MASK * TICK_MS - 1,
        (5 << 28) * TICK_MS + 17,
    ];

    /// `timer::worth_touch_reach` of a timeout's reach is `worth_touch` of
    /// the timeout: timeouts below, at and past the clamp, clocks at every
    /// offset within a tick and past the 28-bit wrap, deadlines on both
    /// sides of the coarse window.
    #[test]
    fn worth_touch_reach_is_worth_touch() {
        let cap = (MAX_TIMEOUT_TICKS - 1) * TICK_MS;
        let timeouts = [
            0,
            1,
            63,
            64,
            65,
            1_000,
            900_000,
            cap - 1,
            cap,
            cap + 1,
            u64::MAX / 4,
        ];
        let clocks = REACH_CLOCKS;
        for ms in timeouts {
            let reach = timer::reach(ms);
            for base in clocks {
                for off in [0, 1, TICK_MS - 1, TICK_MS, 3 * TICK_MS + 5] {
                    let now = Millis(base + off);
                    let d = deadline_tick(now, ms);
                    for delta in (0..40u64).chain(MAX_TIMEOUT_TICKS - 3..MAX_TIMEOUT_TICKS + 3) {
                        for o in [d.wrapping_add(delta), d.wrapping_sub(delta)] {
                            let t = Timer::pack(1, 7, 3, o & DEADLINE_MASK);
                            assert_eq!(
                                timer::worth_touch_reach(t, now, reach),
                                timer::worth_touch(t, now, ms),
                                "timeout {ms}, now {}, deadline {o}",
                                now.0
                            );
                        }
                    }
                }
            }
        }
    }

    /// Where a timeout's reach is not `UNSURE`, a deadline that
    /// `worth_touch_reach` leaves unchanged is one `now` has not reached;
    /// just past either end of that range there is a deadline it leaves
    /// unchanged that has expired.
    #[test]
    fn unchanged_deadline_of_a_sure_reach_is_live() {
        let cap = (MAX_TIMEOUT_TICKS - 1) * TICK_MS;
        let last = (MAX_TIMEOUT_TICKS - COARSE_TICKS) * TICK_MS;
        let clocks = REACH_CLOCKS;
        let expired_unchanged = |ms: u64| {
            let reach = timer::reach(ms);
            let mut found = false;
            for base in clocks {
                for off in 0..TICK_MS {
                    let now = Millis(base + off);
                    let d = deadline_tick(now, ms);
                    for delta in 0..20u64 {
                        for o in [d.wrapping_add(delta), d.wrapping_sub(delta)] {
                            let t = Timer::pack(1, 7, 3, o & DEADLINE_MASK);
                            found |= !timer::worth_touch_reach(t, now, reach) && t.expired(now);
                        }
                    }
                }
            }
            found
        };
        for ms in [961, 1_000, 1_024, 60_000, 900_000, last - 1, last] {
            assert!(timer::unchanged_is_live(timer::reach(ms)), "timeout {ms}");
            assert!(!expired_unchanged(ms), "timeout {ms}");
        }
        for ms in [0, 1, 900, 960, last + 1, cap, cap + 1, u64::MAX] {
            assert!(!timer::unchanged_is_live(timer::reach(ms)), "timeout {ms}");
        }
        assert!(expired_unchanged(960));
        assert!(expired_unchanged(last + TICK_MS));
    }

    /// Each protocol's code, and back.
    #[test]
    fn proto_codes_are_the_entry_codes() {
        let all = [
            (L4Proto::Tcp, 0),
            (L4Proto::Udp, 1),
            (L4Proto::Icmp, 2),
            (L4Proto::Icmpv6, 3),
        ];
        for (p, code) in all {
            assert_eq!(proto_code(p), code, "{p:?}");
            assert_eq!(proto_from_code(code), p);
        }
    }

    /// `Timer::expired` is `serial_diff(tick_now(now), deadline) >= 0`,
    /// for clocks on both sides of the deadline and of the 28-bit wrap,
    /// at every offset within a tick.
    #[test]
    fn expired_is_the_serial_compare() {
        let edges = [0, 1, 15, MAX_TIMEOUT_TICKS - 1, MAX_TIMEOUT_TICKS];
        for e in edges {
            for o in [e, DEADLINE_MASK - e] {
                let t = Timer::pack(3, 9, 5, o);
                let near = (0..40u64).chain(MAX_TIMEOUT_TICKS - 20..MAX_TIMEOUT_TICKS + 20);
                for delta in near {
                    for tick in [o.wrapping_add(delta), o.wrapping_sub(delta)] {
                        // Clocks that wrapped the 28-bit tick count a few times.
                        for lap in [0, 1, 5] {
                            let base = ((tick & DEADLINE_MASK) + (lap << 28)) * TICK_MS;
                            for ms in [base, base + 1, base + TICK_MS - 1] {
                                let now = Millis(ms);
                                let expect = serial_diff(tick_now(now), o) >= 0;
                                assert_eq!(t.expired(now), expect, "deadline {o}, now {ms}");
                            }
                        }
                    }
                }
            }
        }
    }

    fn fresh(sport: u16) -> Fresh {
        Fresh {
            fwd: Tuple {
                proto: 0,
                kind: Kind::Conn,
                a: 0xc000_0201,
                ap: sport,
                b: 0xc633_6401,
                bp: 80,
            },
            method: ForwardMethod::Nat,
            real: 0xcb00_7105,
            rport: 8080,
            real_id: 1,
            link: 0,
            persist_secs: 0,
            state: ConnState::Established,
            timeout_ms: 60_000,
        }
    }

    fn inserted(shard: &Shard, f: &Fresh) -> Snap {
        match shard.insert(f, Millis(0), |_| false) {
            Ok(Placed::New(s)) => s,
            _ => panic!("insert refused"),
        }
    }

    /// A tag collision ahead of the key's own position (another entry
    /// with the same tag) is passed over, for both the forward key and
    /// the reply key.
    #[test]
    fn lookups_go_on_past_a_tag_collision() {
        let shard = Shard::try_new(false, Layout::of(false, 64).unwrap()).unwrap();
        let a = fresh(1000);
        let s = inserted(&shard, &a);
        let (b, p) = (s.slot as usize / TAGS, s.slot as usize % TAGS + 1);
        assert_eq!(p, 1, "a fresh bucket fills from its first position");
        // Move the entry to position 5 and leave an entry of another key
        // under the same tag at position 1.
        let tag = shard.tags[b].0[1].load(Ordering::Relaxed);
        let moved = (b * TAGS + 4) as u32;
        for i in 0..shard.stride {
            let v = shard.word(s.slot, i).load(Ordering::Relaxed);
            shard.word(moved, i).store(v, Ordering::Relaxed);
        }
        // Position 5 lies past the front: counted, as a claim counts it.
        shard.tags[b].0[0].fetch_add(BACK_ONE, Ordering::Relaxed);
        shard.tags[b].0[5].store(tag, Ordering::Relaxed);
        let other = shard.word(s.slot, 3).load(Ordering::Relaxed) ^ 1 << 40;
        shard.word(s.slot, 3).store(other, Ordering::Relaxed);
        let found = shard
            .find_fwd(&a.fwd, Millis(1))
            .expect("found past the collision");
        assert_eq!(found.slot, moved);
        assert_eq!(found.fwd_tuple(), a.fwd);
        // The reply index still names the old slot, whose words now hold
        // another client: the reply lookup must refuse it.
        assert!(shard.find_reply(&found.reply_tuple(), Millis(1)).is_none());
        // A second reference of the same tag, after the first, to the moved
        // entry: the reply lookup goes on past the collision to it.
        let (rb, rq) = (0..shard.refs.len())
            .flat_map(|rb| (1..REFS + 1).map(move |rq| (rb, rq)))
            .find(|&(rb, rq)| shard.refs[rb].0[rq].load(Ordering::Relaxed) as u32 == s.slot + 1)
            .expect("the entry's reply reference");
        let rtag = shard.refs[rb].0[rq].load(Ordering::Relaxed) >> 32;
        let free = (rq + 1..REFS + 1)
            .find(|&q| shard.refs[rb].0[q].load(Ordering::Relaxed) == 0)
            .expect("room after it");
        shard.refs[rb].0[free].store(rtag << 32 | (moved as u64 + 1), Ordering::Relaxed);
        shard.refs[rb].0[0].fetch_add(filter_one(rtag as u32), Ordering::Relaxed);
        let r = shard.find_reply(&found.reply_tuple(), Millis(1));
        assert_eq!(r.map(|r| r.slot), Some(moved));
        // A key that only shares the tag is not found.
        let mut c = a.fwd;
        c.a ^= 1 << 8;
        assert!(shard.find_fwd(&c, Millis(1)).is_none());
    }

    /// The reply filter's counters: each of a header's 16 is its own, the
    /// spill count's changes leave them alone, and after inserts and
    /// releases each counts exactly its bucket's references of its tag
    /// bits, while every live entry's reply key is still found.
    #[test]
    fn reply_filter_counts_each_bucket_exactly() {
        for v in 0..16u32 {
            let tag = v << 1 | 1;
            let h = filter_one(tag);
            assert!(filter_may_hold(h, tag));
            for w in (0..16u32).filter(|&w| w != v) {
                assert!(!filter_may_hold(h, w << 1 | 1));
            }
            let seven = (h * 7) | 1;
            assert!(filter_may_hold(seven, tag));
            let spilled = spill_plus(seven, 3);
            assert_eq!(probe_limit(spilled), 4);
            assert_eq!(spilled & !(SPILL_COUNT | 7 << 1), seven);
            assert_eq!(spill_minus(spilled), seven);
        }
        let shard = Shard::try_new(false, Layout::of(false, 64).unwrap()).unwrap();
        let mut live = Vec::new();
        for sport in 0..60u16 {
            let s = inserted(&shard, &fresh(3000 + sport));
            live.push(s);
            if sport % 3 == 2 {
                let gone = live.remove(live.len() / 2);
                shard.release(&gone);
            }
        }
        for b in shard.refs.iter() {
            let head = b.0[0].load(Ordering::Relaxed);
            for v in 0..16u64 {
                let counted = head >> (FILTER_SHIFT as u64 + 3 * v) & 7;
                let held = b.0[1..]
                    .iter()
                    .map(|w| w.load(Ordering::Relaxed))
                    .filter(|&w| w != 0 && (w >> 33) & 15 == v)
                    .count() as u64;
                assert_eq!(counted, held);
            }
        }
        for s in &live {
            let r = shard.find_reply(&s.reply_tuple(), Millis(1));
            assert_eq!(r.map(|r| r.slot), Some(s.slot));
        }
    }

    /// Each tag bucket's back count is the number of its positions past
    /// the front that are not empty, through inserts that spill, releases
    /// and reclaims of expired entries, and every live entry is found,
    /// past the front too.
    #[test]
    fn back_count_counts_each_bucket_exactly() {
        let shard = Shard::try_new(false, Layout::of(false, 64).unwrap()).unwrap();
        let check = |live: &[Snap], now: Millis| {
            for b in shard.tags.iter() {
                let counted = (b.0[0].load(Ordering::Relaxed) & BACK_COUNT) / BACK_ONE;
                let held = b.0[FRONT + 1..]
                    .iter()
                    .filter(|w| w.load(Ordering::Relaxed) != EMPTY)
                    .count() as u32;
                assert_eq!(counted, held);
            }
            for s in live {
                let found = shard.find_fwd(&s.fwd_tuple(), now);
                assert_eq!(found.map(|f| f.slot), Some(s.slot));
            }
        };
        let mut live = Vec::new();
        for sport in 0..100u16 {
            live.push(inserted(&shard, &fresh(3000 + sport)));
            if sport % 4 == 3 {
                let gone = live.remove(live.len() / 2);
                shard.release(&gone);
                assert!(shard.find_fwd(&gone.fwd_tuple(), Millis(1)).is_none());
            }
        }
        check(&live, Millis(1));
        let past_front = |s: &Snap| s.slot as usize % TAGS + 1 > FRONT;
        assert!(live.iter().any(past_front), "some entry lies past a front");
        // Fill the shard with entries that expire (TUN: no reply key, so
        // that the reply index keeps room), then place new keys in their
        // positions, reclaimed.
        let brief = |sport: u16| Fresh {
            timeout_ms: 1_000,
            method: ForwardMethod::Tun,
            ..fresh(sport)
        };
        let mut sport = 4000;
        while let Ok(Placed::New(_)) = shard.insert(&brief(sport), Millis(0), |_| false) {
            sport += 1;
        }
        // The first entries' minute not yet over: only the brief ones expired.
        let later = Millis(30_000);
        let mut fresh_live = Vec::new();
        let reclaimed = std::cell::Cell::new(0);
        for sport in 5000..5016u16 {
            let placed = shard.insert(&fresh(sport), later, |s| {
                shard.release(s);
                reclaimed.set(reclaimed.get() + 1);
                true
            });
            match placed {
                Ok(Placed::New(s)) => fresh_live.push(s),
                other => panic!("no expired entry reclaimed: {:?}", other.err()),
            }
        }
        assert!(reclaimed.get() > 0);
        assert!(live.iter().all(|s| s.alive(later)));
        live.extend(fresh_live);
        check(&live, later);
    }

    /// The in-place key compare matches exactly the tuple the entry holds:
    /// every field of the forward and reply keys counts.
    #[test]
    fn in_place_compare_checks_every_key_field() {
        for v6 in [false, true] {
            let shard = Shard::try_new(v6, Layout::of(v6, 64).unwrap()).unwrap();
            let mut f = fresh(2000);
            if v6 {
                f.fwd.a |= 0x2001_0db8 << 96;
                f.fwd.b |= 0x2001_0db8_0000_0001 << 64;
                f.real |= 0x2001_0db8_0000_0002 << 64;
            }
            let s = inserted(&shard, &f);
            let now = Millis(1);
            assert_eq!(shard.find_fwd(&f.fwd, now).map(|x| x.slot), Some(s.slot));
            let r = s.reply_tuple();
            assert_eq!(shard.find_reply(&r, now).map(|x| x.slot), Some(s.slot));
            let fwd_variants = [
                Tuple { proto: 1, ..f.fwd },
                Tuple {
                    kind: Kind::Template,
                    ..f.fwd
                },
                Tuple {
                    a: f.fwd.a ^ 1,
                    ..f.fwd
                },
                Tuple {
                    ap: f.fwd.ap ^ 1,
                    ..f.fwd
                },
                Tuple {
                    b: f.fwd.b ^ 1,
                    ..f.fwd
                },
                Tuple {
                    bp: f.fwd.bp ^ 1,
                    ..f.fwd
                },
            ];
            for t in fwd_variants {
                // Read the slot directly: a lookup would miss on the hash.
                assert!(
                    shard.read_fwd(s.slot, &FwdKey::of(v6, &t)).is_none(),
                    "{t:?}"
                );
            }
            assert!(shard.read_fwd(s.slot, &FwdKey::of(v6, &f.fwd)).is_some());
            let reply_variants = [
                Tuple { proto: 1, ..r },
                Tuple { a: r.a ^ 1, ..r },
                Tuple { ap: r.ap ^ 1, ..r },
                Tuple { b: r.b ^ 1, ..r },
                Tuple { bp: r.bp ^ 1, ..r },
            ];
            for t in reply_variants {
                assert!(
                    shard.read_reply(s.slot, &ReplyKey::of(v6, &t)).is_none(),
                    "{t:?}"
                );
            }
            assert!(shard.read_reply(s.slot, &ReplyKey::of(v6, &r)).is_some());
            if v6 {
                let high = Tuple {
                    a: r.a ^ 1 << 100,
                    ..r
                };
                assert!(shard.read_reply(s.slot, &ReplyKey::of(v6, &high)).is_none());
                let high = Tuple {
                    b: f.fwd.b ^ 1 << 70,
                    ..f.fwd
                };
                assert!(shard.read_fwd(s.slot, &FwdKey::of(v6, &high)).is_none());
            }
        }
    }
}
