//! The kernel's protocol-state recordings (testdata/kernel-6.1/tcp-states.* and sctp-states-nat.*) replayed
//! through a whole engine as real packets, in-process, exactly as `examples/replay-states.rs` does: every line
//! must equal the kernel's.

use std::fs;

use ipvs_core::replay_states::{replay, ReplayOptions};

const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/kernel-6.1/");

/// Replays `name.paths` and compares with `name.expected`; prints every difference and the count.
fn check(name: &str, opts: ReplayOptions) {
    let paths = fs::read_to_string(format!("{DATA_DIR}{name}.paths")).expect("paths file");
    let expected = fs::read_to_string(format!("{DATA_DIR}{name}.expected")).expect("expected file");
    let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let got = replay(&paths, opts).expect("replay");
    let mut differ = 0;
    for (i, want) in expected.iter().enumerate() {
        let line = got.get(i).map_or("<missing>", String::as_str);
        if line != *want {
            differ += 1;
            println!("{name}: line {}: expected {want:?}, got {line:?}", i + 1);
        }
    }
    println!("{name}: {}/{} lines equal ({} produced)", expected.len() - differ, expected.len(), got.len());
    assert_eq!(got.len(), expected.len(), "{name}: line count");
    assert_eq!(differ, 0, "{name}: {differ} lines differ");
}

#[test]
fn tcp_states() {
    check("tcp-states", ReplayOptions::default());
}

#[test]
fn sctp_states_nat() {
    check("sctp-states-nat", ReplayOptions { sctp: true, ..ReplayOptions::default() });
}
