//! The workers: one thread per rx queue, each pinned to a CPU, with what
//! they share (the snapshot slot, the connection table, the real servers'
//! loads) and the handles the control thread reads their counters from.
//!
//! # Contract
//! - [`Workers::spawn`] first moves every thread of the process to the CPUs
//!   no worker has, if any are left (a process-wide effect, meant for the
//!   director's own binary; threads started later inherit it), then starts
//!   one worker per queue, each pinning itself to its CPU.
//! - The snapshot slot ([`Workers::snapshot`]) is where the director
//!   publishes; workers only read it.
//! - [`Workers::stop`] tells every worker to stop and joins them; their
//!   sockets are closed when it returns.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use crossbeam::channel::Sender;

use super::hops::Hops;
use super::programs::Programs;
use super::{err, DirectorError, DirectorOptions};
use crate::conntrack::ConnTable;
use crate::pipeline::{Event, Pipeline, Snapshot};
use crate::service::RealLoads;
use crate::service::RealTraffic;
use crate::xsk::worker::{Worker, WorkerSetup, WorkerShared, WorkerStats};

/// The running workers and what they share.
pub struct Workers {
    shared: Arc<WorkerShared>,
    conns: Arc<ConnTable>,
    loads: Arc<RealLoads>,
    stats: Vec<Arc<WorkerStats>>,
    traffic: Vec<Arc<RealTraffic>>,
    threads: Vec<JoinHandle<()>>,
    /// The CPU of each worker, and those the other threads were moved to
    /// (empty: no CPU was spare, they share the workers').
    worker_cpus: Vec<usize>,
    other_cpus: Vec<usize>,
}

impl Workers {
    /// No worker yet; `first` is the snapshot they will start from.
    pub fn new(first: Arc<Snapshot>, conns: Arc<ConnTable>, loads: Arc<RealLoads>) -> Workers {
        Workers {
            shared: Arc::new(WorkerShared {
                stop: AtomicBool::new(false),
                snapshot: ArcSwap::new(first),
            }),
            conns,
            loads,
            stats: Vec::new(),
            traffic: Vec::new(),
            threads: Vec::new(),
            worker_cpus: Vec::new(),
            other_cpus: Vec::new(),
        }
    }

    /// Moves the other threads off the workers' CPUs, then starts a worker
    /// on each of `queues`, on `cores` in turn, with sockets on every
    /// interface of `hops`, registered with `programs`. Workers ask for
    /// next hops on `resolve_tx` and, with `conn_events`, hand their
    /// connection events there (for sync).
    pub fn spawn(
        &mut self,
        opts: &DirectorOptions,
        queues: &[u32],
        cores: &[core_affinity::CoreId],
        programs: &Programs,
        hops: &Hops,
        (resolve_tx, conn_events): (Sender<IpAddr>, Option<Sender<Event>>),
    ) -> Result<(), DirectorError> {
        // Every thread there is now moves off the workers' CPUs (threads
        // started later inherit that); each worker then pins itself to its
        // own CPU, which a thread may do outside the CPUs it inherited.
        let used: Vec<usize> = (0..queues.len())
            .filter_map(|i| cores.get(i % cores.len().max(1)).map(|c| c.id))
            .collect();
        let spare = crate::cpus::spare(&used);
        if !spare.is_empty() {
            crate::cpus::confine_process(&spare).map_err(err)?;
        }
        self.other_cpus = spare;
        let names: Vec<String> = hops.interfaces().iter().map(|i| i.name.clone()).collect();
        for (index, &queue) in queues.iter().enumerate() {
            let setup_core = cores.get(index % cores.len().max(1)).copied();
            let setup = WorkerSetup {
                index,
                queue,
                core: setup_core,
                batch: opts.batch,
                ring_size: opts.ring_size,
                busy_poll: opts.busy_poll,
                prefetch: opts.batch_prefetch,
            };
            let pipeline = Pipeline::new(
                self.shared.snapshot.load_full(),
                Arc::clone(&self.conns),
                Arc::clone(&self.loads),
                index as u16,
            );
            self.traffic.push(Arc::clone(pipeline.traffic()));
            let waker = hops.waker().map_err(|e| {
                err(format!(
                    "cannot create a wake-up handle for worker {index}: {e}"
                ))
            })?;
            let worker = Worker::new(
                setup,
                &names,
                programs.programs(),
                pipeline,
                (resolve_tx.clone(), waker),
            )
            .map_err(err)?;
            let worker = match &conn_events {
                Some(sink) => worker.with_conn_events(sink.clone()),
                None => worker,
            };
            let stats = Arc::new(WorkerStats::default());
            let (s, sh) = (Arc::clone(&stats), Arc::clone(&self.shared));
            let handle = std::thread::Builder::new()
                .name(format!("xvs-worker-{index}"))
                .spawn(move || worker.run(&sh, &s))
                .map_err(|e| err(format!("cannot start worker thread: {e}")))?;
            self.stats.push(stats);
            self.threads.push(handle);
            if let Some(core) = setup_core {
                self.worker_cpus.push(core.id);
            }
        }
        Ok(())
    }

    /// Where the director publishes the workers' snapshot.
    pub fn snapshot(&self) -> &ArcSwap<Snapshot> {
        &self.shared.snapshot
    }

    pub fn conns(&self) -> &Arc<ConnTable> {
        &self.conns
    }

    pub fn loads(&self) -> &Arc<RealLoads> {
        &self.loads
    }

    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Each worker's per-real-server traffic.
    pub fn traffic(&self) -> &[Arc<RealTraffic>] {
        &self.traffic
    }

    pub fn worker_cpus(&self) -> &[usize] {
        &self.worker_cpus
    }

    pub fn other_cpus(&self) -> &[usize] {
        &self.other_cpus
    }

    /// Stops every worker and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
