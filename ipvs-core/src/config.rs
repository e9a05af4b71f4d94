//! The control-plane model: virtual services, real servers, timeouts and sync daemons, with the validation
//! rules of the kernel (facts §7, §13) and of ipvsadm 1.31 (facts §14), and [`RuleSet`], a pure model that
//! applies [`Command`]s with the kernel's semantics (duplicate → error, edit replaces, delete removes).
//!
//! Values follow what the kernel stores and reports: persistence timeouts in seconds, an IPv4 persistence
//! netmask as a host-order `u32` (`255.255.255.0` = `0xFFFF_FF00`) and an IPv6 one as a prefix length, weights
//! and thresholds as plain counts.
//!
//! Edits replace the whole object, as ipvsadm does: `ipvsadm -E` and `-e` send every field, with ipvsadm's
//! defaults for the options not given (so `-e … -w 5` on a NAT server turns it into a DR server — that is
//! ipvsadm's behaviour, and [`crate::ipvsadm::parse_rules`] reproduces it).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs_proto::state::{TcpTimeouts, UdpTimeouts};
use ipvs_proto::{AddressFamily, ConnFlags, FwdMethod, Protocol, ServiceFlags, ServiceKey};
use ipvs_sched::{DestState, SCHEDULER_NAMES};

/// ipvsadm's default scheduler (`-s` omitted).
pub const DEFAULT_SCHEDULER: &str = "wlc";

/// The scheduler name that means "no scheduler" (the kernel accepts it; the service never schedules).
pub const NO_SCHEDULER: &str = "none";

/// Persistence timeout for a bare `-p` (libipvs `IPVS_SVC_PERSISTENT_TIMEOUT`; the man page's 300 is wrong).
pub const DEFAULT_PERSISTENCE_SECS: u32 = 360;

/// Longest persistence timeout ipvsadm accepts (31 days).
pub const MAX_PERSISTENCE_SECS: u32 = 86_400 * 31;

/// Largest weight the kernel accepts (`int`; negative → `ERANGE`). ipvsadm itself stops at 65535.
pub const MAX_WEIGHT: u32 = i32::MAX as u32;

/// Largest `--set` timeout accepted: the kernel's `INT_MAX / HZ` seconds for HZ = 250 (the Debian kernel of
/// the captures; about 99 days). ipvsadm itself stops at 31 days.
pub const MAX_TIMEOUT_SECS: u32 = i32::MAX as u32 / 250;

/// Names (scheduler, PE, interface) are at most 15 bytes (16 with the NUL, facts §1.6).
pub const MAX_NAME_LEN: usize = 15;

/// The persistence engines the kernel ships (facts §8.5).
pub const PE_NAMES: [&str; 1] = ["sip"];

/// Default sync multicast group (facts §12.1).
pub const DEFAULT_MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);

/// Default sync multicast base port.
pub const DEFAULT_MCAST_PORT: u16 = 8848;

/// Default sync multicast TTL.
pub const DEFAULT_MCAST_TTL: u8 = 1;

/// Largest `--sync-maxlen` ipvsadm accepts (65535 − 20 − 8).
pub const MAX_SYNC_MAXLEN: u16 = 65_507;

// ---------------------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------------------

