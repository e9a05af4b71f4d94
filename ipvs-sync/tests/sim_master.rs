//! The master in a simulated timeline (virtual clock, no sleeps): which updates are sent when (facts
//! §12.7, §12.10), how they are batched (§12.2, §12.8), the port mapping and the queue bound.
//!
//! A tiny engine stands in for ipvs-core: it keeps conns with their `in_pkts`, timeout, controller and
//! `SyncState`, walks the controller chain as the master's outcome says, and drains `poll_transmit` at
//! every instant the clock stops (each packet and each `poll_timeout`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

use ipvs_sync::decode::decode_message;
use ipvs_sync::ipvs_proto::state::TcpState;
use ipvs_sync::ipvs_proto::state::TcpTimeouts;
use ipvs_sync::ipvs_proto::{Duration, Instant, Protocol};
use ipvs_sync::master::SkipReason;
use ipvs_sync::record::flags;
use ipvs_sync::{port_index, ConnSyncInfo, Master, MasterConfig, SyncConn, SyncState, Transmit, TransmitKind, Version};

const ES: u16 = 1;
const SYN_RECV: u16 = 3;
const FIN_WAIT: u16 = 4;
const TIME_WAIT: u16 = 5;
const CLOSE_WAIT: u16 = 7;

/// Each conn of a controller chain that was evaluated, and whether its record was queued.
type Chain = Vec<(usize, Result<(), SkipReason>)>;

struct Conn {
    rec: SyncConn,
    in_pkts: u32,
    timeout: Duration,
    sync: SyncState,
    control: Option<usize>,
}

struct Sent {
    at: Instant,
    t: Transmit,
    bytes: Vec<u8>,
    records: Vec<SyncConn>,
}

struct Engine {
    master: Master,
    conns: Vec<Conn>,
    now: Instant,
    wire: Vec<Sent>,
    buf: Vec<u8>,
    drain: bool,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn tcp_rec(client: u32, cport: u16) -> SyncConn {
    SyncConn {
        protocol: Protocol::Tcp,
        caddr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | client)),
        cport,
        vaddr: v4(192, 0, 2, 1),
        vport: 80,
        daddr: v4(10, 1, 0, 1),
        dport: 8080,
        flags: flags::HASHED,
        state: 0,
        timeout: None,
        fwmark: Some(0),
        in_seq: None,
        out_seq: None,
        pe_name: None,
        pe_data: None,
    }
}

fn udp_rec(client: u32, cport: u16) -> SyncConn {
    SyncConn { protocol: Protocol::Udp, vport: 53, dport: 53, ..tcp_rec(client, cport) }
}

fn template_rec(client: u32) -> SyncConn {
    SyncConn { cport: 0, flags: flags::TEMPLATE | flags::INACTIVE | flags::HASHED, ..tcp_rec(client, 0) }
}

fn timeout_for(rec: &SyncConn) -> Duration {
    if rec.is_template() {
        return Duration::from_secs(360);
    }
    match rec.protocol {
        Protocol::Tcp => TcpTimeouts::DEFAULT.timeout(TcpState::from_u8(rec.state as u8).unwrap()),
        _ => Duration::from_secs(300),
    }
}

impl Engine {
    fn new(cfg: MasterConfig) -> Self {
        Self {
            master: Master::new(cfg).unwrap(),
            conns: Vec::new(),
            now: Instant::ZERO,
            wire: Vec::new(),
            buf: Vec::new(),
            drain: true,
        }
    }

    fn add(&mut self, rec: SyncConn, control: Option<usize>) -> usize {
        let timeout = timeout_for(&rec);
        self.conns.push(Conn { rec, in_pkts: 0, timeout, sync: SyncState::new(self.now), control });
        self.conns.len() - 1
    }

