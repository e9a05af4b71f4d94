//! ipvsadm's own text as the oracle: `testdata/kernel-6.1/ipvsadm-listings.txt` holds what ipvsadm 1.31 and
//! Linux 6.1 printed for one rule set. The rules (from the file's header comments) are loaded into a
//! [`RuleSet`]; every section must then come out byte for byte.
//!
//! Inputs taken from the file besides the rules: the table size (version line), the connection rows of
//! `/proc/net/ip_vs_conn` (from which the active/inactive/persistent counts are derived), the counters of
//! `--stats --exact`, the rates of `--rate`, the total rates of `/proc/net/ip_vs_stats`, and the expire
//! times of the two `-c` sections (taken a second apart from `/proc/net/ip_vs_conn`). Everything else —
//! orders, formats, defaults, the timeouts and daemon lines — comes from the rules and the renderers.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipvs_core::config::{Command, ConfigError, RuleSet};
use ipvs_core::ipvsadm::{
    kernel_service_order, list_conns, list_daemons, list_service, list_services, list_timeout, parse_line, parse_rules,
    proc_ip_vs, proc_ip_vs_conn, proc_ip_vs_stats, ConnRow, ListFormat, ListingSnapshot, Rates, RuleError,
    RuleErrorKind, Stats,
};
use ipvs_core::proto::state::{SctpState, TcpState};
use ipvs_core::proto::{AddressFamily, Instant, Protocol, ServiceKey};
use ipvs_core::{Engine, EngineConfig, EngineError};

const ORACLE: &str = include_str!("../../testdata/kernel-6.1/ipvsadm-listings.txt");

/// `(title, body)` of every `=== title` section.
fn sections() -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for line in ORACLE.lines() {
        if let Some(title) = line.strip_prefix("=== ") {
            out.push((title, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

fn section(title: &str) -> String {
    sections().into_iter().find(|(t, _)| *t == title).unwrap_or_else(|| panic!("no section {title}")).1
}

/// The `ipvsadm …` lines of the header comment, with their line numbers in the file.
fn header_rules() -> Vec<(usize, &'static str)> {
    ORACLE
        .lines()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("==="))
        .filter_map(|(i, l)| l.strip_prefix("#   ").filter(|r| r.starts_with("ipvsadm ")).map(|r| (i + 1, r)))
        .collect()
}

/// The rule set the kernel ended up with: every header rule applied, except the `--pe sip` service the
/// kernel refused (no SIP module) — whose server then fails as in the kernel (no such service).
fn kernel_rules() -> RuleSet {
    let mut rs = RuleSet::new();
    let mut refused = 0;
    for (line, text) in header_rules() {
        let command = parse_line(text).unwrap_or_else(|e| panic!("line {line}: {e}")).expect("a command");
        if text.contains("--pe sip") {
            refused += 1;
            continue;
        }
        match rs.apply(command.clone()) {
            Ok(()) => {}
            Err(ConfigError::ServiceNotFound(key)) if matches!(&command, Command::AddDest { .. }) => {
                assert_eq!(key, ServiceKey::Addr { protocol: Protocol::Udp, addr: "10.0.2.100:5060".parse().unwrap() });
                refused += 1;
            }
            Err(e) => panic!("line {line}: {e}"),
        }
    }
    assert_eq!(refused, 2, "the sip service and its server");
    rs
}

fn hex_addr(s: &str) -> IpAddr {
    if s.contains(':') {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(s, 16).unwrap()))
    }
}

fn state_name(s: &str) -> &'static str {
    TcpState::ALL
        .iter()
        .map(|t| t.proc_name())
        .chain(SctpState::ALL.iter().map(|t| t.proc_name()))
        .chain(["UDP"])
        .find(|n| *n == s)
        .unwrap_or_else(|| panic!("unknown state {s}"))
}

fn protocol(s: &str) -> Protocol {
    match s {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        "IP" => Protocol::HopByHop,
        _ => panic!("protocol {s}"),
    }
}

