//! The TCP state machine (facts §5.2): eleven states, four events derived from the TCP flags, a normal and a
//! `secure_tcp` ("DoS") table, and per-state idle timeouts.

use super::{Direction, Transition};
use crate::time::Duration;

/// A TCP conn's state, in the kernel's numeric order (the value synced on the wire).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
#[repr(u8)]
pub enum TcpState {
    /// 0: just created, no packet seen yet.
    None = 0,
    /// 1: both sides have exchanged data-bearing ACKs.
    Established = 1,
    /// 2: the server side sent a SYN.
    SynSent = 2,
    /// 3: the client's SYN was seen.
    SynRecv = 3,
    /// 4: a FIN was seen from the server (or, without replies, from the client on an established conn).
    FinWait = 4,
    /// 5: both sides are closing.
    TimeWait = 5,
    /// 6: reset, or a packet without any of SYN/FIN/ACK/RST.
    Close = 6,
    /// 7: the client sent a FIN on an established conn.
    CloseWait = 7,
    /// 8: last ACK awaited.
    LastAck = 8,
    /// 9: forced by the FTP helper for an expected data conn.
    Listen = 9,
    /// 10: the server's SYN+ACK was seen (secure table only).
    Synack = 10,
}

/// Number of TCP states (the kernel's `IP_VS_TCP_S_LAST`).
pub const N_STATES: usize = 11;

impl TcpState {
    /// Every state, in numeric order.
    pub const ALL: [Self; N_STATES] = [
        Self::None,
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::Synack,
    ];

    /// The state with kernel value `value`, if there is one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        if (value as usize) < N_STATES {
            Some(Self::ALL[value as usize])
        } else {
            None
        }
    }

    /// The kernel value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name `/proc/net/ip_vs_conn` and `ipvsadm -L -c` print.
    pub const fn proc_name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait => "FIN_WAIT",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Synack => "SYNACK",
        }
    }

    /// Whether a conn in this state counts in the destination's `activeconns`: ESTABLISHED, SYN_SENT,
    /// SYN_RECV and SYNACK. Every other state counts in `inactconns`.
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Established | Self::SynSent | Self::SynRecv | Self::Synack)
    }
}

/// A TCP state-table event, with the kernel's column index.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[repr(u8)]
pub enum TcpEvent {
    /// SYN set (and RST clear) (0).
    Syn = 0,
    /// FIN set, SYN and RST clear (1).
    Fin = 1,
    /// ACK set, SYN, FIN and RST clear (2).
    Ack = 2,
    /// RST set (3).
    Rst = 3,
}

impl TcpEvent {
    /// The four events, in index order.
    pub const ALL: [Self; 4] = [Self::Syn, Self::Fin, Self::Ack, Self::Rst];

