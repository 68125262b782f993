//! Start-up checks that touch nothing: privileges, the workers' rx queues
//! and the memory the connection table and AF_XDP frames need.
//!
//! [`Director::start`](super::Director::start) runs them before anything
//! is allocated or attached, and `--check-config` runs the queue and memory
//! checks without root. Each refusal names what is wrong and what to do.

use std::path::Path;

use super::{err, DirectorError, DirectorOptions};
use crate::conntrack::ConnTable;
use crate::limits::MAX_QUEUES;
use crate::neigh::netlink::{self, Interface};

/// The director's interfaces as the kernel has them, each named once.
pub fn interfaces(names: &[String]) -> Result<Vec<Interface>, DirectorError> {
    if names.is_empty() {
        return Err(err("no interface given: name at least one with -i IFACE"));
    }
    let mut ifaces = Vec::new();
    for name in names {
        if ifaces.iter().any(|i: &Interface| &i.name == name) {
            return Err(err(format!("interface {name} given twice")));
        }
        ifaces.push(netlink::interface(name).map_err(err)?);
    }
    Ok(ifaces)
}

/// The rx queue of each worker: `queues` as given, else `0..workers`, else
/// one per rx queue of the first interface, at most one per worker CPU
/// (`cpus` of them) and [`MAX_QUEUES`]. Each must exist on every interface
/// and be below [`MAX_QUEUES`].
pub fn worker_queues(
    opts: &DirectorOptions,
    ifaces: &[Interface],
    cpus: usize,
) -> Result<Vec<u32>, DirectorError> {
    let most = MAX_QUEUES as u32;
    let queues: Vec<u32> = match (&opts.queues, opts.workers) {
        (Some(q), _) => q.clone(),
        (None, Some(n)) if n > MAX_QUEUES => {
            return Err(err(format!(
                "--workers {n}: at most {MAX_QUEUES} (one per rx queue, queues 0 to {})",
                most - 1
            )))
        }
        (None, Some(n)) => (0..n as u32).collect(),
        (None, None) => {
            let first = ifaces.first().map_or(1, |i| i.rx_queues);
            (0..first.min(cpus.max(1) as u32).min(most)).collect()
        }
    };
    if queues.is_empty() {
        return Err(err("--workers must be at least 1"));
    }
    if let Some(q) = queues.iter().find(|&&q| q >= most) {
        return Err(err(format!(
            "queue {q} is past {}, the highest rx queue xvs can serve",
            most - 1
        )));
    }
    for i in ifaces {
        if let Some(&q) = queues.iter().find(|&&q| q >= i.rx_queues) {
            return Err(err(format!(
                "interface {} has {} rx queue(s); queue {q} does not exist \
                 (use fewer workers, or more queues: ethtool -L {} combined N)",
                i.name, i.rx_queues, i.name
            )));
        }
    }
    Ok(queues)
}

/// What bounds the memory this process can have: the machine's
/// MemAvailable and the process's address-space and data limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBounds {
    /// `MemAvailable` in `/proc/meminfo`, bytes.
    pub available: Option<u64>,
    /// `RLIMIT_AS` (`ulimit -v`), bytes; `None` if unlimited.
    pub address_space: Option<u64>,
    /// `RLIMIT_DATA` (`ulimit -d`), bytes; `None` if unlimited.
    pub data: Option<u64>,
}

impl MemoryBounds {
    /// This machine's and this process's, now. What cannot be read is `None`.
    pub fn current() -> MemoryBounds {
        use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
        let limit = |r| match getrlimit(r) {
            Ok((soft, _)) if soft != RLIM_INFINITY => Some(soft),
            _ => None,
        };
        let meminfo =
            crate::files::read_text(Path::new("/proc/meminfo"), crate::files::MAX_SYSTEM_BYTES);
        MemoryBounds {
            available: meminfo.ok().as_deref().and_then(mem_available),
            address_space: limit(Resource::RLIMIT_AS),
            data: limit(Resource::RLIMIT_DATA),
        }
    }
}

