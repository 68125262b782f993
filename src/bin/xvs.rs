//! `xvs`: the director and its tools.
//!
//! - `xvs director -i IFACE [-i IFACE ...] [options]`: runs the data plane in
//!   the foreground until SIGINT or SIGTERM, serving the control socket
//!   (and, with `--metrics-addr`, Prometheus metrics). `--config FILE` reads
//!   the settings and services from a TOML file (flags win);
//!   `--check-config FILE` only validates one, without root (exit 0 or 1).
//! - `xvs ipvsadm ARGS`, or the same binary invoked as `ipvsadm` (a
//!   symlink): ipvsadm's command line. Usage errors, `-h` and `-v` are
//!   answered locally with ipvsadm's texts and statuses; everything else goes
//!   to the running director over the control socket (`--control-socket
//!   PATH` as the very first argument, else `$XVS_CONTROL_SOCKET`, else
//!   `/run/xvs/control.sock`), whose output and exit status are the
//!   command's. With no director to talk to it prints "Can't initialize
//!   ipvs: cannot reach the xvs director at PATH: ... — is `xvs director`
//!   running?" and exits 2, as ipvsadm does when it cannot reach IPVS.
//! - `xvs status [--json]`: every checked real server's health, last
//!   check, latency, reason and transitions, from the running director.
//! - `xvs drain ADDR:PORT [--service VIP:PORT [-u]] --within SECONDS`:
//!   quiesces a real server, prints the active connections left until
//!   they are gone or the deadline passes, then it is removed (exit 0
//!   drained, 1 removed at the deadline with connections left).
//! - `xvs generate man|completions DIR` (hidden): the man pages and shell
//!   completions the package ships ([`generate`]).
//!
//! Under systemd (`Type=notify`), the director tells the manager it is
//! ready once it directs and answers, and that it stops
//! ([`xvs::control::notify`]).

#[path = "xvs/generate.rs"]
mod generate;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use xvs::control::config::{self, FileConfig, Settings};
use xvs::control::daemon::Daemon;
use xvs::control::inbox;
use xvs::control::ipvsadm::{self, Command};
use xvs::control::log;
use xvs::control::metrics::{self, worker_summary};
use xvs::control::notify;
use xvs::control::protocol::{Request, Response, MAX_PAYLOAD};
use xvs::control::socket::{self, ControlSocket, InterfaceLocks};
use xvs::control::sync_config::SyncConfig;
use xvs::files;

/// Exit status of `xvs ipvsadm` when no director answers (ipvsadm's when
/// it cannot initialise IPVS).
const NO_DIRECTOR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "xvs",
    version,
    about = "A Linux Virtual Server director in userspace over AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the director on the given interfaces (foreground; stop with Ctrl-C).
    Director(Box<DirectorArgs>),
    /// ipvsadm's command line, sent to the running director
    /// (`xvs ipvsadm [--control-socket PATH] ARGS`; `xvs ipvsadm -h` for them).
    Ipvsadm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every checked real server: health, last check, latency, reason,
    /// transitions (from the running director).
    Status {
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
        /// The director's control socket (default: $XVS_CONTROL_SOCKET,
        /// else /run/xvs/control.sock).
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Quiesce a real server, wait for its active connections to end (or
    /// the deadline), then remove it.
    Drain(DrainArgs),
    /// The man pages or shell completions, made from this command line
    /// (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generated,
    },
}

