//! The director: what `xvs director` runs.
//!
//! Start-up checks privileges, interfaces, queues and memory, creates the
//! shared connection table (fallibly: a table the machine cannot hold is an
//! error, not an abort), loads and attaches one steering program per
//! interface, creates the workers (one per queue, pinned to a core each),
//! and publishes the first configuration snapshot. A start that fails at
//! any step leaves nothing attached. The steering programs learn every address of the
//! host (all interfaces, lo too) before the workers start, so answers to the
//! host's own traffic stay with its kernel. Afterwards the control thread
//! calls [`Director::control_round`] in a loop: it rebuilds next hops when
//! the kernel's routes or neighbours change, follows the host's addresses
//! into the steering programs, asks the kernel to resolve addresses workers
//! found unresolved, and expires scheduler state. Configuration
//! changes go through [`Director::set_services`]: a new snapshot for the
//! workers first, then the XDP maps, so a frame is never redirected to a
//! worker that does not know its service. [`Director::stop`] (or dropping
//! the director) stops the workers and detaches the programs.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, Sender};

use crate::conntrack::{ConnTable, Timeouts};
use crate::limits::MAX_QUEUES;
use crate::neigh::netlink::{self, Interface, Watcher};
use crate::neigh::snapshot::{Port, StaticNeighbour};
use crate::neigh::{NextHops, Unresolved};
use crate::packet::MacAddr;
use crate::pipeline::{Pipeline, Policy, PortConfig, Snapshot};
use crate::service::{ForwardMethod, RealId, RealLoads, RealTraffic, ServiceTable};
use crate::xsk::prog::{Endpoint, LocalAddr, SteeringProgram, XdpMode};
use crate::xsk::worker::{Worker, WorkerSetup, WorkerShared, WorkerStats};
use crate::Millis;

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
            static_neighbours: Vec::new(),
            sloppy_tcp: false,
            expire_nodest_conn: false,
            batch: 64,
            ring_size: 2048,
            worker_cpus: None,
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
    ifaces: Vec<Interface>,
    programs: Vec<SteeringProgram>,
    modes: Vec<XdpMode>,
    shared: Arc<WorkerShared>,
    stats: Vec<Arc<WorkerStats>>,
    traffic: Vec<Arc<RealTraffic>>,
    threads: Vec<JoinHandle<()>>,
    conns: Arc<ConnTable>,
    loads: Arc<RealLoads>,
    services: ServiceTable,
    statics: Vec<StaticNeighbour>,
    policy: Policy,
    next_hops: NextHops,
    watcher: Watcher,
    resolve_rx: Receiver<IpAddr>,
    epoch: Instant,
    /// The CPU of each worker, and those the other threads were moved to
    /// (empty: no CPU was spare, they share the workers').
    worker_cpus: Vec<usize>,
    other_cpus: Vec<usize>,
    /// Deleted real servers whose connections the reaper thread expires
    /// (`expire_nodest_conn`); closed, and the thread joined, at stop.
    reaper: Option<(Sender<Vec<RealId>>, JoinHandle<()>)>,
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
        if opts.interfaces.is_empty() {
            return Err(err("no interface given: name at least one with -i IFACE"));
        }
        let mut ifaces = Vec::new();
        for name in &opts.interfaces {
            if ifaces.iter().any(|i: &Interface| &i.name == name) {
                return Err(err(format!("interface {name} given twice")));
            }
            ifaces.push(netlink::interface(name).map_err(err)?);
        }
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

        let mut programs = Vec::new();
        let mut modes = Vec::new();
        for i in &ifaces {
            let mut p = SteeringProgram::load().map_err(err)?;
            modes.push(p.attach(i.ifindex, &i.name).map_err(err)?);
            programs.push(p);
        }

        let statics = resolve_statics(&ifaces, &opts.static_neighbours)?;
        let next_hops = kernel_next_hops(&ifaces, &statics)?;
        let config = Arc::new(Snapshot::new(
            services.clone(),
            port_configs(&ifaces),
            next_hops.clone(),
            opts.policy(),
        ));
        let shared = Arc::new(WorkerShared {
            stop: AtomicBool::new(false),
            snapshot: ArcSwap::new(Arc::clone(&config)),
        });
        let watcher =
            Watcher::open(&ifaces.iter().map(|i| i.ifindex).collect::<Vec<_>>()).map_err(err)?;
        let (resolve_tx, resolve_rx) = crossbeam::channel::bounded(1024);
        let mut d = Director {
            ifaces,
            programs,
            modes,
            shared,
            stats: Vec::new(),
            traffic: Vec::new(),
            threads: Vec::new(),
            conns,
            loads,
            services,
            statics,
            policy: opts.policy(),
            next_hops,
            watcher,
            resolve_rx,
            epoch: Instant::now(),
            worker_cpus: Vec::new(),
            other_cpus: Vec::new(),
            reaper: None,
        };
        d.sync_maps()?;
        d.sync_local_addrs()?;
        d.resolve_ahead();
        // Every thread there is now moves off the workers' CPUs (threads
        // started later inherit that); each worker then pins itself to its
        // own CPU, which a thread may do outside the CPUs it inherited.
        let used: Vec<usize> = (0..queues.len())
            .filter_map(|i| cores.get(i % cores.len().max(1)).map(|c| c.id))
            .collect();
        let spare = crate::cpus::spare(&used);
        if !spare.is_empty() {
            crate::cpus::confine_process(&spare).map_err(err)?;
        }
        d.other_cpus = spare;
        d.spawn_workers(opts, &queues, &cores, resolve_tx)?;
        Ok(d)
    }

    fn spawn_workers(
        &mut self,
        opts: &DirectorOptions,
        queues: &[u32],
        cores: &[core_affinity::CoreId],
        resolve_tx: Sender<IpAddr>,
    ) -> Result<(), DirectorError> {
        let names: Vec<String> = self.ifaces.iter().map(|i| i.name.clone()).collect();
        for (index, &queue) in queues.iter().enumerate() {
            let setup_core = cores.get(index % cores.len().max(1)).copied();
            let setup = WorkerSetup {
                index,
                queue,
                core: setup_core,
                batch: opts.batch,
                ring_size: opts.ring_size,
                busy_poll: opts.busy_poll,
            };
            let pipeline = Pipeline::new(
                self.shared.snapshot.load_full(),
                Arc::clone(&self.conns),
                Arc::clone(&self.loads),
                index as u16,
            );
            self.traffic.push(Arc::clone(pipeline.traffic()));
            let waker = self.watcher.waker().map_err(|e| {
                err(format!(
                    "cannot create a wake-up handle for worker {index}: {e}"
                ))
            })?;
            let worker = Worker::new(
                setup,
                &names,
                &self.programs,
                pipeline,
                (resolve_tx.clone(), waker),
            )
            .map_err(err)?;
            let stats = Arc::new(WorkerStats::default());
            let (s, sh) = (Arc::clone(&stats), Arc::clone(&self.shared));
            let handle = std::thread::Builder::new()
                .name(format!("xvs-worker-{index}"))
                .spawn(move || worker.run(&sh, &s))
                .map_err(|e| err(format!("cannot start worker thread: {e}")))?;
            self.stats.push(stats);
            self.threads.push(handle);
            if let Some(core) = setup_core {
                self.worker_cpus.push(core.id);
            }
        }
        Ok(())
    }

    /// One round of control-plane upkeep, waiting up to `wait` for kernel
    /// network changes.
    pub fn control_round(&mut self, wait: Duration) {
        // Workers wake the wait when they ask for a neighbour: frames wait
        // for it in their hold queues.
        let changed = self.watcher.wait(wait);
        let mut asked = HashSet::new();
        while let Ok(addr) = self.resolve_rx.try_recv() {
            if asked.insert(addr) {
                if let Some(port) = self.next_hops.port_toward(addr) {
                    if let Some(i) = self.ifaces.get(usize::from(port)) {
                        if let Err(e) = netlink::resolve_request(addr, i.ifindex) {
                            eprintln!("xvs: {e}");
                        }
                    }
                }
            }
        }
        if changed {
            // Let a burst of changes settle, then rebuild once; briefly,
            // since a resolved neighbour releases held frames.
            std::thread::sleep(Duration::from_millis(2));
            while self.watcher.wait(Duration::ZERO) {}
            if let Err(e) = self.sync_local_addrs() {
                eprintln!("xvs: the steering programs may miss some of the host's addresses: {e}");
            }
            self.refresh_interfaces();
            match kernel_next_hops(&self.ifaces, &self.statics) {
                Ok(h) => {
                    self.next_hops = h;
                    self.publish();
                }
                Err(e) => eprintln!("xvs: keeping the previous next hops: {e}"),
            }
        }
        let now = self.now();
        for s in self.shared.snapshot.load().schedulers() {
            s.tick(now);
        }
    }

    fn refresh_interfaces(&mut self) {
        for i in &mut self.ifaces {
            if let Ok(fresh) = netlink::interface(&i.name) {
                *i = fresh;
            }
        }
    }

    /// Replaces the virtual services; connections are not disturbed.
    pub fn set_services(&mut self, services: ServiceTable) -> Result<(), DirectorError> {
        self.services = services;
        self.publish();
        self.sync_maps()?;
        self.resolve_ahead();
        Ok(())
    }

    /// Asks the kernel to resolve, before any packet needs them, the next
    /// hops xvs will send to: every real server's, and every gateway of a
    /// route through a director port. Without this the first packets of the
    /// first connections would find no MAC and be dropped.
    fn resolve_ahead(&self) {
        let mut wanted: Vec<IpAddr> = self
            .services
            .services()
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .collect();
        wanted.extend(self.next_hops.routes().iter().filter_map(|r| r.via));
        wanted.sort();
        wanted.dedup();
        for addr in wanted {
            if let Err(Unresolved(hop)) = self.next_hops.resolve(addr) {
                let port = self.next_hops.port_toward(hop).map(usize::from);
                if let Some(i) = port.and_then(|p| self.ifaces.get(p)) {
                    if let Err(e) = netlink::resolve_request(hop, i.ifindex) {
                        eprintln!("xvs: {e}");
                    }
                }
            }
        }
    }

    fn publish(&mut self) {
        let config = Snapshot::with_previous(
            self.services.clone(),
            port_configs(&self.ifaces),
            self.next_hops.clone(),
            self.policy,
            Some(&self.shared.snapshot.load()),
        );
        self.shared.snapshot.store(Arc::new(config));
    }

    /// Makes every steering program's maps match the services.
    fn sync_maps(&mut self) -> Result<(), DirectorError> {
        let (services, nat_reals) = steered_endpoints(&self.services);
        for p in &mut self.programs {
            p.sync_services(&services).map_err(err)?;
            p.sync_nat_reals(&nat_reals).map_err(err)?;
        }
        Ok(())
    }

    /// Makes every steering program's `local_addrs` the host's addresses
    /// now. Until this runs after a change, answers to a new address coming
    /// from a NAT real server's endpoint still go to xvs (and are dropped).
    fn sync_local_addrs(&mut self) -> Result<(), DirectorError> {
        let addrs: HashSet<LocalAddr> = netlink::local_addresses()
            .map_err(err)?
            .into_iter()
            .map(LocalAddr::new)
            .collect();
        for p in &mut self.programs {
            p.sync_local_addrs(&addrs).map_err(err)?;
        }
        Ok(())
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
        if self.reaper.is_none() {
            let (tx, rx) = crossbeam::channel::unbounded::<Vec<RealId>>();
            let (conns, epoch) = (Arc::clone(&self.conns), self.epoch);
            let spawned = std::thread::Builder::new()
                .name("xvs-reaper".into())
                .spawn(move || {
                    while let Ok(mut ids) = rx.recv() {
                        while let Ok(more) = rx.try_recv() {
                            ids.extend(more);
                        }
                        let now = Millis(epoch.elapsed().as_millis() as u64);
                        conns.expire_reals(&ids, now);
                    }
                });
            match spawned {
                Ok(handle) => self.reaper = Some((tx, handle)),
                Err(e) => {
                    eprintln!("xvs: cannot start the reaper thread ({e}); expiring here");
                    self.conns.expire_reals(ids, self.now());
                    return;
                }
            }
        }
        if let Some((tx, _)) = &self.reaper {
            let _ = tx.send(ids.to_vec());
        }
    }

    pub fn services(&self) -> &ServiceTable {
        &self.services
    }

    pub fn conns(&self) -> &Arc<ConnTable> {
        &self.conns
    }

    pub fn loads(&self) -> &Arc<RealLoads> {
        &self.loads
    }

    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Each worker's per-real-server traffic; sum them for `--stats`.
    pub fn traffic(&self) -> &[Arc<RealTraffic>] {
        &self.traffic
    }

    pub fn interfaces(&self) -> &[Interface] {
        &self.ifaces
    }

    pub fn xdp_modes(&self) -> &[XdpMode] {
        &self.modes
    }

    /// The CPU of each worker.
    pub fn worker_cpus(&self) -> &[usize] {
        &self.worker_cpus
    }

    /// The CPUs the director's other threads were moved to; empty if no
    /// CPU was left over by the workers.
    pub fn other_cpus(&self) -> &[usize] {
        &self.other_cpus
    }

    /// Stops the workers and detaches the steering programs.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some((tx, handle)) = self.reaper.take() {
            drop(tx);
            let _ = handle.join();
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Workers (and their sockets) are gone; the programs detach on drop.
        self.programs.clear();
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The rx queue of each worker: `queues` as given, else `0..workers`, else
/// one per rx queue of the first interface, at most one per worker CPU
/// (`cpus` of them) and [`MAX_QUEUES`]. Each must exist on every interface
/// and be below [`MAX_QUEUES`].
pub fn worker_queues(
    opts: &DirectorOptions,
    ifaces: &[Interface],
    cpus: usize,
) -> Result<Vec<u32>, DirectorError> {
    let most = MAX_QUEUES as u32;
    let queues: Vec<u32> = match (&opts.queues, opts.workers) {
        (Some(q), _) => q.clone(),
        (None, Some(n)) if n > MAX_QUEUES => {
            return Err(err(format!(
                "--workers {n}: at most {MAX_QUEUES} (one per rx queue, queues 0 to {})",
                most - 1
            )))
        }
        (None, Some(n)) => (0..n as u32).collect(),
        (None, None) => {
            let first = ifaces.first().map_or(1, |i| i.rx_queues);
            (0..first.min(cpus.max(1) as u32).min(most)).collect()
        }
    };
    if queues.is_empty() {
        return Err(err("--workers must be at least 1"));
    }
    if let Some(q) = queues.iter().find(|&&q| q >= most) {
        return Err(err(format!(
            "queue {q} is past {}, the highest rx queue xvs can serve",
            most - 1
        )));
    }
    for i in ifaces {
        if let Some(&q) = queues.iter().find(|&&q| q >= i.rx_queues) {
            return Err(err(format!(
                "interface {} has {} rx queue(s); queue {q} does not exist \
                 (use fewer workers, or more queues: ethtool -L {} combined N)",
                i.name, i.rx_queues, i.name
            )));
        }
    }
    Ok(queues)
}

