//! The editable service model: virtual services, their real servers, the
//! real servers' ids and health, and the edits that change them.
//!
//! The daemon owns one [`ServiceModel`]; front ends (ipvsadm, the TOML
//! config, later health checks and sync) only produce [`Edit`]s. Semantics
//! and error wording are IPVS's (`ip_vs_ctl.c` through libipvs's
//! `ipvs_strerror`), so ipvsadm prints a refused edit's [`ApplyError`] as it
//! is. A failed edit changes nothing; a [`Transaction`] applies several
//! edits all or nothing (ipvsadm's `-R`, a config file's services).
//!
//! # Health
//! A real server's [`Health`] is kept apart from its weight: the weight is
//! what the operator set (`-L`, `-S` and metrics show it), the health is
//! whether checks let it take connections. [`Edit::SetHealth`] marks one
//! down or up; [`ServiceModel::snapshot`] gives a down server weight 0, so
//! it gets no new connections while its established ones go on. `-e`
//! keeps the health; a real server deleted and added again starts up.
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

use super::{
    ForwardMethod, Persistence, RealId, RealServer, SchedFlags, SchedulerKind, ServiceKey,
    ServiceTable, VirtualService,
};
use crate::limits::{MAX_REALS, MAX_SERVICES};

/// Real-server ids and services a connection entry can name (16 bits).
pub const MAX_IDS: usize = 1 << 16;
const _: () = assert!(MAX_SERVICES <= MAX_IDS && MAX_REALS <= MAX_IDS);

/// A change to the service model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    AddService(ServiceSpec),
    /// Replaces scheduler, flags and persistence: what the command did not
    /// give reverts to ipvsadm's default (`wlc`, not persistent), as IPVS.
    EditService(ServiceSpec),
    DeleteService(ServiceKey),
    /// `-C`: every service goes.
    Clear,
    AddReal(ServiceKey, RealSpec),
    /// Replaces method, weight and thresholds (defaults: `-g`, weight 1, no
    /// thresholds), as IPVS; the health stays as it was.
    EditReal(ServiceKey, RealSpec),
    DeleteReal(ServiceKey, SocketAddr),
    /// Marks a real server (of this service, at this address and port) up
    /// or down, leaving its weight as the operator set it.
    SetHealth(ServiceKey, SocketAddr, Health),
}

/// A virtual service as `-A`/`-E` describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    pub scheduler: SchedulerKind,
    pub sched_flags: SchedFlags,
    pub persistence: Option<Persistence>,
}

/// What a service does when its real servers fail their checks
/// (keepalived's `inhibit_on_failure`, `sorry_server`, `quorum`,
/// `hysteresis`). The default quiesces a down server and has no sorry
/// server; quorum 1 means "at least one real server up".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServicePolicy {
    pub on_failure: OnFailure,
    /// Used only while the service is below quorum (no real server up,
    /// with the default quorum).
    pub sorry: Option<RealSpec>,
    /// The sum of the weights of the real servers up that the service
    /// needs; below `quorum - hysteresis` it loses quorum, at
    /// `quorum + hysteresis` it has it again.
    pub quorum: u32,
    pub hysteresis: u32,
}

impl Default for ServicePolicy {
    fn default() -> ServicePolicy {
        ServicePolicy {
            on_failure: OnFailure::Quiesce,
            sorry: None,
            quorum: 1,
            hysteresis: 0,
        }
    }
}

/// What becomes of a real server that is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Weight 0: no new connections, established ones go on (keepalived
    /// `inhibit_on_failure`).
    #[default]
    Quiesce,
    /// Out of the service until it is up again (keepalived's default).
    Remove,
}

/// A real server as `-a`/`-e` describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealSpec {
    pub addr: IpAddr,
    /// For `-g` and `-i` always the service's port (ipvsadm forces it).
    pub port: u16,
    pub method: ForwardMethod,
    pub weight: u32,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
}

impl RealSpec {
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// Whether health checks let a real server take new connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Health {
    /// Schedulable with its configured weight: every real server starts so.
    #[default]
    Up,
    /// Weight 0 in the snapshot: no new connections, established ones go on.
    Down,
}

