//! Calls for the node API ([`crate::node::api`]): translates the front end's
//! call commands into the client driver's ([`CallCommand`])
//! and the driver's [`CallUpdate`]s into [`Event::Call`] and
//! [`Event::CallStats`], keeping the one piece of state the API shows and
//! the driver does not: each call's [`CallInfo`] (direction, our mute and
//! hold, when it was answered). The client runtime (`node::client`) holds
//! one and wires it in at its call seam.

use crate::call::{CallEvent, CallId, EndReason};
use crate::conference::ConfEvent;
use crate::ice::{Path, PathKind};
use crate::media::MediaStats;
use crate::node::api::{
    self, CallInfo, CallRecord, CallState, CallStats, ConferenceUpdate, Event, MediaPath,
    RemoteChange,
};
use crate::node::calls::conference::{ConfCommand, ConfUpdate};
use crate::node::calls::{Bitrate, CallCommand, CallUpdate};
use crate::time::UnixMillis;
use std::collections::{HashMap, HashSet};

/// The calls the API reports, by id (ended calls are dropped).
#[derive(Debug, Default)]
pub struct ApiCalls {
    calls: HashMap<CallId, CallInfo>,
    /// Ended calls whose final stats report has not come yet.
    ended: HashSet<CallId>,
    /// When each call was dialled or began to ring, for its record in
    /// the call history.
    started: HashMap<CallId, UnixMillis>,
    /// Our username (to leave ourselves out of a conference's record).
    me: String,
    /// The conference under way, for its record in the call history
    /// (one at a time, as the driver runs one).
    conf: Option<ConfLog>,
}

/// What the call history needs of a conference while it runs.
#[derive(Debug)]
struct ConfLog {
    id: crate::conference::ConfId,
    /// We started it (not invited).
    outgoing: bool,
    started_at: UnixMillis,
    /// When we joined (an invitation never accepted: `None`).
    joined_at: Option<UnixMillis>,
    /// Everyone else who was in it, in order of appearance (the inviter
    /// first), at most [`crate::conference::MAX_PARTICIPANTS`] kept.
    members: Vec<String>,
}

impl ApiCalls {
    pub fn new() -> Self {
        Self::default()
    }

    /// Our username, once logged in.
    pub fn set_me(&mut self, me: &str) {
        self.me = me.to_ascii_lowercase();
    }

    /// Follow a conference's events for its call-history record: the
    /// record once it ended.
    fn conference_log(&mut self, e: &ConfEvent, unix: UnixMillis) -> Option<CallRecord> {
        let add = |l: &mut ConfLog, me: &str, name: &str| {
            if name != me
                && !l.members.iter().any(|m| m == name)
                && l.members.len() < crate::conference::MAX_PARTICIPANTS
            {
                l.members.push(name.to_owned());
            }
        };
        match e {
            ConfEvent::Incoming {
                id, from, members, ..
            } => {
                let mut l = ConfLog {
                    id: *id,
                    outgoing: false,
                    started_at: unix,
                    joined_at: None,
                    members: Vec::new(),
                };
                add(&mut l, &self.me, from);
                for m in members {
                    add(&mut l, &self.me, m);
                }
                self.conf = Some(l);
            }
            ConfEvent::Joined { id, name } => {
                let l = match &mut self.conf {
                    Some(l) if l.id == *id => l,
                    // Our own first Joined: a conference we started.
                    _ => self.conf.insert(ConfLog {
                        id: *id,
                        outgoing: true,
                        started_at: unix,
                        joined_at: Some(unix),
                        members: Vec::new(),
                    }),
                };
                if *name == self.me {
                    l.joined_at.get_or_insert(unix);
                } else if l.joined_at.is_some() || !l.outgoing {
                    add(l, &self.me, name);
                }
            }
            ConfEvent::Ended { id, reason } => {
                let l = self.conf.take_if(|l| l.id == *id)?;
                let reason = match (reason, l.joined_at) {
                    (_, None) => EndReason::Declined { by_us: true },
                    (crate::conference::ConfEndReason::Left, _) => {
                        EndReason::HungUp { by_us: true }
                    }
                    (crate::conference::ConfEndReason::Alone, _) => {
                        EndReason::HungUp { by_us: false }
                    }
                };
                return Some(CallRecord {
                    peer: l.members.first().cloned().unwrap_or_default(),
                    outgoing: l.outgoing,
                    started_at: l.started_at,
                    answered_at: l.joined_at,
                    ended_at: unix,
                    reason,
                    seen: true,
                    conference: l.members,
                });
            }
            _ => {}
        }
        None
    }

