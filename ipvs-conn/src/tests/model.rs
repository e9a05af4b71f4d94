//! Model-based test: random operation sequences on each table type agree with a `std` `HashMap` reference that
//! keeps its own expiry times, control counts and capacity bound.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::ExpireReason;

const FLOWS: usize = 24;
/// Templates 0..3 are plain, on three client networks; 3 and 4 carry persistence-engine data (Call-IDs) on the
/// key of template 0, so three templates share one key and differ only by their data.
const TEMPLATES: usize = 5;
const PLAIN_TEMPLATES: usize = 3;
const CAPACITY: usize = 16;

#[derive(Clone, Copy, Debug)]
enum Op {
    Insert { flow: usize, timeout_s: u64, dr: bool },
    InsertTemplate { tpl: usize, timeout_s: u64 },
    InsertControlled { flow: usize, tpl: usize, timeout_s: u64 },
    LookupIn(usize),
    LookupOut(usize),
    LookupTemplate(usize),
    Touch { flow: usize, timeout_s: u64 },
    TouchTemplate { tpl: usize, timeout_s: u64 },
    Advance(u64),
    Remove(usize),
    RemoveTemplate(usize),
    Expire(usize),
}

mod strategies {
    use super::*;

    pub(super) fn op() -> impl Strategy<Value = Op> {
        let flow = 0..FLOWS;
        let tpl = 0..TEMPLATES;
        let t = 1u64..20;
        prop_oneof![
            4 => (flow.clone(), t.clone(), any::<bool>()).prop_map(|(flow, timeout_s, dr)| Op::Insert { flow, timeout_s, dr }),
            1 => (tpl.clone(), t.clone()).prop_map(|(tpl, timeout_s)| Op::InsertTemplate { tpl, timeout_s }),
            2 => (flow.clone(), tpl.clone(), t.clone())
                .prop_map(|(flow, tpl, timeout_s)| Op::InsertControlled { flow, tpl, timeout_s }),
            3 => flow.clone().prop_map(Op::LookupIn),
            2 => flow.clone().prop_map(Op::LookupOut),
            1 => tpl.clone().prop_map(Op::LookupTemplate),
            3 => (flow.clone(), t.clone()).prop_map(|(flow, timeout_s)| Op::Touch { flow, timeout_s }),
            1 => (tpl.clone(), t).prop_map(|(tpl, timeout_s)| Op::TouchTemplate { tpl, timeout_s }),
            3 => (0u64..8000).prop_map(Op::Advance),
            1 => flow.clone().prop_map(Op::Remove),
            1 => tpl.prop_map(Op::RemoveTemplate),
            1 => flow.prop_map(Op::Expire),
        ]
    }
}

/// Flow `i`: a TCP conn from one of 6 clients (so flows share shards and buckets), IPv6 for every fourth.
fn flow(i: usize, dr: bool) -> NewConn {
    let c = if i % 4 == 3 { tcp6((i % 6) as u32, 1000 + i as u16) } else { tcp((i % 6) as u32, 1000 + i as u16) };
    if dr {
        c.with_flags(droute())
    } else {
        c
    }
}

fn template_key(j: usize) -> TemplateKey {
    let net = if j < PLAIN_TEMPLATES { j } else { 0 };
    TemplateKey::for_service(Protocol::Tcp, client(net as u32 * 256).into(), 0xFFFF_FF00, VIP.into(), 80)
}

/// The persistence-engine data of template `j`.
fn template_pe(j: usize) -> Option<Vec<u8>> {
    (j >= PLAIN_TEMPLATES).then(|| format!("call-{j}@host").into_bytes())
}

fn insert_template<T: Table>(t: &mut T, now: Instant, j: usize, c: NewConn) -> Result<ConnId, InsertError> {
    match template_pe(j) {
        Some(pe) => t.insert_pe_template(now, c, &pe),
        None => t.insert(now, c),
    }
}

fn lookup_template<T: Table>(t: &T, j: usize) -> Option<(ConnId, ConnView)> {
    t.lookup_pe_template(&template_key(j), template_pe(j).as_deref())
}

#[derive(Clone, Copy, Debug)]
struct MConn {
    id: ConnId,
    expires: u64,
    dr: bool,
    control: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
struct MTpl {
    id: ConnId,
    expires: u64,
    n_control: u32,
}

#[derive(Default)]
struct Model {
    now: u64,
    conns: HashMap<usize, MConn>,
    tpls: HashMap<usize, MTpl>,
    /// Handles of flows that are gone (touching them must fail).
    stale: HashMap<usize, ConnId>,
}

impl Model {
    fn len(&self) -> usize {
        self.conns.len() + self.tpls.len()
    }

