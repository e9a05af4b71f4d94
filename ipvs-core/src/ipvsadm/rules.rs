//! Rules files: the `ipvsadm-save` format and ipvsadm command lines, parsed into [`Command`]s.
//!
//! One command per line, with or without a leading `ipvsadm`; blank lines and `#` comments are skipped.
//! Options are ipvsadm 1.31's, short (`-t`, clusters like `-Ln`, attached values like `-w3`) or long
//! (`--weight 3`, `--weight=3`); `-p` takes its timeout only when the next word does not start with `-`.
//!
//! ipvsadm's semantics are kept: defaults (scheduler `wlc`, `-g`, weight 1, `-p` = 360 s, the full mask),
//! the option/command table (an option a command does not take is an error), `-b` names checked against the
//! scheduler (`sh-*` only with `sh`, `mh-*` only with `mh`), the tunnel option table (`gue` needs
//! `--tun-port`; `ipip` takes no option; `gre` takes `--tun-nocsum`/`--tun-csum`), a `-g`/`-i` server of a
//! non-fwmark service gets the service's port, and a server without a port gets the service's.
//! Deviations: host and service *names* are not resolved (numeric addresses and ports only), and options
//! are read in any order (ipvsadm reads `-r` and `-M` relative to the service option given before them).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipvs_proto::{AddressFamily, FwdMethod, Protocol, ServiceFlags, ServiceKey};

use crate::config::{
    is_known_scheduler, ArgText, Command, ConfigError, DestConfig, Persistence, RuleSet, ServiceConfig,
    SyncDaemonConfig, SyncState, Timeouts, TunnelConfig, TunnelCsum, TunnelKind, DEFAULT_PERSISTENCE_SECS,
    MAX_NAME_LEN, MAX_PERSISTENCE_SECS, MAX_SYNC_MAXLEN,
};

/// ipvsadm's largest `--set` value (31 days).
const MAX_SET_TIMEOUT: u32 = 86_400 * 31;

/// One command of a rules file and the line it came from (1-based).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Rule {
    /// Line number, counting from 1.
    pub line: usize,
    /// The command.
    pub command: Command,
}

/// A rules file line that could not be used: its number (1-based) and what is wrong.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct RuleError {
    /// Line number, counting from 1.
    pub line: usize,
    /// The problem.
    pub kind: RuleErrorKind,
}

