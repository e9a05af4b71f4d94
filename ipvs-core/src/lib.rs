//! The IPVS director engine.
//!
//! This crate will compose `ipvs-proto`, `ipvs-sched`, `ipvs-conn` and `ipvs-sync` into the kernel's data
//! plane, sans-IO: the embedder hands it packets and the time, and gets verdicts and rewritten packets back.
//! For now it re-exports the four crates it is built from.
//!
//! Status: stub; see issue 6.
#![forbid(unsafe_code)]

pub use ipvs_conn as conn;
pub use ipvs_proto as proto;
pub use ipvs_sched as sched;
pub use ipvs_sync as sync;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
