//! `lblcr`: locality-based least connection with replication (facts §6.16).
//!
//! The cache (same shape and expiry passes as [`lblc`](crate::lblc)) maps each packet destination
//! address to a *set* of destinations, scanned most-recently-added first, with a `lastmod` time.
//!
//! - **Miss**: weighted least connection over the service; a new entry holds that one destination.
//! - **Hit**: `lastuse = now`; the candidate is the weighted-least-connection member of the set (members
//!   must be AVAILABLE, weight > 0, not OVERLOADed; the first member wins ties). Then, if the set has more
//!   than one member and `now > lastmod + expiration`, the most loaded member (highest overhead/weight
//!   among members with weight > 0) is removed — which does not refresh `lastmod`, so each later hit
//!   removes one more until one is left. If the candidate exists and is not overloaded in the lblc sense
//!   ([`lblc`](crate::lblc)), it is used; otherwise weighted least connection over the whole service
//!   picks a destination, which is added at the head of the set (if not already a member; `lastmod = now`).
//!
//! Members are [`DestId`]s. A member whose destination left the list counts as not AVAILABLE; it is not
//! considered for the most-loaded removal either (the kernel still weighs the trashed dest there with its
//! last counters, which this crate no longer sees).

use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use ipvs_proto::{DestFlags, DestId, Duration, Instant};

use crate::lblc::{lblc_overloaded, wlc_pick, DestIndex, LocalityCache};
use crate::{DestEvent, DestView, SchedConfig, SchedFlow, Scheduler};

/// The `lblcr` scheduler.
#[derive(Clone, Debug)]
pub struct Lblcr {
    cache: LocalityCache<DestSet>,
    index: DestIndex,
    expiration: Duration,
}

/// A cache entry's destination set.
#[derive(Clone, Debug)]
struct DestSet {
    /// Most recently added first.
    members: Vec<DestId>,
    lastmod: Instant,
}

impl Lblcr {
    /// An `lblcr` scheduler with `config.lblc_expiration_ms` as the `lblcr_expiration` sysctl (it
    /// governs both cache entries and set shrinking).
    pub fn new(config: &SchedConfig) -> Self {
        let expiration = Duration::from_millis(config.lblc_expiration_ms);
        Self { cache: LocalityCache::new(expiration), index: DestIndex::default(), expiration }
    }

    /// Number of cache entries.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// The set cached for packet destination `addr` (most recently added first), if any.
    pub fn members(&self, addr: IpAddr) -> Option<&[DestId]> {
        self.cache.get(addr).map(|e| e.value.members.as_slice())
    }

    /// The set's weighted-least-connection member.
    fn set_min(&self, members: &[DestId], dests: &[DestView]) -> Option<usize> {
        let it = members
            .iter()
            .filter_map(|&id| self.index.find(id, dests))
            .filter(|&i| dests[i].flags.contains(DestFlags::AVAILABLE))
            .map(|i| (i, &dests[i]));
        wlc_pick(it)
    }

    /// The set's most loaded member with weight > 0 (the first wins ties).
    fn set_max(&self, members: &[DestId], dests: &[DestView]) -> Option<DestId> {
        let mut most: Option<(DestId, u128, u128)> = None;
        for &id in members {
            let Some(i) = self.index.find(id, dests) else { continue };
            let d = &dests[i];
            if d.weight == 0 {
                continue;
            }
            let (dw, doh) = (u128::from(d.weight), u128::from(d.overhead()));
            match most {
                Some((_, mw, moh)) if moh * dw >= doh * mw => {}
                _ => most = Some((id, dw, doh)),
            }
        }
        most.map(|(id, _, _)| id)
    }
}