/// Why an edit was refused: the kernel's errno, as ipvsadm words it (ipvsadm
/// prints the message as it is and exits 255 for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// EEXIST on `-A`.
    ServiceExists,
    /// ESRCH on `-E`, `-D`, `-Z`.
    NoSuchService,
    /// ESRCH on `-a`, `-e`, `-d`.
    ServiceNotDefined,
    /// EEXIST on `-a` (IPVS's messages say "destination" for a real
    /// server).
    RealExists,
    /// ENOENT on `-e`, `-d`.
    NoSuchReal,
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
            ApplyError::RealExists => "Destination already exists",
            ApplyError::NoSuchReal => "No such destination",
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
    /// Real servers health checks hold down; every other one is up.
    down: HashSet<RealId>,
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
            down: HashSet::new(),
        }
    }

    pub fn services(&self) -> &[VirtualService] {
        &self.services
    }

    /// The snapshot to publish to workers: the services as configured,
    /// except that a real server that is down has weight 0.
    pub fn snapshot(&self) -> ServiceTable {
        let mut services = self.services.clone();
        if !self.down.is_empty() {
            for r in services.iter_mut().flat_map(|s| s.reals.iter_mut()) {
                if self.down.contains(&r.id) {
                    r.weight = 0;
                }
            }
        }
        ServiceTable::new(services)
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&VirtualService> {
        self.services.get(*self.index.get(key)?)
    }

    /// Real server `id`'s health; [`Health::Up`] for an id the model does
    /// not hold.
    pub fn health(&self, id: RealId) -> Health {
        if self.down.contains(&id) {
            Health::Down
        } else {
            Health::Up
        }
    }

    /// Starts a [`Transaction`]: edits applied to it take effect together
    /// when it is committed, or not at all.
    pub fn transaction(&mut self) -> Transaction<'_> {
        Transaction {
            next: self.clone(),
            applied: Applied::default(),
            model: self,
        }
    }

    /// Applies `edits` in order, all or nothing: the first refused one
    /// leaves the model as it was and is named by its place in the list.
    pub fn apply_all<'e>(
        &mut self,
        edits: impl IntoIterator<Item = &'e Edit>,
        reusable: &dyn Fn(RealId) -> bool,
    ) -> Result<Applied, BatchError> {
        let mut tx = self.transaction();
        for (index, edit) in edits.into_iter().enumerate() {
            tx.apply_with(edit, reusable)
                .map_err(|error| BatchError { index, error })?;
        }
        Ok(tx.commit())
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
                    return Err(ApplyError::RealExists);
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
                    .ok_or(ApplyError::NoSuchReal)?;
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
                    .ok_or(ApplyError::NoSuchReal)?;
                let r = s.reals.remove(i);
                self.endpoints.remove(&(*key, *at));
                freed.push(Freed::of(key, &r));
            }
            Edit::SetHealth(key, at, health) => {
                let s = self.service(key).ok_or(ApplyError::ServiceNotDefined)?;
                let id = s
                    .reals
                    .iter()
                    .find(|r| endpoint(r) == *at)
                    .ok_or(ApplyError::NoSuchReal)?
                    .id;
                match health {
                    Health::Up => self.down.remove(&id),
                    Health::Down => self.down.insert(id),
                };
            }
        }
        applied.removed = freed.iter().map(|f| f.id).collect();
        for f in &freed {
            // Whoever comes back to this id starts up.
            self.down.remove(&f.id);
            self.trash.insert((f.service, f.endpoint), f.id);
        }
        self.freed.extend(freed);
        if self.freed.len() > 2 * self.trash.len() + 64 {
            let trash = &self.trash;
            self.freed.retain(|f| f.in_trash(trash));
        }
        Ok(applied)
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

/// Edits applied together: nothing reaches the model until
/// [`Transaction::commit`]; dropped uncommitted, it changes nothing.
#[derive(Debug)]
pub struct Transaction<'m> {
    model: &'m mut ServiceModel,
    /// The model as it will be: the original with every edit so far.
    next: ServiceModel,
    applied: Applied,
}

