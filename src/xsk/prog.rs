//! The XDP steering program: loading, attaching, detaching, and its maps.
//!
//! One instance of the program is loaded per director interface, so each has
//! its own `xsks` map (rx queue → AF_XDP socket of that interface) while the
//! control plane writes the same `services`, `nat_reals` and `local_addrs`
//! sets into all. Each also has its own `own_macs` (the unicast MACs its
//! interface answers to: frames to other MACs are not redirected) and its
//! own [`SteerCounter`]s. Attaching prefers native (driver) mode and falls back to
//! generic mode; a program left attached by a crashed run is replaced, with
//! a message. Dropping a [`SteeringProgram`] detaches it.
//!
//! [`SteeringProgram::load_with_probe`] also loads the object's test entry,
//! which [`SteeringProgram::classify`] runs on a frame (`BPF_PROG_TEST_RUN`)
//! to ask what the steering program would do with it; the tests compare
//! that with the pipeline's verdicts.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::os::raw::{c_int, c_void};

use crate::limits::{MAX_LOCAL_ADDRS, MAX_NAT_ENDPOINTS, MAX_OWN_MACS, MAX_SERVICES};
use crate::packet::{L4Proto, MacAddr};

/// The program, compiled by build.rs from `steer.bpf.c`.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// Return codes of an XDP program (`enum xdp_action`).
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The key of the `services` and `nat_reals` maps; `struct endpoint` in C.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    proto: u8,
    family: u8,
    /// Network byte order.
    port_be: u16,
    addr: [u8; 16],
}

impl Endpoint {
    pub fn new(proto: L4Proto, addr: IpAddr, port: u16) -> Endpoint {
        let (family, a) = family_and_bytes(addr);
        Endpoint {
            proto: proto.number(),
            family,
            port_be: port.to_be(),
            addr: a,
        }
    }
}

impl Endpoint {
    /// The key's first 8 bytes (protocol, family, port, an IPv4 address),
    /// which the program compares as one word; `None` for an IPv6
    /// endpoint, which they do not tell apart.
    fn v4_bytes(self) -> Option<[u8; 8]> {
        if self.family != 4 {
            return None;
        }
        let [p0, p1] = self.port_be.to_ne_bytes();
        let a = self.addr;
        Some([self.proto, self.family, p0, p1, a[0], a[1], a[2], a[3]])
    }
}

/// The slots of an inline array: the first `N` of `keys` (each a key's
/// bytes as the program reads them into a word) in descending byte order,
/// as native-endian words, a slot not used all ones (which no key's bytes
/// are: a family byte is 4 or 6, a MAC's top two bytes are zero), and
/// whether `keys` fit. The order is any fixed one, so that the array
/// depends on the set alone.
fn first_words<const N: usize>(keys: impl Iterator<Item = [u8; 8]>) -> ([u64; N], bool) {
    let mut keys: Vec<[u8; 8]> = keys.collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let mut words = [u64::MAX; N];
    for (slot, k) in words.iter_mut().zip(&keys) {
        *slot = u64::from_ne_bytes(*k);
    }
    (words, keys.len() <= N)
}

/// Slots of each entry of the `endpoints_first` array (`ENDPOINTS_FIRST`
/// in C), and the entries: `FIRST_SERVICES`, `FIRST_NAT_REALS`,
/// `FIRST_LOCAL_ADDRS`.
const ENDPOINTS_FIRST: usize = 8;
const FIRST_SERVICES: u32 = 0;
const FIRST_NAT_REALS: u32 = 1;
const FIRST_LOCAL_ADDRS: u32 = 2;

/// A key whose first 8 bytes tell an IPv4 key apart: what the program
/// compares inline in `endpoints_first`.
trait V4Bytes {
    fn v4_bytes(&self) -> Option<[u8; 8]>;
}

impl V4Bytes for Endpoint {
    fn v4_bytes(&self) -> Option<[u8; 8]> {
        Endpoint::v4_bytes(*self)
    }
}

impl V4Bytes for LocalAddr {
    fn v4_bytes(&self) -> Option<[u8; 8]> {
        if self.family != 4 {
            return None;
        }
        let (a, p) = (self.addr, self.pad);
        Some([self.family, p[0], p[1], p[2], a[0], a[1], a[2], a[3]])
    }
}

