//! Reads Wireshark's own decode of IPVS sync messages (`tshark -d udp.port==8848,ipvs -V`), so tests can
//! compare the codec with an independent reading, field by field.
//!
//! Wireshark 4.0's dissector is right on plain records and wrong beyond them (facts §12.10): it splits
//! `ver_size` 3/13 bits, reads any non-zero type as IPv6, parses no v1 options or padding, and reads v0 seq
//! words big-endian. Callers compare only what it gets right.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

/// One message as Wireshark shows it.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Message {
    /// The frame number.
    pub frame: usize,
    /// Header fields (`Synchronization ID`, `Size`, `Connection Count`, `Version`, …), as shown.
    pub header: Vec<(String, String)>,
    /// Per `Connection #k`, its fields as shown (bit-field lines by the name after ` = `).
    pub conns: Vec<Vec<(String, String)>>,
}

/// Parses the `-V` text of a capture into its sync messages.
pub fn parse_verbose(text: &str) -> Vec<Message> {
    let mut out = Vec::new();
    let mut frame = 0;
    let mut current: Option<Message> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        if indent == 0 {
            if let Some(m) = current.take() {
                out.push(m);
            }
            if let Some(rest) = body.strip_prefix("Frame ") {
                frame = rest.split(':').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            } else if body == "IP Virtual Services Sync Daemon" {
                current = Some(Message { frame, ..Message::default() });
            }
            continue;
        }
        let Some(m) = current.as_mut() else { continue };
        if indent == 4 && body.starts_with("Connection #") {
            m.conns.push(Vec::new());
            continue;
        }
        // Bit-field lines look like "000. .... = Version: 0".
        let field = body.rsplit_once(" = ").map_or(body, |(_, f)| f);
        let Some((k, v)) = field.split_once(": ") else { continue };
        let kv = (String::from(k), String::from(v));
        match indent {
            4 => m.header.push(kv),
            8 => {
                if let Some(c) = m.conns.last_mut() {
                    c.push(kv);
                }
            }
            _ => {}
        }
    }
    if let Some(m) = current {
        out.push(m);
    }
    out
}

/// The number in a Wireshark value: the hex in trailing parentheses (`TCP (0x06)`, `Unknown (1)`), a
/// `0x` literal, or a leading decimal.
pub fn number(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = match (v.rfind('('), v.ends_with(')')) {
        (Some(i), true) => &v[i + 1..v.len() - 1],
        _ => v,
    };
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok()),
    }
}

/// A record as Wireshark read it, with numbers and addresses parsed.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct Record {
    /// `Type` (v1 only).
    pub record_type: Option<u64>,
    /// `Protocol`.
    pub protocol: u64,
    /// `Size` (v1 only; Wireshark's 13-bit reading).
    pub size: Option<u64>,
    /// `Flags`.
    pub flags: u64,
    /// `State`.
    pub state: u64,
    /// `Client Port`.
    pub cport: u64,
    /// `Virtual Port`.
    pub vport: u64,
    /// `Destination Port`.
    pub dport: u64,
    /// `FWmark` (v1 only).
    pub fwmark: Option<u64>,
    /// `Timeout` (v1 only).
    pub timeout: Option<u64>,
    /// `Client Address`.
    pub caddr: Option<IpAddr>,
    /// `Virtual Address`.
    pub vaddr: Option<IpAddr>,
    /// `Destination Address`.
    pub daddr: Option<IpAddr>,
    /// v0 seq words (in, then out), as Wireshark reads them (big-endian).
    pub seq: Option<[u64; 6]>,
}

/// The record fields of one `Connection #k`.
///
/// # Errors
/// The name of a required field that is missing or not a number.
pub fn record(fields: &[(String, String)]) -> Result<Record, String> {
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let num = |k: &str| get(k).and_then(number);
    let req = |k: &str| num(k).ok_or_else(|| alloc::format!("missing or bad field {k:?}"));
    let addr = |k: &str| get(k).and_then(|v| v.parse().ok());
    let seq_names = [
        "Input Sequence (Initial)",
        "Input Sequence (Delta)",
        "Input Sequence (Previous Delta)",
        "Output Sequence (Initial)",
        "Output Sequence (Delta)",
        "Output Sequence (Previous Delta)",
    ];
    let seq = if get(seq_names[0]).is_some() {
        let mut s = [0; 6];
        for (w, k) in s.iter_mut().zip(seq_names) {
            *w = req(k)?;
        }
        Some(s)
    } else {
        None
    };
    Ok(Record {
        record_type: num("Type"),
        protocol: req("Protocol")?,
        size: num("Size"),
        flags: req("Flags")?,
        state: req("State")?,
        cport: req("Client Port")?,
        vport: req("Virtual Port")?,
        dport: req("Destination Port")?,
        fwmark: num("FWmark"),
        timeout: num("Timeout"),
        caddr: addr("Client Address"),
        vaddr: addr("Virtual Address"),
        daddr: addr("Destination Address"),
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (text, n) in [("TCP (0x06)", 6), ("Unknown (1)", 1), ("0x00001100", 0x1100), ("900", 900), ("36", 36)] {
            assert_eq!(number(text), Some(n), "{text}");
        }
    }
}
