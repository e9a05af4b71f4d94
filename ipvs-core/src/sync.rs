//! Sync glue: the engine's side of connection synchronisation (facts §3.6, §12.5–§12.8).
//!
//! `ipvs-sync` decides what to send and validates what arrives, but knows no table; this module connects it
//! to the engine's connection table. The engine stays sans-IO: the embedder owns the multicast sockets.
//!
//! # Master ([`Engine::start_sync_master`])
//!
//! While a [`Master`] runs, the packet path feeds it:
//!
//! - after every client packet of a conn in the table, with the conn as it is now and its `in_pkts` after the
//!   increment (the kernel's `ip_vs_sync_conn(cp, pkts)`, facts §12.7);
//! - then, as the [`SyncOutcome`](ipvs_sync::SyncOutcome) asks, its controller up the chain (DATA → CTL →
//!   TPL, facts §3.6): a persistence template with `pkts` = its `in_pkts` incremented, another controller with
//!   `sync_threshold`;
//! - for a one-packet conn (never in the table, never sent itself), its template;
//! - beyond the kernel ([`SyncMasterOptions::sync_reply_state_changes`], on by default): when a reply of a NAT
//!   conn moves it into a state the kernel sends at once (TCP FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT; the SCTP
//!   shutdown states and CLOSED), it is sent now, not at the client's next packet.
//!
//! The kernel's per-conn bookkeeping (`old_state`, `sync_endtime`) lives in the conn's cold part
//! ([`ipvs_conn::ConnMut::old_state`], [`ipvs_conn::ConnMut::sync_endtime`]) and goes in and out of
//! [`Master::conn_update`] as an [`ipvs_sync::SyncState`].
//!
//! The embedder drains [`Engine::poll_sync_transmit`] into the sync sockets (port index `i` → base port + `i`)
//! after each packet or burst and after [`Engine::handle_timeout`]; [`Engine::poll_timeout`] includes the
//! master's flush and pacing deadlines and [`Engine::handle_timeout`] runs them. Datagrams heard on the group go
//! to [`Engine::handle_sync_datagram`] (a master answers bulk-resync requests from them). Bulk resync dumps
//! ([`ipvs_sync::resync`]) are served from the table: when a dump starts, the engine takes a list of the conn
//! handles and feeds the records as the master's pacing asks for them.
//!
//! # Backup ([`Engine::start_sync_backup`], [`Engine::apply_sync`])
//!
//! [`Engine::handle_sync_datagram`] runs the [`Backup`]'s checks and applies the accepted records as the kernel's
//! `ip_vs_proc_conn` does (facts §12.6):
//!
//! - a conn is looked up by its client side, a template by its template key; a conn bound elsewhere (other
//!   `daddr:dport`) is replaced, unless the record is `INACTIVE` (a late notice about a replaced conn: ignored);
//! - an existing conn gets the record's `INACTIVE` and seq bits (one count moves between the real server's
//!   active and inactive conns when `INACTIVE` flips), its state, `in_pkts` = `sync_threshold`, its timeout, and
//!   a restarted timer; if it is still unbound, binding is tried again;
//! - a new conn is bound to the real server found by service (fwmark, protocol, virtual address and port) and
//!   server address with the record's port, or port 0 for a fwmark service whose synced method is not NAT,
//!   then the other of the two; it takes **this** director's forwarding method (the synced forwarding bits and
//!   `NOOUTPUT` are replaced), keeps the synced `INACTIVE` (templates are always `INACTIVE`) and counts in the
//!   real server's active, inactive or persistent conns (OVERLOAD follows the thresholds). Without a matching
//!   real server the conn exists unbound: its packets pass (no transmitter), and binding is tried at its next
//!   record or by [`Engine::bind_synced_conns`]. It gets the `SYNC` flag, `state` = `old_state` = the record's,
//!   `in_pkts` = `sync_threshold`, and the record's timeout (or the backup's default for its state; 180 s for
//!   templates), and then behaves like a local conn: it times out per its state unless another record comes.
//!
//! So a backup can take over: after failover, packets of synced conns find their conn and are forwarded to the
//! same real servers without scheduling, and new conns of a persistent client find the synced template.
//!
//! Persistence-engine data (`--pe sip`, facts §8.5, §12.4): the master sends a template's Call-ID as the
//! `PE_DATA` option followed by `PE_NAME` = `sip`; the backup ([`Engine::sync_backup_config`] loads `sip` while
//! [`EngineConfig::sip_persistence_engine`](crate::EngineConfig::sip_persistence_engine) is on) looks the
//! template up by its key *and* Call-ID and creates it with the Call-ID, so the call's next packets after a
//! failover go to the same real server. With the engine off, records with PE data are skipped (kernel +50, as a
//! kernel without the module).
//!
//! Beyond the kernel: the templates of a message are applied before its conns, and a new conn of a persistent
//! service is linked to its template (as the master's conn is) when that template exists and points at the same
//! real server — the backup's template then cannot expire while the conn lives, as on the master.
//!
//! The kernel's "expire later" is synced too: a due controller still controlling conns is pushed back 60 s by
//! the table ([`ConnTable::handle_timeout_with_push_backs`](ipvs_conn::ConnTable::handle_timeout_with_push_backs)
//! reports it) and a running master evaluates it with `pkts = sync_threshold`, so the backup's copy gets the 60 s
//! too. The backup's own controllers are pushed back the same way while they control conns (see above).
//!
//! # Not reproduced
//!
//! - Only templates carry persistence-engine data here (as the kernel's do): a conn record with PE data is
//!   applied as a plain conn, its data ignored. The backup links a synced conn of a `--pe sip` service to no
//!   template (its record does not carry the call's Call-ID); such a conn still keeps its real server, and the
//!   synced template still sends the call's new conns there.
//! - Sequence adjustments are synced both ways (`IN_SEQ`/`OUT_SEQ`), but the engine has no FTP helper to make
//!   them.
//! - conntrack: no `NFCT` handling, no refusal of synced NAT conns whose tuple conntrack already holds.
//! - The kernel's compare-and-swap on `sync_endtime` (two CPUs updating one conn): here updates of the master
//!   are serialised by its mutex, taken per client packet while a master runs.
//! - Synced conns raise no [`Event::ConnCreated`](crate::Event::ConnCreated) (they were not created by the packet
//!   path) and, as in the kernel, do not count in the `conns` statistics; they raise
//!   [`Event::ConnExpired`](crate::Event::ConnExpired) when they leave.
//! - `ipvsadm --start-daemon` through [`Engine::apply`](crate::Engine::apply) still answers
//!   [`EngineError::SyncDaemonUnavailable`]: a daemon is sockets, which the embedder owns; it builds the
//!   [`Master`] or [`Backup`] and starts it here (refused while mixed-family real servers exist).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use ipvs_conn::{ConnId, ConnMut, ConnTable, ConnView, InKey, NewConn, TemplateKey};
use ipvs_proto::state::{SctpState, TcpState};
use ipvs_proto::{ConnFlags, Instant, Protocol};
use ipvs_sync::backup::{Lookup, OtherDest};
use ipvs_sync::master::MasterInput;
use ipvs_sync::resync::{self, ResyncMessage};
use ipvs_sync::{
    Backup, BackupBatch, BackupConfig, BackupEvent, BackupRecord, ConnSyncInfo, DecodeError, Master, MasterEvent,
    SeqAdjust, SyncConn, SyncState as WireState, Transmit,
};
use parking_lot::Mutex;

use crate::config::ConfigError;
use crate::engine::{Engine, EngineError};
use crate::service::{ControlState, DestSlot};
use crate::{pe_sip, persistence};

/// Longest controller chain followed (DATA → CTL → TPL is the longest the kernel builds).
const MAX_CHAIN: usize = 4;

