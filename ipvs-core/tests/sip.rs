//! The SIP persistence engine (`--pe sip`; facts §8.1 step 3, §8.5, §3.3, §12.4, §14) with real packet bytes:
//! packets are built by `etherparse`, handed to [`Engine::handle_packet`], and every rewritten packet has its
//! IPv4 header and UDP checksums recomputed independently (etherparse).
//!
//! | behaviour | tests |
//! |---|---|
//! | calls of one client spread by the scheduler, one call sticks (ports, packets, conns) | `calls_spread_*`, `without_pe_*` |
//! | one Call-ID sticks for the client network only | `one_call_sticks_across_the_client_network_only` |
//! | templates expire on time | `call_template_expires_on_time` |
//! | no usable Call-ID: dropped, counted | `malformed_sip_is_dropped_with_a_counted_reason` |
//! | real-server-initiated calls (`conn_out`) | `conn_out_*` |
//! | master → backup sync of the Call-ID | `sync_*` |
//! | listings | `listings_show_pe_name_and_call_id` |
//! | the switch | `engine_without_sip_refuses_pe_services` |
//! | extractor on arbitrary bytes | `prop_*` |

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use etherparse::{Ipv4HeaderSlice, PacketBuilder, SlicedPacket, TransportSlice, UdpHeader};
use ipvs_core::conn::ConnTableConfig;
use ipvs_core::ipvsadm::{list_conns, parse_rules, proc_ip_vs_conn};
use ipvs_core::pe_sip::{self, CallIdError};
use ipvs_core::proto::{Duration, FwdMethod, Instant, Protocol, ServiceKey};
use ipvs_core::sync::{decode_message, Backup, Master, MasterConfig, SyncConn};
use ipvs_core::Direction::{FromClient, FromRealServer};
use ipvs_core::{
    DropReason, Engine, EngineConfig, EngineError, PacketBuf, ServiceConfig, SyncApplied, SyncInput, SyncMasterOptions,
    Timeouts, Verdict,
};
use proptest::prelude::*;

const T0: Instant = Instant::from_secs(100);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const RS1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const RS2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);

/// A persistent UDP SIP service (60 s) with two NAT servers, `rr`.
const SIP_RULES: &str = "-A -u 198.51.100.1:5060 -s rr -p 60 --pe sip\n\
                         -a -u 198.51.100.1:5060 -r 10.1.0.1:5060 -m\n\
                         -a -u 198.51.100.1:5060 -r 10.1.0.2:5060 -m\n";

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn config(sip: bool) -> EngineConfig {
    let mut c = EngineConfig::new(4096, *b"sip-engine-tests");
    // A 1 ms wheel tick: expiry exactly on time.
    c.conn_table =
        ConnTableConfig::new(4096, *b"sip-engine-tests").with_n_shards(4).with_tick(Duration::from_millis(1));
    c.sip_persistence_engine = sip;
    c
}

fn engine_with(cfg: EngineConfig, rules: &str) -> Engine {
    let e = Engine::new(cfg).unwrap();
    for r in parse_rules(rules).unwrap() {
        e.apply(Instant::ZERO, r.command).unwrap();
    }
    e
}

fn engine(rules: &str) -> Engine {
    engine_with(config(true), rules)
}

/// An RFC 3261 §24.2-style request with `call_id` as its Call-ID (`None`: no Call-ID header).
fn sip(method: &str, call_id: Option<&str>) -> Vec<u8> {
    let mut m = format!(
        "{method} sip:bob@biloxi.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
         Max-Forwards: 70\r\n\
         From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
         To: Bob <sip:bob@biloxi.example.com>\r\n"
    );
    if let Some(id) = call_id {
        m.push_str(&format!("Call-ID: {id}\r\n"));
    }
    m.push_str(&format!("CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"));
    m.into_bytes()
}

fn udp4(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { unreachable!() };
    let mut out = Vec::new();
    PacketBuilder::ipv4(s.octets(), d.octets(), 64).udp(src.port(), dst.port()).write(&mut out, payload).unwrap();
    out
}

