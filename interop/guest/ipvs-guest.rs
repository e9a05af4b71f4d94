//! `ipvs-guest`: the interop suite's packet injector, run inside the qemu guest.
//!
//! The guest is a busybox initramfs with no packet tool of its own, so the harness compiles this one file with
//! plain `rustc -C target-feature=+crt-static` (no crates, no cargo: the guest has no shared libraries but
//! ipvsadm's) and puts it in the initramfs as `/bin/ipvs-guest`. It is also a `[[bin]]` of `ipvs-interop`, so
//! clippy and the workspace lints see it; that dynamically linked build is never run.
//!
//! It reads a plan from standard input, one command per line, and stops at the first error (exit 1):
//!
//! - `send HEX` — sends the raw IPv4 or IPv6 packet (header included, checksums already valid) through a raw
//!   socket (`IPPROTO_RAW`, so the header is ours). A locally generated packet passes IPVS's LOCAL_OUT hooks:
//!   a request to a virtual service is scheduled there, a reply from a real server is matched to its conn.
//! - `mark N` — the firewall mark (`SO_MARK`) of the packets sent from then on (fwmark services).
//! - `sleep MS` — sleeps.
//! - `conn TAG PRO FROMIP FPRT TOIP TPRT` — prints `TAG STATE EXPIRES` from the first line of
//!   `/proc/net/ip_vs_conn` whose first five fields are these (as the kernel writes them: `TCP 0A090001 4E21
//!   0A000264 0050`), or `TAG - -1` when there is none.
//! - `cat PATH` — copies a file to standard output.
//!
//! Blank lines and lines starting with `#` are skipped. A packet the kernel drops (`sendto` fails with EPERM:
//! IPVS refused to schedule it, or a netfilter hook dropped it) is reported on standard error as `dropped`
//! and the plan goes on.

use std::ffi::c_void;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const SOCK_RAW: i32 = 3;
const IPPROTO_RAW: i32 = 255;
const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;

extern "C" {
    fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const c_void, len: u32) -> i32;
    fn sendto(fd: i32, buf: *const c_void, len: usize, flags: i32, addr: *const c_void, addr_len: u32) -> isize;
}

/// `struct sockaddr_in`.
#[repr(C)]
struct SockAddrIn {
    family: u16,
    port: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

/// `struct sockaddr_in6`.
#[repr(C)]
struct SockAddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u8; 16],
    scope_id: u32,
}

/// The two raw sockets, opened on first use.
#[derive(Default)]
struct Sockets {
    v4: Option<i32>,
    v6: Option<i32>,
    mark: u32,
}

impl Sockets {
    fn open(&mut self, v6: bool) -> io::Result<i32> {
        let slot = if v6 { &mut self.v6 } else { &mut self.v4 };
        if let Some(fd) = *slot {
            return Ok(fd);
        }
        // SAFETY: socket(2) takes plain integers and returns a descriptor or -1.
        let fd = unsafe { socket(if v6 { AF_INET6 } else { AF_INET }, SOCK_RAW, IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        *slot = Some(fd);
        set_mark(fd, self.mark)?;
        Ok(fd)
    }

    fn set_mark(&mut self, mark: u32) -> io::Result<()> {
        self.mark = mark;
        for fd in [self.v4, self.v6].into_iter().flatten() {
            set_mark(fd, mark)?;
        }
        Ok(())
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        let version = packet.first().map(|b| b >> 4);
        let sent = match version {
            Some(4) if packet.len() >= 20 => {
                let fd = self.open(false)?;
                let mut addr = [0u8; 4];
                addr.copy_from_slice(&packet[16..20]);
                let sa = SockAddrIn { family: AF_INET as u16, port: 0, addr, zero: [0; 8] };
                // SAFETY: `packet` and `sa` are live for the call and the lengths are theirs.
                unsafe {
                    sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const sa).cast(),
                        size_of::<SockAddrIn>() as u32,
                    )
                }
            }
            Some(6) if packet.len() >= 40 => {
                let fd = self.open(true)?;
                let mut addr = [0u8; 16];
                addr.copy_from_slice(&packet[24..40]);
                let sa = SockAddrIn6 { family: AF_INET6 as u16, port: 0, flowinfo: 0, addr, scope_id: 0 };
                // SAFETY: `packet` and `sa` are live for the call and the lengths are theirs.
                unsafe {
                    sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const sa).cast(),
                        size_of::<SockAddrIn6>() as u32,
                    )
                }
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 or IPv6 packet")),
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn set_mark(fd: i32, mark: u32) -> io::Result<()> {
    // SAFETY: `mark` is live for the call and its length is given.
    let rc = unsafe { setsockopt(fd, SOL_SOCKET, SO_MARK, (&raw const mark).cast(), 4) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unhex(s: &str) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "bad hex");
    if s.len() % 2 != 0 {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

/// `TAG STATE EXPIRES` for the conn whose first five `/proc/net/ip_vs_conn` fields are `key`.
fn conn_line(tag: &str, key: &[&str]) -> io::Result<String> {
    let table = std::fs::read_to_string("/proc/net/ip_vs_conn")?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 9 && f[..5] == *key {
            return Ok(format!("{tag} {} {}", f[7], f[8]));
        }
    }
    Ok(format!("{tag} - -1"))
}

fn run_line(line: &str, sockets: &mut Sockets, out: &mut impl Write) -> io::Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    match words.as_slice() {
        [] => {}
        [w, ..] if w.starts_with('#') => {}
        ["send", hex] => sockets.send(&unhex(hex)?)?,
        ["mark", n] => sockets.set_mark(n.parse().map_err(|_| bad("bad mark"))?)?,
        ["sleep", ms] => std::thread::sleep(Duration::from_millis(ms.parse().map_err(|_| bad("bad sleep"))?)),
        ["conn", tag, key @ ..] if key.len() == 5 => writeln!(out, "{}", conn_line(tag, key)?)?,
        ["cat", path] => out.write_all(&std::fs::read(path)?)?,
        _ => return Err(bad("unknown command")),
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut sockets = Sockets::default();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for (n, line) in io::stdin().lock().lines().enumerate() {
        let result = line.and_then(|l| match run_line(&l, &mut sockets, &mut out) {
            // IPVS drops a packet it cannot schedule (no dest available) or that a state forbids: sendto
            // then fails with EPERM. That is an outcome to observe, not an error of the plan.
            Err(e) if l.starts_with("send ") && e.kind() == io::ErrorKind::PermissionDenied => {
                let _ = out.flush();
                eprintln!("ipvs-guest: line {}: dropped ({e})", n + 1);
                Ok(())
            }
            r => r,
        });
        if let Err(e) = result {
            let _ = out.flush();
            eprintln!("ipvs-guest: line {}: {e}", n + 1);
            return ExitCode::FAILURE;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}
