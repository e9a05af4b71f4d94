//! A deterministic simulation of directors, clients and real servers exchanging real packet bytes.
//!
//! `Sim` holds a virtual clock, a queue of packets in flight (1 ms per hop), the directors (one [`Engine`]
//! each), TCP and UDP clients and real servers as small state machines. Packets are built with `etherparse`
//! and every packet a client or a real server receives is parsed and its checksums recomputed (IPv4 header,
//! TCP, UDP) — the engine's rewrites are checked on the way. [`Sim::step`] delivers what is due, runs the
//! directors' timers, carries the sync master's datagrams to the backups, checks the invariants, then jumps
//! the clock to the next packet or the smallest `poll_timeout()`; [`Sim::run_until`] and
//! [`Sim::run_until_idle`] are bounded. Client addresses come from a fixed-seed generator. Nothing sleeps.
//!
//! Invariants checked after every step, on every live director: each real server's active, inactive and
//! persistent counts equal a recount of the table (conns by `INACTIVE`, templates), also for removed real
//! servers in the trash, and no conn points at a freed one; OVERLOAD only with an upper threshold; the total
//! counters (conns, packets, bytes) equal the sums over the services. At the end of each scenario: no flow
//! moved from its real server, and the real servers saw exactly the packets forwarded to them.
//!
//! Scenarios (each prints its counts; `cargo test -p ipvs-core --test sim -- --nocapture`):
//! weighted distribution per scheduler; persistence across connections and its expiry; weight 0 quiescing;
//! a removed real server draining; thresholds setting and clearing OVERLOAD; the TCP state/timeout lifecycle
//! against the kernel's tables; a backup fed by the master's sync output taking over.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpHeader, TransportSlice, UdpHeader};
use ipvs_core::conn::ConnTableConfig;
use ipvs_core::ipvsadm::parse_rules;
use ipvs_core::proto::{ConnFlags, DestId, Duration, Instant, Protocol};
use ipvs_core::sync::{Backup, Master, MasterConfig};
use ipvs_core::{
    ConnInfo, Direction, Engine, EngineConfig, Event, PacketBuf, SyncApplied, SyncInput, SyncMasterOptions, Verdict,
};

/// One hop of the simulated network.
const LAT: Duration = Duration::from_millis(1);
const HEADROOM: usize = 64;
/// The timer wheel's resolution in the simulation (deadlines are at most one tick late).
const TICK: Duration = Duration::from_millis(1);

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn ms(m: u64) -> Instant {
    Instant::from_millis(m)
}

/// `m` milliseconds before `t`.
fn before(t: Instant, m: u64) -> Instant {
    Instant::from_millis(t.total_millis() - m)
}

// ---- deterministic randomness -------------------------------------------------------------------------------

/// SplitMix64 with a fixed seed per scenario.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A client address in 100.64.0.0/10 and an ephemeral port, never the same twice in one run.
    fn client(&mut self, used: &mut HashSet<SocketAddr>) -> SocketAddr {
        loop {
            let r = self.next();
            let ip = Ipv4Addr::from_bits(0x6440_0000 | (r as u32 & 0x003f_ffff));
            let port = 1024 + ((r >> 32) as u16 % 60000);
            let a = sa(ip, port);
            if used.insert(a) {
                return a;
            }
        }
    }
}

// ---- packets ------------------------------------------------------------------------------------------------

fn v4(a: SocketAddr) -> [u8; 4] {
    match a.ip() {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(_) => unreachable!("the simulation is IPv4"),
    }
}

fn tcp_bytes(src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(v4(src), v4(dst), 64).tcp(src.port(), dst.port(), seq, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    if flags & ACK != 0 {
        b = b.ack(1);
    }
    let mut out = Vec::with_capacity(40 + payload.len());
    b.write(&mut out, payload).unwrap();
    out
}

fn udp_bytes(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + payload.len());
    PacketBuilder::ipv4(v4(src), v4(dst), 64).udp(src.port(), dst.port()).write(&mut out, payload).unwrap();
    out
}

/// What a receiver reads of a packet.
#[derive(Clone, Copy, Debug)]
struct Seg {
    src: SocketAddr,
    dst: SocketAddr,
    udp: bool,
    flags: u8,
    payload: usize,
}

/// Parses an IPv4 TCP/UDP packet with etherparse, recomputing the IPv4 header and TCP/UDP checksums.
fn parse_checked(pkt: &[u8]) -> Seg {
    let sliced = SlicedPacket::from_ip(pkt).expect("a valid IP packet");
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else { panic!("not IPv4") };
    let h = ip.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 header checksum");
    let (s, d) = (h.source, h.destination);
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let (th, payload) = TcpHeader::from_slice(t.slice()).unwrap();
            assert_eq!(th.checksum, th.calc_checksum_ipv4_raw(s, d, payload).unwrap(), "TCP checksum");
            let flags = u8::from(t.fin())
                | u8::from(t.syn()) << 1
                | u8::from(t.rst()) << 2
                | u8::from(th.psh) << 3
                | u8::from(t.ack()) << 4;
            Seg {
                src: SocketAddr::new(IpAddr::V4(s.into()), t.source_port()),
                dst: SocketAddr::new(IpAddr::V4(d.into()), t.destination_port()),
                udp: false,
                flags,
                payload: payload.len(),
            }
        }
        Some(TransportSlice::Udp(u)) => {
            let (uh, payload) = UdpHeader::from_slice(u.slice()).unwrap();
            if uh.checksum != 0 {
                assert_eq!(uh.checksum, uh.calc_checksum_ipv4_raw(s, d, payload).unwrap(), "UDP checksum");
            }
            Seg {
                src: SocketAddr::new(IpAddr::V4(s.into()), u.source_port()),
                dst: SocketAddr::new(IpAddr::V4(d.into()), u.destination_port()),
                udp: true,
                flags: 0,
                payload: payload.len(),
            }
        }
        _ => panic!("not TCP or UDP"),
    }
}

fn flags_name(f: u8) -> String {
    let mut v = Vec::new();
    for (bit, n) in [(SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK")] {
        if f & bit != 0 {
            v.push(n);
        }
    }
    v.join("+")
}

// ---- parties ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum ClientState {
    Idle,
    SynSent,
    Open,
    FinSent,
    Closed,
}

/// A client flow: TCP (handshake, data segments each acknowledged, close with FIN) or UDP (datagrams each
/// echoed).
#[derive(Debug)]
struct Flow {
    udp: bool,
    client: SocketAddr,
    vip: SocketAddr,
    state: ClientState,
    /// Data segments (or datagrams) still to send.
    to_send: u32,
    /// Waiting for the acknowledgement (echo) of the last segment.
    outstanding: bool,
    /// Send FIN once the data is sent.
    close_when_done: bool,
    seq: u32,
    /// Packets sent.
    sent: u32,
    /// Packets received back (from the virtual service's address).
    received: u32,
    /// When the last packet of the flow (either side) went through a director.
    last_at_director: Instant,
}

/// A real server: answers SYN with SYN+ACK, data with ACK, FIN with FIN+ACK, UDP datagrams with an echo.
#[derive(Debug, Default)]
struct Server {
    /// Flows first seen here.
    new_flows: u64,
    /// Packets received.
    packets: u64,
}

/// A director: an engine and what the simulation saw of it.
#[derive(Debug)]
struct Director {
    name: &'static str,
    engine: Engine,
    alive: bool,
    /// Engine events with the time they were polled.
    events: Vec<(Instant, Event)>,
    /// Verdicts by kind.
    verdicts: BTreeMap<&'static str, u64>,
    /// Packets forwarded to each real server address (client → server direction).
    forwarded: BTreeMap<IpAddr, u64>,
    /// Highest real-server id seen (ids are never reused).
    max_dest: u32,
    /// Sync datagrams sent and received, and what the received ones did.
    sync_sent: u64,
    sync_received: u64,
    sync_applied: SyncApplied,
    sync_other: u64,
}

