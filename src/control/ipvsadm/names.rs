//! Port names (`http` ↔ 80), as ipvsadm gets them from `getservbyname` and
//! `getservbyport`.
//!
//! Names in input resolve from `/etc/services` first, then a small built-in
//! table, so `-t 192.0.2.1:http` works in a minimal container too. Numbers
//! in output are named from `/etc/services` alone when it is readable, so
//! `-L` prints what ipvsadm would on the same host; only without it does the
//! built-in table name them.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::packet::L4Proto;

/// `(name, port, tcp, udp, aliases)`, with netbase's canonical names.
const BUILTIN: &[(&str, u16, bool, bool, &[&str])] = &[
    ("ftp-data", 20, true, false, &[]),
    ("ftp", 21, true, false, &[]),
    ("ssh", 22, true, false, &[]),
    ("telnet", 23, true, false, &[]),
    ("smtp", 25, true, false, &["mail"]),
    ("domain", 53, true, true, &[]),
    ("tftp", 69, false, true, &[]),
    ("http", 80, true, false, &["www"]),
    ("kerberos", 88, true, true, &["kerberos5", "krb5"]),
    ("pop3", 110, true, false, &["pop-3"]),
    ("ntp", 123, false, true, &[]),
    ("imap2", 143, true, false, &["imap"]),
    ("snmp", 161, true, true, &[]),
    ("ldap", 389, true, true, &[]),
    ("https", 443, true, true, &[]),
    ("submissions", 465, true, false, &["ssmtp", "smtps"]),
    ("syslog", 514, false, true, &[]),
    ("submission", 587, true, false, &[]),
    ("ldaps", 636, true, true, &[]),
    ("rsync", 873, true, false, &[]),
    ("imaps", 993, true, false, &[]),
    ("pop3s", 995, true, false, &[]),
    ("openvpn", 1194, true, true, &[]),
    ("radius", 1812, true, true, &[]),
    ("nfs", 2049, true, true, &[]),
    ("mysql", 3306, true, false, &[]),
    ("sip", 5060, true, true, &[]),
    ("postgresql", 5432, true, false, &["postgres"]),
    ("redis", 6379, true, false, &[]),
    ("http-alt", 8080, true, false, &["webcache"]),
];

/// One table of port names, per protocol.
#[derive(Clone, Debug, Default)]
struct Table {
    by_name: HashMap<(L4Proto, String), u16>,
    by_port: HashMap<(L4Proto, u16), String>,
}

impl Table {
    /// Adds an entry; the first name given for a port stays its name, as
    /// `getservbyport` returns the first matching line.
    fn add(&mut self, proto: L4Proto, port: u16, name: &str, aliases: &[&str]) {
        self.by_port
            .entry((proto, port))
            .or_insert_with(|| name.to_string());
        for n in std::iter::once(&name).chain(aliases) {
            self.by_name.entry((proto, n.to_string())).or_insert(port);
        }
    }
}

/// Port names for parsing and printing.
#[derive(Clone, Debug)]
pub struct Services {
    /// From `/etc/services`, when there is one.
    system: Option<Table>,
    builtin: Table,
}

impl Services {
    /// The built-in table only: deterministic, what the tests use.
    pub fn builtin() -> Services {
        let mut builtin = Table::default();
        for &(name, port, tcp, udp, aliases) in BUILTIN {
            if tcp {
                builtin.add(L4Proto::Tcp, port, name, aliases);
            }
            if udp {
                builtin.add(L4Proto::Udp, port, name, aliases);
            }
        }
        Services {
            system: None,
            builtin,
        }
    }

    /// The built-in table with a `services(5)` file's contents over it.
    /// Malformed lines are skipped, as libc does.
    pub fn with_services_file(text: &str) -> Services {
        let mut table = Table::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let proto = match proto {
                "tcp" => L4Proto::Tcp,
                "udp" => L4Proto::Udp,
                _ => continue,
            };
            let aliases: Vec<&str> = words.collect();
            table.add(proto, port, name, &aliases);
        }
        Services {
            system: Some(table),
            ..Services::builtin()
        }
    }

    /// This host's names: `/etc/services` (read once) over the built-in
    /// table, or the built-in table alone when the file cannot be read.
    pub fn system() -> &'static Services {
        static SYSTEM: OnceLock<Services> = OnceLock::new();
        let path = std::path::Path::new("/etc/services");
        SYSTEM.get_or_init(
            || match crate::files::read_text(path, crate::files::MAX_SYSTEM_BYTES) {
                Ok(text) => Services::with_services_file(&text),
                Err(_) => Services::builtin(),
            },
        )
    }

    /// The port a name stands for.
    pub fn port(&self, name: &str, proto: L4Proto) -> Option<u16> {
        let key = (proto, name.to_string());
        self.system
            .as_ref()
            .and_then(|t| t.by_name.get(&key))
            .or_else(|| self.builtin.by_name.get(&key))
            .copied()
    }

    /// The name `-L` prints for a port, if it has one.
    pub fn name(&self, port: u16, proto: L4Proto) -> Option<&str> {
        let table = self.system.as_ref().unwrap_or(&self.builtin);
        table.by_port.get(&(proto, port)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_both_ways() {
        let s = Services::builtin();
        assert_eq!(s.port("http", L4Proto::Tcp), Some(80));
        assert_eq!(s.port("www", L4Proto::Tcp), Some(80));
        assert_eq!(s.port("http", L4Proto::Udp), None);
        assert_eq!(s.port("imap", L4Proto::Tcp), Some(143));
        assert_eq!(s.port("domain", L4Proto::Udp), Some(53));
        assert_eq!(s.name(443, L4Proto::Tcp), Some("https"));
        assert_eq!(s.name(143, L4Proto::Tcp), Some("imap2"));
        assert_eq!(s.name(80, L4Proto::Udp), None);
    }

    #[test]
    fn services_file_wins_for_output_and_builtin_fills_input() {
        let s = Services::with_services_file(
            "# comment\nwww-custom 80/tcp http  # first name wins\nbad line\nfoo 99999/tcp\n",
        );
        assert_eq!(s.name(80, L4Proto::Tcp), Some("www-custom"));
        assert_eq!(s.port("http", L4Proto::Tcp), Some(80));
        // Not in the file: ipvsadm would print the number, so do we...
        assert_eq!(s.name(443, L4Proto::Tcp), None);
        // ...but the name is still understood on input.
        assert_eq!(s.port("https", L4Proto::Tcp), Some(443));
    }
}
