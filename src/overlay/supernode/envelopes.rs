//! The supernode's part in carrying sealed envelopes (see
//! [`crate::overlay::envelope`]): routing envelopes from its clients,
//! delivering envelopes to its clients, and the offline mailbox it keeps
//! as an owner of users' records.
//!
//! Route of an envelope sent by client C (attached to S) to user U:
//! 1. S looks U up as lookups are done (one hop to U's owners, cached);
//! 2. if U's record says U is attached, S forwards it to U's supernodes
//!    in turn (`EnvForward`); the one U is attached to hands it to U
//!    (`EnvDeliver`) and reports U's acknowledgement (`EnvForwardResult`);
//! 3. otherwise, if the envelope asks for it, S stores it on U's owners
//!    (`EnvStore`); they keep it until it expires (at most 72 h), push it
//!    to U whenever they receive a record saying U is attached (and retry
//!    while it is), hand it to new owners when membership changes, and
//!    delete it once U acknowledged it;
//! 4. S tells C what happened (`EnvResult`).
//!
//! A user may have several devices, each with its own record and key: an
//! envelope is sealed to one device's x25519 key (the sender sends one per
//! device), routed by that device's record, handed only to the client of
//! that device, and kept in the user's mailbox (shares per user and per
//! sender, as for one device) until that device takes it.
//!
//! Mailboxes are bounded per user, per sender within a user's mailbox
//! (`mailbox_per_sender`: one stranger cannot fill anyone's mailbox), and
//! in total; an owner keeps mail only for users whose record it holds (a
//! supernode cannot park envelopes for made-up users), the record's key
//! being the one the envelope is sealed to. Each refusal is counted and
//! logged. Every change to the mailbox is also queued as a
//! [`MailboxChange`] for the driver, which keeps the mailbox in SQLite so
//! that it survives a restart ([`SupernodeCore::restore_mail`] puts it
//! back).

use super::{Origin, SupernodeCore};
use crate::overlay::envelope::{EnvelopeId, Sealed};
use crate::overlay::msg::{EnvResult, Found, Msg};
use crate::overlay::record::{PresenceRecord, Status};
use crate::overlay::user_key;
use crate::time::{Millis, UnixMillis};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc as Rc;

const T_ROUTE: u8 = 0;
const T_FORWARD: u8 = 1;
const T_STORE: u8 = 2;
const T_DELIVER: u8 = 3;

#[derive(Debug)]
enum Phase {
    Lookup,
    Forward {
        targets: Vec<SocketAddr>,
        next: usize,
    },
    Store {
        waiting: usize,
    },
}

#[derive(Debug)]
struct Route {
    bytes: Rc<[u8]>,
    /// The sending client's username, for the owners' per-sender share.
    sender: String,
    to: String,
    recipient: [u8; 32],
    store: bool,
    phase: Phase,
    /// The client is answered by then (node timeline).
    deadline: Millis,
}

#[derive(Debug, Clone)]
enum Purpose {
    Route { client: SocketAddr, id: EnvelopeId },
    Mail { user: String },
}

#[derive(Debug)]
struct Delivery {
    client: SocketAddr,
    asker: SocketAddr,
    /// The asker is answered by then (node timeline).
    deadline: Millis,
}

#[derive(Debug)]
struct Mail {
    id: EnvelopeId,
    /// The device key it is sealed to.
    recipient: [u8; 32],
    /// Who sent it (as the sending supernode vouched; empty: unknown).
    sender: String,
    bytes: Rc<[u8]>,
    /// Its signed expiry (wall clock).
    expires: UnixMillis,
    tries: usize,
    /// Not pushed again before then (node timeline).
    busy_until: Millis,
}

#[derive(Debug)]
struct Mailbox {
    key: u64,
    mails: Vec<Mail>,
    pushed_to: Vec<u64>,
    /// Since when this supernode no longer owns it (node timeline).
    not_owner_since: Option<Millis>,
}