impl Director {
    fn new(name: &'static str, key: u8, rules: &str) -> Self {
        let mut c = EngineConfig::new(1 << 16, [key; 16]);
        c.conn_table = ConnTableConfig::new(1 << 16, [key; 16]).with_n_shards(4).with_tick(TICK);
        let engine = Engine::new(c).unwrap();
        let mut d = Self {
            name,
            engine,
            alive: true,
            events: Vec::new(),
            verdicts: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            max_dest: 0,
            sync_sent: 0,
            sync_received: 0,
            sync_applied: SyncApplied::default(),
            sync_other: 0,
        };
        d.rules(Instant::ZERO, rules);
        d
    }

    /// Applies ipvsadm rules at `now`.
    fn rules(&mut self, now: Instant, text: &str) {
        for rule in parse_rules(text).unwrap() {
            self.engine.apply(now, rule.command).unwrap_or_else(|e| panic!("{}: line {}: {e}", self.name, rule.line));
        }
        for s in self.engine.services() {
            for d in &s.dests {
                self.max_dest = self.max_dest.max(d.id.0);
            }
        }
    }

    fn poll_events(&mut self, now: Instant) {
        while let Some(e) = self.engine.poll_event() {
            self.events.push((now, e));
        }
    }

    /// The id of the real server at `addr` in any service (linked).
    fn dest_id(&self, addr: IpAddr) -> Option<DestId> {
        self.engine.services().iter().flat_map(|s| s.dests.iter()).find(|d| d.config.addr.ip() == addr).map(|d| d.id)
    }

    fn conns_created(&self) -> usize {
        self.events.iter().filter(|(_, e)| matches!(e, Event::ConnCreated { .. })).count()
    }
}

/// One row of a per-packet trace: which side sent it, its flags, and the conn right after it.
#[derive(Clone, Debug, PartialEq)]
struct TraceRow {
    at: Instant,
    from_client: bool,
    flags: String,
    state: &'static str,
    /// Time left until the conn expires, right after the packet.
    remaining_ms: u64,
}

#[derive(Debug)]
enum Msg {
    /// A packet arriving at director `idx`.
    ToDirector { idx: usize, dir: Direction, bytes: Vec<u8> },
    /// A packet arriving at the real server `ip`.
    ToServer { ip: IpAddr, bytes: Vec<u8> },
    /// A packet arriving at a client.
    ToClient { bytes: Vec<u8> },
    /// A sync datagram arriving at director `idx`.
    Sync { idx: usize, bytes: Vec<u8> },
    /// A scenario action.
    Act(Act),
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Start(usize),
    Send(usize, u32),
    Close(usize),
}

#[derive(Debug)]
struct Pending {
    at: u64,
    seq: u64,
    msg: Msg,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The simulation.
#[derive(Debug)]
struct Sim {
    now: Instant,
    queue: BinaryHeap<Reverse<Pending>>,
    next_seq: u64,
    directors: Vec<Director>,
    /// The director clients (and NAT real servers) send to: the one holding the virtual addresses.
    active: usize,
    flows: Vec<Flow>,
    by_client: HashMap<SocketAddr, usize>,
    servers: BTreeMap<IpAddr, Server>,
    /// The real server each flow was first seen at.
    owner: HashMap<SocketAddr, IpAddr>,
    /// Packets of a known flow that reached another real server.
    moved: u64,
    /// Non-SYN packets reaching a real server for a flow it never saw start.
    strays: u64,
    /// Packets received by clients from another address than the virtual service.
    bad_source: u64,
    /// Packets sent to a dead director.
    lost: u64,
    checksums_verified: u64,
    steps: u64,
    invariant_checks: u64,
    rng: Rng,
    used: HashSet<SocketAddr>,
    /// The flow whose packets are traced at the director.
    traced: Option<usize>,
    trace: Vec<TraceRow>,
    sync_buf: Vec<u8>,
}

impl Sim {
    fn new(seed: u64, directors: Vec<Director>) -> Self {
        Self {
            now: Instant::ZERO,
            queue: BinaryHeap::new(),
            next_seq: 0,
            directors,
            active: 0,
            flows: Vec::new(),
            by_client: HashMap::new(),
            servers: BTreeMap::new(),
            owner: HashMap::new(),
            moved: 0,
            strays: 0,
            bad_source: 0,
            lost: 0,
            checksums_verified: 0,
            steps: 0,
            invariant_checks: 0,
            rng: Rng(seed),
            used: HashSet::new(),
            traced: None,
            trace: Vec::new(),
            sync_buf: Vec::new(),
        }
    }

    fn server(&mut self, ip: Ipv4Addr) {
        self.servers.insert(IpAddr::V4(ip), Server::default());
    }

    fn push(&mut self, at: Instant, msg: Msg) {
        self.next_seq += 1;
        self.queue.push(Reverse(Pending { at: at.total_millis(), seq: self.next_seq, msg }));
    }

    /// A new flow from a fresh random client (or from `client`'s address with a fresh port) to `vip`.
    fn flow(&mut self, udp: bool, vip: SocketAddr, client_ip: Option<Ipv4Addr>) -> usize {
        let client = match client_ip {
            Some(ip) => loop {
                let port = 1024 + (self.rng.next() as u16 % 60000);
                let a = sa(ip, port);
                if self.used.insert(a) {
                    break a;
                }
            },
            None => self.rng.client(&mut self.used),
        };
        let idx = self.flows.len();
        self.flows.push(Flow {
            udp,
            client,
            vip,
            state: ClientState::Idle,
            to_send: 0,
            outstanding: false,
            close_when_done: false,
            seq: 1000,
            sent: 0,
            received: 0,
            last_at_director: Instant::ZERO,
        });
        self.by_client.insert(client, idx);
        idx
    }

    /// Schedules flow `f` to start at `at` with `data` segments, then close (or stay open).
    fn start(&mut self, f: usize, at: Instant, data: u32, close: bool) {
        self.flows[f].to_send = data;
        self.flows[f].close_when_done = close;
        self.push(at, Msg::Act(Act::Start(f)));
    }

    fn act(&mut self, at: Instant, a: Act) {
        self.push(at, Msg::Act(a));
    }

    // ---- the clock ------------------------------------------------------------------------------------------

    /// The next time anything happens: a packet or action due, or a live director's timer.
    fn next_time(&self) -> Option<Instant> {
        let net = self.queue.peek().map(|p| Instant::from_millis(p.0.at));
        let timers = self.directors.iter().filter(|d| d.alive).filter_map(|d| d.engine.poll_timeout()).min();
        match (net, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the clock to the next event (never past `limit`), runs the directors' timers, delivers what is
    /// due, carries sync datagrams, checks the invariants.
    fn step(&mut self, limit: Instant) {
        self.steps += 1;
        let t = self.next_time().unwrap_or(limit).min(limit);
        self.now = self.now.max(t);
        let now = self.now;
        for d in self.directors.iter_mut().filter(|d| d.alive) {
            d.engine.handle_timeout(now);
            d.poll_events(now);
        }
        while self.queue.peek().is_some_and(|p| p.0.at <= now.total_millis()) {
            let Some(Reverse(p)) = self.queue.pop() else { break };
            self.deliver(p.msg);
        }
        self.carry_sync();
        self.check_invariants();
    }

    /// Runs until `t` (everything due by then happens), bounded.
    fn run_until(&mut self, t: Instant) {
        let mut n = 0u64;
        while self.next_time().is_some_and(|x| x <= t) {
            self.step(t);
            n += 1;
            assert!(n < 2_000_000, "run_until({t:?}) did not converge");
        }
        if self.now < t {
            self.step(t);
        }
    }

    /// Runs until no packet or action is pending (timers may remain), at most `max_steps` steps.
    fn run_until_idle(&mut self, max_steps: u64) {
        let mut n = 0;
        while !self.queue.is_empty() {
            self.step(Instant::from_millis(u64::MAX / 2));
            n += 1;
            assert!(n <= max_steps, "not idle after {max_steps} steps");
        }
    }

    // ---- delivery -------------------------------------------------------------------------------------------

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::ToDirector { idx, dir, bytes } => self.at_director(idx, dir, bytes),
            Msg::ToServer { ip, bytes } => self.at_server(ip, &bytes),
            Msg::ToClient { bytes } => self.at_client(&bytes),
            Msg::Sync { idx, bytes } => {
                let now = self.now;
                let d = &mut self.directors[idx];
                if !d.alive {
                    return;
                }
                d.sync_received += 1;
                match d.engine.handle_sync_datagram(now, &bytes) {
                    SyncInput::Applied(a) => {
                        d.sync_applied.created += a.created;
                        d.sync_applied.updated += a.updated;
                        d.sync_applied.replaced += a.replaced;
                        d.sync_applied.ignored += a.ignored;
                        d.sync_applied.unbound += a.unbound;
                        d.sync_applied.failed += a.failed;
                        d.sync_applied.skipped += a.skipped;
                    }
                    SyncInput::Refused(e) => panic!("{}: sync datagram refused: {e:?}", d.name),
                    _ => d.sync_other += 1,
                }
                d.poll_events(now);
            }
            Msg::Act(a) => self.action(a),
        }
    }

