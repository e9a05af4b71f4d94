//! ICMP for IPv4 (RFC 792): a zero-copy [`Packet`] view, the [`Message`] types and an owned [`Repr`].
//!
//! Every message has the same 8-byte header: type, code, checksum and a 4-byte "rest of header" whose
//! meaning depends on the type (echo identifier and sequence number, next-hop MTU, ...). The payload of
//! an error message is the quoted packet that caused it; [`crate::wire::ip::parse_embedded`] reads it.
//! The checksum covers the whole ICMP message, i.e. the whole buffer the [`Packet`] wraps.
//!
//! ```
//! use ipvs_proto::wire::icmpv4::{Message, Packet, Repr};
//!
//! let repr = Repr { msg_type: Message::EchoRequest, code: 0, rest_of_header: 0x1234_0001, payload_len: 4 };
//! let mut buf = vec![0u8; repr.buffer_len()];
//! repr.emit(&mut Packet::new_unchecked(&mut buf[..]), b"ipvs");
//!
//! let packet = Packet::new_checked(&buf[..])?;
//! assert!(packet.verify_checksum());
//! assert_eq!((packet.echo_ident(), packet.echo_seq_no()), (0x1234, 1));
//! assert_eq!(Repr::parse(&packet)?, repr);
//! assert_eq!(packet.payload(), b"ipvs");
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use crate::wire::{checksum, Error, Result};

mod field {
    pub(super) type Field = core::ops::Range<usize>;

    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const REST_OF_HEADER: Field = 4..8;
    pub(super) const ECHO_IDENT: Field = 4..6;
    pub(super) const ECHO_SEQNO: Field = 6..8;
    pub(super) const NEXT_HOP_MTU: Field = 6..8;
}

/// The length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::REST_OF_HEADER.end;

/// An ICMPv4 message type.
///
/// Every value converts losslessly both ways; numbers without a named arm are kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Message {
    /// Echo reply (0).
    EchoReply,
    /// Destination unreachable (3); codes in [`dst_unreachable`].
    DstUnreachable,
    /// Source quench (4, deprecated by RFC 6633 but still an error for IPVS).
    SourceQuench,
    /// Redirect (5).
    Redirect,
    /// Echo request (8).
    EchoRequest,
    /// Router advertisement (9).
    RouterAdvert,
    /// Router solicitation (10).
    RouterSolicit,
    /// Time exceeded (11).
    TimeExceeded,
    /// Parameter problem (12).
    ParamProblem,
    /// Timestamp (13).
    Timestamp,
    /// Timestamp reply (14).
    TimestampReply,
    /// Any other type.
    Unknown(u8),
}

impl From<u8> for Message {
    fn from(n: u8) -> Self {
        match n {
            0 => Self::EchoReply,
            3 => Self::DstUnreachable,
            4 => Self::SourceQuench,
            5 => Self::Redirect,
            8 => Self::EchoRequest,
            9 => Self::RouterAdvert,
            10 => Self::RouterSolicit,
            11 => Self::TimeExceeded,
            12 => Self::ParamProblem,
            13 => Self::Timestamp,
            14 => Self::TimestampReply,
            other => Self::Unknown(other),
        }
    }
}

impl From<Message> for u8 {
    fn from(m: Message) -> Self {
        match m {
            Message::EchoReply => 0,
            Message::DstUnreachable => 3,
            Message::SourceQuench => 4,
            Message::Redirect => 5,
            Message::EchoRequest => 8,
            Message::RouterAdvert => 9,
            Message::RouterSolicit => 10,
            Message::TimeExceeded => 11,
            Message::ParamProblem => 12,
            Message::Timestamp => 13,
            Message::TimestampReply => 14,
            Message::Unknown(other) => other,
        }
    }
}

impl Message {
    /// Whether IPVS treats this type as an error that quotes a packet of a connection
    /// (`ip_vs_in_icmp`: destination unreachable, source quench, time exceeded).
    pub const fn is_error(self) -> bool {
        matches!(self, Self::DstUnreachable | Self::SourceQuench | Self::TimeExceeded)
    }
}

/// Codes of [`Message::DstUnreachable`] IPVS sends or reads.
pub mod dst_unreachable {
    /// Network unreachable (0).
    pub const NET_UNREACHABLE: u8 = 0;
    /// Host unreachable (1).
    pub const HOST_UNREACHABLE: u8 = 1;
    /// Protocol unreachable (2).
    pub const PROTO_UNREACHABLE: u8 = 2;
    /// Port unreachable (3).
    pub const PORT_UNREACHABLE: u8 = 3;
    /// Fragmentation needed and DF set (4); the next-hop MTU is in the header.
    pub const FRAG_NEEDED: u8 = 4;
}