/// What bounds the memory this process can have: the machine's
/// MemAvailable and the process's address-space and data limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBounds {
    /// `MemAvailable` in `/proc/meminfo`, bytes.
    pub available: Option<u64>,
    /// `RLIMIT_AS` (`ulimit -v`), bytes; `None` if unlimited.
    pub address_space: Option<u64>,
    /// `RLIMIT_DATA` (`ulimit -d`), bytes; `None` if unlimited.
    pub data: Option<u64>,
}

impl MemoryBounds {
    /// This machine's and this process's, now. What cannot be read is `None`.
    pub fn current() -> MemoryBounds {
        use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
        let limit = |r| match getrlimit(r) {
            Ok((soft, _)) if soft != RLIM_INFINITY => Some(soft),
            _ => None,
        };
        let meminfo =
            crate::files::read_text(Path::new("/proc/meminfo"), crate::files::MAX_SYSTEM_BYTES);
        MemoryBounds {
            available: meminfo.ok().as_deref().and_then(mem_available),
            address_space: limit(Resource::RLIMIT_AS),
            data: limit(Resource::RLIMIT_DATA),
        }
    }
}

/// `MemAvailable:` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut w = line.split_whitespace().skip(1);
    let kb: u64 = w.next()?.parse().ok()?;
    (w.next() == Some("kB")).then_some(kb.saturating_mul(1024))
}

