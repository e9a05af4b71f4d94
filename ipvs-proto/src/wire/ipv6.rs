//! The IPv6 fixed header (RFC 8200): a zero-copy [`Packet`] view, an owned [`Repr`], and a walker over
//! the extension headers IPVS skips to reach the upper-layer header ([`walk_extension_headers`]).
//!
//! [`Repr`] carries neither the traffic class nor the flow label: [`Repr::emit`] writes both as zero.
//! Jumbograms (payload length 0 with a jumbo option) are not supported: payload length 0 is an empty
//! payload.
//!
//! ```
//! use core::net::Ipv6Addr;
//! use ipvs_proto::wire::ipv6::{walk_extension_headers, Packet, Repr};
//! use ipvs_proto::Protocol;
//!
//! let repr = Repr {
//!     src_addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
//!     dst_addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
//!     next_header: Protocol::Udp,
//!     payload_len: 4,
//!     hop_limit: 64,
//! };
//! let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
//! let mut packet = Packet::new_unchecked(&mut buf[..]);
//! repr.emit(&mut packet);
//! packet.payload_mut().copy_from_slice(b"ipvs");
//!
//! let packet = Packet::new_checked(&buf[..])?;
//! assert_eq!(Repr::parse(&packet)?, repr);
//! let ext = walk_extension_headers(packet.next_header(), packet.payload())?;
//! assert_eq!((ext.protocol, ext.offset, ext.fragment), (Protocol::Udp, 0, None));
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use core::net::Ipv6Addr;

use crate::wire::{Error, Result};
use crate::Protocol;

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Field = 8..24;
    pub(super) const DST_ADDR: Field = 24..40;
}

/// The length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The most extension headers [`walk_extension_headers`] walks before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

