//! The backup: validation with the kernel receiver's rules, the sync id filter, and the apply rules it
//! hands the engine (facts §12.5, §12.6), fed by a real master and by hand-made messages.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

use ipvs_sync::backup::{BatchSource, Lookup, OtherDest};
use ipvs_sync::encode::encode_message;
use ipvs_sync::ipvs_proto::{Duration, Instant, Protocol};
use ipvs_sync::record::flags;
use ipvs_sync::{
    Backup, BackupConfig, BackupRecord, ConnSyncInfo, DecodeError, Master, MasterConfig, SyncConn, SyncState, Version,
};

/// Forwarding method bits (facts §1.1).
const MASQ: u32 = 0;
const DROUTE: u32 = 3;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn rec(protocol: Protocol, cport: u16, flags: u32, state: u16, timeout: Option<u32>) -> SyncConn {
    SyncConn {
        protocol,
        caddr: v4(10, 0, 0, 1),
        cport,
        vaddr: v4(192, 0, 2, 1),
        vport: 80,
        daddr: v4(10, 1, 0, 1),
        dport: 8080,
        flags,
        state,
        timeout,
        fwmark: timeout.map(|_| 0),
        in_seq: None,
        out_seq: None,
        pe_name: None,
        pe_data: None,
    }
}

fn msg(version: Version, syncid: u8, conns: &[SyncConn]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(version, syncid, conns, &mut out).unwrap();
    out
}

/// Lookup key: (template?, protocol, caddr, cport, vaddr, vport).
type Key = (bool, u8, IpAddr, u16, IpAddr, u16);

/// A toy backup table applying records as ipvs-core would (facts §12.6), to exercise the plain data.
#[derive(Default)]
struct Table {
    conns: HashMap<Key, (BackupRecord, u32)>,
    ignored_stale: usize,
    replaced: usize,
    inactive_flips: usize,
}

impl Table {
    fn apply(&mut self, r: BackupRecord) {
        let c = &r.conn;
        let key = (r.lookup() == Lookup::Template, u8::from(c.protocol), c.caddr, c.cport, c.vaddr, c.vport);
        match self.conns.get_mut(&key) {
            Some((old, old_flags))
                if r.lookup() == Lookup::Conn && (old.conn.daddr, old.conn.dport) != (c.daddr, c.dport) =>
            {
                match r.on_other_dest() {
                    OtherDest::IgnoreRecord => self.ignored_stale += 1,
                    OtherDest::ReplaceConn => {
                        self.replaced += 1;
                        let f = r.flags;
                        *old = r;
                        *old_flags = f;
                    }
                }
            }
            Some((old, old_flags)) => {
                if r.inactive_changed(*old_flags).is_some() {
                    self.inactive_flips += 1;
                }
                *old_flags = r.updated_flags(*old_flags);
                *old = r;
            }
            None => {
                let f = r.flags;
                self.conns.insert(key, (r, f));
            }
        }
    }
}

