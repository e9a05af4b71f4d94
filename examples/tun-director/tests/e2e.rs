//! End-to-end tests of `tun-director` (issue 7, "Must show"): the built binary forwards real TCP and UDP
//! traffic between network namespaces this test creates (a client, one or two directors, three real
//! servers, joined by veth pairs and bridges; see `e2e_support/net.rs`). All traffic stays inside them,
//! and they are deleted at the end, also when a test fails.
//!
//! Runs when `IPVS_E2E=1` or `CI=true` (as root); otherwise each test prints a notice and passes. When it
//! runs, a failure to create namespaces, veths or TUN devices fails the test — it never skips. The
//! scenarios take a lock, so they run one after the other whatever `--test-threads` says. Every scenario
//! prints its counts (`--nocapture` shows them):
//!
//! ```text
//! IPVS_E2E=1 cargo test -p tun-director --test e2e -- --nocapture
//! ```
//!
//! - [`nat_schedulers_persistence_metrics_bad_input_round_trip`]: 300 HTTP requests, one after another,
//!   per scheduler (rr, wrr, wlc, sh) all served in the proportions — and the exact sequence — that
//!   `ipvs-sched` gives for the same clients in the same order (wlc also with connections held open, so
//!   active and inactive counts both weigh); UDP balanced; `-p` keeps each client on one real server; what
//!   the real servers counted equals the director's per-server counters; the `--metrics` scrape has
//!   node_exporter's names and labels and agrees with `ctl -L -n [--stats]`; bad `ctl` commands and rules
//!   files are refused with the argument / line and change nothing; `ctl -S -n` loaded into a fresh
//!   director gives the same `ctl -S -n`.
//! - [`health_check_quiesces_and_slow_start_returns`]: a killed real server is quiesced within the check
//!   interval and gets no new connection; restarted, it comes back and its share ramps up (slow start).
//! - [`failover_keeps_synced_connections`]: master and backup with the kernel's sync protocol; 20
//!   long-lived connections are listed by the backup, the master is killed, the VIP moves, and all 20 go on.
//! - [`check_refuses_bad_rules_without_root`]: `check` and `ctl` exit codes (needs no root, always runs).

mod e2e_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use e2e_support::director::{
    check, parse_list, run_expecting_failure, service, tun_director, Counters, Director, Output,
};
use e2e_support::model::Model;
use e2e_support::net::{
    client_extra, director_front, in_ns, move_vip, rs_addr, sa, topology, Lab, Topology, CLIENT, VIP,
};
use e2e_support::servers::{connect, http_get, udp_query, Ports, Server};
use e2e_support::{enabled, serial};
use ipvs_core::proto::Protocol;

/// Requests per scheduler.
const REQUESTS: usize = 300;
/// HTTP ports of every real server: one per service of the NAT scenario, so no two services' connections
/// can share a real-server-side 4-tuple.
const HTTP_PORTS: [u16; 5] = [80, 81, 82, 83, 84];
/// The UDP port of every real server.
const UDP_PORT: u16 = 5353;
/// The TCP line-echo port of every real server (long-lived connections).
const ECHO_PORT: u16 = 7000;

/// `rsN` → N.
fn rs_index(name: &str) -> usize {
    name.strip_prefix("rs").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected answer {name:?}"))
}

/// `a/b/c` of per-real-server counts.
fn slash(counts: &[usize]) -> String {
    counts.iter().map(ToString::to_string).collect::<Vec<_>>().join("/")
}

/// Counts per real server 1..=3 of a list of picks.
fn tally(picks: &[usize]) -> [usize; 3] {
    let mut c = [0; 3];
    for &p in picks {
        c[p - 1] += 1;
    }
    c
}

fn assert_one_line(out: &Output, what: &str) {
    assert_eq!(out.stderr.lines().count(), 1, "{what}: expected one line on stderr, got {:?}", out.stderr);
}

/// The real servers of the NAT scenario, `[rs1, rs2, rs3]` of each kind.
struct RealServers {
    /// HTTP on [`HTTP_PORTS`].
    http: Vec<Server>,
    /// UDP on [`UDP_PORT`].
    udp: Vec<Server>,
    /// The line echo on [`ECHO_PORT`].
    echo: Vec<Server>,
}

fn real_servers(topo: &Topology) -> RealServers {
    let mut all = RealServers { http: Vec::new(), udp: Vec::new(), echo: Vec::new() };
    for (j, ns) in topo.rs.iter().enumerate() {
        let name = format!("rs{}", j + 1);
        all.http.push(Server::http(ns, IpAddr::V4(rs_addr(j + 1)), &HTTP_PORTS, &name));
        all.udp.push(Server::udp(ns, sa(rs_addr(j + 1), UDP_PORT), &name));
        all.echo.push(Server::echo(ns, sa(rs_addr(j + 1), ECHO_PORT), &name));
    }
    all
}

/// One request of a run: its source, and the real server that answered (or why none did).
type Request = (SocketAddr, Result<usize, String>);

/// `n` requests one after another to `VIP:vport`, from `clients[i % len]`, each on a new connection (TCP:
/// an HTTP GET) or from a new socket (UDP).
fn requests(
    topo: &Topology,
    ports: &Ports,
    protocol: Protocol,
    vport: u16,
    clients: &[Ipv4Addr],
    n: usize,
) -> Vec<Request> {
    let dst = sa(VIP, vport);
    in_ns(&topo.client, || {
        (0..n)
            .map(|i| {
                let src = sa(clients[i % clients.len()], ports.next());
                let answer = match protocol {
                    Protocol::Udp => udp_query(src, dst),
                    _ => http_get(src, dst, "/"),
                };
                (src, answer.map(|a| rs_index(&a)).map_err(|e| e.to_string()))
            })
            .collect()
    })
}

