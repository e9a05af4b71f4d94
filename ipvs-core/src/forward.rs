//! The transmit side of the forwarding methods (facts §9), on the caller's [`PacketBuf`]: TTL decrement, MTU
//! checks, tunnel encapsulation into headroom, and the ICMP errors the director itself sends.
//!
//! NAT's address/port rewrites are `ipvs_proto::nat`'s; this module adds what the kernel's transmitters do
//! around them.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs_conn::ConnView;
use ipvs_proto::nat::{self, Encap, Tunnel};
use ipvs_proto::wire::{checksum, icmpv4, icmpv6, ipv4, ipv6};
use ipvs_proto::{AddressFamily, FwdMethod, Protocol};

use crate::service::DestSlot;
use crate::verdict::{DropReason, IcmpKind, PacketBuf};

/// IPv4's minimum MTU (RFC 791): a tunnel leaving less refuses the packet.
pub(crate) const IPV4_MIN_MTU: u32 = 68;
/// IPv6's minimum MTU (RFC 8200).
pub(crate) const IPV6_MIN_MTU: u32 = 1280;

/// The most an IPv4 ICMP error may be (RFC 1812: 576 bytes), quote included.
const ICMPV4_MAX_LEN: usize = 576;
/// The most an ICMPv6 error may be (RFC 4443: the minimum MTU), quote included.
const ICMPV6_MAX_LEN: usize = 1280;
/// Hop limit of the ICMP errors the director sends.
const ICMP_HOP_LIMIT: u8 = 64;
/// DSCP of ICMP errors: Linux sends them with IP precedence "internetwork control" (TOS 0xc0).
const ICMP_DSCP: u8 = 0xc0 >> 2;

// Mixed-family tunnels (facts §9.4): a conn entry keeps the client's family (one family per entry, so the
// 64-byte IPv4 hot line does not grow); a conn bound to a tunnel real server of the other family stores the
// unspecified address of the client's family as its real-server address, and the true one is read from the
// real server it is bound to (`DestId` → `DestSlot::config`), which a conn keeps alive (the trash frees a real
// server only once no conn points at it).

/// The real-server address a conn entry of `family` stores for a real server at `dest`: `dest` itself, or the
/// unspecified address of `family` when the real server is of the other family (a mixed-family tunnel).
pub(crate) fn stored_daddr(dest: IpAddr, family: AddressFamily) -> IpAddr {
    match family {
        _ if AddressFamily::of(&dest) == family => dest,
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The true real-server address of a conn whose entry stores `daddr` and that is bound to `dest`: the bound
/// real server's address when it is of another family than the entry (see [`stored_daddr`]), else `daddr`.
#[inline]
pub(crate) fn real_daddr(daddr: IpAddr, dest: Option<&DestSlot>) -> IpAddr {
    match dest {
        Some(d) if AddressFamily::of(&d.config.addr.ip()) != AddressFamily::of(&daddr) => d.config.addr.ip(),
        _ => daddr,
    }
}

/// Whether a conn is a mixed-family tunnel conn, from its entry alone: bound, tunnelled, and storing the
/// unspecified address (no real server has it: the control plane refuses it). The sync master leaves such
/// conns out (facts §12: sync and mixed families exclude each other; the v0/v1 records carry one family).
pub(crate) fn is_mixed_family(view: &ConnView) -> bool {
    view.dest.is_some() && view.fwd_method() == Some(FwdMethod::Tunnel) && view.daddr.is_unspecified()
}

/// Decrements the TTL / hop limit of the IP packet at the start of `pkt` (IPv4: with an incremental header
/// checksum update). Returns `false`, changing nothing, when it is 1 or less: the packet may not be forwarded.
///
/// The caller has parsed `pkt` (its IP header is complete).
pub(crate) fn decrement_ttl(pkt: &mut [u8]) -> bool {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= ipv4::HEADER_LEN => {
            let ttl = pkt[8];
            if ttl <= 1 {
                return false;
            }
            let old = u16::from_be_bytes([pkt[8], pkt[9]]);
            let new = u16::from_be_bytes([ttl - 1, pkt[9]]);
            let sum = checksum::update_u16(u16::from_be_bytes([pkt[10], pkt[11]]), old, new);
            pkt[8] = ttl - 1;
            pkt[10..12].copy_from_slice(&sum.to_be_bytes());
            true
        }
        Some(6) if pkt.len() >= ipv6::HEADER_LEN => {
            let hop = pkt[7];
            if hop <= 1 {
                return false;
            }
            pkt[7] = hop - 1;
            true
        }
        _ => false,
    }
}

/// Whether the packet's IPv4 header has DF set (always `true` for IPv6, which routers never fragment).
pub(crate) fn dont_fragment(pkt: &[u8]) -> bool {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => pkt.get(6).is_some_and(|b| b & 0x40 != 0),
        _ => true,
    }
}

