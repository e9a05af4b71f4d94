//! The family-generic entry to the IP layer: where the addresses are, which upper-layer protocol
//! follows, and where its header starts, for IPv4 and IPv6 alike.
//!
//! [`parse`] is for a packet as received (full validation, IPv4 header checksum included). [`parse_embedded`]
//! is for the packet quoted inside an ICMP error, which is usually truncated.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use ipvs_proto::wire::{ip, ipv4};
//! use ipvs_proto::{AddressFamily, Protocol};
//!
//! let repr = ipv4::Repr {
//!     src_addr: Ipv4Addr::new(192, 0, 2, 1),
//!     dst_addr: Ipv4Addr::new(198, 51, 100, 7),
//!     next_header: Protocol::Udp,
//!     payload_len: 8,
//!     hop_limit: 64,
//!     dscp: 0,
//!     ecn: 0,
//!     ident: 1,
//!     dont_frag: true,
//!     more_frags: false,
//!     frag_offset: 0,
//! };
//! let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
//! repr.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]));
//!
//! let headers = ip::parse(&buf)?;
//! assert_eq!(headers.family(), AddressFamily::Inet);
//! assert_eq!(headers.dst_addr, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
//! assert_eq!((headers.protocol, headers.l4_offset, headers.l4_len), (Protocol::Udp, 20, 8));
//! assert_eq!(headers.fragment, ip::Fragment::None);
//! assert_eq!(headers.l4(&buf).len(), 8);
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use core::net::IpAddr;

use crate::wire::{ipv4, ipv6, Error, Result};
use crate::{AddressFamily, Protocol};

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Fragment {
    /// Not a fragment (offset 0, no "more fragments" flag).
    None,
    /// The first fragment (offset 0 with "more fragments"): it holds the upper-layer header.
    First,
    /// A later fragment (offset above 0): no upper-layer header.
    Later,
}

impl Fragment {
    fn from_fields(offset: u16, more_frags: bool) -> Self {
        match (offset, more_frags) {
            (0, false) => Self::None,
            (0, true) => Self::First,
            _ => Self::Later,
        }
    }
}

/// The IP-layer facts IPVS needs about a packet.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct IpHeaders {
    /// The source address.
    pub src_addr: IpAddr,
    /// The destination address.
    pub dst_addr: IpAddr,
    /// The upper-layer protocol (after any IPv6 extension headers).
    pub protocol: Protocol,
    /// The offset of the upper-layer header from the start of the buffer.
    pub l4_offset: usize,
    /// The length of the upper-layer data from `l4_offset`: per the IP length fields for [`parse`],
    /// what the buffer holds for [`parse_embedded`].
    pub l4_len: usize,
    /// Where the packet sits in a fragmented datagram.
    pub fragment: Fragment,
    /// The IPv4 time-to-live or IPv6 hop limit.
    pub hop_limit: u8,
}

impl IpHeaders {
    /// The address family of the packet.
    pub const fn family(&self) -> AddressFamily {
        AddressFamily::of(&self.src_addr)
    }

    /// The upper-layer bytes (`l4_offset..l4_offset + l4_len`) of the buffer these headers were parsed
    /// from; clamped (possibly empty) for a shorter buffer, so it never panics.
    pub fn l4<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let end = self.l4_offset.saturating_add(self.l4_len).min(buf.len());
        buf.get(self.l4_offset..end).unwrap_or(&[])
    }
}

/// Parses the IP header(s) of a received packet, dispatching on the version nibble.
///
/// IPv4: [`ipv4::Packet::check_len`] and the header checksum (skipped under `cfg(fuzzing)`); options
/// are skipped. IPv6: [`ipv6::Packet::check_len`] and [`ipv6::walk_extension_headers`]. Bytes past the
/// IP length fields (link-layer padding) are ignored.
///
/// # Errors
/// When the buffer is empty, the version is neither 4 nor 6, or the family's validation fails.
pub fn parse(buf: &[u8]) -> Result<IpHeaders> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => {
            let packet = ipv4::Packet::new_checked(buf)?;
            if !packet.verify_checksum() {
                return Err(Error);
            }
            let l4_offset = usize::from(packet.header_len());
            Ok(v4_headers(&packet, l4_offset, usize::from(packet.total_len()) - l4_offset))
        }
        Some(6) => {
            let packet = ipv6::Packet::new_checked(buf)?;
            v6_headers(&packet)
        }
        _ => Err(Error),
    }
}

