//! Virtual services and real servers with ipvsadm semantics (facts §2, §7, §13): the control operations of
//! [`Engine`], the service lookup of the packet path (facts §2.1), and the dest trash (facts §2.3).
//!
//! # Model
//!
//! Services live in a map by [`ServiceKey`]; each keeps its real servers as a list of [`DestId`]s in the
//! kernel's order (most recently added first, facts §2.4), its scheduler and a cached list of
//! [`DestView`]s the scheduler sees. Real servers live in a slab indexed by their id, whether linked to a
//! service or in the trash; their counters ([`DestState`]) sit behind a mutex each, since packets of every
//! thread bind and unbind conns.
//!
//! The scheduler's view list is refreshed from the counters right before each pick: every entry that changed
//! is reported to the scheduler first ([`Scheduler::counters_changed`], or [`Scheduler::dests_changed`] with
//! `Updated` when the effective weight moved — slow start), so index-keeping schedulers stay exact without
//! the packet path taking the scheduler's lock on every counter change. Only the real servers that changed are
//! refreshed: a counter change puts its real server on the service's change list ([`ChangedDests`], once until
//! the next pick), and real servers in a slow-start ramp are refreshed on every pick until the ramp ends — so a
//! pick costs O(changes), not O(real servers) (at 10,000 real servers the O(log n) `wlc` tree stays O(log n)).
//!
//! # Trash
//!
//! A deleted real server (or one of a deleted service) loses `AVAILABLE` and leaves its service's list, but
//! keeps its id, counters and statistics while conns point at it. Adding the same address:port to the same
//! service brings it back (counters and statistics kept). Every 60 s the trash is checked; a real server
//! without conns or templates for 120 s is freed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ipvs_conn::ConnView;
use ipvs_proto::{AddressFamily, DestFlags, DestId, FwdMethod, Instant, Protocol, ServiceKey};
use ipvs_sched::{new_scheduler, CounterChange, DestEvent, DestState, DestView, SchedConfig, SchedFlow, Scheduler};
use parking_lot::Mutex;

use crate::config::{Command, ConfigError, DestConfig, ServiceConfig, Timeouts, TunnelKind, NO_SCHEDULER};
use crate::control_hash::ControlHash;
use crate::engine::{DestInfo, Engine, EngineError, ProtoTimeouts, ServiceInfo, Sysctls, TRASH_IDLE};
use crate::events::{Event, EventQueue};
use crate::persistence::FTP_PORT;
use crate::slow_start::SlowStart;
use crate::stats::StatsCell;

/// The FTP data port (facts §8.4).
const FTP_DATA_PORT: u16 = 20;
/// The first unprivileged port (the kernel's default `ip_unprivileged_port_start`).
const UNPRIVILEGED_PORT: u16 = 1024;

/// The configuration side of the engine, behind its read-write lock.
#[derive(Debug)]
pub(crate) struct ControlState {
    pub(crate) services: HashMap<ServiceKey, ServiceSlot, ControlHash>,
    /// Real servers by id (linked or in the trash); `None` once freed.
    pub(crate) dests: Vec<Option<DestSlot>>,
    /// Real servers in the trash.
    pub(crate) n_trash: usize,
    /// Services added so far (the next service's `added`).
    n_added: u64,
    /// Services on port 21 (TCP), for the FTP data-port fallback of the service lookup.
    n_ftp: usize,
    /// Non-fwmark services on port 0, for the catch-all fallback.
    n_port0: usize,
    /// Address and port of every NAT real server (`nat_icmp_send`, fragment policy of replies).
    masq_servers: HashSet<(IpAddr, u16), ControlHash>,
    /// Addresses of NAT real servers.
    masq_addrs: HashSet<IpAddr, ControlHash>,
    /// Virtual addresses of address services.
    vips: HashSet<IpAddr, ControlHash>,
    /// Tunnel real servers: address, tunnel type and GUE port (0 for IPIP and GRE).
    tunnels: HashSet<(IpAddr, TunnelKind, u16), ControlHash>,
    /// NAT real servers of UDP `--pe sip` services with a port, by address and port, for the SIP engine's
    /// `conn_out` (facts §8.5): the real server of the oldest such service when several list one.
    sip_servers: HashMap<(IpAddr, u16), DestId, ControlHash>,
    pub(crate) sysctls: Sysctls,
    pub(crate) timeouts: ProtoTimeouts,
}

/// A virtual service.
#[derive(Debug)]
pub(crate) struct ServiceSlot {
    pub(crate) config: ServiceConfig,
    /// Order of addition (listings show services oldest first).
    pub(crate) added: u64,
    /// Real servers in the kernel's list order (most recently added first).
    pub(crate) dests: Vec<DestId>,
    pub(crate) sched: Mutex<SchedSlot>,
    /// Shared with its real servers, which count their packets here too without a service lookup.
    pub(crate) stats: Arc<StatsCell>,
    /// Shared with its real servers: which of them changed since the scheduler last looked.
    pub(crate) changed: Arc<ChangedDests>,
}

