//! The I/O: the TUN device, the threads, and the three subcommands.
//!
//! Threads of `run`: one forwarding thread per device queue (read → [`Director::process`] → write), a timer
//! thread (the engine's [`Engine::handle_timeout`](ipvs_core::Engine::handle_timeout) at its
//! [`poll_timeout`](ipvs_core::Engine::poll_timeout), and its events logged), the control socket, the
//! metrics responder, the health checker, and the sync daemons' senders and receivers.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ipvs_core::sync::Version;
use ipvs_core::{Event, PacketBuf};
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::cli::{CheckArgs, CtlArgs, RunArgs};
use crate::ctl;
use crate::director::{Action, ApplyError, Director, DirectorOptions};
use crate::health::{self, HealthConfig};
use crate::listing;
use crate::metrics;
use crate::sync::SyncRunner;

/// Room in front of each packet for tunnel headers and ICMP errors (the engine needs 60).
const HEADROOM: usize = 128;

/// Why `run` or `check` stopped. Each prints as one line.
#[derive(Debug)]
pub enum RunError {
    /// The rules file cannot be read.
    ReadRules(PathBuf, io::Error),
    /// The rules file was refused (nothing applied).
    Rules(PathBuf, ApplyError),
    /// The engine refused the options.
    Engine(ipvs_core::EngineError),
    /// The TUN device could not be created.
    Tun(String, io::Error),
    /// Reading the TUN device failed.
    TunIo(String, io::Error),
    /// The control socket could not be bound.
    Control(PathBuf, io::Error),
    /// The metrics address could not be bound.
    Metrics(SocketAddr, io::Error),
    /// A sync daemon could not start.
    Sync(ApplyError),
    /// A thread could not be started.
    Thread(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadRules(p, e) => write!(f, "rules file {}: {e}", p.display()),
            Self::Rules(p, e) => write!(f, "rules file {}: {e} (nothing applied)", p.display()),
            Self::Engine(e) => write!(f, "engine: {e}"),
            Self::Tun(name, e) if e.kind() == io::ErrorKind::PermissionDenied => write!(
                f,
                "cannot create TUN device {name}: {e} (run as root or with CAP_NET_ADMIN, and check /dev/net/tun)"
            ),
            Self::Tun(name, e) => write!(f, "cannot create TUN device {name}: {e}"),
            Self::TunIo(name, e) => write!(f, "TUN device {name}: {e}"),
            Self::Control(p, e) => write!(f, "control socket {}: {e}", p.display()),
            Self::Metrics(a, e) => write!(f, "metrics address {a}: {e}"),
            Self::Sync(e) => write!(f, "{}", e.reason()),
            Self::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// A random SipHash key for the connection table (std's per-process random hasher keys, no file to read).
fn random_key() -> [u8; 16] {
    let state = std::collections::hash_map::RandomState::new();
    let mut key = [0u8; 16];
    for (i, half) in key.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

fn read_rules(path: &Path) -> Result<String, RunError> {
    std::fs::read_to_string(path).map_err(|e| RunError::ReadRules(path.to_owned(), e))
}

/// `tun-director check`: loads the rules into an in-memory director and returns its `-S -n`.
///
/// # Errors
/// The file cannot be read or is refused.
pub fn check(args: &CheckArgs) -> Result<String, RunError> {
    let text = read_rules(&args.rules)?;
    let director = Director::new(DirectorOptions::new(random_key())).map_err(RunError::Engine)?;
    director.apply_rules(&text).map_err(|e| RunError::Rules(args.rules.clone(), e))?;
    Ok(listing::snapshot(&director).save())
}

/// `tun-director ctl`: sends the request, prints the answer, returns the exit code.
pub fn ctl(args: &CtlArgs) -> i32 {
    let restore = args.args.iter().any(|a| a == "-R" || a == "--restore");
    let mut payload = String::new();
    if restore {
        if let Err(e) = io::Read::read_to_string(&mut io::stdin(), &mut payload) {
            eprintln!("tun-director: cannot read the rules from stdin: {e}");
            return ctl::EXIT_REFUSED;
        }
    }
    match ctl::request(&args.control, &args.args, &payload) {
        Ok(r) => {
            if r.code == 0 {
                print!("{}", r.text);
            } else {
                eprint!("tun-director: {}", r.text);
            }
            r.code
        }
        Err(e) => {
            eprintln!("tun-director: cannot reach the director at {}: {e}", args.control.display());
            ctl::EXIT_UNREACHABLE
        }
    }
}

/// The `--start-daemon` rules lines for `run`'s sync flags.
fn daemon_rules(args: &RunArgs) -> String {
    let mut text = String::new();
    for (state, iface) in [("master", &args.sync_master), ("backup", &args.sync_backup)] {
        let Some(iface) = iface else { continue };
        text.push_str(&format!("--start-daemon {state} --mcast-interface {iface} --syncid {}", args.syncid));
        if let Some(g) = args.sync_group {
            text.push_str(&format!(" --mcast-group {g}"));
        }
        if let Some(p) = args.sync_port {
            text.push_str(&format!(" --mcast-port {p}"));
        }
        if let Some(t) = args.sync_ttl {
            text.push_str(&format!(" --mcast-ttl {t}"));
        }
        if let Some(l) = args.sync_maxlen {
            text.push_str(&format!(" --sync-maxlen {l}"));
        }
        text.push('\n');
    }
    text
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), RunError> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f).map(|_| ()).map_err(RunError::Thread)
}

/// The engine's timers, and its events logged.
fn timer_loop(director: &Director) {
    let engine = director.engine();
    loop {
        engine.handle_timeout(director.now());
        while let Some(event) = engine.poll_event() {
            match event {
                Event::ConnCreated { protocol, client, virt, real, .. } => {
                    tracing::debug!(%protocol, %client, %virt, %real, "conn created");
                }
                Event::ConnExpired { protocol, client, virt, template, .. } => {
                    tracing::trace!(%protocol, %client, %virt, template, "conn expired");
                }
                Event::DestOverloaded { dest } => tracing::info!(dest = dest.0, "real server overloaded"),
                Event::DestRecovered { dest } => tracing::info!(dest = dest.0, "real server below its threshold"),
                other => tracing::debug!(event = ?other, "engine event"),
            }
        }
        let wait = engine.poll_timeout().map_or(Duration::from_secs(1), |t| director.clock().until(t));
        std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_secs(1)));
    }
}

