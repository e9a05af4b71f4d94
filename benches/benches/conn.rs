//! The connection table against its peers, all measured in one run: raw single-thread `hashbrown::HashMap`
//! with the same keyed SipHash-1-3 and with its default (unkeyed) foldhash, `dashmap`, and
//! `parking_lot::Mutex<hashbrown::HashMap>`, vs `ConnTable` and `LocalConnTable`.
//!
//! `cargo bench -p ipvs-benches --bench conn -- --warm-up-time 1 --measurement-time 2`
//!
//! Groups (every big structure holds 2^20 IPv4 TCP NAT flows, built once per run):
//!
//! * `conn_lookup_1m` — one lookup hit per iteration, keys in random order.
//! * `conn_burst_1m` — 32 keys per iteration: `lookup_burst` vs 32 single lookups (time per key).
//! * `conn_mixed_1m` — 90% lookup hit / 9% insert of a new flow / 1% remove (the oldest flow this thread
//!   inserted), on 1 and 2 threads; throughput = all threads' operations over wall time. What a sample
//!   inserted is removed again after it (not timed), so every sample starts from the same 2^20 flows. The
//!   single-thread structures run at 2 threads as one instance per thread, half the flows each (the per-core
//!   deployment).
//! * `conn_churn_1m` — insert a new flow, and expire the flows inserted 2^20 operations earlier: ours with
//!   a virtual clock (1 ms per 1024 inserts, 1024 ms timeout, `handle_timeout` every virtual ms), the peers by
//!   removing the key at the head of a FIFO (an ideal timer).
//! * `conn_adversarial` — 4096 flows crafted to share one home bucket under the all-zero SipHash key (as if
//!   the table were unkeyed, or its key had leaked), looked up in a table keyed with a secret key, beside
//!   4096 random flows, and in a table keyed with the leaked key (what a known hash key costs).
//!
//! Our tables: 16 shards (`ConnTable`), capacity 2^21 for 2^20 flows (the headroom of hashbrown, whose 2^20
//! entries sit in 2^21 buckets). The peers' key hashes the client side with one `write_u64`, the input of our
//! hash (see `common/conn.rs`), so the SipHash peers do the same hashing work as ours.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

#[path = "common/conn.rs"]
mod common;

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use dashmap::DashMap;
use ipvs_conn::ipvs_proto::{Duration, Instant};
use ipvs_conn::{ConnId, ConnTable, ConnTableConfig, ConnView, Expired, InKey, LocalConnTable, NewConn};
use parking_lot::Mutex;
use siphasher::sip::SipHasher13;

use common::{conn4, in_key, table_config, Sip13, SplitMix64, V4Key, V4Val, HASH_KEY, N};

type HbSip = hashbrown::HashMap<V4Key, V4Val, Sip13>;
type HbFold = hashbrown::HashMap<V4Key, V4Val>;
type Dash = DashMap<V4Key, V4Val, Sip13>;
type MutexHb = Mutex<HbSip>;

/// Keys per burst.
const BURST: usize = 32;

/// First flow number of the flows the mixed workload inserts (thread `t` uses `NEW_FLOWS + t << 36 + j`).
const NEW_FLOWS: u64 = 1 << 40;

/// First flow number of the churn workload.
const CHURN_FLOWS: u64 = 1 << 44;

/// The bench configuration of our tables: capacity 2^21.
fn config() -> ConnTableConfig {
    let mut cfg = table_config();
    cfg.capacity = 2 * N;
    cfg
}

// ---- the flows and the structures ---------------------------------------------------------------------------

/// Flow numbers `0..n` with `i % parts == part`, in random order.
fn shuffled(n: usize, parts: usize, part: usize, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n as u64).filter(|i| *i as usize % parts == part).collect();
    SplitMix64(seed).shuffle(&mut v);
    v
}

/// Lookup keys in both forms (ours, the peers').
struct Keys {
    ours: Vec<InKey>,
    peers: Vec<V4Key>,
}