/// The real servers of one service whose counters or weight changed since the last pick: each queues itself
/// once (its `queued` flag) so a pick refreshes only those views, not every real server's (O(changes), not
/// O(real servers), per new conn).
#[derive(Debug, Default)]
pub(crate) struct ChangedDests {
    ids: Mutex<Vec<DestId>>,
}

/// A service's scheduler and the list it was last shown.
#[derive(Debug)]
pub(crate) struct SchedSlot {
    sched: Option<Box<dyn Scheduler>>,
    views: Vec<DestView>,
    /// Where each real server sits in `views`, by id number (`u32::MAX`: not listed); checked against the id
    /// list before use, rebuilt when stale.
    index_of: Vec<u32>,
    /// Real servers in a slow-start ramp: their effective weight moves with time, so every pick refreshes them.
    ramping: Vec<DestId>,
    /// The drained change list (kept for its capacity).
    scratch: Vec<DestId>,
}

/// A real server.
#[derive(Debug)]
pub(crate) struct DestSlot {
    pub(crate) id: DestId,
    pub(crate) config: DestConfig,
    /// The service it belongs (or belonged, in the trash) to.
    pub(crate) service: ServiceKey,
    /// Linked to its service (the kernel's `AVAILABLE`).
    pub(crate) linked: bool,
    /// Path MTU override.
    pub(crate) mtu: Option<u32>,
    /// Slow start: when the ramp began.
    pub(crate) ramp_since: Option<Instant>,
    /// Trash: since when it has had no conns.
    idle_since: Option<Instant>,
    pub(crate) state: Mutex<DestState>,
    pub(crate) stats: StatsCell,
    /// Its service's statistics (packets count there without a service lookup).
    pub(crate) service_stats: Arc<StatsCell>,
    /// Its service's change list, and whether it is on it.
    changed: Arc<ChangedDests>,
    queued: AtomicBool,
}

impl DestSlot {
    /// Runs `f` on the counters under their lock and queues an event when OVERLOAD flips.
    pub(crate) fn update_state<R>(&self, events: &EventQueue, f: impl FnOnce(&mut DestState) -> R) -> R {
        let mut st = self.state.lock();
        let was = st.is_overloaded();
        let r = f(&mut st);
        let now = st.is_overloaded();
        drop(st);
        self.mark_changed();
        if was != now {
            events.push(if now {
                Event::DestOverloaded { dest: self.id }
            } else {
                Event::DestRecovered { dest: self.id }
            });
        }
        r
    }

    /// Puts this real server on its service's change list (once until the next pick takes it off).
    pub(crate) fn mark_changed(&self) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.changed.ids.lock().push(self.id);
        }
    }

    /// The current weight (the configured one, not slow start's).
    pub(crate) fn weight(&self) -> u32 {
        self.state.lock().weight
    }

    /// What the scheduler sees of this real server at `now`.
    fn view(&self, now: Instant, ramp: &SlowStart) -> DestView {
        let mut v = self.state.lock().view(self.id, self.config.addr);
        if let Some(since) = self.ramp_since {
            v.weight = ramp.effective_weight(v.weight, since, now);
        }
        v
    }

    fn info(&self) -> DestInfo {
        let st = *self.state.lock();
        DestInfo {
            id: self.id,
            config: self.config,
            active_conns: st.active_conns,
            inactive_conns: st.inactive_conns,
            persist_conns: st.persist_conns,
            overloaded: st.is_overloaded(),
            stats: self.stats.snapshot(),
        }
    }

    fn refcount(&self) -> u64 {
        let st = self.state.lock();
        st.total_conns() + u64::from(st.persist_conns)
    }
}

impl SchedSlot {
    /// A scheduler bound to `views`.
    pub(crate) fn new(sched: Option<Box<dyn Scheduler>>, views: Vec<DestView>) -> Self {
        Self { sched, views, index_of: Vec::new(), ramping: Vec::new(), scratch: Vec::new() }
    }

