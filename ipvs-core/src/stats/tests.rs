//! Estimator sequences hand-computed from the formulas of facts §10.2 (`avg = ⌊(3·avg + r) / 4⌋`).

use super::*;

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// Counter values after `periods` periods of `pkts` inbound packets of `len` bytes each.
fn inbound(periods: u64, pkts: u64, len: u64) -> CounterValues {
    CounterValues { inpkts: periods * pkts, inbytes: periods * pkts * len, ..CounterValues::ZERO }
}

#[test]
fn ewma_is_the_floor_of_three_quarters_old_plus_one_quarter_new() {
    let cases: [(u64, u64); 10] =
        [(0, 0), (0, 3), (0, 4), (1, 0), (3, 0), (4, 0), (5, 0), (1_023_997, 1_024_000), (1_024_000, 0), (7, 1 << 40)];
    for (avg, r) in cases {
        let mut a = avg;
        ewma(&mut a, r);
        let want = ((3 * u128::from(avg) + u128::from(r)) / 4) as u64;
        assert_eq!(a, want, "avg {avg:#b} r {r:#b}");
    }
}

#[test]
fn reported_rounding_boundaries() {
    // (avg + 0x1FF) >> 10: exactly half rounds down, anything above rounds up.
    let counts = [(0, 0), (512, 0), (513, 1), (1536, 1), (1537, 2)];
    for (avg, shown) in counts {
        let e = RateEstimator { cps: avg, inpps: avg, outpps: avg, ..RateEstimator::new(at(0), &CounterValues::ZERO) };
        let r = e.rates();
        assert_eq!((r.cps, r.inpps, r.outpps), (shown, shown, shown), "avg {avg}");
    }
    // (avg + 0xF) >> 5.
    let bytes = [(0, 0), (16, 0), (17, 1), (48, 1), (49, 2)];
    for (avg, shown) in bytes {
        let e = RateEstimator { inbps: avg, outbps: avg, ..RateEstimator::new(at(0), &CounterValues::ZERO) };
        assert_eq!((e.rates().inbps, e.rates().outbps), (shown, shown), "avg {avg}");
    }
}

#[test]
fn first_samples_of_1000_packets_per_second() {
    // 2000 packets of 1500 bytes per 2 s: r = 2000 << 9 = 1 024 000, bytes r = 3 000 000 << 4 = 48 000 000.
    let mut e = RateEstimator::new(at(0), &CounterValues::ZERO);
    let mut shown = Vec::new();
    let mut raw = Vec::new();
    for n in 1..=3 {
        assert_eq!(e.tick(at(n * 2000), &inbound(n, 2000, 1500)), 1);
        raw.push(e.inpps);
        shown.push((e.rates().inpps, e.rates().inbps));
    }
    // ⌊r/4⌋ = 256 000; ⌊(3·256 000 + r)/4⌋ = 448 000; ⌊(3·448 000 + r)/4⌋ = 592 000.
    assert_eq!(raw, [256_000, 448_000, 592_000]);
    // 256 511 >> 10 = 250, 448 511 >> 10 = 437, 592 511 >> 10 = 578; bytes 12e6/32, 21e6/32, 27.75e6/32 (+15).
    assert_eq!(shown, [(250, 375_000), (437, 656_250), (578, 867_187)]);
    assert_eq!(e.rates().outpps, 0);
    assert_eq!(e.rates().cps, 0);
}