/// An entry of the `endpoints_first` array: up to [`ENDPOINTS_FIRST`] of
/// a set's IPv4 keys, which the program compares inline before it looks
/// in the set's hash map, and whether they are all of them.
/// `struct endpoints_first` in C.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EndpointsFirst {
    v4: [u64; ENDPOINTS_FIRST],
    all_v4: u32,
    pad: u32,
}

impl EndpointsFirst {
    /// `set`'s IPv4 keys as [`first_words`] puts them.
    fn of<K: V4Bytes>(set: &HashSet<K>) -> EndpointsFirst {
        let (v4, all) = first_words(set.iter().filter_map(|k| k.v4_bytes()));
        EndpointsFirst {
            v4,
            all_v4: u32::from(all),
            pad: 0,
        }
    }
}

/// An address as the maps' keys hold it: family 4 or 6, and 16 bytes with
/// an IPv4 address in the first 4 and zeros after.
fn family_and_bytes(addr: IpAddr) -> (u8, [u8; 16]) {
    let mut a = [0u8; 16];
    match addr {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            (4, a)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

/// The key of the `local_addrs` map; `struct local_addr` in C.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalAddr {
    family: u8,
    pad: [u8; 3],
    addr: [u8; 16],
}

impl LocalAddr {
    pub fn new(addr: IpAddr) -> LocalAddr {
        let (family, a) = family_and_bytes(addr);
        LocalAddr {
            family,
            pad: [0; 3],
            addr: a,
        }
    }
}

/// The key of the `own_macs` map; `struct own_mac` in C.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnMac {
    addr: MacAddr,
    pad: [u8; 2],
}

impl OwnMac {
    pub fn new(addr: MacAddr) -> OwnMac {
        OwnMac { addr, pad: [0; 2] }
    }

    /// The MAC's six bytes and two zeros, as the program reads them into
    /// a word.
    fn bytes(self) -> [u8; 8] {
        let a = self.addr;
        [a[0], a[1], a[2], a[3], a[4], a[5], 0, 0]
    }
}

/// Slots of the `own_macs_first` array (`OWN_MACS_FIRST` in C).
const OWN_MACS_FIRST: usize = 4;

/// The value of the one-entry `own_macs_first` array: up to
/// [`OWN_MACS_FIRST`] of the interface's MACs, which the program compares
/// inline before it looks in `own_macs`, and whether that is all of them.
/// `struct own_macs_first` in C.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OwnMacsFirst {
    mac: [u64; OWN_MACS_FIRST],
    all: u32,
    pad: u32,
}

impl OwnMacsFirst {
    /// `macs` as [`first_words`] puts them.
    fn of(macs: &HashSet<OwnMac>) -> OwnMacsFirst {
        let (mac, all) = first_words(macs.iter().map(|m| m.bytes()));
        OwnMacsFirst {
            mac,
            all: u32::from(all),
            pad: 0,
        }
    }
}

/// The steering program's counters (the per-CPU `counters` map, by slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteerCounter {
    /// Frames the rules would give xvs, passed because their destination
    /// MAC is not the director's.
    NotForUs = 0,
    /// Frames for xvs dropped because their rx queue has no socket (no
    /// worker serves it, or xvs died and left the program attached).
    NoSocket = 1,
}

impl SteerCounter {
    pub const ALL: [SteerCounter; 2] = [SteerCounter::NotForUs, SteerCounter::NoSocket];

    /// The name in the exit summary and, with `xvs_steering_` before and
    /// `_total` after, in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            SteerCounter::NotForUs => "not_for_us",
            SteerCounter::NoSocket => "no_socket",
        }
    }
}

/// What the steering program does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// To xvs: the AF_XDP socket of the frame's rx queue.
    Redirect,
    /// To the kernel (`XDP_PASS`).
    Pass,
}

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before an skb exists.
    Native,
    /// After skb allocation: works everywhere, slower.
    Generic,
}

