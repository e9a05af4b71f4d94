//! `ipvsadm -L -n` in all its forms, and the kernel's `/proc/net/ip_vs*` files, from a [`ListingSnapshot`].
//!
//! The snapshot is plain data the engine (or a test) fills: configurations, counters, rates, the connection
//! table's rows, timeouts and daemons. Rendering follows ipvsadm 1.31 and Linux 6.1 byte for byte (facts
//! §14.5, §3.10, §10.4; checked against `testdata/kernel-6.1/ipvsadm-listings.txt`):
//!
//! - `-L` sorts services (fwmark, family, protocol, address, port) and servers (address, port) with
//!   libipvs' comparators; `--nosort` keeps the kernel's orders.
//! - Numbers in `--stats`/`--rate` are right-aligned in 8 columns plus a space; without `--exact` values of
//!   10⁸ and more are shown as thousands `K` (below 10⁹), millions `M` (below 10¹¹), billions `G` (below
//!   10¹⁴) or trillions `T`, in 8 columns. `--exact` widens a column only for numbers of more than 8 digits.
//! - `/proc/net/ip_vs` lists services by hash bucket (proto/addr/port table, then the fwmark table; within a
//!   bucket the most recently added first) — the kernel mixes its netns pointer into the hash, so the
//!   snapshot carries that value as [`ListingSnapshot::svc_hash_salt`] — and servers most recently added
//!   first; it prints the persistence timeout in jiffies and IPv6 services without `ops`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs_proto::{AddressFamily, Protocol, ServiceKey};

use super::save::{mask_text, sched_flags_text};
use super::{addrport, cmp_dests, cmp_services, full6, glibc_qsort, kernel_proto_name, ntop};
use crate::config::{
    DestConfig, RuleSet, ServiceConfig, SyncDaemonConfig, SyncState, Timeouts, TunnelCsum, TunnelKind,
};

/// The IPVS version the kernel reports (`IP_VS_VERSION_CODE` 0x010201).
pub const IPVS_VERSION: &str = "1.2.1";

/// Timer ticks per second of the kernel whose `/proc/net/ip_vs` is reproduced (Debian's `CONFIG_HZ=250`).
pub const DEFAULT_HZ: u32 = 250;

/// Cumulative counters of a service, a server or the whole table (facts §10.1).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets in (client → server).
    pub inpkts: u64,
    /// Packets out (server → client, NAT only).
    pub outpkts: u64,
    /// Bytes in.
    pub inbytes: u64,
    /// Bytes out.
    pub outbytes: u64,
}

/// Estimated rates, per second (facts §10.2; "bps" are bytes).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets in per second.
    pub inpps: u64,
    /// Packets out per second.
    pub outpps: u64,
    /// Bytes in per second.
    pub inbps: u64,
    /// Bytes out per second.
    pub outbps: u64,
}

/// A server as the listings show it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct DestListing {
    /// Its configuration.
    pub config: DestConfig,
    /// `ActiveConn`.
    pub active_conns: u32,
    /// `InActConn`.
    pub inactive_conns: u32,
    /// `PersistConn` (templates).
    pub persist_conns: u32,
    /// Counters.
    pub stats: Stats,
    /// Rates.
    pub rates: Rates,
}

/// A service as the listings show it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ServiceListing {
    /// Its configuration.
    pub config: ServiceConfig,
    /// Counters.
    pub stats: Stats,
    /// Rates.
    pub rates: Rates,
    /// Its servers in the kernel's list order: most recently added first (facts §2.4).
    pub dests: Vec<DestListing>,
}

/// One row of the connection table (`/proc/net/ip_vs_conn`, `ipvsadm -L -c`).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ConnRow {
    /// The conn's protocol ([`Protocol::HopByHop`] = 0 for fwmark templates, printed `IP`).
    pub protocol: Protocol,
    /// Client address and port (port 0 for templates).
    pub client: SocketAddr,
    /// Virtual address and port.
    pub virt: SocketAddr,
    /// Server address and port.
    pub dest: SocketAddr,
    /// The state as the kernel names it (`SYN_RECV`, `ESTABLISHED`, `NONE`, `UDP`, …).
    pub state: &'static str,
    /// Whole seconds until the conn's timer fires (rounded down).
    pub expires_secs: u32,
    /// Persistence engine name and data (`sip`, Call-ID), when the conn has PE data.
    pub pe: Option<(String, String)>,
}

