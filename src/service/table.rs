//! The immutable snapshot of every virtual service that workers read.
//!
//! The control plane builds a new [`ServiceTable`] for every change
//! ([`super::ServiceModel::snapshot`]) and publishes it; workers only read
//! it, and find a packet's service and a connection's real server in it
//! without allocating or locking. It is the scheduling view of the model
//! ([`super::ServiceModel::view`]): a real server's `weight` here is the
//! weight it schedules with, the one the operator gave it (or a dynamic
//! check), or 0 while its [`super::Health`] is down (no new connections,
//! its established ones go on, as with weight 0); a down server its
//! service removes is not here, a sorry server in use is.

use std::collections::HashMap;

use super::{RealId, RealServer, ServiceKey, VirtualService};

/// Index of a service inside one [`ServiceTable`] snapshot.
pub type ServiceIndex = u32;

/// An immutable snapshot of every virtual service, indexed by service key
/// and by real-server id (built once, with the snapshot).
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    services: Vec<VirtualService>,
    by_key: HashMap<ServiceKey, ServiceIndex>,
    /// Real server id → (its service, its place in the service's list).
    by_real: HashMap<RealId, (ServiceIndex, usize)>,
}

/// Up to this many services `find` scans the array: with the few services
/// a director usually has, that beats hashing the key of every packet.
const SCAN_MAX: usize = 8;

impl ServiceTable {
    pub fn new(services: Vec<VirtualService>) -> ServiceTable {
        let mut by_key = HashMap::with_capacity(services.len());
        let mut by_real = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            by_key.entry(s.key).or_insert(i as ServiceIndex);
            for (j, r) in s.reals.iter().enumerate() {
                by_real.entry(r.id).or_insert((i as ServiceIndex, j));
            }
        }
        ServiceTable {
            services,
            by_key,
            by_real,
        }
    }

    pub fn services(&self) -> &[VirtualService] {
        &self.services
    }

    pub fn service(&self, index: ServiceIndex) -> Option<&VirtualService> {
        self.services.get(index as usize)
    }

    /// The service a packet to `(proto, addr, port)` belongs to: a scan of
    /// the array for a few services, the index for more.
    #[inline]
    pub fn find(&self, key: &ServiceKey) -> Option<(ServiceIndex, &VirtualService)> {
        let i = if self.services.len() <= SCAN_MAX {
            self.services.iter().position(|s| s.key == *key)?
        } else {
            *self.by_key.get(key)? as usize
        };
        Some((i as ServiceIndex, &self.services[i]))
    }

    /// Where real server `id` is in service `si`'s list, if it is there: a
    /// scan for a few real servers, the index for more.
    #[inline]
    pub fn real_position(&self, si: ServiceIndex, id: RealId) -> Option<usize> {
        let reals = &self.services.get(si as usize)?.reals;
        if reals.len() <= SCAN_MAX {
            reals.iter().position(|r| r.id == id)
        } else {
            self.by_real
                .get(&id)
                .filter(|(i, _)| *i == si)
                .map(|&(_, j)| j)
        }
    }

    /// The real server with this id, and the service it belongs to.
    pub fn real(&self, id: RealId) -> Option<(ServiceIndex, &RealServer)> {
        let &(i, j) = self.by_real.get(&id)?;
        Some((i, self.services.get(i as usize)?.reals.get(j)?))
    }
}