/// Parses the IP header(s) of the packet quoted inside an ICMP error.
///
/// The IP header (and, for IPv6, every extension header) must be complete and valid, but the IPv4
/// checksum is not checked and the quoted length fields may exceed the bytes available. `l4_len` is
/// what is available after the header(s), capped by the quoted length fields. When the protocol is
/// TCP, UDP or SCTP at least 8 bytes of it must be present, so that the ports can be read. A later
/// fragment is returned as such (`fragment == Fragment::Later`): its `l4` bytes hold no header.
///
/// # Errors
/// When the header is truncated or invalid, or fewer than 8 upper-layer bytes follow a TCP, UDP or
/// SCTP header.
pub fn parse_embedded(buf: &[u8]) -> Result<IpHeaders> {
    let headers = match buf.first().map(|b| b >> 4) {
        Some(4) => {
            let packet = ipv4::Packet::new_checked_truncated(buf)?;
            let l4_offset = usize::from(packet.header_len());
            v4_headers(&packet, l4_offset, packet.payload().len())
        }
        Some(6) => {
            let packet = ipv6::Packet::new_checked_truncated(buf)?;
            v6_headers(&packet)?
        }
        _ => return Err(Error),
    };
    if headers.protocol.has_ports() && headers.l4_len < 8 {
        return Err(Error);
    }
    Ok(headers)
}

fn v4_headers(packet: &ipv4::Packet<&[u8]>, l4_offset: usize, l4_len: usize) -> IpHeaders {
    IpHeaders {
        src_addr: packet.src_addr().into(),
        dst_addr: packet.dst_addr().into(),
        protocol: packet.next_header(),
        l4_offset,
        l4_len,
        fragment: Fragment::from_fields(packet.frag_offset(), packet.more_frags()),
        hop_limit: packet.hop_limit(),
    }
}

