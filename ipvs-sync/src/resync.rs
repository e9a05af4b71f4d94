//! Bulk resync: a backup that starts late, or a rebooted master that comes back as a backup, asks for the
//! whole connection table and gets it — something the kernel's sync protocol cannot do (keepalived#1966:
//! "no bulk resync when a rebooted master comes back").
//!
//! # Design
//!
//! Three parties share the multicast group: our masters ([`crate::Master`]), our backups
//! ([`crate::Backup`]) and, possibly, Linux backups. Resync adds four message kinds:
//!
//! | kind | sender | meaning |
//! |---|---|---|
//! | `Request` | backup | "send me the table"; carries a 32-bit nonce chosen by the backup |
//! | `Begin` | master | a dump starts; carries its dump id and the nonces of the requests it answers |
//! | `Data` | master | one slice of the dump: a complete, ordinary v1 sync message (header + records), numbered |
//! | `End` | master | the dump is over: how many `Data` messages and records it had |
//!
//! The master ([`crate::Master::begin_resync`], or a `Request` given to
//! [`crate::Master::handle_datagram`]) announces the dump with [`crate::MasterEvent::ResyncStarted`]; the
//! engine then feeds its table through [`crate::Master::push_resync_conns`] from an iterator (a cursor over
//! its table). The master pulls only as many records as it wants ([`crate::Master::resync_wanted`]), packs
//! them with the ordinary v1 writer, and paces the dump: at most `burst` messages per `interval`
//! ([`ResyncConfig`]), after the ordinary sync traffic, so a dump never delays a live update and never
//! floods the link (the defaults, 16 messages per 10 ms, are ~1600 messages/s, ~64 000 IPv4 records/s).
//! Memory stays bounded whatever the table size: at most `window` finished messages plus one record batch.
//! The dump carries what the ordinary path would sync: templates always, TCP/SCTP conns only in the states
//! the kernel syncs (§12.7), UDP and other protocols always, never ONE_PACKET conns; the engine skips
//! template-controlled conns itself when `sync_persist_mode` is on.
//!
//! Requests that arrive while a dump runs are answered by the next full pass (a dump whose `Begin` has not
//! left yet simply adds them), so every requester sees a `Begin` listing its nonce followed by every `Data`
//! message of that dump. The backup ([`ResyncClient`], driven by [`crate::Backup`]) retries an unanswered
//! request every `retry_interval` up to `max_attempts` times, checks the `Data` sequence numbers against
//! the `End` counts, and asks again (with a fresh nonce) after a gap or a silent dump; it reports
//! [`crate::BackupEvent::ResyncComplete`] or [`crate::BackupEvent::ResyncFailed`]. A backup applies the
//! records of every dump it hears — whoever asked — exactly like ordinary sync records, since they are
//! ordinary records.
//!
//! A dump is a snapshot taken record by record, a few milliseconds before each message leaves, so a conn
//! that changes during the dump is sent by the ordinary path as well; the backup keeps whichever arrives
//! last, as it does for ordinary sync. There is no authentication, as in the kernel protocol.
//!
//! # Wire format
//!
//! Every resync message starts with this 20-byte header (multi-byte fields big-endian):
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 1 | zero | 0 (where a kernel reads v0 `nr_conns` / v1 `reserved`) |
//! | 1 | 1 | syncid | the sender's sync id (a backup with sync id 0 sends 0 = "any master") |
//! | 2 | 2 | zero | 0 (where a kernel reads the message `size`) |
//! | 4 | 4 | magic | `"IPVR"` (byte 5, the kernel's v1 `version` byte, is `'P'` = 0x50) |
//! | 8 | 1 | format | 1 |
//! | 9 | 1 | kind | 1 Request, 2 Begin, 3 Data, 4 End |
//! | 10 | 2 | length | the whole datagram's length |
//! | 12 | 4 | session | Request: the nonce; Begin/Data/End: the dump id |
//! | 16 | 4 | seq | Data: message number from 0; End: number of Data messages; else 0 |
//!
//! Bodies: Request — none. Begin — `n` (1 byte), 3 zero bytes, `n` nonces (4 bytes each). Data — one v1
//! sync message exactly as [`crate::encode::MessageWriter`] writes it (its own 8-byte header, `size`, `syncid`,
//! padded records). End — the number of records (4 bytes).
//!
//! # Why Linux receivers ignore every resync message
//!
//! The kernel receiver's first check (facts §12.5, rule 1) compares the header's `size` field (bytes 2–3)
//! with the datagram length and drops the datagram when they differ. A resync message has `size` = 0 and
//! is at least 20 bytes long, so every Linux backup drops it before looking at the sync id, the version or
//! any record — whatever its kernel version, as the check predates v1. As a second, independent guard, a
//! receiver that skipped rule 1 would still apply nothing: byte 5 is not 1, so version detection (rule 3)
//! reads the message as v0, whose record count is byte 0 = 0. The check is a debug-level log only in the
//! kernel, so Linux daemons do not even log warnings. Conversely, no kernel message can look like a resync
//! message: a kernel message's `size` equals its length, which is at least 4, never 0. Tests
//! (`tests/resync.rs`) run every resync message kind through the codec's kernel-rules decoder and through
//! an independent validator written from §12.5, and check that neither accepts a record.
//!
//! The `Data` body is a v1 message whose records our backups decode with the same kernel rules as
//! ordinary messages; the dump is always v1 (even when the master sends v0), because only our backups read
//! it and v1 carries IPv6, timeouts and fwmarks.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use ipvs_proto::{Duration, Instant, Protocol};

