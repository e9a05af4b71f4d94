//! What goes into the packet path and what comes out: the caller's [`PacketBuf`], the side a packet came from
//! ([`Direction`]), and the [`Verdict`] with its [`DropReason`] or [`IcmpKind`].

use core::fmt;
use core::net::IpAddr;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use ipvs_proto::{DestId, FwdMethod};

/// A packet in a buffer the caller owns, with room in front of it (headroom) for the outer headers of a
/// tunnel and for ICMP errors.
///
/// The packet is `buffer[start..start + len]` and starts with its IP header. The engine rewrites it in place;
/// a tunnel or an ICMP error moves [`start`](Self::start) back into the headroom, so read the packet to send
/// with [`packet`](Self::packet) after the verdict. 60 bytes of headroom cover every tunnel (IPv6 + UDP + GUE
/// is 52) and 48 bytes every ICMP error without moving the packet.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buffer: &'a mut [u8],
    start: usize,
    len: usize,
    fwmark: u32,
}

/// A packet range that does not fit its buffer ([`PacketBuf::new`]).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct PacketRangeError;

impl fmt::Display for PacketRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("packet range runs past the end of its buffer")
    }
}

impl core::error::Error for PacketRangeError {}

impl<'a> PacketBuf<'a> {
    /// The packet `buffer[start..start + len]`; the bytes before `start` are headroom.
    ///
    /// # Errors
    /// [`PacketRangeError`] when the range runs past the end of `buffer`.
    pub fn new(buffer: &'a mut [u8], start: usize, len: usize) -> Result<Self, PacketRangeError> {
        match start.checked_add(len) {
            Some(end) if end <= buffer.len() => Ok(Self { buffer, start, len, fwmark: 0 }),
            _ => Err(PacketRangeError),
        }
    }

    /// The whole of `buffer` is the packet: no headroom (tunnels and ICMP errors then have to move or cut it).
    pub fn whole(buffer: &'a mut [u8]) -> Self {
        let len = buffer.len();
        Self { buffer, start: 0, len, fwmark: 0 }
    }

    /// Sets the firewall mark the packet carries (the kernel's `skb->mark`, matched by fwmark services).
    #[must_use]
    pub fn with_fwmark(mut self, fwmark: u32) -> Self {
        self.fwmark = fwmark;
        self
    }

    /// The firewall mark.
    pub fn fwmark(&self) -> u32 {
        self.fwmark
    }

    /// Sets the firewall mark.
    pub fn set_fwmark(&mut self, fwmark: u32) {
        self.fwmark = fwmark;
    }

    /// The packet bytes.
    pub fn packet(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }

    /// The packet bytes, writable.
    pub fn packet_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[self.start..self.start + self.len]
    }

    /// Where the packet starts in the buffer.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The packet's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packet's range in the buffer.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// Bytes free in front of the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// The whole buffer, headroom included.
    pub fn buffer(&self) -> &[u8] {
        self.buffer
    }

    /// Points the packet at another range of the same buffer (for reusing one `PacketBuf` across packets).
    ///
    /// # Errors
    /// [`PacketRangeError`] when the range runs past the end of the buffer; nothing changes then.
    pub fn set_range(&mut self, start: usize, len: usize) -> Result<(), PacketRangeError> {
        match start.checked_add(len) {
            Some(end) if end <= self.buffer.len() => {
                self.start = start;
                self.len = len;
                Ok(())
            }
            _ => Err(PacketRangeError),
        }
    }

    /// The whole buffer, writable (engine internal).
    pub(crate) fn buffer_mut(&mut self) -> &mut [u8] {
        self.buffer
    }

    /// Moves the packet range; the caller has checked it against the buffer.
    pub(crate) fn set_range_unchecked(&mut self, start: usize, len: usize) {
        debug_assert!(start + len <= self.buffer.len());
        self.start = start;
        self.len = len;
    }
}

/// Which side a packet came from.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Direction {
    /// From a client, addressed to a virtual service (the kernel's "in" hook), or an ICMP error a client sent
    /// about a packet the director forwarded to it.
    FromClient,
    /// From a real server toward a client: NAT replies (the kernel's "out" hook), and ICMP errors real servers
    /// send about packets of NAT connections.
    FromRealServer,
}