/// The rows of `/proc/net/ip_vs_conn`.
fn proc_conn_rows() -> Vec<ConnRow> {
    section("cat /proc/net/ip_vs_conn")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = |s: &str| u16::from_str_radix(s, 16).unwrap();
            ConnRow {
                protocol: protocol(f[0]),
                client: SocketAddr::new(hex_addr(f[1]), port(f[2])),
                virt: SocketAddr::new(hex_addr(f[3]), port(f[4])),
                dest: SocketAddr::new(hex_addr(f[5]), port(f[6])),
                state: state_name(f[7]),
                expires_secs: f[8].parse().unwrap(),
                pe: (f.len() == 11).then(|| (f[9].to_owned(), f[10].to_owned())),
            }
        })
        .collect()
}

/// A `-L` row's name → service key (`TCP  10.0.2.100:80`, `FWM  77`).
fn key_of(name: &str) -> ServiceKey {
    let mut w = name.split_whitespace();
    let proto = w.next().unwrap();
    let rest = w.next().unwrap();
    if proto == "FWM" {
        let family = if w.next() == Some("IPv6") { AddressFamily::Inet6 } else { AddressFamily::Inet };
        return ServiceKey::Fwmark { mark: rest.parse().unwrap(), family };
    }
    ServiceKey::Addr { protocol: protocol(proto), addr: rest.parse().unwrap() }
}

/// Five numbers per service/server row of a `--stats`/`--rate` section, keyed by service and server.
fn numbers(title: &str) -> Vec<(ServiceKey, Option<SocketAddr>, [u64; 5])> {
    let mut out = Vec::new();
    let mut current = None;
    for line in section(title).lines().skip(3) {
        let (name, nums) = line.split_at(33.min(line.len()));
        let v: Vec<u64> = nums.split_whitespace().map(|n| n.parse().unwrap()).collect();
        let v: [u64; 5] = v.try_into().unwrap();
        if let Some(d) = name.strip_prefix("  -> ") {
            out.push((current.unwrap(), Some(d.trim().parse().unwrap()), v));
        } else {
            let key = key_of(name);
            current = Some(key);
            out.push((key, None, v));
        }
    }
    out
}

/// The snapshot of the kernel at the time of the listings.
fn snapshot(rules: &RuleSet) -> ListingSnapshot {
    let size_line = section("ipvsadm -L -n").lines().next().unwrap().to_owned();
    let size: u32 = size_line.split("size=").nth(1).unwrap().trim_end_matches(')').parse().unwrap();
    let mut snap = ListingSnapshot::from_rules(rules, size);
    snap.conns = proc_conn_rows();

    // Server counters from the connection table: templates (client port 0) count as persistent, the rest
    // by state.
    for c in &snap.conns {
        let key = ServiceKey::Addr { protocol: c.protocol, addr: c.virt };
        let svc = snap.services.iter_mut().find(|s| s.config.key == key).expect("conn of a service");
        let d = svc.dests.iter_mut().find(|d| d.config.addr == c.dest).expect("conn of a server");
        if c.client.port() == 0 {
            d.persist_conns += 1;
        } else if TcpState::ALL.iter().any(|t| t.proc_name() == c.state && t.is_active()) {
            d.active_conns += 1;
        } else {
            d.inactive_conns += 1;
        }
    }
    for (key, dest, v) in numbers("ipvsadm -L -n --stats --exact") {
        let stats = Stats { conns: v[0], inpkts: v[1], outpkts: v[2], inbytes: v[3], outbytes: v[4] };
        let svc = snap.service_mut(&key).unwrap();
        match dest {
            None => svc.stats = stats,
            Some(a) => svc.dests.iter_mut().find(|d| d.config.addr == a).unwrap().stats = stats,
        }
    }
    for (key, dest, v) in numbers("ipvsadm -L -n --rate") {
        let rates = Rates { cps: v[0], inpps: v[1], outpps: v[2], inbps: v[3], outbps: v[4] };
        let svc = snap.service_mut(&key).unwrap();
        match dest {
            None => svc.rates = rates,
            Some(a) => svc.dests.iter_mut().find(|d| d.config.addr == a).unwrap().rates = rates,
        }
    }
    // Totals: the sum of the services' counters (all traffic hit a service); total rates are estimated on
    // their own, so they come from the file.
    for s in &snap.services {
        let t = &mut snap.total_stats;
        t.conns += s.stats.conns;
        t.inpkts += s.stats.inpkts;
        t.outpkts += s.stats.outpkts;
        t.inbytes += s.stats.inbytes;
        t.outbytes += s.stats.outbytes;
    }
    let proc_stats = section("cat /proc/net/ip_vs_stats");
    let rate_line = proc_stats.lines().nth(5).unwrap();
    let r: Vec<u64> = rate_line.split_whitespace().map(|n| u64::from_str_radix(n, 16).unwrap()).collect();
    snap.total_rates = Rates { cps: r[0], inpps: r[1], outpps: r[2], inbps: r[3], outbps: r[4] };
    snap
}

