//! The director: the engine plus everything around it that is not I/O.
//!
//! - **Configuration changes are atomic.** A rules file (or one `ctl` command, or a `ctl -R` restore) is
//!   parsed whole, then checked command by command against a model of the running configuration
//!   ([`RuleSet`], built from the engine), and only then applied to the engine. If the engine still refuses a
//!   command, the commands before it are undone (each one's inverse, computed from the model), so the
//!   running configuration is exactly what it was.
//! - **Direct routing is refused**: a TUN device has no layer 2 (see the crate docs).
//! - **Health checks quiesce, not remove**: a failing real server gets weight 0 (its configured weight is
//!   kept here); when it recovers the weight goes back, and the engine's slow start ramps it up. An edit of a
//!   quiesced server's weight is remembered and applied when it recovers.
//! - **Packet path**: [`Director::process`] tells a client packet (to a virtual address) from a NAT real
//!   server's reply (from a NAT real server's address), runs the engine, and says whether to write the
//!   buffer back to the device.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

use ipvs_core::config::ServiceEntry;
use ipvs_core::ipvsadm::{parse_rules, RuleError};
use ipvs_core::proto::{Duration, FwdMethod, Instant, ServiceKey};
use ipvs_core::slow_start::SlowStart;
use ipvs_core::sync::Version;
use ipvs_core::{
    Command, ConfigError, DestConfig, Direction, Engine, EngineConfig, EngineError, PacketBuf, RuleSet,
    SyncDaemonConfig, SyncState, Verdict,
};

use crate::clock::Clock;
use crate::sync::SyncCounters;

/// The kernel's default connection hash size (`IP_VS_TAB_BITS` = 12), shown by `ipvsadm -L` as `size=4096`.
pub const DEFAULT_CONN_TAB_SIZE: u32 = 4096;

/// How a director is built.
#[derive(Clone, Debug)]
pub struct DirectorOptions {
    /// Most connections and templates the table holds.
    pub conn_capacity: usize,
    /// SipHash key of the connection table (pick it at random).
    pub hash_key: [u8; 16],
    /// Path MTU toward the real servers (tunnels and `DF` packets are checked against it).
    pub mtu: u32,
    /// The director's IPv4 address: outer source of IPv4 tunnels and source of ICMP errors.
    pub local_v4: Option<Ipv4Addr>,
    /// The director's IPv6 address, as `local_v4`.
    pub local_v6: Option<Ipv6Addr>,
    /// Slow-start period for real servers that come back (health recovery, weight raised from 0).
    pub slow_start: Duration,
    /// Firewall mark given to every packet read from the device (0 = none).
    pub tun_fwmark: u32,
    /// `size=` in the `-L` version line.
    pub conn_tab_size: u32,
    /// The sync master's wire version (the kernel's `net.ipv4.vs.sync_version` sysctl; v1 by default, v0
    /// for old backups). A backup reads both.
    pub sync_version: Version,
}

impl DirectorOptions {
    /// Defaults: 262 144 connections, MTU 1500, no director address, slow start 10 s, no mark, sync v1.
    pub fn new(hash_key: [u8; 16]) -> Self {
        Self {
            conn_capacity: 1 << 18,
            hash_key,
            mtu: 1500,
            local_v4: None,
            local_v6: None,
            slow_start: Duration::from_secs(10),
            tun_fwmark: 0,
            conn_tab_size: DEFAULT_CONN_TAB_SIZE,
            sync_version: Version::V1,
        }
    }
}

/// Starts and stops sync daemons (the I/O side: sockets and threads). See [`crate::sync::SyncRunner`].
pub trait DaemonRunner: fmt::Debug + Send + Sync {
    /// Starts a daemon.
    ///
    /// # Errors
    /// Why it could not start (interface missing, port busy, …), as one line.
    fn start(&self, config: &SyncDaemonConfig) -> io::Result<()>;
    /// Stops a running daemon.
    fn stop(&self, state: SyncState);
}

