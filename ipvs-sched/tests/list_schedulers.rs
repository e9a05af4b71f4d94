//! The list-walking schedulers (rr, wrr, lc, wlc, sed, nq, fo, ovf, twos): hand-derived sequences from the
//! facts reference (§6.2–§6.10), the picks of a real Linux 6.1 kernel, and proptest invariants.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs_sched::fastlc::{FastMode, Metric, AUTO_TREE_MIN};
use ipvs_sched::ipvs_proto::{DestFlags, DestId, Instant, Protocol};
use ipvs_sched::replay::replay_with_mode;
use ipvs_sched::twos::SplitMix64;
use ipvs_sched::{
    lc, new_scheduler, nq, sed, wlc, CounterChange, DestEvent, DestState, DestView, SchedConfig, SchedFlow, Scheduler,
};
use proptest::prelude::*;

/// The names this file covers.
const NAMES: [&str; 9] = ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos"];

fn flow() -> SchedFlow {
    SchedFlow {
        protocol: Protocol::Tcp,
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), 40000),
        virt: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)), 80),
        fwmark: 0,
    }
}

/// A service as the engine keeps it: the scheduler and the dests' state, in kernel list order.
struct Service {
    sched: Box<dyn Scheduler>,
    dests: Vec<(DestId, SocketAddr, DestState)>,
    next_id: u32,
}

impl Service {
    /// `ipvsadm -A`: the scheduler bound to an empty list.
    fn new(name: &str) -> Self {
        Self::with(new_scheduler(name, &SchedConfig::default()).unwrap())
    }

    fn with(mut sched: Box<dyn Scheduler>) -> Self {
        sched.bind(&[]);
        Self { sched, dests: Vec::new(), next_id: 0 }
    }

    fn views(&self) -> Vec<DestView> {
        self.dests.iter().map(|(id, addr, s)| s.view(*id, *addr)).collect()
    }

    /// `ipvsadm -a`: a new dest at the head of the list.
    fn add(&mut self, last_octet: u8, weight: u32, u: u32, l: u32) {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, last_octet)), 8080);
        self.dests.insert(0, (DestId(self.next_id), addr, DestState::new(weight, u, l).unwrap()));
        self.next_id += 1;
        let v = self.views();
        self.sched.dests_changed(&v, DestEvent::Added { index: 0 });
    }

    /// Adds one dest per weight, in this order (so the list is the reverse).
    fn add_all(&mut self, weights: &[u32]) {
        for (i, &w) in weights.iter().enumerate() {
            self.add(i as u8 + 1, w, 0, 0);
        }
    }

    fn remove(&mut self, index: usize) {
        let (id, _, _) = self.dests.remove(index);
        let v = self.views();
        self.sched.dests_changed(&v, DestEvent::Removed { index, id });
    }

    fn set_weight(&mut self, index: usize, weight: u32) {
        self.dests[index].2.set_weight(weight);
        let v = self.views();
        self.sched.dests_changed(&v, DestEvent::Updated { index });
    }

    fn pick(&mut self) -> Option<usize> {
        let v = self.views();
        self.sched.schedule(Instant::ZERO, &flow(), &v)
    }

    /// Binds one active conn to `dests[i]` (the §7 OVERLOAD rule applies) and tells the scheduler.
    fn charge(&mut self, i: usize) {
        self.dests[i].2.bind_conn(true);
        let v = self.views();
        self.sched.counters_changed(&v, CounterChange { index: i });
    }

    fn uncharge(&mut self, i: usize) {
        self.dests[i].2.unbind_conn(true);
        let v = self.views();
        self.sched.counters_changed(&v, CounterChange { index: i });
    }

    /// Picks and charges `n` times; the picked dests' last address octets (0 = no pick).
    fn run(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| match self.pick() {
                Some(i) => {
                    self.charge(i);
                    self.octet(i)
                }
                None => 0,
            })
            .collect()
    }

    fn octet(&self, i: usize) -> u8 {
        match self.dests[i].1.ip() {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(_) => unreachable!(),
        }
    }
}