    fn tpl_of(&self, id: ConnId) -> Option<usize> {
        self.tpls.iter().find(|(_, t)| t.id == id).map(|(&j, _)| j)
    }

    fn gone(&mut self, flow: usize) -> Option<MConn> {
        let c = self.conns.remove(&flow)?;
        self.stale.insert(flow, c.id);
        if let Some(j) = c.control {
            if let Some(t) = self.tpls.get_mut(&j) {
                t.n_control -= 1;
            }
        }
        Some(c)
    }
}

fn ids(v: &[Expired]) -> Vec<ConnId> {
    let mut v: Vec<ConnId> = v.iter().map(|e| e.id).collect();
    v.sort();
    v
}

fn run<T: Table>(ops: &[Op], n_shards: usize) -> Result<(), TestCaseError> {
    let mut t = T::make(cfg(CAPACITY, n_shards), ms(0));
    let mut m = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let now = ms(m.now);
        match *op {
            Op::Insert { flow: f, timeout_s, dr } => {
                let c = flow(f, dr).with_timeout(secs(timeout_s));
                let r = t.insert(now, c);
                if let Some(x) = m.conns.get(&f) {
                    prop_assert_eq!(r, Err(InsertError::Exists(x.id)));
                } else if m.len() == CAPACITY {
                    prop_assert_eq!(r, Err(InsertError::Full));
                } else {
                    let id = r.map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                    m.conns.insert(f, MConn { id, expires: m.now + timeout_s * 1000, dr, control: None });
                }
            }
            Op::InsertTemplate { tpl, timeout_s } => {
                let c = NewConn::template(&template_key(tpl), SocketAddr::new(RS.into(), 8080), secs(timeout_s));
                let r = insert_template(&mut t, now, tpl, c);
                if let Some(x) = m.tpls.get(&tpl) {
                    prop_assert_eq!(r, Err(InsertError::Exists(x.id)));
                } else if m.len() == CAPACITY {
                    prop_assert_eq!(r, Err(InsertError::Full));
                } else {
                    let id = r.map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                    m.tpls.insert(tpl, MTpl { id, expires: m.now + timeout_s * 1000, n_control: 0 });
                }
            }
            Op::InsertControlled { flow: f, tpl, timeout_s } => {
                let Some(mt) = m.tpls.get(&tpl).copied() else {
                    continue;
                };
                let c = flow(f, false).with_timeout(secs(timeout_s)).with_control(mt.id);
                let r = t.insert(now, c);
                if let Some(x) = m.conns.get(&f) {
                    prop_assert_eq!(r, Err(InsertError::Exists(x.id)));
                } else if m.len() == CAPACITY {
                    prop_assert_eq!(r, Err(InsertError::Full));
                } else {
                    let id = r.map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                    m.conns.insert(f, MConn { id, expires: m.now + timeout_s * 1000, dr: false, control: Some(tpl) });
                    if let Some(x) = m.tpls.get_mut(&tpl) {
                        x.n_control += 1;
                    }
                }
            }
            Op::LookupIn(f) => {
                let c = flow(f, false);
                let got = t.lookup_in(&in_key(&c));
                match m.conns.get(&f) {
                    Some(x) => {
                        let (id, v) = got.ok_or_else(|| TestCaseError::fail(format!("step {step}: in-miss")))?;
                        prop_assert_eq!(id, x.id);
                        prop_assert_eq!(v.expires, ms(x.expires));
                    }
                    None => prop_assert_eq!(got, None),
                }
            }
            Op::LookupOut(f) => match m.conns.get(&f) {
                Some(x) => {
                    let got = t.lookup_out(&out_key(&flow(f, x.dr)));
                    prop_assert_eq!(got.map(|g| g.0), Some(x.id));
                    // The other method's reply source never matches.
                    prop_assert_eq!(t.lookup_out(&out_key(&flow(f, !x.dr))), None);
                }
                None => {
                    prop_assert_eq!(t.lookup_out(&out_key(&flow(f, false))), None);
                    prop_assert_eq!(t.lookup_out(&out_key(&flow(f, true))), None);
                }
            },
            Op::LookupTemplate(j) => {
                // A call no template carries is never found, whatever else shares its key.
                prop_assert_eq!(t.lookup_pe_template(&template_key(j), Some(b"call-x@host")), None);
                let got = lookup_template(&t, j);
                match m.tpls.get(&j) {
                    Some(x) => {
                        let (id, v) = got.ok_or_else(|| TestCaseError::fail(format!("step {step}: tpl miss")))?;
                        prop_assert_eq!(id, x.id);
                        prop_assert_eq!(v.n_control, x.n_control);
                        prop_assert_eq!(v.expires, ms(x.expires));
                    }
                    None => prop_assert_eq!(got, None),
                }
            }
            Op::Touch { flow: f, timeout_s } => {
                if let Some(x) = m.conns.get_mut(&f) {
                    prop_assert!(t.touch(now, x.id, secs(timeout_s)));
                    x.expires = m.now + timeout_s * 1000;
                } else if let Some(&id) = m.stale.get(&f) {
                    prop_assert!(!t.touch(now, id, secs(timeout_s)), "stale handle honoured");
                    prop_assert_eq!(t.get(id), None);
                }
            }
            Op::TouchTemplate { tpl, timeout_s } => {
                if let Some(x) = m.tpls.get_mut(&tpl) {
                    prop_assert!(t.touch(now, x.id, secs(timeout_s)));
                    x.expires = m.now + timeout_s * 1000;
                }
            }
            Op::Advance(dt) => {
                m.now += dt;
                let mut got = Vec::new();
                t.handle_timeout(ms(m.now), &mut got);
                // Reference: due conns go (freeing their templates), then due templates that control nothing;
                // due templates that still control conns are pushed back 60 s.
                let mut want = Vec::new();
                let due: Vec<usize> = m.conns.iter().filter(|(_, c)| c.expires <= m.now).map(|(&f, _)| f).collect();
                for f in due {
                    if let Some(c) = m.gone(f) {
                        want.push(c.id);
                    }
                }
                let due: Vec<usize> = m.tpls.iter().filter(|(_, x)| x.expires <= m.now).map(|(&j, _)| j).collect();
                for j in due {
                    let Some(x) = m.tpls.get_mut(&j) else { continue };
                    if x.n_control > 0 {
                        x.expires = m.now + 60_000;
                    } else {
                        want.push(x.id);
                        m.tpls.remove(&j);
                    }
                }
                want.sort();
                prop_assert_eq!(ids(&got), want, "step {}: expired at {}", step, m.now);
                prop_assert!(got.iter().all(|e| e.reason == ExpireReason::Timeout));
            }
            Op::Remove(f) => {
                let Some(x) = m.conns.get(&f).copied() else {
                    continue;
                };
                let mut got = Vec::new();
                prop_assert_eq!(t.remove(x.id, &mut got), Ok(()));
                m.gone(f);
                let mut want = vec![x.id];
                // Forced delete: a template left controlling nothing goes too (ours are never assured).
                if let Some(j) = x.control {
                    if m.tpls.get(&j).is_some_and(|y| y.n_control == 0) {
                        if let Some(y) = m.tpls.remove(&j) {
                            want.push(y.id);
                        }
                    }
                }
                want.sort();
                prop_assert_eq!(ids(&got), want);
            }
            Op::RemoveTemplate(j) => {
                let Some(x) = m.tpls.get(&j).copied() else {
                    continue;
                };
                let mut got = Vec::new();
                let r = t.remove(x.id, &mut got);
                if x.n_control > 0 {
                    prop_assert_eq!(r, Err(RemoveError::Controlling(x.n_control)));
                } else {
                    prop_assert_eq!(r, Ok(()));
                    prop_assert_eq!(ids(&got), vec![x.id]);
                    m.tpls.remove(&j);
                }
            }
            Op::Expire(f) => {
                let Some(x) = m.conns.get(&f).copied() else {
                    continue;
                };
                let e = t.expire(x.id).map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                prop_assert_eq!(e.id, x.id);
                prop_assert_eq!(e.control, x.control.and_then(|j| m.tpls.get(&j)).map(|y| y.id));
                m.gone(f);
            }
        }
        t.check();
        prop_assert_eq!(t.len(), m.len(), "step {}: {:?}", step, op);
        for x in m.tpls.values() {
            let v = t.get(x.id).ok_or_else(|| TestCaseError::fail(format!("step {step}: template gone")))?;
            prop_assert_eq!(v.n_control, x.n_control, "step {}: n_control", step);
            prop_assert!(m.tpl_of(x.id).is_some());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn shared_table_matches_the_model(ops in proptest::collection::vec(strategies::op(), 1..80)) {
        run::<ConnTable>(&ops, 4)?;
    }

    #[test]
    fn shared_table_with_one_shard_matches_the_model(ops in proptest::collection::vec(strategies::op(), 1..80)) {
        run::<ConnTable>(&ops, 1)?;
    }

    #[test]
    fn local_table_matches_the_model(ops in proptest::collection::vec(strategies::op(), 1..80)) {
        run::<LocalConnTable>(&ops, 1)?;
    }
}
