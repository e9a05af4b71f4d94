//! The hasher of the control maps the packet path reads (services by key, virtual and real-server addresses).
//!
//! Their keys are what the administrator configured, never what a packet inserts: a packet can only look up,
//! so a crafted flow cannot build collision chains, and a keyed hash (std's SipHash, ~20 ns per service
//! lookup) buys nothing here. This is the multiply-rotate word hash of rustc's `FxHasher`, deterministic.

use core::hash::{BuildHasher, Hasher};

/// Builds [`ControlHasher`]s (for `HashMap<_, _, ControlHash>`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ControlHash;

impl BuildHasher for ControlHash {
    type Hasher = ControlHasher;

    #[inline]
    fn build_hasher(&self) -> ControlHasher {
        ControlHasher(0)
    }
}

/// A word-at-a-time multiply-rotate hasher (see the module docs for why it needs no key).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ControlHasher(u64);

/// An odd constant with well-spread bits (rustc's `FxHasher` seed).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl ControlHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for ControlHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The table takes its bucket from the top bits (hashbrown's h2 too): fold the well-mixed high half down.
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use ipvs_proto::{Protocol, ServiceKey};

    fn hash<T: core::hash::Hash>(v: &T) -> u64 {
        ControlHash.hash_one(v)
    }

    #[test]
    fn distinct_services_hash_apart() {
        // 256 addresses × 64 ports × 2 protocols: no two keys share a hash.
        let mut seen = HashSet::new();
        for a in 0..=255u8 {
            for port in 0..64u16 {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, a)), 80 + port);
                    assert!(seen.insert(hash(&ServiceKey::Addr { protocol, addr })));
                }
            }
        }
    }

    #[test]
    fn raw_writes_of_different_lengths_differ() {
        let raw = |bytes: &[u8]| {
            let mut h = ControlHash.build_hasher();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(raw(b"ab"), raw(b"ab\0"));
        assert_ne!(raw(b"12345678"), raw(b"12345678\0"));
        assert_ne!(raw(b"12345678"), raw(b"87654321"));
    }
}
