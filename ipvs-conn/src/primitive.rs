//! The one place that names synchronization primitives.
//!
//! Normal builds use `parking_lot::Mutex` and `core`'s atomics; `cfg(all(test, loom))` builds swap in loom's
//! types behind the same API (`lock()` returns the guard directly, as parking_lot's does), so the table code is
//! identical in both and the loom models in `src/tests/loom_*.rs` check the real code (tokio `src/loom/`,
//! crossbeam-epoch `mod primitive`). Nothing else in the crate names parking_lot, `std::sync` or loom.

#[cfg(not(all(test, loom)))]
mod imp {
    pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};

    /// A mutual-exclusion lock whose `lock` returns the guard directly.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    /// The guard of [`Mutex`].
    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }
}

#[cfg(all(test, loom))]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread;

    /// loom's mutex with parking_lot's API (a poisoned lock is entered anyway: loom reports the panic).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// The guard of [`Mutex`].
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

pub(crate) use imp::*;
