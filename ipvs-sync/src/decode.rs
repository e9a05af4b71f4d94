//! Decoding sync messages the way the kernel's receiver reads them (facts §12.3–§12.5, §12.10).
//!
//! Two entry points:
//! - [`decode_message`] returns a [`Decoded`]: the header and one `Result` per record the kernel looked
//!   at, in wire order. A record error either skips only that record (the list goes on) or drops the rest
//!   of the message (it is then the last entry); [`RecordError::fatal`] says which.
//! - [`parse_header`] + [`Records`] do the same without collecting, for callers that apply records as they
//!   go (the backup) and for benchmarks.
//!
//! Message-level problems (datagram < 4 bytes, `size` ≠ datagram length, and with
//! [`decode_message_filtered`] a foreign sync id) are the `Err` of those functions: the kernel drops the
//! whole datagram.
//!
//! Version detection is the kernel's: a message is v1 iff byte 5 (version) is 1 and bytes 0 (reserved)
//! and 6–7 (spare) are 0; anything else is read as v0, whose `nr_conns` is byte 0. A v1 message with a
//! non-zero spare therefore reads as v0 with no records. A datagram of 4–7 bytes has no version byte and
//! is read as v0.
//!
//! What the decoder checks per record (the kernel's order):
//! - v1: 36 bytes available ([`DecodeError::Truncated`]); `ver_size` inside the datagram
//!   ([`DecodeError::RecordPastEnd`]); version nibble 0 ([`DecodeError::UnsupportedVersion`]); type 0 or 1
//!   ([`DecodeError::BadRecordType`]); fixed part inside `ver_size` ([`DecodeError::RecordTooShort`]); the
//!   TLV options one by one; then, for non-templates, a known protocol and a state below its state count;
//!   then PE data needs a PE name. After each record the reader moves on by `ver_size` rounded up to 4.
//! - v0: 24 bytes (48 with the seq flags) available, else the rest is dropped; protocol and state as for v1.
//!
//! Not checked here, because they depend on the receiving host: whether the named persistence engine is
//! loaded (kernel +50) and an IPv6 record on a host without IPv6 (kernel +10). Unknown *optional* options
//! are skipped and not kept. A PE_NAME without PE_DATA is kept in [`SyncConn::pe_name`], although the
//! kernel ignores it. Flags are returned raw: the backup applies `BACKUP_MASK` and sets `SYNC`.
//!
//! Decoding never panics, whatever the input.

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs_proto::Protocol;

use crate::record::{flags, limits, DecodeError, SeqAdjust, SyncConn, SyncMessage, Version};

/// A record the kernel would not apply: where it is and why.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct RecordError {
    /// 0-based index of the record in the message (counting skipped records).
    pub index: usize,
    /// Byte offset of the record in the message.
    pub offset: usize,
    /// The rule it broke.
    pub error: DecodeError,
    /// `true` if the kernel drops the rest of the message, `false` if it skips only this record
    /// (always `error.is_fatal()`).
    pub fatal: bool,
}

/// The header of a message that passed the message-level checks.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Header {
    /// Detected wire version.
    pub version: Version,
    /// The master's sync id.
    pub syncid: u8,
    /// The declared record count (`nr_conns`).
    pub n_conns: u8,
}

/// A decoded message with per-record outcomes.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Decoded {
    /// Detected wire version.
    pub version: Version,
    /// The master's sync id.
    pub syncid: u8,
    /// The declared record count (`nr_conns`).
    pub n_conns: u8,
    /// One entry per record the kernel looked at, in wire order. After a fatal error there are no more
    /// entries, so the list may be shorter than `n_conns`.
    pub records: Vec<Result<SyncConn, RecordError>>,
}

impl Decoded {
    /// The records the kernel would apply, without the errors.
    pub fn into_message(self) -> SyncMessage {
        SyncMessage {
            version: self.version,
            syncid: self.syncid,
            conns: self.records.into_iter().filter_map(Result::ok).collect(),
        }
    }

    /// The first error, if any record was rejected.
    pub fn first_error(&self) -> Option<RecordError> {
        self.records.iter().find_map(|r| r.as_ref().err().copied())
    }
}