impl Transaction<'_> {
    /// Applies one more edit to the transaction; a refused one changes
    /// nothing in it, and the caller decides whether to go on or drop it.
    pub fn apply_with(
        &mut self,
        edit: &Edit,
        reusable: &dyn Fn(RealId) -> bool,
    ) -> Result<(), ApplyError> {
        let applied = self.next.apply_with(edit, reusable)?;
        self.applied.removed.extend(applied.removed);
        Ok(())
    }

    /// The model with the edits so far, e.g. to check what a later step
    /// names.
    pub fn model(&self) -> &ServiceModel {
        &self.next
    }

    /// Makes every edit so far the model's and says what they did, as
    /// [`Applied`] for them all.
    pub fn commit(self) -> Applied {
        *self.model = self.next;
        self.applied
    }
}

/// A list of edits refused: which one (0-based) and why. None was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchError {
    pub index: usize,
    pub error: ApplyError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "edit {}: {}", self.index + 1, self.error)
    }
}

impl std::error::Error for BatchError {}

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
    use super::*;
    use crate::packet::L4Proto;

    /// The edits a front end other than ipvsadm would make: built as
    /// values, not parsed from a command line.
    fn key(port: u16) -> ServiceKey {
        ServiceKey {
            proto: L4Proto::Tcp,
            addr: "192.0.2.1".parse().unwrap(),
            port,
        }
    }

    fn add_service(port: u16) -> Edit {
        Edit::AddService(ServiceSpec {
            key: key(port),
            scheduler: SchedulerKind::Rr,
            sched_flags: SchedFlags::default(),
            persistence: None,
        })
    }

    fn real(host: u8, weight: u32) -> RealSpec {
        RealSpec {
            addr: IpAddr::from([198, 51, 100, host]),
            port: 80,
            method: ForwardMethod::Nat,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn at(host: u8) -> SocketAddr {
        real(host, 1).endpoint()
    }

    fn weights(t: &ServiceTable) -> Vec<u32> {
        t.services()[0].reals.iter().map(|r| r.weight).collect()
    }

    #[test]
    fn edits_as_values_with_ipvs_errors() {
        let mut m = ServiceModel::new(8);
        m.apply(&add_service(80)).unwrap();
        m.apply(&Edit::AddReal(key(80), real(1, 3))).unwrap();
        let refused = [
            (add_service(80), ApplyError::ServiceExists),
            (Edit::DeleteService(key(81)), ApplyError::NoSuchService),
            (
                Edit::AddReal(key(81), real(2, 1)),
                ApplyError::ServiceNotDefined,
            ),
            (Edit::AddReal(key(80), real(1, 5)), ApplyError::RealExists),
            (Edit::EditReal(key(80), real(2, 1)), ApplyError::NoSuchReal),
            (Edit::DeleteReal(key(80), at(2)), ApplyError::NoSuchReal),
            (
                Edit::SetHealth(key(81), at(1), Health::Down),
                ApplyError::ServiceNotDefined,
            ),
            (
                Edit::SetHealth(key(80), at(2), Health::Down),
                ApplyError::NoSuchReal,
            ),
        ];
        for (edit, error) in refused {
            assert_eq!(m.apply(&edit), Err(error), "{edit:?}");
        }
        assert_eq!(
            ApplyError::RealExists.to_string(),
            "Destination already exists"
        );
        assert_eq!(weights(&m.snapshot()), [3]);
    }

    /// A list of edits goes in whole or not at all, and the one refused is
    /// named by its place.
    #[test]
    fn apply_all_is_all_or_nothing() {
        let mut m = ServiceModel::new(8);
        let edits = [
            add_service(80),
            Edit::AddReal(key(80), real(1, 1)),
            Edit::AddReal(key(80), real(2, 1)),
            Edit::AddReal(key(80), real(1, 1)),
        ];
        let e = m.apply_all(&edits, &|_| true).unwrap_err();
        assert_eq!(
            e,
            BatchError {
                index: 3,
                error: ApplyError::RealExists
            }
        );
        assert_eq!(e.to_string(), "edit 4: Destination already exists");
        assert!(m.services().is_empty());
        m.apply_all(&edits[..3], &|_| true).unwrap();
        assert_eq!(m.services()[0].reals.len(), 2);
        // Removed ids are gathered over the whole list.
        let removed = m
            .apply_all(
                &[
                    Edit::DeleteReal(key(80), at(1)),
                    Edit::DeleteService(key(80)),
                ],
                &|_| true,
            )
            .unwrap()
            .removed;
        assert_eq!(removed, [RealId(0), RealId(1)]);
        // A transaction dropped uncommitted changes nothing.
        let mut tx = m.transaction();
        tx.apply_with(&add_service(80), &|_| true).unwrap();
        assert_eq!(tx.model().services().len(), 1);
        drop(tx);
        assert!(m.services().is_empty());
    }

    /// A real server down keeps the weight the operator gave it in the
    /// model (what `-L`, `-S` and metrics show) and schedules with weight
    /// 0 in the snapshot; up again, it schedules with its weight.
    #[test]
    fn health_is_kept_apart_from_the_weight() {
        let mut m = ServiceModel::new(8);
        m.apply(&add_service(80)).unwrap();
        m.apply(&Edit::AddReal(key(80), real(1, 3))).unwrap();
        m.apply(&Edit::AddReal(key(80), real(2, 5))).unwrap();
        assert_eq!(m.health(RealId(0)), Health::Up);
        m.apply(&Edit::SetHealth(key(80), at(1), Health::Down))
            .unwrap();
        assert_eq!(m.health(RealId(0)), Health::Down);
        assert_eq!(m.services()[0].reals[0].weight, 3);
        assert_eq!(weights(&m.snapshot()), [0, 5]);
        // Marking it down twice is no error and changes nothing.
        m.apply(&Edit::SetHealth(key(80), at(1), Health::Down))
            .unwrap();
        // -e changes the weight, not the health.
        m.apply(&Edit::EditReal(key(80), real(1, 7))).unwrap();
        assert_eq!(m.services()[0].reals[0].weight, 7);
        assert_eq!(weights(&m.snapshot()), [0, 5]);
        m.apply(&Edit::SetHealth(key(80), at(1), Health::Up))
            .unwrap();
        assert_eq!(weights(&m.snapshot()), [7, 5]);
    }

    /// A real server deleted while down, and added back (to its old id,
    /// from the trash), starts up; so does one whose service was deleted.
    #[test]
    fn a_real_server_added_back_starts_up() {
        let mut m = ServiceModel::new(8);
        m.apply(&add_service(80)).unwrap();
        m.apply(&Edit::AddReal(key(80), real(1, 3))).unwrap();
        m.apply(&Edit::SetHealth(key(80), at(1), Health::Down))
            .unwrap();
        m.apply(&Edit::DeleteReal(key(80), at(1))).unwrap();
        m.apply(&Edit::AddReal(key(80), real(1, 3))).unwrap();
        assert_eq!(m.services()[0].reals[0].id, RealId(0));
        assert_eq!(m.health(RealId(0)), Health::Up);
        assert_eq!(weights(&m.snapshot()), [3]);
        for gone in [Edit::DeleteService(key(80)), Edit::Clear] {
            let mut m = m.clone();
            m.apply(&Edit::SetHealth(key(80), at(1), Health::Down))
                .unwrap();
            m.apply(&gone).unwrap();
            m.apply(&add_service(80)).unwrap();
            m.apply(&Edit::AddReal(key(80), real(1, 3))).unwrap();
            assert_eq!(m.health(RealId(0)), Health::Up, "after {gone:?}");
        }
        // A failed transaction leaves the health as it was.
        let refused = [
            Edit::SetHealth(key(80), at(1), Health::Down),
            Edit::DeleteReal(key(80), at(9)),
        ];
        assert!(m.apply_all(&refused, &|_| true).is_err());
        assert_eq!(m.health(RealId(0)), Health::Up);
    }
}
