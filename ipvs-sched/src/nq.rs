//! `nq` — never queue (facts §6.7).
//!
//! Among dests with weight > 0 and no OVERLOAD, the first idle one (`active == 0`) in list order; if none is
//! idle, the `sed` minimum (`(active + 1) / weight`, first wins ties). Large lists use the O(log n) index of
//! [`crate::fastlc`].

use crate::fastlc::{least_conn_scheduler, Metric};
use crate::sed::sed_load;
use crate::DestView;

least_conn_scheduler! {
    /// Never-queue scheduler.
    NeverQueue, Metric::Nq
}

/// The O(n) reference: the kernel's scan.
pub fn nq_scan(dests: &[DestView]) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.is_overloaded() || d.weight == 0 {
            continue;
        }
        let doh = sed_load(d);
        if d.active_conns == 0 {
            return Some(i);
        }
        let replace = match least {
            None => true,
            Some((l, loh)) => u128::from(loh) * u128::from(d.weight) > u128::from(doh) * u128::from(dests[l].weight),
        };
        if replace {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{list, overload};

    #[test]
    fn first_idle_wins_whatever_its_weight() {
        // Index 2 is idle with weight 1; index 3 is idle with weight 9.
        let d = list(&[(5, 1, 0), (9, 1, 0), (1, 0, 7), (9, 0, 0)]);
        assert_eq!(nq_scan(&d), Some(2));
    }

    #[test]
    fn sed_minimum_when_none_is_idle() {
        // (a+1)/w: 3/1, 3/3, 2/2, 2/5: index 3.
        let d = list(&[(1, 2, 0), (3, 2, 0), (2, 1, 0), (5, 1, 0)]);
        assert_eq!(nq_scan(&d), Some(3));
        // Tie 3/3 and 2/2: the first.
        let d = list(&[(1, 2, 0), (3, 2, 0), (2, 1, 0)]);
        assert_eq!(nq_scan(&d), Some(1));
    }

    #[test]
    fn idle_but_weight_0_or_overloaded_is_skipped() {
        let mut d = list(&[(0, 0, 0), (1, 0, 0), (1, 3, 0)]);
        overload(&mut d, 1);
        assert_eq!(nq_scan(&d), Some(2));
        overload(&mut d, 2);
        assert_eq!(nq_scan(&d), None);
    }
}
