//! The control plane: what `xvs ipvsadm` and the director's control socket
//! speak.
//!
//! The model itself is not here: [`crate::service::ServiceModel`] owns the
//! virtual services, real servers and their ids, and applies
//! [`crate::service::Edit`]s. The front ends here produce those edits:
//! [`ipvsadm`], [`config`] and [`keepalived`]; the health checks
//! ([`crate::health`]) and sync ([`crate::sync`]) post theirs to the daemon.
//!
//! [`ipvsadm`] is the pure half: ipvsadm's command line parsed into a
//! [`ipvsadm::Command`] (a configuration change wraps an `Edit`), `-R`
//! scripts applied as one transaction of the model, and ipvsadm's output
//! formats rendered from plain data. It does no I/O beyond reading
//! `/etc/services` once, for port names.
//!
//! The daemon half: [`daemon`] (the director thread's loop, the one owner
//! of the model: request handling, counters and rates), [`inbox`] (the
//! typed messages other threads post to it), [`protocol`] (the control
//! socket's messages), [`socket`] (the listener the director runs, the
//! `xvs ipvsadm` client, the per-interface lock), [`metrics`] (Prometheus:
//! encodes and serves the numbers the daemon hands it), [`conn`] (the
//! bounded, deadline-held connections those two serve) and [`config`] (the
//! TOML file `xvs director --config` reads, whose services script becomes
//! the start-up model). [`keepalived`] reads keepalived.conf's
//! `virtual_server` blocks into services, checks and failure policies
//! (`xvs director --keepalived FILE`). [`log`] installs the director's log (plain lines or
//! JSON on stderr).
//!
//! Who posts what: the control socket posts an ipvsadm request, the
//! metrics endpoint a scrape; the daemon answers each on its own channel.

pub mod config;
pub mod conn;
pub mod daemon;
pub mod inbox;
pub mod ipvsadm;
pub mod keepalived;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod socket;
pub mod sync_config;
