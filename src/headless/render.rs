//! Node API [`Event`]s as the headless mode prints them: a JSON object
//! (`--json`, documented in the README, field for field) and a line for
//! people. State events that only a screen needs render as nothing.

use natter::conference::{ConfEvent, ConfId};
use natter::node::api::ConferenceUpdate;
use natter::node::api::{
    CallId, CallInfo, CallState, CallStats, ChatMessage, ContactChange, ContactEntry, ContactState,
    DeviceInfo, DirectoryRecord, EndReason, EnvelopeOutcome, Event, FileEvent, FileInfo,
    GroupChange, GroupChatMessage, GroupEntry, GroupUpdate, LoginState, LookupResult, MessageState,
    NatReport, OverlayEvent, PeerEvent, PeerPath, RelayCredentials, RemoteChange,
};
use natter::time::UnixMillis;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// One event as printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub json: Value,
    pub line: String,
}

fn r(json: Value, line: impl Into<String>) -> Option<Rendered> {
    Some(Rendered {
        json,
        line: line.into(),
    })
}

/// Unix seconds as RFC 3339.
pub fn time(unix_secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs.min(253_402_300_799));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// [`time`] of a wall-clock time in milliseconds (to the second).
fn time_ms(t: UnixMillis) -> String {
    time(t.secs().get())
}

fn hex128(id: u128) -> String {
    format!("{id:032x}")
}

fn call_id(id: CallId) -> String {
    format!("{id:016x}")
}