// ---- Hand-derived sequences (facts §6.2–§6.9) ----

#[test]
fn registry_builds_every_list_scheduler_by_name() {
    for name in NAMES {
        let s = new_scheduler(name, &SchedConfig::default()).unwrap();
        assert_eq!(s.name(), name);
    }
}

#[test]
fn wrr_facts_example_c2_b3_a4() {
    // Dests added C(2), B(3), A(4): the list is A, B, C (octets 3, 2, 1).
    let mut s = Service::new("wrr");
    s.add_all(&[2, 3, 4]);
    let (a, b, c) = (3, 2, 1);
    assert_eq!(s.run(3), [a, b, c], "the cw = 1 start-up round");
    for _ in 0..3 {
        assert_eq!(s.run(9), [a, a, b, a, b, c, a, b, c]);
    }
}

#[test]
fn wrr_skips_weight_0_and_stops_when_all_overloaded() {
    let mut s = Service::new("wrr");
    for (octet, w, u) in [(1, 2, 2), (2, 0, 0), (3, 1, 1)] {
        s.add(octet, w, u, 0);
    }
    // List: .3(w1, -x1), .2(w0), .1(w2, -x2). Round cw = 1: .3 (now full), .1; then cw = 2: .1 (full).
    assert_eq!(s.run(4), [3, 1, 1, 0]);
    assert_eq!(s.run(2), [0, 0]);
}

#[test]
fn rr_skips_weight_0_and_overloaded() {
    let mut s = Service::new("rr");
    for (octet, w, u) in [(1, 1, 0), (2, 0, 0), (3, 1, 2), (4, 1, 0)] {
        s.add(octet, w, u, 0);
    }
    // List: .4, .3 (-x 2), .2 (weight 0), .1.
    assert_eq!(s.run(8), [4, 3, 1, 4, 3, 1, 4, 1]);
    // All overloaded or quiescent: no pick.
    s.set_weight(0, 0);
    s.set_weight(3, 0);
    assert_eq!(s.run(2), [0, 0]);
}

#[test]
fn rr_delete_of_the_last_pick_continues_after_the_dest_before_it() {
    let mut s = Service::new("rr");
    s.add_all(&[1, 1, 1, 1]); // list .4 .3 .2 .1
    assert_eq!(s.run(2), [4, 3]);
    s.remove(1); // .3, the last pick: the position moves to .4
    assert_eq!(s.run(3), [2, 1, 4]);
    s.add(5, 1, 0, 0); // at the head; the position stays on .4
    assert_eq!(s.run(4), [2, 1, 5, 4]);
}

#[test]
fn lc_ties_go_to_the_head() {
    let mut s = Service::new("lc");
    s.add_all(&[1, 5, 1]); // list .3 .2(w5) .1: weight does not matter
    assert_eq!(s.run(6), [3, 2, 1, 3, 2, 1]);
}

#[test]
fn wlc_sequence_by_hand() {
    // Weights added 5, 1, 3, 2, 1 → list .5(1) .4(2) .3(3) .2(1) .1(5). Ratios active/weight, first wins ties.
    let mut s = Service::new("wlc");
    s.add_all(&[5, 1, 3, 2, 1]);
    assert_eq!(s.run(13), [5, 4, 3, 2, 1, 1, 3, 1, 4, 1, 3, 1, 5]);
}

#[test]
fn sed_and_nq_sequences_by_hand() {
    // Same list. sed (a+1)/w: idle dests compare 1/w, so .1 (w5) first: 1/5, then 2/5 < 1/3 …
    let mut s = Service::new("sed");
    s.add_all(&[5, 1, 3, 2, 1]);
    assert_eq!(s.run(8), [1, 3, 1, 4, 1, 3, 1, 5]);
    // nq: every idle dest first, in list order; then sed.
    let mut s = Service::new("nq");
    s.add_all(&[5, 1, 3, 2, 1]);
    assert_eq!(s.run(8), [5, 4, 3, 2, 1, 1, 1, 3]);
}

