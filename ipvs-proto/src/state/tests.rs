//! Unit tests of the state machines. The tables are checked cell by cell against the facts reference's
//! markdown tables, pasted below verbatim and parsed here, independently of the crate's own `const` tables.

use alloc::vec::Vec;

use super::sctp::{self, SctpEvent, SctpState, SctpTimeouts};
use super::tcp::{self, TcpEvent, TcpState, TcpTimeouts};
use super::udp::{self, UdpState, UdpTimeouts};
use super::*;
use crate::time::Duration;
use crate::ConnFlags;

/// Copied verbatim from facts §5.2, "Normal table".
const TCP_NORMAL_MD: &str = r"
| dir | event \ current | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| INPUT | syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| INPUT | fin | CL | CW | SS | TW | TW | TW | CL | CW | LA | LI | TW |
| INPUT | ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| INPUT | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | SR |
| OUTPUT | syn | SS | ES | SS | SR | SS | SS | SS | SS | SS | LI | SR |
| OUTPUT | fin | TW | FW | SS | TW | FW | TW | CL | TW | LA | LI | TW |
| OUTPUT | ack | ES | ES | SS | ES | FW | TW | CL | CW | LA | ES | ES |
| OUTPUT | rst | CL | CL | SS | CL | CL | TW | CL | CL | CL | CL | CL |
| INPUT_ONLY | syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| INPUT_ONLY | fin | CL | FW | SS | TW | FW | TW | CL | CW | LA | LI | TW |
| INPUT_ONLY | ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| INPUT_ONLY | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
";

/// Copied verbatim from facts §5.2, "Secure ("DoS") table".
const TCP_SECURE_MD: &str = r"
| dir | event \ current | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| INPUT | syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SA |
| INPUT | fin | CL | CW | SS | TW | TW | TW | CL | CW | LA | LI | SA |
| INPUT | ack | ES | ES | SS | SR | FW | TW | CL | CW | CL | LI | SA |
| INPUT | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
| OUTPUT | syn | SS | ES | SS | SA | SS | SS | SS | SS | SS | LI | SA |
| OUTPUT | fin | TW | FW | SS | TW | FW | TW | CL | TW | LA | LI | TW |
| OUTPUT | ack | ES | ES | SS | ES | FW | TW | CL | CW | LA | ES | ES |
| OUTPUT | rst | CL | CL | SS | CL | CL | TW | CL | CL | CL | CL | CL |
| INPUT_ONLY | syn | SA | ES | ES | SR | SA | SA | SA | SA | SA | SA | SA |
| INPUT_ONLY | fin | CL | FW | SS | TW | FW | TW | CL | CW | LA | LI | TW |
| INPUT_ONLY | ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| INPUT_ONLY | rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
";

/// Copied verbatim from facts §5.4, "INPUT:".
const SCTP_INPUT_MD: &str = r"
| ev \ cur | NO | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| d | ES | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| i | I1 | IN | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | IN | IN |
| i_a | CW | CW | CW | CS | CR | CO | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_e | CR | IN | IN | CR | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_a | ES | I1 | IN | CS | CR | CW | CO | ES | ES | SS | SR | SA | RJ | CL |
| s | SR | I1 | IN | CS | CR | CW | CO | CE | SR | SS | SR | SA | RJ | CL |
| s_a | CL | IN | IN | CS | CR | CW | CO | CE | ES | CL | SR | CL | RJ | CL |
| s_c | CL | CL | CL | CS | CR | CW | CO | CE | ES | SS | SR | CL | RJ | CL |
| err | CL | I1 | IN | CS | CR | CW | CO | CL | ES | SS | SR | SA | RJ | CL |
| ab | CL | CL | CL | CL | CL | RJ | CL | CL | CL | CL | CL | CL | CL | CL |
";

