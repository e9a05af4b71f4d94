//! Tests that need the crate's private items: a common harness over both table types, the model-based
//! proptest, the adversarial-key test, and the loom models (`loom_*`, only under `--cfg loom`).

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs_proto::{DestId, Duration, Instant, Protocol};

use crate::{ConnId, ConnTable, ConnTableConfig, InKey, InsertError, NewConn, TemplateKey};
#[cfg(not(loom))]
use {
    crate::{ConnMut, ConnView, DropEntry, Expired, FillCportError, LocalConnTable, OutKey, RemoveError},
    core::net::Ipv6Addr,
    ipvs_proto::ConnFlags,
};

#[cfg(not(loom))]
mod adversarial;
#[cfg(not(loom))]
mod basic;
#[cfg(loom)]
mod loom_control;
#[cfg(loom)]
mod loom_expiry;
#[cfg(loom)]
mod loom_insert;
#[cfg(not(loom))]
mod model;

/// A test configuration: 1 ms tick (exact expiry), fixed key.
pub(crate) fn cfg(capacity: usize, n_shards: usize) -> ConnTableConfig {
    ConnTableConfig {
        n_shards,
        capacity,
        hash_key: *b"ipvs-conn-tests!",
        tick: Duration::from_millis(1),
        preallocate: false,
    }
}

pub(crate) fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub(crate) const RS: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// Client `n` (10.0.x.y).
pub(crate) fn client(n: u32) -> Ipv4Addr {
    Ipv4Addr::from_bits(0x0A00_0000 | (n & 0x00FF_FFFF))
}

/// A MASQ TCP conn from client `n`:`cport` to VIP:80 via RS:8080, 10 s timeout.
pub(crate) fn tcp(n: u32, cport: u16) -> NewConn {
    NewConn::new(
        Protocol::Tcp,
        SocketAddr::new(IpAddr::V4(client(n)), cport),
        SocketAddr::new(IpAddr::V4(VIP), 80),
        SocketAddr::new(IpAddr::V4(RS), 8080),
    )
    .with_dest(DestId(1))
    .with_timeout(secs(10))
}

#[cfg(not(loom))]
/// An IPv6 MASQ TCP conn.
pub(crate) fn tcp6(n: u32, cport: u16) -> NewConn {
    let c = Ipv6Addr::from_bits(0x2001_0db8_0000_0000_0000_0000_0000_0000 | u128::from(n));
    NewConn::new(
        Protocol::Tcp,
        SocketAddr::new(IpAddr::V6(c), cport),
        "[2001:db8:ffff::1]:443".parse().unwrap_or_else(|_| unreachable!()),
        "[2001:db8:eeee::2]:8443".parse().unwrap_or_else(|_| unreachable!()),
    )
    .with_dest(DestId(2))
    .with_timeout(secs(10))
}

pub(crate) fn in_key(c: &NewConn) -> InKey {
    InKey::new(c.protocol, c.caddr, c.cport, c.vaddr, c.vport)
}

#[cfg(not(loom))]
/// The out-key of a reply from the real server (MASQ) or the VIP (other methods).
pub(crate) fn out_key(c: &NewConn) -> OutKey {
    if c.flags.fwd_method() == Some(ipvs_proto::FwdMethod::Masq) {
        OutKey::new(c.protocol, c.daddr, c.dport, c.caddr, c.cport)
    } else {
        OutKey::new(c.protocol, c.vaddr, c.vport, c.caddr, c.cport)
    }
}