fn tcp_syn(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { unreachable!() };
    let mut out = Vec::new();
    PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        .tcp(src.port(), dst.port(), 1, 64240)
        .syn()
        .write(&mut out, &sip("INVITE", Some("tcp-call")))
        .unwrap();
    out
}

fn run(e: &Engine, now: Instant, pkt: &[u8], dir: ipvs_core::Direction) -> (Verdict, Vec<u8>) {
    let mut data = vec![0u8; 64 + pkt.len()];
    data[64..].copy_from_slice(pkt);
    let mut buf = PacketBuf::new(&mut data, 64, pkt.len()).unwrap();
    let v = e.handle_packet(now, &mut buf, dir);
    (v, buf.packet().to_vec())
}

/// Source and destination of an IPv4 UDP packet, after checking its IPv4 header and UDP checksums.
fn checked_udp(pkt: &[u8]) -> (SocketAddr, SocketAddr) {
    let ip = Ipv4HeaderSlice::from_slice(pkt).unwrap().to_header();
    assert_eq!(ip.calc_header_checksum(), ip.header_checksum, "IPv4 header checksum");
    let sliced = SlicedPacket::from_ip(pkt).unwrap();
    let Some(TransportSlice::Udp(u)) = sliced.transport else { panic!("not UDP") };
    let (uh, payload) = UdpHeader::from_slice(u.slice()).unwrap();
    assert_eq!(uh.checksum, uh.calc_checksum_ipv4_raw(ip.source, ip.destination, payload).unwrap(), "UDP checksum");
    (sa(Ipv4Addr::from(ip.source), uh.source_port), sa(Ipv4Addr::from(ip.destination), uh.destination_port))
}

/// A client packet that must be forwarded by NAT: returns the real server it went to (checked against the
/// rewritten destination and checksums).
fn to_rs(e: &Engine, now: Instant, client: SocketAddr, payload: &[u8]) -> Ipv4Addr {
    let (v, out) = run(e, now, &udp4(client, sa(VIP, 5060), payload), FromClient);
    let Verdict::Forward { method: FwdMethod::Masq, next_hop: IpAddr::V4(rs), .. } = v else { panic!("{v:?}") };
    let (src, dst) = checked_udp(&out);
    assert_eq!((src, dst), (client, sa(rs, 5060)));
    rs
}

/// The templates: (client network, real server, Call-ID).
fn templates(e: &Engine, now: Instant) -> Vec<(IpAddr, IpAddr, Option<Vec<u8>>)> {
    e.conns(now)
        .into_iter()
        .filter(|c| c.is_template())
        .map(|c| (c.client.ip(), c.real.ip(), e.conn_pe_data(c.id)))
        .collect()
}

#[test]
fn calls_spread_by_the_scheduler_and_each_call_sticks() {
    let e = engine(SIP_RULES);
    let calls: Vec<String> = (0..4).map(|k| format!("a84b4c76e667{k}@client.atlanta.example.com")).collect();
    let mut rs_of = Vec::new();
    for (k, id) in calls.iter().enumerate() {
        rs_of.push(to_rs(&e, T0, sa(CLIENT, 5000 + k as u16), &sip("INVITE", Some(id))));
    }
    // rr over two servers: consecutive new calls alternate, even from one client.
    for k in 1..4 {
        assert_ne!(rs_of[k], rs_of[k - 1], "call {k}");
    }
    // Every later packet of a call, from new client ports (new conns), goes where its call went.
    for round in 0..5u16 {
        for (k, id) in calls.iter().enumerate() {
            let port = 6000 + round * 10 + k as u16;
            assert_eq!(to_rs(&e, T0, sa(CLIENT, port), &sip("ACK", Some(id))), rs_of[k], "round {round} call {k}");
        }
    }
    // And more packets on one conn stay on it (the conn is found before any template).
    for _ in 0..3 {
        assert_eq!(to_rs(&e, T0, sa(CLIENT, 5000), &sip("INFO", Some(&calls[1]))), rs_of[0]);
    }
    // One template per call, each carrying its Call-ID.
    let mut got: Vec<(IpAddr, Vec<u8>)> =
        templates(&e, T0).into_iter().map(|(_, rs, pe)| (rs, pe.expect("a Call-ID"))).collect();
    got.sort();
    let mut want: Vec<(IpAddr, Vec<u8>)> =
        calls.iter().zip(&rs_of).map(|(id, rs)| (IpAddr::V4(*rs), id.clone().into_bytes())).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(e.conns(T0).iter().filter(|c| !c.is_template()).count(), 4 + 20);
    assert_eq!(e.drop_count(DropReason::PersistenceEngine), 0);
}

