//! `wlc` — weighted least connection, ipvsadm's default (facts §6.5).
//!
//! `least` is the first dest with weight > 0 and no OVERLOAD; each later dest `d` without OVERLOAD replaces it
//! if `oh_least × w_d > oh_d × w_least` (`oh = active × 256 + inactive`; strict, so the first wins ties, and a
//! weight-0 dest can never win). Large lists use the O(log n) index of [`crate::fastlc`].

use crate::fastlc::{least_conn_scheduler, Metric};
use crate::DestView;

least_conn_scheduler! {
    /// Weighted least-connection scheduler.
    WeightedLeastConnection, Metric::Wlc
}

/// The O(n) reference: the kernel's scan.
pub fn wlc_scan(dests: &[DestView]) -> Option<usize> {
    weighted_scan(dests, DestView::overhead)
}

/// The scan shared by `wlc` and `sed`: `load` is the numerator of the load-per-weight ratio.
pub(crate) fn weighted_scan(dests: &[DestView], load: impl Fn(&DestView) -> u64) -> Option<usize> {
    let first = dests.iter().position(DestView::is_schedulable)?;
    let (mut least, mut loh) = (first, load(&dests[first]));
    for (i, d) in dests.iter().enumerate().skip(first + 1) {
        if d.is_overloaded() {
            continue;
        }
        let doh = load(d);
        if u128::from(loh) * u128::from(d.weight) > u128::from(doh) * u128::from(dests[least].weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{list, overload};

    #[test]
    fn minimum_overhead_per_weight() {
        // Ratios 512/2 = 256, 300/1, 600/3 = 200, 1000/5 = 200: index 2 (first of the tie).
        let d = list(&[(2, 2, 0), (1, 1, 44), (3, 2, 88), (5, 3, 232)]);
        assert_eq!(wlc_scan(&d), Some(2));
    }

    #[test]
    fn idle_dests_tie_so_the_first_wins() {
        let d = list(&[(1, 0, 0), (5, 0, 0), (3, 0, 0)]);
        assert_eq!(wlc_scan(&d), Some(0));
    }

    #[test]
    fn weight_0_never_wins_even_when_idle() {
        let d = list(&[(1, 9, 0), (0, 0, 0), (2, 30, 0)]);
        assert_eq!(wlc_scan(&d), Some(0));
        let d = list(&[(0, 0, 0), (0, 0, 0)]);
        assert_eq!(wlc_scan(&d), None);
    }

    #[test]
    fn skips_overloaded() {
        let mut d = list(&[(1, 0, 0), (1, 0, 1), (1, 0, 2)]);
        overload(&mut d, 0);
        assert_eq!(wlc_scan(&d), Some(1));
        overload(&mut d, 1);
        overload(&mut d, 2);
        assert_eq!(wlc_scan(&d), None);
    }

    #[test]
    fn inactive_conns_count_one_256th() {
        // 1 active (256) on weight 1 vs 255 inactive on weight 1.
        let d = list(&[(1, 1, 0), (1, 0, 255)]);
        assert_eq!(wlc_scan(&d), Some(1));
        let d = list(&[(1, 1, 0), (1, 0, 256)]);
        assert_eq!(wlc_scan(&d), Some(0));
    }
}
