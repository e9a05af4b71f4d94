//! The kernel's defense against table exhaustion (facts §11.2, §3.9): `drop_entry`, `drop_packet` and
//! `secure_tcp`, switched once a second by how much room is left.
//!
//! Each of the three mechanisms has a sysctl-style [`DefenseMode`] in [`Defense`]:
//!
//! | Mode | `drop_entry` | `drop_packet` | `secure_tcp` |
//! |---|---|---|---|
//! | 0 [`Off`](DefenseMode::Off) | never | rate 0 | normal TCP table |
//! | 1 [`Auto`](DefenseMode::Auto) | low memory → active, mode := 2 | low memory → rate `amemthresh / (amemthresh − available)`, mode := 2 | low memory → secure table, mode := 2 |
//! | 2 [`AutoActive`](DefenseMode::AutoActive) | active; memory back → inactive, mode := 1 | rate recomputed; memory back → rate 0, mode := 1 | secure table; memory back → normal, mode := 1 |
//! | 3 [`Always`](DefenseMode::Always) | always active | rate `am_droprate` | secure table always |
//!
//! "Low memory" is `available < amemthresh` (the kernel's `nomem`). A mechanism is *active* exactly when its
//! mode, after the step above, is 2 or 3.
//!
//! # "Available memory" without a kernel
//!
//! The kernel compares free + buffer RAM, in 4 KiB pages, with `amemthresh` (default 1024 pages = 4 MiB). We
//! have no such figure, and the resource that runs out is the connection table's fixed capacity. So by default
//! ([`Occupancy::Table`]) the table's free slots are converted to the pages the kernel would need to hold that
//! many conns — [`Occupancy::CONN_BYTES`] (320, the kernel's `ip_vs_conn` slab object, facts §3.1) per conn,
//! [`Occupancy::PAGE_BYTES`] (4096) per page:
//!
//! `available pages = free slots × 320 / 4096` (12.8 conns per page)
//!
//! so `amemthresh` keeps its unit and meaning: with the default 1024 the automatic modes switch on when fewer
//! than 13 108 free slots are left (1024 × 4096 / 320 = 13 107.2). A table with fewer slots than that is
//! always "low"; lower `amemthresh` to match. An embedder that does want real memory figures passes
//! [`Occupancy::AvailablePages`] instead.
//!
//! # How the engine drives it
//!
//! * From `handle_timeout`: [`DefenseState::handle_timeout`] (or [`update`](DefenseState::update) plus its own
//!   `drop_entry` call). It acts at most once per second, on the 1-second grid since the caller's epoch
//!   ([`poll_timeout`](DefenseState::poll_timeout) is the next one); earlier calls do nothing, late calls act
//!   once (no catch-up, like the kernel's delayed work).
//! * On the new-connection path, after a service matched and before scheduling: drop the packet when
//!   [`should_drop_packet`](DefenseState::should_drop_packet) says so.
//! * On TCP state transitions: use the secure state table while
//!   [`secure_tcp_active`](DefenseState::secure_tcp_active).
//! * Sysctl writes: [`set_config`](DefenseState::set_config), which re-evaluates at once with the last
//!   occupancy seen (the kernel re-evaluates on sysctl writes too).
//!
//! # Threads
//!
//! Every method takes `&self` and `DefenseState` is `Sync`: the per-packet reads (`should_drop_packet`,
//! `secure_tcp_active`, `drop_entry_active`) are lock-free atomics, so the engine can share one without a lock.
//! The once-a-second update and configuration changes serialize on an internal mutex.
//!
//! ```
//! use ipvs_core::conn::{ConnTable, ConnTableConfig};
//! use ipvs_core::defense::{Defense, DefenseMode, DefenseState, Occupancy};
//! use ipvs_core::proto::Instant;
//!
//! let table = ConnTable::new(ConnTableConfig::new(1 << 16, [1; 16]), Instant::ZERO).unwrap();
//! let config = Defense { secure_tcp: DefenseMode::Auto, amemthresh: 16, ..Defense::default() };
//! let defense = DefenseState::new(config, 0x5eed, Instant::ZERO);
//!
//! // handle_timeout, once the deadline is reached:
//! let now = defense.poll_timeout();
//! let occupancy = Occupancy::Table { len: table.len(), capacity: table.capacity() };
//! let mut expired = Vec::new();
//! defense.handle_timeout(now, occupancy, |d| table.drop_entry(now, d, |_| false, &mut expired));
//! assert!(!defense.secure_tcp_active(), "an empty table has plenty of room");
//!
//! // The new-connection path, after a service matched:
//! if defense.should_drop_packet() { /* Verdict::Drop */ }
//! ```

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ipvs_conn::DropEntry;
use ipvs_proto::Instant;

