//! History for a new device (issue 17): a device whose history is empty
//! and was never synced ([`HistoryState::Fresh`], or `Partial` after a sync
//! that stopped) asks the account's other devices for the last
//! [`HISTORY_WINDOW_MS`] of history (`CHAT_HISTORY_ASK`, to our own
//! username: every other device that is online, never stored for one that
//! is not), [`FIRST_ASK_DELAY_MS`] after it is online, then with backoff
//! until one answers. A device that has history of its own (messages in a
//! fresh store by the time it would ask) is `Done` and never asks; one with
//! no history does not answer. The first device to
//! answer (`CHAT_HISTORY`, sealed to the asking device alone) is the one
//! the rest is pulled from, one bounded batch per ask; answers from the
//! others are dropped. Rows are kept once by (peer, id, direction), with
//! their acknowledgement and read state, and each peer whose conversation
//! grew is reported once the sync ends ([`super::ChatEvent::HistorySynced`]).
//!
//! What the other devices do while the sync runs reaches this one as it
//! does any device (copies, incoming messages), so an ask lists only the
//! rows sent before it (`until`).
//!
//! Bounds: [`MAX_BATCH_ROWS`] rows and one envelope payload per batch,
//! [`MAX_SYNC_ROWS`] rows and [`SYNC_DEADLINE_MS`] per sync, one sync at a
//! time each way (asking, and answering one other device), an answer
//! within [`ANSWER_WAIT_MS`] or the ask goes again (at most
//! [`MAX_BATCH_TRIES`] times). Asks and batches are taken from our own
//! account only; others are dropped and counted ([`HistoryStats`]).

use super::store::{HistoryState, SyncKey};
use super::{ChatCore, ChatError, ChatEvent, MAX_TEXT, Message, MsgId, read_peer};
use crate::identity::Certificate;
use crate::overlay::envelope::{EnvelopeSink, MAX_PAYLOAD, MAX_SKEW_MS, kind};
use crate::time::{Millis, UnixMillis};
use crate::wire::{Reader, WireError, Writer};
use std::collections::BTreeMap;

/// How far back a new device's history goes.
pub const HISTORY_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;
/// Rows in one batch, at most (and one envelope payload).
pub const MAX_BATCH_ROWS: usize = 64;
/// Rows taken in one sync (or given to one device), at most.
pub const MAX_SYNC_ROWS: u64 = 20_000;
/// One sync ends by then, done or not (either side).
pub const SYNC_DEADLINE_MS: u64 = 10 * 60 * 1000;
/// An ask unanswered for this long goes again (or, the first, gives up
/// until the next try).
pub const ANSWER_WAIT_MS: u64 = 10_000;
/// The first ask waits this long after we are online: our other devices'
/// records are in the directory by then (ones started with us too), and
/// what comes meanwhile tells whether we still have no history.
pub const FIRST_ASK_DELAY_MS: u64 = 3_000;
/// Asks for one batch before the sync is given up.
pub const MAX_BATCH_TRIES: u32 = 3;
/// Unanswered asks are tried again after this, doubling up to
/// [`ASK_BACKOFF_MAX_MS`], or sooner when one of our devices is heard from
/// (at most every [`ASK_GAP_MS`]).
pub const ASK_BACKOFF_MS: u64 = 30_000;
pub const ASK_BACKOFF_MAX_MS: u64 = 30 * 60 * 1000;
pub const ASK_GAP_MS: u64 = 5_000;

/// One sync, as both sides name it (chosen by the asking device).
pub type SyncId = [u8; 8];

/// A position in the listing: the last row's key, opaque to the asker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    pub sent_at_ms: u64,
    pub peer: &'a str,
    pub id: MsgId,
    pub outgoing: bool,
}

fn flag(r: &mut Reader<'_>, field: &'static str) -> Result<bool, WireError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::Invalid { field }),
    }
}

impl<'a> KeyRef<'a> {
    pub fn owned(&self) -> SyncKey {
        SyncKey {
            sent_at_ms: self.sent_at_ms,
            peer: self.peer.to_owned(),
            id: self.id,
            outgoing: self.outgoing,
        }
    }

    pub fn of(k: &'a SyncKey) -> Self {
        KeyRef {
            sent_at_ms: k.sent_at_ms,
            peer: &k.peer,
            id: k.id,
            outgoing: k.outgoing,
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u64(self.sent_at_ms)
            .bytes8(self.peer.as_bytes())
            .raw(&self.id)
            .u8(self.outgoing as u8);
    }

    fn decode(r: &mut Reader<'a>) -> Result<Self, WireError> {
        Ok(KeyRef {
            sent_at_ms: r.u64()?,
            peer: r.str8("cursor peer")?,
            id: r.array()?,
            outgoing: flag(r, "cursor direction")?,
        })
    }
}

fn encode_key(w: &mut Writer, k: &Option<KeyRef<'_>>) {
    match k {
        None => {
            w.u8(0);
        }
        Some(k) => {
            w.u8(1);
            k.encode(w);
        }
    }
}

fn decode_key<'a>(r: &mut Reader<'a>) -> Result<Option<KeyRef<'a>>, WireError> {
    Ok(if flag(r, "cursor")? {
        Some(KeyRef::decode(r)?)
    } else {
        None
    })
}

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow<'a> {
    /// The other party (canonical username).
    pub peer: &'a str,
    pub outgoing: bool,
    /// Incoming: read on the answering device.
    pub read: bool,
    pub id: MsgId,
    pub sent_at_ms: u64,
    /// Outgoing: acknowledged by the recipient, when (never 0).
    pub acked_at_ms: Option<u64>,
    pub text: &'a str,
}

const ROW_OUTGOING: u8 = 1;
const ROW_READ: u8 = 2;

impl<'a> HistoryRow<'a> {
    pub fn of(m: &'a Message) -> Self {
        HistoryRow {
            peer: &m.peer,
            outgoing: m.outgoing,
            read: m.read && !m.outgoing,
            id: m.id,
            sent_at_ms: m.sent_at_ms,
            acked_at_ms: m.acked_at_ms.filter(|&t| m.outgoing && t != 0),
            text: &m.text,
        }
    }

    fn encode(&self, w: &mut Writer) {
        let flags =
            if self.outgoing { ROW_OUTGOING } else { 0 } | if self.read { ROW_READ } else { 0 };
        w.bytes8(self.peer.as_bytes())
            .u8(flags)
            .raw(&self.id)
            .u64(self.sent_at_ms)
            .u64(self.acked_at_ms.unwrap_or(0))
            .bytes16(self.text.as_bytes());
    }

