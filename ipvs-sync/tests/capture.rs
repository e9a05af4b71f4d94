//! The shared Linux 6.1 capture (testdata/kernel-6.1/sync-v1-nat-persist.*): our decoder against
//! Wireshark's decode of the same bytes, field for field, and our encoder against the kernel's bytes.

use std::net::IpAddr;
use std::path::PathBuf;

use ipvs_sync::tools::{self, pcap, tshark};
use ipvs_sync::{decode_message, encode_message, SyncConn, Version};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/kernel-6.1").join(name)
}

fn capture() -> Vec<u8> {
    std::fs::read(testdata("sync-v1-nat-persist.pcap")).expect("capture present")
}

fn wireshark() -> Vec<tshark::Message> {
    let text = std::fs::read_to_string(testdata("sync-v1-nat-persist.tshark.txt")).expect("decode present");
    tshark::parse_verbose(&text)
}

/// `(frame, UDP payload)` of every sync datagram in the capture.
fn messages(file: &[u8]) -> Vec<(usize, Vec<u8>)> {
    pcap::udp_payloads(file)
        .unwrap()
        .into_iter()
        .filter(|d| tools::DEFAULT_PORTS.contains(&d.dst_port))
        .map(|d| (d.frame, d.payload.to_vec()))
        .collect()
}

fn header(m: &tshark::Message, key: &str) -> u64 {
    let v = m.header.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no header {key:?}"));
    tshark::number(&v.1).unwrap()
}

fn assert_same(frame: usize, k: usize, ours: &SyncConn, ws: &tshark::Record) {
    let at = format!("frame {frame} record {}", k + 1);
    assert_eq!(ws.record_type, Some(u64::from(ours.caddr.is_ipv6())), "{at}: type");
    assert_eq!(ws.protocol, u64::from(u8::from(ours.protocol)), "{at}: protocol");
    assert_eq!(ws.size, Some(ipvs_sync::encoded_len(ours, Version::V1) as u64), "{at}: size");
    assert_eq!(ws.flags, u64::from(ours.flags), "{at}: flags");
    assert_eq!(ws.state, u64::from(ours.state), "{at}: state");
    assert_eq!(ws.cport, u64::from(ours.cport), "{at}: cport");
    assert_eq!(ws.vport, u64::from(ours.vport), "{at}: vport");
    assert_eq!(ws.dport, u64::from(ours.dport), "{at}: dport");
    assert_eq!(ws.fwmark, ours.fwmark.map(u64::from), "{at}: fwmark");
    assert_eq!(ws.timeout, ours.timeout.map(u64::from), "{at}: timeout");
    assert_eq!(ws.caddr, Some(ours.caddr), "{at}: caddr");
    assert_eq!(ws.vaddr, Some(ours.vaddr), "{at}: vaddr");
    assert_eq!(ws.daddr, Some(ours.daddr), "{at}: daddr");
    // Wireshark shows no options for these plain records, and we found none.
    assert_eq!((ours.in_seq, ours.out_seq, &ours.pe_name, &ours.pe_data), (None, None, &None, &None), "{at}");
}

#[test]
fn capture_decodes_to_what_wireshark_shows() {
    let ws = wireshark();
    let ours = messages(&capture());
    assert_eq!(ours.len(), ws.len(), "message count");
    let mut n_records = 0;
    let mut n_fields = 0;
    for ((frame, bytes), wm) in ours.iter().zip(&ws) {
        assert_eq!(*frame, wm.frame);
        let d = decode_message(bytes).unwrap();
        assert_eq!(u64::from(d.syncid), header(wm, "Synchronization ID"));
        assert_eq!(bytes.len() as u64, header(wm, "Size"));
        assert_eq!(u64::from(d.n_conns), header(wm, "Connection Count"));
        assert_eq!(u64::from(d.version.as_u8()), header(wm, "Version"));
        assert_eq!(d.records.len(), wm.conns.len(), "frame {frame}: record count");
        for (k, (r, wc)) in d.records.iter().zip(&wm.conns).enumerate() {
            let ours = r.as_ref().unwrap_or_else(|e| panic!("frame {frame} record {}: {e:?}", k + 1));
            assert_same(*frame, k, ours, &tshark::record(wc).unwrap());
            n_records += 1;
            n_fields += wc.len();
        }
    }
    println!("capture: {} message(s), {n_records} records, {n_fields} Wireshark fields compared", ours.len());
    assert_eq!(n_records, 34);
}

