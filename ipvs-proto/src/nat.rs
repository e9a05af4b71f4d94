//! NAT rewrites and tunnel encapsulation, in place.
//!
//! - [`rewrite_destination`] (client → real server, NAT inbound) and [`rewrite_source`] (real server →
//!   client, NAT outbound) change one address and port of a TCP, UDP or SCTP packet over IPv4 or IPv6.
//!   As the kernel does, TCP and UDP checksums are updated incrementally (RFC 1624) over the changed
//!   address (pseudo-header) and port words; an absent (zero) IPv4 UDP checksum stays absent and a
//!   computed zero is sent as `0xffff`; SCTP gets a full CRC32c recomputation; the IPv4 header checksum
//!   is updated incrementally.
//! - [`rewrite_icmp_error_inbound`] and [`rewrite_icmp_error_outbound`] translate an ICMP error about a
//!   NAT connection: the outer address, the quoted packet's address and port (and the quoted IPv4 header
//!   checksum), then a full ICMP checksum. The quoted transport checksum is left alone, as the kernel
//!   leaves it (the quote is usually truncated).
//! - [`encapsulate`] writes an outer IPv4/IPv6 header (+ UDP + GUE, or GRE) into headroom in front of a
//!   packet, for the TUN forwarding method.
//!
//! ```
//! use ipvs_proto::nat;
//! use ipvs_proto::wire::{ip, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, tcp};
//! use ipvs_proto::Protocol;
//! use core::net::{IpAddr, Ipv4Addr};
//!
//! // A SYN from 10.9.0.1:40000 to the VIP 10.0.2.100:80 ...
//! let (c, v) = (Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 0, 2, 100));
//! let tcp = TcpRepr {
//!     src_port: 40000, dst_port: 80, seq_number: 1, ack_number: 0, flags: tcp::Flags::SYN,
//!     window_len: 64240, urgent_at: 0, payload_len: 0,
//! };
//! let ip = Ipv4Repr {
//!     src_addr: c, dst_addr: v, next_header: Protocol::Tcp, payload_len: tcp.buffer_len(), hop_limit: 64,
//!     dscp: 0, ecn: 0, ident: 1, dont_frag: true, more_frags: false, frag_offset: 0,
//! };
//! let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
//! ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
//! tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[20..]), &c.into(), &v.into(), &[]);
//!
//! // ... goes to the real server 10.1.0.1:8080.
//! let hdr = ip::parse(&buf).unwrap();
//! let rs = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
//! nat::rewrite_destination(&mut buf, &hdr, rs, 8080).unwrap();
//!
//! let after = ip::parse(&buf).unwrap(); // the IPv4 checksum still verifies
//! assert_eq!(after.dst_addr, rs);
//! let seg = TcpPacket::new_checked(after.l4(&buf)).unwrap();
//! assert_eq!(seg.dst_port(), 8080);
//! assert!(seg.verify_checksum(&after.src_addr, &after.dst_addr));
//! ```

use core::net::{IpAddr, SocketAddr};

use crate::wire::ip::{self, Fragment, IpHeaders};
use crate::wire::{checksum, encap, icmpv4, icmpv6, ipv4, ipv6, sctp, tcp, udp, Error, Result};
use crate::{AddressFamily, Protocol};

/// Which end of a packet a rewrite changes.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum End {
    Source,
    Destination,
}

/// Rewrites the destination address and port of a client → VIP packet to the real server (NAT inbound).
///
/// `hdr` must come from [`ip::parse`] of `buf`. For protocols without ports (ICMP, ESP, …) only the
/// address changes (and an ICMPv6 checksum, which covers it). A later fragment has no transport header:
/// only its address changes.
///
/// # Errors
/// When `addr` is not of the packet's family or the transport header is too short to rewrite.
pub fn rewrite_destination(buf: &mut [u8], hdr: &IpHeaders, addr: IpAddr, port: u16) -> Result<()> {
    rewrite(buf, hdr, End::Destination, addr, port)
}

