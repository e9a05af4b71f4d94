//! Differential tests: our IPv4, IPv6, ICMPv4 and ICMPv6 parsers against etherparse 0.16, on packets
//! etherparse builds from randomized headers (addresses, TTL, identifiers, flags, fragment fields,
//! options, IPv6 extension headers, ICMP types and payload sizes).
//!
//! Known, intended differences (asserted as such below):
//! - After an IPv6 fragment header whose offset is not 0, we stop walking (as the kernel's
//!   `ipv6_find_hdr`): the bytes after it are the middle of the original payload. etherparse keeps
//!   walking the extension headers that follow.
//! - etherparse 0.16 encodes and decodes the IPv6 fragment header's offset and M flag with the wrong
//!   bit positions (JulianSchmid/etherparse#150, fixed in 0.20.x by #149/#151); its encoder and decoder
//!   agree with each other, not with RFC 8200 §4.5. [`rfc_fragment_bytes`] rewrites those two bytes
//!   into the RFC layout (from etherparse's decoded values) before our parsers see the packet.
//! - For IPv4, etherparse treats AH as an extension header; IPVS balances AH as a protocol, so the
//!   generators never put AH directly in an IPv4 packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    icmpv4::DestUnreachableHeader, IcmpEchoHeader, Icmpv4Type, IpAuthHeader, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Dscp, Ipv4Ecn, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv4Slice, Ipv6ExtensionSlice, Ipv6Extensions,
    Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, Ipv6Slice, PacketBuilder,
    PacketBuilderStep, SlicedPacket, TransportSlice,
};
use ipvs_proto::wire::{icmpv4, icmpv6, ip, ipv4, ipv6};
use ipvs_proto::Protocol;
use proptest::prelude::*;

/// What follows the IP header(s) in a generated packet.
#[derive(Clone, Debug)]
enum Upper {
    Udp(u16, u16),
    Tcp(u16, u16, u32, u16),
    /// A protocol etherparse does not slice (no transport header, no extension header).
    Raw(u8),
}

impl Upper {
    fn write(&self, step: PacketBuilderStep<IpHeaders>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match *self {
            Self::Udp(sp, dp) => step.udp(sp, dp).write(&mut out, payload).unwrap(),
            Self::Tcp(sp, dp, seq, win) => step.tcp(sp, dp, seq, win).write(&mut out, payload).unwrap(),
            Self::Raw(n) => step.write(&mut out, IpNumber(n), payload).unwrap(),
        }
        out
    }
}

mod strategies {
    use super::*;

    /// UDP or TCP.
    pub(super) fn ported_upper() -> impl Strategy<Value = Upper> {
        prop_oneof![
            any::<(u16, u16)>().prop_map(|(s, d)| Upper::Udp(s, d)),
            any::<(u16, u16, u32, u16)>().prop_map(|(s, d, q, w)| Upper::Tcp(s, d, q, w)),
        ]
    }

    pub(super) fn upper() -> impl Strategy<Value = Upper> {
        prop_oneof![
            2 => ported_upper(),
            // Not ICMP/TCP/UDP/ICMPv6 (etherparse would slice them), not an extension header.
            1 => any::<u8>()
                .prop_filter("sliced or extension protocol", |n| !matches!(n, 0 | 1 | 6 | 17 | 43 | 44 | 51 | 58 | 60))
                .prop_map(Upper::Raw),
        ]
    }

