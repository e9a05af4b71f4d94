//! NAT rewrites checked by an independent full recompute: packets built by `etherparse`, rewritten by
//! `ipvs_proto::nat`, then every checksum recomputed by etherparse (IPv4 header, TCP, UDP) or by a plain
//! CRC32c (SCTP) must equal what the incremental update left in the packet. Reversing the rewrite must
//! give back the original bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{Ipv4HeaderSlice, PacketBuilder, TcpHeader, UdpHeader};
use ipvs_proto::nat;
use ipvs_proto::wire::ip;
use proptest::prelude::*;

const CASES: u32 = 512;

#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp { flags: u8 },
    Udp,
}

fn build(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, l4: L4, payload: &[u8]) -> Vec<u8> {
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family per packet"),
    };
    let mut out = Vec::new();
    match l4 {
        L4::Tcp { flags } => {
            let mut b = b.tcp(sport, dport, 0x1234_5678, 64240);
            if flags & 0x02 != 0 {
                b = b.syn();
            }
            if flags & 0x10 != 0 {
                b = b.ack(99);
            }
            if flags & 0x01 != 0 {
                b = b.fin();
            }
            b.write(&mut out, payload).unwrap();
        }
        L4::Udp => b.udp(sport, dport).write(&mut out, payload).unwrap(),
    }
    out
}

/// Recomputes every checksum of `pkt` independently (etherparse) and asserts it equals what is stored.
fn assert_checksums_recompute(pkt: &[u8], l4: L4) {
    let hdr = ip::parse(pkt).expect("still a valid IP packet");
    let seg = hdr.l4(pkt);
    let (src, dst) = (hdr.src_addr, hdr.dst_addr);
    if src.is_ipv4() {
        let h = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
        assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 header checksum");
    }
    match l4 {
        L4::Tcp { .. } => {
            let (th, payload) = TcpHeader::from_slice(seg).unwrap();
            let expect = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => th.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload).unwrap(),
                (IpAddr::V6(s), IpAddr::V6(d)) => th.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(th.checksum, expect, "TCP checksum after rewrite");
        }
        L4::Udp => {
            let (uh, payload) = UdpHeader::from_slice(seg).unwrap();
            let expect = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => uh.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload).unwrap(),
                (IpAddr::V6(s), IpAddr::V6(d)) => uh.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(uh.checksum, expect, "UDP checksum after rewrite");
        }
    }
}

fn v4() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)))
}

fn v6() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
}

/// (client, vip, real server) of one family.
fn addrs() -> impl Strategy<Value = (IpAddr, IpAddr, IpAddr)> {
    prop_oneof![(v4(), v4(), v4()), (v6(), v6(), v6())]
}

