//! How the client runtime ([`super`]) reports what the node's
//! cores say: chat and contacts ([`crate::node::messaging`]), directory
//! records and peer links, as node API [`Event`]s of plain data.

use crate::chat::{ChatEvent, Delivery, Message, MsgId};
use crate::contacts::{self, ContactInfo, ContactsEvent};
use crate::ice::{Path, PathKind};
use crate::node::api::{
    ChatMessage, ContactChange, ContactEntry, ContactState, DirectoryRecord, ErrorReason, Event,
    GroupChange, GroupChatMessage, GroupEntry, GroupUpdate, MessageId, MessageState, PeerEvent,
    PeerPath, Presence,
};
use crate::node::messaging::GroupReport;
use crate::overlay::PresenceRecord;
use crate::time::{UnixMillis, UnixSecs};

/// The API's id of a chat message.
pub fn message_id(id: &MsgId) -> MessageId {
    u128::from_be_bytes(*id)
}

/// A directory record as the API shows it (`last_seen` in Unix seconds).
pub fn record(r: &PresenceRecord, last_seen: Option<UnixSecs>) -> DirectoryRecord {
    DirectoryRecord {
        username: r.username().to_owned(),
        status: r.status,
        message: r.message.clone(),
        seq: r.seq,
        supernodes: r.supernodes.clone(),
        candidates: r.candidates.clone(),
        last_seen: last_seen.map(UnixSecs::get),
    }
}

/// A peer link's candidate pair.
pub fn peer_path(p: &Path) -> PeerPath {
    PeerPath {
        relay: match p.kind() {
            PathKind::Direct => None,
            PathKind::Relayed { relay } => Some(relay),
        },
        local: p.local,
        local_kind: p.local_kind,
        remote: p.remote,
        remote_kind: p.remote_kind,
    }
}

/// A peer-link event of the node.
pub fn peer_event(e: crate::node::peer::PeerEvent) -> PeerEvent {
    use crate::node::peer::PeerEvent as P;
    match e {
        P::Signal { to, bytes, answer } => PeerEvent::IceSignal {
            to,
            data: bytes,
            answer,
        },
        P::Connected {
            user,
            path,
            setup_ms,
        } => PeerEvent::Connected {
            user,
            path: peer_path(&path),
            setup_ms,
        },
        P::PathChanged { user, from, to } => PeerEvent::PathChanged {
            user,
            from: peer_path(&from),
            to: peer_path(&to),
        },
        P::Failed { user, reason } => PeerEvent::Failed { user, reason },
    }
}

/// A row of the contact list.
pub fn contact_entry(c: &ContactInfo) -> ContactEntry {
    ContactEntry {
        username: c.username.clone(),
        state: contact_state(&ContactInfo {
            blocked: false,
            ..c.clone()
        }),
        blocked: c.blocked,
        status: c.status,
        message: c.message.clone(),
        greeting: c.greeting.clone(),
    }
}

/// A message of the history as the API shows it.
pub fn chat_message(m: &Message) -> ChatMessage {
    ChatMessage {
        id: message_id(&m.id),
        peer: m.peer.clone(),
        outgoing: m.outgoing,
        text: m.text.clone(),
        sent_at: UnixMillis(m.sent_at_ms),
        state: if !m.outgoing && m.read {
            MessageState::Read
        } else if !m.outgoing {
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
/// runtime when [`crate::node::messaging::MessagingCommand::SendMessage`] answers (it knows
/// their text), so `Queued` yields nothing.
pub fn chat_event(e: ChatEvent) -> Option<Event> {
    Some(match e {
        ChatEvent::Received(m) => Event::Message(chat_message(&m)),
        ChatEvent::Queued { .. } => return None,
        ChatEvent::Progress { to, id, delivery } => Event::MessageState {
            peer: to,
            id: message_id(&id),
            state: match delivery {
                Delivery::Delivered => MessageState::Arrived,
                Delivery::Stored => MessageState::Stored,
                Delivery::Retrying(why) => MessageState::Retrying(why),
            },
        },
        ChatEvent::Acked { to, id } => Event::MessageState {
            peer: to,
            id: message_id(&id),
            state: MessageState::Delivered,
        },
        ChatEvent::Failed { to, id, reason } => Event::MessageState {
            peer: to,
            id: message_id(&id),
            state: MessageState::Failed(reason.to_string()),
        },
        ChatEvent::Synced(m) => Event::MessageSynced(chat_message(&m)),
        ChatEvent::Read { peer, unread } => Event::ChatRead { with: peer, unread },
        ChatEvent::HistorySynced {
            peer,
            added,
            unread,
        } => Event::HistorySynced {
            with: peer,
            added,
            unread,
        },
        ChatEvent::StoreFailed { error } => Event::Error {
            command: "chat history".into(),
            reason: ErrorReason::Failed,
            message: error,
        },
    })
}

/// What happened, for a contacts event that is a change to a contact.
pub fn contact_change(e: &ContactsEvent) -> Option<ContactChange> {
    let u = |s: &String| s.clone();
    Some(match e {
        ContactsEvent::Request { from, greeting } => ContactChange::Request {
            from: u(from),
            greeting: u(greeting),
        },
        ContactsEvent::RequestSent { to } => ContactChange::RequestSent { to: u(to) },
        ContactsEvent::Added { user } => ContactChange::Added { user: u(user) },
        ContactsEvent::Declined { user, by_us } => ContactChange::Declined {
            user: u(user),
            by_us: *by_us,
        },
        ContactsEvent::Removed { user, by_them } => ContactChange::Removed {
            user: u(user),
            by_them: *by_them,
        },
        ContactsEvent::Blocked { user } => ContactChange::Blocked { user: u(user) },
        ContactsEvent::Unblocked { user } => ContactChange::Unblocked { user: u(user) },
        ContactsEvent::Presence {
            user,
            status,
            message,
        } => ContactChange::Presence {
            user: u(user),
            status: *status,
            message: u(message),
        },
        ContactsEvent::Failed { user, error } => ContactChange::Failed {
            user: u(user),
            error: u(error),
        },
        ContactsEvent::StatusChanged { .. } | ContactsEvent::StoreFailed { .. } => return None,
    })
}

/// A contacts event as API state events (after its
/// [`Event::ContactChange`]). [`ContactsEvent::Unblocked`] yields
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
            status,
            message,
            auto,
        } => vec![Event::OwnStatus {
            status,
            message,
            auto,
        }],
        // Reported by its change alone.
        ContactsEvent::Failed { .. } => vec![],
        ContactsEvent::StoreFailed { error } => vec![Event::Error {
            command: "contact list".into(),
            reason: ErrorReason::Failed,
            message: error,
        }],
    }
}

