//! `ovf` — weighted overflow (facts §6.9).
//!
//! Candidates have weight > 0, no OVERLOAD and `active ≤ weight`; the candidate with the highest weight wins,
//! the first on ties. The heaviest dest fills up to `weight` active conns (it takes one more while
//! `active == weight`), then traffic overflows to the next. Only active conns count.

use crate::fo::heaviest;
use crate::{DestEvent, DestView, SchedFlow, Scheduler};
use ipvs_proto::Instant;

/// Weighted-overflow scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedOverflow;

impl Scheduler for WeightedOverflow {
    fn name(&self) -> &'static str {
        "ovf"
    }

    fn bind(&mut self, _dests: &[DestView]) {}

    fn dests_changed(&mut self, _dests: &[DestView], _event: DestEvent) {}

    fn schedule(&mut self, _now: Instant, _flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        heaviest(dests, |d| d.active_conns <= d.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{flow, list, overload, NOW};

    #[test]
    fn fills_the_heaviest_then_overflows() {
        // Weights 1, 3, 2; charge each pick one active conn.
        let mut d = list(&[(1, 0, 0), (3, 0, 0), (2, 0, 0)]);
        let mut picks = alloc::vec::Vec::new();
        while let Some(p) = WeightedOverflow.schedule(NOW, &flow(), &d) {
            picks.push(p);
            d[p].active_conns += 1;
        }
        // `active ≤ weight` admits weight + 1 conns per dest, then all are full.
        assert_eq!(picks, [1, 1, 1, 1, 2, 2, 2, 0, 0]);
    }

    #[test]
    fn ties_keep_the_first_and_inactive_is_ignored() {
        let d = list(&[(2, 0, 0), (4, 4, 1000), (4, 1, 0)]);
        assert_eq!(WeightedOverflow.schedule(NOW, &flow(), &d), Some(1));
    }

    #[test]
    fn skips_weight_0_and_overloaded() {
        let mut d = list(&[(0, 0, 0), (5, 0, 0), (1, 0, 0)]);
        overload(&mut d, 1);
        assert_eq!(WeightedOverflow.schedule(NOW, &flow(), &d), Some(2));
        overload(&mut d, 2);
        assert_eq!(WeightedOverflow.schedule(NOW, &flow(), &d), None);
    }
}
