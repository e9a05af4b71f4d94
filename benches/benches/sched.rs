//! Schedulers: pick cost of all 14 at 2, 100 and 10,000 dests; the O(log n) wlc tree against the kernel's
//! O(n) scan; the Maglev table build against the `maglev` crate.
//!
//! `cargo bench -p ipvs-benches --bench sched -- --warm-up-time 1 --measurement-time 2`
//!
//! Every pick runs the loop an engine runs (`Engine::step`): schedule a flow from a random client, bind one
//! active conn to the pick and tell the scheduler (`counters_changed`), and end the conn bound [`LIVE`]
//! steps earlier, if that flow found a dest (unbind, `counters_changed`). Dests start with random weights
//! and counters; time advances 1 ms per step (lblc/lblcr expiry timers run as they would).

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use ipvs_sched::fastlc::FastMode;
use ipvs_sched::ipvs_proto::{DestFlags, DestId, Instant, Protocol};
use ipvs_sched::mh::{new_mh, MH_DEFAULT_TABLE_SIZE};
use ipvs_sched::twos::SplitMix64;
use ipvs_sched::wlc::{wlc_scan, WeightedLeastConnection};
use ipvs_sched::{new_scheduler, CounterChange, DestView, SchedConfig, SchedFlow, Scheduler, SCHEDULER_NAMES};

/// Dest-list sizes of the pick grid.
const SIZES: [usize; 3] = [2, 100, 10_000];
/// Distinct flows cycled through (a power of two).
const FLOWS: usize = 4096;
/// Lifetime of a connection, in steps (new flows): at most this many are alive at a time.
const LIVE: usize = 1024;
/// The Maglev table size `mh` uses at 10,000 dests (the kernel's largest).
const MH_SIZE_10K: u32 = 131_071;
/// The Maglev build comparison: table size and dest count.
const BUILD_M: u32 = 65_537;
const BUILD_N: usize = 1000;

/// `n` dests in list order: distinct addresses, weights from `weight`, random counters
/// (active 0..1000, inactive 0..4000), AVAILABLE, no thresholds.
fn dests(n: usize, rng: &mut SplitMix64, mut weight: impl FnMut(&mut SplitMix64) -> u32) -> Vec<DestView> {
    (0..n)
        .map(|i| {
            let weight = weight(rng);
            DestView {
                id: DestId(i as u32),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)), 8080),
                weight,
                last_weight: weight,
                active_conns: rng.below(1000) as u32,
                inactive_conns: rng.below(4000) as u32,
                persist_conns: 0,
                flags: DestFlags::AVAILABLE,
            }
        })
        .collect()
}

/// Random weights 1..=100.
fn random_weight(rng: &mut SplitMix64) -> u32 {
    1 + rng.below(100) as u32
}

/// [`FLOWS`] TCP flows: uniform random client address and port, packet destination one of 4096 addresses of
/// 10.50.0.0/20 port 80 (only dh, lblc and lblcr look at it).
fn flows(rng: &mut SplitMix64) -> Vec<SchedFlow> {
    (0..FLOWS)
        .map(|_| {
            let client = Ipv4Addr::from(rng.next_u64() as u32);
            let port = 1024 + rng.below(64_512) as u16;
            let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 50, 0, 0)) + rng.below(4096) as u32);
            SchedFlow {
                protocol: Protocol::Tcp,
                client: SocketAddr::new(IpAddr::V4(client), port),
                virt: SocketAddr::new(IpAddr::V4(dst), 80),
                fwmark: 0,
            }
        })
        .collect()
}

/// A service as an engine drives it: the scheduler, its dest list and the conns of the last [`LIVE`] steps
/// (oldest first; `None` where the flow was refused).
struct Engine {
    sched: Box<dyn Scheduler>,
    dests: Vec<DestView>,
    flows: Vec<SchedFlow>,
    live: VecDeque<Option<usize>>,
    next: usize,
    now_ms: u64,
}

impl Engine {
    fn new(mut sched: Box<dyn Scheduler>, dests: Vec<DestView>, flows: Vec<SchedFlow>) -> Self {
        sched.bind(&dests);
        let live = std::iter::repeat_n(None, LIVE).collect();
        Self { sched, dests, flows, live, next: 0, now_ms: 0 }
    }

    /// One new flow: pick, bind (+ `counters_changed`), end the conn of `LIVE` steps ago (+ `counters_changed`).
    fn step(&mut self) -> Option<usize> {
        let flow = self.flows[self.next % FLOWS];
        self.next += 1;
        self.now_ms += 1;
        let pick = self.sched.schedule(Instant::from_millis(self.now_ms), black_box(&flow), &self.dests);
        if let Some(p) = pick {
            self.dests[p].active_conns += 1;
            self.sched.counters_changed(&self.dests, CounterChange { index: p });
        }
        self.live.push_back(pick);
        if let Some(q) = self.live.pop_front().expect("LIVE entries") {
            self.dests[q].active_conns -= 1;
            self.sched.counters_changed(&self.dests, CounterChange { index: q });
        }
        pick
    }
}

