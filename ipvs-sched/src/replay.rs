//! Replays a file of real kernel picks against this crate's schedulers.
//!
//! The format is that of `testdata/kernel-6.1/sched-picks*.tsv`:
//!
//! 1. **Rules**, one `ipvsadm` command per line (an optional leading `ipvsadm` is allowed), with
//!    ipvsadm's semantics: `-A`/`--add-service` and `-a`/`--add-server`, also `-e`/`--edit-server` and
//!    `-d`/`--delete-server`; the service selectors `-t`/`--tcp-service`, `-u`/`--udp-service`,
//!    `--sctp-service` (`host[:port]`, IPv6 as `[addr]:port`) and `-f`/`--fwmark-service` (with `-6` for
//!    IPv6); `-s` (default `wlc`), `-b` (`flag-1..3`, `sh-fallback`, `sh-port`, `mh-fallback`, `mh-port`),
//!    `-r` (the port defaults to the service port), `-g` (the default) / `-i` / `-m` (a `-g`/`-i` server of
//!    a non-fwmark service takes the service's port), `-w` (default 1), `-x`, `-y`. Persistence (`-p`,
//!    `--pe`) changes scheduling through templates and is refused.
//! 2. **Rows**, tab-separated: `service seq client cport packet_dst picked_dest state`, where `service`
//!    is the selector as in the rules (`-t 10.0.2.100:80`, `-f 77`). Lines starting with `#` are comments.
//!
//! The rules are applied as events in file order: `-A` builds the scheduler and binds it to the empty
//! service (so wrr starts with a cw = 1 round, facts §6.3); each `-a` adds the destination at the head of
//! the list ([`DestEvent::Added`] at index 0); `-e` is an [`DestEvent::Updated`], `-d` a
//! [`DestEvent::Removed`]. Then each service's rows are replayed in `seq` order: our scheduler picks, the
//! pick is compared with the kernel's (by address, and by port unless the destination's port is 0 —
//! fwmark dests show the packet's port), and then the **kernel's** pick is charged one connection, active or
//! inactive as the row's state counts in the kernel (ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK are active;
//! UDP, SCTP's INIT1 and every other state inactive — `is_active` of ipvs-proto's state types; a row without
//! a state counts active), with the upper-threshold OVERLOAD rule of [`DestState`], so one disagreement does
//! not cascade. Flows
//! the kernel refused are absent from the file and are not replayed. Row `seq` `n` runs at
//! `now = n × 20 ms` (the files were made ~20 ms apart; lblc/lblcr expiry never matters within them).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, SocketAddr};

use ipvs_proto::{DestId, Instant, Protocol, ServiceFlags};

use crate::fastlc::FastMode;
use crate::{
    lc, new_scheduler, nq, sed, wlc, CounterChange, DestEvent, DestState, DestView, SchedConfig, SchedFlow, Scheduler,
    UnknownScheduler,
};

/// Virtual time between two consecutive `seq` numbers.
pub const MILLIS_PER_SEQ: u64 = 20;

/// The outcome of a replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    /// Rows where our pick equals the kernel's.
    pub agree: usize,
    /// Rows replayed.
    pub total: usize,
    /// Per service, in rule order: `(selector, agreeing rows, rows)`.
    pub per_service: Vec<(String, usize, usize)>,
    /// Every disagreement, in replay order.
    pub disagreements: Vec<Disagreement>,
}

/// One row where our scheduler and the kernel differ.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Disagreement {
    /// The row's `seq`.
    pub seq: u64,
    /// The row's service selector, as written in the file.
    pub service: String,
    /// The kernel's pick, as written in the file.
    pub kernel: SocketAddr,
    /// Ours (a port-0 destination shown with the packet's port), or `None` when we refused the flow.
    pub ours: Option<SocketAddr>,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {} {}: kernel {} ours ", self.seq, self.service, self.kernel)?;
        match self.ours {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("none"),
        }
    }
}

impl ReplayReport {
    /// Whether every row agreed.
    pub fn all_agree(&self) -> bool {
        self.agree == self.total
    }

    /// What the `replay-picks` example prints: one line per disagreement, then `N/M picks agree`.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.disagreements.iter().map(ToString::to_string).collect();
        out.push(format!("{}/{} picks agree", self.agree, self.total));
        out
    }
}

