//! Behaviour tests, each run on both table types.

use ipvs_proto::state::TcpState;

use super::*;
use crate::{ExpireReason, TEMPLATE_ASSURED};

/// Runs a generic test body on the shared and on the per-core table.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn shared() {
                    super::$name::<crate::ConnTable>();
                }
                #[test]
                fn local() {
                    super::$name::<crate::LocalConnTable>();
                }
            }
        )*
    };
}

both!(
    both_directions_find_one_entry,
    duplicate_insert_returns_the_existing_entry,
    rejected_inserts,
    capacity_is_a_hard_bound,
    expiry_is_exact_with_a_1ms_tick,
    touch_later_and_earlier,
    stale_handles_are_never_honoured,
    no_cport_retry_and_fill_cport,
    template_keys,
    pe_templates_match_on_their_data,
    controllers_wait_for_their_conns,
    forced_delete_cascades_to_unassured_templates,
    invalidated_templates_never_match,
    expire_now_and_expire,
    update_transitions_and_restarts,
    flush_and_remove_if,
    drop_entry_frees_a_full_table,
    ipv6_conns,
    burst_equals_single_lookups,
    control_gone_and_undo,
    poll_timeout_is_the_earliest_deadline,
    cold_data_round_trips,
    insert_after_miss_reuses_only_its_own_hash,
);

/// The hash a miss hands to `insert_after_miss` places the conn exactly as `insert` does; a miss of another
/// flow (or a template) is not used, and a conn inserted meanwhile is still reported as existing.
fn insert_after_miss_reuses_only_its_own_hash<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let a = tcp(1, 1000);
    let Err(miss) = t.lookup_in_or_miss(&in_key(&a)) else { panic!("empty table") };
    let id = t.insert_after_miss(ms(0), a, &miss).unwrap();
    assert_eq!(t.lookup_in_or_miss(&in_key(&a)).map(|x| x.0), Ok(id));
    assert_eq!(t.lookup_in(&in_key(&a)).map(|x| x.0), Some(id));
    assert_eq!(t.lookup_out(&out_key(&a)).map(|x| x.0), Some(id));
    assert_eq!(t.insert_after_miss(ms(0), a, &miss), Err(InsertError::Exists(id)));
    // Another client's miss: the conn is hashed afresh and found by its own key.
    let b = tcp(2, 2000);
    let id_b = t.insert_after_miss(ms(0), b, &miss).unwrap();
    assert_eq!(t.lookup_in(&in_key(&b)).map(|x| x.0), Some(id_b));
    // A template of the missed client (hashed without the port): found by its template key.
    let tk = TemplateKey::for_service(Protocol::Tcp, a.caddr, 0xFFFF_FFFF, a.vaddr, 80);
    let tpl = NewConn::template(&tk, SocketAddr::new(IpAddr::V4(RS), 8080), secs(360)).with_dest(DestId(1));
    let Err(miss_c) = t.lookup_in_or_miss(&in_key(&tcp(1, 0))) else { panic!("no such conn") };
    let tid = t.insert_after_miss(ms(0), tpl, &miss_c).unwrap();
    assert_eq!(t.lookup_template(&tk).map(|x| x.0), Some(tid));
    t.check();
}

fn both_directions_find_one_entry<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let nat = tcp(1, 1000);
    let id = t.insert(ms(0), nat).unwrap();
    let (a, v) = t.lookup_in(&in_key(&nat)).unwrap();
    assert_eq!(a, id);
    assert_eq!(v.client(), SocketAddr::new(nat.caddr, 1000));
    assert_eq!(v.dest, Some(DestId(1)));
    assert_eq!(v.expires, ms(10_000));
    assert_eq!(t.lookup_out(&out_key(&nat)).map(|x| x.0), Some(id));
    // MASQ replies come from the real server, not from the VIP.
    let from_vip = OutKey::new(nat.protocol, nat.vaddr, nat.vport, nat.caddr, nat.cport);
    assert_eq!(t.lookup_out(&from_vip), None);
    // DR: replies (if any pass) come from the VIP.
    let dr = tcp(2, 2000).with_flags(droute());
    let id2 = t.insert(ms(0), dr).unwrap();
    assert_eq!(t.lookup_out(&out_key(&dr)).map(|x| x.0), Some(id2));
    let from_rs = OutKey::new(dr.protocol, dr.daddr, dr.dport, dr.caddr, dr.cport);
    assert_eq!(t.lookup_out(&from_rs), None);
    // Other ports, protocols, VIPs miss.
    assert_eq!(t.lookup_in(&InKey { cport: 1001, ..in_key(&nat) }), None);
    assert_eq!(t.lookup_in(&InKey { vport: 81, ..in_key(&nat) }), None);
    assert_eq!(t.lookup_in(&InKey { protocol: Protocol::Udp, ..in_key(&nat) }), None);
    assert_eq!(t.lookup_in(&InKey { cport: 0, ..in_key(&nat) }), None);
    // A mixed-family key finds nothing.
    assert_eq!(t.lookup_in(&InKey { vaddr: "::1".parse().unwrap(), ..in_key(&nat) }), None);
    assert_eq!(t.len(), 2);
    t.check();
}

