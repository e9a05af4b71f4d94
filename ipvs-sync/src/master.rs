//! The sync master (sans-IO): decides, as the kernel does, which conn updates to send, and batches them
//! into messages per sync port (facts §12.7, §12.8, §12.10).
//!
//! # Driving it
//!
//! The engine owns the connection table; per conn it stores a small [`SyncState`] (the kernel's
//! `old_state` and `sync_endtime`) and passes it in with each update:
//!
//! 1. After each packet that passes a conn (or after "expire later", facts §3.5), call
//!    [`Master::conn_update`] with a [`ConnSyncInfo`]: the record as it would go on the wire now, the
//!    conn's current timeout, and `pkts` — the conn's `in_pkts` after the increment (for ONE_PACKET
//!    conns and for "expire later": [`Master::threshold_pkts`]).
//! 2. If the returned [`SyncOutcome::sync_controller`] is true and the conn has a controller (its
//!    persistence template, or the FTP control conn), call [`Master::conn_update`] again for the
//!    controller with `pkts` = [`Master::controller_pkts`] (a template's `in_pkts` is incremented there),
//!    and so on up the chain (DATA → CTL → TPL).
//! 3. Drain [`Master::poll_transmit`] into the sync sockets (port index `i` → UDP port base + `i`), and
//!    call [`Master::handle_timeout`] at [`Master::poll_timeout`].
//!
//! # The send rules (facts §12.7, with the §12.10 corrections)
//!
//! - ONE_PACKET conns are never sent; v0 cannot carry IPv6 records (skipped).
//! - Templates pass every state rule and the `pkts % sync_period` rule.
//! - With `sync_persist_mode`, conns controlled by a template are never sent (their template is).
//! - TCP: only ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and TIME_WAIT are synced; a change of state since
//!   the last sync into any of them but ESTABLISHED is sent at once. SCTP likewise with ESTABLISHED,
//!   SHUTDOWN_SENT, SHUTDOWN_RECEIVED, SHUTDOWN_ACK_SENT and CLOSED.
//! - `sync_refresh_period` > 0: an update whose reported expiry (`now + timeout`) moved by less than
//!   `min(sync_refresh_period, max(timeout / 2, 10 s))` since the last sync is suppressed, unless a retry
//!   is left (`sync_retries`) and `sync_refresh_period / 8` has passed since the last sync.
//! - Packet count: with `sync_period` > 0 a non-template is sent when `pkts % sync_period ==
//!   sync_threshold`; with `sync_period` = 0 and no refresh period, only when `pkts == sync_threshold`.
//! - v1 evaluates the controller after every update of a conn, sent or not; v0 only after the conn was
//!   sent.
//!
//! With the defaults (threshold 3, period 50) a TCP conn is sent at its 3rd, 53rd, 103rd… packet and at
//! once on each change into FIN_WAIT/CLOSE/CLOSE_WAIT/TIME_WAIT.
//!
//! # Batching (facts §12.2, §12.8)
//!
//! Each sync port has a current message; a record that does not fit (more than `maxlen` bytes, or the
//! 255-record limit the kernel lacks) closes it and starts the next one. Closed messages wait in the
//! port's queue for [`Master::poll_transmit`]; a queue holding `qlen_max` messages drops the next one
//! (counted). A partly filled message is closed `flush_time` (2 s, the kernel's `IPVS_SYNC_FLUSH_TIME`)
//! after its first record. A single record longer than `maxlen` gets a message of its own. v0 closes a
//! message as soon as fewer than 48 bytes (`FULL_CONN_SIZE`) are left, as the kernel does.
//!
//! Differences from the kernel, by design:
//! - **Port mapping.** The kernel picks a sync thread from the conn's memory address, which cannot be
//!   reproduced; here the port is a fixed hash of the client tuple (family, protocol, client address and
//!   port) modulo the port count ([`port_index`]), so a conn always uses the same port and tests are
//!   deterministic. A conn and its template usually use different ports, as in the kernel.
//! - **Timing.** The kernel's thread wakes 20 ms after the first queued message (at once after 8) and
//!   checks the 2 s flush age once per second, so a partial message leaves 2–3 s after its first record.
//!   Here closed messages are available to [`Master::poll_transmit`] at once and a partial message closes
//!   exactly `flush_time` after its first record; a v1 message that cannot take even the smallest record
//!   closes at once instead of waiting for the next record. Which records travel together is unchanged.
//! - **255 records** at most per message (the kernel's `nr_conns` could wrap with a huge `sync_maxlen`).
//! - Stopping the master (dropping it) discards queued messages, as the kernel does.
//!
//! The master also answers bulk-resync requests ([`crate::resync`]): [`Master::handle_datagram`],
//! [`Master::begin_resync`], [`Master::push_resync_conns`].

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use ipvs_proto::{AddressFamily, Duration, Instant, Protocol};

