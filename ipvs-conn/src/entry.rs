//! Connection entries: the hot cache line, the cold part, and the public handle, view and builder types.
//!
//! # Layout
//!
//! An entry is split across two parallel arrays of one slab (same slot index):
//!
//! * **Hot** (`Hot<A>`, `#[repr(C, align(64))]`): what a packet of an established flow touches: the three
//!   addresses, then a 52-byte `Meta` (ports, protocol, state, flags, dest, generation, the stored hash,
//!   expiry, timeout, control count, in-packet count, fwmark). With IPv4 addresses it is exactly one 64-byte
//!   line (asserted below); with IPv6 addresses it is two (128 bytes). The entry is generic over the address
//!   width rather than sized for IPv6, so IPv4 conns do not pay for IPv6; the shard keeps one slab per family
//!   under a single index.
//! * **Cold** (`Cold`, 40 bytes): the controller link, the wheel bookkeeping, sync data, and a boxed
//!   `ColdExtra` for the rare parts (TCP sequence adjustment of the FTP helper, persistence-engine data)
//!   that stays `None` for almost every conn.
//!
//! Deviations from the design card, with reasons: `in_pkts` is hot (the engine bumps it on every inbound
//! packet to decide when to sync, facts §12.7); the controller link is cold (it is read only when the conn
//! is created or removed, never per packet); "last touch" is not stored, it is `expires - timeout` (what the
//! kernel's `todrop_entry` computes too); 64-bit values in `Meta` are stored as `[u32; 2]` so `Meta` has
//! 4-byte alignment and packs right after the 12 bytes of IPv4 addresses.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::num::NonZeroU32;

use ipvs_proto::{ConnFlags, DestId, Duration, FwdMethod, Instant, Protocol};

use crate::key::KeyHasher;

/// `Meta::dest` of a conn bound to no destination.
pub(crate) const NO_DEST: u32 = u32::MAX;

/// Bit of a slot number marking the IPv6 slab.
pub(crate) const V6_BIT: u32 = 1 << 31;

/// The template state `IP_VS_CTPL_S_ASSURED`.
pub const TEMPLATE_ASSURED: u8 = 1;

/// An address family's address type (`Ipv4Addr` or `Ipv6Addr`).
pub(crate) trait Addr: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// Whether this is the IPv6 family.
    const V6: bool;
    /// The all-zero address.
    const ZERO: Self;
    /// As an `IpAddr`.
    fn ip(self) -> IpAddr;
    /// The first 32 bits (where a fwmark template keeps its mark).
    fn first32(self) -> u32;
    /// The keyed hash of the client tuple.
    fn hash_client(h: &KeyHasher, proto: u8, caddr: Self, cport: u16) -> u64;
}

impl Addr for Ipv4Addr {
    const V6: bool = false;
    const ZERO: Self = Self::UNSPECIFIED;

    #[inline]
    fn ip(self) -> IpAddr {
        IpAddr::V4(self)
    }

    #[inline]
    fn first32(self) -> u32 {
        self.to_bits()
    }

    #[inline]
    fn hash_client(h: &KeyHasher, proto: u8, caddr: Self, cport: u16) -> u64 {
        h.v4(proto, caddr, cport)
    }
}

impl Addr for Ipv6Addr {
    const V6: bool = true;
    const ZERO: Self = Self::UNSPECIFIED;

    #[inline]
    fn ip(self) -> IpAddr {
        IpAddr::V6(self)
    }

    #[inline]
    fn first32(self) -> u32 {
        (self.to_bits() >> 96) as u32
    }

    #[inline]
    fn hash_client(h: &KeyHasher, proto: u8, caddr: Self, cport: u16) -> u64 {
        h.v6(proto, caddr, cport)
    }
}

/// A value of either family.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fam<T4, T6> {
    V4(T4),
    V6(T6),
}

/// Both addresses of one family, or `None`.
fn same_family(a: IpAddr, b: IpAddr) -> Option<Fam<(Ipv4Addr, Ipv4Addr), (Ipv6Addr, Ipv6Addr)>> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some(Fam::V4((a, b))),
        (IpAddr::V6(a), IpAddr::V6(b)) => Some(Fam::V6((a, b))),
        _ => None,
    }
}