use crate::encode::{validate, MessageWriter};
use crate::master::MasterEvent;
use crate::record::{flags, limits, SyncConn, Version};

/// The magic at bytes 4..8 of every resync message.
pub const MAGIC: [u8; 4] = *b"IPVR";
/// The resync format version this crate writes and reads.
pub const FORMAT: u8 = 1;
/// Length of the resync header.
pub const HEADER_LEN: usize = 20;
/// Most nonces one `Begin` carries; further requesters are served by the next dump.
pub const MAX_NONCES: usize = 32;

/// The kind of a resync message (byte 9).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum ResyncKind {
    /// 1: a backup asks for the table.
    Request,
    /// 2: a dump starts.
    Begin,
    /// 3: a slice of the dump.
    Data,
    /// 4: the dump is over.
    End,
}

impl ResyncKind {
    /// The wire value.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Request => 1,
            Self::Begin => 2,
            Self::Data => 3,
            Self::End => 4,
        }
    }

    /// The kind with wire value `v`.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Request),
            2 => Some(Self::Begin),
            3 => Some(Self::Data),
            4 => Some(Self::End),
            _ => None,
        }
    }
}

/// Why bytes that carry the resync magic are not a valid resync message.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum ResyncError {
    /// Not a resync message (no zero bytes 0 and 2–3 or no magic); it may be an ordinary sync message.
    NotResync,
    /// Shorter than the header or than its body needs.
    Truncated,
    /// The header's length field is not the datagram length.
    BadLength,
    /// A format version this crate does not read.
    UnsupportedFormat(u8),
    /// An unknown kind byte.
    UnknownKind(u8),
    /// A `Data` body that is not a v1 sync message (its own header says otherwise).
    BadData,
}

impl ResyncError {
    /// A stable snake_case identifier, for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotResync => "not_resync",
            Self::Truncated => "resync_truncated",
            Self::BadLength => "resync_bad_length",
            Self::UnsupportedFormat(_) => "resync_unsupported_format",
            Self::UnknownKind(_) => "resync_unknown_kind",
            Self::BadData => "resync_bad_data",
        }
    }
}

impl fmt::Display for ResyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotResync => f.write_str("not a resync message"),
            Self::Truncated => f.write_str("resync message truncated"),
            Self::BadLength => f.write_str("resync length field differs from datagram length"),
            Self::UnsupportedFormat(v) => write!(f, "unsupported resync format {v}"),
            Self::UnknownKind(k) => write!(f, "unknown resync message kind {k}"),
            Self::BadData => f.write_str("resync data is not a v1 sync message"),
        }
    }
}

impl core::error::Error for ResyncError {}

/// The nonces listed in a `Begin` message (4 bytes each, big-endian).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Nonces<'a> {
    raw: &'a [u8],
}

impl<'a> Nonces<'a> {
    /// The nonces, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.raw.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// How many nonces there are.
    pub const fn len(&self) -> usize {
        self.raw.len() / 4
    }

    /// Whether there are none (an unsolicited dump).
    pub const fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether `nonce` is listed.
    pub fn contains(&self, nonce: u32) -> bool {
        self.iter().any(|n| n == nonce)
    }
}

/// A parsed resync message.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ResyncMessage<'a> {
    /// A backup asks for the table.
    Request {
        /// The requester's sync id (0 = any master).
        syncid: u8,
        /// The requester's nonce.
        nonce: u32,
    },
    /// A dump starts.
    Begin {
        /// The master's sync id.
        syncid: u8,
        /// The dump's id.
        dump_id: u32,
        /// The requests it answers (empty for an unsolicited dump).
        nonces: Nonces<'a>,
    },
    /// One slice of a dump.
    Data {
        /// The master's sync id.
        syncid: u8,
        /// The dump's id.
        dump_id: u32,
        /// The message's number in the dump, from 0.
        seq: u32,
        /// The embedded v1 sync message (decode it with [`crate::decode`]).
        message: &'a [u8],
    },
    /// A dump is over.
    End {
        /// The master's sync id.
        syncid: u8,
        /// The dump's id.
        dump_id: u32,
        /// How many `Data` messages the dump had.
        n_messages: u32,
        /// How many records the dump had.
        n_records: u32,
    },
}

