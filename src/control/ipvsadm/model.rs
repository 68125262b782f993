//! The service model the control plane owns and ipvsadm edits.
//!
//! Semantics and error wording are IPVS's (`ip_vs_ctl.c` through libipvs's
//! `ipvs_strerror`). A failed edit changes nothing.
//!
//! # Real-server ids
//! Every real server gets a [`RealId`] below the `RealLoads` capacity given
//! to [`ServiceModel::new`]. Fresh ids are handed out first (0, 1, 2, ...);
//! only when every id has been used once are freed ids reused, oldest freed
//! first, and only those the caller's `reusable` predicate accepts (the
//! daemon passes "no connection or template still counts against it", read
//! from the `RealLoads`). An id is never reused while the model itself
//! still holds it. With none left, the add fails with IPVS's ENOMEM text,
//! "Memory allocation problem". A connection entry holds 16-bit ids, so
//! there are at most [`MAX_IDS`] real servers and as many services; the
//! director's limits ([`crate::limits`], which the XDP maps are sized by)
//! are within that, and an edit past them is refused with ENOMEM's text and
//! the limit ("... at most 65536 virtual services").
//!
//! A real server added back to the service it was deleted from (same
//! address and port) gets its old id back while that id is still free, as
//! IPVS takes a destination back from its trash: the connections it had,
//! which the director keeps unless `expire_nodest_conn` is set, then
//! resume on it.
//!
//! Services keep the order they were added; deleting one moves those after
//! it down one `ServiceIndex` in the next snapshot. Code that keeps a
//! `ServiceIndex` across snapshots should find the service through the
//! real server instead (`ServiceTable::real(RealId)`), whose id is stable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::save::ScriptLine;
use super::{Command, Edit, RealSpec, ServiceSpec};
use crate::limits::{MAX_REALS, MAX_SERVICES};
use crate::service::{RealId, RealServer, ServiceKey, ServiceTable, VirtualService};

/// Real-server ids and services a connection entry can name (16 bits).
pub const MAX_IDS: usize = 1 << 16;
const _: () = assert!(MAX_SERVICES <= MAX_IDS && MAX_REALS <= MAX_IDS);

/// Why an edit was refused: the kernel's errno, as ipvsadm words it.
/// ipvsadm exits 255 for each ([`super::EXIT_FAILED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// EEXIST on `-A`.
    ServiceExists,
    /// ESRCH on `-E`, `-D`, `-Z`.
    NoSuchService,
    /// ESRCH on `-a`, `-e`, `-d`.
    ServiceNotDefined,
    /// EEXIST on `-a`.
    DestExists,
    /// ENOENT on `-e`, `-d`.
    NoSuchDest,
    /// ENOMEM: no real-server id left.
    NoMemory,
    /// ENOMEM: [`MAX_SERVICES`] services already.
    TooManyServices,
    /// ENOMEM: as many real servers as the model has ids for.
    TooManyReals(u32),
    /// ERANGE: `-y` above `-x`.
    ThresholdRange,
    /// EAFNOSUPPORT: a real server of the other address family (IPVS allows
    /// it for tunnels; xvs does not encapsulate across families).
    AddressFamily,
    /// EINVAL: a real-server address that is not unicast.
    NotUnicast,
}

