use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::wire::{checksum, TcpRepr};

fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, headroom: usize) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq_number: 7,
        ack_number: 0,
        flags: tcp::Flags::SYN,
        window_len: 1000,
        urgent_at: 0,
        payload_len: 4,
    };
    let ip = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: Protocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 63,
        dscp: 10,
        ecn: 0b11,
        ident: 5,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut buf = vec![0u8; headroom + ip.buffer_len() + tcp.buffer_len()];
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut buf[headroom..]));
    tcp.emit(&mut tcp::Packet::new_unchecked(&mut buf[headroom + 20..]), &src.into(), &dst.into(), b"data");
    buf
}

const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const V: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const R: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

#[test]
fn rewrite_rejects_family_mismatch() {
    let mut buf = tcp_v4(C, V, 0);
    let before = buf.clone();
    let hdr = ip::parse(&buf).unwrap();
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(rewrite_destination(&mut buf, &hdr, v6, 1), Err(Error));
    assert_eq!(buf, before, "a failed rewrite leaves the packet unchanged");
}

#[test]
fn rewrite_rejects_truncated_transport_header() {
    let mut buf = tcp_v4(C, V, 0);
    let mut hdr = ip::parse(&buf).unwrap();
    hdr.l4_len = 10; // shorter than a TCP header
    assert_eq!(rewrite_destination(&mut buf, &hdr, R.into(), 1), Err(Error));
    hdr.l4_len = 1000; // past the buffer
    assert_eq!(rewrite_destination(&mut buf, &hdr, R.into(), 1), Err(Error));
}

#[test]
fn rewrite_of_later_fragment_changes_only_the_address() {
    let mut buf = tcp_v4(C, V, 0);
    let mut hdr = ip::parse(&buf).unwrap();
    hdr.fragment = Fragment::Later;
    let l4_before = buf[20..].to_vec();
    rewrite_destination(&mut buf, &hdr, R.into(), 8080).unwrap();
    assert_eq!(&buf[20..], &l4_before[..]);
    assert_eq!(&buf[16..20], &R.octets());
    assert_eq!(checksum::data(&buf[..20]), 0xffff);
}

#[test]
fn icmp_rewrite_rejects_non_error_messages() {
    // An echo request is not IPVS business.
    let mut buf = vec![0u8; 28];
    let ip = ipv4::Repr {
        src_addr: C,
        dst_addr: V,
        next_header: Protocol::Icmp,
        payload_len: 8,
        hop_limit: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]));
    buf[20] = 8; // echo request
    let hdr = ip::parse(&buf).unwrap();
    let rs = core::net::SocketAddr::new(R.into(), 1);
    assert_eq!(rewrite_icmp_error_inbound(&mut buf, &hdr, rs), Err(Error));
}

fn tunnel(encap: Encap, v6: bool) -> Tunnel {
    let (src_addr, dst_addr) = if v6 {
        (IpAddr::V6("2001:db8::1".parse().unwrap()), IpAddr::V6("2001:db8::2".parse().unwrap()))
    } else {
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)))
    };
    Tunnel { encap, src_addr, dst_addr, ident: 0x4242, copy_dont_frag: true }
}

#[test]
fn encapsulate_ipip_v4() {
    let t = tunnel(Encap::Ipip, false);
    let mut buf = tcp_v4(C, V, t.header_len());
    let inner = buf[20..].to_vec();
    let start = encapsulate(&mut buf, 20, inner.len(), &t).unwrap();
    assert_eq!(start, 0);
    let outer = ip::parse(&buf).unwrap();
    assert_eq!(outer.protocol, Protocol::IpIp);
    assert_eq!((outer.src_addr, outer.dst_addr), (t.src_addr, t.dst_addr));
    assert_eq!(outer.hop_limit, 63, "TTL copied from the inner packet");
    let p = ipv4::Packet::new_checked(&buf[..]).unwrap();
    assert!(p.dont_frag());
    assert_eq!(p.ident(), 0x4242);
    assert_eq!((p.dscp(), p.ecn()), (10, 0b10), "DSCP copied, CE encapsulated as ECT(0)");
    assert_eq!(outer.l4(&buf), &inner[..]);
}

#[test]
fn encapsulate_gue_v6_with_checksum() {
    let t = tunnel(Encap::Gue { src_port: 12345, dst_port: 6080, checksum: true }, true);
    let head = t.header_len();
    assert_eq!(head, 40 + 8 + 4);
    let mut buf = tcp_v4(C, V, head);
    let inner_len = buf.len() - head;
    encapsulate(&mut buf, head, inner_len, &t).unwrap();
    let outer = ip::parse(&buf).unwrap();
    assert_eq!(outer.protocol, Protocol::Udp);
    let dgram = udp::Packet::new_checked(outer.l4(&buf)).unwrap();
    assert_eq!((dgram.src_port(), dgram.dst_port()), (12345, 6080));
    assert!(dgram.checksum() != 0);
    assert!(dgram.verify_checksum(&outer.src_addr, &outer.dst_addr));
    let gue = encap::GueRepr::parse(&encap::GuePacket::new_checked(dgram.payload()).unwrap()).unwrap();
    assert_eq!(gue.protocol, Protocol::IpIp);
    let p = ipv6::Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(p.traffic_class(), (10 << 2) | 0b10);
}

#[test]
fn encapsulate_gue_without_checksum_sends_zero() {
    let t = tunnel(Encap::Gue { src_port: 1, dst_port: 2, checksum: false }, false);
    let head = t.header_len();
    let mut buf = tcp_v4(C, V, head);
    let inner_len = buf.len() - head;
    encapsulate(&mut buf, head, inner_len, &t).unwrap();
    let outer = ip::parse(&buf).unwrap();
    assert_eq!(udp::Packet::new_checked(outer.l4(&buf)).unwrap().checksum(), 0);
}