#[test]
fn master_to_backup_end_to_end() {
    // A master syncs 100 TCP conns, 20 UDP conns and 5 templates; the backup gets them all, with SYNC
    // set, BACKUP_MASK applied and the synced timeouts.
    let mut m = Master::new(MasterConfig { syncid: 9, ..MasterConfig::default() }).unwrap();
    let mut b = Backup::new(BackupConfig { syncid: 9, ..BackupConfig::default() }).unwrap();
    let now = Instant::from_secs(1);
    let mut conns = Vec::new();
    for i in 0..100u16 {
        conns.push((rec(Protocol::Tcp, 1000 + i, flags::HASHED | flags::NFCT, 1, None), 900));
    }
    for i in 0..20u16 {
        conns.push((rec(Protocol::Udp, 2000 + i, flags::HASHED | flags::INACTIVE, 0, None), 300));
    }
    for i in 0..5u8 {
        let mut t = rec(Protocol::Tcp, 0, flags::TEMPLATE | flags::INACTIVE | flags::HASHED, 0, None);
        t.caddr = v4(10, 0, 1, i);
        conns.push((t, 360));
    }
    for (c, secs) in &conns {
        let mut st = SyncState::new(Instant::ZERO);
        let info =
            ConnSyncInfo { record: c, timeout: Duration::from_secs(*secs), pkts: 3, controlled_by_template: false };
        assert!(m.conn_update(now, &info, &mut st).queued());
    }
    m.flush(now);
    let mut table = Table::default();
    let mut buf = Vec::new();
    let mut n_msgs = 0;
    while let Some(_t) = m.poll_transmit(now, &mut buf) {
        n_msgs += 1;
        let batch = b.handle_datagram(now, &buf).unwrap();
        assert_eq!(batch.source, BatchSource::Sync);
        for r in batch.records {
            table.apply(r);
        }
    }
    let s = b.stats();
    println!("{n_msgs} messages, {} records accepted, table {}", s.records_accepted, table.conns.len());
    assert_eq!(table.conns.len(), 125);
    assert_eq!(s.records_accepted, 125);
    for (r, f) in table.conns.values() {
        assert_eq!(r.flags & flags::SYNC, flags::SYNC);
        assert_eq!(f & (flags::NFCT | flags::HASHED), 0, "NFCT and HASHED are masked out");
        assert_eq!(r.in_pkts, 3);
        let want = if r.is_template() {
            360
        } else if r.conn.protocol == Protocol::Udp {
            300
        } else {
            900
        };
        assert_eq!(r.timeout, Duration::from_secs(want));
        assert_eq!(r.sync_state(now).old_state, r.state());
    }
}

#[test]
fn syncid_filter() {
    let m5 = msg(Version::V1, 5, &[rec(Protocol::Tcp, 1, 0, 1, Some(900))]);
    let m6 = msg(Version::V1, 6, &[rec(Protocol::Tcp, 1, 0, 1, Some(900))]);
    let mut b = Backup::new(BackupConfig { syncid: 5, ..BackupConfig::default() }).unwrap();
    assert_eq!(b.handle_datagram(Instant::ZERO, &m5).unwrap().records.len(), 1);
    assert_eq!(b.handle_datagram(Instant::ZERO, &m6), Err(DecodeError::WrongSyncId(6)));
    assert_eq!(b.handle_datagram(Instant::ZERO, &m6), Err(DecodeError::WrongSyncId(6)));
    let s = b.stats();
    println!(
        "backup syncid 5: accepted {}, wrong syncid {}",
        s.messages,
        s.message_errors(DecodeError::WrongSyncId(0))
    );
    assert_eq!((s.messages, s.message_errors(DecodeError::WrongSyncId(0))), (1, 2));
    // Sync id 0 accepts every sync id.
    let mut b = Backup::new(BackupConfig::default()).unwrap();
    assert!(b.handle_datagram(Instant::ZERO, &m5).is_ok());
    assert!(b.handle_datagram(Instant::ZERO, &m6).is_ok());
}