/// Envelope state of a supernode.
#[derive(Debug, Default)]
pub(super) struct EnvState {
    routes: BTreeMap<(SocketAddr, EnvelopeId), Route>,
    /// Forwards awaiting an answer, with their deadlines (node timeline,
    /// as every timer here).
    forwards: BTreeMap<(SocketAddr, EnvelopeId), (Purpose, Millis)>,
    stores: BTreeMap<(SocketAddr, EnvelopeId), ((SocketAddr, EnvelopeId), Millis)>,
    deliveries: BTreeMap<EnvelopeId, Vec<Delivery>>,
    /// Attached clients by username, with each one's device x25519 key.
    by_user: BTreeMap<String, Vec<(SocketAddr, [u8; 32])>>,
    mailbox: BTreeMap<String, Mailbox>,
    mailbox_bytes: usize,
    mailbox_count: usize,
    timers: BinaryHeap<Reverse<(Millis, u8, SocketAddr, EnvelopeId)>>,
    next_mail_at: Option<Millis>,
    /// Mailbox changes not yet taken by the driver (bounded: the driver
    /// drains them after every input).
    changes: Vec<MailboxChange>,
    /// Whether a driver keeps a durable copy (then `changes` is kept).
    journal: bool,
}

/// A change to the offline mailbox, for the driver's durable copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxChange {
    Kept {
        user: String,
        sender: String,
        id: EnvelopeId,
        /// The envelope's signed expiry (wall clock).
        expires: UnixMillis,
        bytes: Rc<[u8]>,
    },
    Gone {
        user: String,
        id: EnvelopeId,
    },
}

/// Envelope counters of a supernode.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnvelopeStats {
    pub received: u64,
    pub invalid: u64,
    pub forwarded: u64,
    pub delivered: u64,
    pub stored: u64,
    pub mailbox_full: u64,
    /// Refused: the sender already has its share of the user's mailbox.
    pub mailbox_sender_share: u64,
    /// Refused: we hold no record of the recipient (or one with another
    /// key), so it is made up or not ours to keep mail for.
    pub mailbox_unknown_recipient: u64,
    pub mailbox_delivered: u64,
    pub expired: u64,
    pub busy: u64,
}

fn reachable(rec: &PresenceRecord, now: UnixMillis) -> bool {
    rec.status != Status::Offline
        && rec.online_until > now.secs().get()
        && !rec.supernodes.is_empty()
}

impl SupernodeCore {
    pub(super) fn env_client_attached(&mut self, addr: SocketAddr, username: &str) {
        let Some(x25519) = self.clients.get(&addr).map(|c| c.x25519) else {
            return;
        };
        let v = self.env.by_user.entry(username.to_owned()).or_default();
        if !v.iter().any(|(a, _)| *a == addr) {
            v.push((addr, x25519));
        }
    }

    pub(super) fn env_client_gone(&mut self, addr: SocketAddr, username: &str) {
        if let Some(v) = self.env.by_user.get_mut(username) {
            v.retain(|(a, _)| *a != addr);
            if v.is_empty() {
                self.env.by_user.remove(username);
            }
        }
    }

    /// Envelopes held for offline users, and their bytes.
    pub fn mailbox_size(&self) -> (usize, usize) {
        (self.env.mailbox_count, self.env.mailbox_bytes)
    }

    /// Whether this supernode keeps envelope `id` for `user`.
    pub fn mailbox_holds(&self, user: &str, id: &EnvelopeId) -> bool {
        self.env
            .mailbox
            .get(user)
            .is_some_and(|m| m.mails.iter().any(|x| x.id == *id))
    }

    pub fn envelope_stats(&self) -> &EnvelopeStats {
        &self.env_stats
    }

    fn timer(&mut self, at: Millis, tag: u8, addr: SocketAddr, id: EnvelopeId) {
        self.env.timers.push(Reverse((at, tag, addr, id)));
    }

