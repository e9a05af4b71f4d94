//! The packet path (facts §4): [`Engine::handle_packet`] and [`Engine::handle_burst`].
//!
//! Client side ("in" hook, facts §4.1): parse; ICMP errors go to the ICMP path (facts §5.6); look the conn
//! up; a new SYN/INIT on a closing conn expires it (`conn_reuse_mode`); a conn whose real server was removed is
//! expired, served or dropped by the sysctls; a miss schedules (facts §4.3–§4.5, §8): protocol trigger, service
//! lookup, `drop_packet` defense, persistence template, scheduler, conn creation — or `ip_vs_leave`'s port
//! unreachable. Then statistics, the state transition (INPUT or INPUT_ONLY), and the transmitter of the
//! conn's forwarding method (facts §9).
//!
//! Persistent `--pe sip` services (facts §8.1 step 3, §8.5; [`crate::pe_sip`]): the template key carries the
//! packet's SIP Call-ID, looked up and created with it; a new flow without a usable Call-ID is dropped
//! ([`DropReason::PersistenceEngine`]).
//!
//! Real-server side ("out" hook, facts §4.2): NAT replies are found by the real-server tuple and get their
//! source rewritten back to the virtual service (state transition OUTPUT); a UDP packet from a NAT real server
//! of a `--pe sip` service that matches nothing starts a call (the SIP engine's `conn_out`: conn, and template
//! for persistent services, then handled as a reply); other unmatched replies pass (or, with `nat_icmp_send`,
//! are answered with a port unreachable).

use std::net::{IpAddr, SocketAddr};

use ipvs_conn::{ConnId, ConnMut, ConnView, InKey, InMiss, InsertError, NewConn, OutKey, TEMPLATE_ASSURED};
use ipvs_proto::nat::{self, Encap};
use ipvs_proto::state::{self, sctp, tcp, udp, SctpState, TcpState, UdpState};
use ipvs_proto::wire::ip::{self, Fragment, IpHeaders};
use ipvs_proto::wire::{icmpv4, icmpv6, SctpPacket, TcpPacket};
use ipvs_proto::{AddressFamily, ConnFlags, Duration, FwdMethod, Instant, Protocol, ServiceKey};
use ipvs_sched::SchedFlow;

use crate::config::{TunnelConfig, TunnelCsum, TunnelKind};
use crate::engine::{Engine, ProtoTimeouts, NEW_CONN_TIMEOUT};
use crate::events::{Event, EventQueue};
use crate::forward::{self, IPV4_MIN_MTU, IPV6_MIN_MTU};
use crate::pe_sip;
use crate::persistence::{self, FTP_PORT};
use crate::service::{ControlState, DestSlot, ServiceSlot};
use crate::verdict::{Direction, DropReason, IcmpKind, PacketBuf, Verdict};

/// The FTP data port: packets from it are never scheduled (facts §4.4 step 2).
const FTP_DATA_PORT: u16 = 20;
/// The SCTP ABORT chunk type.
const SCTP_ABORT: u8 = 6;
/// TCP RST flag.
const TCP_RST: u8 = 0x04;
/// Largest burst handled with one batched lookup.
const BURST: usize = 32;

/// What the transport header says, for the protocols IPVS balances.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// TCP, with the flags byte.
    Tcp { flags: u8 },
    /// UDP.
    Udp,
    /// SCTP, with the types of the first chunk and of the one after it (if the packet holds them).
    Sctp { first: Option<u8>, second: Option<u8> },
}

/// The layer-4 view of a packet.
#[derive(Clone, Copy, Debug)]
enum L4 {
    /// TCP, UDP or SCTP with its ports (not a later fragment).
    Ports { sport: u16, dport: u16, transport: Transport },
    /// ICMP (IPv4) or ICMPv6.
    Icmp,
    /// A later fragment of TCP, UDP or SCTP: no header to read.
    LaterFragment,
    /// Any other protocol.
    Other,
}

/// What the engine reads of a packet before deciding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PacketInfo {
    hdr: IpHeaders,
    l4: L4,
}

impl PacketInfo {
    fn is_fragment(&self) -> bool {
        self.hdr.fragment != Fragment::None
    }
}

/// Parses the IP header and the transport header's ports.
fn classify(pkt: &[u8]) -> Result<PacketInfo, DropReason> {
    let hdr = ip::parse(pkt).map_err(|_| DropReason::Malformed)?;
    let l4 = match hdr.protocol {
        Protocol::Tcp | Protocol::Udp | Protocol::Sctp if hdr.fragment == Fragment::Later => L4::LaterFragment,
        Protocol::Tcp => {
            let seg = TcpPacket::new_checked(hdr.l4(pkt)).map_err(|_| DropReason::Malformed)?;
            L4::Ports {
                sport: seg.src_port(),
                dport: seg.dst_port(),
                transport: Transport::Tcp { flags: seg.flags().0 },
            }
        }
        Protocol::Udp => {
            let b = hdr.l4(pkt);
            if b.len() < 8 {
                return Err(DropReason::Malformed);
            }
            L4::Ports {
                sport: u16::from_be_bytes([b[0], b[1]]),
                dport: u16::from_be_bytes([b[2], b[3]]),
                transport: Transport::Udp,
            }
        }
        Protocol::Sctp => {
            let b = hdr.l4(pkt);
            let p = SctpPacket::new_checked(b).map_err(|_| DropReason::Malformed)?;
            let (first, second) = sctp_chunk_types(b);
            L4::Ports { sport: p.src_port(), dport: p.dst_port(), transport: Transport::Sctp { first, second } }
        }
        Protocol::Icmp if hdr.family() == ipvs_proto::AddressFamily::Inet => L4::Icmp,
        Protocol::Icmpv6 if hdr.family() == ipvs_proto::AddressFamily::Inet6 => L4::Icmp,
        _ => L4::Other,
    };
    Ok(PacketInfo { hdr, l4 })
}

/// The type of the first chunk of an SCTP packet and of the chunk at `ALIGN4(first length)` after it (facts
/// §5.4), when present.
fn sctp_chunk_types(sctp: &[u8]) -> (Option<u8>, Option<u8>) {
    const COMMON: usize = 12;
    let Some(first) = sctp.get(COMMON..COMMON + 4) else { return (None, None) };
    let len = usize::from(u16::from_be_bytes([first[2], first[3]]));
    let next = COMMON + ((len + 3) & !3);
    let second = if len >= 4 { sctp.get(next).copied() } else { None };
    (Some(first[0]), second)
}

impl Transport {
    fn protocol(self) -> Protocol {
        match self {
            Self::Tcp { .. } => Protocol::Tcp,
            Self::Udp => Protocol::Udp,
            Self::Sctp { .. } => Protocol::Sctp,
        }
    }

    /// A packet that starts a connection, for port reuse (TCP SYN, SCTP INIT).
    fn is_new_conn_packet(self) -> bool {
        match self {
            Self::Tcp { flags } => tcp::is_new_conn_packet(flags),
            Self::Udp => false,
            Self::Sctp { first, .. } => first.is_some_and(sctp::is_new_conn_packet),
        }
    }

    /// Whether a packet that matches no conn may create one (facts §4.3).
    fn schedules(self, sysctls: &crate::engine::Sysctls) -> bool {
        match self {
            Self::Tcp { flags } => tcp::schedules_new_conn(flags, sysctls.sloppy_tcp),
            Self::Udp => true,
            Self::Sctp { first, .. } => first.is_some_and(|t| sctp::schedules_new_conn(t, sysctls.sloppy_sctp)),
        }
    }

