//! Flow and service keys.

use core::net::{IpAddr, SocketAddr};

use crate::{AddressFamily, Protocol};

/// The client-side identity of a connection: what the "in" lookup hashes.
///
/// `client` is the client's address and port, `virt` the virtual service address and port the client
/// connected to. For protocols without ports both ports are 0. Both addresses are of one family.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct FlowKey {
    /// The transport protocol.
    pub protocol: Protocol,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual (service) address and port.
    pub virt: SocketAddr,
}

impl FlowKey {
    /// A key for `protocol` from `client` to `virt`.
    pub const fn new(protocol: Protocol, client: SocketAddr, virt: SocketAddr) -> Self {
        Self { protocol, client, virt }
    }

    /// The address family of the flow (that of the client address).
    pub const fn family(&self) -> AddressFamily {
        match self.client {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        }
    }
}

/// What identifies a virtual service: protocol + VIP:port, or a firewall mark + family.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum ServiceKey {
    /// A service on a protocol and virtual address:port (`ipvsadm -t/-u/--sctp-service`).
    Addr {
        /// TCP, UDP or SCTP.
        protocol: Protocol,
        /// The virtual address and port.
        addr: SocketAddr,
    },
    /// A firewall-mark service (`ipvsadm -f MARK`), of one address family.
    Fwmark {
        /// The netfilter mark.
        mark: u32,
        /// The family of packets it matches.
        family: AddressFamily,
    },
}

impl ServiceKey {
    /// The address family of the service.
    pub const fn family(&self) -> AddressFamily {
        match self {
            Self::Addr { addr, .. } => match addr.ip() {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            },
            Self::Fwmark { family, .. } => *family,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let k = FlowKey::new(Protocol::Tcp, "10.0.0.1:1000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        assert_eq!(k.family(), AddressFamily::Inet);
        let s = ServiceKey::Addr { protocol: Protocol::Udp, addr: "[2001:db8::1]:53".parse().unwrap() };
        assert_eq!(s.family(), AddressFamily::Inet6);
        let f = ServiceKey::Fwmark { mark: 7, family: AddressFamily::Inet };
        assert_eq!(f.family(), AddressFamily::Inet);
    }
}