impl Keys {
    fn of(flows: &[u64]) -> Self {
        let conns: Vec<NewConn> = flows.iter().map(|&i| conn4(i)).collect();
        Self { ours: conns.iter().map(in_key).collect(), peers: conns.iter().map(V4Key::of).collect() }
    }
}

fn build_conn(flows: impl Iterator<Item = u64>, cfg: ConnTableConfig) -> ConnTable {
    let now = Instant::from_secs(1);
    let t = ConnTable::new(cfg, now).expect("valid config");
    for i in flows {
        t.insert(now, conn4(i)).expect("room for every flow");
    }
    t
}

fn build_local(flows: impl Iterator<Item = u64>, cfg: ConnTableConfig) -> LocalConnTable {
    let now = Instant::from_secs(1);
    let mut t = LocalConnTable::new(cfg, now).expect("valid config");
    for i in flows {
        t.insert(now, conn4(i)).expect("room for every flow");
    }
    t
}

fn build_map<S: BuildHasher + Default>(flows: impl Iterator<Item = u64>) -> hashbrown::HashMap<V4Key, V4Val, S> {
    let mut m = hashbrown::HashMap::with_hasher(S::default());
    for i in flows {
        let c = conn4(i);
        m.insert(V4Key::of(&c), V4Val::of(&c));
    }
    m
}

fn build_dash(flows: impl Iterator<Item = u64>) -> Dash {
    let m = DashMap::with_hasher(Sip13::default());
    for i in flows {
        let c = conn4(i);
        m.insert(V4Key::of(&c), V4Val::of(&c));
    }
    m
}

// ---- the mixed workload -------------------------------------------------------------------------------------

/// One thread's view of a structure under the mixed workload.
trait Ops {
    type Key;
    type Id: Copy;
    fn lookup(&mut self, k: &Self::Key);
    fn insert(&mut self, flow: u64) -> Option<Self::Id>;
    fn remove(&mut self, id: Self::Id);
}

struct Shared<'a> {
    t: &'a ConnTable,
    out: Vec<Expired>,
}

impl Ops for Shared<'_> {
    type Key = InKey;
    type Id = ConnId;
    #[inline]
    fn lookup(&mut self, k: &InKey) {
        black_box(self.t.lookup_in(k));
    }
    #[inline]
    fn insert(&mut self, flow: u64) -> Option<ConnId> {
        self.t.insert(Instant::from_secs(1), conn4(flow)).ok()
    }
    #[inline]
    fn remove(&mut self, id: ConnId) {
        let _ = self.t.remove(id, &mut self.out);
        self.out.clear();
    }
}

struct Local<'a> {
    t: &'a mut LocalConnTable,
    out: Vec<Expired>,
}

impl Ops for Local<'_> {
    type Key = InKey;
    type Id = ConnId;
    #[inline]
    fn lookup(&mut self, k: &InKey) {
        black_box(self.t.lookup_in(k));
    }
    #[inline]
    fn insert(&mut self, flow: u64) -> Option<ConnId> {
        self.t.insert(Instant::from_secs(1), conn4(flow)).ok()
    }
    #[inline]
    fn remove(&mut self, id: ConnId) {
        let _ = self.t.remove(id, &mut self.out);
        self.out.clear();
    }
}

impl<S: BuildHasher> Ops for &mut hashbrown::HashMap<V4Key, V4Val, S> {
    type Key = V4Key;
    type Id = V4Key;
    #[inline]
    fn lookup(&mut self, k: &V4Key) {
        black_box(self.get(k).copied());
    }
    #[inline]
    fn insert(&mut self, flow: u64) -> Option<V4Key> {
        let c = conn4(flow);
        let k = V4Key::of(&c);
        hashbrown::HashMap::insert(self, k, V4Val::of(&c));
        Some(k)
    }
    #[inline]
    fn remove(&mut self, k: V4Key) {
        black_box(hashbrown::HashMap::remove(self, &k));
    }
}

