//! Replays the kernel's protocol-state recordings (`testdata/kernel-6.1/*-states*.paths`) through a whole
//! [`Engine`], as real IPv4 packets, and prints what `/proc/net/ip_vs_conn` would show after each one — the
//! `.expected` format. `examples/replay-states.rs` is a thin command-line wrapper around [`replay`].
//!
//! The setup is the recording's (testdata README): a NAT service 10.0.2.100:80 → 10.1.0.1:8080 and a DR service
//! 10.0.2.100:81 → 10.1.0.2:81, both `rr`, TCP (or SCTP), kernel defaults (or `secure_tcp` always on). Each
//! line of a `.paths` file is one flow, `CPORT VPORT STEP...`: `in:FLAGS` is a packet from the client
//! 10.9.0.1:CPORT to 10.0.2.100:VPORT, `out:FLAGS` a reply from 10.1.0.1:8080 to the client. TCP packets have a
//! 20-byte header, a sequence number counting up and ack 1 when A is set; SCTP packets carry verification tag 1
//! and chunks of the recorded lengths (INIT, INIT_ACK, DATA 20 bytes; SACK 16; HEARTBEAT, SHUTDOWN,
//! COOKIE_ECHO 8; ABORT, SHUTDOWN_ACK, ERROR, COOKIE_ACK, SHUTDOWN_COMPLETE 4). One packet every 30 ms; the
//! state is read 30 ms after each packet. Output lines: `CPORT VPORT STEPNO STEP STATE EXPIRES`, with `- -1`
//! when the flow has no conn and EXPIRES in whole seconds, rounded down.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs_conn::ConnTableConfig;
use ipvs_proto::wire::{ipv4, sctp, tcp, Ipv4Packet, Ipv4Repr, SctpPacket, TcpPacket, TcpRepr};
use ipvs_proto::{Duration, FwdMethod, Instant, Protocol, ServiceKey};

use crate::config::{DestConfig, ServiceConfig};
use crate::defense::{Defense, DefenseMode};
use crate::{Direction, Engine, EngineConfig, EngineError, PacketBuf, Verdict};

/// The client of every flow.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The virtual address of both services.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The NAT service's port.
pub const NAT_VPORT: u16 = 80;
/// The NAT real server.
pub const NAT_REAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), 8080);
/// The DR service's port.
pub const DR_VPORT: u16 = 81;
/// The DR real server.
pub const DR_REAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)), 81);
/// Time between packets, and from a packet to the reading of its conn's state.
pub const STEP: Duration = Duration::from_millis(30);

/// Replay options (the example's flags).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct ReplayOptions {
    /// SCTP services and packets instead of TCP (`--sctp`).
    pub sctp: bool,
    /// `secure_tcp` always on, the kernel's level 3 (`--secure-tcp`).
    pub secure_tcp: bool,
}

/// A `.paths` line the replay cannot read, or an engine setup failure.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum ReplayError {
    /// Line `line` (1-based) is malformed: `what` says how.
    Line {
        /// The line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The engine refused the setup.
    Engine(EngineError),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line { line, what } => write!(f, "line {line}: {what}"),
            Self::Engine(e) => write!(f, "engine setup: {e}"),
        }
    }
}

impl std::error::Error for ReplayError {}

impl From<EngineError> for ReplayError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

/// The engine of the recording: both services, defaults, `secure_tcp` 3 if asked.
///
/// # Errors
/// When the engine refuses the setup (it does not).
pub fn engine(opts: ReplayOptions) -> Result<Engine, EngineError> {
    let mut config = EngineConfig::new(1 << 16, *b"replay-states-ky");
    config.conn_table = ConnTableConfig::new(1 << 16, *b"replay-states-ky").with_n_shards(4);
    if opts.secure_tcp {
        config.defense = Defense { secure_tcp: DefenseMode::Always, ..Defense::default() };
    }
    let engine = Engine::new(config)?;
    let protocol = if opts.sctp { Protocol::Sctp } else { Protocol::Tcp };
    for (vport, real, fwd) in [(NAT_VPORT, NAT_REAL, FwdMethod::Masq), (DR_VPORT, DR_REAL, FwdMethod::DirectRoute)] {
        let key = ServiceKey::Addr { protocol, addr: SocketAddr::new(IpAddr::V4(VIP), vport) };
        let mut svc = ServiceConfig::new(key);
        svc.scheduler = "rr".into();
        engine.add_service(Instant::ZERO, svc)?;
        engine.add_dest(Instant::ZERO, &key, DestConfig::new(real, fwd))?;
    }
    Ok(engine)
}

