//! The tunnel headers IPVS TUN forwarding writes between the outer IP header and the inner packet.
//!
//! - **GRE** (RFC 2784, keys and sequence numbers from RFC 2890): [`GrePacket`] and [`GreRepr`]. IPVS writes
//!   the 4-byte base header, plus the checksum word when the dest's CSUM tunnel flag is set; the protocol
//!   type is [`ETHERTYPE_IPV4`] or [`ETHERTYPE_IPV6`]. The checksum covers the GRE header and the payload.
//! - **GUE** (draft-ietf-intarea-gue, variant 0, the layout of Linux's `fou`/`gue` code): [`GuePacket`] and
//!   [`GueRepr`], a 4-byte base header whose `proto_ctype` is the inner IP protocol (4 or 41), plus the
//!   remote-checksum-offload option when the dest's REMCSUM tunnel flag is set (`ipvs_gue_encap`). The UDP
//!   header in front of it is a [`udp`](super::udp) header; its checksum is computed only when the CSUM or
//!   REMCSUM flag is set, and left at 0 otherwise.
//!
//! IPIP needs no header of its own. The outer IP header is written by the IP layer.
//!
//! Both `Repr`s have `emit(packet, payload)`, which copies the inner packet, and `emit_header(packet)`,
//! which leaves bytes after the header alone, for an inner packet already in place behind caller-provided
//! headroom.
//!
//! ```
//! use ipvs_proto::wire::encap::{GrePacket, GreRepr, GuePacket, GueRepr, ETHERTYPE_IPV4};
//! use ipvs_proto::Protocol;
//!
//! let inner = [0x45, 0x00, 0x00, 0x14, 0, 0, 0x40, 0, 0x40, 0x06, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
//!
//! // GRE with a checksum.
//! let gre = GreRepr { protocol_type: ETHERTYPE_IPV4, checksum: true, key: None, sequence: None };
//! let mut buf = vec![0u8; gre.header_len() + inner.len()];
//! gre.emit(&mut GrePacket::new_unchecked(&mut buf[..]), &inner);
//! let packet = GrePacket::new_checked(&buf[..])?;
//! assert_eq!(GreRepr::parse(&packet)?, gre);
//! assert_eq!(packet.payload(), &inner[..]);
//!
//! // GUE, in place: the inner packet is already behind the headroom.
//! let gue = GueRepr { protocol: Protocol::IpIp, remote_checksum: None };
//! let mut buf = vec![0u8; gue.header_len() + inner.len()];
//! buf[gue.header_len()..].copy_from_slice(&inner);
//! gue.emit_header(&mut GuePacket::new_unchecked(&mut buf[..]));
//! let packet = GuePacket::new_checked(&buf[..])?;
//! assert_eq!(GueRepr::parse(&packet)?, gue);
//! assert_eq!(packet.payload(), &inner[..]);
//! # Ok::<(), ipvs_proto::wire::Error>(())
//! ```

use super::checksum;
use super::{Error, Result};
use crate::Protocol;

/// The GRE protocol type of an inner IPv4 packet.
pub const ETHERTYPE_IPV4: u16 = 0x0800;

/// The GRE protocol type of an inner IPv6 packet.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// GUE flag: private flags are present (Linux `GUE_FLAG_PRIV`), the only flag Linux knows.
pub const GUE_FLAG_PRIV: u16 = 0x0001;

/// GUE private flag: the remote-checksum-offload option is present (Linux `GUE_PFLAG_REMCSUM`), the only
/// private flag Linux knows.
pub const GUE_PFLAG_REMCSUM: u32 = 0x8000_0000;

mod field {
    //! Byte ranges of the GRE (RFC 2784 §2) and GUE (draft-ietf-intarea-gue §3.1) headers.

    pub(crate) type Field = core::ops::Range<usize>;

