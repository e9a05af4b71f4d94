//! The JSON-lines record format of `sync-decode` / `sync-encode`, written and read by hand (flat
//! objects only; no JSON library in a `no_std` crate).
//!
//! A record line has these keys, in this order: `frame`, `version`, `syncid`, `protocol`, `af`
//! (`"inet"`/`"inet6"`), `caddr`, `cport`, `vaddr`, `vport`, `daddr`, `dport`, `flags`, `state`, `timeout`
//! (null in v0), `fwmark` (null in v0), `in_seq`, `out_seq` (`[init, delta, previous_delta]` or null),
//! `pe_name` (string or null), `pe_data` (lowercase hex or null). Addresses are RFC 5952 text.
//! An error line is `{"frame": N, "record": K, "error": "NAME"}` with `K` the 1-based record index
//! (0 = the message header) and `NAME` a [`DecodeError::name`](crate::DecodeError::name).
//!
//! `pe_name` bytes are written one character per byte (Latin-1: printable ASCII as is, the rest as
//! `\u00XX`), so any byte string survives the round trip.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::IpAddr;

use ipvs_proto::Protocol;

use crate::record::{SeqAdjust, SyncConn, Version};

/// One record line, parsed.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RecordLine {
    /// The frame (or hex line) number.
    pub frame: usize,
    /// The message version.
    pub version: Version,
    /// The message sync id.
    pub syncid: u8,
    /// The record.
    pub conn: SyncConn,
}

fn opt_u32(s: &mut String, v: Option<u32>) {
    match v {
        Some(v) => {
            let _ = write!(s, "{v}");
        }
        None => s.push_str("null"),
    }
}

fn opt_seq(s: &mut String, v: Option<SeqAdjust>) {
    match v {
        Some(q) => {
            let _ = write!(s, "[{}, {}, {}]", q.init_seq, q.delta, q.previous_delta);
        }
        None => s.push_str("null"),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of a hex string (either case, even length), `None` if it is not one.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if t.len() % 2 != 0 {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

fn json_bytes_string(s: &mut String, bytes: &[u8]) {
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\u{b:04x}");
            }
        }
    }
    s.push('"');
}

/// The `sync-decode` line for one record.
pub fn record_line(frame: usize, version: Version, syncid: u8, c: &SyncConn) -> String {
    let mut s = String::with_capacity(320);
    let af = if c.caddr.is_ipv6() { "inet6" } else { "inet" };
    let _ = write!(
        s,
        "{{\"frame\": {frame}, \"version\": {}, \"syncid\": {syncid}, \"protocol\": {}, \"af\": \"{af}\", \
         \"caddr\": \"{}\", \"cport\": {}, \"vaddr\": \"{}\", \"vport\": {}, \"daddr\": \"{}\", \"dport\": {}, \
         \"flags\": {}, \"state\": {}, \"timeout\": ",
        version.as_u8(),
        u8::from(c.protocol),
        c.caddr,
        c.cport,
        c.vaddr,
        c.vport,
        c.daddr,
        c.dport,
        c.flags,
        c.state,
    );
    opt_u32(&mut s, c.timeout);
    s.push_str(", \"fwmark\": ");
    opt_u32(&mut s, c.fwmark);
    s.push_str(", \"in_seq\": ");
    opt_seq(&mut s, c.in_seq);
    s.push_str(", \"out_seq\": ");
    opt_seq(&mut s, c.out_seq);
    s.push_str(", \"pe_name\": ");
    match &c.pe_name {
        Some(n) => json_bytes_string(&mut s, n),
        None => s.push_str("null"),
    }
    s.push_str(", \"pe_data\": ");
    match &c.pe_data {
        Some(d) => {
            s.push('"');
            s.push_str(&hex(d));
            s.push('"');
        }
        None => s.push_str("null"),
    }
    s.push('}');
    s
}

/// The `sync-decode` error line.
pub fn error_line(frame: usize, record: usize, error: &str) -> String {
    let mut s = String::new();
    let _ = write!(s, "{{\"frame\": {frame}, \"record\": {record}, \"error\": ");
    json_bytes_string(&mut s, error.as_bytes());
    s.push('}');
    s
}