    fn at_director(&mut self, idx: usize, dir: Direction, bytes: Vec<u8>) {
        let now = self.now;
        if !self.directors[idx].alive {
            self.lost += 1;
            return;
        }
        let seg = parse_checked(&bytes);
        self.checksums_verified += 1;
        let client = if dir == Direction::FromClient { seg.src } else { seg.dst };
        let mut data = vec![0u8; HEADROOM + bytes.len() + 64];
        data[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(&bytes);
        let d = &mut self.directors[idx];
        let mut buf = PacketBuf::new(&mut data, HEADROOM, bytes.len()).unwrap();
        let verdict = d.engine.handle_packet(now, &mut buf, dir);
        let out = buf.packet().to_vec();
        d.poll_events(now);
        let kind = match verdict {
            Verdict::Forward { .. } => "forward",
            Verdict::Local => "local",
            Verdict::Pass => "pass",
            Verdict::Drop(_) => "drop",
            Verdict::SendIcmp { .. } => "icmp",
        };
        *d.verdicts.entry(kind).or_default() += 1;
        if let Some(&f) = self.by_client.get(&client) {
            self.flows[f].last_at_director = now;
            if self.traced == Some(f) {
                let vip = self.flows[f].vip;
                let proto = if seg.udp { Protocol::Udp } else { Protocol::Tcp };
                let c = self.directors[idx].engine.conn(now, proto, client, vip);
                self.trace.push(TraceRow {
                    at: now,
                    from_client: dir == Direction::FromClient,
                    flags: if seg.udp { "UDP".into() } else { flags_name(seg.flags) },
                    state: c.map_or("-", |c| c.state),
                    remaining_ms: c.map_or(0, |c| c.expires.total_millis()),
                });
            }
        }
        if let Verdict::Forward { next_hop, .. } = verdict {
            match dir {
                Direction::FromClient => {
                    *self.directors[idx].forwarded.entry(next_hop).or_default() += 1;
                    self.push(now + LAT, Msg::ToServer { ip: next_hop, bytes: out });
                }
                Direction::FromRealServer => self.push(now + LAT, Msg::ToClient { bytes: out }),
            }
        }
    }

    fn at_server(&mut self, ip: IpAddr, bytes: &[u8]) {
        let now = self.now;
        let seg = parse_checked(bytes);
        self.checksums_verified += 1;
        let server = self.servers.get_mut(&ip).unwrap_or_else(|| panic!("no real server {ip}"));
        server.packets += 1;
        let client = seg.src;
        let starts = seg.udp || seg.flags & (SYN | ACK) == SYN;
        match self.owner.get(&client) {
            Some(o) if *o != ip => self.moved += 1,
            Some(_) => {}
            None if starts => {
                self.owner.insert(client, ip);
                server.new_flows += 1;
            }
            None => self.strays += 1,
        }
        // NAT delivers to the real server's own address; DR keeps the virtual address as destination.
        let reply = if seg.udp {
            Some(udp_bytes(seg.dst, seg.src, b"echo"))
        } else if seg.flags & RST != 0 {
            None
        } else if seg.flags & SYN != 0 {
            Some(tcp_bytes(seg.dst, seg.src, SYN | ACK, 5000, &[]))
        } else if seg.flags & FIN != 0 {
            Some(tcp_bytes(seg.dst, seg.src, FIN | ACK, 5001, &[]))
        } else if seg.payload > 0 {
            Some(tcp_bytes(seg.dst, seg.src, ACK, 5001, &[]))
        } else {
            None
        };
        if let Some(r) = reply {
            if seg.dst.ip() == ip {
                // NAT: the reply goes back through the director holding the virtual address.
                self.push(now + LAT, Msg::ToDirector { idx: self.active, dir: Direction::FromRealServer, bytes: r });
            } else {
                // DR: straight to the client, from the virtual address.
                self.push(now + LAT, Msg::ToClient { bytes: r });
            }
        }
    }

    fn at_client(&mut self, bytes: &[u8]) {
        let seg = parse_checked(bytes);
        self.checksums_verified += 1;
        let Some(&f) = self.by_client.get(&seg.dst) else { panic!("no client {}", seg.dst) };
        let flow = &mut self.flows[f];
        if seg.src != flow.vip {
            self.bad_source += 1;
            return;
        }
        flow.received += 1;
        if flow.udp {
            flow.outstanding = false;
            self.pump(f);
            return;
        }
        match (flow.state, seg.flags) {
            (ClientState::SynSent, x) if x & (SYN | ACK) == SYN | ACK => {
                flow.state = ClientState::Open;
                self.send(f, ACK, 0);
                self.pump(f);
            }
            (ClientState::Open, x) if x & (SYN | FIN) == 0 => {
                flow.outstanding = false;
                self.pump(f);
            }
            (ClientState::FinSent, x) if x & FIN != 0 => {
                flow.state = ClientState::Closed;
                self.send(f, ACK, 0);
            }
            _ => {}
        }
    }

    /// A client packet of flow `f` (TCP flags and payload length; UDP ignores the flags).
    fn send(&mut self, f: usize, flags: u8, payload: usize) {
        let at = self.now + LAT;
        let flow = &mut self.flows[f];
        let data = vec![0x61u8; payload];
        let bytes = if flow.udp {
            udp_bytes(flow.client, flow.vip, &data)
        } else {
            tcp_bytes(flow.client, flow.vip, flags, flow.seq, &data)
        };
        flow.seq = flow.seq.wrapping_add(payload as u32 + u32::from(flags & (SYN | FIN) != 0));
        flow.sent += 1;
        self.push(at, Msg::ToDirector { idx: self.active, dir: Direction::FromClient, bytes });
    }

    /// Sends the next segment of flow `f` if nothing is outstanding, or its FIN when done.
    fn pump(&mut self, f: usize) {
        let flow = &mut self.flows[f];
        if flow.outstanding || flow.state != ClientState::Open {
            return;
        }
        if flow.to_send > 0 {
            flow.to_send -= 1;
            flow.outstanding = true;
            self.send(f, PSH | ACK, 100);
        } else if flow.close_when_done && !flow.udp {
            flow.state = ClientState::FinSent;
            self.send(f, FIN | ACK, 0);
        }
    }

    fn action(&mut self, a: Act) {
        match a {
            Act::Start(f) => {
                if self.flows[f].udp {
                    self.flows[f].state = ClientState::Open;
                    self.pump(f);
                } else {
                    self.flows[f].state = ClientState::SynSent;
                    self.send(f, SYN, 0);
                }
            }
            Act::Send(f, n) => {
                self.flows[f].to_send += n;
                self.pump(f);
            }
            Act::Close(f) => {
                self.flows[f].close_when_done = true;
                self.pump(f);
            }
        }
    }

    /// Carries every sync datagram the live directors have to send to every other live director (the
    /// multicast group).
    fn carry_sync(&mut self) {
        let now = self.now;
        for i in 0..self.directors.len() {
            if !self.directors[i].alive {
                continue;
            }
            while let Some(t) = self.directors[i].engine.poll_sync_transmit(now, &mut self.sync_buf) {
                self.directors[i].sync_sent += 1;
                let bytes = self.sync_buf[..t.len].to_vec();
                for j in 0..self.directors.len() {
                    if j != i {
                        self.push(now + LAT, Msg::Sync { idx: j, bytes: bytes.clone() });
                    }
                }
            }
        }
    }

    // ---- invariants -----------------------------------------------------------------------------------------

    fn check_invariants(&mut self) {
        self.invariant_checks += 1;
        for d in self.directors.iter().filter(|d| d.alive) {
            check_director(d);
        }
    }

    // ---- views ----------------------------------------------------------------------------------------------

    /// Flows per real server (by where they were first seen), for the flows in `range`.
    fn shares(&self, range: std::ops::Range<usize>) -> BTreeMap<IpAddr, usize> {
        let mut m = BTreeMap::new();
        for f in &self.flows[range] {
            if let Some(ip) = self.owner.get(&f.client) {
                *m.entry(*ip).or_default() += 1;
            }
        }
        m
    }

    fn owner_of(&self, f: usize) -> Option<IpAddr> {
        self.owner.get(&self.flows[f].client).copied()
    }

    /// End-of-scenario checks: no flow moved, no stray packets, clients only heard the virtual service, and
    /// each real server received exactly what the directors forwarded to it.
    fn check_end(&self) {
        assert_eq!(self.moved, 0, "packets of a flow reached another real server");
        assert_eq!(self.strays, 0, "packets reached a real server that never saw their flow start");
        assert_eq!(self.bad_source, 0, "a client heard from another address than the virtual service");
        for (ip, s) in &self.servers {
            let fwd: u64 = self.directors.iter().map(|d| d.forwarded.get(ip).copied().unwrap_or(0)).sum();
            assert_eq!(s.packets, fwd, "real server {ip}: packets received vs forwarded");
        }
    }

    fn summary(&self, name: &str) {
        let d = &self.directors[0];
        println!(
            "[{name}] t={:.3}s steps={} invariant checks={} flows={} packets checked={} verdicts={:?} conns created={}",
            self.now.total_millis() as f64 / 1000.0,
            self.steps,
            self.invariant_checks,
            self.flows.len(),
            self.checksums_verified,
            d.verdicts,
            d.conns_created()
        );
    }
}

/// The per-director invariants (see the module docs).
fn check_director(d: &Director) {
    let e = &d.engine;
    let mut counts: HashMap<DestId, [u32; 3]> = HashMap::new();
    e.conn_table().for_each(|_, v| {
        if let Some(id) = v.dest {
            let c = counts.entry(id).or_default();
            if v.is_template() {
                c[2] += 1;
            } else if v.flags.contains(ConnFlags::INACTIVE) {
                c[1] += 1;
            } else {
                c[0] += 1;
            }
        }
    });
    for id in 0..=d.max_dest {
        let id = DestId(id);
        let table = counts.remove(&id).unwrap_or_default();
        match e.dest(id) {
            Some(info) => {
                let got = [info.active_conns, info.inactive_conns, info.persist_conns];
                assert_eq!(
                    got, table,
                    "{}: real server {} ({}): active/inactive/persistent vs table",
                    d.name, id.0, info.config.addr
                );
                assert!(!info.overloaded || info.config.u_threshold > 0, "{}: OVERLOAD without -x", d.name);
            }
            None => assert_eq!(table, [0; 3], "{}: conns point at freed real server {}", d.name, id.0),
        }
    }
    assert!(counts.is_empty(), "{}: conns point at unknown real servers: {counts:?}", d.name);
    let total = e.total_stats().counters;
    let services = e.services();
    let sum =
        |f: fn(&ipvs_core::stats::CounterValues) -> u64| -> u64 { services.iter().map(|s| f(&s.stats.counters)).sum() };
    assert_eq!(total.conns, sum(|c| c.conns), "{}: total conns vs services", d.name);
    assert_eq!(total.inpkts, sum(|c| c.inpkts), "{}: total inpkts vs services", d.name);
    assert_eq!(total.outpkts, sum(|c| c.outpkts), "{}: total outpkts vs services", d.name);
    assert_eq!(total.inbytes, sum(|c| c.inbytes), "{}: total inbytes vs services", d.name);
    assert_eq!(total.outbytes, sum(|c| c.outbytes), "{}: total outbytes vs services", d.name);
}

/// The conns of an engine by (protocol, client, virtual), templates included.
fn conn_map(e: &Engine, now: Instant) -> BTreeMap<(u8, SocketAddr, SocketAddr, bool), ConnInfo> {
    e.conns(now).into_iter().map(|c| ((u8::from(c.protocol), c.client, c.virt, c.is_template()), c)).collect()
}

// ---- scenarios ----------------------------------------------------------------------------------------------

/// Three NAT real servers with weights 1, 2 and 3.
fn weighted_rules(sched: &str) -> String {
    format!(
        "-A -t 10.0.0.100:80 -s {sched}\n\
         -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m -w 1\n\
         -a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m -w 2\n\
         -a -t 10.0.0.100:80 -r 10.1.0.3:8080 -m -w 3\n"
    )
}

fn rs(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1, 0, n))
}

