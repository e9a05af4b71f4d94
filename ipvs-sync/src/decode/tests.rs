//! Golden messages and one test per receiver rule of facts §12.5 (plus §12.10's corrections).

use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs_proto::Protocol;

use super::*;
use crate::encode::encode_message;

/// A v1 message, syncid 7: a TCP ESTABLISHED IPv4 record (NFCT set, padded after), then an IPv6 UDP
/// template with SEQ_DATA, PE_DATA "ab" and PE_NAME "sip" (72 + 26 + 4 + 5 = 107 bytes, the last record).
static V1_GOLDEN: [u8; 8 + 36 + 107] = [
    0x00, 0x07, 0x00, 0x97, 0x02, 0x01, 0x00, 0x00, // header: size 151, 2 conns, version 1
    // record 1 (IPv4)
    0x00, 0x06, 0x00, 0x24, // type 0, TCP, ver_size 36
    0x00, 0x01, 0x00, 0x00, // flags NFCT
    0x00, 0x01, 0xc0, 0xd0, 0x00, 0x50, 0x1f, 0x40, // state 1, cport 49360, vport 80, dport 8000
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x84, // fwmark 0, timeout 900
    10, 0, 2, 100, 10, 0, 2, 100, 10, 0, 2, 2, // caddr, vaddr, daddr
    // record 2 (IPv6), at offset 44 (aligned)
    0x01, 0x11, 0x00, 0x6b, // type 1, UDP, ver_size 107
    0x00, 0x00, 0x17, 0x00, // flags TEMPLATE | OUT_SEQ | IN_SEQ | INACTIVE
    0x00, 0x00, 0x13, 0xc4, 0x13, 0xc4, 0x00, 0x00, // state 0, cport 5060, vport 5060, dport 0
    0x00, 0x00, 0x00, 0x4d, 0x00, 0x00, 0x00, 0xb4, // fwmark 77, timeout 180
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // caddr 2001:db8::1
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64, // vaddr 2001:db8::64
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // daddr 2001:db8::2
    0x01, 0x18, // SEQ_DATA, 24
    0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, //
    0x02, 0x02, b'a', b'b', // PE_DATA
    0x03, 0x03, b's', b'i', b'p', // PE_NAME
];