use crate::encode::{encoded_len, validate, MessageWriter};
use crate::record::{flags, limits, SyncConn, Version};
use crate::resync::{self, ResyncConfig, ResyncKind, ResyncMessage, ResyncServer, ResyncServerStats};

/// Most sync ports (`IPVS_SYNC_PORTS_MAX`).
pub const MAX_PORTS: u8 = 64;

/// The kernel's `IPVS_SYNC_FLUSH_TIME`: a partly filled message is sent this long after its first record.
pub const FLUSH_TIME: Duration = Duration::from_secs(2);

/// The master's configuration: the daemon parameters (fixed at start) and the sync sysctls (facts §11,
/// §12.9).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct MasterConfig {
    /// Sync id written in every message (0..=255; default 0). Fixed at start.
    pub syncid: u8,
    /// `sync_version`: the wire version sent (default v1).
    pub version: Version,
    /// Family of the multicast group: sets the default and the largest `maxlen`. Fixed at start.
    pub group: AddressFamily,
    /// `sync_maxlen`: most bytes of UDP payload per message (default 1472 for an IPv4 group, 1452 for
    /// IPv6; 1..=65535 − 28 resp. − 48). Fixed at start.
    pub maxlen: usize,
    /// `sync_threshold` (first value, default 3): the packet count at which a conn is first sent.
    pub sync_threshold: u32,
    /// `sync_threshold` (second value, `sync_period`, default 50): re-send every this many packets;
    /// 0 = only once. Must exceed `sync_threshold` unless 0.
    pub sync_period: u32,
    /// `sync_refresh_period` (default 0 = off): re-send only when the reported expiry moved by this much.
    pub sync_refresh_period: Duration,
    /// `sync_retries` (0..=3, default 0): re-sends of an unchanged conn, `sync_refresh_period / 8` apart.
    pub sync_retries: u8,
    /// `sync_ports` (a power of two in 1..=64, default 1): sync ports (UDP base port + 0..n). Fixed at start.
    pub n_ports: u8,
    /// `sync_persist_mode` (default off): for conns controlled by a template, sync only the template.
    pub sync_persist_mode: bool,
    /// `sync_qlen_max`: most closed messages waiting per port (default 256; the kernel's default depends
    /// on memory, with a compile-time fallback of 32). Must be at least 1.
    pub qlen_max: usize,
    /// Age at which a partly filled message is sent (default [`FLUSH_TIME`], 2 s).
    pub flush_time: Duration,
    /// `sync_sock_size` (bytes, 0 = system default): not used here; the I/O driver applies it as
    /// `SO_SNDBUF`.
    pub sock_size: u32,
    /// Bulk resync (beyond the kernel; see [`crate::resync`]).
    pub resync: ResyncConfig,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            syncid: 0,
            version: Version::V1,
            group: AddressFamily::Inet,
            maxlen: limits::DEFAULT_MAXLEN_INET,
            sync_threshold: 3,
            sync_period: 50,
            sync_refresh_period: Duration::ZERO,
            sync_retries: 0,
            n_ports: 1,
            sync_persist_mode: false,
            qlen_max: 256,
            flush_time: FLUSH_TIME,
            sock_size: 0,
            resync: ResyncConfig::default(),
        }
    }
}

impl MasterConfig {
    /// The defaults for an IPv6 multicast group (`maxlen` 1452).
    pub fn inet6() -> Self {
        Self { group: AddressFamily::Inet6, maxlen: limits::DEFAULT_MAXLEN_INET6, ..Self::default() }
    }