/// A running sync daemon as `-L --daemon` shows it (every value resolved).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct DaemonRow {
    /// Master or backup.
    pub state: SyncState,
    /// Multicast interface.
    pub mcast_ifn: String,
    /// Sync id.
    pub syncid: u8,
    /// Message size limit in effect.
    pub sync_maxlen: u16,
    /// Multicast group.
    pub mcast_group: IpAddr,
    /// Base port.
    pub mcast_port: u16,
    /// TTL.
    pub mcast_ttl: u8,
}

impl DaemonRow {
    /// The row for a configured daemon whose interface has MTU `if_mtu` (defaults resolved as the kernel
    /// does, [`SyncDaemonConfig::maxlen`]).
    pub fn from_config(config: &SyncDaemonConfig, if_mtu: u32) -> Self {
        Self {
            state: config.state,
            mcast_ifn: config.mcast_ifn.clone(),
            syncid: config.syncid,
            sync_maxlen: config.maxlen(if_mtu),
            mcast_group: config.group(),
            mcast_port: config.port(),
            mcast_ttl: config.ttl(),
        }
    }
}

/// Everything the listings print, as plain data.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ListingSnapshot {
    /// Connection table size (`size=` in the version line; 4096 by default).
    pub conn_table_size: u32,
    /// Services in the order they were added (oldest first).
    pub services: Vec<ServiceListing>,
    /// Connection table rows in table order (one-packet conns are never in the table).
    pub conns: Vec<ConnRow>,
    /// `--set` timeouts.
    pub timeouts: Timeouts,
    /// Running sync daemons.
    pub daemons: Vec<DaemonRow>,
    /// Totals over everything (`/proc/net/ip_vs_stats`).
    pub total_stats: Stats,
    /// Total rates, estimated on their own (not the sum of the services' rounded rates).
    pub total_rates: Rates,
    /// Timer ticks per second, for the jiffies `/proc/net/ip_vs` prints.
    pub hz: u32,
    /// The value the kernel mixes into its service hash (its netns pointer `>> 8`; only the low 8 bits
    /// matter): decides the service order of `/proc/net/ip_vs` and `-L --nosort`.
    pub svc_hash_salt: u32,
}

impl ListingSnapshot {
    /// An empty table of `conn_table_size` with default timeouts, [`DEFAULT_HZ`] and salt 0.
    pub fn new(conn_table_size: u32) -> Self {
        Self {
            conn_table_size,
            services: Vec::new(),
            conns: Vec::new(),
            timeouts: Timeouts::DEFAULT,
            daemons: Vec::new(),
            total_stats: Stats::default(),
            total_rates: Rates::default(),
            hz: DEFAULT_HZ,
            svc_hash_salt: 0,
        }
    }

    /// The configuration part of a snapshot: `rules`' services and servers with zero counters, its timeouts
    /// and its daemons (on interfaces of MTU 1500).
    pub fn from_rules(rules: &RuleSet, conn_table_size: u32) -> Self {
        let mut snap = Self::new(conn_table_size);
        snap.services = rules
            .services()
            .iter()
            .map(|s| ServiceListing {
                config: s.config.clone(),
                stats: Stats::default(),
                rates: Rates::default(),
                dests: s
                    .dests_kernel_order()
                    .map(|d| DestListing {
                        config: *d,
                        active_conns: 0,
                        inactive_conns: 0,
                        persist_conns: 0,
                        stats: Stats::default(),
                        rates: Rates::default(),
                    })
                    .collect(),
            })
            .collect();
        snap.timeouts = rules.timeouts();
        snap.daemons = rules.daemons().map(|d| DaemonRow::from_config(d, 1500)).collect();
        snap
    }

