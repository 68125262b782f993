//! The editable service model: virtual services, their real servers, the
//! real servers' ids and health, and the edits that change them.
//!
//! The daemon owns one [`ServiceModel`]; front ends (ipvsadm, the TOML
//! config, keepalived.conf, health checks and sync) only produce [`Edit`]s. Semantics
//! and error wording are IPVS's (`ip_vs_ctl.c` through libipvs's
//! `ipvs_strerror`), so ipvsadm prints a refused edit's [`ApplyError`] as it
//! is. A failed edit changes nothing; a [`Transaction`] applies several
//! edits all or nothing (ipvsadm's `-R`, a config file's services).
//!
//! # Health
//! A real server's [`Health`] is kept apart from its weight: the model
//! holds the weight the operator set ([`ServiceModel::services`]), the
//! health is whether checks let it take connections. [`Edit::SetHealth`]
//! marks one down or up; `-e` changes the configured weight and keeps the
//! health (a down server stays down at its new weight); a real server
//! deleted and added again starts up. [`Edit::SetCheckWeight`] is the
//! weight a dynamic check (keepalived's `misc_dynamic`) asks for: the
//! effective weight while the server is up, until the check says
//! otherwise.
//!
//! What a failure does is the service's [`ServicePolicy`]
//! ([`Edit::SetPolicy`]), with keepalived's semantics:
//! - a down server is quiesced (weight 0, its connections go on: keepalived
//!   `inhibit_on_failure`) or, with [`OnFailure::Remove`], taken out of
//!   the service. The model keeps it either way, so its checks go on and
//!   it comes back at its configured weight when it is up.
//! - quorum with hysteresis: the service loses quorum when the sum of the
//!   effective weights of its live real servers is 0 or below `quorum -
//!   hysteresis`, and has it again at `quorum + hysteresis` or more. While
//!   it has lost quorum and has a sorry server, the sorry server is in the
//!   service and the live real servers are out of it (down ones stay as
//!   their policy has them). Without a sorry server losing quorum changes
//!   nothing the workers see.
//!
//! [`ServiceModel::view`] is the service as IPVS with keepalived would hold
//! it — what `ipvsadm -L` and `-S` print and the snapshot schedules with:
//! effective weights, removed servers absent, the sorry server while in
//! use. The sorry server has a [`RealId`] of its own from the moment the
//! policy names it, so its connections and counters are its own.
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
    /// The weight a dynamic check asks a real server to have while it is
    /// up (`None`: its configured weight again). At most 65535.
    SetCheckWeight(ServiceKey, SocketAddr, Option<u32>),
    /// What the service does when its real servers fail: quiesce or
    /// remove, sorry server, quorum and hysteresis. The sorry server is
    /// checked as `-a` checks a real server (and its port forced to the
    /// service's for `-g` and `-i`, as ipvsadm does); quorum is at least 1.
    SetPolicy(ServiceKey, ServicePolicy),
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
    /// ERANGE: a policy's quorum of 0, or a check's weight over 65535.
    PolicyRange,
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
            ApplyError::ThresholdRange | ApplyError::PolicyRange => "Numerical result out of range",
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
            ApplyError::PolicyRange => {
                f.write_str(": a quorum is at least 1, a weight at most 65535")
            }
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
    /// The weight a dynamic check gave a real server.
    check_weight: HashMap<RealId, u32>,
    /// Services with a policy other than the default, and their sorry
    /// servers (with ids).
    policies: HashMap<ServiceKey, Policy>,
}

