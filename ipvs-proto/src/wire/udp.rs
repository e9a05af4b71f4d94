//! UDP datagrams (RFC 768, RFC 8200 §8.1): a zero-copy [`Packet`] view and an owned [`Repr`].
//!
//! The datagram is the first `len` bytes of the buffer (the length field); bytes after it (link-layer
//! padding) are ignored.
//!
//! Checksum rules, as Linux applies them:
//! - A checksum field of 0 means "not computed". Over IPv4 that is valid; over IPv6 it is not
//!   (RFC 8200 §8.1), so [`Packet::verify_checksum`] rejects it.
//! - A computed checksum of 0 is sent as `0xffff` ([`Packet::fill_checksum`]).
//! - NAT updates a checksum with [`update_checksum`], which keeps an absent (0) checksum absent and maps
//!   a result of 0 to `0xffff`, like the kernel's `CSUM_MANGLED_0`.
//!
//! ```
//! use core::net::{IpAddr, Ipv6Addr};
//! use ipvs_proto::wire::udp::{Packet, Repr};
//!
//! let src = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
//! let dst = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
//! let repr = Repr { src_port: 5353, dst_port: 53, payload_len: 5 };
//! let mut buf = vec![0u8; repr.buffer_len()];
//! repr.emit(&mut Packet::new_unchecked(&mut buf[..]), &src, &dst, b"hello");
//!
//! let packet = Packet::new_checked(&buf[..])?;
//! assert_eq!(packet.payload(), b"hello");
//! assert_eq!(Repr::parse(&packet, &src, &dst)?, repr);
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use core::net::IpAddr;

use super::checksum;
use super::{Error, Result};
use crate::Protocol;

mod field {
    //! Byte ranges of the header (RFC 768).

    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const LENGTH: Field = 4..6;
    pub(crate) const CHECKSUM: Field = 6..8;
}

/// The length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

fn read_u16(data: &[u8], f: field::Field) -> u16 {
    u16::from_be_bytes([data[f.start], data[f.start + 1]])
}

fn write_u16(data: &mut [u8], f: field::Field, value: u16) {
    data[f].copy_from_slice(&value.to_be_bytes());
}

/// The new UDP checksum field after bytes it covers (ports, or pseudo-header addresses) change from `old`
/// to `new` (RFC 1624, see [`checksum::update`]).
///
/// A field of 0 (no checksum, IPv4 only) stays 0; a result of 0 becomes `0xffff`, since 0 on the wire
/// means "absent".
pub fn update_checksum(field: u16, old: &[u8], new: &[u8]) -> u16 {
    if field == 0 {
        return 0;
    }
    match checksum::update(field, old, new) {
        0 => 0xffff,
        other => other,
    }
}

/// A read/write view of a UDP datagram in a buffer.
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

    /// Checks that no accessor can panic: the buffer holds the header, and the length field is at least
    /// the header and at most the buffer.
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN || len > buffer_len {
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

    /// The length field: header plus payload, in bytes.
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field (0: not computed).
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The datagram: the first `len()` bytes (the whole buffer if the length field is bad).
    fn datagram(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.get(..usize::from(self.len())).unwrap_or(data)
    }

    /// Whether the checksum is valid for the pseudo-header of `src` → `dst`.
    ///
    /// A 0 field (not computed) is valid over IPv4 and invalid over IPv6 (RFC 8200 §8.1). Always true under
    /// `cfg(fuzzing)`.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        if self.checksum() == 0 {
            return matches!((src, dst), (IpAddr::V4(_), IpAddr::V4(_)));
        }
        let datagram = self.datagram();
        let len = u32::from(self.len());
        checksum::is_valid(checksum::combine(&[
            checksum::pseudo_header(src, dst, Protocol::Udp, len),
            checksum::data(datagram),
        ]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: bytes 8 to `len()` (empty if the length field is bad).
    pub fn payload(&self) -> &'a [u8] {
        let len = usize::from(self.len());
        let data: &'a [u8] = self.buffer.as_ref();
        data.get(HEADER_LEN..len).unwrap_or_default()
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

    /// Sets the length field.
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// The payload, mutably: bytes 8 to `len()` (empty if the length field is bad).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        self.buffer.as_mut().get_mut(HEADER_LEN..len).unwrap_or_default()
    }

    /// Computes the checksum over the pseudo-header of `src` → `dst` and the datagram, and stores it; a
    /// computed 0 is stored as `0xffff`.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let sum = checksum::combine(&[
            checksum::pseudo_header(src, dst, Protocol::Udp, u32::from(self.len())),
            checksum::data(self.datagram()),
        ]);
        self.set_checksum(match !sum {
            0 => 0xffff,
            other => other,
        });
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An owned, validated UDP header.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Repr {
    /// The source port.
    pub src_port: u16,
    /// The destination port.
    pub dst_port: u16,
    /// The payload length in bytes (at most 65527).
    pub payload_len: usize,
}

