//! `twos` — weighted power of two choices (facts §6.10).
//!
//! 1. `T` = sum of the weights of dests with weight > 0 and no OVERLOAD; none → no pick.
//! 2. Two draws `r1`, `r2`, uniform in `[0, T]` (inclusive: the first eligible dest gets `(w + 1) / (T + 1)`).
//! 3. Walking the eligible dests in list order and subtracting each weight, choice 1 is the first dest where
//!    `r1 ≤ 0`, choice 2 the first where `r2 ≤ 0`.
//! 4. Choice 2 if `w2 × oh1 > w1 × oh2` (strictly less loaded per weight), else choice 1.
//!
//! The draws come from a SplitMix64 generator seeded by [`SchedConfig::seed`](crate::SchedConfig), so a run
//! is reproducible; the kernel's draws (`get_random_u32`) cannot be, so picks agree with a kernel only in
//! distribution.

use crate::{DestEvent, DestView, SchedFlow, Scheduler};
use ipvs_proto::Instant;

/// SplitMix64: a small, fast, deterministic generator.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniform in `[0, bound)` (multiply-high; bias below 2⁻³² for the bounds used here).
    /// `bound` must be > 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Weighted power-of-two-choices scheduler.
#[derive(Clone, Debug)]
pub struct TwoChoices {
    rng: SplitMix64,
}

impl TwoChoices {
    /// A scheduler drawing from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { rng: SplitMix64::new(seed) }
    }

    /// The pick for the draws `r1`, `r2` (each in `[0, T]`); `None` if no dest is eligible.
    pub fn pick_with(dests: &[DestView], r1: u64, r2: u64) -> Option<usize> {
        let (c1, c2) = (choose(dests, r1)?, choose(dests, r2)?);
        let (d1, d2) = (&dests[c1], &dests[c2]);
        let lhs = u128::from(d2.weight) * u128::from(d1.overhead());
        let rhs = u128::from(d1.weight) * u128::from(d2.overhead());
        Some(if lhs > rhs { c2 } else { c1 })
    }
}

/// `T`: the total weight of the eligible dests.
pub fn total_weight(dests: &[DestView]) -> u64 {
    dests.iter().filter(|d| d.is_schedulable()).map(|d| u64::from(d.weight)).sum()
}

/// The first eligible dest where `r − (weights so far, itself included) ≤ 0`.
fn choose(dests: &[DestView], mut r: u64) -> Option<usize> {
    for (i, d) in dests.iter().enumerate() {
        if !d.is_schedulable() {
            continue;
        }
        let w = u64::from(d.weight);
        if r <= w {
            return Some(i);
        }
        r -= w;
    }
    None
}

impl Scheduler for TwoChoices {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn bind(&mut self, _dests: &[DestView]) {}

    fn dests_changed(&mut self, _dests: &[DestView], _event: DestEvent) {}

    fn schedule(&mut self, _now: Instant, _flow: &SchedFlow, dests: &[DestView]) -> Option<usize> {
        let total = total_weight(dests);
        if total == 0 {
            return None;
        }
        let r1 = self.rng.below(total + 1);
        let r2 = self.rng.below(total + 1);
        Self::pick_with(dests, r1, r2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::test_support::{flow, list, overload, NOW};

    #[test]
    fn draws_map_to_dests_inclusively() {
        // Weights 2, 3 (T = 5): r ∈ 0..=2 → 0, r ∈ 3..=5 → 1.
        let d = list(&[(2, 0, 0), (3, 0, 0)]);
        for (r, want) in [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)] {
            assert_eq!(choose(&d, r), Some(want), "r = {r}");
        }
        assert_eq!(choose(&d, 6), None);
    }

    #[test]
    fn skips_weight_0_and_overloaded_in_the_walk() {
        let mut d = list(&[(0, 0, 0), (4, 0, 0), (1, 0, 0), (2, 0, 0)]);
        overload(&mut d, 1);
        assert_eq!(total_weight(&d), 3);
        assert_eq!(choose(&d, 0), Some(2));
        assert_eq!(choose(&d, 1), Some(2));
        assert_eq!(choose(&d, 2), Some(3));
        assert_eq!(choose(&d, 3), Some(3));
    }

    #[test]
    fn keeps_the_less_loaded_per_weight_choice_1_on_ties() {
        // Dest 0: oh 512 / w 2 = 256; dest 1: oh 256 / w 1 = 256 (tie); dest 2: oh 0.
        let d = list(&[(2, 2, 0), (1, 1, 0), (1, 0, 0)]);
        assert_eq!(TwoChoices::pick_with(&d, 0, 3), Some(0), "tie keeps choice 1");
        assert_eq!(TwoChoices::pick_with(&d, 3, 0), Some(1), "tie keeps choice 1");
        assert_eq!(TwoChoices::pick_with(&d, 0, 4), Some(2));
        assert_eq!(TwoChoices::pick_with(&d, 4, 0), Some(2));
    }

    #[test]
    fn none_without_eligible_dests() {
        let mut d = list(&[(0, 0, 0), (1, 0, 0)]);
        overload(&mut d, 1);
        assert_eq!(TwoChoices::new(1).schedule(NOW, &flow(), &d), None);
    }

    #[test]
    fn seeded_runs_repeat_and_spread_by_weight() {
        let d = list(&[(1, 0, 0), (3, 0, 0)]);
        let run = |seed| {
            let mut s = TwoChoices::new(seed);
            (0..64).map(|_| s.schedule(NOW, &flow(), &d).unwrap()).collect::<alloc::vec::Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // Idle dests tie, so choice 1 decides: P(dest 0) = 2/5 per the inclusive range.
        let mut s = TwoChoices::new(42);
        let zeros = (0..100_000).filter(|_| s.schedule(NOW, &flow(), &d) == Some(0)).count();
        assert!((39_000..41_000).contains(&zeros), "{zeros}");
    }

    #[test]
    fn splitmix_known_values() {
        // Reference values of SplitMix64 from seed 0.
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
