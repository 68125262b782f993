//! Which CPUs the workers and the director's other threads run on.
//!
//! Each worker busy-polls one CPU. The other threads (control loop, control
//! socket, metrics, netlink) wake up every few milliseconds; on a worker's
//! CPU each wake-up preempts the worker and its rings wait. So before the
//! workers start, every thread of the process is confined to the CPUs it
//! may use that no worker will have, if there are any, as DPDK keeps its
//! main lcore apart from its forwarding lcores; the workers then pin
//! themselves. With no spare CPU everything shares.

use std::collections::HashSet;

use core_affinity::CoreId;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Parses a CPU list as `taskset -c` takes it: `1`, `0,2`, `4-7`, `0,4-7`.
pub fn parse_list(text: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("{text:?} is not a CPU list (e.g. 1 or 0,2 or 4-7)");
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (lo, hi): (usize, usize) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        if lo > hi {
            return Err(bad());
        }
        if hi >= CpuSet::count() {
            return Err(format!(
                "CPU {hi} is past the largest CPU number xvs handles ({})",
                CpuSet::count() - 1
            ));
        }
        for c in lo..=hi {
            if !cpus.contains(&c) {
                cpus.push(c);
            }
        }
    }
    Ok(cpus)
}

/// `0,2,3` as a person reads it.
pub fn format_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs workers take in turn: `wanted` if given (each must be one this
/// process may run on), else every CPU it may run on.
pub fn worker_cpus(wanted: Option<&[usize]>) -> Result<Vec<CoreId>, String> {
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    match wanted {
        None => Ok(allowed.into_iter().map(|id| CoreId { id }).collect()),
        Some([]) => Err("the worker CPU list is empty".into()),
        Some(list) => match list.iter().find(|c| !allowed.contains(c)) {
            Some(c) => Err(format!(
                "CPU {c} is not one this process may run on (allowed: {})",
                format_list(&allowed)
            )),
            None => Ok(list.iter().map(|&id| CoreId { id }).collect()),
        },
    }
}

/// The CPUs left for the other threads: those this thread may run on that
/// no worker has.
pub fn spare(workers: &[usize]) -> Vec<usize> {
    let taken: HashSet<usize> = workers.iter().copied().collect();
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .filter(|c| !taken.contains(c))
        .collect()
}

/// Confines every thread of this process to `cpus`. Threads started later
/// inherit their creator's CPUs.
pub fn confine_process(cpus: &[usize]) -> Result<(), String> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(|e| format!("CPU {c}: {e}"))?;
    }
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("cannot list this process's threads: {e}"))?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            // A thread that ended meanwhile needs no CPU.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(format!(
                    "cannot move thread {tid} to CPU(s) {}: {e}",
                    format_list(cpus)
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_taskset_takes_them() {
        assert_eq!(parse_list("1"), Ok(vec![1]));
        assert_eq!(parse_list("0,2"), Ok(vec![0, 2]));
        assert_eq!(parse_list("4-7"), Ok(vec![4, 5, 6, 7]));
        assert_eq!(parse_list("0, 4-5,4"), Ok(vec![0, 4, 5]));
        assert!(parse_list("100000")
            .unwrap_err()
            .contains("CPU 100000 is past"));
        for bad in ["", "a", "3-1", "1,", "-2", "1-"] {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_list(&[0, 2, 3]), "0,2,3");
    }

    #[test]
    fn worker_cpus_must_be_allowed() {
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            worker_cpus(None)
                .unwrap()
                .iter()
                .map(|c| c.id)
                .collect::<Vec<_>>(),
            allowed
        );
        let first = allowed[0];
        assert_eq!(worker_cpus(Some(&[first])).unwrap()[0].id, first);
        let outside = (0..CpuSet::count()).find(|c| !allowed.contains(c)).unwrap();
        let e = worker_cpus(Some(&[outside])).unwrap_err();
        assert!(e.contains(&format!("CPU {outside} is not one")), "{e}");
        assert!(worker_cpus(Some(&[])).is_err());
        assert!(spare(&allowed).is_empty());
        assert_eq!(spare(&allowed[1..]), vec![first]);
    }
}
