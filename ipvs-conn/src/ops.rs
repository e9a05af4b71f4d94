//! The table operations, written once over a set of shards: the locked shards of [`ConnTable`](crate::ConnTable)
//! and the single owned shard of [`LocalConnTable`](crate::LocalConnTable) both implement [`ShardRead`] and
//! [`ShardWrite`].
//!
//! Locking discipline (shared table): an operation holds one shard lock at a time, except `flush` (all shards,
//! in ascending order) and `fill_cport` (two shards, ascending). Work that spans shards (a controlled conn and
//! its template usually live in different shards) is done in steps, each under one lock: insert increments the
//! controller's count *before* inserting the conn (and undoes it on failure), and removal decrements it
//! *after* the conn is gone, so a controller's count never drops below its number of live controlled conns,
//! and a controller never expires while it has one.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs_proto::{ConnFlags, DestId, Duration, Instant};

use crate::config::Geometry;
use crate::drop::DropEntry;
use crate::entry::{saturate_ms, Addr, ConnId, ConnMut, ConnView, Expired, Fam, NewConn, NO_DEST};
use crate::error::{FillCportError, InsertError, RemoveError};
use crate::index::{prefetch, Index};
use crate::key::{InKey, InMiss, KeyHasher, OutKey, TemplateKey, MAX_PE_DATA};
use crate::shard::{Counters, MemoryStats, NewEntry, ProbeStats, Settle, Shard, SlabOf};

/// Read access to a set of shards.
pub(crate) trait ShardRead {
    type C: Counters;
    fn geometry(&self) -> &Geometry;
    fn hasher(&self) -> &KeyHasher;
    fn counters(&self) -> &Self::C;
    /// Runs `f` on shard `i` (`i < n_shards`), under its lock if it has one.
    fn read<R>(&self, i: usize, f: impl FnOnce(&Shard) -> R) -> R;
    /// Address of the bucket `hash` maps to in shard `i`, without locking (for prefetching only).
    fn bucket_addr(&self, i: usize, hash: u64) -> usize;

    /// The shard of a hash: its top `shard_bits` bits.
    #[inline]
    fn shard_for(&self, hash: u64) -> usize {
        let bits = self.geometry().shard_bits;
        if bits == 0 {
            0
        } else {
            (hash >> (64 - bits)) as usize
        }
    }

    /// Whether a handle names an existing shard (a forged handle could name any).
    #[inline]
    fn has_shard(&self, id: ConnId) -> bool {
        id.shard() < self.geometry().n_shards
    }
}

/// Write access to a set of shards.
pub(crate) trait ShardWrite: ShardRead {
    /// Runs `f` on shard `i` (`i < n_shards`), under its lock if it has one.
    fn write<R>(&mut self, i: usize, f: impl FnOnce(&mut Shard, &Self::C) -> R) -> R;
    /// Runs `f` on every shard at once (all locks held, taken in ascending order).
    fn write_all<R>(&mut self, f: impl FnOnce(&mut [&mut Shard], &Self::C) -> R) -> R;
    /// Runs `f` on two distinct shards at once (locks taken in ascending order).
    fn write_two<R>(&mut self, i: usize, j: usize, f: impl FnOnce(&mut Shard, &mut Shard, &Self::C) -> R) -> R;
}

impl<T: ShardRead> ShardRead for &T {
    type C = T::C;
    fn geometry(&self) -> &Geometry {
        (**self).geometry()
    }
    fn hasher(&self) -> &KeyHasher {
        (**self).hasher()
    }
    fn counters(&self) -> &Self::C {
        (**self).counters()
    }
    #[inline]
    fn read<R>(&self, i: usize, f: impl FnOnce(&Shard) -> R) -> R {
        (**self).read(i, f)
    }
    #[inline]
    fn bucket_addr(&self, i: usize, hash: u64) -> usize {
        (**self).bucket_addr(i, hash)
    }
}

impl<T: ShardRead> ShardRead for &mut T {
    type C = T::C;
    fn geometry(&self) -> &Geometry {
        (**self).geometry()
    }
    fn hasher(&self) -> &KeyHasher {
        (**self).hasher()
    }
    fn counters(&self) -> &Self::C {
        (**self).counters()
    }
    #[inline]
    fn read<R>(&self, i: usize, f: impl FnOnce(&Shard) -> R) -> R {
        (**self).read(i, f)
    }
    #[inline]
    fn bucket_addr(&self, i: usize, hash: u64) -> usize {
        (**self).bucket_addr(i, hash)
    }
}

