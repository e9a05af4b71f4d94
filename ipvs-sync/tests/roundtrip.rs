//! Property tests: every record the kernel would accept survives encode → decode in v0 and v1, IPv4 and
//! IPv6, with and without each option; the incremental writer respects its limits; the JSON lines of
//! `sync-decode` parse back (with our parser and with serde_json) to the same values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use ipvs_sync::ipvs_proto::Protocol;
use ipvs_sync::record::{flags, limits};
use ipvs_sync::tools::json;
use ipvs_sync::{decode_message, encode_message, encoded_len, MessageWriter, SeqAdjust, SyncConn, Version};

const CASES: u32 = 256;

mod strategies {
    use super::*;

    pub(crate) fn seq() -> impl Strategy<Value = SeqAdjust> {
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(init_seq, delta, previous_delta)| SeqAdjust {
            init_seq,
            delta,
            previous_delta,
        })
    }

    /// (protocol, state, template): what the receiver's protocol/state checks accept.
    pub(crate) fn proto_state() -> impl Strategy<Value = (Protocol, u16, bool)> {
        prop_oneof![
            (0u16..11).prop_map(|s| (Protocol::Tcp, s, false)),
            Just((Protocol::Udp, 0, false)),
            (0u16..14).prop_map(|s| (Protocol::Sctp, s, false)),
            prop_oneof![Just(Protocol::Ah), Just(Protocol::Esp)].prop_map(|p| (p, 0, false)),
            (any::<u8>(), any::<u16>()).prop_map(|(p, s)| (Protocol::from(p), s, true)),
        ]
    }

    fn addrs(inet6: bool) -> BoxedStrategy<(IpAddr, IpAddr, IpAddr)> {
        if inet6 {
            let a = any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)));
            (a.clone(), a.clone(), a).boxed()
        } else {
            let a = any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)));
            (a.clone(), a.clone(), a).boxed()
        }
    }

    /// A record the kernel accepts in `version`; `inet6` only for v1.
    pub(crate) fn conn(version: Version, inet6: bool) -> impl Strategy<Value = SyncConn> {
        let v1 = version == Version::V1;
        (
            proto_state(),
            addrs(inet6),
            any::<(u16, u16, u16)>(),
            any::<u32>(),
            (any::<u32>(), any::<u32>()),
            (proptest::option::of(seq()), seq()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=limits::PE_NAME_MAX)),
            proptest::option::weighted(0.5, proptest::collection::vec(any::<u8>(), 1..=limits::PE_DATA_MAX)),
        )
            .prop_map(
                move |(
                    (protocol, state, template),
                    (caddr, vaddr, daddr),
                    (cport, vport, dport),
                    fl,
                    (timeout, fwmark),
                    (in_seq, out_seq),
                    pe_name,
                    pe_data,
                )| {
                    let mut fl = fl & !flags::TEMPLATE;
                    if template {
                        fl |= flags::TEMPLATE;
                    }
                    if !v1 {
                        fl &= 0xFFFF;
                    }
                    // v0 carries the seq block iff the flags say so; v1 carries the option iff present.
                    let in_seq =
                        if v1 { in_seq } else { (fl & flags::SEQ_MASK != 0).then_some(in_seq.unwrap_or_default()) };
                    let out_seq = in_seq.map(|_| out_seq);
                    let pe_data = pe_data.filter(|_| v1 && pe_name.is_some());
                    SyncConn {
                        protocol,
                        caddr,
                        cport,
                        vaddr,
                        vport,
                        daddr,
                        dport,
                        flags: fl,
                        state,
                        timeout: v1.then_some(timeout),
                        fwmark: v1.then_some(fwmark),
                        in_seq,
                        out_seq,
                        pe_name: if v1 { pe_name } else { None },
                        pe_data,
                    }
                },
            )
    }

    pub(crate) fn v1_mixed() -> impl Strategy<Value = SyncConn> {
        prop_oneof![conn(Version::V1, false), conn(Version::V1, true)]
    }
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// Runs `test` on `CASES` values of `strategy` (deterministic seed) and prints how many cases and records
/// it checked. `test` returns the number of records it checked.
fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<usize, TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let records = AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        config(),
        proptest::test_runner::TestRng::deterministic_rng(config().rng_algorithm),
    );
    let result = runner.run(&strategy, |v| {
        records.fetch_add(test(v)?, Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    println!("{name}: {CASES} cases, {} records", records.load(Ordering::Relaxed));
}

fn round_trip(version: Version, syncid: u8, conns: &[SyncConn]) -> Result<usize, TestCaseError> {
    let mut bytes = Vec::new();
    encode_message(version, syncid, conns, &mut bytes).unwrap();
    let d = decode_message(&bytes).unwrap();
    prop_assert_eq!((d.version, d.syncid, usize::from(d.n_conns)), (version, syncid, conns.len()));
    let got: Vec<SyncConn> = d.records.into_iter().map(|r| r.unwrap()).collect();
    prop_assert_eq!(&got, conns);
    let mut again = Vec::new();
    encode_message(version, syncid, &got, &mut again).unwrap();
    prop_assert_eq!(again, bytes);
    Ok(conns.len())
}

fn conns(s: impl Strategy<Value = SyncConn>) -> impl Strategy<Value = (u8, Vec<SyncConn>)> {
    (any::<u8>(), proptest::collection::vec(s, 0..40))
}

#[test]
fn v0_ipv4_round_trips() {
    check("v0 IPv4", conns(strategies::conn(Version::V0, false)), |(id, c)| round_trip(Version::V0, id, &c));
}

#[test]
fn v1_ipv4_round_trips() {
    check("v1 IPv4", conns(strategies::conn(Version::V1, false)), |(id, c)| round_trip(Version::V1, id, &c));
}

#[test]
fn v1_ipv6_round_trips() {
    check("v1 IPv6", conns(strategies::conn(Version::V1, true)), |(id, c)| round_trip(Version::V1, id, &c));
}

#[test]
fn v1_mixed_families_round_trip() {
    check("v1 mixed", conns(strategies::v1_mixed()), |(id, c)| round_trip(Version::V1, id, &c));
}

#[test]
fn writer_packs_within_limits() {
    let maxlen = prop_oneof![Just(1472usize), Just(1452), 1usize..600, Just(65535)];
    check("writer", (maxlen, proptest::collection::vec(strategies::v1_mixed(), 0..100)), |(maxlen, conns)| {
        let mut messages = Vec::new();
        let mut w = MessageWriter::begin(Version::V1, 1, maxlen);
        for c in &conns {
            if !w.try_push(c) {
                prop_assert!(!w.is_empty(), "an empty writer takes any valid record");
                messages.push(std::mem::replace(&mut w, MessageWriter::begin(Version::V1, 1, maxlen)).finish());
                prop_assert!(w.try_push(c));
            }
        }
        if !w.is_empty() {
            messages.push(w.finish());
        }
        let mut back = Vec::new();
        for m in &messages {
            let d = decode_message(m).unwrap();
            prop_assert!(d.records.len() <= 255);
            prop_assert!(
                m.len() <= maxlen || d.records.len() == 1,
                "{} > {} with {} records",
                m.len(),
                maxlen,
                d.records.len()
            );
            back.extend(d.records.into_iter().map(|r| r.unwrap()));
        }
        prop_assert_eq!(&back, &conns);
        Ok(conns.len())
    });
}

#[test]
fn json_lines_round_trip() {
    let line = prop_oneof![
        strategies::conn(Version::V0, false).prop_map(|c| (Version::V0, c)),
        strategies::v1_mixed().prop_map(|c| (Version::V1, c)),
    ];
    check("json", (line, any::<u8>(), 1usize..1_000_000), |((version, conn), syncid, frame)| {
        let line = json::record_line(frame, version, syncid, &conn);
        let back = json::parse_record_line(&line).unwrap().unwrap();
        prop_assert_eq!((back.frame, back.version, back.syncid), (frame, version, syncid));
        prop_assert_eq!(&back.conn, &conn);
        let j: serde_json::Value = serde_json::from_str(&line).unwrap();
        prop_assert_eq!(j["flags"].as_u64(), Some(u64::from(conn.flags)));
        prop_assert_eq!(j["caddr"].as_str().unwrap().parse::<IpAddr>().unwrap(), conn.caddr);
        prop_assert_eq!(j["pe_data"].as_str().map(str::to_owned), conn.pe_data.as_deref().map(json::hex));
        prop_assert_eq!(j["timeout"].as_u64(), conn.timeout.map(u64::from));
        Ok(1)
    });
}

#[test]
fn arbitrary_bytes_never_panic() {
    check("arbitrary bytes", (proptest::collection::vec(any::<u8>(), 0..600), any::<bool>()), |(mut bytes, fix)| {
        if fix && bytes.len() >= 4 {
            let n = bytes.len() as u16;
            bytes[2..4].copy_from_slice(&n.to_be_bytes());
        }
        let mut n = 0;
        if let Ok(d) = decode_message(&bytes) {
            prop_assert!(d.records.len() <= usize::from(d.n_conns));
            for (i, r) in d.records.iter().enumerate() {
                if let Err(e) = r {
                    prop_assert_eq!(e.index, i);
                    prop_assert_eq!(e.fatal, e.error.is_fatal());
                    prop_assert!(!e.fatal || i + 1 == d.records.len(), "nothing after a fatal error");
                }
            }
            n = d.records.len();
        }
        Ok(n)
    });
}

/// Every combination of the three options, in both families (v1), and with/without the seq block (v0).
#[test]
fn every_option_combination_round_trips() {
    let base = SyncConn {
        protocol: Protocol::Tcp,
        caddr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        cport: 40000,
        vaddr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
        vport: 21,
        daddr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        dport: 21,
        flags: flags::INACTIVE,
        state: 1,
        timeout: Some(900),
        fwmark: Some(7),
        in_seq: None,
        out_seq: None,
        pe_name: None,
        pe_data: None,
    };
    let seq = SeqAdjust { init_seq: 0x0102_0304, delta: 5, previous_delta: 0xffff_fff0 };
    let mut n = 0;
    for inet6 in [false, true] {
        for mask in 0..8u8 {
            let mut c = base.clone();
            if inet6 {
                c.caddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
                c.vaddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64));
                c.daddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));
            }
            if mask & 1 != 0 {
                c.flags |= flags::SEQ_MASK;
                c.in_seq = Some(seq);
                c.out_seq = Some(SeqAdjust { delta: 9, ..seq });
            }
            if mask & 2 != 0 {
                c.pe_name = Some(b"sip".to_vec());
            }
            if mask & 4 != 0 {
                // PE data needs a name (else the kernel skips the record).
                c.pe_name.get_or_insert_with(|| b"x".to_vec());
                c.pe_data = Some(vec![0xab; 255]);
            }
            let mut bytes = Vec::new();
            encode_message(Version::V1, 3, &[c.clone(), c.clone()], &mut bytes).unwrap();
            let len = encoded_len(&c, Version::V1);
            assert_eq!(bytes.len(), 8 + len.next_multiple_of(4) + len, "inet6 {inet6} mask {mask}");
            let d = decode_message(&bytes).unwrap().into_message();
            assert_eq!(d.conns, [c.clone(), c.clone()], "inet6 {inet6} mask {mask}");
            n += 2;
        }
    }
    for seq_flags in [0, flags::IN_SEQ, flags::OUT_SEQ, flags::SEQ_MASK] {
        let c = SyncConn {
            flags: flags::INACTIVE | seq_flags,
            timeout: None,
            fwmark: None,
            in_seq: (seq_flags != 0).then_some(seq),
            out_seq: (seq_flags != 0).then_some(seq),
            ..base.clone()
        };
        let mut bytes = Vec::new();
        encode_message(Version::V0, 3, std::slice::from_ref(&c), &mut bytes).unwrap();
        assert_eq!(bytes.len(), 4 + if seq_flags != 0 { 48 } else { 24 });
        assert_eq!(decode_message(&bytes).unwrap().into_message().conns, [c]);
        n += 1;
    }
    println!("option combinations: {n} records round-tripped");
}
