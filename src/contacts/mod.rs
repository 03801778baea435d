//! Contacts as Skype had them: adding someone sends an authorization
//! request they accept or decline; either side can remove the other, and
//! a user can block anyone (their messages, requests and presence are
//! dropped, and they no longer see ours). Our status: online, away (set
//! automatically after [`ContactsConfig::away_after_ms`] without activity
//! and cleared by the next one), do not disturb, invisible, plus a status
//! message.
//!
//! # Who sees presence
//!
//! The directory has to say where a user is attached, or nobody could
//! reach them; everything else is for authorized contacts only. So the
//! presence record a client publishes carries status `invisible` and no
//! message (unless [`ContactsConfig::public_presence`] is set): lookups by
//! strangers say "offline". The real status and message travel in sealed
//! envelopes (kind `PRESENCE`) to authorized contacts only: at login
//! (asking for theirs back), on every change, and in answer to a contact
//! who logs in. Invisible is sent as offline. A contact's liveness comes
//! from their directory record, which we watch: a contact whose record
//! says offline, or lapses without a refresh (a crash), is shown offline.
//! What remains visible to a determined stranger is that a device is
//! attached (the record names its supernodes), never the status.
//!
//! # Wire
//!
//! `CONTACT`: `op u8 (1 request, 2 accept, 3 decline, 4 remove) | text
//! str8`; `PRESENCE`: `status u8 | message str8 | want_reply u8`. Contact
//! operations are stored for offline users and retried (in memory) when
//! the overlay fails them; presence is not stored (it is asked for at
//! login).
//!
//! # Several devices
//!
//! The list follows the account: every change made on one device (add,
//! accept, decline, remove, block, unblock) goes to our own username as a
//! `CONTACT_SYNC` envelope, `user str8 | state u8 | blocked u8 | greeting
//! str8`, which the overlay seals to our other devices only and stores for
//! those away. A device takes the row as it is sent, only from a device
//! of our own account, and tells nobody else (the contact already heard
//! from the device where the change was made). Requests and answers from
//! others reach every device by themselves.
//!
//! [`ContactsCore`] is sans-IO for network and time; the list is the
//! SQLite [`ContactStore`].

mod store;

pub use store::{ContactStore, Row};

use crate::identity::Certificate;
use crate::overlay::envelope::{EnvelopeOutcome, EnvelopeSink, kind};
use crate::overlay::{EnvelopeId, PresenceRecord, Status};
use crate::sqlite::SqliteError;
use crate::time::{Millis, UnixSecs, earliest};
use crate::wire::{Reader, WireError, Writer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ContactsError {
    #[error(transparent)]
    Store(#[from] SqliteError),
    #[error("{0} has not asked to be your contact")]
    NoRequest(String),
    #[error("{0} is blocked: unblock them first")]
    Blocked(String),
    #[error("{0} is already a contact")]
    AlreadyContact(String),
    #[error("you cannot add yourself")]
    Yourself,
    #[error("{0} is not in your contact list")]
    Unknown(String),
    #[error("invalid username {0:?}")]
    BadName(String),
}

impl ContactsError {
    fn store(path: &std::path::Path, source: rusqlite::Error) -> Self {
        ContactsError::Store(store::SCHEMA.error(path, source))
    }
}

/// Where a contact is in the authorization handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContactState {
    /// No relation (a row kept only because the user is blocked).
    None,
    /// We asked; waiting for their answer.
    Requested,
    /// They asked; waiting for ours.
    Pending,
    /// Both agreed: presence flows both ways.
    Authorized,
    /// They declined our request.
    Declined,
}

impl ContactState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactState::None => "none",
            ContactState::Requested => "requested",
            ContactState::Pending => "pending",
            ContactState::Authorized => "authorized",
            ContactState::Declined => "declined",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            ContactState::None => 0,
            ContactState::Requested => 1,
            ContactState::Pending => 2,
            ContactState::Authorized => 3,
            ContactState::Declined => 4,
        }
    }

    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            0 => ContactState::None,
            1 => ContactState::Requested,
            2 => ContactState::Pending,
            3 => ContactState::Authorized,
            4 => ContactState::Declined,
            got => {
                return Err(WireError::UnknownType {
                    what: "contact state",
                    got,
                });
            }
        })
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => ContactState::None,
            "requested" => ContactState::Requested,
            "pending" => ContactState::Pending,
            "authorized" => ContactState::Authorized,
            "declined" => ContactState::Declined,
            _ => return None,
        })
    }
}

