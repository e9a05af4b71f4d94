//! The scheduler differential test: random services and flows, run in the kernel, replayed through
//! ipvs-sched (plain services) and through an [`ipvs_core::Engine`] (persistent services, [`crate::persist`]).
//!
//! [`generate`] makes, from a seed, one service per deterministic scheduler ([`SCHEDULERS`]; `twos` draws
//! from the kernel's RNG) plus a few more sh/mh services, each of a random kind (TCP, UDP or SCTP on
//! 10.0.2.100 or `[2001:db8::100]`, or an IPv4/IPv6 fwmark service whose flows go to a few random addresses),
//! with random scheduler flags and 2–20 real servers with random addresses, forwarding methods, weights and
//! upper/lower thresholds, added in random order; then flows from random clients (each with its own port)
//! to random services. Three of those services (and two persistent ones) are *tight*: 2–4 real servers, each
//! with an upper threshold of 1–2 conns, so the kernel soon refuses their flows (a tight persistent service
//! has no `-M`: one template per client address). It adds [`PERSISTENT_SERVICES`] persistent services (`-p`, half of them with `-M`: an
//! IPv4 netmask or an IPv6 prefix length) of random schedulers and kinds — also port-0 services, which pin
//! every port of a client — whose flows come from a small pool of clients in a few neighbouring networks
//! ([`client_pool`]), several flows per client on different ports, so templates decide most picks. The
//! persistence timeouts (≥ 360 s) outlast the run: no template expires.
//!
//! [`Plan::config_script`] gives the kernel the rules as ipvsadm commands; [`Plan::flows_script`] sends each
//! flow's first packet (SYN, datagram or INIT) through the guest's injector and prints
//! `/proc/net/ip_vs_conn` ([`KernelRun::parse`]). Nothing ever answers (the real servers are routed to a
//! dummy device), so every conn stays in its first state and counts as the kernel counts new conns.
//!
//! [`Plan::replay_sched`] replays the plain services through ipvs-sched's public API, flow by flow in `seq`
//! order: our scheduler must pick the kernel's real server for every flow the kernel scheduled, and find none
//! for every flow it **refused** (no conn: every real server quiescent, overloaded or otherwise ineligible);
//! then, as [`ipvs_sched::replay`] does, the kernel's pick is charged, so one disagreement does not cascade.
//!
//! [`Plan::picks_files`] writes what the kernel did in the `sched-picks` format of `testdata/kernel-6.1` (the
//! rules as the commands given — `ipvsadm -S` loses the add order and the thresholds — then one row per
//! conn), which [`ipvs_sched::replay::replay`] reads: one file for the plain services, one for the
//! persistent ones. Two extensions, both comment lines to that reader:
//!
//! - `#refused<TAB>service<TAB>seq<TAB>client<TAB>cport<TAB>packet_dst`: a flow the kernel refused;
//! - `#template<TAB>protocol<TAB>client_net:0<TAB>virtual<TAB>dest<TAB>state`: a persistence template as
//!   `/proc/net/ip_vs_conn` listed it (persistent file only; a fwmark template's virtual address holds the
//!   mark, as the kernel shows it, and its protocol is `IP`).
//!
//! The persistent file's rules carry `-p`/`-M`, which `ipvs_sched::replay` refuses (templates change the
//! picks): it is replayed through an engine, from the plan ([`crate::persist`]).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use ipvs_proto::{DestId, Instant, Protocol, ServiceFlags};
use ipvs_sched::{new_scheduler, CounterChange, DestEvent, DestState, DestView, SchedConfig, SchedFlow};

use crate::packet;
use crate::procfs::{parse_conns, ProcConn};
use crate::rng::Rng;

/// Every scheduler whose picks depend only on its inputs.
pub const SCHEDULERS: [&str; 13] =
    ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "dh", "sh", "mh", "lblc", "lblcr"];

/// The virtual addresses of non-fwmark services.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The IPv6 virtual address.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// How many persistent services a plan has.
pub const PERSISTENT_SERVICES: usize = 8;

