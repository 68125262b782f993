//! Every worker counter, declared once.
//!
//! `worker_counters!` below is the one list of a worker's plain counters:
//! field, Prometheus family name (the encoder appends `_total`), HELP text,
//! and the name in the exit summary line (none for counters the line never
//! showed). From it come the plain struct [`WorkerCounters`] the pipeline
//! and the worker count in, its shared atomic mirror [`SharedCounters`]
//! (the worker publishes, the control plane reads), the table
//! [`COUNTERS`] the metrics encoder iterates, and [`summary_line`].
//!
//! Counters that are not one plain number each are declared here as well,
//! as tables of their own: drops by [`DropReason`] ([`DROPS`]), frame
//! accounting by place ([`FRAMES`], [`FRAME_PLACES`]) and the kernel's
//! AF_XDP counters ([`XSK`]). The batch-latency histogram stays with the
//! worker and the encoder: it is not a counter.
//!
//! A leaf: it imports nothing but [`crate::verdict`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::verdict::DropReason;

/// One exported number: its Prometheus family name, HELP text, and the
/// name it has in the exit summary line, if it is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterInfo {
    pub name: &'static str,
    pub help: &'static str,
    pub summary: Option<&'static str>,
}

macro_rules! worker_counters {
    ($($(#[$doc:meta])* $field:ident => $name:literal, $help:literal, $summary:expr;)*) => {
        /// One worker's counters as plain integers. The pipeline counts the
        /// per-frame ones in its own copy; the worker adds what only it
        /// sees (TX ring room, held frames sent) before publishing.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct WorkerCounters {
            $($(#[$doc])* pub $field: u64,)*
            /// Frames dropped, indexed by `DropReason as usize`.
            pub drops: [u64; DropReason::COUNT],
        }

        impl Default for WorkerCounters {
            fn default() -> WorkerCounters {
                WorkerCounters {
                    $($field: 0,)*
                    drops: [0; DropReason::COUNT],
                }
            }
        }

        impl WorkerCounters {
            /// The plain counters in [`COUNTERS`] order.
            pub fn values(&self) -> [u64; COUNTERS.len()] {
                [$(self.$field,)*]
            }
        }

        /// The shared mirror of a [`WorkerCounters`]: written by its worker
        /// alone (plain stores), read by the control plane at any time.
        #[derive(Debug)]
        pub struct SharedCounters {
            $($field: AtomicU64,)*
            drops: [AtomicU64; DropReason::COUNT],
        }

        impl Default for SharedCounters {
            fn default() -> SharedCounters {
                SharedCounters {
                    $($field: AtomicU64::new(0),)*
                    drops: std::array::from_fn(|_| AtomicU64::new(0)),
                }
            }
        }

        impl SharedCounters {
            pub fn publish(&self, c: &WorkerCounters) {
                $(self.$field.store(c.$field, Ordering::Relaxed);)*
                for (a, v) in self.drops.iter().zip(c.drops.iter()) {
                    a.store(*v, Ordering::Relaxed);
                }
            }

            pub fn read(&self) -> WorkerCounters {
                WorkerCounters {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                    drops: std::array::from_fn(|i| self.drops[i].load(Ordering::Relaxed)),
                }
            }
        }

        /// Every plain worker counter, in declaration (and summary) order.
        pub const COUNTERS: &[CounterInfo] = &[
            $(CounterInfo { name: $name, help: $help, summary: $summary },)*
        ];
    };
}

worker_counters! {
    rx => "xvs_worker_rx_frames", "Frames received", Some("rx");
    /// Frames sent, held frames sent once their MAC was known included.
    tx => "xvs_worker_tx_frames", "Frames transmitted", Some("tx");
    new_conns => "xvs_worker_new_connections", "Connections created", Some("new_conns");
    /// ICMP "too big" errors sent to clients for oversize TUN packets.
    icmp_too_big => "xvs_worker_icmp_too_big",
        "ICMP fragmentation-needed / packet-too-big sent", Some("icmp_too_big");
    /// TCP/UDP checksums a sender's offload left partial, finished here:
    /// of packets to a service and of NAT answers (the frames xvs claims).
    checksums_completed => "xvs_worker_checksums_completed",
        "TCP/UDP checksums a sender's offload left partial, finished by xvs",
        Some("checksums_completed");
    /// Resets sent for segments of no connection (also counted in `tx`).
    resets_sent => "xvs_worker_tcp_resets_sent",
        "TCP resets sent for segments of no connection", Some("resets_sent");
    /// Frames handed over to wait for their next hop (`Verdict::Hold`).
    held => "xvs_worker_neighbour_held",
        "Frames held until their next hop's MAC was known", Some("held");
    /// Of the held frames, those sent once their MAC was known (the others
    /// are `neighbour_unresolved` drops, or still held). Worker only.
    held_sent => "xvs_worker_neighbour_held_sent",
        "Held frames sent once their next hop's MAC was known", Some("held_sent");
    /// Frames dropped because a TX ring was full. Worker only.
    tx_ring_full => "xvs_worker_tx_ring_full",
        "Frames dropped because a TX ring was full", Some("tx_ring_full");
    /// Frames dropped because the verdict named a port the worker lacks.
    /// Worker only.
    bad_port => "xvs_worker_bad_port", "Frames dropped for a port the worker lacks", None;
    /// Pipeline events the outbox had no room for (resolve requests
    /// overwritten, connection events refused).
    outbox_overflow => "xvs_worker_outbox_overflow",
        "Pipeline events lost because the worker's outbox was full", None;
    /// Connection events the worker's sink had no room for. Worker only.
    conn_events_dropped => "xvs_worker_conn_events_dropped",
        "Connection events the sync sink had no room for", None;
}

/// Drops by reason: one family, labelled `reason=` [`DropReason::label`].
pub const DROPS: CounterInfo = CounterInfo {
    name: "xvs_worker_drops",
    help: "Frames dropped, by reason (not_ip, other_protocol, no_connection and \
           icmp_no_connection: frames that were not xvs's, which AF_XDP cannot hand back)",
    summary: Some("drops"),
};

/// Where a worker's UMEM frames are: the `place=` labels of [`FRAMES`], in
/// the order of the arrays that carry them.
pub const FRAME_PLACES: [&str; 5] = ["total", "free", "fill", "tx", "held"];

/// Frame accounting, a gauge by place.
pub const FRAMES: CounterInfo = CounterInfo {
    name: "xvs_worker_frames",
    help: "UMEM frames by place (free + fill + tx = total)",
    summary: Some("frames"),
};

/// The kernel's AF_XDP counters, summed over a worker's sockets, in the
/// order of the arrays that carry them.
pub const XSK: [CounterInfo; 4] = [
    CounterInfo {
        name: "xvs_worker_xsk_rx_dropped",
        help: "Kernel AF_XDP: rx dropped",
        summary: Some("rx_dropped"),
    },
    CounterInfo {
        name: "xvs_worker_xsk_rx_ring_full",
        help: "Kernel AF_XDP: rx ring full",
        summary: Some("rx_ring_full"),
    },
    CounterInfo {
        name: "xvs_worker_xsk_fill_ring_empty",
        help: "Kernel AF_XDP: fill ring empty",
        summary: Some("fill_empty"),
    },
    CounterInfo {
        name: "xvs_worker_xsk_invalid_descs",
        help: "Kernel AF_XDP: invalid descriptors",
        summary: Some("invalid"),
    },
];

/// `free + fill + tx + held == total`: no frame lost.
pub fn frames_conserved(frames: &[u64; 5]) -> bool {
    frames[1..].iter().sum::<u64>() == frames[0]
}

/// The line a worker's numbers get on the daemon's standard error at exit
/// (the netns tests and tools parse it).
pub fn summary_line(index: usize, c: &WorkerCounters, frames: &[u64; 5], xsk: &[u64; 4]) -> String {
    use std::fmt::Write;
    let mut s = format!("worker {index}:");
    for (info, v) in COUNTERS.iter().zip(c.values()) {
        if let Some(name) = info.summary {
            let _ = write!(s, " {name} {v}");
        }
    }
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .zip(c.drops.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{}={n}", r.label()))
        .collect();
    let _ = write!(s, " drops [{}] frames", drops.join(" "));
    for (place, v) in FRAME_PLACES.iter().zip(frames) {
        let _ = write!(s, " {place} {v}");
    }
    let conserved = if frames_conserved(frames) {
        "yes"
    } else {
        "NO"
    };
    let _ = write!(s, " conserved {conserved} xsk");
    for (info, v) in XSK.iter().zip(xsk) {
        let _ = write!(s, " {} {v}", info.summary.unwrap_or(info.name));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_reads_as_it_always_has() {
        let mut c = WorkerCounters {
            rx: 1,
            tx: 2,
            new_conns: 3,
            icmp_too_big: 4,
            checksums_completed: 5,
            resets_sent: 6,
            held: 7,
            held_sent: 8,
            tx_ring_full: 9,
            bad_port: 10,
            ..WorkerCounters::default()
        };
        c.drops[DropReason::TcpNotSyn as usize] = 11;
        c.drops[DropReason::NotIp as usize] = 12;
        assert_eq!(
            summary_line(3, &c, &[10, 4, 3, 2, 1], &[13, 14, 15, 16]),
            "worker 3: rx 1 tx 2 new_conns 3 icmp_too_big 4 checksums_completed 5 \
             resets_sent 6 held 7 held_sent 8 tx_ring_full 9 drops [not_ip=12 \
             tcp_not_syn=11] frames total 10 free 4 fill 3 tx 2 held 1 conserved yes \
             xsk rx_dropped 13 rx_ring_full 14 fill_empty 15 invalid 16"
        );
        assert_eq!(
            summary_line(0, &WorkerCounters::default(), &[1, 0, 0, 0, 0], &[0; 4]),
            "worker 0: rx 0 tx 0 new_conns 0 icmp_too_big 0 checksums_completed 0 \
             resets_sent 0 held 0 held_sent 0 tx_ring_full 0 drops [] frames total 1 \
             free 0 fill 0 tx 0 held 0 conserved NO xsk rx_dropped 0 rx_ring_full 0 \
             fill_empty 0 invalid 0"
        );
    }

    #[test]
    fn the_mirror_carries_every_counter() {
        let mut c = WorkerCounters::default();
        for (i, d) in c.drops.iter_mut().enumerate() {
            *d = 100 + i as u64;
        }
        c.rx = 1;
        c.conn_events_dropped = 2;
        let shared = SharedCounters::default();
        shared.publish(&c);
        assert_eq!(shared.read(), c);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = COUNTERS.iter().map(|c| c.name).collect();
        names.extend([DROPS.name, FRAMES.name]);
        names.extend(XSK.iter().map(|c| c.name));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