    /// GRE: C, (R), K, S, reserved bits, version.
    pub(crate) const GRE_FLAGS: Field = 0..2;
    pub(crate) const GRE_PROTOCOL: Field = 2..4;

    /// GUE: version (2 bits), C (1 bit), hlen (5 bits).
    pub(crate) const GUE_VER_C_HLEN: usize = 0;
    pub(crate) const GUE_PROTO_CTYPE: usize = 1;
    pub(crate) const GUE_FLAGS: Field = 2..4;
    /// GUE private flags, the only optional field before the private fields (with `GUE_FLAG_PRIV`).
    pub(crate) const GUE_PRIV_FLAGS: Field = 4..8;
    /// GUE remote checksum offload: checksum start, checksum offset (with `GUE_PFLAG_REMCSUM`).
    pub(crate) const GUE_REMCSUM_START: Field = 8..10;
    pub(crate) const GUE_REMCSUM_OFFSET: Field = 10..12;
}

/// The length of the GRE base header.
pub const GRE_HEADER_LEN: usize = field::GRE_PROTOCOL.end;

/// The length of the GUE base header.
pub const GUE_HEADER_LEN: usize = field::GUE_FLAGS.end;

const GRE_CSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQ: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;

/// The length of one optional GRE word (checksum + reserved1, key, sequence number).
const GRE_WORD: usize = 4;

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*data.get(at)?, *data.get(at + 1)?, *data.get(at + 2)?, *data.get(at + 3)?]))
}

fn write_bytes(data: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(out) = data.get_mut(at..at + bytes.len()) {
        out.copy_from_slice(bytes);
    }
}

