//! One shard: the index, one slab per address family, and a timer wheel. Single-threaded; the shared table
//! puts each shard behind a lock, the per-core table owns one.
//!
//! # Timers: lazy re-insertion
//!
//! Every live entry has exactly one *authoritative* wheel item, the one whose deadline equals the entry's
//! `Cold::scheduled`, and `scheduled <= expires` always holds. A touch that pushes `expires` later costs
//! nothing more (O(1), no wheel work); when the authoritative item fires early, the entry is re-inserted at its
//! current expiry. A touch that moves `expires` *earlier* than `scheduled` inserts a new item and makes it
//! the authoritative one; the old item becomes stale and is ignored when it fires (as is any item of a freed
//! slot: items carry the slot's generation). An entry is removed only when its own `expires <= now`, so no
//! item can make it fire early.

use core::net::{Ipv4Addr, Ipv6Addr};
use core::num::NonZeroU32;

use ipvs_proto::{ConnFlags, Instant};

use crate::config::Geometry;
use crate::drop::{verdict, DropEntry, Verdict};
use crate::entry::{
    Addr, Cold, ColdExtra, ConnId, ConnMut, ConnView, ExpireReason, Expired, Hot, InK, Meta, OutK, TplK, U64, V6_BIT,
};
use crate::error::{FillCportError, InsertError, RemoveError};
use crate::index::Index;
use crate::wheel::TimerWheel;

/// End of a slab's free list.
const NIL: u32 = u32::MAX;

/// How long a controller that is due but still controls conns is pushed back (the kernel's "expire later").
const EXPIRE_LATER_MS: u32 = 60_000;

/// The table-wide counters a shard updates: the global entry count (the hard capacity bound) and the number of
/// `NO_CPORT` entries (which enables the in-lookup's retry with client port 0).
pub(crate) trait Counters {
    /// Reserves room for one entry; `false` if the table is at capacity.
    fn try_reserve(&self) -> bool;
    /// Returns the room of `n` entries.
    fn release(&self, n: usize);
    /// Adds `n` to the `NO_CPORT` count.
    fn no_cport_add(&self, n: usize);
    /// Subtracts `n` from the `NO_CPORT` count.
    fn no_cport_sub(&self, n: usize);
    /// Whether any `NO_CPORT` entry exists.
    fn any_no_cport(&self) -> bool;
    /// Number of entries.
    fn len(&self) -> usize;
}

/// A wheel item: the slot and the generation it was scheduled for.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct WheelItem {
    loc: u32,
    generation: u32,
}

/// One address family's entries: hot and cold parts in parallel arrays, and a free list threaded through the
/// hot parts' `n_control` field.
#[derive(Debug)]
pub(crate) struct Slab<A> {
    pub(crate) hot: Vec<Hot<A>>,
    pub(crate) cold: Vec<Cold>,
    free: u32,
}

impl<A: Addr> Slab<A> {
    fn new(prealloc: usize) -> Self {
        Self { hot: Vec::with_capacity(prealloc), cold: Vec::with_capacity(prealloc), free: NIL }
    }

    /// A free slot (its generation still even), growing the arrays within `limit`.
    fn alloc(&mut self, limit: usize) -> Option<u32> {
        if self.free != NIL {
            let i = self.free;
            let next = self.hot[i as usize].m.n_control;
            self.free = next;
            // The free list is threaded through the hot lines, so the next alloc's first read is the new
            // head's hot line, and its writes go to that line and the cold one: fetch both now, so the miss
            // overlaps the work until that alloc instead of stalling it (the read of `n_control` above was
            // ~90 % of `alloc`'s samples in the new-conn bench without this).
            if let (Some(h), Some(c)) = (self.hot.get(next as usize), self.cold.get(next as usize)) {
                crate::index::prefetch(core::ptr::from_ref(h) as usize);
                crate::index::prefetch(core::ptr::from_ref(c) as usize);
            }
            return Some(i);
        }
        let len = self.hot.len();
        if len >= limit {
            return None;
        }
        if len == self.hot.capacity() {
            // Grow by a quarter (at least 64 slots), never past the shard's limit: memory stays bounded by the
            // capacity. Not by doubling: measured with `benches/conn_memory.rs`, a table of capacity 2^21 holding
            // 2^20 conns in 16 shards had 1.57 M slots (the shards just past 2^16 conns had doubled to 2^17), 96 B
            // of hot slab per conn, 66 B now; growing by a quarter leaves at most 25% of the slots unused. The
            // extra reallocations are cheap: glibc remaps large blocks rather than copying them, and the copies of
            // small ones sum to at most 4 times the final size.
            let add = (len / 4).max(64).min(limit - len);
            self.hot.reserve_exact(add);
            self.cold.reserve_exact(add);
        }
        self.hot.push(Hot::EMPTY);
        self.cold.push(Cold::default());
        Some(len as u32)
    }