/// A 0/1 byte.
fn flag(v: u8, field: &'static str) -> Result<bool, WireError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::Invalid { field }),
    }
}

/// Contact operations on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request,
    Accept,
    Decline,
    Remove,
}

impl Op {
    fn to_u8(self) -> u8 {
        match self {
            Op::Request => 1,
            Op::Accept => 2,
            Op::Decline => 3,
            Op::Remove => 4,
        }
    }

    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => Op::Request,
            2 => Op::Accept,
            3 => Op::Decline,
            4 => Op::Remove,
            got => {
                return Err(WireError::UnknownType {
                    what: "contact operation",
                    got,
                });
            }
        })
    }
}

/// Contacts payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactPayload<'a> {
    Contact {
        op: Op,
        text: &'a str,
    },
    Presence {
        status: Status,
        message: &'a str,
        want_reply: bool,
    },
    /// A row as one of our own devices now has it.
    Sync {
        user: &'a str,
        state: ContactState,
        blocked: bool,
        greeting: &'a str,
    },
}

impl<'a> ContactPayload<'a> {
    pub fn kind(&self) -> u8 {
        match self {
            ContactPayload::Contact { .. } => kind::CONTACT,
            ContactPayload::Presence { .. } => kind::PRESENCE,
            ContactPayload::Sync { .. } => kind::CONTACT_SYNC,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            ContactPayload::Contact { op, text } => {
                w.u8(op.to_u8()).bytes8(text.as_bytes());
            }
            ContactPayload::Presence {
                status,
                message,
                want_reply,
            } => {
                w.u8(status.to_u8())
                    .bytes8(message.as_bytes())
                    .u8(*want_reply as u8);
            }
            ContactPayload::Sync {
                user,
                state,
                blocked,
                greeting,
            } => {
                w.bytes8(user.as_bytes())
                    .u8(state.to_u8())
                    .u8(*blocked as u8)
                    .bytes8(greeting.as_bytes());
            }
        }
        w.into_vec()
    }

