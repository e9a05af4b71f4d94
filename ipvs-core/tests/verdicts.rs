//! Every verdict path of the engine, with real packet bytes: packets are built by `etherparse`, handed to
//! [`Engine::handle_packet`], and the bytes that come out are checked field by field, with every checksum
//! recomputed independently (etherparse for IPv4 headers, TCP, UDP and ICMP; a plain bitwise CRC32c for SCTP; a
//! plain one's-complement sum for GRE).
//!
//! | verdict | tests |
//! |---|---|
//! | `Forward` NAT in/out | `nat_tcp_*`, `nat_udp_*`, `nat_sctp_*`, `nat_ipv6_*` |
//! | `Forward` DR | `dr_*` |
//! | `Forward` TUN IPIP / GUE / GRE | `tun_*` |
//! | `Local` | `local_node_*` |
//! | `Pass` | `pass_*` |
//! | `Drop(reason)` | `drop_*` (one per reason the engine can produce from packets) |
//! | `SendIcmp` | `icmp_port_unreachable_*`, `icmp_frag_needed_*`, `icmp_packet_too_big_*`, `icmp_time_exceeded_*`, `nat_icmp_send_*`, `icmp_error_about_our_tunnel_packet_*` (relayed) |
//! | ICMP errors translated | `icmp_error_*`, `icmpv6_error_*` |
//!
//! `DropReason::ConnInsert` is the one reason without a test here: only racing threads can produce it (a
//! template or a conn vanishing between two table calls).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{Ipv4HeaderSlice, PacketBuilder};
use ipvs_core::conn::ConnTableConfig;
use ipvs_core::defense::{Defense, DefenseMode};
use ipvs_core::proto::{DestId, Duration, FwdMethod, Instant, Protocol, ServiceKey};
use ipvs_core::{
    DestConfig, Direction, DropReason, Engine, EngineConfig, Event, IcmpKind, PacketBuf, Persistence, ServiceConfig,
    TunnelConfig, TunnelCsum, TunnelKind, Verdict,
};

mod support;
use support::{checksums_ok, ones_sum};

const HEADROOM: usize = 64;
const NOW: Instant = Instant::from_secs(10);

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const RS1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const RS2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const LOCAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn tcp_svc(port: u16) -> ServiceKey {
    ServiceKey::Addr { protocol: Protocol::Tcp, addr: sa(VIP, port) }
}

fn udp_svc(port: u16) -> ServiceKey {
    ServiceKey::Addr { protocol: Protocol::Udp, addr: sa(VIP, port) }
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::new(1024, *b"verdict-test-key");
    c.conn_table = ConnTableConfig::new(1024, *b"verdict-test-key").with_n_shards(2);
    c
}

/// An engine with one service (`rr`) and one real server per entry of `dests`.
fn engine_with(cfg: EngineConfig, key: ServiceKey, dests: &[DestConfig]) -> Engine {
    let e = Engine::new(cfg).unwrap();
    add(&e, key, dests);
    e
}

fn add(e: &Engine, key: ServiceKey, dests: &[DestConfig]) {
    let mut s = ServiceConfig::new(key);
    s.scheduler = "rr".into();
    e.add_service(Instant::ZERO, s).unwrap();
    for d in dests {
        e.add_dest(Instant::ZERO, &key, *d).unwrap();
    }
}

fn dest(addr: SocketAddr, fwd: FwdMethod) -> DestConfig {
    DestConfig::new(addr, fwd)
}

/// Hands `pkt` to the engine in a buffer with headroom and room after it; returns the verdict and the bytes
/// the buffer's range covers afterwards.
fn run(e: &Engine, pkt: &[u8], dir: Direction) -> (Verdict, Vec<u8>) {
    run_marked(e, pkt, dir, 0)
}

fn run_marked(e: &Engine, pkt: &[u8], dir: Direction, fwmark: u32) -> (Verdict, Vec<u8>) {
    let mut data = vec![0u8; HEADROOM + pkt.len() + 64];
    data[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    let mut buf = PacketBuf::new(&mut data, HEADROOM, pkt.len()).unwrap().with_fwmark(fwmark);
    let v = e.handle_packet(NOW, &mut buf, dir);
    (v, buf.packet().to_vec())
}

// ---- packet builders (etherparse) ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Tcp {
    Syn,
    Ack,
    SynAck,
    Rst,
}

fn tcp4(src: SocketAddr, dst: SocketAddr, kind: Tcp, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { unreachable!() };
    let b = PacketBuilder::ipv4(s.octets(), d.octets(), 64).tcp(src.port(), dst.port(), 1000, 64240);
    let b = match kind {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(1),
        Tcp::SynAck => b.syn().ack(1),
        Tcp::Rst => b.rst(),
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn tcp6(src: SocketAddr, dst: SocketAddr, kind: Tcp, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src.ip(), dst.ip()) else { unreachable!() };
    let b = PacketBuilder::ipv6(s.octets(), d.octets(), 64).tcp(src.port(), dst.port(), 1000, 64240);
    let b = match kind {
        Tcp::Syn => b.syn(),
        Tcp::Ack => b.ack(1),
        Tcp::SynAck => b.syn().ack(1),
        Tcp::Rst => b.rst(),
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp4(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { unreachable!() };
    let mut out = Vec::new();
    PacketBuilder::ipv4(s.octets(), d.octets(), 64).udp(src.port(), dst.port()).write(&mut out, payload).unwrap();
    out
}

/// An SCTP packet with one chunk (type `chunk`, 20 bytes), verification tag 7, CRC32c by [`crc32c`].
fn sctp4(src: SocketAddr, dst: SocketAddr, chunk: u8) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { unreachable!() };
    let mut body = vec![0u8; 12 + 20];
    body[0..2].copy_from_slice(&src.port().to_be_bytes());
    body[2..4].copy_from_slice(&dst.port().to_be_bytes());
    body[4..8].copy_from_slice(&7u32.to_be_bytes());
    body[12] = chunk;
    body[14..16].copy_from_slice(&20u16.to_be_bytes());
    let crc = crc32c(&body);
    body[8..12].copy_from_slice(&crc.to_le_bytes());
    let mut h =
        etherparse::Ipv4Header::new(body.len() as u16, 64, etherparse::IpNumber(132), s.octets(), d.octets()).unwrap();
    h.header_checksum = h.calc_header_checksum();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Sets DF (and optionally MF) of an IPv4 packet and fixes its header checksum (etherparse).
fn set_ipv4_flags(pkt: &mut [u8], df: bool, mf: bool) {
    let mut h = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
    h.dont_fragment = df;
    h.more_fragments = mf;
    h.header_checksum = h.calc_header_checksum();
    pkt[..20].copy_from_slice(&h.to_bytes());
}

fn set_ttl(pkt: &mut [u8], ttl: u8) {
    let mut h = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
    h.time_to_live = ttl;
    h.header_checksum = h.calc_header_checksum();
    pkt[..20].copy_from_slice(&h.to_bytes());
}

/// An ICMPv4 destination-unreachable (port) from `src` to `dst` quoting `quoted`.
fn icmp4_unreach(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
        .write(&mut out, quoted)
        .unwrap();
    out
}

// ---- independent checks -------------------------------------------------------------------------------------

/// CRC32c (Castagnoli, reflected, poly 0x82F63B78), bit by bit.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn ipv4_header_ok(pkt: &[u8]) {
    let h = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 header checksum");
}

fn dst_of(pkt: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19])
}