#[test]
fn without_pe_one_client_sticks_whole() {
    // The same traffic on a plain persistent service: every call of the client goes to one server.
    let e = engine(&SIP_RULES.replace(" --pe sip", ""));
    let first = to_rs(&e, T0, sa(CLIENT, 5000), &sip("INVITE", Some("one")));
    for k in 1..6u16 {
        assert_eq!(to_rs(&e, T0, sa(CLIENT, 5000 + k), &sip("INVITE", Some(&format!("call{k}")))), first);
    }
    assert_eq!(templates(&e, T0), vec![(IpAddr::V4(CLIENT), IpAddr::V4(first), None)]);
}

#[test]
fn one_call_sticks_across_the_client_network_only() {
    let e = engine(&SIP_RULES.replace("-p 60", "-p 60 -M 255.255.255.0"));
    let call = sip("INVITE", Some("shared-call@example.com"));
    let first = to_rs(&e, T0, sa(CLIENT, 5000), &call);
    // Another host of the same /24, same call: same server.
    assert_eq!(to_rs(&e, T0, sa(Ipv4Addr::new(192, 0, 2, 99), 7000), &call), first);
    // The same Call-ID from another /24 is another template; rr gives it the other server.
    let other = to_rs(&e, T0, sa(Ipv4Addr::new(192, 0, 3, 7), 5000), &call);
    assert_ne!(other, first);
    let nets: Vec<IpAddr> = templates(&e, T0).into_iter().map(|t| t.0).collect();
    assert_eq!(nets.len(), 2);
    assert!(nets.contains(&"192.0.2.0".parse().unwrap()) && nets.contains(&"192.0.3.0".parse().unwrap()));
}

#[test]
fn call_template_expires_on_time() {
    let e = engine(SIP_RULES);
    e.set_timeouts(Timeouts { tcp: 0, tcpfin: 0, udp: 10 }).unwrap();
    let call = sip("INVITE", Some("expiring@example.com"));
    let first = to_rs(&e, T0, sa(CLIENT, 5000), &call);
    // The conn goes after its 10 s UDP timeout; the template, restarted when the conn was created, after 60 s.
    e.handle_timeout(T0 + Duration::from_millis(9_999));
    assert_eq!(e.conns(T0).len(), 2);
    e.handle_timeout(T0 + Duration::from_secs(10));
    assert_eq!(templates(&e, T0).len(), 1);
    assert_eq!(e.conns(T0).len(), 1);
    e.handle_timeout(T0 + Duration::from_millis(59_999));
    assert_eq!(templates(&e, T0).len(), 1, "not before its time");
    let later = T0 + Duration::from_secs(60);
    e.handle_timeout(later);
    assert!(e.conns(later).is_empty(), "template gone at 60 s");
    // The call is scheduled anew: rr moves on to the other server.
    assert_ne!(to_rs(&e, later, sa(CLIENT, 5001), &call), first);
}