    /// The service with `key`, if any.
    pub fn service_mut(&mut self, key: &ServiceKey) -> Option<&mut ServiceListing> {
        self.services.iter_mut().find(|s| s.config.key == *key)
    }

    /// `ipvsadm -S -n` of the snapshot's configuration.
    pub fn save(&self) -> String {
        super::save(self.services.iter().map(|s| (&s.config, s.dests.iter().map(|d| &d.config))))
    }
}

/// Which `-L` listing: the ipvsadm options. When several are set ipvsadm's precedence applies: `stats`,
/// then `rate`, `thresholds`, `persistent_conn`, `tun_info`, else the plain listing.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct ListFormat {
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--exact`: no K/M/G/T abbreviation.
    pub exact: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--tun-info`.
    pub tun_info: bool,
    /// `--nosort`: the kernel's orders.
    pub nosort: bool,
}

impl ListFormat {
    /// `-L -n`.
    pub const PLAIN: Self = Self {
        stats: false,
        rate: false,
        exact: false,
        thresholds: false,
        persistent_conn: false,
        tun_info: false,
        nosort: false,
    };
    /// `-L -n --stats`.
    pub const STATS: Self = Self { stats: true, ..Self::PLAIN };
    /// `-L -n --stats --exact`.
    pub const STATS_EXACT: Self = Self { stats: true, exact: true, ..Self::PLAIN };
    /// `-L -n --rate`.
    pub const RATE: Self = Self { rate: true, ..Self::PLAIN };
    /// `-L -n --thresholds`.
    pub const THRESHOLDS: Self = Self { thresholds: true, ..Self::PLAIN };
    /// `-L -n --persistent-conn`.
    pub const PERSISTENT_CONN: Self = Self { persistent_conn: true, ..Self::PLAIN };
    /// `-L -n --tun-info`.
    pub const TUN_INFO: Self = Self { tun_info: true, ..Self::PLAIN };
}

/// `ipvsadm -L -n [FORMAT]`: the version line, the title and every service.
pub fn list_services(snap: &ListingSnapshot, format: ListFormat) -> String {
    let mut out = format!("IP Virtual Server version {IPVS_VERSION} (size={})\n", snap.conn_table_size);
    out.push_str(title(format));
    let order =
        kernel_service_order(&snap.services.iter().map(|s| s.config.key).collect::<Vec<_>>(), snap.svc_hash_salt);
    let mut services: Vec<&ServiceListing> = order.iter().map(|&i| &snap.services[i]).collect();
    if !format.nosort {
        glibc_qsort(&mut services, &|a, b| cmp_services(&a.config.key, &b.config.key));
    }
    for svc in services {
        service_entry(&mut out, svc, format);
    }
    out
}

/// `ipvsadm -L -n -t|-u|--sctp-service|-f SERVICE [FORMAT]`: the title and that service; `None` when there
/// is no such service (ipvsadm: "No such service").
pub fn list_service(snap: &ListingSnapshot, key: &ServiceKey, format: ListFormat) -> Option<String> {
    let svc = snap.services.iter().find(|s| s.config.key == *key)?;
    let mut out = title(format).to_owned();
    service_entry(&mut out, svc, format);
    Some(out)
}

/// `ipvsadm -L -n -c [--persistent-conn]`: the rows as ipvsadm reformats `/proc/net/ip_vs_conn`, in table
/// order. With `persistent_conn`, rows with PE data get two more columns.
///
/// ipvsadm guesses the family from the client address column, so a conn whose server has the other family
/// prints garbage there: an IPv6 server of an IPv4 conn shows as the IPv4 address of its first 16-bit group
/// (reproduced); an IPv4 server of an IPv6 conn is uninitialised memory in ipvsadm (shown here as `::`).
pub fn list_conns(conns: &[ConnRow], persistent_conn: bool) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(out, "pro expire {:<11} {:<18} {:<18} destination", "state", "source", "virtual");
    }
    for c in conns {
        let proto = kernel_proto_name(c.protocol);
        let expire = format!("{:02}:{:02}", c.expires_secs / 60, c.expires_secs % 60);
        let cname = addrport(&c.client);
        let vname = addrport(&SocketAddr::new(as_family(c.virt.ip(), c.client.is_ipv6()), c.virt.port()));
        let dname = addrport(&SocketAddr::new(as_family(c.dest.ip(), c.client.is_ipv6()), c.dest.port()));
        match (&c.pe, persistent_conn) {
            (Some((name, data)), true) => {
                let _ = writeln!(
                    out,
                    "{proto:<3} {expire:<6} {:<11} {cname:<18} {vname:<18} {dname:<16} {name:<18} {data}",
                    c.state
                );
            }
            _ => {
                let _ = writeln!(out, "{proto:<3} {expire:<6} {:<11} {cname:<18} {vname:<18} {dname}", c.state);
            }
        }
    }
    out
}

