//! Sync's counters: written by the sync thread, read by a metrics scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::Reject;

/// Why a received entry was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refused {
    /// No virtual service of its protocol, VIP and port here.
    NoService,
    /// The service has no real server of that address and port here.
    NoReal,
    /// The connection table refused it (full, a reply conflict...).
    Table,
    /// A service configuration chunk on a backup whose `[sync] services`
    /// switch is off: its services are left alone.
    ServicesOff,
    /// A service configuration chunk of an older generation than the one
    /// being put together (or of too many chunks).
    ServicesOld,
    /// A whole service configuration that did not parse or apply.
    ServicesInvalid,
}

impl Refused {
    pub const ALL: [Refused; 6] = [
        Refused::NoService,
        Refused::NoReal,
        Refused::Table,
        Refused::ServicesOff,
        Refused::ServicesOld,
        Refused::ServicesInvalid,
    ];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Refused::NoService => "no_service",
            Refused::NoReal => "no_real_server",
            Refused::Table => "table",
            Refused::ServicesOff => "services_off",
            Refused::ServicesOld => "services_old",
            Refused::ServicesInvalid => "services_invalid",
        }
    }
}

macro_rules! sync_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The live counters (atomics, one writer: the sync thread).
        #[derive(Debug, Default)]
        pub struct SyncStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            rejected: [AtomicU64; Reject::ALL.len()],
            refused: [AtomicU64; Refused::ALL.len()],
        }

        /// The counters, read at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct SyncMetrics {
            $($(#[$doc])* pub $name: u64,)*
            /// Datagrams refused, by reason ([`Reject::ALL`] order).
            pub rejected: [u64; Reject::ALL.len()],
            /// Entries not installed, by reason ([`Refused::ALL`] order).
            pub refused: [u64; Refused::ALL.len()],
        }

        impl SyncStats {
            pub fn read(&self) -> SyncMetrics {
                SyncMetrics {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    rejected: std::array::from_fn(|i| self.rejected[i].load(Ordering::Relaxed)),
                    refused: std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed)),
                }
            }
        }
    };
}

sync_counters! {
    /// Datagrams sent (stream, repairs, bulk, requests).
    sent_datagrams,
    sent_bytes,
    /// Entries sent in the stream (not counting repairs and bulk).
    sent_entries,
    /// Authentic datagrams received.
    received_datagrams,
    received_bytes,
    /// Entries installed (connections, templates, closes).
    installed,
    /// Stream datagrams found missing by sequence number.
    gaps,
    /// Missing stream datagrams that came later (resent).
    gaps_repaired,
    /// Missing stream datagrams given up on (a resync followed).
    gaps_lost,
    /// Stream datagrams resent on a peer's request.
    resent,
    /// Entries sent in bulk (resyncs and refreshes).
    bulk_entries,
    /// Resyncs finished.
    resyncs,
    /// The last resync's length, milliseconds.
    resync_ms,
    /// Connections the last resync brought.
    resync_entries,
    /// The last authentic datagram's age on arrival (our wall clock minus
    /// its timestamp), milliseconds.
    lag_ms,
    /// 1 once this director has its peers' table (or no peer answered).
    ready,
    /// Connection events the sync thread took from the workers.
    events,
    /// Generations of this director's service configuration sent.
    services_sent,
    /// Whole service configurations received from peers.
    services_received,
    /// Received service configurations that changed this director's
    /// services (one that equals them already changes nothing).
    services_applied,
}

impl SyncStats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(c: &AtomicU64, n: u64) {
        c.store(n, Ordering::Relaxed);
    }

    pub fn reject(&self, r: Reject) {
        let i = Reject::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refuse(&self, r: Refused) {
        let i = Refused::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }
}

impl SyncMetrics {
    /// Datagrams refused for `r`.
    pub fn rejected_for(&self, r: Reject) -> u64 {
        Reject::ALL
            .iter()
            .position(|x| *x == r)
            .map_or(0, |i| self.rejected[i])
    }

    /// Entries not installed for `r`.
    pub fn refused_for(&self, r: Refused) -> u64 {
        Refused::ALL
            .iter()
            .position(|x| *x == r)
            .map_or(0, |i| self.refused[i])
    }
}
