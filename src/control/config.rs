//! The director's configuration file (`xvs director --config FILE`) and how
//! it meets the command line.
//!
//! TOML, every key optional; unknown keys are errors (a typo must not be
//! silently ignored). Command-line flags win over the file; a list given on
//! the command line (`-i`, `--neigh`, `--queues`) replaces the file's.
//!
//! ```toml
//! interfaces = ["eth0", "eth1"]
//! workers = 2
//! queues = [0, 1]
//! conn_table_size = 1048576
//! sloppy_tcp = false
//! expire_nodest_conn = false     # true: a deleted real server's connections end
//! busy_poll = 64                 # SO_PREFER_BUSY_POLL budget; absent: off
//! batch_prefetch = false         # prefetch each batch's connection entries first
//! batch = 64
//! ring_size = 2048
//! worker_cpus = "1-3"             # as taskset -c; other threads get the rest
//! neighbours = ["198.51.100.2=02:00:00:00:01:02@eth1"]   # ADDR=MAC@IFACE
//! control_socket = "/run/xvs/control.sock"
//! metrics_addr = "127.0.0.1:9100"                         # absent: off
//!
//! # Virtual services in ipvsadm-save (`ipvsadm -S`) format: a file
//! # (relative paths are from this file's directory) ...
//! services_file = "services.rules"
//! # ... or inline (not both):
//! # services = """
//! # -A -t 192.0.2.10:80 -s wlc
//! # -a -t 192.0.2.10:80 -r 198.51.100.2:80 -m -w 1
//! # """
//!
//! # Tables last: every key after [timeouts] belongs to it.
//! [timeouts]                     # ipvsadm --set tcp tcpfin udp, seconds
//! tcp = 900
//! tcpfin = 120
//! udp = 300
//!
//! [sync]                         # connection sync: see control::sync_config
//! insecure = false
//! ```
//!
//! The services script is read as `ipvsadm -R` reads it (its parse errors
//! are ipvsadm's, "services: line 3: illegal weight specified"); its edits
//! are applied to a new [`ServiceModel`] as one transaction, all or nothing
//! (the model's IPVS wording: "services: line 2: Service already exists");
//! its `--set` lines set the start-up timeouts (after `[timeouts]`).
//! [`check`] validates a file as far as possible without root or the
//! interfaces: TOML, values, neighbours, addresses, the services script,
//! the memory the table needs, and the queues of the interfaces it finds.
//! Files are read through [`files::read_text`]: regular files only, at most
//! [`files::MAX_CONFIG_BYTES`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ipvsadm::{parse_restore, Command, ScriptLine, Services, MAX_TIMEOUT};
use super::sync_config::SyncConfig;
use crate::director::{self, DirectorOptions, StaticNeighbourSpec, REAL_CAPACITY};
use crate::files;
use crate::limits::{MAX_CONN_TABLE, MAX_QUEUES};
use crate::neigh::netlink;
use crate::packet::MacAddr;
use crate::service::{ApplyError, ServiceModel};

/// Largest AF_XDP ring: each worker's UMEM holds two rings' worth of 4 KiB
/// frames per interface (512 MiB per interface at this size).
pub const MAX_RING: u32 = 1 << 16;

/// The file's contents; also what the command line overrides.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub interfaces: Option<Vec<String>>,
    pub workers: Option<usize>,
    pub queues: Option<Vec<u32>>,
    pub conn_table_size: Option<usize>,
    pub timeouts: Option<TimeoutsConfig>,
    pub sloppy_tcp: Option<bool>,
    /// IPVS's `expire_nodest_conn` (default false: keep the connections of
    /// a deleted real server for its return).
    pub expire_nodest_conn: Option<bool>,
    pub busy_poll: Option<u16>,
    /// Prefetch each batch's connection entries before processing it.
    pub batch_prefetch: Option<bool>,
    pub batch: Option<usize>,
    pub ring_size: Option<u32>,
    /// A CPU list as `taskset -c` takes it, as `--worker-cpus`.
    pub worker_cpus: Option<String>,
    /// `ADDR=MAC@IFACE`, as `--neigh`.
    pub neighbours: Option<Vec<String>>,
    pub control_socket: Option<PathBuf>,
    pub metrics_addr: Option<String>,
    pub services_file: Option<PathBuf>,
    /// Inline ipvsadm-save text.
    pub services: Option<String>,
    /// Connection sync ([`super::sync_config`]).
    pub sync: Option<SyncConfig>,
}