/// A v0 message, syncid 3: one plain TCP record and one with the seq block (little-endian words).
static V0_GOLDEN: [u8; 4 + 24 + 48] = [
    0x02, 0x03, 0x00, 0x4c, // 2 conns, syncid 3, size 76
    0x00, 0x06, 0xc0, 0xd0, 0x00, 0x50, 0x1f, 0x40, 10, 0, 2, 100, 10, 0, 2, 100, 10, 0, 2, 2, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x06, 0xc0, 0xd1, 0x00, 0x15, 0x00, 0x15, 10, 0, 2, 101, 10, 0, 2, 100, 10, 0, 2, 3, 0x06, 0x00, 0x00, 0x01,
    1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
];

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn db8(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

fn v1_golden_conns() -> [SyncConn; 2] {
    [
        SyncConn {
            protocol: Protocol::Tcp,
            caddr: v4([10, 0, 2, 100]),
            cport: 49360,
            vaddr: v4([10, 0, 2, 100]),
            vport: 80,
            daddr: v4([10, 0, 2, 2]),
            dport: 8000,
            flags: 0x1_0000,
            state: 1,
            timeout: Some(900),
            fwmark: Some(0),
            in_seq: None,
            out_seq: None,
            pe_name: None,
            pe_data: None,
        },
        SyncConn {
            protocol: Protocol::Udp,
            caddr: db8(1),
            cport: 5060,
            vaddr: db8(0x64),
            vport: 5060,
            daddr: db8(2),
            dport: 0,
            flags: 0x1700,
            state: 0,
            timeout: Some(180),
            fwmark: Some(77),
            in_seq: Some(SeqAdjust { init_seq: 1, delta: 2, previous_delta: 3 }),
            out_seq: Some(SeqAdjust { init_seq: 4, delta: 5, previous_delta: 6 }),
            pe_name: Some(b"sip".to_vec()),
            pe_data: Some(b"ab".to_vec()),
        },
    ]
}

fn v0_golden_conns() -> [SyncConn; 2] {
    let plain = SyncConn {
        protocol: Protocol::Tcp,
        caddr: v4([10, 0, 2, 100]),
        cport: 49360,
        vaddr: v4([10, 0, 2, 100]),
        vport: 80,
        daddr: v4([10, 0, 2, 2]),
        dport: 8000,
        flags: 0x0100,
        state: 1,
        timeout: None,
        fwmark: None,
        in_seq: None,
        out_seq: None,
        pe_name: None,
        pe_data: None,
    };
    let seq = SyncConn {
        caddr: v4([10, 0, 2, 101]),
        cport: 49361,
        vport: 21,
        daddr: v4([10, 0, 2, 3]),
        dport: 21,
        flags: 0x0600,
        in_seq: Some(SeqAdjust { init_seq: 1, delta: 2, previous_delta: 3 }),
        out_seq: Some(SeqAdjust { init_seq: 4, delta: 5, previous_delta: u32::MAX }),
        ..plain.clone()
    };
    [plain, seq]
}

/// A plain IPv4 TCP record for building malformed messages.
fn plain(cport: u16) -> SyncConn {
    SyncConn { cport, ..v1_golden_conns()[0].clone() }
}

fn msg(version: Version, conns: &[SyncConn]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(version, 7, conns, &mut out).unwrap();
    out
}

/// Rewrites the header's size field to the buffer's length (after a test changed the length).
fn fix_size(m: &mut [u8]) {
    let n = m.len() as u16;
    m[2..4].copy_from_slice(&n.to_be_bytes());
}

fn errors(d: &Decoded) -> Vec<(usize, DecodeError, bool)> {
    d.records.iter().filter_map(|r| r.as_ref().err()).map(|e| (e.index, e.error, e.fatal)).collect()
}

fn oks(d: &Decoded) -> Vec<u16> {
    d.records.iter().filter_map(|r| r.as_ref().ok()).map(|c| c.cport).collect()
}

/// A v1 message with one IPv4 record whose option area is `opts` (ver_size adjusted).
fn v1_with_options(opts: &[u8]) -> Vec<u8> {
    let mut m = msg(Version::V1, &[plain(1)]);
    m.extend_from_slice(opts);
    let rec_len = (36 + opts.len()) as u16;
    m[10..12].copy_from_slice(&rec_len.to_be_bytes());
    fix_size(&mut m);
    m
}

fn only_error(m: &[u8]) -> (DecodeError, bool) {
    let d = decode_message(m).unwrap();
    assert_eq!(d.records.len(), 1, "{:?}", d.records);
    let e = d.records[0].as_ref().unwrap_err();
    (e.error, e.fatal)
}

// --- golden messages: deconstruct / construct / parse / emit --------------------------------------------

#[test]
fn deconstruct() {
    let h = parse_header(&V1_GOLDEN).unwrap();
    assert_eq!(h, Header { version: Version::V1, syncid: 7, n_conns: 2 });
    let h = parse_header(&V0_GOLDEN).unwrap();
    assert_eq!(h, Header { version: Version::V0, syncid: 3, n_conns: 2 });
}

#[test]
fn parse() {
    let d = decode_message(&V1_GOLDEN).unwrap();
    assert_eq!((d.version, d.syncid, d.n_conns), (Version::V1, 7, 2));
    let got: Vec<SyncConn> = d.records.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, v1_golden_conns());
    let d = decode_message(&V0_GOLDEN).unwrap();
    assert_eq!((d.version, d.syncid), (Version::V0, 3));
    assert_eq!(d.into_message().conns, v0_golden_conns());
}

#[test]
fn construct() {
    let mut w = crate::encode::MessageWriter::begin(Version::V1, 7, 1472);
    for c in v1_golden_conns() {
        assert!(w.try_push(&c));
    }
    assert_eq!(w.as_bytes(), &V1_GOLDEN[..]);
}

#[test]
fn emit() {
    assert_eq!(msg(Version::V1, &v1_golden_conns()), V1_GOLDEN);
    let mut out = Vec::new();
    encode_message(Version::V0, 3, &v0_golden_conns(), &mut out).unwrap();
    assert_eq!(out, V0_GOLDEN);
}