    /// One packet of conn `idx` that leaves it in `state`; returns each evaluated conn of the chain and
    /// whether its record was queued.
    fn packet(&mut self, idx: usize, state: u16) -> Chain {
        let c = &mut self.conns[idx];
        c.rec.state = state;
        c.timeout = timeout_for(&c.rec);
        let pkts = if c.rec.flags & flags::ONE_PACKET != 0 {
            self.master.threshold_pkts()
        } else {
            c.in_pkts += 1;
            c.in_pkts
        };
        let r = self.update_chain(idx, pkts);
        if self.drain {
            self.drain();
        }
        r
    }

    fn update_chain(&mut self, mut idx: usize, mut pkts: u32) -> Chain {
        let mut out = Vec::new();
        loop {
            let controlled_by_template = self.conns[idx].control.is_some_and(|p| self.conns[p].rec.is_template());
            let c = &mut self.conns[idx];
            let info = ConnSyncInfo { record: &c.rec, timeout: c.timeout, pkts, controlled_by_template };
            let o = self.master.conn_update(self.now, &info, &mut c.sync);
            out.push((idx, o.decision));
            let Some(p) = c.control else { break };
            if !o.sync_controller {
                break;
            }
            let is_template = self.conns[p].rec.is_template();
            pkts = self.master.controller_pkts(is_template, &mut self.conns[p].in_pkts);
            idx = p;
        }
        out
    }

    fn drain(&mut self) {
        while let Some(t) = self.master.poll_transmit(self.now, &mut self.buf) {
            assert_eq!(t.kind, TransmitKind::Sync);
            let bytes = self.buf[..t.len].to_vec();
            let records = decode_message(&bytes).unwrap().into_message().conns;
            assert_eq!(records.len(), t.n_records);
            self.wire.push(Sent { at: self.now, t, bytes, records });
        }
    }

    /// Moves the clock to `to`, stopping at every timeout on the way.
    fn advance(&mut self, to: Instant) {
        while let Some(t) = self.master.poll_timeout() {
            if t > to {
                break;
            }
            self.now = self.now.max(t);
            self.master.handle_timeout(self.now);
            self.drain();
        }
        self.now = to;
        self.drain();
    }

    fn sent_records(&self) -> usize {
        self.wire.iter().map(|s| s.records.len()).sum()
    }
}

/// Packet numbers (1-based) at which conn `who` was queued.
fn queued_at(log: &[(u32, Chain)], who: usize) -> Vec<u32> {
    log.iter().filter(|(_, r)| r.iter().any(|&(i, d)| i == who && d.is_ok())).map(|(n, _)| *n).collect()
}

#[test]
fn tcp_established_is_sent_at_threshold_then_every_period() {
    let mut e = Engine::new(MasterConfig::default());
    let c = e.add(tcp_rec(1, 1000), None);
    let mut log = Vec::new();
    for n in 1..=200u32 {
        e.advance(Instant::from_millis(u64::from(n) * 20));
        log.push((n, e.packet(c, ES)));
    }
    let sent = queued_at(&log, c);
    println!("TCP ES, 200 packets, defaults: queued at packets {sent:?}");
    assert_eq!(sent, [3, 53, 103, 153]);
    let s = e.master.stats();
    assert_eq!(s.skipped(SkipReason::PacketCount), 196);
    // Each record waits in its partial message for the 2 s flush age.
    e.advance(Instant::from_secs(10));
    let times: Vec<u64> = e.wire.iter().map(|s| s.at.total_millis()).collect();
    println!("datagrams at ms {times:?}");
    // Packets every 20 ms: records at 60 ms and 1060 ms share the message opened at 60 ms, which
    // leaves at 2060 ms; the next one (2060 ms, 3060 ms) leaves at 4060 ms.
    assert_eq!(times, [2060, 4060]);
    assert_eq!(e.wire.iter().map(|s| s.records.len()).collect::<Vec<_>>(), [2, 2]);
    // The wire record: HASHED cleared, v1 timeout = ES timeout.
    let r = &e.wire[0].records[0];
    assert_eq!((r.flags, r.state, r.timeout), (0, ES, Some(900)));
}