#[test]
fn timeouts_and_flags_per_version() {
    let mut b = Backup::new(BackupConfig::default()).unwrap();
    let tpl = flags::TEMPLATE | flags::INACTIVE;
    // v0 carries no timeout: the backup's table per state, 180 s for templates. v0 flags: | SYNC,
    // HASHED cleared, no BACKUP_MASK (ONE_PACKET 0x2000 survives).
    let v0 = msg(
        Version::V0,
        1,
        &[
            rec(Protocol::Tcp, 1, flags::HASHED | flags::ONE_PACKET, 1, None),
            rec(Protocol::Tcp, 2, 0, 4, None),
            rec(Protocol::Tcp, 3, 0, 7, None),
            rec(Protocol::Udp, 4, 0, 0, None),
            rec(Protocol::Sctp, 5, 0, 8, None),
            rec(Protocol::Tcp, 0, tpl, 1, None),
        ],
    );
    let batch = b.handle_datagram(Instant::ZERO, &v0).unwrap();
    let got: Vec<(u64, u32)> = batch.records.iter().map(|r| (r.timeout.secs(), r.flags)).collect();
    println!("v0 (timeout s, flags): {got:?}");
    assert_eq!(got, [(900, 0x2020), (120, 0x20), (60, 0x20), (300, 0x20), (900, 0x20), (180, tpl | flags::SYNC)]);
    // v1: the record's timeout when non-zero; flags & BACKUP_MASK | SYNC.
    let v1 = msg(
        Version::V1,
        1,
        &[
            rec(Protocol::Tcp, 1, flags::HASHED | flags::ONE_PACKET | flags::NFCT | DROUTE, 1, Some(77)),
            rec(Protocol::Tcp, 2, 0, 5, Some(0)),
            rec(Protocol::Tcp, 0, tpl, 0, Some(0)),
            rec(Protocol::Tcp, 0, tpl, 0, Some(600)),
        ],
    );
    let batch = b.handle_datagram(Instant::ZERO, &v1).unwrap();
    let got: Vec<(u64, u32)> = batch.records.iter().map(|r| (r.timeout.secs(), r.flags)).collect();
    println!("v1 (timeout s, flags): {got:?}");
    assert_eq!(got, [(77, 0x23), (120, 0x20), (180, tpl | 0x20), (600, tpl | 0x20)]);
    // Custom backup timeouts are used for v0 / zero timeouts.
    let mut cfg = BackupConfig::default();
    cfg.tcp_timeouts.set_from_ipvsadm(100, 0);
    cfg.fallback_timeout = Duration::from_secs(42);
    let mut b = Backup::new(cfg).unwrap();
    let batch = b.handle_datagram(Instant::ZERO, &v0).unwrap();
    assert_eq!((batch.records[0].timeout.secs(), batch.records[5].timeout.secs()), (100, 42));
}

#[test]
fn apply_rules_as_plain_data() {
    let mut b = Backup::new(BackupConfig::default()).unwrap();
    let mut nat = rec(Protocol::Tcp, 1, 0, 1, Some(900));
    nat.fwmark = Some(7);
    let mut dr = nat.clone();
    dr.cport = 2;
    dr.flags = DROUTE | flags::NOOUTPUT;
    let mut plain_dr = dr.clone();
    plain_dr.cport = 3;
    plain_dr.fwmark = Some(0);
    let batch = b.handle_datagram(Instant::ZERO, &msg(Version::V1, 1, &[nat, dr, plain_dr])).unwrap();
    let ports: Vec<[u16; 2]> = batch.records.iter().map(|r| r.dest_ports).collect();
    println!("dest ports (NAT fwmark, DR fwmark, DR no fwmark): {ports:?}");
    assert_eq!(ports, [[8080, 0], [0, 8080], [8080, 0]]);

    // Updates: only INACTIVE and the seq bits change; INACTIVE flips are reported; an INACTIVE record
    // for another real server is a stale expiry notice.
    let mut table = Table::default();
    let mut base = rec(Protocol::Tcp, 9, DROUTE, 1, Some(900));
    let mut apply = |table: &mut Table, c: &SyncConn| {
        for r in b.handle_datagram(Instant::ZERO, &msg(Version::V1, 1, std::slice::from_ref(c))).unwrap().records {
            table.apply(r);
        }
    };
    apply(&mut table, &base);
    base.flags = MASQ | flags::INACTIVE | flags::IN_SEQ;
    base.state = 4;
    base.in_seq = Some(Default::default());
    base.out_seq = Some(Default::default());
    apply(&mut table, &base);
    let (_, f) = table.conns.values().next().unwrap();
    assert_eq!(*f, DROUTE | flags::SYNC | flags::INACTIVE | flags::IN_SEQ, "{f:#x}");
    let mut moved = base.clone();
    moved.daddr = v4(10, 1, 0, 2);
    apply(&mut table, &moved); // INACTIVE: ignored
    moved.flags = 0;
    apply(&mut table, &moved); // active: replaces
    println!(
        "inactive flips {}, stale notices ignored {}, replaced {}",
        table.inactive_flips, table.ignored_stale, table.replaced
    );
    assert_eq!((table.inactive_flips, table.ignored_stale, table.replaced), (1, 1, 1));
    assert_eq!(table.conns.values().next().unwrap().0.conn.daddr, v4(10, 1, 0, 2));
}

