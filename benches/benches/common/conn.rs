//! Workload shared by `benches/conn.rs` and `benches/conn_memory.rs`: deterministic flows, the peers' key and
//! value types, and the keyed SipHash-1-3 `BuildHasher` the peers use.
//!
//! Flows are numbered; flow `i` (below 2^47) maps to a distinct client tuple through a bijection of 47-bit
//! numbers, so any set of flow numbers is a set of distinct flows, in pseudo-random address order.

// Each bench target uses a part of this module.
#![allow(dead_code)]

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipvs_conn::ipvs_proto::{DestId, Duration, Protocol};
use ipvs_conn::{ConnTableConfig, InKey, NewConn, OutKey};
use siphasher::sip::SipHasher13;

/// The secret hash key of every keyed structure (ours and the SipHash peers).
pub(crate) const HASH_KEY: [u8; 16] = *b"bench-secret-key";

/// Number of entries of the big tables.
pub(crate) const N: usize = 1 << 20;

/// Timeout of the conns of the lookup tables (TCP established).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(900);

/// The table configuration of the timing benches: 16 shards, capacity 1.25 × [`N`].
pub(crate) fn table_config() -> ConnTableConfig {
    ConnTableConfig::new(N + N / 4, HASH_KEY)
}

/// The `i`-th number of a pseudo-random permutation of `0..2^47`.
pub(crate) fn permute47(i: u64) -> u64 {
    const M: u64 = (1 << 47) - 1;
    let mut x = i & M;
    x ^= x >> 19;
    x = x.wrapping_mul(0x5DEE_CE66_D5A5) & M; // odd: a bijection modulo 2^47
    x ^= x >> 23;
    x = x.wrapping_mul(0x2545_F491_4F6D) & M;
    x ^= x >> 17;
    x
}

