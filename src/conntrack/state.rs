//! Connection states and their timeouts, as IPVS defines them.
//!
//! TCP follows `ip_vs_proto_tcp.c` as current kernels have it (Linux 6.x): a
//! state moves on the first of RST, SYN, FIN, ACK found in a segment, through
//! one of three tables — packets from the client (input), packets from the
//! real server (output, seen only for NAT), and the input-only table a DR/TUN
//! director uses because it never sees the real server's answers. A
//! connection picked up mid-stream (`sloppy_tcp`: its first segment an ACK)
//! starts ESTABLISHED, not CLOSE as in kernels before 3.12; ActiveConn counts
//! the kernel's `tcp_state_active_table` states (ESTABLISHED, SYN_SENT,
//! SYN_RECV, SYNACK). UDP entries have a single state (UDP); there are no ICMP entries.

use std::sync::atomic::{AtomicU64, Ordering};

use super::table::timer;
use crate::packet::TcpFlags;

/// The state of one connection (or persistence template, always `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnState {
    None = 0,
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait = 4,
    TimeWait = 5,
    Close = 6,
    CloseWait = 7,
    LastAck = 8,
    Listen = 9,
    SynAck = 10,
    /// A UDP entry (IPVS's only UDP state, `NORMAL`).
    Udp = 11,
}

/// Number of [`ConnState`] values; the size of the timeout array.
pub(super) const STATES: usize = 12;

/// Per state code (its low 4 bits), its state, CLOSE for the codes that
/// have none: one load where `from_code(..).unwrap_or(Close)` was a
/// compare, two conditional moves and a compare more.
const CODE_STATES: [ConnState; 16] = {
    let mut t = [ConnState::Close; 16];
    let mut code = 0;
    while code < 16 {
        if let Some(s) = ConnState::from_code(code as u8) {
            t[code] = s;
        }
        code += 1;
    }
    t
};

/// [`ConnState::from_code`] of `code`'s low 4 bits, CLOSE for a code
/// without a state.
#[inline(always)]
pub(super) fn state_or_close(code: u64) -> ConnState {
    CODE_STATES[code as usize & 15]
}

impl ConnState {
    /// The state whose discriminant (`state as u8`) is `code`: how an entry
    /// stores it and how sync carries it.
    pub const fn from_code(code: u8) -> Option<ConnState> {
        use ConnState::*;
        Some(match code {
            0 => None,
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait,
            5 => TimeWait,
            6 => Close,
            7 => CloseWait,
            8 => LastAck,
            9 => Listen,
            10 => SynAck,
            11 => Udp,
            _ => return Option::None,
        })
    }

    /// The state as `ipvsadm -L -c` prints it.
    pub fn name(self) -> &'static str {
        use ConnState::*;
        match self {
            None => "NONE",
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait => "FIN_WAIT",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            SynAck => "SYNACK",
            Udp => "UDP",
        }
    }

    /// Whether `ipvsadm -L` counts a connection in this state as ActiveConn;
    /// every other state counts as InActConn. IPVS's `tcp_state_active_table`:
    /// a connection being opened counts as active, as an established one does.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ConnState::Established | ConnState::SynSent | ConnState::SynRecv | ConnState::SynAck
        )
    }

    /// Half-open: the client sent a SYN the handshake has not completed.
    pub(super) fn is_half_open(self) -> bool {
        self == ConnState::SynRecv
    }
}

/// Which of IPVS's three TCP tables a segment goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TcpTable {
    /// Client → real server, on a connection whose answers come back (NAT).
    Input = 0,
    /// Real server → client (NAT answers).
    Output = 1,
    /// Client → real server on DR/TUN: the director sees one direction only.
    InputOnly = 2,
}