/// Replays every line of a `.paths` file and returns the output lines.
///
/// # Errors
/// [`ReplayError::Line`] for a malformed line (bad port, step or flag), before anything is replayed.
pub fn replay(paths: &str, opts: ReplayOptions) -> Result<Vec<String>, ReplayError> {
    let flows = parse(paths, opts.sctp)?;
    let engine = engine(opts)?;
    let protocol = if opts.sctp { Protocol::Sctp } else { Protocol::Tcp };
    let mut out = Vec::new();
    let mut now = Instant::from_secs(1);
    let mut seq = 1u32;
    let mut ident = 1u16;
    let mut data = vec![0u8; 256];
    for flow in &flows {
        let client = SocketAddr::new(IpAddr::V4(CLIENT), flow.cport);
        let virt = SocketAddr::new(IpAddr::V4(VIP), flow.vport);
        for (i, step) in flow.steps.iter().enumerate() {
            engine.handle_timeout(now);
            let (src, dst, direction) = if step.reply {
                (NAT_REAL, client, Direction::FromRealServer)
            } else {
                (client, virt, Direction::FromClient)
            };
            let len = match &step.what {
                What::Tcp(flags) => build_tcp(&mut data[64..], src, dst, *flags, seq, ident),
                What::Sctp(chunks) => build_sctp(&mut data[64..], src, dst, chunks, ident),
            };
            seq = seq.wrapping_add(1);
            ident = ident.wrapping_add(1);
            if let Ok(mut buf) = PacketBuf::new(&mut data, 64, len) {
                let _verdict: Verdict = engine.handle_packet(now, &mut buf, direction);
            }
            let read_at = now + STEP;
            let state = match engine.conn(read_at, protocol, client, virt) {
                Some(c) => format!("{} {}", c.state, c.expires.secs()),
                None => String::from("- -1"),
            };
            out.push(format!("{} {} {} {} {}", flow.cport, flow.vport, i + 1, step.text, state));
            now += STEP;
        }
    }
    Ok(out)
}

/// One packet of a path.
#[derive(Clone, Debug)]
struct Step {
    reply: bool,
    text: String,
    what: What,
}

#[derive(Clone, Debug)]
enum What {
    /// TCP flags byte.
    Tcp(u8),
    /// SCTP chunk types and lengths, in packet order.
    Sctp(Vec<(u8, u16)>),
}

#[derive(Clone, Debug)]
struct Flow {
    cport: u16,
    vport: u16,
    steps: Vec<Step>,
}

fn parse(paths: &str, sctp: bool) -> Result<Vec<Flow>, ReplayError> {
    let mut flows = Vec::new();
    for (n, line) in paths.lines().enumerate() {
        let err = |what: String| ReplayError::Line { line: n + 1, what };
        let mut fields = line.split_whitespace();
        let Some(cport) = fields.next() else { continue };
        let cport: u16 = cport.parse().map_err(|_| err(format!("bad client port {cport:?}")))?;
        let vport = fields.next().ok_or_else(|| err("no service port".into()))?;
        let vport: u16 = vport.parse().map_err(|_| err(format!("bad service port {vport:?}")))?;
        if vport != NAT_VPORT && vport != DR_VPORT {
            return Err(err(format!("service port {vport} is neither {NAT_VPORT} nor {DR_VPORT}")));
        }
        let mut steps = Vec::new();
        for text in fields {
            let (reply, what) = if let Some(w) = text.strip_prefix("in:") {
                (false, w)
            } else if let Some(w) = text.strip_prefix("out:") {
                (true, w)
            } else {
                return Err(err(format!("step {text:?} is neither in:… nor out:…")));
            };
            let what = if sctp {
                What::Sctp(sctp_chunks(what).map_err(err)?)
            } else {
                What::Tcp(tcp_flags(what).map_err(err)?)
            };
            steps.push(Step { reply, text: text.to_owned(), what });
        }
        flows.push(Flow { cport, vport, steps });
    }
    Ok(flows)
}