/// Options of the engine's sync master beyond [`ipvs_sync::MasterConfig`].
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub struct SyncMasterOptions {
    /// Beyond the kernel (default on): a reply (NAT) that moves a conn into a state the kernel would send at
    /// once — TCP FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT; SCTP SHUTDOWN_SENT, SHUTDOWN_RECEIVED,
    /// SHUTDOWN_ACK_SENT, CLOSED — sends the conn now. The kernel syncs only from the client side, so such a
    /// change waits for the client's next packet (which may never come). Off: the kernel's behaviour.
    pub sync_reply_state_changes: bool,
}

impl Default for SyncMasterOptions {
    fn default() -> Self {
        Self { sync_reply_state_changes: true }
    }
}

/// Something the sync daemons report to the embedder ([`Engine::poll_sync_event`]).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum SyncDaemonEvent {
    /// From the master: a bulk-resync dump started or finished (the engine feeds dumps itself).
    Master(MasterEvent),
    /// From the backup: a resync it asked for completed or was given up.
    Backup(BackupEvent),
}

/// What applying sync records did ([`Engine::apply_sync`]; summed over a backup's life in
/// [`Engine::sync_backup_totals`]).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct SyncApplied {
    /// Records that created a conn or template.
    pub created: u64,
    /// Of those, created unbound (no matching real server here).
    pub unbound: u64,
    /// Records that updated an existing conn or template.
    pub updated: u64,
    /// Existing conns bound to another real server, replaced by the record's.
    pub replaced: u64,
    /// Records ignored: a late `INACTIVE` notice about a conn already replaced.
    pub ignored: u64,
    /// Records that could not be applied (table full, or the conn to replace controls others).
    pub failed: u64,
    /// Records the backup's checks skipped (counted from the batch; nothing applied).
    pub skipped: u64,
}

impl SyncApplied {
    fn add(&mut self, o: &Self) {
        self.created += o.created;
        self.unbound += o.unbound;
        self.updated += o.updated;
        self.replaced += o.replaced;
        self.ignored += o.ignored;
        self.failed += o.failed;
        self.skipped += o.skipped;
    }
}

/// What [`Engine::handle_sync_datagram`] did with a datagram.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum SyncInput {
    /// The backup accepted a sync message (or a resync `Data` message) and applied its records.
    Applied(SyncApplied),
    /// The backup took a resync control message (`Begin`, `End`) or a request not for a master.
    ResyncControl,
    /// The backup refused the datagram (message-level check, facts §12.5).
    Refused(DecodeError),
    /// The master took it (a bulk-resync request), or ignored it.
    Master(MasterInput),
    /// No sync daemon runs.
    NoDaemon,
}

/// The running master and what the engine keeps for it.
#[derive(Debug)]
struct MasterInner {
    master: Master,
    options: SyncMasterOptions,
    /// The conns of the running resync dump still to feed.
    cursor: Option<ResyncCursor>,
    events: VecDeque<SyncDaemonEvent>,
}

/// The engine's sync master slot: idle until [`Engine::start_sync_master`].
#[derive(Debug, Default)]
pub(crate) struct SyncMaster {
    running: AtomicBool,
    inner: Mutex<Option<MasterInner>>,
}

impl SyncMaster {
    /// Whether a master runs (one relaxed load: the packet path's only cost while none does).
    #[inline]
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// The running backup.
#[derive(Debug)]
struct BackupInner {
    backup: Backup,
    totals: SyncApplied,
}

/// The engine's sync backup slot: idle until [`Engine::start_sync_backup`].
#[derive(Debug, Default)]
pub(crate) struct SyncBackup {
    /// Whether a backup runs: read by the control plane under its write lock without taking `inner` (the
    /// backup takes `inner`, then the control read lock, to apply records).
    running: AtomicBool,
    inner: Mutex<Option<BackupInner>>,
}

impl SyncBackup {
    /// Whether a backup runs.
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// A resync dump's position in the table: the handles of every entry when the dump started.
#[derive(Debug)]
struct ResyncCursor {
    ids: Vec<ConnId>,
    pos: usize,
}

/// The records of a resync dump, pulled from the table as the master asks.
struct ResyncIter<'a> {
    table: &'a ConnTable,
    cursor: &'a mut ResyncCursor,
    persist_mode: bool,
    exhausted: bool,
}

impl Iterator for ResyncIter<'_> {
    type Item = SyncConn;

    fn next(&mut self) -> Option<SyncConn> {
        loop {
            let Some(&id) = self.cursor.ids.get(self.cursor.pos) else {
                self.exhausted = true;
                return None;
            };
            self.cursor.pos += 1;
            // Gone since the dump started: skip.
            let Some((view, control, seq, pe)) =
                self.table.with_conn(id, |c| (c.view(), c.control(), seq_of(c), pe_of(c)))
            else {
                continue;
            };
            if crate::forward::is_mixed_family(&view) {
                continue;
            }
            if self.persist_mode && !view.is_template() {
                let by_template = control.and_then(|cid| self.table.get(cid)).is_some_and(|v| v.is_template());
                if by_template {
                    continue;
                }
            }
            let mut rec = record_of(&view, seq, pe);
            rec.timeout = Some(u32::try_from(view.timeout.secs()).unwrap_or(u32::MAX));
            return Some(rec);
        }
    }
}

/// The wire record of a conn as it is now (the master writes the v1 timeout from [`ConnSyncInfo::timeout`]),
/// with its persistence-engine data `pe` (a SIP template's Call-ID: `PE_DATA` and `PE_NAME` options).
fn record_of(v: &ConnView, seq: Option<(SeqAdjust, SeqAdjust)>, pe: Option<Vec<u8>>) -> SyncConn {
    SyncConn {
        protocol: v.protocol,
        caddr: v.caddr,
        cport: v.cport,
        vaddr: v.vaddr,
        vport: v.vport,
        daddr: v.daddr,
        dport: v.dport,
        flags: v.flags.bits() & !ConnFlags::HASHED.bits(),
        state: u16::from(v.state),
        timeout: None,
        fwmark: Some(v.fwmark),
        in_seq: seq.map(|s| s.0),
        out_seq: seq.map(|s| s.1),
        pe_name: pe.is_some().then(|| pe_sip::NAME.as_bytes().to_vec()),
        pe_data: pe,
    }
}

/// The conn's persistence-engine data (templates of `--pe sip` services).
fn pe_of(c: &ConnMut<'_>) -> Option<Vec<u8>> {
    c.pe_data().map(<[u8]>::to_vec)
}

/// The conn's seq adjustments, if its flags ask for them.
fn seq_of(c: &ConnMut<'_>) -> Option<(SeqAdjust, SeqAdjust)> {
    if !c.flags().intersects(ConnFlags::SEQ_MASK) {
        return None;
    }
    let conv =
        |s: ipvs_conn::SeqAdjust| SeqAdjust { init_seq: s.init_seq, delta: s.delta, previous_delta: s.previous_delta };
    Some((conv(c.in_seq()), conv(c.out_seq())))
}

/// The conn's sync bookkeeping, as the master reads it.
fn wire_state(c: &ConnMut<'_>) -> WireState {
    WireState { old_state: u16::from(c.old_state()), sync_endtime: c.sync_endtime().total_millis() }
}

fn store_state(c: &mut ConnMut<'_>, st: WireState) {
    c.set_old_state(u8::try_from(st.old_state).unwrap_or(u8::MAX));
    c.set_sync_endtime(Instant::from_millis(st.sync_endtime));
}

/// Whether the master would send a change of `state` at once (facts §12.7 step 4: a change since the last sync
/// into a synced state other than ESTABLISHED).
fn is_forced(protocol: Protocol, state: u8, old_state: u8) -> bool {
    let established = match protocol {
        Protocol::Tcp => TcpState::Established.as_u8(),
        Protocol::Sctp => SctpState::Established.as_u8(),
        _ => return false,
    };
    state != old_state && state != established && resync::state_is_synced(protocol, u16::from(state), false)
}

