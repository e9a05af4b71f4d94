//! Traffic counters and the kernel's rate estimator (facts §10).
//!
//! The engine keeps one set of statistics per virtual service, one per real server and one for the whole
//! director (the kernel's "tot_stats"). Each set is five monotonically increasing counters ([`Counters`]) and an
//! estimator that turns them into rates ([`RateEstimator`]). [`StatsCell`] bundles the two with the `-Z` zero
//! point, and [`Stats`] is the plain snapshot the listings render (`ipvsadm -L --stats` / `--rate`,
//! `/proc/net/ip_vs_stats`).
//!
//! # Which counter, when (facts §10.1; the engine's job)
//!
//! | Counter | Add when | Amount |
//! |---|---|---|
//! | `conns` | a new conn is scheduled locally (not sync-created conns, not templates) | 1 on the dest, its service and the total |
//! | `inpkts` / `inbytes` | the "in" path handles a packet (inbound ICMP too) and the conn's dest is available | 1 / the whole IP packet's length |
//! | `outpkts` / `outbytes` | a NAT reply (or outbound ICMP) is handled and the dest is available | 1 / the whole IP packet's length |
//!
//! # Threads
//!
//! [`Counters`] is five `AtomicU64`s updated with `Relaxed` `fetch_add`: any number of packet threads add to a
//! shared `&Counters` without a lock. The kernel keeps per-CPU counters and sums them when read; we have no CPU
//! numbers, so there is one copy, aligned to a cache line so two sets never share one. Where the global total
//! becomes a contended line, a worker can count a burst into a plain [`CounterValues`] (`add_in`, `add_out`,
//! `add_conn` on `&mut self`, no atomics) and flush it with one [`Counters::add`] per burst. Reads
//! ([`Counters::load`]) are not a consistent cut across the five fields; neither are the kernel's per-CPU sums.
//!
//! [`RateEstimator`] is a plain struct (`&mut self`), touched once every 2 s; [`StatsCell`] keeps it and the
//! zero point behind a `Mutex` that only [`StatsCell::tick`], [`StatsCell::snapshot`] and [`StatsCell::zero`]
//! take — never the packet path.
//!
//! # The estimator (facts §10.2)
//!
//! Every 2 s the estimator reads the counters and moves each average a quarter of the way to the rate seen
//! over the last period (an EWMA with weight 1/4, so the average covers roughly the last 8 s):
//!
//! | Rates | Kept as | Sample `r` from the period's increase `Δ` | Shown as |
//! |---|---|---|---|
//! | cps, inpps, outpps | rate × 2^10 | `Δ << 9` (Δ × 2^10 / 2 s) | `(avg + 0x1FF) >> 10` |
//! | inbps, outbps (bytes/s, not bits) | rate × 2^5 | `Δ << 4` (Δ × 2^5 / 2 s) | `(avg + 0xF) >> 5` |
//!
//! and `avg += (r − avg) >> 2` with a signed (flooring) shift, which is `avg = ⌊(3·avg + r) / 4⌋`. A constant
//! 1000 packets/s (`r` = 1 024 000) shows 250, 437, 578, … after the first samples, 1000 from the 27th, and the
//! average settles at `r − 3` (the floor stops it 3 short) from the 46th.
//!
//! Sample instants are the multiples of 2 s since the caller's epoch ([`Instant::ZERO`]), shared by every
//! estimator, as with the kernel's original single 2-second timer: the engine has one deadline
//! ([`RateEstimator::next_sample_after`]) for all of them, and an estimator created between two instants sees a
//! partial first period (the kernel's first estimate after a start is inaccurate too).
//!
//! ```
//! use ipvs_core::proto::Instant;
//! use ipvs_core::stats::StatsCell;
//!
//! let svc = StatsCell::new(Instant::ZERO);
//! // Packet threads: 1000 packets/s of 1500 bytes for 2 s.
//! for _ in 0..2000 {
//!     svc.counters().add_in(1500);
//! }
//! // handle_timeout at the 2 s sample instant.
//! svc.tick(Instant::from_secs(2));
//! let s = svc.snapshot();
//! assert_eq!((s.counters.inpkts, s.rates.inpps, s.rates.inbps), (2000, 250, 375_000));
//! ```

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ipvs_proto::{Duration, Instant};