/// `MemAvailable:` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut w = line.split_whitespace().skip(1);
    let kb: u64 = w.next()?.parse().ok()?;
    (w.next() == Some("kB")).then_some(kb.saturating_mul(1024))
}

/// Bytes of AF_XDP frames (UMEM) `workers` workers on `interfaces`
/// interfaces take: two rings' worth of frames per interface each
/// (`xsk::worker`'s layout).
fn frame_bytes(opts: &DirectorOptions, interfaces: usize, workers: usize) -> u64 {
    let frame = u64::from(crate::xsk::worker::FRAME_SIZE);
    (workers as u64)
        .saturating_mul(interfaces.max(1) as u64)
        .saturating_mul(u64::from(opts.ring_size) * 2 * frame)
}

/// Refuses a start whose connection table and AF_XDP frames would not fit
/// in the memory this machine has available or this process may map,
/// naming the numbers. Start-up runs it before allocating;
/// `--check-config` too.
pub fn check_memory(
    opts: &DirectorOptions,
    interfaces: usize,
    workers: usize,
) -> Result<(), DirectorError> {
    memory_fits(opts, interfaces, workers, &MemoryBounds::current())
}

fn memory_fits(
    opts: &DirectorOptions,
    interfaces: usize,
    workers: usize,
    bounds: &MemoryBounds,
) -> Result<(), DirectorError> {
    use crate::files::size_text;
    let n = opts.conn_table_size;
    let frames = frame_bytes(opts, interfaces, workers);
    let Some(table) = ConnTable::memory_needed(n).map(|b| b as u64) else {
        return Err(err(format!(
            "conn_table_size = {n} is larger than memory can address"
        )));
    };
    let needed = table.saturating_add(frames);
    let limits = [
        (
            bounds.available,
            "this machine has available (MemAvailable in /proc/meminfo)",
        ),
        (
            bounds.address_space,
            "this process may map (RLIMIT_AS, ulimit -v)",
        ),
        (
            bounds.data,
            "this process may allocate (RLIMIT_DATA, ulimit -d)",
        ),
    ];
    for (limit, what) in limits {
        if let Some(limit) = limit.filter(|&l| needed > l) {
            return Err(err(format!(
                "conn_table_size = {n} needs {} for the connection table (about {} bytes a \
                 connection), and {workers} worker(s) need {} of AF_XDP frames: more than \
                 the {} {what}; give a smaller conn_table_size (or ring_size, or fewer workers)",
                size_text(table),
                table / n.max(1) as u64,
                size_text(frames),
                size_text(limit),
            )));
        }
    }
    Ok(())
}

