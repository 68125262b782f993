//! Built-in health checks on the seed's NAT cluster (the seed's "mon"):
//! `xvs director --config FILE` with `[[check]]` and `[[policy]]` tables.
//!
//! - Failures, one after the other on rs2, each detected within a generous
//!   bound over fall × interval + timeout and measured: its HTTP server
//!   stopped, its link down, HTTP 500 on the checked path, a check that
//!   hangs past its timeout, and flapping; each time the server is
//!   quiesced (weight 0 in `ipvsadm -L -n`), only requests inside the
//!   detection window may fail (their number printed), every request after
//!   it is answered, and it comes back after `rise` successes. `xvs status`
//!   shows the reason, the metrics endpoint the state, the transitions and
//!   the check latency.
//! - Quorum and the sorry server: below quorum the sorry server answers
//!   alone; with quorum back the real servers do; with every real server
//!   down the sorry server answers.
//! - `xvs drain`: a real server with an open connection is quiesced, its
//!   progress printed, and it is removed once the connection ends.
//!
//! Checks every 300 ms, bounds of many seconds: the machine is shared.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::clusters::Lab;
use crate::common::{root_or_skip, sh, temp_path, wait_for};
use crate::ldirectord::{start_real_server, stop_real_server};

/// Far above fall × interval + timeout (2 × 0.3 s + 1 s) and rise ×
/// interval: a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(20);

/// The lab with services and checks from a config file.
fn lab_with(config: &str) -> Lab {
    let path = temp_path("health").with_extension("toml");
    std::fs::write(&path, config).expect("config");
    let arg = path.display().to_string();
    Lab::up_with_args("nat", "on", &["--config", &arg])
}

fn services(reals: &[u8]) -> String {
    let mut s = String::from("services = \"\"\"\n-A -t 192.0.2.10:80 -s rr\n");
    for r in reals {
        s += &format!("-a -t 192.0.2.10:80 -r 198.51.100.{r}:80 -m -w 1\n");
    }
    s + "\"\"\"\n"
}

/// `(real, weight)` of each row of `ipvsadm -L -n`.
fn weights(lab: &Lab) -> Vec<(String, u32)> {
    lab.rows().into_iter().map(|r| (r.0, r.2)).collect()
}

/// `n` requests, one connection each, each given `secs`: who answered,
/// and how many were not answered.
fn requests(lab: &Lab, n: usize, secs: u32) -> (Vec<String>, usize) {
    let out = sh(&format!(
        "ip netns exec {} sh -c 'for i in $(seq {n}); do curl -s -m {secs} http://{}/ || echo FAILED; done'",
        lab.ns("c"),
        lab.vip_at(80)
    ));
    let answered: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| *l != "FAILED" && !l.is_empty())
        .map(String::from)
        .collect();
    let failed = out.lines().filter(|l| l.trim() == "FAILED").count();
    (answered, failed)
}

/// Tells rs`i` (1-based) what its /health answers, from the director
/// host (which reaches its real servers).
fn health_set(lab: &Lab, i: usize, query: &str) {
    sh(&format!(
        "ip netns exec {} curl -s -m 2 'http://198.51.100.{i}/health-set?{query}'",
        lab.ns("d")
    ));
}

fn xvs(lab: &Lab, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args(args)
        .env("XVS_CONTROL_SOCKET", &lab.socket)
        .output()
        .expect("xvs")
}