/// The ICMP error for a packet of `len` bytes that does not fit `mtu` (None if it fits or may be fragmented):
/// IPv4 with DF → fragmentation needed; IPv6 → packet too big.
pub(crate) fn mtu_error(pkt: &[u8], mtu: u32) -> Option<IcmpKind> {
    if pkt.len() as u64 <= u64::from(mtu) {
        return None;
    }
    match pkt.first().map(|b| b >> 4) {
        Some(4) if dont_fragment(pkt) => Some(IcmpKind::FragNeeded { mtu: u16::try_from(mtu).unwrap_or(u16::MAX) }),
        Some(6) => Some(IcmpKind::PacketTooBig { mtu }),
        _ => None,
    }
}

/// The encapsulation overhead a tunnel adds (outer IP + UDP/GUE or GRE).
pub(crate) fn tunnel_overhead(tunnel: &Tunnel) -> usize {
    tunnel.header_len()
}

/// Encapsulates the packet for a TUN destination: the outer headers are written into the headroom and the
/// buffer's range grows to cover them.
pub(crate) fn encapsulate(buf: &mut PacketBuf<'_>, tunnel: &Tunnel) -> Result<(), DropReason> {
    let header_len = tunnel.header_len();
    if buf.headroom() < header_len {
        return Err(DropReason::NoRoom);
    }
    let (start, len) = (buf.start(), buf.len());
    let outer = nat::encapsulate(buf.buffer_mut(), start, len, tunnel).map_err(|_| DropReason::RewriteFailed)?;
    buf.set_range_unchecked(outer, len + header_len);
    Ok(())
}