/// A typed [`InKey`](crate::InKey).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InK<A> {
    pub(crate) proto: u8,
    pub(crate) caddr: A,
    pub(crate) cport: u16,
    pub(crate) vaddr: A,
    pub(crate) vport: u16,
}

/// A typed [`OutKey`](crate::OutKey).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutK<A> {
    pub(crate) proto: u8,
    pub(crate) saddr: A,
    pub(crate) sport: u16,
    pub(crate) daddr: A,
    pub(crate) dport: u16,
}

/// A typed [`TemplateKey`](crate::TemplateKey).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TplK<A> {
    pub(crate) proto: u8,
    pub(crate) caddr: A,
    pub(crate) vaddr: A,
    pub(crate) vport: u16,
}

impl crate::InKey {
    pub(crate) fn typed(&self) -> Option<Fam<InK<Ipv4Addr>, InK<Ipv6Addr>>> {
        let proto = u8::from(self.protocol);
        Some(match same_family(self.caddr, self.vaddr)? {
            Fam::V4((caddr, vaddr)) => Fam::V4(InK { proto, caddr, cport: self.cport, vaddr, vport: self.vport }),
            Fam::V6((caddr, vaddr)) => Fam::V6(InK { proto, caddr, cport: self.cport, vaddr, vport: self.vport }),
        })
    }
}

impl crate::OutKey {
    pub(crate) fn typed(&self) -> Option<Fam<OutK<Ipv4Addr>, OutK<Ipv6Addr>>> {
        let proto = u8::from(self.protocol);
        let (sport, dport) = (self.sport, self.dport);
        Some(match same_family(self.saddr, self.daddr)? {
            Fam::V4((saddr, daddr)) => Fam::V4(OutK { proto, saddr, sport, daddr, dport }),
            Fam::V6((saddr, daddr)) => Fam::V6(OutK { proto, saddr, sport, daddr, dport }),
        })
    }
}

impl crate::TemplateKey {
    pub(crate) fn typed(&self) -> Option<Fam<TplK<Ipv4Addr>, TplK<Ipv6Addr>>> {
        let proto = u8::from(self.protocol);
        Some(match same_family(self.caddr, self.vaddr)? {
            Fam::V4((caddr, vaddr)) => Fam::V4(TplK { proto, caddr, vaddr, vport: self.vport }),
            Fam::V6((caddr, vaddr)) => Fam::V6(TplK { proto, caddr, vaddr, vport: self.vport }),
        })
    }
}

/// A `u64` stored as two `u32` halves, so that it needs only 4-byte alignment.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[repr(C)]
pub(crate) struct U64([u32; 2]);

impl U64 {
    #[inline]
    pub(crate) const fn get(self) -> u64 {
        (self.0[0] as u64) | ((self.0[1] as u64) << 32)
    }

    #[inline]
    pub(crate) fn set(&mut self, v: u64) {
        self.0 = [v as u32, (v >> 32) as u32];
    }
}

/// The family-independent hot fields of an entry (52 bytes, 4-byte aligned).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Meta {
    pub(crate) cport: u16,
    pub(crate) vport: u16,
    pub(crate) dport: u16,
    pub(crate) protocol: u8,
    pub(crate) state: u8,
    /// `ConnFlags` bits.
    pub(crate) flags: u32,
    /// `DestId`, or [`NO_DEST`].
    pub(crate) dest: u32,
    /// Odd while the slot is live, even while free; bumped at both transitions.
    pub(crate) generation: u32,
    /// The keyed hash of the client tuple (protocol, caddr, cport).
    pub(crate) hash: U64,
    /// Expiry instant, milliseconds.
    pub(crate) expires: U64,
    /// Current timeout, milliseconds (saturating at `u32::MAX`, about 49.7 days).
    pub(crate) timeout: u32,
    /// Number of conns this one controls; the next free slot while the slot is free.
    pub(crate) n_control: u32,
    /// Incoming packets (drives sync and `drop_entry`).
    pub(crate) in_pkts: u32,
    /// Firewall mark at creation.
    pub(crate) fwmark: u32,
}

const _: () = assert!(core::mem::size_of::<Meta>() == 52);