/// Copied verbatim from facts §5.4, "OUTPUT:".
const SCTP_OUTPUT_MD: &str = r"
| ev \ cur | NO | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| d | ES | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| i | CW | CW | CW | CW | CW | CW | CW | CW | ES | CW | CW | CW | CW | CW |
| i_a | CS | CS | CS | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_e | CE | CE | CE | CE | CE | CE | CE | CE | ES | SS | SR | SA | RJ | CL |
| c_a | ES | ES | ES | ES | ES | ES | ES | ES | ES | SS | SR | SA | RJ | CL |
| s | SS | SS | SS | SS | SS | SS | SS | SS | SS | SS | SR | SA | RJ | CL |
| s_a | SA | SA | SA | SA | SA | CW | CO | CE | ES | SA | SA | SA | RJ | CL |
| s_c | CL | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| err | CL | CL | CL | CL | CL | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| ab | CL | RJ | CL | CL | CL | CL | CL | CL | CL | CL | CL | CL | CL | CL |
";

/// Copied verbatim from facts §5.4, "INPUT_ONLY:".
const SCTP_INPUT_ONLY_MD: &str = r"
| ev \ cur | NO | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| d | ES | I1 | IN | CS | CR | ES | CO | CE | ES | SS | SR | SA | RJ | CL |
| i | I1 | IN | IN | IN | IN | IN | CO | CE | ES | SS | SR | SA | IN | IN |
| i_a | CE | CE | CE | CE | CE | CE | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_e | ES | ES | ES | ES | ES | ES | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_a | ES | I1 | IN | ES | ES | CW | ES | ES | ES | SS | SR | SA | RJ | CL |
| s | SR | I1 | IN | CS | CR | CW | CO | CE | SR | SS | SR | SA | RJ | CL |
| s_a | CL | IN | IN | CS | CR | CW | CO | CE | CL | CL | SR | CL | RJ | CL |
| s_c | CL | CL | CL | CL | CL | CW | CO | CE | ES | SS | CL | CL | RJ | CL |
| err | CL | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| ab | CL | CL | CL | CL | CL | RJ | CL | CL | CL | CL | CL | CL | CL | CL |
";

/// The cells of one markdown table row, trimmed, without the outer pipes.
fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// Data rows of a markdown table: the header's cells and every row after the `|---|` separator.
fn rows(md: &str) -> (Vec<&str>, Vec<Vec<&str>>) {
    let mut lines = md.lines().filter(|l| l.starts_with('|'));
    let header = cells(lines.next().expect("header row"));
    let sep = lines.next().expect("separator row");
    assert!(sep.starts_with("|---"), "{sep}");
    (header, lines.map(cells).collect())
}

/// Position of `abbrev` among the column headers (which the facts list in numeric state order).
fn column(header: &[&str], first_state_col: usize, abbrev: &str) -> u8 {
    let pos = header[first_state_col..].iter().position(|h| *h == abbrev);
    u8::try_from(pos.unwrap_or_else(|| panic!("unknown abbreviation {abbrev}"))).unwrap()
}

fn dir_named(name: &str) -> Direction {
    match name {
        "INPUT" => Direction::Input,
        "OUTPUT" => Direction::Output,
        "INPUT_ONLY" => Direction::InputOnly,
        _ => panic!("unknown direction {name}"),
    }
}

/// Checks one TCP table against its markdown; returns the number of cells compared.
fn check_tcp_table(md: &str, secure: bool) -> usize {
    let (header, rows) = rows(md);
    assert_eq!(header.len(), 2 + 11);
    let mut n = 0;
    for row in &rows {
        assert_eq!(row.len(), 13, "{row:?}");
        let dir = dir_named(row[0]);
        let event = match row[1] {
            "syn" => TcpEvent::Syn,
            "fin" => TcpEvent::Fin,
            "ack" => TcpEvent::Ack,
            "rst" => TcpEvent::Rst,
            other => panic!("unknown event {other}"),
        };
        for (i, cell) in row[2..].iter().enumerate() {
            let current = TcpState::from_u8(u8::try_from(i).unwrap()).unwrap();
            let want = TcpState::from_u8(column(&header, 2, cell)).unwrap();
            let got = tcp::next_state(current, dir, Some(event), secure);
            assert_eq!(got, want, "secure={secure} {} {} at {}", row[0], row[1], header[2 + i]);
            n += 1;
        }
    }
    n
}

