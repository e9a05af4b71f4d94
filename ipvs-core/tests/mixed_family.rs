//! Mixed-family tunnel real servers (facts §9.4, §2.2, §12.1, §13.2): an IPv4 service tunnelling to IPv6 real
//! servers and the reverse, with real packet bytes. Packets are built by `etherparse`, handed to
//! [`Engine::handle_packet`], and what comes out is parsed by `etherparse` (outer header, next header, payload
//! length, hop limit) with every checksum recomputed independently.
//!
//! | what | tests |
//! |---|---|
//! | IPv4 in IPv6: IPIP, GUE, GRE | `v4_service_to_v6_*` |
//! | IPv6 in IPv4 | `v6_service_to_v4_*` |
//! | too big → ICMP of the client's family | `too_big_*` |
//! | ICMP errors about the tunnel | `icmp_about_*` |
//! | listings | `listings_show_the_v6_real_server_of_a_v4_service` |
//! | refusals | `refused_*` |
//! | scheduling | `sim_conns_spread_over_mixed_family_dests_by_weight` |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, Ipv4HeaderSlice, Ipv6HeaderSlice, PacketBuilder};
use ipvs_core::conn::ConnTableConfig;
use ipvs_core::ipvsadm::{list_conns, list_services, proc_ip_vs_conn, ListFormat};
use ipvs_core::proto::{AddressFamily, DestId, FwdMethod, Instant, Protocol, ServiceKey};
use ipvs_core::sync::{Backup, Master, MasterConfig};
use ipvs_core::{
    ConfigError, DestConfig, Direction, Engine, EngineConfig, EngineError, IcmpKind, PacketBuf, Persistence,
    ServiceConfig, SyncMasterOptions, TunnelConfig, TunnelCsum, TunnelKind, Verdict,
};

mod support;
use support::{checksums_ok, ones_sum};

const HEADROOM: usize = 64;
const NOW: Instant = Instant::from_secs(10);

const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const LOCAL4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const RS4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 1);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xd, 0, 0, 0, 0, 9);
const RS6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn svc4() -> ServiceKey {
    ServiceKey::Addr { protocol: Protocol::Tcp, addr: sa(VIP4, 80) }
}

fn svc6() -> ServiceKey {
    ServiceKey::Addr { protocol: Protocol::Tcp, addr: sa(VIP6, 80) }
}

/// An engine with both director addresses.
fn config() -> EngineConfig {
    let mut c = EngineConfig::new(4096, *b"mixed-family-key");
    c.conn_table = ConnTableConfig::new(4096, *b"mixed-family-key").with_n_shards(2);
    c.local_v4 = Some(LOCAL4);
    c.local_v6 = Some(LOCAL6);
    c
}

fn tun(addr: SocketAddr, kind: TunnelKind, port: u16, csum: TunnelCsum) -> DestConfig {
    let mut d = DestConfig::new(addr, FwdMethod::Tunnel);
    d.tunnel = Some(TunnelConfig { kind, port, csum });
    d
}

fn ipip(addr: SocketAddr) -> DestConfig {
    DestConfig::new(addr, FwdMethod::Tunnel)
}

fn engine(key: ServiceKey, scheduler: &str, dests: &[DestConfig]) -> Engine {
    let e = Engine::new(config()).unwrap();
    let mut s = ServiceConfig::new(key);
    s.scheduler = scheduler.into();
    e.add_service(Instant::ZERO, s).unwrap();
    for d in dests {
        e.add_dest(Instant::ZERO, &key, *d).unwrap();
    }
    e
}

