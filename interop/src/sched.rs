//! The scheduler differential test: random services and flows, run in the kernel, replayed through
//! [`ipvs_sched::replay`].
//!
//! [`generate`] makes, from a seed, one service per deterministic scheduler ([`SCHEDULERS`]; `twos` draws
//! from the kernel's RNG) plus a few more sh/mh services, each of a random kind (TCP, UDP or SCTP on
//! 10.0.2.100 or `[2001:db8::100]`, or an IPv4/IPv6 fwmark service whose flows go to a few random addresses),
//! with random scheduler flags and 2–20 real servers with random addresses, forwarding methods, weights and
//! upper/lower thresholds, added in random order; then flows from random clients (each with its own port)
//! to random services. [`Plan::config_script`] gives the kernel the rules as ipvsadm commands;
//! [`Plan::flows_script`] sends each flow's first packet (SYN, datagram or INIT) through the guest's
//! injector and prints `/proc/net/ip_vs_conn`. Nothing ever answers (the real servers are routed to a dummy
//! device), so every conn stays in its first state and counts as the kernel counts new conns.
//! [`Plan::picks_file`] writes what the kernel picked in the `sched-picks` format of
//! `testdata/kernel-6.1` — the rules as the commands given (`ipvsadm -S` loses the add order and the
//! thresholds), then one row per conn — which is what [`ipvs_sched::replay::replay`] reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipvs_proto::Protocol;

use crate::packet;
use crate::procfs::parse_conns;
use crate::rng::Rng;

/// Every scheduler whose picks depend only on its inputs.
pub const SCHEDULERS: [&str; 13] =
    ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "dh", "sh", "mh", "lblc", "lblcr"];

/// The virtual addresses of non-fwmark services.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The IPv6 virtual address.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// The kind of a virtual service.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Kind {
    /// `-t`, `-u` or `--sctp-service` on an address and port.
    Addr(Protocol, SocketAddr),
    /// `-f MARK`, `-6` when IPv6.
    Fwmark(u32, bool),
}

/// One virtual service of a plan.
#[derive(Clone, Debug)]
pub struct Service {
    /// What it is.
    pub kind: Kind,
    /// Its selector as the rules and rows write it (`-t 10.0.2.100:80`, `-f 101 -6`).
    pub selector: String,
    /// Its scheduler.
    pub scheduler: &'static str,
    /// Where its flows go: the VIP, or a few addresses for a fwmark service.
    pub packet_dsts: Vec<SocketAddr>,
    /// Its real servers, in the order they were added.
    pub dests: usize,
}

/// One new flow.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Index into [`Plan::services`].
    pub service: usize,
    /// Arrival order, from 1.
    pub seq: u64,
    /// The transport protocol of its packet.
    pub protocol: Protocol,
    /// The client (ports are unique across the plan).
    pub client: SocketAddr,
    /// The packet's destination.
    pub dst: SocketAddr,
    /// The packet's firewall mark (0 for address services).
    pub mark: u32,
}

/// A generated scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed it came from.
    pub seed: u64,
    /// The services, in rule order.
    pub services: Vec<Service>,
    /// The ipvsadm commands, in the order given (without the leading `ipvsadm`).
    pub commands: Vec<String>,
    /// The flows, in arrival order.
    pub flows: Vec<Flow>,
}

fn selector(kind: Kind) -> String {
    match kind {
        Kind::Addr(Protocol::Udp, a) => format!("-u {a}"),
        Kind::Addr(Protocol::Sctp, a) => format!("--sctp-service {a}"),
        Kind::Addr(_, a) => format!("-t {a}"),
        Kind::Fwmark(m, false) => format!("-f {m}"),
        Kind::Fwmark(m, true) => format!("-f {m} -6"),
    }
}