fn duplicate_insert_returns_the_existing_entry<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let c = tcp(1, 1000);
    let id = t.insert(ms(0), c).unwrap();
    assert_eq!(t.insert(ms(5), c), Err(InsertError::Exists(id)));
    // Same flow to another real server is still the same flow.
    let mut other = c;
    other.daddr = "10.9.9.9".parse().unwrap();
    assert_eq!(t.insert(ms(5), other), Err(InsertError::Exists(id)));
    assert_eq!(t.len(), 1);
    t.check();
}

fn rejected_inserts<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let ops = tcp(1, 1).with_flags(ConnFlags::ONE_PACKET);
    assert_eq!(t.insert(ms(0), ops), Err(InsertError::OnePacket));
    let mut mixed = tcp(1, 1);
    mixed.daddr = "::2".parse().unwrap();
    assert_eq!(t.insert(ms(0), mixed), Err(InsertError::Invalid));
    assert_eq!(t.insert(ms(0), tcp(1, 1).with_flags(ConnFlags::TEMPLATE)), Err(InsertError::Invalid));
    assert_eq!(t.insert(ms(0), tcp(1, 1).with_flags(ConnFlags::NO_CPORT)), Err(InsertError::Invalid));
    assert_eq!(t.insert(ms(0), tcp(1, 1).with_dest(DestId(u32::MAX))), Err(InsertError::Invalid));
    assert_eq!(t.len(), 0);
    assert!(t.snapshot().is_empty());
}

fn capacity_is_a_hard_bound<T: Table>() {
    const CAP: usize = 300;
    let mut t = T::make(cfg(CAP, 4), ms(0));
    let mut ids = Vec::new();
    for i in 0..CAP as u32 {
        ids.push(t.insert(ms(0), tcp(i, 1000)).unwrap());
    }
    assert_eq!(t.len(), CAP);
    let mem = t.memory();
    for i in 0..50 {
        assert_eq!(t.insert(ms(0), tcp(10_000 + i, 1000)), Err(InsertError::Full));
    }
    assert_eq!(t.len(), CAP);
    assert_eq!(t.memory(), mem, "a full table never grows");
    // The slabs never hold more than the per-shard bound allows.
    let g = crate::config::Geometry::new(CAP, 4);
    assert!(mem.slab_bytes <= 4 * g.shard_limit * (crate::HOT_SIZE_V4 + crate::COLD_SIZE), "{mem:?}");
    // Room comes back when an entry goes.
    let mut out = Vec::new();
    t.remove(ids[0], &mut out).unwrap();
    assert_eq!(out.len(), 1);
    t.insert(ms(0), tcp(10_000, 1000)).unwrap();
    assert_eq!(t.insert(ms(0), tcp(10_001, 1000)), Err(InsertError::Full));
    t.check();
}

fn expiry_is_exact_with_a_1ms_tick<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(1000));
    let a = t.insert(ms(1000), tcp(1, 1).with_timeout(secs(3))).unwrap();
    let b = t.insert(ms(1500), tcp(2, 1).with_timeout(secs(3))).unwrap();
    assert!(t.expire_at(ms(3999)).is_empty());
    let e = t.expire_at(ms(4000));
    assert_eq!(e.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(e[0].reason, ExpireReason::Timeout);
    assert_eq!(e[0].conn.dest, Some(DestId(1)));
    assert!(t.expire_at(ms(4499)).is_empty());
    assert_eq!(t.expire_at(ms(4500)).iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    assert_eq!(t.len(), 0);
}

fn touch_later_and_earlier<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let id = t.insert(ms(0), tcp(1, 1).with_timeout(secs(10))).unwrap();
    // Later: the old deadline passes without expiry.
    assert!(t.touch(ms(5000), id, secs(10)));
    assert!(t.expire_at(ms(10_000)).is_empty());
    assert_eq!(t.get(id).unwrap().expires, ms(15_000));
    // Earlier than the scheduled item: a new item fires at the new deadline.
    assert!(t.touch(ms(11_000), id, secs(1)));
    assert!(t.expire_at(ms(11_999)).is_empty());
    assert_eq!(t.expire_at(ms(12_000)).len(), 1);
    // Stale wheel items of the gone entry fire later and are ignored.
    assert!(t.expire_at(ms(20_000)).is_empty());
    assert_eq!(t.poll_timeout(), None);
}