impl<T: ShardWrite> ShardWrite for &mut T {
    #[inline]
    fn write<R>(&mut self, i: usize, f: impl FnOnce(&mut Shard, &Self::C) -> R) -> R {
        (**self).write(i, f)
    }
    fn write_all<R>(&mut self, f: impl FnOnce(&mut [&mut Shard], &Self::C) -> R) -> R {
        (**self).write_all(f)
    }
    fn write_two<R>(&mut self, i: usize, j: usize, f: impl FnOnce(&mut Shard, &mut Shard, &Self::C) -> R) -> R {
        (**self).write_two(i, j, f)
    }
}

/// Address of the bucket `hash` maps to, given a shard's bucket array address and length.
#[inline]
pub(crate) fn bucket_addr_of(base: usize, n_buckets: usize, hash: u64) -> usize {
    base + Index::home_of(hash, n_buckets) * core::mem::size_of::<crate::index::Bucket>()
}

// ---- lookups ------------------------------------------------------------------------------------------------

/// A found conn.
pub(crate) type Found = Option<(ConnId, ConnView)>;

/// The in-lookup of one family. The retry for `NO_CPORT` conns is out of line ([`lookup_in_no_cport`]), so
/// the common path (hash, one probe, copy out) inlines into the caller as one short block.
#[inline(always)]
fn lookup_in_typed<S: ShardRead, A: SlabOf>(s: &S, k: &crate::entry::InK<A>) -> Found {
    let hash = A::hash_client(s.hasher(), k.proto, k.caddr, k.cport);
    let found = s.read(s.shard_for(hash), |sh| sh.find_in(hash, k).map(|loc| sh.found::<A>(loc)));
    if found.is_none() && k.cport != 0 && s.counters().any_no_cport() {
        return lookup_in_no_cport(s, k);
    }
    found
}

/// The kernel's retry: conns created without a client port (`NO_CPORT`) match a query with port 0.
#[cold]
#[inline(never)]
fn lookup_in_no_cport<S: ShardRead, A: SlabOf>(s: &S, k: &crate::entry::InK<A>) -> Found {
    let k0 = crate::entry::InK { cport: 0, ..*k };
    let hash = A::hash_client(s.hasher(), k0.proto, k0.caddr, 0);
    s.read(s.shard_for(hash), |sh| sh.find_in(hash, &k0).map(|loc| sh.found::<A>(loc)))
}

#[inline]
pub(crate) fn lookup_in<S: ShardRead>(s: &S, key: &InKey) -> Found {
    match key.typed()? {
        Fam::V4(k) => lookup_in_typed(s, &k),
        Fam::V6(k) => lookup_in_typed(s, &k),
    }
}

/// [`lookup_in_typed`] that keeps the hash of a miss for the insert that usually follows.
#[inline(always)]
fn lookup_in_or_miss_typed<S: ShardRead, A: SlabOf>(
    s: &S,
    k: &crate::entry::InK<A>,
) -> Result<(ConnId, ConnView), Option<u64>> {
    let hash = A::hash_client(s.hasher(), k.proto, k.caddr, k.cport);
    let found = s.read(s.shard_for(hash), |sh| sh.find_in(hash, k).map(|loc| sh.found::<A>(loc)));
    let found = match found {
        None if k.cport != 0 && s.counters().any_no_cport() => lookup_in_no_cport(s, k),
        f => f,
    };
    found.ok_or(Some(hash))
}

/// [`lookup_in`], returning on a miss what [`insert`] needs to skip hashing the flow again.
#[inline]
pub(crate) fn lookup_in_or_miss<S: ShardRead>(s: &S, key: &InKey) -> Result<(ConnId, ConnView), InMiss> {
    let r = match key.typed() {
        Some(Fam::V4(k)) => lookup_in_or_miss_typed(s, &k),
        Some(Fam::V6(k)) => lookup_in_or_miss_typed(s, &k),
        None => Err(None),
    };
    r.map_err(|hash| InMiss { protocol: u8::from(key.protocol), caddr: key.caddr, cport: key.cport, hash })
}

