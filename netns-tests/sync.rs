//! Connection sync between two directors: the seed's NAT cluster with its
//! director as master, a backup director in a namespace of its own, and a
//! sync link (a bridge, 203.0.113.0/24) joining them and a third namespace
//! that plays the attacker.
//!
//! - The master's connections appear on the backup (`ipvsadm -L -n -c`
//!   through the backup's control socket), each on the same real server.
//! - Replayed, truncated, forged and malformed datagrams sent to the
//!   backup from the attacker's namespace are refused and counted by
//!   reason (`xvs_sync_rejected_total`), and the backup's table does not
//!   change.
//! - With 1% and then 10% of the master's sync datagrams lost (nftables'
//!   `numgen random`, after a first datagram always lost), the backup's table
//!   converges on the master's after the repair interval (gaps NACKed and
//!   resent).
//! - A backup restarted while the master serves takes the full table by
//!   resync (its log says so) before it declares itself ready.
//! - With `--sync-services` on both, the master's `ipvsadm -A/-a/-e/-d`
//!   appear on the backup's `ipvsadm -L -n`; a backup without it leaves its
//!   services alone and counts what came as refused (`services_off`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::clusters::Lab;
use crate::common::{root_or_skip, sh, temp_path, wait_for, DirectorProc, Netns};

const MASTER_SYNC: &str = "203.0.113.1";
const BACKUP_SYNC: &str = "203.0.113.2";
const ATTACKER: &str = "203.0.113.3";
const SERVICES: &str = "-A -t 192.0.2.10:80 -s rr\n\
-a -t 192.0.2.10:80 -r 198.51.100.1:80 -m -w 1\n\
-a -t 192.0.2.10:80 -r 198.51.100.2:80 -m -w 1\n\
-a -t 192.0.2.10:80 -r 198.51.100.3:80 -m -w 1\n";

/// The NAT lab's director (master) and a backup, joined by a sync link.
struct Pair {
    // Field order is drop order: directors first, then namespaces.
    backup: Option<DirectorProc>,
    lab: Lab,
    backup_ns: Netns,
    attacker: Netns,
    _switch: Netns,
    key: PathBuf,
    backup_socket: PathBuf,
    backup_config: PathBuf,
}

impl Pair {
    fn up() -> Pair {
        Pair::up_with(&[], &[])
    }

    /// As [`Pair::up`], with more flags for the master and the backup.
    fn up_with(master_extra: &[&str], backup_extra: &[&str]) -> Pair {
        let key = temp_path("sync-key");
        std::fs::write(&key, "a shared secret of the two directors\n").expect("key");
        sh(&format!("chmod 600 {}", key.display()));
        let keyarg = key.display().to_string();
        let mut master_args = vec!["--sync-key-file", &keyarg, "--sync-id", "1"];
        master_args.extend(master_extra);
        let lab = Lab::up_with_args("nat", "on", &master_args);
        let switch = Netns::new("sysw");
        switch.ip("link add br0 type bridge");
        switch.ip("link set br0 up");
        let backup_ns = Netns::new("syb");
        let attacker = Netns::new("syx");
        // The lab's director namespace is the lab's (it deletes it).
        let master_ns = lab.ns("d");
        for (i, (ns, addr)) in [
            (master_ns.as_str(), MASTER_SYNC),
            (backup_ns.name.as_str(), BACKUP_SYNC),
            (attacker.name.as_str(), ATTACKER),
        ]
        .into_iter()
        .enumerate()
        {
            sh(&format!(
                "ip link add s0 netns {ns} type veth peer name p{i} netns {}",
                switch.name
            ));
            sh(&format!("ip -n {ns} link set s0 up"));
            sh(&format!("ip -n {ns} addr add {addr}/24 dev s0"));
            switch.ip(&format!("link set p{i} master br0"));
            switch.ip(&format!("link set p{i} up"));
        }
        let mut p = Pair {
            backup: None,
            lab,
            backup_ns,
            attacker,
            _switch: switch,
            key,
            backup_socket: temp_path("ctl-b").with_extension("sock"),
            backup_config: temp_path("backup").with_extension("toml"),
        };
        p.start_backup(backup_extra);
        p.lab.configure(80, "rr", [1, 1, 1], "");
        p.backup_script(SERVICES);
        p.lab.ipvsadm("--start-daemon master --mcast-interface s0");
        p.backup_ipvsadm("--start-daemon backup --mcast-interface s0");
        p
    }