/// `ipvsadm --set tcp tcpfin udp` at start, seconds.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    pub tcp: Option<u32>,
    pub tcpfin: Option<u32>,
    pub udp: Option<u32>,
}

/// Everything resolved and checked: what `xvs director` runs with.
#[derive(Debug)]
pub struct Settings {
    pub director: DirectorOptions,
    pub control_socket: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    /// The services to start with.
    pub model: ServiceModel,
}

impl FileConfig {
    /// Reads and parses `path`. Relative `services_file` paths are made
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = files::read_text(path, files::MAX_CONFIG_BYTES).map_err(|e| e.to_string())?;
        let mut c = FileConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(f) = &c.services_file {
            if f.is_relative() {
                let dir = path.parent().unwrap_or(Path::new("."));
                c.services_file = Some(dir.join(f));
            }
        }
        Ok(c)
    }

    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// `self` with every field `over` sets replaced by `over`'s.
    pub fn overridden_by(self, over: FileConfig) -> FileConfig {
        let timeouts = match (self.timeouts, over.timeouts) {
            (Some(a), Some(b)) => Some(TimeoutsConfig {
                tcp: b.tcp.or(a.tcp),
                tcpfin: b.tcpfin.or(a.tcpfin),
                udp: b.udp.or(a.udp),
            }),
            (a, b) => b.or(a),
        };
        // Services from the command line replace the file's, either form.
        let (services_file, services) = if over.services_file.is_some() || over.services.is_some() {
            (over.services_file, over.services)
        } else {
            (self.services_file, self.services)
        };
        FileConfig {
            interfaces: over.interfaces.or(self.interfaces),
            workers: over.workers.or(self.workers),
            queues: over.queues.or(self.queues),
            conn_table_size: over.conn_table_size.or(self.conn_table_size),
            timeouts,
            sloppy_tcp: over.sloppy_tcp.or(self.sloppy_tcp),
            expire_nodest_conn: over.expire_nodest_conn.or(self.expire_nodest_conn),
            busy_poll: over.busy_poll.or(self.busy_poll),
            batch_prefetch: over.batch_prefetch.or(self.batch_prefetch),
            batch: over.batch.or(self.batch),
            ring_size: over.ring_size.or(self.ring_size),
            worker_cpus: over.worker_cpus.or(self.worker_cpus),
            neighbours: over.neighbours.or(self.neighbours),
            control_socket: over.control_socket.or(self.control_socket),
            metrics_addr: over.metrics_addr.or(self.metrics_addr),
            services_file,
            services,
            sync: match (self.sync, over.sync) {
                (Some(a), Some(b)) => Some(a.overridden_by(b)),
                (a, b) => b.or(a),
            },
        }
    }

    /// Checks every value and builds the start-up settings.
    pub fn resolve(&self) -> Result<Settings, String> {
        let mut opts = DirectorOptions::default();
        if let Some(i) = &self.interfaces {
            // Interface names also name lock files: only what Linux allows.
            if let Some(bad) = i
                .iter()
                .find(|n| n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\0']))
            {
                return Err(format!("{bad:?} is not an interface name"));
            }
            opts.interfaces = i.clone();
        }
        if self.workers == Some(0) {
            return Err("workers must be at least 1".into());
        }
        if let Some(n) = self.workers.filter(|&n| n > MAX_QUEUES) {
            return Err(format!(
                "workers = {n}: at most {MAX_QUEUES}, one per rx queue (queues 0 to {})",
                MAX_QUEUES - 1
            ));
        }
        opts.workers = self.workers;
        if let Some(q) = &self.queues {
            if q.is_empty() {
                return Err("queues must name at least one queue".into());
            }
            if let Some(bad) = q.iter().find(|&&v| v as usize >= MAX_QUEUES) {
                return Err(format!(
                    "queues names queue {bad}: xvs serves rx queues 0 to {} only",
                    MAX_QUEUES - 1
                ));
            }
            if let Some(dup) = q.iter().enumerate().find(|(i, v)| q[..*i].contains(v)) {
                return Err(format!(
                    "queues names queue {} twice: each worker needs a queue of its own",
                    dup.1
                ));
            }
            if let Some(n) = self.workers.filter(|&n| n != q.len()) {
                return Err(format!(
                    "workers = {n} but queues names {} queue(s): give one queue per worker",
                    q.len()
                ));
            }
        }
        opts.queues = self.queues.clone();
        if let Some(n) = self.conn_table_size {
            if !(1024..=MAX_CONN_TABLE).contains(&n) {
                return Err(format!(
                    "conn_table_size = {n}: give 1024 to {MAX_CONN_TABLE} connections"
                ));
            }
            opts.conn_table_size = n;
        }
        if let Some(b) = self.batch {
            if b == 0 {
                return Err("batch must be at least 1".into());
            }
            opts.batch = b;
        }
        if let Some(r) = self.ring_size {
            if !r.is_power_of_two() || r > MAX_RING {
                return Err(format!(
                    "ring_size = {r} must be a power of two up to {MAX_RING}"
                ));
            }
            opts.ring_size = r;
        }
        if opts.batch > opts.ring_size as usize {
            return Err(format!(
                "batch = {} is larger than ring_size = {}: a batch comes off one ring",
                opts.batch, opts.ring_size
            ));
        }
        if let Some(list) = &self.worker_cpus {
            opts.worker_cpus =
                Some(crate::cpus::parse_list(list).map_err(|e| format!("worker_cpus: {e}"))?);
        }
        opts.busy_poll = self.busy_poll;
        opts.batch_prefetch = self.batch_prefetch.unwrap_or(false);
        opts.sloppy_tcp = self.sloppy_tcp.unwrap_or(false);
        opts.expire_nodest_conn = self.expire_nodest_conn.unwrap_or(false);
        if let Some(t) = self.timeouts {
            for (name, v) in [("tcp", t.tcp), ("tcpfin", t.tcpfin), ("udp", t.udp)] {
                if let Some(v) = v {
                    if v == 0 || v > MAX_TIMEOUT {
                        return Err(format!(
                            "timeouts.{name} = {v}: give seconds from 1 to {MAX_TIMEOUT}"
                        ));
                    }
                }
            }
            set_timeouts(&mut opts, t.tcp, t.tcpfin, t.udp);
        }
        for n in self.neighbours.iter().flatten() {
            opts.static_neighbours.push(parse_neighbour(n)?);
        }
        let metrics_addr = match &self.metrics_addr {
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                format!("metrics_addr = {a:?}: expected ADDRESS:PORT, e.g. 127.0.0.1:9100")
            })?),
            None => None,
        };
        let (origin, text) = match (&self.services_file, &self.services) {
            (Some(_), Some(_)) => {
                return Err("give services_file or services, not both".into());
            }
            (Some(f), None) => (
                f.display().to_string(),
                files::read_text(f, files::MAX_CONFIG_BYTES).map_err(|e| e.to_string())?,
            ),
            (None, Some(s)) => ("services".to_string(), s.clone()),
            (None, None) => (String::new(), String::new()),
        };
        let script =
            parse_restore(&text, Services::system()).map_err(|e| format!("{origin}: {e}"))?;
        let model = start_model(&script, &mut opts).map_err(|e| format!("{origin}: {e}"))?;
        if let Some(s) = &self.sync {
            opts.sync = s.resolve()?;
        }
        Ok(Settings {
            director: opts,
            control_socket: self.control_socket.clone(),
            metrics_addr,
            model,
        })
    }
}