#[test]
fn malformed_sip_is_dropped_with_a_counted_reason() {
    let rules = format!(
        "{SIP_RULES}-A -t 198.51.100.1:5060 -s rr -p 60 --pe sip\n-a -t 198.51.100.1:5060 -r 10.1.0.1:5060 -m\n"
    );
    let e = engine(&rules);
    let vip = sa(VIP, 5060);
    let long = "x".repeat(256);
    let unterminated = {
        let mut m = sip("INVITE", None);
        m.truncate(m.len() - 2);
        m.extend_from_slice(b"Call-ID: abc@host");
        m
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("no Call-ID", udp4(sa(CLIENT, 5000), vip, &sip("INVITE", None))),
        ("256-byte Call-ID", udp4(sa(CLIENT, 5001), vip, &sip("INVITE", Some(&long)))),
        ("not followed by CR/LF", udp4(sa(CLIENT, 5002), vip, &unterminated)),
        ("trailing space", udp4(sa(CLIENT, 5003), vip, &sip("INVITE", Some("abc ")))),
        ("empty payload", udp4(sa(CLIENT, 5004), vip, b"")),
        ("TCP", tcp_syn(sa(CLIENT, 5005), vip)),
    ];
    for (what, pkt) in &bad {
        let (v, _) = run(&e, T0, pkt, FromClient);
        assert_eq!(v, Verdict::Drop(DropReason::PersistenceEngine), "{what}");
    }
    assert_eq!(e.drop_count(DropReason::PersistenceEngine), bad.len() as u64);
    assert_eq!(e.drop_counts().total(), bad.len() as u64);
    assert!(e.conns(T0).is_empty(), "nothing created");
    // 255 bytes is the longest Call-ID kept.
    let id255 = "y".repeat(255);
    to_rs(&e, T0, sa(CLIENT, 5010), &sip("INVITE", Some(&id255)));
    assert_eq!(templates(&e, T0)[0].2.as_deref(), Some(id255.as_bytes()));
    // Once the conn exists, its packets are not parsed again.
    to_rs(&e, T0, sa(CLIENT, 5010), &sip("INFO", None));
    assert_eq!(e.drop_count(DropReason::PersistenceEngine), bad.len() as u64);
}

#[test]
fn conn_out_creates_conns_for_calls_real_servers_start() {
    let e = engine(SIP_RULES);
    // RS1 and RS2 each start a call toward an outside peer.
    for (rs, peer_port, call) in [(RS1, 5070, "rs1-call@10.1.0.1"), (RS2, 5080, "rs2-call@10.1.0.2")] {
        let (v, out) =
            run(&e, T0, &udp4(sa(rs, 5060), sa(PEER, peer_port), &sip("INVITE", Some(call))), FromRealServer);
        let Verdict::Forward { method: FwdMethod::Masq, next_hop, dest } = v else { panic!("{v:?}") };
        assert_eq!(next_hop, IpAddr::V4(PEER));
        let svc = ServiceKey::Addr { protocol: Protocol::Udp, addr: sa(VIP, 5060) };
        assert_eq!(Some(dest), e.dest_id(&svc, sa(rs, 5060)));
        // Sent on as from the virtual service.
        assert_eq!(checked_udp(&out), (sa(VIP, 5060), sa(PEER, peer_port)));
        let c = e.conn(T0, Protocol::Udp, sa(PEER, peer_port), sa(VIP, 5060)).expect("a conn for the peer");
        assert_eq!((c.real, c.dest), (sa(rs, 5060), Some(dest)));
    }
    let tpls = templates(&e, T0);
    assert!(tpls.contains(&(IpAddr::V4(PEER), IpAddr::V4(RS1), Some(b"rs1-call@10.1.0.1".to_vec()))), "{tpls:?}");
    assert!(tpls.contains(&(IpAddr::V4(PEER), IpAddr::V4(RS2), Some(b"rs2-call@10.1.0.2".to_vec()))), "{tpls:?}");
    // The peer's answer to RS1's call comes back to RS1 on the conn.
    let (v, out) = run(&e, T0, &udp4(sa(PEER, 5070), sa(VIP, 5060), b"SIP/2.0 200 OK\r\n\r\n"), FromClient);
    assert!(matches!(v, Verdict::Forward { next_hop: IpAddr::V4(RS1), .. }), "{v:?}");
    assert_eq!(checked_udp(&out).1, sa(RS1, 5060));
    // Later requests of each call from other peer ports follow the call's template.
    assert_eq!(to_rs(&e, T0, sa(PEER, 5090), &sip("BYE", Some("rs1-call@10.1.0.1"))), RS1);
    assert_eq!(to_rs(&e, T0, sa(PEER, 5091), &sip("BYE", Some("rs2-call@10.1.0.2"))), RS2);
    assert_eq!(e.total_stats().counters.conns, 4);
}