#[test]
fn constant_rate_converges_three_short_of_the_sample() {
    let mut e = RateEstimator::new(at(0), &CounterValues::ZERO);
    for n in 1..=26 {
        e.tick(at(n * 2000), &inbound(n, 2000, 1500));
    }
    // Step 26: avg 1 023 421 shows 999; step 27: 1 023 565 shows 1000.
    assert_eq!((e.inpps, e.rates().inpps), (1_023_421, 999));
    e.tick(at(27 * 2000), &inbound(27, 2000, 1500));
    assert_eq!((e.inpps, e.rates().inpps), (1_023_565, 1000));
    for n in 28..=46 {
        e.tick(at(n * 2000), &inbound(n, 2000, 1500));
    }
    // The gap d = r − avg follows d' = ⌈3d/4⌉, which stops at 3.
    assert_eq!(e.inpps, 1_024_000 - 3);
    // The byte average is larger and needs more samples to get there (see below).
    assert!(e.inbps < 48_000_000 - 3);
    for n in 47..=100 {
        e.tick(at(n * 2000), &inbound(n, 2000, 1500));
    }
    assert_eq!((e.inpps, e.inbps), (1_024_000 - 3, 48_000_000 - 3), "a fixed point");
    assert_eq!((e.rates().inpps, e.rates().inbps), (1000, 1_500_000));
}

#[test]
fn one_conn_per_second_shows_from_the_third_sample() {
    let mut e = RateEstimator::new(at(0), &CounterValues::ZERO);
    let mut shown = Vec::new();
    for n in 1..=4 {
        e.tick(at(n * 2000), &CounterValues { conns: 2 * n, ..CounterValues::ZERO });
        shown.push((e.cps, e.rates().cps));
    }
    // r = 2 << 9 = 1024: 256, 448, 592, 700 — below 513 shows 0.
    assert_eq!(shown, [(256, 0), (448, 0), (592, 1), (700, 1)]);
}

#[test]
fn decay_after_traffic_stops() {
    let mut e = RateEstimator::new(at(0), &CounterValues::ZERO);
    e.inpps = 1_023_997;
    let mut shown = Vec::new();
    let mut n = 0;
    while e.inpps != 0 {
        n += 1;
        e.tick(at(n * 2000), &CounterValues::ZERO);
        if n <= 8 {
            shown.push(e.rates().inpps);
        }
    }
    // avg − ⌈avg/4⌉: 767 997, 575 997, 431 997, 323 997, 242 997, …
    assert_eq!(shown, [750, 562, 422, 316, 237, 178, 133, 100]);
    assert_eq!(n, 46, "reaches exactly 0 after 46 idle samples");
}

#[test]
fn late_tick_puts_the_traffic_in_the_first_missed_sample() {
    let traffic = inbound(1, 2000, 100);
    let mut steady = RateEstimator::new(at(0), &CounterValues::ZERO);
    steady.tick(at(2000), &traffic);
    steady.tick(at(4000), &traffic);
    steady.tick(at(6000), &traffic);
    let mut late = RateEstimator::new(at(0), &CounterValues::ZERO);
    assert_eq!(late.tick(at(6500), &traffic), 3);
    assert_eq!(late.rates(), steady.rates());
    assert_eq!(late.inpps, steady.inpps);
    // ⌊r/4⌋, then two idle decays: 256 000 → 192 000 → 144 000.
    assert_eq!(late.inpps, 144_000);
    assert_eq!(late.next_sample(), at(8000));
}

#[test]
fn early_and_backward_ticks_do_nothing() {
    let mut e = RateEstimator::new(at(2500), &CounterValues::ZERO);
    assert_eq!(e.next_sample(), at(4000));
    assert_eq!(e.tick(at(3999), &inbound(1, 10, 10)), 0);
    assert_eq!(e.tick(at(1000), &inbound(1, 10, 10)), 0);
    assert_eq!(e.rates(), Rates::default());
    // The counted traffic is not lost: the next real sample sees it.
    assert_eq!(e.tick(at(4000), &inbound(1, 2000, 10)), 1);
    assert_eq!(e.inpps, 256_000);
}

#[test]
fn sample_instants_are_a_shared_two_second_grid() {
    assert_eq!(RateEstimator::next_sample_after(at(0)), at(2000));
    assert_eq!(RateEstimator::next_sample_after(at(1999)), at(2000));
    assert_eq!(RateEstimator::next_sample_after(at(2000)), at(4000));
    assert_eq!(RateEstimator::next_sample_after(at(u64::MAX)), at(u64::MAX));
    assert_eq!(RateEstimator::PERIOD, Duration::from_secs(2));
}