    #[cfg(test)]
    pub fn get(&self, id: CallId) -> Option<&CallInfo> {
        self.calls.get(&id)
    }

    /// The driver command for an API call command (`None`: not a call
    /// command). Mute and hold change the call as shown once the driver
    /// says it applied them ([`CallUpdate::Muted`], [`CallUpdate::Held`]).
    pub fn command(&self, c: &api::Command) -> Option<CallCommand> {
        let n = match c {
            api::Command::Call { username } => CallCommand::Call {
                username: username.clone(),
                reply: None,
            },
            api::Command::AcceptCall { call } => CallCommand::Accept { call: Some(*call) },
            api::Command::DeclineCall { call } => CallCommand::Decline { call: Some(*call) },
            api::Command::HangUp { call } => CallCommand::HangUp { call: Some(*call) },
            api::Command::Mute { call, muted } => CallCommand::Mute {
                call: Some(*call),
                on: Some(*muted),
            },
            api::Command::Hold { call, held } => CallCommand::Hold {
                call: Some(*call),
                on: Some(*held),
            },
            api::Command::TakeCall => CallCommand::Take { reply: None },
            api::Command::ConferenceStart { users } => {
                CallCommand::Conference(ConfCommand::Start {
                    users: users.clone(),
                })
            }
            api::Command::ConferenceAdd { username } => CallCommand::Conference(ConfCommand::Add {
                user: username.trim().to_ascii_lowercase(),
            }),
            api::Command::ConferenceAccept => CallCommand::Conference(ConfCommand::Accept),
            api::Command::ConferenceLeave => CallCommand::Conference(ConfCommand::Leave),
            api::Command::ConferenceMute { muted } => {
                CallCommand::Conference(ConfCommand::Mute { on: *muted })
            }
            api::Command::ConferenceMuteOther { username, muted } => {
                CallCommand::Conference(ConfCommand::MuteOther {
                    user: username.trim().to_ascii_lowercase(),
                    on: *muted,
                })
            }
            _ => return None,
        };
        Some(n)
    }

    /// The API events of a driver update; `unix` (the wall clock) stamps
    /// answers and the call history.
    pub fn update(&mut self, u: &CallUpdate, unix: UnixMillis) -> Vec<Event> {
        match u {
            CallUpdate::Conference(ConfUpdate::Event(e)) => {
                let mut v = vec![Event::Conference(ConferenceUpdate::Changed(e.clone()))];
                v.extend(self.conference_log(e, unix).map(Event::CallLogged));
                v
            }
            CallUpdate::Conference(c) => vec![Event::Conference(match c {
                ConfUpdate::Event(e) => ConferenceUpdate::Changed(e.clone()),
                ConfUpdate::Stats {
                    id,
                    peer,
                    stats,
                    path,
                } => ConferenceUpdate::Stats {
                    conference: *id,
                    peer: peer.clone(),
                    stats: Box::new(call_stats(
                        peer,
                        stats,
                        path.as_ref(),
                        Bitrate::default(),
                        false,
                    )),
                },
                ConfUpdate::MediaEnded { id, stats } => ConferenceUpdate::MediaEnded {
                    conference: *id,
                    stats: stats.clone(),
                },
            })],
            CallUpdate::Dialing { id, peer } => {
                self.started.insert(*id, unix);
                let i = fresh(*id, peer, true, CallState::Dialing);
                self.calls.insert(*id, i.clone());
                vec![Event::Call(i)]
            }
            CallUpdate::State {
                event,
                peer,
                detail,
            } => self.state(event, peer, detail, unix),
            CallUpdate::Muted { id, muted } => self.set(*id, |i| i.muted = *muted),
            CallUpdate::Held { id, held } => self.set(*id, |i| i.held = *held),
            CallUpdate::Stats {
                id,
                peer,
                stats,
                path,
                bitrate,
                last,
            } => {
                // The final report comes after the end.
                let known = self.calls.contains_key(id) || (*last && self.ended.remove(id));
                if !known {
                    return Vec::new();
                }
                vec![Event::CallStats {
                    call: *id,
                    stats: call_stats(peer, stats, path.as_ref(), *bitrate, *last),
                }]
            }
        }
    }

