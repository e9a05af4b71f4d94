//! The per-destination state the engine keeps: weights, connection counters and the OVERLOAD rule.
//!
//! [`DestState`] holds what the kernel keeps in `struct ip_vs_dest` for scheduling (facts §2.2) and applies
//! the threshold rules of facts §7 and §4.6:
//!
//! - **bind** (a conn or template is attached): the counter is incremented first, then, if `u_threshold ≠ 0`
//!   and `active + inactive ≥ u_threshold`, OVERLOAD is set. So `-x N` admits exactly N conns.
//! - **unbind** (a conn or template is freed): the counter is decremented first, then OVERLOAD is cleared when
//!   `total < l_threshold` (l ≠ 0), else when `4·total < 3·u_threshold` (u ≠ 0), else unconditionally.
//! - **active ↔ inactive**: the counters move, no threshold test.
//! - **edit of the thresholds**: OVERLOAD is cleared at once if the new `u_threshold` is 0 or larger than the
//!   old one; `l_threshold > u_threshold` is rejected ([`ThresholdRange`], the kernel's `ERANGE`).
//!
//! Persistence templates count in `persist_conns`, never in the threshold total.
//!
//! After any change the engine passes the new [`DestView`] to the scheduler: a counter change through
//! [`Scheduler::counters_changed`](crate::Scheduler::counters_changed), a weight or threshold edit through
//! [`Scheduler::dests_changed`](crate::Scheduler::dests_changed) with [`DestEvent::Updated`](crate::DestEvent).

use core::fmt;
use core::net::SocketAddr;

use ipvs_proto::{DestFlags, DestId};

use crate::DestView;

/// Thresholds with `l_threshold > u_threshold` (the kernel's `ERANGE`; so a lower threshold needs an upper one).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ThresholdRange;

impl fmt::Display for ThresholdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("lower connection threshold above the upper threshold")
    }
}

impl core::error::Error for ThresholdRange {}

/// The scheduling state of one destination: weights, connection counters, thresholds and flags.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct DestState {
    /// Current weight; 0 = quiescent.
    pub weight: u32,
    /// The weight given at the last add, or at the last edit to a non-zero weight (facts §2.2).
    pub last_weight: u32,
    /// Connections counted as active.
    pub active_conns: u32,
    /// Connections counted as inactive.
    pub inactive_conns: u32,
    /// Persistence templates bound to the destination.
    pub persist_conns: u32,
    /// Upper connection threshold (`-x`); 0 = off.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`); 0 = the default (3/4 of the upper one).
    pub l_threshold: u32,
    /// `AVAILABLE` and `OVERLOAD`.
    pub flags: DestFlags,
}

impl DestState {
    /// A newly added destination (`ipvsadm -a`): `last_weight = weight` (even 0), no connections, AVAILABLE.
    ///
    /// # Errors
    /// [`ThresholdRange`] if `l_threshold > u_threshold`.
    pub fn new(weight: u32, u_threshold: u32, l_threshold: u32) -> Result<Self, ThresholdRange> {
        check_thresholds(u_threshold, l_threshold)?;
        Ok(Self {
            weight,
            last_weight: weight,
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
            u_threshold,
            l_threshold,
            flags: DestFlags::AVAILABLE,
        })
    }

    /// A destination re-added from the trash (facts §2.3): counters kept, `last_weight = weight` (even 0),
    /// thresholds by the edit rule, AVAILABLE again.
    ///
    /// # Errors
    /// [`ThresholdRange`] if `l_threshold > u_threshold`; nothing is changed then.
    pub fn revive(&mut self, weight: u32, u_threshold: u32, l_threshold: u32) -> Result<(), ThresholdRange> {
        self.set_thresholds(u_threshold, l_threshold)?;
        self.weight = weight;
        self.last_weight = weight;
        self.flags.set(DestFlags::AVAILABLE, true);
        Ok(())
    }

    /// An edit (`ipvsadm -e`) of weight and thresholds: [`set_thresholds`](Self::set_thresholds) then
    /// [`set_weight`](Self::set_weight).
    ///
    /// # Errors
    /// [`ThresholdRange`] if `l_threshold > u_threshold`; nothing is changed then.
    pub fn edit(&mut self, weight: u32, u_threshold: u32, l_threshold: u32) -> Result<(), ThresholdRange> {
        self.set_thresholds(u_threshold, l_threshold)?;
        self.set_weight(weight);
        Ok(())
    }