impl Meta {
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.generation & 1 == 1
    }

    #[inline]
    pub(crate) fn flags(&self) -> ConnFlags {
        ConnFlags(self.flags)
    }

    #[inline]
    pub(crate) fn is_template(&self) -> bool {
        self.flags & ConnFlags::TEMPLATE.0 != 0
    }

    #[inline]
    pub(crate) fn dest(&self) -> Option<DestId> {
        (self.dest != NO_DEST).then_some(DestId(self.dest))
    }
}

/// The hot part of an entry: one cache line for IPv4, two for IPv6.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Hot<A> {
    pub(crate) caddr: A,
    pub(crate) vaddr: A,
    pub(crate) daddr: A,
    pub(crate) m: Meta,
}

/// Size of an IPv4 entry's hot part.
pub const HOT_SIZE_V4: usize = core::mem::size_of::<Hot<Ipv4Addr>>();
/// Size of an IPv6 entry's hot part.
pub const HOT_SIZE_V6: usize = core::mem::size_of::<Hot<Ipv6Addr>>();
/// Size of an entry's cold part (both families), not counting the rarely allocated extra part.
pub const COLD_SIZE: usize = core::mem::size_of::<Cold>();

const _: () = assert!(HOT_SIZE_V4 == 64);
const _: () = assert!(HOT_SIZE_V6 == 128);
const _: () = assert!(COLD_SIZE <= 40);

impl<A: Addr> Hot<A> {
    pub(crate) const EMPTY: Self = Self {
        caddr: A::ZERO,
        vaddr: A::ZERO,
        daddr: A::ZERO,
        m: Meta {
            cport: 0,
            vport: 0,
            dport: 0,
            protocol: 0,
            state: 0,
            flags: 0,
            dest: NO_DEST,
            generation: 0,
            hash: U64([0, 0]),
            expires: U64([0, 0]),
            timeout: 0,
            n_control: 0,
            in_pkts: 0,
            fwmark: 0,
        },
    };

    /// `conn_in_get`'s match rule, including the `NO_CPORT` consistency rule.
    #[inline]
    pub(crate) fn matches_in(&self, k: &InK<A>) -> bool {
        let m = &self.m;
        m.cport == k.cport
            && m.vport == k.vport
            && self.caddr == k.caddr
            && self.vaddr == k.vaddr
            && m.protocol == k.proto
            && ((k.cport == 0) == (m.flags & ConnFlags::NO_CPORT.0 != 0))
    }

    /// `conn_out_get`'s match rule.
    #[inline]
    pub(crate) fn matches_out(&self, k: &OutK<A>) -> bool {
        let m = &self.m;
        if m.cport != k.dport || self.caddr != k.daddr || m.protocol != k.proto {
            return false;
        }
        if m.flags & ConnFlags::FWD_MASK.0 == ConnFlags::MASQ.0 {
            k.sport == m.dport && k.saddr == self.daddr
        } else {
            k.sport == m.vport && k.saddr == self.vaddr
        }
    }

    /// `ct_in_get`'s match rule on the hot fields (the caller compares the persistence-engine data, which is
    /// cold).
    #[inline]
    pub(crate) fn matches_template(&self, k: &TplK<A>) -> bool {
        let m = &self.m;
        m.is_template()
            && m.cport == 0
            && m.vport == k.vport
            && m.protocol == k.proto
            && self.caddr == k.caddr
            && if k.proto == 0 { self.vaddr.first32() == k.vaddr.first32() } else { self.vaddr == k.vaddr }
    }

    /// A snapshot.
    #[inline(always)]
    pub(crate) fn view(&self) -> ConnView {
        let m = &self.m;
        ConnView {
            protocol: Protocol::from(m.protocol),
            caddr: self.caddr.ip(),
            cport: m.cport,
            vaddr: self.vaddr.ip(),
            vport: m.vport,
            daddr: self.daddr.ip(),
            dport: m.dport,
            flags: m.flags(),
            state: m.state,
            dest: m.dest(),
            fwmark: m.fwmark,
            timeout: Duration::from_millis(u64::from(m.timeout)),
            expires: Instant::from_millis(m.expires.get()),
            n_control: m.n_control,
            in_pkts: m.in_pkts,
        }
    }
}

