//! The IPVS connection-synchronisation protocol.
//!
//! This crate holds the version 0 and version 1 codec (byte-compatible with Linux), the sans-IO
//! master (`poll_transmit`/`poll_timeout`) and the backup (`handle_datagram`). It is table-agnostic:
//! records go in and out, and `ipvs-core` applies them to its table.
//!
//! Codec: [`record`] (the version-independent [`SyncConn`] and the error types), [`decode`] (the kernel
//! receiver's parsing and validation, facts §12.5) and [`encode`] (the kernel sender's layout and
//! batching, facts §12.3–§12.4).
//!
//! Logic: [`master`] decides which connection updates to send and when (the kernel's `sync_threshold`,
//! `sync_period`, `sync_refresh_period`, `sync_retries` rules) and batches them into messages;
//! [`backup`] validates received messages and tells the engine how to apply each record; [`resync`] is a bulk
//! full-table transfer the kernel lacks (for a late backup or a rebooted master), framed so that Linux
//! receivers drop every resync message at their first size check.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod backup;
pub mod decode;
pub mod encode;
pub mod master;
pub mod record;
pub mod resync;
pub mod tools;

#[doc(hidden)]
pub mod fuzzing;

pub use backup::{Backup, BackupBatch, BackupConfig, BackupEvent, BackupRecord, BackupStats};
pub use decode::{decode_message, Decoded, RecordError};
pub use encode::{encode_message, encoded_len, MessageWriter};
pub use ipvs_proto;
pub use master::{
    port_index, ConfigError, ConnSyncInfo, Master, MasterConfig, MasterEvent, MasterStats, SyncOutcome, SyncState,
    Transmit, TransmitKind,
};
pub use record::{DecodeError, EncodeError, SeqAdjust, SyncConn, SyncMessage, Version};
