//! Chat, end to end encrypted: each message travels in a sealed envelope
//! (see [`crate::overlay::envelope`]) and is acknowledged end to end by
//! the recipient with a signed envelope of its own, after the recipient
//! wrote it to its history. Until that acknowledgement arrives the
//! sender's outbox keeps the message and sends it again:
//! - the overlay says it was delivered: again after
//!   [`ChatConfig::ack_wait_ms`] (the recipient may have died before
//!   writing it);
//! - it waits on the recipient's directory owners (recipient offline):
//!   again after [`ChatConfig::stored_retry_ms`], as the owners push it
//!   at the recipient's next login, or at once when the recipient is heard
//!   from ([`ChatCore::peer_online`]: a mailbox dies with its owner);
//! - it failed: with exponential backoff up to [`ChatConfig::max_backoff_ms`];
//! - the sender restarted: at once, from the outbox in SQLite.
//!
//! Receivers keep each (sender, message id) once and acknowledge every
//! copy, so resending never shows a duplicate. Messages from blocked users
//! are dropped unacknowledged.
//!
//! One account on several devices (issue 17): incoming messages and their
//! acknowledgements reach every device of the account (the overlay seals
//! one copy per device). What one device does is copied to the account's
//! other devices ([`ChatCore::with_account`]), as XMPP message carbons
//! (XEP-0280) do, in envelopes to our own username (the overlay leaves out
//! the sending device) that wait on the directory owners for a device that
//! is offline:
//! - `CHAT_SENT`: a message we sent, kept there as outgoing in the
//!   conversation with its recipient, once (by id), dated by the sending
//!   device's clock so the histories sort alike; sent with the first
//!   attempt of the message, and again after a restart while it is still
//!   in the outbox;
//! - `CHAT_READ`: the conversation is read up to an incoming message (a
//!   mark that only moves forward; see [`ChatCore::mark_read`]).
//!
//! Both are taken only from a device of our own account (the envelope's
//! verified certificate names our username); they are not acknowledged end
//! to end: the overlay's answer (delivered, or stored for an offline
//! device) ends them, a failure sends them again, up to
//! [`MAX_SYNC_ATTEMPTS`] times.
//!
//! [`ChatCore`] is sans-IO for the network and time (envelopes go out
//! through an [`EnvelopeSink`], `now` comes in); its history and outbox
//! are the SQLite [`ChatStore`].
//!
//! A device added later takes the last 30 days of history from another of
//! our devices that is online ([`history`]: `CHAT_HISTORY_ASK`,
//! `CHAT_HISTORY`, sealed device to device, from our own account only).
//!
//! Payloads: `CHAT`: `id [16] | sent_at_ms u64 | text str16`;
//! `CHAT_ACK`: `id [16]`; `CHAT_SENT`: `peer str8 | id [16] | sent_at_ms
//! u64 | text str16`; `CHAT_READ`: `peer str8 | sent_at_ms u64 | id [16]`
//! (`peer`: the other party, a canonical username);
//! `CHAT_HISTORY_ASK`: `sync [8] | since_ms u64 | until_ms u64 | cursor`;
//! `CHAT_HISTORY`: `sync [8] | more u8 | cursor | count u8 | rows`, a row
//! `peer str8 | flags u8 (1 outgoing, 2 read) | id [16] | sent_at_ms u64 |
//! acked_at_ms u64 (0: not acknowledged) | text str16`, a cursor `0 u8` or
//! `1 u8 | sent_at_ms u64 | peer str8 | id [16] | outgoing u8`.

pub mod history;
mod store;

pub use history::{HistoryPayload, HistoryStats};
pub use store::{ChatStore, HistoryState};

use crate::identity::{Certificate, Username};
use crate::overlay::EnvelopeId;
use crate::overlay::envelope::kind;
pub use crate::overlay::envelope::{EnvelopeOutcome, EnvelopeSink};
use crate::sqlite::SqliteError;
use crate::time::{Millis, UnixMillis};
use crate::wire::{Reader, WireError, Writer};
use rand::RngCore;
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

/// A chat message id: random, chosen by the sender.
pub type MsgId = [u8; 16];

/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 4000;

/// Attempts at one copy to our other devices before it is given up.
pub const MAX_SYNC_ATTEMPTS: u32 = 8;

/// Copies to our other devices awaiting the overlay's answer, at most
/// (the overlay answers every envelope; this bounds a lost answer).
const MAX_SYNCS_IN_FLIGHT: usize = 1024;

/// Acknowledgements of our messages that came before the copy of the
/// message from the device that sent it, at most.
const MAX_EARLY_ACKS: usize = 1024;

#[derive(Debug, Error)]
pub enum ChatError {
    #[error(transparent)]
    Store(#[from] SqliteError),
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("empty message")]
    Empty,
    #[error("{0} is blocked")]
    Blocked(String),
}

impl ChatError {
    fn store(path: &std::path::Path, source: rusqlite::Error) -> Self {
        ChatError::Store(store::SCHEMA.error(path, source))
    }
}

/// One message in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The other party.
    pub peer: String,
    pub id: MsgId,
    pub outgoing: bool,
    pub text: String,
    /// When the sender wrote it (sender's clock).
    pub sent_at_ms: u64,
    /// When it entered this history (local clock).
    pub at_ms: u64,
    /// Outgoing: when the recipient acknowledged it.
    pub acked_at_ms: Option<u64>,
    /// Incoming: read, here or on another of our devices (at or before
    /// the conversation's read mark). Always false for outgoing ones.
    pub read: bool,
}

/// Chat payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatPayload<'a> {
    Message {
        id: MsgId,
        sent_at_ms: u64,
        text: &'a str,
    },
    Ack {
        id: MsgId,
    },
    /// A message we sent to `peer` from another of our devices.
    Sent {
        peer: &'a str,
        id: MsgId,
        sent_at_ms: u64,
        text: &'a str,
    },
    /// The conversation with `peer` is read up to the incoming message
    /// (`sent_at_ms`, `id`), on another of our devices.
    Read {
        peer: &'a str,
        sent_at_ms: u64,
        id: MsgId,
    },
}

