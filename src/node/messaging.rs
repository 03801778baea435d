//! Chat and contacts on a client node: routes envelopes of their kinds and
//! the overlay's outcomes to [`ChatCore`] and [`ContactsCore`], their
//! commands from the UI or `--headless`, and keeps the directory record
//! (status shown to strangers) and the watched users in step with the
//! contact list. The overlay driver ([`super::overlay`]) owns one of these
//! when started with [`super::overlay::NodeOptions::messaging`].

use super::overlay::{Command, Event};
use crate::chat::{ChatConfig, ChatCore, ChatError, ChatStore};
use crate::contacts::{ContactStore, ContactsConfig, ContactsCore, ContactsError};
use crate::overlay::envelope::{EnvelopeOutcome, EnvelopeSink};
use crate::overlay::{ClientCore, ClientEvent, EnvelopeId, Status};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

/// The overlay client as the cores' envelope sink.
struct Sink<'a> {
    client: &'a mut ClientCore,
    rng: &'a mut StdRng,
    now: u64,
    /// Envelopes sent for chat and contacts, whose outcomes are theirs
    /// (every envelope gets one, so this empties).
    sent: &'a mut BTreeSet<EnvelopeId>,
}

impl EnvelopeSink for Sink<'_> {
    fn send_envelope(&mut self, to: &str, kind: u8, payload: &[u8], store: bool) -> EnvelopeId {
        let id = self
            .client
            .send_envelope(self.now, self.rng, to, kind, payload, store);
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
}

#[derive(Debug)]
pub struct Messaging {
    chat: ChatCore,
    contacts: ContactsCore,
    published: Option<(Status, String)>,
    sent: BTreeSet<EnvelopeId>,
    events: VecDeque<Event>,
}