fn src_of(pkt: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])
}

fn ports_of(pkt: &[u8]) -> (u16, u16) {
    let l4 = usize::from(pkt[0] & 0xf) * 4;
    (u16::from_be_bytes([pkt[l4], pkt[l4 + 1]]), u16::from_be_bytes([pkt[l4 + 2], pkt[l4 + 3]]))
}

// ---- Forward: NAT ------------------------------------------------------------------------------------------

#[test]
fn nat_tcp_inbound_and_reply() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let syn = tcp4(sa(CLIENT, 40000), sa(VIP, 80), Tcp::Syn, &[]);
    let (v, out) = run(&e, &syn, Direction::FromClient);
    let Verdict::Forward { method: FwdMethod::Masq, next_hop, dest } = v else { panic!("{v:?}") };
    assert_eq!(next_hop, IpAddr::V4(RS1));
    assert_eq!(Some(dest), e.dest_id(&tcp_svc(80), sa(RS1, 8080)));
    assert_eq!((src_of(&out), dst_of(&out)), (CLIENT, RS1));
    assert_eq!(ports_of(&out), (40000, 8080));
    assert_eq!(out[8], 63, "TTL decremented");
    checksums_ok(&out);

    // The real server's SYN+ACK goes back with the VIP as source.
    let synack = tcp4(sa(RS1, 8080), sa(CLIENT, 40000), Tcp::SynAck, b"hello");
    let (v, out) = run(&e, &synack, Direction::FromRealServer);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: IpAddr::V4(CLIENT), dest });
    assert_eq!((src_of(&out), dst_of(&out)), (VIP, CLIENT));
    assert_eq!(ports_of(&out), (80, 40000));
    assert_eq!(&out[out.len() - 5..], b"hello");
    checksums_ok(&out);
    let c = e.conn(NOW, Protocol::Tcp, sa(CLIENT, 40000), sa(VIP, 80)).unwrap();
    assert_eq!(c.state, "SYN_RECV");
    assert_eq!(e.total_stats().counters.inpkts, 1);
    assert_eq!(e.total_stats().counters.outpkts, 1);
}

#[test]
fn nat_udp_with_and_without_checksum() {
    let e = engine_with(config(), udp_svc(53), &[dest(sa(RS1, 5353), FwdMethod::Masq)]);
    let q = udp4(sa(CLIENT, 5000), sa(VIP, 53), b"query");
    let (v, out) = run(&e, &q, Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Masq, .. }), "{v:?}");
    assert_eq!((dst_of(&out), ports_of(&out)), (RS1, (5000, 5353)));
    checksums_ok(&out);
    assert_ne!(&out[26..28], &[0, 0]);

    // No checksum (0) stays none.
    let mut q = udp4(sa(CLIENT, 5001), sa(VIP, 53), b"query");
    q[26..28].copy_from_slice(&[0, 0]);
    let (_, out) = run(&e, &q, Direction::FromClient);
    assert_eq!(&out[26..28], &[0, 0]);
    ipv4_header_ok(&out);

    let r = udp4(sa(RS1, 5353), sa(CLIENT, 5000), b"answer");
    let (v, out) = run(&e, &r, Direction::FromRealServer);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: IpAddr::V4(CLIENT), .. }));
    assert_eq!((src_of(&out), ports_of(&out)), (VIP, (53, 5000)));
    checksums_ok(&out);
    assert_eq!(e.conns(NOW)[0].state, "UDP");
}

#[test]
fn nat_sctp_crc_recomputed_both_ways() {
    let key = ServiceKey::Addr { protocol: Protocol::Sctp, addr: sa(VIP, 3868) };
    let e = engine_with(config(), key, &[dest(sa(RS1, 3869), FwdMethod::Masq)]);
    let init = sctp4(sa(CLIENT, 7000), sa(VIP, 3868), 1);
    let (v, out) = run(&e, &init, Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Masq, .. }), "{v:?}");
    ipv4_header_ok(&out);
    assert_eq!((dst_of(&out), ports_of(&out)), (RS1, (7000, 3869)));
    let mut body = out[20..].to_vec();
    let crc = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    body[8..12].fill(0);
    assert_eq!(crc, crc32c(&body), "SCTP CRC32c");

    let ack = sctp4(sa(RS1, 3869), sa(CLIENT, 7000), 2);
    let (v, out) = run(&e, &ack, Direction::FromRealServer);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Masq, .. }), "{v:?}");
    assert_eq!((src_of(&out), ports_of(&out)), (VIP, (3868, 7000)));
    let mut body = out[20..].to_vec();
    let crc = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    body[8..12].fill(0);
    assert_eq!(crc, crc32c(&body), "SCTP CRC32c");
    assert_eq!(e.conns(NOW)[0].state, "C-SENT");
}

#[test]
fn nat_ipv6_tcp_both_ways() {
    let client: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let vip: SocketAddr = "[2001:db8::100]:443".parse().unwrap();
    let rs: SocketAddr = "[2001:db8:1::1]:8443".parse().unwrap();
    let key = ServiceKey::Addr { protocol: Protocol::Tcp, addr: vip };
    let e = engine_with(config(), key, &[dest(rs, FwdMethod::Masq)]);
    let (v, out) = run(&e, &tcp6(client, vip, Tcp::Syn, &[]), Direction::FromClient);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: rs.ip(), dest: DestId(0) });
    assert_eq!(&out[24..40], &"2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(out[7], 63, "hop limit decremented");
    checksums_ok(&out);
    let (v, out) = run(&e, &tcp6(rs, client, Tcp::SynAck, b"x"), Direction::FromRealServer);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: client.ip(), dest: DestId(0) });
    assert_eq!(&out[8..24], &"2001:db8::100".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(&out[40..42], &443u16.to_be_bytes());
    checksums_ok(&out);
}

// ---- Forward: DR and TUN -----------------------------------------------------------------------------------

