//! The SIP persistence engine (`--pe sip`, facts §8.5): the Call-ID of a SIP message carried in UDP.
//!
//! A persistent `--pe sip` service keeps one template per (client network, Call-ID) instead of one per client
//! network, so the calls of one client (or of one SIP proxy in front of many clients) spread over the real
//! servers by the scheduler while every packet of one call — from any source port — sticks to one server.
//!
//! # What [`call_id`] accepts
//!
//! The payload is a SIP message (RFC 3261 §7): a start line, header lines, an empty line, a body.
//!
//! - Header lines are searched one by one. A line starts after CR, LF or CRLF (RFC 3261 ends lines with CRLF,
//!   RFC 2543 also allowed CR or LF alone; both are taken), so the start line is never a header. A line
//!   starting with SP or HT continues the previous one and is skipped.
//! - The header name is `Call-ID` or its compact form `i` (RFC 3261 §20.8), in any case; the compact name must
//!   be followed by a character that is not a letter (so a header like `If-Match` is not taken for it).
//! - Optional whitespace, a colon, optional whitespace. Whitespace is SP and HT and, as in the netfilter
//!   conntrack SIP parser, a folded line (CR, LF or CRLF followed by SP or HT).
//! - The value is RFC 3261's `callid = word ["@" word]` (a `word` is letters, digits and
//!   ``-.!%*_+`'~()<>:\"/[]?{}``): its length is what the template keeps.
//! - The first Call-ID header with such a value decides: the value must be at most
//!   [`MAX_CALL_ID`] (255) bytes and be followed by CR or LF, otherwise the message has no usable Call-ID
//!   (facts §8.5) — trailing spaces or parameters after the value fail it.
//!
//! Chosen here where the facts are silent:
//! - A Call-ID header whose value does not parse (empty, not starting with a `word` character, `word@` with
//!   nothing after), or a line that starts with the name but has no colon after it (`Call-IDx:`), or whose
//!   value is only whitespace up to the end of the line, is not the Call-ID: the search goes on with the next
//!   line.
//! - The search stops at the empty line that ends the headers: a `Call-ID:` line in the body does not count.
//! - Only UDP: the engine fails TCP, SCTP and ICMP-embedded flows of a `--pe sip` persistent service
//!   ([`DropReason::PersistenceEngine`](crate::DropReason::PersistenceEngine)), as the kernel's engine does.

use core::fmt;

use ipvs_proto::wire::ip::IpHeaders;
use ipvs_proto::Protocol;

/// The engine's name, as `--pe` takes it and as sync messages and listings carry it.
pub const NAME: &str = "sip";

/// Longest Call-ID a template keeps (`IP_VS_PEDATA_MAXLEN`).
pub const MAX_CALL_ID: usize = 255;

/// Why a message has no usable Call-ID.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum CallIdError {
    /// No `Call-ID` (or `i`) header with a value among the header lines.
    Missing,
    /// The packet is not UDP (the SIP engine handles UDP only).
    NotUdp,
    /// The value is longer than [`MAX_CALL_ID`] bytes.
    TooLong,
    /// The value is not followed by CR or LF (more characters on its line, or the end of the payload).
    Unterminated,
}

impl fmt::Display for CallIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "no Call-ID header",
            Self::NotUdp => "not UDP",
            Self::TooLong => "Call-ID longer than 255 bytes",
            Self::Unterminated => "Call-ID not followed by CR or LF",
        })
    }
}

impl core::error::Error for CallIdError {}

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// The Call-ID of the SIP message `payload` (see the [module docs](self)). Never panics, whatever the bytes.
///
/// # Errors
/// [`CallIdError::Missing`], [`CallIdError::TooLong`] or [`CallIdError::Unterminated`].
pub fn call_id(payload: &[u8]) -> Result<&[u8], CallIdError> {
    let mut at = 0;
    loop {
        let line = next_line(payload, at).ok_or(CallIdError::Missing)?;
        match payload.get(line) {
            // The empty line: the headers end here.
            Some(&CR | &LF) | None => return Err(CallIdError::Missing),
            // A continuation of the previous line.
            Some(&b' ' | &b'\t') => {}
            Some(_) => {
                if let Some((start, len)) = value_at(payload, line) {
                    if len > MAX_CALL_ID {
                        return Err(CallIdError::TooLong);
                    }
                    return match payload.get(start + len) {
                        Some(&CR | &LF) => Ok(&payload[start..start + len]),
                        _ => Err(CallIdError::Unterminated),
                    };
                }
            }
        }
        at = line;
    }
}

/// The Call-ID of a UDP packet: `pkt` is the whole IP packet and `hdr` its parsed headers.
///
/// # Errors
/// [`CallIdError::NotUdp`] for another protocol, else as [`call_id`] on the UDP payload (bounded by the UDP
/// length field).
pub fn call_id_of_packet<'p>(hdr: &IpHeaders, pkt: &'p [u8]) -> Result<&'p [u8], CallIdError> {
    if hdr.protocol != Protocol::Udp {
        return Err(CallIdError::NotUdp);
    }
    let l4 = hdr.l4(pkt);
    let udp_len = match l4.get(4..6) {
        Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
        None => return Err(CallIdError::Missing),
    };
    let payload = l4.get(8..udp_len.min(l4.len())).unwrap_or_default();
    call_id(payload)
}

/// The start of the line after the first line break at or after `from`, if there is one before the end.
fn next_line(p: &[u8], from: usize) -> Option<usize> {
    let i = from + p.get(from..)?.iter().position(|&b| b == CR || b == LF)?;
    let mut j = i + 1;
    if p[i] == CR && p.get(j) == Some(&LF) {
        j += 1;
    }
    (j < p.len()).then_some(j)
}