impl Repr {
    /// Parses a datagram, checking its lengths and its checksum against the pseudo-header of `src` → `dst`
    /// (see [`Packet::verify_checksum`] for the 0 rule).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>, src: &IpAddr, dst: &IpAddr) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error);
        }
        Ok(Self { src_port: packet.src_port(), dst_port: packet.dst_port(), payload_len: packet.payload().len() })
    }

    /// The length of the header: 8.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the datagram [`Repr::emit`] writes: header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header fields with the checksum field set to 0 ("not computed"), leaving the payload
    /// bytes as they are.
    ///
    /// For a payload already in place (encapsulation into headroom): call [`Packet::fill_checksum`]
    /// afterwards, or leave the checksum at 0 over IPv4 (what IPVS does for GUE without the CSUM flag).
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(self.payload_len <= usize::from(u16::MAX) - HEADER_LEN);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(u16::try_from(self.buffer_len()).unwrap_or(u16::MAX));
        packet.set_checksum(0);
    }

    /// Writes the header, copies `payload` after it and fills the checksum for `src` → `dst`.
    ///
    /// The buffer must be at least [`Repr::buffer_len`] bytes and `payload` exactly `payload_len` bytes (a
    /// longer payload is truncated). Same shape as `tcp::Repr::emit`.
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

    /// 192.0.2.1:5353 → 198.51.100.10:53, payload "hello". Checksum 0xbaa4 computed independently (Python).
    static PACKET_BYTES: [u8; 13] = [0x14, 0xe9, 0x00, 0x35, 0x00, 0x0d, 0xba, 0xa4, 0x68, 0x65, 0x6c, 0x6c, 0x6f];

    /// [2001:db8::1]:4500 → [2001:db8::2]:4501, payload 01 02 03 04. Checksum 0x7d32 computed independently.
    static EMIT_BYTES: [u8; 12] = [0x11, 0x94, 0x11, 0x95, 0x00, 0x0c, 0x7d, 0x32, 0x01, 0x02, 0x03, 0x04];

    fn packet_repr() -> Repr {
        Repr { src_port: 5353, dst_port: 53, payload_len: 5 }
    }

    fn emit_repr() -> Repr {
        Repr { src_port: 4500, dst_port: 4501, payload_len: 4 }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 5353);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 13);
        assert!(!packet.is_empty());
        assert_eq!(packet.checksum(), 0xbaa4);
        assert_eq!(packet.payload(), b"hello");
        assert!(packet.verify_checksum(&SRC_V4, &DST_V4));
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5u8; PACKET_BYTES.len()];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(5353);
        packet.set_dst_port(53);
        packet.set_len(13);
        packet.payload_mut().copy_from_slice(b"hello");
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
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &SRC_V6, &DST_V6, &[1, 2, 3, 4]);
        assert_eq!(&bytes[..], &EMIT_BYTES[..]);
        assert_eq!(repr.header_len(), 8);
    }

    #[test]
    fn emit_header_leaves_the_checksum_absent() {
        let repr = packet_repr();
        let mut bytes = vec![0u8; repr.buffer_len()];
        bytes[HEADER_LEN..].copy_from_slice(b"hello");
        repr.emit_header(&mut Packet::new_unchecked(&mut bytes[..]));
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.checksum(), 0);
        assert_eq!(Repr::parse(&packet, &SRC_V4, &DST_V4), Ok(repr));
    }

    #[test]
    fn payload_stops_at_the_length_field() {
        let mut bytes = PACKET_BYTES.to_vec();
        bytes.extend_from_slice(&[0xee, 0xee]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), b"hello");
        assert_eq!(Repr::parse(&packet, &SRC_V4, &DST_V4), Ok(packet_repr()));
    }

    #[test]
    fn parse_rejects_buffer_below_8() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..7]), Err(Error));
    }

    #[test]
    fn parse_rejects_udp_length_below_8() {
        let mut bytes = PACKET_BYTES;
        bytes[field::LENGTH.start..field::LENGTH.end].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
        bytes[field::LENGTH.start..field::LENGTH.end].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_udp_length_past_buffer() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..12]), Err(Error));
    }

    #[cfg(not(fuzzing))]
    #[test]
    fn parse_rejects_bad_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[12] ^= 0x01;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet, &SRC_V4, &DST_V4), Err(Error));
    }

    #[cfg(not(fuzzing))]
    #[test]
    fn parse_rejects_ipv6_zero_checksum() {
        let mut bytes = EMIT_BYTES;
        bytes[field::CHECKSUM.start..field::CHECKSUM.end].fill(0);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum(&SRC_V6, &DST_V6));
        assert_eq!(Repr::parse(&packet, &SRC_V6, &DST_V6), Err(Error));
    }

    #[test]
    fn ipv4_zero_checksum_means_not_computed() {
        let mut bytes = PACKET_BYTES;
        bytes[field::CHECKSUM.start..field::CHECKSUM.end].fill(0);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(&SRC_V4, &DST_V4));
        assert_eq!(Repr::parse(&packet, &SRC_V4, &DST_V4), Ok(packet_repr()));
    }

    #[test]
    fn fill_checksum_sends_a_computed_zero_as_ffff() {
        // Two free payload bytes chosen so that the one's-complement sum is 0xffff: the checksum is 0.
        let mut bytes = [0x12, 0x34, 0x56, 0x78, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(&SRC_V4, &DST_V4);
        let sum_without = !packet.checksum();
        packet.payload_mut().copy_from_slice(&(!sum_without).to_be_bytes());
        packet.fill_checksum(&SRC_V4, &DST_V4);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(&SRC_V4, &DST_V4));
    }

    #[test]
    fn update_checksum_keeps_an_absent_checksum_absent() {
        assert_eq!(update_checksum(0, &[0, 53], &[0x1f, 0x90]), 0);
    }

    #[test]
    fn update_checksum_maps_zero_to_ffff() {
        // !fold(!0xffff + !0x0000 + 0xffff) = !0xffff = 0, sent as 0xffff.
        assert_eq!(checksum::update(0xffff, &[0, 0], &[0xff, 0xff]), 0);
        assert_eq!(update_checksum(0xffff, &[0, 0], &[0xff, 0xff]), 0xffff);
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
            (any::<(u16, u16)>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
                |((src_port, dst_port), payload)| (Repr { src_port, dst_port, payload_len: payload.len() }, payload),
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
            prop_assert_ne!(packet.checksum(), 0);
            prop_assert_eq!(Repr::parse(&packet, &src, &dst), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn update_checksum_equals_recompute(
            (repr, payload) in strategies::repr_and_payload(),
            (src, dst) in strategies::addr_pair(),
            new_port in any::<u16>(),
        ) {
            let mut bytes = vec![0u8; repr.buffer_len()];
            let mut packet = Packet::new_unchecked(&mut bytes[..]);
            repr.emit(&mut packet, &src, &dst, &payload);
            let field = update_checksum(packet.checksum(), &repr.dst_port.to_be_bytes(), &new_port.to_be_bytes());
            packet.set_dst_port(new_port);
            packet.set_checksum(field);
            prop_assert!(packet.verify_checksum(&src, &dst));
            let incremental = packet.checksum();
            packet.fill_checksum(&src, &dst);
            // 0x0000 and 0xffff are the same one's-complement value; neither form is 0 here.
            prop_assert_eq!(incremental, packet.checksum());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.len(), packet.checksum(), packet.payload());
                let _ = Repr::parse(&packet, &SRC_V4, &DST_V4);
                let _ = Repr::parse(&packet, &SRC_V6, &DST_V6);
            }
        }
    }
}