    /// Puts a slot that [`alloc`](Self::alloc) returned but that was never filled back on the free list.
    fn unalloc(&mut self, i: u32) {
        self.hot[i as usize].m.n_control = self.free;
        self.free = i;
    }

    /// Frees a live slot: its generation moves on (so handles and wheel items go stale) and its cold part is
    /// reset.
    fn release(&mut self, i: u32) -> Cold {
        let h = &mut self.hot[i as usize];
        h.m.generation = h.m.generation.wrapping_add(1);
        debug_assert!(!h.m.is_live());
        h.m.n_control = self.free;
        self.free = i;
        core::mem::take(&mut self.cold[i as usize])
    }

    fn heap_bytes(&self) -> usize {
        self.hot.capacity() * core::mem::size_of::<Hot<A>>() + self.cold.capacity() * core::mem::size_of::<Cold>()
    }
}

/// An address family with a slab in every shard.
pub(crate) trait SlabOf: Addr {
    fn slab(sh: &Shard) -> &Slab<Self>;
    fn slab_mut(sh: &mut Shard) -> &mut Slab<Self>;
    /// The slot number of slab index `i` (the family bit set for IPv6).
    #[inline]
    fn loc(i: u32) -> u32 {
        if Self::V6 {
            i | V6_BIT
        } else {
            i
        }
    }
    /// Whether `loc` is in this family's slab.
    #[inline]
    fn owns(loc: u32) -> bool {
        (loc & V6_BIT != 0) == Self::V6
    }
}

impl SlabOf for Ipv4Addr {
    #[inline]
    fn slab(sh: &Shard) -> &Slab<Self> {
        &sh.v4
    }
    #[inline]
    fn slab_mut(sh: &mut Shard) -> &mut Slab<Self> {
        &mut sh.v4
    }
}

impl SlabOf for Ipv6Addr {
    #[inline]
    fn slab(sh: &Shard) -> &Slab<Self> {
        &sh.v6
    }
    #[inline]
    fn slab_mut(sh: &mut Shard) -> &mut Slab<Self> {
        &mut sh.v6
    }
}

/// Runs `$body` with `$slab` bound to the slab of `$loc` (by shared reference) and `$i` to its index.
macro_rules! by_loc {
    ($sh:expr, $loc:expr, |$slab:ident, $i:ident| $body:expr) => {{
        let loc: u32 = $loc;
        let $i = (loc & !V6_BIT) as usize;
        if loc & V6_BIT == 0 {
            let $slab = &$sh.v4;
            $body
        } else {
            let $slab = &$sh.v6;
            $body
        }
    }};
}

/// [`by_loc!`] with a mutable slab.
macro_rules! by_loc_mut {
    ($sh:expr, $loc:expr, |$slab:ident, $i:ident| $body:expr) => {{
        let loc: u32 = $loc;
        let $i = (loc & !V6_BIT) as usize;
        if loc & V6_BIT == 0 {
            let $slab = &mut $sh.v4;
            $body
        } else {
            let $slab = &mut $sh.v6;
            $body
        }
    }};
}

/// A typed [`NewConn`](crate::NewConn) with its hash.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewEntry<A> {
    pub(crate) hash: u64,
    pub(crate) proto: u8,
    pub(crate) caddr: A,
    pub(crate) cport: u16,
    pub(crate) vaddr: A,
    pub(crate) vport: u16,
    pub(crate) daddr: A,
    pub(crate) dport: u16,
    pub(crate) flags: u32,
    pub(crate) state: u8,
    pub(crate) dest: u32,
    pub(crate) fwmark: u32,
    pub(crate) timeout_ms: u32,
    pub(crate) control: Option<ConnId>,
}

impl<A: Addr> NewEntry<A> {
    fn in_key(&self) -> InK<A> {
        InK { proto: self.proto, caddr: self.caddr, cport: self.cport, vaddr: self.vaddr, vport: self.vport }
    }