/// Hands `pkt` to the engine with headroom; returns the verdict and the bytes the buffer covers afterwards.
fn run_at(e: &Engine, now: Instant, pkt: &[u8], dir: Direction) -> (Verdict, Vec<u8>) {
    let mut data = vec![0u8; HEADROOM + pkt.len() + 64];
    data[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    let mut buf = PacketBuf::new(&mut data, HEADROOM, pkt.len()).unwrap();
    let v = e.handle_packet(now, &mut buf, dir);
    (v, buf.packet().to_vec())
}

fn run(e: &Engine, pkt: &[u8]) -> (Verdict, Vec<u8>) {
    run_at(e, NOW, pkt, Direction::FromClient)
}

/// A TCP SYN (or ACK) of either family, TTL / hop limit 64, built by etherparse.
fn tcp(src: SocketAddr, dst: SocketAddr, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family"),
    };
    let b = b.tcp(src.port(), dst.port(), 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Sets DF on an IPv4 packet and fixes its header checksum (etherparse).
fn set_df(pkt: &mut [u8]) {
    let mut h = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
    h.dont_fragment = true;
    h.header_checksum = h.calc_header_checksum();
    pkt[..20].copy_from_slice(&h.to_bytes());
}

/// Checks the outer IPv6 header of a tunnelled packet (director → `RS6`, next header `nh`, payload length, hop
/// limit 63 = the inner TTL after its decrement) and returns the bytes after it.
fn outer_v6(out: &[u8], nh: u8) -> &[u8] {
    let h = Ipv6HeaderSlice::from_slice(out).unwrap();
    assert_eq!(out[0] >> 4, 6);
    assert_eq!(h.next_header().0, nh, "next header");
    assert_eq!(usize::from(h.payload_length()), out.len() - 40, "payload length");
    assert_eq!(h.hop_limit(), 63, "hop limit = inner TTL after the decrement");
    assert_eq!((h.source_addr(), h.destination_addr()), (LOCAL6, RS6));
    assert_eq!(h.flow_label().value(), 0);
    &out[40..]
}

/// Checks that `inner` is `original` but for the decremented TTL (with a valid header checksum).
fn inner_v4_intact(inner: &[u8], original: &[u8]) {
    assert_eq!(inner.len(), original.len());
    let h = Ipv4HeaderSlice::from_slice(inner).unwrap();
    assert_eq!((h.source_addr(), h.destination_addr(), h.ttl()), (CLIENT4, VIP4, 63));
    assert_eq!(&inner[20..], &original[20..], "transport untouched");
    checksums_ok(inner);
}

fn forward_to(next_hop: impl Into<IpAddr>, dest: u32) -> Verdict {
    Verdict::Forward { method: FwdMethod::Tunnel, next_hop: next_hop.into(), dest: DestId(dest) }
}

// ---- IPv4 service → IPv6 real server -----------------------------------------------------------------------

#[test]
fn v4_service_to_v6_ipip_dest() {
    let e = engine(svc4(), "rr", &[ipip(sa(RS6, 80))]);
    let syn = tcp(sa(CLIENT4, 40000), sa(VIP4, 80), true, b"hello");
    let (v, out) = run(&e, &syn);
    assert_eq!(v, forward_to(RS6, 0));
    inner_v4_intact(outer_v6(&out, 4), &syn);
    // The conn is found again: the ACK takes the same tunnel.
    let ack = tcp(sa(CLIENT4, 40000), sa(VIP4, 80), false, b"more");
    let (v, out) = run(&e, &ack);
    assert_eq!(v, forward_to(RS6, 0));
    inner_v4_intact(outer_v6(&out, 4), &ack);
    assert_eq!(e.conns(NOW).len(), 1);
}

#[test]
fn v4_service_to_v6_gue_dest() {
    for (csum, want_sum) in [(TunnelCsum::Csum, true), (TunnelCsum::NoCsum, false)] {
        let e = engine(svc4(), "rr", &[tun(sa(RS6, 80), TunnelKind::Gue, 6080, csum)]);
        let syn = tcp(sa(CLIENT4, 40001), sa(VIP4, 80), true, b"abc");
        let (v, out) = run(&e, &syn);
        assert_eq!(v, forward_to(RS6, 0));
        checksums_ok(&out); // The UDP checksum over the IPv6 pseudo-header, when present.
        let udp = outer_v6(&out, 17);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 6080);
        assert!(u16::from_be_bytes([udp[0], udp[1]]) >= 49152, "source port from the flow hash");
        assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
        assert_eq!(u16::from_be_bytes([udp[6], udp[7]]) != 0, want_sum);
        // GUE: version 0, C 0, hlen 0, proto_ctype 4 (IPIP), flags 0.
        assert_eq!(&udp[8..12], &[0, 4, 0, 0]);
        inner_v4_intact(&udp[12..], &syn);
    }
}

#[test]
fn v4_service_to_v6_gre_dest() {
    for (csum, gre_len) in [(TunnelCsum::Csum, 8), (TunnelCsum::NoCsum, 4)] {
        let e = engine(svc4(), "rr", &[tun(sa(RS6, 80), TunnelKind::Gre, 0, csum)]);
        let syn = tcp(sa(CLIENT4, 40002), sa(VIP4, 80), true, b"abcd");
        let (v, out) = run(&e, &syn);
        assert_eq!(v, forward_to(RS6, 0));
        let gre = outer_v6(&out, 47);
        let flags = if gre_len == 8 { 0x80 } else { 0 };
        assert_eq!(&gre[0..4], &[flags, 0x00, 0x08, 0x00], "version 0, IPv4 payload");
        if gre_len == 8 {
            assert_eq!(ones_sum(gre), 0xffff, "GRE checksum over header and payload");
        }
        inner_v4_intact(&gre[gre_len..], &syn);
    }
}

// ---- IPv6 service → IPv4 real server -----------------------------------------------------------------------

#[test]
fn v6_service_to_v4_ipip_and_gue_dests() {
    let cases = [
        (ipip(sa(RS4, 80)), 4, [].as_slice()),
        (tun(sa(RS4, 80), TunnelKind::Gue, 6080, TunnelCsum::Csum), 17, [0u8, 41, 0, 0].as_slice()),
        (tun(sa(RS4, 80), TunnelKind::Gre, 0, TunnelCsum::NoCsum), 47, [0u8, 0, 0x86, 0xdd].as_slice()),
    ];
    for (d, protocol, encap) in cases {
        let e = engine(svc6(), "rr", &[d]);
        let syn = tcp(sa(CLIENT6, 40003), sa(VIP6, 80), true, b"hello");
        let (v, out) = run(&e, &syn);
        assert_eq!(v, forward_to(RS4, 0));
        checksums_ok(&out); // Outer IPv4 header (and the GUE UDP checksum).
        let h = Ipv4HeaderSlice::from_slice(&out).unwrap();
        let want_protocol = if protocol == 4 { 41 } else { protocol };
        assert_eq!(h.protocol().0, want_protocol, "IPv6 in IPv4: 41, GUE 17, GRE 47");
        assert_eq!((h.source_addr(), h.destination_addr()), (LOCAL4, RS4));
        assert_eq!(usize::from(h.total_len()), out.len());
        assert_eq!(h.ttl(), 63, "outer TTL = inner hop limit after the decrement");
        assert!(!h.dont_fragment(), "an IPv6 packet has no DF to copy");
        let rest = &out[20..];
        let inner = match protocol {
            4 => rest,
            17 => {
                assert_eq!(&rest[8..12], encap, "GUE carrying IPv6");
                &rest[12..]
            }
            _ => {
                assert_eq!(&rest[0..4], encap, "GRE carrying IPv6");
                &rest[4..]
            }
        };
        let ih = Ipv6HeaderSlice::from_slice(inner).unwrap();
        assert_eq!((ih.source_addr(), ih.destination_addr(), ih.hop_limit()), (CLIENT6, VIP6, 63));
        assert_eq!(&inner[40..], &syn[40..], "transport untouched");
        checksums_ok(inner);
    }
}

// ---- too big ----------------------------------------------------------------------------------------------

#[test]
fn too_big_answers_an_ipv4_client_with_frag_needed_for_an_ipv6_tunnel() {
    // MTU 1500 less the 40-byte IPv6 outer header leaves 1460 for the client's packet (GUE: 12 more).
    for (d, tmtu) in [(ipip(sa(RS6, 80)), 1460usize), (tun(sa(RS6, 80), TunnelKind::Gue, 6080, TunnelCsum::Csum), 1448)]
    {
        let e = engine(svc4(), "rr", &[d]);
        let mut fits = tcp(sa(CLIENT4, 40010), sa(VIP4, 80), true, &vec![1; tmtu - 40]);
        set_df(&mut fits);
        assert_eq!(fits.len(), tmtu);
        assert_eq!(run(&e, &fits).0, forward_to(RS6, 0));
        let mut big = tcp(sa(CLIENT4, 40011), sa(VIP4, 80), true, &vec![1; tmtu - 39]);
        set_df(&mut big);
        let (v, out) = run(&e, &big);
        let mtu = u16::try_from(tmtu).unwrap();
        assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT4), kind: IcmpKind::FragNeeded { mtu } });
        checksums_ok(&out);
        let h = Ipv4HeaderSlice::from_slice(&out).unwrap();
        assert_eq!((h.source_addr(), h.destination_addr(), h.protocol().0), (LOCAL4, CLIENT4, 1));
        assert_eq!((out[20], out[21]), (3, 4), "ICMPv4 fragmentation needed");
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), mtu);
        assert_eq!(&out[28 + 12..28 + 20], &big[12..20], "quotes the client's packet");
    }
}