    pub(super) fn payload() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300)
    }

    /// An IPv4 header with everything but lengths, protocol and checksum (the builder sets those).
    pub(super) fn ipv4_header() -> impl Strategy<Value = Ipv4Header> {
        (
            any::<([u8; 4], [u8; 4], u8, u16)>(),
            (0u8..64, 0u8..4, any::<bool>(), any::<bool>(), 0u16..=0x1fff),
            proptest::collection::vec(any::<u8>(), 0..=10).prop_map(|words| {
                let mut bytes = Vec::new();
                for w in words {
                    bytes.extend_from_slice(&[w, w ^ 0x5a, 1, 0]);
                }
                bytes
            }),
        )
            .prop_map(|((src, dst, ttl, ident), (dscp, ecn, df, mf, off), options)| {
                let mut h = Ipv4Header::new(0, ttl, IpNumber::UDP, src, dst).unwrap();
                h.dscp = Ipv4Dscp::try_new(dscp).unwrap();
                h.ecn = Ipv4Ecn::try_new(ecn).unwrap();
                h.identification = ident;
                h.dont_fragment = df;
                h.more_fragments = mf;
                h.fragment_offset = IpFragOffset::try_new(off).unwrap();
                h.options = Ipv4Options::try_from(&options[..]).unwrap();
                h
            })
    }

    fn raw_ext(words: usize, fill: u8) -> Ipv6RawExtHeader {
        // 6 bytes of options/routing data, then 8 more per extra word.
        let data = vec![fill; 6 + 8 * words];
        Ipv6RawExtHeader::new_raw(IpNumber::UDP, &data).unwrap()
    }

    /// An IPv6 header and a random subset of extension headers (the builder chains them in RFC 8200
    /// order and sets the next-header fields and the payload length).
    pub(super) fn ipv6_headers() -> impl Strategy<Value = (Ipv6Header, Ipv6Extensions)> {
        (
            any::<([u8; 16], [u8; 16], u8, u8)>(),
            0u32..=0xf_ffff,
            proptest::option::of(0usize..3),
            proptest::option::of(0usize..3),
            proptest::option::of((0usize..3, proptest::option::of(0usize..2))),
            proptest::option::of((0u16..=0x1fff, any::<bool>(), any::<u32>())),
            proptest::option::of((any::<(u32, u32)>(), 0usize..4)),
        )
            .prop_map(|((src, dst, hop_limit, tc), flow, hbh, dest, routing, frag, auth)| {
                let header = Ipv6Header {
                    traffic_class: tc,
                    flow_label: Ipv6FlowLabel::try_new(flow).unwrap(),
                    payload_length: 0,
                    next_header: IpNumber::UDP,
                    hop_limit,
                    source: src,
                    destination: dst,
                };
                let exts = Ipv6Extensions {
                    hop_by_hop_options: hbh.map(|w| raw_ext(w, 0x01)),
                    destination_options: dest.map(|w| raw_ext(w, 0x02)),
                    routing: routing.map(|(w, fin)| Ipv6RoutingExtensions {
                        routing: raw_ext(w, 0x03),
                        final_destination_options: fin.map(|w| raw_ext(w, 0x04)),
                    }),
                    fragment: frag.map(|(off, more, ident)| {
                        Ipv6FragmentHeader::new(IpNumber::UDP, IpFragOffset::try_new(off).unwrap(), more, ident)
                    }),
                    auth: auth.map(|((spi, seq), icv_words)| {
                        IpAuthHeader::new(IpNumber::UDP, spi, seq, &vec![0xa5; 4 * icv_words]).unwrap()
                    }),
                };
                (header, exts)
            })
    }

    /// An ICMP type, code and bytes 5..8. Timestamp messages with code 0 get their fixed length from
    /// [`icmpv4_payload`].
    pub(super) fn icmp_header() -> impl Strategy<Value = (u8, u8, [u8; 4])> {
        prop_oneof![
            (any::<u8>(), any::<u8>(), any::<[u8; 4]>()),
            (Just(3u8), Just(4u8), any::<u16>()).prop_map(|(t, c, mtu)| {
                let [a, b] = mtu.to_be_bytes();
                (t, c, [0, 0, a, b])
            }),
            (prop_oneof![Just(0u8), Just(8u8), Just(128u8), Just(129u8)], any::<[u8; 4]>())
                .prop_map(|(t, rest)| (t, 0, rest)),
        ]
    }
}

