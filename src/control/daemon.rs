//! The director thread's half of the control plane: it owns the
//! [`ServiceModel`], answers ipvsadm requests and keeps the counters that
//! `-Z`, `--stats` and `--rate` need.
//!
//! # Contract
//! - A configuration change (`-A -E -D -C -a -e -d`, a whole `-R`) is
//!   applied to a copy of the model; only if it succeeds is the copy kept and
//!   published ([`Director::set_services`]: workers' snapshot, then the XDP
//!   maps) before the reply is sent. If publishing fails the previous model
//!   is put back and published again. A failed change changes nothing.
//! - Real servers that are gone have their connections expired at once
//!   ([`ConnTable::expire_dest`], IPVS's `expire_nodest_conn`). Changes
//!   that keep a real server (weight, quiesce, method, scheduler) leave its
//!   connections alone.
//! - Counters: workers count per real server ([`DestTraffic`]) since start.
//!   The control plane keeps a baseline per real server, taken when the
//!   server is added (a reused id starts from zero) and on `-Z`; `--stats`
//!   prints the counters minus the baseline. A service's totals are its
//!   real servers' plus what real servers deleted from it had counted
//!   (IPVS keeps service counters apart from its destinations').
//! - Rates, as IPVS's estimator (`ip_vs_est.c`): every 2 s the counters'
//!   change over the interval is turned into a per-second rate and folded
//!   into an average with weight 1/4 (`avg += (rate - avg) / 4`), so a step
//!   in traffic shows fully after about 10 s. `-Z` zeroes the averages.
//!
//! [`ConnTable::expire_dest`]: crate::conntrack::ConnTable::expire_dest
//! [`DestTraffic`]: crate::pipeline::DestTraffic

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ipvsadm::{
    self, parse_restore, render, save, Command, ListStats, ListWhat, RateStats, RealCounts,
    RealStats, ServiceModel, ServiceStats, Services, TotalStats, EXIT_FAILED,
};
use super::metrics;
use super::protocol::{Request, Response};
use super::socket::Job;
use crate::director::Director;
use crate::service::{DestId, ServiceKey};

/// How often rates are estimated (IPVS: 2 s).
pub const RATE_INTERVAL: Duration = Duration::from_secs(2);

/// The control plane's state on the director thread.
pub struct Control {
    model: ServiceModel,
    names: &'static Services,
    /// Per real server: raw counters at its addition or last `-Z`.
    baseline: HashMap<DestId, TotalStats>,
    /// Per service: what its deleted real servers had counted since `-Z`.
    retired: HashMap<ServiceKey, TotalStats>,
    rates: Rates,
}

/// The director's state a request reads: what [`Control`] needs from it.
pub trait Plane {
    /// Each real server's counters since start, summed over workers.
    fn raw_totals(&self, id: DestId) -> TotalStats;
    fn real_counts(&self, id: DestId) -> RealCounts;
}

impl Plane for Director {
    fn raw_totals(&self, id: DestId) -> TotalStats {
        let mut t = TotalStats::default();
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for w in self.traffic() {
            if let Some(s) = w.get(id) {
                t.conns += l(&s.conns);
                t.inpkts += l(&s.in_pkts);
                t.inbytes += l(&s.in_bytes);
                t.outpkts += l(&s.out_pkts);
                t.outbytes += l(&s.out_bytes);
            }
        }
        t
    }

    fn real_counts(&self, id: DestId) -> RealCounts {
        self.dests()
            .get(id)
            .map(|c| RealCounts {
                active: c.active(),
                inactive: c.inactive(),
                persistent: c.persistent(),
            })
            .unwrap_or_default()
    }
}

impl Control {
    /// Takes over `model` (already published by `Director::start`).
    pub fn new(model: ServiceModel, director: &Director) -> Control {
        let mut c = Control {
            model,
            names: Services::system(),
            baseline: HashMap::new(),
            retired: HashMap::new(),
            rates: Rates::new(Instant::now()),
        };
        for id in c.ids() {
            c.baseline.insert(id, director.raw_totals(id));
        }
        c
    }