/// Rewrites the source address and port of a real server → client packet to the VIP (NAT outbound).
///
/// Same rules as [`rewrite_destination`].
///
/// # Errors
/// When `addr` is not of the packet's family or the transport header is too short to rewrite.
pub fn rewrite_source(buf: &mut [u8], hdr: &IpHeaders, addr: IpAddr, port: u16) -> Result<()> {
    rewrite(buf, hdr, End::Source, addr, port)
}

fn rewrite(buf: &mut [u8], hdr: &IpHeaders, end: End, addr: IpAddr, port: u16) -> Result<()> {
    let old_addr = match end {
        End::Source => hdr.src_addr,
        End::Destination => hdr.dst_addr,
    };
    if AddressFamily::of(&addr) != hdr.family() {
        return Err(Error);
    }
    let l4_range = hdr.l4_offset..hdr.l4_offset.saturating_add(hdr.l4_len);
    if l4_range.end > buf.len() {
        return Err(Error);
    }
    // Transport first (it may fail on a short header), then the IP header: a failed rewrite leaves the
    // packet as it was.
    if hdr.fragment != Fragment::Later {
        let l4 = &mut buf[l4_range];
        rewrite_l4(l4, hdr.protocol, end, &old_addr, &addr, port)?;
    }
    rewrite_ip_addr(buf, end, &addr);
    Ok(())
}

/// Rewrites one address of the IP header at the start of `buf` (IPv4: with an incremental header
/// checksum update). The caller has checked the family and the header's length.
fn rewrite_ip_addr(buf: &mut [u8], end: End, addr: &IpAddr) {
    match addr {
        IpAddr::V4(new) => {
            let mut packet = ipv4::Packet::new_unchecked(buf);
            let old = match end {
                End::Source => packet.src_addr(),
                End::Destination => packet.dst_addr(),
            };
            let sum = checksum::update(packet.checksum(), &old.octets(), &new.octets());
            match end {
                End::Source => packet.set_src_addr(*new),
                End::Destination => packet.set_dst_addr(*new),
            }
            packet.set_checksum(sum);
        }
        IpAddr::V6(new) => {
            let mut packet = ipv6::Packet::new_unchecked(buf);
            match end {
                End::Source => packet.set_src_addr(*new),
                End::Destination => packet.set_dst_addr(*new),
            }
        }
    }
}

