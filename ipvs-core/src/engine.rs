//! The director engine: configuration, the [`Engine`] itself, its timers, events and listings.
//!
//! The control plane (services and real servers, ipvsadm semantics) is in [`crate::service`]'s `impl Engine`,
//! the packet path in [`crate::pipeline`]'s.
//!
//! # Threads
//!
//! Every method takes `&self`; share the engine with an `Arc`. The packet path holds a read lock on the
//! service configuration for the duration of a packet (or a burst), so packets of many threads run in
//! parallel; control operations take the write lock. The connection table is lock-sharded
//! ([`ipvs_conn::ConnTable`]); each service's scheduler sits behind its own mutex (taken only to schedule a
//! new connection); each real server's counters behind their own.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use ipvs_conn::{ConnId, ConnTable, ConnTableConfig, ConnView, Expired, TEMPLATE_ASSURED};
use ipvs_proto::state::{SctpState, SctpTimeouts, TcpState, TcpTimeouts, UdpTimeouts};
use ipvs_proto::{AddressFamily, ConnFlags, DestId, Duration, Instant, Protocol, ServiceKey};
use ipvs_sched::SchedConfig;
use parking_lot::RwLock;

use crate::config::{ConfigError, DestConfig, ServiceConfig, Timeouts};
use crate::defense::{Defense, DefenseState, Occupancy};
use crate::events::{Event, EventQueue};
use crate::ipvsadm::{ConnRow, DestListing, ListingSnapshot, Rates as ListRates, ServiceListing, Stats as ListStats};
use crate::service::ControlState;
use crate::slow_start::SlowStart;
use crate::stats::{RateEstimator, Stats, StatsCell};
use crate::sync_glue::{SyncBackup, SyncMaster};
use crate::verdict::{DropCounters, DropCounts, DropReason};

/// How often the dest trash is looked at (the kernel's `IP_VS_DEST_TRASH_PERIOD / 2`).
pub(crate) const TRASH_CHECK: Duration = Duration::from_secs(60);
/// How long a trashed dest must be unused before it is freed (`IP_VS_DEST_TRASH_PERIOD`).
pub(crate) const TRASH_IDLE: Duration = Duration::from_secs(120);
/// The provisional timeout of a new conn until its first state transition.
pub(crate) const NEW_CONN_TIMEOUT: Duration = Duration::from_secs(3);

