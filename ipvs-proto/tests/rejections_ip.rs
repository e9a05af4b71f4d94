//! Malformed input through the public IP/ICMP wire API: every rejection rule, table-driven, and
//! proptests that no parser or accessor panics on random or corrupted bytes.

use core::net::{Ipv4Addr, Ipv6Addr};

use ipvs_proto::wire::{icmpv4, icmpv6, ip, ipv4, ipv6, Error};
use ipvs_proto::Protocol;
use proptest::prelude::*;

const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// A valid IPv4/UDP packet (8-byte UDP header + `data_len` bytes).
fn ipv4_udp(data_len: usize) -> Vec<u8> {
    let repr = ipv4::Repr {
        src_addr: Ipv4Addr::new(10, 0, 0, 1),
        dst_addr: Ipv4Addr::new(10, 0, 0, 2),
        next_header: Protocol::Udp,
        payload_len: 8 + data_len,
        hop_limit: 64,
        dscp: 0,
        ecn: 0,
        ident: 7,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]));
    buf[20..24].copy_from_slice(&[0x30, 0x39, 0, 80]);
    buf
}

/// A valid IPv6 packet whose payload is `payload`, first header `first`.
fn ipv6_with(first: Protocol, payload: &[u8]) -> Vec<u8> {
    let repr = ipv6::Repr {
        src_addr: V6_SRC,
        dst_addr: V6_DST,
        next_header: first,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
    let mut packet = ipv6::Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut packet);
    packet.payload_mut().copy_from_slice(payload);
    buf
}

/// An 8-byte options-like extension header followed by `next`.
fn ext8(next: Protocol) -> [u8; 8] {
    [next.into(), 0, 1, 4, 0, 0, 0, 0]
}

fn with(mut buf: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut buf);
    buf
}

fn refill_v4(mut buf: Vec<u8>) -> Vec<u8> {
    ipv4::Packet::new_unchecked(&mut buf[..]).fill_checksum();
    buf
}

#[test]
fn baselines_are_accepted() {
    assert!(ip::parse(&ipv4_udp(4)).is_ok());
    assert!(ip::parse(&ipv6_with(Protocol::Udp, &[0; 8])).is_ok());
    assert!(ip::parse_embedded(&ipv4_udp(4)[..28]).is_ok());
}

#[test]
fn ip_parse_rejects_each_rule() {
    let v4 = ipv4_udp(4);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty buffer", vec![]),
        ("version 5", refill_v4(with(v4.clone(), |b| b[0] = 0x55))),
        ("ipv4 buffer below 20", v4[..19].to_vec()),
        ("ipv4 ihl below 5", refill_v4(with(v4.clone(), |b| b[0] = 0x44))),
        ("ipv4 header past buffer", refill_v4(with(v4.clone(), |b| b[0] = 0x4f))),
        ("ipv4 total_len below header", refill_v4(with(v4.clone(), |b| b[2..4].copy_from_slice(&[0, 19])))),
        ("ipv4 total_len past buffer", refill_v4(with(v4.clone(), |b| b[2..4].copy_from_slice(&[0, 33])))),
        ("ipv4 bad checksum", with(v4.clone(), |b| b[8] ^= 1)),
        ("ipv6 buffer below 40", ipv6_with(Protocol::Udp, &[])[..39].to_vec()),
        ("version 7", with(ipv6_with(Protocol::Udp, &[0; 8]), |b| b[0] = 0x70)),
        ("ipv6 payload past buffer", with(ipv6_with(Protocol::Udp, &[0; 8]), |b| b[5] = 9)),
        ("ipv6 ext header past payload", ipv6_with(Protocol::Ipv6Opts, &[17, 1, 0, 0, 0, 0, 0, 0])),
        (
            "ipv6 hop-by-hop not first",
            ipv6_with(Protocol::Ipv6Opts, &[&ext8(Protocol::HopByHop)[..], &ext8(Protocol::Udp)].concat()),
        ),
        ("ipv6 more than 8 ext headers", ipv6_with(Protocol::Ipv6Opts, &[ext8(Protocol::Ipv6Opts); 9].concat())),
    ];
    for (rule, buf) in cases {
        assert_eq!(ip::parse(&buf), Err(Error), "{rule}");
    }
}

#[test]
fn ip_parse_embedded_rejects_each_rule() {
    let v4 = ipv4_udp(4);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty buffer", vec![]),
        ("ipv4 header truncated", v4[..19].to_vec()),
        ("ipv4 ihl below 5", with(v4.clone(), |b| b[0] = 0x44)),
        ("ipv4 options truncated", with(v4[..24].to_vec(), |b| b[0] = 0x47)),
        ("ipv4 total_len below header", with(v4.clone(), |b| b[2..4].copy_from_slice(&[0, 19]))),
        ("ipv4 udp l4 shorter than 8", v4[..27].to_vec()),
        ("ipv6 header truncated", ipv6_with(Protocol::Udp, &[0; 8])[..39].to_vec()),
        ("ipv6 tcp l4 shorter than 8", ipv6_with(Protocol::Tcp, &[0; 20])[..47].to_vec()),
        (
            "ipv6 ext header truncated",
            ipv6_with(Protocol::Ipv6Route, &[&ext8(Protocol::Udp)[..], &[0; 8]].concat())[..47].to_vec(),
        ),
        (
            "ipv6 hop-by-hop not first",
            ipv6_with(Protocol::Ipv6Opts, &[&ext8(Protocol::HopByHop)[..], &ext8(Protocol::Udp), &[0; 8]].concat()),
        ),
    ];
    for (rule, buf) in cases {
        assert_eq!(ip::parse_embedded(&buf), Err(Error), "{rule}");
    }
}