    /// A client sends an envelope.
    pub(super) fn env_on_send(&mut self, now: Millis, from: SocketAddr, bytes: &[u8]) {
        if !self.clients.contains_key(&from) {
            self.stats.not_attached += 1;
            return;
        }
        let Ok(s) = Sealed::decode(bytes) else {
            self.stats.malformed += 1;
            self.env_stats.invalid += 1;
            return;
        };
        let id = s.header.id;
        self.env_stats.received += 1;
        if s.header.check_lifetime(self.unix).is_err() {
            self.env_stats.invalid += 1;
            self.send(
                from,
                &Msg::EnvResult {
                    id,
                    result: EnvResult::Invalid,
                },
            );
            return;
        }
        let key = (from, id);
        if self.env.routes.contains_key(&key) {
            // The client asked again through us: the answer is on its way.
            return;
        }
        let in_flight = self
            .env
            .routes
            .range((from, [0; 16])..=(from, [0xff; 16]))
            .count();
        if in_flight >= self.cfg.max_envelopes_in_flight {
            self.env_stats.busy += 1;
            self.send(
                from,
                &Msg::EnvResult {
                    id,
                    result: EnvResult::Busy,
                },
            );
            return;
        }
        let deadline = now + self.cfg.envelope_route_timeout_ms;
        let to = s.header.to.to_owned();
        let sender = self
            .clients
            .get(&from)
            .map(|c| c.username.clone())
            .unwrap_or_default();
        self.env.routes.insert(
            key,
            Route {
                bytes: Rc::from(bytes),
                sender,
                to: to.clone(),
                recipient: s.header.recipient,
                store: s.header.store,
                phase: Phase::Lookup,
                deadline,
            },
        );
        self.timer(deadline, T_ROUTE, from, id);
        self.start_query(now, Origin::Envelope { client: from, id }, &to);
    }

    fn env_finish(&mut self, key: (SocketAddr, EnvelopeId), result: EnvResult) {
        if self.env.routes.remove(&key).is_none() {
            return;
        }
        match result {
            EnvResult::Delivered => self.env_stats.delivered += 1,
            EnvResult::Stored => self.env_stats.stored += 1,
            _ => {}
        }
        self.send(key.0, &Msg::EnvResult { id: key.1, result });
    }

    /// The lookup of a route's recipient answered.
    pub(super) fn env_on_lookup(
        &mut self,
        now: Millis,
        client: SocketAddr,
        id: EnvelopeId,
        found: Found<'_>,
    ) {
        let key = (client, id);
        let Some(route) = self.env.routes.get_mut(&key) else {
            return;
        };
        let recs: Vec<PresenceRecord> = found
            .records()
            .into_iter()
            .filter_map(|b| PresenceRecord::decode(b).ok())
            .collect();
        if recs.is_empty() {
            return self.env_finish(key, EnvResult::NotFound);
        }
        // The record of the device it is sealed to.
        let Some(rec) = recs.into_iter().find(|r| r.cert.x25519 == route.recipient) else {
            return self.env_finish(key, EnvResult::KeyChanged);
        };
        if reachable(&rec, self.unix) {
            route.phase = Phase::Forward {
                targets: rec.supernodes.clone(),
                next: 0,
            };
            self.env_forward_next(now, key);
        } else {
            self.env_store_or_fail(now, key);
        }
    }

    fn env_forward_next(&mut self, now: Millis, key: (SocketAddr, EnvelopeId)) {
        let Some(route) = self.env.routes.get_mut(&key) else {
            return;
        };
        let Phase::Forward { targets, next } = &mut route.phase else {
            return;
        };
        let Some(&target) = targets.get(*next) else {
            return self.env_store_or_fail(now, key);
        };
        *next += 1;
        let bytes = route.bytes.clone();
        self.env_forward(
            now,
            target,
            Purpose::Route {
                client: key.0,
                id: key.1,
            },
            key.1,
            &bytes,
        );
    }