use ConnState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// `TCP[table][event][state]`: event 0 syn, 1 fin, 2 ack, 3 rst; states in
/// [`ConnState`] order NONE..SYNACK. IPVS's `tcp_states` as of Linux 6.x,
/// where an ACK on a new entry (a sloppy pickup) leads to ESTABLISHED.
#[rustfmt::skip]
const TCP: [[[ConnState; 11]; 4]; 3] = [
    // INPUT      NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT
    [
        /*syn*/ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT-ONLY
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The TCP state after a segment with `flags` went through `table`.
/// A segment with none of SYN/FIN/ACK/RST leaves the state alone, as IPVS.
pub(super) fn tcp_next(state: ConnState, table: TcpTable, flags: TcpFlags) -> ConnState {
    let event = if flags.rst() {
        3
    } else if flags.syn() {
        0
    } else if flags.fin() {
        1
    } else if flags.ack() {
        2
    } else {
        return state;
    };
    match TCP[table as usize][event].get(state as usize) {
        Some(next) => *next,
        // UDP/ICMP codes never reach here; keep them if they did.
        None => state,
    }
}

/// The event index of `flags` in [`TCP`]: the first of RST, SYN, FIN, ACK
/// it carries, 4 for none of them.
#[cfg(test)]
fn tcp_event(flags: TcpFlags) -> usize {
    // Masked: the compiler then knows the index is in STAYS's row.
    EVENTS[folded(flags)] as usize & 7
}

/// The four flags an event depends on, folded into 4 bits: FIN, SYN and
/// RST (bits 0..3) as they are, ACK (bit 4) moved to bit 3.
#[inline(always)]
pub(super) const fn folded(flags: TcpFlags) -> usize {
    let f = flags.0 as usize;
    (f & 7) | (f >> 1 & 8)
}

/// [`STAYS`]'s bits of `table` for the folded flag set `folded` (see
/// [`folded`]): bit `s` set where such a segment leaves state code `s`
/// as it is.
pub(super) const fn stays_bits(table: TcpTable, folded: usize) -> u16 {
    STAYS[table as usize][EVENTS[folded & 15] as usize & 7]
}

/// [`tcp_event`] of each folded flag set.
const EVENTS: [u8; 16] = {
    let mut out = [4u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = if i & 4 != 0 {
            3
        } else if i & 2 != 0 {
            0
        } else if i & 1 != 0 {
            1
        } else if i & 8 != 0 {
            2
        } else {
            4
        };
        i += 1;
    }
    out
};

/// `STAYS[table][event]`: bit `s` set where the event leaves state code `s`
/// as it is ([`tcp_next`] returns it). Event 4 (no flag IPVS reads), the
/// unused rows 5..8 and the codes past SYNACK leave every state.
const STAYS: [[u16; 8]; 3] = {
    let mut out = [[u16::MAX; 8]; 3];
    let mut t = 0;
    while t < 3 {
        let mut e = 0;
        while e < 4 {
            let mut s = 0;
            while s < 11 {
                if TCP[t][e][s] as usize != s {
                    out[t][e] &= !(1 << s);
                }
                s += 1;
            }
            e += 1;
        }
        t += 1;
    }
    out
};

/// Whether a segment with `flags` through `table` leaves state code `code`
/// (below 16) unchanged: `tcp_next(state, table, flags) == state`, one
/// table load and a bit test.
#[cfg(test)]
pub(super) fn tcp_stays(code: u64, table: TcpTable, flags: TcpFlags) -> bool {
    STAYS[table as usize][tcp_event(flags)] >> (code & 15) & 1 != 0
}

/// Timeouts in seconds, per state. `Default` gives IPVS's values except where
/// noted; `tcp`, `tcpfin` and `udp` are what `ipvsadm --set` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub none: u32,
    /// `ipvsadm --set tcp`: ESTABLISHED (900 s).
    pub tcp: u32,
    pub syn_sent: u32,
    /// SYN_RECV: 30 s here, IPVS has 60 s. Under SYN flood pressure new
    /// half-open entries get [`Timeouts::syn_flood`] instead.
    pub syn_recv: u32,
    /// `ipvsadm --set tcpfin`: FIN_WAIT (120 s).
    pub tcpfin: u32,
    pub time_wait: u32,
    pub close: u32,
    pub close_wait: u32,
    pub last_ack: u32,
    pub listen: u32,
    pub synack: u32,
    /// `ipvsadm --set udp` (300 s).
    pub udp: u32,
    /// SYN_RECV timeout used while half-open entries exceed 1/8 of the table
    /// (2 s): a flood then holds at most rate × 2 s entries.
    pub syn_flood: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            none: 2,
            tcp: 900,
            syn_sent: 120,
            syn_recv: 30,
            tcpfin: 120,
            time_wait: 120,
            close: 10,
            close_wait: 60,
            last_ack: 30,
            listen: 120,
            synack: 120,
            udp: 300,
            syn_flood: 2,
        }
    }
}

impl Timeouts {
    fn for_state(&self, state: ConnState) -> u32 {
        use ConnState::*;
        match state {
            None => self.none,
            Established => self.tcp,
            SynSent => self.syn_sent,
            SynRecv => self.syn_recv,
            FinWait => self.tcpfin,
            TimeWait => self.time_wait,
            Close => self.close,
            CloseWait => self.close_wait,
            LastAck => self.last_ack,
            Listen => self.listen,
            SynAck => self.synack,
            Udp => self.udp,
        }
    }
}

