//! What the daemon needs from the data plane, as a trait: the
//! [`Director`] in `xvs director`, a plain fake in tests, so the daemon's
//! handling of every message can be tested without root or XDP.

use std::net::SocketAddr;
use std::time::Duration;

use crate::conntrack::{ConnEntry, ConnTable, TableStats, Timeouts};
use crate::control::metrics::WorkerMetrics;
use crate::director::Director;
use crate::service::{RealCounts, TotalStats};
use crate::service::{RealId, ServiceKey, ServiceTable};
use crate::sync::{DaemonConfig, DaemonRole, HealthRecord, Refused, ServicesUpdate, SyncMetrics};

/// What the daemon needs from the data plane; the [`Director`] in the
/// daemon, a plain fake in tests.
pub trait Plane {
    /// A real server's counters since start, summed over workers.
    fn raw_totals(&self, id: RealId) -> TotalStats;
    /// Its ActiveConn / InActConn / PersistConn.
    fn real_counts(&self, id: RealId) -> RealCounts;
    /// Publishes a new snapshot to the workers and the XDP maps.
    fn publish(&mut self, services: ServiceTable) -> Result<(), String>;
    /// Releases every connection and template of these deleted real
    /// servers, in one pass, without holding up the caller.
    fn expire_reals(&mut self, ids: &[RealId]);
    /// IPVS's `expire_nodest_conn`: whether a deleted real server's
    /// connections are expired (else kept for its return).
    fn expire_nodest_conn(&self) -> bool;
    /// Live connection entries (`-L -c`).
    fn conn_entries(&self) -> Vec<ConnEntry>;
    fn timeouts(&self) -> Timeouts;
    fn set_ipvsadm_timeouts(&self, tcp: u32, tcpfin: u32, udp: u32);
    /// `size=` in `-L`: the connection table's bucket count, rounded down to a
    /// power of two as IPVS prints it.
    fn table_size(&self) -> usize;
    /// One round of data-plane upkeep, waiting up to `wait` for the
    /// kernel's network changes.
    fn round(&mut self, wait: Duration);
    /// Every worker's counters, for a scrape.
    fn workers(&self) -> Vec<WorkerMetrics>;
    /// The connection table's counters and its slots (IPv4 and IPv6).
    fn table(&self) -> (TableStats, usize);
    /// Per director interface (its name), the steering program's counters
    /// by [`SteerCounter::ALL`](crate::xsk::prog::SteerCounter::ALL).
    fn steering(&self) -> Vec<(String, [u64; 2])> {
        Vec::new()
    }
    /// `--start-daemon`: starts connection sync in a role.
    fn start_daemon(&mut self, cfg: DaemonConfig) -> Result<(), String> {
        let _ = cfg;
        Err(NO_SYNC.into())
    }
    /// `--stop-daemon`.
    fn stop_daemon(&mut self, role: DaemonRole) -> Result<(), String> {
        let _ = role;
        Err("No daemon is running".into())
    }
    /// The sync daemons running (`-L --daemon`).
    fn sync_daemons(&self) -> Vec<DaemonConfig> {
        Vec::new()
    }
    /// Sync's counters, if the sync thread runs.
    fn sync_metrics(&self) -> Option<SyncMetrics> {
        None
    }
    /// The next real-server health report a sync peer sent, if any.
    fn peer_health(&mut self) -> Option<HealthRecord> {
        None
    }
    /// A real server's health changed here: tell the sync peers.
    fn health_changed(&mut self, service: ServiceKey, real: SocketAddr, up: bool) {
        let _ = (service, real, up);
    }
    /// The next whole service configuration a sync peer sent, if any
    /// (`[sync] services`).
    fn peer_services(&mut self) -> Option<ServicesUpdate> {
        None
    }
    /// Whether sync carries the service configuration (`[sync] services`).
    fn syncs_services(&self) -> bool {
        false
    }
    /// This director's configured services changed (`ipvsadm -S -n`
    /// text): tell the sync peers.
    fn services_changed(&mut self, text: String) {
        let _ = text;
    }
    /// What became of a peer's service configuration: applied (`true`),
    /// the same as ours already (`false`), or refused.
    fn services_applied(&mut self, outcome: Result<bool, Refused>) {
        let _ = outcome;
    }
}

/// Why a plane without a sync thread starts no daemon.
const NO_SYNC: &str = "connection sync needs a shared key: start xvs director with \
     --sync-key-file FILE (or, on a trusted link only, --sync-insecure)";