    fn env_forward(
        &mut self,
        now: Millis,
        target: SocketAddr,
        purpose: Purpose,
        id: EnvelopeId,
        bytes: &[u8],
    ) {
        // A record names the supernode by the address its client used.
        let target = if self.cfg.aliases.contains(&target) {
            self.my_addr
        } else {
            target
        };
        let deadline = now + self.cfg.envelope_forward_timeout_ms;
        self.env.forwards.insert((target, id), (purpose, deadline));
        self.timer(deadline, T_FORWARD, target, id);
        self.env_stats.forwarded += 1;
        if target == self.my_addr {
            self.env_on_forward(now, target, bytes);
        } else {
            self.send(target, &Msg::EnvForward { envelope: bytes });
        }
    }

    fn env_reply_forward(
        &mut self,
        now: Millis,
        asker: SocketAddr,
        id: EnvelopeId,
        result: EnvResult,
    ) {
        if asker == self.my_addr {
            self.env_on_forward_result(now, asker, id, result);
        } else {
            self.send(asker, &Msg::EnvForwardResult { id, result });
        }
    }

    /// Another supernode (or we ourselves) asks us to hand an envelope to
    /// one of our clients.
    pub(super) fn env_on_forward(&mut self, now: Millis, asker: SocketAddr, bytes: &[u8]) {
        let Ok(s) = Sealed::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let id = s.header.id;
        if s.header.check_lifetime(self.unix).is_err() {
            return self.env_reply_forward(now, asker, id, EnvResult::Invalid);
        }
        // The clients of the device it is sealed to (one, unless the
        // device attached twice).
        let targets: Vec<SocketAddr> = self
            .env
            .by_user
            .get(s.header.to)
            .into_iter()
            .flatten()
            .filter(|(_, x)| *x == s.header.recipient)
            .map(|(a, _)| *a)
            .collect();
        if targets.is_empty() {
            return self.env_reply_forward(now, asker, id, EnvResult::NotAttached);
        }
        // Answer before the asker gives up on us.
        let deadline = now + self.cfg.envelope_forward_timeout_ms * 2 / 3;
        for client in targets {
            let list = self.env.deliveries.entry(id).or_default();
            if list.len() >= 16 {
                break;
            }
            list.push(Delivery {
                client,
                asker,
                deadline,
            });
            self.timer(deadline, T_DELIVER, client, id);
            self.send(client, &Msg::EnvDeliver { envelope: bytes });
        }
    }

    /// Our client acknowledged (or refused) an envelope we handed it.
    pub(super) fn env_on_ack(&mut self, now: Millis, client: SocketAddr, id: EnvelopeId, ok: bool) {
        let Some(list) = self.env.deliveries.get_mut(&id) else {
            return;
        };
        let mut askers = Vec::new();
        list.retain(|d| {
            if d.client == client {
                askers.push(d.asker);
                false
            } else {
                true
            }
        });
        if list.is_empty() {
            self.env.deliveries.remove(&id);
        }
        // Another device of the user may still answer for the same asker.
        if let Some(list) = self.env.deliveries.get_mut(&id) {
            list.retain(|d| !askers.contains(&d.asker));
            if list.is_empty() {
                self.env.deliveries.remove(&id);
            }
        }
        askers.dedup();
        let result = if ok {
            EnvResult::Delivered
        } else {
            EnvResult::Rejected
        };
        for a in askers {
            self.env_reply_forward(now, a, id, result);
        }
    }