fn addrs(list: &[SocketAddr]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An event, or `None` for events scripts do not see. Calls render
/// through [`call_state`], [`call_stats`] and [`call_remote`], which need
/// what the driver knows of the call.
pub fn event(e: &Event) -> Option<Rendered> {
    match e {
        Event::Login(LoginState::LoggedIn {
            username,
            until,
            role,
        }) => r(
            json!({"event": "login", "user": username, "until": time(*until), "role": role.as_str()}),
            format!("logged in as {username} until {}", time(*until)),
        ),
        Event::Overlay(o) => overlay(o),
        Event::Lookup {
            username,
            result,
            record,
        } => lookup(username, result, record.as_ref()),
        Event::Watched { record, online } => watched(record, *online),
        Event::NatDetected(n) => r(nat(n), format!("NAT: {}", n.summary())),
        Event::RelayCredentials(c) => relay_credentials(c),
        Event::RelayRefused { reason } => r(
            json!({"event": "relay_refused", "reason": reason}),
            format!("no relay credentials: {reason}"),
        ),
        Event::Envelope {
            from,
            kind,
            id,
            payload,
        } => {
            let text = String::from_utf8_lossy(payload);
            r(
                json!({"event": "envelope", "from": from, "kind": kind, "id": hex128(*id), "payload": text}),
                format!("envelope from {from} (kind {kind}): {text}"),
            )
        }
        Event::EnvelopeResult { id, result } => envelope_result(*id, result),
        Event::Peer(p) => peer(p),
        Event::Message(m) => message(m),
        Event::MessageSynced(m) => {
            let mut v = message_json(m);
            v["event"] = json!("message_synced");
            v["to"] = json!(m.peer);
            r(
                v,
                format!("me (on another device) to {}: {}", m.peer, m.text),
            )
        }
        Event::ChatRead { with, unread } => r(
            json!({"event": "chat_read", "with": with, "unread": unread}),
            format!("conversation with {with} read ({unread} unread)"),
        ),
        Event::HistorySynced {
            with,
            added,
            unread,
        } => r(
            json!({"event": "history_synced", "with": with, "added": added, "unread": unread}),
            format!(
                "history with {with} taken from another of our devices ({added} messages, {unread} unread)"
            ),
        ),
        Event::MessageState { peer, id, state } => message_state(peer, *id, state),
        Event::History {
            with,
            messages,
            unread,
        } => history(with, messages, *unread),
        Event::ContactChange(c) => contact_change(c),
        Event::Contacts(list) => contacts(list),
        Event::OwnStatus {
            status,
            message,
            auto,
        } => r(
            json!({"event": "status", "status": status.as_str(), "message": message, "auto": auto}),
            format!(
                "you are {}{}",
                status.name(),
                if *auto { " (idle)" } else { "" }
            ),
        ),
        Event::Volunteered { supernode } => r(
            json!({"event": "volunteered", "supernode": supernode.to_string()}),
            format!("volunteering as a supernode on {supernode}"),
        ),
        Event::VolunteerDeclined { reason } => r(
            json!({"event": "volunteer_declined", "reason": reason}),
            format!("not volunteering as a supernode: {reason}"),
        ),
        Event::CallLogged(c) => {
            let v = call_record(c);
            let line = format!(
                "{} call {} {}{}",
                if c.missed() {
                    "missed"
                } else if c.outgoing {
                    "outgoing"
                } else {
                    "incoming"
                },
                if c.outgoing { "to" } else { "from" },
                c.with_whom(),
                if c.answered_at.is_some() {
                    format!(", {} s", c.duration_ms() / 1000)
                } else {
                    String::new()
                }
            );
            let mut v = v;
            v["event"] = json!("call_logged");
            r(v, line)
        }
        Event::CallHistory { calls } => {
            let list: Vec<Value> = calls.iter().map(call_record).collect();
            let missed = calls.iter().filter(|c| c.missed() && !c.seen).count();
            r(
                json!({"event": "call_history", "calls": list}),
                format!("{} calls, {missed} missed and unseen", calls.len()),
            )
        }
        // The node names its API command; scripts see the verb they typed.
        Event::Error {
            command,
            reason,
            message,
        } => error(super::parse::verb_of(command), reason.code(), message),
        // The whole list each time, as the network panel shows it.
        Event::Supernodes { attached } => {
            let list: Vec<Value> = attached
                .iter()
                .map(|a| json!({"supernode": a.addr.to_string(), "primary": a.primary}))
                .collect();
            let line = attached
                .iter()
                .map(|a| {
                    format!(
                        "{} ({})",
                        a.addr,
                        if a.primary { "primary" } else { "backup" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            r(
                json!({"event": "supernodes", "attached": list}),
                format!(
                    "supernodes: {}",
                    if line.is_empty() { "none" } else { &line }
                ),
            )
        }
        Event::Audio(a) => {
            let f = a.fallback?;
            r(
                json!({"event": "warning", "reason": f.code(), "message": f.to_string(), "input": a.input, "output": a.output}),
                format!("warning: {f} (in {}, out {})", a.input, a.output),
            )
        }
        Event::Notice { text } => Some(Rendered {
            json: Value::Null,
            line: text.clone(),
        }),
        Event::File(f) => file_event(f),
        Event::Files(list) => files(list),
        Event::Conference(u) => conference(u),
        Event::Group(u) => group(u),
        Event::Devices(list) => devices(list),
        Event::CallElsewhere {
            call,
            peer,
            device,
            on,
        } => r(
            json!({"event": "call_elsewhere", "call": call_id(*call), "peer": peer,
                "device": device, "on": on}),
            if *on {
                format!("call with {peer} on {device}: `take` moves it here")
            } else {
                format!("the call with {peer} on {device} ended")
            },
        ),
        Event::DeviceRevoked { device, message } => r(
            json!({"event": "device_revoked", "device": device, "message": message}),
            format!("revoked {device}: {message}"),
        ),
        _ => None,
    }
}

fn size_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn file_event(e: &FileEvent) -> Option<Rendered> {
    let dir = |outgoing: bool| if outgoing { "out" } else { "in" };
    match e {
        FileEvent::Offered {
            id,
            peer,
            name,
            size,
        } => r(
            json!({"event": "file_offered", "id": hex128(*id), "from": peer, "name": name, "size": size}),
            format!(
                "{peer} offers {name} ({}): file accept {} [PATH] | file decline {}",
                size_text(*size),
                hex128(*id),
                hex128(*id)
            ),
        ),
        FileEvent::Offering {
            id,
            peer,
            name,
            size,
        } => r(
            json!({"event": "file_offering", "id": hex128(*id), "to": peer, "name": name, "size": size}),
            format!("offering {name} ({}) to {peer}", size_text(*size)),
        ),
        FileEvent::Started {
            id,
            peer,
            outgoing,
            resumed_from,
        } => r(
            json!({"event": "file_started", "id": hex128(*id), "peer": peer, "direction": dir(*outgoing), "resumed_from": resumed_from}),
            match resumed_from {
                0 => format!("file {} with {peer} started", hex128(*id)),
                n => format!(
                    "file {} with {peer} resumed at {}",
                    hex128(*id),
                    size_text(*n)
                ),
            },
        ),
        FileEvent::Progress(p) => r(
            json!({"event": "file_progress", "id": hex128(p.id), "peer": p.peer, "direction": dir(p.outgoing),
                   "bytes": p.done, "size": p.size, "rate": p.rate, "eta_ms": p.eta_ms, "wire_bytes": p.wire_bytes}),
            format!(
                "file {}: {} of {} at {}/s{}",
                hex128(p.id),
                size_text(p.done),
                size_text(p.size),
                size_text(p.rate),
                p.eta_ms.map_or(String::new(), |ms| format!(
                    ", {} s left",
                    ms.div_ceil(1000)
                ))
            ),
        ),
        FileEvent::Completed {
            id,
            peer,
            outgoing,
            path,
            size,
            wire_bytes,
        } => r(
            json!({"event": "file_done", "id": hex128(*id), "peer": peer, "direction": dir(*outgoing), "path": path.display().to_string(), "size": size, "wire_bytes": wire_bytes}),
            format!(
                "file {} with {peer} done: {} ({}, hash checked)",
                hex128(*id),
                path.display(),
                size_text(*size)
            ),
        ),
        FileEvent::Failed {
            id,
            peer,
            outgoing,
            reason,
        } => r(
            json!({"event": "file_failed", "id": hex128(*id), "peer": peer, "direction": dir(*outgoing), "reason": reason.code()}),
            format!("file {} with {peer} failed: {}", hex128(*id), reason.code()),
        ),
    }
}

fn files(list: &[FileInfo]) -> Option<Rendered> {
    let rows: Vec<Value> = list
        .iter()
        .map(|f| {
            json!({"id": hex128(f.id), "peer": f.peer, "direction": if f.outgoing { "out" } else { "in" },
                   "name": f.name, "size": f.size, "bytes": f.done, "state": format!("{:?}", f.state).to_lowercase()})
        })
        .collect();
    let lines: Vec<String> = list
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {} {}/{} {:?}",
                hex128(f.id),
                if f.outgoing { "to" } else { "from" },
                f.peer,
                f.name,
                size_text(f.done),
                size_text(f.size),
                f.state
            )
        })
        .collect();
    r(
        json!({"event": "files", "files": rows}),
        if lines.is_empty() {
            "no file transfers".to_owned()
        } else {
            lines.join("\n")
        },
    )
}

/// A conference update: `{"event": "conference", "type": ..., "conference": id, ...}`.
fn group_json(g: &GroupEntry) -> Value {
    json!({"id": g.id, "name": g.name, "creator": g.creator, "admins": g.admins,
           "members": g.members, "joined": g.joined})
}

fn group_message_json(m: &GroupChatMessage) -> Value {
    json!({"group": m.group, "from": m.from, "seq": m.seq, "text": m.text,
           "sent_at": m.sent_at.get(), "outgoing": m.outgoing})
}

fn group(u: &GroupUpdate) -> Option<Rendered> {
    match u {
        GroupUpdate::Change { group, by, change } => {
            let (what, user, line) = match change {
                GroupChange::Created => ("created", None, format!("{by} created the group")),
                GroupChange::Joined => ("joined", None, "you are in the group".to_owned()),
                GroupChange::Added(u) => ("added", Some(u), format!("{by} added {u}")),
                GroupChange::Left(u) => ("left", Some(u), format!("{u} left")),
                GroupChange::Removed(u) => ("removed", Some(u), format!("{by} removed {u}")),
                GroupChange::Renamed(n) => ("renamed", None, format!("{by} renamed it {n:?}")),
                GroupChange::Admin(u) => ("admin", Some(u), format!("{by} made {u} an admin")),
            };
            let mut j = json!({"event": "group_change", "change": what, "by": by,
                               "group": group.id, "name": group.name, "members": group.members,
                               "admins": group.admins, "joined": group.joined});
            if let Some(u) = user {
                j["user"] = json!(u);
            }
            r(j, format!("group {} ({}): {line}", group.name, group.id))
        }
        GroupUpdate::Message(m) => {
            let mut j = group_message_json(m);
            j["event"] = json!("group_message");
            r(
                j,
                format!("[{}] {} #{}: {}", m.group, m.from, m.seq, m.text),
            )
        }
        GroupUpdate::Acked { group, seq, by } => r(
            json!({"event": "group_acked", "group": group, "seq": seq, "by": by}),
            format!("[{group}] {by} has our #{seq}"),
        ),
        GroupUpdate::InviteDropped { from, group } => r(
            json!({"event": "group_invite_dropped", "from": from, "group": group}),
            format!("dropped an invitation to group {group} from {from}, who is not a contact"),
        ),
        GroupUpdate::History { group, messages } => {
            let line = messages
                .iter()
                .map(|m| format!("{} {}: {}", time_ms(m.sent_at), m.from, m.text))
                .collect::<Vec<_>>()
                .join("\n");
            let list: Vec<Value> = messages.iter().map(group_message_json).collect();
            r(
                json!({"event": "group_history", "group": group.id, "name": group.name,
                       "members": group.members, "messages": list}),
                line,
            )
        }
        GroupUpdate::List(list) => {
            let line = list
                .iter()
                .map(|g| format!("{} {}: {}", g.id, g.name, g.members.join(", ")))
                .collect::<Vec<_>>()
                .join("\n");
            r(
                json!({"event": "groups", "groups": list.iter().map(group_json).collect::<Vec<_>>()}),
                line,
            )
        }
    }
}

fn conference(u: &ConferenceUpdate) -> Option<Rendered> {
    let e = match u {
        ConferenceUpdate::Changed(e) => e,
        ConferenceUpdate::Stats {
            conference,
            peer,
            stats,
        } => {
            let mut c = call_stats(0, stats)?;
            c.json["event"] = json!("conference_stats");
            c.json["conference"] = json!(call_id(*conference));
            if let Some(o) = c.json.as_object_mut() {
                o.remove("call");
            }
            c.line = format!("conference leg {peer}: {}", c.line);
            return Some(c);
        }
        ConferenceUpdate::MediaEnded { conference, stats } => {
            let s = stats.clone().unwrap_or_default();
            return r(
                json!({"event": "conference_media", "conference": call_id(*conference),
                       "frames": s.frames, "own_encodes": s.own_encodes,
                       "shared_encodes": s.shared_encodes, "bytes_sent": s.bytes_sent,
                       "bytes_received": s.bytes_received}),
                format!(
                    "conference audio stopped after {} frames ({} own and {} shared encodings)",
                    s.frames, s.own_encodes, s.shared_encodes
                ),
            );
        }
    };
    let (ty, id, extra, line): (&str, ConfId, Value, String) = match e {
        ConfEvent::Incoming {
            id,
            from,
            members,
            replaces,
        } => (
            "incoming",
            *id,
            json!({"from": from, "members": members, "replaces": (*replaces != 0).then(|| call_id(*replaces))}),
            format!(
                "{from} invites you to a conference with {}",
                members.join(", ")
            ),
        ),
        ConfEvent::Joined { id, name } => (
            "joined",
            *id,
            json!({"user": name}),
            format!("{name} joined the conference"),
        ),
        ConfEvent::Left { id, name, reason } => (
            "left",
            *id,
            json!({"user": name, "reason": reason.code()}),
            format!("{name} left the conference ({})", reason.code()),
        ),
        ConfEvent::MixerChanged {
            id,
            mixer,
            epoch,
            failover,
        } => (
            "mixer",
            *id,
            json!({"mixer": mixer, "epoch": epoch, "failover": failover}),
            format!("{mixer} mixes the conference"),
        ),
        ConfEvent::Muted { id, name, on, by } => (
            "muted",
            *id,
            json!({"user": name, "muted": on, "by": by}),
            format!("{name} {} by {by}", if *on { "muted" } else { "unmuted" }),
        ),
        ConfEvent::Levels { id, levels } => {
            let map: serde_json::Map<String, Value> =
                levels.iter().map(|(n, l)| (n.clone(), json!(l))).collect();
            let speaking: Vec<&str> = levels
                .iter()
                .filter(|(_, l)| *l >= natter::ui::model::conference::SPEAKING_LEVEL)
                .map(|(n, _)| n.as_str())
                .collect();
            (
                "levels",
                *id,
                json!({"levels": map, "speaking": speaking}),
                format!("speaking: {}", speaking.join(", ")),
            )
        }
        ConfEvent::Ended { id, reason } => (
            "ended",
            *id,
            json!({"reason": reason.code()}),
            format!("the conference ended ({})", reason.code()),
        ),
    };
    let mut json = json!({"event": "conference", "type": ty, "conference": call_id(id)});
    if let (Some(o), Value::Object(x)) = (json.as_object_mut(), extra) {
        o.extend(x);
    }
    r(json, line)
}

/// A call of the call history, as JSON.
fn call_record(c: &natter::node::api::CallRecord) -> Value {
    json!({
        "user": c.peer,
        "conference": (!c.conference.is_empty()).then_some(&c.conference),
        "direction": if c.outgoing { "outgoing" } else { "incoming" },
        "started_at": time_ms(c.started_at),
        "answered_at": c.answered_at.map(time_ms),
        "ended_at": time_ms(c.ended_at),
        "duration_ms": c.duration_ms(),
        "reason": c.reason.to_string(),
        "missed": c.missed(),
        "seen": c.seen,
    })
}

/// The schema of the `--json` events: 2 since every time is RFC 3339,
/// errors name their command and mute and hold are confirmed.
pub const SCHEMA: u32 = 2;

/// The first event (`hello`): the schema and natter's version.
pub fn hello() -> Rendered {
    let version = env!("CARGO_PKG_VERSION");
    Rendered {
        json: json!({"event": "hello", "schema": SCHEMA, "version": version, "times": "rfc3339"}),
        line: format!(
            "natter {version} headless (event schema {SCHEMA}); type `help` for the commands"
        ),
    }
}

/// The `help` event: every stdin command, as the parser takes them.
pub fn help() -> Option<Rendered> {
    let list: Vec<Value> = super::parse::GRAMMAR
        .iter()
        .map(|v| json!({"command": v.word, "usage": v.usage, "does": v.does}))
        .collect();
    let width = (super::parse::GRAMMAR.iter())
        .map(|v| v.usage.len())
        .max()
        .unwrap_or(0);
    let line = (super::parse::GRAMMAR.iter())
        .map(|v| format!("{:width$}  {}", v.usage, v.does))
        .collect::<Vec<_>>()
        .join("\n");
    r(json!({"event": "help", "commands": list}), line)
}

/// The `error` event: the command that failed (the stdin verb, or the
/// node's name for what it did by itself), a `reason` code and the text.
pub fn error(command: &str, reason: &str, message: &str) -> Option<Rendered> {
    r(
        json!({"event": "error", "command": command, "reason": reason, "error": message}),
        format!("error: {command}: {message}"),
    )
}

/// `password_wanted`: the next stdin line is read as `command`'s
/// password (`revoke-device`), for `device`.
pub fn password_wanted(command: &str, device: &str) -> Option<Rendered> {
    r(
        json!({"event": "password_wanted", "command": command, "device": device}),
        format!("{command} {device}: the account's password, on the next line"),
    )
}

/// The `devices` event: the account's devices, oldest first.
fn devices(list: &[DeviceInfo]) -> Option<Rendered> {
    let rows: Vec<Value> = list
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "name": d.name,
                "first_seen": time(d.first_seen.get()),
                "last_seen": time(d.last_seen.get()),
                "revoked_at": d.revoked_at.map(|t| time(t.get())),
                "this_device": d.this_device,
            })
        })
        .collect();
    let mut line = format!("{} devices:", list.len());
    for d in list {
        let revoked = d
            .revoked_at
            .map(|t| format!("  revoked {}", time(t.get())))
            .unwrap_or_default();
        let this = if d.this_device { "  (this device)" } else { "" };
        line.push_str(&format!(
            "\n  {}  {}  first {}  last {}{revoked}{this}",
            d.id,
            d.name,
            time(d.first_seen.get()),
            time(d.last_seen.get())
        ));
    }
    r(json!({"event": "devices", "devices": rows}), line)
}

