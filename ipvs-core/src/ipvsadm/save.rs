//! `ipvsadm -S -n`: the rules in `ipvsadm-save` format (facts §14.4).
//!
//! Services sorted by fwmark, family, protocol, address, port; each followed by its servers sorted by address
//! and port (libipvs' comparators under glibc's `qsort`). Per service:
//! `-A SEL -s SCHED [-p T [-M MASK]] [--pe NAME] [-o] [-b FLAGS]` — `-M` only when the mask is not the
//! default, dotted for IPv4, a prefix length for IPv6; `-b` with the scheduler's names (`sh-fallback,sh-port`
//! for sh, `mh-…` for mh, `flag-N` otherwise). Per server: `-a SEL -r ADDR:PORT -g|-i|-m -w W`, plus for a
//! tunnel `--tun-type ipip`, `--tun-type gue --tun-port P --tun-…csum` or `--tun-type gre --tun-…csum`.
//! Not saved (as in ipvsadm): thresholds (`-x`/`-y`), `--set` timeouts, sync daemons.

use std::fmt::Write as _;

use ipvs_proto::{AddressFamily, FwdMethod, Protocol, ServiceFlags, ServiceKey};

use super::{addrport, cmp_dests, cmp_services, glibc_qsort};
use crate::config::{DestConfig, Persistence, RuleSet, ServiceConfig, TunnelKind};

/// Prints `ipvsadm -S -n` for services and their servers (each service's servers in any order).
pub fn save<'a, S, D>(services: S) -> String
where
    S: IntoIterator<Item = (&'a ServiceConfig, D)>,
    D: IntoIterator<Item = &'a DestConfig>,
{
    let mut svcs: Vec<(&ServiceConfig, Vec<&DestConfig>)> =
        services.into_iter().map(|(s, d)| (s, d.into_iter().collect())).collect();
    glibc_qsort(&mut svcs, &|a, b| cmp_services(&a.0.key, &b.0.key));
    let mut out = String::new();
    for (svc, mut dests) in svcs {
        let sel = selector(&svc.key);
        let _ = write!(out, "-A {sel} -s {}", svc.scheduler);
        if let Some(p) = svc.persistence {
            let _ = write!(out, " -p {}", p.timeout_secs);
            if let Some(mask) = mask_text(&svc.key, &p) {
                let _ = write!(out, " -M {mask}");
            }
        }
        if let Some(pe) = &svc.pe_name {
            let _ = write!(out, " --pe {pe}");
        }
        if svc.one_packet {
            out.push_str(" -o");
        }
        if let Some(flags) = sched_flags_text(&svc.scheduler, svc.sched_flags) {
            let _ = write!(out, " -b {flags}");
        }
        out.push('\n');
        glibc_qsort(&mut dests, &|a, b| cmp_dests(&a.addr, &b.addr));
        for d in dests {
            let _ = write!(out, "-a {sel} -r {} {} -w {}", addrport(&d.addr), fwd_switch(d.fwd), d.weight);
            if let Some(t) = d.tunnel_params() {
                let _ = write!(out, " --tun-type {}", t.kind.name());
                match t.kind {
                    TunnelKind::Ipip => {}
                    TunnelKind::Gue => {
                        let _ = write!(out, " --tun-port {} {}", t.port, t.csum.option());
                    }
                    TunnelKind::Gre => {
                        let _ = write!(out, " {}", t.csum.option());
                    }
                }
            }
            out.push('\n');
        }
    }
    out
}

impl RuleSet {
    /// `ipvsadm -S -n` of this rule set.
    pub fn save(&self) -> String {
        save(self.services().iter().map(|s| (&s.config, &s.dests)))
    }
}

/// `-t 10.0.0.1:80`, `-u …`, `--sctp-service …`, `-f 77`, `-f 77 -6`.
pub(crate) fn selector(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr { protocol, addr } => {
            let opt = match protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
                _ => "--sctp-service",
            };
            format!("{opt} {}", addrport(addr))
        }
        ServiceKey::Fwmark { mark, family: AddressFamily::Inet } => format!("-f {mark}"),
        ServiceKey::Fwmark { mark, family: AddressFamily::Inet6 } => format!("-f {mark} -6"),
    }
}