/// A payload's `peer`: a username in canonical form (what the sender's
/// history is keyed by), so that decoding and encoding agree.
fn read_peer<'a>(r: &mut Reader<'a>) -> Result<&'a str, WireError> {
    let peer = r.str8("peer")?;
    match Username::parse(peer) {
        Ok(u) if u.as_str() == peer => Ok(peer),
        _ => Err(WireError::Invalid { field: "peer" }),
    }
}

fn read_text<'a>(r: &mut Reader<'a>) -> Result<&'a str, WireError> {
    let text = r.str16("message text")?;
    if text.len() > MAX_TEXT {
        return Err(WireError::TooLarge {
            len: text.len(),
            max: MAX_TEXT,
        });
    }
    Ok(text)
}

impl<'a> ChatPayload<'a> {
    pub fn kind(&self) -> u8 {
        match self {
            ChatPayload::Message { .. } => kind::CHAT,
            ChatPayload::Ack { .. } => kind::CHAT_ACK,
            ChatPayload::Sent { .. } => kind::CHAT_SENT,
            ChatPayload::Read { .. } => kind::CHAT_READ,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            ChatPayload::Message {
                id,
                sent_at_ms,
                text,
            } => {
                w.raw(id).u64(*sent_at_ms).bytes16(text.as_bytes());
            }
            ChatPayload::Ack { id } => {
                w.raw(id);
            }
            ChatPayload::Sent {
                peer,
                id,
                sent_at_ms,
                text,
            } => {
                w.bytes8(peer.as_bytes())
                    .raw(id)
                    .u64(*sent_at_ms)
                    .bytes16(text.as_bytes());
            }
            ChatPayload::Read {
                peer,
                sent_at_ms,
                id,
            } => {
                w.bytes8(peer.as_bytes()).u64(*sent_at_ms).raw(id);
            }
        }
        w.into_vec()
    }

    /// Decode a payload of envelope kind `k`; borrows, never panics.
    pub fn decode(k: u8, b: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let p = match k {
            kind::CHAT => {
                let id = r.array()?;
                let sent_at_ms = r.u64()?;
                let text = read_text(&mut r)?;
                ChatPayload::Message {
                    id,
                    sent_at_ms,
                    text,
                }
            }
            kind::CHAT_ACK => ChatPayload::Ack { id: r.array()? },
            kind::CHAT_SENT => {
                let peer = read_peer(&mut r)?;
                let id = r.array()?;
                let sent_at_ms = r.u64()?;
                let text = read_text(&mut r)?;
                ChatPayload::Sent {
                    peer,
                    id,
                    sent_at_ms,
                    text,
                }
            }
            kind::CHAT_READ => {
                let peer = read_peer(&mut r)?;
                let sent_at_ms = r.u64()?;
                let id = r.array()?;
                ChatPayload::Read {
                    peer,
                    sent_at_ms,
                    id,
                }
            }
            got => {
                return Err(WireError::UnknownType {
                    what: "chat payload",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(p)
    }
}

#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub ack_wait_ms: u64,
    pub stored_retry_ms: u64,
    pub retry_base_ms: u64,
    pub max_backoff_ms: u64,
    /// Wait this long for the overlay's answer about an attempt.
    pub attempt_timeout_ms: u64,
    /// The directory must say "no such user" for this long before the
    /// messages to them are given up: a record can be missing for a while
    /// when its supernode fails, and a typo should still end soon.
    pub no_such_user_ms: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            ack_wait_ms: 15_000,
            stored_retry_ms: 3_600_000,
            retry_base_ms: 2_000,
            max_backoff_ms: 120_000,
            attempt_timeout_ms: 30_000,
            no_such_user_ms: 10_000,
        }
    }
}

/// How far an attempt got, as the overlay reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The recipient's device took it (their acknowledgement follows once
    /// it is in their history).
    Delivered,
    /// The recipient is offline: it waits on their directory owners.
    Stored,
    /// It failed; it will be sent again.
    Retrying(String),
}

/// What the chat reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// A new message (shown once, whatever the number of copies).
    Received(Message),
    /// Our message was accepted into the outbox.
    Queued { to: String, id: MsgId },
    /// The overlay's news about an attempt (not yet the recipient's
    /// acknowledgement).
    Progress {
        to: String,
        id: MsgId,
        delivery: Delivery,
    },
    /// The recipient acknowledged it: it is in their history.
    Acked { to: String, id: MsgId },
    /// Given up: it is out of the outbox and will not be sent again.
    Failed {
        to: String,
        id: MsgId,
        reason: GiveUp,
    },
    /// A history write failed (the message stays unacknowledged).
    StoreFailed { error: String },
    /// A message we sent from another of our devices, now in this history
    /// (outgoing; shown once).
    Synced(Message),
    /// The conversation with `peer` was read, here or on another of our
    /// devices: `unread` incoming messages are left after the mark.
    Read { peer: String, unread: u64 },
    /// History taken from another of our devices added `added` messages
    /// to the conversation with `peer` (or moved its read mark): load it
    /// again. Once per peer per sync.
    HistorySynced {
        peer: String,
        added: u64,
        unread: u64,
    },
}

/// Why a message was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GiveUp {
    #[error("no such user: the directory has no account of that name")]
    NoSuchUser,
}

#[derive(Debug)]
struct Pending {
    text: String,
    sent_at_ms: u64,
    attempts: u32,
    next_try: Millis,
}

/// A copy of what we did for our other devices (`CHAT_SENT`, `CHAT_READ`).
#[derive(Debug)]
struct SelfSync {
    kind: u8,
    payload: Vec<u8>,
    /// Attempts made so far.
    attempts: u32,
    /// Sent again at (node timeline), after a failure.
    next_try: Millis,
}

#[derive(Debug)]
pub struct ChatCore {
    store: ChatStore,
    cfg: ChatConfig,
    /// Our own username (canonical): what we do is copied to our other
    /// devices, and copies are taken from them only. `None`: no copies.
    me: Option<String>,
    /// Copies to our other devices awaiting the overlay's answer, by
    /// envelope id.
    syncs: BTreeMap<EnvelopeId, SelfSync>,
    /// Copies that failed, waiting to go again at their `next_try`.
    syncs_due: Vec<SelfSync>,
    /// Acknowledgements (peer, id) -> when, of our messages not in this
    /// history yet: sent from another of our devices whose copy is still
    /// on its way; applied when it comes. At most [`MAX_EARLY_ACKS`].
    early_acks: BTreeMap<(String, MsgId), u64>,
    pending: BTreeMap<(String, MsgId), Pending>,
    by_envelope: BTreeMap<EnvelopeId, (String, MsgId)>,
    /// Recipients the directory did not know, since when (cleared when
    /// they are heard from): given up after `no_such_user_ms`.
    not_found: BTreeMap<String, Millis>,
    /// Taking history from (and giving it to) our other devices.
    hist: history::HistorySync,
    events: VecDeque<ChatEvent>,
}

