//! A data plane of plain maps, for the daemon's tests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use super::Plane;
use crate::conntrack::{ConnEntry, TableStats, Timeouts};
use crate::control::metrics::WorkerMetrics;
use crate::service::{RealCounts, TotalStats};
use crate::service::{RealId, ServiceTable};

/// A data plane of plain maps.
#[derive(Default)]
pub struct Fake {
    pub raw: HashMap<RealId, TotalStats>,
    pub counts: HashMap<RealId, RealCounts>,
    pub published: Vec<ServiceTable>,
    pub fail_publish: bool,
    /// Each `expire_reals` call's ids.
    pub expired: RefCell<Vec<Vec<RealId>>>,
    pub expire_nodest: bool,
    pub timeouts: RefCell<(u32, u32, u32)>,
    /// Rounds of upkeep run.
    pub rounds: usize,
    pub workers: Vec<WorkerMetrics>,
    pub table: TableStats,
    /// Health changes told to sync peers: (service, real, up).
    pub health_sent: Vec<(crate::service::ServiceKey, std::net::SocketAddr, bool)>,
    /// Health records "from a sync peer", taken one a call.
    pub peer_reports: std::collections::VecDeque<crate::sync::HealthRecord>,
    /// Whether services sync is on.
    pub syncs_services: bool,
    /// Configurations given to sync.
    pub services_sent: Vec<String>,
    /// Configurations "from a sync peer", taken one a call.
    pub peer_services: std::collections::VecDeque<crate::sync::ServicesUpdate>,
    /// What became of each.
    pub services_outcomes: Vec<Result<bool, crate::sync::Refused>>,
}

impl Fake {
    /// No counters, IPVS's default timeouts.
    pub fn new() -> Fake {
        Fake {
            timeouts: RefCell::new((900, 120, 300)),
            ..Fake::default()
        }
    }
}

impl Plane for Fake {
    fn peer_health(&mut self) -> Option<crate::sync::HealthRecord> {
        self.peer_reports.pop_front()
    }

    fn health_changed(
        &mut self,
        service: crate::service::ServiceKey,
        real: std::net::SocketAddr,
        up: bool,
    ) {
        self.health_sent.push((service, real, up));
    }

    fn syncs_services(&self) -> bool {
        self.syncs_services
    }

    fn services_changed(&mut self, text: String) {
        self.services_sent.push(text);
    }

    fn peer_services(&mut self) -> Option<crate::sync::ServicesUpdate> {
        self.peer_services.pop_front()
    }

    fn services_applied(&mut self, outcome: Result<bool, crate::sync::Refused>) {
        self.services_outcomes.push(outcome);
    }

    fn raw_totals(&self, id: RealId) -> TotalStats {
        self.raw.get(&id).copied().unwrap_or_default()
    }
    fn real_counts(&self, id: RealId) -> RealCounts {
        self.counts.get(&id).copied().unwrap_or_default()
    }
    fn publish(&mut self, services: ServiceTable) -> Result<(), String> {
        if self.fail_publish {
            return Err("updating the XDP map services failed".into());
        }
        self.published.push(services);
        Ok(())
    }
    fn expire_reals(&mut self, ids: &[RealId]) {
        self.expired.borrow_mut().push(ids.to_vec());
    }
    fn expire_nodest_conn(&self) -> bool {
        self.expire_nodest
    }
    fn conn_entries(&self) -> Vec<ConnEntry> {
        Vec::new()
    }
    fn timeouts(&self) -> Timeouts {
        let (tcp, tcpfin, udp) = *self.timeouts.borrow();
        Timeouts {
            tcp,
            tcpfin,
            udp,
            ..Timeouts::default()
        }
    }
    fn set_ipvsadm_timeouts(&self, tcp: u32, tcpfin: u32, udp: u32) {
        let t = &mut *self.timeouts.borrow_mut();
        let keep = |old: u32, new: u32| if new == 0 { old } else { new };
        *t = (keep(t.0, tcp), keep(t.1, tcpfin), keep(t.2, udp));
    }
    fn table_size(&self) -> usize {
        1024
    }
    fn round(&mut self, _wait: Duration) {
        self.rounds += 1;
    }
    fn workers(&self) -> Vec<WorkerMetrics> {
        self.workers.clone()
    }
    fn table(&self) -> (TableStats, usize) {
        (self.table, 1000)
    }
}