/// Checks the message-level rules and detects the version.
///
/// # Errors
/// [`DecodeError::Truncated`] for a datagram shorter than 4 bytes, [`DecodeError::BadLength`] when the
/// `size` field is not the datagram length.
pub fn parse_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    if bytes.len() < limits::V0_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if usize::from(be16(bytes, 2)) != bytes.len() {
        return Err(DecodeError::BadLength);
    }
    let syncid = bytes[1];
    let is_v1 =
        bytes.len() >= limits::V1_HEADER_LEN && bytes[5] == 1 && bytes[0] == 0 && bytes[6] == 0 && bytes[7] == 0;
    Ok(if is_v1 {
        Header { version: Version::V1, syncid, n_conns: bytes[4] }
    } else {
        Header { version: Version::V0, syncid, n_conns: bytes[0] }
    })
}

/// Whether a backup configured with `backup_syncid` accepts a message with `syncid` (0 accepts all).
pub const fn syncid_accepted(backup_syncid: u8, syncid: u8) -> bool {
    backup_syncid == 0 || backup_syncid == syncid
}

/// Decodes a whole message: the header checks, then every record.
///
/// # Errors
/// The message-level errors of [`parse_header`]; record errors are in [`Decoded::records`].
pub fn decode_message(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let header = parse_header(bytes)?;
    Ok(collect(bytes, header))
}

/// [`decode_message`] for a backup with sync id `backup_syncid`: also drops messages of other sync ids.
///
/// # Errors
/// As [`decode_message`], plus [`DecodeError::WrongSyncId`] (carrying the message's id).
pub fn decode_message_filtered(bytes: &[u8], backup_syncid: u8) -> Result<Decoded, DecodeError> {
    let header = parse_header(bytes)?;
    if !syncid_accepted(backup_syncid, header.syncid) {
        return Err(DecodeError::WrongSyncId(header.syncid));
    }
    Ok(collect(bytes, header))
}

fn collect(bytes: &[u8], header: Header) -> Decoded {
    let mut records = Vec::with_capacity(usize::from(header.n_conns));
    records.extend(Records::new(bytes, header));
    Decoded { version: header.version, syncid: header.syncid, n_conns: header.n_conns, records }
}

/// An iterator over the records of a message whose header passed [`parse_header`].
///
/// Yields one item per record the kernel looks at; ends after `n_conns` records or after the first
/// fatal error (which is yielded).
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    version: Version,
    pos: usize,
    index: usize,
    n_conns: usize,
}

impl<'a> Records<'a> {
    /// Iterates over the records of `bytes`, a message whose header is `header`.
    pub fn new(bytes: &'a [u8], header: Header) -> Self {
        Self {
            bytes,
            version: header.version,
            pos: header.version.header_len(),
            index: 0,
            n_conns: usize::from(header.n_conns),
        }
    }

    fn fail(&mut self, offset: usize, error: DecodeError) -> RecordError {
        let fatal = error.is_fatal();
        if fatal {
            self.n_conns = self.index;
        }
        RecordError { index: self.index - 1, offset, error, fatal }
    }

    fn next_v1(&mut self) -> Result<SyncConn, RecordError> {
        let bytes = self.bytes;
        let start = self.pos;
        if bytes.len().saturating_sub(start) < limits::V1_INET_LEN {
            return Err(self.fail(start, DecodeError::Truncated));
        }
        let ver_size = be16(bytes, start + 2);
        let size = usize::from(ver_size & 0x0FFF);
        let end = start + size;
        if end > bytes.len() {
            return Err(self.fail(start, DecodeError::RecordPastEnd));
        }
        let nibble = (ver_size >> 12) as u8;
        if nibble != 0 {
            return Err(self.fail(start, DecodeError::UnsupportedVersion(nibble)));
        }
        self.pos = start + ((size + 3) & !3);
        // The type byte and the 36-byte v4 layout are in the datagram even if `ver_size` is smaller.
        parse_v1_record(&bytes[start..], size).map_err(|e| self.fail(start, e))
    }