    fn tpl_key(&self) -> TplK<A> {
        TplK { proto: self.proto, caddr: self.caddr, vaddr: self.vaddr, vport: self.vport }
    }
}

/// What [`Shard::settle`] did with a due entry.
#[derive(Debug)]
pub(crate) enum Settle {
    /// The handle was stale.
    Gone,
    /// Its expiry had moved later: re-inserted into the wheel.
    Rescheduled,
    /// Due but controlling conns, and pushing back was not allowed yet: the caller must settle it again.
    Pending,
    /// Due but controlling conns: pushed back 60 s.
    PushedBack,
    /// Expired and removed.
    Expired(Expired),
}

/// Probe-length statistics of a table (for the adversarial-key test and the benches).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeStats {
    /// Number of entries measured.
    pub entries: usize,
    /// Sum over entries of the number of buckets a lookup reads to find it.
    pub total_buckets: usize,
    /// Largest number of buckets read for one entry.
    pub max_buckets: usize,
    /// Number of index buckets in the table.
    pub n_buckets: usize,
}

impl ProbeStats {
    /// Mean number of buckets read per successful lookup.
    pub fn mean(&self) -> f64 {
        if self.entries == 0 {
            0.0
        } else {
            self.total_buckets as f64 / self.entries as f64
        }
    }

    pub(crate) fn add(&mut self, other: &Self) {
        self.entries += other.entries;
        self.total_buckets += other.total_buckets;
        self.max_buckets = self.max_buckets.max(other.max_buckets);
        self.n_buckets += other.n_buckets;
    }
}

/// Memory held by a table, from the capacities of its allocations.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct MemoryStats {
    /// Bytes of index buckets.
    pub index_bytes: usize,
    /// Bytes of hot and cold slab arrays (allocated capacity, live or not).
    pub slab_bytes: usize,
    /// Pending wheel items (each about 16 bytes plus slot-vector slack), stale ones included.
    pub wheel_items: usize,
}

impl MemoryStats {
    pub(crate) fn add(&mut self, other: &Self) {
        self.index_bytes += other.index_bytes;
        self.slab_bytes += other.slab_bytes;
        self.wheel_items += other.wheel_items;
    }
}

/// One shard (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) index: Index,
    pub(crate) v4: Slab<Ipv4Addr>,
    pub(crate) v6: Slab<Ipv6Addr>,
    wheel: TimerWheel<WheelItem>,
    /// Reused buffer for fired wheel items.
    fired: Vec<(Instant, WheelItem)>,
    /// This shard's number.
    idx: u16,
    /// Most entries this shard may hold.
    limit: usize,
    /// Live entries.
    live: usize,
}

impl Shard {
    pub(crate) fn new(idx: u16, g: &Geometry, preallocate: bool, now: Instant, tick: ipvs_proto::Duration) -> Self {
        let pre = if preallocate { g.shard_limit } else { 0 };
        Self {
            index: Index::new(g.n_buckets),
            v4: Slab::new(pre),
            v6: Slab::new(0),
            wheel: TimerWheel::new(now, tick),
            fired: Vec::new(),
            idx,
            limit: g.shard_limit,
            live: 0,
        }
    }

    /// Live entries.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// The earliest pending wheel deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    // ---- access by slot number -------------------------------------------------------------------------

    #[inline]
    pub(crate) fn meta(&self, loc: u32) -> &Meta {
        by_loc!(self, loc, |s, i| &s.hot[i].m)
    }

    #[inline]
    fn meta_mut(&mut self, loc: u32) -> &mut Meta {
        by_loc_mut!(self, loc, |s, i| &mut s.hot[i].m)
    }

    #[inline]
    fn cold(&self, loc: u32) -> &Cold {
        by_loc!(self, loc, |s, i| &s.cold[i])
    }

    /// The slot of a live handle of this shard.
    #[inline]
    pub(crate) fn resolve(&self, id: ConnId) -> Option<u32> {
        if id.shard() != usize::from(self.idx) {
            return None;
        }
        self.resolve_raw(id.slot(), id.generation())
    }

    #[inline]
    fn resolve_raw(&self, loc: u32, generation: u32) -> Option<u32> {
        let g = by_loc!(self, loc, |s, i| s.hot.get(i).map(|h| h.m.generation))?;
        (g == generation && g & 1 == 1).then_some(loc)
    }

