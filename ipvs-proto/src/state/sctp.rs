//! The SCTP state machine (facts §5.4): fourteen states seen from the real server, ten events derived from
//! the chunk types, one table per direction and per-state idle timeouts. There is no secure table.

use super::{Direction, Transition};
use crate::time::Duration;

/// An SCTP conn's state, in the kernel's numeric order (the value synced on the wire).
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
#[repr(u8)]
pub enum SctpState {
    /// 0: just created, no packet seen yet.
    None = 0,
    /// 1: the client's first INIT was seen.
    Init1 = 1,
    /// 2: a repeated client INIT was seen.
    Init = 2,
    /// 3: the server's INIT-ACK was seen.
    CookieSent = 3,
    /// 4: the client's COOKIE-ECHO was seen.
    CookieReplied = 4,
    /// 5: the server side sent an INIT (handshake initiated by the server).
    CookieWait = 5,
    /// 6: server-initiated handshake, INIT-ACK seen.
    Cookie = 6,
    /// 7: server-initiated handshake, COOKIE-ECHO seen.
    CookieEchoed = 7,
    /// 8: the association is up.
    Established = 8,
    /// 9: the server sent SHUTDOWN.
    ShutdownSent = 9,
    /// 10: the client sent SHUTDOWN.
    ShutdownReceived = 10,
    /// 11: the server sent SHUTDOWN-ACK.
    ShutdownAckSent = 11,
    /// 12: the INIT was answered by ABORT.
    Rejected = 12,
    /// 13: the association is gone.
    Closed = 13,
}

/// Number of SCTP states (the kernel's `IP_VS_SCTP_S_LAST`).
pub const N_STATES: usize = 14;

/// Number of SCTP events.
pub const N_EVENTS: usize = 10;

impl SctpState {
    /// Every state, in numeric order.
    pub const ALL: [Self; N_STATES] = [
        Self::None,
        Self::Init1,
        Self::Init,
        Self::CookieSent,
        Self::CookieReplied,
        Self::CookieWait,
        Self::Cookie,
        Self::CookieEchoed,
        Self::Established,
        Self::ShutdownSent,
        Self::ShutdownReceived,
        Self::ShutdownAckSent,
        Self::Rejected,
        Self::Closed,
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
            Self::Init1 => "INIT1",
            Self::Init => "INIT",
            Self::CookieSent => "C-SENT",
            Self::CookieReplied => "C-REPLIED",
            Self::CookieWait => "C-WAIT",
            Self::Cookie => "COOKIE",
            Self::CookieEchoed => "C-ECHOED",
            Self::Established => "ESTABLISHED",
            Self::ShutdownSent => "S-SENT",
            Self::ShutdownReceived => "S-RECEIVED",
            Self::ShutdownAckSent => "S-ACK-SENT",
            Self::Rejected => "REJECTED",
            Self::Closed => "CLOSED",
        }
    }

    /// Whether a conn in this state counts in the destination's `activeconns`: only ESTABLISHED.
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Established)
    }
}

/// An SCTP state-table event, with the kernel's row index.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[repr(u8)]
pub enum SctpEvent {
    /// DATA, SACK, HEARTBEAT, HEARTBEAT-ACK, ECNE, CWR and every chunk type ≥ 15 (0).
    Data = 0,
    /// INIT (1).
    Init = 1,
    /// INIT-ACK (2).
    InitAck = 2,
    /// COOKIE-ECHO (3).
    CookieEcho = 3,
    /// COOKIE-ACK (4).
    CookieAck = 4,
    /// SHUTDOWN (5).
    Shutdown = 5,
    /// SHUTDOWN-ACK (6).
    ShutdownAck = 6,
    /// SHUTDOWN-COMPLETE (7).
    ShutdownComplete = 7,
    /// ERROR (8).
    Error = 8,
    /// ABORT (9).
    Abort = 9,
}

impl SctpEvent {
    /// The ten events, in index order.
    pub const ALL: [Self; N_EVENTS] = [
        Self::Data,
        Self::Init,
        Self::InitAck,
        Self::CookieEcho,
        Self::CookieAck,
        Self::Shutdown,
        Self::ShutdownAck,
        Self::ShutdownComplete,
        Self::Error,
        Self::Abort,
    ];