impl Scheduler for Lblcr {
    fn name(&self) -> &'static str {
        "lblcr"
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
        let Some(set) = self.cache.get(daddr).map(|e| &e.value) else {
            let i = wlc_pick(dests.iter().enumerate())?;
            self.cache.insert(daddr, DestSet { members: vec![dests[i].id], lastmod: now }, now);
            return Some(i);
        };
        let chosen = self.set_min(&set.members, dests);
        let shrink = (set.members.len() > 1 && now > set.lastmod + self.expiration)
            .then(|| self.set_max(&set.members, dests))
            .flatten();
        let en = self.cache.get_mut(daddr).expect("the entry was found just above");
        en.lastuse = now;
        if let Some(m) = shrink {
            if let Some(pos) = en.value.members.iter().position(|&id| id == m) {
                en.value.members.remove(pos);
            }
        }
        if let Some(i) = chosen {
            if !lblc_overloaded(&dests[i], dests) {
                return Some(i);
            }
        }
        let i = wlc_pick(dests.iter().enumerate())?;
        let id = dests[i].id;
        if !en.value.members.contains(&id) {
            en.value.members.insert(0, id);
            en.value.lastmod = now;
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::net::{Ipv4Addr, SocketAddr};

    use ipvs_proto::Protocol;
    use proptest::prelude::*;

    use super::*;

    fn dest(i: u32, weight: u32) -> DestView {
        DestView {
            id: DestId(i),
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8)), 0),
            weight,
            last_weight: weight,
            active_conns: 0,
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
            fwmark: 79,
        }
    }

    const D: [u8; 4] = [10, 50, 0, 1];

    /// Schedules and charges one active connection to the pick.
    fn pick(s: &mut Lblcr, now: Instant, dests: &mut [DestView]) -> Option<u32> {
        let i = s.schedule(now, &flow_to(D), dests)?;
        dests[i].active_conns += 1;
        Some(dests[i].id.0)
    }

    /// List C, B, A (ids 3, 2, 1), weight 1 each, all flows to one packet destination.
    fn grown() -> (Lblcr, Vec<DestView>) {
        let mut dests = vec![dest(3, 1), dest(2, 1), dest(1, 1)];
        let mut s = Lblcr::new(&SchedConfig { lblc_expiration_ms: 1000, ..SchedConfig::default() });
        s.bind(&dests);
        let t = Instant::ZERO;
        // Miss → wlc → C. Hit: C (1 active, not > weight 1). Hit: C has 2 > 1 and B is idle → wlc → B,
        // added at the head. Hit: set [B, C], B (256) beats C (512) → B. Hit: B is overloaded → wlc → A.
        let picks: Vec<_> = (0..6).map(|_| pick(&mut s, t, &mut dests).unwrap()).collect();
        assert_eq!(picks, [3, 3, 2, 2, 1, 1]);
        assert_eq!(s.members(D.into()).unwrap(), [DestId(1), DestId(2), DestId(3)]);
        (s, dests)
    }

    #[test]
    fn set_grows_at_the_head() {
        grown();
    }

    #[test]
    fn set_min_keeps_the_first_member_on_ties() {
        let (mut s, mut dests) = grown();
        // All members at 2 active: set order A, B, C → A; nobody has 2·active < weight → A is used.
        assert_eq!(pick(&mut s, Instant::ZERO, &mut dests), Some(1));
    }

    #[test]
    fn expired_set_drops_the_most_loaded_member() {
        let (mut s, mut dests) = grown();
        // Loads: C 1, B 5, A 1 active.
        dests[0].active_conns = 1;
        dests[1].active_conns = 5;
        dests[2].active_conns = 1;
        // lastmod = 0: at 1000 ms the set is not expired yet (strictly after), at 1001 ms it is.
        assert_eq!(pick(&mut s, Instant::from_millis(1000), &mut dests), Some(1));
        assert_eq!(s.members(D.into()).unwrap().len(), 3);
        dests[2].active_conns = 1;
        assert_eq!(pick(&mut s, Instant::from_millis(1001), &mut dests), Some(1));
        assert_eq!(s.members(D.into()).unwrap(), [DestId(1), DestId(3)]);
        // lastmod is not refreshed by a removal: the next hit removes again, down to one member.
        dests[2].active_conns = 1;
        pick(&mut s, Instant::from_millis(1002), &mut dests);
        assert_eq!(s.members(D.into()).unwrap().len(), 1);
    }

    #[test]
    fn overloaded_flag_members_are_skipped() {
        let (mut s, mut dests) = grown();
        // A OVERLOADed: the set's wlc skips it and takes B (first of B, C at 2 active).
        dests[2].flags.set(DestFlags::OVERLOAD, true);
        assert_eq!(pick(&mut s, Instant::ZERO, &mut dests), Some(2));
    }

    #[test]
    fn a_weight_zero_member_makes_the_set_grow() {
        let mut dests = vec![dest(2, 1), dest(1, 1)];
        let mut s = Lblcr::new(&SchedConfig::default());
        s.bind(&dests);
        assert_eq!(pick(&mut s, Instant::ZERO, &mut dests), Some(2));
        // The only member is quiesced: no candidate → wlc over the service → 1, added at the head.
        dests[0].weight = 0;
        assert_eq!(pick(&mut s, Instant::from_millis(5), &mut dests), Some(1));
        assert_eq!(s.members(D.into()).unwrap(), [DestId(1), DestId(2)]);
    }

    #[test]
    fn adding_a_member_twice_does_nothing() {
        // X (OVERLOAD flag, idle) makes A "overloaded" in the lblc sense, but wlc skips X and picks A,
        // already the set's member: no duplicate.
        let mut dests = vec![dest(2, 1), dest(1, 1)];
        dests[0].flags.set(DestFlags::OVERLOAD, true);
        let mut s = Lblcr::new(&SchedConfig::default());
        s.bind(&dests);
        let picks: Vec<_> = (0..4).map(|_| pick(&mut s, Instant::ZERO, &mut dests).unwrap()).collect();
        assert_eq!(picks, [1, 1, 1, 1]);
        assert_eq!(s.members(D.into()).unwrap(), [DestId(1)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Never picks weight 0 or OVERLOAD; sets never hold duplicates.
        #[test]
        fn invariants(
            spec in proptest::collection::vec((0_u32..4, any::<bool>()), 1..8),
            flows in proptest::collection::vec((0_u8..4, 0_u64..3000), 1..40),
        ) {
            let mut dests: Vec<_> = spec.iter().enumerate().map(|(i, &(w, over))| {
                let mut d = dest(i as u32, w);
                d.flags.set(DestFlags::OVERLOAD, over);
                d
            }).collect();
            let mut s = Lblcr::new(&SchedConfig { lblc_expiration_ms: 1000, ..SchedConfig::default() });
            s.bind(&dests);
            let mut now = 0;
            for &(f, dt) in &flows {
                now += dt;
                let addr = [10, 50, 0, f];
                match s.schedule(Instant::from_millis(now), &flow_to(addr), &dests) {
                    Some(i) => {
                        prop_assert!(dests[i].is_schedulable());
                        dests[i].active_conns += 1;
                    }
                    None => prop_assert!(dests.iter().all(|d| !d.is_schedulable())),
                }
                if let Some(m) = s.members(addr.into()) {
                    let mut sorted = m.to_vec();
                    sorted.sort();
                    sorted.dedup();
                    prop_assert_eq!(sorted.len(), m.len());
                }
            }
        }
    }
}
