//! The Internet checksum (RFC 1071), its pseudo-headers, and incremental updates (RFC 1624).
//!
//! Sums are kept as folded 16-bit one's-complement values (`u16`, not complemented); a header's checksum
//! field holds `!sum`. [`update`] changes a stored checksum field when some bytes under it change, without
//! touching the rest of the packet — the NAT fast path.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Protocol;

/// Folds a 32-bit accumulator into a 16-bit one's-complement sum.
const fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The one's-complement sum of `data`, read as big-endian 16-bit words (an odd last byte is padded
/// with zero).
pub fn data(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    // Sum 32-bit words into a 64-bit accumulator: fewer iterations, carries folded once at the end.
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    // Fold 64 -> 32 -> 16 bits.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    fold(((acc & 0xffff) + (acc >> 16)) as u32)
}

/// The one's-complement sum of several sums.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u32::from(s)).sum())
}

/// The sum of the IPv4 pseudo-header for a transport segment of `length` bytes.
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: Protocol, length: u16) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(u8::from(protocol))
        + u32::from(length);
    fold(acc)
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer packet of `length` bytes.
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: Protocol, length: u32) -> u16 {
    combine(&[
        data(&src.octets()),
        data(&dst.octets()),
        fold((length >> 16) + (length & 0xffff)),
        u16::from(u8::from(next_header)),
    ])
}

/// The pseudo-header sum for either family.
///
/// Mixed families have no pseudo-header; for them the IPv6 form is used over the mapped IPv4 address,
/// which callers never ask for (a packet has one family).
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: Protocol, length: u32) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_header_v4(s, d, protocol, length as u16),
        (s, d) => pseudo_header_v6(&to_v6(s), &to_v6(d), protocol, length),
    }
}

fn to_v6(a: &IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => *v6,
    }
}

/// The new value of a checksum field after bytes it covers change from `old` to `new`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// `old` and `new` must have the same length and start at an even offset of the checksummed data
/// (addresses and ports always do). Pass the pseudo-header fields the same way: they are covered too.
pub fn update(checksum_field: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let acc = u32::from(!checksum_field) + u32::from(!data(old)) + u32::from(data(new));
    !fold(acc)
}

/// [`update`] for a single 16-bit word (a port).
pub fn update_u16(checksum_field: u16, old: u16, new: u16) -> u16 {
    update(checksum_field, &old.to_be_bytes(), &new.to_be_bytes())
}

/// Whether data whose checksum field is included in `sum` verifies (the sum is `0xffff`).
pub const fn is_valid(sum: u16) -> bool {
    sum == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: the plain RFC 1071 loop, 16 bits at a time.
    fn naive(bytes: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in bytes.chunks(2) {
            let w = if pair.len() == 2 { u16::from_be_bytes([pair[0], pair[1]]) } else { u16::from(pair[0]) << 8 };
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn data_matches_the_rfc1071_loop_for_every_length() {
        let bytes: alloc::vec::Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(151) >> 1) as u8 ^ 0xa5).collect();
        for len in 0..bytes.len() {
            assert_eq!(data(&bytes[..len]), naive(&bytes[..len]), "len {len}");
        }
        assert_eq!(data(&[0xff; 64]), 0xffff);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }

    #[test]
    fn update_equals_recompute() {
        let mut pkt = [0u8; 40];
        for (i, b) in pkt.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let field = !data(&pkt);
        for (start, new) in [(0usize, [1u8, 2, 3, 4]), (12, [0xff, 0xff, 0, 0]), (36, [0, 0, 0, 0])] {
            let old = pkt;
            let mut after = pkt;
            after[start..start + 4].copy_from_slice(&new);
            let incremental = update(field, &old[start..start + 4], &new);
            assert_eq!(incremental, !data(&after), "offset {start}: {incremental:#018b}");
        }
        assert_eq!(update_u16(0x1234, 80, 80), 0x1234);
    }

    #[test]
    fn pseudo_header_v4_known_value() {
        let s = Ipv4Addr::new(192, 168, 0, 1);
        let d = Ipv4Addr::new(192, 168, 0, 199);
        // c0a8 + 0001 + c0a8 + 00c7 + 0006 + 0014
        let expect = fold(0xc0a8 + 0x0001 + 0xc0a8 + 0x00c7 + 6 + 20);
        assert_eq!(pseudo_header_v4(&s, &d, Protocol::Tcp, 20), expect);
        assert_eq!(pseudo_header(&s.into(), &d.into(), Protocol::Tcp, 20), expect);
    }
}
