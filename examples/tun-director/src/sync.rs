//! Connection synchronisation with the kernel's protocol (224.0.0.81:8848 by default), so a tun-director
//! pairs with another one or with a Linux kernel.
//!
//! - **Master**: [`MasterFeed`] is the engine's [`SyncFeed`]: after each client packet of a conn it runs
//!   `ipvs-sync`'s [`Master::conn_update`] (and, when asked, the conn's persistence template's), keeping the
//!   kernel's per-conn bookkeeping (`old_state`, `sync_endtime`) in the conn itself; a thread drains
//!   [`Master::poll_transmit`] into a UDP socket bound to the interface.
//! - **Backup**: a thread per sync port receives datagrams, [`Backup::handle_datagram`] validates them with
//!   the kernel receiver's rules, and [`apply_backup_record`] creates or updates the conns in the engine's
//!   table, bound to this director's own real server.
//!
//! Not done: the bulk resync of `ipvs-sync` (a backup that starts late learns conns as their next updates
//! come, as with the kernel), and `--sync-maxlen` beyond what `ipvsadm --start-daemon` takes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;

use ipvs_core::conn::{ConnId, ConnView, InKey, NewConn, TemplateKey};
use ipvs_core::proto::{AddressFamily, ConnFlags, DestId, Instant, ServiceKey};
use ipvs_core::sync::backup::{Lookup, OtherDest};
use ipvs_core::sync::{
    Backup, BackupConfig, BackupRecord, ConnSyncInfo, Master, MasterConfig, SyncConn, SyncOutcome,
    SyncState as WireSyncState,
};
use ipvs_core::{DestConfig, Engine, SyncDaemonConfig, SyncFeed, SyncState};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol as SockProtocol, SockAddr, Socket, Type};

use crate::director::{DaemonRunner, Director};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of the sync daemons (for metrics).
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Sync messages sent by the master.
    pub master_messages: AtomicU64,
    /// Records in them.
    pub master_records: AtomicU64,
    /// Sends that failed.
    pub master_send_errors: AtomicU64,
    /// Datagrams received by the backup.
    pub backup_datagrams: AtomicU64,
    /// Datagrams refused (wrong sync id, malformed, too long).
    pub backup_refused: AtomicU64,
    /// Records that created a conn.
    pub backup_created: AtomicU64,
    /// Records that updated a conn.
    pub backup_updated: AtomicU64,
    /// Records ignored (a late notice about a replaced conn) or that could not be inserted.
    pub backup_ignored: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------------------
// Master
// ---------------------------------------------------------------------------------------------------------

/// The engine's sync hook: feeds conn updates to the running master, if any.
pub struct MasterFeed {
    active: AtomicBool,
    master: Mutex<Option<Master>>,
    wake: Condvar,
    engine: OnceLock<Weak<Engine>>,
    counters: Arc<SyncCounters>,
}

impl fmt::Debug for MasterFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterFeed").field("active", &self.active.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl MasterFeed {
    /// A feed with no master running.
    pub fn new(counters: Arc<SyncCounters>) -> Self {
        Self {
            active: AtomicBool::new(false),
            master: Mutex::new(None),
            wake: Condvar::new(),
            engine: OnceLock::new(),
            counters,
        }
    }

    /// Gives the feed the engine it reads conns from (once, after the engine is built).
    pub fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }

    /// Starts feeding `master`.
    pub fn install(&self, master: Master) {
        *lock(&self.master) = Some(master);
        self.active.store(true, Ordering::Release);
    }

    /// Stops feeding (the master and its queued messages are dropped, as the kernel drops them).
    pub fn remove(&self) {
        self.active.store(false, Ordering::Release);
        *lock(&self.master) = None;
        self.wake.notify_all();
    }

    /// Sends every message due at `now` with `send`, then waits until the next one may be due (at most
    /// `max_wait`, or until a conn update queues one). Returns `false` once no master is installed.
    pub fn pump(
        &self,
        now: Instant,
        until: impl Fn(Instant) -> std::time::Duration,
        max_wait: std::time::Duration,
        buf: &mut Vec<u8>,
        mut send: impl FnMut(u8, &[u8]) -> io::Result<()>,
    ) -> bool {
        let mut guard = lock(&self.master);
        let Some(master) = guard.as_mut() else { return false };
        while let Some(t) = master.poll_transmit(now, buf) {
            let bytes = buf.get(..t.len).unwrap_or(buf);
            match send(t.port_index, bytes) {
                Ok(()) => {
                    bump(&self.counters.master_messages, 1);
                    bump(&self.counters.master_records, t.n_records as u64);
                }
                Err(e) => {
                    bump(&self.counters.master_send_errors, 1);
                    tracing::warn!(error = %e, "sync master: send failed");
                }
            }
        }
        let wait = master.poll_timeout().map_or(max_wait, |t| until(t).min(max_wait));
        let _unused = self.wake.wait_timeout(guard, wait).unwrap_or_else(PoisonError::into_inner);
        true
    }
}

