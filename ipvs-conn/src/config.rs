//! Table configuration, its validation, and the geometry derived from it.

use core::fmt;

use ipvs_proto::Duration;

use crate::index::SLOTS_PER_BUCKET;

/// Largest number of shards: a [`ConnId`](crate::ConnId) stores the shard in 16 bits, and the shard is taken
/// from the top bits of the 64-bit hash whose bits 32..48 are the index tag (see the crate docs).
pub const MAX_SHARDS: usize = 1 << 16;

/// Largest capacity: slot numbers are 31 bits per shard and family (the top bit marks the IPv6 slab).
pub const MAX_CAPACITY: usize = 1 << 31;

/// Design load of the index: a shard's entries never exceed this many of its bucket slots (8 of 10), so probe
/// sequences stay short even when the shard is at its limit.
const MAX_FILL_PER_BUCKET: usize = 8;

/// Configuration of a [`ConnTable`](crate::ConnTable) or [`LocalConnTable`](crate::LocalConnTable).
///
/// Build it with [`ConnTableConfig::new`] and adjust the public fields; [`ConnTable::new`](crate::ConnTable::new)
/// validates it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub struct ConnTableConfig {
    /// Number of lock shards: a power of two in `1..=65536`. Every conn of one client tuple
    /// (protocol, client address, client port) lives in one shard. Ignored by the per-core table (one shard).
    pub n_shards: usize,
    /// Hard bound on the number of entries (conns and templates together), in `1..=2^31`. A full table
    /// refuses inserts with [`InsertError::Full`](crate::InsertError::Full); memory never grows past what this
    /// bound needs.
    pub capacity: usize,
    /// The SipHash-1-3 key. Pick it at random per table (the embedder's RNG): with a known key an attacker can
    /// craft flows that all land in one bucket.
    pub hash_key: [u8; 16],
    /// Resolution of the timer wheel: expiry deadlines are rounded up to a multiple of it (never early, at
    /// most one tick late). At least 1 ms, at most 60 s.
    pub tick: Duration,
    /// Allocate every IPv4 entry up front instead of growing the slabs (doubling, bounded by the capacity) as
    /// conns arrive. The IPv6 slabs always grow on demand.
    pub preallocate: bool,
}

impl ConnTableConfig {
    /// A configuration with `capacity` entries and the given hash key: 16 shards, a 16 ms tick, slabs that
    /// grow on demand.
    pub const fn new(capacity: usize, hash_key: [u8; 16]) -> Self {
        Self { n_shards: 16, capacity, hash_key, tick: Duration::from_millis(16), preallocate: false }
    }

    /// Sets [`n_shards`](Self::n_shards).
    #[must_use]
    pub const fn with_n_shards(mut self, n_shards: usize) -> Self {
        self.n_shards = n_shards;
        self
    }

    /// Sets [`tick`](Self::tick).
    #[must_use]
    pub const fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Sets [`preallocate`](Self::preallocate).
    #[must_use]
    pub const fn with_preallocate(mut self, preallocate: bool) -> Self {
        self.preallocate = preallocate;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first invalid field, as a [`ConfigError`] naming it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.n_shards.is_power_of_two() || self.n_shards > MAX_SHARDS {
            return Err(ConfigError::NShards(self.n_shards));
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(ConfigError::Capacity(self.capacity));
        }
        let tick = self.tick.total_millis();
        if tick == 0 || tick > 60_000 {
            return Err(ConfigError::Tick(self.tick));
        }
        Ok(())
    }
}

/// An invalid [`ConnTableConfig`] field (caller misuse, never caused by packets).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `n_shards` is not a power of two in `1..=65536`.
    NShards(usize),
    /// `capacity` is not in `1..=2^31`.
    Capacity(usize),
    /// `tick` is not in 1 ms..=60 s.
    Tick(Duration),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NShards(n) => write!(f, "n_shards must be a power of two in 1..=65536, got {n}"),
            Self::Capacity(n) => write!(f, "capacity must be in 1..=2^31, got {n}"),
            Self::Tick(t) => write!(f, "tick must be in 1 ms..=60 s, got {t}"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Sizes derived from a valid configuration.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Geometry {
    /// Number of shards.
    pub(crate) n_shards: usize,
    /// log2 of `n_shards`.
    pub(crate) shard_bits: u32,
    /// Most entries one shard may hold.
    pub(crate) shard_limit: usize,
    /// Buckets per shard.
    pub(crate) n_buckets: usize,
}

impl Geometry {
    /// The geometry of a validated `config` with `n_shards` shards.
    ///
    /// A shard may hold `min(capacity, q + 4·√q + 16)` entries, `q = ⌈capacity / n_shards⌉`: with a keyed hash
    /// the shards fill evenly (a binomial spread of about √q), so the global bound, not a shard's, is what
    /// refuses inserts in practice; small tables let one shard hold everything. The index gets enough buckets
    /// for the shard limit at 8 entries per 10-slot bucket.
    pub(crate) fn new(capacity: usize, n_shards: usize) -> Self {
        let q = capacity.div_ceil(n_shards);
        let spread = 4 * isqrt(q) + 16;
        let shard_limit = capacity.min(q.saturating_add(spread));
        let n_buckets = shard_limit.div_ceil(MAX_FILL_PER_BUCKET).max(1);
        debug_assert!(n_buckets * SLOTS_PER_BUCKET > shard_limit);
        Self { n_shards, shard_bits: n_shards.trailing_zeros(), shard_limit, n_buckets }
    }
}

/// Integer square root (floor).
fn isqrt(n: usize) -> usize {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = ConnTableConfig::new(1000, [7; 16]);
        assert_eq!(ok.validate(), Ok(()));
        let e = ConnTableConfig { n_shards: 3, ..ok }.validate().unwrap_err();
        assert_eq!(e, ConfigError::NShards(3));
        assert!(e.to_string().contains("n_shards"));
        assert_eq!(ConnTableConfig { n_shards: 0, ..ok }.validate(), Err(ConfigError::NShards(0)));
        assert_eq!(ConnTableConfig { n_shards: 1 << 17, ..ok }.validate(), Err(ConfigError::NShards(1 << 17)));
        let e = ConnTableConfig { capacity: 0, ..ok }.validate().unwrap_err();
        assert!(e.to_string().contains("capacity"));
        assert_eq!(
            ConnTableConfig { capacity: MAX_CAPACITY + 1, ..ok }.validate(),
            Err(ConfigError::Capacity(MAX_CAPACITY + 1))
        );
        let e = ConnTableConfig { tick: Duration::ZERO, ..ok }.validate().unwrap_err();
        assert!(e.to_string().contains("tick"));
    }

    #[test]
    fn isqrt_is_floor_sqrt() {
        for n in 0..10_000usize {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "isqrt({n}) = {r}");
        }
        assert_eq!(isqrt(1 << 40), 1 << 20);
    }

    #[test]
    fn geometry_bounds() {
        // Small tables: one shard can hold everything.
        let g = Geometry::new(4, 2);
        assert_eq!(g.shard_limit, 4);
        assert_eq!(g.n_buckets, 1);
        // 1M entries over 16 shards: a little slack above the even share; load ≤ 0.8 at the limit.
        let g = Geometry::new(1 << 20, 16);
        assert_eq!(g.shard_limit, 65536 + 4 * 256 + 16);
        assert!(g.n_buckets * MAX_FILL_PER_BUCKET >= g.shard_limit);
        assert_eq!(g.shard_bits, 4);
    }
}
