//! Real servers and clients, in-process: threads moved into a namespace ([`super::net::enter`]).
//!
//! - [`Server::http`]: HTTP/1.0 on some TCP ports; every answer's body is the server's name (`rs1`…), so the
//!   client knows who served it. A connection that sends no request (a TCP health check) is not counted.
//! - [`Server::echo`]: a TCP line echo that prefixes each line with the server's name (long-lived
//!   connections of the failover scenario).
//! - [`Server::udp`]: answers each datagram with the server's name.
//!
//! Clients bind each socket to an explicit source port from a [`Ports`] allocator, so no 4-tuple is
//! reused during a scenario (a reused one would meet the director's old connection, still in TIME_WAIT,
//! instead of a new scheduling decision).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::net::enter;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A running server; stopping it (or dropping it) closes its listening sockets, as a killed process would.
#[derive(Debug)]
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Requests answered (HTTP requests, echoed lines, datagrams).
    pub(crate) served: Arc<AtomicU64>,
}

impl Server {
    fn spawn<L: Send + 'static>(
        ns: &str,
        bind: impl FnOnce() -> io::Result<L> + Send + 'static,
        serve: impl FnOnce(L, &AtomicBool, &Arc<AtomicU64>) + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (ns, stop, served) = (ns.to_owned(), Arc::clone(&stop), Arc::clone(&served));
            std::thread::spawn(move || {
                let bound = enter(&ns).and_then(|()| bind());
                match bound {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        serve(l, &stop, &served);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
        };
        match rx.recv() {
            Ok(Ok(())) => Self { stop, thread: Some(thread), served },
            Ok(Err(e)) => panic!("server in {ns}: {e}"),
            Err(_) => panic!("server in {ns}: thread died"),
        }
    }

    /// HTTP/1.0 on `ip`'s `ports` in namespace `ns`, answering `name`.
    pub(crate) fn http(ns: &str, ip: IpAddr, ports: &[u16], name: &str) -> Self {
        let ports = ports.to_vec();
        let name = name.to_owned();
        Self::spawn(
            ns,
            move || {
                ports
                    .iter()
                    .map(|p| {
                        let l = TcpListener::bind(SocketAddr::new(ip, *p))?;
                        l.set_nonblocking(true)?;
                        Ok(l)
                    })
                    .collect::<io::Result<Vec<_>>>()
            },
            move |listeners, stop, served| {
                accept_loop(&listeners, stop, |s| {
                    let (name, served) = (name.clone(), Arc::clone(served));
                    std::thread::spawn(move || {
                        if answer_http(s, &name).unwrap_or(false) {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                });
            },
        )
    }

    /// A TCP line echo on `addr` in `ns`: each line comes back as `name line`.
    pub(crate) fn echo(ns: &str, addr: SocketAddr, name: &str) -> Self {
        let name = name.to_owned();
        Self::spawn(
            ns,
            move || {
                let l = TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(vec![l])
            },
            move |listeners, stop, served| {
                accept_loop(&listeners, stop, |s| {
                    let (name, served) = (name.clone(), Arc::clone(served));
                    std::thread::spawn(move || {
                        let _ = echo_lines(s, &name, &served);
                    });
                });
            },
        )
    }

    /// Answers each datagram to `addr` in `ns` with `name`.
    pub(crate) fn udp(ns: &str, addr: SocketAddr, name: &str) -> Self {
        let name = name.to_owned();
        Self::spawn(
            ns,
            move || {
                let s = UdpSocket::bind(addr)?;
                s.set_read_timeout(Some(Duration::from_millis(20)))?;
                Ok(s)
            },
            move |sock, stop, served| {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = sock.recv_from(&mut buf) {
                        if sock.send_to(name.as_bytes(), from).is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            },
        )
    }

    /// Stops the server: its listening sockets are closed (new connections are refused).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listeners: &[TcpListener], stop: &AtomicBool, mut handle: impl FnMut(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for l in listeners {
            match l.accept() {
                Ok((s, _)) => {
                    idle = false;
                    if s.set_nonblocking(false).is_ok()
                        && s.set_read_timeout(Some(IO_TIMEOUT)).is_ok()
                        && s.set_write_timeout(Some(IO_TIMEOUT)).is_ok()
                    {
                        handle(s);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Reads one request head and answers it; `Ok(false)` when the peer sent none (a health check).
fn answer_http(mut s: TcpStream, name: &str) -> io::Result<bool> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(false);
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let body = format!("{name}\n");
    write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()?;
    Ok(true)
}

fn echo_lines(s: TcpStream, name: &str, served: &AtomicU64) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut out = s.try_clone()?;
    for line in BufReader::new(s).lines() {
        let line = line?;
        writeln!(out, "{name} {line}")?;
        served.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Source ports for the clients of one scenario: each socket gets a new one (below the ephemeral range).
#[derive(Debug)]
pub(crate) struct Ports(AtomicU16);

impl Ports {
    /// Ports from 10000 on.
    pub(crate) const fn new() -> Self {
        Self(AtomicU16::new(10_000))
    }

    /// The next port.
    pub(crate) fn next(&self) -> u16 {
        let p = self.0.fetch_add(1, Ordering::Relaxed);
        assert!(p < 32_000, "out of client ports");
        p
    }
}

fn bound_socket(ty: Type, src: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(src), ty, None)?;
    s.set_reuse_address(true)?;
    s.bind(&src.into())?;
    Ok(s)
}

/// A TCP connection from `src` to `dst` (call it inside the client's namespace).
pub(crate) fn connect(src: SocketAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    let s = bound_socket(Type::STREAM, src)?;
    s.connect_timeout(&dst.into(), Duration::from_secs(3))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// `GET path` over HTTP/1.0 from `src` to `dst`; the body, trimmed (call it inside the client's namespace).
pub(crate) fn http_get(src: SocketAddr, dst: SocketAddr, path: &str) -> io::Result<String> {
    let mut s = connect(src, dst)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {dst}\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.trim().to_owned()),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad answer: {text:?}"))),
    }
}

/// One datagram from `src` to `dst`, and the answer (call it inside the client's namespace).
pub(crate) fn udp_query(src: SocketAddr, dst: SocketAddr) -> io::Result<String> {
    let s: UdpSocket = bound_socket(Type::DGRAM, src)?.into();
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.send_to(b"who?", dst)?;
    let mut buf = [0u8; 256];
    let (n, _) = s.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