/// rs2 fails one way (`fail`), is detected, and recovers (`heal`): the
/// detection time and the requests lost inside the window are measured;
/// after detection every request is answered by rs1 and rs3.
fn fail_and_recover(lab: &Lab, what: &str, fail: impl FnOnce(), heal: impl FnOnce()) {
    let rs2 = "198.51.100.2:80".to_string();
    let quiesced = |lab: &Lab| weights(lab).contains(&(rs2.clone(), 0));
    assert!(
        wait_for(BOUND, || weights(lab).contains(&(rs2.clone(), 1))),
        "{what}: rs2 not up at the start: {:?}",
        weights(lab)
    );
    fail();
    let t0 = Instant::now();
    // Requests while the checks find out: these may fail.
    let mut in_window = (0, 0);
    while !quiesced(lab) && t0.elapsed() < BOUND {
        let (ok, failed) = requests(lab, 3, 1);
        in_window = (in_window.0 + ok.len() + failed, in_window.1 + failed);
    }
    let detected = t0.elapsed();
    assert!(
        quiesced(lab),
        "{what}: rs2 not quiesced within {BOUND:?}: {:?}\n{}",
        weights(lab),
        lab.director
            .as_ref()
            .map(|d| d.log_text())
            .unwrap_or_default()
    );
    eprintln!(
        "health, {what}: detected after {detected:?}; {} of {} requests inside the window failed",
        in_window.1, in_window.0
    );
    let (answered, failed) = requests(lab, 12, 2);
    assert_eq!(failed, 0, "{what}: a request failed after detection");
    assert!(
        answered.iter().all(|a| a == "rs1" || a == "rs3"),
        "{what}: {answered:?}"
    );
    let status = String::from_utf8_lossy(&xvs(lab, &["status"]).stdout).into_owned();
    let row = status
        .lines()
        .find(|l| l.contains("198.51.100.2:80"))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("down"), "{what}: {status}");
    heal();
    let t1 = Instant::now();
    assert!(
        wait_for(BOUND, || weights(lab).contains(&(rs2.clone(), 1))),
        "{what}: rs2 not back: {:?}",
        weights(lab)
    );
    eprintln!(
        "health, {what}: back after {:?}; status was: {row}",
        t1.elapsed()
    );
}

#[test]
fn health_checks_quiesce_failed_real_servers_and_bring_them_back() {
    if !root_or_skip("health_checks_quiesce_failed_real_servers_and_bring_them_back") {
        return;
    }
    let config = String::from("metrics_addr = \"127.0.0.1:9100\"\n")
        + &services(&[1, 2, 3])
        + "[[check]]\nservice = \"tcp 192.0.2.10:80\"\ntype = \"http\"\npath = \"/health\"\n\
           interval = \"300ms\"\ntimeout = \"1s\"\nfall = 2\nrise = 2\n\
           delay_before_retry = \"300ms\"\n";
    let lab = lab_with(&config);
    let (answered, failed) = requests(&lab, 9, 2);
    assert_eq!((answered.len(), failed), (9, 0));

    fail_and_recover(
        &lab,
        "server stopped",
        || stop_real_server(&lab, 1),
        || start_real_server(&lab, 1),
    );
    let rs2 = lab.ns("r2");
    fail_and_recover(
        &lab,
        "link down",
        || {
            sh(&format!("ip -n {rs2} link set eth0 down"));
        },
        || {
            sh(&format!(
                "ip -n {rs2} link set eth0 up && ip -n {rs2} route replace default via 198.51.100.254"
            ));
        },
    );
    fail_and_recover(
        &lab,
        "HTTP 500",
        || health_set(&lab, 2, "code=500"),
        || health_set(&lab, 2, "code=200"),
    );
    fail_and_recover(
        &lab,
        "check hangs past its timeout",
        || health_set(&lab, 2, "hang=1"),
        || health_set(&lab, 2, "code=200"),
    );
    // The reason of the last failure is in the JSON status.
    let json = String::from_utf8_lossy(&xvs(&lab, &["status", "--json"]).stdout).into_owned();
    let rows: serde_json::Value = serde_json::from_str(&json).expect("status --json");
    assert_eq!(rows.as_array().map(Vec::len), Some(3), "{json}");
    let rs2_row = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["real"] == "198.51.100.2:80"))
        .expect("rs2's row");
    assert!(rs2_row["transitions"].as_u64().unwrap_or(0) >= 8, "{json}");

    // Flapping: 500 and 200 in turn faster than fall and rise allow to
    // follow; once it stays 200, rs2 is up within the bound.
    for _ in 0..8 {
        health_set(&lab, 2, "code=500");
        std::thread::sleep(Duration::from_millis(350));
        health_set(&lab, 2, "code=200");
        std::thread::sleep(Duration::from_millis(350));
    }
    let settled = Instant::now();
    assert!(
        wait_for(BOUND, || weights(&lab)
            .contains(&("198.51.100.2:80".to_string(), 1))),
        "flapping: rs2 not up once steady: {:?}",
        weights(&lab)
    );
    let json = String::from_utf8_lossy(&xvs(&lab, &["status", "--json"]).stdout).into_owned();
    eprintln!(
        "health, flapping: up {:?} after it steadied; status {json}",
        settled.elapsed()
    );
    let (answered, failed) = requests(&lab, 9, 2);
    assert_eq!((answered.len(), failed), (9, 0));
    // Prometheus: the state, the transitions, the latency per checker type.
    let metrics = sh(&format!(
        "ip netns exec {} curl -s -m 5 http://127.0.0.1:9100/metrics",
        lab.ns("d")
    ));
    for want in [
        "xvs_real_up{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:80\",check=\"http\"} 1",
        "xvs_real_transitions_total{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.1:80\",check=\"http\"} 0",
        "xvs_health_check_duration_seconds_bucket{check=\"http\",le=\"+Inf\"}",
        "xvs_real_effective_weight{service=\"TCP 192.0.2.10:80\",real=\"198.51.100.2:80\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} not in\n{metrics}");
    }
}