#[test]
fn too_big_answers_an_ipv6_client_with_packet_too_big_for_an_ipv4_tunnel() {
    // MTU 1500 less the 20-byte IPv4 outer header leaves 1480.
    let e = engine(svc6(), "rr", &[ipip(sa(RS4, 80))]);
    let fits = tcp(sa(CLIENT6, 40012), sa(VIP6, 80), true, &[1; 1480 - 60]);
    assert_eq!(run(&e, &fits).0, forward_to(RS4, 0));
    let big = tcp(sa(CLIENT6, 40013), sa(VIP6, 80), true, &[1; 1480 - 59]);
    let (v, out) = run(&e, &big);
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V6(CLIENT6), kind: IcmpKind::PacketTooBig { mtu: 1480 } });
    checksums_ok(&out);
    let h = Ipv6HeaderSlice::from_slice(&out).unwrap();
    assert_eq!((h.source_addr(), h.destination_addr(), h.next_header().0), (LOCAL6, CLIENT6, 58));
    assert_eq!(out[40], 2, "ICMPv6 packet too big");
    assert_eq!(u32::from_be_bytes([out[44], out[45], out[46], out[47]]), 1480);
    // A route MTU whose tunnel leaves less than IPv6's 1280 for the outer IPv6 header: IPv4 outer, so 68 counts.
    let e = engine(svc4(), "rr", &[ipip(sa(RS6, 80))]);
    e.set_dest_mtu(DestId(0), Some(1300)).unwrap();
    let syn = tcp(sa(CLIENT4, 40014), sa(VIP4, 80), true, b"x");
    assert_eq!(run(&e, &syn).0, ipvs_core::Verdict::Drop(ipvs_core::DropReason::MtuTooSmall), "1300 − 40 < 1280");
}