    /// TCP RST or SCTP ABORT first chunk (what `nat_icmp_send` does not answer).
    fn is_reset(self) -> bool {
        match self {
            Self::Tcp { flags } => flags & TCP_RST != 0,
            Self::Udp => false,
            Self::Sctp { first, .. } => first == Some(SCTP_ABORT),
        }
    }
}

/// A conn the packet path works with: in the table, or a one-packet conn that never enters it.
#[derive(Clone, Copy, Debug)]
struct Conn {
    /// `None` for a one-packet conn.
    id: Option<ConnId>,
    view: ConnView,
    /// The template of a one-packet conn created through persistence.
    control: Option<ConnId>,
}

/// A flow about to be scheduled.
#[derive(Clone, Copy, Debug)]
struct NewFlow {
    protocol: Protocol,
    client: SocketAddr,
    virt: SocketAddr,
    fwmark: u32,
    /// Scheduled from the header quoted in an ICMP error (`schedule_icmp`).
    icmp: bool,
    /// The conn lookup's miss for this flow: the insert reuses its hash instead of hashing the flow again.
    miss: Option<InMiss>,
}

/// How [`Engine::create`] inserts its entry.
#[derive(Clone, Copy, Debug)]
enum Insert<'a> {
    /// The conn of a flow whose lookup just missed: the table reuses the miss's hash.
    AfterMiss(&'a InMiss),
    /// Hashed by the table (no miss at hand).
    Hash,
    /// A template of a `--pe sip` service, with its persistence-engine data (the SIP Call-ID).
    PeData(&'a [u8]),
}

impl<'a> Insert<'a> {
    /// The conn of `flow`: after its lookup's miss when there was one.
    fn of_flow(flow: &'a NewFlow) -> Self {
        flow.miss.as_ref().map_or(Self::Hash, Self::AfterMiss)
    }
}

/// What a state update did, for the work done after the table lock is released.
#[derive(Clone, Copy, Debug)]
struct Updated {
    /// The state before the packet.
    prev_state: u8,
    assures_template: bool,
    /// The controlling template; read only when `assures_template` (otherwise `None`).
    control: Option<ConnId>,
    view: ConnView,
    pkts: u32,
}

/// The state transition of one packet on a conn, with its side effects (facts §5): the new state and its
/// timeout, `NOOUTPUT` cleared by a reply, the real server's active/inactive counters and the conn's
/// `INACTIVE` flag, `in_pkts` for client packets. Runs under the conn's shard lock.
fn transition(
    c: &mut ConnMut<'_>,
    transport: Transport,
    reply: bool,
    secure_tcp: bool,
    timeouts: &ProtoTimeouts,
    dest: Option<&DestSlot>,
    events: &EventQueue,
) -> Updated {
    let prev_state = c.state();
    let mut flags = c.flags();
    let dir = state::direction(reply, flags);
    if state::clears_nooutput(reply, flags) {
        flags.set(ConnFlags::NOOUTPUT, false);
    }
    let step = match transport {
        Transport::Tcp { flags: tcp_flags } => {
            let cur = TcpState::from_u8(c.state()).unwrap_or(TcpState::None);
            let t = tcp::transition(cur, dir, tcp::event_from_flags(tcp_flags), secure_tcp);
            Some((
                t.new_state.as_u8(),
                timeouts.tcp.timeout(t.new_state),
                t.counter_flip(flags.contains(ConnFlags::INACTIVE)),
                t.assures_template,
            ))
        }
        Transport::Udp => {
            let t = udp::transition(UdpState::Normal, dir);
            Some((UdpState::Normal.as_u8(), timeouts.udp.timeout(t.new_state), None, t.assures_template))
        }
        Transport::Sctp { first: Some(first), second } => {
            let cur = SctpState::from_u8(c.state()).unwrap_or(SctpState::None);
            let t = sctp::transition(cur, dir, sctp::event_from_chunks(first, second));
            Some((
                t.new_state.as_u8(),
                timeouts.sctp.timeout(t.new_state),
                t.counter_flip(flags.contains(ConnFlags::INACTIVE)),
                t.assures_template,
            ))
        }
        // No chunk to read: the kernel leaves the state alone.
        Transport::Sctp { first: None, .. } => None,
    };
    let mut assures_template = false;
    if let Some((new_state, timeout, flip, assures)) = step {
        c.set_state(new_state);
        c.set_timeout(timeout);
        assures_template = assures;
        if let (Some(active), Some(d)) = (flip, dest.filter(|d| Some(d.id) == c.dest())) {
            flags.set(ConnFlags::INACTIVE, !active);
            d.update_state(events, |s| if active { s.conn_became_active() } else { s.conn_became_inactive() });
        }
    }
    c.set_flags(flags);
    let pkts = if reply { c.in_pkts() } else { c.inc_in_pkts() };
    // The controller link lives in the conn's cold part: read it only when it is needed (a transition that
    // assures the template), so an established packet touches the hot line alone.
    let control = if assures_template { c.control() } else { None };
    Updated { prev_state, assures_template, control, view: c.view(), pkts }
}

/// The view of a conn that was not inserted (one-packet), as it would have been.
fn view_of_new(n: &NewConn, now: Instant) -> ConnView {
    ConnView {
        protocol: n.protocol,
        caddr: n.caddr,
        cport: n.cport,
        vaddr: n.vaddr,
        vport: n.vport,
        daddr: n.daddr,
        dport: n.dport,
        flags: n.flags,
        state: n.state,
        dest: n.dest,
        fwmark: n.fwmark,
        timeout: n.timeout,
        expires: now + n.timeout,
        n_control: 0,
        in_pkts: 0,
    }
}

/// The encapsulation of a tunnel real server.
fn encap_of(t: TunnelConfig, src_port: u16) -> Encap {
    let csum = t.csum != TunnelCsum::NoCsum;
    match t.kind {
        TunnelKind::Ipip => Encap::Ipip,
        TunnelKind::Gue => Encap::Gue { src_port, dst_port: t.port, checksum: csum },
        TunnelKind::Gre => Encap::Gre { checksum: t.csum == TunnelCsum::Csum },
    }
}

/// Whether the ICMP / ICMPv6 message at `l4` is an error IPVS relates to conns (facts §5.6).
fn icmp_is_error(hdr: &IpHeaders, l4: &[u8]) -> bool {
    match hdr.protocol {
        Protocol::Icmp => icmpv4::Packet::new_checked(l4).is_ok_and(|p| p.msg_type().is_error()),
        _ => icmpv6::Packet::new_checked(l4).is_ok_and(|p| p.msg_type().is_error()),
    }
}

/// Whether the ICMP / ICMPv6 checksum of the message at `l4` verifies.
fn icmp_checksum_ok(hdr: &IpHeaders, l4: &[u8]) -> bool {
    match (hdr.src_addr, hdr.dst_addr) {
        (IpAddr::V6(s), IpAddr::V6(d)) => icmpv6::Packet::new_checked(l4).is_ok_and(|p| p.verify_checksum(&s, &d)),
        _ => icmpv4::Packet::new_checked(l4).is_ok_and(|p| p.verify_checksum()),
    }
}

/// The flow quoted in an ICMP error: protocol, quoted source and destination (with ports).
fn quoted_flow(hdr: &IpHeaders, pkt: &[u8]) -> Option<(Protocol, SocketAddr, SocketAddr)> {
    let quote = hdr.l4(pkt).get(icmpv4::HEADER_LEN..)?;
    let inner = ip::parse_embedded(quote).ok()?;
    if !inner.protocol.has_ports() || inner.fragment == Fragment::Later || inner.family() != hdr.family() {
        return None;
    }
    let b = inner.l4(quote);
    let (sport, dport) = (u16::from_be_bytes([*b.first()?, *b.get(1)?]), u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
    Some((inner.protocol, SocketAddr::new(inner.src_addr, sport), SocketAddr::new(inner.dst_addr, dport)))
}

/// # Packet path
impl Engine {
    /// Handles one packet that arrived from `direction` at time `now` and says what to do with it; the
    /// rewrite of the forwarding method (NAT, tunnel) or the ICMP error to send is already in `buf`.
    ///
    /// The packet must start with its IP header; give whole datagrams (fragments of IPVS traffic are dropped,
    /// [`DropReason::Fragment`]).
    pub fn handle_packet(&self, now: Instant, buf: &mut PacketBuf<'_>, direction: Direction) -> Verdict {
        let ctl = self.ctl.read();
        let verdict = match classify(buf.packet()) {
            Err(reason) => Verdict::Drop(reason),
            Ok(info) => match direction {
                Direction::FromClient => self.inbound(now, &ctl, buf, &info, None),
                Direction::FromRealServer => self.outbound(now, &ctl, buf, &info),
            },
        };
        if let Verdict::Drop(reason) = verdict {
            self.drops.count(reason);
        }
        verdict
    }

    /// Handles a burst of packets from one side: `verdicts[i]` gets the verdict of `bufs[i]` (for `i` below the
    /// shorter length). Client packets are parsed first and their conns looked up together (the table hashes
    /// every key and prefetches before probing), then each is handled in order — the same verdicts, in the
    /// same order, as `handle_packet` one by one.
    pub fn handle_burst(
        &self,
        now: Instant,
        bufs: &mut [PacketBuf<'_>],
        direction: Direction,
        verdicts: &mut [Verdict],
    ) {
        let n = bufs.len().min(verdicts.len());
        let ctl = self.ctl.read();
        let mut start = 0;
        while start < n {
            let end = (start + BURST).min(n);
            let mut infos: [Option<Result<PacketInfo, DropReason>>; BURST] = [None; BURST];
            let mut hints: [Option<Option<(ConnId, ConnView)>>; BURST] = [None; BURST];
            if direction == Direction::FromClient {
                let placeholder = InKey::new(Protocol::Tcp, IpAddr::from([0u8; 4]), 0, IpAddr::from([0u8; 4]), 0);
                let mut keys = [placeholder; BURST];
                let mut which = [0usize; BURST];
                let mut n_keys = 0;
                for (j, buf) in bufs[start..end].iter().enumerate() {
                    let info = classify(buf.packet());
                    if let Ok(PacketInfo { hdr, l4: L4::Ports { sport, dport, transport } }) = info {
                        if hdr.fragment == Fragment::None {
                            keys[n_keys] = InKey::new(transport.protocol(), hdr.src_addr, sport, hdr.dst_addr, dport);
                            which[n_keys] = j;
                            n_keys += 1;
                        }
                    }
                    infos[j] = Some(info);
                }
                let mut found = [None; BURST];
                self.conns.lookup_burst(&keys[..n_keys], &mut found[..n_keys]);
                for k in 0..n_keys {
                    hints[which[k]] = Some(found[k]);
                }
            }
            for j in 0..end - start {
                let buf = &mut bufs[start + j];
                let info = infos[j].take().unwrap_or_else(|| classify(buf.packet()));
                let verdict = match info {
                    Err(reason) => Verdict::Drop(reason),
                    Ok(info) => match direction {
                        Direction::FromClient => self.inbound(now, &ctl, buf, &info, hints[j]),
                        Direction::FromRealServer => self.outbound(now, &ctl, buf, &info),
                    },
                };
                if let Verdict::Drop(reason) = verdict {
                    self.drops.count(reason);
                }
                verdicts[start + j] = verdict;
            }
            start = end;
        }
    }

    /// A packet from a client.
    fn inbound(
        &self,
        now: Instant,
        ctl: &ControlState,
        buf: &mut PacketBuf<'_>,
        info: &PacketInfo,
        hint: Option<Option<(ConnId, ConnView)>>,
    ) -> Verdict {
        let (sport, dport, transport) = match info.l4 {
            L4::Icmp => return self.inbound_icmp(now, ctl, buf, info),
            L4::Other => return Verdict::Pass,
            L4::LaterFragment => return self.fragment_verdict(ctl, info.hdr.dst_addr, buf.fwmark() != 0),
            L4::Ports { .. } if info.is_fragment() => {
                return self.fragment_verdict(ctl, info.hdr.dst_addr, buf.fwmark() != 0)
            }
            L4::Ports { sport, dport, transport } => (sport, dport, transport),
        };
        let hdr = &info.hdr;
        let protocol = transport.protocol();
        let key = InKey::new(protocol, hdr.src_addr, sport, hdr.dst_addr, dport);
        let sys = ctl.sysctls;
        // The hint of a burst may be stale by now (an earlier packet expired or created the conn): the update
        // below notices a stale handle and looks again, once.
        for attempt in 0..2 {
            // A miss in the hint is looked up again: an earlier packet of the burst may have created the conn
            // (misses are new flows, the rare case).
            // A SYN/INIT decides on port reuse from the conn's state, which an earlier packet may have moved:
            // it looks up afresh too.
            let mut miss = None;
            let mut hit = match (attempt, hint) {
                (0, Some(Some(h))) if !transport.is_new_conn_packet() => Some(h),
                // Only a packet that may create a conn keeps its miss (for the insert); the others take the plain
                // lookup, whose hit path returns less.
                _ if transport.schedules(&sys) => match self.conns.lookup_in_or_miss(&key) {
                    Ok(h) => Some(h),
                    Err(m) => {
                        miss = Some(m);
                        None
                    }
                },
                _ => self.conns.lookup_in(&key),
            };
            // Port reuse (facts §4.1 step 5).
            if let Some((id, view)) = hit {
                if sys.conn_reuse_mode != 0 && transport.is_new_conn_packet() {
                    let dest = view.dest.and_then(|d| ctl.dest(d));
                    let quiescent = sys.expire_nodest_conn && dest.is_some_and(|d| d.weight() == 0);
                    let expected = expects_new_conn(&view, sys.conn_reuse_mode)
                        && self.conns.with_conn(id, |c| c.control().is_none()).unwrap_or(false);
                    if quiescent || expected {
                        if view.n_control == 0 {
                            self.expire_conn(ctl, id);
                        }
                        hit = None;
                    }
                }
            }
            // The conn's real server was removed (facts §4.1 step 6).
            if let Some((id, view)) = hit {
                if let Some(dest) = view.dest {
                    if !ctl.dest(dest).is_some_and(|d| d.linked) {
                        if sys.expire_nodest_conn {
                            if view.n_control == 0 {
                                self.expire_conn(ctl, id);
                            }
                            hit = None;
                        } else if !sys.serve_removed_dests {
                            return Verdict::Drop(DropReason::DestUnavailable);
                        }
                    }
                }
            }
            let conn = match hit {
                Some((id, view)) => Conn { id: Some(id), view, control: None },
                None => {
                    if !transport.schedules(&sys) {
                        return Verdict::Pass;
                    }
                    let flow = NewFlow {
                        protocol,
                        client: SocketAddr::new(hdr.src_addr, sport),
                        virt: SocketAddr::new(hdr.dst_addr, dport),
                        fwmark: buf.fwmark(),
                        icmp: false,
                        miss,
                    };
                    match self.schedule(now, ctl, buf, &flow) {
                        Ok(c) => c,
                        Err(v) => return v,
                    }
                }
            };
            match self.client_packet(now, ctl, buf, hdr, transport, conn) {
                Some(v) => return v,
                None => continue,
            }
        }
        Verdict::Pass
    }

    /// Statistics, state transition and transmission of a client packet of `conn`. `None` if the conn
    /// vanished before its update (look it up again).
    fn client_packet(
        &self,
        now: Instant,
        ctl: &ControlState,
        buf: &mut PacketBuf<'_>,
        hdr: &IpHeaders,
        transport: Transport,
        conn: Conn,
    ) -> Option<Verdict> {
        let dest = conn.view.dest.and_then(|d| ctl.dest(d));
        let secure = self.defense.secure_tcp_active();
        let view = match conn.id {
            Some(id) => {
                let up = self
                    .conns
                    .update(now, id, |c| transition(c, transport, false, secure, &ctl.timeouts, dest, &self.events))?;
                if up.assures_template {
                    if let Some(tpl) = up.control {
                        self.assure_template(tpl);
                    }
                }
                self.sync_client_packet(now, id, &up.view, up.pkts);
                up.view
            }
            None => conn.view,
        };
        self.count_in(dest, buf.len());
        let verdict = self.transmit(ctl, buf, hdr, &view, dest, false);
        if conn.id.is_none() {
            // One-packet conn: forwarded, now freed (its template, if any, counts the packet).
            if let Some(d) = dest {
                d.update_state(&self.events, |s| s.unbind_conn(false));
            }
            // A running sync master counts the packet on the template itself (facts §3.6).
            let synced = self.sync_one_packet(now, &view, conn.control);
            if let Some(tpl) = conn.control.filter(|_| !synced) {
                self.conns.with_conn(tpl, |t| {
                    t.inc_in_pkts();
                });
            }
        }
        Some(verdict)
    }

    /// Marks a template ASSURED (a controlled conn reached ESTABLISHED, or a UDP reply was seen).
    fn assure_template(&self, tpl: ConnId) {
        self.conns.with_conn(tpl, |t| {
            if t.flags().contains(ConnFlags::TEMPLATE) {
                t.set_state(TEMPLATE_ASSURED);
            }
        });
    }

    /// Removes a conn now (port reuse, removed real server) and settles its counters.
    fn expire_conn(&self, ctl: &ControlState, id: ConnId) {
        if let Ok(e) = self.conns.expire(id) {
            self.settle_expired(ctl, std::slice::from_ref(&e));
        }
    }

    /// A fragment: dropped if it is IPVS traffic (to a virtual address, or marked), else none of our business.
    fn fragment_verdict(&self, ctl: &ControlState, dst: IpAddr, marked: bool) -> Verdict {
        if ctl.is_vip(&dst) || marked {
            Verdict::Drop(DropReason::Fragment)
        } else {
            Verdict::Pass
        }
    }

    fn count_in(&self, dest: Option<&DestSlot>, len: usize) {
        if let Some(d) = dest.filter(|d| d.linked) {
            let len = len as u64;
            d.stats.counters().add_in(len);
            d.service_stats.counters().add_in(len);
            self.total_stats.counters().add_in(len);
        }
    }

    fn count_out(&self, dest: Option<&DestSlot>, len: usize) {
        if let Some(d) = dest.filter(|d| d.linked) {
            let len = len as u64;
            d.stats.counters().add_out(len);
            d.service_stats.counters().add_out(len);
            self.total_stats.counters().add_out(len);
        }
    }

    // ---- scheduling (facts §4.3–§4.5, §8) ---------------------------------------------------------------

    /// `conn_schedule` after the protocol trigger: service lookup, `drop_packet`, `ip_vs_schedule`,
    /// `ip_vs_leave`.
    fn schedule(
        &self,
        now: Instant,
        ctl: &ControlState,
        buf: &mut PacketBuf<'_>,
        flow: &NewFlow,
    ) -> Result<Conn, Verdict> {
        let Some(svc) = ctl.find_service(flow.protocol, flow.virt.ip(), flow.virt.port(), flow.fwmark) else {
            return Err(Verdict::Pass);
        };
        if self.defense.should_drop_packet() {
            return Err(Verdict::Drop(DropReason::DefenseDropPacket));
        }
        if flow.client.port() == FTP_DATA_PORT {
            return Err(Verdict::Pass);
        }
        if svc.config.persistence.is_some() {
            return self.schedule_persistent(now, ctl, svc, buf, flow);
        }
        let (svc_port, fwmark_svc) = match svc.config.key {
            ServiceKey::Addr { addr, .. } => (addr.port(), false),
            ServiceKey::Fwmark { .. } => (0, true),
        };
        if !fwmark_svc && flow.virt.port() != svc_port {
            return Err(self.leave(svc, buf, flow));
        }
        let Some(dest) = self.pick(now, ctl, svc, flow) else {
            return Err(self.leave(svc, buf, flow));
        };
        let dport = if dest.config.addr.port() != 0 { dest.config.addr.port() } else { flow.virt.port() };
        let new = self.new_conn(svc, dest, flow, dport);
        self.create(now, svc, dest, new, None, Insert::of_flow(flow))
    }

    /// The scheduler's pick for `flow`.
    fn pick<'c>(&self, now: Instant, ctl: &'c ControlState, svc: &ServiceSlot, flow: &NewFlow) -> Option<&'c DestSlot> {
        let sched_flow =
            SchedFlow { protocol: flow.protocol, client: flow.client, virt: flow.virt, fwmark: flow.fwmark };
        let id = svc.sched.lock().pick(ctl, &svc.dests, &svc.changed, now, &self.slow_start, &sched_flow)?;
        ctl.dest(id)
    }

    /// The new conn of `flow` to `dest` (not yet inserted).
    fn new_conn(&self, svc: &ServiceSlot, dest: &DestSlot, flow: &NewFlow, dport: u16) -> NewConn {
        let mut flags = dest.config.conn_flags();
        if svc.config.one_packet && flow.protocol == Protocol::Udp {
            flags |= ConnFlags::ONE_PACKET;
        }
        // A tunnel real server of the other family: the entry keeps the client's family (see `stored_daddr`).
        let daddr = forward::stored_daddr(dest.config.addr.ip(), AddressFamily::of(&flow.client.ip()));
        let mut n = NewConn::new(flow.protocol, flow.client, flow.virt, SocketAddr::new(daddr, dport))
            .with_dest(dest.id)
            .with_flags(flags)
            .with_timeout(NEW_CONN_TIMEOUT);
        n.fwmark = flow.fwmark;
        n
    }

    /// `ip_vs_sched_persist` (facts §8.2).
    fn schedule_persistent(
        &self,
        now: Instant,
        ctl: &ControlState,
        svc: &ServiceSlot,
        buf: &mut PacketBuf<'_>,
        flow: &NewFlow,
    ) -> Result<Conn, Verdict> {
        let Some(p) = svc.config.persistence else { return Err(Verdict::Pass) };
        let plan = persistence::template_for(
            &svc.config.key,
            p.netmask,
            flow.protocol,
            flow.client.ip(),
            flow.virt.ip(),
            flow.virt.port(),
        );
        // The persistence engine's data (facts §8.1 step 3): no usable Call-ID drops the packet.
        let pe: Option<Vec<u8>> = if uses_sip(svc) {
            let Ok(hdr) = ip::parse(buf.packet()) else { return Err(Verdict::Drop(DropReason::Malformed)) };
            match pe_sip::call_id_of_packet(&hdr, buf.packet()) {
                // An ICMP error's quoted flow is scheduled from the ICMP packet, which is not UDP.
                Ok(id) if !flow.icmp => Some(id.to_vec()),
                _ => return Err(Verdict::Drop(DropReason::PersistenceEngine)),
            }
        } else {
            None
        };
        let mut found = self.conns.lookup_pe_template(&plan.key, pe.as_deref());
        if let Some((tid, tv)) = found {
            // check_template (facts §3.7).
            let valid = tv
                .dest
                .and_then(|d| ctl.dest(d))
                .is_some_and(|d| d.linked && !(ctl.sysctls.expire_quiescent_template && d.weight() == 0));
            if !valid {
                self.conns.invalidate_template(tid);
                found = None;
            }
        }
        let (tid, dest) = match found.and_then(|(tid, tv)| tv.dest.and_then(|d| ctl.dest(d)).map(|d| (tid, d))) {
            Some(t) => t,
            None => {
                let Some(dest) = self.pick(now, ctl, svc, flow) else {
                    return Err(self.leave(svc, buf, flow));
                };
                let dport = if plan.dport_from_dest { dest.config.addr.port() } else { 0 };
                let daddr = forward::stored_daddr(dest.config.addr.ip(), AddressFamily::of(&plan.key.caddr));
                let mut tpl = NewConn::template(
                    &plan.key,
                    SocketAddr::new(daddr, dport),
                    Duration::from_secs(u64::from(p.timeout_secs)),
                )
                .with_dest(dest.id)
                .with_flags(ConnFlags::TEMPLATE | dest.config.conn_flags());
                tpl.fwmark = flow.fwmark;
                let t = self.create(now, svc, dest, tpl, None, pe.as_deref().map_or(Insert::Hash, Insert::PeData))?;
                let Some(tid) = t.id else { return Err(Verdict::Drop(DropReason::ConnInsert)) };
                (tid, dest)
            }
        };
        let dport = persistence::conn_dport(&svc.config.key, flow.virt.port(), dest.config.addr.port());
        let new = self.new_conn(svc, dest, flow, dport).with_control(tid);
        let conn = self.create(now, svc, dest, new, Some(tid), Insert::of_flow(flow));
        // The template is "put": its idle timer restarts.
        self.conns.update(now, tid, |_| ());
        conn
    }

    /// Binds `new` to `dest`, inserts it, counts it (facts §4.4 steps 8–9, §4.6).
    /// `how` says how the table places it (see [`Insert`]).
    fn create(
        &self,
        now: Instant,
        svc: &ServiceSlot,
        dest: &DestSlot,
        new: NewConn,
        control: Option<ConnId>,
        how: Insert<'_>,
    ) -> Result<Conn, Verdict> {
        let template = new.is_template();
        dest.update_state(&self.events, |s| if template { s.bind_template() } else { s.bind_conn(false) });
        let unbind =
            || dest.update_state(&self.events, |s| if template { s.unbind_template() } else { s.unbind_conn(false) });
        let counted = |engine: &Self| {
            if !template {
                dest.stats.counters().add_conn();
                svc.stats.counters().add_conn();
                engine.total_stats.counters().add_conn();
            }
        };
        let inserted = match how {
            Insert::PeData(data) => self.conns.insert_pe_template(now, new, data),
            Insert::AfterMiss(m) => self.conns.insert_after_miss(now, new, m),
            Insert::Hash => self.conns.insert(now, new),
        };
        match inserted {
            Ok(id) => {
                counted(self);
                if !template && self.events.enabled() {
                    self.events.push(Event::ConnCreated {
                        conn: id,
                        protocol: new.protocol,
                        client: new.client(),
                        virt: new.virt(),
                        real: SocketAddr::new(forward::real_daddr(new.daddr, Some(dest)), new.dport),
                        dest: dest.id,
                    });
                }
                Ok(Conn { id: Some(id), view: view_of_new(&new, now), control })
            }
            Err(InsertError::OnePacket) => {
                counted(self);
                Ok(Conn { id: None, view: view_of_new(&new, now), control })
            }
            Err(InsertError::Exists(id)) => {
                // Another packet (thread, or earlier in the burst) created it first.
                unbind();
                match self.conns.get(id) {
                    Some(view) => Ok(Conn { id: Some(id), view, control }),
                    None => Err(Verdict::Drop(DropReason::ConnInsert)),
                }
            }
            Err(InsertError::Full) => {
                unbind();
                Err(Verdict::Drop(DropReason::TableFull))
            }
            Err(_) => {
                unbind();
                Err(Verdict::Drop(DropReason::ConnInsert))
            }
        }
    }

    /// `ip_vs_leave` (facts §4.5): no real server for a new flow.
    fn leave(&self, svc: &ServiceSlot, buf: &mut PacketBuf<'_>, flow: &NewFlow) -> Verdict {
        if let ServiceKey::Addr { addr, .. } = svc.config.key {
            if addr.port() == FTP_PORT && flow.virt.port() != FTP_PORT {
                return Verdict::Pass;
            }
        }
        if flow.icmp {
            return Verdict::Drop(DropReason::IcmpNoConn);
        }
        self.send_icmp(buf, IcmpKind::PortUnreachable, flow.virt.ip(), DropReason::NoDestination)
    }

    // ---- transmit (facts §9) ----------------------------------------------------------------------------

    /// Replaces the packet with an ICMP error `kind` to its source, from the director's address (or `fallback`,
    /// the address the packet was sent to). `otherwise` is the drop reason when no error may be sent.
    fn send_icmp(&self, buf: &mut PacketBuf<'_>, kind: IcmpKind, fallback: IpAddr, otherwise: DropReason) -> Verdict {
        let Ok(hdr) = ip::parse(buf.packet()) else { return Verdict::Drop(DropReason::Malformed) };
        if !forward::may_answer_with_icmp(
            hdr.src_addr,
            hdr.protocol,
            hdr.l4(buf.packet()),
            hdr.fragment == Fragment::Later,
        ) {
            return Verdict::Drop(otherwise);
        }
        let src = match fallback {
            IpAddr::V4(_) => self.local_v4.map_or(fallback, IpAddr::V4),
            IpAddr::V6(_) => self.local_v6.map_or(fallback, IpAddr::V6),
        };
        match forward::emit_icmp_error(buf, src, kind, self.next_ident()) {
            Ok(to) => Verdict::SendIcmp { to, kind },
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// The conn's transmitter. `icmp`: the packet is an ICMP error about the conn (no MTU check, NAT rewrite
    /// done by the caller).
    fn transmit(
        &self,
        ctl: &ControlState,
        buf: &mut PacketBuf<'_>,
        hdr: &IpHeaders,
        view: &ConnView,
        dest: Option<&DestSlot>,
        icmp: bool,
    ) -> Verdict {
        let Some(method) = view.fwd_method() else { return Verdict::Pass };
        let Some(dest_id) = view.dest else { return Verdict::Pass };
        if method == FwdMethod::Local {
            return Verdict::Local;
        }
        if method == FwdMethod::Bypass {
            return Verdict::Pass;
        }
        // TTL first (the kernel decrements it in the route lookup, before the MTU check).
        if !forward::decrement_ttl(buf.packet_mut()) {
            return self.send_icmp(buf, IcmpKind::TimeExceeded, hdr.dst_addr, DropReason::TtlExceeded);
        }
        let route_mtu = dest.and_then(|d| d.mtu).unwrap_or(self.mtu);
        // The real server's address (of the other family than the packet for a mixed-family tunnel).
        let daddr = forward::real_daddr(view.daddr, dest);
        let forward = Verdict::Forward { method, next_hop: daddr, dest: dest_id };
        match method {
            FwdMethod::Masq | FwdMethod::DirectRoute => {
                if !icmp {
                    if let Some(kind) = forward::mtu_error(buf.packet(), route_mtu) {
                        return self.send_icmp(buf, kind, hdr.dst_addr, DropReason::MtuTooSmall);
                    }
                }
                if method == FwdMethod::Masq
                    && !icmp
                    && nat::rewrite_destination(buf.packet_mut(), hdr, view.daddr, view.dport).is_err()
                {
                    return Verdict::Drop(DropReason::RewriteFailed);
                }
                forward
            }
            FwdMethod::Tunnel => {
                let tcfg = dest.and_then(|d| d.config.tunnel_params()).unwrap_or(TunnelConfig::IPIP);
                let src_port =
                    forward::gue_source_port(hdr.src_addr, hdr.dst_addr, view.cport, view.vport, view.protocol);
                // The outer source: the director's address of the real server's family; without one, the VIP
                // (same family only; the control plane refuses mixed-family tunnels without a local address).
                let local = match daddr {
                    IpAddr::V4(_) => self.local_v4.map(IpAddr::V4),
                    IpAddr::V6(_) => self.local_v6.map(IpAddr::V6),
                };
                let Some(src) = local.or(Some(hdr.dst_addr).filter(|a| a.is_ipv4() == daddr.is_ipv4())) else {
                    return Verdict::Drop(DropReason::RewriteFailed);
                };
                let pmtu_disc = ctl.sysctls.pmtu_disc;
                let tunnel = forward::tunnel_for(encap_of(tcfg, src_port), src, daddr, self.next_ident(), pmtu_disc);
                // The outer header is of the real server's family (20 or 40 bytes), and so is the route's minimum.
                let tmtu = u64::from(route_mtu).saturating_sub(forward::tunnel_overhead(&tunnel) as u64);
                let min = if daddr.is_ipv4() { IPV4_MIN_MTU } else { IPV6_MIN_MTU };
                if tmtu < u64::from(min) {
                    return Verdict::Drop(DropReason::MtuTooSmall);
                }
                let tmtu = u32::try_from(tmtu).unwrap_or(u32::MAX);
                if !icmp && (buf.len() as u64) > u64::from(tmtu) {
                    let reject = match hdr.family() {
                        ipvs_proto::AddressFamily::Inet => pmtu_disc && forward::dont_fragment(buf.packet()),
                        ipvs_proto::AddressFamily::Inet6 => true,
                    };
                    if reject {
                        if let Some(kind) = forward::mtu_error(buf.packet(), tmtu) {
                            return self.send_icmp(buf, kind, hdr.dst_addr, DropReason::MtuTooSmall);
                        }
                    }
                }
                match forward::encapsulate(buf, &tunnel) {
                    Ok(()) => forward,
                    Err(reason) => Verdict::Drop(reason),
                }
            }
            FwdMethod::Local | FwdMethod::Bypass => Verdict::Pass,
        }
    }

    // ---- replies (facts §4.2) ---------------------------------------------------------------------------

    /// A packet from a real server.
    fn outbound(&self, now: Instant, ctl: &ControlState, buf: &mut PacketBuf<'_>, info: &PacketInfo) -> Verdict {
        let hdr = &info.hdr;
        let (sport, dport, transport) = match info.l4 {
            L4::Icmp => return self.outbound_icmp(ctl, buf, info),
            L4::Other => return Verdict::Pass,
            L4::LaterFragment => return self.reply_fragment_verdict(ctl, hdr.src_addr),
            L4::Ports { .. } if info.is_fragment() => return self.reply_fragment_verdict(ctl, hdr.src_addr),
            L4::Ports { sport, dport, transport } => (sport, dport, transport),
        };
        let key = OutKey::new(transport.protocol(), hdr.src_addr, sport, hdr.dst_addr, dport);
        let found = match self.conns.lookup_out(&key) {
            Some(hit) => Some(Conn { id: Some(hit.0), view: hit.1, control: None }),
            // A SIP call a real server starts (facts §4.2 step 5, §8.5).
            None if matches!(transport, Transport::Udp) => self.sip_conn_out(now, ctl, buf, hdr, sport, dport),
            None => None,
        };
        let Some(conn) = found else {
            if ctl.sysctls.nat_icmp_send && ctl.is_masq_server(hdr.src_addr, sport) && !transport.is_reset() {
                // (Real servers are unicast, so the error can always be sent.)
                return self.send_icmp(buf, IcmpKind::PortUnreachable, hdr.dst_addr, DropReason::NoDestination);
            }
            return Verdict::Pass;
        };
        let view = conn.view;
        let dest = view.dest.and_then(|d| ctl.dest(d));
        let Some(id) = conn.id else {
            // A one-packet conn of `conn_out`: never in the table; the reply goes out as its conn says.
            if let Some(d) = dest {
                d.update_state(&self.events, |s| s.unbind_conn(false));
            }
            self.count_out(dest, buf.len());
            return self.reply_transmit(buf, hdr, &view, false);
        };
        let secure = self.defense.secure_tcp_active();
        let Some(up) =
            self.conns.update(now, id, |c| transition(c, transport, true, secure, &ctl.timeouts, dest, &self.events))
        else {
            return Verdict::Pass;
        };
        if up.assures_template {
            if let Some(tpl) = up.control {
                self.assure_template(tpl);
            }
        }
        if up.view.state != up.prev_state {
            self.sync_reply_state(now, id);
        }
        self.count_out(dest, buf.len());
        self.reply_transmit(buf, hdr, &up.view, false)
    }

    /// The SIP engine's `conn_out` (facts §8.5): a UDP packet from a NAT real server of a `--pe sip` service
    /// (by source address and port) that matched no conn starts a call toward `hdr.dst_addr:dport`. The conn
    /// that replies from there will find is created — client = the packet's destination, virtual = the
    /// service, real server = the packet's source — and, for a persistent service, a template for the
    /// destination's network and the message's Call-ID pointing at this real server (an existing one pointing
    /// elsewhere is invalidated and replaced), so later requests of the call from any port stick to it. The
    /// packet then goes out as a reply of that conn (NAT: source rewritten to the virtual service).
    ///
    /// `None` (the miss goes on as any other) when the source is no such real server, either port is 0, a
    /// persistent service's message has no usable Call-ID, or the table refuses the conn.
    fn sip_conn_out(
        &self,
        now: Instant,
        ctl: &ControlState,
        buf: &PacketBuf<'_>,
        hdr: &IpHeaders,
        sport: u16,
        dport: u16,
    ) -> Option<Conn> {
        let dest = ctl.sip_server(hdr.src_addr, sport)?;
        let svc = ctl.services.get(&dest.service)?;
        let ServiceKey::Addr { addr: vaddr, .. } = svc.config.key else { return None };
        // `sip_server` lists services with a port only; the packet's ports must be set too.
        if vaddr.port() == 0 || sport == 0 || dport == 0 || !dest.linked {
            return None;
        }
        let client = SocketAddr::new(hdr.dst_addr, dport);
        let flow = NewFlow { protocol: Protocol::Udp, client, virt: vaddr, fwmark: 0, icmp: false, miss: None };
        let control = match svc.config.persistence {
            Some(p) => {
                let call_id = pe_sip::call_id_of_packet(hdr, buf.packet()).ok()?.to_vec();
                let plan = persistence::template_for(
                    &svc.config.key,
                    p.netmask,
                    Protocol::Udp,
                    client.ip(),
                    vaddr.ip(),
                    vaddr.port(),
                );
                let found = self.conns.lookup_pe_template(&plan.key, Some(&call_id));
                let tid = match found {
                    // check_template with this real server required (facts §3.7).
                    Some((tid, tv))
                        if tv.dest == Some(dest.id)
                            && !(ctl.sysctls.expire_quiescent_template && dest.weight() == 0) =>
                    {
                        tid
                    }
                    other => {
                        if let Some((tid, _)) = other {
                            self.conns.invalidate_template(tid);
                        }
                        let dport = if plan.dport_from_dest { dest.config.addr.port() } else { 0 };
                        let tpl = NewConn::template(
                            &plan.key,
                            SocketAddr::new(dest.config.addr.ip(), dport),
                            Duration::from_secs(u64::from(p.timeout_secs)),
                        )
                        .with_dest(dest.id)
                        .with_flags(ConnFlags::TEMPLATE | dest.config.conn_flags());
                        self.create(now, svc, dest, tpl, None, Insert::PeData(&call_id)).ok()?.id?
                    }
                };
                Some(tid)
            }
            None => None,
        };
        let mut new = self.new_conn(svc, dest, &flow, sport);
        if let Some(tid) = control {
            new = new.with_control(tid);
        }
        // (Should the peer's tuple already have a conn to another server, that conn is returned and the packet
        // leaves as its reply: the same source rewrite to the virtual service.)
        let conn = self.create(now, svc, dest, new, control, Insert::Hash).ok();
        if let Some(tid) = control {
            // The template is "put": its idle timer restarts.
            self.conns.update(now, tid, |_| ());
        }
        conn
    }

    /// Sends a reply (or an ICMP error from the real server) on to the client: NAT rewrites the source back
    /// to the virtual service.
    fn reply_transmit(&self, buf: &mut PacketBuf<'_>, hdr: &IpHeaders, view: &ConnView, icmp: bool) -> Verdict {
        let Some(dest) = view.dest else { return Verdict::Pass };
        let method = view.fwd_method().unwrap_or(FwdMethod::Masq);
        if !forward::decrement_ttl(buf.packet_mut()) {
            return self.send_icmp(buf, IcmpKind::TimeExceeded, hdr.dst_addr, DropReason::TtlExceeded);
        }
        if method == FwdMethod::Masq {
            let rewritten = if icmp {
                nat::rewrite_icmp_error_outbound(buf.packet_mut(), hdr, view.virt())
            } else {
                nat::rewrite_source(buf.packet_mut(), hdr, view.vaddr, view.vport)
            };
            if rewritten.is_err() {
                return Verdict::Drop(DropReason::RewriteFailed);
            }
        }
        Verdict::Forward { method, next_hop: hdr.dst_addr, dest }
    }

    fn reply_fragment_verdict(&self, ctl: &ControlState, src: IpAddr) -> Verdict {
        if ctl.is_masq_addr(&src) {
            Verdict::Drop(DropReason::Fragment)
        } else {
            Verdict::Pass
        }
    }

    // ---- ICMP errors (facts §5.6) -----------------------------------------------------------------------

    /// An ICMP error about a tunnel packet the director sent (facts §5.6): the quote is our outer header (from
    /// the director to a tunnel real server) with the IPIP, GUE or GRE header and the client's packet. A new
    /// error goes to the client, quoting its own packet; for "too big", the MTU left for the inner packet (and
    /// nothing when an IPv4 client does not do PMTU discovery: the error passes to the local stack). `None` when
    /// the error is not about one of our tunnels.
    ///
    /// Families: the kernel's case is an ICMPv4 error about IPv4-in-IPv4, relayed with the same type and code.
    /// Beyond the kernel, errors about mixed-family tunnels (IPv4 in IPv6, IPv6 in IPv4) are recognised too:
    /// "too big" (ICMPv6 packet too big / ICMPv4 fragmentation needed) is translated into the client's family
    /// (fragmentation needed for an IPv4 client with DF set, packet too big for an IPv6 one); every other error
    /// passes untranslated (ICMP and ICMPv6 types do not map one to one). Errors about IPv6-in-IPv6 are left
    /// alone, as the kernel leaves them.
    fn tunnel_icmp(&self, ctl: &ControlState, buf: &mut PacketBuf<'_>, hdr: &IpHeaders) -> Option<Verdict> {
        let l4 = hdr.l4(buf.packet());
        // (type, code, rest of header, whether it says "too big" and the MTU it reports).
        let (msg_type, code, rest, too_big) = match hdr.protocol {
            Protocol::Icmp => {
                let icmp = icmpv4::Packet::new_checked(l4).ok()?;
                let big = icmp.msg_type() == icmpv4::Message::DstUnreachable
                    && icmp.code() == icmpv4::dst_unreachable::FRAG_NEEDED;
                let rest = icmp.rest_of_header();
                (u8::from(icmp.msg_type()), icmp.code(), rest, big.then_some(rest & 0xffff))
            }
            Protocol::Icmpv6 => {
                let icmp = icmpv6::Packet::new_checked(l4).ok()?;
                let big = icmp.msg_type() == icmpv6::Message::PktTooBig;
                let rest = icmp.rest_of_header();
                (u8::from(icmp.msg_type()), icmp.code(), rest, big.then_some(rest))
            }
            _ => return None,
        };
        let quote = l4.get(icmpv4::HEADER_LEN..)?;
        let outer = ip::parse_embedded(quote).ok()?;
        let ours = match outer.src_addr {
            IpAddr::V4(a) => self.local_v4 == Some(a),
            IpAddr::V6(a) => self.local_v6 == Some(a),
        } || ctl.is_vip(&outer.src_addr);
        if !ours || outer.fragment != Fragment::None || outer.family() != hdr.family() {
            return None;
        }
        let outer_v6 = outer.src_addr.is_ipv6();
        let t = outer.l4_offset;
        // (where the client's packet starts in the quote, the encapsulation's length, inner family is IPv6).
        let (payload, overhead, inner_v6) = match outer.protocol {
            Protocol::IpIp | Protocol::Ipv6 => {
                if !ctl.is_tunnel_dest(outer.dst_addr, TunnelKind::Ipip, 0) {
                    return None;
                }
                (t, 0, outer.protocol == Protocol::Ipv6)
            }
            Protocol::Udp => {
                let port = u16::from_be_bytes([*quote.get(t + 2)?, *quote.get(t + 3)?]);
                // GUE: version 0, not a control message, carrying IPv4 (IPIP) or IPv6.
                let (b0, ctype) = (*quote.get(t + 8)?, *quote.get(t + 9)?);
                if !ctl.is_tunnel_dest(outer.dst_addr, TunnelKind::Gue, port) || b0 >> 5 != 0 {
                    return None;
                }
                let inner_v6 = match ctype {
                    4 => false,
                    41 => true,
                    _ => return None,
                };
                let gue_len = 4 + usize::from(b0 & 0x1f) * 4;
                (t + 8 + gue_len, 8 + gue_len, inner_v6)
            }
            Protocol::Gre if ctl.is_tunnel_dest(outer.dst_addr, TunnelKind::Gre, 0) => {
                // Only the checksum flag, version 0, an IPv4 or IPv6 payload.
                let flags = u16::from_be_bytes([*quote.get(t)?, *quote.get(t + 1)?]);
                let ethertype = u16::from_be_bytes([*quote.get(t + 2)?, *quote.get(t + 3)?]);
                let inner_v6 = match ethertype {
                    0x0800 => false,
                    0x86dd => true,
                    _ => return None,
                };
                if flags & !0x8000 != 0 {
                    return None;
                }
                let gre_len = if flags & 0x8000 != 0 { 8 } else { 4 };
                (t + gre_len, gre_len, inner_v6)
            }
            _ => return None,
        };
        // IPv6 in IPv6: the kernel relates no such error to a conn; neither do we.
        if outer_v6 && inner_v6 {
            return None;
        }
        let inner_bytes = quote.get(payload..)?;
        let inner = ip::parse_embedded(inner_bytes).ok()?;
        if !inner.protocol.has_ports() || inner.fragment == Fragment::Later || inner.src_addr.is_ipv6() != inner_v6 {
            return None;
        }
        let b = inner.l4(inner_bytes);
        let (sport, dport) =
            (u16::from_be_bytes([*b.first()?, *b.get(1)?]), u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
        let key = InKey::new(inner.protocol, inner.src_addr, sport, inner.dst_addr, dport);
        let (_, view) = self.conns.lookup_in(&key)?;
        let dest = view.dest.and_then(|d| ctl.dest(d));
        if view.fwd_method() != Some(FwdMethod::Tunnel) || forward::real_daddr(view.daddr, dest) != outer.dst_addr {
            return None;
        }
        if !icmp_checksum_ok(hdr, l4) {
            return Some(Verdict::Drop(DropReason::BadIcmpChecksum));
        }
        let kind = match too_big {
            Some(reported) => {
                // An IPv4 client that does not do PMTU discovery gets nothing: the outer DF (copied from the
                // inner one) tells for an IPv4 outer header, the inner DF for an IPv6 one.
                let df = if outer_v6 { inner_bytes.get(6) } else { quote.get(6) };
                if !inner_v6 && df.is_none_or(|f| f & 0x40 == 0) {
                    return Some(Verdict::Pass);
                }
                // The route MTU toward the real server if known (its override), else what the error reports; less
                // the tunnel's headers, when that leaves more than the client family's minimum.
                let mut mtu = dest.and_then(|d| d.mtu).unwrap_or(reported);
                let headers = if outer_v6 { 40 } else { 20 } + overhead as u32;
                let min = if inner_v6 { IPV6_MIN_MTU } else { IPV4_MIN_MTU };
                if mtu > min + headers {
                    mtu -= headers;
                }
                if inner_v6 {
                    IcmpKind::PacketTooBig { mtu }
                } else {
                    IcmpKind::FragNeeded { mtu: u16::try_from(mtu).unwrap_or(u16::MAX) }
                }
            }
            // Another error about a mixed-family tunnel: no translation (see above).
            None if outer_v6 != inner_v6 => return Some(Verdict::Pass),
            None => IcmpKind::Relayed { msg_type, code, rest_of_header: rest },
        };
        if !forward::may_answer_with_icmp(inner.src_addr, inner.protocol, b, false) {
            return Some(Verdict::Drop(DropReason::NoDestination));
        }
        // The client's packet replaces the error in the buffer, then is answered.
        let inner_owned = inner_bytes.to_vec();
        let start = buf.start();
        buf.buffer_mut()[start..start + inner_owned.len()].copy_from_slice(&inner_owned);
        buf.set_range_unchecked(start, inner_owned.len());
        let src = match inner.dst_addr {
            IpAddr::V4(_) => self.local_v4.map_or(inner.dst_addr, IpAddr::V4),
            IpAddr::V6(_) => self.local_v6.map_or(inner.dst_addr, IpAddr::V6),
        };
        Some(match forward::emit_icmp_error(buf, src, kind, self.next_ident()) {
            Ok(to) => Verdict::SendIcmp { to, kind },
            Err(reason) => Verdict::Drop(reason),
        })
    }

    /// An ICMP error from a client about a packet the director sent it (VIP → client).
    fn inbound_icmp(&self, now: Instant, ctl: &ControlState, buf: &mut PacketBuf<'_>, info: &PacketInfo) -> Verdict {
        let hdr = &info.hdr;
        if info.is_fragment() {
            return self.fragment_verdict(ctl, hdr.dst_addr, buf.fwmark() != 0);
        }
        if !icmp_is_error(hdr, hdr.l4(buf.packet())) {
            return Verdict::Pass;
        }
        if let Some(v) = self.tunnel_icmp(ctl, buf, hdr) {
            return v;
        }
        let Some((protocol, quoted_src, quoted_dst)) = quoted_flow(hdr, buf.packet()) else { return Verdict::Pass };
        // The quote runs VIP → client: the conn's client is the quoted destination.
        let key = InKey::new(protocol, quoted_dst.ip(), quoted_dst.port(), quoted_src.ip(), quoted_src.port());
        let conn = match self.conns.lookup_in(&key) {
            Some((id, view)) => Conn { id: Some(id), view, control: None },
            None if ctl.sysctls.schedule_icmp => {
                let flow = NewFlow {
                    protocol,
                    client: quoted_dst,
                    virt: quoted_src,
                    fwmark: buf.fwmark(),
                    icmp: true,
                    miss: None,
                };
                match self.schedule(now, ctl, buf, &flow) {
                    Ok(c) => c,
                    Err(v) => return v,
                }
            }
            None => return Verdict::Pass,
        };
        if !icmp_checksum_ok(hdr, hdr.l4(buf.packet())) {
            return Verdict::Drop(DropReason::BadIcmpChecksum);
        }
        let view = conn.view;
        let dest = view.dest.and_then(|d| ctl.dest(d));
        self.count_in(dest, buf.len());
        let verdict = if view.fwd_method() == Some(FwdMethod::Masq) {
            if !forward::decrement_ttl(buf.packet_mut()) {
                self.send_icmp(buf, IcmpKind::TimeExceeded, hdr.dst_addr, DropReason::TtlExceeded)
            } else if nat::rewrite_icmp_error_inbound(buf.packet_mut(), hdr, view.dest_addr()).is_err() {
                Verdict::Drop(DropReason::RewriteFailed)
            } else {
                match view.dest {
                    Some(dest) => Verdict::Forward { method: FwdMethod::Masq, next_hop: view.daddr, dest },
                    None => Verdict::Pass,
                }
            }
        } else {
            self.transmit(ctl, buf, hdr, &view, dest, true)
        };
        if conn.id.is_none() {
            if let Some(d) = dest {
                d.update_state(&self.events, |s| s.unbind_conn(false));
            }
        }
        verdict
    }

    /// An ICMP error from a real server about a packet of a NAT conn (client → real server).
    fn outbound_icmp(&self, ctl: &ControlState, buf: &mut PacketBuf<'_>, info: &PacketInfo) -> Verdict {
        let hdr = &info.hdr;
        if info.is_fragment() {
            return self.reply_fragment_verdict(ctl, hdr.src_addr);
        }
        if !icmp_is_error(hdr, hdr.l4(buf.packet())) {
            return Verdict::Pass;
        }
        if let Some(v) = self.tunnel_icmp(ctl, buf, hdr) {
            return v;
        }
        let Some((protocol, quoted_src, quoted_dst)) = quoted_flow(hdr, buf.packet()) else { return Verdict::Pass };
        // The quote runs client → real server.
        let key = OutKey::new(protocol, quoted_dst.ip(), quoted_dst.port(), quoted_src.ip(), quoted_src.port());
        let Some((_, view)) = self.conns.lookup_out(&key) else { return Verdict::Pass };
        if !icmp_checksum_ok(hdr, hdr.l4(buf.packet())) {
            return Verdict::Drop(DropReason::BadIcmpChecksum);
        }
        let dest = view.dest.and_then(|d| ctl.dest(d));
        self.count_out(dest, buf.len());
        self.reply_transmit(buf, hdr, &view, true)
    }
}

/// Whether a service's persistence uses the SIP engine.
fn uses_sip(svc: &ServiceSlot) -> bool {
    svc.config.pe_name.as_deref() == Some(pe_sip::NAME)
}

/// The state half of `is_new_conn_expected` (facts §4.1 step 5): TCP TIME_WAIT/CLOSE (and with mode bit 2
/// FIN_WAIT on a `NOOUTPUT` conn), SCTP CLOSED. The other half — the conn has no controller — is checked by
/// the caller.
fn expects_new_conn(view: &ConnView, conn_reuse_mode: u32) -> bool {
    match view.protocol {
        Protocol::Tcp => TcpState::from_u8(view.state)
            .is_some_and(|s| state::tcp_expects_new_conn(s, conn_reuse_mode, view.flags.contains(ConnFlags::NOOUTPUT))),
        Protocol::Sctp => {
            SctpState::from_u8(view.state).is_some_and(|s| state::sctp_expects_new_conn(s, conn_reuse_mode))
        }
        _ => false,
    }
}