    /// The handle of a live slot.
    #[inline]
    pub(crate) fn id_of(&self, loc: u32) -> ConnId {
        let g = self.meta(loc).generation;
        // Live generations are odd, hence nonzero; `MIN` is never used.
        ConnId::new(self.idx, loc, NonZeroU32::new(g).unwrap_or(NonZeroU32::MIN))
    }

    #[inline(always)]
    pub(crate) fn view(&self, loc: u32) -> ConnView {
        by_loc!(self, loc, |s, i| s.hot[i].view())
    }

    /// The handle and a snapshot of a live slot of family `A` (a lookup's result). Indexes `A`'s slab directly
    /// rather than dispatching on the slot's family bit twice as `(id_of(loc), view(loc))` does: the found
    /// path of a lookup then reads the entry's line once (see `Index::find` for the measurements).
    #[inline(always)]
    pub(crate) fn found<A: SlabOf>(&self, loc: u32) -> (ConnId, ConnView) {
        let h = &A::slab(self).hot[(loc & !V6_BIT) as usize];
        // Live generations are odd, hence nonzero; `MIN` is never used.
        let generation = NonZeroU32::new(h.m.generation).unwrap_or(NonZeroU32::MIN);
        (ConnId::new(self.idx, loc, generation), h.view())
    }

    /// Address of the hot part of `loc` (for prefetching).
    #[inline]
    pub(crate) fn entry_addr(&self, loc: u32) -> usize {
        by_loc!(self, loc, |s, i| s.hot.get(i).map_or(0, |h| core::ptr::from_ref(h) as usize))
    }