/// Why a file could not be replayed.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ReplayError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl core::error::Error for ReplayError {}

/// Replays `text` (rules, then rows) with the kernel's default build options ([`SchedConfig::default`]).
///
/// # Errors
/// [`ReplayError`] for a line that is neither a comment, a supported rule nor a row, for a row of an
/// unknown service, or for a kernel pick that is not a destination of its service.
pub fn replay(text: &str) -> Result<ReplayReport, ReplayError> {
    replay_with(text, &SchedConfig::default())
}

/// [`replay`] with `base` as the scheduler options (its `flags` are replaced by each service's `-b`).
///
/// # Errors
/// As [`replay`].
pub fn replay_with(text: &str, base: &SchedConfig) -> Result<ReplayReport, ReplayError> {
    replay_with_mode(text, base, FastMode::Auto)
}

/// [`replay_with`] with the least-connection schedulers (`lc`, `wlc`, `sed`, `nq`) built with `mode`, so
/// both the O(log n) tree and the O(n) scan can be replayed on the same (short) lists; [`replay_with`] uses
/// [`FastMode::Auto`], the registry's choice.
///
/// # Errors
/// As [`replay`].
pub fn replay_with_mode(text: &str, base: &SchedConfig, mode: FastMode) -> Result<ReplayReport, ReplayError> {
    let mut services: Vec<Service> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut next_id = 0_u32;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let err = |reason| ReplayError { line, reason };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.contains('\t') {
            let row = parse_row(raw).map_err(err)?;
            let svc = services.iter().position(|s| s.sel == row.sel).ok_or(err("row of an unknown service"))?;
            rows.push(Row { svc, line, ..row.row });
            continue;
        }
        let rule = parse_rule(trimmed).map_err(err)?;
        apply_rule(&mut services, rule, base, mode, &mut next_id).map_err(err)?;
    }
    // Each service's rows in seq order (services are independent; the sort is stable).
    rows.sort_by_key(|r| (r.svc, r.seq));

    let mut report = ReplayReport {
        per_service: services.iter().map(|s| (s.sel.to_string(), 0, 0)).collect(),
        ..ReplayReport::default()
    };
    for row in &rows {
        let svc = &mut services[row.svc];
        let views = svc.views();
        let flow = SchedFlow {
            protocol: row.protocol.unwrap_or(svc.sel.protocol()),
            client: SocketAddr::new(row.client, row.cport),
            virt: row.packet_dst,
            fwmark: svc.sel.fwmark(),
        };
        let now = Instant::from_millis(row.seq.saturating_mul(MILLIS_PER_SEQ));
        // An index past the list (a scheduler bug) counts as a refusal rather than panicking.
        let ours = svc.sched.schedule(now, &flow, &views).filter(|&i| i < views.len());
        let matches =
            |d: &DestView| d.addr.ip() == row.picked.ip() && (d.addr.port() == 0 || d.addr.port() == row.picked.port());
        let kernel_idx = views
            .iter()
            .position(matches)
            .ok_or(ReplayError { line: row.line, reason: "kernel pick is not a dest" })?;
        let agree = ours.is_some_and(|i| matches(&views[i]));
        let stats = &mut report.per_service[row.svc];
        stats.2 += 1;
        report.total += 1;
        if agree {
            stats.1 += 1;
            report.agree += 1;
        } else {
            let ours = ours.map(|i| {
                let a = views[i].addr;
                if a.port() == 0 {
                    SocketAddr::new(a.ip(), row.packet_dst.port())
                } else {
                    a
                }
            });
            report.disagreements.push(Disagreement {
                seq: row.seq,
                service: svc.sel.to_string(),
                kernel: row.picked,
                ours,
            });
        }
        svc.dests[kernel_idx].state.bind_conn(row.active);
        let views = svc.views();
        svc.sched.counters_changed(&views, CounterChange { index: kernel_idx });
    }
    Ok(report)
}

/// A virtual-service selector.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Selector {
    Addr(Protocol, SocketAddr),
    Fwmark(u32, bool),
}

impl Selector {
    fn protocol(self) -> Protocol {
        match self {
            Self::Addr(p, _) => p,
            // ipvsadm gives fwmark services protocol TCP.
            Self::Fwmark(..) => Protocol::Tcp,
        }
    }

