//! SCTP packets (RFC 9260): the common header, a chunk iterator, and the CRC32c checksum.
//!
//! IPVS balances SCTP by ports and reads the chunk types of each packet to drive its state table
//! (`ip_vs_proto_sctp.c`); NAT rewrites ports and recomputes the CRC32c over the whole packet (it cannot be
//! updated incrementally). A [`Packet`] is exactly one SCTP packet: the IP layer trims the buffer.
//!
//! The checksum is CRC32c (Castagnoli, [`crc::CRC_32_ISCSI`]) over the packet with the checksum field
//! zeroed, stored least-significant byte first, as Linux (`sctp_compute_cksum` returns a `__le32`) and
//! RFC 9260 Appendix A do. [`Packet::checksum`] returns the CRC value itself.
//!
//! ```
//! use ipvs_proto::wire::sctp::{ChunkRepr, ChunkType, Packet, Repr};
//!
//! let repr = Repr {
//!     src_port: 5000,
//!     dst_port: 38412,
//!     verification_tag: 0,
//!     chunks: vec![ChunkRepr { chunk_type: ChunkType::Init, flags: 0, value: vec![0; 16] }],
//! };
//! let mut buf = vec![0u8; repr.buffer_len()];
//! repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
//!
//! let packet = Packet::new_checked(&buf[..])?;
//! assert!(packet.verify_checksum());
//! assert_eq!(packet.first_chunk()?.chunk_type, ChunkType::Init);
//! assert_eq!(Repr::parse(&packet)?, repr);
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use alloc::vec::Vec;
use core::iter::FusedIterator;

use super::{Error, Result};

mod field {
    //! Byte ranges of the common header (RFC 9260 §3.1) and of a chunk header (§3.2).

    pub(crate) type Field = core::ops::Range<usize>;

    pub(crate) const SRC_PORT: Field = 0..2;
    pub(crate) const DST_PORT: Field = 2..4;
    pub(crate) const VERIFICATION_TAG: Field = 4..8;
    pub(crate) const CHECKSUM: Field = 8..12;

    pub(crate) const CHUNK_TYPE: usize = 0;
    pub(crate) const CHUNK_FLAGS: usize = 1;
    pub(crate) const CHUNK_LENGTH: Field = 2..4;
}

/// The length of the common header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// The length of a chunk header (type, flags, length).
pub const CHUNK_HEADER_LEN: usize = field::CHUNK_LENGTH.end;

/// CRC32c (Castagnoli), the SCTP checksum (RFC 9260 §6.8, Appendix A).
static CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn read_u16(data: &[u8], f: field::Field) -> u16 {
    u16::from_be_bytes([data[f.start], data[f.start + 1]])
}

fn read_u32(data: &[u8], f: field::Field) -> u32 {
    u32::from_be_bytes([data[f.start], data[f.start + 1], data[f.start + 2], data[f.start + 3]])
}

fn write_u16(data: &mut [u8], f: field::Field, value: u16) {
    data[f].copy_from_slice(&value.to_be_bytes());
}

/// The CRC32c of `packet` with its checksum field taken as zero (0 for a buffer shorter than the header).
fn compute_crc(packet: &[u8]) -> u32 {
    let (Some(head), Some(rest)) = (packet.get(..field::CHECKSUM.start), packet.get(field::CHECKSUM.end..)) else {
        return 0;
    };
    let mut digest = CRC32C.digest();
    digest.update(head);
    digest.update(&[0; 4]);
    digest.update(rest);
    digest.finalize()
}

/// A chunk type (RFC 9260 §3.2), with the kernel's `SCTP_CID_*` numbers.
///
/// Every value converts losslessly both ways; types without a named arm are kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum ChunkType {
    /// Payload data (0).
    Data,
    /// Initiation (1).
    Init,
    /// Initiation acknowledgement (2).
    InitAck,
    /// Selective acknowledgement (3).
    Sack,
    /// Heartbeat request (4).
    Heartbeat,
    /// Heartbeat acknowledgement (5).
    HeartbeatAck,
    /// Abort (6).
    Abort,
    /// Shutdown (7).
    Shutdown,
    /// Shutdown acknowledgement (8).
    ShutdownAck,
    /// Operation error (9).
    Error,
    /// State cookie (10).
    CookieEcho,
    /// Cookie acknowledgement (11).
    CookieAck,
    /// Explicit congestion notification echo (12).
    Ecne,
    /// Congestion window reduced (13).
    Cwr,
    /// Shutdown complete (14).
    ShutdownComplete,
    /// Any other chunk type.
    Unknown(u8),
}