#[cfg(not(loom))]
/// Both table types behind one `&mut self` interface, so every behaviour test runs on each.
pub(crate) trait Table: Sized {
    fn make(config: ConnTableConfig, now: Instant) -> Self;
    fn insert(&mut self, now: Instant, c: NewConn) -> Result<ConnId, InsertError>;
    fn insert_pe_template(&mut self, now: Instant, c: NewConn, pe: &[u8]) -> Result<ConnId, InsertError>;
    fn lookup_pe_template(&self, k: &TemplateKey, pe: Option<&[u8]>) -> Option<(ConnId, ConnView)>;
    fn lookup_in(&self, k: &InKey) -> Option<(ConnId, ConnView)>;
    fn lookup_in_or_miss(&self, k: &InKey) -> Result<(ConnId, ConnView), crate::InMiss>;
    fn insert_after_miss(&mut self, now: Instant, c: NewConn, miss: &crate::InMiss) -> Result<ConnId, InsertError>;
    fn lookup_out(&self, k: &OutKey) -> Option<(ConnId, ConnView)>;
    fn lookup_template(&self, k: &TemplateKey) -> Option<(ConnId, ConnView)>;
    fn lookup_burst(&self, keys: &[InKey], out: &mut [Option<(ConnId, ConnView)>]);
    fn get(&self, id: ConnId) -> Option<ConnView>;
    fn with_conn<R>(&mut self, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R>;
    fn update<R>(&mut self, now: Instant, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R>;
    fn touch(&mut self, now: Instant, id: ConnId, timeout: Duration) -> bool;
    fn expire_now(&mut self, now: Instant, id: ConnId) -> bool;
    fn expire(&mut self, id: ConnId) -> Result<Expired, RemoveError>;
    fn remove(&mut self, id: ConnId, out: &mut Vec<Expired>) -> Result<(), RemoveError>;
    fn remove_if(&mut self, pred: impl FnMut(&ConnView) -> bool, out: &mut Vec<Expired>) -> usize;
    fn invalidate_template(&mut self, id: ConnId) -> bool;
    fn fill_cport(&mut self, id: ConnId, cport: u16) -> Result<ConnId, FillCportError>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Expired>);
    fn handle_timeout_with_push_backs(&mut self, now: Instant, out: &mut Vec<Expired>, pushed: &mut Vec<ConnId>);
    fn drop_entry(
        &mut self,
        now: Instant,
        st: &mut DropEntry,
        ops: impl FnMut(&ConnView) -> bool,
        out: &mut Vec<Expired>,
    );
    fn snapshot(&self) -> Vec<(ConnId, ConnView)>;
    fn flush(&mut self, out: &mut Vec<Expired>);
    fn len(&self) -> usize;
    fn memory(&self) -> crate::MemoryStats;
    fn check(&self);

    /// Everything that expires at `now`.
    fn expire_at(&mut self, now: Instant) -> Vec<Expired> {
        let mut v = Vec::new();
        self.handle_timeout(now, &mut v);
        self.check();
        v
    }
}

#[cfg(not(loom))]
macro_rules! forward_table {
    ($ty:ty, $make:expr) => {
        impl Table for $ty {
            fn make(config: ConnTableConfig, now: Instant) -> Self {
                $make(config, now).unwrap_or_else(|e| panic!("config: {e}"))
            }
            fn insert(&mut self, now: Instant, c: NewConn) -> Result<ConnId, InsertError> {
                <$ty>::insert(self, now, c)
            }
            fn insert_pe_template(&mut self, now: Instant, c: NewConn, pe: &[u8]) -> Result<ConnId, InsertError> {
                <$ty>::insert_pe_template(self, now, c, pe)
            }
            fn lookup_pe_template(&self, k: &TemplateKey, pe: Option<&[u8]>) -> Option<(ConnId, ConnView)> {
                <$ty>::lookup_pe_template(self, k, pe)
            }
            fn lookup_in(&self, k: &InKey) -> Option<(ConnId, ConnView)> {
                <$ty>::lookup_in(self, k)
            }
            fn lookup_in_or_miss(&self, k: &InKey) -> Result<(ConnId, ConnView), crate::InMiss> {
                <$ty>::lookup_in_or_miss(self, k)
            }
            fn insert_after_miss(
                &mut self,
                now: Instant,
                c: NewConn,
                miss: &crate::InMiss,
            ) -> Result<ConnId, InsertError> {
                <$ty>::insert_after_miss(self, now, c, miss)
            }
            fn lookup_out(&self, k: &OutKey) -> Option<(ConnId, ConnView)> {
                <$ty>::lookup_out(self, k)
            }
            fn lookup_template(&self, k: &TemplateKey) -> Option<(ConnId, ConnView)> {
                <$ty>::lookup_template(self, k)
            }
            fn lookup_burst(&self, keys: &[InKey], out: &mut [Option<(ConnId, ConnView)>]) {
                <$ty>::lookup_burst(self, keys, out)
            }
            fn get(&self, id: ConnId) -> Option<ConnView> {
                <$ty>::get(self, id)
            }
            fn with_conn<R>(&mut self, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R> {
                <$ty>::with_conn(self, id, f)
            }
            fn update<R>(&mut self, now: Instant, id: ConnId, f: impl FnOnce(&mut ConnMut<'_>) -> R) -> Option<R> {
                <$ty>::update(self, now, id, f)
            }
            fn touch(&mut self, now: Instant, id: ConnId, timeout: Duration) -> bool {
                <$ty>::touch(self, now, id, timeout)
            }
            fn expire_now(&mut self, now: Instant, id: ConnId) -> bool {
                <$ty>::expire_now(self, now, id)
            }
            fn expire(&mut self, id: ConnId) -> Result<Expired, RemoveError> {
                <$ty>::expire(self, id)
            }
            fn remove(&mut self, id: ConnId, out: &mut Vec<Expired>) -> Result<(), RemoveError> {
                <$ty>::remove(self, id, out)
            }
            fn remove_if(&mut self, pred: impl FnMut(&ConnView) -> bool, out: &mut Vec<Expired>) -> usize {
                <$ty>::remove_if(self, pred, out)
            }
            fn invalidate_template(&mut self, id: ConnId) -> bool {
                <$ty>::invalidate_template(self, id)
            }
            fn fill_cport(&mut self, id: ConnId, cport: u16) -> Result<ConnId, FillCportError> {
                <$ty>::fill_cport(self, id, cport)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Expired>) {
                <$ty>::handle_timeout(self, now, out)
            }
            fn handle_timeout_with_push_backs(
                &mut self,
                now: Instant,
                out: &mut Vec<Expired>,
                pushed: &mut Vec<ConnId>,
            ) {
                <$ty>::handle_timeout_with_push_backs(self, now, out, pushed)
            }
            fn drop_entry(
                &mut self,
                now: Instant,
                st: &mut DropEntry,
                ops: impl FnMut(&ConnView) -> bool,
                out: &mut Vec<Expired>,
            ) {
                <$ty>::drop_entry(self, now, st, ops, out)
            }
            fn snapshot(&self) -> Vec<(ConnId, ConnView)> {
                <$ty>::snapshot(self)
            }
            fn flush(&mut self, out: &mut Vec<Expired>) {
                <$ty>::flush(self, out)
            }
            fn len(&self) -> usize {
                <$ty>::len(self)
            }
            fn memory(&self) -> crate::MemoryStats {
                <$ty>::memory_stats(self)
            }
            fn check(&self) {
                <$ty>::check_invariants(self)
            }
        }
    };
}

#[cfg(not(loom))]
forward_table!(ConnTable, ConnTable::new);
#[cfg(not(loom))]
forward_table!(LocalConnTable, LocalConnTable::new);

#[cfg(not(loom))]
/// Flags of a direct-routing conn.
pub(crate) fn droute() -> ConnFlags {
    ConnFlags::DROUTE
}