/// etherparse's view of the fragment header of an IPv6 packet, and the length of the extension headers
/// up to and including it.
fn ep_fragment(slice: &Ipv6Slice<'_>) -> Option<(u16, bool, u32, IpNumber, usize)> {
    let mut len = 0;
    for ext in slice.extensions().clone() {
        match ext {
            Ipv6ExtensionSlice::Fragment(f) => {
                len += f.slice().len();
                let off = f.fragment_offset().byte_offset();
                return Some((off, f.more_fragments(), f.identification(), f.next_header(), len));
            }
            Ipv6ExtensionSlice::HopByHop(s)
            | Ipv6ExtensionSlice::Routing(s)
            | Ipv6ExtensionSlice::DestinationOptions(s) => len += s.slice().len(),
            Ipv6ExtensionSlice::Authentication(s) => len += s.slice().len(),
        }
    }
    None
}

fn check_ipv4(buf: &[u8]) -> Result<(), TestCaseError> {
    let ep = Ipv4Slice::from_slice(buf).unwrap();
    let eh = ep.header();
    let ihl = usize::from(eh.ihl()) * 4;

    let headers = ip::parse(buf).unwrap();
    prop_assert_eq!(headers.src_addr, IpAddr::V4(eh.source_addr()));
    prop_assert_eq!(headers.dst_addr, IpAddr::V4(eh.destination_addr()));
    prop_assert_eq!(u8::from(headers.protocol), eh.protocol().0);
    prop_assert_eq!(headers.hop_limit, eh.ttl());
    prop_assert_eq!(headers.l4_offset, ihl);
    prop_assert_eq!(headers.l4_len, usize::from(eh.total_len()) - ihl);
    prop_assert_eq!(headers.l4(buf), ep.payload().payload);
    prop_assert_eq!(headers.fragment != ip::Fragment::None, ep.is_payload_fragmented());

    let packet = ipv4::Packet::new_checked(buf).unwrap();
    prop_assert!(packet.verify_checksum());
    prop_assert_eq!(packet.checksum(), eh.header_checksum());
    prop_assert_eq!(packet.checksum(), eh.to_header().calc_header_checksum());
    prop_assert_eq!(packet.header_len(), eh.ihl() * 4);
    prop_assert_eq!(packet.total_len(), eh.total_len());
    prop_assert_eq!(packet.dscp(), eh.dcp().value());
    prop_assert_eq!(packet.ecn(), eh.ecn().value());
    prop_assert_eq!(packet.ident(), eh.identification());
    prop_assert_eq!(packet.dont_frag(), eh.dont_fragment());
    prop_assert_eq!(packet.more_frags(), eh.more_fragments());
    prop_assert_eq!(packet.frag_offset(), eh.fragments_offset().byte_offset());
    prop_assert_eq!(packet.options(), eh.options());
    prop_assert_eq!(packet.payload(), ep.payload().payload);
    let repr = ipv4::Repr::parse(&packet).unwrap();
    prop_assert_eq!(repr.payload_len, usize::from(eh.payload_len().unwrap()));
    prop_assert_eq!(
        headers.fragment,
        match (eh.fragments_offset().value(), eh.more_fragments()) {
            (0, false) => ip::Fragment::None,
            (0, true) => ip::Fragment::First,
            _ => ip::Fragment::Later,
        }
    );
    Ok(())
}

/// `buf` (an IPv6 packet etherparse built) with its fragment header's offset/M word rewritten in the
/// RFC 8200 layout: offset in the top 13 bits, M in the least significant bit.
fn rfc_fragment_bytes(buf: &[u8]) -> Vec<u8> {
    let ep = Ipv6Slice::from_slice(buf).unwrap();
    let mut fixed = buf.to_vec();
    let mut pos = ipv6::HEADER_LEN;
    for ext in ep.extensions().clone() {
        let len = match ext {
            Ipv6ExtensionSlice::Fragment(f) => {
                let word = (f.fragment_offset().value() << 3) | u16::from(f.more_fragments());
                fixed[pos + 2..pos + 4].copy_from_slice(&word.to_be_bytes());
                f.slice().len()
            }
            Ipv6ExtensionSlice::HopByHop(s)
            | Ipv6ExtensionSlice::Routing(s)
            | Ipv6ExtensionSlice::DestinationOptions(s) => s.slice().len(),
            Ipv6ExtensionSlice::Authentication(s) => s.slice().len(),
        };
        pos += len;
    }
    fixed
}