fn addr_bytes(addr: &IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// Rewrites the port at `end` of a transport header and fixes its checksum for the address change
/// `old_addr` → `new_addr` (pseudo-header) and the port change.
fn rewrite_l4(
    l4: &mut [u8],
    protocol: Protocol,
    end: End,
    old_addr: &IpAddr,
    new_addr: &IpAddr,
    port: u16,
) -> Result<()> {
    let (old_a, n) = addr_bytes(old_addr);
    let (new_a, _) = addr_bytes(new_addr);
    let (old_a, new_a) = (&old_a[..n], &new_a[..n]);
    match protocol {
        Protocol::Tcp => {
            let mut seg = tcp::Packet::new_checked(l4)?;
            let old_port = match end {
                End::Source => seg.src_port(),
                End::Destination => seg.dst_port(),
            };
            let sum = checksum::update(seg.checksum(), old_a, new_a);
            let sum = checksum::update_u16(sum, old_port, port);
            match end {
                End::Source => seg.set_src_port(port),
                End::Destination => seg.set_dst_port(port),
            }
            seg.set_checksum(sum);
        }
        Protocol::Udp => {
            // Only the 8-byte header is needed; the length field may describe more than a first fragment.
            let head = l4.get_mut(..udp::HEADER_LEN).ok_or(Error)?;
            let mut dgram = udp::Packet::new_unchecked(head);
            let old_port = match end {
                End::Source => dgram.src_port(),
                End::Destination => dgram.dst_port(),
            };
            let sum = udp::update_checksum(dgram.checksum(), old_a, new_a);
            let sum = udp::update_checksum(sum, &old_port.to_be_bytes(), &port.to_be_bytes());
            match end {
                End::Source => dgram.set_src_port(port),
                End::Destination => dgram.set_dst_port(port),
            }
            dgram.set_checksum(sum);
        }
        Protocol::Sctp => {
            let mut pkt = sctp::Packet::new_checked(l4)?;
            match end {
                End::Source => pkt.set_src_port(port),
                End::Destination => pkt.set_dst_port(port),
            }
            // CRC32c cannot be updated incrementally; the kernel recomputes it too.
            pkt.fill_checksum();
        }
        Protocol::Icmpv6 => {
            // No ports, but the checksum covers the pseudo-header.
            let mut msg = icmpv6::Packet::new_checked(l4)?;
            let sum = checksum::update(msg.checksum(), old_a, new_a);
            msg.set_checksum(sum);
        }
        _ => {}
    }
    Ok(())
}

/// Translates an ICMP error sent by a client about a packet of a NAT connection (inbound).
///
/// The client quotes the packet the director sent it (VIP:vport → client). The outer destination
/// becomes the real server's address; the quoted source becomes `real` (address and port); the quoted
/// IPv4 header checksum is updated and the ICMP checksum recomputed.
///
/// # Errors
/// When the packet is not an ICMP/ICMPv6 error quoting a TCP, UDP or SCTP packet of the same family as
/// `real`, or is too short to rewrite.
pub fn rewrite_icmp_error_inbound(buf: &mut [u8], hdr: &IpHeaders, real: SocketAddr) -> Result<()> {
    rewrite_icmp_error(buf, hdr, End::Destination, real)
}

/// Translates an ICMP error sent by a real server about a packet of a NAT connection (outbound).
///
/// The real server quotes the packet it received (client → real server). The outer source becomes the
/// VIP; the quoted destination becomes `virt` (address and port); checksums as for
/// [`rewrite_icmp_error_inbound`].
///
/// # Errors
/// As [`rewrite_icmp_error_inbound`].
pub fn rewrite_icmp_error_outbound(buf: &mut [u8], hdr: &IpHeaders, virt: SocketAddr) -> Result<()> {
    rewrite_icmp_error(buf, hdr, End::Source, virt)
}

/// The length of the ICMP header before the quoted packet.
const ICMP_HEADER_LEN: usize = 8;

fn rewrite_icmp_error(buf: &mut [u8], hdr: &IpHeaders, outer_end: End, new: SocketAddr) -> Result<()> {
    let family = hdr.family();
    let is_error = match (family, hdr.protocol) {
        (AddressFamily::Inet, Protocol::Icmp) => icmpv4::Packet::new_checked(hdr.l4(buf))?.msg_type().is_error(),
        (AddressFamily::Inet6, Protocol::Icmpv6) => icmpv6::Packet::new_checked(hdr.l4(buf))?.msg_type().is_error(),
        _ => false,
    };
    if !is_error || hdr.fragment != Fragment::None || AddressFamily::of(&new.ip()) != family {
        return Err(Error);
    }
    let l4_end = hdr.l4_offset.saturating_add(hdr.l4_len);
    let quote_start = hdr.l4_offset + ICMP_HEADER_LEN;
    let quote = buf.get(quote_start..l4_end).ok_or(Error)?;
    let inner = ip::parse_embedded(quote)?;
    if !inner.protocol.has_ports() || inner.fragment == Fragment::Later || inner.family() != family {
        return Err(Error);
    }
    // The quoted packet travelled the other way: the outer destination is the quote's source.
    let inner_end = match outer_end {
        End::Destination => End::Source,
        End::Source => End::Destination,
    };
    let quote = &mut buf[quote_start..l4_end];
    // Quoted port (bytes 0..2 source, 2..4 destination, for TCP, UDP and SCTP alike).
    let port_at = inner.l4_offset + if inner_end == End::Source { 0 } else { 2 };
    quote.get_mut(port_at..port_at + 2).ok_or(Error)?.copy_from_slice(&new.port().to_be_bytes());
    rewrite_ip_addr(quote, inner_end, &new.ip());
    rewrite_ip_addr(buf, outer_end, &new.ip());

    // Full ICMP checksum over the message, with the new outer addresses for ICMPv6's pseudo-header.
    let (src, dst) = match outer_end {
        End::Source => (new.ip(), hdr.dst_addr),
        End::Destination => (hdr.src_addr, new.ip()),
    };
    let msg = &mut buf[hdr.l4_offset..l4_end];
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => icmpv6::Packet::new_unchecked(msg).fill_checksum(&s, &d),
        _ => icmpv4::Packet::new_unchecked(msg).fill_checksum(),
    }
    Ok(())
}

