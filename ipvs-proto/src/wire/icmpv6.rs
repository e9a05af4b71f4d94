//! ICMP for IPv6 (RFC 4443): a zero-copy [`Packet`] view, the [`Message`] types and an owned [`Repr`].
//!
//! The layout is ICMPv4's (type, code, checksum, 4-byte "rest of header", payload), but the checksum
//! also covers the IPv6 pseudo-header, so computing or verifying it takes the source and destination
//! addresses. The checksum covers the whole buffer the [`Packet`] wraps. The payload of an error message
//! is the quoted packet that caused it; [`crate::wire::ip::parse_embedded`] reads it.
//!
//! ```
//! use core::net::Ipv6Addr;
//! use ipvs_proto::wire::icmpv6::{Message, Packet, Repr};
//!
//! let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
//! let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
//! let repr = Repr { msg_type: Message::PktTooBig, code: 0, rest_of_header: 1280, payload_len: 4 };
//! let mut buf = vec![0u8; repr.buffer_len()];
//! repr.emit(&src, &dst, &mut Packet::new_unchecked(&mut buf[..]), b"ipvs");
//!
//! let packet = Packet::new_checked(&buf[..])?;
//! assert!(packet.verify_checksum(&src, &dst));
//! assert!(packet.msg_type().is_error());
//! assert_eq!(packet.mtu(), 1280);
//! assert_eq!(Repr::parse(&src, &dst, &packet)?, repr);
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use core::net::Ipv6Addr;

use crate::wire::{checksum, Error, Result};
use crate::Protocol;

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const REST_OF_HEADER: Field = 4..8;
    pub(super) const ECHO_IDENT: Field = 4..6;
    pub(super) const ECHO_SEQNO: Field = 6..8;
    pub(super) const MTU: Field = 4..8;
}

/// The length of the ICMPv6 header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::REST_OF_HEADER.end;

/// An ICMPv6 message type.
///
/// Every value converts losslessly both ways; numbers without a named arm are kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Message {
    /// Destination unreachable (1).
    DstUnreachable,
    /// Packet too big (2); the MTU is in the header.
    PktTooBig,
    /// Time exceeded (3).
    TimeExceeded,
    /// Parameter problem (4).
    ParamProblem,
    /// Echo request (128).
    EchoRequest,
    /// Echo reply (129).
    EchoReply,
    /// Multicast listener query (130).
    MldQuery,
    /// Router solicitation (133).
    RouterSolicit,
    /// Router advertisement (134).
    RouterAdvert,
    /// Neighbor solicitation (135).
    NeighborSolicit,
    /// Neighbor advertisement (136).
    NeighborAdvert,
    /// Redirect (137).
    Redirect,
    /// Multicast listener report, version 2 (143).
    MldReport,
    /// Any other type.
    Unknown(u8),
}

impl From<u8> for Message {
    fn from(n: u8) -> Self {
        match n {
            1 => Self::DstUnreachable,
            2 => Self::PktTooBig,
            3 => Self::TimeExceeded,
            4 => Self::ParamProblem,
            128 => Self::EchoRequest,
            129 => Self::EchoReply,
            130 => Self::MldQuery,
            133 => Self::RouterSolicit,
            134 => Self::RouterAdvert,
            135 => Self::NeighborSolicit,
            136 => Self::NeighborAdvert,
            137 => Self::Redirect,
            143 => Self::MldReport,
            other => Self::Unknown(other),
        }
    }
}

impl From<Message> for u8 {
    fn from(m: Message) -> Self {
        match m {
            Message::DstUnreachable => 1,
            Message::PktTooBig => 2,
            Message::TimeExceeded => 3,
            Message::ParamProblem => 4,
            Message::EchoRequest => 128,
            Message::EchoReply => 129,
            Message::MldQuery => 130,
            Message::RouterSolicit => 133,
            Message::RouterAdvert => 134,
            Message::NeighborSolicit => 135,
            Message::NeighborAdvert => 136,
            Message::Redirect => 137,
            Message::MldReport => 143,
            Message::Unknown(other) => other,
        }
    }
}

impl Message {
    /// Whether IPVS treats this type as an error that quotes a packet (`ip_vs_in_icmp_v6`: every type
    /// below 128, the RFC 4443 error range).
    pub fn is_error(self) -> bool {
        u8::from(self) < 128
    }
}

