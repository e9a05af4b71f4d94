//! Entry points for the fuzz target in `fuzz/` (outside the workspace) and for the ordinary test that
//! replays its committed corpus. Hidden from the docs; not a stable API.
//!
//! The function must never panic on any input; the assertions inside are the invariants the fuzzer hunts
//! for violations of.

use alloc::vec::Vec;

use crate::decode::{decode_message, decode_message_filtered, parse_header};
use crate::encode::{encode_message, MessageWriter};
use crate::record::SyncConn;
use crate::tools;

/// Decodes `data` as a sync message and checks:
/// - record errors are in order, fatal ones last, `fatal == error.is_fatal()`;
/// - the accepted records re-encode (in the message's version) and decode back to themselves, through
///   [`encode_message`] and through a [`MessageWriter`] with no size limit;
/// - each accepted record survives the `sync-decode` JSON line round trip;
/// - the sync-id filter agrees with the header.
pub fn sync_decoder(data: &[u8]) {
    let Ok(decoded) = decode_message(data) else {
        assert!(parse_header(data).is_err());
        return;
    };
    assert!(decoded.records.len() <= usize::from(decoded.n_conns));
    for (i, r) in decoded.records.iter().enumerate() {
        if let Err(e) = r {
            assert_eq!(e.index, i);
            assert_eq!(e.fatal, e.error.is_fatal());
            assert!(!e.fatal || i + 1 == decoded.records.len(), "a fatal error ends the records");
            assert!(e.offset <= data.len() + 3);
        }
    }
    let syncid = decoded.syncid;
    assert!(decode_message_filtered(data, 0).is_ok());
    assert!(decode_message_filtered(data, syncid).is_ok());
    if syncid != 255 {
        assert_eq!(decode_message_filtered(data, syncid + 1).err(), Some(crate::DecodeError::WrongSyncId(syncid)));
    }

    let version = decoded.version;
    let conns: Vec<SyncConn> = decoded.records.into_iter().filter_map(Result::ok).collect();
    let mut bytes = Vec::new();
    encode_message(version, syncid, &conns, &mut bytes).expect("decoded records are encodable");
    assert!(bytes.len() <= data.len(), "re-encoding never grows a message");
    let again = decode_message(&bytes).expect("our encoding decodes");
    let back: Vec<SyncConn> = again.records.into_iter().map(|r| r.expect("our records are valid")).collect();
    assert_eq!(back, conns);

    let mut w = MessageWriter::begin(version, syncid, usize::MAX);
    for c in &conns {
        assert!(w.try_push(c));
    }
    assert_eq!(w.finish(), bytes);

    for c in &conns {
        let line = tools::json::record_line(1, version, syncid, c);
        let parsed = tools::json::parse_record_line(&line).expect("our JSON parses").expect("a record line");
        assert_eq!(&parsed.conn, c);
    }
    let mut lines = Vec::new();
    tools::decode_to_lines(1, data, &mut lines);
}
