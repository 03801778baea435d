//! Chat and contacts on a client node: the sub-driver that runs
//! [`ChatCore`] and [`ContactsCore`] beside the overlay client. The client
//! driver hands it its commands ([`MessagingCommand`]), the envelopes of
//! the chat and contacts kinds (its dispatcher's table says which), the
//! outcomes of the envelopes it sent and the overlay events it follows
//! (published, presence); it keeps the directory record (status shown to
//! strangers) and the watched users in step with the contact list, and
//! reports [`MessagingEvent`]s. The driver owns one of these when the
//! node is started with chat and contacts. Group chat ([`GroupCore`])
//! runs here too, when started with [`Messaging::with_groups`]: it uses
//! the contact list to take invitations from contacts only.

use crate::chat::{ChatConfig, ChatCore, ChatError, ChatEvent, ChatStore};
use crate::contacts::{ContactStore, ContactsConfig, ContactsCore, ContactsError, ContactsEvent};
use crate::group::{GroupCore, GroupError, GroupEvent, GroupInfo, GroupMessage, Standing};
use crate::identity::Certificate;
use crate::node::api::{ErrorReason, GroupCommand};
use crate::overlay::envelope::{EnvelopeOutcome, EnvelopeSink};
use crate::overlay::{ClientCore, ClientEvent, Devices, EnvelopeId, Status};
use crate::time::{Millis, UnixMillis, earliest};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use tokio::sync::oneshot;

/// The overlay client as the cores' envelope sink.
struct Sink<'a> {
    client: &'a mut ClientCore,
    rng: &'a mut StdRng,
    now: Millis,
    /// The wall clock the envelopes are dated by.
    unix: UnixMillis,
    /// Envelopes sent for chat and contacts, whose outcomes are theirs
    /// (every envelope gets one, so this empties).
    sent: &'a mut BTreeSet<EnvelopeId>,
}

