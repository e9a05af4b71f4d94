//! `mh`: Maglev hashing (facts §6.14), kernel-exact, with any prime table size.
//!
//! Each destination (list order) gets a permutation of the `M` slots from two SipHash-1-3 hashes of its
//! address and port under fixed keys (so every director with the same list builds the same table):
//! `offset = H1 mod M`, `skip = H2 mod (M − 1) + 1`. Weights come from `last_weight` (kept across an edit
//! to weight 0, so quiescing a destination does not reshuffle other flows): with `g` the gcd of the
//! non-zero last weights and `rshift = max(0, fls(max / g) − TAB_BITS)`, a destination's `turns` is
//! `(last_weight / g) >> rshift`, or 1 when that is 0 but its last weight is not. Population repeats
//! passes over the list until every slot is taken; in each pass a destination claims `turns` slots, each
//! its next free slot along its permutation.
//!
//! A flow goes to slot `H1(client address, port) mod M` (`port` = client source port with `mh-port`,
//! `SCHED2`), used when the destination has weight > 0 and is not OVERLOADed. With `mh-fallback`
//! (`SCHED1`) an unusable slot is followed by re-hashing with `roffset = (offset + ihash) mod M` for
//! `offset = 0..M`; the first usable destination wins.
//!
//! # Beyond the kernel
//! - **Any prime `M`** (up to [`MH_MAX_TABLE_SIZE`]), not only the kernel's ten
//!   ([`MH_KERNEL_TABLE_SIZES`]). `TAB_BITS` is `fls(M) / 2`, which equals the kernel's `TAB_INDEX / 2`
//!   for all ten kernel sizes (each kernel prime lies just below `2^TAB_INDEX`) and scales the same way
//!   for other primes. Non-primes are rejected by [`Mh::new`] ([`MhError`]).
//! - [`disruption`] measures the share of flows that move when the destination set changes.
//!
//! When the list holds more than `M` destinations the kernel's rebuild fails and keeps its old table
//! (pointers to the old dests); this implementation stores list indices, so it empties the table instead
//! and refuses every flow until the list fits again.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use ipvs_proto::{Instant, ServiceFlags};

use crate::hash::{mh_hash, MH_KEY1, MH_KEY2};
use crate::sh::hashed_port;
use crate::{DestEvent, DestView, SchedConfig, SchedFlow, Scheduler};

/// The kernel's table sizes, indexed by `CONFIG_IP_VS_MH_TAB_INDEX − 8` (index 8..=17).
pub const MH_KERNEL_TABLE_SIZES: [u32; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071];

/// The kernel's default table size (`TAB_INDEX` 12).
pub const MH_DEFAULT_TABLE_SIZE: u32 = 4093;

/// The largest table size accepted: `2^24` slots (a 64 MiB table) is far beyond any use.
pub const MH_MAX_TABLE_SIZE: u32 = 1 << 24;

/// Marks an empty slot.
const NONE: u32 = u32::MAX;

/// Why a Maglev table size was refused.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum MhError {
    /// The size is not a prime number (Maglev needs a prime so every skip generates a full permutation).
    NotPrime(u32),
    /// The size is above [`MH_MAX_TABLE_SIZE`].
    TooLarge(u32),
}

impl fmt::Display for MhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPrime(m) => write!(f, "maglev table size {m} is not a prime"),
            Self::TooLarge(m) => write!(f, "maglev table size {m} is above the limit {MH_MAX_TABLE_SIZE}"),
        }
    }
}

impl core::error::Error for MhError {}

/// The `mh` scheduler.
#[derive(Clone, Debug)]
pub struct Mh {
    size: u32,
    tab_bits: u32,
    fallback: bool,
    port: bool,
    /// Slot → index into the destination list, or [`NONE`].
    table: Vec<u32>,
    /// Scratch: per-destination permutation state, reused across rebuilds.
    setup: Vec<DestSetup>,
    /// Scratch: which slots are taken during population.
    taken: Vec<u64>,
}

#[derive(Clone, Copy, Debug)]
struct DestSetup {
    perm: u32,
    skip: u32,
    turns: u32,
}

/// Builds an `mh` scheduler from `config` (`mh_table_size`, `SCHED1` = `mh-fallback`, `SCHED2` =
/// `mh-port`).
///
/// # Errors
/// [`MhError`] when `config.mh_table_size` is not a prime or is above [`MH_MAX_TABLE_SIZE`].
pub fn new_mh(config: &SchedConfig) -> Result<Mh, MhError> {
    Mh::new(config)
}

impl Mh {
    /// See [`new_mh`].
    ///
    /// # Errors
    /// [`MhError`] when `config.mh_table_size` is not a prime or is above [`MH_MAX_TABLE_SIZE`].
    pub fn new(config: &SchedConfig) -> Result<Self, MhError> {
        let size = config.mh_table_size;
        if size > MH_MAX_TABLE_SIZE {
            return Err(MhError::TooLarge(size));
        }
        if !is_prime(size) {
            return Err(MhError::NotPrime(size));
        }
        Ok(Self {
            size,
            tab_bits: fls(size) / 2,
            fallback: config.flags.contains(ServiceFlags::SCHED1),
            port: config.flags.contains(ServiceFlags::SCHED2),
            table: vec![NONE; size as usize],
            setup: Vec::new(),
            taken: vec![0; (size as usize).div_ceil(64)],
        })
    }

    /// The table size `M`.
    pub const fn table_size(&self) -> u32 {
        self.size
    }