/// The kind of a virtual service.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Kind {
    /// `-t`, `-u` or `--sctp-service` on an address and port (port 0: a persistent service for every port).
    Addr(Protocol, SocketAddr),
    /// `-f MARK`, `-6` when IPv6.
    Fwmark(u32, bool),
}

impl Kind {
    fn is_ipv6(self) -> bool {
        match self {
            Self::Addr(_, a) => a.is_ipv6(),
            Self::Fwmark(_, v6) => v6,
        }
    }
}

/// One real server of a plan's service, as added.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Dest {
    /// Its address and port as the kernel keeps it (a `-g`/`-i` server of an address service has the
    /// service's port; 0 for a fwmark server without one).
    pub addr: SocketAddr,
    /// `-w`.
    pub weight: u32,
    /// `-x` (0 = none).
    pub u_threshold: u32,
    /// `-y` (0 = the default).
    pub l_threshold: u32,
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
    /// Its `-b` flags.
    pub flags: ServiceFlags,
    /// Its persistence options as given (`-p 900 -M 255.255.255.0`), or `None`.
    pub persistence: Option<String>,
    /// Where its flows go: the VIP (a few ports of it for a port-0 service), or a few addresses for a
    /// fwmark service.
    pub packet_dsts: Vec<SocketAddr>,
    /// Its real servers, in the order they were added.
    pub dests: Vec<Dest>,
    /// Its commands: `-A`, then one `-a` per real server ([`Plan::commands`]).
    pub commands: Range<usize>,
}