    /// Refreshes the views of the real servers that changed (and of those in a slow-start ramp) at `now`,
    /// telling the scheduler about each change, then picks.
    pub(crate) fn pick(
        &mut self,
        ctl: &ControlState,
        ids: &[DestId],
        changed: &ChangedDests,
        now: Instant,
        ramp: &SlowStart,
        flow: &SchedFlow,
    ) -> Option<DestId> {
        self.sched.as_ref()?;
        if self.views.len() != ids.len() {
            // Cannot happen (the list and the views change together under the write lock); rebuild.
            self.views = ids.iter().filter_map(|id| ctl.dest(*id)).map(|d| d.view(now, ramp)).collect();
            if let Some(s) = self.sched.as_mut() {
                s.bind(&self.views);
            }
        }
        core::mem::swap(&mut self.scratch, &mut *changed.ids.lock());
        let mut list = core::mem::take(&mut self.scratch);
        for &id in &list {
            if let Some(dest) = ctl.dest(id) {
                // Off the list before reading: a change after this read queues it again for the next pick.
                dest.queued.store(false, Ordering::Release);
                if !dest.linked {
                    continue; // In the trash: no longer in the scheduler's list.
                }
                if dest.ramp_since.is_some() && !self.ramping.contains(&id) {
                    self.ramping.push(id);
                }
                self.refresh(ids, dest, now, ramp);
            }
        }
        list.clear();
        self.scratch = list;
        let mut ramping = core::mem::take(&mut self.ramping);
        ramping.retain(|&id| {
            let Some(dest) = ctl.dest(id) else { return false };
            self.refresh(ids, dest, now, ramp);
            dest.ramp_since.is_some_and(|since| now < ramp.ramp_end(since))
        });
        self.ramping = ramping;
        let sched = self.sched.as_mut()?;
        let idx = sched.schedule(now, flow, &self.views)?;
        self.views.get(idx).map(|v| v.id)
    }

    /// Brings `dest`'s view up to date and tells the scheduler what changed (nothing if it is not listed).
    fn refresh(&mut self, ids: &[DestId], dest: &DestSlot, now: Instant, ramp: &SlowStart) {
        let Some(i) = self.index(ids, dest.id) else { return };
        let new = dest.view(now, ramp);
        let old = self.views[i];
        if old == new {
            return;
        }
        self.views[i] = new;
        if let Some(sched) = self.sched.as_mut() {
            if old.weight != new.weight || old.last_weight != new.last_weight {
                sched.dests_changed(&self.views, DestEvent::Updated { index: i });
            } else {
                sched.counters_changed(&self.views, CounterChange { index: i });
            }
        }
    }

    /// Where `id` sits in `views` (`ids` is the service's list, in the same order), if it is listed.
    fn index(&mut self, ids: &[DestId], id: DestId) -> Option<usize> {
        let listed = |index_of: &[u32]| {
            let i = *index_of.get(id.0 as usize)? as usize;
            (ids.get(i) == Some(&id) && i < self.views.len()).then_some(i)
        };
        if let Some(i) = listed(&self.index_of) {
            return Some(i);
        }
        // The list changed since the map was built (or `id` left it): rebuild, once per change.
        let len = ids.iter().map(|d| d.0 as usize + 1).max().unwrap_or(0);
        self.index_of.clear();
        self.index_of.resize(len, u32::MAX);
        for (i, d) in ids.iter().enumerate() {
            self.index_of[d.0 as usize] = i as u32;
        }
        listed(&self.index_of)
    }
}

impl ControlState {
    pub(crate) fn new(sysctls: Sysctls, timeouts: ProtoTimeouts) -> Self {
        Self {
            services: HashMap::default(),
            dests: Vec::new(),
            n_trash: 0,
            n_added: 0,
            n_ftp: 0,
            n_port0: 0,
            masq_servers: HashSet::default(),
            masq_addrs: HashSet::default(),
            vips: HashSet::default(),
            tunnels: HashSet::default(),
            sip_servers: HashMap::default(),
            sysctls,
            timeouts,
        }
    }

