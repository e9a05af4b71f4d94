//! The shared vocabulary of the IPVS crates, the wire layer and the protocol state machines.
//!
//! `ipvs-proto` is the leaf of the workspace: every other crate speaks its types. It is `no_std` + `alloc`,
//! reads no clock and does no I/O.
//!
//! Layers:
//! - **Vocabulary** ([`time`], [`Protocol`], [`FlowKey`], [`ServiceKey`], [`ConnFlags`], [`FwdMethod`],
//!   [`DestId`]): the caller's clock as plain milliseconds, wire numbers with `Unknown(u8)` arms, and the
//!   kernel's flag bit values.
//! - **Wire** ([`wire`]): zero-copy `Packet<T: AsRef<[u8]>>` views (`new_checked` for untrusted input) and
//!   owned `Repr`s (`parse`/`emit`) for IPv4, IPv6, TCP, UDP, SCTP, ICMPv4/ICMPv6 and the IPIP/GUE/GRE
//!   encapsulations, plus Internet checksums (full and RFC 1624 incremental) and CRC32c.
//! - **NAT** ([`nat`]): in-place address/port rewrites with incremental checksum updates, for the packet
//!   itself and for the packet embedded in an ICMP error, and encapsulation into caller-provided headroom.
//! - **State** ([`state`]): the kernel's TCP (normal and `secure_tcp`), UDP and SCTP state tables as pure
//!   functions, with per-state timeouts.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod flags;
mod flow;
pub mod nat;
mod protocol;
pub mod state;
pub mod time;
pub mod wire;

#[doc(hidden)]
pub mod fuzzing;

pub use flags::{ConnFlags, DestFlags, DestId, FwdMethod, ServiceFlags};
pub use flow::{FlowKey, ServiceKey};
pub use protocol::{AddressFamily, Protocol};
pub use time::{Duration, Instant};
