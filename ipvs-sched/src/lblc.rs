//! `lblc`: locality-based least connection (facts §6.15).
//!
//! A cache maps each packet destination address to the destination last chosen for it. On a hit the
//! entry's `lastuse` is refreshed and the cached destination is used when it is AVAILABLE, has weight > 0
//! and is not *overloaded in the lblc sense*: `active > weight` while some destination of the service has
//! `2·active < weight`. (The OVERLOAD flag is not consulted on a hit — the one path besides persistence
//! templates that may pick an OVERLOADed destination, facts §6.0.) Otherwise the flow goes to the
//! weighted-least-connection destination of the whole service (skipping OVERLOAD) and the entry is
//! created or repointed.
//!
//! # Time instead of timers
//! The kernel expires entries from a 60 s timer: every 30th run a full scan drops entries unused for
//! `lblc_expiration` (default 24 h); in between, only when the cache holds more than 16384 entries, entries
//! idle for 6 min are dropped (at most a goal's worth, continuing from a rover bucket). Here the same
//! passes run inside [`schedule`](crate::Scheduler::schedule), before the lookup: every 60 s tick that
//! has passed by `now` is replayed at its own time. The first tick is 60 s after the first `schedule`
//! call (binding carries no time). After a gap of more than 30 ticks only the last tick's pass runs, as a
//! full scan; the picks are the same, since a full scan at that time drops a superset of what the missed
//! ticks would have dropped and everything it drops would have been dropped by a full scan the kernel ran
//! within the gap or is idle for longer than the expiration anyway.
//!
//! The cache keeps [`DestId`]s: an entry whose destination left the list is treated as not AVAILABLE
//! (the kernel keeps the trashed dest, which is not AVAILABLE), and becomes usable again if a destination
//! with the same id comes back (the kernel's resurrection from the trash).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::IpAddr;

use ipvs_proto::{DestFlags, DestId, Duration, Instant};

use crate::hash::{fold_addr, hash_32};
use crate::{DestEvent, DestView, SchedConfig, SchedFlow, Scheduler};

/// `IP_VS_LBLC_TAB_BITS`: the cache has `2^10` buckets.
pub const LBLC_TABLE_BITS: u32 = 10;
/// The cache's soft size limit (`16 × buckets`) above which idle entries are dropped early.
pub const LBLC_MAX_ENTRIES: usize = 16 << LBLC_TABLE_BITS;
/// The expiry timer period (`CHECK_EXPIRE_INTERVAL`).
pub const LBLC_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Every this many timer runs the full expiration scan runs (`COUNT_FOR_FULL_EXPIRATION`).
pub const LBLC_FULL_EXPIRATION_RUNS: u32 = 30;
/// Idle time after which an entry may be dropped when the cache is over its size (`ENTRY_TIMEOUT`).
pub const LBLC_ENTRY_TIMEOUT: Duration = Duration::from_secs(6 * 60);

/// The `lblc` scheduler.
#[derive(Clone, Debug)]
pub struct Lblc {
    cache: LocalityCache<DestId>,
    index: DestIndex,
}

impl Lblc {
    /// An `lblc` scheduler with `config.lblc_expiration_ms` as the `lblc_expiration` sysctl.
    pub fn new(config: &SchedConfig) -> Self {
        Self {
            cache: LocalityCache::new(Duration::from_millis(config.lblc_expiration_ms)),
            index: DestIndex::default(),
        }
    }

    /// Number of cache entries.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// The destination cached for packet destination `addr`, if any.
    pub fn cached(&self, addr: IpAddr) -> Option<DestId> {
        self.cache.get(addr).map(|e| e.value)
    }
}

impl Scheduler for Lblc {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn bind(&mut self, dests: &[DestView]) {
        self.index.rebuild(dests);
    }

    fn dests_changed(&mut self, dests: &[DestView], _event: DestEvent) {
        self.index.rebuild(dests);
    }