impl MasterInner {
    /// One update of conn `id` (its view after the packet, `pkts`) and then of its controllers, as the outcomes
    /// ask (facts §3.6, §12.7, §12.10.1).
    fn update_chain(&mut self, table: &ConnTable, now: Instant, id: ConnId, view: ConnView, pkts: u32) {
        let mut next = Some((id, view, pkts));
        for _ in 0..MAX_CHAIN {
            let Some((id, view, pkts)) = next.take() else { break };
            let Some(control) = self.update_one(table, now, id, &view, pkts) else { break };
            next = self.controller(table, control);
        }
    }

    /// [`Master::conn_update`] of one conn with its bookkeeping; returns its controller if the outcome says to
    /// evaluate it.
    fn update_one(
        &mut self,
        table: &ConnTable,
        now: Instant,
        id: ConnId,
        view: &ConnView,
        pkts: u32,
    ) -> Option<ConnId> {
        // A conn to a removed mixed-family tunnel real server may outlive the rule that kept sync off: never
        // send it (its entry has no real-server address of its family).
        if crate::forward::is_mixed_family(view) {
            return None;
        }
        let (control, mut st, seq, pe) = table.with_conn(id, |c| (c.control(), wire_state(c), seq_of(c), pe_of(c)))?;
        let by_template = control.and_then(|cid| table.get(cid)).is_some_and(|v| v.is_template());
        let record = record_of(view, seq, pe);
        let info = ConnSyncInfo { record: &record, timeout: view.timeout, pkts, controlled_by_template: by_template };
        let before = st;
        let outcome = self.master.conn_update(now, &info, &mut st);
        if st != before {
            table.with_conn(id, |c| store_state(c, st));
        }
        if outcome.sync_controller {
            control
        } else {
            None
        }
    }

    /// The controller's view and `pkts` (a template's `in_pkts` is incremented, facts §3.6).
    fn controller(&self, table: &ConnTable, cid: ConnId) -> Option<(ConnId, ConnView, u32)> {
        let master = &self.master;
        table.with_conn(cid, |c| {
            let template = c.flags().contains(ConnFlags::TEMPLATE);
            let mut in_pkts = c.in_pkts();
            let pkts = master.controller_pkts(template, &mut in_pkts);
            if template {
                c.set_in_pkts(in_pkts);
            }
            (cid, c.view(), pkts)
        })
    }

    /// The timer pushed conn `id` back 60 s ("expire later", facts §3.5): it is evaluated as after a packet,
    /// with `sync_threshold` packets, so the backup's copy gets the new 60 s timeout too.
    fn expire_later(&mut self, table: &ConnTable, now: Instant, id: ConnId) {
        if let Some(view) = table.get(id) {
            let pkts = self.master.threshold_pkts();
            self.update_chain(table, now, id, view, pkts);
        }
    }

    /// A one-packet conn was forwarded: never sent itself, but its template is evaluated (v1 always, facts
    /// §12.10.1).
    fn one_packet(&mut self, table: &ConnTable, now: Instant, view: &ConnView, control: Option<ConnId>) {
        if crate::forward::is_mixed_family(view) {
            return;
        }
        let record = record_of(view, None, None);
        let by_template = control.and_then(|cid| table.get(cid)).is_some_and(|v| v.is_template());
        let info = ConnSyncInfo {
            record: &record,
            timeout: view.timeout,
            pkts: self.master.threshold_pkts(),
            controlled_by_template: by_template,
        };
        let mut st = WireState::new(now);
        let outcome = self.master.conn_update(now, &info, &mut st);
        if let (true, Some(cid)) = (outcome.sync_controller, control) {
            if let Some((cid, cview, pkts)) = self.controller(table, cid) {
                self.update_chain(table, now, cid, cview, pkts);
            }
        }
    }

    /// Feeds the running resync dump from the table as far as the master wants records, after taking its
    /// events (a new dump rewinds the cursor).
    fn serve_resync(&mut self, table: &ConnTable, now: Instant) {
        while let Some(ev) = self.master.poll_event() {
            if let MasterEvent::ResyncStarted { .. } = ev {
                let mut ids = Vec::with_capacity(table.len());
                table.for_each(|id, _| ids.push(id));
                self.cursor = Some(ResyncCursor { ids, pos: 0 });
            }
            self.events.push_back(SyncDaemonEvent::Master(ev));
        }
        let persist_mode = self.master.config().sync_persist_mode;
        while self.master.resync_wanted() > 0 {
            let Some(cursor) = self.cursor.as_mut() else { break };
            let mut iter = ResyncIter { table, cursor, persist_mode, exhausted: false };
            let pulled = self.master.push_resync_conns(now, &mut iter);
            if iter.exhausted {
                self.cursor = None;
            }
            if pulled == 0 {
                break;
            }
        }
    }
}

/// The real server a synced conn binds to (the kernel's `ip_vs_find_dest`, facts §12.6.3): the service by
/// fwmark, protocol, virtual address and port; in it the server at `daddr` with port `ports[0]`, else
/// `ports[1]`.
fn find_dest(
    ctl: &ControlState,
    protocol: Protocol,
    vaddr: IpAddr,
    vport: u16,
    fwmark: u32,
    daddr: IpAddr,
    ports: [u16; 2],
) -> Option<&DestSlot> {
    let svc = ctl.find_service(protocol, vaddr, vport, fwmark)?;
    ports.into_iter().find_map(|port| {
        let addr = SocketAddr::new(daddr, port);
        svc.dests.iter().filter_map(|id| ctl.dest(*id)).find(|d| d.config.addr == addr)
    })
}

/// The ports to find a conn's real server by: its `dport`, or 0 first for a fwmark conn whose method is not
/// NAT; then the other one (`port ^ dport`).
fn dest_ports(fwmark: u32, flags: ConnFlags, dport: u16) -> [u16; 2] {
    let first = if fwmark != 0 && flags.bits() & ConnFlags::FWD_MASK.bits() != 0 { 0 } else { dport };
    [first, first ^ dport]
}

/// The flags of a synced conn bound to `dest` (the kernel's `ip_vs_bind_dest` for `SYNC` conns): this
/// director's forwarding method and `NOOUTPUT` replace the synced ones; a conn keeps its synced `INACTIVE`, a
/// template is always `INACTIVE`.
fn bound_flags(flags: ConnFlags, dest: &DestSlot) -> ConnFlags {
    let template = flags.contains(ConnFlags::TEMPLATE);
    let mut own = dest.config.conn_flags();
    if !template {
        own.set(ConnFlags::INACTIVE, false);
    }
    ConnFlags((flags.bits() & !(ConnFlags::FWD_MASK.bits() | ConnFlags::NOOUTPUT.bits())) | own.bits())
}

/// Counts a conn (or template) bound to `dest` with `flags`.
fn bind_counts(engine: &Engine, dest: &DestSlot, flags: ConnFlags) {
    let template = flags.contains(ConnFlags::TEMPLATE);
    let active = !flags.contains(ConnFlags::INACTIVE);
    dest.update_state(&engine.events, |s| if template { s.bind_template() } else { s.bind_conn(active) });
}

/// Takes back what [`bind_counts`] counted.
fn unbind_counts(engine: &Engine, dest: &DestSlot, flags: ConnFlags) {
    let template = flags.contains(ConnFlags::TEMPLATE);
    let active = !flags.contains(ConnFlags::INACTIVE);
    dest.update_state(&engine.events, |s| if template { s.unbind_template() } else { s.unbind_conn(active) });
}

/// # Connection synchronisation (see [`crate::sync_glue`] and facts §12)
impl Engine {
    // ---- master -------------------------------------------------------------------------------------------

