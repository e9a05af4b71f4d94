//! A hierarchical hashed timer wheel driven by the caller's clock.
//!
//! [`TimerWheel`] is the expiry queue of the connection table. It is sans-IO: it never reads a clock;
//! time comes in as the `now: Instant` of [`TimerWheel::poll`], and [`TimerWheel::next_deadline`]
//! tells the caller when to call again.
//!
//! # Layout
//!
//! Time is counted in *ticks* of a fixed length chosen at construction (16 ms in production, 1 ms in
//! tests). The wheel has six levels of 64 slots, as in tokio's `runtime/time/wheel`; each level is 64
//! times coarser than the one below it:
//!
//! | level | slot width     | level range    | with 1 ms ticks | with 16 ms ticks |
//! | ----- | -------------- | -------------- | --------------- | ---------------- |
//! | 0     | 1 tick         | 64 ticks       | 64 ms           | ~1 s             |
//! | 1     | 64 ticks       | 2^12 ticks     | ~4 s            | ~65 s            |
//! | 2     | 2^12 ticks     | 2^18 ticks     | ~4 min          | ~70 min          |
//! | 3     | 2^18 ticks     | 2^24 ticks     | ~4.7 h          | ~3 days          |
//! | 4     | 2^24 ticks     | 2^30 ticks     | ~12 days        | ~199 days        |
//! | 5     | 2^30 ticks     | 2^36 ticks     | ~2.2 years      | ~35 years        |
//!
//! An entry goes to the level given by the highest bit in which its deadline tick differs from the
//! wheel's current tick (`level_for`), and to the slot given by the deadline's six bits at that
//! level (`slot_for`). Each level keeps a `u64` occupancy bitmap, so the next slot to process is
//! found with a mask and `trailing_zeros`: O(levels), whatever the number of ticks in between. A slot
//! of a level above 0 is processed when time reaches the slot's start; its entries are then
//! re-inserted ("cascaded") into lower levels, or fired if their tick has come.
//!
//! Slots are plain `Vec<(u64, T)>`: the deadline in milliseconds as inserted (so `poll` hands back
//! the exact [`Instant`]; the tick is recomputed with one division) and the caller's item. There is
//! no intrusive list, no back-pointer and no `unsafe`.
//!
//! # Timing rules
//!
//! * A deadline is rounded *up* to the next tick boundary, so nothing fires early. An item fires in
//!   the first `poll` whose `now` is at or past its rounded-up deadline: when `poll` is called at
//!   least once per tick, that is at most one tick after the deadline itself.
//! * A deadline whose rounded-up tick has already been reached goes to a "due" list and fires at the
//!   next `poll`, whatever its `now`.
//! * Time never goes backwards: a `now` earlier than the latest one seen is treated as the latest one.
//! * A deadline beyond the top level's range (past the end of the current 2^36-tick rotation) is
//!   clamped into slot 0 of the top level, which is processed exactly when that rotation ends; its
//!   entries are then re-inserted relative to the new time. They are never lost and never fire early.
//! * [`TimerWheel::next_deadline`] is exact: the earliest pending deadline rounded up to the tick
//!   (or the current time if something is due). Each slot caches the smallest deadline it holds,
//!   which is exact because entries leave a slot only all at once.
//!
//! # No cancellation: lazy re-insertion
//!
//! The wheel has no `remove` or `cancel`. When a connection is touched (a packet arrives and pushes its
//! expiry later), the table only updates the expiry stored in the connection entry: O(1), and the
//! wheel needs no back-pointer from the connection to its slot. When the stale wheel item fires, the
//! table compares it with the entry's current expiry and, if that is later, inserts the item again
//! at the new deadline. A connection removed for another reason leaves a stale item behind that the
//! table ignores when it fires (the table's ids carry a generation for this). So a busy connection
//! costs one wheel insertion per timeout period, not one per packet.
//!
//! # Cost
//!
//! `insert` is O(1). `poll` costs O(levels) per slot it processes plus O(1) per entry moved; an entry
//! is moved at most once per level. Empty stretches of time cost nothing: a jump of an hour visits
//! only the occupied slots in between. A processed slot keeps its allocation for reuse when it is
//! small (at most `RETAINED_CAPACITY` entries), so a busy wheel stops allocating once warm while a
//! one-off burst does not pin its memory.

use core::{array, fmt, mem};

use ipvs_proto::{Duration, Instant};