/// The encapsulation a TUN destination uses (`ipvsadm --tun-type`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Encap {
    /// IP-in-IP: the outer IP header only (protocol 4 for an inner IPv4 packet, 41 for IPv6).
    Ipip,
    /// Generic UDP Encapsulation: outer IP + UDP + 4-byte GUE header.
    Gue {
        /// UDP source port: a flow hash of the inner packet, so ECMP spreads flows.
        src_port: u16,
        /// UDP destination port (`--tun-port`).
        dst_port: u16,
        /// Compute the UDP checksum (`--tun-nocsum` off / `--tun-csum`); otherwise it is 0.
        checksum: bool,
    },
    /// GRE: outer IP + 4-byte GRE header (8 with a checksum).
    Gre {
        /// Include a GRE checksum (`--tun-csum`).
        checksum: bool,
    },
}

/// The outer header of a tunnelled packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Tunnel {
    /// The encapsulation.
    pub encap: Encap,
    /// The outer source: the director's address toward the destination.
    pub src_addr: IpAddr,
    /// The outer destination: the real server.
    pub dst_addr: IpAddr,
    /// The outer IPv4 identification (from the caller's IP-ID generator); unused for IPv6.
    pub ident: u16,
    /// Copy the inner DF bit to the outer IPv4 header (the kernel's `pmtu_disc` = 1).
    pub copy_dont_frag: bool,
}

impl Tunnel {
    /// The number of bytes [`encapsulate`] writes in front of the inner packet.
    pub fn header_len(&self) -> usize {
        let ip = match self.dst_addr {
            IpAddr::V4(_) => ipv4::HEADER_LEN,
            IpAddr::V6(_) => ipv6::HEADER_LEN,
        };
        ip + match self.encap {
            Encap::Ipip => 0,
            Encap::Gue { .. } => udp::HEADER_LEN + encap::GUE_HEADER_LEN,
            Encap::Gre { checksum } => encap::GRE_HEADER_LEN + if checksum { 4 } else { 0 },
        }
    }
}