/// The model a services script starts the director with: its edits, as
/// one transaction of the model (the first refused one fails the file,
/// named by its line); its `--set` lines set the start-up timeouts. A `-Z`
/// line has nothing to zero at start, but must still name a service that
/// exists by then, as `ipvsadm -R` would check.
fn start_model(script: &[ScriptLine], opts: &mut DirectorOptions) -> Result<ServiceModel, String> {
    let mut model = ServiceModel::new(REAL_CAPACITY);
    let mut tx = model.transaction();
    for ScriptLine { line, command } in script {
        let refused = |e: ApplyError| format!("line {line}: {e}");
        match command {
            Command::Edit(edit) => tx.apply_with(edit, &|_| true).map_err(refused)?,
            Command::Zero(Some(key)) if tx.model().service(key).is_none() => {
                return Err(refused(ApplyError::NoSuchService));
            }
            Command::SetTimeouts { tcp, tcpfin, udp } => {
                let some = |v: u32| (v != 0).then_some(v);
                set_timeouts(opts, some(*tcp), some(*tcpfin), some(*udp));
            }
            _ => {}
        }
    }
    tx.commit();
    Ok(model)
}

fn set_timeouts(
    opts: &mut DirectorOptions,
    tcp: Option<u32>,
    tcpfin: Option<u32>,
    udp: Option<u32>,
) {
    if let Some(v) = tcp {
        opts.timeouts.tcp = v;
    }
    if let Some(v) = tcpfin {
        opts.timeouts.tcpfin = v;
    }
    if let Some(v) = udp {
        opts.timeouts.udp = v;
    }
}

