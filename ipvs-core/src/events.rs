//! Events for the embedder ([`Engine::poll_event`](crate::Engine::poll_event)): connections created and
//! expired, real servers overloaded and recovered.
//!
//! The queue is bounded ([`EngineConfig::event_capacity`](crate::EngineConfig::event_capacity)); when it is full
//! new events are counted and discarded, so an embedder that never polls costs nothing but the count. A
//! capacity of 0 turns events off (no lock is taken on the packet path then).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipvs_conn::ConnId;
use ipvs_proto::{DestId, Protocol};
use parking_lot::Mutex;

/// Something the embedder may want to know about.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A connection was created by the packet path (not a template; not a one-packet conn, which never enters
    /// the table).
    ConnCreated {
        /// Its handle.
        conn: ConnId,
        /// Transport protocol.
        protocol: Protocol,
        /// The client address and port.
        client: SocketAddr,
        /// The virtual address and port the client connected to.
        virt: SocketAddr,
        /// The real server address and port.
        real: SocketAddr,
        /// The real server.
        dest: DestId,
    },
    /// A connection or template left the table (timeout, reuse, removal, defense, flush).
    ConnExpired {
        /// Its (now stale) handle.
        conn: ConnId,
        /// Transport protocol (number 0 for fwmark templates).
        protocol: Protocol,
        /// The client address and port (the masked client network and port 0 for templates).
        client: SocketAddr,
        /// The virtual address and port.
        virt: SocketAddr,
        /// The real server it was bound to.
        dest: Option<DestId>,
        /// Whether it was a persistence template.
        template: bool,
    },
    /// A real server reached its upper connection threshold: schedulers skip it.
    DestOverloaded {
        /// The real server.
        dest: DestId,
    },
    /// A real server's OVERLOAD flag was cleared (lower threshold reached, or thresholds edited).
    DestRecovered {
        /// The real server.
        dest: DestId,
    },
}

/// The bounded event queue.
#[derive(Debug)]
pub(crate) struct EventQueue {
    capacity: usize,
    queue: Mutex<VecDeque<Event>>,
    discarded: AtomicU64,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, queue: Mutex::new(VecDeque::new()), discarded: AtomicU64::new(0) }
    }

    /// Whether events are on at all.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.capacity != 0
    }

    pub(crate) fn push(&self, event: Event) {
        if !self.enabled() {
            return;
        }
        let mut q = self.queue.lock();
        if q.len() < self.capacity {
            q.push_back(event);
        } else {
            self.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn pop(&self) -> Option<Event> {
        if !self.enabled() {
            return None;
        }
        self.queue.lock().pop_front()
    }

    pub(crate) fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_counted() {
        let q = EventQueue::new(2);
        for i in 0..5 {
            q.push(Event::DestOverloaded { dest: DestId(i) });
        }
        assert_eq!(q.pop(), Some(Event::DestOverloaded { dest: DestId(0) }));
        assert_eq!(q.pop(), Some(Event::DestOverloaded { dest: DestId(1) }));
        assert_eq!(q.pop(), None);
        assert_eq!(q.discarded(), 3);
        let off = EventQueue::new(0);
        off.push(Event::DestRecovered { dest: DestId(0) });
        assert_eq!((off.pop(), off.discarded()), (None, 0));
    }
}