#[test]
fn tcp_state_changes() {
    let mut e = Engine::new(MasterConfig::default());
    // SYN_RECV is never synced; the change to ES is not forced (it waits for the packet rule); changes
    // into FIN_WAIT / CLOSE_WAIT / TIME_WAIT are sent at once.
    let c = e.add(tcp_rec(1, 1000), None);
    let states = [SYN_RECV, ES, ES, ES, ES, ES, ES, ES, ES, FIN_WAIT, FIN_WAIT, CLOSE_WAIT, CLOSE_WAIT, TIME_WAIT];
    let mut log = Vec::new();
    for (n, &s) in states.iter().enumerate() {
        e.advance(Instant::from_millis(n as u64 * 5));
        log.push((n as u32 + 1, e.packet(c, s)));
    }
    let sent = queued_at(&log, c);
    println!("SYN_RECV, ES x8, FIN_WAIT x2, CLOSE_WAIT x2, TIME_WAIT: queued at packets {sent:?}");
    assert_eq!(sent, [3, 10, 12, 14]);
    assert_eq!(e.master.stats().skipped(SkipReason::StateNotSynced), 1);

    // A slow handshake: still in SYN_RECV at packet 3, so the threshold is missed; ES at packet 4 is a
    // change, but to ES, so the packet rule applies and the first send is packet 53.
    let d = e.add(tcp_rec(2, 1000), None);
    let mut log = Vec::new();
    for n in 1..=60u32 {
        let s = if n <= 3 { SYN_RECV } else { ES };
        log.push((n, e.packet(d, s)));
    }
    let sent = queued_at(&log, d);
    println!("slow handshake: queued at packets {sent:?}");
    assert_eq!(sent, [53]);
}

#[test]
fn udp_period_zero_sends_once_and_expire_later_sends() {
    let cfg = MasterConfig { sync_period: 0, ..MasterConfig::default() };
    let mut e = Engine::new(cfg);
    let c = e.add(udp_rec(1, 5353), None);
    let mut log = Vec::new();
    for n in 1..=100u32 {
        log.push((n, e.packet(c, 0)));
    }
    let sent = queued_at(&log, c);
    println!("UDP, period 0: queued at packets {sent:?}");
    assert_eq!(sent, [3]);
    // "Expire later" (facts §3.5) passes pkts = sync_threshold: sent again.
    let pkts = e.master.threshold_pkts();
    let r = e.update_chain(c, pkts);
    assert!(r[0].1.is_ok());

    let mut e = Engine::new(MasterConfig::default());
    let c = e.add(udp_rec(1, 5353), None);
    let mut log = Vec::new();
    for n in 1..=120u32 {
        log.push((n, e.packet(c, 0)));
    }
    let sent = queued_at(&log, c);
    println!("UDP, period 50: queued at packets {sent:?}");
    assert_eq!(sent, [3, 53, 103]);
}

#[test]
fn sctp_states() {
    let mut e = Engine::new(MasterConfig::default());
    let mut rec = tcp_rec(1, 1000);
    rec.protocol = Protocol::Sctp;
    let c = e.add(rec, None);
    // INIT1 (1) and COOKIE_ECHOED (7) are not synced; ESTABLISHED (8) waits for the packet rule;
    // SHUTDOWN_SENT (9) and CLOSED (13) are sent at once.
    let states = [1, 7, 8, 8, 8, 9, 13];
    let mut log = Vec::new();
    for (n, &s) in states.iter().enumerate() {
        log.push((n as u32 + 1, e.packet(c, s)));
    }
    let sent = queued_at(&log, c);
    println!("SCTP INIT1, COOKIE_ECHOED, ES x3, SHUTDOWN_SENT, CLOSED: queued at packets {sent:?}");
    assert_eq!(sent, [3, 6, 7]);
}