#[test]
fn dr_leaves_the_packet_but_its_ttl() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS2, 80), FwdMethod::DirectRoute)]);
    let syn = tcp4(sa(CLIENT, 40001), sa(VIP, 80), Tcp::Syn, b"data");
    let (v, out) = run(&e, &syn, Direction::FromClient);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::DirectRoute, next_hop: IpAddr::V4(RS2), dest: DestId(0) });
    assert_eq!(out.len(), syn.len());
    assert_eq!(out[8], 63);
    let mut expect = syn.clone();
    expect[8] = 63;
    assert_eq!(&out[20..], &expect[20..], "transport untouched");
    assert_eq!(&out[12..20], &expect[12..20], "addresses untouched");
    checksums_ok(&out);
    // DR conns never see replies: INPUT_ONLY table.
    assert_eq!(e.conns(NOW)[0].state, "SYN_RECV");
}

fn tun_dest(kind: TunnelKind, port: u16, csum: TunnelCsum) -> DestConfig {
    let mut d = dest(sa(RS2, 80), FwdMethod::Tunnel);
    d.tunnel = Some(TunnelConfig { kind, port, csum });
    d
}

fn tun_engine(d: DestConfig) -> Engine {
    let mut cfg = config();
    cfg.local_v4 = Some(LOCAL);
    engine_with(cfg, tcp_svc(80), &[d])
}

/// Checks the outer IPv4 header of a tunnelled packet and returns the bytes after it.
fn outer_v4(out: &[u8], protocol: u8) -> &[u8] {
    ipv4_header_ok(out);
    let h = Ipv4HeaderSlice::from_slice(out).unwrap();
    assert_eq!(h.protocol().0, protocol);
    assert_eq!(h.source_addr(), LOCAL);
    assert_eq!(h.destination_addr(), RS2);
    assert_eq!(usize::from(h.total_len()), out.len());
    assert_eq!(h.ttl(), 63, "outer TTL = inner TTL after the decrement");
    &out[20..]
}

#[test]
fn tun_ipip() {
    let e = tun_engine(dest(sa(RS2, 80), FwdMethod::Tunnel));
    let syn = tcp4(sa(CLIENT, 40002), sa(VIP, 80), Tcp::Syn, b"abc");
    let (v, out) = run(&e, &syn, Direction::FromClient);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Tunnel, next_hop: IpAddr::V4(RS2), dest: DestId(0) });
    let inner = outer_v4(&out, 4);
    assert_eq!((src_of(inner), dst_of(inner), inner[8]), (CLIENT, VIP, 63));
    assert_eq!(&inner[20..], &syn[20..]);
    checksums_ok(inner);
}

#[test]
fn tun_gue_with_and_without_checksum() {
    for (csum, want_sum) in [(TunnelCsum::Csum, true), (TunnelCsum::NoCsum, false)] {
        let e = tun_engine(tun_dest(TunnelKind::Gue, 6080, csum));
        let syn = tcp4(sa(CLIENT, 40003), sa(VIP, 80), Tcp::Syn, b"abc");
        let (v, out) = run(&e, &syn, Direction::FromClient);
        assert!(matches!(v, Verdict::Forward { method: FwdMethod::Tunnel, .. }), "{v:?}");
        checksums_ok(&out); // outer IPv4 + UDP checksum (when present)
        let udp = outer_v4(&out, 17);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 6080);
        assert!(u16::from_be_bytes([udp[0], udp[1]]) >= 49152, "source port from the flow hash");
        assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
        assert_eq!(u16::from_be_bytes([udp[6], udp[7]]) != 0, want_sum);
        // GUE: version 0, C 0, hlen 0, proto_ctype 4 (IPIP), flags 0.
        assert_eq!(&udp[8..12], &[0, 4, 0, 0]);
        let inner = &udp[12..];
        assert_eq!((src_of(inner), dst_of(inner)), (CLIENT, VIP));
        checksums_ok(inner);
    }
}

#[test]
fn tun_gre_with_checksum() {
    let e = tun_engine(tun_dest(TunnelKind::Gre, 0, TunnelCsum::Csum));
    let syn = tcp4(sa(CLIENT, 40004), sa(VIP, 80), Tcp::Syn, b"abcd");
    let (v, out) = run(&e, &syn, Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Tunnel, .. }), "{v:?}");
    let gre = outer_v4(&out, 47);
    assert_eq!(&gre[0..4], &[0x80, 0x00, 0x08, 0x00], "C bit, version 0, IPv4 payload");
    assert_eq!(ones_sum(gre), 0xffff, "GRE checksum over header and payload");
    checksums_ok(&gre[8..]);
}

// ---- Local, Pass -------------------------------------------------------------------------------------------

#[test]
fn local_node_delivers_unchanged() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(VIP, 80), FwdMethod::Local)]);
    let syn = tcp4(sa(CLIENT, 40005), sa(VIP, 80), Tcp::Syn, &[]);
    let (v, out) = run(&e, &syn, Direction::FromClient);
    assert_eq!(v, Verdict::Local);
    assert_eq!(out, syn);
}

#[test]
fn pass_for_what_is_not_ours() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let cases = [
        ("another address", tcp4(sa(CLIENT, 1), sa(RS2, 80), Tcp::Syn, &[])),
        ("another port", tcp4(sa(CLIENT, 1), sa(VIP, 81), Tcp::Syn, &[])),
        ("no conn, not a SYN", tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Ack, &[])),
        ("FTP data source port", tcp4(sa(CLIENT, 20), sa(VIP, 80), Tcp::Syn, &[])),
        ("UDP to a TCP service", udp4(sa(CLIENT, 1), sa(VIP, 80), b"x")),
    ];
    for (what, pkt) in cases {
        let (v, out) = run(&e, &pkt, Direction::FromClient);
        assert_eq!(v, Verdict::Pass, "{what}");
        assert_eq!(out, pkt, "{what}: unchanged");
    }
    // ICMP echo and other protocols.
    let mut echo = Vec::new();
    PacketBuilder::ipv4(CLIENT.octets(), VIP.octets(), 64).icmpv4_echo_request(1, 1).write(&mut echo, b"ping").unwrap();
    assert_eq!(run(&e, &echo, Direction::FromClient).0, Verdict::Pass);
    let mut gre = tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Syn, &[]);
    gre[9] = 47;
    set_ttl(&mut gre, 64);
    assert_eq!(run(&e, &gre, Direction::FromClient).0, Verdict::Pass);
    // A reply that matches no conn.
    let r = tcp4(sa(RS1, 8080), sa(CLIENT, 1), Tcp::SynAck, &[]);
    assert_eq!(run(&e, &r, Direction::FromRealServer).0, Verdict::Pass);
    assert_eq!(e.drop_counts().total(), 0);
}