/// A JSON value of the flat subset these lines use.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Bool,
    Num(u64),
    Str(Vec<char>),
    Arr(Vec<Self>),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            Ok(())
        } else {
            Err(alloc::format!("expected '{}' at column {}", c as char, self.at + 1))
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.at).copied()
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let t = self.s.get(self.at..self.at + 4).ok_or("short \\u escape")?;
        if !t.iter().all(u8::is_ascii_hexdigit) {
            return Err("bad \\u escape".into());
        }
        self.at += 4;
        Ok(t.iter().fold(0, |acc, &c| acc << 4 | (c as char).to_digit(16).unwrap_or(0)))
    }

    fn next_char(&self) -> Result<char, String> {
        let b = *self.s.get(self.at).ok_or("unterminated string")?;
        let len = match b {
            0..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        let bytes = self.s.get(self.at..self.at + len).ok_or("invalid UTF-8")?;
        core::str::from_utf8(bytes).ok().and_then(|t| t.chars().next()).ok_or_else(|| String::from("invalid UTF-8"))
    }

    fn string(&mut self) -> Result<Vec<char>, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self.next_char()?;
            match c {
                '"' => {
                    self.at += 1;
                    return Ok(out);
                }
                '\\' => {
                    let e = *self.s.get(self.at + 1).ok_or("unterminated string")?;
                    self.at += 2;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) {
                                if self.s.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return Err("lone surrogate".into());
                                }
                                self.at += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err("bad surrogate pair".into());
                                }
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            }
                            char::from_u32(cp).ok_or("bad \\u escape")?
                        }
                        _ => return Err("bad escape".into()),
                    };
                    out.push(ch);
                }
                c if (c as u32) < 0x20 => return Err("control character in string".into()),
                c => {
                    self.at += c.len_utf8();
                    out.push(c);
                }
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek().ok_or("unexpected end")? {
            b'"' => Ok(Value::Str(self.string()?)),
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Value::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Value::Arr(items));
                        }
                        _ => return Err("expected ',' or ']'".into()),
                    }
                }
            }
            b'0'..=b'9' => {
                let start = self.at;
                while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                if matches!(self.s.get(self.at), Some(b'.' | b'e' | b'E')) {
                    return Err("only non-negative integers are expected".into());
                }
                let t = core::str::from_utf8(&self.s[start..self.at]).map_err(|_| "bad number")?;
                t.parse().map(Value::Num).map_err(|_| String::from("number out of range"))
            }
            _ => {
                for (word, v) in [("null", Value::Null), ("true", Value::Bool), ("false", Value::Bool)] {
                    if self.s[self.at..].starts_with(word.as_bytes()) {
                        self.at += word.len();
                        return Ok(v);
                    }
                }
                Err(alloc::format!("unexpected character at column {}", self.at + 1))
            }
        }
    }

    fn object(&mut self) -> Result<Vec<(String, Value)>, String> {
        self.eat(b'{')?;
        let mut fields = Vec::new();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                let key: String = self.string()?.into_iter().collect();
                self.eat(b':')?;
                let v = self.value()?;
                fields.push((key, v));
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err("expected ',' or '}'".into()),
                }
            }
        }
        if self.peek().is_some() {
            return Err("trailing characters after the object".into());
        }
        Ok(fields)
    }
}

struct Fields(Vec<(String, Value)>);

impl Fields {
    fn get(&self, key: &str) -> Result<&Value, String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v).ok_or_else(|| alloc::format!("missing key {key:?}"))
    }

    fn num<T: TryFrom<u64>>(&self, key: &str) -> Result<T, String> {
        match self.get(key)? {
            Value::Num(n) => T::try_from(*n).map_err(|_| alloc::format!("{key}: {n} out of range")),
            _ => Err(alloc::format!("{key}: expected a number")),
        }
    }

    fn opt_num(&self, key: &str) -> Result<Option<u32>, String> {
        match self.get(key)? {
            Value::Null => Ok(None),
            _ => self.num(key).map(Some),
        }
    }

    fn string(&self, key: &str) -> Result<String, String> {
        match self.get(key)? {
            Value::Str(s) => Ok(s.iter().collect()),
            _ => Err(alloc::format!("{key}: expected a string")),
        }
    }

    fn addr(&self, key: &str) -> Result<IpAddr, String> {
        self.string(key)?.parse().map_err(|_| alloc::format!("{key}: not an IP address"))
    }

    fn seq(&self, key: &str) -> Result<Option<SeqAdjust>, String> {
        match self.get(key)? {
            Value::Null => Ok(None),
            Value::Arr(a) => match a.as_slice() {
                [Value::Num(i), Value::Num(d), Value::Num(p)] => {
                    let w = |n: &u64| u32::try_from(*n).map_err(|_| alloc::format!("{key}: {n} out of range"));
                    Ok(Some(SeqAdjust { init_seq: w(i)?, delta: w(d)?, previous_delta: w(p)? }))
                }
                _ => Err(alloc::format!("{key}: expected [init, delta, previous_delta]")),
            },
            _ => Err(alloc::format!("{key}: expected an array or null")),
        }
    }
}

