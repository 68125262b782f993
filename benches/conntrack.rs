//! Connection table costs, on a table of 2^20 IPv4 connections (NAT, so both
//! indexes are populated; 80% of the 1.31M slots in use):
//! - `lookup/hit_hot`: one client→VIP key looked up again and again (the
//!   CPU cost; the entry stays in cache). The target is ≤ 30 ns.
//! - `lookup/hit_random`: client→VIP keys in a scattered order over all 1M
//!   entries (each lookup misses the caches: the DRAM cost).
//! - `lookup/hit_random_batch32`: the same, 32 at a time with the two
//!   prefetch stages first, as a worker does per batch (time per key).
//! - `lookup/miss_random`: keys that are not in the table, scattered.
//! - `lookup/reply_hit_random`: NAT reply keys, scattered.
//! - `update/touch_hot`: a per-packet update that changes nothing (ACK on an
//!   ESTABLISHED connection within its coarse re-arm interval): no write.
//! - `insert/new`: inserting a new connection into the 1M table (removed
//!   again, outside the timing, to keep the table at 1M).
//! - `scaling/hit_random/{1,2}`: time per lookup per thread with 1 and 2
//!   threads looking up at once (equal numbers mean perfect scaling).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use xvs::conntrack::{ConnTable, Direction, NewConn, Timeouts};
use xvs::packet::{FlowKey, L4Proto, TcpFlags};
use xvs::service::{ForwardMethod, RealId, RealLoads};
use xvs::Millis;

const ENTRIES: u32 = 1 << 20;
const NOW: Millis = Millis(1000);

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))
}

/// Key number `i`: 256 clients of 203.0.113.0/24 with 4096 ports each, to
/// VIP port 80 for `i < ENTRIES` (the table's keys); above that the same
/// clients to port 81, 82, ... (keys never inserted by `full_table`).
fn key(i: u32) -> FlowKey {
    let src = IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i & 255) as u8));
    let sport = 1024 + ((i >> 8) & 0xfff) as u16;
    FlowKey::new(L4Proto::Tcp, src, sport, vip(), 80 + (i >> 20) as u16)
}

fn real(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 8) as u8 + 1)),
        8080,
    )
}

fn new_conn(i: u32) -> NewConn {
    NewConn {
        key: key(i),
        real_id: RealId(i % 8),
        method: ForwardMethod::Nat,
        real: real(i),
        template: None,
    }
}

/// A scattered visiting order of `0..ENTRIES` (an odd multiplier is a
/// permutation modulo a power of two).
fn scattered(n: u32) -> u32 {
    n.wrapping_mul(0x9e37_79b1) & (ENTRIES - 1)
}

fn full_table() -> Arc<ConnTable> {
    let loads = Arc::new(RealLoads::new(8));
    let t = ConnTable::with_v6_capacity(ENTRIES as usize * 5 / 4, 0, Timeouts::default(), loads);
    let mut refused = 0;
    for i in 0..ENTRIES {
        let Ok(c) = t.insert(&new_conn(i), Millis(0)) else {
            refused += 1;
            continue;
        };
        t.update(
            &c.handle,
            Direction::Original,
            Some(TcpFlags(TcpFlags::SYN)),
            Millis(0),
        );
        t.update(
            &c.handle,
            Direction::Original,
            Some(TcpFlags(TcpFlags::ACK)),
            Millis(0),
        );
    }
    eprintln!(
        "{} entries in {:?} slots ({} refused), {} MiB",
        ENTRIES - refused,
        t.capacity(),
        refused,
        t.memory_bytes() >> 20
    );
    Arc::new(t)
}

fn bench(c: &mut Criterion) {
    let t = full_table();

    let mut g = c.benchmark_group("lookup");
    let hot = key(12345);
    g.bench_function("hit_hot", |b| {
        b.iter(|| {
            black_box(
                t.lookup(black_box(&hot), NOW)
                    .map(|c| (c.real_id(), c.real())),
            )
        })
    });
    let mut n = 0u32;
    g.bench_function("hit_random", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(
                t.lookup(&key(scattered(n)), NOW)
                    .map(|c| (c.real_id(), c.real())),
            )
        })
    });
    g.bench_function("hit_random_batch32", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut batch = [key(0); 32];
            for _ in 0..iters.div_ceil(32) {
                for k in batch.iter_mut() {
                    n = n.wrapping_add(1);
                    *k = key(scattered(n));
                    t.prefetch(k, Direction::Original);
                }
                for k in &batch {
                    t.prefetch_entry(k, Direction::Original);
                }
                for k in &batch {
                    black_box(t.lookup(k, NOW).map(|c| (c.real_id(), c.real())));
                }
            }
            start
                .elapsed()
                .mul_f64(iters as f64 / (iters.div_ceil(32) * 32) as f64)
        })
    });
    g.bench_function("miss_random", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(t.lookup(&key(ENTRIES + scattered(n)), NOW).is_some())
        })
    });
    g.bench_function("reply_hit_random", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let i = scattered(n);
            let r = real(i);
            let reply = key(i).reply_from(r.ip(), r.port());
            black_box(t.lookup_reply(&reply, NOW).map(|c| (c.real_id(), c.virt())))
        })
    });
    g.finish();

    let hot_conn = t.lookup(&hot, NOW).expect("present");
    c.bench_function("update/touch_hot", |b| {
        b.iter(|| {
            t.update(
                &hot_conn.handle,
                Direction::Original,
                Some(TcpFlags(TcpFlags::ACK)),
                NOW,
            )
        })
    });

    let mut next = 0u32;
    c.bench_function("insert/new", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(50_000) as u32;
                let first = next;
                let start = Instant::now();
                for i in 0..chunk {
                    // Port 82: in neither the table nor `miss_random`.
                    let k = ENTRIES * 2 + ((first + i) % ENTRIES);
                    black_box(t.insert(&new_conn(k), NOW).is_ok());
                }
                total += start.elapsed();
                for i in 0..chunk {
                    let k = ENTRIES * 2 + ((first + i) % ENTRIES);
                    if let Some(c) = t.lookup(&key(k), NOW) {
                        t.remove(&c.handle, NOW);
                    }
                }
                next = next.wrapping_add(chunk);
                left -= chunk as u64;
            }
            total
        })
    });

    let mut g = c.benchmark_group("scaling/hit_random");
    for threads in [1u32, 2] {
        g.bench_function(format!("{threads}"), |b| {
            b.iter_custom(|iters| {
                let barrier = Arc::new(Barrier::new(threads as usize));
                let handles: Vec<_> = (0..threads)
                    .map(|id| {
                        let (t, barrier) = (t.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            for n in 0..iters as u32 {
                                let i = scattered(n.wrapping_add(id * 7919));
                                black_box(t.lookup(&key(i), NOW).is_some());
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                let times: Vec<Duration> = handles
                    .into_iter()
                    .map(|h| h.join().expect("bench thread"))
                    .collect();
                // Per lookup per thread: the slowest thread's time.
                times.into_iter().max().unwrap_or_default()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