/// 1000 flows over three real servers weighted 1:2:3, opened 2 ms apart and held open, per scheduler: the
/// round-robin family and the least-connection family give exact (±1) or tight (±2) shares, the hashing and
/// random ones bounded shares.
#[test]
fn weighted_distribution_per_scheduler() {
    // (scheduler, expected shares, tolerance in flows)
    let cases: [(&str, [usize; 3], usize); 10] = [
        ("rr", [333, 333, 334], 1),
        ("wrr", [167, 333, 500], 1),
        ("lc", [333, 333, 334], 1),
        ("wlc", [167, 333, 500], 2),
        ("sed", [167, 333, 500], 2),
        ("nq", [167, 333, 500], 3),
        ("fo", [0, 0, 1000], 0),
        ("sh", [167, 333, 500], 60),
        ("mh", [167, 333, 500], 50),
        ("twos", [167, 333, 500], 60),
    ];
    for (i, (sched, expected, tol)) in cases.into_iter().enumerate() {
        let mut sim = Sim::new(0x5eed_0000 + i as u64, vec![Director::new("director", 1, &weighted_rules(sched))]);
        for n in 1..=3 {
            sim.server(Ipv4Addr::new(10, 1, 0, n));
        }
        for k in 0..1000 {
            let f = sim.flow(false, sa(VIP, 80), None);
            sim.start(f, ms(2 * k as u64), 1, false);
        }
        sim.run_until_idle(100_000);
        let shares = sim.shares(0..1000);
        let got: Vec<usize> = (1..=3).map(|n| shares.get(&rs(n)).copied().unwrap_or(0)).collect();
        sim.summary(sched);
        println!("[{sched}] flows per real server (weights 1:2:3): {got:?}, expected {expected:?} ±{tol}");
        for n in 0..3 {
            assert!(got[n].abs_diff(expected[n]) <= tol, "{sched}: {got:?} vs {expected:?} ±{tol}");
        }
        // Held open: every flow is an ESTABLISHED conn, counted active on its real server.
        let d = &sim.directors[0];
        let active: u32 = (1..=3).map(|n| d.engine.dest(d.dest_id(rs(n)).unwrap()).unwrap().active_conns).sum();
        assert_eq!(active, 1000);
        assert_eq!(d.conns_created(), 1000);
        sim.check_end();
    }
}

