//! The kernel interop scenarios (issue 8), each booting its own guest (see the crate docs for the harness):
//! scheduler differential, rules round trip, TCP/UDP/SCTP state sequences, and the sync scenarios (kernel
//! master → tun-director backup; tun-director master → kernel backup, v1 and v0), whose guests have a network
//! device on a tap in a namespace of the test's own.
//!
//! ```text
//! IPVS_INTEROP=1 cargo test -p ipvs-interop --test kernel -- --nocapture   # outside CI
//! cargo test -p ipvs-interop --test kernel                                  # under CI=true (.ci/run)
//!
//! Without `IPVS_INTEROP=1` or `CI=true` each test prints a notice and passes (an opt-in heavy suite); under
//! `CI=true` a guest that cannot be prepared or booted fails the test.
//! ```
//!
//! `IPVS_INTEROP_SEED=N` replays a run's random scenarios (each test prints its seed);
//! `IPVS_INTEROP_FLOWS=N` sets the scheduler test's flow count; `IPVS_INTEROP_CACHE=DIR` moves the cache.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipvs_core::config::RuleSet;
use ipvs_core::replay_states::{self, ReplayOptions};
use ipvs_core::sync::Version;
use ipvs_interop::artifacts::{self, Artifacts};
use ipvs_interop::guest::{Guest, GuestOptions};
use ipvs_interop::netns::Lab;
use ipvs_interop::procfs::parse_conns;
use ipvs_interop::rng::Rng;
use ipvs_interop::sync::{self as sync_scenario, key, secs_between};
use ipvs_interop::{gate, rules, sched, states, Gate};
use ipvs_proto::{Instant as EngineInstant, Protocol};
use tun_director::Director;

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop")
}

/// The artefacts, or `None` (after the notice) when the suite is not asked for. Fails the test when asked
/// for and they cannot be made.
fn artifacts(test: &str) -> Option<&'static Artifacts> {
    if gate() == Gate::Skip {
        println!("{test}: {}", Gate::NOTICE);
        return None;
    }
    let start = Instant::now();
    let art = artifacts::shared(&cache()).unwrap_or_else(|e| panic!("{test}: preparing the guest: {e}"));
    println!("{test}: artefacts ready in {:.1} s (kernel {})", start.elapsed().as_secs_f64(), art.release);
    Some(art)
}

fn boot(test: &str, art: &Artifacts) -> Guest {
    let guest = Guest::boot(art, &GuestOptions::default()).unwrap_or_else(|e| panic!("{test}: {e}"));
    println!("{test}: guest {} booted in {:.1} s", guest.release, guest.boot_time.as_secs_f64());
    guest
}

fn seed(test: &str) -> u64 {
    let seed = Rng::seed_from_env();
    println!("{test}: seed {seed} (IPVS_INTEROP_SEED={seed} repeats it)");
    seed
}

fn sh(test: &str, guest: &mut Guest, script: &str) -> String {
    guest.sh(script).unwrap_or_else(|e| panic!("{test}: {e}\nconsole:\n{}", guest.console_tail(20)))
}