    /// The real server with `id` (linked or in the trash).
    #[inline]
    pub(crate) fn dest(&self, id: DestId) -> Option<&DestSlot> {
        self.dests.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The service a packet belongs to (facts §2.1): by fwmark (if the packet has one), then exactly, then
    /// the FTP data-port fallback, then a port-0 service.
    pub(crate) fn find_service(
        &self,
        protocol: Protocol,
        vaddr: IpAddr,
        vport: u16,
        fwmark: u32,
    ) -> Option<&ServiceSlot> {
        if fwmark != 0 {
            let key = ServiceKey::Fwmark { mark: fwmark, family: AddressFamily::of(&vaddr) };
            if let Some(s) = self.services.get(&key) {
                return Some(s);
            }
        }
        let exact = |port| self.services.get(&ServiceKey::Addr { protocol, addr: SocketAddr::new(vaddr, port) });
        if let Some(s) = exact(vport) {
            return Some(s);
        }
        if protocol == Protocol::Tcp && self.n_ftp > 0 && (vport == FTP_DATA_PORT || vport >= UNPRIVILEGED_PORT) {
            if let Some(s) = exact(FTP_PORT) {
                return Some(s);
            }
        }
        if self.n_port0 > 0 {
            return exact(0);
        }
        None
    }

    /// Whether `addr` is the virtual address of some address service.
    pub(crate) fn is_vip(&self, addr: &IpAddr) -> bool {
        self.vips.contains(addr)
    }

    /// Whether `addr` is the address of a NAT real server.
    pub(crate) fn is_masq_addr(&self, addr: &IpAddr) -> bool {
        self.masq_addrs.contains(addr)
    }

    /// Whether `addr:port` is a NAT real server (the kernel's `ip_vs_has_real_service`).
    pub(crate) fn is_masq_server(&self, addr: IpAddr, port: u16) -> bool {
        self.masq_servers.contains(&(addr, port))
    }

    /// The real server at `addr:port` that may start SIP calls (`conn_out`, facts §8.5): a NAT real server of a
    /// UDP `--pe sip` service whose port is not 0.
    pub(crate) fn sip_server(&self, addr: IpAddr, port: u16) -> Option<&DestSlot> {
        if self.sip_servers.is_empty() {
            return None;
        }
        self.sip_servers.get(&(addr, port)).and_then(|id| self.dest(*id))
    }

    /// Whether any real server linked to a service is of another family than the service (they forbid sync,
    /// facts §12.1; as the kernel, only the services' lists count, not the trash).
    pub(crate) fn has_mixed_family_dests(&self) -> bool {
        self.services.values().any(|s| {
            let family = s.config.key.family();
            s.dests.iter().filter_map(|id| self.dest(*id)).any(|d| AddressFamily::of(&d.config.addr.ip()) != family)
        })
    }

    /// Whether a tunnel real server at `addr` uses `kind` (and, for GUE, UDP port `port`).
    pub(crate) fn is_tunnel_dest(&self, addr: IpAddr, kind: TunnelKind, port: u16) -> bool {
        self.tunnels.contains(&(addr, kind, port))
    }

    /// Whether a template belongs to a one-packet service (the `drop_entry` rule for templates).
    pub(crate) fn is_ops_template(&self, v: &ConnView) -> bool {
        v.dest
            .and_then(|id| self.dest(id))
            .and_then(|d| self.services.get(&d.service))
            .is_some_and(|s| s.config.one_packet)
    }

    /// Runs every rate estimator.
    pub(crate) fn tick_stats(&self, now: Instant) {
        for s in self.services.values() {
            s.stats.tick(now);
        }
        for d in self.dests.iter().flatten() {
            d.stats.tick(now);
        }
    }

    /// The trash check (every 60 s): frees real servers unused for 120 s.
    pub(crate) fn check_trash(&mut self, now: Instant) {
        let mut freed = 0;
        for slot in &mut self.dests {
            let Some(d) = slot else { continue };
            if d.linked {
                continue;
            }
            if d.refcount() != 0 {
                d.idle_since = None;
                continue;
            }
            match d.idle_since {
                None => d.idle_since = Some(now),
                Some(since) if now.saturating_duration_since(since) >= TRASH_IDLE => {
                    *slot = None;
                    freed += 1;
                }
                Some(_) => {}
            }
        }
        self.n_trash -= freed;
    }

    pub(crate) fn service_info(&self, s: &ServiceSlot) -> ServiceInfo {
        ServiceInfo {
            config: s.config.clone(),
            dests: s.dests.iter().filter_map(|id| self.dest(*id)).map(DestSlot::info).collect(),
            stats: s.stats.snapshot(),
        }
    }

    /// Rebuilds the lookup helpers after a configuration change.
    fn reindex(&mut self) {
        self.n_ftp = 0;
        self.n_port0 = 0;
        self.masq_servers.clear();
        self.masq_addrs.clear();
        self.vips.clear();
        self.tunnels.clear();
        self.sip_servers.clear();
        let mut sip: Vec<(u64, (IpAddr, u16), DestId)> = Vec::new();
        for s in self.services.values() {
            let sip_service = s.config.pe_name.as_deref() == Some(crate::pe_sip::NAME)
                && matches!(s.config.key, ServiceKey::Addr { protocol: Protocol::Udp, addr } if addr.port() != 0);
            if sip_service {
                for id in &s.dests {
                    if let Some(d) = self.dests.get(id.0 as usize).and_then(Option::as_ref) {
                        if d.config.fwd == FwdMethod::Masq {
                            sip.push((s.added, (d.config.addr.ip(), d.config.addr.port()), *id));
                        }
                    }
                }
            }
            if let ServiceKey::Addr { protocol, addr } = s.config.key {
                self.vips.insert(addr.ip());
                if addr.port() == 0 {
                    self.n_port0 += 1;
                }
                if addr.port() == FTP_PORT && protocol == Protocol::Tcp {
                    self.n_ftp += 1;
                }
            }
            for id in &s.dests {
                if let Some(d) = self.dests.get(id.0 as usize).and_then(Option::as_ref) {
                    if d.config.fwd == FwdMethod::Masq {
                        self.masq_servers.insert((d.config.addr.ip(), d.config.addr.port()));
                        self.masq_addrs.insert(d.config.addr.ip());
                    }
                    if let Some(t) = d.config.tunnel_params() {
                        self.tunnels.insert((d.config.addr.ip(), t.kind, t.port));
                    }
                }
            }
        }
        // Oldest service first, so the choice does not depend on the map's order.
        sip.sort_by_key(|(added, _, _)| *added);
        for (_, addr, id) in sip {
            self.sip_servers.entry(addr).or_insert(id);
        }
    }

    /// The views of a service's list at `now`.
    fn views(&self, ids: &[DestId], now: Instant, ramp: &SlowStart) -> Vec<DestView> {
        ids.iter().filter_map(|id| self.dest(*id)).map(|d| d.view(now, ramp)).collect()
    }

    /// Moves a real server to the trash (its service's list has already dropped it).
    fn trash(&mut self, id: DestId) {
        if let Some(Some(d)) = self.dests.get_mut(id.0 as usize) {
            d.state.lock().unlink();
            d.linked = false;
            d.idle_since = None;
            self.n_trash += 1;
        }
    }
}

fn build_scheduler(config: &ServiceConfig, base: &SchedConfig) -> Result<Option<Box<dyn Scheduler>>, EngineError> {
    if config.scheduler == NO_SCHEDULER {
        return Ok(None);
    }
    let sched_config = SchedConfig { flags: config.sched_flags, ..*base };
    new_scheduler(&config.scheduler, &sched_config)
        .map(Some)
        .map_err(|_| EngineError::Config(ConfigError::UnknownScheduler(crate::config::ArgText::new(&config.scheduler))))
}

fn check_dest_address(addr: IpAddr) -> Result<(), EngineError> {
    let bad = addr.is_unspecified()
        || addr.is_multicast()
        || match addr {
            IpAddr::V4(a) => a.is_broadcast(),
            IpAddr::V6(_) => false,
        };
    if bad {
        Err(EngineError::DestAddress(addr))
    } else {
        Ok(())
    }
}

/// # Control plane (ipvsadm semantics, facts §13)
///
/// Every operation validates first and changes nothing on error. Operations take `now` for the statistics'
/// estimators and slow start.
impl Engine {
    /// Applies one ipvsadm command ([`crate::ipvsadm::parse_rules`] makes them from rule text).
    ///
    /// # Errors
    /// As the operation it maps to; sync daemons give [`EngineError::SyncDaemonUnavailable`].
    pub fn apply(&self, now: Instant, command: Command) -> Result<(), EngineError> {
        match command {
            Command::AddService(c) => self.add_service(now, c),
            Command::EditService(c) => self.edit_service(now, c),
            Command::DeleteService(k) => self.del_service(k),
            Command::Flush => {
                self.flush();
                Ok(())
            }
            Command::AddDest { service, dest } => self.add_dest(now, &service, dest).map(|_| ()),
            Command::EditDest { service, dest } => self.edit_dest(now, &service, dest),
            Command::DeleteDest { service, addr } => self.del_dest(&service, addr),
            Command::SetTimeouts(t) => self.set_timeouts(t),
            Command::StartDaemon(_) | Command::StopDaemon(_) => Err(EngineError::SyncDaemonUnavailable),
            Command::Zero(k) => self.zero(k.as_ref()),
        }
    }

