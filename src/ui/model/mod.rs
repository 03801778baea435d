//! The view model: what the screen shows, built only from the runtime's
//! [`Event`]s. It is a picture of what the node reported, not protocol
//! state: nothing here is ever sent anywhere.

pub mod conference;
pub mod files;
pub mod group;

use crate::node::api::{
    AccountRefusal, AttachedSupernode, AudioStatus, CallId, CallInfo, CallRecord, CallState,
    CallStats, ChatMessage, ContactChange, ContactState, ErrorReason, Event, LoginState,
    LookupResult, MessageState, NatStatus, OverlayEvent, Presence, RemoteChange,
};
use crate::overlay::Status;
use crate::time::UnixMillis;
use std::collections::{BTreeMap, VecDeque};

/// Notifications kept for the screen.
const MAX_NOTICES: usize = 50;
/// Calls of the history kept for the screen.
const MAX_CALLS: usize = 50;
/// Messages kept per conversation on screen.
const MAX_MESSAGES: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub state: ContactState,
    pub presence: Option<Presence>,
    pub unread: usize,
    /// Their greeting, for requests.
    pub greeting: Option<String>,
}

impl Contact {
    pub fn status(&self) -> Status {
        self.presence
            .as_ref()
            .map(|p| p.status)
            .unwrap_or(Status::Offline)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Alert,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub at: UnixMillis,
    pub level: Level,
    pub text: String,
}

#[derive(Debug, Default)]
pub struct Model {
    /// The wall clock as of the last tick: dates and timers are drawn
    /// from it.
    pub now: UnixMillis,
    pub login: Option<LoginState>,
    pub own_status: Option<(Status, String)>,
    pub supernodes: Vec<AttachedSupernode>,
    pub nat: NatStatus,
    pub audio: Option<AudioStatus>,
    pub contacts: BTreeMap<String, Contact>,
    /// People not in the contact list who wrote to us this session, with
    /// their unread count: the "requests and strangers" entry, where they
    /// can be read, answered, added or blocked.
    pub strangers: BTreeMap<String, usize>,
    /// The latest answer for each name searched.
    pub lookups: BTreeMap<String, LookupResult>,
    pub chats: BTreeMap<String, Vec<ChatMessage>>,
    pub calls: BTreeMap<CallId, CallInfo>,
    /// The call history, newest first (a missed call stays unseen until
    /// the user opens the chat with or calls that person).
    pub call_log: Vec<CallRecord>,
    pub stats: BTreeMap<CallId, CallStats>,
    pub notices: VecDeque<Notice>,
    /// Ring the terminal bell at the next draw.
    pub bell: bool,
    /// The runtime has stopped.
    pub stopped: bool,
    /// The conversation on screen: its new messages are not unread.
    pub chat_open: Option<String>,
    /// The conference we are in or invited to (`ui::model::conference`).
    pub conference: Option<conference::ConferenceView>,
    /// Our groups by id (`ui::model::group`).
    pub groups: BTreeMap<String, group::GroupView>,
    /// File transfers, live and lately ended (`ui::model::files`).
    pub files: BTreeMap<crate::node::api::TransferId, files::FileView>,
    /// The account's devices as the authority last listed them (`None`
    /// until asked and answered).
    pub devices: Option<Vec<crate::node::api::DeviceInfo>>,
}

impl Model {
    pub fn me(&self) -> Option<&str> {
        match &self.login {
            Some(LoginState::LoggedIn { username, .. }) => Some(username),
            _ => None,
        }
    }

    pub fn logged_in(&self) -> bool {
        self.me().is_some()
    }

    /// The call on screen: the live one, else the most recent.
    pub fn current_call(&self) -> Option<&CallInfo> {
        self.calls
            .values()
            .rev()
            .find(|c| !matches!(c.state, CallState::Ended { .. }))
            .or_else(|| self.calls.values().next_back())
    }

    /// A call waiting for us to answer.
    pub fn incoming_call(&self) -> Option<&CallInfo> {
        self.calls.values().find(|c| c.state == CallState::Incoming)
    }

    /// Missed calls not seen yet.
    pub fn missed_unseen(&self) -> usize {
        self.call_log
            .iter()
            .filter(|c| c.missed() && !c.seen)
            .count()
    }

    /// Incoming messages from `with` on screen are read (the store marks
    /// them so too).
    pub fn mark_read(&mut self, with: &str) {
        for m in self.chats.get_mut(with).into_iter().flatten() {
            if !m.outgoing && m.state == MessageState::Received {
                m.state = MessageState::Read;
            }
        }
    }

