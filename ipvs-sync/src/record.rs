//! The version-independent sync record, the message it travels in, and the codec's error types
//! (facts §12.3–§12.5, §12.10).
//!
//! A [`SyncConn`] holds every field either wire version can carry; the version-specific layouts live in
//! [`crate::decode`] and [`crate::encode`]. Fields a version cannot carry are `None` after decoding it
//! (`timeout` and `fwmark` in v0) and ignored when encoding it.

use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use ipvs_proto::{AddressFamily, Protocol};

/// Connection flag bits that matter to the codec (facts §1.1), as raw `u32` values.
pub mod flags {
    /// `IP_VS_CONN_F_FWD_MASK`: the forwarding method.
    pub const FWD_MASK: u32 = 0x0007;
    /// `IP_VS_CONN_F_SYNC`: set by a backup on conns it created from sync.
    pub const SYNC: u32 = 0x0020;
    /// `IP_VS_CONN_F_HASHED`: never sent (the master clears it).
    pub const HASHED: u32 = 0x0040;
    /// `IP_VS_CONN_F_NOOUTPUT`.
    pub const NOOUTPUT: u32 = 0x0080;
    /// `IP_VS_CONN_F_INACTIVE`.
    pub const INACTIVE: u32 = 0x0100;
    /// `IP_VS_CONN_F_OUT_SEQ`.
    pub const OUT_SEQ: u32 = 0x0200;
    /// `IP_VS_CONN_F_IN_SEQ`.
    pub const IN_SEQ: u32 = 0x0400;
    /// `IP_VS_CONN_F_SEQ_MASK`: a v0 record carries the 24-byte seq block iff one of these is set, and a
    /// v1 sender adds the SEQ_DATA option iff one of these is set.
    pub const SEQ_MASK: u32 = 0x0600;
    /// `IP_VS_CONN_F_NO_CPORT`.
    pub const NO_CPORT: u32 = 0x0800;
    /// `IP_VS_CONN_F_TEMPLATE`: a persistence template; exempt from the protocol/state checks.
    pub const TEMPLATE: u32 = 0x1000;
    /// `IP_VS_CONN_F_ONE_PACKET`: never synced.
    pub const ONE_PACKET: u32 = 0x2000;
    /// `IP_VS_CONN_F_NFCT`: carried in v1 flags (facts §12.10.5), dropped by the backup mask.
    pub const NFCT: u32 = 0x1_0000;
    /// `IP_VS_CONN_F_BACKUP_MASK`: the bits a backup keeps from a v1 record.
    pub const BACKUP_MASK: u32 = 0x1F87;
    /// `IP_VS_CONN_F_BACKUP_UPD_MASK`: the bits a sync update may change on an existing backup conn.
    pub const BACKUP_UPD_MASK: u32 = 0x0700;
}

/// Limits of the wire formats (facts §12.2–§12.4).
pub mod limits {
    /// v0 message header length.
    pub const V0_HEADER_LEN: usize = 4;
    /// v1 message header length.
    pub const V1_HEADER_LEN: usize = 8;
    /// v0 record without the seq block (`SIMPLE_CONN_SIZE`).
    pub const V0_SIMPLE_LEN: usize = 24;
    /// v0 record with the seq block (`FULL_CONN_SIZE`).
    pub const V0_FULL_LEN: usize = 48;
    /// v1 IPv4 record, fixed part.
    pub const V1_INET_LEN: usize = 36;
    /// v1 IPv6 record, fixed part.
    pub const V1_INET6_LEN: usize = 72;
    /// SEQ_DATA option payload length.
    pub const SEQ_DATA_LEN: usize = 24;
    /// Longest PE data (`IP_VS_PEDATA_MAXLEN`).
    pub const PE_DATA_MAX: usize = 255;
    /// Longest PE name (`IP_VS_PENAME_MAXLEN`).
    pub const PE_NAME_MAX: usize = 16;
    /// Most records in one message (`nr_conns` is a `u8`).
    pub const MAX_CONNS: usize = 255;
    /// Largest message (`size` is a `u16`).
    pub const MAX_MESSAGE_LEN: usize = 65535;
    /// The master's default `sync_maxlen` for an IPv4 group: 1500 − 20 − 8.
    pub const DEFAULT_MAXLEN_INET: usize = 1472;
    /// The master's default `sync_maxlen` for an IPv6 group: 1500 − 40 − 8.
    pub const DEFAULT_MAXLEN_INET6: usize = 1452;
}

/// One direction's TCP sequence adjustment (`struct ip_vs_seq`), as carried by the seq block.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct SeqAdjust {
    /// `init_seq`: the sequence number where the adjustment starts.
    pub init_seq: u32,
    /// `delta`: the current adjustment.
    pub delta: u32,
    /// `previous_delta`: the adjustment before `init_seq`.
    pub previous_delta: u32,
}

