//! The kernel's protocol-state recordings (testdata/kernel-6.1/tcp-states.* and sctp-states-nat.*) replayed
//! through a whole engine as real packets, in-process, exactly as `examples/replay-states.rs` does: every line
//! must equal the kernel's.

use std::fs;

use ipvs_core::replay_states::{replay, ReplayOptions};

const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/kernel-6.1/");

/// Replays `name.paths` and compares with `name.expected`; prints every difference and the count.
fn check(name: &str, opts: ReplayOptions) {
    let paths = fs::read_to_string(format!("{DATA_DIR}{name}.paths")).expect("paths file");
    let expected = fs::read_to_string(format!("{DATA_DIR}{name}.expected")).expect("expected file");
    let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let got = replay(&paths, opts).expect("replay");
    let mut differ = 0;
    for (i, want) in expected.iter().enumerate() {
        let line = got.get(i).map_or("<missing>", String::as_str);
        if line != *want {
            differ += 1;
            println!("{name}: line {}: expected {want:?}, got {line:?}", i + 1);
        }
    }
    println!("{name}: {}/{} lines equal ({} produced)", expected.len() - differ, expected.len(), got.len());
    assert_eq!(got.len(), expected.len(), "{name}: line count");
    assert_eq!(differ, 0, "{name}: {differ} lines differ");
}

#[test]
fn tcp_states() {
    check("tcp-states", ReplayOptions::default());
}

#[test]
fn sctp_states_nat() {
    check("sctp-states-nat", ReplayOptions { sctp: true, ..ReplayOptions::default() });
}

/// `--secure-tcp` has no kernel recording; the engine's replay must equal what the secure state table itself
/// gives, step by step (the same model as ipvs-proto's state replay, with the secure table, conn_reuse_mode 1).
#[test]
fn secure_tcp_follows_the_secure_table() {
    use ipvs_core::proto::state::{self, tcp, TcpState, TcpTimeouts};
    use ipvs_core::proto::ConnFlags;

    let paths = fs::read_to_string(format!("{DATA_DIR}tcp-states.paths")).expect("paths file");
    let got = replay(&paths, ReplayOptions { secure_tcp: true, ..ReplayOptions::default() }).expect("replay");
    let timeouts = TcpTimeouts::default();
    let mut want = Vec::new();
    for line in paths.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let cport = fields.next().unwrap();
        let vport = fields.next().unwrap();
        let mut flags = ConnFlags::INACTIVE;
        if vport == "81" {
            flags |= ConnFlags::NOOUTPUT;
        }
        let mut conn: Option<(TcpState, ConnFlags)> = None;
        for (i, step) in fields.enumerate() {
            let (reply, what) = match step.strip_prefix("in:") {
                Some(w) => (false, w),
                None => (true, step.strip_prefix("out:").unwrap()),
            };
            let bits = if what == "-" {
                0
            } else {
                what.chars().fold(0u8, |a, c| {
                    a | match c {
                        'F' => 1,
                        'S' => 2,
                        'R' => 4,
                        _ => 0x10,
                    }
                })
            };
            if let Some((s, _)) = conn {
                if !reply && tcp::is_new_conn_packet(bits) && state::tcp_reuse_on_syn(s) {
                    conn = None;
                }
            }
            if conn.is_none() && !reply && tcp::schedules_new_conn(bits, false) {
                conn = Some((TcpState::None, flags));
            }
            let shown = match &mut conn {
                Some((s, f)) => {
                    let dir = state::direction(reply, *f);
                    if state::clears_nooutput(reply, *f) {
                        f.set(ConnFlags::NOOUTPUT, false);
                    }
                    *s = tcp::transition(*s, dir, tcp::event_from_flags(bits), true).new_state;
                    format!("{} {}", s.proc_name(), (timeouts.timeout(*s).total_millis() - 30) / 1000)
                }
                None => "- -1".to_owned(),
            };
            want.push(format!("{cport} {vport} {} {step} {shown}", i + 1));
        }
    }
    let differ = want.iter().zip(&got).filter(|(w, g)| w != g).count();
    println!("tcp-states --secure-tcp: {}/{} lines equal the secure table", want.len() - differ, want.len());
    assert_eq!(got, want);
}
