//! Schedulers of the Linux Virtual Server, kernel-exact.
//!
//! A [`Scheduler`] picks the real server for a new connection. The engine calls it with the flow being
//! scheduled ([`SchedFlow`]) and a view of the service's destinations **in the kernel's list order** (most
//! recently added first, facts §2.4) — a `&[DestView]` it fills from its own counters. Schedulers are
//! pure: no clock (time comes in as `now`), no global randomness (`twos` draws from a seed in
//! [`SchedConfig`]).
//!
//! One file per algorithm: `rr wrr lc wlc sed nq fo ovf twos dh sh mh lblc lblcr`. [`new_scheduler`]
//! builds one by its ipvsadm name.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

use alloc::boxed::Box;
use core::fmt;
use core::net::SocketAddr;

pub use ipvs_proto;
use ipvs_proto::{DestFlags, DestId, Instant, Protocol, ServiceFlags};

pub mod dest;
pub mod dh;
pub mod fastlc;
pub mod fo;
pub mod hash;
pub mod lblc;
pub mod lblcr;
pub mod lc;
pub mod mh;
pub mod nq;
pub mod ovf;
pub mod replay;
pub mod rr;
pub mod sed;
pub mod sh;
pub mod twos;
pub mod wlc;
pub mod wrr;

pub use dest::{DestState, ThresholdRange};

/// What a scheduler sees of one destination (real server).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct DestView {
    /// The engine's handle for the destination.
    pub id: DestId,
    /// Address and port of the real server (port 0 for fwmark dests without a port).
    pub addr: SocketAddr,
    /// Current weight; 0 = quiescent (no new connections).
    pub weight: u32,
    /// The last non-zero weight (kept across an edit to weight 0; facts §2.2). Used by `mh`.
    pub last_weight: u32,
    /// Connections in an active state (TCP ESTABLISHED, SYN_RECV, …).
    pub active_conns: u32,
    /// Other connections (including every UDP connection).
    pub inactive_conns: u32,
    /// Persistence templates bound to the destination.
    pub persist_conns: u32,
    /// `AVAILABLE` (linked to the service) and `OVERLOAD` (upper threshold reached).
    pub flags: DestFlags,
}

impl DestView {
    /// The kernel's connection overhead: `active × 256 + inactive`.
    pub const fn overhead(&self) -> u64 {
        ((self.active_conns as u64) << 8) + self.inactive_conns as u64
    }

    /// Whether the OVERLOAD flag is set.
    pub const fn is_overloaded(&self) -> bool {
        self.flags.contains(DestFlags::OVERLOAD)
    }

    /// Weight > 0 and not OVERLOAD: what most schedulers require of a pick.
    pub const fn is_schedulable(&self) -> bool {
        self.weight > 0 && !self.is_overloaded()
    }
}

/// The new flow being scheduled.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct SchedFlow {
    /// The transport protocol.
    pub protocol: Protocol,
    /// Client address and port (the packet's source).
    pub client: SocketAddr,
    /// The packet's destination address and port (the VIP, or for fwmark services whatever the client
    /// connected to).
    pub virt: SocketAddr,
    /// The packet's firewall mark.
    pub fwmark: u32,
}

/// How the destination list changed; passed with the new list to [`Scheduler::dests_changed`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum DestEvent {
    /// A destination was added at `index` of the new list (the kernel adds at the head: index 0).
    Added {
        /// Its position in the new list.
        index: usize,
    },
    /// A destination was edited (weight, thresholds, forwarding) in place.
    Updated {
        /// Its position in the list.
        index: usize,
    },
    /// A destination was removed; `index` was its position in the old list.
    Removed {
        /// Its position in the old list.
        index: usize,
        /// Its id.
        id: DestId,
    },
}

/// A connection counter of one destination changed (bind, unbind, active ↔ inactive).
///
/// Schedulers that keep an index over the counters (the O(log n) least-connection family) update it
/// here instead of scanning on every pick.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct CounterChange {
    /// Position of the destination in the list.
    pub index: usize,
}

/// A virtual service's scheduling algorithm.
///
/// Object-safe: the engine keeps a `Box<dyn Scheduler>` per service and calls it under the service's
/// lock. `dests` is always the service's current list in kernel order; the engine passes the same list
/// (with updated counters) to every call.
pub trait Scheduler: fmt::Debug + Send {
    /// The ipvsadm name (`rr`, `wlc`, …).
    fn name(&self) -> &'static str;