    pub(crate) fn conn_mut(&mut self, loc: u32) -> ConnMut<'_> {
        let id = self.id_of(loc);
        by_loc_mut!(self, loc, |s, i| {
            let h = &mut s.hot[i];
            ConnMut {
                id,
                caddr: h.caddr.ip(),
                vaddr: h.vaddr.ip(),
                daddr: h.daddr.ip(),
                m: &mut h.m,
                cold: &mut s.cold[i],
            }
        })
    }

    // ---- lookups ---------------------------------------------------------------------------------------

    #[inline]
    pub(crate) fn find_in<A: SlabOf>(&self, hash: u64, k: &InK<A>) -> Option<u32> {
        let slab = A::slab(self);
        self.index
            .find(hash, |loc| A::owns(loc) && slab.hot.get((loc & !V6_BIT) as usize).is_some_and(|h| h.matches_in(k)))
    }

    #[inline]
    pub(crate) fn find_out<A: SlabOf>(&self, hash: u64, k: &OutK<A>) -> Option<u32> {
        let slab = A::slab(self);
        self.index
            .find(hash, |loc| A::owns(loc) && slab.hot.get((loc & !V6_BIT) as usize).is_some_and(|h| h.matches_out(k)))
    }

    /// `ct_in_get`: a template matching `k` whose persistence-engine data equals `pe` (`None`: a template
    /// without). The data is compared only after the hot fields match, so the cold part is read at most once
    /// per candidate that is otherwise the template.
    #[inline]
    pub(crate) fn find_template<A: SlabOf>(&self, hash: u64, k: &TplK<A>, pe: Option<&[u8]>) -> Option<u32> {
        let slab = A::slab(self);
        self.index.find(hash, |loc| {
            let i = (loc & !V6_BIT) as usize;
            A::owns(loc)
                && slab.hot.get(i).is_some_and(|h| h.matches_template(k))
                && slab.cold.get(i).is_some_and(|c| c.pe_data() == pe)
        })
    }

    // ---- insert and remove -----------------------------------------------------------------------------

    /// Inserts `e` unless an entry of the same identity exists or the table or shard is full. Does not touch
    /// the controller (the caller has incremented its count).
    /// `pe` is the persistence-engine data of a template (the caller has checked it is one, and hashed `e` by
    /// the data).
    pub(crate) fn insert<A: SlabOf>(
        &mut self,
        now: Instant,
        e: &NewEntry<A>,
        pe: Option<&[u8]>,
        c: &impl Counters,
    ) -> Result<ConnId, InsertError> {
        let existing = if e.flags & ConnFlags::TEMPLATE.0 != 0 {
            self.find_template(e.hash, &e.tpl_key(), pe)
        } else {
            self.find_in(e.hash, &e.in_key())
        };
        if let Some(loc) = existing {
            return Err(InsertError::Exists(self.id_of(loc)));
        }
        if self.live >= self.limit || !c.try_reserve() {
            return Err(InsertError::Full);
        }
        let limit = self.limit;
        let Some(i) = A::slab_mut(self).alloc(limit) else {
            c.release(1);
            return Err(InsertError::Full);
        };
        let loc = A::loc(i);
        if !self.index.insert(e.hash, loc) {
            A::slab_mut(self).unalloc(i);
            c.release(1);
            return Err(InsertError::Full);
        }
        let now_ms = now.total_millis();
        let expires = now_ms.saturating_add(u64::from(e.timeout_ms));
        let slab = A::slab_mut(self);
        let hot = &mut slab.hot[i as usize];
        let generation = hot.m.generation.wrapping_add(1);
        *hot = Hot {
            caddr: e.caddr,
            vaddr: e.vaddr,
            daddr: e.daddr,
            m: Meta {
                cport: e.cport,
                vport: e.vport,
                dport: e.dport,
                protocol: e.proto,
                state: e.state,
                flags: e.flags,
                dest: e.dest,
                generation,
                hash: u64_of(e.hash),
                expires: u64_of(expires),
                timeout: e.timeout_ms,
                n_control: 0,
                in_pkts: 0,
                fwmark: e.fwmark,
            },
        };
        debug_assert!(hot.m.is_live());
        let extra = pe.map(|d| Box::new(ColdExtra { pe_data: Some(d.into()), ..ColdExtra::default() }));
        slab.cold[i as usize] =
            Cold { control: e.control, old_state: 0, scheduled: expires, sync_endtime: now_ms & !3, extra };
        self.live += 1;
        self.wheel.insert(Instant::from_millis(expires), WheelItem { loc, generation });
        if e.flags & ConnFlags::NO_CPORT.0 != 0 {
            c.no_cport_add(1);
        }
        Ok(self.id_of(loc))
    }

    /// Removes a live entry from the index and its slab and returns what the engine needs to know.
    pub(crate) fn unlink(&mut self, loc: u32, reason: ExpireReason, c: &impl Counters) -> Expired {
        let hash = self.meta(loc).hash.get();
        let removed = self.index.remove(hash, loc);
        debug_assert!(removed, "live entry {loc:#x} not indexed");
        let id = self.id_of(loc);
        let conn = self.view(loc);
        let cold = by_loc_mut!(self, loc, |s, i| s.release(i as u32));
        self.live -= 1;
        c.release(1);
        if conn.flags.contains(ConnFlags::NO_CPORT) {
            c.no_cport_sub(1);
        }
        Expired { id, conn, control: cold.control, old_state: cold.old_state, reason }
    }

    /// The kernel's `ip_vs_conn_del` on an entry controlling nothing: a controlled entry gets timeout 0 (so its
    /// controller may be dropped too, see [`dec_control`](Self::dec_control)), then it is unlinked.
    pub(crate) fn force_unlink(&mut self, loc: u32, reason: ExpireReason, c: &impl Counters) -> Expired {
        if self.cold(loc).control.is_some() {
            self.meta_mut(loc).timeout = 0;
        }
        self.unlink(loc, reason, c)
    }

    /// Forced removal of a handle (`remove`), or non-forced (`expire`).
    pub(crate) fn remove(&mut self, id: ConnId, forced: bool, c: &impl Counters) -> Result<Expired, RemoveError> {
        let loc = self.resolve(id).ok_or(RemoveError::Stale)?;
        let n = self.meta(loc).n_control;
        if n > 0 {
            return Err(RemoveError::Controlling(n));
        }
        Ok(if forced {
            self.force_unlink(loc, ExpireReason::Removed, c)
        } else {
            self.unlink(loc, ExpireReason::Expired, c)
        })
    }

    /// Increments the control count of a live controller.
    pub(crate) fn inc_control(&mut self, id: ConnId) -> bool {
        match self.resolve(id) {
            Some(loc) => {
                let m = self.meta_mut(loc);
                m.n_control = m.n_control.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// Decrements the control count of a controller after one of its conns left. With `cascade` (the leaving
    /// conn had timeout 0, i.e. was force-deleted) a controller that now controls nothing and is not an assured
    /// template is force-deleted too, as in the kernel's `ip_vs_conn_expire`.
    pub(crate) fn dec_control(&mut self, id: ConnId, cascade: bool, c: &impl Counters) -> Option<Expired> {
        let loc = self.resolve(id)?;
        let m = self.meta_mut(loc);
        m.n_control = m.n_control.saturating_sub(1);
        let drop = cascade && m.n_control == 0 && (!m.is_template() || m.state & crate::entry::TEMPLATE_ASSURED == 0);
        drop.then(|| self.force_unlink(loc, ExpireReason::ControllerDropped, c))
    }

    // ---- timers ----------------------------------------------------------------------------------------

    /// Makes an item at `at_ms` the authoritative one of `loc`.
    fn schedule(&mut self, loc: u32, at_ms: u64) {
        let generation = by_loc_mut!(self, loc, |s, i| {
            s.cold[i].scheduled = at_ms;
            s.hot[i].m.generation
        });
        self.wheel.insert(Instant::from_millis(at_ms), WheelItem { loc, generation });
    }

    /// Restarts the timer of `loc`: `expires = now + timeout`.
    pub(crate) fn touch(&mut self, now: Instant, loc: u32, timeout_ms: u32) {
        let new = now.total_millis().saturating_add(u64::from(timeout_ms));
        let earlier = by_loc_mut!(self, loc, |s, i| {
            let m = &mut s.hot[i].m;
            m.timeout = timeout_ms;
            let old = m.expires.get();
            m.expires.set(new);
            new < old && new < s.cold[i].scheduled
        });
        if earlier {
            self.schedule(loc, new);
        }
    }

    /// The kernel's `ip_vs_conn_expire_now`: the conn is due at `now` (if it was due later).
    pub(crate) fn expire_now(&mut self, now: Instant, loc: u32) {
        let now_ms = now.total_millis();
        let earlier = by_loc_mut!(self, loc, |s, i| {
            let m = &mut s.hot[i].m;
            if m.expires.get() > now_ms {
                m.expires.set(now_ms);
            }
            now_ms < s.cold[i].scheduled
        });
        if earlier {
            self.schedule(loc, now_ms);
        }
    }

    /// Polls the wheel: expires due entries into `out`, re-inserts entries whose expiry moved, and leaves due
    /// controllers that still control conns in `deferred` (the caller settles them after the controlled
    /// conns that expire at the same time have been unlinked).
    pub(crate) fn poll(&mut self, now: Instant, out: &mut Vec<Expired>, deferred: &mut Vec<ConnId>, c: &impl Counters) {
        let mut fired = core::mem::take(&mut self.fired);
        self.wheel.poll(now, &mut fired);
        for (deadline, item) in fired.drain(..) {
            let Some(loc) = self.resolve_raw(item.loc, item.generation) else {
                continue; // the slot was freed (and maybe reused): stale item
            };
            if self.cold(loc).scheduled != deadline.total_millis() {
                continue; // a later touch made another item authoritative
            }
            match self.settle_loc(now, loc, false, c) {
                Settle::Expired(e) => out.push(e),
                Settle::Pending => deferred.push(self.id_of(loc)),
                Settle::Gone | Settle::Rescheduled | Settle::PushedBack => {}
            }
        }
        self.fired = fired;
    }

    /// Settles an entry whose authoritative wheel item has fired (see [`Settle`]).
    pub(crate) fn settle(&mut self, now: Instant, id: ConnId, push_back: bool, c: &impl Counters) -> Settle {
        match self.resolve(id) {
            Some(loc) => self.settle_loc(now, loc, push_back, c),
            None => Settle::Gone,
        }
    }

    fn settle_loc(&mut self, now: Instant, loc: u32, push_back: bool, c: &impl Counters) -> Settle {
        let now_ms = now.total_millis();
        let m = self.meta(loc);
        let expires = m.expires.get();
        if expires > now_ms {
            self.schedule(loc, expires);
            return Settle::Rescheduled;
        }
        if m.n_control > 0 {
            if !push_back {
                return Settle::Pending;
            }
            let later = now_ms.saturating_add(u64::from(EXPIRE_LATER_MS));
            let m = self.meta_mut(loc);
            m.timeout = EXPIRE_LATER_MS;
            m.expires.set(later);
            self.schedule(loc, later);
            return Settle::PushedBack;
        }
        Settle::Expired(self.unlink(loc, ExpireReason::Timeout, c))
    }

    // ---- scans -----------------------------------------------------------------------------------------

    /// Calls `f` for every live slot.
    pub(crate) fn for_each_loc(&self, mut f: impl FnMut(u32)) {
        for (i, h) in self.v4.hot.iter().enumerate() {
            if h.m.is_live() {
                f(i as u32);
            }
        }
        for (i, h) in self.v6.hot.iter().enumerate() {
            if h.m.is_live() {
                f(i as u32 | V6_BIT);
            }
        }
    }

    /// Removes every entry (reason `Flushed`). Controllers are not updated: they go too.
    pub(crate) fn flush(&mut self, out: &mut Vec<Expired>, c: &impl Counters) {
        let mut locs = Vec::with_capacity(self.live);
        self.for_each_loc(|loc| locs.push(loc));
        let mut no_cport = 0;
        for loc in locs {
            let id = self.id_of(loc);
            let conn = self.view(loc);
            let cold = by_loc_mut!(self, loc, |s, i| s.release(i as u32));
            no_cport += usize::from(conn.flags.contains(ConnFlags::NO_CPORT));
            out.push(Expired {
                id,
                conn,
                control: cold.control,
                old_state: cold.old_state,
                reason: ExpireReason::Flushed,
            });
        }
        self.index.clear();
        c.release(self.live);
        c.no_cport_sub(no_cport);
        self.live = 0;
    }

    /// One `drop_entry` position: applies the rules of facts §3.9 to the entries indexed in bucket `b`.
    pub(crate) fn drop_scan(
        &mut self,
        b: usize,
        now: Instant,
        st: &mut DropEntry,
        ops_template: &mut impl FnMut(&ConnView) -> bool,
        out: &mut Vec<Expired>,
        c: &impl Counters,
    ) {
        let mut locs = [0u32; crate::index::SLOTS_PER_BUCKET];
        let mut n = 0;
        for loc in self.index.bucket_slots(b) {
            locs[n] = loc;
            n += 1;
        }
        for &loc in &locs[..n] {
            let m = self.meta(loc);
            if m.n_control > 0 {
                continue;
            }
            let drop = match verdict(m, || ops_template(&self.view(loc))) {
                Verdict::Drop => true,
                Verdict::TryDrop => st.todrop(now.total_millis(), m),
                Verdict::Keep => false,
            };
            if drop {
                out.push(self.force_unlink(loc, ExpireReason::Dropped, c));
            }
        }
    }

    // ---- other hooks -----------------------------------------------------------------------------------

    /// Makes a template unmatchable (vport = dport = 0xFFFF; its client port is 0 already, so its hash, which
    /// covers only the client side or its persistence-engine data, is unchanged). Its timer is left alone.
    pub(crate) fn invalidate_template(&mut self, id: ConnId) -> bool {
        let Some(loc) = self.resolve(id) else {
            return false;
        };
        let m = self.meta_mut(loc);
        if !m.is_template() {
            return false;
        }
        m.vport = 0xFFFF;
        m.dport = 0xFFFF;
        true
    }

    /// Completes a `NO_CPORT` conn within this shard (its new hash maps here).
    pub(crate) fn fill_cport_here<A: SlabOf>(
        &mut self,
        id: ConnId,
        hash: u64,
        cport: u16,
        c: &impl Counters,
    ) -> Result<ConnId, FillCportError> {
        let (loc, key) = self.fill_cport_check::<A>(id, cport)?;
        if let Some(other) = self.find_in(hash, &key) {
            return Err(FillCportError::Exists(self.id_of(other)));
        }
        let old = self.meta(loc).hash.get();
        self.index.remove(old, loc);
        let m = self.meta_mut(loc);
        m.cport = cport;
        m.flags &= !ConnFlags::NO_CPORT.0;
        m.hash.set(hash);
        let indexed = self.index.insert(hash, loc);
        debug_assert!(indexed, "the slot just freed is free");
        c.no_cport_sub(1);
        Ok(id)
    }

    /// Completes a `NO_CPORT` conn by moving it from this shard to `dst`.
    pub(crate) fn fill_cport_move<A: SlabOf>(
        &mut self,
        dst: &mut Self,
        id: ConnId,
        hash: u64,
        cport: u16,
        c: &impl Counters,
    ) -> Result<ConnId, FillCportError> {
        let (loc, key) = self.fill_cport_check::<A>(id, cport)?;
        if let Some(other) = dst.find_in(hash, &key) {
            return Err(FillCportError::Exists(dst.id_of(other)));
        }
        if dst.live >= dst.limit {
            return Err(FillCportError::Full);
        }
        let limit = dst.limit;
        let i_new = A::slab_mut(dst).alloc(limit).ok_or(FillCportError::Full)?;
        let loc_new = A::loc(i_new);
        if !dst.index.insert(hash, loc_new) {
            A::slab_mut(dst).unalloc(i_new);
            return Err(FillCportError::Full);
        }
        // Take the entry out of this shard.
        let old_hash = self.meta(loc).hash.get();
        self.index.remove(old_hash, loc);
        let i_old = loc & !V6_BIT;
        let mut hot = A::slab(self).hot[i_old as usize];
        let cold = A::slab_mut(self).release(i_old);
        self.live -= 1;
        // Put it into `dst` with the completed flow and a fresh generation.
        let generation = A::slab(dst).hot[i_new as usize].m.generation.wrapping_add(1);
        hot.m.generation = generation;
        hot.m.cport = cport;
        hot.m.flags &= !ConnFlags::NO_CPORT.0;
        hot.m.hash.set(hash);
        let expires = hot.m.expires.get();
        let slab = A::slab_mut(dst);
        slab.hot[i_new as usize] = hot;
        slab.cold[i_new as usize] = cold;
        dst.live += 1;
        dst.schedule(loc_new, expires);
        c.no_cport_sub(1);
        Ok(dst.id_of(loc_new))
    }

    /// The slot of a `NO_CPORT` conn that may be completed with `cport`, and its completed in-key.
    fn fill_cport_check<A: SlabOf>(&self, id: ConnId, cport: u16) -> Result<(u32, InK<A>), FillCportError> {
        let loc = self.resolve(id).ok_or(FillCportError::Stale)?;
        if !A::owns(loc) {
            return Err(FillCportError::Stale);
        }
        let m = self.meta(loc);
        if m.flags & ConnFlags::NO_CPORT.0 == 0 || cport == 0 {
            return Err(FillCportError::NotNoCport);
        }
        if m.n_control > 0 {
            return Err(FillCportError::Controlling(m.n_control));
        }
        let h = &A::slab(self).hot[(loc & !V6_BIT) as usize];
        Ok((loc, InK { proto: m.protocol, caddr: h.caddr, cport, vaddr: h.vaddr, vport: m.vport }))
    }

    /// The client tuple of a live handle: (protocol, client address, IPv6?).
    pub(crate) fn client_of(&self, id: ConnId) -> Option<(u8, core::net::IpAddr)> {
        let loc = self.resolve(id)?;
        let caddr = by_loc!(self, loc, |s, i| s.hot[i].caddr.ip());
        Some((self.meta(loc).protocol, caddr))
    }

    // ---- statistics ------------------------------------------------------------------------------------

    pub(crate) fn probe_stats(&self) -> ProbeStats {
        let mut st = ProbeStats { n_buckets: self.index.n_buckets(), ..ProbeStats::default() };
        self.for_each_loc(|loc| {
            let n = self.index.probe_len(self.meta(loc).hash.get(), loc).unwrap_or(usize::MAX);
            st.entries += 1;
            st.total_buckets = st.total_buckets.saturating_add(n);
            st.max_buckets = st.max_buckets.max(n);
        });
        st
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        MemoryStats {
            index_bytes: self.index.heap_bytes(),
            slab_bytes: self.v4.heap_bytes() + self.v6.heap_bytes(),
            wheel_items: self.wheel.len(),
        }
    }

    /// Checks the shard's invariants (tests).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut n = 0;
        self.for_each_loc(|loc| {
            n += 1;
            let m = self.meta(loc);
            let cold = self.cold(loc);
            assert!(cold.scheduled <= m.expires.get(), "scheduled after expiry: {loc:#x} {m:?} {cold:?}");
            assert!(self.index.probe_len(m.hash.get(), loc).is_some(), "live entry {loc:#x} not indexed");
            assert!(m.is_live());
        });
        assert_eq!(n, self.live);
    }
}

#[inline]
fn u64_of(v: u64) -> U64 {
    let mut x = U64::default();
    x.set(v);
    x
}