/// What is wrong with a rules line. Options are named as ipvsadm spells them (`-w/--weight`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum RuleErrorKind {
    /// The line has options but no command (`-A`, `-a`, `--set`, …).
    NoCommand,
    /// Two commands on one line.
    MultipleCommands {
        /// The first command.
        first: &'static str,
        /// The second one.
        second: &'static str,
    },
    /// A command a rules file cannot hold (`-L`, `-S`, `-R`, `-h`, `-v`).
    UnsupportedCommand(&'static str),
    /// An option ipvsadm does not have.
    UnknownOption(ArgText),
    /// An option that needs a value was the last word.
    MissingValue(&'static str),
    /// An option's value is not valid for it.
    BadValue {
        /// The option.
        option: &'static str,
        /// The value given.
        value: ArgText,
    },
    /// The same option (or two of one group: `-t`/`-u`/`-f`, `-g`/`-i`/`-m`) given twice.
    DuplicateOption(&'static str),
    /// Two options that exclude each other (`--tun-csum` and `--tun-nocsum`, tunnel options with `-m`).
    Conflict {
        /// The later option.
        option: &'static str,
        /// The option it conflicts with.
        other: &'static str,
    },
    /// A required option is missing (`-r` for `-a`, `--tun-port` for `--tun-type gue`).
    MissingOption {
        /// The missing option.
        option: &'static str,
        /// The command or tunnel type that needs it.
        context: &'static str,
    },
    /// An option the command (or tunnel type) does not take.
    IllegalOption {
        /// The option.
        option: &'static str,
        /// The command or tunnel type.
        context: &'static str,
    },
    /// A `-b` flag that does not exist, or does not go with the scheduler.
    SchedFlag {
        /// The flag.
        flag: ArgText,
        /// The scheduler in effect.
        scheduler: ArgText,
    },
    /// A word that belongs to no option.
    UnexpectedArgument(ArgText),
    /// The resulting configuration breaks a rule, or (when loading into a [`RuleSet`]) the command fails
    /// against the rules before it.
    Config(ConfigError),
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

impl fmt::Display for RuleErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCommand => {
                f.write_str("no command (-A, -E, -D, -C, -a, -e, -d, -Z, --set, --start-daemon, --stop-daemon)")
            }
            Self::MultipleCommands { first, second } => write!(f, "two commands: {first} and {second}"),
            Self::UnsupportedCommand(c) => write!(f, "command {c} cannot appear in a rules file"),
            Self::UnknownOption(o) => write!(f, "unknown option `{o}`"),
            Self::MissingValue(o) => write!(f, "option {o} needs a value"),
            Self::BadValue { option, value } => write!(f, "invalid value `{value}` for {option}"),
            Self::DuplicateOption(o) => write!(f, "option {o} given twice"),
            Self::Conflict { option, other } => write!(f, "option {option} conflicts with {other}"),
            Self::MissingOption { option, context } => write!(f, "{context} needs option {option}"),
            Self::IllegalOption { option, context } => write!(f, "option {option} is not allowed with {context}"),
            Self::SchedFlag { flag, scheduler } => {
                write!(f, "scheduler flag (-b) `{flag}` is unknown or not for scheduler `{scheduler}`")
            }
            Self::UnexpectedArgument(a) => write!(f, "unexpected argument `{a}`"),
            Self::Config(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RuleError {}

impl From<ConfigError> for RuleErrorKind {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Parses a rules file into commands, in file order.
///
/// # Errors
/// The first line that cannot be parsed, with its number.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(command)) => rules.push(Rule { line: idx + 1, command }),
            Ok(None) => {}
            Err(kind) => return Err(RuleError { line: idx + 1, kind }),
        }
    }
    Ok(rules)
}

/// Parses one line: `Ok(None)` for a blank or comment line.
///
/// # Errors
/// What is wrong with the line.
pub fn parse_line(line: &str) -> Result<Option<Command>, RuleErrorKind> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if words.first().is_some_and(|w| w.starts_with('#')) {
        return Ok(None);
    }
    if words.first() == Some(&"ipvsadm") {
        words.remove(0);
    }
    if words.is_empty() {
        return Ok(None);
    }
    let parsed = scan(&words)?;
    build(parsed).map(Some)
}

impl RuleSet {
    /// Parses `text` and applies its commands to this rule set, in order.
    ///
    /// # Errors
    /// The first line that cannot be parsed, or whose command fails ([`RuleErrorKind::Config`]); the
    /// commands before it stay applied.
    pub fn apply_rules(&mut self, text: &str) -> Result<(), RuleError> {
        for rule in parse_rules(text)? {
            self.apply(rule.command).map_err(|e| RuleError { line: rule.line, kind: RuleErrorKind::Config(e) })?;
        }
        Ok(())
    }

    /// A rule set built from a rules file (an `ipvsadm -S` dump or a script of ipvsadm commands).
    ///
    /// # Errors
    /// As [`RuleSet::apply_rules`].
    pub fn from_rules(text: &str) -> Result<Self, RuleError> {
        let mut rs = Self::new();
        rs.apply_rules(text)?;
        Ok(rs)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The option table
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Opt {
    // Commands.
    Add,
    Edit,
    Delete,
    Clear,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    StartDaemon,
    StopDaemon,
    Zero,
    List,
    Save,
    Restore,
    Help,
    Version,
    // Options.
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Ipv6,
    Scheduler,
    Persistent,
    Netmask,
    Pe,
    SchedFlags,
    Ops,
    RealServer,
    Gatewaying,
    Ipip,
    Masquerading,
    Weight,
    UThreshold,
    LThreshold,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    McastInterface,
    Syncid,
    SyncMaxlen,
    McastGroup,
    McastPort,
    McastTtl,
    // Listing options: never legal in a rules file, except `--sort` (a no-op everywhere, as in ipvsadm).
    Numeric,
    Connection,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    Exact,
    NoSort,
    Sort,
    TunInfo,
}

#[derive(Clone, Copy, Eq, PartialEq)]
enum ArgKind {
    None,
    Required,
    Optional,
}

struct Spec {
    opt: Opt,
    short: Option<char>,
    long: &'static str,
    arg: ArgKind,
    /// How errors name it.
    name: &'static str,
}

const fn spec(opt: Opt, short: Option<char>, long: &'static str, arg: ArgKind, name: &'static str) -> Spec {
    Spec { opt, short, long, arg, name }
}

use ArgKind::{None as NoArg, Optional as OptArg, Required as ReqArg};

static SPECS: &[Spec] = &[
    spec(Opt::Add, Some('A'), "add-service", NoArg, "-A/--add-service"),
    spec(Opt::Edit, Some('E'), "edit-service", NoArg, "-E/--edit-service"),
    spec(Opt::Delete, Some('D'), "delete-service", NoArg, "-D/--delete-service"),
    spec(Opt::Clear, Some('C'), "clear", NoArg, "-C/--clear"),
    spec(Opt::AddServer, Some('a'), "add-server", NoArg, "-a/--add-server"),
    spec(Opt::EditServer, Some('e'), "edit-server", NoArg, "-e/--edit-server"),
    spec(Opt::DeleteServer, Some('d'), "delete-server", NoArg, "-d/--delete-server"),
    spec(Opt::Set, None, "set", NoArg, "--set"),
    spec(Opt::StartDaemon, None, "start-daemon", ReqArg, "--start-daemon"),
    spec(Opt::StopDaemon, None, "stop-daemon", ReqArg, "--stop-daemon"),
    spec(Opt::Zero, Some('Z'), "zero", NoArg, "-Z/--zero"),
    spec(Opt::List, Some('L'), "list", NoArg, "-L/--list"),
    spec(Opt::List, Some('l'), "list", NoArg, "-l/--list"),
    spec(Opt::Save, Some('S'), "save", NoArg, "-S/--save"),
    spec(Opt::Restore, Some('R'), "restore", NoArg, "-R/--restore"),
    spec(Opt::Help, Some('h'), "help", NoArg, "-h/--help"),
    spec(Opt::Version, Some('v'), "version", NoArg, "-v/--version"),
    spec(Opt::Tcp, Some('t'), "tcp-service", ReqArg, "-t/--tcp-service"),
    spec(Opt::Udp, Some('u'), "udp-service", ReqArg, "-u/--udp-service"),
    spec(Opt::Sctp, None, "sctp-service", ReqArg, "--sctp-service"),
    spec(Opt::Fwmark, Some('f'), "fwmark-service", ReqArg, "-f/--fwmark-service"),
    spec(Opt::Ipv6, Some('6'), "ipv6", NoArg, "-6/--ipv6"),
    spec(Opt::Scheduler, Some('s'), "scheduler", ReqArg, "-s/--scheduler"),
    spec(Opt::Persistent, Some('p'), "persistent", OptArg, "-p/--persistent"),
    spec(Opt::Netmask, Some('M'), "netmask", ReqArg, "-M/--netmask"),
    spec(Opt::Pe, None, "pe", ReqArg, "--pe"),
    spec(Opt::SchedFlags, Some('b'), "sched-flags", ReqArg, "-b/--sched-flags"),
    spec(Opt::Ops, Some('o'), "ops", NoArg, "-o/--ops"),
    spec(Opt::RealServer, Some('r'), "real-server", ReqArg, "-r/--real-server"),
    spec(Opt::Gatewaying, Some('g'), "gatewaying", NoArg, "-g/--gatewaying"),
    spec(Opt::Ipip, Some('i'), "ipip", NoArg, "-i/--ipip"),
    spec(Opt::Masquerading, Some('m'), "masquerading", NoArg, "-m/--masquerading"),
    spec(Opt::Weight, Some('w'), "weight", ReqArg, "-w/--weight"),
    spec(Opt::UThreshold, Some('x'), "u-threshold", ReqArg, "-x/--u-threshold"),
    spec(Opt::LThreshold, Some('y'), "l-threshold", ReqArg, "-y/--l-threshold"),
    spec(Opt::TunType, None, "tun-type", ReqArg, "--tun-type"),
    spec(Opt::TunPort, None, "tun-port", ReqArg, "--tun-port"),
    spec(Opt::TunNocsum, None, "tun-nocsum", NoArg, "--tun-nocsum"),
    spec(Opt::TunCsum, None, "tun-csum", NoArg, "--tun-csum"),
    spec(Opt::TunRemcsum, None, "tun-remcsum", NoArg, "--tun-remcsum"),
    spec(Opt::McastInterface, None, "mcast-interface", ReqArg, "--mcast-interface"),
    spec(Opt::Syncid, None, "syncid", ReqArg, "--syncid"),
    spec(Opt::SyncMaxlen, None, "sync-maxlen", ReqArg, "--sync-maxlen"),
    spec(Opt::McastGroup, None, "mcast-group", ReqArg, "--mcast-group"),
    spec(Opt::McastPort, None, "mcast-port", ReqArg, "--mcast-port"),
    spec(Opt::McastTtl, None, "mcast-ttl", ReqArg, "--mcast-ttl"),
    spec(Opt::Numeric, Some('n'), "numeric", NoArg, "-n/--numeric"),
    spec(Opt::Connection, Some('c'), "connection", NoArg, "-c/--connection"),
    spec(Opt::Timeout, None, "timeout", NoArg, "--timeout"),
    spec(Opt::Daemon, None, "daemon", NoArg, "--daemon"),
    spec(Opt::Stats, None, "stats", NoArg, "--stats"),
    spec(Opt::Rate, None, "rate", NoArg, "--rate"),
    spec(Opt::Thresholds, None, "thresholds", NoArg, "--thresholds"),
    spec(Opt::PersistentConn, None, "persistent-conn", NoArg, "--persistent-conn"),
    spec(Opt::Exact, Some('X'), "exact", NoArg, "--exact"),
    spec(Opt::NoSort, None, "nosort", NoArg, "--nosort"),
    spec(Opt::Sort, None, "sort", NoArg, "--sort"),
    spec(Opt::TunInfo, None, "tun-info", NoArg, "--tun-info"),
];

fn name_of(opt: Opt) -> &'static str {
    SPECS.iter().find(|s| s.opt == opt).map_or("?", |s| s.name)
}

const fn is_command(opt: Opt) -> bool {
    matches!(
        opt,
        Opt::Add
            | Opt::Edit
            | Opt::Delete
            | Opt::Clear
            | Opt::AddServer
            | Opt::EditServer
            | Opt::DeleteServer
            | Opt::Set
            | Opt::StartDaemon
            | Opt::StopDaemon
            | Opt::Zero
            | Opt::List
            | Opt::Save
            | Opt::Restore
            | Opt::Help
            | Opt::Version
    )
}

/// The slot an option fills: options of one group share a slot (ipvsadm's `OPT_*` bits).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Slot {
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Pe,
    SchedFlags,
    Ops,
    RealServer,
    Fwd,
    Weight,
    UThreshold,
    LThreshold,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    McastInterface,
    Syncid,
    SyncMaxlen,
    McastGroup,
    McastPort,
    McastTtl,
    Ipv6,
    Listing,
}

const fn slot_of(opt: Opt) -> Slot {
    match opt {
        Opt::Tcp | Opt::Udp | Opt::Sctp | Opt::Fwmark => Slot::Service,
        Opt::Scheduler => Slot::Scheduler,
        Opt::Persistent => Slot::Persistent,
        Opt::Netmask => Slot::Netmask,
        Opt::Pe => Slot::Pe,
        Opt::SchedFlags => Slot::SchedFlags,
        Opt::Ops => Slot::Ops,
        Opt::RealServer => Slot::RealServer,
        Opt::Gatewaying | Opt::Ipip | Opt::Masquerading => Slot::Fwd,
        Opt::Weight => Slot::Weight,
        Opt::UThreshold => Slot::UThreshold,
        Opt::LThreshold => Slot::LThreshold,
        Opt::TunType => Slot::TunType,
        Opt::TunPort => Slot::TunPort,
        Opt::TunNocsum => Slot::TunNocsum,
        Opt::TunCsum => Slot::TunCsum,
        Opt::TunRemcsum => Slot::TunRemcsum,
        Opt::McastInterface => Slot::McastInterface,
        Opt::Syncid => Slot::Syncid,
        Opt::SyncMaxlen => Slot::SyncMaxlen,
        Opt::McastGroup => Slot::McastGroup,
        Opt::McastPort => Slot::McastPort,
        Opt::McastTtl => Slot::McastTtl,
        Opt::Ipv6 => Slot::Ipv6,
        _ => Slot::Listing,
    }
}

#[derive(Clone, Copy, Eq, PartialEq)]
enum Legal {
    Required,
    Optional,
    Illegal,
}

/// ipvsadm 1.31's `commands_v_options` table, for the commands a rules file can hold.
fn legality(cmd: Opt, slot: Slot) -> Legal {
    use Legal::{Illegal as X, Optional as O, Required as R};
    match (cmd, slot) {
        (_, Slot::Ipv6) => O, // checked separately: needs -f
        (Opt::Add | Opt::Edit, Slot::Service) => R,
        (Opt::Add | Opt::Edit, Slot::Scheduler | Slot::Persistent | Slot::Netmask | Slot::Ops) => O,
        (Opt::Add | Opt::Edit, Slot::Pe | Slot::SchedFlags) => O,
        (Opt::Delete, Slot::Service) => R,
        (Opt::AddServer | Opt::EditServer | Opt::DeleteServer, Slot::Service | Slot::RealServer) => R,
        (
            Opt::AddServer | Opt::EditServer,
            Slot::Fwd
            | Slot::Weight
            | Slot::UThreshold
            | Slot::LThreshold
            | Slot::TunType
            | Slot::TunPort
            | Slot::TunNocsum
            | Slot::TunCsum
            | Slot::TunRemcsum,
        ) => O,
        (
            Opt::StartDaemon,
            Slot::McastInterface
            | Slot::Syncid
            | Slot::SyncMaxlen
            | Slot::McastGroup
            | Slot::McastPort
            | Slot::McastTtl,
        ) => O,
        (Opt::StopDaemon, Slot::Syncid) => O,
        (Opt::Zero, Slot::Service) => O,
        _ => X,
    }
}

const ALL_SLOTS: [Slot; 23] = [
    Slot::Service,
    Slot::Scheduler,
    Slot::Persistent,
    Slot::Netmask,
    Slot::Pe,
    Slot::SchedFlags,
    Slot::Ops,
    Slot::RealServer,
    Slot::Fwd,
    Slot::Weight,
    Slot::UThreshold,
    Slot::LThreshold,
    Slot::TunType,
    Slot::TunPort,
    Slot::TunNocsum,
    Slot::TunCsum,
    Slot::TunRemcsum,
    Slot::McastInterface,
    Slot::Syncid,
    Slot::SyncMaxlen,
    Slot::McastGroup,
    Slot::McastPort,
    Slot::McastTtl,
];

fn slot_name(slot: Slot) -> &'static str {
    match slot {
        Slot::Service => "-t/-u/--sctp-service/-f (service)",
        Slot::RealServer => "-r/--real-server",
        Slot::Fwd => "-g/-i/-m (forwarding method)",
        other => {
            let opt = SPECS.iter().find(|s| slot_of(s.opt) == other).map_or(Opt::Numeric, |s| s.opt);
            name_of(opt)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scanning words into options
// ---------------------------------------------------------------------------------------------------------

/// One option occurrence: which option and its value.
#[derive(Clone, Copy)]
struct Occ<'a> {
    opt: Opt,
    value: Option<&'a str>,
}

struct Parsed<'a> {
    command: Occ<'a>,
    opts: Vec<Occ<'a>>,
    positional: Vec<&'a str>,
}

impl<'a> Parsed<'a> {
    fn get(&self, slot: Slot) -> Option<Occ<'a>> {
        self.opts.iter().copied().find(|o| slot_of(o.opt) == slot)
    }

    fn value(&self, slot: Slot) -> Option<(&'static str, &'a str)> {
        self.get(slot).and_then(|o| o.value.map(|v| (name_of(o.opt), v)))
    }

    fn has(&self, slot: Slot) -> bool {
        self.get(slot).is_some()
    }
}

