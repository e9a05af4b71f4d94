//! `sh`: source hashing (facts §6.12).
//!
//! A table of `2^bits` buckets (the kernel's `IP_VS_SH_TAB_BITS`, default 8) is tiled by weight: walking
//! the buckets in order, the current destination (list order, cyclic) takes `weight` consecutive buckets
//! (a weight-0 destination still takes one) before the next one's turn. It is rebuilt on every add, edit
//! and removal. A flow goes to bucket `hash_32(port + fold(client address), bits)`, where `port` is the
//! client's source port with `sh-port` (`SCHED2`) and 0 otherwise. The bucket's destination is used when
//! it has weight > 0 and is not OVERLOADed (the AVAILABLE flag is not checked, as in the kernel).
//! Otherwise, without `sh-fallback` (`SCHED1`) the flow is refused; with it, the buckets
//! `(offset + 2·ihash) mod SIZE` are probed for `offset = 0..SIZE` and the first usable destination wins
//! (an empty bucket aborts).

use alloc::vec;
use alloc::vec::Vec;

use ipvs_proto::{Instant, Protocol, ServiceFlags};

use crate::hash::{fold_addr, hash_32};
use crate::{DestEvent, DestView, SchedConfig, SchedFlow, Scheduler};

/// The kernel's default table bits (`CONFIG_IP_VS_SH_TAB_BITS`).
pub const SH_DEFAULT_TABLE_BITS: u32 = 8;
/// The smallest table bits the kernel's Kconfig allows.
pub const SH_MIN_TABLE_BITS: u32 = 4;
/// The largest table bits the kernel's Kconfig allows.
pub const SH_MAX_TABLE_BITS: u32 = 20;

/// Marks an empty bucket.
const NONE: u32 = u32::MAX;

/// The `sh` scheduler.
#[derive(Clone, Debug)]
pub struct Sh {
    bits: u32,
    fallback: bool,
    port: bool,
    /// Bucket → index into the destination list, or [`NONE`].
    table: Vec<u32>,
}

impl Sh {
    /// An `sh` scheduler with `config.sh_table_bits` (clamped to the kernel's range
    /// [`SH_MIN_TABLE_BITS`]`..=`[`SH_MAX_TABLE_BITS`]), `sh-fallback` from `SCHED1` and `sh-port` from
    /// `SCHED2` of `config.flags`.
    pub fn new(config: &SchedConfig) -> Self {
        let bits = config.sh_table_bits.clamp(SH_MIN_TABLE_BITS, SH_MAX_TABLE_BITS);
        Self {
            bits,
            fallback: config.flags.contains(ServiceFlags::SCHED1),
            port: config.flags.contains(ServiceFlags::SCHED2),
            table: vec![NONE; 1 << bits],
        }
    }

    /// The table bits in use.
    pub const fn table_bits(&self) -> u32 {
        self.bits
    }

    /// The destination index of every bucket (`None` = empty), for tests and diagnostics.
    pub fn buckets(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.table.iter().map(|&i| (i != NONE).then_some(i as usize))
    }

    fn mask(&self) -> u32 {
        (1 << self.bits) - 1
    }

    /// The kernel's `ip_vs_sh_hashkey`: `(offset + hash_32(port + fold(addr), bits)) & mask`.
    fn hash_key(&self, flow: &SchedFlow, offset: u32) -> u32 {
        let port = if self.port { hashed_port(flow) } else { 0 };
        let v = u32::from(port).wrapping_add(fold_addr(flow.client.ip()));
        offset.wrapping_add(hash_32(v, self.bits)) & self.mask()
    }

    fn fill(&mut self, dests: &[DestView]) {
        if dests.is_empty() {
            self.table.fill(NONE);
            return;
        }
        let (mut cur, mut taken) = (0_usize, 0_u32);
        for slot in &mut self.table {
            *slot = cur as u32;
            taken += 1;
            if taken >= dests[cur].weight {
                cur = (cur + 1) % dests.len();
                taken = 0;
            }
        }
    }

    fn usable(dests: &[DestView], idx: u32) -> bool {
        dests.get(idx as usize).is_some_and(DestView::is_schedulable)
    }
}

/// The client port `sh-port`/`mh-port` hash: the source port for TCP, UDP and SCTP, else 0.
pub(crate) fn hashed_port(flow: &SchedFlow) -> u16 {
    match flow.protocol {
        Protocol::Tcp | Protocol::Udp | Protocol::Sctp => flow.client.port(),
        _ => 0,
    }
}

impl Scheduler for Sh {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn bind(&mut self, dests: &[DestView]) {
        self.fill(dests);
    }

    fn dests_changed(&mut self, dests: &[DestView], _event: DestEvent) {
        self.fill(dests);
    }

