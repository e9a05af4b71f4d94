//! The UDP "state machine" (facts §5.3): one state, one timeout, reset by every packet.
//!
//! UDP conns never change their `INACTIVE` flag, so they always count in the destination's `inactconns`.

use super::{Direction, Transition};
use crate::time::Duration;

/// A UDP conn's state: there is only one.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
#[repr(u8)]
pub enum UdpState {
    /// 0: the only state, shown as "UDP".
    #[default]
    Normal = 0,
}

impl UdpState {
    /// The state with kernel value `value`, if there is one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Normal),
            _ => None,
        }
    }

    /// The kernel value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name `/proc/net/ip_vs_conn` and `ipvsadm -L -c` print.
    pub const fn proc_name(self) -> &'static str {
        match self {
            Self::Normal => "UDP",
        }
    }

    /// UDP conns are never active (they always count in `inactconns`).
    pub const fn is_active(self) -> bool {
        false
    }
}

/// A packet's effect on a UDP conn: the state stays NORMAL, and a reply ([`Direction::Output`]) assures the
/// controlling template. The timeout is reset to the NORMAL timeout on every packet.
pub const fn transition(current: UdpState, dir: Direction) -> Transition<UdpState> {
    Transition {
        new_state: current,
        changed: false,
        now_active: false,
        active_changed: None,
        assures_template: matches!(dir, Direction::Output),
    }
}

/// The UDP idle timeout (one per network namespace).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct UdpTimeouts {
    normal: Duration,
}

impl UdpTimeouts {
    /// The kernel default: 300 s.
    pub const DEFAULT: Self = Self { normal: Duration::from_secs(300) };

    /// The idle timeout of a conn in `state`.
    pub const fn timeout(&self, state: UdpState) -> Duration {
        match state {
            UdpState::Normal => self.normal,
        }
    }

    /// Sets the idle timeout of `state`.
    pub fn set(&mut self, state: UdpState, timeout: Duration) {
        match state {
            UdpState::Normal => self.normal = timeout,
        }
    }

    /// `ipvsadm --set tcp tcpfin udp` for the UDP part: `udp` seconds become the NORMAL timeout; 0 leaves it
    /// unchanged.
    pub fn set_from_ipvsadm(&mut self, udp: u32) {
        if udp != 0 {
            self.normal = Duration::from_secs(udp as u64);
        }
    }

    /// The `udp` value `ipvsadm -L --timeout` prints, in whole seconds.
    pub const fn ipvsadm_value(&self) -> u64 {
        self.normal.secs()
    }
}

impl Default for UdpTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}
