//! The control socket: `tun-director ctl ARGS…` sends ipvsadm's arguments to the running director, which
//! answers with what ipvsadm would print.
//!
//! Wire format (a Unix stream socket, one request per connection): the client writes the arguments joined by
//! tabs, a newline, then the payload (the rules text of `-R`, else nothing), and shuts its write half; the
//! director answers with the exit code on the first line, then the text (stdout on 0, stderr otherwise).
//!
//! Requests: any ipvsadm command that changes the configuration (`-A -E -D -C -a -e -d -Z --set
//! --start-daemon --stop-daemon`, parsed by `ipvs-core`'s rules parser, applied atomically), `-R` (a whole
//! rules text from standard input, atomically), `-S [-n]`, and `-L [-n]` with `--stats`, `--rate`,
//! `--exact`, `--thresholds`, `--persistent-conn`, `--tun-info`, `--nosort`, `-c`, `--timeout`, `--daemon`
//! and `-t|-u|--sctp-service|-f SERVICE`. Names are never resolved: `-n` is accepted and implied.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipvs_core::ipvsadm::{list_conns, list_daemons, list_service, list_services, list_timeout, parse_line, ListFormat};
use ipvs_core::proto::ServiceKey;
use ipvs_core::Command;

use crate::director::Director;
use crate::listing;

/// Exit code of a request the director refused (bad argument, rule broken).
pub const EXIT_REFUSED: i32 = 1;
/// Exit code when the director cannot be reached.
pub const EXIT_UNREACHABLE: i32 = 2;
/// Largest request accepted (a restore of a big rules file fits).
const MAX_REQUEST: u64 = 16 << 20;

/// A parsed `ctl` request.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum CtlRequest {
    /// Configuration commands: one ipvsadm command line, or a whole rules text (`-R`).
    Rules {
        /// The text.
        text: String,
        /// Whether it is a restore (errors then name the line).
        restore: bool,
    },
    /// `-L`.
    List(ListRequest),
    /// `-S`.
    Save,
}

/// What `-L` lists.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ListRequest {
    /// Services, connections, timeouts or daemons.
    pub kind: ListKind,
    /// The listing options.
    pub format: ListFormat,
    /// Only this service.
    pub service: Option<ServiceKey>,
}

/// The listing `-L` asks for.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ListKind {
    /// The services (the default).
    Services,
    /// `-c`: the connection table.
    Conns,
    /// `--timeout`.
    Timeout,
    /// `--daemon`.
    Daemon,
}

/// The director's answer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct CtlResponse {
    /// The exit code for `ctl` (0, [`EXIT_REFUSED`]).
    pub code: i32,
    /// What to print: stdout on 0, stderr otherwise.
    pub text: String,
}

impl CtlResponse {
    fn ok(text: String) -> Self {
        Self { code: 0, text }
    }

    fn refused(text: String) -> Self {
        Self { code: EXIT_REFUSED, text }
    }
}

