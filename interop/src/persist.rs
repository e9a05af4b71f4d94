//! The persistent services of a scheduler differential plan ([`crate::sched`]), replayed through an
//! [`ipvs_core::Engine`].
//!
//! Templates decide most picks of a persistent service (facts §8): a flow whose client network already has a
//! template goes to that template's real server, whatever the scheduler or the thresholds say. That is the
//! engine's job, not the scheduler's, so [`run_engine`] applies the persistent services' commands (as given
//! to the kernel) to an engine and hands it each of their flows' first packet — the same bytes the guest sent,
//! with the same firewall mark — in arrival order, `seq × 20 ms` apart; templates (≥ 360 s) never expire
//! within that. What the engine did is read back as the kernel's was: its conns (by client) and its templates.
//! [`compare`] then checks, per flow, the real server (address and port) of the engine's conn against the
//! kernel's, or that both refused the flow; and that both list the same templates (protocol, client network,
//! virtual address and port — a fwmark template's holds the mark — real server, state).

use std::net::SocketAddr;

use ipvs_core::ipvsadm::parse_rules;
use ipvs_core::{Direction, Engine, EngineConfig, PacketBuf, Verdict};
use ipvs_proto::Instant;

use crate::procfs::{protocol_text, ProcConn};
use crate::sched::{Comparison, KernelRun, Plan, ServiceTally};
use crate::{Error, Result};

/// Room before a packet for a tunnel's outer headers, and after it.
const HEADROOM: usize = 128;

/// When flow `seq` arrives at the engine.
fn arrival(seq: u64) -> Instant {
    Instant::from_millis(seq * ipvs_sched::replay::MILLIS_PER_SEQ)
}

