//! The order in which a change of the virtual services reaches the data
//! plane: the workers' snapshot first, then the steering programs' maps,
//! then the next hops it will need.
//!
//! A frame is redirected to a worker only once its (protocol, VIP, port)
//! or NAT real server is in the programs' maps; storing the snapshot
//! before the maps means a worker never gets a frame of a service it does
//! not know. If the maps cannot be updated the new snapshot stays (the
//! daemon then publishes the previous services again) and nothing is
//! resolved ahead.

use super::DirectorError;

/// Where a publication goes; the [`Director`](super::Director), a
/// recording fake in tests.
pub(crate) trait Targets {
    /// Stores a new snapshot of the current services for the workers.
    fn store_snapshot(&mut self);
    /// Makes the steering programs' maps match the current services.
    fn sync_maps(&mut self) -> Result<(), DirectorError>;
    /// Asks the kernel for the next hops the services will send to.
    fn resolve_ahead(&self);
}

/// Publishes the current services to `targets`, in the order above.
pub(crate) fn services(targets: &mut impl Targets) -> Result<(), DirectorError> {
    targets.store_snapshot();
    targets.sync_maps()?;
    targets.resolve_ahead();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder {
        steps: RefCell<Vec<&'static str>>,
        maps_fail: bool,
    }

    impl Targets for Recorder {
        fn store_snapshot(&mut self) {
            self.steps.borrow_mut().push("snapshot");
        }
        fn sync_maps(&mut self) -> Result<(), DirectorError> {
            self.steps.borrow_mut().push("maps");
            if self.maps_fail {
                return Err(DirectorError("updating the XDP map services failed".into()));
            }
            Ok(())
        }
        fn resolve_ahead(&self) {
            self.steps.borrow_mut().push("resolve");
        }
    }

    #[test]
    fn the_snapshot_goes_before_the_maps() {
        let mut r = Recorder::default();
        assert!(services(&mut r).is_ok());
        assert_eq!(*r.steps.borrow(), ["snapshot", "maps", "resolve"]);
    }

    #[test]
    fn a_failed_map_update_stops_the_publication_there() {
        let mut r = Recorder {
            maps_fail: true,
            ..Recorder::default()
        };
        let e = services(&mut r).unwrap_err();
        assert_eq!(e.to_string(), "updating the XDP map services failed");
        assert_eq!(*r.steps.borrow(), ["snapshot", "maps"]);
    }
}