/// One connection record, independent of the wire version.
///
/// Decoding fills the fields the version carries; [`crate::encode`] writes them back. On the wire the
/// two seq adjustments always travel together: a decoded record has both `in_seq` and `out_seq` or
/// neither, and an encoder given only one writes zeros for the other.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct SyncConn {
    /// IP protocol (0 for fwmark templates).
    pub protocol: Protocol,
    /// Client address. The record's family is that of `caddr`; `vaddr` and `daddr` must match it.
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (for fwmark templates the mark in its first 4 bytes, facts §12.10.3).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Destination (real server) address.
    pub daddr: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// Connection flags, the raw wire value (v0: only the low 16 bits travel).
    pub flags: u32,
    /// Protocol state number (for templates: 0 or 1).
    pub state: u16,
    /// v1: the state's full timeout in seconds (0 = backup default); `None` in v0, which cannot carry it.
    pub timeout: Option<u32>,
    /// v1: the firewall mark; `None` in v0, which cannot carry it.
    pub fwmark: Option<u32>,
    /// Input sequence adjustment, if the record carries the seq block.
    pub in_seq: Option<SeqAdjust>,
    /// Output sequence adjustment, if the record carries the seq block.
    pub out_seq: Option<SeqAdjust>,
    /// v1 PE_NAME option (1..=16 bytes, no NUL), e.g. `b"sip"`.
    pub pe_name: Option<Vec<u8>>,
    /// v1 PE_DATA option (1..=255 bytes), e.g. a SIP Call-ID.
    pub pe_data: Option<Vec<u8>>,
}

impl SyncConn {
    /// The record's address family (from `caddr`).
    pub const fn af(&self) -> AddressFamily {
        match self.caddr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }

    /// Whether the record is a persistence template (`TEMPLATE` flag).
    pub const fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// Whether the flags ask for sequence adjustment (`IN_SEQ` or `OUT_SEQ`).
    pub const fn has_seq_flags(&self) -> bool {
        self.flags & flags::SEQ_MASK != 0
    }
}

/// The wire version of a message.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub enum Version {
    /// Version 0: IPv4 only, 16-bit flags, seq words in host order, no timeout/fwmark/PE.
    V0,
    /// Version 1 (`SYNC_PROTO_VER`): IPv4 and IPv6 records, TLV options; the kernel's default.
    #[default]
    V1,
}

impl Version {
    /// The number (0 or 1).
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::V0 => 0,
            Self::V1 => 1,
        }
    }

    /// The message header length (4 or 8).
    pub const fn header_len(self) -> usize {
        match self {
            Self::V0 => limits::V0_HEADER_LEN,
            Self::V1 => limits::V1_HEADER_LEN,
        }
    }
}

/// A decoded message: the header fields and the records the kernel would accept.
///
/// [`crate::decode::decode_message`] gives a [`crate::decode::Decoded`] with per-record errors; its
/// [`into_message`](crate::decode::Decoded::into_message) drops them to give this.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct SyncMessage {
    /// Wire version.
    pub version: Version,
    /// The master's sync id.
    pub syncid: u8,
    /// The records, in wire order.
    pub conns: Vec<SyncConn>,
}

/// Why a message or a record was rejected, following the kernel receiver's checks (facts §12.5).
///
/// Each variant says whether the kernel skips only the record ([`DecodeError::skips_record`]) or drops
/// the rest of the message ([`DecodeError::is_fatal`]); message-level errors (returned as `Err` by
/// [`crate::decode::decode_message`]) drop the whole message. [`DecodeError::name`] gives a stable
/// identifier for counters and logs.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Message: datagram shorter than 4 bytes. Record: the bytes left cannot hold the record's fixed
    /// part (v1: 36 bytes; v0: 24, or 48 with the seq flags). Drops the rest.
    Truncated,
    /// Message: the header's `size` is not the datagram length. Drops the message.
    BadLength,
    /// Message: the sync id is not the backup's (and the backup's is not 0). Drops the message.
    WrongSyncId(u8),
    /// v1 record: `ver_size`'s length runs past the end of the datagram. Drops the rest.
    RecordPastEnd,
    /// v1 record: `ver_size`'s version nibble is not 0 (the nibble is carried). Drops the rest.
    UnsupportedVersion(u8),
    /// v1 record: type neither 0 (IPv4) nor 1 (IPv6) (kernel −10). Drops the rest.
    BadRecordType(u8),
    /// v1 record: `ver_size` shorter than the fixed part for the type (kernel −20). Drops the rest.
    RecordTooShort,
    /// v1 option: fewer than 2 bytes left for a TLV header (kernel −30). Drops the rest.
    OptionTruncated,
    /// v1 option: TLV length 0 or past the record's end (kernel −40). Drops the rest.
    BadOptionLength,
    /// v1 option: SEQ_DATA length ≠ 24 or repeated (kernel −50). Drops the rest.
    BadSeqData,
    /// v1 option: PE_DATA longer than 255 bytes or repeated (kernel −60). Drops the rest.
    BadPeData,
    /// v1 option: PE_NAME longer than 16 bytes or repeated (kernel −70). Drops the rest.
    BadPeName,
    /// v1 option: unknown type without the optional-parameter bit 0x40 (kernel +20). Skips the record.
    UnknownOption(u8),
    /// Non-template record with a protocol the kernel does not balance (kernel +30). Skips the record.
    UnknownProtocol(u8),
    /// Non-template record whose state is not below its protocol's state count (kernel +40). Skips the
    /// record.
    BadState(u16),
    /// v1 record with PE data but no PE name (kernel +50). Skips the record.
    PeDataWithoutName,
}