    fn start_backup(&mut self, extra: &[&str]) {
        let socket = self.backup_socket.display().to_string();
        let key = self.key.display().to_string();
        let mut args = vec![
            "-i",
            "s0",
            "--workers",
            "1",
            "--conn-table-size",
            "65536",
            "--control-socket",
            &socket,
            "--metrics-addr",
            "127.0.0.1:9100",
            "--sync-key-file",
            &key,
        ];
        args.extend(extra);
        self.backup = Some(DirectorProc::start(&self.backup_ns, &args));
    }

    fn backup_ipvsadm(&self, args: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
            .arg("ipvsadm")
            .args(args.split_whitespace())
            .env("XVS_CONTROL_SOCKET", &self.backup_socket)
            .output()
            .expect("xvs ipvsadm");
        assert!(
            out.status.success(),
            "backup ipvsadm {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn backup_script(&self, lines: &str) {
        for l in lines.lines() {
            self.backup_ipvsadm(l);
        }
    }

    /// The backup's `xvs_sync_rejected_total{reason=...}`.
    fn rejected(&self, reason: &str) -> u64 {
        self.metric(&format!("xvs_sync_rejected_total{{reason=\"{reason}\"}}"))
    }

    /// The backup's `xvs_sync_*` samples, for a failure's message.
    fn sync_metrics(&self) -> String {
        let text = self
            .backup_ns
            .exec("curl -s -m 5 http://127.0.0.1:9100/metrics");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("xvs_sync_"))
            .collect();
        lines.join("\n")
    }

    /// One sample of the backup's metrics.
    fn metric(&self, name: &str) -> u64 {
        let text = self
            .backup_ns
            .exec("curl -s -m 5 http://127.0.0.1:9100/metrics");
        let want = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {want} in\n{text}"))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.backup.take();
        let _ = std::fs::remove_file(&self.key);
        let _ = std::fs::remove_file(&self.backup_socket);
        let _ = std::fs::remove_file(&self.backup_config);
    }
}

/// `(client, virtual, real, state)` of every connection `-L -n -c` lists.
fn conns(listing: &str) -> BTreeSet<(String, String, String, String)> {
    listing
        .lines()
        .filter(|l| l.starts_with("TCP") || l.starts_with("UDP"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // pro expire state source virtual destination
            (f.len() >= 6 && f[2] != "NONE").then(|| {
                (
                    f[3].to_string(),
                    f[4].to_string(),
                    f[5].to_string(),
                    f[2].to_string(),
                )
            })
        })
        .collect()
}

/// Drops the first sync datagram `ns` sends from now on, then `percent` %
/// of them at random, at nftables' output hook. The first is certain, so a
/// phase has a gap to repair however few datagrams it sends; nftables, not
/// netem, so the loss is the same on kernels without netem.
fn lose_sync_datagrams(ns: &str, percent: u32) {
    sh(&format!(
        "ip netns exec {ns} nft -f - <<'EOF'
table inet xvs_sync_loss {{
  chain out {{
    type filter hook output priority 0;
    udp dport 8848 numgen inc mod 1000000000 == 0 counter drop
    udp dport 8848 numgen random mod 100 < {percent} counter drop
    udp dport 8848 counter
  }}
}}
EOF"
    ));
}

fn keep_sync_datagrams(ns: &str) {
    sh(&format!(
        "ip netns exec {ns} sh -c 'nft delete table inet xvs_sync_loss 2>/dev/null; true'"
    ));
}

#[test]
fn sync_master_connections_appear_on_the_backup_and_forgeries_are_refused() {
    if !root_or_skip("sync_master_connections_appear_on_the_backup_and_forgeries_are_refused") {
        return;
    }
    let p = Pair::up();
    for out in [
        p.lab.ipvsadm("-L --daemon"),
        p.backup_ipvsadm("-L --daemon"),
    ] {
        assert!(out.contains("sync daemon (mcast=s0, syncid=0"), "{out}");
    }
    let holds: Vec<_> = (0..3).map(|_| p.lab.hold(20)).collect();
    let mut master = BTreeSet::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            master = conns(&p.lab.ipvsadm("-L -n -c"));
            master.iter().filter(|c| c.3 == "ESTABLISHED").count() == 3
        }),
        "the master holds three established connections: {master:?}"
    );
    let mut backup = BTreeSet::new();
    let synced = wait_for(Duration::from_secs(10), || {
        backup = conns(&p.backup_ipvsadm("-L -n -c"));
        master.is_subset(&backup)
    });
    assert!(
        synced,
        "the backup holds the master's connections\nmaster: {master:?}\nbackup: {backup:?}"
    );

    // The attacker hears one of the master's datagrams (a heartbeat comes
    // every second), then sends the backup a replay of it, cuts of it, a
    // forgery of a connection and a datagram of another version.
    let before: Vec<u64> = ["replayed", "truncated", "bad_mac", "malformed"]
        .iter()
        .map(|r| p.rejected(r))
        .collect();
    let table_before = conns(&p.backup_ipvsadm("-L -n -c"));
    let script = format!(
        r#"
import os, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("224.0.0.81", 8848))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("224.0.0.81") + socket.inet_aton("{ATTACKER}"))
s.settimeout(10)
while True:
    d, a = s.recvfrom(65535)
    if a[0] == "{MASTER_SYNC}" and d[:2] == b"XS" and d[3] == 1:
        break
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
to = ("{BACKUP_SYNC}", 8848)
out.sendto(d, to)                      # replayed
out.sendto(d[:-10], to)                # truncated
out.sendto(b"hello", to)               # truncated
head = bytearray(d[:40])
entry = bytes([1, 0, 6, 0, 1, 0]) + struct.pack(">HHHI", 4444, 80, 80, 900000) \
    + socket.inet_aton("203.0.113.99") + socket.inet_aton("192.0.2.10") \
    + socket.inet_aton("198.51.100.1")