/// A read/write view of a GRE header and its payload in a buffer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer. For emission.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps an untrusted buffer, checking it with [`GrePacket::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the header layout is known and fits: the base header is present, the version is 0
    /// (1 is PPTP's enhanced GRE), no routing is present (RFC 1701's R bit, which RFC 2784 forbids and
    /// Linux drops), and the optional words fit in the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < GRE_HEADER_LEN {
            return Err(Error);
        }
        let flags = self.flags_word();
        if flags & GRE_VERSION != 0 || flags & GRE_ROUTING != 0 || self.header_len() > len {
            return Err(Error);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn flags_word(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::GRE_FLAGS.start).unwrap_or(0)
    }

    /// Whether the checksum word is present (C bit).
    pub fn checksum_present(&self) -> bool {
        self.flags_word() & GRE_CSUM != 0
    }

    /// Whether the key word is present (K bit, RFC 2890).
    pub fn key_present(&self) -> bool {
        self.flags_word() & GRE_KEY != 0
    }

    /// Whether the sequence number word is present (S bit, RFC 2890).
    pub fn sequence_present(&self) -> bool {
        self.flags_word() & GRE_SEQ != 0
    }

    /// The version (0 after [`GrePacket::check_len`]).
    pub fn version(&self) -> u8 {
        (self.flags_word() & GRE_VERSION) as u8
    }

    /// The protocol type of the payload (an EtherType).
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::GRE_PROTOCOL.start).unwrap_or(0)
    }

    /// The header length: 4, plus 4 for each of checksum, key and sequence number present.
    pub fn header_len(&self) -> usize {
        let optional = [self.checksum_present(), self.key_present(), self.sequence_present()];
        GRE_HEADER_LEN + GRE_WORD * optional.iter().filter(|&&present| present).count()
    }

    /// The checksum field, if present.
    pub fn checksum(&self) -> Option<u16> {
        if !self.checksum_present() {
            return None;
        }
        read_u16(self.buffer.as_ref(), GRE_HEADER_LEN)
    }

    /// The key, if present.
    pub fn key(&self) -> Option<u32> {
        if !self.key_present() {
            return None;
        }
        read_u32(self.buffer.as_ref(), self.key_offset())
    }

    /// The sequence number, if present.
    pub fn sequence(&self) -> Option<u32> {
        if !self.sequence_present() {
            return None;
        }
        read_u32(self.buffer.as_ref(), self.header_len() - GRE_WORD)
    }

    fn key_offset(&self) -> usize {
        GRE_HEADER_LEN + if self.checksum_present() { GRE_WORD } else { 0 }
    }

    /// Whether the checksum, if present, is valid over the whole buffer (header and payload). True when
    /// there is no checksum, and always true under `cfg(fuzzing)`.
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) || !self.checksum_present() {
            return true;
        }
        checksum::is_valid(checksum::data(self.buffer.as_ref()))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> GrePacket<&'a T> {
    /// The payload (the inner packet) after the header.
    pub fn payload(&self) -> &'a [u8] {
        let header_len = self.header_len();
        let data: &'a [u8] = self.buffer.as_ref();
        data.get(header_len..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, value: u16) {
        write_bytes(self.buffer.as_mut(), field::GRE_PROTOCOL.start, &value.to_be_bytes());
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        self.buffer.as_mut().get_mut(header_len..).unwrap_or_default()
    }

    /// Computes the checksum over the whole buffer and stores it, if the checksum word is present.
    pub fn fill_checksum(&mut self) {
        if !self.checksum_present() {
            return;
        }
        write_bytes(self.buffer.as_mut(), GRE_HEADER_LEN, &[0, 0]);
        let sum = checksum::data(self.buffer.as_ref());
        write_bytes(self.buffer.as_mut(), GRE_HEADER_LEN, &(!sum).to_be_bytes());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for GrePacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An owned, validated GRE header (version 0).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct GreRepr {
    /// The protocol type of the payload: [`ETHERTYPE_IPV4`] or [`ETHERTYPE_IPV6`] for IPVS.
    pub protocol_type: u16,
    /// Whether the header carries a checksum (IPVS: the CSUM tunnel flag).
    pub checksum: bool,
    /// The key (RFC 2890), if any.
    pub key: Option<u32>,
    /// The sequence number (RFC 2890), if any.
    pub sequence: Option<u32>,
}

impl GreRepr {
    /// Parses a header, checking its layout ([`GrePacket::check_len`]) and its checksum if present.
    ///
    /// Reserved bits other than R are ignored on receipt, as Linux does.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &GrePacket<&T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error);
        }
        Ok(Self {
            protocol_type: packet.protocol_type(),
            checksum: packet.checksum_present(),
            key: packet.key(),
            sequence: packet.sequence(),
        })
    }

    /// The header length: 4, plus 4 for each of checksum, key and sequence number.
    pub const fn header_len(&self) -> usize {
        GRE_HEADER_LEN
            + if self.checksum { GRE_WORD } else { 0 }
            + if self.key.is_some() { GRE_WORD } else { 0 }
            + if self.sequence.is_some() { GRE_WORD } else { 0 }
    }

    /// Writes the header, with the checksum field (if any) set to 0, leaving the bytes after the header as
    /// they are.
    ///
    /// For a payload already in place: call [`GrePacket::fill_checksum`] afterwards.
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut GrePacket<T>) {
        let mut flags = 0;
        if self.checksum {
            flags |= GRE_CSUM;
        }
        if self.key.is_some() {
            flags |= GRE_KEY;
        }
        if self.sequence.is_some() {
            flags |= GRE_SEQ;
        }
        let data = packet.buffer.as_mut();
        write_bytes(data, field::GRE_FLAGS.start, &flags.to_be_bytes());
        write_bytes(data, field::GRE_PROTOCOL.start, &self.protocol_type.to_be_bytes());
        let mut at = GRE_HEADER_LEN;
        if self.checksum {
            write_bytes(data, at, &[0; GRE_WORD]);
            at += GRE_WORD;
        }
        if let Some(key) = self.key {
            write_bytes(data, at, &key.to_be_bytes());
            at += GRE_WORD;
        }
        if let Some(sequence) = self.sequence {
            write_bytes(data, at, &sequence.to_be_bytes());
        }
    }

    /// Writes the header, copies `payload` (the inner packet) after it and fills the checksum if any.
    ///
    /// The buffer must be exactly `header_len() + payload.len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut GrePacket<T>, payload: &[u8]) {
        self.emit_header(packet);
        let out = packet.payload_mut();
        let n = out.len().min(payload.len());
        out[..n].copy_from_slice(&payload[..n]);
        packet.fill_checksum();
    }
}