/// A read/write view of an ICMPv4 message in a buffer (the whole buffer is the message).
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
        let b = &self.buffer.as_ref()[field::REST_OF_HEADER];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// The sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// The next-hop MTU of a "fragmentation needed" destination-unreachable (RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Whether the checksum over the whole buffer verifies (always true under `cfg(fuzzing)`).
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        checksum::is_valid(checksum::data(self.buffer.as_ref()))
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
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the 4 type-specific bytes after the checksum.
    pub fn set_rest_of_header(&mut self, value: u32) {
        self.buffer.as_mut()[field::REST_OF_HEADER].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the identifier of an echo request or reply.
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Sets the sequence number of an echo request or reply.
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, value);
    }

    /// Sets the next-hop MTU of a "fragmentation needed" destination-unreachable.
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU, value);
    }

    /// Computes the checksum over the whole buffer and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
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

/// The owned form of an ICMPv4 message header; the payload stays in the buffer.
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
    /// Parses a message, re-checking its length and verifying the checksum over the whole buffer
    /// (skipped under `cfg(fuzzing)`).
    ///
    /// # Errors
    /// When the buffer is shorter than 8 bytes or the checksum is wrong.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
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

    /// Writes the header and `payload_len` bytes of payload, then fills the checksum over the whole
    /// buffer.
    ///
    /// The payload is `payload` cut or zero-padded to `payload_len` bytes, so a quoted packet can be
    /// passed whole. Give a buffer exactly [`Repr::buffer_len`] long (slice a larger one): the
    /// checksum covers the whole buffer, and bytes past `buffer_len` are left as they are.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>, payload: &[u8]) {
        packet.set_msg_type(self.msg_type);
        packet.set_code(self.code);
        packet.set_rest_of_header(self.rest_of_header);
        copy_payload(&mut packet.payload_mut()[..self.payload_len], payload);
        packet.fill_checksum();
    }
}

/// Copies `payload` into `dst`, cut or zero-padded to `dst.len()`.
pub(super) fn copy_payload(dst: &mut [u8], payload: &[u8]) {
    let n = dst.len().min(payload.len());
    let (head, tail) = dst.split_at_mut(n);
    head.copy_from_slice(&payload[..n]);
    tail.fill(0);
}

fn read_u16(data: &[u8], range: field::Field) -> u16 {
    let b = &data[range];
    u16::from_be_bytes([b[0], b[1]])
}

fn write_u16(data: &mut [u8], range: field::Field, value: u16) {
    data[range].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// Echo request, ident 0x1234, seq 1, payload "abcdefgh". Checksum 0x5435 checked with an
    /// independent implementation.
    static PACKET_BYTES: [u8; 16] =
        [0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68];

    static ECHO_DATA: [u8; 8] = *b"abcdefgh";

    fn packet_repr() -> Repr {
        Repr { msg_type: Message::EchoRequest, code: 0, rest_of_header: 0x1234_0001, payload_len: 8 }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), Message::EchoRequest);
        assert_eq!(packet.code(), 0);
        assert_eq!(packet.checksum(), 0x5435);
        assert_eq!(packet.rest_of_header(), 0x1234_0001);
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.payload(), &ECHO_DATA[..]);
        assert!(packet.verify_checksum());
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
        packet.fill_checksum();
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
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &ECHO_DATA);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn emit_cuts_or_pads_the_payload() {
        let repr = Repr { payload_len: 4, ..packet_repr() };
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &ECHO_DATA);
        assert_eq!(&bytes[8..], b"abcd");
        let repr = Repr { payload_len: 10, ..packet_repr() };
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &ECHO_DATA);
        assert_eq!(&bytes[8..], b"abcdefgh\0\0");
        assert_eq!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()), Ok(repr));
    }

    #[test]
    fn frag_needed() {
        let mut bytes = [0u8; 8];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Message::DstUnreachable);
        packet.set_code(dst_unreachable::FRAG_NEEDED);
        packet.set_next_hop_mtu(1480);
        packet.fill_checksum();
        assert_eq!(bytes, [3, 4, 0xf7, 0x33, 0, 0, 0x05, 0xc8]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.next_hop_mtu(), 1480);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn message_numbers_round_trip_for_all_u8() {
        for n in 0..=u8::MAX {
            let m = Message::from(n);
            assert_eq!(u8::from(m), n, "type {n:#010b}");
            assert_eq!(m.is_error(), matches!(n, 3 | 4 | 11), "type {n}");
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
        let mut bytes = PACKET_BYTES;
        bytes[15] ^= 1;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Err(Error));
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
        fn emit_then_parse_round_trips((repr, payload) in strategies::repr_and_payload()) {
            let mut bytes = vec![0xa5; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), &payload);
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert!(packet.verify_checksum());
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }
    }
}