    /// `ipvsadm -A`: adds a virtual service with no real servers.
    ///
    /// # Errors
    /// A [`ServiceConfig::validate`] error, [`ConfigError::ServiceExists`], or
    /// [`EngineError::PersistenceEngineUnavailable`] for `--pe sip` when
    /// [`EngineConfig::sip_persistence_engine`](crate::EngineConfig::sip_persistence_engine) is off.
    pub fn add_service(&self, now: Instant, config: ServiceConfig) -> Result<(), EngineError> {
        config.validate()?;
        self.check_pe(&config)?;
        let mut sched = build_scheduler(&config, &self.sched_base)?;
        let mut ctl = self.ctl.write();
        if ctl.services.contains_key(&config.key) {
            return Err(ConfigError::ServiceExists(config.key).into());
        }
        if let Some(s) = sched.as_mut() {
            s.bind(&[]);
        }
        let key = config.key;
        ctl.n_added += 1;
        let slot = ServiceSlot {
            config,
            added: ctl.n_added,
            dests: Vec::new(),
            sched: Mutex::new(SchedSlot::new(sched, Vec::new())),
            stats: Arc::new(StatsCell::new(now)),
            changed: Arc::default(),
        };
        ctl.services.insert(key, slot);
        ctl.reindex();
        Ok(())
    }

    /// Refuses `--pe sip` while the SIP engine is off (unknown names are refused by `validate`).
    fn check_pe(&self, config: &ServiceConfig) -> Result<(), EngineError> {
        match &config.pe_name {
            Some(name) if name == crate::pe_sip::NAME && self.sip_pe => Ok(()),
            Some(_) => Err(EngineError::PersistenceEngineUnavailable),
            None => Ok(()),
        }
    }

