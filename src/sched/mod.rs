//! Schedulers: one file per IPVS scheduler, one `Scheduler` trait.
