//! `sed` — shortest expected delay (facts §6.6).
//!
//! `wlc` with the load `active + 1` (inactive conns ignored): the dest minimising `(active + 1) / weight`
//! among weight > 0 and no OVERLOAD, first wins ties. Large lists use the O(log n) index of [`crate::fastlc`].

use crate::fastlc::{least_conn_scheduler, Metric};
use crate::DestView;

least_conn_scheduler! {
    /// Shortest-expected-delay scheduler.
    ShortestExpectedDelay, Metric::Sed
}

/// The `sed` load: `active + 1`.
pub(crate) fn sed_load(d: &DestView) -> u64 {
    u64::from(d.active_conns) + 1
}

/// The O(n) reference: the kernel's scan.
pub fn sed_scan(dests: &[DestView]) -> Option<usize> {
    crate::wlc::weighted_scan(dests, sed_load)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{list, overload};

    #[test]
    fn minimum_active_plus_one_per_weight() {
        // (a+1)/w: 3/1, 3/3 = 1, 2/2 = 1, 1/5: index 3.
        let d = list(&[(1, 2, 0), (3, 2, 0), (2, 1, 0), (5, 0, 0)]);
        assert_eq!(sed_scan(&d), Some(3));
        // Ties keep the first: 3/3 and 2/2.
        let d = list(&[(1, 2, 0), (3, 2, 0), (2, 1, 0)]);
        assert_eq!(sed_scan(&d), Some(1));
    }

    #[test]
    fn idle_dests_compare_by_weight() {
        // All idle: 1/1, 1/5, 1/3 → the heaviest.
        let d = list(&[(1, 0, 0), (5, 0, 0), (3, 0, 0)]);
        assert_eq!(sed_scan(&d), Some(1));
    }

    #[test]
    fn ignores_inactive_conns() {
        let d = list(&[(1, 1, 0), (1, 0, 1000)]);
        assert_eq!(sed_scan(&d), Some(1));
    }

    #[test]
    fn skips_weight_0_and_overloaded() {
        let mut d = list(&[(0, 0, 0), (1, 5, 0), (10, 0, 0)]);
        overload(&mut d, 2);
        assert_eq!(sed_scan(&d), Some(1));
        overload(&mut d, 1);
        assert_eq!(sed_scan(&d), None);
    }
}