/// Why the steering program could not be set up.
#[derive(Debug)]
pub enum ProgError {
    Open(io::Error),
    Load(io::Error),
    Missing(&'static str),
    Attach {
        iface: String,
        native: io::Error,
        generic: io::Error,
    },
    Map(&'static str, io::Error),
    /// More entries wanted than the map holds.
    MapFull {
        map: &'static str,
        want: usize,
        max: usize,
    },
}

impl std::fmt::Display for ProgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgError::Open(e) => write!(f, "cannot open the embedded XDP program: {e}"),
            ProgError::Load(e) => write!(
                f,
                "the kernel refused the XDP steering program: {e} \
                 (xvs needs root, or CAP_NET_ADMIN + CAP_BPF, and a kernel with BPF and XDP)"
            ),
            ProgError::Missing(what) => write!(f, "the embedded XDP program has no {what}"),
            ProgError::Attach {
                iface,
                native,
                generic,
            } => write!(
                f,
                "cannot attach XDP to {iface}: native mode: {native}; generic mode: {generic}"
            ),
            ProgError::Map(map, e) => write!(f, "updating the XDP map {map} failed: {e}"),
            ProgError::MapFull { map, want, max } => write!(
                f,
                "the XDP map {map} holds at most {max} entries; {want} are needed"
            ),
        }
    }
}

impl std::error::Error for ProgError {}

/// A loaded steering program, attached to at most one interface.
pub struct SteeringProgram {
    obj: *mut libxdp_sys::bpf_object,
    prog_fd: c_int,
    xsks_fd: c_int,
    services_fd: c_int,
    nat_reals_fd: c_int,
    local_addrs_fd: c_int,
    own_macs_fd: c_int,
    own_macs_first_fd: c_int,
    endpoints_first_fd: c_int,
    counters_fd: c_int,
    /// The test entry `xvs_steer_probe`; -1 unless loaded with it.
    probe_fd: c_int,
    services: HashSet<Endpoint>,
    nat_reals: HashSet<Endpoint>,
    local_addrs: HashSet<LocalAddr>,
    own_macs: HashSet<OwnMac>,
    attached: Option<(u32, u32, String)>,
}

// SAFETY: the bpf_object pointer is only used through &mut self (load,
// close); map and program fds are plain kernel handles usable from any thread.
unsafe impl Send for SteeringProgram {}

fn last_error(ret: c_int) -> io::Error {
    if ret < 0 {
        io::Error::from_raw_os_error(-ret)
    } else {
        io::Error::last_os_error()
    }
}

impl SteeringProgram {
    /// Loads a fresh instance of the program into the kernel.
    pub fn load() -> Result<SteeringProgram, ProgError> {
        SteeringProgram::load_programs(false)
    }

    /// Loads a fresh instance with the test entry as well, for
    /// [`classify`](Self::classify). Meant for tests; attaching it works as
    /// for [`load`](Self::load).
    pub fn load_with_probe() -> Result<SteeringProgram, ProgError> {
        SteeringProgram::load_programs(true)
    }

    fn load_programs(with_probe: bool) -> Result<SteeringProgram, ProgError> {
        // SAFETY: OBJECT is a valid buffer for its whole length and libbpf
        // copies what it keeps; a null opts pointer means defaults.
        let obj = unsafe {
            libxdp_sys::bpf_object__open_mem(
                OBJECT.as_ptr() as *const c_void,
                OBJECT.len() as _,
                std::ptr::null(),
            )
        };
        if obj.is_null() {
            // libbpf 1.x returns NULL and sets errno.
            return Err(ProgError::Open(io::Error::last_os_error()));
        }
        let mut p = SteeringProgram {
            obj,
            prog_fd: -1,
            xsks_fd: -1,
            services_fd: -1,
            nat_reals_fd: -1,
            local_addrs_fd: -1,
            own_macs_fd: -1,
            own_macs_first_fd: -1,
            endpoints_first_fd: -1,
            counters_fd: -1,
            probe_fd: -1,
            services: HashSet::new(),
            nat_reals: HashSet::new(),
            local_addrs: HashSet::new(),
            own_macs: HashSet::new(),
            attached: None,
        };
        let probe_name = CString::new("xvs_steer_probe").expect("no NUL");
        // SAFETY: obj is opened; probe_name is a valid C string.
        let probe =
            unsafe { libxdp_sys::bpf_object__find_program_by_name(p.obj, probe_name.as_ptr()) };
        if probe.is_null() {
            return Err(ProgError::Missing("program xvs_steer_probe"));
        }
        if !with_probe {
            // SAFETY: probe belongs to obj, which is not loaded yet.
            let ret = unsafe { libxdp_sys::bpf_program__set_autoload(probe, false) };
            if ret != 0 {
                return Err(ProgError::Open(last_error(ret)));
            }
        }
        // SAFETY: obj is a valid, opened, not yet loaded object.
        let ret = unsafe { libxdp_sys::bpf_object__load(p.obj) };
        if ret != 0 {
            return Err(ProgError::Load(last_error(ret)));
        }
        let name = CString::new("xvs_steer").expect("no NUL");
        // SAFETY: obj is loaded; name is a valid C string.
        let prog = unsafe { libxdp_sys::bpf_object__find_program_by_name(p.obj, name.as_ptr()) };
        if prog.is_null() {
            return Err(ProgError::Missing("program xvs_steer"));
        }
        // SAFETY: prog belongs to the loaded obj.
        p.prog_fd = unsafe { libxdp_sys::bpf_program__fd(prog) };
        p.xsks_fd = p.map_fd("xsks")?;
        p.services_fd = p.map_fd("services")?;
        p.nat_reals_fd = p.map_fd("nat_reals")?;
        p.local_addrs_fd = p.map_fd("local_addrs")?;
        p.own_macs_fd = p.map_fd("own_macs")?;
        p.own_macs_first_fd = p.map_fd("own_macs_first")?;
        p.endpoints_first_fd = p.map_fd("endpoints_first")?;
        p.counters_fd = p.map_fd("counters")?;
        if with_probe {
            // SAFETY: probe belongs to the loaded obj.
            p.probe_fd = unsafe { libxdp_sys::bpf_program__fd(probe) };
        }
        Ok(p)
    }