#[test]
fn conn_out_needs_a_sip_nat_server_and_a_call_id() {
    let rules = format!(
        "{SIP_RULES}-A -u 198.51.100.1:5070 -s rr -p 60\n-a -u 198.51.100.1:5070 -r 10.1.0.3:5070 -m\n\
         -A -u 198.51.100.1:5080 -s rr -p 60 --pe sip\n-a -u 198.51.100.1:5080 -r 10.1.0.4:5080 -g\n\
         -A -u 198.51.100.1:5090 -s rr --pe sip\n-a -u 198.51.100.1:5090 -r 10.1.0.5:5090 -m\n"
    );
    let e = engine(&rules);
    let peer = sa(PEER, 6000);
    let invite = sip("INVITE", Some("x@y"));
    for (what, src, payload) in [
        ("not a real server port", sa(RS1, 5061), &invite),
        ("no Call-ID", sa(RS1, 5060), &sip("INVITE", None)),
        ("service without --pe", sa(Ipv4Addr::new(10, 1, 0, 3), 5070), &invite),
        ("direct-routing server", sa(Ipv4Addr::new(10, 1, 0, 4), 5080), &invite),
    ] {
        let (v, _) = run(&e, T0, &udp4(src, peer, payload), FromRealServer);
        assert_eq!(v, Verdict::Pass, "{what}");
    }
    assert!(e.conns(T0).is_empty());
    // A non-persistent --pe sip service: a conn, no template.
    let (v, out) = run(&e, T0, &udp4(sa(Ipv4Addr::new(10, 1, 0, 5), 5090), peer, &invite), FromRealServer);
    assert!(matches!(v, Verdict::Forward { next_hop: IpAddr::V4(PEER), .. }), "{v:?}");
    assert_eq!(checked_udp(&out), (sa(VIP, 5090), peer));
    let conns = e.conns(T0);
    assert_eq!(conns.len(), 1);
    assert!(!conns[0].is_template());
}

/// Every record the master has sent, with the datagrams.
fn drain(m: &Engine, now: Instant) -> (Vec<SyncConn>, Vec<Vec<u8>>) {
    m.with_sync_master(|s| s.flush(now));
    let (mut recs, mut grams) = (Vec::new(), Vec::new());
    let mut buf = Vec::new();
    while let Some(t) = m.poll_sync_transmit(now, &mut buf) {
        recs.extend(decode_message(&buf[..t.len]).unwrap().into_message().conns);
        grams.push(buf[..t.len].to_vec());
    }
    (recs, grams)
}

