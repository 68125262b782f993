//! The sync thread: a [`Session`] driven by the clock, the workers'
//! connection events and a UDP socket.
//!
//! One thread (`xvs-sync`) owns the session and the socket. Each round it
//! takes commands (start or stop a daemon), every waiting connection
//! event, every waiting datagram, runs the session's timers and sends what
//! it queued; it waits at most a millisecond for a datagram, so a round is
//! about that long when idle. The socket exists while a daemon runs: bound
//! to the daemon's port, joined to its group (or speaking unicast to the
//! `--sync-peer`s), bound to `--mcast-interface` if given. With both
//! daemons running the socket is the backup's, and the master sends to its
//! own group and port from it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{bounded, Receiver, Sender};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::session::{Dest, Now, Session, SessionConfig, MIN_MAXLEN};
use super::stats::{SyncMetrics, SyncStats};
use super::table::ConnSync;
use super::wire::Entry;
use super::{DaemonConfig, DaemonRole, SyncOptions};
use crate::pipeline::Event;
use crate::Millis;

/// Connection events taken from the workers in one round at most.
const EVENTS_A_ROUND: usize = 1 << 14;

enum Command {
    Start(DaemonConfig, Sender<Result<(), String>>),
    Stop(DaemonRole, Sender<Result<(), String>>),
    Entry(Entry),
}

/// The latest service configuration given to the sync thread, taken by
/// it each round: a newer one replaces one not yet taken, none is lost to
/// a full command queue.
type ServicesSlot = Arc<Mutex<Option<Vec<u8>>>>;

/// The running sync thread, as the director holds it.
pub struct SyncHandle {
    cmd: Sender<Command>,
    services: ServicesSlot,
    stats: Arc<SyncStats>,
    daemons: Vec<DaemonConfig>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    options: SyncOptions,
    sender: u32,
}

impl SyncHandle {
    /// Starts the sync thread over `table`, taking connection events from
    /// `events`; no daemon runs until one is started (or `opts.start`
    /// names some: they are started now, and a refusal is returned).
    pub fn spawn(
        opts: SyncOptions,
        events: Receiver<Event>,
        table: ConnSync,
    ) -> Result<SyncHandle, String> {
        let sender = opts.sender_id.unwrap_or_else(random_id);
        let key = opts.mac_key();
        if opts.key.is_none() && opts.insecure {
            tracing::warn!(
                "sync: --sync-insecure: sync datagrams are NOT authenticated; anyone on the sync link can install connections"
            );
        }
        let stats = Arc::new(SyncStats::default());
        let mut cfg = SessionConfig::new(sender);
        if let Some(s) = opts.refresh_secs {
            cfg.refresh_ms = s.max(1) * 1000;
        }
        cfg.services = opts.services;
        let session = Session::new(
            cfg,
            key.clone().unwrap_or_else(|_| super::Key::insecure()),
            Arc::clone(&stats),
        );
        let (cmd, cmds) = bounded(16);
        let stop = Arc::new(AtomicBool::new(false));
        let services = ServicesSlot::default();
        let mut thread = SyncThread {
            services: Arc::clone(&services),
            session,
            table,
            events,
            cmds,
            transport: None,
            daemons: Vec::new(),
            peers: opts.peers.clone(),
            stats: Arc::clone(&stats),
        };
        let halt = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("xvs-sync".into())
            .spawn(move || thread.run(&halt))
            .map_err(|e| format!("cannot start the sync thread: {e}"))?;
        let mut h = SyncHandle {
            cmd,
            services,
            stats,
            daemons: Vec::new(),
            stop,
            thread: Some(handle),
            options: opts.clone(),
            sender,
        };
        for d in opts.start {
            h.start_daemon(d)?;
        }
        Ok(h)
    }

    /// This director's sender id.
    pub fn sender(&self) -> u32 {
        self.sender
    }

    /// `--start-daemon`: refused without a key (unless insecure), or if
    /// that daemon runs already (IPVS's words).
    pub fn start_daemon(&mut self, cfg: DaemonConfig) -> Result<(), String> {
        self.options.mac_key()?;
        if self.daemons.iter().any(|d| d.role == cfg.role) {
            return Err("Daemon has already run".into());
        }
        if cfg.maxlen() < MIN_MAXLEN {
            return Err(format!("--sync-maxlen must be at least {MIN_MAXLEN}"));
        }
        self.ask(|r| Command::Start(cfg.clone(), r))?;
        tracing::info!(
            "sync: {} daemon started (syncid {}, {}, {} {})",
            cfg.role.name(),
            cfg.syncid,
            if self.options.peers.is_empty() {
                format!("group {}:{} ttl {}", cfg.group, cfg.port, cfg.ttl)
            } else {
                format!("peers {:?} port {}", self.options.peers, cfg.port)
            },
            "interface",
            cfg.mcast_interface.as_deref().unwrap_or("(routed)")
        );
        self.daemons.push(cfg);
        Ok(())
    }

