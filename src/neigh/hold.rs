//! Frames waiting for a next hop's MAC, as the kernel queues packets on an
//! unresolved neighbour (`unres_qlen`).
//!
//! The pipeline rewrites such a frame completely but for its destination
//! MAC and says where it goes ([`crate::verdict::Verdict::Hold`]); the
//! worker parks it here. Each new next-hop snapshot releases the frames
//! whose neighbour it resolves, in arrival order; a frame that waited
//! longer than the bound (the kernel gives up on a neighbour after about
//! three seconds of probes) or that finds the queue full is dropped, and
//! the caller counts it. Pure: no I/O, no clock (the caller passes `now`),
//! generic over what a frame is, so tests drive it with plain values.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::{NextHop, NextHops, PortId};
use crate::Millis;

/// Frames one worker holds at most (the kernel's default `unres_qlen_bytes`
/// is about 100 full-size frames per neighbour; a worker holds for all).
pub const HOLD_FRAMES: usize = 256;
/// How long a frame waits for its neighbour before it is dropped.
pub const HOLD_MS: u64 = 3000;

/// Frames waiting for their next hop, oldest first.
#[derive(Debug)]
pub struct HoldQueue<T> {
    held: VecDeque<Held<T>>,
    limit: usize,
    max_wait: u64,
}

#[derive(Debug)]
struct Held<T> {
    frame: T,
    port: PortId,
    next_hop: IpAddr,
    since: Millis,
}

impl<T> HoldQueue<T> {
    /// Room for `limit` frames, each kept at most `max_wait_ms`.
    pub fn new(limit: usize, max_wait_ms: u64) -> HoldQueue<T> {
        HoldQueue {
            held: VecDeque::with_capacity(limit),
            limit,
            max_wait: max_wait_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Parks `frame`, to leave by `port` once `next_hop` is resolved; gives
    /// it back when the queue is full.
    pub fn hold(&mut self, frame: T, port: PortId, next_hop: IpAddr, now: Millis) -> Result<(), T> {
        if self.held.len() >= self.limit {
            return Err(frame);
        }
        self.held.push_back(Held {
            frame,
            port,
            next_hop,
            since: now,
        });
        Ok(())
    }

    /// Hands every frame whose next hop `hops` resolves (toward the port it
    /// was rewritten for) to `send`, in arrival order; the rest wait.
    pub fn release(&mut self, hops: &NextHops, mut send: impl FnMut(T, NextHop)) {
        // One turn of the queue in place: what waits on goes to the back,
        // in its order, and nothing is allocated.
        for _ in 0..self.held.len() {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            match hops.resolve(h.next_hop) {
                Ok(hop) if hop.port == h.port => send(h.frame, hop),
                _ => self.held.push_back(h),
            }
        }
    }

    /// Hands every frame that has waited longer than the bound to `drop`.
    pub fn expire(&mut self, now: Millis, mut drop: impl FnMut(T)) {
        while let Some(h) = self.held.front() {
            if now.0.saturating_sub(h.since.0) <= self.max_wait {
                break;
            }
            if let Some(h) = self.held.pop_front() {
                drop(h.frame);
            }
        }
    }

    /// Empties the queue (at exit: the frames go back to the free list).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.held.drain(..).map(|h| h.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neigh::Route;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hops(neighbours: &[(&str, [u8; 6])]) -> NextHops {
        NextHops::new(
            vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            vec![
                Route {
                    net: ip("192.0.2.0"),
                    prefix_len: 24,
                    port: 0,
                    via: None,
                },
                Route {
                    net: ip("198.51.100.0"),
                    prefix_len: 24,
                    port: 1,
                    via: None,
                },
            ],
            neighbours.iter().map(|(a, m)| (ip(a), *m)).collect(),
        )
    }

    #[test]
    fn frames_leave_in_order_once_their_neighbour_is_known() {
        let mut q = HoldQueue::new(8, 3000);
        q.hold(1, 0, ip("192.0.2.7"), Millis(0)).unwrap();
        q.hold(2, 1, ip("198.51.100.9"), Millis(1)).unwrap();
        q.hold(3, 0, ip("192.0.2.7"), Millis(2)).unwrap();
        let mut sent = Vec::new();
        q.release(&hops(&[]), |f, h| sent.push((f, h)));
        assert!(sent.is_empty());
        let mac = [2, 0, 0, 0, 9, 7];
        q.release(&hops(&[("192.0.2.7", mac)]), |f, h| sent.push((f, h)));
        let hop = NextHop {
            port: 0,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: mac,
        };
        assert_eq!(sent, [(1, hop), (3, hop)]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_neighbour_on_another_port_does_not_release() {
        let mut q = HoldQueue::new(8, 3000);
        // Rewritten for port 1, but the snapshot now routes it out of port 0.
        q.hold(1, 1, ip("192.0.2.7"), Millis(0)).unwrap();
        let mut sent = 0;
        q.release(&hops(&[("192.0.2.7", [2, 0, 0, 0, 9, 7])]), |_, _| {
            sent += 1
        });
        assert_eq!((sent, q.len()), (0, 1));
    }

    #[test]
    fn bounded_in_frames_and_in_time() {
        let mut q = HoldQueue::new(2, 3000);
        q.hold(1, 0, ip("192.0.2.7"), Millis(0)).unwrap();
        q.hold(2, 0, ip("192.0.2.8"), Millis(1000)).unwrap();
        assert_eq!(q.hold(3, 0, ip("192.0.2.9"), Millis(1000)), Err(3));
        let mut dropped = Vec::new();
        q.expire(Millis(3000), |f| dropped.push(f));
        assert!(dropped.is_empty());
        q.expire(Millis(3001), |f| dropped.push(f));
        assert_eq!(dropped, [1]);
        q.expire(Millis(4001), |f| dropped.push(f));
        assert_eq!(dropped, [1, 2]);
        assert!(q.is_empty());
        q.hold(4, 0, ip("192.0.2.9"), Millis(4001)).unwrap();
        assert_eq!(q.drain().collect::<Vec<_>>(), [4]);
    }
}