#[test]
fn sync_carries_the_call_id_and_the_backup_sticks_the_call() {
    let m = engine(SIP_RULES);
    m.start_sync_master(Master::new(MasterConfig::default()).unwrap(), SyncMasterOptions::default()).unwrap();
    let call = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com";
    let rs = to_rs(&m, T0, sa(CLIENT, 5000), &sip("INVITE", Some(call)));
    let (recs, grams) = drain(&m, T0);
    let tpl = recs.iter().find(|r| r.is_template()).expect("the template is sent");
    assert_eq!(tpl.pe_data.as_deref(), Some(call.as_bytes()));
    assert_eq!(tpl.pe_name.as_deref(), Some(&b"sip"[..]));
    assert_eq!(tpl.daddr, IpAddr::V4(rs));

    // The backup lists its servers the other way round, so its rr gives a new call the other server first.
    let reversed = "-A -u 198.51.100.1:5060 -s rr -p 60 --pe sip\n\
                    -a -u 198.51.100.1:5060 -r 10.1.0.2:5060 -m\n\
                    -a -u 198.51.100.1:5060 -r 10.1.0.1:5060 -m\n";
    let b = engine(reversed);
    b.start_sync_backup(Backup::new(b.sync_backup_config()).unwrap()).unwrap();
    let mut applied = SyncApplied::default();
    for g in &grams {
        let SyncInput::Applied(a) = b.handle_sync_datagram(T0, g) else { panic!("not applied") };
        applied.created += a.created;
        applied.skipped += a.skipped;
    }
    assert_eq!(applied.skipped, 0);
    assert_eq!(templates(&b, T0), vec![(IpAddr::V4(CLIENT), IpAddr::V4(rs), Some(call.as_bytes().to_vec()))]);
    // After failover: the synced call sticks from a new port; a new call goes where rr sends it.
    assert_eq!(to_rs(&b, T0, sa(CLIENT, 5002), &sip("BYE", Some(call))), rs);
    assert_ne!(to_rs(&b, T0, sa(CLIENT, 5004), &sip("INVITE", Some("new-call@x"))), rs);

    // A backup without the SIP engine skips the record (kernel +50) and has no template.
    let off = engine_with(config(false), &SIP_RULES.replace(" --pe sip", ""));
    off.start_sync_backup(Backup::new(off.sync_backup_config()).unwrap()).unwrap();
    let mut skipped = 0;
    for g in &grams {
        let SyncInput::Applied(a) = off.handle_sync_datagram(T0, g) else { panic!("not applied") };
        skipped += a.skipped;
    }
    assert!(skipped >= 1);
    assert!(templates(&off, T0).is_empty());
}

#[test]
fn listings_show_pe_name_and_call_id() {
    let e = engine(SIP_RULES);
    let call = "a84b4c76e66710@pc33.atlanta.example.com";
    let rs = to_rs(&e, T0, sa(CLIENT, 5000), &sip("INVITE", Some(call)));
    let snap = e.listing_snapshot(T0);
    let tpl_row = snap.conns.iter().find(|c| c.client.port() == 0).expect("template row");
    assert_eq!(tpl_row.pe, Some(("sip".to_owned(), call.to_owned())));
    assert!(snap.conns.iter().filter(|c| c.client.port() != 0).all(|c| c.pe.is_none()));
    let text = list_conns(&snap.conns, true);
    let line = text.lines().find(|l| l.contains(call)).expect("a row with the Call-ID");
    assert!(line.contains(&format!("{rs}:5060")) && line.split_whitespace().any(|w| w == "sip"), "{line}");
    // Without --persistent-conn the columns are not shown.
    assert!(!list_conns(&snap.conns, false).contains(call));
    let proc = proc_ip_vs_conn(&snap);
    assert!(proc.lines().any(|l| l.ends_with(&format!(" sip {call}"))), "{proc}");
}

#[test]
fn engine_without_sip_refuses_pe_services() {
    let svc = ServiceKey::Addr { protocol: Protocol::Udp, addr: sa(VIP, 5060) };
    let mut s = ServiceConfig::new(svc);
    s.pe_name = Some("sip".into());
    s.persistence = Some(ipvs_core::Persistence::new(60, ipvs_core::proto::AddressFamily::Inet));
    let off = Engine::new(config(false)).unwrap();
    assert_eq!(off.add_service(T0, s.clone()), Err(EngineError::PersistenceEngineUnavailable));
    let on = Engine::new(config(true)).unwrap();
    on.add_service(T0, s.clone()).unwrap();
    // Editing a plain service into a sip one is refused the same way.
    let mut plain = s.clone();
    plain.pe_name = None;
    off.add_service(T0, plain).unwrap();
    assert_eq!(off.edit_service(T0, s), Err(EngineError::PersistenceEngineUnavailable));
}

// ---- the extractor on arbitrary input -----------------------------------------------------------------------

/// RFC 3261 `word` characters.
const WORD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~()<>:\\\"/[]?{}";

fn word(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(WORD.as_bytes().to_vec()), 1..=max)
        .prop_map(|v| String::from_utf8(v).unwrap_or_default())
}