/// The headers of an IPv6 packet whose payload is what `packet.payload()` returns (the whole payload
/// for a checked packet, what is available for a truncated one).
fn v6_headers(packet: &ipv6::Packet<&[u8]>) -> Result<IpHeaders> {
    let payload = packet.payload();
    let ext = ipv6::walk_extension_headers(packet.next_header(), payload)?;
    let fragment = match ext.fragment {
        Some(frag) => Fragment::from_fields(frag.offset, frag.more_frags),
        None => Fragment::None,
    };
    Ok(IpHeaders {
        src_addr: packet.src_addr().into(),
        dst_addr: packet.dst_addr().into(),
        protocol: ext.protocol,
        l4_offset: ipv6::HEADER_LEN + ext.offset,
        l4_len: payload.len() - ext.offset,
        fragment,
        hop_limit: packet.hop_limit(),
    })
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;
    use core::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// TCP SYN 10.0.0.1:40000 -> 10.0.0.2:80 (20-byte IPv4 header, 20-byte TCP header with its checksum
    /// left 0), TTL 63, ident 0x0102, DF. Header checksum 0x26cc checked with an independent implementation.
    static PACKET_BYTES: [u8; 40] = [
        0x45, 0x00, 0x00, 0x28, 0x01, 0x02, 0x40, 0x00, 0x3f, 0x06, 0x26, 0xcc, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00,
        0x00, 0x02, 0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x72, 0x10,
        0x00, 0x00, 0x00, 0x00,
    ];

    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn v6_packet(first: Protocol, payload: &[u8]) -> Vec<u8> {
        let repr = ipv6::Repr {
            src_addr: V6_SRC,
            dst_addr: V6_DST,
            next_header: first,
            payload_len: payload.len(),
            hop_limit: 255,
        };
        let mut buf = vec![0; repr.buffer_len() + payload.len()];
        let mut packet = ipv6::Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(payload);
        buf
    }

    fn v4_packet(f: impl FnOnce(&mut ipv4::Packet<&mut [u8]>)) -> Vec<u8> {
        let mut buf = PACKET_BYTES.to_vec();
        let mut packet = ipv4::Packet::new_unchecked(&mut buf[..]);
        f(&mut packet);
        packet.fill_checksum();
        buf
    }

    fn expected_v4() -> IpHeaders {
        IpHeaders {
            src_addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2).into(),
            protocol: Protocol::Tcp,
            l4_offset: 20,
            l4_len: 20,
            fragment: Fragment::None,
            hop_limit: 63,
        }
    }

    #[test]
    fn parse_ipv4() {
        let headers = parse(&PACKET_BYTES).unwrap();
        assert_eq!(headers, expected_v4());
        assert_eq!(headers.family(), AddressFamily::Inet);
        assert_eq!(headers.l4(&PACKET_BYTES), &PACKET_BYTES[20..]);
        // Link-layer padding past total_len is not part of the L4 data.
        let mut padded = PACKET_BYTES.to_vec();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(parse(&padded), Ok(expected_v4()));
    }

    #[test]
    fn parse_ipv4_fragments() {
        let first = v4_packet(|p| p.set_more_frags(true));
        assert_eq!(parse(&first).unwrap().fragment, Fragment::First);
        let later = v4_packet(|p| p.set_frag_offset(8));
        assert_eq!(parse(&later).unwrap().fragment, Fragment::Later);
        let last = v4_packet(|p| {
            p.set_frag_offset(1480);
            p.set_more_frags(true);
        });
        assert_eq!(parse(&last).unwrap().fragment, Fragment::Later);
    }

    #[test]
    fn parse_ipv6_with_ext_headers() {
        // Hop-by-hop, then a first fragment, then UDP (8-byte header + 4 bytes).
        let mut payload = vec![Protocol::Ipv6Frag.into(), 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[Protocol::Udp.into(), 0, 0, 1, 0, 0, 0, 42]);
        payload.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        let buf = v6_packet(Protocol::HopByHop, &payload);
        let headers = parse(&buf).unwrap();
        assert_eq!(
            headers,
            IpHeaders {
                src_addr: V6_SRC.into(),
                dst_addr: V6_DST.into(),
                protocol: Protocol::Udp,
                l4_offset: 56,
                l4_len: 12,
                fragment: Fragment::First,
                hop_limit: 255,
            }
        );
        assert_eq!(headers.family(), AddressFamily::Inet6);
        assert_eq!(headers.l4(&buf), &payload[16..]);
    }

    #[test]
    fn parse_embedded_truncated_ipv4() {
        // The quoted packet claims 40 bytes; the ICMP error kept 28 (header + 8), checksum not checked.
        let mut quoted = PACKET_BYTES[..28].to_vec();
        quoted[10] ^= 0xff;
        let headers = parse_embedded(&quoted).unwrap();
        assert_eq!(headers, IpHeaders { l4_len: 8, ..expected_v4() });
        assert_eq!(headers.l4(&quoted), &PACKET_BYTES[20..28]);
        assert_eq!(parse(&quoted), Err(Error));
    }

    #[test]
    fn parse_embedded_caps_l4_len_at_total_len() {
        // RFC 4884 pads the quoted packet: bytes past total_len are not its L4 data.
        let mut quoted = PACKET_BYTES.to_vec();
        quoted.extend_from_slice(&[0; 88]);
        assert_eq!(parse_embedded(&quoted), Ok(expected_v4()));
    }

    #[test]
    fn parse_embedded_truncated_ipv6() {
        let mut payload = vec![Protocol::Tcp.into(), 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]);
        let buf = v6_packet(Protocol::Ipv6Opts, &payload);
        let headers = parse_embedded(&buf[..56]).unwrap();
        assert_eq!((headers.protocol, headers.l4_offset, headers.l4_len), (Protocol::Tcp, 48, 8));
        assert_eq!(parse(&buf[..56]), Err(Error));
    }

    #[test]
    fn parse_embedded_accepts_short_l4_without_ports() {
        let buf = v6_packet(Protocol::Icmpv6, &[128, 0, 0, 0]);
        let headers = parse_embedded(&buf).unwrap();
        assert_eq!((headers.protocol, headers.l4_len), (Protocol::Icmpv6, 4));
    }

    #[test]
    fn parse_rejects_empty_buffer() {
        assert_eq!(parse(&[]), Err(Error));
        assert_eq!(parse_embedded(&[]), Err(Error));
    }

    #[test]
    fn parse_rejects_unknown_version() {
        let mut buf = PACKET_BYTES;
        buf[0] = 0x55;
        assert_eq!(parse(&buf), Err(Error));
        assert_eq!(parse_embedded(&buf), Err(Error));
    }

    #[test]
    fn parse_rejects_bad_ipv4_checksum() {
        let mut buf = PACKET_BYTES;
        buf[8] = 64;
        assert_eq!(parse(&buf), Err(Error));
        assert!(parse_embedded(&buf).is_ok());
    }

    #[test]
    fn parse_rejects_ipv4_total_len_past_buffer() {
        assert_eq!(parse(&PACKET_BYTES[..39]), Err(Error));
    }

    #[test]
    fn parse_rejects_ipv6_payload_past_buffer() {
        let buf = v6_packet(Protocol::Udp, &[0; 8]);
        assert_eq!(parse(&buf[..47]), Err(Error));
    }

    #[test]
    fn parse_rejects_ipv6_ext_header_past_payload() {
        let buf = v6_packet(Protocol::Ipv6Route, &[Protocol::Tcp.into(), 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&buf), Err(Error));
        assert_eq!(parse_embedded(&buf), Err(Error));
    }

    #[test]
    fn parse_embedded_rejects_truncated_ip_header() {
        assert_eq!(parse_embedded(&PACKET_BYTES[..19]), Err(Error));
        let buf = v6_packet(Protocol::Udp, &[0; 8]);
        assert_eq!(parse_embedded(&buf[..39]), Err(Error));
    }

    #[test]
    fn parse_embedded_rejects_ihl_below_5() {
        let mut buf = PACKET_BYTES;
        buf[0] = 0x44;
        assert_eq!(parse_embedded(&buf), Err(Error));
    }

    #[test]
    fn parse_embedded_rejects_l4_shorter_than_8() {
        assert_eq!(parse_embedded(&PACKET_BYTES[..27]), Err(Error));
        assert!(parse_embedded(&PACKET_BYTES[..28]).is_ok());
        let buf = v6_packet(Protocol::Sctp, &[0; 12]);
        assert_eq!(parse_embedded(&buf[..47]), Err(Error));
        assert!(parse_embedded(&buf[..48]).is_ok());
    }

    #[test]
    fn l4_never_panics_on_a_foreign_buffer() {
        let headers = parse(&PACKET_BYTES).unwrap();
        assert_eq!(headers.l4(&PACKET_BYTES[..25]), &PACKET_BYTES[20..25]);
        assert_eq!(headers.l4(&PACKET_BYTES[..10]), &[] as &[u8]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_stays_in_bounds(buf in proptest::collection::vec(any::<u8>(), 0..160), v6 in any::<bool>()) {
            let mut buf = buf;
            if let Some(b) = buf.first_mut() {
                *b = (*b & 0x0f) | if v6 { 0x60 } else { 0x40 };
            }
            for headers in [parse(&buf), parse_embedded(&buf)].into_iter().flatten() {
                prop_assert!(headers.l4_offset + headers.l4_len <= buf.len());
                prop_assert_eq!(headers.l4(&buf).len(), headers.l4_len);
            }
        }
    }
}