    /// IP + UDP header length for the group family (28 or 48).
    pub const fn header_overhead(&self) -> usize {
        match self.group {
            AddressFamily::Inet => 28,
            AddressFamily::Inet6 => 48,
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first invalid field, as a [`ConfigError`] naming it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max = limits::MAX_MESSAGE_LEN - self.header_overhead();
        if self.maxlen == 0 || self.maxlen > max {
            return Err(ConfigError::Maxlen { value: self.maxlen, min: 1, max });
        }
        if self.sync_period != 0 && self.sync_threshold >= self.sync_period {
            return Err(ConfigError::SyncThreshold { threshold: self.sync_threshold, period: self.sync_period });
        }
        if self.sync_retries > 3 {
            return Err(ConfigError::SyncRetries(self.sync_retries));
        }
        if self.n_ports == 0 || self.n_ports > MAX_PORTS || !self.n_ports.is_power_of_two() {
            return Err(ConfigError::NPorts(self.n_ports));
        }
        if self.qlen_max == 0 {
            return Err(ConfigError::QlenMax);
        }
        if self.resync.window == 0 {
            return Err(ConfigError::ResyncWindow);
        }
        if self.resync.burst == 0 {
            return Err(ConfigError::ResyncBurst);
        }
        Ok(())
    }
}

/// An invalid [`MasterConfig`] field (caller misuse).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `maxlen` is outside `min..=max` (master: 1..=65535 − IP/UDP header length of the group family;
    /// backup: 1024..=65507).
    Maxlen {
        /// The value given.
        value: usize,
        /// The smallest allowed.
        min: usize,
        /// The largest allowed.
        max: usize,
    },
    /// `sync_threshold` is not below a non-zero `sync_period`.
    SyncThreshold {
        /// The threshold given.
        threshold: u32,
        /// The period given.
        period: u32,
    },
    /// `sync_retries` is above 3.
    SyncRetries(u8),
    /// `n_ports` is not a power of two in 1..=64.
    NPorts(u8),
    /// `qlen_max` is 0.
    QlenMax,
    /// `resync.window` is 0.
    ResyncWindow,
    /// `resync.burst` is 0.
    ResyncBurst,
    /// [`Master::reconfigure`] tried to change a field fixed when the daemon starts (named).
    FixedAtStart(&'static str),
}

impl ConfigError {
    /// The name of the offending field.
    pub const fn field(self) -> &'static str {
        match self {
            Self::Maxlen { .. } => "maxlen",
            Self::SyncThreshold { .. } => "sync_threshold",
            Self::SyncRetries(_) => "sync_retries",
            Self::NPorts(_) => "n_ports",
            Self::QlenMax => "qlen_max",
            Self::ResyncWindow => "resync.window",
            Self::ResyncBurst => "resync.burst",
            Self::FixedAtStart(field) => field,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Maxlen { value, min, max } => write!(f, "maxlen: {value} is not in {min}..={max}"),
            Self::SyncThreshold { threshold, period } => {
                write!(f, "sync_threshold: threshold {threshold} must be below period {period} (or period 0)")
            }
            Self::SyncRetries(v) => write!(f, "sync_retries: {v} is not in 0..=3"),
            Self::NPorts(v) => write!(f, "n_ports: {v} is not a power of two in 1..=64"),
            Self::QlenMax => f.write_str("qlen_max: must be at least 1"),
            Self::ResyncWindow => f.write_str("resync.window: must be at least 1"),
            Self::ResyncBurst => f.write_str("resync.burst: must be at least 1"),
            Self::FixedAtStart(field) => write!(f, "{field}: fixed when the daemon starts"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Per-conn sync bookkeeping the engine stores in each conn and passes to [`Master::conn_update`]
/// (the kernel's `cp->old_state` and `cp->sync_endtime`).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct SyncState {
    /// The protocol state at the last sync.
    pub old_state: u16,
    /// The expiry reported at the last sync (`now + timeout`, caller's milliseconds, rounded down to a
    /// multiple of 4); the low two bits count refresh retries.
    pub sync_endtime: u64,
}

impl SyncState {
    /// The state of a new conn created at `now` (state 0, expiry `now`), as `ip_vs_conn_new` sets it.
    pub const fn new(now: Instant) -> Self {
        Self { old_state: 0, sync_endtime: now.total_millis() & !3 }
    }

    /// The state of a conn a backup created at `now` from a record in `state`.
    pub const fn synced(now: Instant, state: u16) -> Self {
        Self { old_state: state, sync_endtime: now.total_millis() & !3 }
    }

    /// Refresh retries used since the last change (0..=3).
    pub const fn retries(&self) -> u8 {
        (self.sync_endtime & 3) as u8
    }
}

/// What [`Master::conn_update`] needs to know about a conn (facts §12.7's `sync_conn_needed`).
#[derive(Clone, Copy, Debug)]
pub struct ConnSyncInfo<'a> {
    /// The record as it would go on the wire now: the conn's addresses, flags (`TEMPLATE`,
    /// `ONE_PACKET`… — `HASHED` is cleared here), state, seq adjustments and PE data. The v1 `timeout`
    /// field is written from [`ConnSyncInfo::timeout`], whatever `record.timeout` says.
    pub record: &'a SyncConn,
    /// The conn's current timeout (`cp->timeout`: its state's timeout; a template's persistence timeout).
    pub timeout: Duration,
    /// The packet count: the conn's `in_pkts` after the increment; [`Master::threshold_pkts`] for a
    /// ONE_PACKET conn or an "expire later" update; [`Master::controller_pkts`] for a controller.
    pub pkts: u32,
    /// Whether the conn is controlled by a persistence template (for `sync_persist_mode`).
    pub controlled_by_template: bool,
}

/// Why an update was not queued.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum SkipReason {
    /// ONE_PACKET conns are never synced.
    OnePacket,
    /// v0 cannot carry IPv6.
    Ipv6InV0,
    /// `sync_persist_mode`: a template-controlled conn.
    PersistMode,
    /// A TCP/SCTP state that is never synced (e.g. SYN_RECV).
    StateNotSynced,
    /// `sync_refresh_period`: the reported expiry barely moved and no retry is left.
    RefreshUnchanged,
    /// `sync_refresh_period`: a retry is left but `sync_refresh_period / 8` has not passed.
    RetryTooEarly,
    /// The packet-count rule (`pkts % sync_period != sync_threshold`, or `pkts != sync_threshold`).
    PacketCount,
    /// The record cannot be encoded (mixed address families, PE field lengths): engine misuse.
    Unencodable,
}

impl SkipReason {
    /// Every reason, in the order of the rules.
    pub const ALL: [Self; 8] = [
        Self::OnePacket,
        Self::Ipv6InV0,
        Self::PersistMode,
        Self::StateNotSynced,
        Self::RefreshUnchanged,
        Self::RetryTooEarly,
        Self::PacketCount,
        Self::Unencodable,
    ];

