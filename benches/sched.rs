//! Scheduler costs, ns per new-connection pick:
//! - `pick/<sched>/16` and `pick/<sched>/256` for every scheduler (rr, wrr,
//!   lc, wlc, sed, nq, sh, dh, mh, lblc, lblcr, fo, ovf, twos) over 16 and 256
//!   real servers with mixed weights (1..=10) and live connection counts, one
//!   thread, keys cycling through 1024 clients and 256 destinations (so dh,
//!   lblc and lblcr see many destinations, sh and mh many clients). The
//!   issue's target is ≤ 50 ns per pick with 16 servers.
//! - `pick/mh_fallback/16`: mh with `mh-fallback` while a quarter of the
//!   servers are overloaded (the rehash path).
//! - `build/mh/{16,256}`: building the Maglev table (control plane, once per
//!   change), for scale.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use xvs::packet::{FlowKey, L4Proto};
use xvs::sched::Scheduler;
use xvs::service::{
    ForwardMethod, RealCounts, RealId, RealLoads, RealServer, SchedFlags, SchedulerKind,
    ServiceKey, VirtualService,
};

const KEYS: usize = 1024;

fn service(kind: SchedulerKind, n: usize) -> VirtualService {
    VirtualService {
        key: ServiceKey {
            proto: L4Proto::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
            port: 80,
        },
        scheduler: kind,
        sched_flags: SchedFlags::default(),
        persistence: None,
        reals: (0..n)
            .map(|i| RealServer {
                id: RealId(i as u32),
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16 + 1)),
                port: 80,
                method: ForwardMethod::Dr,
                weight: 1 + (i as u32 * 7) % 10,
                upper_threshold: 0,
                lower_threshold: 0,
            })
            .collect(),
    }
}

/// Counts that give every connection-count scheduler real comparisons to
/// make (nobody idle, so nq cannot stop early); ovf still finds servers
/// under their weight.
fn loads(n: usize) -> RealLoads {
    let d = RealLoads::new(n);
    for i in 0..n {
        let c = d.get(RealId(i as u32)).expect("sized for n");
        c.set(RealCounts {
            active_conns: 1 + (i as u32 * 13) % 12,
            inact_conns: (i as u32 * 29) % 100,
            persist_conns: 0,
        });
    }
    d
}

fn keys() -> Vec<FlowKey> {
    (0..KEYS)
        .map(|k| {
            FlowKey::new(
                L4Proto::Tcp,
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, k as u8)),
                1024 + k as u16,
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, (k * 7 % 256) as u8)),
                80,
            )
        })
        .collect()
}

fn bench_picks(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("pick");
    for n in [16, 256] {
        let d = loads(n);
        for kind in SchedulerKind::ALL {
            let svc = service(kind, n);
            let s = Scheduler::new(&svc);
            let mut k = 0;
            g.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| {
                    k = (k + 1) % KEYS;
                    black_box(s.schedule(&svc, black_box(&keys[k]), &d))
                })
            });
        }
    }
    let n = 16;
    let mut svc = service(SchedulerKind::Mh, n);
    svc.sched_flags.fallback = true;
    let d = loads(n);
    for i in (0..n).step_by(4) {
        d.get(RealId(i as u32))
            .expect("sized for n")
            .set_overloaded(true);
    }
    let s = Scheduler::new(&svc);
    let mut k = 0;
    g.bench_with_input(BenchmarkId::new("mh_fallback", n), &n, |b, _| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(s.schedule(&svc, black_box(&keys[k]), &d))
        })
    });
    g.finish();
}

fn bench_builds(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    for n in [16, 256] {
        let svc = service(SchedulerKind::Mh, n);
        g.bench_with_input(BenchmarkId::new("mh", n), &n, |b, _| {
            b.iter(|| black_box(Scheduler::new(black_box(&svc))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_picks, bench_builds);
criterion_main!(benches);