// ---- ICMP errors about the tunnel -------------------------------------------------------------------------

#[test]
fn icmp_about_an_ipv6_tunnel_tells_the_ipv4_client_frag_needed() {
    let e = engine(svc4(), "rr", &[ipip(sa(RS6, 80))]);
    let mut syn = tcp(sa(CLIENT4, 40020), sa(VIP4, 80), true, &[5; 100]);
    set_df(&mut syn);
    let (_, sent) = run(&e, &syn);
    // A router on the IPv6 path: packet too big, MTU 1400, quoting our outer IPv6 packet.
    let router: Ipv6Addr = "2001:db8:99::1".parse().unwrap();
    let mut err = Vec::new();
    PacketBuilder::ipv6(router.octets(), LOCAL6.octets(), 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut err, &sent)
        .unwrap();
    let (v, out) = run_at(&e, NOW, &err, Direction::FromClient);
    // 1400 less the 40-byte IPv6 outer header.
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V4(CLIENT4), kind: IcmpKind::FragNeeded { mtu: 1360 } });
    checksums_ok(&out);
    let h = Ipv4HeaderSlice::from_slice(&out).unwrap();
    assert_eq!((h.source_addr(), h.destination_addr()), (LOCAL4, CLIENT4));
    assert_eq!((out[20], out[21], u16::from_be_bytes([out[26], out[27]])), (3, 4, 1360));
    assert_eq!(&out[28 + 20..28 + 40], &syn[20..40], "quotes the client's own packet");

    // Any other ICMPv6 error has no ICMPv4 counterpart: it passes untranslated.
    let mut err = Vec::new();
    PacketBuilder::ipv6(router.octets(), LOCAL6.octets(), 64)
        .icmpv6(Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded))
        .write(&mut err, &sent)
        .unwrap();
    assert_eq!(run(&e, &err).0, Verdict::Pass);
    // Not about one of our conns (other client port): not ours either.
    let other = tcp(sa(CLIENT4, 40021), sa(VIP4, 80), true, b"");
    let mut wrapped = sent[..40].to_vec();
    wrapped.extend_from_slice(&other);
    let mut err = Vec::new();
    PacketBuilder::ipv6(router.octets(), LOCAL6.octets(), 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut err, &wrapped)
        .unwrap();
    assert_eq!(run(&e, &err).0, Verdict::Pass);
}

