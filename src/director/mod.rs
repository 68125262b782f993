//! The director: what `xvs director` runs.
//!
//! Start-up ([`Director::start`]) checks privileges, interfaces, queues and
//! memory ([`checks`]), creates the shared connection table (fallibly: a
//! table the machine cannot hold is an error, not an abort), loads and
//! attaches one steering program per interface ([`programs`]), reads the
//! next hops ([`hops`]), creates the workers (one per queue, pinned to a
//! core each, [`workers`]), and publishes the first configuration snapshot.
//! A start that fails at any step leaves nothing attached. The steering
//! programs learn every address of the host (all interfaces, lo too)
//! before the workers start, so answers to the host's own traffic stay
//! with its kernel, and each interface's MACs (its own, and the VRRP
//! virtual MACs held on it), so only frames addressed to this director are
//! taken. Afterwards the control thread calls
//! [`Director::control_round`] in a loop: it rebuilds next hops when the
//! kernel's routes or neighbours change, follows the host's addresses and
//! virtual MACs into the steering programs, asks the kernel to resolve addresses workers
//! found unresolved, and expires scheduler state. Configuration changes go
//! through [`Director::set_services`]: a new snapshot for the workers
//! first, then the XDP maps ([`publish`]), so a frame is never redirected
//! to a worker that does not know its service. [`Director::stop`] (or
//! dropping the director) stops the workers and detaches the programs.

pub mod checks;
pub mod hops;
pub mod programs;
pub mod publish;
mod reaper;
mod sync;
pub mod workers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conntrack::{ConnTable, Timeouts};
use crate::neigh::netlink::Interface;
use crate::packet::MacAddr;
use crate::pipeline::{Policy, Snapshot};
use crate::service::RealTraffic;
use crate::service::ServiceKey;
use crate::service::{RealId, RealLoads, ServiceTable};
use crate::sync::{HealthRecord, Refused, ServicesUpdate, SyncHandle, SyncOptions};
use crate::xsk::prog::XdpMode;
use crate::xsk::worker::WorkerStats;
use crate::Millis;

pub use checks::{check_memory, check_privileges, worker_queues, MemoryBounds};
#[cfg(test)]
pub(crate) use programs::steered_endpoints;

use hops::Hops;
use programs::Programs;
use reaper::Reaper;
use workers::Workers;

/// Real servers the counters table has room for (RealIds are below this).
pub const REAL_CAPACITY: usize = crate::limits::MAX_REALS;

/// What `xvs director` was asked to do.
#[derive(Clone, Debug)]
pub struct DirectorOptions {
    pub interfaces: Vec<String>,
    /// Default: one per rx queue of the first interface, at most one per
    /// worker CPU (`worker_cpus`, else every CPU the process may use).
    pub workers: Option<usize>,
    /// The queue of each worker; default 0, 1, ... .
    pub queues: Option<Vec<u32>>,
    pub conn_table_size: usize,
    pub timeouts: Timeouts,
    /// `SO_PREFER_BUSY_POLL` with this budget.
    pub busy_poll: Option<u16>,
    /// Prefetch each batch's connection entries before processing it.
    pub batch_prefetch: bool,
    pub static_neighbours: Vec<StaticNeighbourSpec>,
    pub sloppy_tcp: bool,
    /// IPVS's `expire_nodest_conn`: end a deleted real server's connections
    /// instead of keeping them for its return.
    pub expire_nodest_conn: bool,
    pub batch: usize,
    pub ring_size: u32,
    /// The CPUs workers are pinned to, in turn (default: every CPU the
    /// process may use). The director's other threads move to the CPUs left.
    pub worker_cpus: Option<Vec<usize>>,
    /// Connection sync: key, peers, daemons to start ([`crate::sync`]).
    pub sync: SyncOptions,
}

impl Default for DirectorOptions {
    fn default() -> DirectorOptions {
        DirectorOptions {
            interfaces: Vec::new(),
            workers: None,
            queues: None,
            conn_table_size: 1 << 20,
            timeouts: Timeouts::default(),
            busy_poll: None,
            batch_prefetch: false,
            static_neighbours: Vec::new(),
            sloppy_tcp: false,
            expire_nodest_conn: false,
            batch: 64,
            ring_size: 2048,
            worker_cpus: None,
            sync: SyncOptions::default(),
        }
    }
}

impl DirectorOptions {
    fn policy(&self) -> Policy {
        Policy {
            sloppy_tcp: self.sloppy_tcp,
            expire_nodest_conn: self.expire_nodest_conn,
        }
    }
}