/// If the line at `line` is a Call-ID header with a value, the value's start and length.
fn value_at(p: &[u8], line: usize) -> Option<(usize, usize)> {
    let rest = p.get(line..)?;
    let after_name = if rest.get(..7).is_some_and(|n| n.eq_ignore_ascii_case(b"call-id")) {
        line + 7
    } else if rest.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'i'))
        && rest.get(1).is_some_and(|c| !c.is_ascii_alphabetic())
    {
        line + 1
    } else {
        return None;
    };
    let colon = skip_space(p, after_name)?;
    if p[colon] != b':' {
        return None;
    }
    let start = skip_space(p, colon + 1)?;
    let len = callid_len(&p[start..]);
    (len > 0).then_some((start, len))
}

/// The index of the first character at or after `i` that is not whitespace (SP, HT, or a line break followed
/// by SP or HT); `None` at the end of the payload or at a line break that ends the header.
fn skip_space(p: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match *p.get(i)? {
            b' ' | b'\t' => i += 1,
            CR | LF => {
                let mut j = i + 1;
                if p[i] == CR && p.get(j) == Some(&LF) {
                    j += 1;
                }
                if !matches!(p.get(j), Some(&b' ' | &b'\t')) {
                    return None;
                }
                i = j;
            }
            _ => return Some(i),
        }
    }
}

/// Length of RFC 3261's `callid = word ["@" word]` at the start of `v` (0 if there is none).
fn callid_len(v: &[u8]) -> usize {
    let word = word_len(v);
    if word == 0 || v.get(word) != Some(&b'@') {
        return word;
    }
    match word_len(&v[word + 1..]) {
        0 => 0,
        host => word + 1 + host,
    }
}

/// Length of the run of RFC 3261 `word` characters at the start of `v`.
fn word_len(v: &[u8]) -> usize {
    v.iter().take_while(|&&c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~()<>:\\\"/[]?{}".contains(&c)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(headers: &str) -> Vec<u8> {
        format!("INVITE sip:bob@example.com SIP/2.0\r\n{headers}\r\nv=0\r\n").into_bytes()
    }

    #[test]
    fn full_and_compact_names_any_case() {
        for h in ["Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n", "call-id:a84b4c76e66710@pc33.atlanta.com\r\n"] {
            assert_eq!(call_id(&msg(h)), Ok(&b"a84b4c76e66710@pc33.atlanta.com"[..]), "{h:?}");
        }
        assert_eq!(call_id(&msg("Via: x\r\ni: f81d4fae@foo\r\n")), Ok(&b"f81d4fae@foo"[..]));
        assert_eq!(call_id(&msg("I :\t f81d4fae\r\n")), Ok(&b"f81d4fae"[..]));
        // CR or LF alone end lines too.
        assert_eq!(call_id(b"BYE sip:x SIP/2.0\nCALL-ID: abc\n\n"), Ok(&b"abc"[..]));
        assert_eq!(call_id(b"BYE sip:x SIP/2.0\rCall-Id: abc\r\r"), Ok(&b"abc"[..]));
    }

    #[test]
    fn folded_whitespace_is_skipped() {
        assert_eq!(call_id(&msg("Call-ID\r\n :\r\n\tabc@d\r\n")), Ok(&b"abc@d"[..]));
    }

    #[test]
    fn other_headers_and_lines_are_not_taken() {
        // The start line, continuation lines, names that merely start like it.
        assert_eq!(call_id(b"Call-ID: start-line\r\nVia: x\r\n\r\n"), Err(CallIdError::Missing));
        assert_eq!(call_id(&msg("Subject: x\r\n Call-ID: folded\r\n")), Err(CallIdError::Missing));
        assert_eq!(call_id(&msg("If-Match: x\r\nCall-Info: <y>\r\n")), Err(CallIdError::Missing));
        assert_eq!(call_id(&msg("Call-IDx: x\r\nCall-ID: real\r\n")), Ok(&b"real"[..]));
        // Unparsable values are skipped; the next Call-ID header counts.
        assert_eq!(call_id(&msg("Call-ID: @x\r\ni: abc\r\n")), Ok(&b"abc"[..]));
        assert_eq!(call_id(&msg("Call-ID: x@\r\ni: abc\r\n")), Ok(&b"abc"[..]));
        assert_eq!(call_id(&msg("Call-ID:   \r\ni: abc\r\n")), Ok(&b"abc"[..]));
        // The body does not count.
        assert_eq!(call_id(b"INVITE x SIP/2.0\r\nVia: a\r\n\r\nCall-ID: body\r\n"), Err(CallIdError::Missing));
        assert_eq!(call_id(b""), Err(CallIdError::Missing));
        assert_eq!(call_id(b"\r\n\r\n"), Err(CallIdError::Missing));
    }

    #[test]
    fn length_and_terminator_rules() {
        let id255 = "x".repeat(255);
        assert_eq!(call_id(&msg(&format!("Call-ID: {id255}\r\n"))), Ok(id255.as_bytes()));
        let id256 = "x".repeat(256);
        assert_eq!(call_id(&msg(&format!("Call-ID: {id256}\r\n"))), Err(CallIdError::TooLong));
        assert_eq!(call_id(&msg("Call-ID: abc \r\n")), Err(CallIdError::Unterminated));
        assert_eq!(call_id(&msg("Call-ID: abc;x=1\r\n")), Err(CallIdError::Unterminated));
        assert_eq!(call_id(b"INVITE x SIP/2.0\r\nCall-ID: abc"), Err(CallIdError::Unterminated));
        // The first parsable value decides: a later good one does not rescue a bad one.
        assert_eq!(call_id(&msg("Call-ID: abc \r\nCall-ID: def\r\n")), Err(CallIdError::Unterminated));
    }
}
