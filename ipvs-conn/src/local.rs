//! The per-core table: one unshared shard, no locks.

use core::cell::Cell;
use core::fmt;

use ipvs_proto::{Duration, Instant};

use crate::config::{ConfigError, ConnTableConfig, Geometry};
use crate::drop::DropEntry;
use crate::entry::{ConnId, ConnMut, ConnView, Expired, NewConn};
use crate::error::{FillCportError, InsertError, RemoveError};
use crate::key::{InKey, InMiss, KeyHasher, OutKey, TemplateKey};
use crate::ops::{self, ShardRead, ShardWrite};
use crate::shard::{Counters, MemoryStats, ProbeStats, Shard};

/// Plain counters of a per-core table.
#[derive(Debug)]
pub(crate) struct LocalCounters {
    len: Cell<usize>,
    no_cport: Cell<usize>,
    capacity: usize,
}

impl Counters for LocalCounters {
    #[inline]
    fn try_reserve(&self) -> bool {
        let n = self.len.get();
        let ok = n < self.capacity;
        if ok {
            self.len.set(n + 1);
        }
        ok
    }

    #[inline]
    fn release(&self, n: usize) {
        self.len.set(self.len.get() - n);
    }

    fn no_cport_add(&self, n: usize) {
        self.no_cport.set(self.no_cport.get() + n);
    }

    fn no_cport_sub(&self, n: usize) {
        self.no_cport.set(self.no_cport.get() - n);
    }

    #[inline]
    fn any_no_cport(&self) -> bool {
        self.no_cport.get() != 0
    }

    fn len(&self) -> usize {
        self.len.get()
    }
}

/// A connection table owned by one core, for backends that steer every packet of a flow (both directions) to
/// the same core: the same semantics and API as [`ConnTable`](crate::ConnTable), over `&mut self` for changes
/// and `&self` for lookups, with one shard and no locks or atomics. `Send`, not `Sync`.
///
/// `config.n_shards` is ignored; handles always name shard 0.
pub struct LocalConnTable {
    shard: Shard,
    counters: LocalCounters,
    hasher: KeyHasher,
    geometry: Geometry,
    config: ConnTableConfig,
}

