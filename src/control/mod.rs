//! The control plane: what `xvs ipvsadm` and the director's control socket
//! speak.
//!
//! [`ipvsadm`] is the pure half: ipvsadm's command line parsed into a
//! [`ipvsadm::Command`], the [`ipvsadm::ServiceModel`] those commands edit
//! (it builds the immutable `ServiceTable` snapshots workers read), and
//! ipvsadm's output formats rendered from plain data. It does no I/O beyond
//! reading `/etc/services` once, for port names.

pub mod ipvsadm;
