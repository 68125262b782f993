//! `xvs-traffic`: a traffic generator and sink over AF_XDP for benchmarking
//! a forwarder (xvs, DPDK testpmd, the kernel) between two namespaces.
//!
//! - `xvs-traffic gen -i IF --dst-mac MAC --dst ADDR [--proto udp|tcp]
//!   [--size 64] [--flows N] [--rate PPS] [--duration S | --count N]
//!   [--open | --syn-every-flow] [--queues N] [--json]`
//! - `xvs-traffic sink -i IF [--queues N] [--duration S | --idle-exit S] [--json]`
//!
//! The frame format is in `wire.rs`; the sockets are `xvs::xsk::bench`.
//! IPv4 only. Both stop cleanly on SIGINT/SIGTERM and then print their
//! summary.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod gen;
mod sink;
mod wire;

#[derive(Parser)]
#[command(
    name = "xvs-traffic",
    version,
    about = "AF_XDP traffic generator and sink for forwarding benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send tagged frames.
    Gen(gen::GenArgs),
    /// Receive, count and time tagged frames.
    Sink(sink::SinkArgs),
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| format!("{s:?}: expected a MAC address like 02:00:00:00:00:01"))?;
    }
    if parts.next().is_some() {
        return Err(format!(
            "{s:?}: expected a MAC address like 02:00:00:00:00:01"
        ));
    }
    Ok(mac)
}

/// The MAC address of `iface`, from sysfs.
pub fn iface_mac(iface: &str) -> Result<[u8; 6], String> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("interface {iface} not found ({path}: {e}); give --src-mac or check `ip link`")
    })?;
    parse_mac(&text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("xvs-traffic: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Cmd::Gen(a) => gen::run(a, stop),
        Cmd::Sink(a) => sink::run(a, stop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xvs-traffic: {e}");
            ExitCode::FAILURE
        }
    }
}
