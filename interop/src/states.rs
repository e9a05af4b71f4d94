//! Protocol state sequences: random packet paths through the kernel and through
//! [`ipvs_core::replay_states`] (TCP, SCTP) or [`replay_udp`] (UDP, the same loop), compared step by step.
//!
//! The setup is the recording's (`testdata/kernel-6.1`, "Protocol state sequences", and the
//! [`replay_states`](ipvs_core::replay_states) docs): a NAT service 10.0.2.100:80 → 10.1.0.1:8080 and a DR
//! service 10.0.2.100:81 → 10.1.0.2:81, both rr, TCP or SCTP, kernel defaults, optionally `secure_tcp` 3
//! (always on). [`generate_tcp`] and [`generate_sctp`] write random `.paths` lines (`CPORT VPORT STEP…`, where
//! `in:FLAGS` comes from the client 10.9.0.1:CPORT and `out:FLAGS` from the NAT real server): mostly
//! handshakes and closes, but also resets, half-closes, repeated SYNs (a SYN flood per flow with secure_tcp)
//! and flows that start without a SYN/INIT. [`kernel_script`] turns them into an injector plan — one packet,
//! 30 ms, then the conn's line of `/proc/net/ip_vs_conn` — whose output [`kernel_lines`] reads into the
//! `.expected` format; [`compare`] checks the states are equal and the remaining timeouts within a second.
//!
//! UDP ([`generate_udp`], [`replay_udp`]): the same NAT and DR services plus a one-packet (`-o`) NAT service
//! 10.0.2.100:82 → 10.1.0.1:8080, whose conns the kernel frees at once; every step is a 16-byte datagram
//! (`in:D`, `out:D`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs_core::config::{DestConfig, ServiceConfig};
use ipvs_core::conn::ConnTableConfig;
use ipvs_core::{Direction, Engine, EngineConfig, PacketBuf};
use ipvs_proto::{Duration, FwdMethod, Instant, Protocol, ServiceKey};

use crate::packet;
use crate::procfs::conn_key;
use crate::rng::Rng;

/// The client of every flow.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The virtual address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The NAT real server (the source of `out:` packets).
pub const NAT_REAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), 8080);
/// Milliseconds from a packet to the reading of its conn (and to the next packet).
pub const STEP_MS: u32 = 30;

const TCP_FLAGS: [(&str, u64); 11] = [
    ("S", 14),
    ("SA", 12),
    ("A", 24),
    ("F", 8),
    ("FA", 12),
    ("R", 8),
    ("RA", 6),
    ("-", 4),
    ("SF", 2),
    ("SR", 2),
    ("FR", 2),
];

const SCTP_CHUNKS: [(&str, u8, u16, u64); 12] = [
    ("DATA", 0, 20, 14),
    ("INIT", 1, 20, 12),
    ("INIT_ACK", 2, 20, 10),
    ("SACK", 3, 16, 8),
    ("HEARTBEAT", 4, 8, 5),
    ("ABORT", 6, 4, 5),
    ("SHUTDOWN", 7, 8, 8),
    ("SHUTDOWN_ACK", 8, 4, 8),
    ("ERROR", 9, 4, 4),
    ("COOKIE_ECHO", 10, 8, 10),
    ("COOKIE_ACK", 11, 4, 10),
    ("SHUTDOWN_COMPLETE", 14, 4, 8),
];

fn flow_line(rng: &mut Rng, cport: u16, first: &str, step: &mut dyn FnMut(&mut Rng) -> String) -> String {
    let dr = rng.chance(33);
    let vport = if dr { 81 } else { 80 };
    let mut line = format!("{cport} {vport}");
    let n = rng.range(1, 7);
    for i in 0..n {
        let what = if i == 0 && rng.chance(85) { first.to_string() } else { step(rng) };
        let dir = if i > 0 && !dr && rng.chance(45) { "out" } else { "in" };
        let _ = write!(line, " {dir}:{what}");
    }
    line
}

/// `n` random TCP paths, client ports from `first_cport`; about a third on the DR service (inbound only).
pub fn generate_tcp(rng: &mut Rng, n: u16, first_cport: u16) -> String {
    let weights: Vec<u64> = TCP_FLAGS.iter().map(|f| f.1).collect();
    let mut pick = |rng: &mut Rng| TCP_FLAGS[rng.weighted(&weights)].0.to_string();
    (0..n).map(|i| flow_line(rng, first_cport + i, "S", &mut pick) + "\n").collect()
}

