//! ipvsadm's text, byte for byte (ipvsadm 1.31 on Linux 6.1; facts §14, §3.10, §10.4).
//!
//! - [`parse_rules`] reads a rules file — the `ipvsadm-save` format (`-A -t VIP:PORT -s wrr -p 300`) and the
//!   command forms (`ipvsadm -a -t … -r … -m -w 3 -x 100`, `--set`, `--start-daemon`, …) — into
//!   [`Command`](crate::config::Command)s, with ipvsadm's defaults and checks; errors name the line and the
//!   option ([`RuleError`]).
//! - [`save()`] prints `ipvsadm -S -n`: services sorted by fwmark, family, protocol, address, port; servers
//!   sorted by address and port; `-x`/`-y`, timeouts and daemons are not saved.
//! - [`list`] renders `ipvsadm -L -n` and its variants (`--stats [--exact]`, `--rate`, `--thresholds`,
//!   `--persistent-conn`, `--tun-info`, `-c`, `--timeout`, `--daemon`, `-t SERVICE`) and the kernel's
//!   `/proc/net/ip_vs`, `/proc/net/ip_vs_conn` and `/proc/net/ip_vs_stats` from a [`ListingSnapshot`].
//!
//! Orders, as checked against the kernel 6.1 captures in `testdata/kernel-6.1/ipvsadm-listings.txt`:
//! ipvsadm sorts its output with glibc's `qsort` (a merge sort) and libipvs' comparators, which subtract
//! 32-bit values and keep the wrapped difference as an `int` (so two addresses more than 2³¹ apart compare
//! "backwards"; reproduced here). The kernel's own files keep the kernel's orders: servers most recently added
//! first, services by hash bucket ([`list::kernel_service_order`]).

pub mod list;
pub mod rules;
pub mod save;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipvs_proto::{AddressFamily, Protocol, ServiceKey};

pub use list::{
    kernel_service_order, list_conns, list_daemons, list_service, list_services, list_timeout, proc_ip_vs,
    proc_ip_vs_conn, proc_ip_vs_stats, ConnRow, DaemonRow, DestListing, ListFormat, ListingSnapshot, Rates,
    ServiceListing, Stats, DEFAULT_HZ, IPVS_VERSION,
};
pub use rules::{parse_line, parse_rules, Rule, RuleError, RuleErrorKind};
pub use save::save;

/// An address as glibc's `inet_ntop` writes it: dotted IPv4; IPv6 compressed (longest run of two or more
/// zero groups, the first on a tie) with an embedded IPv4 tail for `::a.b.c.d` and `::ffff:a.b.c.d`.
pub(crate) fn ntop(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => ntop6(v6),
    }
}

fn ntop6(ip: &Ipv6Addr) -> String {
    let w = ip.segments();
    // Longest run of zero words (length ≥ 2), first on a tie: glibc's inet_ntop6. Runs are (start, length).
    let mut best: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < 8 {
        if w[i] != 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < 8 && w[i] == 0 {
            i += 1;
        }
        if best.is_none_or(|b| i - start > b.1) {
            best = Some((start, i - start));
        }
    }
    let best = best.filter(|b| b.1 >= 2);
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((b, l)) = best {
            if i == b {
                if i == 0 {
                    out.push(':');
                }
                out.push(':');
                i += l;
                continue;
            }
        }
        // Embedded IPv4: `::a.b.c.d` (first six words zero) or `::ffff:a.b.c.d`.
        if i == 6 {
            if let Some((0, l)) = best {
                if l == 6 || (l == 5 && w[5] == 0xffff) {
                    let o = ip.octets();
                    let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
                    return out;
                }
            }
        }
        let _ = write!(out, "{:x}", w[i]);
        if i < 7 {
            out.push(':');
        }
        i += 1;
    }
    out
}

/// `addr:port` as ipvsadm prints it with `-n`: `10.0.0.1:80`, `[fd00::1]:80`.
pub(crate) fn addrport(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", ntop6(a.ip()), a.port()),
    }
}

/// An IPv6 address as the kernel's `%pI6` writes it: eight groups of four hex digits.
pub(crate) fn full6(ip: &Ipv6Addr) -> String {
    let w = ip.segments();
    format!("{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}", w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7])
}

/// The four 32-bit words of `union nf_inet_addr` in host order (IPv4: the address then zeros).
fn addr_words(ip: &IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from(*v4), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [word(0), word(4), word(8), word(12)]
        }
    }
}