/// The wire record of a conn as it is now.
pub fn record_from_view(v: &ConnView) -> SyncConn {
    SyncConn {
        protocol: v.protocol,
        caddr: v.caddr,
        cport: v.cport,
        vaddr: v.vaddr,
        vport: v.vport,
        daddr: v.daddr,
        dport: v.dport,
        flags: v.flags.bits() & !ConnFlags::HASHED.bits(),
        state: u16::from(v.state),
        timeout: u32::try_from(v.timeout.secs()).ok(),
        fwmark: Some(v.fwmark),
        in_seq: None,
        out_seq: None,
        pe_name: None,
        pe_data: None,
    }
}

/// One `conn_update` of `id`, with its sync bookkeeping read from and written back to the conn.
fn sync_one(
    master: &mut Master,
    engine: &Engine,
    now: Instant,
    id: ConnId,
    view: &ConnView,
    pkts: u32,
    controlled_by_template: bool,
) -> Option<SyncOutcome> {
    let table = engine.conn_table();
    let mut state = table.with_conn(id, |c| WireSyncState {
        old_state: u16::from(c.old_state()),
        sync_endtime: c.sync_endtime().total_millis(),
    })?;
    let record = record_from_view(view);
    let info = ConnSyncInfo { record: &record, timeout: view.timeout, pkts, controlled_by_template };
    let outcome = master.conn_update(now, &info, &mut state);
    table.with_conn(id, |c| {
        c.set_old_state(u8::try_from(state.old_state).unwrap_or(u8::MAX));
        c.set_sync_endtime(Instant::from_millis(state.sync_endtime));
    });
    Some(outcome)
}

