//! Prometheus metrics: the text exposition format over plain HTTP.
//!
//! `--metrics-addr ADDR:PORT` (off by default) starts a thread that
//! answers `GET /metrics` (any other path: 404). Each scrape is a
//! [`Message::Scrape`] to the daemon, which reads the counters into a
//! [`Scrape`] on its thread; the scrape's own thread encodes it with
//! `prometheus-client`. Connections are bounded ([`MAX_SCRAPES`] at once,
//! one more is answered 503 at once) and each has deadlines, so idle or
//! slow clients delay no other scrape.
//!
//! [`Message::Scrape`]: crate::control::inbox::Message::Scrape
//!
//! # Metrics
//! Per service (`service="TCP 192.0.2.10:80"`) and real server
//! (`real="198.51.100.2:8080"`), the same numbers as `ipvsadm -L --stats`
//! (so `-Z` resets them, which Prometheus reads as a counter reset):
//! `xvs_service_connections_total`, `xvs_service_packets_total` and
//! `xvs_service_bytes_total` (`direction="in|out"`), the same three as
//! `xvs_real_*`, and gauges `xvs_real_active_connections`,
//! `xvs_real_inactive_connections`, `xvs_real_persistent_connections`,
//! `xvs_real_weight` (as configured) and `xvs_real_effective_weight` (as
//! scheduled: 0 while down, a dynamic check's weight while up; a sorry
//! server is listed as a real server too, at 0 while not in use).
//! Health checks ([`health`]): `xvs_real_up`, `xvs_real_transitions_total`
//! (labels `service`, `real`, `check`) and the histogram
//! `xvs_health_check_duration_seconds{check}`.
//! Per worker (`worker="0"`): `xvs_worker_rx_frames_total`,
//! `xvs_worker_tx_frames_total`,
//! `xvs_worker_new_connections_total`, `xvs_worker_drops_total`
//! (`reason=` the `DropReason` label; the unclaimed reasons `not_ip`,
//! `other_protocol`, `no_connection`, `icmp_no_connection` count frames the
//! steering program should have left to the kernel), `xvs_worker_tx_ring_full_total`,
//! `xvs_worker_bad_port_total`, `xvs_worker_icmp_too_big_total`,
//! `xvs_worker_checksums_completed_total` (partial checksums finished),
//! `xvs_worker_tcp_resets_sent_total` (answers to segments of no connection),
//! `xvs_worker_outbox_overflow_total` and `xvs_worker_conn_events_dropped_total`
//! (pipeline events lost for want of room), the
//! kernel's AF_XDP counters `xvs_worker_xsk_rx_dropped_total`,
//! `xvs_worker_xsk_rx_ring_full_total`, `xvs_worker_xsk_fill_ring_empty_total`,
//! `xvs_worker_xsk_invalid_descs_total`, frame accounting
//! `xvs_worker_frames{place="total|free|fill|tx|held"}`, frames held for a
//! next hop's MAC and of those sent once it was known
//! (`xvs_worker_neighbour_held_total`, `xvs_worker_neighbour_held_sent_total`),
//! and batch latency
//! `xvs_worker_batch_duration_seconds{quantile="0.5|0.9|0.99|0.999|1"}`
//! with `xvs_worker_batches` (batches in the histogram).
//! Connection table: `xvs_conntrack_connections`, `xvs_conntrack_templates`,
//! `xvs_conntrack_half_open`, `xvs_conntrack_capacity`,
//! `xvs_conntrack_table_full_total`, `xvs_conntrack_reply_conflicts_total`,
//! `xvs_conntrack_template_gone_total`, `xvs_conntrack_released_total`.
//! Per director interface (`interface="eth0"`):
//! `xvs_steering_not_for_us_total`, service frames the steering program
//! left to the kernel because their destination MAC was another host's
//! (a switch flooding the other director's frames), and
//! `xvs_steering_no_socket_total`, frames for xvs it dropped because their
//! rx queue had no socket (no worker serves that queue).
//!
//! Connection sync, while it runs: `xvs_sync_*` (`metrics::sync`).
//!
//! `tools/grafana/xvs.json` is a dashboard over these; a test in
//! [`encode`] fails if it queries a name or label the encoder does not emit.
//!
//! # Parts
//! The daemon builds a [`Scrape`] ([`scrape`]); [`encode()`] turns it into
//! the text format; [`serve()`] answers HTTP, asking the daemon's inbox for
//! each scrape. The worker counters' three renderings (read, encoded, the
//! exit summary) are together in [`workers`]. Nothing here reads the
//! director or the model: metrics see only what the daemon hands them.

mod encode;
pub mod health;
pub mod scrape;
mod serve;
mod sync;
pub mod workers;

pub use encode::encode;
pub use health::{HealthMetrics, TargetMetrics};
pub use scrape::{RealMetrics, Scrape, ServiceMetrics};
pub use serve::{serve, MAX_SCRAPES};
pub use workers::{worker_summary, WorkerMetrics, QUANTILES};