fn lookup_out_typed<S: ShardRead, A: SlabOf>(s: &S, k: &crate::entry::OutK<A>) -> Found {
    let hash = A::hash_client(s.hasher(), k.proto, k.daddr, k.dport);
    s.read(s.shard_for(hash), |sh| sh.find_out(hash, k).map(|loc| sh.found::<A>(loc)))
}

pub(crate) fn lookup_out<S: ShardRead>(s: &S, key: &OutKey) -> Found {
    match key.typed()? {
        Fam::V4(k) => lookup_out_typed(s, &k),
        Fam::V6(k) => lookup_out_typed(s, &k),
    }
}

fn lookup_template_typed<S: ShardRead, A: SlabOf>(s: &S, k: &crate::entry::TplK<A>, pe: Option<&[u8]>) -> Found {
    let hash = match pe {
        Some(d) => s.hasher().pe(d),
        None => A::hash_client(s.hasher(), k.proto, k.caddr, 0),
    };
    s.read(s.shard_for(hash), |sh| sh.find_template(hash, k, pe).map(|loc| sh.found::<A>(loc)))
}

/// `ct_in_get`: the template of `key` carrying persistence-engine data `pe` (`None`: one without).
pub(crate) fn lookup_template<S: ShardRead>(s: &S, key: &TemplateKey, pe: Option<&[u8]>) -> Found {
    match key.typed()? {
        Fam::V4(k) => lookup_template_typed(s, &k, pe),
        Fam::V6(k) => lookup_template_typed(s, &k, pe),
    }
}

pub(crate) fn get<S: ShardRead>(s: &S, id: ConnId) -> Option<ConnView> {
    if !s.has_shard(id) {
        return None;
    }
    s.read(id.shard(), |sh| sh.resolve(id).map(|loc| sh.view(loc)))
}

/// Keys per burst chunk (stack arrays; enough misses in flight to cover memory latency).
const BURST: usize = 32;

// The shard sort of a burst packs an item index into 5 bits.
const _: () = assert!(BURST <= 32);

/// One key of a burst chunk: its hash and shard, 16 bytes. The typed key is derived again from the `InKey` in
/// pass 3 rather than stored (it is up to 40 bytes, and was copied into every item); with the shard sort
/// below, this took `lookup_burst` from 451 to 407 instructions per key on a one-shard table and from 622 to
/// 525 with 16 shards (callgrind, cache-resident 4096-entry tables, 32-key bursts).
#[derive(Clone, Copy)]
struct BurstItem {
    hash: u64,
    shard: u32,
    /// Whether the key is well formed (both addresses of one family).
    valid: bool,
}

pub(crate) fn lookup_burst<S: ShardRead>(s: &S, keys: &[InKey], out: &mut [Found]) {
    let n = keys.len().min(out.len());
    for (kc, oc) in keys[..n].chunks(BURST).zip(out[..n].chunks_mut(BURST)) {
        burst_chunk(s, kc, oc);
    }
}