fn scan<'a>(words: &[&'a str]) -> Result<Parsed<'a>, RuleErrorKind> {
    let mut occs: Vec<Occ<'a>> = Vec::new();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        i += 1;
        if let Some(long) = w.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let spec = SPECS.iter().find(|s| s.long == name).ok_or(RuleErrorKind::UnknownOption(ArgText::new(w)))?;
            let value = take_value(spec, attached, words, &mut i)?;
            occs.push(Occ { opt: spec.opt, value });
        } else if let Some(cluster) = w.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (pos, ch) in cluster.char_indices() {
                let spec = SPECS
                    .iter()
                    .find(|s| s.short == Some(ch))
                    .ok_or_else(|| RuleErrorKind::UnknownOption(ArgText::new(&format!("-{ch}"))))?;
                if spec.arg == ArgKind::None {
                    occs.push(Occ { opt: spec.opt, value: None });
                    continue;
                }
                let rest = &cluster[pos + ch.len_utf8()..];
                let attached = (!rest.is_empty()).then_some(rest);
                let value = take_value(spec, attached, words, &mut i)?;
                occs.push(Occ { opt: spec.opt, value });
                break;
            }
        } else {
            positional.push(w);
        }
    }

    // One command, each slot at most once.
    let mut command: Option<Occ<'a>> = None;
    let mut opts: Vec<Occ<'a>> = Vec::new();
    for occ in occs {
        if is_command(occ.opt) {
            if let Some(first) = command {
                return Err(RuleErrorKind::MultipleCommands { first: name_of(first.opt), second: name_of(occ.opt) });
            }
            command = Some(occ);
        } else if occ.opt == Opt::Sort {
            // ipvsadm: "does nothing, for backwards compatibility" (sets no option bit).
        } else {
            let slot = slot_of(occ.opt);
            if slot != Slot::Listing && opts.iter().any(|o| slot_of(o.opt) == slot) {
                return Err(RuleErrorKind::DuplicateOption(match slot {
                    Slot::Service | Slot::Fwd => slot_name(slot),
                    _ => name_of(occ.opt),
                }));
            }
            opts.push(occ);
        }
    }
    let command = command.ok_or(RuleErrorKind::NoCommand)?;
    if matches!(command.opt, Opt::List | Opt::Save | Opt::Restore | Opt::Help | Opt::Version) {
        return Err(RuleErrorKind::UnsupportedCommand(name_of(command.opt)));
    }
    Ok(Parsed { command, opts, positional })
}

