//! `lc` — least connection (facts §6.4).
//!
//! The dest with the smallest `overhead = active × 256 + inactive` among those with weight > 0 and no
//! OVERLOAD; the first in list order wins ties. Large lists use the O(log n) index of [`crate::fastlc`].

use crate::fastlc::{least_conn_scheduler, Metric};
use crate::DestView;

least_conn_scheduler! {
    /// Least-connection scheduler.
    LeastConnection, Metric::Lc
}

/// The O(n) reference: the kernel's scan.
pub fn lc_scan(dests: &[DestView]) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.is_overloaded() || d.weight == 0 {
            continue;
        }
        let doh = d.overhead();
        if least.is_none_or(|(_, loh)| doh < loh) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{flow, list, overload, NOW};
    use crate::fastlc::FastMode;
    use crate::Scheduler;

    #[test]
    fn minimum_overhead_first_wins_ties() {
        // Overheads 257, 256, 256, 300: index 1.
        let d = list(&[(1, 1, 1), (1, 1, 0), (5, 0, 256), (1, 0, 300)]);
        assert_eq!(lc_scan(&d), Some(1));
        // Weight is only a > 0 test.
        let d = list(&[(100, 0, 2), (1, 0, 1)]);
        assert_eq!(lc_scan(&d), Some(1));
    }

    #[test]
    fn skips_weight_0_and_overloaded() {
        let mut d = list(&[(0, 0, 0), (1, 0, 0), (1, 0, 5)]);
        assert_eq!(lc_scan(&d), Some(1));
        overload(&mut d, 1);
        assert_eq!(lc_scan(&d), Some(2));
        overload(&mut d, 2);
        assert_eq!(lc_scan(&d), None);
        assert_eq!(lc_scan(&[]), None);
    }

    #[test]
    fn scheduler_in_both_modes() {
        let d = list(&[(1, 2, 0), (1, 1, 0), (1, 1, 0)]);
        for mode in [FastMode::Scan, FastMode::Tree, FastMode::Auto] {
            let mut s = LeastConnection::with_mode(mode);
            s.bind(&d);
            assert_eq!(s.uses_tree(), mode == FastMode::Tree);
            assert_eq!(s.name(), "lc");
            assert_eq!(s.schedule(NOW, &flow(), &d), Some(1));
        }
    }
}