/// Persistence (`-p 300`): a client's next connections go to the same real server while its template lives;
/// the template expires 300 s after the last connection created through it (not while it controls one); a
/// `-M 255.255.255.0` service keeps a whole /24 on one real server.
#[test]
fn persistence_sticks_and_expires_on_time() {
    let rules = "-A -t 10.0.0.100:80 -s rr -p 300\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.3:8080 -m\n\
                 -A -t 10.0.0.100:81 -s rr -p 300 -M 255.255.255.0\n\
                 -a -t 10.0.0.100:81 -r 10.1.0.1:8080 -m\n\
                 -a -t 10.0.0.100:81 -r 10.1.0.2:8080 -m\n";
    let mut sim = Sim::new(0x9e55, vec![Director::new("director", 2, rules)]);
    for n in 1..=3 {
        sim.server(Ipv4Addr::new(10, 1, 0, n));
    }
    let a = Ipv4Addr::new(100, 64, 1, 10);
    let vip = sa(VIP, 80);
    // Client A: three short connections at 0, 100 and 200 s; other clients in between advance rr.
    let a1 = sim.flow(false, vip, Some(a));
    sim.start(a1, secs(0), 2, true);
    let mut others = Vec::new();
    for k in 0..6 {
        let f = sim.flow(false, vip, None);
        sim.start(f, ms(500 + 50 * k), 1, true);
        others.push(f);
    }
    let a2 = sim.flow(false, vip, Some(a));
    sim.start(a2, secs(100), 2, true);
    let a3 = sim.flow(false, vip, Some(a));
    sim.start(a3, secs(200), 2, true);
    // Client D: one connection held open with a segment every 200 s until 1000 s; a new one at 900 s.
    let dcl = Ipv4Addr::new(100, 64, 7, 7);
    let d1 = sim.flow(false, vip, Some(dcl));
    sim.start(d1, ms(10), 1, false);
    for t in [200, 400, 600, 800] {
        sim.act(secs(t), Act::Send(d1, 1));
    }
    sim.act(secs(1000), Act::Close(d1));
    let d2 = sim.flow(false, vip, Some(dcl));
    sim.start(d2, secs(870), 1, true);
    // The /24 service: ten clients of 100.64.2.0/24.
    let mut net = Vec::new();
    for h in 1..=10u8 {
        let f = sim.flow(false, sa(VIP, 81), Some(Ipv4Addr::new(100, 64, 2, h)));
        sim.start(f, secs(1) + Duration::from_millis(u64::from(h) * 10), 1, true);
        net.push(f);
    }

    sim.run_until(secs(250));
    let home = sim.owner_of(a1).unwrap();
    assert_eq!(sim.owner_of(a2), Some(home));
    assert_eq!(sim.owner_of(a3), Some(home));
    let others_on_home = others.iter().filter(|f| sim.owner_of(**f) == Some(home)).count();
    let net_home = sim.owner_of(net[0]).unwrap();
    assert!(net.iter().all(|f| sim.owner_of(*f) == Some(net_home)), "a /24 sticks to one real server");

    // A's template was last used when a3's conn was created (its SYN reached the director 1 ms after 200 s).
    let created = secs(200) + LAT;
    let due = created + Duration::from_secs(300);
    let tpl = |sim: &Sim| {
        let e = &sim.directors[0].engine;
        e.conns(sim.now).into_iter().find(|c| c.is_template() && c.client.ip() == IpAddr::V4(a))
    };
    sim.run_until(before(due, 1));
    assert!(tpl(&sim).is_some(), "template alive 1 ms before its 300 s");
    sim.run_until(due + TICK);
    assert!(tpl(&sim).is_none(), "template gone at 300 s");
    let expired_at = sim.directors[0]
        .events
        .iter()
        .find_map(|(t, e)| match e {
            Event::ConnExpired { template: true, client, .. } if client.ip() == IpAddr::V4(a) => Some(*t),
            _ => None,
        })
        .unwrap();
    assert!(expired_at >= due && expired_at <= due + TICK, "template expired at {expired_at:?}, due {due:?}");

    // A's next connection gets a new template (rr's turn, not the old one).
    let a4 = sim.flow(false, vip, Some(a));
    sim.start(a4, secs(600), 1, true);
    sim.run_until(secs(601));
    let new_tpl = tpl(&sim).expect("a new template");
    assert_eq!(new_tpl.expires, Duration::from_millis(300_000 - 999));
    // D's template outlived its 300 s because it controlled the held conn: d2 at 870 s stuck to d1's server.
    sim.run_until(secs(1300));
    assert_eq!(sim.owner_of(d2), sim.owner_of(d1));
    sim.run_until_idle(100_000);
    sim.check_end();
    sim.summary("persistence");
    println!(
        "[persistence] A's 3 conns on {home} (other clients there: {others_on_home}/6); template expired at {:.3}s \
         (due {:.3}s); A's 4th conn on {:?}; D's held conn kept its template past 300 s: d2 on {:?}; /24 of 10 \
         clients on {net_home}",
        expired_at.total_millis() as f64 / 1000.0,
        due.total_millis() as f64 / 1000.0,
        sim.owner_of(a4),
        sim.owner_of(d2),
    );
}