impl Plane for Director {
    fn raw_totals(&self, id: RealId) -> TotalStats {
        let mut t = TotalStats::default();
        for w in self.traffic() {
            if let Some(s) = w.get(id) {
                t.add(&s.read());
            }
        }
        t
    }

    fn real_counts(&self, id: RealId) -> RealCounts {
        self.loads().get(id).map(|c| c.read()).unwrap_or_default()
    }

    fn publish(&mut self, services: ServiceTable) -> Result<(), String> {
        self.set_services(services).map_err(|e| e.to_string())
    }

    fn expire_reals(&mut self, ids: &[RealId]) {
        Director::expire_reals(self, ids);
    }

    fn expire_nodest_conn(&self) -> bool {
        Director::expire_nodest_conn(self)
    }

    fn conn_entries(&self) -> Vec<ConnEntry> {
        self.conns().entries(self.now())
    }

    fn timeouts(&self) -> Timeouts {
        self.conns().timeouts()
    }

    fn set_ipvsadm_timeouts(&self, tcp: u32, tcpfin: u32, udp: u32) {
        self.conns().set_ipvsadm_timeouts(tcp, tcpfin, udp);
    }

    fn table_size(&self) -> usize {
        ipvs_size(self.conns())
    }

    fn round(&mut self, wait: Duration) {
        self.control_round(wait);
    }

    fn workers(&self) -> Vec<WorkerMetrics> {
        self.worker_stats()
            .iter()
            .map(|w| WorkerMetrics::read(w))
            .collect()
    }

    fn table(&self) -> (TableStats, usize) {
        let (v4, v6) = self.conns().capacity();
        (self.conns().stats(), v4 + v6)
    }

    fn steering(&self) -> Vec<(String, [u64; 2])> {
        self.steering_counters()
    }

    fn start_daemon(&mut self, cfg: DaemonConfig) -> Result<(), String> {
        match self.sync() {
            Some(s) => s.start_daemon(cfg),
            None => Err(NO_SYNC.into()),
        }
    }

    fn stop_daemon(&mut self, role: DaemonRole) -> Result<(), String> {
        match self.sync() {
            Some(s) => s.stop_daemon(role),
            None => Err("No daemon is running".into()),
        }
    }

    fn sync_daemons(&self) -> Vec<DaemonConfig> {
        self.sync_ref()
            .map_or_else(Vec::new, |s| s.daemons().to_vec())
    }

    fn sync_metrics(&self) -> Option<SyncMetrics> {
        self.sync_ref().map(|s| s.metrics())
    }

    fn peer_health(&mut self) -> Option<HealthRecord> {
        Director::peer_health(self)
    }

    fn health_changed(&mut self, service: ServiceKey, real: SocketAddr, up: bool) {
        Director::health_changed(self, service, real, up);
    }

    fn peer_services(&mut self) -> Option<ServicesUpdate> {
        Director::peer_services(self)
    }

    fn syncs_services(&self) -> bool {
        self.sync_ref().is_some_and(|s| s.syncs_services())
    }

    fn services_changed(&mut self, text: String) {
        Director::services_changed(self, text);
    }

    fn services_applied(&mut self, outcome: Result<bool, Refused>) {
        Director::services_applied(self, outcome);
    }
}

/// `size=` as IPVS means it: the bucket count of the connection hash table,
/// which in IPVS is a power of two. xvs's (IPv4 and IPv6 buckets together)
/// rarely is one, so this is the largest power of two not above it.
fn ipvs_size(conns: &ConnTable) -> usize {
    let (v4, v6) = conns.buckets();
    1 << (v4 + v6).max(1).ilog2()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::service::RealLoads;

    #[test]
    fn size_is_the_bucket_count_as_a_power_of_two() {
        let table = |slots| ConnTable::new(slots, Timeouts::default(), Arc::new(RealLoads::new(4)));
        // 100 000 IPv4 and 12 500 IPv6 slots: 6667 + 834 buckets of 15.
        let t = table(100_000);
        assert_eq!(t.buckets(), (6667, 834));
        assert_eq!(ipvs_size(&t), 4096);
        // A power of two of slots is no power of two of buckets: 4370 + 547.
        let t = table(65_536);
        assert_eq!(t.buckets(), (4370, 547));
        assert_eq!(ipvs_size(&t), 4096);
        // The smallest table has 8 buckets per family.
        assert_eq!(ipvs_size(&table(1)), 16);
    }
}