    /// The index of this event's row within a direction's table.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// SCTP chunk type ids (RFC 9260) that the event derivation distinguishes.
const INIT: u8 = 1;
const INIT_ACK: u8 = 2;
const ABORT: u8 = 6;
const SHUTDOWN: u8 = 7;
const SHUTDOWN_ACK: u8 = 8;
const ERROR: u8 = 9;
const COOKIE_ECHO: u8 = 10;
const COOKIE_ACK: u8 = 11;
const SHUTDOWN_COMPLETE: u8 = 14;

/// The event of one chunk type: INIT (1), INIT-ACK (2), ABORT (6), SHUTDOWN (7), SHUTDOWN-ACK (8),
/// ERROR (9), COOKIE-ECHO (10), COOKIE-ACK (11) and SHUTDOWN-COMPLETE (14) have their own events; every
/// other type (DATA, SACK, HEARTBEAT, HEARTBEAT-ACK, ECNE, CWR, ≥ 15) is [`SctpEvent::Data`].
pub const fn event_from_chunk(chunk_type: u8) -> SctpEvent {
    match chunk_type {
        INIT => SctpEvent::Init,
        INIT_ACK => SctpEvent::InitAck,
        ABORT => SctpEvent::Abort,
        SHUTDOWN => SctpEvent::Shutdown,
        SHUTDOWN_ACK => SctpEvent::ShutdownAck,
        ERROR => SctpEvent::Error,
        COOKIE_ECHO => SctpEvent::CookieEcho,
        COOKIE_ACK => SctpEvent::CookieAck,
        SHUTDOWN_COMPLETE => SctpEvent::ShutdownComplete,
        _ => SctpEvent::Data,
    }
}

/// The event of a packet (facts §5.4): the first chunk decides, except that a COOKIE-ECHO or COOKIE-ACK
/// followed by an ABORT is [`SctpEvent::Abort`]. `second_type` is the type of the chunk at offset
/// `ALIGN4(first chunk length)` after the first chunk's start, if the packet holds one; no other chunk is
/// looked at.
pub const fn event_from_chunks(first_type: u8, second_type: Option<u8>) -> SctpEvent {
    match (first_type, second_type) {
        (COOKIE_ECHO | COOKIE_ACK, Some(ABORT)) => SctpEvent::Abort,
        _ => event_from_chunk(first_type),
    }
}

/// Whether a packet whose first chunk has type `first_type` is a "new connection" packet for port reuse
/// (facts §4.1 step 5): an INIT.
pub const fn is_new_conn_packet(first_type: u8) -> bool {
    first_type == INIT
}

/// Whether a packet whose first chunk has type `first_type` that matches no conn may create one (facts §4.3):
/// an INIT, or with `sloppy_sctp` any chunk but ABORT.
pub const fn schedules_new_conn(first_type: u8, sloppy_sctp: bool) -> bool {
    first_type == INIT || (sloppy_sctp && first_type != ABORT)
}

/// A state table: `[direction][event][current] → next`, indexed by [`Direction::as_u8`],
/// [`SctpEvent::index`] and [`SctpState::as_u8`].
pub type Table = [[[SctpState; N_STATES]; N_EVENTS]; 3];

// NONE (NO) is never a next state, so it has no abbreviation here.
const I1: SctpState = SctpState::Init1;
const IN: SctpState = SctpState::Init;
const CS: SctpState = SctpState::CookieSent;
const CR: SctpState = SctpState::CookieReplied;
const CW: SctpState = SctpState::CookieWait;
const CO: SctpState = SctpState::Cookie;
const CE: SctpState = SctpState::CookieEchoed;
const ES: SctpState = SctpState::Established;
const SS: SctpState = SctpState::ShutdownSent;
const SR: SctpState = SctpState::ShutdownReceived;
const SA: SctpState = SctpState::ShutdownAckSent;
const RJ: SctpState = SctpState::Rejected;
const CL: SctpState = SctpState::Closed;

/// The SCTP transition table, facts §5.4 (INPUT, OUTPUT, INPUT_ONLY).
#[rustfmt::skip]
pub const TABLE: Table = [
    // INPUT         NO  I1  IN  CS  CR  CW  CO  CE  ES  SS  SR  SA  RJ  CL
    [
        /* d   */   [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* i   */   [I1, IN, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, IN, IN],
        /* i_a */   [CW, CW, CW, CS, CR, CO, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_e */   [CR, IN, IN, CR, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_a */   [ES, I1, IN, CS, CR, CW, CO, ES, ES, SS, SR, SA, RJ, CL],
        /* s   */   [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],
        /* s_a */   [CL, IN, IN, CS, CR, CW, CO, CE, ES, CL, SR, CL, RJ, CL],
        /* s_c */   [CL, CL, CL, CS, CR, CW, CO, CE, ES, SS, SR, CL, RJ, CL],
        /* err */   [CL, I1, IN, CS, CR, CW, CO, CL, ES, SS, SR, SA, RJ, CL],
        /* ab  */   [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
    // OUTPUT
    [
        /* d   */   [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* i   */   [CW, CW, CW, CW, CW, CW, CW, CW, ES, CW, CW, CW, CW, CW],
        /* i_a */   [CS, CS, CS, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_e */   [CE, CE, CE, CE, CE, CE, CE, CE, ES, SS, SR, SA, RJ, CL],
        /* c_a */   [ES, ES, ES, ES, ES, ES, ES, ES, ES, SS, SR, SA, RJ, CL],
        /* s   */   [SS, SS, SS, SS, SS, SS, SS, SS, SS, SS, SR, SA, RJ, CL],
        /* s_a */   [SA, SA, SA, SA, SA, CW, CO, CE, ES, SA, SA, SA, RJ, CL],
        /* s_c */   [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* err */   [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* ab  */   [CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /* d   */   [ES, I1, IN, CS, CR, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* i   */   [I1, IN, IN, IN, IN, IN, CO, CE, ES, SS, SR, SA, IN, IN],
        /* i_a */   [CE, CE, CE, CE, CE, CE, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_e */   [ES, ES, ES, ES, ES, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* c_a */   [ES, I1, IN, ES, ES, CW, ES, ES, ES, SS, SR, SA, RJ, CL],
        /* s   */   [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],
        /* s_a */   [CL, IN, IN, CS, CR, CW, CO, CE, CL, CL, SR, CL, RJ, CL],
        /* s_c */   [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, CL, CL, RJ, CL],
        /* err */   [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /* ab  */   [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
];

/// The state after a packet with `event` (see [`event_from_chunks`]) travelling in `dir` hits a conn in
/// `current`.
pub const fn next_state(current: SctpState, dir: Direction, event: SctpEvent) -> SctpState {
    TABLE[dir.as_u8() as usize][event.index()][current.as_u8() as usize]
}

/// [`next_state`] with its side effects: a change into or out of ESTABLISHED (the only active state) moves
/// the destination's counters, and entering ESTABLISHED assures the template.
pub const fn transition(current: SctpState, dir: Direction, event: SctpEvent) -> Transition<SctpState> {
    let new_state = next_state(current, dir, event);
    let changed = new_state as u8 != current as u8;
    let now_active = new_state.is_active();
    Transition {
        new_state,
        changed,
        now_active,
        active_changed: if changed && now_active != current.is_active() { Some(now_active) } else { None },
        assures_template: changed && now_active,
    }
}

/// Per-state idle timeouts of SCTP conns (one table per network namespace). `ipvsadm --set` does not touch
/// them.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct SctpTimeouts {
    table: [Duration; N_STATES],
}

impl SctpTimeouts {
    /// The kernel defaults: NONE 2 s, INIT1 4 s, REJECTED 4 s, ESTABLISHED 900 s, every other state 61 s
    /// (the maximum RTO, 60 s, plus 1 s).
    pub const DEFAULT: Self = {
        let max_rto = Duration::from_secs(61);
        Self {
            table: [
                Duration::from_secs(2),
                Duration::from_secs(4),
                max_rto,
                max_rto,
                max_rto,
                max_rto,
                max_rto,
                max_rto,
                Duration::from_secs(900),
                max_rto,
                max_rto,
                max_rto,
                Duration::from_secs(4),
                max_rto,
            ],
        }
    };

    /// The idle timeout of a conn in `state`.
    pub const fn timeout(&self, state: SctpState) -> Duration {
        self.table[state.as_u8() as usize]
    }

    /// Sets the idle timeout of `state`.
    pub fn set(&mut self, state: SctpState, timeout: Duration) {
        self.table[state.as_u8() as usize] = timeout;
    }
}

impl Default for SctpTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}