impl ChatCore {
    /// Start on `store`; every message still in its outbox goes out again
    /// at the first [`ChatCore::handle_timeout`].
    pub fn new(store: ChatStore, cfg: ChatConfig, now: Millis) -> Result<Self, ChatError> {
        let mut pending = BTreeMap::new();
        for m in store.outbox()? {
            pending.insert(
                (m.peer, m.id),
                Pending {
                    text: m.text,
                    sent_at_ms: m.sent_at_ms,
                    attempts: 0,
                    next_try: now,
                },
            );
        }
        let hist = history::HistorySync::new(store.history_state()?);
        Ok(ChatCore {
            hist,
            store,
            cfg,
            me: None,
            syncs: BTreeMap::new(),
            syncs_due: Vec::new(),
            early_acks: BTreeMap::new(),
            pending,
            not_found: BTreeMap::new(),
            by_envelope: BTreeMap::new(),
            events: VecDeque::new(),
        })
    }

    /// Run as user `me`, whose other devices get copies of the messages we
    /// send and of what we read, and whose copies we take.
    pub fn with_account(mut self, me: &str) -> Self {
        self.me = Some(me.to_ascii_lowercase());
        self
    }

    /// Messages waiting for their acknowledgement.
    pub fn outbox_len(&self) -> usize {
        self.pending.len()
    }

