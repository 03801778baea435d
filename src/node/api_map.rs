//! How the client runtime ([`super::client`]) reports chat and contacts:
//! the events of [`super::messaging`] (the chat and contacts cores) turned
//! into node API [`Event`]s, which carry plain data only.

use super::api::{ChatMessage, ContactState, Event, MessageId, MessageState, Presence};
use crate::chat::{ChatEvent, Delivery, Message, MsgId};
use crate::contacts::{self, ContactInfo, ContactsEvent};

/// The API's id of a chat message: its first 8 bytes.
pub fn message_id(id: &MsgId) -> MessageId {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id[..8]);
    u64::from_be_bytes(b)
}

/// A message of the history as the API shows it.
pub fn chat_message(m: &Message) -> ChatMessage {
    ChatMessage {
        id: message_id(&m.id),
        peer: m.peer.clone(),
        outgoing: m.outgoing,
        text: m.text.clone(),
        sent_at: m.sent_at_ms,
        state: if !m.outgoing {
            MessageState::Received
        } else if m.acked_at_ms.is_some() {
            MessageState::Delivered
        } else {
            MessageState::Sending
        },
    }
}

/// A listed contact's state (`None` for a row that is no contact at all).
pub fn contact_state(c: &ContactInfo) -> Option<ContactState> {
    if c.blocked {
        return Some(ContactState::Blocked);
    }
    Some(match c.state {
        contacts::ContactState::None => return None,
        contacts::ContactState::Requested => ContactState::Requested,
        contacts::ContactState::Pending => ContactState::Pending,
        contacts::ContactState::Authorized => ContactState::Authorized,
        contacts::ContactState::Declined => ContactState::Declined,
    })
}

/// The events that describe a listed contact: a pending request comes as
/// [`Event::ContactRequest`] (with its greeting), everyone else as
/// [`Event::Contact`], followed by the presence of authorized contacts.
/// A row that is no contact yields [`Event::ContactRemoved`].
pub fn contact_events(c: &ContactInfo) -> Vec<Event> {
    let Some(state) = contact_state(c) else {
        return vec![Event::ContactRemoved {
            username: c.username.clone(),
        }];
    };
    let mut out = vec![if state == ContactState::Pending {
        Event::ContactRequest {
            from: c.username.clone(),
            greeting: c.greeting.clone(),
        }
    } else {
        Event::Contact {
            username: c.username.clone(),
            state,
        }
    }];
    if state == ContactState::Authorized {
        out.push(Event::Presence(Presence {
            username: c.username.clone(),
            status: c.status,
            message: c.message.clone(),
            last_seen: None,
        }));
    }
    out
}

/// A chat event as API events. Our own messages are reported by the
/// runtime when [`super::overlay::Command::SendMessage`] answers (it knows
/// their text), so `Queued` yields nothing.
pub fn chat_event(e: ChatEvent) -> Option<Event> {
    Some(match e {
        ChatEvent::Received(m) => Event::Message(chat_message(&m)),
        ChatEvent::Queued { .. } => return None,
        ChatEvent::Progress { to, id, delivery } => Event::MessageState {
            peer: to,
            id: message_id(&id),
            state: match delivery {
                // The recipient's device has it; its acknowledgement (that it
                // is in their history) follows.
                Delivery::Delivered => MessageState::Sending,
                Delivery::Stored => MessageState::Stored,
                Delivery::Retrying(why) => MessageState::Retrying(why),
            },
        },
        ChatEvent::Acked { to, id } => Event::MessageState {
            peer: to,
            id: message_id(&id),
            state: MessageState::Delivered,
        },
        ChatEvent::StoreFailed { error } => Event::Error {
            command: "chat history".into(),
            message: error,
        },
    })
}

