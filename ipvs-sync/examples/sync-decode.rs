//! Prints the sync records of a capture as JSON lines (see `ipvs_sync::tools::json` for the format).
//!
//! ```text
//! cargo run -q -p ipvs-sync --example sync-decode -- [--port P] FILE.pcap
//! cargo run -q -p ipvs-sync --example sync-decode -- --hex FILE.hex
//! ```
//!
//! FILE is a classic pcap (Ethernet, Linux cooked or raw IP; IPv4/IPv6) whose UDP datagrams to ports
//! 8848–8911 (or P) are sync messages, or with `--hex` one message per line as hex. Where the kernel would
//! skip a record or drop the rest of a message, an error line `{"frame": N, "record": K, "error": "..."}`
//! follows the records before it (K is 1-based; 0 = the message header).

use std::io::Write;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: sync-decode [--port P] [--hex] FILE");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut port = None;
    let mut hex = false;
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => match args.next().and_then(|p| p.parse::<u16>().ok()) {
                Some(p) => port = Some(p),
                None => return usage(),
            },
            "--hex" => hex = true,
            "-h" | "--help" => return usage(),
            _ if file.is_none() && !a.starts_with("--") => file = Some(a),
            _ => return usage(),
        }
    }
    let Some(file) = file else { return usage() };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sync-decode: {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lines = if hex {
        match String::from_utf8(bytes) {
            Ok(text) => ipvs_sync::tools::decode_hex_lines(&text),
            Err(_) => {
                eprintln!("sync-decode: {file}: not text");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match ipvs_sync::tools::decode_pcap(&bytes, port) {
            Ok(lines) => lines,
            Err(e) => {
                eprintln!("sync-decode: {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