#[test]
fn icmp_about_an_ipv4_tunnel_tells_the_ipv6_client_packet_too_big() {
    let e = engine(svc6(), "rr", &[tun(sa(RS4, 80), TunnelKind::Gre, 0, TunnelCsum::NoCsum)]);
    let syn = tcp(sa(CLIENT6, 40022), sa(VIP6, 80), true, &[5; 100]);
    let (_, sent) = run(&e, &syn);
    let router = Ipv4Addr::new(10, 99, 0, 1);
    let mut err = Vec::new();
    PacketBuilder::ipv4(router.octets(), LOCAL4.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }))
        .write(&mut err, &sent)
        .unwrap();
    let (v, out) = run(&e, &err);
    // 1400 less the IPv4 outer header and the 4-byte GRE header.
    assert_eq!(v, Verdict::SendIcmp { to: IpAddr::V6(CLIENT6), kind: IcmpKind::PacketTooBig { mtu: 1376 } });
    checksums_ok(&out);
    let h = Ipv6HeaderSlice::from_slice(&out).unwrap();
    assert_eq!((h.source_addr(), h.destination_addr()), (LOCAL6, CLIENT6));
    assert_eq!((out[40], u32::from_be_bytes([out[44], out[45], out[46], out[47]])), (2, 1376));
    assert_eq!(
        &out[48..48 + 40],
        &{
            let mut q = syn[..40].to_vec();
            q[7] = 63; // The quote is the packet as forwarded.
            q
        }[..]
    );
    // An echo reply is no error: none of the tunnel's business.
    let mut echo = Vec::new();
    PacketBuilder::ipv4(router.octets(), LOCAL4.octets(), 64)
        .icmpv4(Icmpv4Type::EchoReply(IcmpEchoHeader { id: 1, seq: 1 }))
        .write(&mut echo, &sent)
        .unwrap();
    assert_eq!(run(&e, &echo).0, Verdict::Pass);
}

// ---- listings ---------------------------------------------------------------------------------------------

#[test]
fn listings_show_the_v6_real_server_of_a_v4_service() {
    let e = Engine::new(config()).unwrap();
    let mut s = ServiceConfig::new(svc4());
    s.scheduler = "rr".into();
    e.add_service(Instant::ZERO, s).unwrap();
    e.add_dest(Instant::ZERO, &svc4(), ipip(sa(RS6, 80))).unwrap();
    // And a persistent one, whose template points at the IPv6 real server too.
    let psvc = ServiceKey::Addr { protocol: Protocol::Tcp, addr: sa(VIP4, 443) };
    let mut p = ServiceConfig::new(psvc);
    p.scheduler = "rr".into();
    p.persistence = Some(Persistence::new(300, AddressFamily::Inet));
    e.add_service(Instant::ZERO, p).unwrap();
    e.add_dest(Instant::ZERO, &psvc, ipip(sa(RS6, 443))).unwrap();

    assert_eq!(run(&e, &tcp(sa(CLIENT4, 40030), sa(VIP4, 80), true, b"")).0, forward_to(RS6, 0));
    assert_eq!(run(&e, &tcp(sa(CLIENT4, 40031), sa(VIP4, 443), true, b"")).0, forward_to(RS6, 1));

    let list = list_services(&e.listing_snapshot(NOW), ListFormat::PLAIN);
    // A SYN_RECV conn counts as active (facts §5.1).
    assert!(list.contains("\n  -> [2001:db8::1]:80             Tunnel  1      1          0"), "{list}");
    assert!(list.contains("\n  -> [2001:db8::1]:443            Tunnel  1      1          0"), "{list}");

    let conns = e.conns(NOW);
    assert_eq!(conns.len(), 3, "two conns and a template");
    assert!(conns.iter().all(|c| c.real.ip() == IpAddr::V6(RS6)), "{conns:?}");
    let tpl = conns.iter().find(|c| c.is_template()).unwrap();
    assert_eq!(tpl.real, sa(RS6, 443));
    let conn = e.conn(NOW, Protocol::Tcp, sa(CLIENT4, 40030), sa(VIP4, 80)).unwrap();
    assert_eq!(conn.real, sa(RS6, 80));

    let snap = e.listing_snapshot(NOW);
    assert!(snap.conns.iter().all(|r| r.dest.ip() == IpAddr::V6(RS6)));
    // /proc/net/ip_vs_conn prints the server's full IPv6 address next to the IPv4 client.
    let proc = proc_ip_vs_conn(&snap);
    let row = proc.lines().find(|l| l.contains(" 9C5E ")).unwrap();
    assert_eq!(row, "TCP C0000207 9C5E C6336401 0050 2001:0db8:0000:0000:0000:0000:0000:0001 0050 SYN_RECV         60");
    // `ipvsadm -L -n -c` reads the row back by the client's family, as ipvsadm does (the module docs of
    // `list_conns`): the IPv6 server shows as the IPv4 address of its first group.
    let rows: Vec<_> = snap.conns.iter().filter(|r| r.client.port() == 40030).cloned().collect();
    let out = list_conns(&rows, false);
    assert!(out.ends_with("TCP 01:00  SYN_RECV    192.0.2.7:40030    198.51.100.1:80    0.0.32.1:80\n"), "{out}");
}

