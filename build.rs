//! Compiles the XDP steering program (`src/xsk/steer.bpf.c`) with clang's BPF
//! target; the object is embedded in the binary with `include_bytes!`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The director's limits; the program's map sizes come from here.
#[path = "src/limits.rs"]
#[allow(dead_code)]
mod limits;

fn main() {
    let src = "src/xsk/steer.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=src/limits.rs");
    let defines = [
        ("XVS_MAX_QUEUES", limits::MAX_QUEUES),
        ("XVS_MAX_SERVICES", limits::MAX_SERVICES),
        ("XVS_MAX_NAT_ENDPOINTS", limits::MAX_NAT_ENDPOINTS),
        ("XVS_MAX_LOCAL_ADDRS", limits::MAX_LOCAL_ADDRS),
        ("XVS_MAX_OWN_MACS", limits::MAX_OWN_MACS),
    ]
    .map(|(name, v)| format!("-D{name}={v}"));
    println!("cargo:rerun-if-env-changed=CLANG");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("steer.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // <asm/types.h> lives in the multiarch include directory on Debian.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args([
            "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", &multiarch,
        ])
        .args(&defines)
        .args(["-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed ({s}) compiling {src}"),
        Err(e) => panic!(
            "cannot run {clang} to compile {src}: {e}. Install clang (tools/setup does) or set CLANG."
        ),
    }
}
