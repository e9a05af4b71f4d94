//! Wire numbers shared by every layer: IP protocol numbers and address families.

use core::fmt;

/// An IP protocol number (IPv4 `protocol`, IPv6 `next header`).
///
/// Every value converts losslessly both ways: numbers without a named arm are kept as `Unknown(n)`, so
/// re-emitting a parsed packet gives the same bytes.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Protocol {
    /// IPv6 hop-by-hop options (0).
    HopByHop,
    /// ICMP for IPv4 (1).
    Icmp,
    /// IPv4-in-IP encapsulation, used by IPIP tunnels (4).
    IpIp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// IPv6-in-IP encapsulation (41).
    Ipv6,
    /// IPv6 routing header (43).
    Ipv6Route,
    /// IPv6 fragment header (44).
    Ipv6Frag,
    /// Generic Routing Encapsulation (47).
    Gre,
    /// IPsec Encapsulating Security Payload (50).
    Esp,
    /// IPsec Authentication Header (51).
    Ah,
    /// ICMP for IPv6 (58).
    Icmpv6,
    /// IPv6 "no next header" (59).
    Ipv6NoNext,
    /// IPv6 destination options (60).
    Ipv6Opts,
    /// SCTP (132).
    Sctp,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for Protocol {
    fn from(n: u8) -> Self {
        match n {
            0 => Self::HopByHop,
            1 => Self::Icmp,
            4 => Self::IpIp,
            6 => Self::Tcp,
            17 => Self::Udp,
            41 => Self::Ipv6,
            43 => Self::Ipv6Route,
            44 => Self::Ipv6Frag,
            47 => Self::Gre,
            50 => Self::Esp,
            51 => Self::Ah,
            58 => Self::Icmpv6,
            59 => Self::Ipv6NoNext,
            60 => Self::Ipv6Opts,
            132 => Self::Sctp,
            other => Self::Unknown(other),
        }
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::HopByHop => 0,
            Protocol::Icmp => 1,
            Protocol::IpIp => 4,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Ipv6 => 41,
            Protocol::Ipv6Route => 43,
            Protocol::Ipv6Frag => 44,
            Protocol::Gre => 47,
            Protocol::Esp => 50,
            Protocol::Ah => 51,
            Protocol::Icmpv6 => 58,
            Protocol::Ipv6NoNext => 59,
            Protocol::Ipv6Opts => 60,
            Protocol::Sctp => 132,
            Protocol::Unknown(other) => other,
        }
    }
}

impl Protocol {
    /// Whether IPVS balances this protocol by ports (TCP, UDP, SCTP).
    pub const fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }

    /// The name ipvsadm prints (`TCP`, `UDP`, `SCTP`, …); `None` for numbers without one.
    pub const fn ipvs_name(self) -> Option<&'static str> {
        match self {
            Self::Tcp => Some("TCP"),
            Self::Udp => Some("UDP"),
            Self::Sctp => Some("SCTP"),
            Self::Ah => Some("AH"),
            Self::Esp => Some("ESP"),
            Self::Icmp => Some("ICMP"),
            Self::Icmpv6 => Some("ICMPv6"),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ipvs_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "proto-{}", u8::from(*self)),
        }
    }
}

/// An address family, with the Linux `AF_*` numbering IPVS uses on the wire (sync v1, netlink).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET` = 2).
    Inet,
    /// IPv6 (`AF_INET6` = 10).
    Inet6,
}

impl AddressFamily {
    /// The Linux `AF_*` number.
    pub const fn linux_number(self) -> u16 {
        match self {
            Self::Inet => 2,
            Self::Inet6 => 10,
        }
    }

    /// The family for a Linux `AF_*` number, if it is one IPVS knows.
    pub const fn from_linux_number(n: u16) -> Option<Self> {
        match n {
            2 => Some(Self::Inet),
            10 => Some(Self::Inet6),
            _ => None,
        }
    }

    /// The family of an address.
    pub const fn of(addr: &core::net::IpAddr) -> Self {
        match addr {
            core::net::IpAddr::V4(_) => Self::Inet,
            core::net::IpAddr::V6(_) => Self::Inet6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_numbers_round_trip_for_all_u8() {
        for n in 0..=u8::MAX {
            assert_eq!(u8::from(Protocol::from(n)), n, "protocol {n:#010b}");
        }
        assert_eq!(Protocol::from(6), Protocol::Tcp);
        assert_eq!(Protocol::from(132), Protocol::Sctp);
        assert_eq!(Protocol::from(200), Protocol::Unknown(200));
    }

    #[test]
    fn address_family_numbers() {
        assert_eq!(AddressFamily::Inet.linux_number(), 2);
        assert_eq!(AddressFamily::from_linux_number(10), Some(AddressFamily::Inet6));
        assert_eq!(AddressFamily::from_linux_number(3), None);
    }
}