/// A Call-ID of 1..=255 bytes: `word` or `word@word`.
fn call_id_value() -> impl Strategy<Value = String> {
    (word(200), proptest::option::of(word(54))).prop_map(|(a, b)| match b {
        Some(b) => format!("{a}@{b}"),
        None => a,
    })
}

/// Header lines that are not a Call-ID.
fn other_header() -> impl Strategy<Value = String> {
    let names = ["Via", "From", "To", "CSeq", "Max-Forwards", "Contact", "Call-Info", "If-Match", "Subject"];
    (proptest::sample::select(names.to_vec()), "[ -~]{0,40}").prop_map(|(n, v)| format!("{n}: {v}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_extractor_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(id) = pe_sip::call_id(&bytes) {
            prop_assert!(!id.is_empty() && id.len() <= pe_sip::MAX_CALL_ID);
        }
    }

    #[test]
    fn prop_extractor_never_panics_on_near_sip(
        before in proptest::collection::vec(other_header(), 0..4),
        name in proptest::sample::select(vec!["Call-ID", "call-id", "i", "I", "CALL-ID"]),
        noise in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut m = format!("INVITE sip:x SIP/2.0\r\n{}\r\n{name}:", before.join("\r\n")).into_bytes();
        m.extend_from_slice(&noise);
        let _ = pe_sip::call_id(&m);
    }

    #[test]
    fn prop_extractor_finds_an_injected_call_id(
        before in proptest::collection::vec(other_header(), 0..5),
        after in proptest::collection::vec(other_header(), 0..5),
        compact in any::<bool>(),
        upper in any::<bool>(),
        space_before in "[ \t]{0,2}",
        space_after in "[ \t]{0,3}",
        eol in proptest::sample::select(vec!["\r\n", "\n", "\r"]),
        id in call_id_value(),
    ) {
        let name = match (compact, upper) {
            (true, true) => "I",
            (true, false) => "i",
            (false, true) => "CALL-ID",
            (false, false) => "Call-ID",
        };
        let mut m = String::from("INVITE sip:bob@example.com SIP/2.0");
        for h in &before {
            m.push_str(eol);
            m.push_str(h);
        }
        m.push_str(&format!("{eol}{name}{space_before}:{space_after}"));
        let id_end = m.len() + id.len();
        m.push_str(&id);
        for h in &after {
            m.push_str(eol);
            m.push_str(h);
        }
        m.push_str(eol);
        m.push_str(eol);
        m.push_str("v=0");
        prop_assert_eq!(pe_sip::call_id(m.as_bytes()), Ok(id.as_bytes()));
        // Not followed by a line break: no usable Call-ID.
        prop_assert_eq!(pe_sip::call_id(&m.as_bytes()[..id_end]), Err(CallIdError::Unterminated));
    }
}

#[test]
fn call_ids_of_many_calls_map_to_their_first_server() {
    // A deterministic run: 200 calls from 20 clients of one /24, each call's packets from 5 ports over time;
    // every packet of a call goes where its first one went, and `rr` shares the calls out evenly.
    let e = engine(&SIP_RULES.replace("-p 60", "-p 600 -M 255.255.255.0"));
    let mut first: BTreeMap<u32, Ipv4Addr> = BTreeMap::new();
    let mut per_rs: BTreeMap<Ipv4Addr, u32> = BTreeMap::new();
    for round in 0..5u16 {
        let now = T0 + Duration::from_secs(u64::from(round) * 20);
        for call in 0..200u32 {
            let client = sa(Ipv4Addr::new(192, 0, 2, (call % 20) as u8 + 1), 10_000 + round * 200 + call as u16);
            let rs = to_rs(&e, now, client, &sip("INVITE", Some(&format!("call-{call}@pbx"))));
            match first.get(&call) {
                Some(&r) => assert_eq!(r, rs, "call {call} round {round}"),
                None => {
                    first.insert(call, rs);
                    *per_rs.entry(rs).or_default() += 1;
                }
            }
        }
        e.handle_timeout(now);
    }
    assert_eq!(per_rs.values().copied().collect::<Vec<_>>(), vec![100, 100]);
    assert_eq!(templates(&e, T0).len(), 200);
}