fn l4() -> impl Strategy<Value = L4> {
    prop_oneof![any::<u8>().prop_map(|flags| L4::Tcp { flags }), Just(L4::Udp)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn inbound_rewrite_checksums_equal_full_recompute(
        (client, vip, rs) in addrs(), cport: u16, vport: u16, dport: u16, l4 in l4(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut pkt = build(client, vip, cport, vport, l4, &payload);
        let original = pkt.clone();
        let hdr = ip::parse(&pkt).unwrap();
        nat::rewrite_destination(&mut pkt, &hdr, rs, dport).unwrap();
        let after = ip::parse(&pkt).unwrap();
        prop_assert_eq!(after.dst_addr, rs);
        prop_assert_eq!(&pkt[after.l4_offset + 2..after.l4_offset + 4], &dport.to_be_bytes()[..]);
        assert_checksums_recompute(&pkt, l4);
        // The reverse rewrite restores the original bytes exactly.
        nat::rewrite_destination(&mut pkt, &after, vip, vport).unwrap();
        prop_assert_eq!(pkt, original);
    }

    #[test]
    fn outbound_rewrite_checksums_equal_full_recompute(
        (client, vip, rs) in addrs(), cport: u16, vport: u16, dport: u16, l4 in l4(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut pkt = build(rs, client, dport, cport, l4, &payload);
        let hdr = ip::parse(&pkt).unwrap();
        nat::rewrite_source(&mut pkt, &hdr, vip, vport).unwrap();
        let after = ip::parse(&pkt).unwrap();
        prop_assert_eq!(after.src_addr, vip);
        prop_assert_eq!(&pkt[after.l4_offset..after.l4_offset + 2], &vport.to_be_bytes()[..]);
        assert_checksums_recompute(&pkt, l4);
    }

    #[test]
    fn udp_ipv4_zero_checksum_stays_zero(client in v4(), vip in v4(), rs in v4(), cport: u16, dport: u16,
        payload in proptest::collection::vec(any::<u8>(), 0..32)) {
        let mut pkt = build(client, vip, cport, 53, L4::Udp, &payload);
        pkt[26..28].copy_from_slice(&[0, 0]); // "no checksum" (RFC 768)
        let hdr = ip::parse(&pkt).unwrap();
        nat::rewrite_destination(&mut pkt, &hdr, rs, dport).unwrap();
        prop_assert_eq!(&pkt[26..28], &[0u8, 0][..]);
    }

    #[test]
    fn sctp_rewrite_crc_equals_full_recompute(client in v4(), vip in v4(), rs in v4(), dport: u16, tag: u32) {
        // IPv4 + SCTP common header + one 20-byte INIT chunk, CRC32c filled by an independent computation.
        let mut pkt = build(client, vip, 1, 2, L4::Udp, &[0u8; 24]);
        pkt[9] = 132; // protocol SCTP; the IPv4 checksum is fixed below
        pkt[10..12].copy_from_slice(&[0, 0]);
        let sum = !ipvs_proto::wire::checksum::data(&pkt[..20]);
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
        let sctp = &mut pkt[20..];
        sctp[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        sctp[4..8].copy_from_slice(&tag.to_be_bytes());
        sctp[12..16].copy_from_slice(&[1, 0, 0, 20]);
        let pkt_crc = |p: &mut [u8]| {
            p[8..12].copy_from_slice(&[0; 4]);
            let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(p);
            p[8..12].copy_from_slice(&crc.to_le_bytes());
        };
        pkt_crc(sctp);
        let hdr = ip::parse(&pkt).unwrap();
        nat::rewrite_destination(&mut pkt, &hdr, rs, dport).unwrap();
        let mut expect = pkt[20..].to_vec();
        pkt_crc(&mut expect);
        prop_assert_eq!(&pkt[20..], &expect[..]);
        prop_assert_eq!(&pkt[22..24], &dport.to_be_bytes()[..]);
    }
}

#[test]
fn icmp_error_translation_both_ways() {
    let client = SocketAddr::new(Ipv4Addr::new(10, 9, 0, 1).into(), 40000);
    let vip = SocketAddr::new(Ipv4Addr::new(10, 0, 2, 100).into(), 80);
    let rs = SocketAddr::new(Ipv4Addr::new(10, 1, 0, 1).into(), 8080);

    // Outbound: the real server says "port unreachable" about client -> rs.
    let quoted = build(client.ip(), rs.ip(), client.port(), rs.port(), L4::Tcp { flags: 0x02 }, &[]);
    let mut pkt = Vec::new();
    PacketBuilder::ipv4(octets(rs.ip()), octets(client.ip()), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
        .write(&mut pkt, &quoted)
        .unwrap();
    let hdr = ip::parse(&pkt).unwrap();
    nat::rewrite_icmp_error_outbound(&mut pkt, &hdr, vip).unwrap();
    let sliced = etherparse::SlicedPacket::from_ip(&pkt).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ipv4)) = &sliced.net else { panic!("not IPv4") };
    assert_eq!(ipv4.header().source(), octets(vip.ip()));
    let h = ipv4.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum);
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &sliced.transport else { panic!("not ICMP") };
    assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()), "ICMP checksum recomputed");
    let inner = ip::parse_embedded(icmp.payload()).unwrap();
    assert_eq!(inner.dst_addr, vip.ip());
    assert_eq!(&icmp.payload()[inner.l4_offset + 2..inner.l4_offset + 4], &vip.port().to_be_bytes());
    let inner_ip = Ipv4HeaderSlice::from_slice(icmp.payload()).unwrap().to_header();
    assert_eq!(inner_ip.calc_header_checksum(), inner_ip.header_checksum, "quoted IPv4 header checksum");

    // Inbound: the client says "host unreachable" about vip -> client.
    let quoted = build(vip.ip(), client.ip(), vip.port(), client.port(), L4::Udp, &[1, 2, 3]);
    let mut pkt = Vec::new();
    PacketBuilder::ipv4(octets(client.ip()), octets(vip.ip()), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host))
        .write(&mut pkt, &quoted)
        .unwrap();
    let hdr = ip::parse(&pkt).unwrap();
    nat::rewrite_icmp_error_inbound(&mut pkt, &hdr, rs).unwrap();
    let after = ip::parse(&pkt).unwrap();
    assert_eq!(after.dst_addr, rs.ip());
    let icmp = &pkt[after.l4_offset..];
    assert_eq!(ipvs_proto::wire::checksum::data(icmp), 0xffff, "ICMP checksum verifies");
    let inner = ip::parse_embedded(&icmp[8..]).unwrap();
    assert_eq!(inner.src_addr, rs.ip());
    assert_eq!(&icmp[8 + inner.l4_offset..8 + inner.l4_offset + 2], &rs.port().to_be_bytes());
}

#[test]
fn icmpv6_error_translation_outbound() {
    let client = SocketAddr::new("2001:db8::9".parse().unwrap(), 40000);
    let vip = SocketAddr::new("2001:db8::100".parse().unwrap(), 80);
    let rs = SocketAddr::new("2001:db8:1::1".parse().unwrap(), 8080);
    let quoted = build(client.ip(), rs.ip(), client.port(), rs.port(), L4::Tcp { flags: 0x10 }, &[9; 10]);
    let mut pkt = Vec::new();
    PacketBuilder::ipv6(octets16(rs.ip()), octets16(client.ip()), 64)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port))
        .write(&mut pkt, &quoted)
        .unwrap();
    let hdr = ip::parse(&pkt).unwrap();
    nat::rewrite_icmp_error_outbound(&mut pkt, &hdr, vip).unwrap();
    let sliced = etherparse::SlicedPacket::from_ip(&pkt).unwrap();
    let Some(etherparse::TransportSlice::Icmpv6(icmp)) = &sliced.transport else { panic!("not ICMPv6") };
    let expect = icmp.icmp_type().calc_checksum(octets16(vip.ip()), octets16(client.ip()), icmp.payload()).unwrap();
    assert_eq!(icmp.checksum(), expect);
    let inner = ip::parse_embedded(icmp.payload()).unwrap();
    assert_eq!(inner.dst_addr, vip.ip());
}

fn octets(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!(),
    }
}

fn octets16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    }
}
