//! Scale-out behind ECMP: `tools/lab up ecmp`, three DR directors running
//! xvs with `mh` and `--sloppy-tcp`, each with bird2 announcing the VIP to a
//! router (bird2, `merge paths on`, an L4 multipath hash) while
//! tools/ecmp/xvs-announce finds its xvs healthy; real servers shared.
//!
//! - `flows_spread_and_survive_a_director_loss`: short connections from 100
//!   client addresses spread over the three directors (the split, from each
//!   director's `--stats`, is printed; each gets a tenth at least). Twelve
//!   keep-alive connections asking every 0.2 s run while the director that
//!   carries most of them is killed (-9): its announcer withdraws the
//!   route while the BGP session stays up, the route leaves the router
//!   (the time is printed), and every connection carries on
//!   through the others with the same real server (the longest stall is
//!   printed). The director comes back while they run: its route returns,
//!   new flows reach it again, and no connection breaks.
//! - `a_real_server_change_moves_few_flows`: one short connection from each
//!   of 120 client addresses, before and after a fourth real server is
//!   added on every director, and after it is removed again: adding moves
//!   at most 1/4 + 10 % of the clients (Maglev's bound), removing it brings
//!   every client back to the server it had (the fractions are printed).
//! - `synced_directors_keep_connections_whose_server_mh_no_longer_picks`:
//!   the directors sync active-active (both roles, unicast to each other);
//!   with twelve long connections open, the real server of most of one
//!   director's connections is quiesced everywhere and that director is
//!   killed: the others forward its connections from their synced entries
//!   to the quiesced server, where mh alone would now pick another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{root_or_skip, sh, temp_path, wait_for, DirectorProc, Netns};

const VIP: &str = "192.0.2.10";
const SERVICE: &str = "-t 192.0.2.10:80";

/// ECMP labs this process has built.
static ECMP_LABS: AtomicU32 = AtomicU32::new(0);