/// What ipvsadm reads back for an address of the other family than the row's client (see [`list_conns`]).
fn as_family(ip: IpAddr, client_v6: bool) -> IpAddr {
    match (ip, client_v6) {
        (IpAddr::V6(v6), false) => IpAddr::V4(Ipv4Addr::from(u32::from(v6.segments()[0]))),
        (IpAddr::V4(_), true) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        (ip, _) => ip,
    }
}

/// `ipvsadm -L -n --timeout`.
pub fn list_timeout(t: &Timeouts) -> String {
    format!("Timeout (tcp tcpfin udp): {} {} {}\n", t.tcp, t.tcpfin, t.udp)
}

/// `ipvsadm -L -n --daemon`: master first, then backup.
pub fn list_daemons(daemons: &[DaemonRow]) -> String {
    let mut out = String::new();
    for state in [SyncState::Master, SyncState::Backup] {
        for d in daemons.iter().filter(|d| d.state == state) {
            let _ = write!(out, "{} sync daemon (mcast={}, syncid={}", state.name(), d.mcast_ifn, d.syncid);
            if d.sync_maxlen != 0 {
                let _ = write!(out, ", maxlen={}", d.sync_maxlen);
            }
            let _ = write!(out, ", group={}", ntop(&d.mcast_group));
            if d.mcast_port != 0 {
                let _ = write!(out, ", port={}", d.mcast_port);
            }
            if d.mcast_ttl != 0 {
                let _ = write!(out, ", ttl={}", d.mcast_ttl);
            }
            out.push_str(")\n");
        }
    }
    out
}

/// `/proc/net/ip_vs`.
pub fn proc_ip_vs(snap: &ListingSnapshot) -> String {
    let mut out = format!("IP Virtual Server version {IPVS_VERSION} (size={})\n", snap.conn_table_size);
    out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    out.push_str("  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n");
    let order =
        kernel_service_order(&snap.services.iter().map(|s| s.config.key).collect::<Vec<_>>(), snap.svc_hash_salt);
    for svc in order.iter().map(|&i| &snap.services[i]) {
        let c = &svc.config;
        let sched = &c.scheduler;
        let ops = if c.one_packet { "ops " } else { "" };
        match c.key {
            ServiceKey::Addr { protocol, addr: SocketAddr::V4(a) } => {
                let name = kernel_proto_name(protocol);
                let _ = write!(out, "{name}  {:08X}:{:04X} {sched} {ops} ", u32::from(*a.ip()), a.port());
            }
            ServiceKey::Addr { protocol, addr: SocketAddr::V6(a) } => {
                let name = kernel_proto_name(protocol);
                let _ = write!(out, "{name}  [{}]:{:04X} {sched} ", full6(a.ip()), a.port());
            }
            ServiceKey::Fwmark { mark, .. } => {
                let _ = write!(out, "FWM  {mark:08X} {sched} {ops}");
            }
        }
        match c.persistence {
            Some(p) => {
                // The kernel prints `ntohl(svc->netmask)`; an IPv6 prefix length is stored host-order, so a
                // little-endian kernel shows it byte-swapped (64 → 40000000).
                let mask = match c.key.family() {
                    AddressFamily::Inet => p.netmask,
                    AddressFamily::Inet6 => p.netmask.swap_bytes(),
                };
                let jiffies = u64::from(p.timeout_secs) * u64::from(snap.hz);
                let _ = writeln!(out, "persistent {jiffies} {mask:08X}");
            }
            None => out.push('\n'),
        }
        for d in &svc.dests {
            let addr = match d.config.addr {
                SocketAddr::V4(a) => format!("{:08X}:{:04X}", u32::from(*a.ip()), a.port()),
                SocketAddr::V6(a) => format!("[{}]:{:04X}", full6(a.ip()), a.port()),
            };
            let _ = writeln!(
                out,
                "  -> {addr}      {:<7} {:<6} {:<10} {:<10}",
                d.config.fwd.ipvsadm_name(),
                d.config.weight,
                d.active_conns,
                d.inactive_conns
            );
        }
    }
    out
}

