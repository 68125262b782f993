//! The `[sync]` table of the director's TOML file and the `--sync-*`
//! flags, resolved into [`SyncOptions`].
//!
//! ```toml
//! [sync]
//! key_file = "/etc/xvs/sync.key"  # the shared secret, 16 bytes or more
//! insecure = false                # true: no key, no authentication
//! peers = ["192.0.2.2:8848"]      # unicast instead of the multicast group
//! sender_id = 1                   # this director's id (default: random)
//! role = "backup"                 # a daemon to start with: master, backup, both
//! mcast_interface = "eth2"        # as ipvsadm --start-daemon's options
//! syncid = 0
//! maxlen = 1472
//! mcast_group = "224.0.0.81"
//! mcast_port = 8848
//! mcast_ttl = 1
//! refresh_secs = 60               # the whole table again, this often
//! services = false                # true: the service configuration too
//! ```
//!
//! With `services = true` a director whose master daemon runs sends its
//! configured services (`ipvsadm -S -n`) after every change and with every
//! refresh; one whose backup daemon runs replaces its own with them. A
//! backup without it leaves its services alone and counts what it gets as
//! refused (`xvs_sync_refused_total{reason="services_off"}`).

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sync::{DaemonConfig, DaemonRole, SyncOptions};

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// The longest key file read.
const MAX_KEY_BYTES: u64 = 4096;

/// `[sync]`; every key optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    pub key_file: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub peers: Option<Vec<String>>,
    pub sender_id: Option<u32>,
    pub role: Option<String>,
    pub mcast_interface: Option<String>,
    pub syncid: Option<u8>,
    pub maxlen: Option<u16>,
    pub mcast_group: Option<String>,
    pub mcast_port: Option<u16>,
    pub mcast_ttl: Option<u8>,
    pub refresh_secs: Option<u64>,
    pub services: Option<bool>,
}

impl SyncConfig {
    /// `self` with every key `over` sets replaced by `over`'s.
    pub fn overridden_by(self, over: SyncConfig) -> SyncConfig {
        SyncConfig {
            key_file: over.key_file.or(self.key_file),
            insecure: over.insecure.or(self.insecure),
            peers: over.peers.or(self.peers),
            sender_id: over.sender_id.or(self.sender_id),
            role: over.role.or(self.role),
            mcast_interface: over.mcast_interface.or(self.mcast_interface),
            syncid: over.syncid.or(self.syncid),
            maxlen: over.maxlen.or(self.maxlen),
            mcast_group: over.mcast_group.or(self.mcast_group),
            mcast_port: over.mcast_port.or(self.mcast_port),
            mcast_ttl: over.mcast_ttl.or(self.mcast_ttl),
            refresh_secs: over.refresh_secs.or(self.refresh_secs),
            services: over.services.or(self.services),
        }
    }

    /// Checks every value and reads the key file.
    pub fn resolve(&self) -> Result<SyncOptions, String> {
        let mut o = SyncOptions {
            insecure: self.insecure.unwrap_or(false),
            sender_id: self.sender_id,
            refresh_secs: self.refresh_secs,
            services: self.services.unwrap_or(false),
            ..SyncOptions::default()
        };
        if let Some(path) = &self.key_file {
            o.key = Some(read_key(path)?);
        }
        for p in self.peers.iter().flatten() {
            o.peers.push(p.parse::<SocketAddr>().map_err(|_| {
                format!("sync peer {p:?}: expected ADDRESS:PORT, e.g. 192.0.2.2:8848")
            })?);
        }
        if o.peers.iter().any(|p| p.is_ipv6()) {
            return Err("sync peers: IPv6 peers are not supported yet".into());
        }
        let roles: &[DaemonRole] = match self.role.as_deref() {
            None => &[],
            Some("master") => &[DaemonRole::Master],
            Some("backup") => &[DaemonRole::Backup],
            Some("both") => &[DaemonRole::Backup, DaemonRole::Master],
            Some(r) => return Err(format!("sync role = {r:?}: give master, backup or both")),
        };
        let group = match &self.mcast_group {
            Some(g) => match g.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if a.is_multicast() => Some(a),
                _ => {
                    return Err(format!(
                        "sync mcast_group = {g:?}: give an IPv4 multicast group"
                    ))
                }
            },
            None => None,
        };
        for &role in roles {
            let mut d = DaemonConfig::new(role);
            d.mcast_interface = self.mcast_interface.clone();
            d.syncid = self.syncid.unwrap_or(0);
            d.maxlen = self.maxlen;
            d.group = group.unwrap_or(d.group);
            d.port = self.mcast_port.unwrap_or(d.port);
            d.ttl = self.mcast_ttl.unwrap_or(d.ttl);
            o.start.push(d);
        }
        if !o.start.is_empty() {
            o.mac_key()?;
        }
        Ok(o)
    }
}