/// An engine (kernel defaults, no SIP persistence engine) with the plan's persistent services, fed their
/// flows: what it made, as a [`KernelRun`].
///
/// # Errors
/// The engine refuses a command the kernel took.
pub fn run_engine(plan: &Plan) -> Result<KernelRun> {
    let mut config = EngineConfig::new(16 * 1024, *b"interop-persist!");
    config.sip_persistence_engine = false;
    let engine = Engine::new(config).map_err(|e| Error(format!("engine: {e}")))?;
    for svc in plan.services.iter().filter(|s| s.is_persistent()) {
        let text = plan.commands[svc.commands.clone()].join("\n");
        let rules = parse_rules(&text).map_err(|e| Error(format!("{}: {e}", svc.selector)))?;
        for rule in rules {
            let line = &plan.commands[svc.commands.start + rule.line - 1];
            engine.apply(Instant::ZERO, rule.command).map_err(|e| Error(format!("engine: {line}: {e}")))?;
        }
    }
    let mut run = KernelRun::default();
    let mut now = Instant::ZERO;
    for f in plan.flows_of(true) {
        now = arrival(f.seq);
        let bytes = f.packet();
        let mut data = vec![0u8; HEADROOM + bytes.len() + HEADROOM];
        data[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(&bytes);
        let mut buf = PacketBuf::new(&mut data, HEADROOM, bytes.len()).expect("the packet fits").with_fwmark(f.mark);
        if let Verdict::Forward { .. } | Verdict::Local = engine.handle_packet(now, &mut buf, Direction::FromClient) {
            if let Some(c) = engine.conn(now, f.protocol, f.client, f.dst) {
                run.conns.insert(f.client, proc_conn(&c));
            }
        }
    }
    run.templates = engine.conns(now).iter().filter(|c| c.is_template()).map(proc_conn).collect();
    Ok(run)
}

/// A conn of ours as `/proc/net/ip_vs_conn` shows it.
fn proc_conn(c: &ipvs_core::ConnInfo) -> ProcConn {
    ProcConn {
        protocol: protocol_text(c.protocol).to_string(),
        from: c.client,
        to: c.virt,
        dest: c.real,
        state: c.state.to_string(),
        expires: c.expires.secs(),
    }
}

/// A template's identity: protocol, client network, virtual address, real server, state.
type TemplateKey = (String, SocketAddr, SocketAddr, SocketAddr, String);

fn template_key(t: &ProcConn) -> TemplateKey {
    (t.protocol.clone(), t.from, t.to, t.dest, t.state.clone())
}

/// The persistent services' flows and templates, the kernel's against ours (from [`run_engine`]).
pub fn compare(plan: &Plan, kernel: &KernelRun, ours: &KernelRun) -> Comparison {
    let mut cmp = Comparison::default();
    for (si, _) in plan.services.iter().enumerate().filter(|(_, s)| s.is_persistent()) {
        let mut tally = ServiceTally { service: si, ..ServiceTally::default() };
        for f in plan.flows.iter().filter(|f| f.service == si) {
            let k = kernel.conns.get(&f.client).map(|c| c.dest);
            let o = ours.conns.get(&f.client).map(|c| c.dest);
            cmp.flow(plan, f, &mut tally, k, o);
        }
        cmp.per_service.push(tally);
    }
    let mut ours_left: Vec<TemplateKey> = ours.templates.iter().map(template_key).collect();
    let mut kernel_templates: Vec<TemplateKey> = kernel.templates.iter().map(template_key).collect();
    kernel_templates.sort();
    for k in kernel_templates {
        let found = ours_left.iter().position(|o| *o == k);
        cmp.templates.count(found.is_some());
        match found {
            Some(i) => {
                ours_left.swap_remove(i);
            }
            None => cmp.differences.push(format!("template {} {} → {} ({}) {}: not ours", k.0, k.1, k.2, k.3, k.4)),
        }
    }
    ours_left.sort();
    for o in ours_left {
        cmp.templates.count(false);
        cmp.differences.push(format!("template {} {} → {} ({}) {}: ours only", o.0, o.1, o.2, o.3, o.4));
    }
    cmp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::generate;

    #[test]
    fn the_engine_takes_every_plan_and_agrees_with_itself() {
        for seed in [1, 2, 3, 4, 5] {
            let plan = generate(seed, 20, 200);
            let ours = run_engine(&plan).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            // Most flows are scheduled, and clients repeat: fewer templates than conns.
            assert!(ours.conns.len() > 100, "seed {seed}: {} conns", ours.conns.len());
            assert!(!ours.templates.is_empty() && ours.templates.len() < ours.conns.len());
            let cmp = compare(&plan, &ours, &ours);
            assert!(cmp.all_agree(), "{:?}", cmp.differences);
            assert_eq!(cmp.picks.total + cmp.refusals.total, 200);
            assert_eq!(cmp.templates.total, ours.templates.len());
            // A kernel that refused everything disagrees on every pick and every template.
            let cmp = compare(&plan, &KernelRun::default(), &ours);
            assert_eq!(cmp.refusals.total, 200);
            assert_eq!(cmp.refusals.agree, 200 - ours.conns.len());
            assert_eq!((cmp.templates.agree, cmp.templates.total), (0, ours.templates.len()));
        }
    }

    #[test]
    fn conns_of_one_client_network_share_a_template_and_a_real_server() {
        let plan = generate(9, 20, 300);
        let ours = run_engine(&plan).unwrap();
        // Every conn of a persistent service goes where a template of its service says.
        for f in plan.flows_of(true) {
            let Some(c) = ours.conns.get(&f.client) else { continue };
            let tpl = ours.templates.iter().find(|t| {
                t.dest.ip() == c.dest.ip() && (t.to == SocketAddr::new(f.dst.ip(), 0) || t.to.port() == f.dst.port())
            });
            assert!(
                tpl.is_some() || matches!(plan.services[f.service].kind, crate::sched::Kind::Fwmark(..)),
                "seq {}: no template for {}",
                f.seq,
                c.dest
            );
        }
    }
}