#[test]
fn below_quorum_the_sorry_server_answers() {
    if !root_or_skip("below_quorum_the_sorry_server_answers") {
        return;
    }
    // rs1 and rs2 serve, rs3 is the sorry server; quorum 2 of weight.
    let config = services(&[1, 2])
        + "[[check]]\nservice = \"tcp 192.0.2.10:80\"\ntype = \"tcp\"\n\
           interval = \"300ms\"\ntimeout = \"1s\"\n\n\
           [[policy]]\nservice = \"tcp 192.0.2.10:80\"\non_failure = \"remove\"\n\
           sorry_server = \"198.51.100.3:80\"\nquorum = 2\n";
    let lab = lab_with(&config);
    let only = |who: &[&str], lab: &Lab| {
        let (answered, failed) = requests(lab, 8, 2);
        failed == 0 && answered.iter().all(|a| who.contains(&a.as_str()))
    };
    assert!(only(&["rs1", "rs2"], &lab), "{:?}", weights(&lab));
    assert!(!weights(&lab)
        .iter()
        .any(|(r, _)| r.starts_with("198.51.100.3")));

    // One down: live weight 1 < 2, quorum lost, the sorry server alone.
    stop_real_server(&lab, 0);
    let sorry = vec![("198.51.100.3:80".to_string(), 1)];
    assert!(
        wait_for(BOUND, || weights(&lab) == sorry),
        "below quorum: {:?}",
        weights(&lab)
    );
    assert!(only(&["rs3"], &lab), "the sorry server answers");
    // Quorum back: the real servers again.
    start_real_server(&lab, 0);
    assert!(
        wait_for(BOUND, || weights(&lab).len() == 2
            && !weights(&lab).contains(&sorry[0])),
        "quorum back: {:?}",
        weights(&lab)
    );
    assert!(only(&["rs1", "rs2"], &lab));
    // Every real server down: the sorry server answers.
    stop_real_server(&lab, 0);
    stop_real_server(&lab, 1);
    assert!(
        wait_for(BOUND, || weights(&lab) == sorry),
        "all down: {:?}",
        weights(&lab)
    );
    assert!(only(&["rs3"], &lab), "all down: the sorry server answers");
    let status = String::from_utf8_lossy(&xvs(&lab, &["status"]).stdout).into_owned();
    assert!(status.contains("no quorum"), "{status}");
}

#[test]
fn a_drain_waits_for_the_open_connection_then_removes_the_server() {
    if !root_or_skip("a_drain_waits_for_the_open_connection_then_removes_the_server") {
        return;
    }
    let lab = Lab::up("nat");
    lab.configure(80, "rr", [1, 1, 1], "");
    let hold = lab.hold(4);
    let busy = || lab.rows().into_iter().find(|r| r.3 == 1).map(|r| r.0);
    assert!(wait_for(BOUND, || busy().is_some()), "{:?}", lab.rows());
    let real = busy().expect("the held connection's server");
    let started = Instant::now();
    let out = xvs(&lab, &["drain", &real, "--within", "30"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "health, drain of {real} took {:?}:\n{text}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 active connection(s) left"), "{text}");
    assert!(
        text.lines().last().unwrap_or_default().contains("drained"),
        "{text}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited for the connection"
    );
    let body = hold
        .wait_with_output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&body).ends_with("\n"),
        "the held connection finished"
    );
    assert!(!lab.rows().iter().any(|r| r.0 == real), "{:?}", lab.rows());
    let (answered, failed) = requests(&lab, 6, 2);
    assert_eq!((answered.len(), failed), (6, 0));
}
