//! Packets per second through the director's TUN path vs a bare TUN echo loop (issue 7).
//!
//! `cargo bench -p tun-director --bench tun_throughput`
//!
//! Everything runs inside one network namespace, `ipvstp-<pid>`, created here and deleted at the end (the
//! process re-executes itself inside it with `ip netns exec`). Nothing leaves the namespace. Inside it:
//!
//! - `tpgen0`, a TUN device the **generator** thread writes prebuilt UDP/IPv4 packets into, as fast as it can;
//!   the kernel forwards them by destination: the virtual address and the client network are routed into
//! - `tpdir0`, the TUN device of the **loop** under test (the same device for both setups), which reads each
//!   packet and writes one back. Packets written back to `tpdir0` are forwarded by the kernel (policy rule
//!   `iif tpdir0 lookup 100`, table 100 `default dev tpsink0`) to
//! - `tpsink0`, a TUN device nobody reads: its queue is full, so `tun_net_xmit` drops each packet. Whatever
//!   the loop writes takes the same kernel path in both setups: receive, route, forward, transmit.
//!
//! The two setups, on the same device, with the same generator, in the same process:
//!
//! 1. **bare**: read → write the same bytes back.
//! 2. **director**: read → [`Director::process`] (which classifies the packet and calls ipvs-core's
//!    `Engine::handle_packet`) → write back if [`Action::Write`]. `run.rs`'s `forward_loop` is private, so the
//!    loop is rebuilt here line for line as it is there (same 128-byte headroom, same 64 KiB buffer, same
//!    `PacketBuf`, blocking `recv`/`send` on a `tun_rs::SyncDevice`); the director is the library's own
//!    [`Director`] built by [`Director::new`] and loaded by [`Director::apply_rules`], and a timer thread calls
//!    `handle_timeout` as `run.rs`'s does.
//!
//! The packet stream is the same for both: 256 UDP flows (clients 10.98.0.1.., one port each) to the NAT
//! service 10.99.0.100:9000 (rr over 3 real servers 10.99.1.1-3), and for each flow one reply packet from its
//! real server to the client, alternating: half the packets take the in path (destination rewritten to the
//! real server), half the out path (source rewritten to the virtual address). The 256 conns are created
//! before the runs by passing each flow's first packet through the same `Director::process`, which is also
//! how the generator learns which real server each reply must come from; during the runs every packet hits
//! an existing conn.
//!
//! 3 runs of 6.5 s. In each, the one loop switches between the two setups every 250 ms (bare first), so load from other
//! processes that changes over seconds hits both alike; the first two slices are warm-up, the other 24 (3 s of each
//! setup) are measured by the loop itself: packets written back / time. The generator always offers more than the loop
//! can take (its overflow is dropped by `tpdir0`'s queue and shown), so the loop is the bottleneck in both setups. The
//! per-packet switch is one predictable branch. A second figure divides the same packets by the loop thread's own
//! on-CPU time (`/proc/thread-self/schedstat`, which includes the kernel work done in the thread's syscalls): on a
//! shared machine it moves less with other processes' load than the wall-clock rate. Not root, or no TUN: a message and
//! exit 0.
#![allow(missing_docs)]

use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipvs_core::PacketBuf;
use tun_director::{Action, Director, DirectorOptions};
use tun_rs::{DeviceBuilder, SyncDevice};

