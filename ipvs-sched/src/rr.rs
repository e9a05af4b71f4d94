//! `rr` — round robin (facts §6.2).
//!
//! The scheduler remembers the last dest it picked (initially the list head, before the first dest). A pick
//! walks the circular list from the dest after it and takes the first one with weight > 0 and no OVERLOAD;
//! the walk ends after the remembered dest itself. Adding a dest does not move the position (it stays on the
//! same dest); deleting the remembered dest moves the position to the dest before it (or the list head).

use crate::{DestEvent, DestView, SchedFlow, Scheduler};
use ipvs_proto::Instant;

/// Round-robin scheduler.
#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    /// Index of the last pick; `None` = the list head (before index 0).
    last: Option<usize>,
}

impl RoundRobin {
    /// A scheduler positioned at the list head.
    pub const fn new() -> Self {
        Self { last: None }
    }

    /// Index of the last pick (`None` = the list head), following that dest across adds and deletes.
    pub const fn position(&self) -> Option<usize> {
        self.last
    }
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn bind(&mut self, _dests: &[DestView]) {
        self.last = None;
    }

    fn dests_changed(&mut self, _dests: &[DestView], event: DestEvent) {
        self.last = match (self.last, event) {
            (Some(i), DestEvent::Added { index }) if i >= index => Some(i + 1),
            (Some(i), DestEvent::Removed { index, .. }) if i == index => index.checked_sub(1),
            (Some(i), DestEvent::Removed { index, .. }) if i > index => Some(i - 1),
            (last, _) => last,
        };
    }

    fn schedule(&mut self, _now: Instant, _flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        let n = dests.len();
        // After the remembered dest to the end, then from the head up to and including it.
        let start = match self.last {
            Some(i) if i < n => i + 1,
            _ => 0,
        };
        let pick = (start..n).chain(0..start).find(|&i| dests[i].is_schedulable())?;
        self.last = Some(pick);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{flow, list, NOW};

    fn picks(s: &mut RoundRobin, dests: &[DestView], n: usize) -> alloc::vec::Vec<Option<usize>> {
        (0..n).map(|_| s.schedule(NOW, &flow(), dests)).collect()
    }

    #[test]
    fn cycles_in_list_order() {
        let d = list(&[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        let mut s = RoundRobin::new();
        s.bind(&d);
        assert_eq!(picks(&mut s, &d, 7), [0, 1, 2, 0, 1, 2, 0].map(Some));
    }

    #[test]
    fn skips_weight_0_and_overloaded() {
        let mut d = list(&[(1, 0, 0), (0, 0, 0), (1, 0, 0), (5, 0, 0)]);
        d[2].flags = ipvs_proto::DestFlags::AVAILABLE | ipvs_proto::DestFlags::OVERLOAD;
        let mut s = RoundRobin::new();
        s.bind(&d);
        assert_eq!(picks(&mut s, &d, 4), [0, 3, 0, 3].map(Some));
    }

    #[test]
    fn none_when_nothing_schedulable() {
        let d = list(&[(0, 0, 0), (0, 0, 0)]);
        let mut s = RoundRobin::new();
        s.bind(&d);
        assert_eq!(s.schedule(NOW, &flow(), &d), None);
        assert_eq!(s.schedule(NOW, &flow(), &[]), None);
    }

    #[test]
    fn add_keeps_the_position_on_the_same_dest() {
        let d = list(&[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        let mut s = RoundRobin::new();
        s.bind(&d);
        assert_eq!(picks(&mut s, &d, 2), [Some(0), Some(1)]);
        // A new dest at the head: the old index 1 is now 2; the next pick is the old index 2 (now 3).
        let d2 = list(&[(1, 0, 0), (1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        s.dests_changed(&d2, DestEvent::Added { index: 0 });
        assert_eq!(s.position(), Some(2));
        assert_eq!(picks(&mut s, &d2, 3), [3, 0, 1].map(Some));
    }

    #[test]
    fn deleting_the_last_pick_moves_to_the_dest_before() {
        let d = list(&[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
        let mut s = RoundRobin::new();
        s.bind(&d);
        assert_eq!(picks(&mut s, &d, 2), [Some(0), Some(1)]);
        let d2 = list(&[(1, 0, 0), (1, 0, 0)]);
        s.dests_changed(&d2, DestEvent::Removed { index: 1, id: d[1].id });
        assert_eq!(s.position(), Some(0));
        assert_eq!(picks(&mut s, &d2, 2), [Some(1), Some(0)]);
        // Deleting the head when it is the last pick: back to the list head.
        let mut s = RoundRobin::new();
        s.bind(&d);
        assert_eq!(picks(&mut s, &d, 1), [Some(0)]);
        s.dests_changed(&d2, DestEvent::Removed { index: 0, id: d[0].id });
        assert_eq!(s.position(), None);
        assert_eq!(picks(&mut s, &d2, 1), [Some(0)]);
        // Deleting a dest before the position shifts it.
        let mut s = RoundRobin::new();
        s.bind(&d);
        assert_eq!(picks(&mut s, &d, 3), [0, 1, 2].map(Some));
        s.dests_changed(&d2, DestEvent::Removed { index: 0, id: d[0].id });
        assert_eq!(s.position(), Some(1));
    }
}