/// log2 of the number of slots per level.
const LEVEL_BITS: u32 = 6;

/// Slots per level.
const SLOTS: usize = 1 << LEVEL_BITS;

/// Mask selecting one level's slot index out of a tick count (after shifting).
const SLOT_MASK: u64 = SLOTS as u64 - 1;

/// Number of levels.
const LEVELS: usize = 6;

/// Index of the top level.
const TOP: usize = LEVELS - 1;

/// Ticks covered by one rotation of the top level (the whole wheel): 2^36.
const WHEEL_RANGE: u64 = 1 << (LEVEL_BITS * LEVELS as u32);

/// Largest capacity a processed slot keeps for reuse; bigger buffers are freed.
const RETAINED_CAPACITY: usize = 256;

/// A hierarchical hashed timer wheel of `T` items (see the [module docs](self)).
///
/// Items are `Copy` handles (the table uses connection ids); the wheel never inspects them.
pub struct TimerWheel<T> {
    /// Length of one tick in milliseconds (at least 1).
    tick_ms: u64,
    /// The latest `now` seen, in milliseconds.
    now_ms: u64,
    /// The current tick, `now_ms / tick_ms`: every tick up to and including it has been processed,
    /// so every entry in `levels` has a deadline tick strictly after it.
    elapsed: u64,
    /// The six levels, boxed so the wheel itself stays small.
    levels: Box<[Level<T>; LEVELS]>,
    /// Entries inserted with a deadline tick at or before `elapsed`; they fire at the next poll.
    due: Vec<(u64, T)>,
    /// Number of entries in `levels` and `due`.
    len: usize,
}

/// One level: 64 slots and the bitmap of the non-empty ones.
struct Level<T> {
    /// Bit `i` is set if and only if `slots[i]` is non-empty.
    occupied: u64,
    slots: [Slot<T>; SLOTS],
}

/// One slot: its entries and the smallest deadline among them.
struct Slot<T> {
    /// `(deadline in milliseconds as inserted, item)`.
    entries: Vec<(u64, T)>,
    /// Smallest deadline (milliseconds) in `entries`; `u64::MAX` when empty.
    min_deadline: u64,
}

/// The next slot to process and the tick at which to process it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct Expiration {
    level: usize,
    slot: usize,
    tick: u64,
}

impl<T: Copy> TimerWheel<T> {
    /// An empty wheel whose current time is `now`, counting time in ticks of `tick`.
    ///
    /// `tick` is the resolution: deadlines are rounded up to a multiple of it. A zero `tick` is
    /// treated as 1 ms.
    pub fn new(now: Instant, tick: Duration) -> Self {
        let tick_ms = tick.total_millis().max(1);
        let now_ms = now.total_millis();
        Self {
            tick_ms,
            now_ms,
            elapsed: now_ms / tick_ms,
            levels: Box::new(array::from_fn(|_| Level::new())),
            due: Vec::new(),
            len: 0,
        }
    }

    /// Schedules `item` to fire at `deadline` (rounded up to the tick). O(1).
    ///
    /// A deadline whose rounded-up tick has already been reached fires at the next [`poll`](Self::poll).
    /// The same item may be inserted any number of times; each insertion fires once.
    pub fn insert(&mut self, deadline: Instant, item: T) {
        self.len += 1;
        let deadline_ms = deadline.total_millis();
        let when = self.tick_of(deadline_ms);
        if when <= self.elapsed {
            self.due.push((deadline_ms, item));
        } else {
            self.place(when, deadline_ms, item);
        }
    }

