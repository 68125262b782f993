//! The checking runtime: a small tokio runtime of its own (two worker
//! threads), one task per target that sleeps, checks, counts and reports,
//! and the notify hooks. The daemon's thread only calls in to replace the
//! targets or read their status; nothing it calls waits on a check.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::process::Command;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use super::check::{service_words, target_env, Checker, Group};
use super::state::{first_delay, next_start, Change, Health, Outcome};
use super::{Report, Target};
use crate::service::ServiceKey;

/// How the runtime runs; [`MonitorOptions::default`] is what the daemon uses.
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    /// The runtime's worker threads.
    pub threads: usize,
    /// How long a notify hook may run before it is killed.
    pub notify_timeout: Duration,
}

impl Default for MonitorOptions {
    fn default() -> MonitorOptions {
        MonitorOptions {
            threads: 2,
            notify_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs the checks of a set of [`Target`]s and reports their transitions.
pub struct Monitor {
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
    targets: Mutex<HashMap<(ServiceKey, SocketAddr), Running>>,
    /// The latencies of targets gone (or of a kind they no longer are),
    /// per checker type, so that [`Monitor::latency_by_kind`] never falls.
    retired: Mutex<Vec<(&'static str, LatencyHistogram)>>,
}

/// One target as it stands now (for `xvs status` and metrics).
#[derive(Clone, Debug)]
pub struct TargetStatus {
    pub service: ServiceKey,
    pub real: SocketAddr,
    /// The checker's name ([`CheckKind::name`](super::CheckKind::name)).
    pub kind: &'static str,
    pub up: bool,
    /// When the target entered its present state (or started being checked).
    pub since: SystemTime,
    /// Up-to-down and down-to-up changes since it started being checked.
    pub transitions: u64,
    /// The weight a dynamic exec check asked for (None: the configured one).
    pub weight: Option<u32>,
    /// The last check's result; None before the first check ends.
    pub last: Option<CheckOutcome>,
    /// The time every check of this target took, failed ones included.
    pub latency: LatencyHistogram,
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub ok: bool,
    /// From the start of the check to its verdict (the timeout, if it ran out).
    pub latency: Duration,
    /// Why it failed, in words; empty when it succeeded.
    pub reason: String,
    /// When it ended.
    pub at: SystemTime,
}

/// Check latencies, shaped as a Prometheus histogram: `counts[i]` is the
/// number of checks that took at most `BOUNDS[i]` seconds (cumulative),
/// `count` all of them (the `+Inf` bucket), `sum` their total in seconds.
/// Histograms of one checker type add up with [`LatencyHistogram::merge`]
/// (see [`by_kind`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    pub counts: [u64; LatencyHistogram::BOUNDS.len()],
    pub count: u64,
    pub sum: f64,
}

impl LatencyHistogram {
    /// The upper bounds of the buckets, in seconds.
    pub const BOUNDS: [f64; 14] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];

    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: [0; LatencyHistogram::BOUNDS.len()],
            count: 0,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (count, bound) in self.counts.iter_mut().zip(LatencyHistogram::BOUNDS) {
            if secs <= bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Adds `other`'s checks to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count += more;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// `(upper bound in seconds, cumulative count)` per bucket, `+Inf` last.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LatencyHistogram::BOUNDS
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
            .chain(std::iter::once((f64::INFINITY, self.count)))
    }
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

/// The latency histograms of `statuses` added up per checker type, in
/// the order the types first appear. Targets gone take their checks with
/// them; [`Monitor::latency_by_kind`] keeps those too.
pub fn by_kind(statuses: &[TargetStatus]) -> Vec<(&'static str, LatencyHistogram)> {
    let mut out: Vec<(&'static str, LatencyHistogram)> = Vec::new();
    for status in statuses {
        match out.iter_mut().find(|(kind, _)| *kind == status.kind) {
            Some((_, histogram)) => histogram.merge(&status.latency),
            None => out.push((status.kind, status.latency.clone())),
        }
    }
    out
}

/// What every task shares: the sink, the checkers, the options.
struct Shared {
    sink: Box<dyn Fn(Report) + Send + Sync>,
    checker: Checker,
    options: MonitorOptions,
}

/// A target whose task runs.
struct Running {
    target: Target,
    state: Arc<Mutex<State>>,
    task: AbortHandle,
}

/// A target's state as its task keeps it and `status` reads it.
struct State {
    /// Which task may write: a restarted target's old task, aborted but
    /// perhaps still finishing a poll, finds another generation and stops.
    generation: u64,
    health: Health,
    since: SystemTime,
    transitions: u64,
    last: Option<CheckOutcome>,
    latency: LatencyHistogram,
}

impl Monitor {
    /// Starts the checking runtime on its own threads. `sink` is called
    /// (from a runtime thread) once per transition or dynamic weight
    /// change, and at once for each new target that starts down
    /// (`start_down`); it must not block for long, nor call the monitor.
    /// Reports of one target come in order. Dropping or stopping the
    /// monitor must happen outside any tokio runtime.
    pub fn start(sink: Box<dyn Fn(Report) + Send + Sync>) -> std::io::Result<Monitor> {
        Monitor::with_options(sink, MonitorOptions::default())
    }

    /// [`Monitor::start`] with other options.
    pub fn with_options(
        sink: Box<dyn Fn(Report) + Send + Sync>,
        options: MonitorOptions,
    ) -> std::io::Result<Monitor> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("xvs-health")
            .enable_all()
            .build()?;
        Ok(Monitor {
            runtime: Some(runtime),
            shared: Arc::new(Shared {
                sink,
                checker: Checker::new()?,
                options,
            }),
            targets: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// Replaces the set of targets. A target equal by (service, real)
    /// keeps its state, counts and schedule if its check and notify are
    /// unchanged; if they changed it restarts in the state it had (no
    /// report: the daemon knows that state), with counts and schedule
    /// anew. New targets start; gone ones stop (a check in flight is
    /// abandoned, a notify hook already started runs on). Never waits on
    /// a check.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let mut running = lock(&self.targets);
        let mut next = HashMap::with_capacity(targets.len());
        for target in targets {
            let key = (target.service, target.real);
            if next.contains_key(&key) {
                continue;
            }
            let entry = match running.remove(&key) {
                Some(old) if old.target == target => old,
                Some(old) => {
                    old.task.abort();
                    let health = {
                        let mut state = lock(&old.state);
                        let kind = old.target.check.kind.name();
                        if kind != target.check.kind.name() {
                            self.retire(kind, std::mem::take(&mut state.latency));
                        }
                        state.generation += 1;
                        let weight = state.health.weight;
                        state.health = Health {
                            weight,
                            ..Health::starting(state.health.up)
                        };
                        state.health.clone()
                    };
                    self.spawn(runtime, target, old.state, health, false)
                }
                None => {
                    let health = Health::new(&target.check);
                    let state = Arc::new(Mutex::new(State {
                        generation: 0,
                        health: health.clone(),
                        since: SystemTime::now(),
                        transitions: 0,
                        last: None,
                        latency: LatencyHistogram::new(),
                    }));
                    let announce = !health.up;
                    self.spawn(runtime, target, state, health, announce)
                }
            };
            next.insert(key, entry);
        }
        for (_, gone) in running.drain() {
            gone.task.abort();
            let mut state = lock(&gone.state);
            state.generation += 1;
            self.retire(
                gone.target.check.kind.name(),
                std::mem::take(&mut state.latency),
            );
        }
        *running = next;
    }

    fn retire(&self, kind: &'static str, latency: LatencyHistogram) {
        let mut retired = lock(&self.retired);
        match retired.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => total.merge(&latency),
            None => retired.push((kind, latency)),
        }
    }

    /// The latencies of every check this monitor ran, per checker type,
    /// targets gone included: totals that only grow, as a Prometheus
    /// histogram's must ([`by_kind`] of [`Monitor::status`] drops the
    /// checks of targets gone).
    pub fn latency_by_kind(&self) -> Vec<(&'static str, LatencyHistogram)> {
        let mut out = by_kind(&self.status());
        for (kind, latency) in lock(&self.retired).iter() {
            match out.iter_mut().find(|(k, _)| k == kind) {
                Some((_, total)) => total.merge(latency),
                None => out.push((kind, latency.clone())),
            }
        }
        out
    }

    fn spawn(
        &self,
        runtime: &Runtime,
        target: Target,
        state: Arc<Mutex<State>>,
        health: Health,
        announce: bool,
    ) -> Running {
        let generation = lock(&state).generation;
        let task = runtime.spawn(watch(
            self.shared.clone(),
            target.clone(),
            state.clone(),
            generation,
            health,
            announce,
        ));
        Running {
            target,
            state,
            task: task.abort_handle(),
        }
    }

    /// Every target as it stands now, in no particular order.
    pub fn status(&self) -> Vec<TargetStatus> {
        let running = lock(&self.targets);
        running
            .values()
            .map(|r| {
                let state = lock(&r.state);
                TargetStatus {
                    service: r.target.service,
                    real: r.target.real,
                    kind: r.target.check.kind.name(),
                    up: state.health.up,
                    since: state.since,
                    transitions: state.transitions,
                    weight: state.health.weight,
                    last: state.last.clone(),
                    latency: state.latency.clone(),
                }
            })
            .collect()
    }

    /// Stops every check and hook and joins the runtime's threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for (_, r) in lock(&self.targets).drain() {
            r.task.abort();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One target's life: the warmup, then check, count, report, sleep.
async fn watch(
    shared: Arc<Shared>,
    target: Target,
    state: Arc<Mutex<State>>,
    generation: u64,
    mut health: Health,
    announce: bool,
) {
    let spec = &target.check;
    if announce {
        let state = lock(&state);
        if state.generation != generation {
            return;
        }
        (shared.sink)(Report {
            service: target.service,
            real: target.real,
            up: false,
            weight: None,
            reason: "starts down until its first success (alpha)".into(),
        });
    }
    // When the next check is due: intervals count from when a check was
    // due, not from when its task woke, so a busy machine adds no drift.
    let mut due = Instant::now() + first_delay(spec, super::random());
    loop {
        tokio::time::sleep_until(due.into()).await;
        let started = Instant::now();
        let outcome: Outcome = shared.checker.check(&target).await;
        let ended = Instant::now();
        let (change, next) = health.record(spec, &outcome);
        {
            let mut state = lock(&state);
            if state.generation != generation {
                return;
            }
            let latency = ended - started;
            state.latency.observe(latency);
            state.last = Some(CheckOutcome {
                ok: outcome.is_ok(),
                latency,
                reason: outcome.clone().err().unwrap_or_default(),
                at: SystemTime::now(),
            });
            state.health = health.clone();
            if let Some(change) = change {
                let reason = match &outcome {
                    Ok(_) if change == Change::Weight => "dynamic weight".to_string(),
                    Ok(_) => "check succeeded".to_string(),
                    Err(reason) => reason.clone(),
                };
                if change == Change::Transition {
                    state.transitions += 1;
                    state.since = SystemTime::now();
                    notify(&shared, &target, health.up, &reason);
                }
                (shared.sink)(Report {
                    service: target.service,
                    real: target.real,
                    up: health.up,
                    weight: health.weight,
                    reason,
                });
            }
        }
        due = next_start(spec, due, ended, next);
    }
}

/// Starts the target's notify hook for its new state, if it has one, on a
/// task of its own: `sh -c COMMAND` with XVS_REAL, XVS_SERVICE, XVS_STATE
/// ("up" or "down") and XVS_REASON in its environment, its own process
/// group killed at the notify timeout.
fn notify(shared: &Arc<Shared>, target: &Target, up: bool, reason: &str) {
    let command = if up {
        &target.notify.up
    } else {
        &target.notify.down
    };
    let Some(command) = command.clone() else {
        return;
    };
    let env = target_env(target);
    let state = if up { "up" } else { "down" };
    let reason = reason.to_string();
    let timeout = shared.options.notify_timeout;
    let what = format!("{} {}", service_words(target), target.real);
    tokio::spawn(async move {
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .envs(env)
            .env("XVS_STATE", state)
            .env("XVS_REASON", &reason)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!("notify hook for {what} could not start: {e}");
                return;
            }
        };
        let mut group = Group(child.id());
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => {
                group.0 = None;
                if !status.success() {
                    tracing::warn!("notify hook for {what} ({state}) failed: {status}");
                }
            }
            Ok(Err(e)) => tracing::warn!("notify hook for {what}: {e}"),
            Err(_) => {
                tracing::warn!(
                    "notify hook for {what} ({state}) ran past {}, killed",
                    super::check::words(timeout)
                );
                drop(group);
                let _ = child.wait().await;
            }
        }
    });
}