#[test]
fn fo_sticks_to_the_heaviest_first_on_ties() {
    let mut s = Service::new("fo");
    s.add(1, 3, 2, 0);
    s.add(2, 1, 0, 0);
    s.add(3, 3, 0, 0);
    // List .3(3) .2(1) .1(3, -x 2): .3 wins the tie for good.
    assert_eq!(s.run(4), [3, 3, 3, 3]);
    s.set_weight(0, 0);
    assert_eq!(s.run(3), [1, 1, 2], ".1 until its threshold, then .2");
}

#[test]
fn ovf_fills_the_heaviest_and_stops_when_all_are_full() {
    let mut s = Service::new("ovf");
    s.add_all(&[3, 3, 1, 0]); // list .4(0) .3(1) .2(3) .1(3)
                              // active ≤ weight admits weight + 1 conns: .2 ×4, .1 ×4, .3 ×2, then none.
    assert_eq!(s.run(12), [2, 2, 2, 2, 1, 1, 1, 1, 3, 3, 0, 0]);
    s.uncharge(2);
    assert_eq!(s.run(2), [2, 0]);
}

#[test]
fn twos_picks_only_eligible_dests_reproducibly() {
    let run = |seed| {
        let mut s = Service::with(new_scheduler("twos", &SchedConfig { seed, ..SchedConfig::default() }).unwrap());
        s.add(1, 1, 0, 0);
        s.add(2, 0, 0, 0);
        s.add(3, 4, 0, 0);
        s.add(4, 2, 3, 0);
        s.run(200)
    };
    let picks = run(9);
    assert_eq!(picks, run(9));
    assert!(picks.iter().all(|&o| o == 1 || o == 3 || o == 4), "{picks:?}");
    assert_eq!(picks.iter().filter(|&&o| o == 4).count(), 3, ".4 overloads at its threshold of 3");
    // Two choices by load per weight: the loads stay close to the 4:1 weight ratio of .3 and .1.
    let (n3, n1) = (picks.iter().filter(|&&o| o == 3).count(), picks.iter().filter(|&&o| o == 1).count());
    assert!((140..=170).contains(&n3) && (27..=50).contains(&n1), "{n3} {n1}");
}

// ---- The picks of a real Linux 6.1 kernel (shared testdata) ----