// --- message level (§12.5 items 1–3) ---------------------------------------------------------------------

#[test]
fn parse_rejects_datagram_below_4_bytes() {
    for n in 0..4 {
        assert_eq!(decode_message(&V0_GOLDEN[..n]), Err(DecodeError::Truncated), "{n} bytes");
    }
}

#[test]
fn parse_rejects_size_not_datagram_length() {
    let mut m = V1_GOLDEN.to_vec();
    m.push(0);
    assert_eq!(decode_message(&m), Err(DecodeError::BadLength));
    assert_eq!(decode_message(&V1_GOLDEN[..V1_GOLDEN.len() - 1]), Err(DecodeError::BadLength));
}

#[test]
fn filter_rejects_foreign_syncid() {
    assert_eq!(decode_message_filtered(&V1_GOLDEN, 8), Err(DecodeError::WrongSyncId(7)));
    assert!(decode_message_filtered(&V1_GOLDEN, 7).is_ok());
    assert!(decode_message_filtered(&V1_GOLDEN, 0).is_ok(), "backup syncid 0 accepts every message");
    assert!(syncid_accepted(0, 200) && syncid_accepted(5, 5) && !syncid_accepted(5, 6));
}

#[test]
fn version_detection_needs_version_1_reserved_0_spare_0() {
    // v1 header with a non-zero spare byte: read as v0, whose nr_conns (byte 0) is 0.
    let mut m = V1_GOLDEN.to_vec();
    m[7] = 1;
    let d = decode_message(&m).unwrap();
    assert_eq!((d.version, d.n_conns, d.records.len()), (Version::V0, 0, 0));
    // Non-zero reserved byte: v0 with nr_conns = that byte.
    let mut m = V1_GOLDEN.to_vec();
    m[0] = 1;
    assert_eq!(parse_header(&m).unwrap(), Header { version: Version::V0, syncid: 7, n_conns: 1 });
    // Version 2: v0 as well.
    let mut m = V1_GOLDEN.to_vec();
    m[5] = 2;
    assert_eq!(parse_header(&m).unwrap().version, Version::V0);
    // A 4..7-byte datagram has no version byte: v0.
    assert_eq!(parse_header(&[0, 1, 0, 6, 0, 1]).unwrap().version, Version::V0);
    // An empty v1 message is fine.
    assert_eq!(parse_header(&[0, 1, 0, 8, 0, 1, 0, 0]).unwrap().version, Version::V1);
}

// --- v1 records (§12.5 item 4 and the error-code table) --------------------------------------------------

#[test]
fn v1_rejects_record_below_36_bytes() {
    // nr_conns says 2 but only one record follows: the second finds no 36 bytes; the first is kept.
    let mut m = msg(Version::V1, &[plain(1)]);
    m[4] = 2;
    let d = decode_message(&m).unwrap();
    assert_eq!(oks(&d), [1]);
    assert_eq!(errors(&d), [(1, DecodeError::Truncated, true)]);
    // 35 bytes left.
    let mut m = msg(Version::V1, &[plain(1), plain(2)]);
    m.pop();
    fix_size(&mut m);
    assert_eq!(errors(&decode_message(&m).unwrap()), [(1, DecodeError::Truncated, true)]);
}

#[test]
fn v1_rejects_ver_size_past_datagram() {
    let mut m = msg(Version::V1, &[plain(1), plain(2)]);
    m[8 + 36 + 3] = 37;
    let d = decode_message(&m).unwrap();
    assert_eq!(oks(&d), [1]);
    assert_eq!(errors(&d), [(1, DecodeError::RecordPastEnd, true)]);
}

#[test]
fn v1_rejects_record_version_nibble() {
    let mut m = msg(Version::V1, &[plain(1), plain(2)]);
    m[8 + 2] = 0x10; // version 1 in the high nibble of ver_size
    let d = decode_message(&m).unwrap();
    assert_eq!(errors(&d), [(0, DecodeError::UnsupportedVersion(1), true)]);
    assert_eq!(d.records.len(), 1, "the rest of the message is dropped");
}