// ---- Drop --------------------------------------------------------------------------------------------------

fn assert_drop(e: &Engine, pkt: &[u8], dir: Direction, reason: DropReason) {
    let before = e.drop_count(reason);
    let (v, _) = run(e, pkt, dir);
    assert_eq!(v, Verdict::Drop(reason));
    assert_eq!(e.drop_count(reason), before + 1, "{reason} counted");
}

#[test]
fn drop_malformed() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let mut bad = tcp4(sa(CLIENT, 40006), sa(VIP, 80), Tcp::Syn, &[]);
    bad[10] ^= 0xff; // IPv4 header checksum
    assert_drop(&e, &bad, Direction::FromClient, DropReason::Malformed);
    let short = &tcp4(sa(CLIENT, 40006), sa(VIP, 80), Tcp::Syn, &[])[..10];
    assert_drop(&e, short, Direction::FromClient, DropReason::Malformed);
    let mut tcp_short = tcp4(sa(CLIENT, 40006), sa(VIP, 80), Tcp::Syn, &[]);
    tcp_short[32] = 0xf0; // data offset 60 bytes, past the packet
    assert_drop(&e, &tcp_short, Direction::FromClient, DropReason::Malformed);
}

#[test]
fn drop_fragment_of_ipvs_traffic() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let mut frag = tcp4(sa(CLIENT, 40007), sa(VIP, 80), Tcp::Syn, b"0123456789");
    set_ipv4_flags(&mut frag, false, true);
    assert_drop(&e, &frag, Direction::FromClient, DropReason::Fragment);
    // A fragment to another address is not ours.
    let mut other = tcp4(sa(CLIENT, 40007), sa(RS2, 80), Tcp::Syn, b"0123456789");
    set_ipv4_flags(&mut other, false, true);
    assert_eq!(run(&e, &other, Direction::FromClient).0, Verdict::Pass);
}

#[test]
fn drop_table_full() {
    let mut cfg = config();
    cfg.conn_table = ConnTableConfig::new(1, *b"verdict-test-key").with_n_shards(1);
    let e = engine_with(cfg, tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let (v, _) = run(&e, &tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_drop(&e, &tcp4(sa(CLIENT, 2), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient, DropReason::TableFull);
    let info = e.dest(DestId(0)).unwrap();
    assert_eq!((info.active_conns, info.inactive_conns), (1, 0), "the refused conn is not counted");
}

#[test]
fn drop_persistence_engine_without_a_call_id() {
    let e = Engine::new(config()).unwrap();
    let mut s = ServiceConfig::new(udp_svc(5060));
    s.persistence = Some(Persistence::new(60, ipvs_core::proto::AddressFamily::Inet));
    s.pe_name = Some("sip".into());
    e.add_service(Instant::ZERO, s).unwrap();
    e.add_dest(Instant::ZERO, &udp_svc(5060), dest(sa(RS1, 5060), FwdMethod::Masq)).unwrap();
    let no_call_id = udp4(sa(CLIENT, 5060), sa(VIP, 5060), b"OPTIONS sip:x SIP/2.0\r\nVia: a\r\n\r\n");
    assert_drop(&e, &no_call_id, Direction::FromClient, DropReason::PersistenceEngine);
    assert!(e.conns(NOW).is_empty());
    let ok = udp4(sa(CLIENT, 5060), sa(VIP, 5060), b"OPTIONS sip:x SIP/2.0\r\nCall-ID: c1\r\n\r\n");
    let (v, out) = run(&e, &ok, Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Masq, .. }), "{v:?}");
    assert_eq!(dst_of(&out), RS1);
    checksums_ok(&out);
}

#[test]
fn drop_defense_drop_packet() {
    let mut cfg = config();
    cfg.defense = Defense { drop_packet: DefenseMode::Always, am_droprate: 2, ..Defense::default() };
    let e = engine_with(cfg, tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    // Rate 2: the first candidate passes, the second is dropped.
    let (v, _) = run(&e, &tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { .. }));
    let syn2 = tcp4(sa(CLIENT, 2), sa(VIP, 80), Tcp::Syn, &[]);
    assert_drop(&e, &syn2, Direction::FromClient, DropReason::DefenseDropPacket);
    // Packets of existing conns are never candidates.
    let (v, _) = run(&e, &tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Ack, &[]), Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { .. }));
}

#[test]
fn drop_dest_unavailable_and_the_alternatives() {
    let svc = tcp_svc(80);
    let syn = tcp4(sa(CLIENT, 40008), sa(VIP, 80), Tcp::Syn, &[]);
    let ack = tcp4(sa(CLIENT, 40008), sa(VIP, 80), Tcp::Ack, &[]);

    // Kernel default (serve_removed_dests off): packets of a removed server's conn are dropped.
    let mut cfg = config();
    cfg.sysctls.serve_removed_dests = false;
    let e = engine_with(cfg, svc, &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    assert!(matches!(run(&e, &syn, Direction::FromClient).0, Verdict::Forward { .. }));
    e.del_dest(&svc, sa(RS1, 8080)).unwrap();
    assert_drop(&e, &ack, Direction::FromClient, DropReason::DestUnavailable);
    assert_eq!(e.n_trash(), 1);

    // Draining (the default here): the conn keeps its server.
    let e = engine_with(config(), svc, &[dest(sa(RS1, 8080), FwdMethod::Masq), dest(sa(RS2, 8080), FwdMethod::Masq)]);
    let (v, _) = run(&e, &syn, Direction::FromClient);
    let Verdict::Forward { next_hop, .. } = v else { panic!("{v:?}") };
    let IpAddr::V4(first) = next_hop else { panic!() };
    e.del_dest(&svc, sa(first, 8080)).unwrap();
    let (v, out) = run(&e, &ack, Direction::FromClient);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop, dest: e.conns(NOW)[0].dest.unwrap() });
    checksums_ok(&out);

    // expire_nodest_conn: the conn goes and the SYN retransmission is scheduled to the other server.
    let mut cfg = config();
    cfg.sysctls.expire_nodest_conn = true;
    let e = engine_with(cfg, svc, &[dest(sa(RS1, 8080), FwdMethod::Masq), dest(sa(RS2, 8080), FwdMethod::Masq)]);
    let (v, _) = run(&e, &syn, Direction::FromClient);
    let Verdict::Forward { next_hop: IpAddr::V4(first), .. } = v else { panic!("{v:?}") };
    e.del_dest(&svc, sa(first, 8080)).unwrap();
    assert!(e.conns(NOW).is_empty(), "deleted with the server");
    let (v, _) = run(&e, &syn, Direction::FromClient);
    let Verdict::Forward { next_hop: IpAddr::V4(second), .. } = v else { panic!("{v:?}") };
    assert_ne!(first, second);
}