    fn map_fd(&self, name: &'static str) -> Result<c_int, ProgError> {
        let c = CString::new(name).expect("no NUL");
        // SAFETY: obj is loaded; c is a valid C string.
        let fd = unsafe { libxdp_sys::bpf_object__find_map_fd_by_name(self.obj, c.as_ptr()) };
        if fd < 0 {
            return Err(ProgError::Missing(name));
        }
        Ok(fd)
    }

    /// Attaches to `ifindex` (named `iface` in messages): native mode, else
    /// generic. A program already attached there (a crashed run's) is replaced.
    pub fn attach(&mut self, ifindex: u32, iface: &str) -> Result<XdpMode, ProgError> {
        if let Some(id) = attached_program(ifindex) {
            tracing::warn!("replacing the XDP program (id {id}) already attached to {iface}");
            for mode in [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] {
                // SAFETY: plain syscall wrapper; a null opts pointer means defaults.
                unsafe { libxdp_sys::bpf_xdp_detach(ifindex as c_int, mode, std::ptr::null()) };
            }
        }
        // SAFETY: prog_fd is a loaded XDP program; null opts = defaults.
        let ret = unsafe {
            libxdp_sys::bpf_xdp_attach(
                ifindex as c_int,
                self.prog_fd,
                XDP_FLAGS_DRV_MODE,
                std::ptr::null(),
            )
        };
        if ret == 0 {
            self.attached = Some((ifindex, XDP_FLAGS_DRV_MODE, iface.to_string()));
            return Ok(XdpMode::Native);
        }
        let native = last_error(ret);
        // SAFETY: as above.
        let ret = unsafe {
            libxdp_sys::bpf_xdp_attach(
                ifindex as c_int,
                self.prog_fd,
                XDP_FLAGS_SKB_MODE,
                std::ptr::null(),
            )
        };
        if ret == 0 {
            self.attached = Some((ifindex, XDP_FLAGS_SKB_MODE, iface.to_string()));
            return Ok(XdpMode::Generic);
        }
        Err(ProgError::Attach {
            iface: iface.to_string(),
            native,
            generic: last_error(ret),
        })
    }

    /// Steers rx queue `queue` to the AF_XDP socket `fd`.
    pub fn set_socket(&self, queue: u32, fd: c_int) -> Result<(), ProgError> {
        update(self.xsks_fd, &queue, &fd).map_err(|e| ProgError::Map("xsks", e))
    }

    /// Makes the `services` map equal to `want`. More than
    /// [`MAX_SERVICES`] is refused before any change (the service model
    /// never asks for that many).
    pub fn sync_services(&mut self, want: &HashSet<Endpoint>) -> Result<(), ProgError> {
        fits("services", want, MAX_SERVICES)?;
        sync(self.services_fd, &mut self.services, want)
            .map_err(|e| ProgError::Map("services", e))?;
        self.sync_first(FIRST_SERVICES, want)
    }

