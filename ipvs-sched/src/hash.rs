//! The hash functions the kernel's hashing schedulers use (facts §6.13, §6.14).
//!
//! - [`hash_32`]: the multiplicative "golden ratio" hash of `dh`, `sh`, `lblc` and `lblcr`.
//! - [`fold_addr`]: an address as the 32-bit host-order value those hashes take (IPv4 as is, IPv6 as the
//!   XOR of its four 32-bit words).
//! - [`mh_hash`]: `mh`'s `hsiphash` of a 32-bit value as a 64-bit kernel computes it: SipHash-1-3 over the
//!   value's four bytes in little-endian (x86-64 host) order, the 64-bit result truncated to its low 32 bits,
//!   with the fixed keys [`MH_KEY1`] and [`MH_KEY2`].

use core::hash::Hasher;
use core::net::IpAddr;

use siphasher::sip::SipHasher13;

/// The kernel's `GOLDEN_RATIO_32`.
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `mh`'s first key (offsets and lookups): both 64-bit key words are 2654435761.
pub const MH_KEY1: (u64, u64) = (2_654_435_761, 2_654_435_761);

/// `mh`'s second key (permutation skips): both 64-bit key words are 2654446892.
pub const MH_KEY2: (u64, u64) = (2_654_446_892, 2_654_446_892);