/// Pass 1: hash every key and prefetch its bucket (no lock needed: bucket arrays never move). Passes 2 and 3
/// go shard by shard in shard order, one lock per shard touched each.
fn burst_chunk<S: ShardRead>(s: &S, keys: &[InKey], out: &mut [Found]) {
    let n = keys.len();
    let mut items = [BurstItem { hash: 0, shard: 0, valid: false }; BURST];
    for (item, key) in items.iter_mut().zip(keys) {
        let hash = match key.typed() {
            Some(Fam::V4(k)) => Ipv4Addr::hash_client(s.hasher(), k.proto, k.caddr, k.cport),
            Some(Fam::V6(k)) => Ipv6Addr::hash_client(s.hasher(), k.proto, k.caddr, k.cport),
            None => continue,
        };
        let shard = s.shard_for(hash);
        prefetch(s.bucket_addr(shard, hash));
        // `shard_for` takes at most 16 bits of the hash.
        *item = BurstItem { hash, shard: shard as u32, valid: true };
    }
    let mut order = [0u8; BURST];
    for (i, o) in order.iter_mut().enumerate().take(n) {
        *o = i as u8;
    }
    // Runs of equal shard in `order`, as (shard, start, end).
    let mut groups = [(0usize, 0usize, 0usize); BURST];
    let mut n_groups = 0;
    if s.geometry().n_shards == 1 {
        // One shard (the per-core table): one group, no sorting.
        groups[0] = (0, 0, n);
        n_groups = usize::from(n > 0);
    } else {
        // Order the chunk by shard: sort `shard << 5 | index` (shards have at most 16 bits). The insertion sort
        // used before cost about 130 instructions per key with 16 shards (callgrind, 32-key bursts), more than
        // the probe itself; `sort_unstable` of the packed words costs a fraction of that.
        let mut packed = [0u32; BURST];
        for (i, p) in packed.iter_mut().enumerate().take(n) {
            *p = (items[i].shard << 5) | i as u32;
        }
        packed[..n].sort_unstable();
        for (o, p) in order.iter_mut().zip(&packed[..n]) {
            *o = (p & 31) as u8;
        }
        let mut start = 0;
        while start < n {
            let shard = packed[start] >> 5;
            let mut end = start + 1;
            while end < n && packed[end] >> 5 == shard {
                end += 1;
            }
            groups[n_groups] = (shard as usize, start, end);
            n_groups += 1;
            start = end;
        }
    }
    // Pass 2: prefetch every key's first candidate entry (one short lock per shard), so the entry misses of
    // all shards overlap instead of being taken one shard after the other.
    for &(shard, start, end) in &groups[..n_groups] {
        s.read(shard, |sh| {
            for &i in &order[start..end] {
                let it = &items[usize::from(i)];
                if it.valid {
                    if let Some(loc) = sh.index.first_candidate(it.hash) {
                        prefetch(sh.entry_addr(loc));
                    }
                }
            }
        });
    }
    // Pass 3: probe and copy out (the full probe: what pass 2 saw is only a hint).
    for &(shard, start, end) in &groups[..n_groups] {
        s.read(shard, |sh| {
            for &i in &order[start..end] {
                let i = usize::from(i);
                probe_into(sh, items[i].hash, &keys[i], &mut out[i]);
            }
        });
    }
    // Misses may still match a NO_CPORT conn (another hash): take the single-key path for those.
    if s.counters().any_no_cport() {
        for (o, key) in out.iter_mut().zip(keys) {
            if o.is_none() && key.cport != 0 {
                *o = lookup_in(s, key);
            }
        }
    }
}

/// Pass 3 of a burst for one key: writes the found conn (or `None`) into `slot`.
#[inline(always)]
fn probe_into(sh: &Shard, hash: u64, key: &InKey, slot: &mut Found) {
    let found = match key.typed() {
        Some(Fam::V4(k)) => sh.find_in(hash, &k).map(|loc| sh.found::<Ipv4Addr>(loc)),
        Some(Fam::V6(k)) => sh.find_in(hash, &k).map(|loc| sh.found::<Ipv6Addr>(loc)),
        None => None,
    };
    *slot = found;
}

pub(crate) fn for_each<S: ShardRead>(s: &S, mut f: impl FnMut(ConnId, &ConnView)) {
    for i in 0..s.geometry().n_shards {
        s.read(i, |sh| sh.for_each_loc(|loc| f(sh.id_of(loc), &sh.view(loc))));
    }
}

pub(crate) fn poll_timeout<S: ShardRead>(s: &S) -> Option<Instant> {
    (0..s.geometry().n_shards).filter_map(|i| s.read(i, Shard::next_deadline)).min()
}

pub(crate) fn probe_stats<S: ShardRead>(s: &S) -> ProbeStats {
    let mut st = ProbeStats::default();
    for i in 0..s.geometry().n_shards {
        st.add(&s.read(i, Shard::probe_stats));
    }
    st
}

pub(crate) fn memory_stats<S: ShardRead>(s: &S) -> MemoryStats {
    let mut st = MemoryStats::default();
    for i in 0..s.geometry().n_shards {
        st.add(&s.read(i, Shard::memory_stats));
    }
    st
}

// ---- insert -------------------------------------------------------------------------------------------------

