//! `dh`: destination hashing (facts §6.11).
//!
//! A fixed table of 256 buckets is filled round-robin over the destinations in list order, one bucket
//! each, weights ignored; it is rebuilt when a destination is added or removed, not when one is edited.
//! A flow goes to the bucket `hash_32(fold(packet destination address), 8)`; the bucket's destination is
//! used when it is AVAILABLE, has weight > 0 and is not OVERLOADed, else the flow is refused (no
//! fallback).

use alloc::vec;
use alloc::vec::Vec;

use ipvs_proto::{DestFlags, Instant};

use crate::hash::{fold_addr, hash_32};
use crate::{DestEvent, DestView, SchedFlow, Scheduler};

/// `IP_VS_DH_TAB_BITS`: the table has `2^8` buckets.
pub const DH_TABLE_BITS: u32 = 8;

/// Marks an empty bucket.
const NONE: u32 = u32::MAX;

/// The `dh` scheduler.
#[derive(Clone, Debug)]
pub struct Dh {
    /// Bucket → index into the destination list, or [`NONE`].
    table: Vec<u32>,
}

impl Default for Dh {
    fn default() -> Self {
        Self::new()
    }
}

impl Dh {
    /// A `dh` scheduler with the kernel's 256-bucket table (all buckets empty until bound).
    pub fn new() -> Self {
        Self { table: vec![NONE; 1 << DH_TABLE_BITS] }
    }

    /// The destination index of every bucket (`None` = empty), for tests and diagnostics.
    pub fn buckets(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.table.iter().map(|&i| (i != NONE).then_some(i as usize))
    }

    /// The bucket a packet destination address hashes to.
    pub fn bucket_of(addr: core::net::IpAddr) -> usize {
        hash_32(fold_addr(addr), DH_TABLE_BITS) as usize
    }

    fn fill(&mut self, dests: &[DestView]) {
        let n = dests.len();
        for (i, slot) in self.table.iter_mut().enumerate() {
            *slot = if n == 0 { NONE } else { (i % n) as u32 };
        }
    }
}

impl Scheduler for Dh {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn bind(&mut self, dests: &[DestView]) {
        self.fill(dests);
    }

    fn dests_changed(&mut self, dests: &[DestView], event: DestEvent) {
        // The kernel has no `upd_dest` for dh: an edit keeps the table (and list positions).
        if !matches!(event, DestEvent::Updated { .. }) {
            self.fill(dests);
        }
    }

    fn schedule(&mut self, _now: Instant, flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        let idx = self.table[Self::bucket_of(flow.virt.ip())];
        let d = dests.get(idx as usize)?;
        (d.flags.contains(DestFlags::AVAILABLE) && d.is_schedulable()).then_some(idx as usize)
    }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};

    use ipvs_proto::{DestId, Protocol};
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

    fn flow_to(dst: Ipv4Addr) -> SchedFlow {
        SchedFlow {
            protocol: Protocol::Tcp,
            client: "10.9.0.1:40000".parse().unwrap(),
            virt: SocketAddr::new(dst.into(), 80),
            fwmark: 77,
        }
    }

    #[test]
    fn fill_is_round_robin_in_list_order() {
        let dests = [dest(3, 1), dest(2, 5), dest(1, 0)];
        let mut dh = Dh::new();
        dh.bind(&dests);
        let got: Vec<_> = dh.buckets().collect();
        for (i, b) in got.iter().enumerate() {
            assert_eq!(*b, Some(i % 3), "bucket {i}");
        }
    }

    #[test]
    fn empty_service_has_empty_buckets_and_refuses() {
        let mut dh = Dh::new();
        dh.bind(&[]);
        assert!(dh.buckets().all(|b| b.is_none()));
        assert_eq!(dh.schedule(Instant::ZERO, &flow_to(Ipv4Addr::new(1, 2, 3, 4)), &[]), None);
    }

    #[test]
    fn picks_the_hashed_bucket() {
        // 10.50.1.6: hash_32(0x0A320106, 8) → bucket; with 5 dests the bucket's dest is bucket % 5.
        let dests: Vec<_> = (1..=5).rev().map(|i| dest(i, 1)).collect();
        let mut dh = Dh::new();
        dh.bind(&dests);
        let addr = Ipv4Addr::new(10, 50, 1, 6);
        let b = (0x0A32_0106_u32.wrapping_mul(0x61C8_8647) >> 24) as usize;
        assert_eq!(dh.schedule(Instant::ZERO, &flow_to(addr), &dests), Some(b % 5));
    }

    #[test]
    fn update_keeps_the_table() {
        let mut dests = [dest(2, 1), dest(1, 1)];
        let mut dh = Dh::new();
        dh.bind(&dests);
        let before: Vec<_> = dh.buckets().collect();
        dests[0].weight = 7;
        dh.dests_changed(&dests, DestEvent::Updated { index: 0 });
        assert_eq!(before, dh.buckets().collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Never picks a weight-0, OVERLOADed or unavailable destination, and always picks the hashed one
        /// otherwise.
        #[test]
        fn never_picks_unschedulable(
            spec in proptest::collection::vec((0_u32..3, any::<bool>(), any::<bool>()), 1..12),
            dst in any::<u32>(),
        ) {
            let dests: Vec<_> = spec.iter().enumerate().map(|(i, &(w, over, avail))| {
                let mut d = dest(i as u32, w);
                d.flags.set(DestFlags::OVERLOAD, over);
                d.flags.set(DestFlags::AVAILABLE, avail);
                d
            }).collect();
            let mut dh = Dh::new();
            dh.bind(&dests);
            let flow = flow_to(Ipv4Addr::from(dst));
            let want = Dh::bucket_of(flow.virt.ip()) % dests.len();
            match dh.schedule(Instant::ZERO, &flow, &dests) {
                Some(i) => {
                    prop_assert_eq!(i, want);
                    prop_assert!(dests[i].is_schedulable() && dests[i].flags.contains(DestFlags::AVAILABLE));
                }
                None => prop_assert!(!dests[want].is_schedulable()
                    || !dests[want].flags.contains(DestFlags::AVAILABLE)),
            }
        }
    }
}
