//! Calls for the node API ([`super::api`]): translates the front end's
//! call commands into the overlay driver's ([`super::overlay::Command`])
//! and the driver's [`CallUpdate`]s into [`Event::Call`] and
//! [`Event::CallStats`], keeping the one piece of state the API shows and
//! the driver does not: each call's [`CallInfo`] (direction, our mute and
//! hold, when it was answered). The client runtime (`node::client`) holds
//! one and wires it in at its call seam.

use super::api::{self, CallInfo, CallState, CallStats, Event, MediaPath};
use super::calls::CallUpdate;
use super::overlay::Command as NodeCommand;
use crate::call::{CallEvent, CallId};
use crate::ice::PathKind;
use std::collections::HashMap;

/// The calls the API reports, by id (ended calls are dropped).
#[derive(Debug, Default)]
pub struct ApiCalls {
    calls: HashMap<CallId, CallInfo>,
}

impl ApiCalls {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, id: CallId) -> Option<&CallInfo> {
        self.calls.get(&id)
    }

    /// The driver command for an API call command (`None`: not a call
    /// command), and the call as it now shows when the command changes
    /// what the API reports (mute, hold).
    pub fn command(&mut self, c: &api::Command) -> Option<(NodeCommand, Option<Event>)> {
        let mut shown = None;
        let mut set = |id: CallId, f: &dyn Fn(&mut CallInfo)| {
            if let Some(i) = self.calls.get_mut(&id) {
                f(i);
                shown = Some(Event::Call(i.clone()));
            }
        };
        let n = match c {
            api::Command::Call { username } => NodeCommand::Call {
                username: username.clone(),
                reply: None,
            },
            api::Command::AcceptCall { call } => NodeCommand::AcceptCall { call: Some(*call) },
            api::Command::DeclineCall { call } => NodeCommand::DeclineCall { call: Some(*call) },
            api::Command::HangUp { call } => NodeCommand::HangUp { call: Some(*call) },
            api::Command::Mute { call, muted } => {
                let m = *muted;
                set(*call, &|i| i.muted = m);
                NodeCommand::Mute {
                    call: Some(*call),
                    on: Some(m),
                }
            }
            api::Command::Hold { call, held } => {
                let h = *held;
                set(*call, &|i| i.held = h);
                NodeCommand::Hold {
                    call: Some(*call),
                    on: Some(h),
                }
            }
            _ => return None,
        };
        Some((n, shown))
    }

    /// The API events of a driver update; `now_unix_ms` stamps answers.
    pub fn update(&mut self, u: &CallUpdate, now_unix_ms: u64) -> Vec<Event> {
        let fresh = |id, peer: &str, outgoing, state| CallInfo {
            id,
            peer: peer.to_owned(),
            outgoing,
            state,
            muted: false,
            held: false,
            remote_held: false,
            answered_at: None,
        };
        match u {
            CallUpdate::Dialing { id, peer } => {
                let i = fresh(*id, peer, true, CallState::Dialing);
                self.calls.insert(*id, i.clone());
                vec![Event::Call(i)]
            }
            CallUpdate::State {
                event,
                peer,
                detail,
            } => {
                if let CallEvent::Incoming { id, peer } = event {
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
                    CallEvent::RemoteHold { on_hold, .. } => i.remote_held = *on_hold,
                    CallEvent::RemoteMute { muted, .. } => {
                        return vec![Event::Notice {
                            text: format!("{peer} {}", if *muted { "muted" } else { "unmuted" }),
                        }];
                    }
                    CallEvent::Ended { reason, .. } => {
                        i.state = CallState::Ended {
                            reason: match detail {
                                Some(d) => format!("{reason} ({d})"),
                                None => reason.to_string(),
                            },
                        };
                        let i = self.calls.remove(&id).unwrap_or_else(|| unreachable!());
                        return vec![Event::Call(i)];
                    }
                    CallEvent::Incoming { .. } => {}
                }
                vec![Event::Call(i.clone())]
            }
            CallUpdate::Stats {
                id,
                stats,
                path,
                last,
                ..
            } => {
                if *last || !self.calls.contains_key(id) {
                    return Vec::new();
                }
                let path = match path {
                    None => MediaPath::Unknown,
                    Some(p) => match p.kind() {
                        PathKind::Direct => MediaPath::Direct { remote: p.remote },
                        PathKind::Relayed { relay } => MediaPath::Relayed { supernode: relay },
                    },
                };
                vec![Event::CallStats {
                    call: *id,
                    stats: CallStats {
                        rtt_ms: stats.rtt_ms,
                        loss_pct: stats.loss_percent() as f32,
                        jitter_ms: stats.jitter_ms as f32,
                        mic_level: stats.mic_level,
                        path,
                        codec: "Opus 48 kHz".to_owned(),
                        packets_sent: stats.packets_sent,
                        packets_received: stats.packets_received,
                    },
                }]
            }
        }
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
        // Mute shows at once and becomes the driver's command.
        let (cmd, shown) = a
            .command(&api::Command::Mute {
                call: 7,
                muted: true,
            })
            .unwrap();
        assert!(matches!(
            cmd,
            NodeCommand::Mute {
                call: Some(7),
                on: Some(true)
            }
        ));
        assert!(matches!(shown, Some(Event::Call(i)) if i.muted));
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
            [Event::Call(CallInfo { state: CallState::Ended { reason }, .. })] if reason.contains("busy")
        ));
        assert!(a.get(7).is_none());
        // Updates of calls the API does not know are dropped.
        assert!(a.update(&stats, 0).is_empty());
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
        let (cmd, shown) = a.command(&api::Command::AcceptCall { call: 9 }).unwrap();
        assert!(matches!(cmd, NodeCommand::AcceptCall { call: Some(9) }));
        assert!(shown.is_none());
    }
}