/// The salts (netns pointer >> 8, low 8 bits) for which `/proc/net/ip_vs` comes out as the kernel printed it.
fn matching_salts(snap: &ListingSnapshot, want: &str) -> Vec<u32> {
    (0..256)
        .filter(|&salt| {
            let mut s = snap.clone();
            s.svc_hash_salt = salt;
            proc_ip_vs(&s) == want
        })
        .collect()
}

/// `-c` rows rendered from the `/proc/net/ip_vs_conn` rows, with each row's expire time taken from `listing`
/// (the same conn, one moment later).
fn conns_with_expires_of(listing: &str, rows: &[ConnRow]) -> Vec<ConnRow> {
    rows.iter()
        .map(|r| {
            let line = listing
                .lines()
                .find(|l| l.split_whitespace().nth(3) == Some(&format!("{}", r.client)))
                .unwrap_or_else(|| panic!("no -c row for {}", r.client));
            let mmss = line.split_whitespace().nth(1).unwrap();
            let (m, s) = mmss.split_once(':').unwrap();
            ConnRow { expires_secs: m.parse::<u32>().unwrap() * 60 + s.parse::<u32>().unwrap(), ..r.clone() }
        })
        .collect()
}

fn line_set(s: &str) -> BTreeSet<&str> {
    s.lines().collect()
}

fn diff(title: &str, got: &str, want: &str) -> String {
    let mut out = format!("--- section `{title}` differs:\n");
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        if g != w {
            out.push_str(&format!("line {}:\n  got  {g:?}\n  want {w:?}\n", i + 1));
        }
    }
    if got.lines().count() != want.lines().count() {
        out.push_str(&format!("{} lines, want {}\n", got.lines().count(), want.lines().count()));
    }
    out
}

#[test]
fn header_rules_reemit_the_save_section() {
    let rules = kernel_rules();
    assert_eq!(rules.save(), section("ipvsadm -S -n"), "\n{}", diff("-S", &rules.save(), &section("ipvsadm -S -n")));
}

/// An engine built like the kernel that made the oracle — no SIP module, `sip_persistence_engine` off — refuses
/// the `--pe sip` service (and then its server) as the kernel did and ends up with the kernel's `-S -n`; with the
/// SIP engine (the default) both rules are taken.
#[test]
fn engine_like_the_oracles_kernel_refuses_the_sip_service() {
    let mut kernel_like = EngineConfig::new(4096, [7; 16]);
    kernel_like.sip_persistence_engine = false;
    let kernel_like = Engine::new(kernel_like).unwrap();
    let default = Engine::new(EngineConfig::new(4096, [7; 16])).unwrap();
    let mut refused = Vec::new();
    for (line, text) in header_rules() {
        let command = parse_line(text).unwrap_or_else(|e| panic!("line {line}: {e}")).expect("a command");
        if matches!(command, Command::StartDaemon(_) | Command::StopDaemon(_)) {
            continue; // sockets: the embedder's
        }
        if let Err(e) = kernel_like.apply(Instant::ZERO, command.clone()) {
            refused.push(e);
        }
        default.apply(Instant::ZERO, command).unwrap_or_else(|e| panic!("line {line}: {e}"));
    }
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0], EngineError::PersistenceEngineUnavailable);
    assert!(matches!(refused[1], EngineError::Config(ConfigError::ServiceNotFound(_))));
    let saved = kernel_like.listing_snapshot(Instant::ZERO).save();
    assert_eq!(saved, section("ipvsadm -S -n"), "\n{}", diff("-S", &saved, &section("ipvsadm -S -n")));
    let with_sip = default.listing_snapshot(Instant::ZERO).save();
    assert!(with_sip.lines().any(|l| l.starts_with("-A -u 10.0.2.100:5060 ") && l.ends_with("--pe sip")), "{with_sip}");
    assert!(with_sip.contains("-a -u 10.0.2.100:5060 -r "), "{with_sip}");
}