    const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case identifier, for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OnePacket => "one_packet",
            Self::Ipv6InV0 => "ipv6_in_v0",
            Self::PersistMode => "persist_mode",
            Self::StateNotSynced => "state_not_synced",
            Self::RefreshUnchanged => "refresh_unchanged",
            Self::RetryTooEarly => "retry_too_early",
            Self::PacketCount => "packet_count",
            Self::Unencodable => "unencodable",
        }
    }
}

/// What [`Master::conn_update`] did.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[must_use]
pub struct SyncOutcome {
    /// `Ok(())` if the record was queued, else why not.
    pub decision: Result<(), SkipReason>,
    /// Whether the engine must now evaluate the conn's controller, if it has one (v1: always; v0: only
    /// after the conn was queued).
    pub sync_controller: bool,
}

impl SyncOutcome {
    /// Whether the record was queued.
    pub const fn queued(&self) -> bool {
        self.decision.is_ok()
    }
}

/// What kind of datagram a [`Transmit`] describes.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum TransmitKind {
    /// An ordinary sync message (v0 or v1), read by Linux backups too.
    Sync,
    /// A resync message (ignored by Linux backups).
    Resync(ResyncKind),
}

/// A datagram written into the caller's buffer by a `poll_transmit`.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[must_use]
pub struct Transmit {
    /// The sync port index: send to the group on UDP port base + `port_index`.
    pub port_index: u8,
    /// The datagram's length (the whole buffer).
    pub len: usize,
    /// Sync records in it (0 for resync control messages).
    pub n_records: usize,
    /// What it is.
    pub kind: TransmitKind,
}

/// Something the engine must react to.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum MasterEvent {
    /// A dump started: rewind the table cursor and feed [`Master::push_resync_conns`] from the start.
    ResyncStarted {
        /// The dump's id.
        dump_id: u32,
    },
    /// A dump's End left.
    ResyncFinished {
        /// The dump's id.
        dump_id: u32,
        /// Its `Data` messages.
        n_messages: u32,
        /// Its records.
        n_records: u32,
    },
}

/// What [`Master::handle_datagram`] found.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum MasterInput {
    /// A resync request (acted on unless resync is disabled or the sync id differs; see the stats).
    ResyncRequest {
        /// The requester's nonce.
        nonce: u32,
    },
    /// Something a master ignores: an ordinary sync message, or another master's resync traffic.
    Ignored,
    /// A malformed resync message.
    Malformed(resync::ResyncError),
}

/// Counters of a [`Master`].
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct MasterStats {
    /// [`Master::conn_update`] calls.
    pub updates: u64,
    /// Records queued into messages.
    pub records_queued: u64,
    /// Updates not queued, per [`SkipReason`] (index = position in [`SkipReason::ALL`]).
    pub skipped: [u64; 8],
    /// Messages closed (full, aged, or flushed).
    pub messages_closed: u64,
    /// Messages dropped because the port's queue was full.
    pub messages_dropped: u64,
    /// Records in dropped messages.
    pub records_dropped: u64,
    /// Sync messages handed out by [`Master::poll_transmit`].
    pub messages_sent: u64,
    /// Records in them.
    pub records_sent: u64,
    /// Datagrams given to [`Master::handle_datagram`] that a master ignores.
    pub datagrams_ignored: u64,
    /// Resync counters.
    pub resync: ResyncServerStats,
}

impl MasterStats {
    /// Updates skipped for `reason`.
    pub const fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped[reason.index()]
    }

    /// Updates skipped for any reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }
}