    /// Makes the `nat_reals` map equal to `want`; more than
    /// [`MAX_NAT_ENDPOINTS`] is refused before any change.
    pub fn sync_nat_reals(&mut self, want: &HashSet<Endpoint>) -> Result<(), ProgError> {
        fits("nat_reals", want, MAX_NAT_ENDPOINTS)?;
        sync(self.nat_reals_fd, &mut self.nat_reals, want)
            .map_err(|e| ProgError::Map("nat_reals", e))?;
        self.sync_first(FIRST_NAT_REALS, want)
    }

    /// The `endpoints_first` entry `slot` for the set `want`, written after
    /// the set's hash map: a key added is there before the entry stops
    /// saying that it holds them all.
    fn sync_first<K: V4Bytes>(&self, slot: u32, want: &HashSet<K>) -> Result<(), ProgError> {
        update(self.endpoints_first_fd, &slot, &EndpointsFirst::of(want))
            .map_err(|e| ProgError::Map("endpoints_first", e))
    }

    /// Makes the `local_addrs` map equal to `want`: the director host's own
    /// addresses. More than [`MAX_LOCAL_ADDRS`] is refused before any change.
    pub fn sync_local_addrs(&mut self, want: &HashSet<LocalAddr>) -> Result<(), ProgError> {
        fits("local_addrs", want, MAX_LOCAL_ADDRS)?;
        sync(self.local_addrs_fd, &mut self.local_addrs, want)
            .map_err(|e| ProgError::Map("local_addrs", e))?;
        self.sync_first(FIRST_LOCAL_ADDRS, want)
    }

    /// Makes the `own_macs` map equal to `want`: the unicast MACs whose
    /// frames may be xvs's on this interface. Until it holds the
    /// interface's own MAC, no frame is redirected. More than
    /// [`MAX_OWN_MACS`] is refused before any change.
    pub fn sync_own_macs(&mut self, want: &HashSet<OwnMac>) -> Result<(), ProgError> {
        fits("own_macs", want, MAX_OWN_MACS)?;
        sync(self.own_macs_fd, &mut self.own_macs, want)
            .map_err(|e| ProgError::Map("own_macs", e))?;
        // After the hash map: a MAC added is there before the array stops
        // saying that it holds them all.
        update(self.own_macs_first_fd, &0u32, &OwnMacsFirst::of(want))
            .map_err(|e| ProgError::Map("own_macs_first", e))
    }

    /// Counter `c` since the program was loaded, summed over CPUs.
    pub fn counter(&self, c: SteerCounter) -> Result<u64, ProgError> {
        let cpus = possible_cpus().map_err(|e| ProgError::Map("counters", e))?;
        let mut values = vec![0u64; cpus];
        let key = c as u32;
        // SAFETY: a per-CPU array of u64 values fills one 8-byte slot per
        // possible CPU: `values` has exactly that many, and the key is the
        // map's u32.
        let ret = unsafe {
            libxdp_sys::bpf_map_lookup_elem(
                self.counters_fd,
                &key as *const u32 as *const c_void,
                values.as_mut_ptr() as *mut c_void,
            )
        };
        if ret != 0 {
            return Err(ProgError::Map("counters", last_error(ret)));
        }
        Ok(values.iter().sum())
    }

    /// What the program does with `frame` given the maps as they are now:
    /// one `BPF_PROG_TEST_RUN` of the test entry, which runs the same
    /// classifier as the attached one. Needs [`load_with_probe`](Self::load_with_probe).
    /// The kernel refuses frames shorter than an Ethernet header (EINVAL).
    pub fn classify(&self, frame: &[u8]) -> io::Result<Steering> {
        let (retval, _) = self.test_run(frame, 1)?;
        match retval {
            XDP_TX => Ok(Steering::Redirect),
            XDP_PASS => Ok(Steering::Pass),
            other => Err(io::Error::other(format!(
                "the steering program's test entry returned {other}"
            ))),
        }
    }

    /// The test entry's mean run time on `frame` over `repeat` runs, as
    /// the kernel measures it (`BPF_PROG_TEST_RUN`'s duration): the
    /// classifier's cost per packet, which the attached program pays in
    /// the receive path before a frame reaches a socket. Needs
    /// [`load_with_probe`](Self::load_with_probe).
    pub fn run_time(&self, frame: &[u8], repeat: u32) -> io::Result<std::time::Duration> {
        let (_, ns) = self.test_run(frame, repeat.max(1))?;
        Ok(std::time::Duration::from_nanos(ns.into()))
    }

