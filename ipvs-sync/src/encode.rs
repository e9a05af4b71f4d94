//! Encoding sync messages with the kernel sender's layout (facts §12.3, §12.4, §12.10).
//!
//! - [`encode_message`] writes one message holding the given records.
//! - [`MessageWriter`] packs records one at a time as the master does: [`MessageWriter::try_push`]
//!   refuses a record that would take the message past `maxlen` bytes or 255 records, except that an empty
//!   message takes any record (the kernel sizes a buffer to `max(record + header, sync_maxlen)`).
//!
//! Layout rules:
//! - v0: a 4-byte header, then 24-byte records, each followed by the 24-byte seq block iff
//!   `flags & SEQ_MASK` (the seq words little-endian, the host order of the x86 kernels that send them).
//!   Only the low 16 bits of `flags` travel; `timeout`, `fwmark` and the PE fields are not carried; IPv6
//!   records cannot be encoded ([`EncodeError::Ipv6InV0`]).
//! - v1: an 8-byte header, then records aligned to 4 bytes (zero padding before each record, counted in the
//!   message size but not in `ver_size`; none after the last record). Options in the kernel's order:
//!   SEQ_DATA iff `in_seq` or `out_seq` is present (the missing one as zeros), PE_DATA iff `pe_data`,
//!   PE_NAME iff `pe_name`. `timeout`/`fwmark` of `None` are written as 0.
//!
//! Flags are written as given: the master is the one that clears `HASHED`.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use ipvs_sync::ipvs_proto::Protocol;
//! use ipvs_sync::{decode_message, MessageWriter, SyncConn, Version};
//!
//! let ip = |d| IpAddr::V4(Ipv4Addr::new(10, 0, 2, d));
//! let conn = SyncConn {
//!     protocol: Protocol::Tcp,
//!     caddr: ip(100), cport: 49360, vaddr: ip(100), vport: 80, daddr: ip(2), dport: 8000,
//!     flags: 0, state: 1, timeout: Some(900), fwmark: Some(0),
//!     in_seq: None, out_seq: None, pe_name: None, pe_data: None,
//! };
//! let mut w = MessageWriter::begin(Version::V1, 7, 1472);
//! while w.try_push(&conn) {}
//! assert_eq!(w.n_conns(), 40); // 8 + 40 × 36 = 1448 ≤ 1472
//! let bytes = w.finish();
//!
//! let decoded = decode_message(&bytes).unwrap();
//! assert_eq!((decoded.version, decoded.syncid), (Version::V1, 7));
//! assert!(decoded.records.iter().all(|r| r.as_ref() == Ok(&conn)));
//! ```

use alloc::vec::Vec;
use core::net::IpAddr;

use crate::decode::{OPT_PE_DATA, OPT_PE_NAME, OPT_SEQ_DATA};
use crate::record::{flags, limits, EncodeError, SeqAdjust, SyncConn, Version};

/// Whether `conn` can be encoded in `version`.
///
/// # Errors
/// [`EncodeError::MixedFamily`] when the three addresses are not of one family,
/// [`EncodeError::Ipv6InV0`] for IPv6 in v0, [`EncodeError::PeDataLength`] / [`EncodeError::PeNameLength`]
/// for empty or too long PE fields in v1 (v0 ignores them).
pub fn validate(conn: &SyncConn, version: Version) -> Result<(), EncodeError> {
    let v6 = conn.caddr.is_ipv6();
    if conn.vaddr.is_ipv6() != v6 || conn.daddr.is_ipv6() != v6 {
        return Err(EncodeError::MixedFamily);
    }
    match version {
        Version::V0 if v6 => Err(EncodeError::Ipv6InV0),
        Version::V0 => Ok(()),
        Version::V1 => {
            if let Some(d) = &conn.pe_data {
                if d.is_empty() || d.len() > limits::PE_DATA_MAX {
                    return Err(EncodeError::PeDataLength);
                }
            }
            if let Some(n) = &conn.pe_name {
                if n.is_empty() || n.len() > limits::PE_NAME_MAX {
                    return Err(EncodeError::PeNameLength);
                }
            }
            Ok(())
        }
    }
}

/// The length of `conn`'s record in `version`: for v1 its `ver_size` length (fixed part + options),
/// without the 0–3 bytes of padding that precede a record not starting on a 4-byte boundary.
///
/// Meaningful only for records that pass [`validate`].
pub fn encoded_len(conn: &SyncConn, version: Version) -> usize {
    match version {
        Version::V0 => {
            if conn.flags & flags::SEQ_MASK != 0 {
                limits::V0_FULL_LEN
            } else {
                limits::V0_SIMPLE_LEN
            }
        }
        Version::V1 => {
            let mut len = if conn.caddr.is_ipv6() { limits::V1_INET6_LEN } else { limits::V1_INET_LEN };
            if conn.in_seq.is_some() || conn.out_seq.is_some() {
                len += 2 + limits::SEQ_DATA_LEN;
            }
            if let Some(d) = &conn.pe_data {
                len += 2 + d.len();
            }
            if let Some(n) = &conn.pe_name {
                len += 2 + n.len();
            }
            len
        }
    }
}

