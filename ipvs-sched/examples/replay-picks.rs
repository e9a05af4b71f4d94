//! Replays a file of real kernel scheduler picks against this crate's schedulers.
//!
//! ```text
//! cargo run -q --release -p ipvs-sched --example replay-picks -- testdata/kernel-6.1/sched-picks.tsv
//! ```
//!
//! Prints `seq N SERVICE: kernel ADDR:PORT ours ADDR:PORT|none` for each disagreement and, last,
//! `N/M picks agree`; exits 0 only when every pick agrees (1 on a disagreement, 2 on a bad file). The
//! logic lives in [`ipvs_sched::replay`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: replay-picks FILE.tsv");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    match ipvs_sched::replay::replay(&text) {
        Ok(report) => {
            for line in report.lines() {
                println!("{line}");
            }
            if report.all_agree() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::from(2)
        }
    }
}
