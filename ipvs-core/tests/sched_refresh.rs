//! The engine refreshes its schedulers' views incrementally: only the real servers whose counters or weight
//! changed since the last pick, plus those in a slow-start ramp. This test checks that the result is the same
//! as a scheduler that sees a freshly built list before every pick.
//!
//! For each stateless scheduler (`lc`, `wlc`, `sed`, `nq`, `fo`, `ovf`; their pick is a function of the list),
//! one engine with slow start (10 s) gets a new TCP flow every 50 ms for 30 virtual seconds. Meanwhile clients
//! reset earlier flows, conns time out, one real server goes to weight 0 and comes back (ramping), one is added
//! midway (ramping) and one is removed. Before each new flow, the reference list is built from
//! `Engine::service` (counters, weight with the ramp computed here, OVERLOAD) and a new scheduler of the same
//! name picks from it; the engine's conn must go to that real server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use etherparse::PacketBuilder;
use ipvs_core::proto::{DestFlags, DestId, Duration, FwdMethod, Instant, Protocol, ServiceKey};
use ipvs_core::sched::{new_scheduler, DestView, SchedConfig, SchedFlow};
use ipvs_core::slow_start::SlowStart;
use ipvs_core::{DestConfig, Direction, Engine, EngineConfig, PacketBuf, ServiceConfig, Verdict};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const RAMP: Duration = Duration::from_secs(10);

fn client(n: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from_bits(0x6440_0000 + n)), 10_000 + (n % 50_000) as u16)
}

fn real(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)), 8080)
}

fn tcp(from: SocketAddr, flags_syn: bool) -> Vec<u8> {
    let IpAddr::V4(src) = from.ip() else { unreachable!("IPv4 clients") };
    let b = PacketBuilder::ipv4(src.octets(), VIP.octets(), 64);
    let b = if flags_syn { b.tcp(from.port(), 80, 1, 64240).syn() } else { b.tcp(from.port(), 80, 2, 64240).rst() };
    let mut out = Vec::new();
    b.write(&mut out, &[]).expect("valid packet");
    out
}

/// SplitMix64, the test's fixed-seed generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((u128::from(z ^ (z >> 31)) * u128::from(n)) >> 64) as u64
    }
}

/// The list a fresh scheduler sees at `now`; `ramps` holds when each real server's ramp began.
fn reference_views(engine: &Engine, key: &ServiceKey, ramps: &[(DestId, Instant)], now: Instant) -> Vec<DestView> {
    let ramp = SlowStart::new(RAMP);
    let info = engine.service(key).expect("service");
    info.dests
        .iter()
        .map(|d| {
            let weight = match ramps.iter().find(|(id, _)| *id == d.id) {
                Some((_, since)) => ramp.effective_weight(d.config.weight, *since, now),
                None => d.config.weight,
            };
            let mut flags = DestFlags::AVAILABLE;
            if d.overloaded {
                flags |= DestFlags::OVERLOAD;
            }
            DestView {
                id: d.id,
                addr: d.config.addr,
                weight,
                last_weight: weight,
                active_conns: d.active_conns,
                inactive_conns: d.inactive_conns,
                persist_conns: d.persist_conns,
                flags,
            }
        })
        .collect()
}

fn run(scheduler: &str) -> (usize, usize) {
    let mut cfg = EngineConfig::new(1 << 16, *b"sched-refresh-ky");
    cfg.slow_start = SlowStart::new(RAMP);
    let engine = Engine::new(cfg).expect("engine");
    let key = ServiceKey::Addr { protocol: Protocol::Tcp, addr: SocketAddr::new(IpAddr::V4(VIP), 80) };
    let mut svc = ServiceConfig::new(key);
    svc.scheduler = scheduler.to_owned();
    engine.add_service(Instant::ZERO, svc).expect("service");
    let mut rng = Rng(0x5eed ^ scheduler.len() as u64);
    // ovf fills the heaviest real server up to its weight in active conns: weights that outlast 600 flows.
    let scale = if scheduler == "ovf" { 60 } else { 1 };
    let dest = |i: u8, weight: u32, upper: u32| {
        let mut d = DestConfig::new(real(i), FwdMethod::Masq);
        d.weight = weight;
        d.u_threshold = upper;
        d
    };
    for i in 1..=6u8 {
        let upper = if i == 3 { 40 } else { 0 };
        engine.add_dest(Instant::ZERO, &key, dest(i, scale * (1 + rng.below(9) as u32), upper)).expect("dest");
    }
    let mut ramps: Vec<(DestId, Instant)> = Vec::new();
    let mut live: Vec<SocketAddr> = Vec::new();
    let (mut picks, mut none) = (0, 0);
    for step in 0..600u32 {
        let now = Instant::from_millis(u64::from(step) * 50);
        engine.handle_timeout(now);
        match step {
            100 => {
                let d2 = engine.service(&key).unwrap().dests.into_iter().find(|d| d.config.addr == real(2)).unwrap();
                engine.edit_dest(now, &key, dest(2, 0, 0)).expect("quiesce");
                ramps.retain(|(id, _)| *id != d2.id);
            }
            160 => {
                engine.edit_dest(now, &key, dest(2, 8 * scale, 0)).expect("return");
                ramps.push((engine.dest_id(&key, real(2)).expect("listed"), now));
            }
            240 => {
                let id = engine.add_dest(now, &key, dest(7, 6 * scale, 0)).expect("added");
                ramps.push((id, now));
            }
            300 => engine.del_dest(&key, real(5)).expect("removed"),
            _ => {}
        }
        // Some clients reset their conns (counters move without a pick).
        for _ in 0..rng.below(3) {
            if live.is_empty() {
                break;
            }
            let c = live.swap_remove(rng.below(live.len() as u64) as usize);
            let mut p = tcp(c, false);
            // Forwarded, or passed when the conn has timed out already: either way no pick.
            let _ = engine.handle_packet(now, &mut PacketBuf::whole(&mut p), Direction::FromClient);
        }
        let views = reference_views(&engine, &key, &ramps, now);
        let c = client(step);
        let flow =
            SchedFlow { protocol: Protocol::Tcp, client: c, virt: SocketAddr::new(IpAddr::V4(VIP), 80), fwmark: 0 };
        let mut fresh = new_scheduler(scheduler, &SchedConfig::default()).expect("known scheduler");
        fresh.bind(&views);
        let want = fresh.schedule(now, &flow, &views).map(|i| views[i].id);
        let mut p = tcp(c, true);
        let verdict = engine.handle_packet(now, &mut PacketBuf::whole(&mut p), Direction::FromClient);
        let got = engine.conn(now, Protocol::Tcp, c, flow.virt).and_then(|i| i.dest);
        assert_eq!(got, want, "{scheduler} step {step} ({} ms): engine vs fresh list {views:?}", now.total_millis());
        match got {
            Some(_) => {
                assert!(matches!(verdict, Verdict::Forward { .. }), "{scheduler} step {step}: {verdict:?}");
                live.push(c);
                picks += 1;
            }
            None => none += 1,
        }
    }
    (picks, none)
}

#[test]
fn incremental_views_pick_as_a_fresh_list_does() {
    for scheduler in ["lc", "wlc", "sed", "nq", "fo", "ovf"] {
        let (picks, none) = run(scheduler);
        println!(
            "sched refresh {scheduler}: {picks}/{picks} picks equal a fresh scheduler's ({none} flows unscheduled)"
        );
        assert!(picks > 500, "{scheduler}: most flows scheduled");
    }
}