    pub fn notify(&mut self, level: Level, text: String) {
        if self.notices.len() == MAX_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back(Notice {
            at: self.now,
            level,
            text,
        });
    }

    pub fn apply(&mut self, e: Event) {
        match e {
            Event::Login(s) => {
                if let LoginState::LoggedIn { username, .. } = &s {
                    if !self.logged_in() {
                        self.notify(Level::Info, format!("logged in as {username}"));
                    }
                    self.own_status
                        .get_or_insert((Status::Online, String::new()));
                }
                self.login = Some(s);
            }
            Event::OwnStatus {
                status, message, ..
            } => self.own_status = Some((status, message)),
            Event::Supernodes { attached } => self.supernodes = attached,
            Event::Nat(n) => self.nat = n,
            Event::Audio(a) => self.audio = Some(a),
            Event::Presence(p) => {
                if let Some(c) = self.contacts.get_mut(&p.username) {
                    c.presence = Some(p);
                }
            }
            Event::Lookup {
                username, result, ..
            } => {
                self.lookups.insert(username, result);
            }
            Event::Contact { username, state } => {
                self.strangers.remove(&username);
                let c = self.contacts.entry(username).or_insert(Contact {
                    state,
                    presence: None,
                    unread: 0,
                    greeting: None,
                });
                c.state = state;
            }
            Event::ContactRemoved { username } => {
                self.contacts.remove(&username);
            }
            Event::ContactRequest { from, greeting } => {
                let said = if greeting.is_empty() {
                    String::new()
                } else {
                    format!(": “{greeting}”")
                };
                self.notify(
                    Level::Alert,
                    format!("{from} wants to add you as a contact{said}"),
                );
                self.bell = true;
                self.strangers.remove(&from);
                let c = self.contacts.entry(from).or_insert(Contact {
                    state: ContactState::Pending,
                    presence: None,
                    unread: 0,
                    greeting: None,
                });
                c.state = ContactState::Pending;
                c.greeting = Some(greeting);
            }
            Event::Message(m) => {
                if !m.outgoing {
                    let open = self.chat_open.as_deref() == Some(m.peer.as_str());
                    let unread = usize::from(!open);
                    match self.contacts.get_mut(&m.peer) {
                        Some(c) => c.unread += unread,
                        None => *self.strangers.entry(m.peer.clone()).or_default() += unread,
                    }
                    let who = if self.contacts.contains_key(&m.peer) {
                        m.peer.clone()
                    } else {
                        format!("{} (not a contact: see requests and strangers)", m.peer)
                    };
                    self.notify(Level::Alert, format!("message from {who}"));
                    self.bell = true;
                }
                let chat = self.chats.entry(m.peer.clone()).or_default();
                match chat.iter_mut().find(|x| x.id == m.id) {
                    Some(x) => *x = m,
                    None => chat.push(m),
                }
                if chat.len() > MAX_MESSAGES {
                    chat.drain(..chat.len() - MAX_MESSAGES);
                }
            }
            Event::MessageState { peer, id, state } => {
                if let MessageState::Failed(why) = &state {
                    self.notify(Level::Error, format!("message to {peer} failed: {why}"));
                }
                if let Some(m) = self
                    .chats
                    .get_mut(&peer)
                    .and_then(|c| c.iter_mut().find(|m| m.id == id))
                {
                    m.state = state;
                }
            }
            // Sent from another of our devices: shown as ours.
            Event::MessageSynced(m) => {
                let chat = self.chats.entry(m.peer.clone()).or_default();
                if !chat.iter().any(|x| x.id == m.id) {
                    chat.push(m);
                    chat.sort_by_key(|m| (m.sent_at, m.id));
                }
                if chat.len() > MAX_MESSAGES {
                    chat.drain(..chat.len() - MAX_MESSAGES);
                }
            }
            // History from another of our devices: its unread count.
            Event::HistorySynced { with, unread, .. } => {
                let unread = usize::try_from(unread).unwrap_or(usize::MAX);
                match self.contacts.get_mut(&with) {
                    Some(c) => c.unread = unread,
                    None => {
                        if unread > 0 || self.strangers.contains_key(&with) {
                            self.strangers.insert(with, unread);
                        }
                    }
                }
            }
            // Read on another of our devices.
            Event::ChatRead { with, unread } => {
                if unread == 0 {
                    self.mark_read(&with);
                }
                let unread = usize::try_from(unread).unwrap_or(usize::MAX);
                match self.contacts.get_mut(&with) {
                    Some(c) => c.unread = c.unread.min(unread),
                    None => {
                        if let Some(n) = self.strangers.get_mut(&with) {
                            *n = (*n).min(unread);
                        }
                    }
                }
            }
            Event::History { with, messages, .. } => {
                let chat = self.chats.entry(with.clone()).or_default();
                for m in messages {
                    if !chat.iter().any(|x| x.id == m.id) {
                        chat.push(m);
                    }
                }
                chat.sort_by_key(|m| (m.sent_at, m.id));
                // Loaded into the open chat: read as it shows.
                if self.chat_open.as_deref() == Some(with.as_str()) {
                    self.mark_read(&with);
                }
            }
            Event::Call(c) => {
                let before = self.calls.get(&c.id).map(|o| o.state.clone());
                if before.as_ref() != Some(&c.state) {
                    match &c.state {
                        CallState::Incoming => {
                            self.notify(Level::Alert, format!("incoming call from {}", c.peer));
                            self.bell = true;
                        }
                        CallState::Ended { reason, detail } => self.notify(
                            Level::Info,
                            format!(
                                "call with {} ended: {}",
                                c.peer,
                                CallState::end_text(reason, detail)
                            ),
                        ),
                        _ => {}
                    }
                }
                // Only the latest ended call stays on screen.
                if matches!(c.state, CallState::Ended { .. }) {
                    let id = c.id;
                    self.calls
                        .retain(|k, v| *k == id || !matches!(v.state, CallState::Ended { .. }));
                    self.stats.retain(|k, _| self.calls.contains_key(k));
                }
                self.calls.insert(c.id, c);
            }
            // The final report of an ended call has nothing live to show.
            Event::CallStats { call, stats } if !stats.last => {
                self.stats.insert(call, stats);
            }
            Event::CallRemote {
                call,
                change: RemoteChange::Muted(muted),
            } => {
                let peer = self.calls.get(&call).map(|c| c.peer.clone());
                let peer = peer.unwrap_or_default();
                self.notify(
                    Level::Info,
                    format!("{peer} {}", if muted { "muted" } else { "unmuted" }),
                )
            }
            Event::Overlay(OverlayEvent::PublishRejected { reason, .. }) => {
                self.notify(Level::Error, format!("publish presence: {reason}"))
            }
            Event::ContactChange(ContactChange::Failed { user, error }) => self.notify(
                Level::Error,
                format!("contact: could not reach {user}: {error}"),
            ),
            // Changes the state events above already show, and what only
            // scripts report.
            Event::CallStats { .. }
            | Event::CallRemote { .. }
            | Event::ContactChange(_)
            | Event::Overlay(_)
            | Event::NatDetected(_)
            | Event::Watched { .. }
            | Event::Contacts(_)
            | Event::Envelope { .. }
            | Event::EnvelopeResult { .. }
            | Event::RelayCredentials(_)
            | Event::RelayRefused { .. }
            | Event::Peer(_)
            | Event::Volunteered { .. }
            | Event::VolunteerDeclined { .. } => {}
            Event::Notice { text } => self.notify(Level::Info, text),
            Event::CallElsewhere {
                peer, device, on, ..
            } => {
                if on {
                    self.notify(Level::Info, format!("a call with {peer} is on {device}"))
                }
            }
            // A refusal is no failure: nothing broke, a rule said no.
            Event::Error {
                command,
                reason,
                message,
            } => {
                let level = match reason {
                    ErrorReason::Failed | ErrorReason::Account(AccountRefusal::Unreachable) => {
                        Level::Error
                    }
                    ErrorReason::Group(_) | ErrorReason::Account(_) => Level::Alert,
                };
                self.notify(level, format!("{command}: {message}"))
            }
            Event::CallLogged(r) => {
                if r.missed() {
                    self.notify(Level::Alert, format!("missed call from {}", r.peer));
                    self.bell = true;
                }
                self.call_log.insert(0, r);
                self.call_log.truncate(MAX_CALLS);
            }
            Event::CallHistory { calls } => self.call_log = calls,
            Event::Stopped => self.stopped = true,
            Event::File(f) => self.apply_file(f),
            Event::Files(list) => self.apply_file_list(list),
            Event::Conference(u) => self.conference(u),
            Event::Group(u) => self.group(u),
            Event::Devices(list) => self.devices = Some(list),
            Event::DeviceRevoked { message, .. } => self.notify(Level::Info, message),
        }
    }
}