    pub fn model(&self) -> &ServiceModel {
        &self.model
    }

    /// Carries out one job from the control socket or the metrics endpoint.
    pub fn serve(&mut self, director: &mut Director, job: Job) {
        match job {
            Job::Ipvsadm { request, reply } => {
                let _ = reply.send(self.handle(director, &request));
            }
            Job::Metrics { reply } => {
                let _ = reply.send(metrics::render(director, self));
            }
        }
    }

    /// Estimates rates when [`RATE_INTERVAL`] has passed; call every round.
    pub fn tick(&mut self, director: &Director) {
        let now = Instant::now();
        if now.duration_since(self.rates.last) >= RATE_INTERVAL {
            let stats = self.totals(director);
            self.rates.sample(now, &stats);
        }
    }

    /// One ipvsadm invocation.
    pub fn handle(&mut self, director: &mut Director, request: &Request) -> Response {
        let command = match ipvsadm::parse(&request.args) {
            Ok(c) => c,
            Err(e) => return Response::error(e.exit_code, e),
        };
        match command {
            Command::Help => Response::ok(render::usage()),
            Command::Version => Response::ok(render::version()),
            Command::List(opts) => match opts.what {
                ListWhat::Connections => {
                    let mut entries = director.conns().entries(director.now());
                    entries.sort_by_key(|e| (e.template, e.virt, e.client));
                    Response::ok(render::connections(&entries, &opts, self.names))
                }
                ListWhat::Timeout => {
                    let t = director.conns().timeouts();
                    Response::ok(render::timeouts(t.tcp, t.tcpfin, t.udp))
                }
                _ => {
                    let stats = self.list_stats(director);
                    let size = director.conns().capacity();
                    match render::list(
                        self.model.services(),
                        &stats,
                        &opts,
                        size.0 + size.1,
                        self.names,
                    ) {
                        Ok(out) => Response::ok(out),
                        Err(e) => Response::error(e.exit_code(), e),
                    }
                }
            },
            Command::Save { numeric } => {
                Response::ok(save::save(self.model.services(), numeric, self.names))
            }
            Command::Restore => {
                let text = request.stdin.as_deref().unwrap_or("");
                let script = match parse_restore(text, self.names) {
                    Ok(s) => s,
                    Err(e) => return Response::error(e.exit_code, e),
                };
                let mut next = self.model.clone();
                let reusable = reusable(director);
                match next.restore(&script, &reusable) {
                    Ok(outcome) => {
                        if let Err(e) = self.commit(director, next, &outcome.removed) {
                            return e;
                        }
                        for c in &outcome.deferred {
                            self.side_effect(director, c);
                        }
                        Response::ok(String::new())
                    }
                    Err(e) => Response::error(EXIT_FAILED, e),
                }
            }
            Command::Edit(edit) => {
                let mut next = self.model.clone();
                let reusable = reusable(director);
                match next.apply_with(&edit, &reusable) {
                    Ok(applied) => match self.commit(director, next, &applied.removed) {
                        Ok(()) => Response::ok(String::new()),
                        Err(e) => e,
                    },
                    Err(e) => Response::error(e.exit_code(), e),
                }
            }
            Command::Zero(key) => match self.model.check_zero(key.as_ref()) {
                Ok(()) => {
                    self.side_effect(director, &Command::Zero(key));
                    Response::ok(String::new())
                }
                Err(e) => Response::error(e.exit_code(), e),
            },
            c @ Command::SetTimeouts { .. } => {
                self.side_effect(director, &c);
                Response::ok(String::new())
            }
        }
    }