    /// `TAB_BITS`, the weight-scaling bits (`fls(M) / 2`; 6 for the default 4093).
    pub const fn tab_bits(&self) -> u32 {
        self.tab_bits
    }

    /// The destination index of every slot (`None` = empty), for tests and diagnostics.
    pub fn slots(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.table.iter().map(|&i| (i != NONE).then_some(i as usize))
    }

    /// The slot `client` (with `port`, 0 unless `mh-port`) maps to at `offset` (0 for the primary
    /// lookup).
    pub fn slot_of(&self, client: core::net::IpAddr, port: u16, offset: u32) -> usize {
        (mh_hash(MH_KEY1, client, port, offset) % self.size) as usize
    }

    /// Rebuilds the table for `dests` (what bind and every list change do).
    pub fn rebuild(&mut self, dests: &[DestView]) {
        self.table.fill(NONE);
        if dests.len() > self.size as usize {
            return;
        }
        let g = dests.iter().map(|d| d.last_weight).filter(|&w| w > 0).fold(0, gcd);
        if g == 0 {
            return;
        }
        let max = dests.iter().map(|d| d.last_weight).max().unwrap_or(0);
        let rshift = fls(max / g).saturating_sub(self.tab_bits);
        self.setup.clear();
        self.setup.extend(dests.iter().map(|d| {
            let (addr, port) = (d.addr.ip(), d.addr.port());
            let turns = match (d.last_weight / g) >> rshift {
                0 => u32::from(d.last_weight != 0),
                t => t,
            };
            DestSetup {
                perm: mh_hash(MH_KEY1, addr, port, 0) % self.size,
                skip: mh_hash(MH_KEY2, addr, port, 0) % (self.size - 1).max(1) + 1,
                turns,
            }
        }));
        self.taken.fill(0);
        let mut filled = 0_u32;
        // g > 0 means some destination has turns ≥ 1, so every pass claims at least one slot.
        while filled < self.size {
            for (i, ds) in self.setup.iter_mut().enumerate() {
                for _ in 0..ds.turns {
                    let mut c = ds.perm;
                    while self.taken[c as usize / 64] & (1 << (c % 64)) != 0 {
                        c += ds.skip;
                        if c >= self.size {
                            c -= self.size;
                        }
                    }
                    ds.perm = c;
                    self.taken[c as usize / 64] |= 1 << (c % 64);
                    self.table[c as usize] = i as u32;
                    filled += 1;
                    if filled == self.size {
                        return;
                    }
                }
            }
        }
    }

    fn usable(dests: &[DestView], idx: u32) -> bool {
        dests.get(idx as usize).is_some_and(DestView::is_schedulable)
    }
}

impl Scheduler for Mh {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn bind(&mut self, dests: &[DestView]) {
        self.rebuild(dests);
    }

    fn dests_changed(&mut self, dests: &[DestView], _event: DestEvent) {
        self.rebuild(dests);
    }

    fn schedule(&mut self, _now: Instant, flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        let port = if self.port { hashed_port(flow) } else { 0 };
        let addr = flow.client.ip();
        let ihash = self.slot_of(addr, port, 0);
        let first = self.table[ihash];
        if Self::usable(dests, first) {
            return Some(first as usize);
        }
        if !self.fallback || first == NONE {
            return None;
        }
        for offset in 0..self.size {
            let roffset = (offset + ihash as u32) % self.size;
            let idx = self.table[self.slot_of(addr, port, roffset)];
            if idx == NONE {
                return None;
            }
            if Self::usable(dests, idx) {
                return Some(idx as usize);
            }
        }
        None
    }
}

/// The share of flows that change destination between two destination lists, measured by Maglev.
///
/// Builds the table for `before` and for `after` (both in kernel list order; destinations compare by
/// address) and looks up `clients` in both: the returned value is the share (0.0..=1.0) of clients
/// whose destination address differs. Ideal consistent hashing moves `1/N` of the flows when one of
/// `N` equal destinations is removed or added; Maglev moves slightly more.
///
/// # Errors
/// [`MhError`] for a bad `table_size`.
pub fn disruption(
    table_size: u32,
    before: &[DestView],
    after: &[DestView],
    clients: &[core::net::SocketAddr],
) -> Result<f64, MhError> {
    let config = SchedConfig { mh_table_size: table_size, ..SchedConfig::default() };
    let (mut a, mut b) = (Mh::new(&config)?, Mh::new(&config)?);
    a.rebuild(before);
    b.rebuild(after);
    let flow =
        |c: core::net::SocketAddr| SchedFlow { protocol: ipvs_proto::Protocol::Tcp, client: c, virt: c, fwmark: 0 };
    let moved = clients
        .iter()
        .filter(|&&c| {
            let pa = a.schedule(Instant::ZERO, &flow(c), before).map(|i| before[i].addr);
            let pb = b.schedule(Instant::ZERO, &flow(c), after).map(|i| after[i].addr);
            pa != pb
        })
        .count();
    Ok(if clients.is_empty() { 0.0 } else { moved as f64 / clients.len() as f64 })
}

/// Whether `n` is prime (trial division; `n` ≤ 2³² so at most 65536 divisions).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3_u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// The kernel's `fls`: the 1-based position of the highest set bit, 0 for 0.
const fn fls(v: u32) -> u32 {
    32 - v.leading_zeros()
}

const fn gcd(a: u32, b: u32) -> u32 {
    let (mut a, mut b) = (a, b);
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

#[cfg(test)]
mod tests;