impl From<u8> for ChunkType {
    fn from(n: u8) -> Self {
        match n {
            0 => Self::Data,
            1 => Self::Init,
            2 => Self::InitAck,
            3 => Self::Sack,
            4 => Self::Heartbeat,
            5 => Self::HeartbeatAck,
            6 => Self::Abort,
            7 => Self::Shutdown,
            8 => Self::ShutdownAck,
            9 => Self::Error,
            10 => Self::CookieEcho,
            11 => Self::CookieAck,
            12 => Self::Ecne,
            13 => Self::Cwr,
            14 => Self::ShutdownComplete,
            other => Self::Unknown(other),
        }
    }
}

impl From<ChunkType> for u8 {
    fn from(t: ChunkType) -> Self {
        match t {
            ChunkType::Data => 0,
            ChunkType::Init => 1,
            ChunkType::InitAck => 2,
            ChunkType::Sack => 3,
            ChunkType::Heartbeat => 4,
            ChunkType::HeartbeatAck => 5,
            ChunkType::Abort => 6,
            ChunkType::Shutdown => 7,
            ChunkType::ShutdownAck => 8,
            ChunkType::Error => 9,
            ChunkType::CookieEcho => 10,
            ChunkType::CookieAck => 11,
            ChunkType::Ecne => 12,
            ChunkType::Cwr => 13,
            ChunkType::ShutdownComplete => 14,
            ChunkType::Unknown(other) => other,
        }
    }
}

/// One chunk, borrowed from a packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Chunk<'a> {
    /// The chunk type.
    pub chunk_type: ChunkType,
    /// The chunk flags (meaning depends on the type).
    pub flags: u8,
    /// The length field as on the wire: the 4-byte chunk header plus the value, padding excluded.
    pub length: u16,
    /// The value: `length - 4` bytes after the chunk header.
    pub value: &'a [u8],
}

/// Splits the first chunk off `data`; the rest starts at `ALIGN4(length)` (empty if the last chunk's
/// padding is missing).
fn split_chunk(data: &[u8]) -> Result<(Chunk<'_>, &[u8])> {
    if data.len() < CHUNK_HEADER_LEN {
        return Err(Error);
    }
    let length = read_u16(data, field::CHUNK_LENGTH);
    let len = usize::from(length);
    if len < CHUNK_HEADER_LEN {
        return Err(Error);
    }
    let value = data.get(CHUNK_HEADER_LEN..len).ok_or(Error)?;
    let chunk =
        Chunk { chunk_type: ChunkType::from(data[field::CHUNK_TYPE]), flags: data[field::CHUNK_FLAGS], length, value };
    Ok((chunk, data.get(align4(len)..).unwrap_or_default()))
}

/// The chunks of a packet, in order ([`Packet::chunks`]).
///
/// A chunk whose length is below 4 or runs past the buffer (including 1–3 stray bytes after the last chunk)
/// yields one `Err(Error)` and ends the iteration.
#[derive(Clone, Debug)]
pub struct Chunks<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<Chunk<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match split_chunk(self.rest) {
            Ok((chunk, rest)) => {
                self.rest = rest;
                Some(Ok(chunk))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for Chunks<'_> {}

/// A read/write view of an SCTP packet in a buffer.
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

    /// Checks that no accessor can panic: the buffer holds the common header. Chunks are checked as they
    /// are iterated.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error)
        } else {
            Ok(())
        }
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