impl Ops for &Dash {
    type Key = V4Key;
    type Id = V4Key;
    #[inline]
    fn lookup(&mut self, k: &V4Key) {
        black_box(self.get(k).map(|r| *r));
    }
    #[inline]
    fn insert(&mut self, flow: u64) -> Option<V4Key> {
        let c = conn4(flow);
        let k = V4Key::of(&c);
        DashMap::insert(self, k, V4Val::of(&c));
        Some(k)
    }
    #[inline]
    fn remove(&mut self, k: V4Key) {
        black_box(DashMap::remove(self, &k));
    }
}

impl Ops for &MutexHb {
    type Key = V4Key;
    type Id = V4Key;
    #[inline]
    fn lookup(&mut self, k: &V4Key) {
        black_box(self.lock().get(k).copied());
    }
    #[inline]
    fn insert(&mut self, flow: u64) -> Option<V4Key> {
        let c = conn4(flow);
        let k = V4Key::of(&c);
        self.lock().insert(k, V4Val::of(&c));
        Some(k)
    }
    #[inline]
    fn remove(&mut self, k: V4Key) {
        black_box(self.lock().remove(&k));
    }
}

/// Runs `ops` operations of the mix on `o` after `start` has released every thread; returns the timed
/// interval. Lookups read `keys` from `cursor` on; what this call inserted is removed again afterwards (not
/// timed).
fn mixed_loop<O: Ops>(
    o: &mut O,
    keys: &[O::Key],
    cursor: usize,
    ops: u64,
    thread: usize,
    seed: u64,
    start: &Barrier,
) -> (StdInstant, StdInstant) {
    let mut rng = SplitMix64(seed ^ (thread as u64) << 56);
    let mut live: VecDeque<O::Id> = VecDeque::with_capacity(ops as usize / 8 + 16);
    let mut next_flow = NEW_FLOWS + ((thread as u64) << 36);
    let mut k = cursor % keys.len();
    start.wait();
    let t0 = StdInstant::now();
    for _ in 0..ops {
        let r = (rng.next_u64() >> 32).wrapping_mul(100) >> 32;
        if r < 90 || (r == 99 && live.is_empty()) {
            o.lookup(&keys[k]);
            k += 1;
            if k == keys.len() {
                k = 0;
            }
        } else if r < 99 {
            if let Some(id) = o.insert(next_flow) {
                live.push_back(id);
            }
            next_flow += 1;
        } else if let Some(id) = live.pop_front() {
            o.remove(id);
        }
    }
    let t1 = StdInstant::now();
    for id in live {
        o.remove(id);
    }
    (t0, t1)
}

/// Wall time of the mixed workload on `n` threads, each running `work(thread, ops, barrier)`.
fn par(n: usize, work: impl Fn(usize, &Barrier) -> (StdInstant, StdInstant) + Sync) -> StdDuration {
    let start = Barrier::new(n);
    let spans: Vec<_> = std::thread::scope(|s| {
        let (work, start) = (&work, &start);
        let hs: Vec<_> = (0..n).map(|t| s.spawn(move || work(t, start))).collect();
        hs.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    span(&spans)
}

/// [`par`] with one owned instance per thread.
fn par_owned<T: Send>(
    items: &mut [T],
    work: impl Fn(&mut T, usize, &Barrier) -> (StdInstant, StdInstant) + Sync,
) -> StdDuration {
    let start = Barrier::new(items.len());
    let spans: Vec<_> = std::thread::scope(|s| {
        let work = &work;
        let start = &start;
        let hs: Vec<_> = items.iter_mut().enumerate().map(|(t, it)| s.spawn(move || work(it, t, start))).collect();
        hs.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    span(&spans)
}

fn span(spans: &[(StdInstant, StdInstant)]) -> StdDuration {
    let t0 = spans.iter().map(|s| s.0).min().expect("a thread");
    let t1 = spans.iter().map(|s| s.1).max().expect("a thread");
    t1 - t0
}

// ---- the benches --------------------------------------------------------------------------------------------

/// One lookup per iteration, cycling through `keys`.
fn bench_each<K, R>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, keys: &[K], mut f: impl FnMut(&K) -> R) {
    let mut i = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            let k = &keys[i];
            i += 1;
            if i == keys.len() {
                i = 0;
            }
            black_box(f(k))
        });
    });
}