/// The sync port (index) of a record: a fixed hash of (family, protocol, client address, client port),
/// modulo `n_ports` (0 when `n_ports` ≤ 1).
///
/// The kernel maps conns to threads by memory address, which no other implementation can reproduce; this
/// mapping is deterministic across runs and hosts.
pub fn port_index(conn: &SyncConn, n_ports: u8) -> u8 {
    if n_ports <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a 64
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(conn.af().linux_number() as u8);
    eat(conn.protocol.into());
    match conn.caddr {
        core::net::IpAddr::V4(a) => a.octets().into_iter().for_each(&mut eat),
        core::net::IpAddr::V6(a) => a.octets().into_iter().for_each(&mut eat),
    }
    conn.cport.to_be_bytes().into_iter().for_each(&mut eat);
    // Final avalanche (murmur3 fmix64), so the low bits depend on every input byte.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % u64::from(n_ports)) as u8
}

#[derive(Debug)]
struct Current {
    writer: MessageWriter,
    first_use: Instant,
    /// The kernel's buffer end: `max(maxlen, header + first record)`.
    end: usize,
}

#[derive(Debug, Default)]
struct Port {
    current: Option<Current>,
    queue: VecDeque<(Vec<u8>, usize)>,
}

/// Most spare buffers kept for reuse.
const SPARE_BUFFERS: usize = 16;

/// The sync master. See the [module docs](self).
#[derive(Debug)]
pub struct Master {
    cfg: MasterConfig,
    ports: Vec<Port>,
    next_port: usize,
    spare: Vec<Vec<u8>>,
    resync: ResyncServer,
    stats: MasterStats,
}

impl Master {
    /// A master with configuration `cfg`.
    ///
    /// # Errors
    /// [`MasterConfig::validate`]'s.
    pub fn new(cfg: MasterConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let ports = (0..cfg.n_ports).map(|_| Port::default()).collect();
        let resync = ResyncServer::new(cfg.resync, cfg.syncid, cfg.maxlen, 0x1000_0000 | u32::from(cfg.syncid));
        Ok(Self { cfg, ports, next_port: 0, spare: Vec::new(), resync, stats: MasterStats::default() })
    }

    /// The configuration.
    pub const fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> MasterStats {
        let mut s = self.stats;
        s.resync = self.resync.stats;
        s
    }

