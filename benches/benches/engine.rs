//! The engine's packet path (issue 6), with a floor measured in the same run.
//!
//! `cargo bench -p ipvs-benches --bench engine -- --warm-up-time 1 --measurement-time 3`
//!
//! Groups:
//!
//! * `engine_established_1m` — an established NAT TCP/IPv4 client packet (ACK with 64 bytes of payload, 104
//!   bytes) through [`Engine::handle_packet`] and through [`Engine::handle_burst`] (32 per call, time per
//!   packet), with 2^20 established conns in the table, flows in random order (a fixed permutation of all 2^20,
//!   so the working set is the whole table). Every iteration first copies the flow's pristine packet into the
//!   buffer (the NAT rewrite changed the last one); `copy only` measures that copy alone. The same-run floor is
//!   what any load balancer of this design pays at least: parse (IPv4 header checksum verified, TCP header) +
//!   one `hashbrown::HashMap` lookup (2^20 flows, unkeyed foldhash and keyed SipHash-1-3) +
//!   `nat::rewrite_destination`, on the same packets and copies. `one flow` repeats one packet (its conn stays
//!   in cache), as Katran's `perf_testing` does.
//! * `engine_new_conns` — a TCP SYN from a fresh client (never seen before) through `handle_packet`: service
//!   lookup, scheduling (wlc or rr over 10 NAT real servers, and wlc over 1,000), conn insert, state
//!   transition, counters, NAT rewrite. The table stays at about 10^6 conns: SYNs come in chunks of 16,384 per virtual second, SYN_RECV
//!   conns time out after 60 s, and between chunks (outside the timed part) the clock advances one second and
//!   `handle_timeout` expires the conns of 60 s ago. The table is filled to that level before measuring.
//!
//! The engines are built once per group (the 2^20 conns by sending each client's SYN and then its ACK through
//! `handle_burst`: the engine's own path). Events are off (`event_capacity = 0`), every other setting is the
//! kernel's default; capacity 2^21.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hash::{BuildHasher, Hash, Hasher};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipvs_core::proto::{Duration, FwdMethod, Instant, Protocol, ServiceKey};
use ipvs_core::{DestConfig, Direction, Engine, EngineConfig, PacketBuf, ServiceConfig, Verdict};
use ipvs_proto::nat;
use ipvs_proto::wire::{ip, TcpPacket};
use siphasher::sip::SipHasher13;

/// Established conns in the table.
const N: usize = 1 << 20;
/// Conn table capacity.
const CAPACITY: usize = 1 << 21;
/// Packets per `handle_burst` call.
const BURST: usize = 32;
/// Room in front of each packet.
const HEADROOM: usize = 64;
/// Bytes of each packet buffer (headroom + packet, rounded up).
const SLOT: usize = 192;
/// TCP payload of the established packets.
const PAYLOAD: usize = 64;
/// IPv4 + TCP + payload.
const DATA_LEN: usize = 20 + 20 + PAYLOAD;
/// A SYN without options.
const SYN_LEN: usize = 40;
/// The table's hash key.
const HASH_KEY: [u8; 16] = *b"bench-engine-key";
/// The virtual service.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const VPORT: u16 = 80;
/// Real servers 10.1.0.1..=10.1.0.10 (10.1.x.y for larger lists), port 8080, NAT.
const N_DESTS: u16 = 10;
/// The large real-server list of the new-conn bench (a pick must not cost O(real servers)).
const MANY_DESTS: u16 = 1000;
const RPORT: u16 = 8080;
/// SYNs per virtual second in the new-conn benches.
const CHUNK: usize = 16_384;
/// Virtual seconds of SYNs in the table (the SYN_RECV timeout is 60 s).
const WINDOW: u64 = 61;

// ---- workload ---------------------------------------------------------------------------------------------

/// SplitMix64: the seeded generator of ports and of the flow order.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Client `n`: an address of 100.64.0.0/10 (distinct for any 2^22 consecutive clients, so for every conn in
/// the table at once) and a pseudo-random port in 1024..=65535.
fn client(n: u64) -> (Ipv4Addr, u16) {
    let addr = Ipv4Addr::from_bits(0x6440_0000 | (n as u32 & 0x003F_FFFF));
    let port = 1024 + SplitMix64(n).below(64_512) as u16;
    (addr, port)
}