/// `-Ln` → `-L -n`: clusters of the flag letters the listing commands take.
fn expand(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        let cluster = a.len() > 2
            && a.starts_with('-')
            && !a.starts_with("--")
            && a[1..].chars().all(|c| "LlnScR".contains(c))
            && a[1..].chars().any(|c| "LlSR".contains(c));
        if cluster {
            out.extend(a[1..].chars().map(|c| format!("-{c}")));
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// Parses `ctl`'s arguments (ipvsadm's, after `ctl [--control PATH]`); `payload` is the standard input a
/// `-R` reads.
///
/// # Errors
/// The argument and what is wrong with it.
pub fn parse_request(args: &[String], payload: &str) -> Result<CtlRequest, String> {
    let words = expand(args);
    let has = |names: &[&str]| words.iter().any(|w| names.contains(&w.as_str()));
    if has(&["-R", "--restore"]) {
        if let Some(w) = words.iter().find(|w| !["-R", "--restore", "-n", "--numeric"].contains(&w.as_str())) {
            return Err(format!("option {w} is not allowed with -R"));
        }
        return Ok(CtlRequest::Rules { text: payload.to_owned(), restore: true });
    }
    if has(&["-S", "--save"]) {
        if let Some(w) = words.iter().find(|w| !["-S", "--save", "-n", "--numeric"].contains(&w.as_str())) {
            return Err(format!("option {w} is not allowed with -S"));
        }
        return Ok(CtlRequest::Save);
    }
    if has(&["-L", "-l", "--list"]) {
        return parse_list(&words).map(CtlRequest::List);
    }
    if words.is_empty() {
        return Err("no command (try -L -n)".to_owned());
    }
    if let Some(w) = words.iter().find(|w| w.contains(['\n', '\t'])) {
        return Err(format!("argument {w:?} holds a tab or newline"));
    }
    Ok(CtlRequest::Rules { text: words.join(" "), restore: false })
}

fn parse_list(words: &[String]) -> Result<ListRequest, String> {
    let mut req = ListRequest { kind: ListKind::Services, format: ListFormat::PLAIN, service: None };
    let mut i = 0;
    while i < words.len() {
        let (opt, inline) = match words[i].split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_owned())),
            _ => (words[i].as_str(), None),
        };
        i += 1;
        let f = &mut req.format;
        match opt {
            "-L" | "-l" | "--list" | "-n" | "--numeric" | "--sort" => {}
            "-c" | "--connection" => req.kind = ListKind::Conns,
            "--timeout" => req.kind = ListKind::Timeout,
            "--daemon" => req.kind = ListKind::Daemon,
            "--stats" => f.stats = true,
            "--rate" => f.rate = true,
            "--exact" | "-X" => f.exact = true,
            "--thresholds" => f.thresholds = true,
            "--persistent-conn" => f.persistent_conn = true,
            "--tun-info" => f.tun_info = true,
            "--nosort" => f.nosort = true,
            "-t" | "--tcp-service" | "-u" | "--udp-service" | "--sctp-service" | "-f" | "--fwmark-service" => {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        let v = words.get(i).ok_or_else(|| format!("option {opt} needs a value"))?;
                        i += 1;
                        v.clone()
                    }
                };
                // Parsed exactly as ipvsadm's -D would parse it.
                match parse_line(&format!("-D {opt} {value}")) {
                    Ok(Some(Command::DeleteService(key))) => req.service = Some(key),
                    Ok(_) => return Err(format!("invalid service `{value}` for {opt}")),
                    Err(e) => return Err(e.to_string()),
                }
            }
            other => return Err(format!("option {other} is not allowed with -L")),
        }
    }
    Ok(req)
}

/// Answers a request.
pub fn handle(director: &Director, request: &CtlRequest) -> CtlResponse {
    match request {
        CtlRequest::Rules { text, restore } => match director.apply_rules(text) {
            Ok(_) => CtlResponse::ok(String::new()),
            Err(e) if *restore => CtlResponse::refused(format!("{e}\n")),
            Err(e) => CtlResponse::refused(format!("{}\n", e.reason())),
        },
        CtlRequest::Save => CtlResponse::ok(listing::snapshot(director).save()),
        CtlRequest::List(l) => {
            let snap = listing::snapshot(director);
            match (l.kind, l.service) {
                (ListKind::Conns, _) => CtlResponse::ok(list_conns(&snap.conns, l.format.persistent_conn)),
                (ListKind::Timeout, _) => CtlResponse::ok(list_timeout(&snap.timeouts)),
                (ListKind::Daemon, _) => CtlResponse::ok(list_daemons(&snap.daemons)),
                (ListKind::Services, None) => CtlResponse::ok(list_services(&snap, l.format)),
                (ListKind::Services, Some(key)) => match list_service(&snap, &key, l.format) {
                    Some(text) => CtlResponse::ok(text),
                    None => CtlResponse::refused("No such service\n".to_owned()),
                },
            }
        }
    }
}

/// Parses and answers the arguments of one `ctl` invocation (what the socket server does per request).
pub fn handle_args(director: &Director, args: &[String], payload: &str) -> CtlResponse {
    match parse_request(args, payload) {
        Ok(req) => handle(director, &req),
        Err(e) => CtlResponse::refused(format!("{e}\n")),
    }
}