fn stale_handles_are_never_honoured<T: Table>() {
    let mut t = T::make(cfg(4, 1), ms(0));
    let c = tcp(1, 1);
    let old = t.insert(ms(0), c).unwrap();
    assert_eq!(t.expire_at(ms(10_000)).len(), 1);
    assert_eq!(t.get(old), None);
    assert!(!t.touch(ms(1), old, secs(100)));
    assert!(!t.expire_now(ms(1), old));
    assert_eq!(t.with_conn(old, |c| c.state()), None);
    assert_eq!(t.update(ms(1), old, |_| ()), None);
    assert_eq!(t.remove(old, &mut Vec::new()), Err(RemoveError::Stale));
    assert_eq!(t.expire(old), Err(RemoveError::Stale));
    assert!(!t.invalidate_template(old));
    // The slot is reused by a new conn with a new generation; the old handle does not see it.
    let new = t.insert(ms(10_000), tcp(2, 2)).unwrap();
    assert_eq!((new.shard(), new.slot()), (old.shard(), old.slot()));
    assert_ne!(new.generation(), old.generation());
    assert_eq!(t.get(old), None);
    assert!(!t.touch(ms(10_000), old, secs(1)));
    assert!(t.get(new).is_some());
    // A forged handle naming a shard that does not exist.
    let forged = crate::entry::ConnId::new(999, 0, core::num::NonZeroU32::MIN);
    assert_eq!(t.get(forged), None);
    assert!(!t.touch(ms(0), forged, secs(1)));
    assert_eq!(t.insert(ms(0), tcp(3, 3).with_control(forged)), Err(InsertError::ControlGone(forged)));
    t.check();
}

fn no_cport_retry_and_fill_cport<T: Table>() {
    let mut t = T::make(cfg(100, 8), ms(0));
    let mut pre = tcp(1, 0).with_flags(ConnFlags::NO_CPORT);
    pre.vport = 20;
    let id = t.insert(ms(0), pre).unwrap();
    // A packet with any client port finds it through the retry with port 0.
    let k = InKey { cport: 5555, ..in_key(&pre) };
    assert_eq!(t.lookup_in(&k).map(|x| x.0), Some(id));
    // A normal conn with the exact port takes precedence.
    let exact = t.insert(ms(0), NewConn { cport: 5555, flags: ConnFlags::MASQ, ..pre }).unwrap();
    assert_eq!(t.lookup_in(&k).map(|x| x.0), Some(exact));
    // Completing it with the taken port fails; with a free one it moves.
    assert!(matches!(t.fill_cport(id, 5555), Err(FillCportError::Exists(e)) if e == exact));
    assert_eq!(t.fill_cport(exact, 1), Err(FillCportError::NotNoCport));
    assert_eq!(t.fill_cport(id, 0), Err(FillCportError::NotNoCport));
    let moved = t.fill_cport(id, 6000).unwrap();
    let (found, v) = t.lookup_in(&InKey { cport: 6000, ..k }).unwrap();
    assert_eq!(found, moved);
    assert!(!v.flags.contains(ConnFlags::NO_CPORT));
    assert_eq!(v.cport, 6000);
    assert_eq!(v.expires, ms(10_000), "timer kept");
    // No NO_CPORT conn is left: other ports no longer match.
    assert_eq!(t.lookup_in(&InKey { cport: 7000, ..k }), None);
    assert_eq!(t.len(), 2);
    t.check();
    // The moved conn still expires on time (its wheel item moved with it).
    let e = t.expire_at(ms(10_000));
    assert_eq!(e.len(), 2);
    assert!(e.iter().any(|e| e.id == moved));
}

