//! Wire layer: parse + NAT rewrite of a TCP/IPv4 packet, against etherparse parsing the same bytes.
//!
//! `cargo bench -p ipvs-benches --bench wire`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipvs_proto::nat;
use ipvs_proto::wire::{ip, TcpPacket};

/// A 60-byte TCP/IPv4 ACK with 20 bytes of payload, valid checksums.
fn packet() -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 9, 0, 1], [10, 0, 2, 100], 64)
        .tcp(40000, 80, 1, 64240)
        .ack(1)
        .write(&mut out, &[0x55; 20])
        .expect("valid packet");
    out
}

/// Registers the wire benchmarks.
fn bench(c: &mut Criterion) {
    let pkt = packet();
    let rs = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
    let mut g = c.benchmark_group("wire/tcp4");
    g.throughput(Throughput::Elements(1));

    g.bench_function("ours: parse (ip + tcp, checksums of IPv4 header)", |b| {
        b.iter(|| {
            let hdr = ip::parse(black_box(&pkt)).expect("valid");
            let seg = TcpPacket::new_checked(hdr.l4(&pkt)).expect("valid");
            black_box((hdr.dst_addr, seg.dst_port(), seg.flags()))
        })
    });
    g.bench_function("ours: parse + NAT rewrite (incremental checksums)", |b| {
        let mut buf = pkt.clone();
        let mut flip = false;
        b.iter(|| {
            // Alternate between the two destinations so every iteration really rewrites.
            let hdr = ip::parse(black_box(&buf)).expect("valid");
            let (addr, port) = if flip { (IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)), 80) } else { (rs, 8080) };
            flip = !flip;
            nat::rewrite_destination(&mut buf, &hdr, addr, port).expect("rewritable");
            black_box(&buf);
        })
    });
    g.bench_function("etherparse: SlicedPacket::from_ip (no checksum checks)", |b| {
        b.iter(|| {
            let sliced = etherparse::SlicedPacket::from_ip(black_box(&pkt)).expect("valid");
            match sliced.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => black_box((t.destination_port(), t.ack())),
                _ => unreachable!("a TCP packet"),
            };
        })
    });
    g.bench_function("etherparse: parse + full checksum recompute after rewrite", |b| {
        // What a director without incremental updates does: rewrite, then recompute both checksums.
        let mut buf = pkt.clone();
        b.iter(|| {
            let (mut iph, rest) = etherparse::Ipv4Header::from_slice(black_box(&buf)).expect("valid");
            let (mut tcph, payload) = etherparse::TcpHeader::from_slice(rest).expect("valid");
            iph.destination = [10, 1, 0, 1];
            tcph.destination_port = 8080;
            tcph.checksum = tcph.calc_checksum_ipv4(&iph, payload).expect("fits");
            iph.header_checksum = iph.calc_header_checksum();
            let mut w = &mut buf[..];
            iph.write(&mut w).expect("fits");
            tcph.write(&mut w).expect("fits");
            black_box(&buf);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