    /// `--stop-daemon`: the table keeps what it holds.
    pub fn stop_daemon(&mut self, role: DaemonRole) -> Result<(), String> {
        if !self.daemons.iter().any(|d| d.role == role) {
            return Err("No daemon is running".into());
        }
        self.ask(|r| Command::Stop(role, r))?;
        self.daemons.retain(|d| d.role != role);
        tracing::info!("sync: {} daemon stopped", role.name());
        Ok(())
    }

    /// The daemons running, in the order they were started.
    pub fn daemons(&self) -> &[DaemonConfig] {
        &self.daemons
    }

    /// Sends `entry` (a health change) to the peers if the master runs.
    pub fn send_entry(&self, entry: Entry) {
        let _ = self.cmd.try_send(Command::Entry(entry));
    }

    /// Whether the service configuration travels (`[sync] services`).
    pub fn syncs_services(&self) -> bool {
        self.options.services
    }

    /// This director's service configuration (`ipvsadm -S -n` of its
    /// configured model) after a change: sent to the peers as a new
    /// generation if it differs and the master runs (`services` on).
    pub fn send_services(&self, text: String) {
        if self.options.services {
            if let Ok(mut slot) = self.services.lock() {
                *slot = Some(text.into_bytes());
            }
        }
    }

    /// Counts what became of a peer's service configuration here: applied
    /// (it changed the services), the same as ours already, or refused.
    pub fn count_services(&self, outcome: Result<bool, super::Refused>) {
        match outcome {
            Ok(true) => SyncStats::add(&self.stats.services_applied, 1),
            Ok(false) => {}
            Err(r) => self.stats.refuse(r),
        }
    }