/// Read a packet, hand it to the director, write it back: until the device fails.
fn forward_loop(director: &Director, dev: &SyncDevice, name: &str) -> Result<(), RunError> {
    let mut data = vec![0u8; HEADROOM + 65_536];
    loop {
        let n = match dev.recv(&mut data[HEADROOM..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RunError::TunIo(name.to_owned(), e)),
        };
        let Ok(mut buf) = PacketBuf::new(&mut data, HEADROOM, n) else { continue };
        if director.process(&mut buf) == Action::Write {
            if let Err(e) = dev.send(buf.packet()) {
                director.count_write_error();
                tracing::debug!(error = %e, "TUN write failed");
            }
        }
    }
}

/// `tun-director run`.
///
/// # Errors
/// Every setup failure (rules, device, sockets, sync daemons) and a device read failure; each prints as
/// one line.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    let text = match &args.rules {
        Some(p) => read_rules(p)?,
        None => String::new(),
    };
    let mut opts = DirectorOptions::new(random_key());
    opts.conn_capacity = args.conn_capacity;
    opts.mtu = u32::from(args.mtu);
    opts.local_v4 = args.local_v4;
    opts.local_v6 = args.local_v6;
    opts.slow_start =
        ipvs_core::proto::Duration::from_millis(u64::try_from(args.slow_start.as_millis()).unwrap_or(u64::MAX));
    opts.tun_fwmark = args.tun_fwmark;
    opts.sync_version = if args.sync_version == 0 { Version::V0 } else { Version::V1 };
    let director = Director::new(opts).map_err(RunError::Engine)?;
    director.set_daemon_runner(Box::new(SyncRunner::new(&director)));
    let rules_path = args.rules.clone().unwrap_or_default();
    let n = director.apply_rules(&text).map_err(|e| RunError::Rules(rules_path, e))?;

    let queues = args.queues.max(1);
    let dev = DeviceBuilder::new()
        .name(&args.tun)
        .mtu(args.mtu)
        .multi_queue(queues > 1)
        .enable(true)
        .build_sync()
        .map_err(|e| RunError::Tun(args.tun.clone(), e))?;
    let mut devs = vec![dev];
    for _ in 1..queues {
        let q = devs[0].try_clone().map_err(|e| RunError::Tun(args.tun.clone(), e))?;
        devs.push(q);
    }

    let control = ctl::bind(&args.control).map_err(|e| RunError::Control(args.control.clone(), e))?;
    let metrics = match args.metrics {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| RunError::Metrics(addr, e))?),
        None => None,
    };
    director.apply_rules(&daemon_rules(args)).map_err(RunError::Sync)?;

    {
        let d = Arc::clone(&director);
        spawn("control", move || ctl::serve(&control, &d))?;
    }
    if let Some(listener) = metrics {
        let d = Arc::clone(&director);
        spawn("metrics", move || metrics::serve(&listener, &d))?;
    }
    {
        let d = Arc::clone(&director);
        spawn("timers", move || timer_loop(&d))?;
    }
    if let Some(kind) = &args.health {
        let config = HealthConfig {
            kind: kind.clone(),
            interval: args.health_interval,
            timeout: args.health_timeout,
            retries: args.health_retries,
            port: args.health_port,
        };
        let d = Arc::clone(&director);
        spawn("health", move || health::run(&d, &config, &AtomicBool::new(false)))?;
    }
    tracing::info!(
        tun = %args.tun,
        commands = n,
        services = director.engine().services().len(),
        control = %args.control.display(),
        metrics = ?args.metrics,
        health = ?args.health.as_ref().map(ToString::to_string),
        queues,
        "director ready"
    );

    let name = args.tun.clone();
    let mut last = devs.pop();
    let mut handles = Vec::new();
    for dev in devs {
        let d = Arc::clone(&director);
        let name = name.clone();
        let h = std::thread::Builder::new()
            .name("forward".into())
            .spawn(move || forward_loop(&d, &dev, &name))
            .map_err(RunError::Thread)?;
        handles.push(h);
    }
    match last.take() {
        Some(dev) => forward_loop(&director, &dev, &name),
        None => Ok(()),
    }
}