fn take_value<'a>(
    spec: &Spec,
    attached: Option<&'a str>,
    words: &[&'a str],
    i: &mut usize,
) -> Result<Option<&'a str>, RuleErrorKind> {
    match spec.arg {
        ArgKind::None => match attached {
            Some(v) => Err(RuleErrorKind::BadValue { option: spec.name, value: ArgText::new(v) }),
            None => Ok(None),
        },
        ArgKind::Required => {
            if attached.is_some() {
                return Ok(attached);
            }
            let v = words.get(*i).copied().ok_or(RuleErrorKind::MissingValue(spec.name))?;
            *i += 1;
            Ok(Some(v))
        }
        ArgKind::Optional => {
            if attached.is_some() {
                return Ok(attached);
            }
            match words.get(*i) {
                Some(v) if !v.starts_with('-') => {
                    *i += 1;
                    Ok(Some(v))
                }
                _ => Ok(None),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Building commands
// ---------------------------------------------------------------------------------------------------------

fn build(p: Parsed<'_>) -> Result<Command, RuleErrorKind> {
    let cmd = p.command.opt;
    let context = name_of(cmd);
    // The option table.
    for occ in &p.opts {
        let slot = slot_of(occ.opt);
        if legality(cmd, slot) == Legal::Illegal {
            return Err(RuleErrorKind::IllegalOption { option: name_of(occ.opt), context });
        }
    }
    for slot in ALL_SLOTS {
        if legality(cmd, slot) == Legal::Required && !p.has(slot) {
            return Err(RuleErrorKind::MissingOption { option: slot_name(slot), context });
        }
    }
    // ipvsadm: "-6 used before -f" — only a fwmark service takes it.
    if p.has(Slot::Ipv6) && p.get(Slot::Service).map(|o| o.opt) != Some(Opt::Fwmark) {
        let ctx = p.get(Slot::Service).map_or(context, |o| name_of(o.opt));
        return Err(RuleErrorKind::IllegalOption { option: name_of(Opt::Ipv6), context: ctx });
    }
    if cmd != Opt::Set {
        if let Some(extra) = p.positional.first() {
            return Err(RuleErrorKind::UnexpectedArgument(ArgText::new(extra)));
        }
    }

    match cmd {
        Opt::Add | Opt::Edit => {
            let config = service_config(&p)?;
            config.validate()?;
            Ok(if cmd == Opt::Add { Command::AddService(config) } else { Command::EditService(config) })
        }
        Opt::Delete => Ok(Command::DeleteService(service_key(&p)?.0)),
        Opt::Clear => Ok(Command::Flush),
        Opt::Zero => Ok(Command::Zero(if p.has(Slot::Service) { Some(service_key(&p)?.0) } else { None })),
        Opt::AddServer | Opt::EditServer => {
            let (service, svc_port) = service_key(&p)?;
            let dest = dest_config(&p, &service, svc_port)?;
            dest.validate_for(&service)?;
            Ok(if cmd == Opt::AddServer {
                Command::AddDest { service, dest }
            } else {
                Command::EditDest { service, dest }
            })
        }
        Opt::DeleteServer => {
            let (service, svc_port) = service_key(&p)?;
            let addr = real_server(&p, svc_port)?;
            Ok(Command::DeleteDest { service, addr })
        }
        Opt::Set => timeouts(&p),
        Opt::StartDaemon => daemon(&p),
        Opt::StopDaemon => Ok(Command::StopDaemon(daemon_state(&p)?)),
        _ => Err(RuleErrorKind::UnsupportedCommand(context)),
    }
}

fn bad(option: &'static str, value: &str) -> RuleErrorKind {
    RuleErrorKind::BadValue { option, value: ArgText::new(value) }
}

/// ipvsadm's `string_to_number(s, min, max)`: a decimal in `min..=max`.
fn number(option: &'static str, s: &str, min: u32, max: u32) -> Result<u32, RuleErrorKind> {
    s.parse::<u32>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| bad(option, s))
}

/// ipvsadm's `parse_service`: `a.b.c.d[:port]`, `[v6]:port` or a bare IPv6 address; the port is `None`
/// when not given.
fn host_port(option: &'static str, s: &str) -> Result<(IpAddr, Option<u16>), RuleErrorKind> {
    let err = || bad(option, s);
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(err)?;
        let port = after.strip_prefix(':').ok_or_else(err)?;
        let ip: Ipv6Addr = host.parse().map_err(|_| err())?;
        let port = number(option, port, 0, 65_535).map_err(|_| err())? as u16;
        return Ok((IpAddr::V6(ip), Some(port)));
    }
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Ok((IpAddr::V6(ip), None));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let ip: Ipv4Addr = host.parse().map_err(|_| err())?;
    let port = match port {
        Some(p) => Some(number(option, p, 0, 65_535).map_err(|_| err())? as u16),
        None => None,
    };
    Ok((IpAddr::V4(ip), port))
}

/// The service key and port from `-t/-u/--sctp-service/-f` (+ `-6`).
fn service_key(p: &Parsed<'_>) -> Result<(ServiceKey, u16), RuleErrorKind> {
    let occ = p
        .get(Slot::Service)
        .ok_or(RuleErrorKind::MissingOption { option: slot_name(Slot::Service), context: name_of(p.command.opt) })?;
    let name = name_of(occ.opt);
    let value = occ.value.unwrap_or("");
    let ipv6 = p.has(Slot::Ipv6);
    if occ.opt == Opt::Fwmark {
        let mark = number(name, value, 1, u32::MAX)?;
        let family = if ipv6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        return Ok((ServiceKey::Fwmark { mark, family }, 0));
    }
    let protocol = match occ.opt {
        Opt::Tcp => Protocol::Tcp,
        Opt::Udp => Protocol::Udp,
        _ => Protocol::Sctp,
    };
    let (ip, port) = host_port(name, value)?;
    let port = port.unwrap_or(0);
    Ok((ServiceKey::Addr { protocol, addr: SocketAddr::new(ip, port) }, port))
}

fn service_config(p: &Parsed<'_>) -> Result<ServiceConfig, RuleErrorKind> {
    let (key, _) = service_key(p)?;
    let mut config = ServiceConfig::new(key);
    if let Some((name, s)) = p.value(Slot::Scheduler) {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(bad(name, s));
        }
        if !is_known_scheduler(s) {
            return Err(ConfigError::UnknownScheduler(ArgText::new(s)).into());
        }
        config.scheduler = s.to_owned();
    }
    let family = key.family();
    if let Some(occ) = p.get(Slot::Persistent) {
        let timeout = match occ.value {
            Some(v) => number(name_of(Opt::Persistent), v, 1, MAX_PERSISTENCE_SECS)?,
            None => DEFAULT_PERSISTENCE_SECS,
        };
        config.persistence = Some(Persistence::new(timeout, family));
    }
    if let Some((name, m)) = p.value(Slot::Netmask) {
        let mask = match family {
            AddressFamily::Inet => u32::from(m.parse::<Ipv4Addr>().map_err(|_| bad(name, m))?),
            AddressFamily::Inet6 => number(name, m, 1, 128)?,
        };
        // Without -p the kernel keeps the mask but nothing uses or shows it.
        if let Some(pers) = &mut config.persistence {
            pers.netmask = mask;
        }
    }
    if let Some((name, pe)) = p.value(Slot::Pe) {
        if pe.is_empty() || pe.len() > MAX_NAME_LEN {
            return Err(bad(name, pe));
        }
        config.pe_name = Some(pe.to_owned());
    }
    config.one_packet = p.has(Slot::Ops);
    if let Some((name, flags)) = p.value(Slot::SchedFlags) {
        config.sched_flags = sched_flags(name, flags, &config.scheduler)?;
    }
    Ok(config)
}