#[test]
fn templates_follow_their_conns() {
    // v1: the template is evaluated after every packet of a conn it controls, and is exempt from the
    // packet-count rule: it goes out every time (facts §12.10.1).
    let mut e = Engine::new(MasterConfig::default());
    let t = e.add(template_rec(1), None);
    let a = e.add(tcp_rec(1, 1000), Some(t));
    let b = e.add(tcp_rec(1, 1001), Some(t));
    let mut log = Vec::new();
    for n in 1..=10u32 {
        log.push((n, e.packet(a, ES)));
        log.push((n, e.packet(b, ES)));
    }
    let ta = queued_at(&log, t).len();
    println!(
        "v1: 20 packets of 2 conns: conn A {:?}, conn B {:?}, template {ta} times",
        queued_at(&log, a),
        queued_at(&log, b)
    );
    assert_eq!((queued_at(&log, a), queued_at(&log, b), ta), (vec![3], vec![3], 20));
    assert_eq!(e.conns[t].in_pkts, 20);

    // v0: the template only after its conn was sent.
    let mut e = Engine::new(MasterConfig { version: Version::V0, ..MasterConfig::default() });
    let t = e.add(template_rec(1), None);
    let a = e.add(tcp_rec(1, 1000), Some(t));
    let mut log = Vec::new();
    for n in 1..=60u32 {
        log.push((n, e.packet(a, ES)));
    }
    println!("v0: 60 packets: conn {:?}, template {:?}", queued_at(&log, a), queued_at(&log, t));
    assert_eq!((queued_at(&log, a), queued_at(&log, t)), (vec![3, 53], vec![3, 53]));
    assert_eq!(e.conns[t].in_pkts, 2);

    // sync_period 0: a template is sent only when its own in_pkts reaches the threshold.
    let mut e = Engine::new(MasterConfig { sync_period: 0, ..MasterConfig::default() });
    let t = e.add(template_rec(1), None);
    let a = e.add(tcp_rec(1, 1000), Some(t));
    let mut log = Vec::new();
    for n in 1..=10u32 {
        log.push((n, e.packet(a, ES)));
    }
    println!("period 0: conn {:?}, template {:?}", queued_at(&log, a), queued_at(&log, t));
    assert_eq!((queued_at(&log, a), queued_at(&log, t)), (vec![3], vec![3]));

    // sync_persist_mode: the conn never, the template every time.
    let mut e = Engine::new(MasterConfig { sync_persist_mode: true, ..MasterConfig::default() });
    let t = e.add(template_rec(1), None);
    let a = e.add(tcp_rec(1, 1000), Some(t));
    let mut log = Vec::new();
    for n in 1..=10u32 {
        log.push((n, e.packet(a, ES)));
    }
    println!("persist mode: conn {:?}, template {} times", queued_at(&log, a), queued_at(&log, t).len());
    assert_eq!((queued_at(&log, a).len(), queued_at(&log, t).len()), (0, 10));
    assert_eq!(e.master.stats().skipped(SkipReason::PersistMode), 10);

    // A ONE_PACKET conn is never sent; its template is (pkts = threshold for the conn).
    let mut e = Engine::new(MasterConfig::default());
    let t = e.add(template_rec(1), None);
    let mut ops = udp_rec(1, 5353);
    ops.flags |= flags::ONE_PACKET;
    let o = e.add(ops, Some(t));
    let mut log = Vec::new();
    for n in 1..=5u32 {
        log.push((n, e.packet(o, 0)));
    }
    println!("ONE_PACKET: conn {:?}, template {:?}", queued_at(&log, o), queued_at(&log, t));
    assert_eq!((queued_at(&log, o).len(), queued_at(&log, t).len()), (0, 5));
    assert_eq!(e.master.stats().skipped(SkipReason::OnePacket), 5);
}