/// The mode of one defense mechanism; the discriminants are the sysctl values (facts §11.2).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
#[repr(u8)]
pub enum DefenseMode {
    /// 0: never.
    #[default]
    Off = 0,
    /// 1: automatic, currently idle — switches itself to [`AutoActive`](Self::AutoActive) when memory is low.
    Auto = 1,
    /// 2: automatic, currently active — switches itself back to [`Auto`](Self::Auto) when memory is back.
    AutoActive = 2,
    /// 3: always.
    Always = 3,
}

impl DefenseMode {
    /// The once-a-second transition: [`Auto`](Self::Auto) becomes [`AutoActive`](Self::AutoActive) when
    /// memory is low, [`AutoActive`](Self::AutoActive) becomes [`Auto`](Self::Auto) when it is not; the
    /// others stay.
    pub const fn step(self, low_memory: bool) -> Self {
        match (self, low_memory) {
            (Self::Auto, true) => Self::AutoActive,
            (Self::AutoActive, false) => Self::Auto,
            (mode, _) => mode,
        }
    }

    /// Whether the mechanism acts in this mode (after [`step`](Self::step)): 2 or 3.
    pub const fn is_active(self) -> bool {
        matches!(self, Self::AutoActive | Self::Always)
    }
}

impl From<DefenseMode> for u8 {
    fn from(mode: DefenseMode) -> Self {
        mode as Self
    }
}

impl TryFrom<u32> for DefenseMode {
    type Error = InvalidDefenseMode;

    /// The sysctl write: 0..=3; anything else is rejected, as the kernel does.
    fn try_from(v: u32) -> Result<Self, InvalidDefenseMode> {
        match v {
            0 => Ok(Self::Off),
            1 => Ok(Self::Auto),
            2 => Ok(Self::AutoActive),
            3 => Ok(Self::Always),
            _ => Err(InvalidDefenseMode(v)),
        }
    }
}

/// A defense mode outside 0..=3.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct InvalidDefenseMode(pub u32);

impl fmt::Display for InvalidDefenseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid defense mode {}: expected 0, 1, 2 or 3", self.0)
    }
}

impl core::error::Error for InvalidDefenseMode {}

/// The defense sysctls (facts §11.1). [`Default`] is the kernel's: all off, `am_droprate` 10,
/// `amemthresh` 1024.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Defense {
    /// Random dropping of connection entries (facts §3.9).
    pub drop_entry: DefenseMode,
    /// Dropping one in every *rate* packets that would create a connection.
    pub drop_packet: DefenseMode,
    /// The secure TCP state table (facts §5.2).
    pub secure_tcp: DefenseMode,
    /// `drop_packet`'s rate in [`DefenseMode::Always`]: drop 1 of every `am_droprate` candidates (0: none).
    pub am_droprate: u32,
    /// The low-memory threshold, in 4 KiB pages (see the [module docs](self) for what "available" means).
    pub amemthresh: u32,
}

impl Default for Defense {
    fn default() -> Self {
        Self {
            drop_entry: DefenseMode::Off,
            drop_packet: DefenseMode::Off,
            secure_tcp: DefenseMode::Off,
            am_droprate: 10,
            amemthresh: 1024,
        }
    }
}

/// How much room is left, sampled by the engine for each [`DefenseState::update`].
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Occupancy {
    /// Available memory in 4 KiB pages, as the kernel measures it (free + buffer RAM), from an embedder that
    /// has such a figure.
    AvailablePages(u64),
    /// The connection table's fill: free slots (`capacity − len`) are converted to pages (see the
    /// [module docs](self)).
    Table {
        /// Entries in the table (conns and templates).
        len: usize,
        /// The table's hard bound on entries.
        capacity: usize,
    },
}