    /// `BPF_PROG_TEST_RUN` of the test entry on `frame`, `repeat` times:
    /// its return value and mean duration in nanoseconds.
    fn test_run(&self, frame: &[u8], repeat: u32) -> io::Result<(u32, u32)> {
        if self.probe_fd < 0 {
            return Err(io::Error::other(
                "the steering program was loaded without its test entry",
            ));
        }
        let size =
            u32::try_from(frame.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        let mut opts = libxdp_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libxdp_sys::bpf_test_run_opts>(),
            data_in: frame.as_ptr() as *const c_void,
            data_out: std::ptr::null_mut(),
            data_size_in: size,
            data_size_out: 0,
            ctx_in: std::ptr::null(),
            ctx_out: std::ptr::null_mut(),
            ctx_size_in: 0,
            ctx_size_out: 0,
            retval: 0,
            repeat: repeat as _,
            duration: 0,
            flags: 0,
            cpu: 0,
            batch_size: 0,
        };
        // SAFETY: probe_fd is a loaded XDP program; opts is a valid, fully
        // initialised struct of the size it states, and data_in points to
        // `size` readable bytes that outlive the call (the kernel copies
        // them; no output buffer is given).
        let ret = unsafe { libxdp_sys::bpf_prog_test_run_opts(self.probe_fd, &mut opts) };
        if ret != 0 {
            return Err(last_error(ret));
        }
        Ok((opts.retval, opts.duration))
    }
}

impl Drop for SteeringProgram {
    fn drop(&mut self) {
        if let Some((ifindex, mode, _)) = self.attached.take() {
            // SAFETY: detaching what this instance attached; null opts = defaults.
            unsafe { libxdp_sys::bpf_xdp_detach(ifindex as c_int, mode, std::ptr::null()) };
        }
        // SAFETY: obj came from bpf_object__open_mem and is closed once.
        unsafe { libxdp_sys::bpf_object__close(self.obj) };
    }
}

/// How many CPUs the kernel may ever bring up: the slots of a per-CPU map.
fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let cpus = crate::cpus::parse_list(text.trim()).map_err(io::Error::other)?;
    Ok(cpus.iter().max().map_or(1, |m| m + 1))
}

/// The id of the XDP program attached to `ifindex`, if any.
fn attached_program(ifindex: u32) -> Option<u32> {
    let mut id: u32 = 0;
    for mode in [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] {
        // SAFETY: id is a valid out pointer for the call's duration.
        let ret = unsafe { libxdp_sys::bpf_xdp_query_id(ifindex as c_int, mode as c_int, &mut id) };
        if ret == 0 && id != 0 {
            return Some(id);
        }
    }
    None
}

fn update<K, V>(fd: c_int, key: &K, value: &V) -> io::Result<()> {
    // SAFETY: key and value point to values of the map's key and value sizes
    // (checked by the kernel against the map definition).
    let ret = unsafe {
        libxdp_sys::bpf_map_update_elem(
            fd,
            key as *const K as *const c_void,
            value as *const V as *const c_void,
            0,
        )
    };
    if ret != 0 {
        return Err(last_error(ret));
    }
    Ok(())
}

/// `want` fits a map of `max` entries (its `max_entries`, from
/// `crate::limits`).
fn fits<K>(map: &'static str, want: &HashSet<K>, max: usize) -> Result<(), ProgError> {
    if want.len() > max {
        return Err(ProgError::MapFull {
            map,
            want: want.len(),
            max,
        });
    }
    Ok(())
}