#[test]
fn icmp_rejects_short_and_bad_checksum() {
    assert_eq!(icmpv4::Packet::new_checked(&[8u8, 0, 0, 0, 0, 0, 0][..]), Err(Error));
    assert_eq!(icmpv6::Packet::new_checked(&[128u8, 0, 0, 0, 0, 0, 0][..]), Err(Error));
    let bytes = [8u8, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(icmpv4::Repr::parse(&icmpv4::Packet::new_checked(&bytes[..]).unwrap()), Err(Error));
    let bytes = [128u8, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(icmpv6::Repr::parse(&V6_SRC, &V6_DST, &icmpv6::Packet::new_checked(&bytes[..]).unwrap()), Err(Error));
}

/// Calls every parser and, where the parser accepted, every accessor.
fn exercise(buf: &[u8]) {
    if let Ok(p) = ipv4::Packet::new_checked(buf) {
        touch_ipv4(&p);
        let _ = ipv4::Repr::parse(&p);
    }
    if let Ok(p) = ipv4::Packet::new_checked_truncated(buf) {
        touch_ipv4(&p);
        let _ = ipv4::Repr::parse(&p);
    }
    for p in [ipv6::Packet::new_checked(buf), ipv6::Packet::new_checked_truncated(buf)].into_iter().flatten() {
        let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.next_header(), p.hop_limit());
        let _ = (p.src_addr(), p.dst_addr(), p.payload());
        let _ = ipv6::Repr::parse(&p);
        let _ = ipv6::walk_extension_headers(p.next_header(), p.payload());
    }
    if let Some((&first, rest)) = buf.split_first() {
        if let Ok(ext) = ipv6::walk_extension_headers(Protocol::from(first), rest) {
            assert!(ext.offset <= rest.len());
        }
    }
    for h in [ip::parse(buf), ip::parse_embedded(buf)].into_iter().flatten() {
        assert!(h.l4_offset + h.l4_len <= buf.len());
        assert_eq!(h.l4(buf).len(), h.l4_len);
        let _ = h.family();
    }
    if let Ok(p) = icmpv4::Packet::new_checked(buf) {
        let _ = (p.msg_type().is_error(), p.code(), p.checksum(), p.rest_of_header(), p.echo_ident());
        let _ = (p.echo_seq_no(), p.next_hop_mtu(), p.payload(), p.verify_checksum());
        let _ = icmpv4::Repr::parse(&p);
    }
    if let Ok(p) = icmpv6::Packet::new_checked(buf) {
        let _ = (p.msg_type().is_error(), p.code(), p.checksum(), p.rest_of_header(), p.echo_ident());
        let _ = (p.echo_seq_no(), p.mtu(), p.payload(), p.verify_checksum(&V6_SRC, &V6_DST));
        let _ = icmpv6::Repr::parse(&V6_SRC, &V6_DST, &p);
    }
}

fn touch_ipv4(p: &ipv4::Packet<&[u8]>) {
    let _ = (p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident(), p.dont_frag());
    let _ = (p.more_frags(), p.frag_offset(), p.hop_limit(), p.next_header(), p.checksum());
    let _ = (p.src_addr(), p.dst_addr(), p.options(), p.verify_checksum(), p.payload());
}

fn corpus() -> Vec<Vec<u8>> {
    let mut hbh = ext8(Protocol::Ipv6Frag).to_vec();
    hbh.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 1]);
    hbh.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
    let mut icmp_err = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp_err.extend_from_slice(&ipv4_udp(4)[..28]);
    vec![ipv4_udp(20), ipv6_with(Protocol::HopByHop, &hbh), icmp_err]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200), version in 0u8..16) {
        exercise(&buf);
        let mut buf = buf;
        if let Some(b) = buf.first_mut() {
            *b = (version << 4) | (*b & 0x0f);
        }
        exercise(&buf);
    }

    #[test]
    fn corrupted_packets_never_panic(
        which in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let corpus = corpus();
        let mut buf = corpus[which.index(corpus.len())].clone();
        for (i, x) in flips {
            let i = i.index(buf.len());
            buf[i] ^= x;
        }
        buf.truncate(cut.index(buf.len() + 1));
        exercise(&buf);
    }

    /// Setters used on a checked packet with any values never make an accessor panic.
    #[test]
    fn setters_after_check_never_panic(
        header_len in any::<u8>(),
        total_len in any::<u16>(),
        payload_len in any::<u16>(),
    ) {
        let mut v4 = ipv4_udp(4);
        let mut p = ipv4::Packet::new_checked(&mut v4[..]).unwrap();
        p.set_header_len(header_len);
        p.set_total_len(total_len);
        p.fill_checksum();
        let _ = p.payload_mut();
        touch_ipv4(&ipv4::Packet::new_unchecked(&v4[..]));

        let mut v6 = ipv6_with(Protocol::Udp, &[0; 8]);
        let mut p = ipv6::Packet::new_checked(&mut v6[..]).unwrap();
        p.set_payload_len(payload_len);
        let _ = p.payload_mut();
        let p = ipv6::Packet::new_unchecked(&v6[..]);
        prop_assert!(p.payload().len() <= 8);
    }
}