/// Compares our parse of `rfc_fragment_bytes(original)` with etherparse's parse of `original`.
fn check_ipv6(original: &[u8]) -> Result<(), TestCaseError> {
    let ep = Ipv6Slice::from_slice(original).unwrap();
    let eh = ep.header();
    let fixed = rfc_fragment_bytes(original);
    let buf = &fixed[..];

    let packet = ipv6::Packet::new_checked(buf).unwrap();
    prop_assert_eq!(packet.traffic_class(), eh.traffic_class());
    prop_assert_eq!(packet.flow_label(), eh.flow_label().value());
    prop_assert_eq!(packet.payload_len(), eh.payload_length());
    prop_assert_eq!(u8::from(packet.next_header()), eh.next_header().0);
    prop_assert_eq!(packet.src_addr(), eh.source_addr());
    prop_assert_eq!(packet.dst_addr(), eh.destination_addr());

    let headers = ip::parse(buf).unwrap();
    prop_assert_eq!(headers.src_addr, IpAddr::V6(eh.source_addr()));
    prop_assert_eq!(headers.dst_addr, IpAddr::V6(eh.destination_addr()));
    prop_assert_eq!(headers.hop_limit, eh.hop_limit());
    prop_assert_eq!(headers.fragment != ip::Fragment::None, ep.is_payload_fragmented());

    let frag = ep_fragment(&ep);
    match frag {
        // A later fragment: we stop right after the fragment header.
        Some((off, _, _, next, len)) if off != 0 => {
            prop_assert_eq!(headers.fragment, ip::Fragment::Later);
            prop_assert_eq!(u8::from(headers.protocol), next.0);
            prop_assert_eq!(headers.l4_offset, ipv6::HEADER_LEN + len);
            prop_assert_eq!(headers.l4_len, usize::from(eh.payload_length()) - len);
        }
        _ => {
            prop_assert_eq!(u8::from(headers.protocol), ep.payload().ip_number.0);
            prop_assert_eq!(headers.l4_offset, ipv6::HEADER_LEN + ep.extensions().slice().len());
            prop_assert_eq!(headers.l4(buf), ep.payload().payload);
            prop_assert_eq!(headers.l4_len, ep.payload().payload.len());
        }
    }
    let ext = ipv6::walk_extension_headers(packet.next_header(), packet.payload()).unwrap();
    prop_assert_eq!(ext.fragment.map(|f| (f.offset, f.more_frags, f.ident)), frag.map(|f| (f.0, f.1, f.2)));
    prop_assert_eq!(ipv6::Repr::parse(&packet).unwrap().payload_len, usize::from(eh.payload_length()));
    Ok(())
}

/// The raw-bytes ICMPv4 checksum as etherparse computes it for the message in `slice`.
fn ep_icmpv4_checksum_ok(slice: &etherparse::Icmpv4Slice<'_>) -> bool {
    let raw = Icmpv4Type::Unknown { type_u8: slice.type_u8(), code_u8: slice.code_u8(), bytes5to8: slice.bytes5to8() };
    raw.calc_checksum(slice.payload()) == slice.checksum()
}