/// As in `run.rs`: room in front of each packet for tunnel headers and ICMP errors.
const HEADROOM: usize = 128;
const DIR_DEV: &str = "tpdir0";
const GEN_DEV: &str = "tpgen0";
const SINK_DEV: &str = "tpsink0";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const VPORT: u16 = 9000;
const FLOWS: u16 = 256;
const PAYLOAD: usize = 64;
const RUNS: usize = 3;
/// The loop switches between the two setups every slice, so load that changes over seconds hits both alike.
const SLICE: Duration = Duration::from_millis(250);
/// Slices per run not measured (one of each setup).
const WARMUP_SLICES: usize = 2;
/// Measured slices per run: 3 s of each setup.
const SLICES: usize = 24;
const RULES: &str = "\
-A -u 10.99.0.100:9000 -s rr
-a -u 10.99.0.100:9000 -r 10.99.1.1:9000 -m -w 1
-a -u 10.99.0.100:9000 -r 10.99.1.2:9000 -m -w 1
-a -u 10.99.0.100:9000 -r 10.99.1.3:9000 -m -w 1
";
/// The child's exit code for "no TUN device could be made" (the parent prints the skip and exits 0).
const EXIT_SKIP: u8 = 77;
const CHILD_ENV: &str = "IPVSTP_CHILD";

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    if !is_root() {
        println!("tun_throughput: skipped: needs root (network namespaces and TUN devices)");
        return ExitCode::SUCCESS;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        println!("tun_throughput: skipped: /dev/net/tun is missing (no TUN support)");
        return ExitCode::SUCCESS;
    }
    let ns = format!("ipvstp-{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &ns]) {
        println!("tun_throughput: skipped: cannot create network namespace {ns}: {e}");
        return ExitCode::SUCCESS;
    }
    let status = std::env::current_exe()
        .and_then(|exe| Command::new("ip").args(["netns", "exec", &ns]).arg(exe).env(CHILD_ENV, "1").status());
    if let Err(e) = ip(&["netns", "del", &ns]) {
        eprintln!("tun_throughput: cannot delete network namespace {ns}: {e}");
    }
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) if s.code() == Some(i32::from(EXIT_SKIP)) => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("tun_throughput: failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tun_throughput: cannot run inside {ns}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .is_some_and(|euid| euid == "0")
    })
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/net/{path}"), value)
        .map_err(|e| io::Error::new(e.kind(), format!("/proc/sys/net/{path}: {e}")))
}

fn dev_stat(dev: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn tun(name: &str) -> io::Result<SyncDevice> {
    DeviceBuilder::new().name(name).mtu(1500).enable(true).build_sync()
}

// ---------------------------------------------------------------------------------------------------------
// Inside the namespace
// ---------------------------------------------------------------------------------------------------------

fn child() -> ExitCode {
    let devs = (|| Ok::<_, io::Error>((tun(DIR_DEV)?, tun(GEN_DEV)?, tun(SINK_DEV)?)))();
    let (dir, gen, sink) = match devs {
        Ok(d) => d,
        Err(e) => {
            println!("tun_throughput: skipped: cannot create a TUN device: {e}");
            return ExitCode::from(EXIT_SKIP);
        }
    };
    match bench(&dir, &gen) {
        Ok(()) => {
            drop(sink);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tun_throughput: {e}");
            ExitCode::FAILURE
        }
    }
}

fn setup_routes() -> io::Result<()> {
    ip(&["link", "set", "lo", "up"])?;
    sysctl("ipv4/ip_forward", "1")?;
    for dev in ["all", "default", DIR_DEV, GEN_DEV, SINK_DEV] {
        sysctl(&format!("ipv4/conf/{dev}/rp_filter"), "0")?;
        sysctl(&format!("ipv4/conf/{dev}/send_redirects"), "0")?;
    }
    ip(&["addr", "add", "10.97.0.1/32", "dev", GEN_DEV])?;
    ip(&["addr", "add", "10.97.0.2/32", "dev", DIR_DEV])?;
    ip(&["addr", "add", "10.97.0.3/32", "dev", SINK_DEV])?;
    // Into the loop: the virtual address, and the clients (the real servers' replies).
    ip(&["route", "add", "10.99.0.100/32", "dev", DIR_DEV])?;
    ip(&["route", "add", "10.98.0.0/16", "dev", DIR_DEV])?;
    // Out of the loop: everything written back goes on to the sink.
    ip(&["route", "add", "default", "dev", SINK_DEV, "table", "100"])?;
    ip(&["rule", "add", "iif", DIR_DEV, "lookup", "100", "pref", "100"])?;
    Ok(())
}

/// What the loop does with a packet read into `data[HEADROOM..HEADROOM + n]`: the range to write back.
trait PacketPath {
    fn handle(&mut self, data: &mut [u8], n: usize) -> Option<Range<usize>>;
    fn write_failed(&mut self) {}
}

/// The bare echo loop: the same bytes back.
struct Bare;

impl PacketPath for Bare {
    fn handle(&mut self, _data: &mut [u8], n: usize) -> Option<Range<usize>> {
        Some(HEADROOM..HEADROOM + n)
    }
}

/// The director's path, as `run.rs`'s `forward_loop`.
struct DirectorPath<'a>(&'a Director);

impl PacketPath for DirectorPath<'_> {
    fn handle(&mut self, data: &mut [u8], n: usize) -> Option<Range<usize>> {
        let Ok(mut buf) = PacketBuf::new(data, HEADROOM, n) else { return None };
        (self.0.process(&mut buf) == Action::Write).then(|| buf.range())
    }

    fn write_failed(&mut self) {
        self.0.count_write_error();
    }
}

