//! What the pipeline tells the world: a bounded outbox of [`Event`]s, in
//! quinn-proto's `poll_*` style. The pipeline calls out to no one; it
//! leaves events here, and its owner drains them with
//! [`super::Pipeline::poll_event`] once per batch and hands them on
//! without blocking.
//!
//! - Resolve requests (a next hop without a MAC) sit in a ring of
//!   [`RESOLVE_SLOTS`] distinct addresses: when the control plane is slow
//!   the oldest is overwritten, which only delays its resolution.
//! - Connection events (opened, state changed, closed) are opt-in
//!   ([`super::Pipeline::set_conn_events`], off by default: the hot path
//!   then pays one branch on a flag). They carry what a backup director
//!   needs to install, refresh or remove the connection
//!   ([`crate::conntrack::ConnTable::import`]), and queue in a ring of
//!   [`CONN_EVENTS`] allocated when they are switched on; what does not fit
//!   is refused.
//!
//! Every event lost for want of room counts in
//! [`crate::counters::WorkerCounters::outbox_overflow`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use crate::conntrack::{ConnState, TemplateKey};
use crate::packet::FlowKey;
use crate::service::{ForwardMethod, RealId};

/// Distinct resolve requests the outbox holds.
pub const RESOLVE_SLOTS: usize = 16;
/// Connection events the outbox holds between drains: a batch's frames
/// and an expiry slice (64 buckets of 15 slots) with room to spare.
pub const CONN_EVENTS: usize = 2048;

/// Something the pipeline wants the world to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The next hop `addr` has no MAC yet: have the kernel resolve it.
    Resolve(IpAddr),
    /// This worker placed a new connection.
    Opened(ConnEvent),
    /// A packet moved a connection to another state.
    Changed(ConnEvent),
    /// A connection ended: expired, removed (its real server gone, with
    /// `expire_nodest_conn`), or ended by a SYN reusing its ports. An
    /// expired entry that an insert reuses before the sweep reaches it is
    /// not reported: a backup's copy expires on its own timer.
    Closed(ConnClosed),
}

/// A connection as a backup director needs it (the arguments of
/// [`crate::conntrack::ConnTable::import`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    /// The client→VIP key.
    pub key: FlowKey,
    pub real_id: RealId,
    /// The real server's address and port.
    pub real: SocketAddr,
    pub method: ForwardMethod,
    pub state: ConnState,
    /// Milliseconds left until it expires.
    pub timeout_ms: u64,
    /// The persistence template that placed it (its real server is the
    /// connection's; its timeout the service's persistence timeout).
    pub template: Option<TemplateKey>,
}

/// A connection that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnClosed {
    /// The client→VIP key.
    pub key: FlowKey,
    pub real_id: RealId,
}

/// The pipeline's bounded outbox.
#[derive(Debug)]
pub(super) struct Outbox {
    resolve: [Option<IpAddr>; RESOLVE_SLOTS],
    next: usize,
    /// Empty, with no capacity, while connection events are off.
    conns: VecDeque<Event>,
    conn_events: bool,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox {
            resolve: [None; RESOLVE_SLOTS],
            next: 0,
            conns: VecDeque::new(),
            conn_events: false,
        }
    }

    /// Switches connection events on (allocating their ring) or off.
    pub fn set_conn_events(&mut self, on: bool) {
        self.conn_events = on;
        self.conns = if on {
            VecDeque::with_capacity(CONN_EVENTS)
        } else {
            VecDeque::new()
        };
    }

    #[inline]
    pub fn conn_events(&self) -> bool {
        self.conn_events
    }

    /// Asks for `addr` to be resolved; false if that overwrote an older
    /// request.
    pub fn resolve(&mut self, addr: IpAddr) -> bool {
        if self.resolve.contains(&Some(addr)) {
            return true;
        }
        let slot = &mut self.resolve[self.next % RESOLVE_SLOTS];
        let fresh = slot.is_none();
        *slot = Some(addr);
        self.next = self.next.wrapping_add(1);
        fresh
    }

    /// Queues a connection event; false if there was no room (or
    /// connection events are off).
    pub fn conn(&mut self, e: Event) -> bool {
        if !self.conn_events || self.conns.len() >= CONN_EVENTS {
            return false;
        }
        self.conns.push_back(e);
        true
    }

    /// Takes one pending resolve request.
    pub fn poll_resolve(&mut self) -> Option<IpAddr> {
        self.resolve.iter_mut().find_map(Option::take)
    }

    /// Takes the next event: resolve requests first, then connection
    /// events in the order they happened.
    pub fn poll(&mut self) -> Option<Event> {
        self.poll_resolve()
            .map(Event::Resolve)
            .or_else(|| self.conns.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::L4Proto;

    fn addr(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn closed(port: u16) -> Event {
        Event::Closed(ConnClosed {
            key: FlowKey::new(L4Proto::Tcp, addr(7), port, addr(10), 80),
            real_id: RealId(1),
        })
    }

    #[test]
    fn resolve_requests_are_distinct_and_the_oldest_give_way() {
        let mut o = Outbox::new();
        assert!(o.resolve(addr(1)));
        assert!(o.resolve(addr(1)), "a repeat is no loss");
        for n in 2..=RESOLVE_SLOTS as u8 {
            assert!(o.resolve(addr(n)));
        }
        assert!(!o.resolve(addr(100)), "overwrote the oldest");
        let mut got: Vec<IpAddr> = std::iter::from_fn(|| o.poll_resolve()).collect();
        got.sort();
        let mut want: Vec<IpAddr> = (2..=RESOLVE_SLOTS as u8).map(addr).collect();
        want.push(addr(100));
        want.sort();
        assert_eq!(got, want);
        assert_eq!(o.poll(), None);
    }

    #[test]
    fn connection_events_are_off_until_asked_for_and_bounded() {
        let mut o = Outbox::new();
        assert!(!o.conn(closed(1)));
        assert_eq!(o.poll(), None);
        o.set_conn_events(true);
        for port in 0..CONN_EVENTS as u16 {
            assert!(o.conn(closed(port)));
        }
        assert!(!o.conn(closed(9)), "full");
        o.resolve(addr(1));
        assert_eq!(o.poll(), Some(Event::Resolve(addr(1))), "resolves first");
        assert_eq!(o.poll(), Some(closed(0)), "then in order");
        assert_eq!(std::iter::from_fn(|| o.poll()).count(), CONN_EVENTS - 1);
    }
}