/// A group as the API shows it.
pub fn group_entry(g: &crate::group::GroupInfo) -> GroupEntry {
    GroupEntry {
        id: crate::wire::hex_encode(&g.id),
        name: g.name.clone(),
        creator: g.creator.clone(),
        admins: g.admins.clone(),
        members: g.members.clone(),
        joined: g.joined,
    }
}

/// A group message as the API shows it.
pub fn group_message(m: &crate::group::GroupMessage) -> GroupChatMessage {
    GroupChatMessage {
        group: crate::wire::hex_encode(&m.group),
        from: m.sender.clone(),
        seq: m.seq,
        text: m.text.clone(),
        sent_at: UnixMillis(m.sent_at_ms),
        outgoing: m.outgoing,
    }
}

/// What group chat reported, as API events.
pub fn group_report(r: GroupReport) -> Vec<Event> {
    use crate::group::{Change, GroupEvent};
    let u = match r {
        GroupReport::List(l) => GroupUpdate::List(l.iter().map(group_entry).collect()),
        GroupReport::History { info, messages } => GroupUpdate::History {
            group: group_entry(&info),
            messages: messages.iter().map(group_message).collect(),
        },
        GroupReport::Event(e) => match e {
            GroupEvent::Joined(info) => GroupUpdate::Change {
                by: info.creator.clone(),
                group: group_entry(&info),
                change: GroupChange::Joined,
            },
            GroupEvent::Changed { info, by, change } => GroupUpdate::Change {
                group: group_entry(&info),
                by,
                change: match change {
                    Change::Created => GroupChange::Created,
                    Change::Added(u) => GroupChange::Added(u),
                    Change::Left(u) => GroupChange::Left(u),
                    Change::Removed(u) => GroupChange::Removed(u),
                    Change::Renamed(n) => GroupChange::Renamed(n),
                    Change::Admin(u) => GroupChange::Admin(u),
                },
            },
            GroupEvent::Message(m) => GroupUpdate::Message(group_message(&m)),
            GroupEvent::Acked { group, seq, by } => GroupUpdate::Acked {
                group: crate::wire::hex_encode(&group),
                seq,
                by,
            },
            GroupEvent::InviteDropped { from, group } => GroupUpdate::InviteDropped {
                from,
                group: crate::wire::hex_encode(&group),
            },
            GroupEvent::StoreFailed { error } => {
                return vec![Event::Error {
                    command: "group history".into(),
                    reason: ErrorReason::Failed,
                    message: error,
                }];
            }
        },
    };
    vec![Event::Group(u)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::Status;

    #[test]
    fn ids_and_states() {
        let mut id = [0u8; 16];
        id[0] = 5;
        id[15] = 9;
        assert_eq!(message_id(&id), (5 << 120) | 9);
        let m = Message {
            peer: "bob".into(),
            id,
            outgoing: true,
            text: "hi".into(),
            sent_at_ms: 1,
            at_ms: 2,
            acked_at_ms: None,
            read: false,
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
        let read = Message {
            read: true,
            ..incoming
        };
        assert_eq!(chat_message(&read).state, MessageState::Read);
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