/// A TCP/IPv4 packet from `src` to the VIP with valid checksums: a SYN, or an ACK with `payload`.
fn tcp4(src: (Ipv4Addr, u16), syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4(src.0.octets(), VIP.octets(), 64);
    let b = if syn { b.tcp(src.1, VPORT, 1000, 64240).syn() } else { b.tcp(src.1, VPORT, 1001, 64240).ack(1) };
    let mut out = Vec::with_capacity(DATA_LEN);
    b.write(&mut out, payload).expect("valid packet");
    out
}

fn service_key() -> ServiceKey {
    ServiceKey::Addr { protocol: Protocol::Tcp, addr: SocketAddr::new(IpAddr::V4(VIP), VPORT) }
}

/// An engine with one TCP service (`scheduler`) and `n_dests` NAT real servers of weight 1; events off.
fn engine(scheduler: &str, n_dests: u16) -> Engine {
    let mut cfg = EngineConfig::new(CAPACITY, HASH_KEY);
    cfg.event_capacity = 0;
    let engine = Engine::new(cfg).expect("valid engine config");
    let key = service_key();
    let mut svc = ServiceConfig::new(key);
    svc.scheduler = scheduler.to_owned();
    engine.add_service(Instant::ZERO, svc).expect("service added");
    for d in 1..=n_dests {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, (d >> 8) as u8, d as u8)), RPORT);
        engine.add_dest(Instant::ZERO, &key, DestConfig::new(addr, FwdMethod::Masq)).expect("dest added");
    }
    engine
}

fn is_nat_forward(v: &Verdict) -> bool {
    matches!(v, Verdict::Forward { method: FwdMethod::Masq, .. })
}

/// Sends `pkts` through `handle_burst`, 32 at a time; returns how many were forwarded with NAT.
fn feed_bursts(engine: &Engine, now: Instant, pkts: &[Vec<u8>]) -> usize {
    let mut forwarded = 0;
    let mut storage = vec![0u8; BURST * SLOT];
    for group in pkts.chunks(BURST) {
        let mut bufs: Vec<PacketBuf<'_>> = storage
            .chunks_exact_mut(SLOT)
            .zip(group)
            .map(|(slot, p)| {
                slot[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
                PacketBuf::new(slot, HEADROOM, p.len()).expect("fits")
            })
            .collect();
        let mut verdicts = [Verdict::Pass; BURST];
        engine.handle_burst(now, &mut bufs, Direction::FromClient, &mut verdicts);
        forwarded += verdicts[..group.len()].iter().filter(|v| is_nat_forward(v)).count();
    }
    forwarded
}

// ---- the floor: parse + hashbrown lookup + NAT rewrite ----------------------------------------------------

/// The floor's flow key: `lo` is the client side (address, port, protocol), hashed with one `write_u64` as
/// `ipvs-conn` hashes it; `hi` the virtual side (compared, not hashed).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct FlowKey {
    lo: u64,
    hi: u64,
}

impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo);
    }
}

impl FlowKey {
    #[inline]
    fn new(caddr: Ipv4Addr, cport: u16, vaddr: Ipv4Addr, vport: u16) -> Self {
        let lo = u64::from(caddr.to_bits()) | (u64::from(cport) << 32) | (u64::from(u8::from(Protocol::Tcp)) << 48);
        Self { lo, hi: u64::from(vaddr.to_bits()) | (u64::from(vport) << 32) }
    }
}

/// What the floor needs of a flow: the real server.
#[derive(Clone, Copy, Debug)]
struct Real {
    addr: Ipv4Addr,
    port: u16,
}

/// Keyed SipHash-1-3 with the engine's key (the table's hash function).
#[derive(Clone, Copy, Debug)]
struct Sip13 {
    k0: u64,
    k1: u64,
}

impl Default for Sip13 {
    fn default() -> Self {
        let (k0, k1) = SipHasher13::new_with_key(&HASH_KEY).keys();
        Self { k0, k1 }
    }
}

impl BuildHasher for Sip13 {
    type Hasher = SipHasher13;

    #[inline]
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("an IPv4 packet"),
    }
}

/// The floor's work on one packet: parse, look up, rewrite. `true` if rewritten.
#[inline]
fn floor_packet<S: BuildHasher>(map: &hashbrown::HashMap<FlowKey, Real, S>, pkt: &mut [u8]) -> bool {
    let Ok(hdr) = ip::parse(pkt) else { return false };
    let Ok(seg) = TcpPacket::new_checked(hdr.l4(pkt)) else { return false };
    let key = FlowKey::new(v4(hdr.src_addr), seg.src_port(), v4(hdr.dst_addr), seg.dst_port());
    let Some(real) = map.get(&key) else { return false };
    nat::rewrite_destination(pkt, &hdr, IpAddr::V4(real.addr), real.port).is_ok()
}