    fn fwmark(self) -> u32 {
        match self {
            Self::Addr(..) => 0,
            Self::Fwmark(m, _) => m,
        }
    }

    fn port(self) -> u16 {
        match self {
            Self::Addr(_, a) => a.port(),
            Self::Fwmark(..) => 0,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(Protocol::Tcp, a) => write!(f, "-t {a}"),
            Self::Addr(Protocol::Udp, a) => write!(f, "-u {a}"),
            Self::Addr(_, a) => write!(f, "--sctp-service {a}"),
            Self::Fwmark(m, false) => write!(f, "-f {m}"),
            Self::Fwmark(m, true) => write!(f, "-f {m} -6"),
        }
    }
}

struct Service {
    sel: Selector,
    sched: Box<dyn Scheduler>,
    /// Kernel list order: most recently added first.
    dests: Vec<Dest>,
}

impl Service {
    fn views(&self) -> Vec<DestView> {
        self.dests.iter().map(|d| d.state.view(d.id, d.addr)).collect()
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service").field("sel", &self.sel).field("sched", &self.sched.name()).finish()
    }
}

struct Dest {
    id: DestId,
    addr: SocketAddr,
    state: DestState,
}

#[derive(Clone, Copy)]
enum Command {
    AddService,
    AddServer,
    EditServer,
    DeleteServer,
}

struct Rule {
    cmd: Command,
    sel: Selector,
    scheduler: Option<String>,
    flags: Option<ServiceFlags>,
    server: Option<(IpAddr, Option<u16>)>,
    tunnel_or_dr: bool,
    weight: Option<u32>,
    u_threshold: u32,
    l_threshold: u32,
}

struct Row {
    svc: usize,
    line: usize,
    seq: u64,
    client: IpAddr,
    cport: u16,
    packet_dst: SocketAddr,
    picked: SocketAddr,
    /// From the state column where it tells (`UDP`); else the service's protocol.
    protocol: Option<Protocol>,
    /// Whether the kernel counts the conn in `activeconns`, from the state column.
    active: bool,
}

struct ParsedRow {
    sel: Selector,
    row: Row,
}

fn parse_row(line: &str) -> Result<ParsedRow, &'static str> {
    let f: Vec<&str> = line.split('\t').map(str::trim).collect();
    if f.len() < 6 {
        return Err("a row needs service, seq, client, cport, packet_dst, picked_dest");
    }
    let tokens: Vec<&str> = f[0].split_whitespace().collect();
    let mut i = 0;
    let mut sel = None;
    let mut v6 = false;
    while i < tokens.len() {
        match tokens[i] {
            "-6" | "--ipv6" => v6 = true,
            t => {
                let arg = tokens.get(i + 1).copied().ok_or("service selector without a value")?;
                sel = Some(parse_selector(t, arg)?.ok_or("not a service selector")?);
                i += 1;
            }
        }
        i += 1;
    }
    let sel = match sel.ok_or("row without a service")? {
        Selector::Fwmark(m, _) => Selector::Fwmark(m, v6),
        s => s,
    };
    let state = f.get(6).copied().unwrap_or("");
    Ok(ParsedRow {
        sel,
        row: Row {
            svc: 0,
            line: 0,
            seq: f[1].parse().map_err(|_| "bad seq")?,
            client: f[2].parse().map_err(|_| "bad client address")?,
            cport: f[3].parse().map_err(|_| "bad client port")?,
            packet_dst: parse_host_port(f[4])?.with_port_or(0),
            picked: parse_host_port(f[5])?.with_port_or(0),
            protocol: (state == "UDP").then_some(Protocol::Udp),
            // The kernel's active states (TcpState/SctpState/UdpState::is_active): a new UDP conn, or an
            // SCTP one in INIT1, counts in inactconns — which lc/wlc weigh 1/256 of an active conn and
            // sed/nq ignore (found by the interop suite's scheduler differential).
            active: state.is_empty() || matches!(state, "ESTABLISHED" | "SYN_SENT" | "SYN_RECV" | "SYNACK"),
        },
    })
}

/// `host[:port]` with the port optional.
#[derive(Clone, Copy)]
struct HostPort(IpAddr, Option<u16>);

impl HostPort {
    fn with_port_or(self, port: u16) -> SocketAddr {
        SocketAddr::new(self.0, self.1.unwrap_or(port))
    }
}

