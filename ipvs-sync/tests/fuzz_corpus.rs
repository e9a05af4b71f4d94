//! Replays the committed seed corpus of the `sync_decoder` fuzz target (`fuzz/corpus/sync_decoder/`)
//! through the function the target calls, so CI exercises it on stable without cargo-fuzz.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ipvs_sync::{decode_message, DecodeError};

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sync_decoder");
    let mut seeds: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("readable corpus entry").path();
            let data = fs::read(&path).expect("readable seed");
            (path, data)
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn sync_decoder_corpus_replays_without_panics() {
    let mut n_inputs = 0;
    let seeds = corpus();
    for (_, data) in &seeds {
        ipvs_sync::fuzzing::sync_decoder(data);
        // Every prefix too, with the size field fixed up so the records are reached.
        for len in 0..data.len() {
            ipvs_sync::fuzzing::sync_decoder(&data[..len]);
            if len >= 4 {
                let mut m = data[..len].to_vec();
                m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                ipvs_sync::fuzzing::sync_decoder(&m);
                n_inputs += 1;
            }
            n_inputs += 1;
        }
        n_inputs += 1;
    }
    println!("sync_decoder corpus: {} seeds, {n_inputs} inputs (seeds and prefixes) replayed", seeds.len());
    assert!(seeds.len() >= 27, "the committed corpus has the 27 hand-made seeds, found {}", seeds.len());
}

#[test]
fn sync_decoder_corpus_reaches_every_rule() {
    // The seeds are there to reach every path: together they must hit every receiver rule.
    let mut seen = BTreeSet::new();
    let mut n_records = 0;
    for (_, data) in corpus() {
        match decode_message(&data) {
            Err(e) => {
                seen.insert(e.name());
            }
            Ok(d) => {
                for r in d.records {
                    match r {
                        Ok(_) => n_records += 1,
                        Err(e) => {
                            seen.insert(e.error.name());
                        }
                    }
                }
            }
        }
    }
    let missing: Vec<_> = DecodeError::ALL
        .iter()
        .map(|e| e.name())
        .filter(|n| !seen.contains(n) && *n != "wrong_syncid") // a filter, not a decode outcome
        .collect();
    println!("sync_decoder corpus: {n_records} valid records, {} distinct errors", seen.len());
    assert!(missing.is_empty(), "no seed reaches {missing:?}");
    assert!(n_records >= 34 + 40, "the kernel capture and the full message are in the corpus");
}
