//! The command line (clap derive).
//!
//! ```text
//! tun-director run --tun NAME [--rules FILE] [--control PATH] [--metrics ADDR]
//!                  [--sync-master IFACE] [--sync-backup IFACE] [--syncid N] [--sync-group A] [--sync-port P]
//!                  [--sync-ttl T] [--sync-maxlen L] [--sync-version 0|1]
//!                  [--health tcp|http|http:/PATH] [--health-interval D] [--health-timeout D]
//!                  [--health-retries N] [--health-port P]
//!                  [--slow-start D] [--mtu M] [--queues N] [--tun-fwmark MARK] [--local-v4 A] [--local-v6 A]
//!                  [--conn-capacity N] [--log-level LEVEL]
//! tun-director ctl [--control PATH] IPVSADM-ARGS…
//! tun-director check --rules FILE
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::health::CheckKind;

/// Where `run` listens and `ctl` connects when `--control` is not given.
pub const DEFAULT_CONTROL: &str = "/run/tun-director.sock";

/// `tun-director`: an IPVS director on a TUN device.
#[derive(Debug, Parser)]
#[command(name = "tun-director", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Create the TUN device, load the rules and forward until killed.
    Run(Box<RunArgs>),
    /// Send an ipvsadm command to a running director and print what ipvsadm would print.
    Ctl(CtlArgs),
    /// Load a rules file into an in-memory director (no device, no root) and print its `-S -n`.
    Check(CheckArgs),
}

/// Parses a duration: `500ms`, `2s`, `1.5` (seconds).
///
/// # Errors
/// Not a non-negative number with an optional `ms` or `s` suffix.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(v) = s.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        (s, 1.0)
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e9 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("`{s}` is not a duration (e.g. 500ms, 2s, 1.5)")),
    }
}

/// `run`'s options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the TUN device to create (or attach to, if it exists and is persistent).
    #[arg(long, value_name = "NAME")]
    pub tun: String,
    /// Rules in the ipvsadm-save format (or ipvsadm command lines); refused whole if any line is wrong.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Control socket for `tun-director ctl`.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Run a sync master on this interface (the kernel's protocol).
    #[arg(long, value_name = "IFACE")]
    pub sync_master: Option<String>,
    /// Run a sync backup on this interface.
    #[arg(long, value_name = "IFACE")]
    pub sync_backup: Option<String>,
    /// Sync id (0..=255; a backup with 0 accepts every id).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub syncid: u8,
    /// Sync multicast group (default 224.0.0.81).
    #[arg(long, value_name = "ADDR")]
    pub sync_group: Option<IpAddr>,
    /// Sync base UDP port (default 8848).
    #[arg(long, value_name = "PORT")]
    pub sync_port: Option<u16>,
    /// Sync multicast TTL (default 1).
    #[arg(long, value_name = "TTL")]
    pub sync_ttl: Option<u8>,
    /// Largest sync message (default from the interface MTU).
    #[arg(long, value_name = "BYTES")]
    pub sync_maxlen: Option<u16>,
    /// Wire version the sync master sends (the kernel's `sync_version` sysctl): 1, or 0 for old backups
    /// (IPv4 only, no timeouts). A backup reads both.
    #[arg(long, value_name = "0|1", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub sync_version: u8,
    /// Health check of every real server: `tcp` (connect), `http` or `http:/PATH` (GET, 2xx/3xx pass).
    #[arg(long, value_name = "KIND")]
    pub health: Option<CheckKind>,
    /// Time between health-check rounds.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Health-check timeout.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// Failed checks in a row that quiesce a real server (weight 0).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub health_retries: u32,
    /// Check this port instead of each real server's own.
    #[arg(long, value_name = "PORT")]
    pub health_port: Option<u16>,
    /// Slow start: a real server that comes back ramps from weight 1 to its weight over this period (0 = off).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub slow_start: Duration,
    /// MTU of the device and of the path to the real servers.
    #[arg(long, default_value_t = 1500)]
    pub mtu: u16,
    /// Device queues, one forwarding thread each (more than 1 needs a multi-queue device).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Firewall mark for every packet read from the device (firewall-mark services need one).
    #[arg(long, value_name = "MARK", default_value_t = 0)]
    pub tun_fwmark: u32,
    /// The director's IPv4 address: outer source of IPv4 tunnels, source of ICMP errors (default: the VIP).
    #[arg(long, value_name = "ADDR")]
    pub local_v4: Option<Ipv4Addr>,
    /// The director's IPv6 address (as --local-v4).
    #[arg(long, value_name = "ADDR")]
    pub local_v6: Option<Ipv6Addr>,
    /// Most connections and templates kept.
    #[arg(long, value_name = "N", default_value_t = 1 << 18)]
    pub conn_capacity: usize,
    /// Log level: error, warn, info, debug or trace (logs go to stderr).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: tracing::Level,
}

/// `ctl`'s options.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The director's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// ipvsadm's arguments: `-A -t VIP:PORT -s rr`, `-L -n --stats`, `-S -n`, `-Z`, `-R` (rules on stdin), …
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "IPVSADM-ARGS")]
    pub args: Vec<String>,
}

/// `check`'s options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The rules file.
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ctl_takes_ipvsadm_arguments() {
        let cli = Cli::try_parse_from(["tun-director", "ctl", "--control", "/tmp/x", "-L", "-n", "--stats"]).unwrap();
        let CliCommand::Ctl(c) = cli.command else { panic!() };
        assert_eq!(c.control, PathBuf::from("/tmp/x"));
        assert_eq!(c.args, ["-L", "-n", "--stats"]);
        let cli =
            Cli::try_parse_from(["tun-director", "ctl", "-a", "-t", "1.2.3.4:80", "-r", "10.0.0.1", "-m"]).unwrap();
        let CliCommand::Ctl(c) = cli.command else { panic!() };
        assert_eq!(c.args.len(), 6);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