impl SyncFeed for MasterFeed {
    fn conn_update(&self, now: Instant, id: ConnId, conn: &ConnView, pkts: u32) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else { return };
        let table = engine.conn_table();
        let Some(control) = table.with_conn(id, |c| c.control()) else { return };
        let controller = control.and_then(|cid| table.get(cid).map(|v| (cid, v)));
        let by_template = controller.as_ref().is_some_and(|(_, v)| v.is_template());
        let mut guard = lock(&self.master);
        let Some(master) = guard.as_mut() else { return };
        let outcome = sync_one(master, &engine, now, id, conn, pkts, by_template);
        if let (Some(o), Some((cid, cview))) = (outcome, controller) {
            if o.sync_controller {
                let mut in_pkts = cview.in_pkts;
                let pkts = master.controller_pkts(cview.is_template(), &mut in_pkts);
                if cview.is_template() {
                    table.with_conn(cid, |c| c.set_in_pkts(in_pkts));
                }
                let cview = ConnView { in_pkts, ..cview };
                let _ = sync_one(master, &engine, now, cid, &cview, pkts, false);
            }
        }
        if master.queued_messages() > 0 {
            self.wake.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Backup
// ---------------------------------------------------------------------------------------------------------

/// What applying one backup record did.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum BackupApply {
    /// A new conn (or template) was inserted.
    Created,
    /// An existing one was updated.
    Updated,
    /// The record was a late notice about a conn already replaced.
    Ignored,
    /// The table refused the insert (full).
    Failed,
}

/// The real server a record's conn goes to: its service by fwmark (v1 records carry it) or by protocol,
/// virtual address and port; the server by address and the record's ports, in order.
fn find_dest(engine: &Engine, rec: &BackupRecord) -> Option<(DestId, DestConfig)> {
    let c = &rec.conn;
    let family = AddressFamily::of(&c.vaddr);
    let mut keys = Vec::with_capacity(2);
    if let Some(mark) = c.fwmark.filter(|m| *m != 0) {
        keys.push(ServiceKey::Fwmark { mark, family });
    }
    if c.protocol.has_ports() {
        keys.push(ServiceKey::Addr { protocol: c.protocol, addr: SocketAddr::new(c.vaddr, c.vport) });
    }
    for key in &keys {
        for port in rec.dest_ports {
            if let Some(id) = engine.dest_id(key, SocketAddr::new(c.daddr, port)) {
                if let Some(info) = engine.dest(id) {
                    return Some((id, info.config));
                }
            }
        }
    }
    None
}

/// Applies one record a backup accepted to the engine's table (facts §12.6): update the conn it names, or
/// create it bound to this director's real server with this director's forwarding method.
///
/// Local stand-in for an engine method (`Engine::apply_sync_record`): the real server's active/inactive
/// counters are not updated for synced conns (the engine keeps them private).
pub fn apply_backup_record(engine: &Engine, now: Instant, rec: &BackupRecord) -> BackupApply {
    let c = &rec.conn;
    let table = engine.conn_table();
    let sync_state = rec.sync_state(now);
    let existing = match rec.lookup() {
        Lookup::Conn => table.lookup_in(&InKey::new(c.protocol, c.caddr, c.cport, c.vaddr, c.vport)),
        Lookup::Template => {
            table.lookup_template(&TemplateKey { protocol: c.protocol, caddr: c.caddr, vaddr: c.vaddr, vport: c.vport })
        }
    };
    if let Some((id, view)) = existing {
        let other_dest = !rec.is_template() && (view.daddr != c.daddr || view.dport != c.dport);
        if !other_dest {
            table.update(now, id, |m| {
                m.set_flags(ConnFlags(rec.updated_flags(m.flags().bits())));
                m.set_state(u8::try_from(rec.state()).unwrap_or(u8::MAX));
                m.set_timeout(rec.timeout);
                m.set_old_state(u8::try_from(sync_state.old_state).unwrap_or(u8::MAX));
                m.set_sync_endtime(Instant::from_millis(sync_state.sync_endtime));
            });
            return BackupApply::Updated;
        }
        match rec.on_other_dest() {
            OtherDest::IgnoreRecord => return BackupApply::Ignored,
            OtherDest::ReplaceConn => {
                let _ = table.expire(id);
            }
        }
    }
    let dest = find_dest(engine, rec);
    let mut flags = ConnFlags(rec.flags);
    if let Some((_, config)) = &dest {
        flags = flags.with_fwd_method(config.fwd);
        flags.set(ConnFlags::NOOUTPUT, !config.fwd.sees_replies());
    }
    let new = NewConn {
        protocol: c.protocol,
        caddr: c.caddr,
        cport: c.cport,
        vaddr: c.vaddr,
        vport: c.vport,
        daddr: c.daddr,
        dport: c.dport,
        flags,
        state: u8::try_from(c.state).unwrap_or(u8::MAX),
        dest: dest.map(|(id, _)| id),
        fwmark: c.fwmark.unwrap_or(0),
        timeout: rec.timeout,
        control: None,
    };
    match table.insert(now, new) {
        Ok(id) => {
            table.with_conn(id, |m| {
                m.set_in_pkts(rec.in_pkts);
                m.set_old_state(u8::try_from(sync_state.old_state).unwrap_or(u8::MAX));
                m.set_sync_endtime(Instant::from_millis(sync_state.sync_endtime));
            });
            BackupApply::Created
        }
        Err(e) => {
            tracing::debug!(error = ?e, "sync backup: insert refused");
            BackupApply::Failed
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Sockets and threads
// ---------------------------------------------------------------------------------------------------------

fn sysfs(iface: &str, file: &str) -> io::Result<String> {
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name `{iface}`")));
    }
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
}

/// The MTU of interface `iface` (1500 if it cannot be read).
pub fn if_mtu(iface: &str) -> u32 {
    sysfs(iface, "mtu").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1500)
}

/// The index of interface `iface`.
///
/// # Errors
/// The interface does not exist.
pub fn if_index(iface: &str) -> io::Result<NonZeroU32> {
    sysfs(iface, "ifindex")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .and_then(NonZeroU32::new)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("interface `{iface}` not found")))
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The master's sending socket: bound to the interface, multicast TTL set, loopback off (as the kernel's).
fn master_socket(config: &SyncDaemonConfig) -> io::Result<Socket> {
    let ifindex = if_index(&config.mcast_ifn)?;
    let group = config.group();
    let domain = if group.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(SockProtocol::UDP)).map_err(context("socket".into()))?;
    s.bind_device(Some(config.mcast_ifn.as_bytes())).map_err(context(format!("bind to {}", config.mcast_ifn)))?;
    match group {
        IpAddr::V4(_) => {
            s.set_multicast_ttl_v4(u32::from(config.ttl()))?;
            s.set_multicast_loop_v4(false)?;
        }
        IpAddr::V6(_) => {
            s.set_multicast_hops_v6(u32::from(config.ttl()))?;
            s.set_multicast_loop_v6(false)?;
            s.set_multicast_if_v6(ifindex.get())?;
        }
    }
    Ok(s)
}