    /// Changes the sysctls at run time (version, thresholds, refresh, retries, persist mode, queue
    /// length, flush time, socket size, resync pacing). Changing the version closes the partly filled
    /// messages (the kernel closes them when the next record of the other version comes).
    ///
    /// # Errors
    /// [`MasterConfig::validate`]'s, or [`ConfigError::FixedAtStart`] for `syncid`, `group`, `maxlen` or
    /// `n_ports`; the configuration is then unchanged.
    pub fn reconfigure(&mut self, now: Instant, cfg: MasterConfig) -> Result<(), ConfigError> {
        cfg.validate()?;
        let fixed = [
            ("syncid", cfg.syncid != self.cfg.syncid),
            ("group", cfg.group != self.cfg.group),
            ("maxlen", cfg.maxlen != self.cfg.maxlen),
            ("n_ports", cfg.n_ports != self.cfg.n_ports),
        ];
        if let Some((field, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(ConfigError::FixedAtStart(field));
        }
        let version_changed = cfg.version != self.cfg.version;
        self.resync.set_config(cfg.resync);
        self.cfg = cfg;
        if version_changed {
            self.flush(now);
        }
        Ok(())
    }

    /// The `pkts` to pass for a ONE_PACKET conn and for an "expire later" update: `sync_threshold`.
    pub const fn threshold_pkts(&self) -> u32 {
        self.cfg.sync_threshold
    }

    /// The `pkts` to pass for a controller after [`SyncOutcome::sync_controller`]: for a template, its
    /// `in_pkts` incremented (here, in the engine's counter); for any other controller `sync_threshold`.
    pub fn controller_pkts(&self, controller_is_template: bool, controller_in_pkts: &mut u32) -> u32 {
        if controller_is_template {
            *controller_in_pkts = controller_in_pkts.wrapping_add(1);
            *controller_in_pkts
        } else {
            self.cfg.sync_threshold
        }
    }

    /// Decides whether to send this update of a conn (facts §12.7) and queues its record if so;
    /// updates `state` as the kernel updates the conn. The outcome says whether to go on with the
    /// controller.
    pub fn conn_update(&mut self, now: Instant, info: &ConnSyncInfo<'_>, state: &mut SyncState) -> SyncOutcome {
        self.stats.updates += 1;
        let rec = info.record;
        let v1 = self.cfg.version == Version::V1;
        let decision = if !v1 && rec.caddr.is_ipv6() {
            Err(SkipReason::Ipv6InV0)
        } else if rec.flags & flags::ONE_PACKET != 0 {
            Err(SkipReason::OnePacket)
        } else {
            self.sync_needed(now, info, state).and_then(|()| self.queue_record(now, info))
        };
        match decision {
            Ok(()) => self.stats.records_queued += 1,
            Err(r) => self.stats.skipped[r.index()] += 1,
        }
        SyncOutcome { decision, sync_controller: v1 || decision.is_ok() }
    }

    /// The kernel's `ip_vs_sync_conn_needed`.
    fn sync_needed(&self, now: Instant, info: &ConnSyncInfo<'_>, st: &mut SyncState) -> Result<(), SkipReason> {
        let rec = info.record;
        let now_ms = now.total_millis();
        let timeout = info.timeout.total_millis();
        let orig = st.sync_endtime;
        let mut n = now_ms.wrapping_add(timeout) & !3;
        let template = rec.is_template();
        let force_now = if template {
            false
        } else if self.cfg.sync_persist_mode && info.controlled_by_template {
            return Err(SkipReason::PersistMode);
        } else {
            let established = match rec.protocol {
                Protocol::Tcp => Some(ipvs_proto::state::TcpState::Established.as_u8()),
                Protocol::Sctp => Some(ipvs_proto::state::SctpState::Established.as_u8()),
                _ => None,
            };
            match established {
                Some(es) => {
                    if !resync::state_is_synced(rec.protocol, rec.state, false) {
                        return Err(SkipReason::StateNotSynced);
                    }
                    rec.state != st.old_state && rec.state != u16::from(es)
                }
                None => false,
            }
        };
        if !force_now {
            let refresh = self.cfg.sync_refresh_period.total_millis();
            if refresh > 0 {
                let diff = (n as i128 - orig as i128).unsigned_abs();
                let min_diff = (timeout / 2).max(10_000);
                if diff < u128::from(refresh.min(min_diff)) {
                    let retries = orig & 3;
                    if retries >= u64::from(self.cfg.sync_retries) {
                        return Err(SkipReason::RefreshUnchanged);
                    }
                    if (now_ms as i128) < orig as i128 - timeout as i128 + (refresh >> 3) as i128 {
                        return Err(SkipReason::RetryTooEarly);
                    }
                    n |= retries + 1;
                }
            }
            let threshold = self.cfg.sync_threshold;
            if self.cfg.sync_period > 0 {
                if !template && info.pkts % self.cfg.sync_period != threshold {
                    return Err(SkipReason::PacketCount);
                }
            } else if refresh == 0 && info.pkts != threshold {
                return Err(SkipReason::PacketCount);
            }
        }
        st.old_state = rec.state;
        st.sync_endtime = n;
        Ok(())
    }

    fn queue_record(&mut self, now: Instant, info: &ConnSyncInfo<'_>) -> Result<(), SkipReason> {
        let version = self.cfg.version;
        let timeout = Some(u32::try_from(info.timeout.secs()).unwrap_or(u32::MAX));
        let rec = info.record;
        let needs_fix = rec.flags & flags::HASHED != 0 || (version == Version::V1 && rec.timeout != timeout);
        let rec: Cow<'_, SyncConn> = if needs_fix {
            let mut r = rec.clone();
            r.flags &= !flags::HASHED;
            r.timeout = timeout;
            Cow::Owned(r)
        } else {
            Cow::Borrowed(rec)
        };
        validate(&rec, version).map_err(|_| SkipReason::Unencodable)?;
        let idx = usize::from(port_index(&rec, self.cfg.n_ports));
        if let Some(cur) = &mut self.ports[idx].current {
            if cur.writer.version() == version && cur.writer.try_push(&rec) {
                self.close_if_full(idx);
                return Ok(());
            }
            self.close(idx);
        }
        let buf = self.spare.pop().unwrap_or_default();
        let mut writer = MessageWriter::begin_in(buf, version, self.cfg.syncid, self.cfg.maxlen);
        let end = self.cfg.maxlen.max(version.header_len() + encoded_len(&rec, version));
        // An empty writer takes any record that passed validate().
        let pushed = writer.try_push(&rec);
        debug_assert!(pushed);
        self.ports[idx].current = Some(Current { writer, first_use: now, end });
        self.close_if_full(idx);
        Ok(())
    }

    /// Closes port `idx`'s message if no further record can fit: 255 records; v0: fewer than 48 bytes
    /// left (the kernel's rule); v1: no room for the smallest record.
    fn close_if_full(&mut self, idx: usize) {
        let Some(cur) = &self.ports[idx].current else { return };
        let w = &cur.writer;
        let full = w.n_conns() >= limits::MAX_CONNS
            || match w.version() {
                Version::V0 => w.len() + limits::V0_FULL_LEN > cur.end,
                Version::V1 => ((w.len() + 3) & !3) + limits::V1_INET_LEN > cur.end,
            };
        if full {
            self.close(idx);
        }
    }

