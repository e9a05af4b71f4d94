//! The sync backup (sans-IO): validates received messages with the kernel receiver's rules and hands
//! the engine the records to create or update, with what the kernel's apply rules need (facts §12.5,
//! §12.6).
//!
//! [`Backup::handle_datagram`] returns a [`BackupBatch`]: the accepted records as [`BackupRecord`]s, each
//! with
//! - the flags a new conn gets ([`BackupRecord::flags`]: v1 `(wire & BACKUP_MASK) | SYNC`; v0
//!   `(wire | SYNC) & !HASHED`) and the rule for an existing one ([`BackupRecord::updated_flags`]: only
//!   `INACTIVE` and the seq bits change, `BACKUP_UPD_MASK`);
//! - the timeout to use ([`BackupRecord::timeout`]: the record's if non-zero, else the backup's timeout
//!   for the protocol state, or 180 s for templates and protocols without a timeout table — always the
//!   default for v0, which carries no timeout);
//! - how to look it up ([`BackupRecord::lookup`]: conn or template), what to do when an existing conn
//!   points at another real server ([`BackupRecord::on_other_dest`]), the ports to find its real server
//!   by ([`BackupRecord::dest_ports`]), the `in_pkts` of a new conn (the backup's `sync_threshold`) and its
//!   [`crate::SyncState`].
//!
//! The engine applies them to its table (facts §12.6): it binds a new conn to a real server with the
//! backup's own forwarding method (the synced forwarding bits and `NOOUTPUT` are replaced), keeps it
//! unbound when no real server matches, and moves one count between active and inactive connections when
//! the `INACTIVE` bit of a bound non-template changes ([`BackupRecord::inactive_changed`]).
//!
//! Messages for another sync id are refused with [`DecodeError::WrongSyncId`] (a backup with sync id 0
//! accepts all); datagrams longer than the backup's `maxlen` are refused with [`DecodeError::BadLength`]
//! (the kernel truncates them to its buffer, then its size check fails). Every outcome is counted in
//! [`BackupStats`].
//!
//! Resync messages ([`crate::resync`]) are recognised before the kernel rules: their `Data` records go
//! through the same validation and come out the same way; [`Backup::request_resync`] asks the master for
//! the whole table, [`Backup::poll_transmit`] sends the request and [`Backup::poll_event`] reports the
//! outcome.

use alloc::vec::Vec;

use ipvs_proto::state::{SctpState, SctpTimeouts, TcpState, TcpTimeouts, UdpState, UdpTimeouts};
use ipvs_proto::{Duration, Instant, Protocol};

use crate::decode::{parse_header, syncid_accepted, Header, RecordError, Records};
use crate::master::{ConfigError, SyncState, Transmit, TransmitKind};
use crate::record::{flags, limits, DecodeError, SyncConn, Version};
use crate::resync::{self, ResyncClient, ResyncClientConfig, ResyncKind, ResyncMessage, ResyncOutcome};

/// The kernel's timeout for templates and protocols without a timeout table when the record has none.
pub const FALLBACK_TIMEOUT: Duration = Duration::from_secs(180);

