//! Differential tests of the TCP and UDP wire layer against `etherparse` 0.16.
//!
//! Packets are built with `etherparse::PacketBuilder` from proptest-chosen fields, over IPv4 and IPv6. Our
//! parse must agree with etherparse field by field, and our checksum verification must agree with the
//! checksum etherparse computes (`TcpHeader::calc_checksum_ipv4_raw` and friends), also after a random
//! byte of the transport segment is corrupted.
//!
//! The IP header is skipped by hand: `PacketBuilder` writes a fixed 20-byte IPv4 header (no options) or a
//! 40-byte IPv6 header (no extension headers).

use std::net::IpAddr;

use etherparse::{PacketBuilder, TcpHeader, UdpHeader};
use ipvs_proto::wire::{tcp, udp};
use proptest::prelude::*;
use proptest::sample::Index;

const CASES: u32 = 256;

/// Source and destination addresses, both of one family.
#[derive(Clone, Copy, Debug)]
enum Addrs {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

impl Addrs {
    fn ip(self) -> (IpAddr, IpAddr) {
        match self {
            Self::V4(s, d) => (IpAddr::from(s), IpAddr::from(d)),
            Self::V6(s, d) => (IpAddr::from(s), IpAddr::from(d)),
        }
    }

    fn builder(self) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match self {
            Self::V4(s, d) => PacketBuilder::ipv4(s, d, 64),
            Self::V6(s, d) => PacketBuilder::ipv6(s, d, 64),
        }
    }

    /// The length of the IP header `PacketBuilder` writes.
    fn ip_header_len(self) -> usize {
        match self {
            Self::V4(..) => 20,
            Self::V6(..) => 40,
        }
    }

    fn tcp_checksum(self, header: &TcpHeader, payload: &[u8]) -> u16 {
        match self {
            Self::V4(s, d) => header.calc_checksum_ipv4_raw(s, d, payload).unwrap(),
            Self::V6(s, d) => header.calc_checksum_ipv6_raw(s, d, payload).unwrap(),
        }
    }

    fn udp_checksum(self, header: &UdpHeader, payload: &[u8]) -> u16 {
        match self {
            Self::V4(s, d) => header.calc_checksum_ipv4_raw(s, d, payload).unwrap(),
            Self::V6(s, d) => header.calc_checksum_ipv6_raw(s, d, payload).unwrap(),
        }
    }
}

fn addrs() -> impl Strategy<Value = Addrs> {
    prop_oneof![
        any::<([u8; 4], [u8; 4])>().prop_map(|(s, d)| Addrs::V4(s, d)),
        any::<([u8; 16], [u8; 16])>().prop_map(|(s, d)| Addrs::V6(s, d)),
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..96)
}

/// An etherparse TCP header with every field random, NS included, and 0–40 bytes of raw options.
fn tcp_header() -> impl Strategy<Value = TcpHeader> {
    (any::<(u16, u16, u32, u32, u16, u16)>(), any::<[bool; 9]>(), proptest::collection::vec(any::<u8>(), 0..=40))
        .prop_map(|((src, dst, seq, ack, window, urgent), bits, options)| {
            let mut h = TcpHeader::new(src, dst, seq, window);
            h.acknowledgment_number = ack;
            h.urgent_pointer = urgent;
            [h.fin, h.syn, h.rst, h.psh, h.ack, h.urg, h.ece, h.cwr, h.ns] = bits;
            h.set_options_raw(&options).unwrap();
            h
        })
}

fn build_tcp(addrs: Addrs, header: &TcpHeader, payload: &[u8]) -> Vec<u8> {
    let builder = addrs.builder().tcp_header(header.clone());
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out.split_off(addrs.ip_header_len())
}

fn build_udp(addrs: Addrs, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let builder = addrs.builder().udp(ports.0, ports.1);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out.split_off(addrs.ip_header_len())
}

