//! The kernel interop scenarios (issue 8), each booting its own guest (see the crate docs for the harness).
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
use std::time::Instant;

use ipvs_core::config::RuleSet;
use ipvs_core::replay_states::{self, ReplayOptions};
use ipvs_interop::artifacts::{self, Artifacts};
use ipvs_interop::guest::{Guest, GuestOptions};
use ipvs_interop::rng::Rng;
use ipvs_interop::{gate, rules, sched, states, Gate};
use ipvs_proto::Protocol;

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

/// Random services for every deterministic scheduler and a few hundred flows, scheduled by the kernel and
/// replayed through ipvs-sched: every pick must agree.
#[test]
fn scheduler_differential() {
    const T: &str = "scheduler differential";
    let Some(art) = artifacts(T) else { return };
    let start = Instant::now();
    let seed = seed(T);
    let flows = std::env::var("IPVS_INTEROP_FLOWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let plan = sched::generate(seed, flows);
    let mut guest = boot(T, art);
    sh(T, &mut guest, &plan.config_script());
    let proc_conn = sh(T, &mut guest, &plan.flows_script());
    let picks = plan.picks_file(&proc_conn, &guest.release);
    drop(guest);
    let out = art.cache.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let file = out.join("sched-picks-latest.tsv");
    std::fs::write(&file, &picks.file).expect("writing the picks file");
    println!(
        "{T}: {} services, {} flows, {} scheduled by the kernel, refused: {:?}; picks in {}",
        plan.services.len(),
        plan.flows.len(),
        picks.rows,
        picks.refused,
        file.display()
    );
    let report = ipvs_sched::replay::replay(&picks.file).unwrap_or_else(|e| panic!("{T}: replay: {e}"));
    for ((sel, agree, total), svc) in report.per_service.iter().zip(&plan.services) {
        println!("{T}:   {sel} ({}, {} dests): {agree}/{total}", svc.scheduler, svc.dests);
    }
    for d in &report.disagreements {
        println!("{T}:   {d}");
    }
    println!("{T}: {}/{} picks agree ({:.1} s)", report.agree, report.total, start.elapsed().as_secs_f64());
    assert!(report.total > plan.flows.len() / 2, "{T}: the kernel scheduled too few flows ({})", report.total);
    assert!(
        report.all_agree(),
        "{T}: {} of {} picks differ (seed {seed}; file {})",
        report.total - report.agree,
        report.total,
        file.display()
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

// Sync scenarios (kernel master → tun-director backup, tun-director master → kernel backup, v1 and v0) go
// here once examples/tun-director is ready. The pieces:
// - `GuestOptions { qemu_args: vec!["-netdev".into(), "tap,id=n0,ifname=…,script=no,downscript=no".into(),
//   "-device".into(), "virtio-net-pci,netdev=n0".into()], .. }` puts the guest's eth0 (virtio_net is loaded
//   at boot) on a tap in the test's own network namespace, so multicast sync flows both ways; or
//   `-nic user,restrict=on,model=virtio-net-pci` for a guest that must reach nothing at all.
// - In the guest: `ip link set eth0 up; ip addr add …; ipvsadm --start-daemon master --mcast-interface eth0
//   --syncid N` (and `echo 0 > /proc/sys/net/ipv4/vs/sync_version` for v0); conns made with the injector as
//   in `sched::Plan::flows_script`; `ipvsadm -L -n -c` / `/proc/net/ip_vs_conn` read back with
//   `ipvs_interop::procfs::parse_conns`.