impl DecodeError {
    /// Every variant with a representative payload, for counter tables and exhaustive tests.
    pub const ALL: [Self; 16] = [
        Self::Truncated,
        Self::BadLength,
        Self::WrongSyncId(0),
        Self::RecordPastEnd,
        Self::UnsupportedVersion(0),
        Self::BadRecordType(0),
        Self::RecordTooShort,
        Self::OptionTruncated,
        Self::BadOptionLength,
        Self::BadSeqData,
        Self::BadPeData,
        Self::BadPeName,
        Self::UnknownOption(0),
        Self::UnknownProtocol(0),
        Self::BadState(0),
        Self::PeDataWithoutName,
    ];

    /// Whether the kernel skips only this record and goes on with the next one.
    pub const fn skips_record(self) -> bool {
        matches!(self, Self::UnknownOption(_) | Self::UnknownProtocol(_) | Self::BadState(_) | Self::PeDataWithoutName)
    }

    /// Whether the kernel drops the rest of the message (every error that does not skip a record).
    pub const fn is_fatal(self) -> bool {
        !self.skips_record()
    }

    /// A stable snake_case identifier, for drop counters and the `error` field of `sync-decode`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadLength => "bad_length",
            Self::WrongSyncId(_) => "wrong_syncid",
            Self::RecordPastEnd => "record_past_end",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::BadRecordType(_) => "bad_record_type",
            Self::RecordTooShort => "record_too_short",
            Self::OptionTruncated => "option_truncated",
            Self::BadOptionLength => "bad_option_length",
            Self::BadSeqData => "bad_seq_data",
            Self::BadPeData => "bad_pe_data",
            Self::BadPeName => "bad_pe_name",
            Self::UnknownOption(_) => "unknown_option",
            Self::UnknownProtocol(_) => "unknown_protocol",
            Self::BadState(_) => "bad_state",
            Self::PeDataWithoutName => "pe_data_without_name",
        }
    }

    /// The kernel's `ip_vs_proc_sync_conn` return code for v1 record errors, where it has one.
    pub const fn kernel_code(self) -> Option<i32> {
        match self {
            Self::BadRecordType(_) => Some(-10),
            Self::RecordTooShort => Some(-20),
            Self::OptionTruncated => Some(-30),
            Self::BadOptionLength => Some(-40),
            Self::BadSeqData => Some(-50),
            Self::BadPeData => Some(-60),
            Self::BadPeName => Some(-70),
            Self::UnknownOption(_) => Some(20),
            Self::UnknownProtocol(_) => Some(30),
            Self::BadState(_) => Some(40),
            Self::PeDataWithoutName => Some(50),
            _ => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated => f.write_str("sync message or record truncated"),
            Self::BadLength => f.write_str("sync message size field differs from datagram length"),
            Self::WrongSyncId(id) => write!(f, "sync message for another sync id ({id})"),
            Self::RecordPastEnd => f.write_str("sync record runs past the end of the message"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported sync record version {v}"),
            Self::BadRecordType(t) => write!(f, "bad sync record type {t}"),
            Self::RecordTooShort => f.write_str("sync record shorter than its fixed part"),
            Self::OptionTruncated => f.write_str("sync option header truncated"),
            Self::BadOptionLength => f.write_str("sync option length zero or past the record"),
            Self::BadSeqData => f.write_str("bad or repeated SEQ_DATA option"),
            Self::BadPeData => f.write_str("bad or repeated PE_DATA option"),
            Self::BadPeName => f.write_str("bad or repeated PE_NAME option"),
            Self::UnknownOption(t) => write!(f, "unknown mandatory sync option {t}"),
            Self::UnknownProtocol(p) => write!(f, "unknown protocol {p} in sync record"),
            Self::BadState(s) => write!(f, "state {s} out of range in sync record"),
            Self::PeDataWithoutName => f.write_str("PE data without PE name"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a record cannot be encoded (caller misuse, not a network error).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum EncodeError {
    /// v0 carries only IPv4 records.
    Ipv6InV0,
    /// `caddr`, `vaddr` and `daddr` are not all of the same family.
    MixedFamily,
    /// PE data empty or longer than 255 bytes.
    PeDataLength,
    /// PE name empty or longer than 16 bytes.
    PeNameLength,
    /// More than 255 records for one message.
    TooManyConns,
    /// The message would exceed 65535 bytes.
    MessageTooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv6InV0 => "sync version 0 cannot carry IPv6 records",
            Self::MixedFamily => "record addresses of different families",
            Self::PeDataLength => "PE data must be 1..=255 bytes",
            Self::PeNameLength => "PE name must be 1..=16 bytes",
            Self::TooManyConns => "more than 255 records in one sync message",
            Self::MessageTooLong => "sync message longer than 65535 bytes",
        })
    }
}

impl core::error::Error for EncodeError {}