/// The kernel's `hash_32(v, bits)`: `v × GOLDEN_RATIO_32` (mod 2³²), top `bits` bits.
///
/// `bits` is taken in `1..=32`; 0 gives 0 (no bits).
pub const fn hash_32(v: u32, bits: u32) -> u32 {
    if bits == 0 {
        return 0;
    }
    let bits = if bits > 32 { 32 } else { bits };
    v.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// An address folded to 32 bits in host order (`ntohl(addr_fold)` in the kernel): the IPv4 address, or
/// the XOR of the four big-endian 32-bit words of an IPv6 address.
pub fn fold_addr(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

/// The kernel's `hsiphash(&v, 4, key)` on a 64-bit little-endian machine: SipHash-1-3 of `v`'s four
/// bytes, low 32 bits of the result.
pub fn hsiphash_u32(v: u32, key: (u64, u64)) -> u32 {
    let mut h = SipHasher13::new_with_keys(key.0, key.1);
    // The raw four bytes, not `write_u32`: the message must be exactly these bytes with length 4.
    h.write(&v.to_le_bytes());
    // Truncation to the low half is the kernel's `u32` return of a 64-bit SipHash.
    h.finish() as u32
}

/// `mh`'s `ip_vs_mh_hashkey`: `hsiphash(offset + port + fold(addr))` under `key` (all additions mod 2³²).
pub fn mh_hash(key: (u64, u64), addr: IpAddr, port: u16, offset: u32) -> u32 {
    let v = offset.wrapping_add(u32::from(port)).wrapping_add(fold_addr(addr));
    hsiphash_u32(v, key)
}

#[cfg(test)]
mod tests {
    use core::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// SipHash-1-3 written out the way the kernel's `hsiphash_1u32` runs it on 64-bit machines: one
    /// final block `b = (4 << 56) | v`, one compression round, three finalization rounds.
    fn reference_hsiphash_1u32(v: u32, k0: u64, k1: u64) -> u32 {
        let mut v0 = 0x736f_6d65_7073_6575_u64 ^ k0;
        let mut v1 = 0x646f_7261_6e64_6f6d_u64 ^ k1;
        let mut v2 = 0x6c79_6765_6e65_7261_u64 ^ k0;
        let mut v3 = 0x7465_6462_7974_6573_u64 ^ k1;
        let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
            *v0 = v0.wrapping_add(*v1);
            *v1 = v1.rotate_left(13);
            *v1 ^= *v0;
            *v0 = v0.rotate_left(32);
            *v2 = v2.wrapping_add(*v3);
            *v3 = v3.rotate_left(16);
            *v3 ^= *v2;
            *v0 = v0.wrapping_add(*v3);
            *v3 = v3.rotate_left(21);
            *v3 ^= *v0;
            *v2 = v2.wrapping_add(*v1);
            *v1 = v1.rotate_left(17);
            *v1 ^= *v2;
            *v2 = v2.rotate_left(32);
        };
        let b = (4_u64 << 56) | u64::from(v);
        v3 ^= b;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= b;
        v2 ^= 0xff;
        for _ in 0..3 {
            round(&mut v0, &mut v1, &mut v2, &mut v3);
        }
        ((v0 ^ v1) ^ (v2 ^ v3)) as u32
    }

    #[test]
    fn hash_32_table() {
        // (v, bits, expected), derived by hand: v × 0x61C88647 mod 2^32, top bits.
        let table: &[(u32, u32, u32)] = &[
            (0, 8, 0),
            (1, 8, 0x61),
            (1, 32, 0x61C8_8647),
            (2, 8, 0xC3),
            (3, 8, 0x25), // 0x1_2559_92D5 → 0x255992D5
            (0xFFFF_FFFF, 32, 0x9E37_79B9),
            (0x0A01_0001, 10, (0x0A01_0001_u32.wrapping_mul(0x61C8_8647)) >> 22),
            (1, 1, 0),
            (2, 1, 1),
            (5, 0, 0),
        ];
        for &(v, bits, want) in table {
            let got = hash_32(v, bits);
            assert_eq!(got, want, "hash_32({v:#034b}, {bits}) = {got:#b}, want {want:#b}");
        }
    }

    #[test]
    fn hash_32_stays_below_two_to_bits() {
        for bits in 1..=20 {
            for v in (0..u32::MAX).step_by(104_729) {
                let h = hash_32(v, bits);
                assert!(h < (1 << bits), "hash_32({v:#b}, {bits}) = {h:#b}");
                assert_eq!(h, v.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits));
            }
        }
    }

    #[test]
    fn fold_addr_ipv4_is_host_order() {
        assert_eq!(fold_addr(Ipv4Addr::new(10, 1, 0, 5).into()), 0x0A01_0005);
        assert_eq!(fold_addr(Ipv4Addr::new(255, 0, 0, 1).into()), 0xFF00_0001);
    }

    #[test]
    fn fold_addr_ipv6_xors_the_four_words() {
        let a = Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0x1234, 0x5678);
        assert_eq!(fold_addr(a.into()), 0x2001_0db8 ^ 0x1234_5678);
        let b = Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0, 0, 0, 1);
        assert_eq!(fold_addr(b.into()), 1);
        let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped();
        assert_eq!(fold_addr(mapped.into()), 0x0000_ffff ^ 0x0A00_0001);
    }

    #[test]
    fn hsiphash_matches_the_kernel_formula() {
        for &key in &[MH_KEY1, MH_KEY2, (0, 0), (1, u64::MAX)] {
            for v in [0_u32, 1, 80, 8080, 0x0A01_0001, 0x0A01_0005 + 8080, u32::MAX]
                .into_iter()
                .chain((0..u32::MAX).step_by(7_919_111))
            {
                let want = reference_hsiphash_1u32(v, key.0, key.1);
                let got = hsiphash_u32(v, key);
                assert_eq!(got, want, "v={v:#034b} key={key:?}");
            }
        }
    }

    #[test]
    fn mh_hash_adds_offset_port_and_fold() {
        let a: IpAddr = Ipv4Addr::new(10, 1, 0, 1).into();
        let v = 7_u32 + 8080 + 0x0A01_0001;
        assert_eq!(mh_hash(MH_KEY1, a, 8080, 7), hsiphash_u32(v, MH_KEY1));
        // Wrapping: a large offset added to a large address wraps mod 2^32.
        let b: IpAddr = Ipv4Addr::new(255, 255, 255, 255).into();
        assert_eq!(mh_hash(MH_KEY2, b, 1, 0), hsiphash_u32(0, MH_KEY2));
    }
}