/// A static neighbour from configuration: `addr` has `mac` on `iface`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticNeighbourSpec {
    pub addr: IpAddr,
    pub mac: MacAddr,
    pub iface: String,
}

/// Why the director could not start or apply a change; worded for a person.
#[derive(Debug)]
pub struct DirectorError(pub String);

impl std::fmt::Display for DirectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DirectorError {}

fn err(e: impl std::fmt::Display) -> DirectorError {
    DirectorError(e.to_string())
}

/// A running director.
pub struct Director {
    programs: Programs,
    workers: Workers,
    hops: Hops,
    services: ServiceTable,
    policy: Policy,
    epoch: Instant,
    /// Deleted real servers whose connections are expired beside the
    /// control loop (`expire_nodest_conn`); joined at stop.
    reaper: Reaper,
    /// The sync thread, fed by the workers' connection events.
    sync: sync::Syncer,
}

impl Director {
    /// Starts the data plane with `services` configured. Every other thread
    /// of the process is moved to the CPUs no worker has, if there are any
    /// (see [`crate::cpus`]): a process-wide effect, meant for the
    /// director's own binary.
    pub fn start(
        opts: &DirectorOptions,
        services: ServiceTable,
    ) -> Result<Director, DirectorError> {
        check_privileges()?;
        let ifaces = checks::interfaces(&opts.interfaces)?;
        let cores = crate::cpus::worker_cpus(opts.worker_cpus.as_deref()).map_err(err)?;
        let queues = worker_queues(opts, &ifaces, cores.len())?;
        // The big allocations before anything is attached, and fallibly:
        // a table the machine cannot hold is a refusal, not an abort that
        // leaves the programs behind.
        check_memory(opts, ifaces.len(), queues.len())?;
        let loads = Arc::new(RealLoads::new(REAL_CAPACITY));
        let conns = Arc::new(
            ConnTable::try_new(opts.conn_table_size, opts.timeouts, Arc::clone(&loads))
                .map_err(|e| err(format!("{e}: give a smaller conn_table_size")))?,
        );
        tracing::info!(
            capacity = opts.conn_table_size,
            huge_pages = conns.huge_pages(),
            "connection table allocated"
        );

        let programs = Programs::attach(&ifaces)?;
        let (hops, resolve_tx) = Hops::open(ifaces, &opts.static_neighbours)?;
        let first = Arc::new(Snapshot::new(
            services.clone(),
            hops.port_configs(),
            hops.next_hops().clone(),
            opts.policy(),
        ));
        let syncer = sync::Syncer::new(&services);
        let mut d = Director {
            programs,
            workers: Workers::new(first, conns, loads),
            hops,
            services,
            policy: opts.policy(),
            epoch: Instant::now(),
            reaper: Reaper::default(),
            sync: syncer,
        };
        // The workers' snapshot holds the services already: the maps may
        // name them.
        d.programs.sync_services(&d.services)?;
        d.programs.sync_local_addrs()?;
        d.programs.sync_own_macs(d.hops.interfaces())?;
        d.hops.resolve_ahead(&d.services);
        let events = d.sync.events(&opts.sync);
        d.workers.spawn(
            opts,
            &queues,
            &cores,
            &d.programs,
            &d.hops,
            (resolve_tx, events),
        )?;
        // After the workers: the sync thread runs on the CPUs they left.
        d.sync.spawn(&opts.sync, d.workers.conns())?;
        Ok(d)
    }

    /// One round of control-plane upkeep, waiting up to `wait` for kernel
    /// network changes.
    pub fn control_round(&mut self, wait: Duration) {
        if self.hops.wait(wait) {
            if let Err(e) = self.programs.sync_local_addrs() {
                tracing::warn!("the steering programs may miss some of the host's addresses: {e}");
            }
            let fresh = self.hops.refresh();
            if let Err(e) = self.programs.sync_own_macs(self.hops.interfaces()) {
                tracing::warn!("the steering programs may miss a MAC of this director: {e}");
            }
            if fresh {
                publish::Targets::store_snapshot(self);
            }
        }
        let now = self.now();
        for s in self.workers.snapshot().load().schedulers() {
            s.tick(now);
        }
    }

    /// Replaces the virtual services; connections are not disturbed.
    pub fn set_services(&mut self, services: ServiceTable) -> Result<(), DirectorError> {
        self.services = services;
        // The workers' snapshot first, then sync's view: a connection sync
        // imports for a new real server then meets workers that know that
        // server (its replies pass their real-address filter, its client's
        // packets find it), where the other order left a moment in which
        // they did not. In the moment between, an import for that server
        // is refused (counted) and comes again with the connection's next
        // state change or the master's next refresh of the table.
        let published = publish::services(self);
        self.sync.set_services(&self.services);
        published
    }

