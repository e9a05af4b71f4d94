//! Sync codec: records encoded and decoded per second (ipvs-sync, facts §12).
//!
//! `cargo bench -p ipvs-benches --bench sync`
//!
//! Workloads: full messages as the master sends them at the default `sync_maxlen` (1472): 40 plain v1
//! IPv4 records, 18 v1 IPv6 records, v1 IPv4 records with SEQ_DATA + PE_DATA (16 B) + PE_NAME ("sip"),
//! and 61 plain v0 records. Each measured iteration encodes or decodes one whole message; throughput is
//! counted in records.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipvs_proto::Protocol;
use ipvs_sync::decode::{parse_header, Records};
use ipvs_sync::{decode_message, MessageWriter, SeqAdjust, SyncConn, Version};

/// Deterministic records: client i of a /16, one VIP, 4 real servers.
fn conn(i: u32, inet6: bool, options: bool, version: Version) -> SyncConn {
    let (caddr, vaddr, daddr) = if inet6 {
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x64)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, (i % 4) as u16 + 1)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::from(0x0a09_0000 | (i & 0xffff))),
            IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)),
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, (i % 4) as u8 + 1)),
        )
    };
    let v1 = version == Version::V1;
    let seq = SeqAdjust { init_seq: i.wrapping_mul(2_654_435_761), delta: 12, previous_delta: 0 };
    SyncConn {
        protocol: Protocol::Tcp,
        caddr,
        cport: 40000 + (i % 20000) as u16,
        vaddr,
        vport: 80,
        daddr,
        dport: 8080,
        flags: if options { 0x0700 } else { 0x0100 * (i & 1) },
        state: 1 + (i % 10) as u16,
        timeout: v1.then_some(900),
        fwmark: v1.then_some(0),
        in_seq: options.then_some(seq),
        out_seq: options.then_some(seq),
        pe_name: (options && v1).then(|| b"sip".to_vec()),
        pe_data: (options && v1).then(|| b"a84b4c76e66710@x".to_vec()),
    }
}

/// The records of one full message at maxlen 1472, and the message.
fn full_message(inet6: bool, options: bool, version: Version) -> (Vec<SyncConn>, Vec<u8>) {
    let mut w = MessageWriter::begin(version, 7, 1472);
    let mut conns = Vec::new();
    for i in 0.. {
        let c = conn(i, inet6, options, version);
        if !w.try_push(&c) {
            break;
        }
        conns.push(c);
    }
    (conns, w.finish())
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("v1 IPv4 plain", false, false, Version::V1),
        ("v1 IPv6 plain", true, false, Version::V1),
        ("v1 IPv4 seq+pe", false, true, Version::V1),
        ("v0 IPv4 plain", false, false, Version::V0),
    ];
    for (name, inet6, options, version) in cases {
        let (conns, bytes) = full_message(inet6, options, version);
        let mut g = c.benchmark_group(format!("sync/{name} ({} records, {} B)", conns.len(), bytes.len()));
        g.throughput(Throughput::Elements(conns.len() as u64));

        let mut buf = Vec::with_capacity(1500);
        g.bench_function("encode: MessageWriter::try_push (reused buffer)", |b| {
            b.iter(|| {
                let mut w = MessageWriter::begin_in(std::mem::take(&mut buf), version, 7, 1472);
                for c in black_box(&conns) {
                    if !w.try_push(c) {
                        unreachable!("the records fit one message");
                    }
                }
                buf = w.finish();
                black_box(buf.len())
            })
        });
        let mut out = Vec::with_capacity(1500);
        g.bench_function("encode: encode_message (reused buffer)", |b| {
            b.iter(|| {
                out.clear();
                ipvs_sync::encode_message(version, 7, black_box(&conns), &mut out).expect("valid");
                black_box(out.len())
            })
        });
        g.bench_function("decode: Records iterator", |b| {
            b.iter(|| {
                let bytes = black_box(&bytes[..]);
                let h = parse_header(bytes).expect("valid");
                let mut n = 0u32;
                for r in Records::new(bytes, h) {
                    let c = r.expect("valid");
                    n = n.wrapping_add(u32::from(c.cport));
                }
                black_box(n)
            })
        });
        g.bench_function("decode: decode_message (collects a Vec)", |b| {
            b.iter(|| black_box(decode_message(black_box(&bytes)).expect("valid").records.len()))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
