//! The shared, lock-sharded table.

use core::fmt;

use ipvs_proto::{Duration, Instant};

use crate::config::{ConfigError, ConnTableConfig, Geometry};
use crate::drop::DropEntry;
use crate::entry::{ConnId, ConnMut, ConnView, Expired, NewConn};
use crate::error::{FillCportError, InsertError, RemoveError};
use crate::key::{InKey, InMiss, KeyHasher, OutKey, TemplateKey};
use crate::ops::{self, ShardRead, ShardWrite};
use crate::primitive::{AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::shard::{Counters, MemoryStats, ProbeStats, Shard};

/// Aligns its content to 128 bytes so that neighbours never share a cache line (or an adjacent-line prefetch
/// pair), as crossbeam's `CachePadded` does on x86_64 and aarch64.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// One shard with the immutable facts needed to prefetch its buckets without the lock.
#[derive(Debug)]
struct ShardCell {
    lock: Mutex<Shard>,
    /// Address of the shard's bucket array (never reallocated).
    bucket_base: usize,
    n_buckets: usize,
}

/// The global counters of a shared table.
#[derive(Debug)]
pub(crate) struct SharedCounters {
    /// Entries (reserved before, released after an entry exists): the hard capacity bound.
    len: Padded<AtomicUsize>,
    /// `NO_CPORT` entries; read on lookup misses, so kept off `len`'s line.
    no_cport: Padded<AtomicUsize>,
    capacity: usize,
}

impl Counters for SharedCounters {
    #[inline]
    fn try_reserve(&self) -> bool {
        let cap = self.capacity;
        self.len.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < cap).then_some(n + 1)).is_ok()
    }

    #[inline]
    fn release(&self, n: usize) {
        if n > 0 {
            self.len.0.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn no_cport_add(&self, n: usize) {
        if n > 0 {
            self.no_cport.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn no_cport_sub(&self, n: usize) {
        if n > 0 {
            self.no_cport.0.fetch_sub(n, Ordering::Relaxed);
        }
    }

    #[inline]
    fn any_no_cport(&self) -> bool {
        self.no_cport.0.load(Ordering::Relaxed) != 0
    }

    fn len(&self) -> usize {
        self.len.0.load(Ordering::Relaxed)
    }
}

/// The connection table shared by all cores: `n_shards` lock-protected shards (see the [crate docs](crate)).
///
/// Every method takes `&self`; share it with an `Arc`. Each operation holds one shard lock for the duration
/// of a probe (the closures of [`with_conn`](Self::with_conn), [`update`](Self::update),
/// [`for_each`](Self::for_each), [`remove_if`](Self::remove_if) and [`drop_entry`](Self::drop_entry) run under
/// it: keep them short and do not call back into the table from them).
pub struct ConnTable {
    shards: Box<[Padded<ShardCell>]>,
    counters: SharedCounters,
    hasher: KeyHasher,
    geometry: Geometry,
    config: ConnTableConfig,
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("n_shards", &self.geometry.n_shards)
            .field("capacity", &self.config.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl ShardRead for ConnTable {
    type C = SharedCounters;

    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    fn counters(&self) -> &SharedCounters {
        &self.counters
    }

    #[inline]
    fn read<R>(&self, i: usize, f: impl FnOnce(&Shard) -> R) -> R {
        f(&self.shards[i].0.lock.lock())
    }

    #[inline]
    fn bucket_addr(&self, i: usize, hash: u64) -> usize {
        let cell = &self.shards[i].0;
        ops::bucket_addr_of(cell.bucket_base, cell.n_buckets, hash)
    }
}

impl ShardWrite for &ConnTable {
    #[inline]
    fn write<R>(&mut self, i: usize, f: impl FnOnce(&mut Shard, &SharedCounters) -> R) -> R {
        f(&mut self.shards[i].0.lock.lock(), &self.counters)
    }

    fn write_all<R>(&mut self, f: impl FnOnce(&mut [&mut Shard], &SharedCounters) -> R) -> R {
        let mut guards: Vec<MutexGuard<'_, Shard>> = self.shards.iter().map(|c| c.0.lock.lock()).collect();
        let mut shards: Vec<&mut Shard> = guards.iter_mut().map(|g| &mut **g).collect();
        f(&mut shards, &self.counters)
    }

    fn write_two<R>(&mut self, i: usize, j: usize, f: impl FnOnce(&mut Shard, &mut Shard, &SharedCounters) -> R) -> R {
        debug_assert_ne!(i, j);
        let (lo, hi) = (i.min(j), i.max(j));
        let mut a = self.shards[lo].0.lock.lock();
        let mut b = self.shards[hi].0.lock.lock();
        if i < j {
            f(&mut a, &mut b, &self.counters)
        } else {
            f(&mut b, &mut a, &self.counters)
        }
    }
}

impl ConnTable {
    /// An empty table. `now` is the wheel's start time (any instant not later than the first call's `now`).
    ///
    /// The index of every shard is allocated here (about 8 bytes per entry of capacity); the slabs are
    /// allocated here too with [`ConnTableConfig::preallocate`], or grow on demand up to their bound.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(config: ConnTableConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let geometry = Geometry::new(config.capacity, config.n_shards);
        let shards = (0..config.n_shards)
            .map(|i| {
                // `validate` bounds n_shards by 2^16, so `i` fits.
                let shard = Shard::new(i as u16, &geometry, config.preallocate, now, config.tick);
                let bucket_base = shard.index.base_addr();
                Padded(ShardCell { lock: Mutex::new(shard), bucket_base, n_buckets: geometry.n_buckets })
            })
            .collect();
        Ok(Self {
            shards,
            counters: SharedCounters {
                len: Padded(AtomicUsize::new(0)),
                no_cport: Padded(AtomicUsize::new(0)),
                capacity: config.capacity,
            },
            hasher: KeyHasher::new(&config.hash_key),
            geometry,
            config,
        })
    }

    /// The configuration the table was built with.
    pub fn config(&self) -> &ConnTableConfig {
        &self.config
    }

    /// Number of entries (conns and templates).
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hard bound on the number of entries.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// Number of shards.
    pub fn n_shards(&self) -> usize {
        self.geometry.n_shards
    }

    /// Inserts a conn or template expiring at `now + conn.timeout`; with `conn.control` set, the controller's
    /// control count is incremented (it cannot expire while this conn exists).
    ///
    /// # Errors
    ///
    /// [`InsertError::Exists`] with the handle of the existing entry of the same flow (of two racing inserts
    /// exactly one succeeds), [`InsertError::Full`] at capacity, [`InsertError::OnePacket`] for `ONE_PACKET`
    /// conns (never inserted), [`InsertError::ControlGone`], [`InsertError::Invalid`].
    pub fn insert(&self, now: Instant, conn: NewConn) -> Result<ConnId, InsertError> {
        ops::insert(&mut &*self, now, &conn, None, None)
    }

    /// [`insert`](Self::insert) of the conn whose flow [`lookup_in_or_miss`](Self::lookup_in_or_miss) just
    /// missed: the client tuple's hash is taken from `miss` instead of being computed again (when `conn` is that
    /// flow's conn and not a template; otherwise it is computed as `insert` does). The same checks and the same
    /// result as `insert`: a conn inserted meanwhile by someone else is still found ([`InsertError::Exists`]).
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn insert_after_miss(&self, now: Instant, conn: NewConn, miss: &InMiss) -> Result<ConnId, InsertError> {
        ops::insert(&mut &*self, now, &conn, None, Some(miss))
    }

    /// Inserts a persistence template carrying persistence-engine data (the SIP Call-ID of a `--pe sip`
    /// service, facts §8.5): it is hashed by the data (the kernel's `hashkey_raw`), and found only by
    /// [`lookup_pe_template`](Self::lookup_pe_template) with the same key *and* the same data, so one client
    /// network can hold one template per call. The data is kept in the template's cold part
    /// ([`ConnMut::pe_data`]) and never changes.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert); [`InsertError::Invalid`] as well when `template` is not a template or
    /// `pe_data` is empty or longer than [`MAX_PE_DATA`](crate::MAX_PE_DATA) (255) bytes.
    pub fn insert_pe_template(&self, now: Instant, template: NewConn, pe_data: &[u8]) -> Result<ConnId, InsertError> {
        ops::insert(&mut &*self, now, &template, Some(pe_data), None)
    }

    /// The conn of a client→service packet (`conn_in_get`, with the kernel's retry with client port 0 while
    /// `NO_CPORT` conns exist).
    #[inline]
    pub fn lookup_in(&self, key: &InKey) -> Option<(ConnId, ConnView)> {
        ops::lookup_in(self, key)
    }

    /// [`lookup_in`](Self::lookup_in) that, on a miss, returns the flow's hash for
    /// [`insert_after_miss`](Self::insert_after_miss).
    ///
    /// # Errors
    ///
    /// [`InMiss`] when no conn matches (the same cases in which `lookup_in` returns `None`).
    #[inline]
    pub fn lookup_in_or_miss(&self, key: &InKey) -> Result<(ConnId, ConnView), InMiss> {
        ops::lookup_in_or_miss(self, key)
    }

    /// The conn of a service→client packet (`conn_out_get`): the same entry the flow's [`InKey`] finds.
    pub fn lookup_out(&self, key: &OutKey) -> Option<(ConnId, ConnView)> {
        ops::lookup_out(self, key)
    }

    /// The persistence template of `key` without persistence-engine data (`ct_in_get`).
    pub fn lookup_template(&self, key: &TemplateKey) -> Option<(ConnId, ConnView)> {
        ops::lookup_template(self, key, None)
    }

    /// The persistence template of `key` whose persistence-engine data is `pe_data` (`ct_in_get` with the PE's
    /// `ct_match`: the hot fields of `key` and the data bytes must all be equal). `None` for `pe_data` is
    /// [`lookup_template`](Self::lookup_template): a template with data is never found without it, nor one
    /// without data with it.
    pub fn lookup_pe_template(&self, key: &TemplateKey, pe_data: Option<&[u8]>) -> Option<(ConnId, ConnView)> {
        ops::lookup_template(self, key, pe_data)
    }

    /// [`lookup_in`](Self::lookup_in) of every key: `out[i]` gets the result for `keys[i]` (for `i` below the
    /// shorter length). Hashes the keys and prefetches their buckets first, then probes shard by shard, one
    /// lock per shard touched per 32 keys.
    pub fn lookup_burst(&self, keys: &[InKey], out: &mut [Option<(ConnId, ConnView)>]) {
        ops::lookup_burst(self, keys, out);
    }

    /// A snapshot of a live conn.
    pub fn get(&self, id: ConnId) -> Option<ConnView> {
        ops::get(self, id)
    }

    /// Runs `f` on a live conn under its shard lock (state transitions, flags, counters, sync and cold data).
    /// `None` if the handle is stale.
    pub fn with_conn<R>(&self, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R> {
        ops::with_conn(&mut &*self, id, f)
    }

    /// [`with_conn`](Self::with_conn), then restarts the conn's timer with its (possibly changed) timeout: the
    /// per-packet "transition, then `conn_put`" in one lock. `None` if the handle is stale.
    pub fn update<R>(&self, now: Instant, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R> {
        ops::update(&mut &*self, now, id, f)
    }

    /// Sets the conn's timeout and restarts its timer: it expires at `now + timeout` unless touched again.
    /// O(1); moving the expiry later costs no timer work. `false` if the handle is stale.
    pub fn touch(&self, now: Instant, id: ConnId, timeout: Duration) -> bool {
        ops::touch(&mut &*self, now, id, timeout)
    }

    /// The kernel's `ip_vs_conn_expire_now`: the conn becomes due at `now` (if it was due later) and goes at
    /// the next [`handle_timeout`](Self::handle_timeout) (unless it controls conns). `false` if stale.
    pub fn expire_now(&self, now: Instant, id: ConnId) -> bool {
        ops::expire_now(&mut &*self, now, id)
    }

    /// Removes the conn now, as if its timer had fired: its controller's count is decremented, nothing else
    /// is dropped. This is the removal for `conn_reuse_mode` rescheduling (then [`insert`](Self::insert) the new
    /// conn).
    ///
    /// # Errors
    ///
    /// [`RemoveError::Stale`], or [`RemoveError::Controlling`] (left in place).
    pub fn expire(&self, id: ConnId) -> Result<Expired, RemoveError> {
        ops::expire(&mut &*self, id)
    }

    /// Force-deletes the conn (the kernel's `ip_vs_conn_del`, used for `expire_nodest_conn`): appended to
    /// `out`, followed by its controller if that now controls nothing and is not an assured template (and so on
    /// up the chain).
    ///
    /// # Errors
    ///
    /// [`RemoveError::Stale`], or [`RemoveError::Controlling`] (left in place).
    pub fn remove(&self, id: ConnId, out: &mut Vec<Expired>) -> Result<(), RemoveError> {
        ops::remove(&mut &*self, id, out)
    }

    /// Force-deletes every entry for which `pred` holds (the background `expire_nodest_conn` sweep), controlled
    /// conns before their controllers. Returns the number of matching controllers left in place because they
    /// still control conns.
    pub fn remove_if(&self, pred: impl FnMut(&ConnView) -> bool, out: &mut Vec<Expired>) -> usize {
        ops::remove_if(&mut &*self, pred, out)
    }

    /// Makes a template unmatchable (vport = dport = 0xFFFF, facts §3.7: `check_template` failed); it expires
    /// on its own. `false` if stale or not a template.
    pub fn invalidate_template(&self, id: ConnId) -> bool {
        ops::invalidate_template(&mut &*self, id)
    }

    /// Completes a `NO_CPORT` conn with its client port (the kernel's `ip_vs_conn_fill_cport`). The conn is
    /// rehashed and may move to another shard: use the returned handle from now on.
    ///
    /// # Errors
    ///
    /// See [`FillCportError`]; on error nothing changed.
    pub fn fill_cport(&self, id: ConnId, cport: u16) -> Result<ConnId, FillCportError> {
        ops::fill_cport(&mut &*self, id, cport)
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called (it may find nothing due then: items
    /// of touched or removed conns are cleaned up lazily).
    pub fn poll_timeout(&self) -> Option<Instant> {
        ops::poll_timeout(self)
    }

    /// Expires every entry due at `now` into `expired`. A due conn that controls others is pushed back 60 s
    /// (the kernel's "expire later"), unless all the conns it controls expire in this same call.
    pub fn handle_timeout(&self, now: Instant, expired: &mut Vec<Expired>) {
        ops::handle_timeout(&mut &*self, now, expired, None);
    }

    /// [`handle_timeout`](Self::handle_timeout), also listing in `pushed_back` the conns it pushed back (a
    /// sync master sends those again so a backup's copy does not expire either, facts §3.5).
    pub fn handle_timeout_with_push_backs(
        &self,
        now: Instant,
        expired: &mut Vec<Expired>,
        pushed_back: &mut Vec<ConnId>,
    ) {
        ops::handle_timeout(&mut &*self, now, expired, Some(pushed_back));
    }

    /// The kernel's `drop_entry` defense (facts §3.9): scans `n_buckets / 32` random index buckets and drops
    /// non-controlling entries by the per-kind rules (unassured templates, TCP SYN_RECV/SYNACK, SCTP INIT1/INIT
    /// always; established TCP/SCTP, UDP and the like, and templates for which `ops_template` says their service
    /// is one-packet, at the `todrop_entry` rate). Dropped entries (and controllers dropped with them) are
    /// appended to `out`.
    pub fn drop_entry(
        &self,
        now: Instant,
        state: &mut DropEntry,
        ops_template: impl FnMut(&ConnView) -> bool,
        out: &mut Vec<Expired>,
    ) {
        ops::drop_entry(&mut &*self, now, state, ops_template, out);
    }

    /// Calls `f` for every entry, shard by shard (each shard is a consistent snapshot).
    pub fn for_each(&self, f: impl FnMut(ConnId, &ConnView)) {
        ops::for_each(self, f);
    }

    /// Every entry, for `ipvsadm -L -c` and sync snapshots.
    pub fn snapshot(&self) -> Vec<(ConnId, ConnView)> {
        let mut v = Vec::with_capacity(self.len());
        self.for_each(|id, c| v.push((id, *c)));
        v
    }

    /// Removes every entry (all shard locks held: atomic with respect to other calls).
    pub fn flush(&self, out: &mut Vec<Expired>) {
        ops::flush(&mut &*self, out);
    }

    /// Probe lengths of the entries present (for tests and benches).
    #[doc(hidden)]
    pub fn probe_stats(&self) -> ProbeStats {
        ops::probe_stats(self)
    }

    /// Memory held, from allocation capacities (for tests and benches).
    #[doc(hidden)]
    pub fn memory_stats(&self) -> MemoryStats {
        ops::memory_stats(self)
    }

    /// Checks every shard's invariants (tests).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut live = 0;
        for i in 0..self.n_shards() {
            self.read(i, |sh| {
                sh.check_invariants();
                live += sh.live();
            });
        }
        assert_eq!(live, self.len());
    }
}
