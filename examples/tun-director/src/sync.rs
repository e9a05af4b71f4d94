//! Connection synchronisation with the kernel's protocol (224.0.0.81:8848 by default), so a tun-director
//! pairs with another one or with a Linux kernel.
//!
//! The protocol is the engine's ([`ipvs_core::sync_glue`]): this module only owns the sockets and threads.
//!
//! - **Master**: [`Engine::start_sync_master`](ipvs_core::Engine::start_sync_master) makes the packet path
//!   feed an `ipvs-sync` [`Master`] (conns, their persistence templates up the controller chain, one-packet
//!   conns' templates, reply-driven state changes); a thread drains
//!   [`Engine::poll_sync_transmit`](ipvs_core::Engine::poll_sync_transmit) into a UDP socket bound to the
//!   interface. The wire version is [`DirectorOptions::sync_version`](crate::DirectorOptions::sync_version)
//!   (the kernel's `sync_version` sysctl).
//! - **Backup**: a thread receives datagrams on the group and hands them to
//!   [`Engine::handle_sync_datagram`](ipvs_core::Engine::handle_sync_datagram), which checks them with the
//!   kernel receiver's rules and applies the records (facts §12.6): conns and templates created or updated,
//!   bound to this director's own real server and counted in its active / inactive / persistent conns.
//!
//! Not done: the bulk resync of `ipvs-sync` (a backup that starts late learns conns as their next updates
//! come, as with the kernel), and `--sync-maxlen` beyond what `ipvsadm --start-daemon` takes.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ipvs_core::proto::AddressFamily;
use ipvs_core::sync::{Backup, Master, MasterConfig};
use ipvs_core::{SyncDaemonConfig, SyncInput, SyncMasterOptions, SyncState};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol as SockProtocol, SockAddr, Socket, Type};

use crate::director::{DaemonRunner, Director};

/// How long the master's thread waits before sending while a message is being filled: the kernel's
/// `IPVS_SYNC_SEND_DELAY` (its master thread sends a queued message at most this long after queueing it).
const SEND_DELAY: Duration = Duration::from_millis(20);