impl Service {
    /// Whether it is persistent.
    pub fn is_persistent(&self) -> bool {
        self.persistence.is_some()
    }
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

impl Flow {
    /// Its first packet, as the guest sends it (and [`crate::persist`] hands it to an engine).
    pub fn packet(&self) -> Vec<u8> {
        let ident = u16::try_from((self.seq - 1) & 0xffff).expect("masked");
        packet::first_packet(self.protocol, self.client, self.dst, ident)
    }
}

/// A generated scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed it came from.
    pub seed: u64,
    /// The services, in rule order: the plain ones, then the persistent ones.
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

/// Random `-b` flags: the list as given and the service flags it sets.
fn random_flags(rng: &mut Rng, scheduler: &str) -> Option<(String, ServiceFlags)> {
    let names: &[&str] = match scheduler {
        "sh" => &["sh-fallback", "sh-port"],
        "mh" => &["mh-fallback", "mh-port"],
        _ if rng.chance(20) => &["flag-1", "flag-2", "flag-3"],
        _ => &[],
    };
    let chosen: Vec<&str> = names.iter().copied().filter(|_| rng.chance(50)).collect();
    let mut flags = ServiceFlags::EMPTY;
    for name in &chosen {
        flags |= match *name {
            "flag-1" | "sh-fallback" | "mh-fallback" => ServiceFlags::SCHED1,
            "flag-2" | "sh-port" | "mh-port" => ServiceFlags::SCHED2,
            _ => ServiceFlags::SCHED3,
        };
    }
    (!chosen.is_empty()).then(|| (chosen.join(","), flags))
}

/// Random persistence options for a service of family `v6`: `-p` (bare: 360 s) or `-p SECS`, sometimes
/// `-M` (an IPv4 netmask, an IPv6 prefix length; never for a `tight` service). Every timeout outlasts a run.
fn random_persistence(rng: &mut Rng, v6: bool, tight: bool) -> String {
    let mask = (!tight && rng.chance(50)).then(|| {
        if v6 {
            rng.pick(&["124", "120", "112", "64"]).to_string()
        } else {
            rng.pick(&["255.255.255.0", "255.255.255.128", "255.255.255.240", "255.255.0.0"]).to_string()
        }
    });
    match mask {
        None if rng.chance(25) => "-p".to_string(),
        None => format!("-p {}", rng.range(600, 3600)),
        Some(m) => format!("-p {} -M {m}", rng.range(600, 3600)),
    }
}

/// Adds a service of `kind` with random flags and real servers. A `tight` one has 2–4 real servers, each
/// with an upper threshold of 1–2 conns: its flows soon overload them all, and the kernel refuses the rest
/// (but for a persistent service, not those of a client network that has a template).
fn add_service(
    rng: &mut Rng,
    plan: &mut Plan,
    scheduler: &'static str,
    kind: Kind,
    persistence: Option<String>,
    tight: bool,
) {
    let v6 = kind.is_ipv6();
    let packet_dsts = match kind {
        Kind::Addr(_, a) if a.port() != 0 => vec![a],
        Kind::Addr(_, a) => {
            let n = rng.range(2, 4);
            let mut v: Vec<SocketAddr> = Vec::new();
            while (v.len() as u64) < n {
                let d = SocketAddr::new(a.ip(), *rng.pick(&[25, 80, 443, 5060, 8080]));
                if !v.contains(&d) {
                    v.push(d);
                }
            }
            v
        }
        Kind::Fwmark(..) => {
            let n = rng.range(1, 6);
            let mut v: Vec<SocketAddr> = Vec::new();
            while (v.len() as u64) < n {
                let a = SocketAddr::new(random_ip(rng, v6, [10, 50], 0x50), *rng.pick(&[80, 443, 8080]));
                if !v.iter().any(|x| x.ip() == a.ip()) {
                    v.push(a);
                }
            }
            v
        }
    };
    let sel = selector(kind);
    let first_command = plan.commands.len();
    let mut cmd = format!("-A {sel} -s {scheduler}");
    let mut flags = ServiceFlags::EMPTY;
    if let Some((list, f)) = random_flags(rng, scheduler) {
        let _ = write!(cmd, " -b {list}");
        flags = f;
    }
    if let Some(p) = &persistence {
        let _ = write!(cmd, " {p}");
    }
    plan.commands.push(cmd);
    let n_dests = usize::try_from(if tight { rng.range(2, 4) } else { rng.range(2, 20) }).expect("small");
    let mut addrs: Vec<IpAddr> = Vec::new();
    while addrs.len() < n_dests {
        let a = random_ip(rng, v6, [10, 1], 1);
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    addrs.sort_unstable();
    rng.shuffle(&mut addrs);
    let mut dests = Vec::with_capacity(n_dests);
    for ip in addrs {
        let (fwmark, svc_port) = match kind {
            Kind::Addr(_, a) => (false, a.port()),
            Kind::Fwmark(..) => (true, 0),
        };
        let (method, port) = match rng.weighted(&[5, 3, 2]) {
            0 if !fwmark || rng.chance(30) => ("-m", u16::try_from(rng.range(8000, 8099)).expect("port")),
            0 | 1 => ("-g", 0),
            _ => ("-i", 0),
        };
        // -g/-i dests of an address service take the service's port anyway (ipvsadm).
        let port = if method == "-m" || fwmark { port } else { svc_port };
        let addr = SocketAddr::new(ip, port);
        let weight = random_weight(rng);
        let mut cmd = format!("-a {sel} -r {addr} {method} -w {weight}");
        let (mut u_threshold, mut l_threshold) = (0, 0);
        if tight {
            u_threshold = rng.range_u32(1, 2);
            let _ = write!(cmd, " -x {u_threshold}");
        } else if rng.chance(40) {
            u_threshold = rng.range_u32(1, 8);
            let _ = write!(cmd, " -x {u_threshold}");
            if rng.chance(50) {
                l_threshold = rng.range_u32(1, u_threshold);
                let _ = write!(cmd, " -y {l_threshold}");
            }
        }
        plan.commands.push(cmd);
        dests.push(Dest { addr, weight, u_threshold, l_threshold });
    }
    let commands = first_command..plan.commands.len();
    plan.services.push(Service { kind, selector: sel, scheduler, flags, persistence, packet_dsts, dests, commands });
}

/// The clients of the persistent services: three networks of five neighbours each (IPv4: a few addresses
/// apart in `10.9.16.0/24`, `10.9.17.0/24`, `10.9.18.0/24`; IPv6: a few hundred apart in
/// `2001:db8:9:10::/64` and the next two), so that netmasks and prefixes group some of them.
pub fn client_pool(rng: &mut Rng, v6: bool) -> Vec<IpAddr> {
    let mut pool = Vec::new();
    for site in 0..3u8 {
        if v6 {
            let a = u16::try_from(rng.range(0, 1)).expect("small");
            let first = rng.range(1, 0xf000);
            for n in 0..5 {
                let b = u16::try_from(first + n * rng.range(1, 200)).expect("below 0xffff");
                let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 9, 0x10 + u16::from(site), 0, 0, a, b));
                if !pool.contains(&ip) {
                    pool.push(ip);
                }
            }
        } else {
            let first = rng.range(1, 150);
            for n in 0..5 {
                let d = u8::try_from(first + n * rng.range(1, 20)).expect("below 255");
                let ip = IpAddr::V4(Ipv4Addr::new(10, 9, 16 + site, d));
                if !pool.contains(&ip) {
                    pool.push(ip);
                }
            }
        }
    }
    pool
}