    /// Edits the weight; `last_weight` follows unless the new weight is 0.
    pub fn set_weight(&mut self, weight: u32) {
        self.weight = weight;
        if weight != 0 {
            self.last_weight = weight;
        }
    }

    /// Edits the thresholds. OVERLOAD is cleared at once if the new upper threshold is 0 or larger than the
    /// old one.
    ///
    /// # Errors
    /// [`ThresholdRange`] if `l_threshold > u_threshold`; nothing is changed then.
    pub fn set_thresholds(&mut self, u_threshold: u32, l_threshold: u32) -> Result<(), ThresholdRange> {
        check_thresholds(u_threshold, l_threshold)?;
        if u_threshold == 0 || u_threshold > self.u_threshold {
            self.flags.set(DestFlags::OVERLOAD, false);
        }
        self.u_threshold = u_threshold;
        self.l_threshold = l_threshold;
        Ok(())
    }

    /// Clears AVAILABLE: the destination was deleted and moves to the trash.
    pub fn unlink(&mut self) {
        self.flags.set(DestFlags::AVAILABLE, false);
    }

    /// `active + inactive`: the total the thresholds are tested against (templates not included).
    pub const fn total_conns(&self) -> u64 {
        self.active_conns as u64 + self.inactive_conns as u64
    }

    /// Whether OVERLOAD is set.
    pub const fn is_overloaded(&self) -> bool {
        self.flags.contains(DestFlags::OVERLOAD)
    }

    /// A connection was bound, counted as active or inactive (new local conns start inactive); then the
    /// upper-threshold test.
    pub fn bind_conn(&mut self, active: bool) {
        if active {
            self.active_conns = self.active_conns.saturating_add(1);
        } else {
            self.inactive_conns = self.inactive_conns.saturating_add(1);
        }
        self.check_upper();
    }

    /// A persistence template was bound; then the upper-threshold test (on the conn total, templates excluded).
    pub fn bind_template(&mut self) {
        self.persist_conns = self.persist_conns.saturating_add(1);
        self.check_upper();
    }

    /// A connection counted as active (`was_active`) or inactive was freed; then the lower-threshold rule.
    pub fn unbind_conn(&mut self, was_active: bool) {
        if was_active {
            self.active_conns = dec(self.active_conns);
        } else {
            self.inactive_conns = dec(self.inactive_conns);
        }
        self.check_lower();
    }

    /// A persistence template was freed; then the lower-threshold rule.
    pub fn unbind_template(&mut self) {
        self.persist_conns = dec(self.persist_conns);
        self.check_lower();
    }

    /// A connection moved from inactive to active (no threshold test).
    pub fn conn_became_active(&mut self) {
        self.inactive_conns = dec(self.inactive_conns);
        self.active_conns = self.active_conns.saturating_add(1);
    }

    /// A connection moved from active to inactive (no threshold test).
    pub fn conn_became_inactive(&mut self) {
        self.active_conns = dec(self.active_conns);
        self.inactive_conns = self.inactive_conns.saturating_add(1);
    }

    /// What a scheduler sees of this destination.
    pub const fn view(&self, id: DestId, addr: SocketAddr) -> DestView {
        DestView {
            id,
            addr,
            weight: self.weight,
            last_weight: self.last_weight,
            active_conns: self.active_conns,
            inactive_conns: self.inactive_conns,
            persist_conns: self.persist_conns,
            flags: self.flags,
        }
    }

    fn check_upper(&mut self) {
        if self.u_threshold != 0 && self.total_conns() >= u64::from(self.u_threshold) {
            self.flags.set(DestFlags::OVERLOAD, true);
        }
    }

    fn check_lower(&mut self) {
        let total = self.total_conns();
        let clear = if self.l_threshold != 0 {
            total < u64::from(self.l_threshold)
        } else if self.u_threshold != 0 {
            total * 4 < u64::from(self.u_threshold) * 3
        } else {
            true
        };
        if clear {
            self.flags.set(DestFlags::OVERLOAD, false);
        }
    }
}

fn check_thresholds(u_threshold: u32, l_threshold: u32) -> Result<(), ThresholdRange> {
    if l_threshold > u_threshold {
        Err(ThresholdRange)
    } else {
        Ok(())
    }
}