fn template_keys<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let client: IpAddr = "10.7.8.9".parse().unwrap();
    let vip = IpAddr::V4(VIP);
    let key = TemplateKey::for_service(Protocol::Tcp, client, 0xFFFF_FF00, vip, 80);
    let tpl = t.insert(ms(0), NewConn::template(&key, "10.1.0.2:8080".parse().unwrap(), secs(360))).unwrap();
    // Another client of the same /24 finds it; another /24 or port does not.
    let k2 = TemplateKey::for_service(Protocol::Tcp, "10.7.8.200".parse().unwrap(), 0xFFFF_FF00, vip, 80);
    assert_eq!(t.lookup_template(&k2).map(|x| x.0), Some(tpl));
    let k3 = TemplateKey::for_service(Protocol::Tcp, "10.7.9.1".parse().unwrap(), 0xFFFF_FF00, vip, 80);
    assert_eq!(t.lookup_template(&k3), None);
    assert_eq!(t.lookup_template(&TemplateKey { vport: 443, ..key }), None);
    assert_eq!(t.lookup_template(&TemplateKey { protocol: Protocol::Udp, ..key }), None);
    // Templates are not conns: the in-lookup with port 0 does not find them (NO_CPORT rule).
    assert_eq!(t.lookup_in(&InKey::new(Protocol::Tcp, key.caddr, 0, vip, 80)), None);
    // A second template of the same key exists already.
    assert!(matches!(
        t.insert(ms(0), NewConn::template(&key, "10.1.0.3:8080".parse().unwrap(), secs(360))),
        Err(InsertError::Exists(id)) if id == tpl
    ));
    // fwmark templates: protocol 0, the mark in the address; TCP and UDP clients share one.
    let fk = TemplateKey::fwmark(client, 0xFFFF_0000, 42);
    let ftpl = t.insert(ms(0), NewConn::template(&fk, "10.1.0.4:0".parse().unwrap(), secs(360))).unwrap();
    assert_eq!(t.lookup_template(&TemplateKey::fwmark("10.7.1.1".parse().unwrap(), 0xFFFF_0000, 42)).unwrap().0, ftpl);
    assert_eq!(t.lookup_template(&TemplateKey::fwmark(client, 0xFFFF_0000, 43)), None);
    // IPv6 prefix.
    let c6: IpAddr = "2001:db8:1:2::99".parse().unwrap();
    let v6: IpAddr = "2001:db8::80".parse().unwrap();
    let k6 = TemplateKey::for_service(Protocol::Udp, c6, 64, v6, 53);
    let tpl6 = t.insert(ms(0), NewConn::template(&k6, "[2001:db8::2]:53".parse().unwrap(), secs(60))).unwrap();
    let other6 = TemplateKey::for_service(Protocol::Udp, "2001:db8:1:2::1".parse().unwrap(), 64, v6, 53);
    assert_eq!(t.lookup_template(&other6).map(|x| x.0), Some(tpl6));
    assert!(tpl6.is_ipv6());
    let fk6 = TemplateKey::fwmark(c6, 48, 7);
    let ftpl6 = t.insert(ms(0), NewConn::template(&fk6, "[2001:db8::2]:0".parse().unwrap(), secs(60))).unwrap();
    assert_eq!(t.lookup_template(&TemplateKey::fwmark("2001:db8:1:ffff::1".parse().unwrap(), 48, 7)).unwrap().0, ftpl6);
    t.check();
}

/// Templates with persistence-engine data (SIP Call-IDs, facts §3.4 `ct_in_get` with `ct_match`, §8.5): one per
/// (key, data); the data must match byte for byte; a template without data and one with never find each other.
fn pe_templates_match_on_their_data<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let vip = IpAddr::V4(VIP);
    let key = TemplateKey::for_service(Protocol::Udp, "10.7.8.9".parse().unwrap(), 0xFFFF_FF00, vip, 5060);
    let rs1: SocketAddr = "10.1.0.2:5060".parse().unwrap();
    let rs2: SocketAddr = "10.1.0.3:5060".parse().unwrap();
    let a = t.insert_pe_template(ms(0), NewConn::template(&key, rs1, secs(360)).with_dest(DestId(1)), b"a@x").unwrap();
    // Same client network, another call: its own template, possibly on another server.
    let b = t.insert_pe_template(ms(0), NewConn::template(&key, rs2, secs(360)).with_dest(DestId(2)), b"b@x").unwrap();
    assert_ne!(a, b);
    // And a plain template of the same key.
    let plain = t.insert(ms(0), NewConn::template(&key, rs1, secs(360))).unwrap();
    let k2 = TemplateKey::for_service(Protocol::Udp, "10.7.8.200".parse().unwrap(), 0xFFFF_FF00, vip, 5060);
    assert_eq!(t.lookup_pe_template(&k2, Some(b"a@x")).map(|x| x.0), Some(a));
    assert_eq!(t.lookup_pe_template(&k2, Some(b"b@x")).map(|x| (x.0, x.1.daddr)), Some((b, rs2.ip())));
    assert_eq!(t.lookup_pe_template(&k2, None).map(|x| x.0), Some(plain));
    assert_eq!(t.lookup_template(&k2).map(|x| x.0), Some(plain));
    // Data compared in full: a prefix, an extension, other case, another call do not match.
    for other in [&b"a@"[..], b"a@xy", b"A@x", b"c@x"] {
        assert_eq!(t.lookup_pe_template(&k2, Some(other)), None, "{other:?}");
    }
    // The same call from another client network, port, protocol or VIP is another template.
    let k3 = TemplateKey::for_service(Protocol::Udp, "10.7.9.1".parse().unwrap(), 0xFFFF_FF00, vip, 5060);
    assert_eq!(t.lookup_pe_template(&k3, Some(b"a@x")), None);
    assert_eq!(t.lookup_pe_template(&TemplateKey { vport: 5061, ..key }, Some(b"a@x")), None);
    assert_eq!(t.lookup_pe_template(&TemplateKey { protocol: Protocol::Tcp, ..key }, Some(b"a@x")), None);
    assert_eq!(t.lookup_pe_template(&TemplateKey { vaddr: "192.0.2.2".parse().unwrap(), ..key }, Some(b"a@x")), None);
    // A second template of the same key and data exists already.
    assert!(matches!(
        t.insert_pe_template(ms(0), NewConn::template(&key, rs2, secs(360)), b"a@x"),
        Err(InsertError::Exists(id)) if id == a
    ));
    // The data is kept, and stays with the template until it goes.
    assert_eq!(t.with_conn(a, |c| c.pe_data().map(<[u8]>::to_vec)), Some(Some(b"a@x".to_vec())));
    assert_eq!(t.with_conn(plain, |c| c.pe_data().map(<[u8]>::to_vec)), Some(None));
    // Invalid: not a template, empty data, data longer than 255 bytes.
    assert_eq!(t.insert_pe_template(ms(0), tcp(1, 1000), b"x"), Err(InsertError::Invalid));
    assert_eq!(t.insert_pe_template(ms(0), NewConn::template(&key, rs1, secs(1)), b""), Err(InsertError::Invalid));
    let long = [b'x'; crate::MAX_PE_DATA + 1];
    assert_eq!(t.insert_pe_template(ms(0), NewConn::template(&key, rs1, secs(1)), &long), Err(InsertError::Invalid));
    let longest = t.insert_pe_template(ms(0), NewConn::template(&key, rs1, secs(1)), &long[1..]).unwrap();
    assert_eq!(t.lookup_pe_template(&key, Some(&long[1..])).map(|x| x.0), Some(longest));
    // Invalidated: never matches again.
    assert!(t.invalidate_template(b));
    assert_eq!(t.lookup_pe_template(&key, Some(b"b@x")), None);
    t.check();
    // Expiry: each at its own time.
    assert_eq!(ids(&t.expire_at(ms(1000))), vec![longest]);
    let mut rest = ids(&t.expire_at(ms(360_000)));
    let mut want = vec![a, b, plain];
    want.sort();
    rest.sort();
    assert_eq!(rest, want);
    assert_eq!(t.len(), 0);
}

