//! Protocol state machines: the kernel's TCP (normal and `secure_tcp`), UDP and SCTP state tables as pure
//! functions, with per-state timeouts.
//!
//! Nothing here touches a connection. The engine looks a packet's conn up, picks the [`Direction`] with
//! [`direction`], derives the protocol event from the packet ([`tcp::event_from_flags`],
//! [`sctp::event_from_chunks`]), asks for the [`Transition`] and then applies its side effects itself:
//! the new state, the destination's active/inactive counters and the conn's `INACTIVE` flag, the controlling
//! template's `ASSURED` state, and the idle timeout of the new state (reassigned on *every* packet, changed
//! or not).
//!
//! Every table is a `pub const` array indexed `[direction][event][current state]`, so it can be inspected
//! and tested cell by cell.
//!
//! Port reuse (`conn_reuse_mode`): a new connection's first packet (a TCP SYN, an SCTP INIT) that hits an
//! old conn in a closing state expires that conn and schedules a fresh one, which starts from NONE. See
//! [`tcp_reuse_on_syn`], [`sctp_reuse_on_init`] and the mode-aware [`tcp_expects_new_conn`] and
//! [`sctp_expects_new_conn`].

use crate::ConnFlags;

pub mod sctp;
pub mod tcp;
pub mod udp;

pub use sctp::{SctpEvent, SctpState, SctpTimeouts};
pub use tcp::{TcpEvent, TcpState, TcpTimeouts};
pub use udp::{UdpState, UdpTimeouts};

#[cfg(test)]
mod tests;

/// Which way a packet travels relative to its conn, selecting the third of the state table to use
/// (the kernel's `IP_VS_DIR_*`, with the same values).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[repr(u8)]
pub enum Direction {
    /// Client → server, seen by the "in" hook (0).
    Input = 0,
    /// Server → client, seen by the "out" hook; only NAT conns see these (1).
    Output = 1,
    /// Client → server on a conn that has never seen a reply ([`ConnFlags::NOOUTPUT`]: DR, TUN, local) (2).
    InputOnly = 2,
}

impl Direction {
    /// The three directions, in numeric order.
    pub const ALL: [Self; 3] = [Self::Input, Self::Output, Self::InputOnly];

    /// The direction with kernel value `value`, if there is one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Input),
            1 => Some(Self::Output),
            2 => Some(Self::InputOnly),
            _ => None,
        }
    }

    /// The kernel value, which is also the first index of every state table.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The kernel's name (`INPUT`, `OUTPUT`, `INPUT_ONLY`), as the reference tables write it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Input => "INPUT",
            Self::Output => "OUTPUT",
            Self::InputOnly => "INPUT_ONLY",
        }
    }
}

/// The direction of a packet for the state tables (facts §5.1).
///
/// `is_reply` is true for a server → client packet (the "out" hook). A reply is [`Direction::Output`]; a
/// client packet is [`Direction::InputOnly`] while the conn carries [`ConnFlags::NOOUTPUT`] and
/// [`Direction::Input`] otherwise. A reply on a conn with `NOOUTPUT` clears that flag (see
/// [`clears_nooutput`]), so later client packets use the INPUT table again.
pub const fn direction(is_reply: bool, flags: ConnFlags) -> Direction {
    if is_reply {
        Direction::Output
    } else if flags.contains(ConnFlags::NOOUTPUT) {
        Direction::InputOnly
    } else {
        Direction::Input
    }
}

/// Whether this packet clears the conn's [`ConnFlags::NOOUTPUT`]: a reply seen on a conn that has it.
/// TCP and SCTP do this as part of their state transition.
pub const fn clears_nooutput(is_reply: bool, flags: ConnFlags) -> bool {
    is_reply && flags.contains(ConnFlags::NOOUTPUT)
}

