//! Fuzz the sync decoder, re-encoder and JSON lines: `cargo +nightly fuzz run sync_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipvs_sync::fuzzing::sync_decoder(data));