/// Bytes of AF_XDP frames (UMEM) `workers` workers on `interfaces`
/// interfaces take: two rings' worth of frames per interface each
/// (`xsk::worker`'s layout).
fn frame_bytes(opts: &DirectorOptions, interfaces: usize, workers: usize) -> u64 {
    let frame = u64::from(crate::xsk::worker::FRAME_SIZE);
    (workers as u64)
        .saturating_mul(interfaces.max(1) as u64)
        .saturating_mul(u64::from(opts.ring_size) * 2 * frame)
}

/// Refuses a start whose connection table and AF_XDP frames would not fit
/// in the memory this machine has available or this process may map,
/// naming the numbers. Start-up runs it before allocating;
/// `--check-config` too.
pub fn check_memory(
    opts: &DirectorOptions,
    interfaces: usize,
    workers: usize,
) -> Result<(), DirectorError> {
    memory_fits(opts, interfaces, workers, &MemoryBounds::current())
}

fn memory_fits(
    opts: &DirectorOptions,
    interfaces: usize,
    workers: usize,
    bounds: &MemoryBounds,
) -> Result<(), DirectorError> {
    use crate::files::size_text;
    let n = opts.conn_table_size;
    let frames = frame_bytes(opts, interfaces, workers);
    let Some(table) = ConnTable::memory_needed(n).map(|b| b as u64) else {
        return Err(err(format!(
            "conn_table_size = {n} is larger than memory can address"
        )));
    };
    let needed = table.saturating_add(frames);
    let limits = [
        (
            bounds.available,
            "this machine has available (MemAvailable in /proc/meminfo)",
        ),
        (
            bounds.address_space,
            "this process may map (RLIMIT_AS, ulimit -v)",
        ),
        (
            bounds.data,
            "this process may allocate (RLIMIT_DATA, ulimit -d)",
        ),
    ];
    for (limit, what) in limits {
        if let Some(limit) = limit.filter(|&l| needed > l) {
            return Err(err(format!(
                "conn_table_size = {n} needs {} for the connection table (about {} bytes a \
                 connection), and {workers} worker(s) need {} of AF_XDP frames: more than \
                 the {} {what}; give a smaller conn_table_size (or ring_size, or fewer workers)",
                size_text(table),
                table / n.max(1) as u64,
                size_text(frames),
                size_text(limit),
            )));
        }
    }
    Ok(())
}