    /// The index of this event's row within a direction of the tables.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// TCP flag bits of the raw flags byte (offset 13 of the TCP header).
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The state-table event of a packet with TCP flags byte `flags` (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08,
/// ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80). Priority: RST, then SYN, then FIN, then ACK; `None` when none of
/// the four is set, in which case the conn goes to CLOSE.
pub const fn event_from_flags(flags: u8) -> Option<TcpEvent> {
    if flags & RST != 0 {
        Some(TcpEvent::Rst)
    } else if flags & SYN != 0 {
        Some(TcpEvent::Syn)
    } else if flags & FIN != 0 {
        Some(TcpEvent::Fin)
    } else if flags & ACK != 0 {
        Some(TcpEvent::Ack)
    } else {
        None
    }
}

/// Whether a packet with these flags is a "new connection" packet for port reuse (facts §4.1 step 5):
/// SYN set.
pub const fn is_new_conn_packet(flags: u8) -> bool {
    flags & SYN != 0
}

/// Whether a packet with these flags that matches no conn may create one (facts §4.3): SYN set and RST clear
/// (SYN+ACK included), or with `sloppy_tcp` any packet without RST.
pub const fn schedules_new_conn(flags: u8, sloppy_tcp: bool) -> bool {
    flags & RST == 0 && (sloppy_tcp || flags & SYN != 0)
}

/// Whether the `secure_tcp` sysctl value means the secure table is in use: 2 (automatic mode, currently
/// active) or 3 (always). The defense state machine (facts §11.2) keeps the sysctl at 2 only while memory is
/// short.
pub const fn secure_tcp_active(secure_tcp: u8) -> bool {
    secure_tcp >= 2
}

/// A state table: `[direction][event][current] → next`, indexed by [`Direction::as_u8`],
/// [`TcpEvent::index`] and [`TcpState::as_u8`].
pub type Table = [[[TcpState; N_STATES]; 4]; 3];

// NONE (NO) is never a next state, so it has no abbreviation here.
const ES: TcpState = TcpState::Established;
const SS: TcpState = TcpState::SynSent;
const SR: TcpState = TcpState::SynRecv;
const FW: TcpState = TcpState::FinWait;
const TW: TcpState = TcpState::TimeWait;
const CL: TcpState = TcpState::Close;
const CW: TcpState = TcpState::CloseWait;
const LA: TcpState = TcpState::LastAck;
const LI: TcpState = TcpState::Listen;
const SA: TcpState = TcpState::Synack;

/// The normal table (`secure_tcp` inactive), facts §5.2.
#[rustfmt::skip]
pub const NORMAL_TABLE: Table = [
    // INPUT          NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        /* syn */    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */    [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /* ack */    [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT
    [
        /* syn */    [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /* fin */    [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */    [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */    [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /* syn */    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */    [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */    [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The secure ("DoS") table, used while `secure_tcp` is active (value 2 or 3), facts §5.2.
#[rustfmt::skip]
pub const SECURE_TABLE: Table = [
    // INPUT          NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        /* syn */    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
        /* fin */    [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
        /* ack */    [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
        /* rst */    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
    // OUTPUT
    [
        /* syn */    [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
        /* fin */    [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */    [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */    [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /* syn */    [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
        /* fin */    [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */    [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The table in use: [`SECURE_TABLE`] if `secure`, else [`NORMAL_TABLE`].
pub const fn table(secure: bool) -> &'static Table {
    if secure {
        &SECURE_TABLE
    } else {
        &NORMAL_TABLE
    }
}

/// The state after a packet with `event` (see [`event_from_flags`]) travelling in `dir` hits a conn in
/// `current`. No event forces CLOSE. `secure` selects the `secure_tcp` table.
pub const fn next_state(current: TcpState, dir: Direction, event: Option<TcpEvent>, secure: bool) -> TcpState {
    match event {
        Some(event) => table(secure)[dir.as_u8() as usize][event.index()][current.as_u8() as usize],
        None => TcpState::Close,
    }
}

/// [`next_state`] with its side effects (facts §5.2): a change between an active state (ES, SS, SR, SA) and
/// an inactive one moves the destination's counters, and entering ESTABLISHED assures the template.
pub const fn transition(
    current: TcpState,
    dir: Direction,
    event: Option<TcpEvent>,
    secure: bool,
) -> Transition<TcpState> {
    let new_state = next_state(current, dir, event, secure);
    let changed = new_state as u8 != current as u8;
    let now_active = new_state.is_active();
    Transition {
        new_state,
        changed,
        now_active,
        active_changed: if changed && now_active != current.is_active() { Some(now_active) } else { None },
        assures_template: changed && matches!(new_state, TcpState::Established),
    }
}

/// Per-state idle timeouts of TCP conns (one table per network namespace; there are no per-service
/// timeouts).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct TcpTimeouts {
    table: [Duration; N_STATES],
}

impl TcpTimeouts {
    /// The kernel defaults: NONE 2 s, ESTABLISHED 900 s, SYN_SENT 120 s, SYN_RECV 60 s, FIN_WAIT 120 s,
    /// TIME_WAIT 120 s, CLOSE 10 s, CLOSE_WAIT 60 s, LAST_ACK 30 s, LISTEN 120 s, SYNACK 120 s.
    pub const DEFAULT: Self = Self {
        table: [
            Duration::from_secs(2),
            Duration::from_secs(900),
            Duration::from_secs(120),
            Duration::from_secs(60),
            Duration::from_secs(120),
            Duration::from_secs(120),
            Duration::from_secs(10),
            Duration::from_secs(60),
            Duration::from_secs(30),
            Duration::from_secs(120),
            Duration::from_secs(120),
        ],
    };

    /// The idle timeout of a conn in `state`.
    pub const fn timeout(&self, state: TcpState) -> Duration {
        self.table[state.as_u8() as usize]
    }

    /// Sets the idle timeout of `state`.
    pub fn set(&mut self, state: TcpState, timeout: Duration) {
        self.table[state.as_u8() as usize] = timeout;
    }

    /// `ipvsadm --set tcp tcpfin udp` for the TCP part (facts §13.3): `tcp` seconds become the ESTABLISHED
    /// timeout and `tcpfin` seconds the FIN_WAIT timeout; 0 leaves a value unchanged. No other state
    /// (TIME_WAIT included) is touched. The kernel's upper bound (`INT_MAX / HZ` seconds) is the caller's to
    /// check.
    pub fn set_from_ipvsadm(&mut self, tcp: u32, tcpfin: u32) {
        if tcp != 0 {
            self.set(TcpState::Established, Duration::from_secs(tcp as u64));
        }
        if tcpfin != 0 {
            self.set(TcpState::FinWait, Duration::from_secs(tcpfin as u64));
        }
    }

    /// The `(tcp, tcpfin)` pair `ipvsadm -L --timeout` prints: the ESTABLISHED and FIN_WAIT timeouts in
    /// whole seconds.
    pub const fn ipvsadm_values(&self) -> (u64, u64) {
        (self.timeout(TcpState::Established).secs(), self.timeout(TcpState::FinWait).secs())
    }
}

impl Default for TcpTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}