/// What to do with the buffer after [`Director::process`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Action {
    /// Write the packet (as it now is in the buffer, [`PacketBuf::packet`]) back to the device.
    Write,
    /// Discard it.
    Drop,
}

/// Why a configuration change was refused. The running configuration is unchanged in every case.
#[derive(Debug)]
pub enum ApplyError {
    /// A line could not be parsed (its number, the option and the reason).
    Parse(RuleError),
    /// A command breaks a rule of ipvsadm, the kernel or this director.
    Refused {
        /// 1-based line of the command.
        line: usize,
        /// What is wrong.
        reason: Refusal,
    },
    /// A sync daemon could not be started.
    Daemon {
        /// 1-based line of the command.
        line: usize,
        /// Why.
        error: io::Error,
    },
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Refusal {
    /// The model (ipvsadm's and the kernel's rules) refused it.
    Config(ConfigError),
    /// The engine refused it.
    Engine(EngineError),
    /// A direct-routing (`-g`) real server: impossible through a TUN device.
    DirectRouting(SocketAddr),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Engine(e) => e.fmt(f),
            Self::DirectRouting(a) => write!(
                f,
                "real server {a}: direct routing (-g, ipvsadm's default) cannot work through a TUN device (no layer \
                 2); use masquerading (-m) or tunnelling (-i)"
            ),
        }
    }
}

impl ApplyError {
    /// The 1-based line the error is about.
    pub fn line(&self) -> usize {
        match self {
            Self::Parse(e) => e.line,
            Self::Refused { line, .. } | Self::Daemon { line, .. } => *line,
        }
    }

    /// The reason without the line number (for one-line `ctl` commands).
    pub fn reason(&self) -> String {
        match self {
            Self::Parse(e) => e.kind.to_string(),
            Self::Refused { reason, .. } => reason.to_string(),
            Self::Daemon { error, .. } => format!("sync daemon: {error}"),
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line(), self.reason())
    }
}

impl std::error::Error for ApplyError {}

/// Packet-path counters of the director itself (the engine counts its own drops).
#[derive(Debug, Default)]
pub struct PathCounters {
    /// Packets read from the device.
    pub rx: AtomicU64,
    /// Packets written back to the device.
    pub tx: AtomicU64,
    /// Packets the engine dropped (by reason in [`Engine::drop_counts`]).
    pub engine_drops: AtomicU64,
    /// Packets to a virtual address that no service takes (writing them back would loop through the device).
    pub no_service: AtomicU64,
    /// Packets for a local real server (LocalNode): the kernel's own stack is not reachable from here.
    pub local: AtomicU64,
    /// Packets whose verdict asked for direct routing (a synced conn of a `-g` server).
    pub direct_route: AtomicU64,
    /// Writes to the device that failed.
    pub write_errors: AtomicU64,
}

impl PathCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Addresses that decide which side a packet read from the device came from.
#[derive(Debug, Default)]
struct Classifier {
    /// Virtual addresses of address services.
    vips: HashSet<IpAddr>,
    /// Addresses of NAT real servers.
    nat_dests: HashSet<IpAddr>,
}

impl Classifier {
    fn direction(&self, src: IpAddr, dst: IpAddr) -> Direction {
        if self.vips.contains(&dst) {
            Direction::FromClient
        } else if self.nat_dests.contains(&src) {
            Direction::FromRealServer
        } else {
            // Firewall-mark services (any destination) and ICMP errors from clients.
            Direction::FromClient
        }
    }
}

/// The mutable state around the engine, behind one lock: every configuration change takes it.
#[derive(Debug, Default)]
struct ControlState {
    /// Running sync daemons.
    daemons: Vec<SyncDaemonConfig>,
    /// Real servers quiesced by a failed health check, with the weight to give back when they recover.
    down: HashMap<(ServiceKey, SocketAddr), u32>,
}

