//! `wrr` — weighted round robin (facts §6.3).
//!
//! State: the position `cl` (an index into the list, or the list head), the current weight `cw`, the maximum
//! weight `mw` and the decrement interval `di`:
//!
//! - `di` = gcd of the weights > 0 (1 if none); `mw = max weight − (di − 1)`, so `cw` runs `mw, mw − di, …, 1`.
//! - Binding sets `cw = mw` for the list as it is then. `ipvsadm -A` binds an **empty** list (`mw = cw = 0`),
//!   and the first `-a` of a dest with weight > 0 then sets `cw = mw = 1`: a freshly configured service starts
//!   with a round at `cw = 1` that gives every dest one pick in list order.
//! - Every add, delete or update: `cl` = head; recompute `di`, `mw`; if `cw > mw` or `cw == 0`, `cw = mw`; else
//!   if `di > 1`, `cw = (cw / di) × di + 1`.
//! - A pick continues after `cl` and takes the first dest with no OVERLOAD and `weight ≥ cw`. At the end of the
//!   list `cw −= di`, and when it drops to 0 or below a new round starts at `cw = mw`. The search fails
//!   ("all destinations are overloaded") once every dest was checked at the lowest weight (`cw ≤ di`, i.e. 1):
//!   either a full pass from the head at that weight ended (then `cl` = head and `cw = mw`), or — when the
//!   pick began after a dest with `cw` already at the lowest weight — the pass at the lowest weight of the next
//!   round reached the dest it began after again (then `cl` = that dest and `cw` stays).

use crate::{DestEvent, DestView, SchedFlow, Scheduler};
use ipvs_proto::Instant;

/// Weighted round-robin scheduler.
#[derive(Clone, Debug, Default)]
pub struct WeightedRoundRobin {
    /// Index of the last pick; `None` = the list head.
    cl: Option<usize>,
    /// Current weight.
    cw: i64,
    /// Maximum weight, reduced by `di − 1`.
    mw: i64,
    /// Decrement interval: gcd of the weights > 0.
    di: i64,
}

impl WeightedRoundRobin {
    /// A scheduler not yet bound (as if bound to an empty list).
    pub const fn new() -> Self {
        Self { cl: None, cw: 0, mw: 0, di: 1 }
    }

    /// `(position, cw, mw, di)`: the position as an index (`None` = list head) and the three weights.
    pub const fn state(&self) -> (Option<usize>, i64, i64, i64) {
        (self.cl, self.cw, self.mw, self.di)
    }