    pub(super) fn env_on_forward_result(
        &mut self,
        now: Millis,
        target: SocketAddr,
        id: EnvelopeId,
        result: EnvResult,
    ) {
        let Some((purpose, _)) = self.env.forwards.remove(&(target, id)) else {
            return;
        };
        match purpose {
            Purpose::Route { client, id } => match result {
                EnvResult::Delivered | EnvResult::Rejected | EnvResult::Invalid => {
                    self.env_finish((client, id), result)
                }
                _ => self.env_forward_next(now, (client, id)),
            },
            Purpose::Mail { user } => {
                if matches!(
                    result,
                    EnvResult::Delivered | EnvResult::Rejected | EnvResult::Invalid
                ) {
                    if result == EnvResult::Delivered {
                        self.env_stats.mailbox_delivered += 1;
                    }
                    self.env_mail_remove(&user, &id);
                }
            }
        }
    }

    fn env_mail_remove(&mut self, user: &str, id: &EnvelopeId) {
        let Some(mb) = self.env.mailbox.get_mut(user) else {
            return;
        };
        let removed = match mb.mails.iter().position(|m| m.id == *id) {
            Some(i) => Some(mb.mails.swap_remove(i)),
            None => None,
        };
        if mb.mails.is_empty() {
            self.env.mailbox.remove(user);
        }
        if let Some(m) = removed {
            self.env.mailbox_bytes -= m.bytes.len();
            self.env.mailbox_count -= 1;
            self.journal(MailboxChange::Gone {
                user: user.to_owned(),
                id: *id,
            });
        }
    }

    fn env_store_or_fail(&mut self, now: Millis, key: (SocketAddr, EnvelopeId)) {
        let Some(route) = self.env.routes.get_mut(&key) else {
            return;
        };
        if !route.store {
            return self.env_finish(key, EnvResult::Offline);
        }
        let bytes = route.bytes.clone();
        let sender = route.sender.clone();
        let key_of_user = user_key(&route.to);
        let owners = self.owners(key_of_user, self.cfg.replicas, now);
        let remote: Vec<(u64, SocketAddr)> = owners
            .iter()
            .copied()
            .filter(|(id, _)| *id != self.me)
            .collect();
        let local = owners.len() != remote.len();
        if let Some(route) = self.env.routes.get_mut(&key) {
            route.phase = Phase::Store {
                waiting: remote.len(),
            };
        }
        let deadline = now + self.cfg.store_timeout_ms;
        for (_, addr) in &remote {
            self.env.stores.insert((*addr, key.1), (key, deadline));
            self.timer(deadline, T_STORE, *addr, key.1);
            self.send(
                *addr,
                &Msg::EnvStore {
                    envelope: &bytes,
                    sender: &sender,
                },
            );
        }
        if local && self.env_on_store(now, &bytes, &sender) {
            return self.env_finish(key, EnvResult::Stored);
        }
        if remote.is_empty() {
            self.env_finish(key, EnvResult::StoreFailed);
        }
    }

    pub(super) fn env_on_store_ack(&mut self, owner: SocketAddr, id: EnvelopeId, ok: bool) {
        let Some((key, _)) = self.env.stores.remove(&(owner, id)) else {
            return;
        };
        self.env_store_answer(key, ok);
    }

    fn env_store_answer(&mut self, key: (SocketAddr, EnvelopeId), ok: bool) {
        let Some(route) = self.env.routes.get_mut(&key) else {
            return;
        };
        let Phase::Store { waiting } = &mut route.phase else {
            return;
        };
        if ok {
            return self.env_finish(key, EnvResult::Stored);
        }
        *waiting = waiting.saturating_sub(1);
        if *waiting == 0 {
            self.env_finish(key, EnvResult::StoreFailed);
        }
    }

