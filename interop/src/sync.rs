//! The sync scenarios: a kernel master and a tun-director backup, a tun-director master and a kernel backup
//! (v1, and v0 with `sync_version` 0 on both sides), over real multicast between the guest's `eth0` and a tap
//! device in the test's own namespace ([`crate::netns`]).
//!
//! Both sides get the same services ([`RULES`]): NAT, DR, persistent and firewall-mark services, IPv4 and
//! IPv6, TCP and UDP. [`flows`] are 22 client flows over them, three client packets each (TCP: SYN, ACK,
//! PSH+ACK — ESTABLISHED from the second; UDP: three datagrams): the third packet reaches the default
//! `sync_threshold` (3), so every conn is sent once, and v1 sends each persistence template after every packet
//! of its conns. Our side is a [`tun_director::Director`] with its own sync daemons ([`SyncRunner`]: the
//! multicast sockets and threads the director ships, over the engine's sync protocol) started inside the
//! namespace; packets reach it through [`Director::process`], as from its TUN device. Direct-routing real
//! servers, which the director refuses for its own packet path (a TUN device has no layer 2), are added
//! through its engine: synced conns of DR servers bind to them as on a kernel backup.
//!
//! What is compared ([`compare_conns`], [`compare_counters`]): every entry of the guest's
//! `/proc/net/ip_vs_conn` (conns and templates: protocol, client, virtual address, real server, state) against
//! ours, the remaining time once the measured sync delay is accounted for (see each scenario), and the real
//! servers' PersistConn / ActiveConn / InActConn of `ipvsadm -L -n --persistent-conn` — the visible trace of
//! the conns' `TEMPLATE` and `INACTIVE` flags.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipvs_core::ipvsadm::{list_services, parse_rules, proc_ip_vs_conn, ListFormat};
use ipvs_core::proto::{FwdMethod, Instant};
use ipvs_core::sync::Version;
use ipvs_core::{Command, PacketBuf};
use ipvs_proto::Protocol;
use tun_director::sync::SyncRunner;
use tun_director::{Director, DirectorOptions};

use crate::netns::{self, GUEST_ADDR, TAP};
use crate::packet;
use crate::procfs::{parse_conns, ProcConn};
use crate::{Error, Result};

/// The sync id of every daemon.
pub const SYNCID: u8 = 9;

/// The services of both sides (the guest restores them with `ipvsadm -R`).
pub const RULES: &str = "\
-A -t 10.0.2.100:80 -s rr
-a -t 10.0.2.100:80 -r 10.1.0.1:8080 -m -w 1
-a -t 10.0.2.100:80 -r 10.1.0.2:8080 -m -w 1
-A -t 10.0.2.100:81 -s rr
-a -t 10.0.2.100:81 -r 10.1.0.3:81 -g -w 1
-A -u 10.0.2.100:53 -s rr
-a -u 10.0.2.100:53 -r 10.1.0.4:5353 -m -w 1
-A -t 10.0.2.100:443 -s rr -p 300
-a -t 10.0.2.100:443 -r 10.1.0.5:443 -m -w 1
-A -u 10.0.2.100:500 -s rr -p 120
-a -u 10.0.2.100:500 -r 10.1.0.6:500 -g -w 1
-A -f 1 -s rr
-a -f 1 -r 10.1.0.7:0 -g -w 1
-A -f 2 -s rr -p 60
-a -f 2 -r 10.1.0.8:8000 -m -w 1
-A -t [2001:db8::100]:80 -s rr
-a -t [2001:db8::100]:80 -r [2001:db8:1::1]:8080 -m -w 1
-A -u [2001:db8::100]:53 -s rr
-a -u [2001:db8::100]:53 -r [2001:db8:1::2]:53 -g -w 1
-A -t [2001:db8::100]:443 -s rr -p 300
-a -t [2001:db8::100]:443 -r [2001:db8:1::3]:443 -g -w 1
-A -f 3 -6 -s rr -p 90
-a -f 3 -6 -r [2001:db8:1::4]:0 -g -w 1
";