    fn schedule(&mut self, _now: Instant, flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        let ihash = self.hash_key(flow, 0);
        let first = self.table[ihash as usize];
        if Self::usable(dests, first) {
            return Some(first as usize);
        }
        if !self.fallback || first == NONE {
            return None;
        }
        let size = 1_u32 << self.bits;
        for offset in 0..size {
            let roffset = (offset + ihash) % size;
            let idx = self.table[self.hash_key(flow, roffset) as usize];
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

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};

    use ipvs_proto::{DestFlags, DestId};
    use proptest::prelude::*;

    use super::*;

    fn dest(i: u32, weight: u32) -> DestView {
        DestView {
            id: DestId(i),
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8)), 8080),
            weight,
            last_weight: weight,
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
            flags: DestFlags::AVAILABLE,
        }
    }

    fn flow_from(client: SocketAddr) -> SchedFlow {
        SchedFlow { protocol: Protocol::Tcp, client, virt: "10.0.2.100:80".parse().unwrap(), fwmark: 0 }
    }

    fn sh(flags: ServiceFlags) -> Sh {
        Sh::new(&SchedConfig { flags, ..SchedConfig::default() })
    }

    #[test]
    fn tiling_follows_weights_x_x_y() {
        let dests = [dest(1, 2), dest(2, 1)];
        let mut s = sh(ServiceFlags::EMPTY);
        s.bind(&dests);
        let got: Vec<_> = s.buckets().take(7).map(Option::unwrap).collect();
        assert_eq!(got, [0, 0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn weight_zero_still_takes_one_bucket() {
        let dests = [dest(1, 0), dest(2, 3)];
        let mut s = sh(ServiceFlags::EMPTY);
        s.bind(&dests);
        let got: Vec<_> = s.buckets().take(8).map(Option::unwrap).collect();
        assert_eq!(got, [0, 1, 1, 1, 0, 1, 1, 1]);
    }

    #[test]
    fn late_dests_starve_when_weights_exceed_the_table() {
        let dests = [dest(1, 300), dest(2, 1)];
        let mut s = sh(ServiceFlags::EMPTY);
        s.bind(&dests);
        assert!(s.buckets().all(|b| b == Some(0)));
    }

    #[test]
    fn table_bits_are_clamped() {
        assert_eq!(Sh::new(&SchedConfig { sh_table_bits: 1, ..SchedConfig::default() }).table_bits(), 4);
        assert_eq!(Sh::new(&SchedConfig { sh_table_bits: 30, ..SchedConfig::default() }).table_bits(), 20);
        assert_eq!(Sh::new(&SchedConfig { sh_table_bits: 12, ..SchedConfig::default() }).buckets().count(), 4096);
    }

    #[test]
    fn primary_bucket_is_hash_32_of_port_plus_address() {
        let dests: Vec<_> = (1..=5).rev().map(|i| dest(i, 1)).collect();
        let client: SocketAddr = "10.9.0.8:40001".parse().unwrap();
        for (flags, port) in [(ServiceFlags::EMPTY, 0_u32), (ServiceFlags::SCHED2, 40001)] {
            let mut s = sh(flags);
            s.bind(&dests);
            let b = (0x0A09_0008_u32 + port).wrapping_mul(0x61C8_8647) >> 24;
            assert_eq!(s.schedule(Instant::ZERO, &flow_from(client), &dests), Some(b as usize % 5));
        }
    }

    #[test]
    fn fallback_probes_offset_plus_twice_ihash() {
        // List A(w1) B(w0): buckets A B A B …; a client hashing to a B bucket is refused without fallback
        // and, with it, goes to the first A bucket on the (offset + 2·ihash) probe sequence.
        let dests = [dest(1, 1), dest(2, 0)];
        let client = (0..=255_u8)
            .map(|i| SocketAddr::new(Ipv4Addr::new(10, 9, 0, i).into(), 1))
            .find(|c| hash_32(fold_addr(c.ip()), 8) % 2 == 1)
            .unwrap();
        let mut plain = sh(ServiceFlags::EMPTY);
        plain.bind(&dests);
        assert_eq!(plain.schedule(Instant::ZERO, &flow_from(client), &dests), None);
        let mut fb = sh(ServiceFlags::SCHED1);
        fb.bind(&dests);
        let ihash = hash_32(fold_addr(client.ip()), 8);
        let want = (0..256).map(|o| (o + 2 * ihash) % 256).find(|b| b % 2 == 0).unwrap();
        assert_eq!(fb.schedule(Instant::ZERO, &flow_from(client), &dests), Some(want as usize % 2));
    }

    #[test]
    fn port_is_ignored_for_other_protocols() {
        let dests: Vec<_> = (1..=5).map(|i| dest(i, 1)).collect();
        let mut s = sh(ServiceFlags::SCHED2);
        s.bind(&dests);
        let mut f = flow_from("10.9.0.8:1".parse().unwrap());
        f.protocol = Protocol::Icmp;
        let a = s.schedule(Instant::ZERO, &f, &dests);
        f.client.set_port(2);
        assert_eq!(a, s.schedule(Instant::ZERO, &f, &dests));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Never picks weight 0 or OVERLOAD; without fallback picks exactly the bucket's dest; with
        /// fallback refuses only when no dest is usable.
        #[test]
        fn picks_only_schedulable(
            spec in proptest::collection::vec((0_u32..4, any::<bool>()), 1..10),
            client in any::<u32>(),
            cport in any::<u16>(),
            flags in 0_u32..4,
        ) {
            let dests: Vec<_> = spec.iter().enumerate().map(|(i, &(w, over))| {
                let mut d = dest(i as u32, w);
                d.flags.set(DestFlags::OVERLOAD, over);
                d
            }).collect();
            let mut s = sh(ServiceFlags(flags << 3));
            s.bind(&dests);
            let flow = flow_from(SocketAddr::new(Ipv4Addr::from(client).into(), cport));
            let got = s.schedule(Instant::ZERO, &flow, &dests);
            if let Some(i) = got {
                prop_assert!(dests[i].is_schedulable());
            }
            if flags & 1 == 1 {
                let any_usable = s.buckets().flatten().any(|i| dests[i].is_schedulable());
                // The probe sequence (offset + 2·ihash) visits every bucket when the table is a power of
                // two, so fallback fails only when no bucket holds a usable destination.
                prop_assert_eq!(got.is_some(), any_usable);
            }
        }
    }
}