fn ids(v: &[Expired]) -> Vec<ConnId> {
    v.iter().map(|e| e.id).collect()
}

/// A template and two conns it controls.
fn template_with_conns<T: Table>(t: &mut T, tpl_timeout: u64) -> (ConnId, ConnId, ConnId) {
    let key = TemplateKey::for_service(Protocol::Tcp, client(1).into(), 0xFFFF_FF00, VIP.into(), 80);
    let tpl = t.insert(ms(0), NewConn::template(&key, "10.1.0.2:8080".parse().unwrap(), secs(tpl_timeout))).unwrap();
    let a = t.insert(ms(0), tcp(1, 1000).with_control(tpl).with_timeout(secs(10))).unwrap();
    let b = t.insert(ms(0), tcp(1, 1001).with_control(tpl).with_timeout(secs(20))).unwrap();
    assert_eq!(t.get(tpl).unwrap().n_control, 2);
    (tpl, a, b)
}

fn controllers_wait_for_their_conns<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let (tpl, a, b) = template_with_conns(&mut t, 5);
    // The template is due at 5 s but controls two conns: pushed back 60 s, and reported so.
    let (mut out, mut pushed) = (Vec::new(), Vec::new());
    t.handle_timeout_with_push_backs(ms(5000), &mut out, &mut pushed);
    assert!(out.is_empty());
    assert_eq!(pushed, vec![tpl]);
    let v = t.get(tpl).unwrap();
    assert_eq!(v.expires, ms(65_000));
    assert_eq!(v.timeout, secs(60));
    let e = t.expire_at(ms(10_000));
    assert_eq!(e.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a]);
    assert_eq!(e[0].control, Some(tpl));
    assert_eq!(t.get(tpl).unwrap().n_control, 1);
    assert_eq!(t.expire_at(ms(20_000)).iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    assert_eq!(t.get(tpl).unwrap().n_control, 0);
    // Normal expiry of its conns does not drop the template: it waits for its own timer (and is not pushed back).
    let (mut out, mut pushed) = (Vec::new(), Vec::new());
    t.handle_timeout_with_push_backs(ms(65_000), &mut out, &mut pushed);
    assert_eq!(out.iter().map(|e| e.id).collect::<Vec<_>>(), vec![tpl]);
    assert!(pushed.is_empty());

    // When the template and its last conn are due at the same time, both go in the same call.
    let (tpl, a, b) = template_with_conns(&mut t, 20);
    let _ = t.touch(ms(100_000), tpl, secs(1));
    let _ = t.touch(ms(100_000), a, secs(1));
    let _ = t.touch(ms(100_000), b, secs(1));
    let mut ids: Vec<ConnId> = t.expire_at(ms(101_000)).iter().map(|e| e.id).collect();
    ids.sort();
    let mut want = vec![tpl, a, b];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(t.len(), 0);
}