/// The sysctl-equivalents of the packet path (facts §11.1) that are not defense modes ([`Defense`]).
///
/// [`Default`] is the kernel's, plus `serve_removed_dests` (see there).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub struct Sysctls {
    /// `conn_reuse_mode` (default 1): bit value 1 reschedules a new SYN/INIT that hits a conn in TIME_WAIT or
    /// CLOSE (SCTP: CLOSED); bit value 2 also a SYN hitting a FIN_WAIT DR/TUN conn; 0 turns reuse handling off.
    pub conn_reuse_mode: u32,
    /// `expire_nodest_conn` (default off): a packet of a conn whose real server was removed expires the conn
    /// (and is scheduled anew); removing a real server deletes its conns at once. With it on, a new SYN/INIT on a
    /// conn whose real server has weight 0 is rescheduled too.
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template` (default off): persistence templates of a weight-0 real server are not reused.
    pub expire_quiescent_template: bool,
    /// `sloppy_tcp` (default off): any TCP packet without RST may create a conn, not only a SYN.
    pub sloppy_tcp: bool,
    /// `sloppy_sctp` (default off): any SCTP packet whose first chunk is not ABORT may create a conn.
    pub sloppy_sctp: bool,
    /// `nat_icmp_send` (default off): a reply from a NAT real server that matches no conn is answered with an
    /// ICMP port unreachable (except TCP RST and SCTP ABORT, which pass).
    pub nat_icmp_send: bool,
    /// `schedule_icmp` (default off): an ICMP error from a client about a flow of a service without a conn
    /// creates the conn from the quoted header.
    pub schedule_icmp: bool,
    /// `pmtu_disc` (default on): tunnels copy the inner DF bit to the outer header and refuse DF packets that do
    /// not fit; off: the outer header never has DF and IPv4 packets are forwarded whatever their size.
    pub pmtu_disc: bool,
    /// Beyond the kernel (default on): packets of a conn whose real server was removed keep being forwarded to
    /// it until the conn ends, so removing a server drains it. Off, with `expire_nodest_conn` off, such packets
    /// are dropped ([`DropReason::DestUnavailable`]) as the kernel drops them.
    pub serve_removed_dests: bool,
}

impl Default for Sysctls {
    fn default() -> Self {
        Self {
            conn_reuse_mode: 1,
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            sloppy_tcp: false,
            sloppy_sctp: false,
            nat_icmp_send: false,
            schedule_icmp: false,
            pmtu_disc: true,
            serve_removed_dests: true,
        }
    }
}

/// The per-state idle timeouts of the three protocols (one set per engine, as the kernel has one per
/// namespace).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct ProtoTimeouts {
    /// TCP, per state.
    pub tcp: TcpTimeouts,
    /// UDP.
    pub udp: UdpTimeouts,
    /// SCTP, per state.
    pub sctp: SctpTimeouts,
}

/// Everything [`Engine::new`] needs. Build it with [`EngineConfig::new`] and adjust the fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The connection table: capacity (hard bound on conns + templates), shards, SipHash key, wheel tick.
    pub conn_table: ConnTableConfig,
    /// Packet-path sysctls.
    pub sysctls: Sysctls,
    /// Defense modes (`drop_entry`, `drop_packet`, `secure_tcp`, `am_droprate`, `amemthresh`).
    pub defense: Defense,
    /// Per-state timeouts.
    pub timeouts: ProtoTimeouts,
    /// Beyond the kernel: real servers that come back ramp their weight up over this period (disabled by
    /// default).
    pub slow_start: SlowStart,
    /// Scheduler options shared by every service (Maglev table size, `sh` table bits, `twos` seed, lblc
    /// expiration); each service's `-b` flags replace `flags`.
    pub sched: SchedConfig,
    /// The path MTU toward real servers, unless a real server has its own ([`Engine::set_dest_mtu`]).
    pub mtu: u32,
    /// The director's IPv4 address: outer source of IPv4 tunnels and source of the ICMP errors it sends. When
    /// unset, the address the packet was sent to (the VIP) is used — which an IPv6 service's tunnel to an IPv4
    /// real server cannot use: such real servers need it ([`EngineError::NoTunnelSource`]).
    pub local_v4: Option<Ipv4Addr>,
    /// The director's IPv6 address, as `local_v4` (needed by an IPv4 service's tunnels to IPv6 real servers).
    pub local_v6: Option<Ipv6Addr>,
    /// Seed of the `drop_entry` defense's random choices.
    pub drop_seed: u64,
    /// Most events kept for [`Engine::poll_event`]; 0 turns events off.
    pub event_capacity: usize,
    /// The SIP persistence engine (`--pe sip`, facts §8.5; default on): persistent `--pe sip` services keep a
    /// template per SIP Call-ID ([`crate::pe_sip`]), real servers of such services may start calls
    /// (`conn_out`), and a sync backup applies records carrying a Call-ID. Off: like a kernel without the
    /// `ip_vs_pe_sip` module (the one that made `testdata/kernel-6.1/ipvsadm-listings.txt`) — `--pe sip`
    /// services are refused with [`EngineError::PersistenceEngineUnavailable`] and a backup skips records with
    /// PE data.
    pub sip_persistence_engine: bool,
    /// The engine's start time (the connection table's timer wheel starts here).
    pub start: Instant,
}

impl EngineConfig {
    /// Kernel defaults with a table of `capacity` conns keyed with `hash_key` (pick it at random): 16 shards,
    /// MTU 1500, no director address, 4096 events.
    pub fn new(capacity: usize, hash_key: [u8; 16]) -> Self {
        Self {
            conn_table: ConnTableConfig::new(capacity, hash_key),
            sysctls: Sysctls::default(),
            defense: Defense::default(),
            timeouts: ProtoTimeouts::default(),
            slow_start: SlowStart::DISABLED,
            sched: SchedConfig::default(),
            mtu: 1500,
            local_v4: None,
            local_v6: None,
            drop_seed: 0,
            event_capacity: 4096,
            sip_persistence_engine: true,
            start: Instant::ZERO,
        }
    }
}

/// Why the engine refused a configuration or a control operation.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum EngineError {
    /// A rule of the kernel or of ipvsadm (see [`ConfigError`]).
    Config(ConfigError),
    /// The connection table configuration is invalid.
    ConnTable(ipvs_conn::ConfigError),
    /// An MTU below 68 (IPv4's minimum).
    Mtu(u32),
    /// A tunnel real server of another family than its service needs the director's address of that family
    /// as the tunnel's outer source ([`EngineConfig::local_v4`] / [`EngineConfig::local_v6`]): the fallback
    /// of same-family tunnels, the virtual address, is of the wrong family.
    NoTunnelSource(AddressFamily),
    /// A real server address that is not unicast (unspecified, multicast or broadcast; kernel `EINVAL`).
    DestAddress(IpAddr),
    /// A persistence engine (`--pe sip`) turned off in this engine
    /// ([`EngineConfig::sip_persistence_engine`]), as in a kernel without the module (`ENOENT`).
    PersistenceEngineUnavailable,
    /// `--start-daemon` / `--stop-daemon` through [`Engine::apply`]: a daemon is sockets, which the embedder
    /// owns; it builds the `ipvs_sync` master or backup and starts it with [`Engine::start_sync_master`] or
    /// [`Engine::start_sync_backup`].
    SyncDaemonUnavailable,
    /// No real server with this id.
    UnknownDest(DestId),
    /// Every real server id has been used (2^32 − 1 additions).
    DestIdsExhausted,
}

impl From<ConfigError> for EngineError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<ipvs_conn::ConfigError> for EngineError {
    fn from(e: ipvs_conn::ConfigError) -> Self {
        Self::ConnTable(e)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::ConnTable(e) => write!(f, "connection table: {e}"),
            Self::Mtu(m) => write!(f, "mtu: {m} is below 68"),
            Self::NoTunnelSource(family) => {
                let (name, field) = match family {
                    AddressFamily::Inet => ("IPv4", "local_v4"),
                    AddressFamily::Inet6 => ("IPv6", "local_v6"),
                };
                write!(
                    f,
                    "real server address: a tunnel to an {name} real server of a service of the other family needs \
                     the director's {name} address (EngineConfig::{field})"
                )
            }
            Self::DestAddress(a) => write!(f, "real server address: {a} is not a unicast address"),
            Self::PersistenceEngineUnavailable => {
                f.write_str("persistence engine (--pe): not available (turned off in this engine)")
            }
            Self::SyncDaemonUnavailable => f.write_str(
                "sync daemon: start it from the embedder (the engine has no sockets; see start_sync_master)",
            ),
            Self::UnknownDest(id) => write!(f, "real server {}: no such real server", id.0),
            Self::DestIdsExhausted => f.write_str("real server: no ids left"),
        }
    }
}

impl std::error::Error for EngineError {}

/// A custom hook for connection updates (installed with [`Engine::with_sync_feed`]).
///
/// Called on the packet path, after each client packet of a conn in the table has been handled (the kernel's
/// `sync_conn(cp, pkts)` point, facts §4.1 step 9), with the conn as it is now and its incoming packet count.
/// Only client packets of table conns come here: the engine's own sync master ([`Engine::start_sync_master`])
/// also handles controllers (templates), one-packet conns and reply-driven state changes, and keeps the
/// kernel's per-conn sync bookkeeping — use it rather than a feed to run the sync protocol. Keep it short: it
/// runs on packet threads. A conn tunnelled to a real server of the other family has the unspecified address as
/// its `daddr` (see [`ConnView::daddr`]; [`Engine::conns`] shows the real one).
pub trait SyncFeed: fmt::Debug + Send + Sync {
    /// A conn (or template) was updated by a client packet; `pkts` is its `in_pkts` after the packet.
    fn conn_update(&self, now: Instant, id: ConnId, conn: &ConnView, pkts: u32);
}

/// One row of the connection listing ([`Engine::conns`]): what `/proc/net/ip_vs_conn` and `ipvsadm -L -c`
/// show.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ConnInfo {
    /// The conn's handle.
    pub id: ConnId,
    /// Transport protocol (number 0 for fwmark templates).
    pub protocol: Protocol,
    /// Client address and port (masked network and port 0 for templates).
    pub client: SocketAddr,
    /// Virtual address and port (the fwmark in the address, for fwmark templates).
    pub virt: SocketAddr,
    /// Real server address and port.
    pub real: SocketAddr,
    /// The state as `/proc/net/ip_vs_conn` names it (`ESTABLISHED`, `C-WAIT`, `UDP`, `ASSURED`, …).
    pub state: &'static str,
    /// Time until the conn expires unless touched.
    pub expires: Duration,
    /// Connection flags (kernel bits).
    pub flags: ConnFlags,
    /// The real server it is bound to.
    pub dest: Option<DestId>,
    /// Firewall mark at creation.
    pub fwmark: u32,
    /// Incoming packets.
    pub in_pkts: u32,
}

impl ConnInfo {
    /// Whether this is a persistence template.
    pub const fn is_template(&self) -> bool {
        self.flags.contains(ConnFlags::TEMPLATE)
    }

    /// The row of conn `id` as of `now`; `ctl` gives the real server's address of a mixed-family tunnel conn,
    /// which its entry does not hold ([`crate::forward::stored_daddr`]).
    pub(crate) fn from_view(id: ConnId, v: &ConnView, now: Instant, ctl: &ControlState) -> Self {
        let dest = v.dest.and_then(|d| ctl.dest(d));
        Self {
            id,
            protocol: v.protocol,
            client: v.client(),
            virt: v.virt(),
            real: SocketAddr::new(crate::forward::real_daddr(v.daddr, dest), v.dport),
            state: state_name(v),
            expires: v.expires.saturating_duration_since(now),
            flags: v.flags,
            dest: v.dest,
            fwmark: v.fwmark,
            in_pkts: v.in_pkts,
        }
    }
}

/// A statistics snapshot in the listings' types.
fn listing_stats(s: &Stats) -> (ListStats, ListRates) {
    let c = &s.counters;
    let r = &s.rates;
    (
        ListStats { conns: c.conns, inpkts: c.inpkts, outpkts: c.outpkts, inbytes: c.inbytes, outbytes: c.outbytes },
        ListRates { cps: r.cps, inpps: r.inpps, outpps: r.outpps, inbps: r.inbps, outbps: r.outbps },
    )
}

/// The `/proc/net/ip_vs_conn` name of a conn's state.
pub(crate) fn state_name(v: &ConnView) -> &'static str {
    if v.is_template() {
        return if v.state == TEMPLATE_ASSURED { "ASSURED" } else { "NONE" };
    }
    match v.protocol {
        Protocol::Tcp => TcpState::from_u8(v.state).map_or("ERR!", TcpState::proc_name),
        Protocol::Udp => "UDP",
        Protocol::Sctp => SctpState::from_u8(v.state).map_or("BUG!", SctpState::proc_name),
        _ => "NONE",
    }
}

/// What a listing shows for one real server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DestInfo {
    /// Its id.
    pub id: DestId,
    /// Its configuration.
    pub config: DestConfig,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inactive_conns: u32,
    /// Persistence templates.
    pub persist_conns: u32,
    /// Whether the upper threshold is reached.
    pub overloaded: bool,
    /// Traffic counters and rates.
    pub stats: Stats,
}

/// What a listing shows for one service: its configuration and its real servers in the kernel's list order
/// (most recently added first).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    /// Its configuration.
    pub config: ServiceConfig,
    /// Its real servers, most recently added first.
    pub dests: Vec<DestInfo>,
    /// Traffic counters and rates.
    pub stats: Stats,
}

/// The IPVS director: services, real servers, connections, and the packet path. See the crate docs.
pub struct Engine {
    pub(crate) ctl: RwLock<ControlState>,
    pub(crate) conns: ConnTable,
    pub(crate) defense: DefenseState,
    pub(crate) total_stats: StatsCell,
    pub(crate) drops: DropCounters,
    pub(crate) events: EventQueue,
    pub(crate) ip_ident: AtomicU32,
    pub(crate) next_estimate: AtomicU64,
    pub(crate) next_trash_check: AtomicU64,
    pub(crate) sync: Option<Arc<dyn SyncFeed>>,
    pub(crate) sync_master: SyncMaster,
    pub(crate) sync_backup: SyncBackup,
    pub(crate) mtu: u32,
    pub(crate) local_v4: Option<Ipv4Addr>,
    pub(crate) local_v6: Option<Ipv6Addr>,
    pub(crate) slow_start: SlowStart,
    pub(crate) sched_base: SchedConfig,
    /// [`EngineConfig::sip_persistence_engine`].
    pub(crate) sip_pe: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("conns", &self.conns)
            .field("n_services", &self.ctl.read().services.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with no services.
    ///
    /// # Errors
    /// [`EngineError::ConnTable`] for an invalid table configuration, [`EngineError::Mtu`] for an MTU below 68.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if config.mtu < 68 {
            return Err(EngineError::Mtu(config.mtu));
        }
        let conns = ConnTable::new(config.conn_table, config.start)?;
        Ok(Self {
            ctl: RwLock::new(ControlState::new(config.sysctls, config.timeouts)),
            conns,
            defense: DefenseState::new(config.defense, config.drop_seed, config.start),
            total_stats: StatsCell::new(config.start),
            drops: DropCounters::new(),
            events: EventQueue::new(config.event_capacity),
            ip_ident: AtomicU32::new(0),
            next_estimate: AtomicU64::new(RateEstimator::next_sample_after(config.start).total_millis()),
            next_trash_check: AtomicU64::new((config.start + TRASH_CHECK).total_millis()),
            sync: None,
            sync_master: SyncMaster::default(),
            sync_backup: SyncBackup::default(),
            mtu: config.mtu,
            local_v4: config.local_v4,
            local_v6: config.local_v6,
            slow_start: config.slow_start,
            sched_base: config.sched,
            sip_pe: config.sip_persistence_engine,
        })
    }

    /// Installs the sync feed (the hook the ipvs-sync master glue uses; see [`SyncFeed`]).
    #[must_use]
    pub fn with_sync_feed(mut self, feed: Arc<dyn SyncFeed>) -> Self {
        self.sync = Some(feed);
        self
    }

    /// The connection table (for embedders that list, snapshot or sync it).
    pub fn conn_table(&self) -> &ConnTable {
        &self.conns
    }

    /// The defense state (modes, `drop_packet` rate, whether `secure_tcp` is active).
    pub fn defense(&self) -> &DefenseState {
        &self.defense
    }

    /// Replaces the defense modes (a sysctl write; re-evaluated at once).
    pub fn set_defense(&self, defense: Defense) {
        self.defense.set_config(defense);
    }

    /// The packet-path sysctls.
    pub fn sysctls(&self) -> Sysctls {
        self.ctl.read().sysctls
    }

    /// Replaces the packet-path sysctls.
    pub fn set_sysctls(&self, sysctls: Sysctls) {
        self.ctl.write().sysctls = sysctls;
    }

    /// The per-state timeouts in effect.
    pub fn timeouts(&self) -> ProtoTimeouts {
        self.ctl.read().timeouts
    }

    /// Replaces every per-state timeout (beyond `ipvsadm --set`, which [`Engine::set_timeouts`] does).
    pub fn set_proto_timeouts(&self, timeouts: ProtoTimeouts) {
        self.ctl.write().timeouts = timeouts;
    }

    /// How many packets were dropped, per reason.
    pub fn drop_counts(&self) -> DropCounts {
        self.drops.load()
    }

    /// How many packets were dropped for `reason`.
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops.load().get(reason)
    }

    /// The director's total traffic counters and rates (the kernel's `tot_stats`).
    pub fn total_stats(&self) -> Stats {
        self.total_stats.snapshot()
    }

    /// The next event, if any. Events are queued by [`handle_packet`](Self::handle_packet),
    /// [`handle_timeout`](Self::handle_timeout) and the control operations.
    #[must_use]
    pub fn poll_event(&self) -> Option<Event> {
        self.events.pop()
    }

    /// Events discarded because the queue was full.
    pub fn events_discarded(&self) -> u64 {
        self.events.discarded()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: the earliest of the connection
    /// table's next expiry, the defense's once-a-second step, the rate estimator's 2-second sample, the dest
    /// trash's check and the sync daemons' deadlines ([`Engine::poll_sync_timeout`]). Changed by every call that
    /// creates or touches a connection and by `handle_timeout`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.defense.poll_timeout();
        t = t.min(Instant::from_millis(self.next_estimate.load(Ordering::Relaxed)));
        if self.ctl.read().n_trash > 0 {
            t = t.min(Instant::from_millis(self.next_trash_check.load(Ordering::Relaxed)));
        }
        if let Some(s) = self.poll_sync_timeout() {
            t = t.min(s);
        }
        Some(match self.conns.poll_timeout() {
            Some(c) => c.min(t),
            None => t,
        })
    }

    /// Runs every timer due at `now`: connection expiry (real servers' counters follow, OVERLOAD may clear),
    /// the defense step (and `drop_entry` while active), the rate estimators, the trash (real servers
    /// removed and unused for 120 s are freed) and the sync daemons' timers (then drain
    /// [`Engine::poll_sync_transmit`]). A call before anything is due does nothing.
    pub fn handle_timeout(&self, now: Instant) {
        self.handle_sync_timeout(now);
        let (mut expired, mut pushed_back) = (Vec::new(), Vec::new());
        self.conns.handle_timeout_with_push_backs(now, &mut expired, &mut pushed_back);
        self.sync_expire_later(now, &pushed_back);
        {
            let ctl = self.ctl.read();
            let occupancy = Occupancy::Table { len: self.conns.len(), capacity: self.conns.capacity() };
            self.defense.handle_timeout(now, occupancy, |state| {
                self.conns.drop_entry(now, state, |v| ctl.is_ops_template(v), &mut expired);
            });
            self.settle_expired(&ctl, &expired);
            if now.total_millis() >= self.next_estimate.load(Ordering::Relaxed) {
                self.next_estimate.store(RateEstimator::next_sample_after(now).total_millis(), Ordering::Relaxed);
                self.total_stats.tick(now);
                ctl.tick_stats(now);
            }
        }
        if now.total_millis() >= self.next_trash_check.load(Ordering::Relaxed) {
            self.next_trash_check.store((now + TRASH_CHECK).total_millis(), Ordering::Relaxed);
            self.ctl.write().check_trash(now);
        }
    }

    /// The counters of conns that left the table follow: the real server's active/inactive/persistent counts
    /// (and OVERLOAD), events.
    pub(crate) fn settle_expired(&self, ctl: &ControlState, expired: &[Expired]) {
        for e in expired {
            if let Some(dest) = e.conn.dest.and_then(|id| ctl.dest(id)) {
                let template = e.conn.is_template();
                let active = !e.conn.flags.contains(ConnFlags::INACTIVE);
                dest.update_state(&self.events, |s| {
                    if template {
                        s.unbind_template();
                    } else {
                        s.unbind_conn(active);
                    }
                });
            }
            if self.events.enabled() {
                self.events.push(Event::ConnExpired {
                    conn: e.id,
                    protocol: e.conn.protocol,
                    client: e.conn.client(),
                    virt: e.conn.virt(),
                    dest: e.conn.dest,
                    template: e.conn.is_template(),
                });
            }
        }
    }

    /// Every conn and template, with its state name and remaining time at `now` (table order).
    pub fn conns(&self, now: Instant) -> Vec<ConnInfo> {
        let ctl = self.ctl.read();
        let mut v = Vec::with_capacity(self.conns.len());
        self.conns.for_each(|id, c| v.push(ConnInfo::from_view(id, c, now, &ctl)));
        v
    }

    /// The persistence-engine data of a conn (the Call-ID of a `--pe sip` template), if it has any.
    pub fn conn_pe_data(&self, id: ConnId) -> Option<Vec<u8>> {
        self.conns.with_conn(id, |c| c.pe_data().map(<[u8]>::to_vec)).flatten()
    }

    /// What the listings show of a conn's persistence-engine data: the engine's name and the data (a Call-ID
    /// is text; other bytes are shown as U+FFFD).
    fn conn_pe(&self, id: ConnId) -> Option<(String, String)> {
        let data = self.conn_pe_data(id)?;
        Some((crate::pe_sip::NAME.to_owned(), String::from_utf8_lossy(&data).into_owned()))
    }

    /// The conn of a client → virtual service flow, if any (the "in" lookup), as of `now`.
    pub fn conn(&self, now: Instant, protocol: Protocol, client: SocketAddr, virt: SocketAddr) -> Option<ConnInfo> {
        let key = ipvs_conn::InKey::new(protocol, client.ip(), client.port(), virt.ip(), virt.port());
        let ctl = self.ctl.read();
        self.conns.lookup_in(&key).map(|(id, v)| ConnInfo::from_view(id, &v, now, &ctl))
    }

    /// Every service with its real servers, counters and rates, in no particular order.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let ctl = self.ctl.read();
        ctl.services.values().map(|s| ctl.service_info(s)).collect()
    }

    /// One service, if it exists.
    pub fn service(&self, key: &ServiceKey) -> Option<ServiceInfo> {
        let ctl = self.ctl.read();
        ctl.services.get(key).map(|s| ctl.service_info(s))
    }

    /// What the ipvsadm listings print ([`crate::ipvsadm::list_services`], [`crate::ipvsadm::list_conns`],
    /// `/proc/net/ip_vs*`), as of `now`: services oldest first with their real servers in list order, counters
    /// and rates, every conn, the `--set` timeouts. No sync daemon rows: the daemons' interfaces and groups are
    /// the embedder's (it fills [`ListingSnapshot`]'s daemon rows). `size=` is the table's capacity.
    pub fn listing_snapshot(&self, now: Instant) -> ListingSnapshot {
        let size = u32::try_from(self.conns.capacity()).unwrap_or(u32::MAX);
        let mut snap = ListingSnapshot::new(size);
        {
            let ctl = self.ctl.read();
            let mut services: Vec<_> = ctl.services.values().collect();
            services.sort_by_key(|s| s.added);
            snap.services = services
                .into_iter()
                .map(|s| {
                    let info = ctl.service_info(s);
                    let (stats, rates) = listing_stats(&info.stats);
                    ServiceListing {
                        config: info.config,
                        stats,
                        rates,
                        dests: info
                            .dests
                            .iter()
                            .map(|d| {
                                let (stats, rates) = listing_stats(&d.stats);
                                DestListing {
                                    config: d.config,
                                    active_conns: d.active_conns,
                                    inactive_conns: d.inactive_conns,
                                    persist_conns: d.persist_conns,
                                    stats,
                                    rates,
                                }
                            })
                            .collect(),
                    }
                })
                .collect();
            snap.timeouts = Timeouts::from_tables(&ctl.timeouts.tcp, &ctl.timeouts.udp);
        }
        snap.conns = self
            .conns(now)
            .into_iter()
            .map(|c| ConnRow {
                protocol: c.protocol,
                client: c.client,
                virt: c.virt,
                dest: c.real,
                state: c.state,
                expires_secs: u32::try_from(c.expires.secs()).unwrap_or(u32::MAX),
                pe: if c.is_template() { self.conn_pe(c.id) } else { None },
            })
            .collect();
        let (stats, rates) = listing_stats(&self.total_stats.snapshot());
        snap.total_stats = stats;
        snap.total_rates = rates;
        snap
    }

    /// The next IPv4 identification for packets the engine writes (tunnel outer headers, ICMP errors).
    pub(crate) fn next_ident(&self) -> u16 {
        // Truncation is the point: a wrapping 16-bit counter.
        self.ip_ident.fetch_add(1, Ordering::Relaxed) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvsadm::parse_line;

    const LISTINGS: &str = include_str!("../../testdata/kernel-6.1/ipvsadm-listings.txt");

    /// The oracle's rules (from its header), applied to an engine without the SIP persistence engine, re-emit
    /// its `ipvsadm -S -n` section: the `--pe sip` service fails as it failed on the kernel (no SIP module), and
    /// so does its real server.
    #[test]
    fn oracle_rules_applied_to_an_engine_save_back() {
        // Like the kernel that made the oracle: no SIP module.
        let mut config = EngineConfig::new(4096, [1; 16]);
        config.sip_persistence_engine = false;
        let engine = Engine::new(config).unwrap();
        let mut refused = Vec::new();
        for line in LISTINGS.lines().take_while(|l| l.starts_with('#')) {
            let Some(rule) = line.strip_prefix("#   ipvsadm ") else { continue };
            let command = parse_line(rule).unwrap().unwrap();
            if let Err(e) = engine.apply(Instant::ZERO, command) {
                refused.push(e);
            }
        }
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert_eq!(refused[0], EngineError::PersistenceEngineUnavailable);
        assert!(matches!(refused[1], EngineError::Config(ConfigError::ServiceNotFound(_))));
        assert_eq!(refused[2], EngineError::SyncDaemonUnavailable);
        let save: String = LISTINGS
            .lines()
            .skip_while(|l| *l != "=== ipvsadm -S -n")
            .skip(1)
            .take_while(|l| !l.starts_with("==="))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(engine.listing_snapshot(Instant::ZERO).save(), save);
        assert_eq!(engine.ipvsadm_timeouts(), Timeouts { tcp: 1800, tcpfin: 90, udp: 200 });
    }
}
