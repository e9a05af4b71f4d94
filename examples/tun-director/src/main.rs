//! `tun-director`: see the library docs and `tun-director --help`.
//!
//! Exit codes: 0 success; 1 refused or failed (one line on stderr: bad rules, refused command, no TUN
//! permission, busy socket…); 2 usage error (clap) or, for `ctl`, director unreachable.

use std::process::ExitCode;

use clap::Parser;
use tun_director::cli::{Cli, CliCommand};
use tun_director::run;

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Run(args) => {
            tracing_subscriber::fmt()
                .with_max_level(args.log_level)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false)
                .init();
            match run::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tun-director: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        CliCommand::Ctl(args) => code(run::ctl(&args)),
        CliCommand::Check(args) => match run::check(&args) {
            Ok(saved) => {
                print!("{saved}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tun-director: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
