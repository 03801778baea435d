//! Chat and contacts for `natter --headless`: the stdin commands, and the
//! events as text lines or JSON objects (documented in the README).

use natter::chat::{ChatEvent, Delivery, Message};
use natter::contacts::{ContactInfo, ContactsEvent};
use natter::identity::cert::fmt_time;
use natter::node::overlay::Command;
use natter::wire::hex_encode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The chat and contacts commands of the headless stdin.
pub const HELP: &str = "msg USER TEXT | add USER [GREETING] | accept USER | decline USER | remove USER | block USER | unblock USER | contacts | history USER [N]";

/// A command that answers with a listing to print.
pub enum Query {
    Contacts(oneshot::Receiver<Vec<ContactInfo>>),
    History(String, oneshot::Receiver<Result<Vec<Message>, String>>),
}

/// Parse a chat or contacts command line; `None` when it is not one.
pub fn parse(line: &str) -> Option<Result<(Command, Option<Query>), String>> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let (user, tail) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(u, t)| (u, t.trim()));
    let need_user = |c: Command| {
        if user.is_empty() {
            Err(format!("{word} needs a USER"))
        } else {
            Ok((c, None))
        }
    };
    Some(match word {
        "msg" | "message" => {
            if user.is_empty() || tail.is_empty() {
                Err("usage: msg USER TEXT".to_owned())
            } else {
                Ok((
                    Command::SendMessage {
                        to: user.to_owned(),
                        text: tail.to_owned(),
                        reply: None,
                    },
                    None,
                ))
            }
        }
        "add" => need_user(Command::AddContact {
            user: user.to_owned(),
            greeting: tail.to_owned(),
        }),
        "accept" => need_user(Command::AcceptContact {
            user: user.to_owned(),
        }),
        "decline" => need_user(Command::DeclineContact {
            user: user.to_owned(),
        }),
        "remove" => need_user(Command::RemoveContact {
            user: user.to_owned(),
        }),
        "block" => need_user(Command::BlockContact {
            user: user.to_owned(),
        }),
        "unblock" => need_user(Command::UnblockContact {
            user: user.to_owned(),
        }),
        "contacts" => {
            let (tx, rx) = oneshot::channel();
            Ok((Command::Contacts { reply: tx }, Some(Query::Contacts(rx))))
        }
        "history" => {
            if user.is_empty() {
                return Some(Err("usage: history USER [N]".to_owned()));
            }
            let limit = match tail {
                "" => 50,
                n => match n.parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => return Some(Err(format!("history: {n:?} is not a number"))),
                },
            };
            let (tx, rx) = oneshot::channel();
            Ok((
                Command::History {
                    with: user.to_owned(),
                    limit,
                    reply: tx,
                },
                Some(Query::History(user.to_ascii_lowercase(), rx)),
            ))
        }
        _ => return None,
    })
}

fn message_json(m: &Message) -> Value {
    json!({
        "id": hex_encode(&m.id),
        "outgoing": m.outgoing,
        "text": m.text,
        "sent_at": fmt_time(m.sent_at_ms / 1000),
        "acked": m.acked_at_ms.is_some(),
    })
}