fn forced_delete_cascades_to_unassured_templates<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let (tpl, a, b) = template_with_conns(&mut t, 300);
    let mut out = Vec::new();
    assert_eq!(t.remove(tpl, &mut out), Err(RemoveError::Controlling(2)));
    t.remove(a, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].conn.timeout, Duration::ZERO, "forced delete of a controlled conn");
    assert_eq!(out[0].reason, ExpireReason::Removed);
    out.clear();
    t.remove(b, &mut out).unwrap();
    assert_eq!(
        out.iter().map(|e| (e.id, e.reason)).collect::<Vec<_>>(),
        vec![(b, ExpireReason::Removed), (tpl, ExpireReason::ControllerDropped)]
    );
    assert_eq!(t.len(), 0);

    // An assured template stays.
    let (tpl, a, b) = template_with_conns(&mut t, 300);
    t.with_conn(tpl, |c| c.set_state(TEMPLATE_ASSURED)).unwrap();
    out.clear();
    t.remove(a, &mut out).unwrap();
    t.remove(b, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(t.get(tpl).unwrap().n_control, 0);
    t.flush(&mut out);

    // A non-forced expire of the last conn leaves even an unassured template to its timer.
    let (tpl, a, b) = template_with_conns(&mut t, 300);
    assert_eq!(t.expire(a).unwrap().reason, ExpireReason::Expired);
    assert_eq!(t.expire(b).unwrap().control, Some(tpl));
    assert_eq!(t.get(tpl).unwrap().n_control, 0);
    t.check();
}

fn invalidated_templates_never_match<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let key = TemplateKey::for_service(Protocol::Tcp, client(5).into(), 0xFFFF_FFFF, VIP.into(), 80);
    let tpl = t.insert(ms(0), NewConn::template(&key, "10.1.0.2:8080".parse().unwrap(), secs(30))).unwrap();
    let conn = t.insert(ms(0), tcp(9, 9)).unwrap();
    assert!(!t.invalidate_template(conn), "not a template");
    assert!(t.invalidate_template(tpl));
    assert_eq!(t.lookup_template(&key), None);
    let v = t.get(tpl).unwrap();
    assert_eq!((v.vport, v.dport), (0xFFFF, 0xFFFF));
    // A fresh template for the key can be created; the old one expires on its own.
    let fresh = t.insert(ms(1), NewConn::template(&key, "10.1.0.3:8080".parse().unwrap(), secs(30))).unwrap();
    assert_eq!(t.lookup_template(&key).map(|x| x.0), Some(fresh));
    assert!(t.expire_at(ms(30_000)).iter().any(|e| e.id == tpl));
}

fn expire_now_and_expire<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let a = t.insert(ms(0), tcp(1, 1).with_timeout(secs(900))).unwrap();
    assert!(t.expire_now(ms(100), a));
    assert_eq!(t.poll_timeout(), Some(ms(100)));
    let e = t.expire_at(ms(100));
    assert_eq!(e.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a]);
    let b = t.insert(ms(0), tcp(2, 1)).unwrap();
    let e = t.expire(b).unwrap();
    assert_eq!((e.id, e.reason), (b, ExpireReason::Expired));
    assert_eq!(t.len(), 0);
    assert!(t.expire_at(ms(1_000_000)).is_empty());
}

fn update_transitions_and_restarts<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let id = t.insert(ms(0), tcp(1, 1).with_timeout(secs(3))).unwrap();
    let n = t
        .update(ms(1000), id, |c| {
            c.set_state(TcpState::Established.as_u8());
            c.set_timeout(secs(900));
            c.set_flags(c.flags() | ConnFlags::INACTIVE | ConnFlags::TEMPLATE);
            c.inc_in_pkts()
        })
        .unwrap();
    assert_eq!(n, 1);
    let v = t.get(id).unwrap();
    assert_eq!(v.state, 1);
    assert_eq!(v.expires, ms(901_000));
    assert!(v.flags.contains(ConnFlags::INACTIVE));
    assert!(!v.flags.contains(ConnFlags::TEMPLATE), "identity flags cannot be set");
    assert!(t.expire_at(ms(900_999)).is_empty());
    assert_eq!(t.expire_at(ms(901_000)).len(), 1);
}

fn flush_and_remove_if<T: Table>() {
    let mut t = T::make(cfg(1000, 8), ms(0));
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(t.insert(ms(0), tcp(i, 1).with_dest(DestId(i % 3))).unwrap());
    }
    let mut out = Vec::new();
    assert_eq!(t.remove_if(|c| c.dest == Some(DestId(0)), &mut out), 0);
    assert_eq!(out.len(), 34);
    assert!(out.iter().all(|e| e.reason == ExpireReason::Removed && e.conn.dest == Some(DestId(0))));
    assert_eq!(t.len(), 66);
    assert_eq!(t.snapshot().len(), 66);
    out.clear();
    t.flush(&mut out);
    assert_eq!(out.len(), 66);
    assert!(out.iter().all(|e| e.reason == ExpireReason::Flushed));
    assert_eq!(t.len(), 0);
    assert!(ids.iter().all(|&id| t.get(id).is_none()));
    t.check();
    // Usable afterwards; stale wheel items are ignored.
    let id = t.insert(ms(0), tcp(1, 1)).unwrap();
    assert_eq!(t.expire_at(ms(10_000)).iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);

    // remove_if takes controllers after their conns.
    let (tpl, _, _) = template_with_conns(&mut t, 100);
    out.clear();
    assert_eq!(t.remove_if(|_| true, &mut out), 0);
    assert_eq!(out.len(), 3);
    assert_eq!(out.iter().filter(|e| e.id == tpl).count(), 1);
    assert_eq!(t.len(), 0);
    // ... and leaves a controller whose conns do not match.
    let (tpl, _, _) = template_with_conns(&mut t, 100);
    out.clear();
    assert_eq!(t.remove_if(|c| c.is_template(), &mut out), 1);
    assert!(t.get(tpl).is_some());
}