head[8:10] = struct.pack(">H", 1)
body = bytes(head) + entry
body = body[:6] + struct.pack(">H", len(body) + 32) + body[8:]
out.sendto(body + os.urandom(32), to)  # forged: not our key
bad = bytearray(d)
bad[2] = 9
out.sendto(bytes(bad), to)             # malformed: another version
print("sent")
"#
    );
    let sent = p
        .attacker
        .exec(&format!("python3 -c '{}'", script.replace('\'', "\"")));
    assert!(sent.contains("sent"), "{sent}");
    let want = [1, 2, 1, 1];
    let mut after = Vec::new();
    let counted = wait_for(Duration::from_secs(5), || {
        after = ["replayed", "truncated", "bad_mac", "malformed"]
            .iter()
            .map(|r| p.rejected(r))
            .collect();
        after.iter().zip(&before).map(|(a, b)| a - b).eq(want)
    });
    assert!(
        counted,
        "refusals replayed/truncated/bad_mac/malformed: before {before:?}, after {after:?}"
    );
    let table_after = conns(&p.backup_ipvsadm("-L -n -c"));
    assert!(
        !table_after.iter().any(|c| c.0.starts_with("203.0.113.99")),
        "a forged connection was installed: {table_after:?}"
    );
    assert_eq!(
        table_after.iter().map(|c| &c.0).collect::<BTreeSet<_>>(),
        table_before.iter().map(|c| &c.0).collect::<BTreeSet<_>>(),
        "the backup's connections changed"
    );
    for mut h in holds {
        let _ = h.wait();
    }
}

#[test]
fn sync_converges_under_loss_and_a_restarted_backup_resyncs() {
    if !root_or_skip("sync_converges_under_loss_and_a_restarted_backup_resyncs") {
        return;
    }
    let mut p = Pair::up();
    let master_ns = p.lab.ns("d");
    let mut master = BTreeSet::new();
    let mut backup = BTreeSet::new();
    // 1%, then 10% of datagrams lost: NACKs every 200 ms bring the rest
    // within a few seconds; the bound is generous for a shared machine.
    // Each phase opens connections of its own.
    let mut holds = Vec::new();
    for (phase, percent) in [1u32, 10].into_iter().enumerate() {
        keep_sync_datagrams(&master_ns);
        lose_sync_datagrams(&master_ns, percent);
        holds.extend((0..4).map(|_| p.lab.hold(30)));
        p.lab.requests(40);
        let want = 44 * (phase + 1);
        let converged = wait_for(Duration::from_secs(20), || {
            master = conns(&p.lab.ipvsadm("-L -n -c"));
            backup = conns(&p.backup_ipvsadm("-L -n -c"));
            master.len() >= want && master.is_subset(&backup)
        });
        assert!(
            converged,
            "after {percent}% loss the backup holds the master's connections\nmissing: {:?}\nthe backup's sync counters:\n{}\nthe loss:\n{}",
            master.difference(&backup).collect::<Vec<_>>(),
            p.sync_metrics(),
            sh(&format!("ip netns exec {master_ns} nft list table inet xvs_sync_loss")),
        );

        eprintln!(
            "{percent}% loss: the backup holds all {} of the master's connections",
            master.len()
        );
    }
    // Convergence may come before a repair does (a later datagram told of
    // the same connections): the repairs themselves follow within NACKs.
    let (mut gaps, mut repaired) = (0, 0);
    let repairs = wait_for(Duration::from_secs(10), || {
        gaps = p.metric("xvs_sync_gaps_total");
        repaired = p.metric("xvs_sync_gaps_repaired_total");
        gaps > 0 && repaired > 0
    });
    keep_sync_datagrams(&master_ns);
    assert!(
        repairs,
        "datagrams were lost and repaired: gaps {gaps}, repaired {repaired}"
    );

    // A restarted backup: its table starts empty, and it asks the master
    // for all of it before it is ready.
    p.backup.take().map(DirectorProc::stop);
    let config = format!(
        "services = \"\"\"\n{SERVICES}\"\"\"\n[sync]\nrole = \"backup\"\nmcast_interface = \"s0\"\nsender_id = 3\n"
    );
    std::fs::write(&p.backup_config, config).expect("config");
    let cfg = p.backup_config.display().to_string();
    p.start_backup(&["--config", &cfg]);
    let log = || p.backup.as_ref().map(|b| b.log_text()).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(15), || log()
            .contains("sync: resync from")),
        "no resync:\n{}",
        log()
    );
    let line = log()
        .lines()
        .find(|l| l.contains("sync: resync from"))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("{line}");
    assert!(
        line.contains(&format!("resync from {MASTER_SYNC}:8848 done")),
        "{line}"
    );
    let master = conns(&p.lab.ipvsadm("-L -n -c"));
    let backup = conns(&p.backup_ipvsadm("-L -n -c"));
    let missing: Vec<_> = master
        .iter()
        .filter(|m| !backup.iter().any(|b| b.0 == m.0 && b.2 == m.2))
        .collect();
    assert!(
        missing.is_empty(),
        "right after the resync the backup lacks {missing:?}\n{line}"
    );
    for mut h in holds {
        let _ = h.wait();
    }
}