/// A service's policy as the model holds it.
#[derive(Clone, Debug)]
struct Policy {
    policy: ServicePolicy,
    /// The sorry server, with its id, while the policy names one.
    sorry: Option<RealServer>,
    /// Whether the service has quorum (keepalived's `quorum_state_up`).
    quorum: bool,
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
            check_weight: HashMap::new(),
            policies: HashMap::new(),
        }
    }

    pub fn services(&self) -> &[VirtualService] {
        &self.services
    }

    /// The snapshot to publish to workers: [`ServiceModel::view`].
    pub fn snapshot(&self) -> ServiceTable {
        ServiceTable::new(self.view())
    }

    /// The services as the workers schedule with them and `ipvsadm -L`
    /// shows them: a down server at weight 0 (quiesced) or absent
    /// (removed), an up one at the weight its check gave it or else its
    /// configured one, and, while a service with a sorry server has lost
    /// quorum, the sorry server instead of the live real servers.
    pub fn view(&self) -> Vec<VirtualService> {
        if self.down.is_empty() && self.check_weight.is_empty() && self.policies.is_empty() {
            return self.services.clone();
        }
        self.services.iter().map(|s| self.view_of(s)).collect()
    }

    fn view_of(&self, s: &VirtualService) -> VirtualService {
        let policy = self.policies.get(&s.key);
        let on_failure = policy.map_or(OnFailure::Quiesce, |p| p.policy.on_failure);
        let sorry = policy.filter(|p| !p.quorum).and_then(|p| p.sorry.as_ref());
        let mut reals: Vec<RealServer> = s
            .reals
            .iter()
            .filter_map(|r| {
                let weight = if self.down.contains(&r.id) {
                    match on_failure {
                        OnFailure::Quiesce => 0,
                        OnFailure::Remove => return None,
                    }
                } else if sorry.is_some() {
                    return None;
                } else {
                    self.effective_weight(r)
                };
                Some(RealServer {
                    weight,
                    ..r.clone()
                })
            })
            .collect();
        reals.extend(sorry.cloned());
        VirtualService { reals, ..s.clone() }
    }

    /// An up real server's weight: its check's, else its configured one;
    /// 0 if the operator set 0 (a quiesce, a drain), whatever the check.
    fn effective_weight(&self, r: &RealServer) -> u32 {
        if r.weight == 0 {
            return 0;
        }
        self.check_weight.get(&r.id).copied().unwrap_or(r.weight)
    }

    /// The service's policy ([`ServicePolicy::default`] unless set).
    pub fn policy(&self, key: &ServiceKey) -> ServicePolicy {
        self.policies.get(key).map(|p| p.policy).unwrap_or_default()
    }

    /// The service's sorry server, with its id, if its policy names one.
    pub fn sorry(&self, key: &ServiceKey) -> Option<&RealServer> {
        self.policies.get(key)?.sorry.as_ref()
    }

    /// Whether the service has quorum. One without a policy of its own
    /// is judged by the default (quorum 1: a live server of weight > 0).
    pub fn has_quorum(&self, key: &ServiceKey) -> bool {
        match (self.policies.get(key), self.service(key)) {
            (Some(p), _) => p.quorum,
            (None, Some(s)) => s
                .reals
                .iter()
                .any(|r| !self.down.contains(&r.id) && self.effective_weight(r) > 0),
            (None, None) => false,
        }
    }

    /// Every real-server id the model holds for a service: its real
    /// servers' and its sorry server's.
    pub fn ids_of<'a>(&'a self, s: &'a VirtualService) -> impl Iterator<Item = RealId> + 'a {
        s.reals
            .iter()
            .map(|r| r.id)
            .chain(self.sorry(&s.key).map(|r| r.id))
    }

    /// Re-judges a service's quorum after a change, as keepalived does:
    /// lost at a live weight of 0 or below `quorum - hysteresis`, regained
    /// at `quorum + hysteresis`.
    fn judge_quorum(&mut self, key: &ServiceKey) {
        let Some(p) = self.policies.get(key) else {
            return;
        };
        let sum = self.live_weight(key);
        let (quorum, hysteresis) = (u64::from(p.policy.quorum), u64::from(p.policy.hysteresis));
        let has = if p.quorum {
            !(sum == 0 || sum < quorum.saturating_sub(hysteresis))
        } else {
            sum >= quorum + hysteresis
        };
        if let Some(p) = self.policies.get_mut(key) {
            p.quorum = has;
        }
    }

    /// The sum of the effective weights of a service's live real servers.
    fn live_weight(&self, key: &ServiceKey) -> u64 {
        self.service(key).map_or(0, |s| {
            s.reals
                .iter()
                .filter(|r| !self.down.contains(&r.id))
                .map(|r| u64::from(self.effective_weight(r)))
                .sum()
        })
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
        // The service whose quorum the edit may change.
        let mut touched = None;
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
                if let Some(sorry) = self.policies.remove(key).and_then(|p| p.sorry) {
                    self.endpoints.remove(&(*key, endpoint(&sorry)));
                    freed.push(Freed::of(key, &sorry));
                }
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
                for (key, p) in self.policies.drain() {
                    freed.extend(p.sorry.iter().map(|r| Freed::of(&key, r)));
                }
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
                s.reals.push(real_server(id, spec));
                touched = Some(*key);
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
                touched = Some(*key);
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
                touched = Some(*key);
            }
            Edit::SetHealth(key, at, health) => {
                let id = self.real_id(key, at)?;
                match health {
                    Health::Up => self.down.remove(&id),
                    Health::Down => self.down.insert(id),
                };
                touched = Some(*key);
            }
            Edit::SetCheckWeight(key, at, weight) => {
                let id = self.real_id(key, at)?;
                match weight {
                    Some(w) if *w > MAX_WEIGHT => return Err(ApplyError::PolicyRange),
                    Some(w) => self.check_weight.insert(id, *w),
                    None => self.check_weight.remove(&id),
                };
                touched = Some(*key);
            }
            Edit::SetPolicy(key, policy) => {
                self.set_policy(key, policy, reusable, &mut freed)?;
                touched = Some(*key);
            }
        }
        applied.removed = freed.iter().map(|f| f.id).collect();
        for f in &freed {
            // Whoever comes back to this id starts up.
            self.down.remove(&f.id);
            self.check_weight.remove(&f.id);
            self.trash.insert((f.service, f.endpoint), f.id);
        }
        self.freed.extend(freed);
        if self.freed.len() > 2 * self.trash.len() + 64 {
            let trash = &self.trash;
            self.freed.retain(|f| f.in_trash(trash));
        }
        if let Some(key) = touched {
            self.judge_quorum(&key);
        }
        Ok(applied)
    }

    /// The id of the real server of `key` at `at`.
    fn real_id(&self, key: &ServiceKey, at: &SocketAddr) -> Result<RealId, ApplyError> {
        let s = self.service(key).ok_or(ApplyError::ServiceNotDefined)?;
        s.reals
            .iter()
            .find(|r| endpoint(r) == *at)
            .map(|r| r.id)
            .ok_or(ApplyError::NoSuchReal)
    }

    /// [`Edit::SetPolicy`]: a sorry server named anew gets an id (its old
    /// one back from the trash if it had one), one no longer named is freed.
    fn set_policy(
        &mut self,
        key: &ServiceKey,
        policy: &ServicePolicy,
        reusable: &dyn Fn(RealId) -> bool,
        freed: &mut Vec<Freed>,
    ) -> Result<(), ApplyError> {
        let service_is_v4 = self
            .service(key)
            .ok_or(ApplyError::ServiceNotDefined)?
            .key
            .addr
            .is_ipv4();
        if policy.quorum == 0 {
            return Err(ApplyError::PolicyRange);
        }
        let mut policy = *policy;
        if let Some(spec) = policy.sorry.as_mut() {
            // ipvsadm's rule for -g and -i: the service's port.
            if spec.method != ForwardMethod::Nat {
                spec.port = key.port;
            }
            check_real(spec, service_is_v4)?;
            if spec.weight > MAX_WEIGHT {
                return Err(ApplyError::PolicyRange);
            }
        }
        let old = self.policies.get(key).and_then(|p| p.sorry.clone());
        let same_place = match (&old, &policy.sorry) {
            (Some(o), Some(n)) => endpoint(o) == n.endpoint(),
            _ => false,
        };
        let sorry = match policy.sorry {
            Some(spec) if same_place => old.as_ref().map(|o| real_server(o.id, &spec)),
            Some(spec) => {
                if self.endpoints.contains(&(*key, spec.endpoint())) {
                    return Err(ApplyError::RealExists);
                }
                let id = match self.trash.remove(&(*key, spec.endpoint())) {
                    Some(id) => id,
                    None => self.allocate(reusable)?,
                };
                self.endpoints.insert((*key, spec.endpoint()));
                Some(real_server(id, &spec))
            }
            None => None,
        };
        if let Some(o) = old.filter(|_| !same_place) {
            self.endpoints.remove(&(*key, endpoint(&o)));
            freed.push(Freed::of(key, &o));
        }
        let quorum = match self.policies.get(key) {
            Some(p) => p.quorum,
            // As keepalived starts a service: quorum if its live weight
            // reaches quorum + hysteresis.
            None => {
                self.live_weight(key) >= u64::from(policy.quorum) + u64::from(policy.hysteresis)
            }
        };
        self.policies.insert(
            *key,
            Policy {
                policy,
                sorry,
                quorum,
            },
        );
        Ok(())
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

/// The largest weight IPVS takes.
const MAX_WEIGHT: u32 = 65535;

fn real_server(id: RealId, spec: &RealSpec) -> RealServer {
    RealServer {
        id,
        addr: spec.addr,
        port: spec.port,
        method: spec.method,
        weight: spec.weight,
        upper_threshold: spec.upper_threshold,
        lower_threshold: spec.lower_threshold,
    }
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

    fn policy(
        on_failure: OnFailure,
        sorry: Option<RealSpec>,
        quorum: u32,
        hysteresis: u32,
    ) -> Edit {
        Edit::SetPolicy(
            key(80),
            ServicePolicy {
                on_failure,
                sorry,
                quorum,
                hysteresis,
            },
        )
    }

    fn down(host: u8) -> Edit {
        Edit::SetHealth(key(80), at(host), Health::Down)
    }

    fn up(host: u8) -> Edit {
        Edit::SetHealth(key(80), at(host), Health::Up)
    }

    /// What the snapshot (and -L) holds: (last address byte, weight).
    fn view(m: &ServiceModel) -> Vec<(u8, u32)> {
        m.snapshot().services()[0]
            .reals
            .iter()
            .map(|r| match r.addr {
                IpAddr::V4(a) => (a.octets()[3], r.weight),
                IpAddr::V6(_) => unreachable!("IPv4 test service"),
            })
            .collect()
    }

    fn model_with(reals: &[(u8, u32)]) -> ServiceModel {
        let mut m = ServiceModel::new(16);
        m.apply(&add_service(80)).unwrap();
        for &(host, weight) in reals {
            m.apply(&Edit::AddReal(key(80), real(host, weight)))
                .unwrap();
        }
        m
    }

    /// Quiesce (the default) keeps a down server at weight 0; remove takes
    /// it out of the view, but the model keeps it at its weight, and up
    /// again it is back at that weight. `-e -w` on a down server changes
    /// the weight it comes back with, not its health.
    #[test]
    fn a_down_server_is_quiesced_or_removed_as_its_service_says() {
        let mut m = model_with(&[(1, 3), (2, 5)]);
        m.apply(&down(1)).unwrap();
        assert_eq!(view(&m), [(1, 0), (2, 5)]);
        m.apply(&policy(OnFailure::Remove, None, 1, 0)).unwrap();
        assert_eq!(view(&m), [(2, 5)]);
        assert_eq!(m.services()[0].reals.len(), 2, "the model keeps it");
        m.apply(&Edit::EditReal(key(80), real(1, 9))).unwrap();
        assert_eq!(view(&m), [(2, 5)], "-e does not bring it back");
        assert_eq!(m.health(RealId(0)), Health::Down);
        m.apply(&up(1)).unwrap();
        assert_eq!(view(&m), [(1, 9), (2, 5)]);
        // Back to quiesce: down shows weight 0 again.
        m.apply(&policy(OnFailure::Quiesce, None, 1, 0)).unwrap();
        m.apply(&down(2)).unwrap();
        assert_eq!(view(&m), [(1, 9), (2, 0)]);
        assert_eq!(m.policy(&key(80)).on_failure, OnFailure::Quiesce);
    }

    /// A dynamic check's weight is the effective weight while up; down it
    /// is 0 as any; cleared, the configured weight is back.
    #[test]
    fn a_checks_weight_is_the_weight_while_up() {
        let mut m = model_with(&[(1, 3)]);
        m.apply(&Edit::SetCheckWeight(key(80), at(1), Some(40)))
            .unwrap();
        assert_eq!(view(&m), [(1, 40)]);
        assert_eq!(m.services()[0].reals[0].weight, 3, "configured stays");
        m.apply(&down(1)).unwrap();
        assert_eq!(view(&m), [(1, 0)]);
        m.apply(&up(1)).unwrap();
        assert_eq!(view(&m), [(1, 40)]);
        // The operator's weight 0 (a quiesce, a drain) wins over it.
        m.apply(&Edit::EditReal(key(80), real(1, 0))).unwrap();
        assert_eq!(view(&m), [(1, 0)]);
        m.apply(&Edit::EditReal(key(80), real(1, 3))).unwrap();
        m.apply(&Edit::SetCheckWeight(key(80), at(1), None))
            .unwrap();
        assert_eq!(view(&m), [(1, 3)]);
        assert_eq!(
            m.apply(&Edit::SetCheckWeight(key(80), at(1), Some(70_000))),
            Err(ApplyError::PolicyRange)
        );
        assert_eq!(
            m.apply(&Edit::SetCheckWeight(key(80), at(7), Some(1))),
            Err(ApplyError::NoSuchReal)
        );
        // A real server deleted and added back has no check weight.
        m.apply(&Edit::SetCheckWeight(key(80), at(1), Some(40)))
            .unwrap();
        m.apply(&Edit::DeleteReal(key(80), at(1))).unwrap();
        m.apply(&Edit::AddReal(key(80), real(1, 3))).unwrap();
        assert_eq!(view(&m), [(1, 3)]);
    }

    /// keepalived's quorum: lost below quorum - hysteresis (or at a live
    /// weight of 0), regained at quorum + hysteresis; while lost, the
    /// sorry server replaces the live real servers, down ones stay as the
    /// policy has them.
    #[test]
    fn quorum_with_hysteresis_brings_in_the_sorry_server() {
        // Three servers of weight 2: live weight 6.
        let mut m = model_with(&[(1, 2), (2, 2), (3, 2)]);
        let sorry = real(9, 1);
        m.apply(&policy(OnFailure::Quiesce, Some(sorry), 4, 1))
            .unwrap();
        assert!(m.has_quorum(&key(80)));
        assert_eq!(view(&m), [(1, 2), (2, 2), (3, 2)]);
        // 4: not below 4 - 1 = 3, quorum kept.
        m.apply(&down(1)).unwrap();
        assert!(m.has_quorum(&key(80)));
        assert_eq!(view(&m), [(1, 0), (2, 2), (3, 2)]);
        // 2 < 3: lost; the live server 3 goes, the sorry server comes.
        m.apply(&down(2)).unwrap();
        assert!(!m.has_quorum(&key(80)));
        assert_eq!(view(&m), [(1, 0), (2, 0), (9, 1)]);
        // 4: below 4 + 1 = 5, still lost.
        m.apply(&up(2)).unwrap();
        assert!(!m.has_quorum(&key(80)));
        assert_eq!(view(&m), [(1, 0), (9, 1)]);
        // 6 >= 5: regained, the sorry server goes.
        m.apply(&up(1)).unwrap();
        assert!(m.has_quorum(&key(80)));
        assert_eq!(view(&m), [(1, 2), (2, 2), (3, 2)]);
        // A weight change counts: -e -w 0 on two of them loses it again.
        m.apply(&Edit::EditReal(key(80), real(1, 0))).unwrap();
        m.apply(&Edit::EditReal(key(80), real(2, 0))).unwrap();
        assert!(!m.has_quorum(&key(80)));
        // With remove, down servers are not in the view while lost either.
        m.apply(&policy(OnFailure::Remove, Some(sorry), 4, 1))
            .unwrap();
        m.apply(&down(3)).unwrap();
        assert_eq!(view(&m), [(9, 1)]);
    }

    /// The default quorum of 1 with a sorry server: it answers while no
    /// real server is up, and only then. A service starts without quorum
    /// when its live weight is short of quorum + hysteresis.
    #[test]
    fn the_sorry_server_answers_while_every_real_server_is_down() {
        let mut m = model_with(&[(1, 1), (2, 1)]);
        m.apply(&policy(OnFailure::Remove, Some(real(9, 1)), 1, 0))
            .unwrap();
        m.apply(&down(1)).unwrap();
        assert_eq!(view(&m), [(2, 1)]);
        m.apply(&down(2)).unwrap();
        assert_eq!(view(&m), [(9, 1)]);
        m.apply(&up(2)).unwrap();
        assert_eq!(view(&m), [(2, 1)]);
        // No real server at all: the sorry server from the start.
        let mut m = model_with(&[]);
        m.apply(&policy(OnFailure::Quiesce, Some(real(9, 1)), 1, 0))
            .unwrap();
        assert_eq!(view(&m), [(9, 1)]);
        m.apply(&Edit::AddReal(key(80), real(1, 1))).unwrap();
        assert_eq!(view(&m), [(1, 1)]);
        // Without a sorry server, losing quorum changes nothing seen.
        let mut m = model_with(&[(1, 1)]);
        m.apply(&policy(OnFailure::Quiesce, None, 1, 0)).unwrap();
        m.apply(&down(1)).unwrap();
        assert!(!m.has_quorum(&key(80)));
        assert_eq!(view(&m), [(1, 0)]);
    }

    /// The sorry server is checked as a real server, gets an id of its own
    /// (kept while the policy names the same place), and is freed with its
    /// service or when the policy drops it.
    #[test]
    fn a_sorry_server_is_a_real_server_with_an_id_of_its_own() {
        let mut m = model_with(&[(1, 1)]);
        let refused = [
            (
                policy(OnFailure::Quiesce, None, 0, 0),
                ApplyError::PolicyRange,
            ),
            (
                policy(OnFailure::Quiesce, Some(real(1, 1)), 1, 0),
                ApplyError::RealExists,
            ),
            (
                policy(
                    OnFailure::Quiesce,
                    Some(RealSpec {
                        addr: IpAddr::from([224, 0, 0, 9]),
                        ..real(9, 1)
                    }),
                    1,
                    0,
                ),
                ApplyError::NotUnicast,
            ),
            (
                policy(OnFailure::Quiesce, Some(real(9, 70_000)), 1, 0),
                ApplyError::PolicyRange,
            ),
            (
                Edit::SetPolicy(key(81), ServicePolicy::default()),
                ApplyError::ServiceNotDefined,
            ),
        ];
        let v6 = RealSpec {
            addr: "2001:db8::9".parse().unwrap(),
            ..real(9, 1)
        };
        for (edit, error) in refused.into_iter().chain([(
            policy(OnFailure::Quiesce, Some(v6), 1, 0),
            ApplyError::AddressFamily,
        )]) {
            assert_eq!(m.apply(&edit), Err(error), "{edit:?}");
        }
        // Direct routing: the service's port, as ipvsadm forces it.
        let dr = RealSpec {
            port: 8080,
            method: ForwardMethod::Dr,
            ..real(9, 1)
        };
        m.apply(&policy(OnFailure::Quiesce, Some(dr), 1, 0))
            .unwrap();
        let sorry = m.sorry(&key(80)).cloned().unwrap();
        assert_eq!((sorry.id, sorry.port), (RealId(1), 80));
        assert_eq!(
            m.ids_of(&m.services()[0]).collect::<Vec<_>>(),
            [RealId(0), RealId(1)]
        );
        // Its place is taken: a real server cannot be added there.
        assert_eq!(
            m.apply(&Edit::AddReal(key(80), real(9, 1))),
            Err(ApplyError::RealExists)
        );
        // Same place, other weight: same id. Another place: a new id, the
        // old one freed.
        m.apply(&policy(OnFailure::Quiesce, Some(real(9, 4)), 1, 0))
            .unwrap();
        assert_eq!(
            m.sorry(&key(80)).map(|r| (r.id, r.weight)),
            Some((RealId(1), 4))
        );
        let applied = m
            .apply(&policy(OnFailure::Quiesce, Some(real(8, 1)), 1, 0))
            .unwrap();
        assert_eq!(applied.removed, [RealId(1)]);
        assert_eq!(m.sorry(&key(80)).map(|r| r.id), Some(RealId(2)));
        // The service goes, and its sorry server's id with it.
        let applied = m.apply(&Edit::DeleteService(key(80))).unwrap();
        assert_eq!(applied.removed, [RealId(0), RealId(2)]);
        assert_eq!(m.sorry(&key(80)), None);
        assert_eq!(m.policy(&key(80)), ServicePolicy::default());
    }
}
