//! Replays a kernel protocol-state recording through the engine and prints one line per step, in the
//! `.expected` format (see `ipvs_core::replay_states`).
//!
//! ```text
//! cargo run -q --release -p ipvs-core --example replay-states -- [--sctp] [--secure-tcp] FILE.paths
//! ```

use std::process::ExitCode;

use ipvs_core::replay_states::{replay, ReplayOptions};

fn main() -> ExitCode {
    let mut opts = ReplayOptions::default();
    let mut file = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--sctp" => opts.sctp = true,
            "--secure-tcp" => opts.secure_tcp = true,
            _ if arg.starts_with("--") => {
                eprintln!("replay-states: unknown option {arg}");
                return ExitCode::from(2);
            }
            _ if file.is_none() => file = Some(arg),
            _ => {
                eprintln!("replay-states: more than one file given");
                return ExitCode::from(2);
            }
        }
    }
    let Some(file) = file else {
        eprintln!("usage: replay-states [--sctp] [--secure-tcp] FILE.paths");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("replay-states: {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match replay(&text, opts) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("replay-states: {file}: {e}");
            ExitCode::FAILURE
        }
    }
}