/// `/proc/net/ip_vs_conn`.
pub fn proc_ip_vs_conn(snap: &ListingSnapshot) -> String {
    let mut out = String::from("Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n");
    let hex = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => format!("{:08X}", u32::from(v4)),
        IpAddr::V6(v6) => full6(&v6),
    };
    for c in &snap.conns {
        let pe = c.pe.as_ref().map_or(String::new(), |(n, d)| format!(" {n} {d}"));
        let _ = writeln!(
            out,
            "{:<3} {} {:04X} {} {:04X} {} {:04X} {:<11} {:>7}{pe}",
            kernel_proto_name(c.protocol),
            hex(c.client.ip()),
            c.client.port(),
            hex(c.virt.ip()),
            c.virt.port(),
            hex(c.dest.ip()),
            c.dest.port(),
            c.state,
            c.expires_secs
        );
    }
    out
}

/// `/proc/net/ip_vs_stats`: totals and total rates in hex.
pub fn proc_ip_vs_stats(snap: &ListingSnapshot) -> String {
    let (s, r) = (&snap.total_stats, &snap.total_rates);
    let mut out = String::from("   Total Incoming Outgoing         Incoming         Outgoing\n");
    out.push_str("   Conns  Packets  Packets            Bytes            Bytes\n");
    let _ =
        writeln!(out, "{:>8X} {:>8X} {:>8X} {:>16X} {:>16X}\n", s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes);
    out.push_str(" Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n");
    let _ = writeln!(out, "{:>8X} {:>8X} {:>8X} {:>16X} {:>16X}", r.cps, r.inpps, r.outpps, r.inbps, r.outbps);
    out
}

/// The kernel's service table order for services added in the order of `keys`: indices into `keys`.
///
/// The kernel hashes (protocol, address, port) into 256 buckets — `(proto ^ A ^ (port >> 8) ^ port) & 255`
/// with `A` = the host-order address (the XOR of the four words for IPv6) `^ salt` — and fwmark services
/// into another 256 — `(salt ^ mark) & 255` (facts §2.1). Its iterators walk the first table's buckets, then
/// the second's; a bucket holds the most recently added service first.
pub fn kernel_service_order(keys: &[ServiceKey], salt: u32) -> Vec<usize> {
    let bucket = |key: &ServiceKey| -> (u8, u32) {
        match key {
            ServiceKey::Addr { protocol, addr } => {
                let port = u32::from(addr.port());
                let fold = match addr.ip() {
                    IpAddr::V4(v4) => u32::from(v4),
                    IpAddr::V6(v6) => {
                        let o = v6.octets();
                        (0..4).fold(0, |acc, i| {
                            acc ^ u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
                        })
                    }
                };
                (0, (u32::from(u8::from(*protocol)) ^ fold ^ salt ^ (port >> 8) ^ port) & 255)
            }
            ServiceKey::Fwmark { mark, .. } => (1, (salt ^ mark) & 255),
        }
    };
    let mut order: Vec<usize> = (0..keys.len()).rev().collect();
    order.sort_by_key(|&i| bucket(&keys[i]));
    order
}

// ---------------------------------------------------------------------------------------------------------

