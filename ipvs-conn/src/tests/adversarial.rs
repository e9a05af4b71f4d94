//! Hash flooding: flows crafted to share one bucket under a known hash key (here the all-zero key, as if the
//! table were unkeyed or the key had leaked) chain into long probe sequences in a table that uses that key,
//! and probe like random flows in a table keyed with a secret.

use super::*;
use crate::index::Index;
use crate::key::KeyHasher;

const CAPACITY: usize = 4096;
const N_FLOWS: usize = 1500;

/// `n` TCP client tuples whose hash under `key` has home bucket 0 in an index of `n_buckets` buckets.
fn crafted_flows(key: &[u8; 16], n_buckets: usize, n: usize) -> Vec<NewConn> {
    let h = KeyHasher::new(key);
    let mut out = Vec::with_capacity(n);
    let mut i: u32 = 0;
    while out.len() < n {
        let addr = client(i >> 10);
        let port = 1024 + (i & 1023) as u16;
        if Index::home_of(h.v4(6, addr, port), n_buckets) == 0 {
            out.push(tcp(i >> 10, port));
        }
        i += 1;
    }
    out
}

/// `n` ordinary flows (consecutive clients and ports).
fn plain_flows(n: usize) -> Vec<NewConn> {
    (0..n as u32).map(|i| tcp(1_000_000 + i / 7, 2000 + (i % 7) as u16)).collect()
}

fn fill(key: [u8; 16], flows: &[NewConn]) -> crate::ProbeStats {
    let t = ConnTable::new(ConnTableConfig { hash_key: key, ..cfg(CAPACITY, 1) }, ms(0)).unwrap();
    for c in flows {
        t.insert(ms(0), *c).unwrap();
    }
    // Every crafted flow is still found.
    for c in flows {
        assert!(t.lookup_in(&in_key(c)).is_some());
    }
    t.probe_stats()
}

#[test]
fn crafted_collisions_cost_what_random_keys_cost_under_a_secret_key() {
    let n_buckets = crate::config::Geometry::new(CAPACITY, 1).n_buckets;
    let attack = crafted_flows(&[0; 16], n_buckets, N_FLOWS);
    let secret = *b"not-known-to-you";

    // Under the key the attacker used, all flows share one home bucket: one long chain.
    let flooded = fill([0; 16], &attack);
    assert!(flooded.mean() > 40.0, "flooded: {flooded:?}");
    assert!(flooded.max_buckets >= N_FLOWS / 10, "flooded: {flooded:?}");

    // Under a secret key the same flows spread like any others.
    let defended = fill(secret, &attack);
    let random = fill(secret, &plain_flows(N_FLOWS));
    assert!(defended.mean() < 1.2, "defended: {defended:?}");
    assert!(defended.max_buckets <= 4, "defended: {defended:?}");
    assert!((defended.mean() - random.mean()).abs() < 0.1, "defended {defended:?} vs random {random:?}");
    assert!(defended.max_buckets <= random.max_buckets + 2, "defended {defended:?} vs random {random:?}");
}
