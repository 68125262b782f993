//! Next hops from a real kernel: the director's routes and neighbours read
//! over netlink, changes seen by the watcher, a missing neighbour resolved
//! through a managed entry, and the missing-interface error. Also the host's
//! own addresses, on every interface, and the watcher seeing them change.
//!
//! ```text
//! [dir] d0 198.51.100.1/24 2001:db8:1::1/64 ── r0 198.51.100.2 2001:db8:1::2 [rs]
//!       192.0.2.0/24 via 198.51.100.2, 2001:db8:ff::/48 via 2001:db8:1::2
//!       d1 203.0.113.1/24 (not a director port) ── r1 [rs]
//! ```
//!
//! netlink reads the namespace of the calling thread, so each check runs on
//! a thread that has entered the director's namespace (`setns`).

use std::fs::File;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use xvs::neigh::netlink::{self, Resolution, Watcher};
use xvs::neigh::snapshot::{Port, Snapshot, StaticNeighbour};
use xvs::neigh::{NextHop, Unresolved};

use crate::common::{root_or_skip, veth, Netns};

/// Runs `f` on a thread inside `ns`'s network namespace.
fn inside<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let handle = File::open(format!("/run/netns/{}", ns.name)).expect("netns handle");
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(handle, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread inside the namespace")
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

struct Rig {
    dir: Netns,
    rs: Netns,
    port: Port,
}

/// The director and one neighbour namespace; no traffic has flowed yet.
fn rig() -> Rig {
    let dir = Netns::new("dir");
    let rs = Netns::new("rs");
    veth(&dir, "d0", &rs, "r0");
    veth(&dir, "d1", &rs, "r1");
    dir.ip("addr add 198.51.100.1/24 dev d0");
    dir.ip("addr add 2001:db8:1::1/64 dev d0 nodad");
    dir.ip("addr add 203.0.113.1/24 dev d1");
    dir.ip("route add 192.0.2.0/24 via 198.51.100.2");
    dir.ip("route add 2001:db8:ff::/48 via 2001:db8:1::2");
    rs.ip("addr add 198.51.100.2/24 dev r0");
    rs.ip("addr add 2001:db8:1::2/64 dev r0 nodad");
    rs.ip("addr add 203.0.113.2/24 dev r1");
    let d0 = inside(&dir, || netlink::interface("d0")).expect("d0");
    let port = d0.port(0);
    Rig { dir, rs, port }
}

impl Rig {
    fn snapshot(&self, statics: &[StaticNeighbour]) -> Snapshot {
        let port = self.port;
        inside(&self.dir, || netlink::snapshot(&[port], statics)).expect("snapshot")
    }

    fn hop(&self, dst_mac: [u8; 6]) -> Result<NextHop, Unresolved> {
        Ok(NextHop {
            port: self.port.id,
            src_mac: self.port.mac,
            dst_mac,
        })
    }

    /// Polls snapshots until `addr` resolves (or 5 s pass).
    fn wait_resolved(&self, addr: IpAddr) -> Result<NextHop, Unresolved> {
        let start = Instant::now();
        loop {
            let hop = self.snapshot(&[]).next_hops.resolve(addr);
            if hop.is_ok() || start.elapsed() > Duration::from_secs(5) {
                return hop;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn neigh_snapshot_sees_connected_and_gateway_routes_and_reachable_neighbours() {
    if !root_or_skip("neigh_snapshot") {
        return;
    }
    let rig = rig();
    let rs_mac = rig.rs.mac("r0");
    let before = rig.snapshot(&[]);
    assert_eq!(
        before.next_hops.resolve(ip("192.0.2.9")),
        Err(Unresolved(ip("198.51.100.2"))),
        "no ARP yet: the gateway is unresolved"
    );

    rig.dir.exec("ping -c1 -W2 198.51.100.2 >/dev/null");
    rig.dir.exec("ping -6 -c1 -W2 2001:db8:1::2 >/dev/null");
    let neigh = rig.dir.ip("neigh show dev d0");
    assert!(neigh.contains("REACHABLE"), "{neigh}");

    let s = rig.snapshot(&[]);
    let h = &s.next_hops;
    assert_eq!(h.resolve(ip("198.51.100.2")), rig.hop(rs_mac), "connected");
    assert_eq!(h.resolve(ip("192.0.2.9")), rig.hop(rs_mac), "via gateway");
    assert_eq!(h.resolve(ip("2001:db8:1::2")), rig.hop(rs_mac));
    assert_eq!(h.resolve(ip("2001:db8:ff::9")), rig.hop(rs_mac));
    // d1 is not a director port: its connected route is left out.
    assert!(
        h.routes().iter().all(|r| r.net != ip("203.0.113.0")),
        "{:?}",
        h.routes()
    );
    assert_eq!(
        h.resolve(ip("203.0.113.2")),
        Err(Unresolved(ip("203.0.113.2")))
    );
    assert!(s.notes.is_empty(), "{:?}", s.notes);

    // A static neighbour wins over the kernel's.
    let s = rig.snapshot(&[StaticNeighbour {
        addr: ip("198.51.100.2"),
        port: 0,
        mac: [2, 0, 0, 0, 0, 0x42],
    }]);
    assert_eq!(
        s.next_hops.resolve(ip("192.0.2.9")),
        rig.hop([2, 0, 0, 0, 0, 0x42])
    );
}

#[test]
fn neigh_watcher_reports_a_changed_mac_and_the_next_snapshot_has_it() {
    if !root_or_skip("neigh_watcher") {
        return;
    }
    let rig = rig();
    rig.dir.exec("ping -c1 -W2 198.51.100.2 >/dev/null");
    let ifindex = rig.port.ifindex;
    let mut watcher = inside(&rig.dir, || Watcher::open(&[ifindex])).expect("watcher");
    while watcher.wait(Duration::from_millis(200)) {}

    // Nothing on d1 concerns a watcher of d0.
    rig.dir
        .ip("neigh replace 203.0.113.2 lladdr 02:00:00:00:00:12 dev d1 nud reachable");
    assert!(
        !watcher.wait(Duration::from_millis(300)),
        "d1 is not watched"
    );

    // The real server's MAC changes and the director's kernel learns it.
    let new_mac = [2, 0, 0x5e, 0, 0, 0x77];
    rig.rs.ip("link set r0 address 02:00:5e:00:00:77");
    rig.dir
        .ip("neigh replace 198.51.100.2 lladdr 02:00:5e:00:00:77 dev d0 nud reachable");
    assert!(
        watcher.wait(Duration::from_secs(2)),
        "the change is reported"
    );
    let s = rig.snapshot(&[]);
    assert_eq!(s.next_hops.resolve(ip("198.51.100.2")), rig.hop(new_mac));
    assert_eq!(s.next_hops.resolve(ip("192.0.2.9")), rig.hop(new_mac));

    // A route change is reported too.
    while watcher.wait(Duration::from_millis(100)) {}
    rig.dir.ip("route add 192.0.2.128/25 via 198.51.100.2");
    assert!(
        watcher.wait(Duration::from_secs(2)),
        "a new route is reported"
    );
}

#[test]
fn neigh_local_addresses_cover_every_interface_and_changes_are_reported() {
    if !root_or_skip("neigh_local_addresses") {
        return;
    }
    let rig = rig();
    let addrs = inside(&rig.dir, netlink::local_addresses).expect("addresses");
    for a in [
        "198.51.100.1",
        "2001:db8:1::1",
        "203.0.113.1",
        "127.0.0.1",
        "::1",
    ] {
        assert!(addrs.contains(&ip(a)), "{a} in {addrs:?}");
    }
    assert!(!addrs.contains(&ip("198.51.100.2")), "{addrs:?}");

    // The steering program needs every address of the host: one added on
    // an interface the watcher does not watch (d1, or lo) is reported too.
    let ifindex = rig.port.ifindex;
    let mut watcher = inside(&rig.dir, || Watcher::open(&[ifindex])).expect("watcher");
    while watcher.wait(Duration::from_millis(200)) {}
    for (add, dev) in [("203.0.113.9/32", "d1"), ("192.0.2.99/32", "lo")] {
        rig.dir.ip(&format!("addr add {add} dev {dev}"));
        assert!(
            watcher.wait(Duration::from_secs(2)),
            "an address added on {dev} is reported"
        );
        while watcher.wait(Duration::from_millis(100)) {}
    }
    rig.dir.ip("addr del 203.0.113.9/32 dev d1");
    assert!(
        watcher.wait(Duration::from_secs(2)),
        "an address removed from d1 is reported"
    );
    let addrs = inside(&rig.dir, netlink::local_addresses).expect("addresses");
    assert!(addrs.contains(&ip("192.0.2.99")), "{addrs:?}");
    assert!(!addrs.contains(&ip("203.0.113.9")), "{addrs:?}");
}

#[test]
fn neigh_managed_request_resolves_an_unresolved_neighbour() {
    if !root_or_skip("neigh_managed") {
        return;
    }
    let rig = rig();
    let rs_mac = rig.rs.mac("r0");
    let s = rig.snapshot(&[]);
    for (dst, gw) in [
        ("192.0.2.9", "198.51.100.2"),
        ("2001:db8:ff::9", "2001:db8:1::2"),
    ] {
        let Err(Unresolved(missing)) = s.next_hops.resolve(ip(dst)) else {
            panic!("{dst} resolved before any traffic");
        };
        assert_eq!(missing, ip(gw));
        let port = s.next_hops.port_toward(missing).expect("a route");
        assert_eq!(port, rig.port.id);
        let ifindex = rig.port.ifindex;
        let how = inside(&rig.dir, || netlink::resolve_request(missing, ifindex))
            .expect("resolve request");
        assert_eq!(how, Resolution::Managed, "kernel 5.16+ has managed entries");
        assert_eq!(rig.wait_resolved(ip(dst)), rig.hop(rs_mac), "{dst}");
    }
    let neigh = rig.dir.ip("neigh show dev d0");
    assert!(
        neigh.contains("198.51.100.2") && neigh.contains("managed"),
        "{neigh}"
    );
    // Asking again for a resolved neighbour leaves it resolved.
    let ifindex = rig.port.ifindex;
    inside(&rig.dir, || {
        netlink::resolve_request(ip("198.51.100.2"), ifindex)
    })
    .expect("second request");
    assert_eq!(
        rig.snapshot(&[]).next_hops.resolve(ip("198.51.100.2")),
        rig.hop(rs_mac)
    );

    // The fallback (a one-shot NTF_USE probe) resolves too.
    rig.dir.ip("neigh flush dev d1");
    inside(&rig.dir, || {
        let d1 = netlink::interface("d1").expect("d1");
        netlink::probe_request(ip("203.0.113.2"), d1.ifindex)
    })
    .expect("probe");
    let start = Instant::now();
    let mut neigh = String::new();
    while start.elapsed() < Duration::from_secs(5) {
        neigh = rig.dir.ip("neigh show 203.0.113.2 dev d1");
        if neigh.contains("REACHABLE") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        neigh.contains("REACHABLE") && !neigh.contains("managed"),
        "{neigh}"
    );
}

#[test]
fn neigh_interface_facts_and_the_missing_interface_error() {
    if !root_or_skip("neigh_interface") {
        return;
    }
    let dir = Netns::new("dir");
    let rs = Netns::new("rs");
    crate::common::sh(&format!(
        "ip link add d0 netns {} numrxqueues 2 numtxqueues 2 type veth peer name r0 netns {} numrxqueues 2 numtxqueues 2",
        dir.name, rs.name
    ));
    dir.ip("link set d0 up mtu 1400");
    dir.ip("addr add 198.51.100.1/24 dev d0");
    dir.ip("addr add 2001:db8:1::1/64 dev d0 nodad");

    let d0 = inside(&dir, || netlink::interface("d0")).expect("d0");
    assert_eq!(d0.mac, dir.mac("d0"));
    assert_eq!(d0.mtu, 1400);
    assert_eq!(d0.rx_queues, 2);
    assert!(d0.up);
    assert!(
        d0.addrs.contains(&(ip("198.51.100.1"), 24)),
        "{:?}",
        d0.addrs
    );
    assert!(
        d0.addrs.contains(&(ip("2001:db8:1::1"), 64)),
        "{:?}",
        d0.addrs
    );

    let err = inside(&dir, || netlink::interface("eth9")).expect_err("eth9 is missing");
    assert_eq!(
        err.to_string(),
        "interface eth9 not found (ip link shows: lo, d0)"
    );
}