#[test]
fn tcp_normal_table_every_cell() {
    assert_eq!(check_tcp_table(TCP_NORMAL_MD, false), 132);
}

#[test]
fn tcp_secure_table_every_cell() {
    assert_eq!(check_tcp_table(TCP_SECURE_MD, true), 132);
}

#[test]
fn tcp_column_abbreviations_are_the_states_in_order() {
    let (header, _) = rows(TCP_NORMAL_MD);
    let names = [
        "NONE",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "SYNACK",
    ];
    for (i, abbrev) in header[2..].iter().enumerate() {
        let state = TcpState::from_u8(u8::try_from(i).unwrap()).unwrap();
        assert_eq!(state.proc_name(), names[i], "{abbrev}");
        // Each abbreviation is the initials of the proc name (NO=NONE, CW=CLOSE_WAIT, SA=SYNACK...).
        assert!(state.proc_name().starts_with(&abbrev[..1]), "{abbrev} {}", state.proc_name());
    }
}

/// Where the secure table differs from the normal one, read off the two facts tables. The facts' prose list
/// of differences misses three cells at SYNACK that its tables show: INPUT rst (normal SR, secure CL),
/// OUTPUT syn and INPUT_ONLY syn (normal SR, secure SA).
#[test]
fn tcp_secure_differs_from_normal_exactly_here() {
    use Direction::{Input, InputOnly, Output};
    use TcpEvent::{Ack, Fin, Rst, Syn};
    use TcpState as S;
    let mut want = alloc::vec![
        (Input, Ack, S::SynRecv),
        (Output, Syn, S::SynRecv),
        (Input, Syn, S::Synack),
        (Input, Fin, S::Synack),
        (Input, Ack, S::Synack),
        (Input, Rst, S::Synack),
        (Output, Syn, S::Synack),
    ];
    for s in [S::None, S::FinWait, S::TimeWait, S::Close, S::CloseWait, S::LastAck, S::Listen, S::Synack] {
        want.push((InputOnly, Syn, s));
    }
    let mut got = Vec::new();
    for dir in Direction::ALL {
        for ev in TcpEvent::ALL {
            for s in TcpState::ALL {
                if tcp::next_state(s, dir, Some(ev), false) != tcp::next_state(s, dir, Some(ev), true) {
                    got.push((dir, ev, s));
                }
            }
        }
    }
    let key = |x: &(Direction, TcpEvent, TcpState)| (x.0.as_u8(), x.1.index(), x.2.as_u8());
    want.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, want);
}

#[test]
fn tcp_no_event_is_close() {
    for secure in [false, true] {
        for dir in Direction::ALL {
            for s in TcpState::ALL {
                assert_eq!(tcp::next_state(s, dir, None, secure), TcpState::Close);
            }
        }
    }
}

#[test]
fn tcp_event_from_every_flag_byte() {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    for flags in 0..=u8::MAX {
        let want = if flags & RST != 0 {
            Some(TcpEvent::Rst)
        } else if flags & SYN != 0 {
            Some(TcpEvent::Syn)
        } else if flags & FIN != 0 {
            Some(TcpEvent::Fin)
        } else if flags & ACK != 0 {
            Some(TcpEvent::Ack)
        } else {
            None
        };
        assert_eq!(tcp::event_from_flags(flags), want, "flags {flags:#010b}");
    }
    // PSH, URG, ECE and CWR alone are no event.
    for flags in [0x08, 0x20, 0x40, 0x80, 0xe8] {
        assert_eq!(tcp::event_from_flags(flags), None, "flags {flags:#010b}");
    }
    assert_eq!(tcp::event_from_flags(SYN | ACK), Some(TcpEvent::Syn));
    assert_eq!(tcp::event_from_flags(FIN | ACK), Some(TcpEvent::Fin));
    assert_eq!(tcp::event_from_flags(RST | ACK), Some(TcpEvent::Rst));
    assert_eq!(tcp::event_from_flags(SYN | FIN | RST | ACK), Some(TcpEvent::Rst));
}

