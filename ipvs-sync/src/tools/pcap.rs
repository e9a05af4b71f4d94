//! Just enough classic pcap (libpcap format, not pcapng) to read sync datagrams out of captures and to
//! write test captures for Wireshark.
//!
//! Reading: both byte orders, microsecond and nanosecond magics; link types Ethernet (1, with 802.1Q/802.1ad
//! tags), Linux cooked v1 (113) and v2 (276), raw IP (101, 228, 229); IPv4 and IPv6 (hop-by-hop, routing and
//! destination-options headers are skipped); UDP. Fragmented datagrams are skipped (no reassembly).
//!
//! Writing: Ethernet + IPv4 + UDP frames (see [`write_udp_pcap`]).

use alloc::vec::Vec;
use core::fmt;

/// Why a file is not a readable classic pcap.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum PcapError {
    /// No classic-pcap magic (pcapng and other formats are not read).
    BadMagic,
    /// The file ends inside a header or a packet.
    Truncated,
    /// A link type this reader does not know (the number).
    UnsupportedLinkType(u32),
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not a classic pcap file (bad magic)"),
            Self::Truncated => f.write_str("pcap file truncated"),
            Self::UnsupportedLinkType(n) => write!(f, "unsupported pcap link type {n}"),
        }
    }
}

impl core::error::Error for PcapError {}

/// Link type Ethernet.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Link type raw IP (the BSD number).
pub const LINKTYPE_RAW: u32 = 101;
/// Link type Linux cooked capture v1.
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// Link type raw IPv4.
pub const LINKTYPE_IPV4: u32 = 228;
/// Link type raw IPv6.
pub const LINKTYPE_IPV6: u32 = 229;
/// Link type Linux cooked capture v2.
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// A classic pcap's frames.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Capture<'a> {
    /// The link type (low 16 bits of the header field).
    pub linktype: u32,
    /// `(1-based frame number, captured bytes)`.
    pub frames: Vec<(usize, &'a [u8])>,
}

/// One UDP datagram found in a capture.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Datagram<'a> {
    /// 1-based frame number.
    pub frame: usize,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: &'a [u8],
}