/// A `warning` for a command typed in its old spelling.
pub fn renamed(command: &str, old: &str, new: &str) -> Option<Rendered> {
    let message = format!("`{old}` is now `{new}`; the old spelling goes in the next release");
    r(
        json!({"event": "warning", "reason": "renamed", "command": command, "message": message}),
        format!("warning: {message}"),
    )
}

fn overlay(o: &OverlayEvent) -> Option<Rendered> {
    match o {
        OverlayEvent::Attached {
            supernode,
            primary,
            observed,
        } => r(
            json!({"event": "attached", "supernode": supernode.to_string(), "primary": primary, "observed": observed.to_string()}),
            format!(
                "attached to {supernode} ({}), seen as {observed}",
                if *primary { "primary" } else { "backup" }
            ),
        ),
        OverlayEvent::Detached { supernode, reason } => r(
            json!({"event": "detached", "supernode": supernode.to_string(), "reason": reason}),
            format!("detached from {supernode}: {reason}"),
        ),
        OverlayEvent::Redirected { from, to } => r(
            json!({"event": "redirected", "from": from.to_string(), "to": addrs(to)}),
            format!("{from} is full; redirected to {} others", to.len()),
        ),
        OverlayEvent::Published { seq } => r(
            json!({"event": "published", "seq": seq}),
            format!("presence published (seq {seq})"),
        ),
        OverlayEvent::PublishRejected { seq, reason } => r(
            json!({"event": "publish_rejected", "seq": seq, "reason": reason}),
            format!("presence rejected: {reason}"),
        ),
    }
}