/// One setup's share of a run: the measured slices added up.
#[derive(Clone, Copy, Default)]
struct Acc {
    /// Packets written back.
    packets: u64,
    /// Wall-clock time.
    wall_ns: u64,
    /// On-CPU time of the loop thread (the kernel work done in its syscalls included).
    cpu_ns: u64,
    /// Time the loop thread spent runnable but waiting for a CPU (other load).
    wait_ns: u64,
}

impl Acc {
    fn pps(&self) -> f64 {
        self.packets as f64 / (self.wall_ns as f64 / 1e9)
    }

    /// Packets per second of the loop thread's own CPU time: less sensitive to other load than `pps`.
    fn pps_cpu(&self) -> f64 {
        self.packets as f64 / (self.cpu_ns as f64 / 1e9)
    }

    fn cpu_share(&self) -> f64 {
        self.cpu_ns as f64 / self.wall_ns as f64
    }

    fn wait_share(&self) -> f64 {
        self.wait_ns as f64 / self.wall_ns as f64
    }
}

/// This thread's on-CPU and run-queue-wait time in ns (`/proc/thread-self/schedstat`).
fn thread_times() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// What one run of the loop did.
struct RunResult {
    /// Indexed by `Mode as usize`.
    acc: [Acc; 2],
    /// Written back in the whole run, warm-up included (what the sink should have seen).
    written: u64,
    write_errors: u64,
    not_written: u64,
}

