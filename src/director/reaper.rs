//! The reaper: a thread beside the control loop that expires the
//! connections of deleted real servers (`expire_nodest_conn`), so a `-D`
//! of thousands of real servers costs the loop nothing.
//!
//! # Contract
//! Each [`Reaper::expire`] is one request; requests that come while a sweep
//! runs are taken together in the next, so the table is swept once per
//! batch, not once per server. The thread starts with the first request;
//! if it cannot start, the caller's thread expires them itself.
//! [`Reaper::stop`] lets the thread finish what it was given and joins it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::Sender;

use crate::conntrack::ConnTable;
use crate::service::RealId;
use crate::Millis;

/// The reaper thread, once started.
#[derive(Default)]
pub struct Reaper(Option<(Sender<Vec<RealId>>, JoinHandle<()>)>);

impl Reaper {
    /// Has the connections of `ids` in `conns` expired, `epoch` being the
    /// start of the table's clock.
    pub fn expire(&mut self, conns: &Arc<ConnTable>, epoch: Instant, ids: &[RealId]) {
        if self.0.is_none() {
            let (tx, rx) = crossbeam::channel::unbounded::<Vec<RealId>>();
            let conns_ = Arc::clone(conns);
            let spawned = std::thread::Builder::new()
                .name("xvs-reaper".into())
                .spawn(move || {
                    while let Ok(mut ids) = rx.recv() {
                        while let Ok(more) = rx.try_recv() {
                            ids.extend(more);
                        }
                        let now = Millis(epoch.elapsed().as_millis() as u64);
                        conns_.expire_reals(&ids, now);
                    }
                });
            match spawned {
                Ok(handle) => self.0 = Some((tx, handle)),
                Err(e) => {
                    tracing::warn!("cannot start the reaper thread ({e}); expiring here");
                    conns.expire_reals(ids, Millis(epoch.elapsed().as_millis() as u64));
                    return;
                }
            }
        }
        if let Some((tx, _)) = &self.0 {
            let _ = tx.send(ids.to_vec());
        }
    }

    /// Closes the requests and waits for the thread to finish them.
    pub fn stop(&mut self) {
        if let Some((tx, handle)) = self.0.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}