fn dec(counter: u32) -> u32 {
    debug_assert!(counter > 0, "connection counter underflow");
    counter.saturating_sub(1)
}

/// Helpers for the unit tests of the schedulers.
#[cfg(test)]
pub(crate) mod test_support {
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};

    use ipvs_proto::{DestFlags, DestId, Instant, Protocol};

    use crate::{DestView, SchedFlow};

    pub(crate) const NOW: Instant = Instant::ZERO;

    pub(crate) fn flow() -> SchedFlow {
        SchedFlow {
            protocol: Protocol::Tcp,
            client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000),
            virt: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)), 80),
            fwmark: 0,
        }
    }

    /// One dest per `(weight, active, inactive)`, in list order, ids 0.., AVAILABLE.
    pub(crate) fn list(spec: &[(u32, u32, u32)]) -> Vec<DestView> {
        spec.iter()
            .enumerate()
            .map(|(i, &(weight, active, inactive))| DestView {
                id: DestId(i as u32),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8)), 8080),
                weight,
                last_weight: weight,
                active_conns: active,
                inactive_conns: inactive,
                persist_conns: 0,
                flags: DestFlags::AVAILABLE,
            })
            .collect()
    }

    /// Sets OVERLOAD on `dests[i]`.
    pub(crate) fn overload(dests: &mut [DestView], i: usize) {
        dests[i].flags.set(DestFlags::OVERLOAD, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(u: u32, l: u32) -> DestState {
        DestState::new(1, u, l).unwrap()
    }

    #[test]
    fn new_dest_is_available_and_keeps_weight_0_as_last_weight() {
        let d = DestState::new(0, 0, 0).unwrap();
        assert_eq!(d.flags, DestFlags::AVAILABLE);
        assert_eq!((d.weight, d.last_weight), (0, 0));
        let d = DestState::new(7, 0, 0).unwrap();
        assert_eq!((d.weight, d.last_weight), (7, 7));
    }

    #[test]
    fn edit_to_weight_0_keeps_last_weight() {
        let mut d = DestState::new(5, 0, 0).unwrap();
        d.set_weight(0);
        assert_eq!((d.weight, d.last_weight), (0, 5));
        d.set_weight(3);
        assert_eq!((d.weight, d.last_weight), (3, 3));
    }

    #[test]
    fn revive_sets_last_weight_even_to_0_and_keeps_counters() {
        let mut d = DestState::new(5, 0, 0).unwrap();
        d.bind_conn(true);
        d.unlink();
        assert!(!d.flags.contains(DestFlags::AVAILABLE));
        d.revive(0, 0, 0).unwrap();
        assert_eq!((d.weight, d.last_weight, d.active_conns), (0, 0, 1));
        assert!(d.flags.contains(DestFlags::AVAILABLE));
    }

    #[test]
    fn thresholds_reject_lower_above_upper() {
        assert_eq!(DestState::new(1, 0, 1), Err(ThresholdRange));
        assert_eq!(DestState::new(1, 5, 6), Err(ThresholdRange));
        assert!(DestState::new(1, 5, 5).is_ok());
        let mut d = dest(5, 2);
        assert_eq!(d.set_thresholds(3, 4), Err(ThresholdRange));
        assert_eq!((d.u_threshold, d.l_threshold), (5, 2));
        assert_eq!(d.edit(9, 0, 1), Err(ThresholdRange));
        assert_eq!(d.weight, 1);
    }

    #[test]
    fn bind_overloads_at_the_upper_threshold() {
        let mut d = dest(3, 0);
        d.bind_conn(false);
        d.bind_conn(true);
        assert!(!d.is_overloaded());
        d.bind_conn(false);
        assert!(d.is_overloaded(), "the N-th conn overloads with -x N");
    }

    #[test]
    fn bind_without_upper_threshold_never_overloads() {
        let mut d = dest(0, 0);
        for _ in 0..1000 {
            d.bind_conn(true);
        }
        assert!(!d.is_overloaded());
    }

    #[test]
    fn templates_do_not_count_but_trigger_the_test() {
        let mut d = dest(2, 0);
        d.bind_template();
        d.bind_template();
        assert!(!d.is_overloaded());
        assert_eq!(d.persist_conns, 2);
        d.bind_conn(true);
        assert!(!d.is_overloaded());
        // The conn total (1 active + 1 inactive) reaches 2 only with a conn; a template bound later re-tests.
        d.inactive_conns += 1;
        assert!(!d.is_overloaded());
        d.bind_template();
        assert!(d.is_overloaded());
    }

    #[test]
    fn unbind_clears_below_lower_threshold() {
        let mut d = dest(4, 2);
        for _ in 0..4 {
            d.bind_conn(true);
        }
        assert!(d.is_overloaded());
        d.unbind_conn(true); // 3
        d.unbind_conn(true); // 2: not < 2
        assert!(d.is_overloaded());
        d.unbind_conn(true); // 1 < 2
        assert!(!d.is_overloaded());
    }

    #[test]
    fn unbind_clears_below_three_quarters_of_upper_without_lower() {
        let mut d = dest(8, 0);
        for _ in 0..8 {
            d.bind_conn(false);
        }
        assert!(d.is_overloaded());
        d.unbind_conn(false); // 7: 28 < 24? no
        d.unbind_conn(false); // 6: 24 < 24? no
        assert!(d.is_overloaded());
        d.unbind_conn(false); // 5: 20 < 24
        assert!(!d.is_overloaded());
    }

    #[test]
    fn unbind_clears_unconditionally_without_thresholds() {
        let mut d = dest(0, 0);
        d.bind_conn(true);
        d.bind_conn(true);
        d.flags.set(DestFlags::OVERLOAD, true);
        d.unbind_conn(true);
        assert!(!d.is_overloaded());
    }

    #[test]
    fn unbind_template_applies_the_lower_rule() {
        let mut d = dest(2, 1);
        d.bind_template();
        d.bind_conn(true);
        d.bind_conn(true);
        assert!(d.is_overloaded());
        d.unbind_template(); // total 2, not < 1
        assert!(d.is_overloaded());
        d.unbind_conn(true);
        d.unbind_conn(true); // total 0 < 1
        assert!(!d.is_overloaded());
        assert_eq!(d.persist_conns, 0);
    }

    #[test]
    fn active_inactive_moves_do_not_test_thresholds() {
        let mut d = dest(2, 0);
        d.bind_conn(false);
        d.bind_conn(false);
        assert!(d.is_overloaded());
        d.conn_became_active();
        assert_eq!((d.active_conns, d.inactive_conns), (1, 1));
        assert!(d.is_overloaded());
        d.conn_became_inactive();
        assert_eq!((d.active_conns, d.inactive_conns), (0, 2));
        assert!(d.is_overloaded());
        let mut d = dest(0, 0);
        d.bind_conn(false);
        d.flags.set(DestFlags::OVERLOAD, true);
        d.conn_became_active();
        assert!(d.is_overloaded(), "no lower test on a state change");
    }

    #[test]
    fn threshold_edit_clears_overload_when_upper_is_0_or_raised() {
        let over = |u| {
            let mut d = dest(u, 0);
            for _ in 0..u {
                d.bind_conn(true);
            }
            assert!(d.is_overloaded());
            d
        };
        let mut d = over(4);
        d.set_thresholds(4, 0).unwrap();
        assert!(d.is_overloaded(), "same upper keeps OVERLOAD");
        d.set_thresholds(3, 0).unwrap();
        assert!(d.is_overloaded(), "lower upper keeps OVERLOAD");
        d.set_thresholds(5, 0).unwrap();
        assert!(!d.is_overloaded(), "raised upper clears");
        let mut d = over(4);
        d.set_thresholds(0, 0).unwrap();
        assert!(!d.is_overloaded(), "upper 0 clears");
    }

    #[test]
    fn view_copies_the_state() {
        let mut d = DestState::new(3, 0, 0).unwrap();
        d.bind_conn(true);
        d.bind_conn(false);
        d.bind_template();
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v = d.view(DestId(7), addr);
        assert_eq!(v.id, DestId(7));
        assert_eq!(v.addr, addr);
        assert_eq!((v.weight, v.last_weight, v.active_conns, v.inactive_conns, v.persist_conns), (3, 3, 1, 1, 1));
        assert_eq!(v.overhead(), 257);
        assert!(v.is_schedulable());
    }
}
