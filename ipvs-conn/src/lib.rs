//! The IPVS connection table.
//!
//! This crate will hold the lock-sharded, keyed-hash connection table with persistence templates,
//! controlled connections, a hierarchical timer wheel driven by the caller's `now`, bounded capacity
//! with the kernel's `drop_entry` defense, and a per-core unshared variant with a burst lookup.
//!
//! Status: stub; see issue 3.
#![deny(unsafe_code)]

pub use ipvs_proto;