/// A balancing run of the NAT scenario: `n` requests to the service `VIP:vport` (real servers at
/// `rs:rsport` with `weights`, scheduler `sched`), checked against `ipvs-sched`'s picks for the same clients
/// in the same order. Returns the per-real-server counts and the requests.
#[allow(clippy::too_many_arguments)]
fn balance(
    d: &Director,
    topo: &Topology,
    ports: &Ports,
    label: &str,
    (protocol, vport, rsport): (Protocol, u16, u16),
    sched: &str,
    weights: [u32; 3],
    clients: &[Ipv4Addr],
    n: usize,
) -> ([usize; 3], Vec<Request>) {
    let proto = if protocol == Protocol::Udp { "UDP" } else { "TCP" };
    let mut model = Model::new(sched, &[1, 2, 3].map(|j| (sa(rs_addr(j), rsport), weights[j - 1])));
    let listed = service(&d.list(), proto, &sa(VIP, vport).to_string()).clone();
    let listed_order: Vec<String> = listed.dests.iter().map(|x| x.addr.clone()).collect();
    let model_order: Vec<String> = model.order().iter().map(ToString::to_string).collect();
    assert_eq!(listed_order, model_order, "{label}: the director's list order is not the model's");

    let started = Instant::now();
    let got = requests(topo, ports, protocol, vport, clients, n);
    let elapsed = started.elapsed();
    let failed: Vec<&Request> = got.iter().filter(|(_, r)| r.is_err()).collect();
    let served = n - failed.len();
    let picks: Vec<usize> = got.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
    let counts = tally(&picks);
    let expected: Vec<usize> = got
        .iter()
        .map(|(src, _)| {
            let a = model.pick(protocol, *src, sa(VIP, vport));
            (1..=3).find(|&j| sa(rs_addr(j), rsport) == a).expect("a real server of the scenario")
        })
        .collect();
    let equal = got.iter().zip(&expected).filter(|((_, r), e)| r.as_ref().ok() == Some(e)).count();
    println!(
        "e2e nat {label}: {served}/{n} served, rs1/rs2/rs3 = {} (ipvs-sched: {}); {equal}/{n} picks equal \
         ipvs-sched's, in {:.1} s",
        slash(&counts),
        slash(&tally(&expected)),
        elapsed.as_secs_f64()
    );
    assert!(failed.is_empty(), "{label}: {} requests failed, first: {:?}", failed.len(), failed.first());
    if equal != n {
        let first = got.iter().zip(&expected).position(|((_, r), e)| r.as_ref().ok() != Some(e)).unwrap_or(0);
        panic!(
            "{label}: picks differ from ipvs-sched's from request {first}: got {:?}…, ipvs-sched {:?}…",
            &picks[first..(first + 12).min(n)],
            &expected[first..(first + 12).min(n)]
        );
    }
    (counts, got)
}

const NAT_RULES: &str = "\
-A -t 10.99.0.1:80 -s rr
-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1
-a -t 10.99.0.1:80 -r 10.20.0.12:80 -m -w 1
-a -t 10.99.0.1:80 -r 10.20.0.13:80 -m -w 1
-A -t 10.99.0.1:81 -s wrr
-a -t 10.99.0.1:81 -r 10.20.0.11:81 -m -w 1
-a -t 10.99.0.1:81 -r 10.20.0.12:81 -m -w 2
-a -t 10.99.0.1:81 -r 10.20.0.13:81 -m -w 3
-A -t 10.99.0.1:82 -s wlc
-a -t 10.99.0.1:82 -r 10.20.0.11:82 -m -w 1
-a -t 10.99.0.1:82 -r 10.20.0.12:82 -m -w 2
-a -t 10.99.0.1:82 -r 10.20.0.13:82 -m -w 3
-A -t 10.99.0.1:83 -s sh
-a -t 10.99.0.1:83 -r 10.20.0.11:83 -m -w 1
-a -t 10.99.0.1:83 -r 10.20.0.12:83 -m -w 2
-a -t 10.99.0.1:83 -r 10.20.0.13:83 -m -w 3
-A -t 10.99.0.1:84 -s rr -p 60
-a -t 10.99.0.1:84 -r 10.20.0.11:84 -m -w 1
-a -t 10.99.0.1:84 -r 10.20.0.12:84 -m -w 1
-a -t 10.99.0.1:84 -r 10.20.0.13:84 -m -w 1
-A -u 10.99.0.1:53 -s rr
-a -u 10.99.0.1:53 -r 10.20.0.11:5353 -m -w 1
-a -u 10.99.0.1:53 -r 10.20.0.12:5353 -m -w 1
-a -u 10.99.0.1:53 -r 10.20.0.13:5353 -m -w 1
-A -t 10.99.0.1:7000 -s wlc
-a -t 10.99.0.1:7000 -r 10.20.0.11:7000 -m -w 1
-a -t 10.99.0.1:7000 -r 10.20.0.12:7000 -m -w 2
-a -t 10.99.0.1:7000 -r 10.20.0.13:7000 -m -w 3
";

/// Rules with most of what the save format carries: schedulers with flags, persistence with a netmask,
/// one-packet scheduling, tunnels of each kind, IPv6, a firewall mark.
const RICH_RULES: &str = "\
-A -t 10.99.0.1:80 -s rr
-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1
-a -t 10.99.0.1:80 -r 10.20.0.12:80 -m -w 2
-A -t 10.99.0.1:443 -s wrr -p 300 -M 255.255.255.0
-a -t 10.99.0.1:443 -r 10.20.0.11:443 -m -w 5 -x 100 -y 50
-a -t 10.99.0.1:443 -r 10.20.0.13:443 -i -w 3
-A -u 10.99.0.1:53 -s sh -b sh-fallback,sh-port
-a -u 10.99.0.1:53 -r 10.20.0.11:5353 -m
-A -f 7 -s mh -b mh-port
-a -f 7 -r 10.20.0.12:0 -m -w 4
-A -t [2001:db8::1]:80 -s wlc
-a -t [2001:db8::1]:80 -r [2001:db8:1::11]:8080 -m -w 2
-A -t 10.99.0.2:8080 -s lc
-a -t 10.99.0.2:8080 -r 10.20.0.11:8080 -i --tun-type gue --tun-port 6080 --tun-nocsum
-A -u 10.99.0.2:514 -s nq -o -p 60
-a -u 10.99.0.2:514 -r 10.20.0.12 -m -w 7
-A -t 10.99.0.3:25 -s sed
-a -t 10.99.0.3:25 -r 10.20.0.13:25 -i -w 2 --tun-type gre --tun-csum
";