/// `f` on 32 keys per iteration, cycling through `keys` (whose length is a multiple of 32).
fn bench_chunks<K>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, keys: &[K], mut f: impl FnMut(&[K])) {
    let mut i = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            f(&keys[i..i + BURST]);
            i += BURST;
            if i == keys.len() {
                i = 0;
            }
        });
    });
}

fn conn_benches(c: &mut Criterion) {
    let all = Keys::of(&shuffled(N, 1, 0, 0x10c));
    let halves = [Keys::of(&shuffled(N, 2, 0, 0x20c)), Keys::of(&shuffled(N, 2, 1, 0x30c))];

    let ours = build_conn(0..N as u64, config());
    let mut local = build_local(0..N as u64, config());
    let mut hb_sip: HbSip = build_map(0..N as u64);
    let mut hb_fold: HbFold = build_map(0..N as u64);
    let dash = build_dash(0..N as u64);
    let mutex: MutexHb = Mutex::new(build_map(0..N as u64));
    let probe = ours.probe_stats();
    eprintln!(
        "ConnTable at 2^20 entries: mean probe {:.3} buckets, max {}, {} buckets (load {:.2} of the pairs)",
        probe.mean(),
        probe.max_buckets,
        probe.n_buckets,
        probe.entries as f64 / (probe.n_buckets * 10) as f64,
    );

    // (a) Lookup hit, random order.
    {
        let mut g = c.benchmark_group("conn_lookup_1m");
        g.throughput(Throughput::Elements(1));
        bench_each(&mut g, "hashbrown_sip13", &all.peers, |k| hb_sip.get(k).copied());
        bench_each(&mut g, "hashbrown_foldhash", &all.peers, |k| hb_fold.get(k).copied());
        bench_each(&mut g, "dashmap", &all.peers, |k| dash.get(k).map(|r| *r));
        bench_each(&mut g, "mutex_hashbrown", &all.peers, |k| mutex.lock().get(k).copied());
        bench_each(&mut g, "ConnTable", &all.ours, |k| ours.lookup_in(k));
        bench_each(&mut g, "LocalConnTable", &all.ours, |k| local.lookup_in(k));
        g.finish();
    }

    // (d) Burst vs single lookups, 32 keys per iteration.
    {
        let mut g = c.benchmark_group("conn_burst_1m");
        g.throughput(Throughput::Elements(BURST as u64));
        let mut out: [Option<(ConnId, ConnView)>; BURST] = [None; BURST];
        bench_chunks(&mut g, "hashbrown_sip13/single", &all.peers, |ks| {
            for k in ks {
                black_box(hb_sip.get(k).copied());
            }
        });
        bench_chunks(&mut g, "hashbrown_foldhash/single", &all.peers, |ks| {
            for k in ks {
                black_box(hb_fold.get(k).copied());
            }
        });
        bench_chunks(&mut g, "ConnTable/single", &all.ours, |ks| {
            for k in ks {
                black_box(ours.lookup_in(k));
            }
        });
        bench_chunks(&mut g, "ConnTable/burst", &all.ours, |ks| {
            ours.lookup_burst(ks, &mut out);
            black_box(&out);
        });
        bench_chunks(&mut g, "LocalConnTable/single", &all.ours, |ks| {
            for k in ks {
                black_box(local.lookup_in(k));
            }
        });
        bench_chunks(&mut g, "LocalConnTable/burst", &all.ours, |ks| {
            local.lookup_burst(ks, &mut out);
            black_box(&out);
        });
        g.finish();
    }

    // (b) Mixed 90/9/1 at 1 and 2 threads.
    {
        let mut g = c.benchmark_group("conn_mixed_1m");
        g.throughput(Throughput::Elements(1));
        let keys_for = |n: usize, t: usize| if n == 1 { &all } else { &halves[t] };
        let mut cursor = 0usize;
        let mut seed = 0u64;
        let mut step = |iters: u64, n: usize| -> (usize, u64, u64) {
            let c = cursor;
            cursor = cursor.wrapping_add(iters as usize / n);
            seed += 1;
            (c, seed, iters / n as u64)
        };
        for n in [1, 2] {
            g.bench_function(format!("ConnTable/{n}t"), |b| {
                b.iter_custom(|iters| {
                    let (cur, seed, ops) = step(iters, n);
                    par(n, |t, start| {
                        let mut o = Shared { t: &ours, out: Vec::new() };
                        mixed_loop(&mut o, &keys_for(n, t).ours, cur, ops, t, seed, start)
                    })
                });
            });
            g.bench_function(format!("dashmap/{n}t"), |b| {
                b.iter_custom(|iters| {
                    let (cur, seed, ops) = step(iters, n);
                    par(n, |t, start| mixed_loop(&mut &dash, &keys_for(n, t).peers, cur, ops, t, seed, start))
                });
            });
            g.bench_function(format!("mutex_hashbrown/{n}t"), |b| {
                b.iter_custom(|iters| {
                    let (cur, seed, ops) = step(iters, n);
                    par(n, |t, start| mixed_loop(&mut &mutex, &keys_for(n, t).peers, cur, ops, t, seed, start))
                });
            });
        }
        // The single-thread structures: one instance at 1 thread, one per thread (half the flows each) at 2.
        g.bench_function("LocalConnTable/1t", |b| {
            b.iter_custom(|iters| {
                let (cur, seed, ops) = step(iters, 1);
                par_owned(std::slice::from_mut(&mut local), |t, th, start| {
                    mixed_loop(&mut Local { t, out: Vec::new() }, &all.ours, cur, ops, th, seed, start)
                })
            });
        });
        g.bench_function("hashbrown_sip13/1t", |b| {
            b.iter_custom(|iters| {
                let (cur, seed, ops) = step(iters, 1);
                par_owned(std::slice::from_mut(&mut hb_sip), |m, th, start| {
                    mixed_loop(&mut &mut *m, &all.peers, cur, ops, th, seed, start)
                })
            });
        });
        g.bench_function("hashbrown_foldhash/1t", |b| {
            b.iter_custom(|iters| {
                let (cur, seed, ops) = step(iters, 1);
                par_owned(std::slice::from_mut(&mut hb_fold), |m, th, start| {
                    mixed_loop(&mut &mut *m, &all.peers, cur, ops, th, seed, start)
                })
            });
        });
        drop((hb_fold, dash, mutex));
        let mut half_cfg = config();
        half_cfg.capacity = N;
        let mut locals: Vec<LocalConnTable> =
            (0..2).map(|p| build_local((0..N as u64).filter(|i| *i as usize % 2 == p), half_cfg)).collect();
        g.bench_function("LocalConnTable/2t", |b| {
            b.iter_custom(|iters| {
                let (cur, seed, ops) = step(iters, 2);
                par_owned(&mut locals, |t, th, start| {
                    mixed_loop(&mut Local { t, out: Vec::new() }, &halves[th].ours, cur, ops, th, seed, start)
                })
            });
        });
        drop(locals);
        let mut maps: Vec<HbSip> = (0..2).map(|p| build_map((0..N as u64).filter(|i| *i as usize % 2 == p))).collect();
        g.bench_function("hashbrown_sip13/2t", |b| {
            b.iter_custom(|iters| {
                let (cur, seed, ops) = step(iters, 2);
                par_owned(&mut maps, |m, th, start| {
                    mixed_loop(&mut &mut *m, &halves[th].peers, cur, ops, th, seed, start)
                })
            });
        });
        g.finish();
    }
    drop((ours, local, hb_sip, all, halves));

    churn(c);
    adversarial(c);
}