// ---- established packets --------------------------------------------------------------------------------------

fn bench_established(c: &mut Criterion) {
    let t_setup = StdInstant::now();
    let engine = engine("wlc", N_DESTS);
    let t0 = Instant::from_secs(1);
    let payload = [0x55u8; PAYLOAD];

    // 2^20 conns, established through the engine's own path: each client's SYN, then its ACK.
    for start in (0..N as u64).step_by(4096) {
        let syns: Vec<Vec<u8>> = (start..start + 4096).map(|n| tcp4(client(n), true, &[])).collect();
        let acks: Vec<Vec<u8>> = (start..start + 4096).map(|n| tcp4(client(n), false, &[])).collect();
        assert_eq!(feed_bursts(&engine, t0, &syns), syns.len(), "every SYN creates a NAT conn");
        assert_eq!(feed_bursts(&engine, t0, &acks), acks.len(), "every ACK is forwarded");
    }
    assert_eq!(engine.conn_table().len(), N);
    for n in (0..N as u64).step_by(N / 64) {
        let (a, p) = client(n);
        let info = engine
            .conn(t0, Protocol::Tcp, SocketAddr::new(IpAddr::V4(a), p), SocketAddr::new(IpAddr::V4(VIP), VPORT))
            .expect("conn in the table");
        assert_eq!(info.state, "ESTABLISHED");
    }
    let populated = t_setup.elapsed();

    // The packets, in a random order of all 2^20 flows, stored back to back (DATA_LEN bytes each).
    let mut order: Vec<u64> = (0..N as u64).collect();
    SplitMix64(0x5eed).shuffle(&mut order);
    let mut data = Vec::with_capacity(N * DATA_LEN);
    for &n in &order {
        let p = tcp4(client(n), false, &payload);
        debug_assert_eq!(p.len(), DATA_LEN);
        data.extend_from_slice(&p);
    }
    // The floor's maps: flow → the real server the engine chose.
    let mut fold: hashbrown::HashMap<FlowKey, Real> = hashbrown::HashMap::with_capacity(N);
    let mut sip: hashbrown::HashMap<FlowKey, Real, Sip13> =
        hashbrown::HashMap::with_capacity_and_hasher(N, Sip13::default());
    for n in 0..N as u64 {
        let (a, p) = client(n);
        let info = engine
            .conn(t0, Protocol::Tcp, SocketAddr::new(IpAddr::V4(a), p), SocketAddr::new(IpAddr::V4(VIP), VPORT))
            .expect("conn in the table");
        let real = Real { addr: v4(info.real.ip()), port: info.real.port() };
        fold.insert(FlowKey::new(a, p, VIP, VPORT), real);
        sip.insert(FlowKey::new(a, p, VIP, VPORT), real);
    }
    eprintln!(
        "engine_established_1m: setup {:.1} s (2^20 conns established through the engine in {:.1} s)",
        t_setup.elapsed().as_secs_f64(),
        populated.as_secs_f64()
    );

    let pkt = |i: usize| &data[i * DATA_LEN..(i + 1) * DATA_LEN];
    // Sanity, outside the timed part: the engine and the floor rewrite the first packets the same way.
    {
        let mut a = pkt(0).to_vec();
        let mut b = pkt(0).to_vec();
        let mut pb = PacketBuf::whole(&mut a);
        assert!(is_nat_forward(&engine.handle_packet(t0, &mut pb, Direction::FromClient)));
        assert!(floor_packet(&sip, &mut b));
        // The engine also decrements the TTL (and patches the header checksum for it); compare the rest.
        assert_eq!(a[12..20], b[12..20], "same addresses");
        assert_eq!(a[20..], b[20..], "same TCP header and payload");
        let burst: Vec<Vec<u8>> = (1..=BURST).map(|i| pkt(i).to_vec()).collect();
        assert_eq!(feed_bursts(&engine, t0, &burst), BURST, "a burst is forwarded whole");
    }

    let mut g = c.benchmark_group("engine_established_1m");
    g.sample_size(30);
    g.throughput(Throughput::Elements(1));

    g.bench_function("copy only (restore the packet)", |b| {
        let mut storage = [0u8; SLOT];
        let mut i = 0;
        b.iter(|| {
            storage[HEADROOM..HEADROOM + DATA_LEN].copy_from_slice(pkt(i));
            i = (i + 1) & (N - 1);
            black_box(&mut storage);
        })
    });
    g.bench_function("floor: parse + hashbrown foldhash lookup + NAT rewrite", |b| {
        let mut storage = [0u8; SLOT];
        let mut i = 0;
        b.iter(|| {
            let p = &mut storage[HEADROOM..HEADROOM + DATA_LEN];
            p.copy_from_slice(pkt(i));
            i = (i + 1) & (N - 1);
            black_box(floor_packet(&fold, p))
        })
    });
    g.bench_function("floor: parse + hashbrown SipHash-1-3 lookup + NAT rewrite", |b| {
        let mut storage = [0u8; SLOT];
        let mut i = 0;
        b.iter(|| {
            let p = &mut storage[HEADROOM..HEADROOM + DATA_LEN];
            p.copy_from_slice(pkt(i));
            i = (i + 1) & (N - 1);
            black_box(floor_packet(&sip, p))
        })
    });
    // The clock advances 1 ms per 1024 packets (the conns' timers restart on every packet).
    g.bench_function("engine: handle_packet", |b| {
        let mut storage = [0u8; SLOT];
        let mut buf = PacketBuf::new(&mut storage, HEADROOM, DATA_LEN).expect("fits");
        let mut i = 0;
        let mut tick = 0u64;
        b.iter(|| {
            buf.set_range(HEADROOM, DATA_LEN).expect("fits");
            buf.packet_mut().copy_from_slice(pkt(i));
            i = (i + 1) & (N - 1);
            tick += 1;
            let now = t0 + Duration::from_millis(tick >> 10);
            black_box(engine.handle_packet(now, &mut buf, Direction::FromClient))
        })
    });
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("engine: handle_burst of 32 (time per burst)", |b| {
        let mut storage = vec![0u8; BURST * SLOT];
        let mut bufs: Vec<PacketBuf<'_>> = storage
            .chunks_exact_mut(SLOT)
            .map(|slot| PacketBuf::new(slot, HEADROOM, DATA_LEN).expect("fits"))
            .collect();
        let mut verdicts = [Verdict::Pass; BURST];
        let mut i = 0;
        let mut tick = 0u64;
        b.iter(|| {
            for buf in &mut bufs {
                buf.set_range(HEADROOM, DATA_LEN).expect("fits");
                buf.packet_mut().copy_from_slice(pkt(i));
                i = (i + 1) & (N - 1);
            }
            tick += BURST as u64;
            let now = t0 + Duration::from_millis(tick >> 10);
            engine.handle_burst(now, &mut bufs, Direction::FromClient, &mut verdicts);
            black_box(&verdicts);
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("engine: handle_packet, one flow (conn in cache)", |b| {
        let mut storage = [0u8; SLOT];
        let mut buf = PacketBuf::new(&mut storage, HEADROOM, DATA_LEN).expect("fits");
        let one = pkt(0);
        let mut tick = 0u64;
        b.iter(|| {
            buf.set_range(HEADROOM, DATA_LEN).expect("fits");
            buf.packet_mut().copy_from_slice(one);
            tick += 1;
            let now = t0 + Duration::from_millis(tick >> 10);
            black_box(engine.handle_packet(now, &mut buf, Direction::FromClient))
        })
    });
    g.finish();

    // Every packet of the run was forwarded: nothing was dropped.
    let drops = engine.drop_counts();
    assert_eq!(drops, Default::default(), "no packet dropped: {drops:?}");
}

// ---- new conns --------------------------------------------------------------------------------------------

/// An engine churning SYNs from fresh clients at about 10^6 conns in the table.
struct Churn {
    engine: Engine,
    /// The next fresh client.
    next: u64,
    /// The virtual second of the current chunk.
    second: u64,
    /// The current chunk's SYNs, SYN_LEN bytes each.
    chunk: Vec<u8>,
    /// SYNs of the chunk already sent.
    pos: usize,
    /// SYNs sent and forwarded in the timed part.
    sent: u64,
    forwarded: u64,
    /// Time spent in `handle_timeout` between chunks (not timed), and the conns it expired.
    expiry: StdDuration,
    expired: usize,
}

impl Churn {
    fn new(scheduler: &str, n_dests: u16) -> Self {
        let mut s = Self {
            engine: engine(scheduler, n_dests),
            next: 0,
            second: 0,
            chunk: Vec::with_capacity(CHUNK * SYN_LEN),
            pos: 0,
            sent: 0,
            forwarded: 0,
            expiry: StdDuration::ZERO,
            expired: 0,
        };
        // Fill the table to its steady level: WINDOW seconds of SYNs.
        for _ in 0..WINDOW {
            s.next_chunk();
            let syns: Vec<Vec<u8>> = s.chunk.chunks_exact(SYN_LEN).map(<[u8]>::to_vec).collect();
            let now = Instant::from_secs(s.second);
            assert_eq!(feed_bursts(&s.engine, now, &syns), CHUNK, "every SYN creates a NAT conn");
            s.pos = CHUNK;
        }
        (s.expiry, s.expired) = (StdDuration::ZERO, 0);
        s
    }

    /// Advances the clock one second, expires what is due (not timed), builds the next chunk of SYNs.
    fn next_chunk(&mut self) {
        self.second += 1;
        let before = self.engine.conn_table().len();
        let t = StdInstant::now();
        self.engine.handle_timeout(Instant::from_secs(self.second));
        self.expiry += t.elapsed();
        self.expired += before - self.engine.conn_table().len();
        self.chunk.clear();
        for _ in 0..CHUNK {
            self.chunk.extend_from_slice(&tcp4(client(self.next), true, &[]));
            self.next += 1;
        }
        self.pos = 0;
    }

    /// Sends `iters` SYNs; returns the time spent in `handle_packet` (and the packet copy), chunk changes
    /// excluded.
    fn run(&mut self, iters: u64) -> StdDuration {
        let mut storage = [0u8; SLOT];
        let mut total = StdDuration::ZERO;
        let mut left = iters;
        while left > 0 {
            if self.pos == CHUNK {
                self.next_chunk();
            }
            let m = (CHUNK - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            let now = Instant::from_secs(self.second);
            let syns = &self.chunk[self.pos * SYN_LEN..(self.pos + m) * SYN_LEN];
            let mut buf = PacketBuf::new(&mut storage, HEADROOM, SYN_LEN).expect("fits");
            let mut ok = 0u64;
            let start = StdInstant::now();
            for syn in syns.chunks_exact(SYN_LEN) {
                buf.set_range(HEADROOM, SYN_LEN).expect("fits");
                buf.packet_mut().copy_from_slice(syn);
                let v = black_box(self.engine.handle_packet(now, &mut buf, Direction::FromClient));
                ok += u64::from(is_nat_forward(&v));
            }
            total += start.elapsed();
            self.pos += m;
            self.sent += m as u64;
            self.forwarded += ok;
            left -= m as u64;
        }
        total
    }
}

fn bench_new_conns(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_new_conns");
    g.sample_size(30);
    g.throughput(Throughput::Elements(1));
    for (scheduler, n_dests) in [("wlc", N_DESTS), ("rr", N_DESTS), ("wlc", MANY_DESTS)] {
        let mut churn = Churn::new(scheduler, n_dests);
        eprintln!(
            "engine_new_conns/{scheduler}: table filled to {} conns (capacity {CAPACITY})",
            churn.engine.conn_table().len()
        );
        g.bench_function(format!("SYN from a fresh client, {scheduler}, {n_dests} NAT real servers"), |b| {
            b.iter_custom(|iters| churn.run(iters));
        });
        assert_eq!(churn.forwarded, churn.sent, "every SYN created a conn and was forwarded");
        let drops = churn.engine.drop_counts();
        assert_eq!(drops, Default::default(), "no packet dropped: {drops:?}");
        eprintln!(
            "engine_new_conns/{scheduler}: {} SYNs timed; table at {} conns; between chunks (not timed) \
             handle_timeout expired {} conns in {:.1} ms ({:.0} ns per conn)",
            churn.sent,
            churn.engine.conn_table().len(),
            churn.expired,
            churn.expiry.as_secs_f64() * 1e3,
            churn.expiry.as_secs_f64() * 1e9 / churn.expired.max(1) as f64
        );
        let per_dest: Vec<u32> = churn
            .engine
            .service(&service_key())
            .expect("service")
            .dests
            .iter()
            .map(|d| d.active_conns + d.inactive_conns)
            .collect();
        let (min, max) = (per_dest.iter().min().copied(), per_dest.iter().max().copied());
        eprintln!("engine_new_conns/{scheduler}/{n_dests}: conns per real server min {min:?} max {max:?}");
    }
    g.finish();
}

criterion_group!(benches, bench_established, bench_new_conns);
criterion_main!(benches);