impl ResyncMessage<'_> {
    /// The sync id in the header.
    pub const fn syncid(&self) -> u8 {
        match *self {
            Self::Request { syncid, .. }
            | Self::Begin { syncid, .. }
            | Self::Data { syncid, .. }
            | Self::End { syncid, .. } => syncid,
        }
    }

    /// The message kind.
    pub const fn kind(&self) -> ResyncKind {
        match self {
            Self::Request { .. } => ResyncKind::Request,
            Self::Begin { .. } => ResyncKind::Begin,
            Self::Data { .. } => ResyncKind::Data,
            Self::End { .. } => ResyncKind::End,
        }
    }
}

/// Whether `bytes` is (or claims to be) a resync message: bytes 0 and 2–3 zero and the magic at 4..8.
///
/// No datagram a kernel master sends matches: its `size` field (bytes 2–3) is its length, at least 4.
pub fn is_resync(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0] == 0 && bytes[2] == 0 && bytes[3] == 0 && bytes[4..8] == MAGIC
}

/// Parses a resync message.
///
/// # Errors
/// [`ResyncError::NotResync`] when [`is_resync`] is false; the other variants for malformed resync
/// messages.
pub fn parse(bytes: &[u8]) -> Result<ResyncMessage<'_>, ResyncError> {
    if !is_resync(bytes) {
        return Err(ResyncError::NotResync);
    }
    if bytes.len() < HEADER_LEN {
        return Err(ResyncError::Truncated);
    }
    if bytes[8] != FORMAT {
        return Err(ResyncError::UnsupportedFormat(bytes[8]));
    }
    if usize::from(be16(bytes, 10)) != bytes.len() {
        return Err(ResyncError::BadLength);
    }
    let syncid = bytes[1];
    let session = be32(bytes, 12);
    let seq = be32(bytes, 16);
    let body = &bytes[HEADER_LEN..];
    match ResyncKind::from_u8(bytes[9]) {
        None => Err(ResyncError::UnknownKind(bytes[9])),
        Some(ResyncKind::Request) => Ok(ResyncMessage::Request { syncid, nonce: session }),
        Some(ResyncKind::Begin) => {
            let n = usize::from(*body.first().ok_or(ResyncError::Truncated)?);
            let raw = body.get(4..4 + 4 * n).ok_or(ResyncError::Truncated)?;
            Ok(ResyncMessage::Begin { syncid, dump_id: session, nonces: Nonces { raw } })
        }
        Some(ResyncKind::Data) => {
            // The body must be a v1 message: reserved 0, version 1, spare 0, its size = body length.
            let ok = body.len() >= limits::V1_HEADER_LEN
                && body[0] == 0
                && body[5] == 1
                && body[6] == 0
                && body[7] == 0
                && usize::from(be16(body, 2)) == body.len();
            if !ok {
                return Err(ResyncError::BadData);
            }
            Ok(ResyncMessage::Data { syncid, dump_id: session, seq, message: body })
        }
        Some(ResyncKind::End) => {
            let n_records = body.get(..4).map(|b| be32(b, 0)).ok_or(ResyncError::Truncated)?;
            Ok(ResyncMessage::End { syncid, dump_id: session, n_messages: seq, n_records })
        }
    }
}