/// A contacts event as API events. [`ContactsEvent::Unblocked`] yields
/// nothing: the contact's state then comes from the list (the runtime
/// asks for it).
pub fn contacts_event(e: ContactsEvent) -> Vec<Event> {
    match e {
        ContactsEvent::Request { from, greeting } => vec![Event::ContactRequest { from, greeting }],
        ContactsEvent::RequestSent { to } => vec![Event::Contact {
            username: to,
            state: ContactState::Requested,
        }],
        ContactsEvent::Added { user } => vec![
            Event::Contact {
                username: user.clone(),
                state: ContactState::Authorized,
            },
            Event::Notice {
                text: format!("{user} is now a contact"),
            },
        ],
        ContactsEvent::Declined { user, by_us: true } => {
            vec![Event::ContactRemoved { username: user }]
        }
        ContactsEvent::Declined { user, by_us: false } => vec![
            Event::Contact {
                username: user.clone(),
                state: ContactState::Declined,
            },
            Event::Notice {
                text: format!("{user} declined your contact request"),
            },
        ],
        ContactsEvent::Removed { user, by_them } => {
            let mut v = vec![Event::ContactRemoved {
                username: user.clone(),
            }];
            if by_them {
                v.push(Event::Notice {
                    text: format!("{user} removed you from their contacts"),
                });
            }
            v
        }
        ContactsEvent::Blocked { user } => vec![Event::Contact {
            username: user,
            state: ContactState::Blocked,
        }],
        ContactsEvent::Unblocked { .. } => vec![],
        ContactsEvent::Presence {
            user,
            status,
            message,
        } => vec![Event::Presence(Presence {
            username: user,
            status,
            message,
            last_seen: None,
        })],
        ContactsEvent::StatusChanged {
            status, message, ..
        } => vec![Event::OwnStatus { status, message }],
        ContactsEvent::Failed { user, error } => vec![Event::Error {
            command: "contact".into(),
            message: format!("could not reach {user}: {error}"),
        }],
        ContactsEvent::StoreFailed { error } => vec![Event::Error {
            command: "contact list".into(),
            message: error,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::Status;

    #[test]
    fn ids_and_states() {
        let mut id = [0u8; 16];
        id[7] = 5;
        id[15] = 9;
        assert_eq!(message_id(&id), 5);
        let m = Message {
            peer: "bob".into(),
            id,
            outgoing: true,
            text: "hi".into(),
            sent_at_ms: 1,
            at_ms: 2,
            acked_at_ms: None,
        };
        assert_eq!(chat_message(&m).state, MessageState::Sending);
        let acked = Message {
            acked_at_ms: Some(3),
            ..m.clone()
        };
        assert_eq!(chat_message(&acked).state, MessageState::Delivered);
        let incoming = Message {
            outgoing: false,
            ..m
        };
        assert_eq!(chat_message(&incoming).state, MessageState::Received);
    }

    #[test]
    fn contacts_in_the_list() {
        let c = ContactInfo {
            username: "dave".into(),
            state: contacts::ContactState::Pending,
            blocked: false,
            greeting: "hi".into(),
            status: Status::Offline,
            message: String::new(),
        };
        assert_eq!(
            contact_events(&c),
            vec![Event::ContactRequest {
                from: "dave".into(),
                greeting: "hi".into()
            }]
        );
        let blocked = ContactInfo {
            state: contacts::ContactState::None,
            blocked: true,
            ..c.clone()
        };
        assert_eq!(contact_state(&blocked), Some(ContactState::Blocked));
        let gone = ContactInfo {
            state: contacts::ContactState::None,
            ..c.clone()
        };
        assert_eq!(
            contact_events(&gone),
            vec![Event::ContactRemoved {
                username: "dave".into()
            }]
        );
        let friend = ContactInfo {
            state: contacts::ContactState::Authorized,
            status: Status::Away,
            message: "lunch".into(),
            ..c
        };
        let ev = contact_events(&friend);
        assert_eq!(ev.len(), 2);
        assert!(
            matches!(&ev[1], Event::Presence(p) if p.status == Status::Away && p.message == "lunch")
        );
    }
}