    /// Decode a payload of envelope kind `k`; borrows, never panics.
    pub fn decode(k: u8, b: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let p = match k {
            kind::CONTACT => ContactPayload::Contact {
                op: Op::from_u8(r.u8()?)?,
                text: r.str8("greeting")?,
            },
            kind::PRESENCE => ContactPayload::Presence {
                status: Status::from_u8(r.u8()?)?,
                message: r.str8("status message")?,
                want_reply: flag(r.u8()?, "reply flag")?,
            },
            kind::CONTACT_SYNC => ContactPayload::Sync {
                user: r.str8("contact")?,
                state: ContactState::from_u8(r.u8()?)?,
                blocked: flag(r.u8()?, "blocked flag")?,
                greeting: r.str8("greeting")?,
            },
            got => {
                return Err(WireError::UnknownType {
                    what: "contacts payload",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(p)
    }
}

#[derive(Debug, Clone)]
pub struct ContactsConfig {
    /// Go away after this long without activity (0: never).
    pub away_after_ms: u64,
    /// Publish the real status in the directory record, for everyone.
    pub public_presence: bool,
    /// A contact's presence without a refresh from their record or from
    /// them lapses after this long.
    pub presence_ttl_ms: u64,
    pub retry_base_ms: u64,
    pub max_retries: u32,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        ContactsConfig {
            away_after_ms: 300_000,
            public_presence: false,
            presence_ttl_ms: 330_000,
            retry_base_ms: 5_000,
            max_retries: 6,
        }
    }
}

/// A contact as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactInfo {
    pub username: String,
    pub state: ContactState,
    pub blocked: bool,
    /// Their greeting, for pending requests.
    pub greeting: String,
    /// What they show us (authorized contacts only; otherwise offline).
    pub status: Status,
    pub message: String,
}

/// What the contacts core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactsEvent {
    /// Someone asks to be our contact.
    Request {
        from: String,
        greeting: String,
    },
    /// Our request went out.
    RequestSent {
        to: String,
    },
    /// Authorized both ways.
    Added {
        user: String,
    },
    /// They declined our request (or we declined theirs: `by_us`).
    Declined {
        user: String,
        by_us: bool,
    },
    /// No longer a contact (`by_them`: they removed us).
    Removed {
        user: String,
        by_them: bool,
    },
    Blocked {
        user: String,
    },
    Unblocked {
        user: String,
    },
    /// An authorized contact's shown status changed.
    Presence {
        user: String,
        status: Status,
        message: String,
    },
    /// Our own status changed (`auto`: set or cleared by idleness).
    StatusChanged {
        status: Status,
        message: String,
        auto: bool,
    },
    /// A contact operation could not be delivered after its retries.
    Failed {
        user: String,
        error: String,
    },
    /// The contact list could not be written.
    StoreFailed {
        error: String,
    },
}

#[derive(Debug, Default, Clone)]
struct Live {
    /// Their last presence envelope.
    status: Option<(Status, String)>,
    /// Attached (from their record or a presence envelope) until then, on
    /// the `now` timeline.
    attached_until: Millis,
    /// What we last reported.
    shown: Option<(Status, String)>,
    /// Each of their devices' last presence envelope (by device ed25519
    /// key): status, message and until when it holds. They show as their
    /// most available device.
    devices: BTreeMap<[u8; 32], (Status, String, Millis)>,
}

/// How available a status shows a contact, best first.
fn rank(s: Status) -> u8 {
    match s {
        Status::Online => 0,
        Status::Away => 1,
        Status::DoNotDisturb => 2,
        Status::Invisible | Status::Offline => 3,
    }
}

#[derive(Debug, Clone)]
struct PendingOp {
    to: String,
    op: Op,
    text: String,
    tries: u32,
}

#[derive(Debug)]
pub struct ContactsCore {
    store: ContactStore,
    me: String,
    cfg: ContactsConfig,
    rows: BTreeMap<String, Row>,
    live: BTreeMap<String, Live>,
    status: Status,
    message: String,
    auto_away: bool,
    last_activity: Millis,
    online: bool,
    ops: BTreeMap<EnvelopeId, PendingOp>,
    retries: Vec<(Millis, PendingOp)>,
    watch_requests: BTreeSet<String>,
    events: VecDeque<ContactsEvent>,
}

fn valid_name(u: &str) -> bool {
    crate::identity::Username::parse(u).is_ok_and(|n| n.as_str() == u)
}

impl ContactsCore {
    pub fn new(
        store: ContactStore,
        me: &str,
        cfg: ContactsConfig,
        now: Millis,
    ) -> Result<Self, ContactsError> {
        let rows: BTreeMap<String, Row> = store
            .load()?
            .into_iter()
            .map(|r| (r.username.clone(), r))
            .collect();
        let watch_requests = rows
            .values()
            .filter(|r| r.state == ContactState::Authorized && !r.blocked)
            .map(|r| r.username.clone())
            .collect();
        Ok(ContactsCore {
            store,
            me: me.to_ascii_lowercase(),
            cfg,
            rows,
            live: BTreeMap::new(),
            status: Status::Online,
            message: String::new(),
            auto_away: false,
            last_activity: now,
            online: false,
            ops: BTreeMap::new(),
            retries: Vec::new(),
            watch_requests,
            events: VecDeque::new(),
        })
    }

    pub fn is_blocked(&self, user: &str) -> bool {
        self.rows
            .get(&user.to_ascii_lowercase())
            .is_some_and(|r| r.blocked)
    }

    /// Whether `user` (lowercase) is an authorized, unblocked contact.
    /// Whether `user` has shown they exist: they asked us, agreed, or
    /// declined (not merely a name we asked).
    pub fn answered(&self, user: &str) -> bool {
        self.rows.get(&user.to_ascii_lowercase()).is_some_and(|r| {
            matches!(
                r.state,
                ContactState::Pending | ContactState::Authorized | ContactState::Declined
            )
        })
    }

    pub fn is_authorized(&self, user: &str) -> bool {
        self.rows
            .get(user)
            .is_some_and(|r| r.state == ContactState::Authorized && !r.blocked)
    }

