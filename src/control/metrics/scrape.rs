//! What a scrape shows, as plain data: the daemon fills a [`Scrape`] on
//! its own thread and hands it over; encoding it reads nothing else.

use crate::conntrack::TableStats;
use crate::service::{RealCounts, TotalStats};
use crate::sync::SyncMetrics;

use super::{HealthMetrics, WorkerMetrics};

/// Everything a scrape shows: the services and their real servers (the
/// numbers of `ipvsadm -L --stats`), the workers, the connection table.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub services: Vec<ServiceMetrics>,
    pub workers: Vec<WorkerMetrics>,
    pub table: TableStats,
    pub table_capacity: usize,
    pub health: HealthMetrics,
    /// Per director interface (its name): the steering program's counters
    /// by [`SteerCounter::ALL`](crate::xsk::prog::SteerCounter::ALL).
    pub steering: Vec<(String, [u64; 2])>,
    /// Connection sync's counters, while the sync thread runs.
    pub sync: Option<SyncMetrics>,
}

#[derive(Clone, Debug, Default)]
pub struct ServiceMetrics {
    /// `TCP 192.0.2.10:80`, `UDP [2001:db8::10]:53`.
    pub label: String,
    pub totals: TotalStats,
    pub reals: Vec<RealMetrics>,
}

#[derive(Clone, Debug, Default)]
pub struct RealMetrics {
    /// `198.51.100.2:8080`.
    pub label: String,
    pub totals: TotalStats,
    pub counts: RealCounts,
    /// The weight the operator gave.
    pub weight: u32,
    /// The weight it schedules with now (0: quiesced, down, or out of the
    /// service).
    pub effective_weight: u32,
}