#[test]
fn tcp_new_conn_predicates() {
    for flags in 0..=u8::MAX {
        let syn = flags & 0x02 != 0;
        let rst = flags & 0x04 != 0;
        assert_eq!(tcp::is_new_conn_packet(flags), syn, "{flags:#010b}");
        assert_eq!(tcp::schedules_new_conn(flags, false), syn && !rst, "{flags:#010b}");
        assert_eq!(tcp::schedules_new_conn(flags, true), !rst, "{flags:#010b}");
    }
}

#[test]
fn tcp_states_numbers_names_and_active_set() {
    let want = [
        ("NONE", false),
        ("ESTABLISHED", true),
        ("SYN_SENT", true),
        ("SYN_RECV", true),
        ("FIN_WAIT", false),
        ("TIME_WAIT", false),
        ("CLOSE", false),
        ("CLOSE_WAIT", false),
        ("LAST_ACK", false),
        ("LISTEN", false),
        ("SYNACK", true),
    ];
    for (i, (name, active)) in want.iter().enumerate() {
        let v = u8::try_from(i).unwrap();
        let s = TcpState::from_u8(v).unwrap();
        assert_eq!(s.as_u8(), v);
        assert_eq!(s as u8, v);
        assert_eq!(s.proc_name(), *name);
        assert_eq!(s.is_active(), *active, "{name}");
        assert_eq!(TcpState::ALL[i], s);
    }
    assert_eq!(TcpState::from_u8(11), None);
    assert_eq!(TcpState::from_u8(255), None);
}

#[test]
fn tcp_timeout_defaults() {
    let t = TcpTimeouts::default();
    let want = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];
    for (s, secs) in TcpState::ALL.into_iter().zip(want) {
        assert_eq!(t.timeout(s), Duration::from_secs(secs), "{}", s.proc_name());
    }
    assert_eq!(t, TcpTimeouts::DEFAULT);
    assert_eq!(t.ipvsadm_values(), (900, 120));
}

#[test]
fn ipvsadm_set_changes_established_and_fin_wait_only() {
    // `ipvsadm --set 1800 90 200`, as in testdata/kernel-6.1/ipvsadm-listings.txt ("1800 90 200" read back).
    let mut t = TcpTimeouts::default();
    let mut u = UdpTimeouts::default();
    t.set_from_ipvsadm(1800, 90);
    u.set_from_ipvsadm(200);
    assert_eq!(t.ipvsadm_values(), (1800, 90));
    assert_eq!(u.ipvsadm_value(), 200);
    assert_eq!(t.timeout(TcpState::Established), Duration::from_secs(1800));
    assert_eq!(t.timeout(TcpState::FinWait), Duration::from_secs(90));
    assert_eq!(u.timeout(UdpState::Normal), Duration::from_secs(200));
    for s in TcpState::ALL {
        if !matches!(s, TcpState::Established | TcpState::FinWait) {
            assert_eq!(t.timeout(s), TcpTimeouts::DEFAULT.timeout(s), "{} must not change", s.proc_name());
        }
    }
    // TIME_WAIT in particular stays at 120 s (facts §13.3: TCPFIN → FIN_WAIT only).
    assert_eq!(t.timeout(TcpState::TimeWait), Duration::from_secs(120));

    // 0 leaves a value unchanged.
    t.set_from_ipvsadm(0, 0);
    u.set_from_ipvsadm(0);
    assert_eq!(t.ipvsadm_values(), (1800, 90));
    assert_eq!(u.ipvsadm_value(), 200);
    t.set_from_ipvsadm(0, 30);
    assert_eq!(t.ipvsadm_values(), (1800, 30));
    t.set_from_ipvsadm(60, 0);
    assert_eq!(t.ipvsadm_values(), (60, 30));

    // Other states (TIME_WAIT included) are reachable only through set().
    t.set(TcpState::TimeWait, Duration::from_secs(5));
    assert_eq!(t.timeout(TcpState::TimeWait), Duration::from_secs(5));
}