#[test]
fn encapsulate_gre_v4_with_checksum() {
    let t = tunnel(Encap::Gre { checksum: true }, false);
    assert_eq!(t.header_len(), 20 + 8);
    let mut buf = tcp_v4(C, V, t.header_len());
    let inner_len = buf.len() - t.header_len();
    encapsulate(&mut buf, t.header_len(), inner_len, &t).unwrap();
    let outer = ip::parse(&buf).unwrap();
    assert_eq!(outer.protocol, Protocol::Gre);
    let gre = encap::GrePacket::new_checked(outer.l4(&buf)).unwrap();
    assert_eq!(gre.protocol_type(), encap::ETHERTYPE_IPV4);
    assert!(gre.verify_checksum());
    assert_eq!(checksum::data(outer.l4(&buf)), 0xffff, "independent sum over GRE header and payload");
}

#[test]
fn encapsulate_rejects_short_headroom() {
    let t = tunnel(Encap::Ipip, false);
    let mut buf = tcp_v4(C, V, 10);
    let len = buf.len() - 10;
    assert_eq!(encapsulate(&mut buf, 10, len, &t), Err(Error));
}

#[test]
fn encapsulate_rejects_non_ip_inner() {
    let t = tunnel(Encap::Ipip, false);
    let mut buf = vec![0u8; 60];
    assert_eq!(encapsulate(&mut buf, 20, 40, &t), Err(Error));
}

/// An IPv6 TCP SYN 2001:db8:c::1 → 2001:db8:f::1 (hop limit 63, traffic class 0x29) after `headroom` bytes.
fn tcp_v6(headroom: usize) -> Vec<u8> {
    let (src, dst): (Ipv6Addr, Ipv6Addr) = ("2001:db8:c::1".parse().unwrap(), "2001:db8:f::1".parse().unwrap());
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq_number: 7,
        ack_number: 0,
        flags: tcp::Flags::SYN,
        window_len: 1000,
        urgent_at: 0,
        payload_len: 4,
    };
    let ip = ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: Protocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 63,
    };
    let mut buf = vec![0u8; headroom + ip.buffer_len() + tcp.buffer_len()];
    let mut p = ipv6::Packet::new_unchecked(&mut buf[headroom..]);
    ip.emit(&mut p);
    p.set_traffic_class(0x29);
    tcp.emit(&mut tcp::Packet::new_unchecked(&mut buf[headroom + 40..]), &src.into(), &dst.into(), b"data");
    buf
}

#[test]
fn encapsulate_ipv4_in_ipv6_ipip() {
    let t = tunnel(Encap::Ipip, true);
    assert_eq!(t.header_len(), 40);
    let mut buf = tcp_v4(C, V, t.header_len());
    let inner = buf[40..].to_vec();
    encapsulate(&mut buf, 40, inner.len(), &t).unwrap();
    // Raw bytes, independent of the parser: version 6, next header 4, payload length, hop limit = inner TTL.
    assert_eq!(buf[0] >> 4, 6);
    assert_eq!(usize::from(u16::from_be_bytes([buf[4], buf[5]])), inner.len());
    assert_eq!((buf[6], buf[7]), (4, 63));
    assert_eq!(&buf[8..24], &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(&buf[24..40], &"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(&buf[40..], &inner[..], "inner packet intact");
}

#[test]
fn encapsulate_ipv6_in_ipv4_ipip_and_gre() {
    let t = tunnel(Encap::Ipip, false);
    let mut buf = tcp_v6(20);
    let inner = buf[20..].to_vec();
    encapsulate(&mut buf, 20, inner.len(), &t).unwrap();
    let p = ipv4::Packet::new_checked(&buf[..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!((u8::from(p.next_header()), p.hop_limit(), p.dont_frag()), (41, 63, false));
    assert_eq!(usize::from(p.total_len()), buf.len());
    assert_eq!((p.dscp(), p.ecn()), (0x29 >> 2, 0b01), "traffic class copied");
    assert_eq!(&buf[20..], &inner[..]);

    let t = tunnel(Encap::Gre { checksum: false }, false);
    let mut buf = tcp_v6(24);
    encapsulate(&mut buf, 24, inner.len(), &t).unwrap();
    assert_eq!(buf[9], 47);
    assert_eq!(&buf[20..24], &[0, 0, 0x86, 0xdd], "GRE carrying IPv6");
    assert_eq!(&buf[24..], &inner[..]);

    let t = tunnel(Encap::Gue { src_port: 1, dst_port: 2, checksum: true }, false);
    let mut buf = tcp_v6(32);
    encapsulate(&mut buf, 32, inner.len(), &t).unwrap();
    assert_eq!(&buf[28..32], &[0, 41, 0, 0], "GUE protocol 41 (IPv6)");
    let outer = ip::parse(&buf).unwrap();
    assert!(udp::Packet::new_checked(outer.l4(&buf)).unwrap().verify_checksum(&outer.src_addr, &outer.dst_addr));
}

#[test]
fn encapsulate_rejects_tunnel_addresses_of_two_families() {
    let mut t = tunnel(Encap::Ipip, true);
    t.src_addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut buf = tcp_v4(C, V, t.header_len());
    let before = buf.clone();
    let len = buf.len() - t.header_len();
    assert_eq!(encapsulate(&mut buf, t.header_len(), len, &t), Err(Error));
    assert_eq!(buf, before);
}
