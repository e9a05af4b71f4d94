//! The IPv4 header (RFC 791): a zero-copy [`Packet`] view and an owned [`Repr`].
//!
//! [`Packet::new_checked`] validates the version, the header length and the total length against the
//! buffer, so no accessor panics afterwards. [`Repr`] carries the fields IPVS reads or writes; it does not
//! carry options: [`Repr::parse`] accepts them (and skips them), [`Repr::emit`] writes a 20-byte header.
//!
//! ```
//! use core::net::Ipv4Addr;
//! use ipvs_proto::wire::ipv4::{Packet, Repr};
//! use ipvs_proto::Protocol;
//!
//! let repr = Repr {
//!     src_addr: Ipv4Addr::new(192, 0, 2, 1),
//!     dst_addr: Ipv4Addr::new(198, 51, 100, 7),
//!     next_header: Protocol::Udp,
//!     payload_len: 4,
//!     hop_limit: 64,
//!     dscp: 0,
//!     ecn: 0,
//!     ident: 0x1c46,
//!     dont_frag: true,
//!     more_frags: false,
//!     frag_offset: 0,
//! };
//! let mut buf = vec![0u8; repr.buffer_len() + repr.payload_len];
//! let mut packet = Packet::new_unchecked(&mut buf[..]);
//! repr.emit(&mut packet);
//! packet.payload_mut().copy_from_slice(b"ipvs");
//!
//! let packet = Packet::new_checked(&buf[..])?;
//! assert!(packet.verify_checksum());
//! assert_eq!(Repr::parse(&packet)?, repr);
//! assert_eq!(packet.payload(), b"ipvs");
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use core::net::Ipv4Addr;

use crate::wire::{checksum, Error, Result};
use crate::Protocol;

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLG_OFF: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC_ADDR: Field = 12..16;
    pub(super) const DST_ADDR: Field = 16..20;
}

/// The length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The "don't fragment" flag in the flags/fragment-offset word.
const FLAG_DF: u16 = 0x4000;
/// The "more fragments" flag in the flags/fragment-offset word.
const FLAG_MF: u16 = 0x2000;
/// The fragment offset (in 8-byte units) in the flags/fragment-offset word.
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet (header, options and payload) in a buffer.
///
/// Getters on the fixed header panic only if the buffer is shorter than [`HEADER_LEN`], which
/// [`Packet::new_checked`] rules out. [`Packet::options`] and [`Packet::payload`] never panic: they
/// are clamped to the buffer.
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

    /// Checks that the header is complete and consistent: the buffer holds at least 20 bytes, the
    /// version is 4, the IHL is at least 5, the whole header (with options) is in the buffer and the
    /// total length covers the header. The total length may exceed the buffer.
    ///
    /// # Errors
    /// When one of those rules fails.
    pub fn check_header(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN
            || self.version() != 4
            || usize::from(self.header_len()) < HEADER_LEN
            || usize::from(self.header_len()) > len
            || self.total_len() < u16::from(self.header_len())
        {
            return Err(Error);
        }
        Ok(())
    }

    /// Checks everything [`Packet::check_header`] does, and that the total length fits in the buffer.
    ///
    /// # Errors
    /// When the buffer is shorter than 20 bytes, the version is not 4, the IHL is below 5, the
    /// header is longer than the buffer, or the total length is below the header length or past the
    /// buffer.
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        if usize::from(self.total_len()) > self.buffer.as_ref().len() {
            return Err(Error);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for IPv4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The Differentiated Services Code Point (6 bits).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// The Explicit Congestion Notification bits (2 bits).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// The total length (header and payload) in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// The "don't fragment" flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// The "more fragments" flag.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// The fragment offset, in bytes (a multiple of 8).
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// The time-to-live field.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn next_header(&self) -> Protocol {
        Protocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        read_addr(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_addr(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The options (bytes 20..header_len), clamped to the buffer.
    pub fn options(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.header_len()).min(data.len());
        data.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// Whether the header checksum verifies (always true under `cfg(fuzzing)`).
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        let data = self.buffer.as_ref();
        let end = usize::from(self.header_len()).min(data.len());
        checksum::is_valid(checksum::data(data.get(..end).unwrap_or(&[])))
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = usize::from(self.header_len()).min(end);
        start..end
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: bytes `header_len..total_len`, clamped to the buffer (so a truncated quoted
    /// packet gives the bytes available).
    pub fn payload(&self) -> &'a [u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    pub fn set_version(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::VER_IHL] = (data[field::VER_IHL] & 0x0f) | (value << 4);
    }

    /// Sets the header length, in bytes (a multiple of 4, at most 60).
    pub fn set_header_len(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::VER_IHL] = (data[field::VER_IHL] & 0xf0) | ((value / 4) & 0x0f);
    }

    /// Sets the Differentiated Services Code Point (6 bits).
    pub fn set_dscp(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::DSCP_ECN] = (data[field::DSCP_ECN] & 0x03) | (value << 2);
    }

    /// Sets the Explicit Congestion Notification bits (2 bits).
    pub fn set_ecn(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::DSCP_ECN] = (data[field::DSCP_ECN] & 0xfc) | (value & 0x03);
    }

    /// Sets the total length, in bytes.
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Clears the three flag bits (reserved, "don't fragment", "more fragments").
    pub fn clear_flags(&mut self) {
        let word = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        write_u16(self.buffer.as_mut(), field::FLG_OFF, word & OFFSET_MASK);
    }

    /// Sets the "don't fragment" flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    /// Sets the "more fragments" flag.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    /// Sets the fragment offset, in bytes (the low three bits are dropped).
    pub fn set_frag_offset(&mut self, value: u16) {
        let word = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        write_u16(self.buffer.as_mut(), field::FLG_OFF, (word & !OFFSET_MASK) | (value >> 3));
    }

    /// Sets the time-to-live field.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol of the payload.
    pub fn set_next_header(&mut self, value: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.into();
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Computes the header checksum (over `header_len` bytes, options included) and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let end = usize::from(self.header_len()).min(data.len());
        let sum = checksum::data(data.get(..end).unwrap_or(&[]));
        self.set_checksum(!sum);
    }

    /// The payload, mutably: bytes `header_len..total_len`, clamped to the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let word = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        let word = if value { word | flag } else { word & !flag };
        write_u16(self.buffer.as_mut(), field::FLG_OFF, word);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The owned form of an IPv4 header without options.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Repr {
    /// The source address.
    pub src_addr: Ipv4Addr,
    /// The destination address.
    pub dst_addr: Ipv4Addr,
    /// The protocol of the payload.
    pub next_header: Protocol,
    /// The payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// The time-to-live.
    pub hop_limit: u8,
    /// The Differentiated Services Code Point (6 bits; higher bits are dropped on emit).
    pub dscp: u8,
    /// The Explicit Congestion Notification bits (2 bits; higher bits are dropped on emit).
    pub ecn: u8,
    /// The identification field.
    pub ident: u16,
    /// The "don't fragment" flag.
    pub dont_frag: bool,
    /// The "more fragments" flag.
    pub more_frags: bool,
    /// The fragment offset in bytes (a multiple of 8; the low three bits are dropped on emit).
    pub frag_offset: u16,
}