    /// Keep an envelope from `sender` for an offline user (we own their
    /// record, or someone thinks we do). Returns whether it is kept.
    pub(super) fn env_on_store(&mut self, now: Millis, bytes: &[u8], sender: &str) -> bool {
        let Ok(s) = Sealed::decode(bytes) else {
            self.stats.malformed += 1;
            return false;
        };
        let h = s.header;
        if !h.store || h.check_lifetime(self.unix).is_err() {
            return false;
        }
        let user = h.to.to_owned();
        if self
            .env
            .mailbox
            .get(&user)
            .is_some_and(|m| m.mails.iter().any(|x| x.id == h.id))
        {
            return true;
        }
        let known = self.device_record(&user, &h.recipient).is_some();
        if !known {
            self.env_stats.mailbox_unknown_recipient += 1;
            if crate::limits::log_worthy(self.env_stats.mailbox_unknown_recipient) {
                tracing::info!(
                    to = %user,
                    refused = self.env_stats.mailbox_unknown_recipient,
                    "mailbox: refused mail for a recipient we hold no record of"
                );
            }
            return false;
        }
        let mb = self.env.mailbox.get(&user);
        let per_user = mb.map_or(0, |m| m.mails.len());
        let per_sender = mb.map_or(0, |m| m.mails.iter().filter(|x| x.sender == sender).count());
        if per_sender >= self.cfg.mailbox_per_sender {
            self.env_stats.mailbox_sender_share += 1;
            if crate::limits::log_worthy(self.env_stats.mailbox_sender_share) {
                tracing::info!(
                    to = %user,
                    from = sender,
                    refused = self.env_stats.mailbox_sender_share,
                    "mailbox: sender over its share of the recipient's mailbox"
                );
            }
            return false;
        }
        if per_user >= self.cfg.mailbox_per_user
            || self.env.mailbox_bytes + bytes.len() > self.cfg.mailbox_max_bytes
        {
            self.env_stats.mailbox_full += 1;
            if crate::limits::log_worthy(self.env_stats.mailbox_full) {
                tracing::info!(
                    to = %user,
                    refused = self.env_stats.mailbox_full,
                    "mailbox full: refused"
                );
            }
            return false;
        }
        self.env_keep(
            now,
            user.clone(),
            sender,
            (h.id, h.recipient),
            UnixMillis(h.expires_ms),
            Rc::from(bytes),
        );
        // The user may have come back meanwhile.
        self.env_mail_deliver(now, &user);
        true
    }

    fn env_keep(
        &mut self,
        now: Millis,
        user: String,
        sender: &str,
        (id, recipient): (EnvelopeId, [u8; 32]),
        expires: UnixMillis,
        bytes: Rc<[u8]>,
    ) {
        let key = user_key(&user);
        let mb = self.env.mailbox.entry(user.clone()).or_insert(Mailbox {
            key,
            mails: Vec::new(),
            pushed_to: Vec::new(),
            not_owner_since: None,
        });
        mb.mails.push(Mail {
            id,
            recipient,
            sender: sender.to_owned(),
            bytes: bytes.clone(),
            expires,
            tries: 0,
            busy_until: Millis::ZERO,
        });
        self.env.mailbox_bytes += bytes.len();
        self.env.mailbox_count += 1;
        if self.env.next_mail_at.is_none() {
            self.env.next_mail_at = Some(now + self.cfg.mailbox_retry_ms);
        }
        self.journal(MailboxChange::Kept {
            user,
            sender: sender.to_owned(),
            id,
            expires,
            bytes,
        });
    }

    /// Put back mail kept before a restart (from the driver's durable
    /// copy): no checks but expiry and the bounds, since we kept it once.
    pub fn restore_mail(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        user: &str,
        sender: &str,
        bytes: &[u8],
    ) -> bool {
        self.unix = unix;
        let Ok(s) = Sealed::decode(bytes) else {
            return false;
        };
        let h = s.header;
        if UnixMillis(h.expires_ms) <= self.unix
            || self.mailbox_holds(user, &h.id)
            || self.env.mailbox_bytes + bytes.len() > self.cfg.mailbox_max_bytes
        {
            return false;
        }
        self.env_keep(
            now,
            user.to_owned(),
            sender,
            (h.id, h.recipient),
            UnixMillis(h.expires_ms),
            Rc::from(bytes),
        );
        // Already in the durable copy.
        if self.env.journal {
            self.env.changes.pop();
        }
        true
    }