/// `n` random SCTP paths (one chunk per packet, sometimes two), client ports from `first_cport`.
pub fn generate_sctp(rng: &mut Rng, n: u16, first_cport: u16) -> String {
    let weights: Vec<u64> = SCTP_CHUNKS.iter().map(|c| c.3).collect();
    let mut pick = |rng: &mut Rng| {
        let mut s = SCTP_CHUNKS[rng.weighted(&weights)].0.to_string();
        if rng.chance(15) {
            s.push('+');
            s.push_str(SCTP_CHUNKS[rng.weighted(&weights)].0);
        }
        s
    };
    (0..n).map(|i| flow_line(rng, first_cport + i, "INIT", &mut pick) + "\n").collect()
}

/// `n` random UDP paths, client ports from `first_cport`, over the NAT, DR and one-packet services.
pub fn generate_udp(rng: &mut Rng, n: u16, first_cport: u16) -> String {
    (0..n)
        .map(|i| {
            let vport = 80 + u16::try_from(rng.range(0, 2)).expect("small");
            let mut line = format!("{} {vport}", first_cport + i);
            for step in 0..rng.range(1, 5) {
                let out = step > 0 && vport != 81 && rng.chance(45) || step == 0 && vport != 81 && rng.chance(10);
                line.push_str(if out { " out:D" } else { " in:D" });
            }
            line + "\n"
        })
        .collect()
}

/// The guest script that sets up the services (flushing any earlier ones) and `secure_tcp`.
pub fn config_script(protocol: Protocol, secure_tcp: bool) -> String {
    let opt = match protocol {
        Protocol::Sctp => "--sctp-service",
        Protocol::Udp => "-u",
        _ => "-t",
    };
    let mut s = format!(
        "set -e\nip link set dummy0 up\nip route replace 10.0.0.0/8 dev dummy0\nipvsadm -C\n\
         echo {} > /proc/sys/net/ipv4/vs/secure_tcp\n\
         ipvsadm -A {opt} 10.0.2.100:80 -s rr\nipvsadm -a {opt} 10.0.2.100:80 -r 10.1.0.1:8080 -m\n\
         ipvsadm -A {opt} 10.0.2.100:81 -s rr\nipvsadm -a {opt} 10.0.2.100:81 -r 10.1.0.2:81 -g\n",
        if secure_tcp { 3 } else { 0 }
    );
    if protocol == Protocol::Udp {
        s.push_str("ipvsadm -A -u 10.0.2.100:82 -s rr -o\nipvsadm -a -u 10.0.2.100:82 -r 10.1.0.1:8080 -m\n");
    }
    s
}