    /// A change of our side of a call (mute, hold), shown when it changes.
    fn set(&mut self, id: CallId, f: impl Fn(&mut CallInfo)) -> Vec<Event> {
        let Some(i) = self.calls.get_mut(&id) else {
            return Vec::new();
        };
        let before = i.clone();
        f(i);
        if *i == before {
            return Vec::new();
        }
        vec![Event::Call(i.clone())]
    }

    /// A state change from call signalling.
    fn state(
        &mut self,
        event: &CallEvent,
        peer: &str,
        detail: &Option<String>,
        unix: UnixMillis,
    ) -> Vec<Event> {
        if let CallEvent::Incoming { id, peer } = event {
            self.started.insert(*id, unix);
            let i = fresh(*id, peer, false, CallState::Incoming);
            self.calls.insert(*id, i.clone());
            return vec![Event::Call(i)];
        }
        if let CallEvent::OnOtherDevice {
            id,
            peer,
            device,
            on,
        } = event
        {
            return vec![Event::CallElsewhere {
                call: *id,
                peer: peer.clone(),
                device: device.to_string(),
                on: *on,
            }];
        }
        // The peer's other device takes our call over: a call of its own
        // from now, in the direction of the one it replaces.
        if let CallEvent::Replacing {
            id, peer, replaces, ..
        } = event
        {
            let outgoing = self.calls.get(replaces).is_some_and(|c| c.outgoing);
            self.started.insert(*id, unix);
            let i = fresh(*id, peer, outgoing, CallState::Connecting);
            self.calls.insert(*id, i.clone());
            return vec![Event::Call(i)];
        }
        let id = event.id();
        let Some(i) = self.calls.get_mut(&id) else {
            tracing::debug!(call = id, %peer, "update for a call the API never saw");
            return Vec::new();
        };
        match event {
            CallEvent::Ringing { .. } => i.state = CallState::Ringing,
            CallEvent::Connected { .. } => i.state = CallState::Connecting,
            CallEvent::Active { .. } => {
                i.state = CallState::Active;
                i.answered_at.get_or_insert(unix);
            }
            CallEvent::RemoteHold { on_hold, .. } => {
                i.remote_held = *on_hold;
                return vec![
                    Event::CallRemote {
                        call: id,
                        change: RemoteChange::Held(*on_hold),
                    },
                    Event::Call(i.clone()),
                ];
            }
            CallEvent::RemoteMute { muted, .. } => {
                return vec![Event::CallRemote {
                    call: id,
                    change: RemoteChange::Muted(*muted),
                }];
            }
            CallEvent::Ended { reason, .. } => {
                i.state = CallState::Ended {
                    reason: *reason,
                    detail: detail.clone(),
                };
                let i = self.calls.remove(&id).unwrap_or_else(|| unreachable!());
                self.ended.insert(id);
                let record = CallRecord {
                    peer: i.peer.clone(),
                    outgoing: i.outgoing,
                    started_at: self.started.remove(&id).unwrap_or(unix),
                    answered_at: i.answered_at,
                    ended_at: unix,
                    reason: *reason,
                    seen: false,
                    conference: Vec::new(),
                };
                return vec![Event::Call(i), Event::CallLogged(record)];
            }
            CallEvent::Incoming { .. }
            | CallEvent::Replacing { .. }
            | CallEvent::OnOtherDevice { .. } => {}
        }
        vec![Event::Call(i.clone())]
    }
}