/// What one packet does to a conn's protocol state, and the side effects the engine must apply.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[must_use]
pub struct Transition<S> {
    /// The state after the packet. The conn's idle timeout becomes this state's timeout, on every packet.
    pub new_state: S,
    /// Whether `new_state` differs from the state before. Counters and templates are touched only then.
    pub changed: bool,
    /// Whether `new_state` is an active state (counted in the destination's `activeconns`).
    pub now_active: bool,
    /// `Some(now_active)` when the state moved between an active and an inactive state: the destination's
    /// `activeconns`/`inactconns` move by one and the conn's `INACTIVE` flag follows (only if the conn has a
    /// destination). The kernel compares against the conn's `INACTIVE` flag rather than the old state; the
    /// two agree as long as the flag has tracked the state, and [`Transition::counter_flip`] gives the
    /// flag-based answer.
    pub active_changed: Option<bool>,
    /// Whether the conn's controlling template (if any) becomes `ASSURED`.
    pub assures_template: bool,
}

impl<S> Transition<S> {
    /// The kernel's exact counter rule given the conn's current `INACTIVE` flag: on a state change,
    /// `Some(false)` if the conn is counted active and the new state is not active, `Some(true)` if it is
    /// counted inactive and the new state is active, `None` otherwise.
    pub const fn counter_flip(&self, conn_inactive: bool) -> Option<bool> {
        if !self.changed {
            None
        } else if !conn_inactive && !self.now_active {
            Some(false)
        } else if conn_inactive && self.now_active {
            Some(true)
        } else {
            None
        }
    }
}

/// `conn_reuse_mode` bit 1 (the default value 1): reschedule a new connection that hits an old conn in a
/// closing state (TCP TIME_WAIT/CLOSE, SCTP CLOSED).
pub const CONN_REUSE_CLOSING: u32 = 1;
/// `conn_reuse_mode` bit 2 (value 2): additionally reschedule a TCP SYN hitting a FIN_WAIT conn that has
/// never seen a reply (`NOOUTPUT`: DR/TUN).
pub const CONN_REUSE_FIN_WAIT_NOOUTPUT: u32 = 2;

/// With the default `conn_reuse_mode` = 1: whether a SYN hitting a TCP conn in `state` expires it, so that a
/// fresh conn (starting from NONE) is scheduled for the SYN. True for TIME_WAIT and CLOSE.
///
/// The engine must also check what facts §4.1 step 5 adds: the conn has no controller (not persistent, not
/// FTP data), and an old confirmed conntrack entry turns the reschedule into a drop.
pub const fn tcp_reuse_on_syn(state: TcpState) -> bool {
    tcp_expects_new_conn(state, CONN_REUSE_CLOSING, false)
}

/// With the default `conn_reuse_mode` = 1: whether an INIT hitting an SCTP conn in `state` expires it, so
/// that a fresh conn (starting from NONE, so in INIT1 after the INIT) is scheduled. True only for CLOSED.
///
/// The same extra conditions as for [`tcp_reuse_on_syn`] apply.
pub const fn sctp_reuse_on_init(state: SctpState) -> bool {
    sctp_expects_new_conn(state, CONN_REUSE_CLOSING)
}

/// Whether a TCP conn in `state` "expects a new connection" under `conn_reuse_mode` (a bitmap; 0 disables
/// reuse): TIME_WAIT or CLOSE, or with bit value 2 also FIN_WAIT on a conn with `NOOUTPUT` (`nooutput`).
pub const fn tcp_expects_new_conn(state: TcpState, conn_reuse_mode: u32, nooutput: bool) -> bool {
    if conn_reuse_mode == 0 {
        return false;
    }
    match state {
        TcpState::TimeWait | TcpState::Close => true,
        TcpState::FinWait => conn_reuse_mode & CONN_REUSE_FIN_WAIT_NOOUTPUT != 0 && nooutput,
        _ => false,
    }
}

/// Whether an SCTP conn in `state` "expects a new connection" under `conn_reuse_mode` (0 disables reuse):
/// only CLOSED.
pub const fn sctp_expects_new_conn(state: SctpState, conn_reuse_mode: u32) -> bool {
    conn_reuse_mode != 0 && matches!(state, SctpState::Closed)
}