    /// Bound to a service whose list is `dests` (the kernel's `init_service`; empty for `ipvsadm -A`).
    fn bind(&mut self, dests: &[DestView]);

    /// The list changed as `event` says; `dests` is the new list.
    fn dests_changed(&mut self, dests: &[DestView], event: DestEvent);

    /// A counter of `dests[change.index]` changed. The default does nothing: scanning schedulers read the
    /// counters at pick time.
    fn counters_changed(&mut self, dests: &[DestView], change: CounterChange) {
        let _ = (dests, change);
    }

    /// Picks the destination for `flow`: an index into `dests`, or `None` when no destination is
    /// available (the kernel's "no destination available").
    fn schedule(&mut self, now: Instant, flow: &SchedFlow, dests: &[DestView]) -> Option<usize>;
}

/// Options that select scheduler behaviour (`ipvsadm -b`, build-time table sizes, seeds).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct SchedConfig {
    /// Service flags: `SCHED1` = `sh-fallback`/`mh-fallback`, `SCHED2` = `sh-port`/`mh-port`.
    pub flags: ServiceFlags,
    /// Maglev table size: a prime; the kernel's default is 4093.
    pub mh_table_size: u32,
    /// `sh` table bits (kernel default 8 → 256 buckets; range 4..=20).
    pub sh_table_bits: u32,
    /// Seed of the `twos` scheduler's random draws.
    pub seed: u64,
    /// lblc/lblcr cache expiration (the `lblc_expiration` sysctl; default 24 h), in milliseconds.
    pub lblc_expiration_ms: u64,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            flags: ServiceFlags::EMPTY,
            mh_table_size: 4093,
            sh_table_bits: 8,
            seed: 0,
            lblc_expiration_ms: 24 * 3600 * 1000,
        }
    }
}

/// An ipvsadm scheduler name this crate does not know.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct UnknownScheduler;

impl fmt::Display for UnknownScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown scheduler name")
    }
}

impl core::error::Error for UnknownScheduler {}

/// The ipvsadm names of every scheduler, in the kernel's documentation order.
pub const SCHEDULER_NAMES: [&str; 14] =
    ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "dh", "sh", "mh", "lblc", "lblcr"];

/// Builds the scheduler called `name` (as ipvsadm's `-s` takes it).
///
/// For `mh`, a `config.mh_table_size` that is not a prime (or is above [`mh::MH_MAX_TABLE_SIZE`]) falls
/// back to the kernel's default 4093; [`mh::new_mh`] reports it as an error instead.
///
/// # Errors
/// [`UnknownScheduler`] for a name not in [`SCHEDULER_NAMES`].
pub fn new_scheduler(name: &str, config: &SchedConfig) -> Result<Box<dyn Scheduler>, UnknownScheduler> {
    Ok(match name {
        "rr" => Box::new(rr::RoundRobin::new()),
        "wrr" => Box::new(wrr::WeightedRoundRobin::new()),
        "lc" => Box::new(lc::LeastConnection::new()),
        "wlc" => Box::new(wlc::WeightedLeastConnection::new()),
        "sed" => Box::new(sed::ShortestExpectedDelay::new()),
        "nq" => Box::new(nq::NeverQueue::new()),
        "fo" => Box::new(fo::WeightedFailover),
        "ovf" => Box::new(ovf::WeightedOverflow),
        "twos" => Box::new(twos::TwoChoices::new(config.seed)),
        "dh" => Box::new(dh::Dh::new()),
        "sh" => Box::new(sh::Sh::new(config)),
        // A bad `mh_table_size` falls back to the kernel's default 4093; `mh::new_mh` reports it instead.
        "mh" => Box::new(mh::Mh::new(config).unwrap_or_else(|_| {
            let default = SchedConfig { mh_table_size: mh::MH_DEFAULT_TABLE_SIZE, ..*config };
            mh::Mh::new(&default).expect("4093 is a prime below the limit")
        })),
        "lblc" => Box::new(lblc::Lblc::new(config)),
        "lblcr" => Box::new(lblcr::Lblcr::new(config)),
        _ => return Err(UnknownScheduler),
    })
}