fn title(format: ListFormat) -> &'static str {
    if format.stats {
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"
    } else if format.rate {
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n"
    } else if format.thresholds {
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if format.persistent_conn {
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if format.tun_info {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
    } else {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    }
}

/// ipvsadm's `print_largenum`.
fn largenum(out: &mut String, n: u64, exact: bool) {
    if exact {
        let digits = n.to_string().len();
        let width = if digits <= 8 { 9 } else { digits + 1 };
        let _ = write!(out, "{n:>width$}");
    } else if n < 100_000_000 {
        let _ = write!(out, "{n:>9}");
    } else if n < 1_000_000_000 {
        let _ = write!(out, "{:>8}K", n / 1_000);
    } else if n < 100_000_000_000 {
        let _ = write!(out, "{:>8}M", n / 1_000_000);
    } else if n < 100_000_000_000_000 {
        let _ = write!(out, "{:>8}G", n / 1_000_000_000);
    } else {
        let _ = write!(out, "{:>8}T", n / 1_000_000_000_000);
    }
}

fn service_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Fwmark { mark, family: AddressFamily::Inet } => format!("FWM  {mark}"),
        ServiceKey::Fwmark { mark, family: AddressFamily::Inet6 } => format!("FWM  {mark} IPv6"),
        ServiceKey::Addr { protocol, addr } => {
            let mut name = format!("{:<4} {}", kernel_proto_name(*protocol), addrport(addr));
            if addr.is_ipv4() {
                name.truncate(33);
            }
            name
        }
    }
}

fn service_entry(out: &mut String, svc: &ServiceListing, format: ListFormat) {
    let c = &svc.config;
    let name = service_name(&c.key);
    if format.stats || format.rate {
        let _ = write!(out, "{name:<33}");
        let v = if format.stats {
            let s = &svc.stats;
            [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
        } else {
            let r = &svc.rates;
            [r.cps, r.inpps, r.outpps, r.inbps, r.outbps]
        };
        for n in v {
            largenum(out, n, format.exact);
        }
    } else {
        let _ = write!(out, "{name} {}", c.scheduler);
        if let Some(flags) = sched_flags_text(&c.scheduler, c.sched_flags) {
            let _ = write!(out, " ({flags})");
        }
        if let Some(p) = c.persistence {
            let _ = write!(out, " persistent {}", p.timeout_secs);
            if let Some(mask) = mask_text(&c.key, &p) {
                let _ = write!(out, " mask {mask}");
            }
            if let Some(pe) = &c.pe_name {
                let _ = write!(out, " pe {pe}");
            }
        }
        if c.one_packet {
            out.push_str(" ops");
        }
    }
    out.push('\n');

    let mut dests: Vec<&DestListing> = svc.dests.iter().collect();
    if !format.nosort {
        glibc_qsort(&mut dests, &|a, b| cmp_dests(&a.config.addr, &b.config.addr));
    }
    for d in dests {
        let mut dname = addrport(&d.config.addr);
        if c.key.family() == AddressFamily::Inet {
            dname.truncate(28);
        }
        let cfg = &d.config;
        if format.stats {
            let _ = write!(out, "  -> {dname:<28}");
            let s = &d.stats;
            for n in [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes] {
                largenum(out, n, format.exact);
            }
            out.push('\n');
        } else if format.rate {
            let r = &d.rates;
            let _ = write!(out, "  -> {dname:<28} {:>8} {:>8} {:>8}", r.cps, r.inpps, r.outpps);
            largenum(out, r.inbps, format.exact);
            largenum(out, r.outbps, format.exact);
            out.push('\n');
        } else if format.thresholds {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                cfg.u_threshold, cfg.l_threshold, d.active_conns, d.inactive_conns
            );
        } else if format.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                cfg.weight, d.persist_conns, d.active_conns, d.inactive_conns
            );
        } else if format.tun_info {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
                cfg.fwd.ipvsadm_name(),
                tun_info(cfg),
                cfg.weight,
                d.active_conns,
                d.inactive_conns
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                cfg.fwd.ipvsadm_name(),
                cfg.weight,
                d.active_conns,
                d.inactive_conns
            );
        }
    }
}

