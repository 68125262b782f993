//! The daemon's inbox: the one way other threads reach the model.
//!
//! Every thread that wants something of the daemon posts a [`Message`]
//! through a cloneable [`Inbox`] and waits on the message's own reply
//! channel; the daemon thread takes messages from its [`Mailbox`] between
//! rounds and answers each. Nothing else reads or changes the service
//! model, so no lock guards it.
//!
//! Today's senders: the control socket (an `xvs ipvsadm` request, or one
//! of xvs's own commands), the metrics endpoint (a scrape) and the health
//! checks (a real server up or down). Connection sync installs peers'
//! connections in the table itself (a resync must not queue here); its
//! peers' health records reach the daemon through the data plane
//! (`Plane::peer_health`), read each round.
//!
//! The inbox is bounded ([`CAPACITY`]): a sender waits for room until its
//! deadline, so a stuck daemon turns into timely errors, not memory.
//!
//! # Health reports
//! The health monitor's threads must never wait on the daemon, and a
//! report must never be lost: a lost "down" would leave a dead server in
//! the service. So a report ([`Inbox::report`]) goes to a slot of its
//! target (service, real server), replacing one still waiting there — the
//! latest state is the one that counts; the notify hooks of the states in
//! between have run in the monitor already — and then a
//! [`Message::Health`] is offered to the inbox with `try_send`. A full
//! inbox loses only that wake-up: the daemon empties the slots every round
//! ([`Mailbox::reports`]) as well as on the message. Memory is bounded by
//! the number of targets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam::channel::{bounded, Receiver, Sender};

use super::metrics::Scrape;
use super::protocol::{Request, Response};
use crate::health::Report;
use crate::service::ServiceKey;

/// Messages waiting for the daemon at most.
pub const CAPACITY: usize = 64;

/// Work for the daemon thread, each with the channel its answer goes to.
///
/// Senders now: the control socket ([`Message::Ipvsadm`]), the metrics
/// endpoint ([`Message::Scrape`]) and the health monitor
/// ([`Message::Health`]). To come, with a variant of its own when it
/// exists: connection sync (connections to install on a backup).
pub enum Message {
    /// An `xvs ipvsadm` invocation (or one of xvs's own commands: see
    /// [`Request::xvs_args`]), from the control socket.
    Ipvsadm {
        request: Request,
        reply: Sender<Response>,
    },
    /// A metrics scrape: the numbers, which the metrics endpoint encodes.
    Scrape { reply: Sender<Scrape> },
    /// Health reports wait in their slots ([`Mailbox::reports`]).
    Health,
}

/// The latest report of each target not yet taken by the daemon.
type Slots = Arc<Mutex<HashMap<(ServiceKey, SocketAddr), Report>>>;

/// Why a message got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// The inbox stayed full, or the daemon is gone.
    NotPosted,
    /// Posted, but no answer came before the deadline.
    NoAnswer,
}

/// The posting end; clone one for each thread that talks to the daemon.
#[derive(Clone)]
pub struct Inbox(Sender<Message>, Slots);

/// The daemon's end.
pub struct Mailbox(Receiver<Message>, Slots);

/// A new inbox and the mailbox its messages arrive at.
pub fn channel() -> (Inbox, Mailbox) {
    let (tx, rx) = bounded(CAPACITY);
    let slots = Slots::default();
    (Inbox(tx, slots.clone()), Mailbox(rx, slots))
}

impl Inbox {
    /// Posts an ipvsadm request and waits for its answer, both by `deadline`.
    pub fn ipvsadm(&self, request: Request, deadline: Instant) -> Result<Response, Unanswered> {
        self.ask(|reply| Message::Ipvsadm { request, reply }, deadline)
    }

    /// Asks for a scrape's numbers by `deadline`.
    pub fn scrape(&self, deadline: Instant) -> Result<Scrape, Unanswered> {
        self.ask(|reply| Message::Scrape { reply }, deadline)
    }

    /// Posts a health report without waiting: into its target's slot
    /// (replacing an older one), then a [`Message::Health`] if there is
    /// room (see the module doc).
    pub fn report(&self, report: Report) {
        let first = {
            let mut slots = self.1.lock().unwrap_or_else(|e| e.into_inner());
            slots.insert((report.service, report.real), report);
            slots.len() == 1
        };
        // One wake-up per batch of reports is enough.
        if first {
            let _ = self.0.try_send(Message::Health);
        }
    }

    fn ask<T>(
        &self,
        message: impl FnOnce(Sender<T>) -> Message,
        deadline: Instant,
    ) -> Result<T, Unanswered> {
        let (reply, answer) = bounded(1);
        self.0
            .send_deadline(message(reply), deadline)
            .map_err(|_| Unanswered::NotPosted)?;
        answer
            .recv_deadline(deadline)
            .map_err(|_| Unanswered::NoAnswer)
    }
}

impl Mailbox {
    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Option<Message> {
        self.0.try_recv().ok()
    }

    /// Waits for the next message; `None` once every [`Inbox`] is gone.
    pub fn recv(&self) -> Option<Message> {
        self.0.recv().ok()
    }

    /// Every health report waiting, the latest of each target.
    pub fn reports(&self) -> Vec<Report> {
        let mut slots = self.1.lock().unwrap_or_else(|e| e.into_inner());
        slots.drain().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::L4Proto;

    fn report(host: u8, up: bool) -> Report {
        Report {
            service: ServiceKey {
                proto: L4Proto::Tcp,
                addr: "192.0.2.10".parse().unwrap(),
                port: 80,
            },
            real: SocketAddr::from(([198, 51, 100, host], 80)),
            up,
            weight: None,
            reason: String::new(),
        }
    }

    /// A full inbox loses no report: the latest of each target waits in
    /// its slot, and one wake-up is posted per batch.
    #[test]
    fn reports_survive_a_full_inbox_and_the_latest_wins() {
        let (inbox, mailbox) = channel();
        for _ in 0..CAPACITY {
            inbox.0.try_send(Message::Health).unwrap();
        }
        inbox.report(report(1, false));
        inbox.report(report(2, false));
        inbox.report(report(1, true));
        let mut got = mailbox.reports();
        got.sort_by_key(|r| r.real);
        assert_eq!(got, [report(1, true), report(2, false)]);
        assert!(mailbox.reports().is_empty());
        // Room again: the first report of a batch posts its wake-up.
        while mailbox.try_recv().is_some() {}
        inbox.report(report(3, false));
        inbox.report(report(4, false));
        assert!(matches!(mailbox.try_recv(), Some(Message::Health)));
        assert!(mailbox.try_recv().is_none());
        assert_eq!(mailbox.reports().len(), 2);
    }
}
