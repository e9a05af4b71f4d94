//! Slow start: a real server that comes back ramps its weight up instead of taking a thundering herd
//! (LVS HOWTO 4.21; not in the kernel).
//!
//! A dest that joins a pool already carrying traffic has no connections, so least-connection schedulers send
//! it every new connection until it catches up, and weighted ones give it its full share at once — before its
//! caches are warm. With slow start the engine hands the scheduler an *effective* weight that rises linearly
//! from 1 to the configured weight over [`SlowStart::period`]:
//!
//! `effective = 1 + ⌊(weight − 1) × elapsed / period⌋` for `elapsed < period`, then `weight`.
//!
//! It is never 0 for a weight above 0, so a ramping dest never looks quiesced; a weight of 0 stays 0.
//!
//! # What "comes back" means (when the engine starts a ramp)
//!
//! The engine keeps a ramp start (`since`) per dest and sets it to `now` when the dest
//! * is **added** to a service that already exists with a weight above 0 (including a dest brought back from
//!   the trash);
//! * has its **weight raised from 0** (it was quiesced, e.g. drained for maintenance);
//! * **recovers from a failed health check** (the embedder marks it available again).
//!
//! Not on a raise from one non-zero weight to another (it already carries traffic), and not for the dests of a
//! service created in the same configuration load (there is no existing traffic to stampede). The engine clears
//! `since` once [`ramp_end`](SlowStart::ramp_end) has passed.
//!
//! # Which weight goes where
//!
//! The effective weight is for scheduling only. Listings (`ipvsadm -L`, the save format) and the kernel's
//! "weight 0" rules (quiescence, `expire_quiescent_template`, `conn_reuse_mode`) keep using the configured
//! weight. The engine refreshes the scheduler's weight at [`next_change`](SlowStart::next_change) — or, to
//! bound scheduler rebuilds (wrr, mh precompute tables), on its once-a-second timer.
//!
//! ```
//! use ipvs_core::proto::{Duration, Instant};
//! use ipvs_core::slow_start::SlowStart;
//!
//! let ramp = SlowStart::new(Duration::from_secs(30));
//! let since = Instant::from_secs(100); // weight raised from 0 to 60 at t = 100 s
//! assert_eq!(ramp.effective_weight(60, since, since), 1);
//! assert_eq!(ramp.effective_weight(60, since, Instant::from_secs(115)), 30); // 1 + ⌊59 · 15 / 30⌋
//! assert_eq!(ramp.effective_weight(60, since, Instant::from_secs(130)), 60);
//! assert_eq!(ramp.next_change(60, since, since), Some(Instant::from_millis(100_509))); // ⌈30 000 / 59⌉ ms
//! ```

use ipvs_proto::{Duration, Instant};

/// The slow-start ramp: `period` to go from weight 1 to the configured weight. A zero period disables it.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct SlowStart {
    /// How long the ramp lasts.
    pub period: Duration,
}

impl SlowStart {
    /// No ramp: the effective weight is always the configured one.
    pub const DISABLED: Self = Self { period: Duration::ZERO };

    /// A ramp over `period`.
    pub const fn new(period: Duration) -> Self {
        Self { period }
    }

    /// The weight to schedule with at `now` for a dest configured with `weight` whose ramp started at `since`:
    /// 1 at `since` (or earlier `now`), rising linearly, `weight` from `since + period` on. 0 only for weight 0.
    pub fn effective_weight(&self, weight: u32, since: Instant, now: Instant) -> u32 {
        let period = self.period.total_millis();
        let elapsed = now.saturating_duration_since(since).total_millis();
        if weight == 0 || elapsed >= period {
            return weight;
        }
        // elapsed < period, so the quotient is below weight − 1 and fits in a u32.
        let ramp = u128::from(weight - 1) * u128::from(elapsed) / u128::from(period);
        1 + u32::try_from(ramp).unwrap_or(weight - 1)
    }

    /// When a ramp that started at `since` ends (the effective weight is the configured one from then on).
    pub fn ramp_end(&self, since: Instant) -> Instant {
        since + self.period
    }

    /// Whether the effective weight at `now` is still below `weight`.
    pub fn is_ramping(&self, weight: u32, since: Instant, now: Instant) -> bool {
        self.effective_weight(weight, since, now) < weight
    }

