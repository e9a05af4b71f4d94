//! The IPVS director engine.
//!
//! This crate composes `ipvs-proto`, `ipvs-sched`, `ipvs-conn` and `ipvs-sync` into the kernel's data plane,
//! sans-IO: the embedder hands it packets and the time, and gets verdicts and rewritten packets back. It reads
//! no clock and does no I/O.
//!
//! - **Control plane** ([`Engine::add_service`], [`Engine::add_dest`], … or [`Engine::apply`] with the
//!   [`Command`]s [`ipvsadm::parse_rules`] reads): virtual services and real servers with ipvsadm's semantics,
//!   removed real servers kept in a trash while conns use them, `--set` timeouts.
//! - **Packet path** ([`Engine::handle_packet`], [`Engine::handle_burst`]): a [`PacketBuf`] in, a [`Verdict`]
//!   out — forward (NAT rewrite or tunnel encapsulation already applied in the buffer), deliver locally, pass,
//!   drop with a counted [`DropReason`], or send the ICMP error now in the buffer.
//! - **Timers and events** ([`Engine::poll_timeout`], [`Engine::handle_timeout`], [`Engine::poll_event`]):
//!   connection expiry, the defense step, the rate estimators, the trash.
//! - **Persistence engines**: `--pe sip` ([`pe_sip`]): per-call templates keyed by the SIP Call-ID, calls started
//!   by real servers, Call-IDs synced and listed ([`EngineConfig::sip_persistence_engine`] turns it off).
//! - **Listings** ([`Engine::conns`], [`Engine::listing_snapshot`] for [`ipvsadm`]'s renderers).
//! - **Connection sync** with the kernel's protocol ([`sync`] = `ipvs-sync`): a master fed by the packet path
//!   ([`Engine::start_sync_master`], [`Engine::poll_sync_transmit`]) and a backup that applies what it hears
//!   ([`Engine::start_sync_backup`], [`Engine::handle_sync_datagram`], [`Engine::apply_sync`]), so a backup
//!   director takes over the conns of a failed master; the embedder owns the sockets ([`sync_glue`] says how,
//!   and what of the kernel is not reproduced).
//!
//! ```no_run
//! use ipvs_core::proto::{FwdMethod, Instant, Protocol, ServiceKey};
//! use ipvs_core::{DestConfig, Direction, Engine, EngineConfig, PacketBuf, ServiceConfig, Verdict};
//! # struct Tun;
//! # impl Tun {
//! #     fn recv(&mut self, _buf: &mut [u8]) -> usize { 0 }
//! #     fn send(&mut self, _pkt: &[u8]) {}
//! #     fn wait_until(&mut self, _t: Option<Instant>) {}
//! # }
//! # fn clock() -> Instant { Instant::ZERO }
//! # let mut tun = Tun;
//!
//! let engine = Engine::new(EngineConfig::new(1 << 20, [0x5a; 16]))?; // pick the hash key at random
//! let vip = ServiceKey::Addr { protocol: Protocol::Tcp, addr: "10.0.2.100:80".parse()? };
//! engine.add_service(clock(), ServiceConfig::new(vip))?;
//! engine.add_dest(clock(), &vip, DestConfig::new("10.1.0.1:8080".parse()?, FwdMethod::Masq))?;
//!
//! let mut data = vec![0u8; 64 + 65535]; // 64 bytes of headroom for tunnel headers and ICMP errors
//! loop {
//!     let n = tun.recv(&mut data[64..]);
//!     let now = clock();
//!     let mut buf = PacketBuf::new(&mut data, 64, n)?;
//!     match engine.handle_packet(now, &mut buf, Direction::FromClient) {
//!         Verdict::Forward { .. } | Verdict::SendIcmp { .. } => tun.send(buf.packet()),
//!         Verdict::Local | Verdict::Pass => { /* hand it to the local stack */ }
//!         Verdict::Drop(_reason) => {}
//!     }
//!     engine.handle_timeout(clock());
//!     while let Some(event) = engine.poll_event() {
//!         println!("{event:?}");
//!     }
//!     tun.wait_until(engine.poll_timeout());
//! }
//! # #[allow(unreachable_code)]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod config;
mod control_hash;
pub mod defense;
mod engine;
mod events;
mod forward;
pub mod ipvsadm;
pub mod pe_sip;
mod persistence;
mod pipeline;
pub mod replay_states;
mod service;
pub mod slow_start;
pub mod stats;
// `sync` is the name of the re-exported ipvs-sync crate; the glue's file is still sync.rs.
#[path = "sync.rs"]
pub mod sync_glue;
mod verdict;

pub use config::{
    Command, ConfigError, DestConfig, Persistence, RuleSet, ServiceConfig, SyncDaemonConfig, SyncState, Timeouts,
    TunnelConfig, TunnelCsum, TunnelKind,
};
pub use engine::{
    ConnInfo, DestInfo, Engine, EngineConfig, EngineError, ProtoTimeouts, ServiceInfo, SyncFeed, Sysctls,
};
pub use events::Event;
pub use sync_glue::{SyncApplied, SyncDaemonEvent, SyncInput, SyncMasterOptions};
pub use verdict::{Direction, DropCounts, DropReason, IcmpKind, PacketBuf, PacketRangeError, Verdict};

pub use ipvs_conn as conn;
pub use ipvs_proto as proto;
pub use ipvs_sched as sched;
pub use ipvs_sync as sync;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