/// The registry's scheduler `name` for `n` dests: kernel defaults, except `mh` at 10,000 dests
/// (M = 131071, the kernel's largest table; the default 4093 cannot hold 10,000 dests).
fn scheduler(name: &str, n: usize) -> Box<dyn Scheduler> {
    let mh_table_size = if n > MH_DEFAULT_TABLE_SIZE as usize { MH_SIZE_10K } else { MH_DEFAULT_TABLE_SIZE };
    let config = SchedConfig { mh_table_size, seed: 7, ..SchedConfig::default() };
    new_scheduler(name, &config).expect("a registry name")
}

/// Pick cost of every scheduler at every size of [`SIZES`].
fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched/pick");
    g.sample_size(30);
    for name in SCHEDULER_NAMES {
        for n in SIZES {
            let mut rng = SplitMix64::new(0x5eed ^ n as u64);
            let d = dests(n, &mut rng, random_weight);
            let mut e = Engine::new(scheduler(name, n), d, flows(&mut rng));
            // Reach the steady state (conns ending as fast as they start, lblc/lblcr caches warm) before
            // measuring; ovf refuses flows while every dest is full, which is its behaviour, not an error.
            let warm = 2 * FLOWS;
            let found = (0..warm).filter(|_| e.step().is_some()).count();
            eprintln!("sched/pick/{name}/{n}: {found}/{warm} warm-up flows found a dest");
            g.bench_function(BenchmarkId::new(name, n), |b| b.iter(|| e.step()));
        }
    }
    g.finish();
}

/// wlc at 10,000 dests: the O(log n) tree against the kernel's O(n) scan, same dests, same flows.
fn wlc_10k(c: &mut Criterion) {
    let n = 10_000;
    let mut g = c.benchmark_group("sched/wlc-10k");
    g.sample_size(30);
    let setup = || {
        let mut rng = SplitMix64::new(0x3c3c);
        (dests(n, &mut rng, random_weight), flows(&mut rng))
    };
    for (label, mode) in [("tree, engine loop", FastMode::Tree), ("scan, engine loop", FastMode::Scan)] {
        let (d, f) = setup();
        let mut e = Engine::new(Box::new(WeightedLeastConnection::with_mode(mode)), d, f);
        g.bench_function(label, |b| b.iter(|| e.step()));
    }
    // Pick alone with the counters left constant: the tree's pick reads its root, the scan walks the list.
    let (d, f) = setup();
    let mut tree = WeightedLeastConnection::with_mode(FastMode::Tree);
    tree.bind(&d);
    g.bench_function("tree, pick only (constant counters)", |b| {
        b.iter(|| tree.schedule(Instant::ZERO, black_box(&f[0]), black_box(&d)))
    });
    g.bench_function("wlc_scan, pick only (constant counters)", |b| b.iter(|| wlc_scan(black_box(&d))));
    g.finish();
}

/// The Maglev table build, M = 65537 with 1000 dests, against the `maglev` crate (which has no weights,
/// so ours builds with equal weights too; a run with random weights is shown beside it).
fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched/maglev-build");
    // The peer allocates 1000 permutations of 65537 words per build (~0.5 GB): few, flat samples.
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    let mut rng = SplitMix64::new(0xa11);
    let equal = dests(BUILD_N, &mut rng, |_| 1);
    let weighted = dests(BUILD_N, &mut rng, random_weight);
    let config = SchedConfig { mh_table_size: BUILD_M, ..SchedConfig::default() };

    let mut mh = new_mh(&config).expect("65537 is a prime");
    g.bench_function("ours: Mh::rebuild, equal weights", |b| {
        b.iter(|| {
            mh.rebuild(black_box(&equal));
            black_box(&mh);
        })
    });
    g.bench_function("ours: new_mh + bind (fresh allocation), equal weights", |b| {
        b.iter(|| {
            let mut fresh = new_mh(&config).expect("65537 is a prime");
            fresh.bind(black_box(&equal));
            fresh
        })
    });
    g.bench_function("ours: Mh::rebuild, random weights 1..=100", |b| {
        b.iter(|| {
            mh.rebuild(black_box(&weighted));
            black_box(&mh);
        })
    });

    let nodes: Vec<SocketAddr> = equal.iter().map(|d| d.addr).collect();
    let peer = maglev::Maglev::with_capacity(nodes.iter().copied(), BUILD_M as usize);
    assert_eq!(maglev::ConsistentHasher::capacity(&peer), BUILD_M as usize, "the peer's table is M = 65537 too");
    drop(peer);
    g.bench_function("maglev 0.2.1: Maglev::with_capacity", |b| {
        b.iter(|| maglev::Maglev::with_capacity(black_box(&nodes).iter().copied(), BUILD_M as usize))
    });
    g.finish();
}

criterion_group!(benches, pick, wlc_10k, maglev_build);
criterion_main!(benches);