fn tool(name: &str) -> String {
    format!("{}/tools/ecmp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A process in a namespace that the lab kills (-9) on drop.
fn spawn_in(ns: &Netns, argv: &[&str], env: &[(&str, String)], log: &Path) -> Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn")
}

/// One director: its namespace, xvs, bird and announcer.
struct Director {
    /// 1, 2 or 3: PREFIX-d1..d3, 192.0.2.11..13.
    n: usize,
    socket: PathBuf,
    bird_socket: PathBuf,
    xvs: Option<DirectorProc>,
    announce: Option<Child>,
    bird: Option<Child>,
    ns: Netns,
}

impl Director {
    fn addr(&self) -> String {
        format!("192.0.2.1{}", self.n)
    }

    /// `xvs ipvsadm ARGS` against this director.
    fn ipvsadm(&self, args: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
            .arg("ipvsadm")
            .args(args.split_whitespace())
            .env("XVS_CONTROL_SOCKET", &self.socket)
            .output()
            .expect("ipvsadm");
        assert!(
            out.status.success(),
            "d{} ipvsadm {args}: {}",
            self.n,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The service's Conns counter (`--stats`).
    fn conns(&self) -> u64 {
        let stats = self.ipvsadm(&format!("-L -n --stats {SERVICE}"));
        stats
            .lines()
            .find(|l| l.starts_with("TCP"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Conns in\n{stats}"))
    }

    /// Established connections from the long connections' client
    /// addresses (203.0.113.201-212).
    fn established(&self) -> usize {
        self.ipvsadm("-L -n -c")
            .lines()
            .filter(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(2) == Some(&"ESTABLISHED")
                    && w.get(3).is_some_and(|a| {
                        a.strip_prefix("203.0.113.")
                            .and_then(|r| r.split(':').next()?.parse::<u8>().ok())
                            .is_some_and(|x| (201..=212).contains(&x))
                    })
            })
            .count()
    }
}

/// `tools/lab up ecmp` with bird on the router and bird, xvs and
/// xvs-announce on every director.
struct EcmpLab {
    prefix: String,
    work: PathBuf,
    /// Whether the directors sync connections, active-active (unicast to
    /// each other, both roles on each).
    sync: bool,
    router_bird: Option<Child>,
    dirs: Vec<Director>,
    router: Netns,
    client: Netns,
    /// The switch and the real servers, deleted on drop.
    _others: Vec<Netns>,
}

impl EcmpLab {
    fn up(sync: bool) -> EcmpLab {
        let prefix = format!(
            "xvse-{}-{}",
            std::process::id(),
            ECMP_LABS.fetch_add(1, Ordering::Relaxed)
        );
        let work = temp_path("ecmp");
        std::fs::create_dir_all(&work).expect("work dir");
        sh(&format!(
            "{}/tools/lab up ecmp {prefix}",
            env!("CARGO_MANIFEST_DIR")
        ));
        let adopt = |r: &str| Netns::adopt(&format!("{prefix}-{r}"));
        let mut lab = EcmpLab {
            router_bird: None,
            dirs: (1..=3)
                .map(|n| Director {
                    n,
                    socket: work.join(format!("x{n}.sock")),
                    bird_socket: work.join(format!("d{n}.ctl")),
                    xvs: None,
                    announce: None,
                    bird: None,
                    ns: adopt(&format!("d{n}")),
                })
                .collect(),
            router: adopt("rt"),
            client: adopt("c"),
            _others: ["sw", "r1", "r2", "r3", "r4"]
                .iter()
                .map(|r| adopt(r))
                .collect(),
            prefix,
            work,
            sync,
        };
        // The shared sync key: random, readable by its owner only.
        sh(&format!(
            "umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {}",
            lab.work.join("sync.key").display()
        ));
        std::fs::write(
            lab.work.join("rules"),
            "-A -t 192.0.2.10:80 -s mh\n\
             -a -t 192.0.2.10:80 -r 192.0.2.2:80 -g -w 1\n\
             -a -t 192.0.2.10:80 -r 192.0.2.3:80 -g -w 1\n\
             -a -t 192.0.2.10:80 -r 192.0.2.4:80 -g -w 1\n",
        )
        .expect("rules");
        let work = lab.work.clone();
        let w = |f: &str| work.join(f).display().to_string();
        lab.router_bird = Some(spawn_in(
            &lab.router,
            &[
                "bird",
                "-f",
                "-c",
                &tool("bird-router.conf"),
                "-s",
                &w("rt.ctl"),
                "-P",
                &w("rt.pid"),
            ],
            &[],
            &lab.work.join("rt.log"),
        ));
        let conf = std::fs::read_to_string(tool("bird-director.conf")).expect("bird config");
        for i in 0..3 {
            let d = &lab.dirs[i];
            let path = lab.work.join(format!("d{}.conf", d.n));
            std::fs::write(&path, conf.replace("192.0.2.11", &d.addr())).expect("bird config");
            let bird = spawn_in(
                &d.ns,
                &[
                    "bird",
                    "-f",
                    "-c",
                    &path.display().to_string(),
                    "-s",
                    &d.bird_socket.display().to_string(),
                    "-P",
                    &w(&format!("d{}.pid", d.n)),
                ],
                &[],
                &lab.work.join(format!("d{}.bird.log", d.n)),
            );
            lab.dirs[i].bird = Some(bird);
            lab.start_xvs(i);
            let d = &lab.dirs[i];
            let announce = spawn_in(
                &d.ns,
                &[
                    &tool("xvs-announce"),
                    &d.bird_socket.display().to_string(),
                    SERVICE,
                ],
                &[
                    (
                        "XVS_IPVSADM",
                        format!("{} ipvsadm", env!("CARGO_BIN_EXE_xvs")),
                    ),
                    ("XVS_CONTROL_SOCKET", d.socket.display().to_string()),
                ],
                &lab.announce_log(i),
            );
            lab.dirs[i].announce = Some(announce);
        }
        let announced = wait_for(Duration::from_secs(30), || lab.next_hops().len() == 3);
        assert!(
            announced,
            "the router never had three routes to the VIP: {:?}\n{}",
            lab.next_hops(),
            lab.logs()
        );
        lab
    }

    fn announce_log(&self, i: usize) -> PathBuf {
        self.work.join(format!("d{}.announce.log", self.dirs[i].n))
    }

    /// Starts xvs on director `i` (DR, mh, sloppy TCP), with both sync
    /// roles toward the other two when the lab syncs.
    fn start_xvs(&mut self, i: usize) {
        let rules = self.work.join("rules").display().to_string();
        let key = self.work.join("sync.key").display().to_string();
        let peers: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| d.n != self.dirs[i].n)
            .map(|d| format!("{}:8848", d.addr()))
            .collect();
        let d = &mut self.dirs[i];
        let socket = d.socket.display().to_string();
        let mut args = vec![
            "-i",
            "d0",
            "--workers",
            "1",
            "--conn-table-size",
            "65536",
            "--sloppy-tcp",
            "--services",
            &rules,
            "--control-socket",
            &socket,
        ];
        if self.sync {
            args.extend(["--sync-key-file", &key]);
            for p in &peers {
                args.extend(["--sync-peer", p]);
            }
        }
        d.xvs = Some(DirectorProc::start(&d.ns, &args));
        if self.sync {
            d.ipvsadm("--start-daemon master --mcast-interface d0 --syncid 1");
            d.ipvsadm("--start-daemon backup --mcast-interface d0 --syncid 1");
        }
    }

    /// The router's next hops toward the VIP now.
    fn next_hops(&self) -> Vec<String> {
        let out = self
            .router
            .try_exec(&format!("ip route show {VIP}/32"))
            .stdout;
        let text = String::from_utf8_lossy(&out);
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect()
    }

    /// bird's and the announcers' logs, for a failure message.
    fn logs(&self) -> String {
        let mut s = String::new();
        for f in [
            "rt.log",
            "d1.announce.log",
            "d2.announce.log",
            "d3.announce.log",
        ] {
            s += &format!(
                "--- {f}\n{}",
                std::fs::read_to_string(self.work.join(f)).unwrap_or_default()
            );
        }
        s
    }

    /// `tools/ecmp/conns ARGS` on the client, one line per client address.
    fn conns(&self, args: &str) -> Vec<String> {
        self.client
            .exec(&format!("{} {args}", tool("conns")))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// One short request from each of `count` addresses from `first`:
    /// address → the real server that answered.
    fn once(&self, first: &str, count: usize) -> BTreeMap<String, String> {
        let lines = self.conns(&format!("once {VIP} {first} {count}"));
        let failed: Vec<&String> = lines.iter().filter(|l| l.contains("failed")).collect();
        assert!(failed.is_empty(), "requests failed: {failed:?}");
        lines
            .iter()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, n)| (a.to_string(), n.to_string()))
            .collect()
    }

    fn conn_counts(&self) -> Vec<u64> {
        self.dirs.iter().map(Director::conns).collect()
    }
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        for d in &mut self.dirs {
            for c in [d.announce.as_mut(), d.bird.as_mut()].into_iter().flatten() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(c) = self.router_bird.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&format!(
            "{}/tools/lab down {} || true",
            env!("CARGO_MANIFEST_DIR"),
            self.prefix
        ));
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[test]
fn flows_spread_and_survive_a_director_loss() {
    if !root_or_skip("flows_spread_and_survive_a_director_loss") {
        return;
    }
    let mut lab = EcmpLab::up(false);

    // (1) The split of 100 short connections.
    let before = lab.conn_counts();
    let answers = lab.once("203.0.113.101", 100);
    assert_eq!(answers.len(), 100);
    let split: Vec<u64> = lab
        .conn_counts()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    println!("ecmp: 100 connections over the directors: {split:?}");
    assert!(
        split.iter().all(|&n| n >= 10),
        "a director got less than a tenth: {split:?}"
    );

    // (2) Twelve long connections; the director carrying most of them dies.
    let hold = Command::new("ip")
        .args(["netns", "exec", &lab.client.name, &tool("conns")])
        .args(["hold", VIP, "203.0.113.201", "12", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("conns hold");
    let carried = |lab: &EcmpLab| {
        lab.dirs
            .iter()
            .map(Director::established)
            .collect::<Vec<_>>()
    };
    let mut held = vec![0; 3];
    wait_for(Duration::from_secs(10), || {
        held = carried(&lab);
        held.iter().sum::<usize>() >= 12
    });
    println!("ecmp: long connections per director: {held:?}");
    assert_eq!(held.iter().sum::<usize>(), 12, "{held:?}");
    let victim = (0..3).max_by_key(|&i| held[i]).expect("a director");
    let gone = lab.dirs[victim].addr();
    let killed = Instant::now();
    lab.dirs[victim].xvs.take().expect("running").crash();
    let withdrawn = wait_for(Duration::from_secs(10), || !lab.next_hops().contains(&gone));
    let withdraw = killed.elapsed();
    println!(
        "ecmp: d{} killed carrying {} connections; its route left the router after {} ms",
        victim + 1,
        held[victim],
        withdraw.as_millis()
    );
    assert!(withdrawn, "{gone} still a next hop\n{}", lab.logs());
    assert_eq!(lab.next_hops().len(), 2, "{:?}", lab.next_hops());
    // The announcer withdrew it, not BGP's hold time: the session is up.
    let log = std::fs::read_to_string(lab.announce_log(victim)).unwrap_or_default();
    assert!(log.contains("disable: vip: disabled"), "{}", lab.logs());
    let sessions = sh(&format!(
        "birdc -s {} show protocols d{}",
        lab.work.join("rt.ctl").display(),
        victim + 1
    ));
    assert!(sessions.contains("Established"), "{sessions}");

    // (3) It comes back while the connections run.
    std::thread::sleep(Duration::from_secs(2));
    lab.start_xvs(victim);
    let back = wait_for(Duration::from_secs(15), || lab.next_hops().len() == 3);
    assert!(back, "{gone} never came back\n{}", lab.logs());
    println!(
        "ecmp: d{} back {} ms after the kill",
        victim + 1,
        killed.elapsed().as_millis()
    );
    let out = hold.wait_with_output().expect("conns hold");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let survived: Vec<&str> = text.lines().filter(|l| l.contains(" requests ")).collect();
    let gap = survived
        .iter()
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    println!(
        "ecmp: {} of 12 long connections survived the loss and the return; longest stall {gap} ms",
        survived.len()
    );
    assert_eq!(
        survived.len(),
        12,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each kept its real server from start to end (conns checks every
    // answer), and it is the one mh gives its address.
    for l in &survived {
        let mut w = l.split_whitespace();
        let (addr, name) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
        let again = lab.once(addr, 1);
        assert_eq!(again.get(addr).map(String::as_str), Some(name), "{l}");
    }

    // Its share returns: new flows reach it again.
    let before = lab.conn_counts();
    lab.once("203.0.113.101", 100);
    let split: Vec<u64> = lab
        .conn_counts()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "ecmp: 100 connections after d{} returned: {split:?}",
        victim + 1
    );
    assert!(
        split.iter().all(|&n| n >= 10),
        "a director got less than a tenth: {split:?}"
    );
}

#[test]
fn a_real_server_change_moves_few_flows() {
    if !root_or_skip("a_real_server_change_moves_few_flows") {
        return;
    }
    let lab = EcmpLab::up(false);
    const CLIENTS: usize = 120;
    let moved = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count()
    };
    let first = lab.once("203.0.113.101", CLIENTS);
    assert_eq!(first.len(), CLIENTS);
    for d in &lab.dirs {
        d.ipvsadm(&format!("-a {SERVICE} -r 192.0.2.5:80 -g -w 1"));
    }
    let added = lab.once("203.0.113.101", CLIENTS);
    let to_rs4 = added.values().filter(|n| *n == "rs4").count();
    let n = moved(&first, &added);
    println!(
        "ecmp: adding a 4th real server moved {n} of {CLIENTS} clients ({:.1} %), {to_rs4} to rs4",
        100.0 * n as f64 / CLIENTS as f64
    );
    assert!(to_rs4 > 0, "the new real server got no client");
    assert!(
        n as f64 <= CLIENTS as f64 * (0.25 + 0.10),
        "moved {n} of {CLIENTS}"
    );
    for d in &lab.dirs {
        d.ipvsadm(&format!("-d {SERVICE} -r 192.0.2.5:80"));
    }
    let removed = lab.once("203.0.113.101", CLIENTS);
    let n = moved(&added, &removed);
    println!(
        "ecmp: removing it moved {n} of {CLIENTS} clients ({:.1} %); back where they were: {}",
        100.0 * n as f64 / CLIENTS as f64,
        moved(&first, &removed) == 0
    );
    assert!(
        n as f64 <= CLIENTS as f64 * (0.25 + 0.10),
        "moved {n} of {CLIENTS}"
    );
    assert_eq!(
        moved(&first, &removed),
        0,
        "the same three servers must give every client the server it had"
    );
}

#[test]
fn synced_directors_keep_connections_whose_server_mh_no_longer_picks() {
    if !root_or_skip("synced_directors_keep_connections_whose_server_mh_no_longer_picks") {
        return;
    }
    let mut lab = EcmpLab::up(true);
    let before = lab.conn_counts();
    let hold = Command::new("ip")
        .args(["netns", "exec", &lab.client.name, &tool("conns")])
        .args(["hold", VIP, "203.0.113.201", "12", "16"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("conns hold");
    // Every director holds all twelve (its own and its peers' entries).
    let long_ones = |d: &Director| {
        d.ipvsadm("-L -n -c")
            .lines()
            .filter(|l| l.contains("ESTABLISHED") && l.contains(" 203.0.113.2"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let synced = wait_for(Duration::from_secs(10), || {
        lab.dirs.iter().all(|d| long_ones(d).len() >= 12)
    });
    assert!(synced, "the directors' tables differ");
    // Who scheduled how many: the Conns counters count a director's own.
    let carried: Vec<u64> = lab
        .conn_counts()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let victim = (0..3).max_by_key(|&i| carried[i]).expect("a director");
    // All but the real server with the fewest of them quiesced everywhere:
    // mh sends those clients to that one now, so only the synced entries
    // keep the connections that move off the victim where they are.
    let mut per_real: BTreeMap<String, usize> = ["192.0.2.2:80", "192.0.2.3:80", "192.0.2.4:80"]
        .iter()
        .map(|r| (r.to_string(), 0))
        .collect();
    for l in long_ones(&lab.dirs[victim]) {
        if let Some(r) = l.split_whitespace().nth(5) {
            *per_real.entry(r.to_string()).or_default() += 1;
        }
    }
    let keep = per_real
        .iter()
        .min_by_key(|(_, n)| **n)
        .map(|(r, _)| r.clone())
        .expect("real servers");
    let quiesced: Vec<&String> = per_real.keys().filter(|r| **r != keep).collect();
    for d in &lab.dirs {
        for r in &quiesced {
            d.ipvsadm(&format!("-e {SERVICE} -r {r} -g -w 0"));
        }
    }
    lab.dirs[victim].xvs.take().expect("running").crash();
    println!(
        "ecmp sync: scheduled per director {carried:?}; d{} killed; {} of 12 on the quiesced {quiesced:?}",
        victim + 1,
        12 - per_real[&keep]
    );
    let out = hold.wait_with_output().expect("conns hold");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let survived = text.lines().filter(|l| l.contains(" requests ")).count();
    println!("ecmp sync: {survived} of 12 long connections survived");
    assert_eq!(
        survived,
        12,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