#[test]
fn sync_decode_json_matches_wireshark() {
    let lines = tools::decode_pcap(&capture(), None).unwrap();
    let ws = wireshark();
    let ws_conns: Vec<(usize, &Vec<(String, String)>)> =
        ws.iter().flat_map(|m| m.conns.iter().map(move |c| (m.frame, c))).collect();
    assert_eq!(lines.len(), ws_conns.len());
    let keys = [
        "frame", "version", "syncid", "protocol", "af", "caddr", "cport", "vaddr", "vport", "daddr", "dport", "flags",
        "state", "timeout", "fwmark", "in_seq", "out_seq", "pe_name", "pe_data",
    ];
    for (line, (frame, wc)) in lines.iter().zip(ws_conns) {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let obj = j.as_object().unwrap();
        // Key order as the issue lists it: serde_json's default map is sorted, so check the text order.
        let mut last = 0;
        for k in keys {
            let at = line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("no key {k}"));
            assert!(at >= last, "key {k} out of order in {line}");
            last = at;
        }
        assert_eq!(obj.len(), keys.len());
        let w = tshark::record(wc).unwrap();
        let n = |k: &str| obj[k].as_u64().unwrap();
        let a = |k: &str| obj[k].as_str().unwrap().parse::<IpAddr>().unwrap();
        assert_eq!(n("frame"), frame as u64);
        assert_eq!((n("version"), n("syncid")), (1, 7));
        assert_eq!(obj["af"], if w.record_type == Some(0) { "inet" } else { "inet6" });
        assert_eq!(n("protocol"), w.protocol);
        assert_eq!((n("cport"), n("vport"), n("dport")), (w.cport, w.vport, w.dport));
        assert_eq!((Some(a("caddr")), Some(a("vaddr")), Some(a("daddr"))), (w.caddr, w.vaddr, w.daddr));
        assert_eq!((n("flags"), n("state")), (w.flags, w.state));
        assert_eq!((obj["timeout"].as_u64(), obj["fwmark"].as_u64()), (w.timeout, w.fwmark));
        for k in ["in_seq", "out_seq", "pe_name", "pe_data"] {
            assert!(obj[k].is_null(), "{k}");
        }
    }
    println!("sync-decode: {} JSON records agree with Wireshark", lines.len());
}

#[test]
fn reencoding_gives_back_the_kernel_bytes() {
    let mut n = 0;
    for (frame, bytes) in messages(&capture()) {
        let d = decode_message(&bytes).unwrap();
        let (version, syncid) = (d.version, d.syncid);
        let message = d.into_message();
        let mut via_message = Vec::new();
        message.encode(&mut via_message).unwrap();
        assert_eq!(via_message, bytes, "frame {frame} (SyncMessage::encode)");
        let conns = message.conns;
        let mut out = Vec::new();
        encode_message(version, syncid, &conns, &mut out).unwrap();
        assert_eq!(out, bytes, "frame {frame}");
        // The incremental writer at the default maxlen packs them into the same single message.
        let mut w = ipvs_sync::MessageWriter::begin(version, syncid, 1472);
        assert!(conns.iter().all(|c| w.try_push(c)));
        assert_eq!(w.finish(), bytes, "frame {frame} (writer)");
        n += conns.len();
    }
    println!("re-encoded {n} records byte for byte");
}

#[test]
fn sync_encode_of_sync_decode_reproduces_the_udp_payload() {
    let file = capture();
    let lines = tools::decode_pcap(&file, None).unwrap().join("\n");
    let encoded = tools::encode_jsonl(&lines, 1472).unwrap();
    let originals: Vec<Vec<u8>> = messages(&file).into_iter().map(|(_, p)| p).collect();
    assert_eq!(encoded, originals);
    // And `sync-decode --hex` of sync-encode's output gives back the same records (frame = hex line).
    let hex: String = encoded.iter().map(|m| tools::json::hex(m) + "\n").collect();
    let again = tools::decode_hex_lines(&hex);
    let parse = |l: &String| serde_json::from_str::<serde_json::Value>(l).unwrap();
    assert_eq!(
        again.iter().map(parse).collect::<Vec<_>>(),
        lines.lines().map(|l| parse(&l.to_string())).collect::<Vec<_>>()
    );
    println!("sync-encode: {} message(s), {} bytes, identical to the capture", encoded.len(), encoded[0].len());
}

#[test]
fn port_option_selects_datagrams() {
    let file = capture();
    assert_eq!(tools::decode_pcap(&file, Some(8848)).unwrap().len(), 34);
    assert_eq!(tools::decode_pcap(&file, Some(8849)).unwrap().len(), 0);
    println!("port filter: 34 records on 8848, 0 on 8849");
}
