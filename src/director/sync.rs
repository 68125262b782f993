//! The director's side of connection sync: the channel the workers hand
//! their connection events to, the services the sync thread reads real
//! servers from, and the thread itself ([`crate::sync::SyncHandle`]).
//!
//! Sync runs only if it may: with a key (`--sync-key-file`) or
//! `--sync-insecure`. Otherwise the workers' connection events stay off
//! (they cost nothing) and `--start-daemon` is answered with why.

use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam::channel::{bounded, Receiver, Sender};

use super::{err, DirectorError};
use crate::conntrack::ConnTable;
use crate::pipeline::Event;
use crate::service::ServiceTable;
use crate::sync::table::ConnSync;
use crate::sync::wire::Entry;
use crate::sync::{HealthRecord, Refused, ServicesUpdate, SyncHandle, SyncOptions};

/// Connection events waiting for the sync thread at most.
const EVENTS: usize = 1 << 14;

pub(super) struct Syncer {
    services: Arc<ArcSwap<ServiceTable>>,
    channel: Option<(Sender<Event>, Receiver<Event>)>,
    handle: Option<SyncHandle>,
    /// Peers' health reports, for the daemon to apply.
    health: Option<Receiver<HealthRecord>>,
    /// Peers' service configurations, for the daemon to apply.
    peer_services: Option<Receiver<ServicesUpdate>>,
}

impl Syncer {
    pub fn new(services: &ServiceTable) -> Syncer {
        Syncer {
            services: Arc::new(ArcSwap::from_pointee(services.clone())),
            channel: None,
            handle: None,
            health: None,
            peer_services: None,
        }
    }

    /// The workers' event sink, if sync may run.
    pub fn events(&mut self, opts: &SyncOptions) -> Option<Sender<Event>> {
        if opts.mac_key().is_ok() && self.channel.is_none() {
            self.channel = Some(bounded(EVENTS));
        }
        self.channel.as_ref().map(|(tx, _)| tx.clone())
    }

    /// Starts the sync thread if `opts` allow sync (a key, or insecure).
    pub fn spawn(
        &mut self,
        opts: &SyncOptions,
        conns: &Arc<ConnTable>,
    ) -> Result<(), DirectorError> {
        if let Err(why) = opts.mac_key() {
            if !opts.start.is_empty() {
                return Err(err(why));
            }
            return Ok(());
        }
        let Some((_, rx)) = self.channel.take() else {
            return Ok(());
        };
        let (htx, hrx) = bounded(1024);
        // A few whole configurations: the daemon takes them every round.
        let (stx, srx) = bounded(4);
        let table = ConnSync {
            conns: Arc::clone(conns),
            services: Arc::clone(&self.services),
            health: Some(htx),
            peer_services: opts.services.then_some(stx),
        };
        self.health = Some(hrx);
        self.peer_services = Some(srx);
        self.handle = Some(SyncHandle::spawn(opts.clone(), rx, table).map_err(err)?);
        Ok(())
    }

    pub fn set_services(&self, services: &ServiceTable) {
        self.services.store(Arc::new(services.clone()));
    }

    pub fn handle(&mut self) -> Option<&mut SyncHandle> {
        self.handle.as_mut()
    }

    pub fn handle_ref(&self) -> Option<&SyncHandle> {
        self.handle.as_ref()
    }

    /// The next health report a peer sent, if any.
    pub fn health_report(&self) -> Option<HealthRecord> {
        self.health.as_ref()?.try_recv().ok()
    }

    pub fn send_health(&self, h: HealthRecord) {
        if let Some(s) = &self.handle {
            s.send_entry(Entry::Health(h));
        }
    }

    /// The next whole service configuration a peer sent, if any.
    pub fn services_report(&self) -> Option<ServicesUpdate> {
        self.peer_services.as_ref()?.try_recv().ok()
    }

    /// This director's service configuration after a change of the model.
    pub fn send_services(&self, text: String) {
        if let Some(s) = &self.handle {
            s.send_services(text);
        }
    }

    /// Counts what became of a peer's service configuration.
    pub fn count_services(&self, outcome: Result<bool, Refused>) {
        if let Some(s) = &self.handle {
            s.count_services(outcome);
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut h) = self.handle.take() {
            h.stop();
        }
    }
}