#[test]
fn drop_bad_icmp_checksum() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let _ = run(&e, &tcp4(sa(CLIENT, 40009), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    let quoted = tcp4(sa(VIP, 80), sa(CLIENT, 40009), Tcp::SynAck, &[]);
    let mut icmp = icmp4_unreach(CLIENT, VIP, &quoted);
    icmp[22] ^= 0x55; // ICMP checksum
    assert_drop(&e, &icmp, Direction::FromClient, DropReason::BadIcmpChecksum);
}

#[test]
fn drop_icmp_no_conn_with_schedule_icmp() {
    let mut cfg = config();
    cfg.sysctls.schedule_icmp = true;
    // A service without real servers: the ICMP error cannot be scheduled.
    let e = engine_with(cfg, tcp_svc(80), &[]);
    let quoted = tcp4(sa(VIP, 80), sa(CLIENT, 40010), Tcp::SynAck, &[]);
    let icmp = icmp4_unreach(CLIENT, VIP, &quoted);
    assert_drop(&e, &icmp, Direction::FromClient, DropReason::IcmpNoConn);
}

#[test]
fn drop_mtu_too_small_for_the_tunnel() {
    let e = tun_engine(dest(sa(RS2, 80), FwdMethod::Tunnel));
    e.set_dest_mtu(DestId(0), Some(80)).unwrap(); // 80 − 20 (outer IPv4) < 68
    let syn = tcp4(sa(CLIENT, 40011), sa(VIP, 80), Tcp::Syn, &[]);
    assert_drop(&e, &syn, Direction::FromClient, DropReason::MtuTooSmall);
}

#[test]
fn drop_no_room_for_the_tunnel_headers() {
    let e = tun_engine(tun_dest(TunnelKind::Gue, 6080, TunnelCsum::NoCsum));
    let mut data = tcp4(sa(CLIENT, 40012), sa(VIP, 80), Tcp::Syn, &[]);
    let mut buf = PacketBuf::whole(&mut data);
    assert_eq!(e.handle_packet(NOW, &mut buf, Direction::FromClient), Verdict::Drop(DropReason::NoRoom));
    assert_eq!(e.drop_count(DropReason::NoRoom), 1);
}

#[test]
fn drop_ttl_exceeded_when_no_icmp_is_due() {
    // An ICMP error with TTL 1 about a NAT conn: no ICMP error about an ICMP error.
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let _ = run(&e, &tcp4(sa(CLIENT, 40013), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    let quoted = tcp4(sa(VIP, 80), sa(CLIENT, 40013), Tcp::SynAck, &[]);
    let mut icmp = icmp4_unreach(CLIENT, VIP, &quoted);
    set_ttl(&mut icmp, 1);
    assert_drop(&e, &icmp, Direction::FromClient, DropReason::TtlExceeded);
}

#[test]
fn drop_no_destination_when_the_source_may_not_get_an_icmp_error() {
    // ip_vs_leave for a SYN from a broadcast source: no port unreachable may go there.
    let e = engine_with(config(), tcp_svc(80), &[]);
    let syn = tcp4(sa(Ipv4Addr::BROADCAST, 40023), sa(VIP, 80), Tcp::Syn, &[]);
    assert_drop(&e, &syn, Direction::FromClient, DropReason::NoDestination);
}

#[test]
fn drop_rewrite_failed_when_the_tunnel_would_overflow() {
    // No DF and pmtu_disc off: IPv4 packets are tunnelled whatever their size — but not past 65535 bytes.
    let mut cfg = config();
    cfg.local_v4 = Some(LOCAL);
    cfg.sysctls.pmtu_disc = false;
    let e = engine_with(cfg, tcp_svc(80), &[dest(sa(RS2, 80), FwdMethod::Tunnel)]);
    let mut big = tcp4(sa(CLIENT, 40024), sa(VIP, 80), Tcp::Syn, &vec![0; 65535 - 40]);
    set_ipv4_flags(&mut big, false, false);
    assert_drop(&e, &big, Direction::FromClient, DropReason::RewriteFailed);
    // One that fits goes, with DF clear outside.
    let mut ok = tcp4(sa(CLIENT, 40025), sa(VIP, 80), Tcp::Syn, &vec![0; 3000]);
    set_ipv4_flags(&mut ok, true, false);
    let (v, out) = run(&e, &ok, Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Tunnel, .. }), "{v:?}");
    assert_eq!(out[6] & 0x40, 0, "pmtu_disc off: no DF on the outer header");
    ipv4_header_ok(&out);
}

// ---- SendIcmp ----------------------------------------------------------------------------------------------

/// Checks an ICMPv4 error in `out`: addresses, type/code, rest of header, checksums, and that it quotes the
/// start of `original`.
fn icmp4_error_ok(out: &[u8], from: Ipv4Addr, to: Ipv4Addr, ty: u8, code: u8, rest: u32, original: &[u8]) {
    checksums_ok(out);
    assert_eq!((src_of(out), dst_of(out), out[9]), (from, to, 1));
    assert_eq!((out[20], out[21]), (ty, code));
    assert_eq!(u32::from_be_bytes([out[24], out[25], out[26], out[27]]), rest);
    let quote = &out[28..];
    assert!(quote.len() >= 28);
    // The quote is the original packet, but for a TTL already decremented on the forwarding path.
    assert_eq!(&quote[12..20], &original[12..20]);
    assert_eq!(&quote[20..quote.len().min(original.len())], &original[20..quote.len().min(original.len())]);
}

#[test]
fn icmp_port_unreachable_without_real_servers() {
    let e = engine_with(config(), tcp_svc(80), &[]);
    let syn = tcp4(sa(CLIENT, 40014), sa(VIP, 80), Tcp::Syn, b"payload");
    let (v, out) = run(&e, &syn, Direction::FromClient);
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT), kind: IcmpKind::PortUnreachable });
    icmp4_error_ok(&out, VIP, CLIENT, 3, 3, 0, &syn);
    assert_eq!(out.len(), 28 + syn.len());
}