/// TCP sequence-number adjustment of one direction (the kernel's `struct ip_vs_seq`), used by NAT helpers
/// that change payload lengths (FTP).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct SeqAdjust {
    /// Sequence number at which the last change of `delta` took effect.
    pub init_seq: u32,
    /// Delta applied to sequence numbers after `init_seq`.
    pub delta: u32,
    /// Delta applied to sequence numbers before `init_seq`.
    pub previous_delta: u32,
}

/// The rarely used cold fields, boxed so that conns without them pay 8 bytes.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub(crate) struct ColdExtra {
    pub(crate) in_seq: SeqAdjust,
    pub(crate) out_seq: SeqAdjust,
    pub(crate) pe_data: Option<Box<[u8]>>,
}

/// The cold part of an entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cold {
    /// The controlling conn (template or FTP control conn).
    pub(crate) control: Option<ConnId>,
    /// State at the last sync.
    pub(crate) old_state: u8,
    /// The deadline (ms) of this entry's authoritative wheel item; wheel items with another deadline are
    /// stale. Invariant while live: `scheduled <= expires`.
    pub(crate) scheduled: u64,
    /// Reported expiry at the last sync, milliseconds (the kernel's `sync_endtime`).
    pub(crate) sync_endtime: u64,
    pub(crate) extra: Option<Box<ColdExtra>>,
}

impl Cold {
    /// The persistence-engine data, if any.
    #[inline]
    pub(crate) fn pe_data(&self) -> Option<&[u8]> {
        self.extra.as_ref().and_then(|e| e.pe_data.as_deref())
    }
}

/// A handle to a conn: shard, slot and generation.
///
/// Handles are cheap to copy and never dangle: once the conn is removed, its slot's generation moves on and
/// every call with the old handle finds nothing (returns `None`/`false`/an error). Generations are 31 bits
/// per slot, so a handle could only alias a new conn after 2^31 reuses of its slot.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnId {
    shard: u16,
    slot: u32,
    generation: NonZeroU32,
}

impl ConnId {
    pub(crate) const fn new(shard: u16, slot: u32, generation: NonZeroU32) -> Self {
        Self { shard, slot, generation }
    }

    /// The shard holding the conn (always 0 in a [`LocalConnTable`](crate::LocalConnTable)).
    pub const fn shard(self) -> usize {
        self.shard as usize
    }

    /// The slot within the shard (the top bit marks the IPv6 slab).
    pub const fn slot(self) -> u32 {
        self.slot
    }

    /// The slot's generation when the conn was created.
    pub const fn generation(self) -> u32 {
        self.generation.get()
    }

    /// Whether the conn is an IPv6 conn.
    pub const fn is_ipv6(self) -> bool {
        self.slot & V6_BIT != 0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:#x}@{}", self.shard, self.slot, self.generation)
    }
}

/// A copy of a conn's hot fields, as returned by lookups and listings.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ConnView {
    /// Transport protocol (number 0 for fwmark templates).
    pub protocol: Protocol,
    /// Client address (masked, for templates).
    pub caddr: IpAddr,
    /// Client port (0 for templates and `NO_CPORT` conns).
    pub cport: u16,
    /// Virtual address (the fwmark in the first 32 bits, for fwmark templates).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Destination (real server) address, of the entry's (client's) family. A conn tunnelled to a real server
    /// of the other family (facts §9.4, mixed families) holds no address of that family: ipvs-core stores the
    /// unspecified address here and reads the real one from the real server the conn is bound to (`dest`), so
    /// the 64-byte IPv4 hot line does not grow for them.
    pub daddr: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// Flags, kernel bit values.
    pub flags: ConnFlags,
    /// Protocol state (kernel numbering of the conn's protocol; template state for templates).
    pub state: u8,
    /// The bound destination.
    pub dest: Option<DestId>,
    /// Firewall mark at creation.
    pub fwmark: u32,
    /// Current timeout.
    pub timeout: Duration,
    /// When the conn expires unless touched.
    pub expires: Instant,
    /// Number of conns this one controls.
    pub n_control: u32,
    /// Incoming packets counted with [`ConnMut::inc_in_pkts`].
    pub in_pkts: u32,
}

impl ConnView {
    /// Client address and port.
    pub const fn client(&self) -> SocketAddr {
        SocketAddr::new(self.caddr, self.cport)
    }

    /// Virtual address and port.
    pub const fn virt(&self) -> SocketAddr {
        SocketAddr::new(self.vaddr, self.vport)
    }

