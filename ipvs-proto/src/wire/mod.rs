//! The wire layer: zero-copy packet views and owned representations.
//!
//! Each header module defines a `Packet<T: AsRef<[u8]>>` view over a buffer and a small owned `Repr`:
//! - `Packet::new_checked(buf)` validates lengths so that no accessor can panic afterwards; use it for
//!   every untrusted buffer. `Packet::new_unchecked` is for emission into a buffer the caller sized.
//! - Getters live on `impl<T: AsRef<[u8]>>`, setters on `impl<T: AsRef<[u8]> + AsMut<[u8]>>`.
//! - `Repr::parse(&packet)` validates semantics; `repr.buffer_len()` says how much `emit` writes;
//!   `emit` never panics on a buffer exactly `buffer_len()` long.
//!
//! Malformed input is an [`Error`]: a packet is either understood or dropped, so the error carries no
//! data. Callers count drops by their own reason.

use core::fmt;

pub mod checksum;
pub mod encap;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod sctp;
pub mod tcp;
pub mod udp;

pub use icmpv4::{Packet as Icmpv4Packet, Repr as Icmpv4Repr};
pub use icmpv6::{Packet as Icmpv6Packet, Repr as Icmpv6Repr};
pub use ipv4::{Packet as Ipv4Packet, Repr as Ipv4Repr};
pub use ipv6::{Packet as Ipv6Packet, Repr as Ipv6Repr};
pub use sctp::{Packet as SctpPacket, Repr as SctpRepr};
pub use tcp::{Packet as TcpPacket, Repr as TcpRepr};
pub use udp::{Packet as UdpPacket, Repr as UdpRepr};

/// A malformed or unsupported packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Error;

/// The wire layer's result.
pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed packet")
    }
}

impl core::error::Error for Error {}
