//! Health checks in keepalived's spirit: every `interval`, each real server gets a TCP connect or an HTTP
//! GET within `timeout`; after `retries` failures in a row it is quiesced (weight 0, through
//! [`Director::set_health`]), after one success it comes back (its weight restored, ramped by slow start).
//!
//! Checked: the real servers of TCP and firewall-mark services at their own port, or — with a fixed check
//! port (`--health-port`) — the real servers of every service at that port. A server that belongs to several
//! services is checked once and quiesced in all of them.
//!
//! The checks of one round run in parallel (one short-lived thread each), so a round takes at most
//! `timeout` whatever the number of servers, and a server that dies is quiesced within
//! `interval + timeout` (× `retries`).

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::director::Director;

/// What a check does.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.0 GET of a path; 2xx and 3xx answers pass.
    Http {
        /// The path, starting with `/`.
        path: String,
    },
}

impl FromStr for CheckKind {
    type Err = String;

    /// `tcp`, `http` (path `/`) or `http:/path`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "http" => Ok(Self::Http { path: "/".to_owned() }),
            _ => match s.strip_prefix("http:") {
                Some(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
                    Ok(Self::Http { path: path.to_owned() })
                }
                _ => Err(format!("`{s}` is not tcp, http or http:/PATH")),
            },
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Http { path } => write!(f, "http:{path}"),
        }
    }
}

/// The checker's settings.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// What each check does.
    pub kind: CheckKind,
    /// Time between rounds.
    pub interval: Duration,
    /// Connect (and, for HTTP, answer) timeout.
    pub timeout: Duration,
    /// Failures in a row that quiesce a server.
    pub retries: u32,
    /// Port to check instead of the real server's (needed for port-0 servers).
    pub port: Option<u16>,
}

/// Runs one check of `addr`.
pub fn check(kind: &CheckKind, addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else { return false };
    match kind {
        CheckKind::Tcp => true,
        CheckKind::Http { path } => {
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = stream.set_write_timeout(Some(timeout));
            let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: tun-director\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_err() {
                return false;
            }
            let mut head = [0u8; 16];
            let mut n = 0;
            while n < head.len() {
                match stream.read(&mut head[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            // "HTTP/1.x 2xx" or "HTTP/1.x 3xx".
            let line = &head[..n];
            line.starts_with(b"HTTP/") && line.len() >= 12 && matches!(line.get(9), Some(b'2' | b'3'))
        }
    }
}

/// Per-server failure counting: turns check results into up/down transitions.
#[derive(Debug, Default)]
pub struct Tracker {
    failures: HashMap<SocketAddr, u32>,
    down: HashMap<SocketAddr, bool>,
}

impl Tracker {
    /// Records a result; `Some(up)` when the server's state changes (`retries` failures in a row take it
    /// down, one success brings it up).
    pub fn record(&mut self, addr: SocketAddr, ok: bool, retries: u32) -> Option<bool> {
        let down = self.down.entry(addr).or_insert(false);
        if ok {
            self.failures.remove(&addr);
            if *down {
                *down = false;
                return Some(true);
            }
            return None;
        }
        let n = self.failures.entry(addr).or_insert(0);
        *n = n.saturating_add(1);
        if !*down && *n >= retries.max(1) {
            *down = true;
            return Some(false);
        }
        None
    }

    /// Forgets servers that are no longer configured.
    pub fn retain(&mut self, addrs: &[SocketAddr]) {
        self.failures.retain(|a, _| addrs.contains(a));
        self.down.retain(|a, _| addrs.contains(a));
    }
}

/// Runs the checker until `stop` is set.
pub fn run(director: &Arc<Director>, config: &HealthConfig, stop: &AtomicBool) {
    let mut tracker = Tracker::default();
    while !stop.load(Ordering::Acquire) {
        let started = std::time::Instant::now();
        let targets = director.health_targets(config.port.is_some());
        tracker.retain(&targets);
        let results: Vec<(SocketAddr, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|&addr| {
                    let probe = SocketAddr::new(addr.ip(), config.port.unwrap_or(addr.port()));
                    let kind = &config.kind;
                    let timeout = config.timeout;
                    (addr, s.spawn(move || check(kind, probe, timeout)))
                })
                .collect();
            handles.into_iter().map(|(addr, h)| (addr, h.join().unwrap_or(false))).collect()
        });
        for (addr, ok) in results {
            tracing::trace!(real_server = %addr, ok, "health check");
            if let Some(up) = tracker.record(addr, ok, config.retries) {
                let n = director.set_health(addr, up);
                if up {
                    tracing::info!(real_server = %addr, services = n, "health: real server up, weight restored");
                } else {
                    tracing::warn!(real_server = %addr, services = n, "health: real server down, quiesced (weight 0)");
                }
            }
        }
        let rest = config.interval.saturating_sub(started.elapsed());
        // Sleep in short steps so a stop is seen quickly.
        let until = std::time::Instant::now() + rest;
        while !stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        assert_eq!("tcp".parse::<CheckKind>(), Ok(CheckKind::Tcp));
        assert_eq!("http".parse::<CheckKind>(), Ok(CheckKind::Http { path: "/".into() }));
        assert_eq!("http:/healthz".parse::<CheckKind>(), Ok(CheckKind::Http { path: "/healthz".into() }));
        assert!("ping".parse::<CheckKind>().is_err());
        assert!("http:x".parse::<CheckKind>().is_err());
    }

    #[test]
    fn tracker_needs_retries_to_go_down_and_one_success_to_come_back() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let mut t = Tracker::default();
        assert_eq!(t.record(a, true, 2), None);
        assert_eq!(t.record(a, false, 2), None);
        assert_eq!(t.record(a, false, 2), Some(false));
        assert_eq!(t.record(a, false, 2), None);
        assert_eq!(t.record(a, true, 2), Some(true));
        assert_eq!(t.record(a, true, 2), None);
    }

    #[test]
    fn checks_against_local_listeners() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.0 503 Busy\r\n\r\n"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = [0u8; 256];
                let _ = s.read(&mut req).unwrap();
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let http = CheckKind::Http { path: "/".into() };
        assert!(check(&http, addr, Duration::from_secs(2)));
        assert!(!check(&http, addr, Duration::from_secs(2)));
        server.join().unwrap();
        // Nothing listens there any more.
        assert!(!check(&CheckKind::Tcp, addr, Duration::from_millis(500)));
    }
}