/// Binds the control socket at `path`. A socket file left by a director that is gone is replaced; one a
/// running director answers on is not.
///
/// # Errors
/// The socket is in use, or cannot be created.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "a running director answers on it"));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// Serves requests until the listener fails (one at a time; each is short).
pub fn serve(listener: &UnixListener, director: &Arc<Director>) {
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = serve_one(s, director) {
                    tracing::debug!(error = %e, "control request failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_one(mut stream: UnixStream, director: &Director) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut raw = Vec::new();
    (&mut stream).take(MAX_REQUEST).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (line, payload) = text.split_once('\n').unwrap_or((&text, ""));
    let args: Vec<String> = line.split('\t').filter(|a| !a.is_empty()).map(str::to_owned).collect();
    if args.is_empty() && payload.is_empty() {
        // A liveness probe (another director checking whether the socket is in use).
        return Ok(());
    }
    let response = handle_args(director, &args, payload);
    tracing::info!(args = %args.join(" "), code = response.code, "ctl");
    write!(stream, "{}\n{}", response.code, response.text)?;
    stream.flush()
}

/// Sends one request to the director at `path` (the `ctl` client).
///
/// # Errors
/// The director cannot be reached, or its answer is not in the expected form.
pub fn request(path: &Path, args: &[String], payload: &str) -> io::Result<CtlResponse> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "{}\n{}", args.join("\t"), payload)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (code, text) = answer.split_once('\n').unwrap_or((&answer, ""));
    let code = code
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "malformed answer from the director"))?;
    Ok(CtlResponse { code, text: text.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::DirectorOptions;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_listing_options() {
        let r = parse_request(&args("-Ln --stats --exact"), "").unwrap();
        let CtlRequest::List(l) = r else { panic!("{r:?}") };
        assert!(l.format.stats && l.format.exact);
        let r = parse_request(&args("-L -n -c"), "").unwrap();
        assert!(matches!(r, CtlRequest::List(ListRequest { kind: ListKind::Conns, .. })));
        let r = parse_request(&args("-L -n -t 10.0.0.1:80"), "").unwrap();
        assert!(matches!(r, CtlRequest::List(ListRequest { service: Some(_), .. })));
        assert_eq!(parse_request(&args("-Sn"), "").unwrap(), CtlRequest::Save);
        assert!(parse_request(&args("-L --bogus"), "").unwrap_err().contains("--bogus"));
        assert!(parse_request(&args("-L -t nonsense"), "").is_err());
    }

    #[test]
    fn commands_change_or_refuse() {
        let d = Director::new(DirectorOptions::new([1; 16])).unwrap();
        let r = handle_args(&d, &args("-A -t 10.0.0.1:80 -s rr"), "");
        assert_eq!(r, CtlResponse { code: 0, text: String::new() });
        let r = handle_args(&d, &args("-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 3"), "");
        assert_eq!(r.code, 0, "{}", r.text);
        let before = handle_args(&d, &args("-S -n"), "");
        let r = handle_args(&d, &args("-a -t 10.0.0.1:80 -r 10.0.1.2:80 -m -w nine"), "");
        assert_eq!(r.code, EXIT_REFUSED);
        assert!(r.text.contains("nine") && r.text.contains("-w"), "{}", r.text);
        let r = handle_args(&d, &args("-a -t 10.0.0.1:80 -r 10.0.1.2:80"), "");
        assert!(r.text.contains("direct routing"), "{}", r.text);
        assert_eq!(handle_args(&d, &args("-S -n"), ""), before);
        let list = handle_args(&d, &args("-L -n"), "");
        assert!(list.text.starts_with("IP Virtual Server version 1.2.1 (size=4096)\n"), "{}", list.text);
        assert!(list.text.contains("  -> 10.0.1.1:80                  Masq    3      0          0"), "{}", list.text);
        let r = handle_args(&d, &args("-R"), "-A -u 10.0.0.1:53\n-a -u 10.0.0.1:53 -r 10.0.1.1 -m\n-a -u x\n");
        assert_eq!(r.code, EXIT_REFUSED);
        assert!(r.text.starts_with("line 3: "), "{}", r.text);
        assert_eq!(handle_args(&d, &args("-S -n"), ""), before);
        assert_eq!(handle_args(&d, &args("-L -n --timeout"), "").text, "Timeout (tcp tcpfin udp): 900 120 300\n");
        assert_eq!(handle_args(&d, &args("-Z"), "").code, 0);
        assert_eq!(handle_args(&d, &args("-L -n -t 10.0.0.2:80"), "").code, EXIT_REFUSED);
    }
}
