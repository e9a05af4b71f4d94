//! The IPVS director engine.
//!
//! This crate will compose `ipvs-proto`, `ipvs-sched`, `ipvs-conn` and `ipvs-sync` into the kernel's data
//! plane, sans-IO: the embedder hands it packets and the time, and gets verdicts and rewritten packets back.
//! For now it re-exports the four crates it is built from.
//!
//! Status: stub; see issue 6.
#![forbid(unsafe_code)]

pub mod config;
pub mod defense;
mod engine;
mod events;
mod forward;
mod persistence;
mod pipeline;
pub mod replay_states;
mod service;
mod verdict;
pub mod ipvsadm;
pub mod slow_start;
pub mod stats;

pub use config::{
    Command, ConfigError, DestConfig, Persistence, RuleSet, ServiceConfig, SyncDaemonConfig, SyncState, Timeouts,
    TunnelConfig, TunnelCsum, TunnelKind,
};
pub use engine::{
    ConnInfo, DestInfo, Engine, EngineConfig, EngineError, ProtoTimeouts, ServiceInfo, SyncFeed, Sysctls,
};
pub use events::Event;
pub use verdict::{Direction, DropCounts, DropReason, IcmpKind, PacketBuf, PacketRangeError, Verdict};

pub use ipvs_conn as conn;
pub use ipvs_proto as proto;
pub use ipvs_sched as sched;
pub use ipvs_sync as sync;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