#[test]
fn icmp_frag_needed_for_dr_and_tunnel() {
    // DR with a 1000-byte path MTU and a 1200-byte DF packet.
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS2, 80), FwdMethod::DirectRoute)]);
    e.set_dest_mtu(DestId(0), Some(1000)).unwrap();
    let mut big = tcp4(sa(CLIENT, 40015), sa(VIP, 80), Tcp::Syn, &[7; 1160]);
    set_ipv4_flags(&mut big, true, false);
    let (v, out) = run(&e, &big, Direction::FromClient);
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT), kind: IcmpKind::FragNeeded { mtu: 1000 } });
    icmp4_error_ok(&out, VIP, CLIENT, 3, 4, 1000, &big);
    assert_eq!(out.len(), 576, "quote cut to 576 bytes in all");

    // IPIP: 1500 − 20 leaves 1480 for the inner packet.
    let e = tun_engine(dest(sa(RS2, 80), FwdMethod::Tunnel));
    let mut big = tcp4(sa(CLIENT, 40016), sa(VIP, 80), Tcp::Syn, &[7; 1441]);
    set_ipv4_flags(&mut big, true, false);
    let (v, out) = run(&e, &big, Direction::FromClient);
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT), kind: IcmpKind::FragNeeded { mtu: 1480 } });
    icmp4_error_ok(&out, LOCAL, CLIENT, 3, 4, 1480, &big);
    // Without DF it is tunnelled (the outer header has no DF either).
    let mut big = tcp4(sa(CLIENT, 40017), sa(VIP, 80), Tcp::Syn, &[7; 1441]);
    set_ipv4_flags(&mut big, false, false);
    let (v, out) = run(&e, &big, Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Tunnel, .. }), "{v:?}");
    assert_eq!(out[6] & 0x40, 0);
    ipv4_header_ok(&out);
}

#[test]
fn icmp_packet_too_big_for_ipv6() {
    let client: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let vip: SocketAddr = "[2001:db8::100]:80".parse().unwrap();
    let rs: SocketAddr = "[2001:db8:1::1]:80".parse().unwrap();
    let key = ServiceKey::Addr { protocol: Protocol::Tcp, addr: vip };
    let e = engine_with(config(), key, &[dest(rs, FwdMethod::DirectRoute)]);
    e.set_dest_mtu(DestId(0), Some(1280)).unwrap();
    let big = tcp6(client, vip, Tcp::Syn, &[1; 1300]);
    let (v, out) = run(&e, &big, Direction::FromClient);
    assert_eq!(v, Verdict::SendIcmp { to: client.ip(), kind: IcmpKind::PacketTooBig { mtu: 1280 } });
    checksums_ok(&out);
    assert_eq!(out.len(), 1280, "quote cut to the minimum MTU");
    assert_eq!((out[6], out[40]), (58, 2), "ICMPv6 packet too big");
    assert_eq!(u32::from_be_bytes([out[44], out[45], out[46], out[47]]), 1280);
    assert_eq!(&out[8..24], &"2001:db8::100".parse::<Ipv6Addr>().unwrap().octets());
}

#[test]
fn icmp_time_exceeded_for_ttl_1() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let mut syn = tcp4(sa(CLIENT, 40018), sa(VIP, 80), Tcp::Syn, &[]);
    set_ttl(&mut syn, 1);
    let (v, out) = run(&e, &syn, Direction::FromClient);
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT), kind: IcmpKind::TimeExceeded });
    icmp4_error_ok(&out, VIP, CLIENT, 11, 0, 0, &syn);
    assert_eq!(out[28 + 8], 1, "the quote is the packet as received");
}

#[test]
fn nat_icmp_send_answers_unmatched_replies() {
    let mut cfg = config();
    cfg.sysctls.nat_icmp_send = true;
    let e = engine_with(cfg, tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let stray = tcp4(sa(RS1, 8080), sa(CLIENT, 40019), Tcp::Ack, b"late");
    let (v, out) = run(&e, &stray, Direction::FromRealServer);
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(RS1), kind: IcmpKind::PortUnreachable });
    icmp4_error_ok(&out, CLIENT, RS1, 3, 3, 0, &stray);
    // A RST passes unanswered.
    let rst = tcp4(sa(RS1, 8080), sa(CLIENT, 40019), Tcp::Rst, &[]);
    assert_eq!(run(&e, &rst, Direction::FromRealServer).0, Verdict::Pass);
}

// ---- ICMP errors about conns, translated -------------------------------------------------------------------

#[test]
fn icmp_error_from_client_to_nat_server() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let _ = run(&e, &tcp4(sa(CLIENT, 40020), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    // The client complains about the VIP's SYN+ACK.
    let quoted = tcp4(sa(VIP, 80), sa(CLIENT, 40020), Tcp::SynAck, &[]);
    let icmp = icmp4_unreach(CLIENT, VIP, &quoted);
    let (v, out) = run(&e, &icmp, Direction::FromClient);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: IpAddr::V4(RS1), dest: DestId(0) });
    checksums_ok(&out);
    assert_eq!((src_of(&out), dst_of(&out), out[8]), (CLIENT, RS1, 63));
    let inner = &out[28..];
    ipv4_header_ok(inner);
    assert_eq!((src_of(inner), dst_of(inner)), (RS1, CLIENT));
    assert_eq!(ports_of(inner), (8080, 40020));
}

#[test]
fn icmp_error_from_nat_server_to_client() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS1, 8080), FwdMethod::Masq)]);
    let syn = tcp4(sa(CLIENT, 40021), sa(VIP, 80), Tcp::Syn, &[]);
    let (_, forwarded) = run(&e, &syn, Direction::FromClient);
    // The real server complains about the SYN it received (client → RS1:8080).
    let icmp = icmp4_unreach(RS1, CLIENT, &forwarded);
    let (v, out) = run(&e, &icmp, Direction::FromRealServer);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: IpAddr::V4(CLIENT), dest: DestId(0) });
    checksums_ok(&out);
    assert_eq!((src_of(&out), dst_of(&out)), (VIP, CLIENT));
    let inner = &out[28..];
    ipv4_header_ok(inner);
    assert_eq!((src_of(inner), dst_of(inner)), (CLIENT, VIP));
    assert_eq!(ports_of(inner), (40021, 80));
    assert_eq!(e.total_stats().counters.outpkts, 1);
}

#[test]
fn icmpv6_error_both_ways() {
    let client: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let vip: SocketAddr = "[2001:db8::100]:80".parse().unwrap();
    let rs: SocketAddr = "[2001:db8:1::1]:8080".parse().unwrap();
    let key = ServiceKey::Addr { protocol: Protocol::Tcp, addr: vip };
    let e = engine_with(config(), key, &[dest(rs, FwdMethod::Masq)]);
    let (_, forwarded) = run(&e, &tcp6(client, vip, Tcp::Syn, &[]), Direction::FromClient);
    let o = |a: SocketAddr| match a.ip() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    let unreach = etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port);
    // Real server → client, about the forwarded SYN.
    let mut icmp = Vec::new();
    PacketBuilder::ipv6(o(rs), o(client), 64).icmpv6(unreach).write(&mut icmp, &forwarded).unwrap();
    let (v, out) = run(&e, &icmp, Direction::FromRealServer);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: client.ip(), dest: DestId(0) });
    checksums_ok(&out);
    assert_eq!(&out[8..24], &o(vip));
    assert_eq!(&out[48 + 24..48 + 40], &o(vip), "quoted destination");
    // Client → VIP, about the VIP's SYN+ACK.
    let quoted = tcp6(vip, client, Tcp::SynAck, &[]);
    let mut icmp = Vec::new();
    PacketBuilder::ipv6(o(client), o(vip), 64).icmpv6(unreach).write(&mut icmp, &quoted).unwrap();
    let (v, out) = run(&e, &icmp, Direction::FromClient);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::Masq, next_hop: rs.ip(), dest: DestId(0) });
    checksums_ok(&out);
    assert_eq!(&out[24..40], &o(rs));
    assert_eq!(&out[48 + 8..48 + 24], &o(rs), "quoted source");
}

