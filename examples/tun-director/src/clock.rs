//! The one place the program reads the OS clock: milliseconds since the director started, as the engine's
//! [`Instant`].

use ipvs_core::proto::Instant;

/// A monotonic clock whose zero is the director's start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self { start: std::time::Instant::now() }
    }

    /// The time since the start, in the engine's unit.
    pub fn now(&self) -> Instant {
        // u64 milliseconds outlast any process (585 million years).
        Instant::from_millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// How long from now until `at` (zero if `at` has passed).
    pub fn until(&self, at: Instant) -> std::time::Duration {
        std::time::Duration::from_millis(at.saturating_duration_since(self.now()).total_millis())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