    /// Moves port `idx`'s current message to its queue, or drops it if the queue is full.
    fn close(&mut self, idx: usize) {
        let Some(cur) = self.ports[idx].current.take() else { return };
        if cur.writer.is_empty() {
            return;
        }
        self.stats.messages_closed += 1;
        let n = cur.writer.n_conns();
        let bytes = cur.writer.finish();
        let port = &mut self.ports[idx];
        if port.queue.len() >= self.cfg.qlen_max {
            self.stats.messages_dropped += 1;
            self.stats.records_dropped += n as u64;
            self.recycle(bytes);
        } else {
            port.queue.push_back((bytes, n));
        }
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() > 0 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Closes every partly filled message now (e.g. before stopping, to send what is pending).
    pub fn flush(&mut self, now: Instant) {
        let _ = now;
        for idx in 0..self.ports.len() {
            self.close(idx);
        }
    }

    /// Closes the partly filled messages that are `flush_time` old. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        for idx in 0..self.ports.len() {
            if let Some(cur) = &self.ports[idx].current {
                if now >= cur.first_use + self.cfg.flush_time {
                    self.close(idx);
                }
            }
        }
    }

    /// The next time a partly filled message ages out, or a paced resync message may leave: call
    /// [`Master::handle_timeout`] (or just [`Master::poll_transmit`]) then.
    ///
    /// Changes after [`Master::conn_update`] (a new message), [`Master::poll_transmit`],
    /// [`Master::handle_timeout`], [`Master::flush`] and the resync calls. Messages already closed do not
    /// show here: drain [`Master::poll_transmit`] after every input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let aged = self.ports.iter().filter_map(|p| p.current.as_ref()).map(|c| c.first_use + self.cfg.flush_time);
        aged.chain(self.resync.poll_timeout()).min()
    }

    /// Writes the next datagram to send into `buf` (replacing its contents; the buffer may be swapped for
    /// one of the master's, so pass the same `Vec` each time to recycle allocations).
    ///
    /// Ordinary sync messages first, round-robin over the ports, then paced resync messages. Runs
    /// [`Master::handle_timeout`] first. Changes after [`Master::conn_update`], [`Master::flush`],
    /// [`Master::handle_timeout`], the resync calls, and as time passes (aging, pacing).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.handle_timeout(now);
        let n = self.ports.len();
        for i in 0..n {
            let idx = (self.next_port + i) % n;
            if let Some((mut bytes, n_records)) = self.ports[idx].queue.pop_front() {
                self.next_port = (idx + 1) % n;
                core::mem::swap(buf, &mut bytes);
                self.recycle(bytes);
                self.stats.messages_sent += 1;
                self.stats.records_sent += n_records as u64;
                return Some(Transmit { port_index: idx as u8, len: buf.len(), n_records, kind: TransmitKind::Sync });
            }
        }
        let (kind, n_records) = self.resync.poll_transmit(now, buf)?;
        Some(Transmit { port_index: 0, len: buf.len(), n_records, kind: TransmitKind::Resync(kind) })
    }

    /// Closed messages waiting in the port queues.
    pub fn queued_messages(&self) -> usize {
        self.ports.iter().map(|p| p.queue.len()).sum()
    }

    /// Feeds a datagram heard on the sync group (or sent to the master directly): resync requests start
    /// or join a dump; anything else is ignored and counted.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> MasterInput {
        let _ = now;
        match resync::parse(bytes) {
            Ok(ResyncMessage::Request { syncid, nonce }) => {
                self.resync.handle_request(syncid, nonce);
                MasterInput::ResyncRequest { nonce }
            }
            Ok(_) | Err(resync::ResyncError::NotResync) => {
                self.stats.datagrams_ignored += 1;
                MasterInput::Ignored
            }
            Err(e) => {
                self.stats.datagrams_ignored += 1;
                MasterInput::Malformed(e)
            }
        }
    }

    /// Starts an unsolicited dump of the whole table (e.g. when a backup is known to have started).
    /// Returns `true` if a dump starts now (or one whose Begin has not left yet covers the request),
    /// `false` if a running dump is past its Begin and another full pass will follow it.
    /// [`MasterEvent::ResyncStarted`] announces each dump.
    pub fn begin_resync(&mut self, now: Instant) -> bool {
        let _ = now;
        self.resync.start(None)
    }

    /// Whether a dump is running.
    pub fn resync_running(&self) -> bool {
        self.resync.dump_running()
    }

    /// How many records [`Master::push_resync_conns`] would take now: 0 when no dump runs, before the
    /// engine has polled the dump's [`MasterEvent::ResyncStarted`] (so it cannot feed a new dump from a
    /// stale cursor), when the table is done, or while enough dump messages wait for pacing.
    #[must_use]
    pub fn resync_wanted(&self) -> usize {
        self.resync.wanted()
    }

    /// Feeds the running dump from the engine's table cursor: pulls at most [`Master::resync_wanted`]
    /// records from `conns`. When `conns` runs out (returns `None`), the table is done and the dump's End
    /// is queued. Returns how many records were pulled.
    ///
    /// Give every conn the ordinary path would sync (templates, and conns — without the
    /// template-controlled ones when `sync_persist_mode` is on); ONE_PACKET conns and TCP/SCTP conns in
    /// states the kernel does not sync are filtered here. Records are always v1.
    pub fn push_resync_conns<I: Iterator<Item = SyncConn>>(&mut self, now: Instant, conns: &mut I) -> usize {
        let _ = now;
        self.resync.push(conns)
    }

    /// The next event for the engine.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MasterEvent> {
        self.resync.pop_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn tcp(cport: u16, state: u16) -> SyncConn {
        SyncConn {
            protocol: Protocol::Tcp,
            caddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            cport,
            vaddr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            vport: 80,
            daddr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
            dport: 80,
            flags: 0x0040,
            state,
            timeout: None,
            fwmark: Some(0),
            in_seq: None,
            out_seq: None,
            pe_name: None,
            pe_data: None,
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = [
            (MasterConfig { maxlen: 0, ..MasterConfig::default() }, "maxlen"),
            (MasterConfig { maxlen: 65508, ..MasterConfig::default() }, "maxlen"),
            (MasterConfig { maxlen: 65488, ..MasterConfig::inet6() }, "maxlen"),
            (MasterConfig { sync_threshold: 50, ..MasterConfig::default() }, "sync_threshold"),
            (MasterConfig { sync_retries: 4, ..MasterConfig::default() }, "sync_retries"),
            (MasterConfig { n_ports: 0, ..MasterConfig::default() }, "n_ports"),
            (MasterConfig { n_ports: 3, ..MasterConfig::default() }, "n_ports"),
            (MasterConfig { n_ports: 128, ..MasterConfig::default() }, "n_ports"),
            (MasterConfig { qlen_max: 0, ..MasterConfig::default() }, "qlen_max"),
        ];
        for (cfg, field) in bad {
            let e = Master::new(cfg).unwrap_err();
            assert_eq!(e.field(), field, "{e}");
            assert!(alloc::format!("{e}").starts_with(field));
        }
        assert!(Master::new(MasterConfig { maxlen: 65507, ..MasterConfig::default() }).is_ok());
        assert!(Master::new(MasterConfig { sync_threshold: 60, sync_period: 0, ..MasterConfig::default() }).is_ok());
        assert_eq!(MasterConfig::inet6().maxlen, 1452);
        let mut m = Master::new(MasterConfig::default()).unwrap();
        let e = m.reconfigure(Instant::ZERO, MasterConfig { n_ports: 2, ..MasterConfig::default() });
        assert_eq!(e, Err(ConfigError::FixedAtStart("n_ports")));
        assert!(m.reconfigure(Instant::ZERO, MasterConfig { sync_period: 0, ..MasterConfig::default() }).is_ok());
    }

    #[test]
    fn hashed_is_cleared_and_v1_timeout_written() {
        let mut m = Master::new(MasterConfig { sync_period: 0, ..MasterConfig::default() }).unwrap();
        let rec = tcp(1000, 1);
        let mut st = SyncState::new(Instant::ZERO);
        let info =
            ConnSyncInfo { record: &rec, timeout: Duration::from_secs(900), pkts: 3, controlled_by_template: false };
        assert!(m.conn_update(Instant::ZERO, &info, &mut st).queued());
        m.flush(Instant::ZERO);
        let mut buf = Vec::new();
        let t = m.poll_transmit(Instant::ZERO, &mut buf).unwrap();
        let d = crate::decode::decode_message(&buf[..t.len]).unwrap().into_message();
        assert_eq!(d.conns[0].flags, 0);
        assert_eq!(d.conns[0].timeout, Some(900));
    }

    #[test]
    fn port_index_is_stable_and_spread() {
        let mut counts = [0u32; 8];
        for p in 0..8000u16 {
            counts[usize::from(port_index(&tcp(p, 1), 8))] += 1;
        }
        std::println!("port spread of 8000 conns over 8 ports: {counts:?}");
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)));
        assert_eq!(port_index(&tcp(1234, 1), 8), port_index(&tcp(1234, 5), 8));
        assert_eq!(port_index(&tcp(1234, 1), 1), 0);
        let mut v6 = tcp(1234, 1);
        v6.caddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(port_index(&v6, 64) < 64);
    }
}
