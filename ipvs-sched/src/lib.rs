//! Schedulers of the Linux Virtual Server, kernel-exact.
//!
//! This crate will hold the object-safe `Scheduler` trait and one file per kernel algorithm
//! (`rr`, `wrr`, `lc`, `wlc`, `sed`, `nq`, `fo`, `ovf`, `twos`, `dh`, `sh`, `mh`, `lblc`, `lblcr`).
//! Schedulers are pure: a flow and a view of the service's destinations go in, a destination comes out.
//! Randomness (`twos`) and time (`lblc`/`lblcr` expiry) are supplied by the caller.
//!
//! Status: stub; see issue 4.
#![no_std]
#![forbid(unsafe_code)]

pub use ipvs_proto;