/// Our control bits as etherparse's booleans (NS is not part of `tcp::Flags`).
fn flag_bools(f: tcp::Flags) -> [bool; 8] {
    [f.fin(), f.syn(), f.rst(), f.psh(), f.ack(), f.urg(), f.contains(tcp::Flags::ECE), f.contains(tcp::Flags::CWR)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn tcp_parse_agrees_with_etherparse(addrs in addrs(), header in tcp_header(), payload in payload()) {
        let bytes = build_tcp(addrs, &header, &payload);
        let (src, dst) = addrs.ip();
        let (theirs, their_payload) = TcpHeader::from_slice(&bytes).unwrap();

        let packet = tcp::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(packet.src_port(), theirs.source_port);
        prop_assert_eq!(packet.dst_port(), theirs.destination_port);
        prop_assert_eq!(packet.seq_number(), theirs.sequence_number);
        prop_assert_eq!(packet.ack_number(), theirs.acknowledgment_number);
        prop_assert_eq!(usize::from(packet.header_len()), theirs.header_len());
        let their_flags =
            [theirs.fin, theirs.syn, theirs.rst, theirs.psh, theirs.ack, theirs.urg, theirs.ece, theirs.cwr];
        prop_assert_eq!(flag_bools(packet.flags()), their_flags);
        prop_assert_eq!(packet.window_len(), theirs.window_size);
        prop_assert_eq!(packet.urgent_at(), theirs.urgent_pointer);
        prop_assert_eq!(packet.checksum(), theirs.checksum);
        prop_assert_eq!(packet.options(), theirs.options.as_slice());
        prop_assert_eq!(packet.payload(), their_payload);
        prop_assert_eq!(packet.payload(), &payload[..]);

        prop_assert_eq!(packet.checksum(), addrs.tcp_checksum(&theirs, their_payload));
        prop_assert!(packet.verify_checksum(&src, &dst));
        let repr = tcp::Repr::parse(&packet, &src, &dst).unwrap();
        prop_assert_eq!(repr.flags.0, bytes[13]);
        prop_assert_eq!(repr.payload_len, payload.len());
    }

    #[test]
    fn tcp_emit_is_what_etherparse_reads(addrs in addrs(), header in tcp_header(), payload in payload()) {
        // Our emission, read back by etherparse: same fields, and the checksum etherparse computes.
        let (src, dst) = addrs.ip();
        let bytes = build_tcp(addrs, &header, &payload);
        let repr = tcp::Repr::parse(&tcp::Packet::new_checked(&bytes[..]).unwrap(), &src, &dst).unwrap();
        let mut ours = vec![0u8; repr.buffer_len()];
        repr.emit(&mut tcp::Packet::new_unchecked(&mut ours[..]), &src, &dst, &payload);

        let (theirs, their_payload) = TcpHeader::from_slice(&ours).unwrap();
        prop_assert_eq!((theirs.source_port, theirs.destination_port), (header.source_port, header.destination_port));
        prop_assert_eq!(theirs.sequence_number, header.sequence_number);
        prop_assert_eq!(theirs.acknowledgment_number, header.acknowledgment_number);
        let flags = |h: &TcpHeader| [h.fin, h.syn, h.rst, h.psh, h.ack, h.urg, h.ece, h.cwr];
        prop_assert_eq!(flags(&theirs), flags(&header));
        prop_assert_eq!((theirs.window_size, theirs.urgent_pointer), (header.window_size, header.urgent_pointer));
        prop_assert_eq!(theirs.header_len(), 20);
        prop_assert!(!theirs.ns);
        prop_assert_eq!(their_payload, &payload[..]);
        prop_assert_eq!(theirs.checksum, addrs.tcp_checksum(&theirs, their_payload));
    }

    #[test]
    fn tcp_checksum_verification_agrees_after_corruption(
        addrs in addrs(),
        header in tcp_header(),
        payload in payload(),
        at in any::<Index>(),
        mask in 1u8..,
    ) {
        let mut bytes = build_tcp(addrs, &header, &payload);
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        let (src, dst) = addrs.ip();

        let ours = tcp::Packet::new_checked(&bytes[..]);
        let theirs = TcpHeader::from_slice(&bytes);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok());
        if let (Ok(ours), Ok((theirs, their_payload))) = (ours, theirs) {
            let computed = addrs.tcp_checksum(&theirs, their_payload);
            // 0x0000 and 0xffff are the same one's-complement value; a computed checksum is never 0xffff.
            let valid = theirs.checksum == computed || (computed == 0 && theirs.checksum == 0xffff);
            prop_assert_eq!(ours.verify_checksum(&src, &dst), valid);
            prop_assert_eq!(tcp::Repr::parse(&ours, &src, &dst).is_ok(), valid);
        }
    }

    #[test]
    fn udp_parse_agrees_with_etherparse(addrs in addrs(), ports in any::<(u16, u16)>(), payload in payload()) {
        let bytes = build_udp(addrs, ports, &payload);
        let (src, dst) = addrs.ip();
        let (theirs, their_payload) = UdpHeader::from_slice(&bytes).unwrap();

        let packet = udp::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(packet.src_port(), theirs.source_port);
        prop_assert_eq!(packet.dst_port(), theirs.destination_port);
        prop_assert_eq!(packet.len(), theirs.length);
        prop_assert_eq!(packet.checksum(), theirs.checksum);
        prop_assert_eq!(packet.payload(), their_payload);
        prop_assert_eq!(packet.payload(), &payload[..]);

        prop_assert_eq!(packet.checksum(), addrs.udp_checksum(&theirs, their_payload));
        prop_assert!(packet.verify_checksum(&src, &dst));
        let repr = udp::Repr::parse(&packet, &src, &dst).unwrap();
        prop_assert_eq!(repr, udp::Repr { src_port: ports.0, dst_port: ports.1, payload_len: payload.len() });

        // Our emission is byte for byte what etherparse writes (both send a computed 0 as 0xffff).
        let mut ours = vec![0u8; repr.buffer_len()];
        repr.emit(&mut udp::Packet::new_unchecked(&mut ours[..]), &src, &dst, &payload);
        prop_assert_eq!(ours, bytes);
    }

    #[test]
    fn udp_checksum_verification_agrees_after_corruption(
        addrs in addrs(),
        ports in any::<(u16, u16)>(),
        payload in payload(),
        at in any::<Index>(),
        mask in 1u8..,
    ) {
        let mut bytes = build_udp(addrs, ports, &payload);
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        let (src, dst) = addrs.ip();

        // etherparse does not check the length field; we do. Compare where ours accepts the buffer.
        if let Ok(ours) = udp::Packet::new_checked(&bytes[..]) {
            let (theirs, _) = UdpHeader::from_slice(&bytes).unwrap();
            let datagram_payload = &bytes[8..usize::from(theirs.length)];
            let valid = match (theirs.checksum, addrs) {
                (0, Addrs::V4(..)) => true,
                (0, Addrs::V6(..)) => false,
                (stored, _) => stored == addrs.udp_checksum(&theirs, datagram_payload),
            };
            prop_assert_eq!(ours.verify_checksum(&src, &dst), valid);
            prop_assert_eq!(udp::Repr::parse(&ours, &src, &dst).is_ok(), valid);
        } else {
            let len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
            prop_assert!(len < 8 || len > bytes.len());
        }
    }
}