/// A plan of `n_flows` flows to its plain services and `n_persistent_flows` to its persistent ones (at least
/// one per service) from `seed`.
pub fn generate(seed: u64, n_flows: usize, n_persistent_flows: usize) -> Plan {
    let mut rng = Rng::new(seed);
    let mut plan = Plan { seed, services: Vec::new(), commands: Vec::new(), flows: Vec::new() };
    let mut schedulers: Vec<&'static str> = SCHEDULERS.to_vec();
    // A second sh and mh, for more flag combinations; a third random one.
    schedulers.extend(["sh", "mh", *rng.pick(&SCHEDULERS)]);
    rng.shuffle(&mut schedulers);
    // A few tight services of each sort, so that some flows are refused.
    let (last_plain, last_persistent) = (schedulers.len() as u64 - 1, PERSISTENT_SERVICES as u64 - 1);
    let tight_plain = [rng.range(0, last_plain), rng.range(0, last_plain), rng.range(0, last_plain)];
    let tight_persistent = [rng.range(0, last_persistent), rng.range(0, last_persistent)];
    for (i, scheduler) in schedulers.into_iter().enumerate() {
        let i16 = u16::try_from(i).expect("few services");
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
            5 => Kind::Fwmark(100 + u32::from(i16), false),
            _ => Kind::Fwmark(100 + u32::from(i16), true),
        };
        add_service(&mut rng, &mut plan, scheduler, kind, None, tight_plain.contains(&(i as u64)));
    }
    let n_plain = plan.services.len();
    let mut persistent: Vec<&'static str> = SCHEDULERS.to_vec();
    rng.shuffle(&mut persistent);
    for (j, scheduler) in persistent.into_iter().take(PERSISTENT_SERVICES).enumerate() {
        let i16 = u16::try_from(n_plain + j).expect("few services");
        let j8 = u8::try_from(j).expect("few services");
        let (port, mark) = (80 + i16, 100 + u32::from(i16));
        // Port-0 services get an address of their own (10.0.2.110 + j): they take every port of it.
        let p0_v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 110 + j8));
        let p0_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x110 + u16::from(j8)));
        let kind = match rng.weighted(&[3, 2, 1, 2, 1, 2, 1, 1, 1]) {
            0 => Kind::Addr(Protocol::Tcp, SocketAddr::new(IpAddr::V4(VIP4), port)),
            1 => Kind::Addr(Protocol::Udp, SocketAddr::new(IpAddr::V4(VIP4), port)),
            2 => Kind::Addr(Protocol::Sctp, SocketAddr::new(IpAddr::V4(VIP4), port)),
            3 => Kind::Addr(Protocol::Tcp, SocketAddr::new(IpAddr::V6(VIP6), port)),
            4 => Kind::Addr(Protocol::Udp, SocketAddr::new(IpAddr::V6(VIP6), port)),
            5 => Kind::Fwmark(mark, false),
            6 => Kind::Fwmark(mark, true),
            7 => Kind::Addr(Protocol::Tcp, SocketAddr::new(p0_v4, 0)),
            _ => Kind::Addr(Protocol::Udp, SocketAddr::new(p0_v6, 0)),
        };
        let tight = tight_persistent.contains(&(j as u64));
        let persistence = random_persistence(&mut rng, kind.is_ipv6(), tight);
        add_service(&mut rng, &mut plan, scheduler, kind, Some(persistence), tight);
    }

    let clients4: Vec<IpAddr> = (0..50).map(|_| random_ip(&mut rng, false, [10, 9], 9)).collect();
    let clients6: Vec<IpAddr> = (0..50).map(|_| random_ip(&mut rng, true, [10, 9], 9)).collect();
    let pool4 = client_pool(&mut rng, false);
    let pool6 = client_pool(&mut rng, true);
    let n_flows = n_flows.max(n_plain);
    let n_persistent_flows = n_persistent_flows.max(plan.services.len() - n_plain);
    for i in 0..n_flows + n_persistent_flows {
        // Every service gets a flow first, then random ones.
        let (range, k) = if i < n_flows { (0..n_plain, i) } else { (n_plain..plan.services.len(), i - n_flows) };
        let service = if k < range.len() {
            range.start + k
        } else {
            usize::try_from(rng.range(range.start as u64, range.end as u64 - 1)).expect("index")
        };
        let svc = &plan.services[service];
        let (protocol, mark) = match svc.kind {
            Kind::Addr(p, _) => (p, 0),
            Kind::Fwmark(m, _) => (if rng.chance(70) { Protocol::Tcp } else { Protocol::Udp }, m),
        };
        let v6 = svc.kind.is_ipv6();
        let clients = match (svc.is_persistent(), v6) {
            (false, false) => &clients4,
            (false, true) => &clients6,
            (true, false) => &pool4,
            (true, true) => &pool6,
        };
        let ip = *rng.pick(clients);
        let port = 20000 + u16::try_from(i).expect("fewer than 45000 flows");
        let dst = *rng.pick(&svc.packet_dsts);
        let seq = i as u64 + 1;
        plan.flows.push(Flow { service, seq, protocol, client: SocketAddr::new(ip, port), dst, mark });
    }
    plan
}

