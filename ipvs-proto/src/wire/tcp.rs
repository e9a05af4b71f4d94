//! TCP segments (RFC 9293): a zero-copy [`Packet`] view and an owned [`Repr`].
//!
//! IPVS reads the ports and control bits of every segment; NAT rewrites ports and addresses with incremental
//! checksum updates ([`checksum::update`]). Full checksums are computed here, on emission and verification,
//! over the pseudo-header and the whole buffer: a `Packet` is exactly one segment (the IP layer trims the
//! buffer to the IP payload). Options are accepted by [`Repr::parse`] and never emitted.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use ipvs_proto::wire::tcp::{Flags, Packet, Repr};
//!
//! let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
//! let dst = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
//! let repr = Repr {
//!     src_port: 40000,
//!     dst_port: 443,
//!     seq_number: 1,
//!     ack_number: 0,
//!     flags: Flags::SYN,
//!     window_len: 64240,
//!     urgent_at: 0,
//!     payload_len: 0,
//! };
//! let mut buf = vec![0u8; repr.buffer_len()];
//! repr.emit(&mut Packet::new_unchecked(&mut buf[..]), &src, &dst, &[]);
//!
//! let packet = Packet::new_checked(&buf[..])?;
//! assert!(packet.flags().syn());
//! assert_eq!(Repr::parse(&packet, &src, &dst)?, repr);
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use core::fmt;
use core::net::IpAddr;
use core::ops;

use super::checksum;
use super::{Error, Result};
use crate::Protocol;

mod field {
    //! Byte ranges of the fixed header (RFC 9293 §3.1).

    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const SEQ_NUM: Field = 4..8;
    pub(crate) const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble), reserved bits and the AE/NS bit (low nibble).
    pub(crate) const DATA_OFF: usize = 12;
    pub(crate) const FLAGS: usize = 13;
    pub(crate) const WIN_SIZE: Field = 14..16;
    pub(crate) const CHECKSUM: Field = 16..18;
    pub(crate) const URGENT: Field = 18..20;
}

/// The length of the fixed TCP header (no options).
pub const HEADER_LEN: usize = field::URGENT.end;

fn read_u16(data: &[u8], f: field::Field) -> u16 {
    u16::from_be_bytes([data[f.start], data[f.start + 1]])
}

fn read_u32(data: &[u8], f: field::Field) -> u32 {
    u32::from_be_bytes([data[f.start], data[f.start + 1], data[f.start + 2], data[f.start + 3]])
}

fn write_u16(data: &mut [u8], f: field::Field, value: u16) {
    data[f].copy_from_slice(&value.to_be_bytes());
}

fn write_u32(data: &mut [u8], f: field::Field, value: u32) {
    data[f].copy_from_slice(&value.to_be_bytes());
}

/// The one's-complement sum of the pseudo-header and `segment`, or `None` when the segment is too long
/// for the address family (more than 65535 bytes over IPv4).
fn segment_sum(segment: &[u8], src: &IpAddr, dst: &IpAddr) -> Option<u16> {
    let len = u32::try_from(segment.len()).ok()?;
    if matches!(src, IpAddr::V4(_)) && len > u32::from(u16::MAX) {
        return None;
    }
    Some(checksum::combine(&[checksum::pseudo_header(src, dst, Protocol::Tcp, len), checksum::data(segment)]))
}

/// The TCP control bits (byte 13 of the header).
///
/// The AE (formerly NS) bit lives in byte 12 and is not part of this value.
#[derive(Clone, Copy, Default, Eq, Hash, PartialEq)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from the sender.
    pub const FIN: Self = Self(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Self = Self(0x02);
    /// Reset the connection.
    pub const RST: Self = Self(0x04);
    /// Push function.
    pub const PSH: Self = Self(0x08);
    /// The acknowledgment number is significant.
    pub const ACK: Self = Self(0x10);
    /// The urgent pointer is significant.
    pub const URG: Self = Self(0x20);
    /// ECN echo (RFC 3168).
    pub const ECE: Self = Self(0x40);
    /// Congestion window reduced (RFC 3168).
    pub const CWR: Self = Self(0x80);

    const NAMES: [(Self, &'static str); 8] = [
        (Self::FIN, "FIN"),
        (Self::SYN, "SYN"),
        (Self::RST, "RST"),
        (Self::PSH, "PSH"),
        (Self::ACK, "ACK"),
        (Self::URG, "URG"),
        (Self::ECE, "ECE"),
        (Self::CWR, "CWR"),
    ];

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether FIN is set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }

    /// Whether SYN is set.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }

    /// Whether RST is set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }

    /// Whether PSH is set.
    pub const fn psh(self) -> bool {
        self.contains(Self::PSH)
    }

    /// Whether ACK is set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }

    /// Whether URG is set.
    pub const fn urg(self) -> bool {
        self.contains(Self::URG)
    }
}