// ---- refusals ---------------------------------------------------------------------------------------------

#[test]
fn refused_without_tunnelling_or_a_director_address() {
    let e = engine(svc4(), "rr", &[]);
    for fwd in [FwdMethod::Masq, FwdMethod::DirectRoute] {
        assert_eq!(
            e.add_dest(Instant::ZERO, &svc4(), DestConfig::new(sa(RS6, 80), fwd)),
            Err(EngineError::Config(ConfigError::MixedFamily {
                service: AddressFamily::Inet,
                dest: AddressFamily::Inet6
            }))
        );
    }
    // Without the director's IPv6 address there is no outer source.
    let mut cfg = config();
    cfg.local_v6 = None;
    let e = Engine::new(cfg).unwrap();
    e.add_service(Instant::ZERO, ServiceConfig::new(svc4())).unwrap();
    let err = e.add_dest(Instant::ZERO, &svc4(), ipip(sa(RS6, 80))).unwrap_err();
    assert_eq!(err, EngineError::NoTunnelSource(AddressFamily::Inet6));
    assert!(err.to_string().contains("EngineConfig::local_v6"), "{err}");
    // Same-family tunnels still fall back to the VIP.
    e.add_dest(Instant::ZERO, &svc4(), ipip(sa(RS4, 80))).unwrap();
    // The ipvsadm line is accepted by the parser and the engine alike.
    let e = engine(svc4(), "rr", &[]);
    let cmd = ipvs_core::ipvsadm::parse_line("-a -t 198.51.100.1:80 -r [2001:db8::1]:80 -i").unwrap().unwrap();
    e.apply(Instant::ZERO, cmd).unwrap();
    assert_eq!(e.dest_id(&svc4(), sa(RS6, 80)), Some(DestId(0)));
    let cmd = ipvs_core::ipvsadm::parse_line("-a -t 198.51.100.1:80 -r [2001:db8::2]:80 -m");
    assert!(cmd.is_err(), "{cmd:?}");
}

#[test]
fn refused_with_sync_running() {
    let mixed = EngineError::Config(ConfigError::MixedFamilyWithSync);
    let e = engine(svc4(), "rr", &[ipip(sa(RS4, 80))]);
    let master = || Master::new(MasterConfig::default()).unwrap();
    e.start_sync_master(master(), SyncMasterOptions::default()).unwrap();
    assert_eq!(e.add_dest(Instant::ZERO, &svc4(), ipip(sa(RS6, 80))), Err(mixed));
    assert!(e.stop_sync_master().is_some());
    // A backup forbids them too.
    e.start_sync_backup(Backup::new(e.sync_backup_config()).unwrap()).unwrap();
    assert_eq!(e.add_dest(Instant::ZERO, &svc4(), ipip(sa(RS6, 80))), Err(mixed));
    assert!(e.stop_sync_backup().is_some());
    assert!(!e.sync_backup_running());
    // No daemon: accepted; then no daemon may start.
    e.add_dest(Instant::ZERO, &svc4(), ipip(sa(RS6, 80))).unwrap();
    assert_eq!(e.start_sync_master(master(), SyncMasterOptions::default()), Err(mixed));
    assert!(!e.sync_master_running());
    assert_eq!(e.start_sync_backup(Backup::new(e.sync_backup_config()).unwrap()), Err(mixed));
    assert!(!e.sync_backup_running());
    // Once it is gone (trashed: only the services' lists count), sync may start again.
    e.del_dest(&svc4(), sa(RS6, 80)).unwrap();
    e.start_sync_master(master(), SyncMasterOptions::default()).unwrap();
    // Editing a server into another family is checked as adding one.
    assert_eq!(e.edit_dest(Instant::ZERO, &svc4(), ipip(sa(RS6, 80))), Err(mixed));
}