fn record_json(d: &DirectoryRecord) -> Value {
    json!({
        "user": d.username,
        "status": d.status.as_str(),
        "message": d.message,
        "seq": d.seq,
        "supernodes": addrs(&d.supernodes),
        "candidates": addrs(&d.candidates),
    })
}

fn lookup(user: &str, result: &LookupResult, record: Option<&DirectoryRecord>) -> Option<Rendered> {
    let (mut v, line) = match (result, record) {
        (LookupResult::Online { status, .. }, Some(d)) => {
            let mut v = record_json(d);
            v["result"] = json!("online");
            let via = format!("{:?}", d.supernodes);
            (v, format!("{user} is {} via {via}", status.name()))
        }
        (LookupResult::Offline { last_seen }, Some(d)) => {
            let mut v = record_json(d);
            v["result"] = json!("offline");
            match last_seen.or(d.last_seen) {
                Some(t) => {
                    let seen = time(t);
                    v["last_seen"] = json!(seen);
                    (v, format!("{user} is offline, last seen {seen}"))
                }
                None => (v, format!("{user} is offline")),
            }
        }
        // A record that shows its status to contacts only: no status, no
        // last seen (the time it was signed would say they are online).
        (LookupResult::Private, Some(d)) => {
            let mut v = record_json(d);
            v["result"] = json!("private");
            (v, format!("{user} exists (status shown to contacts only)"))
        }
        (LookupResult::Failed(why), _) => (
            json!({"result": "failed", "error": why}),
            format!("looking up {user} failed: {why}"),
        ),
        _ => (
            json!({"result": "not_found"}),
            format!("{user} was not found"),
        ),
    };
    v["event"] = json!("lookup");
    v["user"] = json!(user);
    r(v, line)
}

fn watched(d: &DirectoryRecord, online: bool) -> Option<Rendered> {
    let mut v = record_json(d);
    v["event"] = json!("presence");
    v["online"] = json!(online);
    let status = if online { d.status.name() } else { "offline" };
    let msg = if d.message.is_empty() {
        String::new()
    } else {
        format!(" ({})", d.message)
    };
    let seen = match d.last_seen {
        Some(t) if !online => {
            v["last_seen"] = json!(time(t));
            format!(", last seen {}", time(t))
        }
        _ => String::new(),
    };
    r(v, format!("{} is now {status}{msg}{seen}", d.username))
}

