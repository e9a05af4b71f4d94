//! `fo` — weighted failover (facts §6.8).
//!
//! The dest with the highest weight among those with weight > 0 and no OVERLOAD; a strictly greater weight
//! replaces, so the first wins ties. All traffic goes to one dest until it is lowered or overloads.

use crate::{DestEvent, DestView, SchedFlow, Scheduler};
use ipvs_proto::Instant;

/// Weighted-failover scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedFailover;

/// The highest weight among dests passing `eligible` (weight > 0 and no OVERLOAD are also required); the
/// first wins ties.
pub(crate) fn heaviest(dests: &[DestView], eligible: impl Fn(&DestView) -> bool) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.is_schedulable() && eligible(d) && best.is_none_or(|(_, w)| d.weight > w) {
            best = Some((i, d.weight));
        }
    }
    best.map(|(i, _)| i)
}

impl Scheduler for WeightedFailover {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn bind(&mut self, _dests: &[DestView]) {}

    fn dests_changed(&mut self, _dests: &[DestView], _event: DestEvent) {}

    fn schedule(&mut self, _now: Instant, _flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        heaviest(dests, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{flow, list, overload, NOW};

    #[test]
    fn highest_weight_first_wins_ties_load_ignored() {
        let d = list(&[(1, 0, 0), (3, 100, 0), (3, 0, 0), (2, 0, 0)]);
        assert_eq!(WeightedFailover.schedule(NOW, &flow(), &d), Some(1));
    }

    #[test]
    fn fails_over_when_overloaded() {
        let mut d = list(&[(1, 0, 0), (3, 0, 0), (2, 0, 0), (0, 0, 0)]);
        overload(&mut d, 1);
        assert_eq!(WeightedFailover.schedule(NOW, &flow(), &d), Some(2));
        overload(&mut d, 2);
        assert_eq!(WeightedFailover.schedule(NOW, &flow(), &d), Some(0));
        overload(&mut d, 0);
        assert_eq!(WeightedFailover.schedule(NOW, &flow(), &d), None, "weight 0 never");
    }
}