    fn next_v0(&mut self) -> Result<SyncConn, RecordError> {
        let bytes = self.bytes;
        let start = self.pos;
        let left = bytes.len().saturating_sub(start);
        if left < limits::V0_SIMPLE_LEN {
            return Err(self.fail(start, DecodeError::Truncated));
        }
        let r = &bytes[start..];
        let flags = u32::from(be16(r, 20));
        let seq = if flags & flags::SEQ_MASK != 0 {
            if left < limits::V0_FULL_LEN {
                return Err(self.fail(start, DecodeError::Truncated));
            }
            self.pos = start + limits::V0_FULL_LEN;
            Some((seq_le(r, 24), seq_le(r, 36)))
        } else {
            self.pos = start + limits::V0_SIMPLE_LEN;
            None
        };
        let protocol = r[1];
        let state = be16(r, 22);
        check_proto_state(protocol, state, flags).map_err(|e| self.fail(start, e))?;
        Ok(SyncConn {
            protocol: Protocol::from(protocol),
            caddr: IpAddr::V4(v4(r, 8)),
            cport: be16(r, 2),
            vaddr: IpAddr::V4(v4(r, 12)),
            vport: be16(r, 4),
            daddr: IpAddr::V4(v4(r, 16)),
            dport: be16(r, 6),
            flags,
            state,
            timeout: None,
            fwmark: None,
            in_seq: seq.map(|s| s.0),
            out_seq: seq.map(|s| s.1),
            pe_name: None,
            pe_data: None,
        })
    }
}

impl Iterator for Records<'_> {
    type Item = Result<SyncConn, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.n_conns {
            return None;
        }
        self.index += 1;
        Some(match self.version {
            Version::V1 => self.next_v1(),
            Version::V0 => self.next_v0(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.n_conns - self.index))
    }
}

/// The number of states of a protocol the kernel balances (its `num_states`), `None` if it has no
/// IPVS protocol handler: TCP 11, UDP 1, SCTP 14, AH 1, ESP 1.
pub const fn state_count(protocol: u8) -> Option<u16> {
    match protocol {
        6 => Some(ipvs_proto::state::tcp::N_STATES as u16),
        17 => Some(1),
        132 => Some(ipvs_proto::state::sctp::N_STATES as u16),
        50 | 51 => Some(1),
        _ => None,
    }
}

fn check_proto_state(protocol: u8, state: u16, flags: u32) -> Result<(), DecodeError> {
    if flags & flags::TEMPLATE != 0 {
        // Templates: a state >= 2 is only logged by the kernel.
        return Ok(());
    }
    match state_count(protocol) {
        None => Err(DecodeError::UnknownProtocol(protocol)),
        Some(n) if state >= n => Err(DecodeError::BadState(state)),
        Some(_) => Ok(()),
    }
}

/// Parses one v1 record; `r` starts at the record and holds at least 36 bytes, `size` (≤ `r.len()`) is
/// its `ver_size` length.
fn parse_v1_record(r: &[u8], size: usize) -> Result<SyncConn, DecodeError> {
    let Some(h) = r.first_chunk::<{ limits::V1_INET_LEN }>() else {
        return Err(DecodeError::Truncated);
    };
    let (fixed, inet6) = match h[0] {
        0 => (limits::V1_INET_LEN, false),
        1 => (limits::V1_INET6_LEN, true),
        t => return Err(DecodeError::BadRecordType(t)),
    };
    if fixed > size {
        return Err(DecodeError::RecordTooShort);
    }
    let mut seq = None;
    let mut pe_data: Option<&[u8]> = None;
    let mut pe_name: Option<&[u8]> = None;
    if size > fixed {
        parse_options(&r[fixed..size], &mut seq, &mut pe_data, &mut pe_name)?;
    }
    let flags = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let state = u16::from_be_bytes([h[8], h[9]]);
    let protocol = h[1];
    check_proto_state(protocol, state, flags)?;
    if pe_data.is_some() && pe_name.is_none() {
        return Err(DecodeError::PeDataWithoutName);
    }
    let (caddr, vaddr, daddr) = if inet6 {
        // `fixed` (72) ≤ `size` ≤ `r.len()`.
        let Some(a) = r.first_chunk::<{ limits::V1_INET6_LEN }>() else {
            return Err(DecodeError::RecordTooShort);
        };
        (IpAddr::V6(v6(a, 24)), IpAddr::V6(v6(a, 40)), IpAddr::V6(v6(a, 56)))
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(h[24], h[25], h[26], h[27])),
            IpAddr::V4(Ipv4Addr::new(h[28], h[29], h[30], h[31])),
            IpAddr::V4(Ipv4Addr::new(h[32], h[33], h[34], h[35])),
        )
    };
    Ok(SyncConn {
        protocol: Protocol::from(protocol),
        caddr,
        cport: u16::from_be_bytes([h[10], h[11]]),
        vaddr,
        vport: u16::from_be_bytes([h[12], h[13]]),
        daddr,
        dport: u16::from_be_bytes([h[14], h[15]]),
        flags,
        state,
        timeout: Some(u32::from_be_bytes([h[20], h[21], h[22], h[23]])),
        fwmark: Some(u32::from_be_bytes([h[16], h[17], h[18], h[19]])),
        in_seq: seq.map(|s: (SeqAdjust, SeqAdjust)| s.0),
        out_seq: seq.map(|s| s.1),
        pe_name: pe_name.map(<[u8]>::to_vec),
        pe_data: pe_data.map(<[u8]>::to_vec),
    })
}