impl ApplyError {
    pub fn message(self) -> &'static str {
        match self {
            ApplyError::ServiceExists => "Service already exists",
            ApplyError::NoSuchService => "No such service",
            ApplyError::ServiceNotDefined => "Service not defined",
            ApplyError::DestExists => "Destination already exists",
            ApplyError::NoSuchDest => "No such destination",
            ApplyError::NoMemory | ApplyError::TooManyServices | ApplyError::TooManyReals(_) => {
                "Memory allocation problem"
            }
            ApplyError::ThresholdRange => "Numerical result out of range",
            ApplyError::AddressFamily => "Operation not supported with specified address family",
            ApplyError::NotUnicast => {
                "Invalid operation.  Possibly wrong module version, address not unicast, ..."
            }
        }
    }

    pub fn exit_code(self) -> u8 {
        super::EXIT_FAILED
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())?;
        match self {
            ApplyError::TooManyServices => {
                write!(f, ": xvs holds at most {MAX_SERVICES} virtual services")
            }
            ApplyError::TooManyReals(n) => write!(f, ": xvs holds at most {n} real servers"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ApplyError {}

/// What a successful edit did that the daemon must act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Real servers that are gone: expire their connections
    /// (`ConnTable::expire_reals`, IPVS's `expire_nodest_conn`).
    pub removed: Vec<RealId>,
}

/// A restore that failed: the line and why. Nothing was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreError {
    pub line: usize,
    pub error: ApplyError,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for RestoreError {}

/// What a successful restore leaves for the daemon to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// As [`Applied::removed`], for the whole script.
    pub removed: Vec<RealId>,
    /// The script's `-Z` and `--set` commands, in order, which act on
    /// counters and timeouts outside the model.
    pub deferred: Vec<Command>,
}

/// The virtual services, in the order they were added. Every edit finds
/// what it changes through an index, so a restore is linear in its lines.
#[derive(Clone, Debug)]
pub struct ServiceModel {
    services: Vec<VirtualService>,
    /// Service key → its place in `services`.
    index: HashMap<ServiceKey, usize>,
    /// Every (service, real-server endpoint) the model holds.
    endpoints: HashSet<(ServiceKey, SocketAddr)>,
    capacity: u32,
    /// Ids below this have been handed out at least once.
    fresh: u32,
    /// Freed ids, oldest first. An entry counts only while `trash` still
    /// maps its service and endpoint to its id: one taken back (or reused)
    /// is dropped from the map and skipped here, and the queue is compacted
    /// when such stale entries pile up.
    freed: VecDeque<Freed>,
    /// (service, endpoint) of a deleted real server → its id, IPVS's trash.
    trash: HashMap<(ServiceKey, SocketAddr), RealId>,
}

/// A deleted real server's id, and whom it named.
#[derive(Clone, Copy, Debug)]
struct Freed {
    id: RealId,
    service: ServiceKey,
    endpoint: SocketAddr,
}

impl ServiceModel {
    /// An empty model for a `RealLoads` of `real_capacity` slots (at most
    /// [`MAX_IDS`] are used).
    pub fn new(real_capacity: usize) -> ServiceModel {
        ServiceModel {
            services: Vec::new(),
            index: HashMap::new(),
            endpoints: HashSet::new(),
            capacity: real_capacity.min(MAX_IDS) as u32,
            fresh: 0,
            freed: VecDeque::new(),
            trash: HashMap::new(),
        }
    }

    pub fn services(&self) -> &[VirtualService] {
        &self.services
    }