/// The persistence mask when it is not the default: `255.255.255.0` (IPv4) or `64` (IPv6).
pub(crate) fn mask_text(key: &ServiceKey, p: &Persistence) -> Option<String> {
    let family = key.family();
    if p.netmask == Persistence::default_netmask(family) {
        return None;
    }
    Some(match family {
        AddressFamily::Inet => std::net::Ipv4Addr::from(p.netmask).to_string(),
        AddressFamily::Inet6 => p.netmask.to_string(),
    })
}

/// ipvsadm's `print_sched_flags`: the names of the set scheduler flags, comma-separated; `None` if none.
pub(crate) fn sched_flags_text(scheduler: &str, flags: ServiceFlags) -> Option<String> {
    let (one, two) = match scheduler {
        "sh" => ("sh-fallback", "sh-port"),
        "mh" => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    let names: Vec<&str> = [(ServiceFlags::SCHED1, one), (ServiceFlags::SCHED2, two), (ServiceFlags::SCHED3, "flag-3")]
        .into_iter()
        .filter(|(bit, _)| flags.contains(*bit))
        .map(|(_, name)| name)
        .collect();
    (!names.is_empty()).then(|| names.join(","))
}

/// `-m`, `-i`, `-g` (LocalNode too); Bypass has no switch (ipvsadm would print `(null)`).
fn fwd_switch(fwd: FwdMethod) -> &'static str {
    match fwd {
        FwdMethod::Masq => "-m",
        FwdMethod::Tunnel => "-i",
        FwdMethod::DirectRoute | FwdMethod::Local => "-g",
        FwdMethod::Bypass => "(null)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TunnelConfig, TunnelCsum};

    #[test]
    fn sorts_services_and_servers() {
        let text = "\
-A -u 10.0.0.1:53 -s rr
-a -u 10.0.0.1:53 -r 10.1.0.9:53 -m
-a -u 10.0.0.1:53 -r 10.1.0.2:53 -m
-A -f 3 -s rr
-A -t 10.0.0.1:80 -s rr
-A -t 10.0.0.0:80 -s rr
-A -f 1 -6 -s rr
-A -f 1 -s rr
";
        let rs = RuleSet::from_rules(text).unwrap();
        let want = "\
-A -t 10.0.0.0:80 -s rr
-A -t 10.0.0.1:80 -s rr
-A -u 10.0.0.1:53 -s rr
-a -u 10.0.0.1:53 -r 10.1.0.2:53 -m -w 1
-a -u 10.0.0.1:53 -r 10.1.0.9:53 -m -w 1
-A -f 1 -s rr
-A -f 1 -6 -s rr
-A -f 3 -s rr
";
        assert_eq!(rs.save(), want);
    }

    #[test]
    fn service_options_in_ipvsadm_order() {
        let rs = RuleSet::from_rules("-A -u 10.0.0.1:5060 -b flag-3,flag-1 -o --pe sip -M 255.255.0.0 -p 120 -s rr\n")
            .unwrap();
        assert_eq!(rs.save(), "-A -u 10.0.0.1:5060 -s rr -p 120 -M 255.255.0.0 --pe sip -o -b flag-1,flag-3\n");
        let rs = RuleSet::from_rules("-A -t 10.0.0.1:80 -M 255.255.0.0\n").unwrap();
        assert_eq!(rs.save(), "-A -t 10.0.0.1:80 -s wlc\n");
    }

    #[test]
    fn tunnel_options() {
        let svc = ServiceConfig::new(ServiceKey::Fwmark { mark: 9, family: AddressFamily::Inet });
        let mut d = DestConfig::new("10.1.0.1:0".parse().unwrap(), FwdMethod::Tunnel);
        d.tunnel = None;
        let mut g = DestConfig::new("10.1.0.2:0".parse().unwrap(), FwdMethod::Tunnel);
        g.tunnel = Some(TunnelConfig { kind: TunnelKind::Gue, port: 6080, csum: TunnelCsum::RemCsum });
        let l = DestConfig::new("10.1.0.3:0".parse().unwrap(), FwdMethod::Local);
        let out = save([(&svc, [d, g, l].iter())]);
        assert_eq!(
            out,
            "-A -f 9 -s wlc\n\
             -a -f 9 -r 10.1.0.1:0 -i -w 1 --tun-type ipip\n\
             -a -f 9 -r 10.1.0.2:0 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum\n\
             -a -f 9 -r 10.1.0.3:0 -g -w 1\n"
        );
    }
}