    /// The earliest instant at which [`poll`](Self::poll) would return something, or `None` if the
    /// wheel is empty.
    ///
    /// This is the earliest pending deadline rounded up to the tick, or the current time (the latest
    /// `now` seen) if some item is already due. It is never earlier than the current time. O(levels).
    /// It changes only through [`insert`](Self::insert) and [`poll`](Self::poll).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.due.is_empty() {
            return Some(Instant::from_millis(self.now_ms));
        }
        let expiration = self.next_expiration()?;
        // The first slot to be processed holds the earliest deadline in the wheel: every other slot
        // covers a later range of ticks (see `next_expiration`).
        let min_deadline = self.levels[expiration.level].slots[expiration.slot].min_deadline;
        let at = self.tick_of(min_deadline).saturating_mul(self.tick_ms);
        Some(Instant::from_millis(at.max(self.now_ms)))
    }

    /// Advances the wheel to `now` and appends to `expired` every item whose rounded-up deadline is
    /// at or before `now`, as `(deadline as inserted, item)`.
    ///
    /// A `now` earlier than the latest one seen is treated as the latest one. Higher levels are
    /// cascaded down on the way; the cost depends on the number of occupied slots passed, not on the
    /// time elapsed. Calling it when nothing is due is cheap and harmless.
    pub fn poll(&mut self, now: Instant, expired: &mut Vec<(Instant, T)>) {
        let _ = self.advance(now, expired);
    }

    /// Number of pending items (including stale ones the table will ignore when they fire).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no item is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// [`poll`](Self::poll), returning the number of slots processed (for tests of the cost bound).
    fn advance(&mut self, now: Instant, expired: &mut Vec<(Instant, T)>) -> usize {
        self.now_ms = self.now_ms.max(now.total_millis());
        let now_tick = self.now_ms / self.tick_ms;

        self.len -= self.due.len();
        expired.extend(self.due.drain(..).map(|(deadline_ms, item)| (Instant::from_millis(deadline_ms), item)));

        let mut n_slots = 0;
        while let Some(expiration) = self.next_expiration() {
            if expiration.tick > now_tick {
                break;
            }
            n_slots += 1;
            debug_assert!(
                expiration.tick > self.elapsed,
                "processing a past slot: expiration={expiration:?}; elapsed={:#b}",
                self.elapsed
            );
            self.elapsed = expiration.tick;
            // Take the whole slot out first: entries re-inserted while processing it (a far deadline
            // clamped back into the same top-level slot) must wait for the next rotation.
            let mut entries = self.levels[expiration.level].take(expiration.slot);
            for (deadline_ms, item) in entries.drain(..) {
                let when = self.tick_of(deadline_ms);
                if when <= self.elapsed {
                    self.len -= 1;
                    expired.push((Instant::from_millis(deadline_ms), item));
                } else {
                    self.place(when, deadline_ms, item);
                }
            }
            self.levels[expiration.level].give_back(expiration.slot, entries);
        }
        self.elapsed = self.elapsed.max(now_tick);
        n_slots
    }

    /// Stores an entry whose deadline tick `when` is after the current tick. Does not touch `len`.
    fn place(&mut self, when: u64, deadline_ms: u64, item: T) {
        debug_assert!(when > self.elapsed, "when={when:#b}; elapsed={:#b}", self.elapsed);
        // Past the end of the current top-level rotation: park at the rotation's end (top level,
        // slot 0), where it is re-inserted relative to the new time.
        let key = when.min(rotation_end(self.elapsed));
        let level = level_for(self.elapsed, key);
        self.levels[level].push(slot_for(key, level), deadline_ms, item);
    }

    /// The next slot to process, or `None` if `levels` is empty. O(levels).
    ///
    /// An entry at level `L` shares every bit above level `L` with `elapsed` and its slot index is
    /// greater than `elapsed`'s at that level, so all of a level's entries lie inside the current
    /// level-`L + 1` slot, which ends before any slot of a higher level starts. Hence the lowest
    /// non-empty level holds the next slot, and that slot holds the earliest deadline. The one
    /// exception is the top level's slot 0, which holds the clamped entries and is processed at the
    /// end of the rotation, after everything else.
    fn next_expiration(&self) -> Option<Expiration> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let current = slot_for(self.elapsed, level);
            let level_start = self.elapsed & !(level_range(level) - 1);
            // Slots strictly after the current one (shifting twice keeps both shifts below 64).
            let later = lvl.occupied & ((u64::MAX << current) << 1);
            if later != 0 {
                let slot = later.trailing_zeros() as usize;
                return Some(Expiration { level, slot, tick: level_start + slot as u64 * slot_range(level) });
            }
            debug_assert!(
                level == TOP && lvl.occupied == 1,
                "slot at or before the current one: level={level}; occupied={:#066b}; elapsed={:#b}",
                lvl.occupied,
                self.elapsed
            );
            // At or before the current slot: due at the next rotation of this level (only the top
            // level's clamped slot 0 gets here; for anything else this is late, never early).
            let slot = lvl.occupied.trailing_zeros() as usize;
            let tick = (level_start + slot as u64 * slot_range(level)).saturating_add(level_range(level));
            return Some(Expiration { level, slot, tick });
        }
        None
    }

    /// The tick of a deadline, rounded up.
    fn tick_of(&self, deadline_ms: u64) -> u64 {
        deadline_ms.div_ceil(self.tick_ms)
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick_ms", &self.tick_ms)
            .field("now_ms", &self.now_ms)
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("due", &self.due.len())
            .field("levels", &self.levels)
            .finish()
    }
}