    /// The snapshot to publish to workers.
    pub fn snapshot(&self) -> ServiceTable {
        ServiceTable::new(self.services.clone())
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&VirtualService> {
        self.services.get(*self.index.get(key)?)
    }

    /// Applies one edit, reusing any freed id.
    pub fn apply(&mut self, edit: &Edit) -> Result<Applied, ApplyError> {
        self.apply_with(edit, &|_| true)
    }

    /// Applies one edit; a freed [`RealId`] is reused only if `reusable`
    /// says so.
    pub fn apply_with(
        &mut self,
        edit: &Edit,
        reusable: &dyn Fn(RealId) -> bool,
    ) -> Result<Applied, ApplyError> {
        let mut applied = Applied::default();
        let mut freed = Vec::new();
        match edit {
            Edit::AddService(spec) => {
                if self.service(&spec.key).is_some() {
                    return Err(ApplyError::ServiceExists);
                }
                if self.services.len() >= MAX_SERVICES {
                    return Err(ApplyError::TooManyServices);
                }
                self.index.insert(spec.key, self.services.len());
                self.services.push(VirtualService {
                    key: spec.key,
                    scheduler: spec.scheduler,
                    sched_flags: spec.sched_flags,
                    persistence: spec.persistence,
                    reals: Vec::new(),
                });
            }
            Edit::EditService(spec) => {
                let s = self.service_mut(&spec.key, ApplyError::NoSuchService)?;
                set_service(s, spec);
            }
            Edit::DeleteService(key) => {
                let i = *self.index.get(key).ok_or(ApplyError::NoSuchService)?;
                let s = self.services.remove(i);
                self.index.remove(key);
                for later in &self.services[i..] {
                    if let Some(at) = self.index.get_mut(&later.key) {
                        *at -= 1;
                    }
                }
                for r in &s.reals {
                    self.endpoints.remove(&(s.key, endpoint(r)));
                }
                freed.extend(s.reals.iter().map(|r| Freed::of(&s.key, r)));
            }
            Edit::Clear => {
                self.index.clear();
                self.endpoints.clear();
                freed = self
                    .services
                    .drain(..)
                    .flat_map(|s| {
                        s.reals
                            .iter()
                            .map(|r| Freed::of(&s.key, r))
                            .collect::<Vec<_>>()
                    })
                    .collect();
            }
            Edit::AddReal(key, spec) => {
                let family = self
                    .service(key)
                    .ok_or(ApplyError::ServiceNotDefined)?
                    .key
                    .addr
                    .is_ipv4();
                check_real(spec, family)?;
                if self.endpoints.contains(&(*key, spec.endpoint())) {
                    return Err(ApplyError::DestExists);
                }
                // Back from the trash if it was here before, else a new id.
                let id = match self.trash.remove(&(*key, spec.endpoint())) {
                    Some(id) => id,
                    None => self.allocate(reusable)?,
                };
                self.endpoints.insert((*key, spec.endpoint()));
                let s = self.service_mut(key, ApplyError::ServiceNotDefined)?;
                s.reals.push(RealServer {
                    id,
                    addr: spec.addr,
                    port: spec.port,
                    method: spec.method,
                    weight: spec.weight,
                    upper_threshold: spec.upper_threshold,
                    lower_threshold: spec.lower_threshold,
                });
            }
            Edit::EditReal(key, spec) => {
                let s = self.service_mut(key, ApplyError::ServiceNotDefined)?;
                check_real(spec, s.key.addr.is_ipv4())?;
                let r = s
                    .reals
                    .iter_mut()
                    .find(|r| endpoint(r) == spec.endpoint())
                    .ok_or(ApplyError::NoSuchDest)?;
                r.method = spec.method;
                r.weight = spec.weight;
                r.upper_threshold = spec.upper_threshold;
                r.lower_threshold = spec.lower_threshold;
            }
            Edit::DeleteReal(key, at) => {
                let s = self.service_mut(key, ApplyError::ServiceNotDefined)?;
                let i = s
                    .reals
                    .iter()
                    .position(|r| endpoint(r) == *at)
                    .ok_or(ApplyError::NoSuchDest)?;
                let r = s.reals.remove(i);
                self.endpoints.remove(&(*key, *at));
                freed.push(Freed::of(key, &r));
            }
        }
        applied.removed = freed.iter().map(|f| f.id).collect();
        for f in &freed {
            self.trash.insert((f.service, f.endpoint), f.id);
        }
        self.freed.extend(freed);
        if self.freed.len() > 2 * self.trash.len() + 64 {
            let trash = &self.trash;
            self.freed.retain(|f| f.in_trash(trash));
        }
        Ok(applied)
    }

    /// `-Z`: whether the service to zero exists (the counters themselves
    /// live with the workers).
    pub fn check_zero(&self, key: Option<&ServiceKey>) -> Result<(), ApplyError> {
        match key {
            Some(k) if self.service(k).is_none() => Err(ApplyError::NoSuchService),
            _ => Ok(()),
        }
    }

    /// `-R`: applies a whole script or nothing. `-Z` and `--set` lines are
    /// checked in sequence and handed back for the daemon to carry out.
    pub fn restore(
        &mut self,
        script: &[ScriptLine],
        reusable: &dyn Fn(RealId) -> bool,
    ) -> Result<RestoreOutcome, RestoreError> {
        let mut next = self.clone();
        let mut outcome = RestoreOutcome::default();
        for line in script {
            let fail = |error| RestoreError {
                line: line.line,
                error,
            };
            match &line.command {
                Command::Edit(edit) => {
                    let applied = next.apply_with(edit, reusable).map_err(fail)?;
                    outcome.removed.extend(applied.removed);
                }
                Command::Zero(key) => {
                    next.check_zero(key.as_ref()).map_err(fail)?;
                    outcome.deferred.push(line.command.clone());
                }
                other => outcome.deferred.push(other.clone()),
            }
        }
        *self = next;
        Ok(outcome)
    }

    fn service_mut(
        &mut self,
        key: &ServiceKey,
        missing: ApplyError,
    ) -> Result<&mut VirtualService, ApplyError> {
        let i = *self.index.get(key).ok_or(missing)?;
        self.services.get_mut(i).ok_or(missing)
    }

    fn allocate(&mut self, reusable: &dyn Fn(RealId) -> bool) -> Result<RealId, ApplyError> {
        if self.fresh < self.capacity {
            self.fresh += 1;
            return Ok(RealId(self.fresh - 1));
        }
        // Every real server the model holds has one entry in `endpoints`.
        if self.endpoints.len() >= self.capacity as usize {
            return Err(ApplyError::TooManyReals(self.capacity));
        }
        let trash = &self.trash;
        let i = self
            .freed
            .iter()
            .position(|f| f.in_trash(trash) && reusable(f.id))
            .ok_or(ApplyError::NoMemory)?;
        let f = self.freed.remove(i).ok_or(ApplyError::NoMemory)?;
        // Reused for someone else: the old server can no longer come back to it.
        self.trash.remove(&(f.service, f.endpoint));
        Ok(f.id)
    }
}

impl Freed {
    fn of(service: &ServiceKey, r: &RealServer) -> Freed {
        Freed {
            id: r.id,
            service: *service,
            endpoint: endpoint(r),
        }
    }

