//! The limits of one director, declared once.
//!
//! The service model refuses edits past them with ipvsadm-style errors that
//! name them, `xvs director` and `--check-config` refuse settings past them,
//! and build.rs sizes the XDP steering program's maps from them (clang `-D`
//! defines), so the model and the data plane cannot disagree: an edit the
//! model takes always fits the maps. README's "Limits" lists them.
//!
//! build.rs compiles this file too: constants only, no `crate::` paths.

/// Virtual services (the `services` map; a connection entry names its
/// service in 16 bits).
pub const MAX_SERVICES: usize = 1 << 16;
/// Real servers, all services together (the per-real-server counters
/// table; a connection entry names its real server in 16 bits).
pub const MAX_REALS: usize = 1 << 16;
/// Distinct NAT real-server endpoints, (protocol, address, port) (the
/// `nat_reals` map). Each is at least one real server.
pub const MAX_NAT_ENDPOINTS: usize = MAX_REALS;
/// Addresses of the director host itself (the `local_addrs` map); a host
/// with more is refused at start.
pub const MAX_LOCAL_ADDRS: usize = 4096;
/// Unicast MACs one director interface answers to (the `own_macs` map):
/// its own and the VRRP virtual MACs held on it, at most 255 for IPv4 and
/// 255 for IPv6 (`00:00:5e:00:01:VRID`, `00:00:5e:00:02:VRID`).
pub const MAX_OWN_MACS: usize = 1 + 2 * 255;
/// rx queue numbers a worker may serve are below this (the `xsks` map), so
/// there are at most this many workers.
pub const MAX_QUEUES: usize = 256;
/// Connections the table may be sized for (`conn_table_size`); slot numbers
/// are 32-bit. About 18 GiB of memory at this size.
pub const MAX_CONN_TABLE: usize = 1 << 28;