#[test]
fn nat_schedulers_persistence_metrics_bad_input_round_trip() {
    if !enabled("nat") {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut lab = Lab::new("nat");
    let topo = topology(&mut lab, 1, 12);
    let servers = real_servers(&topo);
    let rules = lab.path("nat.rules");
    std::fs::write(&rules, NAT_RULES).expect("write rules");
    let metrics_addr = sa(director_front(1), 9100).to_string();
    let d = Director::start(
        &lab,
        &topo.directors[0],
        "d1",
        "tun0",
        &["--rules", &rules.to_string_lossy(), "--metrics", &metrics_addr, "--slow-start", "0"],
    );
    let ports = Ports::new();
    let one = [CLIENT];
    let many: Vec<Ipv4Addr> = (0..12).map(client_extra).collect();
    let tcp = Protocol::Tcp;

    // rr and wrr: exact proportions.
    let (rr, _) = balance(&d, &topo, &ports, "rr", (tcp, 80, 80), "rr", [1, 1, 1], &one, REQUESTS);
    assert_eq!(rr, [100, 100, 100]);
    let (wrr, _) = balance(&d, &topo, &ports, "wrr 1:2:3", (tcp, 81, 81), "wrr", [1, 2, 3], &one, REQUESTS);
    assert_eq!(wrr, [50, 100, 150]);

    // wlc: the same picks as ipvs-sched's with the counters the director had — checked afterwards: every
    // connection of the run is still in the table, inactive (TIME_WAIT lasts 2 minutes).
    let (wlc, _) =
        balance(&d, &topo, &ports, "wlc 1:2:3 (12 clients)", (tcp, 82, 82), "wlc", [1, 2, 3], &many, REQUESTS);
    let listed = service(&d.list(), "TCP", "10.99.0.1:82").clone();
    for j in 1..=3 {
        let x = listed.dest(&sa(rs_addr(j), 82).to_string());
        assert_eq!((x.active, x.inactive as usize), (0, wlc[j - 1]), "wlc counters of rs{j}: {listed:?}");
    }
    println!(
        "e2e nat wlc: the director's counters after the run: ActiveConn 0/0/0, InActConn {} (as charged in the model)",
        slash(&wlc)
    );

    // sh: each client address on the real server ipvs-sched's table gives it.
    let (_, sh) = balance(&d, &topo, &ports, "sh 1:2:3 (12 clients)", (tcp, 83, 83), "sh", [1, 2, 3], &many, REQUESTS);
    let mut by_client: BTreeMap<IpAddr, BTreeSet<usize>> = BTreeMap::new();
    for (src, r) in &sh {
        by_client.entry(src.ip()).or_default().insert(r.clone().unwrap_or(0));
    }
    assert!(by_client.values().all(|s| s.len() == 1), "sh: a client on several real servers: {by_client:?}");
    let map: Vec<String> = by_client.iter().map(|(c, s)| format!("{c}→rs{}", s.first().unwrap_or(&0))).collect();
    println!("e2e nat sh: each client always on one real server: {}", map.join(" "));

    // UDP: rr over new sockets.
    let (udp, _) = balance(&d, &topo, &ports, "udp rr", (Protocol::Udp, 53, UDP_PORT), "rr", [1, 1, 1], &one, 30);
    assert_eq!(udp, [10, 10, 10]);

    wlc_held(&d, &topo, &ports, &many);
    persistence(&d, &topo, &ports);
    servers_agree(&d, &servers);
    metrics(&d, &topo, &ports, &metrics_addr);
    bad_input(&lab, &d, &topo, &ports);
    round_trip(&lab, &d, &topo);
    println!("e2e nat: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// wlc with active connections: every third connection of 90 stays open (ESTABLISHED, 256 times the weight
/// of an inactive one in wlc's overhead), the others are closed by the client after one exchange. The picks
/// equal ipvs-sched's with each pick charged the same way, and the director's ActiveConn / InActConn end as
/// the model's.
fn wlc_held(d: &Director, topo: &Topology, ports: &Ports, clients: &[Ipv4Addr]) {
    let n = 90;
    let weights = [1, 2, 3];
    let virt = sa(VIP, ECHO_PORT);
    let mut model = Model::new("wlc", &[1, 2, 3].map(|j| (sa(rs_addr(j), ECHO_PORT), weights[j - 1])));
    let got: Vec<(SocketAddr, Result<usize, String>, Option<TcpStream>)> = in_ns(&topo.client, || {
        (0..n)
            .map(|i| {
                let src = sa(clients[i % clients.len()], ports.next());
                let r = connect(src, virt).and_then(|s| {
                    let mut f = Flow::new(src, s)?;
                    let who = f.exchange(&format!("hello {i}"))?;
                    Ok((rs_index(&who), f.writer))
                });
                match r {
                    // Held: kept until the end. Closed: dropped here, the client's FIN goes first.
                    Ok((rs, s)) => (src, Ok(rs), (i % 3 == 0).then_some(s)),
                    Err(e) => (src, Err(e.to_string()), None),
                }
            })
            .collect()
    });
    let mut expected = Vec::new();
    let (mut held, mut closed) = ([0u32; 3], [0u32; 3]);
    for (i, (src, _, _)) in got.iter().enumerate() {
        let a = model.pick_held(Protocol::Tcp, *src, virt, i % 3 == 0);
        let j = (1..=3).find(|&j| sa(rs_addr(j), ECHO_PORT) == a).expect("a real server of the scenario");
        if i % 3 == 0 {
            held[j - 1] += 1;
        } else {
            closed[j - 1] += 1;
        }
        expected.push(j);
    }
    let picks: Vec<usize> = got.iter().filter_map(|(_, r, _)| r.as_ref().ok().copied()).collect();
    let listed = service(&d.list(), "TCP", &virt.to_string()).clone();
    let active: Vec<u32> = (1..=3).map(|j| listed.dest(&sa(rs_addr(j), ECHO_PORT).to_string()).active).collect();
    let inactive: Vec<u32> = (1..=3).map(|j| listed.dest(&sa(rs_addr(j), ECHO_PORT).to_string()).inactive).collect();
    let equal = picks.iter().zip(&expected).filter(|(a, b)| a == b).count();
    println!(
        "e2e nat wlc 1:2:3, every third of {n} connections held open (12 clients): {}/{n} served, rs1/rs2/rs3 = {}; \
         {equal}/{n} picks equal ipvs-sched's; the director's ActiveConn {} InActConn {} (model: {} and {})",
        picks.len(),
        slash(&tally(&picks)),
        slash(&active.iter().map(|&x| x as usize).collect::<Vec<_>>()),
        slash(&inactive.iter().map(|&x| x as usize).collect::<Vec<_>>()),
        slash(&held.map(|x| x as usize)),
        slash(&closed.map(|x| x as usize)),
    );
    assert_eq!(picks.len(), n, "wlc held: requests failed: {:?}", got.iter().find(|(_, r, _)| r.is_err()));
    assert_eq!(picks, expected, "wlc held: picks differ from ipvs-sched's");
    assert_eq!((active, inactive), (held.to_vec(), closed.to_vec()), "wlc held: the director's counters");
    drop(got);
}

/// What the real servers counted equals what the director counted for each of them (`--stats` Conns):
/// every HTTP request, datagram and echo connection that reached a real server went through the director
/// (each echo connection of the scenario exchanged one line).
fn servers_agree(d: &Director, servers: &RealServers) {
    let stats = d.stats();
    let director_count = |j: usize, ports: &[u16], proto: &str| -> u64 {
        stats
            .iter()
            .filter(|s| s.proto == proto)
            .flat_map(|s| s.dests.iter())
            .filter(|(a, _)| ports.iter().any(|p| *a == sa(rs_addr(j), *p).to_string()))
            .map(|(_, c)| c.conns)
            .sum()
    };
    let mut shown = Vec::new();
    for (kind, list, ports, proto) in [
        ("http", &servers.http, &HTTP_PORTS[..], "TCP"),
        ("udp", &servers.udp, &[UDP_PORT][..], "UDP"),
        ("echo", &servers.echo, &[ECHO_PORT][..], "TCP"),
    ] {
        let mine: Vec<u64> = list.iter().map(|s| s.served.load(std::sync::atomic::Ordering::Relaxed)).collect();
        let theirs: Vec<u64> = (1..=3).map(|j| director_count(j, ports, proto)).collect();
        assert_eq!(mine, theirs, "{kind}: served by the real servers vs the director's Conns per real server");
        shown.push(format!("{kind} {}", mine.iter().map(ToString::to_string).collect::<Vec<_>>().join("/")));
    }
    println!("e2e nat: the real servers' own counts equal the director's Conns per real server: {}", shown.join(", "));
}

/// `-p 60`: every connection of a client goes to one real server.
fn persistence(d: &Director, topo: &Topology, ports: &Ports) {
    let clients = [CLIENT, client_extra(0), client_extra(1), client_extra(2)];
    let per_client = 20;
    let got = requests(topo, ports, Protocol::Tcp, 84, &clients, clients.len() * per_client);
    let mut by_client: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (src, r) in &got {
        let rs = r.clone().unwrap_or_else(|e| panic!("persistence: request from {src} failed: {e}"));
        by_client.entry(src.ip()).or_default().push(rs);
    }
    let mut summary = Vec::new();
    for (client, picks) in &by_client {
        let set: BTreeSet<usize> = picks.iter().copied().collect();
        assert_eq!(set.len(), 1, "persistence: {client}'s connections went to {picks:?}");
        summary.push(format!("{client}→rs{} {}/{}", picks[0], picks.len(), picks.len()));
    }
    let templates = d.conns().iter().filter(|c| c.virt == "10.99.0.1:84" && c.source.ends_with(":0")).count();
    assert_eq!(templates, clients.len(), "one persistence template per client: {}", d.ctl_ok(&["-L", "-n", "-c"]));
    println!(
        "e2e persistence (-p 60): {}/{} served, each client on one real server: {}; {templates} templates",
        got.len(),
        got.len(),
        summary.join(", ")
    );
}

/// The labels of a sample.
type Labels = BTreeMap<String, String>;
/// A counter of a `--stats` line.
type Field = fn(&Counters) -> u64;

/// A Prometheus text: `name → [(labels, value)]`, and the `# TYPE`s.
#[derive(Debug, Default, PartialEq)]
struct Scrape {
    samples: BTreeMap<String, Vec<(Labels, f64)>>,
    types: BTreeMap<String, String>,
}

fn parse_scrape(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a TYPE line");
            s.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').expect("closing brace");
                let labels = l
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (n, labels)
            }
            None => (series, BTreeMap::new()),
        };
        s.samples.entry(name.to_owned()).or_default().push((labels, value));
    }
    s
}