// ---- scheduling -------------------------------------------------------------------------------------------

/// A deterministic run on a virtual clock: 600 flows of an IPv4 `wrr` service with tunnel real servers of both
/// families (weights 1 : 2 : 3) arrive 100 ms apart, each sending a SYN and, 50 ms later, an ACK; timers run
/// as `poll_timeout` asks. New flows spread exactly by weight over one full round; every packet of a flow goes
/// to the same real server; then the IPv6 server is removed, its flows keep going to it, and new flows use only
/// the IPv4 ones.
#[test]
fn sim_conns_spread_over_mixed_family_dests_by_weight() {
    let rs4b = Ipv4Addr::new(10, 1, 0, 3);
    let mut d1 = ipip(sa(RS4, 80));
    d1.weight = 1;
    let mut d2 = tun(sa(RS6, 80), TunnelKind::Gue, 6080, TunnelCsum::NoCsum);
    d2.weight = 2;
    let mut d3 = ipip(sa(rs4b, 80));
    d3.weight = 3;
    let e = engine(svc4(), "wrr", &[d1, d2, d3]);

    let mut now = Instant::ZERO;
    let step_to = |now: &mut Instant, t: Instant| {
        while let Some(due) = e.poll_timeout().filter(|d| *d <= t) {
            *now = due.max(*now);
            e.handle_timeout(*now);
        }
        *now = t;
    };
    let mut hops: Vec<IpAddr> = Vec::new();
    for i in 0..600u16 {
        let client = sa(CLIENT4, 10_000 + i);
        step_to(&mut now, Instant::from_millis(u64::from(i) * 100));
        let (v, out) = run_at(&e, now, &tcp(client, sa(VIP4, 80), true, b""), Direction::FromClient);
        let Verdict::Forward { next_hop, .. } = v else { panic!("flow {i}: {v:?}") };
        // The outer header is of the real server's family.
        assert_eq!(out[0] >> 4, if next_hop.is_ipv6() { 6 } else { 4 });
        hops.push(next_hop);
        let ack_at = now + ipvs_core::proto::Duration::from_millis(50);
        step_to(&mut now, ack_at);
        let (v, _) = run_at(&e, now, &tcp(client, sa(VIP4, 80), false, b"x"), Direction::FromClient);
        assert!(matches!(v, Verdict::Forward { next_hop: h, .. } if h == next_hop), "flow {i} moved: {v:?}");
    }
    let count = |a: IpAddr| hops.iter().filter(|h| **h == a).count();
    assert_eq!((count(RS4.into()), count(RS6.into()), count(rs4b.into())), (100, 200, 300));

    // Remove the IPv6 server: its established flows keep their tunnel, new flows go to the IPv4 servers.
    e.del_dest(&svc4(), sa(RS6, 80)).unwrap();
    for (i, hop) in hops.iter().enumerate().filter(|(_, h)| h.is_ipv6()).take(20) {
        let client = sa(CLIENT4, 10_000 + i as u16);
        let (v, out) = run_at(&e, now, &tcp(client, sa(VIP4, 80), false, b"y"), Direction::FromClient);
        assert!(matches!(v, Verdict::Forward { next_hop: h, .. } if h == *hop), "{v:?}");
        assert_eq!(out[0] >> 4, 6);
    }
    for i in 0..60u16 {
        let client = sa(CLIENT4, 30_000 + i);
        let (v, _) = run_at(&e, now, &tcp(client, sa(VIP4, 80), true, b""), Direction::FromClient);
        assert!(matches!(v, Verdict::Forward { next_hop: IpAddr::V4(_), .. }), "{v:?}");
    }
}
