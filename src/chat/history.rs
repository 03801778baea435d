//! History for a new device (issue 17): a device whose store is fresh
//! asks the account's other devices for the last [`HISTORY_WINDOW_MS`] of
//! history (`CHAT_HISTORY_ASK`, to our own username: every other device
//! that is online, never stored for one that is not). The first device to
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
    /// history now, the first time.
    pub fn on_online(&mut self, now: Millis, unix: UnixMillis, sink: &mut dyn EnvelopeSink) {
        let h = &mut self.hist;
        h.online = true;
        if h.next_ask == Millis::MAX {
            h.next_ask = now;
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
