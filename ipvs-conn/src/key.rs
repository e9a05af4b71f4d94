//! Lookup keys, template-key construction, and the keyed hash of the client side.

use core::hash::Hasher as _;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs_proto::{FlowKey, Protocol};
use siphasher::sip::SipHasher13;

/// Key of the "in" lookup (the kernel's `conn_in_get`): a packet from the client to the virtual service.
///
/// Both addresses must be of one family; a mixed key finds nothing.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct InKey {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Client address (the packet's source).
    pub caddr: IpAddr,
    /// Client port (the packet's source port; 0 matches only conns created with `NO_CPORT`).
    pub cport: u16,
    /// Virtual address (the packet's destination).
    pub vaddr: IpAddr,
    /// Virtual port (the packet's destination port).
    pub vport: u16,
}

impl InKey {
    /// A key from its parts.
    pub const fn new(protocol: Protocol, caddr: IpAddr, cport: u16, vaddr: IpAddr, vport: u16) -> Self {
        Self { protocol, caddr, cport, vaddr, vport }
    }
}

impl From<FlowKey> for InKey {
    fn from(k: FlowKey) -> Self {
        Self::new(k.protocol, k.client.ip(), k.client.port(), k.virt.ip(), k.virt.port())
    }
}

impl From<&FlowKey> for InKey {
    fn from(k: &FlowKey) -> Self {
        Self::from(*k)
    }
}

/// What an "in" lookup that found nothing knows about the flow: its client tuple and that tuple's keyed hash.
///
/// Hand it to [`ConnTable::insert_after_miss`](crate::ConnTable::insert_after_miss) (or the
/// [`LocalConnTable`](crate::LocalConnTable) one) with the conn of the same flow, so the insert does not hash the
/// client tuple again (the hash is a keyed SipHash, a few tens of nanoseconds per new conn). The insert uses
/// the hash only for a conn whose client tuple is the one hashed here and that is not a template; for anything
/// else it hashes afresh, so a mismatched miss can cost time but never misplace an entry.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct InMiss {
    pub(crate) protocol: u8,
    pub(crate) caddr: IpAddr,
    pub(crate) cport: u16,
    /// `None` for a key of mixed families (nothing to hash; such a conn cannot be inserted).
    pub(crate) hash: Option<u64>,
}

impl InMiss {
    /// The stored hash, if `(protocol, caddr, cport)` is the tuple it was computed for.
    #[inline]
    pub(crate) fn hash_for(&self, protocol: u8, caddr: IpAddr, cport: u16) -> Option<u64> {
        if self.protocol == protocol && self.caddr == caddr && self.cport == cport {
            self.hash
        } else {
            None
        }
    }
}

/// Key of the "out" lookup (the kernel's `conn_out_get`): a reply packet from the real server (NAT), or any
/// packet whose source is the service side and whose destination is a client (ICMP errors, DR/TUN replies).
///
/// It is hashed on the destination (the client side), so it finds the same entry as the [`InKey`] of the
/// flow. It matches a conn when `daddr:dport` is the conn's client and `saddr:sport` is the conn's real server
/// (`daddr:dport` of the conn) for MASQ conns, or its virtual address and port for the other methods.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct OutKey {
    /// Transport protocol.
    pub protocol: Protocol,
    /// The packet's source address (real server, or the VIP for non-NAT conns).
    pub saddr: IpAddr,
    /// The packet's source port.
    pub sport: u16,
    /// The packet's destination address (the client).
    pub daddr: IpAddr,
    /// The packet's destination port (the client port).
    pub dport: u16,
}

impl OutKey {
    /// A key from the packet's source and destination.
    pub const fn new(protocol: Protocol, saddr: IpAddr, sport: u16, daddr: IpAddr, dport: u16) -> Self {
        Self { protocol, saddr, sport, daddr, dport }
    }
}

/// Key of the persistence-template lookup (the kernel's `ct_in_get`, facts §8.1).
///
/// The client port is always 0. Build it with [`TemplateKey::for_service`] or [`TemplateKey::fwmark`]; the
/// engine picks `vport` by the rules of §8.1 (the service port; 0 for FTP and port-0 services).
///
/// Templates of a service with a persistence engine also carry the engine's data (the SIP Call-ID, facts
/// §8.5): look those up with [`ConnTable::lookup_pe_template`](crate::ConnTable::lookup_pe_template), which
/// takes the data next to this key (kept out of it so the key stays `Copy` and small).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct TemplateKey {
    /// Transport protocol, or protocol number 0 (`IPPROTO_IP`) for fwmark templates.
    pub protocol: Protocol,
    /// The client address masked by the service netmask (IPv4) or prefix (IPv6).
    pub caddr: IpAddr,
    /// The virtual address, or for fwmark templates the mark in the first 32 bits (network order).
    pub vaddr: IpAddr,
    /// The virtual port of the template (see §8.1).
    pub vport: u16,
}

impl TemplateKey {
    /// The template key of an address service: `client` masked with `netmask` (see [`mask_client`]),
    /// the service's protocol, virtual address and the template's `vport`.
    pub fn for_service(protocol: Protocol, client: IpAddr, netmask: u32, vaddr: IpAddr, vport: u16) -> Self {
        Self { protocol, caddr: mask_client(client, netmask), vaddr, vport }
    }