impl EnvelopeSink for Sink<'_> {
    fn send_envelope(&mut self, to: &str, kind: u8, payload: &[u8], store: bool) -> EnvelopeId {
        let id = self
            .client
            .send_envelope(self.now, self.unix, self.rng, to, kind, payload, store);
        self.sent.insert(id);
        id
    }

    fn send_envelope_to_device(
        &mut self,
        to: &str,
        device: &[u8; 32],
        kind: u8,
        payload: &[u8],
        store: bool,
    ) -> EnvelopeId {
        let id = self.client.send_envelope_to(
            self.now,
            self.unix,
            self.rng,
            (to, Devices::Only(*device)),
            kind,
            payload,
            store,
        );
        self.sent.insert(id);
        id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Contacts(#[from] ContactsError),
    #[error(transparent)]
    Group(#[from] GroupError),
}

/// What the node's owner asks of chat and contacts.
#[derive(Debug)]
pub enum MessagingCommand {
    /// Send a chat message; its id (or why not) comes back on `reply`.
    SendMessage {
        to: String,
        text: String,
        reply: Option<oneshot::Sender<Result<crate::chat::MsgId, String>>>,
    },
    /// The last `limit` messages with a user, oldest first.
    History {
        with: String,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<crate::chat::Message>, String>>,
    },
    /// Incoming messages from a user not read yet.
    Unread {
        with: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// The conversation with a user is read: marked here and on our other
    /// devices; the messages left unread come back.
    MarkRead {
        with: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// The contact list.
    Contacts {
        reply: oneshot::Sender<Vec<crate::contacts::ContactInfo>>,
    },
    AddContact {
        user: String,
        greeting: String,
    },
    AcceptContact {
        user: String,
    },
    DeclineContact {
        user: String,
    },
    RemoveContact {
        user: String,
    },
    BlockContact {
        user: String,
    },
    UnblockContact {
        user: String,
    },
    /// Our status, shown to authorized contacts only.
    SetStatus {
        status: Status,
        message: String,
    },
    /// The user did something (resets the idle timer behind auto-away).
    Activity,
    /// Group chat.
    Group(GroupCommand),
}

/// What chat and contacts report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagingEvent {
    Chat(ChatEvent),
    Contacts(ContactsEvent),
    Group(GroupReport),
    /// A command could not be carried out.
    Failed {
        /// The command's name ([`MessagingCommand::name`]).
        command: &'static str,
        reason: ErrorReason,
        error: String,
    },
}

/// What group chat reports: the core's events, and the answers to the
/// history and list commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupReport {
    Event(GroupEvent),
    History {
        info: GroupInfo,
        messages: Vec<GroupMessage>,
    },
    List(Vec<GroupInfo>),
}

impl MessagingCommand {
    /// A short name for error events, as [`crate::node::api::Command::name`]
    /// names the front end's command.
    pub fn name(&self) -> &'static str {
        match self {
            MessagingCommand::SendMessage { .. } => "send message",
            MessagingCommand::History { .. } => "load history",
            MessagingCommand::Unread { .. } => "unread",
            MessagingCommand::MarkRead { .. } => "read",
            MessagingCommand::Contacts { .. } => "contacts",
            MessagingCommand::AddContact { .. } => "add contact",
            MessagingCommand::AcceptContact { .. } => "accept contact",
            MessagingCommand::DeclineContact { .. } => "decline contact",
            MessagingCommand::RemoveContact { .. } => "remove contact",
            MessagingCommand::BlockContact { .. } => "block contact",
            MessagingCommand::UnblockContact { .. } => "unblock contact",
            MessagingCommand::SetStatus { .. } => "set status",
            MessagingCommand::Activity => "activity",
            MessagingCommand::Group(g) => g.name(),
        }
    }
}

#[derive(Debug)]
pub struct Messaging {
    chat: ChatCore,
    contacts: ContactsCore,
    /// Group chat, when this node runs it.
    groups: Option<GroupCore>,
    /// The status last put in the directory record.
    published: Option<(Status, String)>,
    /// Envelopes chat and contacts sent, whose outcomes are theirs.
    sent: BTreeSet<EnvelopeId>,
    events: VecDeque<MessagingEvent>,
}

impl Messaging {
    /// Open `chat.db` and `contacts.db` in `data_dir`, for user `me`.
    pub fn open(
        data_dir: &Path,
        me: &str,
        chat: ChatConfig,
        contacts: ContactsConfig,
        now: Millis,
    ) -> Result<Self, MessagingError> {
        let c =
            ChatCore::new(ChatStore::open(&data_dir.join("chat.db"))?, chat, now)?.with_account(me);
        let k = ContactsCore::new(
            ContactStore::open(&data_dir.join("contacts.db"))?,
            me,
            contacts,
            now,
        )?;
        Ok(Self::new(c, k))
    }

    pub fn new(chat: ChatCore, contacts: ContactsCore) -> Self {
        Messaging {
            chat,
            contacts,
            groups: None,
            published: None,
            sent: BTreeSet::new(),
            events: VecDeque::new(),
        }
    }

    /// Run group chat on `groups` too.
    pub fn with_groups(mut self, groups: GroupCore) -> Self {
        self.groups = Some(groups);
        self
    }

    /// Our renewed certificate (group ops carry it).
    pub fn set_certificate(&mut self, cert: &Certificate) {
        if let Some(g) = &mut self.groups {
            g.set_certificate(cert.clone());
        }
    }

    /// Group chat's counters, when it runs.
    pub fn group_stats(&self) -> Option<crate::group::GroupStats> {
        self.groups.as_ref().map(|g| g.stats.clone())
    }

    /// The chat history sync's counters (asks, batches, refusals).
    pub fn history_stats(&self) -> crate::chat::HistoryStats {
        self.chat.history_stats().clone()
    }

    /// Whether we blocked `user`.
    pub fn is_blocked(&self, user: &str) -> bool {
        self.contacts.is_blocked(user)
    }

    /// Whether `user` is an authorized (and unblocked) contact.
    pub fn is_contact(&self, user: &str) -> bool {
        self.contacts.is_authorized(&user.to_ascii_lowercase())
    }

    pub fn poll_event(&mut self) -> Option<MessagingEvent> {
        self.events.pop_front()
    }

    /// The cores' earliest deadline; `None` when none has one.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let chat = self.chat.poll_timeout();
        let groups = self.groups.as_ref().and_then(GroupCore::poll_timeout);
        earliest(earliest(chat, self.contacts.poll_timeout()), groups)
    }

    /// Drain the cores' events and bring the record and watches in line.
    fn sync(&mut self, client: &mut ClientCore) {
        while let Some(e) = self.chat.poll_event() {
            self.events.push_back(MessagingEvent::Chat(e));
        }
        while let Some(e) = self.contacts.poll_event() {
            self.events.push_back(MessagingEvent::Contacts(e));
        }
        if let Some(g) = &mut self.groups {
            while let Some(e) = g.poll_event() {
                self.events
                    .push_back(MessagingEvent::Group(GroupReport::Event(e)));
            }
        }
        let public = self.contacts.public_status();
        if self.published.as_ref() != Some(&public) {
            client.set_status(public.0, &public.1);
            self.published = Some(public);
        }
        for u in self.contacts.take_watch_requests() {
            client.watch(&u);
        }
    }

    pub fn handle_timeout(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        client: &mut ClientCore,
        rng: &mut StdRng,
    ) {
        let mut sink = Sink {
            client,
            rng,
            now,
            unix,
            sent: &mut self.sent,
        };
        self.chat.handle_timeout(now, unix, &mut sink);
        self.contacts.handle_timeout(now, &mut sink);
        if let Some(g) = &mut self.groups {
            g.handle_timeout(now, &mut sink);
        }
        self.sync(client);
    }

    /// An envelope of a chat or contacts kind from `from` (verified);
    /// true when one of the cores took it.
    pub fn on_envelope(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        env: Envelope<'_>,
        client: &mut ClientCore,
        rng: &mut StdRng,
    ) -> bool {
        let mut sink = Sink {
            client,
            rng,
            now,
            unix,
            sent: &mut self.sent,
        };
        let (from, kind, payload) = env;
        self.chat.peer_online(now, &from.username);
        let blocked = self.contacts.is_blocked(&from.username);
        let standing = if blocked {
            Standing::Blocked
        } else if self
            .contacts
            .is_authorized(&from.username.to_ascii_lowercase())
        {
            Standing::Contact
        } else {
            Standing::Stranger
        };
        let group = match &mut self.groups {
            Some(g) => {
                g.peer_online(now, &from.username);
                g.on_envelope(now, from, standing, kind, payload, &mut sink)
            }
            None => false,
        };
        let took = group
            || self
                .chat
                .on_history_envelope(now, unix, from, kind, payload, &mut sink)
            || self
                .chat
                .on_envelope(unix, from, kind, payload, blocked, &mut sink)
            || self
                .contacts
                .on_envelope(now, from, kind, payload, &mut sink);
        self.sync(client);
        took
    }

    /// The outcome of an envelope; true when chat or contacts sent it
    /// (outcomes of presence envelopes and acks are not news).
    pub fn on_outcome(
        &mut self,
        now: Millis,
        id: &EnvelopeId,
        o: EnvelopeOutcome,
        client: &mut ClientCore,
    ) -> bool {
        let group = self
            .groups
            .as_mut()
            .is_some_and(|g| g.on_envelope_outcome(now, id, o.clone()));
        let consumed = group
            || self.chat.on_envelope_outcome(now, id, o.clone())
            || self.contacts.on_envelope_outcome(now, id, o);
        let ours = self.sent.remove(id);
        self.sync(client);
        consumed || ours
    }

    /// Overlay events chat and contacts follow: our record published (we
    /// are online), a watched user's record.
    pub fn observe(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        ev: &ClientEvent,
        client: &mut ClientCore,
        rng: &mut StdRng,
    ) {
        let mut sink = Sink {
            client,
            rng,
            now,
            unix,
            sent: &mut self.sent,
        };
        match ev {
            ClientEvent::Published { .. } => {
                self.contacts.on_online(&mut sink);
                self.chat.on_online(now, unix, &mut sink);
                // A device added later learns our groups from our others.
                if let Some(g) = &mut self.groups {
                    g.on_online(now, &mut sink);
                }
            }
            ClientEvent::PresenceChanged { record, .. } => {
                if record.status != Status::Offline && record.online_until > unix.secs().get() {
                    self.chat.peer_online(now, record.username());
                    if let Some(g) = &mut self.groups {
                        g.peer_online(now, record.username());
                    }
                }
                self.contacts.on_record(now, unix.secs(), record)
            }
            // A contact who answered us exists, whatever the directory
            // says just now (its record may be lost with a supernode).
            ClientEvent::NoSuchUser { username } if !self.contacts.answered(username) => {
                self.chat.no_such_user(now, username)
            }
            _ => {}
        }
        self.sync(client);
    }

    /// Handle a command; a failure comes out as [`MessagingEvent::Failed`].
    pub fn command(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        cmd: MessagingCommand,
        client: &mut ClientCore,
        rng: &mut StdRng,
    ) {
        // Message ids come from their own generator, as the sink holds the
        // node's.
        let mut id_rng =
            StdRng::from_rng(&mut *rng).unwrap_or_else(|_| StdRng::seed_from_u64(now.get()));
        let mut sink = Sink {
            client,
            rng,
            now,
            unix,
            sent: &mut self.sent,
        };
        let c = &mut self.contacts;
        let command = cmd.name();
        // The group rule that refused the command, if one did.
        let mut refusal = None;
        let res = match cmd {
            MessagingCommand::SendMessage { to, text, reply } => {
                let r = if c.is_blocked(&to) {
                    Err(ChatError::Blocked(to.clone()))
                } else {
                    self.chat
                        .send(now, unix, &mut id_rng, &to, &text, &mut sink)
                };
                let r = r.map_err(|e| e.to_string());
                let out = r.clone().map(|_| ());
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
                out
            }
            MessagingCommand::History { with, limit, reply } => {
                let _ = reply.send(self.chat.history(&with, limit).map_err(|e| e.to_string()));
                Ok(())
            }
            MessagingCommand::Unread { with, reply } => {
                let _ = reply.send(self.chat.unread(&with).map_err(|e| e.to_string()));
                Ok(())
            }
            MessagingCommand::MarkRead { with, reply } => {
                // A failure is the asker's to report.
                let r = self.chat.mark_read(&with, &mut sink);
                let _ = reply.send(r.map_err(|e| e.to_string()));
                Ok(())
            }
            MessagingCommand::Contacts { reply } => {
                let _ = reply.send(c.list());
                Ok(())
            }
            cmd @ (MessagingCommand::AddContact { .. }
            | MessagingCommand::AcceptContact { .. }
            | MessagingCommand::DeclineContact { .. }
            | MessagingCommand::RemoveContact { .. }
            | MessagingCommand::BlockContact { .. }
            | MessagingCommand::UnblockContact { .. }
            | MessagingCommand::SetStatus { .. }
            | MessagingCommand::Activity) => contacts_command(now, c, cmd, &mut sink),
            MessagingCommand::Group(cmd) => match &mut self.groups {
                None => Err("group chat is not enabled on this node".to_owned()),
                Some(g) => {
                    group_command(now, unix, g, cmd, &mut sink, &mut self.events).map_err(|e| {
                        refusal = e.refusal();
                        e.to_string()
                    })
                }
            },
        };
        if let Err(error) = res {
            let reason = refusal.map_or(ErrorReason::Failed, ErrorReason::Group);
            self.events.push_back(MessagingEvent::Failed {
                command,
                reason,
                error,
            });
        }
        self.sync(client);
    }

    /// The node is stopping: tell authorized contacts we go offline.
    pub fn shutdown(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        client: &mut ClientCore,
        rng: &mut StdRng,
    ) {
        let mut sink = Sink {
            client,
            rng,
            now,
            unix,
            sent: &mut self.sent,
        };
        self.contacts.shutdown(&mut sink);
        self.sync(client);
    }
}