#[test]
fn record_errors_skip_or_drop_the_rest() {
    let mut b = Backup::new(BackupConfig::default()).unwrap();
    let good = rec(Protocol::Tcp, 1, 0, 1, Some(900));
    let mut bad_state = good.clone();
    bad_state.state = 11;
    let mut unknown_proto = good.clone();
    unknown_proto.protocol = Protocol::Icmp;
    let mut tpl_state = good.clone();
    tpl_state.flags = flags::TEMPLATE;
    tpl_state.state = 5;
    let mut m = msg(Version::V1, 1, &[good.clone(), bad_state, unknown_proto, tpl_state, good.clone(), good.clone()]);
    // Record 5 (offset 8 + 5 * 36) gets a bad type: the kernel drops it and the rest.
    m[8 + 5 * 36] = 2;
    let batch = b.handle_datagram(Instant::ZERO, &m).unwrap();
    let s = b.stats();
    println!(
        "6 records: accepted {}, skipped {} (bad state {}, unknown protocol {}), dropped {}, unusual template state {}",
        batch.records.len(),
        batch.skipped,
        s.record_errors(DecodeError::BadState(0)),
        s.record_errors(DecodeError::UnknownProtocol(0)),
        s.records_dropped,
        s.template_state_unusual
    );
    assert_eq!((batch.records.len(), batch.skipped, s.records_dropped), (3, 2, 1));
    assert_eq!(batch.dropped_rest.map(|e| e.error), Some(DecodeError::BadRecordType(2)));
    assert_eq!(s.template_state_unusual, 1);

    // Host rules: PE not loaded, IPv6 disabled.
    let mut b = Backup::new(BackupConfig { ipv6: false, ..BackupConfig::default() }).unwrap();
    let mut sip = good.clone();
    sip.flags = flags::TEMPLATE;
    sip.pe_data = Some(b"call-1".to_vec());
    sip.pe_name = Some(b"sip".to_vec());
    let mut foo = sip.clone();
    foo.pe_name = Some(b"foo".to_vec());
    let a6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let v6 = SyncConn { caddr: a6, vaddr: a6, daddr: a6, ..good.clone() };
    let batch = b.handle_datagram(Instant::ZERO, &msg(Version::V1, 1, &[sip, foo, v6])).unwrap();
    let s = b.stats();
    println!(
        "sip/foo/IPv6: accepted {}, pe not loaded {}, ipv6 disabled {}",
        batch.records.len(),
        s.pe_not_loaded,
        s.ipv6_disabled
    );
    assert_eq!((batch.records.len(), s.pe_not_loaded, s.ipv6_disabled), (1, 1, 1));

    // Message-level: oversize, size mismatch, truncated.
    let mut b = Backup::new(BackupConfig { maxlen: 1024, ..BackupConfig::default() }).unwrap();
    let many: Vec<SyncConn> = (0..40).map(|i| rec(Protocol::Tcp, i, 0, 1, Some(900))).collect();
    let big = msg(Version::V1, 1, &many);
    assert_eq!(b.handle_datagram(Instant::ZERO, &big), Err(DecodeError::BadLength));
    let mut short = msg(Version::V1, 1, &[good]);
    short.pop();
    assert_eq!(b.handle_datagram(Instant::ZERO, &short), Err(DecodeError::BadLength));
    assert_eq!(b.handle_datagram(Instant::ZERO, &[0, 1]), Err(DecodeError::Truncated));
    let s = b.stats();
    println!(
        "oversize {}, bad length {}, truncated {}",
        s.oversize,
        s.message_errors(DecodeError::BadLength),
        s.message_errors(DecodeError::Truncated)
    );
    assert_eq!(
        (s.oversize, s.message_errors(DecodeError::BadLength), s.message_errors(DecodeError::Truncated)),
        (1, 2, 1)
    );
    assert!(Backup::new(BackupConfig { maxlen: 1000, ..BackupConfig::default() }).is_err());
}
