//! The logic behind the `sync-decode` and `sync-encode` examples, kept in the library so tests run it
//! in-process: a classic-pcap reader and writer ([`pcap`]), the JSON-lines record format ([`json`]) and
//! the two conversions ([`decode_pcap`], [`decode_hex_lines`], [`encode_jsonl`]).
//!
//! Support code for tools and tests, `no_std` + `alloc` like the rest of the crate; not a stable API.

use alloc::string::String;
use alloc::vec::Vec;

use crate::decode::{parse_header, Records};
use crate::encode::MessageWriter;
use crate::record::Version;

pub mod json;
pub mod pcap;
pub mod tshark;

/// The sync ports `sync-decode` looks at by default: 8848 and the 63 ports after it (`sync_ports` ≤ 64).
pub const DEFAULT_PORTS: core::ops::RangeInclusive<u16> = 8848..=8911;

/// Decodes one message into `sync-decode` lines (appended to `out`): one JSON object per accepted record,
/// and one error object where the kernel would skip a record (decoding goes on with the next record) or
/// drop the rest (or all) of the message (decoding stops). `frame` is the 1-based frame or line number.
pub fn decode_to_lines(frame: usize, message: &[u8], out: &mut Vec<String>) {
    let header = match parse_header(message) {
        Ok(h) => h,
        Err(e) => {
            out.push(json::error_line(frame, 0, e.name()));
            return;
        }
    };
    for r in Records::new(message, header) {
        match r {
            Ok(conn) => out.push(json::record_line(frame, header.version, header.syncid, &conn)),
            Err(e) => out.push(json::error_line(frame, e.index + 1, e.error.name())),
        }
    }
}

/// `sync-decode FILE`: every sync message in a classic pcap, as JSON lines.
///
/// Messages are the UDP payloads to `port`, or to [`DEFAULT_PORTS`] when `port` is `None`.
///
/// # Errors
/// When the file is not a classic pcap.
pub fn decode_pcap(file: &[u8], port: Option<u16>) -> Result<Vec<String>, pcap::PcapError> {
    let mut out = Vec::new();
    for d in pcap::udp_payloads(file)? {
        let wanted = match port {
            Some(p) => d.dst_port == p,
            None => DEFAULT_PORTS.contains(&d.dst_port),
        };
        if wanted {
            decode_to_lines(d.frame, d.payload, &mut out);
        }
    }
    Ok(out)
}

/// `sync-decode --hex FILE`: one message per line as hex (blank lines skipped; `frame` = line number).
/// A line that is not hex gives `{"frame": N, "record": 0, "error": "bad_hex"}`.
pub fn decode_hex_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match json::hex_decode(line) {
            Some(bytes) => decode_to_lines(i + 1, &bytes, &mut out),
            None => out.push(json::error_line(i + 1, 0, "bad_hex")),
        }
    }
    out
}

/// Why `sync-encode` stopped: the 1-based input line and what was wrong with it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct EncodeLineError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

impl core::fmt::Display for EncodeLineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl core::error::Error for EncodeLineError {}

/// `sync-encode FILE.jsonl`: packs the records of `sync-decode` lines (error lines and blank lines
/// ignored) into messages as the master would and returns their bytes.
///
/// A new message starts when `frame`, `version` or `syncid` changes, or when the next record would take
/// the message past `maxlen` bytes or 255 records ([`MessageWriter::try_push`]).
///
/// # Errors
/// The first line that is not a valid record, or a record that cannot be encoded in its version.
pub fn encode_jsonl(text: &str, maxlen: usize) -> Result<Vec<Vec<u8>>, EncodeLineError> {
    let mut messages = Vec::new();
    let mut current: Option<(usize, MessageWriter)> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| EncodeLineError { line: i + 1, reason };
        if line.trim().is_empty() {
            continue;
        }
        let Some(rec) = json::parse_record_line(line).map_err(err)? else { continue };
        if let Some((frame, w)) = &current {
            if *frame != rec.frame || w.version() != rec.version || w.syncid() != rec.syncid {
                let (_, w) = current.take().expect("checked Some above");
                messages.push(w.finish());
            }
        }
        let (_, w) = current.get_or_insert_with(|| (rec.frame, MessageWriter::begin(rec.version, rec.syncid, maxlen)));
        if !w.try_push(&rec.conn) {
            if w.is_empty() {
                let why = crate::encode::validate(&rec.conn, rec.version).err();
                return Err(err(alloc::format!("record cannot be encoded: {why:?}")));
            }
            let full = core::mem::replace(w, MessageWriter::begin(rec.version, rec.syncid, maxlen));
            messages.push(full.finish());
            if !w.try_push(&rec.conn) {
                let why = crate::encode::validate(&rec.conn, rec.version).err();
                return Err(err(alloc::format!("record cannot be encoded: {why:?}")));
            }
        }
    }
    if let Some((_, w)) = current {
        messages.push(w.finish());
    }
    Ok(messages)
}

/// The version for a JSON `version` number.
pub const fn version_from_number(n: u64) -> Option<Version> {
    match n {
        0 => Some(Version::V0),
        1 => Some(Version::V1),
        _ => None,
    }
}
