//! loom: two packets of one new flow race to insert it; exactly one entry is created and the loser gets its
//! handle.

use super::*;
use crate::primitive::{thread, Arc};

#[test]
fn loom_two_inserts_of_one_flow_create_one_entry() {
    loom::model(|| {
        let t = Arc::new(ConnTable::new(cfg(4, 2), ms(0)).unwrap());
        let other = Arc::clone(&t);
        let h = thread::spawn(move || other.insert(ms(0), tcp(1, 1000)));
        let mine = t.insert(ms(0), tcp(1, 1000));
        let theirs = h.join().unwrap();
        let id = match (mine, theirs) {
            (Ok(a), Err(InsertError::Exists(b))) | (Err(InsertError::Exists(b)), Ok(a)) => {
                assert_eq!(a, b);
                a
            }
            other => panic!("expected one insert and one Exists, got {other:?}"),
        };
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup_in(&in_key(&tcp(1, 1000))).map(|x| x.0), Some(id));
        t.check_invariants();
    });
}

#[test]
fn loom_inserts_racing_for_the_last_slot() {
    loom::model(|| {
        let t = Arc::new(ConnTable::new(cfg(2, 2), ms(0)).unwrap());
        t.insert(ms(0), tcp(9, 9)).unwrap();
        let other = Arc::clone(&t);
        let h = thread::spawn(move || other.insert(ms(0), tcp(1, 1)).is_ok());
        let mine = t.insert(ms(0), tcp(2, 2)).is_ok();
        let theirs = h.join().unwrap();
        assert!(mine ^ theirs, "exactly one gets the last slot");
        assert_eq!(t.len(), 2);
        t.check_invariants();
    });
}