// ---- (c) churn ----------------------------------------------------------------------------------------------

/// Churn inserts per virtual millisecond; with [`CHURN_TIMEOUT_MS`] this keeps 2^20 conns alive.
const CHURN_PER_MS: u64 = 1024;
const CHURN_TIMEOUT_MS: u64 = 1024;

fn churn_conn(k: u64) -> NewConn {
    conn4(CHURN_FLOWS + k).with_timeout(Duration::from_millis(CHURN_TIMEOUT_MS))
}

/// Our side of the churn: a table, its virtual clock and the next flow.
struct OurChurn {
    next: u64,
    now: Instant,
    expired: Vec<Expired>,
}

impl OurChurn {
    #[inline]
    fn step(
        &mut self,
        insert: &mut impl FnMut(Instant, NewConn),
        handle_timeout: &mut impl FnMut(Instant, &mut Vec<Expired>),
    ) {
        insert(self.now, churn_conn(self.next));
        self.next += 1;
        if self.next % CHURN_PER_MS == 0 {
            self.now += Duration::from_millis(1);
            handle_timeout(self.now, &mut self.expired);
            self.expired.clear();
        }
    }
}

/// A peer's churn: insert, and remove the key inserted 2^20 operations earlier.
struct PeerChurn {
    next: u64,
    fifo: VecDeque<V4Key>,
}