impl Repr {
    /// Parses a packet, re-checking its lengths and verifying the header checksum (skipped under
    /// `cfg(fuzzing)`). Options are accepted but not carried.
    ///
    /// # Errors
    /// When [`Packet::check_len`] fails or the header checksum is wrong.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.total_len() - u16::from(packet.header_len())),
            hop_limit: packet.hop_limit(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// The length of the header [`Repr::emit`] writes (20 bytes: no options).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header (version 4, IHL 5, total length `20 + payload_len`) and fills its
    /// checksum. The payload is not touched: write it through [`Packet::payload_mut`] afterwards (the
    /// checksum covers only the header).
    ///
    /// `payload_len` must be at most `65535 - 20`; a larger value is written as a total length of
    /// 65535.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN as u8);
        packet.set_dscp(self.dscp);
        packet.set_ecn(self.ecn);
        let total_len = u16::try_from(HEADER_LEN.saturating_add(self.payload_len)).unwrap_or(u16::MAX);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_more_frags(self.more_frags);
        packet.set_frag_offset(self.frag_offset);
        packet.set_hop_limit(self.hop_limit);
        packet.set_next_header(self.next_header);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

fn read_u16(data: &[u8], range: field::Field) -> u16 {
    let b = &data[range];
    u16::from_be_bytes([b[0], b[1]])
}

fn write_u16(data: &mut [u8], range: field::Field, value: u16) {
    data[range].copy_from_slice(&value.to_be_bytes());
}

fn read_addr(data: &[u8], range: field::Field) -> Ipv4Addr {
    let b = &data[range];
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// UDP 192.168.0.1:12345 -> 192.168.0.199:53, DSCP EF, DF, TTL 64, ident 0x1c46, payload "ipvs".
    /// Header checksum 0x9bb6 and UDP checksum 0x6d6b checked with an independent implementation.
    static PACKET_BYTES: [u8; 32] = [
        0x45, 0xb8, 0x00, 0x20, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x9b, 0xb6, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7, 0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x6d, 0x6b, 0x69, 0x70, 0x76, 0x73,
    ];

    static PAYLOAD_BYTES: [u8; 12] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x6d, 0x6b, 0x69, 0x70, 0x76, 0x73];

    fn packet_repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(192, 168, 0, 1),
            dst_addr: Ipv4Addr::new(192, 168, 0, 199),
            next_header: Protocol::Udp,
            payload_len: 12,
            hop_limit: 64,
            dscp: 46,
            ecn: 0,
            ident: 0x1c46,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// The golden packet with its header bytes changed by `f` and the checksum refilled.
    fn mutated(f: impl FnOnce(&mut Packet<&mut [u8]>)) -> Vec<u8> {
        let mut bytes = PACKET_BYTES.to_vec();
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        f(&mut packet);
        packet.fill_checksum();
        bytes
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp(), 46);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.total_len(), 32);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.next_header(), Protocol::Udp);
        assert_eq!(packet.checksum(), 0x9bb6);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(packet.options(), &[] as &[u8]);
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 32];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp(46);
        packet.set_ecn(0);
        packet.set_total_len(32);
        packet.set_ident(0x1c46);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_more_frags(false);
        packet.set_frag_offset(0);
        packet.set_hop_limit(64);
        packet.set_next_header(Protocol::Udp);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 0, 1));
        packet.set_dst_addr(Ipv4Addr::new(192, 168, 0, 199));
        packet.fill_checksum();
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
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn fragment_fields() {
        let bytes = mutated(|p| {
            p.set_dont_frag(false);
            p.set_more_frags(true);
            p.set_frag_offset(1480);
        });
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.dont_frag());
        assert!(packet.more_frags());
        assert_eq!(packet.frag_offset(), 1480);
        assert_eq!(&bytes[6..8], &[0x20, 0xb9]);
    }

    #[test]
    fn parse_accepts_and_skips_options() {
        // IHL 6: one 4-byte option word (NOP NOP NOP EOL) before the payload.
        let mut bytes = PACKET_BYTES[..20].to_vec();
        bytes.extend_from_slice(&[0x01, 0x01, 0x01, 0x00]);
        bytes.extend_from_slice(&PAYLOAD_BYTES);
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_header_len(24);
        packet.set_total_len(36);
        packet.fill_checksum();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.options(), &[0x01, 0x01, 0x01, 0x00]);
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
        assert_eq!(Repr::parse(&packet), Ok(packet_repr()));
    }

    #[test]
    fn parse_rejects_buffer_below_20() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..19]), Err(Error));
        assert_eq!(Packet::new_checked(&[] as &[u8]), Err(Error));
    }

    #[test]
    fn parse_rejects_version_not_4() {
        let bytes = mutated(|p| p.set_version(6));
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_ihl_below_5() {
        let bytes = mutated(|p| p.set_header_len(16));
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_header_len_past_buffer() {
        // IHL 15 (60 bytes) in a 32-byte buffer whose total length claims 60.
        let bytes = mutated(|p| {
            p.set_header_len(60);
            p.set_total_len(60);
        });
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
        assert_eq!(Packet::new_checked_truncated(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_total_len_below_header_len() {
        let bytes = mutated(|p| p.set_total_len(19));
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
        assert_eq!(Packet::new_checked_truncated(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_total_len_past_buffer() {
        let bytes = mutated(|p| p.set_total_len(33));
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
        // A quoted packet may be truncated: its payload is what the buffer holds.
        let packet = Packet::new_checked_truncated(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn parse_rejects_bad_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[8] = 63;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Err(Error));
    }

    #[test]
    fn accessors_clamp_after_bad_mutation() {
        // Growing the lengths after `new_checked` must not make `payload`/`options` panic.
        let mut bytes = PACKET_BYTES;
        let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_total_len(1000);
        packet.set_header_len(60);
        assert_eq!(packet.payload_mut().len(), 0);
        assert_eq!(packet.options().len(), 12);
        let packet = Packet::new_unchecked(&bytes[..]);
        assert_eq!(packet.payload().len(), 0);
    }

    mod strategies {
        use super::*;

        pub(super) fn repr() -> impl Strategy<Value = Repr> {
            (
                any::<[u8; 4]>(),
                any::<[u8; 4]>(),
                any::<u8>(),
                0usize..2048,
                any::<u8>(),
                (0u8..64, 0u8..4),
                any::<u16>(),
                any::<(bool, bool)>(),
                0u16..=0x1fff,
            )
                .prop_map(|(s, d, proto, payload_len, hop_limit, (dscp, ecn), ident, (df, mf), off)| {
                    Repr {
                        src_addr: Ipv4Addr::from(s),
                        dst_addr: Ipv4Addr::from(d),
                        next_header: Protocol::from(proto),
                        payload_len,
                        hop_limit,
                        dscp,
                        ecn,
                        ident,
                        dont_frag: df,
                        more_frags: mf,
                        frag_offset: off << 3,
                    }
                })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn emit_then_parse_round_trips(repr in strategies::repr()) {
            let mut bytes = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert!(packet.verify_checksum());
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
            prop_assert_eq!(packet.payload().len(), repr.payload_len);
        }
    }
}