#[test]
fn v1_rejects_type_other_than_0_or_1() {
    for t in [2u8, 3, 0x80, 0xff] {
        let mut m = msg(Version::V1, &[plain(1), plain(2)]);
        m[8] = t;
        assert_eq!(errors(&decode_message(&m).unwrap()), [(0, DecodeError::BadRecordType(t), true)], "type {t}");
    }
}

#[test]
fn v1_rejects_fixed_part_longer_than_record() {
    let mut m = msg(Version::V1, &[plain(1), plain(2)]);
    m[8 + 3] = 35;
    assert_eq!(errors(&decode_message(&m).unwrap()), [(0, DecodeError::RecordTooShort, true)]);
    // ver_size 0.
    m[8 + 3] = 0;
    assert_eq!(errors(&decode_message(&m).unwrap()), [(0, DecodeError::RecordTooShort, true)]);
    // IPv6 type with a 36-byte record (IPv6 needs 72).
    let mut m = msg(Version::V1, &[plain(1)]);
    m[8] = 1;
    assert_eq!(only_error(&m), (DecodeError::RecordTooShort, true));
}

#[test]
fn v1_rejects_option_header_truncated() {
    assert_eq!(only_error(&v1_with_options(&[0x41])), (DecodeError::OptionTruncated, true));
}

#[test]
fn v1_rejects_option_length_zero_or_past_record() {
    assert_eq!(only_error(&v1_with_options(&[0x41, 0])), (DecodeError::BadOptionLength, true));
    assert_eq!(only_error(&v1_with_options(&[0x02, 3, b'a', b'b'])), (DecodeError::BadOptionLength, true));
    // Past the record even though the datagram has the bytes (the next record's).
    let mut m = msg(Version::V1, &[plain(1), plain(2)]);
    m[8 + 3] = 38;
    m.splice(8 + 36..8 + 36, [0x02, 9, 0, 0]);
    fix_size(&mut m);
    assert_eq!(errors(&decode_message(&m).unwrap()), [(0, DecodeError::BadOptionLength, true)]);
}

#[test]
fn v1_rejects_seq_data_bad_length_or_repeated() {
    let mut opt = vec![0x01, 23];
    opt.extend_from_slice(&[0; 23]);
    assert_eq!(only_error(&v1_with_options(&opt)), (DecodeError::BadSeqData, true));
    let mut opt = vec![0x01, 24];
    opt.extend_from_slice(&[0; 24]);
    opt.extend_from_slice(&[0x41, 24]); // the same option again, with the optional bit
    opt.extend_from_slice(&[0; 24]);
    assert_eq!(only_error(&v1_with_options(&opt)), (DecodeError::BadSeqData, true));
}

#[test]
fn v1_rejects_pe_data_repeated() {
    // A PE_DATA longer than 255 cannot be written (1-byte length); repeating it is the reachable case.
    let opt = [0x02, 1, b'x', 0x02, 1, b'y', 0x03, 3, b's', b'i', b'p'];
    assert_eq!(only_error(&v1_with_options(&opt)), (DecodeError::BadPeData, true));
}

#[test]
fn v1_rejects_pe_name_longer_than_16_or_repeated() {
    let mut opt = vec![0x02, 1, b'x', 0x03, 17];
    opt.extend_from_slice(&[b'n'; 17]);
    assert_eq!(only_error(&v1_with_options(&opt)), (DecodeError::BadPeName, true));
    let opt = [0x03, 1, b'a', 0x03, 1, b'b'];
    assert_eq!(only_error(&v1_with_options(&opt)), (DecodeError::BadPeName, true));
    // 16 bytes is fine.
    let mut opt = vec![0x02, 1, b'x', 0x03, 16];
    opt.extend_from_slice(&[b'n'; 16]);
    let d = decode_message(&v1_with_options(&opt)).unwrap();
    assert_eq!(d.records[0].as_ref().unwrap().pe_name.as_deref(), Some(&[b'n'; 16][..]));
}