/// The live timeouts, changeable while workers run (`ipvsadm --set`).
/// Stored in milliseconds; a change applies from each entry's next update.
#[derive(Debug)]
pub(super) struct LiveTimeouts {
    /// Per state code, all 16 of them (those past [`STATES`] unused): a
    /// code masked to 4 bits indexes it without a bounds check.
    ms: [AtomicU64; 16],
    /// Per state code, its timeout as the unchanged-state test takes it
    /// ([`timer::reach`] of `ms`), written with `ms`.
    reach: [AtomicU64; 16],
    syn_flood_ms: AtomicU64,
}

impl LiveTimeouts {
    pub(super) fn new(t: &Timeouts) -> LiveTimeouts {
        let live = LiveTimeouts {
            ms: std::array::from_fn(|_| AtomicU64::new(0)),
            reach: std::array::from_fn(|_| AtomicU64::new(0)),
            syn_flood_ms: AtomicU64::new(0),
        };
        live.store(t);
        live
    }

    pub(super) fn store(&self, t: &Timeouts) {
        for (code, slot) in self.ms.iter().enumerate() {
            if let Some(state) = ConnState::from_code(code as u8) {
                self.set_ms(code, slot, secs_to_ms(t.for_state(state)));
            }
        }
        self.syn_flood_ms
            .store(secs_to_ms(t.syn_flood), Ordering::Relaxed);
    }

    pub(super) fn load(&self) -> Timeouts {
        let s = |state: ConnState| (self.ms[state as usize].load(Ordering::Relaxed) / 1000) as u32;
        use ConnState::*;
        Timeouts {
            none: s(None),
            tcp: s(Established),
            syn_sent: s(SynSent),
            syn_recv: s(SynRecv),
            tcpfin: s(FinWait),
            time_wait: s(TimeWait),
            close: s(Close),
            close_wait: s(CloseWait),
            last_ack: s(LastAck),
            listen: s(Listen),
            synack: s(SynAck),
            udp: s(Udp),
            syn_flood: (self.syn_flood_ms.load(Ordering::Relaxed) / 1000) as u32,
        }
    }

    /// Timeout of `state` in ms; `flood` shortens SYN_RECV.
    pub(super) fn ms(&self, state: ConnState, flood: bool) -> u64 {
        let normal = self.ms[state as usize].load(Ordering::Relaxed);
        if flood && state.is_half_open() {
            normal.min(self.syn_flood_ms.load(Ordering::Relaxed))
        } else {
            normal
        }
    }

    /// Timeout of the state whose code is `code` (below [`STATES`]; 0 for
    /// the other codes up to 15) as [`timer::reach`] of its ms, without
    /// the flood check: for a state that is not half-open.
    #[inline]
    pub(super) fn reach_of_code(&self, code: usize) -> u64 {
        self.reach[code & 15].load(Ordering::Relaxed)
    }

    /// `ipvsadm --set tcp tcpfin udp`: a zero leaves that value unchanged.
    pub(super) fn set_ipvsadm(&self, tcp: u32, tcpfin: u32, udp: u32) {
        for (secs, state) in [
            (tcp, ConnState::Established),
            (tcpfin, ConnState::FinWait),
            (udp, ConnState::Udp),
        ] {
            if secs != 0 {
                let code = state as usize;
                self.set_ms(code, &self.ms[code], secs_to_ms(secs));
            }
        }
    }

    /// Stores the timeout of code `code`, whose `ms` word is `slot`, and
    /// its reach.
    fn set_ms(&self, code: usize, slot: &AtomicU64, ms: u64) {
        slot.store(ms, Ordering::Relaxed);
        self.reach[code].store(timer::reach(ms), Ordering::Relaxed);
    }
}

fn secs_to_ms(secs: u32) -> u64 {
    u64::from(secs) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `state_or_close` of every code, its high bits included, is
    /// `from_code` of its low 4 bits or CLOSE.
    #[test]
    fn state_or_close_is_from_code() {
        for code in 0..64u64 {
            let want = ConnState::from_code((code & 15) as u8).unwrap_or(ConnState::Close);
            assert_eq!(state_or_close(code | 0xabc0 << 8), want, "code {code}");
        }
        assert_eq!(state_or_close(ConnState::Udp as u64), ConnState::Udp);
        assert_eq!(state_or_close(12), ConnState::Close);
    }
}