/// The GUE remote-checksum-offload option (Linux `fou`, `GUE_PFLAG_REMCSUM`).
///
/// Both values are offsets into the inner packet (the GUE payload), as `ipvs_gue_encap` writes them: the
/// receiver sums the inner packet from `start` to its end and stores the folded result at `offset`.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct RemoteChecksum {
    /// Where checksumming starts (the kernel's checksum start minus the GUE header length).
    pub start: u16,
    /// Where the checksum goes (`start` plus the kernel's `csum_offset`).
    pub offset: u16,
}

/// A read/write view of a GUE (variant 0) header and its payload in a buffer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct GuePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GuePacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer. For emission.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps an untrusted buffer, checking it with [`GuePacket::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that no accessor can panic: the base header is present and `hlen` words of options fit in
    /// the buffer. Version, flags and options are checked by [`GueRepr::parse`].
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < GUE_HEADER_LEN || self.header_len() > len {
            return Err(Error);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_byte(&self) -> u8 {
        self.buffer.as_ref()[field::GUE_VER_C_HLEN]
    }

    /// The version: 0 is a GUE header; 1 (direct IP encapsulation) has no GUE header at all.
    pub fn version(&self) -> u8 {
        self.first_byte() >> 6
    }

    /// Whether this is a control message (C bit) rather than data.
    pub fn control(&self) -> bool {
        self.first_byte() & 0x20 != 0
    }

    /// The length of the optional fields in 32-bit words.
    pub fn hlen(&self) -> u8 {
        self.first_byte() & 0x1f
    }

    /// The header length in bytes: 4 + `hlen` × 4.
    pub fn header_len(&self) -> usize {
        GUE_HEADER_LEN + 4 * usize::from(self.hlen())
    }

    /// The `proto_ctype` byte: the inner IP protocol for data, the control type for control messages.
    pub fn proto_ctype(&self) -> u8 {
        self.buffer.as_ref()[field::GUE_PROTO_CTYPE]
    }

    /// The flags word.
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::GUE_FLAGS.start).unwrap_or(0)
    }

    /// The option bytes after the base header (empty if `hlen` runs past the buffer).
    pub fn options(&self) -> &[u8] {
        self.buffer.as_ref().get(GUE_HEADER_LEN..self.header_len()).unwrap_or_default()
    }

    /// The private flags, if [`GUE_FLAG_PRIV`] is set and they fit in the options.
    pub fn private_flags(&self) -> Option<u32> {
        if self.flags() & GUE_FLAG_PRIV == 0 {
            return None;
        }
        read_u32(self.options(), field::GUE_PRIV_FLAGS.start - GUE_HEADER_LEN)
    }

    /// The remote-checksum-offload option, if [`GUE_PFLAG_REMCSUM`] is set and it fits in the options.
    pub fn remote_checksum(&self) -> Option<RemoteChecksum> {
        if self.private_flags()? & GUE_PFLAG_REMCSUM == 0 {
            return None;
        }
        let options = self.options();
        Some(RemoteChecksum {
            start: read_u16(options, field::GUE_REMCSUM_START.start - GUE_HEADER_LEN)?,
            offset: read_u16(options, field::GUE_REMCSUM_OFFSET.start - GUE_HEADER_LEN)?,
        })
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> GuePacket<&'a T> {
    /// The payload (the inner packet) after the header and options.
    pub fn payload(&self) -> &'a [u8] {
        let header_len = self.header_len();
        let data: &'a [u8] = self.buffer.as_ref();
        data.get(header_len..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GuePacket<T> {
    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        self.buffer.as_mut().get_mut(header_len..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for GuePacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An owned, validated GUE data header (variant 0), as IPVS writes it.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct GueRepr {
    /// The inner IP protocol: [`Protocol::IpIp`] (4) or [`Protocol::Ipv6`] (41) for IPVS.
    pub protocol: Protocol,
    /// The remote-checksum-offload option (IPVS: REMCSUM tunnel flag and a packet with a pending checksum).
    pub remote_checksum: Option<RemoteChecksum>,
}

impl GueRepr {
    /// Parses a data header with Linux's rules (`validate_gue_flags`): version 0, not a control message, no
    /// flags but [`GUE_FLAG_PRIV`], no private flags but [`GUE_PFLAG_REMCSUM`], and every field the flags
    /// announce within `hlen`. Option bytes beyond those fields are ignored.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &GuePacket<&T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 0 || packet.control() || packet.flags() & !GUE_FLAG_PRIV != 0 {
            return Err(Error);
        }
        let mut remote_checksum = None;
        if packet.flags() & GUE_FLAG_PRIV != 0 {
            let private_flags = packet.private_flags().ok_or(Error)?;
            if private_flags & !GUE_PFLAG_REMCSUM != 0 {
                return Err(Error);
            }
            if private_flags & GUE_PFLAG_REMCSUM != 0 {
                remote_checksum = Some(packet.remote_checksum().ok_or(Error)?);
            }
        }
        Ok(Self { protocol: Protocol::from(packet.proto_ctype()), remote_checksum })
    }

    /// The header length: 4, or 12 with the remote-checksum option (private flags word + two offsets).
    pub const fn header_len(&self) -> usize {
        if self.remote_checksum.is_some() {
            field::GUE_REMCSUM_OFFSET.end
        } else {
            GUE_HEADER_LEN
        }
    }

    /// Writes the header (version 0, data, `hlen` from the options), leaving the bytes after it as they are.
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut GuePacket<T>) {
        let hlen = ((self.header_len() - GUE_HEADER_LEN) / 4) as u8;
        let flags = if self.remote_checksum.is_some() { GUE_FLAG_PRIV } else { 0 };
        let data = packet.buffer.as_mut();
        write_bytes(data, field::GUE_VER_C_HLEN, &[hlen, self.protocol.into()]);
        write_bytes(data, field::GUE_FLAGS.start, &flags.to_be_bytes());
        if let Some(remote) = self.remote_checksum {
            write_bytes(data, field::GUE_PRIV_FLAGS.start, &GUE_PFLAG_REMCSUM.to_be_bytes());
            write_bytes(data, field::GUE_REMCSUM_START.start, &remote.start.to_be_bytes());
            write_bytes(data, field::GUE_REMCSUM_OFFSET.start, &remote.offset.to_be_bytes());
        }
    }

    /// Writes the header and copies `payload` (the inner packet) after it.
    ///
    /// The buffer must be exactly `header_len() + payload.len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut GuePacket<T>, payload: &[u8]) {
        self.emit_header(packet);
        let out = packet.payload_mut();
        let n = out.len().min(payload.len());
        out[..n].copy_from_slice(&payload[..n]);
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// GRE with checksum, key 0x01020304 and sequence number 7 over 8 bytes of an IPv4 header. Checksum
    /// 0xfed5 computed independently (Python, RFC 1071 sum over header and payload).
    static PACKET_BYTES: [u8; 24] = [
        0xb0, 0x00, 0x08, 0x00, 0xfe, 0xd5, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x07, 0x45, 0x00,
        0x00, 0x1c, 0x00, 0x00, 0x00, 0x00,
    ];

    /// GRE as IPVS writes it with the CSUM flag, over 6 bytes of an IPv6 header. Checksum 0x9921 computed
    /// independently.
    static GRE_EMIT_BYTES: [u8; 14] =
        [0x80, 0x00, 0x86, 0xdd, 0x99, 0x21, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00];

    /// GUE with the remote-checksum option as `ipvs_gue_encap` lays it out: hlen 2, proto_ctype 4 (IPIP),
    /// flags PRIV, private flags REMCSUM, start 20 (after the inner IPv4 header), offset 26 (the inner UDP
    /// checksum), then 4 bytes of the inner packet.
    static GUE_BYTES: [u8; 16] =
        [0x02, 0x04, 0x00, 0x01, 0x80, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x1a, 0x45, 0x00, 0x00, 0x1c];

    /// Plain GUE for an inner IPv6 packet: version 0, hlen 0, proto_ctype 41, no flags.
    static GUE_EMIT_BYTES: [u8; 8] = [0x00, 0x29, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00];

    fn gre_repr() -> GreRepr {
        GreRepr { protocol_type: ETHERTYPE_IPV4, checksum: true, key: Some(0x0102_0304), sequence: Some(7) }
    }

    fn gue_repr() -> GueRepr {
        GueRepr { protocol: Protocol::IpIp, remote_checksum: Some(RemoteChecksum { start: 20, offset: 26 }) }
    }

    #[test]
    fn deconstruct() {
        let packet = GrePacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert!(packet.checksum_present() && packet.key_present() && packet.sequence_present());
        assert_eq!(packet.version(), 0);
        assert_eq!(packet.protocol_type(), ETHERTYPE_IPV4);
        assert_eq!(packet.header_len(), 16);
        assert_eq!(packet.checksum(), Some(0xfed5));
        assert_eq!(packet.key(), Some(0x0102_0304));
        assert_eq!(packet.sequence(), Some(7));
        assert_eq!(packet.payload(), &PACKET_BYTES[16..]);
        assert!(packet.verify_checksum());

        let packet = GuePacket::new_checked(&GUE_BYTES[..]).unwrap();
        assert_eq!((packet.version(), packet.control(), packet.hlen()), (0, false, 2));
        assert_eq!(packet.header_len(), 12);
        assert_eq!(packet.proto_ctype(), 4);
        assert_eq!(packet.flags(), GUE_FLAG_PRIV);
        assert_eq!(packet.options(), &GUE_BYTES[4..12]);
        assert_eq!(packet.private_flags(), Some(GUE_PFLAG_REMCSUM));
        assert_eq!(packet.remote_checksum(), Some(RemoteChecksum { start: 20, offset: 26 }));
        assert_eq!(packet.payload(), &GUE_BYTES[12..]);
    }

    #[test]
    fn construct() {
        let mut bytes = vec![0xa5u8; PACKET_BYTES.len()];
        bytes[..2].copy_from_slice(&(GRE_CSUM | GRE_KEY | GRE_SEQ).to_be_bytes());
        bytes[8..16].copy_from_slice(&[0x01, 0x02, 0x03, 0x04, 0, 0, 0, 7]);
        bytes[6..8].fill(0);
        let mut packet = GrePacket::new_unchecked(&mut bytes[..]);
        packet.set_protocol_type(ETHERTYPE_IPV4);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[16..]);
        packet.fill_checksum();
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn parse() {
        let packet = GrePacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(GreRepr::parse(&packet), Ok(gre_repr()));
        let packet = GuePacket::new_checked(&GUE_BYTES[..]).unwrap();
        assert_eq!(GueRepr::parse(&packet), Ok(gue_repr()));
    }

    #[test]
    fn emit() {
        let repr = gre_repr();
        assert_eq!(repr.header_len(), 16);
        let mut bytes = vec![0xa5u8; PACKET_BYTES.len()];
        repr.emit(&mut GrePacket::new_unchecked(&mut bytes[..]), &PACKET_BYTES[16..]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);

        let repr = GreRepr { protocol_type: ETHERTYPE_IPV6, checksum: true, key: None, sequence: None };
        assert_eq!(repr.header_len(), 8);
        let mut bytes = vec![0xa5u8; GRE_EMIT_BYTES.len()];
        repr.emit(&mut GrePacket::new_unchecked(&mut bytes[..]), &GRE_EMIT_BYTES[8..]);
        assert_eq!(&bytes[..], &GRE_EMIT_BYTES[..]);

        let repr = gue_repr();
        assert_eq!(repr.header_len(), 12);
        let mut bytes = vec![0xa5u8; GUE_BYTES.len()];
        repr.emit(&mut GuePacket::new_unchecked(&mut bytes[..]), &GUE_BYTES[12..]);
        assert_eq!(&bytes[..], &GUE_BYTES[..]);

        let repr = GueRepr { protocol: Protocol::Ipv6, remote_checksum: None };
        assert_eq!(repr.header_len(), 4);
        let mut bytes = vec![0xa5u8; GUE_EMIT_BYTES.len()];
        repr.emit(&mut GuePacket::new_unchecked(&mut bytes[..]), &GUE_EMIT_BYTES[4..]);
        assert_eq!(&bytes[..], &GUE_EMIT_BYTES[..]);
    }

    #[test]
    fn gre_without_checksum_is_the_4_byte_base_header() {
        let repr = GreRepr { protocol_type: ETHERTYPE_IPV4, checksum: false, key: None, sequence: None };
        let mut bytes = [0u8; 4 + 3];
        repr.emit(&mut GrePacket::new_unchecked(&mut bytes[..]), &[1, 2, 3]);
        assert_eq!(&bytes[..], &[0x00, 0x00, 0x08, 0x00, 1, 2, 3]);
        let packet = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.checksum(), None);
        assert_eq!(GreRepr::parse(&packet), Ok(repr));
    }

    #[test]
    fn gre_ignores_reserved_bits_like_linux() {
        let mut bytes = GRE_EMIT_BYTES;
        bytes[1] |= 0x08; // a reserved0 bit (bits 6-12)
        let mut packet = GrePacket::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        let packet = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(GreRepr::parse(&packet).map(|r| r.protocol_type), Ok(ETHERTYPE_IPV6));
    }

    #[test]
    fn gue_ignores_extra_option_bytes() {
        // hlen 3: the remote-checksum fields plus one word Linux skips.
        let mut bytes = GUE_BYTES[..12].to_vec();
        bytes[0] = 0x03;
        bytes.extend_from_slice(&[0xee; 4]);
        let packet = GuePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(GueRepr::parse(&packet), Ok(gue_repr()));
        assert_eq!(packet.payload(), &[] as &[u8]);
    }

    #[test]
    fn parse_rejects_gre_buffer_below_4() {
        assert_eq!(GrePacket::new_checked(&GRE_EMIT_BYTES[..3]), Err(Error));
    }

    #[test]
    fn parse_rejects_gre_version_nonzero() {
        let mut bytes = GRE_EMIT_BYTES;
        bytes[1] |= 0x01;
        assert_eq!(GrePacket::new_checked(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_gre_routing_present() {
        let mut bytes = GRE_EMIT_BYTES;
        bytes[0] |= 0x40;
        assert_eq!(GrePacket::new_checked(&bytes[..]), Err(Error));
    }

    #[test]
    fn parse_rejects_gre_header_past_buffer() {
        assert_eq!(GrePacket::new_checked(&PACKET_BYTES[..15]), Err(Error));
        assert_eq!(GrePacket::new_checked(&GRE_EMIT_BYTES[..7]), Err(Error));
    }

    #[cfg(not(fuzzing))]
    #[test]
    fn parse_rejects_gre_bad_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[23] ^= 0x01;
        let packet = GrePacket::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(GreRepr::parse(&packet), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_buffer_below_4() {
        assert_eq!(GuePacket::new_checked(&GUE_EMIT_BYTES[..3]), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_hlen_past_buffer() {
        assert_eq!(GuePacket::new_checked(&GUE_BYTES[..11]), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_version_nonzero() {
        let mut bytes = GUE_EMIT_BYTES;
        bytes[0] |= 0x40;
        let packet = GuePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.version(), 1);
        assert_eq!(GueRepr::parse(&packet), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_control_message() {
        let mut bytes = GUE_EMIT_BYTES;
        bytes[0] |= 0x20;
        assert_eq!(GueRepr::parse(&GuePacket::new_checked(&bytes[..]).unwrap()), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_unknown_flags() {
        let mut bytes = GUE_EMIT_BYTES;
        bytes[2] = 0x80;
        assert_eq!(GueRepr::parse(&GuePacket::new_checked(&bytes[..]).unwrap()), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_private_flags_past_hlen() {
        // PRIV set but hlen 0: the private flags word is not inside the header.
        let mut bytes = GUE_EMIT_BYTES;
        bytes[3] = 0x01;
        let packet = GuePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.private_flags(), None);
        assert_eq!(GueRepr::parse(&packet), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_unknown_private_flags() {
        let mut bytes = GUE_BYTES;
        bytes[7] = 0x01;
        assert_eq!(GueRepr::parse(&GuePacket::new_checked(&bytes[..]).unwrap()), Err(Error));
    }

    #[test]
    fn parse_rejects_gue_remote_checksum_past_hlen() {
        // REMCSUM announced but hlen 1 holds only the private flags word.
        let mut bytes = GUE_BYTES;
        bytes[0] = 0x01;
        let packet = GuePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.remote_checksum(), None);
        assert_eq!(GueRepr::parse(&packet), Err(Error));
    }

    mod strategies {
        use super::*;

        pub(super) fn gre_repr() -> impl Strategy<Value = GreRepr> {
            (any::<u16>(), any::<bool>(), any::<Option<u32>>(), any::<Option<u32>>())
                .prop_map(|(protocol_type, checksum, key, sequence)| GreRepr { protocol_type, checksum, key, sequence })
        }

        pub(super) fn gue_repr() -> impl Strategy<Value = GueRepr> {
            (any::<u8>(), any::<Option<(u16, u16)>>()).prop_map(|(protocol, remote)| GueRepr {
                protocol: Protocol::from(protocol),
                remote_checksum: remote.map(|(start, offset)| RemoteChecksum { start, offset }),
            })
        }

        pub(super) fn payload() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(any::<u8>(), 0..48)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn gre_emit_then_parse_round_trips(repr in strategies::gre_repr(), payload in strategies::payload()) {
            let mut bytes = vec![0xa5u8; repr.header_len() + payload.len()];
            repr.emit(&mut GrePacket::new_unchecked(&mut bytes[..]), &payload);
            let packet = GrePacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(GreRepr::parse(&packet), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn gue_emit_then_parse_round_trips(repr in strategies::gue_repr(), payload in strategies::payload()) {
            let mut bytes = vec![0xa5u8; repr.header_len() + payload.len()];
            repr.emit(&mut GuePacket::new_unchecked(&mut bytes[..]), &payload);
            let packet = GuePacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(GueRepr::parse(&packet), Ok(repr));
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(packet) = GrePacket::new_checked(&bytes[..]) {
                let _ = (packet.protocol_type(), packet.checksum(), packet.key(), packet.sequence());
                let _ = (packet.version(), packet.header_len(), packet.payload(), packet.verify_checksum());
                let _ = GreRepr::parse(&packet);
            }
            if let Ok(packet) = GuePacket::new_checked(&bytes[..]) {
                let _ = (packet.version(), packet.control(), packet.proto_ctype(), packet.flags());
                let _ = (packet.options(), packet.private_flags(), packet.remote_checksum(), packet.payload());
                let _ = GueRepr::parse(&packet);
            }
        }
    }
}
