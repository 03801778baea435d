//! Calls for the node API ([`crate::node::api`]): translates the front end's
//! call commands into the client driver's ([`CallCommand`])
//! and the driver's [`CallUpdate`]s into [`Event::Call`] and
//! [`Event::CallStats`], keeping the one piece of state the API shows and
//! the driver does not: each call's [`CallInfo`] (direction, our mute and
//! hold, when it was answered). The client runtime (`node::client`) holds
//! one and wires it in at its call seam.

use crate::call::{CallEvent, CallId};
use crate::ice::{Path, PathKind};
use crate::media::MediaStats;
use crate::node::api::{
    self, CallInfo, CallRecord, CallState, CallStats, ConferenceUpdate, Event, MediaPath,
    RemoteChange,
};
use crate::node::calls::conference::{ConfCommand, ConfUpdate};
use crate::node::calls::{Bitrate, CallCommand, CallUpdate};
use std::collections::{HashMap, HashSet};

/// The calls the API reports, by id (ended calls are dropped).
#[derive(Debug, Default)]
pub struct ApiCalls {
    calls: HashMap<CallId, CallInfo>,
    /// Ended calls whose final stats report has not come yet.
    ended: HashSet<CallId>,
    /// When each call was dialled or began to ring (Unix ms), for its
    /// record in the call history.
    started: HashMap<CallId, u64>,
}

impl ApiCalls {
    pub fn new() -> Self {
        Self::default()
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

    /// The API events of a driver update; `now_unix_ms` stamps answers.
    pub fn update(&mut self, u: &CallUpdate, now_unix_ms: u64) -> Vec<Event> {
        match u {
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
                self.started.insert(*id, now_unix_ms);
                let i = fresh(*id, peer, true, CallState::Dialing);
                self.calls.insert(*id, i.clone());
                vec![Event::Call(i)]
            }
            CallUpdate::State {
                event,
                peer,
                detail,
            } => self.state(event, peer, detail, now_unix_ms),
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
        now_unix_ms: u64,
    ) -> Vec<Event> {
        if let CallEvent::Incoming { id, peer } = event {
            self.started.insert(*id, now_unix_ms);
            let i = fresh(*id, peer, false, CallState::Incoming);
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
                i.answered_at.get_or_insert(now_unix_ms);
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
                    started_at: self.started.remove(&id).unwrap_or(now_unix_ms),
                    answered_at: i.answered_at,
                    ended_at: now_unix_ms,
                    reason: *reason,
                    seen: false,
                };
                return vec![Event::Call(i), Event::CallLogged(record)];
            }
            CallEvent::Incoming { .. } => {}
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
            0,
        );
        assert!(matches!(&ev[..], [Event::Call(i)] if i.outgoing && i.state == CallState::Dialing));
        a.update(&state(CallEvent::Ringing { id: 7 }), 0);
        assert_eq!(a.get(7).unwrap().state, CallState::Ringing);
        a.update(&state(CallEvent::Active { id: 7 }), 1234);
        assert_eq!(a.get(7).unwrap().answered_at, Some(1234));
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
        assert!(matches!(&a.update(&muted, 0)[..], [Event::Call(i)] if i.muted && !i.held));
        assert!(a.update(&muted, 0).is_empty());
        let held = CallUpdate::Held { id: 7, held: true };
        assert!(matches!(&a.update(&held, 0)[..], [Event::Call(i)] if i.muted && i.held));
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
            &a.update(&stats, 0)[..],
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
            0,
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
        assert!(a.update(&stats, 0).is_empty());
        let last = CallUpdate::Stats {
            id: 7,
            peer: "bob".into(),
            stats: Box::default(),
            path: None,
            bitrate: Default::default(),
            last: true,
        };
        assert!(matches!(&a.update(&last, 0)[..], [Event::CallStats { stats, .. }] if stats.last));
        assert!(a.update(&last, 0).is_empty());
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
            0,
        );
        assert!(
            matches!(&ev[..], [Event::Call(i)] if !i.outgoing && i.peer == "alice" && i.state == CallState::Incoming)
        );
        let cmd = a.command(&api::Command::AcceptCall { call: 9 }).unwrap();
        assert!(matches!(cmd, CallCommand::Accept { call: Some(9) }));
    }
}
