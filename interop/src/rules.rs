//! The rules round trip: random rule sets given to the kernel, its `ipvsadm -S -n` parsed and re-emitted by
//! [`ipvs_core::ipvsadm`], restored with `ipvsadm -R`, saved again.
//!
//! [`generate`] makes varied ipvsadm commands: TCP, UDP and SCTP services on IPv4 and IPv6 and fwmark services
//! of both families, every scheduler the kernel has (twos included when there: nothing is scheduled here), persistence with and without
//! a timeout, IPv4 netmasks and IPv6 prefix lengths, the SIP persistence engine, one-packet scheduling,
//! scheduler flags, and servers with every forwarding method, weights, thresholds and tunnel options
//! (ipip, gue with its port and checksum option, gre). [`compare`] shows where two saves differ.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::rng::Rng;

/// GUE's checksum options (none: the default, `--tun-nocsum`).
const GUE_CSUM: [&str; 4] = ["", " --tun-nocsum", " --tun-csum", " --tun-remcsum"];
/// GRE's.
const GRE_CSUM: [&str; 3] = ["", " --tun-nocsum", " --tun-csum"];

/// A generated rule set.
#[derive(Clone, Debug)]
pub struct RuleSetPlan {
    /// The ipvsadm commands (without the leading `ipvsadm`).
    pub commands: Vec<String>,
    /// Services.
    pub services: usize,
    /// Servers.
    pub dests: usize,
}

fn vip(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, rng.range_u32(0, 3) as u16, rng.range_u32(1, 0xffff) as u16))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, rng.range_u32(0, 3) as u8, rng.range_u32(1, 254) as u8))
    }
}

fn real(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, rng.range_u32(0, 3) as u16, rng.range_u32(1, 0xffff) as u16))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 1, rng.range_u32(0, 3) as u8, rng.range_u32(1, 254) as u8))
    }
}

fn v4_mask(prefix: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

/// A random rule set of 6–14 services with 0–6 servers each, using `schedulers` (those the kernel has:
/// [`Artifacts::schedulers`](crate::artifacts::Artifacts::schedulers)).
pub fn generate(rng: &mut Rng, schedulers: &[&str]) -> RuleSetPlan {
    let mut commands = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let n_services = rng.range(6, 14);
    let mut dests = 0;
    while (keys.len() as u64) < n_services {
        let kind = rng.range(0, 7);
        let v6 = matches!(kind, 3..=5 | 7);
        let port = rng.range_u32(1, 65535) as u16;
        let (sel, fwmark, udp) = match kind {
            0 | 3 => (format!("-t {}", SocketAddr::new(vip(rng, v6), port)), false, false),
            1 | 4 => (format!("-u {}", SocketAddr::new(vip(rng, v6), port)), false, true),
            2 | 5 => (format!("--sctp-service {}", SocketAddr::new(vip(rng, v6), port)), false, false),
            6 => (format!("-f {}", rng.range(1, 5000)), true, false),
            _ => (format!("-f {} -6", rng.range(1, 5000)), true, false),
        };
        if keys.contains(&sel) {
            continue;
        }
        keys.push(sel.clone());
        let scheduler = *rng.pick(schedulers);
        let mut cmd = format!("-A {sel} -s {scheduler}");
        let persistent = rng.chance(35);
        if persistent {
            if rng.chance(25) {
                cmd.push_str(" -p");
            } else {
                let _ = write!(cmd, " -p {}", rng.range(1, 7200));
            }
            if rng.chance(50) {
                if v6 {
                    let _ = write!(cmd, " -M {}", rng.range(1, 128));
                } else {
                    let _ = write!(cmd, " -M {}", v4_mask(rng.range_u32(1, 32)));
                }
            }
            if udp && rng.chance(30) {
                cmd.push_str(" --pe sip");
            }
        }
        if (udp || fwmark) && rng.chance(25) {
            cmd.push_str(" -o");
        }
        let names: &[&str] = match scheduler {
            "sh" => &["sh-fallback", "sh-port"],
            "mh" => &["mh-fallback", "mh-port"],
            _ if rng.chance(20) => &["flag-1", "flag-2", "flag-3"],
            _ => &[],
        };
        let mut flags: Vec<&str> = names.iter().copied().filter(|_| rng.chance(50)).collect();
        rng.shuffle(&mut flags);
        if !flags.is_empty() {
            let _ = write!(cmd, " -b {}", flags.join(","));
        }
        commands.push(cmd);
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for _ in 0..rng.range(0, 6) {
            let method = *rng.pick(&["-g", "-i", "-m"]);
            let port = if fwmark && rng.chance(50) { 0 } else { rng.range_u32(1, 65535) as u16 };
            let addr = SocketAddr::new(real(rng, v6), port);
            if addrs.iter().any(|a| a.ip() == addr.ip()) {
                continue;
            }
            addrs.push(addr);
            let mut cmd = format!("-a {sel} -r {addr} {method}");
            match rng.weighted(&[20, 50, 20, 10]) {
                0 => {}
                1 => {
                    let _ = write!(cmd, " -w {}", rng.range(0, 10));
                }
                2 => {
                    let _ = write!(cmd, " -w {}", rng.range(11, 1000));
                }
                _ => {
                    let _ = write!(cmd, " -w {}", rng.range(1001, 65535));
                }
            }
            if rng.chance(30) {
                let upper = rng.range(1, 100_000);
                let _ = write!(cmd, " -x {upper}");
                if rng.chance(50) {
                    let _ = write!(cmd, " -y {}", rng.range(0, upper));
                }
            }
            if method == "-i" {
                match rng.weighted(&[40, 15, 30, 15]) {
                    0 => {}
                    1 => cmd.push_str(" --tun-type ipip"),
                    2 => {
                        let _ = write!(cmd, " --tun-type gue --tun-port {}", rng.range(1, 65535));
                        cmd.push_str(rng.pick::<&str>(&GUE_CSUM));
                    }
                    _ => {
                        cmd.push_str(" --tun-type gre");
                        cmd.push_str(rng.pick::<&str>(&GRE_CSUM));
                    }
                }
            }
            commands.push(cmd);
            dests += 1;
        }
    }
    RuleSetPlan { commands, services: keys.len(), dests }
}

/// `None` when equal, else the first differing line of each, numbered.
pub fn compare(a: &str, b: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la.iter().zip(&lb).position(|(x, y)| x != y).unwrap_or(la.len().min(lb.len()));
    Some(format!(
        "line {}: {:?} vs {:?} ({} vs {} lines)",
        i + 1,
        la.get(i).copied().unwrap_or("<end>"),
        lb.get(i).copied().unwrap_or("<end>"),
        la.len(),
        lb.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_core::config::RuleSet;

    #[test]
    fn generated_rules_parse_with_ipvsadm_semantics() {
        for seed in 0..50 {
            let plan = generate(&mut Rng::new(seed), &["rr", "sh", "mh", "lblcr", "twos"]);
            let text = plan.commands.join("\n");
            let rs = RuleSet::from_rules(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(rs.services().len(), plan.services);
            // What we save parses back to the same rules.
            let saved = rs.save();
            assert_eq!(RuleSet::from_rules(&saved).unwrap().save(), saved);
        }
        assert_eq!(v4_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(v4_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(compare("a\nb\n", "a\nc\n").unwrap(), "line 2: \"b\" vs \"c\" (2 vs 2 lines)");
    }
}