fn random_ip(rng: &mut Rng, v6: bool, v4_net: [u8; 2], v6_net: u16) -> IpAddr {
    if v6 {
        let a = u16::try_from(rng.range(0, 3)).expect("small");
        let b = u16::try_from(rng.range(1, 0xfffe)).expect("small");
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, v6_net, 0, 0, 0, a, b))
    } else {
        let c = u8::try_from(rng.range(0, 3)).expect("small");
        let d = u8::try_from(rng.range(1, 254)).expect("small");
        IpAddr::V4(Ipv4Addr::new(v4_net[0], v4_net[1], c, d))
    }
}

fn random_weight(rng: &mut Rng) -> u32 {
    match rng.weighted(&[10, 60, 20, 10]) {
        0 => 0,
        1 => rng.range_u32(1, 10),
        2 => rng.range_u32(11, 100),
        _ => rng.range_u32(101, 65535),
    }
}

fn random_flags(rng: &mut Rng, scheduler: &str) -> Option<String> {
    let names: &[&str] = match scheduler {
        "sh" => &["sh-fallback", "sh-port"],
        "mh" => &["mh-fallback", "mh-port"],
        _ if rng.chance(20) => &["flag-1", "flag-2", "flag-3"],
        _ => &[],
    };
    let chosen: Vec<&str> = names.iter().copied().filter(|_| rng.chance(50)).collect();
    (!chosen.is_empty()).then(|| chosen.join(","))
}