impl Occupancy {
    /// Bytes the kernel spends per conn (its 320-byte `ip_vs_conn` slab object; facts §3.1).
    pub const CONN_BYTES: u64 = 320;
    /// Bytes per page, the unit of `amemthresh`.
    pub const PAGE_BYTES: u64 = 4096;

    /// The available memory in pages: as given, or `free slots × CONN_BYTES / PAGE_BYTES` (rounded down).
    pub const fn available_pages(&self) -> u64 {
        match *self {
            Self::AvailablePages(pages) => pages,
            Self::Table { len, capacity } => {
                let free = capacity.saturating_sub(len) as u64;
                free.saturating_mul(Self::CONN_BYTES) / Self::PAGE_BYTES
            }
        }
    }
}

/// The defense's running state: modes as the automatic switching left them, and what is active.
///
/// See the [module docs](self) for how the engine calls it.
#[derive(Debug)]
pub struct DefenseState {
    /// `drop_packet`'s current rate (0: no drops).
    drop_rate: AtomicU32,
    /// `drop_packet`'s countdown to the next drop.
    drop_counter: AtomicU32,
    secure_tcp: AtomicBool,
    drop_entry: AtomicBool,
    /// Milliseconds of the next due update.
    next_update: AtomicU64,
    control: Mutex<Control>,
    /// The random entry drop's state (the kernel's `todrop_counter`s and our RNG).
    drop_entry_state: Mutex<DropEntry>,
}

/// The part of [`DefenseState`] changed only by updates and configuration.
#[derive(Debug)]
struct Control {
    config: Defense,
    /// Available pages at the last update (`None` before the first: treated as plenty).
    available: Option<u64>,
}

impl DefenseState {
    /// A state for `config`, evaluated as if memory were plentiful until the first
    /// [`update`](Self::update) (so a mode written as 2 falls back to 1 at once, as a sysctl write would).
    /// `drop_seed` seeds the random entry drop. The first update is due at the next whole second after `now`.
    pub fn new(config: Defense, drop_seed: u64, now: Instant) -> Self {
        let state = Self {
            drop_rate: AtomicU32::new(0),
            drop_counter: AtomicU32::new(0),
            secure_tcp: AtomicBool::new(false),
            drop_entry: AtomicBool::new(false),
            next_update: AtomicU64::new(next_second(now)),
            control: Mutex::new(Control { config, available: None }),
            drop_entry_state: Mutex::new(DropEntry::new(drop_seed)),
        };
        state.evaluate(&mut state.lock());
        state
    }

    /// The configuration, with the automatic modes as the last evaluation left them (1 or 2).
    pub fn config(&self) -> Defense {
        self.lock().config
    }

    /// Replaces the configuration (a sysctl write) and re-evaluates at once with the last occupancy seen.
    /// Does not run `drop_entry` nor move the next update.
    pub fn set_config(&self, config: Defense) {
        let mut control = self.lock();
        control.config = config;
        self.evaluate(&mut control);
    }

