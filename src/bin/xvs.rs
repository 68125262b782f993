//! `xvs`: the director and its tools.
//!
//! - `xvs director -i IFACE [-i IFACE ...] [options]`: runs the data plane in
//!   the foreground until SIGINT or SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xvs::control::ipvsadm::{parse_restore, ServiceModel, Services};
use xvs::director::{Director, DirectorOptions, StaticNeighbourSpec, DEST_CAPACITY};
use xvs::packet::MacAddr;
use xvs::pipeline::DropReason;
use xvs::service::ServiceTable;
use xvs::xsk::worker::WorkerStats;

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
    Director(DirectorArgs),
}

#[derive(clap::Args)]
struct DirectorArgs {
    /// A director interface; repeat for several (e.g. -i eth0 -i eth1).
    #[arg(short = 'i', long = "interface", required = true)]
    interfaces: Vec<String>,
    /// Worker threads, one per rx queue (default: the first interface's queue
    /// count, at most one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// The rx queue of each worker, comma-separated (default 0,1,...).
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<u32>>,
    /// Connections the table holds (fixed at start).
    #[arg(long, default_value_t = 1 << 20)]
    conn_table_size: usize,
    /// Virtual services to start with, in ipvsadm-save (`ipvsadm -S`) format.
    #[arg(long)]
    services: Option<PathBuf>,
    /// A static neighbour, ADDR=MAC@IFACE; wins over the kernel's tables.
    #[arg(long = "neigh", value_parser = parse_static_neighbour)]
    static_neighbours: Vec<StaticNeighbourSpec>,
    /// Pick up TCP connections seen first mid-stream (IPVS's sloppy_tcp).
    #[arg(long)]
    sloppy_tcp: bool,
    /// Busy-poll the AF_XDP sockets with this budget (SO_PREFER_BUSY_POLL).
    #[arg(long)]
    busy_poll: Option<u16>,
    /// Descriptors taken from an rx ring at a time.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Entries of each AF_XDP ring.
    #[arg(long, default_value_t = 2048)]
    ring_size: u32,
}

fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_static_neighbour(s: &str) -> Result<StaticNeighbourSpec, String> {
    let bad =
        || format!("{s:?}: expected ADDR=MAC@IFACE, e.g. 198.51.100.2=02:00:00:00:01:02@eth1");
    let (addr, rest) = s.split_once('=').ok_or_else(bad)?;
    let (mac, iface) = rest.split_once('@').ok_or_else(bad)?;
    Ok(StaticNeighbourSpec {
        addr: addr.parse::<IpAddr>().map_err(|_| bad())?,
        mac: parse_mac(mac).ok_or_else(bad)?,
        iface: iface.to_string(),
    })
}

fn load_services(path: Option<&PathBuf>) -> Result<(ServiceModel, ServiceTable), String> {
    let mut model = ServiceModel::new(DEST_CAPACITY);
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let script = parse_restore(&text, Services::system())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        model
            .restore(&script, &|_| true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let table = model.snapshot();
    Ok((model, table))
}

fn director(args: DirectorArgs) -> Result<(), String> {
    let (_model, services) = load_services(args.services.as_ref())?;
    let opts = DirectorOptions {
        interfaces: args.interfaces,
        workers: args.workers,
        queues: args.queues,
        conn_table_size: args.conn_table_size,
        busy_poll: args.busy_poll,
        static_neighbours: args.static_neighbours,
        sloppy_tcp: args.sloppy_tcp,
        batch: args.batch,
        ring_size: args.ring_size,
        ..DirectorOptions::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let mut d = Director::start(&opts, services).map_err(|e| e.to_string())?;
    let names: Vec<String> = d
        .interfaces()
        .iter()
        .zip(d.xdp_modes())
        .map(|(i, m)| format!("{} ({m:?} XDP)", i.name))
        .collect();
    eprintln!(
        "xvs: directing on {} with {} worker(s); {} virtual service(s)",
        names.join(", "),
        d.worker_stats().len(),
        d.services().services().len()
    );
    while !stop.load(Ordering::Relaxed) {
        d.control_round(Duration::from_millis(200));
    }
    eprintln!("xvs: stopping");
    let stats = d.worker_stats().to_vec();
    d.stop();
    for (i, w) in stats.iter().enumerate() {
        eprintln!("xvs: {}", worker_summary(i, w));
    }
    Ok(())
}

/// One line per worker at exit: traffic, drops by reason, and the frame
/// accounting (which must balance once the workers have stopped).
fn worker_summary(index: usize, w: &WorkerStats) -> String {
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .zip(w.drops.iter())
        .filter(|(_, n)| l(n) > 0)
        .map(|(r, n)| format!("{}={}", r.label(), l(n)))
        .collect();
    format!(
        "worker {index}: rx {} tx {} pass {} new_conns {} tx_ring_full {} drops [{}] frames total {} free {} fill {} tx {} conserved {} xsk rx_dropped {} rx_ring_full {} fill_empty {} invalid {}",
        l(&w.rx),
        l(&w.tx),
        l(&w.pass),
        l(&w.new_conns),
        l(&w.tx_ring_full),
        drops.join(" "),
        l(&w.frames_total),
        l(&w.frames_free),
        l(&w.frames_fill),
        l(&w.frames_tx),
        if w.frames_conserved() { "yes" } else { "NO" },
        l(&w.xsk_rx_dropped),
        l(&w.xsk_rx_ring_full),
        l(&w.xsk_fill_ring_empty),
        l(&w.xsk_invalid_descs),
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Director(args) => director(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvs: {e}");
            ExitCode::FAILURE
        }
    }
}