/// Codes of [`Message::DstUnreachable`] IPVS sends or reads.
pub mod dst_unreachable {
    /// No route to destination (0).
    pub const NO_ROUTE: u8 = 0;
    /// Administratively prohibited (1).
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Address unreachable (3).
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Port unreachable (4).
    pub const PORT_UNREACHABLE: u8 = 4;
}

/// A read/write view of an ICMPv6 message in a buffer (the whole buffer is the message).
///
/// Once [`Packet::new_checked`] succeeds no accessor panics.
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

    /// Checks that the buffer holds the 8-byte header.
    ///
    /// # Errors
    /// When the buffer is shorter than 8 bytes.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    pub fn msg_type(&self) -> Message {
        Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// The message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The 4 type-specific bytes after the checksum, as one big-endian word.
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST_OF_HEADER)
    }

    /// The identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// The sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// The MTU of a packet-too-big message.
    pub fn mtu(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MTU)
    }

    /// Whether the checksum over the pseudo-header and the whole buffer verifies (always true under
    /// `cfg(fuzzing)`).
    pub fn verify_checksum(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        checksum::is_valid(sum(src_addr, dst_addr, self.buffer.as_ref()))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The bytes after the 8-byte header: the quoted packet of an error, the data of an echo.
    pub fn payload(&self) -> &'a [u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, value: Message) {
        self.buffer.as_mut()[field::TYPE] = value.into();
    }

    /// Sets the message code.
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the 4 type-specific bytes after the checksum.
    pub fn set_rest_of_header(&mut self, value: u32) {
        self.buffer.as_mut()[field::REST_OF_HEADER].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the identifier of an echo request or reply.
    pub fn set_echo_ident(&mut self, value: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the sequence number of an echo request or reply.
    pub fn set_echo_seq_no(&mut self, value: u16) {
        self.buffer.as_mut()[field::ECHO_SEQNO].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the MTU of a packet-too-big message.
    pub fn set_mtu(&mut self, value: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes the checksum over the pseudo-header and the whole buffer and stores it.
    pub fn fill_checksum(&mut self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = sum(src_addr, dst_addr, self.buffer.as_ref());
        self.set_checksum(!sum);
    }

    /// The bytes after the 8-byte header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(HEADER_LEN..).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The owned form of an ICMPv6 message header; the payload stays in the buffer.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Repr {
    /// The message type.
    pub msg_type: Message,
    /// The message code.
    pub code: u8,
    /// The 4 type-specific bytes after the checksum, as one big-endian word.
    pub rest_of_header: u32,
    /// The length of the payload (the bytes after the 8-byte header).
    pub payload_len: usize,
}

impl Repr {
    /// Parses a message sent from `src_addr` to `dst_addr`, re-checking its length and verifying the
    /// checksum over the pseudo-header and the whole buffer (skipped under `cfg(fuzzing)`).
    ///
    /// # Errors
    /// When the buffer is shorter than 8 bytes or the checksum is wrong.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        src_addr: &Ipv6Addr,
        dst_addr: &Ipv6Addr,
        packet: &Packet<&T>,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src_addr, dst_addr) {
            return Err(Error);
        }
        Ok(Self {
            msg_type: packet.msg_type(),
            code: packet.code(),
            rest_of_header: packet.rest_of_header(),
            payload_len: packet.payload().len(),
        })
    }

    /// The length of the whole message [`Repr::emit`] writes: 8 + `payload_len`.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header and `payload_len` bytes of payload, then fills the checksum over the
    /// pseudo-header (`src_addr`, `dst_addr`) and the whole buffer.
    ///
    /// The payload is `payload` cut or zero-padded to `payload_len` bytes, so a quoted packet can be
    /// passed whole. Give a buffer exactly [`Repr::buffer_len`] long (slice a larger one): the
    /// checksum covers the whole buffer, and bytes past `buffer_len` are left as they are.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
        &self,
        src_addr: &Ipv6Addr,
        dst_addr: &Ipv6Addr,
        packet: &mut Packet<&mut T>,
        payload: &[u8],
    ) {
        packet.set_msg_type(self.msg_type);
        packet.set_code(self.code);
        packet.set_rest_of_header(self.rest_of_header);
        super::icmpv4::copy_payload(&mut packet.payload_mut()[..self.payload_len], payload);
        packet.fill_checksum(src_addr, dst_addr);
    }
}