/// The backup's configuration.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BackupConfig {
    /// Sync id to accept (0 = every sync id; default 0).
    pub syncid: u8,
    /// Receive buffer (`sync_maxlen` of the backup): longer datagrams are refused. Default 1472 (an
    /// interface MTU of 1500 and an IPv4 group); 1024..=65507.
    pub maxlen: usize,
    /// The backup's `sync_threshold`: the `in_pkts` of conns it creates (default 3).
    pub sync_threshold: u32,
    /// TCP timeouts for records without one.
    pub tcp_timeouts: TcpTimeouts,
    /// UDP timeout for records without one.
    pub udp_timeouts: UdpTimeouts,
    /// SCTP timeouts for records without one.
    pub sctp_timeouts: SctpTimeouts,
    /// Timeout of templates (and of AH/ESP) without one (default [`FALLBACK_TIMEOUT`], 180 s).
    pub fallback_timeout: Duration,
    /// Persistence engines loaded on this host (default `sip`): a record with PE data for another one is
    /// skipped (kernel +50).
    pub known_pes: Vec<Vec<u8>>,
    /// Whether the host has IPv6 (default true); without it IPv6 records are skipped (kernel +10).
    pub ipv6: bool,
    /// `sync_sock_size` (bytes, 0 = system default): not used here; the I/O driver applies it as
    /// `SO_RCVBUF`.
    pub sock_size: u32,
    /// Bulk resync requests (beyond the kernel; see [`crate::resync`]).
    pub resync: ResyncClientConfig,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            syncid: 0,
            maxlen: limits::DEFAULT_MAXLEN_INET,
            sync_threshold: 3,
            tcp_timeouts: TcpTimeouts::DEFAULT,
            udp_timeouts: UdpTimeouts::DEFAULT,
            sctp_timeouts: SctpTimeouts::DEFAULT,
            fallback_timeout: FALLBACK_TIMEOUT,
            known_pes: alloc::vec![b"sip".to_vec()],
            ipv6: true,
            sock_size: 0,
            resync: ResyncClientConfig::default(),
        }
    }
}