/// ipvsadm's `fwd_tun_info`: `ipip`, `gue:PORT:-c|+c|r+c`, `gre:-c|+c`, or `n/a` for other methods.
fn tun_info(d: &DestConfig) -> String {
    let flag = |c: TunnelCsum| match c {
        TunnelCsum::NoCsum => "-c",
        TunnelCsum::Csum => "+c",
        TunnelCsum::RemCsum => "r+c",
    };
    match d.tunnel_params() {
        None => "n/a".to_owned(),
        Some(t) => match t.kind {
            TunnelKind::Ipip => "ipip".to_owned(),
            TunnelKind::Gue => format!("gue:{}:{}", t.port, flag(t.csum)),
            TunnelKind::Gre => format!("gre:{}", flag(t.csum)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largenum_abbreviates_like_ipvsadm() {
        let cases = [
            (0, false, "        0"),
            (99_999_999, false, " 99999999"),
            (100_000_000, false, "  100000K"),
            (999_999_999, false, "  999999K"),
            (1_000_000_000, false, "    1000M"),
            (99_999_999_999, false, "   99999M"),
            (100_000_000_000, false, "     100G"),
            (100_000_000_000_000, false, "     100T"),
            (123_456_789, true, " 123456789"),
            (12_345_678, true, " 12345678"),
        ];
        for (n, exact, want) in cases {
            let mut s = String::new();
            largenum(&mut s, n, exact);
            assert_eq!(s, want, "{n} exact={exact}");
        }
    }

    #[test]
    fn conn_rows_of_mixed_families() {
        let row = ConnRow {
            protocol: Protocol::Tcp,
            client: "10.9.0.1:1000".parse().unwrap(),
            virt: "10.0.0.1:80".parse().unwrap(),
            dest: "[fd01::7]:80".parse().unwrap(),
            state: "ESTABLISHED",
            expires_secs: 899,
            pe: None,
        };
        let out = list_conns(std::slice::from_ref(&row), false);
        assert!(out.ends_with("TCP 14:59  ESTABLISHED 10.9.0.1:1000      10.0.0.1:80        0.0.253.1:80\n"), "{out}");
        let mut snap = ListingSnapshot::new(4096);
        snap.conns.push(row);
        assert!(proc_ip_vs_conn(&snap).ends_with(
            "TCP 0A090001 03E8 0A000001 0050 fd01:0000:0000:0000:0000:0000:0000:0007 0050 ESTABLISHED     899\n"
        ));
    }

    #[test]
    fn conn_rows_with_pe_data() {
        let row = ConnRow {
            protocol: Protocol::Udp,
            client: "10.9.0.1:5060".parse().unwrap(),
            virt: "10.0.0.1:5060".parse().unwrap(),
            dest: "10.1.0.8:5060".parse().unwrap(),
            state: "UDP",
            expires_secs: 61,
            pe: Some(("sip".into(), "abc@host".into())),
        };
        let out = list_conns(std::slice::from_ref(&row), true);
        let want = "IPVS connection entries\n\
pro expire state       source             virtual            destination        pe name          pe_data\n\
UDP 01:01  UDP         10.9.0.1:5060      10.0.0.1:5060      10.1.0.8:5060    sip                abc@host\n";
        assert_eq!(out, want);
        let mut snap = ListingSnapshot::new(4096);
        snap.conns.push(row);
        assert!(proc_ip_vs_conn(&snap).ends_with(" UDP              61 sip abc@host\n"));
    }

    #[test]
    fn kernel_order_puts_recent_first_within_a_bucket() {
        // Same bucket: ports 0x0102 and 0x0201 hash alike ((p >> 8) ^ p is symmetric in the two bytes).
        let a = ServiceKey::Addr { protocol: Protocol::Tcp, addr: "10.0.0.1:258".parse().unwrap() };
        let b = ServiceKey::Addr { protocol: Protocol::Tcp, addr: "10.0.0.1:513".parse().unwrap() };
        let f = ServiceKey::Fwmark { mark: 0, family: AddressFamily::Inet };
        assert_eq!(kernel_service_order(&[f, a, b], 0), vec![2, 1, 0]);
    }
}