/// The one's-complement sum of the pseudo-header and `message`.
fn sum(src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr, message: &[u8]) -> u16 {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    checksum::combine(&[checksum::pseudo_header_v6(src_addr, dst_addr, Protocol::Icmpv6, len), checksum::data(message)])
}

fn read_u16(data: &[u8], range: field::Field) -> u16 {
    let b = &data[range];
    u16::from_be_bytes([b[0], b[1]])
}

fn read_u32(data: &[u8], range: field::Field) -> u32 {
    let b = &data[range];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// Echo request [2001:db8::1] -> [2001:db8::2], ident 0x1234, seq 1, payload "abcdefgh". Checksum
    /// 0x8075 (pseudo-header included) checked with an independent implementation.
    static PACKET_BYTES: [u8; 16] =
        [0x80, 0x00, 0x80, 0x75, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68];

    static ECHO_DATA: [u8; 8] = *b"abcdefgh";

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn packet_repr() -> Repr {
        Repr { msg_type: Message::EchoRequest, code: 0, rest_of_header: 0x1234_0001, payload_len: 8 }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), Message::EchoRequest);
        assert_eq!(packet.code(), 0);
        assert_eq!(packet.checksum(), 0x8075);
        assert_eq!(packet.rest_of_header(), 0x1234_0001);
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.payload(), &ECHO_DATA[..]);
        assert!(packet.verify_checksum(&SRC, &DST));
        // The pseudo-header is covered: other addresses do not verify.
        assert!(!packet.verify_checksum(&DST, &DST));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 16];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Message::EchoRequest);
        packet.set_code(0);
        packet.set_echo_ident(0x1234);
        packet.set_echo_seq_no(1);
        packet.payload_mut().copy_from_slice(&ECHO_DATA);
        packet.fill_checksum(&SRC, &DST);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn parse() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&SRC, &DST, &packet), Ok(packet_repr()));
    }

    #[test]
    fn emit() {
        let repr = packet_repr();
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&SRC, &DST, &mut Packet::new_unchecked(&mut bytes[..]), &ECHO_DATA);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn packet_too_big() {
        let mut bytes = [0u8; 8];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Message::PktTooBig);
        packet.set_mtu(1280);
        assert_eq!(bytes, [2, 0, 0, 0, 0, 0, 0x05, 0x00]);
        assert_eq!(Packet::new_checked(&bytes[..]).unwrap().mtu(), 1280);
    }

    #[test]
    fn message_numbers_round_trip_for_all_u8() {
        for n in 0..=u8::MAX {
            let m = Message::from(n);
            assert_eq!(u8::from(m), n, "type {n:#010b}");
            assert_eq!(m.is_error(), n < 128, "type {n}");
        }
        assert_eq!(Message::from(200), Message::Unknown(200));
    }

    #[test]
    fn parse_rejects_buffer_below_8() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..7]), Err(Error));
        assert!(Packet::new_checked(&PACKET_BYTES[..8]).is_ok());
    }

    #[test]
    fn parse_rejects_bad_checksum() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&SRC, &SRC, &packet), Err(Error));
        let mut bytes = PACKET_BYTES;
        bytes[15] ^= 1;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&SRC, &DST, &packet), Err(Error));
    }

    mod strategies {
        use super::*;

        pub(super) fn repr_and_payload() -> impl Strategy<Value = (Repr, alloc::vec::Vec<u8>)> {
            (any::<u8>(), any::<u8>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..600)).prop_map(
                |(t, code, rest_of_header, payload)| {
                    let repr = Repr { msg_type: Message::from(t), code, rest_of_header, payload_len: payload.len() };
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
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut bytes = vec![0xa5; repr.buffer_len()];
            repr.emit(&src, &dst, &mut Packet::new_unchecked(&mut bytes[..]), &payload);
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert!(packet.verify_checksum(&src, &dst));
            prop_assert_eq!(Repr::parse(&src, &dst, &packet), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }
    }
}
