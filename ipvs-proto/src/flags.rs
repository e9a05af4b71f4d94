//! Connection, service and destination flags with the kernel's bit values, and the forwarding method.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

macro_rules! flag_set {
    ($(#[$meta:meta])* $name:ident($repr:ty) { $($(#[$fmeta:meta])* $flag:ident = $value:expr;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default, Eq, Hash, PartialEq)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$fmeta])* pub const $flag: Self = Self($value);)*

            /// No flag set.
            pub const EMPTY: Self = Self(0);

            /// The raw bits.
            pub const fn bits(self) -> $repr {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// Sets (`on`) or clears the bits of `other`.
            pub fn set(&mut self, other: Self, on: bool) {
                if on {
                    self.0 |= other.0;
                } else {
                    self.0 &= !other.0;
                }
            }
        }

        impl BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                self.0 |= rhs.0;
            }
        }

        impl BitAnd for $name {
            type Output = Self;
            fn bitand(self, rhs: Self) -> Self {
                Self(self.0 & rhs.0)
            }
        }

        impl Not for $name {
            type Output = Self;
            fn not(self) -> Self {
                Self(!self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

flag_set! {
    /// Connection flags (`IP_VS_CONN_F_*`), bit-compatible with the kernel's 32-bit `cp->flags`.
    ///
    /// The low three bits are the forwarding method ([`FwdMethod`]).
    ConnFlags(u32) {
        /// Mask of the forwarding method bits.
        FWD_MASK = 0x0007;
        /// Forwarding: NAT (masquerading); the value of the method bits, not a bit.
        MASQ = 0x0000;
        /// Forwarding: deliver to the local stack.
        LOCALNODE = 0x0001;
        /// Forwarding: IP tunnel (IPIP/GUE/GRE).
        TUNNEL = 0x0002;
        /// Forwarding: direct routing.
        DROUTE = 0x0003;
        /// Forwarding: cache bypass.
        BYPASS = 0x0004;
        /// Created by the sync backup.
        SYNC = 0x0020;
        /// In the connection hash table.
        HASHED = 0x0040;
        /// No reply packets pass the director (DR/TUN/local): use the INPUT_ONLY state table.
        NOOUTPUT = 0x0080;
        /// Counted in the destination's inactive connections.
        INACTIVE = 0x0100;
        /// Output TCP sequence adjustment needed.
        OUT_SEQ = 0x0200;
        /// Input TCP sequence adjustment needed.
        IN_SEQ = 0x0400;
        /// `IN_SEQ | OUT_SEQ`.
        SEQ_MASK = 0x0600;
        /// Client port not known yet.
        NO_CPORT = 0x0800;
        /// Persistence template, not a real connection.
        TEMPLATE = 0x1000;
        /// One-packet scheduling (UDP only): never inserted into the table.
        ONE_PACKET = 0x2000;
        /// Keep netfilter conntrack for this connection.
        NFCT = 0x1_0000;
        /// Bits a backup accepts from a v1 sync message.
        BACKUP_MASK = 0x1F87;
        /// Bits a sync update may change on an existing backup connection.
        BACKUP_UPD_MASK = 0x0700;
        /// Bits userspace may set in a destination's connection flags.
        DEST_MASK = 0x1_2007;
    }
}

flag_set! {
    /// Virtual-service flags (`IP_VS_SVC_F_*`).
    ServiceFlags(u32) {
        /// Persistent service (templates).
        PERSISTENT = 0x0001;
        /// Internal: the service is hashed (stripped from user input).
        HASHED = 0x0002;
        /// One-packet scheduling (UDP only).
        ONEPACKET = 0x0004;
        /// Scheduler flag 1 (`sh-fallback`, `mh-fallback`).
        SCHED1 = 0x0008;
        /// Scheduler flag 2 (`sh-port`, `mh-port`).
        SCHED2 = 0x0010;
        /// Scheduler flag 3.
        SCHED3 = 0x0020;
    }
}

flag_set! {
    /// Destination flags (`IP_VS_DEST_F_*`).
    DestFlags(u32) {
        /// Linked to a service (cleared when the destination moves to the trash).
        AVAILABLE = 0x0001;
        /// Reached its upper connection threshold; schedulers skip it.
        OVERLOAD = 0x0002;
    }
}

impl ConnFlags {
    /// The forwarding method encoded in the low bits, if it is a known one.
    pub const fn fwd_method(self) -> Option<FwdMethod> {
        FwdMethod::from_bits(self.0 & Self::FWD_MASK.0)
    }

    /// These flags with the forwarding bits replaced by `method`.
    pub const fn with_fwd_method(self, method: FwdMethod) -> Self {
        Self((self.0 & !Self::FWD_MASK.0) | method.bits())
    }
}

/// How a connection's packets reach the real server, with the kernel's numbering (`IP_VS_CONN_F_*`).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum FwdMethod {
    /// NAT (masquerading), `ipvsadm -m` (0).
    Masq,
    /// Deliver to the director's own stack (1).
    Local,
    /// IP tunnel, `ipvsadm -i` (2).
    Tunnel,
    /// Direct routing, `ipvsadm -g` (3).
    DirectRoute,
    /// Cache bypass: forward to the packet's original destination (4).
    Bypass,
}

impl FwdMethod {
    /// The kernel's value in the low bits of the connection flags.
    pub const fn bits(self) -> u32 {
        match self {
            Self::Masq => 0,
            Self::Local => 1,
            Self::Tunnel => 2,
            Self::DirectRoute => 3,
            Self::Bypass => 4,
        }
    }

    /// The method for a kernel value, if known.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            0 => Some(Self::Masq),
            1 => Some(Self::Local),
            2 => Some(Self::Tunnel),
            3 => Some(Self::DirectRoute),
            4 => Some(Self::Bypass),
            _ => None,
        }
    }

    /// The word ipvsadm prints in listings (`Masq`, `Local`, `Tunnel`, `Route`, `Bypass`).
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            Self::Masq => "Masq",
            Self::Local => "Local",
            Self::Tunnel => "Tunnel",
            Self::DirectRoute => "Route",
            Self::Bypass => "Bypass",
        }
    }

    /// Whether reply packets pass through the director (only NAT). Others get [`ConnFlags::NOOUTPUT`].
    pub const fn sees_replies(self) -> bool {
        matches!(self, Self::Masq)
    }
}