fn parse_host_port(s: &str) -> Result<HostPort, &'static str> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(HostPort(a.ip(), Some(a.port())));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(HostPort(ip, None));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse().map(|ip| HostPort(ip, None)).map_err(|_| "bad IPv6 address");
    }
    match s.rsplit_once(':') {
        Some((h, p)) if h.parse::<IpAddr>().is_ok() => {
            Err(if p.parse::<u16>().is_err() { "ports must be numeric" } else { "bad address" })
        }
        _ => Err("bad address (host names are not resolved)"),
    }
}

/// A selector option and its argument; `Ok(None)` when `opt` is not a selector.
fn parse_selector(opt: &str, arg: &str) -> Result<Option<Selector>, &'static str> {
    let proto = match opt {
        "-t" | "--tcp-service" => Protocol::Tcp,
        "-u" | "--udp-service" => Protocol::Udp,
        "--sctp-service" => Protocol::Sctp,
        "-f" | "--fwmark-service" => {
            let m: u32 = arg.parse().map_err(|_| "bad fwmark")?;
            return if m == 0 { Err("fwmark must be > 0") } else { Ok(Some(Selector::Fwmark(m, false))) };
        }
        _ => return Ok(None),
    };
    Ok(Some(Selector::Addr(proto, parse_host_port(arg)?.with_port_or(0))))
}

fn parse_rule(line: &str) -> Result<Rule, &'static str> {
    let mut tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.first() == Some(&"ipvsadm") {
        tokens.remove(0);
    }
    let (mut cmd, mut sel, mut v6, mut sched_flags) = (None, None, false, None);
    let mut rule = Rule {
        cmd: Command::AddService,
        sel: Selector::Fwmark(1, false),
        scheduler: None,
        flags: None,
        server: None,
        // ipvsadm's default forwarding method is -g (direct routing).
        tunnel_or_dr: true,
        weight: None,
        u_threshold: 0,
        l_threshold: 0,
    };
    let mut i = 0;
    while i < tokens.len() {
        let opt = tokens[i];
        i += 1;
        let command = match opt {
            "-A" | "--add-service" => Some(Command::AddService),
            "-a" | "--add-server" => Some(Command::AddServer),
            "-e" | "--edit-server" => Some(Command::EditServer),
            "-d" | "--delete-server" => Some(Command::DeleteServer),
            "-E" | "--edit-service" | "-D" | "--delete-service" | "-C" | "--clear" => {
                return Err("only -A, -a, -e and -d are replayed")
            }
            _ => None,
        };
        if let Some(c) = command {
            if cmd.replace(c).is_some() {
                return Err("two commands on one line");
            }
            continue;
        }
        match opt {
            "-6" | "--ipv6" => v6 = true,
            "-g" | "--gatewaying" | "-i" | "--ipip" => rule.tunnel_or_dr = true,
            "-m" | "--masquerading" => rule.tunnel_or_dr = false,
            "-o" | "--ops" | "--tun-nocsum" | "--tun-csum" | "--tun-remcsum" => {}
            "-p" | "--persistent" | "--pe" | "-M" | "--netmask" => {
                return Err("persistent services are not replayed (templates change the picks)")
            }
            _ => {
                let arg = *tokens.get(i).ok_or("option without a value")?;
                i += 1;
                match opt {
                    "-s" | "--scheduler" => rule.scheduler = Some(arg.to_string()),
                    "-b" | "--sched-flags" => sched_flags = Some(arg),
                    "-r" | "--real-server" => {
                        let hp = parse_host_port(arg)?;
                        rule.server = Some((hp.0, hp.1));
                    }
                    "-w" | "--weight" => {
                        let w: u32 = arg.parse().map_err(|_| "bad weight")?;
                        if w > 65535 {
                            return Err("weight must be 0..65535");
                        }
                        rule.weight = Some(w);
                    }
                    "-x" | "--u-threshold" => rule.u_threshold = arg.parse().map_err(|_| "bad upper threshold")?,
                    "-y" | "--l-threshold" => rule.l_threshold = arg.parse().map_err(|_| "bad lower threshold")?,
                    "--tun-type" | "--tun-port" => {}
                    _ => match parse_selector(opt, arg)? {
                        Some(s) if sel.is_none() => sel = Some(s),
                        Some(_) => return Err("two service selectors on one line"),
                        None => return Err("unknown option"),
                    },
                }
            }
        }
    }
    rule.cmd = cmd.ok_or("no command (-A, -a, -e, -d)")?;
    rule.sel = match sel.ok_or("no service selector")? {
        Selector::Fwmark(m, _) => Selector::Fwmark(m, v6),
        s => s,
    };
    if let Some(list) = sched_flags {
        rule.flags = Some(parse_sched_flags(list, rule.scheduler.as_deref())?);
    }
    Ok(rule)
}

