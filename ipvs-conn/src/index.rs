//! The hash index of one shard: cache-line buckets of (tag, slot) pairs, linear probing over buckets.
//!
//! # Why an own index rather than hashbrown's `HashTable`
//!
//! * **Prefetch by hash.** The burst lookup hashes a batch of keys, prefetches every key's home bucket, then
//!   prefetches every candidate entry, then compares: three passes whose misses overlap. A bucket's address is
//!   a pure function of the hash (`base + home(hash) * 64`), so it can be prefetched before the shard lock is
//!   taken. hashbrown exposes no way to get at a group's address from a hash.
//! * **Memory.** Each entry is indexed by one 6-byte pair (16-bit tag, 32-bit slot) in a 64-byte bucket of
//!   10; the entries themselves live in a slab (`crate::shard`), so the index is sized once for the shard's
//!   bound and never rehashes. At the design load (≤ 8 of 10 slots) it costs 8 bytes per conn; a
//!   `HashTable<u32>` at its 7/8 load costs about 5.1 bytes per conn but would need the stored hash or a
//!   second line to filter (its 7-bit tags give a false positive per ~128 probes versus our 16-bit ~65536).
//! * **One line per probe.** A lookup reads one bucket (tags and slots share the line) and, thanks to the
//!   16-bit tag, almost always exactly one entry line.
//!
//! # Layout and probing
//!
//! A bucket is `#[repr(C, align(64))] { tags: [u16; 10], occupied: u16, overflow: u16, slots: [u32; 10] }`.
//! The home bucket of a hash is `(low32(hash) · n_buckets) >> 32` (multiply-shift range reduction: any
//! bucket count, no modulo); the tag is bits 32..48 of the hash; the shard is taken from the top bits (at
//! most 16, [`crate::config::MAX_SHARDS`]), so the three are independent. Inserts go to the first bucket
//! with a free slot, starting at home and wrapping. `overflow` counts the entries that probed *past* a
//! bucket (F14-style): a lookup stops at the first bucket whose count is zero, and a removal decrements the
//! counts it had incremented, so deletes need no tombstones and probe chains shrink again. A count that
//! reaches `u16::MAX` sticks there (it only makes probes longer, never wrong).

/// Pairs per bucket.
pub(crate) const SLOTS_PER_BUCKET: usize = 10;

/// Mask of the `occupied` bits that exist.
const ALL_SLOTS: u16 = (1 << SLOTS_PER_BUCKET) - 1;

/// One cache line of the index.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Bucket {
    /// Bits 32..48 of each indexed entry's hash.
    tags: [u16; SLOTS_PER_BUCKET],
    /// Bit `i` set: pair `i` is in use.
    occupied: u16,
    /// Number of entries whose probe sequence passed through this bucket (sticky at `u16::MAX`).
    overflow: u16,
    /// The slab slot of each indexed entry.
    slots: [u32; SLOTS_PER_BUCKET],
}

const _: () = assert!(core::mem::size_of::<Bucket>() == 64);

impl Bucket {
    const EMPTY: Self = Self { tags: [0; SLOTS_PER_BUCKET], occupied: 0, overflow: 0, slots: [0; SLOTS_PER_BUCKET] };

    /// Bitmask of the occupied pairs whose tag is `tag`.
    ///
    /// With SSE2 (the x86_64 baseline): two 16-bit lane compares of the ten tags packed into one byte mask
    /// ([`sse2_matching`]). Measured with callgrind on a cache-resident table: about 10 instructions where the
    /// portable loop below compiles to about 24 (LLVM vectorises it into eight lanes, two scalar compares and a
    /// horizontal OR). It counts where the table is cache-resident and in `lookup_burst`, whose misses overlap.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    fn matching(&self, tag: u16) -> u16 {
        #[allow(unsafe_code)]
        // SAFETY: `sse2_matching` only requires the `sse2` target feature, which the `cfg` above guarantees is
        // enabled for the whole build.
        let m = unsafe { sse2_matching(&self.tags, tag) };
        m & self.occupied
    }

    /// Bitmask of the occupied pairs whose tag is `tag` (portable version).
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    #[inline(always)]
    fn matching(&self, tag: u16) -> u16 {
        let mut m = 0u16;
        for (i, &t) in self.tags.iter().enumerate() {
            m |= u16::from(t == tag) << i;
        }
        m & self.occupied
    }
}