impl PeerChurn {
    #[inline]
    fn step(&mut self, insert: &mut impl FnMut(V4Key, V4Val), remove: &mut impl FnMut(&V4Key)) {
        let c = churn_conn(self.next);
        self.next += 1;
        let k = V4Key::of(&c);
        insert(k, V4Val::of(&c));
        self.fifo.push_back(k);
        if self.fifo.len() > N {
            if let Some(old) = self.fifo.pop_front() {
                remove(&old);
            }
        }
    }
}

/// Operations run before measuring, to reach the steady state.
const CHURN_PREFILL: u64 = (N + N / 8) as u64;

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("conn_churn_1m");
    g.throughput(Throughput::Elements(1));
    let start = Instant::from_secs(1);
    let ours_fresh = || OurChurn { next: 0, now: start, expired: Vec::new() };
    let peer_fresh = || PeerChurn { next: 0, fifo: VecDeque::with_capacity(N + 1) };
    {
        let t = ConnTable::new(config(), start).expect("valid config");
        let mut st = ours_fresh();
        let mut ins = |now, conn| {
            let _ = black_box(t.insert(now, conn));
        };
        let mut ht = |now, out: &mut Vec<Expired>| t.handle_timeout(now, out);
        for _ in 0..CHURN_PREFILL {
            st.step(&mut ins, &mut ht);
        }
        eprintln!("ConnTable churn steady state: {} conns", t.len());
        g.bench_function("ConnTable", |b| b.iter(|| st.step(&mut ins, &mut ht)));
    }
    {
        let t = std::cell::RefCell::new(LocalConnTable::new(config(), start).expect("valid config"));
        let mut st = ours_fresh();
        let mut ins = |now, conn| {
            let _ = black_box(t.borrow_mut().insert(now, conn));
        };
        let mut ht = |now, out: &mut Vec<Expired>| t.borrow_mut().handle_timeout(now, out);
        for _ in 0..CHURN_PREFILL {
            st.step(&mut ins, &mut ht);
        }
        g.bench_function("LocalConnTable", |b| b.iter(|| st.step(&mut ins, &mut ht)));
    }
    fn map_churn<S: BuildHasher + Default>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut st: PeerChurn) {
        let m = std::cell::RefCell::new(hashbrown::HashMap::<V4Key, V4Val, S>::with_hasher(S::default()));
        let mut ins = |k, v| {
            black_box(m.borrow_mut().insert(k, v));
        };
        let mut rm = |k: &V4Key| {
            black_box(m.borrow_mut().remove(k));
        };
        for _ in 0..CHURN_PREFILL {
            st.step(&mut ins, &mut rm);
        }
        g.bench_function(name, |b| b.iter(|| st.step(&mut ins, &mut rm)));
    }
    map_churn::<Sip13>(&mut g, "hashbrown_sip13", peer_fresh());
    map_churn::<hashbrown::DefaultHashBuilder>(&mut g, "hashbrown_foldhash", peer_fresh());
    {
        let m: Dash = DashMap::with_hasher(Sip13::default());
        let mut st = peer_fresh();
        let mut ins = |k, v| {
            black_box(m.insert(k, v));
        };
        let mut rm = |k: &V4Key| {
            black_box(m.remove(k));
        };
        for _ in 0..CHURN_PREFILL {
            st.step(&mut ins, &mut rm);
        }
        g.bench_function("dashmap", |b| b.iter(|| st.step(&mut ins, &mut rm)));
    }
    {
        let m: MutexHb = Mutex::new(HbSip::with_hasher(Sip13::default()));
        let mut st = peer_fresh();
        let mut ins = |k, v| {
            black_box(m.lock().insert(k, v));
        };
        let mut rm = |k: &V4Key| {
            black_box(m.lock().remove(k));
        };
        for _ in 0..CHURN_PREFILL {
            st.step(&mut ins, &mut rm);
        }
        g.bench_function("mutex_hashbrown", |b| b.iter(|| st.step(&mut ins, &mut rm)));
    }
    g.finish();
}