    fn decode(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let peer = read_peer(r)?;
        let flags = r.u8()?;
        let outgoing = flags & ROW_OUTGOING != 0;
        let read = flags & ROW_READ != 0;
        // Read marks are for incoming messages; no other bits.
        if flags & !(ROW_OUTGOING | ROW_READ) != 0 || (outgoing && read) {
            return Err(WireError::Invalid { field: "row flags" });
        }
        let id = r.array()?;
        let sent_at_ms = r.u64()?;
        let acked_at_ms = match r.u64()? {
            0 => None,
            _ if !outgoing => return Err(WireError::Invalid { field: "acked_at" }),
            t => Some(t),
        };
        let text = super::read_text(r)?;
        Ok(HistoryRow {
            peer,
            outgoing,
            read,
            id,
            sent_at_ms,
            acked_at_ms,
            text,
        })
    }

    /// As kept in this device's history (dated by the sender's clock, as
    /// copies are).
    fn message(&self) -> Message {
        Message {
            peer: self.peer.to_owned(),
            id: self.id,
            outgoing: self.outgoing,
            text: self.text.to_owned(),
            sent_at_ms: self.sent_at_ms,
            at_ms: self.sent_at_ms,
            acked_at_ms: self.acked_at_ms,
            read: self.read,
        }
    }
}

/// The history sync's payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryPayload<'a> {
    /// `CHAT_HISTORY_ASK`: the rows sent in `since_ms..until_ms`, after
    /// `after` (none: from the start).
    Ask {
        sync: SyncId,
        since_ms: u64,
        until_ms: u64,
        after: Option<KeyRef<'a>>,
    },
    /// `CHAT_HISTORY`: rows after the ask's cursor, in listing order;
    /// `next` is where the next ask starts, `more` whether one is needed.
    Batch {
        sync: SyncId,
        more: bool,
        next: Option<KeyRef<'a>>,
        rows: Vec<HistoryRow<'a>>,
    },
}

impl<'a> HistoryPayload<'a> {
    pub fn kind(&self) -> u8 {
        match self {
            HistoryPayload::Ask { .. } => kind::CHAT_HISTORY_ASK,
            HistoryPayload::Batch { .. } => kind::CHAT_HISTORY,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            HistoryPayload::Ask {
                sync,
                since_ms,
                until_ms,
                after,
            } => {
                w.raw(sync).u64(*since_ms).u64(*until_ms);
                encode_key(&mut w, after);
            }
            HistoryPayload::Batch {
                sync,
                more,
                next,
                rows,
            } => {
                w.raw(sync).u8(*more as u8);
                encode_key(&mut w, next);
                w.u8(rows.len().min(MAX_BATCH_ROWS) as u8);
                for row in rows.iter().take(MAX_BATCH_ROWS) {
                    row.encode(&mut w);
                }
            }
        }
        w.into_vec()
    }