/// `xvs director --check-config FILE`: what the file would start, or why
/// it would not.
///
/// Beyond the file itself it checks what start-up would find on this host:
/// the memory the connection table and the AF_XDP frames need against what
/// the machine has available and the process may map, and, when every
/// interface named is here, the workers' queues against theirs and
/// `worker_cpus` against the CPUs this process may use. Interfaces not
/// here (a file checked on another host) are named in the answer.
pub fn check(path: &Path) -> Result<String, String> {
    let at = |e: String| format!("{}: {e}", path.display());
    let s = FileConfig::load(path)?.resolve().map_err(at)?;
    let opts = &s.director;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in &opts.interfaces {
        match netlink::interface(name) {
            Ok(i) => found.push(i),
            Err(e @ netlink::Error::NotEthernet { .. }) => return Err(at(e.to_string())),
            Err(_) => missing.push(name.as_str()),
        }
    }
    let workers = if missing.is_empty() && !found.is_empty() {
        let cpus = crate::cpus::worker_cpus(opts.worker_cpus.as_deref()).map_err(at)?;
        director::worker_queues(opts, &found, cpus.len())
            .map_err(|e| at(e.to_string()))?
            .len()
    } else {
        opts.queues
            .as_ref()
            .map_or(opts.workers.unwrap_or(1), Vec::len)
    };
    director::check_memory(opts, opts.interfaces.len(), workers).map_err(|e| at(e.to_string()))?;
    let reals: usize = s.model.services().iter().map(|v| v.reals.len()).sum();
    let unchecked = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "; not on this host, so their queues were not checked: {}",
            missing.join(", ")
        )
    };
    Ok(format!(
        "{}: ok: {} interface(s), {} virtual service(s), {} real server(s){unchecked}",
        path.display(),
        opts.interfaces.len(),
        s.model.services().len(),
        reals
    ))
}

/// `ADDR=MAC@IFACE`, e.g. `198.51.100.2=02:00:00:00:01:02@eth1`.
pub fn parse_neighbour(s: &str) -> Result<StaticNeighbourSpec, String> {
    let bad =
        || format!("{s:?}: expected ADDR=MAC@IFACE, e.g. 198.51.100.2=02:00:00:00:01:02@eth1");
    let (addr, rest) = s.split_once('=').ok_or_else(bad)?;
    let (mac, iface) = rest.split_once('@').ok_or_else(bad)?;
    if iface.is_empty() {
        return Err(bad());
    }
    Ok(StaticNeighbourSpec {
        addr: addr.parse::<IpAddr>().map_err(|_| bad())?,
        mac: parse_mac(mac).ok_or_else(bad)?,
        iface: iface.to_string(),
    })
}

fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
interfaces = ["eth0", "eth1"]
workers = 2
queues = [0, 1]
conn_table_size = 65536
sloppy_tcp = true
expire_nodest_conn = true
busy_poll = 64
worker_cpus = "1-3"
neighbours = ["198.51.100.2=02:00:00:00:01:02@eth1"]
control_socket = "/tmp/x.sock"
metrics_addr = "127.0.0.1:9100"
services = """
# the web farm
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 198.51.100.2:8080 -m -w 2
--set 0 60 0
"""

[timeouts]
tcp = 600
udp = 30
"#;

    #[test]
    fn a_full_file_resolves() {
        let s = FileConfig::parse(FULL).unwrap().resolve().unwrap();
        let d = &s.director;
        assert_eq!(d.interfaces, ["eth0", "eth1"]);
        assert_eq!(
            (d.workers, d.queues.as_deref()),
            (Some(2), Some(&[0, 1][..]))
        );
        assert_eq!(d.conn_table_size, 65536);
        assert!(d.sloppy_tcp);
        assert!(d.expire_nodest_conn);
        assert_eq!(d.busy_poll, Some(64));
        assert_eq!(d.worker_cpus.as_deref(), Some(&[1, 2, 3][..]));
        // [timeouts], then the script's --set (0 keeps a value).
        assert_eq!(
            (d.timeouts.tcp, d.timeouts.tcpfin, d.timeouts.udp),
            (600, 60, 30)
        );
        assert_eq!(d.static_neighbours[0].mac, [2, 0, 0, 0, 1, 2]);
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(s.control_socket, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(s.model.services().len(), 1);
        assert_eq!(s.model.services()[0].reals[0].weight, 2);
    }

    #[test]
    fn command_line_wins() {
        let file = FileConfig::parse(FULL).unwrap();
        let cli = FileConfig {
            interfaces: Some(vec!["veth9".into()]),
            timeouts: Some(TimeoutsConfig {
                udp: Some(5),
                ..TimeoutsConfig::default()
            }),
            services: Some(String::new()),
            ..FileConfig::default()
        };
        let s = file.overridden_by(cli).resolve().unwrap();
        assert_eq!(s.director.interfaces, ["veth9"]);
        assert_eq!((s.director.timeouts.tcp, s.director.timeouts.udp), (600, 5));
        assert_eq!(s.director.workers, Some(2));
        assert!(s.model.services().is_empty());
    }

    fn error(text: &str) -> String {
        match FileConfig::parse(text).and_then(|c| c.resolve()) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("interfaces = \"eth0\"", "invalid type"),
            ("interface = [\"eth0\"]", "unknown field `interface`"),
            ("workers = 0", "workers must be at least 1"),
            ("workers = 2\nqueues = [0]", "give one queue per worker"),
            ("ring_size = 1000", "must be a power of two"),
            ("ring_size = 2147483648", "must be a power of two up to 65536"),
            ("batch = 4096\nring_size = 2048", "batch = 4096 is larger than ring_size = 2048"),
            ("conn_table_size = 1000000000000", "give 1024 to 268435456"),
            ("queues = [0, 1, 0]", "queues names queue 0 twice"),
            ("workers = 1000000000", "workers = 1000000000: at most 256, one per rx queue"),
            ("queues = [4294967295]", "queues names queue 4294967295: xvs serves rx queues 0 to 255 only"),
            ("interfaces = [\"../../etc/x\"]", "is not an interface name"),
            ("interfaces = [\"a-name-longer-than-15\"]", "is not an interface name"),
            ("worker_cpus = \"3-1\"", "worker_cpus: \"3-1\" is not a CPU list"),
            ("worker_cpus = 2", "invalid type"),
            ("[timeouts]\ntcp = 0", "timeouts.tcp = 0"),
            ("[timeouts]\ntcpfin = 99999999", "timeouts.tcpfin"),
            ("neighbours = [\"198.51.100.2@eth1\"]", "expected ADDR=MAC@IFACE"),
            ("neighbours = [\"198.51.100.2=02:00:00:00:01@eth1\"]", "ADDR=MAC@IFACE"),
            ("metrics_addr = \"localhost\"", "expected ADDRESS:PORT"),
            ("services = \"x\"\nservices_file = \"y\"", "not both"),
            ("services_file = \"/nonexistent/xvs.rules\"", "cannot read"),
            (
                "services = \"\"\"\n-A -t 192.0.2.10:80\n\n-a -t 192.0.2.10:80 -r 198.51.100.2 -w 99999999\n\"\"\"",
                "services: line 3: illegal weight specified",
            ),
            (
                "services = \"\"\"\n-A -t 192.0.2.10:80\n-A -t 192.0.2.10:80\n\"\"\"",
                "services: line 2: Service already exists",
            ),
            ("services = \"-L -n\"", "services: line 1: only -A -E -D -C"),
            (
                "services = \"\"\"\n-A -t 192.0.2.10:80\n-Z -t 192.0.2.10:81\n\"\"\"",
                "services: line 2: No such service",
            ),
            ("x = [", "TOML parse error"),
        ];
        for (text, want) in cases {
            let e = error(text);
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn check_names_the_file_and_resolves_services_next_to_it() {
        let dir = std::env::temp_dir().join(format!("xvs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("farm.rules"),
            "-A -u 192.0.2.10:53 -s rr\n-a -u 192.0.2.10:53 -r 198.51.100.2 -m\n",
        )
        .unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "interfaces = [\"lo\"]\nservices_file = \"farm.rules\"\n",
        )
        .unwrap();
        assert_eq!(
            check(&good).unwrap(),
            format!(
                "{}: ok: 1 interface(s), 1 virtual service(s), 1 real server(s)",
                good.display()
            )
        );
        std::fs::write(
            dir.join("farm.rules"),
            "-a -u 192.0.2.10:53 -r 198.51.100.2\n",
        )
        .unwrap();
        let e = check(&good).unwrap_err();
        assert!(
            e.starts_with(&good.display().to_string())
                && e.ends_with("farm.rules: line 1: Service not defined"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--check-config` checks the queues against an interface that is
    /// here (every namespace has `lo`, with one rx queue), and says which
    /// ones it could not check.
    #[test]
    fn check_config_checks_queues_against_interfaces_that_are_here() {
        let dir = std::env::temp_dir().join(format!("xvs-config-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("q.toml");
        let check_text = |text: &str| {
            std::fs::write(&file, text).unwrap();
            check(&file)
        };
        let e = check_text("interfaces = [\"lo\"]\nqueues = [3]\n").unwrap_err();
        assert!(
            e.contains("interface lo has 1 rx queue(s); queue 3 does not exist"),
            "{e}"
        );
        let e = check_text("interfaces = [\"lo\"]\nworkers = 2\n").unwrap_err();
        assert!(e.contains("queue 1 does not exist"), "{e}");
        assert!(check_text("interfaces = [\"lo\"]\nqueues = [0]\n").is_ok());
        let ok = check_text("interfaces = [\"xvs-none0\"]\nqueues = [3]\n").unwrap();
        assert!(
            ok.ends_with(
                "ok: 1 interface(s), 0 virtual service(s), 0 real server(s); \
                 not on this host, so their queues were not checked: xvs-none0"
            ),
            "{ok}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A name that is not a regular file fails at once and says why; none
    /// may hang (a FIFO) or read until memory runs out (/dev/zero).
    #[test]
    fn files_that_are_not_regular_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("xvs-config-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("farm.rules");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let toml = dir.join("fifo.toml");
        std::fs::write(&toml, "services_file = \"farm.rules\"\n").unwrap();
        let big = dir.join("big.toml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let cases = [
            (
                toml.clone(),
                format!("{} is a FIFO, not a regular file", fifo.display()),
            ),
            (
                fifo.clone(),
                format!("{} is a FIFO, not a regular file", fifo.display()),
            ),
            (
                PathBuf::from("/dev/zero"),
                "/dev/zero is a character device, not a regular file".into(),
            ),
            (
                dir.clone(),
                format!("{} is a directory, not a regular file", dir.display()),
            ),
            (
                big.clone(),
                format!("{} is larger than 16 MiB", big.display()),
            ),
        ];
        for (path, want) in cases {
            // In a thread, so a hang fails the test instead of stalling it.
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            std::thread::spawn(move || {
                let _ = tx.send(check(&p));
            });
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("checking {} hung", path.display()));
            let e = got.unwrap_err();
            assert!(
                e.contains(&want),
                "{}: {e:?} lacks {want:?}",
                path.display()
            );
        }
        let e = error("services_file = \"/dev/zero\"");
        assert!(e.contains("/dev/zero is a character device"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_module_doc_example_parses() {
        let source = include_str!("config.rs");
        let start = source.find("//! ```toml\n").expect("example") + 12;
        let end = start + source[start..].find("//! ```\n").expect("end");
        let example: String = source[start..end]
            .lines()
            .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start_matches(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut c = FileConfig::parse(&example).expect("the documented example");
        assert_eq!(c.services_file, Some(PathBuf::from("services.rules")));
        c.services_file = None;
        let s = c.resolve().expect("the documented example resolves");
        assert_eq!(s.director.interfaces, ["eth0", "eth1"]);
        assert_eq!(s.director.static_neighbours.len(), 1);
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
    }

    /// The keys a table takes, as serde lists them when refusing an unknown
    /// one: the struct itself, so this cannot fall behind it.
    fn known_keys(text: &str) -> Vec<String> {
        let e = FileConfig::parse(text).unwrap_err();
        let list = e
            .split("expected one of")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"));
        let list = list.lines().next().unwrap_or_default();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_shipped_config_parses_and_shows_every_key() {
        let shipped = include_str!("../../debian/xvs.toml");
        let c = FileConfig::parse(shipped).expect("the shipped config parses");
        assert_eq!(c.services_file, Some(PathBuf::from("/etc/ipvsadm.rules")));
        // Every commented-out key, uncommented, is a key with a good value.
        let key = |l: &str| {
            (l.starts_with('[') && l.ends_with(']'))
                || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
        };
        let uncommented: String = shipped
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|rest| key(rest)).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let every = FileConfig::parse(&uncommented).expect("the uncommented config parses");
        let table: toml::Table = toml::from_str(&uncommented).unwrap();
        let mut shown: Vec<String> = table.keys().cloned().collect();
        let mut known = known_keys("no_such_key = 1");
        shown.sort();
        known.sort();
        assert_eq!(shown, known, "the shipped config's keys");
        let timeouts = table["timeouts"].as_table().expect("[timeouts]");
        let mut shown: Vec<String> = timeouts.keys().cloned().collect();
        let mut known = known_keys("[timeouts]\nno_such_key = 1");
        shown.sort();
        known.sort();
        assert_eq!(shown, known, "the shipped config's [timeouts] keys");
        // The defaults it shows are the defaults.
        let d = DirectorOptions::default();
        assert_eq!(every.conn_table_size, Some(d.conn_table_size));
        assert_eq!(every.batch, Some(d.batch));
        assert_eq!(every.ring_size, Some(d.ring_size));
        assert_eq!(every.sloppy_tcp, Some(d.sloppy_tcp));
        assert_eq!(every.expire_nodest_conn, Some(d.expire_nodest_conn));
        let t = every.timeouts.unwrap_or_default();
        assert_eq!(
            (t.tcp, t.tcpfin, t.udp),
            (
                Some(d.timeouts.tcp),
                Some(d.timeouts.tcpfin),
                Some(d.timeouts.udp)
            )
        );
        assert_eq!(
            every.control_socket.as_deref(),
            Some(Path::new(crate::control::socket::DEFAULT_SOCKET))
        );
    }

    #[test]
    fn neighbours_parse() {
        let n = parse_neighbour("2001:db8::2=02:aa:bb:cc:dd:ee@r0").unwrap();
        assert_eq!(n.addr, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(n.iface, "r0");
        assert!(parse_neighbour("198.51.100.2=02:00:00:00:01:02@").is_err());
        assert!(parse_neighbour("198.51.100.2=02:00:00:00:01:002@x").is_err());
    }
}