/// Bit `i` (`i < 10`) set: `tags[i] == tag`; bits 10..16 are arbitrary (the caller masks with `occupied`).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn sse2_matching(t: &[u16; SLOTS_PER_BUCKET], tag: u16) -> u16 {
    use core::arch::x86_64::{
        _mm_cmpeq_epi16, _mm_cvtsi32_si128, _mm_movemask_epi8, _mm_packs_epi16, _mm_set1_epi16, _mm_set_epi16,
    };
    // Tags 0..8 (LLVM turns the eight lane inserts into one 16-byte load), then tags 8 and 9.
    let lo = _mm_set_epi16(
        t[7] as i16,
        t[6] as i16,
        t[5] as i16,
        t[4] as i16,
        t[3] as i16,
        t[2] as i16,
        t[1] as i16,
        t[0] as i16,
    );
    let hi = _mm_cvtsi32_si128((u32::from(t[8]) | (u32::from(t[9]) << 16)) as i32);
    let needle = _mm_set1_epi16(tag as i16);
    // Equal lanes are all ones; packing with signed saturation keeps one byte per lane, whose top bits
    // `pmovmskb` collects: byte i <- lane i of `lo` (i < 8), byte 8 + j <- lane j of `hi`.
    let eq = _mm_packs_epi16(_mm_cmpeq_epi16(lo, needle), _mm_cmpeq_epi16(hi, needle));
    _mm_movemask_epi8(eq) as u16
}

/// The index of one shard (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Index {
    buckets: Box<[Bucket]>,
}

impl Index {
    /// An empty index of `n_buckets` (at least 1) buckets.
    pub(crate) fn new(n_buckets: usize) -> Self {
        Self { buckets: vec![Bucket::EMPTY; n_buckets.max(1)].into_boxed_slice() }
    }

    /// Number of buckets.
    pub(crate) fn n_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Address of the first bucket; buckets never move (the boxed slice is never reallocated), so the
    /// lock-free prefetch of the burst lookup may use it.
    pub(crate) fn base_addr(&self) -> usize {
        self.buckets.as_ptr() as usize
    }

    /// The home bucket of `hash` in an index of `n_buckets` buckets.
    #[inline]
    pub(crate) fn home_of(hash: u64, n_buckets: usize) -> usize {
        ((u64::from(hash as u32) * n_buckets as u64) >> 32) as usize
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        Self::home_of(hash, self.buckets.len())
    }