/// Root, or the capabilities xvs needs (CAP_NET_ADMIN, CAP_NET_RAW, and
/// CAP_BPF or CAP_SYS_ADMIN).
pub fn check_privileges() -> Result<(), DirectorError> {
    if crate::xsk::euid() == 0 {
        return Ok(());
    }
    let status = Path::new("/proc/self/status");
    let caps = crate::files::read_text(status, crate::files::MAX_SYSTEM_BYTES)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .map(str::to_owned)
        })
        .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    if has(CAP_NET_ADMIN) && has(CAP_NET_RAW) && (has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        return Ok(());
    }
    Err(err(
        "xvs director needs root, or the capabilities CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF \
         (e.g. sudo xvs director ..., or setcap cap_net_admin,cap_net_raw,cap_bpf+ep on the binary)",
    ))
}

/// The steering program's `services` and `nat_reals` sets for `services`:
/// every (protocol, VIP, port), and every NAT real server's (protocol,
/// address, port).
pub(crate) fn steered_endpoints(services: &ServiceTable) -> (HashSet<Endpoint>, HashSet<Endpoint>) {
    let mut vips = HashSet::new();
    let mut nat_reals = HashSet::new();
    for s in services.services() {
        vips.insert(Endpoint::new(s.key.proto, s.key.addr, s.key.port));
        for r in s.reals.iter().filter(|r| r.method == ForwardMethod::Nat) {
            nat_reals.insert(Endpoint::new(s.key.proto, r.addr, r.port));
        }
    }
    (vips, nat_reals)
}

