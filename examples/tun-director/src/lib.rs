//! `tun-director`: a real IPVS director on a Linux TUN device, built on `ipvs-core`.
//!
//! The program (`src/main.rs`) is a thin shell over this library, so tests drive the same code in-process:
//!
//! - [`director::Director`] owns the [`ipvs_core::Engine`] and everything that is not I/O: loading
//!   `ipvsadm-save` rules atomically ([`director::Director::apply_rules`]), answering `ctl` requests with
//!   ipvsadm's exact text ([`ctl::handle`]), deciding which side a packet read from the TUN
//!   device came from and what to do with the verdict ([`director::Director::process`]), health-check
//!   results ([`director::Director::set_health`]) and the Prometheus text ([`metrics::render`]).
//! - The I/O lives in [`run`] (TUN device, threads, clock), [`ctl`] (the Unix control socket), [`sync`]
//!   (multicast sockets of the sync daemons), [`health`] (TCP / HTTP checks) and [`metrics`] (the HTTP
//!   responder). They only move bytes between the OS and the director.
//!
//! # What this director forwards
//!
//! - **NAT (`-m`)**: fully. Client packets routed into the TUN device are rewritten to the real server and
//!   written back, so the kernel routes them on; the real servers' replies are steered back into the device
//!   (policy routing, see the README) and written back with the virtual address as source.
//! - **Tunnelling (`-i`, IPIP/GUE/GRE)**: the encapsulated packet is written back to the device and the kernel
//!   routes it to the real server; replies go from the real server to the client directly.
//! - **Direct routing (`-g`, ipvsadm's default)**: refused when the rule is loaded — a TUN device has no
//!   layer 2, so there is no way to hand a packet to the real server's MAC address unchanged.
//! - **Firewall-mark services (`-f`)**: a TUN device carries no packet mark; `run --tun-fwmark MARK` gives
//!   every packet read from the device that mark.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod ctl;
pub mod director;
pub mod health;
pub mod listing;
pub mod metrics;
pub mod run;
pub mod sync;

pub use director::{Action, Director, DirectorOptions};