/// What the embedder does with a packet after [`Engine::handle_packet`](crate::Engine::handle_packet).
#[must_use]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Discard the packet; the reason is also counted ([`Engine::drop_count`](crate::Engine::drop_count)).
    Drop(DropReason),
    /// Send the packet (as it now is in the buffer) toward `next_hop`.
    ///
    /// The method's rewrite is applied: NAT has the real server as destination (client → server) or the
    /// virtual service as source (server → client); DR is unchanged but for the TTL, and `next_hop` is the real
    /// server (send it there at layer 2); TUN is encapsulated (the buffer's range now starts at the outer
    /// header, addressed to `next_hop`). Forwarded packets have their TTL / hop limit decremented.
    Forward {
        /// How the packet reaches `next_hop`.
        method: FwdMethod,
        /// The real server (client → server), or the client (server → client).
        next_hop: IpAddr,
        /// The real server of the connection.
        dest: DestId,
    },
    /// Deliver the packet, unchanged, to the director's own stack (a LocalNode destination).
    Local,
    /// Not IPVS traffic: let the packet go wherever it would go without the director (unchanged).
    Pass,
    /// The buffer now holds an ICMP or ICMPv6 error to send to `to` (the original packet is dropped); it is
    /// addressed from the director's address (or, without one configured, from the address the original packet
    /// was sent to).
    SendIcmp {
        /// The host the error goes to.
        to: IpAddr,
        /// Which error it is.
        kind: IcmpKind,
    },
}

/// An ICMP error the engine writes into the buffer ([`Verdict::SendIcmp`]).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum IcmpKind {
    /// IPv4 destination unreachable, fragmentation needed (type 3 code 4), with the next-hop MTU: a packet with
    /// DF set does not fit the path to the real server (a tunnel's headers included).
    FragNeeded {
        /// The MTU the sender should use.
        mtu: u16,
    },
    /// ICMPv6 packet too big (type 2), with the MTU.
    PacketTooBig {
        /// The MTU the sender should use.
        mtu: u32,
    },
    /// Port unreachable (ICMP type 3 code 3, ICMPv6 type 1 code 4): no real server is available for a new
    /// connection (the kernel's `ip_vs_leave`), or a NAT reply matched no connection (`nat_icmp_send`).
    PortUnreachable,
    /// An ICMPv4 error a router or real server sent about a tunnelled packet, relayed to the client with the
    /// same type, code and rest of header, quoting the client's own packet (facts §5.6; fragmentation needed
    /// is [`IcmpKind::FragNeeded`] with the MTU left for the inner packet).
    Relayed {
        /// The ICMP type.
        msg_type: u8,
        /// The ICMP code.
        code: u8,
        /// The 4 bytes after the checksum.
        rest_of_header: u32,
    },
    /// Time exceeded in transit (ICMP type 11 code 0, ICMPv6 type 3 code 0): the TTL / hop limit ran out.
    TimeExceeded,
}

/// Why the engine dropped a packet. Every drop is counted per reason.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
#[non_exhaustive]
pub enum DropReason {
    /// An ICMP error about a tracked connection has a wrong checksum.
    BadIcmpChecksum,
    /// A new connection could not be inserted for a reason other than a full table: its persistence template
    /// (or the conn another thread created first) vanished in between — only concurrent calls get this.
    ConnInsert,
    /// The `drop_packet` defense dropped a packet that would have created a connection.
    DefenseDropPacket,
    /// The connection's real server was removed and neither `expire_nodest_conn` nor
    /// [`serve_removed_dests`](crate::Sysctls::serve_removed_dests) applies.
    DestUnavailable,
    /// An IP fragment: the engine needs whole datagrams (reassemble before handing packets in).
    Fragment,
    /// An ICMP error quoting a flow of a virtual service that no connection matches (the kernel's
    /// `ip_vs_leave` for ICMP-embedded headers).
    IcmpNoConn,
    /// The IP or transport header is malformed (bad lengths, bad IPv4 header checksum, truncated ports).
    Malformed,
    /// A tunnel leaves less than the minimum MTU (68 for IPv4, 1280 for IPv6).
    MtuTooSmall,
    /// No real server is available for a new connection and no port unreachable may be sent to the client.
    NoDestination,
    /// The buffer has too little headroom for a tunnel's outer headers, or too little room for an ICMP error.
    NoRoom,
    /// The persistence engine of a persistent `--pe sip` service found no usable SIP Call-ID in a packet that
    /// would create a connection (none, longer than 255 bytes, not ended by CR or LF, or not UDP; facts §8.1
    /// step 3, §8.5).
    PersistenceEngine,
    /// The NAT rewrite or encapsulation failed on the packet's contents (e.g. a tunnelled packet would exceed
    /// 65535 bytes).
    RewriteFailed,
    /// The connection table is at its capacity.
    TableFull,
    /// The TTL / hop limit ran out and no ICMP error is due (the packet is itself an ICMP error).
    TtlExceeded,
}

