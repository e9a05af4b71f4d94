//! Memory per connection at 2^20 conns, measured by a counting global allocator (not computed from
//! `size_of`): our tables and the peers of `benches/conn.rs`, IPv4 TCP NAT conns (each found by both its "in"
//! and its "out" key) and IPv6 separately.
//!
//! `cargo bench -p ipvs-benches --bench conn_memory`
//!
//! Prints a Markdown table. Each structure is built alone: the bytes it holds are the allocator's live bytes
//! after building it minus those before (the flows are generated on the fly, not kept). For our tables the
//! allocations are split by alignment: the index buckets and the hot slab lines are the only 64-byte-aligned
//! allocations, so "hot" is the 64-byte-aligned bytes (what a lookup reads) and "cold" everything else (the
//! cold slab, the timer wheel, the shard array). Conns are inserted over virtual time (1024 per ms, timeout
//! 900 s, `handle_timeout` every ms, so the wheel holds what it holds in service).
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs the same code on 2^12 conns as a smoke test.

// A bench binary: its items need no docs.
#![allow(missing_docs)]

#[path = "common/conn.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use ipvs_conn::ipvs_proto::{Duration, Instant};
use ipvs_conn::{ConnTable, ConnTableConfig, LocalConnTable, NewConn, COLD_SIZE, HOT_SIZE_V4, HOT_SIZE_V6};

use common::{conn4, conn6, in_key, out_key, Sip13, V4Key, V4Val, V6Key, V6Val, HASH_KEY};

/// Live bytes of every allocation.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Live bytes of the allocations aligned to 64 bytes or more.
static LIVE_ALIGNED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes.
struct Counting;

fn count(layout: Layout, add: bool) {
    let n = layout.size();
    let op = |c: &AtomicUsize| if add { c.fetch_add(n, Ordering::Relaxed) } else { c.fetch_sub(n, Ordering::Relaxed) };
    op(&LIVE);
    if layout.align() >= 64 {
        op(&LIVE_ALIGNED);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged (so `System`'s guarantees are
// ours) and only updates counters besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout, true);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout, true);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator (that is, `System`) returned, with its layout.
        unsafe { System.dealloc(ptr, layout) };
        count(layout, false);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract, which we pass on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(layout, false);
            // `new_size` with the old alignment is a valid layout: `realloc`'s contract requires it.
            count(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout), true);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Copy)]
struct Snap {
    live: usize,
    aligned: usize,
}

fn snap() -> Snap {
    Snap { live: LIVE.load(Ordering::Relaxed), aligned: LIVE_ALIGNED.load(Ordering::Relaxed) }
}

/// One table row.
struct Row {
    what: String,
    total: usize,
    hot: Option<usize>,
    n: usize,
    note: String,
}

fn per(bytes: usize, n: usize) -> f64 {
    bytes as f64 / n as f64
}

/// Our table, filled with `n` conns of `make` over virtual time; returns the row.
fn ours(what: &str, n: usize, capacity: usize, local: bool, make: fn(u64) -> NewConn) -> Row {
    let mut cfg = ConnTableConfig::new(capacity, HASH_KEY);
    cfg.capacity = capacity;
    let start = Instant::from_secs(1);
    let s0 = snap();
    let mut expired = Vec::new();
    let (s1, s2, stats, probe) = if local {
        let mut t = LocalConnTable::new(cfg, start).expect("valid config");
        let s1 = snap();
        let mut now = start;
        for i in 0..n as u64 {
            if i % 1024 == 0 {
                now += Duration::from_millis(1);
                t.handle_timeout(now, &mut expired);
            }
            t.insert(now, make(i)).expect("room");
        }
        let s2 = snap();
        check_both_directions(n, make, |k| t.lookup_in(k).map(|r| r.0), |k| t.lookup_out(k).map(|r| r.0));
        (s1, s2, t.memory_stats(), t.probe_stats())
    } else {
        let t = ConnTable::new(cfg, start).expect("valid config");
        let s1 = snap();
        let mut now = start;
        for i in 0..n as u64 {
            if i % 1024 == 0 {
                now += Duration::from_millis(1);
                t.handle_timeout(now, &mut expired);
            }
            t.insert(now, make(i)).expect("room");
        }
        let s2 = snap();
        check_both_directions(n, make, |k| t.lookup_in(k).map(|r| r.0), |k| t.lookup_out(k).map(|r| r.0));
        (s1, s2, t.memory_stats(), t.probe_stats())
    };
    assert!(expired.is_empty(), "nothing expires within 900 s");
    let total = s2.live - s0.live;
    // `new` allocates the index buckets and the (128-byte aligned) shard array; inserts allocate the slabs.
    let at_new = s1.aligned - s0.aligned;
    let index = stats.index_bytes;
    assert!(at_new >= index && at_new - index < 1 << 16, "index {index} of {at_new} aligned bytes");
    let hot = s2.aligned - s0.aligned;
    let hot_size = if what.contains("IPv6") { HOT_SIZE_V6 } else { HOT_SIZE_V4 };
    let slots = (s2.aligned - s1.aligned) / hot_size;
    let cold_slab = slots * COLD_SIZE;
    let wheel = total - hot - cold_slab;
    let note = format!(
        "capacity {capacity}; index {:.1} B/conn, pair load {:.2} ({} buckets × 10 pairs), mean probe {:.3} \
         buckets; shard array {} B; hot slab {:.1} B/conn ({hot_size} B × {slots} slots, fill {:.3}); cold: slab {:.1} B/conn \
         ({COLD_SIZE} B/slot), wheel + rest {:.1} B/conn ({} wheel items)",
        per(index, n),
        n as f64 / (probe.n_buckets * 10) as f64,
        probe.n_buckets,
        probe.mean(),
        at_new - index,
        per(slots * hot_size, n),
        n as f64 / slots as f64,
        per(cold_slab, n),
        per(wheel, n),
        stats.wheel_items,
    );
    Row { what: what.to_owned(), total, hot: Some(hot), n, note }
}