    /// Destination address and port.
    pub const fn dest_addr(&self) -> SocketAddr {
        SocketAddr::new(self.daddr, self.dport)
    }

    /// Whether this is a persistence template.
    pub const fn is_template(&self) -> bool {
        self.flags.contains(ConnFlags::TEMPLATE)
    }

    /// The forwarding method.
    pub const fn fwd_method(&self) -> Option<FwdMethod> {
        self.flags.fwd_method()
    }

    /// The instant of the last timer restart (`expires - timeout`).
    pub fn last_touch(&self) -> Instant {
        Instant::from_millis(self.expires.total_millis().saturating_sub(self.timeout.total_millis()))
    }
}

/// A new conn or template for [`ConnTable::insert`](crate::ConnTable::insert).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct NewConn {
    /// Transport protocol (number 0 for fwmark templates).
    pub protocol: Protocol,
    /// Client address (masked, for templates).
    pub caddr: IpAddr,
    /// Client port: must be 0 for templates and for `NO_CPORT` conns.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Destination address (the original destination for bypass conns), of the client's family (see
    /// [`ConnView::daddr`] for real servers of the other family).
    pub daddr: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// Flags (kernel bits); `TEMPLATE` makes a template, `NO_CPORT` a conn whose client port is not known yet.
    pub flags: ConnFlags,
    /// Initial protocol state.
    pub state: u8,
    /// The bound destination (`None` for bypass conns and unbound backup conns).
    pub dest: Option<DestId>,
    /// Firewall mark at creation.
    pub fwmark: u32,
    /// Initial timeout (the kernel uses 3 s until the first state transition; the persistence timeout for
    /// templates). The conn expires at `now + timeout`.
    pub timeout: Duration,
    /// The controlling conn (template, or FTP control conn): its control count is incremented, and it cannot
    /// expire while this conn exists.
    pub control: Option<ConnId>,
}

impl NewConn {
    /// A conn of `protocol` from `client` to `virt`, forwarded to `dest_addr`.
    pub const fn new(protocol: Protocol, client: SocketAddr, virt: SocketAddr, dest_addr: SocketAddr) -> Self {
        Self {
            protocol,
            caddr: client.ip(),
            cport: client.port(),
            vaddr: virt.ip(),
            vport: virt.port(),
            daddr: dest_addr.ip(),
            dport: dest_addr.port(),
            flags: ConnFlags::MASQ,
            state: 0,
            dest: None,
            fwmark: 0,
            timeout: Duration::from_secs(3),
            control: None,
        }
    }

    /// A persistence template for `key`, pointing at `daddr:dport` (§8.1: the chosen dest's port, or 0), with
    /// the persistence `timeout`.
    pub fn template(key: &crate::TemplateKey, dest_addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            protocol: key.protocol,
            caddr: key.caddr,
            cport: 0,
            vaddr: key.vaddr,
            vport: key.vport,
            daddr: dest_addr.ip(),
            dport: dest_addr.port(),
            flags: ConnFlags::TEMPLATE,
            state: 0,
            dest: None,
            fwmark: 0,
            timeout,
            control: None,
        }
    }

    /// Sets the bound destination.
    #[must_use]
    pub const fn with_dest(mut self, dest: DestId) -> Self {
        self.dest = Some(dest);
        self
    }

    /// Sets the flags.
    #[must_use]
    pub const fn with_flags(mut self, flags: ConnFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the timeout.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the controlling conn.
    #[must_use]
    pub const fn with_control(mut self, control: ConnId) -> Self {
        self.control = Some(control);
        self
    }

    /// Whether this is a template.
    pub const fn is_template(&self) -> bool {
        self.flags.contains(ConnFlags::TEMPLATE)
    }

    /// Client address and port.
    pub const fn client(&self) -> SocketAddr {
        SocketAddr::new(self.caddr, self.cport)
    }

    /// Virtual address and port.
    pub const fn virt(&self) -> SocketAddr {
        SocketAddr::new(self.vaddr, self.vport)
    }

    /// Destination address and port.
    pub const fn dest_addr(&self) -> SocketAddr {
        SocketAddr::new(self.daddr, self.dport)
    }
}