impl Messaging {
    /// Open `chat.db` and `contacts.db` in `data_dir`, for user `me`.
    pub fn open(
        data_dir: &Path,
        me: &str,
        chat: ChatConfig,
        contacts: ContactsConfig,
        now: u64,
    ) -> Result<Self, MessagingError> {
        let c = ChatCore::new(ChatStore::open(&data_dir.join("chat.db"))?, chat, now)?;
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
            published: None,
            sent: BTreeSet::new(),
            events: VecDeque::new(),
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> u64 {
        self.chat.poll_timeout().min(self.contacts.poll_timeout())
    }

    /// Drain the cores' events and bring the record and watches in line.
    fn sync(&mut self, client: &mut ClientCore) {
        while let Some(e) = self.chat.poll_event() {
            self.events.push_back(Event::Chat(e));
        }
        while let Some(e) = self.contacts.poll_event() {
            self.events.push_back(Event::Contacts(e));
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

    pub fn handle_timeout(&mut self, now: u64, client: &mut ClientCore, rng: &mut StdRng) {
        let mut sink = Sink {
            client,
            rng,
            now,
            sent: &mut self.sent,
        };
        self.chat.handle_timeout(now, &mut sink);
        self.contacts.handle_timeout(now, &mut sink);
        self.sync(client);
    }

    /// Look at a client event; returns true when it was consumed (chat and
    /// contacts envelopes and their outcomes).
    pub fn on_event(
        &mut self,
        now: u64,
        ev: &ClientEvent,
        client: &mut ClientCore,
        rng: &mut StdRng,
    ) -> bool {
        let consumed = {
            let mut sink = Sink {
                client,
                rng,
                now,
                sent: &mut self.sent,
            };
            match ev {
                ClientEvent::Envelope {
                    from,
                    kind,
                    payload,
                    ..
                } => {
                    let blocked = self.contacts.is_blocked(&from.username);
                    self.chat
                        .on_envelope(now, from, *kind, payload, blocked, &mut sink)
                        || self
                            .contacts
                            .on_envelope(now, from, *kind, payload, &mut sink)
                }
                ClientEvent::EnvelopeDelivered { id } => {
                    self.outcome(now, id, EnvelopeOutcome::Delivered)
                }
                ClientEvent::EnvelopeStored { id } => {
                    self.outcome(now, id, EnvelopeOutcome::Stored)
                }
                ClientEvent::EnvelopeFailed { id, reason } => {
                    self.outcome(now, id, EnvelopeOutcome::Failed(reason.clone()))
                }
                ClientEvent::Published { .. } => {
                    self.contacts.on_online(&mut sink);
                    false
                }
                ClientEvent::NoSuchUser { username } => {
                    self.chat.no_such_user(username);
                    false
                }
                ClientEvent::PresenceChanged { record, .. } => {
                    self.contacts.on_record(now, record);
                    false
                }
                _ => false,
            }
        };
        // Outcomes of our presence envelopes and acks are not news.
        let ours = match ev {
            ClientEvent::EnvelopeDelivered { id }
            | ClientEvent::EnvelopeStored { id }
            | ClientEvent::EnvelopeFailed { id, .. } => self.sent.remove(id),
            _ => false,
        };
        self.sync(client);
        consumed || ours
    }

    fn outcome(&mut self, now: u64, id: &EnvelopeId, o: EnvelopeOutcome) -> bool {
        self.chat.on_envelope_outcome(now, id, o.clone())
            || self.contacts.on_envelope_outcome(now, id, o)
    }

    /// Handle a chat or contacts command; other commands come back.
    pub fn command(
        &mut self,
        now: u64,
        cmd: Command,
        client: &mut ClientCore,
        rng: &mut StdRng,
    ) -> Option<Command> {
        // Message ids come from their own generator, as the sink holds the
        // node's.
        let mut id_rng = StdRng::from_rng(&mut *rng).unwrap_or_else(|_| StdRng::seed_from_u64(now));
        let mut sink = Sink {
            client,
            rng,
            now,
            sent: &mut self.sent,
        };
        let res: Result<(), String> = match cmd {
            Command::SendMessage { to, text, reply } => {
                let r = if self.contacts.is_blocked(&to) {
                    Err(ChatError::Blocked(to.clone()))
                } else {
                    self.chat.send(now, &mut id_rng, &to, &text, &mut sink)
                };
                let r = r.map_err(|e| e.to_string());
                let out = r.clone().map(|_| ());
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
                out
            }
            Command::History { with, limit, reply } => {
                let _ = reply.send(self.chat.history(&with, limit).map_err(|e| e.to_string()));
                Ok(())
            }
            Command::Contacts { reply } => {
                let _ = reply.send(self.contacts.list());
                Ok(())
            }
            Command::AddContact { user, greeting } => self
                .contacts
                .add(now, &user, &greeting, &mut sink)
                .map_err(|e| e.to_string()),
            Command::AcceptContact { user } => self
                .contacts
                .accept(now, &user, &mut sink)
                .map_err(|e| e.to_string()),
            Command::DeclineContact { user } => self
                .contacts
                .decline(now, &user, &mut sink)
                .map_err(|e| e.to_string()),
            Command::RemoveContact { user } => self
                .contacts
                .remove(now, &user, &mut sink)
                .map_err(|e| e.to_string()),
            Command::BlockContact { user } => self
                .contacts
                .block(now, &user, &mut sink)
                .map_err(|e| e.to_string()),
            Command::UnblockContact { user } => {
                self.contacts.unblock(now, &user).map_err(|e| e.to_string())
            }
            Command::SetStatus { status, message } => {
                self.contacts.activity(now, &mut sink);
                self.contacts.set_status(status, &message, &mut sink);
                Ok(())
            }
            Command::Activity => {
                self.contacts.activity(now, &mut sink);
                Ok(())
            }
            Command::Shutdown => {
                self.contacts.shutdown(&mut sink);
                self.sync(client);
                return Some(Command::Shutdown);
            }
            other => return Some(other),
        };
        if let Err(error) = res {
            self.events.push_back(Event::CommandFailed { error });
        }
        self.sync(client);
        None
    }
}