    /// Starts feeding `master` from the packet path (replacing a running master, whose queued messages are
    /// dropped, as stopping a kernel master drops them).
    ///
    /// # Errors
    /// [`ConfigError::MixedFamilyWithSync`] while a service has a real server of the other family (facts
    /// §12.1; the master is dropped and nothing changes).
    pub fn start_sync_master(&self, master: Master, options: SyncMasterOptions) -> Result<(), EngineError> {
        // The control read lock first, as on the packet path; `add_dest` checks `running` under the write lock.
        let ctl = self.ctl.read();
        if ctl.has_mixed_family_dests() {
            return Err(ConfigError::MixedFamilyWithSync.into());
        }
        let mut g = self.sync_master.inner.lock();
        *g = Some(MasterInner { master, options, cursor: None, events: VecDeque::new() });
        self.sync_master.running.store(true, Ordering::Relaxed);
        drop(g);
        drop(ctl);
        Ok(())
    }

    /// Stops the master and hands it back (with whatever it still queues), if one ran.
    pub fn stop_sync_master(&self) -> Option<Master> {
        let mut g = self.sync_master.inner.lock();
        self.sync_master.running.store(false, Ordering::Relaxed);
        g.take().map(|m| m.master)
    }

    /// Whether a sync master runs.
    pub fn sync_master_running(&self) -> bool {
        self.sync_master.running()
    }

    /// Runs `f` on the running master (statistics, [`Master::reconfigure`], [`Master::begin_resync`],
    /// [`Master::flush`]); `None` if none runs. Packets wait for the master's lock meanwhile: keep it short, and
    /// do not call the engine from `f`.
    pub fn with_sync_master<R>(&self, f: impl FnOnce(&mut Master) -> R) -> Option<R> {
        self.sync_master.inner.lock().as_mut().map(|m| f(&mut m.master))
    }

    /// Writes the next sync datagram into `buf` and says where it goes (send it to the group on UDP port
    /// base + [`Transmit::port_index`]): the master's messages (ordinary sync first, then paced bulk-resync
    /// messages fed from the table), then the backup's resync requests. `None` when nothing is due now.
    ///
    /// Changes after every client packet (while a master runs), [`Engine::handle_timeout`],
    /// [`Engine::handle_sync_datagram`], and as time passes (the master's 2 s flush, resync pacing).
    #[must_use]
    pub fn poll_sync_transmit(&self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if self.sync_master.running() {
            let mut g = self.sync_master.inner.lock();
            if let Some(m) = g.as_mut() {
                m.serve_resync(&self.conns, now);
                if let Some(t) = m.master.poll_transmit(now, buf) {
                    return Some(t);
                }
            }
        }
        let mut g = self.sync_backup.inner.lock();
        g.as_mut()?.backup.poll_transmit(now, buf)
    }