#[derive(clap::Args)]
struct DrainArgs {
    /// The real server, ADDRESS:PORT (IPv6 as [ADDRESS]:PORT).
    real: String,
    /// Only from this virtual service (default: every one that has it).
    #[arg(long, value_name = "VIP:PORT")]
    service: Option<String>,
    /// The service is TCP (the default).
    #[arg(short = 't', long, conflicts_with = "udp")]
    tcp: bool,
    /// The service is UDP.
    #[arg(short = 'u', long)]
    udp: bool,
    /// Remove it after this many seconds even if connections are left.
    #[arg(long, value_name = "SECONDS")]
    within: f64,
    /// The director's control socket.
    #[arg(long)]
    control_socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Generated {
    /// xvs.8, xvs-director.8 and xvs-ipvsadm.8 into DIR.
    Man { dir: PathBuf },
    /// Bash, zsh and fish completions into DIR.
    Completions { dir: PathBuf },
}

#[derive(clap::Args)]
struct DirectorArgs {
    /// A director interface; repeat for several (e.g. -i eth0 -i eth1).
    #[arg(short = 'i', long = "interface")]
    interfaces: Vec<String>,
    /// Settings and services from this TOML file; flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check this TOML file (settings and services) and exit: 0 if it is
    /// good, 1 with the reason if not. Needs no root and no interfaces.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Worker threads, one per rx queue (default: the first interface's queue
    /// count, at most one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// The rx queue of each worker, comma-separated (default 0,1,...).
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<u32>>,
    /// Connections the table holds (fixed at start; default 1048576).
    #[arg(long)]
    conn_table_size: Option<usize>,
    /// Virtual services to start with, in ipvsadm-save (`ipvsadm -S`) format.
    #[arg(long)]
    services: Option<PathBuf>,
    /// Virtual services, real servers and their checks from a
    /// keepalived.conf, as keepalived reads it (its vrrp_* and
    /// global_defs blocks are left to keepalived, with a note).
    #[arg(long, value_name = "FILE")]
    keepalived: Option<PathBuf>,
    /// A static neighbour, ADDR=MAC@IFACE; wins over the kernel's tables.
    #[arg(long = "neigh", value_name = "ADDR=MAC@IFACE")]
    static_neighbours: Vec<String>,
    /// Pick up TCP connections seen first mid-stream (IPVS's sloppy_tcp).
    #[arg(long)]
    sloppy_tcp: bool,
    /// End a deleted real server's connections instead of keeping them
    /// until it is added back (IPVS's expire_nodest_conn; default off).
    #[arg(long)]
    expire_nodest_conn: bool,
    /// Busy-poll the AF_XDP sockets with this budget (SO_PREFER_BUSY_POLL).
    #[arg(long)]
    busy_poll: Option<u16>,
    /// Prefetch each batch's connection-table entries before processing it
    /// (default off: measure it on the host; see BENCHMARKS.md).
    #[arg(long)]
    batch_prefetch: bool,
    /// Descriptors taken from an rx ring at a time (default 64).
    #[arg(long)]
    batch: Option<usize>,
    /// Entries of each AF_XDP ring (default 2048).
    #[arg(long)]
    ring_size: Option<u32>,
    /// Pin workers to these CPUs in turn, as `taskset -c` lists them (e.g.
    /// 2-5); the director's other threads move to the CPUs left (default:
    /// every CPU the process may use, workers first).
    #[arg(long, value_name = "LIST")]
    worker_cpus: Option<String>,
    /// The control socket (default: $XVS_CONTROL_SOCKET, else
    /// /run/xvs/control.sock).
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDRESS:PORT, e.g. 127.0.0.1:9100 (off
    /// by default).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// How the log on stderr reads: plain lines for a person and journald,
    /// or one JSON object a line for a log collector.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// The events logged: a level (error, warn, info, debug, trace, off) or
    /// TARGET=LEVEL,... (default: $XVS_LOG, else $RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Connection sync's shared secret (at least 16 bytes, mode 600):
    /// every sync datagram is authenticated with it.
    #[arg(long, value_name = "FILE")]
    sync_key_file: Option<PathBuf>,
    /// Let connection sync run without a key: datagrams are not
    /// authenticated (a trusted, private sync link only).
    #[arg(long)]
    sync_insecure: bool,
    /// Sync with this peer director by unicast, ADDRESS:PORT, instead of
    /// the multicast group; repeat for several.
    #[arg(long = "sync-peer", value_name = "ADDR:PORT")]
    sync_peers: Vec<String>,
    /// This director's sender id in sync datagrams (default: random at
    /// each start).
    #[arg(long)]
    sync_id: Option<u32>,
    /// Sync the service configuration too: as master, send it after every
    /// change; as backup, replace this director's services with it.
    #[arg(long)]
    sync_services: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

impl From<LogFormat> for log::Format {
    fn from(f: LogFormat) -> log::Format {
        match f {
            LogFormat::Plain => log::Format::Plain,
            LogFormat::Json => log::Format::Json,
        }
    }
}

/// The file's settings under the command line's.
fn settings(args: &DirectorArgs) -> Result<Settings, String> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let cli = FileConfig {
        interfaces: some_vec(&args.interfaces),
        workers: args.workers,
        queues: args.queues.clone(),
        conn_table_size: args.conn_table_size,
        timeouts: None,
        sloppy_tcp: args.sloppy_tcp.then_some(true),
        expire_nodest_conn: args.expire_nodest_conn.then_some(true),
        busy_poll: args.busy_poll,
        batch_prefetch: args.batch_prefetch.then_some(true),
        batch: args.batch,
        ring_size: args.ring_size,
        worker_cpus: args.worker_cpus.clone(),
        neighbours: some_vec(&args.static_neighbours),
        control_socket: args.control_socket.clone(),
        metrics_addr: args.metrics_addr.clone(),
        services_file: args.services.clone(),
        services: None,
        keepalived: args.keepalived.clone(),
        sync: Some(SyncConfig {
            key_file: args.sync_key_file.clone(),
            insecure: args.sync_insecure.then_some(true),
            peers: some_vec(&args.sync_peers),
            sender_id: args.sync_id,
            services: args.sync_services.then_some(true),
            ..SyncConfig::default()
        })
        .filter(|s| *s != SyncConfig::default()),
        ..FileConfig::default()
    };
    let merged = file.overridden_by(cli);
    merged.resolve().map_err(|e| match &args.config {
        Some(path) if !e.starts_with(&path.display().to_string()) => {
            format!("{}: {e}", path.display())
        }
        _ => e,
    })
}

fn director(args: DirectorArgs) -> Result<(), String> {
    if let Some(path) = &args.check_config {
        println!("{}", config::check(path)?);
        return Ok(());
    }
    // From here on every line is a log event; --check-config's answer
    // above stays plain text on stdout and stderr.
    log::init(args.log_format.into(), args.log_level.as_deref())?;
    let settings = settings(&args)?;
    let opts = settings.director;
    if opts.interfaces.is_empty() {
        return Err("no interface given: name at least one with -i IFACE \
                    (or interfaces = [...] in the --config file)"
            .into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    xvs::director::check_privileges().map_err(|e| e.to_string())?;
    // Refuse before touching anything if another director has an interface
    // or answers on the socket.
    let _locks = InterfaceLocks::acquire(&opts.interfaces)?;
    let (inbox, mailbox) = inbox::channel();
    let socket_path = socket::socket_path(settings.control_socket.as_deref());
    let socket = ControlSocket::bind(&socket_path, inbox.clone())?;
    for note in &settings.notes {
        tracing::info!("{note}");
    }
    let mut daemon = Daemon::start(&opts, settings.model, mailbox).map_err(|e| e.to_string())?;
    let health = settings.health;
    if !health.checks.services.is_empty()
        || !health.checks.reals.is_empty()
        || !health.policies.is_empty()
    {
        let reports = inbox.clone();
        let monitor = xvs::health::Monitor::start(Box::new(move |r| reports.report(r)))
            .map_err(|e| format!("cannot start the health checks: {e}"))?;
        daemon = daemon.with_health(Box::new(monitor), health.checks, &health.policies);
    }
    let metrics = match settings.metrics_addr {
        Some(addr) => Some(metrics::serve(addr, inbox)?),
        None => None,
    };
    tracing::info!(
        "{}; control socket {}{}",
        daemon.describe(),
        socket.path().display(),
        metrics
            .map(|a| format!("; metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    // A backup started with the director first takes its peers' table.
    if let Some(s) = daemon.plane().sync_ref() {
        if !s.wait_ready(std::time::Duration::from_secs(30)) {
            tracing::warn!("sync: no full table from a peer in 30 s; ready without it");
        }
    }
    // Programs attached, first snapshot published, control socket bound.
    tell_manager(notify::READY);
    daemon.run(&stop);
    tracing::info!("stopping");
    tell_manager(notify::STOPPING);
    drop(socket);
    for (i, w) in daemon.stop().iter().enumerate() {
        tracing::info!("{}", worker_summary(i, w));
    }
    Ok(())
}

/// Tells systemd `state`; a failure is said, not fatal (systemd times a
/// start out by itself).
fn tell_manager(state: &str) {
    if let Err(e) = notify::notify(state) {
        tracing::warn!("cannot tell the service manager {state}: {e}");
    }
}

/// `xvs generate man|completions DIR`: the files written, one a line.
fn generate(what: Generated) -> Result<(), String> {
    let written = match what {
        Generated::Man { dir } => generate::man_pages(&dir)?,
        Generated::Completions { dir } => generate::completions(&dir)?,
    };
    for f in written {
        println!("{f}");
    }
    Ok(())
}

/// `xvs ipvsadm ARGS` / `ipvsadm ARGS`: usage errors, `-h` and `-v` are
/// answered here; everything else goes to the director.
fn ipvsadm_client(args: Vec<OsString>) -> ExitCode {
    let mut args: Vec<String> = match args.into_iter().map(OsString::into_string).collect() {
        Ok(a) => a,
        Err(a) => {
            eprintln!("ipvsadm: argument {a:?} is not valid UTF-8");
            return ExitCode::from(ipvsadm::EXIT_USAGE);
        }
    };
    // xvs's own option, only in first place: ipvsadm has no such option.
    let mut flag = None;
    if let Some(first) = args.first().cloned() {
        if let Some(p) = first.strip_prefix("--control-socket=") {
            flag = Some(PathBuf::from(p));
            args.remove(0);
        } else if first == "--control-socket" && args.len() >= 2 {
            flag = Some(PathBuf::from(args[1].clone()));
            args.drain(..2);
        }
    }
    let command = match ipvsadm::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(e.exit_code);
        }
    };
    let stdin = match command {
        Command::Help => {
            print!("{}", ipvsadm::render::usage());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            print!("{}", ipvsadm::render::version());
            return ExitCode::SUCCESS;
        }
        // Bounded: `ipvsadm -R < /dev/zero` must not read until memory runs out.
        Command::Restore => match files::read_bounded(std::io::stdin(), MAX_PAYLOAD as u64) {
            Ok(text) => Some(text),
            Err(files::Bounded::Io(e)) => {
                eprintln!("ipvsadm: cannot read the rules from standard input: {e}");
                return ExitCode::from(ipvsadm::EXIT_FAILED);
            }
            Err(files::Bounded::TooLarge) => {
                eprintln!(
                    "ipvsadm: the rules on standard input are more than {}, the most xvs \
                     takes in one command (split a large -R input)",
                    files::size_text(MAX_PAYLOAD as u64)
                );
                return ExitCode::from(ipvsadm::EXIT_FAILED);
            }
        },
        _ => None,
    };
    let path = socket::socket_path(flag.as_deref());
    let request = Request { args, stdin };
    if request.payload_len() > MAX_PAYLOAD {
        eprintln!(
            "ipvsadm: the request is {} bytes; xvs takes at most {MAX_PAYLOAD} in one \
             command (split a large -R input)",
            request.payload_len()
        );
        return ExitCode::from(ipvsadm::EXIT_FAILED);
    }
    match socket::call(&path, &request) {
        Ok(r) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(r.stdout.as_bytes());
            let _ = out.flush();
            let _ = std::io::stderr().write_all(r.stderr.as_bytes());
            ExitCode::from(r.exit_code)
        }
        Err(e) => {
            // ipvsadm exits 2 when it cannot reach IPVS at all.
            eprintln!("Can't initialize ipvs: {e}");
            ExitCode::from(NO_DIRECTOR)
        }
    }
}

/// One of xvs's own commands to the director; its answer, or the exit
/// status to leave with when there is none.
fn xvs_call(socket: Option<&Path>, args: Vec<String>) -> Result<Response, ExitCode> {
    let path = socket::socket_path(socket);
    socket::call(&path, &Request::xvs(args)).map_err(|e| {
        eprintln!("xvs: {e}");
        ExitCode::from(NO_DIRECTOR)
    })
}

/// Prints an answer's output as it came; its exit status.
fn print_response(r: &Response) -> ExitCode {
    let _ = std::io::stdout().write_all(r.stdout.as_bytes());
    let _ = std::io::stderr().write_all(r.stderr.as_bytes());
    ExitCode::from(r.exit_code)
}

/// `xvs status [--json]`.
fn status(json: bool, socket: Option<&Path>) -> ExitCode {
    let mut args = vec!["status".to_string()];
    if json {
        args.push("--json".into());
    }
    match xvs_call(socket, args) {
        Ok(r) => print_response(&r),
        Err(code) => code,
    }
}

/// `xvs drain`: starts the drain, then prints its progress each second
/// until it ends (the director goes on with it if this is interrupted).
fn drain(a: DrainArgs) -> ExitCode {
    let mut args = vec!["drain".to_string(), a.real.clone(), a.within.to_string()];
    if let Some(vip) = &a.service {
        args.push(if a.udp { "udp" } else { "tcp" }.into());
        args.push(vip.clone());
    }
    let socket = a.control_socket.as_deref();
    let id = match xvs_call(socket, args) {
        Ok(r) if r.exit_code == 0 => r.stdout.trim().to_string(),
        Ok(r) => return print_response(&r),
        Err(code) => return code,
    };
    loop {
        let r = match xvs_call(socket, vec!["drain-progress".into(), id.clone()]) {
            Ok(r) => r,
            Err(code) => return code,
        };
        let code = print_response(&r);
        if r.exit_code != xvs::control::daemon::drain::EXIT_DRAINING {
            return code;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_os_string());
    if invoked_as.as_deref() == Some(OsStr::new("ipvsadm")) {
        argv.remove(0);
        return ipvsadm_client(argv);
    }
    if argv.get(1).map(OsString::as_os_str) == Some(OsStr::new("ipvsadm")) {
        argv.drain(..2);
        return ipvsadm_client(argv);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Director(args) => director(*args),
        Cmd::Status {
            json,
            control_socket,
        } => return status(json, control_socket.as_deref()),
        Cmd::Drain(args) => return drain(args),
        Cmd::Generate { what } => generate(what),
        Cmd::Ipvsadm { args } => return ipvsadm_client(args.into_iter().map(Into::into).collect()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Once the log is up the failure is an event like any other (JSON
        // under --log-format json); before it (a bad flag, --check-config)
        // it is plain text.
        Err(e) if tracing::dispatcher::has_been_set() => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xvs: {e}");
            ExitCode::FAILURE
        }
    }
}