/// The shared secret: the file's bytes less a final newline; a regular
/// file of at least [`MIN_KEY_BYTES`]. One others may read is used, with a
/// warning.
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("sync key file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("sync key file {shown}: not a regular file"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!("sync key file {shown} may be read by others: chmod 600 it");
    }
    let mut key = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_BYTES + 1).read_to_end(&mut key))
        .map_err(|e| format!("sync key file {shown}: {e}"))?;
    if key.len() as u64 > MAX_KEY_BYTES {
        return Err(format!(
            "sync key file {shown}: longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "sync key file {shown}: {} bytes; give at least {MIN_KEY_BYTES} \
             (e.g. head -c 32 /dev/urandom | base64 > {shown})",
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SyncConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_module_doc_example_resolves_but_for_its_key_file() {
        let doc = include_str!("sync_config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! [sync]"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let mut c = parse(&example);
        assert_eq!(c.role.as_deref(), Some("backup"));
        c.key_file = None;
        c.insecure = Some(true);
        let o = c.resolve().unwrap();
        assert_eq!(o.peers, vec!["192.0.2.2:8848".parse().unwrap()]);
        assert_eq!(o.start.len(), 1);
        assert_eq!(o.start[0].mcast_interface.as_deref(), Some("eth2"));
        assert_eq!((o.sender_id, o.refresh_secs), (Some(1), Some(60)));
        assert!(!o.services, "services sync is off unless asked for");
        let on = parse("services = true\ninsecure = true").resolve().unwrap();
        assert!(on.services);
        let off = parse("services = true").overridden_by(parse("services = false"));
        assert!(!off.resolve().unwrap().services);
    }

    #[test]
    fn a_daemon_without_a_key_is_refused_and_bad_values_are_named() {
        let e = parse("role = \"master\"").resolve().unwrap_err();
        assert!(e.contains("--sync-key-file"), "{e}");
        let e = parse("role = \"leader\"\ninsecure = true")
            .resolve()
            .unwrap_err();
        assert!(e.contains("master, backup or both"), "{e}");
        let e = parse("peers = [\"192.0.2.2\"]").resolve().unwrap_err();
        assert!(e.contains("ADDRESS:PORT"), "{e}");
        let e = parse("mcast_group = \"192.0.2.1\"").resolve().unwrap_err();
        assert!(e.contains("multicast"), "{e}");
        let both = parse("role = \"both\"\ninsecure = true").resolve().unwrap();
        assert_eq!(both.start.len(), 2);
    }

    #[test]
    fn key_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("xvs-sync-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, b"0123456789abcdef0123\n").unwrap();
        assert_eq!(read_key(&good).unwrap(), b"0123456789abcdef0123");
        let short = dir.join("short");
        std::fs::write(&short, b"tiny\n").unwrap();
        assert!(read_key(&short).unwrap_err().contains("at least 16"));
        assert!(read_key(&dir).unwrap_err().contains("not a regular file"));
        assert!(read_key(&dir.join("absent")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