    /// The verification tag.
    pub fn verification_tag(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VERIFICATION_TAG)
    }

    /// The CRC32c value stored in the checksum field (its bytes read least-significant first).
    pub fn checksum(&self) -> u32 {
        let d = self.buffer.as_ref();
        let c = field::CHECKSUM;
        u32::from_le_bytes([d[c.start], d[c.start + 1], d[c.start + 2], d[c.start + 3]])
    }

    /// The chunks after the common header.
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks { rest: self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default(), failed: false }
    }

    /// The first chunk: what IPVS schedules and changes state on. An error if there is none or it is
    /// malformed.
    pub fn first_chunk(&self) -> Result<Chunk<'_>> {
        self.chunks().next().unwrap_or(Err(Error))
    }

    /// Whether the CRC32c over the packet (checksum field as zero) equals the checksum field.
    ///
    /// Always true under `cfg(fuzzing)`.
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        self.check_len().is_ok() && compute_crc(self.buffer.as_ref()) == self.checksum()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The chunk bytes after the common header.
    pub fn payload(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer.as_ref();
        data.get(HEADER_LEN..).unwrap_or_default()
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

    /// Sets the verification tag.
    pub fn set_verification_tag(&mut self, value: u32) {
        self.buffer.as_mut()[field::VERIFICATION_TAG].copy_from_slice(&value.to_be_bytes());
    }

    /// Stores a CRC32c value in the checksum field (least-significant byte first).
    pub fn set_checksum(&mut self, value: u32) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_le_bytes());
    }

    /// The chunk bytes after the common header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(HEADER_LEN..).unwrap_or_default()
    }

    /// Computes the CRC32c over the packet and stores it.
    pub fn fill_checksum(&mut self) {
        let crc = compute_crc(self.buffer.as_ref());
        self.set_checksum(crc);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An owned chunk, for [`Repr`].
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct ChunkRepr {
    /// The chunk type.
    pub chunk_type: ChunkType,
    /// The chunk flags.
    pub flags: u8,
    /// The value (at most 65531 bytes), without padding.
    pub value: Vec<u8>,
}

impl ChunkRepr {
    /// The length [`ChunkRepr::emit`] writes: header, value and padding to a multiple of 4.
    pub fn buffer_len(&self) -> usize {
        align4(CHUNK_HEADER_LEN + self.value.len())
    }

    /// Writes the chunk header, the value and zero padding at the start of `buf`, which must be at least
    /// [`ChunkRepr::buffer_len`] bytes (nothing is written into a shorter one).
    pub fn emit(&self, buf: &mut [u8]) {
        debug_assert!(self.value.len() <= usize::from(u16::MAX) - CHUNK_HEADER_LEN);
        let len = CHUNK_HEADER_LEN + self.value.len();
        debug_assert!(buf.len() >= align4(len), "chunk buffer too short");
        let Some(out) = buf.get_mut(..align4(len)) else {
            return;
        };
        out[field::CHUNK_TYPE] = self.chunk_type.into();
        out[field::CHUNK_FLAGS] = self.flags;
        write_u16(out, field::CHUNK_LENGTH, u16::try_from(len).unwrap_or(u16::MAX));
        out[CHUNK_HEADER_LEN..len].copy_from_slice(&self.value);
        out[len..].fill(0);
    }
}

impl From<Chunk<'_>> for ChunkRepr {
    fn from(chunk: Chunk<'_>) -> Self {
        Self { chunk_type: chunk.chunk_type, flags: chunk.flags, value: chunk.value.to_vec() }
    }
}

/// An owned, validated SCTP packet: the common header and every chunk.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Repr {
    /// The source port.
    pub src_port: u16,
    /// The destination port.
    pub dst_port: u16,
    /// The verification tag.
    pub verification_tag: u32,
    /// The chunks, in order (a packet from the wire may have none).
    pub chunks: Vec<ChunkRepr>,
}

