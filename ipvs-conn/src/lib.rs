//! The IPVS connection table: lock-sharded, keyed-hash, with timeouts, templates and bounded memory.
//!
//! Every packet the director handles does a lookup here. The table is sans-IO: it reads no clock (every call
//! that starts, refreshes or expires something takes `now`), spawns nothing and does no I/O.
//!
//! # Shape
//!
//! * [`ConnTable`] — shared by all cores: `n_shards` shards (a power of two), each behind its own lock, each
//!   with its own hash index, entry slabs and timer wheel. [`LocalConnTable`] — one shard, no locks, the same
//!   API over `&mut self`, for backends that steer both directions of a flow to one core.
//! * **Hash.** SipHash-1-3 keyed with [`ConnTableConfig::hash_key`], over the *client side only* (protocol,
//!   client address, client port), as in the kernel: the "in" lookup ([`InKey`]) and the "out" lookup
//!   ([`OutKey`], NAT replies) compute the same hash, so one index entry per conn serves both directions,
//!   and every conn of one client tuple lands in one shard. The shard is the hash's top bits, the home
//!   bucket its low 32 bits, the tag bits 32..48 (see `index`). The hash is computed once per lookup and
//!   stored in the entry.
//! * **Index** (`index` module docs): 64-byte buckets of 10 (16-bit tag, 32-bit slot) pairs with linear
//!   probing over buckets and per-bucket overflow counts; own rather than hashbrown's so the burst lookup can
//!   prefetch buckets by hash before taking a lock, and so the index is sized once (no rehash) at about 8 bytes
//!   per entry.
//! * **Entries** (`entry` module docs): a 64-byte hot line per IPv4 conn (128 bytes for IPv6) in a slab,
//!   a 40-byte cold part in a parallel array. [`ConnId`] handles carry a generation: a stale handle is never
//!   honoured.
//! * **Timers** (`shard` module docs): a hierarchical timer wheel per shard (`wheel`) with lazy
//!   re-insertion: O(1) insert/touch/expire, touching never makes an entry fire early;
//!   [`ConnTable::poll_timeout`] / [`ConnTable::handle_timeout`] return what expired so the engine can update
//!   its counters and sync.
//! * **Bounded memory.** [`ConnTableConfig::capacity`] is a hard bound: a full table answers
//!   [`InsertError::Full`], never grows, and offers the kernel's random [`drop_entry`](ConnTable::drop_entry)
//!   defense.
//!
//! # Kernel behaviours
//!
//! Templates ([`TemplateKey`], [`NewConn::template`]; with persistence-engine data, e.g. a SIP Call-ID,
//! [`ConnTable::insert_pe_template`] and [`ConnTable::lookup_pe_template`], hashed by the data) and controlled
//! conns ([`NewConn::control`]): a controller
//! never expires while it controls conns (it is pushed back 60 s); force-deleting the last controlled conn of a
//! non-assured template drops the template too. `NO_CPORT` conns are found by a retry with client port 0 and
//! completed with [`ConnTable::fill_cport`]. One-packet (OPS) conns are never inserted
//! ([`InsertError::OnePacket`]). Hooks: [`ConnTable::expire_now`] and [`ConnTable::remove_if`]
//! (expire_nodest_conn), [`ConnTable::invalidate_template`] (expire_quiescent_template),
//! [`ConnTable::expire`] + [`ConnTable::insert`] (conn_reuse_mode), [`ConnTable::for_each`] /
//! [`ConnTable::snapshot`] (listing, sync), [`ConnTable::flush`].
//!
//! ```
//! use ipvs_conn::{ConnTable, ConnTableConfig, InKey, NewConn, OutKey};
//! use ipvs_conn::ipvs_proto::{DestId, Duration, Instant, Protocol};
//!
//! let now = Instant::from_secs(1);
//! let table = ConnTable::new(ConnTableConfig::new(1 << 16, [0x5a; 16]), now).unwrap();
//! let client = "192.0.2.7:40000".parse().unwrap();
//! let vip = "198.51.100.1:80".parse().unwrap();
//! let rs = "10.0.0.2:8080".parse().unwrap();
//! let id = table.insert(now, NewConn::new(Protocol::Tcp, client, vip, rs).with_dest(DestId(2))).unwrap();
//!
//! // Both directions find the one entry.
//! let key_in = InKey::new(Protocol::Tcp, client.ip(), client.port(), vip.ip(), vip.port());
//! assert_eq!(table.lookup_in(&key_in).map(|(id, _)| id), Some(id));
//! let key_out = OutKey::new(Protocol::Tcp, rs.ip(), rs.port(), client.ip(), client.port());
//! assert_eq!(table.lookup_out(&key_out).map(|(id, _)| id), Some(id));
//!
//! // A packet: state transition and timer restart under one lock.
//! table.update(now, id, |c| { c.set_state(1); c.set_timeout(Duration::from_secs(900)); });
//!
//! // Expiry is driven by the caller's clock.
//! let mut expired = Vec::new();
//! table.handle_timeout(now + Duration::from_secs(901), &mut expired);
//! assert_eq!(expired.len(), 1);
//! assert!(table.is_empty());
//! ```
#![deny(unsafe_code)]

mod config;
mod drop;
mod entry;
mod error;
mod index;
mod key;
mod local;
mod ops;
mod primitive;
mod shard;
mod table;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, ConnTableConfig, MAX_CAPACITY, MAX_SHARDS};
pub use drop::DropEntry;
pub use entry::{
    ConnId, ConnMut, ConnView, ExpireReason, Expired, NewConn, SeqAdjust, COLD_SIZE, HOT_SIZE_V4, HOT_SIZE_V6,
    TEMPLATE_ASSURED,
};
pub use error::{FillCportError, InsertError, RemoveError};
pub use ipvs_proto;
pub use key::{mask_client, InKey, InMiss, OutKey, TemplateKey, MAX_PE_DATA};
pub use local::LocalConnTable;
pub use shard::{MemoryStats, ProbeStats};
pub use table::ConnTable;

// The timer wheel (written against a fixed API: new, insert, next_deadline, poll, len, is_empty).
#[allow(unreachable_pub, dead_code)]
mod wheel;