#[test]
fn tcp_transition_side_effects() {
    for secure in [false, true] {
        for dir in Direction::ALL {
            for ev in TcpEvent::ALL.map(Some).into_iter().chain([None]) {
                for s in TcpState::ALL {
                    let t = tcp::transition(s, dir, ev, secure);
                    assert_eq!(t.new_state, tcp::next_state(s, dir, ev, secure));
                    assert_eq!(t.changed, t.new_state != s);
                    assert_eq!(t.now_active, t.new_state.is_active());
                    let flip = t.changed && s.is_active() != t.new_state.is_active();
                    assert_eq!(t.active_changed, flip.then_some(t.new_state.is_active()));
                    assert_eq!(t.assures_template, t.changed && t.new_state == TcpState::Established);
                    // With the INACTIVE flag tracking the old state, the kernel's flag rule agrees.
                    assert_eq!(t.counter_flip(!s.is_active()), t.active_changed);
                }
            }
        }
    }
    // Client ACK completing the handshake: SR → ES, active both, template assured.
    let t = tcp::transition(TcpState::SynRecv, Direction::Input, Some(TcpEvent::Ack), false);
    assert_eq!(
        (t.new_state, t.changed, t.active_changed, t.assures_template),
        (TcpState::Established, true, None, true)
    );
    // ES + ack stays ES: nothing to do (the template was assured when ES was entered).
    let t = tcp::transition(TcpState::Established, Direction::Input, Some(TcpEvent::Ack), false);
    assert_eq!((t.changed, t.active_changed, t.assures_template), (false, None, false));
    // ES → CLOSE_WAIT on a client FIN: active → inactive.
    let t = tcp::transition(TcpState::Established, Direction::Input, Some(TcpEvent::Fin), false);
    assert_eq!((t.new_state, t.active_changed), (TcpState::CloseWait, Some(false)));
    // A fresh conn: NONE (counted inactive) + SYN → SYN_RECV, inactive → active.
    let t = tcp::transition(TcpState::None, Direction::Input, Some(TcpEvent::Syn), false);
    assert_eq!((t.new_state, t.active_changed, t.counter_flip(true)), (TcpState::SynRecv, Some(true), Some(true)));
    // The flag rule: a conn already counted active does not move again.
    assert_eq!(t.counter_flip(false), None);
}

#[test]
fn secure_tcp_levels() {
    assert!(!tcp::secure_tcp_active(0));
    assert!(!tcp::secure_tcp_active(1));
    assert!(tcp::secure_tcp_active(2));
    assert!(tcp::secure_tcp_active(3));
    assert_eq!(*tcp::table(true), tcp::SECURE_TABLE);
    assert_eq!(*tcp::table(false), tcp::NORMAL_TABLE);
}

/// Checks one SCTP direction's table against its markdown; returns the number of cells compared.
fn check_sctp_table(md: &str, dir: Direction) -> usize {
    let (header, rows) = rows(md);
    assert_eq!(header.len(), 1 + 14);
    assert_eq!(rows.len(), 10);
    let mut n = 0;
    for row in &rows {
        assert_eq!(row.len(), 15, "{row:?}");
        let event = match row[0] {
            "d" => SctpEvent::Data,
            "i" => SctpEvent::Init,
            "i_a" => SctpEvent::InitAck,
            "c_e" => SctpEvent::CookieEcho,
            "c_a" => SctpEvent::CookieAck,
            "s" => SctpEvent::Shutdown,
            "s_a" => SctpEvent::ShutdownAck,
            "s_c" => SctpEvent::ShutdownComplete,
            "err" => SctpEvent::Error,
            "ab" => SctpEvent::Abort,
            other => panic!("unknown event {other}"),
        };
        for (i, cell) in row[1..].iter().enumerate() {
            let current = SctpState::from_u8(u8::try_from(i).unwrap()).unwrap();
            let want = SctpState::from_u8(column(&header, 1, cell)).unwrap();
            let got = sctp::next_state(current, dir, event);
            assert_eq!(got, want, "{} {} at {}", dir.name(), row[0], header[1 + i]);
            n += 1;
        }
    }
    n
}

#[test]
fn sctp_input_table_every_cell() {
    assert_eq!(check_sctp_table(SCTP_INPUT_MD, Direction::Input), 140);
}