/// The UDP paths through an [`Engine`] set up as [`config_script`] sets up the kernel, in the `.expected`
/// format: one datagram every 30 ms, the conn read 30 ms after each (as `replay_states` does for TCP/SCTP).
///
/// # Panics
/// On a malformed path, or if the engine refuses the setup.
pub fn replay_udp(paths: &str) -> Vec<String> {
    let mut config = EngineConfig::new(1 << 16, *b"interop-udp-key!");
    config.conn_table = ConnTableConfig::new(1 << 16, *b"interop-udp-key!").with_n_shards(4);
    let engine = Engine::new(config).expect("engine");
    let real2 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)), 81);
    for (vport, real, fwd, one_packet) in [
        (80, NAT_REAL, FwdMethod::Masq, false),
        (81, real2, FwdMethod::DirectRoute, false),
        (82, NAT_REAL, FwdMethod::Masq, true),
    ] {
        let key = ServiceKey::Addr { protocol: Protocol::Udp, addr: SocketAddr::new(IpAddr::V4(VIP), vport) };
        let mut svc = ServiceConfig::new(key);
        svc.scheduler = "rr".into();
        svc.one_packet = one_packet;
        engine.add_service(Instant::ZERO, svc).expect("service");
        engine.add_dest(Instant::ZERO, &key, DestConfig::new(real, fwd)).expect("dest");
    }
    let step = Duration::from_millis(u64::from(STEP_MS));
    let (mut now, mut ident) = (Instant::from_secs(1), 1u16);
    let mut out = Vec::new();
    let mut data = vec![0u8; 256];
    for line in paths.lines() {
        let mut f = line.split_whitespace();
        let (Some(cport), Some(vport)) = (f.next(), f.next()) else { continue };
        let (cport, vport): (u16, u16) = (cport.parse().expect("cport"), vport.parse().expect("vport"));
        let client = SocketAddr::new(IpAddr::V4(CLIENT), cport);
        let virt = SocketAddr::new(IpAddr::V4(VIP), vport);
        for (i, text) in f.enumerate() {
            engine.handle_timeout(now);
            let (src, dst, direction) = match text {
                "out:D" => (NAT_REAL, client, Direction::FromRealServer),
                "in:D" => (client, virt, Direction::FromClient),
                _ => panic!("bad UDP step {text:?}"),
            };
            let bytes = packet::udp(src, dst, 16, ident);
            ident = ident.wrapping_add(1);
            data[64..64 + bytes.len()].copy_from_slice(&bytes);
            if let Ok(mut buf) = PacketBuf::new(&mut data, 64, bytes.len()) {
                let _ = engine.handle_packet(now, &mut buf, direction);
            }
            let state = match engine.conn(now + step, Protocol::Udp, client, virt) {
                Some(c) => format!("{} {}", c.state, c.expires.secs()),
                None => String::from("- -1"),
            };
            out.push(format!("{cport} {vport} {} {text} {state}", i + 1));
            now += step;
        }
    }
    out
}

fn tcp_flags(letters: &str) -> Option<u8> {
    if letters == "-" {
        return Some(0);
    }
    letters.chars().try_fold(0u8, |acc, c| {
        Some(
            acc | match c {
                'F' => 0x01,
                'S' => 0x02,
                'R' => 0x04,
                'A' => 0x10,
                _ => return None,
            },
        )
    })
}

fn sctp_chunks(names: &str) -> Option<Vec<(u8, u16)>> {
    names.split('+').map(|n| SCTP_CHUNKS.iter().find(|c| c.0 == n).map(|c| (c.1, c.2))).collect()
}

/// The injector plan for `paths`: per step, the packet, a 30 ms pause and the conn's state.
///
/// # Panics
/// On a malformed path (the generators make none).
pub fn kernel_script(paths: &str, protocol: Protocol) -> String {
    let mut s = String::from("set -e\nipvs-guest <<'PLAN'\n");
    let (mut seq, mut ident) = (1u32, 1u16);
    for line in paths.lines() {
        let mut f = line.split_whitespace();
        let (Some(cport), Some(vport)) = (f.next(), f.next()) else { continue };
        let (cport, vport): (u16, u16) = (cport.parse().expect("cport"), vport.parse().expect("vport"));
        let client = SocketAddr::new(IpAddr::V4(CLIENT), cport);
        let virt = SocketAddr::new(IpAddr::V4(VIP), vport);
        let key = conn_key(protocol, client, virt);
        for (i, step) in f.enumerate() {
            let (reply, what) = match step.split_once(':') {
                Some(("out", w)) => (true, w),
                Some(("in", w)) => (false, w),
                _ => panic!("bad step {step:?}"),
            };
            let (src, dst) = if reply { (NAT_REAL, client) } else { (client, virt) };
            let bytes = match protocol {
                Protocol::Sctp => packet::sctp(src, dst, &sctp_chunks(what).expect("chunk names"), ident),
                Protocol::Udp => packet::udp(src, dst, 16, ident),
                _ => packet::tcp(src, dst, tcp_flags(what).expect("flags"), seq, ident),
            };
            seq = seq.wrapping_add(1);
            ident = ident.wrapping_add(1);
            let _ = writeln!(
                s,
                "send {}\nsleep {STEP_MS}\nconn {cport},{vport},{},{step} {key}",
                packet::hex(&bytes),
                i + 1
            );
        }
    }
    s.push_str("PLAN\n");
    s
}

/// The injector's `TAG STATE EXPIRES` lines as `CPORT VPORT STEPNO STEP STATE EXPIRES`.
pub fn kernel_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| {
            let (tag, rest) = l.split_once(' ')?;
            let f: Vec<&str> = tag.splitn(4, ',').collect();
            (f.len() == 4).then(|| format!("{} {} {} {} {rest}", f[0], f[1], f[2], f[3]))
        })
        .collect()
}