/// The contacts core's commands: requests, blocks, status and activity.
fn contacts_command(
    now: Millis,
    c: &mut ContactsCore,
    cmd: MessagingCommand,
    sink: &mut Sink<'_>,
) -> Result<(), String> {
    match cmd {
        MessagingCommand::AddContact { user, greeting } => {
            c.add(now, &user, &greeting, sink).map_err(text)
        }
        MessagingCommand::AcceptContact { user } => c.accept(now, &user, sink).map_err(text),
        MessagingCommand::DeclineContact { user } => c.decline(now, &user, sink).map_err(text),
        MessagingCommand::RemoveContact { user } => c.remove(now, &user, sink).map_err(text),
        MessagingCommand::BlockContact { user } => c.block(now, &user, sink).map_err(text),
        MessagingCommand::UnblockContact { user } => c.unblock(now, &user, sink).map_err(text),
        MessagingCommand::SetStatus { status, message } => {
            c.activity(now, sink);
            c.set_status(status, &message, sink);
            Ok(())
        }
        MessagingCommand::Activity => {
            c.activity(now, sink);
            Ok(())
        }
        // Not the contacts core's: `Messaging::command` handles them.
        MessagingCommand::SendMessage { .. }
        | MessagingCommand::History { .. }
        | MessagingCommand::Unread { .. }
        | MessagingCommand::MarkRead { .. }
        | MessagingCommand::Contacts { .. }
        | MessagingCommand::Group(_) => Ok(()),
    }
}