#[test]
fn icmp_error_for_a_dr_conn_is_forwarded_as_is() {
    let e = engine_with(config(), tcp_svc(80), &[dest(sa(RS2, 80), FwdMethod::DirectRoute)]);
    let _ = run(&e, &tcp4(sa(CLIENT, 40022), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    let quoted = tcp4(sa(VIP, 80), sa(CLIENT, 40022), Tcp::SynAck, &[]);
    let icmp = icmp4_unreach(CLIENT, VIP, &quoted);
    let (v, out) = run(&e, &icmp, Direction::FromClient);
    assert_eq!(v, Verdict::Forward { method: FwdMethod::DirectRoute, next_hop: IpAddr::V4(RS2), dest: DestId(0) });
    checksums_ok(&out);
    assert_eq!(
        &out[9..],
        &{
            let mut x = icmp.clone();
            set_ttl(&mut x, 63);
            x
        }[9..]
    );
}

/// An ICMPv4 error from `src` to `dst` with `ty`/`code`/`rest` quoting `quoted` (checksum by etherparse).
fn icmp4_raw(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest_bytes = [0u8; 4];
    rest_bytes.copy_from_slice(&rest.to_be_bytes());
    let icmp_type = etherparse::Icmpv4Type::Unknown { type_u8: ty, code_u8: code, bytes5to8: rest_bytes };
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64).icmpv4(icmp_type).write(&mut out, quoted).unwrap();
    out
}

#[test]
fn icmp_error_about_our_tunnel_packet_is_relayed_to_the_client() {
    for (d, overhead) in [
        (dest(sa(RS2, 80), FwdMethod::Tunnel), 20),
        (tun_dest(TunnelKind::Gue, 6080, TunnelCsum::NoCsum), 32),
        (tun_dest(TunnelKind::Gre, 0, TunnelCsum::Csum), 28),
    ] {
        let e = tun_engine(d);
        let syn = tcp4(sa(CLIENT, 40030), sa(VIP, 80), Tcp::Syn, b"some data");
        let (_, tunnelled) = run(&e, &syn, Direction::FromClient);
        // A router on the way to RS2 reports fragmentation needed, MTU 1400, quoting our outer packet.
        let frag_needed = icmp4_raw(Ipv4Addr::new(10, 9, 9, 9), LOCAL, 3, 4, 1400, &tunnelled);
        let (v, out) = run(&e, &frag_needed, Direction::FromRealServer);
        let mtu = 1400 - overhead;
        assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT), kind: IcmpKind::FragNeeded { mtu } });
        let mut quoted = syn.clone();
        set_ttl(&mut quoted, 63);
        icmp4_error_ok(&out, LOCAL, CLIENT, 3, 4, u32::from(mtu), &quoted);
        assert_eq!(&out[28..], &quoted[..], "the client's own packet, as forwarded");

        // Any other error is relayed as it is.
        let host_unreach = icmp4_raw(Ipv4Addr::new(10, 9, 9, 9), LOCAL, 3, 1, 0, &tunnelled);
        let (v, out) = run(&e, &host_unreach, Direction::FromRealServer);
        let kind = IcmpKind::Relayed { msg_type: 3, code: 1, rest_of_header: 0 };
        assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT), kind });
        icmp4_error_ok(&out, LOCAL, CLIENT, 3, 1, 0, &quoted);
    }
    // Without DF outside, the client does not do PMTU discovery: nothing is relayed.
    let e = tun_engine(dest(sa(RS2, 80), FwdMethod::Tunnel));
    let mut syn = tcp4(sa(CLIENT, 40031), sa(VIP, 80), Tcp::Syn, &[]);
    set_ipv4_flags(&mut syn, false, false);
    let (_, tunnelled) = run(&e, &syn, Direction::FromClient);
    let frag_needed = icmp4_raw(Ipv4Addr::new(10, 9, 9, 9), LOCAL, 3, 4, 1400, &tunnelled);
    assert_eq!(run(&e, &frag_needed, Direction::FromRealServer).0, Verdict::Pass);
}

// ---- burst, persistence, one-packet, events ----------------------------------------------------------------

#[test]
fn burst_gives_the_same_verdicts_and_bytes() {
    let pkts = [
        tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Syn, &[]),
        tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Ack, b"x"),
        tcp4(sa(CLIENT, 2), sa(VIP, 80), Tcp::Syn, &[]),
        tcp4(sa(CLIENT, 3), sa(RS2, 80), Tcp::Syn, &[]),
        tcp4(sa(CLIENT, 2), sa(VIP, 80), Tcp::Ack, &[]),
        vec![0x45, 0, 0],
    ];
    let single = engine_with(
        config(),
        tcp_svc(80),
        &[dest(sa(RS1, 8080), FwdMethod::Masq), dest(sa(RS2, 8080), FwdMethod::Masq)],
    );
    let want: Vec<(Verdict, Vec<u8>)> = pkts.iter().map(|p| run(&single, p, Direction::FromClient)).collect();

    let burst = engine_with(
        config(),
        tcp_svc(80),
        &[dest(sa(RS1, 8080), FwdMethod::Masq), dest(sa(RS2, 8080), FwdMethod::Masq)],
    );
    let mut datas: Vec<Vec<u8>> = pkts
        .iter()
        .map(|p| {
            let mut d = vec![0u8; HEADROOM + p.len()];
            d[HEADROOM..].copy_from_slice(p);
            d
        })
        .collect();
    let mut bufs: Vec<PacketBuf<'_>> = datas
        .iter_mut()
        .map(|d| {
            let n = d.len() - HEADROOM;
            PacketBuf::new(d, HEADROOM, n).unwrap()
        })
        .collect();
    let mut verdicts = vec![Verdict::Pass; bufs.len()];
    burst.handle_burst(NOW, &mut bufs, Direction::FromClient, &mut verdicts);
    for (i, (v, bytes)) in want.iter().enumerate() {
        assert_eq!(verdicts[i], *v, "packet {i}");
        assert_eq!(bufs[i].packet(), &bytes[..], "packet {i}");
    }
    assert_eq!(burst.drop_count(DropReason::Malformed), 1);
}

