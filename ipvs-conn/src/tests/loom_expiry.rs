//! loom: a lookup-and-touch racing the expiry of the same conn never resurrects it, and a stale handle is
//! never honoured, not even after its slot is reused.

use super::*;
use crate::primitive::{thread, Arc};

#[test]
fn loom_lookup_and_touch_racing_expiry() {
    loom::model(|| {
        let t = Arc::new(ConnTable::new(cfg(4, 2), ms(0)).unwrap());
        let c = tcp(1, 1000).with_timeout(secs(10));
        let id = t.insert(ms(0), c).unwrap();
        let other = Arc::clone(&t);
        let h = thread::spawn(move || match other.lookup_in(&in_key(&c)) {
            Some((found, _)) => other.touch(ms(10_000), found, secs(10)),
            None => false,
        });
        let mut out = Vec::new();
        t.handle_timeout(ms(10_000), &mut out);
        let touched = h.join().unwrap();
        let expired = out.iter().any(|e| e.id == id);
        // Either the touch came first (alive until 20 s) or the expiry did (gone, touch refused).
        assert!(expired != touched, "expired={expired} touched={touched}");
        assert_eq!(t.get(id).is_none(), expired);
        assert_eq!(t.lookup_in(&in_key(&c)).is_none(), expired, "no resurrection");
        if touched {
            assert_eq!(t.get(id).map(|v| v.expires), Some(ms(20_000)));
        }
        assert_eq!(t.len(), usize::from(!expired));
        t.check_invariants();
    });
}

#[test]
fn loom_stale_handle_after_slot_reuse() {
    loom::model(|| {
        // One shard, so the new conn reuses the expired conn's slot.
        let t = Arc::new(ConnTable::new(cfg(4, 1), ms(0)).unwrap());
        let old = t.insert(ms(0), tcp(1, 1).with_timeout(secs(1))).unwrap();
        let other = Arc::clone(&t);
        let h = thread::spawn(move || other.with_conn(old, |c| c.set_state(7)).is_some());
        let mut out = Vec::new();
        t.handle_timeout(ms(1000), &mut out);
        let new = t.insert(ms(1000), tcp(2, 2).with_timeout(secs(5))).unwrap();
        let honoured = h.join().unwrap();
        assert_eq!(out.len(), 1, "the old conn expires whatever the order");
        assert_eq!(new.slot(), old.slot());
        let v = t.get(new).unwrap();
        assert_eq!(v.state, 0, "the old handle never reaches the new conn (honoured={honoured})");
        assert_eq!(v.expires, ms(6000));
        assert!(t.get(old).is_none());
        assert!(!t.touch(ms(1000), old, secs(100)));
        t.check_invariants();
    });
}
