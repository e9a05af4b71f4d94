//! Demo: what the director does to one packet, step by step, with the ipvs-proto building blocks.
//!
//! `cargo run -q -p demo` — builds a client SYN to a VIP, parses it, runs the TCP state machine, NAT-rewrites
//! it to a real server, checks every checksum again, then tunnels a copy (GUE) as the TUN method would.

use std::net::{IpAddr, Ipv4Addr};

use ipvs_proto::nat::{self, Encap, Tunnel};
use ipvs_proto::state::{tcp, Direction};
use ipvs_proto::wire::{ip, tcp as tcp_wire, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr};
use ipvs_proto::Protocol;

fn main() {
    let client = Ipv4Addr::new(10, 9, 0, 1);
    let vip = Ipv4Addr::new(10, 0, 2, 100);
    let real = Ipv4Addr::new(10, 1, 0, 1);

    let syn = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq_number: 1,
        ack_number: 0,
        flags: tcp_wire::Flags::SYN,
        window_len: 64240,
        urgent_at: 0,
        payload_len: 0,
    };
    let ip = Ipv4Repr {
        src_addr: client,
        dst_addr: vip,
        next_header: Protocol::Tcp,
        payload_len: syn.buffer_len(),
        hop_limit: 64,
        dscp: 0,
        ecn: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut buf = vec![0u8; ip.buffer_len() + syn.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
    syn.emit(&mut TcpPacket::new_unchecked(&mut buf[20..]), &client.into(), &vip.into(), &[]);
    println!("client packet : {}", describe(&buf));
    println!("  bytes       : {}", hex(&buf));

    let hdr = match ip::parse(&buf) {
        Ok(hdr) => hdr,
        Err(e) => return eprintln!("demo packet did not parse: {e}"),
    };
    let flags = TcpPacket::new_checked(hdr.l4(&buf)).map(|t| t.flags().0).unwrap_or(0);
    let event = tcp::event_from_flags(flags);
    let step = tcp::transition(tcp::TcpState::None, Direction::Input, event, false);
    let timeout = tcp::TcpTimeouts::default().timeout(step.new_state);
    println!(
        "state machine : NONE --{:?}--> {} (timeout {} s, counts as active: {})",
        event,
        step.new_state.proc_name(),
        timeout.secs(),
        step.new_state.is_active()
    );

    let mut nat_buf = buf.clone();
    if let Err(e) = nat::rewrite_destination(&mut nat_buf, &hdr, IpAddr::V4(real), 8080) {
        return eprintln!("rewrite failed: {e}");
    }
    println!("NAT to server : {}", describe(&nat_buf));
    println!("  bytes       : {}", hex(&nat_buf));

    let tunnel = Tunnel {
        encap: Encap::Gue { src_port: 49152, dst_port: 6080, checksum: true },
        src_addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        dst_addr: IpAddr::V4(real),
        ident: 7,
        copy_dont_frag: true,
    };
    let head = tunnel.header_len();
    let mut tun_buf = vec![0u8; head];
    tun_buf.extend_from_slice(&buf);
    match nat::encapsulate(&mut tun_buf, head, buf.len(), &tunnel) {
        Ok(start) => println!("TUN (GUE)     : {} around the original packet", describe(&tun_buf[start..])),
        Err(e) => eprintln!("encapsulation failed: {e}"),
    }
}

/// One line: addresses, ports, protocol and whether every checksum verifies.
fn describe(pkt: &[u8]) -> String {
    let Ok(hdr) = ip::parse(pkt) else { return "malformed (dropped)".into() };
    let l4 = hdr.l4(pkt);
    let ports = match l4.get(..4) {
        Some(p) if hdr.protocol.has_ports() => (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])),
        _ => (0, 0),
    };
    let l4_ok = match hdr.protocol {
        Protocol::Tcp => TcpPacket::new_checked(l4).map(|t| t.verify_checksum(&hdr.src_addr, &hdr.dst_addr)),
        Protocol::Udp => {
            ipvs_proto::wire::UdpPacket::new_checked(l4).map(|u| u.verify_checksum(&hdr.src_addr, &hdr.dst_addr))
        }
        _ => Ok(true),
    };
    format!(
        "{} {}:{} -> {}:{} ttl {} ({} bytes, checksums {})",
        hdr.protocol,
        hdr.src_addr,
        ports.0,
        hdr.dst_addr,
        ports.1,
        hdr.hop_limit,
        pkt.len(),
        if l4_ok == Ok(true) { "ok" } else { "BAD" }
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