/// The length of the fragment extension header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// A read/write view of an IPv6 packet (fixed header and payload) in a buffer.
///
/// Getters on the fixed header panic only if the buffer is shorter than [`HEADER_LEN`], which
/// [`Packet::new_checked`] rules out. [`Packet::payload`] never panics: it is clamped to the buffer.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it (for emission into a buffer the caller sized).
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps an untrusted buffer, see [`Packet::check_len`].
    ///
    /// # Errors
    /// When [`Packet::check_len`] fails.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Wraps the possibly truncated packet quoted inside an ICMP error, see [`Packet::check_header`].
    ///
    /// # Errors
    /// When [`Packet::check_header`] fails.
    pub fn new_checked_truncated(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        Ok(packet)
    }

    /// Checks that the fixed header is complete (40 bytes) and the version is 6. The payload length
    /// may exceed the buffer.
    ///
    /// # Errors
    /// When the buffer is shorter than 40 bytes or the version is not 6.
    pub fn check_header(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN || self.version() != 6 {
            return Err(Error);
        }
        Ok(())
    }

    /// Checks everything [`Packet::check_header`] does, and that `40 + payload_len` fits in the buffer.
    ///
    /// # Errors
    /// When the buffer is shorter than 40 bytes, the version is not 6, or the payload runs past the
    /// buffer.
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        if HEADER_LEN + usize::from(self.payload_len()) > self.buffer.as_ref().len() {
            return Err(Error);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The version field (6 for IPv6).
    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// The flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// The payload length in bytes (extension headers included).
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The protocol of the first header after the fixed header (maybe an extension header).
    pub fn next_header(&self) -> Protocol {
        Protocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        read_addr(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_addr(self.buffer.as_ref(), field::DST_ADDR)
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(len);
        HEADER_LEN.min(end)..end
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload (extension headers included): bytes `40..40 + payload_len`, clamped to the buffer
    /// (so a truncated quoted packet gives the bytes available).
    pub fn payload(&self) -> &'a [u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_first_word(&mut self, value: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the version field.
    pub fn set_version(&mut self, value: u8) {
        let word = self.first_word();
        self.set_first_word((word & 0x0fff_ffff) | (u32::from(value & 0x0f) << 28));
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, value: u8) {
        let word = self.first_word();
        self.set_first_word((word & 0xf00f_ffff) | (u32::from(value) << 20));
    }

    /// Sets the flow label (the bits above the low 20 are dropped).
    pub fn set_flow_label(&mut self, value: u32) {
        let word = self.first_word();
        self.set_first_word((word & 0xfff0_0000) | (value & 0x000f_ffff));
    }

    /// Sets the payload length, in bytes.
    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the protocol of the first header after the fixed header.
    pub fn set_next_header(&mut self, value: Protocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.into();
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// The payload, mutably: bytes `40..40 + payload_len`, clamped to the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn read_addr(data: &[u8], range: field::Field) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&data[range]);
    Ipv6Addr::from(octets)
}

/// The owned form of the fixed IPv6 header (traffic class and flow label are not carried).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Repr {
    /// The source address.
    pub src_addr: Ipv6Addr,
    /// The destination address.
    pub dst_addr: Ipv6Addr,
    /// The protocol of the first header after the fixed header (maybe an extension header).
    pub next_header: Protocol,
    /// The payload length in bytes (extension headers included).
    pub payload_len: usize,
    /// The hop limit.
    pub hop_limit: u8,
}

impl Repr {
    /// Parses a packet, re-checking its lengths. Extension headers are not walked: see
    /// [`walk_extension_headers`].
    ///
    /// # Errors
    /// When [`Packet::check_len`] fails.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        })
    }

    /// The length of the header [`Repr::emit`] writes (40 bytes).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header with traffic class and flow label 0. The payload is not touched: write
    /// it through [`Packet::payload_mut`] afterwards.
    ///
    /// `payload_len` must be at most 65535; a larger value is written as 65535.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_first_word(0);
        packet.set_version(6);
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

/// The fields of an IPv6 fragment extension header IPVS reads.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct FragmentHeader {
    /// The fragment offset in bytes (a multiple of 8).
    pub offset: u16,
    /// The "more fragments" flag.
    pub more_frags: bool,
    /// The identification field.
    pub ident: u32,
}

/// Where the upper-layer header starts, as found by [`walk_extension_headers`].
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct ExtHeaders {
    /// The upper-layer protocol (the first header that is not an extension header IPVS walks).
    pub protocol: Protocol,
    /// The offset of the upper-layer header within the IPv6 payload.
    pub offset: usize,
    /// The fragment header, if one was walked.
    pub fragment: Option<FragmentHeader>,
}

/// Walks the extension headers at the start of an IPv6 `payload`, whose first header is `first` (the
/// fixed header's next header), to the upper-layer header.
///
/// Walks hop-by-hop options (only as the first header), routing, destination options, fragment
/// (8 bytes) and authentication (`(len + 2) * 4` bytes) headers, and stops at any other protocol,
/// "no next header" included. It also stops right after a fragment header whose offset is not 0: the
/// bytes after it are the middle of the original payload, so `protocol` is that header's next header
/// and the caller must not read an upper-layer header at `offset` (as the kernel's `ipv6_find_hdr`).
///
/// # Errors
/// When a header runs past the payload, more than [`MAX_EXT_HEADERS`] extension headers are chained,
/// or a hop-by-hop header is not the first.
pub fn walk_extension_headers(first: Protocol, payload: &[u8]) -> Result<ExtHeaders> {
    let mut protocol = first;
    let mut offset = 0usize;
    let mut fragment = None;
    let mut count = 0usize;
    loop {
        let rest = payload.get(offset..).unwrap_or(&[]);
        let len = match protocol {
            Protocol::HopByHop if count != 0 => return Err(Error),
            Protocol::HopByHop | Protocol::Ipv6Route | Protocol::Ipv6Opts => {
                (usize::from(*rest.get(1).ok_or(Error)?) + 1) * 8
            }
            Protocol::Ipv6Frag => FRAGMENT_HEADER_LEN,
            Protocol::Ah => (usize::from(*rest.get(1).ok_or(Error)?) + 2) * 4,
            _ => break,
        };
        count += 1;
        if count > MAX_EXT_HEADERS {
            return Err(Error);
        }
        let header = rest.get(..len).ok_or(Error)?;
        let next = Protocol::from(*header.first().ok_or(Error)?);
        offset += len;
        if protocol == Protocol::Ipv6Frag {
            let word = u16::from_be_bytes([header[2], header[3]]);
            let frag = FragmentHeader {
                offset: word & 0xfff8,
                more_frags: word & 1 != 0,
                ident: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            };
            fragment = Some(frag);
            if frag.offset != 0 {
                protocol = next;
                break;
            }
        }
        protocol = next;
    }
    Ok(ExtHeaders { protocol, offset, fragment })
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// UDP [2001:db8::1]:12345 -> [2001:db8::2]:53, traffic class 0xb8, flow label 0x12345, hop limit
    /// 64, payload "ipvs". UDP checksum 0x940f checked with an independent implementation.
    static PACKET_BYTES: [u8; 52] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x0c, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x02, 0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x94, 0x0f, 0x69, 0x70, 0x76, 0x73,
    ];

    static PAYLOAD_BYTES: [u8; 12] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x94, 0x0f, 0x69, 0x70, 0x76, 0x73];

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn packet_repr() -> Repr {
        Repr { src_addr: SRC, dst_addr: DST, next_header: Protocol::Udp, payload_len: 12, hop_limit: 64 }
    }

    /// An 8-byte routing/destination-options/hop-by-hop header (length field 0) followed by `next`.
    fn opts8(next: Protocol) -> [u8; 8] {
        [next.into(), 0, 1, 4, 0, 0, 0, 0]
    }

    fn frag(next: Protocol, offset: u16, more: bool, ident: u32) -> [u8; 8] {
        let word = (offset & 0xfff8) | u16::from(more);
        let [a, b] = word.to_be_bytes();
        let [c, d, e, f] = ident.to_be_bytes();
        [next.into(), 0, a, b, c, d, e, f]
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 12);
        assert_eq!(packet.next_header(), Protocol::Udp);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), SRC);
        assert_eq!(packet.dst_addr(), DST);
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 52];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_traffic_class(0xb8);
        packet.set_flow_label(0x12345);
        packet.set_payload_len(12);
        packet.set_next_header(Protocol::Udp);
        packet.set_hop_limit(64);
        packet.set_src_addr(SRC);
        packet.set_dst_addr(DST);
        packet.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn parse() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(packet_repr()));
    }

    #[test]
    fn emit() {
        let repr = packet_repr();
        let mut bytes = vec![0xa5; repr.buffer_len() + repr.payload_len];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        // Traffic class and flow label are emitted as zero.
        let mut expected = PACKET_BYTES;
        expected[..4].copy_from_slice(&[0x60, 0, 0, 0]);
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn parse_rejects_buffer_below_40() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..39]), Err(Error));
        assert_eq!(Packet::new_checked_truncated(&PACKET_BYTES[..39]), Err(Error));
    }

    #[test]
    fn parse_rejects_version_not_6() {
        let mut bytes = PACKET_BYTES;
        bytes[0] = 0x4b;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_payload_len_past_buffer() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..51]), Err(Error));
        // A quoted packet may be truncated: its payload is what the buffer holds.
        let packet = Packet::new_checked_truncated(&PACKET_BYTES[..51]).unwrap();
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..11]);
    }

    #[test]
    fn walk_without_ext_headers() {
        let ext = walk_extension_headers(Protocol::Tcp, &[]).unwrap();
        assert_eq!(ext, ExtHeaders { protocol: Protocol::Tcp, offset: 0, fragment: None });
        let ext = walk_extension_headers(Protocol::Ipv6NoNext, &[]).unwrap();
        assert_eq!(ext.protocol, Protocol::Ipv6NoNext);
    }

    #[test]
    fn walk_chain() {
        // HopByHop -> Routing -> Fragment (first, MF) -> AH (len 1: 12 bytes) -> DestOpts (16 bytes) -> TCP.
        let mut payload = Vec::new();
        payload.extend_from_slice(&opts8(Protocol::Ipv6Route));
        payload.extend_from_slice(&opts8(Protocol::Ipv6Frag));
        payload.extend_from_slice(&frag(Protocol::Ah, 0, true, 0xdead_beef));
        payload.extend_from_slice(&[Protocol::Ipv6Opts.into(), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[Protocol::Tcp.into(), 1, 1, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[0; 20]);
        let ext = walk_extension_headers(Protocol::HopByHop, &payload).unwrap();
        assert_eq!(ext.protocol, Protocol::Tcp);
        assert_eq!(ext.offset, 8 + 8 + 8 + 12 + 16);
        assert_eq!(ext.fragment, Some(FragmentHeader { offset: 0, more_frags: true, ident: 0xdead_beef }));
    }

    #[test]
    fn walk_reads_fragment_header_in_network_byte_order() {
        // RFC 8200 §4.5: bytes 2..4 are one big-endian word, offset in the top 13 bits, M in bit 0.
        let ext = walk_extension_headers(Protocol::Ipv6Frag, &[0x3a, 0x00, 0x00, 0x01, 0x59, 0xad, 0x9b, 0x98]);
        let frag = FragmentHeader { offset: 0, more_frags: true, ident: 0x59ad_9b98 };
        assert_eq!(ext, Ok(ExtHeaders { protocol: Protocol::Icmpv6, offset: 8, fragment: Some(frag) }));
        let ext = walk_extension_headers(Protocol::Ipv6Frag, &[0x11, 0x00, 0x05, 0xa8, 0, 0, 0, 9]).unwrap();
        assert_eq!(ext.fragment, Some(FragmentHeader { offset: 1448, more_frags: false, ident: 9 }));
    }

    #[test]
    fn walk_stops_after_later_fragment() {
        // A later fragment's next header names the reassembled payload; what follows is not a header.
        let mut payload = frag(Protocol::Ipv6Opts, 1232, false, 7).to_vec();
        payload.extend_from_slice(&[0xff; 4]);
        let ext = walk_extension_headers(Protocol::Ipv6Frag, &payload).unwrap();
        assert_eq!(ext.protocol, Protocol::Ipv6Opts);
        assert_eq!(ext.offset, 8);
        assert_eq!(ext.fragment, Some(FragmentHeader { offset: 1232, more_frags: false, ident: 7 }));
    }

    #[test]
    fn walk_rejects_ext_header_past_payload() {
        let header = opts8(Protocol::Udp);
        for len in 0..header.len() {
            assert_eq!(walk_extension_headers(Protocol::Ipv6Opts, &header[..len]), Err(Error), "len {len}");
        }
        let header = frag(Protocol::Udp, 0, false, 1);
        assert_eq!(walk_extension_headers(Protocol::Ipv6Frag, &header[..7]), Err(Error));
        // AH with length field 1 is 12 bytes.
        assert_eq!(walk_extension_headers(Protocol::Ah, &[17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(Error));
        assert!(walk_extension_headers(Protocol::Ah, &[17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_ok());
    }

    #[test]
    fn walk_rejects_hop_by_hop_not_first() {
        let mut payload = opts8(Protocol::HopByHop).to_vec();
        payload.extend_from_slice(&opts8(Protocol::Udp));
        assert_eq!(walk_extension_headers(Protocol::Ipv6Opts, &payload), Err(Error));
    }

    #[test]
    fn walk_rejects_too_many_ext_headers() {
        let chain = |n: usize| {
            let mut payload = Vec::new();
            for i in 0..n {
                let next = if i + 1 == n { Protocol::Udp } else { Protocol::Ipv6Opts };
                payload.extend_from_slice(&opts8(next));
            }
            payload
        };
        let ext = walk_extension_headers(Protocol::Ipv6Opts, &chain(MAX_EXT_HEADERS)).unwrap();
        assert_eq!((ext.protocol, ext.offset), (Protocol::Udp, 8 * MAX_EXT_HEADERS));
        assert_eq!(walk_extension_headers(Protocol::Ipv6Opts, &chain(MAX_EXT_HEADERS + 1)), Err(Error));
    }

    mod strategies {
        use super::*;

        pub(super) fn repr() -> impl Strategy<Value = Repr> {
            (any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u8>(), 0usize..2048, any::<u8>()).prop_map(
                |(s, d, proto, payload_len, hop_limit)| Repr {
                    src_addr: Ipv6Addr::from(s),
                    dst_addr: Ipv6Addr::from(d),
                    next_header: Protocol::from(proto),
                    payload_len,
                    hop_limit,
                },
            )
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn emit_then_parse_round_trips(repr in strategies::repr()) {
            let mut bytes = vec![0xa5; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
            prop_assert_eq!((packet.traffic_class(), packet.flow_label()), (0, 0));
        }

        #[test]
        fn walk_never_panics_and_stays_in_bounds(
            first in any::<u8>(),
            payload in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            if let Ok(ext) = walk_extension_headers(Protocol::from(first), &payload) {
                prop_assert!(ext.offset <= payload.len());
            }
        }
    }
}