/// ipvsadm's `parse_sched_flags`: comma-separated names; `sh-*` only with `sh`, `mh-*` only with `mh`.
fn sched_flags(option: &'static str, list: &str, scheduler: &str) -> Result<ServiceFlags, RuleErrorKind> {
    let mut flags = ServiceFlags::EMPTY;
    let mut any = false;
    for flag in list.split(',').filter(|f| !f.is_empty()) {
        any = true;
        let (bit, needs) = match flag {
            "flag-1" => (ServiceFlags::SCHED1, None),
            "flag-2" => (ServiceFlags::SCHED2, None),
            "flag-3" => (ServiceFlags::SCHED3, None),
            "sh-fallback" => (ServiceFlags::SCHED1, Some("sh")),
            "sh-port" => (ServiceFlags::SCHED2, Some("sh")),
            "mh-fallback" => (ServiceFlags::SCHED1, Some("mh")),
            "mh-port" => (ServiceFlags::SCHED2, Some("mh")),
            _ => (ServiceFlags::EMPTY, Some("")),
        };
        if needs.is_some_and(|s| s != scheduler) {
            return Err(RuleErrorKind::SchedFlag { flag: ArgText::new(flag), scheduler: ArgText::new(scheduler) });
        }
        flags |= bit;
    }
    if !any {
        return Err(bad(option, list));
    }
    Ok(flags)
}

/// `-r`: the port defaults to the service's.
fn real_server(p: &Parsed<'_>, svc_port: u16) -> Result<SocketAddr, RuleErrorKind> {
    let (name, value) = p.value(Slot::RealServer).ok_or(RuleErrorKind::MissingValue(name_of(Opt::RealServer)))?;
    let (ip, port) = host_port(name, value)?;
    Ok(SocketAddr::new(ip, port.unwrap_or(svc_port)))
}