/// The metrics scrape: node_exporter's names, types and labels, and the same numbers as `ctl -L -n
/// [--stats --exact]`.
fn metrics(d: &Director, topo: &Topology, ports: &Ports, addr: &str) {
    let addr: SocketAddr = addr.parse().expect("metrics address");
    let scrape = || {
        let src = sa(CLIENT, ports.next());
        let body = in_ns(&topo.client, || http_get(src, addr, "/metrics")).expect("scrape /metrics");
        parse_scrape(&body)
    };
    // Nothing moves now, but read until two scrapes around the listings agree.
    let (m, list, stats) = (0..5)
        .find_map(|_| {
            let a = scrape();
            let list = d.list();
            let stats = d.stats();
            let b = scrape();
            (a == b).then_some((a, list, stats))
        })
        .expect("the metrics settle");

    let counters: [(&str, Field); 5] = [
        ("node_ipvs_connections_total", |c| c.conns),
        ("node_ipvs_incoming_packets_total", |c| c.inpkts),
        ("node_ipvs_outgoing_packets_total", |c| c.outpkts),
        ("node_ipvs_incoming_bytes_total", |c| c.inbytes),
        ("node_ipvs_outgoing_bytes_total", |c| c.outbytes),
    ];
    let mut shown = Vec::new();
    for (name, field) in counters {
        assert_eq!(m.types.get(name).map(String::as_str), Some("counter"), "# TYPE of {name}");
        let samples = &m.samples[name];
        assert_eq!(samples.len(), 1, "{name}: {samples:?}");
        assert!(samples[0].0.is_empty(), "{name} has no labels");
        let sum: u64 = stats.iter().map(|s| field(&s.counters)).sum();
        #[allow(clippy::cast_precision_loss)]
        let want = sum as f64;
        assert!(
            (samples[0].1 - want).abs() < 0.5,
            "{name} = {} but the services' --stats add up to {sum}",
            samples[0].1
        );
        shown.push(format!("{}={sum}", name.trim_start_matches("node_ipvs_")));
    }

    let label_names: BTreeSet<&str> =
        ["local_address", "local_port", "local_mark", "proto", "remote_address", "remote_port"].into();
    let mut rows = 0;
    for (name, pick) in [
        ("node_ipvs_backend_connections_active", 0),
        ("node_ipvs_backend_connections_inactive", 1),
        ("node_ipvs_backend_weight", 2),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some("gauge"), "# TYPE of {name}");
        let samples = &m.samples[name];
        for (labels, _) in samples {
            let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
            assert_eq!(keys, label_names, "labels of {name}");
        }
        for s in &list {
            let (vaddr, vport) = s.addr.rsplit_once(':').expect("addr:port");
            for x in &s.dests {
                let (raddr, rport) = x.addr.rsplit_once(':').expect("addr:port");
                let want: Labels = [
                    ("local_address", vaddr),
                    ("local_port", vport),
                    ("local_mark", ""),
                    ("proto", s.proto.as_str()),
                    ("remote_address", raddr),
                    ("remote_port", rport),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
                let value = samples
                    .iter()
                    .find(|(l, _)| *l == want)
                    .map(|(_, v)| *v)
                    .unwrap_or_else(|| panic!("{name}: no sample for {} {} → {}", s.proto, s.addr, x.addr));
                let listed = [x.active, x.inactive, x.weight][pick];
                assert!(
                    (value - f64::from(listed)).abs() < 0.5,
                    "{name} of {} → {}: {value} vs -L -n {listed}",
                    s.addr,
                    x.addr
                );
                rows += 1;
            }
        }
        assert_eq!(samples.len(), list.iter().map(|s| s.dests.len()).sum::<usize>(), "{name}: one row per real server");
    }
    for ours in ["tun_director_engine_drops_total", "tun_director_conn_table_entries", "tun_director_tun_packets_total"]
    {
        assert!(m.samples.contains_key(ours), "{ours} missing");
    }
    println!(
        "e2e metrics: node_ipvs_* names, types and labels as node_exporter's; totals equal the sum of -L -n --stats \
         --exact ({}); {rows} backend gauges equal -L -n's ActiveConn/InActConn/Weight",
        shown.join(" ")
    );
}