/// The answer to a [`Query`], as JSON and as a line.
pub async fn answer(q: Query) -> (Value, String) {
    match q {
        Query::Contacts(rx) => {
            let list = rx.await.unwrap_or_default();
            let v: Vec<Value> = list
                .iter()
                .map(|c| {
                    json!({"user": c.username, "state": c.state.as_str(), "blocked": c.blocked,
                           "status": c.status.as_str(), "message": c.message, "greeting": c.greeting})
                })
                .collect();
            let line = if list.is_empty() {
                "no contacts".to_owned()
            } else {
                list.iter()
                    .map(|c| {
                        format!(
                            "{} ({}{}): {}{}",
                            c.username,
                            c.state.as_str(),
                            if c.blocked { ", blocked" } else { "" },
                            c.status.as_str(),
                            if c.message.is_empty() {
                                String::new()
                            } else {
                                format!(" - {}", c.message)
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            (json!({"event": "contacts", "contacts": v}), line)
        }
        Query::History(with, rx) => match rx.await {
            Ok(Ok(msgs)) => {
                let line = msgs
                    .iter()
                    .map(|m| {
                        format!(
                            "{} {}: {}",
                            fmt_time(m.at_ms / 1000),
                            if m.outgoing { "me" } else { with.as_str() },
                            m.text
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let v: Vec<Value> = msgs.iter().map(message_json).collect();
                (
                    json!({"event": "history", "with": with, "messages": v}),
                    line,
                )
            }
            Ok(Err(e)) => (json!({"event": "error", "error": e}), e),
            Err(_) => {
                let e = "the node stopped".to_owned();
                (json!({"event": "error", "error": e}), e)
            }
        },
    }
}

pub fn chat_event(e: &ChatEvent) -> (Value, String) {
    match e {
        ChatEvent::Received(m) => {
            let mut v = message_json(m);
            v["event"] = json!("message");
            v["from"] = json!(m.peer);
            (v, format!("{}: {}", m.peer, m.text))
        }
        ChatEvent::Queued { to, id } => (
            json!({"event": "message_queued", "to": to, "id": hex_encode(id)}),
            format!("message to {to} queued"),
        ),
        ChatEvent::Progress { to, id, delivery } => {
            let (status, error, line) = match delivery {
                Delivery::Delivered => ("delivered", None, format!("message delivered to {to}")),
                Delivery::Stored => (
                    "stored",
                    None,
                    format!("{to} is offline: the message waits for them"),
                ),
                Delivery::Retrying(e) => (
                    "retrying",
                    Some(e),
                    format!("message to {to}: {e}; will retry"),
                ),
            };
            (
                json!({"event": "message_status", "to": to, "id": hex_encode(id), "status": status, "error": error}),
                line,
            )
        }
        ChatEvent::Acked { to, id } => (
            json!({"event": "message_acked", "to": to, "id": hex_encode(id)}),
            format!("{to} received the message"),
        ),
        ChatEvent::StoreFailed { error } => (
            json!({"event": "error", "error": error}),
            format!("chat history: {error}"),
        ),
    }
}

pub fn contacts_event(e: &ContactsEvent) -> (Value, String) {
    match e {
        ContactsEvent::Request { from, greeting } => (
            json!({"event": "contact_request", "from": from, "greeting": greeting}),
            format!(
                "{from} asks to be your contact: {greeting:?} (accept {from} | decline {from})"
            ),
        ),
        ContactsEvent::RequestSent { to } => (
            json!({"event": "contact_request_sent", "to": to}),
            format!("contact request sent to {to}"),
        ),
        ContactsEvent::Added { user } => (
            json!({"event": "contact_added", "user": user}),
            format!("{user} is now a contact"),
        ),
        ContactsEvent::Declined { user, by_us } => (
            json!({"event": "contact_declined", "user": user, "by_us": by_us}),
            if *by_us {
                format!("you declined {user}")
            } else {
                format!("{user} declined your request")
            },
        ),
        ContactsEvent::Removed { user, by_them } => (
            json!({"event": "contact_removed", "user": user, "by_them": by_them}),
            if *by_them {
                format!("{user} removed you")
            } else {
                format!("{user} removed")
            },
        ),
        ContactsEvent::Blocked { user } => (
            json!({"event": "contact_blocked", "user": user}),
            format!("{user} blocked"),
        ),
        ContactsEvent::Unblocked { user } => (
            json!({"event": "contact_unblocked", "user": user}),
            format!("{user} unblocked"),
        ),
        ContactsEvent::Presence {
            user,
            status,
            message,
        } => (
            json!({"event": "contact_presence", "user": user, "status": status.as_str(), "message": message}),
            format!(
                "{user} is {}{}",
                status.as_str(),
                if message.is_empty() {
                    String::new()
                } else {
                    format!(" ({message})")
                }
            ),
        ),
        ContactsEvent::StatusChanged {
            status,
            message,
            auto,
        } => (
            json!({"event": "status", "status": status.as_str(), "message": message, "auto": auto}),
            format!(
                "you are {}{}",
                status.as_str(),
                if *auto { " (idle)" } else { "" }
            ),
        ),
        ContactsEvent::Failed { user, error } => (
            json!({"event": "contact_failed", "user": user, "error": error}),
            format!("could not reach {user}: {error}"),
        ),
        ContactsEvent::StoreFailed { error } => (
            json!({"event": "error", "error": error}),
            format!("contact list: {error}"),
        ),
    }
}