    fn schedule(&mut self, now: Instant, flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        self.cache.run_timers(now);
        let daddr = flow.virt.ip();
        if let Some(en) = self.cache.get_mut(daddr) {
            en.lastuse = now;
            if let Some(i) = self.index.find(en.value, dests) {
                let d = &dests[i];
                if d.flags.contains(DestFlags::AVAILABLE) && d.weight > 0 && !lblc_overloaded(d, dests) {
                    return Some(i);
                }
            }
        }
        let i = wlc_pick(dests.iter().enumerate())?;
        let id = dests[i].id;
        match self.cache.get_mut(daddr) {
            // Same destination: the kernel keeps the entry as it is.
            Some(en) if en.value == id => {}
            Some(en) => {
                en.value = id;
                en.lastuse = now;
            }
            None => self.cache.insert(daddr, id, now),
        }
        Some(i)
    }
}

/// The lblc/lblcr "overloaded" test: `active > weight` while some destination of the service has
/// `2·active < weight`.
pub(crate) fn lblc_overloaded(d: &DestView, dests: &[DestView]) -> bool {
    d.active_conns > d.weight && dests.iter().any(|o| u64::from(o.active_conns) * 2 < u64::from(o.weight))
}

/// Weighted least connection over `(index, dest)` pairs in list order, as lblc/lblcr walk the service:
/// the first non-OVERLOADed dest with weight > 0 starts, a later non-OVERLOADed dest replaces it when
/// `oh_least × w_d > oh_d × w_least` (strict: the earlier wins ties).
pub(crate) fn wlc_pick<'a>(mut it: impl Iterator<Item = (usize, &'a DestView)>) -> Option<usize> {
    let (mut least, mut lw, mut loh) =
        it.by_ref().find(|(_, d)| d.is_schedulable()).map(|(i, d)| (i, u64::from(d.weight), d.overhead()))?;
    for (i, d) in it {
        if d.is_overloaded() {
            continue;
        }
        let (dw, doh) = (u64::from(d.weight), d.overhead());
        // Products of a u64 overhead (< 2^40) and a u32 weight fit in u128 without overflow.
        if u128::from(loh) * u128::from(dw) > u128::from(doh) * u128::from(lw) {
            (least, lw, loh) = (i, dw, doh);
        }
    }
    Some(least)
}

/// Maps [`DestId`]s to list positions (rebuilt on every list change).
#[derive(Clone, Debug, Default)]
pub(crate) struct DestIndex(BTreeMap<DestId, usize>);

impl DestIndex {
    pub(crate) fn rebuild(&mut self, dests: &[DestView]) {
        self.0.clear();
        self.0.extend(dests.iter().enumerate().map(|(i, d)| (d.id, i)));
    }

    /// The position of `id` in `dests`, checked against the list (a stale index falls back to a scan).
    pub(crate) fn find(&self, id: DestId, dests: &[DestView]) -> Option<usize> {
        match self.0.get(&id) {
            Some(&i) if dests.get(i).is_some_and(|d| d.id == id) => Some(i),
            _ => dests.iter().position(|d| d.id == id),
        }
    }
}

/// One cache entry: a packet destination address and what it maps to.
#[derive(Clone, Debug)]
pub(crate) struct CacheEntry<V> {
    pub(crate) addr: IpAddr,
    pub(crate) lastuse: Instant,
    pub(crate) value: V,
}

/// The lblc/lblcr cache: 1024 buckets by `hash_32(fold(addr), 10)`, with the kernel's expiry passes
/// driven by `now` (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct LocalityCache<V> {
    buckets: Vec<Vec<CacheEntry<V>>>,
    entries: usize,
    expiration: Duration,
    /// The next timer run; `None` until the first `run_timers`.
    next_check: Option<Instant>,
    counter: u32,
    rover: usize,
}