/// Appends a resync header to `out`; `body_len` is the length of the body that will follow.
fn write_header(out: &mut Vec<u8>, syncid: u8, kind: ResyncKind, session: u32, seq: u32, body_len: usize) {
    let len = (HEADER_LEN + body_len).min(usize::from(u16::MAX)) as u16;
    out.extend_from_slice(&[0, syncid, 0, 0]);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[FORMAT, kind.as_u8()]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// Appends a `Request` to `out`.
pub fn write_request(out: &mut Vec<u8>, syncid: u8, nonce: u32) {
    write_header(out, syncid, ResyncKind::Request, nonce, 0, 0);
}

/// Appends a `Begin` to `out`, listing at most [`MAX_NONCES`] of `nonces`.
pub fn write_begin(out: &mut Vec<u8>, syncid: u8, dump_id: u32, nonces: &[u32]) {
    let nonces = &nonces[..nonces.len().min(MAX_NONCES)];
    write_header(out, syncid, ResyncKind::Begin, dump_id, 0, 4 + 4 * nonces.len());
    out.extend_from_slice(&[nonces.len() as u8, 0, 0, 0]);
    for n in nonces {
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Appends a `Data` message wrapping `message` (a v1 sync message) to `out`.
///
/// `message` must be at most 65535 − 20 bytes long.
pub fn write_data(out: &mut Vec<u8>, syncid: u8, dump_id: u32, seq: u32, message: &[u8]) {
    write_header(out, syncid, ResyncKind::Data, dump_id, seq, message.len());
    out.extend_from_slice(message);
}

/// Appends an `End` to `out`.
pub fn write_end(out: &mut Vec<u8>, syncid: u8, dump_id: u32, n_messages: u32, n_records: u32) {
    write_header(out, syncid, ResyncKind::End, dump_id, n_messages, 4);
    out.extend_from_slice(&n_records.to_be_bytes());
}

/// Whether a conn in this protocol state is one the kernel's master would sync (facts §12.7 step 4):
/// templates always; TCP in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT; SCTP in ESTABLISHED,
/// SHUTDOWN_SENT, SHUTDOWN_RECEIVED, SHUTDOWN_ACK_SENT, CLOSED; every other protocol always.
pub const fn state_is_synced(protocol: Protocol, state: u16, template: bool) -> bool {
    if template {
        return true;
    }
    match protocol {
        // ESTABLISHED 1, FIN_WAIT 4, TIME_WAIT 5, CLOSE 6, CLOSE_WAIT 7.
        Protocol::Tcp => matches!(state, 1 | 4 | 5 | 6 | 7),
        // ESTABLISHED 8, SHUTDOWN_SENT 9, SHUTDOWN_RECEIVED 10, SHUTDOWN_ACK_SENT 11, CLOSED 13.
        Protocol::Sctp => matches!(state, 8 | 9 | 10 | 11 | 13),
        _ => true,
    }
}

/// Pacing and buffering of the master's dumps.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ResyncConfig {
    /// Answer resync requests (default `true`). [`crate::Master::begin_resync`] works either way.
    pub enabled: bool,
    /// At most this many resync messages per `interval` (default 16).
    pub burst: u32,
    /// The pacing interval (default 10 ms).
    pub interval: Duration,
    /// At most this many finished dump messages are buffered (default 8); the master wants no records
    /// while this many wait.
    pub window: usize,
}

impl Default for ResyncConfig {
    fn default() -> Self {
        Self { enabled: true, burst: 16, interval: Duration::from_millis(10), window: 8 }
    }
}

/// What the master's dump machinery has to send next.
#[derive(Debug)]
enum Out {
    /// Serialised lazily, so requests that arrive before it leaves join this dump.
    Begin,
    Data(Vec<u8>, usize),
    End {
        n_messages: u32,
        n_records: u32,
    },
}

#[derive(Debug)]
struct Dump {
    id: u32,
    /// The engine has polled this dump's `ResyncStarted` (and rewound its cursor): records may be pulled.
    announced: bool,
    nonces: Vec<u32>,
    begin_sent: bool,
    writer: Option<MessageWriter>,
    n_messages: u32,
    n_records: u32,
    table_done: bool,
}

/// Counters of the master's dump machinery.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct ResyncServerStats {
    /// Requests accepted (including repeats of a nonce already being served).
    pub requests: u64,
    /// Requests ignored (resync disabled, or another sync id).
    pub requests_ignored: u64,
    /// Dumps started.
    pub dumps_started: u64,
    /// Dumps finished (End queued).
    pub dumps_finished: u64,
    /// Records put into dumps.
    pub records: u64,
    /// Records the engine supplied that are not synced (ONE_PACKET, a TCP/SCTP state the kernel does
    /// not sync, or not encodable).
    pub records_filtered: u64,
    /// Resync messages sent (all kinds).
    pub messages_sent: u64,
}

/// The master's side of resync: dump sessions, their buffered messages and their pacing.
#[derive(Debug)]
pub(crate) struct ResyncServer {
    cfg: ResyncConfig,
    syncid: u8,
    maxlen: usize,
    next_dump_id: u32,
    current: Option<Dump>,
    pending: Vec<u32>,
    pending_start: bool,
    out: VecDeque<Out>,
    window_start: Instant,
    sent_in_window: u32,
    events: VecDeque<MasterEvent>,
    pub(crate) stats: ResyncServerStats,
}

/// Records the master asks for per [`crate::Master::push_resync_conns`] call (one message's worth at most).
pub(crate) const RECORDS_PER_PULL: usize = limits::MAX_CONNS;

impl ResyncServer {
    pub(crate) fn new(cfg: ResyncConfig, syncid: u8, maxlen: usize, seed: u32) -> Self {
        Self {
            cfg,
            syncid,
            // The Data message, header included, stays within maxlen (unless one record alone is longer).
            maxlen: maxlen.saturating_sub(HEADER_LEN).max(1),
            next_dump_id: seed | 1,
            current: None,
            pending: Vec::new(),
            pending_start: false,
            out: VecDeque::new(),
            window_start: Instant::ZERO,
            sent_in_window: 0,
            events: VecDeque::new(),
            stats: ResyncServerStats::default(),
        }
    }

    pub(crate) fn set_config(&mut self, cfg: ResyncConfig) {
        self.cfg = cfg;
    }

    pub(crate) fn dump_running(&self) -> bool {
        self.current.is_some()
    }

    pub(crate) fn pop_event(&mut self) -> Option<MasterEvent> {
        let ev = self.events.pop_front()?;
        if let (MasterEvent::ResyncStarted { dump_id }, Some(d)) = (ev, &mut self.current) {
            if d.id == dump_id {
                d.announced = true;
            }
        }
        Some(ev)
    }

    /// Starts a dump (`nonce` = None for an unsolicited one). Returns whether it started now.
    pub(crate) fn start(&mut self, nonce: Option<u32>) -> bool {
        if let Some(d) = &mut self.current {
            if let Some(n) = nonce {
                if d.nonces.contains(&n) || self.pending.contains(&n) {
                    return false;
                }
                if !d.begin_sent && d.nonces.len() < MAX_NONCES {
                    d.nonces.push(n);
                    return true;
                }
                if self.pending.len() < 4 * MAX_NONCES {
                    self.pending.push(n);
                }
            } else if !d.begin_sent {
                // Nothing of this dump has left yet: it covers the new request.
                return true;
            } else {
                self.pending_start = true;
            }
            return false;
        }
        let id = self.next_dump_id;
        self.next_dump_id = self.next_dump_id.wrapping_add(2);
        let mut nonces = Vec::new();
        nonces.extend(nonce);
        self.current = Some(Dump {
            id,
            announced: false,
            nonces,
            begin_sent: false,
            writer: None,
            n_messages: 0,
            n_records: 0,
            table_done: false,
        });
        self.out.push_back(Out::Begin);
        self.events.push_back(MasterEvent::ResyncStarted { dump_id: id });
        self.stats.dumps_started += 1;
        true
    }

    pub(crate) fn handle_request(&mut self, syncid: u8, nonce: u32) {
        if !self.cfg.enabled || (syncid != 0 && syncid != self.syncid) {
            self.stats.requests_ignored += 1;
            return;
        }
        self.stats.requests += 1;
        self.start(Some(nonce));
    }

    pub(crate) fn wanted(&self) -> usize {
        match &self.current {
            Some(d) if d.announced && !d.table_done && self.out.len() < self.cfg.window => RECORDS_PER_PULL,
            _ => 0,
        }
    }

    /// Pulls at most [`Self::wanted`] conns from `conns`; returns how many were pulled.
    pub(crate) fn push<I: Iterator<Item = SyncConn>>(&mut self, conns: &mut I) -> usize {
        let mut budget = self.wanted();
        let mut pulled = 0;
        while budget > 0 {
            let Some(conn) = conns.next() else {
                self.finish_table();
                break;
            };
            pulled += 1;
            budget -= 1;
            self.add(conn);
        }
        pulled
    }

    fn add(&mut self, mut conn: SyncConn) {
        let template = conn.is_template();
        if conn.flags & flags::ONE_PACKET != 0
            || !state_is_synced(conn.protocol, conn.state, template)
            || validate(&conn, Version::V1).is_err()
        {
            self.stats.records_filtered += 1;
            return;
        }
        conn.flags &= !flags::HASHED;
        let Some(d) = &mut self.current else { return };
        let w = d.writer.get_or_insert_with(|| MessageWriter::begin(Version::V1, self.syncid, self.maxlen));
        if !w.try_push(&conn) {
            let full = core::mem::replace(w, MessageWriter::begin(Version::V1, self.syncid, self.maxlen));
            Self::queue_data(&mut self.out, self.syncid, d, full);
            // A fresh writer takes any valid record.
            let w = d.writer.get_or_insert_with(|| MessageWriter::begin(Version::V1, self.syncid, self.maxlen));
            let _pushed = w.try_push(&conn);
            debug_assert!(_pushed);
        }
        d.n_records = d.n_records.wrapping_add(1);
        self.stats.records += 1;
        if let Some(w) = &d.writer {
            if w.n_conns() >= limits::MAX_CONNS {
                if let Some(full) = d.writer.take() {
                    Self::queue_data(&mut self.out, self.syncid, d, full);
                }
            }
        }
    }

    fn queue_data(out: &mut VecDeque<Out>, syncid: u8, d: &mut Dump, w: MessageWriter) {
        if w.is_empty() {
            return;
        }
        let n = w.n_conns();
        let inner = w.finish();
        let mut bytes = Vec::with_capacity(HEADER_LEN + inner.len());
        write_data(&mut bytes, syncid, d.id, d.n_messages, &inner);
        d.n_messages = d.n_messages.wrapping_add(1);
        out.push_back(Out::Data(bytes, n));
    }

    /// The engine's iterator is exhausted: flush the last slice and queue the End.
    fn finish_table(&mut self) {
        let Some(d) = &mut self.current else { return };
        if d.table_done {
            return;
        }
        d.table_done = true;
        if let Some(w) = d.writer.take() {
            Self::queue_data(&mut self.out, self.syncid, d, w);
        }
        self.out.push_back(Out::End { n_messages: d.n_messages, n_records: d.n_records });
    }

    /// Writes the next paced resync message into `buf`, if one may leave at `now`.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(ResyncKind, usize)> {
        if self.out.is_empty() {
            return None;
        }
        if now >= self.window_start + self.cfg.interval || now < self.window_start {
            self.window_start = now;
            self.sent_in_window = 0;
        }
        if self.sent_in_window >= self.cfg.burst.max(1) {
            return None;
        }
        // Out items exist only while a dump is current: End is the last one queued for it.
        let d = self.current.as_mut()?;
        let item = self.out.pop_front()?;
        self.sent_in_window += 1;
        self.stats.messages_sent += 1;
        buf.clear();
        let r = match item {
            Out::Begin => {
                d.begin_sent = true;
                write_begin(buf, self.syncid, d.id, &d.nonces);
                (ResyncKind::Begin, 0)
            }
            Out::Data(bytes, n) => {
                *buf = bytes;
                (ResyncKind::Data, n)
            }
            Out::End { n_messages, n_records } => {
                write_end(buf, self.syncid, d.id, n_messages, n_records);
                self.events.push_back(MasterEvent::ResyncFinished { dump_id: d.id, n_messages, n_records });
                self.stats.dumps_finished += 1;
                self.current = None;
                let again = core::mem::take(&mut self.pending_start);
                if !self.pending.is_empty() || again {
                    let take = self.pending.len().min(MAX_NONCES);
                    let nonces: Vec<u32> = self.pending.drain(..take).collect();
                    // More than MAX_NONCES waiting: the rest are served by the pass after this one.
                    self.pending_start = !self.pending.is_empty();
                    self.start(None);
                    if let Some(d) = &mut self.current {
                        d.nonces = nonces;
                    }
                }
                (ResyncKind::End, 0)
            }
        };
        Some(r)
    }

    /// When the pacing lets the next buffered message leave, if one waits for it.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if !self.out.is_empty() && self.sent_in_window >= self.cfg.burst.max(1) {
            Some(self.window_start + self.cfg.interval)
        } else {
            None
        }
    }
}

