//! Errors of the table operations.

use core::fmt;

use crate::ConnId;

/// Why [`insert`](crate::ConnTable::insert) created nothing.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum InsertError {
    /// The table holds `capacity` entries (or, with a badly skewed hash, the flow's shard reached its limit).
    /// [`drop_entry`](crate::ConnTable::drop_entry) is the kernel's defense.
    Full,
    /// An entry of the same flow exists (the in-lookup identity for conns, the template identity for
    /// templates): of two racing inserts exactly one creates the entry, the other gets its handle.
    Exists(ConnId),
    /// The conn has `ONE_PACKET` set: one-packet-scheduling conns are never inserted (the kernel never hashes
    /// them); the engine forwards the packet and forgets the conn.
    OnePacket,
    /// The controlling conn named in [`NewConn::control`](crate::NewConn::control) no longer exists.
    ControlGone(ConnId),
    /// The addresses are not all of one family, a template or `NO_CPORT` conn has a nonzero client port, or
    /// the destination is the reserved `DestId(u32::MAX)`.
    Invalid,
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("connection table full"),
            Self::Exists(id) => write!(f, "connection exists ({id})"),
            Self::OnePacket => f.write_str("one-packet conns are not inserted"),
            Self::ControlGone(id) => write!(f, "controlling connection {id} is gone"),
            Self::Invalid => f.write_str("invalid connection (mixed address families or bad ports)"),
        }
    }
}

impl core::error::Error for InsertError {}

/// Why [`remove`](crate::ConnTable::remove) or [`expire`](crate::ConnTable::expire) removed nothing.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum RemoveError {
    /// The handle is stale: the conn is already gone.
    Stale,
    /// The conn controls this many conns; the kernel would postpone its expiry ("expire later"), and so the
    /// table leaves it in place.
    Controlling(u32),
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale => f.write_str("stale connection handle"),
            Self::Controlling(n) => write!(f, "connection controls {n} others"),
        }
    }
}

impl core::error::Error for RemoveError {}

/// Why [`fill_cport`](crate::ConnTable::fill_cport) changed nothing.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum FillCportError {
    /// The handle is stale.
    Stale,
    /// The conn does not have `NO_CPORT` set, or the new port is 0.
    NotNoCport,
    /// The conn controls others (their links name its handle, which moving would change).
    Controlling(u32),
    /// A conn with the completed flow exists already.
    Exists(ConnId),
    /// The target shard is at its limit.
    Full,
}

impl fmt::Display for FillCportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale => f.write_str("stale connection handle"),
            Self::NotNoCport => f.write_str("connection has a client port already"),
            Self::Controlling(n) => write!(f, "connection controls {n} others"),
            Self::Exists(id) => write!(f, "connection exists ({id})"),
            Self::Full => f.write_str("shard full"),
        }
    }
}

impl core::error::Error for FillCportError {}