    /// The sync daemons' next deadline (a partly filled message ageing out, resync pacing, a resync request to
    /// retry); included in [`Engine::poll_timeout`].
    #[must_use]
    pub fn poll_sync_timeout(&self) -> Option<Instant> {
        let master = if self.sync_master.running() {
            self.sync_master.inner.lock().as_ref().and_then(|m| m.master.poll_timeout())
        } else {
            None
        };
        let backup = self.sync_backup.inner.lock().as_ref().and_then(|b| b.backup.poll_timeout());
        match (master, backup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the sync daemons' timers (part of [`Engine::handle_timeout`]). Spurious calls do nothing.
    pub fn handle_sync_timeout(&self, now: Instant) {
        if self.sync_master.running() {
            if let Some(m) = self.sync_master.inner.lock().as_mut() {
                m.master.handle_timeout(now);
            }
        }
        if let Some(b) = self.sync_backup.inner.lock().as_mut() {
            b.backup.handle_timeout(now);
        }
    }

    /// The next event of the sync daemons (resync dumps started and finished by the master, resync outcomes
    /// of the backup).
    #[must_use]
    pub fn poll_sync_event(&self) -> Option<SyncDaemonEvent> {
        if let Some(m) = self.sync_master.inner.lock().as_mut() {
            if let Some(ev) = m.events.pop_front() {
                return Some(ev);
            }
        }
        let mut g = self.sync_backup.inner.lock();
        g.as_mut()?.backup.poll_event().map(SyncDaemonEvent::Backup)
    }

    /// The packet path's hook after a client packet of conn `id` (the kernel's sync point, facts §4.1 step 9):
    /// the installed [`SyncFeed`](crate::SyncFeed), then the running master.
    pub(crate) fn sync_client_packet(&self, now: Instant, id: ConnId, view: &ConnView, pkts: u32) {
        if let Some(feed) = &self.sync {
            feed.conn_update(now, id, view, pkts);
        }
        if self.sync_master.running() {
            if let Some(m) = self.sync_master.inner.lock().as_mut() {
                m.update_chain(&self.conns, now, id, *view, pkts);
            }
        }
    }

    /// The timer's hook after it pushed conns back (controllers of live conns): a running master sends them
    /// again, as the kernel's "expire later" does.
    pub(crate) fn sync_expire_later(&self, now: Instant, ids: &[ConnId]) {
        if ids.is_empty() || !self.sync_master.running() {
            return;
        }
        if let Some(m) = self.sync_master.inner.lock().as_mut() {
            for &id in ids {
                m.expire_later(&self.conns, now, id);
            }
        }
    }

    /// The packet path's hook after a one-packet conn was forwarded. Returns whether a master took it (it then
    /// counted the packet on the template, as the kernel's sync does).
    pub(crate) fn sync_one_packet(&self, now: Instant, view: &ConnView, control: Option<ConnId>) -> bool {
        if !self.sync_master.running() {
            return false;
        }
        match self.sync_master.inner.lock().as_mut() {
            Some(m) => {
                m.one_packet(&self.conns, now, view, control);
                true
            }
            None => false,
        }
    }

    /// The packet path's hook after a reply changed the state of conn `id`.
    pub(crate) fn sync_reply_state(&self, now: Instant, id: ConnId) {
        if !self.sync_master.running() {
            return;
        }
        let mut g = self.sync_master.inner.lock();
        let Some(m) = g.as_mut().filter(|m| m.options.sync_reply_state_changes) else { return };
        let Some((view, old_state)) = self.conns.with_conn(id, |c| (c.view(), c.old_state())) else { return };
        if !view.is_template() && is_forced(view.protocol, view.state, old_state) {
            m.update_chain(&self.conns, now, id, view, view.in_pkts);
        }
    }

    // ---- backup -------------------------------------------------------------------------------------------

    /// A [`BackupConfig`] for this engine: its per-state timeouts (for records without one, i.e. v0) and its
    /// persistence engines (`sip` while
    /// [`EngineConfig::sip_persistence_engine`](crate::EngineConfig::sip_persistence_engine) is on, else none:
    /// records with PE data are then skipped). Adjust `syncid` and `maxlen` to the daemon's configuration.
    pub fn sync_backup_config(&self) -> BackupConfig {
        let t = self.timeouts();
        BackupConfig {
            tcp_timeouts: t.tcp,
            udp_timeouts: t.udp,
            sctp_timeouts: t.sctp,
            known_pes: if self.sip_pe { vec![pe_sip::NAME.as_bytes().to_vec()] } else { Vec::new() },
            ..BackupConfig::default()
        }
    }

    /// Starts a sync backup: [`Engine::handle_sync_datagram`] applies what it accepts. Replaces a running one.
    ///
    /// # Errors
    /// [`ConfigError::MixedFamilyWithSync`] while a service has a real server of the other family (facts
    /// §12.1; the backup is dropped and nothing changes).
    pub fn start_sync_backup(&self, backup: Backup) -> Result<(), EngineError> {
        // `inner` first, then the control read lock: the order of `handle_sync_datagram`.
        let mut g = self.sync_backup.inner.lock();
        let ctl = self.ctl.read();
        if ctl.has_mixed_family_dests() {
            return Err(ConfigError::MixedFamilyWithSync.into());
        }
        self.sync_backup.running.store(true, Ordering::Relaxed);
        drop(ctl);
        *g = Some(BackupInner { backup, totals: SyncApplied::default() });
        Ok(())
    }

    /// Stops the backup and hands it back, if one ran. The conns it created stay and time out per their
    /// state (a backup taking over keeps serving them).
    pub fn stop_sync_backup(&self) -> Option<Backup> {
        let mut g = self.sync_backup.inner.lock();
        self.sync_backup.running.store(false, Ordering::Relaxed);
        g.take().map(|b| b.backup)
    }

    /// Whether a sync backup runs.
    pub fn sync_backup_running(&self) -> bool {
        self.sync_backup.running()
    }

    /// Runs `f` on the running backup (statistics, [`Backup::request_resync`]); `None` if none runs. Do not call
    /// the engine from `f`.
    pub fn with_sync_backup<R>(&self, f: impl FnOnce(&mut Backup) -> R) -> Option<R> {
        self.sync_backup.inner.lock().as_mut().map(|b| f(&mut b.backup))
    }

    /// What the running backup applied since it started.
    pub fn sync_backup_totals(&self) -> Option<SyncApplied> {
        self.sync_backup.inner.lock().as_ref().map(|b| b.totals)
    }

    /// Handles a datagram heard on a sync port at `now`: a bulk-resync request goes to the master (if one
    /// runs); anything else to the backup, whose accepted records are applied ([`Engine::apply_sync`]).
    pub fn handle_sync_datagram(&self, now: Instant, bytes: &[u8]) -> SyncInput {
        let request = resync::is_resync(bytes) && matches!(resync::parse(bytes), Ok(ResyncMessage::Request { .. }));
        if request || self.sync_backup.inner.lock().is_none() {
            if self.sync_master.running() {
                if let Some(m) = self.sync_master.inner.lock().as_mut() {
                    return SyncInput::Master(m.master.handle_datagram(now, bytes));
                }
            }
            if !request {
                return SyncInput::NoDaemon;
            }
        }
        let mut g = self.sync_backup.inner.lock();
        let Some(b) = g.as_mut() else { return SyncInput::NoDaemon };
        match b.backup.handle_datagram(now, bytes) {
            Ok(batch) => {
                if batch.records.is_empty() && batch.skipped == 0 && batch.dropped_rest.is_none() {
                    if let ipvs_sync::backup::BatchSource::ResyncControl(_) = batch.source {
                        return SyncInput::ResyncControl;
                    }
                }
                let applied = self.apply_sync(now, &batch);
                b.totals.add(&applied);
                SyncInput::Applied(applied)
            }
            Err(e) => SyncInput::Refused(e),
        }
    }

    /// Applies the records of a batch a [`Backup`] accepted, at `now`, as the kernel's backup does (facts
    /// §12.6; see the module docs): templates first, then conns, each created or updated, bound to this
    /// director's real server.
    pub fn apply_sync(&self, now: Instant, batch: &BackupBatch) -> SyncApplied {
        let ctl = self.ctl.read();
        let mut out = SyncApplied { skipped: batch.skipped as u64, ..SyncApplied::default() };
        let templates = batch.records.iter().filter(|r| r.is_template());
        let conns = batch.records.iter().filter(|r| !r.is_template());
        for rec in templates.chain(conns) {
            self.apply_record(now, &ctl, rec, &mut out);
        }
        out
    }

    /// Tries to bind every synced conn still unbound (e.g. after adding the real servers, or at failover);
    /// the kernel only tries when the conn's next record arrives. Returns how many were bound.
    pub fn bind_synced_conns(&self) -> usize {
        let ctl = self.ctl.read();
        let mut ids = Vec::new();
        self.conns.for_each(|id, v| {
            if v.dest.is_none() && v.flags.contains(ConnFlags::SYNC) {
                ids.push(id);
            }
        });
        ids.into_iter().filter(|id| self.try_bind(&ctl, *id)).count()
    }

    fn apply_record(&self, now: Instant, ctl: &ControlState, rec: &BackupRecord, out: &mut SyncApplied) {
        let c = &rec.conn;
        let existing = match rec.lookup() {
            Lookup::Conn => self.conns.lookup_in(&InKey::new(c.protocol, c.caddr, c.cport, c.vaddr, c.vport)),
            Lookup::Template => self.conns.lookup_pe_template(
                &TemplateKey { protocol: c.protocol, caddr: c.caddr, vaddr: c.vaddr, vport: c.vport },
                c.pe_data.as_deref(),
            ),
        };
        if let Some((id, view)) = existing {
            let other_dest = !rec.is_template() && (view.daddr != c.daddr || view.dport != c.dport);
            if !other_dest {
                self.update_synced(now, ctl, id, rec);
                out.updated += 1;
                return;
            }
            match rec.on_other_dest() {
                OtherDest::IgnoreRecord => {
                    out.ignored += 1;
                    return;
                }
                OtherDest::ReplaceConn => match self.conns.expire(id) {
                    Ok(e) => {
                        self.settle_expired(ctl, std::slice::from_ref(&e));
                        out.replaced += 1;
                    }
                    Err(_) => {
                        out.failed += 1;
                        return;
                    }
                },
            }
        }
        self.create_synced(now, ctl, rec, out);
    }

    /// An existing conn or template updated by a record (facts §12.6.2, §12.6.4–6).
    fn update_synced(&self, now: Instant, ctl: &ControlState, id: ConnId, rec: &BackupRecord) {
        let state = u8::try_from(rec.state()).unwrap_or(u8::MAX);
        let seq = seq_adjusts(&rec.conn);
        let done = self.conns.update(now, id, |c| {
            let old = c.flags();
            let flip = if c.dest().is_some() { rec.inactive_changed(old.bits()) } else { None };
            c.set_flags(ConnFlags(rec.updated_flags(old.bits())));
            if let Some((i, o)) = seq {
                c.set_in_seq(i);
                c.set_out_seq(o);
            }
            c.set_in_pkts(rec.in_pkts);
            c.set_state(state);
            c.set_old_state(state);
            c.set_timeout(rec.timeout);
            (flip, c.dest())
        });
        match done {
            Some((Some(inactive), Some(d))) => {
                if let Some(dest) = ctl.dest(d) {
                    dest.update_state(&self.events, |s| {
                        if inactive {
                            s.conn_became_inactive();
                        } else {
                            s.conn_became_active();
                        }
                    });
                }
            }
            Some((_, None)) => {
                self.try_bind(ctl, id);
            }
            _ => {}
        }
    }

    /// A new conn or template from a record (facts §12.6.3–6).
    fn create_synced(&self, now: Instant, ctl: &ControlState, rec: &BackupRecord, out: &mut SyncApplied) {
        let c = &rec.conn;
        let state = u8::try_from(rec.state()).unwrap_or(u8::MAX);
        let fwmark = c.fwmark.unwrap_or(0);
        let dest = find_dest(ctl, c.protocol, c.vaddr, c.vport, fwmark, c.daddr, rec.dest_ports);
        let mut flags = ConnFlags(rec.flags);
        if let Some(d) = dest {
            flags = bound_flags(flags, d);
        }
        let control = match dest {
            Some(d) if !rec.is_template() => self.synced_template(ctl, d, c),
            _ => None,
        };
        let new = NewConn {
            protocol: c.protocol,
            caddr: c.caddr,
            cport: c.cport,
            vaddr: c.vaddr,
            vport: c.vport,
            daddr: c.daddr,
            dport: c.dport,
            flags,
            state,
            dest: dest.map(|d| d.id),
            fwmark,
            timeout: rec.timeout,
            control,
        };
        if let Some(d) = dest {
            bind_counts(self, d, flags);
        }
        let inserted = match c.pe_data.as_deref() {
            Some(pe) if rec.is_template() => self.conns.insert_pe_template(now, new, pe),
            _ => self.conns.insert(now, new),
        };
        match inserted {
            Ok(id) => {
                let seq = seq_adjusts(c);
                self.conns.with_conn(id, |m| {
                    m.set_in_pkts(rec.in_pkts);
                    m.set_old_state(state);
                    if let Some((i, o)) = seq {
                        m.set_in_seq(i);
                        m.set_out_seq(o);
                    }
                });
                out.created += 1;
                if dest.is_none() {
                    out.unbound += 1;
                }
            }
            Err(_) => {
                if let Some(d) = dest {
                    unbind_counts(self, d, flags);
                }
                out.failed += 1;
            }
        }
    }

    /// The synced template a new synced conn of a persistent service belongs to: the one its client would use
    /// here, if it exists and points at the same real server. (Templates with PE data are never found: the
    /// conn's record does not carry the Call-ID.)
    fn synced_template(&self, ctl: &ControlState, dest: &DestSlot, c: &SyncConn) -> Option<ConnId> {
        let svc = ctl.services.get(&dest.service)?;
        let p = svc.config.persistence?;
        let plan = persistence::template_for(&svc.config.key, p.netmask, c.protocol, c.caddr, c.vaddr, c.vport);
        let (tid, tv) = self.conns.lookup_template(&plan.key)?;
        (tv.dest == Some(dest.id)).then_some(tid)
    }

    /// The kernel's `ip_vs_try_bind_dest`: binds an unbound conn to the real server its addresses name now.
    fn try_bind(&self, ctl: &ControlState, id: ConnId) -> bool {
        let Some(v) = self.conns.get(id) else { return false };
        if v.dest.is_some() {
            return false;
        }
        let ports = dest_ports(v.fwmark, v.flags, v.dport);
        let Some(dest) = find_dest(ctl, v.protocol, v.vaddr, v.vport, v.fwmark, v.daddr, ports) else { return false };
        let bound = self.conns.with_conn(id, |c| {
            if c.dest().is_some() {
                return None;
            }
            let flags = bound_flags(c.flags(), dest);
            c.set_flags(flags);
            c.set_dest(Some(dest.id));
            Some(flags)
        });
        match bound {
            Some(Some(flags)) => {
                bind_counts(self, dest, flags);
                true
            }
            _ => false,
        }
    }
}

/// A record's seq adjustments, in the table's type.
fn seq_adjusts(c: &SyncConn) -> Option<(ipvs_conn::SeqAdjust, ipvs_conn::SeqAdjust)> {
    let conv =
        |s: SeqAdjust| ipvs_conn::SeqAdjust { init_seq: s.init_seq, delta: s.delta, previous_delta: s.previous_delta };
    match (c.in_seq, c.out_seq) {
        (None, None) => None,
        (i, o) => Some((conv(i.unwrap_or_default()), conv(o.unwrap_or_default()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;
    use crate::ipvsadm::parse_rules;
    use crate::verdict::{Direction, PacketBuf, Verdict};
    use crate::EngineConfig;
    use ipvs_proto::Duration;
    use ipvs_sync::{decode_message, encode_message, MasterConfig, Version};

    const T0: Instant = Instant::from_secs(10);
    const CLIENT: &str = "192.0.2.7";

    fn engine(rules: &str) -> Engine {
        let e = Engine::new(EngineConfig::new(1024, [3; 16])).unwrap();
        for r in parse_rules(rules).unwrap() {
            e.apply(Instant::ZERO, r.command).unwrap();
        }
        e
    }

    fn backup(rules: &str) -> Engine {
        let e = engine(rules);
        e.start_sync_backup(Backup::new(e.sync_backup_config()).unwrap()).unwrap();
        e
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A TCP record 192.0.2.7:`cport` → 10.0.0.100:80 → `daddr`.
    fn rec(cport: u16, daddr: &str, flags: u32, state: u16, timeout: u32) -> SyncConn {
        let d: SocketAddr = daddr.parse().unwrap();
        SyncConn {
            protocol: Protocol::Tcp,
            caddr: ip(CLIENT),
            cport,
            vaddr: ip("10.0.0.100"),
            vport: 80,
            daddr: d.ip(),
            dport: d.port(),
            flags,
            state,
            timeout: Some(timeout),
            fwmark: Some(0),
            in_seq: None,
            out_seq: None,
            pe_name: None,
            pe_data: None,
        }
    }

    fn feed(e: &Engine, now: Instant, version: Version, conns: &[SyncConn]) -> SyncApplied {
        let mut msg = Vec::new();
        encode_message(version, 0, conns, &mut msg).unwrap();
        match e.handle_sync_datagram(now, &msg) {
            SyncInput::Applied(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// (active, inactive, persistent) of the real server at `addr`.
    fn counts(e: &Engine, addr: &str) -> (u32, u32, u32) {
        let addr: SocketAddr = addr.parse().unwrap();
        let s = e.services().into_iter().flat_map(|s| s.dests).find(|d| d.config.addr == addr).unwrap();
        (s.active_conns, s.inactive_conns, s.persist_conns)
    }

    fn the_conn(e: &Engine, now: Instant, cport: u16) -> crate::ConnInfo {
        e.conns(now).into_iter().find(|c| c.client.port() == cport && !c.is_template()).unwrap()
    }

    const TWO_NAT: &str = "-A -t 10.0.0.100:80 -s rr\n\
                           -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m\n\
                           -a -t 10.0.0.100:80 -r 10.1.0.2:8080 -m\n";

    #[test]
    fn backup_creates_updates_replaces_and_ignores() {
        let e = backup(TWO_NAT);
        let es = rec(40000, "10.1.0.1:8080", 0, 1, 900);
        let a = feed(&e, T0, Version::V1, &[es]);
        assert_eq!((a.created, a.unbound), (1, 0));
        let c = the_conn(&e, T0, 40000);
        assert_eq!((c.state, c.expires, c.in_pkts), ("ESTABLISHED", Duration::from_secs(900), 3));
        assert!(c.flags.contains(ConnFlags::SYNC) && !c.flags.contains(ConnFlags::INACTIVE));
        assert_eq!(counts(&e, "10.1.0.1:8080"), (1, 0, 0));
        // CLOSE_WAIT, INACTIVE: one count moves, the state and timer follow.
        let t1 = T0 + Duration::from_secs(5);
        let cw = rec(40000, "10.1.0.1:8080", 0x100, 7, 60);
        assert_eq!(feed(&e, t1, Version::V1, &[cw]).updated, 1);
        let c = the_conn(&e, t1, 40000);
        assert_eq!((c.state, c.expires), ("CLOSE_WAIT", Duration::from_secs(60)));
        assert_eq!(counts(&e, "10.1.0.1:8080"), (0, 1, 0));
        // An INACTIVE record naming another real server: a late notice, ignored.
        let late = rec(40000, "10.1.0.2:8080", 0x100, 5, 120);
        assert_eq!(feed(&e, t1, Version::V1, &[late]).ignored, 1);
        assert_eq!(the_conn(&e, t1, 40000).real, "10.1.0.1:8080".parse().unwrap());
        // An active record naming another real server replaces the conn.
        assert_eq!(feed(&e, t1, Version::V1, &[rec(40000, "10.1.0.2:8080", 0, 1, 900)]).replaced, 1);
        assert_eq!(the_conn(&e, t1, 40000).real, "10.1.0.2:8080".parse().unwrap());
        assert_eq!(counts(&e, "10.1.0.1:8080"), (0, 0, 0));
        assert_eq!(counts(&e, "10.1.0.2:8080"), (1, 0, 0));
        assert!(std::iter::from_fn(|| e.poll_event()).any(|ev| matches!(ev, crate::Event::ConnExpired { .. })));
        // No real server at 10.1.0.9: unbound until one is added.
        let a = feed(&e, t1, Version::V1, &[rec(40001, "10.1.0.9:8080", 0, 1, 900)]);
        assert_eq!((a.created, a.unbound), (1, 1));
        assert_eq!(the_conn(&e, t1, 40001).dest, None);
        assert_eq!(e.bind_synced_conns(), 0);
        for r in parse_rules("-a -t 10.0.0.100:80 -r 10.1.0.9:8080 -m\n").unwrap() {
            e.apply(t1, r.command).unwrap();
        }
        assert_eq!(e.bind_synced_conns(), 1);
        assert!(the_conn(&e, t1, 40001).dest.is_some());
        assert_eq!(counts(&e, "10.1.0.9:8080"), (1, 0, 0));
        // Its packets are now forwarded (NAT) to that real server.
        let mut pkt = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 0, 2, 7], [10, 0, 0, 100], 64)
            .tcp(40001, 80, 1, 1000)
            .ack(1)
            .write(&mut pkt, b"x")
            .unwrap();
        let mut data = vec![0u8; 64 + pkt.len()];
        data[64..].copy_from_slice(&pkt);
        let mut buf = PacketBuf::new(&mut data, 64, pkt.len()).unwrap();
        let v = e.handle_packet(t1, &mut buf, Direction::FromClient);
        assert!(matches!(v, Verdict::Forward { next_hop, .. } if next_hop == ip("10.1.0.9")), "{v:?}");
        // Created: the first conn, its replacement, the unbound one.
        assert_eq!(e.sync_backup_totals().map(|t| (t.created, t.replaced, t.ignored)), Some((3, 1, 1)));
    }

    #[test]
    fn backup_binds_with_its_own_method_and_fwmark_ports() {
        // The master forwards by NAT; this backup's server of the same address is DR.
        let e = backup("-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.1.0.1:80 -g\n");
        feed(&e, T0, Version::V1, &[rec(40000, "10.1.0.1:80", 0, 1, 900)]);
        let c = the_conn(&e, T0, 40000);
        assert_eq!(c.flags.fwd_method(), Some(ipvs_proto::FwdMethod::DirectRoute));
        assert!(c.flags.contains(ConnFlags::NOOUTPUT));
        // A persistent fwmark service with a port-less DR server: the template (protocol 0, the mark in vaddr)
        // and the conn are found by port 0 first (facts §12.6.3), and the conn is linked to the template.
        let e = backup("-A -f 5 -s rr -p 60\n-a -f 5 -r 10.2.0.1 -g\n");
        let mut tpl = rec(0, "10.2.0.1:0", 0x1183, 1, 60);
        tpl.protocol = Protocol::from(0);
        tpl.vaddr = ip("0.0.0.5");
        tpl.vport = 0;
        tpl.fwmark = Some(5);
        let mut conn = rec(40000, "10.2.0.1:80", 0x83, 1, 900);
        conn.fwmark = Some(5);
        // Conn first on the wire: templates are applied first anyway.
        let a = feed(&e, T0, Version::V1, &[conn, tpl]);
        assert_eq!((a.created, a.unbound), (2, 0));
        assert_eq!(counts(&e, "10.2.0.1:0"), (1, 0, 1));
        let t = e.conns(T0).into_iter().find(|c| c.is_template()).unwrap();
        assert_eq!((t.state, t.expires, t.fwmark), ("ASSURED", Duration::from_secs(60), 5));
        let n_control = e.conn_table().get(t.id).unwrap().n_control;
        assert_eq!(n_control, 1, "the synced conn is controlled by the synced template");
    }

    #[test]
    fn v0_records_take_the_engines_timeouts() {
        let e = backup(TWO_NAT);
        e.set_timeouts(Timeouts { tcp: 1000, tcpfin: 100, udp: 200 }).unwrap();
        // The backup was started before the change: restart it to pick the new table up.
        e.start_sync_backup(Backup::new(e.sync_backup_config()).unwrap()).unwrap();
        let mut r = rec(40000, "10.1.0.1:8080", 0, 1, 0);
        r.timeout = None;
        r.fwmark = None;
        feed(&e, T0, Version::V0, &[r]);
        assert_eq!(the_conn(&e, T0, 40000).expires, Duration::from_secs(1000));
    }

    fn tcp(src: &str, dst: &str, flags: &str, payload: &[u8]) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (IpAddr::V4(si), IpAddr::V4(di)) = (s.ip(), d.ip()) else { unreachable!() };
        let mut b = etherparse::PacketBuilder::ipv4(si.octets(), di.octets(), 64).tcp(s.port(), d.port(), 1, 1000);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('A') {
            b = b.ack(1);
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn udp(src: &str, dst: &str) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (IpAddr::V4(si), IpAddr::V4(di)) = (s.ip(), d.ip()) else { unreachable!() };
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4(si.octets(), di.octets(), 64)
            .udp(s.port(), d.port())
            .write(&mut out, b"q")
            .unwrap();
        out
    }

    fn run(e: &Engine, pkt: &[u8], dir: Direction) -> Verdict {
        let mut data = vec![0u8; 64 + pkt.len()];
        data[64..].copy_from_slice(pkt);
        let mut buf = PacketBuf::new(&mut data, 64, pkt.len()).unwrap();
        e.handle_packet(T0, &mut buf, dir)
    }

    /// Every record the master sends, in order.
    fn sent(e: &Engine) -> Vec<SyncConn> {
        e.with_sync_master(|m| m.flush(T0));
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(t) = e.poll_sync_transmit(T0, &mut buf) {
            out.extend(decode_message(&buf[..t.len]).unwrap().into_message().conns);
        }
        out
    }

    const PERSISTENT: &str = "-A -t 10.0.0.100:80 -s rr -p 300\n\
                              -a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m\n\
                              -A -u 10.0.0.100:53 -s rr -o -p 60\n\
                              -a -u 10.0.0.100:53 -r 10.3.0.1:5353 -m\n";

    #[test]
    fn a_template_pushed_back_by_its_live_conn_is_sent_again_with_60_s() {
        let e = engine(PERSISTENT);
        e.start_sync_master(Master::new(MasterConfig::default()).unwrap(), SyncMasterOptions::default()).unwrap();
        let c = "192.0.2.7:40000";
        for (pkt, dir) in [
            (tcp(c, "10.0.0.100:80", "S", b""), Direction::FromClient),
            (tcp("10.1.0.1:8080", c, "SA", b""), Direction::FromRealServer),
            (tcp(c, "10.0.0.100:80", "A", b""), Direction::FromClient),
            (tcp(c, "10.0.0.100:80", "A", b"data"), Direction::FromClient),
        ] {
            assert!(matches!(run(&e, &pkt, dir), Verdict::Forward { .. }));
        }
        assert!(!sent(&e).is_empty());
        // The template (300 s) is due while its ESTABLISHED conn (900 s) lives: pushed back 60 s, and sent.
        let later = T0 + Duration::from_secs(300);
        e.handle_timeout(later);
        e.with_sync_master(|m| m.flush(later));
        let mut recs = Vec::new();
        let mut buf = Vec::new();
        while let Some(t) = e.poll_sync_transmit(later, &mut buf) {
            recs.extend(decode_message(&buf[..t.len]).unwrap().into_message().conns);
        }
        let tpl = e.conns(later).into_iter().find(|c| c.is_template()).expect("template kept");
        assert_eq!(tpl.expires, Duration::from_secs(60));
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert!(recs[0].is_template() && recs[0].timeout == Some(60), "{recs:?}");
        // Without a master nothing is queued, and the table behaves the same.
        let quiet = engine(PERSISTENT);
        for pkt in [tcp(c, "10.0.0.100:80", "S", b""), tcp(c, "10.0.0.100:80", "A", b"")] {
            assert!(matches!(run(&quiet, &pkt, Direction::FromClient), Verdict::Forward { .. }));
        }
        quiet.handle_timeout(later);
        assert!(quiet.conns(later).iter().any(|c| c.is_template() && c.expires == Duration::from_secs(60)));
    }

    #[test]
    fn master_sends_conns_templates_and_reply_state_changes() {
        for reply_changes in [true, false] {
            let e = engine(PERSISTENT);
            let options = SyncMasterOptions { sync_reply_state_changes: reply_changes };
            e.start_sync_master(Master::new(MasterConfig::default()).unwrap(), options).unwrap();
            let c = "192.0.2.7:40000";
            let rs = "10.1.0.1:8080";
            for (pkt, dir) in [
                (tcp(c, "10.0.0.100:80", "S", b""), Direction::FromClient),
                (tcp(rs, c, "SA", b""), Direction::FromRealServer),
                (tcp(c, "10.0.0.100:80", "A", b""), Direction::FromClient),
                (tcp(c, "10.0.0.100:80", "A", b"data"), Direction::FromClient),
                // The server closes first: ESTABLISHED -> FIN_WAIT on a reply.
                (tcp(rs, c, "FA", b""), Direction::FromRealServer),
            ] {
                assert!(matches!(run(&e, &pkt, dir), Verdict::Forward { .. }));
            }
            let recs = sent(&e);
            let kinds: Vec<(bool, u16)> = recs.iter().map(|r| (r.is_template(), r.state)).collect();
            // v1: the template after every client packet (NONE until the conn is ESTABLISHED, then ASSURED);
            // the conn at its 3rd packet (ESTABLISHED), then at once on the reply's FIN_WAIT (when enabled).
            let mut want = vec![(true, 0), (true, 1), (false, 1), (true, 1)];
            if reply_changes {
                want.extend([(false, 4), (true, 1)]);
            }
            assert_eq!(kinds, want, "reply changes {reply_changes}");
            assert!(recs.iter().all(|r| r.timeout == Some(if r.is_template() { 300 } else { 900 }) || r.state == 4));
            let tpl = e.conns(T0).into_iter().find(|c| c.is_template() && c.protocol == Protocol::Tcp).unwrap();
            assert_eq!(tpl.in_pkts, if reply_changes { 4 } else { 3 }, "the template's in_pkts counts its syncs");
            // The conn's bookkeeping: old_state is the last synced state.
            let id = the_conn(&e, T0, 40000).id;
            let old = e.conn_table().with_conn(id, |c| c.old_state()).unwrap();
            assert_eq!(old, if reply_changes { 4 } else { 1 });
        }
    }

    #[test]
    fn one_packet_conns_are_never_sent_but_their_template_is() {
        let e = engine(PERSISTENT);
        e.start_sync_master(Master::new(MasterConfig::default()).unwrap(), SyncMasterOptions::default()).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                run(&e, &udp("192.0.2.7:5000", "10.0.0.100:53"), Direction::FromClient),
                Verdict::Forward { .. }
            ));
        }
        let recs = sent(&e);
        assert_eq!(recs.len(), 3);
        assert!(recs.iter().all(|r| r.is_template() && r.protocol == Protocol::Udp && r.timeout == Some(60)));
        let tpl = e.conns(T0).into_iter().find(|c| c.is_template()).unwrap();
        assert_eq!(tpl.in_pkts, 3, "counted once per packet, by the sync");
        let skipped = e.with_sync_master(|m| m.stats().skipped(ipvs_sync::master::SkipReason::OnePacket)).unwrap();
        assert_eq!(skipped, 3);
    }

    #[test]
    fn resync_requests_go_to_the_master_and_dumps_come_from_the_table() {
        let m = engine("-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m\n");
        m.start_sync_master(Master::new(MasterConfig::default()).unwrap(), SyncMasterOptions::default()).unwrap();
        let c = "192.0.2.7:40000";
        for (pkt, dir) in [
            (tcp(c, "10.0.0.100:80", "S", b""), Direction::FromClient),
            (tcp("10.1.0.1:8080", c, "SA", b""), Direction::FromRealServer),
            (tcp(c, "10.0.0.100:80", "A", b""), Direction::FromClient),
        ] {
            assert!(matches!(run(&m, &pkt, dir), Verdict::Forward { .. }));
        }
        // Two client packets: below the threshold, nothing sent yet.
        assert!(sent(&m).is_empty());
        let b = backup(TWO_NAT);
        b.with_sync_backup(|bk| bk.request_resync(T0));
        let mut buf = Vec::new();
        let t = b.poll_sync_transmit(T0, &mut buf).unwrap();
        assert!(matches!(
            m.handle_sync_datagram(T0, &buf[..t.len]),
            SyncInput::Master(MasterInput::ResyncRequest { .. })
        ));
        let mut applied = SyncApplied::default();
        let mut control = 0;
        while let Some(t) = m.poll_sync_transmit(T0, &mut buf) {
            match b.handle_sync_datagram(T0, &buf[..t.len]) {
                SyncInput::Applied(a) => applied.add(&a),
                SyncInput::ResyncControl => control += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((applied.created, control), (1, 2), "Begin, one Data, End");
        assert_eq!(the_conn(&b, T0, 40000).state, "ESTABLISHED");
        let events: Vec<_> = std::iter::from_fn(|| m.poll_sync_event()).collect();
        assert!(
            matches!(
                events[..],
                [
                    SyncDaemonEvent::Master(MasterEvent::ResyncStarted { .. }),
                    SyncDaemonEvent::Master(MasterEvent::ResyncFinished { n_records: 1, .. })
                ]
            ),
            "{events:?}"
        );
        assert!(matches!(
            b.poll_sync_event(),
            Some(SyncDaemonEvent::Backup(BackupEvent::ResyncComplete { n_records: 1, .. }))
        ));
        assert_eq!(m.handle_sync_datagram(T0, &[0; 8]), SyncInput::Master(MasterInput::Ignored));
        assert_eq!(engine(TWO_NAT).handle_sync_datagram(T0, &[0; 8]), SyncInput::NoDaemon);
    }

    #[test]
    fn forced_states_are_the_kernels() {
        // TCP: FIN_WAIT 4, TIME_WAIT 5, CLOSE 6, CLOSE_WAIT 7 are sent at once; ESTABLISHED 1 waits for the
        // packet rule; SYN_RECV 3 and LAST_ACK 8 are never synced.
        let forced: Vec<u8> = (0..11).filter(|s| is_forced(Protocol::Tcp, *s, 1)).collect();
        assert_eq!(forced, [4, 5, 6, 7]);
        assert!(!is_forced(Protocol::Tcp, 4, 4), "no change, no force");
        // SCTP: SHUTDOWN_SENT 9, SHUTDOWN_RECEIVED 10, SHUTDOWN_ACK_SENT 11, CLOSED 13.
        let forced: Vec<u8> = (0..15).filter(|s| is_forced(Protocol::Sctp, *s, 8)).collect();
        assert_eq!(forced, [9, 10, 11, 13]);
        assert!(!is_forced(Protocol::Udp, 1, 0));
    }

    #[test]
    fn dest_ports_follow_the_kernel() {
        // NAT or non-fwmark: the record's port, then 0.
        assert_eq!(dest_ports(0, ConnFlags::MASQ, 8080), [8080, 0]);
        assert_eq!(dest_ports(5, ConnFlags::MASQ, 8080), [8080, 0]);
        assert_eq!(dest_ports(0, ConnFlags::DROUTE, 80), [80, 0]);
        // fwmark and not NAT: 0 first, then the record's port.
        assert_eq!(dest_ports(5, ConnFlags::DROUTE, 80), [0, 80]);
        assert_eq!(dest_ports(5, ConnFlags::TUNNEL, 0), [0, 0]);
    }
}