#[test]
fn save_section_round_trips() {
    let saved = section("ipvsadm -S -n");
    let rules = RuleSet::from_rules(&saved).unwrap();
    assert_eq!(rules.save(), saved);
    // The -S text and the original commands describe the same services and servers (thresholds aside).
    let original = kernel_rules();
    assert_eq!(rules.services().len(), original.services().len());
    for s in original.services() {
        let r = rules.service(&s.config.key).unwrap();
        assert_eq!(r.config, s.config);
        let strip = |d: &ipvs_core::DestConfig| ipvs_core::DestConfig { u_threshold: 0, l_threshold: 0, ..*d };
        assert_eq!(r.dests.iter().map(strip).collect::<Vec<_>>(), s.dests.iter().map(strip).collect::<Vec<_>>());
    }
}

#[test]
fn every_section_renders_byte_for_byte() {
    let rules = kernel_rules();
    let mut snap = snapshot(&rules);
    let rows = snap.conns.clone();

    let ip_vs = section("cat /proc/net/ip_vs");
    let salts = matching_salts(&snap, &ip_vs);
    // The kernel's order constrains exactly the high four bits of the salt's low byte (binary 1011xxxx).
    assert_eq!(salts, (0xB0..=0xBF).collect::<Vec<u32>>(), "salts reproducing /proc/net/ip_vs");
    snap.svc_hash_salt = salts[0];

    let key443 = ServiceKey::Addr { protocol: Protocol::Tcp, addr: "10.0.2.100:443".parse().unwrap() };
    let c_section = section("ipvsadm -L -n -c");
    let c_sort_section = section("ipvsadm -L -n -c --sort");
    let rendered: Vec<(&str, String)> = vec![
        ("ipvsadm -S -n", rules.save()),
        ("ipvsadm -L -n", list_services(&snap, ListFormat::PLAIN)),
        ("ipvsadm -L -n --stats", list_services(&snap, ListFormat::STATS)),
        ("ipvsadm -L -n --stats --exact", list_services(&snap, ListFormat::STATS_EXACT)),
        ("ipvsadm -L -n --rate", list_services(&snap, ListFormat::RATE)),
        ("ipvsadm -L -n --thresholds", list_services(&snap, ListFormat::THRESHOLDS)),
        ("ipvsadm -L -n --persistent-conn", list_services(&snap, ListFormat::PERSISTENT_CONN)),
        ("ipvsadm -L -n -c", list_conns(&conns_with_expires_of(&c_section, &rows), false)),
        ("ipvsadm -L -n --timeout", list_timeout(&rules.timeouts())),
        ("ipvsadm -L -n --daemon", list_daemons(&snap.daemons)),
        ("ipvsadm -L -n -t 10.0.2.100:443", list_service(&snap, &key443, ListFormat::PLAIN).unwrap()),
        ("ipvsadm -L -n -c --sort", list_conns(&conns_with_expires_of(&c_sort_section, &rows), false)),
        ("cat /proc/net/ip_vs", proc_ip_vs(&snap)),
        ("cat /proc/net/ip_vs_conn", proc_ip_vs_conn(&snap)),
        ("cat /proc/net/ip_vs_stats", proc_ip_vs_stats(&snap)),
    ];
    let all = sections();
    assert_eq!(rendered.len(), all.len(), "every section of the oracle is rendered");

    let mut identical = 0;
    let mut failures = String::new();
    for (title, got) in &rendered {
        let want = section(title);
        // `-c` rows come in hash-table order: compare them as a set (the two header lines exactly).
        let same = if title.contains(" -c") {
            got.lines().take(2).eq(want.lines().take(2)) && line_set(got) == line_set(&want) && got.len() == want.len()
        } else {
            *got == want
        };
        if same {
            identical += 1;
        } else {
            failures.push_str(&diff(title, got, &want));
        }
    }
    println!("ipvsadm oracle: {identical}/{} sections byte-identical", rendered.len());
    assert!(failures.is_empty(), "{failures}");

    // The -c listings also agree with /proc/net/ip_vs_conn on everything but the moment: same conns, expire
    // times at most one second apart, same table order.
    for listing in [&c_section, &c_sort_section] {
        let from_proc = list_conns(&rows, false);
        let strip = |s: &str| -> Vec<String> {
            s.lines()
                .skip(2)
                .map(|l| {
                    l.split_whitespace()
                        .enumerate()
                        .filter(|(i, _)| *i != 1)
                        .map(|(_, w)| w)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        };
        assert_eq!(strip(&from_proc), strip(listing));
        let exact = line_set(&from_proc).intersection(&line_set(listing)).count() - 2;
        for (r, l) in rows.iter().zip(conns_with_expires_of(listing, &rows)) {
            assert!(
                r.expires_secs.abs_diff(l.expires_secs) <= 1,
                "{}: {} vs {}",
                r.client,
                r.expires_secs,
                l.expires_secs
            );
        }
        println!(
            "ipvsadm oracle: -c rows from /proc/net/ip_vs_conn: {exact}/{} identical including the expire column",
            rows.len()
        );
    }
}

#[test]
fn listings_sort_while_the_kernel_keeps_its_orders() {
    let rules = kernel_rules();
    let mut snap = snapshot(&rules);
    snap.svc_hash_salt = 0xB0;
    // --nosort: services in table order (as /proc/net/ip_vs), servers most recently added first.
    let nosort = list_services(&snap, ListFormat { nosort: true, ..ListFormat::PLAIN });
    let services: Vec<&str> =
        nosort.lines().filter(|l| !l.starts_with(' ')).skip(2).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(
        services,
        ["10.0.2.100:3868", "10.0.2.100:443", "10.0.2.100:80", "[fd00::100]:80", "10.0.2.100:53", "77"]
    );
    assert!(
        nosort.contains("  -> 10.1.0.2:8080                Masq    1      4          0         \n  -> 10.1.0.1:8080")
    );
    let keys: Vec<ServiceKey> = snap.services.iter().map(|s| s.config.key).collect();
    assert_eq!(kernel_service_order(&keys, 0xB0), vec![3, 1, 0, 4, 2, 5]);
}

// ---------------------------------------------------------------------------------------------------------
// Malformed rules: the oracle's rules with one field broken; errors name the line and the field.
// ---------------------------------------------------------------------------------------------------------

/// The `-S` section with line `n` (1-based) replaced by `line`.
fn broken(n: usize, line: &str) -> RuleError {
    let mut lines: Vec<String> = section("ipvsadm -S -n").lines().map(str::to_owned).collect();
    lines[n - 1] = line.to_owned();
    let text = lines.join("\n");
    RuleSet::from_rules(&text).expect_err("broken rules must be refused")
}

fn assert_names(e: &RuleError, line: usize, words: &[&str]) {
    assert_eq!(e.line, line, "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
    for w in words {
        assert!(msg.contains(w), "`{msg}` should name `{w}`");
    }
}

#[test]
fn malformed_unknown_option() {
    let e = broken(2, "-a -t 10.0.2.100:80 -r 10.1.0.1:8080 -m --wieght 3");
    assert!(matches!(e.kind, RuleErrorKind::UnknownOption(_)));
    assert_names(&e, 2, &["--wieght"]);
}

#[test]
fn malformed_missing_value() {
    let e = broken(3, "-a -t 10.0.2.100:80 -r 10.1.0.2:8080 -m -w");
    assert_eq!(e.kind, RuleErrorKind::MissingValue("-w/--weight"));
    assert_names(&e, 3, &["-w/--weight"]);
}

#[test]
fn malformed_bad_value() {
    let e = broken(4, "-A -t 10.0.2.100:443 -s sh -p 600 -M 255.255.255.O -b sh-fallback,sh-port");
    assert!(matches!(e.kind, RuleErrorKind::BadValue { option: "-M/--netmask", .. }));
    assert_names(&e, 4, &["-M/--netmask", "255.255.255.O"]);
    let e = broken(5, "-a -t 10.0.2.100:443 -r 10.1.0.3:443 -g -w 65536");
    assert_names(&e, 5, &["-w/--weight", "65536"]);
    let e = broken(1, "-A -t 10.0.2.100:80a -s wlc");
    assert_names(&e, 1, &["-t/--tcp-service", "10.0.2.100:80a"]);
}

#[test]
fn malformed_no_command() {
    let e = broken(7, "-u 10.0.2.100:53 -s rr -o");
    assert_eq!(e.kind, RuleErrorKind::NoCommand);
    assert_names(&e, 7, &["no command"]);
}

#[test]
fn malformed_multiple_commands() {
    let e = broken(7, "-A -E -u 10.0.2.100:53 -s rr -o");
    assert!(matches!(e.kind, RuleErrorKind::MultipleCommands { .. }));
    assert_names(&e, 7, &["-A/--add-service", "-E/--edit-service"]);
}

#[test]
fn malformed_unsupported_command() {
    let e = broken(1, "-L -n");
    assert_eq!(e.kind, RuleErrorKind::UnsupportedCommand("-L/--list"));
    assert_names(&e, 1, &["-L/--list"]);
}

#[test]
fn malformed_duplicate_option() {
    let e = broken(8, "-a -u 10.0.2.100:53 -r 10.1.0.5:53 -m -w 1 -w 2");
    assert_eq!(e.kind, RuleErrorKind::DuplicateOption("-w/--weight"));
    assert_names(&e, 8, &["-w/--weight", "twice"]);
}

#[test]
fn malformed_conflicting_options() {
    let e = broken(
        6,
        "-a -t 10.0.2.100:443 -r 10.1.0.4:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum --tun-csum",
    );
    assert_eq!(e.kind, RuleErrorKind::Conflict { option: "--tun-csum", other: "--tun-nocsum" });
    assert_names(&e, 6, &["--tun-csum", "--tun-nocsum"]);
}

#[test]
fn malformed_missing_option() {
    let e = broken(6, "-a -t 10.0.2.100:443 -r 10.1.0.4:443 -i -w 1 --tun-type gue --tun-nocsum");
    assert_eq!(e.kind, RuleErrorKind::MissingOption { option: "--tun-port", context: "--tun-type gue" });
    assert_names(&e, 6, &["--tun-port", "gue"]);
    let e = broken(10, "-a --sctp-service 10.0.2.100:3868 -m -w 4");
    assert_names(&e, 10, &["-r/--real-server"]);
}

#[test]
fn malformed_illegal_option() {
    let e = broken(14, "-a -f 77 -r 10.1.0.7:0 -i -w 1 --tun-type gre --tun-port 5 --tun-csum");
    assert_eq!(e.kind, RuleErrorKind::IllegalOption { option: "--tun-port", context: "--tun-type gre" });
    assert_names(&e, 14, &["--tun-port", "gre"]);
    let e = broken(13, "-A -f 77 -s lblcr -p 360 -w 2");
    assert_names(&e, 13, &["-w/--weight", "-A/--add-service"]);
}

#[test]
fn malformed_sched_flag() {
    let e = broken(9, "-A --sctp-service 10.0.2.100:3868 -s mh -b sh-fallback,mh-port");
    assert!(matches!(e.kind, RuleErrorKind::SchedFlag { .. }));
    assert_names(&e, 9, &["sh-fallback", "mh"]);
}

#[test]
fn malformed_unexpected_argument() {
    let e = broken(11, "-A -t [fd00::100]:80 -s sed -p 300 -M 64 extra");
    assert!(matches!(e.kind, RuleErrorKind::UnexpectedArgument(_)));
    assert_names(&e, 11, &["extra"]);
}

#[test]
fn malformed_configuration() {
    let e = broken(11, "-A -t [fd00::100]:80 -s sed -p 300 -M 129");
    assert_names(&e, 11, &["-M/--netmask", "129"]);
    let e = broken(1, "-A -t 10.0.2.100:80 -s wlcx");
    assert_eq!(e.kind, RuleErrorKind::Config(ConfigError::UnknownScheduler(ipvs_core::config::ArgText::new("wlcx"))));
    assert_names(&e, 1, &["scheduler", "wlcx"]);
    let e = broken(2, "-a -t 10.0.2.100:80 -r 10.1.0.1:8080 -m -w 3 -x 10 -y 50");
    assert_names(&e, 2, &["-x/-y", "50", "10"]);
    let e = broken(12, "-a -t [fd00::100]:80 -r 10.1.0.9:80 -m -w 7");
    assert_names(&e, 12, &["IPv4 server", "IPv6 service", "-i"]);
    let e = broken(7, "-A -t 10.0.2.100:53 -s rr -o");
    assert_names(&e, 7, &["-o", "TCP"]);
}

#[test]
fn malformed_against_earlier_rules() {
    // Valid lines that fail against the rules before them: the kernel's EEXIST / ESRCH / ENOENT.
    let e = broken(3, "-a -t 10.0.2.100:80 -r 10.1.0.1:8080 -m -w 1");
    assert_eq!(e.kind, RuleErrorKind::Config(ConfigError::DestExists("10.1.0.1:8080".parse().unwrap())));
    assert_names(&e, 3, &["10.1.0.1:8080", "already exists"]);
    let e = broken(4, "-A -t 10.0.2.100:80 -s rr");
    assert_names(&e, 4, &["TCP 10.0.2.100:80", "already exists"]);
    let e = broken(8, "-a -u 10.0.2.100:54 -r 10.1.0.5:53 -m -w 1");
    assert_names(&e, 8, &["UDP 10.0.2.100:54", "no such service"]);
    let e = broken(8, "-e -u 10.0.2.100:53 -r 10.1.0.9:53 -m -w 1");
    assert_names(&e, 8, &["10.1.0.9:53", "no such real server"]);
}

#[test]
fn parse_rules_reports_commands_with_their_lines() {
    let rules = parse_rules(&section("ipvsadm -S -n")).unwrap();
    assert_eq!(rules.len(), 14);
    assert_eq!(rules.iter().map(|r| r.line).collect::<Vec<_>>(), (1..=14).collect::<Vec<_>>());
}

/// The rules part of a `sched-picks*.tsv` file (everything before `# picks`).
fn picks_rules(text: &str) -> String {
    text.lines().take_while(|l| !l.starts_with("# picks")).map(|l| format!("{l}\n")).collect()
}

#[test]
fn sched_picks_rules_load_and_save() {
    // sched-picks.tsv starts with the kernel's own `ipvsadm -S -n`: re-emitted exactly (comment aside).
    let rules = picks_rules(include_str!("../../testdata/kernel-6.1/sched-picks.tsv"));
    let rs = RuleSet::from_rules(&rules).unwrap();
    assert_eq!(rs.services().len(), 15);
    let without_comments: String = rules.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(rs.save(), without_comments);

    // sched-picks-edge.tsv holds commands as given, with -x thresholds: -S drops them, nothing else changes.
    let rules = picks_rules(include_str!("../../testdata/kernel-6.1/sched-picks-edge.tsv"));
    let rs = RuleSet::from_rules(&rules).unwrap();
    assert_eq!(rs.services().len(), 11);
    let thresholds: u32 = rs.services().iter().flat_map(|s| &s.dests).map(|d| d.u_threshold).sum();
    assert_eq!(thresholds, 3 + 5 + 2 + 4 + 4 + 6 + 1 + 3 + 2 + 2 + 3 + 3 + 5);
    let stripped: String = rules
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" -x ") {
            Some(i) => format!("{}\n", &l[..i]),
            None => format!("{l}\n"),
        })
        .collect();
    assert_eq!(rs.save(), stripped);
}

#[test]
fn snapshot_saves_like_the_rule_set() {
    let rules = kernel_rules();
    assert_eq!(snapshot(&rules).save(), section("ipvsadm -S -n"));
}