/// The GUE UDP source port for a flow: a hash of the inner flow mapped into the dynamic port range
/// (49152..=65535), as the kernel's `udp_flow_src_port` spreads flows for ECMP.
pub(crate) fn gue_source_port(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, protocol: Protocol) -> u16 {
    // FNV-1a over the inner tuple: not a security boundary, only a spread.
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    for a in [src, dst] {
        match a {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
    }
    eat(&sport.to_be_bytes());
    eat(&dport.to_be_bytes());
    eat(&[u8::from(protocol)]);
    49152 + (h % 16384) as u16
}

/// Builds the kernel's tunnel parameters for a destination.
pub(crate) fn tunnel_for(encap: Encap, src_addr: IpAddr, dst_addr: IpAddr, ident: u16, pmtu_disc: bool) -> Tunnel {
    Tunnel { encap, src_addr, dst_addr, ident, copy_dont_frag: pmtu_disc }
}

/// Whether the packet (already parsed) may be answered with an ICMP error at all: not an ICMP error itself,
/// not a later fragment, not from an unspecified/multicast/broadcast source (RFC 1122 §3.2.2, as Linux's
/// `icmp_send` checks).
pub(crate) fn may_answer_with_icmp(src: IpAddr, protocol: Protocol, l4: &[u8], later_fragment: bool) -> bool {
    if later_fragment || src.is_unspecified() || src.is_multicast() {
        return false;
    }
    if let IpAddr::V4(a) = src {
        if a.is_broadcast() {
            return false;
        }
    }
    match protocol {
        Protocol::Icmp => l4.first().is_none_or(|t| !icmpv4::Message::from(*t).is_error() && *t != 5),
        Protocol::Icmpv6 => l4.first().is_none_or(|t| !icmpv6::Message::from(*t).is_error()),
        _ => true,
    }
}

/// Replaces the packet in `buf` by an ICMP/ICMPv6 error `kind` about it, from `src` to the packet's source,
/// quoting as much of it as fits (576 bytes in all for IPv4, 1280 for IPv6) and the buffer allows. Returns the
/// address the error goes to.
///
/// The error is written in front of the packet when the headroom allows (the quote stays where it is);
/// otherwise the quote is moved back and, if the buffer is short, cut — never below the IP header plus 8 bytes.
pub(crate) fn emit_icmp_error(
    buf: &mut PacketBuf<'_>,
    src: IpAddr,
    kind: IcmpKind,
    ident: u16,
) -> Result<IpAddr, DropReason> {
    let (orig_start, orig_len) = (buf.start(), buf.len());
    let pkt = buf.packet();
    let (to, v6, min_quote) = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= ipv4::HEADER_LEN => {
            let p = ipv4::Packet::new_unchecked(pkt);
            (IpAddr::V4(p.src_addr()), false, usize::from(p.header_len()) + 8)
        }
        Some(6) if pkt.len() >= ipv6::HEADER_LEN => {
            let p = ipv6::Packet::new_unchecked(pkt);
            (IpAddr::V6(p.src_addr()), true, ipv6::HEADER_LEN + 8)
        }
        _ => return Err(DropReason::Malformed),
    };
    let (ip_len, max_len) = if v6 { (ipv6::HEADER_LEN, ICMPV6_MAX_LEN) } else { (ipv4::HEADER_LEN, ICMPV4_MAX_LEN) };
    let hdr_len = ip_len + icmpv4::HEADER_LEN;
    let family_ok = matches!((src, to), (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)));
    if !family_ok {
        return Err(DropReason::RewriteFailed);
    }
    let new_start = orig_start.saturating_sub(hdr_len);
    let room = buf.buffer().len().saturating_sub(new_start + hdr_len);
    let quote = orig_len.min(max_len - hdr_len).min(room);
    if quote < min_quote.min(orig_len) {
        return Err(DropReason::NoRoom);
    }
    let data = buf.buffer_mut();
    if new_start + hdr_len != orig_start {
        data.copy_within(orig_start..orig_start + quote, new_start + hdr_len);
    }
    let total = hdr_len + quote;
    let out = &mut data[new_start..new_start + total];
    let icmp_len = icmpv4::HEADER_LEN + quote;
    match (src, to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let repr = ipv4::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: Protocol::Icmp,
                payload_len: icmp_len,
                hop_limit: ICMP_HOP_LIMIT,
                dscp: ICMP_DSCP,
                ecn: 0,
                ident,
                dont_frag: false,
                more_frags: false,
                frag_offset: 0,
            };
            repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
            let (msg_type, code, rest) = match kind {
                IcmpKind::FragNeeded { mtu } => {
                    (icmpv4::Message::DstUnreachable, icmpv4::dst_unreachable::FRAG_NEEDED, u32::from(mtu))
                }
                IcmpKind::PortUnreachable => {
                    (icmpv4::Message::DstUnreachable, icmpv4::dst_unreachable::PORT_UNREACHABLE, 0)
                }
                IcmpKind::TimeExceeded => (icmpv4::Message::TimeExceeded, 0, 0),
                IcmpKind::Relayed { msg_type, code, rest_of_header } => {
                    (icmpv4::Message::from(msg_type), code, rest_of_header)
                }
                IcmpKind::PacketTooBig { .. } => return Err(DropReason::RewriteFailed),
            };
            let mut icmp = icmpv4::Packet::new_unchecked(&mut out[ip_len..]);
            icmp.set_msg_type(msg_type);
            icmp.set_code(code);
            icmp.set_rest_of_header(rest);
            icmp.set_checksum(0);
            icmp.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let repr = ipv6::Repr {
                src_addr: s,
                dst_addr: d,
                next_header: Protocol::Icmpv6,
                payload_len: icmp_len,
                hop_limit: ICMP_HOP_LIMIT,
            };
            repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
            let (msg_type, code, rest) = match kind {
                IcmpKind::PacketTooBig { mtu } => (icmpv6::Message::PktTooBig, 0, mtu),
                IcmpKind::PortUnreachable => {
                    (icmpv6::Message::DstUnreachable, icmpv6::dst_unreachable::PORT_UNREACHABLE, 0)
                }
                IcmpKind::TimeExceeded => (icmpv6::Message::TimeExceeded, 0, 0),
                IcmpKind::Relayed { msg_type, code, rest_of_header } => {
                    (icmpv6::Message::from(msg_type), code, rest_of_header)
                }
                IcmpKind::FragNeeded { .. } => return Err(DropReason::RewriteFailed),
            };
            let mut icmp = icmpv6::Packet::new_unchecked(&mut out[ip_len..]);
            icmp.set_msg_type(msg_type);
            icmp.set_code(code);
            icmp.set_rest_of_header(rest);
            icmp.set_checksum(0);
            icmp.fill_checksum(&s, &d);
        }
        _ => return Err(DropReason::RewriteFailed),
    }
    buf.set_range_unchecked(new_start, total);
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP datagram 192.0.2.1:1000 → 198.51.100.1:53, TTL 2, DF, 4 payload bytes.
    fn udp_v4() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x40, 0x00, 0x02, 0x11, 0x00, 0x00, 192, 0, 2, 1, 198, 51, 100, 1,
            0x03, 0xe8, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4,
        ];
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn ttl_decrement_keeps_the_header_checksum_valid() {
        let mut p = udp_v4();
        assert!(decrement_ttl(&mut p));
        let v = ipv4::Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.hop_limit(), 1);
        assert!(v.verify_checksum());
        assert!(!decrement_ttl(&mut p), "TTL 1 may not be forwarded");
        assert_eq!(p[8], 1);
    }

    #[test]
    fn mtu_errors_by_family_and_df() {
        let p = udp_v4();
        assert_eq!(mtu_error(&p, 32), None);
        assert_eq!(mtu_error(&p, 31), Some(IcmpKind::FragNeeded { mtu: 31 }));
        let mut no_df = p.clone();
        no_df[6] = 0;
        assert_eq!(mtu_error(&no_df, 31), None);
    }

    #[test]
    fn icmp_error_in_headroom_and_without() {
        let p = udp_v4();
        let mut data = vec![0u8; 28 + p.len()];
        data[28..].copy_from_slice(&p);
        let mut buf = PacketBuf::new(&mut data, 28, p.len()).unwrap();
        let src = IpAddr::V4("198.51.100.1".parse().unwrap());
        let to = emit_icmp_error(&mut buf, src, IcmpKind::PortUnreachable, 7).unwrap();
        assert_eq!(to, IpAddr::V4("192.0.2.1".parse().unwrap()));
        assert_eq!((buf.start(), buf.len()), (0, 28 + p.len()));
        let ip = ipv4::Packet::new_checked(buf.packet()).unwrap();
        assert!(ip.verify_checksum());
        let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.payload(), &p[..]);

        // No headroom: the quote moves back and is cut to what the buffer holds (header + 8 bytes at least).
        let mut data = p.clone();
        let mut buf = PacketBuf::whole(&mut data);
        assert_eq!(emit_icmp_error(&mut buf, src, IcmpKind::TimeExceeded, 7), Err(DropReason::NoRoom));
        let mut data = vec![0u8; 60];
        data[..p.len()].copy_from_slice(&p);
        let mut buf = PacketBuf::new(&mut data, 0, p.len()).unwrap();
        emit_icmp_error(&mut buf, src, IcmpKind::TimeExceeded, 7).unwrap();
        assert_eq!(buf.len(), 60);
        let ip = ipv4::Packet::new_checked(buf.packet()).unwrap();
        let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.payload(), &p[..32]);
    }
}