    /// The engine's half of the mixed-family rule (facts §2.2, §12.1, §13.2; `validate_for` did the rest): a
    /// tunnel real server of the other family than its service needs the director's address of that family
    /// (the tunnel's outer source) and no running sync daemon. Called under the control write lock, so that it
    /// and [`Engine::start_sync_master`] / [`Engine::start_sync_backup`] (which look under the read lock) see
    /// each other.
    fn check_dest_family(&self, service: &ServiceKey, config: &DestConfig) -> Result<(), EngineError> {
        let family = AddressFamily::of(&config.addr.ip());
        if family == service.family() {
            return Ok(());
        }
        if self.sync_master.running() || self.sync_backup.running() {
            return Err(ConfigError::MixedFamilyWithSync.into());
        }
        let local = match family {
            AddressFamily::Inet => self.local_v4.is_some(),
            AddressFamily::Inet6 => self.local_v6.is_some(),
        };
        if !local {
            return Err(EngineError::NoTunnelSource(family));
        }
        Ok(())
    }

    /// `ipvsadm -E`: replaces a service's configuration (scheduler, flags, persistence); its real servers stay.
    /// A new scheduler starts from the current list.
    ///
    /// # Errors
    /// A [`ServiceConfig::validate`] error, [`ConfigError::ServiceNotFound`], or
    /// [`EngineError::PersistenceEngineUnavailable`] (as [`add_service`](Self::add_service)).
    pub fn edit_service(&self, now: Instant, config: ServiceConfig) -> Result<(), EngineError> {
        config.validate()?;
        self.check_pe(&config)?;
        let mut sched = build_scheduler(&config, &self.sched_base)?;
        let mut ctl = self.ctl.write();
        let ids = match ctl.services.get(&config.key) {
            Some(s) => s.dests.clone(),
            None => return Err(ConfigError::ServiceNotFound(config.key).into()),
        };
        let views = ctl.views(&ids, now, &self.slow_start);
        if let Some(s) = sched.as_mut() {
            s.bind(&views);
        }
        if let Some(slot) = ctl.services.get_mut(&config.key) {
            slot.config = config;
            *slot.sched.get_mut() = SchedSlot::new(sched, views);
        }
        ctl.reindex();
        Ok(())
    }

    /// `ipvsadm -D`: deletes a service; its real servers go to the trash (their conns keep them).
    ///
    /// # Errors
    /// [`ConfigError::ServiceNotFound`].
    pub fn del_service(&self, key: ServiceKey) -> Result<(), EngineError> {
        let mut ctl = self.ctl.write();
        let slot = ctl.services.remove(&key).ok_or(ConfigError::ServiceNotFound(key))?;
        for id in slot.dests {
            ctl.trash(id);
            self.expire_nodest(&ctl, id);
        }
        ctl.reindex();
        Ok(())
    }

    /// `ipvsadm -C`: deletes every service.
    pub fn flush(&self) {
        let mut ctl = self.ctl.write();
        let slots: Vec<ServiceSlot> = ctl.services.drain().map(|(_, s)| s).collect();
        for slot in slots {
            for id in slot.dests {
                ctl.trash(id);
                self.expire_nodest(&ctl, id);
            }
        }
        ctl.reindex();
    }