/// ipvsadm's `-b` list; like ipvsadm, `sh-*` flags refuse a scheduler other than `sh` and `mh-*` flags one
/// other than `mh` (when `-s` is given).
fn parse_sched_flags(list: &str, scheduler: Option<&str>) -> Result<ServiceFlags, &'static str> {
    let mut flags = ServiceFlags::EMPTY;
    for f in list.split(',') {
        let (flag, only_for) = match f {
            "flag-1" => (ServiceFlags::SCHED1, None),
            "flag-2" => (ServiceFlags::SCHED2, None),
            "flag-3" => (ServiceFlags::SCHED3, None),
            "sh-fallback" => (ServiceFlags::SCHED1, Some("sh")),
            "sh-port" => (ServiceFlags::SCHED2, Some("sh")),
            "mh-fallback" => (ServiceFlags::SCHED1, Some("mh")),
            "mh-port" => (ServiceFlags::SCHED2, Some("mh")),
            _ => return Err("unknown scheduler flag"),
        };
        if let (Some(want), Some(got)) = (only_for, scheduler) {
            if want != got {
                return Err("incompatible scheduler flag");
            }
        }
        flags |= flag;
    }
    Ok(flags)
}

fn apply_rule(
    services: &mut Vec<Service>,
    rule: Rule,
    base: &SchedConfig,
    mode: FastMode,
    next_id: &mut u32,
) -> Result<(), &'static str> {
    let pos = services.iter().position(|s| s.sel == rule.sel);
    if let Command::AddService = rule.cmd {
        if pos.is_some() {
            return Err("service exists");
        }
        let name = rule.scheduler.as_deref().unwrap_or("wlc");
        let config = SchedConfig { flags: rule.flags.unwrap_or(ServiceFlags::EMPTY), ..*base };
        let mut sched = build_scheduler(name, &config, mode).map_err(|_| "unknown scheduler")?;
        sched.bind(&[]);
        services.push(Service { sel: rule.sel, sched, dests: Vec::new() });
        return Ok(());
    }
    let svc = &mut services[pos.ok_or("no such service")?];
    let (ip, port) = rule.server.ok_or("no real server (-r)")?;
    // ipvsadm: the port defaults to the service's; a -g/-i server of a non-fwmark service is forced to it.
    let port = match (rule.sel, port) {
        (Selector::Addr(..), _) if rule.tunnel_or_dr => svc.sel.port(),
        (_, Some(p)) => p,
        (_, None) => svc.sel.port(),
    };
    let addr = SocketAddr::new(ip, port);
    let found = svc.dests.iter().position(|d| d.addr == addr);
    match rule.cmd {
        Command::AddServer => {
            if found.is_some() {
                return Err("destination exists");
            }
            let state = DestState::new(rule.weight.unwrap_or(1), rule.u_threshold, rule.l_threshold)
                .map_err(|_| "lower threshold above the upper threshold")?;
            svc.dests.insert(0, Dest { id: DestId(*next_id), addr, state });
            *next_id += 1;
            let views = svc.views();
            svc.sched.dests_changed(&views, DestEvent::Added { index: 0 });
        }
        Command::EditServer => {
            let index = found.ok_or("no such destination")?;
            let d = &mut svc.dests[index];
            // ipvsadm sends its defaults for what the command line leaves out: weight 1, thresholds 0.
            d.state
                .edit(rule.weight.unwrap_or(1), rule.u_threshold, rule.l_threshold)
                .map_err(|_| "lower threshold above the upper threshold")?;
            let views = svc.views();
            svc.sched.dests_changed(&views, DestEvent::Updated { index });
        }
        Command::DeleteServer => {
            let index = found.ok_or("no such destination")?;
            let id = svc.dests.remove(index).id;
            let views = svc.views();
            svc.sched.dests_changed(&views, DestEvent::Removed { index, id });
        }
        Command::AddService => unreachable!("handled above"),
    }
    Ok(())
}

