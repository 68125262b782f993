//! Connection sync between directors (the seed's "heartbeat" HA): a
//! master sends the connections it opens and their state changes, a backup
//! installs them in its own table, so that after a failover it forwards
//! them the moment their packets reach it.
//!
//! # Contract
//! - The protocol is xvs's own ([`wire`]): authenticated (HMAC-SHA256 over
//!   every datagram with a shared key), sequenced per sender (replays
//!   refused, [`window`]), loss-tolerant (gaps NACKed and resent from a
//!   ring, or repaired by a bulk), restart-safe (a starting backup asks for
//!   the whole table before it is ready). Its CLI is IPVS's
//!   (`ipvsadm --start-daemon master|backup ...`), its defaults too
//!   (group 224.0.0.81, port 8848, TTL 1).
//! - [`session::Session`] is the sans-IO core: time, events and datagrams
//!   in, datagrams and table changes out. [`SyncHandle`] runs it on a
//!   thread of its own with a UDP socket (multicast, or unicast to
//!   `--sync-peer`s); the workers only `try_send` their connection events
//!   to it (a full channel costs a counted event, never a stall).
//! - Entries name real servers by address; [`table::ConnSync`] maps them to
//!   this director's ids through its current services, and counts what it
//!   cannot place ([`stats::Refused`]). Nothing a peer sends touches the
//!   table before it is authenticated, fresh and new.
//! - With `services` on ([`SyncOptions::services`]) the master's service
//!   configuration travels too ([`services`]), and a backup replaces its
//!   own with it; off, a backup counts what it receives as refused.
//! - Without a key sync refuses to start, unless the director was started
//!   with `--sync-insecure` (then datagrams carry a tag of the empty key:
//!   checked for damage, not authenticated; said loudly at start).

pub mod services;
pub mod session;
pub mod stats;
pub mod table;
pub mod window;
pub mod wire;

mod runner;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};

pub use runner::SyncHandle;
pub use services::ServicesUpdate;
pub use session::{Now, Roles, Session, SessionConfig};
pub use stats::{Refused, SyncMetrics, SyncStats};
pub use wire::{HealthRecord, Key, Reject};

/// IPVS's sync group.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// IPVS's sync port.
pub const DEFAULT_PORT: u16 = 8848;

/// Which daemon: the sending or the receiving one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DaemonRole {
    Master,
    Backup,
}

impl DaemonRole {
    pub fn name(self) -> &'static str {
        match self {
            DaemonRole::Master => "master",
            DaemonRole::Backup => "backup",
        }
    }

    pub fn from_name(s: &str) -> Option<DaemonRole> {
        match s {
            "master" => Some(DaemonRole::Master),
            "backup" => Some(DaemonRole::Backup),
            _ => None,
        }
    }
}

/// A sync daemon as `ipvsadm --start-daemon` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub role: DaemonRole,
    /// `--mcast-interface`: the interface sync speaks on (default: as the
    /// routes say).
    pub mcast_interface: Option<String>,
    /// `--syncid`: 0–255; a backup of sync id 0 takes every sync id.
    pub syncid: u8,
    /// `--sync-maxlen`: the largest datagram payload; default 1472 (an
    /// Ethernet MTU less IP and UDP headers).
    pub maxlen: Option<u16>,
    pub group: Ipv4Addr,
    pub port: u16,
    pub ttl: u8,
}

impl DaemonConfig {
    /// IPVS's defaults for `role`.
    pub fn new(role: DaemonRole) -> DaemonConfig {
        DaemonConfig {
            role,
            mcast_interface: None,
            syncid: 0,
            maxlen: None,
            group: DEFAULT_GROUP,
            port: DEFAULT_PORT,
            ttl: 1,
        }
    }

    /// The datagram size used.
    pub fn maxlen(&self) -> usize {
        self.maxlen.map_or(1472, |m| m as usize)
    }
}

/// The director-wide sync settings (`xvs director --sync-*`, the TOML
/// `[sync]` table).
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// The shared secret (`--sync-key-file`).
    pub key: Option<Vec<u8>>,
    /// `--sync-insecure`: run without a key.
    pub insecure: bool,
    /// `--sync-peer`: unicast to these instead of the multicast group.
    pub peers: Vec<SocketAddr>,
    /// `--sync-id`: this director's sender id (default: random per start).
    pub sender_id: Option<u32>,
    /// Daemons to start with the director (the TOML `[sync] role`).
    pub start: Vec<DaemonConfig>,
    /// Seconds between refreshes of the whole table to peers.
    pub refresh_secs: Option<u64>,
    /// `--sync-services` (`[sync] services`): a master sends its service
    /// configuration, a backup applies the one it receives.
    pub services: bool,
}

impl SyncOptions {
    /// The key datagrams are made with, or why sync may not start.
    pub fn mac_key(&self) -> Result<Key, String> {
        match (&self.key, self.insecure) {
            (Some(k), _) => Ok(Key::new(k)),
            (None, true) => Ok(Key::insecure()),
            (None, false) => Err(
                "connection sync needs a shared key: start xvs director with \
                 --sync-key-file FILE (or, on a trusted link only, --sync-insecure)"
                    .into(),
            ),
        }
    }
}
