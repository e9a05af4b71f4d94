//! What `ipvsadm -L` / `-S` print, from the running director: a [`ListingSnapshot`] filled from the engine,
//! rendered by `ipvs-core`'s ipvsadm module.

use ipvs_core::ipvsadm::{ConnRow, DaemonRow, DestListing, ListingSnapshot, Rates, ServiceListing, Stats};
use ipvs_core::stats;

use crate::director::Director;

fn counters(s: &stats::Stats) -> Stats {
    let c = s.counters;
    Stats { conns: c.conns, inpkts: c.inpkts, outpkts: c.outpkts, inbytes: c.inbytes, outbytes: c.outbytes }
}

fn rates(s: &stats::Stats) -> Rates {
    let r = s.rates;
    Rates { cps: r.cps, inpps: r.inpps, outpps: r.outpps, inbps: r.inbps, outbps: r.outbps }
}

/// The whole listing state of `director` now: services with counters and rates, connections, timeouts and
/// sync daemons.
pub fn snapshot(director: &Director) -> ListingSnapshot {
    let engine = director.engine();
    let now = director.now();
    let mut snap = ListingSnapshot::new(director.options().conn_tab_size);
    snap.services = engine
        .services()
        .into_iter()
        .map(|s| ServiceListing {
            stats: counters(&s.stats),
            rates: rates(&s.stats),
            dests: s
                .dests
                .iter()
                .map(|d| DestListing {
                    config: d.config,
                    active_conns: d.active_conns,
                    inactive_conns: d.inactive_conns,
                    persist_conns: d.persist_conns,
                    stats: counters(&d.stats),
                    rates: rates(&d.stats),
                })
                .collect(),
            config: s.config,
        })
        .collect();
    snap.conns = engine
        .conns(now)
        .into_iter()
        .map(|c| ConnRow {
            protocol: c.protocol,
            client: c.client,
            virt: c.virt,
            dest: c.real,
            state: c.state,
            expires_secs: u32::try_from(c.expires.secs()).unwrap_or(u32::MAX),
            pe: None,
        })
        .collect();
    snap.timeouts = engine.ipvsadm_timeouts();
    snap.daemons =
        director.daemons().iter().map(|d| DaemonRow::from_config(d, crate::sync::if_mtu(&d.mcast_ifn))).collect();
    let total = engine.total_stats();
    snap.total_stats = counters(&total);
    snap.total_rates = rates(&total);
    snap
}
