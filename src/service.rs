//! Virtual services and real servers: the model that ipvsadm edits.
//!
//! A [`ServiceTable`] is an immutable snapshot: the control plane builds a new one
//! for every change and publishes it; workers only read. What must outlive a
//! snapshot — the live connection counts of a real server, which connections
//! update and schedulers read — sits in a [`RealLoads`] shared by all snapshots and
//! indexed by the [`RealId`] a real server keeps for as long as it exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::packet::L4Proto;

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

/// Index of a service inside one [`ServiceTable`] snapshot.
pub type ServiceIndex = u32;

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

/// An immutable snapshot of every virtual service, indexed by service key
/// and by real-server id (built once, with the snapshot).
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    services: Vec<VirtualService>,
    by_key: HashMap<ServiceKey, ServiceIndex>,
    /// Real server id → (its service, its place in the service's list).
    by_real: HashMap<RealId, (ServiceIndex, usize)>,
}

/// Up to this many services `find` scans the array: with the few services
/// a director usually has, that beats hashing the key of every packet.
const SCAN_MAX: usize = 8;

impl ServiceTable {
    pub fn new(services: Vec<VirtualService>) -> ServiceTable {
        let mut by_key = HashMap::with_capacity(services.len());
        let mut by_real = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            by_key.entry(s.key).or_insert(i as ServiceIndex);
            for (j, r) in s.reals.iter().enumerate() {
                by_real.entry(r.id).or_insert((i as ServiceIndex, j));
            }
        }
        ServiceTable {
            services,
            by_key,
            by_real,
        }
    }

    pub fn services(&self) -> &[VirtualService] {
        &self.services
    }

    pub fn service(&self, index: ServiceIndex) -> Option<&VirtualService> {
        self.services.get(index as usize)
    }

    /// The service a packet to `(proto, addr, port)` belongs to: a scan of
    /// the array for a few services, the index for more.
    #[inline]
    pub fn find(&self, key: &ServiceKey) -> Option<(ServiceIndex, &VirtualService)> {
        let i = if self.services.len() <= SCAN_MAX {
            self.services.iter().position(|s| s.key == *key)?
        } else {
            *self.by_key.get(key)? as usize
        };
        Some((i as ServiceIndex, &self.services[i]))
    }

    /// Where real server `id` is in service `si`'s list, if it is there: a
    /// scan for a few real servers, the index for more.
    #[inline]
    pub fn real_position(&self, si: ServiceIndex, id: RealId) -> Option<usize> {
        let reals = &self.services.get(si as usize)?.reals;
        if reals.len() <= SCAN_MAX {
            reals.iter().position(|r| r.id == id)
        } else {
            self.by_real
                .get(&id)
                .filter(|(i, _)| *i == si)
                .map(|&(_, j)| j)
        }
    }

    /// The real server with this id, and the service it belongs to.
    pub fn real(&self, id: RealId) -> Option<(ServiceIndex, &RealServer)> {
        let &(i, j) = self.by_real.get(&id)?;
        Some((i, self.services.get(i as usize)?.reals.get(j)?))
    }
}

/// Live counters of one real server, shared by every worker.
///
/// ActiveConn counts connections in ESTABLISHED state, InActConn all others,
/// exactly as `ipvsadm -L` shows them; PersistConn counts persistence templates.
#[derive(Debug, Default)]
pub struct RealLoad {
    pub active_conns: AtomicU32,
    pub inact_conns: AtomicU32,
    pub persist_conns: AtomicU32,
    /// Set once the server reached its upper threshold; cleared when it drops
    /// below the lower one (IPVS's `IP_VS_DEST_F_OVERLOAD` hysteresis).
    pub overloaded: AtomicBool,
}

impl RealLoad {
    pub fn active(&self) -> u32 {
        self.active_conns.load(Ordering::Relaxed)
    }

    pub fn inactive(&self) -> u32 {
        self.inact_conns.load(Ordering::Relaxed)
    }

    pub fn persistent(&self) -> u32 {
        self.persist_conns.load(Ordering::Relaxed)
    }
}

/// Counters of every real server, indexed by [`RealId`], allocated once at start.
#[derive(Debug)]
pub struct RealLoads {
    slots: Box<[RealLoad]>,
}

impl RealLoads {
    pub fn new(capacity: usize) -> RealLoads {
        RealLoads {
            slots: (0..capacity).map(|_| RealLoad::default()).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Counters of `id`; ids come from the control plane, which never hands
    /// out one past the capacity.
    pub fn get(&self, id: RealId) -> Option<&RealLoad> {
        self.slots.get(id.0 as usize)
    }
}