/// Why a conn left the table.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum ExpireReason {
    /// Its timer ran out in [`handle_timeout`](crate::ConnTable::handle_timeout).
    Timeout,
    /// [`expire`](crate::ConnTable::expire) removed it as if its timer had run out.
    Expired,
    /// [`remove`](crate::ConnTable::remove) or [`remove_if`](crate::ConnTable::remove_if) deleted it (the kernel's
    /// `ip_vs_conn_del`).
    Removed,
    /// [`drop_entry`](crate::ConnTable::drop_entry) dropped it.
    Dropped,
    /// It was the controller of a force-deleted conn, controlled nothing else, and was not an assured template
    /// (the kernel's "drop CTL or non-assured TPL if not used anymore").
    ControllerDropped,
    /// [`flush`](crate::ConnTable::flush) removed it.
    Flushed,
}

/// A conn that left the table, for the engine's counters and sync.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Expired {
    /// Its (now stale) handle.
    pub id: ConnId,
    /// Its last state. `timeout` is zero for force-deleted controlled conns, as in the kernel.
    pub conn: ConnView,
    /// Its controller, whose control count the table has already decremented.
    pub control: Option<ConnId>,
    /// State at the last sync.
    pub old_state: u8,
    /// Why it left.
    pub reason: ExpireReason,
}

/// Mutable access to a conn under its shard lock, given by [`ConnTable::with_conn`](crate::ConnTable::with_conn)
/// and [`ConnTable::update`](crate::ConnTable::update).
///
/// The identity (addresses, ports, protocol, `TEMPLATE`/`NO_CPORT`/`ONE_PACKET`) and the control links cannot
/// be changed here; the table has dedicated calls for those.
pub struct ConnMut<'a> {
    pub(crate) id: ConnId,
    pub(crate) caddr: IpAddr,
    pub(crate) vaddr: IpAddr,
    pub(crate) daddr: IpAddr,
    pub(crate) m: &'a mut Meta,
    pub(crate) cold: &'a mut Cold,
}

impl fmt::Debug for ConnMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnMut").field("id", &self.id).field("view", &self.view()).finish_non_exhaustive()
    }
}

/// Flags [`ConnMut::set_flags`] leaves alone.
const IDENTITY_FLAGS: u32 = ConnFlags::TEMPLATE.0 | ConnFlags::NO_CPORT.0 | ConnFlags::ONE_PACKET.0;

