//! Checks shared by the packet tests: independent checksum recomputation (etherparse, RFC 1071).

use etherparse::{SlicedPacket, TcpHeader, TransportSlice, UdpHeader};

/// The one's-complement sum of `data` (RFC 1071), folded, not complemented.
pub(crate) fn ones_sum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Recomputes the IPv4 header checksum and the TCP/UDP/ICMP/ICMPv6 checksum (etherparse) of an IP packet.
pub(crate) fn checksums_ok(pkt: &[u8]) {
    let sliced = SlicedPacket::from_ip(pkt).expect("a valid IP packet");
    let (v4, v6) = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 header checksum");
            (Some((h.source, h.destination)), None)
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => (None, Some((ip.header().source(), ip.header().destination()))),
        None => panic!("no IP header"),
    };
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let (th, payload) = TcpHeader::from_slice(t.slice()).unwrap();
            let expect = match (v4, v6) {
                (Some((s, d)), _) => th.calc_checksum_ipv4_raw(s, d, payload).unwrap(),
                (_, Some((s, d))) => th.calc_checksum_ipv6_raw(s, d, payload).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(th.checksum, expect, "TCP checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            let (uh, payload) = UdpHeader::from_slice(u.slice()).unwrap();
            if uh.checksum != 0 {
                let expect = match (v4, v6) {
                    (Some((s, d)), _) => uh.calc_checksum_ipv4_raw(s, d, payload).unwrap(),
                    (_, Some((s, d))) => uh.calc_checksum_ipv6_raw(s, d, payload).unwrap(),
                    _ => unreachable!(),
                };
                assert_eq!(uh.checksum, expect, "UDP checksum");
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            assert_eq!(i.checksum(), i.icmp_type().calc_checksum(i.payload()), "ICMP checksum");
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let (s, d) = v6.unwrap();
            assert_eq!(i.checksum(), i.icmp_type().calc_checksum(s, d, i.payload()).unwrap(), "ICMPv6 checksum");
        }
        None => {}
    }
}
