//! Connection sync's metrics (present while the sync thread runs):
//! `xvs_sync_sent_datagrams_total`, `xvs_sync_sent_bytes_total`,
//! `xvs_sync_sent_entries_total`, `xvs_sync_received_datagrams_total`,
//! `xvs_sync_received_bytes_total`, `xvs_sync_installed_total`,
//! `xvs_sync_rejected_total{reason="truncated|malformed|bad_mac|replayed|stale|syncid"}`,
//! `xvs_sync_refused_total{reason="no_service|no_real_server|table|services_off|services_old|services_invalid"}`,
//! `xvs_sync_gaps_total`, `xvs_sync_gaps_repaired_total`,
//! `xvs_sync_gaps_lost_total`, `xvs_sync_resent_total`,
//! `xvs_sync_bulk_entries_total`, `xvs_sync_resyncs_total`,
//! `xvs_sync_events_total`, `xvs_sync_services_sent_total`,
//! `xvs_sync_services_received_total`, `xvs_sync_services_applied_total`
//! (the service configuration, `[sync] services`), and gauges `xvs_sync_resync_duration_seconds`,
//! `xvs_sync_resync_connections`, `xvs_sync_lag_seconds` (the last
//! datagram's age on arrival) and `xvs_sync_ready`.

use super::encode::{gauge, set, Builder};
use crate::sync::{Refused, Reject, SyncMetrics};

pub(super) fn encode(b: &mut Builder, m: &SyncMetrics) {
    let none = Vec::new;
    for (name, help, v) in [
        (
            "xvs_sync_sent_datagrams",
            "Sync datagrams sent",
            m.sent_datagrams,
        ),
        (
            "xvs_sync_sent_bytes",
            "Sync bytes sent (UDP payload)",
            m.sent_bytes,
        ),
        (
            "xvs_sync_sent_entries",
            "Entries sent in the stream",
            m.sent_entries,
        ),
        (
            "xvs_sync_received_datagrams",
            "Authentic sync datagrams received",
            m.received_datagrams,
        ),
        (
            "xvs_sync_received_bytes",
            "Authentic sync bytes received",
            m.received_bytes,
        ),
        (
            "xvs_sync_installed",
            "Entries installed from peers",
            m.installed,
        ),
        ("xvs_sync_gaps", "Stream datagrams found missing", m.gaps),
        (
            "xvs_sync_gaps_repaired",
            "Missing stream datagrams resent and received",
            m.gaps_repaired,
        ),
        (
            "xvs_sync_gaps_lost",
            "Missing stream datagrams given up (resync)",
            m.gaps_lost,
        ),
        (
            "xvs_sync_resent",
            "Stream datagrams resent on request",
            m.resent,
        ),
        (
            "xvs_sync_bulk_entries",
            "Entries sent in bulk (resync, refresh)",
            m.bulk_entries,
        ),
        ("xvs_sync_resyncs", "Resyncs completed", m.resyncs),
        (
            "xvs_sync_events",
            "Connection events taken from the workers",
            m.events,
        ),
        (
            "xvs_sync_services_sent",
            "Generations of the service configuration sent",
            m.services_sent,
        ),
        (
            "xvs_sync_services_received",
            "Whole service configurations received from peers",
            m.services_received,
        ),
        (
            "xvs_sync_services_applied",
            "Received service configurations that changed the services",
            m.services_applied,
        ),
    ] {
        set(&b.counter(name, help), none(), v);
    }
    let rejected = b.counter("xvs_sync_rejected", "Sync datagrams refused, by reason");
    for r in Reject::ALL {
        set(
            &rejected,
            vec![("reason", r.name().to_string())],
            m.rejected_for(r),
        );
    }
    let refused = b.counter(
        "xvs_sync_refused",
        "Received entries not installed, by reason",
    );
    for r in Refused::ALL {
        set(
            &refused,
            vec![("reason", r.name().to_string())],
            m.refused_for(r),
        );
    }
    let secs = |ms: u64| ms as f64 / 1000.0;
    b.gauge_f64(
        "xvs_sync_resync_duration_seconds",
        "The last resync's length",
    )
    .get_or_create(&none())
    .set(secs(m.resync_ms));
    b.gauge_f64(
        "xvs_sync_lag_seconds",
        "Age of the last sync datagram on arrival",
    )
    .get_or_create(&none())
    .set(secs(m.lag_ms));
    gauge(
        &b.gauge(
            "xvs_sync_resync_connections",
            "Connections the last resync brought",
        ),
        none(),
        m.resync_entries,
    );
    gauge(
        &b.gauge("xvs_sync_ready", "1: this director holds its peers' table"),
        none(),
        m.ready,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::metrics::{encode, Scrape};

    #[test]
    fn sync_families_appear_only_while_sync_runs() {
        let mut s = Scrape::default();
        assert!(!encode(&s).contains("xvs_sync_"));
        let mut m = SyncMetrics {
            sent_datagrams: 4,
            lag_ms: 1500,
            ready: 1,
            ..SyncMetrics::default()
        };
        m.rejected[Reject::ALL
            .iter()
            .position(|r| *r == Reject::BadMac)
            .unwrap()] = 2;
        s.sync = Some(m);
        let text = encode(&s);
        for want in [
            "xvs_sync_sent_datagrams_total 4",
            "xvs_sync_rejected_total{reason=\"bad_mac\"} 2",
            "xvs_sync_rejected_total{reason=\"replayed\"} 0",
            "xvs_sync_refused_total{reason=\"no_real_server\"} 0",
            "xvs_sync_refused_total{reason=\"services_off\"} 0",
            "xvs_sync_services_applied_total 0",
            "xvs_sync_lag_seconds 1.5",
            "xvs_sync_ready 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