impl ConnMut<'_> {
    /// The conn's handle.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// A snapshot of the hot fields.
    pub fn view(&self) -> ConnView {
        let m = &*self.m;
        ConnView {
            protocol: Protocol::from(m.protocol),
            caddr: self.caddr,
            cport: m.cport,
            vaddr: self.vaddr,
            vport: m.vport,
            daddr: self.daddr,
            dport: m.dport,
            flags: m.flags(),
            state: m.state,
            dest: m.dest(),
            fwmark: m.fwmark,
            timeout: Duration::from_millis(u64::from(m.timeout)),
            expires: Instant::from_millis(m.expires.get()),
            n_control: m.n_control,
            in_pkts: m.in_pkts,
        }
    }

    /// Transport protocol.
    pub fn protocol(&self) -> Protocol {
        Protocol::from(self.m.protocol)
    }

    /// Protocol state.
    pub fn state(&self) -> u8 {
        self.m.state
    }

    /// Sets the protocol state.
    pub fn set_state(&mut self, state: u8) {
        self.m.state = state;
    }

    /// Flags.
    pub fn flags(&self) -> ConnFlags {
        self.m.flags()
    }

    /// Sets the flags, except `TEMPLATE`, `NO_CPORT` and `ONE_PACKET`, which keep their values (they decide
    /// how the conn is found; see [`ConnTable::fill_cport`](crate::ConnTable::fill_cport)).
    pub fn set_flags(&mut self, flags: ConnFlags) {
        self.m.flags = (self.m.flags & IDENTITY_FLAGS) | (flags.0 & !IDENTITY_FLAGS);
    }

    /// The bound destination.
    pub fn dest(&self) -> Option<DestId> {
        self.m.dest()
    }

    /// Binds the conn to `dest` or unbinds it. `DestId(u32::MAX)` is reserved and unbinds.
    pub fn set_dest(&mut self, dest: Option<DestId>) {
        self.m.dest = dest.map_or(NO_DEST, |d| d.0);
    }

    /// Current timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.m.timeout))
    }

    /// Sets the timeout the next timer restart uses ([`ConnTable::update`](crate::ConnTable::update) restarts it
    /// right after the closure). Saturates at `u32::MAX` ms.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.m.timeout = saturate_ms(timeout);
    }

    /// When the conn expires unless touched.
    pub fn expires(&self) -> Instant {
        Instant::from_millis(self.m.expires.get())
    }

    /// Incoming-packet count.
    pub fn in_pkts(&self) -> u32 {
        self.m.in_pkts
    }

    /// Increments the incoming-packet count (wrapping) and returns the new value.
    pub fn inc_in_pkts(&mut self) -> u32 {
        self.m.in_pkts = self.m.in_pkts.wrapping_add(1);
        self.m.in_pkts
    }

    /// Sets the incoming-packet count.
    pub fn set_in_pkts(&mut self, n: u32) {
        self.m.in_pkts = n;
    }

    /// Number of conns this one controls.
    pub fn n_control(&self) -> u32 {
        self.m.n_control
    }

    /// The controlling conn.
    pub fn control(&self) -> Option<ConnId> {
        self.cold.control
    }

    /// Firewall mark.
    pub fn fwmark(&self) -> u32 {
        self.m.fwmark
    }

    /// State at the last sync.
    pub fn old_state(&self) -> u8 {
        self.cold.old_state
    }

    /// Sets the state at the last sync.
    pub fn set_old_state(&mut self, state: u8) {
        self.cold.old_state = state;
    }

    /// Reported expiry at the last sync (the kernel's `sync_endtime`).
    pub fn sync_endtime(&self) -> Instant {
        Instant::from_millis(self.cold.sync_endtime)
    }

    /// Sets the reported expiry at the last sync.
    pub fn set_sync_endtime(&mut self, at: Instant) {
        self.cold.sync_endtime = at.total_millis();
    }

    /// Inbound TCP sequence adjustment.
    pub fn in_seq(&self) -> SeqAdjust {
        self.cold.extra.as_ref().map(|e| e.in_seq).unwrap_or_default()
    }

    /// Outbound TCP sequence adjustment.
    pub fn out_seq(&self) -> SeqAdjust {
        self.cold.extra.as_ref().map(|e| e.out_seq).unwrap_or_default()
    }

    /// Sets the inbound TCP sequence adjustment.
    pub fn set_in_seq(&mut self, seq: SeqAdjust) {
        self.cold.extra.get_or_insert_with(Default::default).in_seq = seq;
    }

    /// Sets the outbound TCP sequence adjustment.
    pub fn set_out_seq(&mut self, seq: SeqAdjust) {
        self.cold.extra.get_or_insert_with(Default::default).out_seq = seq;
    }

    /// Persistence-engine data (templates of services with a PE, e.g. the SIP Call-ID). It is part of the
    /// template's identity, so it is given at insertion
    /// ([`ConnTable::insert_pe_template`](crate::ConnTable::insert_pe_template)) and never changes.
    pub fn pe_data(&self) -> Option<&[u8]> {
        self.cold.pe_data()
    }
}

/// `d` in milliseconds, saturating at `u32::MAX`.
pub(crate) fn saturate_ms(d: Duration) -> u32 {
    u32::try_from(d.total_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(core::mem::size_of::<Hot<Ipv4Addr>>(), 64);
        assert_eq!(core::mem::align_of::<Hot<Ipv4Addr>>(), 64);
        assert_eq!(core::mem::size_of::<Hot<Ipv6Addr>>(), 128);
        assert_eq!(core::mem::size_of::<Cold>(), 40);
        assert_eq!(core::mem::size_of::<Option<ConnId>>(), 12);
    }

    #[test]
    fn u64_halves_round_trip() {
        let mut v = U64::default();
        for x in [0, 1, u64::from(u32::MAX), 1 << 32, u64::MAX, 0x0123_4567_89AB_CDEF] {
            v.set(x);
            assert_eq!(v.get(), x, "{x:#066b}");
        }
    }

    #[test]
    fn saturating_timeouts() {
        assert_eq!(saturate_ms(Duration::from_secs(5)), 5000);
        assert_eq!(saturate_ms(Duration::from_secs(60 * 86_400)), u32::MAX);
    }
}
