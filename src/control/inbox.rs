//! The daemon's inbox: the one way other threads reach the model.
//!
//! Every thread that wants something of the daemon posts a [`Message`]
//! through a cloneable [`Inbox`] and waits on the message's own reply
//! channel; the daemon thread takes messages from its [`Mailbox`] between
//! rounds and answers each. Nothing else reads or changes the service
//! model, so no lock guards it.
//!
//! Today's senders: the control socket (an `xvs ipvsadm` request) and the
//! metrics endpoint (a scrape). Meant to come: health checkers ("real
//! server up/down") and connection sync ("connections to install"), each
//! as a variant of its own once it exists.
//!
//! The inbox is bounded ([`CAPACITY`]): a sender waits for room until its
//! deadline, so a stuck daemon turns into timely errors, not memory.

use std::time::Instant;

use crossbeam::channel::{bounded, Receiver, Sender};

use super::metrics::Scrape;
use super::protocol::{Request, Response};

/// Messages waiting for the daemon at most.
pub const CAPACITY: usize = 64;

/// Work for the daemon thread, each with the channel its answer goes to.
///
/// Senders now: the control socket ([`Message::Ipvsadm`]) and the metrics
/// endpoint ([`Message::Scrape`]). To come, each with a variant of its own
/// when it exists: health checkers (a real server is up or down) and
/// connection sync (connections to install on a backup).
pub enum Message {
    /// An `xvs ipvsadm` invocation, from the control socket.
    Ipvsadm {
        request: Request,
        reply: Sender<Response>,
    },
    /// A metrics scrape: the numbers, which the metrics endpoint encodes.
    Scrape { reply: Sender<Scrape> },
}

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
pub struct Inbox(Sender<Message>);

/// The daemon's end.
pub struct Mailbox(Receiver<Message>);

/// A new inbox and the mailbox its messages arrive at.
pub fn channel() -> (Inbox, Mailbox) {
    let (tx, rx) = bounded(CAPACITY);
    (Inbox(tx), Mailbox(rx))
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
}