impl fmt::Debug for LocalConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConnTable")
            .field("capacity", &self.config.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl ShardRead for LocalConnTable {
    type C = LocalCounters;

    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    fn counters(&self) -> &LocalCounters {
        &self.counters
    }

    #[inline]
    fn read<R>(&self, _i: usize, f: impl FnOnce(&Shard) -> R) -> R {
        f(&self.shard)
    }

    #[inline]
    fn bucket_addr(&self, _i: usize, hash: u64) -> usize {
        ops::bucket_addr_of(self.shard.index.base_addr(), self.geometry.n_buckets, hash)
    }
}

impl ShardWrite for LocalConnTable {
    #[inline]
    fn write<R>(&mut self, _i: usize, f: impl FnOnce(&mut Shard, &LocalCounters) -> R) -> R {
        f(&mut self.shard, &self.counters)
    }

    fn write_all<R>(&mut self, f: impl FnOnce(&mut [&mut Shard], &LocalCounters) -> R) -> R {
        f(&mut [&mut self.shard], &self.counters)
    }

    fn write_two<R>(
        &mut self,
        _i: usize,
        _j: usize,
        _f: impl FnOnce(&mut Shard, &mut Shard, &LocalCounters) -> R,
    ) -> R {
        unreachable!("a per-core table has one shard, so no operation spans two")
    }
}

impl LocalConnTable {
    /// An empty table (see [`ConnTable::new`](crate::ConnTable::new)); `config.n_shards` is ignored.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first invalid field of `config`.
    pub fn new(config: ConnTableConfig, now: Instant) -> Result<Self, ConfigError> {
        let config = ConnTableConfig { n_shards: 1, ..config };
        config.validate()?;
        let geometry = Geometry::new(config.capacity, 1);
        Ok(Self {
            shard: Shard::new(0, &geometry, config.preallocate, now, config.tick),
            counters: LocalCounters { len: Cell::new(0), no_cport: Cell::new(0), capacity: config.capacity },
            hasher: KeyHasher::new(&config.hash_key),
            geometry,
            config,
        })
    }

    /// The configuration (with `n_shards` = 1).
    pub fn config(&self) -> &ConnTableConfig {
        &self.config
    }

    /// Number of entries.
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

    /// See [`ConnTable::insert`](crate::ConnTable::insert).
    ///
    /// # Errors
    ///
    /// As [`ConnTable::insert`](crate::ConnTable::insert).
    pub fn insert(&mut self, now: Instant, conn: NewConn) -> Result<ConnId, InsertError> {
        ops::insert(self, now, &conn, None, None)
    }

    /// See [`ConnTable::insert_after_miss`](crate::ConnTable::insert_after_miss).
    ///
    /// # Errors
    ///
    /// As [`ConnTable::insert`](crate::ConnTable::insert).
    pub fn insert_after_miss(&mut self, now: Instant, conn: NewConn, miss: &InMiss) -> Result<ConnId, InsertError> {
        ops::insert(self, now, &conn, None, Some(miss))
    }

    /// See [`ConnTable::insert_pe_template`](crate::ConnTable::insert_pe_template).
    ///
    /// # Errors
    ///
    /// As [`ConnTable::insert_pe_template`](crate::ConnTable::insert_pe_template).
    pub fn insert_pe_template(
        &mut self,
        now: Instant,
        template: NewConn,
        pe_data: &[u8],
    ) -> Result<ConnId, InsertError> {
        ops::insert(self, now, &template, Some(pe_data), None)
    }

    /// See [`ConnTable::lookup_in`](crate::ConnTable::lookup_in).
    #[inline]
    pub fn lookup_in(&self, key: &InKey) -> Option<(ConnId, ConnView)> {
        ops::lookup_in(self, key)
    }

    /// See [`ConnTable::lookup_in_or_miss`](crate::ConnTable::lookup_in_or_miss).
    ///
    /// # Errors
    ///
    /// As [`ConnTable::lookup_in_or_miss`](crate::ConnTable::lookup_in_or_miss).
    #[inline]
    pub fn lookup_in_or_miss(&self, key: &InKey) -> Result<(ConnId, ConnView), InMiss> {
        ops::lookup_in_or_miss(self, key)
    }

    /// See [`ConnTable::lookup_out`](crate::ConnTable::lookup_out).
    pub fn lookup_out(&self, key: &OutKey) -> Option<(ConnId, ConnView)> {
        ops::lookup_out(self, key)
    }

    /// See [`ConnTable::lookup_template`](crate::ConnTable::lookup_template).
    pub fn lookup_template(&self, key: &TemplateKey) -> Option<(ConnId, ConnView)> {
        ops::lookup_template(self, key, None)
    }

    /// See [`ConnTable::lookup_pe_template`](crate::ConnTable::lookup_pe_template).
    pub fn lookup_pe_template(&self, key: &TemplateKey, pe_data: Option<&[u8]>) -> Option<(ConnId, ConnView)> {
        ops::lookup_template(self, key, pe_data)
    }

    /// See [`ConnTable::lookup_burst`](crate::ConnTable::lookup_burst) (no locks here: hash and prefetch every
    /// bucket, prefetch every candidate entry, then probe).
    pub fn lookup_burst(&self, keys: &[InKey], out: &mut [Option<(ConnId, ConnView)>]) {
        ops::lookup_burst(self, keys, out);
    }

    /// See [`ConnTable::get`](crate::ConnTable::get).
    pub fn get(&self, id: ConnId) -> Option<ConnView> {
        ops::get(self, id)
    }

    /// See [`ConnTable::with_conn`](crate::ConnTable::with_conn).
    pub fn with_conn<R>(&mut self, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R> {
        ops::with_conn(self, id, f)
    }

    /// See [`ConnTable::update`](crate::ConnTable::update).
    pub fn update<R>(&mut self, now: Instant, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R> {
        ops::update(self, now, id, f)
    }

    /// See [`ConnTable::touch`](crate::ConnTable::touch).
    pub fn touch(&mut self, now: Instant, id: ConnId, timeout: Duration) -> bool {
        ops::touch(self, now, id, timeout)
    }

    /// See [`ConnTable::expire_now`](crate::ConnTable::expire_now).
    pub fn expire_now(&mut self, now: Instant, id: ConnId) -> bool {
        ops::expire_now(self, now, id)
    }

    /// See [`ConnTable::expire`](crate::ConnTable::expire).
    ///
    /// # Errors
    ///
    /// As [`ConnTable::expire`](crate::ConnTable::expire).
    pub fn expire(&mut self, id: ConnId) -> Result<Expired, RemoveError> {
        ops::expire(self, id)
    }

    /// See [`ConnTable::remove`](crate::ConnTable::remove).
    ///
    /// # Errors
    ///
    /// As [`ConnTable::remove`](crate::ConnTable::remove).
    pub fn remove(&mut self, id: ConnId, out: &mut Vec<Expired>) -> Result<(), RemoveError> {
        ops::remove(self, id, out)
    }

    /// See [`ConnTable::remove_if`](crate::ConnTable::remove_if).
    pub fn remove_if(&mut self, pred: impl FnMut(&ConnView) -> bool, out: &mut Vec<Expired>) -> usize {
        ops::remove_if(self, pred, out)
    }

    /// See [`ConnTable::invalidate_template`](crate::ConnTable::invalidate_template).
    pub fn invalidate_template(&mut self, id: ConnId) -> bool {
        ops::invalidate_template(self, id)
    }

    /// See [`ConnTable::fill_cport`](crate::ConnTable::fill_cport) (here the conn never changes shard, so the
    /// handle stays the same).
    ///
    /// # Errors
    ///
    /// As [`ConnTable::fill_cport`](crate::ConnTable::fill_cport).
    pub fn fill_cport(&mut self, id: ConnId, cport: u16) -> Result<ConnId, FillCportError> {
        ops::fill_cport(self, id, cport)
    }

    /// See [`ConnTable::poll_timeout`](crate::ConnTable::poll_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        ops::poll_timeout(self)
    }

    /// See [`ConnTable::handle_timeout`](crate::ConnTable::handle_timeout).
    pub fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<Expired>) {
        ops::handle_timeout(self, now, expired, None);
    }

    /// See [`ConnTable::handle_timeout_with_push_backs`](crate::ConnTable::handle_timeout_with_push_backs).
    pub fn handle_timeout_with_push_backs(
        &mut self,
        now: Instant,
        expired: &mut Vec<Expired>,
        pushed_back: &mut Vec<ConnId>,
    ) {
        ops::handle_timeout(self, now, expired, Some(pushed_back));
    }

    /// See [`ConnTable::drop_entry`](crate::ConnTable::drop_entry).
    pub fn drop_entry(
        &mut self,
        now: Instant,
        state: &mut DropEntry,
        ops_template: impl FnMut(&ConnView) -> bool,
        out: &mut Vec<Expired>,
    ) {
        ops::drop_entry(self, now, state, ops_template, out);
    }

    /// See [`ConnTable::for_each`](crate::ConnTable::for_each).
    pub fn for_each(&self, f: impl FnMut(ConnId, &ConnView)) {
        ops::for_each(self, f);
    }

    /// See [`ConnTable::snapshot`](crate::ConnTable::snapshot).
    pub fn snapshot(&self) -> Vec<(ConnId, ConnView)> {
        let mut v = Vec::with_capacity(self.len());
        self.for_each(|id, c| v.push((id, *c)));
        v
    }

    /// See [`ConnTable::flush`](crate::ConnTable::flush).
    pub fn flush(&mut self, out: &mut Vec<Expired>) {
        ops::flush(self, out);
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

    /// Checks the shard's invariants (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn check_invariants(&self) {
        self.shard.check_invariants();
        assert_eq!(self.shard.live(), self.len());
    }
}