impl DropReason {
    /// Every reason, in declaration order (the order of [`DropCounts`]).
    pub const ALL: [Self; 14] = [
        Self::BadIcmpChecksum,
        Self::ConnInsert,
        Self::DefenseDropPacket,
        Self::DestUnavailable,
        Self::Fragment,
        Self::IcmpNoConn,
        Self::Malformed,
        Self::MtuTooSmall,
        Self::NoDestination,
        Self::NoRoom,
        Self::PersistenceEngine,
        Self::RewriteFailed,
        Self::TableFull,
        Self::TtlExceeded,
    ];

    /// Position in [`DropReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short name (the variant's, in snake case).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadIcmpChecksum => "bad_icmp_checksum",
            Self::ConnInsert => "conn_insert",
            Self::DefenseDropPacket => "defense_drop_packet",
            Self::DestUnavailable => "dest_unavailable",
            Self::Fragment => "fragment",
            Self::IcmpNoConn => "icmp_no_conn",
            Self::Malformed => "malformed",
            Self::MtuTooSmall => "mtu_too_small",
            Self::NoDestination => "no_destination",
            Self::NoRoom => "no_room",
            Self::PersistenceEngine => "persistence_engine",
            Self::RewriteFailed => "rewrite_failed",
            Self::TableFull => "table_full",
            Self::TtlExceeded => "ttl_exceeded",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of drop reasons.
pub(crate) const N_DROP_REASONS: usize = DropReason::ALL.len();

/// Drop counts, indexed by [`DropReason::index`].
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct DropCounts(pub [u64; N_DROP_REASONS]);

impl DropCounts {
    /// The count of `reason`.
    pub const fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// The total of every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r))).filter(|(_, n)| *n != 0)
    }
}

/// The shared drop counters (one relaxed atomic per reason).
#[derive(Debug)]
pub(crate) struct DropCounters([AtomicU64; N_DROP_REASONS]);

impl DropCounters {
    pub(crate) fn new() -> Self {
        Self(core::array::from_fn(|_| AtomicU64::new(0)))
    }

    pub(crate) fn count(&self, reason: DropReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> DropCounts {
        DropCounts(core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_buf_ranges() {
        let mut data = [0u8; 100];
        assert_eq!(PacketBuf::new(&mut data, 60, 41).err(), Some(PacketRangeError));
        assert_eq!(PacketBuf::new(&mut data, usize::MAX, 2).err(), Some(PacketRangeError));
        let mut buf = PacketBuf::new(&mut data, 60, 40).unwrap().with_fwmark(7);
        assert_eq!((buf.headroom(), buf.len(), buf.fwmark()), (60, 40, 7));
        buf.packet_mut()[0] = 0x45;
        assert_eq!(buf.buffer()[60], 0x45);
        assert!(buf.set_range(10, 91).is_err());
        assert_eq!(buf.range(), 60..100);
        buf.set_range(0, 100).unwrap();
        assert_eq!(buf.packet().len(), 100);
    }

    #[test]
    fn drop_reason_names_and_counts() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(r.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", r.name());
        }
        let c = DropCounters::new();
        c.count(DropReason::TableFull);
        c.count(DropReason::TableFull);
        c.count(DropReason::Malformed);
        let counts = c.load();
        assert_eq!(counts.get(DropReason::TableFull), 2);
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.nonzero().count(), 2);
    }
}