/// Three real servers with 10 held flows each; real server 2 gets weight 0: its flows keep flowing to it, new
/// flows avoid it, its counts drain as its flows end.
#[test]
fn weight_zero_quiesces_without_breaking_conns() {
    let rules = "-A -t 10.0.0.100:80 -s wrr\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.3:8080 -m\n";
    let mut sim = Sim::new(0x0a0a, vec![Director::new("director", 3, rules)]);
    for n in 1..=3 {
        sim.server(Ipv4Addr::new(10, 1, 0, n));
    }
    let vip = sa(VIP, 80);
    for k in 0..30 {
        let f = sim.flow(false, vip, None);
        sim.start(f, ms(10 * k), 1, false);
    }
    sim.run_until(secs(10));
    let before = sim.shares(0..30);
    assert_eq!(before.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
    sim.directors[0].rules(secs(10), "-e -t 10.0.0.100:80 -r 10.1.0.2:8080 -m -w 0\n");
    let old_on_2: Vec<usize> = (0..30).filter(|f| sim.owner_of(*f) == Some(rs(2))).collect();
    let pkts_2 = sim.servers[&rs(2)].packets;
    for f in 0..30 {
        sim.act(secs(11), Act::Send(f, 5));
    }
    for k in 0..30 {
        let f = sim.flow(false, vip, None);
        sim.start(f, secs(12) + Duration::from_millis(10 * k), 1, false);
    }
    sim.run_until(secs(15));
    let after = sim.shares(30..60);
    assert_eq!(after.get(&rs(2)), None, "no new flow on the quiesced server");
    assert_eq!(after.get(&rs(1)), Some(&15));
    assert_eq!(after.get(&rs(3)), Some(&15));
    // Five segments and their ACKs per old flow: the data reached server 2.
    assert_eq!(sim.servers[&rs(2)].packets - pkts_2, 50);
    let d = &sim.directors[0];
    let id2 = d.dest_id(rs(2)).unwrap();
    assert_eq!(d.engine.dest(id2).unwrap().active_conns, 10);
    for f in 0..60 {
        sim.act(secs(20), Act::Close(f));
    }
    sim.run_until(secs(20) + Duration::from_secs(121));
    let d = &sim.directors[0];
    let info = d.engine.dest(id2).unwrap();
    assert_eq!((info.active_conns, info.inactive_conns), (0, 0));
    assert_eq!(d.engine.conn_table().len(), 0, "every conn ended 120 s after its close");
    sim.check_end();
    sim.summary("weight 0");
    println!(
        "[weight 0] before: {before:?}; server 2 quiesced with {} flows, which sent 50 more packets to it; new flows: \
         {after:?}",
        old_on_2.len()
    );
}

/// A removed real server keeps serving its flows until they end (then leaves the trash); new flows avoid it.
#[test]
fn removed_dest_conns_finish() {
    let rules = "-A -t 10.0.0.100:80 -s rr\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.3:8080 -m\n";
    let mut sim = Sim::new(0xde1, vec![Director::new("director", 4, rules)]);
    for n in 1..=3 {
        sim.server(Ipv4Addr::new(10, 1, 0, n));
    }
    let vip = sa(VIP, 80);
    for k in 0..30 {
        let f = sim.flow(false, vip, None);
        sim.start(f, ms(10 * k), 1, false);
    }
    sim.run_until(secs(10));
    let id3 = sim.directors[0].dest_id(rs(3)).unwrap();
    sim.directors[0].rules(secs(10), "-d -t 10.0.0.100:80 -r 10.1.0.3:8080\n");
    assert_eq!(sim.directors[0].engine.n_trash(), 1);
    let pkts_3 = sim.servers[&rs(3)].packets;
    for f in 0..30 {
        sim.act(secs(11), Act::Send(f, 3));
    }
    for k in 0..30 {
        let f = sim.flow(false, vip, None);
        sim.start(f, secs(12) + Duration::from_millis(10 * k), 1, false);
    }
    sim.run_until(secs(15));
    assert_eq!(sim.servers[&rs(3)].packets - pkts_3, 30, "the removed server's 10 flows sent it 3 segments each");
    let after = sim.shares(30..60);
    assert_eq!(after.get(&rs(3)), None);
    assert_eq!(after.values().copied().collect::<Vec<_>>(), [15, 15]);
    assert_eq!(sim.directors[0].engine.dest(id3).unwrap().active_conns, 10);
    // Close the removed server's flows at 20 s: TIME_WAIT, gone 120 s later, then the trash frees it after
    // 120 s without conns (checked every 60 s).
    let on3: Vec<usize> = (0..30).filter(|f| sim.owner_of(*f) == Some(rs(3))).collect();
    for f in on3 {
        sim.act(secs(20), Act::Close(f));
    }
    sim.run_until(secs(20) + Duration::from_secs(119));
    assert_eq!(sim.directors[0].engine.dest(id3).unwrap().inactive_conns, 10);
    sim.run_until(secs(20) + Duration::from_secs(121));
    assert_eq!(sim.directors[0].engine.dest(id3).map(|d| d.inactive_conns), Some(0));
    let mut freed = None;
    while freed.is_none() && sim.now < secs(600) {
        let t = sim.now + Duration::from_secs(1);
        sim.run_until(t);
        if sim.directors[0].engine.dest(id3).is_none() {
            freed = Some(sim.now);
        }
    }
    let freed = freed.expect("the removed server leaves the trash");
    let idle_from = secs(20) + Duration::from_secs(120);
    assert!(freed >= idle_from + Duration::from_secs(120) && freed <= idle_from + Duration::from_secs(240));
    assert_eq!(sim.directors[0].engine.n_trash(), 0);
    sim.check_end();
    sim.summary("removed dest");
    println!(
        "[removed dest] 10 flows kept on the removed server (30 more packets forwarded to it), new flows {after:?}; \
         its conns ended at ~141 s, freed from the trash at {:.0} s",
        freed.total_millis() as f64 / 1000.0
    );
}

/// `-x 5 -y 2` on real server 1: it takes exactly 5 conns, OVERLOAD is set at the 5th and new flows go to
/// server 2; OVERLOAD clears when fewer than 2 conns remain (closed conns count until their TIME_WAIT ends).
#[test]
fn thresholds_set_and_clear_overload() {
    let rules = "-A -t 10.0.0.100:80 -s rr\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m -x 5 -y 2\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m\n";
    let mut sim = Sim::new(0x7e5, vec![Director::new("director", 5, rules)]);
    for n in 1..=2 {
        sim.server(Ipv4Addr::new(10, 1, 0, n));
    }
    let vip = sa(VIP, 80);
    for k in 0..20 {
        let f = sim.flow(false, vip, None);
        sim.start(f, ms(10 * k), 1, false);
    }
    sim.run_until(secs(5));
    let shares = sim.shares(0..20);
    assert_eq!(shares.get(&rs(1)), Some(&5));
    assert_eq!(shares.get(&rs(2)), Some(&15));
    let id1 = sim.directors[0].dest_id(rs(1)).unwrap();
    let overloaded: Vec<Instant> = sim.directors[0]
        .events
        .iter()
        .filter_map(|(t, e)| matches!(e, Event::DestOverloaded { dest } if *dest == id1).then_some(*t))
        .collect();
    assert_eq!(overloaded.len(), 1);
    assert!(sim.directors[0].engine.dest(id1).unwrap().overloaded);
    // Close server 1's flows one per second from 10 s.
    let on1: Vec<usize> = (0..20).filter(|f| sim.owner_of(*f) == Some(rs(1))).collect();
    for (i, f) in on1.iter().enumerate() {
        sim.act(secs(10 + i as u64), Act::Close(*f));
    }
    sim.run_until(secs(100));
    assert!(sim.directors[0].engine.dest(id1).unwrap().overloaded, "TIME_WAIT conns still count");
    sim.run_until(secs(200));
    let recovered: Vec<Instant> = sim.directors[0]
        .events
        .iter()
        .filter_map(|(t, e)| matches!(e, Event::DestRecovered { dest } if *dest == id1).then_some(*t))
        .collect();
    assert_eq!(recovered.len(), 1);
    // Total < 2 once the 4th closed conn expires: 120 s after its last packet (the client's final ACK).
    let due = sim.flows[on1[3]].last_at_director + Duration::from_secs(120);
    assert!(recovered[0] >= due && recovered[0] <= due + TICK, "recovered at {:?}, due {due:?}", recovered[0]);
    // Every closed conn is gone by now: server 1 takes 5 again (rr alternates) until it is full again.
    for k in 0..10 {
        let f = sim.flow(false, vip, None);
        sim.start(f, secs(300) + Duration::from_millis(10 * k), 1, false);
    }
    sim.run_until(secs(310));
    let later = sim.shares(20..30);
    assert_eq!(later.get(&rs(1)), Some(&5));
    assert!(sim.directors[0].engine.dest(id1).unwrap().overloaded);
    sim.check_end();
    sim.summary("thresholds");
    println!(
        "[thresholds] 20 flows: {shares:?}; OVERLOAD set at {:.3}s, cleared at {:.3}s (due {:.3}s); 10 more flows: \
         {later:?}",
        overloaded[0].total_millis() as f64 / 1000.0,
        recovered[0].total_millis() as f64 / 1000.0,
        due.total_millis() as f64 / 1000.0
    );
}

/// The TCP lifecycle of a NAT and a DR conn, packet by packet, against the kernel's state tables and default
/// timeouts (facts §5.2): state and remaining time after each packet, and expiry at the right virtual time.
#[test]
fn tcp_state_and_timeout_lifecycle_matches_the_reference() {
    let rules = "-A -t 10.0.0.100:80 -s rr\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m\n\
                 -A -t 10.0.0.100:81 -s rr\n\
                 -a -t 10.0.0.100:81 -r 10.2.0.1:81 -g\n\
                 -A -u 10.0.0.100:53 -s rr\n\
                 -a -u 10.0.0.100:53 -r 10.3.0.1:5353 -m\n";
    type Expect = [(bool, &'static str, &'static str, u64)];
    // (from client, flags, state after, timeout s)
    let nat: &Expect = &[
        (true, "SYN", "SYN_RECV", 60),
        (false, "SYN+ACK", "SYN_RECV", 60),
        (true, "ACK", "ESTABLISHED", 900),
        (true, "PSH+ACK", "ESTABLISHED", 900),
        (false, "ACK", "ESTABLISHED", 900),
        (true, "FIN+ACK", "CLOSE_WAIT", 60),
        (false, "FIN+ACK", "TIME_WAIT", 120),
        (true, "ACK", "TIME_WAIT", 120),
    ];
    // DR: no replies through the director (INPUT_ONLY table).
    let dr: &Expect = &[
        (true, "SYN", "SYN_RECV", 60),
        (true, "ACK", "ESTABLISHED", 900),
        (true, "PSH+ACK", "ESTABLISHED", 900),
        (true, "FIN+ACK", "FIN_WAIT", 120),
        (true, "ACK", "FIN_WAIT", 120),
    ];
    let udp: &Expect = &[(true, "UDP", "UDP", 300), (false, "UDP", "UDP", 300)];
    let mut rows = 0;
    for (name, vip, udp_flow, expect) in
        [("NAT", sa(VIP, 80), false, nat), ("DR", sa(VIP, 81), false, dr), ("UDP", sa(VIP, 53), true, udp)]
    {
        let mut sim = Sim::new(0x11fe, vec![Director::new("director", 6, rules)]);
        for ip in [Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 2, 0, 1), Ipv4Addr::new(10, 3, 0, 1)] {
            sim.server(ip);
        }
        let f = sim.flow(udp_flow, vip, None);
        sim.traced = Some(f);
        sim.start(f, secs(1), 1, true);
        sim.run_until_idle(1000);
        let got: Vec<(bool, String, &str, u64)> =
            sim.trace.iter().map(|r| (r.from_client, r.flags.clone(), r.state, r.remaining_ms / 1000)).collect();
        let want: Vec<(bool, String, &str, u64)> =
            expect.iter().map(|(c, fl, s, t)| (*c, (*fl).to_owned(), *s, *t)).collect();
        assert_eq!(got, want, "{name}");
        // Remaining time is exactly the state's timeout after each packet.
        for r in &sim.trace {
            assert_eq!(r.remaining_ms % 1000, 0, "{name}: whole timeouts");
        }
        // The conn expires exactly one timeout after its last packet.
        let last = sim.trace.last().unwrap();
        let due = last.at + Duration::from_millis(last.remaining_ms);
        let client = sim.flows[f].client;
        sim.run_until(before(due, 1));
        let proto = if udp_flow { Protocol::Udp } else { Protocol::Tcp };
        let e = &sim.directors[0].engine;
        assert!(e.conn(sim.now, proto, client, vip).is_some(), "{name}: alive 1 ms before expiry");
        let dest = e.dest(DestId(match name {
            "NAT" => 0,
            "DR" => 1,
            _ => 2,
        }));
        // Closing states and UDP count as inactive.
        assert_eq!(dest.map(|d| (d.active_conns, d.inactive_conns)), Some((0, 1)), "{name}");
        sim.run_until(due + TICK);
        let e = &sim.directors[0].engine;
        assert!(e.conn(sim.now, proto, client, vip).is_none(), "{name}: expired on time");
        let expired_at = sim.directors[0]
            .events
            .iter()
            .find_map(|(t, ev)| matches!(ev, Event::ConnExpired { .. }).then_some(*t))
            .unwrap();
        assert!(expired_at >= due && expired_at <= due + TICK);
        sim.check_end();
        rows += sim.trace.len();
        sim.summary(name);
        for r in &sim.trace {
            println!(
                "[lifecycle {name}] {:>9.3}s {} {:<8} -> {:<11} expires in {:>3} s",
                r.at.total_millis() as f64 / 1000.0,
                if r.from_client { "client" } else { "server" },
                r.flags,
                r.state,
                r.remaining_ms / 1000
            );
        }
        println!(
            "[lifecycle {name}] expired at {:.3}s (due {:.3}s)",
            expired_at.total_millis() as f64 / 1000.0,
            due.total_millis() as f64 / 1000.0
        );
    }
    // An idle ESTABLISHED conn goes 900 s after its last packet.
    let mut sim = Sim::new(0x1d1e, vec![Director::new("director", 7, rules)]);
    sim.server(Ipv4Addr::new(10, 1, 0, 1));
    let f = sim.flow(false, sa(VIP, 80), None);
    sim.start(f, secs(1), 1, false);
    sim.run_until_idle(1000);
    let due = sim.flows[f].last_at_director + Duration::from_secs(900);
    sim.run_until(due + TICK);
    let expired_at = sim.directors[0]
        .events
        .iter()
        .find_map(|(t, ev)| matches!(ev, Event::ConnExpired { .. }).then_some(*t))
        .unwrap();
    assert!(expired_at >= due && expired_at <= due + TICK, "idle ESTABLISHED expired at {expired_at:?}, due {due:?}");
    println!(
        "[lifecycle] {rows} packets matched the reference tables; idle ESTABLISHED expired 900 s after its last packet"
    );
}

