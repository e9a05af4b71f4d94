//! Network namespaces, veth pairs and the topology of the scenarios.
//!
//! ```text
//!   client ── brc ──┬── d1 (e0 10.10.0.11) ═ tun0 ═ (e1 10.20.0.1) ──┬── brr ── rs1 10.20.0.11
//!  10.10.0.2        └── d2 (e0 10.10.0.12) ═ tun0 ═ (e1 10.20.0.2) ──┘          rs2 10.20.0.12
//!  (+ 10.10.0.100…)          d1 s0 10.30.0.1 ───── sync veth ───── d2 s0 10.30.0.2    rs3 10.20.0.13
//! ```
//!
//! The bridges live in a switch namespace; the client routes the VIP to the active director, the real servers
//! use it as their default gateway. In each director namespace the README's routing recipe: the VIP is
//! routed into `tun0` (created beforehand, so the routes outlive director restarts), and what comes in from
//! the real servers' side (`iif e1`) goes through `tun0` too.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

/// The virtual address.
pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The client's primary address.
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);

/// Director `i`'s (1-based) address on the client side.
pub(crate) fn director_front(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 0, 10 + small(i))
}

/// Director `i`'s address on the real servers' side.
pub(crate) fn director_back(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, small(i))
}

/// Real server `j`'s (1-based) address.
pub(crate) fn rs_addr(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, 10 + small(j))
}

/// The client's `k`-th extra address (0-based): 10.10.0.100 + k.
pub(crate) fn client_extra(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 0, 100 + small(k))
}

fn small(i: usize) -> u8 {
    u8::try_from(i).expect("a small index")
}

/// Runs a command, panics with its output when it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n NS ARGS` (words split at spaces).
pub(crate) fn ip(ns: &str, args: &str) {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    run("ip", &all);
}

/// `sysctl -qw KEY=VALUE` inside `ns`.
pub(crate) fn sysctl(ns: &str, kv: &str) {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", kv]);
}

/// Moves the calling thread into the network namespace `ns` (`ip netns add`'s name).
pub(crate) fn enter(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: `f` is an open namespace file for the duration of the call; setns(2) with CLONE_NEWNET only
    // changes the network namespace of the calling thread, which is one this module spawned for it.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a thread inside `ns` and returns its result (a panic in `f` is the caller's panic). Sockets
/// made there stay in `ns` wherever they are used afterwards.
pub(crate) fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns).unwrap_or_else(|e| panic!("cannot enter network namespace {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The scenario's namespaces and scratch directory; dropping it kills what still runs in the namespaces
/// and deletes them (and the directory, unless `IPVS_E2E_KEEP=1`).
#[derive(Debug)]
pub(crate) struct Lab {
    /// `ipvse2e-<pid>-<tag>`.
    pub(crate) prefix: String,
    /// Rules files, control sockets, director logs.
    pub(crate) work: PathBuf,
    namespaces: Vec<String>,
}

impl Lab {
    /// A lab for the scenario `tag`. Namespaces left by earlier runs whose test process is gone are
    /// removed first.
    pub(crate) fn new(tag: &str) -> Self {
        remove_stale();
        let prefix = format!("ipvse2e-{}-{tag}", std::process::id());
        let work = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("cannot create {}: {e}", work.display()));
        Self { prefix, work, namespaces: Vec::new() }
    }

    /// Creates the namespace `<prefix>-<name>` (loopback up) and returns its name.
    pub(crate) fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        run("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&ns, "link set lo up");
        ns
    }

    /// A file in the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            delete_netns(ns);
        }
        if std::env::var("IPVS_E2E_KEEP").is_ok_and(|v| v == "1") {
            println!("e2e: kept {}", self.work.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

/// Kills what runs in `ns` (only this suite's processes: the namespace is this suite's) and deletes it.
fn delete_netns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Deletes `ipvse2e-<pid>-…` namespaces of test processes that no longer exist (a run killed before its
/// guards ran).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix("ipvse2e-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_netns(name);
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(name.rsplit_once('-').map_or(name, |x| x.0)));
        }
    }
}