    /// Whether the id is still free: not taken back, not reused.
    fn in_trash(&self, trash: &HashMap<(ServiceKey, SocketAddr), RealId>) -> bool {
        trash.get(&(self.service, self.endpoint)) == Some(&self.id)
    }
}

fn set_service(s: &mut VirtualService, spec: &ServiceSpec) {
    s.scheduler = spec.scheduler;
    s.sched_flags = spec.sched_flags;
    s.persistence = spec.persistence;
}

fn endpoint(r: &RealServer) -> SocketAddr {
    SocketAddr::new(r.addr, r.port)
}

/// The kernel's checks on a destination (`ip_vs_add_dest`, `ip_vs_edit_dest`).
fn check_real(spec: &RealSpec, service_is_v4: bool) -> Result<(), ApplyError> {
    if spec.addr.is_ipv4() != service_is_v4 {
        // ipvsadm lets only tunnels get this far; IPVS would take them.
        return Err(ApplyError::AddressFamily);
    }
    let unicast = match spec.addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    };
    if !unicast {
        return Err(ApplyError::NotUnicast);
    }
    if spec.lower_threshold > spec.upper_threshold {
        return Err(ApplyError::ThresholdRange);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::args::parse_line;
    use super::super::Services;
    use super::*;

    fn edit(line: &str) -> Edit {
        match parse_line(line) {
            Ok(Command::Edit(e)) => e,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn run(m: &mut ServiceModel, line: &str) -> Result<Applied, ApplyError> {
        m.apply(&edit(line))
    }

    #[test]
    fn services_and_reals_with_ipvs_errors() {
        let mut m = ServiceModel::new(16);
        run(&mut m, "-A -t 192.0.2.1:80 -s rr").unwrap();
        assert_eq!(
            run(&mut m, "-A -t 192.0.2.1:80"),
            Err(ApplyError::ServiceExists)
        );
        assert_eq!(
            run(&mut m, "-E -t 192.0.2.1:81"),
            Err(ApplyError::NoSuchService)
        );
        assert_eq!(
            run(&mut m, "-D -u 192.0.2.1:80"),
            Err(ApplyError::NoSuchService)
        );
        assert_eq!(
            run(&mut m, "-a -t 192.0.2.1:81 -r 198.51.100.1"),
            Err(ApplyError::ServiceNotDefined)
        );
        run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
        assert_eq!(
            run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.1 -w 5"),
            Err(ApplyError::DestExists)
        );
        assert_eq!(
            run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.2"),
            Err(ApplyError::NoSuchDest)
        );
        assert_eq!(
            run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.2"),
            Err(ApplyError::NoSuchDest)
        );
        assert_eq!(
            run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.3 -y 10"),
            Err(ApplyError::ThresholdRange)
        );
        assert_eq!(
            run(&mut m, "-a -t 192.0.2.1:80 -r 2001:db8::1 -i"),
            Err(ApplyError::AddressFamily)
        );
        assert_eq!(
            run(&mut m, "-a -t 192.0.2.1:80 -r 224.0.0.1"),
            Err(ApplyError::NotUnicast)
        );
        // Weight 0 quiesces: the server stays, with its id.
        run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1 -w 0").unwrap();
        let s = &m.services()[0];
        assert_eq!((s.reals[0].id, s.reals[0].weight), (RealId(0), 0));
        // -e without -w goes back to weight 1 and -g, as IPVS.
        run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1 -m -w 7").unwrap();
        assert_eq!(
            m.services()[0].reals[0].method,
            crate::service::ForwardMethod::Nat
        );
        run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
        let r = &m.services()[0].reals[0];
        assert_eq!((r.weight, r.method), (1, crate::service::ForwardMethod::Dr));
        run(&mut m, "-e -t 192.0.2.1:80 -r 198.51.100.1 -w 0").unwrap();
        // -E without -s goes back to wlc, as IPVS.
        run(&mut m, "-E -t 192.0.2.1:80 -p").unwrap();
        let s = &m.services()[0];
        assert_eq!(s.scheduler, crate::service::SchedulerKind::Wlc);
        assert_eq!(s.persistence.map(|p| p.timeout_secs), Some(360));
        assert_eq!(m.snapshot().services().len(), 1);
        assert_eq!(m.check_zero(None), Ok(()));
        assert_eq!(
            m.check_zero(Some(&ServiceKey { port: 9, ..s.key })),
            Err(ApplyError::NoSuchService)
        );
        let removed = run(&mut m, "-D -t 192.0.2.1:80").unwrap().removed;
        assert_eq!(removed, vec![RealId(0)]);
        assert!(m.services().is_empty());
    }

    #[test]
    fn a_real_server_added_back_gets_its_old_id() {
        let mut m = ServiceModel::new(100);
        run(&mut m, "-A -t 192.0.2.1:80").unwrap();
        run(&mut m, "-A -t 192.0.2.1:81").unwrap();
        for i in 1..=2 {
            run(&mut m, &format!("-a -t 192.0.2.1:80 -r 198.51.100.{i} -m")).unwrap();
        }
        let removed = run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
        assert_eq!(removed.removed, vec![RealId(0)]);
        // Another service or port is someone else: a fresh id.
        run(&mut m, "-a -t 192.0.2.1:81 -r 198.51.100.1 -m").unwrap();
        run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.1:8080 -m").unwrap();
        let ids = |m: &ServiceModel, i: usize| -> Vec<u32> {
            m.services()[i].reals.iter().map(|r| r.id.0).collect()
        };
        assert_eq!((ids(&m, 0), ids(&m, 1)), (vec![1, 3], vec![2]));
        // The same service and endpoint: id 0 again, even though the
        // daemon's predicate would refuse it (its connections are why).
        m.apply_with(&edit("-a -t 192.0.2.1:80 -r 198.51.100.1 -m"), &|_| false)
            .unwrap();
        assert_eq!(ids(&m, 0), vec![1, 3, 0]);
        // A deleted service's servers come back the same way.
        run(&mut m, "-D -t 192.0.2.1:81").unwrap();
        run(&mut m, "-A -t 192.0.2.1:81").unwrap();
        run(&mut m, "-a -t 192.0.2.1:81 -r 198.51.100.1 -m").unwrap();
        assert_eq!(ids(&m, 1), vec![2]);
    }

    #[test]
    fn dest_ids_fresh_first_then_oldest_freed_that_is_reusable() {
        let mut m = ServiceModel::new(3);
        run(&mut m, "-A -t 192.0.2.1:80").unwrap();
        for i in 1..=3 {
            run(&mut m, &format!("-a -t 192.0.2.1:80 -r 198.51.100.{i}")).unwrap();
        }
        let full = run(&mut m, "-a -t 192.0.2.1:80 -r 198.51.100.4");
        assert_eq!(full, Err(ApplyError::TooManyReals(3)));
        assert_eq!(
            full.unwrap_err().to_string(),
            "Memory allocation problem: xvs holds at most 3 real servers"
        );
        run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.1").unwrap();
        run(&mut m, "-d -t 192.0.2.1:80 -r 198.51.100.2").unwrap();
        // Id 0 still has connections: id 1 is taken instead.
        let busy = |id: RealId| id != RealId(0);
        m.apply_with(&edit("-a -t 192.0.2.1:80 -r 198.51.100.5"), &busy)
            .unwrap();
        let ids: Vec<u32> = m.services()[0].reals.iter().map(|r| r.id.0).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!(
            m.apply_with(&edit("-a -t 192.0.2.1:80 -r 198.51.100.6"), &busy),
            Err(ApplyError::NoMemory)
        );
        // Clear frees everything.
        let mut removed = run(&mut m, "-C").unwrap().removed;
        removed.sort();
        assert_eq!(removed, vec![RealId(1), RealId(2)]);
    }

    /// One service past [`MAX_SERVICES`] (what the XDP `services` map
    /// holds) is refused with the limit named, and the restore changes
    /// nothing.
    #[test]
    fn services_past_the_limit_are_refused_by_name() {
        let text: String = (0..MAX_SERVICES + 1)
            .map(|i| format!("-A -u 192.0.2.{}:{}\n", i % 256, i / 256 + 1))
            .collect();
        let script = super::super::parse_restore(&text, &Services::builtin()).unwrap();
        let mut m = ServiceModel::new(8);
        run(&mut m, "-A -t 192.0.2.1:80").unwrap();
        // Up to the limit: taken.
        m.restore(&script[..MAX_SERVICES - 1], &|_| true).unwrap();
        assert_eq!(m.services().len(), MAX_SERVICES);
        // Past it: refused, by line, naming the limit; nothing changes.
        let err = m
            .restore(&script[MAX_SERVICES - 1..], &|_| true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "line {MAX_SERVICES}: Memory allocation problem: xvs holds at most 65536 \
                 virtual services"
            )
        );
        assert_eq!(m.services().len(), MAX_SERVICES);
        assert_eq!(
            run(&mut m, "-A -t 192.0.2.1:81"),
            Err(ApplyError::TooManyServices)
        );
    }

    #[test]
    fn restore_is_all_or_nothing() {
        let mut m = ServiceModel::new(8);
        run(&mut m, "-A -t 192.0.2.1:80").unwrap();
        let script = super::super::parse_restore(
            "-A -t 192.0.2.2:80\n-a -t 192.0.2.2:80 -r 198.51.100.1\n--set 1 2 3\n-A -t 192.0.2.1:80\n",
            &Services::builtin(),
        )
        .unwrap();
        let err = m.restore(&script, &|_| true).unwrap_err();
        assert_eq!(err.to_string(), "line 4: Service already exists");
        assert_eq!(m.services().len(), 1);
        let out = m.restore(&script[..3], &|_| true).unwrap();
        assert_eq!(m.services().len(), 2);
        assert_eq!(
            out.deferred,
            vec![Command::SetTimeouts {
                tcp: 1,
                tcpfin: 2,
                udp: 3
            }]
        );
    }
}