#[test]
fn sctp_output_table_every_cell() {
    assert_eq!(check_sctp_table(SCTP_OUTPUT_MD, Direction::Output), 140);
}

#[test]
fn sctp_input_only_table_every_cell() {
    assert_eq!(check_sctp_table(SCTP_INPUT_ONLY_MD, Direction::InputOnly), 140);
}

#[test]
fn sctp_states_numbers_names_timeouts_and_active_set() {
    let want = [
        ("NONE", 2),
        ("INIT1", 4),
        ("INIT", 61),
        ("C-SENT", 61),
        ("C-REPLIED", 61),
        ("C-WAIT", 61),
        ("COOKIE", 61),
        ("C-ECHOED", 61),
        ("ESTABLISHED", 900),
        ("S-SENT", 61),
        ("S-RECEIVED", 61),
        ("S-ACK-SENT", 61),
        ("REJECTED", 4),
        ("CLOSED", 61),
    ];
    let t = SctpTimeouts::default();
    for (i, (name, secs)) in want.iter().enumerate() {
        let v = u8::try_from(i).unwrap();
        let s = SctpState::from_u8(v).unwrap();
        assert_eq!(s.as_u8(), v);
        assert_eq!(s.proc_name(), *name);
        assert_eq!(t.timeout(s), Duration::from_secs(*secs), "{name}");
        assert_eq!(s.is_active(), *name == "ESTABLISHED", "{name}");
        assert_eq!(SctpState::ALL[i], s);
    }
    assert_eq!(SctpState::from_u8(14), None);
    let mut t = t;
    t.set(SctpState::Closed, Duration::from_secs(1));
    assert_eq!(t.timeout(SctpState::Closed), Duration::from_secs(1));
}

/// The facts' chunk type → event table (§5.4), transcribed independently.
fn facts_chunk_event(chunk_type: u8) -> SctpEvent {
    match chunk_type {
        0 | 3 | 4 | 5 | 12 | 13 => SctpEvent::Data,
        15.. => SctpEvent::Data,
        1 => SctpEvent::Init,
        2 => SctpEvent::InitAck,
        10 => SctpEvent::CookieEcho,
        11 => SctpEvent::CookieAck,
        7 => SctpEvent::Shutdown,
        8 => SctpEvent::ShutdownAck,
        14 => SctpEvent::ShutdownComplete,
        9 => SctpEvent::Error,
        6 => SctpEvent::Abort,
    }
}

#[test]
fn sctp_event_indices() {
    for (i, ev) in SctpEvent::ALL.iter().enumerate() {
        assert_eq!(ev.index(), i);
    }
}

#[test]
fn sctp_event_from_every_chunk_pair() {
    const ABORT: u8 = 6;
    const COOKIE_ECHO: u8 = 10;
    const COOKIE_ACK: u8 = 11;
    for first in 0..=u8::MAX {
        assert_eq!(sctp::event_from_chunk(first), facts_chunk_event(first), "chunk {first}");
        assert_eq!(sctp::event_from_chunks(first, None), facts_chunk_event(first), "chunk {first}");
        for second in 0..=u8::MAX {
            let want = if (first == COOKIE_ECHO || first == COOKIE_ACK) && second == ABORT {
                SctpEvent::Abort
            } else {
                facts_chunk_event(first)
            };
            assert_eq!(sctp::event_from_chunks(first, Some(second)), want, "chunks {first}+{second}");
        }
    }
    // Only COOKIE_ECHO/COOKIE_ACK look at the next chunk: DATA+ABORT and INIT+ABORT keep their first event.
    assert_eq!(sctp::event_from_chunks(0, Some(ABORT)), SctpEvent::Data);
    assert_eq!(sctp::event_from_chunks(1, Some(ABORT)), SctpEvent::Init);
    assert_eq!(sctp::event_from_chunks(COOKIE_ECHO, Some(0)), SctpEvent::CookieEcho);
}

