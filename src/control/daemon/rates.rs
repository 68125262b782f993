//! IPVS's rate estimator (`ip_vs_est.c`): every [`RATE_INTERVAL`] the
//! counters' change over the interval is turned into a per-second rate and
//! folded into an average with weight 1/4 (`avg += (rate - avg) / 4`), so
//! a step in traffic shows fully after about 10 s. `-Z` zeroes the
//! averages. Plain data: the daemon samples it from its loop.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::control::ipvsadm::{ListStats, RateStats};
use crate::service::TotalStats;
use crate::service::{RealId, ServiceKey};

/// How often rates are estimated (IPVS: 2 s).
pub const RATE_INTERVAL: Duration = Duration::from_secs(2);

/// IPVS-style rate estimator: per-second averages over 2 s samples.
#[derive(Debug)]
pub(super) struct Rates {
    pub(super) last: Instant,
    services: HashMap<ServiceKey, Estimate>,
    reals: HashMap<RealId, Estimate>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Estimate {
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
    pub(super) fn new(now: Instant) -> Rates {
        Rates {
            last: now,
            services: HashMap::new(),
            reals: HashMap::new(),
        }
    }

    pub(super) fn sample(&mut self, now: Instant, stats: &ListStats) {
        let secs = now.duration_since(self.last).as_secs_f64().max(0.001);
        self.last = now;
        for (k, s) in &stats.services {
            self.services.entry(*k).or_default().sample(&s.totals, secs);
        }
        for (id, r) in &stats.reals {
            self.reals.entry(*id).or_default().sample(&r.totals, secs);
        }
    }

    pub(super) fn service(&self, k: &ServiceKey) -> RateStats {
        self.services
            .get(k)
            .map(Estimate::rates)
            .unwrap_or_default()
    }

    pub(super) fn real(&self, id: RealId) -> RateStats {
        self.reals.get(&id).map(Estimate::rates).unwrap_or_default()
    }

    /// `-Z`: the counters restart from zero, and so do the averages.
    pub(super) fn zero_service(&mut self, k: ServiceKey) {
        self.services.insert(k, Estimate::zeroed());
    }

    pub(super) fn zero_real(&mut self, id: RealId) {
        self.reals.insert(id, Estimate::zeroed());
    }

    pub(super) fn forget_real(&mut self, id: RealId) {
        self.reals.remove(&id);
    }

    pub(super) fn retain_services(&mut self, keys: &HashSet<ServiceKey>) {
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