/// The frames of a classic pcap.
///
/// # Errors
/// [`PcapError::BadMagic`] or [`PcapError::Truncated`].
pub fn frames(file: &[u8]) -> Result<Capture<'_>, PcapError> {
    let le = match file.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => return Err(PcapError::BadMagic),
    };
    if file.len() < 24 {
        return Err(PcapError::Truncated);
    }
    let u32_at = |at: usize| {
        let b = [file[at], file[at + 1], file[at + 2], file[at + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    // The low 16 bits of the link-type field are the link type (the upper ones carry FCS info).
    let linktype = u32_at(20) & 0xFFFF;
    let mut out = Vec::new();
    let mut at = 24;
    while at < file.len() {
        if file.len() - at < 16 {
            return Err(PcapError::Truncated);
        }
        let caplen = u32_at(at + 8) as usize;
        at += 16;
        if file.len() - at < caplen {
            return Err(PcapError::Truncated);
        }
        out.push((out.len() + 1, &file[at..at + caplen]));
        at += caplen;
    }
    Ok(Capture { linktype, frames: out })
}

/// Every UDP datagram in a classic pcap.
///
/// Frames that are not unfragmented IPv4/IPv6 UDP are skipped.
///
/// # Errors
/// As [`frames`], plus [`PcapError::UnsupportedLinkType`].
pub fn udp_payloads(file: &[u8]) -> Result<Vec<Datagram<'_>>, PcapError> {
    let Capture { linktype, frames } = frames(file)?;
    if !matches!(
        linktype,
        LINKTYPE_ETHERNET | LINKTYPE_RAW | LINKTYPE_LINUX_SLL | LINKTYPE_IPV4 | LINKTYPE_IPV6 | LINKTYPE_LINUX_SLL2
    ) {
        return Err(PcapError::UnsupportedLinkType(linktype));
    }
    Ok(frames
        .into_iter()
        .filter_map(|(n, f)| {
            let ip = link_payload(linktype, f)?;
            let (port, payload) = udp_in_ip(ip)?;
            Some(Datagram { frame: n, dst_port: port, payload })
        })
        .collect())
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The IP packet inside a frame, if the frame carries IPv4 or IPv6.
fn link_payload(linktype: u32, f: &[u8]) -> Option<&[u8]> {
    match linktype {
        LINKTYPE_ETHERNET => {
            let mut at = 12;
            let mut ethertype = be16(f, at)?;
            while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
                at += 4;
                ethertype = be16(f, at)?;
            }
            matches!(ethertype, 0x0800 | 0x86dd).then(|| f.get(at + 2..)).flatten()
        }
        LINKTYPE_LINUX_SLL => matches!(be16(f, 14)?, 0x0800 | 0x86dd).then(|| f.get(16..)).flatten(),
        LINKTYPE_LINUX_SLL2 => matches!(be16(f, 0)?, 0x0800 | 0x86dd).then(|| f.get(20..)).flatten(),
        _ => Some(f),
    }
}

/// The destination port and payload of an unfragmented UDP datagram in an IP packet.
fn udp_in_ip(ip: &[u8]) -> Option<(u16, &[u8])> {
    let (proto, l4) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0F) * 4;
            let total = usize::from(be16(ip, 2)?);
            let frag = be16(ip, 6)?;
            if ihl < 20 || total < ihl || frag & 0x3FFF != 0 {
                return None;
            }
            (*ip.get(9)?, ip.get(ihl..total.min(ip.len()))?)
        }
        6 => {
            let plen = usize::from(be16(ip, 4)?);
            let mut next = *ip.get(6)?;
            let mut rest = ip.get(40..(40 + plen).min(ip.len()))?;
            while matches!(next, 0 | 43 | 60) {
                let len = (usize::from(*rest.get(1)?) + 1) * 8;
                next = rest[0];
                rest = rest.get(len..)?;
            }
            (next, rest)
        }
        _ => return None,
    };
    if proto != 17 || l4.len() < 8 {
        return None;
    }
    let ulen = usize::from(be16(l4, 4)?);
    if ulen < 8 {
        return None;
    }
    Some((be16(l4, 2)?, l4.get(8..ulen.min(l4.len()))?))
}

/// Writes a classic pcap (microsecond, little-endian, Ethernet) with one frame per payload: Ethernet to
/// 01:00:5e:00:00:51 from 52:54:00:12:34:56, IPv4 10.0.2.15 → 224.0.0.81 (TTL 1, valid header checksum),
/// UDP 59336 → `dst_port` (checksum 0 = none). Frame `i` has timestamp `i` seconds.
///
/// # Panics
/// If a payload is longer than 65507 bytes (it would not fit an IPv4 datagram).
pub fn write_udp_pcap(payloads: &[&[u8]], dst_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, p) in payloads.iter().enumerate() {
        assert!(p.len() <= 65507, "UDP payload too long for IPv4");
        let frame_len = 14 + 20 + 8 + p.len();
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(frame_len as u32).to_le_bytes());
        out.extend_from_slice(&(frame_len as u32).to_le_bytes());
        out.extend_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x51, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + 8 + p.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        ip[8] = 1;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 2, 15]);
        ip[16..20].copy_from_slice(&[224, 0, 0, 81]);
        let mut sum: u32 = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&59336u16.to_be_bytes());
        out.extend_from_slice(&dst_port.to_be_bytes());
        out.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let a: &[u8] = &[1, 2, 3];
        let b: &[u8] = &[];
        let file = write_udp_pcap(&[a, b], 8848);
        let got = udp_payloads(&file).unwrap();
        assert_eq!(
            got,
            [Datagram { frame: 1, dst_port: 8848, payload: a }, Datagram { frame: 2, dst_port: 8848, payload: b }]
        );
        assert_eq!(frames(&file[..30]), Err(PcapError::Truncated));
        assert_eq!(frames(&file[..20]), Err(PcapError::Truncated));
        assert_eq!(frames(b"\x0a\x0d\x0d\x0a"), Err(PcapError::BadMagic));
    }
}
