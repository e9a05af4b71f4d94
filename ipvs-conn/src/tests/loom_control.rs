//! loom: a template's control count stays exact while controlled conns are inserted, expire and are
//! force-deleted concurrently.

use super::*;
use crate::primitive::{thread, Arc};
use crate::ExpireReason;

/// The number of live conns whose controller is `tpl`.
fn controlled_by(t: &ConnTable, tpl: ConnId) -> u32 {
    let mut n = 0;
    for (id, _) in t.snapshot() {
        if t.with_conn(id, |c| c.control()) == Some(Some(tpl)) {
            n += 1;
        }
    }
    n
}

#[test]
fn loom_control_count_with_insert_and_expiry() {
    loom::model(|| {
        let t = Arc::new(ConnTable::new(cfg(4, 2), ms(0)).unwrap());
        let key = TemplateKey::for_service(Protocol::Tcp, client(0).into(), 0xFFFF_FF00, VIP.into(), 80);
        let tpl = t.insert(ms(0), NewConn::template(&key, SocketAddr::new(RS.into(), 8080), secs(100))).unwrap();
        t.insert(ms(0), tcp(1, 1).with_control(tpl).with_timeout(secs(1))).unwrap();
        let other = Arc::clone(&t);
        let h = thread::spawn(move || other.insert(ms(0), tcp(2, 2).with_control(tpl).with_timeout(secs(100))).is_ok());
        let mut out = Vec::new();
        t.handle_timeout(ms(1000), &mut out);
        assert!(h.join().unwrap());
        assert_eq!(out.len(), 1);
        let v = t.get(tpl).unwrap();
        assert_eq!(v.n_control, 1);
        assert_eq!(v.n_control, controlled_by(&t, tpl));
        assert_eq!(v.expires, ms(100_000), "the template is not due, nothing pushed it back");
        t.check_invariants();
    });
}

#[test]
fn loom_control_count_with_forced_delete_and_expiry() {
    loom::model(|| {
        let t = Arc::new(ConnTable::new(cfg(4, 2), ms(0)).unwrap());
        let key = TemplateKey::for_service(Protocol::Tcp, client(0).into(), 0xFFFF_FF00, VIP.into(), 80);
        let tpl = t.insert(ms(0), NewConn::template(&key, SocketAddr::new(RS.into(), 8080), secs(100))).unwrap();
        t.insert(ms(0), tcp(1, 1).with_control(tpl).with_timeout(secs(1))).unwrap();
        let c2 = t.insert(ms(0), tcp(2, 2).with_control(tpl).with_timeout(secs(100))).unwrap();
        let other = Arc::clone(&t);
        let h = thread::spawn(move || {
            let mut out = Vec::new();
            other.remove(c2, &mut out).map(|()| out)
        });
        let mut expired = Vec::new();
        t.handle_timeout(ms(1000), &mut expired);
        let removed = h.join().unwrap().unwrap();
        assert_eq!(expired.len(), 1);
        // The forced delete drops the (unassured) template exactly when it removed the last controlled conn.
        let dropped = removed.iter().any(|e| e.id == tpl && e.reason == ExpireReason::ControllerDropped);
        match t.get(tpl) {
            Some(v) => {
                assert!(!dropped);
                assert_eq!(v.n_control, 0);
                assert_eq!(controlled_by(&t, tpl), 0);
                assert_eq!(t.len(), 1);
            }
            None => {
                assert!(dropped);
                assert_eq!(t.len(), 0);
            }
        }
        t.check_invariants();
    });
}