/// What the kernel made of a plan's flows: `/proc/net/ip_vs_conn`, read back.
#[derive(Clone, Debug, Default)]
pub struct KernelRun {
    /// Conns by client address and port (every flow has a port of its own).
    pub conns: BTreeMap<SocketAddr, ProcConn>,
    /// Persistence templates (client port 0).
    pub templates: Vec<ProcConn>,
}

impl KernelRun {
    /// The conns and templates of `proc_conn` (the text of `/proc/net/ip_vs_conn`).
    pub fn parse(proc_conn: &str) -> Self {
        let mut run = Self::default();
        for c in parse_conns(proc_conn) {
            if c.from.port() == 0 {
                run.templates.push(c);
            } else {
                run.conns.insert(c.from, c);
            }
        }
        run
    }
}

/// The `sched-picks` files of a run.
#[derive(Clone, Debug)]
pub struct Picks {
    /// The plain services' file, which [`ipvs_sched::replay::replay`] reads.
    pub file: String,
    /// The persistent services' file (same format; rules with `-p`/`-M`, `#template` lines).
    pub persistent_file: String,
    /// Rows written in `file` (flows of plain services the kernel scheduled).
    pub rows: usize,
    /// Flows of plain services without a conn, per scheduler.
    pub refused: BTreeMap<&'static str, usize>,
}

/// A count of comparisons: how many agreed of how many.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Tally {
    /// Agreements.
    pub agree: usize,
    /// Comparisons.
    pub total: usize,
}

impl Tally {
    /// Counts one comparison.
    pub fn count(&mut self, agree: bool) {
        self.total += 1;
        self.agree += usize::from(agree);
    }

    /// Whether every comparison agreed.
    pub fn all_agree(&self) -> bool {
        self.agree == self.total
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.agree, self.total)
    }
}

/// One service's counts.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct ServiceTally {
    /// Index into [`Plan::services`].
    pub service: usize,
    /// Flows the kernel scheduled: ours picked the same real server.
    pub picks: Tally,
    /// Flows the kernel refused: ours refused too.
    pub refusals: Tally,
}