/// Makes the map hold exactly `want`; `have` follows every change that took,
/// so a failure part way leaves it true to the map and the next sync
/// finishes the job. Stale entries go first, so a map never holds more
/// than the larger of `have` and `want`: replacing a full set with another
/// fits. `K` must be the map's key type (the `#[repr(C)]` twin of its C key
/// struct).
fn sync<K: Copy + Eq + std::hash::Hash>(
    fd: c_int,
    have: &mut HashSet<K>,
    want: &HashSet<K>,
) -> io::Result<()> {
    let stale: Vec<K> = have.difference(want).copied().collect();
    for e in stale {
        // SAFETY: e is a K, which callers choose as the map's own key type,
        // so the kernel reads exactly one key's bytes from it.
        let ret = unsafe { libxdp_sys::bpf_map_delete_elem(fd, &e as *const K as *const c_void) };
        if ret != 0 {
            let e = last_error(ret);
            // Already gone is what we want.
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
        }
        have.remove(&e);
    }
    let new: Vec<K> = want.difference(have).copied().collect();
    for e in new {
        update(fd, &e, &1u8)?;
        have.insert(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<Endpoint>(), 20);
        let e = Endpoint::new(L4Proto::Tcp, "192.0.2.10".parse().unwrap(), 80);
        assert_eq!(e.port_be.to_ne_bytes(), [0, 80]);
        assert_eq!(&e.addr[..5], &[192, 0, 2, 10, 0]);
    }

    #[test]
    fn own_mac_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<OwnMac>(), 8);
        let m = OwnMac::new([0, 0, 0x5e, 0, 1, 51]);
        assert_eq!((m.addr, m.pad), ([0, 0, 0x5e, 0, 1, 51], [0; 2]));
    }

    #[test]
    fn own_macs_first_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<OwnMacsFirst>(), 8 * OWN_MACS_FIRST + 8);
        // Read as the program reads the frame's destination: six bytes
        // copied into a zeroed 64-bit word.
        let m = OwnMac::new([2, 0, 0, 0, 0, 1]);
        let mut word = [0u8; 8];
        word[..6].copy_from_slice(&m.addr);
        assert_eq!(m.bytes(), word);
    }

    #[test]
    fn endpoints_first_reads_an_ipv4_key_as_the_program_does() {
        assert_eq!(
            std::mem::size_of::<EndpointsFirst>(),
            8 * ENDPOINTS_FIRST + 8
        );
        let e = Endpoint::new(L4Proto::Tcp, "203.0.113.10".parse().unwrap(), 80);
        // The key's bytes as C lays them out.
        let mut key = [0u8; 8];
        key[0] = 6;
        key[1] = 4;
        key[2..4].copy_from_slice(&80u16.to_be_bytes());
        key[4..8].copy_from_slice(&[203, 0, 113, 10]);
        assert_eq!(e.v4_bytes(), Some(key));
        let v6 = Endpoint::new(L4Proto::Tcp, "2001:db8::10".parse().unwrap(), 80);
        assert_eq!(v6.v4_bytes(), None);
        let local = LocalAddr::new("192.0.2.1".parse().unwrap());
        assert_eq!(V4Bytes::v4_bytes(&local), Some([4, 0, 0, 0, 192, 0, 2, 1]));
        let local6 = LocalAddr::new("2001:db8::1".parse().unwrap());
        assert_eq!(V4Bytes::v4_bytes(&local6), None);
    }

    /// `keys` as the array should hold them: descending byte order, as
    /// native-endian words.
    fn descending(keys: impl Iterator<Item = [u8; 8]>) -> Vec<u64> {
        let mut keys: Vec<[u8; 8]> = keys.collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.into_iter().map(u64::from_ne_bytes).collect()
    }

    #[test]
    fn endpoints_first_holds_all_of_a_few_ipv4_endpoints_and_says_so() {
        let set = |n: u8, v6: u8| -> HashSet<Endpoint> {
            let v4 = (0..n).map(|i| format!("198.51.100.{}", 20 - i));
            let v6 = (0..v6).map(|i| format!("2001:db8::{i}"));
            v4.chain(v6)
                .map(|a| Endpoint::new(L4Proto::Udp, a.parse().unwrap(), 53))
                .collect()
        };
        let few = EndpointsFirst::of(&set(3, 20));
        assert_eq!(few.all_v4, 1, "IPv6 endpoints are never in the array");
        let v4 = |a: &str| Endpoint::new(L4Proto::Udp, a.parse().unwrap(), 53);
        let want: Vec<u64> = ["198.51.100.20", "198.51.100.19", "198.51.100.18"]
            .iter()
            .map(|a| u64::from_ne_bytes(v4(a).v4_bytes().unwrap()))
            .collect();
        assert_eq!(&few.v4[..3], &want[..]);
        assert_eq!(&few.v4[3..], &[u64::MAX; ENDPOINTS_FIRST - 3]);
        assert_eq!(EndpointsFirst::of(&set(ENDPOINTS_FIRST as u8, 0)).all_v4, 1);
        let many = EndpointsFirst::of(&set(10, 0));
        assert_eq!(many.all_v4, 0);
        let words = descending(set(10, 0).iter().filter_map(|e| e.v4_bytes()));
        assert_eq!(&many.v4[..], &words[..ENDPOINTS_FIRST]);
    }

    #[test]
    fn own_macs_first_holds_all_of_a_few_and_says_so() {
        let macs = |n: u8| -> HashSet<OwnMac> {
            (0..n)
                .map(|i| OwnMac::new([2, 0, 0, 0, 0, 10 - i]))
                .collect()
        };
        let word = |m: MacAddr| u64::from_ne_bytes(OwnMac::new(m).bytes());
        let few = OwnMacsFirst::of(&macs(2));
        assert_eq!(few.all, 1);
        assert_eq!(few.mac[0], word([2, 0, 0, 0, 0, 10]));
        assert_eq!(few.mac[1], word([2, 0, 0, 0, 0, 9]));
        assert_eq!(&few.mac[2..], &[u64::MAX; OWN_MACS_FIRST - 2]);
        let exactly = OwnMacsFirst::of(&macs(OWN_MACS_FIRST as u8));
        assert_eq!(exactly.all, 1);
        assert!(exactly.mac.iter().all(|&w| w != u64::MAX));
        let many = OwnMacsFirst::of(&macs(6));
        assert_eq!(many.all, 0);
        let words = descending(macs(6).iter().map(|m| m.bytes()));
        assert_eq!(&many.mac[..], &words[..OWN_MACS_FIRST]);
        assert_eq!(OwnMacsFirst::of(&HashSet::new()).all, 1);
    }

    #[test]
    fn local_addr_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<LocalAddr>(), 20);
        let a = LocalAddr::new("198.51.100.1".parse().unwrap());
        assert_eq!((a.family, a.pad), (4, [0; 3]));
        assert_eq!(&a.addr[..5], &[198, 51, 100, 1, 0]);
        let a = LocalAddr::new("2001:db8::1".parse().unwrap());
        assert_eq!((a.family, a.addr[0], a.addr[15]), (6, 0x20, 1));
    }

    /// `n` distinct TCP endpoints on 256 addresses of `net` (a /24).
    fn endpoints(net: [u8; 3], n: usize) -> HashSet<Endpoint> {
        (0..n)
            .map(|i| {
                let addr = IpAddr::from([net[0], net[1], net[2], i as u8]);
                Endpoint::new(L4Proto::Tcp, addr, (i / 256) as u16 + 1)
            })
            .collect()
    }

    /// The maps hold as much as the model may ask for (`crate::limits`),
    /// a full set can be swapped for another, and one more is refused
    /// with the limit named. Needs root (loads the program).
    #[test]
    fn maps_hold_the_limits_the_model_enforces() {
        let mut p = SteeringProgram::load().expect("load the steering program (root?)");
        let full = endpoints([192, 0, 2], MAX_SERVICES);
        let other = endpoints([198, 51, 100], MAX_SERVICES);
        p.sync_services(&full)
            .expect("as many services as the model takes");
        p.sync_services(&other)
            .expect("a full set replaced by another");
        p.sync_nat_reals(&endpoints([203, 0, 113], MAX_NAT_ENDPOINTS))
            .expect("as many NAT endpoints as the model takes");
        let addrs: HashSet<LocalAddr> = (0..MAX_LOCAL_ADDRS as u32)
            .map(|i| {
                LocalAddr::new(std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | i as u128).into())
            })
            .collect();
        p.sync_local_addrs(&addrs)
            .expect("as many local addresses as allowed");
        let macs: HashSet<OwnMac> = (0..MAX_OWN_MACS as u32)
            .map(|i| {
                let [_, _, a, b] = i.to_be_bytes();
                OwnMac::new([0x02, 0, 0, 0, a, b])
            })
            .collect();
        p.sync_own_macs(&macs)
            .expect("every VRRP virtual MAC and the interface's own");
        let too_many = endpoints([192, 0, 2], MAX_SERVICES + 1);
        assert_eq!(too_many.len(), MAX_SERVICES + 1);
        let e = p.sync_services(&too_many).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the XDP map services holds at most {MAX_SERVICES} entries; {} are needed",
                MAX_SERVICES + 1
            )
        );
        assert_eq!(p.services, other, "a refused sync changes nothing");
    }
}