    /// Our own status and message.
    pub fn status(&self) -> (Status, &str) {
        (self.status, &self.message)
    }

    /// What the directory record should say (see the module doc).
    pub fn public_status(&self) -> (Status, String) {
        if self.cfg.public_presence {
            (self.status, self.message.clone())
        } else {
            (Status::Invisible, String::new())
        }
    }

    /// Users whose directory record the node should watch (authorized
    /// contacts added since the last call).
    pub fn take_watch_requests(&mut self) -> Vec<String> {
        std::mem::take(&mut self.watch_requests)
            .into_iter()
            .collect()
    }

    /// The contact list.
    pub fn list(&self) -> Vec<ContactInfo> {
        self.rows
            .values()
            .map(|r| {
                let (status, message) = self
                    .live
                    .get(&r.username)
                    .and_then(|l| l.shown.clone())
                    .filter(|_| r.state == ContactState::Authorized && !r.blocked)
                    .unwrap_or((Status::Offline, String::new()));
                ContactInfo {
                    username: r.username.clone(),
                    state: r.state,
                    blocked: r.blocked,
                    greeting: r.greeting.clone(),
                    status,
                    message,
                }
            })
            .collect()
    }

    pub fn poll_event(&mut self) -> Option<ContactsEvent> {
        self.events.pop_front()
    }

    fn row(&self, user: &str, now: Millis) -> Row {
        self.rows.get(user).cloned().unwrap_or(Row {
            username: user.to_owned(),
            state: ContactState::None,
            blocked: false,
            greeting: String::new(),
            updated_at_ms: now.get(),
        })
    }

    fn save(&mut self, mut row: Row, now: Millis) -> bool {
        row.updated_at_ms = now.get();
        if let Err(e) = self.store.save(&row) {
            self.events.push_back(ContactsEvent::StoreFailed {
                error: e.to_string(),
            });
            return false;
        }
        if row.state == ContactState::None && !row.blocked {
            self.rows.remove(&row.username);
        } else {
            self.rows.insert(row.username.clone(), row);
        }
        true
    }

    fn send_op(&mut self, to: &str, op: Op, text: &str, tries: u32, sink: &mut dyn EnvelopeSink) {
        let p = ContactPayload::Contact { op, text }.encode();
        let id = sink.send_envelope(to, kind::CONTACT, &p, true);
        self.ops.insert(
            id,
            PendingOp {
                to: to.to_owned(),
                op,
                text: text.to_owned(),
                tries,
            },
        );
    }

    /// Tell our other devices how `user`'s row is now (see the module
    /// doc); the overlay seals it to them only, and stores it for those
    /// away.
    fn sync_own(&self, user: &str, sink: &mut dyn EnvelopeSink) {
        let (state, blocked, greeting) = match self.rows.get(user) {
            Some(r) => (r.state, r.blocked, r.greeting.as_str()),
            None => (ContactState::None, false, ""),
        };
        let p = ContactPayload::Sync {
            user,
            state,
            blocked,
            greeting,
        }
        .encode();
        let me = self.me.clone();
        sink.send_envelope(&me, kind::CONTACT_SYNC, &p, true);
    }

