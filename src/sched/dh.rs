//! Destination hashing (`dh`): the destination address picks one of IPVS's
//! 256 buckets, assigned to the servers round-robin in list order (weights
//! are not used, as in IPVS). The hash is IPVS's: `fold(addr) * 2654435761`,
//! low 8 bits. An unavailable hashed server refuses the connection.
//!
//! dh is meant for services whose destination varies (transparent caches
//! behind a firewall mark); for a plain VIP every client hashes alike.

use super::{ipvs_fold, usable};
use crate::packet::FlowKey;
use crate::service::{RealLoads, RealServer};

/// IPVS's `IP_VS_DH_TAB_BITS` default.
const TAB_SIZE: usize = 1 << 8;
const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct Dh {
    buckets: [u32; TAB_SIZE],
}

fn hashkey(key: &FlowKey) -> usize {
    (ipvs_fold(&key.dst).wrapping_mul(2_654_435_761) as usize) & (TAB_SIZE - 1)
}

impl Dh {
    pub fn new(reals: &[RealServer]) -> Dh {
        let mut buckets = [EMPTY; TAB_SIZE];
        if !reals.is_empty() {
            for (i, b) in buckets.iter_mut().enumerate() {
                *b = (i % reals.len()) as u32;
            }
        }
        Dh { buckets }
    }

    pub fn schedule(
        &self,
        reals: &[RealServer],
        key: &FlowKey,
        loads: &RealLoads,
    ) -> Option<usize> {
        usable(self.buckets[hashkey(key)] as usize, reals, loads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testutil::*;
    use crate::service::SchedulerKind;
    use std::net::IpAddr;

    #[test]
    fn destination_address_picks_the_bucket() {
        let svc = service(SchedulerKind::Dh, &[1, 9, 1]);
        let d = loads(3);
        let dh = Dh::new(&svc.reals);
        let mut key = client_key(1);
        // 203.0.113.1 = 0xcb007101; * 2654435761 mod 2^8 = 0xb1 = 177 -> 177 % 3 = 0.
        assert_eq!(hashkey(&key), 0xb1);
        assert_eq!(dh.schedule(&svc.reals, &key, &d), Some(0));
        // The client does not matter, the destination does.
        for n in 0..50 {
            assert_eq!(dh.schedule(&svc.reals, &client_key(n), &d), Some(0));
        }
        key.dst = "203.0.113.2".parse::<IpAddr>().unwrap();
        // 0xcb007102 * 0x9e3779b1: low byte of 0x02 * 0xb1 + 0xb1 = 0x62 = 98 -> 2.
        assert_eq!(dh.schedule(&svc.reals, &key, &d), Some(2));
        set_overloaded(&d, 2, true);
        assert_eq!(dh.schedule(&svc.reals, &key, &d), None);
    }
}