    /// Queue mailbox changes for [`SupernodeCore::drain_mailbox_changes`]
    /// from now on (a driver with a durable copy calls this once).
    pub fn journal_mailbox(&mut self) {
        self.env.journal = true;
    }

    fn journal(&mut self, c: MailboxChange) {
        if self.env.journal {
            self.env.changes.push(c);
        }
    }

    /// Mailbox changes since the last call, for the durable copy.
    pub fn drain_mailbox_changes(&mut self) -> Vec<MailboxChange> {
        std::mem::take(&mut self.env.changes)
    }

    /// We stored a new record for `user`: push waiting envelopes if it
    /// says they are attached.
    pub(super) fn env_record_stored(&mut self, now: Millis, user: &str) {
        if self.env.mailbox.contains_key(user) {
            for m in self
                .env
                .mailbox
                .get_mut(user)
                .into_iter()
                .flat_map(|mb| mb.mails.iter_mut())
            {
                // A new record: the user just (re)attached, try at once.
                m.busy_until = Millis::ZERO;
            }
            self.env_mail_deliver(now, user);
        }
    }

    /// The held record of `user`'s device with x25519 key `x25519`.
    fn device_record(&self, user: &str, x25519: &[u8; 32]) -> Option<PresenceRecord> {
        self.records
            .range(crate::overlay::record::user_range(user))
            .filter_map(|(_, held)| PresenceRecord::decode(&held.bytes).ok())
            .find(|r| r.cert.x25519 == *x25519)
    }

    /// Push `user`'s waiting envelopes to those of their devices that are
    /// attached (each envelope to the device it is sealed to).
    fn env_mail_deliver(&mut self, now: Millis, user: &str) {
        let reachable: Vec<PresenceRecord> = self
            .records
            .range(crate::overlay::record::user_range(user))
            .filter_map(|(_, held)| PresenceRecord::decode(&held.bytes).ok())
            .filter(|r| reachable(r, self.unix))
            .collect();
        if reachable.is_empty() {
            return;
        }
        let Some(mb) = self.env.mailbox.get_mut(user) else {
            return;
        };
        let mut sends = Vec::new();
        for m in mb.mails.iter_mut() {
            if m.busy_until > now || m.expires <= self.unix {
                continue;
            }
            let Some(rec) = reachable.iter().find(|r| r.cert.x25519 == m.recipient) else {
                continue;
            };
            let target = rec.supernodes[m.tries % rec.supernodes.len()];
            m.tries += 1;
            m.busy_until = now + self.cfg.envelope_forward_timeout_ms;
            sends.push((target, m.id, m.bytes.clone()));
        }
        for (target, id, bytes) in sends {
            self.env_forward(
                now,
                target,
                Purpose::Mail {
                    user: user.to_owned(),
                },
                id,
                &bytes,
            );
        }
    }

    /// Membership changed: hand mailboxes to owners that lack them.
    pub(super) fn env_rebalance(&mut self, now: Millis) {
        let users: Vec<String> = self.env.mailbox.keys().cloned().collect();
        for user in users {
            let Some(mb) = self.env.mailbox.get(&user) else {
                continue;
            };
            let owners = self.owners(mb.key, self.cfg.replicas, now);
            let ids: Vec<u64> = owners.iter().map(|(id, _)| *id).collect();
            let targets: Vec<SocketAddr> = owners
                .iter()
                .filter(|(id, _)| *id != self.me && !mb.pushed_to.contains(id))
                .map(|(_, a)| *a)
                .collect();
            let all: Vec<(Rc<[u8]>, String)> = mb
                .mails
                .iter()
                .map(|m| (m.bytes.clone(), m.sender.clone()))
                .collect();
            for t in targets {
                for (b, sender) in &all {
                    self.send(
                        t,
                        &Msg::EnvStore {
                            envelope: b,
                            sender,
                        },
                    );
                }
            }
            let mine = ids.contains(&self.me);
            if let Some(mb) = self.env.mailbox.get_mut(&user) {
                mb.pushed_to = ids;
                mb.not_owner_since = if mine {
                    None
                } else {
                    mb.not_owner_since.or(Some(now))
                };
            }
        }
    }