    /// A row from another of our devices: taken as it is, with the events
    /// its change means here. Nothing goes to the contact.
    fn on_sync(
        &mut self,
        now: Millis,
        user: &str,
        state: ContactState,
        blocked: bool,
        greeting: &str,
        sink: &mut dyn EnvelopeSink,
    ) {
        if !valid_name(user) || user == self.me {
            return;
        }
        let old = self.row(user, now);
        if old.state == state && old.blocked == blocked {
            return;
        }
        let mut row = old.clone();
        row.state = state;
        row.blocked = blocked;
        row.greeting = greeting.to_owned();
        if !self.save(row, now) {
            return;
        }
        let user = user.to_owned();
        if blocked != old.blocked {
            self.live.remove(&user);
            self.events.push_back(if blocked {
                ContactsEvent::Blocked { user: user.clone() }
            } else {
                ContactsEvent::Unblocked { user: user.clone() }
            });
        }
        if state == old.state {
            if !blocked && state == ContactState::Authorized {
                self.watch_requests.insert(user);
            }
            return;
        }
        match state {
            ContactState::Authorized => {
                self.events
                    .push_back(ContactsEvent::Added { user: user.clone() });
                self.watch_requests.insert(user.clone());
                if self.online && !blocked {
                    self.send_presence(&user, true, sink);
                }
            }
            ContactState::Requested => self
                .events
                .push_back(ContactsEvent::RequestSent { to: user }),
            ContactState::None if old.state == ContactState::Pending => self
                .events
                .push_back(ContactsEvent::Declined { user, by_us: true }),
            ContactState::None => {
                self.live.remove(&user);
                self.events.push_back(ContactsEvent::Removed {
                    user,
                    by_them: false,
                });
            }
            ContactState::Declined => self
                .events
                .push_back(ContactsEvent::Declined { user, by_us: false }),
            ContactState::Pending => self.events.push_back(ContactsEvent::Request {
                from: user,
                greeting: greeting.to_owned(),
            }),
        }
    }

    /// What we show contacts.
    fn shown_self(&self) -> (Status, String) {
        match self.status {
            Status::Invisible | Status::Offline => (Status::Offline, String::new()),
            s => (s, self.message.clone()),
        }
    }

    fn send_presence(&self, to: &str, want_reply: bool, sink: &mut dyn EnvelopeSink) {
        let (status, message) = self.shown_self();
        let p = ContactPayload::Presence {
            status,
            message: &message,
            want_reply,
        }
        .encode();
        sink.send_envelope(to, kind::PRESENCE, &p, false);
    }

    fn broadcast(&self, want_reply: bool, sink: &mut dyn EnvelopeSink) {
        if !self.online {
            return;
        }
        for r in self.rows.values() {
            if r.state == ContactState::Authorized && !r.blocked {
                self.send_presence(&r.username, want_reply, sink);
            }
        }
    }

    fn authorize(&mut self, user: &str, now: Millis, sink: &mut dyn EnvelopeSink) {
        let mut row = self.row(user, now);
        row.state = ContactState::Authorized;
        row.greeting.clear();
        if self.save(row, now) {
            self.events.push_back(ContactsEvent::Added {
                user: user.to_owned(),
            });
            self.watch_requests.insert(user.to_owned());
            if self.online {
                self.send_presence(user, true, sink);
            }
        }
    }

    fn norm(&self, user: &str) -> Result<String, ContactsError> {
        let u = user.to_ascii_lowercase();
        if !valid_name(&u) {
            return Err(ContactsError::BadName(user.to_owned()));
        }
        if u == self.me {
            return Err(ContactsError::Yourself);
        }
        Ok(u)
    }

    /// Ask `user` to become a contact.
    pub fn add(
        &mut self,
        now: Millis,
        user: &str,
        greeting: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), ContactsError> {
        let u = self.norm(user)?;
        let row = self.row(&u, now);
        if row.blocked {
            return Err(ContactsError::Blocked(u));
        }
        match row.state {
            ContactState::Authorized => return Err(ContactsError::AlreadyContact(u)),
            // They asked first: adding them is accepting.
            ContactState::Pending => return self.accept(now, &u, sink),
            _ => {}
        }
        let mut greeting = greeting.to_owned();
        while greeting.len() > 255 {
            greeting.pop();
        }
        let mut row = row;
        row.state = ContactState::Requested;
        if self.save(row, now) {
            self.send_op(&u, Op::Request, &greeting, 0, sink);
            self.sync_own(&u, sink);
            self.events.push_back(ContactsEvent::RequestSent { to: u });
        }
        Ok(())
    }

    pub fn accept(
        &mut self,
        now: Millis,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), ContactsError> {
        let u = self.norm(user)?;
        let row = self.row(&u, now);
        if row.blocked {
            return Err(ContactsError::Blocked(u));
        }
        if row.state != ContactState::Pending {
            return Err(ContactsError::NoRequest(u));
        }
        self.send_op(&u, Op::Accept, "", 0, sink);
        self.authorize(&u, now, sink);
        self.sync_own(&u, sink);
        Ok(())
    }