/// The loop: read, handle, write back — for `WARMUP_SLICES + SLICES` slices of `SLICE`, the path switching
/// between bare (even slices) and director (odd slices) at each slice boundary. The packets written and the
/// times of the measured slices are added to their setup's [`Acc`]. `progress` is bumped now and then for
/// the watchdog.
fn forward(dev: &SyncDevice, director: &Director, progress: &AtomicU64) -> io::Result<RunResult> {
    let mut data = vec![0u8; HEADROOM + 65_536];
    let (mut bare, mut direct) = (Bare, DirectorPath(director));
    let mut res = RunResult { acc: [Acc::default(); 2], written: 0, write_errors: 0, not_written: 0 };
    let mut slice = 0usize;
    let mut slice_start = (Instant::now(), thread_times(), 0u64);
    let mut seen = 0u64;
    loop {
        let n = match dev.recv(&mut data[HEADROOM..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let on_director = slice % 2 == 1;
        let range = if on_director { direct.handle(&mut data, n) } else { bare.handle(&mut data, n) };
        match range {
            Some(range) => match dev.send(&data[range]) {
                Ok(_) => res.written += 1,
                Err(_) => {
                    if on_director {
                        direct.write_failed();
                    }
                    res.write_errors += 1;
                }
            },
            None => res.not_written += 1,
        }
        seen += 1;
        if seen % 64 == 0 {
            progress.store(seen, Ordering::Relaxed);
            let now = Instant::now();
            if now - slice_start.0 >= SLICE {
                let times = thread_times();
                if slice >= WARMUP_SLICES {
                    let (t0, (cpu0, wait0), w0) = slice_start;
                    let acc = &mut res.acc[slice % 2];
                    acc.packets += res.written - w0;
                    acc.wall_ns += u64::try_from((now - t0).as_nanos()).unwrap_or(u64::MAX);
                    acc.cpu_ns += times.0 - cpu0;
                    acc.wait_ns += times.1 - wait0;
                }
                slice += 1;
                if slice == WARMUP_SLICES + SLICES {
                    return Ok(res);
                }
                slice_start = (now, times, res.written);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare = 0,
    Director = 1,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare echo",
            Self::Director => "director",
        }
    }
}

fn bench(dir: &SyncDevice, gen: &SyncDevice) -> io::Result<()> {
    setup_routes()?;
    let director =
        Director::new(DirectorOptions::new([0x5a; 16])).map_err(|e| io::Error::other(format!("director: {e}")))?;
    director.apply_rules(RULES).map_err(|e| io::Error::other(format!("rules: {e}")))?;
    let stream = prime(&director)?;
    let stop_timers = Arc::new(AtomicBool::new(false));
    let timers = {
        let (d, stop) = (Arc::clone(&director), Arc::clone(&stop_timers));
        std::thread::Builder::new().name("timers".into()).spawn(move || timer_loop(&d, &stop))?
    };

    let load_before = loadavg();
    println!(
        "tun_throughput: {} UDP/IPv4 packets of {} bytes ({FLOWS} flows, in and out alternating); {RUNS} runs, each \
         {WARMUP_SLICES} warm-up + {SLICES} measured slices of {} ms, bare echo and director alternating slice by \
         slice; load average {load_before}",
        stream.len(),
        stream[0].len(),
        SLICE.as_millis(),
    );
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let r = one_run(&director, dir, gen, &stream)?;
        for mode in [Mode::Bare, Mode::Director] {
            let a = r.result.acc[mode as usize];
            println!(
                "  run {}  {:<10} {:>8.0} pkt/s, {:>8.0} pkt per loop-CPU-s (loop on CPU {:.0} %, waiting for a CPU \
                 {:.0} %; {} pkts in {:.2} s)",
                run + 1,
                mode.name(),
                a.pps(),
                a.pps_cpu(),
                a.cpu_share() * 100.0,
                a.wait_share() * 100.0,
                a.packets,
                a.wall_ns as f64 / 1e9,
            );
        }
        println!("         {}", r.summary);
        io::stdout().flush().ok();
        if r.result.write_errors != 0 || r.result.not_written != 0 {
            return Err(io::Error::other(format!(
                "{} write errors, {} packets not written back",
                r.result.write_errors, r.result.not_written
            )));
        }
        runs.push(r.result.acc);
    }
    stop_timers.store(true, Ordering::Relaxed);
    timers.join().ok();

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let column = |mode: Mode, f: fn(&Acc) -> f64| {
        let v: Vec<f64> = runs.iter().map(|a| f(&a[mode as usize])).collect();
        let listed = v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
        (median(v), listed)
    };
    let ratios = |f: fn(&Acc) -> f64| {
        let v: Vec<f64> = runs.iter().map(|a| f(&a[1]) / f(&a[0])).collect();
        let listed = v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
        (median(v), listed)
    };
    let (bare, bare_runs) = column(Mode::Bare, Acc::pps);
    let (direct, direct_runs) = column(Mode::Director, Acc::pps);
    let (bare_cpu, bare_cpu_runs) = column(Mode::Bare, Acc::pps_cpu);
    let (direct_cpu, direct_cpu_runs) = column(Mode::Director, Acc::pps_cpu);
    let (ratio, ratio_runs) = ratios(Acc::pps);
    let (ratio_cpu, ratio_cpu_runs) = ratios(Acc::pps_cpu);
    println!();
    println!("| setup | median pkt/s | runs | median pkt per loop-CPU-second | runs |");
    println!("| --- | --- | --- | --- | --- |");
    println!("| bare echo | {bare:.0} | {bare_runs} | {bare_cpu:.0} | {bare_cpu_runs} |");
    println!("| director | {direct:.0} | {direct_runs} | {direct_cpu:.0} | {direct_cpu_runs} |");
    println!(
        "| **director / bare** (median of the runs' ratios) | **{ratio:.3}** | {ratio_runs} | **{ratio_cpu:.3}** \
         | {ratio_cpu_runs} |"
    );
    println!(
        "\nratio of the medians: {:.3} (pkt/s), {:.3} (per loop-CPU-second); target: director / bare >= 0.9",
        direct / bare,
        direct_cpu / bare_cpu
    );
    println!("load average before {load_before}, after {}", loadavg());
    let c = director.counters();
    println!(
        "director totals: rx {} tx {} engine drops {} no-service {} write errors {}",
        c.rx.load(Ordering::Relaxed),
        c.tx.load(Ordering::Relaxed),
        c.engine_drops.load(Ordering::Relaxed),
        c.no_service.load(Ordering::Relaxed),
        c.write_errors.load(Ordering::Relaxed)
    );
    Ok(())
}

struct Run {
    result: RunResult,
    summary: String,
}

fn one_run(director: &Director, dir: &SyncDevice, gen: &SyncDevice, stream: &[Vec<u8>]) -> io::Result<Run> {
    let stop = AtomicBool::new(false);
    let offered = AtomicU64::new(0);
    let progress = AtomicU64::new(0);
    let drops0 = dev_stat(DIR_DEV, "tx_dropped");
    let sink0 = dev_stat(SINK_DEV, "tx_dropped") + dev_stat(SINK_DEV, "tx_packets");
    let c = director.counters();
    let rx0 = c.rx.load(Ordering::Relaxed);
    let stats0 = director.engine().total_stats().counters;
    let t0 = Instant::now();
    // The loop runs on this (the main) thread; the others are named for `perf`.
    let result = std::thread::scope(|s| {
        let named = |name: &str| std::thread::Builder::new().name(name.to_owned());
        let spawned = named("generator")
            .spawn_scoped(s, || {
                let mut sent = 0u64;
                'gen: loop {
                    for pkt in stream {
                        if stop.load(Ordering::Relaxed) {
                            break 'gen;
                        }
                        if gen.send(pkt).is_ok() {
                            sent += 1;
                        }
                    }
                }
                offered.store(sent, Ordering::Relaxed);
            })
            .and_then(|_| named("watchdog").spawn_scoped(s, || watchdog(&stop, &progress)));
        if let Err(e) = spawned {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        let r = forward(dir, director, &progress);
        stop.store(true, Ordering::Relaxed);
        r
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let st = director.engine().total_stats().counters;
    let summary = format!(
        "generator offered {:.0} pkt/s, {} dropped at the {DIR_DEV} queue; {} of {} written reached {SINK_DEV}; \
         director rx {}, engine in {} out {}",
        offered.load(Ordering::Relaxed) as f64 / secs,
        dev_stat(DIR_DEV, "tx_dropped") - drops0,
        dev_stat(SINK_DEV, "tx_dropped") + dev_stat(SINK_DEV, "tx_packets") - sink0,
        result.written,
        c.rx.load(Ordering::Relaxed) - rx0,
        st.inpkts - stats0.inpkts,
        st.outpkts - stats0.outpkts,
    );
    Ok(Run { result, summary })
}

/// Exits the process if the loop stops making progress (packets not reaching the device: setup broken).
fn watchdog(stop: &AtomicBool, progress: &AtomicU64) {
    let mut last = u64::MAX;
    let mut since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let p = progress.load(Ordering::Relaxed);
        if p != last {
            last = p;
            since = Instant::now();
        } else if since.elapsed() > Duration::from_secs(5) {
            eprintln!("tun_throughput: no packets through {DIR_DEV} for 5 s (routing inside the namespace broken?)");
            std::process::exit(1);
        }
    }
}

/// As `run.rs`'s timer thread: the engine's timers at its `poll_timeout`, events drained.
fn timer_loop(director: &Director, stop: &AtomicBool) {
    let engine = director.engine();
    while !stop.load(Ordering::Relaxed) {
        engine.handle_timeout(director.now());
        while engine.poll_event().is_some() {}
        let wait = engine.poll_timeout().map_or(Duration::from_secs(1), |t| director.clock().until(t));
        std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(200)));
    }
}

/// Creates each flow's conn through `Director::process` and returns the packet stream: per flow, a client
/// packet to the virtual service and its real server's reply.
fn prime(director: &Director) -> io::Result<Vec<Vec<u8>>> {
    let mut stream = Vec::new();
    let mut data = vec![0u8; HEADROOM + 2048];
    for i in 0..FLOWS {
        let [hi, lo] = (i + 1).to_be_bytes();
        let client = Ipv4Addr::new(10, 98, hi, lo);
        let cport = 10_000 + i;
        let request = udp4(client, cport, VIP, VPORT, i);
        data[HEADROOM..HEADROOM + request.len()].copy_from_slice(&request);
        let mut buf = PacketBuf::new(&mut data, HEADROOM, request.len())
            .map_err(|e| io::Error::other(format!("packet buffer: {e:?}")))?;
        if director.process(&mut buf) != Action::Write {
            return Err(io::Error::other(format!("priming flow {i}: the director did not forward it")));
        }
        let out = buf.packet();
        let real = Ipv4Addr::new(out[16], out[17], out[18], out[19]);
        let rport = u16::from_be_bytes([out[22], out[23]]);
        if real == VIP {
            return Err(io::Error::other(format!("priming flow {i}: destination not rewritten")));
        }
        stream.push(request);
        stream.push(udp4(real, rport, client, cport, i));
    }
    Ok(stream)
}

/// A UDP/IPv4 packet with `PAYLOAD` bytes and valid checksums.
fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, id: u16) -> Vec<u8> {
    let udp_len = 8 + PAYLOAD;
    let total = 20 + udp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(0, &p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    for (k, b) in p[28..].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(7);
    }
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    let sum = sum16(sum16(0, &pseudo), &p[20..]);
    let c = match fold(sum) {
        0 => 0xffff,
        c => c,
    };
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

fn sum16(mut acc: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        acc += u32::from(word);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn checksum(acc: u32, bytes: &[u8]) -> u16 {
    fold(sum16(acc, bytes))
}