/// Kernel lines against ours.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Steps whose state is equal and whose timeouts are within the tolerance.
    pub agree: usize,
    /// Steps compared (the kernel's lines).
    pub total: usize,
    /// `kernel: … ours: …` for each other step.
    pub differences: Vec<String>,
}

/// Compares line by line: the same step, the same state, remaining seconds at most `tolerance` apart (a
/// missing conn, `- -1`, must be missing on both sides).
pub fn compare(kernel: &[String], ours: &[String], tolerance: u64) -> Comparison {
    let mut c = Comparison { total: kernel.len().max(ours.len()), ..Comparison::default() };
    for i in 0..c.total {
        let (k, o) =
            (kernel.get(i).map_or("<missing>", String::as_str), ours.get(i).map_or("<missing>", String::as_str));
        let (kf, of): (Vec<&str>, Vec<&str>) = (k.split_whitespace().collect(), o.split_whitespace().collect());
        let ok = kf.len() == 6
            && of.len() == 6
            && kf[..5] == of[..5]
            && match (kf[5].parse::<i64>(), of[5].parse::<i64>()) {
                (Ok(a), Ok(b)) => (a < 0) == (b < 0) && a.abs_diff(b) <= tolerance,
                _ => false,
            };
        if ok {
            c.agree += 1;
        } else {
            c.differences.push(format!("kernel: {k} | ours: {o}"));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_core::replay_states::{replay, ReplayOptions};

    #[test]
    fn generated_paths_replay_and_plans_are_well_formed() {
        let mut rng = Rng::new(3);
        let tcp = generate_tcp(&mut rng, 50, 30000);
        let sctp = generate_sctp(&mut rng, 50, 40000);
        let ours = replay(&tcp, ReplayOptions::default()).expect("tcp paths replay");
        assert_eq!(ours.len(), tcp.split_whitespace().filter(|w| w.contains(':')).count());
        replay(&sctp, ReplayOptions { sctp: true, ..ReplayOptions::default() }).expect("sctp paths replay");
        assert!(tcp.lines().all(|l| !l.starts_with("300") || !l.contains("81 ") || !l.contains("out:")));
        let plan = kernel_script("30001 80 in:S out:SA\n", Protocol::Tcp);
        assert_eq!(plan.matches("send ").count(), 2);
        assert!(plan.contains("conn 30001,80,2,out:SA TCP 0A090001 7531 0A000264 0050"));
        let lines = kernel_lines("30001,80,1,in:S SYN_RECV 59\nnoise\n30001,80,2,out:SA - -1\n");
        assert_eq!(lines, ["30001 80 1 in:S SYN_RECV 59", "30001 80 2 out:SA - -1"]);
        let c = compare(&lines, &["30001 80 1 in:S SYN_RECV 60".into(), "30001 80 2 out:SA - -1".into()], 1);
        assert_eq!((c.agree, c.total), (2, 2));
        let c = compare(&lines, &["30001 80 1 in:S SYN_RECV 57".into()], 1);
        assert_eq!((c.agree, c.total, c.differences.len()), (0, 2, 2));
    }

    #[test]
    fn udp_replay_follows_the_udp_rules() {
        let lines = replay_udp("50001 80 out:D in:D out:D\n50002 82 in:D\n50003 81 in:D in:D\n");
        assert_eq!(
            lines,
            [
                "50001 80 1 out:D - -1",
                "50001 80 2 in:D UDP 299",
                "50001 80 3 out:D UDP 299",
                "50002 82 1 in:D - -1",
                "50003 81 1 in:D UDP 299",
                "50003 81 2 in:D UDP 299",
            ]
        );
        let paths = generate_udp(&mut Rng::new(5), 40, 50000);
        assert_eq!(replay_udp(&paths).len(), paths.split_whitespace().filter(|w| w.contains(':')).count());
        assert!(!paths.lines().any(|l| l.contains(" 81 ") && l.contains("out:")));
        assert!(config_script(Protocol::Udp, false).contains("-A -u 10.0.2.100:82 -s rr -o"));
    }
}