#[test]
fn v1_skips_record_with_unknown_mandatory_option() {
    let mut m = v1_with_options(&[0x09, 1, 0]);
    // Append a good record after it (the first is 39 bytes: one padding byte).
    m[4] = 2;
    m.push(0);
    m.extend_from_slice(&msg(Version::V1, &[plain(2)])[8..]);
    fix_size(&mut m);
    let d = decode_message(&m).unwrap();
    assert_eq!(errors(&d), [(0, DecodeError::UnknownOption(9), false)]);
    assert_eq!(oks(&d), [2], "the next record is still read");
    // 0x80 is not the optional bit: 0x81 is an unknown mandatory type.
    assert_eq!(only_error(&v1_with_options(&[0x81, 1, 0])), (DecodeError::UnknownOption(0x81), false));
}

#[test]
fn v1_ignores_unknown_optional_option_and_honours_flagged_known_ones() {
    let d = decode_message(&v1_with_options(&[0x49, 2, 0xaa, 0xbb])).unwrap();
    assert_eq!(d.records[0].as_ref().unwrap(), &plain(1));
    // 0x41 is SEQ_DATA marked optional: still parsed as SEQ_DATA.
    let mut opt = vec![0x41, 24];
    opt.extend_from_slice(&[0, 0, 0, 9]);
    opt.extend_from_slice(&[0; 20]);
    let d = decode_message(&v1_with_options(&opt)).unwrap();
    assert_eq!(d.records[0].as_ref().unwrap().in_seq.map(|s| s.init_seq), Some(9));
}

#[test]
fn v1_skips_record_with_unknown_protocol_unless_template() {
    let mut m = msg(Version::V1, &[plain(1), plain(2)]);
    m[8 + 1] = 99;
    let d = decode_message(&m).unwrap();
    assert_eq!(errors(&d), [(0, DecodeError::UnknownProtocol(99), false)]);
    assert_eq!(oks(&d), [2]);
    // fwmark templates have protocol 0: accepted.
    let t = SyncConn { protocol: Protocol::from(0), flags: flags::TEMPLATE | flags::INACTIVE, ..plain(1) };
    assert!(decode_message(&msg(Version::V1, &[t])).unwrap().records[0].is_ok());
}

#[test]
fn v1_skips_record_with_state_out_of_range_unless_template() {
    for (proto, n) in
        [(Protocol::Tcp, 11u16), (Protocol::Udp, 1), (Protocol::Sctp, 14), (Protocol::Esp, 1), (Protocol::Ah, 1)]
    {
        let last_ok = SyncConn { protocol: proto, state: n - 1, ..plain(1) };
        let bad = SyncConn { protocol: proto, state: n, ..plain(2) };
        let d = decode_message(&msg(Version::V1, &[last_ok, bad])).unwrap();
        assert_eq!(oks(&d), [1], "{proto:?}");
        assert_eq!(errors(&d), [(1, DecodeError::BadState(n), false)], "{proto:?}");
    }
    let t = SyncConn { state: 500, flags: flags::TEMPLATE, ..plain(1) };
    assert!(decode_message(&msg(Version::V1, &[t])).unwrap().records[0].is_ok());
}

#[test]
fn v1_skips_record_with_pe_data_without_pe_name() {
    assert_eq!(only_error(&v1_with_options(&[0x02, 1, b'x'])), (DecodeError::PeDataWithoutName, false));
    // The opposite (a PE name without data) is accepted; the kernel ignores the name.
    let d = decode_message(&v1_with_options(&[0x03, 3, b's', b'i', b'p'])).unwrap();
    assert_eq!(d.records[0].as_ref().unwrap().pe_name.as_deref(), Some(&b"sip"[..]));
}

#[test]
fn v1_advances_by_aligned_length_and_needs_no_trailing_padding() {
    let c = SyncConn { pe_data: Some(vec![1]), pe_name: Some(vec![2]), ..plain(1) };
    // 36 + 3 + 3 = 42-byte records: 2 padding bytes between them, none at the end.
    let m = msg(Version::V1, &[c.clone(), c.clone(), c]);
    assert_eq!(m.len(), 8 + 44 + 44 + 42);
    let d = decode_message(&m).unwrap();
    assert_eq!(oks(&d), [1, 1, 1]);
    // Non-zero padding bytes are not looked at.
    let mut m = m;
    m[8 + 42] = 0xee;
    assert_eq!(oks(&decode_message(&m).unwrap()), [1, 1, 1]);
}