    pub fn decline(
        &mut self,
        now: Millis,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), ContactsError> {
        let u = self.norm(user)?;
        let mut row = self.row(&u, now);
        if row.state != ContactState::Pending {
            return Err(ContactsError::NoRequest(u));
        }
        row.state = ContactState::None;
        row.greeting.clear();
        if self.save(row, now) {
            self.send_op(&u, Op::Decline, "", 0, sink);
            self.sync_own(&u, sink);
            self.events.push_back(ContactsEvent::Declined {
                user: u,
                by_us: true,
            });
        }
        Ok(())
    }

    pub fn remove(
        &mut self,
        now: Millis,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), ContactsError> {
        let u = self.norm(user)?;
        let mut row = self.row(&u, now);
        if row.state == ContactState::None {
            return Err(ContactsError::Unknown(u));
        }
        let was_authorized = row.state == ContactState::Authorized;
        row.state = ContactState::None;
        row.greeting.clear();
        if self.save(row, now) {
            if was_authorized && self.online {
                // Leave them with "offline", not our last status.
                let p = ContactPayload::Presence {
                    status: Status::Offline,
                    message: "",
                    want_reply: false,
                }
                .encode();
                sink.send_envelope(&u, kind::PRESENCE, &p, false);
            }
            self.send_op(&u, Op::Remove, "", 0, sink);
            self.sync_own(&u, sink);
            self.live.remove(&u);
            self.events.push_back(ContactsEvent::Removed {
                user: u,
                by_them: false,
            });
        }
        Ok(())
    }

    /// Block `user`: nothing from them is taken any more, and they no
    /// longer get our presence. They are not told.
    pub fn block(
        &mut self,
        now: Millis,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), ContactsError> {
        let u = self.norm(user)?;
        let mut row = self.row(&u, now);
        if row.state == ContactState::Authorized && self.online {
            let p = ContactPayload::Presence {
                status: Status::Offline,
                message: "",
                want_reply: false,
            }
            .encode();
            sink.send_envelope(&u, kind::PRESENCE, &p, false);
        }
        row.blocked = true;
        if row.state == ContactState::Pending {
            row.state = ContactState::None;
        }
        if self.save(row, now) {
            self.sync_own(&u, sink);
            self.live.remove(&u);
            self.events.push_back(ContactsEvent::Blocked { user: u });
        }
        Ok(())
    }

    pub fn unblock(
        &mut self,
        now: Millis,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), ContactsError> {
        let u = self.norm(user)?;
        let mut row = self.row(&u, now);
        if !row.blocked {
            return Err(ContactsError::Unknown(u));
        }
        row.blocked = false;
        if self.save(row, now) {
            self.sync_own(&u, sink);
            if self.is_authorized(&u) {
                self.watch_requests.insert(u.clone());
            }
            self.events.push_back(ContactsEvent::Unblocked { user: u });
        }
        Ok(())
    }

    /// Set our status (and message); contacts are told.
    pub fn set_status(&mut self, status: Status, message: &str, sink: &mut dyn EnvelopeSink) {
        let mut message = message.to_owned();
        while message.len() > 255 {
            message.pop();
        }
        self.status = status;
        self.message = message;
        self.auto_away = false;
        self.events.push_back(ContactsEvent::StatusChanged {
            status,
            message: self.message.clone(),
            auto: false,
        });
        self.broadcast(false, sink);
    }

    /// The user did something (a key press, a command): resets idleness
    /// and ends an automatic away.
    pub fn activity(&mut self, now: Millis, sink: &mut dyn EnvelopeSink) {
        self.last_activity = now;
        if self.auto_away {
            self.auto_away = false;
            self.status = Status::Online;
            self.events.push_back(ContactsEvent::StatusChanged {
                status: Status::Online,
                message: self.message.clone(),
                auto: true,
            });
            self.broadcast(false, sink);
        }
    }

    /// We are attached and published: tell contacts and ask for theirs.
    pub fn on_online(&mut self, sink: &mut dyn EnvelopeSink) {
        if self.online {
            return;
        }
        self.online = true;
        self.broadcast(true, sink);
    }

    /// Going away: contacts see us offline.
    pub fn shutdown(&mut self, sink: &mut dyn EnvelopeSink) {
        let status = self.status;
        self.status = Status::Offline;
        self.broadcast(false, sink);
        self.status = status;
        self.online = false;
    }

