//! Fuzz the packet parser, NAT rewrite and state derivation: `cargo +nightly fuzz run packet_parser`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipvs_proto::fuzzing::packet_parser(data));