/// How often an idle master's thread looks for a message (a message that filled up at once, with no record
/// after it, waits at most this long).
const IDLE_CHECK: Duration = Duration::from_millis(100);

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
    /// Records that created a conn or template.
    pub backup_created: AtomicU64,
    /// Records that updated one.
    pub backup_updated: AtomicU64,
    /// Records ignored (a late notice about a replaced conn, a record the checks skipped) or that could not
    /// be applied (table full).
    pub backup_ignored: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
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
        let mc = MasterConfig {
            syncid: config.syncid,
            version: director.options().sync_version,
            group: AddressFamily::of(&config.group()),
            maxlen: usize::from(config.maxlen(mtu)),
            ..MasterConfig::default()
        };
        let master = Master::new(mc).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        director
            .engine()
            .start_sync_master(master, SyncMasterOptions::default())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (group, port) = (config.group(), config.port());
        let spawned = std::thread::Builder::new().name("sync-master".into()).spawn(move || {
            let engine = Arc::clone(director.engine());
            let counters = Arc::clone(director.sync_counters());
            let clock = *director.clock();
            let mut buf = Vec::new();
            while !flag.load(Ordering::Acquire) {
                while let Some(t) = engine.poll_sync_transmit(clock.now(), &mut buf) {
                    let dst = SocketAddr::new(group, port.wrapping_add(u16::from(t.port_index)));
                    let bytes = buf.get(..t.len).unwrap_or(&buf);
                    match socket.send_to(bytes, &SockAddr::from(dst)) {
                        Ok(_) => {
                            bump(&counters.master_messages, 1);
                            bump(&counters.master_records, t.n_records as u64);
                        }
                        Err(e) => {
                            bump(&counters.master_send_errors, 1);
                            tracing::warn!(error = %e, "sync master: send failed");
                        }
                    }
                }
                while let Some(event) = engine.poll_sync_event() {
                    tracing::info!(event = ?event, "sync daemon");
                }
                // A message being filled leaves when full or 2 s old: look again after the kernel's send delay.
                let wait = if engine.poll_sync_timeout().is_some() { SEND_DELAY } else { IDLE_CHECK };
                std::thread::sleep(wait);
            }
        });
        match spawned {
            Ok(thread) => Ok(DaemonHandle { stop, threads: vec![thread] }),
            Err(e) => {
                let _ = self.director.upgrade().map(|d| d.engine().stop_sync_master());
                Err(e)
            }
        }
    }

    fn start_backup(&self, director: Arc<Director>, config: &SyncDaemonConfig) -> io::Result<DaemonHandle> {
        let socket = backup_socket(config, config.port())?;
        let mtu = if_mtu(&config.mcast_ifn);
        let mut bc = director.engine().sync_backup_config();
        bc.syncid = config.syncid;
        bc.maxlen = usize::from(config.maxlen(mtu));
        let backup = Backup::new(bc).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        director
            .engine()
            .start_sync_backup(backup)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new().name("sync-backup".into()).spawn(move || {
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
                match director.engine().handle_sync_datagram(director.now(), &buf[..n]) {
                    SyncInput::Applied(a) => {
                        bump(&counters.backup_created, a.created);
                        bump(&counters.backup_updated, a.updated);
                        bump(&counters.backup_ignored, a.ignored + a.failed + a.skipped);
                        tracing::debug!(applied = ?a, "sync backup: message");
                    }
                    SyncInput::Refused(e) => {
                        bump(&counters.backup_refused, 1);
                        tracing::debug!(error = ?e, "sync backup: datagram refused");
                    }
                    other => tracing::debug!(input = ?other, "sync backup: datagram"),
                }
            }
        });
        match spawned {
            Ok(thread) => Ok(DaemonHandle { stop, threads: vec![thread] }),
            Err(e) => {
                let _ = self.director.upgrade().map(|d| d.engine().stop_sync_backup());
                Err(e)
            }
        }
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
        for t in handle.threads {
            let _ = t.join();
        }
        if let Some(d) = self.director.upgrade() {
            // As the kernel: a stopped master's queued messages are dropped; a backup's conns stay.
            match state {
                SyncState::Master => drop(d.engine().stop_sync_master()),
                SyncState::Backup => drop(d.engine().stop_sync_backup()),
            }
        }
        tracing::info!(state = state.name(), "sync daemon stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::DirectorOptions;
    use ipvs_core::proto::Protocol;

    const RULES: &str = "-A -t 10.0.0.100:80 -s rr -p 300\n-a -t 10.0.0.100:80 -r 10.0.1.1:80 -m\n";

    /// A master feeding through one director's engine and a backup applying into another's give the same
    /// conn and template, counted on the backup's real server.
    #[test]
    fn master_to_backup_in_process() {
        let a = Director::new(DirectorOptions::new([1; 16])).unwrap();
        let b = Director::new(DirectorOptions::new([2; 16])).unwrap();
        a.apply_rules(RULES).unwrap();
        b.apply_rules(RULES).unwrap();
        a.engine()
            .start_sync_master(Master::new(MasterConfig::default()).unwrap(), SyncMasterOptions::default())
            .unwrap();
        b.engine().start_sync_backup(Backup::new(b.engine().sync_backup_config()).unwrap()).unwrap();
        // SYN, ACK, data: the third client packet syncs an ESTABLISHED conn (and its template).
        let client = [192, 0, 2, 7];
        for flags in [0x02u8, 0x10, 0x18] {
            let pkt = tcp_packet(client, [10, 0, 0, 100], 40000, 80, flags);
            let mut data = vec![0u8; 64];
            data.extend_from_slice(&pkt);
            let mut buf = ipvs_core::PacketBuf::new(&mut data, 64, pkt.len()).unwrap();
            assert_eq!(a.process(&mut buf), crate::Action::Write);
        }
        // Flush after the 2 s batching delay.
        let later = a.now() + ipvs_core::proto::Duration::from_secs(3);
        let mut buf = Vec::new();
        let mut msgs = Vec::new();
        while let Some(t) = a.engine().poll_sync_transmit(later, &mut buf) {
            msgs.push(buf[..t.len].to_vec());
        }
        assert_eq!(msgs.len(), 1);
        let SyncInput::Applied(applied) = b.engine().handle_sync_datagram(b.now(), &msgs[0]) else {
            panic!("not applied")
        };
        assert_eq!(applied.created, 2, "{applied:?}");
        let conns = b.engine().conns(b.now());
        assert_eq!(conns.len(), 2);
        let conn = conns.iter().find(|c| !c.is_template()).unwrap();
        assert_eq!(conn.state, "ESTABLISHED");
        assert_eq!(conn.protocol, Protocol::Tcp);
        assert_eq!(conn.real, "10.0.1.1:80".parse().unwrap());
        // The backup's listing counts the synced conn as active and the template as persistent.
        let snap = crate::listing::snapshot(&b);
        let dest = &snap.services[0].dests[0];
        assert_eq!((dest.active_conns, dest.inactive_conns, dest.persist_conns), (1, 0, 1));
        let SyncInput::Applied(again) = b.engine().handle_sync_datagram(b.now(), &msgs[0]) else {
            panic!("not applied")
        };
        // v1 sends the template after each of the conn's packets: 3 template records and the conn.
        assert_eq!((again.created, again.updated), (0, 4));
        assert_eq!(b.engine().conns(b.now()).len(), 2);
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