fn dest_config(p: &Parsed<'_>, service: &ServiceKey, svc_port: u16) -> Result<DestConfig, RuleErrorKind> {
    let addr = real_server(p, svc_port)?;
    let fwd_occ = p.get(Slot::Fwd);
    let fwd = match fwd_occ.map(|o| o.opt) {
        Some(Opt::Masquerading) => FwdMethod::Masq,
        Some(Opt::Ipip) => FwdMethod::Tunnel,
        _ => FwdMethod::DirectRoute,
    };
    let mut dest = DestConfig::new(addr, fwd).with_ipvsadm_port(service);
    if let Some((name, w)) = p.value(Slot::Weight) {
        dest.weight = number(name, w, 0, 65_535)?;
    }
    if let Some((name, x)) = p.value(Slot::UThreshold) {
        dest.u_threshold = number(name, x, 0, i32::MAX as u32)?;
    }
    if let Some((name, y)) = p.value(Slot::LThreshold) {
        dest.l_threshold = number(name, y, 0, i32::MAX as u32)?;
    }
    if AddressFamily::of(&addr.ip()) != service.family() && fwd != FwdMethod::Tunnel {
        return Err(ConfigError::MixedFamily { service: service.family(), dest: AddressFamily::of(&addr.ip()) }.into());
    }

    // Tunnel options: only with -i, then per tunnel type (ipvsadm's tunnel_types_v_options).
    let tun_slots = [Slot::TunType, Slot::TunPort, Slot::TunNocsum, Slot::TunCsum, Slot::TunRemcsum];
    if fwd != FwdMethod::Tunnel {
        if let Some(occ) = tun_slots.iter().find_map(|s| p.get(*s)) {
            let other = fwd_occ.map_or("-g/--gatewaying (the default)", |o| name_of(o.opt));
            return Err(RuleErrorKind::Conflict { option: name_of(occ.opt), other });
        }
        return Ok(dest);
    }
    let kind = match p.value(Slot::TunType) {
        None => TunnelKind::Ipip,
        Some((_, "ipip")) => TunnelKind::Ipip,
        Some((_, "gue")) => TunnelKind::Gue,
        Some((_, "gre")) => TunnelKind::Gre,
        Some((name, other)) => return Err(bad(name, other)),
    };
    let type_context = match kind {
        TunnelKind::Ipip => "--tun-type ipip",
        TunnelKind::Gue => "--tun-type gue",
        TunnelKind::Gre => "--tun-type gre",
    };
    // (slot, allowed for ipip, gue, gre)
    let table = [
        (Slot::TunPort, [false, true, false]),
        (Slot::TunNocsum, [false, true, true]),
        (Slot::TunCsum, [false, true, true]),
        (Slot::TunRemcsum, [false, true, false]),
    ];
    let col = usize::from(kind.value());
    let mut csum: Option<(Opt, TunnelCsum)> = None;
    for (slot, allowed) in table {
        let Some(occ) = p.get(slot) else { continue };
        if !allowed[col] {
            return Err(RuleErrorKind::IllegalOption { option: name_of(occ.opt), context: type_context });
        }
        let this = match occ.opt {
            Opt::TunNocsum => TunnelCsum::NoCsum,
            Opt::TunCsum => TunnelCsum::Csum,
            Opt::TunRemcsum => TunnelCsum::RemCsum,
            _ => continue,
        };
        if let Some((first, _)) = csum {
            return Err(RuleErrorKind::Conflict { option: name_of(occ.opt), other: name_of(first) });
        }
        csum = Some((occ.opt, this));
    }
    let port = match p.value(Slot::TunPort) {
        Some((name, v)) => number(name, v, 1, 65_535)? as u16,
        None if kind == TunnelKind::Gue => {
            return Err(RuleErrorKind::MissingOption { option: name_of(Opt::TunPort), context: type_context })
        }
        None => 0,
    };
    dest.tunnel = Some(TunnelConfig { kind, port, csum: csum.map_or(TunnelCsum::NoCsum, |c| c.1) });
    Ok(dest)
}

fn timeouts(p: &Parsed<'_>) -> Result<Command, RuleErrorKind> {
    let name = name_of(Opt::Set);
    if p.positional.len() < 3 {
        return Err(RuleErrorKind::MissingValue(name));
    }
    if let Some(extra) = p.positional.get(3) {
        return Err(RuleErrorKind::UnexpectedArgument(ArgText::new(extra)));
    }
    let v = |i: usize| number(name, p.positional[i], 0, MAX_SET_TIMEOUT);
    let t = Timeouts { tcp: v(0)?, tcpfin: v(1)?, udp: v(2)? };
    t.validate()?;
    Ok(Command::SetTimeouts(t))
}

fn daemon_state(p: &Parsed<'_>) -> Result<SyncState, RuleErrorKind> {
    let name = name_of(p.command.opt);
    match p.command.value {
        Some("master") => Ok(SyncState::Master),
        Some("backup") => Ok(SyncState::Backup),
        Some(other) => Err(bad(name, other)),
        None => Err(RuleErrorKind::MissingValue(name)),
    }
}