/// Carry out a group command; answers go to `events`.
fn group_command(
    now: Millis,
    unix: UnixMillis,
    g: &mut GroupCore,
    cmd: GroupCommand,
    sink: &mut dyn EnvelopeSink,
    events: &mut VecDeque<MessagingEvent>,
) -> Result<(), GroupError> {
    let (t, wall) = (now, unix);
    match cmd {
        GroupCommand::Create { name, members } => {
            let id = g.create(t, wall, &name, sink)?;
            for m in members {
                g.invite(t, wall, &id, &m, sink)?;
            }
        }
        GroupCommand::Invite { group, user } => {
            let id = g.resolve(&group)?;
            g.invite(t, wall, &id, user.trim(), sink)?;
        }
        GroupCommand::Leave { group } => {
            let id = g.resolve(&group)?;
            g.leave(t, wall, &id, sink)?;
        }
        GroupCommand::Remove { group, user } => {
            let id = g.resolve(&group)?;
            g.remove(t, wall, &id, user.trim(), sink)?;
        }
        GroupCommand::Rename { group, name } => {
            let id = g.resolve(&group)?;
            g.rename(t, wall, &id, &name, sink)?;
        }
        GroupCommand::Send { group, text } => {
            let id = g.resolve(&group)?;
            g.send(t, wall, &id, &text, sink)?;
        }
        GroupCommand::History { group, limit } => {
            let id = g.resolve(&group)?;
            let messages = g.history(&id, limit as usize)?;
            if let Some(info) = g.info(&id) {
                events.push_back(MessagingEvent::Group(GroupReport::History {
                    info,
                    messages,
                }));
            }
        }
        GroupCommand::List => {
            events.push_back(MessagingEvent::Group(GroupReport::List(g.groups())));
        }
    }
    Ok(())
}

/// An envelope as the overlay delivered it: sender, kind, payload.
pub type Envelope<'a> = (&'a Certificate, u8, &'a [u8]);

fn text(e: ContactsError) -> String {
    e.to_string()
}