/// The `nat` event: what a NAT detection found.
fn nat(n: &NatReport) -> Value {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    json!({
        "event": "nat",
        "mapping": n.mapping.as_str(),
        "filtering": n.filtering.as_str(),
        "udp_blocked": n.udp_blocked,
        "unreachable": n.unreachable,
        "public": addr(n.public),
        "local": addr(n.local),
        "server": addr(n.server),
        "other": addr(n.other),
        "duration_ms": n.duration_ms,
        "requests": n.requests,
        "reason": n.reason,
        "notes": n.notes,
    })
}

fn relay_credentials(c: &RelayCredentials) -> Option<Rendered> {
    r(
        json!({
            "event": "relay_credentials",
            "username": c.username,
            "password": c.password,
            "realm": c.realm,
            "expires": time(c.expires),
            "relays": addrs(&c.relays),
        }),
        format!(
            "relay credentials {} until {} for {:?}",
            c.username,
            time(c.expires),
            c.relays
        ),
    )
}

fn envelope_result(id: u128, result: &EnvelopeOutcome) -> Option<Rendered> {
    let id = hex128(id);
    match result {
        EnvelopeOutcome::Delivered => r(
            json!({"event": "envelope_result", "id": id, "result": "delivered"}),
            format!("envelope {id} delivered"),
        ),
        EnvelopeOutcome::Stored => r(
            json!({"event": "envelope_result", "id": id, "result": "stored"}),
            format!("envelope {id} stored for the offline recipient"),
        ),
        EnvelopeOutcome::Failed(why) => r(
            json!({"event": "envelope_result", "id": id, "result": "failed", "error": why}),
            format!("envelope {id} failed: {why}"),
        ),
    }
}

fn path_json(p: &PeerPath) -> Value {
    json!({
        "path": if p.relay.is_some() { "relayed" } else { "direct" },
        "relay": p.relay.map(|a| a.to_string()),
        "local": p.local.to_string(),
        "local_kind": p.local_kind.name(),
        "remote": p.remote.to_string(),
        "remote_kind": p.remote_kind.name(),
    })
}

fn path_line(p: &PeerPath) -> String {
    match p.relay {
        Some(relay) => format!("relayed via {relay} to {}", p.remote),
        None => format!("direct {} -> {}", p.local, p.remote),
    }
}

fn peer(e: &PeerEvent) -> Option<Rendered> {
    match e {
        PeerEvent::IceSignal { to, data, answer } => {
            let word = if *answer { "ice_answer" } else { "ice_offer" };
            r(
                json!({"event": word, "to": to, "data": hex(data)}),
                format!("{} for {to}: {}", word.replace('_', "-"), hex(data)),
            )
        }
        PeerEvent::Connected {
            user,
            path,
            setup_ms,
        } => {
            let mut v = path_json(path);
            v["event"] = json!("peer_connected");
            v["user"] = json!(user);
            v["setup_ms"] = json!(setup_ms);
            let line = format!("connected to {user} {} in {setup_ms} ms", path_line(path));
            r(v, line)
        }
        PeerEvent::PathChanged { user, from, to } => {
            let mut v = path_json(to);
            v["event"] = json!("path_changed");
            v["user"] = json!(user);
            v["from"] = path_json(from);
            let line = format!(
                "path to {user} changed: {} -> {}",
                path_line(from),
                path_line(to)
            );
            r(v, line)
        }
        PeerEvent::Failed { user, reason } => r(
            json!({"event": "peer_failed", "user": user, "reason": reason}),
            format!("could not connect to {user}: {reason}"),
        ),
    }
}

fn message_json(m: &ChatMessage) -> Value {
    json!({
        "id": hex128(m.id),
        "outgoing": m.outgoing,
        "text": m.text,
        "sent_at": time_ms(m.sent_at),
        "acked": m.state == MessageState::Delivered,
        "read": m.state == MessageState::Read,
    })
}

fn message(m: &ChatMessage) -> Option<Rendered> {
    if m.outgoing {
        return r(
            json!({"event": "message_queued", "to": m.peer, "id": hex128(m.id)}),
            format!("message to {} queued", m.peer),
        );
    }
    let mut v = message_json(m);
    v["event"] = json!("message");
    v["from"] = json!(m.peer);
    r(v, format!("{}: {}", m.peer, m.text))
}

fn message_state(to: &str, id: u128, state: &MessageState) -> Option<Rendered> {
    let id = hex128(id);
    let (status, error, line) = match state {
        MessageState::Arrived => ("delivered", None, format!("message delivered to {to}")),
        MessageState::Stored => (
            "stored",
            None,
            format!("{to} is offline: the message waits for them"),
        ),
        MessageState::Retrying(e) => (
            "retrying",
            Some(e),
            format!("message to {to}: {e}; will retry"),
        ),
        MessageState::Delivered => {
            return r(
                json!({"event": "message_acked", "to": to, "id": id}),
                format!("{to} received the message"),
            );
        }
        MessageState::Failed(e) => (
            "failed",
            Some(e),
            format!("message to {to} failed for good: {e}"),
        ),
        MessageState::Sending | MessageState::Received | MessageState::Read => return None,
    };
    r(
        json!({"event": "message_status", "to": to, "id": id, "status": status, "error": error}),
        line,
    )
}