/// `(int)(a - b)` for two `u32`s: C's wrapped difference.
fn cdiff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// libipvs' `ipvs_cmp_services`: fwmark, family, protocol, address, port — each a C subtraction.
/// Fwmark services are compared with protocol 0 and no address (netlink does not report them).
pub(crate) fn cmp_services(a: &ServiceKey, b: &ServiceKey) -> i32 {
    let parts = |k: &ServiceKey| -> (u32, i32, i32, [u32; 4], i32) {
        match k {
            ServiceKey::Addr { protocol, addr } => (
                0,
                i32::from(AddressFamily::of(&addr.ip()).linux_number()),
                i32::from(u8::from(*protocol)),
                addr_words(&addr.ip()),
                i32::from(addr.port()),
            ),
            ServiceKey::Fwmark { mark, family } => (*mark, i32::from(family.linux_number()), 0, [0; 4], 0),
        }
    };
    let (fa, afa, pa, wa, porta) = parts(a);
    let (fb, afb, pb, wb, portb) = parts(b);
    let mut r = cdiff(fa, fb);
    if r != 0 {
        return r;
    }
    r = afa - afb;
    if r != 0 {
        return r;
    }
    r = pa - pb;
    if r != 0 {
        return r;
    }
    if a.family() == AddressFamily::Inet6 {
        for i in 0..4 {
            r = cdiff(wa[i], wb[i]);
            if r != 0 {
                break;
            }
        }
    } else {
        r = cdiff(wa[0], wb[0]);
    }
    if r != 0 {
        return r;
    }
    porta - portb
}

/// libipvs' `ipvs_cmp_dests`: address (four words if the first server is IPv6), then port.
pub(crate) fn cmp_dests(a: &SocketAddr, b: &SocketAddr) -> i32 {
    let (wa, wb) = (addr_words(&a.ip()), addr_words(&b.ip()));
    let mut r = 0;
    if a.is_ipv6() {
        for i in 0..4 {
            r = cdiff(wa[i], wb[i]);
            if r != 0 {
                break;
            }
        }
    } else {
        r = cdiff(wa[0], wb[0]);
    }
    if r != 0 {
        return r;
    }
    i32::from(a.port()) - i32::from(b.port())
}

/// glibc's `qsort` (`msort_with_tmp`: top-down merge sort, left half `n / 2`, taking from the left while
/// `cmp(left, right) <= 0`), so that comparators that are not a total order give glibc's result.
pub(crate) fn glibc_qsort<T: Clone>(items: &mut [T], cmp: &dyn Fn(&T, &T) -> i32) {
    let n = items.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    glibc_qsort(&mut items[..n1], cmp);
    glibc_qsort(&mut items[n1..], cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&items[i], &items[j]) <= 0 {
            merged.push(items[i].clone());
            i += 1;
        } else {
            merged.push(items[j].clone());
            j += 1;
        }
    }
    merged.extend_from_slice(&items[i..n1]);
    merged.extend_from_slice(&items[j..n]);
    items.clone_from_slice(&merged);
}

/// The kernel's `ip_vs_proto_name`: `TCP`, `UDP`, `SCTP`, `IP` (protocol 0, fwmark templates), `AH`,
/// `ESP`, `ICMP`, `ICMPv6`, else `ERR!`.
pub(crate) fn kernel_proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::HopByHop => "IP",
        other => other.ipvs_name().unwrap_or("ERR!"),
    }
}

/// Sign of a C comparator result, for tests.
#[cfg(test)]
fn sign(r: i32) -> std::cmp::Ordering {
    r.cmp(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn ntop_matches_glibc() {
        let cases = [
            ("::", "::"),
            ("::1", "::1"),
            ("fd00::100", "fd00::100"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
            ("::10.0.0.1", "::10.0.0.1"),
            ("::0.1.0.1", "::0.1.0.1"),
            ("1::", "1::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ];
        for (input, want) in cases {
            let ip: Ipv6Addr = input.parse().unwrap();
            assert_eq!(ntop6(&ip), want, "{input}");
        }
        assert_eq!(full6(&"fd00::100".parse().unwrap()), "fd00:0000:0000:0000:0000:0000:0000:0100");
    }

    #[test]
    fn comparators_wrap_like_c() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "200.0.0.1:80".parse().unwrap();
        // 0x0A000001 - 0xC8000001 wraps to 0x42000000 > 0: ipvsadm lists 200.0.0.1 first.
        assert_eq!(sign(cmp_dests(&a, &b)), Ordering::Greater);
        let c: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(sign(cmp_dests(&a, &c)), Ordering::Less);
        let fw = ServiceKey::Fwmark { mark: 1, family: AddressFamily::Inet };
        let t = ServiceKey::Addr { protocol: Protocol::Tcp, addr: a };
        let u = ServiceKey::Addr { protocol: Protocol::Udp, addr: a };
        let t6 = ServiceKey::Addr { protocol: Protocol::Tcp, addr: "[::1]:80".parse().unwrap() };
        assert_eq!(sign(cmp_services(&t, &fw)), Ordering::Less);
        assert_eq!(sign(cmp_services(&t, &u)), Ordering::Less);
        assert_eq!(sign(cmp_services(&u, &t6)), Ordering::Less);
    }

    #[test]
    fn glibc_qsort_is_a_stable_merge_sort() {
        let mut v: Vec<(u32, usize)> = [5, 3, 5, 1, 3, 9, 0].iter().copied().zip(0..).collect();
        glibc_qsort(&mut v, &|a, b| cdiff(a.0, b.0));
        assert_eq!(v, vec![(0, 6), (1, 3), (3, 1), (3, 4), (5, 0), (5, 2), (9, 5)]);
    }
}