/// A call as the API first shows it.
fn fresh(id: CallId, peer: &str, outgoing: bool, state: CallState) -> CallInfo {
    CallInfo {
        id,
        peer: peer.to_owned(),
        outgoing,
        state,
        muted: false,
        held: false,
        remote_held: false,
        answered_at: None,
    }
}

/// A stats report as the API shows it.
fn call_stats(
    peer: &str,
    stats: &MediaStats,
    path: Option<&Path>,
    bitrate: Bitrate,
    last: bool,
) -> CallStats {
    let media_path = match path {
        None => MediaPath::Unknown,
        Some(p) => match p.kind() {
            PathKind::Direct => MediaPath::Direct { remote: p.remote },
            PathKind::Relayed { relay } => MediaPath::Relayed { supernode: relay },
        },
    };
    CallStats {
        rtt_ms: stats.rtt_ms,
        loss_pct: stats.loss_percent() as f32,
        jitter_ms: stats.jitter_ms as f32,
        mic_level: stats.mic_level,
        path: media_path,
        codec: "Opus 48 kHz".to_owned(),
        packets_sent: stats.packets_sent,
        packets_received: stats.packets_received,
        peer: peer.to_owned(),
        media: Box::new(stats.clone()),
        sent_kbps: bitrate.sent_kbps,
        received_kbps: bitrate.received_kbps,
        peer_path: path.map(super::report::peer_path),
        last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::EndReason;
    use crate::media::MediaStats;

    fn conf(a: &mut ApiCalls, e: ConfEvent, unix: u64) -> Option<CallRecord> {
        let ev = a.update(
            &CallUpdate::Conference(ConfUpdate::Event(e)),
            UnixMillis(unix),
        );
        assert!(matches!(ev[0], Event::Conference(_)));
        ev.into_iter().find_map(|e| match e {
            Event::CallLogged(r) => Some(r),
            _ => None,
        })
    }

    #[test]
    fn conferences_are_logged_with_their_members() {
        use crate::conference::{ConfEndReason, LeftReason};
        let mut a = ApiCalls::new();
        a.set_me("Ann");
        let joined = |name: &str| ConfEvent::Joined {
            id: 5,
            name: name.into(),
        };
        // We start one; bob joins, cat is busy, bob leaves: "alone".
        assert!(conf(&mut a, joined("ann"), 1_000).is_none());
        assert!(conf(&mut a, joined("bob"), 2_000).is_none());
        let busy = ConfEvent::Left {
            id: 5,
            name: "cat".into(),
            reason: LeftReason::Busy,
        };
        assert!(conf(&mut a, busy, 2_000).is_none());
        let end = |reason| ConfEvent::Ended { id: 5, reason };
        let r = conf(&mut a, end(ConfEndReason::Alone), 61_000).unwrap();
        assert!(r.outgoing && !r.missed());
        assert_eq!(r.with_whom(), "conference with bob");
        assert_eq!((r.started_at, r.duration_ms()), (UnixMillis(1_000), 60_000));
        assert_eq!(r.reason, EndReason::HungUp { by_us: false });
        // Invited by dan with eve; we join, fay joins, we leave.
        let inc = ConfEvent::Incoming {
            id: 6,
            from: "dan".into(),
            members: vec!["dan".into(), "eve".into()],
            replaces: 0,
        };
        assert!(conf(&mut a, inc, 100_000).is_none());
        for n in ["dan", "eve", "ann", "fay"] {
            let j = ConfEvent::Joined {
                id: 6,
                name: n.into(),
            };
            assert!(conf(&mut a, j, 105_000).is_none());
        }
        // Another conference's end is not this one's.
        assert!(conf(&mut a, end(ConfEndReason::Left), 110_000).is_none());
        let left = ConfEvent::Ended {
            id: 6,
            reason: ConfEndReason::Left,
        };
        let r = conf(&mut a, left, 165_000).unwrap();
        assert!(!r.outgoing);
        assert_eq!(r.peer, "dan");
        assert_eq!(r.with_whom(), "conference with dan, eve, fay");
        assert_eq!(r.answered_at, Some(UnixMillis(105_000)));
        assert_eq!(r.reason, EndReason::HungUp { by_us: true });
    }

    fn state(event: CallEvent) -> CallUpdate {
        CallUpdate::State {
            event,
            peer: "bob".into(),
            detail: None,
        }
    }

    #[test]
    fn an_outgoing_call_through_its_states() {
        let mut a = ApiCalls::new();
        let ev = a.update(
            &CallUpdate::Dialing {
                id: 7,
                peer: "bob".into(),
            },
            UnixMillis::ZERO,
        );
        assert!(matches!(&ev[..], [Event::Call(i)] if i.outgoing && i.state == CallState::Dialing));
        a.update(&state(CallEvent::Ringing { id: 7 }), UnixMillis::ZERO);
        assert_eq!(a.get(7).unwrap().state, CallState::Ringing);
        a.update(&state(CallEvent::Active { id: 7 }), UnixMillis(1234));
        assert_eq!(a.get(7).unwrap().answered_at, Some(UnixMillis(1234)));
        // Mute becomes the driver's command; it shows once the driver
        // applied it, and once.
        let cmd = a
            .command(&api::Command::Mute {
                call: 7,
                muted: true,
            })
            .unwrap();
        assert!(matches!(
            cmd,
            CallCommand::Mute {
                call: Some(7),
                on: Some(true)
            }
        ));
        assert!(!a.get(7).unwrap().muted);
        let muted = CallUpdate::Muted { id: 7, muted: true };
        assert!(
            matches!(&a.update(&muted, UnixMillis::ZERO)[..], [Event::Call(i)] if i.muted && !i.held)
        );
        assert!(a.update(&muted, UnixMillis::ZERO).is_empty());
        let held = CallUpdate::Held { id: 7, held: true };
        assert!(
            matches!(&a.update(&held, UnixMillis::ZERO)[..], [Event::Call(i)] if i.muted && i.held)
        );
        let stats = CallUpdate::Stats {
            id: 7,
            peer: "bob".into(),
            stats: Box::new(MediaStats {
                rtt_ms: Some(12),
                ..Default::default()
            }),
            path: None,
            bitrate: Default::default(),
            last: false,
        };
        assert!(matches!(
            &a.update(&stats, UnixMillis::ZERO)[..],
            [Event::CallStats { call: 7, stats }] if stats.rtt_ms == Some(12)
        ));
        let ev = a.update(
            &CallUpdate::State {
                event: CallEvent::Ended {
                    id: 7,
                    reason: EndReason::Busy,
                },
                peer: "bob".into(),
                detail: None,
            },
            UnixMillis::ZERO,
        );
        assert!(matches!(
            &ev[..],
            [Event::Call(CallInfo {
                state: CallState::Ended {
                    reason: EndReason::Busy,
                    detail: None
                },
                ..
            }), Event::CallLogged(r)]
            if r.outgoing && r.peer == "bob" && r.reason == EndReason::Busy
        ));
        assert!(a.get(7).is_none());
        // Updates of calls the API does not know are dropped; the final
        // report of an ended call comes once.
        assert!(a.update(&stats, UnixMillis::ZERO).is_empty());
        let last = CallUpdate::Stats {
            id: 7,
            peer: "bob".into(),
            stats: Box::default(),
            path: None,
            bitrate: Default::default(),
            last: true,
        };
        assert!(
            matches!(&a.update(&last, UnixMillis::ZERO)[..], [Event::CallStats { stats, .. }] if stats.last)
        );
        assert!(a.update(&last, UnixMillis::ZERO).is_empty());
        assert!(a.command(&api::Command::Quit).is_none());
    }

    #[test]
    fn an_incoming_call_is_shown_as_incoming() {
        let mut a = ApiCalls::new();
        let ev = a.update(
            &state(CallEvent::Incoming {
                id: 9,
                peer: "alice".into(),
            }),
            UnixMillis::ZERO,
        );
        assert!(
            matches!(&ev[..], [Event::Call(i)] if !i.outgoing && i.peer == "alice" && i.state == CallState::Incoming)
        );
        let cmd = a.command(&api::Command::AcceptCall { call: 9 }).unwrap();
        assert!(matches!(cmd, CallCommand::Accept { call: Some(9) }));
    }
}