/// Encapsulates the IP packet at `buf[inner_offset..inner_offset + inner_len]` by writing the outer
/// headers into the `tunnel.header_len()` bytes just before it. Returns the offset where the outer
/// packet starts.
///
/// The outer IP header follows the kernel (facts §9.4): TTL/hop limit and DSCP copied from the inner
/// packet, ECN encapsulated (a CE inner packet gets ECT(0) outside), DF copied only with
/// `copy_dont_frag`. The remote-checksum GUE option is never written: packets here always carry complete
/// checksums, the case in which the kernel leaves it out too.
///
/// The outer family is the tunnel addresses', whatever the inner packet's (mixed-family tunnels, facts §9.4):
/// an IPv4 packet in IPv6 gets next header 4 (IPIP), GUE protocol 4 or GRE protocol 0x0800, and its TTL as the
/// outer hop limit; an IPv6 packet in IPv4 gets protocol 41, GUE protocol 41 or GRE 0x86DD, its hop limit as
/// the outer TTL, and DF clear (an IPv6 packet has no DF to copy).
///
/// # Errors
/// When the headroom is too small, the inner bytes are not a valid IP packet, the tunnel's two addresses are of
/// different families, or the outer packet would exceed 65535 bytes (IPv4 total length / IPv6 payload length).
pub fn encapsulate(buf: &mut [u8], inner_offset: usize, inner_len: usize, tunnel: &Tunnel) -> Result<usize> {
    let header_len = tunnel.header_len();
    let start = inner_offset.checked_sub(header_len).ok_or(Error)?;
    let end = inner_offset.checked_add(inner_len).ok_or(Error)?;
    let inner = buf.get(inner_offset..end).ok_or(Error)?;
    let (inner_protocol, hop_limit, dsfield, dont_frag) = match inner.first().map(|b| b >> 4) {
        Some(4) => {
            let p = ipv4::Packet::new_checked(inner)?;
            (Protocol::IpIp, p.hop_limit(), (p.dscp() << 2) | p.ecn(), p.dont_frag())
        }
        Some(6) => {
            let p = ipv6::Packet::new_checked(inner)?;
            (Protocol::Ipv6, p.hop_limit(), p.traffic_class(), false)
        }
        _ => return Err(Error),
    };
    // RFC 6040 / Linux INET_ECN_encapsulate: copy ECN, except CE becomes ECT(0).
    let ecn = match dsfield & 0b11 {
        0b11 => 0b10,
        other => other,
    };
    let dsfield = (dsfield & !0b11) | ecn;

    let ip_len = match tunnel.dst_addr {
        IpAddr::V4(_) => ipv4::HEADER_LEN,
        IpAddr::V6(_) => ipv6::HEADER_LEN,
    };
    let encap_len = header_len - ip_len;
    let outer_payload_len = encap_len + inner_len;
    if outer_payload_len + ip_len > usize::from(u16::MAX) {
        return Err(Error);
    }
    let next_header = match tunnel.encap {
        Encap::Ipip => inner_protocol,
        Encap::Gue { .. } => Protocol::Udp,
        Encap::Gre { .. } => Protocol::Gre,
    };

    let outer = &mut buf[start..end];
    match (tunnel.src_addr, tunnel.dst_addr) {
        (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
            let repr = ipv4::Repr {
                src_addr,
                dst_addr,
                next_header,
                payload_len: outer_payload_len,
                hop_limit,
                dscp: dsfield >> 2,
                ecn: dsfield & 0b11,
                ident: tunnel.ident,
                dont_frag: tunnel.copy_dont_frag && dont_frag,
                more_frags: false,
                frag_offset: 0,
            };
            repr.emit(&mut ipv4::Packet::new_unchecked(&mut outer[..]));
        }
        (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => {
            let repr = ipv6::Repr { src_addr, dst_addr, next_header, payload_len: outer_payload_len, hop_limit };
            let mut packet = ipv6::Packet::new_unchecked(&mut outer[..]);
            repr.emit(&mut packet);
            packet.set_traffic_class(dsfield);
        }
        _ => return Err(Error),
    }

    let encap_and_inner = &mut outer[ip_len..];
    match tunnel.encap {
        Encap::Ipip => {}
        Encap::Gue { src_port, dst_port, checksum } => {
            let gue = encap::GueRepr { protocol: inner_protocol, remote_checksum: None };
            gue.emit_header(&mut encap::GuePacket::new_unchecked(&mut encap_and_inner[udp::HEADER_LEN..]));
            let udp_repr = udp::Repr { src_port, dst_port, payload_len: outer_payload_len - udp::HEADER_LEN };
            let mut dgram = udp::Packet::new_unchecked(&mut encap_and_inner[..]);
            udp_repr.emit_header(&mut dgram);
            if checksum {
                dgram.fill_checksum(&tunnel.src_addr, &tunnel.dst_addr);
            }
        }
        Encap::Gre { checksum } => {
            let ethertype =
                if inner_protocol == Protocol::IpIp { encap::ETHERTYPE_IPV4 } else { encap::ETHERTYPE_IPV6 };
            let gre = encap::GreRepr { protocol_type: ethertype, checksum, key: None, sequence: None };
            let mut packet = encap::GrePacket::new_unchecked(&mut encap_and_inner[..]);
            gre.emit_header(&mut packet);
            if checksum {
                packet.fill_checksum();
            }
        }
    }
    Ok(start)
}

#[cfg(test)]
mod tests;