/// The outcome of a replay against the kernel.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Flows the kernel scheduled.
    pub picks: Tally,
    /// Flows the kernel refused.
    pub refusals: Tally,
    /// Persistence templates (persistent services only; the kernel's and ours as listed at the end).
    pub templates: Tally,
    /// Per service replayed, in rule order.
    pub per_service: Vec<ServiceTally>,
    /// What differed, one line each.
    pub differences: Vec<String>,
}

impl Comparison {
    /// Whether everything agreed.
    pub fn all_agree(&self) -> bool {
        self.picks.all_agree() && self.refusals.all_agree() && self.templates.all_agree() && self.differences.is_empty()
    }

    /// Compares what ours did with a flow (`None`: refused) with what the kernel did.
    pub(crate) fn flow(
        &mut self,
        plan: &Plan,
        f: &Flow,
        tally: &mut ServiceTally,
        kernel: Option<SocketAddr>,
        ours: Option<SocketAddr>,
    ) {
        let agree = kernel == ours;
        match kernel {
            Some(_) => {
                self.picks.count(agree);
                tally.picks.count(agree);
            }
            None => {
                self.refusals.count(agree);
                tally.refusals.count(agree);
            }
        }
        if !agree {
            let show = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_string(), |a| a.to_string());
            self.differences.push(format!(
                "seq {} {} ({}): client {} → {}: kernel {} ours {}",
                f.seq,
                plan.services[f.service].selector,
                plan.services[f.service].scheduler,
                f.client,
                f.dst,
                show(kernel),
                show(ours)
            ));
        }
    }
}

/// Whether the kernel counts a conn in this state as active (as [`ipvs_sched::replay`] reads the rows).
fn is_active(state: &str) -> bool {
    matches!(state, "ESTABLISHED" | "SYN_SENT" | "SYN_RECV" | "SYNACK")
}

fn views(dests: &[(DestId, SocketAddr, DestState)]) -> Vec<DestView> {
    dests.iter().map(|(id, addr, state)| state.view(*id, *addr)).collect()
}