impl ops::BitOr for Flags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flags(")?;
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// A read/write view of a TCP segment (header, options and payload) in a buffer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer. For emission.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps an untrusted buffer, checking it with [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that no accessor can panic: the buffer holds the fixed header, and the data offset is at
    /// least 5 words and within the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN || header_len > len {
            return Err(Error);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// The acknowledgment number (meaningful only with ACK).
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The control bits.
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }

    /// The receive window, unscaled.
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The urgent pointer (meaningful only with URG).
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The raw option bytes between the fixed header and the payload (empty if the header length is bad).
    pub fn options(&self) -> &[u8] {
        let header_len = usize::from(self.header_len());
        self.buffer.as_ref().get(HEADER_LEN..header_len).unwrap_or_default()
    }

    /// Whether the checksum over the pseudo-header and the whole buffer is valid.
    ///
    /// Always true under `cfg(fuzzing)`, so fuzzers reach the code behind it.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        segment_sum(self.buffer.as_ref(), src, dst).is_some_and(checksum::is_valid)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload after the header and options (empty if the header length is bad).
    pub fn payload(&self) -> &'a [u8] {
        let header_len = usize::from(self.header_len());
        let data: &'a [u8] = self.buffer.as_ref();
        data.get(header_len..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the header length in bytes (rounded down to 4; at most 60), keeping the low nibble of byte 12.
    pub fn set_header_len(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[field::DATA_OFF] = (data[field::DATA_OFF] & 0x0f) | (((value / 4) & 0x0f) << 4);
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, value: Flags) {
        self.buffer.as_mut()[field::FLAGS] = value.0;
    }

    /// Sets the receive window.
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WIN_SIZE, value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// The payload, mutably (empty if the header length is bad).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = usize::from(self.header_len());
        self.buffer.as_mut().get_mut(header_len..).unwrap_or_default()
    }

    /// Computes the checksum over the pseudo-header and the whole buffer and stores it.
    ///
    /// A buffer too long for the family (over 65535 bytes with IPv4 addresses) gets a checksum that
    /// will not verify.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let sum = segment_sum(self.buffer.as_ref(), src, dst).unwrap_or(0xffff);
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An owned, validated TCP header: what IPVS needs of a segment. Options are not represented.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Repr {
    /// The source port.
    pub src_port: u16,
    /// The destination port.
    pub dst_port: u16,
    /// The sequence number.
    pub seq_number: u32,
    /// The acknowledgment number.
    pub ack_number: u32,
    /// The control bits.
    pub flags: Flags,
    /// The receive window, unscaled.
    pub window_len: u16,
    /// The urgent pointer.
    pub urgent_at: u16,
    /// The payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Parses a segment, checking its lengths and its checksum against the pseudo-header of `src` → `dst`.
    ///
    /// Options are skipped.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>, src: &IpAddr, dst: &IpAddr) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error);
        }
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
            payload_len: packet.payload().len(),
        })
    }

    /// The length of the header [`Repr::emit`] writes: 20, options are never emitted.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the segment [`Repr::emit`] writes: header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header fields (data offset 5, reserved bits clear) with the checksum field set to 0,
    /// leaving the payload bytes as they are.
    ///
    /// For a payload already in place: call [`Packet::fill_checksum`] afterwards.
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.buffer.as_mut()[field::DATA_OFF] = ((HEADER_LEN / 4) as u8) << 4;
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_at(self.urgent_at);
    }

    /// Writes the header, copies `payload` after it and fills the checksum for `src` → `dst`.
    ///
    /// The buffer must be exactly [`Repr::buffer_len`] bytes and `payload` exactly `payload_len` bytes
    /// (a longer payload is truncated). Same shape as `udp::Repr::emit`; `sctp::Repr::emit` takes no
    /// addresses (its CRC32c has no pseudo-header) and carries its chunks in the `Repr`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: &IpAddr,
        dst: &IpAddr,
        payload: &[u8],
    ) {
        debug_assert_eq!(payload.len(), self.payload_len);
        self.emit_header(packet);
        let out = packet.payload_mut();
        let n = out.len().min(payload.len());
        out[..n].copy_from_slice(&payload[..n]);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;
    use core::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    const SRC_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const DST_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
    const SRC_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    const DST_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

    /// PSH|ACK from 192.0.2.1:40000 to 198.51.100.10:443 with an MSS option (1460) and payload "abc".
    /// Checksum 0xa94a computed independently (Python, RFC 1071 sum over the IPv4 pseudo-header).
    static PACKET_BYTES: [u8; 27] = [
        0x9c, 0x40, 0x01, 0xbb, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x60, 0x18, 0x02, 0x00, 0xa9, 0x4a,
        0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x61, 0x62, 0x63,
    ];

    static OPTION_BYTES: [u8; 4] = [0x02, 0x04, 0x05, 0xb4];

    static PAYLOAD_BYTES: [u8; 3] = *b"abc";

    /// SYN|ACK from [2001:db8::1]:40000 to [2001:db8::2]:80 with payload "hi", as `emit` writes it (no
    /// options). Checksum 0xb6d2 computed independently over the IPv6 pseudo-header.
    static EMIT_BYTES: [u8; 22] = [
        0x9c, 0x40, 0x00, 0x50, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x01, 0x50, 0x12, 0xfa, 0xf0, 0xb6, 0xd2,
        0x00, 0x00, 0x68, 0x69,
    ];

    fn packet_repr() -> Repr {
        Repr {
            src_port: 40000,
            dst_port: 443,
            seq_number: 0x0123_4567,
            ack_number: 0x89ab_cdef,
            flags: Flags::PSH | Flags::ACK,
            window_len: 0x0200,
            urgent_at: 0,
            payload_len: 3,
        }
    }

    fn emit_repr() -> Repr {
        Repr {
            src_port: 40000,
            dst_port: 80,
            seq_number: 0xdead_beef,
            ack_number: 1,
            flags: Flags::SYN | Flags::ACK,
            window_len: 64240,
            urgent_at: 0,
            payload_len: 2,
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 40000);
        assert_eq!(packet.dst_port(), 443);
        assert_eq!(packet.seq_number(), 0x0123_4567);
        assert_eq!(packet.ack_number(), 0x89ab_cdef);
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.flags(), Flags::PSH | Flags::ACK);
        assert!(packet.flags().ack() && !packet.flags().syn() && !packet.flags().fin() && !packet.flags().rst());
        assert_eq!(packet.window_len(), 0x0200);
        assert_eq!(packet.checksum(), 0xa94a);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options(), &OPTION_BYTES[..]);
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
        assert!(packet.verify_checksum(&SRC_V4, &DST_V4));
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5u8; PACKET_BYTES.len()];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.buffer[field::DATA_OFF] = 0;
        packet.set_src_port(40000);
        packet.set_dst_port(443);
        packet.set_seq_number(0x0123_4567);
        packet.set_ack_number(0x89ab_cdef);
        packet.set_header_len(24);
        packet.set_flags(Flags::PSH | Flags::ACK);
        packet.set_window_len(0x0200);
        packet.set_urgent_at(0);
        packet.buffer[HEADER_LEN..24].copy_from_slice(&OPTION_BYTES);
        packet.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        packet.fill_checksum(&SRC_V4, &DST_V4);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn parse() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&packet, &SRC_V4, &DST_V4), Ok(packet_repr()));
        let packet = Packet::new_checked(&EMIT_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&packet, &SRC_V6, &DST_V6), Ok(emit_repr()));
    }

    #[test]
    fn emit() {
        let repr = emit_repr();
        let mut bytes = vec![0xa5u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &SRC_V6, &DST_V6, b"hi");
        assert_eq!(&bytes[..], &EMIT_BYTES[..]);
        assert_eq!(repr.header_len(), 20);
    }

    #[test]
    fn emit_header_then_fill_checksum_equals_emit() {
        let repr = emit_repr();
        let mut bytes = vec![0u8; repr.buffer_len()];
        bytes[HEADER_LEN..].copy_from_slice(b"hi");
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        repr.emit_header(&mut packet);
        assert_eq!(packet.checksum(), 0);
        packet.fill_checksum(&SRC_V6, &DST_V6);
        assert_eq!(&bytes[..], &EMIT_BYTES[..]);
    }

    #[test]
    fn parse_rejects_buffer_below_20() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..19]), Err(Error));
        assert_eq!(Packet::new_unchecked(&PACKET_BYTES[..19]).check_len(), Err(Error));
    }

    #[test]
    fn parse_rejects_data_offset_below_5() {
        let mut bytes = EMIT_BYTES;
        bytes[field::DATA_OFF] = 0x40;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
        bytes[field::DATA_OFF] = 0x00;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_header_len_past_buffer() {
        // Data offset 6 (24 bytes) in a 22-byte buffer.
        let mut bytes = EMIT_BYTES;
        bytes[field::DATA_OFF] = 0x60;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
        assert!(Packet::new_checked(&PACKET_BYTES[..23]).is_err());
        assert!(Packet::new_checked(&PACKET_BYTES[..24]).is_ok());
    }

    #[cfg(not(fuzzing))]
    #[test]
    fn parse_rejects_bad_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[26] ^= 0x01;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum(&SRC_V4, &DST_V4));
        assert_eq!(Repr::parse(&packet, &SRC_V4, &DST_V4), Err(Error));
        // The right bytes under the wrong addresses fail too.
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&packet, &SRC_V4, &SRC_V4), Err(Error));
    }

    #[test]
    fn set_header_len_keeps_the_low_nibble() {
        let mut bytes = EMIT_BYTES;
        bytes[field::DATA_OFF] = 0x51;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_header_len(20);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(bytes[field::DATA_OFF], 0x51);
    }

    #[test]
    fn flags_bits_and_debug() {
        let all = [Flags::FIN, Flags::SYN, Flags::RST, Flags::PSH, Flags::ACK, Flags::URG, Flags::ECE, Flags::CWR];
        for (i, f) in all.iter().enumerate() {
            assert_eq!(f.0, 1 << i, "{:#010b}", f.0);
        }
        let mut f = Flags::SYN;
        f |= Flags::ACK;
        assert!(f.contains(Flags::SYN | Flags::ACK) && f.syn() && f.ack() && !f.fin() && !f.rst());
        assert!(!f.contains(Flags::SYN | Flags::FIN));
        assert_eq!(alloc::format!("{f:?}"), "Flags(SYN|ACK)");
        assert_eq!(alloc::format!("{:?}", Flags::default()), "Flags()");
    }

    mod strategies {
        use super::*;

        pub(super) fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
            prop_oneof![
                (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| (IpAddr::from(s), IpAddr::from(d))),
                (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| (IpAddr::from(s), IpAddr::from(d))),
            ]
        }

        pub(super) fn repr_and_payload() -> impl Strategy<Value = (Repr, Vec<u8>)> {
            (any::<(u16, u16, u32, u32, u8, u16, u16)>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
                |((src_port, dst_port, seq_number, ack_number, flags, window_len, urgent_at), payload)| {
                    let repr = Repr {
                        src_port,
                        dst_port,
                        seq_number,
                        ack_number,
                        flags: Flags(flags),
                        window_len,
                        urgent_at,
                        payload_len: payload.len(),
                    };
                    (repr, payload)
                },
            )
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn emit_then_parse_round_trips(
            (repr, payload) in strategies::repr_and_payload(),
            (src, dst) in strategies::addr_pair(),
        ) {
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &src, &dst, &payload);
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet, &src, &dst), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.seq_number(), packet.ack_number());
                let _ = (packet.flags(), packet.window_len(), packet.checksum(), packet.urgent_at());
                let _ = (packet.options(), packet.payload());
                let _ = Repr::parse(&packet, &SRC_V4, &DST_V4);
                let _ = Repr::parse(&packet, &SRC_V6, &DST_V6);
            }
        }
    }
}