/// The backup's resync behaviour.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ResyncClientConfig {
    /// Re-send an unanswered request after this long (default 1 s).
    pub retry_interval: Duration,
    /// Give up after this many requests without a complete dump (default 5).
    pub max_attempts: u32,
    /// A dump silent for this long is considered lost and requested again (default 5 s).
    pub idle_timeout: Duration,
    /// Seed of the request nonces (mixed with the time of each request). Give each backup its own (e.g.
    /// from the OS RNG): two backups with the same seed that ask at the same millisecond send the same
    /// nonce; both still get the table, one of them possibly a pass later.
    pub seed: u64,
}

impl Default for ResyncClientConfig {
    fn default() -> Self {
        Self {
            retry_interval: Duration::from_secs(1),
            max_attempts: 5,
            idle_timeout: Duration::from_secs(5),
            seed: 0x5eed_1b5e_c0de_d00d,
        }
    }
}

/// What the backup's resync client reports.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ResyncOutcome {
    /// Every message of a dump answering our request arrived.
    Complete {
        /// The dump's id.
        dump_id: u32,
        /// Its records (as counted by the master).
        n_records: u32,
        /// Its `Data` messages.
        n_messages: u32,
    },
    /// No complete dump after `max_attempts` requests.
    Failed {
        /// Requests sent.
        attempts: u32,
    },
}