/// Replays `file` through [`replay_with_mode`] (rules as events in file order, then each row: asks our
/// scheduler, compares, charges the kernel's pick), with lc/wlc/sed/nq on the tree or the scan. Returns
/// (agreeing, total) rows of the services that use the list schedulers of [`NAMES`].
fn replay(file: &str, mode: FastMode) -> (usize, usize) {
    let path = format!("{}/../testdata/kernel-6.1/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let report = replay_with_mode(&text, &SchedConfig::default(), mode).unwrap_or_else(|e| panic!("{path}: {e}"));
    // The `-A` rules in file order, as `(selector, scheduler)`: the order of `report.per_service`.
    let services: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .map(|rule| {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let s = words.iter().position(|w| *w == "-s").expect("every -A names its scheduler");
            (words[..2].join(" "), words[s + 1].to_string())
        })
        .collect();
    assert_eq!(services.len(), report.per_service.len(), "{file}");
    let (mut agree, mut total) = (0, 0);
    for ((sel, name), (service, a, t)) in services.iter().zip(&report.per_service) {
        assert_eq!(sel, service, "{file}");
        if NAMES.contains(&name.as_str()) {
            agree += a;
            total += t;
            for d in report.disagreements.iter().filter(|d| d.service == *service) {
                eprintln!("{d}");
            }
        }
    }
    (agree, total)
}

#[test]
fn kernel_picks_agree() {
    for mode in [FastMode::Scan, FastMode::Tree] {
        let (agree, total) = replay("sched-picks.tsv", mode);
        assert_eq!((agree, total), (total, 8 * 40 - 23), "{mode:?}");
    }
}

#[test]
fn kernel_edge_picks_agree() {
    for mode in [FastMode::Scan, FastMode::Tree] {
        let (agree, total) = replay("sched-picks-edge.tsv", mode);
        assert!(total > 0);
        assert_eq!(agree, total, "{mode:?}");
    }
}

// ---- Large lists: the O(log n) index against the O(n) scan ----

#[test]
fn fast_least_conn_equals_scan_on_10k_dests() {
    let n = if cfg!(debug_assertions) { 600 } else { 10_000 };
    let mut rng = SplitMix64::new(0x5eed);
    for metric in [Metric::Lc, Metric::Wlc, Metric::Sed, Metric::Nq] {
        let sched: Box<dyn Scheduler> = match metric {
            Metric::Lc => Box::new(lc::LeastConnection::new()),
            Metric::Wlc => Box::new(wlc::WeightedLeastConnection::new()),
            Metric::Sed => Box::new(sed::ShortestExpectedDelay::new()),
            Metric::Nq => Box::new(nq::NeverQueue::new()),
        };
        let mut s = Service::with(sched);
        for i in 0..n {
            let w = [0, 1, 1, 2, 3, 5, 100][rng.below(7) as usize];
            let u = if rng.below(10) == 0 { 1 + rng.below(4) as u32 } else { 0 };
            s.add((i % 250) as u8, w, u, 0);
        }
        for step in 0..3 * n {
            let pick = s.pick();
            assert_eq!(pick, metric.scan(&s.views()), "{metric:?} step {step}");
            if let Some(p) = pick {
                s.charge(p);
            }
            // Now and then a conn ends somewhere.
            let j = rng.below(n as u64) as usize;
            if rng.below(3) == 0 && s.dests[j].2.active_conns > 0 {
                s.uncharge(j);
            }
        }
    }
    // The registry's schedulers switch to the tree on their own.
    let mut s = lc::LeastConnection::new();
    let d: Vec<DestView> = Service::new("lc").views();
    s.bind(&d);
    assert!(!s.uses_tree());
    let mut big = Service::with(Box::new(lc::LeastConnection::new()));
    big.add_all(&[1; AUTO_TREE_MIN]);
    assert_eq!(big.run(AUTO_TREE_MIN + 1)[AUTO_TREE_MIN], AUTO_TREE_MIN as u8);
}

// ---- Invariants ----

/// Weights in add order; thresholds; and an op sequence for the pick/charge loop.
fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![Just(0u32), 1u32..5, 1u32..20], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// wrr: after the cw = 1 start-up round, one round of `cw = mw … 1` picks each dest `weight / gcd` times,
    /// and `gcd` rounds pick each dest exactly `weight` times.
    #[test]
    fn wrr_round_respects_weights(ws in weights()) {
        let mut s = Service::new("wrr");
        s.add_all(&ws);
        let live: Vec<u32> = ws.iter().copied().filter(|&w| w > 0).collect();
        let startup = s.run(live.len());
        let want: Vec<u8> = (1..=ws.len() as u8).rev().filter(|&o| ws[o as usize - 1] > 0).collect();
        prop_assert_eq!(startup, want);
        let g = live.iter().copied().fold(0, gcd);
        let total: u32 = live.iter().sum();
        if let Some(g) = std::num::NonZeroU32::new(g) {
            let round = s.run((total / g) as usize);
            let all = {
                let mut v = round.clone();
                v.extend(s.run((total - total / g) as usize));
                v
            };
            for (i, &w) in ws.iter().enumerate() {
                let o = i as u8 + 1;
                prop_assert_eq!(round.iter().filter(|&&x| x == o).count() as u32, w / g, "round, dest {}", o);
                prop_assert_eq!(all.iter().filter(|&&x| x == o).count() as u32, w, "{} rounds, dest {}", g, o);
            }
        } else {
            prop_assert_eq!(s.run(3), [0, 0, 0]);
        }
    }

    /// Every list scheduler: never a weight-0 or OVERLOADED dest, and no pick only when no dest qualifies;
    /// through picks, conn ends, weight edits, adds and deletes.
    #[test]
    fn never_picks_quiescent_or_overloaded(
        name in prop::sample::select(NAMES.to_vec()),
        ws in weights(),
        thresholds in prop::collection::vec(prop_oneof![Just(0u32), 1u32..6], 8),
        ops in prop::collection::vec((0u8..10, any::<prop::sample::Index>(), 0u32..4), 1..150),
        seed in any::<u64>(),
    ) {
        let mut s = Service::with(new_scheduler(name, &SchedConfig { seed, ..SchedConfig::default() }).unwrap());
        for (i, &w) in ws.iter().enumerate() {
            s.add(i as u8 + 1, w, thresholds[i], 0);
        }
        for (op, at, v) in ops {
            if s.dests.is_empty() {
                s.add(99, 1, 0, 0);
            }
            let i = at.index(s.dests.len());
            match op {
                0..=5 => {
                    let views = s.views();
                    let pick = s.pick();
                    let qualifies = |d: &DestView| d.is_schedulable() && (name != "ovf" || d.active_conns <= d.weight);
                    match pick {
                        Some(p) => {
                            prop_assert!(views[p].is_schedulable(), "{} picked {:?}", name, views[p]);
                            prop_assert!(qualifies(&views[p]));
                            s.charge(p);
                        }
                        None => prop_assert!(!views.iter().any(qualifies), "{} found none in {:?}", name, views),
                    }
                }
                6 => {
                    if s.dests[i].2.active_conns > 0 {
                        s.uncharge(i);
                    }
                }
                7 => s.set_weight(i, v),
                8 => s.add(100 + i as u8, v, 0, 0),
                _ => s.remove(i),
            }
        }
    }

    /// The O(log n) index and the O(n) scan pick the same dest through random loads and changes, for lists
    /// long enough that `Auto` uses the tree.
    #[test]
    fn fast_equals_scan(
        ws in prop::collection::vec(prop_oneof![Just(0u32), 1u32..4, 1u32..1000], AUTO_TREE_MIN..120),
        over in prop::collection::vec(prop::bool::weighted(0.15), 120),
        ops in prop::collection::vec((0u8..4, any::<prop::sample::Index>(), 1u32..4), 1..200),
    ) {
        for metric in [Metric::Lc, Metric::Wlc, Metric::Sed, Metric::Nq] {
            let sched: Box<dyn Scheduler> = match metric {
                Metric::Lc => Box::new(lc::LeastConnection::new()),
                Metric::Wlc => Box::new(wlc::WeightedLeastConnection::new()),
                Metric::Sed => Box::new(sed::ShortestExpectedDelay::new()),
                Metric::Nq => Box::new(nq::NeverQueue::new()),
            };
            let mut s = Service::with(sched);
            for (i, &w) in ws.iter().enumerate() {
                s.add(i as u8, w, 0, 0);
                if over[i] {
                    s.dests[0].2.flags.set(DestFlags::OVERLOAD, true);
                    let v = s.views();
                    s.sched.counters_changed(&v, CounterChange { index: 0 });
                }
            }
            for &(op, at, v) in &ops {
                let i = at.index(s.dests.len());
                match op {
                    0 | 1 => {
                        let pick = s.pick();
                        prop_assert_eq!(pick, metric.scan(&s.views()), "{:?}", metric);
                        if let Some(p) = pick {
                            s.charge(p);
                        }
                    }
                    2 => {
                        // An inactive conn (counts 1/256 in lc/wlc, nothing in sed/nq).
                        for _ in 0..v {
                            s.dests[i].2.bind_conn(false);
                        }
                        let views = s.views();
                        s.sched.counters_changed(&views, CounterChange { index: i });
                    }
                    _ => {
                        if s.dests[i].2.active_conns > 0 {
                            s.uncharge(i);
                        }
                    }
                }
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