fn daemon(p: &Parsed<'_>) -> Result<Command, RuleErrorKind> {
    let state = daemon_state(p)?;
    let ifn = match p.value(Slot::McastInterface) {
        Some((name, v)) if v.is_empty() || v.len() > MAX_NAME_LEN => return Err(bad(name, v)),
        Some((_, v)) => v,
        None => "eth0",
    };
    let mut config = SyncDaemonConfig::new(state, ifn);
    if let Some((name, v)) = p.value(Slot::Syncid) {
        config.syncid = number(name, v, 0, 255)? as u8;
    }
    if let Some((name, v)) = p.value(Slot::SyncMaxlen) {
        config.sync_maxlen = Some(number(name, v, 1, u32::from(MAX_SYNC_MAXLEN))? as u16);
    }
    if let Some((name, v)) = p.value(Slot::McastGroup) {
        config.mcast_group = Some(v.parse::<IpAddr>().map_err(|_| bad(name, v))?);
    }
    if let Some((name, v)) = p.value(Slot::McastPort) {
        config.mcast_port = Some(number(name, v, 1, 65_535)? as u16);
    }
    if let Some((name, v)) = p.value(Slot::McastTtl) {
        config.mcast_ttl = Some(number(name, v, 1, 255)? as u8);
    }
    config.validate()?;
    Ok(Command::StartDaemon(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_SCHEDULER;

    fn one(line: &str) -> Command {
        parse_line(line).unwrap().unwrap()
    }

    fn err(line: &str) -> RuleErrorKind {
        parse_line(line).unwrap_err()
    }

    fn tcp(s: &str) -> ServiceKey {
        ServiceKey::Addr { protocol: Protocol::Tcp, addr: s.parse().unwrap() }
    }

    #[test]
    fn service_defaults_and_options() {
        let Command::AddService(s) =
            one("ipvsadm -A -t 10.0.2.100:443 -s sh -b sh-port,sh-fallback -p 600 -M 255.255.255.0")
        else {
            panic!()
        };
        assert_eq!(s.key, tcp("10.0.2.100:443"));
        assert_eq!(s.scheduler, "sh");
        assert_eq!(s.sched_flags, ServiceFlags::SCHED1 | ServiceFlags::SCHED2);
        assert_eq!(s.persistence, Some(Persistence { timeout_secs: 600, netmask: 0xFFFF_FF00 }));
        let Command::AddService(s) = one("-A -f 77 -s lblcr -p") else { panic!() };
        assert_eq!(s.key, ServiceKey::Fwmark { mark: 77, family: AddressFamily::Inet });
        assert_eq!(s.persistence, Some(Persistence { timeout_secs: 360, netmask: u32::MAX }));
        let Command::AddService(s) = one("-A -t [fd00::100]:80 -s sed -p 300 -M 64") else { panic!() };
        assert_eq!(s.persistence, Some(Persistence { timeout_secs: 300, netmask: 64 }));
        let Command::EditService(s) = one("-E -u 10.0.2.100:53 -o") else { panic!() };
        assert!(s.one_packet);
        assert_eq!(s.scheduler, DEFAULT_SCHEDULER);
        let Command::AddService(s) = one("--add-service --fwmark-service=5 -6 --scheduler=rr -p 30") else { panic!() };
        assert_eq!(s.key, ServiceKey::Fwmark { mark: 5, family: AddressFamily::Inet6 });
        assert_eq!(s.persistence, Some(Persistence { timeout_secs: 30, netmask: 128 }));
        assert_eq!(
            one("-D --sctp-service 10.0.0.1:3868"),
            Command::DeleteService(ServiceKey::Addr {
                protocol: Protocol::Sctp,
                addr: "10.0.0.1:3868".parse().unwrap()
            })
        );
        assert_eq!(one("-C"), Command::Flush);
        assert_eq!(one("-Z"), Command::Zero(None));
    }

    #[test]
    fn server_defaults_and_port_rules() {
        let Command::AddDest { service, dest } = one("-a -t 10.0.2.100:443 -r 10.1.0.3:8443") else { panic!() };
        assert_eq!(service, tcp("10.0.2.100:443"));
        // -g is the default, and forces the service port.
        assert_eq!(dest, DestConfig::new("10.1.0.3:443".parse().unwrap(), FwdMethod::DirectRoute));
        let Command::AddDest { dest, .. } = one("-a -t 10.0.2.100:80 -r 10.1.0.1 -m -w 3 -x 100 -y 50") else {
            panic!()
        };
        assert_eq!(
            (dest.addr, dest.weight, dest.u_threshold, dest.l_threshold),
            ("10.1.0.1:80".parse().unwrap(), 3, 100, 50)
        );
        let Command::AddDest { dest, .. } =
            one("-a -t 10.0.2.100:443 -r 10.1.0.4:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum")
        else {
            panic!()
        };
        assert_eq!(dest.tunnel, Some(TunnelConfig { kind: TunnelKind::Gue, port: 6080, csum: TunnelCsum::NoCsum }));
        let Command::AddDest { dest, .. } = one("-a -f 77 -r 10.1.0.7:0 -i -w 1 --tun-type gre --tun-csum") else {
            panic!()
        };
        assert_eq!(dest.tunnel, Some(TunnelConfig { kind: TunnelKind::Gre, port: 0, csum: TunnelCsum::Csum }));
        let Command::AddDest { dest, .. } = one("-a -f 77 -r [fd01::7]:0 -i") else { panic!() };
        assert_eq!(dest.tunnel, Some(TunnelConfig::IPIP));
        assert_eq!(
            one("-d -t 10.0.2.100:80 -r 10.1.0.1:8080"),
            Command::DeleteDest { service: tcp("10.0.2.100:80"), addr: "10.1.0.1:8080".parse().unwrap() }
        );
        let Command::EditDest { dest, .. } = one("-e -t 10.0.2.100:80 -r 10.1.0.1:8080 -mw5") else { panic!() };
        assert_eq!((dest.fwd, dest.weight), (FwdMethod::Masq, 5));
    }

    #[test]
    fn timeouts_and_daemons() {
        assert_eq!(
            one("ipvsadm --set 1800 90 200"),
            Command::SetTimeouts(Timeouts { tcp: 1800, tcpfin: 90, udp: 200 })
        );
        let Command::StartDaemon(d) = one("ipvsadm --start-daemon master --mcast-interface eth0 --syncid 12") else {
            panic!()
        };
        assert_eq!((d.state, d.mcast_ifn.as_str(), d.syncid), (SyncState::Master, "eth0", 12));
        let Command::StartDaemon(d) =
            one("--start-daemon=backup --mcast-group ff02::81 --mcast-port 9000 --mcast-ttl 3 --sync-maxlen 1400")
        else {
            panic!()
        };
        assert_eq!(d.mcast_ifn, "eth0");
        assert_eq!((d.mcast_port, d.mcast_ttl, d.sync_maxlen), (Some(9000), Some(3), Some(1400)));
        assert_eq!(one("--stop-daemon backup --syncid 3"), Command::StopDaemon(SyncState::Backup));
        // ipvsadm's --set limit is 31 days.
        assert_eq!(one("--set 2678400 0 0"), Command::SetTimeouts(Timeouts { tcp: 2_678_400, tcpfin: 0, udp: 0 }));
        assert_eq!(
            err("--set 2678401 0 0"),
            RuleErrorKind::BadValue { option: "--set", value: ArgText::new("2678401") }
        );
    }

    #[test]
    fn blank_and_comment_lines() {
        assert_eq!(parse_line("   "), Ok(None));
        assert_eq!(parse_line("# -A -t 1.2.3.4:80"), Ok(None));
        assert_eq!(parse_line("ipvsadm"), Ok(None));
        assert_eq!(one("-A -t 10.0.0.1:80 --sort"), Command::AddService(ServiceConfig::new(tcp("10.0.0.1:80"))));
    }

    #[test]
    fn rejects_without_command() {
        assert_eq!(err("-t 10.0.0.1:80 -s rr"), RuleErrorKind::NoCommand);
    }

    #[test]
    fn rejects_two_commands() {
        assert_eq!(
            err("-A -a -t 10.0.0.1:80"),
            RuleErrorKind::MultipleCommands { first: "-A/--add-service", second: "-a/--add-server" }
        );
    }

    #[test]
    fn rejects_listing_commands() {
        assert_eq!(err("-L -n"), RuleErrorKind::UnsupportedCommand("-L/--list"));
        assert_eq!(err("-Sn"), RuleErrorKind::UnsupportedCommand("-S/--save"));
    }

    #[test]
    fn rejects_unknown_options() {
        assert_eq!(err("-A -t 10.0.0.1:80 --frobnicate"), RuleErrorKind::UnknownOption(ArgText::new("--frobnicate")));
        assert_eq!(err("-A -t 10.0.0.1:80 -q"), RuleErrorKind::UnknownOption(ArgText::new("-q")));
    }

    #[test]
    fn rejects_missing_values() {
        assert_eq!(err("-a -t 10.0.0.1:80 -r 10.1.0.1 -w"), RuleErrorKind::MissingValue("-w/--weight"));
        assert_eq!(err("--set 1 2"), RuleErrorKind::MissingValue("--set"));
    }

    #[test]
    fn rejects_bad_values() {
        let bv = |option, value| RuleErrorKind::BadValue { option, value: ArgText::new(value) };
        assert_eq!(err("-a -t 10.0.0.1:80 -r 10.1.0.1 -w 70000"), bv("-w/--weight", "70000"));
        assert_eq!(err("-A -t 10.0.0.300:80"), bv("-t/--tcp-service", "10.0.0.300:80"));
        assert_eq!(err("-A -t 10.0.0.1:http"), bv("-t/--tcp-service", "10.0.0.1:http"));
        assert_eq!(err("-A -t 10.0.0.1:80 -p 0"), bv("-p/--persistent", "0"));
        assert_eq!(err("-A -t [fd00::1]:80 -p -M 129"), bv("-M/--netmask", "129"));
        assert_eq!(err("-A -t 10.0.0.1:80 -p -M 255.255.255"), bv("-M/--netmask", "255.255.255"));
        assert_eq!(err("-A -f 0"), bv("-f/--fwmark-service", "0"));
        assert_eq!(err("--start-daemon primary"), bv("--start-daemon", "primary"));
        assert_eq!(err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type vxlan"), bv("--tun-type", "vxlan"));
    }

    #[test]
    fn rejects_duplicate_options() {
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.1.0.1 -m -g"),
            RuleErrorKind::DuplicateOption("-g/-i/-m (forwarding method)")
        );
        assert_eq!(err("-A -t 10.0.0.1:80 -s rr -s wrr"), RuleErrorKind::DuplicateOption("-s/--scheduler"));
    }

    #[test]
    fn rejects_conflicting_options() {
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue --tun-port 1 --tun-csum --tun-nocsum"),
            RuleErrorKind::Conflict { option: "--tun-csum", other: "--tun-nocsum" }
        );
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.1.0.1 -m --tun-type gue"),
            RuleErrorKind::Conflict { option: "--tun-type", other: "-m/--masquerading" }
        );
    }

    #[test]
    fn rejects_missing_options() {
        assert_eq!(
            err("-a -t 10.0.0.1:80 -m"),
            RuleErrorKind::MissingOption { option: "-r/--real-server", context: "-a/--add-server" }
        );
        assert_eq!(
            err("-A -s rr"),
            RuleErrorKind::MissingOption { option: "-t/-u/--sctp-service/-f (service)", context: "-A/--add-service" }
        );
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue"),
            RuleErrorKind::MissingOption { option: "--tun-port", context: "--tun-type gue" }
        );
    }

    #[test]
    fn rejects_illegal_options() {
        assert_eq!(
            err("-A -t 10.0.0.1:80 -w 3"),
            RuleErrorKind::IllegalOption { option: "-w/--weight", context: "-A/--add-service" }
        );
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-port 5"),
            RuleErrorKind::IllegalOption { option: "--tun-port", context: "--tun-type ipip" }
        );
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gre --tun-remcsum"),
            RuleErrorKind::IllegalOption { option: "--tun-remcsum", context: "--tun-type gre" }
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -6"),
            RuleErrorKind::IllegalOption { option: "-6/--ipv6", context: "-t/--tcp-service" }
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -n"),
            RuleErrorKind::IllegalOption { option: "-n/--numeric", context: "-A/--add-service" }
        );
    }

    #[test]
    fn rejects_sched_flags_of_another_scheduler() {
        assert_eq!(
            err("-A -t 10.0.0.1:80 -s rr -b sh-port"),
            RuleErrorKind::SchedFlag { flag: ArgText::new("sh-port"), scheduler: ArgText::new("rr") }
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -b mh-port"),
            RuleErrorKind::SchedFlag { flag: ArgText::new("mh-port"), scheduler: ArgText::new("wlc") }
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -s mh -b mh-port,bogus"),
            RuleErrorKind::SchedFlag { flag: ArgText::new("bogus"), scheduler: ArgText::new("mh") }
        );
    }

    #[test]
    fn rejects_unexpected_arguments() {
        assert_eq!(err("-A -t 10.0.0.1:80 rr"), RuleErrorKind::UnexpectedArgument(ArgText::new("rr")));
        assert_eq!(err("--set 1 2 3 4"), RuleErrorKind::UnexpectedArgument(ArgText::new("4")));
    }

    #[test]
    fn rejects_invalid_configurations() {
        let cfg = |e| RuleErrorKind::Config(e);
        assert_eq!(err("-A -t 10.0.0.1:80 -s fancy"), cfg(ConfigError::UnknownScheduler(ArgText::new("fancy"))));
        assert_eq!(err("-A -t 10.0.0.1:0"), cfg(ConfigError::ZeroPortNotPersistent));
        assert_eq!(err("-A -t 10.0.0.1:80 -o"), cfg(ConfigError::OnePacketNotUdp(Protocol::Tcp)));
        assert_eq!(
            err("-A -u 10.0.0.1:80 --pe rtsp -p"),
            cfg(ConfigError::UnknownPersistenceEngine(ArgText::new("rtsp")))
        );
        assert_eq!(err("-a -t 10.0.0.1:80 -r 10.1.0.1 -m -y 5"), cfg(ConfigError::Thresholds { upper: 0, lower: 5 }));
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r [fd01::1]:80 -m"),
            cfg(ConfigError::MixedFamily { service: AddressFamily::Inet, dest: AddressFamily::Inet6 })
        );
        assert_eq!(
            err("--start-daemon master --mcast-group 10.0.0.1"),
            cfg(ConfigError::McastGroup("10.0.0.1".parse().unwrap()))
        );
    }

    #[test]
    fn errors_carry_the_line_number() {
        let text = "-A -t 10.0.0.1:80\n\n# comment\n-a -t 10.0.0.1:80 -r 10.1.0.1 -w lots\n";
        let e = parse_rules(text).unwrap_err();
        assert_eq!(e.line, 4);
        let msg = e.to_string();
        assert!(msg.starts_with("line 4: ") && msg.contains("-w/--weight") && msg.contains("lots"), "{msg}");
        let e = RuleSet::from_rules("-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80\n").unwrap_err();
        assert_eq!(
            e,
            RuleError { line: 2, kind: RuleErrorKind::Config(ConfigError::ServiceExists(tcp("10.0.0.1:80"))) }
        );
        let e = RuleSet::from_rules("-a -t 10.0.0.9:80 -r 10.1.0.1\n").unwrap_err();
        assert_eq!(e.kind, RuleErrorKind::Config(ConfigError::ServiceNotFound(tcp("10.0.0.9:80"))));
        assert!(e.to_string().contains("TCP 10.0.0.9:80"), "{e}");
    }
}