/// The director. Share it with an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Director {
    engine: Arc<Engine>,
    clock: Clock,
    opts: DirectorOptions,
    control: Mutex<ControlState>,
    classifier: RwLock<Arc<Classifier>>,
    counters: PathCounters,
    sync_counters: Arc<SyncCounters>,
    runner: OnceLock<Box<dyn DaemonRunner>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Director {
    /// A director with no services.
    ///
    /// # Errors
    /// The engine's, for an invalid capacity or MTU.
    pub fn new(opts: DirectorOptions) -> Result<Arc<Self>, EngineError> {
        let clock = Clock::new();
        let mut config = EngineConfig::new(opts.conn_capacity, opts.hash_key);
        config.mtu = opts.mtu;
        config.local_v4 = opts.local_v4;
        config.local_v6 = opts.local_v6;
        config.slow_start = SlowStart::new(opts.slow_start);
        config.start = clock.now();
        let sync_counters = Arc::new(SyncCounters::default());
        let engine = Arc::new(Engine::new(config)?);
        Ok(Arc::new(Self {
            engine,
            clock,
            opts,
            control: Mutex::new(ControlState::default()),
            classifier: RwLock::new(Arc::new(Classifier::default())),
            counters: PathCounters::default(),
            sync_counters,
            runner: OnceLock::new(),
        }))
    }

    /// Installs what starts and stops sync daemons. Without one, daemon commands are recorded (listed by
    /// `-L --daemon`) but nothing is sent or received. Only the first call has an effect.
    pub fn set_daemon_runner(&self, runner: Box<dyn DaemonRunner>) {
        let _ = self.runner.set(runner);
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Sync counters (for metrics).
    pub fn sync_counters(&self) -> &Arc<SyncCounters> {
        &self.sync_counters
    }

    /// The options it was built with.
    pub fn options(&self) -> &DirectorOptions {
        &self.opts
    }

    /// The director's clock, now.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The director's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Packet-path counters.
    pub fn counters(&self) -> &PathCounters {
        &self.counters
    }

    /// The running sync daemons.
    pub fn daemons(&self) -> Vec<SyncDaemonConfig> {
        lock(&self.control).daemons.clone()
    }

    /// How many real servers are quiesced by health checks.
    pub fn quiesced(&self) -> usize {
        lock(&self.control).down.len()
    }

    // -----------------------------------------------------------------------------------------------------
    // Configuration
    // -----------------------------------------------------------------------------------------------------

    /// Applies a rules file (the `ipvsadm-save` format or ipvsadm command lines) atomically: either every
    /// command takes effect, or none does. Returns how many commands were applied.
    ///
    /// # Errors
    /// The first line that cannot be parsed or is refused, with the reason ([`ApplyError`]).
    pub fn apply_rules(&self, text: &str) -> Result<usize, ApplyError> {
        let rules = parse_rules(text).map_err(ApplyError::Parse)?;
        let mut st = lock(&self.control);
        // 1. Check every command against a model of the running configuration.
        let mut model = self.model(&st);
        for rule in &rules {
            let refuse = |reason| ApplyError::Refused { line: rule.line, reason };
            self.check_supported(&rule.command).map_err(refuse)?;
            model.apply(rule.command.clone()).map_err(|e| refuse(Refusal::Config(e)))?;
        }
        // 2. Apply, keeping the inverse of each command to undo a partial application.
        let now = self.now();
        let down_before = st.down.clone();
        let mut cur = self.model(&st);
        let mut undo: Vec<Vec<Command>> = Vec::new();
        let mut started: Vec<SyncState> = Vec::new();
        let mut stopped: Vec<SyncDaemonConfig> = Vec::new();
        let mut failure = None;
        for rule in &rules {
            let result = match &rule.command {
                Command::StartDaemon(config) => match self.start_daemon(config) {
                    Ok(()) => {
                        started.push(config.state);
                        st.daemons.push(config.clone());
                        Ok(())
                    }
                    Err(error) => Err(ApplyError::Daemon { line: rule.line, error }),
                },
                Command::StopDaemon(state) => {
                    if let Some(pos) = st.daemons.iter().position(|d| d.state == *state) {
                        let config = st.daemons.remove(pos);
                        if let Some(r) = self.runner.get() {
                            r.stop(*state);
                        }
                        stopped.push(config);
                    }
                    Ok(())
                }
                command => {
                    let inverse = inverse(&cur, command);
                    let command = adjust_for_health(&mut st.down, command.clone());
                    match self.engine.apply(now, command) {
                        Ok(()) => {
                            undo.push(inverse);
                            Ok(())
                        }
                        Err(e) => Err(ApplyError::Refused { line: rule.line, reason: Refusal::Engine(e) }),
                    }
                }
            };
            if let Err(e) = result {
                failure = Some(e);
                break;
            }
            if let Err(e) = cur.apply(rule.command.clone()) {
                tracing::warn!(line = rule.line, error = %e, "model diverged from the engine");
            }
        }
        if let Some(err) = failure {
            // 3. Undo what was applied, last first.
            for commands in undo.into_iter().rev() {
                for c in commands {
                    if let Err(e) = self.engine.apply(now, c.clone()) {
                        tracing::error!(command = ?c, error = %e, "rollback step failed");
                    }
                }
            }
            for state in started {
                st.daemons.retain(|d| d.state != state);
                if let Some(r) = self.runner.get() {
                    r.stop(state);
                }
            }
            for config in stopped {
                if self.start_daemon(&config).is_ok() {
                    st.daemons.push(config);
                }
            }
            st.down = down_before;
            drop(st);
            self.rebuild_classifier();
            return Err(err);
        }
        drop(st);
        self.rebuild_classifier();
        Ok(rules.len())
    }

    fn start_daemon(&self, config: &SyncDaemonConfig) -> io::Result<()> {
        match self.runner.get() {
            Some(r) => r.start(config),
            None => Ok(()),
        }
    }

    /// The limits of this director on top of ipvsadm's rules.
    fn check_supported(&self, command: &Command) -> Result<(), Refusal> {
        match command {
            Command::AddDest { dest, .. } | Command::EditDest { dest, .. } => {
                if dest.fwd == FwdMethod::DirectRoute {
                    return Err(Refusal::DirectRouting(dest.addr));
                }
                let ip = dest.addr.ip();
                if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
                    return Err(Refusal::Engine(EngineError::DestAddress(ip)));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The running configuration as a [`RuleSet`].
    fn model(&self, st: &ControlState) -> RuleSet {
        let mut rs = RuleSet::new();
        let mut commands = Vec::new();
        for s in self.engine.services() {
            let key = s.config.key;
            commands.push(Command::AddService(s.config));
            // Listed most recently added first: add them back oldest first.
            commands.extend(s.dests.iter().rev().map(|d| Command::AddDest { service: key, dest: d.config }));
        }
        commands.push(Command::SetTimeouts(self.engine.ipvsadm_timeouts()));
        commands.extend(st.daemons.iter().cloned().map(Command::StartDaemon));
        for c in commands {
            if let Err(e) = rs.apply(c) {
                tracing::warn!(error = %e, "running configuration does not fit the model");
            }
        }
        rs
    }

    fn rebuild_classifier(&self) {
        let mut c = Classifier::default();
        for s in self.engine.services() {
            if let ServiceKey::Addr { addr, .. } = s.config.key {
                c.vips.insert(addr.ip());
            }
            for d in &s.dests {
                if d.config.fwd == FwdMethod::Masq {
                    c.nat_dests.insert(d.config.addr.ip());
                }
            }
        }
        *self.classifier.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(c);
    }

    // -----------------------------------------------------------------------------------------------------
    // Health
    // -----------------------------------------------------------------------------------------------------

    /// The real server addresses (with their ports) the health checker probes, once each: those of TCP and
    /// firewall-mark services — a TCP connect or HTTP GET says nothing about a UDP or SCTP port — or, when
    /// the checks go to a fixed port (`all_services`), those of every service.
    pub fn health_targets(&self, all_services: bool) -> Vec<SocketAddr> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for s in self.engine.services() {
            let tcp = match s.config.key {
                ServiceKey::Addr { protocol, .. } => protocol == ipvs_core::proto::Protocol::Tcp,
                ServiceKey::Fwmark { .. } => true,
            };
            if !tcp && !all_services {
                continue;
            }
            for d in &s.dests {
                if seen.insert(d.config.addr) {
                    out.push(d.config.addr);
                }
            }
        }
        out.sort();
        out
    }

    /// Marks the real server `addr` (in every service that has it) down — weight 0, its weight kept — or
    /// up again — its weight back, through slow start. Returns how many real servers changed.
    pub fn set_health(&self, addr: SocketAddr, up: bool) -> usize {
        let mut st = lock(&self.control);
        let now = self.now();
        let mut changed = 0;
        for s in self.engine.services() {
            let key = s.config.key;
            let Some(d) = s.dests.iter().find(|d| d.config.addr == addr) else { continue };
            let slot = (key, addr);
            let weight = if up {
                match st.down.remove(&slot) {
                    Some(w) => w,
                    None => continue,
                }
            } else {
                if st.down.contains_key(&slot) {
                    continue;
                }
                st.down.insert(slot, d.config.weight);
                0
            };
            changed += 1;
            if weight != d.config.weight {
                let config = DestConfig { weight, ..d.config };
                if let Err(e) = self.engine.edit_dest(now, &key, config) {
                    tracing::error!(real_server = %addr, error = %e, "health: weight change refused");
                }
            }
        }
        changed
    }

    // -----------------------------------------------------------------------------------------------------
    // Packet path
    // -----------------------------------------------------------------------------------------------------

    /// Handles one packet read from the device (starting at `buf`'s range, with headroom before it) and
    /// says whether to write the buffer's packet back. The firewall mark of [`DirectorOptions::tun_fwmark`]
    /// is applied here.
    pub fn process(&self, buf: &mut PacketBuf<'_>) -> Action {
        PathCounters::bump(&self.counters.rx);
        if self.opts.tun_fwmark != 0 {
            buf.set_fwmark(self.opts.tun_fwmark);
        }
        let addrs = ip_addrs(buf.packet());
        let classifier = Arc::clone(&self.classifier.read().unwrap_or_else(PoisonError::into_inner));
        let direction = match addrs {
            Some((src, dst)) => classifier.direction(src, dst),
            None => Direction::FromClient,
        };
        let verdict = self.engine.handle_packet(self.now(), buf, direction);
        let action = match verdict {
            Verdict::Forward { method: FwdMethod::DirectRoute, .. } => {
                PathCounters::bump(&self.counters.direct_route);
                Action::Drop
            }
            Verdict::Forward { .. } | Verdict::SendIcmp { .. } => Action::Write,
            Verdict::Pass => match addrs {
                // It came in because the VIP is routed into the device: back out it would loop.
                Some((_, dst)) if direction == Direction::FromClient && classifier.vips.contains(&dst) => {
                    PathCounters::bump(&self.counters.no_service);
                    Action::Drop
                }
                _ => Action::Write,
            },
            Verdict::Local => {
                PathCounters::bump(&self.counters.local);
                Action::Drop
            }
            Verdict::Drop(_) => {
                PathCounters::bump(&self.counters.engine_drops);
                Action::Drop
            }
        };
        if action == Action::Write {
            PathCounters::bump(&self.counters.tx);
        }
        action
    }

    /// Counts a failed write to the device (the packet is lost).
    pub fn count_write_error(&self) {
        PathCounters::bump(&self.counters.write_errors);
        self.counters.tx.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Source and destination of an IPv4 or IPv6 packet, if the header is there.
fn ip_addrs(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match pkt.first()? >> 4 {
        4 => {
            let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        6 => {
            let src: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst)))
        }
        _ => None,
    }
}

/// An edit of a quiesced real server's weight is remembered, and the server stays at weight 0; adding or
/// removing a real server (or its service) forgets its health state.
fn adjust_for_health(down: &mut HashMap<(ServiceKey, SocketAddr), u32>, command: Command) -> Command {
    match command {
        Command::EditDest { service, mut dest } => {
            if let Some(w) = down.get_mut(&(service, dest.addr)) {
                *w = dest.weight;
                dest.weight = 0;
            }
            Command::EditDest { service, dest }
        }
        Command::AddDest { service, dest } => {
            down.remove(&(service, dest.addr));
            Command::AddDest { service, dest }
        }
        Command::DeleteDest { service, addr } => {
            down.remove(&(service, addr));
            Command::DeleteDest { service, addr }
        }
        Command::DeleteService(key) => {
            down.retain(|(k, _), _| *k != key);
            Command::DeleteService(key)
        }
        Command::Flush => {
            down.clear();
            Command::Flush
        }
        other => other,
    }
}

/// The commands that undo `command` on the configuration `cur` (before it is applied).
fn inverse(cur: &RuleSet, command: &Command) -> Vec<Command> {
    let restore = |e: &ServiceEntry| {
        let key = e.config.key;
        std::iter::once(Command::AddService(e.config.clone()))
            .chain(e.dests.iter().map(move |d| Command::AddDest { service: key, dest: *d }))
            .collect::<Vec<_>>()
    };
    match command {
        Command::AddService(c) => vec![Command::DeleteService(c.key)],
        Command::EditService(c) => {
            cur.service(&c.key).map(|e| vec![Command::EditService(e.config.clone())]).unwrap_or_default()
        }
        Command::DeleteService(k) => cur.service(k).map(restore).unwrap_or_default(),
        Command::Flush => cur.services().iter().flat_map(restore).collect(),
        Command::AddDest { service, dest } => vec![Command::DeleteDest { service: *service, addr: dest.addr }],
        Command::EditDest { service, dest } => cur
            .service(service)
            .and_then(|e| e.dests.iter().find(|d| d.addr == dest.addr))
            .map(|old| vec![Command::EditDest { service: *service, dest: *old }])
            .unwrap_or_default(),
        Command::DeleteDest { service, addr } => cur
            .service(service)
            .and_then(|e| e.dests.iter().find(|d| d.addr == *addr))
            .map(|old| vec![Command::AddDest { service: *service, dest: *old }])
            .unwrap_or_default(),
        Command::SetTimeouts(_) => vec![Command::SetTimeouts(cur.timeouts())],
        // Counters cannot be given back; daemons are undone by the caller.
        Command::Zero(_) | Command::StartDaemon(_) | Command::StopDaemon(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn director() -> Arc<Director> {
        Director::new(DirectorOptions::new([7; 16])).unwrap()
    }

    const RULES: &str = "\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.0.1.1:80 -m -w 1
-a -t 10.0.0.100:80 -r 10.0.1.2:80 -m -w 2
-A -u 10.0.0.100:53 -s wrr
-a -u 10.0.0.100:53 -r 10.0.1.1:53 -m -w 1
";

    fn save(d: &Director) -> String {
        crate::listing::snapshot(d).save()
    }

    #[test]
    fn rules_load_and_save() {
        let d = director();
        assert_eq!(d.apply_rules(RULES).unwrap(), 5);
        let saved = save(&d);
        assert!(saved.contains("-A -t 10.0.0.100:80 -s rr\n"), "{saved}");
        assert!(saved.contains("-a -t 10.0.0.100:80 -r 10.0.1.2:80 -m -w 2\n"), "{saved}");
        // Round trip through a fresh director.
        let d2 = director();
        d2.apply_rules(&saved).unwrap();
        assert_eq!(save(&d2), saved);
    }

    #[test]
    fn bad_file_changes_nothing() {
        let d = director();
        d.apply_rules(RULES).unwrap();
        let before = save(&d);
        // Parse error on line 3.
        let e =
            d.apply_rules("-A -t 10.0.0.200:80\n-a -t 10.0.0.200:80 -r 10.0.1.1:80 -m\n-a -t 1 -w x\n").unwrap_err();
        assert_eq!(e.line(), 3, "{e}");
        // Model error on line 2 (server exists), after a valid line 1.
        let e = d.apply_rules("-A -t 10.0.0.200:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.1.1:80 -m\n").unwrap_err();
        assert_eq!(e.line(), 2);
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(save(&d), before);
    }

    #[test]
    fn direct_routing_is_refused() {
        let d = director();
        let e = d.apply_rules("-A -t 10.0.0.100:80\n-a -t 10.0.0.100:80 -r 10.0.1.1:80\n").unwrap_err();
        assert_eq!(e.line(), 2);
        assert!(e.to_string().contains("direct routing"), "{e}");
        assert_eq!(save(&d), "");
    }

    #[test]
    fn engine_refusal_rolls_back() {
        let d = director();
        d.apply_rules(RULES).unwrap();
        let before = save(&d);
        // The model accepts an IPv6 tunnel server on an IPv4 service; the engine refuses it (this director has
        // no IPv6 address for the outer header) — with earlier lines of the file not applied.
        let e = d
            .apply_rules("-D -t 10.0.0.100:80\n-C\n-A -t 10.0.0.9:80\n-a -t 10.0.0.9:80 -r [2001:db8::1]:80 -i\n")
            .unwrap_err();
        assert_eq!(e.line(), 4);
        assert!(e.to_string().contains("local_v6"), "{e}");
        assert_eq!(save(&d), before);
    }

    #[test]
    fn inverses_undo_every_command() {
        let d = director();
        d.apply_rules(RULES).unwrap();
        let before = save(&d);
        let script = "\
-E -t 10.0.0.100:80 -s wlc -p 60
-e -t 10.0.0.100:80 -r 10.0.1.1:80 -m -w 9
-d -t 10.0.0.100:80 -r 10.0.1.2:80
-D -u 10.0.0.100:53
--set 10 20 30
-C
-A -t 10.0.0.7:80 -s rr
";
        let st = lock(&d.control);
        let mut cur = d.model(&st);
        drop(st);
        let now = d.now();
        let mut undo = Vec::new();
        for rule in parse_rules(script).unwrap() {
            undo.push(inverse(&cur, &rule.command));
            d.engine.apply(now, rule.command.clone()).unwrap();
            cur.apply(rule.command).unwrap();
        }
        for commands in undo.into_iter().rev() {
            for c in commands {
                d.engine.apply(now, c).unwrap();
            }
        }
        assert_eq!(save(&d), before);
        assert_eq!(d.engine.ipvsadm_timeouts(), ipvs_core::Timeouts::DEFAULT);
    }

    #[test]
    fn health_quiesces_and_restores() {
        let d = director();
        d.apply_rules(RULES).unwrap();
        let rs: SocketAddr = "10.0.1.1:80".parse().unwrap();
        assert_eq!(d.set_health(rs, false), 1);
        assert_eq!(d.set_health(rs, false), 0);
        assert!(save(&d).contains("-r 10.0.1.1:80 -m -w 0\n"));
        // An edit while down is remembered.
        d.apply_rules("-e -t 10.0.0.100:80 -r 10.0.1.1:80 -m -w 5\n").unwrap();
        assert!(save(&d).contains("-r 10.0.1.1:80 -m -w 0\n"));
        assert_eq!(d.set_health(rs, true), 1);
        assert!(save(&d).contains("-r 10.0.1.1:80 -m -w 5\n"));
        assert_eq!(d.quiesced(), 0);
        assert_eq!(d.health_targets(false).len(), 2);
        assert_eq!(d.health_targets(true).len(), 3);
    }

    #[test]
    fn classifier_sides() {
        let d = director();
        d.apply_rules(RULES).unwrap();
        let c = d.classifier.read().unwrap();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let vip: IpAddr = "10.0.0.100".parse().unwrap();
        let rs: IpAddr = "10.0.1.1".parse().unwrap();
        assert_eq!(c.direction(client, vip), Direction::FromClient);
        assert_eq!(c.direction(rs, client), Direction::FromRealServer);
        assert_eq!(c.direction(rs, vip), Direction::FromClient);
    }
}
