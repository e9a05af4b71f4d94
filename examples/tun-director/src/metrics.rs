//! Prometheus metrics: node_exporter's `ipvs` collector names, help texts and labels (so existing IPVS
//! dashboards work unchanged), then this director's own (`tun_director_*`: drops by reason, table
//! occupancy, device and sync counters, health).
//!
//! node_exporter reads `/proc/net/ip_vs`: `local_address`/`local_port` are the virtual address and port
//! (empty and `0` for fwmark services), `local_mark` the fwmark as `/proc` prints it (`%08X`, empty for
//! address services), `proto` `TCP`/`UDP`/`SCTP`/`FWM`, and the weight is the configured one.
//!
//! Served by a minimal HTTP/1.0 responder (`GET /metrics`; any other path is 404).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ipvs_core::proto::ServiceKey;
use ipvs_core::DropReason;

use crate::director::Director;

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The whole exposition text.
pub fn render(director: &Director) -> String {
    let engine = director.engine();
    let mut out = String::new();
    let total = engine.total_stats().counters;
    for (name, help, v) in [
        ("node_ipvs_connections_total", "The total number of connections made.", total.conns),
        ("node_ipvs_incoming_packets_total", "The total number of incoming packets.", total.inpkts),
        ("node_ipvs_outgoing_packets_total", "The total number of outgoing packets.", total.outpkts),
        ("node_ipvs_incoming_bytes_total", "The total amount of incoming data.", total.inbytes),
        ("node_ipvs_outgoing_bytes_total", "The total amount of outgoing data.", total.outbytes),
    ] {
        header(&mut out, name, help, "counter");
        let _ = writeln!(out, "{name} {v}");
    }

    // One row per (service, real server), labels in client_golang's (sorted) order.
    let mut rows = Vec::new();
    for s in engine.services() {
        let (local_address, local_port, proto, local_mark) = match s.config.key {
            ServiceKey::Addr { protocol, addr } => {
                (addr.ip().to_string(), addr.port(), protocol.ipvs_name().unwrap_or("IP").to_owned(), String::new())
            }
            ServiceKey::Fwmark { mark, .. } => (String::new(), 0, "FWM".to_owned(), format!("{mark:08X}")),
        };
        for d in &s.dests {
            let labels = format!(
                "local_address=\"{}\",local_mark=\"{}\",local_port=\"{}\",proto=\"{}\",remote_address=\"{}\",\
                 remote_port=\"{}\"",
                esc(&local_address),
                esc(&local_mark),
                local_port,
                esc(&proto),
                d.config.addr.ip(),
                d.config.addr.port()
            );
            rows.push((labels, d.active_conns, d.inactive_conns, d.config.weight));
        }
    }
    for (name, help, pick) in [
        ("node_ipvs_backend_connections_active", "The current active connections by local and remote address.", 0usize),
        ("node_ipvs_backend_connections_inactive", "The current inactive connections by local and remote address.", 1),
        ("node_ipvs_backend_weight", "The current backend weight by local and remote address.", 2),
    ] {
        header(&mut out, name, help, "gauge");
        for (labels, active, inactive, weight) in &rows {
            let v = [*active, *inactive, *weight][pick];
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }

    // Ours.
    let drops = engine.drop_counts();
    header(&mut out, "tun_director_engine_drops_total", "Packets the IPVS engine dropped, by reason.", "counter");
    for r in DropReason::ALL {
        let _ = writeln!(out, "tun_director_engine_drops_total{{reason=\"{}\"}} {}", r.name(), drops.get(r));
    }
    let c = director.counters();
    header(&mut out, "tun_director_path_drops_total", "Packets the director dropped around the engine.", "counter");
    for (reason, v) in [
        ("no_service", &c.no_service),
        ("local_node", &c.local),
        ("direct_route", &c.direct_route),
        ("write_error", &c.write_errors),
    ] {
        let _ = writeln!(out, "tun_director_path_drops_total{{reason=\"{reason}\"}} {}", v.load(Ordering::Relaxed));
    }
    header(&mut out, "tun_director_tun_packets_total", "Packets read from / written to the TUN device.", "counter");
    let _ = writeln!(out, "tun_director_tun_packets_total{{direction=\"rx\"}} {}", c.rx.load(Ordering::Relaxed));
    let _ = writeln!(out, "tun_director_tun_packets_total{{direction=\"tx\"}} {}", c.tx.load(Ordering::Relaxed));
    let table = engine.conn_table();
    header(&mut out, "tun_director_conn_table_entries", "Connections and templates in the table.", "gauge");
    let _ = writeln!(out, "tun_director_conn_table_entries {}", table.len());
    header(&mut out, "tun_director_conn_table_capacity", "Most entries the table holds.", "gauge");
    let _ = writeln!(out, "tun_director_conn_table_capacity {}", table.capacity());
    header(&mut out, "tun_director_events_discarded_total", "Engine events lost to a full queue.", "counter");
    let _ = writeln!(out, "tun_director_events_discarded_total {}", engine.events_discarded());
    header(
        &mut out,
        "tun_director_quiesced_real_servers",
        "Real servers at weight 0 after failed health checks.",
        "gauge",
    );
    let _ = writeln!(out, "tun_director_quiesced_real_servers {}", director.quiesced());
    let s = director.sync_counters();
    header(&mut out, "tun_director_sync_total", "Sync daemon events, by kind.", "counter");
    for (kind, v) in [
        ("master_messages", &s.master_messages),
        ("master_records", &s.master_records),
        ("master_send_errors", &s.master_send_errors),
        ("backup_datagrams", &s.backup_datagrams),
        ("backup_refused", &s.backup_refused),
        ("backup_created", &s.backup_created),
        ("backup_updated", &s.backup_updated),
        ("backup_ignored", &s.backup_ignored),
    ] {
        let _ = writeln!(out, "tun_director_sync_total{{kind=\"{kind}\"}} {}", v.load(Ordering::Relaxed));
    }
    out
}

/// Serves `GET /metrics` until the listener fails.
pub fn serve(listener: &TcpListener, director: &Arc<Director>) {
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = serve_one(s, director) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_one(mut stream: TcpStream, director: &Director) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && !req.windows(2).any(|w| w == b"\n\n") && req.len() < 8192 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&chunk[..n]);
    }
    let line = req.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (status, body) = if method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?")) {
        ("200 OK", render(director))
    } else {
        ("404 Not Found", "not found; try /metrics\n".to_owned())
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::DirectorOptions;

    #[test]
    fn node_exporter_names_and_labels() {
        let d = Director::new(DirectorOptions::new([3; 16])).unwrap();
        d.apply_rules("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 3\n-A -f 7 -s rr\n-a -f 7 -r 10.0.1.2:0 -m\n")
            .unwrap();
        let text = render(&d);
        assert!(text.contains("# TYPE node_ipvs_connections_total counter\nnode_ipvs_connections_total 0\n"), "{text}");
        assert!(text.contains(
            "node_ipvs_backend_weight{local_address=\"10.0.0.1\",local_mark=\"\",local_port=\"80\",proto=\"TCP\",\
             remote_address=\"10.0.1.1\",remote_port=\"8080\"} 3\n"
        ));
        assert!(text.contains(
            "node_ipvs_backend_connections_active{local_address=\"\",local_mark=\"00000007\",local_port=\"0\",\
             proto=\"FWM\",remote_address=\"10.0.1.2\",remote_port=\"0\"} 0\n"
        ));
        assert!(text.contains("tun_director_engine_drops_total{reason=\"table_full\"} 0\n"));
        assert!(text.contains("tun_director_conn_table_capacity 262144\n"));
    }

    #[test]
    fn http_scrape() {
        let d = Director::new(DirectorOptions::new([3; 16])).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = {
            let d = Arc::clone(&d);
            std::thread::spawn(move || {
                for _ in 0..2 {
                    let (s, _) = listener.accept().unwrap();
                    serve_one(s, &d).unwrap();
                }
            })
        };
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("node_ipvs_incoming_packets_total 0\n"));
        assert!(get("/").starts_with("HTTP/1.0 404"));
        server.join().unwrap();
    }
}