/// A backup's receiving socket for sync port `port`: bound to group:port on the interface, joined.
fn backup_socket(config: &SyncDaemonConfig, port: u16) -> io::Result<Socket> {
    let ifindex = if_index(&config.mcast_ifn)?;
    let group = config.group();
    let domain = if group.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(SockProtocol::UDP)).map_err(context("socket".into()))?;
    s.bind_device(Some(config.mcast_ifn.as_bytes())).map_err(context(format!("bind to {}", config.mcast_ifn)))?;
    let addr = SocketAddr::new(group, port);
    s.bind(&SockAddr::from(addr)).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse { " (another sync backup on this host?)" } else { "" };
        io::Error::new(e.kind(), format!("cannot bind {addr}: {e}{hint}"))
    })?;
    match group {
        IpAddr::V4(g) => s
            .join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex.get()))
            .map_err(context(format!("join {g} on {}", config.mcast_ifn)))?,
        IpAddr::V6(g) => {
            s.join_multicast_v6(&g, ifindex.get()).map_err(context(format!("join {g} on {}", config.mcast_ifn)))?
        }
    }
    s.set_read_timeout(Some(std::time::Duration::from_millis(250)))?;
    Ok(s)
}

#[derive(Debug)]
struct DaemonHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Starts and stops the sync daemons of a director: sockets and threads.
#[derive(Debug)]
pub struct SyncRunner {
    director: Weak<Director>,
    running: Mutex<HashMap<SyncState, DaemonHandle>>,
}

impl SyncRunner {
    /// A runner for `director` (install it with [`Director::set_daemon_runner`]).
    pub fn new(director: &Arc<Director>) -> Self {
        Self { director: Arc::downgrade(director), running: Mutex::new(HashMap::new()) }
    }

    fn start_master(&self, director: Arc<Director>, config: &SyncDaemonConfig) -> io::Result<DaemonHandle> {
        let socket = master_socket(config)?;
        let mtu = if_mtu(&config.mcast_ifn);
        let mut mc = MasterConfig { syncid: config.syncid, ..MasterConfig::default() };
        mc.group = AddressFamily::of(&config.group());
        mc.maxlen = usize::from(config.maxlen(mtu));
        let master = Master::new(mc).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        director.feed().install(master);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (group, port) = (config.group(), config.port());
        let thread = std::thread::Builder::new().name("sync-master".into()).spawn(move || {
            let mut buf = Vec::new();
            let clock = *director.clock();
            while !flag.load(Ordering::Acquire) {
                let sent = director.feed().pump(
                    clock.now(),
                    |t| clock.until(t),
                    std::time::Duration::from_millis(500),
                    &mut buf,
                    |index, bytes| {
                        let dst = SocketAddr::new(group, port.wrapping_add(u16::from(index)));
                        socket.send_to(bytes, &SockAddr::from(dst)).map(|_| ())
                    },
                );
                if !sent {
                    break;
                }
            }
        })?;
        Ok(DaemonHandle { stop, threads: vec![thread] })
    }

    fn start_backup(&self, director: Arc<Director>, config: &SyncDaemonConfig) -> io::Result<DaemonHandle> {
        let socket = backup_socket(config, config.port())?;
        let mtu = if_mtu(&config.mcast_ifn);
        let timeouts = director.engine().timeouts();
        let bc = BackupConfig {
            syncid: config.syncid,
            maxlen: usize::from(config.maxlen(mtu)),
            tcp_timeouts: timeouts.tcp,
            udp_timeouts: timeouts.udp,
            sctp_timeouts: timeouts.sctp,
            ..BackupConfig::default()
        };
        let mut backup = Backup::new(bc).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("sync-backup".into()).spawn(move || {
            let udp: std::net::UdpSocket = socket.into();
            let mut buf = vec![0u8; 65_536];
            let counters = Arc::clone(director.sync_counters());
            while !flag.load(Ordering::Acquire) {
                let n = match udp.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "sync backup: receive failed; backup stopped");
                        break;
                    }
                };
                bump(&counters.backup_datagrams, 1);
                let now = director.now();
                match backup.handle_datagram(now, &buf[..n]) {
                    Ok(batch) => {
                        for rec in &batch.records {
                            match apply_backup_record(director.engine(), now, rec) {
                                BackupApply::Created => bump(&counters.backup_created, 1),
                                BackupApply::Updated => bump(&counters.backup_updated, 1),
                                BackupApply::Ignored | BackupApply::Failed => bump(&counters.backup_ignored, 1),
                            }
                        }
                        tracing::debug!(records = batch.records.len(), skipped = batch.skipped, "sync backup: message");
                    }
                    Err(e) => {
                        bump(&counters.backup_refused, 1);
                        tracing::debug!(error = ?e, "sync backup: datagram refused");
                    }
                }
            }
        })?;
        Ok(DaemonHandle { stop, threads: vec![thread] })
    }
}