    /// When the next update is due: the next whole second after the last one (or after creation).
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        Instant::from_millis(self.next_update.load(Ordering::Relaxed))
    }

    /// The once-a-second defense step: when due (`now >= poll_timeout()`), takes `occupancy` as the current
    /// room, steps the three modes and sets the packet-path answers. Returns whether the random entry drop
    /// should run now — the update ran and `drop_entry` is active. Before the due time it does nothing and
    /// returns `false`.
    pub fn update(&self, now: Instant, occupancy: Occupancy) -> bool {
        let mut control = self.lock();
        let now_ms = now.total_millis();
        if now_ms < self.next_update.load(Ordering::Relaxed) {
            return false;
        }
        self.next_update.store(next_second(now), Ordering::Relaxed);
        control.available = Some(occupancy.available_pages());
        self.evaluate(&mut control);
        self.drop_entry_active()
    }

    /// [`update`](Self::update), then, if the entry drop should run, calls `drop_entry` with the state to pass
    /// to the table's `drop_entry` (e.g. `|d| table.drop_entry(now, d, is_ops_template, &mut expired)`).
    /// Returns whether it was called.
    pub fn handle_timeout(&self, now: Instant, occupancy: Occupancy, drop_entry: impl FnOnce(&mut DropEntry)) -> bool {
        if !self.update(now, occupancy) {
            return false;
        }
        let mut state = self.drop_entry_state.lock().unwrap_or_else(PoisonError::into_inner);
        drop_entry(&mut state);
        true
    }

    /// For a packet that would create a connection (a service matched, before scheduling): whether to drop
    /// it. With rate *n* > 0 the first *n* − 1 candidates pass and the *n*-th is dropped, then the countdown
    /// restarts; rate 0 drops nothing. Exact under concurrent calls (one atomic read-modify-write).
    ///
    /// The countdown restarts whenever a rate is set: at every update while an automatic mode is active (the
    /// rate follows the available memory), and when mode 3's rate changes.
    #[must_use]
    pub fn should_drop_packet(&self) -> bool {
        let rate = self.drop_rate.load(Ordering::Relaxed);
        if rate == 0 {
            return false;
        }
        let update = |c: u32| Some(if c > 1 { c - 1 } else { rate });
        // The closure always returns `Some`, so `fetch_update` cannot fail; both arms carry the previous value.
        let prev = match self.drop_counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, update) {
            Ok(prev) | Err(prev) => prev,
        };
        prev <= 1
    }

    /// `drop_packet`'s current rate: one in this many candidates is dropped (0: none).
    pub fn drop_rate(&self) -> u32 {
        self.drop_rate.load(Ordering::Relaxed)
    }

    /// Whether TCP conns use the secure state table (facts §5.2).
    pub fn secure_tcp_active(&self) -> bool {
        self.secure_tcp.load(Ordering::Relaxed)
    }

    /// Whether the random entry drop is active (it runs at each update while it is).
    pub fn drop_entry_active(&self) -> bool {
        self.drop_entry.load(Ordering::Relaxed)
    }

    /// Whether the last update found memory low (`available < amemthresh`); `false` before the first.
    pub fn low_memory(&self) -> bool {
        let control = self.lock();
        is_low(&control)
    }

    /// Steps the modes with the last occupancy and publishes the results.
    fn evaluate(&self, control: &mut Control) {
        let low = is_low(control);
        let config = &mut control.config;
        config.drop_entry = config.drop_entry.step(low);
        config.drop_packet = config.drop_packet.step(low);
        config.secure_tcp = config.secure_tcp.step(low);
        self.drop_entry.store(config.drop_entry.is_active(), Ordering::Relaxed);
        self.secure_tcp.store(config.secure_tcp.is_active(), Ordering::Relaxed);
        let rate = match config.drop_packet {
            DefenseMode::Off | DefenseMode::Auto => 0,
            DefenseMode::AutoActive => {
                // AutoActive after the step implies low memory, so available < amemthresh: the divisor is ≥ 1.
                let thresh = u64::from(config.amemthresh);
                let available = control.available.unwrap_or(thresh);
                let rate = thresh / thresh.saturating_sub(available).max(1);
                // rate ≤ amemthresh, a u32.
                let rate = u32::try_from(rate).unwrap_or(u32::MAX);
                self.drop_counter.store(rate, Ordering::Relaxed);
                rate
            }
            DefenseMode::Always => {
                if self.drop_rate.load(Ordering::Relaxed) != config.am_droprate {
                    self.drop_counter.store(config.am_droprate, Ordering::Relaxed);
                }
                config.am_droprate
            }
        };
        self.drop_rate.store(rate, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // The guarded data is plain values, consistent after any panic: ignore poisoning.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The kernel's `nomem`: available pages below `amemthresh`. No occupancy seen yet counts as plenty.
fn is_low(control: &Control) -> bool {
    control.available.is_some_and(|a| a < u64::from(control.config.amemthresh))
}

/// Milliseconds of the first whole second strictly after `now`.
const fn next_second(now: Instant) -> u64 {
    (now.total_millis() / 1000).saturating_add(1).saturating_mul(1000)
}

#[cfg(test)]
mod tests;