/// One set of counter values: a snapshot of [`Counters`], or a worker's local tally before it is flushed.
///
/// All fields wrap on overflow (as the kernel's u64 counters do).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct CounterValues {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets client → real server.
    pub inpkts: u64,
    /// Packets real server → client (NAT replies).
    pub outpkts: u64,
    /// Bytes client → real server (whole IP packets).
    pub inbytes: u64,
    /// Bytes real server → client (whole IP packets).
    pub outbytes: u64,
}

impl CounterValues {
    /// All zero.
    pub const ZERO: Self = Self { conns: 0, inpkts: 0, outpkts: 0, inbytes: 0, outbytes: 0 };

    /// Counts one new connection.
    pub fn add_conn(&mut self) {
        self.conns = self.conns.wrapping_add(1);
    }

    /// Counts one inbound packet of `len` bytes (the whole IP packet).
    pub fn add_in(&mut self, len: u64) {
        self.inpkts = self.inpkts.wrapping_add(1);
        self.inbytes = self.inbytes.wrapping_add(len);
    }

    /// Counts one outbound packet of `len` bytes (the whole IP packet).
    pub fn add_out(&mut self, len: u64) {
        self.outpkts = self.outpkts.wrapping_add(1);
        self.outbytes = self.outbytes.wrapping_add(len);
    }

    /// Field-wise `self − earlier`, wrapping: the increase since `earlier` (a zero point or the last sample).
    pub const fn since(&self, earlier: &Self) -> Self {
        Self {
            conns: self.conns.wrapping_sub(earlier.conns),
            inpkts: self.inpkts.wrapping_sub(earlier.inpkts),
            outpkts: self.outpkts.wrapping_sub(earlier.outpkts),
            inbytes: self.inbytes.wrapping_sub(earlier.inbytes),
            outbytes: self.outbytes.wrapping_sub(earlier.outbytes),
        }
    }
}

/// The five counters of a service, a dest or the whole director, shared by all packet threads.
///
/// Lock-free: `Relaxed` atomic adds (see the [module docs](self) for why one copy and not per-CPU ones).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    conns: AtomicU64,
    inpkts: AtomicU64,
    outpkts: AtomicU64,
    inbytes: AtomicU64,
    outbytes: AtomicU64,
}