/// One client flow.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Flow {
    /// Its transport protocol.
    pub protocol: Protocol,
    /// The client (unique).
    pub client: SocketAddr,
    /// Where its packets go (the VIP, or an address a fwmark service takes by its mark).
    pub dst: SocketAddr,
    /// The packets' firewall mark (0 for address services).
    pub mark: u32,
}

/// Client packets per flow: the third reaches `sync_threshold`.
pub const PACKETS_PER_FLOW: usize = 3;

/// Two flows per address service and a TCP and a UDP flow per fwmark service (22 in all), each from its own
/// client.
pub fn flows() -> Vec<Flow> {
    let v4 = |a: u8, port| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, a)), port);
    let v6 = |a: u16, port| SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, a)), port);
    let fw4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1)), 80);
    let fw6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1)), 80);
    let (tcp, udp) = (Protocol::Tcp, Protocol::Udp);
    let targets = [
        (tcp, v4(100, 80), 0),
        (tcp, v4(100, 81), 0),
        (udp, v4(100, 53), 0),
        (tcp, v4(100, 443), 0),
        (udp, v4(100, 500), 0),
        (tcp, v6(0x100, 80), 0),
        (udp, v6(0x100, 53), 0),
        (tcp, v6(0x100, 443), 0),
    ];
    let mut out = Vec::new();
    let mut n: u16 = 0;
    let mut client = |dst: SocketAddr| {
        n += 1;
        let ip = match dst.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 9, 0, u8::try_from(n).expect("few flows"))),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, n)),
        };
        SocketAddr::new(ip, 40000 + n)
    };
    for (protocol, dst, mark) in targets {
        for _ in 0..2 {
            out.push(Flow { protocol, client: client(dst), dst, mark });
        }
    }
    for (mark, dst) in [(1, fw4), (2, fw4), (3, fw6)] {
        for protocol in [tcp, udp] {
            out.push(Flow { protocol, client: client(dst), dst, mark });
        }
    }
    out
}

/// Packet `step` (0-based) of `flow`: SYN, ACK, PSH+ACK for TCP; a 16-byte datagram for UDP.
pub fn flow_packet(flow: &Flow, step: usize, ident: u16) -> Vec<u8> {
    match flow.protocol {
        Protocol::Udp => packet::udp(flow.client, flow.dst, 16, ident),
        _ => {
            let flags = [0x02, 0x10, 0x18][step.min(2)];
            packet::tcp(flow.client, flow.dst, flags, 1 + u32::try_from(step).expect("small"), ident)
        }
    }
}

/// The guest script that brings `eth0` up on the tap, routes the real servers to the dummy device and restores
/// [`RULES`].
pub fn guest_setup_script() -> String {
    format!(
        "set -e\nip link set eth0 up\nip addr add {GUEST_ADDR}/24 dev eth0\nip link set dummy0 up\n\
         ip route add 10.0.0.0/8 dev dummy0\nip -6 route add 2001:db8::/32 dev dummy0\n\
         ipvsadm -R <<'RULES'\n{RULES}RULES\n"
    )
}

/// The guest script that starts its sync daemon (`master` or `backup`) with `sync_version` `version`.
pub fn guest_daemon_script(state: &str, version: Version) -> String {
    let v = if version == Version::V0 { 0 } else { 1 };
    format!(
        "set -e\necho {v} > /proc/sys/net/ipv4/vs/sync_version\n\
         ipvsadm --start-daemon {state} --mcast-interface eth0 --syncid {SYNCID}\nipvsadm -L -n --daemon\n"
    )
}

/// The injector plan that sends every flow's packets, round by round (all first packets, then all second
/// ones, …), and prints `/proc/net/ip_vs_conn`.
pub fn guest_flows_script(flows: &[Flow]) -> String {
    let mut s = String::from("set -e\nipvs-guest <<'PLAN'\n");
    let mut mark = 0;
    let mut ident = 1u16;
    for step in 0..PACKETS_PER_FLOW {
        for f in flows {
            if f.mark != mark {
                mark = f.mark;
                let _ = writeln!(s, "mark {mark}");
            }
            let _ = writeln!(s, "send {}", packet::hex(&flow_packet(f, step, ident)));
            ident = ident.wrapping_add(1);
        }
    }
    s.push_str("PLAN\ncat /proc/net/ip_vs_conn\n");
    s
}

