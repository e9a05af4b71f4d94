//! The IPVS connection-synchronisation protocol.
//!
//! This crate will hold the version 0 and version 1 codec (byte-compatible with Linux), the sans-IO
//! master (`poll_transmit`/`poll_timeout`) and the backup (`handle_datagram`). It is table-agnostic:
//! records go in and out, and `ipvs-core` applies them to its table.
//!
//! Status: stub; see issue 5.
#![no_std]
#![forbid(unsafe_code)]

pub use ipvs_proto;