impl Repr {
    /// Parses a packet, checking its length, its CRC32c and every chunk.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error);
        }
        let chunks = packet.chunks().map(|c| c.map(ChunkRepr::from)).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            verification_tag: packet.verification_tag(),
            chunks,
        })
    }

    /// The length of the common header: 12.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the packet [`Repr::emit`] writes: the header and every chunk, each padded to 4.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.chunks.iter().map(ChunkRepr::buffer_len).sum::<usize>()
    }

    /// Writes the header and the chunks (each padded to a multiple of 4 with zeros), then the CRC32c.
    ///
    /// The buffer must be exactly [`Repr::buffer_len`] bytes. Unlike `tcp::Repr::emit` there are no
    /// addresses (the CRC32c has no pseudo-header) and no payload argument (the chunks are in the `Repr`).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_verification_tag(self.verification_tag);
        let mut rest = packet.payload_mut();
        for chunk in &self.chunks {
            chunk.emit(rest);
            rest = core::mem::take(&mut rest).get_mut(chunk.buffer_len()..).unwrap_or_default();
        }
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// A real SCTP INIT from Linux over loopback (127.0.0.1:32770 → 127.0.0.1:6000), from a `tcpdump -X`
    /// capture shown at http://www.92saki.net/comp/kick4/200408/sctp_18.svg (2004). The page shows the
    /// packet minus its last two bytes (`00 04`, the length of the Forward-TSN-Supported parameter
    /// `c0 00 00 04`); the stored CRC32c 9a 8e 92 83 (value 0x83928e9a) verifies only with them.
    /// Parameters: IPv4 address 127.0.0.1, IPv4 address 192.168.104.4, supported address types (IPv4),
    /// ECN capable, Forward-TSN supported.
    static PACKET_BYTES: [u8; 64] = [
        0x80, 0x02, 0x17, 0x70, 0x00, 0x00, 0x00, 0x00, 0x9a, 0x8e, 0x92, 0x83, 0x01, 0x00, 0x00, 0x34, 0xc3, 0xe9,
        0x58, 0x31, 0x00, 0x01, 0xb0, 0x00, 0x00, 0x0a, 0xff, 0xff, 0xdc, 0xa7, 0xfa, 0x41, 0x00, 0x05, 0x00, 0x08,
        0x7f, 0x00, 0x00, 0x01, 0x00, 0x05, 0x00, 0x08, 0xc0, 0xa8, 0x68, 0x04, 0x00, 0x0c, 0x00, 0x06, 0x00, 0x05,
        0x00, 0x00, 0x80, 0x00, 0x00, 0x04, 0xc0, 0x00, 0x00, 0x04,
    ];

    /// The SCTP part of the packet in Scapy's regression test "SCTP - Chunk Init - build" (its SCTP test
    /// suite): ports 0, tag 0, an INIT with zero fields and one IPv4 address parameter (127.0.0.1); Scapy
    /// expects the checksum bytes 40 2c 0b 5f.
    static SCAPY_INIT_BYTES: [u8; 40] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x2c, 0x0b, 0x5f, 0x01, 0x00, 0x00, 0x1c, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x08,
        0x7f, 0x00, 0x00, 0x01,
    ];

    fn packet_repr() -> Repr {
        Repr {
            src_port: 32770,
            dst_port: 6000,
            verification_tag: 0,
            chunks: vec![ChunkRepr { chunk_type: ChunkType::Init, flags: 0, value: PACKET_BYTES[16..].to_vec() }],
        }
    }

    #[test]
    fn crc32c_matches_rfc3720_vectors() {
        // RFC 3720 §B.4: CRC values of 32-byte test patterns.
        assert_eq!(CRC32C.checksum(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(CRC32C.checksum(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(CRC32C.checksum(&ascending), 0x46dd_794e);
        let descending: [u8; 32] = core::array::from_fn(|i| 31 - i as u8);
        assert_eq!(CRC32C.checksum(&descending), 0x113f_db5c);
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 32770);
        assert_eq!(packet.dst_port(), 6000);
        assert_eq!(packet.verification_tag(), 0);
        assert_eq!(packet.checksum(), 0x8392_8e9a);
        assert!(packet.verify_checksum());
        let chunk = packet.first_chunk().unwrap();
        assert_eq!(chunk.chunk_type, ChunkType::Init);
        assert_eq!(chunk.flags, 0);
        assert_eq!(chunk.length, 52);
        // Initiate tag 3286849585, a_rwnd 110592, 10 outbound streams, 65535 inbound, initial TSN 3701996097.
        assert_eq!(&chunk.value[..4], &3_286_849_585u32.to_be_bytes());
        assert_eq!(&chunk.value[4..8], &110_592u32.to_be_bytes());
        assert_eq!(&chunk.value[12..16], &3_701_996_097u32.to_be_bytes());
        assert_eq!(packet.chunks().count(), 1);
        assert_eq!(packet.payload(), &PACKET_BYTES[12..]);
    }

    #[test]
    fn scapy_init_verifies() {
        let packet = Packet::new_checked(&SCAPY_INIT_BYTES[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(packet.checksum().to_le_bytes(), [0x40, 0x2c, 0x0b, 0x5f]);
        assert_eq!(packet.first_chunk().map(|c| (c.chunk_type, c.length)), Ok((ChunkType::Init, 28)));
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5u8; PACKET_BYTES.len()];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(32770);
        packet.set_dst_port(6000);
        packet.set_verification_tag(0);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[12..]);
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
        assert_eq!(repr.buffer_len(), PACKET_BYTES.len());
        assert_eq!(repr.header_len(), 12);
        let mut bytes = vec![0xa5u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn chunks_start_at_align4_of_length() {
        // DATA with a 5-byte value (length 9, 3 bytes of padding), then a COOKIE ACK.
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
            verification_tag: 0x0102_0304,
            chunks: vec![
                ChunkRepr { chunk_type: ChunkType::Data, flags: 0x03, value: vec![1, 2, 3, 4, 5] },
                ChunkRepr { chunk_type: ChunkType::CookieAck, flags: 0, value: vec![] },
            ],
        };
        let mut bytes = vec![0xa5u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes.len(), 12 + 12 + 4);
        assert_eq!(&bytes[12..28], &[0, 3, 0, 9, 1, 2, 3, 4, 5, 0, 0, 0, 11, 0, 0, 4]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let lengths: Vec<_> = packet.chunks().map(|c| c.map(|c| (c.chunk_type, c.length))).collect();
        assert_eq!(lengths, [Ok((ChunkType::Data, 9)), Ok((ChunkType::CookieAck, 4))]);
        assert_eq!(Repr::parse(&packet), Ok(repr));
    }

    #[test]
    fn last_chunk_padding_may_be_missing() {
        let mut bytes = vec![0u8; 12];
        bytes.extend_from_slice(&[0, 0, 0, 5, 0xaa]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let chunks: Vec<_> = packet.chunks().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].map(|c| c.value), Ok(&[0xaa][..]));
    }

    #[test]
    fn parse_rejects_buffer_below_12() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..11]), Err(Error));
    }

    #[test]
    fn chunks_rejects_chunk_length_below_4() {
        let mut bytes = PACKET_BYTES;
        bytes[14..16].copy_from_slice(&3u16.to_be_bytes());
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let chunks: Vec<_> = packet.chunks().collect();
        assert_eq!(chunks, [Err(Error)]);
        assert_eq!(packet.first_chunk(), Err(Error));
    }

    #[test]
    fn chunks_rejects_chunk_past_buffer() {
        let packet = Packet::new_checked(&PACKET_BYTES[..63]).unwrap();
        assert_eq!(packet.chunks().collect::<Vec<_>>(), [Err(Error)]);
    }

    #[test]
    fn chunks_rejects_truncated_chunk_header() {
        // A good chunk, then three stray bytes: one error after the good chunk, then the end.
        let mut bytes = PACKET_BYTES.to_vec();
        bytes.extend_from_slice(&[0, 0, 0]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let mut chunks = packet.chunks();
        assert!(matches!(chunks.next(), Some(Ok(_))));
        assert_eq!(chunks.next(), Some(Err(Error)));
        assert_eq!(chunks.next(), None);
        assert_eq!(chunks.next(), None);
    }

    #[test]
    fn first_chunk_rejects_packet_without_chunks() {
        let packet = Packet::new_checked(&PACKET_BYTES[..12]).unwrap();
        assert_eq!(packet.chunks().count(), 0);
        assert_eq!(packet.first_chunk(), Err(Error));
    }

    #[cfg(not(fuzzing))]
    #[test]
    fn parse_rejects_bad_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[63] ^= 0x01;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Err(Error));
        // The CRC stored big-endian is wrong: the byte order matters.
        let mut bytes = PACKET_BYTES;
        bytes[8..12].reverse();
        assert!(!Packet::new_checked(&bytes[..]).unwrap().verify_checksum());
    }

    #[test]
    fn parse_rejects_malformed_chunk() {
        let mut bytes = PACKET_BYTES;
        bytes[14..16].copy_from_slice(&200u16.to_be_bytes());
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        assert_eq!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()), Err(Error));
    }

    #[test]
    fn chunk_type_numbers_round_trip_for_all_u8() {
        for n in 0..=u8::MAX {
            assert_eq!(u8::from(ChunkType::from(n)), n, "chunk type {n:#010b}");
        }
        assert_eq!(ChunkType::from(14), ChunkType::ShutdownComplete);
        assert_eq!(ChunkType::from(15), ChunkType::Unknown(15));
    }

    mod strategies {
        use super::*;

        pub(super) fn repr() -> impl Strategy<Value = Repr> {
            let chunk = (any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..24)).prop_map(
                |(chunk_type, flags, value)| ChunkRepr { chunk_type: ChunkType::from(chunk_type), flags, value },
            );
            (any::<(u16, u16, u32)>(), proptest::collection::vec(chunk, 0..5)).prop_map(
                |((src_port, dst_port, verification_tag), chunks)| Repr {
                    src_port,
                    dst_port,
                    verification_tag,
                    chunks,
                },
            )
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn emit_then_parse_round_trips(repr in strategies::repr()) {
            let mut bytes = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert!(packet.verify_checksum());
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.verification_tag(), packet.checksum());
                let _ = (packet.first_chunk(), packet.verify_checksum(), packet.payload());
                let n = packet.chunks().count();
                prop_assert!(n <= bytes.len() / 4);
                let _ = Repr::parse(&packet);
            }
        }
    }
}