    pub(super) fn env_timeout(&mut self, now: Millis) {
        while let Some(Reverse((at, tag, addr, id))) = self.env.timers.peek().copied() {
            if at > now {
                break;
            }
            self.env.timers.pop();
            match tag {
                T_ROUTE => {
                    let key = (addr, id);
                    if let Some(r) = self.env.routes.get(&key)
                        && r.deadline == at
                    {
                        let result = if r.store {
                            EnvResult::StoreFailed
                        } else {
                            EnvResult::Offline
                        };
                        self.env_finish(key, result);
                    }
                }
                T_FORWARD => {
                    if self
                        .env
                        .forwards
                        .get(&(addr, id))
                        .is_some_and(|(_, d)| *d == at)
                    {
                        self.env_on_forward_result(now, addr, id, EnvResult::NotAttached);
                    }
                }
                T_STORE => {
                    if let Some((key, d)) = self.env.stores.get(&(addr, id))
                        && *d == at
                    {
                        let key = *key;
                        self.env.stores.remove(&(addr, id));
                        self.env_store_answer(key, false);
                    }
                }
                _ => {
                    let mut askers = Vec::new();
                    if let Some(list) = self.env.deliveries.get_mut(&id) {
                        list.retain(|d| {
                            if d.client == addr && d.deadline == at {
                                askers.push(d.asker);
                                false
                            } else {
                                true
                            }
                        });
                        if list.is_empty() {
                            self.env.deliveries.remove(&id);
                        }
                    }
                    for a in askers {
                        self.env_reply_forward(now, a, id, EnvResult::NotAttached);
                    }
                }
            }
        }
        if let Some(at) = self.env.next_mail_at
            && at <= now
        {
            self.env.next_mail_at = if self.env.mailbox.is_empty() {
                None
            } else {
                Some(now + self.cfg.mailbox_retry_ms)
            };
            let users: Vec<String> = self.env.mailbox.keys().cloned().collect();
            for u in users {
                self.env_mail_deliver(now, &u);
            }
        }
    }

    pub(super) fn env_poll_timeout(&self) -> Millis {
        let t = self
            .env
            .timers
            .peek()
            .map_or(Millis::MAX, |Reverse((at, ..))| *at);
        t.min(self.env.next_mail_at.unwrap_or(Millis::MAX))
    }

    pub(super) fn env_sweep(&mut self, now: Millis) {
        let mut freed = 0;
        let mut dropped = 0;
        let mut expired = 0;
        let mut changes = Vec::new();
        self.env.mailbox.retain(|user, mb| {
            if mb.not_owner_since.is_some_and(|t| now.since(t) >= 120_000) {
                dropped += mb.mails.len();
                freed += mb.mails.iter().map(|m| m.bytes.len()).sum::<usize>();
                changes.extend(mb.mails.iter().map(|m| MailboxChange::Gone {
                    user: user.clone(),
                    id: m.id,
                }));
                return false;
            }
            mb.mails.retain(|m| {
                if m.expires <= self.unix {
                    expired += 1;
                    freed += m.bytes.len();
                    changes.push(MailboxChange::Gone {
                        user: user.clone(),
                        id: m.id,
                    });
                    false
                } else {
                    true
                }
            });
            !mb.mails.is_empty()
        });
        if self.env.journal {
            self.env.changes.extend(changes);
        }
        self.env.mailbox_bytes -= freed;
        self.env.mailbox_count -= dropped + expired;
        self.env_stats.expired += expired as u64;
    }
}