/// Random services for every deterministic scheduler and a few hundred flows, scheduled by the kernel: the
/// plain services replayed through ipvs-sched (every pick and every refusal must agree), the persistent ones
/// through an ipvs-core engine (every flow's real server or refusal, and every template, must agree).
#[test]
fn scheduler_differential() {
    const T: &str = "scheduler differential";
    const TP: &str = "scheduler differential (persistent services)";
    let Some(art) = artifacts(T) else { return };
    let start = Instant::now();
    let seed = seed(T);
    let flows = std::env::var("IPVS_INTEROP_FLOWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let plan = sched::generate(seed, flows, flows * 3 / 10);
    let mut guest = boot(T, art);
    sh(T, &mut guest, &plan.config_script());
    let sent = Instant::now();
    let kernel = sched::KernelRun::parse(&sh(T, &mut guest, &plan.flows_script()));
    let sent = sent.elapsed();
    let picks = plan.picks_files(&kernel, &guest.release);
    drop(guest);
    let out = art.cache.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let file = out.join("sched-picks-latest.tsv");
    let persistent_file = out.join("sched-picks-persistent-latest.tsv");
    std::fs::write(&file, &picks.file).expect("writing the picks file");
    std::fs::write(&persistent_file, &picks.persistent_file).expect("writing the persistent picks file");
    let n_persistent = plan.services.iter().filter(|s| s.is_persistent()).count();
    println!(
        "{T}: {} services ({n_persistent} persistent), {} flows ({} to persistent services) sent in {:.1} s, \
         {} conns and {} templates in the kernel; plain services' flows refused: {:?}; picks in {} and {}",
        plan.services.len(),
        plan.flows.len(),
        plan.flows_of(true).count(),
        sent.as_secs_f64(),
        kernel.conns.len(),
        kernel.templates.len(),
        picks.refused,
        file.display(),
        persistent_file.display()
    );

    // Plain services: our own replay (picks and refusals), and ipvs-sched's replay of the logged file.
    let cmp = plan.replay_sched(&kernel);
    let report = ipvs_sched::replay::replay(&picks.file).unwrap_or_else(|e| panic!("{T}: replay: {e}"));
    let print_services = |test: &str, cmp: &sched::Comparison| {
        for t in &cmp.per_service {
            let svc = &plan.services[t.service];
            println!(
                "{test}:   {}{} ({}, {} dests): {} picks, {} refusals",
                svc.selector,
                svc.persistence.as_ref().map(|p| format!(" {p}")).unwrap_or_default(),
                svc.scheduler,
                svc.dests.len(),
                t.picks,
                t.refusals
            );
        }
        for d in &cmp.differences {
            println!("{test}:   {d}");
        }
    };
    print_services(T, &cmp);
    for d in &report.disagreements {
        println!("{T}:   ipvs_sched::replay: {d}");
    }
    println!(
        "{T}: {} picks agree, {} refusals agree ({:.1} s)",
        cmp.picks,
        cmp.refusals,
        start.elapsed().as_secs_f64()
    );

    // Persistent services: an engine fed the same packets.
    let ours = ipvs_interop::persist::run_engine(&plan).unwrap_or_else(|e| panic!("{TP}: {e}"));
    let pcmp = ipvs_interop::persist::compare(&plan, &kernel, &ours);
    print_services(TP, &pcmp);
    println!(
        "{TP}: {} picks agree, {} refusals agree, {} templates agree ({:.1} s)",
        pcmp.picks,
        pcmp.refusals,
        pcmp.templates,
        start.elapsed().as_secs_f64()
    );

    let n_plain = plan.flows_of(false).count();
    assert!(cmp.picks.total > n_plain / 2, "{T}: the kernel scheduled too few flows ({})", cmp.picks.total);
    assert!(cmp.refusals.total > 0, "{T}: the kernel refused no flow: the refusal check checked nothing");
    assert!(
        cmp.all_agree(),
        "{T}: {} of {} picks and {} of {} refusals differ (seed {seed}; file {})",
        cmp.picks.total - cmp.picks.agree,
        cmp.picks.total,
        cmp.refusals.total - cmp.refusals.agree,
        cmp.refusals.total,
        file.display()
    );
    assert!(
        report.all_agree() && report.total == cmp.picks.total,
        "{T}: ipvs_sched::replay of {}: {}/{} picks agree",
        file.display(),
        report.agree,
        report.total
    );
    assert!(pcmp.picks.total > plan.flows_of(true).count() / 2, "{TP}: the kernel scheduled too few flows");
    assert!(
        kernel.templates.len() < pcmp.picks.total,
        "{TP}: no client network came back ({} templates for {} conns)",
        kernel.templates.len(),
        pcmp.picks.total
    );
    assert!(
        pcmp.all_agree(),
        "{TP}: {} differences (seed {seed}; file {})",
        pcmp.differences.len(),
        persistent_file.display()
    );
}

/// Random rule sets: the guest's `ipvsadm -S -n` is parsed and re-emitted by ipvs-core, restored with
/// `ipvsadm -R` and saved again: all identical. Also: ipvs-core reading the commands as given saves what
/// the kernel saves.
#[test]
fn rules_round_trip() {
    const T: &str = "rules round trip";
    let Some(art) = artifacts(T) else { return };
    let start = Instant::now();
    let mut rng = Rng::new(seed(T));
    let mut guest = boot(T, art);
    let (mut services, mut dests, mut failures) = (0, 0, Vec::new());
    const ROUNDS: usize = 6;
    for round in 1..=ROUNDS {
        let plan = rules::generate(&mut rng, &art.schedulers());
        services += plan.services;
        dests += plan.dests;
        let given = plan.commands.join("\n");
        let script = format!("set -e\nipvsadm -C\nipvsadm -R <<'RULES'\n{given}\nRULES\nipvsadm -S -n\n");
        let kernel = sh(T, &mut guest, &script);
        let ours_from_commands = RuleSet::from_rules(&given).map(|r| r.save());
        let ours = match RuleSet::from_rules(&kernel) {
            Ok(rs) => rs.save(),
            Err(e) => {
                failures.push(format!("round {round}: ipvs-core cannot read the kernel's save: {e}\n{kernel}"));
                continue;
            }
        };
        let restored =
            sh(T, &mut guest, &format!("set -e\nipvsadm -C\nipvsadm -R <<'RULES'\n{ours}RULES\nipvsadm -S -n\n"));
        match &ours_from_commands {
            Ok(s) => {
                if let Some(d) = rules::compare(&kernel, s) {
                    failures
                        .push(format!("round {round}: the commands as ipvs-core applies them save differently: {d}"));
                }
            }
            Err(e) => failures.push(format!("round {round}: ipvs-core refuses a command the kernel took: {e}")),
        }
        if let Some(d) = rules::compare(&kernel, &ours) {
            failures.push(format!("round {round}: ipvs-core re-emits the kernel's save differently: {d}"));
        }
        if let Some(d) = rules::compare(&kernel, &restored) {
            failures.push(format!("round {round}: restored with ipvsadm -R, the kernel saves differently: {d}"));
        }
        println!(
            "{T}: round {round}: {} services, {} servers, {} save lines",
            plan.services,
            plan.dests,
            kernel.lines().count()
        );
        if !failures.is_empty() {
            println!("{T}: commands of round {round}:\n{given}");
            break;
        }
    }
    drop(guest);
    for f in &failures {
        println!("{T}: {f}");
    }
    println!(
        "{T}: {}/{ROUNDS} rule sets identical ({services} services, {dests} servers; ipvsadm -S → ipvs-core → ipvsadm -R → ipvsadm -S) ({:.1} s)",
        ROUNDS - failures.len().min(ROUNDS),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{T}: {}", failures.join("\n"));
}

/// Random packet paths through the kernel and through ipvs-core's replay: states equal, timeouts within 1 s.
fn state_sequences(test: &str, protocol: Protocol, secure_tcp: bool) {
    let Some(art) = artifacts(test) else { return };
    let start = Instant::now();
    let mut rng = Rng::new(seed(test));
    let sctp = protocol == Protocol::Sctp;
    let (paths, ours) = match protocol {
        Protocol::Udp => {
            let paths = states::generate_udp(&mut rng, 120, 50000);
            let ours = states::replay_udp(&paths);
            (paths, ours)
        }
        _ => {
            let paths = if sctp {
                states::generate_sctp(&mut rng, 120, 40000)
            } else {
                states::generate_tcp(&mut rng, 120, 30000)
            };
            let ours = replay_states::replay(&paths, ReplayOptions { sctp, secure_tcp })
                .unwrap_or_else(|e| panic!("{test}: replay: {e}"));
            (paths, ours)
        }
    };
    let mut guest = boot(test, art);
    sh(test, &mut guest, &states::config_script(protocol, secure_tcp));
    let out = sh(test, &mut guest, &states::kernel_script(&paths, protocol));
    drop(guest);
    let kernel = states::kernel_lines(&out);
    let c = states::compare(&kernel, &ours, 1);
    for d in &c.differences {
        println!("{test}:   {d}");
    }
    println!(
        "{test}: {}/{} steps agree ({} flows; states equal, timeouts within 1 s) ({:.1} s)",
        c.agree,
        c.total,
        paths.lines().count(),
        start.elapsed().as_secs_f64()
    );
    if !c.differences.is_empty() {
        println!("{test}: paths:\n{paths}");
    }
    assert!(c.differences.is_empty(), "{test}: {} of {} steps differ", c.differences.len(), c.total);
}

#[test]
fn tcp_state_sequences() {
    state_sequences("TCP state sequences", Protocol::Tcp, false);
}

#[test]
fn tcp_state_sequences_secure_tcp() {
    state_sequences("TCP state sequences (secure_tcp 3)", Protocol::Tcp, true);
}

#[test]
fn sctp_state_sequences() {
    state_sequences("SCTP state sequences", Protocol::Sctp, false);
}

#[test]
fn udp_state_sequences() {
    state_sequences("UDP state sequences", Protocol::Udp, false);
}

// Sync scenarios (issue 8): the guest's eth0 on a tap in the test's own namespace (ipvs_interop::netns), our
// side a tun-director with its own sync daemons (ipvs_interop::sync).

/// The scenario's namespace and guest: qemu runs in the namespace, eth0 on its tap.
fn sync_guest(test: &str, art: &Artifacts, tag: &str) -> (Lab, Guest) {
    let lab = Lab::new(tag).unwrap_or_else(|e| panic!("{test}: network namespace: {e}"));
    let opts = GuestOptions { qemu_args: lab.qemu_args(), netns: Some(lab.ns.clone()), ..GuestOptions::default() };
    let guest = Guest::boot(art, &opts).unwrap_or_else(|e| panic!("{test}: {e}"));
    println!(
        "{test}: guest {} booted in {:.1} s (eth0 on {}'s tap)",
        guest.release,
        guest.boot_time.as_secs_f64(),
        lab.ns
    );
    (lab, guest)
}

/// A director's sync daemon, stopped on drop (its threads hold the director).
struct Daemon<'a>(&'a Director, &'static str);

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let _ = self.0.apply_rules(&format!("--stop-daemon {}\n", self.1));
    }
}

