//! The kernel's `drop_entry` defense (facts §3.9): which entries a random scan may drop.

use ipvs_proto::state::{SctpState, TcpState};
use ipvs_proto::{ConnFlags, Protocol};

use crate::entry::{Meta, TEMPLATE_ASSURED};

/// State of the random entry drop, owned by the caller: the sampling RNG and the kernel's nine `todrop_counter`s.
///
/// Create one per table with a seed from the embedder's RNG and pass it to every
/// [`drop_entry`](crate::ConnTable::drop_entry) call (once per second while the defense is active).
#[derive(Clone, Debug)]
pub struct DropEntry {
    rng: u64,
    /// `todrop_counter[i]` for conns with `in_pkts == i`.
    counters: [i8; 9],
}

impl DropEntry {
    /// A fresh state whose sampling is driven by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { rng: seed, counters: [0; 9] }
    }

    /// The next pseudo-random number (SplitMix64).
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The kernel's `todrop_entry`: never an entry restarted less than 60 s ago, never one with `in_pkts` outside
    /// 1..=8; otherwise an entry with `in_pkts == i` is dropped every i-th time one is considered (the counter is
    /// shared by all entries with the same `i`).
    pub(crate) fn todrop(&mut self, now_ms: u64, m: &Meta) -> bool {
        let last_touch = m.expires.get().saturating_sub(u64::from(m.timeout));
        if now_ms < last_touch.saturating_add(60_000) {
            return false;
        }
        let i = m.in_pkts as usize;
        let Some(counter) = self.counters.get_mut(i) else {
            return false;
        };
        if i == 0 {
            return false;
        }
        *counter -= 1;
        if *counter > 0 {
            return false;
        }
        // `i` is at most 8 here (the `get_mut` above), so it fits.
        *counter = i as i8;
        true
    }
}

/// What the scan does with one entry that controls nothing.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Verdict {
    /// Dropped.
    Drop,
    /// Subject to [`DropEntry::todrop`].
    TryDrop,
    /// Kept.
    Keep,
}

/// The per-kind rule of facts §3.9. `ops_template` says whether a template belongs to a one-packet service.
pub(crate) fn verdict(m: &Meta, ops_template: impl FnOnce() -> bool) -> Verdict {
    if m.flags & ConnFlags::TEMPLATE.0 != 0 {
        return if ops_template() {
            Verdict::TryDrop
        } else if m.state & TEMPLATE_ASSURED == 0 {
            Verdict::Drop
        } else {
            Verdict::Keep
        };
    }
    match Protocol::from(m.protocol) {
        Protocol::Tcp => match TcpState::from_u8(m.state) {
            Some(TcpState::SynRecv | TcpState::Synack) => Verdict::Drop,
            Some(TcpState::Established) => Verdict::TryDrop,
            _ => Verdict::Keep,
        },
        Protocol::Sctp => match SctpState::from_u8(m.state) {
            Some(SctpState::Init1 | SctpState::Init) => Verdict::Drop,
            Some(SctpState::Established) => Verdict::TryDrop,
            _ => Verdict::Keep,
        },
        _ => Verdict::TryDrop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(protocol: Protocol, state: u8, flags: ConnFlags) -> Meta {
        Meta { protocol: u8::from(protocol), state, flags: flags.0, ..Meta::default() }
    }

    #[test]
    fn rules_per_kind() {
        use Verdict::*;
        let t = |s: TcpState| verdict(&meta(Protocol::Tcp, s.as_u8(), ConnFlags::EMPTY), || false);
        assert_eq!(t(TcpState::SynRecv), Drop);
        assert_eq!(t(TcpState::Synack), Drop);
        assert_eq!(t(TcpState::Established), TryDrop);
        for s in [TcpState::None, TcpState::FinWait, TcpState::TimeWait, TcpState::Close, TcpState::SynSent] {
            assert_eq!(t(s), Keep, "{s:?}");
        }
        let s = |st: SctpState| verdict(&meta(Protocol::Sctp, st.as_u8(), ConnFlags::EMPTY), || false);
        assert_eq!(s(SctpState::Init1), Drop);
        assert_eq!(s(SctpState::Init), Drop);
        assert_eq!(s(SctpState::Established), TryDrop);
        assert_eq!(s(SctpState::Closed), Keep);
        assert_eq!(verdict(&meta(Protocol::Udp, 0, ConnFlags::EMPTY), || false), TryDrop);
        let tpl = meta(Protocol::Tcp, 0, ConnFlags::TEMPLATE);
        assert_eq!(verdict(&tpl, || false), Drop);
        assert_eq!(verdict(&tpl, || true), TryDrop);
        let assured = meta(Protocol::Tcp, TEMPLATE_ASSURED, ConnFlags::TEMPLATE);
        assert_eq!(verdict(&assured, || false), Keep);
    }

    #[test]
    fn todrop_rates_and_the_60_s_rule() {
        let mut d = DropEntry::new(1);
        let mut m = Meta { timeout: 10_000, in_pkts: 3, ..Meta::default() };
        m.expires.set(100_000); // last touch at 90 s
        assert!(!d.todrop(149_999, &m), "touched less than 60 s ago");
        // in_pkts 3: dropped the first time, then every third time.
        let got: Vec<bool> = (0..7).map(|_| d.todrop(150_000, &m)).collect();
        assert_eq!(got, [true, false, false, true, false, false, true]);
        m.in_pkts = 0;
        assert!(!d.todrop(1_000_000, &m), "no packets: never");
        m.in_pkts = 9;
        assert!(!d.todrop(1_000_000, &m), "more than 8 packets: never");
        m.in_pkts = 1;
        assert!(d.todrop(1_000_000, &m) && d.todrop(1_000_000, &m), "one packet: always");
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = DropEntry::new(42);
        let mut b = DropEntry::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