    /// A watched user's directory record changed, seen at `now` (its
    /// lifetime is judged at `unix`, the wall clock).
    pub fn on_record(&mut self, now: Millis, unix: UnixSecs, rec: &PresenceRecord) {
        let user = rec.username().to_ascii_lowercase();
        if !self.is_authorized(&user) {
            return;
        }
        let left = rec.online_until.saturating_sub(unix.get());
        let attached = rec.status != Status::Offline && left > 0;
        let l = self.live.entry(user.clone()).or_default();
        // The record's wall-clock end, moved onto our timeline.
        l.attached_until = if attached {
            now + left.saturating_mul(1000)
        } else {
            Millis::ZERO
        };
        if !attached {
            l.status = None;
        }
        self.refresh(now, &user);
    }

    /// Report `user`'s shown status when it changed.
    fn refresh(&mut self, now: Millis, user: &str) {
        let Some(l) = self.live.get_mut(user) else {
            return;
        };
        let shown = match &l.status {
            Some(s) if l.attached_until > now => s.clone(),
            _ => (Status::Offline, String::new()),
        };
        let before = l.shown.clone().unwrap_or((Status::Offline, String::new()));
        l.shown = Some(shown.clone());
        if before != shown {
            self.events.push_back(ContactsEvent::Presence {
                user: user.to_owned(),
                status: shown.0,
                message: shown.1,
            });
        }
    }

    /// An envelope of a contacts kind from `from` (verified). Returns false
    /// when the kind is not ours.
    pub fn on_envelope(
        &mut self,
        now: Millis,
        from: &Certificate,
        k: u8,
        payload: &[u8],
        sink: &mut dyn EnvelopeSink,
    ) -> bool {
        if k != kind::CONTACT && k != kind::PRESENCE && k != kind::CONTACT_SYNC {
            return false;
        }
        let user = from.username.to_ascii_lowercase();
        let Ok(p) = ContactPayload::decode(k, payload) else {
            tracing::debug!(%user, "malformed contacts payload");
            return true;
        };
        if let ContactPayload::Sync {
            user: contact,
            state,
            blocked,
            greeting,
        } = p
        {
            // Only from a device of our own account.
            if user == self.me {
                self.on_sync(now, contact, state, blocked, greeting, sink);
            }
            return true;
        }
        if self.is_blocked(&user) || user == self.me {
            return true;
        }
        let row = self.row(&user, now);
        match p {
            ContactPayload::Contact { op, text } => match (op, row.state) {
                (Op::Request, ContactState::Authorized)
                | (Op::Request, ContactState::Requested) => {
                    // They lost us, or we both asked: agreed.
                    self.send_op(&user, Op::Accept, "", 0, sink);
                    if row.state != ContactState::Authorized {
                        self.authorize(&user, now, sink);
                    }
                }
                (Op::Request, ContactState::Pending) => {}
                (Op::Request, _) => {
                    let mut row = row;
                    row.state = ContactState::Pending;
                    row.greeting = text.to_owned();
                    if self.save(row, now) {
                        self.events.push_back(ContactsEvent::Request {
                            from: user,
                            greeting: text.to_owned(),
                        });
                    }
                }
                (Op::Accept, ContactState::Requested | ContactState::Declined) => {
                    self.authorize(&user, now, sink)
                }
                (Op::Decline, ContactState::Requested) => {
                    let mut row = row;
                    row.state = ContactState::Declined;
                    if self.save(row, now) {
                        self.events
                            .push_back(ContactsEvent::Declined { user, by_us: false });
                    }
                }
                (
                    Op::Remove,
                    ContactState::Authorized | ContactState::Requested | ContactState::Pending,
                ) => {
                    let mut row = row;
                    row.state = ContactState::None;
                    row.greeting.clear();
                    if self.save(row, now) {
                        self.live.remove(&user);
                        self.events.push_back(ContactsEvent::Removed {
                            user,
                            by_them: true,
                        });
                    }
                }
                // Unsolicited accepts and the like change nothing.
                _ => {}
            },
            ContactPayload::Presence {
                status,
                message,
                want_reply,
            } => {
                // Only authorized contacts' presence is taken (and answered).
                if row.state != ContactState::Authorized {
                    return true;
                }
                let ttl = self.cfg.presence_ttl_ms;
                let l = self.live.entry(user.clone()).or_default();
                let status = if status == Status::Invisible {
                    Status::Offline
                } else {
                    status
                };
                // One device's presence: they show as their most
                // available device still attached.
                let until = if status == Status::Offline {
                    Millis::ZERO
                } else {
                    l.devices
                        .get(&from.ed25519)
                        .map_or(now + ttl, |d| d.2.max(now + ttl))
                };
                l.devices
                    .insert(from.ed25519, (status, message.to_owned(), until));
                if l.devices.len() > crate::overlay::msg::MAX_DEVICES {
                    let oldest = l.devices.iter().min_by_key(|(_, d)| d.2).map(|(k, _)| *k);
                    if let Some(k) = oldest {
                        l.devices.remove(&k);
                    }
                }
                let best = l
                    .devices
                    .values()
                    .filter(|d| d.2 > now)
                    .min_by_key(|d| rank(d.0))
                    .cloned();
                match best {
                    Some((s, m, u)) => {
                        l.status = Some((s, m));
                        l.attached_until = l.attached_until.max(u);
                    }
                    None => {
                        l.status = Some((status, message.to_owned()));
                        l.attached_until = Millis::ZERO;
                    }
                }
                self.refresh(now, &user);
                if want_reply && self.online {
                    self.send_presence(&user, false, sink);
                }
            }
            // Taken above.
            ContactPayload::Sync { .. } => {}
        }
        true
    }

