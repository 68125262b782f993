//! The session's [`Table`] over the real connection table: entries are
//! installed by real server *address*, mapped to this director's own
//! [`crate::service::RealId`] through its current [`ServiceTable`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam::channel::Sender;

use super::services::ServicesUpdate;
use super::session::Table;
use super::stats::Refused;
use super::wire::{ConnRecord, Entry, HealthRecord, TemplateRecord};
use crate::conntrack::{ConnTable, ImportConn, TemplateKey};
use crate::packet::L4Proto;
use crate::service::{RealServer, ServiceKey, ServiceTable, VirtualService};
use crate::Millis;

/// The connection table and the services it is read against.
pub struct ConnSync {
    pub conns: Arc<ConnTable>,
    /// The services as last published (the director stores every new one).
    pub services: Arc<ArcSwap<ServiceTable>>,
    /// Where a peer's health reports go ([`HealthRecord`]): the daemon's
    /// hook to mark a real server up or down (`service::Edit::SetHealth`).
    pub health: Option<Sender<HealthRecord>>,
    /// Where a peer's whole service configuration goes: the daemon's hook
    /// to replace this director's services with it.
    pub peer_services: Option<Sender<ServicesUpdate>>,
}

impl ConnSync {
    fn service(
        table: &ServiceTable,
        proto: L4Proto,
        vip: std::net::IpAddr,
        vport: u16,
    ) -> Option<&VirtualService> {
        let key = ServiceKey {
            proto,
            addr: vip,
            port: vport,
        };
        table
            .find(&key)
            .or_else(|| table.find(&ServiceKey { port: 0, ..key }))
            .map(|(_, s)| s)
    }

    fn real(s: &VirtualService, at: std::net::SocketAddr) -> Result<&RealServer, Refused> {
        s.reals
            .iter()
            .find(|r| r.addr == at.ip() && r.port == at.port())
            .ok_or(Refused::NoReal)
    }

    fn conn(&self, c: &ConnRecord, now: Millis) -> Result<(), Refused> {
        let table = self.services.load();
        let s =
            Self::service(&table, c.key.proto, c.key.dst, c.key.dport).ok_or(Refused::NoService)?;
        let real = Self::real(s, c.real)?;
        let template = match c.template {
            Some(client) => {
                let tk = TemplateKey {
                    proto: c.key.proto,
                    client,
                    vip: c.key.dst,
                    vport: c.key.dport,
                };
                let secs = s.persistence.map_or(300, |p| p.timeout_secs);
                let t = match self.conns.template(&tk, now) {
                    Some(t) => t,
                    None => self
                        .conns
                        .insert_template(&tk, real.id, c.real, secs, now)
                        .map_err(|_| Refused::Table)?,
                };
                Some(t.handle)
            }
            None => None,
        };
        self.conns
            .import(
                &ImportConn {
                    key: c.key,
                    real_id: real.id,
                    method: c.method,
                    real: c.real,
                    state: c.state,
                    timeout_ms: c.timeout_ms as u64,
                    template,
                },
                now,
            )
            .map(|_| ())
            .map_err(|_| Refused::Table)
    }

    fn template(&self, t: &TemplateRecord, now: Millis) -> Result<(), Refused> {
        let table = self.services.load();
        let s = Self::service(&table, t.proto, t.vip, t.vport).ok_or(Refused::NoService)?;
        let real = Self::real(s, t.real)?;
        let tk = TemplateKey {
            proto: t.proto,
            client: t.client,
            vip: t.vip,
            vport: t.vport,
        };
        let secs = (t.timeout_ms / 1000).max(1);
        self.conns
            .insert_template(&tk, real.id, t.real, secs, now)
            .map(|_| ())
            .map_err(|_| Refused::Table)
    }
}

impl Table for ConnSync {
    fn apply(&mut self, e: &Entry, now: Millis) -> Result<(), Refused> {
        match e {
            Entry::Conn(c) => self.conn(c, now),
            Entry::Template(t) => self.template(t, now),
            Entry::Closed(key) => {
                if let Some(c) = self.conns.lookup_original(key, now) {
                    self.conns.remove(&c.handle, now);
                }
                Ok(())
            }
            Entry::Health(h) => {
                if let Some(tx) = &self.health {
                    let _ = tx.try_send(*h);
                }
                Ok(())
            }
            // The session puts these together and hands them to
            // `services`.
            Entry::Services(_) => Ok(()),
        }
    }

    fn services(&mut self, update: ServicesUpdate) -> Result<(), Refused> {
        match &self.peer_services {
            Some(tx) => tx.try_send(update).map_err(|_| Refused::ServicesOff),
            None => Err(Refused::ServicesOff),
        }
    }

    fn walk(&mut self, now: Millis) -> Vec<Entry> {
        let mut templates = Vec::new();
        let mut conns = Vec::new();
        self.conns.for_each(now, |e| {
            let timeout_ms = e.expires_ms.min(u32::MAX as u64) as u32;
            if e.template {
                templates.push(Entry::Template(TemplateRecord {
                    proto: e.proto,
                    client: e.client.ip(),
                    vip: e.virt.ip(),
                    vport: e.virt.port(),
                    real: e.real,
                    timeout_ms,
                }));
            } else {
                let key = crate::packet::FlowKey::new(
                    e.proto,
                    e.client.ip(),
                    e.client.port(),
                    e.virt.ip(),
                    e.virt.port(),
                );
                conns.push(Entry::Conn(ConnRecord {
                    key,
                    real: e.real,
                    method: e.method,
                    state: e.state,
                    timeout_ms,
                    template: None,
                }));
            }
        });
        // The template each connection belongs to, looked up once the walk
        // is over (a lookup per connection, on the sync thread).
        for c in &mut conns {
            if let Entry::Conn(r) = c {
                if let Some(conn) = self.conns.lookup_original(&r.key, now) {
                    r.template = self.conns.template_key(&conn).map(|t| t.client);
                }
            }
        }
        templates.extend(conns);
        templates
    }
}