/// A destination (real server) handle, assigned by the engine; stable while the destination exists.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct DestId(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_masks_match_the_kernel() {
        use ConnFlags as F;
        let backup = F::FWD_MASK | F::NOOUTPUT | F::INACTIVE | F::SEQ_MASK | F::NO_CPORT | F::TEMPLATE;
        assert_eq!(backup, F::BACKUP_MASK);
        assert_eq!(F::INACTIVE | F::SEQ_MASK, F::BACKUP_UPD_MASK);
        assert_eq!(F::FWD_MASK | F::ONE_PACKET | F::NFCT, F::DEST_MASK);
        assert_eq!(F::IN_SEQ | F::OUT_SEQ, F::SEQ_MASK);
    }

    #[test]
    fn fwd_method_bits_round_trip() {
        for bits in 0..8 {
            match FwdMethod::from_bits(bits) {
                Some(m) => assert_eq!(m.bits(), bits),
                None => assert!(bits > 4),
            }
        }
        let f = ConnFlags::TEMPLATE.with_fwd_method(FwdMethod::DirectRoute);
        assert_eq!(f.bits(), 0x1003);
        assert_eq!(f.fwd_method(), Some(FwdMethod::DirectRoute));
        assert!(!FwdMethod::Tunnel.sees_replies());
    }

    #[test]
    fn set_and_contains() {
        let mut f = ConnFlags::EMPTY;
        f.set(ConnFlags::INACTIVE, true);
        assert!(f.contains(ConnFlags::INACTIVE));
        f.set(ConnFlags::INACTIVE, false);
        assert_eq!(f, ConnFlags::EMPTY);
    }
}