fn midpoint(a: EngineInstant, b: EngineInstant) -> f64 {
    (a.total_millis() + b.total_millis()) as f64 / 2000.0
}

fn at_secs(t: EngineInstant) -> f64 {
    t.total_millis() as f64 / 1000.0
}

/// The guest (a kernel master) makes conns on every kind of service; our backup must list each one as the
/// guest does: addresses and ports, real server, state, and the remaining time once the sync delay is
/// accounted for; and count them on its real servers as the guest does.
#[test]
fn sync_kernel_master_to_tun_director_backup() {
    const T: &str = "sync kernel master → tun-director backup (v1)";
    let Some(art) = artifacts(T) else { return };
    let start = Instant::now();
    let d = sync_scenario::director(Version::V1).unwrap_or_else(|e| panic!("{T}: {e}"));
    let (lab, mut guest) = sync_guest(T, art, "sync-a");
    sync_scenario::start_daemon(&d, &lab.ns, "backup").unwrap_or_else(|e| panic!("{T}: {e}"));
    let _daemon = Daemon(&d, "backup");
    sh(T, &mut guest, &sync_scenario::guest_setup_script());
    sh(T, &mut guest, &sync_scenario::guest_daemon_script("master", Version::V1));
    let flows = sync_scenario::flows();
    let t0 = d.now();
    let made = parse_conns(&sh(T, &mut guest, &sync_scenario::guest_flows_script(&flows)));
    let t1 = d.now();
    // Every conn and template the guest made, on our side (the master sends a partial message after 2–3 s).
    let waited = Instant::now();
    while !made.iter().all(|c| sync_scenario::ours(&d).times.contains_key(&key(c))) {
        if waited.elapsed() > Duration::from_secs(15) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let g0 = d.now();
    let (kernel, kernel_list) = sync_scenario::split_read(&sh(T, &mut guest, sync_scenario::READ_SCRIPT));
    let g1 = d.now();
    let ours = sync_scenario::ours(&d);
    // The guest's clock is not ours: its reading is placed at the middle of the command, ± half its length.
    let tolerance = 2.0 + secs_between(g0, g1) / 2.0;
    let (mut min_delay, mut max_delay) = (f64::MAX, f64::MIN);
    let cmp = sync_scenario::compare_conns(&kernel, &ours.conns, tolerance, |k, o| {
        let times = ours.times.get(&key(o)).ok_or("not in our table")?;
        if !times.synced {
            return Err("no SYNC flag on our side".into());
        }
        // Our conn restarted its timer when its last record arrived; the guest's when the last packet was sent
        // (by the end of the plan): ours expires later by that sync delay.
        let delay = secs_between(t1, times.touched);
        min_delay = min_delay.min(delay);
        max_delay = max_delay.max(delay);
        Ok(at_secs(ours.at) + o.expires as f64 - (midpoint(g0, g1) + k.expires as f64) - delay)
    });
    let (c_agree, c_total, c_diffs) =
        sync_scenario::compare_counters(&kernel_list, &ours.listing, &sync_scenario::UNBOUND_ON_BACKUP);
    drop(guest);
    let templates = kernel.iter().filter(|c| c.from.port() == 0).count();
    for d in cmp.differences.iter().chain(&c_diffs) {
        println!("{T}:   {d}");
    }
    println!(
        "{T}: {}/{} conns agree ({} conns + {templates} templates of {} flows on NAT/DR/persistent/fwmark, IPv4/IPv6, \
         TCP/UDP services: addresses, ports, real server, state, SYNC flag; expiry within {tolerance:.1} s of the \
         guest's after the sync delay ({min_delay:.1}–{max_delay:.1} s), largest deviation {:.1} s); real servers' \
         PersistConn/ActiveConn/InActConn {c_agree}/{c_total} agree (FWM 2's unbound on a backup); packets sent in {:.1} s ({:.1} s)",
        cmp.agree,
        cmp.total,
        kernel.len() - templates,
        flows.len(),
        cmp.max_deviation,
        secs_between(t0, t1),
        start.elapsed().as_secs_f64()
    );
    if !cmp.differences.is_empty() || !c_diffs.is_empty() {
        println!("{T}: guest listing:\n{kernel_list}\n{T}: ours:\n{}", ours.listing);
    }
    assert_eq!(kernel.len(), flows.len() + 10, "{T}: the guest made {} conns and templates", kernel.len());
    assert!(cmp.differences.is_empty(), "{T}: {} differences", cmp.differences.len());
    assert!(c_diffs.is_empty(), "{T}: real servers' counters differ");
}

/// Our master (v1, or v0 with `sync_version` 0 in the guest too) syncs its conns to the guest's backup, which
/// must list each one as we do (v0: the IPv4 ones; v0 carries no IPv6) and count them on its real servers.
fn sync_to_kernel_backup(version: Version) {
    let v = if version == Version::V0 { "v0" } else { "v1" };
    let test = format!("sync tun-director master → kernel backup ({v})");
    let t = test.as_str();
    let Some(art) = artifacts(t) else { return };
    let start = Instant::now();
    let d = sync_scenario::director(version).unwrap_or_else(|e| panic!("{t}: {e}"));
    let (lab, mut guest) = sync_guest(t, art, &format!("sync-b{v}"));
    sync_scenario::start_daemon(&d, &lab.ns, "master").unwrap_or_else(|e| panic!("{t}: {e}"));
    let _daemon = Daemon(&d, "master");
    sh(t, &mut guest, &sync_scenario::guest_setup_script());
    sh(t, &mut guest, &sync_scenario::guest_daemon_script("backup", version));
    let flows = sync_scenario::flows();
    let t0 = d.now();
    sync_scenario::feed_flows(&d, &flows);
    let made = sync_scenario::ours(&d).conns;
    // v0 cannot carry IPv6 conns (facts §12.3): only the IPv4 ones go.
    let expected_keys: Vec<_> = made.iter().filter(|c| version == Version::V1 || c.from.is_ipv4()).map(key).collect();
    let waited = Instant::now();
    let synced_after = loop {
        let (kernel, _) = sync_scenario::split_read(&sh(t, &mut guest, sync_scenario::READ_SCRIPT));
        let have: std::collections::BTreeSet<_> = kernel.iter().map(key).collect();
        if expected_keys.iter().all(|k| have.contains(k)) || waited.elapsed() > Duration::from_secs(20) {
            break d.now();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let bound = secs_between(t0, synced_after);
    let g0 = d.now();
    let read = sh(
        t,
        &mut guest,
        &format!("{}echo ===\ngrep -cw SYNC /proc/net/ip_vs_conn_sync || true\n", sync_scenario::READ_SCRIPT),
    );
    let g1 = d.now();
    let (read, origin) = read.rsplit_once("===\n").unwrap_or((&read, ""));
    let (kernel, kernel_list) = sync_scenario::split_read(read);
    let n_sync_origin: usize = origin.trim().parse().unwrap_or(0);
    let ours = sync_scenario::ours(&d);
    let expected: Vec<_> = ours.conns.iter().filter(|c| version == Version::V1 || c.from.is_ipv4()).cloned().collect();
    let tolerance = 1.0 + secs_between(g0, g1) / 2.0;
    let cmp = sync_scenario::compare_conns(&expected, &kernel, tolerance, |o, k| {
        let times = ours.times.get(&key(o)).ok_or("not in our table")?;
        // v0 has no timeout: the backup uses its own per-state timeouts, and 180 s for templates (facts §12.6).
        let timeout = if version == Version::V0 && times.template { 180.0 } else { times.timeout_ms as f64 / 1000.0 };
        // The guest's conn restarted its timer when our record arrived: after our last packet, within the
        // measured sync delay.
        let late = midpoint(g0, g1) + k.expires as f64 - (at_secs(times.touched) + timeout);
        Ok(if late < 0.0 { late } else { (late - bound).max(0.0) })
    });
    // v0 carries no fwmark (facts §12.3): the guest finds no service for those conns and keeps them unbound
    // (listed, not counted); IPv6 services get nothing.
    let unbound: &[&str] =
        if version == Version::V0 { &["FWM", "TCP [", "UDP ["] } else { &sync_scenario::UNBOUND_ON_BACKUP };
    let (c_agree, c_total, c_diffs) = sync_scenario::compare_counters(&ours.listing, &kernel_list, unbound);
    drop(guest);
    let templates = expected.iter().filter(|c| c.from.port() == 0).count();
    for d in cmp.differences.iter().chain(&c_diffs) {
        println!("{t}:   {d}");
    }
    println!(
        "{t}: {}/{} conns agree ({} conns + {templates} templates of {} flows{}: addresses, ports, real server, state; \
         {n_sync_origin} with Origin SYNC in the guest; expiry within the sync delay (≤ {bound:.1} s) ± {tolerance:.1} s, \
         largest deviation {:.1} s); real servers' PersistConn/ActiveConn/InActConn {c_agree}/{c_total} agree{} ({:.1} s)",
        cmp.agree,
        cmp.total,
        expected.len() - templates,
        flows.len(),
        if version == Version::V0 { ", the IPv4 ones" } else { "" },
        cmp.max_deviation,
        if version == Version::V0 { " (fwmark and IPv6 ones: none on the backup)" } else { " (FWM 2's: none on a backup)" },
        start.elapsed().as_secs_f64()
    );
    if !cmp.differences.is_empty() || !c_diffs.is_empty() {
        println!("{t}: guest listing:\n{kernel_list}\n{t}: ours:\n{}", ours.listing);
    }
    assert!(cmp.differences.is_empty(), "{t}: {} differences", cmp.differences.len());
    assert!(c_diffs.is_empty(), "{t}: real servers' counters differ");
    assert_eq!(n_sync_origin, kernel.len(), "{t}: guest conns not of SYNC origin");
}

#[test]
fn sync_tun_director_master_to_kernel_backup_v1() {
    sync_to_kernel_backup(Version::V1);
}

#[test]
fn sync_tun_director_master_to_kernel_backup_v0() {
    sync_to_kernel_backup(Version::V0);
}
