//! `tun-director` processes (the built binary, run in a namespace with `ip netns exec`), `ctl`, and the
//! parsing of the listings the tests read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::net::Lab;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tun-director");

/// What a `tun-director` invocation gave.
#[derive(Clone, Debug)]
pub(crate) struct Output {
    /// The exit code (-1 when killed by a signal).
    pub(crate) code: i32,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

/// Runs `tun-director ARGS` (with `stdin`) and collects what it gave.
pub(crate) fn tun_director(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write tun-director's stdin");
    }
    let out = child.wait_with_output().expect("wait for tun-director");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `tun-director run`; dropping it kills it (and prints its log when the test is failing).
#[derive(Debug)]
pub(crate) struct Director {
    /// Its name in messages (`d1`…).
    pub(crate) name: String,
    /// Its control socket.
    pub(crate) control: PathBuf,
    /// Its standard error.
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

impl Director {
    /// Starts `tun-director run --tun TUN --control <work>/NAME.sock ARGS…` in `ns` and waits until `ctl -L -n`
    /// answers (at most 20 s).
    pub(crate) fn start(lab: &Lab, ns: &str, name: &str, tun: &str, args: &[&str]) -> Self {
        let control = lab.path(&format!("{name}.sock"));
        let log = lab.path(&format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("director log file");
        let control_arg = control.to_string_lossy().into_owned();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN, "run", "--tun", tun, "--control", &control_arg])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start director {name}: {e}"));
        let mut d = Self { name: name.to_owned(), control, log, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                panic!("director {name} exited during startup ({status}): {}", d.log_text());
            }
            if d.ctl(&["-L", "-n"]).code == 0 {
                return d;
            }
            assert!(Instant::now() < deadline, "director {name} not ready after 20 s: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `tun-director ctl --control SOCK ARGS…`.
    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, "")
    }

    /// `ctl` with standard input (for `-R`).
    pub(crate) fn ctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let control = self.control.to_string_lossy().into_owned();
        let mut all = vec!["ctl", "--control", &control];
        all.extend_from_slice(args);
        tun_director(&all, stdin)
    }

    /// `ctl ARGS…`, which must succeed; its standard output.
    pub(crate) fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(out.code, 0, "{}: ctl {} failed: {}", self.name, args.join(" "), out.stderr);
        out.stdout
    }

    /// The services as `-L -n --nosort` lists them (real servers in the kernel's list order).
    pub(crate) fn list(&self) -> Vec<Service> {
        parse_list(&self.ctl_ok(&["-L", "-n", "--nosort"]))
    }

    /// The counters of `-L -n --stats --exact`.
    pub(crate) fn stats(&self) -> Vec<ServiceStats> {
        parse_stats(&self.ctl_ok(&["-L", "-n", "--stats", "--exact"]))
    }

    /// The connections of `-L -n -c`.
    pub(crate) fn conns(&self) -> Vec<Conn> {
        parse_conns(&self.ctl_ok(&["-L", "-n", "-c"]))
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of director {} ({}):\n{}", self.name, self.log.display(), self.log_text());
        }
    }
}