#[test]
fn sctp_new_conn_predicates() {
    for t in 0..=u8::MAX {
        assert_eq!(sctp::is_new_conn_packet(t), t == 1);
        assert_eq!(sctp::schedules_new_conn(t, false), t == 1);
        assert_eq!(sctp::schedules_new_conn(t, true), t != 6);
    }
}

#[test]
fn sctp_transition_side_effects() {
    for dir in Direction::ALL {
        for ev in SctpEvent::ALL {
            for s in SctpState::ALL {
                let t = sctp::transition(s, dir, ev);
                assert_eq!(t.new_state, sctp::next_state(s, dir, ev));
                assert_eq!(t.changed, t.new_state != s);
                let flip = t.changed && (s == SctpState::Established) != (t.new_state == SctpState::Established);
                assert_eq!(t.active_changed, flip.then_some(t.new_state == SctpState::Established));
                assert_eq!(t.assures_template, t.changed && t.new_state == SctpState::Established);
                assert_eq!(t.counter_flip(!s.is_active()), t.active_changed);
            }
        }
    }
}

#[test]
fn udp_single_state() {
    assert_eq!(UdpState::from_u8(0), Some(UdpState::Normal));
    assert_eq!(UdpState::from_u8(1), None);
    assert_eq!(UdpState::Normal.as_u8(), 0);
    assert_eq!(UdpState::Normal.proc_name(), "UDP");
    assert!(!UdpState::Normal.is_active());
    assert_eq!(UdpTimeouts::default().timeout(UdpState::Normal), Duration::from_secs(300));
    assert_eq!(UdpTimeouts::DEFAULT.ipvsadm_value(), 300);
    let mut u = UdpTimeouts::default();
    u.set(UdpState::Normal, Duration::from_millis(1500));
    assert_eq!(u.timeout(UdpState::Normal), Duration::from_millis(1500));
    for dir in Direction::ALL {
        let t = udp::transition(UdpState::Normal, dir);
        assert_eq!(t.new_state, UdpState::Normal);
        assert!(!t.changed && !t.now_active);
        assert_eq!(t.active_changed, None);
        assert_eq!(t.assures_template, dir == Direction::Output, "{}", dir.name());
    }
}

#[test]
fn direction_selection() {
    let dr = ConnFlags::DROUTE | ConnFlags::NOOUTPUT | ConnFlags::INACTIVE;
    let nat = ConnFlags::MASQ | ConnFlags::INACTIVE;
    assert_eq!(direction(false, nat), Direction::Input);
    assert_eq!(direction(true, nat), Direction::Output);
    assert_eq!(direction(false, dr), Direction::InputOnly);
    assert_eq!(direction(true, dr), Direction::Output);
    assert!(clears_nooutput(true, dr));
    assert!(!clears_nooutput(false, dr));
    assert!(!clears_nooutput(true, nat));
    for (i, d) in Direction::ALL.iter().enumerate() {
        assert_eq!(usize::from(d.as_u8()), i);
        assert_eq!(Direction::from_u8(d.as_u8()), Some(*d));
    }
    assert_eq!(Direction::from_u8(3), None);
}

#[test]
fn conn_reuse_states() {
    for s in TcpState::ALL {
        let closing = matches!(s, TcpState::TimeWait | TcpState::Close);
        assert_eq!(tcp_reuse_on_syn(s), closing, "{}", s.proc_name());
        for nooutput in [false, true] {
            assert!(!tcp_expects_new_conn(s, 0, nooutput));
            assert_eq!(tcp_expects_new_conn(s, 1, nooutput), closing);
            let fw = s == TcpState::FinWait && nooutput;
            assert_eq!(tcp_expects_new_conn(s, 2, nooutput), closing || fw, "{} {nooutput}", s.proc_name());
            assert_eq!(tcp_expects_new_conn(s, 3, nooutput), closing || fw);
        }
    }
    for s in SctpState::ALL {
        assert_eq!(sctp_reuse_on_init(s), s == SctpState::Closed, "{}", s.proc_name());
        assert!(!sctp_expects_new_conn(s, 0));
        assert_eq!(sctp_expects_new_conn(s, 3), s == SctpState::Closed);
    }
}