impl<V> LocalityCache<V> {
    pub(crate) fn new(expiration: Duration) -> Self {
        let mut buckets = Vec::new();
        buckets.resize_with(1 << LBLC_TABLE_BITS, Vec::new);
        Self { buckets, entries: 0, expiration, next_check: None, counter: 1, rover: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    fn bucket(addr: IpAddr) -> usize {
        hash_32(fold_addr(addr), LBLC_TABLE_BITS) as usize
    }

    pub(crate) fn get(&self, addr: IpAddr) -> Option<&CacheEntry<V>> {
        self.buckets[Self::bucket(addr)].iter().find(|e| e.addr == addr)
    }

    pub(crate) fn get_mut(&mut self, addr: IpAddr) -> Option<&mut CacheEntry<V>> {
        self.buckets[Self::bucket(addr)].iter_mut().find(|e| e.addr == addr)
    }

    /// Adds an entry for `addr` (which must not have one).
    pub(crate) fn insert(&mut self, addr: IpAddr, value: V, now: Instant) {
        self.buckets[Self::bucket(addr)].push(CacheEntry { addr, lastuse: now, value });
        self.entries += 1;
    }

    /// Runs every expiry timer tick due by `now`.
    pub(crate) fn run_timers(&mut self, now: Instant) {
        let Some(mut next) = self.next_check else {
            self.next_check = Some(now + LBLC_CHECK_INTERVAL);
            return;
        };
        if now < next {
            return;
        }
        let period = LBLC_CHECK_INTERVAL.total_millis();
        let missed = (now - next).total_millis() / period + 1;
        if missed > u64::from(LBLC_FULL_EXPIRATION_RUNS) {
            next += Duration::from_millis((missed - 1) * period);
            self.counter = 0;
            self.tick(next);
            next += LBLC_CHECK_INTERVAL;
        } else {
            while next <= now {
                self.tick(next);
                next += LBLC_CHECK_INTERVAL;
            }
        }
        self.next_check = Some(next);
    }

    /// One run of the kernel's expiry timer at time `t`.
    fn tick(&mut self, t: Instant) {
        if self.counter % LBLC_FULL_EXPIRATION_RUNS == 0 {
            let exp = self.expiration;
            self.sweep(|e| t >= e.lastuse + exp);
            self.counter = 1;
            return;
        }
        if self.entries <= LBLC_MAX_ENTRIES {
            self.counter += 1;
            return;
        }
        let mut goal = ((self.entries - LBLC_MAX_ENTRIES) * 4 / 3).min(LBLC_MAX_ENTRIES / 2);
        let mask = self.buckets.len() - 1;
        let mut j = self.rover;
        for _ in 0..self.buckets.len() {
            j = (j + 1) & mask;
            let before = self.buckets[j].len();
            self.buckets[j].retain(|e| t < e.lastuse + LBLC_ENTRY_TIMEOUT);
            let dropped = before - self.buckets[j].len();
            self.entries -= dropped;
            goal = goal.saturating_sub(dropped);
            if goal == 0 {
                break;
            }
        }
        self.rover = j;
    }

    fn sweep(&mut self, mut expired: impl FnMut(&CacheEntry<V>) -> bool) {
        for b in &mut self.buckets {
            let before = b.len();
            b.retain(|e| !expired(e));
            self.entries -= before - b.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::net::{Ipv4Addr, SocketAddr};

    use ipvs_proto::Protocol;
    use proptest::prelude::*;

    use super::*;

    fn dest(i: u32, weight: u32, active: u32) -> DestView {
        DestView {
            id: DestId(i),
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8)), 0),
            weight,
            last_weight: weight,
            active_conns: active,
            inactive_conns: 0,
            persist_conns: 0,
            flags: DestFlags::AVAILABLE,
        }
    }

    fn flow_to(dst: [u8; 4]) -> SchedFlow {
        SchedFlow {
            protocol: Protocol::Tcp,
            client: "10.9.0.1:40000".parse().unwrap(),
            virt: SocketAddr::new(Ipv4Addr::from(dst).into(), 80),
            fwmark: 78,
        }
    }

    fn lblc() -> Lblc {
        Lblc::new(&SchedConfig::default())
    }

    const T0: Instant = Instant::ZERO;

    #[test]
    fn miss_picks_wlc_and_hit_sticks() {
        // List C(w1, 0 active), B(w2, 0), A(w1, 0): wlc picks C (first of the zero overheads).
        let mut dests = [dest(3, 1, 0), dest(2, 2, 0), dest(1, 1, 0)];
        let mut s = lblc();
        s.bind(&dests);
        assert_eq!(s.schedule(T0, &flow_to([10, 50, 0, 1]), &dests), Some(0));
        dests[0].active_conns = 1;
        // Same packet destination: cache hit, C again although B and A are idle (1 ≤ weight 1).
        assert_eq!(s.schedule(T0, &flow_to([10, 50, 0, 1]), &dests), Some(0));
        // Another destination: a miss goes by wlc: C has 256/1, B 0/2 → B.
        assert_eq!(s.schedule(T0, &flow_to([10, 50, 0, 2]), &dests), Some(1));
        assert_eq!(s.cache_len(), 2);
    }

    #[test]
    fn overloaded_rule_needs_active_above_weight_and_an_idle_dest() {
        // C has 2 active > weight 1; B has 0·2 < 2 → C is "overloaded", the hit is replaced by wlc.
        let mut dests = [dest(3, 1, 0), dest(2, 2, 0), dest(1, 1, 0)];
        let mut s = lblc();
        s.bind(&dests);
        s.schedule(T0, &flow_to([10, 50, 0, 1]), &dests);
        dests[0].active_conns = 2;
        assert_eq!(s.schedule(T0, &flow_to([10, 50, 0, 1]), &dests), Some(1));
        assert_eq!(s.cached([10, 50, 0, 1].into()), Some(DestId(2)));
        dests[2].active_conns = 1;
        dests[1].active_conns = 5; // B: 5 > 2 but no dest has 2·active < weight → still used
        assert_eq!(s.schedule(T0, &flow_to([10, 50, 0, 1]), &dests), Some(1));
    }

    #[test]
    fn hit_ignores_the_overload_flag() {
        let mut dests = [dest(2, 1, 0), dest(1, 1, 0)];
        let mut s = lblc();
        s.bind(&dests);
        assert_eq!(s.schedule(T0, &flow_to([1, 1, 1, 1]), &dests), Some(0));
        dests[0].flags.set(DestFlags::OVERLOAD, true);
        assert_eq!(s.schedule(T0, &flow_to([1, 1, 1, 1]), &dests), Some(0));
        // But a miss skips it.
        assert_eq!(s.schedule(T0, &flow_to([1, 1, 1, 2]), &dests), Some(1));
    }

    #[test]
    fn hit_on_weight_zero_reschedules() {
        let mut dests = [dest(2, 1, 0), dest(1, 1, 0)];
        let mut s = lblc();
        s.bind(&dests);
        s.schedule(T0, &flow_to([1, 1, 1, 1]), &dests);
        dests[0].weight = 0;
        assert_eq!(s.schedule(T0, &flow_to([1, 1, 1, 1]), &dests), Some(1));
    }

    #[test]
    fn removed_dest_is_unavailable_then_revived_by_id() {
        let dests = [dest(2, 1, 0), dest(1, 1, 0)];
        let mut s = lblc();
        s.bind(&dests);
        assert_eq!(s.schedule(T0, &flow_to([1, 1, 1, 1]), &dests), Some(0));
        // Remove dest 2: the entry is stale, the hit falls back to wlc and repoints it to dest 1.
        let after = [dest(1, 1, 0)];
        s.dests_changed(&after, DestEvent::Removed { index: 0, id: DestId(2) });
        assert_eq!(s.schedule(T0, &flow_to([1, 1, 1, 1]), &after), Some(0));
        assert_eq!(s.cached([1, 1, 1, 1].into()), Some(DestId(1)));
    }

    #[test]
    fn entries_expire_on_the_full_scan() {
        let dests = [dest(2, 1, 0), dest(1, 1, 0)];
        let mut s = Lblc::new(&SchedConfig { lblc_expiration_ms: 120_000, ..SchedConfig::default() });
        s.bind(&dests);
        s.schedule(T0, &flow_to([1, 1, 1, 1]), &dests);
        // Ticks at 60 s, 120 s, …; the counter starts at 1 and counts ticks, so the 30th tick is the first
        // full scan: t = 1800 s.
        s.schedule(Instant::from_secs(1799), &flow_to([9, 9, 9, 9]), &dests);
        assert_eq!(s.cache_len(), 2);
        s.schedule(Instant::from_secs(1800), &flow_to([9, 9, 9, 9]), &dests);
        assert_eq!(s.cache_len(), 1, "1.1.1.1 idle since 0 s is dropped, 9.9.9.9 used at 1799 s stays");
        // A long gap: one full scan at the last tick drops everything idle for ≥ 120 s.
        s.schedule(Instant::from_secs(100_000), &flow_to([8, 8, 8, 8]), &dests);
        assert_eq!(s.cache_len(), 1);
        assert!(s.cached([8, 8, 8, 8].into()).is_some());
    }

    #[test]
    fn oversized_cache_drops_idle_entries_early() {
        let mut c: LocalityCache<u32> = LocalityCache::new(Duration::from_secs(24 * 3600));
        c.run_timers(T0);
        for i in 0..(LBLC_MAX_ENTRIES as u32 + 300) {
            c.insert(Ipv4Addr::from(i).into(), i, T0);
        }
        // 60 s: counter 1 → not a full scan; entries not idle 6 min yet → nothing dropped.
        c.run_timers(Instant::from_secs(60));
        assert_eq!(c.len(), LBLC_MAX_ENTRIES + 300);
        // 420 s: idle ≥ 6 min; goal = 300 × 4/3 = 400 entries, whole buckets at a time.
        c.run_timers(Instant::from_secs(420));
        assert!(c.len() <= LBLC_MAX_ENTRIES + 300 - 400, "{}", c.len());
        assert!(c.len() > LBLC_MAX_ENTRIES - 400);
    }

    #[test]
    fn wlc_pick_table() {
        // (weights, actives) → pick; strict comparison keeps the earlier dest on ties.
        let cases: &[(&[u32], &[u32], Option<usize>)] = &[
            (&[1, 1], &[0, 0], Some(0)),
            (&[1, 2], &[1, 1], Some(1)),
            (&[0, 1], &[0, 5], Some(1)),
            (&[0, 0], &[0, 0], None),
            (&[2, 1], &[2, 1], Some(0)),
        ];
        for (w, a, want) in cases {
            let dests: Vec<_> = w.iter().zip(*a).enumerate().map(|(i, (&w, &a))| dest(i as u32, w, a)).collect();
            assert_eq!(wlc_pick(dests.iter().enumerate()), *want, "weights {w:?} active {a:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Picks are never weight 0 and never OVERLOADed — except a cache hit on an OVERLOADed dest (§6.0).
        #[test]
        fn never_picks_unschedulable_except_an_overloaded_hit(
            spec in proptest::collection::vec((0_u32..4, 0_u32..6, any::<bool>()), 1..8),
            flows in proptest::collection::vec(0_u8..6, 1..30),
        ) {
            let mut dests: Vec<_> = spec.iter().enumerate().map(|(i, &(w, a, over))| {
                let mut d = dest(i as u32, w, a);
                d.flags.set(DestFlags::OVERLOAD, over);
                d
            }).collect();
            let mut s = lblc();
            s.bind(&dests);
            for (n, &f) in flows.iter().enumerate() {
                let addr = [10, 50, 0, f];
                let cached = s.cached(addr.into());
                if let Some(i) = s.schedule(Instant::from_millis(n as u64), &flow_to(addr), &dests) {
                    prop_assert!(dests[i].weight > 0);
                    if dests[i].is_overloaded() {
                        prop_assert_eq!(cached, Some(dests[i].id));
                    }
                    dests[i].active_conns += 1;
                } else {
                    prop_assert!(dests.iter().all(|d| !d.is_schedulable()));
                }
            }
        }
    }
}
