//! What `ipvsadm -L` / `-S` print, from the running director: the engine's [`ListingSnapshot`] (services with
//! their real servers' active / inactive / persistent conns, counters and rates, every conn, timeouts) plus
//! what only the director knows (its sync daemons, the `size=` it shows), rendered by `ipvs-core`'s ipvsadm
//! module.

use ipvs_core::ipvsadm::{DaemonRow, ListingSnapshot};

use crate::director::Director;

/// The whole listing state of `director` now: services with counters and rates, connections, timeouts and
/// sync daemons.
pub fn snapshot(director: &Director) -> ListingSnapshot {
    let mut snap = director.engine().listing_snapshot(director.now());
    snap.conn_table_size = director.options().conn_tab_size;
    snap.daemons =
        director.daemons().iter().map(|d| DaemonRow::from_config(d, crate::sync::if_mtu(&d.mcast_ifn))).collect();
    snap
}