    /// The overlay's outcome for envelope `id`; returns whether it was one
    /// of ours.
    pub fn on_envelope_outcome(
        &mut self,
        now: Millis,
        id: &EnvelopeId,
        o: EnvelopeOutcome,
    ) -> bool {
        let Some(op) = self.ops.remove(id) else {
            return false;
        };
        if let EnvelopeOutcome::Failed(why) = o {
            if op.tries + 1 >= self.cfg.max_retries {
                self.events.push_back(ContactsEvent::Failed {
                    user: op.to,
                    error: why,
                });
            } else {
                let at = now + self.cfg.retry_base_ms * (1 << op.tries.min(10));
                self.retries.push((at, op));
            }
        }
        true
    }

    pub fn handle_timeout(&mut self, now: Millis, sink: &mut dyn EnvelopeSink) {
        let due: Vec<PendingOp> = {
            let (due, later): (Vec<_>, Vec<_>) =
                self.retries.drain(..).partition(|(at, _)| *at <= now);
            self.retries = later;
            due.into_iter().map(|(_, op)| op).collect()
        };
        for op in due {
            self.send_op(&op.to.clone(), op.op, &op.text.clone(), op.tries + 1, sink);
        }
        if self.cfg.away_after_ms > 0
            && self.status == Status::Online
            && !self.auto_away
            && now.since(self.last_activity) >= self.cfg.away_after_ms
        {
            self.auto_away = true;
            self.status = Status::Away;
            self.events.push_back(ContactsEvent::StatusChanged {
                status: Status::Away,
                message: self.message.clone(),
                auto: true,
            });
            self.broadcast(false, sink);
        }
        let lapsed: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| {
                l.attached_until <= now && l.shown.as_ref().is_some_and(|s| s.0 != Status::Offline)
            })
            .map(|(u, _)| u.clone())
            .collect();
        for u in lapsed {
            self.refresh(now, &u);
        }
    }

    /// The next of: a record retry, going away, a shown contact's record
    /// lapsing; `None` when there is none.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let retry = self.retries.iter().map(|(at, _)| *at).min();
        let away = (self.cfg.away_after_ms > 0 && self.status == Status::Online && !self.auto_away)
            .then(|| self.last_activity + self.cfg.away_after_ms);
        let lapse = self
            .live
            .values()
            .filter(|l| l.shown.as_ref().is_some_and(|s| s.0 != Status::Offline))
            .map(|l| l.attached_until)
            .min();
        earliest(earliest(retry, away), lapse)
    }
}

#[cfg(test)]
mod tests;