impl Plan {
    /// The guest script that gives the kernel the commands, in order, through `ipvsadm -R` (and routes every
    /// real server and packet destination to the dummy device).
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
        for f in &self.flows {
            if f.mark != mark {
                mark = f.mark;
                let _ = writeln!(s, "mark {mark}");
            }
            let _ = writeln!(s, "send {}", packet::hex(&f.packet()));
        }
        s.push_str("PLAN\ncat /proc/net/ip_vs_conn\n");
        s
    }

    /// The flows of plain (`persistent` false) or persistent services, in arrival order.
    pub fn flows_of(&self, persistent: bool) -> impl Iterator<Item = &Flow> {
        self.flows.iter().filter(move |f| self.services[f.service].is_persistent() == persistent)
    }

    /// The `sched-picks` files for what the kernel did.
    pub fn picks_files(&self, kernel: &KernelRun, release: &str) -> Picks {
        let (file, rows, refused) = self.picks_file(kernel, release, false);
        let (persistent_file, ..) = self.picks_file(kernel, release, true);
        Picks { file, persistent_file, rows, refused }
    }

    fn picks_file(
        &self,
        kernel: &KernelRun,
        release: &str,
        persistent: bool,
    ) -> (String, usize, BTreeMap<&'static str, usize>) {
        let mut file = format!(
            "# ipvs-interop scheduler differential{}: seed {}, kernel {release}, {} flows\n\
             # rules (the commands given to the kernel, in order)\n",
            if persistent { " (persistent services)" } else { "" },
            self.seed,
            self.flows_of(persistent).count()
        );
        for svc in self.services.iter().filter(|s| s.is_persistent() == persistent) {
            for c in &self.commands[svc.commands.clone()] {
                file.push_str(c);
                file.push('\n');
            }
        }
        file.push_str(
            "# picks: service\tseq\tclient\tcport\tpacket_dst\tpicked_dest\tstate\n\
             # flows the kernel refused (no conn): #refused\tservice\tseq\tclient\tcport\tpacket_dst\n",
        );
        let mut rows = 0;
        let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
        for f in self.flows_of(persistent) {
            let svc = &self.services[f.service];
            let (ip, port) = (f.client.ip(), f.client.port());
            let Some(c) = kernel.conns.get(&f.client) else {
                *refused.entry(svc.scheduler).or_default() += 1;
                let _ = writeln!(file, "#refused\t{}\t{}\t{ip}\t{port}\t{}", svc.selector, f.seq, f.dst);
                continue;
            };
            rows += 1;
            let _ = writeln!(file, "{}\t{}\t{ip}\t{port}\t{}\t{}\t{}", svc.selector, f.seq, c.to, c.dest, c.state);
        }
        if persistent {
            file.push_str("# templates: #template\tprotocol\tclient_net:0\tvirtual\tdest\tstate\n");
            for t in &kernel.templates {
                let _ = writeln!(file, "#template\t{}\t{}\t{}\t{}\t{}", t.protocol, t.from, t.to, t.dest, t.state);
            }
        }
        (file, rows, refused)
    }

    /// Replays the plain services' flows through ipvs-sched (see the module docs): every pick and every
    /// refusal compared with the kernel's.
    pub fn replay_sched(&self, kernel: &KernelRun) -> Comparison {
        let mut cmp = Comparison::default();
        for (si, svc) in self.services.iter().enumerate().filter(|(_, s)| !s.is_persistent()) {
            let config = SchedConfig { flags: svc.flags, ..SchedConfig::default() };
            let mut sched = new_scheduler(svc.scheduler, &config).expect("SCHEDULERS are known to ipvs-sched");
            sched.bind(&[]);
            // Kernel list order: each new server at the head.
            let mut dests: Vec<(DestId, SocketAddr, DestState)> = Vec::new();
            for (n, d) in svc.dests.iter().enumerate() {
                let state = DestState::new(d.weight, d.u_threshold, d.l_threshold).expect("generated with l ≤ u");
                dests.insert(0, (DestId(u32::try_from(n).expect("few")), d.addr, state));
                sched.dests_changed(&views(&dests), DestEvent::Added { index: 0 });
            }
            let mut tally = ServiceTally { service: si, ..ServiceTally::default() };
            for f in self.flows.iter().filter(|f| f.service == si) {
                let v = views(&dests);
                let flow = SchedFlow { protocol: f.protocol, client: f.client, virt: f.dst, fwmark: f.mark };
                let now = Instant::from_millis(f.seq * ipvs_sched::replay::MILLIS_PER_SEQ);
                // A port-0 (fwmark) server is shown with the packet's port, as the kernel's conn has it.
                let shown = |a: SocketAddr| if a.port() == 0 { SocketAddr::new(a.ip(), f.dst.port()) } else { a };
                let ours = sched.schedule(now, &flow, &v).and_then(|i| v.get(i)).map(|d| shown(d.addr));
                let kernel_conn = kernel.conns.get(&f.client);
                cmp.flow(self, f, &mut tally, kernel_conn.map(|c| c.dest), ours);
                // Charge the kernel's pick.
                let Some(c) = kernel_conn else { continue };
                let Some(index) = v.iter().position(|d| shown(d.addr) == c.dest) else {
                    cmp.differences.push(format!("seq {}: the kernel's pick {} is not a real server", f.seq, c.dest));
                    continue;
                };
                dests[index].2.bind_conn(is_active(&c.state));
                sched.counters_changed(&views(&dests), CounterChange { index });
            }
            cmp.per_service.push(tally);
        }
        cmp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_line(f: &Flow, dest: SocketAddr, state: &str) -> String {
        format!(
            "{} {} {:04X} {} {:04X} {} {:04X} {state} 59\n",
            crate::procfs::protocol_text(f.protocol),
            crate::procfs::ip_text(f.client.ip()),
            f.client.port(),
            crate::procfs::ip_text(f.dst.ip()),
            f.dst.port(),
            crate::procfs::ip_text(dest.ip()),
            dest.port()
        )
    }

    #[test]
    fn plans_are_reproducible_and_complete() {
        let a = generate(42, 300, 100);
        let b = generate(42, 300, 100);
        assert_eq!(a.commands, b.commands);
        assert_eq!(a.flows.len(), 400);
        assert_eq!(a.flows_of(true).count(), 100);
        for s in SCHEDULERS {
            assert!(a.services.iter().any(|x| x.scheduler == s && !x.is_persistent()), "{s}");
        }
        assert_eq!(a.services.iter().filter(|s| s.is_persistent()).count(), PERSISTENT_SERVICES);
        for (i, svc) in a.services.iter().enumerate() {
            assert!((2..=20).contains(&svc.dests.len()));
            assert_eq!(svc.commands.len(), svc.dests.len() + 1);
            assert!(a.commands[svc.commands.start].starts_with(&format!("-A {} ", svc.selector)));
            assert_eq!(svc.is_persistent(), a.commands[svc.commands.start].contains(" -p"));
            assert!(a.flows.iter().any(|f| f.service == i));
        }
        let mut ports: Vec<u16> = a.flows.iter().map(|f| f.client.port()).collect();
        ports.dedup();
        assert_eq!(ports.len(), 400);
        // Persistent clients repeat.
        let mut clients: Vec<IpAddr> = a.flows_of(true).map(|f| f.client.ip()).collect();
        clients.sort_unstable();
        clients.dedup();
        assert!(clients.len() <= 30, "{}", clients.len());
        // Every command parses as ipvs-core reads ipvsadm's.
        ipvs_core::ipvsadm::parse_rules(&a.commands.join("\n")).expect("ipvsadm commands");
    }

    #[test]
    fn the_rules_replay_and_a_fake_kernel_file_is_read() {
        let plan = generate(7, 40, 10);
        // Nothing scheduled: the plain file replays (no rows); every flow is a refusal row.
        let picks = plan.picks_files(&KernelRun::default(), "test");
        assert_eq!(picks.rows, 0);
        assert_eq!(picks.refused.values().sum::<usize>(), 40);
        assert_eq!(picks.file.lines().filter(|l| l.starts_with("#refused\t")).count(), 40);
        let report = ipvs_sched::replay::replay(&picks.file).expect("the rules parse");
        assert_eq!(report.total, 0);
        assert!(picks.persistent_file.contains(" -p"));
        let f = &plan.flows[0];
        let kernel = KernelRun::parse(&proc_line(f, f.dst, "SYN_RECV"));
        let picks = plan.picks_files(&kernel, "test");
        assert_eq!(picks.rows, 1);
        let row = picks.file.lines().find(|l| !l.starts_with('#') && l.contains('\t')).unwrap();
        assert!(row.starts_with(&plan.services[f.service].selector));
    }

    #[test]
    fn our_own_picks_replayed_as_the_kernels_all_agree() {
        // Our scheduler's picks written as the kernel would list them replay with every pick and every
        // refusal agreeing, and the file agrees under ipvs_sched::replay too.
        let plan = generate(11, 400, 0);
        let empty = plan.replay_sched(&KernelRun::default());
        assert_eq!(empty.picks.total, 0);
        assert_eq!(empty.refusals.total, 400);
        // Build the fake kernel from a replay that charges our own picks: first pass with no conns at all
        // gives the first flow of each service; iterate until stable.
        let mut text = String::new();
        let mut kernel = KernelRun::default();
        for _ in 0..400 {
            let cmp = plan.replay_sched(&kernel);
            let Some(first) = cmp.differences.iter().find(|d| !d.contains("ours none")) else { break };
            let seq: u64 = first.split_whitespace().nth(1).unwrap().parse().unwrap();
            let ours: SocketAddr = first.rsplit(' ').next().unwrap().parse().unwrap();
            let f = &plan.flows[usize::try_from(seq).unwrap() - 1];
            let state = if f.protocol == Protocol::Udp { "UDP" } else { "SYN_RECV" };
            text.push_str(&proc_line(f, ours, state));
            kernel = KernelRun::parse(&text);
        }
        let cmp = plan.replay_sched(&kernel);
        assert!(cmp.all_agree(), "{:?}", cmp.differences);
        assert!(cmp.picks.total > 200, "{}", cmp.picks);
        let picks = plan.picks_files(&kernel, "test");
        let report = ipvs_sched::replay::replay(&picks.file).unwrap();
        assert!(report.all_agree());
        assert_eq!(report.total, cmp.picks.total);
    }
}