#[derive(Clone, Copy, Debug)]
enum ClientState {
    Idle,
    Requesting { nonce: u32, next_send: Instant },
    Receiving { nonce: u32, dump_id: u32, next_seq: u32, missing: u32, last_heard: Instant },
}

/// Counters of the backup's resync client.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct ResyncClientStats {
    /// Requests sent (including retries).
    pub requests_sent: u64,
    /// Dumps that answered one of our requests.
    pub dumps_joined: u64,
    /// Dumps completed without a gap.
    pub dumps_complete: u64,
    /// Dumps that ended with missing messages, or fell silent (each led to a new request).
    pub dumps_incomplete: u64,
    /// `Data` messages missed (sequence gaps).
    pub messages_missed: u64,
    /// Resyncs given up.
    pub failures: u64,
}

/// The backup's side of resync: requests, retries and completeness checks.
#[derive(Debug)]
pub struct ResyncClient {
    cfg: ResyncClientConfig,
    state: ClientState,
    attempts: u32,
    counter: u64,
    outcomes: VecDeque<ResyncOutcome>,
    stats: ResyncClientStats,
}

impl ResyncClient {
    /// An idle client.
    pub fn new(cfg: ResyncClientConfig) -> Self {
        Self {
            cfg,
            state: ClientState::Idle,
            attempts: 0,
            counter: 0,
            outcomes: VecDeque::new(),
            stats: ResyncClientStats::default(),
        }
    }