#[test]
fn refresh_period_and_retries() {
    // sync_period 0 + sync_refresh_period 10 s: purely time-driven. A TCP ES conn (timeout 900 s) with a
    // packet every second is re-sent when its reported expiry moved by 10 s.
    let run = |retries: u8| {
        let cfg = MasterConfig {
            sync_period: 0,
            sync_refresh_period: Duration::from_secs(10),
            sync_retries: retries,
            ..MasterConfig::default()
        };
        let mut e = Engine::new(cfg);
        let c = e.add(tcp_rec(1, 1000), None);
        let mut log = Vec::new();
        for s in 1..=50u32 {
            e.advance(Instant::from_secs(u64::from(s)));
            log.push((s, e.packet(c, ES)));
        }
        (queued_at(&log, c), e.master.stats())
    };
    let (sent, stats) = run(0);
    println!(
        "refresh 10 s, retries 0: sent at seconds {sent:?} (suppressed {})",
        stats.skipped(SkipReason::RefreshUnchanged)
    );
    assert_eq!(sent, [1, 11, 21, 31, 41]);
    // With 2 retries, each change is repeated twice, refresh/8 = 1.25 s apart.
    let (sent, stats) = run(2);
    println!(
        "refresh 10 s, retries 2: sent at seconds {sent:?} (too early {}, suppressed {})",
        stats.skipped(SkipReason::RetryTooEarly),
        stats.skipped(SkipReason::RefreshUnchanged)
    );
    assert_eq!(sent, [1, 3, 5, 16, 18, 20, 31, 33, 35, 46, 48, 50]);
}

#[test]
fn batching_respects_maxlen_and_255_records() {
    // 1000 UDP conns each reach their 3rd packet at the same instant.
    let mut cases = Vec::new();
    for (version, maxlen, per_msg) in
        [(Version::V1, 1472, 40), (Version::V0, 1472, 60), (Version::V1, 65507, 255), (Version::V0, 65507, 255)]
    {
        let mut e = Engine::new(MasterConfig { version, maxlen, ..MasterConfig::default() });
        e.drain = false;
        let ids: Vec<usize> = (0..1000u32).map(|i| e.add(udp_rec(i, 40000), None)).collect();
        for _ in 0..3 {
            for &i in &ids {
                let _ = e.packet(i, 0);
            }
        }
        e.drain();
        e.advance(Instant::from_secs(3));
        let sizes: Vec<usize> = e.wire.iter().map(|s| s.records.len()).collect();
        let max_len = e.wire.iter().map(|s| s.bytes.len()).max().unwrap();
        println!(
            "{version:?} maxlen {maxlen}: {} messages, records per message {:?}…, longest {max_len} bytes",
            e.wire.len(),
            &sizes[..3]
        );
        assert_eq!(e.sent_records(), 1000);
        assert!(e.wire.iter().all(|s| s.bytes.len() <= maxlen && s.records.len() <= 255));
        assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == per_msg), "{sizes:?}");
        cases.push(e.wire.len());
    }
    assert_eq!(cases, [25, 17, 4, 4]);

    // A record longer than maxlen gets a message of its own.
    let mut e = Engine::new(MasterConfig { maxlen: 40, ..MasterConfig::default() });
    let mut big = udp_rec(1, 1);
    big.flags |= flags::TEMPLATE;
    big.pe_data = Some(vec![7; 100]);
    big.pe_name = Some(b"sip".to_vec());
    let t = e.add(big, None);
    let a = e.add(udp_rec(2, 2), None);
    for _ in 0..3 {
        let _ = e.packet(t, 0);
        let _ = e.packet(a, 0);
    }
    e.advance(Instant::from_secs(3));
    let lens: Vec<(usize, usize)> = e.wire.iter().map(|s| (s.bytes.len(), s.records.len())).collect();
    println!("maxlen 40: datagrams (bytes, records) {lens:?}");
    assert!(lens.iter().all(|&(_, n)| n == 1));
    assert_eq!(lens[0].0, 8 + 36 + 102 + 5);
}