    /// Publishes `next` and makes it the model; on failure puts the old one
    /// back.
    fn commit(
        &mut self,
        director: &mut Director,
        next: ServiceModel,
        removed: &[DestId],
    ) -> Result<(), Response> {
        if let Err(e) = director.set_services(next.snapshot()) {
            let _ = director.set_services(self.model.snapshot());
            return Err(Response::error(
                EXIT_FAILED,
                format!("xvs: the change was not applied: {e}"),
            ));
        }
        let before = self.owners();
        self.model = next;
        let after = self.owners();
        let now = director.now();
        for id in removed {
            director.conns().expire_dest(*id, now);
        }
        // Deleted real servers' counts stay with a service that remains.
        for id in removed {
            if let Some(key) = before.get(id).filter(|k| self.model.service(k).is_some()) {
                let delta = director.raw_totals(*id).minus(&self.base(*id));
                self.retired.entry(*key).or_default().add(&delta);
            }
            self.baseline.remove(id);
            self.rates.forget_real(*id);
        }
        // A real server that is new (or moved to an id again) counts from 0.
        for (id, key) in &after {
            if before.get(id) != Some(key) {
                self.baseline.insert(*id, director.raw_totals(*id));
            }
        }
        let keys: HashSet<ServiceKey> = self.model.services().iter().map(|s| s.key).collect();
        self.retired.retain(|k, _| keys.contains(k));
        self.rates.retain_services(&keys);
        Ok(())
    }

    /// `-Z` and `--set`, also when a restore script carries them.
    fn side_effect(&mut self, director: &Director, command: &Command) {
        match command {
            Command::Zero(key) => {
                let services: Vec<(ServiceKey, Vec<DestId>)> = self
                    .model
                    .services()
                    .iter()
                    .filter(|s| key.is_none_or(|k| k == s.key))
                    .map(|s| (s.key, s.reals.iter().map(|r| r.id).collect()))
                    .collect();
                for (k, ids) in services {
                    self.retired.remove(&k);
                    self.rates.zero_service(k);
                    for id in ids {
                        self.baseline.insert(id, director.raw_totals(id));
                        self.rates.zero_real(id);
                    }
                }
            }
            Command::SetTimeouts { tcp, tcpfin, udp } => {
                director.conns().set_ipvsadm_timeouts(*tcp, *tcpfin, *udp);
            }
            _ => {}
        }
    }

    fn ids(&self) -> Vec<DestId> {
        self.model
            .services()
            .iter()
            .flat_map(|s| s.reals.iter().map(|r| r.id))
            .collect()
    }

    fn owners(&self) -> HashMap<DestId, ServiceKey> {
        self.model
            .services()
            .iter()
            .flat_map(|s| s.reals.iter().map(move |r| (r.id, s.key)))
            .collect()
    }

    fn base(&self, id: DestId) -> TotalStats {
        self.baseline.get(&id).copied().unwrap_or_default()
    }

    /// Totals since `-Z` (or addition) of every service and real server.
    pub fn totals(&self, plane: &impl Plane) -> ListStats {
        let mut stats = ListStats::default();
        for s in self.model.services() {
            let mut svc = self.retired.get(&s.key).copied().unwrap_or_default();
            for r in &s.reals {
                let t = plane.raw_totals(r.id).minus(&self.base(r.id));
                svc.add(&t);
                stats.reals.insert(
                    r.id,
                    RealStats {
                        counts: plane.real_counts(r.id),
                        totals: t,
                        rates: RateStats::default(),
                    },
                );
            }
            stats.services.insert(
                s.key,
                ServiceStats {
                    totals: svc,
                    rates: RateStats::default(),
                },
            );
        }
        stats
    }

    /// What `-L` prints beside the configuration.
    pub fn list_stats(&self, plane: &impl Plane) -> ListStats {
        let mut stats = self.totals(plane);
        for (k, s) in stats.services.iter_mut() {
            s.rates = self.rates.service(k);
        }
        for (id, r) in stats.reals.iter_mut() {
            r.rates = self.rates.real(*id);
        }
        stats
    }
}

/// A freed real-server id may be given out again once nothing counts
/// against it.
fn reusable(director: &Director) -> impl Fn(DestId) -> bool {
    let dests = std::sync::Arc::clone(director.dests());
    move |id| {
        dests
            .get(id)
            .is_some_and(|c| c.active() == 0 && c.inactive() == 0 && c.persistent() == 0)
    }
}

trait Totals {
    fn minus(&self, base: &TotalStats) -> TotalStats;
    fn add(&mut self, other: &TotalStats);
}