/// What the guest and our side list at (about) the same moment.
pub const READ_SCRIPT: &str = "cat /proc/net/ip_vs_conn\necho ===\nipvsadm -L -n --persistent-conn\n";

/// A [`READ_SCRIPT`] output split: the conns and the service listing.
pub fn split_read(out: &str) -> (Vec<ProcConn>, String) {
    let (conns, list) = out.split_once("===\n").unwrap_or((out, ""));
    (parse_conns(conns), list.to_string())
}

/// A director with [`RULES`] (direct-routing servers added through its engine), its sync daemons run by the
/// director's own [`SyncRunner`], sending `version`.
///
/// # Errors
/// The director refuses the rules.
pub fn director(version: Version) -> Result<Arc<Director>> {
    let mut opts = DirectorOptions::new(*b"interop-sync-key");
    opts.sync_version = version;
    let d = Director::new(opts).map_err(|e| Error(format!("director: {e}")))?;
    d.set_daemon_runner(Box::new(SyncRunner::new(&d)));
    let rules = parse_rules(RULES).map_err(|e| Error(format!("rules: {e}")))?;
    let (mut routed, mut text) = (Vec::new(), String::new());
    for (rule, line) in rules.into_iter().zip(RULES.lines()) {
        match rule.command {
            Command::AddDest { dest, .. } if dest.fwd == FwdMethod::DirectRoute => routed.push(rule.command),
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    d.apply_rules(&text).map_err(|e| Error(format!("director rules: {e}")))?;
    for c in routed {
        d.engine().apply(d.now(), c).map_err(|e| Error(format!("director: DR server: {e}")))?;
    }
    Ok(d)
}

/// Starts the director's sync daemon (`master` or `backup`) on the tap of namespace `ns`.
///
/// # Errors
/// The namespace cannot be entered or the daemon does not start.
pub fn start_daemon(d: &Arc<Director>, ns: &str, state: &str) -> Result<()> {
    let line = format!("--start-daemon {state} --mcast-interface {TAP} --syncid {SYNCID}\n");
    netns::in_netns(ns, || d.apply_rules(&line))?.map_err(|e| Error(format!("director: {e}")))?;
    Ok(())
}

/// Sends the flows' packets through the director (round by round, as [`guest_flows_script`]).
pub fn feed_flows(d: &Director, flows: &[Flow]) {
    let mut data = vec![0u8; 256];
    let mut ident = 1u16;
    for step in 0..PACKETS_PER_FLOW {
        for f in flows {
            let bytes = flow_packet(f, step, ident);
            ident = ident.wrapping_add(1);
            data[64..64 + bytes.len()].copy_from_slice(&bytes);
            let Ok(mut buf) = PacketBuf::new(&mut data, 64, bytes.len()) else { continue };
            buf.set_fwmark(f.mark);
            let _ = d.process(&mut buf);
        }
    }
}

/// A conn row's identity: protocol column, client, virtual address.
pub type ConnKey = (String, SocketAddr, SocketAddr);

/// What our table knows of a conn beyond its row.
#[derive(Clone, Copy, Debug)]
pub struct ConnTimes {
    /// Its last timer restart (for a synced conn: when its last record arrived).
    pub touched: Instant,
    /// Its timeout in milliseconds.
    pub timeout_ms: u64,
    /// Whether it is a persistence template.
    pub template: bool,
    /// Whether it carries the `SYNC` flag (made by a sync record).
    pub synced: bool,
}

/// Our conns and templates as `/proc/net/ip_vs_conn` rows, with each one's last timer restart and timeout.
#[derive(Clone, Debug)]
pub struct Ours {
    /// When the listing was taken (the director's clock).
    pub at: Instant,
    /// The rows.
    pub conns: Vec<ProcConn>,
    /// Each row's [`ConnTimes`].
    pub times: BTreeMap<ConnKey, ConnTimes>,
    /// `ipvsadm -L -n --persistent-conn`.
    pub listing: String,
}

/// Reads our side now.
pub fn ours(d: &Director) -> Ours {
    let snap = tun_director::listing::snapshot(d);
    let at = d.now();
    let conns = parse_conns(&proc_ip_vs_conn(&snap));
    let mut times = BTreeMap::new();
    for c in d.engine().conns(at) {
        if let Some(v) = d.engine().conn_table().get(c.id) {
            let key = (crate::procfs::protocol_text(c.protocol).to_string(), c.client, c.virt);
            let synced = v.flags.contains(ipvs_core::proto::ConnFlags::SYNC);
            let t = ConnTimes {
                touched: v.last_touch(),
                timeout_ms: v.timeout.total_millis(),
                template: v.is_template(),
                synced,
            };
            times.insert(key, t);
        }
    }
    let listing = list_services(&snap, ListFormat { persistent_conn: true, ..ListFormat::PLAIN });
    Ours { at, conns, times, listing }
}

/// The key of a conn row.
pub fn key(c: &ProcConn) -> ConnKey {
    (c.protocol.clone(), c.from, c.to)
}

/// Two sets of conns compared.
#[derive(Clone, Debug, Default)]
pub struct ConnComparison {
    /// Rows on both sides with the same real server and state and an expiry within the tolerance.
    pub agree: usize,
    /// Rows expected (the side that must have them all).
    pub total: usize,
    /// What differs, one line each.
    pub differences: Vec<String>,
    /// The largest expiry deviation seen, in seconds.
    pub max_deviation: f64,
}

/// Compares the rows of `expected` (the side every conn comes from) with `got`: the same keys, real servers
/// and states; `expiry` gives each matched pair's expiry deviation in seconds (or why it cannot), which must
/// be within `tolerance`. Rows only in `got` are differences too.
pub fn compare_conns(
    expected: &[ProcConn],
    got: &[ProcConn],
    tolerance: f64,
    mut expiry: impl FnMut(&ProcConn, &ProcConn) -> std::result::Result<f64, String>,
) -> ConnComparison {
    let got_by: BTreeMap<_, _> = got.iter().map(|c| (key(c), c)).collect();
    let mut cmp = ConnComparison { total: expected.len(), ..ConnComparison::default() };
    for e in expected {
        let Some(g) = got_by.get(&key(e)) else {
            cmp.differences.push(format!("missing: {}", row(e)));
            continue;
        };
        if g.dest != e.dest || g.state != e.state {
            cmp.differences.push(format!("expected {} | got {}", row(e), row(g)));
            continue;
        }
        match expiry(e, g) {
            Ok(dev) if dev.abs() <= tolerance => {
                cmp.max_deviation = cmp.max_deviation.max(dev.abs());
                cmp.agree += 1;
            }
            Ok(dev) => cmp.differences.push(format!("expiry off by {dev:.1} s: expected {} | got {}", row(e), row(g))),
            Err(why) => cmp.differences.push(format!("{why}: {}", row(e))),
        }
    }
    let expected_keys: std::collections::BTreeSet<_> = expected.iter().map(key).collect();
    for g in got.iter().filter(|g| !expected_keys.contains(&key(g))) {
        cmp.differences.push(format!("unexpected: {}", row(g)));
    }
    cmp
}

fn row(c: &ProcConn) -> String {
    format!("{} {} → {} → {} {} {}s", c.protocol, c.from, c.to, c.dest, c.state, c.expires)
}

/// The real servers' `Weight PersistConn ActiveConn InActConn` of an `ipvsadm -L -n --persistent-conn`
/// listing, by (service, server).
pub fn dest_counters(listing: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let mut service = String::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first() {
            Some(&("TCP" | "UDP" | "SCTP" | "FWM")) if f.len() >= 2 => service = format!("{} {}", f[0], f[1]),
            Some(&"->") if f.len() >= 6 => {
                out.insert((service.clone(), f[1].to_string()), f[2..].join(" "));
            }
            _ => {}
        }
    }
    out
}

/// Services whose synced conns a backup cannot bind, so its real servers count none of them: those of the
/// persistent fwmark service with a NAT server on another port than the packets'. Its conns go to the
/// packet's port (80) and its templates have port 0, while the backup looks the server up by the record's
/// port and then port 0 (facts §12.6 step 3, the kernel's `ip_vs_find_dest`): no match, the conns exist
/// unbound (listed, forwarded nowhere until a record binds them). A kernel backup does the same (checked by the
/// tun-director master → kernel backup scenarios).
pub const UNBOUND_ON_BACKUP: [&str; 1] = ["FWM 2"];

/// Compares the real servers' counters of a master's and a backup's listings: equal, except for services
/// starting with one of `unbound`, whose servers must count nothing on the backup. Returns the entries that
/// agree, the entries, and the differences.
pub fn compare_counters(master: &str, backup: &str, unbound: &[&str]) -> (usize, usize, Vec<String>) {
    let (m, b) = (dest_counters(master), dest_counters(backup));
    let mut diffs = Vec::new();
    let mut agree = 0;
    for (key, mv) in &m {
        let expected = if unbound.iter().any(|u| key.0.starts_with(u)) {
            let weight = mv.split_whitespace().next().unwrap_or("0");
            format!("{weight} 0 0 0")
        } else {
            mv.clone()
        };
        match b.get(key) {
            Some(bv) if *bv == expected => agree += 1,
            other => diffs.push(format!(
                "{} {}: master {mv}, backup expected {expected} | got {}",
                key.0,
                key.1,
                other.map_or("-", |s| s)
            )),
        }
    }
    for key in b.keys().filter(|key| !m.contains_key(*key)) {
        diffs.push(format!("{} {}: only on the backup", key.0, key.1));
    }
    (agree, m.len().max(b.len()), diffs)
}

/// Seconds between two instants of the director's clock (`b - a`, may be negative).
pub fn secs_between(a: Instant, b: Instant) -> f64 {
    (b.total_millis() as f64 - a.total_millis() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_cover_every_service_and_the_director_takes_the_rules() {
        let f = flows();
        assert_eq!(f.len(), 22);
        let clients: std::collections::BTreeSet<_> = f.iter().map(|x| x.client).collect();
        assert_eq!(clients.len(), f.len());
        let d = director(Version::V1).unwrap();
        assert_eq!(d.engine().services().len(), 11);
        feed_flows(&d, &f);
        let o = ours(&d);
        // 22 conns, ESTABLISHED or UDP, and a template (NONE or ASSURED) per conn of the 5 persistent services.
        assert_eq!(o.conns.len(), 22 + 10, "{:?}", o.conns);
        assert!(
            o.conns.iter().all(|c| ["ESTABLISHED", "UDP", "NONE", "ASSURED"].contains(&c.state.as_str())),
            "{:?}",
            o.conns
        );
        let counters = dest_counters(&o.listing);
        assert_eq!(counters.len(), 12, "{}", o.listing);
        assert_eq!(counters[&("TCP 10.0.2.100:443".into(), "10.1.0.5:443".into())], "1 2 2 0");
        assert_eq!(counters[&("UDP 10.0.2.100:500".into(), "10.1.0.6:500".into())], "1 2 0 2");
        let script = guest_flows_script(&f);
        assert_eq!(script.matches("send ").count(), 66);
        assert_eq!(script.matches("mark ").count(), 3 + 4 + 4);
        let c = compare_conns(&o.conns, &o.conns, 0.0, |_, _| Ok(0.0));
        assert_eq!((c.agree, c.total), (32, 32));
        assert_eq!(compare_counters(&o.listing, &o.listing, &[]).0, 12);
        let (agree, total, diffs) = compare_counters(&o.listing, &o.listing, &UNBOUND_ON_BACKUP);
        assert_eq!((agree, total), (11, 12));
        assert!(diffs[0].starts_with("FWM 2 10.1.0.8:8000: master 1 2 1 1, backup expected 1 0 0 0"), "{diffs:?}");
    }
}