// ---- (e) adversarial keys -----------------------------------------------------------------------------------

const ADV_CAPACITY: usize = 16_384;
const ADV_FLOWS: usize = 4096;

/// `ipvs-conn`'s hash of a TCP/IPv4 client tuple under `key` (the crate's `KeyHasher::v4`; the leaked-key
/// table's probe lengths below confirm that the two agree).
fn our_hash(key: &[u8; 16], c: &NewConn) -> u64 {
    let mut s = SipHasher13::new_with_key(key);
    let caddr = match c.caddr {
        std::net::IpAddr::V4(a) => a.to_bits(),
        std::net::IpAddr::V6(_) => unreachable!("an IPv4 flow"),
    };
    s.write_u64(u64::from(caddr) | (u64::from(c.cport) << 32) | (u64::from(u8::from(c.protocol)) << 48));
    s.finish()
}

fn adversarial(c: &mut Criterion) {
    let cfg = ConnTableConfig::new(ADV_CAPACITY, HASH_KEY).with_n_shards(1);
    let now = Instant::from_secs(1);
    let n_buckets = ConnTable::new(cfg, now).expect("valid config").probe_stats().n_buckets as u64;
    // Flows whose home bucket under the all-zero key is bucket 0 (multiply-shift of the hash's low word).
    let crafted: Vec<NewConn> = (1u64 << 45..)
        .map(conn4)
        .filter(|conn| (u64::from(our_hash(&[0; 16], conn) as u32) * n_buckets) >> 32 == 0)
        .take(ADV_FLOWS)
        .collect();
    let random: Vec<NewConn> = (0..ADV_FLOWS as u64).map(|i| conn4((1 << 46) + i)).collect();
    let build = |key: [u8; 16], flows: &[NewConn]| {
        let mut cfg = cfg;
        cfg.hash_key = key;
        let t = ConnTable::new(cfg, now).expect("valid config");
        for f in flows {
            t.insert(now, *f).expect("room");
        }
        let p = t.probe_stats();
        (t, p)
    };
    let keys = |flows: &[NewConn], seed| {
        let mut k: Vec<InKey> = flows.iter().map(in_key).collect();
        SplitMix64(seed).shuffle(&mut k);
        k
    };
    let (crafted_keys, random_keys) = (keys(&crafted, 1), keys(&random, 2));
    let mut g = c.benchmark_group("conn_adversarial");
    g.throughput(Throughput::Elements(1));
    for (name, key, flows, lookups) in [
        ("secret_key/crafted", HASH_KEY, &crafted, &crafted_keys),
        ("secret_key/random", HASH_KEY, &random, &random_keys),
        ("leaked_key/crafted", [0; 16], &crafted, &crafted_keys),
    ] {
        let (t, p) = build(key, flows);
        eprintln!(
            "adversarial {name}: {} flows, {} buckets, mean probe {:.3} buckets, max {}",
            p.entries,
            p.n_buckets,
            p.mean(),
            p.max_buckets
        );
        bench_each(&mut g, &format!("ConnTable/{name}"), lookups, |k| t.lookup_in(k));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(StdDuration::from_secs(1))
        .measurement_time(StdDuration::from_secs(2));
    targets = conn_benches
}
criterion_main!(benches);
