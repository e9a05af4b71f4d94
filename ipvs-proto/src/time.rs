//! The caller's clock.
//!
//! Nothing in the IPVS crates reads a clock: every entry point takes `now: Instant`, supplied by the
//! embedder. An [`Instant`] is a count of milliseconds since an epoch the caller chooses (boot, process
//! start, a simulation's zero). Milliseconds are fine enough for every IPVS timer (the kernel's own
//! resolution is one jiffy, 1–10 ms) and a `u64` of them never wraps.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in milliseconds since the caller's epoch.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Instant {
    millis: u64,
}

/// A span of time, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Duration {
    millis: u64,
}

impl Instant {
    /// The caller's epoch.
    pub const ZERO: Self = Self { millis: 0 };

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// An instant `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self { millis: secs.saturating_mul(1000) }
    }

    /// Milliseconds since the epoch.
    pub const fn total_millis(self) -> u64 {
        self.millis
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration { millis: self.millis.saturating_sub(earlier.millis) }
    }

    /// `self + d`, saturating at the largest instant.
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self { millis: self.millis.saturating_add(d.millis) }
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Self = Self { millis: 0 };

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// A duration of `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self { millis: secs.saturating_mul(1000) }
    }

    /// Whole milliseconds.
    pub const fn total_millis(self) -> u64 {
        self.millis
    }

    /// Whole seconds, rounded down.
    pub const fn secs(self) -> u64 {
        self.millis / 1000
    }
}

impl Add<Duration> for Instant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub for Instant {
    type Output = Duration;
    fn sub(self, rhs: Self) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl Add for Duration {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self { millis: self.millis.saturating_add(rhs.millis) }
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.millis / 1000, self.millis % 1000)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.millis / 1000, self.millis % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(u64::MAX - 1);
        assert_eq!((t + Duration::from_secs(5)).total_millis(), u64::MAX);
        assert_eq!(Instant::from_secs(1) - Instant::from_secs(3), Duration::ZERO);
        assert_eq!((Instant::from_secs(3) - Instant::from_millis(500)).total_millis(), 2500);
        assert_eq!(Duration::from_millis(1999).secs(), 1);
    }
}