fn check_icmpv4(buf: &[u8]) -> Result<(), TestCaseError> {
    let sliced = SlicedPacket::from_ip(buf).unwrap();
    let Some(TransportSlice::Icmpv4(es)) = sliced.transport else {
        return Err(TestCaseError::fail("etherparse did not slice ICMPv4"));
    };
    let headers = ip::parse(buf).unwrap();
    prop_assert_eq!(headers.protocol, Protocol::Icmp);
    let l4 = headers.l4(buf);
    prop_assert_eq!(l4, es.slice());
    let packet = icmpv4::Packet::new_checked(l4).unwrap();
    prop_assert_eq!(u8::from(packet.msg_type()), es.type_u8());
    prop_assert_eq!(packet.code(), es.code_u8());
    prop_assert_eq!(packet.checksum(), es.checksum());
    prop_assert_eq!(packet.rest_of_header().to_be_bytes(), es.bytes5to8());
    prop_assert_eq!(packet.payload(), es.payload());
    match es.icmp_type() {
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq }) | Icmpv4Type::EchoReply(IcmpEchoHeader { id, seq }) => {
            prop_assert_eq!((packet.echo_ident(), packet.echo_seq_no()), (id, seq));
        }
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu }) => {
            prop_assert_eq!(packet.next_hop_mtu(), next_hop_mtu);
            prop_assert!(packet.msg_type().is_error());
        }
        _ => {}
    }
    prop_assert!(ep_icmpv4_checksum_ok(&es));
    prop_assert!(packet.verify_checksum());
    prop_assert!(icmpv4::Repr::parse(&packet).is_ok());
    Ok(())
}

