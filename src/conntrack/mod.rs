//! The connection table (see issue: lock-free, IPVS TCP states).