    /// Counters.
    pub const fn stats(&self) -> &ResyncClientStats {
        &self.stats
    }

    /// Whether a resync is under way (requesting or receiving).
    pub const fn is_active(&self) -> bool {
        !matches!(self.state, ClientState::Idle)
    }

    fn fresh_nonce(&mut self, now: Instant) -> u32 {
        self.counter += 1;
        let mix = self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now.total_millis().rotate_left(32);
        (splitmix64(self.cfg.seed ^ mix) as u32).max(1)
    }

    /// Starts (or restarts) a resync: the next [`Self::poll_transmit`] sends a request.
    pub fn request(&mut self, now: Instant) {
        self.attempts = 0;
        let nonce = self.fresh_nonce(now);
        self.state = ClientState::Requesting { nonce, next_send: now };
    }

    fn retry(&mut self, now: Instant) {
        if self.attempts >= self.cfg.max_attempts {
            self.stats.failures += 1;
            self.outcomes.push_back(ResyncOutcome::Failed { attempts: self.attempts });
            self.state = ClientState::Idle;
        } else {
            let nonce = self.fresh_nonce(now);
            self.state = ClientState::Requesting { nonce, next_send: now };
        }
    }

    /// Writes a due request into `buf` (cleared first). Changes after [`Self::request`], after
    /// [`Self::handle_timeout`] and as time passes.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, syncid: u8, buf: &mut Vec<u8>) -> Option<usize> {
        let ClientState::Requesting { nonce, next_send } = &mut self.state else { return None };
        if now < *next_send || self.attempts >= self.cfg.max_attempts {
            return None;
        }
        *next_send = now + self.cfg.retry_interval;
        self.attempts += 1;
        self.stats.requests_sent += 1;
        buf.clear();
        write_request(buf, syncid, *nonce);
        Some(buf.len())
    }

    /// The next time [`Self::handle_timeout`] or [`Self::poll_transmit`] has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ClientState::Idle => None,
            ClientState::Requesting { next_send, .. } => Some(next_send),
            ClientState::Receiving { last_heard, .. } => Some(last_heard + self.cfg.idle_timeout),
        }
    }

    /// Gives up on unanswered requests and silent dumps. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ClientState::Idle => {}
            ClientState::Requesting { next_send, .. } => {
                if now >= next_send && self.attempts >= self.cfg.max_attempts {
                    self.retry(now);
                }
            }
            ClientState::Receiving { last_heard, .. } => {
                if now >= last_heard + self.cfg.idle_timeout {
                    self.stats.dumps_incomplete += 1;
                    self.retry(now);
                }
            }
        }
    }

    /// Feeds a resync message from the master (requests of other backups are ignored).
    ///
    /// While we wait for an answer, traffic of a dump that does not list our nonce (the master is busy
    /// with an earlier request and will serve ours next) postpones the next retry instead of using up
    /// attempts.
    pub fn handle(&mut self, now: Instant, msg: &ResyncMessage<'_>) {
        match (*msg, self.state) {
            (ResyncMessage::Begin { dump_id, nonces, .. }, ClientState::Requesting { nonce, .. })
                if nonces.contains(nonce) =>
            {
                self.stats.dumps_joined += 1;
                self.state = ClientState::Receiving { nonce, dump_id, next_seq: 0, missing: 0, last_heard: now };
            }
            (
                ResyncMessage::Begin { .. } | ResyncMessage::Data { .. } | ResyncMessage::End { .. },
                ClientState::Requesting { nonce, next_send },
            ) => {
                let next_send = next_send.max(now + self.cfg.retry_interval);
                self.state = ClientState::Requesting { nonce, next_send };
            }
            (
                ResyncMessage::Data { dump_id, seq, .. },
                ClientState::Receiving { nonce, dump_id: d, next_seq, missing, .. },
            ) if dump_id == d => {
                let gap = seq.saturating_sub(next_seq);
                self.stats.messages_missed += u64::from(gap);
                self.state = ClientState::Receiving {
                    nonce,
                    dump_id: d,
                    next_seq: seq.max(next_seq).saturating_add(1),
                    missing: missing.saturating_add(gap),
                    last_heard: now,
                };
            }
            (
                ResyncMessage::End { dump_id, n_messages, n_records, .. },
                ClientState::Receiving { dump_id: d, next_seq, missing, .. },
            ) if dump_id == d => {
                let tail = n_messages.saturating_sub(next_seq);
                if missing == 0 && tail == 0 {
                    self.stats.dumps_complete += 1;
                    self.outcomes.push_back(ResyncOutcome::Complete { dump_id, n_records, n_messages });
                    self.state = ClientState::Idle;
                } else {
                    self.stats.messages_missed += u64::from(tail);
                    self.stats.dumps_incomplete += 1;
                    self.retry(now);
                }
            }
            _ => {}
        }
    }

    /// The next outcome to report.
    #[must_use]
    pub fn poll_outcome(&mut self) -> Option<ResyncOutcome> {
        self.outcomes.pop_front()
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut b = Vec::new();
        write_request(&mut b, 7, 0xdead_beef);
        assert_eq!(parse(&b), Ok(ResyncMessage::Request { syncid: 7, nonce: 0xdead_beef }));
        b.clear();
        write_begin(&mut b, 7, 9, &[1, 2, 3]);
        let ResyncMessage::Begin { dump_id: 9, nonces, .. } = parse(&b).unwrap() else { panic!("not begin") };
        assert_eq!(nonces.iter().collect::<Vec<_>>(), [1, 2, 3]);
        b.clear();
        let inner = MessageWriter::begin(Version::V1, 7, 100).finish();
        write_data(&mut b, 7, 9, 4, &inner);
        assert_eq!(parse(&b), Ok(ResyncMessage::Data { syncid: 7, dump_id: 9, seq: 4, message: &inner }));
        b.clear();
        write_end(&mut b, 7, 9, 5, 200);
        assert_eq!(parse(&b), Ok(ResyncMessage::End { syncid: 7, dump_id: 9, n_messages: 5, n_records: 200 }));
    }

    #[test]
    fn parse_rejects_malformed() {
        let mut b = Vec::new();
        write_end(&mut b, 1, 2, 3, 4);
        assert_eq!(parse(&b[..19]), Err(ResyncError::Truncated));
        let mut bad = b.clone();
        bad[8] = 2;
        assert_eq!(parse(&bad), Err(ResyncError::UnsupportedFormat(2)));
        let mut bad = b.clone();
        bad[9] = 9;
        assert_eq!(parse(&bad), Err(ResyncError::UnknownKind(9)));
        let mut bad = b.clone();
        bad.push(0);
        assert_eq!(parse(&bad), Err(ResyncError::BadLength));
        let mut bad = b.clone();
        bad[3] = 24;
        assert_eq!(parse(&bad), Err(ResyncError::NotResync));
        b.clear();
        write_data(&mut b, 1, 2, 3, &[0, 1, 0, 8, 0, 0, 0, 0]);
        assert_eq!(parse(&b), Err(ResyncError::BadData));
        b.clear();
        write_begin(&mut b, 1, 2, &[5]);
        b[20] = 2;
        assert_eq!(parse(&b), Err(ResyncError::Truncated));
    }

    #[test]
    fn synced_states() {
        let tcp: Vec<u16> = (0..11).filter(|&s| state_is_synced(Protocol::Tcp, s, false)).collect();
        assert_eq!(tcp, [1, 4, 5, 6, 7]);
        let sctp: Vec<u16> = (0..14).filter(|&s| state_is_synced(Protocol::Sctp, s, false)).collect();
        assert_eq!(sctp, [8, 9, 10, 11, 13]);
        assert!(state_is_synced(Protocol::Tcp, 3, true));
        assert!(state_is_synced(Protocol::Udp, 0, false));
    }
}