    fn recompute(&mut self, dests: &[DestView]) {
        let di = dests.iter().map(|d| u64::from(d.weight)).filter(|&w| w > 0).fold(0, gcd);
        self.di = if di == 0 { 1 } else { di as i64 };
        let max = dests.iter().map(|d| i64::from(d.weight)).max().unwrap_or(0);
        self.mw = max - (self.di - 1);
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Scheduler for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn bind(&mut self, dests: &[DestView]) {
        self.cl = None;
        self.recompute(dests);
        self.cw = self.mw;
    }

    fn dests_changed(&mut self, dests: &[DestView], _event: DestEvent) {
        self.cl = None;
        self.recompute(dests);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    fn schedule(&mut self, _now: Instant, _flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        if self.mw <= 0 {
            return None;
        }
        let n = dests.len();
        let origin = self.cl.filter(|&i| i < n);
        let mut pos = origin.map_or(0, |i| i + 1);
        let mut first_pass = true;
        // Where the pass at the lowest weight of the next round stops, when the first (partial) pass of this
        // pick was already at the lowest weight.
        let mut close_at = None;
        loop {
            let lowest = self.cw <= self.di;
            let stop = if lowest { close_at } else { None };
            for (i, d) in dests.iter().enumerate().skip(pos) {
                if !d.is_overloaded() && i64::from(d.weight) >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            // End of the list.
            if lowest {
                self.cw = self.mw;
                if !first_pass || origin.is_none() {
                    // A full pass at the lowest weight found nothing.
                    self.cl = None;
                    return None;
                }
                close_at = origin;
            } else {
                self.cw -= self.di;
            }
            first_pass = false;
            pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{flow, list, overload, NOW};
    use alloc::vec::Vec;

    fn picks(s: &mut WeightedRoundRobin, dests: &[DestView], n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| s.schedule(NOW, &flow(), dests)).collect()
    }

    /// Binds an empty list, then adds each weight at the head, as `ipvsadm -A` then `-a`… does.
    fn configured(weights_in_add_order: &[u32]) -> (WeightedRoundRobin, Vec<DestView>) {
        let mut s = WeightedRoundRobin::new();
        s.bind(&[]);
        let mut spec: Vec<(u32, u32, u32)> = Vec::new();
        for &w in weights_in_add_order {
            spec.insert(0, (w, 0, 0));
            s.dests_changed(&list(&spec), DestEvent::Added { index: 0 });
        }
        (s, list(&spec))
    }

    #[test]
    fn facts_example_c2_b3_a4() {
        let (mut s, d) = configured(&[2, 3, 4]); // list A(4), B(3), C(2)
        assert_eq!(s.state(), (None, 1, 4, 1));
        let (a, b, c) = (Some(0), Some(1), Some(2));
        assert_eq!(picks(&mut s, &d, 3), [a, b, c], "the cw = 1 start-up round");
        let cycle = [a, a, b, a, b, c, a, b, c];
        assert_eq!(picks(&mut s, &d, 9), cycle);
        assert_eq!(picks(&mut s, &d, 9), cycle);
    }

    #[test]
    fn bound_to_a_full_list_starts_at_mw() {
        let d = list(&[(4, 0, 0), (3, 0, 0), (2, 0, 0)]);
        let mut s = WeightedRoundRobin::new();
        s.bind(&d);
        assert_eq!(picks(&mut s, &d, 9), [0, 0, 1, 0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn kernel_capture_weights_4_3_2_1_0() {
        // sched-picks.tsv: weights added 4, 3, 2, 1, 0 → first picks .4 .3 .2 .1.
        let (mut s, d) = configured(&[4, 3, 2, 1, 0]); // list .5(0) .4(1) .3(2) .2(3) .1(4)
        assert_eq!(picks(&mut s, &d, 4), [1, 2, 3, 4].map(Some));
        assert_eq!(picks(&mut s, &d, 10), [4, 3, 4, 2, 3, 4, 1, 2, 3, 4].map(Some));
    }

    #[test]
    fn gcd_steps_and_cw_realignment() {
        // Weights 4 and 6: di = 2, mw = 6 − 1 = 5; cw runs 5, 3, 1.
        let (mut s, d) = configured(&[4, 6]); // list B(6), A(4)
        assert_eq!(s.state(), (None, 1, 5, 2));
        assert_eq!(picks(&mut s, &d, 2), [Some(0), Some(1)]);
        assert_eq!(picks(&mut s, &d, 5), [0, 0, 1, 0, 1].map(Some));
        // An update with cw = 3, di = 2: cw = (3 / 2) × 2 + 1 = 3, position back to the head.
        s.schedule(NOW, &flow(), &d);
        assert_eq!(s.state(), (Some(0), 5, 5, 2));
        s.schedule(NOW, &flow(), &d);
        assert_eq!(s.state(), (Some(0), 3, 5, 2));
        s.dests_changed(&d, DestEvent::Updated { index: 0 });
        assert_eq!(s.state(), (None, 3, 5, 2));
    }

    #[test]
    fn weight_0_only_and_empty_give_none() {
        let (mut s, d) = configured(&[0, 0]);
        assert_eq!(s.state(), (None, 0, 0, 1));
        assert_eq!(picks(&mut s, &d, 2), [None, None]);
        let mut s = WeightedRoundRobin::new();
        s.bind(&[]);
        assert_eq!(s.schedule(NOW, &flow(), &[]), None);
    }

    #[test]
    fn skips_overloaded_and_fails_when_all_are() {
        let (mut s, mut d) = configured(&[1, 2, 3]); // list C(3), B(2), A(1)
        overload(&mut d, 0);
        assert_eq!(picks(&mut s, &d, 2), [Some(1), Some(2)]);
        assert_eq!(picks(&mut s, &d, 3), [1, 1, 2].map(Some));
        overload(&mut d, 1);
        overload(&mut d, 2);
        assert_eq!(s.schedule(NOW, &flow(), &d), None);
        assert_eq!(s.state(), (Some(2), 1, 3, 1), "stopped at the dest it began after, cw = 1");
        assert_eq!(s.schedule(NOW, &flow(), &d), None);
        // From the head: a full pass at cw = 1, then cw = mw.
        s.dests_changed(&d, DestEvent::Updated { index: 0 });
        assert_eq!(s.schedule(NOW, &flow(), &d), None);
        assert_eq!(s.state(), (None, 3, 3, 1));
    }

    #[test]
    fn delete_resets_to_head_and_keeps_cw() {
        let (mut s, d) = configured(&[1, 2, 3]);
        picks(&mut s, &d, 4); // cw = 1 round, then C at cw = 3
        assert_eq!(s.state(), (Some(0), 3, 3, 1));
        let d2 = list(&[(3, 0, 0), (2, 0, 0)]);
        s.dests_changed(&d2, DestEvent::Removed { index: 2, id: d[2].id });
        assert_eq!(s.state(), (None, 3, 3, 1));
        assert_eq!(picks(&mut s, &d2, 4), [0, 0, 1, 0].map(Some));
    }
}