    /// The tag of `hash`.
    #[inline]
    pub(crate) fn tag(hash: u64) -> u16 {
        (hash >> 32) as u16
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// The first slot, in probe order, whose tag matches `hash` and for which `matches` holds.
    ///
    /// The home bucket is probed inline (the lookup's fast path: at the design load almost every entry is in
    /// its home bucket, and a miss stops there unless the bucket overflowed); the walk over overflow buckets is
    /// out of line in [`find_from`](Self::find_from). Measured with callgrind on a cache-resident table, this,
    /// `Shard::found` and the SSE2 `matching` took `lookup_in` from 353 to 307 instructions (LocalConnTable);
    /// at 2^20 entries the lookup is bound by its two cache misses and its time did not change measurably.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, mut matches: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = Self::tag(hash);
        let b = self.home(hash);
        let bucket = &self.buckets[b];
        let mut m = bucket.matching(tag);
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let slot = bucket.slots[i];
            if matches(slot) {
                return Some(slot);
            }
        }
        if bucket.overflow == 0 {
            return None;
        }
        self.find_from(self.next(b), tag, matches)
    }

    /// [`find`](Self::find) past the home bucket: probes from bucket `b` on.
    #[cold]
    #[inline(never)]
    fn find_from(&self, mut b: usize, tag: u16, mut matches: impl FnMut(u32) -> bool) -> Option<u32> {
        // The home bucket was probed already: at most `n_buckets - 1` more.
        for _ in 1..self.buckets.len() {
            let bucket = &self.buckets[b];
            let mut m = bucket.matching(tag);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let slot = bucket.slots[i];
                if matches(slot) {
                    return Some(slot);
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// The first slot in the home bucket whose tag matches (the entry a burst lookup prefetches).
    #[inline]
    pub(crate) fn first_candidate(&self, hash: u64) -> Option<u32> {
        let bucket = &self.buckets[self.home(hash)];
        let m = bucket.matching(Self::tag(hash));
        (m != 0).then(|| bucket.slots[m.trailing_zeros() as usize])
    }

    /// Indexes `slot` under `hash`. Returns `false`, changing nothing, if every bucket is full.
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) -> bool {
        let home = self.home(hash);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let free = !self.buckets[b].occupied & ALL_SLOTS;
            if free != 0 {
                let i = free.trailing_zeros() as usize;
                let bucket = &mut self.buckets[b];
                bucket.tags[i] = Self::tag(hash);
                bucket.slots[i] = slot;
                bucket.occupied |= 1 << i;
                // Count the overflow on every bucket passed.
                let mut p = home;
                while p != b {
                    let o = &mut self.buckets[p].overflow;
                    *o = o.saturating_add(1);
                    p = self.next(p);
                }
                return true;
            }
            b = self.next(b);
        }
        false
    }

    /// Removes the pair (`hash`, `slot`). Returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let tag = Self::tag(hash);
        let home = self.home(hash);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bucket = &mut self.buckets[b];
            let mut m = bucket.matching(tag);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                if bucket.slots[i] == slot {
                    bucket.occupied &= !(1 << i);
                    let mut p = home;
                    while p != b {
                        let o = &mut self.buckets[p].overflow;
                        if *o != u16::MAX {
                            *o -= 1;
                        }
                        p = self.next(p);
                    }
                    return true;
                }
            }
            if bucket.overflow == 0 {
                return false;
            }
            b = self.next(b);
        }
        false
    }

    /// Number of buckets a lookup of the indexed pair (`hash`, `slot`) reads, or `None` if it is not indexed.
    pub(crate) fn probe_len(&self, hash: u64, slot: u32) -> Option<usize> {
        let tag = Self::tag(hash);
        let mut b = self.home(hash);
        for n in 1..=self.buckets.len() {
            let bucket = &self.buckets[b];
            let mut m = bucket.matching(tag);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                if bucket.slots[i] == slot {
                    return Some(n);
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// The slots indexed in bucket `b` (taken modulo the bucket count).
    pub(crate) fn bucket_slots(&self, b: usize) -> impl Iterator<Item = u32> + '_ {
        let bucket = &self.buckets[b % self.buckets.len()];
        let mut m = bucket.occupied;
        core::iter::from_fn(move || {
            if m == 0 {
                return None;
            }
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            Some(bucket.slots[i])
        })
    }

    /// Removes every pair.
    pub(crate) fn clear(&mut self) {
        self.buckets.fill(Bucket::EMPTY);
    }

    /// Bytes of memory held.
    pub(crate) fn heap_bytes(&self) -> usize {
        core::mem::size_of_val(&*self.buckets)
    }
}

/// Hints the CPU to fetch the cache line at `addr` into all cache levels. A no-op where no stable prefetch
/// instruction is available.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch(addr: usize) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse", not(all(test, loom))))]
    // SAFETY:
    // 1. `_mm_prefetch` needs the `sse` target feature, which the `cfg` above guarantees is enabled.
    // 2. A prefetch is only a hint: it never faults, does not dereference the pointer in the abstract machine,
    //    and has no effect on program semantics, so any address (even a stale or dangling one) is fine; the
    //    pointer carries no provenance because it is never used for an access.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(core::ptr::without_provenance(addr));
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse", not(all(test, loom)))))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash with the given home-determining low word and tag.
    fn h(low: u32, tag: u16) -> u64 {
        (u64::from(tag) << 32) | u64::from(low)
    }

    #[test]
    fn bucket_is_one_line() {
        assert_eq!(core::mem::size_of::<Bucket>(), 64);
        assert_eq!(core::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn home_is_multiply_shift() {
        assert_eq!(Index::home_of(0, 7), 0);
        assert_eq!(Index::home_of(u64::from(u32::MAX), 7), 6);
        assert_eq!(Index::home_of(1 << 31, 8), 4);
        // The high word (tag and shard bits) does not move the home bucket.
        assert_eq!(Index::home_of(0xFFFF_FFFF_0000_0000, 8), 0);
    }

    #[test]
    fn overflow_chains_grow_and_shrink() {
        let mut ix = Index::new(4);
        // 25 entries with one home bucket: 10 + 10 + 5, two buckets carry overflow counts.
        for s in 0..25u32 {
            assert!(ix.insert(h(0, s as u16), s));
        }
        for s in 0..25u32 {
            assert_eq!(ix.find(h(0, s as u16), |x| x == s), Some(s), "slot {s}");
        }
        assert_eq!(ix.probe_len(h(0, 24), 24), Some(3));
        assert_eq!(ix.probe_len(h(0, 3), 3), Some(1));
        assert_eq!(ix.buckets[0].overflow, 15);
        assert_eq!(ix.buckets[1].overflow, 5);
        // A miss walks the chain and stops at bucket 2 (overflow 0).
        assert_eq!(ix.find(h(0, 999), |_| true), None);
        for s in 10..25u32 {
            assert!(ix.remove(h(0, s as u16), s));
        }
        assert_eq!(ix.buckets[0].overflow, 0);
        assert_eq!(ix.buckets[1].overflow, 0);
        assert!(!ix.remove(h(0, 10), 10));
        assert_eq!(ix.find(h(0, 11), |_| true), None);
    }

    #[test]
    fn wraps_around_and_fills_completely() {
        let mut ix = Index::new(2);
        let last = Index::home_of(u64::from(u32::MAX), 2);
        assert_eq!(last, 1);
        for s in 0..20u32 {
            assert!(ix.insert(h(u32::MAX, s as u16), s));
        }
        assert!(!ix.insert(h(u32::MAX, 99), 99), "index full");
        assert_eq!(ix.find(h(u32::MAX, 15), |x| x == 15), Some(15));
        assert_eq!(ix.probe_len(h(u32::MAX, 15), 15), Some(2));
        ix.clear();
        assert_eq!(ix.find(h(u32::MAX, 15), |_| true), None);
    }

    #[test]
    fn equal_tags_are_told_apart_by_the_predicate() {
        let mut ix = Index::new(1);
        assert!(ix.insert(h(5, 7), 1));
        assert!(ix.insert(h(5, 7), 2));
        assert_eq!(ix.find(h(5, 7), |x| x == 2), Some(2));
        assert_eq!(ix.first_candidate(h(5, 7)), Some(1));
        assert_eq!(ix.first_candidate(h(5, 8)), None);
        assert_eq!(ix.bucket_slots(0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
