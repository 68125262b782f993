//! Virtual services and real servers: the service layer every front end
//! edits and every worker reads.
//!
//! - The value types (this file): [`ServiceKey`], [`VirtualService`],
//!   [`RealServer`], [`ForwardMethod`], [`SchedulerKind`], [`RealId`], ...
//! - [`ServiceModel`] ([`model`]): the editable model the daemon owns.
//!   Front ends (ipvsadm, the TOML config, keepalived.conf, health checks
//!   and sync)
//!   produce [`Edit`]s; the model checks each with IPVS's semantics and
//!   error wording ([`ApplyError`]), applies one or a [`Transaction`] of
//!   several all or nothing, allocates the [`RealId`]s, and keeps each real
//!   server's [`Health`] apart from the weight the operator gave it.
//! - [`ServiceTable`] ([`table`]): the immutable snapshot the model builds
//!   for every change and the control plane publishes; workers only read it.
//!   It is the scheduling view ([`ServiceModel::view`]): a real server
//!   held down by its health has weight 0 there or is absent, as its
//!   service's [`ServicePolicy`] says; a sorry server is there while its
//!   service has lost quorum.
//! - [`counters`]: what must outlive a snapshot, per real server, indexed by
//!   its [`RealId`] — the shared connection counts ([`RealLoads`], which
//!   connections update and schedulers read) and each worker's traffic
//!   ([`RealTraffic`]) — each counter declared once, with the plain value
//!   types ([`RealCounts`], [`TotalStats`]) the renderer and the daemon use.

pub mod counters;
pub mod model;
pub mod table;

use std::net::IpAddr;

use crate::packet::L4Proto;

pub use counters::{RealCounts, RealLoad, RealLoads, RealTraffic, RealTrafficSlot, TotalStats};
pub use model::{
    Applied, ApplyError, BatchError, Edit, Health, OnFailure, RealSpec, ServiceModel,
    ServicePolicy, ServiceSpec, Transaction, MAX_IDS,
};
pub use table::{ServiceIndex, ServiceTable};

/// How a real server is reached (ipvsadm `-m`, `-i`, `-g`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardMethod {
    /// Masquerading: destination rewritten to the real server, answers come back
    /// through the director and get their source rewritten to the VIP.
    Nat,
    /// IP-in-IP tunnelling: the packet is encapsulated toward the real server,
    /// which answers the client directly.
    Tun,
    /// Direct routing: only the destination MAC changes; the real server shares
    /// a segment with the director and answers the client directly.
    Dr,
}

impl ForwardMethod {
    /// The word `ipvsadm -L` prints in its Forward column.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            ForwardMethod::Nat => "Masq",
            ForwardMethod::Tun => "Tunnel",
            ForwardMethod::Dr => "Route",
        }
    }
}

/// What identifies a virtual service: protocol, virtual address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub proto: L4Proto,
    pub addr: IpAddr,
    pub port: u16,
}

/// A real server's identity in the [`RealLoads`]; stable while the server exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealId(pub u32);

/// The schedulers ipvsadm's `-s` names, plus their flags (`-b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sed,
    Nq,
    Sh,
    Dh,
    Mh,
    Lblc,
    Lblcr,
    Fo,
    Ovf,
    Twos,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 14] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Sh,
        SchedulerKind::Dh,
        SchedulerKind::Mh,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Twos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Lblc => "lblc",
            SchedulerKind::Lblcr => "lblcr",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
            SchedulerKind::Twos => "twos",
        }
    }

    pub fn from_name(name: &str) -> Option<SchedulerKind> {
        SchedulerKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Scheduler flags (`-b`): sh-fallback, sh-port, mh-fallback, mh-port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchedFlags {
    /// `sh-fallback` / `mh-fallback`: if the hashed server is unavailable, try
    /// the next one instead of refusing the connection.
    pub fallback: bool,
    /// `sh-port` / `mh-port`: hash the source port as well as the address.
    pub port: bool,
}

/// Persistence (`-p timeout -M netmask`): connections from one client (masked
/// address) keep going to the real server its first connection went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_secs: u32,
    /// Prefix length applied to the client address (IPv4 `-M 255.255.255.0`
    /// is 24; IPv6 services give a prefix length directly, default 128).
    pub prefix_len: u8,
}

/// One real server of a virtual service, as `ipvsadm -a` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    pub id: RealId,
    pub addr: IpAddr,
    pub port: u16,
    pub method: ForwardMethod,
    /// 0..=65535; 0 quiesces the server: no new connections, old ones go on.
    /// The model holds the weight the operator gave; a [`ServiceTable`] the
    /// weight it schedules with (0 while the server's [`Health`] is down
    /// and its service quiesces, a dynamic check's while it is up; see
    /// [`ServiceModel::view`]).
    pub weight: u32,
    /// `-x`: stop sending new connections at this many (0 = no limit).
    pub upper_threshold: u32,
    /// `-y`: resume below this many (0 = IPVS's default of 3/4 of upper).
    pub lower_threshold: u32,
}

/// One virtual service, as `ipvsadm -A` describes it, with its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualService {
    pub key: ServiceKey,
    pub scheduler: SchedulerKind,
    pub sched_flags: SchedFlags,
    pub persistence: Option<Persistence>,
    pub reals: Vec<RealServer>,
}