fn entry<A: Addr>(
    h: &KeyHasher,
    n: &NewConn,
    pe: Option<&[u8]>,
    miss: Option<&InMiss>,
    caddr: A,
    vaddr: A,
    daddr: A,
) -> NewEntry<A> {
    let proto = u8::from(n.protocol);
    // A template is hashed without its port (or by its data), never as the flow a miss hashed.
    let known = miss.filter(|_| !n.is_template()).and_then(|m| m.hash_for(proto, n.caddr, n.cport));
    NewEntry {
        hash: match (pe, known) {
            (Some(d), _) => h.pe(d),
            (None, Some(hash)) => hash,
            (None, None) => A::hash_client(h, proto, caddr, n.cport),
        },
        proto,
        caddr,
        cport: n.cport,
        vaddr,
        vport: n.vport,
        daddr,
        dport: n.dport,
        flags: n.flags.bits(),
        state: n.state,
        dest: n.dest.map_or(NO_DEST, |d| d.0),
        fwmark: n.fwmark,
        timeout_ms: saturate_ms(n.timeout),
        control: n.control,
    }
}

/// Validates `n` (and its persistence-engine data `pe`: templates only, 1..=255 bytes) and types it by family.
fn typed_new(
    h: &KeyHasher,
    n: &NewConn,
    pe: Option<&[u8]>,
    miss: Option<&InMiss>,
) -> Result<Fam<NewEntry<Ipv4Addr>, NewEntry<Ipv6Addr>>, InsertError> {
    if n.flags.contains(ConnFlags::ONE_PACKET) {
        return Err(InsertError::OnePacket);
    }
    if let Some(d) = pe {
        if !n.is_template() || d.is_empty() || d.len() > MAX_PE_DATA {
            return Err(InsertError::Invalid);
        }
    }
    if n.flags.intersects(ConnFlags::TEMPLATE | ConnFlags::NO_CPORT) && n.cport != 0 {
        return Err(InsertError::Invalid);
    }
    if n.dest == Some(DestId(NO_DEST)) {
        return Err(InsertError::Invalid);
    }
    match (n.caddr, n.vaddr, n.daddr) {
        (IpAddr::V4(c), IpAddr::V4(v), IpAddr::V4(d)) => Ok(Fam::V4(entry(h, n, pe, miss, c, v, d))),
        (IpAddr::V6(c), IpAddr::V6(v), IpAddr::V6(d)) => Ok(Fam::V6(entry(h, n, pe, miss, c, v, d))),
        _ => Err(InsertError::Invalid),
    }
}

/// Inserts `n`; `pe` is the persistence-engine data of a template (`None` for everything else); `miss` is the
/// miss of the lookup of `n`'s flow, whose hash is reused when it is `n`'s (see [`InMiss`]).
pub(crate) fn insert<S: ShardWrite>(
    s: &mut S,
    now: Instant,
    n: &NewConn,
    pe: Option<&[u8]>,
    miss: Option<&InMiss>,
) -> Result<ConnId, InsertError> {
    let e = typed_new(s.hasher(), n, pe, miss)?;
    if let Some(ctl) = n.control {
        if !s.has_shard(ctl) || !s.write(ctl.shard(), |sh, _| sh.inc_control(ctl)) {
            return Err(InsertError::ControlGone(ctl));
        }
    }
    let r = match e {
        Fam::V4(e) => {
            let i = s.shard_for(e.hash);
            s.write(i, |sh, c| sh.insert(now, &e, pe, c))
        }
        Fam::V6(e) => {
            let i = s.shard_for(e.hash);
            s.write(i, |sh, c| sh.insert(now, &e, pe, c))
        }
    };
    if r.is_err() {
        if let Some(ctl) = n.control {
            // Undo the increment; not a forced removal, so nothing cascades.
            let _ = s.write(ctl.shard(), |sh, c| sh.dec_control(ctl, false, c));
        }
    }
    r
}

// ---- per-conn access ----------------------------------------------------------------------------------------