impl Totals for TotalStats {
    fn minus(&self, b: &TotalStats) -> TotalStats {
        TotalStats {
            conns: self.conns.saturating_sub(b.conns),
            inpkts: self.inpkts.saturating_sub(b.inpkts),
            outpkts: self.outpkts.saturating_sub(b.outpkts),
            inbytes: self.inbytes.saturating_sub(b.inbytes),
            outbytes: self.outbytes.saturating_sub(b.outbytes),
        }
    }

    fn add(&mut self, o: &TotalStats) {
        self.conns += o.conns;
        self.inpkts += o.inpkts;
        self.outpkts += o.outpkts;
        self.inbytes += o.inbytes;
        self.outbytes += o.outbytes;
    }
}

/// IPVS-style rate estimator: per-second averages over 2 s samples.
#[derive(Debug)]
struct Rates {
    last: Instant,
    services: HashMap<ServiceKey, Estimate>,
    reals: HashMap<DestId, Estimate>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Estimate {
    last: Option<TotalStats>,
    /// cps, inpps, outpps, inbps, outbps.
    avg: [f64; 5],
}

impl Estimate {
    fn zeroed() -> Estimate {
        Estimate {
            last: Some(TotalStats::default()),
            avg: [0.0; 5],
        }
    }

    fn sample(&mut self, t: &TotalStats, secs: f64) {
        if let Some(prev) = self.last {
            let d = t.minus(&prev);
            let now = [d.conns, d.inpkts, d.outpkts, d.inbytes, d.outbytes];
            for (avg, n) in self.avg.iter_mut().zip(now) {
                *avg += (n as f64 / secs - *avg) / 4.0;
            }
        }
        self.last = Some(*t);
    }

    fn rates(&self) -> RateStats {
        let r = |i: usize| self.avg[i].round().max(0.0) as u64;
        RateStats {
            cps: r(0),
            inpps: r(1),
            outpps: r(2),
            inbps: r(3),
            outbps: r(4),
        }
    }
}

impl Rates {
    fn new(now: Instant) -> Rates {
        Rates {
            last: now,
            services: HashMap::new(),
            reals: HashMap::new(),
        }
    }

    fn sample(&mut self, now: Instant, stats: &ListStats) {
        let secs = now.duration_since(self.last).as_secs_f64().max(0.001);
        self.last = now;
        for (k, s) in &stats.services {
            self.services.entry(*k).or_default().sample(&s.totals, secs);
        }
        for (id, r) in &stats.reals {
            self.reals.entry(*id).or_default().sample(&r.totals, secs);
        }
    }

    fn service(&self, k: &ServiceKey) -> RateStats {
        self.services
            .get(k)
            .map(Estimate::rates)
            .unwrap_or_default()
    }

    fn real(&self, id: DestId) -> RateStats {
        self.reals.get(&id).map(Estimate::rates).unwrap_or_default()
    }

    /// `-Z`: the counters restart from zero, and so do the averages.
    fn zero_service(&mut self, k: ServiceKey) {
        self.services.insert(k, Estimate::zeroed());
    }

    fn zero_real(&mut self, id: DestId) {
        self.reals.insert(id, Estimate::zeroed());
    }

    fn forget_real(&mut self, id: DestId) {
        self.reals.remove(&id);
    }

    fn retain_services(&mut self, keys: &HashSet<ServiceKey>) {
        self.services.retain(|k, _| keys.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_ipvs_estimator() {
        let mut e = Estimate::default();
        let t = |n: u64| TotalStats {
            conns: n,
            inpkts: n * 10,
            outpkts: 0,
            inbytes: n * 1000,
            outbytes: 0,
        };
        e.sample(&t(0), 2.0);
        assert_eq!(e.rates(), RateStats::default());
        // 100 conns/s for one 2 s interval: a quarter shows.
        e.sample(&t(200), 2.0);
        assert_eq!(e.rates().cps, 25);
        assert_eq!(e.rates().inpps, 250);
        for i in 2..=60 {
            e.sample(&t(200 * i), 2.0);
        }
        assert_eq!(e.rates().cps, 100);
        assert_eq!(e.rates().inbps, 100_000);
    }
}
