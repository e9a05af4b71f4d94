//! The inverse of `sync-decode`: packs JSON-line records into sync messages and prints each message's UDP
//! payload as one line of lowercase hex.
//!
//! ```text
//! cargo run -q -p ipvs-sync --example sync-encode -- [--maxlen N] FILE.jsonl
//! ```
//!
//! Lines with an `error` key are ignored. Consecutive records share a message until `frame`, `version`
//! or `syncid` changes or the message would pass N bytes (default 1472) or 255 records. Options are
//! written as the fields say (see `ipvs_sync::encode`). `sync-decode --hex` of the output gives back the
//! same records.

use std::io::Write;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: sync-encode [--maxlen N] FILE.jsonl");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut maxlen = ipvs_sync::record::limits::DEFAULT_MAXLEN_INET;
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--maxlen" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n > 0 => maxlen = n,
                _ => return usage(),
            },
            "-h" | "--help" => return usage(),
            _ if file.is_none() && !a.starts_with("--") => file = Some(a),
            _ => return usage(),
        }
    }
    let Some(file) = file else { return usage() };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sync-encode: {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let messages = match ipvs_sync::tools::encode_jsonl(&text, maxlen) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sync-encode: {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for m in messages {
        if writeln!(out, "{}", ipvs_sync::tools::json::hex(&m)).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