/// [`new_scheduler`], with the least-connection family built with `mode` unless it is [`FastMode::Auto`].
fn build_scheduler(name: &str, config: &SchedConfig, mode: FastMode) -> Result<Box<dyn Scheduler>, UnknownScheduler> {
    Ok(match (name, mode) {
        (_, FastMode::Auto) => return new_scheduler(name, config),
        ("lc", _) => Box::new(lc::LeastConnection::with_mode(mode)),
        ("wlc", _) => Box::new(wlc::WeightedLeastConnection::with_mode(mode)),
        ("sed", _) => Box::new(sed::ShortestExpectedDelay::with_mode(mode)),
        ("nq", _) => Box::new(nq::NeverQueue::with_mode(mode)),
        _ => return new_scheduler(name, config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "\
# rules
-A -t 10.0.2.100:80 -s rr
-a -t 10.0.2.100:80 -r 10.1.0.1:8080 -m -w 1
-a -t 10.0.2.100:80 -r 10.1.0.2:8080 -m -w 1
-A -f 77 -s dh
-a -f 77 -r 10.1.0.1:0 -g -w 1
";

    #[test]
    fn rr_rows_agree_and_disagree() {
        // List order .2, .1: rr picks .2 then .1.
        let text = [
            RULES,
            "# picks\n",
            "-t 10.0.2.100:80\t2\t10.9.0.2\t40002\t10.0.2.100:80\t10.1.0.2:8080\tSYN_RECV\n",
            "-t 10.0.2.100:80\t1\t10.9.0.1\t40001\t10.0.2.100:80\t10.1.0.2:8080\tSYN_RECV\n",
        ]
        .concat();
        let r = replay(&text).unwrap();
        assert_eq!((r.agree, r.total), (1, 2));
        assert_eq!(r.lines(), ["seq 2 -t 10.0.2.100:80: kernel 10.1.0.2:8080 ours 10.1.0.1:8080", "1/2 picks agree"]);
        assert!(!r.all_agree());
        assert_eq!(r.per_service[0], ("-t 10.0.2.100:80".to_string(), 1, 2));
    }

    #[test]
    fn fwmark_dest_port_zero_compares_by_address() {
        let text = [RULES, "-f 77\t1\t10.9.0.8\t41001\t10.50.1.6:80\t10.1.0.1:80\tSYN_RECV\n"].concat();
        let r = replay(&text).unwrap();
        assert!(r.all_agree(), "{:?}", r.lines());
    }

    #[test]
    fn gatewaying_dest_takes_the_service_port() {
        let text = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -g\n\
                    -t 10.0.0.1:80\t1\t10.9.0.1\t1\t10.0.0.1:80\t10.1.0.1:80\tSYN_RECV\n";
        assert!(replay(text).unwrap().all_agree());
        // The kernel pick with port 8080 is not a destination: the dest's port was forced to 80.
        let bad = text.replace("10.1.0.1:80\tSYN", "10.1.0.1:8080\tSYN");
        assert_eq!(replay(&bad).unwrap_err(), ReplayError { line: 3, reason: "kernel pick is not a dest" });
    }

    #[test]
    fn thresholds_overload_the_charged_dest() {
        // -x 1: one conn overloads .2, so rr moves on to .1 and then refuses nothing (.1 has no threshold).
        let text = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1 -m\n\
                    -a -t 10.0.0.1:80 -r 10.1.0.2 -m -x 1\n\
                    -t 10.0.0.1:80\t1\t10.9.0.1\t1\t10.0.0.1:80\t10.1.0.2:80\tSYN_RECV\n\
                    -t 10.0.0.1:80\t2\t10.9.0.1\t2\t10.0.0.1:80\t10.1.0.1:80\tSYN_RECV\n\
                    -t 10.0.0.1:80\t3\t10.9.0.1\t3\t10.0.0.1:80\t10.1.0.1:80\tSYN_RECV\n";
        let r = replay(text).unwrap();
        assert!(r.all_agree(), "{:?}", r.lines());
    }

    #[test]
    fn udp_and_sctp_conns_count_inactive() {
        // nq returns the first idle dest (no *active* conn): new UDP conns never make .2 busy, so the kernel
        // keeps picking it; charging them as active would move the second pick to .1.
        let text = "-A -u 10.0.0.1:53 -s nq\n-a -u 10.0.0.1:53 -r 10.1.0.1 -m -w 2\n\
                    -a -u 10.0.0.1:53 -r 10.1.0.2 -m -w 1\n\
                    -u 10.0.0.1:53\t1\t10.9.0.1\t1\t10.0.0.1:53\t10.1.0.2:53\tUDP\n\
                    -u 10.0.0.1:53\t2\t10.9.0.1\t2\t10.0.0.1:53\t10.1.0.2:53\tUDP\n";
        assert!(replay(text).unwrap().all_agree());
        let sctp = text.replace("-u ", "--sctp-service ").replace("UDP", "INIT1");
        assert!(replay(&sctp).unwrap().all_agree());
        // SYN_RECV counts active: the second SYN goes to the idle .1.
        let tcp = text.replace("-u ", "-t ").replace("\t10.1.0.2:53\tUDP\n-t", "\t10.1.0.2:53\tSYN_RECV\n-t");
        let tcp = tcp.replace("2\t10.0.0.1:53\t10.1.0.2:53\tUDP", "2\t10.0.0.1:53\t10.1.0.1:53\tSYN_RECV");
        assert!(replay(&tcp).unwrap().all_agree(), "{:?}", replay(&tcp).unwrap().lines());
    }

    #[test]
    fn refusal_prints_none() {
        let text = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1 -m -w 0\n\
                    -t 10.0.0.1:80\t1\t10.9.0.1\t1\t10.0.0.1:80\t10.1.0.1:80\tSYN_RECV\n";
        assert_eq!(replay(text).unwrap().lines()[0], "seq 1 -t 10.0.0.1:80: kernel 10.1.0.1:80 ours none");
    }

    #[test]
    fn rejects_what_it_cannot_replay() {
        let cases: &[(&str, &str)] = &[
            ("-A -t 10.0.0.1:80 -s rr -p 300\n", "persistent services are not replayed (templates change the picks)"),
            ("-A -t 10.0.0.1:80 -s nosuch\n", "unknown scheduler"),
            ("-A -t 10.0.0.1:80 -s sh -b sh-bogus\n", "unknown scheduler flag"),
            ("-A -t 10.0.0.1:80 -s mh -b sh-port\n", "incompatible scheduler flag"),
            ("-A -t 10.0.0.1:http\n", "ports must be numeric"),
            ("-a -t 10.0.0.1:80 -r 10.1.0.1\n", "no such service"),
            (
                "-A -t 10.0.0.1:80\n-t 10.0.0.2:80\t1\t1.1.1.1\t1\t10.0.0.2:80\t1.1.1.1:80\tX\n",
                "row of an unknown service",
            ),
            (
                "-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.1.0.1 -x 1 -y 2\n",
                "lower threshold above the upper threshold",
            ),
            ("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.1.0.1 -w 65536\n", "weight must be 0..65535"),
        ];
        for (text, reason) in cases {
            assert_eq!(replay(text).unwrap_err().reason, *reason, "{text}");
        }
    }

    #[test]
    fn ipv6_services_and_edits_and_deletes() {
        let text = "ipvsadm -A -u [2001:db8::1]:53 -s rr\n\
                    -a -u [2001:db8::1]:53 -r [2001:db8::10]:53 -m\n\
                    -a -u [2001:db8::1]:53 -r [2001:db8::11]:53 -m\n\
                    -a -u [2001:db8::1]:53 -r [2001:db8::12]:53 -m\n\
                    -d -u [2001:db8::1]:53 -r [2001:db8::11]:53\n\
                    -e -u [2001:db8::1]:53 -r [2001:db8::12]:53 -m -w 0\n\
                    -u [2001:db8::1]:53\t1\t2001:db8::99\t5000\t[2001:db8::1]:53\t[2001:db8::10]:53\tUDP\n\
                    -u [2001:db8::1]:53\t2\t2001:db8::99\t5001\t[2001:db8::1]:53\t[2001:db8::10]:53\tUDP\n";
        let r = replay(text).unwrap();
        assert!(r.all_agree(), "{:?}", r.lines());
        assert_eq!(r.per_service[0].0, "-u [2001:db8::1]:53");
    }
}
