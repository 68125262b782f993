//! mon-contrib's `ipvs.alert` and `ipvs.monitor` drive a live xvs service
//! on the seed's NAT cluster, unchanged: both run `/sbin/ipvsadm` (a
//! fixed path), met as in [`crate::ldirectord`] by a private mount
//! namespace. They are called as mon calls them (`-s SERVICE -g GROUP -h
//! HOSTS -t TIME`, `-u` for an up alert, then the alert's own arguments),
//! each time mon's `http.monitor` reports a real server failed or back.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::clusters::Lab;
use crate::common::root_or_skip;
use crate::ldirectord::{start_real_server, stop_real_server, FixedIpvsadm};

const ALERT: &str = "/usr/lib/mon/alert.d/ipvs.alert";
const MONITOR: &str = "/usr/lib/mon/mon.d/ipvs.monitor";
const HTTP_MONITOR: &str = "/usr/lib/mon/mon.d/http.monitor";

struct Mon<'a> {
    lab: &'a Lab,
    tools: FixedIpvsadm,
}

impl Mon<'_> {
    /// The seed's real server `i` (0-based) as ipvs.alert's `-R` takes it.
    fn real(&self, i: usize) -> String {
        SocketAddr::new(self.lab.reals[i], 80).to_string()
    }

    /// `http.monitor` over the three real servers, from the director: the
    /// hosts it reports failed (its first line), empty when all answer.
    fn http_monitor(&self) -> Vec<String> {
        let hosts: Vec<String> = self.lab.reals.iter().map(|r| r.to_string()).collect();
        let mut argv = vec![HTTP_MONITOR, "-t", "3"];
        argv.extend(hosts.iter().map(String::as_str));
        let (ok, out) = self.tools.run(&argv);
        let failed: Vec<String> = out
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            ok,
            failed.is_empty(),
            "http.monitor's status and report:\n{out}"
        );
        failed
    }

    /// `ipvs.alert` as mon runs it for `host`, with the alert's arguments.
    fn alert(&self, host: &str, up: bool, args: &[&str]) {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let mut argv = vec![ALERT, "-s", "http", "-g", "web", "-h", host, "-t", &t];
        if up {
            argv.push("-u");
        }
        argv.extend(args);
        let (ok, out) = self.tools.run(&argv);
        assert!(ok, "ipvs.alert {argv:?}:\n{out}");
    }

    /// `ipvs.monitor -V VIP:80 -P tcp`: whether it finds the service with
    /// real servers.
    fn monitor(&self) -> bool {
        let vip = self.lab.vip_at(80).to_string();
        self.tools.run(&[MONITOR, "-V", &vip, "-P", "tcp"]).0
    }

    fn rows(&self) -> Vec<(String, u32)> {
        self.lab.rows().into_iter().map(|r| (r.0, r.2)).collect()
    }
}

#[test]
fn mon_ipvs_alert_builds_takes_out_and_puts_back_real_servers() {
    if !root_or_skip("mon_ipvs_alert_builds_takes_out_and_puts_back_real_servers") {
        return;
    }
    let lab = Lab::up_with_args("nat", "on", &[]);
    let mon = Mon {
        lab: &lab,
        tools: FixedIpvsadm::new(&lab),
    };
    let vip = lab.vip_at(80).to_string();
    let host = |i: usize| lab.reals[i].to_string();
    assert!(!mon.monitor(), "ipvs.monitor: no service yet");

    // Up alerts: the first builds the service (-B), the others join it.
    let (r0, r1, r2) = (mon.real(0), mon.real(1), mon.real(2));
    let up = |r: &str, extra: &[&str]| {
        let mut a = vec!["-P", "tcp", "-V", &vip, "-R", r, "-W", "1", "-F", "nat"];
        a.extend(extra);
        a.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let args = up(&r0, &["-B", "-S", "rr"]);
    mon.alert(
        &host(0),
        true,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for (i, r) in [(1, &r1), (2, &r2)] {
        let args = up(r, &[]);
        mon.alert(
            &host(i),
            true,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    let all = vec![(r0.clone(), 1), (r1.clone(), 1), (r2.clone(), 1)];
    assert_eq!(mon.rows(), all, "{}", lab.ipvsadm("-L -n"));
    assert!(lab.ipvsadm("-L -n").contains("TCP  192.0.2.10:80 rr"));
    assert!(mon.monitor(), "ipvs.monitor finds the service");
    assert!(mon.http_monitor().is_empty());
    assert_eq!(lab.requests(30).len(), 3);

    // rs2 fails: http.monitor reports it, the alert takes it out.
    stop_real_server(&lab, 1);
    let failed = mon.http_monitor();
    assert_eq!(failed, [host(1)]);
    for h in &failed {
        let r = SocketAddr::new(h.parse().expect("host"), 80).to_string();
        mon.alert(h, false, &["-P", "tcp", "-V", &vip, "-R", &r]);
    }
    assert_eq!(mon.rows(), vec![(r0.clone(), 1), (r2.clone(), 1)]);
    assert_eq!(
        lab.requests(20),
        [("rs1".to_string(), 10), ("rs3".to_string(), 10)]
            .into_iter()
            .collect()
    );

    // rs2 recovers: the up alert puts it back.
    start_real_server(&lab, 1);
    assert!(mon.http_monitor().is_empty());
    let args = up(&r1, &[]);
    mon.alert(
        &host(1),
        true,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut rows = mon.rows();
    rows.sort();
    assert_eq!(rows, all);
    assert_eq!(lab.requests(30).len(), 3);

    // -D tears the whole service down.
    mon.alert(&host(0), false, &["-D", "-P", "tcp", "-V", &vip]);
    assert!(mon.rows().is_empty());
    assert!(!lab.ipvsadm("-L -n").contains("192.0.2.10:80"));
    assert!(!mon.monitor(), "ipvs.monitor: the service is gone");
}