/// `tun-director run …` that must fail at startup: its exit code and standard error (at most 20 s).
pub(crate) fn run_expecting_failure(ns: &str, args: &[&str]) -> Output {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "run"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tun-director run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("`tun-director run {}` kept running: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait for tun-director run");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tun-director check --rules FILE`.
pub(crate) fn check(rules: &Path) -> Output {
    tun_director(&["check", "--rules", &rules.to_string_lossy()], "")
}

/// A service of `-L -n`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Service {
    /// `TCP`, `UDP`, `SCTP` or `FWM`.
    pub(crate) proto: String,
    /// `10.99.0.1:80` (or the mark).
    pub(crate) addr: String,
    /// The scheduler.
    pub(crate) sched: String,
    /// The real servers.
    pub(crate) dests: Vec<Dest>,
}

/// A real server of `-L -n`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Dest {
    /// `10.20.0.11:80`.
    pub(crate) addr: String,
    /// `Masq`, `Tunnel`, …
    pub(crate) fwd: String,
    /// The configured weight.
    pub(crate) weight: u32,
    /// ActiveConn.
    pub(crate) active: u32,
    /// InActConn.
    pub(crate) inactive: u32,
}

impl Service {
    /// The real server at `addr`.
    pub(crate) fn dest(&self, addr: &str) -> &Dest {
        self.dests.iter().find(|d| d.addr == addr).unwrap_or_else(|| panic!("no real server {addr} in {self:?}"))
    }
}

/// The service `proto addr` of a listing.
pub(crate) fn service<'a>(list: &'a [Service], proto: &str, addr: &str) -> &'a Service {
    list.iter()
        .find(|s| s.proto == proto && s.addr == addr)
        .unwrap_or_else(|| panic!("no service {proto} {addr} in {list:?}"))
}

fn is_service_line(line: &str) -> bool {
    ["TCP ", "UDP ", "SCTP ", "FWM "].iter().any(|p| line.starts_with(p))
}

fn num<T: std::str::FromStr>(word: Option<&str>, line: &str) -> T {
    word.and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("unexpected listing line {line:?}"))
}

/// Parses `-L -n` (services and real servers).
pub(crate) fn parse_list(text: &str) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if is_service_line(line) {
            out.push(Service {
                proto: words[0].to_owned(),
                addr: words[1].to_owned(),
                sched: words.get(2).copied().unwrap_or_default().to_owned(),
                dests: Vec::new(),
            });
        } else if line.starts_with("  -> ") && words.get(1) != Some(&"RemoteAddress:Port") {
            let s = out.last_mut().unwrap_or_else(|| panic!("real server before any service: {line:?}"));
            s.dests.push(Dest {
                addr: words[1].to_owned(),
                fwd: words[2].to_owned(),
                weight: num(words.get(3).copied(), line),
                active: num(words.get(4).copied(), line),
                inactive: num(words.get(5).copied(), line),
            });
        }
    }
    out
}

/// The five counters of a `--stats` line.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub(crate) struct Counters {
    /// Conns.
    pub(crate) conns: u64,
    /// InPkts.
    pub(crate) inpkts: u64,
    /// OutPkts.
    pub(crate) outpkts: u64,
    /// InBytes.
    pub(crate) inbytes: u64,
    /// OutBytes.
    pub(crate) outbytes: u64,
}

/// A service of `-L -n --stats --exact` with its real servers' counters.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct ServiceStats {
    /// `TCP`…
    pub(crate) proto: String,
    /// `10.99.0.1:80`…
    pub(crate) addr: String,
    /// The service's counters.
    pub(crate) counters: Counters,
    /// `(real server, counters)`.
    pub(crate) dests: Vec<(String, Counters)>,
}

fn counters(words: &[&str], line: &str) -> Counters {
    Counters {
        conns: num(words.get(2).copied(), line),
        inpkts: num(words.get(3).copied(), line),
        outpkts: num(words.get(4).copied(), line),
        inbytes: num(words.get(5).copied(), line),
        outbytes: num(words.get(6).copied(), line),
    }
}

/// Parses `-L -n --stats --exact`.
pub(crate) fn parse_stats(text: &str) -> Vec<ServiceStats> {
    let mut out: Vec<ServiceStats> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if is_service_line(line) {
            out.push(ServiceStats {
                proto: words[0].to_owned(),
                addr: words[1].to_owned(),
                counters: counters(&words, line),
                dests: Vec::new(),
            });
        } else if line.starts_with("  -> ") && words.len() == 7 {
            let s = out.last_mut().unwrap_or_else(|| panic!("real server before any service: {line:?}"));
            s.dests.push((words[1].to_owned(), counters(&words, line)));
        }
    }
    out
}

/// A connection of `-L -n -c`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Conn {
    /// `TCP`…
    pub(crate) proto: String,
    /// `ESTABLISHED`…
    pub(crate) state: String,
    /// The client's address and port.
    pub(crate) source: String,
    /// The virtual address and port.
    pub(crate) virt: String,
    /// The real server's address and port.
    pub(crate) dest: String,
}

/// Parses `-L -n -c`.
pub(crate) fn parse_conns(text: &str) -> Vec<Conn> {
    text.lines()
        .skip_while(|l| !l.starts_with("pro "))
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 6).then(|| Conn {
                proto: w[0].to_owned(),
                state: w[2].to_owned(),
                source: w[3].to_owned(),
                virt: w[4].to_owned(),
                dest: w[5].to_owned(),
            })
        })
        .collect()
}
