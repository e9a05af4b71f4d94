//! Replays the committed seed corpus of every fuzz target (`fuzz/corpus/<target>/`) through the same
//! functions the targets call, so CI exercises them on stable without cargo-fuzz.

use std::fs;
use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())) {
        let path = entry.expect("readable corpus entry").path();
        let data = fs::read(&path).expect("readable seed");
        f(&data);
        // Every prefix too: truncation is the commonest malformation.
        for len in 0..data.len() {
            f(&data[..len]);
        }
        n += 1;
    }
    n
}

#[test]
fn packet_parser_corpus_replays_without_panics() {
    let n = replay("packet_parser", ipvs_proto::fuzzing::packet_parser);
    println!("packet_parser corpus: {n} seeds replayed");
    assert!(n >= 15, "the committed corpus has at least the 15 hand-made seeds, found {n}");
}

#[test]
fn packet_parser_corpus_holds_valid_packets() {
    // The seeds are there to reach deep paths: most must be packets the parser accepts.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/packet_parser");
    let mut valid = 0;
    for entry in fs::read_dir(&dir).expect("corpus dir") {
        let data = fs::read(entry.expect("entry").path()).expect("seed");
        if ipvs_proto::wire::ip::parse(&data).is_ok() {
            valid += 1;
        }
    }
    assert!(valid >= 11, "only {valid} seeds parse");
}