/// The namespaces of one scenario.
#[derive(Debug)]
pub(crate) struct Topology {
    /// The client.
    pub(crate) client: String,
    /// The directors (1 or 2).
    pub(crate) directors: Vec<String>,
    /// The three real servers.
    pub(crate) rs: Vec<String>,
}

/// Builds the topology: a client with `extra_client_addrs` addresses beside its own, `n_directors`
/// directors (a sync veth `s0` between two), three real servers. Director 1 is active: the client's route
/// to the VIP and the real servers' default route point at it.
pub(crate) fn topology(lab: &mut Lab, n_directors: usize, extra_client_addrs: usize) -> Topology {
    let sw = lab.netns("sw");
    ip(&sw, "link add brc type bridge");
    ip(&sw, "link add brr type bridge");
    ip(&sw, "link set brc up");
    ip(&sw, "link set brr up");
    // A veth pair from `ns`'s `ifname` to a port of `bridge`, with `addr` on the namespace's side.
    let plug = |ns: &str, ifname: &str, port: &str, bridge: &str, addr: &str| {
        run("ip", &["link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns", &sw]);
        ip(&sw, &format!("link set {port} master {bridge} up"));
        ip(ns, &format!("addr add {addr} dev {ifname}"));
        ip(ns, &format!("link set {ifname} up"));
    };

    let client = lab.netns("c");
    plug(&client, "eth0", "c-eth0", "brc", &format!("{CLIENT}/24"));
    for k in 0..extra_client_addrs {
        ip(&client, &format!("addr add {}/24 dev eth0", client_extra(k)));
    }
    ip(&client, &format!("route add {VIP}/32 via {}", director_front(1)));

    let mut directors = Vec::new();
    for i in 1..=n_directors {
        let d = lab.netns(&format!("d{i}"));
        plug(&d, "e0", &format!("d{i}-e0"), "brc", &format!("{}/24", director_front(i)));
        plug(&d, "e1", &format!("d{i}-e1"), "brr", &format!("{}/24", director_back(i)));
        for kv in ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"] {
            sysctl(&d, kv);
        }
        // The README's routing recipe, on a device made beforehand so the routes survive director restarts.
        ip(&d, "tuntap add tun0 mode tun");
        ip(&d, "link set tun0 up");
        sysctl(&d, "net.ipv4.conf.tun0.rp_filter=0");
        ip(&d, &format!("route add {VIP}/32 dev tun0"));
        ip(&d, "rule add iif e1 lookup 100 pref 1000");
        ip(&d, "route add default dev tun0 table 100");
        directors.push(d);
    }
    if n_directors == 2 {
        run(
            "ip",
            &[
                "link",
                "add",
                "s0",
                "netns",
                &directors[0],
                "type",
                "veth",
                "peer",
                "name",
                "s0",
                "netns",
                &directors[1],
            ],
        );
        for (i, d) in directors.iter().enumerate() {
            ip(d, &format!("addr add 10.30.0.{}/24 dev s0", i + 1));
            ip(d, "link set s0 up");
        }
    }

    let mut rs = Vec::new();
    for j in 1..=3 {
        let r = lab.netns(&format!("rs{j}"));
        plug(&r, "eth0", &format!("rs{j}-eth0"), "brr", &format!("{}/24", rs_addr(j)));
        ip(&r, &format!("route add default via {}", director_back(1)));
        rs.push(r);
    }
    Topology { client, directors, rs }
}

/// Makes director `i` (1-based) the active one: the client's route to the VIP and the real servers'
/// default route go to it (what keepalived's VRRP would do on failover).
pub(crate) fn move_vip(topo: &Topology, i: usize) {
    ip(&topo.client, &format!("route replace {VIP}/32 via {}", director_front(i)));
    for r in &topo.rs {
        ip(r, &format!("route replace default via {}", director_back(i)));
    }
}

/// `addr:port`.
pub(crate) fn sa(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addr), port)
}
