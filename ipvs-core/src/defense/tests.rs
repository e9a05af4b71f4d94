//! One test per transition of facts §11.2, plus the packet countdown and the memory mapping.

use ipvs_conn::{ConnTable, ConnTableConfig};

use super::*;
use DefenseMode::{Always, Auto, AutoActive, Off};

const LOW: Occupancy = Occupancy::AvailablePages(0);
const PLENTY: Occupancy = Occupancy::AvailablePages(1 << 20);

fn at(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

fn with(f: impl FnOnce(&mut Defense)) -> Defense {
    let mut d = Defense::default();
    f(&mut d);
    d
}

/// The first `n` answers of `should_drop_packet`, as `x` (dropped) and `.` (passed).
fn drops(s: &DefenseState, n: usize) -> String {
    (0..n).map(|_| if s.should_drop_packet() { 'x' } else { '.' }).collect()
}

#[test]
fn mode_step_table() {
    let table = [
        (Off, false, Off),
        (Off, true, Off),
        (Auto, false, Auto),
        (Auto, true, AutoActive),
        (AutoActive, false, Auto),
        (AutoActive, true, AutoActive),
        (Always, false, Always),
        (Always, true, Always),
    ];
    for (mode, low, want) in table {
        assert_eq!(mode.step(low), want, "{mode:?} low={low}");
    }
    let active: Vec<bool> = [Off, Auto, AutoActive, Always].iter().map(|m| m.is_active()).collect();
    assert_eq!(active, [false, false, true, true]);
}

#[test]
fn mode_sysctl_values() {
    for v in 0..4u32 {
        let mode = DefenseMode::try_from(v).unwrap();
        assert_eq!(u32::from(u8::from(mode)), v);
    }
    assert_eq!(DefenseMode::try_from(4), Err(InvalidDefenseMode(4)));
    assert_eq!(InvalidDefenseMode(7).to_string(), "invalid defense mode 7: expected 0, 1, 2 or 3");
    assert_eq!(
        Defense::default(),
        with(|d| {
            d.am_droprate = 10;
            d.amemthresh = 1024;
        })
    );
}

#[test]
fn table_occupancy_maps_free_slots_to_pages() {
    // 13 107 free slots × 320 / 4096 = 1023.9 → 1023 pages; 13 108 → 1024.0.
    let occ = |len, capacity| Occupancy::Table { len, capacity }.available_pages();
    assert_eq!(occ(100_000 - 13_107, 100_000), 1023);
    assert_eq!(occ(100_000 - 13_108, 100_000), 1024);
    assert_eq!(occ(0, 4096), 320);
    assert_eq!(occ(5000, 4096), 0, "over-full counts as none free");
    assert_eq!(Occupancy::AvailablePages(77).available_pages(), 77);

    let s = DefenseState::new(with(|d| d.drop_entry = Auto), 1, at(0));
    assert!(s.update(at(1), Occupancy::Table { len: 100_000 - 13_107, capacity: 100_000 }), "1023 < 1024: low");
    assert!(!s.update(at(2), Occupancy::Table { len: 100_000 - 13_108, capacity: 100_000 }), "1024: not low");
    assert!(!s.low_memory());
}

#[test]
fn drop_entry_off_never_runs() {
    let s = DefenseState::new(Defense::default(), 1, at(0));
    assert!(!s.update(at(1), LOW));
    assert!(s.low_memory());
    assert!(!s.drop_entry_active());
    assert_eq!(s.config().drop_entry, Off);
}

#[test]
fn drop_entry_auto_activates_on_low_memory_and_becomes_2() {
    let s = DefenseState::new(with(|d| d.drop_entry = Auto), 1, at(0));
    assert!(!s.update(at(1), PLENTY));
    assert_eq!(s.config().drop_entry, Auto);
    assert!(s.update(at(2), LOW));
    assert_eq!(s.config().drop_entry, AutoActive);
    assert!(s.update(at(3), LOW), "stays active while low");
}

#[test]
fn drop_entry_auto_active_deactivates_when_memory_is_back_and_becomes_1() {
    let s = DefenseState::new(with(|d| d.drop_entry = Auto), 1, at(0));
    assert!(s.update(at(1), LOW));
    assert!(!s.update(at(2), PLENTY));
    assert!(!s.drop_entry_active());
    assert_eq!(s.config().drop_entry, Auto);
}

#[test]
fn drop_entry_always_runs_every_second() {
    let s = DefenseState::new(with(|d| d.drop_entry = Always), 1, at(0));
    assert!(s.drop_entry_active(), "active from the start");
    assert!(s.update(at(1), PLENTY));
    assert!(s.update(at(2), LOW));
    assert_eq!(s.config().drop_entry, Always);
}

#[test]
fn mode_2_written_with_plenty_of_memory_falls_back_to_1() {
    let s = DefenseState::new(with(|d| d.secure_tcp = AutoActive), 1, at(0));
    assert_eq!(s.config().secure_tcp, Auto, "no occupancy seen yet counts as plenty");
    assert!(!s.secure_tcp_active());
    s.update(at(1), LOW);
    assert!(s.secure_tcp_active());
    // A sysctl write re-evaluates with the last occupancy (low): 2 stays 2, 1 becomes 2 at once.
    s.set_config(with(|d| d.secure_tcp = Auto));
    assert_eq!(s.config().secure_tcp, AutoActive);
    assert!(s.secure_tcp_active());
}

#[test]
fn drop_packet_off_has_rate_0() {
    let s = DefenseState::new(Defense::default(), 1, at(0));
    s.update(at(1), LOW);
    assert_eq!(s.drop_rate(), 0);
    assert_eq!(drops(&s, 20), "....................");
}

#[test]
fn drop_packet_auto_rate_follows_available_memory() {
    // amemthresh 1024: rate = 1024 / (1024 − available).
    let s = DefenseState::new(with(|d| d.drop_packet = Auto), 1, at(0));
    s.update(at(1), Occupancy::AvailablePages(768));
    assert_eq!((s.drop_rate(), s.config().drop_packet), (4, AutoActive));
    assert_eq!(drops(&s, 12), "...x...x...x");
    s.update(at(2), Occupancy::AvailablePages(512));
    assert_eq!(s.drop_rate(), 2);
    assert_eq!(drops(&s, 6), ".x.x.x", "the countdown restarts with the new rate");
    s.update(at(3), Occupancy::AvailablePages(0));
    assert_eq!(s.drop_rate(), 1);
    assert_eq!(drops(&s, 4), "xxxx", "no memory at all: every new conn is dropped");
    s.update(at(4), Occupancy::AvailablePages(1000));
    assert_eq!(s.drop_rate(), 42, "1024 / 24 rounds down");
}

#[test]
fn drop_packet_auto_active_stops_when_memory_is_back_and_becomes_1() {
    let s = DefenseState::new(with(|d| d.drop_packet = Auto), 1, at(0));
    s.update(at(1), LOW);
    s.update(at(2), Occupancy::AvailablePages(1024));
    assert_eq!((s.drop_rate(), s.config().drop_packet), (0, Auto));
    assert_eq!(drops(&s, 5), ".....");
}

#[test]
fn drop_packet_always_uses_am_droprate() {
    let s = DefenseState::new(with(|d| d.drop_packet = Always), 1, at(0));
    assert_eq!(s.drop_rate(), 10);
    assert_eq!(drops(&s, 20), ".........x.........x");
    s.update(at(1), LOW);
    s.update(at(2), PLENTY);
    assert_eq!(drops(&s, 10), ".........x", "updates with an unchanged rate keep the countdown going");
    s.set_config(with(|d| {
        d.drop_packet = Always;
        d.am_droprate = 3;
    }));
    assert_eq!(drops(&s, 6), "..x..x", "a new rate restarts the countdown");
    s.set_config(with(|d| {
        d.drop_packet = Always;
        d.am_droprate = 0;
    }));
    assert_eq!(drops(&s, 5), ".....", "am_droprate 0 drops nothing");
}

#[test]
fn drop_packet_countdown_is_exact_across_threads() {
    let s = DefenseState::new(with(|d| d.drop_packet = Always), 1, at(0));
    let n = 10_000;
    let dropped: usize = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..4).map(|_| scope.spawn(|| (0..n).filter(|_| s.should_drop_packet()).count())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(dropped, 4 * n / 10);
}

#[test]
fn secure_tcp_off_uses_the_normal_table_and_switches_back() {
    let s = DefenseState::new(with(|d| d.secure_tcp = Always), 1, at(0));
    assert!(s.secure_tcp_active());
    s.set_config(Defense::default());
    assert!(!s.secure_tcp_active(), "writing 0 switches back at once");
    s.update(at(1), LOW);
    assert!(!s.secure_tcp_active());
}

#[test]
fn secure_tcp_auto_switches_on_low_memory_and_becomes_2() {
    let s = DefenseState::new(with(|d| d.secure_tcp = Auto), 1, at(0));
    s.update(at(1), PLENTY);
    assert!(!s.secure_tcp_active());
    s.update(at(2), LOW);
    assert!(s.secure_tcp_active());
    assert_eq!(s.config().secure_tcp, AutoActive);
}

#[test]
fn secure_tcp_auto_active_switches_back_when_memory_is_back_and_becomes_1() {
    let s = DefenseState::new(with(|d| d.secure_tcp = Auto), 1, at(0));
    s.update(at(1), LOW);
    s.update(at(2), PLENTY);
    assert!(!s.secure_tcp_active());
    assert_eq!(s.config().secure_tcp, Auto);
}

#[test]
fn secure_tcp_always_regardless_of_memory() {
    let s = DefenseState::new(with(|d| d.secure_tcp = Always), 1, at(0));
    for (t, occ) in [(1, PLENTY), (2, LOW), (3, PLENTY)] {
        s.update(at(t), occ);
        assert!(s.secure_tcp_active());
        assert_eq!(s.config().secure_tcp, Always);
    }
}

#[test]
fn the_three_mechanisms_switch_together_on_one_threshold() {
    let s = DefenseState::new(
        with(|d| {
            d.drop_entry = Auto;
            d.drop_packet = Auto;
            d.secure_tcp = Auto;
            d.amemthresh = 100;
        }),
        1,
        at(0),
    );
    assert!(s.update(at(1), Occupancy::AvailablePages(99)));
    assert!(s.secure_tcp_active() && s.drop_entry_active());
    assert_eq!(s.drop_rate(), 100);
    assert!(!s.update(at(2), Occupancy::AvailablePages(100)), "available == amemthresh is not low");
    assert!(!s.secure_tcp_active() && !s.drop_entry_active());
    assert_eq!(s.drop_rate(), 0);
}

#[test]
fn updates_run_once_per_second_on_the_grid() {
    let s = DefenseState::new(with(|d| d.drop_entry = Always), 1, Instant::from_millis(1500));
    assert_eq!(s.poll_timeout(), at(2));
    assert!(!s.update(Instant::from_millis(1999), LOW), "not due yet");
    assert!(!s.low_memory(), "an early call changes nothing");
    assert!(s.update(at(2), LOW));
    assert_eq!(s.poll_timeout(), at(3));
    assert!(!s.update(Instant::from_millis(2500), LOW));
    // Late by several seconds: acts once, then due at the next whole second.
    assert!(s.update(Instant::from_millis(7300), LOW));
    assert_eq!(s.poll_timeout(), at(8));
    assert!(!s.update(Instant::from_millis(7999), LOW));
}

#[test]
fn handle_timeout_runs_the_entry_drop_only_when_due_and_active() {
    let table = ConnTable::new(ConnTableConfig::new(1024, [7; 16]), at(0)).unwrap();
    let s = DefenseState::new(with(|d| d.drop_entry = Auto), 1, at(0));
    let mut runs = 0;
    let mut expired = Vec::new();
    let mut tick = |t: u64, occ| {
        s.handle_timeout(Instant::from_millis(t), occ, |d| {
            runs += 1;
            table.drop_entry(Instant::from_millis(t), d, |_| false, &mut expired);
        })
    };
    assert!(!tick(1000, PLENTY));
    assert!(tick(2000, LOW));
    assert!(!tick(2500, LOW), "not due");
    assert!(tick(3000, LOW));
    assert!(!tick(4000, PLENTY));
    assert_eq!(runs, 2);
    assert!(expired.is_empty());
}