/// Root, or the capabilities xvs needs: CAP_NET_ADMIN, CAP_NET_RAW, and
/// CAP_BPF with CAP_PERFMON (the verifier refuses the steering program's
/// pointer arithmetic without it) or CAP_SYS_ADMIN. CAP_IPC_LOCK is needed
/// too where the memlock limit is below the UMEM; that shows as a UMEM
/// error naming `ulimit -l`.
pub fn check_privileges() -> Result<(), DirectorError> {
    if crate::xsk::euid() == 0 {
        return Ok(());
    }
    let status = Path::new("/proc/self/status");
    let caps = crate::files::read_text(status, crate::files::MAX_SYSTEM_BYTES)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .map(str::to_owned)
        })
        .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let bpf = (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN);
    if has(CAP_NET_ADMIN) && has(CAP_NET_RAW) && bpf {
        return Ok(());
    }
    Err(err(
        "xvs director needs root, or the capabilities CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and \
         CAP_PERFMON (e.g. sudo xvs director ..., the xvs.service unit, or setcap \
         cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon,cap_ipc_lock+ep on the binary)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, rx_queues: u32) -> Interface {
        Interface {
            name: name.into(),
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            up: true,
            addrs: Vec::new(),
            rx_queues,
        }
    }

    fn queues(
        workers: Option<usize>,
        queues: Option<Vec<u32>>,
        rx: u32,
        cpus: usize,
    ) -> Result<Vec<u32>, String> {
        let opts = DirectorOptions {
            workers,
            queues,
            ..DirectorOptions::default()
        };
        worker_queues(&opts, &[iface("d0", rx)], cpus).map_err(|e| e.0)
    }

    #[test]
    fn worker_queues_are_bounded_by_the_interface_and_the_xsks_map() {
        assert_eq!(queues(None, None, 4, 2), Ok(vec![0, 1]));
        assert_eq!(
            queues(None, None, 1024, 1024).map(|q| q.len()),
            Ok(MAX_QUEUES)
        );
        assert_eq!(queues(Some(3), None, 4, 1), Ok(vec![0, 1, 2]));
        assert_eq!(queues(None, Some(vec![3]), 4, 1), Ok(vec![3]));
        let e = queues(Some(1_000_000_000), None, 4, 2).unwrap_err();
        assert_eq!(
            e,
            "--workers 1000000000: at most 256 (one per rx queue, queues 0 to 255)"
        );
        let e = queues(None, Some(vec![u32::MAX]), 4, 2).unwrap_err();
        assert_eq!(
            e,
            "queue 4294967295 is past 255, the highest rx queue xvs can serve"
        );
        let e = queues(None, Some(vec![0, 4]), 4, 2).unwrap_err();
        assert!(
            e.starts_with("interface d0 has 4 rx queue(s); queue 4 does not exist"),
            "{e}"
        );
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24684084 kB\nMemFree:        12977552 kB\nMemAvailable:   24195320 kB\n";
        assert_eq!(mem_available(text), Some(24195320 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert!(MemoryBounds::current().available.is_some(), "/proc/meminfo");
    }

    #[test]
    fn a_table_larger_than_memory_allows_is_refused_with_the_numbers() {
        let opts = DirectorOptions {
            conn_table_size: 1 << 28,
            ..DirectorOptions::default()
        };
        let table = ConnTable::memory_needed(1 << 28).unwrap() as u64;
        let frames = 2 * 2048 * 2 * 4096;
        let gib = 1u64 << 30;
        let fits = |b: MemoryBounds| memory_fits(&opts, 2, 1, &b).map_err(|e| e.0);
        assert_eq!(fits(MemoryBounds::default()), Ok(()));
        let plenty = MemoryBounds {
            available: Some(table + frames),
            address_space: Some(64 * gib),
            data: None,
        };
        assert_eq!(fits(plenty), Ok(()));
        let e = fits(MemoryBounds {
            available: Some(3 * gib),
            ..plenty
        })
        .unwrap_err();
        assert_eq!(
            e,
            format!(
                "conn_table_size = 268435456 needs {} for the connection table (about {} bytes a \
                 connection), and 1 worker(s) need 32 MiB of AF_XDP frames: more than the 3 GiB \
                 this machine has available (MemAvailable in /proc/meminfo); give a smaller \
                 conn_table_size (or ring_size, or fewer workers)",
                crate::files::size_text(table),
                table >> 28
            )
        );
        let e = fits(MemoryBounds {
            address_space: Some(2 * gib),
            ..plenty
        })
        .unwrap_err();
        assert!(
            e.contains("more than the 2 GiB this process may map (RLIMIT_AS, ulimit -v)"),
            "{e}"
        );
        let e = fits(MemoryBounds {
            data: Some(table),
            ..plenty
        })
        .unwrap_err();
        assert!(e.contains("(RLIMIT_DATA, ulimit -d)"), "{e}");
        // The frames count too: many workers with big rings.
        let rings = DirectorOptions {
            conn_table_size: 1024,
            ring_size: 1 << 16,
            ..DirectorOptions::default()
        };
        let e = memory_fits(
            &rings,
            2,
            256,
            &MemoryBounds {
                available: Some(64 * gib),
                ..MemoryBounds::default()
            },
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("256 worker(s) need 256 GiB of AF_XDP frames"),
            "{e}"
        );
    }
}