impl<T> Level<T> {
    fn new() -> Self {
        Self { occupied: 0, slots: array::from_fn(|_| Slot { entries: Vec::new(), min_deadline: u64::MAX }) }
    }

    fn push(&mut self, slot: usize, deadline_ms: u64, item: T) {
        let s = &mut self.slots[slot];
        let len = s.entries.len();
        if len == s.entries.capacity() && len >= 1024 {
            // A big slot grows by a quarter, not by doubling: measured with `benches/conn_memory.rs`, 2^20 conns
            // in 16 shards left their wheel slots (about 65536 items each, some just past a power of two) at 24 B
            // per conn for 16-byte items, 17.5 B now; glibc remaps large blocks rather than copying them.
            s.entries.reserve_exact(len / 4);
        }
        s.entries.push((deadline_ms, item));
        s.min_deadline = s.min_deadline.min(deadline_ms);
        self.occupied |= 1 << slot;
    }

    /// Empties `slot` and returns its entries.
    fn take(&mut self, slot: usize) -> Vec<(u64, T)> {
        self.occupied &= !(1 << slot);
        let s = &mut self.slots[slot];
        s.min_deadline = u64::MAX;
        mem::take(&mut s.entries)
    }

    /// Returns the drained buffer taken from `slot`, to reuse its allocation.
    fn give_back(&mut self, slot: usize, entries: Vec<(u64, T)>) {
        debug_assert!(entries.is_empty());
        let s = &mut self.slots[slot];
        if s.entries.capacity() == 0 && entries.capacity() <= RETAINED_CAPACITY {
            s.entries = entries;
        }
    }
}

impl<T> fmt::Debug for Level<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#066b}", self.occupied)
    }
}

/// The level at which an entry due at tick `when` is stored when the current tick is `elapsed`.
///
/// The highest bit in which the two differ, divided by six; differences within the lowest six bits
/// give level 0, and differences above the top level are clamped to it.
fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = ((elapsed ^ when) | SLOT_MASK).min(WHEEL_RANGE - 1);
    (masked.ilog2() / LEVEL_BITS) as usize
}

/// The slot of tick `when` at `level`: its six bits at that level.
fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (level as u32 * LEVEL_BITS)) & SLOT_MASK) as usize
}

/// Ticks covered by one slot of `level`.
fn slot_range(level: usize) -> u64 {
    1 << (level as u32 * LEVEL_BITS)
}

/// Ticks covered by all of `level`'s slots.
fn level_range(level: usize) -> u64 {
    1 << ((level as u32 + 1) * LEVEL_BITS)
}