    /// Waits, up to `timeout`, until a running backup holds its peers'
    /// table (at once if no backup runs); whether it does.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        if !self.daemons.iter().any(|d| d.role == DaemonRole::Backup) {
            return true;
        }
        let until = Instant::now() + timeout;
        while self.stats.ready.load(Ordering::Relaxed) == 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn metrics(&self) -> SyncMetrics {
        self.stats.read()
    }

    /// Stops the thread (the daemons with it).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn ask(
        &self,
        command: impl FnOnce(Sender<Result<(), String>>) -> Command,
    ) -> Result<(), String> {
        let (tx, rx) = bounded(1);
        self.cmd
            .send_timeout(command(tx), Duration::from_secs(2))
            .map_err(|_| "the sync thread does not answer".to_string())?;
        rx.recv_timeout(Duration::from_secs(2))
            .map_err(|_| "the sync thread does not answer".to_string())?
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct SyncThread {
    services: ServicesSlot,
    session: Session,
    table: ConnSync,
    events: Receiver<Event>,
    cmds: Receiver<Command>,
    transport: Option<Transport>,
    daemons: Vec<DaemonConfig>,
    peers: Vec<SocketAddr>,
    stats: Arc<SyncStats>,
}

impl SyncThread {
    fn run(&mut self, stop: &AtomicBool) {
        let epoch = Instant::now();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let now = Now {
                mono: Millis(epoch.elapsed().as_millis() as u64),
                wall_ms: wall_ms(),
            };
            while let Ok(c) = self.cmds.try_recv() {
                self.command(c, now);
            }
            let text = self.services.lock().ok().and_then(|mut s| s.take());
            if let Some(text) = text {
                self.session.set_services(text, now);
            }
            for _ in 0..EVENTS_A_ROUND {
                let Ok(e) = self.events.try_recv() else { break };
                SyncStats::add(&self.stats.events, 1);
                self.session.conn_event(now, &e);
            }
            match &self.transport {
                Some(t) => {
                    for _ in 0..1024 {
                        let Ok((n, from)) = t.sock.recv_from(&mut buf) else {
                            break;
                        };
                        let _ = self.session.receive(now, from, &buf[..n], &mut self.table);
                    }
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
            self.session.tick(now, &mut self.table);
            while let Some(tx) = self.session.poll_transmit() {
                if let Some(t) = &self.transport {
                    t.send(tx.dest, &tx.bytes);
                }
            }
        }
    }

    fn command(&mut self, c: Command, now: Now) {
        match c {
            Command::Start(cfg, reply) => {
                let mut daemons = self.daemons.clone();
                daemons.push(cfg.clone());
                let r = Transport::open(&daemons, &self.peers).map(|t| {
                    self.transport = Some(t);
                    self.daemons = daemons;
                    self.session.reconfigure(cfg.syncid, cfg.maxlen());
                    match cfg.role {
                        DaemonRole::Master => self.session.set_master(true, now),
                        DaemonRole::Backup => self.session.start_backup(now),
                    }
                });
                let _ = reply.send(r);
            }
            Command::Stop(role, reply) => {
                match role {
                    DaemonRole::Master => self.session.set_master(false, now),
                    DaemonRole::Backup => self.session.stop_backup(),
                }
                // What stopping the master flushed goes out first.
                while let Some(tx) = self.session.poll_transmit() {
                    if let Some(t) = &self.transport {
                        t.send(tx.dest, &tx.bytes);
                    }
                }
                self.daemons.retain(|d| d.role != role);
                self.transport = if self.daemons.is_empty() {
                    None
                } else {
                    Transport::open(&self.daemons, &self.peers).ok()
                };
                let _ = reply.send(Ok(()));
            }
            Command::Entry(e) => self.session.send_entry(e, now),
        }
    }
}

/// The socket and where "everyone" is.
struct Transport {
    sock: UdpSocket,
    /// The master's group and port (multicast), if it runs.
    group: Option<SocketAddrV4>,
    peers: Vec<SocketAddr>,
}

impl Transport {
    /// A socket for `daemons` (the backup's settings first).
    fn open(daemons: &[DaemonConfig], peers: &[SocketAddr]) -> Result<Transport, String> {
        let listen = daemons
            .iter()
            .find(|d| d.role == DaemonRole::Backup)
            .or(daemons.first())
            .ok_or("no daemon")?;
        let master = daemons.iter().find(|d| d.role == DaemonRole::Master);
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| format!("sync socket: {e}"))?;
        s.set_reuse_address(true)
            .map_err(|e| format!("sync socket: {e}"))?;
        let index = match &listen.mcast_interface {
            Some(name) => {
                let index = interface_index(name)?;
                s.bind_device(Some(name.as_bytes()))
                    .map_err(|e| format!("sync socket on {name}: {e}"))?;
                Some(index)
            }
            None => None,
        };
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, listen.port)).into())
            .map_err(|e| format!("cannot bind the sync port {}: {e}", listen.port))?;
        if peers.is_empty() {
            let via = match index {
                Some(i) => InterfaceIndexOrAddress::Index(i),
                None => InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED),
            };
            s.join_multicast_v4_n(&listen.group, &via)
                .map_err(|e| format!("cannot join the sync group {}: {e}", listen.group))?;
            s.set_multicast_ttl_v4(master.unwrap_or(listen).ttl as u32)
                .map_err(|e| format!("sync socket: {e}"))?;
            s.set_multicast_loop_v4(false)
                .map_err(|e| format!("sync socket: {e}"))?;
        }
        s.set_read_timeout(Some(Duration::from_millis(1)))
            .map_err(|e| format!("sync socket: {e}"))?;
        Ok(Transport {
            sock: s.into(),
            group: master
                .map(|m| SocketAddrV4::new(m.group, m.port))
                .or(Some(SocketAddrV4::new(listen.group, listen.port))),
            peers: peers.to_vec(),
        })
    }

    /// Sends; a failed send is a lost datagram, which the protocol repairs.
    fn send(&self, dest: Dest, bytes: &[u8]) {
        match dest {
            Dest::To(a) => {
                let _ = self.sock.send_to(bytes, a);
            }
            Dest::All if self.peers.is_empty() => {
                if let Some(g) = self.group {
                    let _ = self.sock.send_to(bytes, g);
                }
            }
            Dest::All => {
                for p in &self.peers {
                    let _ = self.sock.send_to(bytes, p);
                }
            }
        }
    }
}

fn interface_index(name: &str) -> Result<u32, String> {
    let path = format!("/sys/class/net/{name}/ifindex");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("--mcast-interface {name}: no such interface"))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A sender id that differs from start to start.