fn check_icmpv6(buf: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<(), TestCaseError> {
    let sliced = SlicedPacket::from_ip(buf).unwrap();
    let Some(TransportSlice::Icmpv6(es)) = sliced.transport else {
        return Err(TestCaseError::fail("etherparse did not slice ICMPv6"));
    };
    let headers = ip::parse(buf).unwrap();
    prop_assert_eq!(headers.protocol, Protocol::Icmpv6);
    let l4 = headers.l4(buf);
    prop_assert_eq!(l4, es.slice());
    let packet = icmpv6::Packet::new_checked(l4).unwrap();
    prop_assert_eq!(u8::from(packet.msg_type()), es.type_u8());
    prop_assert_eq!(packet.code(), es.code_u8());
    prop_assert_eq!(packet.checksum(), es.checksum());
    prop_assert_eq!(packet.rest_of_header().to_be_bytes(), es.bytes5to8());
    prop_assert_eq!(packet.payload(), es.payload());
    prop_assert_eq!(packet.msg_type().is_error(), es.type_u8() < 128);
    prop_assert!(es.is_checksum_valid(src.octets(), dst.octets()));
    prop_assert!(packet.verify_checksum(&src, &dst));
    prop_assert!(icmpv6::Repr::parse(&src, &dst, &packet).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ipv4_agrees_with_etherparse(
        h in strategies::ipv4_header(),
        upper in strategies::upper(),
        payload in strategies::payload(),
    ) {
        let buf = upper.write(PacketBuilder::ip(IpHeaders::Ipv4(h, Ipv4Extensions::default())), &payload);
        check_ipv4(&buf)?;
    }

    /// Random version, IHL, total length and truncation: `new_checked` accepts exactly what etherparse
    /// accepts, and `ip::parse` too once the checksum is refilled.
    #[test]
    fn ipv4_length_rules_agree_with_etherparse(
        h in strategies::ipv4_header(),
        payload in strategies::payload(),
        ver_ihl in any::<u8>(),
        total_len in prop_oneof![any::<u16>(), 0u16..400],
        cut in any::<proptest::sample::Index>(),
    ) {
        let step = PacketBuilder::ip(IpHeaders::Ipv4(h, Ipv4Extensions::default()));
        let mut buf = Upper::Udp(1, 2).write(step, &payload);
        let keep = cut.index(buf.len() + 1);
        buf.truncate(keep);
        if buf.len() >= 4 {
            buf[0] = ver_ihl;
            buf[2..4].copy_from_slice(&total_len.to_be_bytes());
        }
        if buf.len() >= ipv4::HEADER_LEN {
            ipv4::Packet::new_unchecked(&mut buf[..]).fill_checksum();
        }
        let ours = ipv4::Packet::new_checked(&buf[..]).is_ok();
        let theirs = Ipv4Slice::from_slice(&buf).is_ok();
        prop_assert_eq!(ours, theirs);
        if ver_ihl >> 4 == 4 {
            prop_assert_eq!(ip::parse(&buf).is_ok(), theirs);
        }
        if ours {
            check_ipv4(&buf)?;
        }
    }

    #[test]
    fn ipv6_agrees_with_etherparse(
        (h, exts) in strategies::ipv6_headers(),
        upper in strategies::upper(),
        payload in strategies::payload(),
    ) {
        let buf = upper.write(PacketBuilder::ip(IpHeaders::Ipv6(h, exts)), &payload);
        check_ipv6(&buf)?;
    }

    /// Truncating a packet: both reject it as received; as a quoted packet we accept it exactly when
    /// the extension headers are complete and, for TCP/UDP, 8 bytes of the header are present.
    #[test]
    fn ipv6_truncation_agrees_with_etherparse(
        (h, exts) in strategies::ipv6_headers(),
        upper in strategies::upper(),
        payload in strategies::payload(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let original = upper.write(PacketBuilder::ip(IpHeaders::Ipv6(h, exts)), &payload);
        let buf = rfc_fragment_bytes(&original);
        let full = ip::parse(&buf).unwrap();
        let keep = cut.index(buf.len() + 1);
        let short = &buf[..keep];
        prop_assert_eq!(ip::parse(short).is_ok(), Ipv6Slice::from_slice(&original[..keep]).is_ok());
        prop_assert_eq!(ip::parse(short).is_ok(), keep == buf.len());
        let needed = full.l4_offset + if full.protocol.has_ports() { 8 } else { 0 };
        match ip::parse_embedded(short) {
            Ok(embedded) => {
                prop_assert!(keep >= needed);
                prop_assert_eq!(embedded.protocol, full.protocol);
                prop_assert_eq!(embedded.l4_offset, full.l4_offset);
                prop_assert_eq!(embedded.l4_len, keep - full.l4_offset);
                prop_assert_eq!(embedded.fragment, full.fragment);
            }
            Err(_) => prop_assert!(keep < needed),
        }
    }

    #[test]
    fn icmpv4_agrees_with_etherparse(
        src in any::<[u8; 4]>(),
        dst in any::<[u8; 4]>(),
        ttl in any::<u8>(),
        (t, code, rest) in strategies::icmp_header(),
        payload in strategies::payload(),
        flip in any::<(proptest::sample::Index, u8)>(),
    ) {
        // etherparse requires timestamp messages (code 0) to be exactly 20 bytes long.
        let payload = if matches!(t, 13 | 14) && code == 0 { vec![0x42; 12] } else { payload };
        let mut buf = Vec::new();
        PacketBuilder::ipv4(src, dst, ttl).icmpv4_raw(t, code, rest).write(&mut buf, &payload).unwrap();
        check_icmpv4(&buf)?;

        // Corrupt one ICMP byte: both sides see a bad checksum.
        let (index, mask) = flip;
        let i = ipv4::HEADER_LEN + index.index(buf.len() - ipv4::HEADER_LEN);
        buf[i] ^= mask.max(1);
        let headers = ip::parse(&buf).unwrap();
        let packet = icmpv4::Packet::new_checked(headers.l4(&buf)).unwrap();
        if let Ok(sliced) = SlicedPacket::from_ip(&buf) {
            if let Some(TransportSlice::Icmpv4(es)) = sliced.transport {
                prop_assert_eq!(packet.verify_checksum(), ep_icmpv4_checksum_ok(&es));
            }
        }
        prop_assert!(!packet.verify_checksum());
        prop_assert!(icmpv4::Repr::parse(&packet).is_err());
    }

    #[test]
    fn icmpv6_agrees_with_etherparse(
        src in any::<[u8; 16]>(),
        dst in any::<[u8; 16]>(),
        hop_limit in any::<u8>(),
        (t, code, rest) in strategies::icmp_header(),
        payload in strategies::payload(),
        flip in any::<(proptest::sample::Index, u8)>(),
    ) {
        let mut buf = Vec::new();
        PacketBuilder::ipv6(src, dst, hop_limit).icmpv6_raw(t, code, rest).write(&mut buf, &payload).unwrap();
        let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
        check_icmpv6(&buf, src, dst)?;

        let (index, mask) = flip;
        let i = ipv6::HEADER_LEN + index.index(buf.len() - ipv6::HEADER_LEN);
        buf[i] ^= mask.max(1);
        let headers = ip::parse(&buf).unwrap();
        let l4 = headers.l4(&buf);
        let packet = icmpv6::Packet::new_checked(l4).unwrap();
        let es = etherparse::Icmpv6Slice::from_slice(l4).unwrap();
        prop_assert_eq!(packet.verify_checksum(&src, &dst), es.is_checksum_valid(src.octets(), dst.octets()));
        prop_assert!(!packet.verify_checksum(&src, &dst));
        prop_assert!(icmpv6::Repr::parse(&src, &dst, &packet).is_err());
    }

    /// An ICMP error quoting a truncated packet: `parse_embedded` of the quote agrees with etherparse's
    /// parse of the original packet.
    #[test]
    fn icmpv4_error_quote_agrees_with_etherparse(
        h in strategies::ipv4_header(),
        upper in strategies::ported_upper(),
        payload in strategies::payload(),
        extra in 8usize..64,
        outer in any::<([u8; 4], [u8; 4])>(),
    ) {
        let inner = upper.write(PacketBuilder::ip(IpHeaders::Ipv4(h, Ipv4Extensions::default())), &payload);
        let ep = Ipv4Slice::from_slice(&inner).unwrap();
        let ihl = usize::from(ep.header().ihl()) * 4;
        let quote = &inner[..(ihl + extra).min(inner.len())];
        let mut buf = Vec::new();
        PacketBuilder::ipv4(outer.0, outer.1, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port))
            .write(&mut buf, quote)
            .unwrap();
        check_icmpv4(&buf)?;

        let headers = ip::parse(&buf).unwrap();
        let icmp = icmpv4::Packet::new_checked(headers.l4(&buf)).unwrap();
        prop_assert!(icmp.msg_type().is_error());
        let quoted = icmp.payload();
        let embedded = ip::parse_embedded(quoted).unwrap();
        prop_assert_eq!(embedded.src_addr, IpAddr::V4(ep.header().source_addr()));
        prop_assert_eq!(embedded.dst_addr, IpAddr::V4(ep.header().destination_addr()));
        prop_assert_eq!(u8::from(embedded.protocol), ep.header().protocol().0);
        prop_assert_eq!(embedded.l4_offset, ihl);
        prop_assert_eq!(embedded.l4(quoted), &ep.payload().payload[..quoted.len() - ihl]);
        // The ports are the first four bytes of the quoted transport header.
        prop_assert_eq!(&embedded.l4(quoted)[..4], &inner[ihl..ihl + 4]);
    }
}

#[test]
fn ipv4_addresses_use_core_net_types() {
    // A fixed packet, checked once outside proptest so a failure prints plainly.
    let mut buf = Vec::new();
    PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64).udp(1000, 53).write(&mut buf, b"ipvs").unwrap();
    let headers = ip::parse(&buf).unwrap();
    assert_eq!(headers.src_addr, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(headers.dst_addr, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
    assert_eq!((headers.protocol, headers.l4_offset, headers.l4_len), (Protocol::Udp, 20, 12));
    check_ipv4(&buf).unwrap();
}
