//! What `ipvs-sched` picks for the same clients in the same order: the expectation the real picks are
//! compared with.
//!
//! The service is configured as a rules file does it — `-A` binds the scheduler to an empty list, then each
//! `-a` adds its real server at the head of the list (the kernel's order) — and every pick is charged to
//! the chosen real server the way the director's engine does for the scenario's traffic: a TCP connection
//! is bound active, and has left ESTABLISHED (the real server closed it) before the client's next SYN
//! reaches the director (or, with [`Model::pick_held`], stays ESTABLISHED: active); a UDP connection is
//! bound inactive.

use std::net::SocketAddr;

use ipvs_core::proto::{DestId, Instant, Protocol};
use ipvs_core::sched::{
    new_scheduler, CounterChange, DestEvent, DestState, DestView, SchedConfig, SchedFlow, Scheduler,
};

/// A scheduler with its list of real servers and their counters.
#[derive(Debug)]
pub(crate) struct Model {
    sched: Box<dyn Scheduler>,
    /// The real servers, in list order (most recently added first).
    dests: Vec<(SocketAddr, DestState)>,
    views: Vec<DestView>,
}

impl Model {
    /// `-A -s SCHED` then `-a … -w W` for each `(real server, weight)` in file order.
    pub(crate) fn new(sched: &str, dests_in_file_order: &[(SocketAddr, u32)]) -> Self {
        let mut sched = new_scheduler(sched, &SchedConfig::default()).expect("a known scheduler");
        sched.bind(&[]);
        let mut m = Self { sched, dests: Vec::new(), views: Vec::new() };
        for &(addr, weight) in dests_in_file_order {
            m.dests.insert(0, (addr, DestState::new(weight, 0, 0).expect("no thresholds")));
            m.refresh();
            m.sched.dests_changed(&m.views, DestEvent::Added { index: 0 });
        }
        m
    }

    fn refresh(&mut self) {
        self.views = self
            .dests
            .iter()
            .enumerate()
            .map(|(i, (addr, st))| st.view(DestId(u32::try_from(i).expect("few dests")), *addr))
            .collect();
    }

    /// The real servers in list order.
    pub(crate) fn order(&self) -> Vec<SocketAddr> {
        self.dests.iter().map(|(a, _)| *a).collect()
    }

    /// The pick for a new connection from `client` to `virt`, charged as described in the module docs.
    pub(crate) fn pick(&mut self, protocol: Protocol, client: SocketAddr, virt: SocketAddr) -> SocketAddr {
        self.pick_held(protocol, client, virt, false)
    }

    /// As [`pick`](Self::pick); with `held`, a TCP connection that stays ESTABLISHED (active).
    pub(crate) fn pick_held(
        &mut self,
        protocol: Protocol,
        client: SocketAddr,
        virt: SocketAddr,
        held: bool,
    ) -> SocketAddr {
        let flow = SchedFlow { protocol, client, virt, fwmark: 0 };
        let i = self.sched.schedule(Instant::ZERO, &flow, &self.views).expect("a real server is available");
        let st = &mut self.dests[i].1;
        if protocol == Protocol::Tcp {
            st.bind_conn(true);
            if !held {
                st.conn_became_inactive();
            }
        } else {
            st.bind_conn(false);
        }
        self.refresh();
        self.sched.counters_changed(&self.views, CounterChange { index: i });
        self.dests[i].0
    }
}