fn history(with: &str, messages: &[ChatMessage], unread: u64) -> Option<Rendered> {
    let line = messages
        .iter()
        .map(|m| {
            let who = if m.outgoing { "me" } else { with };
            format!("{} {who}: {}", time_ms(m.sent_at), m.text)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let list: Vec<Value> = messages.iter().map(message_json).collect();
    r(
        json!({"event": "history", "with": with, "messages": list, "unread": unread}),
        line,
    )
}

fn contact_change(c: &ContactChange) -> Option<Rendered> {
    match c {
        ContactChange::Request { from, greeting } => r(
            json!({"event": "contact_request", "from": from, "greeting": greeting}),
            format!("{from} asks to be your contact: {greeting:?} (accept {from} | refuse {from})"),
        ),
        ContactChange::RequestSent { to } => r(
            json!({"event": "contact_request_sent", "to": to}),
            format!("contact request sent to {to}"),
        ),
        ContactChange::Added { user } => r(
            json!({"event": "contact_added", "user": user}),
            format!("{user} is now a contact"),
        ),
        ContactChange::Declined { user, by_us } => r(
            json!({"event": "contact_declined", "user": user, "by_us": by_us}),
            if *by_us {
                format!("you declined {user}")
            } else {
                format!("{user} declined your request")
            },
        ),
        ContactChange::Removed { user, by_them } => r(
            json!({"event": "contact_removed", "user": user, "by_them": by_them}),
            if *by_them {
                format!("{user} removed you")
            } else {
                format!("{user} removed")
            },
        ),
        ContactChange::Blocked { user } => r(
            json!({"event": "contact_blocked", "user": user}),
            format!("{user} blocked"),
        ),
        ContactChange::Unblocked { user } => r(
            json!({"event": "contact_unblocked", "user": user}),
            format!("{user} unblocked"),
        ),
        ContactChange::Presence {
            user,
            status,
            message,
        } => r(
            json!({"event": "contact_presence", "user": user, "status": status.as_str(), "message": message}),
            format!(
                "{user} is {}{}",
                status.name(),
                if message.is_empty() {
                    String::new()
                } else {
                    format!(" ({message})")
                }
            ),
        ),
        ContactChange::Failed { user, error } => r(
            json!({"event": "contact_failed", "user": user, "error": error}),
            format!("could not reach {user}: {error}"),
        ),
    }
}

fn contact_state(s: Option<ContactState>) -> &'static str {
    match s {
        None | Some(ContactState::Blocked) => "none",
        Some(ContactState::Requested) => "requested",
        Some(ContactState::Pending) => "pending",
        Some(ContactState::Authorized) => "authorized",
        Some(ContactState::Declined) => "declined",
    }
}

fn contacts(list: &[ContactEntry]) -> Option<Rendered> {
    let v: Vec<Value> = list
        .iter()
        .map(|c| {
            json!({"user": c.username, "state": contact_state(c.state), "blocked": c.blocked,
                   "status": c.status.as_str(), "message": c.message, "greeting": c.greeting})
        })
        .collect();
    let lines: Vec<String> = list
        .iter()
        .map(|c| {
            format!(
                "{} ({}{}): {}{}",
                c.username,
                contact_state(c.state),
                if c.blocked { ", blocked" } else { "" },
                c.status.name(),
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!(" - {}", c.message)
                }
            )
        })
        .collect();
    let line = if lines.is_empty() {
        "no contacts".to_owned()
    } else {
        lines.join("\n")
    };
    r(json!({"event": "contacts", "contacts": v}), line)
}

/// A call's new state (`call_state`).
pub fn call_state(c: &CallInfo) -> Option<Rendered> {
    let (id, peer) = (call_id(c.id), c.peer.as_str());
    let (state, line) = match &c.state {
        CallState::Dialing => ("dialing", format!("calling {peer}")),
        CallState::Incoming => ("incoming", format!("incoming call from {peer}")),
        CallState::Ringing => ("ringing", format!("{peer} is ringing")),
        CallState::Connecting => ("connecting", format!("call with {peer}: connecting")),
        CallState::Active => ("active", format!("call with {peer}: active")),
        CallState::Ended { reason, detail } => {
            let mut v = json!({"event": "call_state", "state": "ended", "call": id, "peer": peer,
                "reason": reason.code(), "message": reason.to_string()});
            if let Some(d) = detail {
                v["detail"] = json!(d);
            }
            if let EndReason::AnsweredElsewhere { device } | EndReason::Moved { device } = reason {
                v["device"] = json!(device.as_str());
            }
            let why = CallState::end_text(reason, detail);
            return r(v, format!("call with {peer} ended: {why}"));
        }
    };
    let mut v = json!({"event": "call_state", "state": state, "call": id, "peer": peer});
    if c.state == CallState::Connecting {
        v["role"] = json!(if c.outgoing { "caller" } else { "callee" });
    }
    r(v, line)
}

/// Our mute, as the node applied it (`call_muted`).
pub fn call_muted(c: &CallInfo) -> Option<Rendered> {
    r(
        json!({"event": "call_muted", "call": call_id(c.id), "peer": c.peer, "muted": c.muted}),
        format!(
            "call with {}: {}",
            c.peer,
            if c.muted { "muted" } else { "unmuted" }
        ),
    )
}

/// Our hold, as the node applied it (`call_held`).
pub fn call_held(c: &CallInfo) -> Option<Rendered> {
    r(
        json!({"event": "call_held", "call": call_id(c.id), "peer": c.peer, "held": c.held}),
        format!(
            "call with {}: {}",
            c.peer,
            if c.held { "on hold" } else { "resumed" }
        ),
    )
}

/// The other side muted or held (`call_remote`).
pub fn call_remote(call: CallId, peer: &str, change: RemoteChange) -> Option<Rendered> {
    let mut v = json!({"event": "call_remote", "call": call_id(call), "peer": peer});
    let line = match change {
        RemoteChange::Muted(m) => {
            v["muted"] = json!(m);
            format!("{peer} {}", if m { "muted" } else { "unmuted" })
        }
        RemoteChange::Held(h) => {
            v["on_hold"] = json!(h);
            let what = if h {
                "put the call on hold"
            } else {
                "resumed the call"
            };
            format!("{peer} {what}")
        }
    };
    r(v, line)
}