impl BackupConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ConfigError::Maxlen`] when `maxlen` is outside 1024..=65507.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max = limits::MAX_MESSAGE_LEN - 28;
        if !(1024..=max).contains(&self.maxlen) {
            return Err(ConfigError::Maxlen { value: self.maxlen, min: 1024, max });
        }
        Ok(())
    }
}

/// How the engine looks up the conn a record describes (facts §3.4, §12.6.1).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Lookup {
    /// A connection: `conn_in_get` on (protocol, caddr, cport, vaddr, vport).
    Conn,
    /// A persistence template: `ct_in_get` (PE-aware; fwmark templates compare the mark in `vaddr`).
    Template,
}

/// What to do when an existing conn (found by [`Lookup::Conn`]) points at another real server.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum OtherDest {
    /// The record is `INACTIVE`: a late expiry notice for a conn already replaced — ignore the record.
    IgnoreRecord,
    /// Expire the existing conn now and create a new one from the record.
    ReplaceConn,
}

/// One accepted record, with what the engine needs to apply it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BackupRecord {
    /// The record as decoded (wire flags, `timeout`/`fwmark` `None` in v0).
    pub conn: SyncConn,
    /// The wire version it came in.
    pub version: Version,
    /// Flags of a conn created from it (v1: `(wire & BACKUP_MASK) | SYNC`; v0: `(wire | SYNC) & !HASHED`).
    pub flags: u32,
    /// The timeout to give the conn.
    pub timeout: Duration,
    /// `in_pkts` of a conn created from it (the backup's `sync_threshold`).
    pub in_pkts: u32,
    /// Ports to look the real server up by, in order (facts §12.6.3): the record's `dport`, or 0 first
    /// for a fwmark service whose synced forwarding method is not NAT; then the other one.
    pub dest_ports: [u16; 2],
}

impl BackupRecord {
    /// Whether it is a persistence template.
    pub const fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// How to look up the existing conn.
    pub const fn lookup(&self) -> Lookup {
        if self.is_template() {
            Lookup::Template
        } else {
            Lookup::Conn
        }
    }

    /// What to do when the existing conn's real server (daddr, dport) differs from the record's
    /// (non-templates).
    pub const fn on_other_dest(&self) -> OtherDest {
        if self.flags & flags::INACTIVE != 0 {
            OtherDest::IgnoreRecord
        } else {
            OtherDest::ReplaceConn
        }
    }

    /// The flags of an existing conn after the update: `(record & BACKUP_UPD_MASK) | (old & !BACKUP_UPD_MASK)`.
    pub const fn updated_flags(&self, old: u32) -> u32 {
        (self.flags & flags::BACKUP_UPD_MASK) | (old & !flags::BACKUP_UPD_MASK)
    }

    /// For an existing bound non-template conn with flags `old`: `Some(now_inactive)` if the update flips
    /// `INACTIVE` (move one count between the real server's active and inactive connections).
    pub const fn inactive_changed(&self, old: u32) -> Option<bool> {
        let new = self.flags & flags::INACTIVE != 0;
        if self.is_template() || new == (old & flags::INACTIVE != 0) {
            None
        } else {
            Some(new)
        }
    }

    /// The protocol state of the conn (the state and `old_state` are both the record's).
    pub const fn state(&self) -> u16 {
        self.conn.state
    }

    /// The sync bookkeeping for a conn created from it at `now`.
    pub const fn sync_state(&self, now: Instant) -> SyncState {
        SyncState::synced(now, self.conn.state)
    }
}

/// Where a batch came from.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum BatchSource {
    /// An ordinary sync message.
    Sync,
    /// A resync `Data` message.
    ResyncData {
        /// The dump.
        dump_id: u32,
        /// The message's number in it.
        seq: u32,
    },
    /// A resync control message (no records).
    ResyncControl(ResyncKind),
}

/// What one datagram gave.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct BackupBatch {
    /// The message's wire version (v1 for resync messages).
    pub version: Version,
    /// The message's sync id.
    pub syncid: u8,
    /// Where it came from.
    pub source: BatchSource,
    /// The records to apply, in wire order.
    pub records: Vec<BackupRecord>,
    /// Records skipped (the kernel skips them and goes on).
    pub skipped: usize,
    /// The error that made the kernel drop the rest of the message, if any.
    pub dropped_rest: Option<RecordError>,
}

/// Something the engine may want to know.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum BackupEvent {
    /// A dump answering our request arrived whole.
    ResyncComplete {
        /// The dump's id.
        dump_id: u32,
        /// Its records (as the master counted them, filtered ones excluded).
        n_records: u32,
        /// Its `Data` messages.
        n_messages: u32,
    },
    /// Resync given up after `attempts` requests.
    ResyncFailed {
        /// Requests sent.
        attempts: u32,
    },
}

/// Why a record that passed the codec was skipped by this host (kernel +10 and +50).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum HostSkip {
    /// IPv6 record on a host without IPv6 (kernel +10).
    Ipv6Disabled,
    /// PE data for a persistence engine not loaded here (kernel +50).
    PeNotLoaded,
}

/// Counters of a [`Backup`].
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct BackupStats {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Messages accepted (ordinary and resync `Data`).
    pub messages: u64,
    /// Datagrams longer than `maxlen`.
    pub oversize: u64,
    /// Messages refused at message level, per [`DecodeError`] (index = position in [`DecodeError::ALL`]):
    /// truncated, bad length, wrong sync id.
    pub message_errors: [u64; 16],
    /// Records accepted.
    pub records_accepted: u64,
    /// Records skipped (the message goes on).
    pub records_skipped: u64,
    /// Records lost to a fatal error: the failing record and the ones after it (`nr_conns` − index).
    pub records_dropped: u64,
    /// Record errors, per [`DecodeError`] (index = position in [`DecodeError::ALL`]).
    pub record_errors: [u64; 16],
    /// Records skipped by this host: IPv6 disabled.
    pub ipv6_disabled: u64,
    /// Records skipped by this host: persistence engine not loaded.
    pub pe_not_loaded: u64,
    /// Template records with a state ≥ 2 (the kernel only logs them).
    pub template_state_unusual: u64,
    /// Resync messages accepted (all kinds).
    pub resync_messages: u64,
    /// Records received in resync `Data` messages and accepted.
    pub resync_records: u64,
    /// Malformed resync messages.
    pub resync_malformed: u64,
}

impl BackupStats {
    /// Message-level refusals for `e`.
    pub fn message_errors(&self, e: DecodeError) -> u64 {
        self.message_errors[error_index(e)]
    }

    /// Record errors for `e`.
    pub fn record_errors(&self, e: DecodeError) -> u64 {
        self.record_errors[error_index(e)]
    }
}

fn error_index(e: DecodeError) -> usize {
    let d = core::mem::discriminant(&e);
    DecodeError::ALL.iter().position(|x| core::mem::discriminant(x) == d).unwrap_or(0)
}

/// The sync backup. See the [module docs](self).
#[derive(Debug)]
pub struct Backup {
    cfg: BackupConfig,
    client: ResyncClient,
    stats: BackupStats,
}

impl Backup {
    /// A backup with configuration `cfg`.
    ///
    /// # Errors
    /// [`BackupConfig::validate`]'s.
    pub fn new(cfg: BackupConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let client = ResyncClient::new(cfg.resync);
        Ok(Self { cfg, client, stats: BackupStats::default() })
    }

    /// The configuration.
    pub const fn config(&self) -> &BackupConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> BackupStats {
        self.stats
    }

    /// The resync client's counters.
    pub fn resync_stats(&self) -> resync::ResyncClientStats {
        *self.client.stats()
    }

    /// Handles one datagram received on a sync port.
    ///
    /// # Errors
    /// Message-level refusals, as the kernel drops the whole datagram: [`DecodeError::Truncated`]
    /// (shorter than 4 bytes), [`DecodeError::BadLength`] (`size` ≠ length, longer than `maxlen`, or a
    /// malformed resync message), [`DecodeError::WrongSyncId`].
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> Result<BackupBatch, DecodeError> {
        self.stats.datagrams += 1;
        if bytes.len() > self.cfg.maxlen {
            self.stats.oversize += 1;
            return Err(self.message_error(DecodeError::BadLength));
        }
        if resync::is_resync(bytes) {
            return self.handle_resync(now, bytes);
        }
        let header = parse_header(bytes).map_err(|e| self.message_error(e))?;
        if !syncid_accepted(self.cfg.syncid, header.syncid) {
            return Err(self.message_error(DecodeError::WrongSyncId(header.syncid)));
        }
        self.stats.messages += 1;
        Ok(self.records(bytes, header, BatchSource::Sync))
    }

    fn message_error(&mut self, e: DecodeError) -> DecodeError {
        self.stats.message_errors[error_index(e)] += 1;
        e
    }

    fn handle_resync(&mut self, now: Instant, bytes: &[u8]) -> Result<BackupBatch, DecodeError> {
        let msg = match resync::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.resync_malformed += 1;
                let e =
                    if e == resync::ResyncError::Truncated { DecodeError::Truncated } else { DecodeError::BadLength };
                return Err(self.message_error(e));
            }
        };
        let syncid = msg.syncid();
        if !syncid_accepted(self.cfg.syncid, syncid) {
            return Err(self.message_error(DecodeError::WrongSyncId(syncid)));
        }
        self.stats.resync_messages += 1;
        self.client.handle(now, &msg);
        if let ResyncMessage::Data { dump_id, seq, message, .. } = msg {
            // parse() checked that `message` is a v1 message whose size is its length.
            let header = parse_header(message).map_err(|e| self.message_error(e))?;
            self.stats.messages += 1;
            let batch = self.records(message, header, BatchSource::ResyncData { dump_id, seq });
            self.stats.resync_records += batch.records.len() as u64;
            return Ok(batch);
        }
        Ok(BackupBatch {
            version: Version::V1,
            syncid,
            source: BatchSource::ResyncControl(msg.kind()),
            records: Vec::new(),
            skipped: 0,
            dropped_rest: None,
        })
    }

    fn records(&mut self, bytes: &[u8], header: Header, source: BatchSource) -> BackupBatch {
        let mut batch = BackupBatch {
            version: header.version,
            syncid: header.syncid,
            source,
            records: Vec::with_capacity(usize::from(header.n_conns)),
            skipped: 0,
            dropped_rest: None,
        };
        for r in Records::new(bytes, header) {
            match r {
                Ok(conn) => match self.host_check(&conn) {
                    Ok(()) => {
                        let rec = self.apply_rules(conn, header.version);
                        self.stats.records_accepted += 1;
                        batch.records.push(rec);
                    }
                    Err(HostSkip::Ipv6Disabled) => {
                        self.stats.ipv6_disabled += 1;
                        self.stats.records_skipped += 1;
                        batch.skipped += 1;
                    }
                    Err(HostSkip::PeNotLoaded) => {
                        self.stats.pe_not_loaded += 1;
                        self.stats.records_skipped += 1;
                        batch.skipped += 1;
                    }
                },
                Err(e) => {
                    self.stats.record_errors[error_index(e.error)] += 1;
                    if e.fatal {
                        self.stats.records_dropped += (usize::from(header.n_conns) - e.index) as u64;
                        batch.dropped_rest = Some(e);
                    } else {
                        self.stats.records_skipped += 1;
                        batch.skipped += 1;
                    }
                }
            }
        }
        batch
    }

    fn host_check(&self, conn: &SyncConn) -> Result<(), HostSkip> {
        if conn.caddr.is_ipv6() && !self.cfg.ipv6 {
            return Err(HostSkip::Ipv6Disabled);
        }
        if conn.pe_data.is_some() {
            let name = conn.pe_name.as_deref().unwrap_or_default();
            if !self.cfg.known_pes.iter().any(|pe| pe.as_slice() == name) {
                return Err(HostSkip::PeNotLoaded);
            }
        }
        Ok(())
    }

    /// The kernel's apply rules for an accepted record (facts §12.5 flags, §12.6).
    fn apply_rules(&mut self, conn: SyncConn, version: Version) -> BackupRecord {
        let flags = match version {
            Version::V1 => (conn.flags & flags::BACKUP_MASK) | flags::SYNC,
            Version::V0 => (conn.flags | flags::SYNC) & !flags::HASHED,
        };
        let template = flags & flags::TEMPLATE != 0;
        if template && conn.state >= 2 {
            self.stats.template_state_unusual += 1;
        }
        let timeout = match conn.timeout {
            Some(t) if t != 0 => Duration::from_secs(u64::from(t)),
            _ => self.default_timeout(conn.protocol, conn.state, template),
        };
        let fwmark = conn.fwmark.unwrap_or(0);
        let first = if fwmark != 0 && flags & flags::FWD_MASK != 0 { 0 } else { conn.dport };
        BackupRecord {
            dest_ports: [first, first ^ conn.dport],
            conn,
            version,
            flags,
            timeout,
            in_pkts: self.cfg.sync_threshold,
        }
    }

    /// The backup's timeout for a record without one.
    pub fn default_timeout(&self, protocol: Protocol, state: u16, template: bool) -> Duration {
        if template {
            return self.cfg.fallback_timeout;
        }
        let state = u8::try_from(state).ok();
        let t = match protocol {
            Protocol::Tcp => state.and_then(TcpState::from_u8).map(|s| self.cfg.tcp_timeouts.timeout(s)),
            Protocol::Udp => state.and_then(UdpState::from_u8).map(|s| self.cfg.udp_timeouts.timeout(s)),
            Protocol::Sctp => state.and_then(SctpState::from_u8).map(|s| self.cfg.sctp_timeouts.timeout(s)),
            _ => None,
        };
        t.unwrap_or(self.cfg.fallback_timeout)
    }

    /// Asks the master(s) for the whole table: the next [`Backup::poll_transmit`] sends a request, retried
    /// until a dump answers it; the outcome comes from [`Backup::poll_event`].
    pub fn request_resync(&mut self, now: Instant) {
        self.client.request(now);
    }

    /// Whether a resync is under way.
    pub fn resync_active(&self) -> bool {
        self.client.is_active()
    }

    /// Writes a due resync request into `buf` (cleared first); send it to the group on port index 0
    /// (or to the master directly). Changes after [`Backup::request_resync`], [`Backup::handle_datagram`]
    /// (a dump answering or failing) and as time passes.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let len = self.client.poll_transmit(now, self.cfg.syncid, buf)?;
        Some(Transmit { port_index: 0, len, n_records: 0, kind: TransmitKind::Resync(ResyncKind::Request) })
    }

    /// When to call [`Backup::handle_timeout`] (a request to retry, a silent dump to give up on).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// Retries or gives up on resync. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BackupEvent> {
        self.client.poll_outcome().map(|o| match o {
            ResyncOutcome::Complete { dump_id, n_records, n_messages } => {
                BackupEvent::ResyncComplete { dump_id, n_records, n_messages }
            }
            ResyncOutcome::Failed { attempts } => BackupEvent::ResyncFailed { attempts },
        })
    }
}