fn drop_entry_frees_a_full_table<T: Table>() {
    const CAP: usize = 2000;
    let mut t = T::make(cfg(CAP, 4), ms(0));
    let syn_recv = TcpState::SynRecv.as_u8();
    let est = TcpState::Established.as_u8();
    // Half embryonic, a quarter established without packets, a quarter assured templates.
    for i in 0..CAP as u32 {
        let c = tcp(i, 1000).with_timeout(secs(100));
        let c = match i % 4 {
            0 | 1 => NewConn { state: syn_recv, ..c },
            2 => NewConn { state: est, ..c },
            _ => {
                let key = TemplateKey::for_service(Protocol::Tcp, client(i).into(), !0, VIP.into(), 80);
                NewConn { state: TEMPLATE_ASSURED, ..NewConn::template(&key, c.dest_addr(), secs(100)) }
            }
        };
        t.insert(ms(0), c).unwrap();
    }
    assert_eq!(t.insert(ms(0), tcp(99_999, 1)), Err(InsertError::Full));
    let mut st = DropEntry::new(7);
    let mut out = Vec::new();
    let mut rounds = 0;
    while out.len() < 100 && rounds < 1000 {
        t.drop_entry(ms(1000), &mut st, |_| false, &mut out);
        rounds += 1;
    }
    assert!(!out.is_empty());
    for e in &out {
        assert_eq!(e.reason, ExpireReason::Dropped);
        assert_eq!(e.conn.state, syn_recv, "only embryonic conns go: {e:?}");
    }
    assert_eq!(t.len(), CAP - out.len());
    t.insert(ms(1000), tcp(99_999, 1)).unwrap();
    t.check();
    // Established conns with a few packets, idle for a minute, go at the todrop rate.
    let mut t = T::make(cfg(200, 2), ms(0));
    for i in 0..200 {
        let id = t.insert(ms(0), NewConn { state: est, ..tcp(i, 1).with_timeout(secs(100)) }).unwrap();
        t.with_conn(id, |c| c.set_in_pkts(1 + i % 2)).unwrap();
    }
    let mut out = Vec::new();
    for _ in 0..200 {
        t.drop_entry(ms(30_000), &mut st, |_| false, &mut out);
    }
    assert!(out.is_empty(), "restarted less than 60 s ago");
    for _ in 0..200 {
        t.drop_entry(ms(60_000), &mut st, |_| false, &mut out);
    }
    assert!(!out.is_empty());
    assert!(out.iter().all(|e| e.conn.in_pkts <= 2));
    t.check();
}

fn ipv6_conns<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let c = tcp6(1, 1000);
    let id = t.insert(ms(0), c).unwrap();
    assert!(id.is_ipv6());
    assert_eq!(t.lookup_in(&in_key(&c)).map(|x| x.0), Some(id));
    assert_eq!(t.lookup_out(&out_key(&c)).map(|x| x.0), Some(id));
    // An IPv4 conn with the same low bits lives beside it.
    let c4 = tcp(1, 1000);
    let id4 = t.insert(ms(0), c4).unwrap();
    assert!(!id4.is_ipv6());
    assert_eq!(t.lookup_in(&in_key(&c4)).map(|x| x.0), Some(id4));
    let v = t.get(id).unwrap();
    assert_eq!(v.client(), SocketAddr::new(c.caddr, 1000));
    assert_eq!(v.dest_addr(), SocketAddr::new(c.daddr, c.dport));
    let e = t.expire_at(ms(10_000));
    assert_eq!(e.len(), 2);
    t.check();
}