/// Parses one `sync-decode` line: `Ok(None)` for an error line (it has an `error` key).
///
/// # Errors
/// A description of the first problem (bad JSON, missing key, wrong type, out-of-range number, address
/// family not matching `af`).
pub fn parse_record_line(line: &str) -> Result<Option<RecordLine>, String> {
    let f = Fields(Parser { s: line.as_bytes(), at: 0 }.object()?);
    if f.0.iter().any(|(k, _)| k == "error") {
        return Ok(None);
    }
    let version = super::version_from_number(f.num("version")?).ok_or("version: must be 0 or 1")?;
    let caddr = f.addr("caddr")?;
    let vaddr = f.addr("vaddr")?;
    let daddr = f.addr("daddr")?;
    let inet6 = match f.string("af")?.as_str() {
        "inet" => false,
        "inet6" => true,
        _ => return Err("af: must be \"inet\" or \"inet6\"".into()),
    };
    if [caddr, vaddr, daddr].iter().any(|a| a.is_ipv6() != inet6) {
        return Err("addresses do not match af".into());
    }
    let pe_name = match f.get("pe_name")? {
        Value::Null => None,
        Value::Str(s) => Some(
            s.iter()
                .map(|&c| u8::try_from(u32::from(c)).map_err(|_| String::from("pe_name: character above U+00FF")))
                .collect::<Result<Vec<u8>, String>>()?,
        ),
        _ => return Err("pe_name: expected a string or null".into()),
    };
    let pe_data = match f.get("pe_data")? {
        Value::Null => None,
        Value::Str(_) => Some(hex_decode(&f.string("pe_data")?).ok_or("pe_data: not hex")?),
        _ => return Err("pe_data: expected a hex string or null".into()),
    };
    let protocol: u8 = f.num("protocol")?;
    Ok(Some(RecordLine {
        frame: f.num("frame")?,
        version,
        syncid: f.num("syncid")?,
        conn: SyncConn {
            protocol: Protocol::from(protocol),
            caddr,
            cport: f.num("cport")?,
            vaddr,
            vport: f.num("vport")?,
            daddr,
            dport: f.num("dport")?,
            flags: f.num("flags")?,
            state: f.num("state")?,
            timeout: f.opt_num("timeout")?,
            fwmark: f.opt_num("fwmark")?,
            in_seq: f.seq("in_seq")?,
            out_seq: f.seq("out_seq")?,
            pe_name,
            pe_data,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv6Addr;

    #[test]
    fn record_line_round_trip() {
        let c = SyncConn {
            protocol: Protocol::Udp,
            caddr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            cport: 5060,
            vaddr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            vport: 5060,
            daddr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            dport: 0,
            flags: 0x1_1180,
            state: 0,
            timeout: Some(180),
            fwmark: None,
            in_seq: Some(SeqAdjust { init_seq: 1, delta: u32::MAX, previous_delta: 3 }),
            out_seq: None,
            pe_name: Some(b"s\"i\\p\x00\xff".to_vec()),
            pe_data: Some(b"call-id".to_vec()),
        };
        let line = record_line(3, Version::V1, 9, &c);
        assert!(line.contains("\"caddr\": \"2001:db8::1\""), "{line}");
        let back = parse_record_line(&line).unwrap().unwrap();
        assert_eq!(back, RecordLine { frame: 3, version: Version::V1, syncid: 9, conn: c });
        assert_eq!(parse_record_line(&error_line(1, 2, "bad_state")), Ok(None));
    }

    #[test]
    fn parser_handles_escapes_and_rejects_junk() {
        let mut p = Parser { s: br#""a\u00e9\ud83d\ude00b\n""#, at: 0 };
        assert_eq!(p.string().unwrap().into_iter().collect::<String>(), "a\u{e9}\u{1f600}b\n");
        for bad in [r#"{"a": 1"#, r#"{"a": -1}"#, r#"{"a": 1.5}"#, r#"{"a": 1} x"#, r#"{"a": "\q"}"#] {
            assert!(Parser { s: bad.as_bytes(), at: 0 }.object().is_err(), "{bad}");
        }
    }
}