    /// `ipvsadm -a`: adds a real server at the head of the service's list (or brings the same one back from
    /// the trash, counters and statistics kept). Returns its id.
    ///
    /// # Errors
    /// A [`DestConfig::validate_for`] error (among them [`ConfigError::MixedFamily`]: only a tunnel real server
    /// may be of another family than its service), [`ConfigError::ServiceNotFound`], [`ConfigError::DestExists`],
    /// [`ConfigError::MixedFamilyWithSync`] (such a real server while a sync daemon runs),
    /// [`EngineError::NoTunnelSource`], [`EngineError::DestAddress`] or [`EngineError::DestIdsExhausted`].
    pub fn add_dest(&self, now: Instant, service: &ServiceKey, config: DestConfig) -> Result<DestId, EngineError> {
        config.validate_for(service)?;
        check_dest_address(config.addr.ip())?;
        let mut ctl = self.ctl.write();
        // Under the write lock: starting a sync daemon checks the real servers under the read lock.
        self.check_dest_family(service, &config)?;
        let ctl = &mut *ctl;
        let svc = ctl.services.get(service).ok_or(ConfigError::ServiceNotFound(*service))?;
        let exists = svc.dests.iter().any(|id| ctl.dest(*id).is_some_and(|d| d.config.addr == config.addr));
        if exists {
            return Err(ConfigError::DestExists(config.addr).into());
        }
        // Slow start only for a service that carries traffic already (a fresh configuration has nothing to
        // stampede).
        let ramp =
            self.slow_start.period.total_millis() > 0 && config.weight > 0 && svc.stats.counters().load().conns > 0;
        let (service_stats, changed) = (Arc::clone(&svc.stats), Arc::clone(&svc.changed));
        let trashed = ctl
            .dests
            .iter()
            .flatten()
            .find(|d| !d.linked && d.service == *service && d.config.addr == config.addr)
            .map(|d| d.id);
        let id = match trashed {
            Some(id) => {
                let Some(Some(d)) = ctl.dests.get_mut(id.0 as usize) else {
                    return Err(EngineError::UnknownDest(id));
                };
                d.state
                    .lock()
                    .revive(config.weight, config.u_threshold, config.l_threshold)
                    .map_err(|_| ConfigError::Thresholds { upper: config.u_threshold, lower: config.l_threshold })?;
                d.config = config;
                d.linked = true;
                d.idle_since = None;
                d.service_stats = service_stats;
                d.changed = changed;
                d.ramp_since = ramp.then_some(now);
                ctl.n_trash -= 1;
                id
            }
            None => {
                let state = DestState::new(config.weight, config.u_threshold, config.l_threshold)
                    .map_err(|_| ConfigError::Thresholds { upper: config.u_threshold, lower: config.l_threshold })?;
                let raw = u32::try_from(ctl.dests.len()).ok().filter(|n| *n < u32::MAX);
                let id = DestId(raw.ok_or(EngineError::DestIdsExhausted)?);
                ctl.dests.push(Some(DestSlot {
                    id,
                    config,
                    service: *service,
                    linked: true,
                    mtu: None,
                    ramp_since: ramp.then_some(now),
                    idle_since: None,
                    state: Mutex::new(state),
                    stats: StatsCell::new(now),
                    service_stats,
                    changed,
                    queued: AtomicBool::new(false),
                }));
                id
            }
        };
        let view = ctl.dest(id).map(|d| d.view(now, &self.slow_start));
        if let (Some(svc), Some(view)) = (ctl.services.get_mut(service), view) {
            svc.dests.insert(0, id);
            let sched = svc.sched.get_mut();
            sched.views.insert(0, view);
            if let Some(s) = sched.sched.as_mut() {
                s.dests_changed(&sched.views, DestEvent::Added { index: 0 });
            }
        }
        if let Some(d) = ctl.dest(id) {
            // On the change list, so the picks follow a slow-start ramp from the first one on.
            d.mark_changed();
        }
        ctl.reindex();
        Ok(id)
    }

    /// `ipvsadm -e`: replaces a real server's configuration (found by address and port). Weight and thresholds
    /// take effect at once (OVERLOAD is cleared when the upper threshold goes to 0 or up); the forwarding
    /// method and tunnel parameters apply to new conns.
    ///
    /// # Errors
    /// As [`add_dest`](Self::add_dest), with [`ConfigError::DestNotFound`] instead of `DestExists`.
    pub fn edit_dest(&self, now: Instant, service: &ServiceKey, config: DestConfig) -> Result<(), EngineError> {
        config.validate_for(service)?;
        let mut ctl = self.ctl.write();
        self.check_dest_family(service, &config)?;
        let ctl = &mut *ctl;
        let svc = ctl.services.get(service).ok_or(ConfigError::ServiceNotFound(*service))?;
        let (index, id) = svc
            .dests
            .iter()
            .enumerate()
            .find(|(_, id)| ctl.dest(**id).is_some_and(|d| d.config.addr == config.addr))
            .map(|(i, id)| (i, *id))
            .ok_or(ConfigError::DestNotFound(config.addr))?;
        let Some(Some(d)) = ctl.dests.get_mut(id.0 as usize) else {
            return Err(EngineError::UnknownDest(id));
        };
        let old_weight = d.weight();
        d.update_state(&self.events, |s| s.edit(config.weight, config.u_threshold, config.l_threshold))
            .map_err(|_| ConfigError::Thresholds { upper: config.u_threshold, lower: config.l_threshold })?;
        d.config = config;
        if old_weight == 0 && config.weight > 0 && self.slow_start.period.total_millis() > 0 {
            d.ramp_since = Some(now);
        }
        let view = d.view(now, &self.slow_start);
        if let Some(svc) = ctl.services.get_mut(service) {
            let sched = svc.sched.get_mut();
            if let Some(v) = sched.views.get_mut(index) {
                *v = view;
            }
            if let Some(s) = sched.sched.as_mut() {
                s.dests_changed(&sched.views, DestEvent::Updated { index });
            }
        }
        ctl.reindex();
        Ok(())
    }

