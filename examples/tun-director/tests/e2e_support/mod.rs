//! The machinery of `tests/e2e.rs`: network namespaces and veth pairs ([`net`]), in-process real servers and
//! clients that run in those namespaces ([`servers`]), `tun-director` processes and their `ctl` output
//! ([`director`]), and the scheduler model the picks are compared with ([`model`]).
//!
//! Everything a test creates has its own prefix (`ipvse2e-<pid>-<tag>`) and goes away when the [`net::Lab`]
//! guard is dropped, also when the test fails.

pub(crate) mod director;
pub(crate) mod model;
pub(crate) mod net;
pub(crate) mod servers;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Whether the end-to-end tests run: `IPVS_E2E=1` or `CI=true`. Otherwise a notice is printed and the
/// test passes without doing anything. When they run, any setup failure (no root, no namespaces, no TUN
/// device) fails the test: under CI it is never a skip.
pub(crate) fn enabled(test: &str) -> bool {
    let e2e = std::env::var("IPVS_E2E").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !(e2e || ci) {
        println!(
            "e2e {test}: not run — it needs root (network namespaces, TUN devices); run it with IPVS_E2E=1 \
             (CI=true runs it too)"
        );
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "e2e {test}: needs root (network namespaces, veth pairs, TUN devices); IPVS_E2E=1 or CI=true asked for it"
    );
    true
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The scenarios run one at a time (the machine has 2 cores, and the health and failover scenarios measure
/// time), whatever `--test-threads` says.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}