fn tcp_flags(letters: &str) -> Result<u8, String> {
    if letters == "-" {
        return Ok(0);
    }
    letters.chars().try_fold(0u8, |acc, c| {
        Ok(acc
            | match c {
                'F' => 0x01,
                'S' => 0x02,
                'R' => 0x04,
                'A' => 0x10,
                _ => return Err(format!("bad TCP flag {c:?} in {letters:?}")),
            })
    })
}

/// Chunk type and length (header included) of each `+`-joined chunk name.
fn sctp_chunks(names: &str) -> Result<Vec<(u8, u16)>, String> {
    names
        .split('+')
        .map(|name| {
            Ok(match name {
                "DATA" => (0, 20),
                "INIT" => (1, 20),
                "INIT_ACK" => (2, 20),
                "SACK" => (3, 16),
                "HEARTBEAT" => (4, 8),
                "ABORT" => (6, 4),
                "SHUTDOWN" => (7, 8),
                "SHUTDOWN_ACK" => (8, 4),
                "ERROR" => (9, 4),
                "COOKIE_ECHO" => (10, 8),
                "COOKIE_ACK" => (11, 4),
                "SHUTDOWN_COMPLETE" => (14, 4),
                _ => return Err(format!("bad SCTP chunk {name:?}")),
            })
        })
        .collect()
}

fn ip_header(buf: &mut [u8], src: SocketAddr, dst: SocketAddr, protocol: Protocol, payload_len: usize, ident: u16) {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { return };
    let repr = Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        next_header: protocol,
        payload_len,
        hop_limit: 64,
        dscp: 0,
        ecn: 0,
        ident,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..ipv4::HEADER_LEN]));
}

/// Writes an IPv4 TCP packet (20-byte header, no payload) at the start of `buf`; returns its length.
fn build_tcp(buf: &mut [u8], src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, ident: u16) -> usize {
    let repr = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq_number: seq,
        ack_number: if flags & 0x10 != 0 { 1 } else { 0 },
        flags: tcp::Flags(flags),
        window_len: 64240,
        urgent_at: 0,
        payload_len: 0,
    };
    let len = ipv4::HEADER_LEN + repr.buffer_len();
    ip_header(buf, src, dst, Protocol::Tcp, repr.buffer_len(), ident);
    repr.emit(&mut TcpPacket::new_unchecked(&mut buf[ipv4::HEADER_LEN..len]), &src.ip(), &dst.ip(), &[]);
    len
}

/// Writes an IPv4 SCTP packet (verification tag 1, zeroed chunk values) at the start of `buf`; returns its
/// length.
fn build_sctp(buf: &mut [u8], src: SocketAddr, dst: SocketAddr, chunks: &[(u8, u16)], ident: u16) -> usize {
    let sctp_len = sctp::HEADER_LEN + chunks.iter().map(|(_, l)| (usize::from(*l) + 3) & !3).sum::<usize>();
    let len = ipv4::HEADER_LEN + sctp_len;
    ip_header(buf, src, dst, Protocol::Sctp, sctp_len, ident);
    let body = &mut buf[ipv4::HEADER_LEN..len];
    body.fill(0);
    let mut at = sctp::HEADER_LEN;
    for (t, l) in chunks {
        body[at] = *t;
        body[at + 2..at + 4].copy_from_slice(&l.to_be_bytes());
        at += (usize::from(*l) + 3) & !3;
    }
    let mut p = SctpPacket::new_unchecked(body);
    p.set_src_port(src.port());
    p.set_dst_port(dst.port());
    p.set_verification_tag(1);
    p.fill_checksum();
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse("20001 80 in:S\n20002 80 in:Q\n", false).unwrap_err();
        assert_eq!(e, ReplayError::Line { line: 2, what: "bad TCP flag 'Q' in \"Q\"".into() });
        let e = parse("20001 82 in:S\n", false).unwrap_err();
        assert!(e.to_string().starts_with("line 1: service port 82"));
        assert!(parse("25001 80 in:INIT+FOO\n", true).is_err());
    }

    #[test]
    fn a_syn_and_its_ack() {
        let lines = replay("20003 80 in:S in:A\n20004 81 in:A\n", ReplayOptions::default()).unwrap();
        assert_eq!(lines, ["20003 80 1 in:S SYN_RECV 59", "20003 80 2 in:A ESTABLISHED 899", "20004 81 1 in:A - -1"]);
    }
}
