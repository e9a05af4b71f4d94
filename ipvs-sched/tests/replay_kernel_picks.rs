//! Every pick a real Linux 6.1 kernel made (testdata/kernel-6.1, see its README) must be ours too.

use ipvs_sched::replay::{replay, ReplayReport};

const PICKS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/kernel-6.1/sched-picks.tsv"));
const EDGE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/kernel-6.1/sched-picks-edge.tsv"));

fn run(name: &str, text: &str) -> ReplayReport {
    let report = replay(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (service, agree, total) in &report.per_service {
        println!("{name}: {service}: {agree}/{total}");
    }
    for line in report.lines() {
        println!("{name}: {line}");
    }
    report
}

#[test]
fn sched_picks_all_agree() {
    let r = run("sched-picks.tsv", PICKS);
    // 15 services × 40 flows, less the 23 flows ovf refused.
    assert_eq!(r.total, 14 * 40 + 17);
    assert!(r.all_agree(), "{:#?}", r.disagreements);
}

#[test]
fn sched_picks_edge_all_agree() {
    let r = run("sched-picks-edge.tsv", EDGE);
    assert_eq!(r.total, 10 * 40 + 14);
    assert!(r.all_agree(), "{:#?}", r.disagreements);
}

#[test]
fn every_replayed_service_has_rows() {
    for (name, text) in [("sched-picks.tsv", PICKS), ("sched-picks-edge.tsv", EDGE)] {
        let r = replay(text).unwrap();
        for (service, _, total) in &r.per_service {
            assert!(*total > 0, "{name}: {service} has no rows");
        }
    }
}