#[test]
fn persistence_sticks_and_templates_are_assured() {
    let e = Engine::new(config()).unwrap();
    let mut s = ServiceConfig::new(tcp_svc(443));
    s.scheduler = "rr".into();
    s.persistence = Some(Persistence { timeout_secs: 300, netmask: 0xFFFF_FF00 });
    e.add_service(Instant::ZERO, s).unwrap();
    for rs in [RS1, RS2] {
        e.add_dest(Instant::ZERO, &tcp_svc(443), dest(sa(rs, 443), FwdMethod::Masq)).unwrap();
    }
    let mut hops = Vec::new();
    for (client, port) in [(CLIENT, 1000), (CLIENT, 1001), (Ipv4Addr::new(192, 0, 2, 200), 1002)] {
        let (v, out) = run(&e, &tcp4(sa(client, port), sa(VIP, 443), Tcp::Syn, &[]), Direction::FromClient);
        let Verdict::Forward { next_hop, .. } = v else { panic!("{v:?}") };
        checksums_ok(&out);
        hops.push(next_hop);
    }
    assert!(hops.iter().all(|h| *h == hops[0]), "one /24: one real server");
    let tpl: Vec<_> = e.conns(NOW).into_iter().filter(|c| c.is_template()).collect();
    assert_eq!(tpl.len(), 1);
    assert_eq!((tpl[0].state, tpl[0].client), ("NONE", sa(Ipv4Addr::new(192, 0, 2, 0), 0)));
    // The server's SYN+ACK and the client's ACK establish the conn: the template becomes ASSURED.
    let IpAddr::V4(rs) = hops[0] else { panic!() };
    let _ = run(&e, &tcp4(sa(rs, 443), sa(CLIENT, 1000), Tcp::SynAck, &[]), Direction::FromRealServer);
    let _ = run(&e, &tcp4(sa(CLIENT, 1000), sa(VIP, 443), Tcp::Ack, &[]), Direction::FromClient);
    let tpl: Vec<_> = e.conns(NOW).into_iter().filter(|c| c.is_template()).collect();
    assert_eq!(tpl[0].state, "ASSURED");
    assert_eq!(e.dest(tpl[0].dest.unwrap()).unwrap().persist_conns, 1);
}

#[test]
fn one_packet_udp_conns_never_stay() {
    let e = Engine::new(config()).unwrap();
    let mut s = ServiceConfig::new(udp_svc(53));
    s.scheduler = "rr".into();
    s.one_packet = true;
    e.add_service(Instant::ZERO, s).unwrap();
    e.add_dest(Instant::ZERO, &udp_svc(53), dest(sa(RS1, 53), FwdMethod::Masq)).unwrap();
    let (v, out) = run(&e, &udp4(sa(CLIENT, 5000), sa(VIP, 53), b"q"), Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { method: FwdMethod::Masq, .. }), "{v:?}");
    checksums_ok(&out);
    assert!(e.conns(NOW).is_empty());
    let d = e.dest(DestId(0)).unwrap();
    assert_eq!((d.active_conns, d.inactive_conns, d.stats.counters.conns), (0, 0, 1));
}

#[test]
fn events_conns_and_overload() {
    let e = Engine::new(config()).unwrap();
    let mut s = ServiceConfig::new(tcp_svc(80));
    s.scheduler = "rr".into();
    e.add_service(Instant::ZERO, s).unwrap();
    let mut d = dest(sa(RS1, 8080), FwdMethod::Masq);
    d.u_threshold = 1;
    e.add_dest(Instant::ZERO, &tcp_svc(80), d).unwrap();
    let (v, _) = run(&e, &tcp4(sa(CLIENT, 1), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    assert!(matches!(v, Verdict::Forward { .. }));
    assert!(matches!(e.poll_event(), Some(Event::DestOverloaded { dest: DestId(0) })));
    assert!(matches!(e.poll_event(), Some(Event::ConnCreated { dest: DestId(0), .. })));
    // Overloaded: no new conn (port unreachable).
    let (v, _) = run(&e, &tcp4(sa(CLIENT, 2), sa(VIP, 80), Tcp::Syn, &[]), Direction::FromClient);
    assert!(matches!(v, Verdict::SendIcmp { kind: IcmpKind::PortUnreachable, .. }), "{v:?}");
    // SYN_RECV times out after 60 s: the conn expires and the server recovers.
    let later = NOW + Duration::from_secs(61);
    assert!(e.poll_timeout().unwrap() <= later);
    e.handle_timeout(later);
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(events.iter().any(|ev| matches!(ev, Event::DestRecovered { dest: DestId(0) })), "{events:?}");
    assert!(events.iter().any(|ev| matches!(ev, Event::ConnExpired { template: false, .. })), "{events:?}");
    let d = e.dest(DestId(0)).unwrap();
    assert_eq!((d.active_conns, d.inactive_conns, d.overloaded), (0, 0, false));
}

#[test]
fn threads_share_one_engine() {
    use std::sync::Arc;
    for sched in ["rr", "wlc"] {
        let e = Arc::new(Engine::new(config()).unwrap());
        let mut s = ServiceConfig::new(tcp_svc(80));
        s.scheduler = sched.into();
        e.add_service(Instant::ZERO, s).unwrap();
        for rs in [RS1, RS2] {
            e.add_dest(Instant::ZERO, &tcp_svc(80), dest(sa(rs, 8080), FwdMethod::Masq)).unwrap();
        }
        let workers: Vec<_> = (0..2u16)
            .map(|t| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    for i in 0..200u16 {
                        let client = sa(CLIENT, 10_000 + t * 1000 + i);
                        for kind in [Tcp::Syn, Tcp::Ack] {
                            let (v, out) = run(&e, &tcp4(client, sa(VIP, 80), kind, &[]), Direction::FromClient);
                            assert!(matches!(v, Verdict::Forward { method: FwdMethod::Masq, .. }), "{v:?}");
                            checksums_ok(&out);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let (a, b) = (e.dest(DestId(0)).unwrap(), e.dest(DestId(1)).unwrap());
        assert_eq!(a.active_conns + b.active_conns, 400, "{sched}: every conn counted once");
        assert_eq!(a.stats.counters.conns + b.stats.counters.conns, 400);
        assert_eq!(e.conns(NOW).len(), 400);
        assert!(a.active_conns.abs_diff(b.active_conns) <= 2, "{sched}: {} vs {}", a.active_conns, b.active_conns);
    }
}