/// Bad `ctl` commands and rules files: refused with the argument or line, the running configuration
/// unchanged (and still forwarding).
fn bad_input(lab: &Lab, d: &Director, topo: &Topology, ports: &Ports) {
    let before = d.ctl_ok(&["-S", "-n"]);
    let cases: [(&[&str], &str, &str); 5] = [
        (&["-a", "-t", "10.99.0.1:80", "-r", "10.20.0.14:80", "-m", "-w", "nine"], "", "nine"),
        (&["-a", "-t", "10.99.0.1:80", "-r", "10.20.0.14:80"], "", "direct routing"),
        (&["-A", "-t", "10.99.0.1:80", "-s", "wlc"], "", "exists"),
        (&["-L", "-n", "--bogus"], "", "--bogus"),
        (
            &["-R"],
            "-A -t 10.99.0.9:80 -s rr\n-a -t 10.99.0.9:80 -r 10.20.0.11:80 -m\n\
             -a -t 10.99.0.9:80 -r 10.20.0.12:80 -m -w x\n",
            "line 3",
        ),
    ];
    for (args, stdin, needle) in cases {
        let out = d.ctl_stdin(args, stdin);
        assert_eq!(out.code, 1, "ctl {} should be refused: {out:?}", args.join(" "));
        assert!(out.stderr.contains(needle), "ctl {}: {:?} does not name {needle:?}", args.join(" "), out.stderr);
        assert_one_line(&out, &format!("ctl {}", args.join(" ")));
        assert_eq!(d.ctl_ok(&["-S", "-n"]), before, "ctl {} changed the configuration", args.join(" "));
    }
    let gone = tun_director(&["ctl", "--control", &lab.path("nobody.sock").to_string_lossy(), "-L", "-n"], "");
    assert_eq!(gone.code, 2, "ctl to no director: {gone:?}");

    // A rules file with an error: `run` and `check` refuse it whole, naming the line.
    let bad = lab.path("bad.rules");
    std::fs::write(&bad, "-A -t 10.99.0.5:80 -s rr\n-a -t 10.99.0.5:80 -r 10.20.0.11:80 -m -w many\n").expect("write");
    let bad_arg = bad.to_string_lossy().into_owned();
    let sock = lab.path("bad.sock").to_string_lossy().into_owned();
    let run = run_expecting_failure(&topo.directors[0], &["--tun", "tunbad", "--control", &sock, "--rules", &bad_arg]);
    assert_eq!(run.code, 1, "run with a bad rules file: {run:?}");
    assert!(run.stderr.contains("line 2") && run.stderr.contains("many"), "{:?}", run.stderr);
    assert_one_line(&run, "run --rules bad");
    let chk = check(&bad);
    assert_eq!(chk.code, 1, "check with a bad rules file: {chk:?}");
    assert!(chk.stderr.contains("line 2"), "{:?}", chk.stderr);
    assert_one_line(&chk, "check --rules bad");
    let dr = lab.path("dr.rules");
    std::fs::write(&dr, "-A -t 10.99.0.5:80 -s rr\n-a -t 10.99.0.5:80 -r 10.20.0.11:80 -g\n").expect("write");
    let run_dr = run_expecting_failure(
        &topo.directors[0],
        &["--tun", "tunbad", "--control", &sock, "--rules", &dr.to_string_lossy()],
    );
    assert_eq!(run_dr.code, 1, "run with -g: {run_dr:?}");
    assert!(run_dr.stderr.contains("line 2") && run_dr.stderr.contains("direct routing"), "{:?}", run_dr.stderr);

    // No permission for the TUN device: without CAP_NET_ADMIN, one line and exit 1 (setpriv drops it).
    let no_cap = if std::path::Path::new("/usr/bin/setpriv").exists() {
        let out = tun_director_without_net_admin(&topo.directors[0], &sock);
        assert_eq!(out.code, 1, "run without CAP_NET_ADMIN: {out:?}");
        assert!(out.stderr.contains("cannot create TUN device tunbad"), "{:?}", out.stderr);
        assert_one_line(&out, "run without CAP_NET_ADMIN");
        "no CAP_NET_ADMIN → 1 line, exit 1"
    } else {
        "no CAP_NET_ADMIN: not tried (no setpriv)"
    };

    assert_eq!(d.ctl_ok(&["-S", "-n"]), before, "the running configuration changed");
    let after = requests(topo, ports, Protocol::Tcp, 80, &[CLIENT], 3);
    assert!(after.iter().all(|(_, r)| r.is_ok()), "still forwarding: {after:?}");
    println!(
        "e2e bad input: 5 bad ctl commands refused (exit 1, one line naming the argument / line 3 of -R), ctl without \
         a director → exit 2; run/check with a bad rules file → exit 1 naming line 2; -g refused; {no_cap}; -S -n \
         unchanged, 3/3 requests still served"
    );
}