    /// `ipvsadm -d`: removes a real server from its service. It moves to the trash: its conns keep pointing at
    /// it (see [`Sysctls::serve_removed_dests`] and [`Sysctls::expire_nodest_conn`], which deletes them at
    /// once).
    ///
    /// # Errors
    /// [`ConfigError::ServiceNotFound`], [`ConfigError::DestNotFound`].
    pub fn del_dest(&self, service: &ServiceKey, addr: SocketAddr) -> Result<(), EngineError> {
        let mut ctl = self.ctl.write();
        let ctl = &mut *ctl;
        let svc = ctl.services.get(service).ok_or(ConfigError::ServiceNotFound(*service))?;
        let (index, id) = svc
            .dests
            .iter()
            .enumerate()
            .find(|(_, id)| ctl.dest(**id).is_some_and(|d| d.config.addr == addr))
            .map(|(i, id)| (i, *id))
            .ok_or(ConfigError::DestNotFound(addr))?;
        if let Some(svc) = ctl.services.get_mut(service) {
            svc.dests.remove(index);
            let sched = svc.sched.get_mut();
            if index < sched.views.len() {
                sched.views.remove(index);
            }
            if let Some(s) = sched.sched.as_mut() {
                s.dests_changed(&sched.views, DestEvent::Removed { index, id });
            }
        }
        ctl.trash(id);
        self.expire_nodest(ctl, id);
        ctl.reindex();
        Ok(())
    }

    /// `expire_nodest_conn`'s background sweep: deletes every conn of a removed real server.
    fn expire_nodest(&self, ctl: &ControlState, id: DestId) {
        if !ctl.sysctls.expire_nodest_conn {
            return;
        }
        let mut out = Vec::new();
        self.conns.remove_if(|v| v.dest == Some(id), &mut out);
        self.settle_expired(ctl, &out);
    }

    /// `ipvsadm --set tcp tcpfin udp`: the TCP ESTABLISHED, TCP FIN_WAIT and UDP timeouts, in seconds; 0
    /// leaves a value unchanged. Conns pick the new values up at their next packet.
    ///
    /// # Errors
    /// [`ConfigError::Timeout`] for a value above [`crate::config::MAX_TIMEOUT_SECS`].
    pub fn set_timeouts(&self, timeouts: Timeouts) -> Result<(), EngineError> {
        timeouts.validate()?;
        let mut ctl = self.ctl.write();
        let t = &mut ctl.timeouts;
        timeouts.apply_to(&mut t.tcp, &mut t.udp);
        Ok(())
    }

    /// `ipvsadm -L --timeout`: the three values `--set` changes.
    pub fn ipvsadm_timeouts(&self) -> Timeouts {
        let ctl = self.ctl.read();
        Timeouts::from_tables(&ctl.timeouts.tcp, &ctl.timeouts.udp)
    }

    /// `ipvsadm -Z`: zeroes the counters (and rates) of one service and its real servers, or of everything.
    ///
    /// # Errors
    /// [`ConfigError::ServiceNotFound`].
    pub fn zero(&self, service: Option<&ServiceKey>) -> Result<(), EngineError> {
        let ctl = self.ctl.read();
        match service {
            Some(key) => {
                let svc = ctl.services.get(key).ok_or(ConfigError::ServiceNotFound(*key))?;
                svc.stats.zero();
                for d in svc.dests.iter().filter_map(|id| ctl.dest(*id)) {
                    d.stats.zero();
                }
            }
            None => {
                self.total_stats.zero();
                for s in ctl.services.values() {
                    s.stats.zero();
                }
                for d in ctl.dests.iter().flatten() {
                    d.stats.zero();
                }
            }
        }
        Ok(())
    }

    /// Sets (or with `None` clears) the path MTU toward one real server, overriding
    /// [`EngineConfig::mtu`](crate::EngineConfig::mtu).
    ///
    /// # Errors
    /// [`EngineError::UnknownDest`], or [`EngineError::Mtu`] below 68.
    pub fn set_dest_mtu(&self, dest: DestId, mtu: Option<u32>) -> Result<(), EngineError> {
        if let Some(m) = mtu.filter(|m| *m < 68) {
            return Err(EngineError::Mtu(m));
        }
        let mut ctl = self.ctl.write();
        match ctl.dests.get_mut(dest.0 as usize) {
            Some(Some(d)) => {
                d.mtu = mtu;
                Ok(())
            }
            _ => Err(EngineError::UnknownDest(dest)),
        }
    }

    /// The id of the real server `addr` of `service`, if it has one.
    pub fn dest_id(&self, service: &ServiceKey, addr: SocketAddr) -> Option<DestId> {
        let ctl = self.ctl.read();
        let svc = ctl.services.get(service)?;
        svc.dests.iter().copied().find(|id| ctl.dest(*id).is_some_and(|d| d.config.addr == addr))
    }

    /// One real server's listing, linked or in the trash.
    pub fn dest(&self, id: DestId) -> Option<DestInfo> {
        self.ctl.read().dest(id).map(DestSlot::info)
    }

    /// Whether a real server is linked to its service (`false` in the trash or once freed).
    pub fn dest_available(&self, id: DestId) -> bool {
        self.ctl.read().dest(id).is_some_and(|d| d.linked && d.state.lock().flags.contains(DestFlags::AVAILABLE))
    }

    /// Real servers in the trash (removed, still referenced or not yet freed).
    pub fn n_trash(&self) -> usize {
        self.ctl.read().n_trash
    }
}