/// A deterministic 64-bit generator (SplitMix64).
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound`.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Fisher-Yates.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Parts of flow `i`: client address and port (32768..=65535, never 0), VIP index (16 VIPs), real server
/// index (64 real servers).
fn parts(i: u64) -> (u32, u16, u32, u32) {
    let x = permute47(i);
    let caddr = x as u32;
    let cport = 0x8000 | (x >> 32) as u16;
    let vip = (i.wrapping_mul(0x9E37_79B9) >> 7) as u32 & 15;
    let rs = (i.wrapping_mul(0x85EB_CA6B) >> 9) as u32 & 63;
    (caddr, cport, vip, rs)
}

fn vip4(v: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 1 + v as u8)
}

fn rs4(r: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (r >> 8) as u8, 1 + r as u8)
}

fn vport(v: u32) -> u16 {
    if v & 1 == 0 {
        80
    } else {
        443
    }
}

/// IPv4 TCP NAT (MASQ) conn of flow `i`.
pub(crate) fn conn4(i: u64) -> NewConn {
    let (c, cport, v, r) = parts(i);
    NewConn::new(
        Protocol::Tcp,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from_bits(c)), cport),
        SocketAddr::new(IpAddr::V4(vip4(v)), vport(v)),
        SocketAddr::new(IpAddr::V4(rs4(r)), 8080),
    )
    .with_dest(DestId(r))
    .with_timeout(TIMEOUT)
}

/// IPv6 TCP NAT conn of flow `i` (client in 2001:db8::/32, VIPs and real servers in 2001:db8:ffff::/48).
pub(crate) fn conn6(i: u64) -> NewConn {
    let (c, cport, v, r) = parts(i);
    let client = Ipv6Addr::from_bits((0x2001_0db8_u128 << 96) | (u128::from(permute47(!i)) << 32) | u128::from(c));
    let vip = Ipv6Addr::from_bits((0x2001_0db8_ffff_u128 << 80) | u128::from(v + 1));
    let rs = Ipv6Addr::from_bits((0x2001_0db8_ffff_0001_u128 << 64) | u128::from(r + 1));
    NewConn::new(
        Protocol::Tcp,
        SocketAddr::new(IpAddr::V6(client), cport),
        SocketAddr::new(IpAddr::V6(vip), vport(v)),
        SocketAddr::new(IpAddr::V6(rs), 8080),
    )
    .with_dest(DestId(r))
    .with_timeout(TIMEOUT)
}

/// The "in" key of a conn.
pub(crate) fn in_key(c: &NewConn) -> InKey {
    InKey::new(c.protocol, c.caddr, c.cport, c.vaddr, c.vport)
}

/// The "out" key of a NAT conn (a reply from the real server).
pub(crate) fn out_key(c: &NewConn) -> OutKey {
    OutKey::new(c.protocol, c.daddr, c.dport, c.caddr, c.cport)
}

fn v4(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => a.to_bits(),
        IpAddr::V6(_) => unreachable!("an IPv4 flow"),
    }
}

fn v6(a: IpAddr) -> u128 {
    match a {
        IpAddr::V6(a) => a.to_bits(),
        IpAddr::V4(_) => unreachable!("an IPv6 flow"),
    }
}

/// A peer's IPv4 flow key: `lo` is the client side (address, port, protocol) packed as `ipvs-conn` hashes it,
/// `hi` the virtual side. It hashes `lo` only, with one `write_u64`, exactly the input of `ipvs-conn`'s
/// keyed hash, so the "same keyed SipHash-1-3" peer does the same hashing work as our table; equality compares
/// both words.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct V4Key {
    lo: u64,
    hi: u64,
}

impl Hash for V4Key {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo);
    }
}

impl V4Key {
    pub(crate) fn of(c: &NewConn) -> Self {
        let lo = u64::from(v4(c.caddr)) | (u64::from(c.cport) << 32) | (u64::from(u8::from(c.protocol)) << 48);
        Self { lo, hi: u64::from(v4(c.vaddr)) | (u64::from(c.vport) << 32) }
    }

    /// The reply direction's key (real server, client) of a NAT conn, for a peer's second map.
    pub(crate) fn out_of(c: &NewConn) -> Self {
        let lo = u64::from(v4(c.caddr)) | (u64::from(c.cport) << 32) | (u64::from(u8::from(c.protocol)) << 48);
        Self { lo, hi: u64::from(v4(c.daddr)) | (u64::from(c.dport) << 32) }
    }
}

/// A peer's IPv4 value: what a lookup of an established flow needs (the real server, flags, state, dest,
/// timers, counters), 40 bytes.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub(crate) struct V4Val {
    daddr: u32,
    dport: u16,
    state: u8,
    flags: u32,
    dest: u32,
    fwmark: u32,
    timeout_ms: u32,
    n_control: u32,
    in_pkts: u32,
    expires_ms: u64,
}

impl V4Val {
    pub(crate) fn of(c: &NewConn) -> Self {
        Self::with_daddr(c, v4(c.daddr))
    }

    fn with_daddr(c: &NewConn, daddr: u32) -> Self {
        Self {
            daddr,
            dport: c.dport,
            state: c.state,
            flags: c.flags.bits(),
            dest: c.dest.map_or(u32::MAX, |d| d.0),
            fwmark: c.fwmark,
            timeout_ms: c.timeout.total_millis() as u32,
            n_control: 0,
            in_pkts: 0,
            expires_ms: c.timeout.total_millis(),
        }
    }
}

/// A peer's IPv6 flow key (hashed on the client side as `ipvs-conn` hashes it).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct V6Key {
    caddr: u128,
    vaddr: u128,
    cport: u16,
    vport: u16,
    proto: u8,
}

impl Hash for V6Key {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((self.caddr >> 64) as u64);
        state.write_u64(self.caddr as u64);
        state.write_u32(u32::from(self.cport) | (u32::from(self.proto) << 16));
    }
}

impl V6Key {
    pub(crate) fn of(c: &NewConn) -> Self {
        Self { caddr: v6(c.caddr), vaddr: v6(c.vaddr), cport: c.cport, vport: c.vport, proto: c.protocol.into() }
    }

    pub(crate) fn out_of(c: &NewConn) -> Self {
        Self { caddr: v6(c.caddr), vaddr: v6(c.daddr), cport: c.cport, vport: c.dport, proto: c.protocol.into() }
    }
}

/// A peer's IPv6 value (as [`V4Val`] with a 16-byte real-server address).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct V6Val {
    daddr: u128,
    rest: V4Val,
}

impl V6Val {
    pub(crate) fn of(c: &NewConn) -> Self {
        Self { daddr: v6(c.daddr), rest: V4Val::with_daddr(c, 0) }
    }
}

/// Keyed SipHash-1-3 with [`HASH_KEY`]: the same hash function and key as `ipvs-conn`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sip13 {
    k0: u64,
    k1: u64,
}

impl Default for Sip13 {
    fn default() -> Self {
        let (k0, k1) = SipHasher13::new_with_key(&HASH_KEY).keys();
        Self { k0, k1 }
    }
}

impl BuildHasher for Sip13 {
    type Hasher = SipHasher13;

    #[inline]
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}