/// Walks the TLV options of one v1 record (`opts` = the bytes after the fixed part, up to `ver_size`).
fn parse_options<'a>(
    opts: &'a [u8],
    seq: &mut Option<(SeqAdjust, SeqAdjust)>,
    pe_data: &mut Option<&'a [u8]>,
    pe_name: &mut Option<&'a [u8]>,
) -> Result<(), DecodeError> {
    let mut rest = opts;
    while !rest.is_empty() {
        let [ptype, plen, tail @ ..] = rest else {
            return Err(DecodeError::OptionTruncated);
        };
        let plen = usize::from(*plen);
        if plen == 0 || plen > tail.len() {
            return Err(DecodeError::BadOptionLength);
        }
        let (data, next) = tail.split_at(plen);
        match ptype & !OPT_F_PARAM {
            OPT_SEQ_DATA => {
                if plen != limits::SEQ_DATA_LEN || seq.is_some() {
                    return Err(DecodeError::BadSeqData);
                }
                *seq = Some((seq_be(data, 0), seq_be(data, 12)));
            }
            OPT_PE_DATA => {
                if plen > limits::PE_DATA_MAX || pe_data.is_some() {
                    return Err(DecodeError::BadPeData);
                }
                *pe_data = Some(data);
            }
            OPT_PE_NAME => {
                if plen > limits::PE_NAME_MAX || pe_name.is_some() {
                    return Err(DecodeError::BadPeName);
                }
                *pe_name = Some(data);
            }
            _ if ptype & OPT_F_PARAM == 0 => return Err(DecodeError::UnknownOption(*ptype)),
            _ => {}
        }
        rest = next;
    }
    Ok(())
}

/// `IPVS_OPT_SEQ_DATA`.
pub const OPT_SEQ_DATA: u8 = 1;
/// `IPVS_OPT_PE_DATA`.
pub const OPT_PE_DATA: u8 = 2;
/// `IPVS_OPT_PE_NAME`.
pub const OPT_PE_NAME: u8 = 3;
/// `IPVS_OPT_F_PARAM`: set in an option type, marks the option as optional (unknown ones are ignored).
pub const OPT_F_PARAM: u8 = 0x40;

// The helpers below index within bounds the callers checked (36/48 bytes, or option length 24).
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn v4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn v6(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

fn seq_be(b: &[u8], at: usize) -> SeqAdjust {
    SeqAdjust { init_seq: be32(b, at), delta: be32(b, at + 4), previous_delta: be32(b, at + 8) }
}

fn seq_le(b: &[u8], at: usize) -> SeqAdjust {
    SeqAdjust { init_seq: le32(b, at), delta: le32(b, at + 4), previous_delta: le32(b, at + 8) }
}

#[cfg(test)]
mod tests;