    /// Milliseconds since start, on the clock the control plane uses.
    pub fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// Whether a deleted real server's connections end at once.
    pub fn expire_nodest_conn(&self) -> bool {
        self.policy.expire_nodest_conn
    }

    /// Has the connections of the deleted real servers `ids` expired, in one
    /// sweep of the table on the reaper thread: the caller does not wait, and
    /// changes that come while a sweep runs are taken together in the next.
    /// Meanwhile a worker that meets such a connection ends it itself.
    pub fn expire_reals(&mut self, ids: &[RealId]) {
        self.reaper.expire(self.workers.conns(), self.epoch, ids);
    }

    pub fn services(&self) -> &ServiceTable {
        &self.services
    }

    pub fn conns(&self) -> &Arc<ConnTable> {
        self.workers.conns()
    }

    pub fn loads(&self) -> &Arc<RealLoads> {
        self.workers.loads()
    }

    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        self.workers.stats()
    }

    /// Each worker's per-real-server traffic; sum them for `--stats`.
    pub fn traffic(&self) -> &[Arc<RealTraffic>] {
        self.workers.traffic()
    }

    pub fn interfaces(&self) -> &[Interface] {
        self.hops.interfaces()
    }

    /// Per interface (its name), the steering program's counters by
    /// [`SteerCounter::ALL`](crate::xsk::prog::SteerCounter::ALL).
    pub fn steering_counters(&self) -> Vec<(String, [u64; 2])> {
        let names = self.hops.interfaces().iter().map(|i| i.name.clone());
        names.zip(self.programs.counters()).collect()
    }

    pub fn xdp_modes(&self) -> &[XdpMode] {
        self.programs.modes()
    }

    /// The CPU of each worker.
    pub fn worker_cpus(&self) -> &[usize] {
        self.workers.worker_cpus()
    }

    /// The CPUs the director's other threads were moved to; empty if no
    /// CPU was left over by the workers.
    pub fn other_cpus(&self) -> &[usize] {
        self.workers.other_cpus()
    }

    /// Stops the workers and detaches the steering programs.
    pub fn stop(mut self) {
        self.halt();
    }

    /// The sync thread (`--start-daemon`, `--stop-daemon`, `-L --daemon`).
    pub fn sync(&mut self) -> Option<&mut SyncHandle> {
        self.sync.handle()
    }

    pub fn sync_ref(&self) -> Option<&SyncHandle> {
        self.sync.handle_ref()
    }

    /// A real server's health as a peer's checks report it (the hook the
    /// daemon applies as `service::Edit::SetHealth`); `None` when no
    /// report waits.
    pub fn peer_health(&self) -> Option<HealthRecord> {
        self.sync.health_report()
    }

    /// Tells the peers a real server's health changed here (sent while the
    /// master daemon runs).
    pub fn health_changed(&self, service: ServiceKey, real: SocketAddr, up: bool) {
        self.sync.send_health(HealthRecord { service, real, up });
    }

    /// A peer's whole service configuration (`[sync] services`), for the
    /// daemon to apply; `None` when none waits.
    pub fn peer_services(&self) -> Option<ServicesUpdate> {
        self.sync.services_report()
    }

    /// Gives sync this director's service configuration (`ipvsadm -S -n`
    /// text) after a change of the model (sent while the master runs).
    pub fn services_changed(&self, text: String) {
        self.sync.send_services(text);
    }

    /// Counts what became of a peer's service configuration here.
    pub fn services_applied(&self, outcome: Result<bool, Refused>) {
        self.sync.count_services(outcome);
    }

    fn halt(&mut self) {
        self.sync.stop();
        self.reaper.stop();
        self.workers.stop();
        // Workers (and their sockets) are gone; the programs detach.
        self.programs.detach();
    }
}

impl publish::Targets for Director {
    fn store_snapshot(&mut self) {
        let slot = self.workers.snapshot();
        let next = Snapshot::with_previous(
            self.services.clone(),
            self.hops.port_configs(),
            self.hops.next_hops().clone(),
            self.policy,
            Some(&slot.load()),
        );
        slot.store(Arc::new(next));
    }

    fn sync_maps(&mut self) -> Result<(), DirectorError> {
        self.programs.sync_services(&self.services)
    }

    fn resolve_ahead(&self) {
        self.hops.resolve_ahead(&self.services);
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        self.halt();
    }
}
