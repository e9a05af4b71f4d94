//! Entry points for the fuzz targets in `fuzz/` (outside the workspace) and for the ordinary test that
//! replays their committed corpus. Hidden from the docs; not a stable API.
//!
//! Each function must never panic on any input; the assertions inside are the invariants the fuzzer
//! hunts for violations of.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::nat::{self, Encap, Tunnel};
use crate::state::{sctp as sctp_state, tcp as tcp_state};
use crate::wire::ip::Fragment;
use crate::wire::{icmpv4, ip, ipv4, ipv6, sctp, tcp, udp};
use crate::{AddressFamily, Protocol};

/// Parses `data` as an IP packet, walks its transport header, derives state-machine events, and
/// NAT-rewrites and encapsulates a copy, asserting round-trip invariants along the way.
pub fn packet_parser(data: &[u8]) {
    let Ok(hdr) = ip::parse(data) else { return };
    check_repr_round_trip(data);
    let l4 = hdr.l4(data);
    match hdr.protocol {
        Protocol::Tcp => {
            if let Ok(seg) = tcp::Packet::new_checked(l4) {
                let event = tcp_state::event_from_flags(seg.flags().0);
                for state in tcp_state::TcpState::ALL {
                    let _ = tcp_state::next_state(state, crate::state::Direction::Input, event, true);
                }
            }
        }
        Protocol::Sctp => {
            if let Ok(pkt) = sctp::Packet::new_checked(l4) {
                let mut types = pkt.chunks().map_while(|c| c.ok()).map(|c| u8::from(c.chunk_type));
                if let Some(first) = types.next() {
                    let _ = sctp_state::event_from_chunks(first, types.next());
                }
            }
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            if let Some(quote) = l4.get(8..) {
                let _ = ip::parse_embedded(quote);
            }
            let mut copy = data.to_vec();
            let target = SocketAddr::new(other_addr(hdr.family()), 4242);
            if nat::rewrite_icmp_error_inbound(&mut copy, &hdr, target).is_ok() {
                assert!(ip::parse(&copy).is_ok(), "an ICMP translation keeps the packet parseable");
            }
        }
        _ => {}
    }
    check_nat_round_trip(data, &hdr);
    check_encapsulation(data);
}

/// A rewrite followed by the reverse rewrite gives back the original bytes (when the transport checksum
/// was valid to begin with: SCTP's CRC is recomputed, not updated).
fn check_nat_round_trip(data: &[u8], hdr: &ip::IpHeaders) {
    let mut copy = data.to_vec();
    let new_addr = other_addr(hdr.family());
    if nat::rewrite_destination(&mut copy, hdr, new_addr, 8080).is_err() {
        return;
    }
    let after = match ip::parse(&copy) {
        Ok(after) => after,
        Err(_) => panic!("NAT rewrite produced an unparseable packet"),
    };
    assert_eq!(after.dst_addr, new_addr);
    let old_port = match hdr.l4(data).get(2..4) {
        Some(&[a, b]) if hdr.protocol.has_ports() && hdr.fragment != Fragment::Later => u16::from_be_bytes([a, b]),
        _ => 8080,
    };
    if nat::rewrite_destination(&mut copy, &after, hdr.dst_addr, old_port).is_ok() {
        let crc_valid = hdr.protocol != Protocol::Sctp
            || sctp::Packet::new_checked(hdr.l4(data)).map(|p| p.verify_checksum()).unwrap_or(false);
        if crc_valid && !cfg!(fuzzing) {
            assert_eq!(copy, data, "rewrite then reverse rewrite restores the packet");
        }
    }
}

/// IPv4/IPv6 `Repr`s: what `emit` writes parses back to the same `Repr`.
fn check_repr_round_trip(data: &[u8]) {
    if let Ok(packet) = ipv4::Packet::new_checked(data) {
        if let Ok(repr) = ipv4::Repr::parse(&packet) {
            let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]));
            let again = ipv4::Packet::new_checked(&buf[..]).and_then(|p| ipv4::Repr::parse(&p));
            assert_eq!(again, Ok(repr));
        }
    }
    if let Ok(packet) = ipv6::Packet::new_checked(data) {
        if let Ok(repr) = ipv6::Repr::parse(&packet) {
            let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut ipv6::Packet::new_unchecked(&mut buf[..]));
            let again = ipv6::Packet::new_checked(&buf[..]).and_then(|p| ipv6::Repr::parse(&p));
            assert_eq!(again, Ok(repr));
        }
    }
    if let Ok(packet) = icmpv4::Packet::new_checked(data) {
        let _ = icmpv4::Repr::parse(&packet);
    }
    if let Ok(packet) = udp::Packet::new_checked(data) {
        let _ = packet.payload();
    }
}

/// Encapsulating a valid packet gives an outer packet whose payload is exactly the inner one.
fn check_encapsulation(data: &[u8]) {
    let encaps =
        [Encap::Ipip, Encap::Gue { src_port: 1, dst_port: 6080, checksum: true }, Encap::Gre { checksum: true }];
    for (i, encap) in encaps.into_iter().enumerate() {
        let v6 = i == 1;
        let tunnel = Tunnel {
            encap,
            src_addr: if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)) },
            dst_addr: if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)) },
            ident: 1,
            copy_dont_frag: true,
        };
        let head = tunnel.header_len();
        let mut buf: Vec<u8> = vec![0u8; head];
        buf.extend_from_slice(data);
        if let Ok(start) = nat::encapsulate(&mut buf, head, data.len(), &tunnel) {
            assert_eq!(start, 0);
            assert_eq!(&buf[head..], data, "the inner packet is untouched");
            assert!(ip::parse(&buf).is_ok(), "the outer packet parses");
        }
    }
}

fn other_addr(family: AddressFamily) -> IpAddr {
    match family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
    }
}