/// A master and a backup with the same rules; the master's sync output (its `poll_sync_transmit` bytes) is
/// carried to the backup's datagram handler. The backup holds the same conns (addresses, ports, real server,
/// state; remaining time within 1 s); a late backup gets them by bulk resync; after failover the backup forwards
/// the packets of synced conns to the same real servers without scheduling, and persistent clients keep their
/// real server.
#[test]
fn backup_fed_by_master_sync_takes_over() {
    let rules = "-A -t 10.0.0.100:80 -s wlc\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m -w 1\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m -w 2\n\
                 -a -t 10.0.0.100:80 -r 10.1.0.3:8080 -m -w 3\n\
                 -A -t 10.0.0.100:443 -s rr -p 300\n\
                 -a -t 10.0.0.100:443 -r 10.2.0.1:443 -g\n\
                 -a -t 10.0.0.100:443 -r 10.2.0.2:443 -g\n\
                 -A -u 10.0.0.100:53 -s rr\n\
                 -a -u 10.0.0.100:53 -r 10.3.0.1:5353 -m\n\
                 -a -u 10.0.0.100:53 -r 10.3.0.2:5353 -m\n";
    let master = Director::new("master", 8, rules);
    let backup = Director::new("backup", 9, rules);
    let late = Director::new("late backup", 10, rules);
    // A partly filled message leaves after 500 ms (the kernel's 2 s would put the backup's timers 2 s behind).
    let mcfg = MasterConfig { flush_time: Duration::from_millis(500), ..MasterConfig::default() };
    master.engine.start_sync_master(Master::new(mcfg).unwrap(), SyncMasterOptions::default()).unwrap();
    backup.engine.start_sync_backup(Backup::new(backup.engine.sync_backup_config()).unwrap()).unwrap();
    let mut sim = Sim::new(0xfa11, vec![master, backup, late]);
    // The late backup joins later.
    sim.directors[2].alive = false;
    for n in 1..=3 {
        sim.server(Ipv4Addr::new(10, 1, 0, n));
    }
    for n in 1..=2 {
        sim.server(Ipv4Addr::new(10, 2, 0, n));
        sim.server(Ipv4Addr::new(10, 3, 0, n));
    }
    let web = sa(VIP, 80);
    let tls = sa(VIP, 443);
    let dns = sa(VIP, 53);
    // 200 NAT flows held open (3 segments: their 3rd client packet is the sync threshold).
    let held: Vec<usize> = (0..200).map(|_| sim.flow(false, web, None)).collect();
    for (k, f) in held.iter().enumerate() {
        sim.start(*f, ms(5 * k as u64), 3, false);
    }
    // 40 NAT flows that close (their conns end in TIME_WAIT, sent at once on the state change).
    let closed: Vec<usize> = (0..40).map(|_| sim.flow(false, web, None)).collect();
    for (k, f) in closed.iter().enumerate() {
        sim.start(*f, ms(3 + 5 * k as u64), 2, true);
    }
    // 5 NAT flows with only 2 client packets (SYN, ACK): below the sync threshold, never synced.
    let short: Vec<usize> = (0..5).map(|_| sim.flow(false, web, None)).collect();
    for (k, f) in short.iter().enumerate() {
        sim.start(*f, ms(7 + 5 * k as u64), 0, false);
    }
    // 20 persistent clients, 2 DR connections each, held open.
    let mut tls_clients = Vec::new();
    let mut tls_flows = Vec::new();
    for k in 0..20u8 {
        let ip = Ipv4Addr::new(100, 65, k, 1);
        tls_clients.push(ip);
        for j in 0..2u64 {
            let f = sim.flow(false, tls, Some(ip));
            sim.start(f, ms(1000 + 20 * u64::from(k) + 7 * j), 3, false);
            tls_flows.push(f);
        }
    }
    // 50 UDP flows of 4 datagrams.
    let udp: Vec<usize> = (0..50).map(|_| sim.flow(true, dns, None)).collect();
    for (k, f) in udp.iter().enumerate() {
        sim.start(*f, ms(1500 + 4 * k as u64), 4, false);
    }
    sim.run_until(secs(5));

    // ---- the backup holds the same conns ----
    let now = sim.now;
    let m = conn_map(&sim.directors[0].engine, now);
    let b = conn_map(&sim.directors[1].engine, now);
    let mut compared = 0;
    let mut not_synced = 0;
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, mc) in &m {
        // Sent at the 3rd client packet (templates with each of their conns' updates).
        if !mc.is_template() && mc.in_pkts < 3 {
            not_synced += 1;
            assert!(!b.contains_key(key), "a conn below the sync threshold is not on the backup");
            continue;
        }
        let bc = b.get(key).unwrap_or_else(|| panic!("backup lacks {key:?} ({})", mc.state));
        assert_eq!((bc.real, bc.state, bc.fwmark), (mc.real, mc.state, mc.fwmark), "{key:?}");
        assert!(bc.flags.contains(ConnFlags::SYNC) && !mc.flags.contains(ConnFlags::SYNC));
        let diff = bc.expires.total_millis().abs_diff(mc.expires.total_millis());
        assert!(diff <= 1000, "{key:?}: remaining time differs by {diff} ms");
        let bd = sim.directors[1].engine.dest(bc.dest.unwrap()).unwrap();
        assert_eq!(bd.config.addr.ip(), mc.real.ip(), "bound to the backup's own real server of that address");
        *by_state.entry(mc.state).or_default() += 1;
        compared += 1;
    }
    assert_eq!(not_synced, short.len());
    assert_eq!(b.len(), compared, "the backup has nothing else");
    // Per real server, the backup counts the synced conns as the master does.
    for (ip, _) in sim.servers.iter() {
        let (md, bd) = (&sim.directors[0], &sim.directors[1]);
        let mi = md.engine.dest(md.dest_id(*ip).unwrap()).unwrap();
        let bi = bd.engine.dest(bd.dest_id(*ip).unwrap()).unwrap();
        let short_here = short.iter().filter(|f| sim.owner_of(**f) == Some(*ip)).count() as u32;
        assert_eq!(
            (mi.active_conns - short_here, mi.inactive_conns, mi.persist_conns),
            (bi.active_conns, bi.inactive_conns, bi.persist_conns),
            "{ip}"
        );
    }
    let master_stats = sim.directors[0].engine.with_sync_master(|m| m.stats()).unwrap();
    println!(
        "[sync] master: {} conns+templates, {} below the threshold; backup: {compared} equal ({by_state:?}); {} sync \
         datagrams, {} records ({} updates skipped by the kernel's rules); backup applied {:?}",
        m.len(),
        not_synced,
        sim.directors[0].sync_sent,
        master_stats.records_sent,
        master_stats.skipped_total(),
        sim.directors[1].sync_applied
    );

    // ---- a late backup catches up by bulk resync ----
    sim.directors[2].alive = true;
    let late_backup = Backup::new(sim.directors[2].engine.sync_backup_config()).unwrap();
    sim.directors[2].engine.start_sync_backup(late_backup).unwrap();
    sim.directors[2].engine.with_sync_backup(|b| b.request_resync(now));
    sim.run_until(secs(6));
    let l = conn_map(&sim.directors[2].engine, sim.now);
    let b = conn_map(&sim.directors[1].engine, sim.now);
    // The dump carries the whole table, the conns below the sync threshold too; both backups apply it.
    assert_eq!(l.len(), m.len(), "the late backup got the whole table");
    assert_eq!(b.len(), m.len(), "the first backup applied the dump as well");
    for (key, bc) in &b {
        let lc = &l[key];
        assert_eq!((lc.real, lc.state), (bc.real, bc.state), "{key:?}");
        assert!(lc.expires.total_millis().abs_diff(bc.expires.total_millis()) <= 1500, "{key:?}");
    }
    let late_events: Vec<_> = std::iter::from_fn(|| sim.directors[2].engine.poll_sync_event()).collect();
    println!("[sync] late backup: {} conns by bulk resync, events {late_events:?}", l.len());
    sim.directors[2].alive = false;

    // ---- failover: the master dies, the backup takes the virtual address ----
    let t_fail = secs(10);
    sim.run_until(t_fail);
    sim.directors[0].alive = false;
    sim.active = 1;
    sim.directors[1].engine.stop_sync_backup();
    let created_before = sim.directors[1].conns_created();
    let owners_before: HashMap<usize, IpAddr> =
        (0..sim.flows.len()).filter_map(|f| sim.owner_of(f).map(|o| (f, o))).collect();
    let pkts_before: u64 = sim.servers.values().map(|s| s.packets).sum();
    for &f in held.iter().chain(&tls_flows).chain(&udp) {
        sim.act(t_fail + Duration::from_millis(10), Act::Send(f, 2));
    }
    for &f in &short {
        sim.act(t_fail + Duration::from_millis(10), Act::Send(f, 1));
    }
    // Each persistent client opens one more connection.
    let mut tls_new = Vec::new();
    for (k, ip) in tls_clients.iter().enumerate() {
        let f = sim.flow(false, tls, Some(*ip));
        sim.start(f, t_fail + Duration::from_millis(100 + 5 * k as u64), 1, false);
        tls_new.push(f);
    }
    sim.run_until(t_fail + Duration::from_secs(5));
    let forwarded_after: u64 = sim.servers.values().map(|s| s.packets).sum::<u64>() - pkts_before;
    // Every synced flow's packets reached its real server (two each), without a new conn.
    let synced_flows = held.len() + tls_flows.len() + udp.len();
    assert_eq!(sim.moved, 0);
    let new_conns = sim.directors[1].conns_created() - created_before;
    assert_eq!(new_conns, tls_new.len(), "only the new persistent connections were created");
    for (i, f) in tls_new.iter().enumerate() {
        let first = tls_flows[2 * i];
        assert_eq!(sim.owner_of(*f), owners_before.get(&first).copied(), "persistent client {i} kept its real server");
    }
    // The short flows reached the backup with the bulk resync: their segment is forwarded too.
    let pass = sim.directors[1].verdicts.get("pass").copied().unwrap_or(0);
    assert_eq!(pass, 0);
    // Two segments per synced flow, one per short flow; SYN, ACK and one segment per new persistent connection.
    assert_eq!(forwarded_after, 2 * synced_flows as u64 + short.len() as u64 + tls_new.len() as u64 * 3);
    // Closing after failover works on the backup: the synced conns go through FIN to TIME_WAIT.
    for &f in &held {
        sim.act(t_fail + Duration::from_secs(6), Act::Close(f));
    }
    sim.run_until(t_fail + Duration::from_secs(7));
    let tw = sim.directors[1].engine.conns(sim.now).iter().filter(|c| c.state == "TIME_WAIT").count();
    assert_eq!(tw, held.len() + closed.len());
    sim.run_until_idle(100_000);
    assert_eq!(sim.moved, 0);
    assert_eq!(sim.strays, 0);
    assert_eq!(sim.bad_source, 0);
    sim.summary("sync");
    println!(
        "[sync] failover at {:.0}s: {synced_flows} synced flows continued on the backup ({forwarded_after} packets to \
         the same real servers, 0 moved, 0 rescheduled), so did the {} flows below the threshold (synced by the \
         bulk resync); {} persistent clients kept their real server; lost to the dead master: {}",
        t_fail.total_millis() as f64 / 1000.0,
        short.len(),
        tls_new.len(),
        sim.lost
    );
}