/// The first tick after the top-level rotation containing `elapsed` (saturating in the last one,
/// where no tick lies beyond it anyway).
fn rotation_end(elapsed: u64) -> u64 {
    (elapsed | (WHEEL_RANGE - 1)).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEC: u64 = 1000;
    const HOUR: u64 = 3600 * SEC;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;

    fn ms(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn tick(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn poll(wheel: &mut TimerWheel<u32>, now: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        wheel.poll(ms(now), &mut out);
        out.into_iter().map(|(at, id)| (at.total_millis(), id)).collect()
    }

    fn next(wheel: &TimerWheel<u32>) -> Option<u64> {
        wheel.next_deadline().map(Instant::total_millis)
    }

    /// `level_for` by its definition: the lowest level whose next-higher bits agree, else the top.
    fn level_by_definition(elapsed: u64, when: u64) -> usize {
        (0..TOP)
            .find(|&level| elapsed >> ((level as u32 + 1) * LEVEL_BITS) == when >> ((level as u32 + 1) * LEVEL_BITS))
            .unwrap_or(TOP)
    }

    #[test]
    fn level_for_table() {
        #[rustfmt::skip]
        const CASES: &[(u64, u64, usize)] = &[
            // (elapsed, when, level)
            (0, 0, 0),
            (0, 1, 0),
            (0, 63, 0),
            (0, 64, 1),
            (63, 64, 1),
            (64, 127, 0),
            (100, 101, 0),
            (0, 4095, 1),
            (0, 4096, 2),
            (4095, 4096, 2),
            (0, (1 << 18) - 1, 2),
            (0, 1 << 18, 3),
            (0, 1 << 24, 4),
            (0, 1 << 30, 5),
            (0, (1 << 36) - 1, 5),
            (0, 1 << 36, 5),
            ((1 << 36) - 1, 1 << 36, 5),
            (0, u64::MAX, 5),
            (u64::MAX - 1, u64::MAX, 0),
            (u64::MAX - 64, u64::MAX, 1),
            (1 << 40, (1 << 40) + 63, 0),
            (1 << 40, (1 << 40) + (1 << 30), 5),
            (1 << 40, (1 << 41), 5),
        ];
        for &(elapsed, when, level) in CASES {
            assert_eq!(
                level_for(elapsed, when),
                level,
                "level_for(elapsed={elapsed:#b}, when={when:#b}); xor={:#b}",
                elapsed ^ when
            );
        }
    }

    #[test]
    fn level_for_every_level_and_slot() {
        for pos in 0..64u64 {
            assert_eq!(level_for(0, pos), 0, "level_for(0, {pos:#b})");
        }
        for level in 1..LEVELS {
            for pos in 1..64u64 {
                let when = pos << (level as u32 * LEVEL_BITS);
                assert_eq!(level_for(0, when), level, "level_for(0, {when:#b})");
                assert_eq!(level_for(0, when + 1), level, "level_for(0, {:#b})", when + 1);
                let below = if pos == 1 { level - 1 } else { level };
                assert_eq!(level_for(0, when - 1), below, "level_for(0, {:#b})", when - 1);
            }
        }
    }

    #[test]
    fn level_for_matches_its_definition() {
        let elapsed_values = [
            0,
            1,
            62,
            63,
            64,
            65,
            4095,
            4096,
            123_456_789,
            (1 << 36) - 70,
            (1 << 36) + 5,
            (1 << 50) - 3,
            u64::MAX - 5000,
        ];
        for &elapsed in &elapsed_values {
            for delta in 0..5000 {
                let Some(when) = elapsed.checked_add(delta) else { break };
                assert_eq!(
                    level_for(elapsed, when),
                    level_by_definition(elapsed, when),
                    "elapsed={elapsed:#b}; when={when:#b}"
                );
            }
            for shift in 0..64 {
                let when = elapsed.wrapping_add(1 << shift);
                assert_eq!(
                    level_for(elapsed, when),
                    level_by_definition(elapsed, when),
                    "elapsed={elapsed:#b}; when={when:#b}"
                );
            }
        }
    }

    #[test]
    fn slot_for_every_level_and_slot() {
        for level in 0..LEVELS {
            let shift = level as u32 * LEVEL_BITS;
            for pos in 0..64u64 {
                let when = pos << shift;
                assert_eq!(slot_for(when, level), pos as usize, "slot_for({when:#b}, {level})");
                let low = when | (slot_range(level) - 1);
                assert_eq!(slot_for(low, level), pos as usize, "slot_for({low:#b}, {level})");
                let high = when | !(level_range(level) - 1);
                assert_eq!(slot_for(high, level), pos as usize, "slot_for({high:#b}, {level})");
            }
        }
    }

    #[test]
    fn ranges() {
        #[rustfmt::skip]
        const CASES: &[(usize, u64, u64)] = &[
            (0, 1, 64),
            (1, 64, 1 << 12),
            (2, 1 << 12, 1 << 18),
            (3, 1 << 18, 1 << 24),
            (4, 1 << 24, 1 << 30),
            (5, 1 << 30, 1 << 36),
        ];
        for &(level, slot, range) in CASES {
            assert_eq!(slot_range(level), slot, "slot_range({level}) = {:#b}", slot_range(level));
            assert_eq!(level_range(level), range, "level_range({level}) = {:#b}", level_range(level));
        }
        assert_eq!(level_range(TOP), WHEEL_RANGE);
        assert_eq!(rotation_end(0), WHEEL_RANGE);
        assert_eq!(rotation_end(WHEEL_RANGE - 1), WHEEL_RANGE);
        assert_eq!(rotation_end(WHEEL_RANGE), 2 * WHEEL_RANGE);
        assert_eq!(rotation_end(u64::MAX - 3), u64::MAX);
    }

    #[test]
    fn fires_at_the_rounded_up_deadline() {
        let mut wheel = TimerWheel::new(ms(0), tick(16));
        assert!(wheel.is_empty());
        assert_eq!(next(&wheel), None);
        wheel.insert(ms(17), 1);
        wheel.insert(ms(32), 2);
        wheel.insert(ms(33), 3);
        assert_eq!(wheel.len(), 3);
        assert_eq!(next(&wheel), Some(32));
        assert_eq!(poll(&mut wheel, 31), []);
        assert_eq!(poll(&mut wheel, 32), [(17, 1), (32, 2)]);
        assert_eq!(next(&wheel), Some(48));
        assert_eq!(poll(&mut wheel, 47), []);
        assert_eq!(poll(&mut wheel, 60), [(33, 3)]);
        assert!(wheel.is_empty());
        assert_eq!(next(&wheel), None);
    }

    #[test]
    fn past_deadline_fires_at_the_next_poll() {
        let mut wheel = TimerWheel::new(ms(1000), tick(1));
        wheel.insert(ms(500), 1);
        wheel.insert(ms(1000), 2);
        assert_eq!(next(&wheel), Some(1000));
        assert_eq!(poll(&mut wheel, 1000), [(500, 1), (1000, 2)]);

        // With a coarse tick, a deadline inside the current tick is already rounded up past `now`.
        let mut wheel = TimerWheel::new(ms(40), tick(16));
        wheel.insert(ms(35), 3);
        wheel.insert(ms(20), 4);
        assert_eq!(next(&wheel), Some(40));
        assert_eq!(poll(&mut wheel, 40), [(20, 4)]);
        assert_eq!(next(&wheel), Some(48));
        assert_eq!(poll(&mut wheel, 48), [(35, 3)]);
    }

    #[test]
    fn time_never_goes_backwards() {
        let mut wheel = TimerWheel::new(ms(10_000), tick(1));
        wheel.insert(ms(10_500), 1);
        assert_eq!(poll(&mut wheel, 5_000), []);
        assert_eq!(poll(&mut wheel, 0), []);
        assert_eq!(next(&wheel), Some(10_500));
        assert_eq!(poll(&mut wheel, 10_600), [(10_500, 1)]);
        wheel.insert(ms(10_550), 2);
        // Polling "earlier" still counts as 10.6 s, so the item is due.
        assert_eq!(next(&wheel), Some(10_600));
        assert_eq!(poll(&mut wheel, 3), [(10_550, 2)]);
    }

    #[test]
    fn zero_tick_is_one_millisecond() {
        let mut wheel = TimerWheel::new(ms(0), tick(0));
        wheel.insert(ms(3), 1);
        assert_eq!(next(&wheel), Some(3));
        assert_eq!(poll(&mut wheel, 3), [(3, 1)]);
    }

    #[test]
    fn entries_of_a_higher_slot_fire_at_its_start_or_cascade() {
        let mut wheel = TimerWheel::new(ms(0), tick(1));
        // Level 2, slot 1: processed at tick 4096; 4096 fires there, 4100 cascades to level 0.
        wheel.insert(ms(4100), 1);
        wheel.insert(ms(4096), 2);
        assert_eq!(next(&wheel), Some(4096));
        let mut out = Vec::new();
        assert_eq!(wheel.advance(ms(4096), &mut out), 1);
        assert_eq!(out, [(ms(4096), 2)]);
        assert_eq!(next(&wheel), Some(4100));
        assert_eq!(poll(&mut wheel, 4099), []);
        assert_eq!(poll(&mut wheel, 4100), [(4100, 1)]);
    }

    #[test]
    fn an_hour_jump_visits_only_occupied_slots() {
        let start = 7 * DAY + 123;
        let mut wheel = TimerWheel::new(ms(start), tick(16));
        let mut out = Vec::new();
        assert_eq!(wheel.advance(ms(start + HOUR), &mut out), 0);
        assert!(out.is_empty());

        let now = start + HOUR;
        for (i, delta) in [SEC, 60 * SEC, 30 * 60 * SEC, 59 * 60 * SEC].into_iter().enumerate() {
            wheel.insert(ms(now + delta), i as u32);
        }
        let n_slots = wheel.advance(ms(now + HOUR), &mut out);
        assert_eq!(out.len(), 4);
        assert!(n_slots <= 4 * LEVELS, "{n_slots} slots for 4 entries");
        assert!(wheel.is_empty());
    }

    #[test]
    fn far_deadlines_fire_on_time() {
        // Beyond the top level with 1 ms ticks (2^36 ms is about 2.2 years).
        let start = 5 * DAY;
        let mut wheel = TimerWheel::new(ms(start), tick(1));
        let far = start + 3 * YEAR + 7;
        let days = start + 20 * DAY + 1;
        wheel.insert(ms(far), 1);
        wheel.insert(ms(days), 2);
        assert_eq!(next(&wheel), Some(days));
        assert_eq!(poll(&mut wheel, days - 1), []);
        assert_eq!(poll(&mut wheel, days), [(days, 2)]);
        assert_eq!(next(&wheel), Some(far));

        // The end of the rotation re-cascades the clamped entry without firing it.
        let mut out = Vec::new();
        assert_eq!(wheel.advance(ms(WHEEL_RANGE), &mut out), 1);
        assert!(out.is_empty());
        assert_eq!(wheel.len(), 1);
        assert_eq!(next(&wheel), Some(far));
        assert_eq!(poll(&mut wheel, far - 1), []);
        assert_eq!(poll(&mut wheel, far), [(far, 1)]);

        // A century with 16 ms ticks: clamped, then fires within one tick.
        let mut wheel = TimerWheel::new(ms(start), tick(16));
        let century = start + 100 * YEAR + 5;
        wheel.insert(ms(century), 3);
        let rounded = century.div_ceil(16) * 16;
        assert_eq!(next(&wheel), Some(rounded));
        assert_eq!(poll(&mut wheel, rounded - 1), []);
        assert_eq!(poll(&mut wheel, rounded), [(century, 3)]);
    }

    #[test]
    fn deadlines_near_the_end_of_time() {
        let mut wheel = TimerWheel::new(ms(u64::MAX - 100), tick(1));
        wheel.insert(ms(u64::MAX), 1);
        wheel.insert(ms(u64::MAX - 50), 2);
        assert_eq!(next(&wheel), Some(u64::MAX - 50));
        assert_eq!(poll(&mut wheel, u64::MAX - 1), [(u64::MAX - 50, 2)]);
        assert_eq!(poll(&mut wheel, u64::MAX), [(u64::MAX, 1)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn processed_slots_keep_small_allocations() {
        let mut wheel = TimerWheel::new(ms(0), tick(1));
        for id in 0..10 {
            wheel.insert(ms(5), id);
        }
        assert_eq!(poll(&mut wheel, 5).len(), 10);
        assert!(wheel.levels[0].slots[5].entries.capacity() >= 10);
        assert_eq!(wheel.levels[0].occupied, 0);
    }

    mod strategies {
        use super::*;

        /// One step of a random schedule.
        #[derive(Clone, Debug)]
        pub(super) enum Op {
            /// Insert at `now + offset` (clamped at zero; negative offsets are in the past).
            Insert(i64),
            /// Poll at `now + delta`.
            Poll(u64),
            /// Poll at `now - delta` (time must not go backwards).
            PollBack(u64),
            /// Poll exactly at `next_deadline()`, or one millisecond before it.
            PollNext { early: bool },
        }

        pub(super) fn tick_ms() -> impl Strategy<Value = u64> {
            prop_oneof![Just(1u64), Just(2), Just(7), Just(16), Just(1000)]
        }

        pub(super) fn start_ms() -> impl Strategy<Value = u64> {
            prop_oneof![
                0u64..1 << 44,
                // Just before the end of a top-level rotation for 1 ms and 16 ms ticks.
                (1u64..4, 0u64..10_000).prop_map(|(k, back)| (k << 36) - back),
                (1u64..4, 0u64..10_000).prop_map(|(k, back)| (k << 40) - back),
            ]
        }

        pub(super) fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (-2_000i64..2_000).prop_map(Op::Insert),
                3 => (0i64..600_000).prop_map(Op::Insert),
                2 => (0i64..(40 * DAY) as i64).prop_map(Op::Insert),
                1 => (0i64..1 << 42).prop_map(Op::Insert),
                4 => (0u64..100).prop_map(Op::Poll),
                2 => (0u64..200_000).prop_map(Op::Poll),
                1 => (0u64..30 * DAY).prop_map(Op::Poll),
                1 => (0u64..1 << 41).prop_map(Op::Poll),
                1 => (0u64..1_000).prop_map(Op::PollBack),
                3 => any::<bool>().prop_map(|early| Op::PollNext { early }),
            ]
        }
    }

    /// Reference: what is pending, and the clock as the wheel should see it.
    struct Model {
        tick_ms: u64,
        now: u64,
        /// `(id, deadline_ms)`.
        pending: Vec<(u32, u64)>,
    }

    impl Model {
        fn rounded(&self, deadline: u64) -> u64 {
            deadline.div_ceil(self.tick_ms) * self.tick_ms
        }

        fn expected_next(&self) -> Option<u64> {
            self.pending.iter().map(|&(_, d)| self.rounded(d)).min().map(|at| at.max(self.now))
        }
    }

    /// Polls both at `now`, checking that exactly the due items fire, on time.
    fn check_poll(wheel: &mut TimerWheel<u32>, model: &mut Model, now: u64) -> Result<(), TestCaseError> {
        model.now = model.now.max(now);
        let mut fired = poll(wheel, now);
        fired.sort_unstable_by_key(|&(_, id)| id);
        for pair in fired.windows(2) {
            prop_assert_ne!(pair[0].1, pair[1].1, "fired twice: {:?}", pair);
        }
        let mut expected: Vec<(u64, u32)> =
            model.pending.iter().filter(|&&(_, d)| model.rounded(d) <= model.now).map(|&(id, d)| (d, id)).collect();
        expected.sort_unstable_by_key(|&(_, id)| id);
        for &(deadline, _) in &fired {
            prop_assert!(deadline <= model.now, "fired early: deadline {} at {}", deadline, model.now);
            prop_assert!(model.rounded(deadline) - deadline < model.tick_ms);
        }
        prop_assert_eq!(&fired, &expected, "now={}", model.now);
        let (tick_ms, now) = (model.tick_ms, model.now);
        model.pending.retain(|&(_, d)| d.div_ceil(tick_ms) * tick_ms > now);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_item_fires_once_on_time(
            tick_ms in strategies::tick_ms(),
            start in strategies::start_ms(),
            ops in proptest::collection::vec(strategies::op(), 1..80),
        ) {
            let mut wheel = TimerWheel::new(ms(start), tick(tick_ms));
            let mut model = Model { tick_ms, now: start, pending: Vec::new() };
            let mut next_id = 0u32;
            for op in ops {
                match op {
                    strategies::Op::Insert(offset) => {
                        let deadline = model.now.saturating_add_signed(offset);
                        wheel.insert(ms(deadline), next_id);
                        model.pending.push((next_id, deadline));
                        next_id += 1;
                    }
                    strategies::Op::Poll(delta) => {
                        let now = model.now + delta;
                        check_poll(&mut wheel, &mut model, now)?;
                    }
                    strategies::Op::PollBack(delta) => {
                        let now = model.now.saturating_sub(delta);
                        check_poll(&mut wheel, &mut model, now)?;
                    }
                    strategies::Op::PollNext { early } => {
                        if let Some(at) = next(&wheel) {
                            let at = if early { at.saturating_sub(1) } else { at };
                            let before = model.pending.len();
                            check_poll(&mut wheel, &mut model, at)?;
                            if !early {
                                prop_assert!(model.pending.len() < before, "nothing fired at next_deadline {}", at);
                            }
                        }
                    }
                }
                prop_assert_eq!(wheel.len(), model.pending.len());
                prop_assert_eq!(next(&wheel), model.expected_next(), "wheel: {:?}", wheel);
            }
            // Nothing is lost: everything fires by the last rounded-up deadline.
            if let Some(last) = model.pending.iter().map(|&(_, d)| model.rounded(d)).max() {
                check_poll(&mut wheel, &mut model, last)?;
            }
            prop_assert!(wheel.is_empty());
            prop_assert!(model.pending.is_empty());
            prop_assert_eq!(next(&wheel), None);
        }

        #[test]
        fn large_jumps_fire_everything_in_few_slots(
            tick_ms in strategies::tick_ms(),
            start in strategies::start_ms(),
            offsets in proptest::collection::vec(0u64..10 * DAY, 1..64),
            jump in 10 * DAY..20 * DAY,
        ) {
            let mut wheel = TimerWheel::new(ms(start), tick(tick_ms));
            for (id, &offset) in offsets.iter().enumerate() {
                wheel.insert(ms(start + offset), id as u32);
            }
            let mut out = Vec::new();
            let n_slots = wheel.advance(ms(start + jump), &mut out);
            prop_assert_eq!(out.len(), offsets.len());
            prop_assert!(n_slots <= offsets.len() * LEVELS, "{} slots for {} entries", n_slots, offsets.len());
            prop_assert!(wheel.is_empty());
        }
    }
}