#[test]
fn v1_accepts_nfct_and_mixed_families() {
    let d = decode_message(&V1_GOLDEN).unwrap();
    let [a, b] = [&d.records[0], &d.records[1]].map(|r| r.as_ref().unwrap().clone());
    assert_eq!(a.flags & flags::NFCT, flags::NFCT);
    assert!(a.caddr.is_ipv4() && b.caddr.is_ipv6());
}

#[test]
fn v1_seq_words_are_big_endian() {
    let c = &decode_message(&V1_GOLDEN).unwrap().records[1].clone().unwrap();
    assert_eq!(c.in_seq, Some(SeqAdjust { init_seq: 1, delta: 2, previous_delta: 3 }));
}

#[test]
fn extra_bytes_after_nr_conns_records_are_ignored() {
    let mut m = msg(Version::V1, &[plain(1), plain(2)]);
    m[4] = 1;
    assert_eq!(oks(&decode_message(&m).unwrap()), [1]);
}

// --- v0 records (§12.5 item 5) ---------------------------------------------------------------------------

#[test]
fn v0_rejects_record_below_24_bytes() {
    let mut m = V0_GOLDEN[..4 + 24 + 23].to_vec();
    fix_size(&mut m);
    let d = decode_message(&m).unwrap();
    assert_eq!(oks(&d), [49360]);
    assert_eq!(errors(&d), [(1, DecodeError::Truncated, true)]);
}

#[test]
fn v0_rejects_seq_block_past_end() {
    let mut m = V0_GOLDEN[..4 + 24 + 47].to_vec();
    fix_size(&mut m);
    assert_eq!(errors(&decode_message(&m).unwrap()), [(1, DecodeError::Truncated, true)]);
}

#[test]
fn v0_skips_unknown_protocol_and_bad_state() {
    let mut m = V0_GOLDEN.to_vec();
    m[4 + 1] = 99;
    let d = decode_message(&m).unwrap();
    assert_eq!(errors(&d), [(0, DecodeError::UnknownProtocol(99), false)]);
    assert_eq!(oks(&d), [49361]);
    let mut m = V0_GOLDEN.to_vec();
    m[4 + 23] = 11;
    let d = decode_message(&m).unwrap();
    assert_eq!(errors(&d), [(0, DecodeError::BadState(11), false)]);
    assert_eq!(oks(&d), [49361]);
    // The same on a template (flags 0x1000): accepted.
    m[4 + 20] = 0x10;
    assert_eq!(oks(&decode_message(&m).unwrap()), [49360, 49361]);
}

#[test]
fn v0_seq_words_are_little_endian() {
    let c = decode_message(&V0_GOLDEN).unwrap().records[1].clone().unwrap();
    assert_eq!(c.out_seq, Some(SeqAdjust { init_seq: 4, delta: 5, previous_delta: u32::MAX }));
    assert_eq!((c.timeout, c.fwmark), (None, None));
}

#[test]
fn decode_error_effects_are_as_the_table_says() {
    for e in DecodeError::ALL {
        let skip = matches!(e.kernel_code(), Some(c) if c > 0);
        assert_eq!(e.skips_record(), skip, "{e:?}");
        assert_eq!(e.is_fatal(), !skip, "{e:?}");
        assert!(!e.name().is_empty());
    }
}

#[test]
fn every_prefix_and_byte_flip_decodes_without_panic() {
    let mut n = 0;
    for golden in [&V1_GOLDEN[..], &V0_GOLDEN[..]] {
        for len in 0..=golden.len() {
            let mut m = golden[..len].to_vec();
            if len >= 4 {
                fix_size(&mut m);
            }
            let _ = decode_message(&m);
            n += 1;
        }
        for i in 0..golden.len() {
            for bit in 0..8 {
                let mut m = golden.to_vec();
                m[i] ^= 1 << bit;
                let _ = decode_message(&m);
                n += 1;
            }
        }
    }
    std::println!("decoded {n} mutated messages");
}