/// Appends the v1 or v0 record for `conn` to `out` (no padding). `conn` must pass [`validate`].
fn write_record(conn: &SyncConn, version: Version, out: &mut Vec<u8>) {
    match version {
        Version::V0 => write_v0(conn, out),
        Version::V1 => write_v1(conn, out),
    }
}

fn addr_bytes(a: &IpAddr, out: &mut Vec<u8>) {
    match a {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

fn write_v0(c: &SyncConn, out: &mut Vec<u8>) {
    let mut r = [0u8; limits::V0_FULL_LEN];
    r[1] = c.protocol.into();
    r[2..4].copy_from_slice(&c.cport.to_be_bytes());
    r[4..6].copy_from_slice(&c.vport.to_be_bytes());
    r[6..8].copy_from_slice(&c.dport.to_be_bytes());
    for (at, a) in [(8, &c.caddr), (12, &c.vaddr), (16, &c.daddr)] {
        if let IpAddr::V4(a) = a {
            r[at..at + 4].copy_from_slice(&a.octets());
        }
    }
    r[20..22].copy_from_slice(&(c.flags as u16).to_be_bytes());
    r[22..24].copy_from_slice(&c.state.to_be_bytes());
    if c.flags & flags::SEQ_MASK != 0 {
        let s = [c.in_seq.unwrap_or_default(), c.out_seq.unwrap_or_default()];
        for (i, w) in s.iter().flat_map(|s| [s.init_seq, s.delta, s.previous_delta]).enumerate() {
            r[24 + 4 * i..28 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&r);
    } else {
        out.extend_from_slice(&r[..limits::V0_SIMPLE_LEN]);
    }
}

fn write_v1(c: &SyncConn, out: &mut Vec<u8>) {
    let len = encoded_len(c, Version::V1);
    let mut h = [0u8; 24];
    h[0] = u8::from(c.caddr.is_ipv6());
    h[1] = c.protocol.into();
    // `len` ≤ 72 + 26 + 257 + 18 = 373 for validated records, inside the 12-bit field.
    h[2..4].copy_from_slice(&(len as u16 & 0x0FFF).to_be_bytes());
    h[4..8].copy_from_slice(&c.flags.to_be_bytes());
    h[8..10].copy_from_slice(&c.state.to_be_bytes());
    h[10..12].copy_from_slice(&c.cport.to_be_bytes());
    h[12..14].copy_from_slice(&c.vport.to_be_bytes());
    h[14..16].copy_from_slice(&c.dport.to_be_bytes());
    h[16..20].copy_from_slice(&c.fwmark.unwrap_or(0).to_be_bytes());
    h[20..24].copy_from_slice(&c.timeout.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&h);
    addr_bytes(&c.caddr, out);
    addr_bytes(&c.vaddr, out);
    addr_bytes(&c.daddr, out);
    if c.in_seq.is_some() || c.out_seq.is_some() {
        let mut s = [0u8; 2 + limits::SEQ_DATA_LEN];
        s[0] = OPT_SEQ_DATA;
        s[1] = limits::SEQ_DATA_LEN as u8;
        let words = [c.in_seq.unwrap_or_default(), c.out_seq.unwrap_or_default()];
        for (i, w) in words.iter().flat_map(seq_words).enumerate() {
            s[2 + 4 * i..6 + 4 * i].copy_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&s);
    }
    for (t, v) in [(OPT_PE_DATA, &c.pe_data), (OPT_PE_NAME, &c.pe_name)] {
        if let Some(v) = v {
            // validate() bounds the length to 255.
            out.extend_from_slice(&[t, v.len() as u8]);
            out.extend_from_slice(v);
        }
    }
}

fn seq_words(s: &SeqAdjust) -> [u32; 3] {
    [s.init_seq, s.delta, s.previous_delta]
}

/// Writes one message holding `conns` to `out` (appending; `out` is not cleared).
///
/// # Errors
/// A record that fails [`validate`], more than 255 records ([`EncodeError::TooManyConns`]) or more than
/// 65535 bytes ([`EncodeError::MessageTooLong`]); `out` is then left as it was.
pub fn encode_message(version: Version, syncid: u8, conns: &[SyncConn], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if conns.len() > limits::MAX_CONNS {
        return Err(EncodeError::TooManyConns);
    }
    let mut total = version.header_len();
    for c in conns {
        validate(c, version)?;
        if version == Version::V1 {
            total = (total + 3) & !3;
        }
        total += encoded_len(c, version);
    }
    if total > limits::MAX_MESSAGE_LEN {
        return Err(EncodeError::MessageTooLong);
    }
    let base = out.len();
    out.reserve(total);
    write_header(out, version, syncid);
    let h = &mut out[base..];
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    match version {
        Version::V0 => h[0] = conns.len() as u8,
        Version::V1 => h[4] = conns.len() as u8,
    }
    for c in conns {
        if version == Version::V1 {
            let pad = (4 - ((out.len() - base) & 3)) & 3;
            out.resize(out.len() + pad, 0);
        }
        write_record(c, version, out);
    }
    debug_assert_eq!(out.len() - base, total);
    Ok(())
}

impl crate::record::SyncMessage {
    /// Appends this message's bytes to `out` ([`encode_message`]).
    ///
    /// # Errors
    /// As [`encode_message`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_message(self.version, self.syncid, &self.conns, out)
    }
}

fn write_header(buf: &mut Vec<u8>, version: Version, syncid: u8) {
    match version {
        Version::V0 => buf.extend_from_slice(&[0, syncid, 0, limits::V0_HEADER_LEN as u8]),
        Version::V1 => buf.extend_from_slice(&[0, syncid, 0, limits::V1_HEADER_LEN as u8, 0, 1, 0, 0]),
    }
}

/// Packs records into one message, as the master's current send buffer does.
///
/// The bytes are a complete, valid message after every push ([`MessageWriter::as_bytes`]).
#[derive(Clone, Debug)]
pub struct MessageWriter {
    buf: Vec<u8>,
    version: Version,
    maxlen: usize,
    n_conns: usize,
}

impl MessageWriter {
    /// Starts an empty message of `version` for `syncid`, holding at most `maxlen` bytes (the UDP
    /// payload, `sync_maxlen`) unless its first record alone is longer.
    pub fn begin(version: Version, syncid: u8, maxlen: usize) -> Self {
        Self::begin_in(Vec::new(), version, syncid, maxlen)
    }

    /// [`MessageWriter::begin`] reusing `buf`'s allocation (its contents are discarded).
    pub fn begin_in(mut buf: Vec<u8>, version: Version, syncid: u8, maxlen: usize) -> Self {
        buf.clear();
        write_header(&mut buf, version, syncid);
        Self { buf, version, maxlen, n_conns: 0 }
    }

    /// The message's version.
    pub const fn version(&self) -> Version {
        self.version
    }

    /// The message's sync id.
    pub fn syncid(&self) -> u8 {
        self.buf[1]
    }

    /// The size limit given to [`MessageWriter::begin`].
    pub const fn maxlen(&self) -> usize {
        self.maxlen
    }

    /// Records in the message so far.
    pub const fn n_conns(&self) -> usize {
        self.n_conns
    }

    /// Whether the message holds no record.
    pub const fn is_empty(&self) -> bool {
        self.n_conns == 0
    }

    /// Message length so far, in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The message so far (valid as sent).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether `conn` would be taken by [`MessageWriter::try_push`] now.
    pub fn fits(&self, conn: &SyncConn) -> bool {
        if validate(conn, self.version).is_err() || self.n_conns >= limits::MAX_CONNS {
            return false;
        }
        let end = self.len() + self.pad() + encoded_len(conn, self.version);
        end <= limits::MAX_MESSAGE_LEN && (self.n_conns == 0 || end <= self.maxlen)
    }

    fn pad(&self) -> usize {
        match self.version {
            Version::V0 => 0,
            Version::V1 => (4 - (self.len() & 3)) & 3,
        }
    }

    /// Appends `conn` if it fits (see [`MessageWriter::fits`]); `false` means the caller should
    /// [`finish`](MessageWriter::finish) this message and start another — or, on an empty writer, that the
    /// record cannot be encoded in this version ([`validate`] says why).
    pub fn try_push(&mut self, conn: &SyncConn) -> bool {
        if !self.fits(conn) {
            return false;
        }
        self.append(conn);
        true
    }

    /// Like [`MessageWriter::try_push`], but tells an unencodable record from a full message:
    /// `Ok(false)` = full.
    ///
    /// # Errors
    /// What [`validate`] returns.
    pub fn push(&mut self, conn: &SyncConn) -> Result<bool, EncodeError> {
        validate(conn, self.version)?;
        Ok(self.try_push(conn))
    }

    fn append(&mut self, conn: &SyncConn) {
        let pad = self.pad();
        self.buf.resize(self.buf.len() + pad, 0);
        write_record(conn, self.version, &mut self.buf);
        self.n_conns += 1;
        let len = (self.len() as u16).to_be_bytes(); // fits() keeps len ≤ 65535
        let h = &mut self.buf[..];
        h[2..4].copy_from_slice(&len);
        match self.version {
            Version::V0 => h[0] = self.n_conns as u8,
            Version::V1 => h[4] = self.n_conns as u8,
        }
    }

    /// The finished message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_message;
    use alloc::vec;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use ipvs_proto::Protocol;

    fn conn(i: u16) -> SyncConn {
        SyncConn {
            protocol: Protocol::Tcp,
            caddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            cport: 1000 + i,
            vaddr: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)),
            vport: 80,
            daddr: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)),
            dport: 8000,
            flags: 0,
            state: 1,
            timeout: Some(900),
            fwmark: Some(0),
            in_seq: None,
            out_seq: None,
            pe_name: None,
            pe_data: None,
        }
    }

    #[test]
    fn writer_flushes_at_maxlen() {
        // 8 + 36 * 40 = 1448 ≤ 1472, 41 records = 1484 > 1472.
        let mut w = MessageWriter::begin(Version::V1, 7, limits::DEFAULT_MAXLEN_INET);
        let mut n = 0;
        while w.try_push(&conn(n)) {
            n += 1;
        }
        assert_eq!(n, 40);
        assert_eq!(w.len(), 8 + 36 * 40);
        let d = decode_message(&w.finish()).unwrap();
        assert_eq!(d.records.len(), 40);
    }

    #[test]
    fn writer_flushes_at_255_records() {
        let mut w = MessageWriter::begin(Version::V0, 1, 65535);
        let mut n = 0;
        while w.try_push(&conn(n)) {
            n += 1;
        }
        assert_eq!(n, 255);
        assert_eq!(w.as_bytes()[0], 255);
    }

    #[test]
    fn empty_writer_takes_an_oversized_record() {
        let mut w = MessageWriter::begin(Version::V1, 1, 10);
        assert!(w.try_push(&conn(0)));
        assert!(!w.try_push(&conn(1)));
        assert_eq!(w.len(), 44);
    }

    #[test]
    fn v1_pads_between_records_not_after() {
        let mut c = conn(0);
        c.pe_data = Some(vec![1]);
        c.pe_name = Some(b"sip".to_vec());
        let mut out = Vec::new();
        encode_message(Version::V1, 1, &[c.clone(), c], &mut out).unwrap();
        // 36 + 3 + 5 = 44 (aligned), so: 8 + 44 + 44.
        assert_eq!(out.len(), 96);
        let mut c = conn(0);
        c.pe_data = Some(vec![1, 2]);
        c.pe_name = Some(b"sip".to_vec());
        out.clear();
        encode_message(Version::V1, 1, &[c.clone(), c], &mut out).unwrap();
        // 45-byte records: 8 + 45 + 3 pad + 45, none after the last.
        assert_eq!(out.len(), 101);
        assert_eq!(&out[53..56], &[0, 0, 0]);
    }

    #[test]
    fn v0_rejects_ipv6_and_mixed_families() {
        let mut c = conn(0);
        c.caddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(validate(&c, Version::V1), Err(EncodeError::MixedFamily));
        c.vaddr = c.caddr;
        c.daddr = c.caddr;
        assert_eq!(validate(&c, Version::V1), Ok(()));
        assert_eq!(validate(&c, Version::V0), Err(EncodeError::Ipv6InV0));
        let mut out = vec![9];
        assert_eq!(encode_message(Version::V0, 0, &[conn(0), c], &mut out), Err(EncodeError::Ipv6InV0));
        assert_eq!(out, [9]);
        assert!(!MessageWriter::begin(Version::V0, 0, 1472).try_push(&conn(0).clone_with_v6()));
    }

    #[test]
    fn encode_message_limits() {
        let conns: Vec<_> = (0..256).map(conn).collect();
        let mut out = Vec::new();
        assert_eq!(encode_message(Version::V1, 0, &conns, &mut out), Err(EncodeError::TooManyConns));
        assert_eq!(encode_message(Version::V1, 0, &conns[..255], &mut out), Ok(()));
        assert_eq!(out.len(), 8 + 255 * 36);
        let mut c = conn(0);
        c.pe_data = Some(vec![0; 256]);
        assert_eq!(validate(&c, Version::V1), Err(EncodeError::PeDataLength));
        c.pe_data = Some(vec![]);
        assert_eq!(validate(&c, Version::V1), Err(EncodeError::PeDataLength));
        c.pe_data = None;
        c.pe_name = Some(vec![b'x'; 17]);
        assert_eq!(validate(&c, Version::V1), Err(EncodeError::PeNameLength));
        assert_eq!(validate(&c, Version::V0), Ok(()));
    }

    trait V6 {
        fn clone_with_v6(&self) -> SyncConn;
    }

    impl V6 for SyncConn {
        fn clone_with_v6(&self) -> SyncConn {
            let a = IpAddr::V6(Ipv6Addr::LOCALHOST);
            Self { caddr: a, vaddr: a, daddr: a, ..self.clone() }
        }
    }
}