/// Every 64th conn is found by its "in" key and by its "out" key, as the same entry.
fn check_both_directions<I: PartialEq + std::fmt::Debug>(
    n: usize,
    make: fn(u64) -> NewConn,
    lookup_in: impl Fn(&ipvs_conn::InKey) -> Option<I>,
    lookup_out: impl Fn(&ipvs_conn::OutKey) -> Option<I>,
) {
    for i in (0..n as u64).step_by(64) {
        let c = make(i);
        let a = lookup_in(&in_key(&c));
        assert!(a.is_some(), "flow {i} in");
        assert_eq!(a, lookup_out(&out_key(&c)), "flow {i} out");
    }
}

/// Bytes held by what `build` returns (kept alive until measured).
fn measure<T>(build: impl FnOnce() -> T) -> (usize, T) {
    let s0 = snap();
    let t = build();
    (snap().live - s0.live, t)
}

fn hashbrown_rows<K, V, KO>(
    fam: &str,
    n: usize,
    make: fn(u64) -> NewConn,
    key: fn(&NewConn) -> K,
    val: fn(&NewConn) -> V,
    out: fn(&NewConn) -> KO,
) -> Vec<Row>
where
    K: std::hash::Hash + Eq + Copy,
    KO: std::hash::Hash + Eq,
{
    let mut rows = Vec::new();
    let (in_bytes, m) = measure(|| {
        let mut m = hashbrown::HashMap::with_hasher(Sip13::default());
        for i in 0..n as u64 {
            let c = make(i);
            m.insert(key(&c), val(&c));
        }
        m
    });
    let buckets = (m.capacity() * 8 / 7).next_power_of_two();
    let load = format!("load {:.2} ({} items in {buckets} buckets)", m.len() as f64 / buckets as f64, m.len());
    let (out_bytes, m_out) = measure(|| {
        let mut o = hashbrown::HashMap::with_hasher(Sip13::default());
        for i in 0..n as u64 {
            let c = make(i);
            o.insert(out(&c), key(&c));
        }
        o
    });
    rows.push(Row {
        what: format!("hashbrown::HashMap, {fam}, \"in\" key only"),
        total: in_bytes,
        hot: None,
        n,
        note: format!("{load}; `(K, V)` = {} B", core::mem::size_of::<(K, V)>()),
    });
    rows.push(Row {
        what: format!("hashbrown::HashMap, {fam}, both directions"),
        total: in_bytes + out_bytes,
        hot: None,
        n,
        note: "plus a second map from the \"out\" key to the \"in\" key".to_owned(),
    });
    black_box((m, m_out));
    let (dash_bytes, d) = measure(|| {
        let d = DashMap::with_hasher(Sip13::default());
        for i in 0..n as u64 {
            let c = make(i);
            d.insert(key(&c), val(&c));
        }
        d
    });
    let (dash_out, d_out) = measure(|| {
        let d = DashMap::with_hasher(Sip13::default());
        for i in 0..n as u64 {
            let c = make(i);
            d.insert(out(&c), key(&c));
        }
        d
    });
    rows.push(Row {
        what: format!("dashmap::DashMap, {fam}, \"in\" key only"),
        total: dash_bytes,
        hot: None,
        n,
        note: "default shard count".to_owned(),
    });
    rows.push(Row {
        what: format!("dashmap::DashMap, {fam}, both directions"),
        total: dash_bytes + dash_out,
        hot: None,
        n,
        note: "plus a second map from the \"out\" key to the \"in\" key".to_owned(),
    });
    black_box((d, d_out));
    rows
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 1 << 20 } else { 1 << 12 };
    let mut rows = vec![
        ours("ConnTable, IPv4 NAT, capacity = conns", n, n, false, conn4),
        ours("ConnTable, IPv4 NAT, capacity = 2 × conns", n, 2 * n, false, conn4),
        ours("LocalConnTable, IPv4 NAT, capacity = conns", n, n, true, conn4),
        ours("ConnTable, IPv6 NAT, capacity = conns", n, n, false, conn6),
    ];
    rows.extend(hashbrown_rows("IPv4", n, conn4, V4Key::of, V4Val::of, V4Key::out_of));
    rows.extend(hashbrown_rows("IPv6", n, conn6, V6Key::of, V6Val::of, V6Key::out_of));
    println!("{n} conns each; bytes measured by the counting allocator.\n");
    println!("| structure | bytes/conn | hot (lookup) B/conn | cold B/conn | notes |");
    println!("| --- | --- | --- | --- | --- |");
    for r in &rows {
        let (hot, cold) = match r.hot {
            Some(h) => (format!("{:.1}", per(h, r.n)), format!("{:.1}", per(r.total - h, r.n))),
            None => ("—".to_owned(), "—".to_owned()),
        };
        println!("| {} | {:.1} | {hot} | {cold} | {} |", r.what, per(r.total, r.n), r.note);
    }
}