/// A media statistics report (`call_stats`).
pub fn call_stats(call: CallId, s: &CallStats) -> Option<Rendered> {
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let m = &s.media;
    let jb = &m.jitter_buffer;
    let mut v = json!({
        "event": "call_stats",
        "call": call_id(call),
        "rtt_ms": m.rtt_ms,
        "loss_percent": r1(m.loss_percent()),
        "remote_loss_percent": r1(m.remote_loss_percent),
        "jitter_ms": r1(m.jitter_ms),
        "delay_ms": r1(jb.delay_ms.max(0.0)),
        "target_ms": r1(jb.target_ms),
        "fec_recovered": jb.fec_recovered,
        "dred_recovered": jb.dred_recovered,
        "concealed": jb.concealed,
        "late": jb.late,
        "stretched": jb.stretched,
        "accelerated_ms": r1(jb.accelerated_ms),
        "expanded_ms": r1(jb.expanded_ms),
        "packets_sent": m.packets_sent,
        "packets_received": m.packets_received,
        "mic_level": (f64::from(m.mic_level) * 100.0).round() / 100.0,
        "dropped": {
            "malformed": m.malformed,
            "auth_failed": m.auth_failed,
            "replayed": m.replayed,
        },
        "peer": s.peer,
        "sent_kbps": r1(s.sent_kbps),
        "received_kbps": r1(s.received_kbps),
        "mos": (m.quality.mos * 100.0).round() / 100.0,
        "quality_bars": m.quality.bars,
        "audio_processing": {
            "echo_cancellation": m.processing.stages.echo_cancellation,
            "noise_suppression": m.processing.stages.noise_suppression,
            "auto_gain": m.processing.stages.auto_gain,
            "erle_db": m.processing.erle_db.map(r1),
            "echo_delay_ms": m.processing.echo_delay_ms,
        },
    });
    match &s.peer_path {
        Some(p) => {
            v["path"] = json!(if p.relay.is_some() {
                "relayed"
            } else {
                "direct"
            });
            v["relay"] = json!(p.relay.map(|a| a.to_string()));
            v["remote"] = json!(p.remote.to_string());
        }
        None => v["path"] = Value::Null,
    }
    if s.last {
        v["final"] = json!(true);
    }
    let line = format!(
        "{}call with {}: rtt {} ms, loss {:.1}%, jitter {:.1} ms, delay {:.0} ms, {:.0}/{:.0} kbit/s out/in{}",
        if s.last { "final stats of the " } else { "" },
        s.peer,
        m.rtt_ms.map_or("?".to_owned(), |r| r.to_string()),
        m.loss_percent(),
        m.jitter_ms,
        jb.delay_ms.max(0.0),
        s.sent_kbps,
        s.received_kbps,
        s.peer_path
            .as_ref()
            .map(|p| format!(", {}", path_line(p)))
            .unwrap_or_default()
    );
    r(v, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter::node::api::{EndReason, ErrorReason, Status};

    #[test]
    fn devices_and_revocations_render_as_the_readme_says() {
        use natter::node::api::AccountRefusal;
        use natter::time::UnixSecs;
        let list = vec![
            DeviceInfo {
                id: "0123456789abcdef".into(),
                name: "laptop".into(),
                first_seen: UnixSecs(60),
                last_seen: UnixSecs(120),
                revoked_at: None,
                this_device: true,
            },
            DeviceInfo {
                id: "fedcba9876543210".into(),
                name: "phone".into(),
                first_seen: UnixSecs(60),
                last_seen: UnixSecs(61),
                revoked_at: Some(UnixSecs(180)),
                this_device: false,
            },
        ];
        let v = event(&Event::Devices(list)).unwrap();
        assert_eq!(
            v.json["devices"][0],
            json!({"id": "0123456789abcdef", "name": "laptop", "first_seen": "1970-01-01T00:01:00Z", "last_seen": "1970-01-01T00:02:00Z", "revoked_at": null, "this_device": true})
        );
        assert_eq!(v.json["devices"][1]["revoked_at"], "1970-01-01T00:03:00Z");
        assert_eq!(v.line.lines().count(), 3);
        assert!(v.line.contains("laptop") && v.line.contains("(this device)"));
        assert!(v.line.contains("revoked 1970-01-01T00:03:00Z"));
        let v = event(&Event::DeviceRevoked {
            device: "fedc".into(),
            message: "phone revoked".into(),
        })
        .unwrap();
        assert_eq!(
            v.json,
            json!({"event": "device_revoked", "device": "fedc", "message": "phone revoked"})
        );
        // A refusal names the verb typed and its case.
        let e = event(&Event::Error {
            command: "revoke device".into(),
            reason: ErrorReason::Account(AccountRefusal::WrongPassword),
            message: "wrong password".into(),
        })
        .unwrap();
        assert_eq!(e.json["command"], "revoke-device");
        assert_eq!(e.json["reason"], "wrong_password");
        let p = password_wanted("revoke-device", "fedc").unwrap();
        assert_eq!(p.json["event"], "password_wanted");
    }

    #[test]
    fn lookups_render_as_the_readme_says() {
        let d = DirectoryRecord {
            username: "bob".into(),
            status: Status::Away,
            message: "out".into(),
            seq: 3,
            supernodes: vec!["127.0.0.1:1".parse().unwrap()],
            candidates: vec![],
            last_seen: Some(0),
        };
        let online = LookupResult::Online {
            status: Status::Away,
            message: "out".into(),
        };
        let v = lookup("bob", &online, Some(&d)).unwrap().json;
        assert_eq!(v["result"], "online");
        assert_eq!(v["supernodes"][0], "127.0.0.1:1");
        assert_eq!(v["status"], "away");
        // Status shown to contacts only: no last seen (it was "now").
        let hidden = DirectoryRecord {
            status: Status::Invisible,
            last_seen: None,
            ..d.clone()
        };
        let v = lookup("bob", &LookupResult::Private, Some(&hidden))
            .unwrap()
            .json;
        assert_eq!(v["result"], "private");
        assert!(v.get("last_seen").is_none(), "{v}");
        let offline = LookupResult::Offline { last_seen: Some(0) };
        let v = lookup("bob", &offline, Some(&d)).unwrap().json;
        assert_eq!(v["result"], "offline");
        assert_eq!(v["last_seen"], "1970-01-01T00:00:00Z");
        let v = lookup("x", &LookupResult::NotFound, None).unwrap().json;
        assert_eq!(
            v,
            json!({"event": "lookup", "user": "x", "result": "not_found"})
        );
    }

    #[test]
    fn calls_render_their_states_and_reasons() {
        let mut c = CallInfo {
            id: 0xab,
            peer: "bob".into(),
            outgoing: true,
            state: CallState::Connecting,
            muted: false,
            held: false,
            remote_held: false,
            answered_at: None,
        };
        let v = call_state(&c).unwrap().json;
        assert_eq!(v["call"], "00000000000000ab");
        assert_eq!(v["role"], "caller");
        c.state = CallState::Ended {
            reason: EndReason::HungUp { by_us: true },
            detail: None,
        };
        let v = call_state(&c).unwrap().json;
        assert_eq!(v["reason"], "hung_up");
        assert_eq!(v["message"], "you hung up");
        assert!(v.get("detail").is_none());
        let v = call_remote(0xab, "bob", RemoteChange::Held(true))
            .unwrap()
            .json;
        assert_eq!(v["on_hold"], true);
        c.state = CallState::Ended {
            reason: EndReason::Busy,
            detail: Some("bob is offline".into()),
        };
        let v = call_state(&c).unwrap().json;
        assert_eq!(v["reason"], "busy");
        assert_eq!(v["detail"], "bob is offline");
        assert!(v.get("device").is_none());
        // Issue 17: answered on another device of ours, which it names.
        c.state = CallState::Ended {
            reason: EndReason::AnsweredElsewhere {
                device: natter::node::api::DeviceName::new("alice-laptop"),
            },
            detail: None,
        };
        let r = call_state(&c).unwrap();
        assert_eq!(r.json["reason"], "answered_elsewhere");
        assert_eq!(r.json["device"], "alice-laptop");
        assert_eq!(r.json["message"], "answered on alice-laptop");
        assert_eq!(r.line, "call with bob ended: answered on alice-laptop");
        let s = CallStats {
            peer: "bob".into(),
            last: true,
            media: Box::new(natter::node::api::MediaStats {
                rtt_ms: Some(12),
                mic_level: 0.456,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = call_stats(0xab, &s).unwrap().json;
        assert_eq!(v["final"], true);
        assert_eq!(v["rtt_ms"], 12);
        assert_eq!(v["mic_level"], 0.46);
        assert!(v["path"].is_null() && v.get("relay").is_none());
    }

    #[test]
    fn schema_2_hello_errors_times_and_confirmations() {
        let h = hello();
        assert_eq!(h.json["event"], "hello");
        assert_eq!(h.json["schema"], SCHEMA);
        assert_eq!(h.json["version"], env!("CARGO_PKG_VERSION"));
        assert!(h.line.contains("(event schema 2)"), "{}", h.line);
        // The node's name for a command becomes the verb a script typed.
        let e = event(&Event::Error {
            command: "decline contact".into(),
            reason: ErrorReason::Failed,
            message: "no request from bob".into(),
        })
        .unwrap();
        assert_eq!(
            e.json,
            json!({"event": "error", "command": "refuse", "reason": "failed", "error": "no request from bob"})
        );
        assert_eq!(e.line, "error: refuse: no request from bob");
        // A group rule's refusal names the rule.
        let e = event(&Event::Error {
            command: "group remove".into(),
            reason: ErrorReason::Group(natter::group::Refusal::NotAdmin),
            message: "only the group's admins may do that".into(),
        })
        .unwrap();
        assert_eq!(
            e.json,
            json!({"event": "error", "command": "group", "reason": "not_admin", "error": "only the group's admins may do that"})
        );
        let c = RelayCredentials {
            username: "1:alice".into(),
            password: "p".into(),
            realm: "natter".into(),
            expires: 86_400,
            relays: vec![],
        };
        let v = event(&Event::RelayCredentials(c)).unwrap().json;
        assert_eq!(v["expires"], "1970-01-02T00:00:00Z");
        // A watched user who went offline: when they were last seen.
        let d = DirectoryRecord {
            username: "bob".into(),
            status: Status::Offline,
            message: String::new(),
            seq: 4,
            supernodes: vec![],
            candidates: vec![],
            last_seen: Some(60),
        };
        let v = watched(&d, false).unwrap();
        assert_eq!(v.json["last_seen"], "1970-01-01T00:01:00Z");
        assert!(
            v.line.ends_with("last seen 1970-01-01T00:01:00Z"),
            "{}",
            v.line
        );
        assert!(watched(&d, true).unwrap().json.get("last_seen").is_none());
        let mut info = CallInfo {
            id: 1,
            peer: "bob".into(),
            outgoing: true,
            state: CallState::Active,
            muted: true,
            held: false,
            remote_held: false,
            answered_at: Some(UnixMillis(1_000)),
        };
        let v = call_muted(&info).unwrap().json;
        assert_eq!(
            v,
            json!({"event": "call_muted", "call": "0000000000000001", "peer": "bob", "muted": true})
        );
        info.held = true;
        assert_eq!(call_held(&info).unwrap().json["held"], true);
        let rec = natter::node::api::CallRecord {
            peer: "bob".into(),
            outgoing: false,
            started_at: UnixMillis(1_000),
            answered_at: Some(UnixMillis(2_000)),
            ended_at: UnixMillis(4_500),
            reason: EndReason::HungUp { by_us: false },
            seen: true,
            conference: Vec::new(),
        };
        let v = event(&Event::CallLogged(rec)).unwrap().json;
        assert_eq!(v["duration_ms"], 2_500);
        assert!(v["conference"].is_null());
        assert_eq!(v["answered_at"], "1970-01-01T00:00:02Z");
        assert!(v.get("duration_s").is_none());
        let w = renamed("decline", "decline USER", "refuse USER").unwrap();
        assert_eq!(w.json["reason"], "renamed");
        assert_eq!(w.json["command"], "decline");
        let h = help().unwrap();
        assert_eq!(
            h.json["commands"].as_array().map(Vec::len),
            Some(super::super::parse::GRAMMAR.len())
        );
        assert!(
            h.line.lines().any(|l| l.starts_with("refuse USER")),
            "{}",
            h.line
        );
    }

    #[test]
    fn screen_state_renders_as_nothing() {
        assert!(event(&Event::Stopped).is_none());
        assert!(
            event(&Event::Contact {
                username: "bob".into(),
                state: ContactState::Authorized
            })
            .is_none()
        );
        let e = event(&Event::MessageState {
            peer: "bob".into(),
            id: 1,
            state: MessageState::Delivered,
        })
        .unwrap();
        assert_eq!(
            e.json,
            json!({"event": "message_acked", "to": "bob", "id": "00000000000000000000000000000001"})
        );
    }
}