fn port_configs(ifaces: &[Interface]) -> Vec<PortConfig> {
    ifaces
        .iter()
        .map(|i| PortConfig {
            name: i.name.clone(),
            mac: i.mac,
            mtu: i.mtu,
            addrs: i
                .addrs
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| !is_link_local(a))
                .collect(),
        })
        .collect()
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn ports(ifaces: &[Interface]) -> Vec<Port> {
    ifaces.iter().zip(0..).map(|(f, i)| f.port(i)).collect()
}

fn resolve_statics(
    ifaces: &[Interface],
    specs: &[StaticNeighbourSpec],
) -> Result<Vec<StaticNeighbour>, DirectorError> {
    specs
        .iter()
        .map(|s| {
            let port = ifaces
                .iter()
                .position(|i| i.name == s.iface)
                .ok_or_else(|| {
                    err(format!(
                        "static neighbour {} is on {}, which is not a director interface ({})",
                        s.addr,
                        s.iface,
                        ifaces
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            Ok(StaticNeighbour {
                addr: s.addr,
                port: port as u8,
                mac: s.mac,
            })
        })
        .collect()
}

fn kernel_next_hops(
    ifaces: &[Interface],
    statics: &[StaticNeighbour],
) -> Result<NextHops, DirectorError> {
    let snap = netlink::snapshot(&ports(ifaces), statics).map_err(err)?;
    for note in &snap.notes {
        eprintln!("xvs: {note}");
    }
    Ok(snap.next_hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, rx_queues: u32) -> Interface {
        Interface {
            name: name.into(),
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            up: true,
            addrs: Vec::new(),
            rx_queues,
        }
    }

    fn queues(
        workers: Option<usize>,
        queues: Option<Vec<u32>>,
        rx: u32,
        cpus: usize,
    ) -> Result<Vec<u32>, String> {
        let opts = DirectorOptions {
            workers,
            queues,
            ..DirectorOptions::default()
        };
        worker_queues(&opts, &[iface("d0", rx)], cpus).map_err(|e| e.0)
    }

    #[test]
    fn worker_queues_are_bounded_by_the_interface_and_the_xsks_map() {
        assert_eq!(queues(None, None, 4, 2), Ok(vec![0, 1]));
        assert_eq!(
            queues(None, None, 1024, 1024).map(|q| q.len()),
            Ok(MAX_QUEUES)
        );
        assert_eq!(queues(Some(3), None, 4, 1), Ok(vec![0, 1, 2]));
        assert_eq!(queues(None, Some(vec![3]), 4, 1), Ok(vec![3]));
        let e = queues(Some(1_000_000_000), None, 4, 2).unwrap_err();
        assert_eq!(
            e,
            "--workers 1000000000: at most 256 (one per rx queue, queues 0 to 255)"
        );
        let e = queues(None, Some(vec![u32::MAX]), 4, 2).unwrap_err();
        assert_eq!(
            e,
            "queue 4294967295 is past 255, the highest rx queue xvs can serve"
        );
        let e = queues(None, Some(vec![0, 4]), 4, 2).unwrap_err();
        assert!(
            e.starts_with("interface d0 has 4 rx queue(s); queue 4 does not exist"),
            "{e}"
        );
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24684084 kB\nMemFree:        12977552 kB\nMemAvailable:   24195320 kB\n";
        assert_eq!(mem_available(text), Some(24195320 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert!(MemoryBounds::current().available.is_some(), "/proc/meminfo");
    }

    #[test]
    fn a_table_larger_than_memory_allows_is_refused_with_the_numbers() {
        let opts = DirectorOptions {
            conn_table_size: 1 << 28,
            ..DirectorOptions::default()
        };
        let table = ConnTable::memory_needed(1 << 28).unwrap() as u64;
        let frames = 2 * 2048 * 2 * 4096;
        let gib = 1u64 << 30;
        let fits = |b: MemoryBounds| memory_fits(&opts, 2, 1, &b).map_err(|e| e.0);
        assert_eq!(fits(MemoryBounds::default()), Ok(()));
        let plenty = MemoryBounds {
            available: Some(table + frames),
            address_space: Some(64 * gib),
            data: None,
        };
        assert_eq!(fits(plenty), Ok(()));
        let e = fits(MemoryBounds {
            available: Some(3 * gib),
            ..plenty
        })
        .unwrap_err();
        assert_eq!(
            e,
            format!(
                "conn_table_size = 268435456 needs {} for the connection table (about {} bytes a \
                 connection), and 1 worker(s) need 32 MiB of AF_XDP frames: more than the 3 GiB \
                 this machine has available (MemAvailable in /proc/meminfo); give a smaller \
                 conn_table_size (or ring_size, or fewer workers)",
                crate::files::size_text(table),
                table >> 28
            )
        );
        let e = fits(MemoryBounds {
            address_space: Some(2 * gib),
            ..plenty
        })
        .unwrap_err();
        assert!(
            e.contains("more than the 2 GiB this process may map (RLIMIT_AS, ulimit -v)"),
            "{e}"
        );
        let e = fits(MemoryBounds {
            data: Some(table),
            ..plenty
        })
        .unwrap_err();
        assert!(e.contains("(RLIMIT_DATA, ulimit -d)"), "{e}");
        // The frames count too: many workers with big rings.
        let rings = DirectorOptions {
            conn_table_size: 1024,
            ring_size: 1 << 16,
            ..DirectorOptions::default()
        };
        let e = memory_fits(
            &rings,
            2,
            256,
            &MemoryBounds {
                available: Some(64 * gib),
                ..MemoryBounds::default()
            },
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("256 worker(s) need 256 GiB of AF_XDP frames"),
            "{e}"
        );
    }
}