#[test]
fn partial_message_leaves_after_flush_time() {
    let mut e = Engine::new(MasterConfig::default());
    let c = e.add(tcp_rec(1, 1000), None);
    e.advance(Instant::from_millis(1000));
    for _ in 0..3 {
        let _ = e.packet(c, ES);
    }
    assert_eq!(e.master.poll_timeout(), Some(Instant::from_millis(3000)));
    e.advance(Instant::from_millis(2999));
    assert!(e.wire.is_empty());
    e.advance(Instant::from_millis(5000));
    println!("one record queued at 1.000 s left at {}", e.wire[0].at);
    assert_eq!(e.wire.len(), 1);
    assert_eq!(e.wire[0].at, Instant::from_millis(3000));
    assert_eq!(e.master.poll_timeout(), None);
    // Spurious handle_timeout calls do nothing.
    e.master.handle_timeout(Instant::from_secs(100));
    assert!(e.master.poll_transmit(Instant::from_secs(100), &mut Vec::new()).is_none());
}

#[test]
fn ports_are_deterministic() {
    let run = || {
        let mut e = Engine::new(MasterConfig { n_ports: 4, ..MasterConfig::default() });
        e.drain = false;
        let mut ids: Vec<usize> = (0..300u32).map(|i| e.add(tcp_rec(i % 50, 1024 + i as u16), None)).collect();
        ids.extend((0..100u32).map(|i| {
            let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16));
            e.add(SyncConn { caddr: a, vaddr: a, daddr: a, ..tcp_rec(0, 2000) }, None)
        }));
        for _ in 0..3 {
            for &i in &ids {
                let _ = e.packet(i, ES);
            }
        }
        e.advance(Instant::from_secs(3));
        e.wire
    };
    let a = run();
    let b = run();
    let mut per_port = [0usize; 4];
    for s in &a {
        for r in &s.records {
            assert_eq!(port_index(r, 4), s.t.port_index);
        }
        per_port[usize::from(s.t.port_index)] += s.records.len();
    }
    println!("400 conns over 4 ports: records per port {per_port:?}, {} messages", a.len());
    assert_eq!(per_port.iter().sum::<usize>(), 400);
    assert!(per_port.iter().all(|&n| n > 50));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.bytes == y.bytes && x.t == y.t));
}

#[test]
fn queue_overflow_is_counted() {
    let mut e = Engine::new(MasterConfig { qlen_max: 2, ..MasterConfig::default() });
    e.drain = false;
    let ids: Vec<usize> = (0..500u32).map(|i| e.add(udp_rec(i, 1), None)).collect();
    for _ in 0..3 {
        for &i in &ids {
            let _ = e.packet(i, 0);
        }
    }
    let s = e.master.stats();
    println!(
        "500 records, qlen_max 2, nobody draining: closed {}, dropped {} messages ({} records), queued {}",
        s.messages_closed,
        s.messages_dropped,
        s.records_dropped,
        e.master.queued_messages()
    );
    assert_eq!((s.messages_closed, s.messages_dropped, s.records_dropped), (12, 10, 400));
    // Draining now sends the 2 queued messages; the partial one (20 records) leaves at 2 s.
    e.drain();
    e.advance(Instant::from_secs(3));
    assert_eq!(e.sent_records(), 100);
    assert_eq!(e.sent_records() as u64 + s.records_dropped, 500);
}

#[test]
fn v0_skips_ipv6_and_version_switch_closes_messages() {
    let mut e = Engine::new(MasterConfig { version: Version::V0, ..MasterConfig::default() });
    let a = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let c6 = e.add(SyncConn { caddr: a, vaddr: a, daddr: a, ..tcp_rec(0, 1) }, None);
    let c4 = e.add(tcp_rec(1, 1), None);
    for _ in 0..3 {
        let _ = e.packet(c6, ES);
        let _ = e.packet(c4, ES);
    }
    assert_eq!(e.master.stats().skipped(SkipReason::Ipv6InV0), 3);
    // Switching to v1 closes the v0 message at once.
    let now = e.now;
    e.master.reconfigure(now, MasterConfig::default()).unwrap();
    e.drain();
    assert_eq!(e.wire.len(), 1);
    assert_eq!(e.wire[0].bytes.len(), 4 + 24);
    println!("v0 message of {} bytes closed by the switch to v1", e.wire[0].bytes.len());
}