    /// Send `text` to `to` at `now`: written to the outbox, then sent;
    /// dated by `unix` (the wall clock).
    pub fn send(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        rng: &mut dyn RngCore,
        to: &str,
        text: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<MsgId, ChatError> {
        if text.is_empty() {
            return Err(ChatError::Empty);
        }
        if text.len() > MAX_TEXT {
            return Err(ChatError::TooLong {
                len: text.len(),
                max: MAX_TEXT,
            });
        }
        let to = to.to_ascii_lowercase();
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let m = Message {
            peer: to.clone(),
            id,
            outgoing: true,
            text: text.to_owned(),
            sent_at_ms: unix.get(),
            at_ms: unix.get(),
            acked_at_ms: None,
            read: false,
        };
        self.store.queue_outgoing(&m)?;
        self.events
            .push_back(ChatEvent::Queued { to: to.clone(), id });
        self.pending.insert(
            (to.clone(), id),
            Pending {
                text: m.text,
                sent_at_ms: unix.get(),
                attempts: 0,
                next_try: now,
            },
        );
        self.attempt(now, &(to, id), sink);
        Ok(id)
    }

    fn attempt(&mut self, now: Millis, key: &(String, MsgId), sink: &mut dyn EnvelopeSink) {
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        // The first attempt (of this process) copies it to our other
        // devices; they keep it once, whatever the number of copies.
        let copy = (p.attempts == 0).then(|| {
            ChatPayload::Sent {
                peer: &key.0,
                id: key.1,
                sent_at_ms: p.sent_at_ms,
                text: &p.text,
            }
            .encode()
        });
        p.attempts += 1;
        p.next_try = now + self.cfg.attempt_timeout_ms;
        let payload = ChatPayload::Message {
            id: key.1,
            sent_at_ms: p.sent_at_ms,
            text: &p.text,
        }
        .encode();
        let env = sink.send_envelope(&key.0, kind::CHAT, &payload, true);
        self.by_envelope.insert(env, key.clone());
        if let Some(copy) = copy {
            self.send_sync(kind::CHAT_SENT, copy, 0, sink);
        }
    }

    /// Send a copy to our other devices (stored for those offline).
    fn send_sync(&mut self, k: u8, payload: Vec<u8>, attempts: u32, sink: &mut dyn EnvelopeSink) {
        let Some(me) = &self.me else {
            return;
        };
        let env = sink.send_envelope(me, k, &payload, true);
        if self.syncs.len() >= MAX_SYNCS_IN_FLIGHT {
            self.syncs.pop_first();
        }
        self.syncs.insert(
            env,
            SelfSync {
                kind: k,
                payload,
                attempts: attempts + 1,
                next_try: Millis::MAX,
            },
        );
    }

    /// The user read the conversation with `peer` (up to its newest
    /// incoming message): marked here and on our other devices (where it
    /// comes as [`ChatEvent::Read`]). Returns the messages left unread
    /// (0: the mark is at the newest).
    pub fn mark_read(&mut self, peer: &str, sink: &mut dyn EnvelopeSink) -> Result<u64, ChatError> {
        let peer = peer.to_ascii_lowercase();
        if let Some((sent_at_ms, id)) = self.store.newest_incoming(&peer)?
            && self.store.mark_read(&peer, (sent_at_ms, id))?
        {
            let copy = ChatPayload::Read {
                peer: &peer,
                sent_at_ms,
                id,
            }
            .encode();
            self.send_sync(kind::CHAT_READ, copy, 0, sink);
        }
        self.store.unread(&peer)
    }

    /// Incoming messages from `peer` not read yet.
    pub fn unread(&self, peer: &str) -> Result<u64, ChatError> {
        self.store.unread(&peer.to_ascii_lowercase())
    }

    /// A copy from one of our other devices (`from`, already checked to be
    /// of our account).
    fn on_sync(&mut self, p: ChatPayload<'_>) {
        let r = match p {
            ChatPayload::Sent {
                peer,
                id,
                sent_at_ms,
                text,
            } => {
                let m = Message {
                    peer: peer.to_owned(),
                    id,
                    outgoing: true,
                    text: text.to_owned(),
                    sent_at_ms,
                    // Dated as the sending device dated it: the histories
                    // sort alike.
                    at_ms: sent_at_ms,
                    acked_at_ms: self.early_acks.remove(&(peer.to_owned(), id)),
                    read: false,
                };
                self.store.insert_sent_copy(&m).map(|new| {
                    if new {
                        self.events.push_back(ChatEvent::Synced(m));
                    }
                })
            }
            ChatPayload::Read {
                peer,
                sent_at_ms,
                id,
            } => self
                .store
                .mark_read(peer, (sent_at_ms, id))
                .and_then(|moved| {
                    if moved {
                        let unread = self.store.unread(peer)?;
                        self.events.push_back(ChatEvent::Read {
                            peer: peer.to_owned(),
                            unread,
                        });
                    }
                    Ok(())
                }),
            ChatPayload::Message { .. } | ChatPayload::Ack { .. } => Ok(()),
        };
        if let Err(e) = r {
            self.events.push_back(ChatEvent::StoreFailed {
                error: e.to_string(),
            });
        }
    }

    /// An envelope of a chat kind arrived from `from` (verified). Returns
    /// false when the kind is not chat's. Receipts and acknowledgements
    /// are dated by `unix` (the wall clock).
    pub fn on_envelope(
        &mut self,
        unix: UnixMillis,
        from: &Certificate,
        k: u8,
        payload: &[u8],
        blocked: bool,
        sink: &mut dyn EnvelopeSink,
    ) -> bool {
        if ![kind::CHAT, kind::CHAT_ACK, kind::CHAT_SENT, kind::CHAT_READ].contains(&k) {
            return false;
        }
        let peer = from.username.to_ascii_lowercase();
        let p = match ChatPayload::decode(k, payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, "malformed chat payload: {e}");
                return true;
            }
        };
        if matches!(p, ChatPayload::Sent { .. } | ChatPayload::Read { .. }) {
            // Only a device of our own account speaks for us.
            if self.me.as_deref() == Some(peer.as_str()) {
                self.on_sync(p);
            } else {
                tracing::debug!(%peer, "copy from another account refused");
            }
            return true;
        }
        if blocked {
            tracing::debug!(%peer, "chat from a blocked user dropped");
            return true;
        }
        match p {
            ChatPayload::Message {
                id,
                sent_at_ms,
                text,
            } => {
                let m = Message {
                    peer: peer.clone(),
                    id,
                    outgoing: false,
                    text: text.to_owned(),
                    sent_at_ms,
                    at_ms: unix.get(),
                    acked_at_ms: None,
                    read: false,
                };
                match self.store.insert_incoming(&m) {
                    Ok(new) => {
                        if new {
                            self.events.push_back(ChatEvent::Received(m));
                        }
                        // Every copy is acknowledged: the sender may have
                        // missed the first acknowledgement.
                        let ack = ChatPayload::Ack { id }.encode();
                        sink.send_envelope(&peer, kind::CHAT_ACK, &ack, true);
                    }
                    Err(e) => self.events.push_back(ChatEvent::StoreFailed {
                        error: e.to_string(),
                    }),
                }
            }
            ChatPayload::Ack { id } => {
                let key = (peer.clone(), id);
                match self.store.mark_acked(&peer, &id, unix.get()) {
                    Ok(was) => {
                        self.pending.remove(&key);
                        self.by_envelope.retain(|_, k| *k != key);
                        if was {
                            self.events.push_back(ChatEvent::Acked { to: peer, id });
                        } else if self.me.is_some()
                            && !self.store.has_outgoing(&peer, &id).unwrap_or(true)
                        {
                            // Sent from another of our devices, whose copy
                            // has not come yet.
                            if self.early_acks.len() >= MAX_EARLY_ACKS {
                                self.early_acks.pop_first();
                            }
                            self.early_acks.insert(key, unix.get());
                        }
                    }
                    Err(e) => self.events.push_back(ChatEvent::StoreFailed {
                        error: e.to_string(),
                    }),
                }
            }
            // Taken above.
            ChatPayload::Sent { .. } | ChatPayload::Read { .. } => {}
        }
        true
    }

    /// The directory has no user `to`. Once it has said so for
    /// `no_such_user_ms`, every message waiting for them is given up (out
    /// of the outbox, reported as failed); until then they are retried.
    pub fn no_such_user(&mut self, now: Millis, to: &str) {
        let to = to.to_ascii_lowercase();
        let since = *self.not_found.entry(to.clone()).or_insert(now);
        if now.since(since) < self.cfg.no_such_user_ms {
            return;
        }
        self.not_found.remove(&to);
        let keys: Vec<(String, MsgId)> = self
            .pending
            .keys()
            .filter(|(p, _)| *p == to)
            .cloned()
            .collect();
        for key in keys {
            self.pending.remove(&key);
            self.by_envelope.retain(|_, k| *k != key);
            if let Err(e) = self.store.give_up(&key.0, &key.1) {
                self.events.push_back(ChatEvent::StoreFailed {
                    error: e.to_string(),
                });
            }
            self.events.push_back(ChatEvent::Failed {
                to: key.0,
                id: key.1,
                reason: GiveUp::NoSuchUser,
            });
        }
    }

    /// `user` was just heard from (an envelope from them, or their record
    /// saying online): what waits for them on their owners' mailboxes, or
    /// in a long backoff, goes again now. A mailbox can be lost with its
    /// owner, and the recipient dedups a second copy; messages just sent
    /// and waiting for their acknowledgement keep their timer.
    pub fn peer_online(&mut self, now: Millis, user: &str) {
        let user = user.to_ascii_lowercase();
        if self.me.as_deref() == Some(user.as_str()) {
            self.own_device_heard(now);
        }
        self.not_found.remove(&user);
        let soon = now.saturating_add(self.cfg.ack_wait_ms);
        for ((to, _), p) in self.pending.iter_mut() {
            if *to == user && p.next_try > soon {
                p.next_try = now;
            }
        }
    }

    /// The overlay's outcome for envelope `env`. Returns whether it was one
    /// of chat's.
    pub fn on_envelope_outcome(
        &mut self,
        now: Millis,
        env: &EnvelopeId,
        o: EnvelopeOutcome,
    ) -> bool {
        if let Some(mut s) = self.syncs.remove(env) {
            if let EnvelopeOutcome::Failed(why) = o {
                if s.attempts < MAX_SYNC_ATTEMPTS {
                    let exp = self
                        .cfg
                        .retry_base_ms
                        .saturating_mul(1 << s.attempts.min(16));
                    s.next_try = now + exp.min(self.cfg.max_backoff_ms);
                    self.syncs_due.push(s);
                } else {
                    tracing::debug!("copy to our other devices given up: {why}");
                }
            }
            return true;
        }
        let Some(key) = self.by_envelope.remove(env) else {
            return false;
        };
        let Some(p) = self.pending.get_mut(&key) else {
            return true;
        };
        let delivery = match o {
            EnvelopeOutcome::Delivered => {
                p.next_try = now + self.cfg.ack_wait_ms;
                Delivery::Delivered
            }
            EnvelopeOutcome::Stored => {
                p.next_try = now + self.cfg.stored_retry_ms;
                Delivery::Stored
            }
            EnvelopeOutcome::Failed(why) => {
                let exp = self
                    .cfg
                    .retry_base_ms
                    .saturating_mul(1 << p.attempts.min(16));
                p.next_try = now + exp.min(self.cfg.max_backoff_ms);
                Delivery::Retrying(why)
            }
        };
        self.events.push_back(ChatEvent::Progress {
            to: key.0,
            id: key.1,
            delivery,
        });
        true
    }

    /// Retries and the history sync; `unix` (the wall clock) dates a
    /// history ask.
    pub fn handle_timeout(&mut self, now: Millis, unix: UnixMillis, sink: &mut dyn EnvelopeSink) {
        self.history_timeout(now, unix, sink);
        let due: Vec<(String, MsgId)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.attempt(now, &k, sink);
        }
        let (due, later) = std::mem::take(&mut self.syncs_due)
            .into_iter()
            .partition::<Vec<_>, _>(|s| s.next_try <= now);
        self.syncs_due = later;
        for s in due {
            self.send_sync(s.kind, s.payload, s.attempts, sink);
        }
        // Outcomes that never came (the overlay gives up well before).
        if self.by_envelope.len() > 4 * self.pending.len() + 64 {
            let live: std::collections::BTreeSet<&(String, MsgId)> = self.pending.keys().collect();
            self.by_envelope.retain(|_, k| live.contains(k));
        }
    }

    /// The next retry; `None` with nothing pending.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.pending
            .values()
            .map(|p| p.next_try)
            .chain(self.syncs_due.iter().map(|s| s.next_try))
            .chain(self.hist.poll_timeout())
            .min()
    }

    pub fn poll_event(&mut self) -> Option<ChatEvent> {
        self.events.pop_front()
    }

    /// The last `limit` messages with `peer`, oldest first.
    pub fn history(&self, peer: &str, limit: usize) -> Result<Vec<Message>, ChatError> {
        self.store.history(&peer.to_ascii_lowercase(), limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthorityKey, DeviceIdentity, Role, Username};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[derive(Default)]
    struct Sent(
        Vec<(String, u8, Vec<u8>, bool, EnvelopeId)>,
        /// To one device: (to, device, kind, payload).
        Vec<(String, [u8; 32], u8, Vec<u8>)>,
    );

    impl EnvelopeSink for Sent {
        fn send_envelope(&mut self, to: &str, k: u8, p: &[u8], store: bool) -> EnvelopeId {
            let id = [self.0.len() as u8 + 1; 16];
            self.0.push((to.into(), k, p.to_vec(), store, id));
            id
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
            [200u8.wrapping_add(self.1.len() as u8); 16]
        }
    }

    fn cert(name: &str) -> Certificate {
        let mut rng = StdRng::seed_from_u64(1);
        let a = AuthorityKey::generate(&mut rng);
        let d = DeviceIdentity::generate(&mut rng);
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

    #[test]
    fn payloads_round_trip_and_truncations_fail() {
        let ps = [
            ChatPayload::Message {
                id: [1; 16],
                sent_at_ms: 5,
                text: "héllo",
            },
            ChatPayload::Ack { id: [2; 16] },
            ChatPayload::Sent {
                peer: "bob",
                id: [3; 16],
                sent_at_ms: 7,
                text: "to bob",
            },
            ChatPayload::Read {
                peer: "bob",
                sent_at_ms: 8,
                id: [4; 16],
            },
        ];
        for p in ps {
            let b = p.encode();
            assert_eq!(ChatPayload::decode(p.kind(), &b).unwrap(), p);
            for cut in 0..b.len() {
                assert!(ChatPayload::decode(p.kind(), &b[..cut]).is_err());
            }
        }
        assert!(ChatPayload::decode(99, &[]).is_err());
        // A peer that is no canonical username is refused.
        for peer in ["Bob", "b", "bob!"] {
            let p = ChatPayload::Read {
                peer,
                sent_at_ms: 1,
                id: [0; 16],
            };
            assert!(
                ChatPayload::decode(p.kind(), &p.encode()).is_err(),
                "{peer}"
            );
        }
    }

    /// A chat core of `me` on an in-memory store (also the history tests').
    pub(super) fn core(me: &str) -> ChatCore {
        ChatCore::new(
            ChatStore::in_memory().unwrap(),
            ChatConfig::default(),
            Millis(0),
        )
        .unwrap()
        .with_account(me)
    }

    pub(super) fn events(c: &mut ChatCore) -> Vec<ChatEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// Issue 17: a message sent on one device shows on the account's
    /// other devices as sent, once, in the sender's order; copies come
    /// from our own account only.
    #[test]
    fn sent_messages_are_copied_to_our_other_devices() {
        let mut rng = StdRng::seed_from_u64(5);
        let (mut a1, mut a2) = (core("alice"), core("Alice"));
        let mut out = Sent::default();
        let mut ids = Vec::new();
        for (t, text) in [(30, "one"), (10, "two"), (20, "three")] {
            ids.push(
                a1.send(Millis(t), UnixMillis(t), &mut rng, "bob", text, &mut out)
                    .unwrap(),
            );
        }
        // Each message goes to bob, and a copy to alice (the overlay leaves
        // this device out).
        let copies: Vec<Vec<u8>> = out
            .0
            .iter()
            .filter(|(to, k, ..)| to == "alice" && *k == kind::CHAT_SENT)
            .map(|(_, _, p, store, _)| {
                assert!(*store, "waits for an offline device");
                p.clone()
            })
            .collect();
        assert_eq!(copies.len(), 3);
        assert_eq!(out.0.iter().filter(|(to, ..)| to == "bob").count(), 3);
        let mut none = Sent::default();
        // Delivered twice, out of order: shown once each.
        for p in copies.iter().rev().chain(copies.iter()) {
            assert!(a2.on_envelope(
                UnixMillis(99),
                &cert("alice"),
                kind::CHAT_SENT,
                p,
                false,
                &mut none
            ));
        }
        assert!(none.0.is_empty(), "copies are not acknowledged");
        let ev = events(&mut a2);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(
            ev.iter()
                .all(|e| matches!(e, ChatEvent::Synced(m) if m.outgoing && m.peer == "bob"))
        );
        // The same history as the sending device, in its order.
        let strip = |h: Vec<Message>| -> Vec<(MsgId, bool, String, u64)> {
            h.into_iter()
                .map(|m| (m.id, m.outgoing, m.text, m.sent_at_ms))
                .collect()
        };
        let h2 = strip(a2.history("bob", 10).unwrap());
        assert_eq!(h2, strip(a1.history("bob", 10).unwrap()));
        assert_eq!(
            h2.iter().map(|m| m.2.as_str()).collect::<Vec<_>>(),
            ["two", "three", "one"]
        );
        assert_eq!(a2.outbox_len(), 0, "the sending device sends it");
        assert_eq!(a2.poll_timeout(), None);

        // Bob's acknowledgement reaches both; on a2 it marks the copy, and
        // one that comes before the copy is kept for it.
        let ack = ChatPayload::Ack { id: ids[0] }.encode();
        a2.on_envelope(
            UnixMillis(100),
            &cert("bob"),
            kind::CHAT_ACK,
            &ack,
            false,
            &mut none,
        );
        assert_eq!(a2.history("bob", 10).unwrap()[2].acked_at_ms, Some(100));
        assert!(events(&mut a2).is_empty(), "not ours to report");
        let early = [7; 16];
        let ack = ChatPayload::Ack { id: early }.encode();
        a2.on_envelope(
            UnixMillis(101),
            &cert("bob"),
            kind::CHAT_ACK,
            &ack,
            false,
            &mut none,
        );
        let copy = ChatPayload::Sent {
            peer: "bob",
            id: early,
            sent_at_ms: 40,
            text: "four",
        }
        .encode();
        a2.on_envelope(
            UnixMillis(102),
            &cert("alice"),
            kind::CHAT_SENT,
            &copy,
            false,
            &mut none,
        );
        assert_eq!(a2.history("bob", 1).unwrap()[0].acked_at_ms, Some(101));

        // A stranger cannot put words in our mouth.
        let forged = ChatPayload::Sent {
            peer: "bob",
            id: [8; 16],
            sent_at_ms: 50,
            text: "forged",
        }
        .encode();
        let blocked_or_not = [false, true];
        for b in blocked_or_not {
            assert!(a2.on_envelope(
                UnixMillis(103),
                &cert("mallory"),
                kind::CHAT_SENT,
                &forged,
                b,
                &mut none
            ));
        }
        assert!(
            a2.history("bob", 10)
                .unwrap()
                .iter()
                .all(|m| m.text != "forged")
        );
        assert!(a2.history("mallory", 10).unwrap().is_empty());
        // Nor does bob, about his own conversation.
        a2.on_envelope(
            UnixMillis(104),
            &cert("bob"),
            kind::CHAT_SENT,
            &forged,
            false,
            &mut none,
        );
        assert!(
            a2.history("bob", 10)
                .unwrap()
                .iter()
                .all(|m| m.text != "forged")
        );
        assert!(none.0.is_empty());

        // A core with no account sends no copies.
        let mut lone = ChatCore::new(
            ChatStore::in_memory().unwrap(),
            ChatConfig::default(),
            Millis(0),
        )
        .unwrap();
        let mut out = Sent::default();
        lone.send(Millis(1), UnixMillis(1), &mut rng, "bob", "hi", &mut out)
            .unwrap();
        assert_eq!(out.0.len(), 1);
        assert_eq!(out.0[0].0, "bob");
    }

    /// A copy whose envelope failed goes again with backoff, a bounded
    /// number of times; one delivered or stored (for an offline device)
    /// is done. A restart copies the outbox again (receivers dedupe).
    #[test]
    fn copies_are_retried_and_resent_after_a_restart() {
        let cfg = ChatConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let mut rng = StdRng::seed_from_u64(6);
        let mut a1 = ChatCore::new(ChatStore::open(&path).unwrap(), cfg.clone(), Millis(0))
            .unwrap()
            .with_account("alice");
        let mut out = Sent::default();
        a1.send(Millis(1), UnixMillis(1), &mut rng, "bob", "hi", &mut out)
            .unwrap();
        let copy = |out: &Sent| -> Vec<(Vec<u8>, EnvelopeId)> {
            out.0
                .iter()
                .filter(|(to, ..)| to == "alice")
                .map(|(_, _, p, _, e)| (p.clone(), *e))
                .collect()
        };
        let (p0, env) = copy(&out)[0].clone();
        assert!(a1.on_envelope_outcome(Millis(2), &env, EnvelopeOutcome::Failed("x".into())));
        let at = a1.poll_timeout().unwrap();
        assert!(
            at > Millis(2) && at <= Millis(2) + cfg.max_backoff_ms,
            "{at:?}"
        );
        a1.handle_timeout(at, UnixMillis(0), &mut out);
        let copies = copy(&out);
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[1].0, p0, "the same copy");
        // Failing for good: given up after MAX_SYNC_ATTEMPTS.
        let mut env = copies[1].1;
        let mut now = at;
        for _ in 0..MAX_SYNC_ATTEMPTS + 2 {
            a1.on_envelope_outcome(now, &env, EnvelopeOutcome::Failed("x".into()));
            now += cfg.max_backoff_ms;
            a1.handle_timeout(now, UnixMillis(0), &mut out);
            env = out.0.last().unwrap().4;
        }
        assert_eq!(copy(&out).len() as u32, MAX_SYNC_ATTEMPTS);
        drop(a1);

        // Restarted with the message still unacknowledged: copied again.
        let mut a1 = ChatCore::new(ChatStore::open(&path).unwrap(), cfg.clone(), Millis(0))
            .unwrap()
            .with_account("alice");
        let mut out = Sent::default();
        a1.handle_timeout(Millis(0), UnixMillis(0), &mut out);
        let copies = copy(&out);
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].0, p0);
        assert!(a1.on_envelope_outcome(Millis(1), &copies[0].1, EnvelopeOutcome::Stored));
        // Stored for an offline device: done; only bob's retry is due.
        a1.handle_timeout(Millis(1) + cfg.ack_wait_ms, UnixMillis(0), &mut out);
        assert_eq!(copy(&out).len(), 1);
    }

    /// Reading a conversation on one device marks it read on the others,
    /// exactly up to the message read there.
    #[test]
    fn read_state_follows_the_account() {
        let (mut a1, mut a2) = (core("alice"), core("alice"));
        let mut none = Sent::default();
        for (id, at) in [(1u8, 10u64), (2, 20)] {
            let p = ChatPayload::Message {
                id: [id; 16],
                sent_at_ms: at,
                text: "hi",
            }
            .encode();
            for c in [&mut a1, &mut a2] {
                c.on_envelope(
                    UnixMillis(at),
                    &cert("bob"),
                    kind::CHAT,
                    &p,
                    false,
                    &mut none,
                );
            }
        }
        assert_eq!(
            (a1.unread("bob").unwrap(), a2.unread("Bob").unwrap()),
            (2, 2)
        );
        let mut out = Sent::default();
        assert_eq!(a1.mark_read("bob", &mut out).unwrap(), 0);
        assert!(
            events(&mut a1)
                .iter()
                .all(|e| !matches!(e, ChatEvent::Read { .. }))
        );
        let (to, k, p, store, _) = out.0[0].clone();
        assert_eq!((to.as_str(), k, store), ("alice", kind::CHAT_READ, true));
        // Reading again moves nothing and sends nothing.
        assert_eq!(a1.mark_read("bob", &mut out).unwrap(), 0);
        assert_eq!(out.0.len(), 1);

        // Not from a stranger.
        a2.on_envelope(UnixMillis(30), &cert("bob"), k, &p, false, &mut none);
        assert_eq!(a2.unread("bob").unwrap(), 2);
        // A message a1 had not seen when it read stays unread on a2.
        let late = ChatPayload::Message {
            id: [3; 16],
            sent_at_ms: 25,
            text: "late",
        }
        .encode();
        a2.on_envelope(
            UnixMillis(31),
            &cert("bob"),
            kind::CHAT,
            &late,
            false,
            &mut none,
        );
        while a2.poll_event().is_some() {}
        a2.on_envelope(UnixMillis(32), &cert("alice"), k, &p, false, &mut none);
        assert_eq!(
            events(&mut a2),
            vec![ChatEvent::Read {
                peer: "bob".into(),
                unread: 1
            }]
        );
        let h = a2.history("bob", 10).unwrap();
        let read: Vec<bool> = h.iter().map(|m| m.read).collect();
        assert_eq!(read, [true, true, false]);
        // Twice: once.
        a2.on_envelope(UnixMillis(33), &cert("alice"), k, &p, false, &mut none);
        assert!(events(&mut a2).is_empty());
    }

    #[test]
    fn message_acked_end_to_end_and_deduplicated() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut alice = ChatCore::new(
            ChatStore::in_memory().unwrap(),
            ChatConfig::default(),
            Millis(0),
        )
        .unwrap();
        let mut bob = ChatCore::new(
            ChatStore::in_memory().unwrap(),
            ChatConfig::default(),
            Millis(0),
        )
        .unwrap();
        let (mut a_out, mut b_out) = (Sent::default(), Sent::default());
        let id = alice
            .send(Millis(1), UnixMillis(1), &mut rng, "Bob", "hi", &mut a_out)
            .unwrap();
        assert_eq!(
            alice.poll_event(),
            Some(ChatEvent::Queued {
                to: "bob".into(),
                id
            })
        );
        let (to, k, p, store, env) = a_out.0[0].clone();
        assert_eq!((to.as_str(), k, store), ("bob", kind::CHAT, true));
        // Delivered twice (a retry): shown once, acknowledged twice.
        for _ in 0..2 {
            assert!(bob.on_envelope(UnixMillis(2), &cert("alice"), k, &p, false, &mut b_out));
        }
        assert!(matches!(bob.poll_event(), Some(ChatEvent::Received(m)) if m.text == "hi"));
        assert_eq!(bob.poll_event(), None);
        assert_eq!(b_out.0.len(), 2);
        assert!(alice.on_envelope_outcome(Millis(3), &env, EnvelopeOutcome::Delivered));
        assert!(matches!(
            alice.poll_event(),
            Some(ChatEvent::Progress {
                delivery: Delivery::Delivered,
                ..
            })
        ));
        // No ack yet: resent after the wait.
        alice.handle_timeout(
            Millis(3) + ChatConfig::default().ack_wait_ms,
            UnixMillis(0),
            &mut a_out,
        );
        assert_eq!(a_out.0.len(), 2);
        let (_, k, ack, _, _) = b_out.0[0].clone();
        alice.on_envelope(UnixMillis(4), &cert("bob"), k, &ack, false, &mut a_out);
        assert_eq!(
            alice.poll_event(),
            Some(ChatEvent::Acked {
                to: "bob".into(),
                id
            })
        );
        alice.on_envelope(UnixMillis(5), &cert("bob"), k, &ack, false, &mut a_out);
        assert_eq!(alice.poll_event(), None, "acked once");
        assert_eq!(alice.outbox_len(), 0);
        assert_eq!(alice.poll_timeout(), None);
    }

    #[test]
    fn blocked_and_stored_and_failed() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut bob = ChatCore::new(
            ChatStore::in_memory().unwrap(),
            ChatConfig::default(),
            Millis(0),
        )
        .unwrap();
        let mut out = Sent::default();
        let p = ChatPayload::Message {
            id: [9; 16],
            sent_at_ms: 0,
            text: "spam",
        }
        .encode();
        bob.on_envelope(
            UnixMillis(1),
            &cert("mallory"),
            kind::CHAT,
            &p,
            true,
            &mut out,
        );
        assert_eq!(bob.poll_event(), None);
        assert!(out.0.is_empty(), "no ack to a blocked user");
        assert!(bob.history("mallory", 10).unwrap().is_empty());

        let cfg = ChatConfig::default();
        let id = bob
            .send(Millis(10), UnixMillis(10), &mut rng, "carol", "x", &mut out)
            .unwrap();
        let env = out.0[0].4;
        bob.on_envelope_outcome(Millis(11), &env, EnvelopeOutcome::Stored);
        assert_eq!(bob.poll_timeout(), Some(Millis(11) + cfg.stored_retry_ms));
        bob.handle_timeout(Millis(11) + cfg.stored_retry_ms, UnixMillis(0), &mut out);
        let env = out.0[1].4;
        bob.on_envelope_outcome(Millis(12), &env, EnvelopeOutcome::Failed("x".into()));
        assert!(
            bob.poll_timeout()
                .is_some_and(|t| t <= Millis(12) + cfg.max_backoff_ms)
        );
        assert!(bob.history("carol", 5).unwrap()[0].acked_at_ms.is_none());
        let _ = id;
        assert!(matches!(
            bob.send(Millis(13), UnixMillis(13), &mut rng, "carol", "", &mut out),
            Err(ChatError::Empty)
        ));
        let long = "x".repeat(MAX_TEXT + 1);
        assert!(matches!(
            bob.send(
                Millis(13),
                UnixMillis(13),
                &mut rng,
                "carol",
                &long,
                &mut out
            ),
            Err(ChatError::TooLong { .. })
        ));
    }

    /// A message stored for an offline user goes again as soon as they are
    /// heard from, not after `stored_retry_ms`: the mailbox holding it may
    /// have died with its supernode.
    #[test]
    fn a_stored_message_goes_again_when_its_recipient_is_heard_from() {
        let mut rng = StdRng::seed_from_u64(4);
        let cfg = ChatConfig::default();
        let mut bob =
            ChatCore::new(ChatStore::in_memory().unwrap(), cfg.clone(), Millis(0)).unwrap();
        let mut out = Sent::default();
        bob.send(
            Millis(10),
            UnixMillis(10),
            &mut rng,
            "carol",
            "hi",
            &mut out,
        )
        .unwrap();
        bob.on_envelope_outcome(Millis(11), &out.0[0].4, EnvelopeOutcome::Stored);
        // Someone else coming online changes nothing.
        bob.peer_online(Millis(20), "dave");
        assert_eq!(bob.poll_timeout(), Some(Millis(11) + cfg.stored_retry_ms));
        bob.peer_online(Millis(30), "Carol");
        assert_eq!(bob.poll_timeout(), Some(Millis(30)));
        bob.handle_timeout(Millis(30), UnixMillis(0), &mut out);
        assert_eq!(out.0.len(), 2, "sent again");
        assert_eq!(out.0[1].0, "carol");
        // Just sent and awaiting the ack: hearing from carol again does
        // not resend it.
        bob.on_envelope_outcome(Millis(31), &out.0[1].4, EnvelopeOutcome::Delivered);
        bob.peer_online(Millis(32), "carol");
        assert_eq!(bob.poll_timeout(), Some(Millis(31) + cfg.ack_wait_ms));
    }

    #[test]
    fn restart_resends_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let mut rng = StdRng::seed_from_u64(4);
        let mut out = Sent::default();
        let id = {
            let mut c = ChatCore::new(
                ChatStore::open(&path).unwrap(),
                ChatConfig::default(),
                Millis(0),
            )
            .unwrap();
            c.send(
                Millis(1),
                UnixMillis(1),
                &mut rng,
                "bob",
                "survive",
                &mut Sent::default(),
            )
            .unwrap()
            // Killed here: no outcome, no ack.
        };
        let mut c = ChatCore::new(
            ChatStore::open(&path).unwrap(),
            ChatConfig::default(),
            Millis(100),
        )
        .unwrap();
        assert_eq!(c.poll_timeout(), Some(Millis(100)));
        c.handle_timeout(Millis(100), UnixMillis(0), &mut out);
        let p = ChatPayload::decode(kind::CHAT, &out.0[0].2).unwrap();
        assert_eq!(
            p,
            ChatPayload::Message {
                id,
                sent_at_ms: 1,
                text: "survive"
            }
        );
    }

    /// Issue 13, bug 5: a message to a user the directory does not know
    /// is given up with a final reason, not retried for ever.
    #[test]
    fn no_such_user_gives_up() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut alice = ChatCore::new(
            ChatStore::in_memory().unwrap(),
            ChatConfig::default(),
            Millis(0),
        )
        .unwrap();
        let mut out = Sent::default();
        let id = alice
            .send(
                Millis(1),
                UnixMillis(1),
                &mut rng,
                "nobody",
                "hello?",
                &mut out,
            )
            .unwrap();
        let other = alice
            .send(
                Millis(1),
                UnixMillis(1),
                &mut rng,
                "bob",
                "hi bob",
                &mut out,
            )
            .unwrap();
        while alice.poll_event().is_some() {}
        let env = out.0[0].4;
        alice.on_envelope_outcome(
            Millis(2),
            &env,
            EnvelopeOutcome::Failed("no such user".into()),
        );
        // Once is not enough: a record can be missing for a while.
        alice.no_such_user(Millis(2), "nobody");
        assert!(
            std::iter::from_fn(|| alice.poll_event())
                .all(|e| !matches!(e, ChatEvent::Failed { .. }))
        );
        assert_eq!(alice.outbox_len(), 2);
        alice.no_such_user(Millis(2) + ChatConfig::default().no_such_user_ms, "nobody");
        let mut events = Vec::new();
        while let Some(e) = alice.poll_event() {
            events.push(e);
        }
        assert!(
            events.contains(&ChatEvent::Failed {
                to: "nobody".into(),
                id,
                reason: GiveUp::NoSuchUser
            }),
            "{events:?}"
        );
        // Only bob's message is still waiting, in memory and on disk.
        assert_eq!(alice.outbox_len(), 1);
        assert_eq!(alice.store.outbox().unwrap().len(), 1);
        assert_eq!(alice.store.outbox().unwrap()[0].id, other);
        // Nothing is sent to nobody again.
        let before = out.0.len();
        alice.handle_timeout(Millis(10_000_000), UnixMillis(0), &mut out);
        assert!(out.0[before..].iter().all(|(to, ..)| to != "nobody"));
    }
}