    /// The template key of a firewall-mark service: protocol 0, the mark in the first 32 bits of `vaddr` (of the
    /// client's family, network order), vport 0. TCP and UDP of one client network share it.
    pub fn fwmark(client: IpAddr, netmask: u32, mark: u32) -> Self {
        let vaddr = match client {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from_bits(mark)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from_bits(u128::from(mark) << 96)),
        };
        Self { protocol: Protocol::from(0), caddr: mask_client(client, netmask), vaddr, vport: 0 }
    }

    /// Whether this is a fwmark template key (protocol 0).
    pub fn is_fwmark(&self) -> bool {
        u8::from(self.protocol) == 0
    }
}

/// Longest persistence-engine data a template may carry (`IP_VS_PEDATA_MAXLEN`, facts §12.4).
pub const MAX_PE_DATA: usize = 255;

/// The kernel's persistence "snet": an IPv4 `addr` ANDed with `netmask` (host-order bits, e.g. `0xFFFF_FF00`),
/// or an IPv6 `addr` cut to its first `netmask` bits (a prefix length; values above 128 keep everything).
pub fn mask_client(addr: IpAddr, netmask: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & netmask)),
        IpAddr::V6(a) => {
            let bits = netmask.min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask))
        }
    }
}

/// The keyed SipHash-1-3 of a client tuple.
#[derive(Clone, Copy)]
pub(crate) struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl core::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        let (k0, k1) = SipHasher13::new_with_key(key).keys();
        Self { k0, k1 }
    }

    #[inline]
    pub(crate) fn v4(&self, proto: u8, caddr: Ipv4Addr, cport: u16) -> u64 {
        let mut s = SipHasher13::new_with_keys(self.k0, self.k1);
        s.write_u64(u64::from(caddr.to_bits()) | (u64::from(cport) << 32) | (u64::from(proto) << 48));
        s.finish()
    }

    #[inline]
    pub(crate) fn v6(&self, proto: u8, caddr: Ipv6Addr, cport: u16) -> u64 {
        let mut s = SipHasher13::new_with_keys(self.k0, self.k1);
        let a = caddr.to_bits();
        s.write_u64((a >> 64) as u64);
        s.write_u64(a as u64);
        s.write_u32(u32::from(cport) | (u32::from(proto) << 16));
        s.finish()
    }

    /// The hash of a template with persistence-engine data: over the data alone, as the kernel hashes SIP
    /// templates by their Call-ID (facts §3.3), so one client network's calls spread over the index.
    #[inline]
    pub(crate) fn pe(&self, data: &[u8]) -> u64 {
        let mut s = SipHasher13::new_with_keys(self.k0, self.k1);
        // The length prefix keeps this apart from the tuple hashes (those write 8 or 20 bytes, no prefix).
        s.write_usize(data.len());
        s.write(data);
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let c: IpAddr = "192.168.7.9".parse().unwrap();
        assert_eq!(mask_client(c, 0xFFFF_FF00), "192.168.7.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask_client(c, 0xFFFF_FFFF), c);
        assert_eq!(mask_client(c, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        let c6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(mask_client(c6, 64), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(mask_client(c6, 128), c6);
        assert_eq!(mask_client(c6, 999), c6);
        assert_eq!(mask_client(c6, 0), "::".parse::<IpAddr>().unwrap());
        assert_eq!(mask_client(c6, 1), "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn fwmark_keys_carry_the_mark_in_the_address() {
        let k = TemplateKey::fwmark("10.1.2.3".parse().unwrap(), 0xFFFF_0000, 0x0102_0304);
        assert!(k.is_fwmark());
        assert_eq!(k.caddr, "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(k.vaddr, "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(k.vport, 0);
        let k6 = TemplateKey::fwmark("2001:db8::1".parse().unwrap(), 32, 7);
        assert_eq!(k6.vaddr, "0:7::".parse::<IpAddr>().unwrap());
        assert_eq!(k6.caddr, "2001:db8::".parse::<IpAddr>().unwrap());
        let s = TemplateKey::for_service(
            Protocol::Tcp,
            "10.1.2.3".parse().unwrap(),
            0xFF00_0000,
            "1.1.1.1".parse().unwrap(),
            80,
        );
        assert!(!s.is_fwmark());
        assert_eq!(s.caddr, "10.0.0.0".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hash_is_keyed_and_covers_the_client_side() {
        let a = KeyHasher::new(&[1; 16]);
        let b = KeyHasher::new(&[2; 16]);
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert_ne!(a.v4(6, ip, 1000), b.v4(6, ip, 1000));
        assert_ne!(a.v4(6, ip, 1000), a.v4(6, ip, 1001));
        assert_ne!(a.v4(6, ip, 1000), a.v4(17, ip, 1000));
        assert_eq!(a.v4(6, ip, 1000), a.v4(6, ip, 1000));
        let ip6 = Ipv6Addr::LOCALHOST;
        assert_ne!(a.v6(6, ip6, 1), b.v6(6, ip6, 1));
        assert_ne!(a.pe(b"call-1"), b.pe(b"call-1"));
        assert_ne!(a.pe(b"call-1"), a.pe(b"call-2"));
        assert_eq!(a.pe(b"call-1"), a.pe(b"call-1"));
    }

    #[test]
    fn in_key_from_flow_key() {
        let f = FlowKey::new(Protocol::Udp, "10.0.0.1:53".parse().unwrap(), "10.0.0.2:5353".parse().unwrap());
        let k = InKey::from(&f);
        assert_eq!(k.cport, 53);
        assert_eq!(k.vport, 5353);
        assert_eq!(k.protocol, Protocol::Udp);
    }
}