/// `-L -n`'s weight of `real` in the service listed as `service`, if both
/// are listed.
fn listed_weight(listing: &str, service: &str, real: &str) -> Option<u32> {
    let mut in_service = false;
    for l in listing.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["TCP" | "UDP", s, ..] => in_service = *s == service,
            ["->", r, _, w, ..] if in_service && *r == real => return w.parse().ok(),
            _ => {}
        }
    }
    None
}

#[test]
fn sync_services_the_masters_edits_reach_a_backup_that_asks_for_them() {
    if !root_or_skip("sync_services_the_masters_edits_reach_a_backup_that_asks_for_them") {
        return;
    }
    let mut p = Pair::up_with(&["--sync-services"], &["--sync-services"]);
    let (svc, real) = ("192.0.2.10:8080", "198.51.100.1:8080");
    let within = Duration::from_secs(10);
    let backup_has = |want: Option<u32>| -> (bool, String) {
        let mut listing = String::new();
        let ok = wait_for(within, || {
            listing = p.backup_ipvsadm("-L -n");
            listed_weight(&listing, svc, real) == want
        });
        (ok, listing)
    };
    p.lab.ipvsadm(&format!("-A -t {svc} -s wlc"));
    p.lab.ipvsadm(&format!("-a -t {svc} -r {real} -m -w 2"));
    let (ok, listing) = backup_has(Some(2));
    assert!(ok, "-a did not reach the backup:\n{listing}");
    p.lab.ipvsadm(&format!("-e -t {svc} -r {real} -m -w 5"));
    let (ok, listing) = backup_has(Some(5));
    assert!(ok, "-e -w did not reach the backup:\n{listing}");
    p.lab.ipvsadm(&format!("-d -t {svc} -r {real}"));
    let (ok, listing) = backup_has(None);
    assert!(ok, "-d did not reach the backup:\n{listing}");
    assert!(listing.contains("TCP  192.0.2.10:8080 wlc"), "{listing}");
    assert_eq!(
        p.backup_ipvsadm("-S -n"),
        p.lab.ipvsadm("-S -n"),
        "the backup's services are the master's"
    );
    assert!(p.metric("xvs_sync_services_applied_total") >= 3);
    let log = p.backup.as_ref().map(|b| b.log_text()).unwrap_or_default();
    assert!(
        log.contains(&format!("sync: services from {MASTER_SYNC}: generation")),
        "{log}"
    );

    // The backup again, without the switch: its own services stay.
    p.backup.take().map(DirectorProc::stop);
    p.start_backup(&[]);
    p.backup_script(SERVICES);
    p.backup_ipvsadm("--start-daemon backup --mcast-interface s0");
    let own = p.backup_ipvsadm("-S -n");
    p.lab.ipvsadm(&format!("-a -t {svc} -r {real} -m -w 7"));
    let refused = wait_for(within, || {
        p.metric("xvs_sync_refused_total{reason=\"services_off\"}") >= 2
    });
    assert!(refused, "the backup counted no refused configuration");
    assert_eq!(
        p.backup_ipvsadm("-S -n"),
        own,
        "the backup's services changed"
    );
    assert_eq!(p.metric("xvs_sync_services_applied_total"), 0);
}