/// A virtual service (`ipvsadm -A`/`-E`).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct ServiceConfig {
    /// Protocol + VIP:port, or firewall mark + family.
    pub key: ServiceKey,
    /// Scheduler name as ipvsadm's `-s` takes it (`rr`, `wlc`, …, or [`NO_SCHEDULER`]).
    pub scheduler: String,
    /// Scheduler flags `-b`: only [`ServiceFlags::SCHED1`], `SCHED2`, `SCHED3` (`sh-fallback`/`mh-fallback`,
    /// `sh-port`/`mh-port`, `flag-3`).
    pub sched_flags: ServiceFlags,
    /// Persistence (`-p`, `-M`); `None` = not persistent.
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`), UDP and fwmark services only.
    pub one_packet: bool,
    /// Persistence engine (`--pe`), e.g. `sip`.
    pub pe_name: Option<String>,
}

/// Persistence settings of a service.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Persistence {
    /// Template idle timeout, seconds (ipvsadm: 1..=2678400; bare `-p` = 360).
    pub timeout_secs: u32,
    /// IPv4 services: the client mask as a host-order `u32` (`0xFFFF_FFFF` = per client address). IPv6
    /// services: the prefix length 1..=128 (128 = per client address).
    pub netmask: u32,
}

impl Persistence {
    /// Persistence for `timeout_secs` with the family's default netmask (one template per client address).
    pub const fn new(timeout_secs: u32, family: AddressFamily) -> Self {
        Self { timeout_secs, netmask: Self::default_netmask(family) }
    }

    /// `0xFFFF_FFFF` for IPv4, 128 for IPv6: what ipvsadm sends when `-M` is not given.
    pub const fn default_netmask(family: AddressFamily) -> u32 {
        match family {
            AddressFamily::Inet => u32::MAX,
            AddressFamily::Inet6 => 128,
        }
    }
}

impl ServiceConfig {
    /// A service with ipvsadm's defaults: scheduler `wlc`, no flags, not persistent, no PE.
    pub fn new(key: ServiceKey) -> Self {
        Self {
            key,
            scheduler: DEFAULT_SCHEDULER.to_owned(),
            sched_flags: ServiceFlags::EMPTY,
            persistence: None,
            one_packet: false,
            pe_name: None,
        }
    }

    /// The kernel's `svc->flags` for this configuration: `PERSISTENT`, `ONEPACKET` and the scheduler flags.
    pub fn flags(&self) -> ServiceFlags {
        let mut f = self.sched_flags & SCHED_FLAGS_MASK;
        f.set(ServiceFlags::PERSISTENT, self.persistence.is_some());
        f.set(ServiceFlags::ONEPACKET, self.one_packet);
        f
    }

    /// Checks the service against the kernel's and ipvsadm's rules (facts §13.1, §14.3).
    ///
    /// # Errors
    /// The first rule broken: [`ConfigError::FwmarkZero`], [`ConfigError::ServiceProtocol`],
    /// [`ConfigError::UnknownScheduler`], [`ConfigError::SchedFlags`], [`ConfigError::PersistenceTimeout`],
    /// [`ConfigError::Ipv6Prefix`], [`ConfigError::ZeroPortNotPersistent`], [`ConfigError::OnePacketNotUdp`]
    /// or [`ConfigError::UnknownPersistenceEngine`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.key {
            ServiceKey::Fwmark { mark: 0, .. } => return Err(ConfigError::FwmarkZero),
            ServiceKey::Addr { protocol, .. } if !protocol.has_ports() => {
                return Err(ConfigError::ServiceProtocol(protocol))
            }
            _ => {}
        }
        if !is_known_scheduler(&self.scheduler) {
            return Err(ConfigError::UnknownScheduler(ArgText::new(&self.scheduler)));
        }
        let extra = self.sched_flags.bits() & !SCHED_FLAGS_MASK.bits();
        if extra != 0 {
            return Err(ConfigError::SchedFlags(extra));
        }
        if let Some(p) = self.persistence {
            if !(1..=MAX_PERSISTENCE_SECS).contains(&p.timeout_secs) {
                return Err(ConfigError::PersistenceTimeout(p.timeout_secs));
            }
            if self.key.family() == AddressFamily::Inet6 && !(1..=128).contains(&p.netmask) {
                return Err(ConfigError::Ipv6Prefix(p.netmask));
            }
        }
        if let ServiceKey::Addr { protocol, addr } = self.key {
            if addr.port() == 0 && self.persistence.is_none() {
                return Err(ConfigError::ZeroPortNotPersistent);
            }
            if self.one_packet && protocol != Protocol::Udp {
                return Err(ConfigError::OnePacketNotUdp(protocol));
            }
        }
        if let Some(pe) = &self.pe_name {
            if !PE_NAMES.contains(&pe.as_str()) {
                return Err(ConfigError::UnknownPersistenceEngine(ArgText::new(pe)));
            }
        }
        Ok(())
    }
}

/// `SCHED1 | SCHED2 | SCHED3`: the bits `-b` may set.
pub const SCHED_FLAGS_MASK: ServiceFlags =
    ServiceFlags(ServiceFlags::SCHED1.0 | ServiceFlags::SCHED2.0 | ServiceFlags::SCHED3.0);

/// Whether `name` is a scheduler the engine can build ([`SCHEDULER_NAMES`]) or [`NO_SCHEDULER`].
pub fn is_known_scheduler(name: &str) -> bool {
    name == NO_SCHEDULER || SCHEDULER_NAMES.contains(&name)
}

// ---------------------------------------------------------------------------------------------------------
// Destinations
// ---------------------------------------------------------------------------------------------------------

/// A real server of a service (`ipvsadm -a`/`-e`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct DestConfig {
    /// Address and port of the real server (its family may differ from the service's only for tunnels).
    pub addr: SocketAddr,
    /// Forwarding method: `-m` NAT, `-g` direct routing (ipvsadm's default), `-i` tunnel.
    pub fwd: FwdMethod,
    /// Weight, 0 = quiescent. ipvsadm: 0..=65535, default 1; kernel: up to `INT_MAX`.
    pub weight: u32,
    /// Upper connection threshold `-x`, 0 = off.
    pub u_threshold: u32,
    /// Lower connection threshold `-y`, 0 = the default (3/4 of the upper one).
    pub l_threshold: u32,
    /// Tunnel parameters of a [`FwdMethod::Tunnel`] server (`None` there means IPIP); must be `None` for
    /// the other methods.
    pub tunnel: Option<TunnelConfig>,
}

/// Tunnel encapsulation of a tunnel server (`--tun-type`, `--tun-port`, `--tun-*csum`; facts §1.4).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct TunnelConfig {
    /// IPIP, GUE or GRE.
    pub kind: TunnelKind,
    /// GUE destination port (required for GUE, 0 otherwise).
    pub port: u16,
    /// Checksum option (GUE: all three; GRE: none or csum; IPIP: none).
    pub csum: TunnelCsum,
}

/// Tunnel type, with the kernel's numbering (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum TunnelKind {
    /// Plain IP-in-IP (0), the default.
    Ipip,
    /// Generic UDP Encapsulation (1).
    Gue,
    /// Generic Routing Encapsulation (2).
    Gre,
}

/// Tunnel checksum option, with the kernel's flag values (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum TunnelCsum {
    /// No checksum (0), the default.
    NoCsum,
    /// Checksum in the UDP/GRE encapsulation (1).
    Csum,
    /// GUE remote checksum offload (2).
    RemCsum,
}

impl TunnelKind {
    /// The kernel's value.
    pub const fn value(self) -> u8 {
        match self {
            Self::Ipip => 0,
            Self::Gue => 1,
            Self::Gre => 2,
        }
    }

    /// The `--tun-type` word: `ipip`, `gue`, `gre`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipip => "ipip",
            Self::Gue => "gue",
            Self::Gre => "gre",
        }
    }
}

impl TunnelCsum {
    /// The kernel's flag value.
    pub const fn flags(self) -> u16 {
        match self {
            Self::NoCsum => 0,
            Self::Csum => 1,
            Self::RemCsum => 2,
        }
    }

    /// The ipvsadm option: `--tun-nocsum`, `--tun-csum`, `--tun-remcsum`.
    pub const fn option(self) -> &'static str {
        match self {
            Self::NoCsum => "--tun-nocsum",
            Self::Csum => "--tun-csum",
            Self::RemCsum => "--tun-remcsum",
        }
    }
}

impl TunnelConfig {
    /// IPIP without options: what a tunnel server gets when no `--tun-*` option is given.
    pub const IPIP: Self = Self { kind: TunnelKind::Ipip, port: 0, csum: TunnelCsum::NoCsum };
}

impl DestConfig {
    /// A server with ipvsadm's defaults for `fwd`: weight 1, no thresholds, IPIP for a tunnel.
    pub const fn new(addr: SocketAddr, fwd: FwdMethod) -> Self {
        let tunnel = match fwd {
            FwdMethod::Tunnel => Some(TunnelConfig::IPIP),
            _ => None,
        };
        Self { addr, fwd, weight: 1, u_threshold: 0, l_threshold: 0, tunnel }
    }

    /// The tunnel parameters in effect: `Some` (IPIP if none were given) for a tunnel server, else `None`.
    pub fn tunnel_params(&self) -> Option<TunnelConfig> {
        match self.fwd {
            FwdMethod::Tunnel => Some(self.tunnel.unwrap_or(TunnelConfig::IPIP)),
            _ => None,
        }
    }

    /// The flags the kernel copies into each new conn of this server (facts §2.2): the method, always
    /// `INACTIVE`, and `NOOUTPUT` unless NAT.
    pub fn conn_flags(&self) -> ConnFlags {
        let mut f = (ConnFlags::EMPTY | ConnFlags::INACTIVE).with_fwd_method(self.fwd);
        f.set(ConnFlags::NOOUTPUT, !self.fwd.sees_replies());
        f
    }

    /// ipvsadm's port rule (facts §14.3): the port of a `-g`/`-i` server of a non-fwmark service is forced to
    /// the service port. The kernel itself does not do this; [`crate::ipvsadm::parse_rules`] applies it.
    pub fn with_ipvsadm_port(mut self, service: &ServiceKey) -> Self {
        if let ServiceKey::Addr { addr, .. } = service {
            if matches!(self.fwd, FwdMethod::DirectRoute | FwdMethod::Tunnel) {
                self.addr.set_port(addr.port());
            }
        }
        self
    }

    /// Checks the server against the kernel's and ipvsadm's rules for a server of `service` (facts §7,
    /// §13.2, §14.3).
    ///
    /// # Errors
    /// The first rule broken: [`ConfigError::FwdMethod`], [`ConfigError::Weight`],
    /// [`ConfigError::Thresholds`], [`ConfigError::TunnelWithoutTunnelMethod`],
    /// [`ConfigError::TunnelPortRequired`], [`ConfigError::TunnelOption`] or [`ConfigError::MixedFamily`].
    pub fn validate_for(&self, service: &ServiceKey) -> Result<(), ConfigError> {
        if self.fwd == FwdMethod::Bypass {
            return Err(ConfigError::FwdMethod(self.fwd));
        }
        if self.weight > MAX_WEIGHT {
            return Err(ConfigError::Weight(self.weight));
        }
        if DestState::new(self.weight, self.u_threshold, self.l_threshold).is_err() {
            return Err(ConfigError::Thresholds { upper: self.u_threshold, lower: self.l_threshold });
        }
        if let Some(t) = self.tunnel {
            if self.fwd != FwdMethod::Tunnel {
                return Err(ConfigError::TunnelWithoutTunnelMethod(self.fwd));
            }
            match t.kind {
                TunnelKind::Gue if t.port == 0 => return Err(ConfigError::TunnelPortRequired),
                TunnelKind::Ipip | TunnelKind::Gre if t.port != 0 => {
                    return Err(ConfigError::TunnelOption { kind: t.kind, option: "--tun-port" })
                }
                TunnelKind::Ipip if t.csum != TunnelCsum::NoCsum => {
                    return Err(ConfigError::TunnelOption { kind: t.kind, option: t.csum.option() })
                }
                TunnelKind::Gre if t.csum == TunnelCsum::RemCsum => {
                    return Err(ConfigError::TunnelOption { kind: t.kind, option: t.csum.option() })
                }
                _ => {}
            }
        }
        let family = AddressFamily::of(&self.addr.ip());
        if family != service.family() && self.fwd != FwdMethod::Tunnel {
            return Err(ConfigError::MixedFamily { service: service.family(), dest: family });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Timeouts and sync daemons
// ---------------------------------------------------------------------------------------------------------

/// The three timeouts of `ipvsadm --set tcp tcpfin udp` / `-L --timeout`, in seconds.
///
/// In a [`Command::SetTimeouts`] a 0 leaves that value unchanged (facts §13.3).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Timeouts {
    /// TCP ESTABLISHED timeout.
    pub tcp: u32,
    /// TCP FIN_WAIT timeout.
    pub tcpfin: u32,
    /// UDP timeout.
    pub udp: u32,
}

impl Timeouts {
    /// The kernel's defaults, `900 120 300`.
    pub const DEFAULT: Self = Self { tcp: 900, tcpfin: 120, udp: 300 };

    /// Checks each value against [`MAX_TIMEOUT_SECS`].
    ///
    /// # Errors
    /// [`ConfigError::Timeout`] naming the first value out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, secs) in [("tcp", self.tcp), ("tcpfin", self.tcpfin), ("udp", self.udp)] {
            if secs > MAX_TIMEOUT_SECS {
                return Err(ConfigError::Timeout { field, secs });
            }
        }
        Ok(())
    }

    /// Applies a `--set`: every non-zero value of `set` replaces the current one.
    pub fn merge(&mut self, set: Self) {
        for (cur, new) in [(&mut self.tcp, set.tcp), (&mut self.tcpfin, set.tcpfin), (&mut self.udp, set.udp)] {
            if new != 0 {
                *cur = new;
            }
        }
    }

    /// Applies these values (0 = unchanged) to the protocol timeout tables, as the kernel's `set_timeout`
    /// does: TCP ESTABLISHED, TCP FIN_WAIT, UDP NORMAL.
    pub fn apply_to(&self, tcp: &mut TcpTimeouts, udp: &mut UdpTimeouts) {
        tcp.set_from_ipvsadm(self.tcp, self.tcpfin);
        udp.set_from_ipvsadm(self.udp);
    }

    /// What `-L --timeout` reports for the given tables.
    pub fn from_tables(tcp: &TcpTimeouts, udp: &UdpTimeouts) -> Self {
        let (t, f) = tcp.ipvsadm_values();
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Self { tcp: clamp(t), tcpfin: clamp(f), udp: clamp(udp.ipvsadm_value()) }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which side of connection synchronisation a daemon runs.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum SyncState {
    /// Sends the local conns (`IP_VS_STATE_MASTER`).
    Master,
    /// Receives conns (`IP_VS_STATE_BACKUP`).
    Backup,
}

impl SyncState {
    /// `master` or `backup`, as ipvsadm writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Backup => "backup",
        }
    }
}

/// A sync daemon (`ipvsadm --start-daemon`; facts §12.9). `None` fields take the kernel's defaults.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct SyncDaemonConfig {
    /// Master or backup.
    pub state: SyncState,
    /// Multicast interface (ipvsadm's default `eth0`).
    pub mcast_ifn: String,
    /// Sync id; a backup with 0 accepts every id.
    pub syncid: u8,
    /// Message size limit; default from the group family (master) or the interface MTU (backup).
    pub sync_maxlen: Option<u16>,
    /// Multicast group; default 224.0.0.81.
    pub mcast_group: Option<IpAddr>,
    /// Base port; default 8848.
    pub mcast_port: Option<u16>,
    /// TTL; default 1.
    pub mcast_ttl: Option<u8>,
}

impl SyncDaemonConfig {
    /// A daemon on `mcast_ifn` with syncid 0 and every other value at its default.
    pub fn new(state: SyncState, mcast_ifn: &str) -> Self {
        Self {
            state,
            mcast_ifn: mcast_ifn.to_owned(),
            syncid: 0,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        }
    }

    /// The multicast group in effect.
    pub fn group(&self) -> IpAddr {
        self.mcast_group.unwrap_or(IpAddr::V4(DEFAULT_MCAST_GROUP))
    }

    /// The base port in effect.
    pub fn port(&self) -> u16 {
        self.mcast_port.unwrap_or(DEFAULT_MCAST_PORT)
    }

    /// The TTL in effect.
    pub fn ttl(&self) -> u8 {
        self.mcast_ttl.unwrap_or(DEFAULT_MCAST_TTL)
    }

    /// The message size limit the kernel uses (facts §12.2), for an interface of MTU `if_mtu`: with
    /// `h` = 28 (IPv4 group) or 48 (IPv6), a master defaults to 1500 − h and clamps a configured value to
    /// 1..=65535 − h; a backup defaults to clamp(`if_mtu`, 1500, 65535) − h and clamps a configured value to
    /// 1024..=65535 − h.
    pub fn maxlen(&self, if_mtu: u32) -> u16 {
        let hlen: u32 = match self.group() {
            IpAddr::V4(_) => 28,
            IpAddr::V6(_) => 48,
        };
        let max = 65_535 - hlen;
        let v = match (self.state, self.sync_maxlen) {
            (SyncState::Master, None) => 1500 - hlen,
            (SyncState::Master, Some(n)) => u32::from(n).clamp(1, max),
            (SyncState::Backup, None) => if_mtu.clamp(1500, 65_535) - hlen,
            (SyncState::Backup, Some(n)) => u32::from(n).clamp(1024, max),
        };
        // `v <= 65535 - 28` by the clamps above.
        v as u16
    }

    /// Checks the daemon's parameters (ipvsadm's ranges; the kernel's multicast check).
    ///
    /// # Errors
    /// [`ConfigError::IfName`], [`ConfigError::SyncMaxlen`], [`ConfigError::McastGroup`],
    /// [`ConfigError::McastPort`] or [`ConfigError::McastTtl`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mcast_ifn.is_empty() || self.mcast_ifn.len() > MAX_NAME_LEN {
            return Err(ConfigError::IfName(ArgText::new(&self.mcast_ifn)));
        }
        if let Some(n) = self.sync_maxlen {
            if !(1..=MAX_SYNC_MAXLEN).contains(&n) {
                return Err(ConfigError::SyncMaxlen(n));
            }
        }
        if let Some(g) = self.mcast_group {
            if !g.is_multicast() {
                return Err(ConfigError::McastGroup(g));
            }
        }
        if self.mcast_port == Some(0) {
            return Err(ConfigError::McastPort(0));
        }
        if self.mcast_ttl == Some(0) {
            return Err(ConfigError::McastTtl(0));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Commands and the rule set
// ---------------------------------------------------------------------------------------------------------

/// One control-plane operation, as one ipvsadm invocation expresses it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Command {
    /// `-A`: add a service (error if it exists).
    AddService(ServiceConfig),
    /// `-E`: replace a service's configuration (its servers stay).
    EditService(ServiceConfig),
    /// `-D`: delete a service and its servers.
    DeleteService(ServiceKey),
    /// `-C`: delete every service.
    Flush,
    /// `-a`: add a server to a service.
    AddDest {
        /// The service.
        service: ServiceKey,
        /// The server.
        dest: DestConfig,
    },
    /// `-e`: replace a server's configuration (found by address and port).
    EditDest {
        /// The service.
        service: ServiceKey,
        /// The new configuration; `dest.addr` names the server.
        dest: DestConfig,
    },
    /// `-d`: delete a server.
    DeleteDest {
        /// The service.
        service: ServiceKey,
        /// Address and port of the server.
        addr: SocketAddr,
    },
    /// `--set tcp tcpfin udp` (0 = unchanged).
    SetTimeouts(Timeouts),
    /// `--start-daemon`.
    StartDaemon(SyncDaemonConfig),
    /// `--stop-daemon`.
    StopDaemon(SyncState),
    /// `-Z`: zero the counters of one service, or of everything.
    Zero(Option<ServiceKey>),
}

/// A service and its servers, as [`RuleSet`] keeps them.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ServiceEntry {
    /// The service's configuration.
    pub config: ServiceConfig,
    /// Its servers in the order they were added (the kernel's list order is the reverse, facts §2.4).
    pub dests: Vec<DestConfig>,
}

impl ServiceEntry {
    /// The servers in the kernel's list order: most recently added first.
    pub fn dests_kernel_order(&self) -> impl Iterator<Item = &DestConfig> {
        self.dests.iter().rev()
    }
}

/// The configuration a sequence of [`Command`]s produces, with the kernel's semantics: services in the order
/// they were added, each with its servers, the timeouts and the sync daemons. Pure (no counters, no
/// connections): what `ipvsadm -S` and the configuration part of the listings show.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct RuleSet {
    services: Vec<ServiceEntry>,
    timeouts: Timeouts,
    master: Option<SyncDaemonConfig>,
    backup: Option<SyncDaemonConfig>,
}

impl RuleSet {
    /// An empty rule set with the default timeouts and no daemon.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one command.
    ///
    /// # Errors
    /// A validation error of the configuration in the command ([`ServiceConfig::validate`],
    /// [`DestConfig::validate_for`], …), or a state error: [`ConfigError::ServiceExists`],
    /// [`ConfigError::ServiceNotFound`], [`ConfigError::DestExists`], [`ConfigError::DestNotFound`],
    /// [`ConfigError::MixedFamilyWithSync`], [`ConfigError::DaemonRunning`] or
    /// [`ConfigError::DaemonNotRunning`]. Nothing changes on error.
    pub fn apply(&mut self, command: Command) -> Result<(), ConfigError> {
        let syncing = self.master.is_some() || self.backup.is_some();
        match command {
            Command::AddService(config) => {
                config.validate()?;
                if self.position(&config.key).is_some() {
                    return Err(ConfigError::ServiceExists(config.key));
                }
                self.services.push(ServiceEntry { config, dests: Vec::new() });
            }
            Command::EditService(config) => {
                config.validate()?;
                let idx = self.position(&config.key).ok_or(ConfigError::ServiceNotFound(config.key))?;
                self.services[idx].config = config;
            }
            Command::DeleteService(key) => {
                let idx = self.position(&key).ok_or(ConfigError::ServiceNotFound(key))?;
                self.services.remove(idx);
            }
            Command::Flush => self.services.clear(),
            Command::AddDest { service, dest } => {
                let entry = self.entry_mut(&service)?;
                dest.validate_for(&service)?;
                if syncing && AddressFamily::of(&dest.addr.ip()) != service.family() {
                    return Err(ConfigError::MixedFamilyWithSync);
                }
                if entry.dests.iter().any(|d| d.addr == dest.addr) {
                    return Err(ConfigError::DestExists(dest.addr));
                }
                entry.dests.push(dest);
            }
            Command::EditDest { service, dest } => {
                let entry = self.entry_mut(&service)?;
                dest.validate_for(&service)?;
                if syncing && AddressFamily::of(&dest.addr.ip()) != service.family() {
                    return Err(ConfigError::MixedFamilyWithSync);
                }
                let slot =
                    entry.dests.iter_mut().find(|d| d.addr == dest.addr).ok_or(ConfigError::DestNotFound(dest.addr))?;
                *slot = dest;
            }
            Command::DeleteDest { service, addr } => {
                let entry = self.entry_mut(&service)?;
                let idx = entry.dests.iter().position(|d| d.addr == addr).ok_or(ConfigError::DestNotFound(addr))?;
                entry.dests.remove(idx);
            }
            Command::SetTimeouts(t) => {
                t.validate()?;
                self.timeouts.merge(t);
            }
            Command::StartDaemon(config) => {
                config.validate()?;
                if self.has_mixed_family_dests() {
                    return Err(ConfigError::MixedFamilyWithSync);
                }
                let slot = self.daemon_slot(config.state);
                if slot.is_some() {
                    return Err(ConfigError::DaemonRunning(config.state));
                }
                *slot = Some(config);
            }
            Command::StopDaemon(state) => {
                if self.daemon_slot(state).take().is_none() {
                    return Err(ConfigError::DaemonNotRunning(state));
                }
            }
            Command::Zero(Some(key)) => {
                self.position(&key).ok_or(ConfigError::ServiceNotFound(key))?;
            }
            Command::Zero(None) => {}
        }
        Ok(())
    }

    /// The services, in the order they were added.
    pub fn services(&self) -> &[ServiceEntry] {
        &self.services
    }

    /// The service with `key`, if any.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.services.iter().find(|s| s.config.key == *key)
    }

    /// The current timeouts (`-L --timeout`).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The running daemon of `state`, if any.
    pub fn daemon(&self, state: SyncState) -> Option<&SyncDaemonConfig> {
        match state {
            SyncState::Master => self.master.as_ref(),
            SyncState::Backup => self.backup.as_ref(),
        }
    }

    /// The running daemons, master first.
    pub fn daemons(&self) -> impl Iterator<Item = &SyncDaemonConfig> {
        self.master.iter().chain(self.backup.iter())
    }

    /// Whether any server has a family different from its service's (such servers forbid sync).
    pub fn has_mixed_family_dests(&self) -> bool {
        self.services.iter().any(|s| {
            let fam = s.config.key.family();
            s.dests.iter().any(|d| AddressFamily::of(&d.addr.ip()) != fam)
        })
    }

    fn position(&self, key: &ServiceKey) -> Option<usize> {
        self.services.iter().position(|s| s.config.key == *key)
    }

    fn entry_mut(&mut self, key: &ServiceKey) -> Result<&mut ServiceEntry, ConfigError> {
        self.services.iter_mut().find(|s| s.config.key == *key).ok_or(ConfigError::ServiceNotFound(*key))
    }

    fn daemon_slot(&mut self, state: SyncState) -> &mut Option<SyncDaemonConfig> {
        match state {
            SyncState::Master => &mut self.master,
            SyncState::Backup => &mut self.backup,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/// A short piece of caller-supplied text (a name, an argument) kept inside an error without allocating:
/// at most [`ArgText::CAPACITY`] bytes, longer text is cut at a character boundary and shown with `…`.
#[derive(Clone, Copy, Eq, Hash, PartialEq)]
pub struct ArgText {
    buf: [u8; Self::CAPACITY],
    len: u8,
    truncated: bool,
}

impl ArgText {
    /// Bytes kept.
    pub const CAPACITY: usize = 40;

    /// Copies (the start of) `s`.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(Self::CAPACITY);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0; Self::CAPACITY];
        buf[..end].copy_from_slice(&s.as_bytes()[..end]);
        // `end <= CAPACITY = 40` fits a u8.
        Self { buf, len: end as u8, truncated: end < s.len() }
    }

    /// The text kept (without the `…` of a cut text).
    pub fn as_str(&self) -> &str {
        // The bytes are a prefix of a `str` cut at a char boundary.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether the original text was longer than what is kept.
    pub const fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for ArgText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ArgText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// A control-plane request the configuration rules refuse (caller misuse, not a packet problem).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `-s NAME`: no such scheduler (kernel `ENOENT`).
    UnknownScheduler(ArgText),
    /// `--pe NAME`: no such persistence engine (kernel `ENOENT`).
    UnknownPersistenceEngine(ArgText),
    /// Service scheduler flags with bits other than `SCHED1..3` (the extra bits).
    SchedFlags(u32),
    /// `-f 0`: a firewall mark must be > 0.
    FwmarkZero,
    /// A service protocol other than TCP, UDP or SCTP.
    ServiceProtocol(Protocol),
    /// A port-0 (non-fwmark) service must be persistent.
    ZeroPortNotPersistent,
    /// `-o` on a non-UDP, non-fwmark service.
    OnePacketNotUdp(Protocol),
    /// `-p` timeout outside 1..=2678400 s.
    PersistenceTimeout(u32),
    /// `-M` prefix length of an IPv6 service outside 1..=128.
    Ipv6Prefix(u32),
    /// `-w` above `INT_MAX` (kernel `ERANGE`).
    Weight(u32),
    /// `-y` above `-x` (kernel `ERANGE`; so a lower threshold needs an upper one).
    Thresholds {
        /// The upper threshold.
        upper: u32,
        /// The lower threshold.
        lower: u32,
    },
    /// A forwarding method servers cannot have (Bypass).
    FwdMethod(FwdMethod),
    /// Tunnel options on a server whose method is not tunnelling.
    TunnelWithoutTunnelMethod(FwdMethod),
    /// A GUE tunnel needs `--tun-port` (kernel `EINVAL`).
    TunnelPortRequired,
    /// A tunnel option the tunnel type does not take (e.g. `--tun-port` with IPIP, `--tun-remcsum` with GRE).
    TunnelOption {
        /// The tunnel type.
        kind: TunnelKind,
        /// The option.
        option: &'static str,
    },
    /// A server of another address family than its service, without tunnelling.
    MixedFamily {
        /// The service's family.
        service: AddressFamily,
        /// The server's family.
        dest: AddressFamily,
    },
    /// Mixed-family servers and a sync daemon cannot coexist (kernel `EINVAL`).
    MixedFamilyWithSync,
    /// A `--set` timeout above [`MAX_TIMEOUT_SECS`].
    Timeout {
        /// `tcp`, `tcpfin` or `udp`.
        field: &'static str,
        /// The value given.
        secs: u32,
    },
    /// `--mcast-interface`: empty or longer than 15 bytes.
    IfName(ArgText),
    /// `--sync-maxlen` outside 1..=65507.
    SyncMaxlen(u16),
    /// `--mcast-group` is not a multicast address.
    McastGroup(IpAddr),
    /// `--mcast-port` 0.
    McastPort(u16),
    /// `--mcast-ttl` 0.
    McastTtl(u8),
    /// `-A` of a service that exists (kernel `EEXIST`).
    ServiceExists(ServiceKey),
    /// No such service (kernel `ESRCH`).
    ServiceNotFound(ServiceKey),
    /// `-a` of a server the service already has (kernel `EEXIST`).
    DestExists(SocketAddr),
    /// No such server in the service (kernel `ENOENT`).
    DestNotFound(SocketAddr),
    /// `--start-daemon` while that daemon runs (kernel `EEXIST`).
    DaemonRunning(SyncState),
    /// `--stop-daemon` of a daemon that does not run (kernel `ESRCH`).
    DaemonNotRunning(SyncState),
}

/// `TCP 10.0.2.100:80`, `FWM 77`, `FWM 77 IPv6`: a service key in error messages.
struct KeyText<'a>(&'a ServiceKey);

impl fmt::Display for KeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ServiceKey::Addr { protocol, addr } => write!(f, "{protocol} {addr}"),
            ServiceKey::Fwmark { mark, family: AddressFamily::Inet } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark { mark, family: AddressFamily::Inet6 } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

fn family_name(af: AddressFamily) -> &'static str {
    match af {
        AddressFamily::Inet => "IPv4",
        AddressFamily::Inet6 => "IPv6",
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownScheduler(name) => write!(f, "scheduler (-s): unknown scheduler `{name}`"),
            Self::UnknownPersistenceEngine(name) => {
                write!(f, "persistence engine (--pe): unknown persistence engine `{name}`")
            }
            Self::SchedFlags(bits) => write!(f, "scheduler flags (-b): bits {bits:#x} are not scheduler flags"),
            Self::FwmarkZero => f.write_str("fwmark (-f): the mark must be greater than zero"),
            Self::ServiceProtocol(p) => write!(f, "service protocol: {p} is not TCP, UDP or SCTP"),
            Self::ZeroPortNotPersistent => f.write_str("service port: port 0 is only allowed for a persistent service"),
            Self::OnePacketNotUdp(p) => {
                write!(f, "one-packet scheduling (-o): only for UDP or fwmark services, not {p}")
            }
            Self::PersistenceTimeout(s) => {
                write!(f, "persistence timeout (-p): {s} s is outside 1..={MAX_PERSISTENCE_SECS}")
            }
            Self::Ipv6Prefix(n) => write!(f, "persistence netmask (-M): IPv6 prefix length {n} is outside 1..=128"),
            Self::Weight(w) => write!(f, "weight (-w): {w} is above {MAX_WEIGHT}"),
            Self::Thresholds { upper, lower } => {
                write!(f, "thresholds (-x/-y): lower threshold {lower} is above upper threshold {upper} (0 = none)")
            }
            Self::FwdMethod(m) => write!(f, "forwarding method: {} is not allowed for a real server", m.ipvsadm_name()),
            Self::TunnelWithoutTunnelMethod(m) => {
                write!(
                    f,
                    "tunnel options (--tun-*): the forwarding method is {}, not tunnelling (-i)",
                    m.ipvsadm_name()
                )
            }
            Self::TunnelPortRequired => f.write_str("tunnel port (--tun-port): a gue tunnel needs a port"),
            Self::TunnelOption { kind, option } => {
                write!(f, "tunnel option {option}: not allowed with --tun-type {}", kind.name())
            }
            Self::MixedFamily { service, dest } => write!(
                f,
                "real server address: {} server for an {} service is only allowed with tunnelling (-i)",
                family_name(*dest),
                family_name(*service)
            ),
            Self::MixedFamilyWithSync => {
                f.write_str("real server address: mixed-family servers and a sync daemon cannot be used together")
            }
            Self::Timeout { field, secs } => write!(f, "timeout {field} (--set): {secs} s is above {MAX_TIMEOUT_SECS}"),
            Self::IfName(name) => write!(f, "multicast interface (--mcast-interface): `{name}` is empty or too long"),
            Self::SyncMaxlen(n) => {
                write!(f, "sync message length (--sync-maxlen): {n} is outside 1..={MAX_SYNC_MAXLEN}")
            }
            Self::McastGroup(g) => write!(f, "multicast group (--mcast-group): {g} is not a multicast address"),
            Self::McastPort(p) => write!(f, "multicast port (--mcast-port): {p} is outside 1..=65535"),
            Self::McastTtl(t) => write!(f, "multicast TTL (--mcast-ttl): {t} is outside 1..=255"),
            Self::ServiceExists(k) => write!(f, "service {}: already exists", KeyText(k)),
            Self::ServiceNotFound(k) => write!(f, "service {}: no such service", KeyText(k)),
            Self::DestExists(a) => write!(f, "real server {a}: already exists in the service"),
            Self::DestNotFound(a) => write!(f, "real server {a}: no such real server in the service"),
            Self::DaemonRunning(s) => write!(f, "sync daemon: a {} daemon is already running", s.name()),
            Self::DaemonNotRunning(s) => write!(f, "sync daemon: no {} daemon is running", s.name()),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> ServiceKey {
        ServiceKey::Addr { protocol: Protocol::Tcp, addr: s.parse().unwrap() }
    }

    fn dest(s: &str, fwd: FwdMethod) -> DestConfig {
        DestConfig::new(s.parse().unwrap(), fwd)
    }

    #[test]
    fn service_validation_rules() {
        let mut s = ServiceConfig::new(tcp("10.0.0.1:80"));
        assert_eq!(s.validate(), Ok(()));
        s.scheduler = "fancy".into();
        assert_eq!(s.validate(), Err(ConfigError::UnknownScheduler(ArgText::new("fancy"))));
        s.scheduler = "none".into();
        assert_eq!(s.validate(), Ok(()));
        s.sched_flags = ServiceFlags::PERSISTENT;
        assert_eq!(s.validate(), Err(ConfigError::SchedFlags(1)));
        s.sched_flags = SCHED_FLAGS_MASK;
        assert_eq!(s.validate(), Ok(()));
        s.one_packet = true;
        assert_eq!(s.validate(), Err(ConfigError::OnePacketNotUdp(Protocol::Tcp)));
        s.one_packet = false;
        s.persistence = Some(Persistence { timeout_secs: 0, netmask: u32::MAX });
        assert_eq!(s.validate(), Err(ConfigError::PersistenceTimeout(0)));
        s.pe_name = Some("rtsp".into());
        s.persistence = Some(Persistence::new(360, AddressFamily::Inet));
        assert_eq!(s.validate(), Err(ConfigError::UnknownPersistenceEngine(ArgText::new("rtsp"))));

        let z = ServiceConfig::new(tcp("10.0.0.1:0"));
        assert_eq!(z.validate(), Err(ConfigError::ZeroPortNotPersistent));
        let mut v6 = ServiceConfig::new(tcp("[fd00::1]:80"));
        v6.persistence = Some(Persistence { timeout_secs: 300, netmask: 129 });
        assert_eq!(v6.validate(), Err(ConfigError::Ipv6Prefix(129)));
        let fw = ServiceConfig::new(ServiceKey::Fwmark { mark: 0, family: AddressFamily::Inet });
        assert_eq!(fw.validate(), Err(ConfigError::FwmarkZero));
        let icmp =
            ServiceConfig::new(ServiceKey::Addr { protocol: Protocol::Icmp, addr: "10.0.0.1:1".parse().unwrap() });
        assert_eq!(icmp.validate(), Err(ConfigError::ServiceProtocol(Protocol::Icmp)));
        let mut fw_ops = ServiceConfig::new(ServiceKey::Fwmark { mark: 3, family: AddressFamily::Inet });
        fw_ops.one_packet = true;
        assert_eq!(fw_ops.validate(), Ok(()));
        assert_eq!(fw_ops.flags(), ServiceFlags::ONEPACKET);
    }

    #[test]
    fn dest_validation_rules() {
        let svc = tcp("10.0.0.1:80");
        assert_eq!(dest("10.1.0.1:80", FwdMethod::Masq).validate_for(&svc), Ok(()));
        let mut d = dest("10.1.0.1:80", FwdMethod::Masq);
        d.l_threshold = 5;
        assert_eq!(d.validate_for(&svc), Err(ConfigError::Thresholds { upper: 0, lower: 5 }));
        d.u_threshold = 5;
        assert_eq!(d.validate_for(&svc), Ok(()));
        d.weight = MAX_WEIGHT + 1;
        assert_eq!(d.validate_for(&svc), Err(ConfigError::Weight(MAX_WEIGHT + 1)));
        let mut t = dest("10.1.0.1:80", FwdMethod::Masq);
        t.tunnel = Some(TunnelConfig::IPIP);
        assert_eq!(t.validate_for(&svc), Err(ConfigError::TunnelWithoutTunnelMethod(FwdMethod::Masq)));
        let mut g = dest("10.1.0.1:80", FwdMethod::Tunnel);
        g.tunnel = Some(TunnelConfig { kind: TunnelKind::Gue, port: 0, csum: TunnelCsum::Csum });
        assert_eq!(g.validate_for(&svc), Err(ConfigError::TunnelPortRequired));
        g.tunnel = Some(TunnelConfig { kind: TunnelKind::Gre, port: 0, csum: TunnelCsum::RemCsum });
        assert_eq!(
            g.validate_for(&svc),
            Err(ConfigError::TunnelOption { kind: TunnelKind::Gre, option: "--tun-remcsum" })
        );
        let v6 = dest("[fd01::1]:80", FwdMethod::Masq);
        assert_eq!(
            v6.validate_for(&svc),
            Err(ConfigError::MixedFamily { service: AddressFamily::Inet, dest: AddressFamily::Inet6 })
        );
        assert_eq!(dest("[fd01::1]:80", FwdMethod::Tunnel).validate_for(&svc), Ok(()));
        assert_eq!(
            dest("10.1.0.1:80", FwdMethod::Bypass).validate_for(&svc),
            Err(ConfigError::FwdMethod(FwdMethod::Bypass))
        );
    }

    #[test]
    fn dest_helpers() {
        let svc = tcp("10.0.0.1:443");
        let d = dest("10.1.0.1:8443", FwdMethod::DirectRoute).with_ipvsadm_port(&svc);
        assert_eq!(d.addr.port(), 443);
        let m = dest("10.1.0.1:8443", FwdMethod::Masq).with_ipvsadm_port(&svc);
        assert_eq!(m.addr.port(), 8443);
        let fw = ServiceKey::Fwmark { mark: 1, family: AddressFamily::Inet };
        assert_eq!(dest("10.1.0.1:0", FwdMethod::Tunnel).with_ipvsadm_port(&fw).addr.port(), 0);
        assert_eq!(dest("10.1.0.1:0", FwdMethod::Tunnel).tunnel_params(), Some(TunnelConfig::IPIP));
        assert_eq!(dest("10.1.0.1:0", FwdMethod::Masq).conn_flags(), ConnFlags::INACTIVE);
        assert_eq!(
            dest("10.1.0.1:0", FwdMethod::DirectRoute).conn_flags(),
            ConnFlags::INACTIVE | ConnFlags::NOOUTPUT | ConnFlags::DROUTE
        );
    }

    #[test]
    fn timeouts_merge_and_tables() {
        let mut t = Timeouts::DEFAULT;
        t.merge(Timeouts { tcp: 1800, tcpfin: 0, udp: 200 });
        assert_eq!(t, Timeouts { tcp: 1800, tcpfin: 120, udp: 200 });
        let (mut tt, mut ut) = (TcpTimeouts::DEFAULT, UdpTimeouts::DEFAULT);
        t.apply_to(&mut tt, &mut ut);
        assert_eq!(Timeouts::from_tables(&tt, &ut), t);
        assert_eq!(
            Timeouts { tcp: MAX_TIMEOUT_SECS + 1, tcpfin: 0, udp: 0 }.validate(),
            Err(ConfigError::Timeout { field: "tcp", secs: MAX_TIMEOUT_SECS + 1 })
        );
    }

    #[test]
    fn daemon_defaults_and_validation() {
        let mut d = SyncDaemonConfig::new(SyncState::Master, "eth0");
        assert_eq!(d.maxlen(9000), 1472);
        assert_eq!((d.group(), d.port(), d.ttl()), (IpAddr::V4(DEFAULT_MCAST_GROUP), 8848, 1));
        d.state = SyncState::Backup;
        assert_eq!(d.maxlen(9000), 9000 - 28);
        assert_eq!(d.maxlen(1280), 1472);
        d.sync_maxlen = Some(100);
        assert_eq!(d.maxlen(1500), 1024);
        d.mcast_group = Some("10.0.0.1".parse().unwrap());
        assert_eq!(d.validate(), Err(ConfigError::McastGroup("10.0.0.1".parse().unwrap())));
        d.mcast_group = Some("ff02::1".parse().unwrap());
        assert_eq!(d.validate(), Ok(()));
        d.mcast_ifn = "an-interface-name".into();
        assert_eq!(d.validate(), Err(ConfigError::IfName(ArgText::new("an-interface-name"))));
    }

    #[test]
    fn rule_set_semantics() {
        let mut rs = RuleSet::new();
        let key = tcp("10.0.0.1:80");
        rs.apply(Command::AddService(ServiceConfig::new(key))).unwrap();
        assert_eq!(rs.apply(Command::AddService(ServiceConfig::new(key))), Err(ConfigError::ServiceExists(key)));
        let d1 = dest("10.1.0.1:80", FwdMethod::Masq);
        let d2 = dest("10.1.0.2:80", FwdMethod::Masq);
        rs.apply(Command::AddDest { service: key, dest: d1 }).unwrap();
        rs.apply(Command::AddDest { service: key, dest: d2 }).unwrap();
        assert_eq!(rs.apply(Command::AddDest { service: key, dest: d1 }), Err(ConfigError::DestExists(d1.addr)));
        let edited = DestConfig { weight: 9, ..d1 };
        rs.apply(Command::EditDest { service: key, dest: edited }).unwrap();
        let entry = rs.service(&key).unwrap();
        assert_eq!(entry.dests, vec![edited, d2]);
        assert_eq!(entry.dests_kernel_order().copied().collect::<Vec<_>>(), vec![d2, edited]);
        let mut e = ServiceConfig::new(key);
        e.scheduler = "rr".into();
        rs.apply(Command::EditService(e.clone())).unwrap();
        assert_eq!(rs.service(&key).unwrap().config, e);
        assert_eq!(rs.service(&key).unwrap().dests.len(), 2);
        rs.apply(Command::DeleteDest { service: key, addr: d2.addr }).unwrap();
        assert_eq!(
            rs.apply(Command::DeleteDest { service: key, addr: d2.addr }),
            Err(ConfigError::DestNotFound(d2.addr))
        );
        let other = tcp("10.0.0.2:80");
        assert_eq!(rs.apply(Command::Zero(Some(other))), Err(ConfigError::ServiceNotFound(other)));
        rs.apply(Command::StartDaemon(SyncDaemonConfig::new(SyncState::Master, "eth0"))).unwrap();
        assert_eq!(
            rs.apply(Command::StartDaemon(SyncDaemonConfig::new(SyncState::Master, "eth1"))),
            Err(ConfigError::DaemonRunning(SyncState::Master))
        );
        let v6 = dest("[fd01::1]:80", FwdMethod::Tunnel);
        assert_eq!(rs.apply(Command::AddDest { service: key, dest: v6 }), Err(ConfigError::MixedFamilyWithSync));
        rs.apply(Command::StopDaemon(SyncState::Master)).unwrap();
        assert_eq!(
            rs.apply(Command::StopDaemon(SyncState::Master)),
            Err(ConfigError::DaemonNotRunning(SyncState::Master))
        );
        rs.apply(Command::AddDest { service: key, dest: v6 }).unwrap();
        assert_eq!(
            rs.apply(Command::StartDaemon(SyncDaemonConfig::new(SyncState::Backup, "eth0"))),
            Err(ConfigError::MixedFamilyWithSync)
        );
        rs.apply(Command::DeleteService(key)).unwrap();
        assert!(rs.services().is_empty());
        rs.apply(Command::AddService(ServiceConfig::new(key))).unwrap();
        rs.apply(Command::Flush).unwrap();
        assert!(rs.services().is_empty());
    }

    #[test]
    fn arg_text_truncates_at_char_boundary() {
        let short = ArgText::new("wlc");
        assert_eq!((short.as_str(), short.is_truncated()), ("wlc", false));
        let long = "é".repeat(30);
        let t = ArgText::new(&long);
        assert!(t.is_truncated());
        assert_eq!(t.as_str().len(), 40);
        assert!(t.to_string().ends_with('…'));
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let e = ConfigError::UnknownScheduler(ArgText::new("fancy")).to_string();
        assert!(e.contains("-s") && e.contains("fancy"), "{e}");
        let e = ConfigError::ServiceNotFound(tcp("10.0.0.1:80")).to_string();
        assert!(e.contains("TCP 10.0.0.1:80"), "{e}");
        let e = ConfigError::Thresholds { upper: 3, lower: 7 }.to_string();
        assert!(e.contains('7') && e.contains('3') && e.contains("-x/-y"), "{e}");
    }
}
