//! A keepalived site's own keepalived.conf on the seed's NAT cluster:
//! `xvs director --keepalived FILE` builds the services and runs their
//! HTTP_GET checks; a real server whose HTTP server stops goes (removed
//! by default, weight 0 with `inhibit_on_failure`) while the others answer
//! every request, and comes back when it runs again.
//!
//! Two services share the three real servers' port 80: VIP:80 as
//! keepalived has it by default (a failed real server is removed) and
//! VIP:81 with `inhibit_on_failure` (quiesced).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::clusters::Lab;
use crate::common::{root_or_skip, sh, temp_path, wait_for};
use crate::ldirectord::{start_real_server, stop_real_server};

/// Generous for checks every second on a loaded 2-core machine.
const SEE: Duration = Duration::from_secs(60);

fn keepalived_conf(reals: &[std::net::IpAddr; 3]) -> String {
    let mut text = String::from(
        "! keepalived.conf as a keepalived LVS site has it\n\
         global_defs {\n    router_id XVS_TEST\n}\n\n",
    );
    for (port, inhibit) in [(80, ""), (81, "    inhibit_on_failure\n")] {
        text += &format!(
            "virtual_server 192.0.2.10 {port} {{\n    delay_loop 1\n    lb_algo rr\n    \
             lb_kind NAT\n    protocol TCP\n{inhibit}\n"
        );
        for r in reals {
            text += &format!(
                "    real_server {r} 80 {{\n        weight 1\n        HTTP_GET {{\n            \
                 url {{\n                path /\n                status_code 200\n            }}\n            \
                 connect_timeout 1\n            retry 1\n            delay_before_retry 0.5\n        \
                 }}\n    }}\n"
            );
        }
        text += "}\n\n";
    }
    text
}

/// `(real, weight)` of service VIP:`port` in `ipvsadm -L -n`, sorted.
fn rows(lab: &Lab, port: u16) -> Vec<(String, u32)> {
    let mut rows: Vec<(String, u32)> = lab
        .ipvsadm(&format!("-L -n -t {}", lab.vip_at(port)))
        .lines()
        .filter(|l| l.trim_start().starts_with("->") && !l.contains("RemoteAddress"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[3].parse().unwrap_or(u32::MAX))
        })
        .collect();
    rows.sort();
    rows
}

/// `n` requests to VIP:`port`, one connection each: who answered, and how
/// many were not answered.
fn requests(lab: &Lab, port: u16, n: usize) -> (BTreeMap<String, usize>, usize) {
    let out = sh(&format!(
        "ip netns exec {} sh -c 'for i in $(seq {n}); do curl -s -m 2 http://{}/ || echo FAILED; done'",
        lab.ns("c"),
        lab.vip_at(port)
    ));
    let mut counts = BTreeMap::new();
    for l in out.lines() {
        *counts.entry(l.trim().to_string()).or_insert(0) += 1;
    }
    let failed = counts.remove("FAILED").unwrap_or(0);
    (counts, failed)
}

#[test]
fn keepalived_conf_cluster_through_a_failure_and_recovery() {
    if !root_or_skip("keepalived_conf_cluster_through_a_failure_and_recovery") {
        return;
    }
    let reals = ["198.51.100.1", "198.51.100.2", "198.51.100.3"].map(|a| a.parse().expect("IP"));
    let conf = temp_path("keepalived").with_extension("conf");
    std::fs::write(&conf, keepalived_conf(&reals)).expect("keepalived.conf");
    let conf_arg = conf.display().to_string();
    let lab = Lab::up_with_args("nat", "on", &["--keepalived", &conf_arg]);
    let at = |i: usize| format!("{}:80", reals[i]);
    let all: Vec<(String, u32)> = (0..3).map(|i| (at(i), 1)).collect();
    assert_eq!(rows(&lab, 80), all, "{}", lab.ipvsadm("-L -n"));
    assert_eq!(rows(&lab, 81), all);
    assert!(
        lab.ipvsadm("-L -n").contains("TCP  192.0.2.10:80 rr"),
        "{}",
        lab.ipvsadm("-L -n")
    );
    let log = lab
        .director
        .as_ref()
        .map(|d| d.log_text())
        .unwrap_or_default();
    assert!(
        log.contains("global_defs block ignored"),
        "the director says what it ignores:\n{log}"
    );
    let (c, failed) = requests(&lab, 80, 30);
    assert_eq!((c.len(), failed), (3, 0), "{c:?}");

    // rs2's server stops: removed from :80, quiesced in :81.
    stop_real_server(&lab, 1);
    let stopped = Instant::now();
    let (_, in_window) = requests(&lab, 80, 6);
    let gone = vec![(at(0), 1), (at(2), 1)];
    assert!(
        wait_for(SEE, || rows(&lab, 80) == gone),
        "rs2 not removed from :80: {:?}\n{}",
        rows(&lab, 80),
        lab.director
            .as_ref()
            .map(|d| d.log_text())
            .unwrap_or_default()
    );
    let removed_after = stopped.elapsed();
    let quiesced = vec![(at(0), 1), (at(1), 0), (at(2), 1)];
    assert!(
        wait_for(SEE, || rows(&lab, 81) == quiesced),
        "rs2 not quiesced in :81: {:?}",
        rows(&lab, 81)
    );
    eprintln!(
        "keepalived.conf: rs2 removed {removed_after:?} after its server stopped; \
         {in_window} of 6 requests right after the stop unanswered"
    );
    let two: BTreeMap<String, usize> = [("rs1".to_string(), 10), ("rs3".to_string(), 10)]
        .into_iter()
        .collect();
    assert_eq!(
        requests(&lab, 80, 20),
        (two.clone(), 0),
        "removed: the others answer"
    );
    assert_eq!(
        requests(&lab, 81, 20),
        (two, 0),
        "quiesced: the others answer"
    );

    // rs2 runs again: back in both, at its weight.
    start_real_server(&lab, 1);
    let started = Instant::now();
    assert!(
        wait_for(SEE, || rows(&lab, 80) == all && rows(&lab, 81) == all),
        "rs2 not back: {:?} {:?}",
        rows(&lab, 80),
        rows(&lab, 81)
    );
    eprintln!(
        "keepalived.conf: rs2 back {:?} after its server started",
        started.elapsed()
    );
    let (c, failed) = requests(&lab, 80, 30);
    assert_eq!((c.len(), failed), (3, 0), "{c:?}");
    let _ = std::fs::remove_file(&conf);
}