impl DaemonRunner for SyncRunner {
    fn start(&self, config: &SyncDaemonConfig) -> io::Result<()> {
        let director = self.director.upgrade().ok_or_else(|| io::Error::other("director is gone"))?;
        let handle = match config.state {
            SyncState::Master => self.start_master(director, config)?,
            SyncState::Backup => self.start_backup(director, config)?,
        };
        tracing::info!(
            state = config.state.name(),
            interface = %config.mcast_ifn,
            syncid = config.syncid,
            group = %config.group(),
            port = config.port(),
            "sync daemon started"
        );
        lock(&self.running).insert(config.state, handle);
        Ok(())
    }

    fn stop(&self, state: SyncState) {
        let Some(handle) = lock(&self.running).remove(&state) else { return };
        handle.stop.store(true, Ordering::Release);
        if state == SyncState::Master {
            if let Some(d) = self.director.upgrade() {
                d.feed().remove();
            }
        }
        for t in handle.threads {
            let _ = t.join();
        }
        tracing::info!(state = state.name(), "sync daemon stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::DirectorOptions;
    use ipvs_core::proto::Protocol;

    /// A master feeding through one director and a backup applying into another give the same conn.
    #[test]
    fn master_to_backup_in_process() {
        let rules = "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.1.1:80 -m\n";
        let a = Director::new(DirectorOptions::new([1; 16])).unwrap();
        let b = Director::new(DirectorOptions::new([2; 16])).unwrap();
        a.apply_rules(rules).unwrap();
        b.apply_rules(rules).unwrap();
        a.feed().install(Master::new(MasterConfig::default()).unwrap());
        // SYN, ACK, data: the third client packet syncs an ESTABLISHED conn.
        let client = [192, 0, 2, 7];
        for flags in [0x02u8, 0x10, 0x18] {
            let mut pkt = tcp_packet(client, [10, 0, 0, 100], 40000, 80, flags);
            let mut data = vec![0u8; 64];
            data.extend_from_slice(&pkt);
            let mut buf = ipvs_core::PacketBuf::new(&mut data, 64, pkt.len()).unwrap();
            assert_eq!(a.process(&mut buf), crate::Action::Write);
            pkt.clear();
        }
        let mut msgs = Vec::new();
        let mut buf = Vec::new();
        // Flush after the 2 s batching delay.
        let later = a.now() + ipvs_core::proto::Duration::from_secs(3);
        a.feed().pump(
            later,
            |_| std::time::Duration::ZERO,
            std::time::Duration::ZERO,
            &mut buf,
            |_, m| {
                msgs.push(m.to_vec());
                Ok(())
            },
        );
        assert_eq!(msgs.len(), 1);
        let mut backup = Backup::new(BackupConfig::default()).unwrap();
        let batch = backup.handle_datagram(b.now(), &msgs[0]).unwrap();
        assert_eq!(batch.records.len(), 1);
        assert_eq!(apply_backup_record(b.engine(), b.now(), &batch.records[0]), BackupApply::Created);
        let conns = b.engine().conns(b.now());
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].state, "ESTABLISHED");
        assert_eq!(conns[0].protocol, Protocol::Tcp);
        assert_eq!(conns[0].real, "10.0.1.1:80".parse().unwrap());
        assert_eq!(apply_backup_record(b.engine(), b.now(), &batch.records[0]), BackupApply::Updated);
        assert_eq!(b.engine().conns(b.now()).len(), 1);
    }

    /// An IPv4/TCP packet with a valid header checksum (TCP checksum left 0: the engine updates it
    /// incrementally and does not verify it).
    fn tcp_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let mut sum = 0u32;
        for i in (0..20).step_by(2) {
            sum += u32::from(u16::from_be_bytes([p[i], p[i + 1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 0x50;
        p[33] = flags;
        p[34..36].copy_from_slice(&0xffffu16.to_be_bytes());
        p
    }
}