    /// The first instant after `now` at which [`effective_weight`](Self::effective_weight) changes, or `None`
    /// once it has reached `weight` (or never changes: weight 0 or 1, or no ramp).
    pub fn next_change(&self, weight: u32, since: Instant, now: Instant) -> Option<Instant> {
        if !self.is_ramping(weight, since, now) {
            return None;
        }
        let period = u128::from(self.period.total_millis());
        let step = u128::from(self.effective_weight(weight, since, now));
        // The smallest elapsed time e with ⌊(weight − 1)·e / period⌋ ≥ step (the next value, step + 1, minus 1):
        // e = ⌈step · period / (weight − 1)⌉ ≤ period, since step ≤ weight − 1.
        let w = u128::from(weight - 1);
        let e = (step * period).div_ceil(w);
        // e ≤ period, a u64.
        let e = u64::try_from(e).unwrap_or(u64::MAX);
        Some(since + Duration::from_millis(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    const TEN_S: SlowStart = SlowStart::new(Duration::from_secs(10));

    #[test]
    fn linear_from_1_to_the_weight() {
        let since = ms(5000);
        let table = [(0, 1), (1000, 10), (2500, 25), (5000, 50), (9999, 99), (10_000, 100), (60_000, 100)];
        for (elapsed, want) in table {
            assert_eq!(TEN_S.effective_weight(100, since, ms(5000 + elapsed)), want, "elapsed {elapsed} ms");
        }
        // weight 101: 1 + ⌊100·e/10 000⌋.
        assert_eq!(TEN_S.effective_weight(101, since, ms(5000 + 1000)), 11);
    }

    #[test]
    fn never_zero_for_a_positive_weight() {
        for weight in [1, 2, 3, 7, 1000, u32::MAX] {
            let mut last = 0;
            for e in (0..=10_000).step_by(37) {
                let w = TEN_S.effective_weight(weight, ms(0), ms(e));
                assert!(w >= 1 && w <= weight, "weight {weight} at {e} ms: {w}");
                assert!(w >= last, "never goes down");
                last = w;
            }
            assert_eq!(TEN_S.effective_weight(weight, ms(0), ms(10_000)), weight);
        }
    }

    #[test]
    fn weight_zero_stays_zero() {
        assert_eq!(TEN_S.effective_weight(0, ms(0), ms(0)), 0);
        assert_eq!(TEN_S.effective_weight(0, ms(0), ms(5000)), 0);
        assert_eq!(TEN_S.next_change(0, ms(0), ms(0)), None);
    }

    #[test]
    fn before_since_is_the_start() {
        assert_eq!(TEN_S.effective_weight(50, ms(5000), ms(1000)), 1);
    }

    #[test]
    fn disabled_or_zero_period_is_the_weight() {
        assert_eq!(SlowStart::DISABLED.effective_weight(40, ms(10), ms(10)), 40);
        assert_eq!(SlowStart::default(), SlowStart::DISABLED);
        assert!(!SlowStart::DISABLED.is_ramping(40, ms(10), ms(10)));
        assert_eq!(SlowStart::DISABLED.next_change(40, ms(10), ms(10)), None);
    }

    #[test]
    fn ramp_end_and_is_ramping() {
        assert_eq!(TEN_S.ramp_end(ms(5000)), ms(15_000));
        assert!(TEN_S.is_ramping(3, ms(5000), ms(14_999)));
        assert!(!TEN_S.is_ramping(3, ms(5000), ms(15_000)));
        assert!(!TEN_S.is_ramping(1, ms(5000), ms(5000)), "weight 1 has nothing to ramp");
    }

    #[test]
    fn next_change_is_exactly_where_the_weight_steps() {
        // weight 4 over 10 s: 1 until 3333.3 ms, 2 from 3334, 3 from 6667, 4 from 10 000.
        let got: Vec<_> = [0, 3333, 3334, 6666, 6667, 9999, 10_000]
            .iter()
            .map(|&t| (TEN_S.effective_weight(4, ms(0), ms(t)), TEN_S.next_change(4, ms(0), ms(t))))
            .collect();
        assert_eq!(
            got,
            [
                (1, Some(ms(3334))),
                (1, Some(ms(3334))),
                (2, Some(ms(6667))),
                (2, Some(ms(6667))),
                (3, Some(ms(10_000))),
                (3, Some(ms(10_000))),
                (4, None),
            ]
        );
    }

    #[test]
    fn next_change_walks_every_step() {
        for (weight, period) in [(2, 10_000), (7, 10_000), (100, 999), (5000, 3000)] {
            let s = SlowStart::new(Duration::from_millis(period));
            let since = ms(123);
            let mut now = since;
            let mut steps = 0;
            while let Some(next) = s.next_change(weight, since, now) {
                let before = s.effective_weight(weight, since, now);
                assert!(next > now);
                assert_eq!(s.effective_weight(weight, since, ms(next.total_millis() - 1)), before, "no change before");
                assert!(s.effective_weight(weight, since, next) > before, "a change at");
                now = next;
                steps += 1;
            }
            assert_eq!(s.effective_weight(weight, since, now), weight);
            assert_eq!(now, s.ramp_end(since));
            assert!(steps < weight && steps <= period as u32, "weight {weight}: {steps} steps");
        }
    }
}