pub(crate) fn with_conn<S: ShardWrite, R>(s: &mut S, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R> {
    if !s.has_shard(id) {
        return None;
    }
    s.write(id.shard(), |sh, _| {
        let loc = sh.resolve(id)?;
        Some(f(&mut sh.conn_mut(loc)))
    })
}

pub(crate) fn update<S: ShardWrite, R>(
    s: &mut S,
    now: Instant,
    id: ConnId,
    f: impl FnOnce(&mut ConnMut<'_>) -> R,
) -> Option<R> {
    if !s.has_shard(id) {
        return None;
    }
    s.write(id.shard(), |sh, _| {
        let loc = sh.resolve(id)?;
        let r = f(&mut sh.conn_mut(loc));
        let timeout = sh.meta(loc).timeout;
        sh.touch(now, loc, timeout);
        Some(r)
    })
}

pub(crate) fn touch<S: ShardWrite>(s: &mut S, now: Instant, id: ConnId, timeout: Duration) -> bool {
    if !s.has_shard(id) {
        return false;
    }
    s.write(id.shard(), |sh, _| sh.resolve(id).map(|loc| sh.touch(now, loc, saturate_ms(timeout))).is_some())
}

pub(crate) fn expire_now<S: ShardWrite>(s: &mut S, now: Instant, id: ConnId) -> bool {
    if !s.has_shard(id) {
        return false;
    }
    s.write(id.shard(), |sh, _| sh.resolve(id).map(|loc| sh.expire_now(now, loc)).is_some())
}

pub(crate) fn invalidate_template<S: ShardWrite>(s: &mut S, id: ConnId) -> bool {
    s.has_shard(id) && s.write(id.shard(), |sh, _| sh.invalidate_template(id))
}

// ---- removal ------------------------------------------------------------------------------------------------

/// Decrements the controllers of the entries `out[from..]` (and of the controllers dropped by the cascade,
/// which are appended to `out` and processed in turn).
fn unlink_controls<S: ShardWrite>(s: &mut S, out: &mut Vec<Expired>, mut from: usize) {
    while from < out.len() {
        let e = &out[from];
        from += 1;
        let Some(ctl) = e.control else {
            continue;
        };
        if !s.has_shard(ctl) {
            continue;
        }
        let cascade = e.conn.timeout == Duration::ZERO;
        if let Some(dropped) = s.write(ctl.shard(), |sh, c| sh.dec_control(ctl, cascade, c)) {
            out.push(dropped);
        }
    }
}

pub(crate) fn expire<S: ShardWrite>(s: &mut S, id: ConnId) -> Result<Expired, RemoveError> {
    if !s.has_shard(id) {
        return Err(RemoveError::Stale);
    }
    let e = s.write(id.shard(), |sh, c| sh.remove(id, false, c))?;
    if let Some(ctl) = e.control {
        let _ = s.write(ctl.shard(), |sh, c| sh.dec_control(ctl, false, c));
    }
    Ok(e)
}

pub(crate) fn remove<S: ShardWrite>(s: &mut S, id: ConnId, out: &mut Vec<Expired>) -> Result<(), RemoveError> {
    if !s.has_shard(id) {
        return Err(RemoveError::Stale);
    }
    let e = s.write(id.shard(), |sh, c| sh.remove(id, true, c))?;
    let from = out.len();
    out.push(e);
    unlink_controls(s, out, from);
    Ok(())
}

/// Force-deletes every entry for which `pred` holds, controlled conns first; returns the number of matching
/// controllers left in place because they still control conns.
pub(crate) fn remove_if<S: ShardWrite>(
    s: &mut S,
    mut pred: impl FnMut(&ConnView) -> bool,
    out: &mut Vec<Expired>,
) -> usize {
    let mut controllers = Vec::new();
    for i in 0..s.geometry().n_shards {
        let from = out.len();
        s.write(i, |sh, c| {
            let mut locs = Vec::new();
            sh.for_each_loc(|loc| {
                if pred(&sh.view(loc)) {
                    locs.push(loc);
                }
            });
            for loc in locs {
                if sh.meta(loc).n_control > 0 {
                    controllers.push(sh.id_of(loc));
                } else if sh.meta(loc).is_live() {
                    out.push(sh.force_unlink(loc, crate::ExpireReason::Removed, c));
                }
            }
        });
        unlink_controls(s, out, from);
    }
    let mut left = 0;
    for id in controllers {
        let from = out.len();
        match s.write(id.shard(), |sh, c| sh.remove(id, true, c)) {
            Ok(e) => out.push(e),
            Err(RemoveError::Controlling(_)) => left += 1,
            Err(_) => {}
        }
        unlink_controls(s, out, from);
    }
    left
}

pub(crate) fn fill_cport<S: ShardWrite>(s: &mut S, id: ConnId, cport: u16) -> Result<ConnId, FillCportError> {
    if !s.has_shard(id) {
        return Err(FillCportError::Stale);
    }
    let (proto, caddr) = s.read(id.shard(), |sh| sh.client_of(id)).ok_or(FillCportError::Stale)?;
    let hash = match caddr {
        IpAddr::V4(a) => Ipv4Addr::hash_client(s.hasher(), proto, a, cport),
        IpAddr::V6(a) => Ipv6Addr::hash_client(s.hasher(), proto, a, cport),
    };
    let (src, dst) = (id.shard(), s.shard_for(hash));
    let v6 = caddr.is_ipv6();
    if src == dst {
        s.write(src, |sh, c| {
            if v6 {
                sh.fill_cport_here::<Ipv6Addr>(id, hash, cport, c)
            } else {
                sh.fill_cport_here::<Ipv4Addr>(id, hash, cport, c)
            }
        })
    } else {
        s.write_two(src, dst, |a, b, c| {
            if v6 {
                a.fill_cport_move::<Ipv6Addr>(b, id, hash, cport, c)
            } else {
                a.fill_cport_move::<Ipv4Addr>(b, id, hash, cport, c)
            }
        })
    }
}

// ---- timers -------------------------------------------------------------------------------------------------

pub(crate) fn handle_timeout<S: ShardWrite>(
    s: &mut S,
    now: Instant,
    out: &mut Vec<Expired>,
    mut pushed_back: Option<&mut Vec<ConnId>>,
) {
    let mut deferred = Vec::new();
    for i in 0..s.geometry().n_shards {
        let from = out.len();
        s.write(i, |sh, c| sh.poll(now, out, &mut deferred, c));
        unlink_controls(s, out, from);
    }
    // Due controllers whose controlled conns expired in this same call are free now: expire them (repeat, for
    // chains); the others are pushed back 60 s, as the kernel's "expire later" does.
    let mut progress = true;
    while progress && !deferred.is_empty() {
        progress = false;
        let from = out.len();
        deferred.retain(|&id| match s.write(id.shard(), |sh, c| sh.settle(now, id, false, c)) {
            Settle::Pending => true,
            Settle::Expired(e) => {
                out.push(e);
                progress = true;
                false
            }
            Settle::PushedBack => {
                if let Some(p) = pushed_back.as_deref_mut() {
                    p.push(id);
                }
                false
            }
            Settle::Gone | Settle::Rescheduled => false,
        });
        unlink_controls(s, out, from);
    }
    for id in deferred {
        let from = out.len();
        match s.write(id.shard(), |sh, c| sh.settle(now, id, true, c)) {
            Settle::Expired(e) => out.push(e),
            Settle::PushedBack => {
                if let Some(p) = pushed_back.as_deref_mut() {
                    p.push(id);
                }
            }
            Settle::Gone | Settle::Rescheduled | Settle::Pending => {}
        }
        unlink_controls(s, out, from);
    }
}

// ---- defense and flush --------------------------------------------------------------------------------------

pub(crate) fn drop_entry<S: ShardWrite>(
    s: &mut S,
    now: Instant,
    st: &mut DropEntry,
    mut ops_template: impl FnMut(&ConnView) -> bool,
    out: &mut Vec<Expired>,
) {
    let g = *s.geometry();
    let total = g.n_shards * g.n_buckets;
    let scans = (total / 32).max(1);
    for _ in 0..scans {
        let r = st.next_u64();
        let shard = (r >> 48) as usize & (g.n_shards - 1);
        let bucket = Index::home_of(r, g.n_buckets);
        let from = out.len();
        s.write(shard, |sh, c| sh.drop_scan(bucket, now, st, &mut ops_template, out, c));
        unlink_controls(s, out, from);
    }
}

pub(crate) fn flush<S: ShardWrite>(s: &mut S, out: &mut Vec<Expired>) {
    s.write_all(|shards, c| {
        for sh in shards.iter_mut() {
            sh.flush(out, c);
        }
    });
}