/// A plan of about `n_flows` flows (at least one per service) from `seed`.
pub fn generate(seed: u64, n_flows: usize) -> Plan {
    let mut rng = Rng::new(seed);
    let mut schedulers: Vec<&'static str> = SCHEDULERS.to_vec();
    // A second sh and mh, for more flag combinations; a third random one.
    schedulers.extend(["sh", "mh", *rng.pick(&SCHEDULERS)]);
    rng.shuffle(&mut schedulers);
    let mut services = Vec::new();
    let mut commands = Vec::new();
    for (i, scheduler) in schedulers.into_iter().enumerate() {
        let i16 = u16::try_from(i).expect("few services");
        let i32 = u32::from(i16);
        // dh, lblc and lblcr hash the destination address: a fwmark service gives them several.
        let kind_weights: &[u64] =
            if matches!(scheduler, "dh" | "lblc" | "lblcr") { &[1, 1, 0, 1, 0, 5, 2] } else { &[4, 2, 1, 1, 1, 2, 1] };
        let port = 80 + i16;
        let kind = match rng.weighted(kind_weights) {
            0 => Kind::Addr(Protocol::Tcp, SocketAddr::new(IpAddr::V4(VIP4), port)),
            1 => Kind::Addr(Protocol::Udp, SocketAddr::new(IpAddr::V4(VIP4), port)),
            2 => Kind::Addr(Protocol::Sctp, SocketAddr::new(IpAddr::V4(VIP4), port)),
            3 => Kind::Addr(Protocol::Tcp, SocketAddr::new(IpAddr::V6(VIP6), port)),
            4 => Kind::Addr(Protocol::Udp, SocketAddr::new(IpAddr::V6(VIP6), port)),
            5 => Kind::Fwmark(100 + i32, false),
            _ => Kind::Fwmark(100 + i32, true),
        };
        let v6 = match kind {
            Kind::Addr(_, a) => a.is_ipv6(),
            Kind::Fwmark(_, v6) => v6,
        };
        let packet_dsts = match kind {
            Kind::Addr(_, a) => vec![a],
            Kind::Fwmark(..) => {
                let n = rng.range(1, 6);
                let mut v: Vec<SocketAddr> = Vec::new();
                while (v.len() as u64) < n {
                    let a = SocketAddr::new(random_ip(&mut rng, v6, [10, 50], 0x50), *rng.pick(&[80, 443, 8080]));
                    if !v.iter().any(|x| x.ip() == a.ip()) {
                        v.push(a);
                    }
                }
                v
            }
        };
        let sel = selector(kind);
        let mut cmd = format!("-A {sel} -s {scheduler}");
        if let Some(flags) = random_flags(&mut rng, scheduler) {
            let _ = write!(cmd, " -b {flags}");
        }
        commands.push(cmd);
        let n_dests = usize::try_from(rng.range(2, 20)).expect("small");
        let mut addrs: Vec<IpAddr> = Vec::new();
        while addrs.len() < n_dests {
            let a = random_ip(&mut rng, v6, [10, 1], 1);
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs.sort_unstable();
        rng.shuffle(&mut addrs);
        for ip in addrs {
            let fwmark = matches!(kind, Kind::Fwmark(..));
            let (method, port) = match rng.weighted(&[5, 3, 2]) {
                0 if !fwmark || rng.chance(30) => ("-m", rng.range_u32(8000, 8099)),
                0 | 1 => ("-g", 0),
                _ => ("-i", 0),
            };
            // -g/-i dests of an address service take the service's port anyway (ipvsadm).
            let port = if method == "-m" || fwmark { port } else { u32::from(80 + i16) };
            let port = u16::try_from(port).expect("port");
            let mut cmd = format!("-a {sel} -r {} {method} -w {}", SocketAddr::new(ip, port), random_weight(&mut rng));
            if rng.chance(40) {
                let upper = rng.range_u32(1, 8);
                let _ = write!(cmd, " -x {upper}");
                if rng.chance(50) {
                    let _ = write!(cmd, " -y {}", rng.range_u32(1, upper));
                }
            }
            commands.push(cmd);
        }
        services.push(Service { kind, selector: sel, scheduler, packet_dsts, dests: n_dests });
    }
    let clients4: Vec<IpAddr> = (0..50).map(|_| random_ip(&mut rng, false, [10, 9], 9)).collect();
    let clients6: Vec<IpAddr> = (0..50).map(|_| random_ip(&mut rng, true, [10, 9], 9)).collect();
    let n_flows = n_flows.max(services.len());
    let mut flows = Vec::with_capacity(n_flows);
    for i in 0..n_flows {
        // Every service gets a flow first, then random ones.
        let service = if i < services.len() {
            i
        } else {
            usize::try_from(rng.range(0, services.len() as u64 - 1)).expect("index")
        };
        let svc = &services[service];
        let (protocol, mark, v6) = match svc.kind {
            Kind::Addr(p, a) => (p, 0, a.is_ipv6()),
            Kind::Fwmark(m, v6) => (if rng.chance(70) { Protocol::Tcp } else { Protocol::Udp }, m, v6),
        };
        let ip = *rng.pick(if v6 { &clients6 } else { &clients4 });
        let port = 20000 + u16::try_from(i).expect("fewer than 45000 flows");
        let dst = *rng.pick(&svc.packet_dsts);
        flows.push(Flow { service, seq: i as u64 + 1, protocol, client: SocketAddr::new(ip, port), dst, mark });
    }
    flows.sort_by_key(|f| f.seq);
    Plan { seed, services, commands, flows }
}

/// What the kernel did with a plan's flows.
#[derive(Clone, Debug)]
pub struct Picks {
    /// The `sched-picks` file.
    pub file: String,
    /// Rows written (flows the kernel scheduled).
    pub rows: usize,
    /// Flows without a conn, per scheduler.
    pub refused: BTreeMap<&'static str, usize>,
}

impl Plan {
    /// The guest script that gives the kernel the commands, in order, through `ipvsadm -R` (and routes every real server and packet destination to the
    /// dummy device).
    pub fn config_script(&self) -> String {
        let mut s = String::from(
            "set -e\nip link set dummy0 up\nip route add 10.0.0.0/8 dev dummy0\n\
             ip -6 route add 2001:db8::/32 dev dummy0\n",
        );
        s.push_str("ipvsadm -R <<'RULES'\n");
        for c in &self.commands {
            let _ = writeln!(s, "{c}");
        }
        s.push_str("RULES\n");
        s
    }

    /// The guest script that sends the flows and prints `/proc/net/ip_vs_conn`.
    pub fn flows_script(&self) -> String {
        let mut s = String::from("set -e\nipvs-guest <<'PLAN'\n");
        let mut mark = 0;
        for (i, f) in self.flows.iter().enumerate() {
            if f.mark != mark {
                mark = f.mark;
                let _ = writeln!(s, "mark {mark}");
            }
            let ident = u16::try_from(i & 0xffff).expect("masked");
            let _ = writeln!(s, "send {}", packet::hex(&packet::first_packet(f.protocol, f.client, f.dst, ident)));
        }
        s.push_str("PLAN\ncat /proc/net/ip_vs_conn\n");
        s
    }

    /// The `sched-picks` file for the conns in `proc_conn` (the text of `/proc/net/ip_vs_conn`).
    pub fn picks_file(&self, proc_conn: &str, release: &str) -> Picks {
        let conns: BTreeMap<SocketAddr, _> = parse_conns(proc_conn).into_iter().map(|c| (c.from, c)).collect();
        let mut file = format!(
            "# ipvs-interop scheduler differential: seed {}, kernel {release}, {} flows\n\
             # rules (the commands given to the kernel, in order)\n",
            self.seed,
            self.flows.len()
        );
        for c in &self.commands {
            file.push_str(c);
            file.push('\n');
        }
        file.push_str("# picks: service\tseq\tclient\tcport\tpacket_dst\tpicked_dest\tstate\n");
        let mut rows = 0;
        let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
        for f in &self.flows {
            let svc = &self.services[f.service];
            let Some(c) = conns.get(&f.client) else {
                *refused.entry(svc.scheduler).or_default() += 1;
                continue;
            };
            rows += 1;
            let _ = writeln!(
                file,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                svc.selector,
                f.seq,
                f.client.ip(),
                f.client.port(),
                c.to,
                c.dest,
                c.state
            );
        }
        Picks { file, rows, refused }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_reproducible_and_complete() {
        let a = generate(42, 300);
        let b = generate(42, 300);
        assert_eq!(a.commands, b.commands);
        assert_eq!(a.flows.len(), 300);
        for s in SCHEDULERS {
            assert!(a.services.iter().any(|x| x.scheduler == s), "{s}");
        }
        for (i, svc) in a.services.iter().enumerate() {
            assert!((2..=20).contains(&svc.dests));
            assert!(a.flows.iter().any(|f| f.service == i));
        }
        let mut ports: Vec<u16> = a.flows.iter().map(|f| f.client.port()).collect();
        ports.dedup();
        assert_eq!(ports.len(), 300);
    }

    #[test]
    fn the_rules_replay_and_a_fake_kernel_file_is_read() {
        let plan = generate(7, 40);
        // Our own picks, written as the kernel would list them, must replay without a parse error.
        let text = plan.picks_file("", "test");
        assert_eq!(text.rows, 0);
        assert_eq!(text.refused.values().sum::<usize>(), 40);
        let report = ipvs_sched::replay::replay(&text.file).expect("the rules parse");
        assert_eq!(report.total, 0);
        let f = &plan.flows[0];
        let proc_line = format!(
            "{} {} {:04X} {} {:04X} {} {:04X} SYN_RECV 59\n",
            crate::procfs::protocol_text(f.protocol),
            crate::procfs::ip_text(f.client.ip()),
            f.client.port(),
            crate::procfs::ip_text(f.dst.ip()),
            f.dst.port(),
            crate::procfs::ip_text(f.dst.ip()),
            f.dst.port()
        );
        let picks = plan.picks_file(&proc_line, "test");
        assert_eq!(picks.rows, 1);
        assert!(picks.file.lines().last().unwrap().starts_with(&plan.services[f.service].selector));
    }
}