impl Counters {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            conns: AtomicU64::new(0),
            inpkts: AtomicU64::new(0),
            outpkts: AtomicU64::new(0),
            inbytes: AtomicU64::new(0),
            outbytes: AtomicU64::new(0),
        }
    }

    /// Counts one new connection.
    pub fn add_conn(&self) {
        self.conns.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one inbound packet of `len` bytes (the whole IP packet).
    pub fn add_in(&self, len: u64) {
        self.inpkts.fetch_add(1, Ordering::Relaxed);
        self.inbytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Counts one outbound packet of `len` bytes (the whole IP packet).
    pub fn add_out(&self, len: u64) {
        self.outpkts.fetch_add(1, Ordering::Relaxed);
        self.outbytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Adds a local tally (one atomic add per non-zero field): the flush of a burst counted in a
    /// [`CounterValues`].
    pub fn add(&self, v: &CounterValues) {
        for (counter, n) in [
            (&self.conns, v.conns),
            (&self.inpkts, v.inpkts),
            (&self.outpkts, v.outpkts),
            (&self.inbytes, v.inbytes),
            (&self.outbytes, v.outbytes),
        ] {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The current values (each field read on its own: not a consistent cut while packets are being counted).
    pub fn load(&self) -> CounterValues {
        CounterValues {
            conns: self.conns.load(Ordering::Relaxed),
            inpkts: self.inpkts.load(Ordering::Relaxed),
            outpkts: self.outpkts.load(Ordering::Relaxed),
            inbytes: self.inbytes.load(Ordering::Relaxed),
            outbytes: self.outbytes.load(Ordering::Relaxed),
        }
    }
}

/// Rates as the kernel reports them (rounded from the estimator's scaled averages; facts §10.2).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Inbound packets per second.
    pub inpps: u64,
    /// Outbound packets per second.
    pub outpps: u64,
    /// Inbound **bytes** per second.
    pub inbps: u64,
    /// Outbound **bytes** per second.
    pub outbps: u64,
}

/// The kernel's rate estimator over one set of counters (see the [module docs](self) for the maths).
///
/// Plain data: the owner calls [`tick`](Self::tick) with the current counter values whenever it likes (at
/// least once every 2 s for accurate rates; see [`tick`](Self::tick) for late calls).
#[derive(Clone, Debug)]
pub struct RateEstimator {
    /// Counter values at the last sample.
    last: CounterValues,
    /// Index of the last 2-second sample instant (`now_ms / 2000` at the last sample or at creation).
    slot: u64,
    /// Averages: cps, inpps, outpps scaled by 2^10; inbps, outbps scaled by 2^5.
    cps: u64,
    inpps: u64,
    outpps: u64,
    inbps: u64,
    outbps: u64,
}

impl RateEstimator {
    /// The estimation period: 2 s.
    pub const PERIOD: Duration = Duration::from_millis(PERIOD_MS);

    /// An estimator with all rates 0, whose next sample measures the counters' increase from `current`.
    ///
    /// Its first sample is at the next multiple of 2 s after `now` (a partial first period).
    pub fn new(now: Instant, current: &CounterValues) -> Self {
        Self { last: *current, slot: now.total_millis() / PERIOD_MS, cps: 0, inpps: 0, outpps: 0, inbps: 0, outbps: 0 }
    }

    /// The first sample instant strictly after `now`: the next multiple of 2 s since the epoch. The same for
    /// every estimator, so the engine's `poll_timeout` needs only this one deadline.
    pub const fn next_sample_after(now: Instant) -> Instant {
        Instant::from_millis((now.total_millis() / PERIOD_MS).saturating_add(1).saturating_mul(PERIOD_MS))
    }

    /// This estimator's next sample instant.
    pub const fn next_sample(&self) -> Instant {
        Instant::from_millis(self.slot.saturating_add(1).saturating_mul(PERIOD_MS))
    }

    /// Applies every 2-second sample instant in `(last sample, now]` and returns how many there were (0 if
    /// `now` is before [`next_sample`](Self::next_sample): calling it early is harmless).
    ///
    /// When several instants passed since the last call (the owner was late), the counters' whole increase
    /// since the last sample goes into the first of them and the later ones see none — as if the traffic came
    /// before the first missed instant — so the averages decay for the rest. Once all averages are 0 the
    /// remaining steps change nothing and are skipped, so a long gap costs at most ~160 steps.
    pub fn tick(&mut self, now: Instant, current: &CounterValues) -> u64 {
        let slot = now.total_millis() / PERIOD_MS;
        if slot <= self.slot {
            return 0;
        }
        let steps = slot - self.slot;
        let delta = current.since(&self.last);
        self.step(&delta);
        for _ in 1..steps {
            if self.is_idle() {
                break;
            }
            self.step(&CounterValues::ZERO);
        }
        self.last = *current;
        self.slot = slot;
        steps
    }

    /// The rates as reported: `(avg + 0x1FF) >> 10` for the per-second counts, `(avg + 0xF) >> 5` for bytes.
    pub const fn rates(&self) -> Rates {
        Rates {
            cps: (self.cps.wrapping_add(0x1FF)) >> 10,
            inpps: (self.inpps.wrapping_add(0x1FF)) >> 10,
            outpps: (self.outpps.wrapping_add(0x1FF)) >> 10,
            inbps: (self.inbps.wrapping_add(0xF)) >> 5,
            outbps: (self.outbps.wrapping_add(0xF)) >> 5,
        }
    }

    /// The `-Z` reset: all rates 0, and the next sample measures the increase from `current`.
    pub fn reset(&mut self, current: &CounterValues) {
        self.last = *current;
        self.cps = 0;
        self.inpps = 0;
        self.outpps = 0;
        self.inbps = 0;
        self.outbps = 0;
    }

    /// One 2-second update with the period's increase `delta`.
    fn step(&mut self, delta: &CounterValues) {
        ewma(&mut self.cps, delta.conns << 9);
        ewma(&mut self.inpps, delta.inpkts << 9);
        ewma(&mut self.outpps, delta.outpkts << 9);
        ewma(&mut self.inbps, delta.inbytes << 4);
        ewma(&mut self.outbps, delta.outbytes << 4);
    }

    fn is_idle(&self) -> bool {
        self.cps | self.inpps | self.outpps | self.inbps | self.outbps == 0
    }
}

/// What a listing shows for one service, dest or the total: counters since the last zeroing, and rates.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct Stats {
    /// Counter values minus the zero point.
    pub counters: CounterValues,
    /// Estimated rates.
    pub rates: Rates,
}

/// Counters, estimator and `-Z` zero point of one service, dest or the whole director; `Sync`.
///
/// Packet threads add through [`counters`](Self::counters) (lock-free). The engine calls
/// [`tick`](Self::tick) from `handle_timeout` (deadline: [`RateEstimator::next_sample_after`]), and
/// [`snapshot`](Self::snapshot) / [`zero`](Self::zero) for listings and `ipvsadm -Z`; those three take a short
/// internal lock.
#[derive(Debug)]
pub struct StatsCell {
    counters: Counters,
    slow: Mutex<Slow>,
}

/// The part of a [`StatsCell`] not touched per packet.
#[derive(Debug)]
struct Slow {
    /// Counter values at the last `-Z`.
    zero: CounterValues,
    estimator: RateEstimator,
}

impl StatsCell {
    /// Zero counters, zero rates; the estimator's first sample is the next 2-second instant after `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            counters: Counters::new(),
            slow: Mutex::new(Slow {
                zero: CounterValues::ZERO,
                estimator: RateEstimator::new(now, &CounterValues::ZERO),
            }),
        }
    }

    /// The counters, for the packet path.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Runs the estimator (see [`RateEstimator::tick`]); returns the number of 2-second samples applied.
    pub fn tick(&self, now: Instant) -> u64 {
        let mut slow = self.lock();
        // Read the counters under the lock so two racing ticks cannot sample out of order.
        let current = self.counters.load();
        slow.estimator.tick(now, &current)
    }

    /// Counters since the last [`zero`](Self::zero) and the current rates.
    pub fn snapshot(&self) -> Stats {
        let slow = self.lock();
        Stats { counters: self.counters.load().since(&slow.zero), rates: slow.estimator.rates() }
    }

    /// `ipvsadm -Z`: counters read as 0 from here on (the raw counters keep counting; a zero point is
    /// subtracted), and the rates restart from 0. Also used when a dest from the trash joins another service.
    pub fn zero(&self) {
        let mut slow = self.lock();
        let current = self.counters.load();
        slow.zero = current;
        slow.estimator.reset(&current);
    }

    fn lock(&self) -> MutexGuard<'_, Slow> {
        // The guarded data is plain numbers, consistent after any panic: ignore poisoning.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

const PERIOD_MS: u64 = 2000;

/// `avg += (r − avg) >> 2` in the kernel's signed 64-bit arithmetic (flooring shift).
fn ewma(avg: &mut u64, r: u64) {
    let step = (r as i64).wrapping_sub(*avg as i64) >> 2;
    *avg = avg.wrapping_add(step as u64);
}

#[cfg(test)]
mod tests;
