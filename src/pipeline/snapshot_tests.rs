//! Schedulers across snapshots: a snapshot made for another reason than a
//! change of the service (a next hop learned, another service edited) goes
//! on with the service's own scheduler, so the workers still on the old
//! snapshot and those on the new one share one rr or wrr sequence.

use std::sync::Arc;

use super::Snapshot;
use crate::neigh::NextHops;
use crate::sched::testutil::{client_key, loads, service};
use crate::service::{RealLoads, SchedulerKind, ServiceTable, VirtualService};

fn snapshot_of(svc: &VirtualService, previous: Option<&Snapshot>) -> Snapshot {
    Snapshot::with_previous(
        ServiceTable::new(vec![svc.clone()]),
        Vec::new(),
        NextHops::new(Vec::new(), Vec::new(), Vec::new()),
        Default::default(),
        previous,
    )
}

fn pick(snap: &Snapshot, n: u32, l: &RealLoads) -> usize {
    let svc = &snap.services.services()[0];
    snap.schedulers()[0]
        .schedule(svc, &client_key(n), l)
        .expect("a real server")
}

/// A worker picks on the old snapshot after the new one was made, then
/// another picks on the new one: the sequence goes on, no server twice.
#[test]
fn a_republished_unchanged_service_keeps_its_rr_and_wrr_sequence() {
    for (kind, weights) in [
        (SchedulerKind::Rr, vec![1, 1, 1]),
        (SchedulerKind::Wrr, vec![1, 1, 1]),
    ] {
        let svc = service(kind, &weights);
        let l = loads(weights.len());
        let old = snapshot_of(&svc, None);
        let first = pick(&old, 0, &l);
        let new = snapshot_of(&svc, Some(&old));
        let second = pick(&old, 1, &l);
        let third = pick(&new, 2, &l);
        let mut seen = vec![first, second, third];
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2], "{kind:?}: {first} {second} {third}");
        assert!(Arc::ptr_eq(&old.schedulers()[0], &new.schedulers()[0]));
    }
}

/// A changed service gets a scheduler of its own, which rr starts from
/// the position the old one had reached.
#[test]
fn a_changed_service_gets_a_scheduler_of_its_own() {
    let svc = service(SchedulerKind::Rr, &[1, 1, 1]);
    let l = loads(3);
    let old = snapshot_of(&svc, None);
    assert_eq!(pick(&old, 0, &l), 0);
    let mut edited = svc.clone();
    edited.reals[2].weight = 5;
    let new = snapshot_of(&edited, Some(&old));
    assert!(!Arc::ptr_eq(&old.schedulers()[0], &new.schedulers()[0]));
    assert_eq!(pick(&new, 1, &l), 1);
    assert_eq!(pick(&new, 2, &l), 2);
}