fn tun_director_without_net_admin(ns: &str, sock: &str) -> Output {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "/usr/bin/setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"])
        .args([e2e_support::director::BIN, "run", "--tun", "tunbad", "--control", sock])
        .output()
        .expect("run setpriv");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ctl -S -n` loaded into a fresh director gives the same `ctl -S -n`: for a rich rules file (through
/// `run --rules`, `check --rules` and `ctl -R` into a director started empty) and the NAT scenario's.
fn round_trip(lab: &Lab, d: &Director, topo: &Topology) {
    let rich = lab.path("rich.rules");
    std::fs::write(&rich, RICH_RULES).expect("write");
    let ns = &topo.directors[0];
    let rt1 = Director::start(lab, ns, "rt1", "tunrt1", &["--rules", &rich.to_string_lossy()]);
    let saved = rt1.ctl_ok(&["-S", "-n"]);
    let n_services = parse_list(&rt1.ctl_ok(&["-L", "-n"])).len();
    assert_eq!(n_services, 8, "{saved}");
    let saved_file = lab.path("rich.saved");
    std::fs::write(&saved_file, &saved).expect("write");
    let chk = check(&saved_file);
    assert_eq!(chk.code, 0, "check of -S -n output: {chk:?}");
    assert_eq!(chk.stdout, saved, "check --rules of -S -n output");
    let rt2 = Director::start(lab, ns, "rt2", "tunrt2", &[]);
    assert_eq!(rt2.ctl_ok(&["-S", "-n"]), "", "a fresh director");
    let restored = rt2.ctl_stdin(&["-R"], &saved);
    assert_eq!(restored.code, 0, "ctl -R of -S -n output: {restored:?}");
    assert_eq!(rt2.ctl_ok(&["-S", "-n"]), saved, "ctl -R into a fresh director");

    let nat_saved = d.ctl_ok(&["-S", "-n"]);
    let nat_file = lab.path("nat.saved");
    std::fs::write(&nat_file, &nat_saved).expect("write");
    assert_eq!(check(&nat_file).stdout, nat_saved, "check --rules of the NAT director's -S -n");
    println!(
        "e2e round trip: -S -n of {n_services} services / {} lines → check --rules: same, ctl -R into a fresh \
         director: same; the NAT director's {} lines → check --rules: same",
        saved.lines().count(),
        nat_saved.lines().count()
    );
}

#[test]
fn health_check_quiesces_and_slow_start_returns() {
    if !enabled("health") {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut lab = Lab::new("health");
    let topo = topology(&mut lab, 1, 0);
    let mut servers: Vec<Server> = topo
        .rs
        .iter()
        .enumerate()
        .map(|(j, ns)| Server::http(ns, IpAddr::V4(rs_addr(j + 1)), &[80], &format!("rs{}", j + 1)))
        .collect();
    let rules = lab.path("health.rules");
    let mut text = String::from("-A -t 10.99.0.1:80 -s wrr\n");
    for j in 1..=3 {
        text.push_str(&format!("-a -t 10.99.0.1:80 -r {}:80 -m -w 10\n", rs_addr(j)));
    }
    std::fs::write(&rules, text).expect("write rules");
    let interval = Duration::from_secs(1);
    let timeout = Duration::from_millis(500);
    let slow_start = Duration::from_secs(6);
    let metrics_addr = sa(director_front(1), 9100);
    let d = Director::start(
        &lab,
        &topo.directors[0],
        "d1",
        "tun0",
        &[
            "--rules",
            &rules.to_string_lossy(),
            "--health",
            "tcp",
            "--health-interval",
            "1s",
            "--health-timeout",
            "500ms",
            "--slow-start",
            "6s",
            "--metrics",
            &metrics_addr.to_string(),
        ],
    );
    let ports = Ports::new();
    let rs2 = sa(rs_addr(2), 80).to_string();
    let weight_of_rs2 = || service(&d.list(), "TCP", "10.99.0.1:80").dest(&rs2).weight;

    let warm = requests(&topo, &ports, Protocol::Tcp, 80, &[CLIENT], 30);
    let warm_picks: Vec<usize> = warm.iter().map(|(s, r)| r.clone().unwrap_or_else(|e| panic!("{s}: {e}"))).collect();
    assert_eq!(tally(&warm_picks), [10, 10, 10]);

    // Kill rs2: quiesced (weight 0) within the check interval (+ the check's timeout).
    servers[1].stop();
    let killed = Instant::now();
    while weight_of_rs2() != 0 {
        assert!(killed.elapsed() < Duration::from_secs(10), "rs2 not quiesced after 10 s: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let quiesced_after = killed.elapsed();
    assert!(quiesced_after <= interval + timeout, "quiesced after {quiesced_after:?}, interval {interval:?}");
    let rs2_conns = |d: &Director| {
        let stats = d.stats();
        let s = stats.iter().find(|s| s.addr == "10.99.0.1:80").expect("the service");
        s.dests.iter().find(|(a, _)| *a == rs2).expect("rs2").1.conns
    };
    let conns_before = rs2_conns(&d);
    let metrics_body =
        in_ns(&topo.client, || http_get(sa(CLIENT, ports.next()), metrics_addr, "/metrics")).expect("scrape /metrics");
    assert!(metrics_body.contains("tun_director_quiesced_real_servers 1\n"), "{metrics_body}");
    let down = requests(&topo, &ports, Protocol::Tcp, 80, &[CLIENT], 60);
    let down_picks: Vec<usize> = down.iter().map(|(s, r)| r.clone().unwrap_or_else(|e| panic!("{s}: {e}"))).collect();
    let down_counts = tally(&down_picks);
    assert_eq!(down_counts[1], 0, "a quiesced real server got new connections");
    assert_eq!(rs2_conns(&d), conns_before, "the director scheduled connections to the quiesced rs2");
    println!(
        "e2e health: rs2 killed → weight 0 after {} ms (interval {} ms + timeout {} ms); then {}/60 served, \
         rs1/rs2/rs3 = {}, rs2's Conns counter unchanged ({conns_before})",
        quiesced_after.as_millis(),
        interval.as_millis(),
        timeout.as_millis(),
        down_picks.len(),
        slash(&down_counts)
    );

    // Restart rs2: its weight comes back, and its share ramps up over the slow-start period.
    servers[1] = Server::http(&topo.rs[1], IpAddr::V4(rs_addr(2)), &[80], "rs2");
    let restarted = Instant::now();
    while weight_of_rs2() != 10 {
        assert!(restarted.elapsed() < Duration::from_secs(10), "rs2 not back after 10 s: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = Instant::now();
    let back_after = restarted.elapsed();
    let windows = 8;
    let got: Vec<(Duration, usize)> = in_ns(&topo.client, || {
        let mut out = Vec::new();
        while back.elapsed() < Duration::from_secs(windows) {
            let at = back.elapsed();
            let r = http_get(sa(CLIENT, ports.next()), sa(VIP, 80), "/").unwrap_or_else(|e| panic!("at {at:?}: {e}"));
            out.push((at, rs_index(&r)));
        }
        out
    });
    let mut shares = Vec::new();
    for w in 0..windows {
        let in_window: Vec<usize> = got.iter().filter(|(at, _)| at.as_secs() == w).map(|(_, rs)| *rs).collect();
        let c = tally(&in_window);
        #[allow(clippy::cast_precision_loss)]
        shares.push((c[1] as f64 / in_window.len().max(1) as f64, in_window.len()));
    }
    let shown: Vec<String> = shares.iter().map(|(s, n)| format!("{:.0}% of {n}", s * 100.0)).collect();
    println!(
        "e2e health: rs2 restarted → weight 10 again after {} ms; its share of new connections per second since \
         (slow start {} s, others weight 10): {}",
        back_after.as_millis(),
        slow_start.as_secs(),
        shown.join(", ")
    );
    // What slow start predicts: effective weight 1 + ⌊9·t/6 s⌋ against 10 + 10, averaged over each second.
    let predicted: Vec<f64> = (0..windows)
        .map(|w| {
            let steps = 1000;
            (0..steps)
                .map(|k| {
                    #[allow(clippy::cast_precision_loss)]
                    let t = w as f64 + f64::from(k) / f64::from(steps);
                    let eff = if t >= slow_start.as_secs_f64() {
                        10.0
                    } else {
                        1.0 + (9.0 * t / slow_start.as_secs_f64()).floor()
                    };
                    eff / (20.0 + eff)
                })
                .sum::<f64>()
                / f64::from(steps)
        })
        .collect();
    let shown: Vec<String> = predicted.iter().map(|p| format!("{:.0}%", p * 100.0)).collect();
    println!("e2e health: slow start predicts {}", shown.join(", "));
    // wrr is deterministic; what varies is how many requests a second holds (a round is 20 + w picks).
    for (w, ((got, n), want)) in shares.iter().zip(&predicted).enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let tolerance = 0.07 + 3.0 / (*n).max(1) as f64;
        assert!(
            (got - want).abs() < tolerance,
            "second {w} after rs2's return: share {got:.3} of {n}, slow start predicts {want:.3}"
        );
    }
    let first = shares[0].0;
    let last = shares[usize::try_from(windows).expect("small") - 1].0;
    assert!(first < 0.15, "rs2's share in the first second back is {first:.2}: no slow start");
    assert!((0.25..=0.42).contains(&last), "rs2's share after the ramp is {last:.2}, not about a third");
    assert!(first < last);
    println!("e2e health: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// One long-lived connection of the failover scenario.
struct Flow {
    src: SocketAddr,
    rs: String,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Flow {
    /// A flow over the connected `s`.
    fn new(src: SocketAddr, s: TcpStream) -> std::io::Result<Self> {
        let reader = BufReader::new(s.try_clone()?);
        Ok(Self { src, rs: String::new(), writer: s, reader })
    }

    /// Sends `msg`, reads the echo; the real server's name.
    fn exchange(&mut self, msg: &str) -> std::io::Result<String> {
        writeln!(self.writer, "{msg}")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        match line.trim_end().split_once(' ') {
            Some((who, echoed)) if echoed == msg => Ok(who.to_owned()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("echo {line:?} of {msg:?}"))),
        }
    }
}

#[test]
fn failover_keeps_synced_connections() {
    if !enabled("failover") {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut lab = Lab::new("failover");
    let topo = topology(&mut lab, 2, 0);
    let servers: Vec<Server> = topo
        .rs
        .iter()
        .enumerate()
        .map(|(j, ns)| Server::echo(ns, sa(rs_addr(j + 1), 7000), &format!("rs{}", j + 1)))
        .collect();
    let rules = lab.path("failover.rules");
    let mut text = String::from("-A -t 10.99.0.1:7000 -s rr\n");
    for j in 1..=3 {
        text.push_str(&format!("-a -t 10.99.0.1:7000 -r {}:7000 -m -w 1\n", rs_addr(j)));
    }
    std::fs::write(&rules, text).expect("write rules");
    let rules_arg = rules.to_string_lossy().into_owned();
    let mut master = Director::start(
        &lab,
        &topo.directors[0],
        "d1",
        "tun0",
        &["--rules", &rules_arg, "--sync-master", "s0", "--syncid", "7"],
    );
    let backup = Director::start(
        &lab,
        &topo.directors[1],
        "d2",
        "tun0",
        &["--rules", &rules_arg, "--sync-backup", "s0", "--syncid", "7"],
    );
    assert!(master.ctl_ok(&["-L", "-n", "--daemon"]).contains("master sync daemon"));
    assert!(backup.ctl_ok(&["-L", "-n", "--daemon"]).contains("backup sync daemon"));

    // A second backup on the same sync port: one line, exit 1.
    let sock = lab.path("busy.sock").to_string_lossy().into_owned();
    let busy = run_expecting_failure(
        &topo.directors[1],
        &["--tun", "tunbusy", "--control", &sock, "--sync-backup", "s0", "--syncid", "7"],
    );
    assert_eq!(busy.code, 1, "a second sync backup on the port: {busy:?}");
    assert_one_line(&busy, "busy sync port");

    // 20 long-lived connections through the master, each having exchanged data.
    let ports = Ports::new();
    let n = 20;
    let mut flows: Vec<Flow> = in_ns(&topo.client, || {
        (0..n)
            .map(|i| {
                let src = sa(CLIENT, ports.next());
                let s = connect(src, sa(VIP, 7000)).unwrap_or_else(|e| panic!("conn {i}: {e}"));
                let mut f = Flow::new(src, s).expect("clone");
                f.rs = f.exchange(&format!("hello {i}")).unwrap_or_else(|e| panic!("conn {i}: {e}"));
                f
            })
            .collect()
    });
    let mut spread: HashMap<String, usize> = HashMap::new();
    for f in &flows {
        *spread.entry(f.rs.clone()).or_default() += 1;
    }

    // The backup lists all 20 (bounded wait), each with the master's real server.
    let want: BTreeMap<String, String> =
        flows.iter().map(|f| (f.src.to_string(), format!("{}:7000", rs_addr(rs_index(&f.rs))))).collect();
    let polled = Instant::now();
    let listed = loop {
        let conns = backup.conns();
        let listed = want
            .iter()
            .filter(|(src, dest)| {
                conns.iter().any(|c| &c.source == *src && &c.dest == *dest && c.virt == "10.99.0.1:7000")
            })
            .count();
        if listed == n {
            break listed;
        }
        assert!(
            polled.elapsed() < Duration::from_secs(15),
            "the backup lists {listed}/{n} of the connections after 15 s:\n{}",
            backup.ctl_ok(&["-L", "-n", "-c"])
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let synced_after = polled.elapsed();
    let states: BTreeSet<String> = backup.conns().into_iter().map(|c| c.state).collect();

    // Failover: the master dies, the VIP and the real servers' gateway move to the backup.
    master.kill();
    move_vip(&topo, 2);
    let mut ok = 0;
    let mut lost = BTreeSet::new();
    for round in 0..3 {
        for (i, f) in flows.iter_mut().enumerate() {
            match f.exchange(&format!("again {round} {i}")) {
                Ok(who) if who == f.rs => ok += 1,
                Ok(who) => {
                    lost.insert(i);
                    eprintln!("conn {i} ({}) answered by {who}, was {}", f.src, f.rs);
                }
                Err(e) => {
                    lost.insert(i);
                    eprintln!("conn {i} ({}): {e}", f.src);
                }
            }
        }
    }
    // New connections go through the backup too.
    let fresh = requests_echo(&topo, &ports, 3);
    let mut spread: Vec<String> = spread.into_iter().map(|(k, v)| format!("{k} {v}")).collect();
    spread.sort();
    println!(
        "e2e failover: {n} conns ({}) each exchanged data; backup lists {listed}/{n} (states {states:?}) after {} ms; \
         master killed, VIP moved; {ok}/{} exchanges after failover, {} conns lost; {fresh}/3 new conns through the \
         backup; a second sync backup on the port → exit 1, one line; {:.1} s",
        spread.join(", "),
        synced_after.as_millis(),
        3 * n,
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(lost.is_empty(), "conns lost in the failover: {lost:?}\n{}", backup.log_text());
    assert_eq!(ok, 3 * n);
    assert_eq!(fresh, 3);
    let echoed: u64 = servers.iter().map(|s| s.served.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(echoed, 4 * 20 + 3, "lines echoed by the real servers");
}

/// New echo connections to the VIP that answer: how many of `n`.
fn requests_echo(topo: &Topology, ports: &Ports, n: usize) -> usize {
    in_ns(&topo.client, || {
        (0..n)
            .filter(|i| {
                let src = sa(CLIENT, ports.next());
                connect(src, sa(VIP, 7000)).and_then(|s| Flow::new(src, s)?.exchange(&format!("new {i}"))).is_ok()
            })
            .count()
    })
}

/// `check` and `ctl` need no root: their refusals and exit codes are checked on every `cargo test`.
#[test]
fn check_refuses_bad_rules_without_root() {
    let dir = std::env::temp_dir().join(format!("ipvse2e-{}-check", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let good = file("good.rules", NAT_RULES);
    let out = check(&good);
    assert_eq!(out.code, 0, "{out:?}");
    let saved = file("good.saved", &out.stdout);
    assert_eq!(check(&saved).stdout, out.stdout, "round trip through check");

    let cases = [
        ("-A -t 10.99.0.1:80 -s rr\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w -3\n", "line 2"),
        ("-A -t 10.99.0.1:80 -s nosuch\n", "line 1"),
        ("-A -t 10.99.0.1:80 -s rr\n-A -t 10.99.0.1:80 -s rr\n", "line 2"),
        ("-A -t 10.99.0.1:80 -s rr\n\n-a -t 10.99.0.1:80 -r 10.20.0.11:80\n", "direct routing"),
        ("-A -u 10.99.0.1:53\n-a -t 10.99.0.1:53 -r 10.20.0.11 -m\n", "line 2"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let out = check(&file(&format!("bad{i}.rules"), text));
        assert_eq!(out.code, 1, "{text:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{text:?}: {:?} lacks {needle:?}", out.stderr);
        assert!(out.stderr.contains("nothing applied"), "{:?}", out.stderr);
        assert_one_line(&out, text);
        assert!(out.stdout.is_empty());
    }
    let usage = tun_director(&["check"], "");
    assert_eq!(usage.code, 2, "usage error: {usage:?}");
    let unreachable = tun_director(&["ctl", "--control", &dir.join("none.sock").to_string_lossy(), "-L", "-n"], "");
    assert_eq!(unreachable.code, 2, "{unreachable:?}");
    assert_one_line(&unreachable, "ctl without a director");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "e2e check: good rules round-trip; {} bad rules files refused (exit 1, one line, the line number); usage → 2; \
         ctl without a director → 2",
        cases.len()
    );
}