    /// Decode a payload of envelope kind `k`; borrows, never panics.
    pub fn decode(k: u8, b: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let p = match k {
            kind::CHAT_HISTORY_ASK => HistoryPayload::Ask {
                sync: r.array()?,
                since_ms: r.u64()?,
                until_ms: r.u64()?,
                after: decode_key(&mut r)?,
            },
            kind::CHAT_HISTORY => {
                let sync = r.array()?;
                let more = flag(&mut r, "more")?;
                let next = decode_key(&mut r)?;
                let count = r.u8()? as usize;
                if count > MAX_BATCH_ROWS {
                    return Err(WireError::TooLarge {
                        len: count,
                        max: MAX_BATCH_ROWS,
                    });
                }
                let mut rows = Vec::with_capacity(count);
                for _ in 0..count {
                    rows.push(HistoryRow::decode(&mut r)?);
                }
                HistoryPayload::Batch {
                    sync,
                    more,
                    next,
                    rows,
                }
            }
            got => {
                return Err(WireError::UnknownType {
                    what: "history payload",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(p)
    }
}

/// An ask: sync, since, until, cursor.
type Ask<'a> = (SyncId, u64, u64, Option<KeyRef<'a>>);
/// A batch: sync, more, next cursor, rows.
type Batch<'a> = (SyncId, bool, Option<KeyRef<'a>>, Vec<HistoryRow<'a>>);

/// The history sync's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Asks this device sent (first asks and pulls).
    pub asks_sent: u64,
    /// Batches taken, and the rows in them that were new here.
    pub batches_taken: u64,
    pub rows_added: u64,
    /// Syncs finished, and given up (deadline, no answer, row cap).
    pub syncs_done: u64,
    pub syncs_given_up: u64,
    /// Batches answered to our other devices.
    pub batches_answered: u64,
    /// Asks or batches from another account: dropped.
    pub foreign: u64,
    /// Batches for no sync of ours, from a device we do not pull from, or
    /// that do not move on: dropped.
    pub stale: u64,
    /// Asks refused while another device's sync runs, or over its row cap.
    pub busy: u64,
}

#[derive(Debug)]
enum Phase {
    Idle,
    /// The first ask went to every other device; the first to answer is
    /// pulled from.
    Asking {
        sync: SyncId,
        since: u64,
        until: u64,
        wait: Millis,
    },
    Pulling(Pull),
}

#[derive(Debug)]
struct Pull {
    sync: SyncId,
    since: u64,
    until: u64,
    device: [u8; 32],
    after: Option<SyncKey>,
    /// The pending ask goes again at `wait`; `tries` so far.
    wait: Millis,
    tries: u32,
    ends: Millis,
    rows: u64,
}

/// The other device we answer (one at a time).
#[derive(Debug)]
struct Serving {
    device: [u8; 32],
    sync: SyncId,
    ends: Millis,
    rows: u64,
}

#[derive(Debug)]
pub(super) struct HistorySync {
    /// The store's flag, as last read or written.
    state: HistoryState,
    /// Our record is published: asks can go.
    online: bool,
    phase: Phase,
    /// Idle: the next ask (`Millis::MAX`: at the first publish).
    next_ask: Millis,
    last_ask: Option<Millis>,
    backoff_ms: u64,
    /// Tells syncs apart.
    seq: u16,
    /// What the running sync added, per peer: messages, read mark moved.
    touched: BTreeMap<String, (u64, bool)>,
    serving: Option<Serving>,
    pub(super) stats: HistoryStats,
}

impl HistorySync {
    pub(super) fn new(state: HistoryState) -> Self {
        HistorySync {
            state,
            online: false,
            phase: Phase::Idle,
            next_ask: Millis::MAX,
            last_ask: None,
            backoff_ms: ASK_BACKOFF_MS,
            seq: 0,
            touched: BTreeMap::new(),
            serving: None,
            stats: HistoryStats::default(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Millis> {
        match &self.phase {
            Phase::Idle if self.state != HistoryState::Done && self.online => {
                (self.next_ask != Millis::MAX).then_some(self.next_ask)
            }
            Phase::Idle => None,
            Phase::Asking { wait, .. } => Some(*wait),
            Phase::Pulling(p) => Some(p.wait.min(p.ends)),
        }
    }
}

impl ChatCore {
    /// Our record is published (we are online): a fresh device asks for
    /// history [`FIRST_ASK_DELAY_MS`] later, the first time.
    pub fn on_online(&mut self, now: Millis, unix: UnixMillis, sink: &mut dyn EnvelopeSink) {
        if self.me.is_none() {
            return;
        }
        let h = &mut self.hist;
        h.online = true;
        if h.next_ask == Millis::MAX {
            h.next_ask = now.saturating_add(FIRST_ASK_DELAY_MS);
        }
        self.history_timeout(now, unix, sink);
    }

    /// One of our other devices was heard from: an unanswered ask goes
    /// again soon.
    pub(super) fn own_device_heard(&mut self, now: Millis) {
        let h = &mut self.hist;
        if h.state == HistoryState::Done || !h.online || !matches!(h.phase, Phase::Idle) {
            return;
        }
        let soon = h
            .last_ask
            .map_or(now, |t| t.saturating_add(ASK_GAP_MS).max(now));
        h.next_ask = h.next_ask.min(soon);
    }

    /// The history sync's counters.
    pub fn history_stats(&self) -> &HistoryStats {
        &self.hist.stats
    }

    pub(super) fn history_timeout(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        sink: &mut dyn EnvelopeSink,
    ) {
        let h = &mut self.hist;
        match &h.phase {
            Phase::Idle => {
                if h.state != HistoryState::Done && h.online && now >= h.next_ask {
                    // Whatever comes of it (an ask, a store error), the
                    // next try is not now.
                    h.next_ask = now.saturating_add(h.backoff_ms);
                    self.first_ask(now, unix, sink);
                }
            }
            Phase::Asking { wait, .. } => {
                if now >= *wait {
                    // Nobody answered: another time.
                    h.phase = Phase::Idle;
                    h.next_ask = now.saturating_add(h.backoff_ms);
                    h.backoff_ms = (h.backoff_ms * 2).min(ASK_BACKOFF_MAX_MS);
                }
            }
            Phase::Pulling(p) => {
                if now >= p.ends || (now >= p.wait && p.tries >= MAX_BATCH_TRIES) {
                    tracing::debug!("history sync given up");
                    self.end_sync(now, false);
                } else if now >= p.wait {
                    self.pull(now, sink);
                }
            }
        }
    }

    fn first_ask(&mut self, now: Millis, unix: UnixMillis, sink: &mut dyn EnvelopeSink) {
        let Some(me) = self.me.clone() else {
            return;
        };
        // A fresh store that has messages by now has history of its own.
        if self.hist.state == HistoryState::Fresh {
            match self.store.has_messages() {
                Ok(false) => {}
                Ok(true) => return self.set_history_state(HistoryState::Done),
                Err(e) => return self.store_failed(e),
            }
        }
        let h = &mut self.hist;
        h.seq = h.seq.wrapping_add(1);
        let mut sync = [0u8; 8];
        sync[..6].copy_from_slice(&unix.get().to_be_bytes()[2..]);
        sync[6..].copy_from_slice(&h.seq.to_be_bytes());
        let (since, until) = (unix.get().saturating_sub(HISTORY_WINDOW_MS), unix.get());
        let ask = HistoryPayload::Ask {
            sync,
            since_ms: since,
            until_ms: until,
            after: None,
        };
        // Live only: a device that is offline cannot answer.
        sink.send_envelope(&me, kind::CHAT_HISTORY_ASK, &ask.encode(), false);
        h.stats.asks_sent += 1;
        h.last_ask = Some(now);
        h.phase = Phase::Asking {
            sync,
            since,
            until,
            wait: now.saturating_add(ANSWER_WAIT_MS),
        };
    }

    /// Ask the device we pull from for the batch after our cursor.
    fn pull(&mut self, now: Millis, sink: &mut dyn EnvelopeSink) {
        let (Some(me), Phase::Pulling(p)) = (&self.me, &mut self.hist.phase) else {
            return;
        };
        let ask = HistoryPayload::Ask {
            sync: p.sync,
            since_ms: p.since,
            until_ms: p.until,
            after: p.after.as_ref().map(KeyRef::of),
        };
        sink.send_envelope_to_device(me, &p.device, kind::CHAT_HISTORY_ASK, &ask.encode(), false);
        p.tries += 1;
        p.wait = now.saturating_add(ANSWER_WAIT_MS);
        self.hist.stats.asks_sent += 1;
    }

    /// The sync ended (`done`: the whole history came): report each peer
    /// whose conversation grew.
    fn end_sync(&mut self, now: Millis, done: bool) {
        let h = &mut self.hist;
        let pulled = matches!(h.phase, Phase::Pulling(_));
        h.phase = Phase::Idle;
        if done {
            h.stats.syncs_done += 1;
        } else {
            h.stats.syncs_given_up += 1;
            h.next_ask = now.saturating_add(h.backoff_ms);
            h.backoff_ms = (h.backoff_ms * 2).min(ASK_BACKOFF_MAX_MS);
        }
        if done {
            self.set_history_state(HistoryState::Done);
        }
        let touched = std::mem::take(&mut self.hist.touched);
        if !pulled {
            return;
        }
        for (peer, (added, moved)) in touched {
            if added == 0 && !moved {
                continue;
            }
            match self.store.unread(&peer) {
                Ok(unread) => self.events.push_back(ChatEvent::HistorySynced {
                    peer,
                    added,
                    unread,
                }),
                Err(e) => self.store_failed(e),
            }
        }
    }

    fn set_history_state(&mut self, s: HistoryState) {
        if self.hist.state == s {
            return;
        }
        match self.store.set_history_state(s) {
            Ok(()) => self.hist.state = s,
            Err(e) => self.store_failed(e),
        }
    }

    fn store_failed(&mut self, e: ChatError) {
        self.events.push_back(ChatEvent::StoreFailed {
            error: e.to_string(),
        });
    }

    /// An envelope of a history kind from `from` (verified). Returns false
    /// when the kind is not one of them.
    pub fn on_history_envelope(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        from: &Certificate,
        k: u8,
        payload: &[u8],
        sink: &mut dyn EnvelopeSink,
    ) -> bool {
        if k != kind::CHAT_HISTORY_ASK && k != kind::CHAT_HISTORY {
            return false;
        }
        // Only a device of our own account.
        if self.me.as_deref() != Some(from.username.to_ascii_lowercase().as_str()) {
            tracing::debug!(from = %from.username, "history from another account dropped");
            self.hist.stats.foreign += 1;
            return true;
        }
        match HistoryPayload::decode(k, payload) {
            Ok(HistoryPayload::Ask {
                sync,
                since_ms,
                until_ms,
                after,
            }) => self.answer(
                now,
                unix,
                &from.x25519,
                (sync, since_ms, until_ms, after),
                sink,
            ),
            Ok(HistoryPayload::Batch {
                sync,
                more,
                next,
                rows,
            }) => self.take_batch(now, &from.x25519, (sync, more, next, rows), sink),
            Err(e) => tracing::debug!("malformed history payload: {e}"),
        }
        true
    }

    /// Answer an ask of `device` (ours) with the batch after its cursor.
    fn answer(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        device: &[u8; 32],
        ask: Ask<'_>,
        sink: &mut dyn EnvelopeSink,
    ) {
        let (sync, since, until, after) = ask;
        self.own_device_heard(now);
        // A device with no history of its own has nothing to give: another
        // may answer.
        let holds = match self.hist.state {
            HistoryState::Done => Ok(true),
            _ => self.store.has_messages(),
        };
        match holds {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.store_failed(e),
        }
        let h = &mut self.hist;
        // Another device's sync runs: it is refused (the asker may find
        // another device). The same device starting again replaces its own.
        match &h.serving {
            Some(s) if now < s.ends && s.device != *device => {
                h.stats.busy += 1;
                return;
            }
            Some(s) if now < s.ends && s.sync == sync => {}
            _ => {
                h.serving = Some(Serving {
                    device: *device,
                    sync,
                    ends: now.saturating_add(SYNC_DEADLINE_MS),
                    rows: 0,
                })
            }
        }
        let Some(s) = h.serving.as_mut() else {
            return;
        };
        if s.rows >= MAX_SYNC_ROWS {
            h.stats.busy += 1;
            return;
        }
        // No further back than our window (give or take the clocks).
        let floor = unix.get().saturating_sub(HISTORY_WINDOW_MS + MAX_SKEW_MS);
        let since = since.max(floor);
        let after = after.map(|k| k.owned());
        let rows = match self
            .store
            .rows_since(since, until, after.as_ref(), MAX_BATCH_ROWS + 1)
        {
            Ok(rows) => rows,
            Err(e) => return self.store_failed(e),
        };
        // As many rows as fit one payload (one always does); rows the
        // asker would refuse (a peer that is no canonical username) are
        // passed over.
        let header = 8 + 1 + 1 + (8 + 1 + 255 + 16 + 1) + 1;
        let mut size = header;
        let mut taken = Vec::new();
        let mut next = after.clone();
        let mut more = false;
        for (i, m) in rows.iter().enumerate() {
            if i == MAX_BATCH_ROWS {
                more = true;
                break;
            }
            let row = HistoryRow::of(m);
            let len = 1 + row.peer.len() + 1 + 16 + 8 + 8 + 2 + row.text.len();
            let valid = row.text.len() <= MAX_TEXT
                && crate::identity::Username::parse(row.peer).is_ok_and(|u| u.as_str() == row.peer);
            if valid {
                if size + len > MAX_PAYLOAD {
                    more = true;
                    break;
                }
                size += len;
                taken.push(row);
            }
            next = Some(SyncKey::of(m));
        }
        let n = taken.len();
        let batch = HistoryPayload::Batch {
            sync,
            more,
            next: next.as_ref().map(KeyRef::of),
            rows: taken,
        };
        if let Some(me) = &self.me {
            sink.send_envelope_to_device(me, device, kind::CHAT_HISTORY, &batch.encode(), false);
        }
        let h = &mut self.hist;
        if let Some(s) = h.serving.as_mut() {
            s.rows += n.max(1) as u64;
        }
        h.stats.batches_answered += 1;
    }

    /// A batch from `device` (ours): kept when it is for our sync, from the
    /// device we pull from (the first to answer), and moves on.
    fn take_batch(
        &mut self,
        now: Millis,
        device: &[u8; 32],
        b: Batch<'_>,
        sink: &mut dyn EnvelopeSink,
    ) {
        let (sync, more, next, rows) = b;
        let h = &mut self.hist;
        // A batch that says more must move past the cursor.
        let moves = |after: Option<&SyncKey>| {
            !more || next.is_some_and(|n| after.is_none_or(|a| KeyRef::of(a).order() < n.order()))
        };
        let fits = match &h.phase {
            Phase::Asking { sync: s, .. } => *s == sync && moves(None),
            Phase::Pulling(p) => p.sync == sync && p.device == *device && moves(p.after.as_ref()),
            Phase::Idle => false,
        };
        if !fits {
            h.stats.stale += 1;
            return;
        }
        if let Phase::Asking {
            sync, since, until, ..
        } = h.phase
        {
            h.phase = Phase::Pulling(Pull {
                sync,
                since,
                until,
                device: *device,
                after: None,
                wait: now,
                tries: 0,
                ends: now.saturating_add(SYNC_DEADLINE_MS),
                rows: 0,
            });
        }
        let Phase::Pulling(p) = &mut h.phase else {
            return;
        };
        // Rows outside what we asked for are not taken.
        let (since, until) = (p.since, p.until);
        let msgs: Vec<Message> = rows
            .iter()
            .filter(|r| (since..until).contains(&r.sent_at_ms))
            .map(HistoryRow::message)
            .collect();
        p.rows += rows.len() as u64;
        p.after = next.map(|n| n.owned()).or(p.after.take());
        p.tries = 0;
        let capped = p.rows >= MAX_SYNC_ROWS;
        h.stats.batches_taken += 1;
        match self.store.apply_rows(&msgs) {
            Ok(per_peer) => {
                for (peer, (added, moved)) in per_peer {
                    self.hist.stats.rows_added += added;
                    let t = self.hist.touched.entry(peer).or_default();
                    t.0 += added;
                    t.1 |= moved;
                }
                if self.hist.state == HistoryState::Fresh && !msgs.is_empty() {
                    // Taken in part: asked again after a restart.
                    self.set_history_state(HistoryState::Partial);
                }
            }
            Err(e) => {
                self.store_failed(e);
                return self.end_sync(now, false);
            }
        }
        if !more || capped {
            if capped {
                tracing::debug!("history sync stopped at {MAX_SYNC_ROWS} rows");
            }
            return self.end_sync(now, true);
        }
        self.pull(now, sink);
    }
}

impl KeyRef<'_> {
    /// The order the answering store lists rows in.
    fn order(&self) -> (i64, &str, &MsgId, bool) {
        (self.sent_at_ms as i64, self.peer, &self.id, self.outgoing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ChatPayload;
    use crate::chat::tests::{core, events as drain};
    use crate::identity::{AuthorityKey, DeviceIdentity, Role, Username};
    use crate::overlay::EnvelopeId;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const DAY: u64 = 24 * 3600 * 1000;
    /// The wall clock of these tests: 100 days after the epoch.
    const NOW: UnixMillis = UnixMillis(100 * DAY);

    /// Envelopes sent: to a username (to, kind, payload, store), and to
    /// one device (to, device, kind, payload).
    #[derive(Default)]
    struct Out(
        Vec<(String, u8, Vec<u8>, bool)>,
        Vec<(String, [u8; 32], u8, Vec<u8>)>,
    );

    impl EnvelopeSink for Out {
        fn send_envelope(&mut self, to: &str, k: u8, p: &[u8], store: bool) -> EnvelopeId {
            self.0.push((to.into(), k, p.to_vec(), store));
            [self.0.len() as u8; 16]
        }

        fn send_envelope_to_device(
            &mut self,
            to: &str,
            device: &[u8; 32],
            k: u8,
            p: &[u8],
            store: bool,
        ) -> EnvelopeId {
            assert!(!store, "device to device, live");
            self.1.push((to.into(), *device, k, p.to_vec()));
            [100u8.wrapping_add(self.1.len() as u8); 16]
        }
    }

    /// A certificate of `name`'s device number `device`.
    fn cert(name: &str, device: u64) -> Certificate {
        let a = AuthorityKey::generate(&mut StdRng::seed_from_u64(1));
        let d = DeviceIdentity::generate(&mut StdRng::seed_from_u64(100 + device));
        Certificate::issue(
            &a,
            1,
            Role::User,
            0,
            u64::MAX / 2,
            &Username::parse(name).unwrap(),
            d.ed25519_public(),
            d.x25519_public(),
        )
    }

    /// What two devices should agree on: (id, outgoing, text, sent_at,
    /// acked, read).
    type Row = (MsgId, bool, String, u64, bool, bool);

    fn rows(c: &ChatCore, peer: &str) -> Vec<Row> {
        c.history(peer, 100_000)
            .unwrap()
            .into_iter()
            .map(|m| {
                (
                    m.id,
                    m.outgoing,
                    m.text,
                    m.sent_at_ms,
                    m.acked_at_ms.is_some(),
                    m.read,
                )
            })
            .collect()
    }

    /// `peer` sends `n` messages to `c` (on every device of it), sent at
    /// `at + i` seconds, ids from `first`.
    fn receive(c: &mut ChatCore, peer: &str, first: u32, n: u32, at: u64) {
        for i in 0..n {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&(first + i).to_be_bytes());
            let p = ChatPayload::Message {
                id,
                sent_at_ms: at + u64::from(i) * 1000,
                text: &format!("{peer} {i}"),
            }
            .encode();
            c.on_envelope(
                NOW,
                &cert(peer, 9),
                kind::CHAT,
                &p,
                false,
                &mut Out::default(),
            );
        }
    }

    /// A desk with 40 days of history with bob (10 older than 30 days)
    /// and some with carol: sent and acknowledged, received, partly read.
    fn desk() -> ChatCore {
        let mut desk = core("alice");
        let mut rng = StdRng::seed_from_u64(7);
        let mut out = Out::default();
        receive(&mut desk, "bob", 0, 10, NOW.get() - 40 * DAY);
        receive(&mut desk, "bob", 100, 150, NOW.get() - 10 * DAY);
        for i in 0..20u64 {
            let id = desk
                .send(
                    Millis(i),
                    UnixMillis(NOW.get() - 5 * DAY + i * 1000),
                    &mut rng,
                    "bob",
                    &format!("to bob {i}"),
                    &mut out,
                )
                .unwrap();
            if i % 2 == 0 {
                let ack = ChatPayload::Ack { id }.encode();
                desk.on_envelope(NOW, &cert("bob", 9), kind::CHAT_ACK, &ack, false, &mut out);
            }
        }
        desk.mark_read("bob", &mut out).unwrap();
        receive(&mut desk, "bob", 1000, 3, NOW.get() - DAY);
        receive(&mut desk, "carol", 2000, 5, NOW.get() - 2 * DAY);
        drain(&mut desk);
        desk
    }

    /// Run one sync between `asker` (device 2) and `answerer` (device 1)
    /// from the asker's first ask; returns the batches it took.
    fn sync(asker: &mut ChatCore, answerer: &mut ChatCore, ask: Vec<u8>) -> usize {
        let (a_cert, b_cert) = (cert("alice", 2), cert("alice", 1));
        let mut ask = ask;
        let mut batches = 0;
        loop {
            let mut out = Out::default();
            assert!(answerer.on_history_envelope(
                Millis(1),
                NOW,
                &a_cert,
                kind::CHAT_HISTORY_ASK,
                &ask,
                &mut out
            ));
            let (to, device, k, batch) = out.1.pop().expect("an answer");
            assert_eq!(
                (to.as_str(), device, k),
                ("alice", a_cert.x25519, kind::CHAT_HISTORY)
            );
            assert!(batch.len() <= MAX_PAYLOAD);
            let mut out = Out::default();
            asker.on_history_envelope(Millis(2), NOW, &b_cert, k, &batch, &mut out);
            batches += 1;
            match out.1.pop() {
                Some((_, device, k, next)) => {
                    assert_eq!((device, k), (b_cert.x25519, kind::CHAT_HISTORY_ASK));
                    ask = next;
                }
                None => return batches,
            }
        }
    }

    /// The first ask, from a fresh device coming online: to our own
    /// username (every other device), live only.
    fn first_ask(c: &mut ChatCore, now: Millis) -> Vec<u8> {
        let mut out = Out::default();
        c.on_online(now, NOW, &mut out);
        c.handle_timeout(now + FIRST_ASK_DELAY_MS, NOW, &mut out);
        let (to, k, p, store) = out.0.pop().expect("an ask");
        assert_eq!(
            (to.as_str(), k, store),
            ("alice", kind::CHAT_HISTORY_ASK, false)
        );
        p
    }

    #[test]
    fn payloads_round_trip_and_bad_ones_fail() {
        let cursor = KeyRef {
            sent_at_ms: 5,
            peer: "bob",
            id: [1; 16],
            outgoing: true,
        };
        let rows = vec![
            HistoryRow {
                peer: "bob",
                outgoing: true,
                read: false,
                id: [2; 16],
                sent_at_ms: 6,
                acked_at_ms: Some(7),
                text: "hi",
            },
            HistoryRow {
                peer: "carol",
                outgoing: false,
                read: true,
                id: [3; 16],
                sent_at_ms: 8,
                acked_at_ms: None,
                text: "héllo",
            },
        ];
        let ps = [
            HistoryPayload::Ask {
                sync: [1; 8],
                since_ms: 1,
                until_ms: 2,
                after: None,
            },
            HistoryPayload::Ask {
                sync: [1; 8],
                since_ms: 1,
                until_ms: 2,
                after: Some(cursor),
            },
            HistoryPayload::Batch {
                sync: [2; 8],
                more: true,
                next: Some(cursor),
                rows: rows.clone(),
            },
            HistoryPayload::Batch {
                sync: [2; 8],
                more: false,
                next: None,
                rows: vec![],
            },
        ];
        for p in &ps {
            let b = p.encode();
            assert_eq!(&HistoryPayload::decode(p.kind(), &b).unwrap(), p);
            for cut in 0..b.len() {
                assert!(HistoryPayload::decode(p.kind(), &b[..cut]).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert!(HistoryPayload::decode(p.kind(), &long).is_err());
        }
        assert!(HistoryPayload::decode(kind::CHAT, &ps[0].encode()).is_err());
        let batch = |rows: Vec<HistoryRow<'_>>| {
            HistoryPayload::Batch {
                sync: [0; 8],
                more: false,
                next: None,
                rows,
            }
            .encode()
        };
        // Read marks are for incoming rows, acknowledgements for outgoing
        // ones; peers are canonical usernames.
        let mut bad = rows[0].clone();
        bad.read = true;
        let mut acked_in = rows[1].clone();
        acked_in.acked_at_ms = Some(1);
        let mut shouting = rows[1].clone();
        shouting.peer = "Carol";
        for r in [bad, acked_in, shouting] {
            assert!(HistoryPayload::decode(kind::CHAT_HISTORY, &batch(vec![r])).is_err());
        }
        // Unknown flags, a flag byte that is no bool, too many rows.
        let mut b = batch(vec![rows[0].clone()]);
        let flags = 8 + 1 + 1 + 1 + 1 + 3;
        assert_eq!(b[flags], ROW_OUTGOING);
        b[flags] |= 4;
        assert!(HistoryPayload::decode(kind::CHAT_HISTORY, &b).is_err());
        let mut b = batch(vec![]);
        b[8] = 2;
        assert!(HistoryPayload::decode(kind::CHAT_HISTORY, &b).is_err());
        let mut b = batch(vec![]);
        b[10] = MAX_BATCH_ROWS as u8 + 1;
        assert!(matches!(
            HistoryPayload::decode(kind::CHAT_HISTORY, &b),
            Err(WireError::TooLarge { .. })
        ));
    }

    /// Issue 17: a device added later gets the last 30 days from another
    /// device of the account, in bounded batches sealed to it alone: the
    /// same messages, acknowledgements and read state, in the same order;
    /// nothing older; one event per peer; asked once.
    #[test]
    fn a_new_device_takes_the_last_30_days() {
        let mut desk = desk();
        let mut phone = core("alice");
        assert_eq!(phone.hist.state, HistoryState::Fresh);
        // Not before it is online.
        let mut out = Out::default();
        phone.handle_timeout(Millis(0), NOW, &mut out);
        assert!(out.0.is_empty() && phone.poll_timeout().is_none());

        let ask = first_ask(&mut phone, Millis(10));
        let batches = sync(&mut phone, &mut desk, ask);
        assert!(batches >= 3, "{batches} batches");

        let cut = NOW.get() - HISTORY_WINDOW_MS;
        for peer in ["bob", "carol"] {
            let want: Vec<Row> = rows(&desk, peer)
                .into_iter()
                .filter(|r| r.3 >= cut)
                .collect();
            assert_eq!(rows(&phone, peer), want, "{peer}");
            assert_eq!(phone.unread(peer).unwrap(), desk.unread(peer).unwrap());
        }
        assert_eq!(rows(&phone, "bob").len(), 150 + 20 + 3, "nothing older");
        assert_eq!(phone.unread("bob").unwrap(), 3);
        assert_eq!(
            drain(&mut phone),
            vec![
                ChatEvent::HistorySynced {
                    peer: "bob".into(),
                    added: 173,
                    unread: 3
                },
                ChatEvent::HistorySynced {
                    peer: "carol".into(),
                    added: 5,
                    unread: 5
                },
            ]
        );
        let s = phone.history_stats().clone();
        assert_eq!((s.syncs_done, s.rows_added), (1, 178));
        assert_eq!(desk.history_stats().batches_answered as usize, batches);
        // Done for good: no more asks, none after a restart either.
        assert_eq!(phone.hist.state, HistoryState::Done);
        assert_eq!(phone.store.history_state().unwrap(), HistoryState::Done);
        let mut out = Out::default();
        phone.on_online(Millis(20), NOW, &mut out);
        phone.peer_online(Millis(30), "alice");
        phone.handle_timeout(Millis(10_000_000), NOW, &mut out);
        assert!(out.0.is_empty() && out.1.is_empty());
    }

    /// Rows the new device already has (come live while it syncs), a batch
    /// delivered twice, a second device answering the same ask: each
    /// message once.
    #[test]
    fn every_message_once() {
        let mut laptop = desk();
        let mut desk = desk();
        let mut phone = core("alice");
        // Two of bob's messages reached the phone live already.
        receive(&mut phone, "bob", 1000, 2, NOW.get() - DAY);
        drain(&mut phone);
        // Its store was fresh when it started: it still asks.
        phone.hist.state = HistoryState::Partial;
        let ask = first_ask(&mut phone, Millis(10));
        let (desk_cert, laptop_cert) = (cert("alice", 1), cert("alice", 3));
        let mut out = Out::default();
        desk.on_history_envelope(
            Millis(1),
            NOW,
            &cert("alice", 2),
            kind::CHAT_HISTORY_ASK,
            &ask,
            &mut out,
        );
        laptop.on_history_envelope(
            Millis(1),
            NOW,
            &cert("alice", 2),
            kind::CHAT_HISTORY_ASK,
            &ask,
            &mut out,
        );
        let (desk_batch, laptop_batch) = (out.1[0].3.clone(), out.1[1].3.clone());
        // The desk answered first: pulled from; the laptop's is dropped,
        // and so is the desk's batch again.
        let mut pout = Out::default();
        phone.on_history_envelope(
            Millis(2),
            NOW,
            &desk_cert,
            kind::CHAT_HISTORY,
            &desk_batch,
            &mut pout,
        );
        let taken = rows(&phone, "bob").len();
        phone.on_history_envelope(
            Millis(2),
            NOW,
            &laptop_cert,
            kind::CHAT_HISTORY,
            &laptop_batch,
            &mut pout,
        );
        phone.on_history_envelope(
            Millis(2),
            NOW,
            &desk_cert,
            kind::CHAT_HISTORY,
            &desk_batch,
            &mut pout,
        );
        assert_eq!(phone.history_stats().stale, 2);
        assert_eq!(rows(&phone, "bob").len(), taken);
        assert_eq!(pout.1.len(), 1, "one pull, from the desk");
        assert_eq!(pout.1[0].1, desk_cert.x25519);
        // The rest, from the desk.
        let next = pout.1[0].3.clone();
        sync_from(&mut phone, &mut desk, next);
        let cut = NOW.get() - HISTORY_WINDOW_MS;
        let want: Vec<Row> = rows(&desk, "bob")
            .into_iter()
            .filter(|r| r.3 >= cut)
            .collect();
        assert_eq!(rows(&phone, "bob"), want);
        let added: u64 = drain(&mut phone)
            .iter()
            .map(|e| match e {
                ChatEvent::HistorySynced { peer, added, .. } if peer == "bob" => *added,
                _ => 0,
            })
            .sum();
        assert_eq!(added, 173 - 2, "the two it had are not added again");
        // A whole second sync from the laptop adds nothing.
        phone.hist.state = HistoryState::Partial;
        phone.hist.next_ask = Millis(0);
        let ask = first_ask(&mut phone, Millis(20));
        sync(&mut phone, &mut laptop, ask);
        assert_eq!(rows(&phone, "bob"), want);
        assert!(drain(&mut phone).is_empty(), "nothing new");
    }

    /// [`sync`] from a pull already under way.
    fn sync_from(asker: &mut ChatCore, answerer: &mut ChatCore, ask: Vec<u8>) {
        sync(asker, answerer, ask);
    }

    /// Asks and batches are taken from our own account only; a stranger's
    /// are dropped unanswered and counted.
    #[test]
    fn other_accounts_are_refused() {
        let mut desk = desk();
        let mut phone = core("alice");
        let ask = first_ask(&mut phone, Millis(0));
        let mut out = Out::default();
        for who in ["mallory", "bob"] {
            assert!(desk.on_history_envelope(
                Millis(1),
                NOW,
                &cert(who, 4),
                kind::CHAT_HISTORY_ASK,
                &ask,
                &mut out
            ));
        }
        assert!(
            out.0.is_empty() && out.1.is_empty(),
            "no answer to a stranger"
        );
        assert_eq!(desk.history_stats().foreign, 2);
        // A forged batch, even for the right sync.
        let sync_id = match HistoryPayload::decode(kind::CHAT_HISTORY_ASK, &ask).unwrap() {
            HistoryPayload::Ask { sync, .. } => sync,
            _ => unreachable!(),
        };
        let forged = HistoryPayload::Batch {
            sync: sync_id,
            more: false,
            next: None,
            rows: vec![HistoryRow {
                peer: "bob",
                outgoing: true,
                read: false,
                id: [9; 16],
                sent_at_ms: NOW.get() - 1,
                acked_at_ms: None,
                text: "forged",
            }],
        }
        .encode();
        phone.on_history_envelope(
            Millis(2),
            NOW,
            &cert("mallory", 4),
            kind::CHAT_HISTORY,
            &forged,
            &mut out,
        );
        assert!(rows(&phone, "bob").is_empty());
        assert_eq!(phone.history_stats().foreign, 1);
        // The same from our own device is taken.
        phone.on_history_envelope(
            Millis(2),
            NOW,
            &cert("alice", 1),
            kind::CHAT_HISTORY,
            &forged,
            &mut out,
        );
        assert_eq!(rows(&phone, "bob").len(), 1);
        // Other kinds are not the history's.
        assert!(!phone.on_history_envelope(
            Millis(3),
            NOW,
            &cert("alice", 1),
            kind::CHAT,
            &forged,
            &mut out
        ));
    }

    /// Nothing older than 30 days leaves the answering device, whatever
    /// the ask says; rows outside the ask are not taken either.
    #[test]
    fn the_30_day_cut_off() {
        let mut desk = desk();
        let ask = HistoryPayload::Ask {
            sync: [1; 8],
            since_ms: 0,
            until_ms: u64::MAX,
            after: None,
        }
        .encode();
        let mut phone = core("alice");
        phone.hist.online = true;
        phone.hist.phase = Phase::Asking {
            sync: [1; 8],
            since: 0,
            until: u64::MAX,
            wait: Millis(100),
        };
        sync(&mut phone, &mut desk, ask);
        let oldest = rows(&phone, "bob").iter().map(|r| r.3).min().unwrap();
        assert!(oldest >= NOW.get() - HISTORY_WINDOW_MS - MAX_SKEW_MS);
        assert_eq!(rows(&phone, "bob").len(), 173);

        // The asker drops rows outside what it asked for.
        let mut phone = core("alice");
        let ask = first_ask(&mut phone, Millis(0));
        let sync_id = match HistoryPayload::decode(kind::CHAT_HISTORY_ASK, &ask).unwrap() {
            HistoryPayload::Ask { sync, .. } => sync,
            _ => unreachable!(),
        };
        let old = HistoryPayload::Batch {
            sync: sync_id,
            more: false,
            next: None,
            rows: vec![HistoryRow {
                peer: "bob",
                outgoing: false,
                read: false,
                id: [1; 16],
                sent_at_ms: NOW.get() - 31 * DAY,
                acked_at_ms: None,
                text: "old",
            }],
        }
        .encode();
        let mut out = Out::default();
        phone.on_history_envelope(
            Millis(1),
            NOW,
            &cert("alice", 1),
            kind::CHAT_HISTORY,
            &old,
            &mut out,
        );
        assert!(rows(&phone, "bob").is_empty());
        assert_eq!(
            phone.hist.state,
            HistoryState::Done,
            "an empty history is synced"
        );
    }

    /// No device answers: asked again after a backoff, sooner when one of
    /// our devices is heard from; a pull that stops being answered is
    /// given up (and asked again later); a fresh device that has
    /// messages of its own by then does not ask.
    #[test]
    fn unanswered_asks_and_stalled_pulls() {
        const A: u64 = FIRST_ASK_DELAY_MS;
        let mut phone = core("alice");
        first_ask(&mut phone, Millis(0));
        let mut out = Out::default();
        phone.handle_timeout(Millis(A + ANSWER_WAIT_MS), NOW, &mut out);
        assert_eq!(
            phone.poll_timeout(),
            Some(Millis(A + ANSWER_WAIT_MS + ASK_BACKOFF_MS))
        );
        phone.peer_online(Millis(A + ANSWER_WAIT_MS + 1), "alice");
        assert_eq!(phone.poll_timeout(), Some(Millis(A + ANSWER_WAIT_MS + 1)));
        phone.handle_timeout(Millis(A + ANSWER_WAIT_MS + 1), NOW, &mut out);
        assert_eq!(out.0.len(), 1, "asked again");

        // A pull the desk stops answering: asked MAX_BATCH_TRIES times.
        let mut desk = desk();
        let ask = out.0[0].2.clone();
        let mut dout = Out::default();
        desk.on_history_envelope(
            Millis(1),
            NOW,
            &cert("alice", 2),
            kind::CHAT_HISTORY_ASK,
            &ask,
            &mut dout,
        );
        let mut pout = Out::default();
        let t0 = Millis(A + ANSWER_WAIT_MS + 2);
        phone.on_history_envelope(
            t0,
            NOW,
            &cert("alice", 1),
            kind::CHAT_HISTORY,
            &dout.1[0].3,
            &mut pout,
        );
        assert_eq!(pout.1.len(), 1);
        let mut t = t0;
        for _ in 0..MAX_BATCH_TRIES + 1 {
            t = phone.poll_timeout().unwrap();
            phone.handle_timeout(t, NOW, &mut pout);
        }
        assert_eq!(pout.1.len() as u32, MAX_BATCH_TRIES);
        assert_eq!(phone.history_stats().syncs_given_up, 1);
        // What came is kept and reported; the rest is asked for later.
        assert!(!rows(&phone, "bob").is_empty());
        assert!(matches!(
            drain(&mut phone)[..],
            [ChatEvent::HistorySynced { .. }, ..]
        ));
        assert_eq!(phone.hist.state, HistoryState::Partial);
        assert!(phone.poll_timeout().unwrap() > t);

        // A fresh device that has messages of its own by its first ask.
        let mut other = core("alice");
        receive(&mut other, "bob", 0, 1, NOW.get());
        let mut out = Out::default();
        other.on_online(Millis(0), NOW, &mut out);
        other.handle_timeout(Millis(FIRST_ASK_DELAY_MS), NOW, &mut out);
        assert!(out.0.is_empty());
        assert_eq!(other.hist.state, HistoryState::Done);
        // A device with no history of its own does not answer.
        let mut empty = core("alice");
        empty.on_history_envelope(
            Millis(0),
            NOW,
            &cert("alice", 2),
            kind::CHAT_HISTORY_ASK,
            &ask,
            &mut out,
        );
        assert!(out.1.is_empty());
    }

    /// One sync at a time on the answering side: another device's ask
    /// waits until the first's ends; a device is given at most
    /// MAX_SYNC_ROWS rows per sync.
    #[test]
    fn one_sync_served_at_a_time() {
        let mut desk = desk();
        let ask = |sync: u8| {
            HistoryPayload::Ask {
                sync: [sync; 8],
                since_ms: 0,
                until_ms: u64::MAX,
                after: None,
            }
            .encode()
        };
        let mut out = Out::default();
        desk.on_history_envelope(
            Millis(0),
            NOW,
            &cert("alice", 2),
            kind::CHAT_HISTORY_ASK,
            &ask(1),
            &mut out,
        );
        desk.on_history_envelope(
            Millis(1),
            NOW,
            &cert("alice", 3),
            kind::CHAT_HISTORY_ASK,
            &ask(2),
            &mut out,
        );
        assert_eq!(out.1.len(), 1);
        assert_eq!(desk.history_stats().busy, 1);
        // The same device starting over is answered.
        desk.on_history_envelope(
            Millis(2),
            NOW,
            &cert("alice", 2),
            kind::CHAT_HISTORY_ASK,
            &ask(3),
            &mut out,
        );
        assert_eq!(out.1.len(), 2);
        // After the deadline, the other device's turn.
        desk.on_history_envelope(
            Millis(3 + SYNC_DEADLINE_MS),
            NOW,
            &cert("alice", 3),
            kind::CHAT_HISTORY_ASK,
            &ask(2),
            &mut out,
        );
        assert_eq!(out.1.len(), 3);
        // The row cap: asking the same batch again and again ends.
        for i in 0..(MAX_SYNC_ROWS / MAX_BATCH_ROWS as u64 + 2) {
            desk.on_history_envelope(
                Millis(4 + SYNC_DEADLINE_MS + i),
                NOW,
                &cert("alice", 3),
                kind::CHAT_HISTORY_ASK,
                &ask(2),
                &mut out,
            );
        }
        assert!(desk.history_stats().busy > 1);
        assert!((out.1.len() as u64) < MAX_SYNC_ROWS / MAX_BATCH_ROWS as u64 + 5);
    }
}