#[test]
fn partial_first_period_counts_as_a_whole_one() {
    // Created at 1.5 s; 1000 packets before the 2 s sample are rated as 1000 per 2 s.
    let mut e = RateEstimator::new(at(1500), &inbound(1, 5, 1));
    assert_eq!(e.tick(at(2000), &inbound(1, 1005, 1)), 1);
    assert_eq!((e.inpps, e.rates().inpps), (128_000, 125));
}

#[test]
fn long_gap_terminates_with_zero_rates() {
    let mut e = RateEstimator::new(at(0), &CounterValues::ZERO);
    e.tick(at(2000), &inbound(1, u64::from(u32::MAX), 1500));
    let steps = e.tick(at(u64::MAX), &inbound(1, u64::from(u32::MAX), 1500));
    assert_eq!(steps, u64::MAX / 2000 - 1);
    assert_eq!(e.rates(), Rates::default());
}

#[test]
fn counter_wrap_gives_the_true_increase() {
    let before = CounterValues { inpkts: u64::MAX - 999, ..CounterValues::ZERO };
    let after = CounterValues { inpkts: 1000, ..CounterValues::ZERO };
    assert_eq!(after.since(&before).inpkts, 2000);
    let mut e = RateEstimator::new(at(0), &before);
    e.tick(at(2000), &after);
    assert_eq!(e.inpps, 256_000);
}

#[test]
fn counters_from_many_threads() {
    let c = Counters::new();
    let n = if cfg!(miri) { 100 } else { 10_000 };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..n {
                    c.add_in(100);
                    c.add_out(40);
                    if i % 10 == 0 {
                        c.add_conn();
                    }
                }
            });
        }
    });
    let v = c.load();
    assert_eq!(
        v,
        CounterValues { conns: 4 * n / 10, inpkts: 4 * n, outpkts: 4 * n, inbytes: 400 * n, outbytes: 160 * n }
    );
}

#[test]
fn local_tally_flushes_into_counters() {
    let mut local = CounterValues::ZERO;
    local.add_conn();
    local.add_in(60);
    local.add_in(1500);
    local.add_out(52);
    let c = Counters::new();
    c.add_in(1);
    c.add(&local);
    assert_eq!(c.load(), CounterValues { conns: 1, inpkts: 3, outpkts: 1, inbytes: 1561, outbytes: 52 });
    assert_eq!(core::mem::align_of::<Counters>(), 64);
}

#[test]
fn cell_zero_point_and_rate_reset() {
    let cell = StatsCell::new(at(0));
    for _ in 0..2000 {
        cell.counters().add_in(100);
    }
    cell.counters().add_conn();
    assert_eq!(cell.tick(at(2000)), 1);
    let s = cell.snapshot();
    assert_eq!(s.counters, CounterValues { conns: 1, inpkts: 2000, inbytes: 200_000, ..CounterValues::ZERO });
    assert_eq!((s.rates.inpps, s.rates.inbps), (250, 25_000));

    cell.zero();
    assert_eq!(cell.snapshot(), Stats::default(), "counters and rates read 0 after -Z");
    assert_eq!(cell.counters().load().inpkts, 2000, "raw counters keep their value");

    for _ in 0..20 {
        cell.counters().add_out(50);
    }
    let s = cell.snapshot();
    assert_eq!(s.counters, CounterValues { outpkts: 20, outbytes: 1000, ..CounterValues::ZERO });
    cell.tick(at(4000));
    let r = cell.snapshot().rates;
    // Only the traffic after -Z is sampled: 20 packets → r = 10 240 → avg 2560 → (2560+511)>>10 = 2.
    assert_eq!(r, Rates { outpps: 2, outbps: (((1000 << 4) / 4) + 15) >> 5, ..Rates::default() });
    assert_eq!(r.outbps, 125);
}
