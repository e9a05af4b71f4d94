//! Raw IPv4/IPv6 packets for the guest's injector, built with ipvs-proto's wire layer (valid checksums).
//!
//! TCP and SCTP packets are shaped like `ipvs_core::replay_states`' (20-byte TCP header without options,
//! ack 1 when A is set; SCTP verification tag 1, zeroed chunk values of the recorded lengths), so the kernel
//! and the engine see the same bytes.

use std::net::{IpAddr, SocketAddr};

use ipvs_proto::wire::{ipv4, ipv6, sctp, tcp, udp, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};
use ipvs_proto::wire::{SctpPacket, TcpPacket, TcpRepr, UdpPacket, UdpRepr};
use ipvs_proto::Protocol;

fn ip_header(src: IpAddr, dst: IpAddr, protocol: Protocol, payload_len: usize, ident: u16) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut buf = vec![0u8; ipv4::HEADER_LEN + payload_len];
            let repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: protocol,
                payload_len,
                hop_limit: 64,
                dscp: 0,
                ecn: 0,
                ident,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            };
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
            buf
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut buf = vec![0u8; ipv6::HEADER_LEN + payload_len];
            let repr = Ipv6Repr { src_addr: s, dst_addr: d, next_header: protocol, payload_len, hop_limit: 64 };
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
            buf
        }
        _ => panic!("mixed address families {src} → {dst}"),
    }
}

fn header_len(ip: IpAddr) -> usize {
    if ip.is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    }
}

/// A TCP segment without payload; `flags` is the flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, ident: u16) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq_number: seq,
        ack_number: u32::from(flags & 0x10 != 0),
        flags: tcp::Flags(flags),
        window_len: 64240,
        urgent_at: 0,
        payload_len: 0,
    };
    let mut buf = ip_header(src.ip(), dst.ip(), Protocol::Tcp, repr.buffer_len(), ident);
    let h = header_len(src.ip());
    repr.emit(&mut TcpPacket::new_unchecked(&mut buf[h..]), &src.ip(), &dst.ip(), &[]);
    buf
}

/// A UDP datagram with `payload_len` zero bytes.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload_len: usize, ident: u16) -> Vec<u8> {
    let repr = UdpRepr { src_port: src.port(), dst_port: dst.port(), payload_len };
    let mut buf = ip_header(src.ip(), dst.ip(), Protocol::Udp, udp::HEADER_LEN + payload_len, ident);
    let h = header_len(src.ip());
    repr.emit(&mut UdpPacket::new_unchecked(&mut buf[h..]), &src.ip(), &dst.ip(), &vec![0; payload_len]);
    buf
}

/// An SCTP packet with verification tag 1 and the given chunks (type, length with header), values zeroed.
pub fn sctp(src: SocketAddr, dst: SocketAddr, chunks: &[(u8, u16)], ident: u16) -> Vec<u8> {
    let sctp_len = sctp::HEADER_LEN + chunks.iter().map(|(_, l)| (usize::from(*l) + 3) & !3).sum::<usize>();
    let mut buf = ip_header(src.ip(), dst.ip(), Protocol::Sctp, sctp_len, ident);
    let h = header_len(src.ip());
    let body = &mut buf[h..];
    let mut at = sctp::HEADER_LEN;
    for (t, l) in chunks {
        body[at] = *t;
        body[at + 2..at + 4].copy_from_slice(&l.to_be_bytes());
        at += (usize::from(*l) + 3) & !3;
    }
    let mut p = SctpPacket::new_unchecked(body);
    p.set_src_port(src.port());
    p.set_dst_port(dst.port());
    p.set_verification_tag(1);
    p.fill_checksum();
    buf
}

/// A new flow's first packet for `protocol`: a SYN, a 16-byte datagram, or an INIT chunk.
pub fn first_packet(protocol: Protocol, src: SocketAddr, dst: SocketAddr, ident: u16) -> Vec<u8> {
    match protocol {
        Protocol::Udp => udp(src, dst, 16, ident),
        Protocol::Sctp => sctp(src, dst, &[(1, 20)], ident),
        _ => tcp(src, dst, 0x02, 1, ident),
    }
}

/// Lower-case hex, as the injector's `send` reads it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_proto::wire::Ipv4Packet;

    #[test]
    fn packets_parse_back_with_valid_checksums() {
        let c: SocketAddr = "10.9.0.1:40001".parse().unwrap();
        let v: SocketAddr = "10.0.2.100:80".parse().unwrap();
        let p = tcp(c, v, 0x02, 1, 7);
        assert_eq!(p.len(), 40);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        let t = TcpPacket::new_checked(&p[20..]).unwrap();
        assert!(t.verify_checksum(&c.ip(), &v.ip()));
        let u = udp(c, v, 16, 1);
        assert!(UdpPacket::new_checked(&u[20..]).unwrap().verify_checksum(&c.ip(), &v.ip()));
        let s = sctp(c, v, &[(1, 20)], 1);
        assert_eq!(s.len(), 20 + 12 + 20);
        assert!(SctpPacket::new_checked(&s[20..]).unwrap().verify_checksum());
        let c6: SocketAddr = "[2001:db8:9::1]:40001".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::100]:80".parse().unwrap();
        let p6 = first_packet(Protocol::Tcp, c6, v6, 0);
        assert_eq!(p6[0] >> 4, 6);
        assert!(TcpPacket::new_checked(&p6[40..]).unwrap().verify_checksum(&c6.ip(), &v6.ip()));
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