fn random_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    (h.finish() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{ConnState, ConnTable, Timeouts};
    use crate::packet::{FlowKey, L4Proto};
    use crate::pipeline::ConnEvent;
    use crate::service::{
        Edit, ForwardMethod, RealLoads, RealSpec, SchedFlags, SchedulerKind, ServiceKey,
        ServiceModel, ServiceSpec,
    };
    use arc_swap::ArcSwap;

    fn services() -> crate::service::ServiceTable {
        let mut m = ServiceModel::new(8);
        let key = ServiceKey {
            proto: L4Proto::Tcp,
            addr: "192.0.2.10".parse().unwrap(),
            port: 80,
        };
        m.apply(&Edit::AddService(ServiceSpec {
            key,
            scheduler: SchedulerKind::Rr,
            sched_flags: SchedFlags::default(),
            persistence: None,
        }))
        .unwrap();
        m.apply(&Edit::AddReal(
            key,
            RealSpec {
                addr: "198.51.100.2".parse().unwrap(),
                port: 80,
                method: ForwardMethod::Nat,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
            },
        ))
        .unwrap();
        m.snapshot()
    }

    fn director(peer_port: u16, insecure: bool) -> (SyncHandle, Sender<Event>, Arc<ConnTable>) {
        let conns = Arc::new(ConnTable::new(
            4096,
            Timeouts::default(),
            Arc::new(RealLoads::new(8)),
        ));
        let (tx, rx) = bounded(1024);
        let opts = SyncOptions {
            key: (!insecure).then(|| b"a shared secret of the pair".to_vec()),
            insecure,
            peers: vec![SocketAddr::from(([127, 0, 0, 1], peer_port))],
            ..SyncOptions::default()
        };
        let table = ConnSync {
            conns: Arc::clone(&conns),
            services: Arc::new(ArcSwap::from_pointee(services())),
            health: None,
            peer_services: None,
        };
        (SyncHandle::spawn(opts, rx, table).unwrap(), tx, conns)
    }

    /// Two sync threads over loopback, unicast: the master's connection
    /// reaches the backup's real table; roles start and stop at runtime.
    #[test]
    fn two_sync_threads_over_unicast_keep_a_table_in_step() {
        let base = 20_000 + (std::process::id() % 20_000) as u16;
        let (pa, pb) = (base, base + 1);
        let (mut a, events, _) = director(pb, false);
        let (mut b, _, conns_b) = director(pa, false);
        let mut master = DaemonConfig::new(DaemonRole::Master);
        master.port = pa;
        a.start_daemon(master.clone()).unwrap();
        assert_eq!(
            a.start_daemon(master).unwrap_err(),
            "Daemon has already run"
        );
        let mut backup = DaemonConfig::new(DaemonRole::Backup);
        backup.port = pb;
        b.start_daemon(backup).unwrap();
        assert!(b.wait_ready(Duration::from_secs(10)), "resync from A");
        let key = FlowKey::new(
            L4Proto::Tcp,
            "203.0.113.7".parse().unwrap(),
            40000,
            "192.0.2.10".parse().unwrap(),
            80,
        );
        events
            .send(Event::Opened(ConnEvent {
                key,
                real_id: crate::service::RealId(0),
                real: "198.51.100.2:80".parse().unwrap(),
                method: ForwardMethod::Nat,
                state: ConnState::Established,
                timeout_ms: 900_000,
                template: None,
            }))
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while conns_b.lookup_original(&key, Millis(0)).is_none() {
            assert!(Instant::now() < until, "the connection never reached B");
            std::thread::sleep(Duration::from_millis(5));
        }
        let m = b.metrics();
        assert!(m.received_datagrams > 0 && m.installed >= 1, "{m:?}");
        assert_eq!(m.rejected.iter().sum::<u64>(), 0, "{m:?}");
        b.stop_daemon(DaemonRole::Backup).unwrap();
        assert_eq!(
            b.stop_daemon(DaemonRole::Backup).unwrap_err(),
            "No daemon is running"
        );
        assert!(
            conns_b.lookup_original(&key, Millis(0)).is_some(),
            "stopping keeps the table"
        );
        assert!(b.daemons().is_empty());
        a.stop();
        b.stop();
    }

    #[test]
    fn no_daemon_starts_without_a_key_unless_insecure() {
        let base = 30_000 + (std::process::id() % 20_000) as u16;
        let (mut keyless, _, _) = director(base, true);
        let mut d = DaemonConfig::new(DaemonRole::Master);
        d.port = base + 1;
        keyless.start_daemon(d.clone()).unwrap();
        let conns = Arc::new(ConnTable::new(
            1024,
            Timeouts::default(),
            Arc::new(RealLoads::new(8)),
        ));
        let (_tx, rx) = bounded(8);
        let mut refused = SyncHandle::spawn(
            SyncOptions::default(),
            rx,
            ConnSync {
                conns,
                services: Arc::new(ArcSwap::from_pointee(services())),
                health: None,
                peer_services: None,
            },
        )
        .unwrap();
        let e = refused
            .start_daemon(DaemonConfig::new(DaemonRole::Backup))
            .unwrap_err();
        assert!(e.contains("--sync-key-file"), "{e}");
        d.maxlen = Some(100);
        d.role = DaemonRole::Backup;
        let e = keyless.start_daemon(d).unwrap_err();
        assert!(e.contains("--sync-maxlen must be at least"), "{e}");
    }
}