fn burst_equals_single_lookups<T: Table>() {
    let mut t = T::make(cfg(5000, 8), ms(0));
    let mut keys = Vec::new();
    for i in 0..300u32 {
        let c = if i % 5 == 0 { tcp6(i, 2000) } else { tcp(i, 1000 + (i % 7) as u16) };
        if i % 3 != 0 {
            t.insert(ms(0), c).unwrap();
        }
        keys.push(in_key(&c));
        keys.push(in_key(&NewConn { cport: c.cport + 1, ..c }));
    }
    // A NO_CPORT conn found through the retry, and a mixed-family key.
    let mut pre = tcp(77_777, 0).with_flags(ConnFlags::NO_CPORT);
    pre.vport = 21;
    t.insert(ms(0), pre).unwrap();
    keys.push(InKey { cport: 4444, ..in_key(&pre) });
    keys.push(InKey { vaddr: "::1".parse().unwrap(), ..keys[1] });
    let mut out = vec![None; keys.len()];
    t.lookup_burst(&keys, &mut out);
    let mut hits = 0;
    for (k, o) in keys.iter().zip(&out) {
        assert_eq!(*o, t.lookup_in(k), "{k:?}");
        hits += usize::from(o.is_some());
    }
    assert_eq!(hits, 201);
    // A shorter output slice takes only that many keys.
    let mut short = vec![None; 3];
    t.lookup_burst(&keys, &mut short);
    assert_eq!(short[..], out[..3]);
}

fn control_gone_and_undo<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let (tpl, a, _) = template_with_conns(&mut t, 300);
    // A failed insert (Exists) gives the increment back.
    assert_eq!(t.insert(ms(0), tcp(1, 1000).with_control(tpl)), Err(InsertError::Exists(a)));
    assert_eq!(t.get(tpl).unwrap().n_control, 2);
    let mut out = Vec::new();
    t.flush(&mut out);
    assert_eq!(t.insert(ms(0), tcp(1, 5).with_control(tpl)), Err(InsertError::ControlGone(tpl)));
    assert_eq!(t.len(), 0);
}

fn poll_timeout_is_the_earliest_deadline<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    assert_eq!(t.poll_timeout(), None);
    for (i, s) in [(1, 30), (2, 10), (3, 20)] {
        t.insert(ms(0), tcp(i, 1).with_timeout(secs(s))).unwrap();
    }
    assert_eq!(t.poll_timeout(), Some(ms(10_000)));
    let e = t.expire_at(ms(10_000));
    assert_eq!(e.len(), 1);
    assert_eq!(t.poll_timeout(), Some(ms(20_000)));
}

fn cold_data_round_trips<T: Table>() {
    let mut t = T::make(cfg(100, 4), ms(0));
    let id = t.insert(ms(3), tcp(1, 1)).unwrap();
    t.with_conn(id, |c| {
        assert_eq!(c.sync_endtime(), ms(0), "now & !3");
        assert_eq!(c.pe_data(), None);
        c.set_old_state(5);
        c.set_sync_endtime(ms(12_345));
        c.set_in_seq(crate::SeqAdjust { init_seq: 1, delta: 2, previous_delta: 3 });
        c.set_dest(None);
    })
    .unwrap();
    t.with_conn(id, |c| {
        assert_eq!(c.old_state(), 5);
        assert_eq!(c.sync_endtime(), ms(12_345));
        assert_eq!(c.in_seq().delta, 2);
        assert_eq!(c.out_seq(), crate::SeqAdjust::default());
        assert_eq!(c.pe_data(), None);
        assert_eq!(c.dest(), None);
        assert_eq!(c.control(), None);
        assert_eq!(c.view().dest, None);
        assert_eq!(c.id(), id);
    })
    .unwrap();
    let e = t.expire_at(ms(10_003));
    assert_eq!(e[0].old_state, 5);
}

#[test]
fn entry_sizes() {
    assert_eq!(crate::HOT_SIZE_V4, 64);
    assert_eq!(crate::HOT_SIZE_V6, 128);
    assert_eq!(crate::COLD_SIZE, 40);
}

#[test]
fn config_errors_reach_the_constructors() {
    assert_eq!(ConnTable::new(cfg(0, 4), ms(0)).err(), Some(crate::ConfigError::Capacity(0)));
    assert_eq!(LocalConnTable::new(cfg(10, 3), ms(0)).map(|t| t.config().n_shards).ok(), Some(1));
    assert_eq!(ConnTable::new(cfg(10, 3), ms(0)).err(), Some(crate::ConfigError::NShards(3)));
}

#[test]
fn shared_table_is_send_and_sync_local_is_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ConnTable>();
    send::<LocalConnTable>();
}

#[test]
fn racing_threads_keep_counts_exact() {
    let t = std::sync::Arc::new(ConnTable::new(cfg(10_000, 4), ms(0)).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut created = 0;
                for i in 0..2000 {
                    if t.insert(ms(0), tcp(i, 1)).is_ok() {
                        created += 1;
                    }
                }
                created
            })
        })
        .collect();
    let created: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    assert_eq!(created, 2000);
    assert_eq!(t.len(), 2000);
    t.check_invariants();
}

#[test]
fn preallocated_table_does_not_grow() {
    let mut c = cfg(1000, 4);
    c.preallocate = true;
    let t = ConnTable::new(c, ms(0)).unwrap();
    let before = t.memory_stats();
    for i in 0..1000 {
        t.insert(ms(0), tcp(i, 1)).unwrap();
    }
    assert_eq!(t.memory_stats().slab_bytes, before.slab_bytes);
}
